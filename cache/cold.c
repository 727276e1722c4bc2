/* cold.c - SSD tier: owns the cold file, its regions, records and recovery.
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
 * thread), which calls wbuf_done(): a dedicated thread rather than reaping
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
 * Recovery (cold_open) replays regions in sequence order and records in log
 * order, then appends in a fresh region after the newest: simplest, as the
 * newest region's tail may be torn, at the price of reclaiming one region
 * per restart that writes.
 *
 * Locks, in this order: put_lock serializes appenders (a record's bytes must
 * be contiguous in the log even when its put waits for a free buffer
 * halfway); lock guards the index, the log position, the buffers and the
 * stats; the backend's own lock comes last. The completion thread takes only
 * lock. The log callback may run with lock held and must not call back.
 */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <lz4.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>
#include <xxhash.h>

#include "cold.h"
#include "cold_format.h"
#include "cold_io.h"
#include "domain_bytes.h"

#define MIB (1024u * 1024u)
#define DEFAULT_REGION_BYTES (64u * MIB)
/* Recovery holds one whole region in memory while it scans it. */
#define MAX_REGION_BYTES (1024u * MIB)
#define DEFAULT_WBUFS 8u
#define MAX_WBUFS 64u
#define DEFAULT_WBUF_BYTES MIB
#define MIN_WBUF_BYTES (64u * 1024)
#define SCAN_STEP (4u * MIB)           /* recovery reads a region this much at a time */
#define MAX_HEADS 1024u
#define MAX_DIM 1024u
#define REC_HDR ((uint32_t)sizeof(struct cold_record_header))
#define GET_ATTEMPTS 3                 /* a get retries when its record moved */

struct cold_entry {
    struct kvt_chunk_key key;
    uint64_t off;                      /* file offset of the record header */
    uint64_t seq;
    uint32_t rec_bytes;                /* header + bitmap + stored data */
    uint32_t raw_len;
    uint32_t leading_tokens;
    uint32_t region;
    struct cold_entry *hash_next;
    struct cold_entry *reg_prev, *reg_next;   /* the region's live records */
};

/* A region's live records, newest first: records are indexed in log order
 * (cold_put appends and indexes under one lock; recovery replays in log
 * order), so the list's tail is the region's oldest record. */
struct cold_region {
    uint64_t seq;                      /* of its current use; 0 = never used */
    struct cold_entry *entries;
};

enum wbuf_state { WB_FREE, WB_FILLING, WB_INFLIGHT, WB_DONE };

struct cold_wbuf {
    struct cold_io_req req;            /* first: wbuf_done casts back */
    struct kvt_cold *cold;
    uint8_t *mem;                      /* wbuf_bytes, block-aligned for O_DIRECT */
    uint64_t file_off;                 /* where mem[0] goes; block-aligned */
    uint32_t fill, cap, len;           /* bytes used, may use, submitted */
    uint32_t region;
    int res;                           /* completion: bytes written or -errno */
    enum wbuf_state state;
};

struct kvt_cold {
    struct kvt_cold_config cfg;
    char *path;
    int fd;
    bool direct;                       /* fd has O_DIRECT */
    struct cold_io *io;
    uint8_t uuid[16];
    uint64_t seed;                     /* checksum seed, from the file header */
    uint32_t region_bytes, n_regions, max_record;
    uint64_t file_bytes;
    bool locks_ready;

    pthread_mutex_t put_lock;
    pthread_mutex_t lock;
    pthread_cond_t wb_cond;            /* a buffer retired */

    struct cold_entry **buckets;       /* the index: chained hash on the key */
    uint64_t n_buckets, n_entries;
    struct cold_region *regions;
    uint32_t *region_order;            /* scratch for quota drops, n_regions */
    uint64_t domain_quota_bytes;       /* 0 = none */
    struct kvt_domain_bytes domain_used;   /* live record bytes per domain */

    int64_t cur_region;                /* -1: none since open */
    uint32_t next_region;
    uint64_t append_off, region_end;
    uint64_t next_region_seq, next_record_seq;

    struct cold_wbuf *wbufs;
    uint32_t n_wbufs, wbuf_bytes, n_free;
    struct cold_wbuf *cur;             /* the filling buffer, or NULL */
    struct cold_wbuf **fifo;           /* submitted, not retired, in order */
    uint32_t fifo_head, fifo_len;
    bool unsubmitted;                  /* writes queued but not submitted */
    XXH3_state_t *hash;                /* appenders' checksum state */
    uint64_t write_failures;
    int sync_err;                      /* first write error since the last sync */
    bool err_burst;                    /* an error was logged, no success since */

    struct kvt_cold_stats st;
};

static uint64_t round_up(uint64_t v, uint64_t a) { return (v + a - 1) / a * a; }
static uint64_t min_u64(uint64_t a, uint64_t b) { return a < b ? a : b; }

static void cold_log(struct kvt_cold *c, int level, const char *fmt, ...)
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
static void log_burst(struct kvt_cold *c, int level, const char *fmt, ...)
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

static void io_error_locked(struct kvt_cold *c, int err, const char *what)
{
    char buf[64];

    c->st.io_errors++;
    log_burst(c, LOG_ERR, "cold: %s on %s failed: %s; the records involved are dropped",
              what, c->path, strerror_r(-err, buf, sizeof(buf)));
}

static bool shape_valid(const struct kvt_chunk_shape *s)
{
    return s->tokens >= 1 && s->tokens <= KVT_CHUNK_MAX_TOKENS &&
           s->heads >= 1 && s->heads <= MAX_HEADS &&
           s->dim >= 1 && s->dim <= MAX_DIM &&
           (s->elem <= 2 || s->elem == KVT_CHUNK_INT8);
}

/* Tokens present from token 0 without a gap. bitmap may be unaligned (it is
 * inside a packed record during recovery). */
