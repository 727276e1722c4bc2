/* cold_file_edit.c - rewrite a cold file's version fields in place, with
 * their checksums (cold_file_edit.h). */
#include "tests/cold_file_edit.h"

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <xxhash.h>

#include "cache/cold_format.h"

#define REC_HDR sizeof(struct cold_record_header)

static int read_at(int fd, void *buf, size_t n, uint64_t off)
{
    ssize_t got = pread(fd, buf, n, (off_t)off);
    return got == (ssize_t)n ? 0 : got < 0 ? -errno : -EIO;
}

static int write_at(int fd, const void *buf, size_t n, uint64_t off)
{
    ssize_t put = pwrite(fd, buf, n, (off_t)off);
    return put == (ssize_t)n ? 0 : put < 0 ? -errno : -EIO;
}

static bool file_header_ok(const struct cold_file_header *h)
{
    return memcmp(h->magic, COLD_FILE_MAGIC, 8) == 0 && h->region_bytes >= COLD_BLOCK &&
           h->file_bytes >= COLD_BLOCK &&
           h->checksum == XXH3_64bits(h, offsetof(struct cold_file_header, checksum));
}

static bool region_header_ok(const struct cold_file_header *f,
                             const struct cold_region_header *h, uint32_t r)
{
    return memcmp(h->magic, COLD_REGION_MAGIC, 8) == 0 && h->index == r && h->seq >= 1 &&
           memcmp(h->file_uuid, f->uuid, sizeof(f->uuid)) == 0 &&
           h->checksum == XXH3_64bits_withSeed(h, offsetof(struct cold_region_header, checksum),
                                              f->seed);
}

static bool all_zero(const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i])
            return false;
    return true;
}

/* Rewrite the records of one region's log (reg: the whole region, header
 * block first) with version v; with drop_names, pack the others back to
 * back without the name records and zero what that frees up to the log's
 * end, as a writer that never logged them would have left it (records
 * hold no offsets; padding between them is optional). */
static void region_records(const struct cold_file_header *f, uint8_t *reg, uint64_t region_seq,
                           uint16_t v, bool drop_names, struct cold_file_counts *n)
{
    uint64_t p = COLD_BLOCK, w = COLD_BLOCK;

    while (p + REC_HDR <= f->region_bytes) {
        struct cold_record_header h;
        uint64_t len = REC_HDR;

        memcpy(&h, reg + p, REC_HDR);
        if (h.magic != COLD_RECORD_MAGIC) {
            uint64_t next = (p + COLD_BLOCK - 1) / COLD_BLOCK * COLD_BLOCK;
            if (next == p || next > f->region_bytes || !all_zero(reg + p, next - p))
                break;
            p = next;
            if (!drop_names)
                w = p;
            continue;
        }
        if (h.region_seq != region_seq)
            break;
        if (h.kind == COLD_REC_CHUNK)
            len += chunk_bitmap_bytes(h.shape.tokens) + (uint64_t)h.stored_len;
        else if (h.kind == COLD_REC_NAME)
            len += h.stored_len;
        if (h.shape.tokens > KVT_CHUNK_MAX_TOKENS || p + len > f->region_bytes)
            break;
        if (h.kind == COLD_REC_NAME && drop_names) {
            n->names++;
            p += len;
            continue;
        }
        memmove(reg + w, reg + p, len);
        h.version = v;
        h.checksum = 0;
        memcpy(reg + w, &h, REC_HDR);
        h.checksum = XXH3_64bits_withSeed(reg + w, len, f->seed);
        memcpy(reg + w, &h, REC_HDR);
        if (h.kind == COLD_REC_CHUNK) {
            n->chunks++;
            n->outliers += h.shape.outliers > 0;
        } else if (h.kind == COLD_REC_NAME) {
            n->names++;
        } else {
            n->tombstones++;
        }
        p += len;
        w += len;
    }
    if (drop_names && w < p)
        memset(reg + w, 0, p - w);
}

int cold_file_set_versions(const char *path, const struct cold_file_versions *v,
                           struct cold_file_counts *counts)
{
    struct cold_file_counts n = { 0 };
    struct cold_file_header f;
    uint8_t *reg = NULL;
    int fd = open(path, O_RDWR | O_CLOEXEC), rc;

    if (fd < 0)
        return -errno;
    rc = read_at(fd, &f, sizeof(f), 0);
    if (rc == 0 && !file_header_ok(&f))
        rc = -EINVAL;
    if (rc == 0 && !(reg = malloc(f.region_bytes)))
        rc = -ENOMEM;
    for (uint32_t r = 0; rc == 0 && COLD_BLOCK + (uint64_t)(r + 1) * f.region_bytes <=
                                        f.file_bytes; r++) {
        uint64_t base = COLD_BLOCK + (uint64_t)r * f.region_bytes;
        struct cold_region_header h;

        rc = read_at(fd, reg, f.region_bytes, base);
        if (rc < 0)
            break;
        memcpy(&h, reg, sizeof(h));
        if (!region_header_ok(&f, &h, r))
            continue;
        n.regions++;
        region_records(&f, reg, h.seq, v->record, v->drop_names, &n);
        h.version = v->region;
        h.checksum = XXH3_64bits_withSeed(&h, offsetof(struct cold_region_header, checksum),
                                          f.seed);
        memcpy(reg, &h, sizeof(h));
        rc = write_at(fd, reg, f.region_bytes, base);
    }
    if (rc == 0) {
        f.version = v->file;
        f.checksum = XXH3_64bits(&f, offsetof(struct cold_file_header, checksum));
        rc = write_at(fd, &f, sizeof(f), 0);
    }
    if (rc == 0 && fsync(fd) < 0)
        rc = -errno;
    free(reg);
    close(fd);
    if (rc == 0 && counts)
        *counts = n;
    return rc;
}

int cold_file_get_versions(const char *path, uint32_t r, uint32_t *file, uint32_t *region)
{
    struct cold_file_header f;
    struct cold_region_header h;
    int fd = open(path, O_RDONLY | O_CLOEXEC), rc;

    if (fd < 0)
        return -errno;
    rc = read_at(fd, &f, sizeof(f), 0);
    if (rc == 0)
        rc = read_at(fd, &h, sizeof(h), COLD_BLOCK + (uint64_t)r * f.region_bytes);
    close(fd);
    if (rc < 0)
        return rc;
    *file = f.version;
    *region = region_header_ok(&f, &h, r) ? h.version : 0;
    return 0;
}
