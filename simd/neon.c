/* neon.c - AArch64 NEON backend: fcvtns for round-half-even, fcvtl/fcvtn for f16, integer ops for bf16. */
#include <arm_neon.h>
#include <stdbool.h>

#include "kernels.h"

/* Forced inline into one caller per element type, as in avx2.c. */
#define KERNEL static inline __attribute__((always_inline))

/* ---- eight elements <-> two vectors of four f32 ------------------------------ */

KERNEL void load8(const void *src, enum kvt_elem elem, size_t i,
                  float32x4_t *lo, float32x4_t *hi)
{
    const unsigned char *p = src;
    uint16x8_t v;

    switch (elem) {
    case KVT_ELEM_F16:   /* fcvtl: exact, NaN made quiet as simd_f16_to_f32 does */
        v = vld1q_u16((const uint16_t *)(p + i * 2));
        *lo = vcvt_f32_f16(vreinterpret_f16_u16(vget_low_u16(v)));
        *hi = vcvt_high_f32_f16(vreinterpretq_f16_u16(v));
        return;
    case KVT_ELEM_BF16:  /* bf16 is the top half of an f32 */
        v = vld1q_u16((const uint16_t *)(p + i * 2));
        *lo = vreinterpretq_f32_u32(vshll_n_u16(vget_low_u16(v), 16));
        *hi = vreinterpretq_f32_u32(vshll_high_n_u16(v, 16));
        return;
    case KVT_ELEM_F32:
        break;
    }
    *lo = vld1q_f32((const float *)(p + i * 4));
    *hi = vld1q_f32((const float *)(p + i * 4 + 16));
}

/* simd_f32_to_bf16 on four lanes, leaving the result in the top 16 bits. */
KERNEL uint32x4_t f32x4_to_bf16_high(float32x4_t x)
{
    uint32x4_t u = vreinterpretq_u32_f32(x);
    uint32x4_t odd = vandq_u32(vshrq_n_u32(u, 16), vdupq_n_u32(1));
    uint32x4_t rounded = vaddq_u32(vaddq_u32(u, vdupq_n_u32(0x7fff)), odd);
    uint32x4_t is_nan = vcgtq_u32(vandq_u32(u, vdupq_n_u32(0x7fffffff)), vdupq_n_u32(0x7f800000));

    return vbslq_u32(is_nan, vorrq_u32(u, vdupq_n_u32(0x00400000)), rounded);
}

KERNEL void store8(void *dst, enum kvt_elem elem, size_t i, float32x4_t lo, float32x4_t hi)
{
    unsigned char *p = dst;

    switch (elem) {
    case KVT_ELEM_F16:   /* fcvtn rounds half to even under the default FPCR */
        vst1q_u16((uint16_t *)(p + i * 2), vreinterpretq_u16_f16(
            vcvt_high_f16_f32(vcvt_f16_f32(lo), hi)));
        return;
    case KVT_ELEM_BF16:
        vst1q_u16((uint16_t *)(p + i * 2), vshrn_high_n_u32(
            vshrn_n_u32(f32x4_to_bf16_high(lo), 16), f32x4_to_bf16_high(hi), 16));
        return;
    case KVT_ELEM_F32:
        break;
    }
    vst1q_f32((float *)(p + i * 4), lo);
    vst1q_f32((float *)(p + i * 4 + 16), hi);
}

/* ---- quantize ---------------------------------------------------------------------- */

