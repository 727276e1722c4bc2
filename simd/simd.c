/* simd.c - element sizes, the scalar reference conversions, and the choice of backend at run time. */
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "kernels.h"

size_t simd_elem_size(enum kvt_elem elem)
{
    switch (elem) {
    case KVT_ELEM_F32:
        return 4;
    case KVT_ELEM_F16:
    case KVT_ELEM_BF16:
        return 2;
    }
    return 0;
}

/* ---- reference conversions ------------------------------------------------
 * Every vector kernel must match these bit for bit, NaNs included: they
 * follow what F16C (vcvtph2ps / vcvtps2ph) and AArch64 fcvt do with the
 * default FP environment, so hardware and software paths agree. */

static uint32_t f32_bits(float f)
{
    uint32_t u;

    memcpy(&u, &f, sizeof(u));
    return u;
}

static float f32_from_bits(uint32_t u)
{
    float f;

    memcpy(&f, &u, sizeof(f));
    return f;
}

float simd_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f;
    uint32_t mant = h & 0x3ff;

    if (exp == 0x1f)    /* Inf, or NaN made quiet with its payload kept */
        return f32_from_bits(sign | 0x7f800000 | mant << 13 | (mant ? 0x00400000 : 0));
    if (exp == 0)       /* zero or subnormal: mant units of 2^-24, exact in f32 */
        return f32_from_bits(sign | f32_bits((float)mant * 0x1p-24f));
    return f32_from_bits(sign | (exp + 127 - 15) << 23 | mant << 13);
}

uint16_t simd_f32_to_f16(float f)
{
    uint32_t u = f32_bits(f);
    uint16_t sign = (u >> 16) & 0x8000;

    u &= 0x7fffffff;
    if (u >= 0x47800000) {          /* |f| >= 65536: Inf, or NaN */
        if (u > 0x7f800000)         /* quiet, top 10 payload bits kept */
            return sign | 0x7e00 | ((u >> 13) & 0x3ff);
        return sign | 0x7c00;
    }
    if (u < 0x38800000) {           /* |f| < 2^-14: f16 subnormal or zero */
        /* In |f| + 0.5f one f32 ulp is 2^-24, the f16 subnormal unit, so
         * the FPU's add rounds to the nearest f16 (ties to even) and the
         * low mantissa bits are the result, 0x400 meaning 2^-14. */
        return sign | (uint16_t)(f32_bits(f32_from_bits(u) + 0.5f) - 0x3f000000);
    }
    /* Normal: rebias the exponent (15 - 127 << 23 wraps to 0xc8000000) and
     * add just under half an f16 ulp plus the bit that makes ties go to
     * even; a carry out of the mantissa bumps the exponent, up to Inf for
     * |f| >= 65520. */
    u += 0xc8000000u + 0xfff + ((u >> 13) & 1);
    return sign | (uint16_t)(u >> 13);
}

float simd_bf16_to_f32(uint16_t b)
{
    return f32_from_bits((uint32_t)b << 16);   /* exact, NaN bits unchanged */
}

uint16_t simd_f32_to_bf16(float f)
{
    uint32_t u = f32_bits(f);

    if ((u & 0x7fffffff) > 0x7f800000)   /* NaN: truncating could give Inf */
        return (uint16_t)(u >> 16) | 0x0040;
    /* Round half to even on the dropped 16 bits; overflow carries to Inf. */
    u += 0x7fff + ((u >> 16) & 1);
    return (uint16_t)(u >> 16);
}

/* ---- dispatch ---------------------------------------------------------------
 * Best first. The only place that knows which backends a build compiles. */

static bool cpu_always(void)
{
    return true;
}

#ifdef __x86_64__
static bool cpu_has_avx2_f16c(void)
{
    /* libgcc also checks that the OS saves YMM state (XGETBV). */
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("f16c");
}
#endif

static const struct simd_backend {
    const struct kvt_simd_ops *ops;
    bool (*usable)(void);
} backends[] = {
#ifdef __x86_64__
    { &simd_avx2_ops, cpu_has_avx2_f16c },
    { &simd_sse2_ops, cpu_always },
#endif
#ifdef __aarch64__
    { &simd_neon_ops, cpu_always },
#endif
    { &simd_scalar_ops, cpu_always },
};

#define N_BACKENDS (sizeof(backends) / sizeof(backends[0]))

/* Written once under pthread_once, read-only afterwards. */
static const struct kvt_simd_ops *usable[N_BACKENDS + 1];
static const struct kvt_simd_ops *chosen;
static pthread_once_t probe_once = PTHREAD_ONCE_INIT;

static const struct kvt_simd_ops *find_usable(const char *name)
{
    for (size_t i = 0; usable[i]; i++)
        if (strcmp(usable[i]->name, name) == 0)
            return usable[i];
    return NULL;
}

static void probe(void)
{
    const char *forced = getenv("KVTIER_SIMD");
    size_t n = 0;

    for (size_t i = 0; i < N_BACKENDS; i++)
        if (backends[i].usable())
            usable[n++] = backends[i].ops;
    usable[n] = NULL;

    /* An unknown or unsupported name is ignored rather than fatal: every
     * backend gives the same bytes, so the override only matters for speed
     * and testing. */
    chosen = forced ? find_usable(forced) : NULL;
    if (!chosen)
        chosen = usable[0];
}

const struct kvt_simd_ops *simd_best(void)
{
    pthread_once(&probe_once, probe);
    return chosen;
}

const struct kvt_simd_ops *simd_by_name(const char *name)
{
    pthread_once(&probe_once, probe);
    return name ? find_usable(name) : NULL;
}

const struct kvt_simd_ops *const *simd_all(void)
{
    pthread_once(&probe_once, probe);
    return usable;
}
