/* test_quotas.c - proves per-sharing-domain hot quotas on a real daemon
 * (--hot-quota 32M, --hot-bytes 256M, no cold tier): root stores a few
 * contexts, well under the quota; a client running as uid 65534 (another
 * domain) then stores about 128 MiB, four times its quota but only half the
 * budget. Afterwards every one of root's contexts is still there with the
 * right values, so nobody's stores never pushed out root's chunks, and
 * nobody's newest context is fetchable while its oldest is -ENOENT: the
 * domain made room by evicting its own chunks. `config set hot-quota` on the
 * admin socket changes this live: with 0 the domain keeps everything it
 * stores, and a smaller quota holds at once for every domain over it, each
 * losing its own least recently used contexts. With a cold tier the
 * demoter applies a lowered quota: the domain's hot bytes in stats come
 * down to it with no store, and demoted data is promoted back on fetch. */
#include "tests/helpers.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define LAYERS 4
#define HEADS 8
#define DIM 128
#define CHUNK 64
#define T 256                         /* tokens per context: ~2.1 MiB stored int8 */
#define NOBODY 65534
#define ROOT_CONTEXTS 4               /* ~8.5 MiB, under the 32 MiB quota */
#define NOBODY_CONTEXTS 60            /* ~128 MiB of int8 chunks */
#define ROOT_SEED 1000
#define NOBODY_SEED 5000

static struct test_daemon d;

static kvt_model model(void)
{
    return test_model("quota-model", LAYERS, HEADS, DIM, KVT_F16, CHUNK);
}

static uint16_t kbuf[LAYERS][T * HEADS * DIM], vbuf[LAYERS][T * HEADS * DIM];

/* Store T tokens of every layer under ctx with values from seed. */
static int store_ctx(kvt_client *c, const char *ctx, uint64_t seed)
{
    kvt_span spans[LAYERS];

    for (uint32_t l = 0; l < LAYERS; l++) {
        test_fill(kbuf[l], KVT_F16, seed, l, 0, T, HEADS, DIM);
        test_fill(vbuf[l], KVT_F16, seed + 1, l, 0, T, HEADS, DIM);
        spans[l] = (kvt_span){ l, 0, T, kbuf[l], vbuf[l] };
    }
    return kvt_store_batch(c, ctx, spans, LAYERS);
}

/* Fetch ctx and compare with seed's values: 0, the fetch's rc, or 1 for
 * wrong values. */
static int fetch_ctx(kvt_client *c, const char *ctx, uint64_t seed)
{
    kvt_span spans[LAYERS];
    size_t bad = 0;
    int rc;

    memset(kbuf, 0, sizeof(kbuf));
    memset(vbuf, 0, sizeof(vbuf));
    for (uint32_t l = 0; l < LAYERS; l++)
        spans[l] = (kvt_span){ l, 0, T, kbuf[l], vbuf[l] };
    rc = kvt_fetch_batch(c, ctx, spans, LAYERS);
    if (rc)
        return rc;
    for (uint32_t l = 0; l < LAYERS; l++) {
        bad += test_check(kbuf[l], KVT_F16, seed, l, 0, T, HEADS, DIM, 0);
        bad += test_check(vbuf[l], KVT_F16, seed + 1, l, 0, T, HEADS, DIM, 0);
    }
    return bad ? 1 : 0;
}

static void ctx_name(char *buf, size_t len, const char *prefix, int i)
{
    snprintf(buf, len, "%s-%d", prefix, i);
}

/* What a nobody child does: store contexts prefix-first..prefix-(last-1),
 * then fetch want_present (must be correct) and want_absent (must be
 * -ENOENT; -1 for none). */
struct nobody_job {
    const char *prefix;
    int first, last;
    const char *present_prefix;
    int want_present;
    const char *absent_prefix;
    int want_absent;
};

static int nobody_run(void *arg)
{
    const struct nobody_job *j = arg;
    kvt_model m = model();
    kvt_client *c;
    char name[64];

    CHILD_CHECK(test_become_uid(NOBODY) == 0, 10);
    CHILD_CHECK(kvt_connect(d.socket, &m, &c) == 0, 11);
    for (int i = j->first; i < j->last; i++) {
        ctx_name(name, sizeof(name), j->prefix, i);
        int rc = store_ctx(c, name, NOBODY_SEED + (uint64_t)i * 2);
        if (rc) {
            fprintf(stderr, "child: store %s: %s\n", name, kvt_strerror(rc));
            return 12;
        }
    }
    ctx_name(name, sizeof(name), j->present_prefix, j->want_present);
    CHILD_CHECK(fetch_ctx(c, name, NOBODY_SEED + (uint64_t)j->want_present * 2) == 0, 13);
    if (j->want_absent >= 0) {
        ctx_name(name, sizeof(name), j->absent_prefix, j->want_absent);
        CHILD_CHECK(fetch_ctx(c, name, 0) == -ENOENT, 14);
    }
    kvt_disconnect(c);
    return 0;
}

static void config_set(const char *key, const char *value)
{
    char req[256], reply[4096];
    cJSON *r;

    snprintf(req, sizeof(req),
             "{\"cmd\":\"config\",\"op\":\"set\",\"key\":\"%s\",\"value\":\"%s\"}", key, value);
    CHECK_OK(admin_request(&d, req, reply, sizeof(reply)));
    r = cJSON_Parse(reply);
    if (!r || !cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(r, "ok")))
        fail_msg("%s:%d: %s -> %s", __FILE__, __LINE__, req, reply);
    cJSON_Delete(r);
}

