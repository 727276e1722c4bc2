/* avx2.c - AVX2 + F16C backend (no FMA): the hot path, meant to run near memcpy speed. */
#include "avx2_common.h"

/* ---- eight elements <-> eight f32 lanes (load8 is in avx2_common.h) ------- */

/* simd_f32_to_bf16 on eight lanes. */
KERNEL __m128i f32x8_to_bf16(__m256 x)
{
    const __m256i u = _mm256_castps_si256(x);
    __m256i odd = _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1));
    __m256i rounded = _mm256_srli_epi32(
        _mm256_add_epi32(_mm256_add_epi32(u, _mm256_set1_epi32(0x7fff)), odd), 16);
    __m256i is_nan = _mm256_cmpgt_epi32(_mm256_and_si256(u, _mm256_set1_epi32(0x7fffffff)),
                                        _mm256_set1_epi32(0x7f800000));
    __m256i quiet = _mm256_or_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(0x40));
    __m256i r = _mm256_blendv_epi8(rounded, quiet, is_nan);

    /* Every lane is <= 0xffff, so the unsigned saturating pack is exact. */
    return _mm_packus_epi32(_mm256_castsi256_si128(r), _mm256_extracti128_si256(r, 1));
}

KERNEL void store8(void *dst, enum kvt_elem elem, size_t i, __m256 x)
{
    unsigned char *p = dst;

    switch (elem) {
    case KVT_ELEM_F16:
        _mm_storeu_si128((__m128i *)(p + i * 2), _mm256_cvtps_ph(x, F16_RNE));
        return;
    case KVT_ELEM_BF16:
        _mm_storeu_si128((__m128i *)(p + i * 2), f32x8_to_bf16(x));
        return;
    case KVT_ELEM_F32:
        break;
    }
    _mm256_storeu_ps((float *)(p + i * 4), x);
}

/* ---- quantize ----------------------------------------------------------------
 * Groups go in blocks of eight. The first pass leaves each group's maxima
 * as a vector of partials; the eight are reduced together and one pair of
 * divps gives eight scales and invs (the same IEEE divisions as scalar).
 * Done per group, the horizontal reduction and two divss sat on each
 * group's critical path: dim-128 f16 ran about a quarter slower. */

#define BLOCK 8

/* Partial maxima of the group's sign-cleared bit patterns (see kernels.h):
 * sixteen u16 lanes for f16 and bf16, compared as integers without
 * converting, or eight u32 lanes for f32. */
KERNEL __m256i group_abs_max(const void *src, enum kvt_elem elem, size_t dim)
{
    const unsigned char *p = src;
    __m256i acc = _mm256_setzero_si256();
    size_t i = 0;

    if (elem == KVT_ELEM_F32) {
        const __m256i abs_mask = _mm256_set1_epi32(0x7fffffff);
        uint32_t tail = 0, u;

        for (; i + 8 <= dim; i += 8)
            acc = _mm256_max_epu32(acc, _mm256_and_si256(abs_mask,
                        _mm256_loadu_si256((const __m256i *)(p + i * 4))));
        for (; i < dim; i++) {
            memcpy(&u, p + i * 4, 4);
            u &= 0x7fffffff;
            tail = u > tail ? u : tail;
        }
        return _mm256_max_epu32(acc, _mm256_set1_epi32((int)tail));
    }

    const __m256i abs_mask = _mm256_set1_epi16(0x7fff);
    uint16_t tail = 0, h;

    for (; i + 16 <= dim; i += 16)
        acc = _mm256_max_epu16(acc, _mm256_and_si256(abs_mask,
                    _mm256_loadu_si256((const __m256i *)(p + i * 2))));
    for (; i < dim; i++) {
        memcpy(&h, p + i * 2, 2);
        h &= 0x7fff;
        tail = h > tail ? h : tail;
    }
    return _mm256_max_epu16(acc, _mm256_set1_epi16((short)tail));
}

/* Eight groups' u16 partials -> their eight maxima, group k in lane k.
 * Each level interleaves pairs and takes the max, halving the partials per
 * group and doubling the groups per vector. */
