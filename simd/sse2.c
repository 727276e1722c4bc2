/* sse2.c - SSE2-only backend (any x86-64): f16 converted with integer SIMD, since F16C may be absent. */
#include <emmintrin.h>
#include <stdbool.h>

#include "kernels.h"

/* Forced inline into one caller per element type, as in avx2.c. */
#define KERNEL static inline __attribute__((always_inline))

#define SET32(v) _mm_set1_epi32((int)(v))

/* Lane-wise a ? b : c for all-ones / all-zeros masks (SSE2 has no blendv). */
KERNEL __m128i select128(__m128i mask, __m128i if_set, __m128i if_clear)
{
    return _mm_or_si128(_mm_and_si128(mask, if_set), _mm_andnot_si128(mask, if_clear));
}

/* ---- f16 / bf16 <-> f32, four lanes ----------------------------------------
 * The same arithmetic as simd_f16_to_f32 / simd_f32_to_f16 in simd.c, lane
 * by lane, so results match F16C and the scalar reference bit for bit. */

/* h: one f16 in the low 16 bits of each 32-bit lane. */
KERNEL __m128 f16x4_to_f32(__m128i h)
{
    const __m128i exp_mask = SET32(0x7c00 << 13);
    __m128i abs = _mm_and_si128(h, SET32(0x7fff));
    __m128i o = _mm_slli_epi32(abs, 13);
    __m128i exp = _mm_and_si128(o, exp_mask);
    __m128i is_infnan = _mm_cmpeq_epi32(exp, exp_mask);
    __m128i is_nan = _mm_cmpgt_epi32(abs, SET32(0x7c00));
    __m128i is_small = _mm_cmpeq_epi32(exp, _mm_setzero_si128());
    __m128i small;

    o = _mm_add_epi32(o, SET32(112 << 23));                          /* rebias */
    o = _mm_add_epi32(o, _mm_and_si128(is_infnan, SET32(112 << 23)));  /* exp 255 */
    o = _mm_or_si128(o, _mm_and_si128(is_nan, SET32(0x00400000)));    /* quiet NaN */
    /* Zero and subnormals: read the mantissa as 2^-14 * (1 + m / 1024) and
     * subtract 2^-14, leaving exactly m * 2^-24. */
    small = _mm_castps_si128(_mm_sub_ps(
        _mm_castsi128_ps(_mm_add_epi32(o, SET32(1 << 23))),
        _mm_castsi128_ps(SET32(113 << 23))));
    o = select128(is_small, small, o);
    return _mm_castsi128_ps(_mm_or_si128(o, _mm_slli_epi32(_mm_and_si128(h, SET32(0x8000)), 16)));
}

/* Result: one f16 in the low 16 bits of each 32-bit lane. */
KERNEL __m128i f32x4_to_f16(__m128 x)
{
    __m128i u = _mm_castps_si128(x);
    __m128i sign = _mm_and_si128(u, SET32(0x80000000u));
    __m128i is_big, is_nan, is_small, big, small, normal;

    u = _mm_xor_si128(u, sign);
    is_big = _mm_cmpgt_epi32(u, SET32(0x47800000 - 1));   /* |x| >= 65536 */
    is_nan = _mm_cmpgt_epi32(u, SET32(0x7f800000));
    is_small = _mm_cmpgt_epi32(SET32(0x38800000), u);     /* |x| < 2^-14 */

    big = _mm_or_si128(SET32(0x7c00), _mm_and_si128(is_nan,
            _mm_or_si128(SET32(0x0200), _mm_and_si128(_mm_srli_epi32(u, 13), SET32(0x3ff)))));
    small = _mm_sub_epi32(_mm_castps_si128(_mm_add_ps(_mm_castsi128_ps(u),
            _mm_set1_ps(0.5f))), SET32(0x3f000000));
    normal = _mm_add_epi32(_mm_add_epi32(u, SET32(0xc8000fffu)),
            _mm_and_si128(_mm_srli_epi32(u, 13), SET32(1)));
    normal = _mm_srli_epi32(normal, 13);

    return _mm_or_si128(select128(is_big, big, select128(is_small, small, normal)),
                        _mm_srli_epi32(sign, 16));
}

