/* llama_state.c - llama.cpp's sequence state format: checked parse and build. */
#include "client/llama_state.h"

#include <errno.h>
#include <string.h>

/* A cursor over the state: every read is bounds-checked, and one failed read
 * fails the parse. */
struct reader {
    const uint8_t *p;
    size_t size, at;
    bool bad;
};

static uint64_t rd(struct reader *r, size_t bytes)
{
    uint64_t v = 0;

    if (r->bad || bytes > r->size - r->at) {
        r->bad = true;
        return 0;
    }
    for (size_t i = 0; i < bytes; i++)
        v |= (uint64_t)r->p[r->at + i] << (8 * i);
    r->at += bytes;
    return v;
}

static void skip(struct reader *r, size_t bytes)
{
    if (r->bad || bytes > r->size - r->at)
        r->bad = true;
    else
        r->at += bytes;
}

static void wr(uint8_t *p, size_t *at, uint64_t v, size_t bytes)
{
    for (size_t i = 0; i < bytes; i++)
        p[*at + i] = (uint8_t)(v >> (8 * i));
    *at += bytes;
}

size_t lstate_rows_bytes(const struct lstate_geom *g, uint32_t cells)
{
    return (size_t)cells * g->row_elems * g->elem_bytes;
}

int32_t lstate_pos(const uint8_t *st, const struct lstate_view *v, uint32_t i)
{
    struct reader r = { st + v->meta_off + (size_t)i * LSTATE_CELL_BYTES, 4, 0, false };
    return (int32_t)(uint32_t)rd(&r, 4);
}

/* One layer's header and rows, K or V, in the layout v_trans says. */
static bool layer_ok(struct reader *r, const struct lstate_geom *g, uint32_t cells,
                     bool transposed)
{
    const uint64_t row_bytes = (uint64_t)g->row_elems * g->elem_bytes;

    if ((int32_t)(uint32_t)rd(r, 4) != g->type)
        return false;
    if (transposed) {
        if (rd(r, 4) != g->elem_bytes || rd(r, 4) != g->row_elems)
            return false;
    } else if (rd(r, 8) != row_bytes) {
        return false;
    }
    skip(r, lstate_rows_bytes(g, cells));
    return !r->bad;
}

int lstate_parse(const uint8_t *st, size_t size, const struct lstate_geom *g,
                 int32_t seq, struct lstate_view *v)
{
    struct reader r = { st, size, 0, false };

    memset(v, 0, sizeof(*v));
    if (rd(&r, 4) != LSTATE_MAGIC || (int32_t)(uint32_t)rd(&r, 4) != seq)
        return -EOPNOTSUPP;
    v->n_stream = (uint32_t)rd(&r, 4);
    if (r.bad || v->n_stream == 0)
        return -EOPNOTSUPP;
    for (uint32_t s = 0; s < v->n_stream; s++) {
        uint32_t cells = (uint32_t)rd(&r, 4);
        if (r.bad)
            return -EOPNOTSUPP;
        if (cells == 0)
            continue;
        /* One sequence, one stream: cells in two streams is not a layout
         * this knows. The count bounds what follows by the state's size. */
        if (v->cells || cells > (r.size - r.at) / LSTATE_CELL_BYTES)
            return -EOPNOTSUPP;
        v->cells = cells;
        v->meta_off = r.at;
        for (uint32_t i = 0; i < cells; i++) {
            int32_t pos = (int32_t)(uint32_t)rd(&r, 4);
            if (pos < 0 || rd(&r, 4) != 1 || (int32_t)(uint32_t)rd(&r, 4) != seq)
                return -EOPNOTSUPP;
        }
        uint32_t trans = (uint32_t)rd(&r, 4);
        if (trans > 1 || rd(&r, 4) != g->layers)
            return -EOPNOTSUPP;
        v->v_trans = trans;
        v->layer_stride = LSTATE_LAYER_HEAD + lstate_rows_bytes(g, cells);
        v->k_off = r.at + LSTATE_LAYER_HEAD;
        for (uint32_t l = 0; l < g->layers; l++)
            if (!layer_ok(&r, g, cells, false))
                return -EOPNOTSUPP;
        v->v_off = r.at + LSTATE_LAYER_HEAD;
        for (uint32_t l = 0; l < g->layers; l++)
            if (!layer_ok(&r, g, cells, v->v_trans))
                return -EOPNOTSUPP;
    }
    /* Bytes left over: a section this does not know (a second cache). */
    return r.bad || r.at != r.size ? -EOPNOTSUPP : 0;
}

size_t lstate_size(const struct lstate_geom *g, uint32_t n_stream, uint32_t cells)
{
    const uint64_t rows = (uint64_t)cells * g->row_elems * g->elem_bytes;
    /* cells < 2^32 and a row < 2^22 bytes: no term overflows 64 bits. */
    uint64_t n = 12 + 4 * (uint64_t)n_stream + (uint64_t)cells * LSTATE_CELL_BYTES + 8 +
                 2 * (uint64_t)g->layers * (LSTATE_LAYER_HEAD + rows);
    return n > SIZE_MAX / 2 ? 0 : (size_t)n;
}

