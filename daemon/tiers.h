/* tiers.h - joins the hot and cold tiers: demotion, promotion, flush. */
#ifndef KVT_TIERS_H
#define KVT_TIERS_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "cache/cold.h"
#include "cache/hot.h"
#include "cache/remote.h"
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
    /* Drops exclude merges: a merge of a cold record into a hot chunk
     * (tiers_write, tiers_promote) holds it for reading from its
     * cold lookup until the chunk holds the tokens; a drop holds it for
     * writing while it drops the hot chunks and logs the tombstone. So a
     * merge either ran before the drop (its chunk is linked, and dropped
     * by it) or after (the record is gone): never old data in a chunk the
     * drop missed. Lock order: drop_lock, a chunk's lock, the tier locks.
     * Writer-preferring, so promotions cannot keep a drop waiting. */
    pthread_rwlock_t drop_lock;
    struct kvt_workers *readers;      /* promotion reads in parallel */
    atomic_ulong demotions, promotions, demote_errors;
    /* The admin flush's and the final flush's tiers_flush cursor, under
     * flush_lock. */
    uint64_t flush_lost_seen;
    /* The remote tier (tiers_remote.c); NULL: none. Set at open, never
     * changed while running. */
    struct kvt_remote *remote;
    uint32_t n_rdomain;               /* sharing domains with a pool name */
    struct { uint32_t domain; char name[CONFIG_RDOMAIN_NAME]; } rdomain[CONFIG_RDOMAIN_MAX];
    atomic_ulong remote_promotions;   /* chunks brought in from the pool */
    bool remote_lossless;             /* quant none: int8 records are refused */
    /* Where a context's name comes from when its chunk 0 of layer 0 is
     * written to the cold tier (cold_put_named keeps it there): fills *out
     * and returns 0, or -ENOENT (a token prefix, or a name not known).
     * Called on the writing thread under that chunk's read lock: it must
     * not take a chunk lock. Set at open, never changed. */
    int (*name_of)(void *arg, const struct kvt_chunk_key *key, struct kvt_cold_name *out);
    void *name_arg;
};

/* Open the cold tier (if cfg->cold_bytes), rebuilding its index from the
 * file, install the demotion hook on hot and start the background demoter.
 * name_of (may be NULL) and name_arg: see struct kvt_tiers. Returns 0 or
 * -errno (logged). */
int tiers_open(struct kvt_tiers *t, struct kvt_hot *hot, const struct kvt_config *cfg,
               int (*name_of)(void *arg, const struct kvt_chunk_key *key,
                              struct kvt_cold_name *out),
               void *name_arg);
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

/* From now on the calling thread (the event loop) never waits on the disk
 * or on drop_lock in this module: tiers_write, tiers_stage_commit and
 * tiers_promote_many return -EWOULDBLOCK where they would (a cold record
 * to read, drop_lock held or wanted by a drop), having changed nothing
 * the request's own retry on another thread does not redo. */
void tiers_forbid_disk(bool forbid);

/* Store tokens [tok, tok + n) of key's chunk: hot_write under drop_lock.
 * A chunk this call creates first gets the tokens of key's cold record, if
 * the cold tier holds one, before any other thread can see the chunk (the
 * fill hook): a write-back of it must never hold fewer tokens than the
 * record it replaces. That costs one record read per chunk that left RAM
 * and is written again (an append to a demoted context), and none when the
 * cold tier does not hold the key (an index lookup, no I/O). A chunk
 * created from a record keeps the record's outliers. Returns 0, -EIO when
 * the cold record could not be read (nothing is stored then: a write-back
 * would replace the record with the new tokens alone), or hot_write's
 * errors (fill's among them). */
int tiers_write(struct kvt_tiers *t, const struct kvt_chunk_key *key,
                const struct kvt_chunk_shape *shape, uint32_t tok, uint32_t n,
                hot_rows_fn fill, void *arg);
/* Make a whole-chunk stage (hot_stage_alloc) its key's chunk:
 * hot_stage_commit under drop_lock, so a drop comes wholly before the
 * commit (which is then a store after it) or after. Returns as
 * hot_stage_commit does (the stage is still the caller's on error). */
int tiers_stage_commit(struct kvt_tiers *t, struct kvt_chunk *stage);

