/* test_llama.c - proves libkvtier-llama on the real engine (llama.cpp, CPU,
 * a generated Llama-architecture model, tests/llama/make_models.sh): process
 * A evaluates a 1000-token prompt and saves it; process B, with a fresh
 * context, restores from the prompt plus 16 tokens, gets 1000 restored and
 * evaluates only the 16 (llama.cpp's perf counters say so). With lossless
 * storage B's logits equal A's continuing itself bit for bit; with int8 the
 * largest logit difference and top-1 agreement are printed, and top-1 must
 * hold wherever the reference's best two logits are not nearly tied. Flash
 * attention off (V transposed) and on. A prompt saved in part (512) restores
 * 512 and the rest evaluated gives the same logits. Refusals change nothing
 * and print nothing: a sequence that is not empty (-EINVAL), a q8_0 K cache
 * (-EOPNOTSUPP), a model of another geometry than the connection (-EINVAL),
 * a context with no room for the prefix (-ENOSPC). */
#include "tests/helpers.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "tests/llama_util.h"

#define N_PROMPT 1000
#define N_MORE   16
#define N_ALL    (N_PROMPT + N_MORE)
#define N_PART   512
#define N_CTX    2048
#define VOCAB_MAX 32000
#define MODEL_NAME "kvtier-llama-test"
/* Best two logits closer than this are a near-tie: the logits of the test
 * model spread over about +-4.5 and int8's noise on them is a few hundredths
 * (0.09 at most, measured), so such a pair may swap; those positions are
 * counted apart. A flip at a wider gap means the KV came back worse. */
#define NEAR_TIE 0.1f
#define INT8_LOGIT_BOUND 0.25f   /* a key of unpaired outliers gives 0.18 */

/* A child's failure: where, what, and the library's sentence. */
#define WANT(cond) do {                                                        \
        if (!(cond)) {                                                         \
            fprintf(stderr, "%s:%d: %s failed\n", __FILE__, __LINE__, #cond);  \
            return 1;                                                          \
        }                                                                      \
    } while (0)
#define WANT_RC(call, want) do {                                               \
        int rc_ = (call);                                                      \
        if (rc_ != (want)) {                                                   \
            fprintf(stderr, "%s:%d: %s = %d (%s), want %d\n", __FILE__,        \
                    __LINE__, #call, rc_, kvt_strerror(rc_), (want));          \
            return 1;                                                          \
        }                                                                      \
    } while (0)

/* What the children report, in memory shared across fork. */
struct results {
    float ref[N_MORE * VOCAB_MAX];     /* A continuing itself */
    float got[N_MORE * VOCAB_MAX];     /* B after its restore */
    uint32_t n_vocab;
    uint32_t n_restored;
    int32_t n_evaluated;               /* B's perf counters: prompt tokens */
    int32_t n_generated;               /* ... and single-token decodes */
    unsigned log_errors;               /* B's llama.cpp log */
};

struct run {
    bool flash;
    uint32_t saved;                    /* tokens A saves */
};

static struct test_daemon d;
static struct results *res;
static llama_token tokens[N_ALL];

/* Model, context and connection of one child. */
struct engine {
    struct llama_model *model;
    struct llama_context *ctx;
    kvt_client *c;
};

static int engine_open(struct engine *e, const char *model, const char *conn_model,
                       bool flash, enum ggml_type type_k)
{
    kvt_model km;

    e->model = llu_load(model);
    WANT(e->model);
    e->ctx = llu_context(e->model, N_CTX, flash, type_k);
    WANT(e->ctx);
    struct llama_model *geometry = strcmp(model, conn_model) ? llu_load(conn_model) : e->model;
    WANT(geometry);
    WANT_RC(kvt_llama_model(geometry, MODEL_NAME, &km), 0);
    WANT_RC(kvt_connect(d.socket, &km, &e->c), 0);
    return 0;
}