KERNEL __m128i reduce8_u16(const __m256i a[BLOCK])
{
    __m256i b[4], c[2], d;

    for (int k = 0; k < 4; k++)
        b[k] = _mm256_max_epu16(_mm256_unpacklo_epi16(a[2 * k], a[2 * k + 1]),
                                _mm256_unpackhi_epi16(a[2 * k], a[2 * k + 1]));
    for (int k = 0; k < 2; k++)
        c[k] = _mm256_max_epu16(_mm256_unpacklo_epi32(b[2 * k], b[2 * k + 1]),
                                _mm256_unpackhi_epi32(b[2 * k], b[2 * k + 1]));
    d = _mm256_max_epu16(_mm256_unpacklo_epi64(c[0], c[1]), _mm256_unpackhi_epi64(c[0], c[1]));
    return _mm_max_epu16(_mm256_castsi256_si128(d), _mm256_extracti128_si256(d, 1));
}

/* The same for u32 partials (f32). */
KERNEL __m256i reduce8_u32(const __m256i a[BLOCK])
{
    __m256i b[4], c[2];

    for (int k = 0; k < 4; k++)
        b[k] = _mm256_max_epu32(_mm256_unpacklo_epi32(a[2 * k], a[2 * k + 1]),
                                _mm256_unpackhi_epi32(a[2 * k], a[2 * k + 1]));
    for (int k = 0; k < 2; k++)
        c[k] = _mm256_max_epu32(_mm256_unpacklo_epi64(b[2 * k], b[2 * k + 1]),
                                _mm256_unpackhi_epi64(b[2 * k], b[2 * k + 1]));
    return _mm256_max_epu32(_mm256_permute2x128_si256(c[0], c[1], 0x20),
                            _mm256_permute2x128_si256(c[0], c[1], 0x31));
}

KERNEL __m256i quantize8(const void *src, enum kvt_elem elem, size_t i, __m256 inv)
{
    return quantize8_f32(load8(src, elem, i), inv);
}

/* Second pass over a group whose values are all finite and whose inv is
 * finite, so every x * inv lies within 127 * (1 + 2^-23): no lane can
 * saturate and the clamp to -127 only states the contract. */
KERNEL void quantize_group_fast(int8_t *dst, const void *src, enum kvt_elem elem,
                                size_t dim, float inv_scalar)
{
    const __m256 inv = _mm256_set1_ps(inv_scalar);
    /* packs works within 128-bit lanes; this puts the 4-byte pieces back in order. */
    const __m256i unlane = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    const __m256i lo = _mm256_set1_epi8(-127);
    size_t i = 0;

    for (; i + 32 <= dim; i += 32) {
        __m256i q0 = quantize8(src, elem, i, inv);
        __m256i q1 = quantize8(src, elem, i + 8, inv);
        __m256i q2 = quantize8(src, elem, i + 16, inv);
        __m256i q3 = quantize8(src, elem, i + 24, inv);
        __m256i b = _mm256_packs_epi16(_mm256_packs_epi32(q0, q1), _mm256_packs_epi32(q2, q3));

        b = _mm256_max_epi8(_mm256_permutevar8x32_epi32(b, unlane), lo);
        _mm256_storeu_si256((__m256i *)(dst + i), b);
    }
    for (; i + 8 <= dim; i += 8) {
        __m256i q = quantize8(src, elem, i, inv);
        __m128i w = _mm_packs_epi32(_mm256_castsi256_si128(q), _mm256_extracti128_si256(q, 1));
        __m128i b = _mm_max_epi8(_mm_packs_epi16(w, w), _mm256_castsi256_si128(lo));

        _mm_storel_epi64((__m128i *)(dst + i), b);
    }
    for (; i < dim; i++)
        dst[i] = simd_quantize_one(simd_load_one(src, elem, i), inv_scalar);
}

/* n (1..8) consecutive groups. Groups holding NaN or Inf (which must read
 * as 0) or whose 127 / amax overflowed are rare: scalar.c does those.
 * Returns whether a group held NaN or Inf. */
