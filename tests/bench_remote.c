/* bench_remote.c - `make bench`'s remote tier rows: host B fetching a
 * prefix host A wrote through to a pool of 3 local memcached servers,
 * against B's local fetch of the same data (from RAM) and against the
 * loopback's own TCP rate, all measured in this run. Alone with
 * KVTIER_BENCH_ONLY=remote. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "tests/bench.h"
#include "tests/helpers.h"
#include "tests/memcached_util.h"

/* Llama-3-8B's heads and dim over 8 layers and 4096 tokens: 128 MiB of f16
 * K and V for the client, 128 records of ~600 KiB in the pool. */
#define R_LAYERS 8
#define R_HEADS 8
#define R_DIM 128
#define R_TOKENS 4096
#define R_CHUNK 256
#define LOOP_BYTES ((size_t)512 << 20)

struct sink {
    int fd;
    size_t want;
};

static void *drain(void *arg)
{
    struct sink *s = arg;
    static char buf[1 << 20];
    size_t got = 0;

    while (got < s->want) {
        ssize_t r = recv(s->fd, buf, sizeof(buf), 0);
        if (r <= 0)
            break;
        got += (size_t)r;
    }
    return NULL;
}

/* One TCP stream over 127.0.0.1, sender and receiver on two threads. */
static double loopback_gbs(void)
{
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t len = sizeof(a);
    int lfd = socket(AF_INET, SOCK_STREAM, 0), cfd = socket(AF_INET, SOCK_STREAM, 0);
    char *buf = malloc(1 << 20);
    pthread_t th;

    if (lfd < 0 || cfd < 0 || !buf || bind(lfd, (struct sockaddr *)&a, sizeof(a)) ||
        listen(lfd, 1) || getsockname(lfd, (struct sockaddr *)&a, &len) ||
        connect(cfd, (struct sockaddr *)&a, sizeof(a)))
        die("loopback socket", -errno);
    struct sink s = { .fd = accept(lfd, NULL, NULL), .want = LOOP_BYTES };
    memset(buf, 0x33, 1 << 20);
    pthread_create(&th, NULL, drain, &s);
    double t0 = now_s();
    for (size_t sent = 0; sent < LOOP_BYTES;) {
        ssize_t w = send(cfd, buf, 1 << 20, 0);
        if (w <= 0)
            die("loopback send", -errno);
        sent += (size_t)w;
    }
    pthread_join(th, NULL);
    double t = now_s() - t0;
    close(cfd);
    close(s.fd);
    close(lfd);
    free(buf);
    return (double)LOOP_BYTES / t / 1e9;
}

static double stat_of(struct test_daemon *d, const char *section, const char *field)
{
    static char reply[1 << 16];
    if (admin_request(d, "{\"cmd\":\"stats\"}", reply, sizeof(reply)))
        die("stats", -EIO);
    cJSON *r = cJSON_Parse(reply);
    double v = cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(
        cJSON_GetObjectItemCaseSensitive(r, section), field));
    cJSON_Delete(r);
    return v;
}

static void evict_hot(struct test_daemon *d)
{
    char reply[4096];
    if (admin_request(d, "{\"cmd\":\"evict\",\"tier\":\"hot\"}", reply, sizeof(reply)) ||
        !strstr(reply, "\"ok\":true"))
        die("evict --tier hot", -EIO);
}