/* A: evaluates tokens[0..saved), saves them, evaluates the rest itself;
 * the logits of the last N_MORE are the reference. */
static int run_a(void *arg)
{
    const struct run *r = arg;
    struct engine e;

    if (engine_open(&e, "test", "test", r->flash, GGML_TYPE_F16))
        return 1;
    WANT_RC(llu_eval(e.ctx, tokens, r->saved, 0, 1, NULL), 0);
    WANT_RC(kvt_llama_save(e.c, e.ctx, 0, tokens, r->saved), 0);
    WANT_RC(llu_eval(e.ctx, tokens + r->saved, N_ALL - r->saved, (int32_t)r->saved,
                     N_MORE, res->ref), 0);
    res->n_vocab = (uint32_t)llama_vocab_n_tokens(llama_model_get_vocab(e.model));
    kvt_disconnect(e.c);
    return 0;
}

/* B: a fresh context restores what it can of all the tokens and evaluates
 * only the rest. */
static int run_b(void *arg)
{
    const struct run *r = arg;
    struct engine e;
    uint32_t n = 0;

    if (engine_open(&e, "test", "test", r->flash, GGML_TYPE_F16))
        return 1;
    unsigned errors = llu_log_errors();
    llama_perf_context_reset(e.ctx);
    WANT_RC(kvt_llama_restore(e.c, e.ctx, 0, tokens, N_ALL, &n), 0);
    WANT(llama_memory_seq_pos_max(llama_get_memory(e.ctx), 0) == (llama_pos)n - 1);
    WANT_RC(llu_eval(e.ctx, tokens + n, N_ALL - n, (int32_t)n, N_MORE, res->got), 0);
    struct llama_perf_context_data perf = llama_perf_context(e.ctx);
    res->n_restored = n;
    res->n_evaluated = perf.n_p_eval;
    res->n_generated = perf.n_eval;
    res->log_errors = llu_log_errors() - errors;
    kvt_disconnect(e.c);
    return 0;
}

static void run_pair(bool flash, uint32_t saved)
{
    struct run r = { flash, saved };

    memset(res, 0, sizeof(*res));
    assert_int_equal(test_in_child(run_a, &r), 0);
    assert_int_equal(test_in_child(run_b, &r), 0);
    assert_int_equal(res->n_restored, saved);
    /* One decode of the rest: prompt tokens; llama.cpp reports a count of
     * 0 as 1, so single-token decodes show 1 for none. */
    assert_int_equal(res->n_evaluated, N_ALL - saved);
    assert_int_equal(res->n_generated, 1);
    assert_int_equal(res->log_errors, 0);
    assert_true(res->n_vocab > 0 && res->n_vocab <= VOCAB_MAX);
}

static void lossless(bool flash, uint32_t saved)
{
    daemon_start(&d, "--quant", "none", NULL);
    run_pair(flash, saved);
    size_t n = (size_t)N_MORE * res->n_vocab;
    size_t differ = 0;
    for (size_t i = 0; i < n; i++)
        differ += memcmp(&res->ref[i], &res->got[i], sizeof(float)) != 0;
    if (differ)
        fail_msg("flash %d, saved %u: %zu of %zu logits differ", flash, saved, differ, n);
    daemon_stop(&d);
    daemon_cleanup(&d);
}

static void restore_is_bit_exact_lossless_flash_off(void **state)
{
    (void)state;
    lossless(false, N_PROMPT);
}

static void restore_is_bit_exact_lossless_flash_on(void **state)
{
    (void)state;
    lossless(true, N_PROMPT);
}

static void partial_prefix_restores_512_flash_off(void **state)
{
    (void)state;
    lossless(false, N_PART);
}

static void partial_prefix_restores_512_flash_on(void **state)
{
    (void)state;
    lossless(true, N_PART);
}

