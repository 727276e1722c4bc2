/* test_prefix_sharing.c - proves token-addressed prefix sharing between
 * processes: A stores KV for tokens T; B matches T + extra tokens and gets
 * len(T) rounded down to a chunk, matches T itself and gets all of it, and
 * fetches the matched KV within the int8 bound; a different prefix matches
 * nothing. kvt_match_prefix finds the stored tail inside a chunk too, in
 * one round trip, the longest of several, and never a tail that differs. */
#include "tests/helpers.h"

#include <stdlib.h>
#include <string.h>

#define LAYERS 4
#define HEADS 4
#define DIM 64
#define CHUNK 16
#define T_LEN 70             /* 4 full chunks + a tail of 6 */
#define SEED 7

static struct test_daemon d;
static int32_t tokens[T_LEN + 30];

static int store_prefix(void *arg)
{
    (void)arg;
    kvt_model m = test_model("prefix-model", LAYERS, HEADS, DIM, KVT_F16, CHUNK);
    kvt_client *c;
    kvt_span spans[LAYERS];
    size_t bytes = (size_t)T_LEN * HEADS * DIM * 2;

    if (kvt_connect(d.socket, &m, &c))
        return 10;
    for (uint32_t l = 0; l < LAYERS; l++) {
        spans[l] = (kvt_span){ l, 0, T_LEN, malloc(bytes), malloc(bytes) };
        test_fill(spans[l].k, KVT_F16, SEED, l, 0, T_LEN, HEADS, DIM);
        test_fill(spans[l].v, KVT_F16, SEED + 1, l, 0, T_LEN, HEADS, DIM);
    }
    int rc = kvt_store_tokens(c, tokens, T_LEN, spans, LAYERS);
    for (uint32_t l = 0; l < LAYERS; l++) {
        free(spans[l].k);
        free(spans[l].v);
    }
    kvt_disconnect(c);
    return rc ? 11 : 0;
}

static int match_and_fetch(void *arg)
{
    (void)arg;
    kvt_model m = test_model("prefix-model", LAYERS, HEADS, DIM, KVT_F32, CHUNK);
    kvt_client *c;
    uint32_t n = 0;

    if (kvt_connect(d.socket, &m, &c))
        return 20;
    /* T + extra: the tail chunk of T differs from the longer sequence's
     * chunk, so the match stops at the last full chunk of T. */
    if (kvt_match_tokens(c, tokens, T_LEN + 30, &n) || n != (T_LEN / CHUNK) * CHUNK)
        return 21;
    /* Exactly T: everything, tail included. */
    if (kvt_match_tokens(c, tokens, T_LEN, &n) || n != T_LEN)
        return 22;
    /* A prefix of T ending on a chunk boundary matches whole. */
    if (kvt_match_tokens(c, tokens, 2 * CHUNK, &n) || n != 2 * CHUNK)
        return 23;

    size_t bytes = (size_t)T_LEN * HEADS * DIM * 4;
    kvt_span spans[LAYERS];
    for (uint32_t l = 0; l < LAYERS; l++)
        spans[l] = (kvt_span){ l, 0, T_LEN, malloc(bytes), malloc(bytes) };
    if (kvt_fetch_tokens(c, tokens, T_LEN, spans, LAYERS))
        return 24;
    size_t bad = 0;
    for (uint32_t l = 0; l < LAYERS; l++) {
        bad += test_check(spans[l].k, KVT_F32, SEED, l, 0, T_LEN, HEADS, DIM, 0);
        bad += test_check(spans[l].v, KVT_F32, SEED + 1, l, 0, T_LEN, HEADS, DIM, 0);
    }
    /* The matched part of a longer request is fetchable through it too. */
    for (uint32_t l = 0; l < LAYERS; l++)
        spans[l].n_tokens = 64;
    if (kvt_fetch_tokens(c, tokens, T_LEN + 30, spans, LAYERS))
        return 25;
    /* ... but not beyond the match. */
    spans[0].n_tokens = 65;
    if (kvt_fetch_tokens(c, tokens, T_LEN + 30, spans, 1) != -ENOENT)
        return 26;
    for (uint32_t l = 0; l < LAYERS; l++) {
        free(spans[l].k);
        free(spans[l].v);
    }
    /* A different first token changes every chained key. */
    int32_t other[T_LEN];
    memcpy(other, tokens, sizeof(other));
    other[0] ^= 1;
    if (kvt_match_tokens(c, other, T_LEN, &n) || n != 0)
        return 27;
    /* kvt_match_prefix: T + extra finds all of T, tail included. */
    if (kvt_match_prefix(c, tokens, T_LEN + 30, &n) || n != T_LEN)
        return 29;
    if (kvt_match_prefix(c, tokens, T_LEN, &n) || n != T_LEN)
        return 30;
    /* One token short of T: the stored tail (6) is longer than the query's
     * (5), so only the whole chunks match. */
    if (kvt_match_prefix(c, tokens, T_LEN - 1, &n) || n != (T_LEN / CHUNK) * CHUNK)
        return 31;
    /* A tail that differs in its last token is another prefix. */
    other[0] ^= 1;
    other[T_LEN - 1] ^= 1;
    if (kvt_match_prefix(c, other, T_LEN, &n) || n != (T_LEN / CHUNK) * CHUNK)
        return 32;
    kvt_disconnect(c);
    return bad ? 28 : 0;
}

static void prefix_stored_by_one_process_is_matched_by_another(void **state)
{
    (void)state;
    for (int i = 0; i < T_LEN + 30; i++)
        tokens[i] = 1000 + i * 7;
    daemon_start(&d, NULL);
    assert_int_equal(test_in_child(store_prefix, NULL), 0);
    assert_int_equal(test_in_child(match_and_fetch, NULL), 0);
    daemon_stop(&d);
    daemon_cleanup(&d);
}

