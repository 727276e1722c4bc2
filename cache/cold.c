/* cold.c - SSD tier: writes records in the cold file's regions and keeps
 * their index (reads: cold_read.c; the file itself, recovery, open and
 * close: cold_open.c).
 *
 * The file is a circular log of regions (layout in cold_format.h). Records
 * are appended to the current region; when the next record does not fit, the
 * log moves on to the next region, reclaiming it if it was used: its records
 * leave the index first, then it is rewritten under a new region sequence.
 *
 * Writing. cold_put compresses outside every lock, then copies the record
 * into the filling write buffer. A full buffer is queued to the backend and
 * the queue is submitted once per put (several buffers per system call when
 * a record spans them), so up to write_buffers writes are in flight. Writes
 * complete on the backend's completion thread (io_uring reaper or pwrite
 * thread), which calls cold_wbuf_done(): a dedicated thread rather than reaping
 * inside put/sync, so completions, and the buffers they free, never wait for
 * the next put. Buffers are retired in submission order even when the disk
 * completes them out of order; hence the buffers not yet retired always hold
 * the newest tail of a region, and a record is read from memory for the part
 * of it they hold and from disk for the rest.
 *
 * Reading. cold_get looks the key up, copies whatever part of the record is
 * still in write buffers, reads the rest (4 KiB aligned, O_DIRECT) without
 * holding the lock, then verifies the record. If the record's region was
 * reclaimed and rewritten meanwhile, the check fails but the index no longer
 * holds that record (reclaim drops index entries before the region's first
 * new write is queued): that is a miss, not corruption. Any number of
 * threads may read at once: they share the backend (cold_io.c: one ring,
 * submissions under a mutex, the reaper routes each completion to the
 * reader waiting for it).
 *
 * Write failures. A failed write's records, and every later record of its
 * region (recovery stops at the gap), leave the index; their keys go to
 * the unwritten hook so the caller can write them again, and the log is
 * repaired before the next append (repair_log_locked). A sync returns only
 * after the hook heard of every failure before it.
 *
 * Recovery (cold_open, in cold_open.c) replays regions in sequence order and records in log
 * order, then appends in a fresh region after the newest: simplest, as the
 * newest region's tail may be torn, at the price of reclaiming one region
 * per restart that writes.
 *
 * Locks, in this order: put_lock serializes appenders (a record's bytes must
 * be contiguous in the log even when its put waits for a free buffer
 * halfway); lock guards the index, the log position, the buffers and the
 * stats; the backend's own lock comes last. The completion thread takes only
 * lock, and calls the unwritten hook without it. The log callback may run
 * with lock held and must not call back.
 */
#include <errno.h>
#include <lz4.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <unistd.h>

#include "cold_int.h"


void cold_log(struct kvt_cold *c, int level, const char *fmt, ...)
{
    char msg[512];
    va_list ap;

    if (!c->cfg.log)
        return;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    c->cfg.log(c->cfg.log_arg, level, msg);
}

/* Log the first I/O or checksum error of a burst; the burst ends when an
 * I/O succeeds, so a failing disk does not flood the log. */
void cold_log_burst(struct kvt_cold *c, int level, const char *fmt, ...)
{
    char msg[512];
    va_list ap;

    if (c->err_burst || !c->cfg.log)
        return;
    c->err_burst = true;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    c->cfg.log(c->cfg.log_arg, level, msg);
}

void cold_io_error_locked(struct kvt_cold *c, int err, const char *what)
{
    char buf[64];

    c->st.io_errors++;
    cold_log_burst(c, LOG_ERR, "cold: %s on %s failed: %s; the records involved are dropped",
                   what, c->path, strerror_r(-err, buf, sizeof(buf)));
}

bool cold_shape_valid(const struct kvt_chunk_shape *s)
{
    return chunk_shape_valid(s);
}

/* ---- write buffers and the log ---------------------------------------- */

uint64_t cold_region_base(const struct kvt_cold *c, uint32_t r)
{
    return COLD_BLOCK + (uint64_t)r * c->region_bytes;
}

/* Queue key for the unwritten hook. Without memory for the queue the
 * record cannot be written again: it is lost, and said so. */
