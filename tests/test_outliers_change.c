/* test_outliers_change.c - proves that a chunk keeps the outliers value it
 * was created with, whatever the daemon's `outliers` setting is later, on a
 * real kvtierd with a cold tier:
 *  - stored with outliers 4, synced, restarted with 0: the old context still
 *    reads at the outliers-4 accuracy (relative RMS error of the non-outlier
 *    channels of keys with x30 channels <= 1 %), both its full chunk and its
 *    partial one (promoted from records of another outliers value), and
 *    tokens appended to the partial chunk after the restart read back at
 *    that accuracy too; a context stored after the restart has the plain
 *    int8 error (several times larger), within the plain bound;
 *  - the other way (0, restart with 4): the old context and tokens appended
 *    to its chunks keep the plain format, a new context gets outliers;
 *  - `config set outliers` while running applies to new chunks only: an
 *    append to a chunk in RAM keeps its value;
 *  - kvt_length stays right through all of it;
 *  - in int8 mode with outliers, a store of NaN is refused with -EINVAL and
 *    leaves the tokens absent. */
#include "tests/helpers.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define LAYERS 2
#define HEADS 4
#define DIM 64
#define CHUNK 32
#define T_OLD 40                       /* one full chunk and 8 tokens of the next */
#define T_APPEND 16                    /* tokens 40..55, into the partial chunk */
#define T_MAX (T_OLD + T_APPEND)
#define VALS (T_MAX * HEADS * DIM)

static struct test_daemon d;
static char cold_dir[64], cold_path[128];
static float k[VALS], v[VALS];

/* Channels that are 30 times larger than the rest in every vector, as a
 * few channels of real keys are: exactly `outliers` = 4 of them. */
static int is_big_channel(uint32_t e)
{
    return e == 3 || e == 17 || e == 40 || e == 61;
}

static float uniform(uint64_t x)
{
    x ^= x >> 33;
    x *= UINT64_C(0xff51afd7ed558ccd);
    x ^= x >> 33;
    x *= UINT64_C(0xc4ceb9fe1a85ec53);
    x ^= x >> 33;
    return (float)((double)(x >> 11) / (double)(UINT64_C(1) << 53)) * 2.0f - 1.0f;
}

/* Values in [-1, 1]; big channels +-15..30. */
static float value(uint64_t seed, uint32_t layer, uint32_t tok, uint32_t i)
{
    uint64_t x = seed * 0x9e3779b97f4a7c15u ^ ((uint64_t)layer << 48) ^
                 ((uint64_t)tok << 20) ^ i;
    float u = uniform(x);
    if (!is_big_channel(i % DIM))
        return u;
    return (u < 0 ? -30.0f : 30.0f) * (0.5f + 0.5f * fabsf(u));
}

static void fill(float *buf, uint64_t seed, uint32_t layer, uint32_t tok0, uint32_t n)
{
    for (uint32_t t = 0; t < n; t++)
        for (uint32_t i = 0; i < HEADS * DIM; i++)
            buf[(size_t)t * HEADS * DIM + i] = value(seed, layer, tok0 + t, i);
}

/* Relative RMS error of the non-big channels of tokens [tok0, tok0 + n).
 * Fails the test if any element breaks the plain int8 bound (amax/127 of
 * its vector, big channels included): whatever the format, never worse. */
static double rel_rms(const float *buf, uint64_t seed, uint32_t layer, uint32_t tok0,
                      uint32_t n)
{
    double err2 = 0, ref2 = 0;

    for (uint32_t t = 0; t < n; t++) {
        for (uint32_t h = 0; h < HEADS; h++) {
            const float *got = buf + ((size_t)t * HEADS + h) * DIM;
            float amax = 0;
            for (uint32_t e = 0; e < DIM; e++)
                amax = fmaxf(amax, fabsf(value(seed, layer, tok0 + t, h * DIM + e)));
            for (uint32_t e = 0; e < DIM; e++) {
                float want = value(seed, layer, tok0 + t, h * DIM + e);
                if (fabsf(got[e] - want) > amax / 127.0f + 1e-6f)
                    fail_msg("token %u head %u elem %u: %g, want %g (bound %g)",
                             tok0 + t, h, e, got[e], want, amax / 127.0f);
                if (is_big_channel(e))
                    continue;
                err2 += (double)(got[e] - want) * (got[e] - want);
                ref2 += (double)want * want;
            }
        }
    }
    return sqrt(err2 / ref2);
}

