/* bench.c - `make bench`: hot-path throughput and latency against a real
 * kvtierd, each figure a median over repeated runs in one process, beside
 * memcpy on buffers of the same size (the physical reference). Prints a table
 * and writes BUILD/bench.json. Not a test: it asserts nothing. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <liburing.h>
#include <lz4.h>
#include <math.h>

#include "client/kvtier.h"
#include "simd/simd.h"
#include "tests/bench.h"

static const char *build_dir = "build";
static char sock_path[100], dir_path[64];
static pid_t daemon_pid;
static FILE *json;
static int json_first = 1;

double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof(*v), cmp_double);
    return v[n / 2];
}

void die(const char *what, int rc)
{
    fprintf(stderr, "bench: %s: %s\n", what, kvt_strerror(rc));
    if (daemon_pid > 0)
        kill(daemon_pid, SIGKILL);
    exit(1);
}

static void start_daemon(void)
{
    start_daemon_with("6G", "0", NULL);
}

/* Start kvtierd, with one more flag when flag is not NULL. Returns 0, or
 * -ECHILD when the daemon exited during its start (a flag it refuses: its
 * log's first line, saying why, is copied into why); its dir is gone then. */
int try_start_daemon(const char *hot, const char *cold_bytes, const char *cold_path,
                            const char *flag, const char *value, char *why, size_t why_len)
{
    char bin[512], log[300], admin[300], cold[200], cmd[200];
    const char *workers = getenv("KVTIER_BENCH_WORKERS") ? getenv("KVTIER_BENCH_WORKERS") : "2";
    if (!cold_path) {
        snprintf(dir_path, sizeof(dir_path), "/var/tmp/kvtier-bench-XXXXXX");
        if (!mkdtemp(dir_path))
            die("mkdtemp", -errno);
    }
    snprintf(sock_path, sizeof(sock_path), "%s/kvtier.sock", dir_path);
    snprintf(log, sizeof(log), "%s/kvtierd.log", dir_path);
    snprintf(bin, sizeof(bin), "%s/kvtierd", build_dir);
    snprintf(admin, sizeof(admin), "%s/admin.sock", dir_path);
    snprintf(cold, sizeof(cold), "%s/cold.kvt", dir_path);
    const char *argv[] = {
        bin, "--socket", sock_path, "--admin-socket", admin,
        "--hot-bytes", hot, "--max-client-shm", "2G", "--log-level", "warning",
        "--cold-bytes", cold_bytes, "--cold-path", cold_path ? cold_path : cold,
        "--workers", workers, flag, value, NULL,
    };
    daemon_pid = fork();
    if (daemon_pid == 0) {
        int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        dup2(fd, 2);
        execv(bin, (char *const *)argv);
        _exit(127);
    }
    for (int i = 0; i < 500; i++) {
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        int fd = socket(AF_UNIX, SOCK_SEQPACKET, 0);
        snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", sock_path);
        int ok = connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0;
        close(fd);
        if (ok)
            return 0;
        if (waitpid(daemon_pid, NULL, WNOHANG) == daemon_pid) {
            FILE *f = fopen(log, "r");
            daemon_pid = 0;
            if (!f || !fgets(why, (int)why_len, f))
                snprintf(why, why_len, "(no log)");
            why[strcspn(why, "\n")] = '\0';
            if (f)
                fclose(f);
            snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir_path);
            if (system(cmd) != 0)
                fprintf(stderr, "bench: cannot remove %s\n", dir_path);
            return -ECHILD;
        }
        usleep(10000);
    }
    die("kvtierd did not start", -ETIMEDOUT);
}

void start_daemon_with(const char *hot, const char *cold_bytes, const char *cold_path)
{
    char why[256];
    if (try_start_daemon(hot, cold_bytes, cold_path, NULL, NULL, why, sizeof(why)))
        die(why, -ECHILD);
}

void stop_daemon_keep_dir(void)
{
    kill(daemon_pid, SIGTERM);
    waitpid(daemon_pid, NULL, 0);
    daemon_pid = 0;
}

void stop_daemon(void)
{
    char cmd[200];
    stop_daemon_keep_dir();
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir_path);
    if (system(cmd) != 0)
        fprintf(stderr, "bench: cannot remove %s\n", dir_path);
}

const char *bench_socket(void)
{
    return sock_path;
}

const char *bench_dir(void)
{
    return dir_path;
}

void json_num(const char *key, double v)
{
    fprintf(json, "%s\n  \"%s\": %.6g", json_first ? "" : ",", key, v);
    json_first = 0;
}

void row(const char *name, double gbs, double ref, double tok_s)
{
    printf("%-44s %8.2f GB/s  %5.2fx memcpy  %12.0f tokens/s\n", name, gbs, gbs / ref, tok_s);
}

