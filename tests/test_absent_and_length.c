/* test_absent_and_length.c - proves the read semantics of named contexts:
 * fetching anything absent is -ENOENT (all-or-nothing), kvt_length is right
 * after gaps, overwrites and drops, overwrites win, and a fetch racing stores
 * of the same tokens sees, per token, the old or the new vector, never a mix. */
#include "tests/helpers.h"

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#define HEADS 2
#define DIM 32
#define CHUNK 8
#define ROW (HEADS * DIM)

static struct test_daemon d;

static kvt_client *connect_model(uint32_t layers)
{
    kvt_model m = test_model("semantics", layers, HEADS, DIM, KVT_F32, CHUNK);
    kvt_client *c = NULL;
    CHECK_OK(kvt_connect(d.socket, &m, &c));
    return c;
}

static void setup(void)
{
    daemon_start(&d, NULL);
}

static void teardown(void)
{
    daemon_stop(&d);
    daemon_cleanup(&d);
}

static void absent_data_is_enoent(void **state)
{
    (void)state;
    float k[40 * ROW], v[40 * ROW];
    setup();
    kvt_client *c = connect_model(2);
    test_fill(k, KVT_F32, 1, 0, 0, 40, HEADS, DIM);
    test_fill(v, KVT_F32, 2, 0, 0, 40, HEADS, DIM);

    CHECK_RC(kvt_fetch(c, "never-stored", 0, 0, 1, k, v), -ENOENT);
    CHECK_OK(kvt_store(c, "ctx", 0, 0, 20, k, v));
    /* One token past the end, other layer, a gap in the middle. */
    CHECK_RC(kvt_fetch(c, "ctx", 0, 0, 21, k, v), -ENOENT);
    CHECK_RC(kvt_fetch(c, "ctx", 1, 0, 1, k, v), -ENOENT);
    CHECK_OK(kvt_store(c, "ctx", 0, 30, 10, k, v));
    CHECK_RC(kvt_fetch(c, "ctx", 0, 15, 20, k, v), -ENOENT);
    CHECK_OK(kvt_fetch(c, "ctx", 0, 30, 10, k, v));
    /* A batch with one absent span fails whole. */
    kvt_span spans[2] = { { 0, 0, 10, k, v }, { 1, 0, 10, k, v } };
    CHECK_RC(kvt_fetch_batch(c, "ctx", spans, 2), -ENOENT);
    kvt_disconnect(c);
    teardown();
}

static void length_follows_gaps_overwrites_and_drops(void **state)
{
    (void)state;
    float k[64 * ROW], v[64 * ROW], k2[64 * ROW], v2[64 * ROW];
    uint32_t len = 99;
    setup();
    kvt_client *c = connect_model(2);
    test_fill(k, KVT_F32, 1, 0, 0, 64, HEADS, DIM);
    test_fill(v, KVT_F32, 2, 0, 0, 64, HEADS, DIM);

    CHECK_OK(kvt_length(c, "ctx", &len));
    assert_int_equal(len, 0);
    CHECK_OK(kvt_store(c, "ctx", 0, 0, 20, k, v));
    CHECK_OK(kvt_length(c, "ctx", &len));
    assert_int_equal(len, 0);               /* layer 1 still empty */
    CHECK_OK(kvt_store(c, "ctx", 1, 0, 13, k, v));
    CHECK_OK(kvt_length(c, "ctx", &len));
    assert_int_equal(len, 13);
    CHECK_OK(kvt_store(c, "ctx", 1, 14, 20, k, v));   /* gap at 13 */
    CHECK_OK(kvt_length(c, "ctx", &len));
    assert_int_equal(len, 13);
    CHECK_OK(kvt_store(c, "ctx", 1, 13, 1, k, v));    /* fill the gap */
    CHECK_OK(kvt_length(c, "ctx", &len));
    assert_int_equal(len, 20);              /* now layer 0 is the shorter */
    CHECK_OK(kvt_store(c, "ctx", 0, 16, 48, k, v));
    CHECK_OK(kvt_length(c, "ctx", &len));
    assert_int_equal(len, 34);

    /* Overwrite: last writer wins. */
    test_fill(k2, KVT_F32, 3, 0, 0, 64, HEADS, DIM);
    test_fill(v2, KVT_F32, 4, 0, 0, 64, HEADS, DIM);
    CHECK_OK(kvt_store(c, "ctx", 0, 0, 10, k2, v2));
    CHECK_OK(kvt_fetch(c, "ctx", 0, 0, 10, k, v));
    assert_int_equal(test_check(k, KVT_F32, 3, 0, 0, 10, HEADS, DIM, 0), 0);
    assert_int_equal(test_check(v, KVT_F32, 4, 0, 0, 10, HEADS, DIM, 0), 0);
    CHECK_OK(kvt_length(c, "ctx", &len));
    assert_int_equal(len, 34);

    /* Drop: gone for length and fetch; dropping again is fine; other
     * contexts are untouched. */
    CHECK_OK(kvt_store(c, "other", 0, 0, 5, k, v));
    CHECK_OK(kvt_drop(c, "ctx"));
    CHECK_OK(kvt_length(c, "ctx", &len));
    assert_int_equal(len, 0);
    CHECK_RC(kvt_fetch(c, "ctx", 0, 0, 1, k, v), -ENOENT);
    CHECK_OK(kvt_drop(c, "ctx"));
    CHECK_OK(kvt_fetch(c, "other", 0, 0, 5, k, v));
    kvt_disconnect(c);
    teardown();
}

