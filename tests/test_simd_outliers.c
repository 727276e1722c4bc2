/* test_simd_outliers.c - int8 with outliers kept exact: every backend writes the scalar reference's bytes, and the reference keeps libkvtier(3)'s promise.
 *
 * Proves:
 *  - quantize_outliers / dequantize_outliers of every backend in simd_all()
 *    give byte-identical q, scales, outlier indices, f16 values and
 *    dequantized output to "scalar", for f32, f16 and bf16, dims 1..1024
 *    (fixed odd and even sizes plus random ones), n_out 0..16, on Gaussian
 *    data with planted outlier channels x10 / x30, many ties of magnitude
 *    (both signs), all-equal vectors, zeros, f16 subnormals, amax so small
 *    that 127 / amax overflows, magnitudes near the top of each type's
 *    range and runs of adjacent outliers; unaligned buffers included; also
 *    for calls of up to 23 groups, whose blocks of eight mix groups taking
 *    different paths, and for vectors of 2048 to 65536 elements;
 *  - the reference picks, for each group, the n_out largest |x| with ties to
 *    the lower index (checked against a naive selection here), stores them
 *    by ascending index with their f16 values, sets their q to 0 and scales
 *    the rest by R / 127, R being the largest |x| left; every non-outlier
 *    comes back within R/127 (R/254 plus the dtype's rounding), every
 *    outlier within f16 rounding plus the dtype's;
 *  - on keys with 4 channels x30 the relative RMS error of the other
 *    channels is <= 1 % with n_out = 4 (printed, with the n_out = 0 figure);
 *  - NaN or +-Inf anywhere (quiet or signalling, any group of a call of 3
 *    or 11, any position, the last lane of the last group included) gives
 *    -EINVAL from every backend, as do n_out > 16, n_out > dim and an
 *    unknown type; n_out == 0 on finite input equals plain quantize; an f32
 *    outlier beyond f16's range is kept as Inf (documented, not refused);
 *  - dequantize_outliers skips indices >= dim (it writes nothing outside
 *    the output, checked with guard bytes) and copies f16 values as they
 *    are (NaN bits included) to f16 output.
 */
#include <errno.h>
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "simd/simd.h"
#include "tests/simd_util.h"

static const enum kvt_elem test_elems[] = { KVT_ELEM_F32, KVT_ELEM_F16, KVT_ELEM_BF16 };
static const size_t fixed_dims[] = { 1, 2, 3, 7, 8, 15, 16, 17, 31, 33, 64, 100, 128, 129, 256, 1024 };

#define MAX_OUT 16
#define MAX_CHECKED_DIM 1024    /* the naive selection's reach; longer ones only vs scalar */

/* ---- helpers (the kernels' tests run alone under qemu, without helpers.c) ---- */

static double half_ulp(enum kvt_elem e, double v)   /* plus half the smallest subnormal */
{
    switch (e) {
    case KVT_ELEM_F16:
        return v * 0x1p-11 + 0x1p-25;
    case KVT_ELEM_BF16:
        return v * 0x1p-8 + 0x1p-134;
    case KVT_ELEM_F32:
        break;
    }
    return v * 0x1p-24 + 0x1p-150;
}

static const struct kvt_simd_ops *scalar_ops(void)
{
    const struct kvt_simd_ops *s = simd_by_name("scalar");

    assert_non_null(s);
    return s;
}

/* ---- inputs ------------------------------------------------------------------ */

enum { N_PATTERNS = 10 };

/* One group of pattern `pattern`. Magnitudes stay below 65504 / 300 before
 * the planted x30 and x10, so kept values fit in f16, except in pattern 8
 * (larger ones become Inf: what to do with those is the caller's choice). */
static void fill_group(void *buf, enum kvt_elem e, size_t first, size_t dim, int pattern,
                       struct rng *r)
{
    double sigma = pow(10.0, rng_unit(r) * 3.5 - 2);
    size_t planted[4] = { 0, dim / 3, dim / 2, dim - 1 };

