/* cold_io.h - the cold tier's I/O backends (io_uring, pread/pwrite) behind one ops struct.
 *
 * cold.c chooses a backend once at open and then only calls through the ops.
 * Both backends have the same shape: writes are queued, started in a batch
 * by submit(), and completed asynchronously on a thread the backend owns,
 * which calls req->done(). Reads are synchronous for the caller and may be
 * issued from any number of threads at once.
 */
#ifndef KVT_COLD_IO_H
#define KVT_COLD_IO_H

#include <stdint.h>

struct cold_io;

/* One asynchronous write. The caller embeds it in its own struct and sets
 * done; the backend owns the other fields between queue_write and done. */
struct cold_io_req {
    /* Called once, on the backend's completion thread, with the bytes
     * written (a short count is possible) or -errno. It never runs inside
     * queue_write, submit or read, so callers may hold the locks done()
     * takes across those calls. */
    void (*done)(struct cold_io_req *req, int res);
    const void *buf;
    uint32_t len;
    uint64_t off;
    struct cold_io_req *next;
};

struct cold_io_ops {
    const char *name;                  /* "io_uring" or "pread" */
    /* Queue a write of len bytes of buf at file offset off; nothing starts
     * before submit(). buf stays untouched by the caller until done().
     * Returns 0 or -errno (then done() is never called). */
    int (*queue_write)(struct cold_io *io, struct cold_io_req *req,
                       const void *buf, uint32_t len, uint64_t off);
    /* Start every queued write, with one system call where possible. */
    void (*submit)(struct cold_io *io);
    /* Read exactly len bytes at off into buf, waiting for them. Returns 0,
     * -EIO on a short read, or -errno. Safe from several threads at once. */
    int (*read)(struct cold_io *io, void *buf, uint32_t len, uint64_t off);
    /* Finish queued writes, stop the completion thread, free. No other call
     * may run concurrently or afterwards. */
    void (*close)(struct cold_io *io);
};

struct cold_io {
    const struct cold_io_ops *ops;
};

/* Backends on an open fd (not closed by them). queue_depth bounds the writes
 * that cold.c keeps in flight. Return 0 or -errno; a failing io_uring setup
 * (ENOSYS, EPERM under seccomp, ENOMEM from locked-memory limits) returns its
 * error so the caller can fall back to pread. */
int cold_io_open_uring(int fd, unsigned queue_depth, struct cold_io **out);
int cold_io_open_pread(int fd, struct cold_io **out);

#endif