/* Largest sign-cleared bit pattern in the group (see kernels.h). */
KERNEL uint32_t group_max_abs_bits(const void *src, enum kvt_elem elem, size_t dim)
{
    const unsigned char *p = src;
    uint32_t m;
    size_t i = 0;

    if (elem == KVT_ELEM_F32) {
        uint32x4_t acc = vdupq_n_u32(0);
        uint32_t u;

        for (; i + 4 <= dim; i += 4)
            acc = vmaxq_u32(acc, vandq_u32(vld1q_u32((const uint32_t *)(p + i * 4)),
                                           vdupq_n_u32(0x7fffffff)));
        m = vmaxvq_u32(acc);
        for (; i < dim; i++) {
            memcpy(&u, p + i * 4, 4);
            u &= 0x7fffffff;
            m = u > m ? u : m;
        }
    } else {
        uint16x8_t acc = vdupq_n_u16(0);
        uint16_t h;

        for (; i + 8 <= dim; i += 8)
            acc = vmaxq_u16(acc, vandq_u16(vld1q_u16((const uint16_t *)(p + i * 2)),
                                           vdupq_n_u16(0x7fff)));
        m = vmaxvq_u16(acc);
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

/* Eight q as int16, in order (saturating narrow; no lane can exceed
 * 127 * (1 + 2^-23) in the fast path). */
KERNEL int16x8_t quantize8(const void *src, enum kvt_elem elem, size_t i, float32x4_t inv)
{
    float32x4_t lo, hi;

    load8(src, elem, i, &lo, &hi);
    return vqmovn_high_s32(vqmovn_s32(vcvtnq_s32_f32(vmulq_f32(lo, inv))),
                           vcvtnq_s32_f32(vmulq_f32(hi, inv)));
}

KERNEL void quantize_group_fast(int8_t *dst, const void *src, enum kvt_elem elem,
                                size_t dim, float inv_scalar)
{
    const float32x4_t inv = vdupq_n_f32(inv_scalar);
    const int8x16_t lo = vdupq_n_s8(-127);   /* the clamp only states the contract */
    size_t i = 0;

    for (; i + 16 <= dim; i += 16) {
        int8x16_t b = vqmovn_high_s16(vqmovn_s16(quantize8(src, elem, i, inv)),
                                      quantize8(src, elem, i + 8, inv));

        vst1q_s8(dst + i, vmaxq_s8(b, lo));
    }
    for (; i + 8 <= dim; i += 8)
        vst1_s8(dst + i, vmax_s8(vqmovn_s16(quantize8(src, elem, i, inv)), vget_low_s8(lo)));
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

static void neon_quantize(int8_t *dst, float *scales, const void *src,
                          enum kvt_elem elem, size_t n_groups, size_t dim)
{
    SIMD_BY_ELEM(quantize_groups, elem, dst, scales, src, n_groups, dim);
}

/* ---- dequantize ----------------------------------------------------------------------- */

KERNEL void dequantize_groups(enum kvt_elem elem, void *dst, const int8_t *src,
                              const float *scales, size_t n_groups, size_t dim)
{
    for (size_t g = 0; g < n_groups; g++) {
        const float32x4_t scale = vdupq_n_f32(scales[g]);
        const int8_t *q = src + g * dim;
        const size_t base = g * dim;
        size_t i = 0;

        for (; i + 8 <= dim; i += 8) {
            int16x8_t w = vmovl_s8(vld1_s8(q + i));
            float32x4_t lo = vcvtq_f32_s32(vmovl_s16(vget_low_s16(w)));
            float32x4_t hi = vcvtq_f32_s32(vmovl_high_s16(w));

            store8(dst, elem, base + i, vmulq_f32(lo, scale), vmulq_f32(hi, scale));
        }
        for (; i < dim; i++)
            simd_store_one(dst, elem, base + i, (float)q[i] * scales[g]);
    }
}

static void neon_dequantize(void *dst, enum kvt_elem elem, const int8_t *src,
                            const float *scales, size_t n_groups, size_t dim)
{
    SIMD_BY_ELEM(dequantize_groups, elem, dst, src, scales, n_groups, dim);
}

/* ---- quantize with outliers ----------------------------------------------------------- */

/* Offers the group's elements to t: a first pass takes lane maxima over
 * blocks of eight f32 or sixteen 16-bit keys (two vectors) for
 * simd_topk_floor, the second offers only the lanes whose key beats thresh
 * (keys are below 2^31 and 2^15, so the signed compares are exact; thresh
 * -1 passes all). A compare narrowed to bytes is the lane mask, one byte
 * per lane. */
KERNEL int outlier_scan(struct simd_topk *t, const void *src, enum kvt_elem elem, size_t dim)
{
    const unsigned char *p = src;
    const uint64_t one_bit_per_byte = 0x0101010101010101ull;
    const size_t block = elem == KVT_ELEM_F32 ? 8 : 16, full = dim / block * block;
    uint32_t lane_max[16];
    uint16_t max16[16];
    size_t i;
    int rc;

    if (full && elem == KVT_ELEM_F32) {
        uint32x4_t acc0 = vdupq_n_u32(0), acc1 = vdupq_n_u32(0);

        for (i = 0; i < full; i += block) {
            acc0 = vmaxq_u32(acc0, vandq_u32(vld1q_u32((const uint32_t *)(p + i * 4)),
                                             vdupq_n_u32(0x7fffffff)));
            acc1 = vmaxq_u32(acc1, vandq_u32(vld1q_u32((const uint32_t *)(p + i * 4 + 16)),
                                             vdupq_n_u32(0x7fffffff)));
        }
        vst1q_u32(lane_max, acc0);
        vst1q_u32(lane_max + 4, acc1);
    } else if (full) {
        uint16x8_t acc0 = vdupq_n_u16(0), acc1 = vdupq_n_u16(0);

        for (i = 0; i < full; i += block) {
            acc0 = vmaxq_u16(acc0, vandq_u16(vld1q_u16((const uint16_t *)(p + i * 2)),
                                             vdupq_n_u16(0x7fff)));
            acc1 = vmaxq_u16(acc1, vandq_u16(vld1q_u16((const uint16_t *)(p + i * 2 + 16)),
                                             vdupq_n_u16(0x7fff)));
        }
        vst1q_u16(max16, acc0);
        vst1q_u16(max16 + 8, acc1);
        for (int k = 0; k < 16; k++)
            lane_max[k] = max16[k];
    }
    if (full && (rc = simd_topk_floor(t, lane_max, (unsigned)block)) < 0)
        return rc;

    for (i = 0; i < full; i += block) {
        uint64_t lanes0, lanes1 = 0;

        if (elem == KVT_ELEM_F32) {
            int32x4_t th = vdupq_n_s32(t->thresh);
            uint32x4_t a0 = vandq_u32(vld1q_u32((const uint32_t *)(p + i * 4)),
                                      vdupq_n_u32(0x7fffffff));
            uint32x4_t a1 = vandq_u32(vld1q_u32((const uint32_t *)(p + i * 4 + 16)),
                                      vdupq_n_u32(0x7fffffff));
            uint32x4_t c0 = vcgtq_s32(vreinterpretq_s32_u32(a0), th);
            uint32x4_t c1 = vcgtq_s32(vreinterpretq_s32_u32(a1), th);

            lanes0 = vget_lane_u64(vreinterpret_u64_u8(vmovn_u16(
                         vcombine_u16(vmovn_u32(c0), vmovn_u32(c1)))), 0) & one_bit_per_byte;
        } else {
            int16x8_t th = vdupq_n_s16((int16_t)t->thresh);
            uint16x8_t a0 = vandq_u16(vld1q_u16((const uint16_t *)(p + i * 2)),
                                      vdupq_n_u16(0x7fff));
            uint16x8_t a1 = vandq_u16(vld1q_u16((const uint16_t *)(p + i * 2 + 16)),
                                      vdupq_n_u16(0x7fff));
            uint16x8_t c0 = vcgtq_s16(vreinterpretq_s16_u16(a0), th);
            uint16x8_t c1 = vcgtq_s16(vreinterpretq_s16_u16(a1), th);

            lanes0 = vget_lane_u64(vreinterpret_u64_u8(vmovn_u16(c0)), 0) & one_bit_per_byte;
            lanes1 = vget_lane_u64(vreinterpret_u64_u8(vmovn_u16(c1)), 0) & one_bit_per_byte;
        }
        if (lanes0 && (rc = simd_topk_offer_lanes(t, src, elem, i, lanes0, 8)) < 0)
            return rc;
        /* thresh may have risen: lanes1 was computed before, and offer re-checks */
        if (lanes1 && (rc = simd_topk_offer_lanes(t, src, elem, i + 8, lanes1, 8)) < 0)
            return rc;
    }
    for (i = full; i < dim; i++)
        if ((rc = simd_topk_offer(t, src, elem, i)) < 0)
            return rc;
    return 0;
}

#define SIMD_OP(name) neon_##name
#include "outlier_scan_block.h"
#include "outlier_ops.h"
#undef SIMD_OP

/* ---- convert ---------------------------------------------------------------------------- */

KERNEL void convert_loop(enum kvt_elem dst_elem, enum kvt_elem src_elem, void *dst,
                         const void *src, size_t n)
{
    size_t i = 0;
    float32x4_t lo, hi;

    for (; i + 8 <= n; i += 8) {
        load8(src, src_elem, i, &lo, &hi);
        store8(dst, dst_elem, i, lo, hi);
    }
    for (; i < n; i++)
        simd_store_one(dst, dst_elem, i, simd_load_one(src, src_elem, i));
}

static void neon_convert(void *dst, enum kvt_elem dst_elem, const void *src,
                         enum kvt_elem src_elem, size_t n)
{
    if (!simd_convert_trivial(dst, dst_elem, src, src_elem, n))
        SIMD_BY_ELEM_PAIR(convert_loop, dst_elem, src_elem, dst, src, n);
}

const struct kvt_simd_ops simd_neon_ops = {
    .name = "neon",
    .quantize = neon_quantize,
    .dequantize = neon_dequantize,
    .convert = neon_convert,
    .check_finite = neon_check_finite,
    .quantize_outliers = neon_quantize_outliers,
    .dequantize_outliers = neon_dequantize_outliers,
};
