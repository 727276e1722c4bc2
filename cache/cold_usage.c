/* cold_usage.c - what the cold tier holds per namespace: its records,
 * bytes and objects (contexts or token prefixes), for listings that must
 * show data the daemon serves whether or not it knows the names.
 *
 * The counts are kept as the index changes (cold_ns_add/sub under the
 * lock), so a listing copies one count per namespace and sorts the copy
 * outside the lock. Walking the index instead held the lock, and so every
 * lookup of the data path, 4 ms over 960k records on an idle 2-core
 * machine and 20 ms beside a busy client (docs/performance.md). An object
 * is counted by its chunk 0 of layer 0, which every context and every
 * token prefix chunk has: a context whose first chunk left the cold tier
 * (evicted, dropped for a quota) is not counted. Name records are not
 * chunk records and are not counted. */
#include <errno.h>
#include <stdlib.h>

#include "cold_int.h"

#define NS_BUCKETS_MIN 64u

/* Namespace ids are hashes with bit 0 set (never 0): the bits above it
 * pick the bucket. */
static struct cold_ns_count **ns_slot(struct kvt_cold *c, uint64_t ns_id)
{
    struct cold_ns_count **p = &c->ns_counts[(ns_id >> 1) & (c->n_ns_buckets - 1)];

    while (*p && (*p)->ns_id != ns_id)
        p = &(*p)->next;
    return p;
}

/* Double the buckets; on -ENOMEM the chains just grow longer. */
static void ns_grow(struct kvt_cold *c)
{
    uint64_t n = c->n_ns_buckets ? c->n_ns_buckets * 2 : NS_BUCKETS_MIN;
    struct cold_ns_count **nb = calloc(n, sizeof(*nb));

    if (!nb)
        return;
    for (uint64_t i = 0; i < c->n_ns_buckets; i++)
        for (struct cold_ns_count *e = c->ns_counts[i], *next; e; e = next) {
            next = e->next;
            e->next = nb[(e->ns_id >> 1) & (n - 1)];
            nb[(e->ns_id >> 1) & (n - 1)] = e;
        }
    free(c->ns_counts);
    c->ns_counts = nb;
    c->n_ns_buckets = n;
}

int cold_ns_reserve(struct kvt_cold *c, const struct cold_entry *e)
{
    if (e->name)
        return 0;
    if (c->n_ns >= c->n_ns_buckets)
        ns_grow(c);
    if (!c->n_ns_buckets)
        return -ENOMEM;
    struct cold_ns_count **p = ns_slot(c, e->key.ns_id);
    if (*p)
        return 0;
    *p = calloc(1, sizeof(**p));
    if (!*p)
        return -ENOMEM;
    (*p)->ns_id = e->key.ns_id;
    (*p)->domain = e->key.domain;
    c->n_ns++;
    return 0;
}

void cold_ns_add(struct kvt_cold *c, const struct cold_entry *e)
{
    if (e->name)
        return;
    struct cold_ns_count *n = *ns_slot(c, e->key.ns_id);   /* reserved */
    n->records++;
    n->bytes += e->rec_bytes;
    n->objects += e->key.layer == 0 && e->key.chunk_idx == 0;
}

void cold_ns_sub(struct kvt_cold *c, const struct cold_entry *e)
{
    if (e->name)
        return;
    struct cold_ns_count **p = ns_slot(c, e->key.ns_id), *n = *p;
    n->records--;
    n->bytes -= e->rec_bytes;
    n->objects -= e->key.layer == 0 && e->key.chunk_idx == 0;
    if (n->records == 0) {
        *p = n->next;
        free(n);
        c->n_ns--;
    }
}

void cold_ns_free(struct kvt_cold *c)
{
    for (uint64_t i = 0; c->ns_counts && i < c->n_ns_buckets; i++)
        for (struct cold_ns_count *e = c->ns_counts[i], *next; e; e = next) {
            next = e->next;
            free(e);
        }
    free(c->ns_counts);
    c->ns_counts = NULL;
    c->n_ns_buckets = c->n_ns = 0;
}

static int by_ns(const void *a, const void *b)
{
    const struct kvt_cold_ns_usage *x = a, *y = b;
    return x->ns_id < y->ns_id ? -1 : x->ns_id > y->ns_id;
}

int cold_namespace_usage(struct kvt_cold *c, struct kvt_cold_ns_usage **out, size_t *n_out)
{
    struct kvt_cold_ns_usage *u = NULL;
    size_t n = 0;
    int rc = 0;

    pthread_mutex_lock(&c->lock);
    if (c->n_ns && !(u = malloc(c->n_ns * sizeof(*u))))
        rc = -ENOMEM;
    for (uint64_t i = 0; u && i < c->n_ns_buckets; i++)
        for (const struct cold_ns_count *e = c->ns_counts[i]; e; e = e->next)
            u[n++] = (struct kvt_cold_ns_usage){ .ns_id = e->ns_id, .domain = e->domain,
                                                 .records = e->records, .bytes = e->bytes,
                                                 .objects = e->objects };
    pthread_mutex_unlock(&c->lock);
    if (n > 1)
        qsort(u, n, sizeof(*u), by_ns);
    *out = u;
    *n_out = n;
    return rc;
}
