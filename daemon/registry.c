/* registry.c - sharing domains (from SO_PEERCRED uids) and model namespaces. */
#include "daemon/registry.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

/* Namespace ids of domains with the top bit set hash with this seed. Such
 * ids used to name share groups (lowest uid | 2^31), so a cold file written
 * then holds group records under them; hashing them differently keeps the
 * uid of that number from reading those records (they become unreachable
 * and age out). Ids of the other domains keep their old value, and so their
 * cold data. */
#define TOP_BIT_DOMAIN_SEED UINT64_C(0x6b76746965723264)   /* "kvtier2d" */

static uint64_t ns_id_of(uint32_t domain, const char *name, uint32_t layers,
                         uint32_t heads, uint32_t dim, uint32_t chunk_tokens)
{
    /* Hash of the identity, fixed-width fields first, then the name. */
    uint32_t ident[5 + 32] = { domain, layers, heads, dim, chunk_tokens };

    memcpy(&ident[5], name, strlen(name));   /* name <= 127 bytes: fits */
    uint64_t h = domain & 0x80000000u
                     ? XXH3_64bits_withSeed(ident, sizeof(ident), TOP_BIT_DOMAIN_SEED)
                     : XXH3_64bits(ident, sizeof(ident));
    return h | 1;                            /* never 0: 0 means "all" */
}

static void ns_free(struct kvt_ns *ns)
{
    if (!ns)
        return;
    registry_names_clear(ns);
    free(ns->names);
    pthread_mutex_destroy(&ns->names_lock);
    free(ns);
}

int registry_init(struct kvt_registry *reg)
{
    memset(reg, 0, sizeof(*reg));
    return -pthread_mutex_init(&reg->lock, NULL);
}

void registry_fini(struct kvt_registry *reg)
{
    for (uint32_t i = 0; i < reg->n_ns; i++)
        ns_free(reg->ns[i]);
    free(reg->ns);
    reg->ns = NULL;
    reg->n_ns = reg->cap = reg->n_idle = 0;
    pthread_mutex_destroy(&reg->lock);
}

uint32_t registry_domain(const struct kvt_config *cfg, uid_t uid)
{
    for (uint32_t i = 0; i < cfg->n_share; i++) {
        if (cfg->share_uid[i] != uid)
            continue;
        uid_t lowest = uid;
        for (uint32_t j = 0; j < cfg->n_share; j++)
            if (cfg->share_group[j] == cfg->share_group[i] && cfg->share_uid[j] < lowest)
                lowest = cfg->share_uid[j];
        return (uint32_t)lowest;   /* a member: config refuses a uid in two groups */
    }
    return (uint32_t)uid;
}

bool registry_is_shared(const struct kvt_config *cfg, uid_t uid)
{
    for (uint32_t i = 0; i < cfg->n_share; i++)
        if (cfg->share_uid[i] == uid)
            return true;
    return false;
}

static bool is_idle(const struct kvt_ns *ns)
{
    return !ns->clients && !ns->holds;
}

/* ns (lock held) is about to gain a client or a hold. */
static void take(struct kvt_registry *reg, struct kvt_ns *ns, bool client)
{
    if (is_idle(ns))
        reg->n_idle--;
    if (client)
        ns->clients++;
    else
        ns->holds++;
}

/* ns (lock held) lost a client or hold. Returns an entry to free once the
 * lock is dropped (nobody can reach it any more), or NULL. */
static struct kvt_ns *release(struct kvt_registry *reg, struct kvt_ns *ns, bool client)
{
    if (client && ns->clients)
        ns->clients--;
    else if (!client && ns->holds)
        ns->holds--;
    if (!is_idle(ns))
        return NULL;
    ns->idle_since = ++reg->tick;
    if (++reg->n_idle <= REGISTRY_IDLE_MAX)
        return NULL;
    uint32_t oldest = UINT32_MAX;
    for (uint32_t i = 0; i < reg->n_ns; i++)
        if (is_idle(reg->ns[i]) &&
            (oldest == UINT32_MAX || reg->ns[i]->idle_since < reg->ns[oldest]->idle_since))
            oldest = i;
    struct kvt_ns *victim = reg->ns[oldest];
    reg->ns[oldest] = reg->ns[--reg->n_ns];
    reg->n_idle--;
    return victim;
}

