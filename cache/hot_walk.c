/* hot_walk.c - the hot tier's operations over many chunks: dirty scans for
 * flush, drops of an object or a namespace, stats. */
#include "hot_int.h"

bool hot_take_dirty(struct kvt_hot *hot, struct kvt_chunk *chunk)
{
    pthread_mutex_lock(&hot->mu);
    bool was = chunk->dirty;
    chunk->dirty = false;
    pthread_mutex_unlock(&hot->mu);
    return was;
}

size_t hot_pin_dirty(struct kvt_hot *hot, struct kvt_chunk **out, size_t max)
{
    size_t n = 0;

    pthread_mutex_lock(&hot->mu);
    for (struct kvt_chunk *c = hot->lru_head; c && n < max; c = c->lru_next) {
        if (!c->dirty)
            continue;
        hot_chunk_pin(hot, c);
        out[n++] = c;
    }
    pthread_mutex_unlock(&hot->mu);
    return n;
}

uint64_t hot_count_dirty(struct kvt_hot *hot)
{
    uint64_t n = 0;

    pthread_mutex_lock(&hot->mu);
    for (struct kvt_chunk *c = hot->lru_head; c; c = c->lru_next)
        n += c->dirty;
    pthread_mutex_unlock(&hot->mu);
    return n;
}

/* Drop every linked chunk that match() accepts. Drops are rare admin or
 * context-delete operations, so a walk of the LRU list is good enough.
 * A chunk nobody pins is freed: nobody holds its lock either (every lock
 * holder pins first). A pinned one may be in a write-back (flush, evict
 * hook) that holds its read lock and is writing it to the cold tier: it
 * is pinned once more here, and marked gone under its write lock after
 * the mutex is dropped (lock order), which waits for that write to end
 * and makes every later write-back skip it. */
static uint64_t drop_matching(struct kvt_hot *hot, const struct kvt_chunk_key *want,
                              bool (*match)(const struct kvt_chunk_key *,
                                            const struct kvt_chunk_key *),
                              hot_progress_fn progress, void *arg)
{
    struct kvt_chunk *c, *next, *to_free = NULL, *to_mark = NULL;
    uint64_t dropped = 0;

    pthread_mutex_lock(&hot->mu);
    for (c = hot->lru_head; c; c = next) {
        next = c->lru_next;
        if (match(&c->key, want)) {
            if (c->pins) {
                hot_chunk_pin(hot, c);
                c->drop_next = to_mark;
                to_mark = c;
            }
            hot_chunk_unlink(hot, c, &to_free);
            dropped++;
        }
    }
    pthread_mutex_unlock(&hot->mu);
    for (c = to_mark; c; c = next) {
        next = c->drop_next;
        pthread_rwlock_wrlock(&c->lock);
        c->gone = true;
        pthread_rwlock_unlock(&c->lock);
        hot_put(hot, c);
    }
    if (progress)
        progress(arg, 0, dropped);
    for (uint64_t freed = 0; to_free; freed++) {
        next = to_free->hash_next;
        hot_pool_keep(hot, to_free);
        hot_chunk_free(to_free);
        to_free = next;
        if (progress && (freed + 1) % 256 == 0)
            progress(arg, freed + 1, dropped);
    }
    if (progress)
        progress(arg, dropped, dropped);
    return dropped;
}

static bool same_object(const struct kvt_chunk_key *k, const struct kvt_chunk_key *want)
{
    return k->ns_id == want->ns_id && k->obj_hi == want->obj_hi &&
           k->obj_lo == want->obj_lo;
}

static bool same_namespace(const struct kvt_chunk_key *k, const struct kvt_chunk_key *want)
{
    return want->ns_id == 0 || k->ns_id == want->ns_id;
}

uint64_t hot_drop_object(struct kvt_hot *hot, uint64_t ns_id,
                         uint64_t obj_hi, uint64_t obj_lo)
{
    struct kvt_chunk_key want = { .ns_id = ns_id, .obj_hi = obj_hi, .obj_lo = obj_lo };

    return drop_matching(hot, &want, same_object, NULL, NULL);
}

uint64_t hot_drop_namespace(struct kvt_hot *hot, uint64_t ns_id,
                            hot_progress_fn progress, void *arg)
{
    struct kvt_chunk_key want = { .ns_id = ns_id };

    return drop_matching(hot, &want, same_namespace, progress, arg);
}

/* chunks counts the chunks a lookup can find; used_bytes also counts
 * unlinked chunks still pinned and allocations in progress. */
void hot_stats(struct kvt_hot *hot, struct kvt_hot_stats *out)
{
    pthread_mutex_lock(&hot->mu);
    out->budget_bytes = hot->budget_bytes;
    out->used_bytes = hot->used_bytes - hot->pool.pooled_bytes;
    out->pooled_bytes = hot->pool.pooled_bytes;
    out->block_reuses = hot->pool.reused;
    out->chunks = hot->n_chunks;
    out->evictions = hot->evictions;
    out->quota_evictions = hot->quota_evictions;
    out->domain_quota_bytes = hot->domain_quota_bytes;
    pthread_mutex_unlock(&hot->mu);
}
