/* test_nonfinite_refused.c - proves libkvtier(3)'s promise that in int8 mode a
 * store holding any NaN or +-Inf is refused with -EINVAL and nothing of that
 * request is stored, while --quant none keeps such values bit for bit.
 *
 * For f16, bf16 and f32 clients against a real int8 kvtierd:
 *  - a multi-layer store spanning several chunks, over a context that holds
 *    some of its tokens and not others, with one NaN, +Inf or -Inf in its
 *    first or in its last segment: -EINVAL with the daemon's reason; every
 *    token of every layer then fetches as before, bit for bit, the tokens
 *    that were absent are still absent (kvt_length unchanged, fetch
 *    -ENOENT), and the hot tier holds no new chunk;
 *    and the same with the bad value in a segment that covers a whole
 *    chunk over existing tokens (quantized aside into a stage in the first
 *    phase: the stage is freed, hot used_bytes is as before) as well as in
 *    a partial one (only checked);
 *  - the same into a context that does not exist: -EINVAL, kvt_length 0,
 *    kvt_fetch -ENOENT, no new chunk; and for a token-addressed store;
 *  - the same for requests large enough to be split across the workers
 *    (above session.c's INLINE_BYTES), and two clients sending such
 *    requests at once, refused and accepted ones in turn, all answered;
 *  - under a hot budget too tight to stage a whole request (stages may
 *    take half of it), a large overwrite is stored all the same and reads
 *    back within the int8 bound, and a refused one still answers -EINVAL;
 *  - finite values that look special (-0, subnormals, the largest finite
 *    value) are stored, not refused;
 * and a --quant none daemon stores NaN (quiet and signalling, with
 * payloads) and +-Inf and returns them bit for bit.
 */
#include "tests/helpers.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#define REASON "stored values must be finite in int8 mode (NaN or Inf found)"

static struct test_daemon d;

static const kvt_dtype dtypes[] = { KVT_F16, KVT_BF16, KVT_F32 };
static const char *const dtype_names[] = { "f16", "bf16", "f32" };

/* A context of `layers` layers holding tokens [0, old_tokens), and a store
 * of tokens [start, start + tokens) of every layer: it overwrites present
 * tokens, fills the absent rest of a partly filled chunk and creates new
 * chunks. */
struct shape {
    uint32_t layers, heads, dim, chunk;
    uint32_t old_tokens, start, tokens;
};

/* Below INLINE_BYTES for every dtype: served on the loop thread. */
static const struct shape small = { 3, 2, 32, 16, 40, 8, 64 };
/* 3 MiB (f16) to 6 MiB (f32) in one request (the library stages up to 8 MiB
 * per request), 13 chunk segments per layer: split across the workers. */
static const struct shape large = { 8, 4, 64, 32, 200, 16, 384 };

static size_t row_bytes(const struct shape *s, kvt_dtype dt)
{
    return (size_t)s->heads * s->dim * (dt == KVT_F32 ? 4 : 2);
}

static size_t elems_per_row(const struct shape *s)
{
    return (size_t)s->heads * s->dim;
}

static kvt_client *connect_as(const struct shape *s, kvt_dtype dt, int di)
{
    static const char *const models[] = { "nf-f16", "nf-bf16", "nf-f32" };
    kvt_client *c = NULL;

    /* One model per dtype, so each dtype's contexts are its own. */
    kvt_model m = test_model(models[di], s->layers, s->heads, s->dim, dt, s->chunk);
    CHECK_OK(kvt_connect(d.socket, &m, &c));
    return c;
}

/* stats' hot.<field>. */
static double hot_stat(const char *field)
{
    static char reply[1 << 16];
    double v;

    CHECK_OK(admin_request(&d, "{\"cmd\":\"stats\"}", reply, sizeof(reply)));
    cJSON *r = cJSON_Parse(reply);
    assert_non_null(r);
    cJSON *f = cJSON_GetObjectItem(cJSON_GetObjectItem(r, "hot"), field);
    if (!cJSON_IsNumber(f))
        fail_msg("stats has no hot.%s: %s", field, reply);
    v = f->valuedouble;
    cJSON_Delete(r);
    return v;
}

static double hot_chunks(void)
{
    return hot_stat("chunks");
}

/* K and V buffers for every layer of a store of s->tokens tokens. */
struct batch {
    kvt_span spans[16];
    size_t bytes;      /* of one K (or V) buffer */
};