/* A layer missing from one chunk stops the match there. */
static void match_requires_every_layer(void **state)
{
    (void)state;
    kvt_model m = test_model("prefix-layers", 2, 1, 8, KVT_F32, 4);
    kvt_client *c;
    float k[12 * 8], v[12 * 8];
    uint32_t n = 99;

    for (int i = 0; i < 12; i++)
        tokens[i] = i + 1;
    test_fill(k, KVT_F32, 1, 0, 0, 12, 1, 8);
    test_fill(v, KVT_F32, 2, 0, 0, 12, 1, 8);
    daemon_start(&d, NULL);
    CHECK_OK(kvt_connect(d.socket, &m, &c));
    kvt_span all0 = { 0, 0, 12, k, v }, part1 = { 1, 0, 8, k, v };
    CHECK_OK(kvt_store_tokens(c, tokens, 12, &all0, 1));
    CHECK_OK(kvt_match_tokens(c, tokens, 12, &n));
    assert_int_equal(n, 0);                 /* layer 1 has nothing */
    CHECK_OK(kvt_store_tokens(c, tokens, 12, &part1, 1));
    CHECK_OK(kvt_match_tokens(c, tokens, 12, &n));
    assert_int_equal(n, 8);                 /* layer 1 has two chunks */
    CHECK_RC(kvt_match_tokens(c, NULL, 12, &n), -EINVAL);
    kvt_span beyond = { 0, 10, 5, k, v };   /* past the call's tokens */
    CHECK_RC(kvt_store_tokens(c, tokens, 12, &beyond, 1), -EINVAL);
    kvt_disconnect(c);
    daemon_stop(&d);
    daemon_cleanup(&d);
}

/* Several tails stored in one chunk: the longest that the query continues
 * wins, also in the first chunk (no whole chunk before it), and what
 * kvt_match_prefix answers can be fetched whole. */
static void match_prefix_finds_the_longest_tail(void **state)
{
    (void)state;
    kvt_model m = test_model("prefix-tails", 2, 1, 8, KVT_F32, 8);
    kvt_client *c;
    float k[20 * 8], v[20 * 8];
    uint32_t n = 99;

    for (int i = 0; i < 20; i++)
        tokens[i] = 500 + i;
    test_fill(k, KVT_F32, 3, 0, 0, 20, 1, 8);
    test_fill(v, KVT_F32, 4, 0, 0, 20, 1, 8);
    daemon_start(&d, NULL);
    CHECK_OK(kvt_connect(d.socket, &m, &c));
    kvt_span s5[2] = { { 0, 0, 5, k, v }, { 1, 0, 5, k, v } };
    CHECK_OK(kvt_store_tokens(c, tokens, 5, s5, 2));
    CHECK_OK(kvt_match_tokens(c, tokens, 20, &n));
    assert_int_equal(n, 0);                 /* whole chunks: none */
    CHECK_OK(kvt_match_prefix(c, tokens, 20, &n));
    assert_int_equal(n, 5);
    CHECK_OK(kvt_match_prefix(c, tokens, 4, &n));
    assert_int_equal(n, 0);

    kvt_span s13[2] = { { 0, 0, 13, k, v }, { 1, 0, 13, k, v } };
    kvt_span s11[2] = { { 0, 0, 11, k, v }, { 1, 0, 11, k, v } };
    CHECK_OK(kvt_store_tokens(c, tokens, 13, s13, 2));
    CHECK_OK(kvt_store_tokens(c, tokens, 11, s11, 2));
    CHECK_OK(kvt_match_prefix(c, tokens, 20, &n));
    assert_int_equal(n, 13);
    CHECK_OK(kvt_match_prefix(c, tokens, 12, &n));
    assert_int_equal(n, 11);
    /* A tail stored in layer 0 only is not a match. */
    kvt_span s15 = { 0, 0, 15, k, v };
    CHECK_OK(kvt_store_tokens(c, tokens, 15, &s15, 1));
    CHECK_OK(kvt_match_prefix(c, tokens, 20, &n));
    assert_int_equal(n, 13);

    float kf[13 * 8], vf[13 * 8];
    kvt_span f[2] = { { 0, 0, 13, kf, vf }, { 1, 0, 13, kf, vf } };
    CHECK_OK(kvt_fetch_tokens(c, tokens, 13, f, 2));
    assert_int_equal(test_check(kf, KVT_F32, 3, 0, 0, 13, 1, 8, 0), 0);
    CHECK_RC(kvt_match_prefix(c, tokens, 20, NULL), -EINVAL);
    kvt_disconnect(c);

    /* Large chunks: the daemon hashes the tails on a worker, same answer. */
    static int32_t many[1100];
    static float kb[700 * 8], vb[700 * 8];
    kvt_model big = test_model("prefix-big-chunks", 1, 1, 8, KVT_F32, 1024);
    for (int i = 0; i < 1100; i++)
        many[i] = 7 + i;
    CHECK_OK(kvt_connect(d.socket, &big, &c));
    kvt_span s700 = { 0, 0, 700, kb, vb };
    CHECK_OK(kvt_store_tokens(c, many, 700, &s700, 1));
    CHECK_OK(kvt_match_prefix(c, many, 1100, &n));
    assert_int_equal(n, 700);
    CHECK_OK(kvt_match_tokens(c, many, 1100, &n));
    assert_int_equal(n, 0);
    kvt_disconnect(c);
    daemon_stop(&d);
    daemon_cleanup(&d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(match_prefix_finds_the_longest_tail),
        cmocka_unit_test(prefix_stored_by_one_process_is_matched_by_another),
        cmocka_unit_test(match_requires_every_layer),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
