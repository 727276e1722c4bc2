/* job.c - runs a long admin command on its own thread and wakes the event
 * loop through an eventfd to report progress and the end. */
#include "daemon/job.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "daemon/latency.h"

/* Often enough for a progress line a person can follow, rarely enough
 * that a job over millions of chunks costs the loop nothing. */
#define TICK_NS (200 * 1000 * 1000ull)

struct kvt_job {
    job_fn fn;
    void *arg;
    int efd, epfd;
    pthread_t thread;
    bool started;
    uint64_t last_tick_ns;           /* the job thread's own */
    atomic_ulong done_units, total_units;
    atomic_bool done;
    int rc;                          /* written before done is set */
};

static void tick(struct kvt_job *j)
{
    uint64_t one = 1;
    /* Cannot fail short of a counter overflow; a lost tick only delays a
     * progress line, and the end is also seen through done. */
    (void)!write(j->efd, &one, sizeof(one));
}

void job_progress(struct kvt_job *j, uint64_t done, uint64_t total)
{
    uint64_t now = latency_now_ns();

    atomic_store(&j->done_units, done);
    atomic_store(&j->total_units, total);
    if (j->last_tick_ns == 0 || now - j->last_tick_ns >= TICK_NS) {
        j->last_tick_ns = now;
        tick(j);
    }
}

void job_progress_cb(void *job, uint64_t done, uint64_t total)
{
    job_progress(job, done, total);
}

static void *run(void *arg)
{
    struct kvt_job *j = arg;

    j->rc = j->fn(j, j->arg);
    atomic_store(&j->done, true);    /* seq_cst: publishes rc */
    tick(j);
    return NULL;
}

int job_start(job_fn fn, void *arg, int epfd, void *tag, struct kvt_job **out)
{
    struct kvt_job *j = calloc(1, sizeof(*j));
    int rc;

    if (!j)
        return -ENOMEM;
    j->fn = fn;
    j->arg = arg;
    j->epfd = -1;
    j->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (j->efd < 0) {
        rc = -errno;
        goto err;
    }
    struct epoll_event ev = { .events = EPOLLIN, .data.ptr = tag };
    if (epoll_ctl(epfd, EPOLL_CTL_ADD, j->efd, &ev) < 0) {
        rc = -errno;
        goto err;
    }
    j->epfd = epfd;
    rc = -pthread_create(&j->thread, NULL, run, j);
    if (rc)
        goto err;
    j->started = true;
    *out = j;
    return 0;
err:
    job_free(j);
    return rc;
}

bool job_poll(struct kvt_job *j, uint64_t *done, uint64_t *total, int *rc)
{
    uint64_t count;

    (void)!read(j->efd, &count, sizeof(count));   /* EAGAIN is fine */
    *done = atomic_load(&j->done_units);
    *total = atomic_load(&j->total_units);
    if (!atomic_load(&j->done))
        return false;
    *rc = j->rc;
    return true;
}

void job_free(struct kvt_job *j)
{
    if (!j)
        return;
    if (j->started)
        pthread_join(j->thread, NULL);
    if (j->epfd >= 0)
        epoll_ctl(j->epfd, EPOLL_CTL_DEL, j->efd, NULL);
    if (j->efd >= 0)
        close(j->efd);
    free(j);
}
