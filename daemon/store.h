/* store.h - the data path: a validated request's spans against the tiers. */
#ifndef KVT_STORE_H
#define KVT_STORE_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cache/hot.h"
#include "daemon/registry.h"
#include "daemon/tiers.h"
#include "proto/proto.h"
#include "simd/simd.h"

struct kvt_datapath {
    struct kvt_hot *hot;
    struct kvt_tiers *tiers;   /* demotion/promotion; its cold may be NULL */
    const struct kvt_simd_ops *simd;
    bool lossless;             /* --quant none */
    /* Outliers per vector of chunks created from now on (config key
     * `outliers`; the loop changes it on SIGHUP or config set, workers
     * read it). A chunk keeps the value it was created with. */
    _Atomic uint32_t outliers;
    /* Bytes of whole-chunk stages (dp_stage) not yet committed or freed:
     * at most the hot budget / DP_STAGE_SHARE, so the old chunks and the
     * in-place writes of other segments keep room under a tight budget. */
    atomic_ulong staged_bytes;
    atomic_ulong hot_hits;     /* fetched segments found in RAM */
    atomic_ulong hot_misses;   /* ... not found there (promoted or absent) */
};

/* One piece of work: tokens [tok, tok + n) of one chunk, with the offsets of
 * their K and V rows in the client's region. Segments of one request touch
 * disjoint tokens, so workers can run them in any order. */
struct dp_segment {
    struct kvt_chunk_key key;
    uint32_t tok, n;
    uint64_t k_off, v_off;
    /* A whole chunk's rows quantized aside by dp_stage (NULL: none), to be
     * committed by dp_store or freed by dp_release; its charge. */
    struct kvt_chunk *stage;
    uint64_t stage_bytes;
};

/* Stages may take up to this share of the hot budget at once (a half):
 * an overwrite's stage lives beside the chunk it replaces. */
#define DP_STAGE_SHARE 2

/* A request bound to its session; everything in it has been validated. */
struct dp_request {
    const struct kvt_ns *ns;
    enum kvt_elem elem;        /* the client's dtype */
    uint8_t *region;           /* the client's mapped region */
    uint64_t region_bytes;
    const struct kvt_data_view *view;
    /* A raw FETCH (proto.h KVT_DATA_RAW): stored int8 rows with raw_outliers
     * outliers each go to the client. A chunk holding more outliers fails
     * it with -ERANGE and stores its count in *raw_refused_outliers. */
    bool raw;
    uint8_t raw_outliers;
    /* A LOCATE: nothing is read or written at the spans' offsets but a
     * table (session_shared.c), so their rows take no room (row bytes 0). */
    bool locate;
    _Atomic uint32_t *raw_refused_outliers;
};

/* The shape of a chunk created now for ns and a client of dtype elem:
 * int8 (outliers = the setting, clipped to head_dim) or lossless in elem. */
struct kvt_chunk_shape dp_chunk_shape(struct kvt_datapath *dp, const struct kvt_ns *ns,
                                      enum kvt_elem elem);

/* Bytes of one token's K (or V) in the client's dtype. */
size_t dp_row_bytes(const struct kvt_ns *ns, enum kvt_elem elem);

/* Bytes of one token's K (or V) in the client's buffers: dp_row_bytes, or
 * the raw row's size for a raw fetch. */
uint64_t dp_client_row_bytes(const struct dp_request *rq);

/* Check spans against the namespace and the region (layers, token ranges,
 * offsets and sizes without overflow, token keys count). Returns 0 or
 * -EINVAL/-EFAULT/-EOVERFLOW with *why set. */
int dp_validate(const struct dp_request *rq, const char **why);

/* Split the spans into chunk segments: each within one chunk, and cut at
 * the multiples of seg_tokens inside it (0 or chunk_tokens: whole chunks;
 * a store's segments must be, for dp_stage). *segs is malloc'ed (caller
 * frees). Returns 0, -E2BIG (more than max_segments could be), -ENOMEM. */
