/* test_drop_race.c - proves that a dropped context never comes back, however
 * kvt_drop races the tiers: (1) contexts are stored and dropped one after
 * another while an admin thread flushes in a loop, another client keeps
 * many chunks dirty and the hot tier demotes under pressure; (2) contexts
 * held only by the cold tier are dropped while another client's fetch is
 * promoting them. After every drop a fetch is -ENOENT; at the end, after a
 * flush and again after kill -9 and a restart, no dropped context can be
 * fetched. Before the fix a chunk pinned by a flush or a demotion was
 * written after the drop's tombstone and won over it, and a promotion that
 * had read the record before the drop put it back into RAM. */
#include "tests/helpers.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define HEADS 8
#define DIM 128
#define CHUNK 16
#define ROW (HEADS * DIM * 2)          /* f16 bytes per token */
#define VICTIM_TOKENS 32               /* small: runs on the daemon's loop */
#define NOISE_TOKENS 256
#define NOISE_CONTEXTS 48
#define MAX_TRIES 1000
#define MAX_SECONDS 20
#define PROMOTE_TOKENS 128             /* 512 KiB: fetched on a worker */
#define PROMOTE_VICTIMS 300

static struct test_daemon d;
static char cold_dir[64], cold_path[128];
static const char *const flags[] = {
    "--hot-bytes", "8M", "--cold-bytes", "256M", "--cold-region-bytes", "4M",
    "--chunk-tokens", "16", "--cold-path", cold_path, NULL,
};

static void start(void)
{
    snprintf(cold_dir, sizeof(cold_dir), "/var/tmp/kvtier-drop-XXXXXX");
    assert_non_null(mkdtemp(cold_dir));
    snprintf(cold_path, sizeof(cold_path), "%s/cold.kvt", cold_dir);
    daemon_start(&d, flags[0], flags[1], flags[2], flags[3], flags[4], flags[5],
                 flags[6], flags[7], flags[8], flags[9], NULL);
}

static void restart(void)
{
    daemon_restart(&d, flags[0], flags[1], flags[2], flags[3], flags[4], flags[5],
                   flags[6], flags[7], flags[8], flags[9], NULL);
}

static void cleanup(void)
{
    char cmd[128];

    daemon_cleanup(&d);
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", cold_dir);
    if (system(cmd) != 0)
        fprintf(stderr, "cannot remove %s\n", cold_dir);
}

static kvt_client *client(void)
{
    kvt_model m = test_model("drop-model", 1, HEADS, DIM, KVT_F16, CHUNK);
    kvt_client *c = NULL;

    CHECK_OK(kvt_connect(d.socket, &m, &c));
    return c;
}

static double now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static atomic_bool stop;

/* Keeps many chunks dirty (so flushes pin long batches) and the hot tier
 * over its watermark (so the demoter writes back too). */
static void *noise_main(void *arg)
{
    uint8_t *k = malloc((size_t)NOISE_TOKENS * ROW), *v = malloc((size_t)NOISE_TOKENS * ROW);
    kvt_client *c = arg;

    test_fill(k, KVT_F16, 1, 0, 0, NOISE_TOKENS, HEADS, DIM);
    test_fill(v, KVT_F16, 2, 0, 0, NOISE_TOKENS, HEADS, DIM);
    for (unsigned i = 0; !atomic_load(&stop); i++) {
        char name[32];
        snprintf(name, sizeof(name), "noise-%u", i % NOISE_CONTEXTS);
        if (kvt_store(c, name, 0, 0, NOISE_TOKENS, k, v) != 0)
            break;
    }
    free(k);
    free(v);
    return NULL;
}

static void *flush_main(void *arg)
{
    char reply[512];

    (void)arg;
    while (!atomic_load(&stop))
        (void)admin_request(&d, "{\"cmd\":\"flush\"}", reply, sizeof(reply));
    return NULL;
}

/* How many of the first n dropped contexts (prefix) can be fetched. */
static int count_fetchable(kvt_client *c, const char *prefix, int n, uint32_t tokens)
{
    uint8_t *k = malloc((size_t)tokens * ROW), *v = malloc((size_t)tokens * ROW);
    int found = 0;

    for (int i = 0; i < n; i++) {
        char name[32];
        snprintf(name, sizeof(name), "%s-%d", prefix, i);
        int rc = kvt_fetch(c, name, 0, 0, tokens, k, v);
        if (rc != -ENOENT) {
            if (found++ == 0)
                fprintf(stderr, "dropped %s: fetch = %d (%s)\n", name, rc, kvt_strerror(rc));
        }
    }
    free(k);
    free(v);
    return found;
}

static void flush_now(void)
{
    char reply[512];

    CHECK_OK(admin_request(&d, "{\"cmd\":\"flush\"}", reply, sizeof(reply)));
    if (!strstr(reply, "\"ok\":true"))
        fail_msg("flush: %s", reply);
}