static struct kvt_ns *ns_new(uint32_t domain, const char *name, uint32_t layers,
                             uint32_t heads, uint32_t dim, uint32_t chunk_tokens)
{
    struct kvt_ns *ns = calloc(1, sizeof(*ns));

    if (!ns)
        return NULL;
    if (pthread_mutex_init(&ns->names_lock, NULL)) {
        free(ns);
        return NULL;
    }
    ns->domain = domain;
    strncpy(ns->name, name, sizeof(ns->name) - 1);
    ns->layers = layers;
    ns->heads = heads;
    ns->dim = dim;
    ns->chunk_tokens = chunk_tokens;
    ns->id = ns_id_of(domain, name, layers, heads, dim, chunk_tokens);
    return ns;
}

/* A new idle namespace in the table (grown as needed), under reg->lock;
 * NULL when out of memory. take() counts it out of the idle ones. */
static struct kvt_ns *ns_add_locked(struct kvt_registry *reg, uint32_t domain, const char *name,
                                    uint32_t layers, uint32_t heads, uint32_t dim,
                                    uint32_t chunk_tokens)
{
    if (reg->n_ns == reg->cap) {
        uint32_t cap = reg->cap ? reg->cap * 2 : 64;
        struct kvt_ns **table = realloc(reg->ns, cap * sizeof(*table));
        if (!table)
            return NULL;
        reg->ns = table;
        reg->cap = cap;
    }
    struct kvt_ns *ns = ns_new(domain, name, layers, heads, dim, chunk_tokens);
    if (!ns)
        return NULL;
    reg->ns[reg->n_ns++] = ns;
    reg->n_idle++;
    return ns;
}

int registry_attach(struct kvt_registry *reg, uint32_t domain, const char *name,
                    uint32_t layers, uint32_t heads, uint32_t dim,
                    uint32_t chunk_tokens, uint32_t max_per_domain,
                    struct kvt_ns **out)
{
    struct kvt_ns *ns = NULL;
    uint32_t attached = 0;
    int rc = 0;

    pthread_mutex_lock(&reg->lock);
    for (uint32_t i = 0; i < reg->n_ns; i++) {
        struct kvt_ns *e = reg->ns[i];
        if (e->domain != domain)
            continue;
        attached += e->clients > 0;
        if (e->layers == layers && e->heads == heads && e->dim == dim &&
            e->chunk_tokens == chunk_tokens && strcmp(e->name, name) == 0)
            ns = e;
    }
    if (ns && ns->clients)
        goto found;               /* shared with a session: costs nothing more */
    if (max_per_domain && attached >= max_per_domain) {
        rc = -EDQUOT;
        goto out;
    }
    if (ns)
        goto found;
    if (!(ns = ns_add_locked(reg, domain, name, layers, heads, dim, chunk_tokens))) {
        rc = -ENOMEM;
        goto out;
    }
found:
    take(reg, ns, true);
    *out = ns;
out:
    pthread_mutex_unlock(&reg->lock);
    return rc;
}

void registry_detach(struct kvt_registry *reg, struct kvt_ns *ns)
{
    pthread_mutex_lock(&reg->lock);
    struct kvt_ns *victim = release(reg, ns, true);
    pthread_mutex_unlock(&reg->lock);
    ns_free(victim);
}

struct kvt_ns *registry_find(struct kvt_registry *reg, uint64_t id)
{
    struct kvt_ns *found = NULL;

