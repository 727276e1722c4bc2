/* registry.h - sharing domains and model namespaces. */
#ifndef KVT_REGISTRY_H
#define KVT_REGISTRY_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "daemon/config.h"

/* A context name stored in a namespace since the daemon started, keyed by
 * the object id daemon/store.c derives from it (XXH3_128 of the name). */
struct kvt_ctx_name {
    struct kvt_ctx_name *next;   /* bucket chain */
    uint64_t hi, lo;
    char name[];                 /* NUL-terminated, 1..KVT_CTX_NAME_MAX bytes */
};

/* Names kept per namespace: the bound keeps a client that invents names
 * from growing the daemon without limit (each costs ~300 bytes). */
#define REGISTRY_NAMES_MAX 65536u

struct kvt_ns {
    uint64_t id;               /* never 0; part of every chunk key */
    uint32_t domain;
    char name[128];
    uint32_t layers, heads, dim, chunk_tokens;
    /* Under the registry's lock. An entry with neither is idle: it may be
     * freed (see REGISTRY_IDLE_MAX) and is made again by the next attach. */
    uint32_t clients;          /* sessions attached now */
    uint32_t holds;            /* registry_find/registry_hold_all references */
    uint64_t idle_since;       /* registry tick when it last became idle */
    /* Context names, for the admin `contexts` command. Stores run on
     * worker threads, so the set has its own lock (not reg->lock: a store
     * must not wait for an admin command walking every namespace). Lock
     * order: reg->lock, then names_lock. */
    pthread_mutex_t names_lock;
    struct kvt_ctx_name **names;   /* names_buckets chains, a power of 2 */
    uint32_t names_buckets, n_names;
    uint64_t names_overflow;       /* adds refused at REGISTRY_NAMES_MAX */
};

/* Idle namespaces kept (with their context names) for clients that come
 * back; past this many the one idle longest is freed. Namespaces in use are
 * not bounded here: each has a session (at most max-clients of them) or a
 * short admin hold, and max-namespaces-per-uid bounds what one domain
 * keeps attached. */
#define REGISTRY_IDLE_MAX 1024

struct kvt_registry {
    pthread_mutex_t lock;
    uint32_t n_ns, cap;
    struct kvt_ns **ns;        /* n_ns entries of cap, in no order */
    uint32_t n_idle;
    uint64_t tick;             /* orders idle entries */
};

int registry_init(struct kvt_registry *reg);
void registry_fini(struct kvt_registry *reg);

/* The sharing domain of a peer. A uid outside every `share` group is its
 * own domain: domain == uid. A group's domain is its lowest member uid.
 * Domains are then the blocks of a partition of the uids, each named by one
 * of its own members, so no uid outside a group can have the group's id,
 * whatever its value: ids stay 32 bits and the cold file's format holds. */
uint32_t registry_domain(const struct kvt_config *cfg, uid_t uid);
/* Whether uid is in a `share` group. */
bool registry_is_shared(const struct kvt_config *cfg, uid_t uid);

/* Find or create the namespace (domain, name, geometry) and count a client
 * on it. The id is derived from its identity, so it is the same after a
 * restart or after the entry was freed while idle (the tiers' keys stay
 * valid). A namespace that has no client yet counts against the domain's
 * max_per_domain namespaces with clients (0: no bound). Returns 0, -EDQUOT
 * when the domain has max_per_domain attached already, -ENOMEM. */
int registry_attach(struct kvt_registry *reg, uint32_t domain, const char *name,
                    uint32_t layers, uint32_t heads, uint32_t dim,
                    uint32_t chunk_tokens, uint32_t max_per_domain,
                    struct kvt_ns **out);
/* Uncount a client; ns may be freed from now on. */
void registry_detach(struct kvt_registry *reg, struct kvt_ns *ns);

/* The namespace with this id, held (it is not freed until registry_put),
 * or NULL when no entry has it. */
struct kvt_ns *registry_find(struct kvt_registry *reg, uint64_t id);
void registry_put(struct kvt_registry *reg, struct kvt_ns *ns);
/* Every namespace the registry holds now, each held: *out is a malloc'ed
 * array of *n entries (NULL when *n is 0); registry_put_all releases the
 * holds and frees it. Returns 0 or -ENOMEM. */
int registry_hold_all(struct kvt_registry *reg, struct kvt_ns ***out, uint32_t *n);
void registry_put_all(struct kvt_registry *reg, struct kvt_ns **ns, uint32_t n);

/* Remember a context name (len bytes, not NUL-terminated) under its object
 * id; a name already known costs one lookup. Returns 0, -ENOSPC when the
 * namespace holds REGISTRY_NAMES_MAX names (counted in names_overflow),
 * -ENOMEM. Thread-safe. */
int registry_name_add(struct kvt_ns *ns, const char *name, size_t len,
                      uint64_t hi, uint64_t lo);
/* Copy the name known under (hi, lo) into buf (cap bytes, NUL-terminated).
 * Returns its length, -ENOENT when unknown, -ENOSPC when cap is too small. */
int registry_name_lookup(struct kvt_ns *ns, uint64_t hi, uint64_t lo, char *buf, size_t cap);
/* A name the cold tier kept across a restart: find or make the idle entry
 * of namespace (domain, model, geometry), counting no client, and remember
 * name (len bytes) under (hi, lo) in it. Returns 0, -EBADMSG when that
 * identity does not hash to ns_id (the name cannot be this namespace's,
 * nor so another domain's), -ENOSPC when it would make more than
 * REGISTRY_IDLE_MAX idle entries or the entry holds REGISTRY_NAMES_MAX names,
 * -ENOMEM. */
int registry_restore(struct kvt_registry *reg, uint64_t ns_id, uint32_t domain,
                     const char *model, uint32_t layers, uint32_t heads, uint32_t dim,
                     uint32_t chunk_tokens, const char *name, size_t len,
                     uint64_t hi, uint64_t lo);
/* Forget one name (no-op if unknown), or every name of the namespace. */
void registry_name_remove(struct kvt_ns *ns, uint64_t hi, uint64_t lo);
void registry_names_clear(struct kvt_ns *ns);
/* A copy of the namespace's names: *names is a malloc'ed array of *n
 * malloc'ed strings; the caller frees each and the array (NULL when *n is
 * 0). Returns 0 or -ENOMEM. */
int registry_names_copy(struct kvt_ns *ns, char ***names, uint32_t *n);

#endif
