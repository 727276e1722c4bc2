/* memcached_util.c - start, stop and poke real memcached servers. */
#include "tests/memcached_util.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

static pid_t started[64];
static int n_started;
static pid_t owner;

static void kill_all(void)
{
    if (getpid() != owner)
        return;                   /* a forked test child exiting */
    for (int i = 0; i < n_started; i++)
        if (started[i] > 0) {
            kill(started[i], SIGCONT);
            kill(started[i], SIGKILL);
            waitpid(started[i], NULL, 0);
        }
    n_started = 0;
}

static void forget(pid_t pid)
{
    for (int i = 0; i < n_started; i++)
        if (started[i] == pid)
            started[i] = 0;
}

uint16_t mc_free_port(void)
{
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t len = sizeof(a);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    uint16_t port = 0;

    if (fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0 &&
        getsockname(fd, (struct sockaddr *)&a, &len) == 0)
        port = ntohs(a.sin_port);
    if (fd >= 0)
        close(fd);
    return port;
}

static int connect_port(uint16_t port)
{
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

    if (fd < 0)
        return -errno;
    if (connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0) {
        int e = -errno;
        close(fd);
        return e;
    }
    struct timeval tv = { .tv_sec = 5 };
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    return fd;
}

int mc_start(struct mc_pool *p, int n, unsigned mem_mb, const char *item_max)
{
    const char *bin = "/usr/bin/memcached";
    size_t at = 0;

    memset(p, 0, sizeof(*p));
    if (access(bin, X_OK))
        return -ENOENT;
    if (!owner) {
        owner = getpid();
        atexit(kill_all);
    }
    for (int i = 0; i < n && i < MC_MAX; i++) {
        char port[8], mem[16];
        p->port[i] = mc_free_port();
        snprintf(port, sizeof(port), "%u", p->port[i]);
        snprintf(mem, sizeof(mem), "%u", mem_mb);
        pid_t pid = fork();
        if (pid < 0)
            return -errno;
        if (pid == 0) {
            /* Dies with the test, whatever kills it. */
            prctl(PR_SET_PDEATHSIG, SIGKILL);
            /* Its chatter about connections the tests cut is noise. */
            int null = open("/dev/null", O_WRONLY);
            if (null >= 0) {
                dup2(null, 1);
                dup2(null, 2);
            }
            /* memcached refuses an item size below its slab chunk size
             * (512 KiB): items of some KiB need a smaller one. */
            const char *small = item_max[strlen(item_max) - 1] == 'k' ? "-o" : NULL;
            execl(bin, bin, "-l", "127.0.0.1", "-p", port, "-U", "0", "-m", mem,
                  "-I", item_max, "-t", "2", "-u", "root", small, "slab_chunk_max=16384",
                  (char *)NULL);
            _exit(127);
        }
        p->pid[i] = pid;
        if (n_started < 64)
            started[n_started++] = pid;
        p->n++;
        at += (size_t)snprintf(p->list + at, sizeof(p->list) - at, "%s127.0.0.1:%u",
                               i ? "," : "memcached://", p->port[i]);
    }
    for (int i = 0; i < p->n; i++) {
        int fd = -1;
        for (int t = 0; t < 500 && fd < 0; t++) {     /* up to 5 s */
            fd = connect_port(p->port[i]);
            if (fd < 0)
                usleep(10000);
        }
        if (fd < 0)
            return -ETIMEDOUT;
        close(fd);
    }
    return 0;
}

void mc_kill(struct mc_pool *p, int i)
{
    if (p->pid[i] <= 0)
        return;
    kill(p->pid[i], SIGCONT);
    kill(p->pid[i], SIGKILL);
    waitpid(p->pid[i], NULL, 0);
    forget(p->pid[i]);
    p->pid[i] = 0;
}

void mc_pause(struct mc_pool *p, int i, int paused)
{
    if (p->pid[i] > 0)
        kill(p->pid[i], paused ? SIGSTOP : SIGCONT);
}

void mc_stop(struct mc_pool *p)
{
    for (int i = 0; i < p->n; i++)
        mc_kill(p, i);
}

static int send_all(int fd, const void *buf, size_t len)
{
    for (const char *b = buf; len;) {
        ssize_t w = send(fd, b, len, MSG_NOSIGNAL);
        if (w <= 0)
            return -EIO;
        b += w;
        len -= (size_t)w;
    }
    return 0;
}

/* Read until the buffer ends with want. */
static ssize_t recv_until(int fd, char *buf, size_t cap, const char *want)
{
    size_t got = 0, wl = strlen(want);

    while (got < cap) {
        ssize_t r = recv(fd, buf + got, cap - got, 0);
        if (r <= 0)
            return -EIO;
        got += (size_t)r;
        if (got >= wl && memcmp(buf + got - wl, want, wl) == 0)
            return (ssize_t)got;
    }
    return -EMSGSIZE;
}

int mc_set(const struct mc_pool *p, int i, const char *name, const void *val, size_t len)
{
    char hdr[320], rep[64];
    int fd = connect_port(p->port[i]), rc;

    if (fd < 0)
        return fd;
    snprintf(hdr, sizeof(hdr), "set %s 0 0 %zu\r\n", name, len);
    rc = send_all(fd, hdr, strlen(hdr));
    if (!rc)
        rc = send_all(fd, val, len);
    if (!rc)
        rc = send_all(fd, "\r\n", 2);
    if (!rc)
        rc = recv_until(fd, rep, sizeof(rep), "\r\n") > 0 && !strncmp(rep, "STORED", 6)
                 ? 0 : -EIO;
    close(fd);
    return rc;
}

ssize_t mc_get(const struct mc_pool *p, int i, const char *name, void **out)
{
    size_t cap = 64 << 20, got = 0, need = 0, hdr = 0;
    char req[320], *buf = malloc(cap);
    int fd = connect_port(p->port[i]);
    ssize_t rc = -EIO;

    if (!buf || fd < 0) {
        free(buf);
        if (fd >= 0)
            close(fd);
        return fd < 0 ? fd : -ENOMEM;
    }
    snprintf(req, sizeof(req), "get %s\r\n", name);
    if (send_all(fd, req, strlen(req)))
        goto out;
    /* "END\r\n" alone, or "VALUE name flags len\r\n", len bytes, "\r\nEND\r\n". */
    while (got < cap && (!need || got < need)) {
        ssize_t r = recv(fd, buf + got, cap - got, 0);
        if (r <= 0)
            goto out;
        got += (size_t)r;
        if (!need) {
            char *eol = memmem(buf, got, "\r\n", 2);
            if (!eol)
                continue;
            if (got >= 5 && !memcmp(buf, "END\r\n", 5)) {
                rc = -ENOENT;
                goto out;
            }
            size_t len;
            unsigned flags;
            *eol = '\0';
            if (sscanf(buf, "VALUE %*s %u %zu", &flags, &len) != 2)
                goto out;
            hdr = (size_t)(eol - buf) + 2;
            need = hdr + len + 7;
        }
    }
    if (need && got >= need) {
        size_t len = need - hdr - 7;
        *out = malloc(len ? len : 1);
        if (*out) {
            memcpy(*out, buf + hdr, len);
            rc = (ssize_t)len;
        }
    }
out:
    close(fd);
    free(buf);
    return rc;
}
