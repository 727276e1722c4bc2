/* hot.h - RAM tier: chunk index, byte budget, LRU eviction, pinning, and
 * the operations that write, read and write back a chunk's values.
 *
 * The hot tier owns chunk memory. Every chunk is found by its key in one hash
 * index and sits on one LRU list; both are guarded by the tier's mutex. The
 * values inside a chunk (its data block and presence bitmap) are guarded by
 * the chunk's own rwlock, so workers on different chunks never contend.
 * Callers never touch either: they pass callbacks to hot_write, hot_read
 * and hot_write_back, which run them under the right lock.
 *
 * Pinning: every operation pins the chunk it works on while it runs, and
 * hot_pin_dirty() returns pinned chunks; hot_put() unpins one. A pinned
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

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "chunk.h"

struct kvt_hot;
/* A chunk: opaque outside cache/hot*.c (hot_int.h). The daemon holds
 * pointers to pinned chunks (evict hook, hot_pin_dirty) and hands them back
 * to hot_write_back and hot_put; everything inside is the tier's. */
struct kvt_chunk;

/* Called with the chunk pinned and not yet unlinked, from the thread that
 * evicts, before an LRU chunk is dropped for space: the seam for demotion
 * to a colder tier. It runs without the tier mutex; of the hot tier it may
 * call only hot_write_back() on this chunk.
 * It runs without the tier mutex, so other threads carry on meanwhile; if one
 * of them looks the chunk up before the hook returns, the eviction of that
 * chunk is abandoned (a writer may have changed it after the hook's copy) and
 * the chunk stays in the tier. Lock order: a chunk's lock may be held while
 * taking the tier mutex, never the other way round. */
typedef void (*hot_evict_fn)(void *arg, struct kvt_chunk *chunk);

/* Called once for every chunk hot_write or hot_load creates, before any
 * other thread can read, write or write back the chunk (it is linked but
 * write-locked by its creator, so they wait): the seam for merging a colder
 * copy in before any store's rows. data and present are the new chunk's
 * block and bitmap (every token absent); the hook copies in what it has
 * (chunk_merge_image) and sets those tokens' bits. Runs on the creating
 * thread without the tier mutex, holding the chunk's write lock: it must
 * not call the hot tier. Returns 0 (whether or not it found a copy), or
 * -errno: the chunk is thrown away (unlinked and marked gone, so no store
 * ever finds it half filled) and the caller gets the error; -ESTALE means
 * the colder copy has *other's shape, which differs only in outliers: the
 * chunk is thrown away and created again with *other, so that a chunk
 * keeps the outliers its data was first written with. */
typedef int (*hot_fill_fn)(void *arg, const struct kvt_chunk_key *key,
                           const struct kvt_chunk_shape *shape, void *data,
                           uint64_t *present, struct kvt_chunk_shape *other);

/* Moves rows between a chunk's block and the caller: called by hot_write
 * (to write) and hot_read (to read: data must not be changed then) with
 * the chunk's lock held and its shape (which may differ from the one asked
 * for in outliers: see hot_write). The callee computes the rows' places
 * (chunk_view) itself. Returns 0 or -errno. */
typedef int (*hot_rows_fn)(void *arg, const struct kvt_chunk_shape *shape, void *data);

/* Given a consistent image of a chunk by hot_write_back: data holds the
 * rows of present tokens only, zeros elsewhere (blocks are recycled and may
 * hold another domain's bytes where no token is). Valid during the call.
 * Returns 0 or -errno. */
typedef int (*hot_image_fn)(void *arg, const struct kvt_chunk_image *img);

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
/* Pin up to max dirty chunks into out[], most recently used first; the
 * caller hot_put()s each. Returns how many. */
size_t hot_pin_dirty(struct kvt_hot *hot, struct kvt_chunk **out, size_t max);
/* Number of dirty chunks (a walk of every chunk: for progress reports). */
uint64_t hot_count_dirty(struct kvt_hot *hot);

/* ---- the chunk operations ---------------------------------------------------
 * Every store, fetch and write-back goes through these: the tier finds the
 * chunk, takes its lock, runs the caller's callback, keeps the presence bits
 * and the dirty flag, and unpins, taking the tier mutex twice per call (a
 * found chunk: once to find and pin, once to mark dirty and unpin). The
 * chunk's rwlock guards its block, bitmap and gone mark; a write holds it
 * for writing, so a racing read sees every token's old or new rows, never
 * a mix. */

