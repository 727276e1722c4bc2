/* store.c - runs store/fetch/length/match/drop between client regions and the hot tier. */
#include "daemon/store.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "proto/prefix.h"

size_t dp_row_bytes(const struct kvt_ns *ns, enum kvt_elem elem)
{
    return (size_t)ns->heads * ns->dim * simd_elem_size(elem);
}

uint64_t dp_client_row_bytes(const struct dp_request *rq)
{
    if (rq->locate)
        return 0;
    return rq->raw ? proto_raw_row_bytes(rq->ns->heads, rq->ns->dim, rq->raw_outliers)
                   : dp_row_bytes(rq->ns, rq->elem);
}

static void object_of(const struct dp_request *rq, uint32_t key_idx,
                      uint64_t *hi, uint64_t *lo)
{
    const struct kvt_data_view *v = rq->view;

    if (v->req->addr == KVT_ADDR_TOKENS) {
        *hi = v->keys[key_idx].hi;
        *lo = v->keys[key_idx].lo;
    } else {
        XXH128_hash_t h = XXH3_128bits(v->name, v->req->name_len);
        *hi = h.high64;
        *lo = h.low64;
    }
}

static bool range_ok(uint64_t off, uint64_t bytes, uint64_t region_bytes)
{
    return off <= region_bytes && bytes <= region_bytes - off;
}

int dp_validate(const struct dp_request *rq, const char **why)
{
    const struct kvt_data_view *v = rq->view;
    const struct kvt_ns *ns = rq->ns;
    const uint64_t row = dp_client_row_bytes(rq);

    if (v->req->addr == KVT_ADDR_TOKENS) {
        uint64_t want = ((uint64_t)v->req->n_tokens + ns->chunk_tokens - 1) / ns->chunk_tokens;
        if (v->req->n_keys != want) {
            *why = "token key count does not match n_tokens and chunk size";
            return -EINVAL;
        }
    }
    for (uint32_t i = 0; i < v->req->n_spans; i++) {
        const struct kvt_wire_span *s = &v->spans[i];
        if (s->layer >= ns->layers) {
            *why = "span layer out of range for this model";
            return -EINVAL;
        }
        if (v->req->addr == KVT_ADDR_TOKENS &&
            (uint64_t)s->token_start + s->n_tokens > v->req->n_tokens) {
            *why = "span reaches past the tokens of the call";
            return -EINVAL;
        }
        /* n_tokens < 2^32 and row <= 2^22, so the product fits 64 bits. */
        uint64_t bytes = (uint64_t)s->n_tokens * row;
        if (!range_ok(s->k_off, bytes, rq->region_bytes) ||
            !range_ok(s->v_off, bytes, rq->region_bytes)) {
            *why = "span buffer lies outside the shared memory region";
            return -EFAULT;
        }
    }
    return 0;
}

int dp_plan(const struct dp_request *rq, uint32_t seg_tokens, size_t max_segments,
            struct dp_segment **segs, size_t *n_segs)
{
    const struct kvt_data_view *v = rq->view;
    const uint32_t C = rq->ns->chunk_tokens;
    const size_t row = dp_client_row_bytes(rq);
    const uint32_t seg = seg_tokens && seg_tokens < C ? seg_tokens : C;
    const uint64_t per_chunk = (C + seg - 1) / seg;
    size_t n = 0;

    for (uint32_t i = 0; i < v->req->n_spans; i++) {
        const struct kvt_wire_span *s = &v->spans[i];
        uint64_t first = s->token_start / C, last = (s->token_start + (uint64_t)s->n_tokens - 1) / C;
        /* At most: the cuts fall on multiples of seg inside each chunk. */
        n += (last - first + 1) * per_chunk;
        if (n > max_segments)
            return -E2BIG;
    }
    struct dp_segment *out = malloc(n * sizeof(*out));
    if (!out)
        return -ENOMEM;

