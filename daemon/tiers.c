/* tiers.c - demotes cold hot-chunks to SSD in the background, promotes on fetch. */
#include "daemon/tiers.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "daemon/lock_owner.h"
#include "daemon/log.h"
#include "proto/proto.h"

_Static_assert(KVT_RAW_OUTLIERS_MAX == KVT_CHUNK_MAX_OUTLIERS,
               "a raw fetch can ask for every outlier a chunk may hold");

#define DEMOTER_PERIOD_NS (5 * 1000 * 1000)   /* watermark check interval */
#define FLUSH_BATCH 1024
/* Reader threads for promotion: enough reads in flight to keep an SSD
 * busy (the disk's own limit is measured at queue depth 32 in make bench). */
#define PROMOTE_THREADS 16

/* Set on the event loop's thread (tiers_forbid_disk): there, what would
 * read a cold record or wait for drop_lock answers -EWOULDBLOCK instead,
 * and the caller hands the request to a worker. Per thread, not per tier:
 * it says what the thread may do, whatever tiers it calls. */
static _Thread_local bool disk_forbidden;

void tiers_forbid_disk(bool forbid)
{
    disk_forbidden = forbid;
}

/* drop_lock for reading, or -EWOULDBLOCK on a thread that must not wait:
 * a drop holds it (or waits for it: writers are preferred) while reads of
 * cold records under it are in flight. */
static int drop_lock_read(struct kvt_tiers *t)
{
    if (!disk_forbidden) {
        pthread_rwlock_rdlock(&t->drop_lock);
        return 0;
    }
    return pthread_rwlock_tryrdlock(&t->drop_lock) ? -EWOULDBLOCK : 0;
}

static void cold_log(void *arg, int level, const char *msg)
{
    (void)arg;
    log_msg(level, "cold tier: %s", msg);
}

/* A context's first chunk of layer 0 takes its name along, so a restarted
 * daemon can list it (cold_put_named); other chunks go as they are. */
static int put_image(void *arg, const struct kvt_chunk_image *img)
{
    struct kvt_tiers *t = arg;
    struct kvt_cold_name name;

    if (img->key.layer == 0 && img->key.chunk_idx == 0 && t->name_of &&
        t->name_of(t->name_arg, &img->key, &name) == 0)
        return cold_put_named(t->cold, img, &name);
    return cold_put(t->cold, img);
}

/* Write a chunk's image to the cold tier if it changed since it was last
 * written (hot_write_back: present rows only, under the chunk's read lock,
 * skipped for a dropped chunk). A failed write leaves it dirty. */
static int write_back(struct kvt_tiers *t, struct kvt_chunk *c)
{
    int rc = hot_write_back(t->hot, c, put_image, t);

    if (rc)
        atomic_fetch_add(&t->demote_errors, 1);
    return rc;
}

/* The cold tier's unwritten hook: records whose write failed left its
 * index, so their chunks still in RAM become dirty again and the next
 * flush or demotion writes them (or fails again). The lookup also keeps a
 * chunk whose evict hook is running in RAM (hot.h: a lookup abandons the
 * eviction), which is what happens when the write failed inside its own
 * demotion's cold_put. A chunk no longer in RAM had its only copy in the
 * failed write: lost. Runs on the cold tier's threads or inside cold_put;
 * takes only the hot tier's mutex, never a chunk lock (hot_redirty: a
 * write-back holds one across cold_put). */
static uint64_t take_back_unwritten(void *arg, const struct kvt_chunk_key *keys, size_t n)
{
    struct kvt_tiers *t = arg;
    uint64_t lost = 0;

    for (size_t i = 0; i < n; i++)
        if (hot_redirty(t->hot, &keys[i]) != 0)
            lost++;
    return lost;
}

/* The hot tier's evict hook: runs on the evicting thread, without the tier
 * mutex. cold_put only copies into a write buffer, so this blocks on the
 * disk only when every write buffer is in flight (back-pressure). */
static void demote(void *arg, struct kvt_chunk *c)
{
    struct kvt_tiers *t = arg;

    if (write_back(t, c) == 0)
        atomic_fetch_add(&t->demotions, 1);
}