void lstate_build(uint8_t *st, const struct lstate_geom *g, uint32_t n_stream,
                  int32_t seq, uint32_t cells, bool v_trans, struct lstate_view *v)
{
    const size_t rows = lstate_rows_bytes(g, cells);
    size_t at = 0;

    wr(st, &at, LSTATE_MAGIC, 4);
    wr(st, &at, (uint32_t)seq, 4);
    wr(st, &at, n_stream, 4);
    wr(st, &at, cells, 4);
    *v = (struct lstate_view){ .n_stream = n_stream, .cells = cells, .v_trans = v_trans,
                               .meta_off = at, .layer_stride = LSTATE_LAYER_HEAD + rows };
    for (uint32_t i = 0; i < cells; i++) {
        wr(st, &at, i, 4);
        wr(st, &at, 1, 4);
        wr(st, &at, (uint32_t)seq, 4);
    }
    wr(st, &at, v_trans, 4);
    wr(st, &at, g->layers, 4);
    for (int kv = 0; kv < 2; kv++) {
        if (kv == 0)
            v->k_off = at + LSTATE_LAYER_HEAD;
        else
            v->v_off = at + LSTATE_LAYER_HEAD;
        for (uint32_t l = 0; l < g->layers; l++) {
            wr(st, &at, (uint32_t)g->type, 4);
            if (kv == 1 && v_trans) {
                wr(st, &at, g->elem_bytes, 4);
                wr(st, &at, g->row_elems, 4);
            } else {
                wr(st, &at, (uint64_t)g->row_elems * g->elem_bytes, 8);
            }
            memset(st + at, 0, rows);
            at += rows;
        }
    }
    for (uint32_t s = 1; s < n_stream; s++)
        wr(st, &at, 0, 4);
}

/* cell_of[p] = the state's cell holding position p, for p < n; -EINVAL if a
 * position is missing or held twice. Positions past n are left out. */
int lstate_cells_by_position(const uint8_t *st, const struct lstate_view *v, uint32_t n,
                             uint32_t *cell_of, bool *in_order)
{
    memset(cell_of, 0xff, (size_t)n * sizeof(*cell_of));
    for (uint32_t i = 0; i < v->cells; i++) {
        uint32_t pos = (uint32_t)lstate_pos(st, v, i);    /* >= 0: parse checked */
        if (pos >= n)
            continue;
        if (cell_of[pos] != UINT32_MAX)
            return -EINVAL;
        cell_of[pos] = i;
    }
    *in_order = true;
    for (uint32_t p = 0; p < n; p++) {
        if (cell_of[p] == UINT32_MAX)
            return -EINVAL;
        *in_order = *in_order && cell_of[p] == cell_of[0] + p;
    }
    return 0;
}

/* Point span l at layer l's rows for positions 0..n-1: in the state itself
 * when they lie there in order, else gathered into scratch. */
void lstate_spans(const uint8_t *st, const struct lstate_view *v, const struct lstate_geom *g,
                  const uint32_t *cell_of, bool in_order, uint32_t n, uint8_t *scratch,
                  kvt_span *spans)
{
    const size_t row = (size_t)g->row_elems * g->elem_bytes;

    for (uint32_t l = 0; l < g->layers; l++) {
        const uint8_t *k = st + v->k_off + l * v->layer_stride;
        const uint8_t *vv = st + v->v_off + l * v->layer_stride;
        uint8_t *k_out = scratch + (size_t)2 * l * n * row, *v_out = k_out + (size_t)n * row;
        spans[l] = (kvt_span){ .layer = l, .token_start = 0, .n_tokens = n };
        if (in_order) {
            spans[l].k = (void *)(k + (size_t)cell_of[0] * row);
        } else {
            for (uint32_t p = 0; p < n; p++)
                memcpy(k_out + (size_t)p * row, k + (size_t)cell_of[p] * row, row);
            spans[l].k = k_out;
        }
        if (v->v_trans) {
            lstate_untranspose(g, vv, v->cells, cell_of, n, v_out);
            spans[l].v = v_out;
        } else if (in_order) {
            spans[l].v = (void *)(vv + (size_t)cell_of[0] * row);
        } else {
            for (uint32_t p = 0; p < n; p++)
                memcpy(v_out + (size_t)p * row, vv + (size_t)cell_of[p] * row, row);
            spans[l].v = v_out;
        }
    }
}

/* Element copies by size, so the compiler moves 2 or 4 bytes at a time. */
#define ELEM_COPY(dst, di, src, si, e) do {                                      \
        if ((e) == 2)                                                            \
            memcpy((dst) + (size_t)(di) * 2, (src) + (size_t)(si) * 2, 2);       \
        else                                                                     \
            memcpy((dst) + (size_t)(di) * 4, (src) + (size_t)(si) * 4, 4);       \
    } while (0)

void lstate_untranspose(const struct lstate_geom *g, const uint8_t *block, uint32_t stride,
                        const uint32_t *cell_of, uint32_t n, uint8_t *rows)
{
    const uint32_t e = g->elem_bytes, w = g->row_elems;

    for (uint32_t j = 0; j < w; j++) {
        const uint8_t *src = block + (size_t)j * stride * e;
        for (uint32_t t = 0; t < n; t++)
            ELEM_COPY(rows, (size_t)t * w + j, src, cell_of ? cell_of[t] : t, e);
    }
}

void lstate_transpose(const struct lstate_geom *g, const uint8_t *rows, uint32_t n,
                      uint8_t *block)
{
    const uint32_t e = g->elem_bytes, w = g->row_elems;

    for (uint32_t j = 0; j < w; j++) {
        uint8_t *dst = block + (size_t)j * n * e;
        for (uint32_t t = 0; t < n; t++)
            ELEM_COPY(dst, t, rows, (size_t)t * w + j, e);
    }
}