    uint64_t named_hi = 0, named_lo = 0;
    if (v->req->addr == KVT_ADDR_NAMED)
        object_of(rq, 0, &named_hi, &named_lo);
    size_t at = 0;
    for (uint32_t i = 0; i < v->req->n_spans; i++) {
        const struct kvt_wire_span *s = &v->spans[i];
        uint32_t done = 0;
        while (done < s->n_tokens) {
            uint32_t pos = s->token_start + done;
            uint32_t tok = pos % C, take = seg - tok % seg;
            if (take > C - tok)
                take = C - tok;
            if (take > s->n_tokens - done)
                take = s->n_tokens - done;
            struct dp_segment *g = &out[at++];
            memset(&g->key, 0, sizeof(g->key));
            g->key.ns_id = rq->ns->id;
            g->key.domain = rq->ns->domain;
            g->key.layer = s->layer;
            if (v->req->addr == KVT_ADDR_NAMED) {
                g->key.obj_hi = named_hi;
                g->key.obj_lo = named_lo;
                g->key.chunk_idx = pos / C;
            } else {
                object_of(rq, pos / C, &g->key.obj_hi, &g->key.obj_lo);
            }
            g->tok = tok;
            g->n = take;
            g->stage = NULL;
            g->stage_bytes = 0;
            g->k_off = s->k_off + (uint64_t)done * row;
            g->v_off = s->v_off + (uint64_t)done * row;
            done += take;
        }
    }
    *segs = out;
    *n_segs = at;
    return 0;
}

struct kvt_chunk_shape dp_chunk_shape(struct kvt_datapath *dp, const struct kvt_ns *ns,
                                      enum kvt_elem elem)
{
    struct kvt_chunk_shape s = {
        .tokens = ns->chunk_tokens, .heads = ns->heads, .dim = ns->dim,
        .elem = dp->lossless ? (uint16_t)elem : KVT_CHUNK_INT8,
    };

    s.outliers = chunk_outliers_for(&s, atomic_load_explicit(&dp->outliers,
                                                              memory_order_relaxed));
    return s;
}

/* One segment's rows between a chunk and the client's region. */
struct rows_move {
    struct kvt_datapath *dp;
    const struct dp_request *rq;
    const struct dp_segment *g;
    /* Rows not checked yet (a stage): outliers 0 must refuse NaN and Inf
     * too, which plain quantize takes as 0. */
    bool unchecked;
};

/* Bytes of client rows checked and quantized at a time when outliers are 0
 * and the rows are unchecked: the check's read leaves them in L1 for the
 * quantize, so the rows come from memory once. */
#define CHECKED_SLICE_BYTES (16u << 10)

/* quantize groups [0, n_groups) of src into dst/scales, refusing NaN and
 * Inf: quantize_outliers with no outliers checks, then quantizes, the same
 * bytes as quantize; run slice by slice so both read the rows from L1. */
static int quantize_checked(const struct kvt_simd_ops *simd, int8_t *dst, float *scales,
                            const uint8_t *src, enum kvt_elem elem, size_t n_groups,
                            size_t dim)
{
    const size_t group_bytes = dim * simd_elem_size(elem);
    size_t step = CHECKED_SLICE_BYTES / group_bytes;

    if (step == 0)
        step = 1;
    for (size_t g = 0; g < n_groups; g += step) {
        size_t take = n_groups - g < step ? n_groups - g : step;
        int rc = simd->quantize_outliers(dst + g * dim, scales + g, NULL, NULL,
                                         src + g * group_bytes, elem, take, dim, 0);
        if (rc)
            return rc;
    }
    return 0;
}

/* hot_rows_fn: quantize or convert the client's rows into the chunk's
 * (tok * row offsets into chunk_view's arrays), with the chunk's own
 * shape: its outliers may be another setting's. Returns 0, or -EINVAL when
 * quantize_outliers (or, for unchecked rows, quantize_checked) refuses NaN
 * or Inf (the hot tier then keeps the tokens absent). */
