/* helpers.c - starts real daemons and checks real data for the integration tests. */
#include "tests/helpers.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "proto/proto.h"
#include "simd/simd.h"

#define MAX_ARGS 40

const char *test_build_dir(void)
{
    const char *b = getenv("KVTIER_BUILD");
    return b && *b ? b : "build";
}

int test_socket_accepts(const char *path)
{
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    size_t n = strlen(path);
    int ok = 0, fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);

    if (fd >= 0 && n < sizeof(sa.sun_path)) {
        memcpy(sa.sun_path, path, n + 1);
        ok = connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0;
    }
    if (fd >= 0)
        close(fd);
    return ok;
}

int test_file_contains(const char *path, const char *text)
{
    char buf[65536];
    FILE *f = fopen(path, "r");
    size_t n = f ? fread(buf, 1, sizeof(buf) - 1, f) : 0;

    if (f)
        fclose(f);
    buf[n] = '\0';
    return strstr(buf, text) != NULL;
}

/* Daemons still running when the test program exits (a failed assertion
 * longjmps past daemon_stop) are killed, so no test leaves one behind. */
#define MAX_LIVE 16
static pid_t live[MAX_LIVE];
static pid_t owner;

static void kill_leftovers(void)
{
    if (getpid() != owner)
        return;                 /* a forked child exiting: not ours to kill */
    for (int i = 0; i < MAX_LIVE; i++)
        if (live[i] > 0) {
            kill(live[i], SIGKILL);
            waitpid(live[i], NULL, 0);
        }
}

static void track(pid_t pid, pid_t gone)
{
    if (!owner) {
        owner = getpid();
        atexit(kill_leftovers);
    }
    for (int i = 0; i < MAX_LIVE; i++)
        if (live[i] == gone) {
            live[i] = pid;
            return;
        }
}

/* Fork and exec kvtierd with d's sockets, its stderr appended to d's log.
 * nofile: RLIMIT_NOFILE of the daemon, 0 to inherit ours. */
static void spawn_exec(struct test_daemon *d, unsigned nofile, va_list ap)
{
    char bin[512];
    const char *argv[MAX_ARGS];
    int n = 0;

    snprintf(bin, sizeof(bin), "%s/kvtierd", test_build_dir());
    argv[n++] = bin;
    argv[n++] = "--socket";
    argv[n++] = d->socket;
    argv[n++] = "--admin-socket";
    argv[n++] = d->admin_socket;
    argv[n++] = "--log-level";
    argv[n++] = "debug";
    for (const char *a; (a = va_arg(ap, const char *)) && n < MAX_ARGS - 1;)
        argv[n++] = a;
    argv[n] = NULL;

    d->pid = fork();
    assert_true(d->pid >= 0);
    if (d->pid == 0) {
        int fd = open(d->log, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0 && fd != 2) {
            dup2(fd, 2);
            close(fd);
        }
        struct rlimit lim = { .rlim_cur = nofile, .rlim_max = nofile };
        if (nofile && setrlimit(RLIMIT_NOFILE, &lim) < 0)
            _exit(126);
        execv(bin, (char *const *)argv);
        _exit(127);
    }
    track(d->pid, 0);
}

static void spawn(struct test_daemon *d, unsigned nofile, va_list ap)
{
    spawn_exec(d, nofile, ap);
    for (int i = 0; i < 500; i++) {         /* up to 5 s */
        if (test_socket_accepts(d->socket))
            return;
        int st;
        if (waitpid(d->pid, &st, WNOHANG) == d->pid) {
            track(0, d->pid);
            d->pid = 0;
            fail_msg("kvtierd exited during start (status %d); log %s", st, d->log);
        }
        usleep(10000);
    }
    fail_msg("kvtierd did not accept on %s within 5 s", d->socket);
}

