/* chunk.h - what the cache stores: chunk keys, chunk shapes, chunk layout.
 *
 * A chunk is `tokens` consecutive token positions of one layer of one stored
 * object (a named context or one token-addressed prefix chunk), K and V.
 * Both tiers store exactly this; neither knows about sockets or clients.
 *
 * In-memory layout of a chunk's data block (also the uncompressed payload of
 * a cold record), for T = tokens, H = heads, D = dim, E = element bytes:
 *
 *   int8 mode (elem == KVT_CHUNK_INT8), O = outliers kept per vector:
 *     float    k_scale[T][H];     float    v_scale[T][H];
 *     uint16_t k_out_idx[T][H][O]; uint16_t k_out_val[T][H][O];   (f16 bits)
 *     uint16_t v_out_idx[T][H][O]; uint16_t v_out_val[T][H][O];
 *     int8_t   k[T][H][D];         int8_t   v[T][H][D];
 *   (O = 0 is the plain int8 layout: the outlier arrays are empty)
 *   lossless mode (elem = the f32/f16/bf16 type of the first writer):
 *     k[T][H][D] of E bytes;   v[T][H][D] of E bytes;
 *
 * Token-major rows mean one token's K (or V) for all heads is one contiguous
 * run, the same order as the client's [n_tokens][n_kv_heads][head_dim].
 */
#ifndef KVT_CHUNK_H
#define KVT_CHUNK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define KVT_CHUNK_INT8 0xff           /* chunk_shape.elem for int8 storage */
#define KVT_CHUNK_MAX_TOKENS 4096     /* bound on chunk_tokens */
#define KVT_CHUNK_MAX_HEADS 1024
#define KVT_CHUNK_MAX_DIM 1024
#define KVT_CHUNK_MAX_OUTLIERS 16

/* Identity of a chunk. Fixed size, no padding holes, compared with memcmp. */
struct kvt_chunk_key {
    uint64_t ns_id;        /* model namespace; namespaces belong to one domain */
    uint64_t obj_hi;       /* xxh3-128 of the context name, or the prefix */
    uint64_t obj_lo;       /*   chain hash of a token-addressed chunk */
    uint32_t domain;       /* sharing domain (quota accounting) */
    uint32_t layer;
    uint32_t chunk_idx;    /* chunk number in a named context; 0 for prefixes */
    uint32_t reserved;     /* 0 */
};
_Static_assert(sizeof(struct kvt_chunk_key) == 40, "chunk key is 40 bytes");

/* A chunk's geometry and stored format. 16 bytes, no holes: compared with
 * memcmp and written to disk as is (cold_format.h). */
struct kvt_chunk_shape {
    uint32_t tokens;       /* tokens per chunk, 1..KVT_CHUNK_MAX_TOKENS */
    uint32_t heads;        /* kv heads, 1..KVT_CHUNK_MAX_HEADS */
    uint32_t dim;          /* head dim, 1..KVT_CHUNK_MAX_DIM */
    uint16_t elem;         /* KVT_CHUNK_INT8 or an enum kvt_elem */
    /* int8 mode: elements of each (token, head) vector kept exact as f16,
     * 0..KVT_CHUNK_MAX_OUTLIERS and <= dim; 0 in lossless mode. A chunk
     * keeps the value it was created with (see architecture.md). */
    uint16_t outliers;
};
_Static_assert(sizeof(struct kvt_chunk_shape) == 16, "chunk shape is 16 bytes");

/* True if every field is within the bounds above (and elem is known). */
bool chunk_shape_valid(const struct kvt_chunk_shape *s);
/* True if a and b have the same tokens, heads, dim and elem: chunks that
 * differ only in outliers hold the same values in two int8 formats, and a
 * chunk keeps the outliers it was created with. */
bool chunk_shape_compatible(const struct kvt_chunk_shape *a, const struct kvt_chunk_shape *b);
/* outliers clipped to dim, 0 in lossless mode: the value a new chunk of
 * shape s (outliers = the daemon's setting) is created with. */
uint16_t chunk_outliers_for(const struct kvt_chunk_shape *s, uint32_t outliers);