    for (size_t i = 0; i < dim; i++) {
        double x = 0;

        switch (pattern) {
        case 0:     /* Gaussian with four channels x30 */
        case 1:     /* ... and scattered x10 */
            x = rng_gauss(r) * sigma;
            for (int k = 0; k < 4; k++)
                if (i == planted[k]) {
                    x *= 30;
                    break;
                }
            if (pattern == 1 && rng_next(r) % 16 == 0)
                x *= 10;
            break;
        case 2:     /* few magnitudes, both signs: ties everywhere */
            x = (double)(int)(rng_next(r) % 4) * (rng_next(r) % 2 ? -1.0 : 1.0);
            break;
        case 3:     /* all equal (sign alternating on odd i) */
            x = i % 2 && rng_next(r) % 2 ? -1.5 : 1.5;
            break;
        case 4:     /* zeros of both signs */
            x = i % 2 ? -0.0 : 0.0;
            break;
        case 5:     /* f16 subnormal magnitudes */
            x = (double)(rng_next(r) % 0x400) * 0x1p-24 * (i % 2 ? -1 : 1);
            break;
        case 6:     /* tiny amax after the outliers: 127 / amax overflows (f32, bf16) */
            x = i < 3 ? rng_gauss(r) : rng_gauss(r) * 1e-39;
            break;
        case 7:     /* one channel x30 among integers that tie at .5 when scaled */
            x = i == dim / 2 ? 3810.0 : (double)((int)(i % 254) - 127) + (i % 2 ? 0.5 : -0.5);
            break;
        case 8:     /* near the top of the type's range (f16: 65504; others 1e38) */
            x = (e == KVT_ELEM_F16 ? 65504.0 : 1e38) * (0.5 + 0.5 * rng_unit(r)) *
                (rng_next(r) % 2 ? -1 : 1);
            break;
        case 9:     /* a run of 20 adjacent outliers, all distinct, from dim / 4 */
            x = rng_gauss(r);
            if (i >= dim / 4 && i < dim / 4 + 20)
                x = (double)(i - dim / 4 + 1) * 100.0 * (i % 2 ? -1 : 1);
            break;
        }
        put_f32(buf, e, first + i, (float)x);
    }
}

/* ---- checks -------------------------------------------------------------------- */

/* Indices of the n_out largest |x| of a group, lower index first among
 * equals, ascending: a naive selection independent of the kernels. */
static void naive_outliers(const void *src, enum kvt_elem e, size_t first, size_t dim,
                           unsigned n_out, uint16_t *idx, double *rest_amax)
{
    unsigned char taken[MAX_CHECKED_DIM] = { 0 };

    for (unsigned j = 0; j < n_out; j++) {
        size_t best = dim;

        for (size_t i = 0; i < dim; i++)
            if (!taken[i] && (best == dim || fabs(get_f32(src, e, first + i)) >
                                             fabs(get_f32(src, e, first + best))))
                best = i;
        taken[best] = 1;
    }
    *rest_amax = 0;
    for (size_t i = 0, j = 0; i < dim; i++) {
        if (taken[i])
            idx[j++] = (uint16_t)i;
        else if (fabs(get_f32(src, e, first + i)) > *rest_amax)
            *rest_amax = fabs(get_f32(src, e, first + i));
    }
}