KERNEL int quantize_block(int8_t *dst, float *scales, const unsigned char *src,
                           enum kvt_elem elem, size_t n, size_t dim)
{
    const size_t group_bytes = dim * (elem == KVT_ELEM_F32 ? 4 : 2);
    const uint32_t inf_bits = elem == KVT_ELEM_F32 ? SIMD_F32_ABS_INF
                            : elem == KVT_ELEM_F16 ? SIMD_F16_ABS_INF : SIMD_BF16_ABS_INF;
    float scale_of[BLOCK], inv_of[BLOCK];
    __m256i partial[BLOCK], max_bits;
    __m256 amax, scale, inv;
    int nonfinite, rare;

    for (size_t k = 0; k < BLOCK; k++)
        partial[k] = k < n ? group_abs_max(src + k * group_bytes, elem, dim) : _mm256_setzero_si256();
    if (elem == KVT_ELEM_F32) {
        max_bits = reduce8_u32(partial);
        amax = _mm256_castsi256_ps(max_bits);
    } else {
        __m128i max16 = reduce8_u16(partial);

        max_bits = _mm256_cvtepu16_epi32(max16);
        amax = elem == KVT_ELEM_F16 ? _mm256_cvtph_ps(max16)   /* exact */
                                    : _mm256_castsi256_ps(_mm256_slli_epi32(max_bits, 16));
    }

    /* simd_group_scale and simd_group_inv, eight at a time */
    scale = _mm256_div_ps(amax, _mm256_set1_ps(127.0f));
    inv = _mm256_and_ps(_mm256_div_ps(_mm256_set1_ps(127.0f), amax),
                        _mm256_cmp_ps(amax, _mm256_setzero_ps(), _CMP_GT_OQ));
    nonfinite = _mm256_movemask_ps(_mm256_castsi256_ps(
                    _mm256_cmpgt_epi32(max_bits, _mm256_set1_epi32((int)inf_bits - 1))));
    rare = nonfinite | _mm256_movemask_ps(_mm256_cmp_ps(inv, _mm256_set1_ps(FLT_MAX), _CMP_GT_OQ));

    if (n == BLOCK) {
        _mm256_storeu_ps(scales, scale);
    } else {
        _mm256_storeu_ps(scale_of, scale);
        memcpy(scales, scale_of, n * sizeof(float));
    }
    _mm256_storeu_ps(inv_of, inv);
    for (size_t k = 0; k < n; k++) {
        if (rare >> k & 1)
            simd_scalar_ops.quantize(dst + k * dim, &scales[k], src + k * group_bytes, elem, 1, dim);
        else
            quantize_group_fast(dst + k * dim, src + k * group_bytes, elem, dim, inv_of[k]);
    }
    return nonfinite;
}

/* Returns whether a group held NaN or Inf. */
KERNEL int quantize_groups(enum kvt_elem elem, int8_t *dst, float *scales,
                           const void *src, size_t n_groups, size_t dim)
{
    const size_t group_bytes = dim * (elem == KVT_ELEM_F32 ? 4 : 2);
    int nonfinite = 0;

    for (size_t g = 0; g < n_groups; g += BLOCK)
        nonfinite |= quantize_block(dst + g * dim, scales + g,
                                    (const unsigned char *)src + g * group_bytes, elem,
                                    n_groups - g < BLOCK ? n_groups - g : BLOCK, dim);
    return nonfinite;
}

static void avx2_quantize(int8_t *dst, float *scales, const void *src,
                          enum kvt_elem elem, size_t n_groups, size_t dim)
{
    SIMD_BY_ELEM(quantize_groups, elem, dst, scales, src, n_groups, dim);
}

/* ---- dequantize -------------------------------------------------------------- */

