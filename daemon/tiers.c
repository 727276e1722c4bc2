/* tiers.c - demotes cold hot-chunks to SSD in the background, promotes on fetch. */
#include "daemon/tiers.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "daemon/log.h"

#define DEMOTER_PERIOD_NS (5 * 1000 * 1000)   /* watermark check interval */
#define FLUSH_BATCH 1024
/* Reader threads for promotion: enough reads in flight to keep an SSD
 * busy (the disk's own limit is measured at queue depth 32 in make bench). */
#define PROMOTE_THREADS 16

static void cold_log(void *arg, int level, const char *msg)
{
    (void)arg;
    log_msg(level, "cold tier: %s", msg);
}

/* *out = a copy of c's block with only its present tokens' rows, the rest
 * zero, or NULL when every token is present. Blocks are recycled
 * (cache/blocks.c), so where a chunk has no token its block may still hold
 * an earlier chunk's rows, perhaps another domain's: those must not reach
 * the disk. Only partly filled chunks (usually a context's last) pay for
 * the copy. Read lock held. Returns 0 or -ENOMEM. */
static int present_rows_copy(const struct kvt_chunk *c, void **out)
{
    const struct kvt_chunk_shape *s = &c->shape;

    *out = NULL;
    if (chunk_has_range(c, 0, s->tokens))
        return 0;
    *out = calloc(1, chunk_data_bytes(s));
    if (!*out)
        return -ENOMEM;
    for (uint32_t tok = 0; tok < s->tokens; tok++)
        if (chunk_has(c, tok))
            chunk_copy_token(s, *out, c->data, tok);
    return 0;
}

/* Write a chunk's image to the cold tier if it changed since it was last
 * written. The read lock keeps stores out between the dirty test and the
 * copy, so a store after it marks the chunk dirty again. */
static int write_back(struct kvt_tiers *t, struct kvt_chunk *c)
{
    int rc = 0;

    pthread_rwlock_rdlock(&c->lock);
    /* A dropped chunk is never written: its drop marks it gone under the
     * write lock, so a write-back either finished before (and the drop's
     * tombstone follows its record) or sees the mark. */
    if (!c->gone && hot_take_dirty(t->hot, c)) {
        void *copy;
        rc = present_rows_copy(c, &copy);
        if (rc == 0) {
            struct kvt_chunk_image img = { .key = c->key, .shape = c->shape,
                                           .present = c->present,
                                           .data = copy ? copy : c->data };
            rc = cold_put(t->cold, &img);
            free(copy);
        }
        if (rc) {
            hot_mark_dirty(t->hot, c);       /* not written: try again later */
            atomic_fetch_add(&t->demote_errors, 1);
        }
    }
    pthread_rwlock_unlock(&c->lock);
    return rc;
}

/* The cold tier's unwritten hook: records whose write failed left its
 * index, so their chunks still in RAM become dirty again and the next
 * flush or demotion writes them (or fails again). The lookup also keeps a
 * chunk whose evict hook is running in RAM (hot.h: a lookup abandons the
 * eviction), which is what happens when the write failed inside its own
 * demotion's cold_put. A chunk no longer in RAM had its only copy in the
 * failed write: lost. Runs on the cold tier's threads or inside cold_put;
 * takes only the hot tier's mutex, never a chunk lock (write_back holds
 * one across cold_put). */
