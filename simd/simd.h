/* simd.h - quantize / dequantize / convert kernels with run-time dispatch.
 *
 * simd/ converts arrays and knows nothing of caches or sockets. Every backend
 * (NEON, AVX2, SSE2, scalar) produces exactly the same bytes as the scalar
 * one, so data stored on one machine reads back identically on any other.
 *
 * Element types are the client's (f32, f16 = IEEE binary16, bf16). A "group"
 * is one (token, head) vector of `dim` elements that shares one scale.
 *
 * Quantization, defined once for every backend:
 *   - non-finite inputs (NaN, +-Inf) are treated as 0;
 *   - amax  = max |x| over the group's finite values (f32);
 *   - scale = amax / 127.0f                     (f32, stored; 0 when amax == 0)
 *   - inv   = amax > 0 ? 127.0f / amax : 0.0f   (f32)
 *   - q     = round-half-to-even(x * inv), clamped to [-127, 127]
 * Dequantization: y = (float)q * scale, then rounded to the destination dtype
 * with round-half-to-even (f16 keeps subnormals; bf16 keeps NaN quiet).
 * The error bound is |y - x| <= amax / 254 + the rounding of the dtype.
 *
 * Quantization with outliers kept exact (n_out in 0..16, n_out <= dim):
 *   - any NaN or +-Inf in the input is refused (-EINVAL);
 *   - the group's outliers are its n_out elements of largest |x|, ties going
 *     to the lower index; their indices are stored in ascending order and
 *     their values as f16 (simd_f32_to_f16, round-half-to-even);
 *   - amax = max |x| over the other elements (0 if there are none), then
 *     scale, inv and q as above for every element, except q = 0 at the
 *     outliers. n_out == 0 is plain quantization of finite input.
 * Dequantization: y = q * scale as above, then each outlier's f16 value
 * converted to the dtype (exact to f32, copied to f16, rounded half to even
 * to bf16) at its index. Non-outliers are within amax/254 + the dtype's
 * rounding of x, amax being that of the rest. An f32 or bf16 outlier of
 * magnitude 65520 or more becomes +-Inf as f16: callers that cannot accept
 * that must refuse such input first.
 */
#ifndef KVT_SIMD_H
#define KVT_SIMD_H

#include <stddef.h>
#include <stdint.h>

enum kvt_elem {               /* same numbering as kvt_dtype in kvtier.h */
    KVT_ELEM_F32 = 0,
    KVT_ELEM_F16 = 1,
    KVT_ELEM_BF16 = 2,
};

/* Bytes of one element of `elem`, or 0 for an unknown type. */
size_t simd_elem_size(enum kvt_elem elem);

/* Copies of at least this many bytes go around the caches (non-temporal
 * stores) on x86: a large fetch's rows land in a client buffer that is
 * read by a DMA engine or much later, and streaming them skips the read of
 * every destination line that an ordinary store makes first. Measured on
 * a 16-CPU host: a 1 GiB zero-copy fetch went from 45 to 54 GB/s. */
#define SIMD_STREAM_MIN_BYTES (256u << 10)

#if defined(__x86_64__) || defined(__i386__)
/* memcpy with non-temporal stores (sse2.c), ordered before the caller's
 * later stores by a fence. */
void simd_stream_copy(void *dst, const void *src, size_t bytes);
#endif

struct kvt_simd_ops {
    const char *name;         /* "avx2", "sse2", "neon", "scalar" */

    /* Quantize n_groups groups of dim elements at src (type elem, densely
     * packed) into dst (n_groups * dim int8) and scales (n_groups f32). */
    void (*quantize)(int8_t *dst, float *scales, const void *src,
                     enum kvt_elem elem, size_t n_groups, size_t dim);

    /* Inverse of quantize: n_groups * dim values of type elem into dst. */
    void (*dequantize)(void *dst, enum kvt_elem elem, const int8_t *src,
                       const float *scales, size_t n_groups, size_t dim);

    /* Lossless-mode copy of n elements, converting between element types
     * when they differ (widening is exact, narrowing rounds half to even). */
    void (*convert)(void *dst, enum kvt_elem dst_elem, const void *src,
                    enum kvt_elem src_elem, size_t n);

    /* quantize with each group's n_out outliers kept apart (definition
     * above): their indices into out_idx and values into out_f16, n_out per
     * group (group g at g * n_out). Returns 0, or -EINVAL for NaN / Inf
     * anywhere in src, an unknown elem, n_out > 16 or > dim, or dim > 65536
     * with n_out > 0; after -EINVAL the outputs hold nothing usable. */
    int (*quantize_outliers)(int8_t *dst, float *scales, uint16_t *out_idx,
                             uint16_t *out_f16, const void *src, enum kvt_elem elem,
                             size_t n_groups, size_t dim, unsigned n_out);

    /* 0 if each of the n elements at src (type elem) is finite, -EINVAL if
     * any is NaN or +-Inf, or elem is unknown. -0 and subnormals are finite.
     * Made for long arrays (a caller checks all its input before quantizing
     * any): one pass of vector maxima, with no per-group work. */
    int (*check_finite)(const void *src, enum kvt_elem elem, size_t n);

    /* Inverse of quantize_outliers. idx and vals_f16 may come from disk: an
     * index >= dim is skipped, and of repeated indices the later value wins. */
    void (*dequantize_outliers)(void *dst, enum kvt_elem elem, const int8_t *src,
                                const float *scales, const uint16_t *idx,
                                const uint16_t *vals_f16, size_t n_groups, size_t dim,
                                unsigned n_out);
};

/* The best backend this CPU supports, chosen once (thread-safe, never NULL).
 * $KVTIER_SIMD=scalar|sse2|avx2|neon forces one if the CPU has it. */
const struct kvt_simd_ops *simd_best(void);

/* The backend called `name` if compiled in and supported by this CPU, else
 * NULL. Tests use it to compare every backend with "scalar". */
const struct kvt_simd_ops *simd_by_name(const char *name);

/* NULL-terminated list of every backend usable on this CPU, best first. */
const struct kvt_simd_ops *const *simd_all(void);

/* Scalar reference conversions (exact, round-half-to-even), shared by the
 * backends for their tails. */
float simd_f16_to_f32(uint16_t h);
uint16_t simd_f32_to_f16(float f);
float simd_bf16_to_f32(uint16_t b);
uint16_t simd_f32_to_bf16(float f);

#endif
