/* registry.h - sharing domains and model namespaces. */
#ifndef KVT_REGISTRY_H
#define KVT_REGISTRY_H

#include <pthread.h>
#include <stdint.h>
#include <sys/types.h>

#include "daemon/config.h"

struct kvt_ns {
    uint64_t id;               /* never 0; part of every chunk key */
    uint32_t domain;
    char name[128];
    uint32_t layers, heads, dim, chunk_tokens;
    uint32_t clients;          /* sessions attached now */
};

#define REGISTRY_NS_MAX 1024

struct kvt_registry {
    pthread_mutex_t lock;
    uint32_t n_ns;
    struct kvt_ns *ns[REGISTRY_NS_MAX];
};

int registry_init(struct kvt_registry *reg);
void registry_fini(struct kvt_registry *reg);

/* The sharing domain of a peer: uids joined by `share` lines form one domain
 * (named by the group's smallest uid + 2^31 so it never equals a plain uid);
 * every other uid is a domain of its own. */
uint32_t registry_domain(const struct kvt_config *cfg, uid_t uid);

/* Find or create the namespace (domain, name, geometry) and count a client
 * on it. The id is derived from its identity, so it is the same after a
 * restart (the cold tier's keys stay valid). Returns 0, -ENOSPC when the
 * table is full, -ENOMEM. */
int registry_attach(struct kvt_registry *reg, uint32_t domain, const char *name,
                    uint32_t layers, uint32_t heads, uint32_t dim,
                    uint32_t chunk_tokens, struct kvt_ns **out);
void registry_detach(struct kvt_registry *reg, struct kvt_ns *ns);

#endif
