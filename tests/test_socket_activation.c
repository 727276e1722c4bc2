/* test_socket_activation.c - proves kvtierd serves on a socket systemd
 * passed it (ListenSequentialPacket=): run under `systemd-socket-activate
 * --seqpacket -l PATH`, which binds PATH and hands the fd over with
 * $LISTEN_FDS/$LISTEN_PID as systemd does, kvtierd takes the inherited fd
 * matching its --socket path instead of binding its own, serves clients
 * on it (store + fetch, twice, so accept ran until EAGAIN on a
 * non-blocking fd), stops on SIGTERM with exit 0 and leaves the socket
 * file alone, since systemd owns it. Only the data socket is activated:
 * systemd-socket-activate gives every -l socket the same type, and the
 * admin socket is a stream socket. */
#include "tests/helpers.h"

#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#define LAYERS 2
#define HEADS 2
#define DIM 64
#define T 40

static struct test_daemon d;

static void start_activated(void)
{
    char bin[512];

    memset(&d, 0, sizeof(d));
    snprintf(d.dir, sizeof(d.dir), "/var/tmp/kvtier-activate-XXXXXX");
    assert_non_null(mkdtemp(d.dir));
    snprintf(d.socket, sizeof(d.socket), "%s/kvtier.sock", d.dir);
    snprintf(d.admin_socket, sizeof(d.admin_socket), "%s/admin.sock", d.dir);
    snprintf(d.log, sizeof(d.log), "%s/kvtierd.log", d.dir);
    snprintf(bin, sizeof(bin), "%s/kvtierd", test_build_dir());

    d.pid = fork();
    assert_true(d.pid >= 0);
    if (d.pid == 0) {
        int fd = open(d.log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
        if (fd < 0 || dup2(fd, 2) < 0)
            _exit(126);
        /* Without --accept it binds, waits for the first connection (our
         * probe below) and execs kvtierd in place: same pid, so $LISTEN_PID
         * names kvtierd, as under systemd. */
        execlp("systemd-socket-activate", "systemd-socket-activate", "--seqpacket",
               "-l", d.socket, bin, "--socket", d.socket, "--admin-socket",
               d.admin_socket, "--hot-bytes", "64M", "--log-level", "debug", (char *)NULL);
        _exit(127);
    }
    for (int i = 0; i < 1000; i++) {                  /* up to 10 s */
        int st;
        if (waitpid(d.pid, &st, WNOHANG) == d.pid) {
            d.pid = 0;
            fail_msg("systemd-socket-activate/kvtierd exited (status 0x%x); log %s", st, d.log);
        }
        /* The socket accepts once bound, and the first connect starts
         * kvtierd; wait until kvtierd has taken the fd. */
        if (test_socket_accepts(d.socket) && test_file_contains(d.log, "using the socket-activated"))
            return;
        usleep(10000);
    }
    fail_msg("kvtierd did not take the activated socket %s within 10 s; log %s",
             d.socket, d.log);
}

static void store_and_fetch(const char *ctx, uint64_t seed)
{
    kvt_model m = test_model("activated", LAYERS, HEADS, DIM, KVT_F32, 0);
    kvt_client *c;
    float k[T * HEADS * DIM], v[T * HEADS * DIM];

    CHECK_OK(kvt_connect(d.socket, &m, &c));
    for (uint32_t l = 0; l < LAYERS; l++) {
        test_fill(k, KVT_F32, seed, l, 0, T, HEADS, DIM);
        test_fill(v, KVT_F32, seed + 1, l, 0, T, HEADS, DIM);
        CHECK_OK(kvt_store(c, ctx, l, 0, T, k, v));
    }
    for (uint32_t l = 0; l < LAYERS; l++) {
        memset(k, 0, sizeof(k));
        memset(v, 0, sizeof(v));
        CHECK_OK(kvt_fetch(c, ctx, l, 0, T, k, v));
        assert_int_equal(test_check(k, KVT_F32, seed, l, 0, T, HEADS, DIM, 0), 0);
        assert_int_equal(test_check(v, KVT_F32, seed + 1, l, 0, T, HEADS, DIM, 0), 0);
    }
    kvt_disconnect(c);
}

static void serves_on_activated_socket(void **state)
{
    (void)state;
    struct stat sb;
    int st = 0;

    start_activated();
    store_and_fetch("first", 11);
    store_and_fetch("second", 21);

    /* A blocking listen fd would hang the loop in accept() after the first
     * client and SIGTERM would go unheard: bound the wait. */
    assert_int_equal(kill(d.pid, SIGTERM), 0);
    pid_t got = 0;
    for (int i = 0; i < 1000 && got == 0; i++) {      /* up to 10 s */
        got = waitpid(d.pid, &st, WNOHANG);
        if (got == 0)
            usleep(10000);
    }
    if (got != d.pid)
        fail_msg("kvtierd did not exit within 10 s of SIGTERM; log %s", d.log);
    d.pid = 0;
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
        fail_msg("kvtierd did not exit 0 on SIGTERM (status 0x%x); log %s", st, d.log);
    /* The socket file is systemd's: kvtierd must not have unlinked it. */
    if (stat(d.socket, &sb) != 0 || !S_ISSOCK(sb.st_mode))
        fail_msg("kvtierd removed the activated socket %s", d.socket);
}

static int cleanup(void **state)
{
    (void)state;
    daemon_cleanup(&d);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(serves_on_activated_socket, cleanup),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
