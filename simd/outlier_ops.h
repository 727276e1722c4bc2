/* outlier_ops.h - a vector backend's quantize_outliers,
 * dequantize_outliers and check_finite (simd.h), written once. sse2.c, avx2.c and neon.c
 * each include it after their own KERNEL outlier_block (quantize up to
 * SIMD_OUTLIER_BLOCK groups with their outliers: avx2_outliers.c for AVX2,
 * outlier_scan_block.h for the others), their quantize_finite (quantize,
 * or -EINVAL for NaN / Inf), their any_nonfinite and their plain
 * dequantize, with SIMD_OP(name)
 * naming the backend's functions (such as avx2_##name): so every backend
 * compiles it with its own instruction set, and the three cannot drift
 * apart. No include guard: it is meant to be included once per backend. */

/* Groups go in blocks of SIMD_OUTLIER_BLOCK through the backend's
 * outlier_block, which returns 0 or -EINVAL (NaN / Inf). */
KERNEL void quantize_outliers_groups(enum kvt_elem elem, int *rc, int8_t *dst, float *scales,
                                     uint16_t *out_idx, uint16_t *out_f16, const void *src,
                                     size_t n_groups, size_t dim, unsigned n_out)
{
    const size_t group_bytes = dim * (elem == KVT_ELEM_F32 ? 4 : 2);

    for (size_t g0 = 0; g0 < n_groups; g0 += SIMD_OUTLIER_BLOCK) {
        const size_t n = n_groups - g0 < SIMD_OUTLIER_BLOCK ? n_groups - g0 : SIMD_OUTLIER_BLOCK;
        const unsigned char *group[SIMD_OUTLIER_BLOCK];

        for (size_t k = 0; k < n; k++)
            group[k] = (const unsigned char *)src + (g0 + k) * group_bytes;
        if ((*rc = outlier_block(elem, group, n, dim, n_out, dst + g0 * dim, scales + g0,
                                 out_idx + g0 * n_out, out_f16 + g0 * n_out)) < 0)
            return;
    }
    *rc = 0;
}

static int SIMD_OP(quantize_outliers)(int8_t *dst, float *scales, uint16_t *out_idx,
                                  uint16_t *out_f16, const void *src, enum kvt_elem elem,
                                  size_t n_groups, size_t dim, unsigned n_out)
{
    int rc;

    if ((rc = simd_outliers_args_ok(elem, dim, n_out)) < 0)
        return rc;
    if (n_out == 0)     /* plain quantize of input known finite */
        return quantize_finite(dst, scales, src, elem, n_groups, dim);
    rc = -EINVAL;
    SIMD_BY_ELEM(quantize_outliers_groups, elem, &rc, dst, scales, out_idx, out_f16, src,
                 n_groups, dim, n_out);
    return rc;
}

static void SIMD_OP(dequantize_outliers)(void *dst, enum kvt_elem elem, const int8_t *src,
                                     const float *scales, const uint16_t *idx,
                                     const uint16_t *vals_f16, size_t n_groups, size_t dim,
                                     unsigned n_out)
{
    /* In runs of about 16 KiB of output, so that the outliers are written
     * over values still in L1: patching the whole output after
     * dequantizing all of it cost a third of the time on 4 MiB. */
    const size_t group_bytes = dim * simd_elem_size(elem);
    const size_t run = group_bytes >= 16384 ? 1 : group_bytes ? 16384 / group_bytes : n_groups + 1;

    if (!simd_elem_known(elem))
        return;
    for (size_t g = 0; g < n_groups; g += run) {
        size_t n = n_groups - g < run ? n_groups - g : run;
        unsigned char *out = (unsigned char *)dst + g * group_bytes;

        SIMD_OP(dequantize)(out, elem, src + g * dim, scales + g, n, dim);
        simd_patch_outliers(out, elem, idx + g * n_out, vals_f16 + g * n_out, n, dim, n_out);
    }
}

static int SIMD_OP(check_finite)(const void *src, enum kvt_elem elem, size_t n)
{
    return simd_elem_known(elem) && !any_nonfinite(src, elem, n) ? 0 : -EINVAL;
}
