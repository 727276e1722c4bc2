/* soak_client.c - one soak client: a random mix of every data call, on named
 * contexts of its own and on token prefixes shared with every client of its
 * domain and model, with each fetched value checked against the versions
 * its record (tests/soak.h) allows. Values are test_fill's, seeded by
 * (domain, slot, context, version) or, for token prefixes, by (domain,
 * model, prefix): a value from another domain, a stale version or a
 * dropped context never passes for the expected one. */
#include "tests/soak.h"
#include "tests/helpers.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* One process's handle on its client record. */
struct worker {
    struct soak_shared *sh;
    struct soak_client *me;
    int index;                        /* of me in sh->client */
    kvt_client *c;
    uint64_t rng;
    size_t row_bytes;                 /* one token of K (or V) in the client dtype */
    uint8_t *k, *v;                   /* SOAK_TOKENS rows per layer, layer-major */
    int from_alloc;
};

static uint64_t mix64(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

static uint32_t rnd(struct worker *w, uint32_t n)
{
    w->rng = mix64(w->rng);
    return (uint32_t)(w->rng % n);
}

static uint64_t named_seed(const struct soak_client *me, uint32_t ctx, uint32_t ver, int is_v)
{
    return mix64(((uint64_t)me->domain << 62) ^ ((uint64_t)me->domain_slot << 54) ^
                 ((uint64_t)ctx << 46) ^ ((uint64_t)ver << 1) ^ (uint64_t)is_v);
}

/* Positions below SOAK_BASE_TOKENS belong to the base prefix, whatever the
 * tail: their KV depends on the base's tokens only. */
static uint64_t seq_seed(uint32_t domain, uint32_t model, uint32_t base, uint32_t tail,
                         uint32_t pos, int is_v)
{
    uint32_t part = pos < SOAK_BASE_TOKENS ? SOAK_TAILS : tail;
    return mix64((0x5eull << 56) ^ ((uint64_t)domain << 48) ^ ((uint64_t)model << 40) ^
                 ((uint64_t)base << 32) ^ ((uint64_t)part << 8) ^ (uint64_t)is_v);
}

static void seq_tokens(int32_t *tokens, uint32_t base, uint32_t tail)
{
    for (int32_t i = 0; i < SOAK_SEQ_TOKENS; i++)
        tokens[i] = i < SOAK_BASE_TOKENS ? 100000 * (int32_t)(base + 1) + i
                                         : 100000 * (int32_t)(base + 1) +
                                           1000 * (int32_t)(tail + 1) + i;
}

static uint8_t *krow(struct worker *w, uint32_t layer, uint32_t i)
{
    return w->k + ((size_t)layer * SOAK_TOKENS + i) * w->row_bytes;
}

static uint8_t *vrow(struct worker *w, uint32_t layer, uint32_t i)
{
    return w->v + ((size_t)layer * SOAK_TOKENS + i) * w->row_bytes;
}

static int row_is(struct worker *w, uint64_t kseed, uint64_t vseed, uint32_t layer,
                  uint32_t token, const uint8_t *k, const uint8_t *v)
{
    return test_matches(k, w->me->dtype, kseed, layer, token, 1, SOAK_HEADS, SOAK_DIM) &&
           test_matches(v, w->me->dtype, vseed, layer, token, 1, SOAK_HEADS, SOAK_DIM);
}

/* All-ones bytes are NaN in f16 and f32: a fetch that reports success
 * without writing every row never passes a check. */
static void poison(struct worker *w, uint32_t mask, uint32_t n)
{
    for (uint32_t l = 0; l < SOAK_LAYERS; l++)
        if (mask & (1u << l)) {
            memset(krow(w, l, 0), 0xff, n * w->row_bytes);
            memset(vrow(w, l, 0), 0xff, n * w->row_bytes);
        }
}

static void count(struct worker *w, enum soak_kind kind, int rc, int absent_ok,
                  const char *what)
{
    struct soak_count *c = &w->sh->count[kind];

    atomic_fetch_add(&c->ops, 1);
    if (rc == -ENOENT && absent_ok)
        atomic_fetch_add(&c->absent, 1);
    else if (rc) {
        atomic_fetch_add(&c->errors, 1);
        soak_report(w->sh, "client %u.%u: %s %s: %d (%s)", w->me->domain, w->me->domain_slot,
                    soak_kind_name[kind], what, rc, kvt_strerror(rc));
    }
}

static void count_wrong(struct worker *w, enum soak_kind kind, uint32_t n)
{
    if (n)
        atomic_fetch_add(&w->sh->count[kind].wrong, n);
}

enum verdict { ROW_OK, ROW_WRONG, ROW_DROPPED };

/* A cheap first test of whether row k holds version kseed: four elements
 * of head 0, well within any int8 bound (0.5 is above max|v| / 127 for the
 * largest outlier test_value makes) and far below the distance between
 * two versions' values. */
static int may_be(struct worker *w, uint64_t kseed, uint32_t layer, uint32_t t,
                  const uint8_t *k)
{
    for (uint32_t e = 0; e < 4; e++)
        if (!(fabsf(test_to_f32(k, w->me->dtype, e) - test_value(kseed, layer, t, e)) <= 0.5f))
            return 0;
    return 1;
}

/* The newest of this client's versions in [floor, below) of ctx that rows
 * k, v of (layer, t) hold; 0 if none. */
static uint32_t which_version(struct worker *w, uint32_t ctx, uint32_t layer, uint32_t t,
                              const uint8_t *k, const uint8_t *v, uint32_t floor,
                              uint32_t below)
{
    const struct soak_client *me = w->me;

    for (uint32_t ver = below; ver-- > floor && ver > 0;)
        if (may_be(w, named_seed(me, ctx, ver, 0), layer, t, k) &&
            row_is(w, named_seed(me, ctx, ver, 0), named_seed(me, ctx, ver, 1), layer, t, k, v))
            return ver;
    return 0;
}

/* Token t of (ctx, layer) was fetched into rows k, v: is it a version the
 * record allows? */
static enum verdict named_row(struct worker *w, uint32_t ctx, uint32_t layer, uint32_t t,
                              const uint8_t *k, const uint8_t *v)
{
    const struct soak_client *me = w->me;
    uint32_t ver = me->ver[ctx][layer][t], alt = me->alt[ctx][layer][t];

    if (alt == SOAK_VER_UNKNOWN)
        return ROW_OK;
    if (ver && row_is(w, named_seed(me, ctx, ver, 0), named_seed(me, ctx, ver, 1), layer, t, k, v))
        return ROW_OK;
    if (alt && row_is(w, named_seed(me, ctx, alt, 0), named_seed(me, ctx, alt, 1), layer, t, k, v))
        return ROW_OK;
    if (!ver && !alt)
        return ROW_DROPPED;
    if (atomic_load(&w->sh->evict_hot_started) > me->epoch[ctx][layer][t]) {
        uint32_t floor = me->synced[ctx][layer][t];
        if (floor < me->drop_floor[ctx])
            floor = me->drop_floor[ctx];
        if (which_version(w, ctx, layer, t, k, v, floor, ver))
            return ROW_OK;
    }
    return ROW_WRONG;
}


/* Check tokens [start, start + n) of (ctx, layer), fetched into the
 * layer's rows; report the first bad one. Returns the number of bad ones. */
static uint32_t check_named(struct worker *w, enum soak_kind kind, uint32_t ctx,
                            uint32_t layer, uint32_t start, uint32_t n)
{
    const struct soak_client *me = w->me;
    uint32_t bad = 0, first = 0;
    enum verdict first_verdict = ROW_OK;
    char name[64];

    for (uint32_t t = start; t < start + n; t++) {
        enum verdict vd = named_row(w, ctx, layer, t, krow(w, layer, t - start),
                                    vrow(w, layer, t - start));
        if (vd != ROW_OK && !bad++) {
            first = t;
            first_verdict = vd;
        }
    }
    if (!bad)
        return 0;
    soak_ctx_name(name, sizeof(name), me->domain_slot, ctx);
    uint32_t found = which_version(w, ctx, layer, first, krow(w, layer, first - start),
                                   vrow(w, layer, first - start), 1, me->next_version + 1);
    soak_report(w->sh, "client %u.%u: %s of %s layer %u tokens %u+%u: %u tokens %s, first %u "
                "(record: version %u, alt %u; the value is %s%u)", me->domain, me->domain_slot,
                soak_kind_name[kind], name, layer, start, n, bad,
                first_verdict == ROW_DROPPED ? "RETURNED AFTER A DROP (or never stored)"
                                             : "WRONG",
                first, me->ver[ctx][layer][first], me->alt[ctx][layer][first],
                found ? "version " : "no version of it, ", found);
    if (first_verdict == ROW_DROPPED) {
        int raced = soak_drop_raced_flush(w->sh, w->index, ctx);
        atomic_fetch_add(raced ? &w->sh->resurrected_flush : &w->sh->resurrected_other, 1);
        soak_report(w->sh, "  (an admin flush %s during the drop of %s)",
                    raced ? "ran" : "did not run", name);
    }
    soak_print_history(w->sh, w->index, ctx, layer, first, found);
    return bad;
}

static uint32_t check_seq_rows(struct worker *w, enum soak_kind kind, uint32_t base,
                               uint32_t tail, uint32_t layer, uint32_t start, uint32_t n)
{
    const struct soak_client *me = w->me;
    uint32_t model = me->domain_slot % 2, bad = 0, first = 0;
    int foreign = 0;

    for (uint32_t t = start; t < start + n; t++) {
        const uint8_t *k = krow(w, layer, t - start), *v = vrow(w, layer, t - start);
        if (row_is(w, seq_seed(me->domain, model, base, tail, t, 0),
                   seq_seed(me->domain, model, base, tail, t, 1), layer, t, k, v))
            continue;
        if (!bad++) {
            first = t;
            foreign = row_is(w, seq_seed(!me->domain, model, base, tail, t, 0),
                             seq_seed(!me->domain, model, base, tail, t, 1), layer, t, k, v);
        }
    }
    if (bad)
        soak_report(w->sh, "client %u.%u: %s of prefix %u.%u layer %u positions %u+%u: %u "
                    "WRONG, first %u%s", me->domain, me->domain_slot, soak_kind_name[kind],
                    base, tail, layer, start, n, bad, first,
                    foreign ? " (another domain's value)" : "");
    return bad;
}

/* ---- the record: a store's versions ---------------------------------------- */

static void journal_begin(struct soak_client *me, uint32_t ctx, uint32_t mask,
                          uint32_t start, uint32_t n, uint32_t version)
{
    me->journal.ctx = ctx;
    me->journal.layer_mask = mask;
    me->journal.token_start = start;
    me->journal.n_tokens = n;
    me->journal.version = version;
    atomic_store(&me->journal.active, 1);
}

static uint32_t evict_epoch(struct soak_shared *sh)
{
    uint32_t done = atomic_load(&sh->evict_hot_done);
    uint32_t started = atomic_load(&sh->evict_hot_started);
    return started != done ? started - 1 : started;
}

/* A store that succeeded holds the new version; one that failed may hold
 * it or what was there, and one already in doubt may hold anything. */
static void journal_end(struct soak_client *me, int rc, uint32_t epoch)
{
    const struct soak_journal *j = &me->journal;

    for (uint32_t l = 0; l < SOAK_LAYERS; l++) {
        if (!(j->layer_mask & (1u << l)))
            continue;
        for (uint32_t t = j->token_start; t < j->token_start + j->n_tokens; t++) {
            uint32_t *alt = &me->alt[j->ctx][l][t];
            me->epoch[j->ctx][l][t] = epoch;
            if (rc == 0) {
                me->ver[j->ctx][l][t] = j->version;
                *alt = 0;
            } else {
                *alt = *alt ? SOAK_VER_UNKNOWN : j->version;
            }
        }
    }
    atomic_store(&me->journal.active, 0);
}

/* A killed predecessor's store was in flight. Its session is gone by now
 * (the supervisor waits for that before starting this one), so each of
 * its tokens holds one version for good: find out which. */
static void resolve_journal(struct worker *w)
{
    struct soak_client *me = w->me;
    const struct soak_journal *j = &me->journal;
    uint32_t bad = 0;
    char name[64];

    if (!atomic_load(&me->journal.active))
        return;
    soak_ctx_name(name, sizeof(name), me->domain_slot, j->ctx);
    for (uint32_t l = 0; l < SOAK_LAYERS; l++) {
        if (!(j->layer_mask & (1u << l)))
            continue;
        for (uint32_t t = j->token_start; t < j->token_start + j->n_tokens; t++) {
            uint32_t *ver = &me->ver[j->ctx][l][t], *alt = &me->alt[j->ctx][l][t];
            uint32_t nv = j->version;
            int rc = kvt_fetch(w->c, name, l, t, 1, krow(w, l, 0), vrow(w, l, 0));
            count(w, SOAK_RESOLVE, rc, 1, name);
            if (rc == 0 && row_is(w, named_seed(me, j->ctx, nv, 0), named_seed(me, j->ctx, nv, 1),
                                  l, t, krow(w, l, 0), vrow(w, l, 0))) {
                *ver = nv;
                *alt = 0;
            } else if (rc == 0) {
                bad += check_named(w, SOAK_RESOLVE, j->ctx, l, t, 1);
            } else if (rc == -ENOENT && *alt != SOAK_VER_UNKNOWN) {
                /* Absent now: either version was evicted; accept both. */
                *alt = *alt && *ver ? SOAK_VER_UNKNOWN : *ver ? *ver : *alt;
                *ver = nv;
            } else if (rc && rc != -ENOENT) {
                *alt = SOAK_VER_UNKNOWN;
            }
        }
    }
    count_wrong(w, SOAK_RESOLVE, bad);
    atomic_store(&me->journal.active, 0);
}

/* ---- operations --------------------------------------------------------- */

/* A random range: half the time whole chunks, else any run of tokens. */
static void pick_range(struct worker *w, uint32_t limit, uint32_t *start, uint32_t *n)
{
    if (rnd(w, 2)) {
        uint32_t chunks = limit / SOAK_CHUNK, first = rnd(w, chunks);
        *start = first * SOAK_CHUNK;
        *n = (1 + rnd(w, chunks - first)) * SOAK_CHUNK;
    } else {
        *start = rnd(w, limit);
        *n = 1 + rnd(w, limit - *start);
    }
}

static uint32_t pick_layers(struct worker *w, int batch)
{
    return batch ? 1 + rnd(w, (1u << SOAK_LAYERS) - 1) : 1u << rnd(w, SOAK_LAYERS);
}

static size_t spans_for(struct worker *w, kvt_span *spans, uint32_t mask, uint32_t start,
                        uint32_t n)
{
    size_t k = 0;
    for (uint32_t l = 0; l < SOAK_LAYERS; l++)
        if (mask & (1u << l))
            spans[k++] = (kvt_span){ l, start, n, krow(w, l, 0), vrow(w, l, 0) };
    return k;
}

static void op_store(struct worker *w, int batch)
{
    struct soak_client *me = w->me;
    uint32_t ctx = rnd(w, SOAK_CTXS), mask = pick_layers(w, batch), start, n;
    kvt_span spans[SOAK_LAYERS];
    char name[64];
    int rc;

    pick_range(w, SOAK_TOKENS, &start, &n);
    soak_ctx_name(name, sizeof(name), me->domain_slot, ctx);
    uint32_t version = ++me->next_version;
    size_t n_spans = spans_for(w, spans, mask, start, n);
    for (size_t i = 0; i < n_spans; i++) {
        test_fill(spans[i].k, me->dtype, named_seed(me, ctx, version, 0), spans[i].layer,
                  start, n, SOAK_HEADS, SOAK_DIM);
        test_fill(spans[i].v, me->dtype, named_seed(me, ctx, version, 1), spans[i].layer,
                  start, n, SOAK_HEADS, SOAK_DIM);
    }
    journal_begin(me, ctx, mask, start, n, version);
    uint32_t epoch = evict_epoch(w->sh);
    uint64_t ev = soak_event_begin(w->sh, w->index, batch ? SOAK_STORE_BATCH : SOAK_STORE,
                                   ctx, mask, start, n, version);
    rc = batch ? kvt_store_batch(w->c, name, spans, n_spans)
               : kvt_store(w->c, name, spans[0].layer, start, n, spans[0].k, spans[0].v);
    soak_event_end(w->sh, ev, rc);
    journal_end(me, rc, epoch);
    count(w, batch ? SOAK_STORE_BATCH : SOAK_STORE, rc, 0, name);
}

static void op_fetch(struct worker *w, int batch)
{
    enum soak_kind kind = batch ? SOAK_FETCH_BATCH : SOAK_FETCH;
    uint32_t ctx = rnd(w, SOAK_CTXS), mask = pick_layers(w, batch), start, n, bad = 0;
    kvt_span spans[SOAK_LAYERS];
    char name[64];
    int rc;

    pick_range(w, SOAK_TOKENS, &start, &n);
    soak_ctx_name(name, sizeof(name), w->me->domain_slot, ctx);
    size_t n_spans = spans_for(w, spans, mask, start, n);
    poison(w, mask, n);
    rc = batch ? kvt_fetch_batch(w->c, name, spans, n_spans)
               : kvt_fetch(w->c, name, spans[0].layer, start, n, spans[0].k, spans[0].v);
    count(w, kind, rc, 1, name);
    for (size_t i = 0; rc == 0 && i < n_spans; i++)
        bad += check_named(w, kind, ctx, spans[i].layer, start, n);
    count_wrong(w, kind, bad);
}

static void op_length(struct worker *w)
{
    const struct soak_client *me = w->me;
    uint32_t ctx = rnd(w, SOAK_CTXS), len = UINT32_MAX, bad = 0;
    char name[64];

    soak_ctx_name(name, sizeof(name), me->domain_slot, ctx);
    int rc = kvt_length(w->c, name, &len);
    count(w, SOAK_LENGTH, rc, 0, name);
    if (rc)
        return;
    /* Eviction may shorten it; nothing may lengthen it past what is stored. */
    for (uint32_t l = 0; l < SOAK_LAYERS && !bad; l++)
        for (uint32_t t = 0; t < len && !bad; t++)
            if (t >= SOAK_TOKENS || (!me->ver[ctx][l][t] && !me->alt[ctx][l][t])) {
                soak_report(w->sh, "client %u.%u: length of %s is %u, but layer %u token %u "
                            "was dropped or never stored", me->domain, me->domain_slot,
                            name, len, l, t);
                bad = 1;
            }
    count_wrong(w, SOAK_LENGTH, bad);
}

static void op_drop(struct worker *w)
{
    struct soak_client *me = w->me;
    uint32_t ctx = rnd(w, SOAK_CTXS);
    char name[64];

    soak_ctx_name(name, sizeof(name), me->domain_slot, ctx);
    uint64_t ev = soak_event_begin(w->sh, w->index, SOAK_DROP, ctx, 0, 0, 0, 0);
    int rc = kvt_drop(w->c, name);
    soak_event_end(w->sh, ev, rc);
    count(w, SOAK_DROP, rc, 0, name);
    /* Returned: nothing of it may be fetched again until stored again. */
    if (rc == 0) {
        me->drop_floor[ctx] = me->next_version + 1;
        memset(me->ver[ctx], 0, sizeof(me->ver[ctx]));
        memset(me->alt[ctx], 0, sizeof(me->alt[ctx]));
    }
}

static void fill_seq(struct worker *w, const kvt_span *s, uint32_t base, uint32_t tail)
{
    const struct soak_client *me = w->me;
    uint32_t model = me->domain_slot % 2;

    for (uint32_t t = s->token_start; t < s->token_start + s->n_tokens; t++) {
        uint32_t i = t - s->token_start;
        test_fill(krow(w, s->layer, i), me->dtype, seq_seed(me->domain, model, base, tail, t, 0),
                  s->layer, t, 1, SOAK_HEADS, SOAK_DIM);
        test_fill(vrow(w, s->layer, i), me->dtype, seq_seed(me->domain, model, base, tail, t, 1),
                  s->layer, t, 1, SOAK_HEADS, SOAK_DIM);
    }
}

static void op_store_tokens(struct worker *w)
{
    uint32_t base = rnd(w, SOAK_BASES), tail = rnd(w, SOAK_TAILS);
    uint32_t n = 1 + rnd(w, SOAK_SEQ_TOKENS), start = rnd(w, 4) ? 0 : rnd(w, n);
    uint32_t mask = rnd(w, 4) ? (1u << SOAK_LAYERS) - 1 : pick_layers(w, 1);
    int32_t tokens[SOAK_SEQ_TOKENS];
    kvt_span spans[SOAK_LAYERS];

    seq_tokens(tokens, base, tail);
    size_t n_spans = spans_for(w, spans, mask, start, n - start);
    for (size_t i = 0; i < n_spans; i++)
        fill_seq(w, &spans[i], base, tail);
    count(w, SOAK_STORE_TOKENS, kvt_store_tokens(w->c, tokens, n, spans, n_spans), 0,
          "prefix");
}

static void fetch_seq(struct worker *w, uint32_t base, uint32_t tail, uint32_t n_call,
                      uint32_t mask, uint32_t start, uint32_t n)
{
    int32_t tokens[SOAK_SEQ_TOKENS];
    kvt_span spans[SOAK_LAYERS];
    uint32_t bad = 0;

    seq_tokens(tokens, base, tail);
    size_t n_spans = spans_for(w, spans, mask, start, n);
    poison(w, mask, n);
    int rc = kvt_fetch_tokens(w->c, tokens, n_call, spans, n_spans);
    count(w, SOAK_FETCH_TOKENS, rc, 1, "prefix");
    for (size_t i = 0; rc == 0 && i < n_spans; i++)
        bad += check_seq_rows(w, SOAK_FETCH_TOKENS, base, tail, spans[i].layer, start, n);
    count_wrong(w, SOAK_FETCH_TOKENS, bad);
}

static void op_match_tokens(struct worker *w)
{
    uint32_t base = rnd(w, SOAK_BASES), tail = rnd(w, SOAK_TAILS);
    uint32_t n = 1 + rnd(w, SOAK_SEQ_TOKENS), cached = UINT32_MAX;
    int32_t tokens[SOAK_SEQ_TOKENS];

    seq_tokens(tokens, base, tail);
    int rc = kvt_match_tokens(w->c, tokens, n, &cached);
    count(w, SOAK_MATCH_TOKENS, rc, 0, "prefix");
    if (rc)
        return;
    if (cached > n || (cached != n && cached % SOAK_CHUNK)) {
        soak_report(w->sh, "match_tokens of %u tokens of prefix %u.%u says %u cached",
                    n, base, tail, cached);
        count_wrong(w, SOAK_MATCH_TOKENS, 1);
        return;
    }
    /* What matched is fetched as an engine would (unless evicted since). */
    if (cached)
        fetch_seq(w, base, tail, cached, (1u << SOAK_LAYERS) - 1, 0, cached);
}

static void op_fetch_tokens(struct worker *w)
{
    uint32_t base = rnd(w, SOAK_BASES), tail = rnd(w, SOAK_TAILS), start, n;

    pick_range(w, SOAK_SEQ_TOKENS, &start, &n);
    fetch_seq(w, base, tail, start + n + rnd(w, SOAK_SEQ_TOKENS - start - n + 1),
              pick_layers(w, 1), start, n);
}

/* Everything stored before a sync is on the cold tier: the oldest version
 * an evict of the hot tier can bring back from now on. Not for tokens an
 * evict already hit (what it dropped unsynced, no sync brings back), and
 * not at all when one ran during the sync. */
static void op_sync(struct worker *w)
{
    struct soak_shared *sh = w->sh;
    struct soak_client *me = w->me;
    uint32_t ver[SOAK_CTXS][SOAK_LAYERS][SOAK_TOKENS];
    uint32_t started = atomic_load(&sh->evict_hot_started);
    uint32_t done = atomic_load(&sh->evict_hot_done);

    memcpy(ver, me->ver, sizeof(ver));
    uint64_t ev = soak_event_begin(sh, w->index, SOAK_SYNC, 0, 0, 0, 0, 0);
    int rc = kvt_sync(w->c);
    soak_event_end(sh, ev, rc);
    count(w, SOAK_SYNC, rc, 0, "");
    if (rc || started != done || atomic_load(&sh->evict_hot_started) != started)
        return;
    for (uint32_t c = 0; c < SOAK_CTXS; c++)
        for (uint32_t l = 0; l < SOAK_LAYERS; l++)
            for (uint32_t t = 0; t < SOAK_TOKENS; t++)
                if (me->epoch[c][l][t] >= started)
                    me->synced[c][l][t] = ver[c][l][t];
}

static void one_op(struct worker *w)
{
    uint32_t r = rnd(w, 100);

    if (r < 16)
        op_store(w, 0);
    else if (r < 26)
        op_store(w, 1);
    else if (r < 44)
        op_fetch(w, 0);
    else if (r < 54)
        op_fetch(w, 1);
    else if (r < 64)
        op_store_tokens(w);
    else if (r < 74)
        op_match_tokens(w);
    else if (r < 84)
        op_fetch_tokens(w);
    else if (r < 96)
        op_length(w);
    else if (r < 98)
        op_drop(w);
    else
        op_sync(w);
}

/* ---- processes ------------------------------------------------------------ */

static int worker_open(struct worker *w, struct soak_shared *sh, uint32_t i)
{
    struct soak_client *me = &sh->client[i];
    kvt_model m = test_model(soak_model_name(me->domain_slot), SOAK_LAYERS, SOAK_HEADS,
                             SOAK_DIM, me->dtype, SOAK_CHUNK);
    size_t bytes;
    int rc;

    memset(w, 0, sizeof(*w));
    w->sh = sh;
    w->me = me;
    w->index = (int)i;
    w->row_bytes = SOAK_ROW_ELEMS * (me->dtype == KVT_F32 ? 4 : 2);
    bytes = (size_t)SOAK_LAYERS * SOAK_TOKENS * w->row_bytes;
    if (getuid() != me->uid && test_become_uid(me->uid))
        return -EPERM;
    rc = kvt_connect(sh->socket, &m, &w->c);
    if (rc)
        return rc;
    /* Half the clients pass shared-memory buffers (the zero-copy path). */
    w->k = me->domain_slot % 2 ? NULL : kvt_alloc(w->c, 2 * bytes);
    w->from_alloc = w->k != NULL;
    if (!w->k)
        w->k = malloc(2 * bytes);
    if (!w->k)
        return -ENOMEM;
    w->v = w->k + bytes;
    w->rng = mix64((uint64_t)getpid() << 32 ^ i ^ (uint64_t)me->incarnation << 8);
    return 0;
}

static void worker_close(struct worker *w)
{
    if (w->k && !w->from_alloc)
        free(w->k);
    kvt_disconnect(w->c);
}

int soak_client_run(struct soak_shared *sh, uint32_t i)
{
    struct worker w;
    int rc = worker_open(&w, sh, i);

    if (rc) {
        soak_report(sh, "client %u cannot start: %s", i, kvt_strerror(rc));
        return 10;
    }
    w.me->incarnation++;
    resolve_journal(&w);
    while (!atomic_load(&sh->stop))
        one_op(&w);
    worker_close(&w);
    return 0;
}

int soak_client_verify(struct soak_shared *sh, uint32_t i)
{
    struct worker w;
    uint32_t bad = 0, present = 0;
    char name[64];

    if (worker_open(&w, sh, i))
        return -1;
    for (uint32_t ctx = 0; ctx < SOAK_CTXS; ctx++) {
        soak_ctx_name(name, sizeof(name), w.me->domain_slot, ctx);
        for (uint32_t l = 0; l < SOAK_LAYERS; l++)
            for (uint32_t t = 0; t < SOAK_TOKENS; t++) {
                int rc = kvt_fetch(w.c, name, l, t, 1, krow(&w, l, 0), vrow(&w, l, 0));
                if (rc == 0) {
                    present++;
                    bad += check_named(&w, SOAK_FETCH, ctx, l, t, 1);
                } else if (rc != -ENOENT) {
                    soak_report(sh, "verify %s: %s", name, kvt_strerror(rc));
                    bad++;
                }
            }
    }
    printf("soak: client %u.%u: %u of %u tokens still stored, %u wrong\n", w.me->domain,
           w.me->domain_slot, present, SOAK_CTXS * SOAK_LAYERS * SOAK_TOKENS, bad);
    worker_close(&w);
    return (int)bad;
}

int soak_final_data(struct soak_shared *sh, uint32_t i, int synced)
{
    struct worker w;
    kvt_span spans[SOAK_LAYERS];
    size_t bad = 0;
    int rc = worker_open(&w, sh, i);

    if (rc)
        return rc;
    uint64_t seed = mix64(0xf1ull << 56 ^ (uint64_t)w.me->domain << 8 ^ w.me->domain_slot % 2);
    size_t n_spans = spans_for(&w, spans, (1u << SOAK_LAYERS) - 1, 0, SOAK_TOKENS);
    if (!synced) {
        for (size_t l = 0; l < n_spans; l++) {
            test_fill(spans[l].k, w.me->dtype, seed, l, 0, SOAK_TOKENS, SOAK_HEADS, SOAK_DIM);
            test_fill(spans[l].v, w.me->dtype, seed + 1, l, 0, SOAK_TOKENS, SOAK_HEADS, SOAK_DIM);
        }
        rc = kvt_store_batch(w.c, "soak-final", spans, n_spans);
        if (!rc)
            rc = kvt_sync(w.c);
    } else {
        poison(&w, (1u << SOAK_LAYERS) - 1, SOAK_TOKENS);
        rc = kvt_fetch_batch(w.c, "soak-final", spans, n_spans);
        for (size_t l = 0; !rc && l < n_spans; l++) {
            bad += test_check(spans[l].k, w.me->dtype, seed, l, 0, SOAK_TOKENS, SOAK_HEADS,
                              SOAK_DIM, 0);
            bad += test_check(spans[l].v, w.me->dtype, seed + 1, l, 0, SOAK_TOKENS,
                              SOAK_HEADS, SOAK_DIM, 0);
        }
    }
    worker_close(&w);
    return rc ? rc : bad ? 1 : 0;
}
