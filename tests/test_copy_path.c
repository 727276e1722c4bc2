/* test_copy_path.c - the copy path (buffers outside the shared region) moves
 * every byte through its two alternating stages: many batches per call,
 * spans split across batches, a region too small for two stages, copy
 * helper threads, K and V on different paths, and a call whose first send
 * finds the daemon restarted. Runs with --quant none, so every value must
 * come back bit for bit. */
#include "tests/helpers.h"

#include <stdlib.h>
#include <string.h>

#define LAYERS 6
#define TOKENS 3000              /* 6 MiB of K+V per layer: several batches */
#define HEADS 8
#define DIM 128
#define ROW ((size_t)HEADS * DIM * 2)

static struct test_daemon d;

static int setup(void **state)
{
    (void)state;
    daemon_start(&d, "--quant", "none", "--hot-bytes", "512M", "--cold-bytes", "0", NULL);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    daemon_cleanup(&d);
    return 0;
}

struct buffers {
    kvt_span spans[LAYERS];
    int k_in_region;
};

/* K and V for every layer with distinct values per (seed, layer); K comes
 * from the region when k_in_region, so only V takes the copy path. */
static void buffers_make(struct buffers *b, kvt_client *c, uint64_t seed, int k_in_region)
{
    b->k_in_region = k_in_region;
    for (uint32_t l = 0; l < LAYERS; l++) {
        void *k = k_in_region ? kvt_alloc(c, TOKENS * ROW) : malloc(TOKENS * ROW);
        void *v = malloc(TOKENS * ROW);
        assert_non_null(k);
        assert_non_null(v);
        test_fill(k, KVT_F16, seed, l, 0, TOKENS, HEADS, DIM);
        test_fill(v, KVT_F16, seed + 1, l, 0, TOKENS, HEADS, DIM);
        b->spans[l] = (kvt_span){ l, 0, TOKENS, k, v };
    }
}

static void buffers_free(struct buffers *b, kvt_client *c)
{
    for (uint32_t l = 0; l < LAYERS; l++) {
        if (b->k_in_region)
            kvt_free(c, b->spans[l].k);
        else
            free(b->spans[l].k);
        free(b->spans[l].v);
    }
}

/* Fetch ctx into fresh malloc'ed buffers (poisoned first) and compare every
 * byte with what was stored. */
static void fetch_and_compare(kvt_client *c, const char *ctx, const struct buffers *want)
{
    kvt_span got[LAYERS];
    for (uint32_t l = 0; l < LAYERS; l++) {
        got[l] = (kvt_span){ l, 0, TOKENS, malloc(TOKENS * ROW), malloc(TOKENS * ROW) };
        assert_non_null(got[l].k);
        assert_non_null(got[l].v);
        memset(got[l].k, 0xa5, TOKENS * ROW);
        memset(got[l].v, 0x5a, TOKENS * ROW);
    }
    CHECK_OK(kvt_fetch_batch(c, ctx, got, LAYERS));
    for (uint32_t l = 0; l < LAYERS; l++) {
        assert_memory_equal(got[l].k, want->spans[l].k, TOKENS * ROW);
        assert_memory_equal(got[l].v, want->spans[l].v, TOKENS * ROW);
        free(got[l].k);
        free(got[l].v);
    }
}

/* Store and fetch back one set of buffers under the environment given
 * (NULL values unset), on a connection made under that environment. */
static void round_trip(const char *ctx, const char *shm_bytes, const char *copy_threads,
                       int k_in_region)
{
    kvt_model m = test_model("copy-path", LAYERS, HEADS, DIM, KVT_F16, 0);
    kvt_client *c;
    struct buffers b;

    if (shm_bytes)
        setenv("KVTIER_SHM_BYTES", shm_bytes, 1);
    if (copy_threads)
        setenv("KVTIER_COPY_THREADS", copy_threads, 1);
    int rc = kvt_connect(d.socket, &m, &c);
    unsetenv("KVTIER_SHM_BYTES");
    unsetenv("KVTIER_COPY_THREADS");
    CHECK_OK(rc);
    buffers_make(&b, c, (uint64_t)(uintptr_t)ctx[0] * 7, k_in_region);
    CHECK_OK(kvt_store_batch(c, ctx, b.spans, LAYERS));
    fetch_and_compare(c, ctx, &b);
    CHECK_OK(kvt_drop(c, ctx));
    buffers_free(&b, c);
    kvt_disconnect(c);
}

/* The default region: two 8 MiB stages take turns over 36 MiB. */
static void test_many_batches(void **state)
{
    (void)state;
    round_trip("a-default", NULL, "1", 0);
}

/* A 1 MiB region: stages of under 512 KiB, so every span is split over
 * many batches, and the second stage sometimes has to wait for the first. */
static void test_small_region(void **state)
{
    (void)state;
    round_trip("b-small", "1M", "1", 0);
    round_trip("c-tiny", "192K", "1", 0);
    /* Too small for two stages of one token: one stage at a time. */
    round_trip("c-one-stage", "8K", "1", 0);
}

/* Copy helper threads share each batch's copies. */
static void test_copy_threads(void **state)
{
    (void)state;
    round_trip("d-threads", NULL, "4", 0);
}

/* K by offset (zero copy), V through the stages, in the same requests. */
static void test_mixed_paths(void **state)
{
    (void)state;
    round_trip("e-mixed", NULL, "2", 1);
}

/* The daemon restarts between two calls: the next call's first send finds
 * the connection gone, attaches again and completes. */
static void test_restart_before_call(void **state)
{
    (void)state;
    kvt_model m = test_model("copy-path", LAYERS, HEADS, DIM, KVT_F16, 0);
    kvt_client *c;
    struct buffers b;

    CHECK_OK(kvt_connect(d.socket, &m, &c));
    buffers_make(&b, c, 99, 0);
    CHECK_OK(kvt_store_batch(c, "f-restart", b.spans, LAYERS));
    daemon_kill(&d);
    daemon_restart(&d, "--quant", "none", "--hot-bytes", "512M", "--cold-bytes", "0", NULL);
    CHECK_OK(kvt_store_batch(c, "f-restart", b.spans, LAYERS));
    fetch_and_compare(c, "f-restart", &b);
    buffers_free(&b, c);
    kvt_disconnect(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_many_batches),
        cmocka_unit_test(test_small_region),
        cmocka_unit_test(test_copy_threads),
        cmocka_unit_test(test_mixed_paths),
        cmocka_unit_test(test_restart_before_call),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
