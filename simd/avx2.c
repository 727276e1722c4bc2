/* avx2.c - AVX2 + F16C backend (no FMA): the hot path, meant to run near memcpy speed. */
#include <immintrin.h>
#include <stdbool.h>

#include "kernels.h"

/* The kernels below take the element type as a parameter and are forced
 * inline into one caller per type, so every loop is compiled for one
 * constant type and the switches fold away. */
#define KERNEL static inline __attribute__((always_inline))

/* Round to nearest even without raising exceptions, for vcvtps2ph. */
#define F16_RNE (_MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)

/* ---- eight elements <-> eight f32 lanes ------------------------------------ */

KERNEL __m256 load8(const void *src, enum kvt_elem elem, size_t i)
{
    const unsigned char *p = src;

    switch (elem) {
    case KVT_ELEM_F16:
        return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(p + i * 2)));
    case KVT_ELEM_BF16:   /* bf16 is the top half of an f32 */
        return _mm256_castsi256_ps(_mm256_slli_epi32(
            _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(p + i * 2))), 16));
    case KVT_ELEM_F32:
        break;
    }
    return _mm256_loadu_ps((const float *)(p + i * 4));
}

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

/* ---- quantize ---------------------------------------------------------------- */

/* Largest sign-cleared bit pattern in the group, in the element's own
 * encoding (see kernels.h): f16 and bf16 are compared sixteen at a time as
 * 16-bit integers, without converting. */
KERNEL uint32_t group_max_abs_bits(const void *src, enum kvt_elem elem, size_t dim)
{
    const unsigned char *p = src;
    uint32_t m;
    size_t i = 0;

    if (elem == KVT_ELEM_F32) {
        const __m256i abs_mask = _mm256_set1_epi32(0x7fffffff);
        __m256i acc = _mm256_setzero_si256();
        __m128i a;
        uint32_t u;

        for (; i + 8 <= dim; i += 8)
            acc = _mm256_max_epu32(acc, _mm256_and_si256(abs_mask,
                        _mm256_loadu_si256((const __m256i *)(p + i * 4))));
        a = _mm_max_epu32(_mm256_castsi256_si128(acc), _mm256_extracti128_si256(acc, 1));
        a = _mm_max_epu32(a, _mm_shuffle_epi32(a, _MM_SHUFFLE(1, 0, 3, 2)));
        a = _mm_max_epu32(a, _mm_shuffle_epi32(a, _MM_SHUFFLE(2, 3, 0, 1)));
        m = (uint32_t)_mm_cvtsi128_si32(a);
        for (; i < dim; i++) {
            memcpy(&u, p + i * 4, 4);
            u &= 0x7fffffff;
            m = u > m ? u : m;
        }
    } else {
        const __m256i abs_mask = _mm256_set1_epi16(0x7fff);
        __m256i acc = _mm256_setzero_si256();
        __m128i a;
        uint16_t h;

        for (; i + 16 <= dim; i += 16)
            acc = _mm256_max_epu16(acc, _mm256_and_si256(abs_mask,
                        _mm256_loadu_si256((const __m256i *)(p + i * 2))));
        a = _mm_max_epu16(_mm256_castsi256_si128(acc), _mm256_extracti128_si256(acc, 1));
        if (i + 8 <= dim) {
            a = _mm_max_epu16(a, _mm_and_si128(_mm256_castsi256_si128(abs_mask),
                        _mm_loadu_si128((const __m128i *)(p + i * 2))));
            i += 8;
        }
        a = _mm_max_epu16(a, _mm_srli_si128(a, 8));
        a = _mm_max_epu16(a, _mm_srli_si128(a, 4));
        a = _mm_max_epu16(a, _mm_srli_si128(a, 2));
        m = (uint32_t)_mm_extract_epi16(a, 0);
        for (; i < dim; i++) {
            memcpy(&h, p + i * 2, 2);
            h &= 0x7fff;
            m = h > m ? h : m;
        }
    }
    return m;
}

/* q for eight lanes: cvtps2dq rounds half to even (default MXCSR). */
KERNEL __m256i quantize8(const void *src, enum kvt_elem elem, size_t i, __m256 inv)
{
    return _mm256_cvtps_epi32(_mm256_mul_ps(load8(src, elem, i), inv));
}

/* Second pass over a group whose values are all finite and whose inv is
 * finite, so every x * inv lies within 127 * (1 + 2^-23) and no lane can
 * saturate; the clamp to -127 only states the contract. */
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

/* First pass: the group's scale and inv, or false for the rare groups the
 * fast path must not take (a NaN or Inf inside, which must read as 0, or an
 * amax so small that 127 / amax overflowed); scalar.c handles those. */