static int rows_to_chunk(void *arg, const struct kvt_chunk_shape *s, void *data)
{
    const struct rows_move *m = arg;
    const struct dp_segment *g = m->g;
    const struct kvt_simd_ops *simd = m->dp->simd;
    const enum kvt_elem elem = m->rq->elem;
    const size_t groups = (size_t)g->n * s->heads, row = chunk_row_bytes(s);
    const uint8_t *client_k = m->rq->region + g->k_off, *client_v = m->rq->region + g->v_off;
    struct kvt_chunk_view cv;
    int rc;

    chunk_view(s, data, &cv);
    uint8_t *ck = cv.k + (size_t)g->tok * row, *cvv = cv.v + (size_t)g->tok * row;
    if (s->elem != KVT_CHUNK_INT8) {
        simd->convert(ck, s->elem, client_k, elem, groups * s->dim);
        simd->convert(cvv, s->elem, client_v, elem, groups * s->dim);
        return 0;
    }
    float *ks = cv.k_scale + (size_t)g->tok * s->heads;
    float *vs = cv.v_scale + (size_t)g->tok * s->heads;
    if (!s->outliers && m->unchecked) {
        rc = quantize_checked(simd, (int8_t *)ck, ks, client_k, elem, groups, s->dim);
        if (rc == 0)
            rc = quantize_checked(simd, (int8_t *)cvv, vs, client_v, elem, groups, s->dim);
        return rc;
    }
    if (!s->outliers) {
        /* The plain layout, bit for bit as before outliers existed. */
        simd->quantize((int8_t *)ck, ks, client_k, elem, groups, s->dim);
        simd->quantize((int8_t *)cvv, vs, client_v, elem, groups, s->dim);
        return 0;
    }
    size_t o = (size_t)g->tok * s->heads * s->outliers;
    rc = simd->quantize_outliers((int8_t *)ck, ks, cv.k_out_idx + o, cv.k_out_val + o,
                                 client_k, elem, groups, s->dim, s->outliers);
    if (rc == 0)
        rc = simd->quantize_outliers((int8_t *)cvv, vs, cv.v_out_idx + o, cv.v_out_val + o,
                                     client_v, elem, groups, s->dim, s->outliers);
    return rc;
}

/* rows_from_chunk for a raw fetch: per token, the chunk's array-major
 * pieces (scales, outlier indexes, outlier values, int8 rows) gathered into
 * one interleaved row (proto.h KVT_DATA_RAW). Outlier slots past the
 * chunk's own count are padded with index 0xFFFF and value 0. */
struct raw_src {
    const float *scale;
    const uint16_t *out_idx, *out_val;
    const uint8_t *q;
};

static void raw_one_row(const struct kvt_chunk_shape *s, uint32_t O, uint8_t *dst,
                        const struct raw_src *src, uint32_t t)
{
    const size_t H = s->heads, D = s->dim, so = s->outliers;
    uint8_t *idx = dst + H * 4, *val = idx + H * O * 2;

    /* The client picks the offsets: rows need not be aligned, so every
     * field is written with memcpy. */
    memcpy(dst, src->scale + (size_t)t * H, H * sizeof(float));
    if (O && so == O) {              /* the usual case: the chunk's own runs */
        memcpy(idx, src->out_idx + (size_t)t * H * so, H * so * 2);
        memcpy(val, src->out_val + (size_t)t * H * so, H * so * 2);
    } else {
        for (size_t h = 0; h < H; h++) {
            const size_t from = ((size_t)t * H + h) * so;
            for (size_t j = 0; j < O; j++) {
                uint16_t i = j < so ? src->out_idx[from + j] : 0xFFFFu;
                uint16_t v = j < so ? src->out_val[from + j] : 0;
                memcpy(idx + (h * O + j) * 2, &i, 2);
                memcpy(val + (h * O + j) * 2, &v, 2);
            }
        }
    }
    memcpy(dst + H * (4 + 4 * (size_t)O), src->q + (size_t)t * H * D, H * D);
}

/* Rows gathered per batch in a buffer that stays in L1, then streamed out. */
#define RAW_BATCH_BYTES (16u << 10)

static void raw_rows(const struct kvt_chunk_shape *s, uint32_t O, uint8_t *dst,
                     const struct raw_src *src, uint32_t tok, uint32_t n)
{
    const size_t raw_row = proto_raw_row_bytes(s->heads, s->dim, O);

#if defined(__x86_64__) || defined(__i386__)
    /* Raw rows go to the GPU by DMA: a large run skips the read of every
     * destination line that ordinary stores make (simd.h). */
    if ((size_t)n * raw_row >= SIMD_STREAM_MIN_BYTES && raw_row <= RAW_BATCH_BYTES) {
        uint8_t batch[RAW_BATCH_BYTES];
        const uint32_t per = (uint32_t)(RAW_BATCH_BYTES / raw_row);
        for (uint32_t t = tok; t < tok + n;) {
            uint32_t m = tok + n - t < per ? tok + n - t : per;
            for (uint32_t i = 0; i < m; i++)
                raw_one_row(s, O, batch + i * raw_row, src, t + i);
            simd_stream_copy(dst, batch, m * raw_row);
            dst += m * raw_row;
            t += m;
        }
        return;
    }
#endif
    for (uint32_t t = tok; t < tok + n; t++, dst += raw_row)
        raw_one_row(s, O, dst, src, t);
}

