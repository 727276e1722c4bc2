/* blocks.h - chunk data blocks: page-backed memory, and a pool that keeps
 * freed blocks for reuse. */
#ifndef KVT_BLOCKS_H
#define KVT_BLOCKS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Blocks at least this big get a mapping of their own (and can be pooled),
 * so that one given back to the OS really goes: glibc's malloc raises its
 * mmap threshold after freeing big blocks and would then keep later ones
 * in its heap. Smaller ones come from malloc. */
#define BLOCKS_MMAP_MIN_BYTES (128 * 1024)
/* Distinct block sizes the pool keeps at once: one per chunk shape in use,
 * and a host serves a handful of models. */
#define BLOCKS_BINS 8

/* Free blocks by size, linked through their first bytes. The caller
 * serializes every call on one pool (the hot tier's mutex). */
struct kvt_block_pool {
    struct {
        size_t bytes;                /* of every block in head; any if empty */
        void *head;
    } bins[BLOCKS_BINS];
    uint64_t pooled_bytes;
    uint64_t reused;                 /* blocks handed out again (the hot tier
                                      * also counts blocks it hands over
                                      * from an evicted chunk directly) */
};

/* A new block of bytes, 64-byte aligned, its pages already faulted in, or
 * NULL when out of memory. */
void *block_new(size_t bytes);
/* The same, its pages faulted in one by one as the caller first writes
 * them: for a caller that writes every page at once and may be starved of
 * CPU meanwhile (MAP_POPULATE holds the process's mmap lock throughout,
 * and munmap elsewhere would wait for it). */
void *block_new_unpopulated(size_t bytes);
/* Give a block back to the OS. NULL is ignored. */
void block_release(void *p, size_t bytes);
/* Whether blocks of this size can be pooled. */
bool block_poolable(size_t bytes);

/* Add a free block; false (and nothing changed) when every bin holds
 * blocks of other sizes. */
bool pool_add(struct kvt_block_pool *pool, void *p, size_t bytes);
/* A free block of exactly bytes, or NULL. */
void *pool_take(struct kvt_block_pool *pool, size_t bytes);
/* Any free block (its size in *bytes), or NULL when the pool is empty. */
void *pool_take_any(struct kvt_block_pool *pool, size_t *bytes);

#endif