static void unwritten_add_locked(struct kvt_cold *c, const struct kvt_chunk_key *key)
{
    c->st.records_unwritten++;
    if (c->n_unwritten == c->cap_unwritten) {
        size_t cap = c->cap_unwritten ? c->cap_unwritten * 2 : 64;
        struct kvt_chunk_key *k = realloc(c->unwritten, cap * sizeof(*k));
        if (!k) {
            c->st.records_lost++;
            cold_log(c, LOG_ERR, "cold: no memory to report a record whose write failed; "
                     "1 record lost");
            return;
        }
        c->unwritten = k;
        c->cap_unwritten = cap;
    }
    c->unwritten[c->n_unwritten++] = *key;
}

/* Drop region r's records that end after start (a record may span buffers,
 * so one that began before a failed write is cut by it) from the index and
 * queue their keys for the unwritten hook. Only records still indexed are
 * queued: one replaced by a newer put, or dropped by a tombstone or a
 * quota, has nothing left to write. */
static void drop_unwritten_locked(struct kvt_cold *c, uint32_t r, uint64_t start)
{
    struct cold_entry *e = c->regions[r].entries, *next;

    for (; e; e = next) {
        next = e->reg_next;
        if (e->off + e->rec_bytes > start) {
            /* A name's only copy in the tier goes with it: it is written
             * again only if the next put of its context's chunk 0 of layer
             * 0 gives it (the daemon gives the name its registry holds;
             * a put without one logs none). Not queued: the hot tier has
             * no chunk of it. */
            if (!e->name)
                unwritten_add_locked(c, &e->key);
            cold_index_remove(c, e);
        }
    }
}

/* Hand the queued keys to the unwritten hook, without lock (the hook goes
 * to the hot tier, whose users may be waiting in cold_put). One reporter at
 * a time, so counts and logs come in order; the others leave it the queue.
 * Called without lock; every path that queues keys calls it afterwards. */
void cold_report_unwritten(struct kvt_cold *c)
{
    pthread_mutex_lock(&c->lock);
    while (c->n_unwritten && !c->reporting) {
        struct kvt_chunk_key *keys = c->unwritten;
        size_t n = c->n_unwritten;
        uint64_t lost;

        c->unwritten = NULL;
        c->n_unwritten = c->cap_unwritten = 0;
        c->reporting = true;
        pthread_mutex_unlock(&c->lock);
        lost = c->cfg.unwritten ? c->cfg.unwritten(c->cfg.unwritten_arg, keys, n) : n;
        free(keys);
        pthread_mutex_lock(&c->lock);
        if (lost > n)
            lost = n;
        c->st.records_lost += lost;
        c->reporting = false;
        /* Once per burst of failures, like the I/O error, with the total
         * when writes succeed again (wbuf_retire_locked). */
        c->burst_lost += lost;
        if (lost && !c->loss_logged) {
            c->loss_logged = true;
            cold_log(c, LOG_ERR, "cold: %zu records could not be written to %s; %llu of "
                     "them were no longer held in memory and are lost",
                     n, c->path, (unsigned long long)lost);
        }
        pthread_cond_broadcast(&c->wb_cond);
    }
    pthread_mutex_unlock(&c->lock);
}

/* A failed write leaves a gap in its region's log, and recovery ends a
 * region's log at the first gap: every record after it in the region,
 * written or not, would be gone after a restart. So they all leave the
 * index now (to be written again), and the log is repaired before the next
 * append (repair_log_locked). */
static void wbuf_retire_locked(struct kvt_cold *c, struct cold_wbuf *b)
{
    if (b->res != (int)b->len) {
        int err = b->res < 0 ? b->res : -EIO;     /* a short write is an error */
        c->write_failures++;
        if (!c->sync_err)
            c->sync_err = err;
        cold_io_error_locked(c, err, "write");
        if (!c->log_broken || c->broken_region != b->region) {
            c->log_broken = true;
            c->broken_region = b->region;
            c->broken_off = b->file_off;
            c->broken_tail_written = false;
        } else if (b->file_off < c->broken_off) {
            c->broken_off = b->file_off;
        }
        drop_unwritten_locked(c, b->region, b->file_off);
        cold_tombs_retired_locked(c, b, false);
    } else {
        cold_tombs_retired_locked(c, b, true);
        if (c->log_broken && c->broken_region == b->region && b->file_off > c->broken_off)
            c->broken_tail_written = true;
        c->st.bytes_written += b->len;
        c->err_burst = false;
        if (c->loss_logged)
            cold_log(c, LOG_ERR, "cold: writes to %s succeed again; %llu records were lost "
                     "while they failed (%llu since start)", c->path,
                     (unsigned long long)c->burst_lost, (unsigned long long)c->st.records_lost);
        c->loss_logged = false;
        c->burst_lost = 0;
    }
    b->state = WB_FREE;
    c->n_free++;
}

