/* avx2_outliers.c - AVX2 quantize_outliers: the threshold of eight groups at once, then q and outliers in one pass. */
#include "avx2_common.h"

/* ---- the selection ------------------------------------------------------------------------
 * The amax of the rest is the (n_out + 1)-th largest key T of the group
 * (kernels.h's keys, repeats counted), and the outliers are every key above
 * T plus the lowest-index keys equal to T, as many as make n_out. T is found
 * for eight groups at once: their keys are interleaved so that each vector
 * lane holds keys of one group only, and every lane keeps the cap largest
 * keys it has seen, sorted, in cap vectors, through a min/max insertion
 * network. No branch depends on the data there. Offering elements to a
 * sorted list one at a time (outlier_scan) or compacting the elements above
 * a bound first both mispredicted at nearly every step and cost several
 * times the quantization itself. 16-bit keys fill 16 lanes, lane l holding
 * keys of group l % 8, so each group's two lanes are merged at the end;
 * f32 keys fill 8 lanes, one per group. */

#define SEL_GROUPS SIMD_OUTLIER_BLOCK
#define SEL_MAX_CAP (SIMD_OUTLIERS_MAX + 1)

KERNEL __m256i key_max(enum kvt_elem elem, __m256i a, __m256i b)
{
    return elem == KVT_ELEM_F32 ? _mm256_max_epi32(a, b) : _mm256_max_epi16(a, b);
}

KERNEL __m256i key_min(enum kvt_elem elem, __m256i a, __m256i b)
{
    return elem == KVT_ELEM_F32 ? _mm256_min_epi32(a, b) : _mm256_min_epi16(a, b);
}

KERNEL __m256i key_gt(enum kvt_elem elem, __m256i a, __m256i b)
{
    return elem == KVT_ELEM_F32 ? _mm256_cmpgt_epi32(a, b) : _mm256_cmpgt_epi16(a, b);
}

KERNEL __m256i key_set1(enum kvt_elem elem, uint32_t key)
{
    return elem == KVT_ELEM_F32 ? _mm256_set1_epi32((int)key) : _mm256_set1_epi16((short)key);
}

/* One vector of keys (sixteen 16-bit or eight f32) from element i. Keys
 * are below 2^15 and 2^31, so the signed compares and min/max are exact. */
KERNEL __m256i key_vec(const unsigned char *p, enum kvt_elem elem, size_t i)
{
    const int is_f32 = elem == KVT_ELEM_F32;
    __m256i v = _mm256_loadu_si256((const __m256i *)(p + i * (is_f32 ? 4 : 2)));

    return _mm256_and_si256(v, is_f32 ? _mm256_set1_epi32(0x7fffffff) : _mm256_set1_epi16(0x7fff));
}

/* x[k] holds keys of group k; afterwards every lane of each x[e] holds keys
 * of one group, the same one in every x[e] (16-bit: group l % 8 in lane l;
 * f32: group l), and each key is still in exactly one place. */
