/* kvtier.h - libkvtier: the public C API of the kvtier KV-cache store.
 *
 * Every function returns 0 on success or a negative errno value; the
 * library never prints. See docs/protocol.md and libkvtier(3).
 */
#ifndef KVTIER_H
#define KVTIER_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct kvt_client kvt_client;        /* opaque connection handle */

typedef enum kvt_dtype {                     /* element type the CLIENT exchanges */
    KVT_F32  = 0,
    KVT_F16  = 1,                            /* IEEE binary16 */
    KVT_BF16 = 2,
} kvt_dtype;

typedef struct kvt_model {
    const char *name;        /* model identity, 1..127 bytes, e.g. "llama-3.1-8b" */
    uint32_t n_layers;       /* 1..1024 */
    uint32_t n_kv_heads;     /* 1..1024 */
    uint32_t head_dim;       /* 1..1024 (64 and 128 are the common cases) */
    kvt_dtype dtype;         /* type of the K/V buffers this client passes */
    uint32_t chunk_tokens;   /* tokens per stored chunk; 0 = daemon default */
} kvt_model;

typedef struct kvt_span {
    uint32_t layer;          /* 0..n_layers-1 */
    uint32_t token_start;    /* first token position */
    uint32_t n_tokens;       /* >= 1 */
    void *k;                 /* n_tokens * n_kv_heads * head_dim elements of dtype */
    void *v;                 /* same shape as k */
} kvt_span;

#define KVT_CTX_MAX 255      /* max bytes of a context name */

/* ---- connection -------------------------------------------------------- */

/* Connect to kvtierd at socket_path (NULL: $KVTIER_SOCKET, else
 * /run/kvtier/kvtier.sock) and attach to the namespace of `model`. The
 * model struct and its name are copied. On success *out owns the handle
 * until kvt_disconnect(). Errors: -EINVAL (bad model), -ENOENT/-ECONNREFUSED
 * (no daemon), -EPROTO (daemon speaks another protocol version), -ENOMEM;
 * kvt_last_error(NULL) then says why in words ("no kvtierd socket at PATH").
 * If the daemon restarts, the next call on the handle reconnects itself. */
int  kvt_connect(const char *socket_path, const kvt_model *model, kvt_client **out);
/* Close the connection and free the handle, its shared memory included
 * (pointers from kvt_alloc become invalid). NULL is ignored. */
void kvt_disconnect(kvt_client *c);
/* A static human sentence for any value these functions return. */
const char *kvt_strerror(int err);

/* ---- named contexts ---------------------------------------------------- */

/* Store n_tokens tokens of `layer` starting at token_start (overwrites). */
int kvt_store(kvt_client *c, const char *ctx, uint32_t layer,
              uint32_t token_start, uint32_t n_tokens, const void *k, const void *v);
/* Fetch; all-or-nothing: -ENOENT if any requested token is absent. */
int kvt_fetch(kvt_client *c, const char *ctx, uint32_t layer,
              uint32_t token_start, uint32_t n_tokens, void *k, void *v);
/* Many spans (e.g. every layer of a prefill) in one round trip. */
int kvt_store_batch(kvt_client *c, const char *ctx, const kvt_span *spans, size_t n_spans);
int kvt_fetch_batch(kvt_client *c, const char *ctx, const kvt_span *spans, size_t n_spans);
/* *n_tokens = L such that tokens [0, L) are present in every layer. */
int kvt_length(kvt_client *c, const char *ctx, uint32_t *n_tokens);
/* Forget a context in every tier. Dropping an absent context is not an error. */
int kvt_drop(kvt_client *c, const char *ctx);
/* Return once everything this client stored before the call is on the cold
 * tier, fsynced: it survives kill -9 of the daemon and a power loss. Errors:
 * -EOPNOTSUPP when the daemon runs without a cold tier (cold-bytes 0), -EIO
 * when the write failed. */
int kvt_sync(kvt_client *c);

/* ---- token-addressed prefixes ------------------------------------------ */

int kvt_store_tokens(kvt_client *c, const int32_t *tokens, uint32_t n_tokens,
                     const kvt_span *spans, size_t n_spans);
