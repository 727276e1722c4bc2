/* simd_util.h - what the kernels' tests (test_simd.c, test_simd_outliers.c)
 * share: a seeded generator and element access by type. Header-only, since
 * those tests also run alone under qemu-aarch64, without tests/helpers.c. */
#ifndef KVT_TEST_SIMD_UTIL_H
#define KVT_TEST_SIMD_UTIL_H

#include <math.h>
#include <stdint.h>
#include <string.h>

#include "simd/simd.h"

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

static inline const char *elem_name(enum kvt_elem e)
{
    return e == KVT_ELEM_F32 ? "f32" : e == KVT_ELEM_F16 ? "f16" : "bf16";
}

struct rng {
    uint64_t state;
};

static inline uint64_t rng_next(struct rng *r)   /* splitmix64 */
{
    uint64_t z = (r->state += 0x9e3779b97f4a7c15ull);

    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static inline double rng_unit(struct rng *r)      /* [0, 1) */
{
    return (double)(rng_next(r) >> 11) * 0x1p-53;
}

static inline double rng_gauss(struct rng *r)     /* Box-Muller */
{
    double u1 = 1.0 - rng_unit(r), u2 = rng_unit(r);

    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

static inline uint32_t bits_of(float f)
{
    uint32_t u;

    memcpy(&u, &f, 4);
    return u;
}

static inline float float_of(uint32_t u)
{
    float f;

    memcpy(&f, &u, 4);
    return f;
}

/* Element i of buf (type e) as raw bits / from and to f32. */
static inline void put_raw(void *buf, enum kvt_elem e, size_t i, uint32_t bits)
{
    uint16_t h = (uint16_t)bits;

    if (e == KVT_ELEM_F32)
        memcpy((char *)buf + i * 4, &bits, 4);
    else
        memcpy((char *)buf + i * 2, &h, 2);
}

static inline void put_f32(void *buf, enum kvt_elem e, size_t i, float f)
{
    put_raw(buf, e, i, e == KVT_ELEM_F32 ? bits_of(f)
                     : e == KVT_ELEM_F16 ? simd_f32_to_f16(f) : simd_f32_to_bf16(f));
}

static inline float get_f32(const void *buf, enum kvt_elem e, size_t i)
{
    uint16_t h;
    float f;

    if (e == KVT_ELEM_F32) {
        memcpy(&f, (const char *)buf + i * 4, 4);
        return f;
    }
    memcpy(&h, (const char *)buf + i * 2, 2);
    return e == KVT_ELEM_F16 ? simd_f16_to_f32(h) : simd_bf16_to_f32(h);
}

#endif
