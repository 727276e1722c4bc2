/* hot_util.h - what the hot tier's unit tests (test_hot_ops.c,
 * test_hot_stage.c) share: chunk shapes and keys, and a row-writing
 * callback. Header-only: the unit tests link no shared test code. */
#ifndef KVT_TEST_HOT_UTIL_H
#define KVT_TEST_HOT_UTIL_H

#include <string.h>

#include "cache/hot_int.h"

static const struct kvt_chunk_shape shape4 = { 64, 2, 8, KVT_CHUNK_INT8, 4 };
static const struct kvt_chunk_shape shape0 = { 64, 2, 8, KVT_CHUNK_INT8, 0 };
/* Blocks this big are pooled when freed, and handed to the next chunk of
 * their size. */
static const struct kvt_chunk_shape big4 = { 64, 32, 64, KVT_CHUNK_INT8, 4 };

static inline struct kvt_chunk_key key_of(uint32_t idx)
{
    return (struct kvt_chunk_key){ .ns_id = 7, .obj_hi = 1, .obj_lo = 2, .domain = 1,
                                   .chunk_idx = idx };
}

struct rows {
    uint32_t tok, n;
    uint8_t byte;
    int rc;                         /* what write_rows returns */
    struct kvt_chunk_shape seen;    /* the shape write_rows was given */
    int calls;
};

/* hot_rows_fn: writes `byte` into the K rows of [tok, tok + n) (n = 0:
 * every token), then returns rc (so a failure comes after writing). */
static inline int write_rows(void *arg, const struct kvt_chunk_shape *s, void *data)
{
    struct rows *r = arg;
    struct kvt_chunk_view cv;
    uint32_t n = r->n ? r->n : s->tokens;

    chunk_view(s, data, &cv);
    memset(cv.k + (size_t)r->tok * chunk_row_bytes(s), r->byte, (size_t)n * chunk_row_bytes(s));
    r->seen = *s;
    r->calls++;
    return r->rc;
}

#endif