static void fresh_dir(struct test_daemon *d)
{
    memset(d, 0, sizeof(*d));
    snprintf(d->dir, sizeof(d->dir), "/var/tmp/kvtier-test-XXXXXX");
    assert_non_null(mkdtemp(d->dir));
    chmod(d->dir, 0755);                   /* other uids reach the socket */
    snprintf(d->socket, sizeof(d->socket), "%s/kvtier.sock", d->dir);
    snprintf(d->admin_socket, sizeof(d->admin_socket), "%s/admin.sock", d->dir);
    snprintf(d->log, sizeof(d->log), "%s/kvtierd.log", d->dir);
}

void daemon_start(struct test_daemon *d, ...)
{
    va_list ap;

    fresh_dir(d);
    va_start(ap, d);
    spawn(d, 0, ap);
    va_end(ap);
}

void daemon_start_nofile(struct test_daemon *d, unsigned nofile, ...)
{
    va_list ap;

    fresh_dir(d);
    va_start(ap, nofile);
    spawn(d, nofile, ap);
    va_end(ap);
}

void daemon_restart(struct test_daemon *d, ...)
{
    va_list ap;

    va_start(ap, d);
    spawn(d, 0, ap);
    va_end(ap);
}

int daemon_start_status(struct test_daemon *d, ...)
{
    va_list ap;
    int st;

    va_start(ap, d);
    spawn_exec(d, 0, ap);
    va_end(ap);
    for (int i = 0; i < 1000; i++) {         /* up to 10 s */
        if (waitpid(d->pid, &st, WNOHANG) == d->pid) {
            track(0, d->pid);
            d->pid = 0;
            return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        }
        if (test_socket_accepts(d->socket))
            break;                          /* it started */
        usleep(10000);
    }
    daemon_kill(d);
    return -1;
}

int daemon_terminate(struct test_daemon *d)
{
    int st;

    if (d->pid <= 0)
        return 0;
    kill(d->pid, SIGTERM);
    assert_int_equal(waitpid(d->pid, &st, 0), d->pid);
    track(0, d->pid);
    d->pid = 0;
    return st;
}

void daemon_stop(struct test_daemon *d)
{
    int st = daemon_terminate(d);

    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
        fail_msg("kvtierd did not exit 0 on SIGTERM (status 0x%x); log %s", st, d->log);
}

void daemon_kill(struct test_daemon *d)
{
    if (d->pid <= 0)
        return;
    kill(d->pid, SIGKILL);
    waitpid(d->pid, NULL, 0);
    track(0, d->pid);
    d->pid = 0;
}

void daemon_cleanup(struct test_daemon *d)
{
    char cmd[400];

    daemon_kill(d);
    if (d->dir[0]) {
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", d->dir);
        if (system(cmd) != 0)
            fprintf(stderr, "cannot remove %s\n", d->dir);
    }
    d->dir[0] = '\0';
}

int daemon_fd_count(const struct test_daemon *d)
{
    char path[64];
    int n = 0;

    snprintf(path, sizeof(path), "/proc/%d/fd", (int)d->pid);
    DIR *dir = opendir(path);
    if (!dir)
        return -1;
    for (struct dirent *e; (e = readdir(dir));)
        if (e->d_name[0] != '.')
            n++;
    closedir(dir);
    return n;
}

int daemon_wait_fd_count(const struct test_daemon *d, int want)
{
    int n = daemon_fd_count(d);

    for (int i = 0; i < 1000 && n != want; i++) {
        usleep(10000);
        n = daemon_fd_count(d);
    }
    return n;
}

int daemon_idle_fd_count(const struct test_daemon *d)
{
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    char reply[512];
    size_t path_len = strlen(d->socket);
    int n = -1, fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);

    if (fd < 0 || path_len >= sizeof(sa.sun_path))
        goto out;
    memcpy(sa.sun_path, d->socket, path_len + 1);
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
        goto out;
    /* A 4-byte packet is too short to be a request: the daemon answers it
     * with an error and carries on. The second answer comes from a later
     * turn of the loop than any hang-up pending before the first. */
    for (int i = 0; i < 2; i++)
        if (send(fd, "junk", 4, MSG_NOSIGNAL) != 4 || recv(fd, reply, sizeof(reply), 0) <= 0)
            goto out;
    n = daemon_fd_count(d) - 1;
out:
    if (fd >= 0)
        close(fd);
    return n;
}