static double memcpy_gbs(size_t bytes)
{
    char *a = malloc(bytes), *b = malloc(bytes);
    double t[REPS];
    memset(a, 1, bytes);
    memset(b, 2, bytes);
    for (int r = 0; r < REPS; r++) {
        double t0 = now_s();
        memcpy(b, a, bytes);
        t[r] = now_s() - t0;
        a[r] = b[bytes - 1 - (size_t)r];   /* keep the copy observable */
    }
    free(a);
    free(b);
    return (double)bytes / median(t, REPS) / 1e9;
}

void fill(void *buf, size_t bytes, unsigned seed)
{
    uint16_t *h = buf;
    for (size_t i = 0; i < bytes / 2; i++) {
        /* Random-ish f16 in [-2, 2): sign, exponent 13..15, random mantissa. */
        seed = seed * 1103515245u + 12345u;
        h[i] = (uint16_t)(((seed >> 16) & 0x83ff) | (0x3400 + ((seed >> 8) % 3) * 0x400));
    }
}

/* ---- shape 2: Llama-3-8B prefill ---------------------------------------------------- */

void prefill_setup(struct prefill *p, int shared, const char *model)
{
    kvt_model m = { model, L2_LAYERS, L2_HEADS, L2_DIM, KVT_F16, 0 };
    size_t span_bytes = (size_t)L2_TOKENS * L2_HEADS * L2_DIM * 2;
    int rc = kvt_connect(sock_path, &m, &p->c);
    if (rc)
        die("connect", rc);
    p->bytes = span_bytes * 2 * L2_LAYERS;
    for (uint32_t l = 0; l < L2_LAYERS; l++) {
        void *k = shared ? kvt_alloc(p->c, span_bytes) : malloc(span_bytes);
        void *v = shared ? kvt_alloc(p->c, span_bytes) : malloc(span_bytes);
        if (!k || !v)
            die("alloc", -ENOMEM);
        fill(k, span_bytes, l * 2 + 1);
        fill(v, span_bytes, l * 2 + 2);
        p->spans[l] = (kvt_span){ l, 0, L2_TOKENS, k, v };
    }
}

void prefill_teardown(struct prefill *p, int shared)
{
    for (uint32_t l = 0; l < L2_LAYERS; l++) {
        if (shared) {
            kvt_free(p->c, p->spans[l].k);
            kvt_free(p->c, p->spans[l].v);
        } else {
            free(p->spans[l].k);
            free(p->spans[l].v);
        }
    }
    kvt_disconnect(p->c);
}

/* Median seconds of REPS stores of the whole prefill, each into a context
 * that does not exist yet (dropped after it is timed): a real prefill
 * creates its chunks, which prefill_time's overwrites do not. */
static double prefill_new_time(struct prefill *p)
{
    double t[REPS];
    for (int r = 0; r < REPS; r++) {
        char ctx[32];
        snprintf(ctx, sizeof(ctx), "new-%d", r);
        double t0 = now_s();
        int rc = kvt_store_batch(p->c, ctx, p->spans, L2_LAYERS);
        t[r] = now_s() - t0;
        if (rc)
            die("store_batch", rc);
        if ((rc = kvt_drop(p->c, ctx)))
            die("drop", rc);
    }
    return median(t, REPS);
}

/* Median seconds of REPS store (or fetch) batches of the whole prefill. */
double prefill_time(struct prefill *p, int fetch, const char *ctx)
{
    double t[REPS];
    for (int r = 0; r < REPS; r++) {
        double t0 = now_s();
        int rc = fetch ? kvt_fetch_batch(p->c, ctx, p->spans, L2_LAYERS)
                       : kvt_store_batch(p->c, ctx, p->spans, L2_LAYERS);
        t[r] = now_s() - t0;
        if (rc)
            die(fetch ? "fetch_batch" : "store_batch", rc);
    }
    return median(t, REPS);
}

static void bench_prefill(double ref)
{
    for (int shared = 1; shared >= 0; shared--) {
        struct prefill p;
        char name[80], key[80];
        prefill_setup(&p, shared, "llama-3-8b");
        double ts = prefill_time(&p, 0, "prefill");
        double tf = prefill_time(&p, 1, "prefill");
        const char *path = shared ? "zero-copy" : "copy";
        double gs = (double)p.bytes / ts / 1e9, gf = (double)p.bytes / tf / 1e9;
        snprintf(name, sizeof(name), "shape2 store 2048x32 f16 (%s)", path);
        row(name, gs, ref, L2_TOKENS / ts);
        snprintf(name, sizeof(name), "shape2 fetch 2048x32 f16 (%s)", path);
        row(name, gf, ref, L2_TOKENS / tf);
        double tn = prefill_new_time(&p), gn = (double)p.bytes / tn / 1e9;
        snprintf(name, sizeof(name), "shape2 store, new context (%s)", path);
        row(name, gn, ref, L2_TOKENS / tn);
        snprintf(key, sizeof(key), "shape2_store_new_%s_gbs", shared ? "zerocopy" : "copy");
        json_num(key, gn);
        snprintf(key, sizeof(key), "shape2_store_%s_gbs", shared ? "zerocopy" : "copy");
        json_num(key, gs);
        snprintf(key, sizeof(key), "shape2_store_%s_ratio", shared ? "zerocopy" : "copy");
        json_num(key, gs / ref);
        snprintf(key, sizeof(key), "shape2_fetch_%s_gbs", shared ? "zerocopy" : "copy");
        json_num(key, gf);
        snprintf(key, sizeof(key), "shape2_fetch_%s_ratio", shared ? "zerocopy" : "copy");
        json_num(key, gf / ref);
        prefill_teardown(&p, shared);
    }
}