static void wbuf_complete_locked(struct kvt_cold *c, struct cold_wbuf *b, int res)
{
    b->res = res;
    b->state = WB_DONE;
    while (c->fifo_len && c->fifo[c->fifo_head]->state == WB_DONE) {
        wbuf_retire_locked(c, c->fifo[c->fifo_head]);
        c->fifo_head = (c->fifo_head + 1) % c->n_wbufs;
        c->fifo_len--;
    }
    pthread_cond_broadcast(&c->wb_cond);
}

/* Completion thread. */
void cold_wbuf_done(struct cold_io_req *req, int res)
{
    struct cold_wbuf *b = (struct cold_wbuf *)req;
    struct kvt_cold *c = b->cold;

    pthread_mutex_lock(&c->lock);
    wbuf_complete_locked(c, b, res);
    pthread_mutex_unlock(&c->lock);
    cold_report_unwritten(c);
}

static void wbuf_submit_locked(struct kvt_cold *c, struct cold_wbuf *b, uint32_t len)
{
    int rc;

    b->len = len;
    b->state = WB_INFLIGHT;
    c->fifo[(c->fifo_head + c->fifo_len) % c->n_wbufs] = b;
    c->fifo_len++;
    rc = c->io->ops->queue_write(c->io, &b->req, b->mem, len, b->file_off);
    if (rc < 0)
        wbuf_complete_locked(c, b, rc);
    else
        c->unsubmitted = true;
}

void cold_flush_locked(struct kvt_cold *c)
{
    if (c->unsubmitted) {
        c->io->ops->submit(c->io);
        c->unsubmitted = false;
    }
}

/* Wait for a buffer to retire; queued writes must be started first or the
 * wait would never end. */
static void wait_retire_locked(struct kvt_cold *c)
{
    cold_flush_locked(c);
    pthread_cond_wait(&c->wb_cond, &c->lock);
}

/* Zero-pad the filling buffer to a block boundary and submit it; the log
 * continues at that boundary (the reader skips the zeros). */
static void submit_partial_locked(struct kvt_cold *c)
{
    struct cold_wbuf *b = c->cur;
    uint32_t len;

    if (!b)
        return;
    len = (uint32_t)round_up(b->fill, COLD_BLOCK);
    memset(b->mem + b->fill, 0, len - b->fill);
    c->append_off = b->file_off + len;
    c->cur = NULL;
    wbuf_submit_locked(c, b, len);
}

static void take_wbuf_locked(struct kvt_cold *c)
{
    struct cold_wbuf *b = NULL;

    while (c->n_free == 0)
        wait_retire_locked(c);
    for (uint32_t i = 0; !b; i++)
        if (c->wbufs[i].state == WB_FREE)
            b = &c->wbufs[i];
    c->n_free--;
    b->state = WB_FILLING;
    b->file_off = c->append_off;
    b->fill = 0;
    b->cap = (uint32_t)min_u64(c->wbuf_bytes, c->region_end - c->append_off);
    b->region = (uint32_t)c->cur_region;
    c->cur = b;
}

/* Copy n bytes to the log at append_off, through as many buffers as it takes. */
static void log_copy_locked(struct kvt_cold *c, const uint8_t *src, uint32_t n)
{
    while (n > 0) {
        if (!c->cur)
            take_wbuf_locked(c);
        struct cold_wbuf *b = c->cur;
        uint32_t k = n < b->cap - b->fill ? n : b->cap - b->fill;
        memcpy(b->mem + b->fill, src, k);
        b->fill += k;
        c->append_off += k;
        src += k;
        n -= k;
        if (b->fill == b->cap) {
            c->cur = NULL;
            wbuf_submit_locked(c, b, b->cap);
        }
    }
}