/* The hot tier's fill hook: a chunk it creates gets the tokens of key's
 * cold record (hot_fill_fn), before anyone can see the chunk. The chunk is
 * new and write-locked, and the caller holds drop_lock for reading, so a
 * drop cannot come between the record read and the chunk holding its
 * tokens. Returns 0 (no record, a record merged, or a corrupt record or
 * one of another shape: a miss, as for a fetch), -EIO if the record could
 * not be read or -ENOMEM: then the chunk lacks the record's tokens and is
 * thrown away (a write-back would replace the record with the new tokens
 * alone). A record whose shape differs only in outliers is -ESTALE with
 * *other = its shape: the chunk is created again with the record's value
 * and this runs again (one more record read, once per chunk that left RAM
 * under another outliers setting). */
static int fill_from_cold(void *arg, const struct kvt_chunk_key *key,
                          const struct kvt_chunk_shape *shape, void *data,
                          uint64_t *present, struct kvt_chunk_shape *other)
{
    struct kvt_tiers *t = arg;
    uint64_t rec_present[KVT_CHUNK_MAX_TOKENS / 64];
    struct kvt_chunk_shape got, roomy = *shape;
    size_t bytes;
    void *rec;
    int rc;

    if (cold_lookup(t->cold, key, NULL) != 0)
        return 0;                    /* not on SSD: no I/O */
    if (disk_forbidden)
        return -EWOULDBLOCK;         /* the chunk is thrown away; a worker redoes it */
    /* Room for the most outliers this geometry can have, so a record
     * written under another setting still reads. */
    roomy.outliers = chunk_outliers_for(shape, KVT_CHUNK_MAX_OUTLIERS);
    bytes = chunk_data_bytes(&roomy);
    rec = malloc(bytes);
    if (!rec)
        return -ENOMEM;
    rc = cold_get(t->cold, key, &got, rec_present, rec, bytes);
    if (rc == 0 && chunk_shape_compatible(&got, shape)) {
        if (got.outliers != shape->outliers) {
            *other = got;
            rc = -ESTALE;
        } else {
            struct kvt_chunk_image img = { .key = *key, .shape = got,
                                           .present = rec_present, .data = rec };
            (void)chunk_merge_image(shape, data, present, &img);
            atomic_fetch_add(&t->promotions, 1);
        }
    } else if (rc == -EIO || rc == -ENOMEM) {
        log_debug("cold record of a hot chunk unreadable: %s", strerror(-rc));
    } else {
        if (rc)
            log_debug("cold record of a hot chunk ignored: %s", strerror(-rc));
        rc = 0;                      /* absent, corrupt, other shape: a miss */
    }
    free(rec);
    return rc;
}

static void *demoter_main(void *arg)
{
    struct kvt_tiers *t = arg;
    struct kvt_hot_stats st;

    pthread_mutex_lock(&t->lock);
    while (!t->stopping) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += DEMOTER_PERIOD_NS;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&t->wake, &t->lock, &ts);
        if (t->stopping)
            break;
        bool enforce = t->enforce_quota;
        t->enforce_quota = false;
        pthread_mutex_unlock(&t->lock);
        if (enforce)
            hot_enforce_domain_quota(t->hot);
        hot_stats(t->hot, &st);
        if (st.used_bytes > t->high_bytes)
            hot_evict_to(t->hot, t->low_bytes);
        pthread_mutex_lock(&t->lock);
    }
    pthread_mutex_unlock(&t->lock);
    return NULL;
}

void tiers_set_watermarks(struct kvt_tiers *t, uint64_t hot_bytes,
                          uint32_t high_pct, uint32_t low_pct)
{
    t->high_bytes = hot_bytes / 100 * high_pct;
    t->low_bytes = hot_bytes / 100 * (low_pct < high_pct ? low_pct : high_pct);
}

void tiers_set_quotas(struct kvt_tiers *t, uint64_t hot_quota, uint64_t cold_quota)
{
    hot_set_domain_quota(t->hot, hot_quota);
    if (t->cold)
        cold_set_domain_quota(t->cold, cold_quota);   /* index only: quick */
    /* A lowered hot quota holds at once. With a cold tier its evictions
     * demote, which writes to disk: the demoter does that, not the caller
     * (the event loop, on SIGHUP or config set). */
    if (!t->demoter_running) {
        hot_enforce_domain_quota(t->hot);
        return;
    }
    pthread_mutex_lock(&t->lock);
    t->enforce_quota = true;
    pthread_cond_signal(&t->wake);
    pthread_mutex_unlock(&t->lock);
}