    pthread_mutex_lock(&reg->lock);
    for (uint32_t i = 0; i < reg->n_ns && !found; i++)
        if (reg->ns[i]->id == id)
            found = reg->ns[i];
    if (found)
        take(reg, found, false);
    pthread_mutex_unlock(&reg->lock);
    return found;
}

void registry_put(struct kvt_registry *reg, struct kvt_ns *ns)
{
    if (!ns)
        return;
    pthread_mutex_lock(&reg->lock);
    struct kvt_ns *victim = release(reg, ns, false);
    pthread_mutex_unlock(&reg->lock);
    ns_free(victim);
}

int registry_hold_all(struct kvt_registry *reg, struct kvt_ns ***out, uint32_t *n)
{
    struct kvt_ns **all = NULL;
    int rc = 0;

    pthread_mutex_lock(&reg->lock);
    *n = 0;
    if (reg->n_ns) {
        all = malloc(reg->n_ns * sizeof(*all));
        if (!all) {
            rc = -ENOMEM;
            goto out;
        }
    }
    for (uint32_t i = 0; i < reg->n_ns; i++) {
        take(reg, reg->ns[i], false);
        all[i] = reg->ns[i];
    }
    *n = reg->n_ns;
out:
    pthread_mutex_unlock(&reg->lock);
    *out = all;
    return rc;
}

void registry_put_all(struct kvt_registry *reg, struct kvt_ns **ns, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++)
        registry_put(reg, ns[i]);
    free(ns);
}

/* ---- context names ------------------------------------------------------------ */

/* The ids are hashes already: their low bits pick the bucket. */
static struct kvt_ctx_name **name_slot(struct kvt_ns *ns, uint64_t hi, uint64_t lo)
{
    struct kvt_ctx_name **at = &ns->names[lo & (ns->names_buckets - 1)];

    while (*at && ((*at)->hi != hi || (*at)->lo != lo))
        at = &(*at)->next;
    return at;
}

/* Double the buckets so chains stay about one long; called with the lock
 * held. On -ENOMEM the old table stays and still works, only slower. */
static int names_grow(struct kvt_ns *ns)
{
    uint32_t buckets = ns->names_buckets ? ns->names_buckets * 2 : 64;
    struct kvt_ctx_name **table = calloc(buckets, sizeof(*table));

    if (!table)
        return -ENOMEM;
    for (uint32_t i = 0; i < ns->names_buckets; i++) {
        for (struct kvt_ctx_name *e = ns->names[i], *next; e; e = next) {
            next = e->next;
            e->next = table[e->lo & (buckets - 1)];
            table[e->lo & (buckets - 1)] = e;
        }
    }
    free(ns->names);
    ns->names = table;
    ns->names_buckets = buckets;
    return 0;
}

int registry_name_add(struct kvt_ns *ns, const char *name, size_t len,
                      uint64_t hi, uint64_t lo)
{
    int rc = 0;

    pthread_mutex_lock(&ns->names_lock);
    if (ns->n_names >= ns->names_buckets) {
        rc = names_grow(ns);
        if (rc && !ns->names_buckets)
            goto out;
        rc = 0;
    }
    struct kvt_ctx_name **at = name_slot(ns, hi, lo);
    if (*at)
        goto out;
    if (ns->n_names >= REGISTRY_NAMES_MAX) {
        ns->names_overflow++;
        rc = -ENOSPC;
        goto out;
    }
    struct kvt_ctx_name *e = malloc(sizeof(*e) + len + 1);
    if (!e) {
        rc = -ENOMEM;
        goto out;
    }
    e->next = NULL;
    e->hi = hi;
    e->lo = lo;
    memcpy(e->name, name, len);
    e->name[len] = '\0';
    *at = e;
    ns->n_names++;
out:
    pthread_mutex_unlock(&ns->names_lock);
    return rc;
}

