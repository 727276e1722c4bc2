/* test_outlier_accuracy.c - proves libkvtier(3)'s accuracy promise of the int8
 * mode ("Outliers") on keys shaped like real ones, against a real daemon, with
 * the data stored by one process and fetched as f32 by another:
 *   - with the default (`outliers` 4), every element of K and V is within
 *     R/127 of what was stored, R being the largest magnitude in its (token,
 *     head) vector once its 4 largest are set aside, and those 4 come back
 *     within f16 rounding; the relative RMS error of K's ordinary channels
 *     is at most 1 %;
 *   - softmax(q K^T / sqrt(d)) over the fetched keys is no further (mean KL
 *     divergence over queries, heads and layers) from the one over the
 *     stored keys than the one over the same keys rounded to bf16;
 *   - the same bound and RMS hold for what comes back from the cold tier
 *     after kvt_sync, kill -9 and a restart;
 *   - with `outliers = 0` (set by the config file) the plain bound, amax/127
 *     per vector, holds for every element;
 *   - with `--quant none` an f16 round trip is bit-exact, NaN payloads,
 *     infinities, signed zeros and subnormals included.
 * The keys: Gaussian, with in every head two channels x10 and two x30 (at
 * different channels in each head); values Gaussian. 600 tokens in chunks of
 * 256: two whole chunks and a partial one per layer. */
#include "tests/helpers.h"
#include "tests/simd_util.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#define LAYERS 3
#define HEADS 8
#define DIM 128
#define TOKENS 600
#define SPLIT 400              /* stored as [0, 400) then [400, 600) */
#define N_OUT 4                /* the daemon's default `outliers` */
#define QUERIES 16             /* per layer and head */
#define ROW (HEADS * DIM)      /* elements per token */
#define ELEMS ((size_t)LAYERS * TOKENS * ROW)

static struct test_daemon d;
static char cold_dir[64];              /* the cold tier test's, made before the daemon */
static uint16_t *stored_k, *stored_v;  /* f16, [layer][token][head][dim] */
static uint16_t *special_k, *special_v; /* the same with special values, lossless test */
/* What the fetching process got, f32 (or f16 bits for the lossless test):
 * shared with it, so the checks run here with cmocka's messages. */
static float *got_k, *got_v;

/* Channel i (0..3) of head h carrying outliers, and its gain. */
static const float outlier_gain[4] = { 10, 10, 30, 30 };
static uint32_t outlier_channel(uint32_t h, int i)
{
    return (h * 37 + 5 + (uint32_t)i * 31) % DIM;
}

static float channel_gain(uint32_t h, uint32_t c)
{
    for (int i = 0; i < 4; i++)
        if (outlier_channel(h, i) == c)
            return outlier_gain[i];
    return 1;
}

static size_t at(uint32_t layer, uint32_t token, uint32_t head)
{
    return ((size_t)layer * TOKENS + token) * ROW + (size_t)head * DIM;
}

static void make_data(void)
{
    struct rng r = { 20240611 };

    for (uint32_t l = 0; l < LAYERS; l++)
        for (uint32_t t = 0; t < TOKENS; t++)
            for (uint32_t h = 0; h < HEADS; h++)
                for (uint32_t c = 0; c < DIM; c++) {
                    size_t i = at(l, t, h) + c;
                    stored_k[i] = simd_f32_to_f16((float)rng_gauss(&r) * channel_gain(h, c));
                    stored_v[i] = simd_f32_to_f16((float)rng_gauss(&r));
                }
}

/* ---- the two processes ---------------------------------------------------- */

struct store_job {
    const uint16_t *k, *v;
    int sync;                  /* kvt_sync before disconnecting */
};

static int child_store(void *arg)
{
    const struct store_job *job = arg;
    kvt_model m = test_model("outlier-model", LAYERS, HEADS, DIM, KVT_F16, 256);
    kvt_client *c = NULL;
    kvt_span spans[LAYERS];
    const uint32_t from[2] = { 0, SPLIT }, to[2] = { SPLIT, TOKENS };
    int rc = kvt_connect(d.socket, &m, &c);

    CHILD_CHECK(rc == 0, 10);
    for (int part = 0; part < 2; part++) {
        for (uint32_t l = 0; l < LAYERS; l++)
            spans[l] = (kvt_span){ l, from[part], to[part] - from[part],
                                   (void *)(job->k + at(l, from[part], 0)),
                                   (void *)(job->v + at(l, from[part], 0)) };
        rc = kvt_store_batch(c, "ctx", spans, LAYERS);
        if (rc)
            fprintf(stderr, "store: %s\n", kvt_strerror(rc));
        CHILD_CHECK(rc == 0, 11);
    }
    if (job->sync)
        CHILD_CHECK(kvt_sync(c) == 0, 12);
    kvt_disconnect(c);
    return 0;
}