/* From now on the calling thread (the event loop) makes no new data block
 * for a chunk it creates: where neither the pool nor an evicted chunk has
 * one to give, hot_write (and what calls it) answers -EINPROGRESS, having
 * linked nothing and charged nothing, and the caller hands the request to
 * a thread that may (a block's pages are faulted in at creation, which
 * takes milliseconds on a virtual machine). Stages are not refused. */
void hot_forbid_new_blocks(bool forbid);

/* Set the fill hook (NULL: none) for chunks created from now on. */
void hot_set_fill_hook(struct kvt_hot *hot, hot_fill_fn fn, void *arg);

/* Write tokens [tok, tok + n) of key's chunk: find it, or create it with
 * every token absent and run the fill
 * hook on it; then, holding its write lock, call fill(arg, shape, data),
 * and when that returns 0 mark the tokens present and the chunk dirty. An
 * existing chunk whose shape differs from *shape only in outliers is used
 * with its own shape (fill sees it). When fill fails, its tokens' rows are
 * garbage: the tokens are left (or made) absent, and the chunk is marked
 * dirty only if some of them were present before (so the colder copy loses
 * them too). A chunk dropped before the lock was taken is looked up again
 * (a few times). A new chunk is charged to the budget and to its key's
 * sharing domain: if the domain would go over the domain quota, that
 * domain's least recently used unpinned chunks are evicted first; then
 * those of any domain, to fit the budget. Returns 0, fill's error, the fill
 * hook's, -EAGAIN (the chunk kept being dropped), -EDQUOT if the chunk
 * cannot fit the domain's quota even after evicting every unpinned chunk
 * of the domain (some may have been evicted then), -ENOSPC if it cannot
 * fit even after evicting every unpinned chunk (nothing is evicted then),
 * -ENOMEM, or -EINVAL if an existing chunk has another shape (beyond
 * outliers) or the shape is outside chunk.h's bounds. */
int hot_write(struct kvt_hot *hot, const struct kvt_chunk_key *key,
              const struct kvt_chunk_shape *shape, uint32_t tok, uint32_t n,
              hot_rows_fn fill, void *arg);
/* Read tokens [tok, tok + n) of key's chunk: with its read lock held, call
 * read(arg, shape, data). Returns read's result, or -ENOENT if the chunk is
 * absent (or dropped) or lacks any of the tokens. Marks it recently used. */
int hot_read(struct kvt_hot *hot, const struct kvt_chunk_key *key, uint32_t tok,
             uint32_t n, hot_rows_fn read, void *arg);
/* Bring key's chunk in through the fill hook if it is not in the tier:
 * creates it with *shape and runs the hook; a chunk the hook gave no token
 * is thrown away (no empty chunk left behind). Returns 0 if the chunk is in
 * the tier now, -ENOENT if the hook found nothing (or there is no hook),
 * the hook's errors, or hot_write's errors of finding or creating. */
int hot_load(struct kvt_hot *hot, const struct kvt_chunk_key *key,
             const struct kvt_chunk_shape *shape);
/* If the pinned chunk changed since its last write-back and was not
 * dropped, give fn a consistent image of it (see hot_image_fn) and mark it
 * clean; the read lock is held across fn, so a store waits and marks it
 * dirty again afterwards. If fn fails the chunk stays dirty (written again
 * later). Returns 0 (also when there was nothing to write), fn's error or
 * -ENOMEM. */
int hot_write_back(struct kvt_hot *hot, struct kvt_chunk *chunk, hot_image_fn fn, void *arg);
/* *tokens = tokens of key's chunk present from token 0 without a gap.
 * Returns 0, or -ENOENT if the chunk is absent (or dropped). */
int hot_leading_tokens(struct kvt_hot *hot, const struct kvt_chunk_key *key,
                       uint32_t *tokens);
/* Mark key's chunk dirty and recently used, as a lookup does (which also
 * abandons an eviction whose hook runs). Takes no chunk lock. Returns 0 or
 * -ENOENT. */
