/* helpers.h - shared by the integration tests: a real kvtierd on a temp socket,
 * data generators, libkvtier(3)'s int8 error bound, and failure messages with kvt_strerror. */
#ifndef KVT_TEST_HELPERS_H
#define KVT_TEST_HELPERS_H

#include <setjmp.h>
#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <unistd.h>
#include <sys/types.h>
#include <cmocka.h>

#include "client/kvtier.h"

struct test_daemon {
    pid_t pid;
    char dir[256];          /* temp dir holding the sockets (and cold file) */
    char socket[320];
    char admin_socket[320];
    char log[320];          /* the daemon's stderr */
};

/* Build dir of the binaries under test ($KVTIER_BUILD, default "build"). */
const char *test_build_dir(void);

/* Start build/kvtierd on a fresh temp dir with the extra flags (NULL-ended
 * list), wait until it accepts. Fails the test if it does not come up. */
void daemon_start(struct test_daemon *d, ...);
/* daemon_start with RLIMIT_NOFILE (soft and hard) set to nofile for the
 * daemon, so a test can run it out of file descriptors. */
void daemon_start_nofile(struct test_daemon *d, unsigned nofile, ...);
/* Start again on the same dir and socket (restart), same flags list form. */
void daemon_restart(struct test_daemon *d, ...);
/* daemon_restart for a start that must fail: waits up to 10 s for kvtierd
 * to exit and returns its exit status (128 + signal if killed), or -1 if it
 * came up instead (then it is killed). */
int daemon_start_status(struct test_daemon *d, ...);
/* SIGTERM and wait; returns the wait status (0 if not running). Keeps the dir. */
int daemon_terminate(struct test_daemon *d);
/* SIGTERM and wait; asserts exit status 0. Keeps the dir. */
void daemon_stop(struct test_daemon *d);
/* SIGKILL and reap. */
void daemon_kill(struct test_daemon *d);
/* Stop if running and remove the temp dir. */
void daemon_cleanup(struct test_daemon *d);
/* Number of open fds of the daemon, from /proc. */
int daemon_fd_count(const struct test_daemon *d);
/* Resident set size of the daemon in bytes, from /proc. */
uint64_t daemon_rss_bytes(const struct test_daemon *d);
/* Wait (up to 10 s) until the daemon has exactly `want` open fds: it closes
 * a session when it hears the hang-up, a moment after the client closes.
 * Returns the last count seen. */
int daemon_wait_fd_count(const struct test_daemon *d, int want);
/* Open fds of the daemon with no client connected: measured over a fresh
 * connection after two request/reply round trips, by which time the loop
 * has seen the hang-up of every connection closed before the call (such as
 * daemon_start's own probe). */
int daemon_idle_fd_count(const struct test_daemon *d);
/* CPU time (user + system) the daemon has used so far, in clock ticks
 * (sysconf(_SC_CLK_TCK) a second), from /proc/PID/stat; -1 if unreadable. */
long daemon_cpu_ticks(const struct test_daemon *d);
/* Number of lines in the file at path (0 if it cannot be read). */
size_t test_file_lines(const char *path);
/* Number of entries in /dev/shm whose name contains "kvtier". */
int shm_kvtier_files(void);

/* Fail with file:line, the call and kvt_strerror(rc) unless rc == 0. */
#define CHECK_OK(call) do {                                                   \
        int rc_ = (call);                                                     \
        if (rc_ != 0)                                                         \
            fail_msg("%s:%d: %s = %d (%s)", __FILE__, __LINE__, #call, rc_,   \
                     kvt_strerror(rc_));                                      \
    } while (0)
#define CHECK_RC(call, want) do {                                             \
        int rc_ = (call);                                                     \
        if (rc_ != (want))                                                    \
            fail_msg("%s:%d: %s = %d (%s), want %d (%s)", __FILE__, __LINE__, \
                     #call, rc_, kvt_strerror(rc_), (want), kvt_strerror(want)); \
    } while (0)

/* A model with these dims; name must stay valid while used. */
kvt_model test_model(const char *name, uint32_t layers, uint32_t heads, uint32_t dim,
                     kvt_dtype dtype, uint32_t chunk_tokens);

/* Deterministic KV-like values for (seed, layer, token, element) as f32:
 * Gaussian with a few large outlier channels, as real keys have. */
float test_value(uint64_t seed, uint32_t layer, uint32_t token, uint32_t elem);
/* Fill n_tokens rows of heads*dim values in dtype. */
void test_fill(void *buf, kvt_dtype dt, uint64_t seed, uint32_t layer,
               uint32_t token_start, uint32_t n_tokens, uint32_t heads, uint32_t dim);
/* Check buf against test_fill's values within libkvtier(3)'s int8 bound (or
 * exactly, when exact). Returns the number of violations (0 = good) and
 * prints the first one. */
size_t test_check(const void *buf, kvt_dtype dt, uint64_t seed, uint32_t layer,
                  uint32_t token_start, uint32_t n_tokens, uint32_t heads, uint32_t dim,
                  int exact);

