/* avx2_common.h - private to simd/: what avx2.c and avx2_outliers.c share (AVX2 + F16C, no FMA). */
#ifndef KVT_SIMD_AVX2_COMMON_H
#define KVT_SIMD_AVX2_COMMON_H

#include <immintrin.h>

#include "kernels.h"

/* The kernels take the element type as a parameter and are forced inline
 * into one caller per type, so every loop is compiled for one constant
 * type and the switches fold away. */
#define KERNEL static inline __attribute__((always_inline))

/* Round to nearest even without raising exceptions, for vcvtps2ph. */
#define F16_RNE (_MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)

/* Eight elements from element i as eight f32 lanes, exactly. */
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

/* q for eight lanes x * inv. Adding 1.5 * 2^23 rounds any |v| < 2^22 to
 * an integer, half to even in the default rounding mode exactly as
 * cvtps2dq would, and leaves it in the low mantissa bits. An add instead
 * of cvtps2dq because the latter competes with vcvtph2ps for the
 * conversion pipes: with both, the f16 path ran at about half the speed. */
KERNEL __m256i quantize8_f32(__m256 x, __m256 inv)
{
    __m256 v = _mm256_add_ps(_mm256_mul_ps(x, inv), _mm256_set1_ps(0x1.8p23f));

    return _mm256_sub_epi32(_mm256_castps_si256(v), _mm256_set1_epi32(0x4b400000));
}

/* In avx2_outliers.c: outlier_block (outlier_ops.h) for AVX2. */
int simd_avx2_outlier_block(enum kvt_elem elem,
                            const unsigned char *const group[SIMD_OUTLIER_BLOCK], size_t n,
                            size_t dim, unsigned n_out, int8_t *q, float *scales, uint16_t *idx,
                            uint16_t *f16);

#endif
