/* test_simd.c - every SIMD backend on this CPU writes the scalar reference's exact bytes, and the reference is right.
 *
 * Proves:
 *  - dispatch: simd_best() is stable and one of simd_all(), simd_all() is
 *    NULL-terminated and ends with "scalar", simd_by_name() finds only
 *    usable backends;
 *  - every backend in simd_all() gives byte-identical quantize output (int8
 *    and scales), dequantize output and convert output to "scalar", for f32,
 *    f16 and bf16, dims {1,3,7,8,15,16,31,64,100,128,129,256,1024} x groups
 *    {1,2,5,33}, on Gaussian data with outliers and on edge cases: zeros,
 *    -0, NaN (quiet and signalling), +-Inf, f16 subnormals, 65504, values
 *    that land exactly on .5 before rounding, and amax so small that
 *    127 / amax overflows; unaligned buffers included;
 *  - the quantize contract on the reference: scale == amax / 127, q in
 *    [-127, 127], non-finite inputs give q == 0 and y == +0, and
 *    |dequant(quant(x)) - x| <= amax/254 (+ f32 error terms) + the rounding
 *    of the dtype, which is well inside the amax/127 promised (except that
 *    for f32 amax within ~2^-24 of FLT_MAX, 127 * scale rounds to Inf: a
 *    limit of the formula in simd.h, tolerated and noted where checked);
 *  - check_finite of every backend finds a NaN (quiet, signalling, negative)
 *    or +-Inf at every position of every length 1..64 (each lane of each
 *    vector width, each tail) and at the ends and tails of longer arrays,
 *    unaligned ones included, for f32, f16 and bf16; and passes -0,
 *    subnormals and the largest finite value (Inf's bits minus one);
 *  - the reference conversions: f16 -> f32 -> f16 is exact for all 65536
 *    patterns (NaN stays NaN, made quiet, payload kept), f32 -> f16 and
 *    f32 -> bf16 round half to even (checked against an independent double
 *    computation on every tie, its neighbours and a stride over all f32,
 *    and against _Float16 casts where the compiler has them).
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

static const size_t test_dims[] = { 1, 3, 7, 8, 15, 16, 31, 64, 100, 128, 129, 256, 1024 };
static const size_t test_groups[] = { 1, 2, 5, 33 };
static const enum kvt_elem test_elems[] = { KVT_ELEM_F32, KVT_ELEM_F16, KVT_ELEM_BF16 };

/* ---- helpers ------------------------------------------------------------------ */

/* Raw encodings of special values, per element type. */
struct specials {
    uint32_t sign, qnan, snan, inf, min_sub, max_finite;
};

static struct specials specials_of(enum kvt_elem e)
{
    switch (e) {
    case KVT_ELEM_F16:
        return (struct specials){ 0x8000, 0x7e00, 0x7c01, 0x7c00, 0x0001, 0x7bff };
    case KVT_ELEM_BF16:
        return (struct specials){ 0x8000, 0x7fc0, 0x7f81, 0x7f80, 0x0001, 0x7f7f };
    case KVT_ELEM_F32:
        break;
    }
    return (struct specials){ 0x80000000u, 0x7fc00000, 0x7f800001, 0x7f800000, 0x1, 0x7f7fffff };
}

static const struct kvt_simd_ops *scalar_ops(void)
{
    const struct kvt_simd_ops *s = simd_by_name("scalar");

    assert_non_null(s);
    return s;
}

/* ---- inputs ---------------------------------------------------------------------- */

/* One group of Gaussian values of a random magnitude with ~1/64 outliers;
 * with `specials`, sometimes one NaN / Inf / -0 / subnormal / max value. */
static void fill_gaussian(void *buf, enum kvt_elem e, size_t first, size_t dim,
                          struct rng *r, int with_specials)
{
    struct specials sp = specials_of(e);
    double sigma = pow(10.0, e == KVT_ELEM_F16 ? rng_unit(r) * 5 - 3 : rng_unit(r) * 6 - 3);

