/* hot.h - RAM tier: chunk index, byte budget, LRU eviction, pinning.
 *
 * The hot tier owns chunk memory. Every chunk is found by its key in one hash
 * index and sits on one LRU list; both are guarded by the tier's mutex. The
 * values inside a chunk (its data block and presence bitmap) are guarded by
 * the chunk's own rwlock, so workers on different chunks never contend.
 *
 * Pinning: hot_get*() returns a pinned chunk; hot_put() unpins it. A pinned
 * chunk is never freed: eviction and drops unlink it from the index at once
 * (so new lookups miss) and free it when the last pin goes. Its bytes stay
 * charged to the budget until then, so the budget is never exceeded.
 *
 * Quotas: every chunk's bytes are also charged to the sharing domain in its
 * key. With a domain quota set, a domain at its quota makes room by evicting
 * its own least recently used chunks; it never pushes out another domain's.
 */
#ifndef KVT_HOT_H
#define KVT_HOT_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "chunk.h"

struct kvt_hot;

struct kvt_chunk {
    struct kvt_chunk_key key;        /* immutable after creation */
    struct kvt_chunk_shape shape;    /* immutable after creation */
    pthread_rwlock_t lock;           /* guards present[], data and gone */
    uint64_t *present;               /* bitmap of shape.tokens bits */
    void *data;                      /* chunk_data_bytes(&shape), see chunk.h */
    /* Set, under the write lock, once the chunk is unlinked by a drop or
     * by hot_discard: what is written into it is lost and a write-back
     * must skip it (its values may belong to a dropped object). */
    bool gone;
    /* Owned by hot.c, guarded by the tier mutex: */
    uint32_t pins;
    bool linked;                     /* in the index and the LRU list */
    bool dirty;                      /* changed since last hot_mark_clean() */
    bool touched;                    /* looked up since its evict hook began */
    struct kvt_chunk *hash_next;
    struct kvt_chunk *lru_prev, *lru_next;
    struct kvt_chunk *drop_next;     /* a drop's pinned chunks to mark gone */
    uint64_t charged_bytes;          /* what this chunk costs the budget */
};

/* Called with the chunk pinned and not yet unlinked, from the thread that
 * evicts, before an LRU chunk is dropped for space: the seam for demotion
 * to a colder tier. It runs without the tier mutex; of the hot tier it may
 * call only hot_take_dirty().
 * It runs without the tier mutex, so other threads carry on meanwhile; if one
 * of them looks the chunk up before the hook returns, the eviction of that
 * chunk is abandoned (a writer may have changed it after the hook's copy) and
 * the chunk stays in the tier. Lock order: a chunk's lock may be held while
 * taking the tier mutex, never the other way round. */
typedef void (*hot_evict_fn)(void *arg, struct kvt_chunk *chunk);

struct kvt_hot_stats {
    uint64_t budget_bytes;
    uint64_t used_bytes;             /* by chunks */
    uint64_t pooled_bytes;           /* free blocks kept for reuse (also in the budget) */
    uint64_t block_reuses;           /* new chunks that got a freed block */
    uint64_t chunks;                 /* chunks a lookup can find */
    uint64_t evictions;              /* chunks dropped for space */
    uint64_t quota_evictions;        /* of which for a domain's quota */
    uint64_t domain_quota_bytes;     /* 0 = no quota */
};

/* Create a tier that never holds more than budget_bytes (data, bitmap,
 * per-chunk metadata and the pool of free data blocks kept for reuse, up
 * to 1/16 of the budget, all count; the pool gives way first when chunks
 * need the room). Returns 0 or -ENOMEM. */
int hot_create(uint64_t budget_bytes, struct kvt_hot **out);
/* Free every chunk (pins are ignored: call only when no worker runs). */
void hot_destroy(struct kvt_hot *hot);
/* Change the budget; evicts at once to fit a smaller one. If pinned chunks
 * alone exceed it, every unpinned chunk goes and used_bytes stays above the
 * budget until enough of them are put and evicted by later inserts. */
void hot_set_budget(struct kvt_hot *hot, uint64_t budget_bytes);
void hot_set_evict_hook(struct kvt_hot *hot, hot_evict_fn fn, void *arg);
/* Set the bytes each sharing domain may hold (0 = no quota). It applies to
 * later creations; nothing is evicted here (eviction runs hooks, which may
 * write to disk: the caller chooses the thread, see below). */
void hot_set_domain_quota(struct kvt_hot *hot, uint64_t bytes);
/* Bring every domain above the quota under it now, evicting its own least
 * recently used unpinned chunks through the hook (a domain whose chunks are
 * pinned stays above until its next creation). */
void hot_enforce_domain_quota(struct kvt_hot *hot);
/* Up to max sharing domains that hold bytes in the tier, into out; returns
 * how many. */
size_t hot_domains(struct kvt_hot *hot, uint32_t *out, size_t max);
/* Bytes charged to domain now (chunks, pinned orphans, allocations in
 * progress), as used_bytes counts them. */
uint64_t hot_domain_used(struct kvt_hot *hot, uint32_t domain);