static int child_fetch(void *arg)
{
    kvt_dtype dt = *(const kvt_dtype *)arg;
    kvt_model m = test_model("outlier-model", LAYERS, HEADS, DIM, dt, 256);
    kvt_client *c = NULL;
    kvt_span spans[LAYERS];
    size_t row_bytes = (size_t)ROW * (dt == KVT_F32 ? 4 : 2);
    int rc = kvt_connect(d.socket, &m, &c);

    CHILD_CHECK(rc == 0, 20);
    for (uint32_t l = 0; l < LAYERS; l++)
        spans[l] = (kvt_span){ l, 0, TOKENS, (char *)got_k + (size_t)l * TOKENS * row_bytes,
                               (char *)got_v + (size_t)l * TOKENS * row_bytes };
    rc = kvt_fetch_batch(c, "ctx", spans, LAYERS);
    if (rc)
        fprintf(stderr, "fetch: %s\n", kvt_strerror(rc));
    CHILD_CHECK(rc == 0, 21);
    kvt_disconnect(c);
    return 0;
}

static void store_in_child(const uint16_t *k, const uint16_t *v, int sync)
{
    struct store_job job = { k, v, sync };
    assert_int_equal(test_in_child(child_store, &job), 0);
}

static void fetch_in_child(kvt_dtype dt)
{
    memset(got_k, 0xff, ELEMS * sizeof(float));    /* NaN: nothing left over */
    memset(got_v, 0xff, ELEMS * sizeof(float));
    assert_int_equal(test_in_child(child_fetch, &dt), 0);
}

/* The daemon's `outliers` setting, or -ENOENT when it has no such key. */
static int outliers_setting(void)
{
    char reply[1024];
    int n = -ENOENT;

    CHECK_OK(admin_request(&d, "{\"cmd\":\"config\",\"op\":\"get\",\"key\":\"outliers\"}",
                           reply, sizeof(reply)));
    cJSON *r = cJSON_Parse(reply);
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(r, "value");
    const cJSON *why = cJSON_GetObjectItemCaseSensitive(r, "error");
    if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(r, "ok")) && cJSON_IsString(v))
        n = atoi(v->valuestring);
    else if (!cJSON_IsString(why) || !strstr(why->valuestring, "unknown config key"))
        fail_msg("config get outliers: unexpected reply %s", reply);
    cJSON_Delete(r);
    return n;
}

/* The tests rely on the default being kvtierd(8)'s 4; a daemon from before the
 * key existed quantizes as outliers = 0 does, and fails the checks. */
static void expect_default_outliers(void)
{
    int n = outliers_setting();

    if (n == -ENOENT)
        print_message("kvtierd has no `outliers` key: checked against outliers = %d anyway\n",
                      N_OUT);
    else
        assert_int_equal(n, N_OUT);
}

/* ---- the bound and the error ------------------------------------------------ */

struct accuracy {
    size_t checked, violations;
    double worst;              /* largest |error| / bound */
    double k_rms_rel;          /* relative RMS error, K's ordinary channels */
    double v_rms_rel;          /* the same over all of V */
};

static int by_magnitude_desc(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return x < y ? 1 : x > y ? -1 : 0;
}

/* R of one vector: its largest magnitude once its n_out largest are set
 * aside (for n_out 0, amax). */
static float rest_amax(const uint16_t *x, unsigned n_out)
{
    float mag[DIM];

    for (int c = 0; c < DIM; c++)
        mag[c] = fabsf(simd_f16_to_f32(x[c]));
    qsort(mag, DIM, sizeof(float), by_magnitude_desc);
    return n_out < DIM ? mag[n_out] : 0;
}

/* Check one vector against libkvtier(3); add its squared errors to *err2 and
 * *ref2 (ordinary channels only when gain_of is set). */
static void check_vector(const uint16_t *stored, const float *got, unsigned n_out,
                         const char *what, uint32_t l, uint32_t t, uint32_t h, int is_key,
                         struct accuracy *a, double *err2, double *ref2)
{
    float r = rest_amax(stored, n_out);