void bench_remote(const char *build_dir)
{
    struct mc_pool p;
    struct test_daemon a, b;
    char domain[64];
    int32_t *tokens = malloc(R_TOKENS * sizeof(*tokens));
    size_t row = (size_t)R_HEADS * R_DIM * 2, bytes = (size_t)R_TOKENS * row;
    kvt_model m = { "bench-remote", R_LAYERS, R_HEADS, R_DIM, KVT_F16, R_CHUNK };
    kvt_span spans[R_LAYERS];
    kvt_client *c;
    double pool_t[REPS], local_t[REPS], loop[REPS];
    int rc;

    setenv("KVTIER_BUILD", build_dir, 0);
    rc = mc_start(&p, 3, 512, "2m");
    if (rc) {
        printf("%-44s skipped: %s\n", "remote tier", rc == -ENOENT ?
               "memcached not installed" : "memcached did not start");
        return;
    }
    for (int i = 0; i < R_TOKENS; i++)
        tokens[i] = 77 + i * 3;
    snprintf(domain, sizeof(domain), "bench:%u", (unsigned)getuid());
    /* Both hosts seal (the deployment the docs recommend): its cost is in
     * the pool rows. */
    char key[] = "/var/tmp/kvtier-bench-remote.key";
    FILE *f = fopen(key, "w");
    if (!f)
        die("key file", -errno);
    fprintf(f, "%064d\n", 7);
    fclose(f);
    daemon_start(&a, "--remote", p.list, "--remote-domain", domain, "--remote-key-file", key,
                 "--remote-replicas", "0", "--hot-bytes", "1G", "--max-client-shm", "1G",
                 "--log-level", "warning", NULL);
    daemon_start(&b, "--remote", p.list, "--remote-domain", domain, "--remote-key-file", key,
                 "--remote-replicas", "0", "--hot-bytes", "1G", "--max-client-shm", "1G",
                 "--log-level", "warning", NULL);

    rc = kvt_connect(a.socket, &m, &c);
    if (rc)
        die("connect host A", rc);
    for (int l = 0; l < R_LAYERS; l++) {
        spans[l] = (kvt_span){ (uint32_t)l, 0, R_TOKENS, kvt_alloc(c, bytes), kvt_alloc(c, bytes) };
        if (!spans[l].k || !spans[l].v)
            die("kvt_alloc", -ENOMEM);
        test_fill(spans[l].k, KVT_F16, 3, (uint32_t)l, 0, R_TOKENS, R_HEADS, R_DIM);
        test_fill(spans[l].v, KVT_F16, 4, (uint32_t)l, 0, R_TOKENS, R_HEADS, R_DIM);
    }
    double t0 = now_s();
    if ((rc = kvt_store_tokens(c, tokens, R_TOKENS, spans, R_LAYERS)) || (rc = kvt_sync(c)))
        die("host A store + sync", rc);
    double write_t = now_s() - t0;
    kvt_disconnect(c);
    double records = stat_of(&a, "remote", "puts");
    double rec_bytes = stat_of(&a, "remote", "bytes_written");
    if (stat_of(&a, "remote", "put_errors") + stat_of(&a, "remote", "too_large") > 0)
        die("host A's writes to the pool failed", -EIO);

    rc = kvt_connect(b.socket, &m, &c);
    if (rc)
        die("connect host B", rc);
    for (int l = 0; l < R_LAYERS; l++) {
        spans[l].k = kvt_alloc(c, bytes);
        spans[l].v = kvt_alloc(c, bytes);
        if (!spans[l].k || !spans[l].v)
            die("kvt_alloc", -ENOMEM);
    }
    for (int r = 0; r < REPS; r++) {
        uint32_t n = 0;
        evict_hot(&b);                  /* empty RAM: everything from the pool */
        t0 = now_s();
        if ((rc = kvt_match_tokens(c, tokens, R_TOKENS, &n)) || n != R_TOKENS ||
            (rc = kvt_fetch_tokens(c, tokens, R_TOKENS, spans, R_LAYERS)))
            die("host B match + fetch from the pool", rc ? rc : -ENOENT);
        pool_t[r] = now_s() - t0;
        t0 = now_s();
        if ((rc = kvt_fetch_tokens(c, tokens, R_TOKENS, spans, R_LAYERS)))
            die("host B local fetch", rc);
        local_t[r] = now_s() - t0;
        loop[r] = loopback_gbs();
    }
    size_t bad = 0;
    for (int l = 0; l < R_LAYERS; l++)
        bad += !test_matches(spans[l].k, KVT_F16, 3, (uint32_t)l, 0, R_TOKENS, R_HEADS, R_DIM);
    if (bad)
        die("host B fetched wrong values", -EIO);
    kvt_disconnect(c);
    qsort(pool_t, REPS, sizeof(double), cmp_double);
    qsort(local_t, REPS, sizeof(double), cmp_double);
    qsort(loop, REPS, sizeof(double), cmp_double);

    double client = (double)bytes * 2 * R_LAYERS;
    double pool_gbs = client / pool_t[REPS / 2] / 1e9;
    double pool_rec_gbs = rec_bytes / pool_t[REPS / 2] / 1e9;
    double local_gbs = client / local_t[REPS / 2] / 1e9;
    double loop_gbs = loop[REPS / 2];
    printf("remote tier: %.0f sealed records of %.0f KiB, 3 memcached servers on loopback\n",
           records, rec_bytes / records / 1024);
    printf("%-44s %8.2f GB/s\n", "host A store + sync (write-through)", client / write_t / 1e9);
    printf("%-44s %8.2f GB/s  (%.2f GB/s of records)\n", "host B match + fetch from the pool",
           pool_gbs, pool_rec_gbs);
    printf("%-44s %8.2f GB/s  pool is %.2fx of it\n", "host B fetch of the same, from RAM",
           local_gbs, pool_gbs / local_gbs);
    printf("%-44s %8.2f GB/s  pool records at %.2fx of it\n", "loopback TCP, one stream",
           loop_gbs, pool_rec_gbs / loop_gbs);
    json_num("remote_write_gbs", client / write_t / 1e9);
    json_num("remote_fetch_gbs", pool_gbs);
    json_num("remote_fetch_record_gbs", pool_rec_gbs);
    json_num("remote_local_fetch_gbs", local_gbs);
    json_num("remote_loopback_tcp_gbs", loop_gbs);
    daemon_stop(&b);
    daemon_cleanup(&b);
    daemon_stop(&a);
    daemon_cleanup(&a);
    mc_stop(&p);
    unlink(key);
    free(tokens);
}