int dp_plan(const struct dp_request *rq, uint32_t seg_tokens, size_t max_segments,
            struct dp_segment **segs, size_t *n_segs);

/* A store's first phase, in int8 mode (0 at once in lossless mode, which
 * stores any bits): -EINVAL if any K or V row of segments [0, n) holds a
 * NaN or +-Inf, 0 otherwise. A segment that covers a whole chunk is
 * quantized into a stage (hot_stage_alloc: charged to the budget and the
 * domain, may evict LRU chunks as a creation does; at most the budget /
 * DP_STAGE_SHARE of stages at once), so its rows are read once; any other
 * (or one with no room for a stage) is only checked, its rows read again
 * by dp_store. Nothing is linked here, so a refused request leaves every
 * tier as it was: on -EINVAL the stages of [0, n) are freed already. A
 * client that changes its buffers in between only gets its own values
 * stored differently (quantize takes NaN and Inf as 0). */
int dp_stage(struct kvt_datapath *dp, const struct dp_request *rq,
             struct dp_segment *segs, size_t n);
/* Free the stages of segments [0, n) (a refusal elsewhere in the request). */
void dp_release(struct kvt_datapath *dp, struct dp_segment *segs, size_t n);

/* Store or fetch segments [0, n). Fetch returns -ENOENT if any token is
 * absent from every tier; chunks found only on the cold tier (or, for
 * token-addressed ones, in the pool) are promoted. A token-addressed store
 * queues its chunks for the pool once they are in RAM.
 * Store is the second phase: a staged segment's stage becomes its chunk
 * (swapped in under the chunk's write lock; a chunk that keeps other
 * outliers gets the rows written in place instead), the others are written
 * in place. It returns -ENOSPC if the hot tier cannot make room, -EINVAL
 * when int8 with outliers meets NaN or Inf (that segment's tokens are not
 * stored; earlier segments stay); every stage of [0, n) is committed or
 * freed when it returns. Each chunk is read and written in the outliers it
 * was created with. */
int dp_store(struct kvt_datapath *dp, const struct dp_request *rq,
             struct dp_segment *segs, size_t n);
int dp_fetch(struct kvt_datapath *dp, const struct dp_request *rq,
             const struct dp_segment *segs, size_t n);

/* Whether dp_fetch of rq may ask the remote tier (token-addressed, and the
 * pool serves its namespace): it may then wait on the network, so it must
 * not run on the event loop. */
bool dp_fetch_may_ask_pool(struct kvt_datapath *dp, const struct dp_request *rq);

/* Leading tokens present in every layer of a named context. */
uint32_t dp_length(struct kvt_datapath *dp, const struct dp_request *rq);
/* Tokens of a token call whose chunks are present in every layer. Chunks
 * that RAM and SSD lack are asked of the remote tier (when it serves the
 * namespace), once per call, and its hits promoted: this may wait up to
 * remote-timeout-ms per server, so it runs on a worker then. */
uint32_t dp_match(struct kvt_datapath *dp, const struct dp_request *rq);
/* dp_match, then, where that stops before the end of the tokens, the longest
 * stored partial chunk that continues it (MATCH_PREFIX; needs view->tokens). */
uint32_t dp_match_prefix(struct kvt_datapath *dp, const struct dp_request *rq);
/* Leading tokens present in every layer of the context `name` (len bytes)
 * of ns: dp_length for a request the daemon makes up itself (admin). */
uint32_t dp_context_length(struct kvt_datapath *dp, const struct kvt_ns *ns,
                           const char *name, size_t len);
/* The object id of a named request's context: XXH3_128 of its name. */
void dp_named_object(const struct dp_request *rq, uint64_t *hi, uint64_t *lo);
/* Drop a named context; returns hot chunks dropped, *cold_records the cold
 * records (see tiers_drop_object: tiers_drop_sync makes it durable). */
uint64_t dp_drop(struct kvt_datapath *dp, const struct dp_request *rq, uint64_t *cold_records);

#endif
