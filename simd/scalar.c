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

static int scalar_check_finite(const void *src, enum kvt_elem elem, size_t n)
{
    if (!simd_elem_known(elem))
        return -EINVAL;
    for (size_t i = 0; i < n; i++)
        if (!isfinite(simd_load_one(src, elem, i)))
            return -EINVAL;
    return 0;
}

/* ---- outliers ---------------------------------------------------------------- */

float simd_topk_finish(const struct simd_topk *t, const void *src, enum kvt_elem elem,
                       unsigned n_out, uint16_t *out_idx, uint16_t *out_f16)
{
    uint32_t rest = t->n > n_out ? t->key[n_out] : 0;   /* the (n_out + 1)-th largest */

    /* The list is by magnitude; the stored order is by index. */
    for (unsigned j = 0; j < n_out; j++) {
        uint16_t v = (uint16_t)t->idx[j];
        unsigned k = j;

        for (; k > 0 && out_idx[k - 1] > v; k--)
            out_idx[k] = out_idx[k - 1];
        out_idx[k] = v;
    }
    for (unsigned j = 0; j < n_out; j++)
        out_f16[j] = simd_f32_to_f16(simd_load_one(src, elem, out_idx[j]));
    return simd_key_to_f32(elem, rest);
}

int simd_quantize_outliers_group(int8_t *dst, float *scale, uint16_t *out_idx,
                                 uint16_t *out_f16, const void *src, enum kvt_elem elem,
                                 size_t dim, unsigned n_out)
{
    struct simd_topk t;
    float amax, inv, pre = 1.0f;
    int rc;

    simd_topk_init(&t, elem, n_out);
    for (size_t i = 0; i < dim; i++)
        if ((rc = simd_topk_offer(&t, src, elem, i)) < 0)
            return rc;
    amax = simd_topk_finish(&t, src, elem, n_out, out_idx, out_f16);
    *scale = simd_group_scale(amax);
    inv = simd_group_inv(amax);
    if (inv > FLT_MAX) {        /* as in quantize_group */
        pre = 0x1p64f;
        inv = 127.0f / (amax * pre);
    }
    /* An outlier's x * inv may exceed 127 (or, scaled by pre, overflow to
     * Inf): simd_quantize_one clamps it, and its q is then set to 0. */
    for (size_t i = 0; i < dim; i++)
        dst[i] = simd_quantize_one(simd_load_one(src, elem, i) * pre, inv);
    for (unsigned j = 0; j < n_out; j++)
        dst[out_idx[j]] = 0;
    return 0;
}

void simd_patch_outliers(void *dst, enum kvt_elem elem, const uint16_t *idx,
                         const uint16_t *vals_f16, size_t n_groups, size_t dim,
                         unsigned n_out)
{
    unsigned char *p = dst;

    for (size_t g = 0; g < n_groups; g++)
        for (unsigned j = 0; j < n_out; j++) {
            size_t i = idx[g * n_out + j], at = g * dim + i;
            uint16_t h = vals_f16[g * n_out + j];

            if (i >= dim)       /* from disk: never trusted to be in range */
                continue;
            if (elem == KVT_ELEM_F16)   /* as is: no NaN made quiet on the way */
                memcpy(p + at * 2, &h, 2);
            else
                simd_store_one(dst, elem, at, simd_f16_to_f32(h));
        }
}

/* n_out == 0 is plain quantize, once every value is known to be finite. */
static int scalar_quantize_outliers(int8_t *dst, float *scales, uint16_t *out_idx,
                                    uint16_t *out_f16, const void *src, enum kvt_elem elem,
                                    size_t n_groups, size_t dim, unsigned n_out)
{
    size_t group_bytes = dim * simd_elem_size(elem);
    int rc;

    if ((rc = simd_outliers_args_ok(elem, dim, n_out)) < 0)
        return rc;
    if (n_out == 0) {
        for (size_t i = 0; i < n_groups * dim; i++)
            if (!isfinite(simd_load_one(src, elem, i)))
                return -EINVAL;
        scalar_quantize(dst, scales, src, elem, n_groups, dim);
        return 0;
    }
    for (size_t g = 0; g < n_groups; g++)
        if ((rc = simd_quantize_outliers_group(dst + g * dim, &scales[g], out_idx + g * n_out,
                                               out_f16 + g * n_out,
                                               (const unsigned char *)src + g * group_bytes,
                                               elem, dim, n_out)) < 0)
            return rc;
    return 0;
}

static void scalar_dequantize_outliers(void *dst, enum kvt_elem elem, const int8_t *src,
                                       const float *scales, const uint16_t *idx,
                                       const uint16_t *vals_f16, size_t n_groups, size_t dim,
                                       unsigned n_out)
{
    if (!simd_elem_known(elem))
        return;
    scalar_dequantize(dst, elem, src, scales, n_groups, dim);
    simd_patch_outliers(dst, elem, idx, vals_f16, n_groups, dim, n_out);
}

const struct kvt_simd_ops simd_scalar_ops = {
    .name = "scalar",
    .quantize = scalar_quantize,
    .dequantize = scalar_dequantize,
    .convert = scalar_convert,
    .check_finite = scalar_check_finite,
    .quantize_outliers = scalar_quantize_outliers,
    .dequantize_outliers = scalar_dequantize_outliers,
};