    for (uint32_t c = 0; c < DIM; c++) {
        double x = simd_f16_to_f32(stored[c]), y = got[c], e = fabs(y - x);
        /* Larger than R: one of the kept ones, back within f16 rounding
         * (the stored value is f16 already, so in fact exact). A tie at R
         * may go either way, and R/127 covers it both ways. */
        double bound = fabs(x) > r ? fabs(x) * 0x1p-11 + 0x1p-25 : r / 127.0;
        bound += (fabs(x) + bound) * 0x1p-23;          /* fetched as f32 */
        a->checked++;
        if (!(e <= bound)) {
            if (!a->violations)
                fprintf(stderr, "%s: layer %u token %u head %u dim %u: got %.9g, stored "
                        "%.9g, error %.3g > bound %.3g (R %.4g)\n", what, l, t, h, c,
                        y, x, e, bound, r);
            a->violations++;
        }
        if (bound > 0 && e / bound > a->worst)
            a->worst = isnan(e) ? INFINITY : e / bound;
        if (!is_key || channel_gain(h, c) == 1) {
            *err2 += e * e;
            *ref2 += x * x;
        }
    }
}

static void measure(unsigned n_out, struct accuracy *a)
{
    double ke2 = 0, kx2 = 0, ve2 = 0, vx2 = 0;

    memset(a, 0, sizeof(*a));
    for (uint32_t l = 0; l < LAYERS; l++)
        for (uint32_t t = 0; t < TOKENS; t++)
            for (uint32_t h = 0; h < HEADS; h++) {
                size_t i = at(l, t, h);
                check_vector(stored_k + i, got_k + i, n_out, "K", l, t, h, 1, a, &ke2, &kx2);
                check_vector(stored_v + i, got_v + i, n_out, "V", l, t, h, 0, a, &ve2, &vx2);
            }
    a->k_rms_rel = sqrt(ke2 / kx2);
    a->v_rms_rel = sqrt(ve2 / vx2);
}

static void report(const char *label, unsigned n_out, const struct accuracy *a)
{
    print_message("%s (bound of outliers = %u): %zu of %zu elements outside the bound, "
                  "worst error %.3g x bound; relative RMS error: K ordinary channels "
                  "%.3f %%, V %.3f %%\n", label, n_out, a->violations, a->checked,
                  a->worst, a->k_rms_rel * 100, a->v_rms_rel * 100);
}

static void assert_outlier_promise(const char *label)
{
    struct accuracy a;

    measure(N_OUT, &a);
    report(label, N_OUT, &a);
    assert_int_equal(a.violations, 0);
    assert_true(a.k_rms_rel <= 0.01);
}

/* ---- attention -------------------------------------------------------------- */

static double k_orig(size_t i) { return simd_f16_to_f32(stored_k[i]); }
static double k_fetched(size_t i) { return got_k[i]; }
static double k_bf16(size_t i) { return simd_bf16_to_f32(simd_f32_to_bf16((float)k_orig(i))); }
static double v_orig(size_t i) { return simd_f16_to_f32(stored_v[i]); }
static double v_fetched(size_t i) { return got_v[i]; }
static double v_bf16(size_t i) { return simd_bf16_to_f32(simd_f32_to_bf16((float)v_orig(i))); }

/* p = softmax(q K^T / sqrt(d)) over the tokens of (layer l, head h). */
static void attention_weights(const double *q, uint32_t l, uint32_t h,
                              double (*key)(size_t), double *p)
{
    double top = -INFINITY, sum = 0;

    for (uint32_t t = 0; t < TOKENS; t++) {
        double dot = 0;
        for (uint32_t c = 0; c < DIM; c++)
            dot += q[c] * key(at(l, t, h) + c);
        p[t] = dot / sqrt((double)DIM);
        top = p[t] > top ? p[t] : top;
    }
    for (uint32_t t = 0; t < TOKENS; t++)
        sum += p[t] = exp(p[t] - top);
    for (uint32_t t = 0; t < TOKENS; t++)
        p[t] /= sum;
}

static double kl_divergence(const double *p, const double *q)
{
    double kl = 0;

    for (uint32_t t = 0; t < TOKENS; t++)
        if (p[t] > 0)
            kl += p[t] * log(p[t] / q[t]);
    return kl;
}

