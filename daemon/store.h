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
};

/* A request bound to its session; everything in it has been validated. */
struct dp_request {
    const struct kvt_ns *ns;
    enum kvt_elem elem;        /* the client's dtype */
    uint8_t *region;           /* the client's mapped region */
    uint64_t region_bytes;
    const struct kvt_data_view *view;
};

/* The shape of a chunk created now for ns and a client of dtype elem:
 * int8 (outliers = the setting, clipped to head_dim) or lossless in elem. */
struct kvt_chunk_shape dp_chunk_shape(struct kvt_datapath *dp, const struct kvt_ns *ns,
                                      enum kvt_elem elem);

/* Bytes of one token's K (or V) in the client's dtype. */
size_t dp_row_bytes(const struct kvt_ns *ns, enum kvt_elem elem);

/* Check spans against the namespace and the region (layers, token ranges,
 * offsets and sizes without overflow, token keys count). Returns 0 or
 * -EINVAL/-EFAULT/-EOVERFLOW with *why set. */
int dp_validate(const struct dp_request *rq, const char **why);

/* Split the spans into chunk segments. *segs is malloc'ed (caller frees).
 * Returns 0, -E2BIG (more than max_segments), -ENOMEM. */
int dp_plan(const struct dp_request *rq, size_t max_segments,
            struct dp_segment **segs, size_t *n_segs);

/* -EINVAL if any K or V row of segments [0, n) holds a NaN or +-Inf, in
 * int8 mode (where they cannot be stored); 0 otherwise, and always 0 in
 * lossless mode, which stores any bits. A store runs it over the whole
 * request before dp_store writes any of it, so a refused request leaves
 * every tier as it was. It reads the client's region as dp_store will,
 * once more: a client that changes its buffers in between only gets its
 * own values stored differently (quantize takes NaN and Inf as 0). */
int dp_check(const struct kvt_datapath *dp, const struct dp_request *rq,
             const struct dp_segment *segs, size_t n);

/* Store or fetch segments [0, n). Fetch returns -ENOENT if any token is
 * absent from both tiers; chunks found only on the cold tier are promoted.
 * Store returns -ENOSPC if the hot tier cannot make room, -EINVAL when
 * int8 with outliers meets NaN or Inf (that segment's tokens are not
 * stored; earlier segments stay). Each chunk is read and written in the
 * outliers it was created with. */
int dp_store(struct kvt_datapath *dp, const struct dp_request *rq,
             const struct dp_segment *segs, size_t n);
int dp_fetch(struct kvt_datapath *dp, const struct dp_request *rq,
             const struct dp_segment *segs, size_t n);

/* Leading tokens present in every layer of a named context. */
uint32_t dp_length(struct kvt_datapath *dp, const struct dp_request *rq);
/* Tokens of a token call whose chunks are present in every layer. */
uint32_t dp_match(struct kvt_datapath *dp, const struct dp_request *rq);
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