static void batch_fill(struct batch *b, const struct shape *s, kvt_dtype dt,
                       uint32_t start, uint32_t tokens, uint64_t seed)
{
    b->bytes = (size_t)tokens * row_bytes(s, dt);
    for (uint32_t l = 0; l < s->layers; l++) {
        void *k = malloc(b->bytes), *v = malloc(b->bytes);
        assert_non_null(k);
        assert_non_null(v);
        test_fill(k, dt, seed, l, start, tokens, s->heads, s->dim);
        test_fill(v, dt, seed + 1, l, start, tokens, s->heads, s->dim);
        b->spans[l] = (kvt_span){ l, start, tokens, k, v };
    }
}

static void batch_free(struct batch *b, const struct shape *s)
{
    for (uint32_t l = 0; l < s->layers; l++) {
        free(b->spans[l].k);
        free(b->spans[l].v);
    }
}

/* Every layer's tokens [0, n), K then V per layer, as fetched now. */
static uint8_t *fetch_all(kvt_client *c, const char *ctx, const struct shape *s,
                          kvt_dtype dt, uint32_t n)
{
    size_t bytes = (size_t)n * row_bytes(s, dt);
    uint8_t *all = malloc(bytes * 2 * s->layers);
    kvt_span spans[16];

    assert_non_null(all);
    for (uint32_t l = 0; l < s->layers; l++)
        spans[l] = (kvt_span){ l, 0, n, all + bytes * 2 * l, all + bytes * (2 * l + 1) };
    CHECK_OK(kvt_fetch_batch(c, ctx, spans, s->layers));
    return all;
}

/* Where the bad value goes: element 0 of the first segment's K (first
 * span, first token), or the last element of the last segment's V (last
 * span, last token): the first and the last row the request writes, both
 * in partial segments (start and start + tokens are not chunk-aligned);
 * or the middle of the first whole chunk's V in a middle span, a segment
 * that covers a chunk of old tokens (staged, not only checked). */
enum spot { SPOT_FIRST, SPOT_LAST, SPOT_WHOLE };

static void poison(struct batch *b, const struct shape *s, kvt_dtype dt, enum spot at, float bad)
{
    if (at == SPOT_FIRST) {
        test_from_f32(b->spans[0].k, dt, 0, bad);
    } else if (at == SPOT_LAST) {
        test_from_f32(b->spans[s->layers - 1].v, dt,
                      (size_t)s->tokens * elems_per_row(s) - 1, bad);
    } else {
        size_t tok = (s->chunk - s->start % s->chunk) % s->chunk + s->chunk / 2;
        test_from_f32(b->spans[s->layers / 2].v, dt,
                      tok * elems_per_row(s) + elems_per_row(s) / 2, bad);
    }
}

static const char *spot_name(enum spot at)
{
    return at == SPOT_FIRST ? "first (partial)" : at == SPOT_LAST ? "last (partial)"
                                                                  : "a whole-chunk";
}

static void expect_refused(kvt_client *c, int rc, const char *what)
{
    if (rc != -EINVAL)
        fail_msg("%s: store = %d (%s), want -EINVAL", what, rc, kvt_strerror(rc));
    if (!strstr(kvt_last_error(c), REASON))
        fail_msg("%s: reason \"%s\", want \"%s\"", what, kvt_last_error(c), REASON);
}

/* Nothing of the refused request shows: old tokens fetch as `before`, the
 * first absent token of every layer is still absent, no chunk was added. */
static void expect_unchanged(kvt_client *c, const char *ctx, const struct shape *s,
                             kvt_dtype dt, const uint8_t *before, double chunks,
                             double used, const char *what)
{
    size_t bytes = (size_t)s->old_tokens * row_bytes(s, dt) * 2 * s->layers;
    uint32_t len = 99;
    uint8_t *one = malloc(row_bytes(s, dt) * 2);

    assert_non_null(one);
    CHECK_OK(kvt_length(c, ctx, &len));
    if (len != s->old_tokens)
        fail_msg("%s: length %u, want %u", what, len, s->old_tokens);
    if (s->old_tokens) {
        uint8_t *after = fetch_all(c, ctx, s, dt, s->old_tokens);
        if (memcmp(before, after, bytes) != 0)
            fail_msg("%s: stored tokens changed by a refused store", what);
        free(after);
    }
    for (uint32_t l = 0; l < s->layers; l++)
        CHECK_RC(kvt_fetch(c, ctx, l, s->old_tokens, 1, one, one + row_bytes(s, dt)), -ENOENT);
    if (hot_chunks() != chunks)
        fail_msg("%s: hot chunks %.0f, want %.0f", what, hot_chunks(), chunks);
    /* A stage left behind would still be charged. */
    if (used >= 0 && hot_stat("used_bytes") != used)
        fail_msg("%s: hot used_bytes %.0f, want %.0f", what, hot_stat("used_bytes"), used);
    free(one);
}