KERNEL void interleave_groups(enum kvt_elem elem, __m256i x[SEL_GROUPS])
{
    __m256i a[8], b[8];

    if (elem == KVT_ELEM_F32) {
#pragma GCC unroll 8
        for (int k = 0; k < 4; k++) {
            a[k] = _mm256_unpacklo_epi32(x[2 * k], x[2 * k + 1]);
            a[k + 4] = _mm256_unpackhi_epi32(x[2 * k], x[2 * k + 1]);
        }
#pragma GCC unroll 8
        for (int h = 0; h < 8; h += 4) {
            b[h] = _mm256_unpacklo_epi64(a[h], a[h + 1]);
            b[h + 1] = _mm256_unpackhi_epi64(a[h], a[h + 1]);
            b[h + 2] = _mm256_unpacklo_epi64(a[h + 2], a[h + 3]);
            b[h + 3] = _mm256_unpackhi_epi64(a[h + 2], a[h + 3]);
        }
#pragma GCC unroll 8
        for (int h = 0; h < 8; h += 4) {
            x[h] = _mm256_permute2x128_si256(b[h], b[h + 2], 0x20);
            x[h + 1] = _mm256_permute2x128_si256(b[h], b[h + 2], 0x31);
            x[h + 2] = _mm256_permute2x128_si256(b[h + 1], b[h + 3], 0x20);
            x[h + 3] = _mm256_permute2x128_si256(b[h + 1], b[h + 3], 0x31);
        }
        return;
    }
#pragma GCC unroll 8
    for (int k = 0; k < 4; k++) {
        a[k] = _mm256_unpacklo_epi16(x[2 * k], x[2 * k + 1]);
        a[k + 4] = _mm256_unpackhi_epi16(x[2 * k], x[2 * k + 1]);
    }
#pragma GCC unroll 8
    for (int h = 0; h < 8; h += 4) {
        b[h] = _mm256_unpacklo_epi32(a[h], a[h + 1]);
        b[h + 1] = _mm256_unpackhi_epi32(a[h], a[h + 1]);
        b[h + 2] = _mm256_unpacklo_epi32(a[h + 2], a[h + 3]);
        b[h + 3] = _mm256_unpackhi_epi32(a[h + 2], a[h + 3]);
    }
#pragma GCC unroll 8
    for (int h = 0; h < 8; h += 4) {
        x[h] = _mm256_unpacklo_epi64(b[h], b[h + 2]);
        x[h + 1] = _mm256_unpackhi_epi64(b[h], b[h + 2]);
        x[h + 2] = _mm256_unpacklo_epi64(b[h + 1], b[h + 3]);
        x[h + 3] = _mm256_unpackhi_epi64(b[h + 1], b[h + 3]);
    }
}

/* Insert x into each lane's sorted list top[0] >= ... >= top[c - 1]. */
KERNEL void keep_largest(enum kvt_elem elem, __m256i *top, int c, __m256i x)
{
#pragma GCC unroll 32
    for (int i = 0; i < c - 1; i++) {
        __m256i hi = key_max(elem, top[i], x);

        x = key_min(elem, top[i], x);
        top[i] = hi;
    }
    top[c - 1] = key_max(elem, top[c - 1], x);
}

/* Sorts four vectors lane by lane, largest first (five compare-exchanges). */
KERNEL void sort4(enum kvt_elem elem, __m256i *x)
{
#define SORT2(i, j) do {                                   \
        __m256i hi_ = key_max(elem, x[i], x[j]);           \
        x[j] = key_min(elem, x[i], x[j]);                  \
        x[i] = hi_;                                        \
    } while (0)
    SORT2(0, 1); SORT2(2, 3); SORT2(0, 2); SORT2(1, 3); SORT2(1, 2);
#undef SORT2
}

/* The c largest keys of each lane over the eight groups at g (c a
 * constant, so the lists stay in registers), into out[0 .. c - 1].
 * Keys go in fours, sorted lane by lane first: the r-th largest of a four
 * (r from 0) has r keys above it, so it can be among the lane's c largest
 * only as one of the c / (r + 1) largest r-th keys, and is kept in a list
 * that short. That takes about a third fewer min/max operations than
 * offering every key to the list of c; the short lists join it at the end.
 * Lists start at 0: a key of 0 that was never read is no larger than any
 * key, so it changes a lane's cap-th largest only where the group has
 * fewer than cap elements (n_out == dim), and then it is the 0 that simd.h
 * gives as the amax of no elements. A tail shorter than a vector is read
 * from a zeroed copy for the same reason. */
KERNEL void largest_keys(enum kvt_elem elem, int c, const unsigned char *const g[SEL_GROUPS],
                         size_t dim, __m256i *out)
{
    const unsigned char *next = g[SEL_GROUPS - 1] + dim * (elem == KVT_ELEM_F32 ? 4 : 2);
    const size_t per = elem == KVT_ELEM_F32 ? 8 : 16, width = elem == KVT_ELEM_F32 ? 4 : 2;
    const size_t full = dim / per * per;
    const int n1 = c / 2, n2 = c / 3, n3 = c / 4;
    __m256i top[SEL_MAX_CAP], top1[SEL_MAX_CAP / 2 + 1], top2[SEL_MAX_CAP / 3 + 1];
    __m256i top3[SEL_MAX_CAP / 4 + 1], x[SEL_GROUPS];

#define KEEP_CHUNK() do {                                           \
        interleave_groups(elem, x);                                 \
        _Pragma("GCC unroll 2")                                     \
        for (int e = 0; e < SEL_GROUPS; e += 4) {                   \
            sort4(elem, x + e);                                     \
            keep_largest(elem, top, c, x[e]);                       \
            if (n1)                                                 \
                keep_largest(elem, top1, n1, x[e + 1]);             \
            if (n2)                                                 \
                keep_largest(elem, top2, n2, x[e + 2]);             \
            if (n3)                                                 \
                keep_largest(elem, top3, n3, x[e + 3]);             \
        }                                                           \
    } while (0)