/* ---- 1 vs 2 client processes ----------------------------------------------------------- */

/* Aggregate GB/s of n_clients processes storing their prefill REPS times
 * each. The processes set up first (allocating and filling 256 MiB takes
 * longer than storing it), then start together when the go pipe closes;
 * the aggregate is all bytes over the wall time from the first start to the
 * last finish, so runs that do not overlap cannot inflate it. */
static double concurrent_store_gbs(int n_clients)
{
    struct { double t0, t1, bytes; } res[2];
    int ready[2][2], go[2];
    pid_t pids[2];

    if (pipe(go) < 0)
        die("pipe", -errno);
    for (int i = 0; i < n_clients; i++) {
        if (pipe(ready[i]) < 0)
            die("pipe", -errno);
        pids[i] = fork();
        if (pids[i] == 0) {
            struct prefill p;
            char model[32], ctx[32], byte;
            snprintf(model, sizeof(model), "scale-%d", i);
            snprintf(ctx, sizeof(ctx), "c%d", i);
            close(go[1]);
            prefill_setup(&p, 1, model);
            /* One untimed store creates the chunks, so both figures are of
             * stores into existing chunks, as shape 2's is. */
            int rc = kvt_store_batch(p.c, ctx, p.spans, L2_LAYERS);
            if (rc)
                die("store_batch", rc);
            res[i].bytes = 0;
            if (write(ready[i][1], &res[i], sizeof(res[i])) != sizeof(res[i]) ||
                read(go[0], &byte, 1) != 0)
                _exit(1);
            res[i].t0 = now_s();
            for (int r = 0; r < REPS; r++)
                if ((rc = kvt_store_batch(p.c, ctx, p.spans, L2_LAYERS)))
                    die("store_batch", rc);
            res[i].t1 = now_s();
            res[i].bytes = (double)p.bytes * REPS;
            if (write(ready[i][1], &res[i], sizeof(res[i])) != sizeof(res[i]))
                _exit(1);
            prefill_teardown(&p, 1);
            _exit(0);
        }
        close(ready[i][1]);
    }
    close(go[0]);
    for (int i = 0; i < n_clients; i++)
        if (read(ready[i][0], &res[i], sizeof(res[i])) != sizeof(res[i]))
            die("client process failed", -EIO);
    close(go[1]);                  /* every client starts now */
    double first = 1e300, last = 0, bytes = 0;
    for (int i = 0; i < n_clients; i++) {
        if (read(ready[i][0], &res[i], sizeof(res[i])) != sizeof(res[i]))
            die("client process failed", -EIO);
        close(ready[i][0]);
        waitpid(pids[i], NULL, 0);
        first = res[i].t0 < first ? res[i].t0 : first;
        last = res[i].t1 > last ? res[i].t1 : last;
        bytes += res[i].bytes;
    }
    return bytes / (last - first) / 1e9;
}

/* ---- shape 1: 1 layer, 8x128 f32, 32 tokens per call -------------------------------- */

static void bench_small_calls(int shared)
{
    kvt_model m = { "storebatch-1layer", 1, 8, 128, KVT_F32, 0 };
    kvt_client *c;
    const uint32_t per_call = 32, calls = 20000, wrap = 65536;
    size_t bytes = (size_t)per_call * 8 * 128 * 4;
    double ts[REPS], tf[REPS];
    int rc = kvt_connect(sock_path, &m, &c);
    if (rc)
        die("connect", rc);
    float *k = shared ? kvt_alloc(c, bytes) : malloc(bytes);
    float *v = shared ? kvt_alloc(c, bytes) : malloc(bytes);
    if (!k || !v)
        die("shape1 buffers", -ENOMEM);
    for (size_t i = 0; i < bytes / 4; i++)
        k[i] = v[i] = (float)((int)(i % 251) - 125) / 50.0f;
    for (int r = 0; r < REPS; r++) {
        double t0 = now_s();
        for (uint32_t i = 0; i < calls; i++)
            if ((rc = kvt_store(c, "s1", 0, (i * per_call) % wrap, per_call, k, v)))
                die("store", rc);
        ts[r] = now_s() - t0;
        t0 = now_s();
        for (uint32_t i = 0; i < calls; i++)
            if ((rc = kvt_fetch(c, "s1", 0, (i * per_call) % wrap, per_call, k, v)))
                die("fetch", rc);
        tf[r] = now_s() - t0;
    }
    double st = per_call * (double)calls / median(ts, REPS);
    double ft = per_call * (double)calls / median(tf, REPS);
    const char *path = shared ? "zero-copy" : "copy";
    char name[64], key[64];
    snprintf(name, sizeof(name), "shape1 store 32 tok x 8x128 f32 (%s)", path);
    printf("%-44s %8.2f GB/s  %12.0f tokens/s  (target 1,000,000)\n",
           name, st * (double)bytes / per_call / 1e9, st);
    snprintf(name, sizeof(name), "shape1 fetch 32 tok x 8x128 f32 (%s)", path);
    printf("%-44s %8.2f GB/s  %12.0f tokens/s\n", name, ft * (double)bytes / per_call / 1e9, ft);
    snprintf(key, sizeof(key), "shape1_store_%s_tokens_per_s", shared ? "zerocopy" : "copy");
    json_num(key, st);
    snprintf(key, sizeof(key), "shape1_fetch_%s_tokens_per_s", shared ? "zerocopy" : "copy");
    json_num(key, ft);
    if (shared) {
        kvt_free(c, k);
        kvt_free(c, v);
    } else {
        free(k);
        free(v);
    }
    kvt_disconnect(c);
}