/* For every dtype, value and spot: a refused store over (old_tokens > 0)
 * or into (old_tokens == 0) a context leaves it as it was. */
static void refuse_all_cases(const struct shape *s)
{
    const float bad[] = { NAN, INFINITY, -INFINITY };
    const char *const bad_names[] = { "NaN", "+Inf", "-Inf" };

    for (size_t di = 0; di < 3; di++) {
        kvt_dtype dt = dtypes[di];
        kvt_client *c = connect_as(s, dt, (int)di);
        uint8_t *before = NULL;
        struct batch old, next;
        char ctx[64], what[128];

        snprintf(ctx, sizeof(ctx), "ctx-%u", s->old_tokens);
        if (s->old_tokens) {
            batch_fill(&old, s, dt, 0, s->old_tokens, 10);
            CHECK_OK(kvt_store_batch(c, ctx, old.spans, s->layers));
            batch_free(&old, s);
            before = fetch_all(c, ctx, s, dt, s->old_tokens);
        }
        double chunks = hot_chunks(), used = hot_stat("used_bytes");
        for (size_t v = 0; v < 3; v++)
            for (enum spot at = SPOT_FIRST; at <= SPOT_WHOLE; at++) {
                snprintf(what, sizeof(what), "%s, %s in the %s segment, %u old tokens",
                         dtype_names[di], bad_names[v], spot_name(at), s->old_tokens);
                batch_fill(&next, s, dt, s->start, s->tokens, 20);
                poison(&next, s, dt, at, bad[v]);
                expect_refused(c, kvt_store_batch(c, ctx, next.spans, s->layers), what);
                batch_free(&next, s);
                expect_unchanged(c, ctx, s, dt, before, chunks, used, what);
            }
        free(before);
        kvt_disconnect(c);
    }
}

static void start_int8(void)
{
    daemon_start(&d, "--hot-bytes", "256M", "--workers", "2", NULL);
}

static void stop(void)
{
    daemon_stop(&d);
    daemon_cleanup(&d);
}

static void refused_over_existing_context(void **state)
{
    (void)state;
    start_int8();
    refuse_all_cases(&small);
    stop();
}

static void refused_into_new_context(void **state)
{
    (void)state;
    struct shape s = small;
    s.old_tokens = 0;
    start_int8();
    refuse_all_cases(&s);
    stop();
}

/* Token-addressed stores take the same path: nothing becomes matchable. */
static void refused_token_store(void **state)
{
    (void)state;
    const struct shape *s = &small;
    int32_t tokens[64];
    struct batch b;
    uint32_t cached = 99;

    start_int8();
    kvt_client *c = connect_as(s, KVT_F16, 0);
    for (int i = 0; i < 64; i++)
        tokens[i] = 1000 + i;
    batch_fill(&b, s, KVT_F16, 0, 64, 30);
    poison(&b, s, KVT_F16, SPOT_LAST, NAN);
    expect_refused(c, kvt_store_tokens(c, tokens, 64, b.spans, s->layers), "token store");
    CHECK_OK(kvt_match_tokens(c, tokens, 64, &cached));
    assert_int_equal(cached, 0);
    assert_true(hot_chunks() == 0);
    batch_free(&b, s);
    kvt_disconnect(c);
    stop();
}

static void refused_split_over_existing_context(void **state)
{
    (void)state;
    start_int8();
    refuse_all_cases(&large);
    stop();
}

static void refused_split_into_new_context(void **state)
{
    (void)state;
    struct shape s = large;
    s.old_tokens = 0;
    start_int8();
    refuse_all_cases(&s);
    stop();
}

/* A budget of 3 MiB: stages may take 1.5 MiB, about 3/4 of the large
 * request's whole chunks, and the old context takes most of the rest, so
 * the other segments fall back to the check and the in-place write. */
