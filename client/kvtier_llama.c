/* kvtier_llama.c - libkvtier-llama: llama.cpp sequence state <-> kvtier spans.
 *
 * Save reads the sequence's state (llama_state_seq_get_data), checks every
 * field (client/llama_state.h) and stores one span per layer by token
 * prefix; restore fetches the longest stored prefix straight into a state it
 * builds and hands it to llama_state_seq_set_data. Where the state can, it
 * lives in memory shared with the daemon (kvt_alloc), so the K and V rows
 * cross into and out of kvtier with no copy of ours; transposed V (flash
 * attention off) and cells out of position order go through a scratch copy.
 */
#include "client/kvtier_llama.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client/llama_state.h"

#define GGML_F32_ID  0      /* ggml_type ids as llama.cpp writes them */
#define GGML_F16_ID  1
#define GGML_BF16_ID 30

/* ---- buffers: shared with the daemon when there is room, else heap -------- */

struct buf {
    uint8_t *p;
    bool shared;
};

static int buf_get(kvt_client *c, struct buf *b, size_t bytes)
{
    b->p = kvt_alloc(c, bytes ? bytes : 1);
    b->shared = b->p != NULL;
    if (!b->p)
        b->p = malloc(bytes ? bytes : 1);
    return b->p ? 0 : -ENOMEM;
}

static void buf_put(kvt_client *c, struct buf *b)
{
    if (b->shared)
        kvt_free(c, b->p);
    else
        free(b->p);
    b->p = NULL;
}

/* ---- geometry ---------------------------------------------------------------- */

/* A GGUF key of the model's architecture, e.g. "llama.attention.key_length". */
static long arch_u32(const struct llama_model *model, const char *suffix)
{
    char arch[64], key[128], val[32];
    char *end;

    if (llama_model_meta_val_str(model, "general.architecture", arch, sizeof(arch)) < 0)
        return -1;
    snprintf(key, sizeof(key), "%s.%s", arch, suffix);
    if (llama_model_meta_val_str(model, key, val, sizeof(val)) < 0)
        return -1;
    long v = strtol(val, &end, 10);
    return *end || v < 1 ? -1 : v;
}

int kvt_llama_model(const struct llama_model *model, const char *name, kvt_model *out)
{
    if (!model || !name || !out)
        return -EINVAL;
    int32_t layers = llama_model_n_layer(model), heads = llama_model_n_head(model);
    int32_t kv_heads = llama_model_n_head_kv(model), embd = llama_model_n_embd(model);
    if (layers < 1 || heads < 1 || kv_heads < 1 || embd < 1)
        return -EOPNOTSUPP;
    /* llama.cpp's default head size is n_embd / n_head; models that differ
     * say so in key_length (and value_length, which kvtier needs equal). */
    long k_len = arch_u32(model, "attention.key_length");
    long v_len = arch_u32(model, "attention.value_length");
    long dim = k_len > 0 ? k_len : embd / heads;
    if ((v_len > 0 ? v_len : dim) != dim || dim < 1)
        return -EOPNOTSUPP;
    *out = (kvt_model){ .name = name, .n_layers = (uint32_t)layers,
                        .n_kv_heads = (uint32_t)kv_heads, .head_dim = (uint32_t)dim,
                        .dtype = KVT_F16, .chunk_tokens = 0 };
    return 0;
}

/* The layout a state of ctx must have for connection c: the context's model
 * must have the connection's geometry, and its cache the client's dtype. */
static int geom_of(kvt_client *c, struct llama_context *ctx, llama_seq_id seq,
                   struct lstate_geom *g)
{
    kvt_model conn, here;
    int rc = kvt_client_model(c, &conn);

    if (rc)
        return rc;
    if (seq < 0 || (uint32_t)seq >= llama_n_seq_max(ctx))
        return -EINVAL;
    rc = kvt_llama_model(llama_get_model(ctx), conn.name, &here);
    if (rc)
        return rc;
    if (here.n_layers != conn.n_layers || here.n_kv_heads != conn.n_kv_heads ||
        here.head_dim != conn.head_dim)
        return -EINVAL;
    static const struct { int32_t type; uint32_t bytes; } types[] = {
        [KVT_F32] = { GGML_F32_ID, 4 }, [KVT_F16] = { GGML_F16_ID, 2 },
        [KVT_BF16] = { GGML_BF16_ID, 2 },
    };
    *g = (struct lstate_geom){ .layers = conn.n_layers,
                               .row_elems = conn.n_kv_heads * conn.head_dim,
                               .elem_bytes = types[conn.dtype].bytes,
                               .type = types[conn.dtype].type };
    return 0;
}

