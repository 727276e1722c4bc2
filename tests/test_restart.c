/* test_restart.c - proves that clients ride over daemon restarts: after
 * kill -9 and a new kvtierd on the same socket, an existing handle's next
 * call reconnects and re-attaches by itself, gets -ENOENT for what the old
 * daemon held only in RAM, and then stores and fetches correctly (its
 * kvt_alloc buffers included); while no daemon runs, calls fail with a
 * connection error instead of hanging. And that SIGTERM is a clean stop:
 * kvtierd exits 0 with a client connected, removes its socket files and
 * leaves nothing in /dev/shm, and the handle carries on with the next one. */
#include "tests/helpers.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define LAYERS 4
#define HEADS 4
#define DIM 64
#define T 100
#define ROW (HEADS * DIM * 2)          /* f16 */

static struct test_daemon d;
static uint16_t k[T * HEADS * DIM], v[T * HEADS * DIM];

static kvt_client *connect_client(void)
{
    kvt_model m = test_model("restart-model", LAYERS, HEADS, DIM, KVT_F16, 16);
    kvt_client *c = NULL;
    CHECK_OK(kvt_connect(d.socket, &m, &c));
    return c;
}

static void store_layers(kvt_client *c, const char *ctx, uint64_t seed, void *kbuf)
{
    for (uint32_t l = 0; l < LAYERS; l++) {
        test_fill(kbuf, KVT_F16, seed, l, 0, T, HEADS, DIM);
        test_fill(v, KVT_F16, seed + 1, l, 0, T, HEADS, DIM);
        CHECK_OK(kvt_store(c, ctx, l, 0, T, kbuf, v));
    }
}

static void check_layers(kvt_client *c, const char *ctx, uint64_t seed, void *kbuf)
{
    for (uint32_t l = 0; l < LAYERS; l++) {
        memset(kbuf, 0, sizeof(k));
        memset(v, 0, sizeof(v));
        CHECK_OK(kvt_fetch(c, ctx, l, 0, T, kbuf, v));
        assert_int_equal(test_check(kbuf, KVT_F16, seed, l, 0, T, HEADS, DIM, 0), 0);
        assert_int_equal(test_check(v, KVT_F16, seed + 1, l, 0, T, HEADS, DIM, 0), 0);
    }
}

/* Between daemons a call fails fast with "no daemon": the socket file is
 * stale after kill -9 (refused) or gone after SIGTERM (absent). */
static void expect_no_daemon(kvt_client *c)
{
    uint32_t len;
    int rc = kvt_length(c, "any", &len);
    if (rc != -ECONNREFUSED && rc != -ENOENT)
        fail_msg("kvt_length with no daemon = %d (%s), want -ECONNREFUSED or -ENOENT",
                 rc, kvt_strerror(rc));
}

static void handle_reconnects_after_kill_9(void **state)
{
    (void)state;
    uint32_t len = 99;

    daemon_start(&d, "--cold-bytes", "0", NULL);       /* RAM only */
    kvt_client *c = connect_client();
    void *shared_k = kvt_alloc(c, sizeof(k));           /* must survive reconnects */
    assert_non_null(shared_k);
    store_layers(c, "ram-only", 1, k);
    check_layers(c, "ram-only", 1, shared_k);

    daemon_kill(&d);
    expect_no_daemon(c);
    daemon_restart(&d, "--cold-bytes", "0", NULL);

    /* The first call after the restart reconnects; the old RAM is gone. */
    CHECK_RC(kvt_fetch(c, "ram-only", 0, 0, T, k, v), -ENOENT);
    CHECK_OK(kvt_length(c, "ram-only", &len));
    assert_int_equal(len, 0);

    store_layers(c, "after-kill", 3, shared_k);
    check_layers(c, "after-kill", 3, k);
    check_layers(c, "after-kill", 3, shared_k);
    CHECK_OK(kvt_length(c, "after-kill", &len));
    assert_int_equal(len, T);

    /* A second kill without an intervening call: the next call is a
     * store, which must land in the new daemon. */
    daemon_kill(&d);
    daemon_restart(&d, "--cold-bytes", "0", NULL);
    store_layers(c, "after-second-kill", 5, k);
    check_layers(c, "after-second-kill", 5, shared_k);

    kvt_free(c, shared_k);
    kvt_disconnect(c);
}

static void sigterm_is_a_clean_stop(void **state)
{
    (void)state;
    uint32_t len = 99;

    daemon_start(&d, "--cold-bytes", "0", NULL);
    kvt_client *c = connect_client();
    store_layers(c, "before-term", 7, k);

    daemon_stop(&d);                                  /* asserts exit status 0 */
    assert_int_equal(access(d.socket, F_OK), -1);
    assert_int_equal(errno, ENOENT);
    assert_int_equal(access(d.admin_socket, F_OK), -1);
    assert_int_equal(shm_kvtier_files(), 0);
    expect_no_daemon(c);

    daemon_restart(&d, "--cold-bytes", "0", NULL);
    /* No cold tier was configured, so nothing was written down to serve. */
    CHECK_OK(kvt_length(c, "before-term", &len));
    assert_int_equal(len, 0);
    store_layers(c, "after-term", 9, k);
    check_layers(c, "after-term", 9, k);

    daemon_stop(&d);
    assert_int_equal(access(d.socket, F_OK), -1);
    assert_int_equal(shm_kvtier_files(), 0);
    kvt_disconnect(c);
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
        cmocka_unit_test_teardown(handle_reconnects_after_kill_9, cleanup),
        cmocka_unit_test_teardown(sigterm_is_a_clean_stop, cleanup),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
