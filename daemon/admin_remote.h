/* admin_remote.h - the remote tier's part of the admin `stats` reply. */
#ifndef KVT_ADMIN_REMOTE_H
#define KVT_ADMIN_REMOTE_H

#include <cjson/cJSON.h>

#include "daemon/tiers.h"

/* Add "remote": {...} to reply (null without a remote tier): counters,
 * latencies and one entry per server with its state. Takes no lock the
 * data path holds across network waits, so it never waits on the pool. */
void admin_remote_stats(struct kvt_tiers *t, cJSON *reply);

#endif
