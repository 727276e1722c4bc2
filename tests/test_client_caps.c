/* test_client_caps.c - proves that one uid cannot keep others out of the
 * daemon: with max-clients 8 and max-clients-per-uid 4, uid nobody opens
 * its 4 connections and never speaks, then floods 24 more; each of those is
 * refused (-EUSERS naming max-clients-per-uid at its first request) without
 * taking a place, while root still connects, stores and fetches. When
 * nobody goes away, its places are free again. */
#include "tests/helpers.h"

#include <signal.h>
#include <string.h>
#include <sys/wait.h>

#include "proto/proto.h"

#define NOBODY 65534
#define PER_UID 4
#define FLOOD 24

static struct test_daemon d;
static int baseline_fds;
static int ready_pipe[2], done_pipe[2];

/* Over the cap: the first request of a connection is answered -EUSERS. */
static int refused_at_first_request(int sock)
{
    struct kvt_reply rep;

    if (test_raw_send(sock, "junk", 4, NULL, 0) || test_raw_reply(sock, &rep, 30000))
        return 0;
    return rep.status == -EUSERS && strstr(rep.reason, "max-clients-per-uid") != NULL;
}

/* Child as nobody: hold the cap with silent connections, flood, tell the
 * parent, and keep everything open until the parent is done. */
static int hog(void *arg)
{
    int socks[PER_UID + FLOOD];
    char ch = 0;

    (void)arg;
    CHILD_CHECK(test_become_uid(NOBODY) == 0, 10);
    for (int i = 0; i < PER_UID; i++)
        CHILD_CHECK((socks[i] = test_raw_connect(d.socket)) >= 0, 11);
    /* Accepted after the silent ones, so it is the first over the cap. */
    int probe = test_raw_connect(d.socket);
    CHILD_CHECK(probe >= 0, 12);
    CHILD_CHECK(refused_at_first_request(probe), 13);
    close(probe);
    for (int i = PER_UID; i < PER_UID + FLOOD; i++)
        CHILD_CHECK((socks[i] = test_raw_connect(d.socket)) >= 0, 14);
    probe = test_raw_connect(d.socket);
    CHILD_CHECK(probe >= 0, 15);
    CHILD_CHECK(refused_at_first_request(probe), 16);
    CHILD_CHECK(write(ready_pipe[1], "r", 1) == 1, 17);
    CHILD_CHECK(read(done_pipe[0], &ch, 1) == 1, 18);
    return 0;
}

static void other_uid_gets_in_while_one_uid_holds_its_cap(void **state)
{
    (void)state;
    kvt_model m = test_model("caps", 1, 2, 16, KVT_F32, 16);
    float k[32] = { 1 }, v[32] = { 2 }, k2[32], v2[32];
    kvt_client *c, *c2;
    char ch;
    int st;

    assert_int_equal(pipe(ready_pipe), 0);
    assert_int_equal(pipe(done_pipe), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0)
        _exit(hog(NULL));
    close(ready_pipe[1]);
    close(done_pipe[0]);
    if (read(ready_pipe[0], &ch, 1) != 1) {
        waitpid(pid, &st, 0);
        fail_msg("the nobody child failed (exit %d) before holding its cap",
                 WIFEXITED(st) ? WEXITSTATUS(st) : -1);
    }

    CHECK_OK(kvt_connect(d.socket, &m, &c));
    CHECK_OK(kvt_connect(d.socket, &m, &c2));
    CHECK_OK(kvt_store(c, "ctx", 0, 0, 1, k, v));
    CHECK_OK(kvt_fetch(c2, "ctx", 0, 0, 1, k2, v2));
    assert_memory_equal(k, k2, sizeof(k));
    kvt_disconnect(c2);

    assert_int_equal(write(done_pipe[1], "d", 1), 1);
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    close(ready_pipe[0]);
    close(done_pipe[1]);

    /* Only root's client is left once the daemon has seen nobody go. */
    assert_int_equal(daemon_wait_fd_count(&d, baseline_fds + 1), baseline_fds + 1);
    CHECK_OK(kvt_fetch(c, "ctx", 0, 0, 1, k2, v2));
    kvt_disconnect(c);
}

static int start_daemon(void **state)
{
    (void)state;
    daemon_start(&d, "--max-clients", "8", "--max-clients-per-uid", "4", "--quant", "none",
                 NULL);
    baseline_fds = daemon_idle_fd_count(&d);
    assert_true(baseline_fds > 0);
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
        cmocka_unit_test(other_uid_gets_in_while_one_uid_holds_its_cap),
    };
    return cmocka_run_group_tests(tests, start_daemon, stop_daemon);
}
