/* chunk.c - chunk layout: shape bounds, row, scale, outlier and block sizes,
 * pointers into a data block, presence bitmaps, merging and copying tokens.
 * Both tiers use these; neither repeats them. */
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

bool chunk_shape_compatible(const struct kvt_chunk_shape *a, const struct kvt_chunk_shape *b)
{
    return a->tokens == b->tokens && a->heads == b->heads && a->dim == b->dim &&
           a->elem == b->elem;
}

uint16_t chunk_outliers_for(const struct kvt_chunk_shape *s, uint32_t outliers)
{
    if (s->elem != KVT_CHUNK_INT8)
        return 0;
    if (outliers > KVT_CHUNK_MAX_OUTLIERS)
        outliers = KVT_CHUNK_MAX_OUTLIERS;
    return (uint16_t)(outliers < s->dim ? outliers : s->dim);
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

/* ---- presence bitmaps ------------------------------------------------------ */

size_t chunk_bitmap_bytes(uint32_t tokens)
{
    return ((size_t)tokens + 63) / 64 * sizeof(uint64_t);
}

bool chunk_bits_none(const uint64_t *present, uint32_t tokens)
{
    for (uint32_t w = 0; w < (tokens + 63) / 64; w++)
        if (present[w])
            return false;
    return true;
}

bool chunk_bits_range(const uint64_t *present, uint32_t tokens, uint32_t first, uint32_t n)
{
    uint32_t last, w, last_w;

    if (n == 0)
        return true;
    if (n > tokens || first > tokens - n)
        return false;
    last = first + n - 1;
    last_w = last / 64;
    for (w = first / 64; w <= last_w; w++) {
        uint64_t mask = ~UINT64_C(0);

        if (w == first / 64)
            mask &= ~UINT64_C(0) << (first % 64);
        if (w == last_w)
            mask &= ~UINT64_C(0) >> (63 - last % 64);
        if ((present[w] & mask) != mask)
            return false;
    }
    return true;
}

uint32_t chunk_bits_leading(const void *bitmap, uint32_t tokens)
{
    const uint8_t *b = bitmap;
    uint32_t n = 0;

    for (uint32_t w = 0; n < tokens; w++) {
        uint64_t word;
        memcpy(&word, b + (size_t)w * 8, 8);
        if (word != ~UINT64_C(0)) {
            n += (uint32_t)__builtin_ctzll(~word);
            break;
        }
        n += 64;
    }
    return n < tokens ? n : tokens;
}

/* ---- tokens between blocks -------------------------------------------------- */

uint32_t chunk_merge_image(const struct kvt_chunk_shape *s, void *dst, uint64_t *dst_present,
                           const struct kvt_chunk_image *img)
{
    uint32_t copied = 0;

    for (uint32_t tok = 0; tok < s->tokens; tok++) {
        if (chunk_bit_has(img->present, tok) && !chunk_bit_has(dst_present, tok)) {
            chunk_copy_token(s, dst, img->data, tok);
            chunk_bit_set(dst_present, tok);
            copied++;
        }
    }
    return copied;
}

void chunk_copy_present(const struct kvt_chunk_shape *s, void *dst, const void *src,
                        const uint64_t *present)
{
    memset(dst, 0, chunk_data_bytes(s));
    for (uint32_t tok = 0; tok < s->tokens; tok++)
        if (chunk_bit_has(present, tok))
            chunk_copy_token(s, dst, src, tok);
}