#pragma GCC unroll 32
    for (int i = 0; i < c; i++)
        top[i] = top1[i / 2] = top2[i / 3] = top3[i / 4] = _mm256_setzero_si256();
    for (size_t i = 0; i < full; i += per) {
        /* the next block, a chunk's worth (as many bytes as this one
         * reads) per chunk: the hardware's prefetch follows eight
         * streams less well than one */
        for (size_t b = 0; b < SEL_GROUPS * per * width; b += 64)
            _mm_prefetch((const char *)next + i * SEL_GROUPS * width + b, _MM_HINT_T0);
#pragma GCC unroll 8
        for (int k = 0; k < SEL_GROUPS; k++)
            x[k] = key_vec(g[k], elem, i);
        KEEP_CHUNK();
    }
    if (full < dim) {
        unsigned char tail[SEL_GROUPS][32];

        memset(tail, 0, sizeof(tail));
        for (int k = 0; k < SEL_GROUPS; k++) {
            memcpy(tail[k], g[k] + full * width, (dim - full) * width);
            x[k] = key_vec(tail[k], elem, 0);
        }
        KEEP_CHUNK();
    }
#undef KEEP_CHUNK
#pragma GCC unroll 32
    for (int i = 0; i < n1; i++)
        keep_largest(elem, top, c, top1[i]);
#pragma GCC unroll 32
    for (int i = 0; i < n2; i++)
        keep_largest(elem, top, c, top2[i]);
#pragma GCC unroll 32
    for (int i = 0; i < n3; i++)
        keep_largest(elem, top, c, top3[i]);
#pragma GCC unroll 32
    for (int i = 0; i < c; i++)
        out[i] = top[i];
}

/* For the eight groups at g (group k in lane k): T, each one's cap-th
 * largest key, and how many of its keys exceed T (fewer than cap, so all
 * of them are among the cap largest). -EINVAL when a key is NaN or Inf.
 * The list length is cap rounded up to one of a few constants; the cap
 * largest of a longer sorted list are its first cap. */
KERNEL int select_thresholds(enum kvt_elem elem, const unsigned char *const g[SEL_GROUPS],
                             size_t dim, unsigned cap, __m256i *rest, __m256i *n_above)
{
    __m256i top[SEL_MAX_CAP], t, above = _mm256_setzero_si256();

    if (cap <= 2)
        largest_keys(elem, 2, g, dim, top);
    else if (cap <= 3)
        largest_keys(elem, 3, g, dim, top);
    else if (cap <= 5)
        largest_keys(elem, 5, g, dim, top);
    else if (cap <= 9)
        largest_keys(elem, 9, g, dim, top);
    else if (cap <= 13)
        largest_keys(elem, 13, g, dim, top);
    else
        largest_keys(elem, SEL_MAX_CAP, g, dim, top);

    /* top[0] holds each lane's largest key; f32's Inf is 0x7f800000 */
    if (_mm256_movemask_epi8(key_gt(elem, top[0], key_set1(elem, simd_inf_key(elem) - 1))))
        return -EINVAL;
    if (elem == KVT_ELEM_F32) {
        t = top[cap - 1];
        for (unsigned i = 0; i < cap; i++)
            above = _mm256_sub_epi32(above, _mm256_cmpgt_epi32(top[i], t));
    } else {
        /* Lanes l and l + 8 hold one group's two sorted lists A and B: the
         * cap largest of both are max(A[i], B[cap - 1 - i]) over i (the
         * first step of a bitonic merge), and T is the least of those. */
        __m256i merged[SEL_MAX_CAP];

        t = _mm256_set1_epi16(0x7fff);
        for (unsigned i = 0; i < cap; i++) {
            __m256i b = _mm256_permute2x128_si256(top[cap - 1 - i], top[cap - 1 - i], 1);

            merged[i] = _mm256_max_epi16(top[i], b);
            t = _mm256_min_epi16(t, merged[i]);
        }
        for (unsigned i = 0; i < cap; i++)
            above = _mm256_sub_epi16(above, _mm256_cmpgt_epi16(merged[i], t));
        /* group k's figures into 32-bit lane k */
        t = _mm256_cvtepu16_epi32(_mm256_castsi256_si128(t));
        above = _mm256_cvtepu16_epi32(_mm256_castsi256_si128(above));
    }
    *rest = t;
    *n_above = above;
    return 0;
}

