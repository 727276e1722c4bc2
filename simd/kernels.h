/* kernels.h - private to simd/: the backends' ops tables and the per-element formulas they share. */
#ifndef KVT_SIMD_KERNELS_H
#define KVT_SIMD_KERNELS_H

#include <float.h>
#include <math.h>
#include <string.h>

#include "simd.h"

/* Bit-identity also needs every product rounded on its own: the Makefile
 * builds with -ffp-contract=off so no x * inv or q * scale becomes an FMA,
 * and the FP environment is the default one (round to nearest even, no
 * flush-to-zero), which the kernels assume and never change. */

/* One per backend file. Only simd.c's table decides which exist on a build
 * and which the CPU may run; nothing else names an instruction set. */
extern const struct kvt_simd_ops simd_scalar_ops;
extern const struct kvt_simd_ops simd_sse2_ops;
extern const struct kvt_simd_ops simd_avx2_ops;
extern const struct kvt_simd_ops simd_neon_ops;

/* |x| bit patterns at or above these are Inf or NaN. Finite non-negative
 * floats order like their bit patterns, so the vector kernels find amax with
 * an integer max over the sign-cleared bits and learn from the same max
 * whether the group holds a non-finite value. */
#define SIMD_F32_ABS_INF  0x7f800000u
#define SIMD_F16_ABS_INF  0x7c00u
#define SIMD_BF16_ABS_INF 0x7f80u

/* The group scale that simd.h defines (stored with the int8 data). */
static inline float simd_group_scale(float amax)
{
    return amax / 127.0f;
}

/* The multiplier q = RNE(x * inv) uses, as simd.h defines it. Infinite when
 * 127 / amax overflows (amax below about 3.7e-37, only f32 or bf16 input):
 * the vector kernels hand such a group to the scalar backend, which works
 * with x and amax rescaled by 2^64 (see scalar.c). */
static inline float simd_group_inv(float amax)
{
    return amax > 0.0f ? 127.0f / amax : 0.0f;
}

/* q for one element: x must be finite (non-finite inputs count as 0) and
 * |x| <= amax, so |x * inv| <= 127 * (1 + 2^-23) and the clamp only makes
 * the [-127, 127] promise explicit. lrintf rounds half to even in the
 * default rounding mode, as cvtps2dq and fcvtns do in the vector kernels. */
static inline int8_t simd_quantize_one(float x, float inv)
{
    float v = x * inv;

    if (v > 127.0f)
        v = 127.0f;
    if (v < -127.0f)
        v = -127.0f;
    return (int8_t)lrintf(v);
}

/* Element i of src (type elem) as f32, exactly. Unaligned buffers are fine. */
static inline float simd_load_one(const void *src, enum kvt_elem elem, size_t i)
{
    const unsigned char *p = src;
    uint16_t h;
    float f;

    switch (elem) {
    case KVT_ELEM_F32:
        memcpy(&f, p + i * 4, 4);
        return f;
    case KVT_ELEM_F16:
        memcpy(&h, p + i * 2, 2);
        return simd_f16_to_f32(h);
    case KVT_ELEM_BF16:
        memcpy(&h, p + i * 2, 2);
        return simd_bf16_to_f32(h);
    }
    return 0.0f;
}

/* Store f as element i of dst (type elem), rounding half to even. */
static inline void simd_store_one(void *dst, enum kvt_elem elem, size_t i, float f)
{
    unsigned char *p = dst;
    uint16_t h;

    switch (elem) {
    case KVT_ELEM_F32:
        memcpy(p + i * 4, &f, 4);
        return;
    case KVT_ELEM_F16:
        h = simd_f32_to_f16(f);
        memcpy(p + i * 2, &h, 2);
        return;
    case KVT_ELEM_BF16:
        h = simd_f32_to_bf16(f);
        memcpy(p + i * 2, &h, 2);
        return;
    }
}

/* True for the three types the kernels know; the ops do nothing otherwise
 * (callers validate types first: simd_elem_size() returns 0 for others). */
static inline int simd_elem_known(enum kvt_elem elem)
{
    return elem == KVT_ELEM_F32 || elem == KVT_ELEM_F16 || elem == KVT_ELEM_BF16;
}

/* The part of convert every backend shares: nothing for an unknown type, a
 * copy for equal types. Returns 1 when that was all there was to do. */
static inline int simd_convert_trivial(void *dst, enum kvt_elem dst_elem, const void *src,
                                       enum kvt_elem src_elem, size_t n)
{
    if (!simd_elem_known(dst_elem) || !simd_elem_known(src_elem))
        return 1;
    if (dst_elem == src_elem) {
        memcpy(dst, src, n * simd_elem_size(src_elem));
        return 1;
    }
    return 0;
}

/* A vector backend writes each kernel once, as an always-inline function
 * whose first parameter is the element type, and calls it through
 * SIMD_BY_ELEM with the type as a constant: the compiler then builds one
 * loop per type, with no type test inside it. An unknown type does nothing. */
#define SIMD_BY_ELEM(kernel, elem, ...)                                       \
    do {                                                                      \
        switch (elem) {                                                       \
        case KVT_ELEM_F16:  kernel(KVT_ELEM_F16, __VA_ARGS__);  break;        \
        case KVT_ELEM_BF16: kernel(KVT_ELEM_BF16, __VA_ARGS__); break;        \
        case KVT_ELEM_F32:  kernel(KVT_ELEM_F32, __VA_ARGS__);  break;        \
        }                                                                     \
    } while (0)

/* The same for a kernel of two types (destination, source): one loop for
 * each of the six pairs of distinct known types. */
#define SIMD_BY_ELEM_PAIR(kernel, dst_elem, src_elem, ...)                       \
    do {                                                                         \
        if ((src_elem) == KVT_ELEM_F16 && (dst_elem) == KVT_ELEM_F32)            \
            kernel(KVT_ELEM_F32, KVT_ELEM_F16, __VA_ARGS__);                     \
        else if ((src_elem) == KVT_ELEM_BF16 && (dst_elem) == KVT_ELEM_F32)      \
            kernel(KVT_ELEM_F32, KVT_ELEM_BF16, __VA_ARGS__);                    \
        else if ((src_elem) == KVT_ELEM_F32 && (dst_elem) == KVT_ELEM_F16)       \
            kernel(KVT_ELEM_F16, KVT_ELEM_F32, __VA_ARGS__);                     \
        else if ((src_elem) == KVT_ELEM_F32 && (dst_elem) == KVT_ELEM_BF16)      \
            kernel(KVT_ELEM_BF16, KVT_ELEM_F32, __VA_ARGS__);                    \
        else if ((src_elem) == KVT_ELEM_F16 && (dst_elem) == KVT_ELEM_BF16)      \
            kernel(KVT_ELEM_BF16, KVT_ELEM_F16, __VA_ARGS__);                    \
        else if ((src_elem) == KVT_ELEM_BF16 && (dst_elem) == KVT_ELEM_F16)      \
            kernel(KVT_ELEM_F16, KVT_ELEM_BF16, __VA_ARGS__);                    \
    } while (0)

#endif
