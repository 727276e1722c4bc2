/* outlier_scan_block.h - outlier_block (outlier_ops.h) for a backend
 * that selects with its KERNEL outlier_scan, into the sorted list of
 * kernels.h: sse2.c and neon.c include it after outlier_scan and
 * quantize_group_fast, before outlier_ops.h. No include guard: it is
 * meant to be included once per backend. */

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
