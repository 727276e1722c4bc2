/* region.c - sealed memfd shared with the daemon, carved up first-fit. */
#include "client/region.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

/* Blocks tile the region in address order; neighbours that are both free are
 * merged on free, so the list stays as long as the number of live blocks. */
struct region_block {
    size_t off, bytes;
    bool used;
    struct region_block *next;
};

static size_t round_up(size_t n, size_t to)
{
    return (n + to - 1) / to * to;
}

int region_create(struct kvt_region *r, size_t bytes)
{
    int rc;
    long page = sysconf(_SC_PAGESIZE);

    r->fd = -1;
    r->base = NULL;
    r->blocks = NULL;
    r->bytes = round_up(bytes, (size_t)page);

    r->fd = memfd_create("kvtier-region", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (r->fd < 0)
        goto err_errno;
    if (ftruncate(r->fd, (off_t)r->bytes) < 0)
        goto err_errno;
    if (fcntl(r->fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) < 0)
        goto err_errno;
    r->base = mmap(NULL, r->bytes, PROT_READ | PROT_WRITE, MAP_SHARED, r->fd, 0);
    if (r->base == MAP_FAILED) {
        r->base = NULL;
        goto err_errno;
    }
    r->blocks = calloc(1, sizeof(*r->blocks));
    if (!r->blocks) {
        rc = -ENOMEM;
        goto err;
    }
    r->blocks->bytes = r->bytes;
    return 0;

err_errno:
    rc = -errno;
err:
    region_destroy(r);
    return rc;
}

void region_destroy(struct kvt_region *r)
{
    struct region_block *b = r->blocks, *next;

    for (; b; b = next) {
        next = b->next;
        free(b);
    }
    r->blocks = NULL;
    if (r->base)
        munmap(r->base, r->bytes);
    r->base = NULL;
    if (r->fd >= 0)
        close(r->fd);
    r->fd = -1;
}

void *region_alloc(struct kvt_region *r, size_t bytes)
{
    if (bytes == 0 || bytes > r->bytes)
        return NULL;
    bytes = round_up(bytes, REGION_ALIGN);
    for (struct region_block *b = r->blocks; b; b = b->next) {
        if (b->used || b->bytes < bytes)
            continue;
        if (b->bytes > bytes) {
            struct region_block *rest = malloc(sizeof(*rest));
            if (!rest)
                return NULL;
            rest->off = b->off + bytes;
            rest->bytes = b->bytes - bytes;
            rest->used = false;
            rest->next = b->next;
            b->next = rest;
            b->bytes = bytes;
        }
        b->used = true;
        return r->base + b->off;
    }
    return NULL;
}

void region_free(struct kvt_region *r, void *p)
{
    struct region_block *prev = NULL, *b;

    if (!p || !r->base)
        return;
    for (b = r->blocks; b; prev = b, b = b->next)
        if (r->base + b->off == (uint8_t *)p && b->used)
            break;
    if (!b)
        return;
    b->used = false;
    if (b->next && !b->next->used) {
        struct region_block *n = b->next;
        b->bytes += n->bytes;
        b->next = n->next;
        free(n);
    }
    if (prev && !prev->used) {
        prev->bytes += b->bytes;
        prev->next = b->next;
        free(b);
    }
}

size_t region_largest_free(const struct kvt_region *r)
{
    size_t best = 0;

    for (const struct region_block *b = r->blocks; b; b = b->next)
        if (!b->used && b->bytes > best)
            best = b->bytes;
    return best;
}

bool region_contains(const struct kvt_region *r, const void *p, size_t n,
                     uint64_t *off)
{
    uintptr_t a = (uintptr_t)p, lo = (uintptr_t)r->base;

    if (!r->base || a < lo || a - lo > r->bytes || n > r->bytes - (a - lo))
        return false;
    *off = a - lo;
    return true;
}

/* The region size: the caller's, else $KVTIER_SHM_BYTES, else the default.
 * A value that is not a size is refused rather than replaced by the default,
 * so a typo does not surface later as a region too small for the work. */
int region_size(size_t asked, size_t *bytes, const char **why)
{
    const char *s = getenv("KVTIER_SHM_BYTES");
    char *end;

    *bytes = asked ? asked : REGION_DEFAULT_BYTES;
    if (asked || !s || !*s)
        return 0;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    unsigned long long mul = 1;
    switch (*end) {
    case 'k': case 'K': mul = 1ull << 10; end++; break;
    case 'm': case 'M': mul = 1ull << 20; end++; break;
    case 'g': case 'G': mul = 1ull << 30; end++; break;
    }
    if (errno || end == s || *end || v == 0 || v > (1ull << 40) / mul) {
        *why = "KVTIER_SHM_BYTES must be a byte count with an optional K, M or G suffix, "
               "above 0 and at most 1T";
        return -EINVAL;
    }
    *bytes = (size_t)(v * mul);
    return 0;
}
