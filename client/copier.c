/* copier.c - a few threads that share the copy path's large memcpys.
 *
 * One memcpy thread moves 10-16 GB/s; the daemon converts a batch at about
 * that rate per worker, so on a many-core host a single copying thread is
 * what bounds a store or fetch from the engine's own buffers. copier_run
 * cuts a batch's bytes into equal shares, one per thread, the caller
 * included, and returns when every share is done. */
#include "client/copier.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* Below this, waking the helpers (20-60 us on an idle vCPU) costs more than
 * they save. */
#define SHARE_MIN_BYTES (COPIER_MIN_BYTES / 2)

struct copier {
    pthread_mutex_t lock;
    pthread_cond_t wake, done;
    unsigned threads;
    pthread_t tid[COPIER_MAX_THREADS];
    /* The job being run, guarded by lock. */
    const struct copy_part *parts;
    size_t n_parts, share_bytes, total_bytes;
    uint64_t generation;
    unsigned next_share, pending;
    bool stop;
};

/* Copy bytes [lo, hi) of the parts laid end to end. */
static void copy_range(const struct copy_part *parts, size_t n_parts, size_t lo, size_t hi)
{
    size_t at = 0;
    for (size_t i = 0; i < n_parts && at < hi; i++) {
        size_t end = at + parts[i].bytes;
        if (end > lo) {
            size_t from = lo > at ? lo - at : 0;
            size_t to = (hi < end ? hi : end) - at;
            memcpy((uint8_t *)parts[i].dst + from, (const uint8_t *)parts[i].src + from,
                   to - from);
        }
        at = end;
    }
}

/* Take the next share of the current job, or return false if none is left. */
static bool take_share(struct copier *cp, size_t *lo, size_t *hi)
{
    size_t start = (size_t)cp->next_share * cp->share_bytes;
    if (start >= cp->total_bytes)
        return false;
    cp->next_share++;
    *lo = start;
    *hi = cp->total_bytes - start < cp->share_bytes ? cp->total_bytes : start + cp->share_bytes;
    return true;
}

static void *helper_main(void *arg)
{
    struct copier *cp = arg;
    uint64_t seen = 0;
    size_t lo, hi;

    pthread_mutex_lock(&cp->lock);
    for (;;) {
        while (!cp->stop && cp->generation == seen)
            pthread_cond_wait(&cp->wake, &cp->lock);
        if (cp->stop)
            break;
        seen = cp->generation;
        while (take_share(cp, &lo, &hi)) {
            const struct copy_part *parts = cp->parts;
            size_t n = cp->n_parts;
            pthread_mutex_unlock(&cp->lock);
            copy_range(parts, n, lo, hi);
            pthread_mutex_lock(&cp->lock);
            if (--cp->pending == 0)
                pthread_cond_signal(&cp->done);
        }
    }
    pthread_mutex_unlock(&cp->lock);
    return NULL;
}

int copier_create(unsigned threads, struct copier **out)
{
    struct copier *cp;
    int rc;

    *out = NULL;
    if (threads == 0 || threads > COPIER_MAX_THREADS)
        return -EINVAL;
    cp = calloc(1, sizeof(*cp));
    if (!cp)
        return -ENOMEM;
    pthread_mutex_init(&cp->lock, NULL);
    pthread_cond_init(&cp->wake, NULL);
    pthread_cond_init(&cp->done, NULL);
    for (; cp->threads < threads; cp->threads++) {
        rc = pthread_create(&cp->tid[cp->threads], NULL, helper_main, cp);
        if (rc) {
            copier_destroy(cp);
            return -rc;
        }
    }
    *out = cp;
    return 0;
}

void copier_run(struct copier *cp, const struct copy_part *parts, size_t n_parts)
{
    size_t total = 0, lo, hi;

    for (size_t i = 0; i < n_parts; i++)
        total += parts[i].bytes;
    unsigned shares = cp ? cp->threads + 1 : 1;
    if (total / shares < SHARE_MIN_BYTES)
        shares = (unsigned)(total / SHARE_MIN_BYTES) ? (unsigned)(total / SHARE_MIN_BYTES) : 1;
    if (shares == 1) {
        copy_range(parts, n_parts, 0, total);
        return;
    }

    pthread_mutex_lock(&cp->lock);
    cp->parts = parts;
    cp->n_parts = n_parts;
    cp->total_bytes = total;
    /* 64-byte multiples keep each share's cache lines its own. */
    cp->share_bytes = ((total + shares - 1) / shares + 63) & ~(size_t)63;
    cp->next_share = 0;
    cp->pending = shares;
    cp->generation++;
    pthread_cond_broadcast(&cp->wake);
    /* The caller works too, then waits for the shares the helpers took. */
    while (take_share(cp, &lo, &hi)) {
        pthread_mutex_unlock(&cp->lock);
        copy_range(parts, n_parts, lo, hi);
        pthread_mutex_lock(&cp->lock);
        cp->pending--;
    }
    while (cp->pending)
        pthread_cond_wait(&cp->done, &cp->lock);
    cp->parts = NULL;
    pthread_mutex_unlock(&cp->lock);
}

void copier_destroy(struct copier *cp)
{
    if (!cp)
        return;
    pthread_mutex_lock(&cp->lock);
    cp->stop = true;
    pthread_cond_broadcast(&cp->wake);
    pthread_mutex_unlock(&cp->lock);
    for (unsigned i = 0; i < cp->threads; i++)
        pthread_join(cp->tid[i], NULL);
    pthread_cond_destroy(&cp->done);
    pthread_cond_destroy(&cp->wake);
    pthread_mutex_destroy(&cp->lock);
    free(cp);
}

unsigned copier_threads_wanted(void)
{
    const char *s = getenv("KVTIER_COPY_THREADS");
    if (s && *s) {
        char *end;
        unsigned long v = strtoul(s, &end, 10);
        if (!*end && v >= 1 && v <= COPIER_MAX_THREADS + 1)
            return (unsigned)v;
    }
    cpu_set_t set;
    int cpus = sched_getaffinity(0, sizeof(set), &set) == 0 ? CPU_COUNT(&set) : 1;
    /* The daemon's workers convert while the client copies, so the copy
     * takes a share of the CPUs, not all of them. Measured on shape 2
     * (bench, outliers section), store / fetch against one memcpy thread:
     * on 2 CPUs, 1 thread 0.38x / 0.46x, 2 threads 0.63x / 0.83x; on 16
     * CPUs with 16 workers, 1 thread 0.71x / 0.71x, 4 threads 0.99x /
     * 1.81x, 8 threads 0.80x / 1.35x. */
    unsigned n = (unsigned)cpus / 4;
    if (n < 2)
        n = cpus >= 2 ? 2 : 1;
    return n > 8 ? 8 : n;
}