static int raw_from_chunk(const struct rows_move *m, const struct kvt_chunk_shape *s,
                          void *data)
{
    const struct dp_segment *g = m->g;
    const struct dp_request *rq = m->rq;
    struct kvt_chunk_view cv;

    if (s->elem != KVT_CHUNK_INT8)
        return -EOPNOTSUPP;
    if (s->outliers > rq->raw_outliers) {
        if (rq->raw_refused_outliers)
            atomic_store(rq->raw_refused_outliers, s->outliers);
        return -ERANGE;
    }
    chunk_view(s, data, &cv);
    const struct raw_src k = { cv.k_scale, cv.k_out_idx, cv.k_out_val, cv.k };
    const struct raw_src v = { cv.v_scale, cv.v_out_idx, cv.v_out_val, cv.v };
    raw_rows(s, rq->raw_outliers, rq->region + g->k_off, &k, g->tok, g->n);
    raw_rows(s, rq->raw_outliers, rq->region + g->v_off, &v, g->tok, g->n);
    return 0;
}

/* hot_rows_fn: the inverse, into the client's region (the chunk is only read). */
static int rows_from_chunk(void *arg, const struct kvt_chunk_shape *s, void *data)
{
    const struct rows_move *m = arg;
    const struct dp_segment *g = m->g;
    const struct kvt_simd_ops *simd = m->dp->simd;
    const enum kvt_elem elem = m->rq->elem;
    const size_t groups = (size_t)g->n * s->heads, row = chunk_row_bytes(s);
    uint8_t *client_k = m->rq->region + g->k_off, *client_v = m->rq->region + g->v_off;
    struct kvt_chunk_view cv;

    if (m->rq->raw)
        return raw_from_chunk(m, s, data);
    chunk_view(s, data, &cv);
    const uint8_t *ck = cv.k + (size_t)g->tok * row, *cvv = cv.v + (size_t)g->tok * row;
    if (s->elem != KVT_CHUNK_INT8) {
        simd->convert(client_k, elem, ck, s->elem, groups * s->dim);
        simd->convert(client_v, elem, cvv, s->elem, groups * s->dim);
        return 0;
    }
    const float *ks = cv.k_scale + (size_t)g->tok * s->heads;
    const float *vs = cv.v_scale + (size_t)g->tok * s->heads;
    if (!s->outliers) {
        simd->dequantize(client_k, elem, (const int8_t *)ck, ks, groups, s->dim);
        simd->dequantize(client_v, elem, (const int8_t *)cvv, vs, groups, s->dim);
        return 0;
    }
    size_t o = (size_t)g->tok * s->heads * s->outliers;
    simd->dequantize_outliers(client_k, elem, (const int8_t *)ck, ks, cv.k_out_idx + o,
                              cv.k_out_val + o, groups, s->dim, s->outliers);
    simd->dequantize_outliers(client_v, elem, (const int8_t *)cvv, vs, cv.v_out_idx + o,
                              cv.v_out_val + o, groups, s->dim, s->outliers);
    return 0;
}

/* Free seg's stage, if any, and give back its share of the allowance. */
static void stage_release(struct kvt_datapath *dp, struct dp_segment *g)
{
    if (!g->stage)
        return;
    hot_stage_free(dp->hot, g->stage);
    g->stage = NULL;
    atomic_fetch_sub_explicit(&dp->staged_bytes, g->stage_bytes, memory_order_relaxed);
}

void dp_release(struct kvt_datapath *dp, struct dp_segment *segs, size_t n)
{
    for (size_t i = 0; i < n; i++)
        stage_release(dp, &segs[i]);
}