static kvt_client *connect_client(void)
{
    kvt_model m = test_model("outliers-model", LAYERS, HEADS, DIM, KVT_F32, CHUNK);
    kvt_client *c = NULL;
    CHECK_OK(kvt_connect(d.socket, &m, &c));
    return c;
}

static void start(const char *outliers)
{
    daemon_start(&d, "--hot-bytes", "64M", "--cold-bytes", "64M",
                 "--cold-region-bytes", "4M", "--cold-path", cold_path,
                 "--outliers", outliers, NULL);
}

static void restart(const char *outliers)
{
    daemon_stop(&d);
    daemon_restart(&d, "--hot-bytes", "64M", "--cold-bytes", "64M",
                   "--cold-region-bytes", "4M", "--cold-path", cold_path,
                   "--outliers", outliers, NULL);
}

static void store(kvt_client *c, const char *ctx, uint64_t seed, uint32_t tok0, uint32_t n)
{
    for (uint32_t l = 0; l < LAYERS; l++) {
        fill(k, seed, l, tok0, n);
        fill(v, seed + 1, l, tok0, n);
        CHECK_OK(kvt_store(c, ctx, l, tok0, n, k, v));
    }
}

/* The largest relative RMS error of K over every layer, checking V too. */
static double fetch_err(kvt_client *c, const char *ctx, uint64_t seed, uint32_t tok0,
                        uint32_t n)
{
    double worst = 0;

    for (uint32_t l = 0; l < LAYERS; l++) {
        memset(k, 0, sizeof(k));
        memset(v, 0, sizeof(v));
        CHECK_OK(kvt_fetch(c, ctx, l, tok0, n, k, v));
        double ek = rel_rms(k, seed, l, tok0, n), ev = rel_rms(v, seed + 1, l, tok0, n);
        worst = fmax(worst, fmax(ek, ev));
    }
    return worst;
}

static void expect_length(kvt_client *c, const char *ctx, uint32_t want)
{
    uint32_t len = 0;
    CHECK_OK(kvt_length(c, ctx, &len));
    assert_int_equal(len, want);
}

#define KEPT_MAX 0.01                  /* outliers kept: the rest at their own scale */
#define PLAIN_MIN 0.03                 /* plain int8: scale set by the x30 channels */

static void assert_kept(double err, const char *what)
{
    if (err > KEPT_MAX)
        fail_msg("%s: relative RMS error %.4f > %.2f: not read with its outliers",
                 what, err, KEPT_MAX);
}

static void assert_plain(double err, const char *what)
{
    if (err < PLAIN_MIN)
        fail_msg("%s: relative RMS error %.4f < %.2f: stored with outliers", what, err,
                 PLAIN_MIN);
}

static void outliers_4_then_0(void **state)
{
    (void)state;
    start("4");
    kvt_client *c = connect_client();
    store(c, "old", 10, 0, T_OLD);
    assert_kept(fetch_err(c, "old", 10, 0, T_OLD), "old, before the restart");
    CHECK_OK(kvt_sync(c));

    restart("0");
    expect_length(c, "old", T_OLD);
    /* Both chunks come from records written with outliers 4. */
    assert_kept(fetch_err(c, "old", 10, 0, T_OLD), "old after restart with 0");
    expect_length(c, "old", T_OLD);
    /* Again, so that the partial chunk is only on the cold tier and the
     * append must create it from a record of another outliers value. */
    restart("0");
    store(c, "old", 10, T_OLD, T_APPEND);
    expect_length(c, "old", T_MAX);
    assert_kept(fetch_err(c, "old", 10, 0, T_MAX), "old with tokens appended after restart");

    store(c, "new", 20, 0, T_OLD);
    assert_plain(fetch_err(c, "new", 20, 0, T_OLD), "new context with outliers 0");
    expect_length(c, "new", T_OLD);

    /* And after one more round through the cold tier, still as stored. */
    CHECK_OK(kvt_sync(c));
    restart("0");
    assert_kept(fetch_err(c, "old", 10, 0, T_MAX), "old after a second restart");
    assert_plain(fetch_err(c, "new", 20, 0, T_OLD), "new after a second restart");
    kvt_disconnect(c);
}