int kvt_match_tokens(kvt_client *c, const int32_t *tokens, uint32_t n_tokens,
                     uint32_t *n_cached);
int kvt_fetch_tokens(kvt_client *c, const int32_t *tokens, uint32_t n_tokens,
                     const kvt_span *spans, size_t n_spans);

/* Raw fetch (int8 daemons): like kvt_fetch_tokens, but each span's k and v
 * receive per token the stored row, not values in the client's dtype:
 *   float scale[H]; uint16_t out_idx[H][O]; uint16_t out_val[H][O] (f16
 *   bits); int8_t q[H][D]
 * (H = n_kv_heads, D = head_dim, O = outliers), kvt_raw_row_bytes(c, O)
 * bytes a row, so that the caller dequantizes (value = q * scale in f32,
 * then the O outliers set exactly; index 0xFFFF is padding, for chunks
 * stored with fewer than O). Buffers must lie in memory from kvt_alloc
 * (zero copy only), else -EINVAL. Errors as kvt_fetch_tokens, and
 * -EOPNOTSUPP (lossless daemon or chunk, or a daemon without raw fetch),
 * -ERANGE (a chunk holds more than `outliers` outliers per vector;
 * kvt_last_error names its count; ask again with more, up to 16). */
int kvt_fetch_tokens_raw(kvt_client *c, const int32_t *tokens, uint32_t n_tokens,
                         const kvt_span *spans, uint32_t n_spans, uint32_t outliers);
/* Bytes of one token's raw row of K (or V) with `outliers` outliers per
 * vector; 0 for outliers > 16 or a NULL client. */
size_t kvt_raw_row_bytes(const kvt_client *c, uint32_t outliers);
/* The outliers per vector the daemon keeps in the int8 chunks it makes
 * (what to pass kvt_fetch_tokens_raw; chunks made under another setting
 * may answer -ERANGE), learned at connect: 0..16 (4, the default, from a
 * daemon too old to say), -EOPNOTSUPP for a lossless daemon, -EINVAL for
 * a NULL client. */
int kvt_raw_outliers(const kvt_client *c);

/* ---- zero-copy buffers ------------------------------------------------- */

/* Memory in the region shared with the daemon, 64-byte aligned; spans that
 * point into it are read/written by the daemon in place. NULL on failure.
 * Valid until kvt_free() or kvt_disconnect(); it survives reconnects. */
void *kvt_alloc(kvt_client *c, size_t bytes);
void  kvt_free(kvt_client *c, void *p);

/* ---- additions to the contract ------------------------------------------ */

/* The reason for the last error on this handle: the daemon's (e.g. "layer 40
 * out of range 0..31"), or the library's own when it refused the call before
 * sending it; "" if the last call succeeded or none was given. Valid until
 * the next call on the handle. With c NULL: why the calling thread's last
 * kvt_connect failed (e.g. "no kvtierd socket at /run/kvtier/kvtier.sock"),
 * "" after one that succeeded; valid until its next kvt_connect. */
const char *kvt_last_error(const kvt_client *c);

/* kvt_last_error(NULL): the reason the calling thread's last kvt_connect*
 * failed (e.g. "region of 3072M is larger than the daemon's max-client-shm
 * (1024M)"), "" after one that succeeded. */

/* Tokens per chunk the daemon uses for this handle's namespace. */
uint32_t kvt_chunk_tokens(const kvt_client *c);

/* *n_cached = the longest L such that the KV of tokens[0..L) is stored in
 * every layer as a prefix: L ends on a chunk boundary (as kvt_match_tokens
 * finds), or it is the end of an earlier kvt_store_tokens call, inside a
 * chunk. So a saved prompt of 1000 tokens is found whole by a query of the
 * prompt plus more tokens, in one round trip (kvt_match_tokens would answer
 * the chunk boundary below 1000). Fetch it with kvt_fetch_tokens(tokens, L,
 * ...). Errors as kvt_match_tokens'; a daemon without this operation gets
 * kvt_match_tokens' answer. */
int kvt_match_prefix(kvt_client *c, const int32_t *tokens, uint32_t n_tokens,
                     uint32_t *n_cached);