/* Keys (one per 32-bit lane) as the f32 |x| they stand for. */
KERNEL __m256 keys_to_f32(enum kvt_elem elem, __m256i key)
{
    if (elem == KVT_ELEM_F16)   /* exact */
        return _mm256_cvtph_ps(_mm_packus_epi32(_mm256_castsi256_si128(key),
                                                _mm256_extracti128_si256(key, 1)));
    if (elem == KVT_ELEM_BF16)
        key = _mm256_slli_epi32(key, 16);
    return _mm256_castsi256_ps(key);
}

/* ---- the outputs ------------------------------------------------------------------------ */

/* Thirty-two elements from i: q with the lanes whose key exceeds t set to
 * 0, stored at dst + i, and those lanes as a bit mask (bit j: element
 * i + j). Each vector is loaded once for both: its keys are compared, and
 * its halves converted. */
KERNEL uint32_t quantize32_outliers(int8_t *dst, const unsigned char *p, enum kvt_elem elem,
                                    size_t i, __m256 inv, __m256i t, uint32_t *equal)
{
    const __m256i unlane = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    __m256i q[4], above, b;

    if (elem == KVT_ELEM_F32) {
        __m256i key[4];

        for (int k = 0; k < 4; k++) {
            __m256i raw = _mm256_loadu_si256((const __m256i *)(p + (i + 8 * (size_t)k) * 4));

            key[k] = _mm256_and_si256(raw, _mm256_set1_epi32(0x7fffffff));
            q[k] = quantize8_f32(_mm256_castsi256_ps(raw), inv);
        }
        /* packed as q is below, so unlane puts it in order too */
        above = _mm256_permutevar8x32_epi32(_mm256_packs_epi16(
            _mm256_packs_epi32(_mm256_cmpgt_epi32(key[0], t), _mm256_cmpgt_epi32(key[1], t)),
            _mm256_packs_epi32(_mm256_cmpgt_epi32(key[2], t), _mm256_cmpgt_epi32(key[3], t))),
            unlane);
        if (equal)
            *equal = (uint32_t)_mm256_movemask_epi8(_mm256_permutevar8x32_epi32(_mm256_packs_epi16(
                _mm256_packs_epi32(_mm256_cmpeq_epi32(key[0], t), _mm256_cmpeq_epi32(key[1], t)),
                _mm256_packs_epi32(_mm256_cmpeq_epi32(key[2], t), _mm256_cmpeq_epi32(key[3], t))),
                unlane));
    } else {
        __m256i key[2];

        for (int k = 0; k < 2; k++) {
            key[k] = _mm256_and_si256(_mm256_loadu_si256(
                         (const __m256i *)(p + (i + 16 * (size_t)k) * 2)), _mm256_set1_epi16(0x7fff));
            /* converted from memory again: a load is cheaper than the
             * shuffle that would take the high half of the keys' */
            q[2 * k] = quantize8_f32(load8(p, elem, i + 16 * (size_t)k), inv);
            q[2 * k + 1] = quantize8_f32(load8(p, elem, i + 16 * (size_t)k + 8), inv);
        }
        above = _mm256_permute4x64_epi64(_mm256_packs_epi16(_mm256_cmpgt_epi16(key[0], t),
                                                            _mm256_cmpgt_epi16(key[1], t)), 0xd8);
        if (equal)
            *equal = (uint32_t)_mm256_movemask_epi8(_mm256_permute4x64_epi64(
                _mm256_packs_epi16(_mm256_cmpeq_epi16(key[0], t), _mm256_cmpeq_epi16(key[1], t)),
                0xd8));
    }
    /* No lane but an outlier's can leave [-127, 127] (|x| <= amax): their
     * saturated q are the ones set to 0, so no clamp is needed. */
    b = _mm256_packs_epi16(_mm256_packs_epi32(q[0], q[1]), _mm256_packs_epi32(q[2], q[3]));
    b = _mm256_permutevar8x32_epi32(b, unlane);
    _mm256_storeu_si256((__m256i *)(dst + i), _mm256_andnot_si256(above, b));
    return (uint32_t)_mm256_movemask_epi8(above);
}