KERNEL void dequantize_groups(enum kvt_elem elem, void *dst, const int8_t *src,
                              const float *scales, size_t n_groups, size_t dim)
{
    for (size_t g = 0; g < n_groups; g++) {
        const __m256 scale = _mm256_set1_ps(scales[g]);
        const int8_t *q = src + g * dim;
        const size_t base = g * dim;
        size_t i = 0;

        for (; i + 8 <= dim; i += 8) {
            __m256i q32 = _mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(q + i)));

            store8(dst, elem, base + i, _mm256_mul_ps(_mm256_cvtepi32_ps(q32), scale));
        }
        for (; i < dim; i++)
            simd_store_one(dst, elem, base + i, (float)q[i] * scales[g]);
    }
}

static void avx2_dequantize(void *dst, enum kvt_elem elem, const int8_t *src,
                            const float *scales, size_t n_groups, size_t dim)
{
    SIMD_BY_ELEM(dequantize_groups, elem, dst, src, scales, n_groups, dim);
}

/* ---- quantize with outliers (the selection is in avx2_outliers.c) --------------- */

KERNEL int outlier_block(enum kvt_elem elem, const unsigned char *const group[SIMD_OUTLIER_BLOCK],
                         size_t n, size_t dim, unsigned n_out, int8_t *q, float *scales,
                         uint16_t *idx, uint16_t *f16)
{
    return simd_avx2_outlier_block(elem, group, n, dim, n_out, q, scales, idx, f16);
}

/* quantize for quantize_outliers with n_out == 0 (outlier_ops.h): -EINVAL
 * for NaN or Inf, which quantize's first pass sees anyway. */
KERNEL void quantize_groups_finite(enum kvt_elem elem, int *rc, int8_t *dst, float *scales,
                                   const void *src, size_t n_groups, size_t dim)
{
    *rc = quantize_groups(elem, dst, scales, src, n_groups, dim) ? -EINVAL : 0;
}

KERNEL int quantize_finite(int8_t *dst, float *scales, const void *src, enum kvt_elem elem,
                           size_t n_groups, size_t dim)
{
    int rc = -EINVAL;

    SIMD_BY_ELEM(quantize_groups_finite, elem, &rc, dst, scales, src, n_groups, dim);
    return rc;
}

/* Whether any of the n elements at src is NaN or Inf (group_abs_max's
 * partial maxima are below 2^31 and 2^15, so signed compares are exact). */
KERNEL int any_nonfinite(const void *src, enum kvt_elem elem, size_t n)
{
    __m256i m = group_abs_max(src, elem, n);
    __m256i over = elem == KVT_ELEM_F32
        ? _mm256_cmpgt_epi32(m, _mm256_set1_epi32((int)SIMD_F32_ABS_INF - 1))
        : _mm256_cmpgt_epi16(m, _mm256_set1_epi16((short)(simd_inf_key(elem) - 1)));

    return _mm256_movemask_epi8(over) != 0;
}

#define SIMD_OP(name) avx2_##name
#include "outlier_ops.h"
#undef SIMD_OP

/* ---- convert ------------------------------------------------------------------ */

KERNEL void convert_loop(enum kvt_elem dst_elem, enum kvt_elem src_elem, void *dst,
                         const void *src, size_t n)
{
    size_t i = 0;

    for (; i + 8 <= n; i += 8)
        store8(dst, dst_elem, i, load8(src, src_elem, i));
    for (; i < n; i++)
        simd_store_one(dst, dst_elem, i, simd_load_one(src, src_elem, i));
}

static void avx2_convert(void *dst, enum kvt_elem dst_elem, const void *src,
                         enum kvt_elem src_elem, size_t n)
{
    if (!simd_convert_trivial(dst, dst_elem, src, src_elem, n))
        SIMD_BY_ELEM_PAIR(convert_loop, dst_elem, src_elem, dst, src, n);
}

const struct kvt_simd_ops simd_avx2_ops = {
    .name = "avx2",
    .quantize = avx2_quantize,
    .dequantize = avx2_dequantize,
    .convert = avx2_convert,
    .check_finite = avx2_check_finite,
    .quantize_outliers = avx2_quantize_outliers,
    .dequantize_outliers = avx2_dequantize_outliers,
};
