/* cold_io.c - io_uring and pread/pwrite backends for the cold tier's file I/O. */
#include <errno.h>
#include <liburing.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <unistd.h>

#include "cold_io.h"

/* ---- io_uring ----------------------------------------------------------
 *
 * One ring per cold file, shared by the writer and every reader:
 *  - the submission side (get_sqe, submit) is guarded by sq_lock;
 *  - the completion side belongs to one reaper thread, the only caller of
 *    io_uring_wait_cqe / io_uring_cqe_seen. It routes each completion to the
 *    cold_io_req in its user_data.
 * The SQ and CQ rings are independent, so one thread per side needs no lock
 * between them; the kernel serializes io_uring_enter itself. The ring is set
 * up without SINGLE_ISSUER or DEFER_TASKRUN, which would forbid exactly this
 * sharing between threads.
 *
 * A reader queues its read, submits, and sleeps on its own condition
 * variable until the reaper marks it done: readers never wait on each
 * other's I/O, only briefly on sq_lock.
 */

struct uring_io {
    struct cold_io base;
    struct io_uring ring;
    int fd;
    pthread_mutex_t sq_lock;
    pthread_t reaper;
    bool ring_ready, reaper_running;
};

struct uring_read {
    struct cold_io_req req;        /* first: the reaper hands us this */
    struct uring_io *u;
    pthread_cond_t cond;           /* waited on with u->sq_lock */
    int res;
    bool done;
};

/* Submit with sq_lock held. -EAGAIN/-EBUSY mean the kernel is short of
 * request memory or the CQ is backed up; the reaper drains it, so waiting a
 * little and retrying always ends. The wait drops sq_lock because the reaper
 * needs it to complete reads. Other errors are kernel or program bugs. */
static int uring_submit_locked(struct uring_io *u)
{
    for (;;) {
        int rc = io_uring_submit(&u->ring);
        if (rc >= 0)
            return 0;
        if (rc != -EAGAIN && rc != -EBUSY && rc != -EINTR)
            return rc;
        pthread_mutex_unlock(&u->sq_lock);
        usleep(50);
        pthread_mutex_lock(&u->sq_lock);
    }
}

static struct io_uring_sqe *uring_sqe_locked(struct uring_io *u)
{
    struct io_uring_sqe *sqe = io_uring_get_sqe(&u->ring);
    if (!sqe && uring_submit_locked(u) == 0)
        sqe = io_uring_get_sqe(&u->ring);
    return sqe;
}

static void *uring_reaper(void *arg)
{
    struct uring_io *u = arg;

    for (;;) {
        struct io_uring_cqe *cqe;
        int rc = io_uring_wait_cqe(&u->ring, &cqe);
        if (rc < 0) {
            if (rc != -EINTR)
                usleep(1000);      /* unexpected; never spin on it */
            continue;
        }
        struct cold_io_req *req = io_uring_cqe_get_data(cqe);
        int res = cqe->res;
        io_uring_cqe_seen(&u->ring, cqe);
        if (!req)
            return NULL;           /* the stop NOP queued by uring_close */
        req->done(req, res);
    }
}

static int uring_queue_write(struct cold_io *io, struct cold_io_req *req,
                             const void *buf, uint32_t len, uint64_t off)
{
    struct uring_io *u = (struct uring_io *)io;
    int rc = 0;

    pthread_mutex_lock(&u->sq_lock);
    struct io_uring_sqe *sqe = uring_sqe_locked(u);
    if (!sqe) {
        rc = -EBUSY;
    } else {
        req->buf = buf;
        req->len = len;
        req->off = off;
        io_uring_prep_write(sqe, u->fd, buf, len, off);
        io_uring_sqe_set_data(sqe, req);
    }
    pthread_mutex_unlock(&u->sq_lock);
    return rc;
}

static void uring_submit(struct cold_io *io)
{
    struct uring_io *u = (struct uring_io *)io;

    pthread_mutex_lock(&u->sq_lock);
    uring_submit_locked(u);
    pthread_mutex_unlock(&u->sq_lock);
}