/* Bring the cold copy of key into the hot tier if the chunk is not there
 * (hot_load; a chunk in RAM already holds its record's tokens). The chunk
 * takes the record's outliers. Returns 0, or -ENOENT when there is no
 * usable cold copy (absent, corrupt, unreadable, other shape). */
int tiers_promote(struct kvt_tiers *t, const struct kvt_chunk_key *key,
                  const struct kvt_chunk_shape *shape);
/* Promote n chunks of one shape at once, on the reader threads, so the disk
 * sees many reads in flight. Chunks without a usable cold copy are skipped;
 * callers read the hot tier afterwards and treat what is missing as absent.
 * Returns 0, or -EWOULDBLOCK on a thread under tiers_forbid_disk when any
 * of them has a cold copy (nothing is read then). */
int tiers_promote_many(struct kvt_tiers *t, const struct kvt_chunk_key *const *keys,
                       size_t n, const struct kvt_chunk_shape *shape);
/* Leading tokens of key's cold copy without I/O (0 if none). */
uint32_t tiers_cold_leading(struct kvt_tiers *t, const struct kvt_chunk_key *key);
/* Drop an object from both tiers: the hot chunks first (hot_drop_object:
 * when it returns, no write-back of them is running or can start), then
 * the cold records and a tombstone, which the cold tier orders after
 * every record appended before it. Under drop_lock, so no promotion or
 * store can merge the old record into a new hot chunk meanwhile. After
 * the return no fetch sees the old data while the daemon runs; after a
 * restart too once tiers_drop_sync has returned 0, which is needed when
 * tiers_drop_needs_sync says so. Returns the hot chunks dropped;
 * *cold_records (may be NULL) gets the records. */
uint64_t tiers_drop_object(struct kvt_tiers *t, uint64_t ns_id, uint64_t hi, uint64_t lo,
                           uint64_t *cold_records);
/* The same for a namespace (0 = every namespace); progress as in
 * hot_drop_namespace (may be NULL). */
uint64_t tiers_drop_namespace(struct kvt_tiers *t, uint64_t ns_id, hot_progress_fn progress,
                              void *arg, uint64_t *cold_records);

/* Whether a drop that dropped cold_records cold records (or namespace
 * records) must wait for tiers_drop_sync before it is durable: when it
 * dropped any, or an earlier tombstone's write failed and is still to be
 * written. Without I/O, for the loop thread. */
bool tiers_drop_needs_sync(struct kvt_tiers *t, uint64_t cold_records);
/* Make the tombstones of every drop before the call durable (written and
 * fsynced: cold_sync_tombstones). Waits on the disk: never on the loop
 * thread. Returns 0 (also without a cold tier) or -EIO, logged: the drops
 * hold while the daemon runs, but the dropped data may return after a
 * restart until a later write of the tombstones succeeds. */
int tiers_drop_sync(struct kvt_tiers *t);

/* ---- the remote tier (tiers_remote.c) ------------------------------------
 * Token-addressed chunks only: their keys are the same on every host. */

struct kvt_ns;

/* Open the remote tier when cfg->remote is set: read the key file, name the
 * sharing domains, set the pool client up (no connection yet). Warns when
 * records will not be sealed. Returns 0 or -errno (logged). */
int tiers_remote_open(struct kvt_tiers *t, const struct kvt_config *cfg);
/* Finish the queued writes for up to remote-timeout-ms per server, drop
 * the rest, and close. Must run before the hot and cold tiers close: the
 * writers read them. */
void tiers_remote_close(struct kvt_tiers *t);
/* Whether chunks of ns go to the pool (a remote tier, and ns's sharing
 * domain has a pool name). */
bool tiers_remote_serves(struct kvt_tiers *t, const struct kvt_ns *ns);
/* Queue write-throughs of n token-addressed chunks of ns (repeats of the
 * previous key are skipped); returns at once. */
void tiers_remote_write(struct kvt_tiers *t, const struct kvt_ns *ns,
                        const struct kvt_chunk_key *const *keys, size_t n);
/* Ask the pool for n chunks of ns missing from RAM and SSD and put those
 * found into the hot tier (dirty, so they reach the cold tier too).
 * Bounded by remote-timeout-ms per server. Returns how many came in. */
size_t tiers_remote_fetch(struct kvt_tiers *t, const struct kvt_ns *ns,
                          const struct kvt_chunk_key *const *keys, size_t n);
/* Wait until every write-through queued before the call was tried. */
void tiers_remote_sync(struct kvt_tiers *t);

#endif
