/* blocks.c - chunk data blocks: page-backed memory, and a pool that keeps
 * freed blocks for reuse.
 *
 * A new block costs more than filling it: mmap, a page fault and a zeroed
 * page per 4 KiB, and later munmap with a TLB shootdown (on the development
 * VM a 2048-token prefill into new chunks stored 6x slower than an
 * overwrite of the same tokens, make bench). A cache that demotes or evicts
 * frees a block for nearly every block it makes, of the same size, so a
 * bounded pool of freed blocks turns most new chunks into reuses. The hot
 * tier decides what is pooled and counts pooled bytes in its budget. */
#include "blocks.h"

#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#define BLOCK_ALIGN 64

bool block_poolable(size_t bytes)
{
    return bytes >= BLOCKS_MMAP_MIN_BYTES;
}

static void *block_map(size_t bytes, bool populate, uint32_t domain)
{
    if (!block_poolable(bytes)) {
        /* C11 wants the size to be a multiple of the alignment. */
        return aligned_alloc(BLOCK_ALIGN, (bytes + BLOCK_ALIGN - 1) & ~(size_t)(BLOCK_ALIGN - 1));
    }
    /* MAP_POPULATE faults the block in once, at creation: a decode step
     * writes one token per chunk, and taking a page fault every few tokens
     * put 1 ms spikes into its p99 (make bench, shape 3). The pages are
     * charged to the budget in full anyway. */
    if (blocks_shared())
        return block_map_shared(bytes, populate, domain, NULL);
    void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | (populate ? MAP_POPULATE : 0), -1, 0);
    return p == MAP_FAILED ? NULL : p;       /* page-aligned, so 64-aligned */
}

void *block_new(size_t bytes, uint32_t domain)
{
    return block_map(bytes, true, domain);
}

void *block_new_unpopulated(size_t bytes, uint32_t domain)
{
    return block_map(bytes, false, domain);
}

void block_release(void *p, size_t bytes)
{
    if (!p)
        return;
    if (block_poolable(bytes)) {
        block_unshare(p, bytes);
        munmap(p, block_map_len(bytes));
    } else
        free(p);
}

/* Free blocks are kept on lists of small nodes, not linked through their
 * own first bytes: a shared block's bytes stay what its domain's clients
 * last saw (no daemon pointer ever lands in memory a client maps). */
struct pool_node {
    struct pool_node *next;
    void *p;
};

bool pool_add(struct kvt_block_pool *pool, void *p, size_t bytes)
{
    int bin = -1;

    for (int i = 0; i < BLOCKS_BINS; i++) {
        if (pool->bins[i].bytes == bytes) {
            bin = i;
            break;
        }
        if (bin < 0 && !pool->bins[i].head)
            bin = i;                 /* empty: may take a new size */
    }
    if (bin < 0)
        return false;
    struct pool_node *node = malloc(sizeof(*node));
    if (!node)
        return false;
    pool->bins[bin].bytes = bytes;
    block_bump(p, bytes);            /* whoever located rows in it: gone */
    node->p = p;
    node->next = pool->bins[bin].head;
    pool->bins[bin].head = node;
    pool->pooled_bytes += bytes;
    return true;
}

static void *pop(struct kvt_block_pool *pool, int bin)
{
    struct pool_node *node = pool->bins[bin].head;
    void *p = node->p;

    pool->bins[bin].head = node->next;
    free(node);
    pool->pooled_bytes -= pool->bins[bin].bytes;
    return p;
}

void *pool_take(struct kvt_block_pool *pool, size_t bytes)
{
    for (int i = 0; i < BLOCKS_BINS; i++) {
        if (pool->bins[i].bytes == bytes && pool->bins[i].head) {
            pool->reused++;
            return pop(pool, i);
        }
    }
    return NULL;
}

void *pool_take_any(struct kvt_block_pool *pool, size_t *bytes)
{
    for (int i = 0; i < BLOCKS_BINS; i++) {
        if (pool->bins[i].head) {
            *bytes = pool->bins[i].bytes;
            return pop(pool, i);
        }
    }
    return NULL;
}
