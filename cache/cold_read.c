/* cold_read.c - the cold tier's reads: a record is looked up in the index,
 * copied from the write buffers for the part of it not yet on disk, read
 * from the file for the rest, then checked (format, key, sequence,
 * checksum) before anything in it is trusted. The rules are at the top of
 * cold.c. */
#include <errno.h>
#include <lz4.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>

#include "cold_int.h"

/* Check a record header against everything it implies, before trusting any
 * length in it. version is its region header's (cold_format.h: a record is
 * of its region's version); room is how many bytes the region has from the
 * record on. Returns the record's total bytes or -EBADMSG. */
int64_t cold_record_check(const struct cold_record_header *h, uint32_t version, uint64_t room)
{
    uint64_t total;

    if (h->magic != COLD_RECORD_MAGIC || h->version != version ||
        version < COLD_FORMAT_VERSION_MIN || version > COLD_FORMAT_VERSION)
        return -EBADMSG;
    if (h->kind == COLD_REC_CHUNK) {
        /* Version 1's shape ended in a u32 elem: bytes that now read as
         * outliers were its high half, 0 in every valid version-1 shape. */
        /* A chunk keyed as a name (cold_key_is_name) would take the slot
         * of its context's name in the index and be read as one. */
        if ((h->flags & ~COLD_REC_LZ4) || !cold_shape_valid(&h->shape) ||
            cold_key_is_name(&h->key) || (version == 1 && h->shape.outliers != 0) ||
            h->raw_len != chunk_data_bytes(&h->shape) ||
            h->stored_len == 0 || h->stored_len > h->raw_len ||
            (!(h->flags & COLD_REC_LZ4) && h->stored_len != h->raw_len))
            return -EBADMSG;
        total = (uint64_t)REC_HDR + chunk_bitmap_bytes(h->shape.tokens) + h->stored_len;
    } else if (h->kind == COLD_REC_TOMB_OBJECT || h->kind == COLD_REC_TOMB_NAMESPACE) {
        static const struct kvt_chunk_shape zero;
        if (h->flags || h->raw_len || h->stored_len ||
            memcmp(&h->shape, &zero, sizeof(zero)) != 0)
            return -EBADMSG;
        total = REC_HDR;
    } else if (h->kind == COLD_REC_NAME) {
        /* The block's contents are checked where it is read
         * (cold_name_decode): a bad one costs only itself. */
        static const struct kvt_chunk_shape zero;
        if (version < COLD_NAME_FIRST_VERSION || h->flags || h->raw_len != h->stored_len ||
            h->raw_len < sizeof(struct cold_name_block) || h->raw_len > COLD_NAME_BLOCK_MAX ||
            memcmp(&h->shape, &zero, sizeof(zero)) != 0)
            return -EBADMSG;
        total = (uint64_t)REC_HDR + h->raw_len;
    } else {
        return -EBADMSG;
    }
    return total <= room ? (int64_t)total : -EBADMSG;
}

/* rec is ours to scribble on: the checksum field is zeroed to hash. */
bool cold_record_sum_ok(const struct kvt_cold *c, uint8_t *rec, uint32_t n)
{
    const size_t at = offsetof(struct cold_record_header, checksum);
    uint64_t want, zero = 0;

    memcpy(&want, rec + at, sizeof(want));
    memcpy(rec + at, &zero, sizeof(zero));
    return XXH3_64bits_withSeed(rec, n, c->seed) == want;
}

/* Verify a record read for e's key/seq and decode it into the outputs. */
static int record_decode(const struct kvt_cold *c, uint8_t *rec, const struct cold_entry *e,
                         uint32_t version, struct kvt_chunk_shape *shape, uint64_t *present,
                         void *data)
{
    struct cold_record_header h;
    uint32_t bitmap;

    memcpy(&h, rec, REC_HDR);
    if (cold_record_check(&h, version, e->rec_bytes) != (int64_t)e->rec_bytes ||
        h.kind != COLD_REC_CHUNK || h.seq != e->seq || h.raw_len != e->raw_len ||
        memcmp(&h.key, &e->key, sizeof(h.key)) != 0 ||
        !cold_record_sum_ok(c, rec, e->rec_bytes))
        return -EBADMSG;
    bitmap = chunk_bitmap_bytes(h.shape.tokens);
    memset(present, 0, KVT_CHUNK_MAX_TOKENS / 8);
    memcpy(present, rec + REC_HDR, bitmap);
    /* The bitmap is whole words on disk: bits past the chunk's tokens are
     * whatever the writer left there, and no caller may see them. */
    if (h.shape.tokens % 64)
        present[h.shape.tokens / 64] &= (UINT64_C(1) << (h.shape.tokens % 64)) - 1;
    if (!(h.flags & COLD_REC_LZ4))
        memcpy(data, rec + REC_HDR + bitmap, h.raw_len);
    else if (LZ4_decompress_safe((const char *)rec + REC_HDR + bitmap, data,
                                 (int)h.stored_len, (int)h.raw_len) != (int)h.raw_len)
        return -EBADMSG;
    *shape = h.shape;
    return 0;
}

