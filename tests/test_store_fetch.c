/* test_store_fetch.c - proves that KV stored by one process is fetched by
 * another: 32 layers x 1000 tokens of f16 within libkvtier(3)'s int8 bound, an
 * f32 client reading what an f16 client stored, copy and zero-copy buffers,
 * and --quant none round-tripping bit-exactly. */
#include "tests/helpers.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LAYERS 32
#define TOKENS 1000
#define HEADS 8
#define DIM 128
#define SEED 42

static struct test_daemon d;

static size_t row_bytes(kvt_dtype dt)
{
    return (size_t)HEADS * DIM * (dt == KVT_F32 ? 4 : 2);
}

/* Child A: stores every layer in one batch from malloc'ed buffers. */
static int store_all(void *arg)
{
    kvt_dtype dt = *(kvt_dtype *)arg;
    kvt_model m = test_model("llama-test", LAYERS, HEADS, DIM, dt, 0);
    kvt_client *c;
    kvt_span spans[LAYERS];
    int rc = kvt_connect(d.socket, &m, &c);
    if (rc)
        return 10;
    for (uint32_t l = 0; l < LAYERS; l++) {
        spans[l] = (kvt_span){ l, 0, TOKENS, malloc(TOKENS * row_bytes(dt)),
                               malloc(TOKENS * row_bytes(dt)) };
        test_fill(spans[l].k, dt, SEED, l, 0, TOKENS, HEADS, DIM);
        test_fill(spans[l].v, dt, SEED + 1, l, 0, TOKENS, HEADS, DIM);
    }
    rc = kvt_store_batch(c, "chat-1", spans, LAYERS);
    for (uint32_t l = 0; l < LAYERS; l++) {
        free(spans[l].k);
        free(spans[l].v);
    }
    kvt_disconnect(c);
    return rc ? 11 : 0;
}

/* Child B: fetches every layer (zero-copy buffers for K, malloc for V) and
 * checks each value. */
static int fetch_all(void *arg)
{
    kvt_dtype dt = *(kvt_dtype *)arg;
    kvt_model m = test_model("llama-test", LAYERS, HEADS, DIM, dt, 0);
    kvt_client *c;
    size_t bad = 0;
    int rc = kvt_connect(d.socket, &m, &c);
    if (rc)
        return 20;
    void *k = kvt_alloc(c, TOKENS * row_bytes(dt));
    void *v = malloc(TOKENS * row_bytes(dt));
    if (!k || !v)
        return 21;
    uint32_t len = 0;
    if (kvt_length(c, "chat-1", &len) || len != TOKENS)
        return 22;
    for (uint32_t l = 0; l < LAYERS; l++) {
        rc = kvt_fetch(c, "chat-1", l, 0, TOKENS, k, v);
        if (rc)
            return 23;
        bad += test_check(k, dt, SEED, l, 0, TOKENS, HEADS, DIM, 0);
        bad += test_check(v, dt, SEED + 1, l, 0, TOKENS, HEADS, DIM, 0);
    }
    kvt_free(c, k);
    free(v);
    kvt_disconnect(c);
    return bad ? 24 : 0;
}

static void f16_store_f16_fetch_in_two_processes(void **state)
{
    (void)state;
    kvt_dtype f16 = KVT_F16;
    daemon_start(&d, "--hot-bytes", "1G", NULL);
    assert_int_equal(test_in_child(store_all, &f16), 0);
    assert_int_equal(test_in_child(fetch_all, &f16), 0);
    daemon_stop(&d);
    daemon_cleanup(&d);
}

static void f32_client_fetches_what_f16_client_stored(void **state)
{
    (void)state;
    kvt_dtype f16 = KVT_F16, f32 = KVT_F32, bf16 = KVT_BF16;
    daemon_start(&d, "--hot-bytes", "1G", NULL);
    assert_int_equal(test_in_child(store_all, &f16), 0);
    assert_int_equal(test_in_child(fetch_all, &f32), 0);
    assert_int_equal(test_in_child(fetch_all, &bf16), 0);
    daemon_stop(&d);
    daemon_cleanup(&d);
}

/* Lossless mode: what goes in comes out, bit for bit, for every dtype. */
static void quant_none_is_bit_exact(void **state)
{
    (void)state;
    const kvt_dtype types[] = { KVT_F16, KVT_F32, KVT_BF16 };
    daemon_start(&d, "--quant", "none", NULL);
    for (size_t i = 0; i < 3; i++) {
        kvt_dtype dt = types[i];
        char name[32];
        snprintf(name, sizeof(name), "exact-%zu", i);
        kvt_model m = test_model(name, 2, HEADS, DIM, dt, 16);
        kvt_client *c;
        CHECK_OK(kvt_connect(d.socket, &m, &c));
        size_t bytes = 100 * row_bytes(dt);
        uint8_t *k = malloc(bytes), *v = malloc(bytes), *k2 = malloc(bytes),
                *v2 = malloc(bytes);
        /* Random bit patterns (NaN payloads aside) must survive unchanged. */
        for (size_t b = 0; b < bytes; b++) {
            k[b] = (uint8_t)rand();
            v[b] = (uint8_t)rand();
        }
        for (size_t e = 0; e < bytes / (dt == KVT_F32 ? 4 : 2); e++) {
            if (test_to_f32(k, dt, e) != test_to_f32(k, dt, e))
                test_from_f32(k, dt, e, 1.5f);
            if (test_to_f32(v, dt, e) != test_to_f32(v, dt, e))
                test_from_f32(v, dt, e, -2.5f);
        }
        CHECK_OK(kvt_store(c, "ctx", 1, 7, 100, k, v));
        CHECK_OK(kvt_fetch(c, "ctx", 1, 7, 100, k2, v2));
        assert_memory_equal(k, k2, bytes);
        assert_memory_equal(v, v2, bytes);
        free(k); free(v); free(k2); free(v2);
        kvt_disconnect(c);
    }
    daemon_stop(&d);
    daemon_cleanup(&d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(f16_store_f16_fetch_in_two_processes),
        cmocka_unit_test(f32_client_fetches_what_f16_client_stored),
        cmocka_unit_test(quant_none_is_bit_exact),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