/* Whether buf holds test_fill's values within the int8 bound, silently:
 * for callers that try several candidate seeds. Returns 1 or 0. */
int test_matches(const void *buf, kvt_dtype dt, uint64_t seed, uint32_t layer,
                 uint32_t token_start, uint32_t n_tokens, uint32_t heads, uint32_t dim);

/* Named contexts "ctx-<i>" as the tier tests store them: `tokens` f16
 * tokens of every layer, K from seed 2i, V from 2i + 1. */
struct test_ctx_shape {
    uint32_t layers, tokens, heads, dim;
};
/* Store contexts first..first+count-1; returns 0 or the failing rc. */
int test_store_contexts(kvt_client *c, const struct test_ctx_shape *s, int first, int count);
/* Fetch context i: 0 when every layer is there and within the int8 bound,
 * -ENOENT (or another rc) when absent, 1 for WRONG DATA. */
int test_check_context(kvt_client *c, const struct test_ctx_shape *s, int i);

/* Convert one element of dtype to f32 / from f32 (round to nearest even). */
float test_to_f32(const void *buf, kvt_dtype dt, size_t i);
void test_from_f32(void *buf, kvt_dtype dt, size_t i, float v);

/* A connection to the daemon's admin socket (waiting up to 5 s for it to
 * accept). Returns the fd or -errno. */
int test_admin_connect(const struct test_daemon *d);
/* Send one JSON request line to the daemon's admin socket on a fresh
 * connection (waiting up to 5 s for the socket to accept) and read one reply
 * line into reply (len bytes, NUL-terminated, newline removed). Returns 0,
 * or -errno (-EMSGSIZE if the reply does not fit). */
int admin_request(const struct test_daemon *d, const char *request,
                  char *reply, size_t len);

/* The number stats gives as section.name (fails the test if there is none). */
double test_stat(const struct test_daemon *d, const char *section, const char *name);
/* Admin evict of the hot tier (fails the test unless it answers ok). */
void test_evict_hot(const struct test_daemon *d);
/* rm -rf dir (a temp dir a test made), with a warning if it fails. */
void test_remove_dir(const char *dir);

/* Whether a data socket at path accepts a connection now. */
int test_socket_accepts(const char *path);
/* Whether the first 64 KiB of the file at path contain text. */
int test_file_contains(const char *path, const char *text);

/* A small tmpfs for tests of a full disk: mnt is its mount point in a fresh
 * dir under /var/tmp, filler the file that fills it up. */
struct test_small_fs {
    char top[64], mnt[96], filler[128];
    int mounted;
};
/* Mount a tmpfs of size bytes (mount's size= form, e.g. "48m"). Returns 0,
 * or -errno when it cannot (not root, mount refused): the caller skips. */
int test_small_fs_mount(struct test_small_fs *fs, const char *size);
/* Undo the mount and remove its dirs; harmless when not mounted (atexit). */
void test_small_fs_unmount(struct test_small_fs *fs);
/* Fill the file system to its last byte with the filler file. */
void test_small_fs_fill(const struct test_small_fs *fs);
/* Remove the filler: the space is free again. */
void test_small_fs_free(const struct test_small_fs *fs);
/* Punch [off, off + len) out of the file at path, giving its space back to
 * the file system, so the next write there needs free space. */
void test_punch_hole(const char *path, off_t off, off_t len);

/* Raw protocol, for tests that send what libkvtier never would. */
struct kvt_reply;
/* A SOCK_SEQPACKET connection to the data socket at path, or -errno. */
int test_raw_connect(const char *path);
/* Send one packet of len bytes with n_fds fds (SCM_RIGHTS, at most 16).
 * Returns 0 or -errno. */
int test_raw_send(int sock, const void *msg, size_t len, const int *fds, int n_fds);
/* Wait up to timeout_ms for one packet and put it in *rep. Returns 0 for a
 * whole reply, -ETIMEDOUT if none came, -ECONNRESET on hang-up, -EPROTO for
 * a packet that is not a reply (wrong size, magic, version or length). */
int test_raw_reply(int sock, struct kvt_reply *rep, int timeout_ms);

/* Run fn(arg) in a child process; returns its exit status (0 = success). */
int test_in_child(int (*fn)(void *arg), void *arg);

/* In a child: become uid (and gid uid, no supplementary groups), as tests
 * of another sharing domain do (they run as root). Returns 0 or -1. */
int test_become_uid(uid_t uid);

/* In a child of test_in_child: report which check failed and exit with its
 * code. */
#define CHILD_CHECK(cond, code) do {                                           \
        if (!(cond)) {                                                        \
            fprintf(stderr, "%s:%d: child (uid %u): %s failed\n", __FILE__,    \
                    __LINE__, (unsigned)getuid(), #cond);                     \
            return code;                                                      \
        }                                                                     \
    } while (0)

#endif
