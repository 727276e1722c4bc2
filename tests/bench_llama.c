/* bench_llama.c - what a restore through kvtier saves a llama.cpp engine:
 * the time to evaluate a prompt on this CPU against the time to restore its
 * KV into a fresh sequence (kvt_llama_restore) and to save it
 * (kvt_llama_save), for 1000 and 4000 tokens, int8 and lossless, on the
 * bench model of tests/llama/make_models.sh (8 layers, 512 wide, 4 kv heads
 * of 64; flash attention on, llama.cpp's CPU default). Each figure is the
 * median of REPS runs. Run by make bench, after tests/bench. */
#include "tests/helpers.h"

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "tests/llama_util.h"

#define REPS 3
#define MAX_TOKENS 4000

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v)
{
    qsort(v, REPS, sizeof(*v), cmp_double);
    return v[REPS / 2];
}

static __attribute__((noreturn)) void die(const char *what, int rc)
{
    fprintf(stderr, "bench_llama: %s: %s\n", what, kvt_strerror(rc));
    exit(1);
}

static void bench_quant(struct llama_model *m, const char *quant, const llama_token *tokens)
{
    struct test_daemon d;
    struct llama_context *ctx = llu_context(m, MAX_TOKENS + 96, true, GGML_TYPE_F16);
    kvt_model km;
    kvt_client *c;
    int rc;

    if (!ctx)
        die("llama context", -ENOMEM);
    daemon_start(&d, "--quant", quant, "--hot-bytes", "2G", NULL);
    if ((rc = kvt_llama_model(m, "kvtier-llama-bench", &km)) ||
        (rc = kvt_connect(d.socket, &km, &c)))
        die("connect", rc);
    llama_memory_t mem = llama_get_memory(ctx);
    const uint32_t sizes[] = { 1000, MAX_TOKENS };
    for (size_t s = 0; s < 2; s++) {
        const uint32_t n = sizes[s];
        double eval[REPS], save[REPS], restore[REPS];
        for (int r = 0; r < REPS; r++) {
            llama_memory_clear(mem, true);
            double t0 = now_s();
            if ((rc = llu_eval(ctx, tokens, n, 0, 1, NULL)))
                die("llama_decode", -EIO);
            double t1 = now_s();
            if ((rc = kvt_llama_save(c, ctx, 0, tokens, n)))
                die("kvt_llama_save", rc);
            double t2 = now_s();
            eval[r] = t1 - t0;
            save[r] = t2 - t1;
        }
        for (int r = 0; r < REPS; r++) {
            uint32_t got = 0;
            llama_memory_clear(mem, true);
            double t0 = now_s();
            /* The prompt and the token after it: n restored, 1 left to eval. */
            if ((rc = kvt_llama_restore(c, ctx, 0, tokens, n + 1, &got)) || got != n)
                die("kvt_llama_restore", rc ? rc : -ENOENT);
            restore[r] = now_s() - t0;
        }
        double e = median(eval), sv = median(save), rs = median(restore);
        printf("llama %-4s %4u tokens: evaluate %8.1f ms  restore %7.2f ms (%6.1fx faster)  "
               "save %7.2f ms\n", quant, n, e * 1e3, rs * 1e3, e / rs, sv * 1e3);
    }
    kvt_disconnect(c);
    llama_free(ctx);
    daemon_stop(&d);
    daemon_cleanup(&d);
}

int main(void)
{
    static llama_token tokens[MAX_TOKENS + 1];
    struct llama_model *m = llu_load("bench");

    if (!m)
        die(llu_model_path("bench"), -ENOENT);
    setvbuf(stdout, NULL, _IOLBF, 0);      /* each figure as it is measured */
    llu_prompt(m, 1, tokens, MAX_TOKENS + 1);
    printf("llama.cpp (CPU, 2 threads), model %s\n", llu_model_path("bench"));
    bench_quant(m, "int8", tokens);
    bench_quant(m, "none", tokens);
    llama_model_free(m);
    return 0;
}