static void check_root_contexts(kvt_client *c)
{
    char name[64];

    for (int i = 0; i < ROOT_CONTEXTS; i++) {
        ctx_name(name, sizeof(name), "root", i);
        CHECK_OK(fetch_ctx(c, name, ROOT_SEED + (uint64_t)i * 2));
    }
}

static void quota_evicts_only_the_domain_over_it(void **state)
{
    (void)state;
    kvt_model m = model();
    kvt_client *c;
    char name[64];

    daemon_start(&d, "--hot-quota", "32M", "--hot-bytes", "256M", NULL);
    CHECK_OK(kvt_connect(d.socket, &m, &c));
    for (int i = 0; i < ROOT_CONTEXTS; i++) {
        ctx_name(name, sizeof(name), "root", i);
        CHECK_OK(store_ctx(c, name, ROOT_SEED + (uint64_t)i * 2));
    }

    /* Nobody stores 4x its quota: its newest stays, its oldest went. */
    struct nobody_job flood = { "nb", 0, NOBODY_CONTEXTS, "nb", NOBODY_CONTEXTS - 1, "nb", 0 };
    assert_int_equal(test_in_child(nobody_run, &flood), 0);
    check_root_contexts(c);

    /* Quota lifted live: 40 more contexts (~85 MiB, total still under the
     * 256 MiB budget) all stay, the first of them included. */
    config_set("hot-quota", "0");
    struct nobody_job unlimited = { "more", 0, 40, "more", 0, "nb", 0 };
    assert_int_equal(test_in_child(nobody_run, &unlimited), 0);
    check_root_contexts(c);

    /* A small quota holds at once, for both domains: 4 MiB is less than two
     * contexts (~2.06 MiB each). Each keeps its most recently used context
     * and loses its oldest: root-3 stays and root-0 goes (check_root_contexts
     * touched them in order); nobody keeps more-0 (the job above fetched
     * it last) and loses more-1. */
    config_set("hot-quota", "4M");
    CHECK_OK(fetch_ctx(c, "root-3", ROOT_SEED + 3 * 2));
    CHECK_RC(fetch_ctx(c, "root-0", 0), -ENOENT);
    struct nobody_job small = { "none", 0, 0, "more", 0, "more", 1 };
    assert_int_equal(test_in_child(nobody_run, &small), 0);
    kvt_disconnect(c);
}

/* hot_bytes of a domain in the stats' domains list (0 if not listed). */
static double domain_hot_bytes(uint32_t domain)
{
    char reply[65536];
    double bytes = 0;
    const cJSON *dom;

    CHECK_OK(admin_request(&d, "{\"cmd\":\"stats\"}", reply, sizeof(reply)));
    cJSON *r = cJSON_Parse(reply);
    cJSON_ArrayForEach(dom, cJSON_GetObjectItemCaseSensitive(r, "domains")) {
        if (cJSON_GetObjectItemCaseSensitive(dom, "domain")->valuedouble == domain)
            bytes = cJSON_GetObjectItemCaseSensitive(dom, "hot_bytes")->valuedouble;
    }
    cJSON_Delete(r);
    return bytes;
}

/* With a cold tier, a lowered hot quota is applied by the demoter thread
 * (its evictions write to disk): the domain's hot bytes, as stats reports
 * them, come down to the quota without any store, and what left RAM is
 * still fetchable, promoted from the cold tier. */
static void lowered_quota_demotes_with_a_cold_tier(void **state)
{
    char dir[64], path[128], name[64];
    kvt_model m = model();
    kvt_client *c;

    (void)state;
    snprintf(dir, sizeof(dir), "/var/tmp/kvtier-quota-cold-XXXXXX");
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/cold.kvt", dir);
    daemon_start(&d, "--hot-bytes", "256M", "--cold-bytes", "64M", "--cold-region-bytes", "4M",
                 "--cold-path", path, NULL);
    CHECK_OK(kvt_connect(d.socket, &m, &c));
    for (int i = 0; i < 8; i++) {             /* ~17 MiB */
        ctx_name(name, sizeof(name), "root", i);
        CHECK_OK(store_ctx(c, name, ROOT_SEED + (uint64_t)i * 2));
    }
    assert_true(domain_hot_bytes(0) > 16.0 * 1024 * 1024);
    config_set("hot-quota", "4M");
    for (int i = 0; i < 500 && domain_hot_bytes(0) > 4.0 * 1024 * 1024; i++)
        usleep(10000);
    assert_true(domain_hot_bytes(0) <= 4.0 * 1024 * 1024);
    CHECK_OK(fetch_ctx(c, "root-0", ROOT_SEED));   /* demoted, promoted back */
    kvt_disconnect(c);
    daemon_stop(&d);
    daemon_cleanup(&d);
    snprintf(path, sizeof(path), "rm -rf '%s'", dir);
    assert_int_equal(system(path), 0);
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
    if (geteuid() != 0) {
        fprintf(stderr, "test_quotas: needs root to run a client as uid %d\n", NOBODY);
        return 1;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(quota_evicts_only_the_domain_over_it, stop_daemon),
        cmocka_unit_test(lowered_quota_demotes_with_a_cold_tier),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