/* Copy the part of [off, end) still in write buffers into bounce (which
 * covers from a0). Returns where that part starts, block-aligned: everything
 * below it is on disk. Unretired buffers hold the newest tail of a region,
 * so the part in memory is always a suffix of the record. */
static uint64_t copy_unwritten_locked(struct kvt_cold *c, uint8_t *bounce, uint64_t a0,
                                      uint64_t off, uint64_t end, uint64_t a1)
{
    uint64_t mem_start = a1;

    for (uint32_t i = 0; i < c->n_wbufs; i++) {
        struct cold_wbuf *b = &c->wbufs[i];
        if (b->state == WB_FREE)
            continue;
        uint64_t bend = b->file_off + (b->state == WB_FILLING ? b->fill : b->len);
        uint64_t s = b->file_off > off ? b->file_off : off;
        uint64_t t = bend < end ? bend : end;
        if (s >= t)
            continue;
        memcpy(bounce + (s - a0), b->mem + (s - b->file_off), t - s);
        if (b->file_off < mem_start)
            mem_start = b->file_off;
    }
    return mem_start > a0 ? mem_start : a0;
}

int cold_get(struct kvt_cold *c, const struct kvt_chunk_key *key,
             struct kvt_chunk_shape *shape, uint64_t *present,
             void *data, size_t data_cap)
{
    return cold_get_seq(c, key, shape, present, data, data_cap, NULL);
}

int cold_get_seq(struct kvt_cold *c, const struct kvt_chunk_key *key,
                 struct kvt_chunk_shape *shape, uint64_t *present,
                 void *data, size_t data_cap, uint64_t *seq)
{
    int rc = -ENOENT;

    if (!c || !key || !shape || !present || !data)
        return -EINVAL;
    if (cold_key_is_name(key))
        return -ENOENT;                /* a name record is no chunk */
    pthread_mutex_lock(&c->lock);
    c->st.gets++;
    for (int attempt = 0; attempt < GET_ATTEMPTS; attempt++) {
        struct cold_entry *e = *cold_index_slot(c, key);
        struct cold_entry copy;
        uint8_t *bounce = NULL;
        uint64_t a0, a1, disk_end;
        uint32_t version;

        if (!e) {
            rc = -ENOENT;
            break;
        }
        if (e->raw_len > data_cap) {
            pthread_mutex_unlock(&c->lock);
            return -ENOSPC;
        }
        copy = *e;
        version = c->regions[copy.region].version;
        a0 = copy.off / COLD_BLOCK * COLD_BLOCK;
        a1 = round_up(copy.off + copy.rec_bytes, COLD_BLOCK);
        if (posix_memalign((void **)&bounce, COLD_BLOCK, a1 - a0) != 0) {
            pthread_mutex_unlock(&c->lock);
            return -ENOMEM;
        }
        disk_end = copy_unwritten_locked(c, bounce, a0, copy.off,
                                         copy.off + copy.rec_bytes, a1);
        pthread_mutex_unlock(&c->lock);

        rc = disk_end > a0 ? c->io->ops->read(c->io, bounce, (uint32_t)(disk_end - a0), a0) : 0;
        if (rc == 0)
            rc = record_decode(c, bounce + (copy.off - a0), &copy, version, shape, present,
                               data);
        free(bounce);

        pthread_mutex_lock(&c->lock);
        e = *cold_index_slot(c, key);
        bool same = e && e->seq == copy.seq;
        if (rc == 0) {
            if (seq)
                *seq = copy.seq;
            c->st.hits++;
            c->st.bytes_read += disk_end - a0;
            c->err_burst = false;
            pthread_mutex_unlock(&c->lock);
            return 0;
        }
        if (!same) {
            rc = -ENOENT;          /* replaced or reclaimed while we read: look again */
            continue;
        }
        if (rc == -EBADMSG) {
            c->st.checksum_failures++;
            cold_log_burst(c, LOG_WARNING, "cold: record at offset %llu of %s failed its check; dropped",
                           (unsigned long long)copy.off, c->path);
        } else {
            cold_io_error_locked(c, rc, "read");
            rc = -EIO;
        }
        cold_index_remove(c, e);
        break;
    }
    c->st.misses++;
    pthread_mutex_unlock(&c->lock);
    return rc;
}

/* The index entry of a chunk key, without I/O: its leading tokens and
 * record seq into whichever of the outputs is not NULL. */
static int lookup(struct kvt_cold *c, const struct kvt_chunk_key *key, uint32_t *leading_tokens,
                  uint64_t *seq)
{
    struct cold_entry *e;

    if (cold_key_is_name(key))
        return -ENOENT;
    pthread_mutex_lock(&c->lock);
    e = *cold_index_slot(c, key);
    if (e && leading_tokens)
        *leading_tokens = e->leading_tokens;
    if (e && seq)
        *seq = e->seq;
    pthread_mutex_unlock(&c->lock);
    return e ? 0 : -ENOENT;
}

int cold_lookup(struct kvt_cold *c, const struct kvt_chunk_key *key,
                uint32_t *leading_tokens_out)
{
    return lookup(c, key, leading_tokens_out, NULL);
}

int cold_record_seq(struct kvt_cold *c, const struct kvt_chunk_key *key, uint64_t *seq)
{
    return lookup(c, key, NULL, seq);
}