/* ---- save ------------------------------------------------------------------- */

int kvt_llama_save(kvt_client *c, struct llama_context *ctx, llama_seq_id seq,
                   const llama_token *tokens, uint32_t n_tokens)
{
    struct lstate_geom g;
    struct lstate_view v;
    struct buf st = { 0 }, scratch = { 0 };
    uint32_t *cell_of = NULL;
    kvt_span *spans = NULL;
    bool in_order;
    int rc;

    if (!c || !ctx || !tokens || n_tokens == 0)
        return -EINVAL;
    rc = geom_of(c, ctx, seq, &g);
    if (rc)
        return rc;
    size_t size = llama_state_seq_get_size(ctx, seq);
    if (size == 0)
        return -EOPNOTSUPP;
    rc = buf_get(c, &st, size);
    if (rc)
        goto out;
    if (llama_state_seq_get_data(ctx, st.p, size, seq) != size) {
        rc = -EOPNOTSUPP;
        goto out;
    }
    rc = lstate_parse(st.p, size, &g, seq, &v);
    if (rc)
        goto out;
    if (v.cells < n_tokens) {
        rc = -EINVAL;             /* the sequence is shorter than the tokens */
        goto out;
    }
    cell_of = malloc((size_t)n_tokens * sizeof(*cell_of));
    spans = calloc(g.layers, sizeof(*spans));
    if (!cell_of || !spans) {
        rc = -ENOMEM;
        goto out;
    }
    rc = lstate_cells_by_position(st.p, &v, n_tokens, cell_of, &in_order);
    if (rc)
        goto out;
    if (!in_order || v.v_trans) {
        rc = buf_get(c, &scratch, 2 * g.layers * lstate_rows_bytes(&g, n_tokens));
        if (rc)
            goto out;
    }
    lstate_spans(st.p, &v, &g, cell_of, in_order, n_tokens, scratch.p, spans);
    rc = kvt_store_tokens(c, tokens, n_tokens, spans, g.layers);
out:
    free(spans);
    free(cell_of);
    if (scratch.p)
        buf_put(c, &scratch);
    if (st.p)
        buf_put(c, &st);
    return rc;
}

/* ---- restore ---------------------------------------------------------------- */

/* llama.cpp logs every refused state; a probe expects refusals. While one is
 * set, this thread's messages are dropped and other threads' go on to the
 * callback that was set. The lock keeps two probing threads from saving
 * each other's muting callback as "the one that was set". */
struct quiet_log {
    ggml_log_callback prev;
    void *prev_data;
    pthread_t thread;
};

static pthread_mutex_t quiet_lock = PTHREAD_MUTEX_INITIALIZER;

static void quiet_log_cb(enum ggml_log_level level, const char *text, void *data)
{
    struct quiet_log *q = data;

    if (!pthread_equal(pthread_self(), q->thread) && q->prev)
        q->prev(level, text, q->prev_data);
}

static bool set_state_quietly(struct llama_context *ctx, const uint8_t *st, size_t size,
                              llama_seq_id seq)
{
    struct quiet_log q = { .thread = pthread_self() };

    pthread_mutex_lock(&quiet_lock);
    llama_log_get(&q.prev, &q.prev_data);
    llama_log_set(quiet_log_cb, &q);
    size_t got = llama_state_seq_set_data(ctx, st, size, seq);
    llama_log_set(q.prev, q.prev_data);
    pthread_mutex_unlock(&quiet_lock);
    return got == size;
}

/* The stream count of ctx, from the state of the empty sequence seq. */
static int stream_count(kvt_client *c, struct llama_context *ctx, llama_seq_id seq,
                        const struct lstate_geom *g, uint32_t *n_stream)
{
    struct lstate_view v = { 0 };
    struct buf st = { 0 };
    size_t size = llama_state_seq_get_size(ctx, seq);
    int rc = size ? buf_get(c, &st, size) : -EOPNOTSUPP;

    if (rc)
        return rc;
    rc = llama_state_seq_get_data(ctx, st.p, size, seq) == size
       ? lstate_parse(st.p, size, g, seq, &v) : -EOPNOTSUPP;
    if (rc == 0 && v.cells)
        rc = -EINVAL;
    *n_stream = v.n_stream;
    buf_put(c, &st);
    return rc;
}

