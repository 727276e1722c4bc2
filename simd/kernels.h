/* kernels.h - private to simd/: the backends' ops tables and the per-element formulas they share. */
#ifndef KVT_SIMD_KERNELS_H
#define KVT_SIMD_KERNELS_H

#include <errno.h>
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

/* simd_group_scale and simd_group_inv of eight groups at once, in GCC's
 * generic vectors so that every backend compiles it for its own
 * instruction set: the same IEEE divisions, and no branch per group. */
typedef float simd_v8f __attribute__((vector_size(32)));
typedef int32_t simd_v8i __attribute__((vector_size(32)));

static inline void simd_group_scale_inv8(const float amax[8], float scale[8], float inv[8])
{
    simd_v8f a, s, r;

    memcpy(&a, amax, sizeof(a));
    s = a / 127.0f;
    r = (simd_v8f)((simd_v8i)(127.0f / a) & (a > 0.0f));
    memcpy(scale, &s, sizeof(s));
    memcpy(inv, &r, sizeof(r));
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
        size_t bytes = n * simd_elem_size(src_elem);
#if defined(__x86_64__) || defined(__i386__)
        if (bytes >= SIMD_STREAM_MIN_BYTES) {
            simd_stream_copy(dst, src, bytes);
            return 1;
        }
#endif
        memcpy(dst, src, bytes);
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


/* ---- outliers ----------------------------------------------------------------
 * The n_out largest-magnitude elements of a group, plus the next one (whose
 * magnitude is the amax of the rest), kept as sign-cleared bit patterns,
 * which order like |x| for finite values (see above) and compare equal
 * exactly when the magnitudes do. Entries are sorted by key descending; an
 * element is offered in ascending index order, so among equal keys the
 * earlier one stays ahead: that is the tie rule simd.h states. A vector
 * backend tests a block of keys against `thresh` at once and offers only
 * the elements whose key beats it: thresh only rises, so every element it
 * skips would have been refused. */
#define SIMD_OUTLIERS_MAX 16

/* Groups per call of a backend's outlier_block (outlier_ops.h). */
#define SIMD_OUTLIER_BLOCK 8

struct simd_topk {
    unsigned n, cap;                        /* cap = n_out + 1 */
    int32_t thresh;                         /* a key must exceed it: -1 until full */
    uint32_t inf_key;                       /* keys at or above it are NaN / Inf */
    uint32_t key[SIMD_OUTLIERS_MAX + 1];
    uint32_t idx[SIMD_OUTLIERS_MAX + 1];
};

static inline uint32_t simd_inf_key(enum kvt_elem elem)
{
    return elem == KVT_ELEM_F32 ? SIMD_F32_ABS_INF
         : elem == KVT_ELEM_F16 ? SIMD_F16_ABS_INF : SIMD_BF16_ABS_INF;
}

static inline void simd_topk_init(struct simd_topk *t, enum kvt_elem elem, unsigned n_out)
{
    t->n = 0;
    t->cap = n_out + 1;
    t->thresh = -1;
    t->inf_key = simd_inf_key(elem);
}

/* Sign-cleared bits of element i of src. */
static inline uint32_t simd_abs_key(const void *src, enum kvt_elem elem, size_t i)
{
    const unsigned char *p = src;
    uint32_t u;
    uint16_t h;

    if (elem == KVT_ELEM_F32) {
        memcpy(&u, p + i * 4, 4);
        return u & 0x7fffffff;
    }
    memcpy(&h, p + i * 2, 2);
    return h & 0x7fffu;
}

/* Offer element i (offered after every lower index): 0, or -EINVAL when
 * it is NaN or Inf, which always beats thresh and so is always offered. */
static inline int simd_topk_offer(struct simd_topk *t, const void *src, enum kvt_elem elem,
                                  size_t i)
{
    uint32_t key = simd_abs_key(src, elem, i);
    unsigned j;

    if (key >= t->inf_key)
        return -EINVAL;
    if ((int32_t)key <= t->thresh)
        return 0;
    j = t->n < t->cap ? t->n++ : t->cap - 1;   /* a full list drops its last */
    for (; j > 0 && t->key[j - 1] < key; j--) {
        t->key[j] = t->key[j - 1];
        t->idx[j] = t->idx[j - 1];
    }
    t->key[j] = key;
    t->idx[j] = (uint32_t)i;
    if (t->n == t->cap)
        t->thresh = (int32_t)t->key[t->cap - 1];
    return 0;
}

/* Offers element first + k for each set bit of `lanes` at bit k * stride,
 * lowest first (a vector compare's mask, one bit kept per lane). */
static inline int simd_topk_offer_lanes(struct simd_topk *t, const void *src,
                                        enum kvt_elem elem, size_t first, uint64_t lanes,
                                        unsigned stride)
{
    int rc;

    for (; lanes; lanes &= lanes - 1)
        if ((rc = simd_topk_offer(t, src, elem,
                                  first + (unsigned)__builtin_ctzll(lanes) / stride)) < 0)
            return rc;
    return 0;
}

/* Starts thresh from a first pass's lane maxima: n_lanes keys, each the
 * largest of the elements in one lane of whole blocks, so distinct
 * elements. With at least cap of them, cap elements reach the cap-th
 * largest lane maximum T, and nothing below T can end in the list: it
 * may begin at T - 1 (T itself stays in, for ties). Without this, thresh
 * climbs only as the list fills from the start of the group, and on
 * ordinary data nearly every block holds some key above it. -EINVAL when
 * a lane maximum is NaN or Inf. */
static inline int simd_topk_floor(struct simd_topk *t, const uint32_t *lane_max,
                                  unsigned n_lanes)
{
    uint32_t floor_key = 0, any_bad = 0;

    if (n_lanes < t->cap)
        return 0;
    /* T is the largest lane maximum that at least cap lane maxima reach.
     * Counted without branches: an insertion sort here mispredicted on
     * every other lane and took a third of the kernel's time. */
    for (unsigned k = 0; k < n_lanes; k++) {
        uint32_t key = lane_max[k], reach = 0;

        for (unsigned j = 0; j < n_lanes; j++)
            reach += lane_max[j] >= key;
        any_bad |= key >= t->inf_key;
        floor_key = reach >= t->cap && key > floor_key ? key : floor_key;
    }
    if (any_bad)
        return -EINVAL;
    t->thresh = (int32_t)floor_key - 1;
    return 0;
}

/* A key (sign-cleared bits) as the f32 |x| it stands for, exactly. */
static inline float simd_key_to_f32(enum kvt_elem elem, uint32_t key)
{
    float f;

    if (elem == KVT_ELEM_F16)
        return simd_f16_to_f32((uint16_t)key);
    if (elem == KVT_ELEM_BF16)
        key <<= 16;
    memcpy(&f, &key, 4);
    return f;
}

/* The checks every backend's quantize_outliers makes before any work:
 * indices must fit in u16 and n_out in [0, min(16, dim)]. */
static inline int simd_outliers_args_ok(enum kvt_elem elem, size_t dim, unsigned n_out)
{
    if (!simd_elem_known(elem) || n_out > SIMD_OUTLIERS_MAX || n_out > dim)
        return -EINVAL;
    if (n_out > 0 && dim > 65536)
        return -EINVAL;
    return 0;
}

/* In scalar.c, for every backend. simd_topk_finish writes the scanned
 * group's outliers (indices ascending, values as f16) and returns the amax
 * of the rest. simd_quantize_outliers_group is the whole reference for one
 * group (n_out >= 1), which the vector backends also call for a group whose
 * 127 / amax overflows. simd_patch_outliers writes the kept values over a
 * dequantized block, skipping indices >= dim. */
float simd_topk_finish(const struct simd_topk *t, const void *src, enum kvt_elem elem,
                       unsigned n_out, uint16_t *out_idx, uint16_t *out_f16);
int simd_quantize_outliers_group(int8_t *dst, float *scale, uint16_t *out_idx,
                                 uint16_t *out_f16, const void *src, enum kvt_elem elem,
                                 size_t dim, unsigned n_out);
void simd_patch_outliers(void *dst, enum kvt_elem elem, const uint16_t *idx,
                         const uint16_t *vals_f16, size_t n_groups, size_t dim,
                         unsigned n_out);

#endif
