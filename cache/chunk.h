/* chunk.h - what the cache stores: chunk keys, chunk shapes, chunk layout.
 *
 * A chunk is `tokens` consecutive token positions of one layer of one stored
 * object (a named context or one token-addressed prefix chunk), K and V.
 * Both tiers store exactly this; neither knows about sockets or clients.
 *
 * In-memory layout of a chunk's data block (also the uncompressed payload of
 * a cold record), for T = tokens, H = heads, D = dim, E = element bytes:
 *
 *   int8 mode (elem == KVT_CHUNK_INT8):
 *     float   k_scale[T][H];   float v_scale[T][H];
 *     int8_t  k[T][H][D];      int8_t v[T][H][D];
 *   lossless mode (elem = the f32/f16/bf16 type of the first writer):
 *     k[T][H][D] of E bytes;   v[T][H][D] of E bytes;
 *
 * Token-major rows mean one token's K (or V) for all heads is one contiguous
 * run, the same order as the client's [n_tokens][n_kv_heads][head_dim].
 */
#ifndef KVT_CHUNK_H
#define KVT_CHUNK_H

#include <stddef.h>
#include <stdint.h>

#define KVT_CHUNK_INT8 0xff           /* chunk_shape.elem for int8 storage */
#define KVT_CHUNK_MAX_TOKENS 4096     /* bound on chunk_tokens */

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

struct kvt_chunk_shape {
    uint32_t tokens;       /* tokens per chunk, 1..KVT_CHUNK_MAX_TOKENS */
    uint32_t heads;        /* kv heads, 1..1024 */
    uint32_t dim;          /* head dim, 1..1024 */
    uint32_t elem;         /* KVT_CHUNK_INT8 or an enum kvt_elem */
};

/* Bytes of K (or V) values of one token: heads * dim * element size. */
size_t chunk_row_bytes(const struct kvt_chunk_shape *s);
/* Bytes of one token's scales for K (or V): heads * 4 in int8 mode, else 0. */
size_t chunk_scale_row_bytes(const struct kvt_chunk_shape *s);
/* Total bytes of a chunk's data block as laid out above. */
size_t chunk_data_bytes(const struct kvt_chunk_shape *s);

/* Pointers into a data block laid out as above. Scale pointers are NULL in
 * lossless mode. */
struct kvt_chunk_view {
    float *k_scale, *v_scale;
    uint8_t *k, *v;
};
void chunk_view(const struct kvt_chunk_shape *s, void *data,
                struct kvt_chunk_view *out);

#endif