static void uring_read_done(struct cold_io_req *req, int res)
{
    struct uring_read *r = (struct uring_read *)req;

    pthread_mutex_lock(&r->u->sq_lock);
    r->res = res;
    r->done = true;
    pthread_cond_signal(&r->cond);
    pthread_mutex_unlock(&r->u->sq_lock);
}

static int uring_read(struct cold_io *io, void *buf, uint32_t len, uint64_t off)
{
    struct uring_io *u = (struct uring_io *)io;
    struct uring_read r = { .req.done = uring_read_done, .u = u };
    int rc = 0;

    pthread_cond_init(&r.cond, NULL);
    pthread_mutex_lock(&u->sq_lock);
    while (len > 0) {                  /* loops again only on a short read */
        struct io_uring_sqe *sqe = uring_sqe_locked(u);
        if (!sqe) {
            rc = -EBUSY;
            break;
        }
        io_uring_prep_read(sqe, u->fd, buf, len, off);
        io_uring_sqe_set_data(sqe, &r.req);
        r.done = false;
        rc = uring_submit_locked(u);
        if (rc < 0)
            break;
        while (!r.done)
            pthread_cond_wait(&r.cond, &u->sq_lock);
        if (r.res <= 0) {
            rc = r.res < 0 ? r.res : -EIO;     /* 0: read past the end */
            break;
        }
        buf = (char *)buf + r.res;
        len -= (uint32_t)r.res;
        off += (uint32_t)r.res;
    }
    pthread_mutex_unlock(&u->sq_lock);
    pthread_cond_destroy(&r.cond);
    return rc;
}

static void uring_close(struct cold_io *io)
{
    struct uring_io *u = (struct uring_io *)io;

    if (u->reaper_running) {
        pthread_mutex_lock(&u->sq_lock);
        struct io_uring_sqe *sqe = uring_sqe_locked(u);
        if (sqe) {
            io_uring_prep_nop(sqe);
            io_uring_sqe_set_data(sqe, NULL);
            uring_submit_locked(u);
        }
        pthread_mutex_unlock(&u->sq_lock);
        if (!sqe) {
            /* The ring refuses even a NOP (a kernel bug): the reaper cannot
             * be woken, so leak it rather than free memory it still uses. */
            pthread_detach(u->reaper);
            return;
        }
        pthread_join(u->reaper, NULL);
    }
    if (u->ring_ready)
        io_uring_queue_exit(&u->ring);
    pthread_mutex_destroy(&u->sq_lock);
    free(u);
}

static const struct cold_io_ops uring_ops = {
    .name = "io_uring",
    .queue_write = uring_queue_write,
    .submit = uring_submit,
    .read = uring_read,
    .close = uring_close,
};

int cold_io_open_uring(int fd, unsigned queue_depth, struct cold_io **out)
{
    struct uring_io *u = calloc(1, sizeof(*u));
    unsigned entries = 64;
    int rc;

    if (!u)
        return -ENOMEM;
    u->base.ops = &uring_ops;
    u->fd = fd;
    pthread_mutex_init(&u->sq_lock, NULL);
    /* Room for every write buffer plus a good number of concurrent readers;
     * the CQ is twice as large and the kernel (IORING_FEAT_NODROP) keeps
     * overflowing completions rather than dropping them. */
    while (entries < 2 * queue_depth + 64)
        entries *= 2;
    rc = io_uring_queue_init(entries, &u->ring, 0);
    if (rc < 0)
        goto err;
    u->ring_ready = true;
    rc = -pthread_create(&u->reaper, NULL, uring_reaper, u);
    if (rc < 0)
        goto err;
    u->reaper_running = true;
    *out = &u->base;
    return 0;
err:
    uring_close(&u->base);
    return rc;
}

/* ---- pread / pwrite ----------------------------------------------------
 *
 * The fallback keeps the io_uring backend's contract: writes are queued,
 * handed by submit() to one writer thread that pwrites them in order and
 * calls done(), so cold_put still returns before the disk write. Reads are
 * plain preads on the caller's thread (pread is thread-safe on one fd).
 */

