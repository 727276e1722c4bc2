/* outlier_ops.h - a vector backend's quantize_outliers and
 * dequantize_outliers (simd.h), written once. sse2.c, avx2.c and neon.c
 * each include it, after their own KERNELs outlier_scan and
 * quantize_group_fast, their any_nonfinite and their plain quantize and
 * dequantize, with SIMD_OP(name) naming the backend's functions (such as
 * avx2_##name): so every backend compiles it with its own instruction set
 * and its own scan, and the three cannot drift apart. No include guard:
 * it is meant to be included once per backend. */

/* Every group through the vectorized scan, then the fast quantize pass
 * (outliers included: their lanes may saturate, and are then set to 0).
 * A group whose 127 / amax overflows goes to scalar.c, as in quantize. */
KERNEL void quantize_outliers_groups(enum kvt_elem elem, int *rc, int8_t *dst, float *scales,
                                     uint16_t *out_idx, uint16_t *out_f16, const void *src,
                                     size_t n_groups, size_t dim, unsigned n_out)
{
    const size_t group_bytes = dim * (elem == KVT_ELEM_F32 ? 4 : 2);

    for (size_t g = 0; g < n_groups; g++) {
        const unsigned char *s = (const unsigned char *)src + g * group_bytes;
        uint16_t *idx = out_idx + g * n_out;
        int8_t *q = dst + g * dim;
        struct simd_topk t;
        float amax, inv;

        simd_topk_init(&t, elem, n_out);
        if ((*rc = outlier_scan(&t, s, elem, dim)) < 0)
            return;
        amax = simd_topk_finish(&t, s, elem, n_out, idx, out_f16 + g * n_out);
        inv = simd_group_inv(amax);
        if (inv > FLT_MAX) {
            *rc = simd_quantize_outliers_group(q, &scales[g], idx, out_f16 + g * n_out, s,
                                               elem, dim, n_out);
            if (*rc < 0)
                return;
            continue;
        }
        scales[g] = simd_group_scale(amax);
        quantize_group_fast(q, s, elem, dim, inv);
        for (unsigned j = 0; j < n_out; j++)
            q[idx[j]] = 0;
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
    if (n_out == 0) {   /* plain quantize, once the input is known finite */
        if (any_nonfinite(src, elem, n_groups * dim))
            return -EINVAL;
        SIMD_OP(quantize)(dst, scales, src, elem, n_groups, dim);
        return 0;
    }
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
    if (!simd_elem_known(elem))
        return;
    SIMD_OP(dequantize)(dst, elem, src, scales, n_groups, dim);
    simd_patch_outliers(dst, elem, idx, vals_f16, n_groups, dim, n_out);
}