/* Commit seg's stage: 0 when it is the chunk now; 1 when the chunk keeps
 * other outliers (the stage is freed, the rows go in place); or -errno. */
static int stage_commit(struct kvt_datapath *dp, struct dp_segment *g)
{
    int rc = tiers_stage_commit(dp->tiers, g->stage);

    if (rc == 0) {
        g->stage = NULL;             /* the tier's now */
        atomic_fetch_sub_explicit(&dp->staged_bytes, g->stage_bytes, memory_order_relaxed);
        return 0;
    }
    stage_release(dp, g);
    return rc == -ESTALE ? 1 : rc;
}

static uint32_t leading_tokens(struct kvt_datapath *dp, const struct kvt_chunk_key *key);

/* Token-addressed chunks are the same on every host: queue them for the
 * pool (tiers_remote_write returns at once; the store's reply does not
 * wait for the network). Only chunks this store left complete (every
 * token present): a partial tail's key changes with every token a decode
 * appends, so writing tails would send a record per decoded token for a
 * key no longer prompt matches; and a chunk whose tokens came in two
 * requests (a span the client split where its staging room ran out) is
 * written once, when its second part makes it whole, not once per part. */
static void write_through(struct kvt_datapath *dp, const struct dp_request *rq,
                          const struct dp_segment *segs, size_t n)
{
    const struct kvt_chunk_key *keys[64];
    size_t m = 0;

    if (!tiers_remote_serves(dp->tiers, rq->ns))
        return;
    for (size_t i = 0; i < n; i++) {
        /* Segments of one chunk are adjacent: look at its last. */
        if (i + 1 < n && !memcmp(&segs[i].key, &segs[i + 1].key, sizeof(segs[i].key)))
            continue;
        if (leading_tokens(dp, &segs[i].key) != rq->ns->chunk_tokens)
            continue;
        keys[m++] = &segs[i].key;
        if (m == 64) {
            tiers_remote_write(dp->tiers, rq->ns, keys, m);
            m = 0;
        }
    }
    if (m)
        tiers_remote_write(dp->tiers, rq->ns, keys, m);
}

int dp_store(struct kvt_datapath *dp, const struct dp_request *rq,
             struct dp_segment *segs, size_t n)
{
    const struct kvt_chunk_shape shape = dp_chunk_shape(dp, rq->ns, rq->elem);
    int rc = 0;

    for (size_t i = 0; i < n && rc == 0; i++) {
        struct rows_move m = { .dp = dp, .rq = rq, .g = &segs[i] };

        if (segs[i].stage && (rc = stage_commit(dp, &segs[i])) <= 0)
            continue;
        /* One pass into the hot tier per segment: it finds or creates the
         * chunk write-locked (a created one with its cold record's tokens
         * already merged under the rows written here, so a write-back never
         * replaces the record with this store's tokens alone: one record
         * read, on this thread, per chunk appended to after its demotion),
         * runs rows_to_chunk, then marks the tokens present and the chunk
         * dirty. A racing fetch sees old or new rows, never a mix. */
        rc = tiers_write(dp->tiers, &segs[i].key, &shape, segs[i].tok, segs[i].n,
                         rows_to_chunk, &m);
    }
    dp_release(dp, segs, n);         /* after an error: stages not reached */
    if (rc == 0 && rq->view->req->addr == KVT_ADDR_TOKENS)
        write_through(dp, rq, segs, n);
    return rc;
}

/* Whether a stage of bytes fits the allowance now (reserving it if so). */
static bool stage_reserve(struct kvt_datapath *dp, uint64_t bytes, uint64_t allowance)
{
    uint64_t was = atomic_fetch_add_explicit(&dp->staged_bytes, bytes, memory_order_relaxed);

    if (was + bytes <= allowance)
        return true;
    atomic_fetch_sub_explicit(&dp->staged_bytes, bytes, memory_order_relaxed);
    return false;
}

int dp_stage(struct kvt_datapath *dp, const struct dp_request *rq,
             struct dp_segment *segs, size_t n)
{
    const size_t row_elems = (size_t)rq->ns->heads * rq->ns->dim;
    const struct kvt_chunk_shape shape = dp_chunk_shape(dp, rq->ns, rq->elem);
    const uint64_t stage_bytes = hot_chunk_bytes(&shape);
    struct kvt_hot_stats hs = { 0 };
    bool have_budget = false;
    int rc = 0;

