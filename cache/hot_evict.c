/* hot_evict.c - the hot tier's eviction: least recently used victims, the
 * evict hook (demotion), making room within the byte budget and a sharing
 * domain's quota, and the budget, demotion target and quota settings. */
#include <errno.h>
#include <string.h>

#include "hot_int.h"

/* Domains over a lowered quota handled by one hot_enforce_domain_quota; the
 * rest (there are rarely more domains than uids) at their next store. */
#define HOT_QUOTA_SWEEP 256

/* The least recently used unpinned chunk, of any domain (any_domain) or
 * only of `domain`. */
static struct kvt_chunk *lru_victim(struct kvt_hot *hot, bool any_domain, uint32_t domain)
{
    struct kvt_chunk *c = hot->lru_tail;

    /* A chunk whose hook runs is pinned by its evictor, so it is skipped
     * too and never handed to two hooks at once. */
    while (c && (c->pins || (!any_domain && c->key.domain != domain)))
        c = c->lru_prev;
    return c;
}

/* Evict v (linked, unpinned) through the evict hook. Called and returns
 * with mu held, but drops it around the hook. Returns whether v went. */
static bool evict_victim(struct kvt_hot *hot, struct kvt_chunk *v,
                         struct kvt_chunk **to_free)
{
    hot_evict_fn fn = hot->evict_fn;
    void *arg = hot->evict_arg;
    bool evict;

    if (!fn) {
        hot_chunk_unlink(hot, v, to_free);
        hot->evictions++;
        return true;
    }
    /* The hook may write to the SSD: run it without the mutex, holding
     * a pin so the chunk cannot be freed under it. */
    hot_chunk_pin(hot, v);
    v->touched = false;
    hot->hook_bytes += v->charged_bytes;
    pthread_mutex_unlock(&hot->mu);
    fn(arg, v);
    pthread_mutex_lock(&hot->mu);
    hot->hook_bytes -= v->charged_bytes;
    /* A lookup during the hook may have written tokens the hook did not
     * see; dropping the chunk would lose an acknowledged store, so it
     * stays. A drop during the hook already unlinked it. */
    evict = v->linked && !v->touched;
    hot_chunk_unpin(hot, v, to_free);
    if (evict) {
        hot_chunk_unlink(hot, v, to_free);
        hot->evictions++;
    }
    pthread_cond_broadcast(&hot->hook_done);
    return evict;
}

/* Evict least recently used unpinned chunks until used + need fits the
 * budget. Called and returns with mu held, but drops it around each evict
 * hook, so the caller must re-check anything it looked up before. Unlinked
 * chunks go on *to_free. Returns 0, or -ENOSPC when even evicting every
 * unpinned chunk (and those whose hooks run) cannot make room: then nothing
 * is evicted in vain, unless best_effort asks to get as close as it can. */
int hot_evict_until_fits(struct kvt_hot *hot, uint64_t need, bool best_effort,
                            struct kvt_chunk **to_free)
{
    while (hot->used_bytes + need > hot->budget_bytes) {
        struct kvt_chunk *v;

        if (!best_effort && hot->used_bytes + need > hot->budget_bytes +
            hot->evictable_bytes + hot->hook_bytes + hot->pool.pooled_bytes)
            return -ENOSPC;
        if (hot->pool.pooled_bytes) {
            /* Free blocks go before anyone's data. */
            uint64_t over = hot->used_bytes + need - hot->budget_bytes;
            hot_pool_trim(hot, hot->pool.pooled_bytes > over ? hot->pool.pooled_bytes - over : 0);
            continue;
        }
        v = lru_victim(hot, true, 0);
        if (!v) {
            /* Only chunks in other threads' hooks can still make room. Those
             * hooks never call back into the tier, so this wait ends. */
            if (!hot->hook_bytes)
                return -ENOSPC;
            pthread_cond_wait(&hot->hook_done, &hot->mu);
            continue;
        }
        (void)evict_victim(hot, v, to_free);
    }
    return 0;
}

bool hot_quota_fits(const struct kvt_hot *hot, uint32_t domain, uint64_t need)
{
    return !hot->domain_quota_bytes ||
           domain_bytes_get(&hot->domain_used, domain) + need <= hot->domain_quota_bytes;
}