/* ---- shape 3: decode steps, 1 token x 32 layers per call ---------------------------- */

void decode_steps(kvt_client *c, int shared, const char *ctx, int steps, double *lat_s,
                  double *lat_f)
{
    size_t tok_bytes = (size_t)L2_HEADS * L2_DIM * 2;
    kvt_span spans[L2_LAYERS];
    int rc;

    for (uint32_t l = 0; l < L2_LAYERS; l++) {
        void *k = shared ? kvt_alloc(c, tok_bytes) : malloc(tok_bytes);
        void *v = shared ? kvt_alloc(c, tok_bytes) : malloc(tok_bytes);
        if (!k || !v)
            die("alloc", -ENOMEM);
        fill(k, tok_bytes, l + 7);
        fill(v, tok_bytes, l + 9);
        spans[l] = (kvt_span){ l, 0, 1, k, v };
    }
    for (int i = 0; i < steps; i++) {
        for (uint32_t l = 0; l < L2_LAYERS; l++)
            spans[l].token_start = (uint32_t)i;
        double t0 = now_s();
        if ((rc = kvt_store_batch(c, ctx, spans, L2_LAYERS)))
            die("decode store", rc);
        double t1 = now_s();
        if ((rc = kvt_fetch_batch(c, ctx, spans, L2_LAYERS)))
            die("decode fetch", rc);
        lat_s[i] = (t1 - t0) * 1e6;
        lat_f[i] = (now_s() - t1) * 1e6;
    }
    for (uint32_t l = 0; l < L2_LAYERS; l++) {
        if (shared) {
            kvt_free(c, spans[l].k);
            kvt_free(c, spans[l].v);
        } else {
            free(spans[l].k);
            free(spans[l].v);
        }
    }
    qsort(lat_s, steps, sizeof(double), cmp_double);
    qsort(lat_f, steps, sizeof(double), cmp_double);
}

static void bench_decode(int shared)
{
    kvt_model m = { "llama-3-8b", L2_LAYERS, L2_HEADS, L2_DIM, KVT_F16, 0 };
    kvt_client *c;
    const int steps = 4000;
    double *lat_s = malloc(steps * sizeof(double)), *lat_f = malloc(steps * sizeof(double));
    int rc = kvt_connect(sock_path, &m, &c);
    if (rc)
        die("connect", rc);
    decode_steps(c, shared, "decode", steps, lat_s, lat_f);
    const char *path = shared ? "zero-copy" : "copy";
    printf("shape3 decode store 1x32 layers (%-9s)  p50 %6.1f us  p99 %6.1f us  (target p99 <= 50)\n",
           path, lat_s[steps / 2], lat_s[steps * 99 / 100]);
    printf("shape3 decode fetch 1x32 layers (%-9s)  p50 %6.1f us  p99 %6.1f us\n",
           path, lat_f[steps / 2], lat_f[steps * 99 / 100]);
    char key[64];
    snprintf(key, sizeof(key), "shape3_store_%s_p50_us", shared ? "zerocopy" : "copy");
    json_num(key, lat_s[steps / 2]);
    snprintf(key, sizeof(key), "shape3_store_%s_p99_us", shared ? "zerocopy" : "copy");
    json_num(key, lat_s[steps * 99 / 100]);
    snprintf(key, sizeof(key), "shape3_fetch_%s_p50_us", shared ? "zerocopy" : "copy");
    json_num(key, lat_f[steps / 2]);
    snprintf(key, sizeof(key), "shape3_fetch_%s_p99_us", shared ? "zerocopy" : "copy");
    json_num(key, lat_f[steps * 99 / 100]);
    free(lat_s);
    free(lat_f);
    kvt_disconnect(c);
}

/* ---- hot tier overhead: daemon RSS growth per int8 payload byte --------------------- */

static uint64_t daemon_rss(void)
{
    char path[64];
    unsigned long long size, rss = 0;
    snprintf(path, sizeof(path), "/proc/%d/statm", (int)daemon_pid);
    FILE *f = fopen(path, "r");
    if (f) {
        if (fscanf(f, "%llu %llu", &size, &rss) != 2)
            rss = 0;
        fclose(f);
    }
    return (uint64_t)rss * (uint64_t)sysconf(_SC_PAGESIZE);
}

