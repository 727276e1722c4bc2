/* cold_usage.c - what the cold tier holds per namespace: its records,
 * bytes and objects (contexts or token prefixes), for listings that must
 * show data the daemon serves but whose names it no longer knows (a
 * restart keeps only name hashes on disk).
 *
 * One walk of the index under the lock, no copy and no sort: an admin
 * listing runs on the event loop, and sorting a million keys took 2 s on a
 * loaded 2-core machine. An object is counted by its chunk 0 of layer 0, which every
 * context and every token prefix chunk has: a context whose first chunk
 * left the cold tier (evicted, dropped for a quota) is not counted. */
#include <errno.h>
#include <stdlib.h>

#include "cold_int.h"

/* The slot of ns_id in u[0..*n), added if missing; NULL without memory.
 * Records of one namespace come in runs, so the last slot is tried first. */
static struct kvt_cold_ns_usage *slot(struct kvt_cold_ns_usage **u, size_t *n, size_t *cap,
                                      size_t *last, uint64_t ns_id, uint32_t domain)
{
    if (*n && (*u)[*last].ns_id == ns_id)
        return &(*u)[*last];
    for (size_t i = 0; i < *n; i++)
        if ((*u)[i].ns_id == ns_id) {
            *last = i;
            return &(*u)[i];
        }
    if (*n == *cap) {
        size_t bigger = *cap ? *cap * 2 : 16;
        struct kvt_cold_ns_usage *p = realloc(*u, bigger * sizeof(*p));
        if (!p)
            return NULL;
        *u = p;
        *cap = bigger;
    }
    (*u)[*n] = (struct kvt_cold_ns_usage){ .ns_id = ns_id, .domain = domain };
    *last = (*n)++;
    return &(*u)[*last];
}

static int by_ns(const void *a, const void *b)
{
    const struct kvt_cold_ns_usage *x = a, *y = b;
    return x->ns_id < y->ns_id ? -1 : x->ns_id > y->ns_id;
}

int cold_namespace_usage(struct kvt_cold *c, struct kvt_cold_ns_usage **out, size_t *n_out)
{
    struct kvt_cold_ns_usage *u = NULL;
    size_t n = 0, cap = 0, last = 0;
    int rc = 0;

    pthread_mutex_lock(&c->lock);
    for (uint32_t r = 0; r < c->n_regions && rc == 0; r++)
        for (const struct cold_entry *e = c->regions[r].entries; e; e = e->reg_next) {
            if (e->name)
                continue;              /* names are not chunk records */
            struct kvt_cold_ns_usage *s = slot(&u, &n, &cap, &last, e->key.ns_id,
                                               e->key.domain);
            if (!s) {
                rc = -ENOMEM;
                break;
            }
            s->records++;
            s->bytes += e->rec_bytes;
            s->objects += e->key.layer == 0 && e->key.chunk_idx == 0;
        }
    pthread_mutex_unlock(&c->lock);
    if (rc) {
        free(u);
        u = NULL;
        n = 0;
    } else if (n > 1) {
        qsort(u, n, sizeof(*u), by_ns);
    }
    *out = u;
    *n_out = n;
    return rc;
}