KERNEL __m128i f32x4_to_bf16(__m128 x)
{
    __m128i u = _mm_castps_si128(x);
    __m128i odd = _mm_and_si128(_mm_srli_epi32(u, 16), SET32(1));
    __m128i rounded = _mm_srli_epi32(_mm_add_epi32(_mm_add_epi32(u, SET32(0x7fff)), odd), 16);
    __m128i is_nan = _mm_cmpgt_epi32(_mm_and_si128(u, SET32(0x7fffffff)), SET32(0x7f800000));
    __m128i quiet = _mm_or_si128(_mm_srli_epi32(u, 16), SET32(0x40));

    return select128(is_nan, quiet, rounded);
}

/* Two vectors of 32-bit lanes each holding a value <= 0xffff, packed to 16
 * bits in order: sign-extend first so the signed saturating pack keeps the
 * bits (SSE2 has no unsigned 32-bit pack). */
KERNEL __m128i pack_u16(__m128i lo, __m128i hi)
{
    lo = _mm_srai_epi32(_mm_slli_epi32(lo, 16), 16);
    hi = _mm_srai_epi32(_mm_slli_epi32(hi, 16), 16);
    return _mm_packs_epi32(lo, hi);
}

/* ---- eight elements <-> two vectors of four f32 ---------------------------- */

KERNEL void load8(const void *src, enum kvt_elem elem, size_t i, __m128 *lo, __m128 *hi)
{
    const unsigned char *p = src;
    const __m128i zero = _mm_setzero_si128();
    __m128i v;

    switch (elem) {
    case KVT_ELEM_F16:
        v = _mm_loadu_si128((const __m128i *)(p + i * 2));
        *lo = f16x4_to_f32(_mm_unpacklo_epi16(v, zero));
        *hi = f16x4_to_f32(_mm_unpackhi_epi16(v, zero));
        return;
    case KVT_ELEM_BF16:   /* interleaving zeros below puts each bf16 in an f32's top half */
        v = _mm_loadu_si128((const __m128i *)(p + i * 2));
        *lo = _mm_castsi128_ps(_mm_unpacklo_epi16(zero, v));
        *hi = _mm_castsi128_ps(_mm_unpackhi_epi16(zero, v));
        return;
    case KVT_ELEM_F32:
        break;
    }
    *lo = _mm_loadu_ps((const float *)(p + i * 4));
    *hi = _mm_loadu_ps((const float *)(p + i * 4 + 16));
}

KERNEL void store8(void *dst, enum kvt_elem elem, size_t i, __m128 lo, __m128 hi)
{
    unsigned char *p = dst;

    switch (elem) {
    case KVT_ELEM_F16:
        _mm_storeu_si128((__m128i *)(p + i * 2), pack_u16(f32x4_to_f16(lo), f32x4_to_f16(hi)));
        return;
    case KVT_ELEM_BF16:
        _mm_storeu_si128((__m128i *)(p + i * 2), pack_u16(f32x4_to_bf16(lo), f32x4_to_bf16(hi)));
        return;
    case KVT_ELEM_F32:
        break;
    }
    _mm_storeu_ps((float *)(p + i * 4), lo);
    _mm_storeu_ps((float *)(p + i * 4 + 16), hi);
}

/* ---- quantize ------------------------------------------------------------------ */