/* |p.V - p_ref.V_ref| / |p_ref.V_ref| for (layer l, head h). */
static double output_error(const double *p_ref, const double *p, uint32_t l, uint32_t h,
                           double (*value)(size_t))
{
    double diff2 = 0, ref2 = 0;

    for (uint32_t c = 0; c < DIM; c++) {
        double o_ref = 0, o = 0;
        for (uint32_t t = 0; t < TOKENS; t++) {
            o_ref += p_ref[t] * v_orig(at(l, t, h) + c);
            o += p[t] * value(at(l, t, h) + c);
        }
        diff2 += (o - o_ref) * (o - o_ref);
        ref2 += o_ref * o_ref;
    }
    return sqrt(diff2 / ref2);
}

/* ---- tests ---------------------------------------------------------------- */

static void default_outliers_bound_across_processes(void **state)
{
    (void)state;
    daemon_start(&d, "--hot-bytes", "64M", NULL);
    expect_default_outliers();
    store_in_child(stored_k, stored_v, 0);
    fetch_in_child(KVT_F32);
    assert_outlier_promise("hot tier");
    daemon_stop(&d);
}

static void attention_no_worse_than_bf16(void **state)
{
    static double p_ref[TOKENS], p_got[TOKENS], p_bf[TOKENS];
    struct rng r = { 777 };
    double kl_got = 0, kl_bf = 0, out_got = 0, out_bf = 0, q[DIM];
    int n = 0;

    (void)state;
    daemon_start(&d, "--hot-bytes", "64M", NULL);
    expect_default_outliers();
    store_in_child(stored_k, stored_v, 0);
    fetch_in_child(KVT_F32);
    for (uint32_t l = 0; l < LAYERS; l++)
        for (uint32_t h = 0; h < HEADS; h++)
            for (int i = 0; i < QUERIES; i++, n++) {
                /* Standard Gaussian in every channel, the outlier channels
                 * too: their large keys then dominate some logits. */
                for (uint32_t c = 0; c < DIM; c++)
                    q[c] = rng_gauss(&r);
                attention_weights(q, l, h, k_orig, p_ref);
                attention_weights(q, l, h, k_fetched, p_got);
                attention_weights(q, l, h, k_bf16, p_bf);
                kl_got += kl_divergence(p_ref, p_got);
                kl_bf += kl_divergence(p_ref, p_bf);
                out_got += output_error(p_ref, p_got, l, h, v_fetched);
                out_bf += output_error(p_ref, p_bf, l, h, v_bf16);
            }
    print_message("attention, mean over %d queries (%d layers x %d heads x %d): "
                  "KL(p || p_fetched) %.3g, KL(p || p_bf16) %.3g (ratio %.3f); "
                  "relative error of p.V: fetched K,V %.3g, bf16 K,V %.3g\n",
                  n, LAYERS, HEADS, QUERIES, kl_got / n, kl_bf / n, kl_got / kl_bf,
                  out_got / n, out_bf / n);
    assert_true(kl_got / n <= kl_bf / n);
    daemon_stop(&d);
}

static void cold_tier_after_kill9_keeps_bound(void **state)
{
    char cold_path[128], reply[8192];

    (void)state;
    snprintf(cold_dir, sizeof(cold_dir), "/var/tmp/kvtier-cold-XXXXXX");
    assert_non_null(mkdtemp(cold_dir));
    snprintf(cold_path, sizeof(cold_path), "%s/cold.kvt", cold_dir);
    daemon_start(&d, "--hot-bytes", "64M", "--cold-bytes", "256M",
                 "--cold-region-bytes", "4M", "--cold-path", cold_path, NULL);
    expect_default_outliers();
    store_in_child(stored_k, stored_v, 1);
    daemon_kill(&d);
    daemon_restart(&d, "--hot-bytes", "64M", "--cold-bytes", "256M",
                   "--cold-region-bytes", "4M", "--cold-path", cold_path, NULL);
    fetch_in_child(KVT_F32);
    /* A restarted daemon starts with an empty hot tier: everything came
     * from the cold file. */
    CHECK_OK(admin_request(&d, "{\"cmd\":\"stats\"}", reply, sizeof(reply)));
    cJSON *r = cJSON_Parse(reply);
    const cJSON *promoted = cJSON_GetObjectItemCaseSensitive(
        cJSON_GetObjectItemCaseSensitive(r, "tiers"), "promotions");
    assert_true(cJSON_IsNumber(promoted));
    print_message("cold tier: %.0f chunks promoted\n", promoted->valuedouble);
    assert_true(promoted->valuedouble >= LAYERS * 3);   /* 3 chunks a layer */
    cJSON_Delete(r);
    assert_outlier_promise("cold tier, after kill -9 and restart");
    daemon_stop(&d);
}

