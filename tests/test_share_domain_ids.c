/* test_share_domain_ids.c - proves that a share group's sharing domain is
 * nobody else's: with `--share 1000,1001`, a client running as uid
 * 2^31 + 1000 (the number the group's domain used to have: its lowest uid
 * with the top bit set) cannot see the group's named context or token
 * prefix, and the group cannot see what that uid stores under the same
 * names; the two group members still share. Runs real clients as those uids
 * against a real daemon (the test runs as root). */
#include "tests/helpers.h"

#include <errno.h>
#include <stdint.h>
#include <string.h>

#define LAYERS 2
#define HEADS 2
#define DIM 32
#define CHUNK 16
#define T 32
#define GROUP_A 1000u
#define GROUP_B 1001u
#define HIGH_UID ((uid_t)(0x80000000u | GROUP_A))
#define GROUP_SEED 10
#define HIGH_SEED 20

static struct test_daemon d;
static int32_t tokens[T];

static kvt_model model(void)
{
    return test_model("share-ids", LAYERS, HEADS, DIM, KVT_F16, CHUNK);
}

static int store_all(kvt_client *c, const char *ctx, uint64_t seed)
{
    static uint16_t k[LAYERS][T * HEADS * DIM], v[LAYERS][T * HEADS * DIM];
    kvt_span spans[LAYERS];

    for (uint32_t l = 0; l < LAYERS; l++) {
        test_fill(k[l], KVT_F16, seed, l, 0, T, HEADS, DIM);
        test_fill(v[l], KVT_F16, seed + 1, l, 0, T, HEADS, DIM);
        spans[l] = (kvt_span){ l, 0, T, k[l], v[l] };
    }
    int rc = kvt_store_batch(c, ctx, spans, LAYERS);
    return rc ? rc : kvt_store_tokens(c, tokens, T, spans, LAYERS);
}

/* 0 when ctx and the prefix hold seed's values, else an rc or 1. */
static int fetch_all(kvt_client *c, const char *ctx, uint64_t seed)
{
    static uint16_t k[LAYERS][T * HEADS * DIM], v[LAYERS][T * HEADS * DIM];
    kvt_span spans[LAYERS];
    size_t bad = 0;

    for (uint32_t l = 0; l < LAYERS; l++)
        spans[l] = (kvt_span){ l, 0, T, k[l], v[l] };
    for (int by_tokens = 0; by_tokens < 2; by_tokens++) {
        int rc = by_tokens ? kvt_fetch_tokens(c, tokens, T, spans, LAYERS)
                           : kvt_fetch_batch(c, ctx, spans, LAYERS);
        if (rc)
            return rc;
        for (uint32_t l = 0; l < LAYERS; l++) {
            bad += test_check(k[l], KVT_F16, seed, l, 0, T, HEADS, DIM, 0);
            bad += test_check(v[l], KVT_F16, seed + 1, l, 0, T, HEADS, DIM, 0);
        }
    }
    return bad ? 1 : 0;
}

/* 0 when nothing is visible under ctx or the prefix. */
static int sees_nothing(kvt_client *c, const char *ctx)
{
    uint16_t k[T * HEADS * DIM], v[T * HEADS * DIM];
    kvt_span span = { 0, 0, T, k, v };
    uint32_t n = 99;

    if (kvt_fetch(c, ctx, 0, 0, 1, k, v) != -ENOENT)
        return 1;
    if (kvt_length(c, ctx, &n) || n != 0)
        return 2;
    if (kvt_match_tokens(c, tokens, T, &n) || n != 0)
        return 3;
    if (kvt_fetch_tokens(c, tokens, T, &span, 1) != -ENOENT)
        return 4;
    return 0;
}

static int group_a_stores(void *arg)
{
    kvt_model m = model();
    kvt_client *c;

    (void)arg;
    CHILD_CHECK(test_become_uid(GROUP_A) == 0, 10);
    CHILD_CHECK(kvt_connect(d.socket, &m, &c) == 0, 11);
    CHILD_CHECK(store_all(c, "group-secret", GROUP_SEED) == 0, 12);
    kvt_disconnect(c);
    return 0;
}

static int high_uid_sees_nothing_then_stores(void *arg)
{
    kvt_model m = model();
    kvt_client *c;

    (void)arg;
    CHILD_CHECK(test_become_uid(HIGH_UID) == 0, 20);
    CHILD_CHECK(kvt_connect(d.socket, &m, &c) == 0, 21);
    CHILD_CHECK(sees_nothing(c, "group-secret") == 0, 22);
    CHILD_CHECK(store_all(c, "high-secret", HIGH_SEED) == 0, 23);
    CHILD_CHECK(fetch_all(c, "high-secret", HIGH_SEED) == 0, 24);
    kvt_disconnect(c);
    return 0;
}

static int group_b_shares_with_a_only(void *arg)
{
    kvt_model m = model();
    kvt_client *c;
    uint32_t n = 99;

    (void)arg;
    CHILD_CHECK(test_become_uid(GROUP_B) == 0, 30);
    CHILD_CHECK(kvt_connect(d.socket, &m, &c) == 0, 31);
    CHILD_CHECK(kvt_length(c, "high-secret", &n) == 0 && n == 0, 32);
    /* The prefix is the group's own (GROUP_SEED), not the high uid's. */
    CHILD_CHECK(fetch_all(c, "group-secret", GROUP_SEED) == 0, 33);
    kvt_disconnect(c);
    return 0;
}

static void top_bit_uid_is_not_the_share_group(void **state)
{
    (void)state;
    for (uint32_t i = 0; i < T; i++)
        tokens[i] = (int32_t)(7000 + i * 13);
    daemon_start(&d, "--share", "1000,1001", NULL);
    assert_int_equal(test_in_child(group_a_stores, NULL), 0);
    assert_int_equal(test_in_child(high_uid_sees_nothing_then_stores, NULL), 0);
    assert_int_equal(test_in_child(group_b_shares_with_a_only, NULL), 0);
}

static int teardown(void **state)
{
    (void)state;
    daemon_cleanup(&d);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(top_bit_uid_is_not_the_share_group, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