/* ---- racing fetch and store ---------------------------------------------------- */

#define RACE_TOKENS 64
#define RACE_ROUNDS 300

static atomic_int race_done;

/* Version A rows are positive, version B rows negative, each element a
 * distinct magnitude: a row mixing both has both signs. */
static void fill_version(float *buf, int version)
{
    for (int t = 0; t < RACE_TOKENS; t++)
        for (int e = 0; e < ROW; e++)
            buf[t * ROW + e] = (version ? -1.0f : 1.0f) * (1.0f + (float)e / ROW);
}

static void *race_writer(void *arg)
{
    (void)arg;
    static float a[RACE_TOKENS * ROW], b[RACE_TOKENS * ROW];
    kvt_client *c = connect_model(1);
    fill_version(a, 0);
    fill_version(b, 1);
    for (int i = 0; i < RACE_ROUNDS; i++) {
        const float *src = i & 1 ? b : a;
        if (kvt_store(c, "race", 0, 0, RACE_TOKENS, src, src) != 0)
            break;
    }
    kvt_disconnect(c);
    atomic_store(&race_done, 1);
    return NULL;
}

static void racing_fetch_sees_old_or_new_per_token(void **state)
{
    (void)state;
    static float k[RACE_TOKENS * ROW], v[RACE_TOKENS * ROW];
    pthread_t writer;
    size_t mixed = 0, fetches = 0;
    setup();
    kvt_client *c = connect_model(1);
    fill_version(k, 0);
    CHECK_OK(kvt_store(c, "race", 0, 0, RACE_TOKENS, k, k));
    atomic_store(&race_done, 0);
    assert_int_equal(pthread_create(&writer, NULL, race_writer, NULL), 0);
    while (!atomic_load(&race_done)) {
        CHECK_OK(kvt_fetch(c, "race", 0, 0, RACE_TOKENS, k, v));
        fetches++;
        for (int t = 0; t < RACE_TOKENS; t++) {
            /* K and V of a token are one version, and every element of the
             * row agrees with it, within the int8 bound (amax 2 / 127). */
            float sign = k[t * ROW] < 0 ? -1.0f : 1.0f;
            for (int e = 0; e < ROW; e++) {
                float want = sign * (1.0f + (float)e / ROW);
                if (fabsf(k[t * ROW + e] - want) > 2.0f / 127 + 1e-5f ||
                    fabsf(v[t * ROW + e] - want) > 2.0f / 127 + 1e-5f) {
                    mixed++;
                    break;
                }
            }
        }
    }
    pthread_join(writer, NULL);
    print_message("%zu fetches raced %d stores\n", fetches, RACE_ROUNDS);
    assert_int_equal(mixed, 0);
    kvt_disconnect(c);
    teardown();
}

/* Client-side validation gives -EINVAL before anything is sent. */
static void bad_arguments_are_einval(void **state)
{
    (void)state;
    float k[ROW], v[ROW];
    char long_name[KVT_CTX_MAX + 2];
    uint32_t len;
    setup();
    kvt_client *c = connect_model(2);
    memset(long_name, 'x', sizeof(long_name) - 1);
    long_name[sizeof(long_name) - 1] = '\0';
    memset(k, 0, sizeof(k));
    memset(v, 0, sizeof(v));
    CHECK_RC(kvt_store(c, long_name, 0, 0, 1, k, v), -EINVAL);
    CHECK_RC(kvt_store(c, "", 0, 0, 1, k, v), -EINVAL);
    CHECK_RC(kvt_store(c, "ctx", 2, 0, 1, k, v), -EINVAL);
    CHECK_RC(kvt_store(c, "ctx", 0, 0, 0, k, v), -EINVAL);
    CHECK_RC(kvt_store(c, "ctx", 0, 0, 1, NULL, v), -EINVAL);
    CHECK_RC(kvt_length(c, "ctx", NULL), -EINVAL);
    CHECK_RC(kvt_store(c, "ctx", 0, UINT32_MAX, 2, k, v), -EOVERFLOW);
    long_name[KVT_CTX_MAX] = '\0';          /* exactly 255 bytes is fine */
    CHECK_OK(kvt_store(c, long_name, 0, 0, 1, k, v));
    CHECK_OK(kvt_length(c, long_name, &len));
    kvt_model bad = test_model("m", 0, 1, 1, KVT_F32, 0);
    kvt_client *c2;
    CHECK_RC(kvt_connect(d.socket, &bad, &c2), -EINVAL);
    bad = test_model("m", 1, 1, 1025, KVT_F32, 0);
    CHECK_RC(kvt_connect(d.socket, &bad, &c2), -EINVAL);
    kvt_disconnect(c);
    teardown();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(absent_data_is_enoent),
        cmocka_unit_test(length_follows_gaps_overwrites_and_drops),
        cmocka_unit_test(racing_fetch_sees_old_or_new_per_token),
        cmocka_unit_test(bad_arguments_are_einval),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