static uint32_t argmax(const float *row, uint32_t n, float *gap)
{
    uint32_t best = 0, second = 1;

    if (row[1] > row[0]) {
        best = 1;
        second = 0;
    }
    for (uint32_t i = 2; i < n; i++) {
        if (row[i] > row[best]) {
            second = best;
            best = i;
        } else if (row[i] > row[second]) {
            second = i;
        }
    }
    *gap = row[best] - row[second];
    return best;
}

static void int8(bool flash)
{
    daemon_start(&d, NULL);            /* int8 with outliers, the default */
    run_pair(flash, N_PROMPT);
    const uint32_t V = res->n_vocab;
    float max_diff = 0;
    unsigned agree = 0, ties = 0, tie_agree = 0;
    for (uint32_t p = 0; p < N_MORE; p++) {
        const float *ref = res->ref + (size_t)p * V, *got = res->got + (size_t)p * V;
        for (uint32_t i = 0; i < V; i++)
            max_diff = fmaxf(max_diff, fabsf(ref[i] - got[i]));
        float gap, gap_got;
        bool same = argmax(ref, V, &gap) == argmax(got, V, &gap_got);
        if (getenv("KVTIER_LLAMA_VERBOSE")) {
            float md = 0, lo = ref[0], hi = ref[0];
            for (uint32_t i = 0; i < V; i++) {
                md = fmaxf(md, fabsf(ref[i] - got[i]));
                lo = fminf(lo, ref[i]);
                hi = fmaxf(hi, ref[i]);
            }
            printf("  pos %u: gap %.4f same %d maxdiff %.4f range %.2f..%.2f\n", p, gap, same, md, lo, hi);
        }
        if (gap < NEAR_TIE) {
            ties++;
            tie_agree += same;
        } else {
            agree += same;
        }
    }
    printf("llama int8, flash %s: largest logit difference %.5f; top-1 agrees at %u of %u "
           "positions not near-tied, %u of %u near-ties (best two within %.2f)\n",
           flash ? "on" : "off", max_diff, agree, N_MORE - ties, tie_agree, ties, NEAR_TIE);
    assert_int_equal(agree, N_MORE - ties);
    /* Not bit-exact (else int8 would not be in play), and small. */
    assert_true(max_diff > 0 && max_diff < INT8_LOGIT_BOUND);
    daemon_stop(&d);
    daemon_cleanup(&d);
}

static void restore_int8_keeps_top1_flash_off(void **state)
{
    (void)state;
    int8(false);
}

static void restore_int8_keeps_top1_flash_on(void **state)
{
    (void)state;
    int8(true);
}

/* ---- refusals: nothing changes, nothing is logged ------------------------- */

