/* bench.h - what bench.c shares with its sections in other files
 * (bench_outliers.c): the daemon under test, the shape 2 prefill, and the
 * table and bench.json output. */
#ifndef KVT_TEST_BENCH_H
#define KVT_TEST_BENCH_H

#include <stddef.h>

#include "client/kvtier.h"

#define REPS 5                 /* each figure is the median of REPS runs */

/* Shape 2: Llama-3-8B prefill. */
#define L2_LAYERS 32
#define L2_HEADS 8
#define L2_DIM 128
#define L2_TOKENS 2048

struct prefill {
    kvt_client *c;
    kvt_span spans[L2_LAYERS];
    size_t bytes;              /* client-side bytes, K and V */
};

/* Print what failed, kill the daemon, exit 1. */
__attribute__((noreturn)) void die(const char *what, int rc);
/* Start kvtierd, with one more flag when flag is not NULL. Returns 0, or
 * -ECHILD when the daemon exited during its start (a flag it refuses: its
 * log's first line, saying why, is copied into why); its dir is gone then. */
int try_start_daemon(const char *hot, const char *cold_bytes, const char *cold_path,
                     const char *flag, const char *value, char *why, size_t why_len);
/* SIGTERM the daemon, wait, remove its dir. */
void stop_daemon(void);
/* SIGTERM the daemon and wait, keeping its dir (and cold file) for a
 * restart; start_daemon_with a cold_path restarts in that dir. */
void stop_daemon_keep_dir(void);
void start_daemon_with(const char *hot, const char *cold_bytes, const char *cold_path);
/* The dir of the daemon started last. */
const char *bench_dir(void);
/* One admin request (a JSON line); its reply line into reply. Dies unless
 * the reply says "ok":true. */
void admin_query(const char *line, char *reply, size_t len);

/* A key of bench.json / a row of the table (ref: memcpy's GB/s). */
void json_num(const char *key, double v);
void row(const char *name, double gbs, double ref, double tok_s);

/* Connect as model and make the 32 spans of K and V (shared: kvt_alloc
 * buffers, else malloc'd); teardown frees them and disconnects. */
void prefill_setup(struct prefill *p, int shared, const char *model);
void prefill_teardown(struct prefill *p, int shared);
/* Median seconds of REPS store (or fetch) batches of the whole prefill. */
double prefill_time(struct prefill *p, int fetch, const char *ctx);

/* bench_outliers.c: shape 2 with outliers = 0, 4 and 8. */
void bench_outliers(double ref);
/* bench_remote.c: host B's fetch from a memcached pool, against its local
 * fetch and the loopback's TCP rate. */
void bench_remote(const char *build_dir);
/* bench_loop.c: decode steps alone and beside another client's fetches
 * of cold data. */
void bench_loop_disk(void);
/* bench_listing.c: the admin listings over a cold tier of ~100k and ~1M
 * chunk records. */
void bench_listing(void);

/* Seconds on CLOCK_MONOTONIC; qsort's comparison of doubles; f16 noise. */
double now_s(void);
int cmp_double(const void *a, const void *b);
void fill(void *buf, size_t bytes, unsigned seed);
/* steps shape 3 decode steps on c (1 token x 32 layers stored, then
 * fetched, at token i of ctx; shared: kvt_alloc buffers): each one's store
 * and fetch microseconds into lat_s[i] and lat_f[i], sorted on return. */
void decode_steps(kvt_client *c, int shared, const char *ctx, int steps, double *lat_s,
                  double *lat_f);
/* The data socket of the daemon started last. */
const char *bench_socket(void);

#endif