/* Largest sign-cleared bit pattern in the group (see kernels.h). */
KERNEL uint32_t group_max_abs_bits(const void *src, enum kvt_elem elem, size_t dim)
{
    const unsigned char *p = src;
    uint32_t m;
    size_t i = 0;

    if (elem == KVT_ELEM_F32) {
        __m128i acc = _mm_setzero_si128(), a;
        uint32_t u;

        for (; i + 4 <= dim; i += 4) {
            /* max of non-negative int32 via compare and select */
            a = _mm_and_si128(_mm_loadu_si128((const __m128i *)(p + i * 4)), SET32(0x7fffffff));
            acc = select128(_mm_cmpgt_epi32(a, acc), a, acc);
        }
        m = 0;
        for (int k = 0; k < 4; k++) {
            u = (uint32_t)_mm_cvtsi128_si32(acc);
            m = u > m ? u : m;
            acc = _mm_srli_si128(acc, 4);
        }
        for (; i < dim; i++) {
            memcpy(&u, p + i * 4, 4);
            u &= 0x7fffffff;
            m = u > m ? u : m;
        }
    } else {
        /* 15-bit magnitudes: the signed 16-bit max is exact */
        __m128i acc = _mm_setzero_si128();
        uint16_t h;

        for (; i + 8 <= dim; i += 8)
            acc = _mm_max_epi16(acc, _mm_and_si128(_mm_set1_epi16(0x7fff),
                        _mm_loadu_si128((const __m128i *)(p + i * 2))));
        acc = _mm_max_epi16(acc, _mm_srli_si128(acc, 8));
        acc = _mm_max_epi16(acc, _mm_srli_si128(acc, 4));
        acc = _mm_max_epi16(acc, _mm_srli_si128(acc, 2));
        m = (uint32_t)_mm_extract_epi16(acc, 0);
        for (; i < dim; i++) {
            memcpy(&h, p + i * 2, 2);
            h &= 0x7fff;
            m = h > m ? h : m;
        }
    }
    return m;
}

/* Scale and inv of a group, or false for one the fast path must not take
 * (NaN / Inf inside, or 127 / amax overflowed): scalar.c handles those. */
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
        amax = simd_f16_to_f32((uint16_t)max_bits);
    else if (elem == KVT_ELEM_BF16)
        amax = simd_bf16_to_f32((uint16_t)max_bits);
    else
        memcpy(&amax, &max_bits, 4);
    *inv = simd_group_inv(amax);
    *scale = simd_group_scale(amax);
    return *inv <= FLT_MAX;
}

/* Eight q as int16 in order, clamped below at -127 (no lane can exceed
 * 127 * (1 + 2^-23) in the fast path; the clamp states the contract). */
KERNEL __m128i quantize8(const void *src, enum kvt_elem elem, size_t i, __m128 inv)
{
    __m128 lo, hi;

    load8(src, elem, i, &lo, &hi);
    return _mm_max_epi16(_mm_packs_epi32(_mm_cvtps_epi32(_mm_mul_ps(lo, inv)),
                                         _mm_cvtps_epi32(_mm_mul_ps(hi, inv))),
                         _mm_set1_epi16(-127));
}

KERNEL void quantize_group_fast(int8_t *dst, const void *src, enum kvt_elem elem,
                                size_t dim, float inv_scalar)
{
    const __m128 inv = _mm_set1_ps(inv_scalar);
    size_t i = 0;

    for (; i + 16 <= dim; i += 16)
        _mm_storeu_si128((__m128i *)(dst + i),
                         _mm_packs_epi16(quantize8(src, elem, i, inv),
                                         quantize8(src, elem, i + 8, inv)));
    for (; i + 8 <= dim; i += 8) {
        __m128i w = quantize8(src, elem, i, inv);

        _mm_storel_epi64((__m128i *)(dst + i), _mm_packs_epi16(w, w));
    }
    for (; i < dim; i++)
        dst[i] = simd_quantize_one(simd_load_one(src, elem, i), inv_scalar);
}

KERNEL void quantize_groups(enum kvt_elem elem, int8_t *dst, float *scales,
                            const void *src, size_t n_groups, size_t dim)
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

static void sse2_quantize(int8_t *dst, float *scales, const void *src,
                          enum kvt_elem elem, size_t n_groups, size_t dim)
{
    SIMD_BY_ELEM(quantize_groups, elem, dst, scales, src, n_groups, dim);
}