    if (dp->lossless)
        return 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        struct dp_segment *g = &segs[i];
        const size_t elems = (size_t)g->n * row_elems;
        const bool whole = g->tok == 0 && g->n == shape.tokens;

        /* Read once, and only by requests with a whole chunk: a decode
         * step pays no tier mutex here. */
        if (whole && !have_budget) {
            hot_stats(dp->hot, &hs);
            have_budget = true;
        }
        if (whole && stage_reserve(dp, stage_bytes, hs.budget_bytes / DP_STAGE_SHARE)) {
            struct rows_move m = { .dp = dp, .rq = rq, .g = g, .unchecked = true };

            g->stage_bytes = stage_bytes;
            rc = hot_stage_alloc(dp->hot, &g->key, &shape, rows_to_chunk, &m, &g->stage);
            if (rc == 0 || rc == -EINVAL) {
                if (rc)
                    atomic_fetch_sub_explicit(&dp->staged_bytes, stage_bytes,
                                              memory_order_relaxed);
                continue;
            }
            /* No room for a stage (or memory): check it, write it in place. */
            atomic_fetch_sub_explicit(&dp->staged_bytes, stage_bytes, memory_order_relaxed);
            rc = 0;
        }
        if (dp->simd->check_finite(rq->region + g->k_off, rq->elem, elems) ||
            dp->simd->check_finite(rq->region + g->v_off, rq->elem, elems))
            rc = -EINVAL;
    }
    if (rc)
        dp_release(dp, segs, n);
    return rc;
}

/* Read one segment from its hot chunk: 0, or -ENOENT if the chunk or any
 * of the segment's tokens is missing there. */
static int fetch_hot(struct kvt_datapath *dp, const struct dp_request *rq,
                     const struct dp_segment *g)
{
    struct rows_move m = { .dp = dp, .rq = rq, .g = g };

    return hot_read(dp->hot, &g->key, g->tok, g->n, rows_from_chunk, &m);
}

/* The misses that RAM and SSD could not serve, from the pool: their
 * chunks once each (segments of one chunk are adjacent). */
static void fetch_remote(struct kvt_datapath *dp, const struct dp_request *rq,
                         const struct dp_segment *segs, const struct kvt_chunk_key **missed,
                         const size_t *missed_at, size_t n_missed)
{
    size_t m = 0;

    for (size_t i = 0; i < n_missed; i++) {
        const struct dp_segment *g = &segs[missed_at[i]];
        uint32_t lead;
        if (hot_leading_tokens(dp->hot, &g->key, &lead) == 0 && lead >= g->tok + g->n)
            continue;                /* the cold tier had it */
        if (m && !memcmp(missed[m - 1], &g->key, sizeof(g->key)))
            continue;
        missed[m++] = &g->key;      /* reuses the array: m <= i */
    }
    tiers_remote_fetch(dp->tiers, rq->ns, missed, m);
}

bool dp_fetch_may_ask_pool(struct kvt_datapath *dp, const struct dp_request *rq)
{
    return rq->view->req->addr == KVT_ADDR_TOKENS && tiers_remote_serves(dp->tiers, rq->ns);
}

