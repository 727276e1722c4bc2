/* hot_int.h - the hot tier's insides, shared by hot.c, hot_walk.c and
 * hot_evict.c. Nothing outside cache/hot*.c includes it. */
#ifndef KVT_HOT_INT_H
#define KVT_HOT_INT_H

#include "blocks.h"
#include "domain_bytes.h"
#include "hot.h"

/* Accounting, all guarded by mu:
 *   used_bytes      = charged_bytes of every allocated chunk (linked, or
 *                     unlinked but still pinned) + bytes reserved by
 *                     hot_get_or_create while it allocates without the lock
 *                     + pool.pooled_bytes (free blocks are memory too);
 *   evictable_bytes = charged_bytes of linked chunks with no pins;
 *   hook_bytes      = charged_bytes of chunks whose evict hook is running.
 * So used_bytes - evictable_bytes - hook_bytes - pooled_bytes is what no
 * eviction can free right now, which tells -ENOSPC apart before anything is
 * evicted in vain.
 *   domain_used     = used_bytes split by the key's sharing domain (every
 *                     change of used_bytes for a chunk changes its domain's
 *                     count too); a domain's slot is reserved before its
 *                     first charge, so updates never allocate. */
struct kvt_hot {
    pthread_mutex_t mu;
    pthread_cond_t hook_done;          /* broadcast when an evict hook returns */
    struct kvt_chunk **buckets;        /* chains through hash_next */
    size_t n_buckets;                  /* power of two */
    uint64_t n_chunks;                 /* linked chunks */
    uint64_t budget_bytes, used_bytes, evictable_bytes, hook_bytes;
    struct kvt_block_pool pool;        /* free data blocks */
    void *unmap;                       /* blocks trimmed from it, to unmap */
    uint64_t pool_cap_bytes;
    uint64_t evictions, quota_evictions;
    uint64_t domain_quota_bytes;       /* 0 = none */
    struct kvt_domain_bytes domain_used;
    struct kvt_chunk *lru_head, *lru_tail;   /* head = most recently used */
    /* Unlinked chunks that are still pinned, chained through lru_prev/next
     * (free once unlinked), so hot_destroy can find them. */
    struct kvt_chunk *orphans;
    hot_evict_fn evict_fn;
    void *evict_arg;
};

/* hot.c. With mu held: pin a chunk; unlink it from the index and LRU (an
 * unpinned one goes on *to_free, chained through hash_next). */
void hot_chunk_pin(struct kvt_hot *hot, struct kvt_chunk *c);
void hot_chunk_unlink(struct kvt_hot *hot, struct kvt_chunk *c,
                      struct kvt_chunk **to_free);
/* Without mu: move an unlinked chunk's block to the pool if it has room;
 * free an unlinked, unpinned chunk (and its block, unless pooled). */
void hot_pool_keep(struct kvt_hot *hot, struct kvt_chunk *c);
void hot_chunk_free(struct kvt_chunk *c);
/* Free a chain of unlinked, unpinned chunks (through hash_next), their
 * blocks to the pool while it has room; without mu. */
void hot_free_chunks(struct kvt_hot *hot, struct kvt_chunk *list);
/* With mu held: drop a pin (an unlinked chunk whose last pin goes is put on
 * *to_free); trim the pool to keep_bytes, setting blocks aside for
 * hot_unmap_take; the pool's cap for a budget. */
void hot_chunk_unpin(struct kvt_hot *hot, struct kvt_chunk *c, struct kvt_chunk **to_free);
void hot_pool_trim(struct kvt_hot *hot, uint64_t keep_bytes);
uint64_t hot_pool_cap(uint64_t budget_bytes);
/* Take the blocks set aside (mu held); unmap them (without mu). */
void *hot_unmap_take(struct kvt_hot *hot);
void hot_unmap_all(void *chain);

/* hot_evict.c, with mu held (dropped around evict hooks, so callers look
 * up again afterwards; unlinked chunks go on *to_free). Make need bytes
 * fit the budget: 0 or -ENOSPC (nothing evicted in vain unless
 * best_effort). Make need bytes fit domain's quota: 0 or -EDQUOT. */
int hot_evict_until_fits(struct kvt_hot *hot, uint64_t need, bool best_effort,
                         struct kvt_chunk **to_free);
int hot_evict_domain_until_fits(struct kvt_hot *hot, uint32_t domain, uint64_t need,
                                struct kvt_chunk **to_free);
bool hot_quota_fits(const struct kvt_hot *hot, uint32_t domain, uint64_t need);

#endif
