/* chunk.c - chunk layout: shape bounds, row, scale, outlier and block sizes,
 * pointers into a data block. */
#include "chunk.h"

#include <string.h>

/* Element bytes of a shape's elem, or 0 for an unknown one. The lossless
 * numbering (0 = f32, 1 = f16, 2 = bf16) is kvt_elem's in simd/simd.h; it is
 * repeated here because cache/ must not depend on simd/. */
static size_t elem_bytes(uint32_t elem)
{
    switch (elem) {
    case 0: return 4;             /* f32 */
    case 1: return 2;             /* f16 */
    case 2: return 2;             /* bf16 */
    case KVT_CHUNK_INT8: return 1;
    default: return 0;
    }
}

bool chunk_shape_valid(const struct kvt_chunk_shape *s)
{
    if (s->tokens < 1 || s->tokens > KVT_CHUNK_MAX_TOKENS ||
        s->heads < 1 || s->heads > KVT_CHUNK_MAX_HEADS ||
        s->dim < 1 || s->dim > KVT_CHUNK_MAX_DIM || elem_bytes(s->elem) == 0)
        return false;
    if (s->elem != KVT_CHUNK_INT8)
        return s->outliers == 0;
    return s->outliers <= KVT_CHUNK_MAX_OUTLIERS && s->outliers <= s->dim;
}

/* Sizes are computed in size_t: with the shape bounds of chunk.h the largest
 * block (4096 tokens x 1024 heads x 1024 dim x 4 bytes x 2) is 32 GiB, which
 * fits a 64-bit size_t without overflow. */
size_t chunk_row_bytes(const struct kvt_chunk_shape *s)
{
    return (size_t)s->heads * s->dim * elem_bytes(s->elem);
}

size_t chunk_scale_row_bytes(const struct kvt_chunk_shape *s)
{
    return s->elem == KVT_CHUNK_INT8 ? (size_t)s->heads * sizeof(float) : 0;
}

size_t chunk_outlier_row_bytes(const struct kvt_chunk_shape *s)
{
    return s->elem == KVT_CHUNK_INT8 ? (size_t)s->heads * s->outliers * sizeof(uint16_t) : 0;
}

size_t chunk_data_bytes(const struct kvt_chunk_shape *s)
{
    return (size_t)s->tokens * 2 *
           (chunk_scale_row_bytes(s) + 2 * chunk_outlier_row_bytes(s) + chunk_row_bytes(s));
}

void chunk_view(const struct kvt_chunk_shape *s, void *data,
                struct kvt_chunk_view *out)
{
    uint8_t *p = data;
    size_t scales = (size_t)s->tokens * chunk_scale_row_bytes(s);
    size_t outl = (size_t)s->tokens * chunk_outlier_row_bytes(s);
    size_t values = (size_t)s->tokens * chunk_row_bytes(s);

    /* Scales first: heads * 4 bytes per token keeps them 4-byte aligned,
     * the 2-byte outlier arrays behind them stay aligned, and the int8
     * values start at an even offset. */
    out->k_scale = scales ? (float *)p : NULL;
    out->v_scale = scales ? (float *)(p + scales) : NULL;
    p += 2 * scales;
    out->k_out_idx = outl ? (uint16_t *)p : NULL;
    out->k_out_val = outl ? (uint16_t *)(p + outl) : NULL;
    out->v_out_idx = outl ? (uint16_t *)(p + 2 * outl) : NULL;
    out->v_out_val = outl ? (uint16_t *)(p + 3 * outl) : NULL;
    p += 4 * outl;
    out->k = p;
    out->v = p + values;
}

void chunk_copy_token(const struct kvt_chunk_shape *s, void *dst, const void *src,
                      uint32_t tok)
{
    struct kvt_chunk_view d, v;
    size_t row = chunk_row_bytes(s), srow = chunk_scale_row_bytes(s);
    size_t orow = chunk_outlier_row_bytes(s);

    chunk_view(s, dst, &d);
    chunk_view(s, (void *)src, &v);
    if (srow) {
        memcpy((uint8_t *)d.k_scale + tok * srow, (uint8_t *)v.k_scale + tok * srow, srow);
        memcpy((uint8_t *)d.v_scale + tok * srow, (uint8_t *)v.v_scale + tok * srow, srow);
    }
    if (orow) {
        memcpy((uint8_t *)d.k_out_idx + tok * orow, (uint8_t *)v.k_out_idx + tok * orow, orow);
        memcpy((uint8_t *)d.k_out_val + tok * orow, (uint8_t *)v.k_out_val + tok * orow, orow);
        memcpy((uint8_t *)d.v_out_idx + tok * orow, (uint8_t *)v.v_out_idx + tok * orow, orow);
        memcpy((uint8_t *)d.v_out_val + tok * orow, (uint8_t *)v.v_out_val + tok * orow, orow);
    }
    memcpy(d.k + tok * row, v.k + tok * row, row);
    memcpy(d.v + tok * row, v.v + tok * row, row);
}
