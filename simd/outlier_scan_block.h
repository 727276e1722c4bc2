/* outlier_scan_block.h - outlier_block (outlier_ops.h) for a backend
 * that selects with its KERNEL outlier_scan, into the sorted list of
 * kernels.h, and the any_nonfinite and quantize_finite outlier_ops.h
 * wants, from the backend's group_max_abs_bits and plain quantize: sse2.c
 * and neon.c include it after outlier_scan, quantize_group_fast,
 * group_max_abs_bits and their quantize, before outlier_ops.h. No include
 * guard: it is meant to be included once per backend. */

/* Whether any of the n elements at src is NaN or Inf. */
static int any_nonfinite(const void *src, enum kvt_elem elem, size_t n)
{
    return group_max_abs_bits(src, elem, n) >= simd_inf_key(elem);
}

/* quantize, or -EINVAL for NaN or Inf, looked for first. */
static int quantize_finite(int8_t *dst, float *scales, const void *src, enum kvt_elem elem,
                           size_t n_groups, size_t dim)
{
    if (any_nonfinite(src, elem, n_groups * dim))
        return -EINVAL;
    SIMD_OP(quantize)(dst, scales, src, elem, n_groups, dim);
    return 0;
}

/* Each group's outliers by the scan first, then the block's divisions
 * together (no longer waiting on one group's selection each), then the
 * fast quantize pass (outliers included: their lanes may saturate, and are
 * then set to 0). A group whose 127 / amax overflows goes to scalar.c, as
 * in quantize. */
KERNEL int outlier_block(enum kvt_elem elem, const unsigned char *const group[SIMD_OUTLIER_BLOCK],
                         size_t n, size_t dim, unsigned n_out, int8_t *q, float *scales,
                         uint16_t *idx, uint16_t *vals_f16)
{
    float amax[SIMD_OUTLIER_BLOCK] = { 0 }, scale[SIMD_OUTLIER_BLOCK], inv[SIMD_OUTLIER_BLOCK];
    int rc;

    for (size_t k = 0; k < n; k++) {
        struct simd_topk t;

        simd_topk_init(&t, elem, n_out);
        if ((rc = outlier_scan(&t, group[k], elem, dim)) < 0)
            return rc;
        amax[k] = simd_topk_finish(&t, group[k], elem, n_out, idx + k * n_out,
                                   vals_f16 + k * n_out);
    }
    simd_group_scale_inv8(amax, scale, inv);
    memcpy(scales, scale, n * sizeof(float));
    for (size_t k = 0; k < n; k++) {
        if (inv[k] > FLT_MAX) {
            if ((rc = simd_quantize_outliers_group(q + k * dim, &scales[k], idx + k * n_out,
                                                   vals_f16 + k * n_out, group[k], elem, dim,
                                                   n_out)) < 0)
                return rc;
            continue;
        }
        quantize_group_fast(q + k * dim, group[k], elem, dim, inv[k]);
        for (unsigned j = 0; j < n_out; j++)
            q[k * dim + idx[k * n_out + j]] = 0;
    }
    return 0;
}