static void tight_budget_stores_and_refuses(void **state)
{
    (void)state;
    const struct shape *s = &large;
    struct batch old, next;
    const uint32_t end = s->start + s->tokens;
    size_t bytes = (size_t)end * row_bytes(s, KVT_F16) * 2 * s->layers;
    uint32_t len = 0;

    daemon_start(&d, "--hot-bytes", "3M", "--workers", "2", NULL);
    kvt_client *c = connect_as(s, KVT_F16, 0);
    batch_fill(&old, s, KVT_F16, 0, s->old_tokens, 10);
    CHECK_OK(kvt_store_batch(c, "tight", old.spans, s->layers));
    batch_free(&old, s);
    for (enum spot at = SPOT_FIRST; at <= SPOT_WHOLE; at++) {
        batch_fill(&next, s, KVT_F16, s->start, s->tokens, 20);
        poison(&next, s, KVT_F16, at, NAN);
        expect_refused(c, kvt_store_batch(c, "tight", next.spans, s->layers), spot_name(at));
        batch_free(&next, s);
    }
    /* Tokens [0, start) from seed 10, the rest from seed 20. */
    batch_fill(&old, s, KVT_F16, 0, s->start, 10);
    CHECK_OK(kvt_store_batch(c, "tight", old.spans, s->layers));
    batch_free(&old, s);
    batch_fill(&next, s, KVT_F16, s->start, s->tokens, 20);
    CHECK_OK(kvt_store_batch(c, "tight", next.spans, s->layers));
    batch_free(&next, s);
    CHECK_OK(kvt_length(c, "tight", &len));
    assert_int_equal(len, end);
    uint8_t *all = fetch_all(c, "tight", s, KVT_F16, end);
    size_t rb = (size_t)end * row_bytes(s, KVT_F16), sb = (size_t)s->start * row_bytes(s, KVT_F16);
    for (uint32_t l = 0; l < s->layers; l++) {
        const uint8_t *k = all + rb * 2 * l, *v = k + rb;
        assert_int_equal(test_check(k, KVT_F16, 10, l, 0, s->start, s->heads, s->dim, 0), 0);
        assert_int_equal(test_check(v, KVT_F16, 11, l, 0, s->start, s->heads, s->dim, 0), 0);
        assert_int_equal(test_check(k + sb, KVT_F16, 20, l, s->start, s->tokens, s->heads,
                                    s->dim, 0), 0);
        assert_int_equal(test_check(v + sb, KVT_F16, 21, l, s->start, s->tokens, s->heads,
                                    s->dim, 0), 0);
    }
    assert_true(bytes > 0);
    free(all);
    kvt_disconnect(c);
    stop();
}

/* Two clients, each sending split requests in turn refused and accepted:
 * a check phase that made a worker wait for another part would hang here
 * with two workers. Each child gives up after 120 s (SIGALRM). */
static int split_client(void *arg)
{
    int id = *(int *)arg;
    const struct shape *s = &large;
    kvt_client *c = NULL;
    kvt_model m = test_model("nf-two-clients", s->layers, s->heads, s->dim, KVT_F16, s->chunk);
    char ctx[32];
    struct batch b;

    alarm(120);
    if (kvt_connect(d.socket, &m, &c))
        return 10;
    snprintf(ctx, sizeof(ctx), "client-%d", id);
    for (int i = 0; i < 10; i++) {
        batch_fill(&b, s, KVT_F16, 0, s->tokens, (uint64_t)(40 + id));
        if (i % 2 == 0)
            poison(&b, s, KVT_F16, i % 4 ? SPOT_LAST : SPOT_FIRST, NAN);
        int rc = kvt_store_batch(c, ctx, b.spans, s->layers);
        batch_free(&b, s);
        if (rc != (i % 2 == 0 ? -EINVAL : 0))
            return 11;
    }
    kvt_disconnect(c);
    return 0;
}

static void split_refusals_from_two_clients(void **state)
{
    (void)state;
    int ids[2] = { 0, 1 }, st;
    pid_t pids[2];

    start_int8();
    for (int i = 0; i < 2; i++) {
        pids[i] = fork();
        assert_true(pids[i] >= 0);
        if (pids[i] == 0)
            _exit(split_client(&ids[i]));
    }
    for (int i = 0; i < 2; i++) {
        assert_int_equal(waitpid(pids[i], &st, 0), pids[i]);
        if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
            daemon_kill(&d);     /* it may be the one that hangs */
            fail_msg("client %d: exit status %d, signal %d", i,
                     WIFEXITED(st) ? WEXITSTATUS(st) : -1, WIFSIGNALED(st) ? WTERMSIG(st) : 0);
        }
    }
    stop();
}

