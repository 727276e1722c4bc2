/* test_llama_state.c - proves the llama.cpp state parser checks every field
 * it reads: a state it builds parses back to the same layout (both V
 * layouts, several streams); a change to any checked field (magic, sequence
 * id, stream count, cell count, a cell's position, sequence count or id,
 * the V layout flag, the layer count, any layer's type, row size, element
 * size or width), a truncation at any byte, or a byte too many is refused
 * with -EOPNOTSUPP; V transposes there and back exactly; cells holding
 * positions out of order give spans in position order. No llama.cpp
 * needed: the format is plain bytes (client/llama_state.h). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "client/llama_state.h"

static const struct lstate_geom G = { .layers = 3, .row_elems = 8, .elem_bytes = 2, .type = 1 };
#define SEQ 2
#define CELLS 5
#define STREAMS 3

static uint8_t *built(bool v_trans, size_t *size, struct lstate_view *v)
{
    *size = lstate_size(&G, STREAMS, CELLS);
    uint8_t *st = malloc(*size);
    assert_non_null(st);
    lstate_build(st, &G, STREAMS, SEQ, CELLS, v_trans, v);
    return st;
}

static void put32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static void built_state_parses_back(void **state)
{
    (void)state;
    for (int trans = 0; trans < 2; trans++) {
        struct lstate_view b, p;
        size_t size;
        uint8_t *st = built(trans, &size, &b);
        assert_int_equal(lstate_parse(st, size, &G, SEQ, &p), 0);
        assert_int_equal(p.n_stream, STREAMS);
        assert_int_equal(p.cells, CELLS);
        assert_int_equal(p.v_trans, trans);
        assert_int_equal(p.k_off, b.k_off);
        assert_int_equal(p.v_off, b.v_off);
        assert_int_equal(p.layer_stride, b.layer_stride);
        for (uint32_t i = 0; i < CELLS; i++)
            assert_int_equal(lstate_pos(st, &p, i), (int32_t)i);
        /* The last layer's V rows end where the empty streams' counts start. */
        assert_int_equal(p.v_off + 2 * p.layer_stride + lstate_rows_bytes(&G, CELLS),
                         size - 4 * (STREAMS - 1));
        assert_int_equal(lstate_parse(st, size, &G, SEQ + 1, &p), -EOPNOTSUPP);
        free(st);
    }
}

/* Every 4-byte field of the metadata and every layer header, changed. */
static void any_changed_field_is_refused(void **state)
{
    (void)state;
    for (int trans = 0; trans < 2; trans++) {
        struct lstate_view v, p;
        size_t size;
        uint8_t *st = built(trans, &size, &v);
        size_t fields[64], n = 0;
        fields[n++] = 0;                                   /* magic */
        fields[n++] = 4;                                   /* seq id */
        fields[n++] = 8;                                   /* n_stream */
        fields[n++] = 12;                                  /* cell count */
        for (uint32_t i = 0; i < CELLS; i++) {
            size_t cell = v.meta_off + (size_t)i * LSTATE_CELL_BYTES;
            fields[n++] = cell + 4;                        /* n_seq_id */
            fields[n++] = cell + 8;                        /* seq id */
        }
        fields[n++] = v.meta_off + CELLS * LSTATE_CELL_BYTES;        /* v_trans */
        fields[n++] = v.meta_off + CELLS * LSTATE_CELL_BYTES + 4;    /* n_layer */
        for (uint32_t l = 0; l < G.layers; l++) {
            size_t k = v.k_off - LSTATE_LAYER_HEAD + l * v.layer_stride;
            size_t vv = v.v_off - LSTATE_LAYER_HEAD + l * v.layer_stride;
            fields[n++] = k;                               /* K type */
            fields[n++] = k + 4;                           /* K row bytes (low half) */
            fields[n++] = vv;                              /* V type */
            fields[n++] = vv + 4;                          /* V row bytes / elem bytes */
            if (trans)
                fields[n++] = vv + 8;                      /* V width */
        }
        for (size_t f = 0; f < n; f++) {
            uint8_t keep[4];
            memcpy(keep, st + fields[f], 4);
            for (uint32_t delta = 1; delta <= 2; delta++) {
                uint32_t was = (uint32_t)keep[0] | (uint32_t)keep[1] << 8 |
                               (uint32_t)keep[2] << 16 | (uint32_t)keep[3] << 24;
                put32(st + fields[f], was + delta);
                if (lstate_parse(st, size, &G, SEQ, &p) != -EOPNOTSUPP)
                    fail_msg("trans %d: field at %zu + %u accepted", trans, fields[f], delta);
            }
            memcpy(st + fields[f], keep, 4);
        }
        /* A negative position; a sequence in two streams. */
        put32(st + v.meta_off, 0xffffffffu);
        assert_int_equal(lstate_parse(st, size, &G, SEQ, &p), -EOPNOTSUPP);
        put32(st + v.meta_off, 0);
        put32(st + size - 4, 1);
        assert_int_equal(lstate_parse(st, size, &G, SEQ, &p), -EOPNOTSUPP);
        put32(st + size - 4, 0);
        assert_int_equal(lstate_parse(st, size, &G, SEQ, &p), 0);
        free(st);
    }
}

