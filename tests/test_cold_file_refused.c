/* test_cold_file_refused.c - proves that kvtierd refuses a cold file it
 * cannot use as it is, and says so in a way an operator (and systemd) can
 * act on: a file shorter than its header says (truncated) and a file made
 * with another cold-bytes each make the start fail with exit status 2 (the
 * unit's RestartPreventExitStatus, so no restart loop), one log line that
 * names the cause and what to do, and the file left byte for byte as it
 * was. Moving the file aside, as kvtierd(8) says, lets the daemon start.
 * A second kvtierd given the cold file a running one serves exits 1 and
 * says that another kvtierd, by pid, holds it. */
#include "tests/helpers.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static struct test_daemon d;
static char cold[400], cold_flag[] = "64M";

/* Run kvtierd on d's sockets and cold file with cold-bytes `bytes`, wait
 * up to 10 s for it to exit; returns its exit status, or -1 if it is still
 * running (then it is killed). */
static int start_expecting_exit(const char *bytes)
{
    char bin[512];
    snprintf(bin, sizeof(bin), "%s/kvtierd", test_build_dir());
    unlink(d.log);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        int fd = open(d.log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd >= 0)
            dup2(fd, 2);
        execl(bin, bin, "--socket", d.socket, "--admin-socket", d.admin_socket,
              "--hot-bytes", "64M", "--cold-path", cold, "--cold-bytes", bytes,
              "--cold-region-bytes", "4M", (char *)NULL);
        _exit(127);
    }
    for (int i = 0; i < 1000; i++) {
        int st;
        if (waitpid(pid, &st, WNOHANG) == pid)
            return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        usleep(10000);
    }
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    return -1;
}

static int setup(void **state)
{
    (void)state;
    daemon_start(&d, "--hot-bytes", "64M", "--cold-bytes", "0", NULL);
    daemon_stop(&d);
    snprintf(cold, sizeof(cold), "%s/cold.kvt", d.dir);
    /* A real cold file, made by a daemon that stored into it. */
    daemon_restart(&d, "--hot-bytes", "64M", "--cold-path", cold, "--cold-bytes", cold_flag,
                   "--cold-region-bytes", "4M", NULL);
    kvt_model m = test_model("refused", 1, 2, 64, KVT_F32, 16);
    kvt_client *c = NULL;
    float kv[16 * 2 * 64];
    CHECK_OK(kvt_connect(d.socket, &m, &c));
    test_fill(kv, KVT_F32, 1, 0, 0, 16, 2, 64);
    CHECK_OK(kvt_store(c, "ctx", 0, 0, 16, kv, kv));
    CHECK_OK(kvt_sync(c));
    kvt_disconnect(c);
    daemon_stop(&d);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    daemon_cleanup(&d);
    return 0;
}

static off_t file_size(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? st.st_size : -1;
}

static void truncated_file_exits_2_and_says_what_to_do(void **state)
{
    (void)state;
    off_t whole = file_size(cold);
    assert_true(whole > 8 << 20);
    assert_int_equal(truncate(cold, 8 << 20), 0);       /* a copy cut short */

    assert_int_equal(start_expecting_exit(cold_flag), 2);
    assert_true(test_file_contains(d.log, "was truncated"));
    assert_true(test_file_contains(d.log, "move it aside"));
    assert_int_equal(file_size(cold), 8 << 20);         /* left untouched */
    assert_false(test_socket_accepts(d.socket));

    /* What the log says to do works: move it aside, start empty. */
    char aside[420];
    snprintf(aside, sizeof(aside), "%s.bad", cold);
    assert_int_equal(rename(cold, aside), 0);
    daemon_restart(&d, "--hot-bytes", "64M", "--cold-path", cold, "--cold-bytes", cold_flag,
                   "--cold-region-bytes", "4M", NULL);
    daemon_stop(&d);
    assert_int_equal(file_size(aside), 8 << 20);
}

static void other_size_exits_2_file_untouched(void **state)
{
    (void)state;
    off_t whole = file_size(cold);
    assert_true(whole > 0);
    assert_int_equal(start_expecting_exit("128M"), 2);
    assert_true(test_file_contains(d.log, "is not a cold file of this configuration"));
    assert_int_equal(file_size(cold), whole);
}

static void second_daemon_names_the_one_holding_the_file(void **state)
{
    struct test_daemon other;
    char want[128];
    (void)state;

    daemon_restart(&d, "--hot-bytes", "64M", "--cold-path", cold, "--cold-bytes", cold_flag,
                   "--cold-region-bytes", "4M", NULL);
    daemon_start(&other, "--hot-bytes", "64M", NULL);
    daemon_stop(&other);
    assert_int_equal(daemon_start_status(&other, "--hot-bytes", "64M", "--cold-path", cold,
                                         "--cold-bytes", cold_flag, "--cold-region-bytes", "4M",
                                         NULL), 1);
    snprintf(want, sizeof(want), "another kvtierd (pid %d) holds it", (int)d.pid);
    assert_true(test_file_contains(other.log, want));
    daemon_cleanup(&other);
    daemon_stop(&d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(other_size_exits_2_file_untouched),
        cmocka_unit_test(second_daemon_names_the_one_holding_the_file),
        cmocka_unit_test(truncated_file_exits_2_and_says_what_to_do),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
