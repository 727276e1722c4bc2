/* llama_example.c - how a llama.cpp program keeps its prompts' KV in kvtier.
 *
 * Evaluate a prompt once, in any process on this host; every later request
 * that starts with it (this process, another one, after a restart of
 * either) restores the KV instead of evaluating it again, and evaluates
 * only what follows.
 *
 *   make llama LLAMA_DIR=/path/to/llama.cpp      (builds this as build/llama_example)
 *   build/kvtierd --dev &
 *   KVTIER_SOCKET=var/kvtier.sock build/llama_example model.gguf "some prompt"
 *
 * Run it twice: the second run restores the prompt. docs/llama.md says more.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kvtier_llama.h"

static void quiet(enum ggml_log_level level, const char *text, void *data)
{
    (void)data;
    if (level == GGML_LOG_LEVEL_ERROR)
        fputs(text, stderr);
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: %s MODEL.gguf PROMPT\n", argv[0]);
        return 2;
    }
    llama_log_set(quiet, NULL);
    llama_backend_init();
    struct llama_model *model =
        llama_model_load_from_file(argv[1], llama_model_default_params());
    if (!model)
        return 1;
    struct llama_context_params cp = llama_context_default_params();
    cp.n_ctx = 4096;
    cp.n_batch = 4096;
    struct llama_context *ctx = llama_init_from_model(model, cp);
    if (!ctx)
        return 1;

    /* 1. One connection per process, with the model's geometry. The name
     *    must identify the weights: KV of other weights is not interchangeable. */
    kvt_model km;
    kvt_client *c;
    int rc = kvt_llama_model(model, "my-model-q4", &km);
    if (rc == 0)
        rc = kvt_connect(NULL, &km, &c);      /* NULL: $KVTIER_SOCKET */
    if (rc) {
        fprintf(stderr, "kvtier: %s\n", kvt_strerror(rc));
        return 1;
    }

    const struct llama_vocab *vocab = llama_model_get_vocab(model);
    llama_token tokens[4096];
    int n = llama_tokenize(vocab, argv[2], (int32_t)strlen(argv[2]), tokens, 4096, true, false);
    if (n <= 0)
        return 1;

    /* 2. Before evaluating a request, restore what kvtier holds of it into
     *    the (empty) sequence. n_restored < n always: the last token is
     *    evaluated, so its logits are there to sample from. */
    uint32_t n_restored = 0;
    rc = kvt_llama_restore(c, ctx, 0, tokens, (uint32_t)n, &n_restored);
    if (rc)      /* not fatal: evaluate everything, as without kvtier */
        fprintf(stderr, "restore: %s (%s)\n", kvt_strerror(rc), kvt_last_error(c));

    /* 3. Evaluate only tokens[n_restored..]. */
    struct llama_batch batch = llama_batch_get_one(tokens + n_restored, n - (int)n_restored);
    if (llama_decode(ctx, batch))
        return 1;

    /* 4. Save the prompt for the next request and the next process. Saving
     *    what is already stored costs a store (it overwrites), so a server
     *    saves when it evaluated more than it restored. */
    if (n_restored < (uint32_t)n) {
        rc = kvt_llama_save(c, ctx, 0, tokens, (uint32_t)n);
        if (rc)
            fprintf(stderr, "save: %s\n", kvt_strerror(rc));
    }
    printf("%d prompt tokens: %u restored from kvtier, %u evaluated\n", n, n_restored,
           (unsigned)n - n_restored);

    /* ... sample from llama_get_logits_ith(ctx, -1) and go on decoding ... */

    kvt_disconnect(c);
    llama_free(ctx);
    llama_model_free(model);
    return 0;
}