static void bench_overhead(void)
{
    struct prefill p;
    uint64_t before, after;
    /* Fresh chunks only: a context not stored before. The daemon's region
     * mapping of this client is touched by fetches only, not by stores. */
    prefill_setup(&p, 1, "overhead-model");
    before = daemon_rss();
    for (int i = 0; i < 4; i++) {
        char ctx[32];
        snprintf(ctx, sizeof(ctx), "ovh-%d", i);
        int rc = kvt_store_batch(p.c, ctx, p.spans, L2_LAYERS);
        if (rc)
            die("store", rc);
    }
    after = daemon_rss();
    /* The region pages the daemon read while quantizing are mapped into its
     * RSS too: subtract them (K and V of every span, read once). */
    double payload = 4.0 * L2_LAYERS * L2_TOKENS * L2_HEADS * L2_DIM * 2;   /* int8 K+V */
    double grown = (double)(after - before) - (double)p.bytes;
    double ovh = (grown - payload) / payload;
    printf("%-44s %7.2f %%  (int8 payload %.0f MiB, RSS grew %.0f MiB net of region; "
           "layout: %.2f %%)\n", "hot tier overhead per token", ovh * 100, payload / 1048576,
           grown / 1048576, 100.0 * 4 / L2_DIM);
    json_num("hot_overhead_measured_pct", ovh * 100);
    json_num("hot_overhead_layout_pct", 100.0 * 4 / L2_DIM);
    prefill_teardown(&p, 1);
}

/* ---- cold tier: disk reference, demotion, promotion, LZ4 on realistic KV ---- */

#define RAW_FILE_BYTES (1ull << 30)
#define RAW_REQ (1u << 20)
#define RAW_QD 32

/* Sequential O_DIRECT io_uring of RAW_FILE_BYTES in 1 MiB requests at QD32:
 * the disk's limit on this file system. Returns GB/s. */
static double raw_uring_gbs(const char *path, int do_write)
{
    struct io_uring ring;
    void *buf;
    int fd = open(path, O_RDWR | O_CREAT | O_DIRECT, 0600);
    if (fd < 0 || posix_memalign(&buf, 4096, RAW_REQ) || io_uring_queue_init(RAW_QD, &ring, 0))
        die("raw io setup", -errno);
    memset(buf, 0x5a, RAW_REQ);
    if (do_write && fallocate(fd, 0, 0, RAW_FILE_BYTES) < 0)
        die("fallocate", -errno);
    uint64_t off = 0, done = 0, n_req = RAW_FILE_BYTES / RAW_REQ;
    unsigned inflight = 0;
    double t0 = now_s();
    while (done < n_req) {
        while (inflight < RAW_QD && off < n_req) {
            struct io_uring_sqe *sqe = io_uring_get_sqe(&ring);
            if (do_write)
                io_uring_prep_write(sqe, fd, buf, RAW_REQ, off * RAW_REQ);
            else
                io_uring_prep_read(sqe, fd, buf, RAW_REQ, off * RAW_REQ);
            off++;
            inflight++;
        }
        io_uring_submit(&ring);
        struct io_uring_cqe *cqe;
        if (io_uring_wait_cqe(&ring, &cqe) < 0 || cqe->res != (int)RAW_REQ)
            die("raw io", cqe ? cqe->res : -EIO);
        io_uring_cqe_seen(&ring, cqe);
        inflight--;
        done++;
    }
    if (do_write)
        fdatasync(fd);
    double t = now_s() - t0;
    io_uring_queue_exit(&ring);
    close(fd);
    free(buf);
    return (double)RAW_FILE_BYTES / t / 1e9;
}

static void drop_page_cache(void)
{
    int fd = open("/proc/sys/vm/drop_caches", O_WRONLY);
    if (fd >= 0) {
        if (write(fd, "3", 1) != 1) {}
        close(fd);
    }
}

/* One admin request (a JSON line); its reply line into reply. Dies unless
 * the reply says "ok":true. */