int hot_redirty(struct kvt_hot *hot, const struct kvt_chunk_key *key);

/* ---- staged chunks ----------------------------------------------------------
 * A store that covers a whole chunk can write it aside first and link it
 * later, so that it reads the client's rows once and can still be refused
 * whole (NaN in int8) with nothing linked. A stage is a chunk nobody can
 * find: the caller holds it until it commits or frees it, exactly once.
 * While it exists it is charged to the budget and key's domain like a new
 * chunk, next to the chunk it will replace: an overwrite needs twice its
 * bytes for a moment. */

/* Make a stage of key's chunk with *shape as a creation would (evicting LRU
 * chunks for room, a pooled block preferred, charged), run fill(arg,
 * shape, data) on its block (every token), and return it in *out with
 * every token present. Returns 0, fill's error (the stage is freed), or
 * hot_write's errors of creating (-ENOSPC, -EDQUOT, -ENOMEM, -EINVAL). */
int hot_stage_alloc(struct kvt_hot *hot, const struct kvt_chunk_key *key,
                    const struct kvt_chunk_shape *shape, hot_rows_fn fill, void *arg,
                    struct kvt_chunk **out);
/* Make the stage key's chunk: if the chunk is absent the stage becomes it
 * (no fill hook: every token is overwritten); if it exists with the same
 * shape, its block is swapped for the stage's under its write lock, every
 * token marked present and the chunk dirty. Returns 0 (the stage is
 * consumed), or -ESTALE if the chunk exists with other outliers (it keeps
 * them: write its rows with hot_write), -EINVAL for another shape, -EAGAIN
 * if it kept being dropped; on error the stage is still the caller's. A
 * commit after a drop of the chunk is a store after the drop. */
int hot_stage_commit(struct kvt_hot *hot, struct kvt_chunk *stage);
/* Free a stage not committed (NULL is ignored): its block to the pool or
 * the OS, its charge released. */
void hot_stage_free(struct kvt_hot *hot, struct kvt_chunk *stage);

/* ---- promotions read aside ---------------------------------------------------
 * A promotion may read a colder copy into a stage with nothing held (on a
 * thread that may be starved of CPU), then link it as a clean chunk, if
 * the key had no chunk from before the caller checked the copy until the
 * link. That holds when: hot_absent_stamp finds no chunk, the caller then
 * sees the copy is still the one it read, and hot_link_promoted finds no
 * chunk of the key linked since the stamp. */

/* A stage of key's chunk for a promotion: hot_stage_alloc without a fill,
 * and without a block unless the pool or an evicted chunk has one to
 * give, so that a new block's page faults are taken by the thread that
 * writes it. Returns as hot_stage_alloc does. */
int hot_stage_alloc_empty(struct kvt_hot *hot, const struct kvt_chunk_key *key,
                          const struct kvt_chunk_shape *shape, struct kvt_chunk **out);
/* The stage's block, made now if it has none (NULL: no memory), its pages
 * faulted in as they are first written: the caller's to write before
 * hot_link_promoted, every row the bitmap it links with says is present
 * (and, so that no later write faults, every page). */
void *hot_stage_data(struct kvt_chunk *stage);
/* 0 and *stamp if key has no chunk now; -EEXIST if it has one. */
int hot_absent_stamp(struct kvt_hot *hot, const struct kvt_chunk_key *key, uint64_t *stamp);
/* Link the stage as its key's chunk, clean, with the tokens of present
 * (a bitmap of its shape's tokens) present, if no chunk of the key was
 * linked since stamp (nor of some other keys: a hash decides). Returns 0
 * (the stage is the tier's now) or -EAGAIN (still the caller's). */
int hot_link_promoted(struct kvt_hot *hot, struct kvt_chunk *stage, const uint64_t *present,
                      uint64_t stamp);

/* Bytes a chunk of this shape is charged against the budget and its
 * domain's quota (data block, bitmap, header): a quota below it fits none. */
uint64_t hot_chunk_bytes(const struct kvt_chunk_shape *shape);
/* Unpin; frees the chunk if it was unlinked and this was the last pin. */
void hot_put(struct kvt_hot *hot, struct kvt_chunk *chunk);

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

#endif
