/* kvtier_llama.h - libkvtier-llama: a llama.cpp sequence's KV saved into
 * kvtier by its token prefix and restored into another context or process.
 *
 * Built apart from the core (make llama LLAMA_DIR=DIR) and linked with
 * libllama and libkvtier. Every function returns 0 or a negative errno and
 * prints nothing, neither itself nor through llama.cpp's log. docs/llama.md
 * has the state format it reads and writes, and an integration walk-through
 * (client/llama_example.c).
 */
#ifndef KVTIER_LLAMA_H
#define KVTIER_LLAMA_H

#include <stdint.h>

#include <llama.h>

#include "kvtier.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Fill *out for kvt_connect from the model's geometry: n_layers, n_kv_heads,
 * head_dim (the key length; a model whose values have another length is
 * refused with -EOPNOTSUPP), dtype KVT_F16 (llama.cpp's default cache type;
 * set KVT_F32 or KVT_BF16 for contexts created with that type_k/type_v),
 * chunk_tokens 0. `name` identifies the weights (1..127 bytes; two models
 * with the same geometry but other weights need other names); out->name
 * points at it, so it must outlive the kvt_connect call. */
int kvt_llama_model(const struct llama_model *model, const char *name, kvt_model *out);

/* Store the KV of positions 0..n_tokens-1 of sequence `seq`, which must hold
 * `tokens` there (positions past n_tokens, if any, are not stored): one span
 * per layer, by token prefix, so any client of the same namespace finds it
 * with kvt_llama_restore or kvt_match_prefix. The context's model geometry
 * and cache type must be the connection's. Errors: -EINVAL (arguments, a
 * position of 0..n_tokens-1 missing or repeated, a model of another
 * geometry), -EOPNOTSUPP (a cache type or state layout it cannot map, e.g.
 * a quantized cache; nothing is stored), -ENOMEM, and kvt_store_tokens'. */
int kvt_llama_save(kvt_client *c, struct llama_context *ctx, llama_seq_id seq,
                   const llama_token *tokens, uint32_t n_tokens);

/* Find the longest stored prefix of `tokens` (kvt_match_prefix: also one
 * that ends inside a chunk), write its KV into sequence `seq`, which must be
 * empty, at positions 0..n-1, and set *n_restored = n, where n <= n_tokens-1
 * so that the caller always evaluates at least the last token (and gets its
 * logits): it then evaluates tokens[n..] only. Nothing matched: 0 and
 * *n_restored = 0. Errors change nothing in the context: -EINVAL (arguments,
 * `seq` not empty, a model of another geometry than the connection's),
 * -EOPNOTSUPP (a cache type or layout it cannot map, e.g. q8_0),
 * -ENOSPC (the context has no room for n cells), -ENOMEM, and
 * kvt_fetch_tokens' (-ENOENT when the prefix was evicted meanwhile).
 *
 * llama.cpp does not say whether an empty context keeps V transposed (flash
 * attention off) or which cache types it has: restore learns both by
 * writing one probe cell into `seq` and removing it again. llama.cpp logs
 * the refusal of a probe that does not fit; the call mutes llama.cpp's log
 * for its own thread meanwhile (the callback set with llama_log_set stays
 * in place for other threads; do not call llama_log_set concurrently). */
int kvt_llama_restore(kvt_client *c, struct llama_context *ctx, llama_seq_id seq,
                      const llama_token *tokens, uint32_t n_tokens, uint32_t *n_restored);

#ifdef __cplusplus
}
#endif

#endif