long daemon_cpu_ticks(const struct test_daemon *d)
{
    char path[64], buf[1024];
    unsigned long utime, stime;
    FILE *f;

    snprintf(path, sizeof(path), "/proc/%d/stat", (int)d->pid);
    f = fopen(path, "r");
    if (!f)
        return -1;
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    /* Fields 14 and 15 follow the command name, which may hold spaces but
     * ends at the last ')'. */
    char *p = strrchr(buf, ')');
    if (!p || sscanf(p + 1, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu",
                     &utime, &stime) != 2)
        return -1;
    return (long)(utime + stime);
}

size_t test_file_lines(const char *path)
{
    FILE *f = fopen(path, "r");
    size_t n = 0;
    int ch;

    if (!f)
        return 0;
    while ((ch = getc(f)) != EOF)
        n += ch == '\n';
    fclose(f);
    return n;
}

int shm_kvtier_files(void)
{
    int n = 0;
    DIR *dir = opendir("/dev/shm");

    if (!dir)
        return 0;
    for (struct dirent *e; (e = readdir(dir));)
        if (strstr(e->d_name, "kvtier"))
            n++;
    closedir(dir);
    return n;
}

uint64_t daemon_rss_bytes(const struct test_daemon *d)
{
    char path[64];
    unsigned long long size = 0, rss = 0;

    snprintf(path, sizeof(path), "/proc/%d/statm", (int)d->pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    if (fscanf(f, "%llu %llu", &size, &rss) != 2)
        rss = 0;
    fclose(f);
    return (uint64_t)rss * (uint64_t)sysconf(_SC_PAGESIZE);
}

kvt_model test_model(const char *name, uint32_t layers, uint32_t heads, uint32_t dim,
                     kvt_dtype dtype, uint32_t chunk_tokens)
{
    return (kvt_model){ .name = name, .n_layers = layers, .n_kv_heads = heads,
                        .head_dim = dim, .dtype = dtype, .chunk_tokens = chunk_tokens };
}

/* splitmix64: cheap, deterministic, good enough to decorrelate values. */
static uint64_t mix(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

float test_value(uint64_t seed, uint32_t layer, uint32_t token, uint32_t elem)
{
    uint64_t h = mix(seed ^ mix(((uint64_t)layer << 40) ^ ((uint64_t)token << 12) ^ elem));
    /* Sum of 4 uniforms: close enough to Gaussian for KV-like data. */
    double g = 0;
    for (int i = 0; i < 4; i++)
        g += (double)((h >> (16 * i)) & 0xffff) / 65535.0;
    g = (g - 2.0) * 1.7;
    if (elem % 61 == 7)                 /* outlier channels */
        g *= 12.0;
    return (float)g;
}

float test_to_f32(const void *buf, kvt_dtype dt, size_t i)
{
    switch (dt) {
    case KVT_F32: return ((const float *)buf)[i];
    case KVT_F16: return simd_f16_to_f32(((const uint16_t *)buf)[i]);
    case KVT_BF16: return simd_bf16_to_f32(((const uint16_t *)buf)[i]);
    }
    return NAN;
}

void test_from_f32(void *buf, kvt_dtype dt, size_t i, float v)
{
    switch (dt) {
    case KVT_F32: ((float *)buf)[i] = v; break;
    case KVT_F16: ((uint16_t *)buf)[i] = simd_f32_to_f16(v); break;
    case KVT_BF16: ((uint16_t *)buf)[i] = simd_f32_to_bf16(v); break;
    }
}

void test_fill(void *buf, kvt_dtype dt, uint64_t seed, uint32_t layer,
               uint32_t token_start, uint32_t n_tokens, uint32_t heads, uint32_t dim)
{
    size_t row = (size_t)heads * dim;
    for (uint32_t t = 0; t < n_tokens; t++)
        for (size_t e = 0; e < row; e++)
            test_from_f32(buf, dt, t * row + e,
                          test_value(seed, layer, token_start + t, (uint32_t)e));
}

/* Relative rounding unit of a dtype, for the "plus the rounding of the
 * client dtype" part of the bound. */
static float dtype_ulp(kvt_dtype dt)
{
    return dt == KVT_F32 ? 0x1p-23f : dt == KVT_F16 ? 0x1p-10f : 0x1p-7f;
}

static size_t count_mismatches(const void *buf, kvt_dtype dt, uint64_t seed, uint32_t layer,
                               uint32_t token_start, uint32_t n_tokens, uint32_t heads,
                               uint32_t dim, int exact, int report)
{
    size_t bad = 0;
    float *ref = malloc(dim * sizeof(float));

    for (uint32_t t = 0; t < n_tokens; t++) {
        for (uint32_t h = 0; h < heads; h++) {
            float amax = 0;
            size_t base = ((size_t)t * heads + h) * dim;
            for (uint32_t d = 0; d < dim; d++) {
                /* The stored value is what the storing client could
                 * represent; tests store in f16 or f32, both hold this. */
                ref[d] = test_value(seed, layer, token_start + t, h * dim + d);
                if (fabsf(ref[d]) > amax)
                    amax = fabsf(ref[d]);
            }
            for (uint32_t d = 0; d < dim; d++) {
                float got = test_to_f32(buf, dt, base + d);
                float bound = exact ? 0 : amax / 127.0f;
                /* The stored value itself went through the storing client's
                 * dtype (f16 in most tests), so allow its rounding too. */
                bound += (fabsf(ref[d]) + bound) * (dtype_ulp(dt) + 0x1p-10f);
                if (!(fabsf(got - ref[d]) <= bound)) {
                    if (!bad && report)
                        fprintf(stderr, "value mismatch: layer %u token %u head %u dim %u: "
                                "got %g want %g (bound %g)\n", layer, token_start + t,
                                h, d, got, ref[d], bound);
                    bad++;
                }
            }
        }
    }
    free(ref);
    return bad;
}

size_t test_check(const void *buf, kvt_dtype dt, uint64_t seed, uint32_t layer,
                  uint32_t token_start, uint32_t n_tokens, uint32_t heads, uint32_t dim,
                  int exact)
{
    return count_mismatches(buf, dt, seed, layer, token_start, n_tokens, heads, dim, exact, 1);
}

int test_matches(const void *buf, kvt_dtype dt, uint64_t seed, uint32_t layer,
                 uint32_t token_start, uint32_t n_tokens, uint32_t heads, uint32_t dim)
{
    return count_mismatches(buf, dt, seed, layer, token_start, n_tokens, heads, dim, 0, 0) == 0;
}

int test_in_child(int (*fn)(void *arg), void *arg)
{
    int st;
    pid_t pid = fork();

    if (pid < 0)
        return -1;
    if (pid == 0)
        _exit(fn(arg));
    if (waitpid(pid, &st, 0) != pid)
        return -1;
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

int test_become_uid(uid_t uid)
{
    if (setgroups(0, NULL) || setgid((gid_t)uid) || setuid(uid))
        return -1;
    return getuid() == uid && geteuid() == uid ? 0 : -1;
}

static int admin_connect(const char *path)
{
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    int fd;

    if (strlen(path) >= sizeof(sa.sun_path))
        return -ENAMETOOLONG;
    memcpy(sa.sun_path, path, strlen(path) + 1);
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        int rc = -errno;
        close(fd);
        return rc;
    }
    return fd;
}

int test_admin_connect(const struct test_daemon *d)
{
    int fd = -ECONNREFUSED;

    /* daemon_start returns once the data socket accepts; the admin socket
     * comes up a moment later in the same start-up. */
    for (int i = 0; i < 500 && fd < 0; i++) {
        fd = admin_connect(d->admin_socket);
        if (fd < 0)
            usleep(10000);
    }
    return fd;
}

int admin_request(const struct test_daemon *d, const char *request,
                  char *reply, size_t len)
{
    size_t req_len = strlen(request), at = 0;
    int fd = test_admin_connect(d), rc = 0;

    if (fd < 0)
        return fd;
    for (size_t sent = 0; sent <= req_len;) {
        /* The request, then its newline as the last byte. */
        const char *p = sent < req_len ? request + sent : "\n";
        size_t n = sent < req_len ? req_len - sent : 1;
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w <= 0) {
            rc = w < 0 ? -errno : -EPIPE;
            goto out;
        }
        sent += (size_t)w;
    }
    for (;;) {
        char ch;
        ssize_t n = recv(fd, &ch, 1, 0);
        if (n <= 0) {
            rc = n < 0 ? -errno : -ECONNRESET;
            goto out;
        }
        if (ch == '\n')
            break;
        if (at + 1 >= len) {
            rc = -EMSGSIZE;
            goto out;
        }
        reply[at++] = ch;
    }
out:
    if (len)
        reply[at < len ? at : len - 1] = '\0';
    close(fd);
    return rc;
}

int test_raw_connect(const char *path)
{
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    size_t path_len = strlen(path);
    int fd, rc;

    if (path_len >= sizeof(sa.sun_path))
        return -ENAMETOOLONG;
    memcpy(sa.sun_path, path, path_len + 1);
    fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        rc = -errno;
        close(fd);
        return rc;
    }
    return fd;
}