KERNEL bool group_scale_inv(const void *src, enum kvt_elem elem, size_t dim,
                            float *scale, float *inv)
{
    const uint32_t inf_bits = elem == KVT_ELEM_F32 ? SIMD_F32_ABS_INF
                            : elem == KVT_ELEM_F16 ? SIMD_F16_ABS_INF : SIMD_BF16_ABS_INF;
    uint32_t max_bits = group_max_abs_bits(src, elem, dim);
    float amax;

    if (max_bits >= inf_bits)
        return false;
    if (elem == KVT_ELEM_F16)
        amax = _cvtsh_ss((unsigned short)max_bits);
    else if (elem == KVT_ELEM_BF16)
        amax = simd_bf16_to_f32((uint16_t)max_bits);
    else
        memcpy(&amax, &max_bits, 4);
    *inv = simd_group_inv(amax);
    *scale = simd_group_scale(amax);
    return *inv <= FLT_MAX;
}

KERNEL void quantize_groups(int8_t *dst, float *scales, const void *src,
                            enum kvt_elem elem, size_t n_groups, size_t dim)
{
    const size_t group_bytes = dim * (elem == KVT_ELEM_F32 ? 4 : 2);

    for (size_t g = 0; g < n_groups; g++) {
        const unsigned char *s = (const unsigned char *)src + g * group_bytes;
        float inv;

        if (group_scale_inv(s, elem, dim, &scales[g], &inv))
            quantize_group_fast(dst + g * dim, s, elem, dim, inv);
        else
            simd_scalar_ops.quantize(dst + g * dim, &scales[g], s, elem, 1, dim);
    }
}

static void avx2_quantize(int8_t *dst, float *scales, const void *src,
                          enum kvt_elem elem, size_t n_groups, size_t dim)
{
    switch (elem) {
    case KVT_ELEM_F16:
        quantize_groups(dst, scales, src, KVT_ELEM_F16, n_groups, dim);
        return;
    case KVT_ELEM_BF16:
        quantize_groups(dst, scales, src, KVT_ELEM_BF16, n_groups, dim);
        return;
    case KVT_ELEM_F32:
        quantize_groups(dst, scales, src, KVT_ELEM_F32, n_groups, dim);
        return;
    }
}

/* ---- dequantize -------------------------------------------------------------- */

KERNEL void dequantize_groups(void *dst, enum kvt_elem elem, const int8_t *src,
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
    switch (elem) {
    case KVT_ELEM_F16:
        dequantize_groups(dst, KVT_ELEM_F16, src, scales, n_groups, dim);
        return;
    case KVT_ELEM_BF16:
        dequantize_groups(dst, KVT_ELEM_BF16, src, scales, n_groups, dim);
        return;
    case KVT_ELEM_F32:
        dequantize_groups(dst, KVT_ELEM_F32, src, scales, n_groups, dim);
        return;
    }
}

/* ---- convert ------------------------------------------------------------------ */

KERNEL void convert_loop(void *dst, enum kvt_elem dst_elem, const void *src,
                         enum kvt_elem src_elem, size_t n)
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
    if (!simd_elem_known(dst_elem) || !simd_elem_known(src_elem))
        return;
    if (dst_elem == src_elem) {
        memcpy(dst, src, n * simd_elem_size(src_elem));
        return;
    }
    /* The six pairs of distinct types, each compiled on its own. */
    if (src_elem == KVT_ELEM_F16 && dst_elem == KVT_ELEM_F32)
        convert_loop(dst, KVT_ELEM_F32, src, KVT_ELEM_F16, n);
    else if (src_elem == KVT_ELEM_BF16 && dst_elem == KVT_ELEM_F32)
        convert_loop(dst, KVT_ELEM_F32, src, KVT_ELEM_BF16, n);
    else if (src_elem == KVT_ELEM_F32 && dst_elem == KVT_ELEM_F16)
        convert_loop(dst, KVT_ELEM_F16, src, KVT_ELEM_F32, n);
    else if (src_elem == KVT_ELEM_F32 && dst_elem == KVT_ELEM_BF16)
        convert_loop(dst, KVT_ELEM_BF16, src, KVT_ELEM_F32, n);
    else if (src_elem == KVT_ELEM_F16 && dst_elem == KVT_ELEM_BF16)
        convert_loop(dst, KVT_ELEM_BF16, src, KVT_ELEM_F16, n);
    else
        convert_loop(dst, KVT_ELEM_F16, src, KVT_ELEM_BF16, n);
}

const struct kvt_simd_ops simd_avx2_ops = {
    .name = "avx2",
    .quantize = avx2_quantize,
    .dequantize = avx2_dequantize,
    .convert = avx2_convert,
};