/* Bit j set where key i + j compares to t as asked (above, or equal), for
 * up to 32 elements from i that exist (the group ends at dim). */
KERNEL uint32_t key_mask32(const unsigned char *p, enum kvt_elem elem, size_t i, size_t dim,
                           __m256i t, int equal)
{
    const size_t width = elem == KVT_ELEM_F32 ? 4 : 2, n = dim - i < 32 ? dim - i : 32;
    unsigned char part[32 * 4];
    const unsigned char *from = p + i * width;
    uint32_t mask = 0;

    if (n < 32) {
        memset(part, 0, sizeof(part));
        memcpy(part, from, n * width);
        from = part;
    }
    for (size_t k = 0; k < 32; k += elem == KVT_ELEM_F32 ? 8 : 16) {
        __m256i v = key_vec(from, elem, k);
        __m256i c = elem == KVT_ELEM_F32
            ? (equal ? _mm256_cmpeq_epi32(v, t) : _mm256_cmpgt_epi32(v, t))
            : (equal ? _mm256_cmpeq_epi16(v, t) : _mm256_cmpgt_epi16(v, t));

        if (elem == KVT_ELEM_F32)
            mask |= (uint32_t)_mm256_movemask_ps(_mm256_castsi256_ps(c)) << k;
        else
            mask |= (uint32_t)_mm_movemask_epi8(_mm_packs_epi16(_mm256_castsi256_si128(c),
                                                              _mm256_extracti128_si256(c, 1))) << k;
    }
    return mask & (uint32_t)((1ull << n) - 1);
}

/* Appends the positions of word's set bits (elements base + bit) to pos
 * at *n. The first per_word go out with no branch, since a word rarely
 * holds more: a loop per set bit mispredicted on most words. pos needs
 * per_word entries of room past the last position. */
KERNEL void append_positions(int per_word, uint16_t *pos, unsigned *n, uint64_t word, size_t base)
{
    unsigned count = (unsigned)__builtin_popcountll(word);

#pragma GCC unroll 16
    for (int k = 0; k < per_word; k++, word &= word - 1)
        pos[*n + (unsigned)k] = (uint16_t)(base + (unsigned)__builtin_ctzll(word | 1ull << 63));
    for (unsigned k = (unsigned)per_word; k < count; k++, word &= word - 1)
        pos[*n + k] = (uint16_t)(base + (unsigned)__builtin_ctzll(word));
    *n += count;
}

/* Indices and f16 values of the n_out outliers at positions pos. */
KERNEL void store_outliers(const unsigned char *p, enum kvt_elem elem, const uint16_t *pos,
                           unsigned n_out, uint16_t *idx, uint16_t *f16)
{
    float v[SIMD_OUTLIERS_MAX] = { 0 };
    uint16_t h[SIMD_OUTLIERS_MAX];

    /* One position at a time: a wider read of pos, just written in 16-bit
     * pieces, would wait for those stores to retire. The bits are read
     * here, not through simd_load_one, whose bf16 case is a call. */
    for (unsigned j = 0; j < n_out; j++) {
        uint32_t bits = 0;

        idx[j] = pos[j];
        if (elem == KVT_ELEM_F32)
            memcpy(&bits, p + (size_t)pos[j] * 4, 4);
        else
            memcpy(&bits, p + (size_t)pos[j] * 2, 2);
        if (elem == KVT_ELEM_BF16)      /* the top half of an f32 */
            bits <<= 16;
        if (elem == KVT_ELEM_F16)
            f16[j] = (uint16_t)bits;
        else
            memcpy(&v[j], &bits, 4);
    }
    if (elem == KVT_ELEM_F16)
        return;
    for (unsigned j = 0; j < n_out; j += 8)
        _mm_storeu_si128((__m128i *)(h + j), _mm256_cvtps_ph(_mm256_loadu_ps(v + j), F16_RNE));
    memcpy(f16, h, n_out * 2);
}

