/* bench_listing.c - `make bench`'s cost of the admin listings over a large
 * cold tier. For each size, n named contexts of one model (32 layers, 3
 * chunks of 16 tokens each, so 96 chunk records per context) are stored,
 * flushed, and the daemon is restarted on that cold file (its start,
 * names restored included, is timed). Then `namespaces` and `contexts`
 * are asked REPS times each while a probe thread sends kvt_length calls
 * back to back: the listing's round trip, and the probe's longest wait
 * beside it (against its longest wait alone), say whether the event loop
 * went on serving meanwhile. */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tests/bench.h"

#define LIST_LAYERS 32
#define LIST_HEADS 1
#define LIST_DIM 16
#define LIST_CHUNK 16
#define LIST_TOKENS 48                /* 3 chunks */
#define REPLY_BYTES (64u << 20)

struct probe {
    kvt_client *c;
    atomic_bool stop;
    double worst_s;
};

static kvt_client *connect_model(void)
{
    kvt_model m = { "listing-model", LIST_LAYERS, LIST_HEADS, LIST_DIM, KVT_F16, LIST_CHUNK };
    kvt_client *c;
    int rc = kvt_connect(bench_socket(), &m, &c);

    if (rc)
        die("connect", rc);
    return c;
}

static void *probe_main(void *arg)
{
    struct probe *p = arg;
    uint32_t n;

    while (!atomic_load(&p->stop)) {
        double t0 = now_s();
        int rc = kvt_length(p->c, "ctx-0", &n);
        double dt = now_s() - t0;
        if (rc)
            die("probe length", rc);
        if (dt > p->worst_s)
            p->worst_s = dt;
    }
    return NULL;
}

/* Median round trip of REPS requests of line; *worst_s the probe's
 * longest wait meanwhile. */
static double listing_time(const char *line, char *reply, double *worst_s)
{
    struct probe p = { .c = connect_model() };
    double t[REPS];
    pthread_t th;

    if (pthread_create(&th, NULL, probe_main, &p))
        die("pthread_create", -EAGAIN);
    for (int i = 0; i < REPS; i++) {
        double t0 = now_s();
        if (line)
            admin_query(line, reply, REPLY_BYTES);
        else
            usleep(300000);            /* the probe alone: its own worst wait */
        t[i] = now_s() - t0;
    }
    atomic_store(&p.stop, true);
    pthread_join(th, NULL);
    kvt_disconnect(p.c);
    qsort(t, REPS, sizeof(t[0]), cmp_double);
    *worst_s = p.worst_s;
    return t[REPS / 2];
}

static void listing_at(int n_ctx)
{
    static uint16_t k[LIST_LAYERS][LIST_TOKENS * LIST_HEADS * LIST_DIM];
    static uint16_t v[LIST_LAYERS][LIST_TOKENS * LIST_HEADS * LIST_DIM];
    char cold_path[200], name[64], key[64];
    kvt_span spans[LIST_LAYERS];
    char *reply = malloc(REPLY_BYTES);
    double worst;

    if (!reply)
        die("malloc", -ENOMEM);
    for (int l = 0; l < LIST_LAYERS; l++) {
        fill(k[l], sizeof(k[l]), (unsigned)l);
        fill(v[l], sizeof(v[l]), (unsigned)l + 100);
        spans[l] = (kvt_span){ (uint32_t)l, 0, LIST_TOKENS, k[l], v[l] };
    }
    start_daemon_with("4G", "4G", NULL);
    snprintf(cold_path, sizeof(cold_path), "%s/cold.kvt", bench_dir());
    kvt_client *c = connect_model();
    for (int i = 0; i < n_ctx; i++) {
        snprintf(name, sizeof(name), "ctx-%d", i);
        int rc = kvt_store_batch(c, name, spans, LIST_LAYERS);
        if (rc)
            die("store", rc);
    }
    kvt_disconnect(c);
    admin_query("{\"cmd\":\"flush\"}", reply, REPLY_BYTES);
    stop_daemon_keep_dir();
    double t0 = now_s();
    start_daemon_with("4G", "4G", cold_path);     /* names restored at start */
    double start_s = now_s() - t0;
    admin_query("{\"cmd\":\"stats\"}", reply, REPLY_BYTES);
    const char *names = strstr(reply, "\"names\":");
    const char *records = strstr(reply, "\"records\":");
    printf("  %d contexts, cold records %ld, names %ld: start (recovery + names) %.0f ms\n",
           n_ctx, records ? atol(records + 10) : -1L, names ? atol(names + 8) : -1L,
           start_s * 1e3);
    snprintf(key, sizeof(key), "listing_%d_start_ms", n_ctx);
    json_num(key, start_s * 1e3);

    (void)listing_time(NULL, reply, &worst);
    printf("  %-42s %8s     (probe waited up to %.2f ms)\n", "nothing (the probe alone)", "",
           worst * 1e3);
    snprintf(key, sizeof(key), "listing_%d_idle_probe_ms", n_ctx);
    json_num(key, worst * 1e3);
    double ns_s = listing_time("{\"cmd\":\"namespaces\"}", reply, &worst);
    printf("  %-42s %8.2f ms  (probe waited up to %.2f ms)\n", "namespaces", ns_s * 1e3,
           worst * 1e3);
    snprintf(key, sizeof(key), "listing_%d_namespaces_ms", n_ctx);
    json_num(key, ns_s * 1e3);
    snprintf(key, sizeof(key), "listing_%d_namespaces_probe_ms", n_ctx);
    json_num(key, worst * 1e3);
    double ctx_s = listing_time("{\"cmd\":\"contexts\"}", reply, &worst);
    printf("  %-42s %8.2f ms  (probe waited up to %.2f ms; reply %zu KiB)\n", "contexts",
           ctx_s * 1e3, worst * 1e3, strlen(reply) >> 10);
    snprintf(key, sizeof(key), "listing_%d_contexts_ms", n_ctx);
    json_num(key, ctx_s * 1e3);
    snprintf(key, sizeof(key), "listing_%d_contexts_probe_ms", n_ctx);
    json_num(key, worst * 1e3);
    stop_daemon();
    free(reply);
}

void bench_listing(void)
{
    const char *env = getenv("KVTIER_BENCH_LISTING_CONTEXTS");
    int sizes[] = { 1000, 10000 }, n = 2;

    printf("admin listings over a large cold tier (after a restart):\n");
    if (env) {
        sizes[0] = atoi(env);
        n = 1;
    }
    for (int i = 0; i < n; i++)
        listing_at(sizes[i]);
}