/* libkvtier(3)'s promise and simd.h's definition, on the scalar output. */
static void check_reference(const void *src, enum kvt_elem e, size_t n_groups, size_t dim,
                            unsigned n_out, const int8_t *q, const float *scales,
                            const uint16_t *idx, const uint16_t *f16, const void *y,
                            const char *what)
{
    for (size_t g = 0; g < n_groups; g++) {
        uint16_t want_idx[MAX_OUT];
        unsigned char is_out[MAX_CHECKED_DIM] = { 0 };
        double R, bound;

        naive_outliers(src, e, g * dim, dim, n_out, want_idx, &R);
        for (unsigned j = 0; j < n_out; j++) {
            size_t at = g * dim + want_idx[j];
            float x = get_f32(src, e, at), yv = get_f32(y, e, at);
            double err = fabs((double)yv - x);

            if (idx[g * n_out + j] != want_idx[j])
                fail_msg("%s %s dim %zu n_out %u group %zu: outlier %u at %u, want %u",
                         what, elem_name(e), dim, n_out, g, j, idx[g * n_out + j], want_idx[j]);
            if (f16[g * n_out + j] != simd_f32_to_f16(x))
                fail_msg("%s: outlier value %04x, want %04x", what, f16[g * n_out + j],
                         simd_f32_to_f16(x));
            if (q[at] != 0)
                fail_msg("%s: q at outlier %zu is %d", what, at, q[at]);
            if (fabs(x) >= 65520.0) {   /* kept as Inf of its sign (simd.h) */
                if (!(isinf(yv) && (yv < 0) == (x < 0)))
                    fail_msg("%s %s: outlier %zu came back %a for %a", what, elem_name(e), at, yv, x);
            } else if (!(err <= half_ulp(KVT_ELEM_F16, fabs(x)) + half_ulp(e, fabs(x) * (1 + 0x1p-10))))
                fail_msg("%s %s: outlier %zu came back %a for %a", what, elem_name(e), at, yv, x);
            is_out[want_idx[j]] = 1;
        }
        if (scales[g] != (float)R / 127.0f)
            fail_msg("%s %s dim %zu n_out %u: scale %a, R / 127 = %a",
                     what, elem_name(e), dim, n_out, scales[g], (float)R / 127.0f);
        bound = R / 254.0 + R * 0x1p-21 + 65 * 0x1p-149 + half_ulp(e, R * (1 + 0x1p-20));
        for (size_t i = 0; i < dim; i++) {
            size_t at = g * dim + i;
            double err = fabs((double)get_f32(y, e, at) - get_f32(src, e, at));

            if (is_out[i])
                continue;
            if (q[at] < -127)
                fail_msg("%s: q[%zu] = %d", what, at, q[at]);
            if (!(err <= bound) || !(err <= R / 127.0 + 65 * 0x1p-149))
                fail_msg("%s %s dim %zu n_out %u: |y - x| = %g > %g at %zu (x %a, R %a)",
                         what, elem_name(e), dim, n_out, err, bound, at,
                         get_f32(src, e, at), R);
        }
    }
}

static void fail_first_diff(const char *what, const char *backend, const char *op,
                            const void *got, const void *want, size_t bytes)
{
    const unsigned char *a = got, *b = want;

    for (size_t i = 0; i < bytes; i++)
        if (a[i] != b[i])
            fail_msg("%s: %s %s differs from scalar at byte %zu of %zu: 0x%02x vs 0x%02x",
                     what, backend, op, i, bytes, a[i], b[i]);
}

struct outputs {
    int8_t *q;
    float *scales;
    uint16_t *idx, *f16;
    unsigned char *y;
};

static void outputs_alloc(struct outputs *o, size_t n_groups, size_t dim, unsigned n_out,
                          enum kvt_elem e, size_t misalign)
{
    size_t n_kept = n_groups * n_out + 1;

    o->q = malloc(n_groups * dim + misalign);
    o->scales = malloc(n_groups * sizeof(float));
    o->idx = malloc(n_kept * 2);
    o->f16 = malloc(n_kept * 2);
    o->y = malloc(n_groups * dim * simd_elem_size(e) + misalign);
    assert_true(o->q && o->scales && o->idx && o->f16 && o->y);
}

static void outputs_free(struct outputs *o)
{
    free(o->q); free(o->scales); free(o->idx); free(o->f16); free(o->y);
}

/* Quantize with every backend and compare with scalar, which is checked
 * against the definition first. */