int dp_fetch(struct kvt_datapath *dp, const struct dp_request *rq,
             const struct dp_segment *segs, size_t n)
{
    const struct kvt_chunk_shape shape = dp_chunk_shape(dp, rq->ns, rq->elem);
    const struct kvt_chunk_key **missed = NULL;
    size_t *missed_at = NULL, n_missed = 0, n_keys = 0;
    const bool remote = dp_fetch_may_ask_pool(dp, rq);
    int rc = 0;

    for (size_t i = 0; i < n; i++) {
        rc = fetch_hot(dp, rq, &segs[i]);
        atomic_fetch_add_explicit(rc == 0 ? &dp->hot_hits : &dp->hot_misses, 1,
                                  memory_order_relaxed);
        if (rc == -ENOENT && (dp->tiers->cold || remote)) {
            /* Maybe on SSD: collect, and promote all misses at once so the
             * disk gets many reads in flight instead of one at a time. */
            if (!missed) {
                missed = malloc(n * sizeof(*missed));
                missed_at = malloc(n * sizeof(*missed_at));
                if (!missed || !missed_at) {
                    rc = -ENOMEM;
                    goto out;
                }
            }
            /* A chunk once, though a large fetch cuts it into adjacent
             * segments (session.c). */
            if (!n_keys || memcmp(missed[n_keys - 1], &segs[i].key, sizeof(segs[i].key)))
                missed[n_keys++] = &segs[i].key;
            missed_at[n_missed++] = i;
            rc = 0;
        } else if (rc) {
            goto out;
        }
    }
    if (n_missed && (rc = tiers_promote_many(dp->tiers, missed, n_keys, &shape)) == 0) {
        if (remote)
            fetch_remote(dp, rq, segs, missed, missed_at, n_missed);
        /* A chunk still missing was absent or corrupt on SSD (and in the
         * pool) too, or evicted again in between (a hot tier smaller than
         * one request). */
        for (size_t i = 0; i < n_missed && !rc; i++)
            rc = fetch_hot(dp, rq, &segs[missed_at[i]]);
    }
out:
    free(missed);
    free(missed_at);
    return rc;
}

/* Tokens present from token 0 of chunk key without a gap, or 0 if absent. */
static uint32_t leading_tokens(struct kvt_datapath *dp, const struct kvt_chunk_key *key)
{
    uint32_t n;

    /* A hot chunk holds every token of its cold copy: whoever creates it
     * merges the record in first (the fill hook of tiers_write and
     * tiers_promote), and later records are written from it. So its own
     * run is exact. */
    if (hot_leading_tokens(dp->hot, key, &n) != 0)
        n = tiers_cold_leading(dp->tiers, key);
    return n;
}

uint32_t dp_length(struct kvt_datapath *dp, const struct dp_request *rq)
{
    const struct kvt_ns *ns = rq->ns;
    struct kvt_chunk_key key = { .ns_id = ns->id, .domain = ns->domain };
    uint64_t shortest = UINT32_MAX;

    object_of(rq, 0, &key.obj_hi, &key.obj_lo);
    for (uint32_t layer = 0; layer < ns->layers && shortest > 0; layer++) {
        uint64_t len = 0;
        key.layer = layer;
        /* No layer can beat the shortest so far, so stop there. */
        for (key.chunk_idx = 0; len < shortest; key.chunk_idx++) {
            uint32_t lead = leading_tokens(dp, &key);
            len += lead;
            if (lead < ns->chunk_tokens)
                break;
        }
        if (len < shortest)
            shortest = len;
    }
    return (uint32_t)shortest;
}

uint32_t dp_context_length(struct kvt_datapath *dp, const struct kvt_ns *ns,
                           const char *name, size_t len)
{
    struct kvt_data_req req = { .addr = KVT_ADDR_NAMED, .name_len = (uint32_t)len };
    struct kvt_data_view view = { .req = &req, .name = name };
    struct dp_request rq = { .ns = ns, .view = &view };

    return dp_length(dp, &rq);
}

void dp_named_object(const struct dp_request *rq, uint64_t *hi, uint64_t *lo)
{
    object_of(rq, 0, hi, lo);
}

/* Whether the chunk (hi, lo) holds at least `want` leading tokens in every
 * layer; layer 0 is asked first, so a miss costs one lookup. */
static bool chunk_in_every_layer(struct kvt_datapath *dp, const struct kvt_ns *ns,
                                 const struct kvt_wire_key *k, uint32_t want)
{
    struct kvt_chunk_key key = { .ns_id = ns->id, .domain = ns->domain,
                                 .obj_hi = k->hi, .obj_lo = k->lo };
    for (key.layer = 0; key.layer < ns->layers; key.layer++)
        if (leading_tokens(dp, &key) < want)
            return false;
    return true;
}

/* Tokens wanted of chunk i of a token call that matched `matched` so far. */
static uint32_t chunk_want(const struct kvt_ns *ns, const struct kvt_data_req *r,
                           uint32_t matched)
{
    return r->n_tokens - matched < ns->chunk_tokens ? r->n_tokens - matched
                                                    : ns->chunk_tokens;
}