static uint32_t leading_tokens(const void *bitmap, uint32_t tokens)
{
    const uint8_t *b = bitmap;
    uint32_t n = 0;

    for (uint32_t w = 0; n < tokens; w++) {
        uint64_t word;
        memcpy(&word, b + (size_t)w * 8, 8);
        if (word != ~UINT64_C(0)) {
            n += (uint32_t)__builtin_ctzll(~word);
            break;
        }
        n += 64;
    }
    return n < tokens ? n : tokens;
}

/* ---- index ------------------------------------------------------------ */

static struct cold_entry **index_slot(struct kvt_cold *c, const struct kvt_chunk_key *key)
{
    uint64_t h = XXH3_64bits(key, sizeof(*key));
    struct cold_entry **p = &c->buckets[h & (c->n_buckets - 1)];

    while (*p && memcmp(&(*p)->key, key, sizeof(*key)) != 0)
        p = &(*p)->hash_next;
    return p;
}

static void index_grow(struct kvt_cold *c)
{
    uint64_t n = c->n_buckets * 2;
    struct cold_entry **nb = calloc(n, sizeof(*nb));

    if (!nb)
        return;                        /* longer chains, still correct */
    for (uint64_t i = 0; i < c->n_buckets; i++) {
        struct cold_entry *e = c->buckets[i], *next;
        for (; e; e = next) {
            next = e->hash_next;
            uint64_t h = XXH3_64bits(&e->key, sizeof(e->key)) & (n - 1);
            e->hash_next = nb[h];
            nb[h] = e;
        }
    }
    free(c->buckets);
    c->buckets = nb;
    c->n_buckets = n;
}

static void index_remove(struct kvt_cold *c, struct cold_entry *e)
{
    struct cold_entry **p = index_slot(c, &e->key);
    struct cold_region *r = &c->regions[e->region];

    *p = e->hash_next;
    if (e->reg_prev)
        e->reg_prev->reg_next = e->reg_next;
    else
        r->entries = e->reg_next;
    if (e->reg_next)
        e->reg_next->reg_prev = e->reg_prev;
    c->n_entries--;
    c->st.used_bytes -= e->rec_bytes;
    domain_bytes_sub(&c->domain_used, e->key.domain, e->rec_bytes);
    free(e);
}

/* Insert e (owned by the index from now on), replacing an older record of
 * its key; an existing newer one wins and e is freed. Without memory to
 * count its domain, e is freed too: the record is a miss, like a dropped
 * one. */
static void index_put(struct kvt_cold *c, struct cold_entry *e)
{
    struct cold_entry **p = index_slot(c, &e->key);
    struct cold_region *r = &c->regions[e->region];

    if ((*p && (*p)->seq > e->seq) || domain_bytes_reserve(&c->domain_used, e->key.domain) < 0) {
        free(e);
        return;
    }
    if (*p)
        index_remove(c, *p);
    if (c->n_entries >= c->n_buckets)
        index_grow(c);
    p = index_slot(c, &e->key);
    e->hash_next = NULL;
    *p = e;
    e->reg_prev = NULL;
    e->reg_next = r->entries;
    if (r->entries)
        r->entries->reg_prev = e;
    r->entries = e;
    c->n_entries++;
    c->st.used_bytes += e->rec_bytes;
    domain_bytes_add(&c->domain_used, e->key.domain, e->rec_bytes);
}

static bool tomb_matches(uint8_t kind, const struct kvt_chunk_key *t,
                         const struct kvt_chunk_key *k)
{
    if (kind == COLD_REC_TOMB_NAMESPACE)
        return t->ns_id == 0 || t->ns_id == k->ns_id;
    return t->ns_id == k->ns_id && t->obj_hi == k->obj_hi && t->obj_lo == k->obj_lo;
}

/* Drop the records a tombstone of `kind` covers that are older than seq. */
static uint64_t index_drop_matching(struct kvt_cold *c, uint8_t kind,
                                    const struct kvt_chunk_key *t, uint64_t seq)
{
    uint64_t dropped = 0;

    for (uint64_t i = 0; i < c->n_buckets; i++) {
        struct cold_entry *e = c->buckets[i], *next;
        for (; e; e = next) {
            next = e->hash_next;
            if (e->seq < seq && tomb_matches(kind, t, &e->key)) {
                index_remove(c, e);
                dropped++;
            }
        }
    }
    return dropped;
}

/* Drop the records of region r that overlap [start, end) (all: 0, ~0). */
static void index_drop_range(struct kvt_cold *c, uint32_t r, uint64_t start, uint64_t end)
{
    struct cold_entry *e = c->regions[r].entries, *next;

    for (; e; e = next) {
        next = e->reg_next;
        if (e->off < end && e->off + e->rec_bytes > start)
            index_remove(c, e);
    }
}

static int region_seq_cmp(const void *a, const void *b, void *arg)
{
    const struct cold_region *regions = arg;
    uint64_t x = regions[*(const uint32_t *)a].seq, y = regions[*(const uint32_t *)b].seq;

    return x < y ? -1 : x > y;
}

/* Make room for a record of need bytes of key's domain under the domain
 * quota: drop the domain's oldest records (by record seq) from the index,
 * never another domain's, and never key's own record (the new one replaces
 * it, so its bytes are not counted). Regions in seq order hold records in
 * seq order, and each region's list ends with its oldest, so one walk
 * visits the domain's records oldest first. The records stay on disk
 * until their region is reclaimed: no tombstone is logged, so after a
 * restart they are found again and the quota is enforced on the domain's
 * next put. Called with lock held. */
