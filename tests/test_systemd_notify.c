/* test_systemd_notify.c - proves kvtierd speaks systemd's notify protocol
 * (Type=notify, WatchdogSec=): started with $NOTIFY_SOCKET pointing at a
 * datagram socket of ours and $WATCHDOG_USEC=200000 (no $WATCHDOG_PID,
 * which sd_watchdog_enabled accepts as "this process"), it sends READY=1
 * only once its data socket accepts connections, together with a STATUS=
 * line of live figures; at least 3 WATCHDOG=1 within about a second
 * (it pings at half the interval); and STOPPING=1 after SIGTERM, then
 * exits 0. Without $NOTIFY_SOCKET the same daemon serves as always (the
 * other integration tests). */
#include "tests/helpers.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static struct test_daemon d;
static int notify_fd = -1;

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* One notify datagram into buf (NUL-terminated), waiting up to timeout_ms;
 * returns its length or -1 on timeout. */
static int next_message(char *buf, size_t cap, int timeout_ms)
{
    struct pollfd p = { .fd = notify_fd, .events = POLLIN };

    if (poll(&p, 1, timeout_ms) <= 0)
        return -1;
    ssize_t n = recv(notify_fd, buf, cap - 1, 0);
    if (n < 0)
        return -1;
    buf[n] = '\0';
    return (int)n;
}

/* True when the newline-separated message has exactly this line. */
static int has_line(const char *msg, const char *line)
{
    size_t len = strlen(line);
    for (const char *p = msg; (p = strstr(p, line)); p += len)
        if ((p == msg || p[-1] == '\n') && (p[len] == '\n' || p[len] == '\0'))
            return 1;
    return 0;
}

static void start_notified_daemon(void)
{
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    char bin[512], notify_path[320];

    memset(&d, 0, sizeof(d));
    snprintf(d.dir, sizeof(d.dir), "/var/tmp/kvtier-notify-XXXXXX");
    assert_non_null(mkdtemp(d.dir));
    snprintf(d.socket, sizeof(d.socket), "%s/kvtier.sock", d.dir);
    snprintf(d.admin_socket, sizeof(d.admin_socket), "%s/admin.sock", d.dir);
    snprintf(d.log, sizeof(d.log), "%s/kvtierd.log", d.dir);
    snprintf(notify_path, sizeof(notify_path), "%s/notify.sock", d.dir);
    snprintf(bin, sizeof(bin), "%s/kvtierd", test_build_dir());

    notify_fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    assert_true(notify_fd >= 0);
    assert_true(strlen(notify_path) < sizeof(sa.sun_path));
    memcpy(sa.sun_path, notify_path, strlen(notify_path) + 1);
    assert_int_equal(bind(notify_fd, (struct sockaddr *)&sa, sizeof(sa)), 0);

    d.pid = fork();
    assert_true(d.pid >= 0);
    if (d.pid == 0) {
        int fd = open(d.log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
        if (fd < 0 || dup2(fd, 2) < 0)
            _exit(126);
        setenv("NOTIFY_SOCKET", notify_path, 1);
        setenv("WATCHDOG_USEC", "200000", 1);
        unsetenv("WATCHDOG_PID");
        execl(bin, bin, "--socket", d.socket, "--admin-socket", d.admin_socket,
              "--hot-bytes", "64M", "--log-level", "debug", (char *)NULL);
        _exit(127);
    }
}

static void ready_watchdog_stopping(void **state)
{
    (void)state;
    char msg[1024];
    int64_t deadline;
    int watchdogs = 0, ready = 0, stopping = 0, st;

    start_notified_daemon();

    /* READY=1 must not come before the socket accepts: check the socket
     * the moment READY=1 arrives. */
    deadline = now_ms() + 10000;
    while (!ready && now_ms() < deadline) {
        if (next_message(msg, sizeof(msg), 100) < 0) {
            if (waitpid(d.pid, &st, WNOHANG) == d.pid) {
                d.pid = 0;
                fail_msg("kvtierd exited during start (status 0x%x); log %s", st, d.log);
            }
            continue;
        }
        if (has_line(msg, "READY=1")) {
            ready = 1;
            if (!test_socket_accepts(d.socket))
                fail_msg("READY=1 sent before %s accepts connections", d.socket);
            /* The first STATUS= rides along, with the live figures. */
            if (!strstr(msg, "STATUS=") || !strstr(msg, "clients") || !strstr(msg, "MiB"))
                fail_msg("READY=1 without a STATUS= line of figures: '%s'", msg);
        }
    }
    if (!ready)
        fail_msg("no READY=1 within 10 s; log %s", d.log);

    /* WatchdogSec=200ms: pings every 100 ms, so >= 3 in a second leaves
     * room for a slow (ASan, loaded) machine. */
    deadline = now_ms() + 1000;
    while (now_ms() < deadline) {
        int left = (int)(deadline - now_ms());
        if (next_message(msg, sizeof(msg), left > 0 ? left : 0) < 0)
            continue;
        if (has_line(msg, "WATCHDOG=1"))
            watchdogs++;
    }
    if (watchdogs < 3)
        fail_msg("%d WATCHDOG=1 within 1 s, want >= 3", watchdogs);

    /* The daemon keeps pinging until SIGTERM; STOPPING=1 must follow it.
     * The datagrams stay queued after it exits, so read them all. */
    assert_int_equal(kill(d.pid, SIGTERM), 0);
    deadline = now_ms() + 10000;
    while (!stopping && now_ms() < deadline)
        if (next_message(msg, sizeof(msg), 100) >= 0 && has_line(msg, "STOPPING=1"))
            stopping = 1;
    if (!stopping)
        fail_msg("no STOPPING=1 within 10 s of SIGTERM; log %s", d.log);
    assert_int_equal(waitpid(d.pid, &st, 0), d.pid);
    d.pid = 0;
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
        fail_msg("kvtierd did not exit 0 on SIGTERM (status 0x%x); log %s", st, d.log);
}

static int cleanup(void **state)
{
    (void)state;
    daemon_cleanup(&d);
    if (notify_fd >= 0)
        close(notify_fd);
    notify_fd = -1;
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(ready_watchdog_stopping, cleanup),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