static uint64_t take_back_unwritten(void *arg, const struct kvt_chunk_key *keys, size_t n)
{
    struct kvt_tiers *t = arg;
    uint64_t lost = 0;

    for (size_t i = 0; i < n; i++) {
        struct kvt_chunk *c;
        if (hot_get(t->hot, &keys[i], &c) != 0) {
            lost++;
            continue;
        }
        hot_mark_dirty(t->hot, c);
        hot_put(t->hot, c);
    }
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

int tiers_open(struct kvt_tiers *t, struct kvt_hot *hot, const struct kvt_config *cfg)
{
    int rc;

    pthread_rwlockattr_t attr;

    memset(t, 0, sizeof(*t));
    t->hot = hot;
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
    rc = workers_start(PROMOTE_THREADS, &t->readers);
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
        if (t->hot)
            hot_set_evict_hook(t->hot, NULL, NULL);
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
        n = hot_pin_dirty(t->hot, batch, FLUSH_BATCH);
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

/* Fill the tokens c lacks from its key's cold record (hot tokens are
 * newer); c is write-locked, so nobody sees it half merged. Returns 0
 * (*hit: a record was merged), -EIO if the record could not be read or
 * -ENOMEM: then c lacks the record's tokens and must not be written back
 * as it is. A corrupt record (dropped by the cold tier) or one of another
 * shape is a miss, as for a fetch. */
static int merge_cold_locked(struct kvt_tiers *t, struct kvt_chunk *c, bool *hit)
{
    uint64_t present[KVT_CHUNK_MAX_TOKENS / 64];
    const struct kvt_chunk_shape *shape = &c->shape;
    struct kvt_chunk_shape got;
    size_t bytes = chunk_data_bytes(shape);
    void *data;
    int rc;

    *hit = false;
    if (cold_lookup(t->cold, &c->key, NULL) != 0)
        return 0;                    /* not on SSD: no I/O */
    data = malloc(bytes);
    if (!data)
        return -ENOMEM;
    rc = cold_get(t->cold, &c->key, &got, present, data, bytes);
    if (rc == 0 && memcmp(&got, shape, sizeof(got)) == 0) {
        for (uint32_t tok = 0; tok < shape->tokens; tok++) {
            bool cold_has = (present[tok / 64] >> (tok % 64)) & 1;
            if (cold_has && !chunk_has(c, tok)) {
                chunk_copy_token(shape, c->data, data, tok);
                chunk_set(c, tok);
            }
        }
        *hit = true;
    } else if (rc == -EIO || rc == -ENOMEM) {
        log_debug("cold record of a hot chunk unreadable: %s", strerror(-rc));
    } else {
        if (rc)
            log_debug("cold record of a hot chunk ignored: %s", strerror(-rc));
        rc = 0;                      /* absent, corrupt, other shape: a miss */
    }
    free(data);
    return rc;
}

/* How often a store looks again when the chunk it found was dropped (or
 * thrown away by a creator that could not fill it) before it got the lock. */
#define GONE_RETRIES 8

int tiers_get_or_create(struct kvt_tiers *t, const struct kvt_chunk_key *key,
                        const struct kvt_chunk_shape *shape, struct kvt_chunk **out)
{
    for (int attempt = 0;; attempt++) {
        struct kvt_chunk *c;
        bool created, hit;
        int rc;

        if (t->cold)
            pthread_rwlock_rdlock(&t->drop_lock);
        rc = hot_get_or_create_wrlocked(t->hot, key, shape, &c, &created);
        if (rc) {
            if (t->cold)
                pthread_rwlock_unlock(&t->drop_lock);
            return rc;
        }
        /* Created: nobody else has seen it yet, so the cold tokens are
         * in before any store's rows and any write-back. */
        if (created && t->cold) {
            rc = merge_cold_locked(t, c, &hit);
            if (rc)
                hot_discard(t->hot, c);
            else if (hit)
                atomic_fetch_add(&t->promotions, 1);
        }
        if (t->cold)
            pthread_rwlock_unlock(&t->drop_lock);
        if (rc == 0 && !c->gone) {
            *out = c;
            return 0;
        }
        pthread_rwlock_unlock(&c->lock);
        hot_put(t->hot, c);
        if (rc)
            return rc;
        if (attempt == GONE_RETRIES)
            return -EAGAIN;
    }
}

int tiers_promote(struct kvt_tiers *t, const struct kvt_chunk_key *key,
                  const struct kvt_chunk_shape *shape)
{
    struct kvt_chunk *c;
    bool created, hit = false;
    int rc;

    /* A plain miss costs no I/O and leaves no empty chunk behind. */
    if (!t->cold || cold_lookup(t->cold, key, NULL) != 0)
        return -ENOENT;
    pthread_rwlock_rdlock(&t->drop_lock);
    rc = hot_get_or_create_wrlocked(t->hot, key, shape, &c, &created);
    if (rc == 0) {
        /* The record is read under the chunk's write lock: a chunk created
         * here is filled before anyone can store into it (and have a
         * write-back replace the record with that store's tokens alone). */
        if (!c->gone)
            rc = merge_cold_locked(t, c, &hit);
        if (created && (rc || !hit))
            hot_discard(t->hot, c);      /* no empty chunk left behind */
        pthread_rwlock_unlock(&c->lock);
        hot_put(t->hot, c);
    }
    pthread_rwlock_unlock(&t->drop_lock);
    if (rc)
        log_debug("promotion failed: %s", strerror(-rc));
    if (rc || !hit)
        return -ENOENT;              /* corrupt or unreadable: a miss, never bad data */
    atomic_fetch_add(&t->promotions, 1);
    return 0;
}

struct promote_batch {
    pthread_mutex_t mu;
    pthread_cond_t done;
    size_t left;
};

struct promote_job {
    struct work_item item;            /* first: the pool hands us this */
    struct kvt_tiers *t;
    const struct kvt_chunk_key *key;
    const struct kvt_chunk_shape *shape;
    struct promote_batch *batch;
};

static void promote_run(struct work_item *item)
{
    struct promote_job *j = (struct promote_job *)item;

    (void)tiers_promote(j->t, j->key, j->shape);
    pthread_mutex_lock(&j->batch->mu);
    if (--j->batch->left == 0)
        pthread_cond_signal(&j->batch->done);
    pthread_mutex_unlock(&j->batch->mu);
}

void tiers_promote_many(struct kvt_tiers *t, const struct kvt_chunk_key *const *keys,
                        size_t n, const struct kvt_chunk_shape *shape)
{
    struct promote_batch batch = { .left = n };
    struct promote_job *jobs;

    if (!t->cold || n == 0)
        return;
    jobs = calloc(n, sizeof(*jobs));
    if (!jobs || n == 1) {            /* one read, or no memory: inline */
        for (size_t i = 0; i < n; i++)
            (void)tiers_promote(t, keys[i], shape);
        free(jobs);
        return;
    }
    pthread_mutex_init(&batch.mu, NULL);
    pthread_cond_init(&batch.done, NULL);
    for (size_t i = 0; i < n; i++) {
        jobs[i] = (struct promote_job){ .item.fn = promote_run, .t = t, .key = keys[i],
                                        .shape = shape, .batch = &batch };
        workers_submit(t->readers, &jobs[i].item);
    }
    pthread_mutex_lock(&batch.mu);
    while (batch.left)
        pthread_cond_wait(&batch.done, &batch.mu);
    pthread_mutex_unlock(&batch.mu);
    pthread_mutex_destroy(&batch.mu);
    pthread_cond_destroy(&batch.done);
    free(jobs);
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