int test_raw_send(int sock, const void *msg, size_t len, const int *fds, int n_fds)
{
    struct iovec iov = { .iov_base = (void *)msg, .iov_len = len };
    union {
        struct cmsghdr align;
        char buf[CMSG_SPACE(16 * sizeof(int))];
    } ctl;
    struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };

    if (n_fds < 0 || n_fds > 16)
        return -EINVAL;
    if (n_fds > 0) {
        memset(&ctl, 0, sizeof(ctl));
        mh.msg_control = ctl.buf;
        mh.msg_controllen = CMSG_SPACE((size_t)n_fds * sizeof(int));
        struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
        cm->cmsg_level = SOL_SOCKET;
        cm->cmsg_type = SCM_RIGHTS;
        cm->cmsg_len = CMSG_LEN((size_t)n_fds * sizeof(int));
        memcpy(CMSG_DATA(cm), fds, (size_t)n_fds * sizeof(int));
    }
    ssize_t n = sendmsg(sock, &mh, MSG_NOSIGNAL);
    if (n < 0)
        return -errno;
    return n == (ssize_t)len ? 0 : -EMSGSIZE;
}

int test_raw_reply(int sock, struct kvt_reply *rep, int timeout_ms)
{
    struct pollfd p = { .fd = sock, .events = POLLIN };

    if (poll(&p, 1, timeout_ms) != 1)
        return -ETIMEDOUT;
    ssize_t n = recv(sock, rep, sizeof(*rep), MSG_TRUNC | MSG_DONTWAIT);
    if (n < 0)
        return errno == ECONNRESET ? -ECONNRESET : -errno;
    if (n == 0)
        return -ECONNRESET;
    if (n != (ssize_t)sizeof(*rep) || rep->hdr.magic != KVT_PROTO_MAGIC ||
        rep->hdr.version != KVT_PROTO_VERSION || rep->hdr.len != sizeof(*rep) ||
        !(rep->hdr.op & KVT_OP_REPLY))
        return -EPROTO;
    rep->reason[sizeof(rep->reason) - 1] = '\0';
    return 0;
}