    for (size_t i = 0; i < dim; i++) {
        double x = rng_gauss(r) * sigma;

        if (rng_next(r) % 64 == 0)
            x *= 10 + 50 * rng_unit(r);
        if (e == KVT_ELEM_F16)
            x = fmax(-65504.0, fmin(65504.0, x));
        put_f32(buf, e, first + i, (float)x);
    }
    if (with_specials && rng_next(r) % 4 == 0) {
        uint32_t pick[] = { sp.qnan, sp.snan, sp.inf, 0, sp.min_sub, sp.max_finite };
        uint32_t sign = rng_next(r) % 2 ? sp.sign : 0;

        put_raw(buf, e, first + rng_next(r) % dim, pick[rng_next(r) % ARRAY_LEN(pick)] | sign);
    }
}

enum { N_EDGE_PATTERNS = 13 };

/* One group of edge case `pattern`. */
static void fill_edge(void *buf, enum kvt_elem e, size_t first, size_t dim,
                      int pattern, struct rng *r)
{
    struct specials sp = specials_of(e);

    for (size_t i = 0; i < dim; i++) {
        size_t at = first + i;
        uint32_t sign = i % 2 ? sp.sign : 0;

        switch (pattern) {
        case 0:     /* all zeros */
            put_raw(buf, e, at, 0);
            break;
        case 1:     /* zeros of both signs */
            put_raw(buf, e, at, sign);
            break;
        case 2:     /* NaNs only: amax is 0 */
            put_raw(buf, e, at, (i % 3 ? sp.qnan : sp.snan) | sign);
            break;
        case 3:     /* Infs only */
            put_raw(buf, e, at, sp.inf | sign);
            break;
        case 4:     /* NaN and Inf among ordinary values */
            if (i % 5 == 1)
                put_raw(buf, e, at, (i % 2 ? sp.inf : sp.qnan) | sign);
            else if (i % 7 == 3)
                put_raw(buf, e, at, sp.snan | sign);
            else
                put_f32(buf, e, at, (float)rng_gauss(r));
            break;
        case 5:     /* f16 subnormal magnitudes (raw for f16, as values otherwise) */
            if (e == KVT_ELEM_F16)
                put_raw(buf, e, at, (uint32_t)(rng_next(r) % 0x400) | sign);
            else
                put_f32(buf, e, at, (float)(rng_next(r) % 0x400) * 0x1p-24f * (sign ? -1.0f : 1.0f));
            break;
        case 6:     /* the f16 maximum 65504 (and type max) among large values */
            if (i % 9 == 0)
                put_f32(buf, e, at, sign ? -65504.0f : 65504.0f);
            else if (i % 9 == 4 && e != KVT_ELEM_F16)
                put_raw(buf, e, at, sp.max_finite | sign);
            else
                put_f32(buf, e, at, (float)(rng_gauss(r) * 20000.0));
            break;
        case 7:     /* amax 127 makes inv 1: x * inv = k + 0.5 exactly */
            put_f32(buf, e, at, i == 0 ? 127.0f
                    : (float)((int)(i % 254) - 127) + (i % 2 ? 0.5f : -0.5f));
            break;
        case 8:     /* amax 254 makes inv 0.5: odd integers land on .5 */
            put_f32(buf, e, at, i == 0 ? -254.0f : (float)(2 * (int)(i % 127) + 1) * (sign ? -1.0f : 1.0f));
            break;
        case 9:     /* tiny amax: 127 / amax overflows for f32 and bf16 */
            if (e == KVT_ELEM_F16)
                put_raw(buf, e, at, (uint32_t)(i % 3) | sign);
            else
                put_raw(buf, e, at, (uint32_t)(rng_next(r) % 200) | sign);
            break;
        case 10:    /* tiny normal amax near 127 / FLT_MAX */
            put_f32(buf, e, at, (float)(rng_gauss(r) * 1e-37));
            break;
        case 11:    /* one non-zero value */
            put_f32(buf, e, at, i == dim / 2 ? -3.25f : 0.0f);
            break;
        case 12:    /* the type's extremes: max finite next to min subnormal */
            put_raw(buf, e, at, (i % 2 ? sp.max_finite : sp.min_sub) | (i % 3 ? sp.sign : 0));
            break;
        }
    }
}

/* ---- checks ---------------------------------------------------------------------- */

/* Half an ulp of the dtype at magnitude v, plus half its smallest subnormal. */
static double dtype_half_ulp(enum kvt_elem e, double v)
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