static void check_backends(const void *src_in, enum kvt_elem e, size_t n_groups, size_t dim,
                           unsigned n_out, size_t misalign, const char *what)
{
    const struct kvt_simd_ops *scalar = scalar_ops();
    const struct kvt_simd_ops *const *all = simd_all();
    size_t n = n_groups * dim, bytes = n * simd_elem_size(e), kept = n_groups * n_out * 2;
    unsigned char *src_buf = malloc(bytes + misalign), *src = src_buf + misalign;
    struct outputs ref, got;
    char label[160];

    assert_non_null(src_buf);
    memcpy(src, src_in, bytes);
    outputs_alloc(&ref, n_groups, dim, n_out, e, 0);
    outputs_alloc(&got, n_groups, dim, n_out, e, misalign);
    assert_int_equal(scalar->quantize_outliers(ref.q, ref.scales, ref.idx, ref.f16, src, e,
                                               n_groups, dim, n_out), 0);
    scalar->dequantize_outliers(ref.y, e, ref.q, ref.scales, ref.idx, ref.f16, n_groups, dim, n_out);
    if (dim <= MAX_CHECKED_DIM)
        check_reference(src, e, n_groups, dim, n_out, ref.q, ref.scales, ref.idx, ref.f16, ref.y,
                        what);

    snprintf(label, sizeof(label), "%s %s dim %zu groups %zu n_out %u", what, elem_name(e),
             dim, n_groups, n_out);
    for (size_t b = 0; all[b]; b++) {
        int8_t *q = got.q + misalign;
        unsigned char *y = got.y + misalign;

        memset(q, 0x55, n);
        memset(got.scales, 0x55, n_groups * sizeof(float));
        memset(got.idx, 0x55, kept);
        memset(got.f16, 0x55, kept);
        memset(y, 0x55, bytes);
        if (all[b]->quantize_outliers(q, got.scales, got.idx, got.f16, src, e, n_groups, dim, n_out))
            fail_msg("%s: %s refused finite input", label, all[b]->name);
        fail_first_diff(label, all[b]->name, "q", q, ref.q, n);
        fail_first_diff(label, all[b]->name, "scales", got.scales, ref.scales, n_groups * 4);
        fail_first_diff(label, all[b]->name, "indices", got.idx, ref.idx, kept);
        fail_first_diff(label, all[b]->name, "f16 values", got.f16, ref.f16, kept);
        all[b]->dequantize_outliers(y, e, ref.q, ref.scales, ref.idx, ref.f16, n_groups, dim, n_out);
        fail_first_diff(label, all[b]->name, "dequantize", y, ref.y, bytes);
        if (n_out == 0) {   /* plain quantize on finite input */
            all[b]->quantize(q, got.scales, src, e, n_groups, dim);
            fail_first_diff(label, all[b]->name, "n_out 0 vs quantize", q, ref.q, n);
        }
    }
    outputs_free(&ref);
    outputs_free(&got);
    free(src_buf);
}

/* ---- tests ---------------------------------------------------------------------- */

static void run_shape(struct rng *r, enum kvt_elem e, size_t dim, size_t n_groups, unsigned n_out,
                      int pattern, size_t misalign)
{
    void *src = malloc(n_groups * dim * simd_elem_size(e));
    char what[48];

    assert_non_null(src);
    /* Neighbouring groups take different patterns, hence different paths. */
    for (size_t g = 0; g < n_groups; g++)
        fill_group(src, e, g * dim, dim, (int)((pattern + g) % N_PATTERNS), r);
    snprintf(what, sizeof(what), "pattern %d", pattern);
    check_backends(src, e, n_groups, dim, n_out, misalign, what);
    free(src);
}

static void test_fixed_shapes(void **state)
{
    struct rng r = { 11 };
    const unsigned outs[] = { 0, 1, 2, 4, 5, 8, 15, 16 };

    (void)state;
    for (size_t t = 0; t < ARRAY_LEN(test_elems); t++)
        for (size_t d = 0; d < ARRAY_LEN(fixed_dims); d++)
            for (size_t o = 0; o < ARRAY_LEN(outs); o++)
                for (int p = 0; p < N_PATTERNS; p++)
                    if (outs[o] <= fixed_dims[d])
                        run_shape(&r, test_elems[t], fixed_dims[d], 1 + (size_t)p % 3, outs[o],
                                  p, (d + o) % 4);
}

