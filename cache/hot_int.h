/* hot_int.h - the hot tier's insides, shared by hot.c, hot_ops.c,
 * hot_walk.c and hot_evict.c. Nothing outside cache/hot*.c includes it (but
 * tests/test_hot.c, which checks the insides). */
#ifndef KVT_HOT_INT_H
#define KVT_HOT_INT_H

#include "blocks.h"
#include "domain_bytes.h"
#include "hot.h"

#include <pthread.h>

struct kvt_chunk {
    struct kvt_chunk_key key;        /* immutable after creation */
    struct kvt_chunk_shape shape;    /* immutable after creation */
    pthread_rwlock_t lock;           /* guards present[], data and gone */
    uint64_t *present;               /* bitmap of shape.tokens bits (chunk.h) */
    void *data;                      /* chunk_data_bytes(&shape), see chunk.h */
    /* Set, under the write lock, once the chunk is unlinked by a drop or
     * by hot_discard: what is written into it is lost and a write-back
     * must skip it (its values may belong to a dropped object). */
    bool gone;
    /* Owned by hot.c, guarded by the tier mutex: */
    uint32_t pins;
    bool linked;                     /* in the index and the LRU list */
    bool dirty;                      /* changed since last written back */
    bool touched;                    /* looked up since its evict hook began */
    struct kvt_chunk *hash_next;
    struct kvt_chunk *lru_prev, *lru_next;
    struct kvt_chunk *drop_next;     /* a drop's pinned chunks to mark gone */
    uint64_t charged_bytes;          /* what this chunk costs the budget */
};

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
#define HOT_LINK_SLOTS 1024

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
    hot_fill_fn fill_fn;
    void *fill_arg;
    /* Chunk links per slot of key hashes (hot_link_slot), each bumped
     * whenever a chunk of a key in it is linked: what hot_link_promoted
     * checks against hot_absent_stamp. */
    uint64_t link_gen[HOT_LINK_SLOTS];
};

/* ---- chunk lookups (hot.c), under the operations of hot.h ------------------ */

/* Find and pin. Returns 0, or -ENOENT if absent. Marks it recently used. */
int hot_get(struct kvt_hot *hot, const struct kvt_chunk_key *key,
            struct kvt_chunk **out);
/* Find, or create with all tokens absent, and pin: the finding and
 * creating of hot_write, with its errors. A found chunk whose shape differs
 * from *shape only in outliers is returned (see hot_write). */
int hot_get_or_create(struct kvt_hot *hot, const struct kvt_chunk_key *key,
                      const struct kvt_chunk_shape *shape,
                      struct kvt_chunk **out);
/* hot_get_or_create, but the chunk comes back write-locked as well, and
 * *created says whether this call created it. A created chunk is locked
 * before any other thread can find it, so its creator can fill it (from a
 * colder tier) before anyone else reads, writes or writes back the chunk;
 * a found one is locked after the tier mutex is dropped. The caller
 * unlocks, then hot_put()s. */
int hot_get_or_create_wrlocked(struct kvt_hot *hot, const struct kvt_chunk_key *key,
                               const struct kvt_chunk_shape *shape,
                               struct kvt_chunk **out, bool *created);
/* hot_stage_alloc's allocation (hot.c): a chunk made as hot_get_or_create
 * makes one (evictions, charge to the budget and key's domain, a pooled
 * block preferred) but never linked: an orphan pinned once, which its last
 * hot_put frees and uncharges. Returns 0 or get_or_create's errors. */
int hot_stage_chunk(struct kvt_hot *hot, const struct kvt_chunk_key *key,
                    const struct kvt_chunk_shape *shape, struct kvt_chunk **out);
/* Link a staged chunk (every bit set) under its key as a new chunk, dirty,
 * its pin dropped: 0, the stage is the tier's now. If a chunk has the key
 * already: -EEXIST, that chunk found and pinned in *found, the stage
 * untouched. */
int hot_link_staged(struct kvt_hot *hot, struct kvt_chunk *stage, struct kvt_chunk **found);
/* Unlink a pinned chunk whose write lock the caller holds and mark it gone:
 * a creator that could not fill it throws it away, so that no store finds
 * it half filled. Threads that found it before see gone once they get the
 * lock. The caller still unlocks and hot_put()s. */
void hot_discard(struct kvt_hot *hot, struct kvt_chunk *chunk);
/* Mark the chunk changed (after writing values under its lock) / unchanged
 * (once its values are in a colder tier, still holding the read lock under
 * which they were copied, so that a write after the copy always marks it
 * dirty again after this). */
void hot_mark_dirty(struct kvt_hot *hot, struct kvt_chunk *chunk);
void hot_mark_clean(struct kvt_hot *hot, struct kvt_chunk *chunk);
/* Return whether the chunk was dirty and mark it clean, atomically. Call
 * it with the chunk's lock held for reading, so no store slips between the
 * test and the copy that makes it clean. */
bool hot_take_dirty(struct kvt_hot *hot, struct kvt_chunk *chunk);

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