static bool region_writing_locked(struct kvt_cold *c, uint32_t r)
{
    for (uint32_t i = 0; i < c->fifo_len; i++)
        if (c->fifo[(c->fifo_head + i) % c->n_wbufs]->region == r)
            return true;
    return false;
}

/* Put the current region's header block at the front of a new buffer at
 * the region's start. */
static void region_header_locked(struct kvt_cold *c)
{
    uint32_t r = (uint32_t)c->cur_region;
    struct cold_region_header h = { .magic = COLD_REGION_MAGIC };

    /* Whatever version the region's earlier use had, this use is this
     * build's (the file header was upgraded at open, cold_open.c). */
    h.version = c->regions[r].version = COLD_FORMAT_VERSION;
    h.index = r;
    h.seq = c->regions[r].seq;
    memcpy(h.file_uuid, c->uuid, sizeof(h.file_uuid));
    h.first_record_seq = c->next_record_seq;
    h.checksum = XXH3_64bits_withSeed(&h, offsetof(struct cold_region_header, checksum), c->seed);
    c->append_off = cold_region_base(c, r);
    take_wbuf_locked(c);
    memset(c->cur->mem, 0, COLD_BLOCK);
    memcpy(c->cur->mem, &h, sizeof(h));
    c->cur->fill = COLD_BLOCK;
    c->append_off += COLD_BLOCK;
}

/* After a failed write in the current region (wbuf_retire_locked), make
 * the log whole again before anything more is appended: wait until no
 * write of the region is in flight, throw away the filling buffer (its
 * records lie after the gap and left the index already), and append again
 * from the gap. Overwriting is safe while nothing after the gap reached the
 * disk, the case of a full disk, which so keeps failing in one place
 * rather than reclaiming region after region. If something after the gap
 * was written (a tombstone may be in it), the log moves on to a new region
 * instead. Called with put_lock and lock, between records. */
static void repair_log_locked(struct kvt_cold *c)
{
    uint32_t r = c->broken_region;

    if (c->cur_region != (int64_t)r) {
        c->log_broken = false;         /* the log had left the region already */
        return;
    }
    if (c->cur) {
        c->cur->state = WB_FREE;
        c->n_free++;
        c->cur = NULL;
    }
    while (region_writing_locked(c, r))
        wait_retire_locked(c);
    c->log_broken = false;
    if (c->broken_tail_written)
        c->append_off = c->region_end;             /* the next append starts a region */
    else if (c->broken_off == cold_region_base(c, r))
        region_header_locked(c);
    else
        c->append_off = c->broken_off;
}

/* Move the log to the next region: reclaim it, give it a new sequence
 * number, and put its header block at the front of its first buffer. */
static void start_region_locked(struct kvt_cold *c)
{
    uint32_t r = c->next_region;

    submit_partial_locked(c);
    /* With a tiny file the log can come round before the region's last
     * write finished; two writes to one place in flight may land in any
     * order. */
    while (region_writing_locked(c, r))
        wait_retire_locked(c);
    if (c->regions[r].seq) {
        cold_index_drop_range(c, r, 0, UINT64_MAX);
        c->st.regions_reclaimed++;
    }
    c->regions[r].seq = c->next_region_seq++;
    c->cur_region = r;
    c->next_region = (r + 1) % c->n_regions;
    c->region_end = cold_region_base(c, r) + c->region_bytes;
    region_header_locked(c);
}

/* Append one record: head (its header and bitmap) then data, n bytes in all
 * (n <= max_record), to a log that is whole (append_locked). Fills in the
 * header's seq (unless it has one: a tombstone logged again keeps its own,
 * so it drops exactly what it dropped the first time), region_seq and
 * checksum. Two pieces so that data stored raw is copied once, from the
 * caller's buffer into the write buffer. Called with put_lock and lock.
 * Returns 0, or -EIO if a write failed while it was appended: the record
 * may be incomplete on disk and must not be indexed. */