static void outliers_0_then_4(void **state)
{
    (void)state;
    start("0");
    kvt_client *c = connect_client();
    store(c, "old", 30, 0, T_OLD);
    assert_plain(fetch_err(c, "old", 30, 0, T_OLD), "old stored with 0");
    CHECK_OK(kvt_sync(c));

    restart("4");
    expect_length(c, "old", T_OLD);
    assert_plain(fetch_err(c, "old", 30, 0, T_OLD), "old after restart with 4");
    restart("4");
    store(c, "old", 30, T_OLD, T_APPEND);
    expect_length(c, "old", T_MAX);
    /* The appended tokens went into the partial chunk, which keeps 0. */
    assert_plain(fetch_err(c, "old", 30, T_OLD, T_APPEND), "tokens appended to a 0 chunk");

    store(c, "new", 40, 0, T_OLD);
    assert_kept(fetch_err(c, "new", 40, 0, T_OLD), "new context with outliers 4");
    kvt_disconnect(c);
}

static void config_set_applies_to_new_chunks(void **state)
{
    (void)state;
    char reply[512];

    start("4");
    kvt_client *c = connect_client();
    store(c, "live", 50, 0, 20);                      /* chunk 0, partly */
    CHECK_OK(admin_request(&d, "{\"cmd\":\"config\",\"op\":\"set\",\"key\":\"outliers\","
                               "\"value\":0}", reply, sizeof(reply)));
    if (!strstr(reply, "\"ok\":true"))
        fail_msg("config set outliers: %s", reply);
    /* The chunk in RAM keeps 4; chunk 1 is new and gets 0. */
    store(c, "live", 50, 20, CHUNK - 20 + 8);
    expect_length(c, "live", CHUNK + 8);
    assert_kept(fetch_err(c, "live", 50, 0, CHUNK), "chunk created before config set");
    assert_plain(fetch_err(c, "live", 50, CHUNK, 8), "chunk created after config set");
    kvt_disconnect(c);
}

static void nan_is_refused(void **state)
{
    (void)state;
    start("4");
    kvt_client *c = connect_client();
    store(c, "nan", 60, 0, 8);
    fill(k, 60, 0, 8, 8);
    fill(v, 61, 0, 8, 8);
    k[5 * HEADS * DIM + 7] = NAN;
    CHECK_RC(kvt_store(c, "nan", 0, 8, 8, k, v), -EINVAL);
    CHECK_RC(kvt_fetch(c, "nan", 0, 8, 8, k, v), -ENOENT);
    expect_length(c, "nan", 8);
    assert_kept(fetch_err(c, "nan", 60, 0, 8), "tokens before the refused store");
    kvt_disconnect(c);
}

static int setup(void **state)
{
    (void)state;
    snprintf(cold_dir, sizeof(cold_dir), "/var/tmp/kvtier-outliers-XXXXXX");
    assert_non_null(mkdtemp(cold_dir));
    snprintf(cold_path, sizeof(cold_path), "%s/cold.kvt", cold_dir);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    daemon_cleanup(&d);
    unlink(cold_path);
    rmdir(cold_dir);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(outliers_4_then_0, setup, teardown),
        cmocka_unit_test_setup_teardown(outliers_0_then_4, setup, teardown),
        cmocka_unit_test_setup_teardown(config_set_applies_to_new_chunks, setup, teardown),
        cmocka_unit_test_setup_teardown(nan_is_refused, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
