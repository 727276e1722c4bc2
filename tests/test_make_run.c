/* test_make_run.c - proves that `make run` works in a build tree without
 * root: `kvtierd --dev` started in a fresh directory (as make run does,
 * after `mkdir -p var`) serves a client on ./var/kvtier.sock with its
 * embedded config, and on SIGTERM exits 0 and removes its socket files. */
#include "tests/helpers.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
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
#define HEADS 4
#define DIM 64
#define T 50

static struct test_daemon d;

/* `make run` is `mkdir -p var && $(B)/kvtierd --dev` in the tree; here the
 * tree is a fresh temp dir and the binary is the build's, by absolute path. */
static void start_dev_daemon(void)
{
    char rel[PATH_MAX], bin[PATH_MAX], var[400];

    memset(&d, 0, sizeof(d));
    snprintf(rel, sizeof(rel), "%s/kvtierd", test_build_dir());
    assert_non_null(realpath(rel, bin));
    snprintf(d.dir, sizeof(d.dir), "/var/tmp/kvtier-makerun-XXXXXX");
    assert_non_null(mkdtemp(d.dir));
    snprintf(var, sizeof(var), "%s/var", d.dir);
    assert_int_equal(mkdir(var, 0755), 0);
    snprintf(d.socket, sizeof(d.socket), "%s/var/kvtier.sock", d.dir);
    snprintf(d.admin_socket, sizeof(d.admin_socket), "%s/var/admin.sock", d.dir);
    snprintf(d.log, sizeof(d.log), "%s/kvtierd.log", d.dir);

    d.pid = fork();
    assert_true(d.pid >= 0);
    if (d.pid == 0) {
        int fd = open(d.log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
        if (fd < 0 || dup2(fd, 2) < 0 || chdir(d.dir) < 0)
            _exit(126);
        execl(bin, bin, "--dev", (char *)NULL);
        _exit(127);
    }
    for (int i = 0; i < 1000; i++) {                  /* up to 10 s */
        if (test_socket_accepts(d.socket))
            return;
        int st;
        if (waitpid(d.pid, &st, WNOHANG) == d.pid) {
            d.pid = 0;
            fail_msg("kvtierd --dev exited during start (status 0x%x); log %s", st, d.log);
        }
        usleep(10000);
    }
    fail_msg("kvtierd --dev did not accept on %s within 10 s; log %s", d.socket, d.log);
}

static void dev_daemon_serves_and_stops_cleanly(void **state)
{
    (void)state;
    kvt_model m = test_model("make-run", LAYERS, HEADS, DIM, KVT_F16, 0);
    kvt_client *c;
    uint16_t k[T * HEADS * DIM], v[T * HEADS * DIM];
    uint32_t len = 0;

    start_dev_daemon();
    CHECK_OK(kvt_connect(d.socket, &m, &c));
    for (uint32_t l = 0; l < LAYERS; l++) {
        test_fill(k, KVT_F16, 31, l, 0, T, HEADS, DIM);
        test_fill(v, KVT_F16, 32, l, 0, T, HEADS, DIM);
        CHECK_OK(kvt_store(c, "dev", l, 0, T, k, v));
    }
    CHECK_OK(kvt_length(c, "dev", &len));
    assert_int_equal(len, T);
    for (uint32_t l = 0; l < LAYERS; l++) {
        memset(k, 0, sizeof(k));
        memset(v, 0, sizeof(v));
        CHECK_OK(kvt_fetch(c, "dev", l, 0, T, k, v));
        assert_int_equal(test_check(k, KVT_F16, 31, l, 0, T, HEADS, DIM, 0), 0);
        assert_int_equal(test_check(v, KVT_F16, 32, l, 0, T, HEADS, DIM, 0), 0);
    }
    kvt_disconnect(c);

    daemon_stop(&d);                                  /* SIGTERM; asserts exit 0 */
    assert_int_equal(access(d.socket, F_OK), -1);
    assert_int_equal(errno, ENOENT);
    assert_int_equal(access(d.admin_socket, F_OK), -1);
    assert_int_equal(errno, ENOENT);
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
        cmocka_unit_test_teardown(dev_daemon_serves_and_stops_cleanly, cleanup),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
