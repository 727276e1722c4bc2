/* test_append_demoted.c - proves that storing into a chunk that is no longer
 * in RAM keeps what its cold copy holds: tokens 0..99 of a context are
 * stored and synced, the hot tier is emptied (evict --tier hot), token 100
 * (or an overlapping run 90..109) is stored and synced again, and every
 * token is then fetched within the int8 bound, the newer values where the
 * runs overlap: at once, and again after kill -9 and a restart on the same
 * cold file. Before the fix the second write-back held only the new tokens
 * and replaced the record, so tokens 0..99 were gone. */
#include "tests/helpers.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LAYERS 2
#define HEADS 8
#define DIM 128
#define CHUNK 256
#define ROW (HEADS * DIM * 2)        /* f16 bytes per token */

static struct test_daemon d;
static char cold_dir[64], cold_path[128];

static void start(void)
{
    snprintf(cold_dir, sizeof(cold_dir), "/var/tmp/kvtier-append-XXXXXX");
    assert_non_null(mkdtemp(cold_dir));
    snprintf(cold_path, sizeof(cold_path), "%s/cold.kvt", cold_dir);
    daemon_start(&d, "--hot-bytes", "64M", "--cold-bytes", "64M",
                 "--cold-region-bytes", "4M", "--chunk-tokens", "256",
                 "--cold-path", cold_path, NULL);
}

static void restart(void)
{
    daemon_restart(&d, "--hot-bytes", "64M", "--cold-bytes", "64M",
                   "--cold-region-bytes", "4M", "--chunk-tokens", "256",
                   "--cold-path", cold_path, NULL);
}

static void cleanup(void)
{
    char cmd[128];

    daemon_cleanup(&d);
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", cold_dir);
    if (system(cmd) != 0)
        fprintf(stderr, "cannot remove %s\n", cold_dir);
}

static kvt_client *client(void)
{
    kvt_model m = test_model("append-model", LAYERS, HEADS, DIM, KVT_F16, CHUNK);
    kvt_client *c = NULL;

    CHECK_OK(kvt_connect(d.socket, &m, &c));
    return c;
}

/* Store tokens [first, first + n) of every layer with values of seed. */
static void store_run(kvt_client *c, const char *ctx, uint64_t seed, uint32_t first, uint32_t n)
{
    uint8_t *k = malloc((size_t)n * ROW), *v = malloc((size_t)n * ROW);

    for (uint32_t l = 0; l < LAYERS; l++) {
        test_fill(k, KVT_F16, seed, l, first, n, HEADS, DIM);
        test_fill(v, KVT_F16, seed + 1, l, first, n, HEADS, DIM);
        CHECK_OK(kvt_store(c, ctx, l, first, n, k, v));
    }
    free(k);
    free(v);
}

/* Fetch tokens [0, total) of every layer: [0, split) must hold seed_old's
 * values, [split, total) seed_new's. */
static void check_all(kvt_client *c, const char *ctx, uint64_t seed_old, uint64_t seed_new,
                      uint32_t split, uint32_t total)
{
    uint8_t *k = malloc((size_t)total * ROW), *v = malloc((size_t)total * ROW);
    uint32_t len = 0;

    for (uint32_t l = 0; l < LAYERS; l++) {
        CHECK_OK(kvt_fetch(c, ctx, l, 0, total, k, v));
        assert_int_equal(test_check(k, KVT_F16, seed_old, l, 0, split, HEADS, DIM, 0), 0);
        assert_int_equal(test_check(v, KVT_F16, seed_old + 1, l, 0, split, HEADS, DIM, 0), 0);
        assert_int_equal(test_check(k + (size_t)split * ROW, KVT_F16, seed_new, l, split,
                                    total - split, HEADS, DIM, 0), 0);
        assert_int_equal(test_check(v + (size_t)split * ROW, KVT_F16, seed_new + 1, l, split,
                                    total - split, HEADS, DIM, 0), 0);
    }
    CHECK_OK(kvt_length(c, ctx, &len));
    assert_int_equal(len, total);
    free(k);
    free(v);
}

static void evict_hot(void)
{
    char reply[512];

    CHECK_OK(admin_request(&d, "{\"cmd\":\"evict\",\"tier\":\"hot\"}", reply, sizeof(reply)));
    if (!strstr(reply, "\"ok\":true"))
        fail_msg("evict --tier hot: %s", reply);
}

/* Append the next token to a synced context whose chunk left RAM. */
static void append_after_eviction_keeps_synced_tokens(void **state)
{
    (void)state;
    start();
    kvt_client *c = client();

    store_run(c, "chat", 10, 0, 100);
    CHECK_OK(kvt_sync(c));
    evict_hot();
    store_run(c, "chat", 20, 100, 1);
    CHECK_OK(kvt_sync(c));
    check_all(c, "chat", 10, 20, 100, 101);

    /* The fetch above promoted the chunk; empty RAM again so the check
     * below reads what the cold record holds, then what survives kill -9. */
    evict_hot();
    check_all(c, "chat", 10, 20, 100, 101);
    daemon_kill(&d);
    restart();
    check_all(c, "chat", 10, 20, 100, 101);
    kvt_disconnect(c);
    cleanup();
}

/* A run that overlaps the cold copy: its tokens win, the rest stay. */
static void overlapping_store_after_eviction_merges_newer_over_older(void **state)
{
    (void)state;
    start();
    kvt_client *c = client();

    store_run(c, "doc", 30, 0, 100);
    CHECK_OK(kvt_sync(c));
    evict_hot();
    store_run(c, "doc", 40, 90, 20);
    CHECK_OK(kvt_sync(c));
    evict_hot();
    check_all(c, "doc", 30, 40, 90, 110);
    daemon_kill(&d);
    restart();
    check_all(c, "doc", 30, 40, 90, 110);
    kvt_disconnect(c);
    cleanup();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(append_after_eviction_keeps_synced_tokens),
        cmocka_unit_test(overlapping_store_after_eviction_merges_newer_over_older),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