/* From a word's keys equal to T (eq, bit j: element base + j), the lowest
 * ones while *ties last: their q set to 0, and returned as a mask. */
KERNEL uint64_t take_ties(int8_t *dst, size_t base, uint64_t eq, unsigned *ties)
{
    uint64_t taken = 0;

    for (; *ties && eq; --*ties, eq &= eq - 1) {
        taken |= eq & -eq;
        dst[base + (unsigned)__builtin_ctzll(eq)] = 0;
    }
    return taken;
}

/* One group's q and outliers, T given (rest): every key above T, and
 * while ties last the lowest-index keys equal to it (with_ties a constant:
 * groups without ties, nearly all of them, skip that work). q of the
 * outliers is 0; their positions are appended to pos at *n. */
KERNEL void quantize_masked(int per_word, int with_ties, int8_t *dst, const unsigned char *p,
                            enum kvt_elem elem, size_t dim, float inv_scalar, uint32_t rest,
                            unsigned ties, uint16_t *pos, unsigned *n)
{
    const __m256 inv = _mm256_set1_ps(inv_scalar);
    const __m256i t = key_set1(elem, rest);
    const size_t full = dim / 32 * 32;
    uint32_t eq0 = 0, eq1 = 0;
    size_t i = 0;

    for (; i + 64 <= full; i += 64) {
        uint64_t word = quantize32_outliers(dst, p, elem, i, inv, t, with_ties ? &eq0 : NULL);

        word |= (uint64_t)quantize32_outliers(dst, p, elem, i + 32, inv, t,
                                              with_ties ? &eq1 : NULL) << 32;
        if (with_ties)
            word |= take_ties(dst, i, eq0 | (uint64_t)eq1 << 32, &ties);
        append_positions(per_word, pos, n, word, i);
    }
    if (i < full) {
        uint64_t word = quantize32_outliers(dst, p, elem, i, inv, t, with_ties ? &eq0 : NULL);

        if (with_ties)
            word |= take_ties(dst, i, eq0, &ties);
        append_positions(per_word, pos, n, word, i);
        i += 32;
    }
    if (i < dim) {      /* the last few: q one by one, the masks from a copy */
        uint64_t word = key_mask32(p, elem, i, dim, t, 0);

        for (size_t j = i; j < dim; j++)
            dst[j] = word >> (j - i) & 1 ? 0
                   : simd_quantize_one(simd_load_one(p, elem, j), inv_scalar);
        if (with_ties)
            word |= take_ties(dst, i, key_mask32(p, elem, i, dim, t, 1), &ties);
        append_positions(per_word, pos, n, word, i);
    }
}

/* One group: q, then the n_out outliers' indices and values. ties: how
 * many keys equal to T are outliers (n_out less the count above T). */
KERNEL void quantize_group_outliers(int per_word, int with_ties, int8_t *dst,
                                    const unsigned char *p, enum kvt_elem elem, size_t dim,
                                    unsigned n_out, float inv, uint32_t rest, unsigned ties,
                                    uint16_t *idx, uint16_t *f16)
{
    uint16_t pos[2 * SIMD_OUTLIERS_MAX];
    unsigned n = 0;

    quantize_masked(per_word, with_ties, dst, p, elem, dim, inv, rest, ties, pos, &n);
    store_outliers(p, elem, pos, n_out, idx, f16);
}

KERNEL void group_ties_typed(enum kvt_elem elem, int8_t *dst, const unsigned char *p, size_t dim,
                             unsigned n_out, float inv, uint32_t rest, unsigned ties,
                             uint16_t *idx, uint16_t *f16)
{
    quantize_group_outliers(4, 1, dst, p, elem, dim, n_out, inv, rest, ties, idx, f16);
}

/* A group with ties at T, rare on most data: out of line, so that its
 * code does not crowd the registers of the common path's. */
static __attribute__((noinline)) void group_with_ties(enum kvt_elem elem, int8_t *dst,
                                                      const unsigned char *p, size_t dim,
                                                      unsigned n_out, float inv, uint32_t rest,
                                                      unsigned ties, uint16_t *idx, uint16_t *f16)
{
    SIMD_BY_ELEM(group_ties_typed, elem, dst, p, dim, n_out, inv, rest, ties, idx, f16);
}