static void truncated_or_longer_is_refused(void **state)
{
    (void)state;
    struct lstate_view v, p;
    size_t size;
    uint8_t *st = built(false, &size, &v);
    uint8_t *longer = calloc(1, size + 1);

    for (size_t n = 0; n < size; n++)
        if (lstate_parse(st, n, &G, SEQ, &p) != -EOPNOTSUPP)
            fail_msg("a state cut at %zu of %zu bytes was accepted", n, size);
    memcpy(longer, st, size);
    assert_int_equal(lstate_parse(longer, size + 1, &G, SEQ, &p), -EOPNOTSUPP);
    /* Another geometry than the state's. */
    struct lstate_geom g = G;
    g.row_elems = 16;
    assert_int_equal(lstate_parse(st, size, &g, SEQ, &p), -EOPNOTSUPP);
    g = G;
    g.layers = 2;
    assert_int_equal(lstate_parse(st, size, &g, SEQ, &p), -EOPNOTSUPP);
    free(longer);
    free(st);
}

static void empty_sequence_parses(void **state)
{
    (void)state;
    uint8_t st[12 + 4 * STREAMS] = { 0 };
    struct lstate_view p;

    put32(st, LSTATE_MAGIC);
    put32(st + 4, SEQ);
    put32(st + 8, STREAMS);
    assert_int_equal(lstate_parse(st, sizeof(st), &G, SEQ, &p), 0);
    assert_int_equal(p.cells, 0);
    assert_int_equal(p.n_stream, STREAMS);
    put32(st + 8, 0);
    assert_int_equal(lstate_parse(st, sizeof(st), &G, SEQ, &p), -EOPNOTSUPP);
}

static void v_transposes_both_ways(void **state)
{
    (void)state;
    const uint32_t n = 7, w = G.row_elems;
    uint16_t rows[7 * 8], block[8 * 7], back[7 * 8], picked[3 * 8];
    const uint32_t cell_of[3] = { 4, 0, 6 };

    for (uint32_t i = 0; i < n * w; i++)
        rows[i] = (uint16_t)(i * 37 + 1);
    lstate_transpose(&G, (const uint8_t *)rows, n, (uint8_t *)block);
    for (uint32_t t = 0; t < n; t++)
        for (uint32_t j = 0; j < w; j++)
            assert_int_equal(block[j * n + t], rows[t * w + j]);
    lstate_untranspose(&G, (const uint8_t *)block, n, NULL, n, (uint8_t *)back);
    assert_memory_equal(back, rows, sizeof(rows));
    lstate_untranspose(&G, (const uint8_t *)block, n, cell_of, 3, (uint8_t *)picked);
    for (uint32_t t = 0; t < 3; t++)
        assert_memory_equal(picked + t * w, rows + cell_of[t] * w, w * sizeof(uint16_t));
}

/* Rows of cell c, layer l, K (kv 0) or V: a value that names them. */
static uint16_t mark(uint32_t l, int kv, uint32_t cell, uint32_t j)
{
    return (uint16_t)(l << 12 | (uint32_t)kv << 11 | cell << 4 | j);
}