/* *out = the model this handle attached with; out->name points into the
 * handle, valid until kvt_disconnect(). Returns 0 or -EINVAL. */
int kvt_client_model(const kvt_client *c, kvt_model *out);

/* kvt_connect with a region of region_bytes (rounded up to pages); 0 means
 * $KVTIER_SHM_BYTES, else 256 MiB. The daemon refuses regions above its
 * max-client-shm (default 1G) with -EINVAL. */
int kvt_connect_region(const char *socket_path, const kvt_model *model,
                       size_t region_bytes, kvt_client **out);

/* The shared region's mapping in this process: kvt_alloc carves it up. For
 * registering it once with a device runtime (cudaHostRegister), so that
 * copies between the device and kvt_alloc'd buffers run at pinned speed. */
int kvt_region(const kvt_client *c, void **base, size_t *bytes);

/* ---- shared hot blocks (kvtierd share-hot, lossless daemons) -------------
 * Rows copied straight out of the daemon's RAM: kvt_locate_tokens says, for
 * every chunk the spans touch, which shared block holds the rows and where;
 * kvt_block_map maps blocks read-only (page-lock them once for a GPU and a
 * copy to it reads the daemon's memory directly). A located entry is good
 * while kvt_block_gen(block) still equals its gen: copy, wait for the copy,
 * then compare, and fetch the tokens of entries that changed (or have
 * block 0: not in RAM, not shared) with kvt_fetch_tokens, which also
 * brings them back into RAM. Blocks hold one sharing domain's chunks only,
 * and nobody but the daemon can write them. */
typedef struct kvt_located {
    uint64_t block;          /* 0: fetch these tokens the ordinary way */
    uint64_t gen;
    uint64_t k_at, v_at;     /* byte offsets in the block of the K and V rows
                              * of token tok; the rows follow contiguously */
    uint32_t span;           /* index of the span */
    uint32_t tok;            /* first token, from the span's token_start */
    uint32_t n;              /* tokens */
    uint32_t reserved;
} kvt_located;

typedef struct kvt_block {
    uint64_t id;
    const void *base;        /* the block's data, mapped read-only */
    size_t map_bytes;        /* of the mapping (data, then the gen's page) */
    size_t data_bytes;
} kvt_block;

/* Locate the rows of spans (their k and v are not used) of a token call:
 * one entry per chunk each span touches, spans in order, into out (room
 * for max_out); *n_out = entries written, or on -ENOSPC the entries
 * needed. Errors: -EOPNOTSUPP (a daemon without share-hot, or an int8
 * one), -EINVAL, -E2BIG (more than 16384 entries, or more spans than the
 * daemon takes), -ENOSPC, -ENOMEM (no room in the region for the table),
 * and those of kvt_fetch_tokens. */
int kvt_locate_tokens(kvt_client *c, const int32_t *tokens, uint32_t n_tokens,
                      const kvt_span *spans, size_t n_spans, kvt_located *out,
                      size_t max_out, size_t *n_out);
/* Map blocks ids[0..n) (n <= 250 each call) into out[]: returns how many
 * were mapped, from the first on; the one after them is gone (or not this
 * domain's). Errors: -ENOENT (ids[0] gone), -EOPNOTSUPP, -EINVAL, -EPROTO,
 * -errno of mmap. Unmap each with kvt_block_unmap. */
int kvt_block_map(kvt_client *c, const uint64_t *ids, size_t n, kvt_block *out);
/* kvt_block_map, but the blocks side by side, out[i].base = *base + i *
 * out[0].map_bytes: one host range that one copy (or one cudaHostRegister)
 * covers. The run stops before a block of another size. */
int kvt_block_map_run(kvt_client *c, const uint64_t *ids, size_t n, kvt_block *out,
                      void **base);
void kvt_block_unmap(kvt_block *b);
/* The block's gen now; whether the daemon has let go of it (its gen will
 * not come back: unmap it). */
uint64_t kvt_block_gen(const kvt_block *b);
int kvt_block_dead(const kvt_block *b);

#ifdef __cplusplus
}
#endif

#endif