/* Ask the pool, once per match, for every chunk of every layer from chunk
 * `first` on that RAM and SSD lack: one round trip for the whole rest of
 * the prefix, whose hits land in the hot tier for the fetch that follows. */
static void match_remote(struct kvt_datapath *dp, const struct dp_request *rq,
                         uint32_t first, uint32_t matched)
{
    const struct kvt_ns *ns = rq->ns;
    const struct kvt_data_req *r = rq->view->req;
    size_t cap = (size_t)(r->n_keys - first) * ns->layers, n = 0;
    struct kvt_chunk_key *keys = malloc(cap * sizeof(*keys));
    const struct kvt_chunk_key **ptrs = malloc(cap * sizeof(*ptrs));

    if (!keys || !ptrs)
        goto out;
    for (uint32_t i = first; i < r->n_keys; i++) {
        uint32_t want = chunk_want(ns, r, matched);
        struct kvt_chunk_key key = { .ns_id = ns->id, .domain = ns->domain,
                                     .obj_hi = rq->view->keys[i].hi,
                                     .obj_lo = rq->view->keys[i].lo };
        for (key.layer = 0; key.layer < ns->layers; key.layer++)
            if (leading_tokens(dp, &key) < want) {
                keys[n] = key;
                ptrs[n] = &keys[n];
                n++;
            }
        matched += want;
    }
    tiers_remote_fetch(dp->tiers, ns, ptrs, n);
out:
    free(keys);
    free(ptrs);
}

uint32_t dp_match(struct kvt_datapath *dp, const struct dp_request *rq)
{
    const struct kvt_ns *ns = rq->ns;
    const struct kvt_data_req *r = rq->view->req;
    bool asked = !tiers_remote_serves(dp->tiers, ns);
    uint32_t matched = 0;

    for (uint32_t i = 0; i < r->n_keys; i++) {
        uint32_t want = chunk_want(ns, r, matched);
        struct kvt_chunk_key key = { .ns_id = ns->id, .domain = ns->domain,
                                     .obj_hi = rq->view->keys[i].hi,
                                     .obj_lo = rq->view->keys[i].lo };
        for (key.layer = 0; key.layer < ns->layers; key.layer++) {
            if (leading_tokens(dp, &key) >= want)
                continue;
            if (asked)
                return matched;
            asked = true;
            match_remote(dp, rq, i, matched);
            key.layer = UINT32_MAX;  /* this chunk again, from layer 0 */
        }
        matched += want;
    }
    return matched;
}

/* After the whole chunks dp_match finds, the next chunk of the query may be
 * stored only as a shorter partial one: the end of an earlier call, e.g. a
 * saved prompt that this query extends. Its key hashes its token count, so
 * each candidate count, longest first, is hashed from the query's tokens and
 * looked up: at most chunk_tokens - 1 lookups in layer 0, in one request. */
uint32_t dp_match_prefix(struct kvt_datapath *dp, const struct dp_request *rq)
{
    const struct kvt_ns *ns = rq->ns;
    const struct kvt_data_req *r = rq->view->req;
    const uint32_t C = ns->chunk_tokens;
    uint32_t matched = dp_match(dp, rq);

    if (matched == r->n_tokens || !rq->view->tokens)
        return matched;
    uint32_t chunk = matched / C, left = r->n_tokens - matched;
    const struct kvt_wire_key *prev = chunk ? &rq->view->keys[chunk - 1] : NULL;
    /* The query's own key for this chunk (count min(left, C)) missed. */
    for (uint32_t count = (left < C ? left : C) - 1; count > 0; count--) {
        struct kvt_wire_key key;
        if (prefix_key_after(prev, rq->view->tokens + matched, count, &key) != 0)
            break;      /* out of memory: the whole chunks are still a true answer */
        if (chunk_in_every_layer(dp, ns, &key, count))
            return matched + count;
    }
    return matched;
}

uint64_t dp_drop(struct kvt_datapath *dp, const struct dp_request *rq, uint64_t *cold_records)
{
    uint64_t hi, lo;

    object_of(rq, 0, &hi, &lo);
    return tiers_drop_object(dp->tiers, rq->ns->id, hi, lo, cold_records);
}