/* (1) store -> drop against a flush loop, dirty noise and demotion. */
static void drop_races_flush_and_demotion(void **state)
{
    uint8_t k[VICTIM_TOKENS * ROW], v[VICTIM_TOKENS * ROW];
    pthread_t noise, flusher;
    int tries = 0, seen_after_drop = 0;
    double deadline;

    (void)state;
    start();
    kvt_client *c = client(), *nc = client();
    atomic_store(&stop, false);
    assert_int_equal(pthread_create(&noise, NULL, noise_main, nc), 0);
    assert_int_equal(pthread_create(&flusher, NULL, flush_main, NULL), 0);
    deadline = now_s() + MAX_SECONDS;
    for (; tries < MAX_TRIES && now_s() < deadline; tries++) {
        char name[32];
        snprintf(name, sizeof(name), "victim-%d", tries);
        test_fill(k, KVT_F16, 3, 0, 0, VICTIM_TOKENS, HEADS, DIM);
        test_fill(v, KVT_F16, 4, 0, 0, VICTIM_TOKENS, HEADS, DIM);
        CHECK_OK(kvt_store(c, name, 0, 0, VICTIM_TOKENS, k, v));
        CHECK_OK(kvt_drop(c, name));
        if (kvt_fetch(c, name, 0, 0, VICTIM_TOKENS, k, v) != -ENOENT)
            seen_after_drop++;
    }
    atomic_store(&stop, true);
    pthread_join(noise, NULL);
    pthread_join(flusher, NULL);
    kvt_disconnect(nc);

    /* Whatever a late write-back put on disk is in the index now. */
    flush_now();
    int after_flush = count_fetchable(c, "victim", tries, VICTIM_TOKENS);
    daemon_kill(&d);
    restart();
    int after_restart = count_fetchable(c, "victim", tries, VICTIM_TOKENS);
    fprintf(stderr, "%d tries: fetchable right after the drop %d, after a flush %d, "
            "after kill -9 and restart %d\n", tries, seen_after_drop, after_flush, after_restart);
    assert_int_equal(seen_after_drop, 0);
    assert_int_equal(after_flush, 0);
    assert_int_equal(after_restart, 0);
    kvt_disconnect(c);
    cleanup();
}

static atomic_int promote_target = -1;
static atomic_int promote_started = -1;

/* Fetches the current target over and over (each first fetch promotes it
 * from the cold tier on the daemon's workers). */
static void *fetcher_main(void *arg)
{
    uint8_t *k = malloc((size_t)PROMOTE_TOKENS * ROW), *v = malloc((size_t)PROMOTE_TOKENS * ROW);
    kvt_client *c = arg;

    while (!atomic_load(&stop)) {
        int i = atomic_load(&promote_target);
        char name[32];
        if (i < 0)
            continue;
        snprintf(name, sizeof(name), "cold-%d", i);
        atomic_store(&promote_started, i);
        (void)kvt_fetch(c, name, 0, 0, PROMOTE_TOKENS, k, v);
    }
    free(k);
    free(v);
    return NULL;
}

/* (2) drop of a context only the cold tier holds, while it is promoted. */
static void drop_races_promotion(void **state)
{
    uint8_t *k = malloc((size_t)PROMOTE_TOKENS * ROW), *v = malloc((size_t)PROMOTE_TOKENS * ROW);
    char name[32], reply[512];
    int seen_after_drop = 0, n = PROMOTE_VICTIMS;
    pthread_t fetcher;

    (void)state;
    start();
    kvt_client *c = client(), *fc = client();
    test_fill(k, KVT_F16, 5, 0, 0, PROMOTE_TOKENS, HEADS, DIM);
    test_fill(v, KVT_F16, 6, 0, 0, PROMOTE_TOKENS, HEADS, DIM);
    for (int i = 0; i < n; i++) {
        snprintf(name, sizeof(name), "cold-%d", i);
        CHECK_OK(kvt_store(c, name, 0, 0, PROMOTE_TOKENS, k, v));
    }
    CHECK_OK(kvt_sync(c));
    CHECK_OK(admin_request(&d, "{\"cmd\":\"evict\",\"tier\":\"hot\"}", reply, sizeof(reply)));
    assert_non_null(strstr(reply, "\"ok\":true"));

    atomic_store(&stop, false);
    assert_int_equal(pthread_create(&fetcher, NULL, fetcher_main, fc), 0);
    for (int i = 0; i < n; i++) {
        snprintf(name, sizeof(name), "cold-%d", i);
        atomic_store(&promote_target, i);
        /* Drop once the fetcher has sent its fetch of this context. */
        while (atomic_load(&promote_started) != i)
            ;
        CHECK_OK(kvt_drop(c, name));
        if (kvt_fetch(c, name, 0, 0, PROMOTE_TOKENS, k, v) != -ENOENT)
            seen_after_drop++;
    }
    atomic_store(&stop, true);
    pthread_join(fetcher, NULL);
    kvt_disconnect(fc);

    int after = count_fetchable(c, "cold", n, PROMOTE_TOKENS);
    flush_now();
    daemon_kill(&d);
    restart();
    int after_restart = count_fetchable(c, "cold", n, PROMOTE_TOKENS);
    fprintf(stderr, "%d drops during promotion: fetchable right after the drop %d, "
            "at the end %d, after kill -9 and restart %d\n", n, seen_after_drop, after,
            after_restart);
    assert_int_equal(seen_after_drop, 0);
    assert_int_equal(after, 0);
    assert_int_equal(after_restart, 0);
    free(k);
    free(v);
    kvt_disconnect(c);
    cleanup();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(drop_races_flush_and_demotion),
        cmocka_unit_test(drop_races_promotion),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