int cold_append_record_locked(struct kvt_cold *c, uint8_t *head, uint32_t head_len,
                                const void *data, uint32_t data_len, struct cold_entry *e)
{
    struct cold_record_header *h = (struct cold_record_header *)head;
    uint32_t n = head_len + data_len;
    uint64_t failures;

    if (c->cur_region < 0 || c->append_off + n > c->region_end)
        start_region_locked(c);
    failures = c->write_failures;
    if (!h->seq)
        h->seq = c->next_record_seq++;
    h->region_seq = c->regions[c->cur_region].seq;
    h->checksum = 0;
    XXH3_64bits_reset_withSeed(c->hash, c->seed);
    XXH3_64bits_update(c->hash, head, head_len);
    XXH3_64bits_update(c->hash, data, data_len);
    h->checksum = XXH3_64bits_digest(c->hash);
    if (e) {
        e->key = h->key;
        e->off = c->append_off;
        e->seq = h->seq;
        e->rec_bytes = n;
        e->raw_len = h->raw_len;
        e->region = (uint32_t)c->cur_region;
    }
    log_copy_locked(c, head, head_len);
    log_copy_locked(c, data, data_len);
    return c->write_failures == failures ? 0 : -EIO;
}

/* Make the log whole and log again the tombstones whose write failed,
 * before anything else is appended: a failed tombstone's drop must reach
 * the disk with the next write that does. */
void cold_prepare_append_locked(struct kvt_cold *c)
{
    if (c->log_broken)
        repair_log_locked(c);
    for (size_t i = 0; i < c->n_tombs && c->n_tombs_failed && !c->log_broken; i++)
        if (c->tombs[i].state == TOMB_FAILED)
            (void)cold_tomb_log_locked(c, i);
    if (c->log_broken)                 /* one of them failed at once */
        repair_log_locked(c);
}

int cold_append_locked(struct kvt_cold *c, uint8_t *head, uint32_t head_len,
                       const void *data, uint32_t data_len, struct cold_entry *e)
{
    cold_prepare_append_locked(c);
    return cold_append_record_locked(c, head, head_len, data, data_len, e);
}

/* Copy the name block the index holds for chunk's context into block
 * (COLD_NAME_BLOCK_MAX bytes); returns its length, 0 if none. lock held. */
static uint32_t held_name_copy_locked(struct kvt_cold *c, const struct kvt_chunk_key *chunk,
                                      uint8_t *block)
{
    struct kvt_chunk_key nk = *chunk;
    const struct cold_entry *e;

    nk.layer = COLD_NAME_LAYER;
    nk.chunk_idx = 0;
    nk.reserved = 0;
    e = *cold_index_slot(c, &nk);
    if (!e || !e->name || e->raw_len > COLD_NAME_BLOCK_MAX)
        return 0;
    memcpy(block, e->name, e->raw_len);
    return e->raw_len;
}

/* After img's chunk record went in: log the name of its context again if
 * the tier holds it only in an older region than the current one, or for
 * the first time if given (block, len: its encoded name block). The name
 * follows its chunk 0 of layer 0 into every region that chunk is written
 * in, so a region's reuse never takes a name whose chunk is still held.
 * put_lock and lock held. A failed write loses only the name's record:
 * the chunk's next write logs it again, if the caller still has it. */
static void name_follow_locked(struct kvt_cold *c, const struct kvt_chunk_key *chunk,
                               const uint8_t *block, uint32_t len)
{
    struct kvt_chunk_key nk = *chunk;
    struct cold_record_header h = { .magic = COLD_RECORD_MAGIC };
    uint8_t rec[REC_HDR + COLD_NAME_BLOCK_MAX];
    struct cold_entry *e;

    nk.layer = COLD_NAME_LAYER;
    nk.chunk_idx = 0;
    nk.reserved = 0;
    e = *cold_index_slot(c, &nk);
    if (e && !e->name)
        e = NULL;                      /* not a name's: cold_record_check refuses those */
    if (e && e->region == (uint32_t)c->cur_region)
        return;                        /* the region being written has it */
    if (!block && !e)
        return;
    if (!block) {
        block = e->name;               /* copied below: e may be reclaimed */
        len = e->raw_len;
    }
    h.version = COLD_FORMAT_VERSION;
    h.kind = COLD_REC_NAME;
    h.key = nk;
    h.raw_len = h.stored_len = len;
    memcpy(rec, &h, REC_HDR);
    memcpy(rec + REC_HDR, block, len);
    e = calloc(1, sizeof(*e));
    if (e)
        e->name = malloc(len);
    if (!e || !e->name) {
        cold_entry_free(e);
        return;                        /* logged again with the chunk's next write */
    }
    memcpy(e->name, rec + REC_HDR, len);
    if (cold_append_locked(c, rec, REC_HDR, rec + REC_HDR, len, e) == 0)
        cold_index_put(c, e);
    else
        cold_entry_free(e);
}