static void test_random_shapes(void **state)
{
    struct rng r = { 2026 };

    (void)state;
    for (int k = 0; k < 600; k++) {
        enum kvt_elem e = test_elems[rng_next(&r) % 3];
        size_t dim = 1 + rng_next(&r) % 1024;
        unsigned n_out = (unsigned)(rng_next(&r) % 17);

        if (n_out > dim)
            n_out = (unsigned)dim;
        run_shape(&r, e, dim, 1 + rng_next(&r) % 6, n_out, (int)(rng_next(&r) % N_PATTERNS),
                  rng_next(&r) % 4);
    }
}

/* Calls of more groups than one block of eight, neighbours taking
 * different patterns (so different paths within one block), and short
 * last blocks. */
static void test_many_groups(void **state)
{
    const size_t dims[] = { 16, 64, 100, 128, 256 };
    const size_t groups[] = { 7, 8, 9, 16, 17, 23 };
    const unsigned outs[] = { 1, 4, 8, 15, 16 };
    struct rng r = { 77 };

    (void)state;
    for (size_t t = 0; t < ARRAY_LEN(test_elems); t++)
        for (size_t d = 0; d < ARRAY_LEN(dims); d++)
            for (size_t g = 0; g < ARRAY_LEN(groups); g++)
                for (size_t o = 0; o < ARRAY_LEN(outs); o++)
                    run_shape(&r, test_elems[t], dims[d], groups[g], outs[o],
                              (int)((d + g + o) % N_PATTERNS), (g + o) % 4);
}

/* Vectors longer than the naive check reaches, up to the 65536 elements
 * whose indices still fit in 16 bits: every backend against scalar. */
static void test_long_vectors(void **state)
{
    const size_t dims[] = { 2048, 4097, 65536 };
    const unsigned outs[] = { 1, 16 };
    struct rng r = { 91 };

    (void)state;
    for (size_t t = 0; t < ARRAY_LEN(test_elems); t++)
        for (size_t d = 0; d < ARRAY_LEN(dims); d++)
            for (size_t o = 0; o < ARRAY_LEN(outs); o++)
                run_shape(&r, test_elems[t], dims[d], dims[d] > 4097 ? 2 : 9, outs[o],
                          (int)(t + d + o) % N_PATTERNS, 1);
}

/* Relative RMS error over the non-planted channels of keys whose channels
 * 3, 40, 77, 120 are x30, as real keys' are. */
static double keys_rel_rms(const struct kvt_simd_ops *ops, enum kvt_elem e, unsigned n_out)
{
    const size_t dim = 128, n_groups = 512;
    const size_t planted[] = { 3, 40, 77, 120 };
    size_t n = dim * n_groups;
    void *src = malloc(n * simd_elem_size(e));
    struct outputs o;
    struct rng r = { 5 };
    double err2 = 0, sum2 = 0;

    assert_non_null(src);
    outputs_alloc(&o, n_groups, dim, n_out, e, 0);
    for (size_t i = 0; i < n; i++) {
        double x = rng_gauss(&r);

        for (size_t k = 0; k < ARRAY_LEN(planted); k++)
            if (i % dim == planted[k])
                x *= 30;
        put_f32(src, e, i, (float)x);
    }
    assert_int_equal(ops->quantize_outliers(o.q, o.scales, o.idx, o.f16, src, e, n_groups, dim, n_out), 0);
    ops->dequantize_outliers(o.y, e, o.q, o.scales, o.idx, o.f16, n_groups, dim, n_out);
    for (size_t i = 0; i < n; i++) {
        double x = get_f32(src, e, i), d = get_f32(o.y, e, i) - x;
        int is_planted = 0;

        for (size_t k = 0; k < ARRAY_LEN(planted); k++)
            is_planted |= i % dim == planted[k];
        if (is_planted)
            continue;
        err2 += d * d;
        sum2 += x * x;
    }
    outputs_free(&o);
    free(src);
    return sqrt(err2 / sum2);
}

