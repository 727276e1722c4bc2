/* scalar.c - the reference backend: plain C that every vector backend must match byte for byte. */
#include "kernels.h"

/* One group. Also called by the vector backends for the rare groups their
 * fast path does not take (a NaN or Inf inside, or a tiny amax). */
static void quantize_group(int8_t *dst, float *scale, const void *src,
                           enum kvt_elem elem, size_t dim)
{
    float amax = 0.0f, inv, pre = 1.0f;

    for (size_t i = 0; i < dim; i++) {
        float a = fabsf(simd_load_one(src, elem, i));

        if (isfinite(a) && a > amax)
            amax = a;
    }
    *scale = simd_group_scale(amax);
    inv = simd_group_inv(amax);

    /* 127 / amax overflowed: the spec's x * inv would be Inf or (for x == 0)
     * NaN. Scaling x and amax by 2^64 is exact here (amax < 2^-120) and
     * gives the q that x * 127 / amax would give with unbounded exponents. */
    if (inv > FLT_MAX) {
        pre = 0x1p64f;
        inv = 127.0f / (amax * pre);
    }

    for (size_t i = 0; i < dim; i++) {
        float x = simd_load_one(src, elem, i);

        dst[i] = simd_quantize_one(isfinite(x) ? x * pre : 0.0f, inv);
    }
}

static void scalar_quantize(int8_t *dst, float *scales, const void *src,
                            enum kvt_elem elem, size_t n_groups, size_t dim)
{
    size_t group_bytes = dim * simd_elem_size(elem);

    if (!simd_elem_known(elem))
        return;
    for (size_t g = 0; g < n_groups; g++)
        quantize_group(dst + g * dim, &scales[g],
                       (const unsigned char *)src + g * group_bytes, elem, dim);
}

static void scalar_dequantize(void *dst, enum kvt_elem elem, const int8_t *src,
                              const float *scales, size_t n_groups, size_t dim)
{
    if (!simd_elem_known(elem))
        return;
    for (size_t g = 0; g < n_groups; g++)
        for (size_t i = 0; i < dim; i++)
            simd_store_one(dst, elem, g * dim + i, (float)src[g * dim + i] * scales[g]);
}

static void scalar_convert(void *dst, enum kvt_elem dst_elem, const void *src,
                           enum kvt_elem src_elem, size_t n)
{
    if (simd_convert_trivial(dst, dst_elem, src, src_elem, n))
        return;
    for (size_t i = 0; i < n; i++)
        simd_store_one(dst, dst_elem, i, simd_load_one(src, src_elem, i));
}

const struct kvt_simd_ops simd_scalar_ops = {
    .name = "scalar",
    .quantize = scalar_quantize,
    .dequantize = scalar_dequantize,
    .convert = scalar_convert,
};