int registry_name_lookup(struct kvt_ns *ns, uint64_t hi, uint64_t lo, char *buf, size_t cap)
{
    int rc = -ENOENT;

    pthread_mutex_lock(&ns->names_lock);
    if (ns->names_buckets) {
        const struct kvt_ctx_name *e = *name_slot(ns, hi, lo);
        size_t len = e ? strlen(e->name) : 0;
        if (e && len < cap) {
            memcpy(buf, e->name, len + 1);
            rc = (int)len;
        } else if (e) {
            rc = -ENOSPC;
        }
    }
    pthread_mutex_unlock(&ns->names_lock);
    return rc;
}

int registry_restore(struct kvt_registry *reg, uint64_t ns_id, uint32_t domain,
                     const char *model, uint32_t layers, uint32_t heads, uint32_t dim,
                     uint32_t chunk_tokens, const char *name, size_t len,
                     uint64_t hi, uint64_t lo)
{
    struct kvt_ns *ns = NULL;
    int rc = 0;

    if (strlen(model) >= sizeof(ns->name) ||
        ns_id_of(domain, model, layers, heads, dim, chunk_tokens) != ns_id)
        return -EBADMSG;
    pthread_mutex_lock(&reg->lock);
    for (uint32_t i = 0; i < reg->n_ns && !ns; i++)
        if (reg->ns[i]->id == ns_id && reg->ns[i]->domain == domain)
            ns = reg->ns[i];
    if (!ns) {
        if (reg->n_idle >= REGISTRY_IDLE_MAX) {
            rc = -ENOSPC;
            goto out;
        }
        if (!(ns = ns_add_locked(reg, domain, model, layers, heads, dim, chunk_tokens))) {
            rc = -ENOMEM;
            goto out;
        }
        ns->idle_since = ++reg->tick;
    }
    take(reg, ns, false);              /* held while its name goes in */
out:
    pthread_mutex_unlock(&reg->lock);
    if (rc)
        return rc;
    rc = registry_name_add(ns, name, len, hi, lo);
    registry_put(reg, ns);
    return rc;
}

void registry_name_remove(struct kvt_ns *ns, uint64_t hi, uint64_t lo)
{
    pthread_mutex_lock(&ns->names_lock);
    if (ns->names_buckets) {
        struct kvt_ctx_name **at = name_slot(ns, hi, lo);
        struct kvt_ctx_name *e = *at;
        if (e) {
            *at = e->next;
            free(e);
            ns->n_names--;
        }
    }
    pthread_mutex_unlock(&ns->names_lock);
}

void registry_names_clear(struct kvt_ns *ns)
{
    pthread_mutex_lock(&ns->names_lock);
    for (uint32_t i = 0; i < ns->names_buckets; i++) {
        for (struct kvt_ctx_name *e = ns->names[i], *next; e; e = next) {
            next = e->next;
            free(e);
        }
        ns->names[i] = NULL;
    }
    ns->n_names = 0;
    pthread_mutex_unlock(&ns->names_lock);
}

int registry_names_copy(struct kvt_ns *ns, char ***names, uint32_t *n)
{
    char **out = NULL;
    uint32_t at = 0;
    int rc = 0;

    pthread_mutex_lock(&ns->names_lock);
    if (ns->n_names) {
        out = calloc(ns->n_names, sizeof(*out));
        if (!out) {
            rc = -ENOMEM;
            goto out;
        }
    }
    for (uint32_t i = 0; i < ns->names_buckets; i++) {
        for (struct kvt_ctx_name *e = ns->names[i]; e; e = e->next) {
            out[at] = strdup(e->name);
            if (!out[at]) {
                rc = -ENOMEM;
                goto out;
            }
            at++;
        }
    }
out:
    pthread_mutex_unlock(&ns->names_lock);
    if (rc) {
        for (uint32_t i = 0; i < at; i++)
            free(out[i]);
        free(out);
        out = NULL;
        at = 0;
    }
    *names = out;
    *n = at;
    return rc;
}
