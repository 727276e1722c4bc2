/* chunk.c - chunk layout: row, scale and block sizes and pointers into a data block. */
#include "chunk.h"

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

size_t chunk_data_bytes(const struct kvt_chunk_shape *s)
{
    return (size_t)s->tokens * 2 * (chunk_scale_row_bytes(s) + chunk_row_bytes(s));
}

void chunk_view(const struct kvt_chunk_shape *s, void *data,
                struct kvt_chunk_view *out)
{
    uint8_t *p = data;
    size_t scales = (size_t)s->tokens * chunk_scale_row_bytes(s);
    size_t values = (size_t)s->tokens * chunk_row_bytes(s);

    /* Scales first: heads * 4 bytes per token keeps them 4-byte aligned and
     * the int8 values behind them start at a multiple of 4 as well. */
    out->k_scale = scales ? (float *)p : NULL;
    out->v_scale = scales ? (float *)(p + scales) : NULL;
    out->k = p + 2 * scales;
    out->v = p + 2 * scales + values;
}
