/* remote_pool.h - the remote tier's pool client behind one ops struct.
 *
 * remote.c opens one backend and then only calls through the ops. The one
 * backend today is libmemcached (remote_pool_mc.c): ketama consistent
 * hashing, the binary protocol, replicas on the following servers, every
 * wait bounded by the timeout, a failing server ejected and retried later.
 * Every call is thread-safe and blocks its caller for at most about the
 * deadline it is given; a server that is down or slow is a miss or a
 * failed set, never a longer wait.
 */
#ifndef KVT_REMOTE_POOL_H
#define KVT_REMOTE_POOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define REMOTE_SERVERS_MAX 64
#define REMOTE_HOST_MAX 128

struct remote_pool;

struct remote_pool_config {
    const char *servers;       /* "host:port,host:port" (port default 11211) */
    uint32_t replicas;         /* extra copies on other servers */
    uint32_t timeout_ms;       /* bound on any one wait on a server */
    uint32_t handles;          /* connections to each server, one per caller at a time */
};

/* What the pool knows of one server (stats). */
struct remote_server_stats {
    char host[REMOTE_HOST_MAX];
    uint16_t port;
    bool seen;                 /* false: no operation has reached it yet */
    bool up;                   /* false: its last operation failed */
    uint64_t hits, misses, errors, bytes_read, bytes_written;
};

/* Called by get_many for each name found, from the calling thread; value
 * is valid during the call only. */
typedef void (*remote_got_fn)(void *arg, size_t idx, const void *value, size_t len);

struct remote_pool_ops {
    const char *name;
    /* Store value under name on its servers (the replicas included).
     * Returns 0, -E2BIG when a server refused it as too large, -ETIMEDOUT
     * or -EIO (a server down, slow or failing). */
    int (*set)(struct remote_pool *p, const char *name, size_t name_len,
               const void *value, size_t len);
    /* Ask for n names at once; got() is called for those found before
     * deadline_ns (CLOCK_MONOTONIC). Names not reported are misses.
     * Returns 0, -ETIMEDOUT when the deadline cut the answers short, -EIO,
     * -EBUSY when no connection was free before the deadline. */
    int (*get_many)(struct remote_pool *p, const char *const *names, const size_t *lens,
                    size_t n, uint64_t deadline_ns, remote_got_fn got, void *arg);
    /* A copy of the servers' stats; returns how many (<= max). */
    size_t (*servers)(struct remote_pool *p, struct remote_server_stats *out, size_t max);
    void (*close)(struct remote_pool *p);
};

struct remote_pool {
    const struct remote_pool_ops *ops;
};

/* Parse cfg->servers and set the pool up (no connection yet: servers are
 * connected on first use, so a pool that is down does not stop a start).
 * Returns 0, -EINVAL (with *why) for a bad server list, -ENOMEM. */
int remote_pool_open_memcached(const struct remote_pool_config *cfg, struct remote_pool **out,
                               const char **why);

uint64_t remote_now_ns(void);

#endif