/* Bytes of K (or V) values of one token: heads * dim * element size. */
size_t chunk_row_bytes(const struct kvt_chunk_shape *s);
/* Bytes of one token's scales for K (or V): heads * 4 in int8 mode, else 0. */
size_t chunk_scale_row_bytes(const struct kvt_chunk_shape *s);
/* Bytes of one token's outlier indices (or values) for K (or V):
 * heads * outliers * 2 in int8 mode, else 0. */
size_t chunk_outlier_row_bytes(const struct kvt_chunk_shape *s);
/* Total bytes of a chunk's data block as laid out above. */
size_t chunk_data_bytes(const struct kvt_chunk_shape *s);

/* Pointers into a data block laid out as above. Scale pointers are NULL in
 * lossless mode, outlier pointers when there are no outliers. */
struct kvt_chunk_view {
    float *k_scale, *v_scale;
    uint16_t *k_out_idx, *k_out_val, *v_out_idx, *v_out_val;
    uint8_t *k, *v;
};
void chunk_view(const struct kvt_chunk_shape *s, void *data,
                struct kvt_chunk_view *out);
/* Copy token tok's K/V rows, scales and outliers from src to dst, two
 * blocks of shape s. */
void chunk_copy_token(const struct kvt_chunk_shape *s, void *dst, const void *src,
                      uint32_t tok);

/* ---- presence bitmaps ------------------------------------------------------
 * Which tokens of a chunk hold values: token t is bit t % 64 of the u64 word
 * t / 64, ceil(tokens / 64) words, bits past tokens zero. The hot tier keeps
 * one per chunk, the cold tier stores it in every record (cold_format.h). */

/* Bytes of the bitmap of a chunk of `tokens` tokens (whole u64 words). */
size_t chunk_bitmap_bytes(uint32_t tokens);
static inline bool chunk_bit_has(const uint64_t *present, uint32_t tok)
{
    return (present[tok / 64] >> (tok % 64)) & 1;
}
static inline void chunk_bit_set(uint64_t *present, uint32_t tok)
{
    present[tok / 64] |= UINT64_C(1) << (tok % 64);
}
static inline void chunk_bit_clear(uint64_t *present, uint32_t tok)
{
    present[tok / 64] &= ~(UINT64_C(1) << (tok % 64));
}
/* True if tokens [first, first + n) of a `tokens`-token bitmap are all set
 * (n == 0: true; a range past tokens: false). */
bool chunk_bits_range(const uint64_t *present, uint32_t tokens, uint32_t first, uint32_t n);
/* True if no token of a `tokens`-token bitmap is set (bits past tokens
 * must be clear, as they are in every bitmap of ours). */
bool chunk_bits_none(const uint64_t *present, uint32_t tokens);
/* Tokens set from token 0 onward without a gap. bitmap may be unaligned (it
 * is inside a packed record when the cold tier recovers). */
uint32_t chunk_bits_leading(const void *bitmap, uint32_t tokens);

/* A chunk as the tiers hand it to each other: the cold tier stores and
 * returns these, the hot tier's write-back gives one to its caller. */
struct kvt_chunk_image {
    struct kvt_chunk_key key;
    struct kvt_chunk_shape shape;
    const uint64_t *present;   /* chunk_bitmap_bytes(shape.tokens) bytes */
    const void *data;          /* chunk_data_bytes(&shape) bytes */
};

/* Copy into dst (bitmap dst_present) every token that the image has and
 * dst lacks, setting its bit: tokens already in dst are newer and stay.
 * The image's shape must equal s. Returns how many tokens were copied. */
uint32_t chunk_merge_image(const struct kvt_chunk_shape *s, void *dst, uint64_t *dst_present,
                           const struct kvt_chunk_image *img);
/* Copy the rows of the tokens set in present from src to dst and zero the
 * rest of dst, two blocks of shape s: an image that carries nothing but
 * what the bitmap vouches for. */
void chunk_copy_present(const struct kvt_chunk_shape *s, void *dst, const void *src,
                        const uint64_t *present);

#endif
