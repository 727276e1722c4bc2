/* region.h - the client's shared memory region: a sealed memfd and an allocator. */
#ifndef KVT_REGION_H
#define KVT_REGION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct region_block;

/* The memfd is sealed against shrinking and growing before the daemon sees it,
 * so the daemon's mapping can never fault on a truncated file. */
struct kvt_region {
    int fd;
    uint8_t *base;
    size_t bytes;
    struct region_block *blocks;   /* every block in address order */
};

#define REGION_ALIGN 64
#define REGION_DEFAULT_BYTES (256u << 20)

/* The size to create: asked if not 0, else $KVTIER_SHM_BYTES, else the
 * default. -EINVAL with *why set when the variable is not a size. */
int region_size(size_t asked, size_t *bytes, const char **why);

/* Create, size, seal and map a region of `bytes` (rounded up to pages).
 * Returns 0 or -errno. */
int region_create(struct kvt_region *r, size_t bytes);
/* Unmap and close; r may be half-built (fd -1, base NULL). */
void region_destroy(struct kvt_region *r);
/* First-fit allocation of REGION_ALIGN-aligned memory; NULL when full. */
void *region_alloc(struct kvt_region *r, size_t bytes);
/* Free what region_alloc returned; other pointers are ignored. */
void region_free(struct kvt_region *r, void *p);
/* Bytes of the largest free block. */
size_t region_largest_free(const struct kvt_region *r);
/* True if [p, p + n) lies inside the region; *off gets its offset. */
bool region_contains(const struct kvt_region *r, const void *p, size_t n,
                     uint64_t *off);

#endif