/* The refusals, in one child whose daemon holds the prompt. */
static int refusals(void *arg)
{
    (void)arg;
    struct engine e, q8, other;
    uint32_t n = 99, m = 0;

    if (engine_open(&e, "test", "test", true, GGML_TYPE_F16))
        return 1;
    WANT_RC(llu_eval(e.ctx, tokens, N_PROMPT, 0, 1, NULL), 0);
    WANT_RC(kvt_llama_save(e.c, e.ctx, 0, tokens, N_PROMPT), 0);
    unsigned errors = llu_log_errors();

    /* Not empty: refused, its cells kept. */
    WANT_RC(kvt_llama_restore(e.c, e.ctx, 0, tokens, N_ALL, &n), -EINVAL);
    WANT(n == 0);
    WANT(llama_memory_seq_pos_max(llama_get_memory(e.ctx), 0) == N_PROMPT - 1);
    /* Saving more tokens than the sequence holds, a bad sequence id. */
    WANT_RC(kvt_llama_save(e.c, e.ctx, 0, tokens, N_PROMPT + 1), -EINVAL);
    WANT_RC(kvt_llama_save(e.c, e.ctx, 1, tokens, 10), -EINVAL);

    /* A q8_0 K cache: its state is refused on save (nothing stored: another
     * prompt stays unmatched) and on restore (the sequence stays empty). */
    if (engine_open(&q8, "test", "test", true, GGML_TYPE_Q8_0))
        return 1;
    llama_token fresh[64];
    llu_prompt(q8.model, 99, fresh, 64);
    WANT_RC(llu_eval(q8.ctx, fresh, 64, 0, 1, NULL), 0);
    WANT_RC(kvt_llama_save(q8.c, q8.ctx, 0, fresh, 64), -EOPNOTSUPP);
    WANT_RC(kvt_match_prefix(q8.c, fresh, 64, &m), 0);
    WANT(m == 0);
    WANT(llama_memory_seq_rm(llama_get_memory(q8.ctx), 0, -1, -1));
    WANT_RC(kvt_llama_restore(q8.c, q8.ctx, 0, tokens, N_ALL, &n), -EOPNOTSUPP);
    WANT(n == 0 && llama_memory_seq_pos_max(llama_get_memory(q8.ctx), 0) == -1);

    /* A context too small for the prompt: no room, left empty. */
    struct llama_context *small = llu_context(e.model, 256, true, GGML_TYPE_F16);
    WANT(small);
    WANT_RC(kvt_llama_restore(e.c, small, 0, tokens, N_ALL, &n), -ENOSPC);
    WANT(n == 0 && llama_memory_seq_pos_max(llama_get_memory(small), 0) == -1);
    llama_free(small);

    /* Another geometry (4 kv heads) than the connection's (2). */
    if (engine_open(&other, "test-other", "test", true, GGML_TYPE_F16))
        return 1;
    WANT_RC(kvt_llama_restore(other.c, other.ctx, 0, tokens, N_ALL, &n), -EINVAL);
    WANT(llama_memory_seq_pos_max(llama_get_memory(other.ctx), 0) == -1);
    WANT_RC(llu_eval(other.ctx, fresh, 64, 0, 1, NULL), 0);
    WANT_RC(kvt_llama_save(other.c, other.ctx, 0, fresh, 64), -EINVAL);

    /* The refused calls printed nothing through llama.cpp's log, and the
     * prompt is still there, whole, for a context that fits. */
    WANT(llu_log_errors() == errors);
    WANT_RC(kvt_match_prefix(e.c, tokens, N_ALL, &m), 0);
    WANT(m == N_PROMPT);
    WANT_RC(kvt_llama_model(NULL, MODEL_NAME, &(kvt_model){ 0 }), -EINVAL);
    return 0;
}

static void refusals_change_nothing(void **state)
{
    (void)state;
    daemon_start(&d, "--quant", "none", NULL);
    assert_int_equal(test_in_child(refusals, NULL), 0);
    daemon_stop(&d);
    daemon_cleanup(&d);
}

static int setup(void **state)
{
    (void)state;
    res = mmap(NULL, sizeof(*res), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (res == MAP_FAILED)
        return -1;
    /* The prompt from the model's vocabulary, read here in a child so this
     * process never holds llama.cpp (or its threads) across a fork. */
    FILE *f = fopen(llu_model_path("test"), "r");
    if (!f) {
        fprintf(stderr, "no model at %s: run tests/llama/make_models.sh\n",
                llu_model_path("test"));
        return -1;
    }
    fclose(f);
    for (uint32_t i = 0; i < N_ALL; i++)        /* control tokens are 0..2 */
        tokens[i] = (llama_token)(3 + (i * 2654435761u) % (VOCAB_MAX - 3));
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(restore_is_bit_exact_lossless_flash_off),
        cmocka_unit_test(restore_is_bit_exact_lossless_flash_on),
        cmocka_unit_test(partial_prefix_restores_512_flash_off),
        cmocka_unit_test(partial_prefix_restores_512_flash_on),
        cmocka_unit_test(restore_int8_keeps_top1_flash_off),
        cmocka_unit_test(restore_int8_keeps_top1_flash_on),
        cmocka_unit_test(refusals_change_nothing),
    };
    return cmocka_run_group_tests(tests, setup, NULL);
}
