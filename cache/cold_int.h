/* cold_int.h - the cold tier's insides, shared by cold.c (writing, the
 * index), cold_read.c (reading) and cold_open.c (the file, recovery, open
 * and close).
 * Nothing outside cache/cold*.c includes it. */
#ifndef KVT_COLD_INT_H
#define KVT_COLD_INT_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
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
#define REC_HDR ((uint32_t)sizeof(struct cold_record_header))
/* Domains over a lowered quota handled by one cold_set_domain_quota; the
 * rest at their next put. */
#define COLD_QUOTA_SWEEP 256
#define GET_ATTEMPTS 3                 /* a get retries when its record moved */

struct cold_entry {
    struct kvt_chunk_key key;
    uint64_t off;                      /* file offset of the record header */
    uint64_t seq;
    uint32_t rec_bytes;                /* header + bitmap + stored data */
    uint32_t raw_len;
    uint32_t leading_tokens;
    uint32_t region;
    uint8_t *name;                     /* a name record's block (raw_len bytes), else NULL */
    struct cold_entry *hash_next;
    struct cold_entry *reg_prev, *reg_next;   /* the region's live records */
};

/* A region's live records, newest first: records are indexed in log order
 * (cold_put appends and indexes under one lock; recovery replays in log
 * order), so the list's tail is the region's oldest record. */
struct cold_region {
    uint64_t seq;                      /* of its current use; 0 = never used */
    uint32_t version;                  /* its header's format version: its records' */
    struct cold_entry *entries;
};

/* What the index holds of one namespace, kept up to date as entries come
 * and go (cold_usage.c), so that a listing copies one of these per
 * namespace under the lock instead of walking every record: the walk held
 * the lock, and so every lookup, 4 to 20 ms over 960k records. An entry
 * goes when its namespace's last chunk record does. */
struct cold_ns_count {
    uint64_t ns_id;
    uint32_t domain;
    uint64_t records, bytes, objects;  /* chunk records; objects: chunk 0 of layer 0 */
    struct cold_ns_count *next;
};

/* A tombstone not yet known to be on disk: its write has not retired, or
 * it failed (then it is logged again, under its own seq, before the next
 * append and by every sync). It is forgotten once the write holding it
 * retired with success and no gap of its region lies before it. */
enum tomb_state {
    TOMB_APPENDING,                    /* being copied into the log */
    TOMB_WRITING,                      /* in a write buffer not yet retired */
    TOMB_FAILED,                       /* to be logged again */
    TOMB_WRITTEN,                      /* on disk: the entry goes */
};

struct cold_tomb {
    struct kvt_chunk_key key;          /* ns_id, obj_hi, obj_lo as logged */
    uint64_t seq, off;                 /* its record seq; where it was appended */
    uint32_t region;
    uint8_t kind;
    enum tomb_state state;
    bool failed_once;                  /* a write of it (or of one it replaced) failed */
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
    uint32_t file_version;             /* the file header's format version */
    uint32_t region_bytes, n_regions, max_record;
    uint64_t file_bytes;
    bool locks_ready;

    pthread_mutex_t put_lock;
    pthread_mutex_t lock;
    pthread_cond_t wb_cond;            /* a buffer retired */

    struct cold_entry **buckets;       /* the index: chained hash on the key */
    uint64_t n_buckets, n_entries;
    uint64_t n_names;                  /* entries that are name records */
    struct cold_ns_count **ns_counts;  /* chained hash on ns_id, n_ns_buckets a power of 2 */
    uint64_t n_ns_buckets, n_ns;
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
    /* Keys of chunk records whose write failed, for the unwritten hook:
     * collected under lock where a write retires, handed over without it
     * by one reporter at a time (report_unwritten in cold.c). A sync or
     * close drains this too, so its caller has heard of every failure. */
    struct kvt_chunk_key *unwritten;
    size_t n_unwritten, cap_unwritten;
    bool reporting;
    bool loss_logged;                  /* a loss was logged, no write succeeded since */
    uint64_t burst_lost;               /* records lost since then */
    /* A write of broken_region failed at broken_off (the lowest such):
     * the log must be repaired before the next append. tail_written: a
     * later write of the region reached the disk meanwhile. */
    bool log_broken, broken_tail_written;
    uint32_t broken_region;
    uint64_t broken_off;
    bool err_burst;                    /* an error was logged, no success since */
    /* Tombstones not known to be on disk (struct cold_tomb), and how many
     * of them failed. Entries are added, logged again and removed only
     * under put_lock (so an index into tombs is stable while put_lock is
     * held); a retiring write only changes their state. tombs_untracked:
     * tombstones that could not be tracked (no memory) since the last
     * cold_sync_tombstones. */
    struct cold_tomb *tombs;
    size_t n_tombs, cap_tombs, n_tombs_failed;
    uint64_t tombs_untracked;
    /* Drops that dropped any record (a chunk or only a name), numbered in
     * log order, and the last of them a cold_sync_tombstones made durable:
     * while drops_logged > drops_synced a drop must sync before its reply
     * (cold_tombstones_behind), whatever it returned. Under lock. */
    uint64_t drops_logged, drops_synced;
    bool bad_name_logged;              /* a name cold_put_named could not keep */