static void quota_drop_locked(struct kvt_cold *c, const struct kvt_chunk_key *key,
                              uint64_t need)
{
    struct cold_entry *same = *index_slot(c, key);
    uint64_t quota = c->domain_quota_bytes;
    uint64_t used = domain_bytes_get(&c->domain_used, key->domain);
    uint32_t n = 0;

    if (same)
        used -= same->rec_bytes;
    if (!quota || used + need <= quota)
        return;
    for (uint32_t r = 0; r < c->n_regions; r++)
        if (c->regions[r].seq && c->regions[r].entries)
            c->region_order[n++] = r;
    qsort_r(c->region_order, n, sizeof(*c->region_order), region_seq_cmp, c->regions);
    for (uint32_t i = 0; i < n && used + need > quota; i++) {
        struct cold_entry *e = c->regions[c->region_order[i]].entries, *prev;

        while (e && e->reg_next)
            e = e->reg_next;
        for (; e && used + need > quota; e = prev) {
            prev = e->reg_prev;
            if (e->key.domain != key->domain || e == same)
                continue;
            used -= e->rec_bytes;
            index_remove(c, e);
            c->st.quota_drops++;
        }
    }
}

/* ---- write buffers and the log ---------------------------------------- */

static uint64_t region_base(const struct kvt_cold *c, uint32_t r)
{
    return COLD_BLOCK + (uint64_t)r * c->region_bytes;
}