/* A saved sequence whose cells hold positions out of order (cells 0..4 hold
 * positions 3 1 4 0 2): the spans get each position's rows, K and V, in
 * both V layouts; a repeated or missing position is -EINVAL. */
static void spans_follow_positions(void **state)
{
    (void)state;
    const int32_t pos_of_cell[CELLS] = { 3, 1, 4, 0, 2 };
    for (int trans = 0; trans < 2; trans++) {
        struct lstate_view v, p;
        size_t size;
        uint8_t *st = built(trans, &size, &v);
        for (uint32_t i = 0; i < CELLS; i++)
            put32(st + v.meta_off + (size_t)i * LSTATE_CELL_BYTES, (uint32_t)pos_of_cell[i]);
        for (uint32_t l = 0; l < G.layers; l++)
            for (uint32_t c = 0; c < CELLS; c++)
                for (uint32_t j = 0; j < G.row_elems; j++) {
                    uint16_t *k = (uint16_t *)(st + v.k_off + l * v.layer_stride);
                    uint16_t *vv = (uint16_t *)(st + v.v_off + l * v.layer_stride);
                    k[c * G.row_elems + j] = mark(l, 0, c, j);
                    vv[trans ? j * CELLS + c : c * G.row_elems + j] = mark(l, 1, c, j);
                }
        assert_int_equal(lstate_parse(st, size, &G, SEQ, &p), 0);

        uint32_t cell_of[CELLS];
        bool in_order = true;
        assert_int_equal(lstate_cells_by_position(st, &p, CELLS, cell_of, &in_order), 0);
        assert_false(in_order);
        uint8_t *scratch = malloc(2 * G.layers * lstate_rows_bytes(&G, CELLS));
        kvt_span spans[3];
        lstate_spans(st, &p, &G, cell_of, in_order, CELLS, scratch, spans);
        for (uint32_t l = 0; l < G.layers; l++) {
            assert_int_equal(spans[l].layer, l);
            assert_int_equal(spans[l].n_tokens, CELLS);
            for (uint32_t t = 0; t < CELLS; t++)
                for (uint32_t j = 0; j < G.row_elems; j++) {
                    uint32_t cell = cell_of[t];
                    assert_int_equal(pos_of_cell[cell], (int32_t)t);
                    assert_int_equal(((uint16_t *)spans[l].k)[t * G.row_elems + j], mark(l, 0, cell, j));
                    assert_int_equal(((uint16_t *)spans[l].v)[t * G.row_elems + j], mark(l, 1, cell, j));
                }
        }
        /* The first 3 positions only: cells 3, 1, 4. */
        assert_int_equal(lstate_cells_by_position(st, &p, 3, cell_of, &in_order), 0);
        assert_int_equal(cell_of[0], 3);
        assert_int_equal(cell_of[2], 4);
        put32(st + v.meta_off, 0);                 /* position 0 twice, 3 gone */
        assert_int_equal(lstate_cells_by_position(st, &p, CELLS, cell_of, &in_order), -EINVAL);
        free(scratch);
        free(st);
    }
    /* In order and untransposed: the spans point into the state itself. */
    struct lstate_view v, p;
    size_t size;
    uint8_t *st = built(false, &size, &v);
    uint32_t cell_of[CELLS];
    bool in_order = false;
    kvt_span spans[3];
    assert_int_equal(lstate_parse(st, size, &G, SEQ, &p), 0);
    assert_int_equal(lstate_cells_by_position(st, &p, CELLS, cell_of, &in_order), 0);
    assert_true(in_order);
    lstate_spans(st, &p, &G, cell_of, in_order, CELLS, NULL, spans);
    assert_ptr_equal(spans[1].k, st + p.k_off + p.layer_stride);
    assert_ptr_equal(spans[2].v, st + p.v_off + 2 * p.layer_stride);
    free(st);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(built_state_parses_back),
        cmocka_unit_test(any_changed_field_is_refused),
        cmocka_unit_test(truncated_or_longer_is_refused),
        cmocka_unit_test(empty_sequence_parses),
        cmocka_unit_test(v_transposes_both_ways),
        cmocka_unit_test(spans_follow_positions),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
