/* cold_index.c - the cold tier's index: a chained hash from chunk key to
 * its newest record, each region's live records, tombstones and quota
 * drops. Every function runs with the tier's lock held. */
#include <stdlib.h>
#include <string.h>

#include "cold_int.h"

/* ---- index ------------------------------------------------------------ */

struct cold_entry **cold_index_slot(struct kvt_cold *c, const struct kvt_chunk_key *key)
{
    uint64_t h = XXH3_64bits(key, sizeof(*key));
    struct cold_entry **p = &c->buckets[h & (c->n_buckets - 1)];

    while (*p && memcmp(&(*p)->key, key, sizeof(*key)) != 0)
        p = &(*p)->hash_next;
    return p;
}

static void index_grow(struct kvt_cold *c)
{
    uint64_t n = c->n_buckets * 2;
    struct cold_entry **nb = calloc(n, sizeof(*nb));

    if (!nb)
        return;                        /* longer chains, still correct */
    for (uint64_t i = 0; i < c->n_buckets; i++) {
        struct cold_entry *e = c->buckets[i], *next;
        for (; e; e = next) {
            next = e->hash_next;
            uint64_t h = XXH3_64bits(&e->key, sizeof(e->key)) & (n - 1);
            e->hash_next = nb[h];
            nb[h] = e;
        }
    }
    free(c->buckets);
    c->buckets = nb;
    c->n_buckets = n;
}

void cold_index_remove(struct kvt_cold *c, struct cold_entry *e)
{
    struct cold_entry **p = cold_index_slot(c, &e->key);
    struct cold_region *r = &c->regions[e->region];

    *p = e->hash_next;
    if (e->reg_prev)
        e->reg_prev->reg_next = e->reg_next;
    else
        r->entries = e->reg_next;
    if (e->reg_next)
        e->reg_next->reg_prev = e->reg_prev;
    c->n_entries--;
    c->n_names -= e->name != NULL;
    cold_ns_sub(c, e);
    c->st.used_bytes -= e->rec_bytes;
    domain_bytes_sub(&c->domain_used, e->key.domain, e->rec_bytes);
    cold_entry_free(e);
}

/* Insert e (owned by the index from now on), replacing an older record of
 * its key; an existing newer one wins and e is freed. Without memory to
 * count its domain or namespace, e is freed too: the record is a miss,
 * like a dropped one. */
void cold_index_put(struct kvt_cold *c, struct cold_entry *e)
{
    struct cold_entry **p = cold_index_slot(c, &e->key);
    struct cold_region *r = &c->regions[e->region];

    if ((*p && (*p)->seq > e->seq) || domain_bytes_reserve(&c->domain_used, e->key.domain) < 0) {
        cold_entry_free(e);
        return;
    }
    if (*p)
        cold_index_remove(c, *p);
    /* After the old record left: it may have been its namespace's last. */
    if (cold_ns_reserve(c, e) < 0) {
        cold_entry_free(e);
        return;
    }
    if (c->n_entries >= c->n_buckets)
        index_grow(c);
    p = cold_index_slot(c, &e->key);
    e->hash_next = NULL;
    *p = e;
    e->reg_prev = NULL;
    e->reg_next = r->entries;
    if (r->entries)
        r->entries->reg_prev = e;
    r->entries = e;
    c->n_entries++;
    c->n_names += e->name != NULL;
    cold_ns_add(c, e);
    c->st.used_bytes += e->rec_bytes;
    domain_bytes_add(&c->domain_used, e->key.domain, e->rec_bytes);
}

static bool tomb_matches(uint8_t kind, const struct kvt_chunk_key *t,
                         const struct kvt_chunk_key *k)
{
    if (kind == COLD_REC_TOMB_NAMESPACE)
        return t->ns_id == 0 || t->ns_id == k->ns_id;
    return t->ns_id == k->ns_id && t->obj_hi == k->obj_hi && t->obj_lo == k->obj_lo;
}

/* Drop the records a tombstone of `kind` covers that are older than seq. */
uint64_t cold_index_drop_matching(struct kvt_cold *c, uint8_t kind,
                                  const struct kvt_chunk_key *t, uint64_t seq,
                                  uint64_t *names)
{
    uint64_t dropped = 0, names_dropped = 0;

    for (uint64_t i = 0; i < c->n_buckets; i++) {
        struct cold_entry *e = c->buckets[i], *next;
        for (; e; e = next) {
            next = e->hash_next;
            if (e->seq < seq && tomb_matches(kind, t, &e->key)) {
                dropped += e->name == NULL;   /* callers count chunks */
                names_dropped += e->name != NULL;
                cold_index_remove(c, e);
            }
        }
    }
    if (names)
        *names = names_dropped;
    return dropped;
}

/* Drop the records of region r that overlap [start, end) (all: 0, ~0). */
void cold_index_drop_range(struct kvt_cold *c, uint32_t r, uint64_t start, uint64_t end)
{
    struct cold_entry *e = c->regions[r].entries, *next;

    for (; e; e = next) {
        next = e->reg_next;
        if (e->off < end && e->off + e->rec_bytes > start)
            cold_index_remove(c, e);
    }
}

static int region_seq_cmp(const void *a, const void *b, void *arg)
{
    const struct cold_region *regions = arg;
    uint64_t x = regions[*(const uint32_t *)a].seq, y = regions[*(const uint32_t *)b].seq;

    return x < y ? -1 : x > y;
}

/* Make room for a record of need bytes of key's domain under the domain
 * quota: drop the domain's oldest records (by record seq) from the index,
 * never another domain's, and never key's own record (the new one replaces
 * it, so its bytes are not counted). Regions in seq order hold records in
 * seq order, and each region's list ends with its oldest, so one walk
 * visits the domain's records oldest first. The records stay on disk
 * until their region is reclaimed: no tombstone is logged, so after a
 * restart they are found again and the quota is enforced on the domain's
 * next put. Called with lock held. */
void cold_quota_drop_locked(struct kvt_cold *c, const struct kvt_chunk_key *key,
                            uint64_t need)
{
    struct cold_entry *same = *cold_index_slot(c, key);
    uint64_t quota = c->domain_quota_bytes;
    uint64_t used = domain_bytes_get(&c->domain_used, key->domain);
    uint32_t n = 0;

    if (same)
        used -= same->rec_bytes;
    if (!quota || used + need <= quota)
        return;
    for (uint32_t r = 0; r < c->n_regions; r++)
        if (c->regions[r].seq && c->regions[r].entries)
            c->region_order[n++] = r;
    qsort_r(c->region_order, n, sizeof(*c->region_order), region_seq_cmp, c->regions);
    for (uint32_t i = 0; i < n && used + need > quota; i++) {
        struct cold_entry *e = c->regions[c->region_order[i]].entries, *prev;

        while (e && e->reg_next)
            e = e->reg_next;
        for (; e && used + need > quota; e = prev) {
            prev = e->reg_prev;
            /* A name is tiny and is what lists the chunks kept: it goes
             * with them (a drop, its region's reuse), not for a quota. */
            if (e->key.domain != key->domain || e == same || e->name)
                continue;
            used -= e->rec_bytes;
            cold_index_remove(c, e);
            c->st.quota_drops++;
        }
    }
}