int test_small_fs_mount(struct test_small_fs *fs, const char *size)
{
    char opts[64];
    int rc;

    memset(fs, 0, sizeof(*fs));
    if (geteuid() != 0)
        return -EPERM;
    snprintf(fs->top, sizeof(fs->top), "/var/tmp/kvtier-full-XXXXXX");
    assert_non_null(mkdtemp(fs->top));
    snprintf(fs->mnt, sizeof(fs->mnt), "%s/mnt", fs->top);
    snprintf(fs->filler, sizeof(fs->filler), "%s/filler", fs->mnt);
    assert_int_equal(mkdir(fs->mnt, 0755), 0);
    snprintf(opts, sizeof(opts), "size=%s,mode=0755", size);
    if (mount("kvtier-full", fs->mnt, "tmpfs", 0, opts) != 0) {
        rc = -errno;
        fprintf(stderr, "cannot mount a tmpfs: %s; skipped\n", strerror(-rc));
        test_small_fs_unmount(fs);
        return rc;
    }
    fs->mounted = 1;
    return 0;
}

void test_small_fs_unmount(struct test_small_fs *fs)
{
    if (fs->mounted && umount2(fs->mnt, MNT_DETACH) == 0)
        fs->mounted = 0;
    if (fs->top[0] && !fs->mounted) {
        rmdir(fs->mnt);
        rmdir(fs->top);
        fs->top[0] = '\0';
    }
}

