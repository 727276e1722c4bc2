/* fuzz_server.h - a real struct kvt_server for the fuzz targets that drive
 * the daemon's request paths (fuzz_frames, fuzz_admin), and the checks they
 * share. Nothing here is compiled into the product. */
#ifndef KVT_FUZZ_SERVER_H
#define KVT_FUZZ_SERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "daemon/server.h"
#include "tests/fuzz/fuzz_util.h"

/* The configuration every input starts from: sockets in a private temporary
 * directory (made once per process), hot tier of 4 MiB, no cold tier, two
 * workers, max-frame 4096 (so oversized packets are reachable with small
 * inputs), max-client-shm 1 MiB, no polling, errors only in the log
 * ($KVT_FUZZ_LOG=debug for everything). */
void fuzz_config(struct kvt_config *cfg);
#define FUZZ_MAX_FRAME 4096u
#define FUZZ_MAX_CLIENT_SHM (1u << 20)

/* server_init on fuzz_config; aborts if it fails (the harness is broken,
 * not the input). Each input gets a fresh server so that it runs from the
 * same state every time and a crash reproduces from the input alone. */
void fuzz_server_start(struct kvt_server *srv);
void fuzz_server_stop(struct kvt_server *srv);

/* Wait up to timeout_ms for events on srv's epoll set and hand each to its
 * handler as server_run does (sessions, admin listener and connections,
 * admin jobs); the listening data socket and the signal fd are not used.
 * Returns the number of events handled. */
int fuzz_server_pump(struct kvt_server *srv, int timeout_ms);

/* Send one data-socket packet of len bytes with n_fds fds (SCM_RIGHTS,
 * at most FUZZ_MAX_FDS); aborts if the kernel does not take it whole. */
#define FUZZ_MAX_FDS 6
void fuzz_send_packet(int fd, const void *pkt, size_t len, const int *fds, int n_fds);

/* How long a reply may take before the harness calls it a hang. Generous:
 * CI machines are small and shared. */
#define FUZZ_REPLY_TIMEOUT_MS 10000

#endif