int cold_put(struct kvt_cold *c, const struct kvt_chunk_image *img)
{
    return cold_put_named(c, img, NULL);
}

int cold_put_named(struct kvt_cold *c, const struct kvt_chunk_image *img,
                   const struct kvt_cold_name *name)
{
    uint8_t block[COLD_NAME_BLOCK_MAX];
    uint32_t block_len = 0;
    struct cold_record_header h = { .magic = COLD_RECORD_MAGIC };
    struct cold_entry *e = NULL;
    uint8_t *rec = NULL;
    const void *data;
    size_t raw;
    uint32_t bitmap, room, stored;
    bool bad_name = false;
    int clen, rc = 0;

    if (!c || !img || !img->present || !img->data || !cold_shape_valid(&img->shape) ||
        cold_key_is_name(&img->key))
        return -EINVAL;
    /* A name that is not img's or is out of bounds is not kept, but the
     * chunk still is: refusing the put would leave it dirty for good. */
    if (name && cold_name_encode(name, &img->key, block, &block_len)) {
        block_len = 0;
        bad_name = true;
    }
    raw = chunk_data_bytes(&img->shape);
    bitmap = chunk_bitmap_bytes(img->shape.tokens);
    room = c->max_record - REC_HDR - bitmap;      /* data bytes a record can hold */
    if (raw > LZ4_MAX_INPUT_SIZE)
        return -E2BIG;
    /* Compressed only if strictly smaller than raw, so a record is never
     * bigger than the raw data plus its header and bitmap. */
    rec = malloc(REC_HDR + bitmap + min_u64(raw - 1, room));
    e = calloc(1, sizeof(*e));
    if (!rec || !e) {
        rc = -ENOMEM;
        goto out;
    }
    clen = LZ4_compress_default(img->data, (char *)rec + REC_HDR + bitmap,
                                (int)raw, (int)min_u64(raw - 1, room));
    if (clen > 0) {
        h.flags = COLD_REC_LZ4;
        data = rec + REC_HDR + bitmap;
        stored = (uint32_t)clen;
    } else if (raw <= room) {
        data = img->data;
        stored = (uint32_t)raw;
    } else {
        rc = -E2BIG;
        goto out;
    }
    h.version = COLD_FORMAT_VERSION;
    h.kind = COLD_REC_CHUNK;
    h.key = img->key;
    h.shape = img->shape;
    h.raw_len = (uint32_t)raw;
    h.stored_len = stored;
    memcpy(rec, &h, REC_HDR);
    memcpy(rec + REC_HDR, img->present, bitmap);
    e->leading_tokens = chunk_bits_leading(img->present, img->shape.tokens);

    pthread_mutex_lock(&c->put_lock);
    pthread_mutex_lock(&c->lock);
    c->st.puts++;
    c->st.raw_bytes_in += bitmap + raw;
    if (bad_name && !c->bad_name_logged) {
        c->bad_name_logged = true;
        cold_log(c, LOG_WARNING, "cold: a context name that does not belong to its chunk "
                 "or is out of bounds was not kept (logged once); its chunks are");
    }
    /* Appending the chunk may start a region and reclaim the one holding
     * the context's name: keep a copy to log it again after the chunk. */
    if (!block_len && img->key.layer == 0 && img->key.chunk_idx == 0)
        block_len = held_name_copy_locked(c, &img->key, block);
    cold_quota_drop_locked(c, &img->key, REC_HDR + bitmap + stored);
    rc = cold_append_locked(c, rec, REC_HDR + bitmap, data, stored, e);
    if (rc == 0) {
        cold_index_put(c, e);
        e = NULL;
        if (img->key.layer == 0 && img->key.chunk_idx == 0)
            name_follow_locked(c, &img->key, block_len ? block : NULL, block_len);
    } else {
        unwritten_add_locked(c, &img->key);
    }
    cold_flush_locked(c);
    pthread_mutex_unlock(&c->lock);
    pthread_mutex_unlock(&c->put_lock);
    cold_report_unwritten(c);
out:
    free(rec);
    free(e);
    return rc;
}