/* Finite values at the edges of each dtype are not mistaken for NaN/Inf. */
static void special_finite_values_stored(void **state)
{
    (void)state;
    const struct shape *s = &small;

    start_int8();
    for (size_t di = 0; di < 3; di++) {
        kvt_dtype dt = dtypes[di];
        kvt_client *c = connect_as(s, dt, (int)di);
        struct batch b;
        /* -0, the smallest subnormal, the largest finite value */
        const uint32_t raw[3][3] = { { 0x8000, 0x0001, 0x7bff },
                                     { 0x8000, 0x0001, 0x7f7f },
                                     { 0x80000000u, 0x00000001, 0x7f7fffff } };

        batch_fill(&b, s, dt, s->start, s->tokens, 50);
        for (int i = 0; i < 3; i++) {
            uint16_t h = (uint16_t)raw[di][i];
            uint8_t *k = b.spans[s->layers - 1].k;
            if (dt == KVT_F32)
                memcpy(k + (size_t)i * 4, &raw[di][i], 4);
            else
                memcpy(k + (size_t)i * 2, &h, 2);
        }
        CHECK_OK(kvt_store_batch(c, "finite", b.spans, s->layers));
        batch_free(&b, s);
        kvt_disconnect(c);
    }
    stop();
}

/* Lossless mode stores what it is given: NaN payloads and Inf included. */
static void quant_none_keeps_nonfinite(void **state)
{
    (void)state;
    const struct shape *s = &small;

    daemon_start(&d, "--quant", "none", NULL);
    for (size_t di = 0; di < 3; di++) {
        kvt_dtype dt = dtypes[di];
        kvt_client *c = connect_as(s, dt, (int)di);
        struct batch b;
        /* quiet NaN, signalling NaN with a payload, negative NaN, +Inf, -Inf */
        const uint32_t raw[3][5] = {
            { 0x7e00, 0x7c01, 0xfe5a, 0x7c00, 0xfc00 },
            { 0x7fc0, 0x7f81, 0xffc5, 0x7f80, 0xff80 },
            { 0x7fc00000u, 0x7f800001u, 0xffc12345u, 0x7f800000u, 0xff800000u },
        };

        batch_fill(&b, s, dt, s->start, s->tokens, 60);
        for (uint32_t l = 0; l < s->layers; l++)
            for (int i = 0; i < 5; i++) {
                size_t at = (size_t)(l * 7 + (uint32_t)i * 131) % (s->tokens * elems_per_row(s));
                uint16_t h = (uint16_t)raw[di][i];
                uint8_t *k = b.spans[l].k, *v = b.spans[l].v;
                size_t esz = dt == KVT_F32 ? 4 : 2;
                memcpy(k + at * esz, dt == KVT_F32 ? (const void *)&raw[di][i] : &h, esz);
                memcpy(v + (b.bytes - esz) - at * esz,
                       dt == KVT_F32 ? (const void *)&raw[di][i] : &h, esz);
            }
        CHECK_OK(kvt_store_batch(c, "lossless", b.spans, s->layers));
        for (uint32_t l = 0; l < s->layers; l++) {
            uint8_t *k = malloc(b.bytes), *v = malloc(b.bytes);
            assert_non_null(k);
            assert_non_null(v);
            CHECK_OK(kvt_fetch(c, "lossless", l, s->start, s->tokens, k, v));
            if (memcmp(k, b.spans[l].k, b.bytes) || memcmp(v, b.spans[l].v, b.bytes))
                fail_msg("%s layer %u: lossless fetch differs from the store",
                         dtype_names[di], l);
            free(k);
            free(v);
        }
        batch_free(&b, s);
        kvt_disconnect(c);
    }
    stop();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(refused_over_existing_context),
        cmocka_unit_test(refused_into_new_context),
        cmocka_unit_test(refused_token_store),
        cmocka_unit_test(refused_split_over_existing_context),
        cmocka_unit_test(refused_split_into_new_context),
        cmocka_unit_test(split_refusals_from_two_clients),
        cmocka_unit_test(tight_budget_stores_and_refuses),
        cmocka_unit_test(special_finite_values_stored),
        cmocka_unit_test(quant_none_keeps_nonfinite),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