static void test_keys_rms(void **state)
{
    (void)state;
    for (size_t t = 0; t < ARRAY_LEN(test_elems); t++) {
        double with = keys_rel_rms(simd_best(), test_elems[t], 4);
        double without = keys_rel_rms(simd_best(), test_elems[t], 0);

        print_message("keys %s, 4 channels x30: relative RMS error of the rest %.3f %% "
                      "with 4 outliers kept, %.3f %% with none\n",
                      elem_name(test_elems[t]), with * 100, without * 100);
        if (!(with <= 0.01))
            fail_msg("%s: relative RMS %.4f %% > 1 %%", elem_name(test_elems[t]), with * 100);
        assert_true(without > with);
    }
}

static void test_nonfinite_refused(void **state)
{
    const struct kvt_simd_ops *const *all = simd_all();
    const size_t dims[] = { 1, 7, 16, 33, 128, 129 };
    const unsigned outs[] = { 0, 1, 4, 16 };
    struct rng r = { 3 };

    (void)state;
    for (size_t t = 0; t < ARRAY_LEN(test_elems); t++)
        for (size_t d = 0; d < ARRAY_LEN(dims); d++)
            for (size_t o = 0; o < ARRAY_LEN(outs); o++)
                for (int kind = 0; kind < 8; kind++) {
                    enum kvt_elem e = test_elems[t];
                    size_t dim = dims[d], ng = kind < 4 ? 3 : 11, at;
                    unsigned n_out = outs[o];
                    void *src = malloc(ng * dim * simd_elem_size(e));
                    const float bad[] = { NAN, INFINITY, -INFINITY, -NAN };
                    struct outputs out;

                    if (n_out > dim) {
                        free(src);
                        continue;
                    }
                    assert_non_null(src);
                    outputs_alloc(&out, ng, dim, n_out, e, 0);
                    for (size_t g = 0; g < ng; g++)
                        fill_group(src, e, g * dim, dim, 0, &r);
                    /* first element, last, or anywhere in any group */
                    at = kind % 4 == 0 ? 0 : kind % 4 == 1 ? ng * dim - 1 : rng_next(&r) % (ng * dim);
                    put_f32(src, e, at, bad[kind % 4]);
                    if (kind % 4 == 3)  /* a signalling NaN, raw */
                        put_raw(src, e, at, e == KVT_ELEM_F32 ? 0x7f800001u
                                          : e == KVT_ELEM_F16 ? 0x7c01u : 0x7f81u);
                    for (size_t b = 0; all[b]; b++)
                        if (all[b]->quantize_outliers(out.q, out.scales, out.idx, out.f16, src, e,
                                                      ng, dim, n_out) != -EINVAL)
                            fail_msg("%s %s dim %zu n_out %u: non-finite at %zu not refused",
                                     all[b]->name, elem_name(e), dim, n_out, at);
                    outputs_free(&out);
                    free(src);
                }
}

static void test_bad_arguments(void **state)
{
    const struct kvt_simd_ops *const *all = simd_all();
    float src[32] = { 1.0f };
    int8_t q[32];
    float scales[1];
    uint16_t idx[20], f16[20];

    (void)state;
    for (size_t b = 0; all[b]; b++) {
        const struct kvt_simd_ops *ops = all[b];

        assert_int_equal(ops->quantize_outliers(q, scales, idx, f16, src, KVT_ELEM_F32, 1, 32, 17), -EINVAL);
        assert_int_equal(ops->quantize_outliers(q, scales, idx, f16, src, KVT_ELEM_F32, 1, 3, 4), -EINVAL);
        assert_int_equal(ops->quantize_outliers(q, scales, idx, f16, src, (enum kvt_elem)7, 1, 32, 4), -EINVAL);
        assert_int_equal(ops->quantize_outliers(q, scales, idx, f16, src, KVT_ELEM_F32, 1, 32, 16), 0);
        assert_int_equal(ops->quantize_outliers(q, scales, idx, f16, src, KVT_ELEM_F32, 1, 3, 3), 0);

        /* Beyond f16's range a kept value is Inf (simd.h): accepted here,
         * refusing such input is the caller's choice. */
        src[1] = -1e5f;
        assert_int_equal(ops->quantize_outliers(q, scales, idx, f16, src, KVT_ELEM_F32, 1, 32, 1), 0);
        assert_int_equal(idx[0], 1);
        assert_int_equal(f16[0], 0xfc00);
        assert_true(scales[0] == 1.0f / 127.0f);
        src[1] = 0.0f;
    }
}

