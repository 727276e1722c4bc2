/* llama_util.h - llama.cpp for the glue's test and bench: the generated
 * models, contexts, prompts and evaluation, and a log that counts errors. */
#ifndef KVT_TEST_LLAMA_UTIL_H
#define KVT_TEST_LLAMA_UTIL_H

#include <stdbool.h>
#include <stdint.h>

#include "client/kvtier_llama.h"

/* Path of a model tests/llama/make_models.sh wrote ("test", "test-other",
 * "bench"): $KVTIER_LLAMA_MODELS or build/llama, then NAME.gguf. */
const char *llu_model_path(const char *name);

/* Load a model (CPU), NULL on failure. Installs the counting log first. */
struct llama_model *llu_load(const char *name);

/* A context of n_ctx cells, one sequence, flash attention on or off, K
 * cache type_k (GGML_TYPE_F16 for the default), threads fixed so that
 * every run computes in the same order. */
struct llama_context *llu_context(struct llama_model *m, uint32_t n_ctx, bool flash,
                                  enum ggml_type type_k);

/* n seeded token ids of the model's vocabulary, never a control token. */
void llu_prompt(const struct llama_model *m, uint64_t seed, llama_token *out, uint32_t n);

/* Evaluate tokens[0..n) at positions pos.. of seq 0 in one llama_decode,
 * logits for the last n_logits tokens, copied to logits (n_logits x n_vocab)
 * when not NULL. Returns llama_decode's result. */
int llu_eval(struct llama_context *ctx, const llama_token *tokens, uint32_t n, int32_t pos,
             uint32_t n_logits, float *logits);

/* Errors llama.cpp (or ggml) logged since the process started. */
unsigned llu_log_errors(void);

#endif