/* Evict domain's own least recently used unpinned chunks until need more
 * bytes fit its quota; other domains' chunks are never touched. Same
 * locking as hot_evict_until_fits. Returns 0, or -EDQUOT when the domain's
 * pinned chunks (and those in evict hooks) alone leave no room. Unlike
 * hot_evict_until_fits it does not tell that apart beforehand, so chunks may
 * be evicted in vain before -EDQUOT: a domain at its quota with everything
 * pinned is a client holding more than it may, not the common case. */
int hot_evict_domain_until_fits(struct kvt_hot *hot, uint32_t domain, uint64_t need,
                                   struct kvt_chunk **to_free)
{
    if (hot->domain_quota_bytes && need > hot->domain_quota_bytes)
        return -EDQUOT;
    while (!hot_quota_fits(hot, domain, need)) {
        struct kvt_chunk *v = lru_victim(hot, false, domain);

        if (!v) {
            /* Hooks running may be evicting this domain's chunks. */
            if (!hot->hook_bytes)
                return -EDQUOT;
            pthread_cond_wait(&hot->hook_done, &hot->mu);
            continue;
        }
        if (evict_victim(hot, v, to_free))
            hot->quota_evictions++;
    }
    return 0;
}

/* ---- public ---------------------------------------------------------------- */

void hot_set_budget(struct kvt_hot *hot, uint64_t budget_bytes)
{
    struct kvt_chunk *to_free = NULL;

    pthread_mutex_lock(&hot->mu);
    hot->budget_bytes = budget_bytes;
    hot->pool_cap_bytes = hot_pool_cap(budget_bytes);
    hot_pool_trim(hot, hot->pool_cap_bytes);
    /* -ENOSPC here means pinned chunks hold more than the new budget: every
     * unpinned one is gone, the pinned ones stay charged (used_bytes >
     * budget_bytes) until put, and nothing new fits until enough are. */
    (void)hot_evict_until_fits(hot, 0, true, &to_free);
    void *unmap = hot_unmap_take(hot);
    pthread_mutex_unlock(&hot->mu);
    hot_unmap_all(unmap);
    hot_free_chunks(hot, to_free);
}

void hot_evict_to(struct kvt_hot *hot, uint64_t target_bytes)
{
    struct kvt_chunk *to_free = NULL;

    pthread_mutex_lock(&hot->mu);
    /* Demotion makes room for data: target counts chunks, not the pool, and
     * the pool is left alone (it is what the next stores reuse). While the
     * chunks are above target, evict the least recently used. */
    while (hot->used_bytes - hot->pool.pooled_bytes > target_bytes) {
        struct kvt_chunk *v = lru_victim(hot, true, 0);
        if (!v) {
            if (!hot->hook_bytes)
                break;               /* the rest is pinned */
            pthread_cond_wait(&hot->hook_done, &hot->mu);
            continue;
        }
        (void)evict_victim(hot, v, &to_free);
    }
    pthread_mutex_unlock(&hot->mu);
    hot_free_chunks(hot, to_free);
}

void hot_set_domain_quota(struct kvt_hot *hot, uint64_t bytes)
{
    pthread_mutex_lock(&hot->mu);
    hot->domain_quota_bytes = bytes;
    pthread_mutex_unlock(&hot->mu);
}

void hot_enforce_domain_quota(struct kvt_hot *hot)
{
    struct kvt_chunk *to_free = NULL;
    uint32_t over[HOT_QUOTA_SWEEP];
    size_t n = 0;

    pthread_mutex_lock(&hot->mu);
    /* The ids are copied first: eviction drops the mutex around hooks. */
    if (hot->domain_quota_bytes)
        n = domain_bytes_over(&hot->domain_used, hot->domain_quota_bytes, over,
                              HOT_QUOTA_SWEEP);
    for (size_t i = 0; i < n; i++)
        (void)hot_evict_domain_until_fits(hot, over[i], 0, &to_free);  /* -EDQUOT: pinned */
    pthread_mutex_unlock(&hot->mu);
    hot_free_chunks(hot, to_free);
}

size_t hot_domains(struct kvt_hot *hot, uint32_t *out, size_t max)
{
    pthread_mutex_lock(&hot->mu);
    size_t n = domain_bytes_over(&hot->domain_used, 0, out, max);
    pthread_mutex_unlock(&hot->mu);
    return n;
}

uint64_t hot_domain_used(struct kvt_hot *hot, uint32_t domain)
{
    uint64_t used;

    pthread_mutex_lock(&hot->mu);
    used = domain_bytes_get(&hot->domain_used, domain);
    pthread_mutex_unlock(&hot->mu);
    return used;
}