/* Whether the empty context keeps V transposed, and that its cache types are
 * g's: llama.cpp says neither, but it takes a one-cell state only in its own
 * layout. The cell it takes is removed at once; a refusal changes nothing. */
static int probe_layout(struct llama_context *ctx, llama_seq_id seq,
                        const struct lstate_geom *g, uint32_t n_stream, bool *v_trans)
{
    struct lstate_view v;
    size_t size = lstate_size(g, n_stream, 1);
    uint8_t *st = size ? malloc(size) : NULL;
    int rc = -EOPNOTSUPP;

    if (!st)
        return -ENOMEM;
    for (int trans = 0; trans < 2 && rc; trans++) {
        lstate_build(st, g, n_stream, seq, 1, trans, &v);
        if (set_state_quietly(ctx, st, size, seq)) {
            llama_memory_seq_rm(llama_get_memory(ctx), seq, -1, -1);
            *v_trans = trans;
            rc = 0;
        }
    }
    free(st);
    return rc;
}

int kvt_llama_restore(kvt_client *c, struct llama_context *ctx, llama_seq_id seq,
                      const llama_token *tokens, uint32_t n_tokens, uint32_t *n_restored)
{
    struct lstate_geom g;
    struct lstate_view v;
    struct buf st = { 0 }, scratch = { 0 };
    kvt_span *spans = NULL;
    uint32_t n_stream, matched = 0;
    bool v_trans;
    int rc;

    if (!c || !ctx || !tokens || n_tokens == 0 || !n_restored)
        return -EINVAL;
    *n_restored = 0;
    rc = geom_of(c, ctx, seq, &g);
    if (rc)
        return rc;
    if (!llama_get_memory(ctx))
        return -EOPNOTSUPP;
    if (llama_memory_seq_pos_max(llama_get_memory(ctx), seq) != -1)
        return -EINVAL;
    rc = stream_count(c, ctx, seq, &g, &n_stream);
    if (rc == 0)
        rc = probe_layout(ctx, seq, &g, n_stream, &v_trans);
    if (rc == 0)
        rc = kvt_match_prefix(c, tokens, n_tokens, &matched);
    if (rc)
        return rc;
    /* The last token is always left to the caller: its logits come from
     * evaluating it. */
    uint32_t n = matched < n_tokens ? matched : n_tokens - 1;
    if (n == 0)
        return 0;

    size_t size = lstate_size(&g, n_stream, n);
    rc = size ? buf_get(c, &st, size) : -E2BIG;
    if (rc)
        goto out;
    spans = calloc(g.layers, sizeof(*spans));
    if (!spans) {
        rc = -ENOMEM;
        goto out;
    }
    if (v_trans) {
        rc = buf_get(c, &scratch, g.layers * lstate_rows_bytes(&g, n));
        if (rc)
            goto out;
    }
    lstate_build(st.p, &g, n_stream, seq, n, v_trans, &v);
    for (uint32_t l = 0; l < g.layers; l++) {
        uint8_t *v_rows = v_trans ? scratch.p + l * lstate_rows_bytes(&g, n)
                                  : st.p + v.v_off + l * v.layer_stride;
        spans[l] = (kvt_span){ .layer = l, .token_start = 0, .n_tokens = n,
                               .k = st.p + v.k_off + l * v.layer_stride, .v = v_rows };
    }
    /* The keys of the stored call: the match may end inside a chunk. */
    rc = kvt_fetch_tokens(c, tokens, matched, spans, g.layers);
    if (rc)
        goto out;
    for (uint32_t l = 0; v_trans && l < g.layers; l++)
        lstate_transpose(&g, spans[l].v, n, st.p + v.v_off + l * v.layer_stride);
    if (!set_state_quietly(ctx, st.p, size, seq)) {
        /* The probe took this layout: what is left is room for n cells. */
        llama_memory_seq_rm(llama_get_memory(ctx), seq, -1, -1);
        rc = -ENOSPC;
        goto out;
    }
    *n_restored = n;
out:
    free(spans);
    if (scratch.p)
        buf_put(c, &scratch);
    if (st.p)
        buf_put(c, &st);
    return rc;
}
