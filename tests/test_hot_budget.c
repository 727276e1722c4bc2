/* test_hot_budget.c - proves the hot tier keeps to its byte budget: a daemon
 * with --hot-bytes 64M and no cold tier is fed about three times that (12
 * contexts of 32 layers x 256 tokens of 8 heads x 128 dims, f16 from the
 * client, ~17 MiB each as int8 in the daemon); its resident set never grows
 * past the budget plus a fixed slack, the most recently stored contexts are
 * fetched whole and within the int8 bound, and the oldest ones are evicted
 * (-ENOENT in every layer, length 0). */
#include "tests/helpers.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LAYERS 32
#define HEADS 8
#define DIM 128
#define T 256                         /* tokens per context: one chunk per layer */
#define N_CTX 12
#define ROW (HEADS * DIM * 2)         /* f16 */
#define BUDGET (64ull << 20)
/* What the daemon may hold besides the hot tier's chunks:
 *   - code, libc and the other libraries, thread stacks: ~10 MiB;
 *   - the client's shared region as far as the daemon has touched it through
 *     its own mapping: capped at 8 MiB by KVTIER_SHM_BYTES below (the
 *     test's buffers are malloc'ed, so staging reuses the same few MiB);
 *   - per-session request buffer (max-frame, 1 MiB), request plans, hash
 *     buckets, malloc arenas of the workers;
 *   - under ASan, shadow memory and allocator metadata.
 * 48 MiB covers all of it with room; a tier that ignored its budget would
 * need the ~200 MiB this test stores. */
#define SLACK (48ull << 20)

static struct test_daemon d;

static void ctx_name(char *buf, size_t len, int i)
{
    snprintf(buf, len, "ctx-%02d", i);
}

static void store_context(kvt_client *c, int i, uint8_t *k, uint8_t *v)
{
    kvt_span spans[LAYERS];
    char name[16];

    ctx_name(name, sizeof(name), i);
    for (uint32_t l = 0; l < LAYERS; l++) {
        uint8_t *kl = k + (size_t)l * T * ROW, *vl = v + (size_t)l * T * ROW;
        test_fill(kl, KVT_F16, 1000 + (uint64_t)i, l, 0, T, HEADS, DIM);
        test_fill(vl, KVT_F16, 2000 + (uint64_t)i, l, 0, T, HEADS, DIM);
        spans[l] = (kvt_span){ l, 0, T, kl, vl };
    }
    CHECK_OK(kvt_store_batch(c, name, spans, LAYERS));
}

static void budget_holds_and_lru_goes_first(void **state)
{
    (void)state;
    kvt_model m = test_model("budget-model", LAYERS, HEADS, DIM, KVT_F16, T);
    kvt_client *c;
    size_t ctx_bytes = (size_t)LAYERS * T * ROW;
    uint8_t *k = malloc(ctx_bytes), *v = malloc(ctx_bytes);
    uint64_t peak = 0;
    char name[16];
    uint32_t len;

    assert_true(k && v);
    daemon_start(&d, "--hot-bytes", "64M", "--cold-bytes", "0", NULL);
    /* A small region bounds what the daemon's mapping of it can add. */
    setenv("KVTIER_SHM_BYTES", "8M", 1);
    CHECK_OK(kvt_connect(d.socket, &m, &c));
    unsetenv("KVTIER_SHM_BYTES");
    uint64_t idle = daemon_rss_bytes(&d);
    assert_true(idle > 0);

    for (int i = 0; i < N_CTX; i++) {
        store_context(c, i, k, v);
        uint64_t rss = daemon_rss_bytes(&d);
        if (rss > peak)
            peak = rss;
    }
    print_message("daemon RSS: idle %llu MiB, peak %llu MiB (budget %llu MiB + slack %llu MiB)\n",
                  (unsigned long long)(idle >> 20), (unsigned long long)(peak >> 20),
                  BUDGET >> 20, SLACK >> 20);
    assert_true(peak < BUDGET + SLACK);
    /* And it did grow by about the budget: the data really went in. */
    assert_true(peak > idle + BUDGET / 2);

    /* The newest two (2 x ~17 MiB) fit in any eviction policy's low
     * watermark; check every value. */
    for (int i = N_CTX - 1; i >= N_CTX - 2; i--) {
        ctx_name(name, sizeof(name), i);
        memset(k, 0, ctx_bytes);
        memset(v, 0, ctx_bytes);
        kvt_span spans[LAYERS];
        for (uint32_t l = 0; l < LAYERS; l++)
            spans[l] = (kvt_span){ l, 0, T, k + (size_t)l * T * ROW, v + (size_t)l * T * ROW };
        CHECK_OK(kvt_fetch_batch(c, name, spans, LAYERS));
        for (uint32_t l = 0; l < LAYERS; l++) {
            assert_int_equal(test_check(spans[l].k, KVT_F16, 1000 + (uint64_t)i, l, 0, T,
                                        HEADS, DIM, 0), 0);
            assert_int_equal(test_check(spans[l].v, KVT_F16, 2000 + (uint64_t)i, l, 0, T,
                                        HEADS, DIM, 0), 0);
        }
        CHECK_OK(kvt_length(c, name, &len));
        assert_int_equal(len, T);
    }

    /* The budget holds under four contexts, so the oldest eight are gone
     * entirely: no layer of them is left. */
    for (int i = 0; i < N_CTX - 4; i++) {
        ctx_name(name, sizeof(name), i);
        for (uint32_t l = 0; l < LAYERS; l++)
            CHECK_RC(kvt_fetch(c, name, l, 0, 1, k, v), -ENOENT);
        CHECK_OK(kvt_length(c, name, &len));
        assert_int_equal(len, 0);
    }

    kvt_disconnect(c);
    free(k);
    free(v);
    assert_true(daemon_rss_bytes(&d) < BUDGET + SLACK);
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
        cmocka_unit_test_teardown(budget_holds_and_lru_goes_first, stop_daemon),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
