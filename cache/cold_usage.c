/* cold_usage.c - what the cold tier holds per namespace: its records,
 * bytes and distinct objects (contexts or token prefixes), for listings
 * that must show data the daemon serves but whose names it no longer knows
 * (a restart keeps only name hashes on disk). */
#include <errno.h>
#include <stdlib.h>

#include "cold_int.h"

struct usage_key {
    uint64_t ns_id, obj_hi, obj_lo;
    uint32_t domain, bytes;
};

static int cmp_key(const void *a, const void *b)
{
    const struct usage_key *x = a, *y = b;
    if (x->ns_id != y->ns_id)
        return x->ns_id < y->ns_id ? -1 : 1;
    if (x->obj_hi != y->obj_hi)
        return x->obj_hi < y->obj_hi ? -1 : 1;
    return x->obj_lo < y->obj_lo ? -1 : x->obj_lo > y->obj_lo;
}

int cold_namespace_usage(struct kvt_cold *c, struct kvt_cold_ns_usage **out, size_t *n_out)
{
    struct usage_key *keys;
    struct kvt_cold_ns_usage *u = NULL;
    size_t n = 0, n_ns = 0;

    *out = NULL;
    *n_out = 0;
    /* Copied under the lock, sorted and counted without it: the walk is
     * one pass of memory, the sort is the long part. */
    pthread_mutex_lock(&c->lock);
    keys = c->n_entries ? malloc(c->n_entries * sizeof(*keys)) : NULL;
    if (!keys && c->n_entries) {
        pthread_mutex_unlock(&c->lock);
        return -ENOMEM;
    }
    for (uint32_t r = 0; r < c->n_regions; r++)
        for (const struct cold_entry *e = c->regions[r].entries; e && n < c->n_entries;
             e = e->reg_next)
            keys[n++] = (struct usage_key){ e->key.ns_id, e->key.obj_hi, e->key.obj_lo,
                                            e->key.domain, e->rec_bytes };
    pthread_mutex_unlock(&c->lock);
    if (n == 0)
        goto out;
    qsort(keys, n, sizeof(*keys), cmp_key);
    for (size_t i = 0; i < n; i++)
        n_ns += i == 0 || keys[i].ns_id != keys[i - 1].ns_id;
    u = calloc(n_ns, sizeof(*u));
    if (!u) {
        free(keys);
        return -ENOMEM;
    }
    n_ns = 0;
    for (size_t i = 0; i < n; i++) {
        if (i == 0 || keys[i].ns_id != keys[i - 1].ns_id)
            u[n_ns++] = (struct kvt_cold_ns_usage){ .ns_id = keys[i].ns_id,
                                                    .domain = keys[i].domain };
        struct kvt_cold_ns_usage *cur = &u[n_ns - 1];
        cur->records++;
        cur->bytes += keys[i].bytes;
        cur->objects += i == 0 || cmp_key(&keys[i], &keys[i - 1]) != 0;
    }
out:
    free(keys);
    *out = u;
    *n_out = n_ns;
    return 0;
}