void admin_query(const char *line, char *reply, size_t len)
{
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    size_t got = 0;
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/admin.sock", dir_path);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
        die("admin connect", -errno);
    if (write(fd, line, strlen(line)) != (ssize_t)strlen(line) || write(fd, "\n", 1) != 1)
        die("admin write", -EIO);
    while (got + 1 < len && !memchr(reply, '\n', got)) {
        ssize_t n = read(fd, reply + got, len - 1 - got);
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    close(fd);
    reply[got] = '\0';
    if (!strstr(reply, "\"ok\":true"))
        die("admin request failed", -EIO);
}

static void admin_request(const char *line)
{
    char reply[4096];
    admin_query(line, reply, sizeof(reply));
}

/* Seconds to fetch every prefill context of the cold bench. */
static double fetch_all_time(struct prefill *p, int n_ctx)
{
    double t0 = now_s();
    for (int i = 0; i < n_ctx; i++) {
        char ctx[16];
        snprintf(ctx, sizeof(ctx), "c%d", i);
        int rc = kvt_fetch_batch(p->c, ctx, p->spans, L2_LAYERS);
        if (rc)
            die("fetch from the cold tier", rc);
    }
    return now_s() - t0;
}

static void bench_cold(void)
{
    char cold_path[200], raw_path[200];
    const int n_ctx = 6;      /* 6 prefills: ~800 MiB of int8 chunks */
    struct prefill p;

    start_daemon_with("2G", "4G", NULL);
    snprintf(cold_path, sizeof(cold_path), "%s/cold.kvt", dir_path);
    snprintf(raw_path, sizeof(raw_path), "%s/raw.bin", dir_path);
    /* The disk's limits; its read speed is measured again right before
     * promotion, as this shared disk's speed drifts within minutes. */
    double raw_w = raw_uring_gbs(raw_path, 1);

    /* Demotion: a hot tier full of changed chunks written out by kvt_sync. */
    prefill_setup(&p, 1, "cold-bench");
    for (int i = 0; i < n_ctx; i++) {
        char ctx[16];
        snprintf(ctx, sizeof(ctx), "c%d", i);
        int rc = kvt_store_batch(p.c, ctx, p.spans, L2_LAYERS);
        if (rc)
            die("store", rc);
    }
    /* int8 chunk bytes: K+V payload and one f32 scale per (token, head). */
    double chunk_bytes = (double)n_ctx * L2_LAYERS * L2_TOKENS * L2_HEADS * (L2_DIM + 4) * 2;
    double t0 = now_s();
    int rc = kvt_sync(p.c);
    double t_sync = now_s() - t0;
    if (rc)
        die("sync", rc);
    prefill_teardown(&p, 1);

    /* Promotion: a restarted daemon has everything on SSD only. */
    stop_daemon_keep_dir();
    drop_page_cache();
    start_daemon_with("2G", "4G", cold_path);  /* same file: warm restart */
    prefill_setup(&p, 1, "cold-bench");
    drop_page_cache();
    double raw_r = raw_uring_gbs(raw_path, 0);
    unlink(raw_path);
    drop_page_cache();
    double t_fetch = fetch_all_time(&p, n_ctx);
    /* Again with the hot tier emptied: the same reads, but into memory the
     * daemon has used before. A fresh process's first touch of its pages
     * is slow on a virtual machine (the host backs them lazily), and the
     * first pass pays for it. */
    admin_request("{\"cmd\":\"evict\",\"tier\":\"hot\"}");
    drop_page_cache();
    double t_fetch2 = fetch_all_time(&p, n_ctx);
    prefill_teardown(&p, 1);
    stop_daemon();

    double dem = chunk_bytes / t_sync / 1e9, pro = chunk_bytes / t_fetch / 1e9;
    double pro2 = chunk_bytes / t_fetch2 / 1e9;
    printf("%-44s %8.2f GB/s\n", "disk: O_DIRECT io_uring write 1MiB QD32", raw_w);
    printf("%-44s %8.2f GB/s\n", "disk: O_DIRECT io_uring read 1MiB QD32", raw_r);
    printf("%-44s %8.2f GB/s  %5.2fx disk write (target 0.8)\n",
           "cold demotion (kvt_sync of a full hot tier)", dem, dem / raw_w);
    printf("%-44s %8.2f GB/s  %5.2fx disk read (target 0.8)\n",
           "cold promotion (fetch after restart)", pro, pro / raw_r);
    printf("%-44s %8.2f GB/s  %5.2fx disk read (target 0.8)\n",
           "cold promotion (again, hot tier evicted)", pro2, pro2 / raw_r);
    json_num("disk_write_gbs", raw_w);
    json_num("disk_read_gbs", raw_r);
    json_num("cold_demotion_gbs", dem);
    json_num("cold_demotion_ratio", dem / raw_w);
    json_num("cold_promotion_gbs", pro);
    json_num("cold_promotion_ratio", pro / raw_r);
    json_num("cold_promotion2_gbs", pro2);
    json_num("cold_promotion2_ratio", pro2 / raw_r);
}

/* LZ4 on the int8 payload of KV-like data: Gaussian values with a few large
 * outlier channels, quantized per (token, head) as the hot tier does. */
static void bench_lz4(void)
{
    const size_t tokens = 256, heads = 8, dim = 128, n = tokens * heads * dim;
    float *x = malloc(n * sizeof(float)), *scales = malloc(tokens * heads * sizeof(float));
    int8_t *q = malloc(n);
    char *out = malloc((size_t)LZ4_compressBound((int)n));
    unsigned seed = 12345;
    for (size_t i = 0; i < n; i++) {
        double u1, u2;
        seed = seed * 1103515245u + 12345u; u1 = ((seed >> 8) + 1.0) / 16777217.0;
        seed = seed * 1103515245u + 12345u; u2 = ((seed >> 8) + 1.0) / 16777217.0;
        double g = sqrt(-2 * log(u1)) * cos(2 * M_PI * u2);
        size_t ch = i % dim;
        x[i] = (float)(ch == 7 || ch == 71 || ch == 100 ? g * 20 + 8 : g);
    }
    simd_best()->quantize(q, scales, x, KVT_ELEM_F32, tokens * heads, dim);
    int csize = 0;
    double t[REPS];
    for (int r = 0; r < REPS; r++) {
        double t0 = now_s();
        for (int k = 0; k < 20; k++)
            csize = LZ4_compress_default((const char *)q, out, (int)n, LZ4_compressBound((int)n));
        t[r] = (now_s() - t0) / 20;
    }
    double ratio = (double)n / csize, speed = (double)n / median(t, REPS) / 1e9;
    printf("%-44s %8.3f ratio  %6.2f GB/s compress (reported, not targeted)\n",
           "LZ4 on int8 KV (Gaussian + outlier channels)", ratio, speed);
    json_num("lz4_ratio_int8_kv", ratio);
    json_num("lz4_compress_gbs", speed);
    free(x);
    free(scales);
    free(q);
    free(out);
}

/* ---- simd kernels ----------------------------------------------------------------------------
 * The conversions behind a store and a fetch, alone on one thread with
 * simd_best(): f16 groups of 128 (one token's head, as shape 2 stores
 * them), 4 MiB of input (in cache), each figure the median of SIMD_REPS
 * calls, beside memcpy of the same bytes. "keys": Gaussian with channels
 * x30 and x10, as real keys are; the others run on fill()'s data. */
#define SIMD_REPS 21
#define SIMD_DIM 128

enum simd_kernel { K_QUANTIZE, K_QUANTIZE_OUTLIERS, K_DEQUANTIZE_OUTLIERS };

struct simd_run {
    const struct kvt_simd_ops *ops;
    const uint16_t *src;
    int8_t *q;
    float *scales;
    uint16_t *idx, *vals, *out;
    size_t groups;
};

static double simd_gbs(const struct simd_run *k, enum simd_kernel which, unsigned n_out)
{
    double t[SIMD_REPS];
    int rc = 0;

    if (which == K_DEQUANTIZE_OUTLIERS)
        rc = k->ops->quantize_outliers(k->q, k->scales, k->idx, k->vals, k->src, KVT_ELEM_F16,
                                       k->groups, SIMD_DIM, n_out);
    for (int r = 0; r < SIMD_REPS && rc == 0; r++) {
        double t0 = now_s();

        if (which == K_QUANTIZE)
            k->ops->quantize(k->q, k->scales, k->src, KVT_ELEM_F16, k->groups, SIMD_DIM);
        else if (which == K_QUANTIZE_OUTLIERS)
            rc = k->ops->quantize_outliers(k->q, k->scales, k->idx, k->vals, k->src,
                                           KVT_ELEM_F16, k->groups, SIMD_DIM, n_out);
        else
            k->ops->dequantize_outliers(k->out, KVT_ELEM_F16, k->q, k->scales, k->idx, k->vals,
                                        k->groups, SIMD_DIM, n_out);
        t[r] = now_s() - t0;
    }
    if (rc < 0)
        die("quantize_outliers", rc);
    return (double)(k->groups * SIMD_DIM * 2) / median(t, SIMD_REPS) / 1e9;
}

static void simd_row(const char *name, const char *key, double gbs, double ref, double quant)
{
    char json_key[80];

    printf("%-44s %8.2f GB/s  %5.2fx memcpy", name, gbs, gbs / ref);
    if (quant > 0)
        printf("  %3.0f %% of quantize", 100 * gbs / quant);
    printf("\n");
    snprintf(json_key, sizeof(json_key), "simd_%s_gbs", key);
    json_num(json_key, gbs);
    snprintf(json_key, sizeof(json_key), "simd_%s_ratio", key);
    json_num(json_key, gbs / ref);
}

static void bench_simd(void)
{
    const size_t bytes = 4u << 20, groups = bytes / 2 / SIMD_DIM, n = groups * SIMD_DIM;
    uint16_t *src = malloc(bytes), *keys = malloc(bytes), *out = malloc(bytes);
    struct simd_run k = { simd_best(), src, malloc(n), malloc(groups * sizeof(float)),
                          malloc(groups * 16 * 2), malloc(groups * 16 * 2), out, groups };
    unsigned seed = 777;
    double ref, quant;

    if (!src || !keys || !out || !k.q || !k.scales || !k.idx || !k.vals)
        die("bench_simd", -ENOMEM);
    memset(out, 0, bytes);      /* every page touched before the clock runs */
    memset(k.q, 0, n);
    fill(src, bytes, 99);
    for (size_t i = 0; i < n; i++) {
        double u1, u2, g;
        size_t ch = i % SIMD_DIM;

        seed = seed * 1103515245u + 12345u; u1 = ((seed >> 8) + 1.0) / 16777217.0;
        seed = seed * 1103515245u + 12345u; u2 = ((seed >> 8) + 1.0) / 16777217.0;
        g = sqrt(-2 * log(u1)) * cos(2 * M_PI * u2);
        g *= ch == 3 || ch == 40 ? 30 : ch == 77 || ch == 120 ? 10 : 1;
        keys[i] = simd_f32_to_f16((float)g);
    }
    simd_gbs(&k, K_QUANTIZE_OUTLIERS, 16);      /* warm up, outputs touched */
    ref = memcpy_gbs(bytes);
    printf("simd kernels (%s, f16 dim %d, %zu MiB; memcpy of the same bytes %.2f GB/s)\n",
           k.ops->name, SIMD_DIM, bytes >> 20, ref);
    json_num("simd_memcpy_gbs", ref);
    quant = simd_gbs(&k, K_QUANTIZE, 0);
    simd_row("simd quantize", "quantize", quant, ref, 0);
    simd_row("simd quantize_outliers n_out 0", "quantize_outliers0",
             simd_gbs(&k, K_QUANTIZE_OUTLIERS, 0), ref, quant);
    simd_row("simd quantize_outliers n_out 4", "quantize_outliers4",
             simd_gbs(&k, K_QUANTIZE_OUTLIERS, 4), ref, quant);
    simd_row("simd quantize_outliers n_out 8", "quantize_outliers8",
             simd_gbs(&k, K_QUANTIZE_OUTLIERS, 8), ref, quant);
    k.src = keys;
    simd_row("simd quantize_outliers n_out 4, keys", "quantize_outliers4_keys",
             simd_gbs(&k, K_QUANTIZE_OUTLIERS, 4), ref, quant);
    k.src = src;
    simd_row("simd dequantize_outliers n_out 4", "dequantize_outliers4",
             simd_gbs(&k, K_DEQUANTIZE_OUTLIERS, 4), ref, 0);
    free(src); free(keys); free(out); free(k.q); free(k.scales); free(k.idx); free(k.vals);
}

int main(int argc, char **argv)
{
    char json_path[300];

    if (argc > 1)
        build_dir = argv[1];
    setenv("KVTIER_SHM_BYTES", "640M", 1);
    snprintf(json_path, sizeof(json_path), "%s/bench.json", build_dir);
    json = fopen(json_path, "w");
    if (!json)
        die("open bench.json", -errno);
    fprintf(json, "{");
    start_daemon();

    size_t prefill_bytes = (size_t)L2_TOKENS * L2_LAYERS * L2_HEADS * L2_DIM * 2 * 2;
    double ref = memcpy_gbs(prefill_bytes);
    printf("kvtier bench: medians of %d runs; memcpy reference on %zu MiB buffers\n",
           REPS, prefill_bytes >> 20);
    printf("%-44s %8.2f GB/s\n", "memcpy (1 thread)", ref);
    json_num("memcpy_gbs", ref);

    /* KVTIER_BENCH_ONLY=calls (shapes 1 and 3), cold (the cold tier) or
     * outliers (shape 2 with outliers 0, 4, 8) or simd (the kernels) or
     * remote (the memcached pool, two hosts) or loop (decode steps beside
     * another client's cold fetches) or listing (the admin listings over a
     * large cold tier): one part alone, for quick iterations. */
    const char *only = getenv("KVTIER_BENCH_ONLY");
    if (only && !strcmp(only, "calls")) {
        bench_small_calls(1);
        bench_small_calls(0);
        bench_decode(1);
        bench_decode(0);
        goto out;
    }
    if (only && !strcmp(only, "outliers")) {
        stop_daemon();
        bench_outliers(ref);
        goto out;
    }
    if (only && !strcmp(only, "cold")) {
        stop_daemon();
        bench_cold();
        goto out;
    }
    if (only && !strcmp(only, "remote")) {
        stop_daemon();
        bench_remote(build_dir);
        goto out;
    }
    if (only && !strcmp(only, "simd")) {
        stop_daemon();
        bench_simd();
        goto out;
    }
    if (only && !strcmp(only, "loop")) {
        stop_daemon();
        bench_loop_disk();
        goto out;
    }
    if (only && !strcmp(only, "listing")) {
        stop_daemon();
        bench_listing();
        goto out;
    }
    bench_overhead();
    bench_prefill(ref);
    bench_small_calls(1);
    bench_small_calls(0);
    bench_decode(1);
    bench_decode(0);
    double one = concurrent_store_gbs(1), two = concurrent_store_gbs(2);
    printf("%-44s %8.2f GB/s\n", "shape2 store zero-copy, 1 client process", one);
    printf("%-44s %8.2f GB/s  scaling %.2fx (target 1.6x)\n",
           "shape2 store zero-copy, 2 client processes", two, two / one);
    json_num("clients1_store_gbs", one);
    json_num("clients2_store_gbs", two);
    json_num("clients_scaling", two / one);

    stop_daemon();
    bench_outliers(ref);
    bench_lz4();
    bench_simd();
    bench_cold();
    bench_remote(build_dir);
    bench_loop_disk();
    bench_listing();
out:
    if (daemon_pid)
        stop_daemon();
    fprintf(json, "\n}\n");
    fclose(json);
    printf("wrote %s\n", json_path);
    return 0;
}