    struct kvt_cold_stats st;
};

static inline uint64_t round_up(uint64_t v, uint64_t a) { return (v + a - 1) / a * a; }
static inline uint64_t min_u64(uint64_t a, uint64_t b) { return a < b ? a : b; }

/* Whether a key is a name record's (cold_format.h). */
static inline bool cold_key_is_name(const struct kvt_chunk_key *k)
{
    return k->layer == COLD_NAME_LAYER;
}

/* cold_names.c. Check a name record's block (the header passed
 * cold_record_check) and decode it; 0 or -EBADMSG. */
int cold_name_decode(const struct cold_record_header *h, const uint8_t *block,
                     struct kvt_cold_name *out);
/* Check that name belongs to chunk's object (ns_id, obj, domain) and is
 * within bounds, and write its block (cold_format.h) into block
 * (COLD_NAME_BLOCK_MAX bytes); 0 or -EINVAL. */
int cold_name_encode(const struct kvt_cold_name *name, const struct kvt_chunk_key *chunk,
                     uint8_t *block, uint32_t *len);
/* Free an entry and what it owns (NULL: nothing). */
void cold_entry_free(struct cold_entry *e);

/* cold_usage.c; lock held. Make sure e's namespace has a count (0 or
 * -ENOMEM), then count e in or out (chunk records only; names are not). */
int cold_ns_reserve(struct kvt_cold *c, const struct cold_entry *e);
void cold_ns_add(struct kvt_cold *c, const struct cold_entry *e);
void cold_ns_sub(struct kvt_cold *c, const struct cold_entry *e);
void cold_ns_free(struct kvt_cold *c);

/* cold_index.c; all with lock held. */
struct cold_entry **cold_index_slot(struct kvt_cold *c, const struct kvt_chunk_key *key);
void cold_index_put(struct kvt_cold *c, struct cold_entry *e);
void cold_index_remove(struct kvt_cold *c, struct cold_entry *e);
/* Drop entries older than seq that a tombstone of kind for t covers;
 * returns the chunk records among them, *names (may be NULL) the name
 * records. */
uint64_t cold_index_drop_matching(struct kvt_cold *c, uint8_t kind,
                                  const struct kvt_chunk_key *t, uint64_t seq,
                                  uint64_t *names);
/* Drop region r's records overlapping [start, end) (all: 0, ~0). */
void cold_index_drop_range(struct kvt_cold *c, uint32_t r, uint64_t start, uint64_t end);
/* Drop key's domain's oldest records until need more bytes fit its quota. */
void cold_quota_drop_locked(struct kvt_cold *c, const struct kvt_chunk_key *key,
                            uint64_t need);

/* cold.c */
void cold_log(struct kvt_cold *c, int level, const char *fmt, ...);
/* Log the first error of a burst only (lock held). */
void cold_log_burst(struct kvt_cold *c, int level, const char *fmt, ...);
void cold_io_error_locked(struct kvt_cold *c, int err, const char *what);
/* fdatasync the file; a failure is counted and logged as an I/O error
 * (lock not held). Returns 0 or -errno. */
int cold_fdatasync(struct kvt_cold *c);
bool cold_shape_valid(const struct kvt_chunk_shape *s);
/* A record header's total bytes if it is sane, of format version (its
 * region's) and fits room, else -EBADMSG. */
int64_t cold_record_check(const struct cold_record_header *h, uint32_t version, uint64_t room);
bool cold_record_sum_ok(const struct kvt_cold *c, uint8_t *rec, uint32_t n);
uint64_t cold_region_base(const struct kvt_cold *c, uint32_t r);
/* Log again the tombstones whose write failed, submit the partial write
 * buffer and wait until every write retired and the unwritten hook has
 * heard of every failed one. Called with put_lock and lock; drops lock
 * while it waits or reports. */
void cold_drain_locked(struct kvt_cold *c);
/* The backend's completion callback of a write buffer. */
void cold_wbuf_done(struct cold_io_req *req, int res);
/* Start the queued writes (lock held). */
void cold_flush_locked(struct kvt_cold *c);
/* Hand queued unwritten keys to the hook; called without lock. */
void cold_report_unwritten(struct kvt_cold *c);
/* Append a record (cold.c: the log made whole and failed tombstones logged
 * again first, by cold_prepare_append_locked); cold_append_record_locked
 * appends to a log already whole. put_lock and lock held; 0 or -EIO. */
int cold_append_locked(struct kvt_cold *c, uint8_t *head, uint32_t head_len,
                       const void *data, uint32_t data_len, struct cold_entry *e);
int cold_append_record_locked(struct kvt_cold *c, uint8_t *head, uint32_t head_len,
                              const void *data, uint32_t data_len, struct cold_entry *e);
void cold_prepare_append_locked(struct kvt_cold *c);

/* cold_tomb.c; put_lock and lock held, except retired (lock only). */
void cold_tombs_retired_locked(struct kvt_cold *c, const struct cold_wbuf *b, bool ok);
void cold_tombs_compact_locked(struct kvt_cold *c);
/* Append tombs[i] (its seq kept if it has one) and track where it went. */
int cold_tomb_log_locked(struct kvt_cold *c, size_t i);

#endif
