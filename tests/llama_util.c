/* llama_util.c - llama.cpp for the glue's test and bench. */
#include "tests/llama_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static unsigned log_errors;

/* Counts errors; prints only those, so a test's output stays readable. */
static void counting_log(enum ggml_log_level level, const char *text, void *data)
{
    (void)data;
    if (level == GGML_LOG_LEVEL_ERROR) {
        log_errors++;
        fprintf(stderr, "llama.cpp: %s", text);
    }
}

unsigned llu_log_errors(void)
{
    return log_errors;
}

const char *llu_model_path(const char *name)
{
    static char path[512];
    const char *dir = getenv("KVTIER_LLAMA_MODELS");

    snprintf(path, sizeof(path), "%s/%s.gguf", dir && *dir ? dir : "build/llama", name);
    return path;
}

struct llama_model *llu_load(const char *name)
{
    llama_log_set(counting_log, NULL);
    llama_backend_init();
    struct llama_model_params mp = llama_model_default_params();
    mp.n_gpu_layers = 0;
    return llama_model_load_from_file(llu_model_path(name), mp);
}

struct llama_context *llu_context(struct llama_model *m, uint32_t n_ctx, bool flash,
                                  enum ggml_type type_k)
{
    struct llama_context_params cp = llama_context_default_params();
    cp.n_ctx = n_ctx;
    cp.n_batch = n_ctx;
    cp.n_ubatch = 512;
    cp.n_seq_max = 1;
    cp.n_threads = cp.n_threads_batch = 2;
    cp.flash_attn_type = flash ? LLAMA_FLASH_ATTN_TYPE_ENABLED : LLAMA_FLASH_ATTN_TYPE_DISABLED;
    cp.type_k = type_k;
    cp.no_perf = false;
    return llama_init_from_model(m, cp);
}

void llu_prompt(const struct llama_model *m, uint64_t seed, llama_token *out, uint32_t n)
{
    const struct llama_vocab *v = llama_model_get_vocab(m);
    int32_t n_vocab = llama_vocab_n_tokens(v);
    uint64_t x = seed * 0x9e3779b97f4a7c15ull + 1;

    for (uint32_t i = 0; i < n; i++) {
        llama_token t;
        do {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            t = (llama_token)(x % (uint64_t)n_vocab);
        } while (llama_vocab_is_control(v, t) || t < 3);
        out[i] = t;
    }
}

int llu_eval(struct llama_context *ctx, const llama_token *tokens, uint32_t n, int32_t pos,
             uint32_t n_logits, float *logits)
{
    struct llama_batch b = llama_batch_init((int32_t)n, 0, 1);
    int32_t n_vocab = llama_vocab_n_tokens(llama_model_get_vocab(llama_get_model(ctx)));

    for (uint32_t i = 0; i < n; i++) {
        b.token[i] = tokens[i];
        b.pos[i] = pos + (int32_t)i;
        b.n_seq_id[i] = 1;
        b.seq_id[i][0] = 0;
        b.logits[i] = i + n_logits >= n;
    }
    b.n_tokens = (int32_t)n;
    int rc = llama_decode(ctx, b);
    for (uint32_t i = 0; rc == 0 && logits && i < n_logits; i++)
        memcpy(logits + (size_t)i * n_vocab, llama_get_logits_ith(ctx, (int32_t)(n - n_logits + i)),
               (size_t)n_vocab * sizeof(float));
    llama_batch_free(b);
    return rc;
}