int tiers_open(struct kvt_tiers *t, struct kvt_hot *hot, const struct kvt_config *cfg,
               int (*name_of)(void *arg, const struct kvt_chunk_key *key,
                              struct kvt_cold_name *out),
               void *name_arg)
{
    int rc;

    pthread_rwlockattr_t attr;

    memset(t, 0, sizeof(*t));
    t->hot = hot;
    t->name_of = name_of;
    t->name_arg = name_arg;
    pthread_rwlockattr_init(&attr);
    pthread_rwlockattr_setkind_np(&attr, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    pthread_rwlock_init(&t->drop_lock, &attr);
    pthread_rwlockattr_destroy(&attr);
    pthread_mutex_init(&t->lock, NULL);
    pthread_cond_init(&t->wake, NULL);
    pthread_mutex_init(&t->flush_lock, NULL);
    tiers_set_watermarks(t, cfg->hot_bytes, cfg->hot_high_pct, cfg->hot_low_pct);
    hot_set_domain_quota(hot, cfg->hot_quota);
    if (cfg->cold_bytes == 0)
        return 0;

    struct kvt_cold_config cc = { .path = cfg->cold_path, .bytes = cfg->cold_bytes,
                                  .region_bytes = cfg->cold_region_bytes,
                                  .force_pread = cfg->cold_pread,
                                  .log = cold_log, .log_arg = t,
                                  .unwritten = take_back_unwritten,
                                  .unwritten_arg = t };
    rc = cold_open(&cc, &t->cold);
    if (rc == -EBUSY && lock_owner(cfg->cold_path)) {
        log_err("cannot open the cold tier %s: another kvtierd (pid %d) holds it; give "
                "this one its own cold-path", cfg->cold_path, (int)lock_owner(cfg->cold_path));
        return rc;
    }
    if (rc) {
        log_err("cannot open the cold tier %s: %s", cfg->cold_path, strerror(-rc));
        return rc;
    }
    struct kvt_cold_stats cs;
    cold_stats(t->cold, &cs);
    log_info("cold tier %s: %llu MiB, %llu records recovered, %s", cfg->cold_path,
             (unsigned long long)(cs.capacity_bytes >> 20),
             (unsigned long long)cs.records_recovered,
             cs.uring ? "io_uring" : "pread/pwrite");
    cold_set_domain_quota(t->cold, cfg->cold_quota);
    hot_set_evict_hook(hot, demote, t);
    hot_set_fill_hook(hot, fill_from_cold, t);
    /* promote-priority idle: a cold read's decompression yields the CPU
     * to the event loop and the other clients' decode steps (kvtierd(8)
     * says what it risks on a host kept busy). */
    rc = workers_start_idle(PROMOTE_THREADS, cfg->promote_idle, &t->readers);
    if (rc)
        return rc;
    rc = -pthread_create(&t->demoter, NULL, demoter_main, t);
    if (rc)
        return rc;
    t->demoter_running = true;
    return 0;
}

void tiers_close(struct kvt_tiers *t)
{
    tiers_remote_close(t);            /* its writers read both tiers */
    if (t->demoter_running) {
        pthread_mutex_lock(&t->lock);
        t->stopping = true;
        pthread_cond_signal(&t->wake);
        pthread_mutex_unlock(&t->lock);
        pthread_join(t->demoter, NULL);
        t->demoter_running = false;
    }
    workers_stop(t->readers);
    t->readers = NULL;
    if (t->cold) {
        if (t->hot) {
            hot_set_evict_hook(t->hot, NULL, NULL);
            hot_set_fill_hook(t->hot, NULL, NULL);
        }
        cold_close(t->cold);
        t->cold = NULL;
    }
}

uint64_t tiers_records_lost(struct kvt_tiers *t)
{
    struct kvt_cold_stats cs;

    if (!t->cold)
        return 0;
    cold_stats(t->cold, &cs);
    return cs.records_lost;
}

int tiers_flush(struct kvt_tiers *t, uint64_t *lost_seen, tiers_progress_fn progress,
                void *arg)
{
    struct kvt_chunk **batch;
    int rc = 0;
    size_t n, written = 0, total;
    uint64_t lost;

    if (!t->cold)
        return -EOPNOTSUPP;
    batch = malloc(FLUSH_BATCH * sizeof(*batch));
    if (!batch)
        return -ENOMEM;
    pthread_mutex_lock(&t->flush_lock);
    total = hot_count_dirty(t->hot);
    if (progress)
        progress(arg, 0, total);
    /* Each pass cleans what it pins, so the loop ends even while stores
     * go on: a chunk made dirty again after its pass belongs to a later
     * flush. The bound stops a writer from keeping us here forever. */
    for (int pass = 0; pass < 1 << 20; pass++) {
        /* A quarter of the chunks at most: what a flush pins cannot be
         * evicted, and a store that needs room while every chunk is dirty
         * would find none (-ENOSPC). */
        struct kvt_hot_stats hs;
        hot_stats(t->hot, &hs);
        size_t cap = hs.chunks / 4 < FLUSH_BATCH ? (size_t)(hs.chunks / 4) : FLUSH_BATCH;
        n = hot_pin_dirty(t->hot, batch, cap ? cap : 1);
        if (n == 0)
            break;
        for (size_t i = 0; i < n; i++) {
            int r = write_back(t, batch[i]);
            if (r && !rc)
                rc = r;
            hot_put(t->hot, batch[i]);
        }
        written += n;
        if (progress)
            progress(arg, written, total);
        if (rc)
            break;
    }
    if (!rc)
        rc = cold_sync(t->cold);
    else
        (void)cold_sync(t->cold);     /* still hear of every failed write */
    /* cold_sync returns once the unwritten hook has heard of every failed
     * write, so the count covers everything stored before this flush. */
    lost = tiers_records_lost(t);
    if (lost > *lost_seen) {
        log_err("flush: %llu chunk records were lost to cold tier write errors since "
                "this caller's previous flush; reporting failure",
                (unsigned long long)(lost - *lost_seen));
        if (!rc)
            rc = -EIO;
    }
    *lost_seen = lost;
    pthread_mutex_unlock(&t->flush_lock);
    free(batch);
    if (rc)
        log_warn("flush: %zu chunks written, not all on disk: %s", written, strerror(-rc));
    else
        log_debug("flush: %zu chunks written, synced", written);
    return rc ? -EIO : 0;
}

int tiers_write(struct kvt_tiers *t, const struct kvt_chunk_key *key,
                const struct kvt_chunk_shape *shape, uint32_t tok, uint32_t n,
                hot_rows_fn fill, void *arg)
{
    int rc;

    if (t->cold && (rc = drop_lock_read(t)))
        return rc;
    rc = hot_write(t->hot, key, shape, tok, n, fill, arg);
    if (t->cold)
        pthread_rwlock_unlock(&t->drop_lock);
    return rc;
}

int tiers_stage_commit(struct kvt_tiers *t, struct kvt_chunk *stage)
{
    int rc;

    /* No cold record is merged (every token is new), but a drop must still
     * come wholly before or after the chunk's linking: a write-back of it
     * between the drop's hot phase and its tombstone would be lost to it. */
    if (t->cold && (rc = drop_lock_read(t)))
        return rc;
    rc = hot_stage_commit(t->hot, stage);
    if (t->cold)
        pthread_rwlock_unlock(&t->drop_lock);
    return rc;
}

int tiers_promote(struct kvt_tiers *t, const struct kvt_chunk_key *key,
                  const struct kvt_chunk_shape *shape)
{
    int rc;

    /* A plain miss costs no I/O and leaves no empty chunk behind. */
    if (!t->cold || cold_lookup(t->cold, key, NULL) != 0)
        return -ENOENT;
    /* The record is read by the fill hook under the new chunk's write
     * lock: it is filled before anyone can store into it (and have a
     * write-back replace the record with that store's tokens alone). A
     * chunk already in RAM holds the record's tokens already. */
    pthread_rwlock_rdlock(&t->drop_lock);
    rc = hot_load(t->hot, key, shape);
    pthread_rwlock_unlock(&t->drop_lock);
    if (rc && rc != -ENOENT)
        log_debug("promotion failed: %s", strerror(-rc));
    return rc ? -ENOENT : 0;         /* corrupt or unreadable: a miss, never bad data */
}

/* Promotions in flight per tiers_promote_many call: the readers' queue
 * kept full, and a bound on the stages one call holds in the hot tier, at
 * most 1/PROMOTE_WINDOW_SHARE of its budget or of a domain's quota, and at
 * least one (a reader starved of CPU keeps its stage charged meanwhile). */
#define PROMOTE_WINDOW (2 * PROMOTE_THREADS)
#define PROMOTE_WINDOW_SHARE 16

struct promote_batch {
    pthread_mutex_t mu;
    pthread_cond_t done;
};

/* One chunk of tiers_promote_many: its record read into a stage by a
 * reader, then linked by the asker. */
struct promote_job {
    struct work_item item;            /* first: the pool hands us this */
    struct kvt_tiers *t;
    struct promote_batch *batch;
    struct kvt_chunk_key key;
    struct kvt_chunk *stage;
    size_t cap;                       /* the stage's data bytes */
    struct kvt_chunk_shape shape;     /* the record's */
    uint64_t present[KVT_CHUNK_MAX_TOKENS / 64];
    uint64_t seq;                     /* the record's */
    int rc;                           /* the read's */
    bool done;
};

/* On a reader thread (SCHED_IDLE under promote-priority idle): the read,
 * its checks and the decompression, straight into a stage that nobody
 * else can reach. What it holds that others wait for: the cold index's
 * mutex, for the lookup and for copying the part of the record still in a
 * write buffer, and the io_uring submission lock, briefly; never
 * drop_lock, a chunk or the hot tier's mutex. */
static void promote_read(struct work_item *item)
{
    struct promote_job *j = (struct promote_job *)item;
    void *data = hot_stage_data(j->stage);

    j->rc = data ? cold_get_seq(j->t->cold, &j->key, &j->shape, j->present, data, j->cap,
                                &j->seq)
                 : -ENOMEM;
    pthread_mutex_lock(&j->batch->mu);
    j->done = true;
    pthread_cond_signal(&j->batch->done);
    pthread_mutex_unlock(&j->batch->mu);
}

/* On the asker, after the read: link the stage if the record it holds is
 * still key's and RAM got no chunk of key meanwhile (hot.h, "promotions
 * read aside"), under drop_lock so that no drop comes between that check
 * and the link. A record of other outliers, or replaced while read, is
 * promoted again the plain way (tiers_promote, at this thread's
 * priority); a failed read is a miss. */
static void promote_link(struct kvt_tiers *t, struct promote_job *j,
                         const struct kvt_chunk_shape *shape)
{
    uint64_t stamp, seq;
    bool again = j->rc == -ENOSPC;   /* a record of more outliers */

    if (j->rc == 0 && chunk_shape_compatible(&j->shape, shape) &&
        j->shape.outliers == shape->outliers) {
        pthread_rwlock_rdlock(&t->drop_lock);
        if (hot_absent_stamp(t->hot, &j->key, &stamp) != 0) {
            /* in RAM already: it holds the record's tokens */
        } else if (chunk_bits_none(j->present, shape->tokens)) {
            /* nothing to bring in */
        } else if (cold_record_seq(t->cold, &j->key, &seq) == 0 && seq == j->seq &&
                   hot_link_promoted(t->hot, j->stage, j->present, stamp) == 0) {
            j->stage = NULL;
            atomic_fetch_add(&t->promotions, 1);
        } else {
            again = true;
        }
        pthread_rwlock_unlock(&t->drop_lock);
    } else if (j->rc == 0) {
        again = true;
    }
    hot_stage_free(t->hot, j->stage);
    j->stage = NULL;
    if (again)
        (void)tiers_promote(t, &j->key, shape);
}

int tiers_promote_many(struct kvt_tiers *t, const struct kvt_chunk_key *const *keys,
                       size_t n, const struct kvt_chunk_shape *shape)
{
    struct promote_batch batch;
    struct promote_job *jobs;
    struct kvt_hot_stats hs;
    uint64_t room;
    size_t queued = 0, window;

    if (!t->cold || n == 0)
        return 0;
    /* Plain misses (no cold copy) cost no I/O, and answer here. */
    if (disk_forbidden) {
        for (size_t i = 0; i < n; i++)
            if (cold_lookup(t->cold, keys[i], NULL) == 0)
                return -EWOULDBLOCK;
        return 0;
    }
    jobs = calloc(n, sizeof(*jobs));
    if (!jobs || n == 1) {            /* one read, or no memory: inline */
        for (size_t i = 0; i < n; i++)
            (void)tiers_promote(t, keys[i], shape);
        free(jobs);
        return 0;
    }
    hot_stats(t->hot, &hs);
    room = hs.domain_quota_bytes && hs.domain_quota_bytes < hs.budget_bytes
         ? hs.domain_quota_bytes : hs.budget_bytes;
    window = room / PROMOTE_WINDOW_SHARE / hot_chunk_bytes(shape);
    window = window < 1 ? 1 : window > PROMOTE_WINDOW ? PROMOTE_WINDOW : window;
    pthread_mutex_init(&batch.mu, NULL);
    pthread_cond_init(&batch.done, NULL);
    /* Reads go out up to a window ahead, each into a stage made here (the
     * evictions for its room are done at this thread's priority), and are
     * linked here in order as they come back. */
    for (size_t i = 0; i < n; i++) {
        for (; queued < n && queued < i + window; queued++) {
            struct promote_job *j = &jobs[queued];
            *j = (struct promote_job){ .item.fn = promote_read, .t = t, .batch = &batch,
                                       .key = *keys[queued], .cap = chunk_data_bytes(shape),
                                       .rc = -ENOENT, .done = true };
            /* No cold copy: no read. No stage (the budget or the quota
             * is held by pinned chunks): the plain way, below. */
            if (cold_lookup(t->cold, &j->key, NULL) != 0)
                continue;
            j->rc = hot_stage_alloc_empty(t->hot, &j->key, shape, &j->stage);
            if (j->rc)
                continue;
            j->done = false;
            workers_submit(t->readers, &j->item);
        }
        pthread_mutex_lock(&batch.mu);
        while (!jobs[i].done)
            pthread_cond_wait(&batch.done, &batch.mu);
        pthread_mutex_unlock(&batch.mu);
        if (jobs[i].stage)
            promote_link(t, &jobs[i], shape);
        else if (jobs[i].rc != -ENOENT)
            (void)tiers_promote(t, keys[i], shape);
    }
    pthread_mutex_destroy(&batch.mu);
    pthread_cond_destroy(&batch.done);
    free(jobs);
    return 0;
}

uint32_t tiers_cold_leading(struct kvt_tiers *t, const struct kvt_chunk_key *key)
{
    uint32_t lead = 0;

    if (t->cold && cold_lookup(t->cold, key, &lead) != 0)
        lead = 0;
    return lead;
}

uint64_t tiers_drop_object(struct kvt_tiers *t, uint64_t ns_id, uint64_t hi, uint64_t lo,
                           uint64_t *cold_records)
{
    uint64_t hot_chunks, cold = 0;

    if (t->cold)
        pthread_rwlock_wrlock(&t->drop_lock);
    /* Hot first: once hot_drop_object returns no write-back of the
     * object's chunks runs or can start, so the tombstone logged next
     * comes after every record of them in the log. */
    hot_chunks = hot_drop_object(t->hot, ns_id, hi, lo);
    if (t->cold) {
        cold = cold_drop_object(t->cold, ns_id, hi, lo);
        pthread_rwlock_unlock(&t->drop_lock);
    }
    if (cold_records)
        *cold_records = cold;
    return hot_chunks;
}

uint64_t tiers_drop_namespace(struct kvt_tiers *t, uint64_t ns_id, hot_progress_fn progress,
                              void *arg, uint64_t *cold_records)
{
    uint64_t hot_chunks, cold = 0;

    if (t->cold)
        pthread_rwlock_wrlock(&t->drop_lock);
    hot_chunks = hot_drop_namespace(t->hot, ns_id, progress, arg);   /* as above */
    if (t->cold) {
        cold = cold_drop_namespace(t->cold, ns_id);
        pthread_rwlock_unlock(&t->drop_lock);
    }
    if (cold_records)
        *cold_records = cold;
    return hot_chunks;
}

bool tiers_drop_needs_sync(struct kvt_tiers *t, uint64_t cold_records)
{
    return t->cold && (cold_records > 0 || cold_tombstones_behind(t->cold));
}

int tiers_drop_sync(struct kvt_tiers *t)
{
    int rc;

    if (!t->cold)
        return 0;
    rc = cold_sync_tombstones(t->cold);
    if (rc)
        log_err("drop: the tombstone is not on disk (%s); the dropped data may return "
                "after a restart until a later write of it succeeds", strerror(-rc));
    return rc;
}