static void no_outliers_plain_bound(void **state)
{
    char conf[400];
    struct accuracy a;

    (void)state;
    daemon_start(&d, "--hot-bytes", "64M", NULL);
    if (outliers_setting() == -ENOENT) {
        print_message("kvtierd has no `outliers` key: its int8 mode is outliers = 0\n");
    } else {
        /* The config file's form of the key (the flag form is the bench's). */
        snprintf(conf, sizeof(conf), "%s/outliers0.conf", d.dir);
        FILE *f = fopen(conf, "w");
        assert_non_null(f);
        fprintf(f, "outliers = 0\n");
        assert_int_equal(fclose(f), 0);
        daemon_stop(&d);
        daemon_restart(&d, "--config", conf, "--hot-bytes", "64M", NULL);
        assert_int_equal(outliers_setting(), 0);
    }
    store_in_child(stored_k, stored_v, 0);
    fetch_in_child(KVT_F32);
    measure(0, &a);
    report("outliers = 0", 0, &a);
    assert_int_equal(a.violations, 0);
    daemon_stop(&d);
}

static void lossless_f16_bit_exact(void **state)
{
    /* NaNs with payloads (quiet and signalling, both signs), infinities,
     * signed zeros, subnormals, the largest finite values. */
    static const uint16_t special[] = {
        0x7c01, 0x7d55, 0x7e00, 0x7fff, 0xfc01, 0xfe2a, 0xffff, 0x7c00, 0xfc00,
        0x0000, 0x8000, 0x0001, 0x83ff, 0x03ff, 0x7bff, 0xfbff, 0x0400,
    };
    uint16_t *k = special_k, *v = special_v;
    size_t n_special = ARRAY_LEN(special), placed = 0;

    (void)state;
    memcpy(k, stored_k, ELEMS * 2);
    memcpy(v, stored_v, ELEMS * 2);
    /* Special values spread over every layer, both halves of the store and
     * every chunk, in K and in V. */
    for (size_t i = 0; i < ELEMS; i += 997, placed++) {
        k[i] = special[placed % n_special];
        v[ELEMS - 1 - i] = special[(placed + 5) % n_special];
    }
    daemon_start(&d, "--quant", "none", "--hot-bytes", "64M", NULL);
    store_in_child(k, v, 0);
    fetch_in_child(KVT_F16);
    size_t diff_k = 0, diff_v = 0;
    for (size_t i = 0; i < ELEMS; i++) {
        diff_k += ((uint16_t *)got_k)[i] != k[i];
        diff_v += ((uint16_t *)got_v)[i] != v[i];
    }
    print_message("--quant none: %zu special values placed; %zu K and %zu V elements "
                  "differ\n", placed, diff_k, diff_v);
    assert_int_equal(diff_k, 0);
    assert_int_equal(diff_v, 0);
    daemon_stop(&d);
}

/* Also after a failed check: no daemon, temp dir or cold file left behind. */
static int cleanup(void **state)
{
    char cmd[128];

    (void)state;
    daemon_cleanup(&d);
    if (cold_dir[0]) {
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", cold_dir);
        if (system(cmd) != 0)
            fprintf(stderr, "cannot remove %s\n", cold_dir);
        cold_dir[0] = '\0';
    }
    return 0;
}

static int setup(void **state)
{
    (void)state;
    stored_k = malloc(ELEMS * 2);
    stored_v = malloc(ELEMS * 2);
    special_k = malloc(ELEMS * 2);
    special_v = malloc(ELEMS * 2);
    got_k = mmap(NULL, ELEMS * 4, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    got_v = mmap(NULL, ELEMS * 4, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (!stored_k || !stored_v || !special_k || !special_v || got_k == MAP_FAILED || got_v == MAP_FAILED)
        return -1;
    make_data();
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    free(stored_k);
    free(stored_v);
    free(special_k);
    free(special_v);
    munmap(got_k, ELEMS * 4);
    munmap(got_v, ELEMS * 4);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(default_outliers_bound_across_processes, cleanup),
        cmocka_unit_test_teardown(attention_no_worse_than_bf16, cleanup),
        cmocka_unit_test_teardown(cold_tier_after_kill9_keeps_bound, cleanup),
        cmocka_unit_test_teardown(no_outliers_plain_bound, cleanup),
        cmocka_unit_test_teardown(lossless_f16_bit_exact, cleanup),
    };
    return cmocka_run_group_tests_name("outlier accuracy", tests, setup, teardown);
}