/* Submit the partial buffer, wait until every write retired and report
 * the failed ones' records here if no other thread is at it: a write that
 * failed at queue time retired on this very thread. */
void cold_drain_locked(struct kvt_cold *c)
{
    if (c->n_tombs_failed)
        cold_prepare_append_locked(c);      /* once: a full disk fails them again */
    submit_partial_locked(c);
    while (c->fifo_len > 0 || c->n_unwritten || c->reporting) {
        if (c->n_unwritten && !c->reporting) {
            pthread_mutex_unlock(&c->lock);
            cold_report_unwritten(c);
            pthread_mutex_lock(&c->lock);
        } else {
            wait_retire_locked(c);
        }
    }
    cold_tombs_compact_locked(c);
}

int cold_fdatasync(struct kvt_cold *c)
{
    if (fdatasync(c->fd) == 0)
        return 0;
    int err = -errno;
    pthread_mutex_lock(&c->lock);
    cold_io_error_locked(c, err, "fdatasync");
    pthread_mutex_unlock(&c->lock);
    return err;
}

int cold_sync(struct kvt_cold *c)
{
    int rc;

    pthread_mutex_lock(&c->put_lock);
    pthread_mutex_lock(&c->lock);
    cold_drain_locked(c);
    rc = c->sync_err;
    c->sync_err = 0;
    if (rc == 0 && c->n_tombs_failed)
        rc = -EIO;                     /* a drop before the call is not on disk */
    pthread_mutex_unlock(&c->lock);
    pthread_mutex_unlock(&c->put_lock);
    /* Also commits the conversion of fallocated (unwritten) extents that
     * O_DIRECT writes into them need; without it the data reads as zeros
     * after a power loss. */
    int err = cold_fdatasync(c);
    return rc ? rc : err;
}

void cold_set_domain_quota(struct kvt_cold *c, uint64_t bytes)
{
    uint32_t over[COLD_QUOTA_SWEEP];
    size_t n = 0;

    pthread_mutex_lock(&c->lock);
    c->domain_quota_bytes = bytes;
    /* A lower quota holds at once: each domain over it loses its oldest
     * records, as a put over the quota would drop them. */
    if (bytes)
        n = domain_bytes_over(&c->domain_used, bytes, over, COLD_QUOTA_SWEEP);
    for (size_t i = 0; i < n; i++) {
        struct kvt_chunk_key any = { .domain = over[i] };
        cold_quota_drop_locked(c, &any, 0);
    }
    pthread_mutex_unlock(&c->lock);
}

size_t cold_domains(struct kvt_cold *c, uint32_t *out, size_t max)
{
    pthread_mutex_lock(&c->lock);
    size_t n = domain_bytes_over(&c->domain_used, 0, out, max);
    pthread_mutex_unlock(&c->lock);
    return n;
}

uint64_t cold_domain_used(struct kvt_cold *c, uint32_t domain)
{
    uint64_t used;

    pthread_mutex_lock(&c->lock);
    used = domain_bytes_get(&c->domain_used, domain);
    pthread_mutex_unlock(&c->lock);
    return used;
}

void cold_stats(struct kvt_cold *c, struct kvt_cold_stats *out)
{
    pthread_mutex_lock(&c->lock);
    *out = c->st;
    out->records = c->n_entries - c->n_names;
    out->names = c->n_names;
    out->capacity_bytes = (uint64_t)c->n_regions * (c->region_bytes - COLD_BLOCK);
    pthread_mutex_unlock(&c->lock);
}
