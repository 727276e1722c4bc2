/* test_fd_exhaustion.c - proves that kvtierd out of file descriptors neither
 * spins nor floods its log, and serves again once fds are free. The daemon
 * runs with RLIMIT_NOFILE 48; the test opens connections (and one admin
 * connection) until every fd of the daemon is used and more wait in the
 * listen backlogs, so both listening sockets stay readable. Over the next
 * 2 seconds the daemon writes only a few log lines (a spinning accept loop
 * writes hundreds of thousands) and uses little CPU (a spinning loop uses
 * all of a core); the bounds are loose on purpose, for a loaded machine.
 * When the connections close, a new data connection and the admin socket
 * are served again, and the log says what happened. */
#include "tests/helpers.h"

#include <dirent.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>

#include "proto/proto.h"

#define NOFILE 48
#define CONNS 80                       /* more than NOFILE: some wait in the backlog */
#define WINDOW_S 2

static struct test_daemon d;

static int admin_connect_raw(void)
{
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

    strcpy(sa.sun_path, d.admin_socket);
    if (fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        close(fd);
        fd = -1;
    }
    return fd;
}

/* The daemon's open fds numbered below its limit: all of them are in use
 * when this is NOFILE. (An fd inherited from the test's own environment may
 * sit above the limit, so the plain count is not the test.) */
static int fds_below_limit(void)
{
    char path[64];
    int n = 0;

    snprintf(path, sizeof(path), "/proc/%d/fd", (int)d.pid);
    DIR *dir = opendir(path);
    if (!dir)
        return -1;
    for (struct dirent *e; (e = readdir(dir));)
        if (e->d_name[0] != '.' && atoi(e->d_name) < NOFILE)
            n++;
    closedir(dir);
    return n;
}

static int wait_out_of_fds(void)
{
    for (int i = 0; i < 1000; i++) {        /* up to 10 s */
        if (fds_below_limit() == NOFILE)
            return 1;
        usleep(10000);
    }
    return 0;
}

static void out_of_fds_no_spin_and_recovers(void **state)
{
    (void)state;
    int socks[CONNS], n = 0;
    struct kvt_reply rep;
    char reply[4096];

    for (; n < CONNS; n++) {
        socks[n] = test_raw_connect(d.socket);
        if (socks[n] < 0)
            break;                     /* backlog full: enough */
    }
    assert_true(n > NOFILE);
    int admin = admin_connect_raw();
    assert_true(admin >= 0);
    if (!wait_out_of_fds())
        fail_msg("the daemon uses %d fds below its limit of %d", fds_below_limit(), NOFILE);

    size_t lines_before = test_file_lines(d.log);
    long cpu_before = daemon_cpu_ticks(&d);
    assert_true(cpu_before >= 0);
    sleep(WINDOW_S);
    long cpu_ticks = daemon_cpu_ticks(&d) - cpu_before;
    size_t lines = test_file_lines(d.log) - lines_before;
    long window_ticks = WINDOW_S * sysconf(_SC_CLK_TCK);
    fprintf(stderr, "out of fds for %d s: %zu log lines, %ld of %ld CPU ticks\n",
            WINDOW_S, lines, cpu_ticks, window_ticks);
    if (lines > 100)
        fail_msg("%zu log lines in %d s while out of fds", lines, WINDOW_S);
    if (cpu_ticks > window_ticks / 4)
        fail_msg("%ld CPU ticks of %ld in %d s while out of fds", cpu_ticks, window_ticks,
                 WINDOW_S);

    for (int i = 0; i < n; i++)
        close(socks[i]);
    close(admin);
    int sock = test_raw_connect(d.socket);
    assert_true(sock >= 0);
    CHECK_OK(test_raw_send(sock, "junk", 4, NULL, 0));
    CHECK_OK(test_raw_reply(sock, &rep, 30000));
    assert_int_equal(rep.status, -EBADMSG);
    close(sock);
    CHECK_OK(admin_request(&d, "{\"cmd\":\"stats\"}", reply, sizeof(reply)));
    assert_true(test_file_contains(d.log, "out of file descriptors"));
    assert_true(test_file_contains(d.log, "accepting connections again"));
}

static int start_daemon(void **state)
{
    (void)state;
    daemon_start_nofile(&d, NOFILE, NULL);
    return 0;
}

static int stop_daemon(void **state)
{
    (void)state;
    daemon_stop(&d);
    daemon_cleanup(&d);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(out_of_fds_no_spin_and_recovers),
    };
    return cmocka_run_group_tests(tests, start_daemon, stop_daemon);
}