static void wbuf_retire_locked(struct kvt_cold *c, struct cold_wbuf *b)
{
    if (b->res != (int)b->len) {
        int err = b->res < 0 ? b->res : -EIO;     /* a short write is an error */
        c->write_failures++;
        if (!c->sync_err)
            c->sync_err = err;
        io_error_locked(c, err, "write");
        index_drop_range(c, b->region, b->file_off, b->file_off + b->len);
    } else {
        c->st.bytes_written += b->len;
        c->err_burst = false;
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
static void wbuf_done(struct cold_io_req *req, int res)
{
    struct cold_wbuf *b = (struct cold_wbuf *)req;
    struct kvt_cold *c = b->cold;

    pthread_mutex_lock(&c->lock);
    wbuf_complete_locked(c, b, res);
    pthread_mutex_unlock(&c->lock);
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

static void flush_locked(struct kvt_cold *c)
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
    flush_locked(c);
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

/* Move the log to the next region: reclaim it, give it a new sequence
 * number, and put its header block at the front of its first buffer. */
static void start_region_locked(struct kvt_cold *c)
{
    uint32_t r = c->next_region;
    struct cold_region_header h = { .magic = COLD_REGION_MAGIC };

    submit_partial_locked(c);
    /* With a tiny file the log can come round before the region's last
     * write finished; two writes to one place in flight may land in any
     * order. */
    while (region_writing_locked(c, r))
        wait_retire_locked(c);
    if (c->regions[r].seq) {
        index_drop_range(c, r, 0, UINT64_MAX);
        c->st.regions_reclaimed++;
    }
    c->regions[r].seq = c->next_region_seq++;
    c->cur_region = r;
    c->next_region = (r + 1) % c->n_regions;
    c->append_off = region_base(c, r);
    c->region_end = c->append_off + c->region_bytes;

    h.version = COLD_FORMAT_VERSION;
    h.index = r;
    h.seq = c->regions[r].seq;
    memcpy(h.file_uuid, c->uuid, sizeof(h.file_uuid));
    h.first_record_seq = c->next_record_seq;
    h.checksum = XXH3_64bits_withSeed(&h, offsetof(struct cold_region_header, checksum), c->seed);
    take_wbuf_locked(c);
    memset(c->cur->mem, 0, COLD_BLOCK);
    memcpy(c->cur->mem, &h, sizeof(h));
    c->cur->fill = COLD_BLOCK;
    c->append_off += COLD_BLOCK;
}

/* Append one record: head (its header and bitmap) then data, n bytes in all
 * (n <= max_record). Fills in the header's seq, region_seq and checksum.
 * Two pieces so that data stored raw is copied once, from the caller's
 * buffer into the write buffer. Called with put_lock and lock. Returns 0, or
 * -EIO if a write failed while it was appended: the record may be
 * incomplete on disk and must not be indexed. */
static int append_locked(struct kvt_cold *c, uint8_t *head, uint32_t head_len,
                         const void *data, uint32_t data_len, struct cold_entry *e)
{
    struct cold_record_header *h = (struct cold_record_header *)head;
    uint32_t n = head_len + data_len;
    uint64_t failures;

    if (c->cur_region < 0 || c->append_off + n > c->region_end)
        start_region_locked(c);
    failures = c->write_failures;
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

int cold_put(struct kvt_cold *c, const struct kvt_chunk_image *img)
{
    struct cold_record_header h = { .magic = COLD_RECORD_MAGIC };
    struct cold_entry *e = NULL;
    uint8_t *rec = NULL;
    const void *data;
    size_t raw;
    uint32_t bitmap, room, stored;
    int clen, rc = 0;

    if (!c || !img || !img->present || !img->data || !shape_valid(&img->shape))
        return -EINVAL;
    raw = chunk_data_bytes(&img->shape);
    bitmap = cold_bitmap_bytes(img->shape.tokens);
    room = c->max_record - REC_HDR - bitmap;      /* data bytes a record can hold */
    if (raw > LZ4_MAX_INPUT_SIZE)
        return -E2BIG;
    /* Compressed only if strictly smaller than raw, so a record is never
     * bigger than the raw data plus its header and bitmap. */
    rec = malloc(REC_HDR + bitmap + min_u64(raw - 1, room));
    e = malloc(sizeof(*e));
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
    e->leading_tokens = leading_tokens(img->present, img->shape.tokens);

    pthread_mutex_lock(&c->put_lock);
    pthread_mutex_lock(&c->lock);
    c->st.puts++;
    c->st.raw_bytes_in += bitmap + raw;
    quota_drop_locked(c, &img->key, REC_HDR + bitmap + stored);
    rc = append_locked(c, rec, REC_HDR + bitmap, data, stored, e);
    if (rc == 0) {
        index_put(c, e);
        e = NULL;
    }
    flush_locked(c);
    pthread_mutex_unlock(&c->lock);
    pthread_mutex_unlock(&c->put_lock);
out:
    free(rec);
    free(e);
    return rc;
}

/* Drop matching records now and log a tombstone, both under put_lock so no
 * put of the same object can fall between them: it is older than the
 * tombstone (and dropped here) or newer (and kept, also after restart). */
static uint64_t drop_and_log(struct kvt_cold *c, uint8_t kind, uint64_t ns_id,
                             uint64_t obj_hi, uint64_t obj_lo)
{
    struct cold_record_header h = {
        .magic = COLD_RECORD_MAGIC, .version = COLD_FORMAT_VERSION, .kind = kind,
        .key = { .ns_id = ns_id, .obj_hi = obj_hi, .obj_lo = obj_lo },
    };
    uint64_t dropped;

    pthread_mutex_lock(&c->put_lock);
    pthread_mutex_lock(&c->lock);
    dropped = index_drop_matching(c, kind, &h.key, UINT64_MAX);
    /* Logged even when nothing matched: a record whose write reported an
     * error may still have reached the disk and must not come back. */
    if (append_locked(c, (uint8_t *)&h, REC_HDR, NULL, 0, NULL) < 0)
        cold_log(c, LOG_WARNING, "cold: tombstone write failed; dropped records may return after a restart");
    flush_locked(c);
    pthread_mutex_unlock(&c->lock);
    pthread_mutex_unlock(&c->put_lock);
    return dropped;
}

uint64_t cold_drop_object(struct kvt_cold *c, uint64_t ns_id, uint64_t obj_hi,
                          uint64_t obj_lo)
{
    return drop_and_log(c, COLD_REC_TOMB_OBJECT, ns_id, obj_hi, obj_lo);
}

uint64_t cold_drop_namespace(struct kvt_cold *c, uint64_t ns_id)
{
    return drop_and_log(c, COLD_REC_TOMB_NAMESPACE, ns_id, 0, 0);
}

/* Submit the partial buffer and wait until every write retired. */
static void drain_locked(struct kvt_cold *c)
{
    submit_partial_locked(c);
    while (c->fifo_len > 0)
        wait_retire_locked(c);
}

int cold_sync(struct kvt_cold *c)
{
    int rc;

    pthread_mutex_lock(&c->put_lock);
    pthread_mutex_lock(&c->lock);
    drain_locked(c);
    rc = c->sync_err;
    c->sync_err = 0;
    pthread_mutex_unlock(&c->lock);
    pthread_mutex_unlock(&c->put_lock);
    /* Also commits the conversion of fallocated (unwritten) extents that
     * O_DIRECT writes into them need; without it the data reads as zeros
     * after a power loss. */
    if (fdatasync(c->fd) < 0) {
        int err = -errno;
        pthread_mutex_lock(&c->lock);
        io_error_locked(c, err, "fdatasync");
        pthread_mutex_unlock(&c->lock);
        if (rc == 0)
            rc = err;
    }
    return rc;
}

/* ---- reading ---------------------------------------------------------- */

/* Check a record header against everything it implies, before trusting any
 * length in it. room is how many bytes the region has from the record on.
 * Returns the record's total bytes or -EBADMSG. */
static int64_t record_check(const struct cold_record_header *h, uint64_t room)
{
    uint64_t total;

    if (h->magic != COLD_RECORD_MAGIC || h->version != COLD_FORMAT_VERSION)
        return -EBADMSG;
    if (h->kind == COLD_REC_CHUNK) {
        if ((h->flags & ~COLD_REC_LZ4) || !shape_valid(&h->shape) ||
            h->raw_len != chunk_data_bytes(&h->shape) ||
            h->stored_len == 0 || h->stored_len > h->raw_len ||
            (!(h->flags & COLD_REC_LZ4) && h->stored_len != h->raw_len))
            return -EBADMSG;
        total = (uint64_t)REC_HDR + cold_bitmap_bytes(h->shape.tokens) + h->stored_len;
    } else if (h->kind == COLD_REC_TOMB_OBJECT || h->kind == COLD_REC_TOMB_NAMESPACE) {
        static const struct kvt_chunk_shape zero;
        if (h->flags || h->raw_len || h->stored_len ||
            memcmp(&h->shape, &zero, sizeof(zero)) != 0)
            return -EBADMSG;
        total = REC_HDR;
    } else {
        return -EBADMSG;
    }
    return total <= room ? (int64_t)total : -EBADMSG;
}

/* rec is ours to scribble on: the checksum field is zeroed to hash. */
static bool record_sum_ok(const struct kvt_cold *c, uint8_t *rec, uint32_t n)
{
    const size_t at = offsetof(struct cold_record_header, checksum);
    uint64_t want, zero = 0;

    memcpy(&want, rec + at, sizeof(want));
    memcpy(rec + at, &zero, sizeof(zero));
    return XXH3_64bits_withSeed(rec, n, c->seed) == want;
}

/* Verify a record read for e's key/seq and decode it into the outputs. */
static int record_decode(const struct kvt_cold *c, uint8_t *rec, const struct cold_entry *e,
                         struct kvt_chunk_shape *shape, uint64_t *present, void *data)
{
    struct cold_record_header h;
    uint32_t bitmap;

    memcpy(&h, rec, REC_HDR);
    if (record_check(&h, e->rec_bytes) != (int64_t)e->rec_bytes ||
        h.kind != COLD_REC_CHUNK || h.seq != e->seq || h.raw_len != e->raw_len ||
        memcmp(&h.key, &e->key, sizeof(h.key)) != 0 ||
        !record_sum_ok(c, rec, e->rec_bytes))
        return -EBADMSG;
    bitmap = cold_bitmap_bytes(h.shape.tokens);
    memset(present, 0, KVT_CHUNK_MAX_TOKENS / 8);
    memcpy(present, rec + REC_HDR, bitmap);
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
    int rc = -ENOENT;

    if (!c || !key || !shape || !present || !data)
        return -EINVAL;
    pthread_mutex_lock(&c->lock);
    c->st.gets++;
    for (int attempt = 0; attempt < GET_ATTEMPTS; attempt++) {
        struct cold_entry *e = *index_slot(c, key);
        struct cold_entry copy;
        uint8_t *bounce = NULL;
        uint64_t a0, a1, disk_end;

        if (!e) {
            rc = -ENOENT;
            break;
        }
        if (e->raw_len > data_cap) {
            pthread_mutex_unlock(&c->lock);
            return -ENOSPC;
        }
        copy = *e;
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
            rc = record_decode(c, bounce + (copy.off - a0), &copy, shape, present, data);
        free(bounce);

        pthread_mutex_lock(&c->lock);
        e = *index_slot(c, key);
        bool same = e && e->seq == copy.seq;
        if (rc == 0) {
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
            log_burst(c, LOG_WARNING, "cold: record at offset %llu of %s failed its check; dropped",
                      (unsigned long long)copy.off, c->path);
        } else {
            io_error_locked(c, rc, "read");
            rc = -EIO;
        }
        index_remove(c, e);
        break;
    }
    c->st.misses++;
    pthread_mutex_unlock(&c->lock);
    return rc;
}

int cold_lookup(struct kvt_cold *c, const struct kvt_chunk_key *key,
                uint32_t *leading_tokens_out)
{
    struct cold_entry *e;

    pthread_mutex_lock(&c->lock);
    e = *index_slot(c, key);
    if (e && leading_tokens_out)
        *leading_tokens_out = e->leading_tokens;
    pthread_mutex_unlock(&c->lock);
    return e ? 0 : -ENOENT;
}

void cold_set_domain_quota(struct kvt_cold *c, uint64_t bytes)
{
    pthread_mutex_lock(&c->lock);
    c->domain_quota_bytes = bytes;
    pthread_mutex_unlock(&c->lock);
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
    out->records = c->n_entries;
    out->capacity_bytes = (uint64_t)c->n_regions * (c->region_bytes - COLD_BLOCK);
    pthread_mutex_unlock(&c->lock);
}

/* ---- recovery --------------------------------------------------------- */

/* Make sure bytes [0, need) of the region are in buf. */
static int scan_load(struct kvt_cold *c, uint32_t r, uint8_t *buf, uint32_t *loaded,
                     uint64_t need)
{
    while (*loaded < need) {
        uint32_t step = (uint32_t)min_u64(SCAN_STEP, c->region_bytes - *loaded);
        int rc = c->io->ops->read(c->io, buf + *loaded, step, region_base(c, r) + *loaded);
        if (rc < 0) {
            io_error_locked(c, rc, "recovery read");
            return rc;
        }
        *loaded += step;
    }
    return 0;
}

static bool all_zero(const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i])
            return false;
    return true;
}

/* Tombstones met during recovery are applied once at the end: every entry
 * is checked against the newest tombstone of its object, of its namespace
 * and of all namespaces, O((n + t) log t) rather than a scan of the index
 * per tombstone. That equals applying them in log order, because the index
 * keeps only the newest record of each key and a tombstone drops every
 * record older than itself. */
struct tomb {
    uint64_t ns, hi, lo, seq;          /* hi = lo = 0 for a namespace */
    uint8_t kind;
};

struct recovery {
    struct tomb *tombs;
    size_t n, cap;
};

static int tomb_cmp(const void *a, const void *b)
{
    const struct tomb *x = a, *y = b;

    if (x->kind != y->kind)
        return x->kind < y->kind ? -1 : 1;
    if (x->ns != y->ns)
        return x->ns < y->ns ? -1 : 1;
    if (x->hi != y->hi)
        return x->hi < y->hi ? -1 : 1;
    return x->lo < y->lo ? -1 : x->lo > y->lo;
}

static void tomb_add(struct kvt_cold *c, struct recovery *rv, const struct cold_record_header *h)
{
    bool object = h->kind == COLD_REC_TOMB_OBJECT;

    if (rv->n == rv->cap) {
        size_t cap = rv->cap ? rv->cap * 2 : 256;
        struct tomb *t = realloc(rv->tombs, cap * sizeof(*t));
        if (!t) {
            index_drop_matching(c, h->kind, &h->key, h->seq);   /* slower, same result */
            return;
        }
        rv->tombs = t;
        rv->cap = cap;
    }
    rv->tombs[rv->n++] = (struct tomb){
        .kind = h->kind, .ns = h->key.ns_id, .seq = h->seq,
        .hi = object ? h->key.obj_hi : 0, .lo = object ? h->key.obj_lo : 0,
    };
}

/* Seq of the newest tombstone (kind, ns, hi, lo), 0 if none. */
static uint64_t tomb_seq(const struct recovery *rv, uint8_t kind, uint64_t ns,
                         uint64_t hi, uint64_t lo)
{
    struct tomb key = { .kind = kind, .ns = ns, .hi = hi, .lo = lo };
    const struct tomb *t = bsearch(&key, rv->tombs, rv->n, sizeof(key), tomb_cmp);

    return t ? t->seq : 0;
}

static void tombs_apply(struct kvt_cold *c, struct recovery *rv)
{
    size_t kept = 0;
    uint64_t all;

    if (rv->n == 0)
        return;
    qsort(rv->tombs, rv->n, sizeof(*rv->tombs), tomb_cmp);
    for (size_t i = 0; i < rv->n; i++) {        /* keep the newest of each */
        struct tomb *last = kept ? &rv->tombs[kept - 1] : NULL;
        if (last && tomb_cmp(last, &rv->tombs[i]) == 0) {
            if (rv->tombs[i].seq > last->seq)
                last->seq = rv->tombs[i].seq;
        } else {
            rv->tombs[kept++] = rv->tombs[i];
        }
    }
    rv->n = kept;
    all = tomb_seq(rv, COLD_REC_TOMB_NAMESPACE, 0, 0, 0);
    for (uint64_t i = 0; i < c->n_buckets; i++) {
        struct cold_entry *e = c->buckets[i], *next;
        for (; e; e = next) {
            const struct kvt_chunk_key *k = &e->key;
            next = e->hash_next;
            if (e->seq < all ||
                e->seq < tomb_seq(rv, COLD_REC_TOMB_NAMESPACE, k->ns_id, 0, 0) ||
                e->seq < tomb_seq(rv, COLD_REC_TOMB_OBJECT, k->ns_id, k->obj_hi, k->obj_lo))
                index_remove(c, e);
        }
    }
}

static void replay(struct kvt_cold *c, struct recovery *rv, const struct cold_record_header *h,
                   const uint8_t *rec, uint64_t off, uint32_t n, uint32_t r)
{
    struct cold_entry *e;

    if (h->seq >= c->next_record_seq)
        c->next_record_seq = h->seq + 1;
    if (h->kind != COLD_REC_CHUNK) {
        tomb_add(c, rv, h);
        return;
    }
    e = malloc(sizeof(*e));
    if (!e) {
        cold_log(c, LOG_ERR, "cold: out of memory while recovering; record skipped");
        return;
    }
    e->key = h->key;
    e->off = off;
    e->seq = h->seq;
    e->rec_bytes = n;
    e->raw_len = h->raw_len;
    e->leading_tokens = leading_tokens(rec + REC_HDR, h->shape.tokens);
    e->region = r;
    index_put(c, e);
}

/* Replay region r's records in log order until its log ends. */
static void scan_region(struct kvt_cold *c, struct recovery *rv, uint32_t r, uint8_t *buf)
{
    uint32_t loaded = 0;
    uint64_t p = COLD_BLOCK;

    while (p + REC_HDR <= c->region_bytes && scan_load(c, r, buf, &loaded, p + REC_HDR) == 0) {
        struct cold_record_header h;
        int64_t n;

        memcpy(&h, buf + p, REC_HDR);
        if (h.magic != COLD_RECORD_MAGIC) {
            uint64_t next = round_up(p, COLD_BLOCK);
            if (next != p && scan_load(c, r, buf, &loaded, next) == 0 &&
                all_zero(buf + p, next - p)) {
                p = next;              /* padding after a sync */
                continue;
            }
            break;                     /* the end of this region's log */
        }
        if (h.region_seq != c->regions[r].seq)
            break;                     /* left from an older use of the region */
        n = record_check(&h, c->region_bytes - p);
        if (n < 0 || scan_load(c, r, buf, &loaded, p + (uint64_t)n) < 0) {
            c->st.records_torn++;
            c->st.checksum_failures++;
            log_burst(c, LOG_WARNING, "cold: torn record in region %u at offset %llu "
                      "of %s; the rest of the region is skipped", r, (unsigned long long)p, c->path);
            break;
        }
        if (!record_sum_ok(c, buf + p, (uint32_t)n)) {
            /* The header is whole and of this region's use, so its length
             * can be trusted to find the next record: one corrupt record
             * (a flipped bit in its data) costs only itself. A torn tail
             * after a crash ends here too, at the garbage that follows. */
            c->st.records_torn++;
            c->st.checksum_failures++;
            log_burst(c, LOG_WARNING, "cold: checksum failure in the record at offset %llu "
                      "of region %u of %s; record dropped", (unsigned long long)p, r, c->path);
            p += (uint64_t)n;
            continue;
        }
        replay(c, rv, &h, buf + p, region_base(c, r) + p, (uint32_t)n, r);
        p += (uint64_t)n;
    }
}

static bool region_header_ok(const struct kvt_cold *c, const struct cold_region_header *h,
                             uint32_t r)
{
    return memcmp(h->magic, COLD_REGION_MAGIC, 8) == 0 &&
           h->version == COLD_FORMAT_VERSION && h->index == r && h->seq >= 1 &&
           memcmp(h->file_uuid, c->uuid, sizeof(c->uuid)) == 0 &&
           h->checksum == XXH3_64bits_withSeed(h, offsetof(struct cold_region_header, checksum),
                                              c->seed);
}

struct region_order {
    uint64_t seq;
    uint32_t r;
};

static int region_order_cmp(const void *a, const void *b)
{
    const struct region_order *x = a, *y = b;
    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

/* Rebuild the index: regions in sequence order, records in log order, so
 * newer records replace older ones and tombstones drop what precedes them.
 * Appending resumes in a fresh region after the newest one. */
static int recover(struct kvt_cold *c)
{
    struct region_order *order = calloc(c->n_regions, sizeof(*order));
    struct recovery rv = { 0 };
    uint8_t *buf = NULL;
    uint32_t used = 0;
    int rc = 0;

    if (!order || posix_memalign((void **)&buf, COLD_BLOCK, COLD_BLOCK) != 0) {
        rc = -ENOMEM;
        goto out;
    }
    for (uint32_t r = 0; r < c->n_regions; r++) {
        struct cold_region_header h;
        rc = c->io->ops->read(c->io, buf, COLD_BLOCK, region_base(c, r));
        if (rc < 0) {
            io_error_locked(c, rc, "recovery read");   /* open is single-threaded */
            rc = 0;
            continue;
        }
        memcpy(&h, buf, sizeof(h));
        if (!region_header_ok(c, &h, r))
            continue;                  /* never used, or its header was torn */
        c->regions[r].seq = h.seq;
        order[used++] = (struct region_order){ h.seq, r };
    }
    qsort(order, used, sizeof(*order), region_order_cmp);
    free(buf);
    buf = NULL;
    if (used > 0 && posix_memalign((void **)&buf, COLD_BLOCK, c->region_bytes) != 0) {
        rc = -ENOMEM;
        goto out;
    }
    for (uint32_t i = 0; i < used; i++) {
        scan_region(c, &rv, order[i].r, buf);
        if (order[i].seq >= c->next_region_seq)
            c->next_region_seq = order[i].seq + 1;
    }
    tombs_apply(c, &rv);
    c->next_region = used ? (order[used - 1].r + 1) % c->n_regions : 0;
    c->st.records_recovered = c->n_entries;
    c->err_burst = false;              /* what open found does not mute what follows */
out:
    free(rv.tombs);
    free(buf);
    free(order);
    return rc;
}

/* ---- open and close --------------------------------------------------- */

static int config_check(struct kvt_cold *c, const struct kvt_cold_config *cfg)
{
    uint64_t region = cfg->region_bytes ? cfg->region_bytes : DEFAULT_REGION_BYTES;
    uint64_t wbuf = cfg->write_buffer_bytes ? cfg->write_buffer_bytes : DEFAULT_WBUF_BYTES;
    uint64_t n;

    if (!cfg->path || region < MIB || region > MAX_REGION_BYTES || (region & (region - 1)) ||
        wbuf < MIN_WBUF_BYTES || (wbuf & (wbuf - 1)) || cfg->write_buffers > MAX_WBUFS ||
        cfg->bytes < COLD_BLOCK)
        return -EINVAL;
    n = (cfg->bytes - COLD_BLOCK) / region;
    if (n < 2 || n > UINT32_MAX)
        return -EINVAL;
    c->region_bytes = (uint32_t)region;
    c->n_regions = (uint32_t)n;
    c->file_bytes = COLD_BLOCK + n * region;
    c->max_record = c->region_bytes - COLD_BLOCK;
    c->wbuf_bytes = (uint32_t)min_u64(wbuf, region);
    c->n_wbufs = cfg->write_buffers ? cfg->write_buffers : DEFAULT_WBUFS;
    return 0;
}

/* One block of fd at off. On c->fd, falls back from O_DIRECT if the file
 * system accepted the flag at open but refuses it on I/O (EINVAL): this is
 * the first I/O of every open, so the backends never see that refusal. */
static int block_io(struct kvt_cold *c, int fd, void *block, uint64_t off, bool write)
{
    for (;;) {
        ssize_t n = write ? pwrite(fd, block, COLD_BLOCK, (off_t)off)
                          : pread(fd, block, COLD_BLOCK, (off_t)off);
        if (n == COLD_BLOCK)
            return 0;
        if (n >= 0)
            return -EINVAL;            /* shorter than a header: not our file */
        if (errno == EINTR)
            continue;
        if (errno != EINVAL || fd != c->fd || !c->direct)
            return -errno;
        fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_DIRECT);
        c->direct = false;
        cold_log(c, LOG_WARNING, "cold: %s refuses O_DIRECT; using buffered I/O", c->path);
    }
}

/* Preallocate fd to the configured size and write a new file header. */
static int file_format(struct kvt_cold *c, int fd)
{
    struct cold_file_header h = { .magic = COLD_FILE_MAGIC };
    uint8_t *block = NULL;
    int rc;

    h.version = COLD_FORMAT_VERSION;
    h.block_bytes = COLD_BLOCK;
    h.region_bytes = c->region_bytes;
    h.file_bytes = c->file_bytes;
    if (getrandom(h.uuid, sizeof(h.uuid), 0) != sizeof(h.uuid) ||
        getrandom(&h.seed, sizeof(h.seed), 0) != sizeof(h.seed))
        return -EIO;
    h.created_unix = (uint64_t)time(NULL);
    h.checksum = XXH3_64bits(&h, offsetof(struct cold_file_header, checksum));

    if (fallocate(fd, 0, 0, (off_t)c->file_bytes) < 0) {
        /* No fallocate on this file system: a sparse file still works. */
        if (errno != EOPNOTSUPP && errno != ENOSYS)
            return -errno;
        if (ftruncate(fd, (off_t)c->file_bytes) < 0)
            return -errno;
    }
    if (posix_memalign((void **)&block, COLD_BLOCK, COLD_BLOCK) != 0)
        return -ENOMEM;
    memset(block, 0, COLD_BLOCK);
    memcpy(block, &h, sizeof(h));
    rc = block_io(c, fd, block, 0, true);
    if (rc == 0 && fdatasync(fd) < 0)
        rc = -errno;
    free(block);
    return rc;
}

/* A missing file is built under a temporary name and renamed into place,
 * so a crash while formatting never leaves a header-less file at path. */
static int file_create(struct kvt_cold *c)
{
    char *tmp = NULL, *dir = NULL;
    int fd = -1, dfd = -1, rc;

    if (asprintf(&tmp, "%s.new", c->path) < 0) {
        tmp = NULL;
        rc = -ENOMEM;
        goto out;
    }
    fd = open(tmp, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        rc = -errno;
        goto out;
    }
    rc = file_format(c, fd);
    if (rc == 0 && rename(tmp, c->path) < 0)
        rc = -errno;
    if (rc < 0) {
        unlink(tmp);
        goto out;
    }
    dir = strdup(c->path);
    if (dir && (dfd = open(dirname(dir), O_RDONLY | O_DIRECTORY | O_CLOEXEC)) >= 0)
        fsync(dfd);
out:
    if (dfd >= 0)
        close(dfd);
    if (fd >= 0)
        close(fd);
    free(dir);
    free(tmp);
    return rc;
}

/* Read and check the file header against the configuration; touches nothing. */
static int file_check(struct kvt_cold *c, const struct stat *st)
{
    struct cold_file_header h;
    uint8_t *block = NULL;
    int rc;

    if (posix_memalign((void **)&block, COLD_BLOCK, COLD_BLOCK) != 0)
        return -ENOMEM;
    rc = block_io(c, c->fd, block, 0, false);
    memcpy(&h, block, sizeof(h));
    free(block);
    if (rc < 0)
        return rc;
    if (memcmp(h.magic, COLD_FILE_MAGIC, 8) != 0 || h.version != COLD_FORMAT_VERSION ||
        h.checksum != XXH3_64bits(&h, offsetof(struct cold_file_header, checksum)) ||
        h.block_bytes != COLD_BLOCK || h.region_bytes != c->region_bytes ||
        h.file_bytes != c->file_bytes || (uint64_t)st->st_size < h.file_bytes) {
        cold_log(c, LOG_ERR, "cold: %s is not a cold file of this configuration "
                 "(region %u bytes, file %llu bytes); left untouched", c->path,
                 c->region_bytes, (unsigned long long)c->file_bytes);
        return -EINVAL;
    }
    memcpy(c->uuid, h.uuid, sizeof(c->uuid));
    c->seed = h.seed;
    return 0;
}

static int file_open(struct kvt_cold *c)
{
    struct stat st;
    int rc;

    c->direct = true;
    c->fd = open(c->path, O_RDWR | O_CLOEXEC | O_DIRECT);
    if (c->fd < 0 && errno == ENOENT) {
        rc = file_create(c);
        if (rc < 0)
            return rc;
        c->fd = open(c->path, O_RDWR | O_CLOEXEC | O_DIRECT);
    }
    if (c->fd < 0 && errno == EINVAL) {
        c->direct = false;
        cold_log(c, LOG_WARNING, "cold: %s refuses O_DIRECT; using buffered I/O", c->path);
        c->fd = open(c->path, O_RDWR | O_CLOEXEC);
    }
    if (c->fd < 0)
        return -errno;
    /* Two daemons appending to one log would interleave garbage. */
    if (flock(c->fd, LOCK_EX | LOCK_NB) < 0)
        return errno == EWOULDBLOCK ? -EBUSY : -errno;
    if (fstat(c->fd, &st) < 0)
        return -errno;
    if (st.st_size == 0) {
        rc = file_format(c, c->fd);    /* an empty file is ours to format */
        if (rc < 0 || fstat(c->fd, &st) < 0)
            return rc < 0 ? rc : -errno;
    }
    return file_check(c, &st);
}

static int io_start(struct kvt_cold *c)
{
    if (!c->cfg.force_pread) {
        int rc = cold_io_open_uring(c->fd, c->n_wbufs, &c->io);
        if (rc == 0) {
            c->st.uring = true;
            return 0;
        }
        char buf[64];
        cold_log(c, LOG_WARNING, "cold: io_uring unavailable (%s); using pread/pwrite",
                 strerror_r(-rc, buf, sizeof(buf)));
    }
    return cold_io_open_pread(c->fd, &c->io);
}

static void cold_free(struct kvt_cold *c)
{
    if (c->io)
        c->io->ops->close(c->io);
    for (uint64_t i = 0; c->buckets && i < c->n_buckets; i++) {
        struct cold_entry *e = c->buckets[i], *next;
        for (; e; e = next) {
            next = e->hash_next;
            free(e);
        }
    }
    for (uint32_t i = 0; c->wbufs && i < c->n_wbufs; i++)
        free(c->wbufs[i].mem);
    free(c->wbufs);
    free(c->fifo);
    free(c->buckets);
    free(c->regions);
    free(c->region_order);
    domain_bytes_free(&c->domain_used);
    if (c->hash)
        XXH3_freeState(c->hash);
    if (c->fd >= 0)
        close(c->fd);
    if (c->locks_ready) {
        pthread_cond_destroy(&c->wb_cond);
        pthread_mutex_destroy(&c->lock);
        pthread_mutex_destroy(&c->put_lock);
    }
    free(c->path);
    free(c);
}

int cold_open(const struct kvt_cold_config *cfg, struct kvt_cold **out)
{
    struct kvt_cold *c;
    int rc;

    if (!cfg || !out)
        return -EINVAL;
    c = calloc(1, sizeof(*c));
    if (!c)
        return -ENOMEM;
    c->fd = -1;
    pthread_mutex_init(&c->put_lock, NULL);
    pthread_mutex_init(&c->lock, NULL);
    pthread_cond_init(&c->wb_cond, NULL);
    c->locks_ready = true;
    c->cfg = *cfg;
    c->cur_region = -1;
    c->next_region_seq = 1;
    c->next_record_seq = 1;
    rc = config_check(c, cfg);
    if (rc < 0)
        goto err;
    c->path = strdup(cfg->path);
    c->cfg.path = c->path;
    c->n_buckets = 1024;
    c->buckets = calloc(c->n_buckets, sizeof(*c->buckets));
    c->regions = calloc(c->n_regions, sizeof(*c->regions));
    c->region_order = calloc(c->n_regions, sizeof(*c->region_order));
    c->wbufs = calloc(c->n_wbufs, sizeof(*c->wbufs));
    c->fifo = calloc(c->n_wbufs, sizeof(*c->fifo));
    c->hash = XXH3_createState();
    if (!c->path || !c->buckets || !c->regions || !c->region_order || !c->wbufs || !c->fifo || !c->hash) {
        rc = -ENOMEM;
        goto err;
    }
    for (uint32_t i = 0; i < c->n_wbufs; i++) {
        struct cold_wbuf *b = &c->wbufs[i];
        if (posix_memalign((void **)&b->mem, COLD_BLOCK, c->wbuf_bytes) != 0) {
            b->mem = NULL;
            rc = -ENOMEM;
            goto err;
        }
        b->req.done = wbuf_done;
        b->cold = c;
    }
    c->n_free = c->n_wbufs;
    rc = file_open(c);
    if (rc < 0)
        goto err;
    rc = io_start(c);
    if (rc < 0)
        goto err;
    rc = recover(c);
    if (rc < 0)
        goto err;
    *out = c;
    return 0;
err:
    cold_free(c);
    return rc;
}

void cold_close(struct kvt_cold *c)
{
    if (!c)
        return;
    pthread_mutex_lock(&c->put_lock);
    pthread_mutex_lock(&c->lock);
    drain_locked(c);
    pthread_mutex_unlock(&c->lock);
    pthread_mutex_unlock(&c->put_lock);
    cold_free(c);
}