/* ---- dequantize ------------------------------------------------------------------ */

KERNEL void dequantize_groups(enum kvt_elem elem, void *dst, const int8_t *src,
                              const float *scales, size_t n_groups, size_t dim)
{
    for (size_t g = 0; g < n_groups; g++) {
        const __m128 scale = _mm_set1_ps(scales[g]);
        const int8_t *q = src + g * dim;
        const size_t base = g * dim;
        size_t i = 0;

        for (; i + 8 <= dim; i += 8) {
            /* sign-extend 8 -> 16 -> 32 bits by unpacking with itself and
             * shifting arithmetically */
            __m128i b = _mm_loadl_epi64((const __m128i *)(q + i));
            __m128i w = _mm_srai_epi16(_mm_unpacklo_epi8(b, b), 8);
            __m128 lo = _mm_cvtepi32_ps(_mm_srai_epi32(_mm_unpacklo_epi16(w, w), 16));
            __m128 hi = _mm_cvtepi32_ps(_mm_srai_epi32(_mm_unpackhi_epi16(w, w), 16));

            store8(dst, elem, base + i, _mm_mul_ps(lo, scale), _mm_mul_ps(hi, scale));
        }
        for (; i < dim; i++)
            simd_store_one(dst, elem, base + i, (float)q[i] * scales[g]);
    }
}

static void sse2_dequantize(void *dst, enum kvt_elem elem, const int8_t *src,
                            const float *scales, size_t n_groups, size_t dim)
{
    SIMD_BY_ELEM(dequantize_groups, elem, dst, src, scales, n_groups, dim);
}

/* ---- quantize with outliers ------------------------------------------------------- */

/* Offers the group's elements to t: a first pass takes lane maxima over
 * blocks of eight f32 or sixteen 16-bit keys (two vectors) for
 * simd_topk_floor, the second offers only the lanes whose key beats thresh
 * (keys are below 2^31 and 2^15, so the signed compares are exact; thresh
 * -1 passes all). */
KERNEL int outlier_scan(struct simd_topk *t, const void *src, enum kvt_elem elem, size_t dim)
{
    const unsigned char *p = src;
    const int is_f32 = elem == KVT_ELEM_F32;
    const size_t block = is_f32 ? 8 : 16, width = is_f32 ? 4 : 2, full = dim / block * block;
    const __m128i abs_mask = is_f32 ? SET32(0x7fffffff) : _mm_set1_epi16(0x7fff);
    uint32_t lane_max[16];
    uint16_t max16[16];
    size_t i;
    int rc;

    if (full) {
        __m128i acc0 = _mm_setzero_si128(), acc1 = _mm_setzero_si128();

        for (i = 0; i < full; i += block) {
            __m128i a0 = _mm_and_si128(abs_mask, _mm_loadu_si128((const __m128i *)(p + i * width)));
            __m128i a1 = _mm_and_si128(abs_mask, _mm_loadu_si128((const __m128i *)(p + i * width + 16)));

            if (is_f32) {   /* max of non-negative int32 via compare and select */
                acc0 = select128(_mm_cmpgt_epi32(a0, acc0), a0, acc0);
                acc1 = select128(_mm_cmpgt_epi32(a1, acc1), a1, acc1);
            } else {
                acc0 = _mm_max_epi16(acc0, a0);
                acc1 = _mm_max_epi16(acc1, a1);
            }
        }
        if (is_f32) {
            _mm_storeu_si128((__m128i *)lane_max, acc0);
            _mm_storeu_si128((__m128i *)(lane_max + 4), acc1);
        } else {
            _mm_storeu_si128((__m128i *)max16, acc0);
            _mm_storeu_si128((__m128i *)(max16 + 8), acc1);
            for (int k = 0; k < 16; k++)
                lane_max[k] = max16[k];
        }
        if ((rc = simd_topk_floor(t, lane_max, (unsigned)block)) < 0)
            return rc;
    }
    for (i = 0; i < full; i += block) {
        __m128i a0 = _mm_and_si128(abs_mask, _mm_loadu_si128((const __m128i *)(p + i * width)));
        __m128i a1 = _mm_and_si128(abs_mask, _mm_loadu_si128((const __m128i *)(p + i * width + 16)));
        uint64_t lanes;

        if (is_f32) {
            __m128i th = SET32(t->thresh);

            lanes = (unsigned)_mm_movemask_ps(_mm_castsi128_ps(_mm_cmpgt_epi32(a0, th))) |
                    (unsigned)_mm_movemask_ps(_mm_castsi128_ps(_mm_cmpgt_epi32(a1, th))) << 4;
        } else {
            __m128i th = _mm_set1_epi16((short)t->thresh);

            lanes = ((unsigned)_mm_movemask_epi8(_mm_cmpgt_epi16(a0, th)) |
                     (unsigned)_mm_movemask_epi8(_mm_cmpgt_epi16(a1, th)) << 16) & 0x55555555u;
        }
        if (lanes && (rc = simd_topk_offer_lanes(t, src, elem, i, lanes, is_f32 ? 1 : 2)) < 0)
            return rc;
    }
    for (i = full; i < dim; i++)
        if ((rc = simd_topk_offer(t, src, elem, i)) < 0)
            return rc;
    return 0;
}

