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

/* Free blocks by size, on lists of nodes (blocks.c). The caller
 * serializes every call on one pool (the hot tier's mutex). */
struct kvt_block_pool {
    struct {
        size_t bytes;                /* of every block in head; any if empty */
        void *head;                  /* struct pool_node, blocks.c */
    } bins[BLOCKS_BINS];
    uint64_t pooled_bytes;
    uint64_t reused;                 /* blocks handed out again (the hot tier
                                      * also counts blocks it hands over
                                      * from an evicted chunk directly) */
};

/* A new block of bytes for a chunk of sharing domain `domain`, 64-byte
 * aligned, its pages already faulted in, or NULL when out of memory. */
void *block_new(size_t bytes, uint32_t domain);
/* The same, its pages faulted in one by one as the caller first writes
 * them: for a caller that writes every page at once and may be starved of
 * CPU meanwhile (MAP_POPULATE holds the process's mmap lock throughout,
 * and munmap elsewhere would wait for it). */
void *block_new_unpopulated(size_t bytes, uint32_t domain);
/* Give a block back to the OS. NULL is ignored. */
void block_release(void *p, size_t bytes);

/* ---- shared blocks (cache/shared_blocks.c) ------------------------------
 * With sharing on (kvtierd share-hot), every poolable block is a memfd of
 * its own, mapped shared by the daemon and sealed so that nobody else can
 * write it (F_SEAL_FUTURE_WRITE), with a struct kvt_block_tail (proto.h)
 * in one page after the data: clients of the block's sharing domain may
 * map it read-only (KVT_OP_BLOCKS) and copy rows straight out of it. A
 * block only ever holds chunks of one domain: block_claim gives a block
 * that changes domain a new memfd in place. Where a memfd cannot be made
 * (out of fds), the block is an ordinary private one, never shared. */
/* Before the first block is made; at most max_blocks shared at once (each
 * holds an fd): blocks beyond it are private. */
void blocks_set_shared(bool on, uint64_t max_blocks);
bool blocks_shared(void);
/* A free block of bytes (the pool's, or an evicted chunk's) becoming the
 * block of a chunk of domain: the same block with its gen changed, or, if
 * it held another domain's chunks, a fresh memfd mapped at the same place.
 * Returns p, or NULL (p released) when no memory is left. */
void *block_claim(void *p, size_t bytes, uint32_t domain);
/* Change a shared block's gen before writing into it (no-op otherwise):
 * a client that located rows in it sees them change. */
void block_bump(void *p, size_t bytes);
/* A shared block's id and current gen: 0, or -ENOENT if it is not shared. */
int block_locate(const void *p, size_t bytes, uint64_t *id, uint64_t *gen);
/* A new fd of shared block id, if it is live and of domain: the fd
 * (close it after sending), or -ENOENT. */
int block_fd(uint64_t id, uint32_t domain);
/* Insides, for blocks.c: bytes mapped for a block of bytes (with sharing
 * on, the data rounded up to pages and the tail's page); a new block
 * (block_map's, shared when it can be); a released block's memfd let go. */
size_t block_map_len(size_t bytes);
void *block_map_shared(size_t bytes, bool populate, uint32_t domain, void *at);
void block_unshare(void *p, size_t bytes);
/* Shared blocks now, and blocks that fell back to private memory. */
uint64_t blocks_shared_count(void);
uint64_t blocks_share_fallbacks(void);
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
