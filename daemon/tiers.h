/* tiers.h - joins the hot and cold tiers: demotion, promotion, flush. */
#ifndef KVT_TIERS_H
#define KVT_TIERS_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "cache/cold.h"
#include "cache/hot.h"
#include "daemon/config.h"
#include "daemon/workers.h"

struct kvt_tiers {
    struct kvt_hot *hot;
    struct kvt_cold *cold;            /* NULL: no cold tier (cold-bytes 0) */
    /* Demotion watermarks of hot-bytes: set by the loop (SIGHUP, config
     * set), read by the demoter. */
    _Atomic uint64_t high_bytes, low_bytes;
    pthread_t demoter;
    bool demoter_running;
    pthread_mutex_t lock;             /* guards stopping; wake's mutex */
    pthread_cond_t wake;
    bool stopping;
    bool enforce_quota;               /* the demoter applies a new hot quota */
    pthread_mutex_t flush_lock;       /* one flush at a time */
    struct kvt_workers *readers;      /* promotion reads in parallel */
    atomic_ulong demotions, promotions, demote_errors;
    /* The admin flush's and the final flush's tiers_flush cursor, under
     * flush_lock. */
    uint64_t flush_lost_seen;
};

/* Open the cold tier (if cfg->cold_bytes), rebuilding its index from the
 * file, install the demotion hook on hot and start the background demoter.
 * Returns 0 or -errno (logged). */
int tiers_open(struct kvt_tiers *t, struct kvt_hot *hot, const struct kvt_config *cfg);
/* Stop the demoter and close the cold tier (buffered records are written,
 * not fsynced: call tiers_flush first for that). t may be half-built. */
void tiers_close(struct kvt_tiers *t);
/* Set the watermarks from percentages of the hot budget. */
void tiers_set_watermarks(struct kvt_tiers *t, uint64_t hot_bytes,
                          uint32_t high_pct, uint32_t low_pct);

/* Set the per-sharing-domain quotas of both tiers (0 = none). A lowered
 * quota holds at once: cold records over it are dropped here (an index
 * change), hot chunks over it are demoted by the demoter thread (or
 * evicted here when there is no cold tier). */
void tiers_set_quotas(struct kvt_tiers *t, uint64_t hot_quota, uint64_t cold_quota);

/* Called by tiers_flush after each batch with the chunks written so far and
 * the dirty chunks found at the start (written can pass total while stores
 * go on). Runs on the flushing thread. */
typedef void (*tiers_progress_fn)(void *arg, uint64_t written, uint64_t total);

/* Write every dirty hot chunk to the cold tier and fsync; progress (may be
 * NULL) is told how far it got. One flush runs at a time; a second waits.
 * The durability rule: it returns 0 only if everything stored before it is
 * on disk. A chunk whose write fails stays dirty (it is written again by
 * the next flush, which fails again while the disk does); a chunk whose
 * only copy was in a failed write after it left RAM is lost (cold stats
 * records_lost), and every caller hears of a loss once: *lost_seen is the
 * caller's cursor (records_lost when it last flushed, or when it came);
 * a flush that finds records_lost past it fails and moves it. Returns 0,
 * -EOPNOTSUPP without a cold tier, or -EIO (logged). */
int tiers_flush(struct kvt_tiers *t, uint64_t *lost_seen, tiers_progress_fn progress,
                void *arg);
/* Chunk records lost to cold tier write errors since start (0 without a
 * cold tier): a new caller's tiers_flush cursor. */
uint64_t tiers_records_lost(struct kvt_tiers *t);

/* Bring the cold copy of key into the hot tier, merging it under tokens the
 * hot chunk does not have (hot tokens are newer). Returns 0, or -ENOENT when
 * there is no usable cold copy (absent, corrupt, other shape). */
int tiers_promote(struct kvt_tiers *t, const struct kvt_chunk_key *key,
                  const struct kvt_chunk_shape *shape);
/* Promote n chunks of one shape at once, on the reader threads, so the disk
 * sees many reads in flight. Chunks without a usable cold copy are skipped;
 * callers read the hot tier afterwards and treat what is missing as absent. */
void tiers_promote_many(struct kvt_tiers *t, const struct kvt_chunk_key *const *keys,
                        size_t n, const struct kvt_chunk_shape *shape);
/* Leading tokens of key's cold copy without I/O (0 if none). */
uint32_t tiers_cold_leading(struct kvt_tiers *t, const struct kvt_chunk_key *key);
/* Drop an object from the cold tier too. */
void tiers_drop_object(struct kvt_tiers *t, uint64_t ns_id, uint64_t hi, uint64_t lo);

#endif