KERNEL int outlier_block_of(enum kvt_elem elem, const unsigned char *const group[SEL_GROUPS],
                            size_t n, size_t dim, unsigned n_out, int8_t *q, float *scales,
                            uint16_t *idx, uint16_t *f16)
{
    const unsigned char *g[SEL_GROUPS];
    uint32_t rest[SEL_GROUPS], n_above[SEL_GROUPS];
    float amax[SEL_GROUPS], scale[SEL_GROUPS], inv[SEL_GROUPS];
    __m256i rest_v, above_v;
    int rc;

    for (size_t k = 0; k < SEL_GROUPS; k++)     /* a short block repeats its last group */
        g[k] = group[k < n ? k : n - 1];
    if ((rc = select_thresholds(elem, g, dim, n_out + 1, &rest_v, &above_v)) < 0)
        return rc;
    _mm256_storeu_ps(amax, keys_to_f32(elem, rest_v));
    _mm256_storeu_si256((__m256i *)rest, rest_v);
    _mm256_storeu_si256((__m256i *)n_above, above_v);
    simd_group_scale_inv8(amax, scale, inv);
    for (size_t k = 0; k < n; k++)
        scales[k] = scale[k];
    for (size_t k = 0; k < n; k++) {
        int8_t *qk = q + k * dim;
        uint16_t *ik = idx + k * n_out, *fk = f16 + k * n_out;

        if (inv[k] > FLT_MAX) {      /* 127 / amax overflowed: as in quantize */
            if ((rc = simd_quantize_outliers_group(qk, &scales[k], ik, fk, g[k], elem, dim,
                                                   n_out)) < 0)
                return rc;
        } else if (n_above[k] < n_out) {   /* ties at T: rare on most data */
            group_with_ties(elem, qk, g[k], dim, n_out, inv[k], rest[k], n_out - n_above[k],
                            ik, fk);
        } else {
            /* as many positions per 64-bit word without a branch as it
             * can hold (or is likely to, from 7 on) */
#define GROUP_OUTLIERS(per_word) \
    quantize_group_outliers(per_word, 0, qk, g[k], elem, dim, n_out, inv[k], rest[k], 0, ik, fk)
            switch (n_out) {
            case 1:  GROUP_OUTLIERS(1); break;
            case 2:  GROUP_OUTLIERS(2); break;
            case 3:  GROUP_OUTLIERS(3); break;
            case 4:  GROUP_OUTLIERS(4); break;
            case 5: case 6: case 7: case 8:
                     GROUP_OUTLIERS(6); break;
            default: GROUP_OUTLIERS(8); break;
            }
#undef GROUP_OUTLIERS
        }
    }
    return 0;
}

/* One function per element type (outlier_block_of inlined with it as a
 * constant): all three in one function made it too large for GCC to track
 * its variables for the debugger. */
#define OUTLIER_BLOCK_ARGS \
    const unsigned char *const group[SEL_GROUPS], size_t n, size_t dim, unsigned n_out, \
    int8_t *q, float *scales, uint16_t *idx, uint16_t *f16

static __attribute__((noinline)) int outlier_block_f16(OUTLIER_BLOCK_ARGS)
{
    return outlier_block_of(KVT_ELEM_F16, group, n, dim, n_out, q, scales, idx, f16);
}

static __attribute__((noinline)) int outlier_block_bf16(OUTLIER_BLOCK_ARGS)
{
    return outlier_block_of(KVT_ELEM_BF16, group, n, dim, n_out, q, scales, idx, f16);
}

static __attribute__((noinline)) int outlier_block_f32(OUTLIER_BLOCK_ARGS)
{
    return outlier_block_of(KVT_ELEM_F32, group, n, dim, n_out, q, scales, idx, f16);
}

int simd_avx2_outlier_block(enum kvt_elem elem, OUTLIER_BLOCK_ARGS)
{
    switch (elem) {
    case KVT_ELEM_F16:
        return outlier_block_f16(group, n, dim, n_out, q, scales, idx, f16);
    case KVT_ELEM_BF16:
        return outlier_block_bf16(group, n, dim, n_out, q, scales, idx, f16);
    case KVT_ELEM_F32:
        return outlier_block_f32(group, n, dim, n_out, q, scales, idx, f16);
    }
    return -EINVAL;
}