/* Evict least recently used unpinned chunks (through the hook) until the
 * chunks' bytes (stats used_bytes, the pool not counted) are at most
 * target_bytes or nothing more can go: the background demotion from the
 * high to the low watermark. Their blocks are pooled for the next stores. */
void hot_evict_to(struct kvt_hot *hot, uint64_t target_bytes);
/* Return whether the chunk was dirty and mark it clean, atomically. The
 * evict hook may call this (it runs without the tier mutex). Call it with
 * the chunk's lock held for reading, so no store slips between the test and
 * the copy that makes it clean. */
bool hot_take_dirty(struct kvt_hot *hot, struct kvt_chunk *chunk);
/* Pin up to max dirty chunks into out[], most recently used first; the
 * caller hot_put()s each. Returns how many. */
size_t hot_pin_dirty(struct kvt_hot *hot, struct kvt_chunk **out, size_t max);
/* Number of dirty chunks (a walk of every chunk: for progress reports). */
uint64_t hot_count_dirty(struct kvt_hot *hot);

/* Find and pin. Returns 0, or -ENOENT if absent. Marks it recently used. */
int hot_get(struct kvt_hot *hot, const struct kvt_chunk_key *key,
            struct kvt_chunk **out);
/* Find, or create with all tokens absent, and pin. If the key's domain
 * would go over the domain quota, first evicts that domain's least recently
 * used unpinned chunks; then evicts least recently used unpinned chunks of
 * any domain to fit the budget. Returns 0, -EDQUOT if the chunk cannot fit
 * the domain's quota even after evicting every unpinned chunk of the domain
 * (some may have been evicted then), -ENOSPC if the chunk cannot
 * fit even after evicting every unpinned chunk (nothing is evicted then),
 * -ENOMEM, or -EINVAL if an existing chunk has a different shape or the
 * shape is outside chunk.h's bounds (or its elem is unknown). */
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
/* Unlink a pinned chunk whose write lock the caller holds and mark it gone:
 * a creator that could not fill it throws it away, so that no store finds
 * it half filled. Threads that found it before see gone once they get the
 * lock. The caller still unlocks and hot_put()s. */
void hot_discard(struct kvt_hot *hot, struct kvt_chunk *chunk);
/* Bytes a chunk of this shape is charged against the budget and its
 * domain's quota (data block, bitmap, header): a quota below it fits none. */
uint64_t hot_chunk_bytes(const struct kvt_chunk_shape *shape);
/* Unpin; frees the chunk if it was unlinked and this was the last pin. */
void hot_put(struct kvt_hot *hot, struct kvt_chunk *chunk);

/* Mark the chunk changed (call after writing values under its lock). */
void hot_mark_dirty(struct kvt_hot *hot, struct kvt_chunk *chunk);
/* Mark the chunk unchanged: call once its values are in a colder tier, still
 * holding the chunk's lock (read) under which they were copied, so that a
 * write after the copy always marks it dirty again after this. */
void hot_mark_clean(struct kvt_hot *hot, struct kvt_chunk *chunk);

/* Drop every chunk whose key matches ns_id/obj_hi/obj_lo (any layer and
 * chunk index). Returns how many were dropped. Unpinned chunks are freed;
 * pinned ones (a store, fetch, flush or demotion holds them) are marked
 * gone under their write lock before this returns, so a write-back that
 * holds the read lock has finished its write when the drop returns, and
 * one that takes it later sees gone and writes nothing: after the return,
 * nothing of the dropped chunks reaches a colder tier. Takes chunk locks:
 * call it holding none. Same for hot_drop_namespace. */
uint64_t hot_drop_object(struct kvt_hot *hot, uint64_t ns_id,
                         uint64_t obj_hi, uint64_t obj_lo);
/* Told how many of the total chunks a long drop has freed so far. */
typedef void (*hot_progress_fn)(void *arg, uint64_t done, uint64_t total);
/* Drop every chunk of a namespace (ns_id != 0) or of every namespace
 * (ns_id == 0). Unlinking is quick; freeing gigabytes takes a while (the
 * kernel unmaps every page), so progress (may be NULL) hears of it every
 * 256 chunks. Returns how many were dropped. */
uint64_t hot_drop_namespace(struct kvt_hot *hot, uint64_t ns_id,
                            hot_progress_fn progress, void *arg);

void hot_stats(struct kvt_hot *hot, struct kvt_hot_stats *out);

/* Presence bitmap helpers; call with the chunk lock held. */
static inline bool chunk_has(const struct kvt_chunk *c, uint32_t tok)
{
    return (c->present[tok / 64] >> (tok % 64)) & 1;
}
static inline void chunk_set(struct kvt_chunk *c, uint32_t tok)
{
    c->present[tok / 64] |= UINT64_C(1) << (tok % 64);
}
/* True if tokens [first, first + n) are all present. */
bool chunk_has_range(const struct kvt_chunk *c, uint32_t first, uint32_t n);
/* Number of tokens present from token 0 onward without a gap. */
uint32_t chunk_leading_tokens(const struct kvt_chunk *c);

#endif