/* Indices read back from disk may be anything: those >= dim are skipped. */
static void test_dequantize_bad_indices(void **state)
{
    const struct kvt_simd_ops *scalar = scalar_ops();
    const struct kvt_simd_ops *const *all = simd_all();
    const size_t dims[] = { 1, 5, 16, 100, 128 };
    struct rng r = { 17 };

    (void)state;
    for (size_t t = 0; t < ARRAY_LEN(test_elems); t++)
        for (size_t d = 0; d < ARRAY_LEN(dims); d++) {
            enum kvt_elem e = test_elems[t];
            size_t dim = dims[d], ng = 4, es = simd_elem_size(e), bytes = ng * dim * es;
            const unsigned n_out = 4;
            int8_t *q = malloc(ng * dim);
            float scales[4] = { 0.5f, 1e-3f, 0.0f, 7.25f };
            uint16_t idx[16], vals[16];
            unsigned char *plain = malloc(bytes), *want = malloc(bytes);
            unsigned char *got = malloc(bytes + 64);

            assert_true(q && plain && want && got);
            for (size_t i = 0; i < ng * dim; i++)
                q[i] = (int8_t)(rng_next(&r) % 255 - 127);
            for (unsigned j = 0; j < ng * n_out; j++) {
                const uint16_t wild[] = { (uint16_t)dim, (uint16_t)(dim + 1), 0xffff, 0x8000 };

                idx[j] = j % 2 ? wild[j / 2 % 4] : (uint16_t)(rng_next(&r) % dim);
                vals[j] = j % 7 == 3 ? 0x7c01 : (uint16_t)(rng_next(&r) % 0x7c00);
            }
            scalar->dequantize(plain, e, q, scales, ng, dim);
            memcpy(want, plain, bytes);
            for (size_t g = 0; g < ng; g++)
                for (unsigned j = 0; j < n_out; j++) {
                    uint16_t i = idx[g * n_out + j], h = vals[g * n_out + j];

                    if (i >= dim)
                        continue;
                    if (e == KVT_ELEM_F16)
                        memcpy(want + (g * dim + i) * 2, &h, 2);
                    else
                        put_f32(want, e, g * dim + i, simd_f16_to_f32(h));
                }
            for (size_t b = 0; all[b]; b++) {
                memset(got, 0xa5, bytes + 64);
                all[b]->dequantize_outliers(got, e, q, scales, idx, vals, ng, dim, n_out);
                fail_first_diff(elem_name(e), all[b]->name, "dequantize with bad indices",
                                got, want, bytes);
                for (size_t i = bytes; i < bytes + 64; i++)
                    if (got[i] != 0xa5)
                        fail_msg("%s %s dim %zu: wrote past the output at byte %zu",
                                 all[b]->name, elem_name(e), dim, i);
            }
            free(q); free(plain); free(want); free(got);
        }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fixed_shapes),
        cmocka_unit_test(test_random_shapes),
        cmocka_unit_test(test_many_groups),
        cmocka_unit_test(test_long_vectors),
        cmocka_unit_test(test_keys_rms),
        cmocka_unit_test(test_nonfinite_refused),
        cmocka_unit_test(test_bad_arguments),
        cmocka_unit_test(test_dequantize_bad_indices),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