void test_small_fs_fill(const struct test_small_fs *fs)
{
    static char buf[65536];
    int fd = open(fs->filler, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);

    assert_true(fd >= 0);
    for (size_t step = sizeof(buf); step >= 512; step /= 2)
        while (write(fd, buf, step) > 0)
            ;
    close(fd);
}

void test_small_fs_free(const struct test_small_fs *fs)
{
    assert_int_equal(unlink(fs->filler), 0);
}

void test_punch_hole(const char *path, off_t off, off_t len)
{
    int fd = open(path, O_RDWR | O_CLOEXEC);

    assert_true(fd >= 0);
    assert_int_equal(fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, off, len), 0);
    close(fd);
}

int test_store_contexts(kvt_client *c, const struct test_ctx_shape *s, int first, int count)
{
    size_t bytes = (size_t)s->tokens * s->heads * s->dim * 2;
    uint8_t *k = malloc(bytes), *v = malloc(bytes);
    int rc = k && v ? 0 : -ENOMEM;

    for (int i = first; i < first + count && !rc; i++) {
        char name[32];
        snprintf(name, sizeof(name), "ctx-%d", i);
        for (uint32_t l = 0; l < s->layers && !rc; l++) {
            test_fill(k, KVT_F16, (uint64_t)i * 2, l, 0, s->tokens, s->heads, s->dim);
            test_fill(v, KVT_F16, (uint64_t)i * 2 + 1, l, 0, s->tokens, s->heads, s->dim);
            rc = kvt_store(c, name, l, 0, s->tokens, k, v);
        }
    }
    free(k);
    free(v);
    return rc;
}

int test_check_context(kvt_client *c, const struct test_ctx_shape *s, int i)
{
    size_t bytes = (size_t)s->tokens * s->heads * s->dim * 2;
    uint8_t *k = malloc(bytes), *v = malloc(bytes);
    char name[32];
    int rc = k && v ? 0 : -ENOMEM;

    snprintf(name, sizeof(name), "ctx-%d", i);
    for (uint32_t l = 0; l < s->layers && !rc; l++) {
        rc = kvt_fetch(c, name, l, 0, s->tokens, k, v);
        if (rc == 0 &&
            (test_check(k, KVT_F16, (uint64_t)i * 2, l, 0, s->tokens, s->heads, s->dim, 0) ||
             test_check(v, KVT_F16, (uint64_t)i * 2 + 1, l, 0, s->tokens, s->heads, s->dim, 0)))
            rc = 1;
    }
    free(k);
    free(v);
    return rc;
}

double test_stat(const struct test_daemon *d, const char *section, const char *name)
{
    char reply[16384];

    CHECK_OK(admin_request(d, "{\"cmd\":\"stats\"}", reply, sizeof(reply)));
    cJSON *r = cJSON_Parse(reply);
    assert_non_null(r);
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(
        cJSON_GetObjectItemCaseSensitive(r, section), name);
    if (!cJSON_IsNumber(v))
        fail_msg("stats has no %s.%s: %s", section, name, reply);
    double n = v->valuedouble;
    cJSON_Delete(r);
    return n;
}

void test_evict_hot(const struct test_daemon *d)
{
    char reply[512];

    CHECK_OK(admin_request(d, "{\"cmd\":\"evict\",\"tier\":\"hot\"}", reply, sizeof(reply)));
    if (!strstr(reply, "\"ok\":true"))
        fail_msg("evict --tier hot: %s", reply);
}

void test_remove_dir(const char *dir)
{
    char cmd[512];

    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "cannot remove %s\n", dir);
}