struct pread_io {
    struct cold_io base;
    int fd;
    pthread_mutex_t lock;
    pthread_cond_t cond;               /* pending list gained work, or stop */
    struct cold_io_req *queued, **queued_tail;     /* not yet submitted */
    struct cold_io_req *pending, **pending_tail;   /* for the writer thread */
    pthread_t writer;
    bool writer_running, stop;
};

/* Bytes written (short only if the file refused more) or -errno. */
static int pwrite_all(int fd, const char *buf, uint32_t len, uint64_t off)
{
    uint32_t done = 0;

    while (done < len) {
        ssize_t n = pwrite(fd, buf + done, len - done, (off_t)(off + done));
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -errno;
        if (n == 0)
            break;
        done += (uint32_t)n;
    }
    return (int)done;
}

static void *pread_writer(void *arg)
{
    struct pread_io *p = arg;

    pthread_mutex_lock(&p->lock);
    for (;;) {
        while (!p->pending && !p->stop)
            pthread_cond_wait(&p->cond, &p->lock);
        struct cold_io_req *req = p->pending;
        if (!req)
            break;                      /* stop, and nothing left to write */
        p->pending = req->next;
        if (!p->pending)
            p->pending_tail = &p->pending;
        pthread_mutex_unlock(&p->lock);
        req->done(req, pwrite_all(p->fd, req->buf, req->len, req->off));
        pthread_mutex_lock(&p->lock);
    }
    pthread_mutex_unlock(&p->lock);
    return NULL;
}

static int pread_queue_write(struct cold_io *io, struct cold_io_req *req,
                             const void *buf, uint32_t len, uint64_t off)
{
    struct pread_io *p = (struct pread_io *)io;

    req->buf = buf;
    req->len = len;
    req->off = off;
    req->next = NULL;
    pthread_mutex_lock(&p->lock);
    *p->queued_tail = req;
    p->queued_tail = &req->next;
    pthread_mutex_unlock(&p->lock);
    return 0;
}

static void pread_submit(struct cold_io *io)
{
    struct pread_io *p = (struct pread_io *)io;

    pthread_mutex_lock(&p->lock);
    if (p->queued) {
        *p->pending_tail = p->queued;
        p->pending_tail = p->queued_tail;
        p->queued = NULL;
        p->queued_tail = &p->queued;
        pthread_cond_signal(&p->cond);
    }
    pthread_mutex_unlock(&p->lock);
}

static int pread_read(struct cold_io *io, void *buf, uint32_t len, uint64_t off)
{
    struct pread_io *p = (struct pread_io *)io;

    while (len > 0) {
        ssize_t n = pread(p->fd, buf, len, (off_t)off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -errno;
        if (n == 0)
            return -EIO;
        buf = (char *)buf + n;
        len -= (uint32_t)n;
        off += (uint64_t)n;
    }
    return 0;
}

static void pread_close(struct cold_io *io)
{
    struct pread_io *p = (struct pread_io *)io;

    if (p->writer_running) {
        pread_submit(io);               /* the writer drains before it stops */
        pthread_mutex_lock(&p->lock);
        p->stop = true;
        pthread_cond_signal(&p->cond);
        pthread_mutex_unlock(&p->lock);
        pthread_join(p->writer, NULL);
    }
    pthread_cond_destroy(&p->cond);
    pthread_mutex_destroy(&p->lock);
    free(p);
}

static const struct cold_io_ops pread_ops = {
    .name = "pread",
    .queue_write = pread_queue_write,
    .submit = pread_submit,
    .read = pread_read,
    .close = pread_close,
};

int cold_io_open_pread(int fd, struct cold_io **out)
{
    struct pread_io *p = calloc(1, sizeof(*p));
    int rc;

    if (!p)
        return -ENOMEM;
    p->base.ops = &pread_ops;
    p->fd = fd;
    p->queued_tail = &p->queued;
    p->pending_tail = &p->pending;
    pthread_mutex_init(&p->lock, NULL);
    pthread_cond_init(&p->cond, NULL);
    rc = -pthread_create(&p->writer, NULL, pread_writer, p);
    if (rc < 0)
        goto err;
    p->writer_running = true;
    *out = &p->base;
    return 0;
err:
    pread_close(&p->base);
    return rc;
}