/* The simd.h contract, on the scalar reference's output. */
static void check_contract(const void *src, enum kvt_elem e, size_t n_groups, size_t dim,
                           const int8_t *q, const float *scales, const void *y,
                           const char *what)
{
    for (size_t g = 0; g < n_groups; g++) {
        float amax = 0.0f;
        double bound;

        for (size_t i = 0; i < dim; i++) {
            float a = fabsf(get_f32(src, e, g * dim + i));

            if (isfinite(a) && a > amax)
                amax = a;
        }
        if (bits_of(scales[g]) != bits_of(amax / 127.0f))
            fail_msg("%s %s dim %zu group %zu: scale %a, amax / 127 = %a",
                     what, elem_name(e), dim, g, scales[g], amax / 127.0f);

        /* Rounding x * inv to an integer costs at most scale / 2 = amax / 254;
         * the f32 products and the scale add a few ulps of amax (and up to
         * 64 f32 subnormal steps when the scale itself is subnormal); then
         * the result is rounded to the dtype. */
        bound = amax / 254.0 + amax * 0x1p-21 + 65 * 0x1p-149 +
                dtype_half_ulp(e, amax * (1 + 0x1p-20));
        for (size_t i = 0; i < dim; i++) {
            size_t at = g * dim + i;
            float x = get_f32(src, e, at), yv = get_f32(y, e, at);
            double err = fabs((double)yv - (double)x);

            if (q[at] == -128)
                fail_msg("%s %s dim %zu: q[%zu] = %d out of range", what, elem_name(e), dim, at, q[at]);
            if (!isfinite(x)) {
                if (q[at] != 0 || bits_of(yv) != 0)
                    fail_msg("%s %s dim %zu: non-finite x[%zu] gave q %d y %a",
                             what, elem_name(e), dim, at, q[at], yv);
                continue;
            }
            /* A limit of the formula, not of the kernels: for f32 amax
             * within ~2^-24 of FLT_MAX, q * scale with |q| = 127 can round
             * past FLT_MAX and dequantize to Inf. */
            if (isinf(yv) && isinf((float)q[at] * scales[g]))
                continue;
            if (!(err <= bound) || !(err <= amax / 127.0 + 65 * 0x1p-149))
                fail_msg("%s %s dim %zu: |y - x| = %g > bound %g at %zu (x %a y %a amax %a q %d)",
                         what, elem_name(e), dim, err, bound, at, x, yv, amax, q[at]);
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

/* Quantize and dequantize src with every backend; all must match scalar,
 * and scalar must keep the contract. `misalign` shifts the byte buffers. */
static void check_quantize(const void *src_in, enum kvt_elem e, size_t n_groups, size_t dim,
                           size_t misalign, const char *what)
{
    const struct kvt_simd_ops *scalar = scalar_ops();
    const struct kvt_simd_ops *const *all = simd_all();
    size_t n = n_groups * dim, bytes = n * simd_elem_size(e);
    unsigned char *src_buf = malloc(bytes + misalign), *src = src_buf + misalign;
    unsigned char *y_buf = malloc(bytes + misalign), *y = y_buf + misalign;
    unsigned char *y_ref = malloc(bytes);
    int8_t *q_buf = malloc(n + misalign), *q = q_buf + misalign, *q_ref = malloc(n);
    float *s = malloc(n_groups * sizeof(float)), *s_ref = malloc(n_groups * sizeof(float));
    char label[160];

    assert_true(src_buf && y_buf && y_ref && q_buf && q_ref && s && s_ref);
    memcpy(src, src_in, bytes);
    scalar->quantize(q_ref, s_ref, src, e, n_groups, dim);
    scalar->dequantize(y_ref, e, q_ref, s_ref, n_groups, dim);
    check_contract(src, e, n_groups, dim, q_ref, s_ref, y_ref, what);

    snprintf(label, sizeof(label), "%s %s dim %zu groups %zu", what, elem_name(e), dim, n_groups);
    for (size_t b = 0; all[b]; b++) {
        memset(q, 0x55, n);
        memset(s, 0x55, n_groups * sizeof(float));
        memset(y, 0x55, bytes);
        all[b]->quantize(q, s, src, e, n_groups, dim);
        fail_first_diff(label, all[b]->name, "quantize q", q, q_ref, n);
        fail_first_diff(label, all[b]->name, "quantize scales", s, s_ref, n_groups * sizeof(float));
        all[b]->dequantize(y, e, q_ref, s_ref, n_groups, dim);
        fail_first_diff(label, all[b]->name, "dequantize", y, y_ref, bytes);
    }
    free(src_buf); free(y_buf); free(y_ref); free(q_buf); free(q_ref); free(s); free(s_ref);
}

/* Convert n elements of src (type se) to every type with every backend. */
static void check_convert(const void *src, enum kvt_elem se, size_t n, const char *what)
{
    const struct kvt_simd_ops *scalar = scalar_ops();
    const struct kvt_simd_ops *const *all = simd_all();
    char label[160];

    for (size_t d = 0; d < ARRAY_LEN(test_elems); d++) {
        enum kvt_elem de = test_elems[d];
        size_t bytes = n * simd_elem_size(de);
        unsigned char *want = malloc(bytes + 1), *got = malloc(bytes + 1);

        assert_true(want && got);
        scalar->convert(want, de, src, se, n);
        if (de == se && memcmp(want, src, bytes) != 0)
            fail_msg("%s: scalar convert %s -> %s is not a copy", what, elem_name(se), elem_name(de));
        snprintf(label, sizeof(label), "%s %s -> %s n %zu", what, elem_name(se), elem_name(de), n);
        for (size_t b = 0; all[b]; b++) {
            memset(got, 0x55, bytes + 1);
            all[b]->convert(got, de, src, se, n);
            fail_first_diff(label, all[b]->name, "convert", got, want, bytes);
            if (got[bytes] != 0x55)
                fail_msg("%s: %s convert wrote past the end", label, all[b]->name);
        }
        free(want);
        free(got);
    }
}

/* ---- tests: dispatch -------------------------------------------------------------- */

static void test_dispatch(void **state)
{
    const struct kvt_simd_ops *const *all;
    char names[128] = "";
    int found_best = 0;
    size_t n;

    (void)state;
    /* No threads race the one-time probe here: pthread_create hangs in
     * dynamically linked aarch64 programs under qemu-user 7.2, where this
     * test also runs. The probe relies on pthread_once for that. */
    assert_non_null(simd_best());
    assert_ptr_equal(simd_best(), simd_best());
    all = simd_all();
    for (n = 0; all[n]; n++) {
        assert_ptr_equal(simd_by_name(all[n]->name), all[n]);
        assert_non_null(all[n]->quantize);
        assert_non_null(all[n]->dequantize);
        assert_non_null(all[n]->convert);
        assert_non_null(all[n]->check_finite);
        found_best |= all[n] == simd_best();
        strncat(names, " ", sizeof(names) - strlen(names) - 1);
        strncat(names, all[n]->name, sizeof(names) - strlen(names) - 1);
    }
    assert_true(found_best);
    assert_string_equal(all[n - 1]->name, "scalar");
    if (!getenv("KVTIER_SIMD"))
        assert_ptr_equal(simd_best(), all[0]);
    assert_null(simd_by_name("no-such-backend"));
    assert_null(simd_by_name(NULL));
    assert_int_equal(simd_elem_size(KVT_ELEM_F32), 4);
    assert_int_equal(simd_elem_size(KVT_ELEM_F16), 2);
    assert_int_equal(simd_elem_size(KVT_ELEM_BF16), 2);
    assert_int_equal(simd_elem_size((enum kvt_elem)7), 0);
    print_message("backends tested:%s (best: %s)\n", names, simd_best()->name);
}

/* ---- tests: the reference conversions --------------------------------------------- */

/* Round |x| (a double holding an f32) to a binary format with p significant
 * bits, minimum normal exponent emin and largest finite max_finite, half to
 * even, independently of the code under test. */
static double ref_round(double x, int p, int emin, double max_finite)
{
    double ax = fabs(x), quantum, r;
    int e;

    if (ax == 0.0 || isinf(ax))
        return x;
    e = ilogb(ax);
    if (e < emin)
        e = emin;
    quantum = ldexp(1.0, e - (p - 1));
    r = rint(ax / quantum) * quantum;     /* exact: scaling by powers of two */
    if (r > max_finite)
        r = INFINITY;
    return copysign(r, x);
}

static void check_f32_to_f16(float f)
{
    uint16_t h = simd_f32_to_f16(f);
    uint32_t u = bits_of(f);

    if (isnan(f)) {
        uint16_t want = (uint16_t)(((u >> 16) & 0x8000) | 0x7e00 | ((u >> 13) & 0x3ff));

        if (h != want)
            fail_msg("f32 NaN %08x -> f16 %04x, want quiet %04x", u, h, want);
        return;
    }
    double want = ref_round(f, 11, -14, 65504.0);
    float got = simd_f16_to_f32(h);

    if ((double)got != want || !signbit(got) != !signbit(want))
        fail_msg("f32 %a (%08x) -> f16 %04x = %a, want %a", f, u, h, got, want);
#ifdef __FLT16_MAX__
    _Float16 hw = (_Float16)f;
    uint16_t hw_bits;

    memcpy(&hw_bits, &hw, 2);
    if (hw_bits != h)
        fail_msg("f32 %a -> f16 %04x, _Float16 cast gives %04x", f, h, hw_bits);
#endif
}

static void check_f32_to_bf16(float f)
{
    uint16_t b = simd_f32_to_bf16(f);
    uint32_t u = bits_of(f);

    if (isnan(f)) {
        if (b != (uint16_t)((u >> 16) | 0x40))
            fail_msg("f32 NaN %08x -> bf16 %04x, want quiet %04x", u, b, (u >> 16) | 0x40);
        return;
    }
    double want = ref_round(f, 8, -126, 0x1.fep127);
    float got = simd_bf16_to_f32(b);

    if ((double)got != want || !signbit(got) != !signbit(want))
        fail_msg("f32 %a (%08x) -> bf16 %04x = %a, want %a", f, u, b, got, want);
}

/* An f32 sample for narrowing: every tie between neighbouring f16 and bf16
 * values, one f32 ulp either side of it, and a stride over all 2^32 bit
 * patterns. Returns the count; *out is malloc'd. */
static size_t f32_narrowing_sample(float **out)
{
    size_t cap = 65536 * 6 * 2 + (1u << 20) + 16, n = 0;
    float *v = malloc(cap * sizeof(float));

    assert_non_null(v);
    for (uint32_t h = 0; h < 0x7c00; h++) {
        double lo = simd_f16_to_f32((uint16_t)h);
        double hi = h == 0x7bff ? 65536.0 : simd_f16_to_f32((uint16_t)(h + 1));
        float mid = (float)((lo + hi) / 2);                 /* exact in f32 */

        v[n++] = mid;
        v[n++] = nextafterf(mid, 0.0f);
        v[n++] = nextafterf(mid, INFINITY);
    }
    for (uint32_t b = 0; b < 0x7f80; b++) {
        float mid = float_of(b << 16 | 0x8000);

        v[n++] = mid;
        v[n++] = float_of(b << 16 | 0x7fff);
        v[n++] = float_of(b << 16 | 0x8001);
    }
    for (size_t i = 0, half = n; i < half; i++)
        v[n++] = -v[i];
    for (uint64_t u = 0; u < (1ull << 32); u += 4099)
        v[n++] = float_of((uint32_t)u);
    assert_true(n <= cap);
    *out = v;
    return n;
}

static void test_f16_all_patterns(void **state)
{
    (void)state;
    for (uint32_t h = 0; h < 65536; h++) {
        float f = simd_f16_to_f32((uint16_t)h);
        uint32_t u = bits_of(f), exp = (h >> 10) & 0x1f, mant = h & 0x3ff;
        uint16_t back = simd_f32_to_f16(f);

        if (exp == 0x1f && mant) {      /* NaN: quiet, payload kept both ways */
            uint32_t want = (h & 0x8000) << 16 | 0x7fc00000 | mant << 13;

            if (u != want || back != (h | 0x0200))
                fail_msg("f16 NaN %04x -> f32 %08x (want %08x) -> f16 %04x", h, u, want, back);
            continue;
        }
        double mag = exp == 0x1f ? INFINITY
                   : exp == 0 ? ldexp(mant, -24) : ldexp(1024 + mant, (int)exp - 25);
        double want = h & 0x8000 ? -mag : mag;

        if ((double)f != want || !signbit(f) != !signbit(want))
            fail_msg("f16 %04x -> %a, want %a", h, f, want);
        if (back != h)
            fail_msg("f16 %04x -> f32 %a -> f16 %04x", h, f, back);
#ifdef __FLT16_MAX__
        _Float16 hw;
        uint16_t h16 = (uint16_t)h;

        memcpy(&hw, &h16, 2);
        if (bits_of((float)hw) != u)
            fail_msg("f16 %04x -> %08x, _Float16 cast gives %08x", h, u, bits_of((float)hw));
#endif
    }
#ifndef __FLT16_MAX__
    print_message("no _Float16 on this compiler: f16 checked against double only\n");
#endif
}

static void test_narrowing_rounds_half_even(void **state)
{
    float *v;
    size_t n = f32_narrowing_sample(&v);
    const float odd[] = { 65504.0f, 65519.99f, 65520.0f, 65536.0f, -65520.0f, 0x1p-25f,
                          0x1.8p-24f, 0x1p-26f, -0.0f, FLT_MAX, FLT_TRUE_MIN, INFINITY,
                          -INFINITY, NAN, float_of(0x7f800001), float_of(0xffa00000),
                          float_of(0x7f80ffff), float_of(0x7fff0000) };

    (void)state;
    for (size_t i = 0; i < n; i++) {
        check_f32_to_f16(v[i]);
        check_f32_to_bf16(v[i]);
    }
    for (size_t i = 0; i < ARRAY_LEN(odd); i++) {
        check_f32_to_f16(odd[i]);
        check_f32_to_bf16(odd[i]);
    }
    for (uint32_t b = 0; b < 65536; b++)
        assert_int_equal(bits_of(simd_bf16_to_f32((uint16_t)b)), b << 16);
    free(v);
}

/* ---- tests: backends against scalar ------------------------------------------------ */

static void test_quantize_random(void **state)
{
    struct rng r = { 42 };

    (void)state;
    for (size_t t = 0; t < ARRAY_LEN(test_elems); t++)
        for (size_t d = 0; d < ARRAY_LEN(test_dims); d++)
            for (size_t c = 0; c < ARRAY_LEN(test_groups); c++) {
                enum kvt_elem e = test_elems[t];
                size_t dim = test_dims[d], ng = test_groups[c];
                void *src = malloc(ng * dim * simd_elem_size(e));

                assert_non_null(src);
                for (size_t g = 0; g < ng; g++)
                    fill_gaussian(src, e, g * dim, dim, &r, 0);
                check_quantize(src, e, ng, dim, 0, "gaussian");
                for (size_t g = 0; g < ng; g++)
                    fill_gaussian(src, e, g * dim, dim, &r, 1);
                check_quantize(src, e, ng, dim, (d + c) % 4, "gaussian+specials unaligned");
                free(src);
            }
}

static void test_quantize_edges(void **state)
{
    struct rng r = { 7 };

    (void)state;
    for (size_t t = 0; t < ARRAY_LEN(test_elems); t++)
        for (size_t d = 0; d < ARRAY_LEN(test_dims); d++)
            for (size_t c = 0; c < ARRAY_LEN(test_groups); c++)
                for (int first = 0; first < N_EDGE_PATTERNS; first++) {
                    enum kvt_elem e = test_elems[t];
                    size_t dim = test_dims[d], ng = test_groups[c];
                    void *src = malloc(ng * dim * simd_elem_size(e));
                    char what[64];

                    /* Neighbouring groups take different paths (fast, NaN, tiny). */
                    assert_non_null(src);
                    for (size_t g = 0; g < ng; g++)
                        fill_edge(src, e, g * dim, dim, (int)((first + g) % N_EDGE_PATTERNS), &r);
                    snprintf(what, sizeof(what), "edge pattern %d", first);
                    check_quantize(src, e, ng, dim, 0, what);
                    free(src);
                }
}

/* Dequantize is also defined for int8 and scales quantize never makes
 * (-128, zero, negative, subnormal, huge and infinite scales). */
static void test_dequantize_any_input(void **state)
{
    const struct kvt_simd_ops *scalar = scalar_ops();
    const struct kvt_simd_ops *const *all = simd_all();
    const float odd_scales[] = { 0.0f, -0.0f, FLT_TRUE_MIN, 1e-40f, 1e-30f, FLT_MAX / 127.0f,
                                 1e30f, -1.5f, INFINITY, 3.0e-8f, 515.779527f };
    struct rng r = { 99 };
    char label[96];

    (void)state;
    for (size_t t = 0; t < ARRAY_LEN(test_elems); t++)
        for (size_t d = 0; d < ARRAY_LEN(test_dims); d++) {
            enum kvt_elem e = test_elems[t];
            size_t dim = test_dims[d], ng = 33, n = ng * dim, bytes = n * simd_elem_size(e);
            int8_t *q = malloc(n);
            float *s = malloc(ng * sizeof(float));
            unsigned char *want = malloc(bytes), *got = malloc(bytes);

            assert_true(q && s && want && got);
            for (size_t i = 0; i < n; i++)
                q[i] = (int8_t)(rng_next(&r) & 0xff);
            for (size_t g = 0; g < ng; g++)
                s[g] = g < ARRAY_LEN(odd_scales) ? odd_scales[g]
                                                 : (float)(pow(10.0, rng_unit(&r) * 8 - 4));
            scalar->dequantize(want, e, q, s, ng, dim);
            snprintf(label, sizeof(label), "any-input %s dim %zu", elem_name(e), dim);
            for (size_t b = 0; all[b]; b++) {
                all[b]->dequantize(got, e, q, s, ng, dim);
                fail_first_diff(label, all[b]->name, "dequantize", got, want, bytes);
            }
            free(q); free(s); free(want); free(got);
        }
}

static void test_convert(void **state)
{
    struct rng r = { 1234 };
    uint16_t *all16 = malloc(65536 * 2);
    float *sample;
    size_t n_sample = f32_narrowing_sample(&sample);

    (void)state;
    assert_non_null(all16);
    /* Every f16 and every bf16 bit pattern, NaNs included. */
    for (uint32_t h = 0; h < 65536; h++)
        all16[h] = (uint16_t)h;
    check_convert(all16, KVT_ELEM_F16, 65536, "all patterns");
    check_convert(all16, KVT_ELEM_BF16, 65536, "all patterns");
    /* Every rounding tie and its neighbours, and a stride over all f32. */
    check_convert(sample, KVT_ELEM_F32, n_sample, "narrowing sample");

    /* Lengths that exercise every tail, with specials sprinkled in. */
    for (size_t t = 0; t < ARRAY_LEN(test_elems); t++)
        for (size_t d = 0; d < ARRAY_LEN(test_dims); d++)
            for (size_t c = 0; c < ARRAY_LEN(test_groups); c++) {
                enum kvt_elem e = test_elems[t];
                size_t dim = test_dims[d], ng = test_groups[c];
                unsigned char *buf = malloc(ng * dim * simd_elem_size(e) + 2);

                assert_non_null(buf);
                for (size_t g = 0; g < ng; g++)
                    fill_gaussian(buf + 2, e, g * dim, dim, &r, 1);
                check_convert(buf + 2, e, ng * dim, "gaussian");
                check_convert(buf + 1, e, ng * dim / 2, "unaligned");
                free(buf);
            }
    free(all16);
    free(sample);
}

/* Large same-type converts stream past the caches on x86 (kernels.h): every
 * byte copied, at every destination and source alignment, none past the end. */
static void test_stream_copy(void **state)
{
    const size_t bytes = SIMD_STREAM_MIN_BYTES + 77, guard = 64;
    unsigned char *src = malloc(bytes + 32), *dst = malloc(bytes + 32 + guard);
    const struct kvt_simd_ops *const *all = simd_all();

    (void)state;
    assert_non_null(src);
    assert_non_null(dst);
    for (size_t i = 0; i < bytes + 32; i++)
        src[i] = (unsigned char)(i * 131 + 7);
    for (size_t d = 0; d < 17; d++)
        for (size_t so = 0; so < 3; so++) {
            memset(dst, 0xa5, bytes + 32 + guard);
            for (size_t b = 0; all[b]; b++) {
                all[b]->convert(dst + d, KVT_ELEM_BF16, src + so, KVT_ELEM_BF16, bytes / 2);
                if (memcmp(dst + d, src + so, bytes / 2 * 2))
                    fail_msg("%s: a %zu-byte copy to offset %zu differs", all[b]->name, bytes, d);
                for (size_t g = d + bytes / 2 * 2; g < bytes + 32 + guard; g++)
                    if (dst[g] != 0xa5)
                        fail_msg("%s: the copy wrote past its end", all[b]->name);
            }
        }
    free(src);
    free(dst);
}

/* ---- tests: the finiteness check -------------------------------------------- */

/* Lengths 1..64 put the bad value at every lane of every vector width and
 * in every tail; longer ones at the ends, the first blocks and the tail. */
static int finite_spot(size_t n, size_t at)
{
    return n <= 64 || at < 33 || at == n / 2 || at + 17 >= n;
}

static void test_check_finite(void **state)
{
    const struct kvt_simd_ops *const *all = simd_all();
    const size_t longer[] = { 100, 129, 256, 1000, 4099 };
    struct rng r = { 11 };

    (void)state;
    for (size_t t = 0; t < ARRAY_LEN(test_elems); t++) {
        enum kvt_elem e = test_elems[t];
        struct specials sp = specials_of(e);
        /* finite, and all but the first one special: -0, subnormals, the
         * largest finite (one below Inf's bits) */
        const uint32_t finite[] = { 0, sp.sign, sp.min_sub, sp.min_sub | sp.sign,
                                    sp.max_finite, sp.max_finite | sp.sign };
        const uint32_t bad[] = { sp.qnan, sp.snan, sp.inf, sp.inf | sp.sign,
                                 sp.qnan | sp.sign | 5 };

        for (size_t li = 0; li < 64 + ARRAY_LEN(longer); li++) {
            size_t n = li < 64 ? li + 1 : longer[li - 64], es = simd_elem_size(e);
            unsigned char *mem = malloc(n * es + 1), *buf = mem + (li % 2);

            assert_non_null(mem);
            fill_gaussian(buf, e, 0, n, &r, 0);
            for (size_t i = 0; i < n; i++)
                if (rng_next(&r) % 3 == 0)
                    put_raw(buf, e, i, finite[rng_next(&r) % ARRAY_LEN(finite)]);
            for (size_t b = 0; all[b]; b++)
                if (all[b]->check_finite(buf, e, n) != 0)
                    fail_msg("%s %s n %zu: finite input refused", all[b]->name,
                             elem_name(e), n);
            for (size_t at = 0; at < n; at++) {
                uint32_t keep = 0;

                if (!finite_spot(n, at))
                    continue;
                memcpy(&keep, buf + at * es, es);   /* little-endian, as put_raw */
                for (size_t v = 0; v < ARRAY_LEN(bad); v++) {
                    put_raw(buf, e, at, bad[v]);
                    for (size_t b = 0; all[b]; b++)
                        if (all[b]->check_finite(buf, e, n) != -EINVAL)
                            fail_msg("%s %s n %zu: 0x%x at %zu not found", all[b]->name,
                                     elem_name(e), n, (unsigned)bad[v], at);
                }
                put_raw(buf, e, at, keep);
            }
            free(mem);
        }
    }
    for (size_t b = 0; all[b]; b++) {
        float x = 1.0f;

        assert_int_equal(all[b]->check_finite(&x, (enum kvt_elem)7, 1), -EINVAL);
        assert_int_equal(all[b]->check_finite(&x, KVT_ELEM_F32, 0), 0);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dispatch),
        cmocka_unit_test(test_f16_all_patterns),
        cmocka_unit_test(test_narrowing_rounds_half_even),
        cmocka_unit_test(test_quantize_random),
        cmocka_unit_test(test_quantize_edges),
        cmocka_unit_test(test_dequantize_any_input),
        cmocka_unit_test(test_convert),
        cmocka_unit_test(test_stream_copy),
        cmocka_unit_test(test_check_finite),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
