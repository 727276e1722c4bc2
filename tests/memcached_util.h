/* memcached_util.h - real memcached servers for the remote tier's tests and
 * bench: started on free loopback ports, killed when the test exits, and a
 * raw text-protocol client to read and plant items behind kvtierd's back. */
#ifndef KVT_TEST_MEMCACHED_UTIL_H
#define KVT_TEST_MEMCACHED_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define MC_MAX 8

struct mc_pool {
    int n;
    pid_t pid[MC_MAX];
    uint16_t port[MC_MAX];
    char list[MC_MAX * 24];      /* "memcached://127.0.0.1:P1,127.0.0.1:P2" */
};

/* Start n servers (memcached -m mem_mb -I item_max, e.g. "1m" or "64k") on free
 * loopback ports and wait until each accepts. Returns 0, or -errno
 * (-ENOENT when memcached is not installed: tests/deps.sh installs it, and
 * the tests fail rather than skip without it). Servers are killed at exit
 * even if the test fails. */
int mc_start(struct mc_pool *p, int n, unsigned mem_mb, const char *item_max);
/* SIGKILL server i and reap it (it is gone: connections are refused). */
void mc_kill(struct mc_pool *p, int i);
/* SIGSTOP / SIGCONT server i (it hangs: connections time out). */
void mc_pause(struct mc_pool *p, int i, int paused);
/* Kill every server of p. */
void mc_stop(struct mc_pool *p);

/* Raw item access on server i (text protocol). mc_get returns the item's
 * length and a malloc'ed copy in *out, or -ENOENT / -errno. */
ssize_t mc_get(const struct mc_pool *p, int i, const char *name, void **out);
int mc_set(const struct mc_pool *p, int i, const char *name, const void *val, size_t len);

/* A free TCP port on 127.0.0.1 now (bound and released). */
uint16_t mc_free_port(void);

#endif