#define SIMD_OP(name) sse2_##name
#include "outlier_scan_block.h"
#include "outlier_ops.h"
#undef SIMD_OP

/* ---- convert ------------------------------------------------------------------------ */

void simd_stream_copy(void *dst, const void *src, size_t bytes)
{
    uint8_t *d = dst;
    const uint8_t *s = src;
    size_t head = (16 - ((uintptr_t)d & 15)) & 15;

    if (head > bytes)
        head = bytes;
    memcpy(d, s, head);
    size_t i = head;
    for (; i + 64 <= bytes; i += 64) {
        __m128i a = _mm_loadu_si128((const __m128i *)(s + i));
        __m128i b = _mm_loadu_si128((const __m128i *)(s + i + 16));
        __m128i c = _mm_loadu_si128((const __m128i *)(s + i + 32));
        __m128i e = _mm_loadu_si128((const __m128i *)(s + i + 48));
        _mm_stream_si128((__m128i *)(d + i), a);
        _mm_stream_si128((__m128i *)(d + i + 16), b);
        _mm_stream_si128((__m128i *)(d + i + 32), c);
        _mm_stream_si128((__m128i *)(d + i + 48), e);
    }
    memcpy(d + i, s + i, bytes - i);
    _mm_sfence();
}

KERNEL void convert_loop(enum kvt_elem dst_elem, enum kvt_elem src_elem, void *dst,
                         const void *src, size_t n)
{
    size_t i = 0;
    __m128 lo, hi;

    for (; i + 8 <= n; i += 8) {
        load8(src, src_elem, i, &lo, &hi);
        store8(dst, dst_elem, i, lo, hi);
    }
    for (; i < n; i++)
        simd_store_one(dst, dst_elem, i, simd_load_one(src, src_elem, i));
}

static void sse2_convert(void *dst, enum kvt_elem dst_elem, const void *src,
                         enum kvt_elem src_elem, size_t n)
{
    if (!simd_convert_trivial(dst, dst_elem, src, src_elem, n))
        SIMD_BY_ELEM_PAIR(convert_loop, dst_elem, src_elem, dst, src, n);
}

const struct kvt_simd_ops simd_sse2_ops = {
    .name = "sse2",
    .quantize = sse2_quantize,
    .dequantize = sse2_dequantize,
    .convert = sse2_convert,
    .check_finite = sse2_check_finite,
    .quantize_outliers = sse2_quantize_outliers,
    .dequantize_outliers = sse2_dequantize_outliers,
};
