/* bench_loop.c - `make bench`'s check that the event loop never waits on
 * the disk: shape 3 decode steps alone, then again while another client
 * fetches cold data in a loop (one token of 32 layers, a decode step of a
 * demoted context: under the inline bound, 32 chunks to read from SSD).
 * The decode p99 beside the cold reader must stay within 1.5x of its p99
 * alone. The reader cycles over more contexts than the hot tier holds, so
 * each of its fetches misses RAM. Run at promote-priority idle (the
 * default, held to the target) and normal (for comparison). */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "tests/bench.h"

#define DECODE_STEPS 4000
/* 32 chunks of 256 tokens each hold ~17 MiB in RAM once promoted: 128 of
 * them are twice the 1 GiB hot tier, so LRU has evicted each context
 * before the reader comes back to it. */
#define COLD_CONTEXTS 128

struct cold_reader {
    kvt_client *c;
    kvt_span spans[L2_LAYERS];
    atomic_bool stop;
    atomic_int fetches;
    double busy_s;                   /* summed fetch time */
};

static kvt_client *connect_model(void)
{
    kvt_model m = { "llama-3-8b", L2_LAYERS, L2_HEADS, L2_DIM, KVT_F16, 0 };
    kvt_client *c;
    int rc = kvt_connect(bench_socket(), &m, &c);

    if (rc)
        die("connect", rc);
    return c;
}

static void reader_setup(struct cold_reader *r)
{
    size_t tok_bytes = (size_t)L2_HEADS * L2_DIM * 2;

    r->c = connect_model();
    for (uint32_t l = 0; l < L2_LAYERS; l++) {
        void *k = kvt_alloc(r->c, tok_bytes), *v = kvt_alloc(r->c, tok_bytes);
        if (!k || !v)
            die("alloc", -ENOMEM);
        fill(k, tok_bytes, l + 3);
        fill(v, tok_bytes, l + 5);
        r->spans[l] = (kvt_span){ l, 0, 1, k, v };
    }
}

static void *reader_main(void *arg)
{
    struct cold_reader *r = arg;

    for (int i = 0; !atomic_load(&r->stop); i = (i + 1) % COLD_CONTEXTS) {
        char ctx[16];
        snprintf(ctx, sizeof(ctx), "r%d", i);
        double t0 = now_s();
        int rc = kvt_fetch_batch(r->c, ctx, r->spans, L2_LAYERS);
        r->busy_s += now_s() - t0;
        if (rc)
            die("cold fetch", rc);
        atomic_fetch_add(&r->fetches, 1);
    }
    return NULL;
}

/* Decode p99s (store, fetch) of a fresh context: the same steps each time. */
static void decode_p99(const char *ctx, double *store_p99, double *fetch_p99)
{
    kvt_client *c = connect_model();
    double *lat_s = malloc(DECODE_STEPS * sizeof(double));
    double *lat_f = malloc(DECODE_STEPS * sizeof(double));

    if (!lat_s || !lat_f)
        die("malloc", -ENOMEM);
    decode_steps(c, 1, ctx, DECODE_STEPS, lat_s, lat_f);
    *store_p99 = lat_s[DECODE_STEPS * 99 / 100];
    *fetch_p99 = lat_f[DECODE_STEPS * 99 / 100];
    free(lat_s);
    free(lat_f);
    kvt_disconnect(c);
}

/* One run at promote-priority prio: idle (the default), or normal. */
static void loop_disk_at(const char *prio)
{
    struct cold_reader r = { 0 };
    char why[256], reply[4096], key[96];
    double alone_s, alone_f, with_s, with_f;
    pthread_t thread;
    const bool normal = !strcmp(prio, "normal");

    if (try_start_daemon("1G", "4G", NULL, "--promote-priority", prio, why, sizeof(why)))
        die(why, -ECHILD);
    reader_setup(&r);
    for (int i = 0; i < COLD_CONTEXTS; i++) {
        char ctx[16];
        snprintf(ctx, sizeof(ctx), "r%d", i);
        int rc = kvt_store_batch(r.c, ctx, r.spans, L2_LAYERS);
        if (rc)
            die("store", rc);
    }
    int rc = kvt_sync(r.c);
    if (rc)
        die("sync", rc);
    admin_query("{\"cmd\":\"evict\",\"tier\":\"hot\"}", reply, sizeof(reply));

    decode_p99("alone", &alone_s, &alone_f);
    if (pthread_create(&thread, NULL, reader_main, &r))
        die("pthread_create", -EAGAIN);
    while (atomic_load(&r.fetches) < 8)         /* under way; no spinning on 2 cores */
        usleep(1000);
    int before = atomic_load(&r.fetches);
    decode_p99("beside", &with_s, &with_f);
    int during = atomic_load(&r.fetches) - before;
    atomic_store(&r.stop, true);
    pthread_join(thread, NULL);
    admin_query("{\"cmd\":\"stats\"}", reply, sizeof(reply));
    kvt_disconnect(r.c);
    stop_daemon();

    cJSON *stats = cJSON_Parse(reply);
    double handoffs = cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(
        cJSON_GetObjectItemCaseSensitive(stats, "tiers"), "loop_disk_handoffs"));
    cJSON_Delete(stats);
    int n = atomic_load(&r.fetches);
    printf("promote-priority %s%s:\n", prio, normal ? "" : " (default)");
    printf("%-44s %8.1f us   fetch p99 %6.1f us\n", "shape3 decode store p99, alone", alone_s,
           alone_f);
    printf("%-44s %8.1f us   fetch p99 %6.1f us  (%d cold fetches meanwhile, %.0f us each)\n",
           "shape3 decode store p99, beside cold fetches", with_s, with_f, during,
           n ? r.busy_s / n * 1e6 : 0);
    printf("%-44s %8.2fx store  %5.2fx fetch  (%s%.0f requests handed from the loop to a "
           "worker)\n", "decode p99 beside cold fetches / alone", with_s / alone_s, with_f / alone_f,
           normal ? "" : "target <= 1.5x; ", handoffs);
    const char *sfx = normal ? "_normal" : "";   /* the target is checked at idle */
#define LOOP_NUM(name, v) (snprintf(key, sizeof(key), "loop_%s%s", name, sfx), json_num(key, v))
    LOOP_NUM("decode_store_alone_p99_us", alone_s);
    LOOP_NUM("decode_fetch_alone_p99_us", alone_f);
    LOOP_NUM("decode_store_beside_cold_p99_us", with_s);
    LOOP_NUM("decode_fetch_beside_cold_p99_us", with_f);
    LOOP_NUM("decode_store_p99_ratio", with_s / alone_s);
    LOOP_NUM("decode_fetch_p99_ratio", with_f / alone_f);
    LOOP_NUM("cold_fetches", during);
    LOOP_NUM("cold_fetch_us", n ? r.busy_s / n * 1e6 : 0);
#undef LOOP_NUM
}

/* promote-priority idle (the default) against normal: what SCHED_IDLE
 * readers buy other clients, and what they cost the cold reader. */
void bench_loop_disk(void)
{
    loop_disk_at("idle");
    loop_disk_at("normal");
}
