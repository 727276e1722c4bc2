/* test_hot.c - the hot tier keeps its budget, evicts in LRU order, never frees a pinned chunk, and its bitmap helpers are exact.
 *
 * Proves:
 *  - chunk layout: row, scale and block sizes for int8, f32, f16 and bf16,
 *    and chunk_view()'s pointers follow the chunk.h layout;
 *  - create / get / put: a missing key is -ENOENT, a new chunk has no token
 *    present and a 64-byte aligned data block (small and mmap-sized), data
 *    written survives put and get, and two tiers are independent;
 *  - an existing key asked for with another shape is -EINVAL, as are shapes
 *    outside the chunk.h bounds;
 *  - used_bytes never exceeds the budget after any operation while 5x the
 *    budget is inserted, with two shapes mixed;
 *  - LRU: recently gotten chunks survive, the oldest go first, and the evict
 *    hook sees each evicted chunk (pinned, still linked) with its key;
 *  - a pinned chunk survives eviction pressure until put; a pinned chunk that
 *    is dropped is no longer found but its memory stays valid and charged
 *    until its last hot_put;
 *  - a chunk looked up while its evict hook runs is kept (the hook runs
 *    without the tier mutex: the lookup would deadlock otherwise);
 *  - -ENOSPC when everything is pinned or the chunk is larger than the
 *    budget, and then nothing is evicted in vain;
 *  - domain quotas: a domain at its quota evicts its own least recently
 *    used chunks (through the hook) and never another domain's, per-domain
 *    usage follows creations and evictions, a chunk bigger than the quota
 *    and a domain whose chunks are all pinned get -EDQUOT, quota 0 lifts
 *    the limit, and hot_enforce_domain_quota brings a domain over a lowered
 *    quota under it;
 *  - hot_set_budget shrinking evicts at once (all unpinned chunks if pinned
 *    ones exceed the new budget);
 *  - hot_drop_object drops exactly one object across layers and chunk
 *    indexes; hot_drop_namespace one namespace, or all with 0;
 *  - freed data blocks are pooled (at most 1/16 of the budget) and reused
 *    by new chunks of their size, which still start with no token present;
 *    chunks plus pool never exceed the budget, the pool gives way first
 *    when chunks need the room or the budget shrinks, and demotion's
 *    hot_evict_to counts chunks only;
 *  - 4 threads creating chunks of three shapes (two pooled sizes) while
 *    another drops, demotes, changes budget and quota: no block is ever
 *    shared or unmapped while in use, the pool stays under its cap, and
 *    all accounting returns to zero;
 *  - chunk_has_range / chunk_leading_tokens at tokens = 1, 63, 64, 65, 4096
 *    on edge cases and against a bit-by-bit reference on random bitmaps;
 *  - 4 threads doing a fixed number of random get_or_create / get / put /
 *    drop operations on a small budget keep every invariant (keys, shapes,
 *    data written by other threads, budget, accounting at the end); run
 *    under ASan, UBSan and TSan this also checks for memory errors and races.
 */
#include <errno.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "cache/hot_int.h"

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

static const struct kvt_chunk_shape small_shape = { 16, 2, 8, KVT_CHUNK_INT8 };
static const struct kvt_chunk_shape wide_shape = { 32, 2, 8, KVT_CHUNK_INT8 };

static struct kvt_chunk_key make_key(uint64_t ns, uint64_t hi, uint64_t lo,
                                     uint32_t layer, uint32_t idx)
{
    struct kvt_chunk_key k = { .ns_id = ns, .obj_hi = hi, .obj_lo = lo,
                               .domain = 1, .layer = layer, .chunk_idx = idx };
    return k;
}

/* What the tier charges per chunk, as hot.h defines it. */
static uint64_t charge_of(const struct kvt_chunk_shape *s)
{
    return sizeof(struct kvt_chunk) + ((size_t)s->tokens + 63) / 64 * 8 +
           chunk_data_bytes(s);
}

static uint64_t used_bytes(struct kvt_hot *hot)
{
    struct kvt_hot_stats st;

    hot_stats(hot, &st);
    return st.used_bytes;
}

static bool is_present(struct kvt_hot *hot, const struct kvt_chunk_key *k)
{
    struct kvt_chunk *c;

    if (hot_get(hot, k, &c) != 0)
        return false;
    hot_put(hot, c);
    return true;
}

/* Create (or find) a chunk and put it at once. */
static void touch_new(struct kvt_hot *hot, const struct kvt_chunk_key *k,
                      const struct kvt_chunk_shape *s)
{
    struct kvt_chunk *c;

    assert_int_equal(hot_get_or_create(hot, k, s, &c), 0);
    hot_put(hot, c);
}

/* Records every evict hook call; checks the hook's promises. */
struct hook_log {
    struct kvt_chunk_key keys[64];
    int n;
    int bad;          /* calls on an unpinned or unlinked chunk */
};

static void record_hook(void *arg, struct kvt_chunk *c)
{
    struct hook_log *log = arg;

    if (c->pins < 1 || !c->linked)
        log->bad++;
    if (log->n < (int)ARRAY_LEN(log->keys))
        log->keys[log->n] = c->key;
    log->n++;
}

static void assert_key_equal(const struct kvt_chunk_key *a, const struct kvt_chunk_key *b)
{
    assert_memory_equal(a, b, sizeof(*a));
}

/* ---- layout ---------------------------------------------------------------- */

static void test_chunk_layout(void **state)
{
    struct kvt_chunk_shape s8 = { 10, 3, 5, KVT_CHUNK_INT8 };
    struct kvt_chunk_shape f32 = { 10, 3, 5, 0 }, f16 = { 10, 3, 5, 1 }, bf16 = { 10, 3, 5, 2 };
    struct kvt_chunk_shape bad = { 10, 3, 5, 7 };
    struct kvt_chunk_view v;
    uint8_t block[1024];

    (void)state;
    assert_int_equal(chunk_row_bytes(&s8), 15);
    assert_int_equal(chunk_scale_row_bytes(&s8), 12);
    assert_int_equal(chunk_data_bytes(&s8), 10 * 2 * (12 + 15));
    chunk_view(&s8, block, &v);
    assert_ptr_equal(v.k_scale, (float *)block);
    assert_ptr_equal(v.v_scale, (float *)(block + 10 * 12));
    assert_ptr_equal(v.k, block + 2 * 10 * 12);
    assert_ptr_equal(v.v, block + 2 * 10 * 12 + 10 * 15);

    assert_int_equal(chunk_row_bytes(&f32), 60);
    assert_int_equal(chunk_row_bytes(&f16), 30);
    assert_int_equal(chunk_row_bytes(&bf16), 30);
    assert_int_equal(chunk_scale_row_bytes(&f32), 0);
    assert_int_equal(chunk_scale_row_bytes(&f16), 0);
    assert_int_equal(chunk_data_bytes(&f32), 10 * 2 * 60);
    assert_int_equal(chunk_data_bytes(&bf16), 10 * 2 * 30);
    chunk_view(&f16, block, &v);
    assert_null(v.k_scale);
    assert_null(v.v_scale);
    assert_ptr_equal(v.k, block);
    assert_ptr_equal(v.v, block + 10 * 30);

    assert_int_equal(chunk_row_bytes(&bad), 0);

    /* With outliers: scales, then K's indices and values, V's, then int8. */
    struct kvt_chunk_shape o2 = { 10, 3, 5, KVT_CHUNK_INT8, 2 };
    size_t orow = 3 * 2 * 2;
    assert_int_equal(chunk_outlier_row_bytes(&o2), orow);
    assert_int_equal(chunk_outlier_row_bytes(&f16), 0);
    assert_int_equal(chunk_data_bytes(&o2), 10 * 2 * (12 + 2 * orow + 15));
    chunk_view(&o2, block, &v);
    assert_ptr_equal(v.k_out_idx, (uint16_t *)(block + 2 * 10 * 12));
    assert_ptr_equal(v.k_out_val, (uint16_t *)(block + 2 * 10 * 12 + 10 * orow));
    assert_ptr_equal(v.v_out_idx, (uint16_t *)(block + 2 * 10 * 12 + 2 * 10 * orow));
    assert_ptr_equal(v.v_out_val, (uint16_t *)(block + 2 * 10 * 12 + 3 * 10 * orow));
    assert_ptr_equal(v.k, block + 2 * 10 * 12 + 4 * 10 * orow);
    assert_ptr_equal(v.v, block + 2 * 10 * 12 + 4 * 10 * orow + 10 * 15);
    chunk_view(&s8, block, &v);
    assert_null(v.k_out_idx);
    assert_null(v.v_out_val);

    /* Outliers only in int8 mode, at most 16 and at most dim. */
    assert_true(chunk_shape_valid(&o2));
    struct kvt_chunk_shape o_lossless = { 10, 3, 5, 1, 2 }, o_many = { 10, 3, 5, KVT_CHUNK_INT8, 6 };
    struct kvt_chunk_shape o_17 = { 10, 3, 64, KVT_CHUNK_INT8, 17 }, o_16 = { 10, 3, 64, KVT_CHUNK_INT8, 16 };
    assert_false(chunk_shape_valid(&o_lossless));
    assert_false(chunk_shape_valid(&o_many));
    assert_false(chunk_shape_valid(&o_17));
    assert_true(chunk_shape_valid(&o_16));
}

/* ---- basic operations ------------------------------------------------------ */

static void test_create_get_put(void **state)
{
    /* 64 tokens x 8 heads x 128 dim x f32 x 2 = 512 KiB: the mmap path. */
    const struct kvt_chunk_shape big = { 64, 8, 128, 0 };
    const struct kvt_chunk_shape *shapes[] = { &small_shape, &big };
    struct kvt_hot *hot, *other;
    struct kvt_hot_stats st;
    uint64_t used = 0;

    (void)state;
    assert_int_equal(hot_create(4 << 20, &hot), 0);
    assert_int_equal(hot_create(4 << 20, &other), 0);

    for (size_t i = 0; i < ARRAY_LEN(shapes); i++) {
        const struct kvt_chunk_shape *s = shapes[i];
        struct kvt_chunk_key k = make_key(1, 2, 3, (uint32_t)i, 0);
        size_t bytes = chunk_data_bytes(s);
        struct kvt_chunk *c, *again;

        assert_int_equal(hot_get(hot, &k, &c), -ENOENT);
        assert_int_equal(hot_get_or_create(hot, &k, s, &c), 0);
        assert_key_equal(&c->key, &k);
        assert_memory_equal(&c->shape, s, sizeof(*s));
        assert_int_equal((uintptr_t)c->data % 64, 0);
        assert_int_equal(chunk_bits_leading(c->present, c->shape.tokens), 0);
        for (uint32_t t = 0; t < s->tokens; t++)
            assert_false(chunk_bit_has(c->present, t));
        assert_int_equal(c->charged_bytes, charge_of(s));

        pthread_rwlock_wrlock(&c->lock);
        memset(c->data, 0x5a + (int)i, bytes);
        for (uint32_t t = 0; t < s->tokens; t++)
            chunk_bit_set(c->present, t);
        pthread_rwlock_unlock(&c->lock);
        hot_mark_dirty(hot, c);
        hot_put(hot, c);
        used += charge_of(s);

        assert_int_equal(hot_get(hot, &k, &again), 0);
        assert_ptr_equal(again, c);
        assert_true(again->dirty);
        assert_int_equal(chunk_bits_leading(again->present, again->shape.tokens), s->tokens);
        for (size_t b = 0; b < bytes; b++)
            if (((uint8_t *)again->data)[b] != 0x5a + i)
                fail_msg("byte %zu changed", b);
        hot_mark_clean(hot, again);
        assert_false(again->dirty);
        /* get_or_create of an existing chunk returns it, pinned again. */
        assert_int_equal(hot_get_or_create(hot, &k, s, &c), 0);
        assert_ptr_equal(c, again);
        hot_put(hot, c);
        hot_put(hot, again);

        /* The other tier shares nothing. */
        assert_int_equal(hot_get(other, &k, &c), -ENOENT);
    }
    hot_stats(hot, &st);
    assert_int_equal(st.chunks, 2);
    assert_int_equal(st.used_bytes, used);
    assert_int_equal(st.budget_bytes, 4 << 20);
    assert_int_equal(st.evictions, 0);
    hot_stats(other, &st);
    assert_int_equal(st.chunks, 0);
    assert_int_equal(st.used_bytes, 0);
    hot_destroy(other);
    hot_destroy(hot);      /* frees the chunks still in it */
}

static void test_shape_mismatch(void **state)
{
    const struct kvt_chunk_shape bad[] = {
        { 0, 2, 8, KVT_CHUNK_INT8 }, { KVT_CHUNK_MAX_TOKENS + 1, 2, 8, KVT_CHUNK_INT8 },
        { 16, 0, 8, KVT_CHUNK_INT8 }, { 16, 1025, 8, KVT_CHUNK_INT8 },
        { 16, 2, 0, KVT_CHUNK_INT8 }, { 16, 2, 1025, KVT_CHUNK_INT8 },
        { 16, 2, 8, 3 }, { 16, 2, 8, 0xfe },
    };
    const struct kvt_chunk_shape other_elem = { 16, 2, 8, 1 };
    struct kvt_chunk_key k = make_key(1, 1, 1, 0, 0), k2 = make_key(1, 1, 1, 0, 1);
    struct kvt_hot *hot;
    struct kvt_chunk *c;

    (void)state;
    assert_int_equal(hot_create(1 << 20, &hot), 0);
    touch_new(hot, &k, &small_shape);
    assert_int_equal(hot_get_or_create(hot, &k, &wide_shape, &c), -EINVAL);
    assert_int_equal(hot_get_or_create(hot, &k, &other_elem, &c), -EINVAL);
    for (size_t i = 0; i < ARRAY_LEN(bad); i++)
        assert_int_equal(hot_get_or_create(hot, &k2, &bad[i], &c), -EINVAL);
    assert_false(is_present(hot, &k2));
    /* The failed calls left no pin behind: dropping frees at once. */
    assert_int_equal(hot_drop_object(hot, 1, 1, 1), 1);
    assert_int_equal(used_bytes(hot), 0);
    hot_destroy(hot);
}

/* ---- budget and eviction ----------------------------------------------------- */

static void test_budget_never_exceeded(void **state)
{
    const uint64_t budget = 10 * charge_of(&small_shape) + 100;
    struct kvt_hot *hot;
    struct kvt_hot_stats st;
    uint64_t inserted = 0;
    uint32_t i;

    (void)state;
    assert_int_equal(hot_create(budget, &hot), 0);
    for (i = 0; inserted < 5 * budget; i++) {
        const struct kvt_chunk_shape *s = i % 3 ? &small_shape : &wide_shape;
        struct kvt_chunk_key k = make_key(1, i, 0, i % 4, 0);
        struct kvt_chunk *c;

        assert_int_equal(hot_get_or_create(hot, &k, s, &c), 0);
        hot_stats(hot, &st);
        assert_true(st.used_bytes <= budget);
        hot_put(hot, c);
        inserted += charge_of(s);
        /* Re-get an older chunk now and then: hits never add bytes. */
        if (i >= 3) {
            struct kvt_chunk_key old = make_key(1, i - 3, 0, (i - 3) % 4, 0);

            if (hot_get(hot, &old, &c) == 0)
                hot_put(hot, c);
        }
        hot_stats(hot, &st);
        assert_true(st.used_bytes <= budget);
    }
    hot_stats(hot, &st);
    assert_true(st.evictions > 0);
    assert_true(st.chunks >= 5 && st.chunks <= 10);
    assert_int_equal(st.evictions + st.chunks, i);
    hot_destroy(hot);
}

static void test_lru_order(void **state)
{
    struct kvt_chunk_key k[7];
    struct hook_log log = { 0 };
    struct kvt_hot *hot;
    struct kvt_hot_stats st;
    struct kvt_chunk *c;

    (void)state;
    for (uint32_t i = 0; i < ARRAY_LEN(k); i++)
        k[i] = make_key(7, 100 + i, 200 + i, i, i);
    assert_int_equal(hot_create(4 * charge_of(&small_shape), &hot), 0);
    hot_set_evict_hook(hot, record_hook, &log);
    for (int i = 0; i < 4; i++)
        touch_new(hot, &k[i], &small_shape);
    assert_int_equal(log.n, 0);

    /* LRU, oldest first: 0 1 2 3. Getting 0 makes it 1 2 3 0. */
    assert_int_equal(hot_get(hot, &k[0], &c), 0);
    hot_put(hot, c);
    touch_new(hot, &k[4], &small_shape);          /* evicts 1 */
    assert_int_equal(log.n, 1);
    assert_key_equal(&log.keys[0], &k[1]);

    /* 2 3 0 4; get_or_create of an existing chunk also counts as use. */
    touch_new(hot, &k[2], &small_shape);          /* 3 0 4 2 */
    touch_new(hot, &k[5], &small_shape);          /* evicts 3 */
    touch_new(hot, &k[6], &small_shape);          /* evicts 0 */
    assert_int_equal(log.n, 3);
    assert_key_equal(&log.keys[1], &k[3]);
    assert_key_equal(&log.keys[2], &k[0]);
    assert_int_equal(log.bad, 0);

    assert_false(is_present(hot, &k[0]));
    assert_false(is_present(hot, &k[1]));
    assert_false(is_present(hot, &k[3]));
    assert_true(is_present(hot, &k[2]));
    assert_true(is_present(hot, &k[4]));
    assert_true(is_present(hot, &k[5]));
    assert_true(is_present(hot, &k[6]));
    hot_stats(hot, &st);
    assert_int_equal(st.evictions, 3);
    assert_int_equal(st.chunks, 4);
    assert_int_equal(st.used_bytes, 4 * charge_of(&small_shape));
    hot_destroy(hot);
}

static void test_pinned_survives(void **state)
{
    struct kvt_chunk_key pinned_key = make_key(3, 33, 333, 0, 0);
    size_t bytes = chunk_data_bytes(&small_shape);
    uint64_t charge = charge_of(&small_shape);
    struct hook_log log = { 0 };
    struct kvt_hot *hot;
    struct kvt_hot_stats st;
    struct kvt_chunk *pinned, *c;

    (void)state;
    assert_int_equal(hot_create(4 * charge, &hot), 0);
    hot_set_evict_hook(hot, record_hook, &log);
    assert_int_equal(hot_get_or_create(hot, &pinned_key, &small_shape, &pinned), 0);
    memset(pinned->data, 0xa5, bytes);
    chunk_bit_set(pinned->present, 0);

    /* It is the oldest chunk, yet 20 inserts never evict it. */
    for (uint32_t i = 0; i < 20; i++) {
        struct kvt_chunk_key k = make_key(3, i, i, 1, 0);

        touch_new(hot, &k, &small_shape);
        assert_true(used_bytes(hot) <= 4 * charge);
    }
    for (int i = 0; i < log.n; i++)
        assert_memory_not_equal(&log.keys[i], &pinned_key, sizeof(pinned_key));
    assert_int_equal(hot_get(hot, &pinned_key, &c), 0);
    assert_ptr_equal(c, pinned);
    hot_put(hot, c);

    /* Dropped while pinned: unlinked at once, memory valid until the put. */
    assert_int_equal(hot_drop_object(hot, 3, 33, 333), 1);
    assert_int_equal(hot_get(hot, &pinned_key, &c), -ENOENT);
    hot_stats(hot, &st);
    assert_int_equal(st.chunks, 3);
    assert_int_equal(st.used_bytes, 4 * charge);   /* still charged */
    /* A new chunk of the same key is a different chunk. */
    assert_int_equal(hot_get_or_create(hot, &pinned_key, &small_shape, &c), 0);
    assert_ptr_not_equal(c, pinned);
    assert_false(chunk_bit_has(c->present, 0));
    hot_put(hot, c);
    /* Under ASan a freed block would fail here. */
    for (size_t b = 0; b < bytes; b++)
        if (((uint8_t *)pinned->data)[b] != 0xa5)
            fail_msg("byte %zu of a pinned, dropped chunk changed", b);
    assert_true(chunk_bit_has(pinned->present, 0));
    hot_put(hot, pinned);
    hot_stats(hot, &st);
    assert_int_equal(st.used_bytes, st.chunks * charge);
    assert_true(st.used_bytes <= 3 * charge);
    assert_int_equal(log.bad, 0);
    hot_destroy(hot);
}

/* The evict hook blocks until the main thread has looked its chunk up. */
struct hook_race {
    struct kvt_hot *hot;
    sem_t in_hook, go;
    struct hook_log log;
    struct kvt_chunk_key new_key;
    int rc;
};

static void blocking_hook(void *arg, struct kvt_chunk *c)
{
    struct hook_race *r = arg;

    record_hook(&r->log, c);
    if (r->log.n == 1) {
        sem_post(&r->in_hook);
        sem_wait(&r->go);
    }
}

static void *create_one(void *arg)
{
    struct hook_race *r = arg;
    struct kvt_chunk *c;

    r->rc = hot_get_or_create(r->hot, &r->new_key, &small_shape, &c);
    if (r->rc == 0)
        hot_put(r->hot, c);
    return NULL;
}

static void test_lookup_during_hook_keeps_chunk(void **state)
{
    struct kvt_chunk_key x = make_key(5, 1, 1, 0, 0), y = make_key(5, 2, 2, 0, 0);
    struct hook_race r = { .new_key = make_key(5, 3, 3, 0, 0) };
    struct kvt_hot_stats st;
    struct kvt_chunk *c;
    pthread_t th;

    (void)state;
    assert_int_equal(hot_create(2 * charge_of(&small_shape), &r.hot), 0);
    sem_init(&r.in_hook, 0, 0);
    sem_init(&r.go, 0, 0);
    touch_new(r.hot, &x, &small_shape);
    touch_new(r.hot, &y, &small_shape);
    hot_set_evict_hook(r.hot, blocking_hook, &r);

    assert_int_equal(pthread_create(&th, NULL, create_one, &r), 0);
    sem_wait(&r.in_hook);
    /* x is in its hook: still found, and a deadlock here would mean the hook
     * ran with the tier mutex held. */
    assert_int_equal(hot_get(r.hot, &x, &c), 0);
    pthread_rwlock_wrlock(&c->lock);
    chunk_bit_set(c->present, 5);
    pthread_rwlock_unlock(&c->lock);
    hot_mark_dirty(r.hot, c);
    hot_put(r.hot, c);
    sem_post(&r.go);
    pthread_join(th, NULL);

    assert_int_equal(r.rc, 0);
    assert_int_equal(r.log.n, 2);                  /* x (abandoned), then y */
    assert_key_equal(&r.log.keys[0], &x);
    assert_key_equal(&r.log.keys[1], &y);
    assert_int_equal(r.log.bad, 0);
    assert_int_equal(hot_get(r.hot, &x, &c), 0);
    assert_true(chunk_bit_has(c->present, 5));                  /* the write survived */
    hot_put(r.hot, c);
    assert_false(is_present(r.hot, &y));
    assert_true(is_present(r.hot, &r.new_key));
    hot_stats(r.hot, &st);
    assert_int_equal(st.evictions, 1);
    assert_int_equal(st.chunks, 2);
    sem_destroy(&r.in_hook);
    sem_destroy(&r.go);
    hot_destroy(r.hot);
}

static void test_enospc_all_pinned(void **state)
{
    const struct kvt_chunk_shape huge = { 4096, 2, 8, KVT_CHUNK_INT8 };
    uint64_t charge = charge_of(&small_shape);
    struct hook_log log = { 0 };
    struct kvt_chunk *pins[4], *c;
    struct kvt_chunk_key k5 = make_key(9, 5, 5, 0, 0);
    struct kvt_hot *hot;
    struct kvt_hot_stats st;

    (void)state;
    assert_int_equal(hot_create(4 * charge, &hot), 0);
    hot_set_evict_hook(hot, record_hook, &log);
    for (uint32_t i = 0; i < 4; i++) {
        struct kvt_chunk_key k = make_key(9, i, i, 0, 0);

        assert_int_equal(hot_get_or_create(hot, &k, &small_shape, &pins[i]), 0);
    }
    assert_int_equal(hot_get_or_create(hot, &k5, &small_shape, &c), -ENOSPC);
    assert_int_equal(hot_get_or_create(hot, &k5, &huge, &c), -ENOSPC);

    /* With one unpinned chunk, a chunk too big for the room it would free
     * is refused without evicting it. */
    hot_put(hot, pins[3]);
    assert_true(charge_of(&wide_shape) > charge);
    assert_int_equal(hot_get_or_create(hot, &k5, &wide_shape, &c), -ENOSPC);
    hot_stats(hot, &st);
    assert_int_equal(st.evictions, 0);
    assert_int_equal(st.chunks, 4);
    assert_int_equal(log.n, 0);

    /* One of the right size fits by evicting it. */
    assert_int_equal(hot_get_or_create(hot, &k5, &small_shape, &c), 0);
    hot_put(hot, c);
    hot_stats(hot, &st);
    assert_int_equal(st.evictions, 1);
    assert_int_equal(log.n, 1);
    for (int i = 0; i < 3; i++)
        hot_put(hot, pins[i]);
    assert_true(used_bytes(hot) <= 4 * charge);
    hot_destroy(hot);
}

/* ---- domain quotas ---------------------------------------------------------- */

static struct kvt_chunk_key domain_key(uint32_t domain, uint64_t obj)
{
    struct kvt_chunk_key k = make_key(3, obj, obj, 0, 0);

    k.domain = domain;
    return k;
}

static void test_domain_quota_evicts_own(void **state)
{
    uint64_t charge = charge_of(&small_shape);
    struct hook_log log = { 0 };
    struct kvt_hot *hot;
    struct kvt_hot_stats st;

    (void)state;
    /* Room for 16 chunks in all; each domain may hold 4. */
    assert_int_equal(hot_create(16 * charge, &hot), 0);
    hot_set_evict_hook(hot, record_hook, &log);
    hot_set_domain_quota(hot, 4 * charge);
    /* Domain 7 holds 3 chunks, under its quota. */
    for (uint64_t i = 0; i < 3; i++) {
        struct kvt_chunk_key k = domain_key(7, 100 + i);
        touch_new(hot, &k, &small_shape);
    }
    /* Domain 8 writes 10: past 4 it recycles its own, oldest first. */
    for (uint64_t i = 0; i < 10; i++) {
        struct kvt_chunk_key k = domain_key(8, 200 + i);
        touch_new(hot, &k, &small_shape);
        assert_true(hot_domain_used(hot, 8) <= 4 * charge);
    }
    assert_int_equal(hot_domain_used(hot, 7), 3 * charge);
    assert_int_equal(hot_domain_used(hot, 8), 4 * charge);
    assert_int_equal(hot_domain_used(hot, 9), 0);
    for (uint64_t i = 0; i < 3; i++) {
        struct kvt_chunk_key k = domain_key(7, 100 + i);
        assert_true(is_present(hot, &k));
    }
    for (uint64_t i = 0; i < 10; i++) {
        struct kvt_chunk_key k = domain_key(8, 200 + i);
        assert_true(is_present(hot, &k) == (i >= 6));
    }
    /* Every eviction went through the hook, and only domain 8's, in LRU order. */
    assert_int_equal(log.bad, 0);
    assert_int_equal(log.n, 6);
    for (int i = 0; i < log.n; i++) {
        struct kvt_chunk_key want = domain_key(8, 200 + (uint64_t)i);
        assert_key_equal(&log.keys[i], &want);
    }
    hot_stats(hot, &st);
    assert_int_equal(st.evictions, 6);
    assert_int_equal(st.quota_evictions, 6);
    assert_int_equal(st.domain_quota_bytes, 4 * charge);
    assert_int_equal(st.used_bytes, 7 * charge);

    /* Recently used chunks of the domain stay: touch 206, then create one
     * more; 207 (now the domain's oldest) goes, not 206. */
    struct kvt_chunk_key k206 = domain_key(8, 206), k207 = domain_key(8, 207),
                         k210 = domain_key(8, 210);
    assert_true(is_present(hot, &k206));
    touch_new(hot, &k210, &small_shape);
    assert_true(is_present(hot, &k206));
    assert_false(is_present(hot, &k207));

    /* Quota 0: no limit, domain 8 may grow to the budget's room. */
    hot_set_domain_quota(hot, 0);
    for (uint64_t i = 0; i < 6; i++) {
        struct kvt_chunk_key k = domain_key(8, 300 + i);
        touch_new(hot, &k, &small_shape);
    }
    assert_int_equal(hot_domain_used(hot, 8), 10 * charge);
    assert_int_equal(hot_domain_used(hot, 7), 3 * charge);

    /* A lowered quota, enforced: domain 8 loses its least recently used
     * chunks through the hook, domain 7 (under it) nothing. */
    log.n = 0;
    hot_set_domain_quota(hot, 4 * charge);
    assert_int_equal(hot_domain_used(hot, 8), 10 * charge);     /* not yet */
    hot_enforce_domain_quota(hot);
    assert_int_equal(hot_domain_used(hot, 8), 4 * charge);
    assert_int_equal(hot_domain_used(hot, 7), 3 * charge);
    assert_int_equal(log.n, 6);
    assert_int_equal(log.bad, 0);
    for (uint64_t i = 0; i < 6; i++) {
        struct kvt_chunk_key k = domain_key(8, 300 + i);
        assert_true(is_present(hot, &k) == (i >= 2));
    }
    hot_destroy(hot);
}

static void test_domain_quota_edquot(void **state)
{
    uint64_t charge = charge_of(&small_shape);
    struct kvt_chunk *pins[2], *c;
    struct kvt_chunk_key k_other = domain_key(5, 50), k_next = domain_key(6, 62);
    struct kvt_hot *hot;
    struct kvt_hot_stats st;

    (void)state;
    assert_int_equal(hot_create(16 * charge, &hot), 0);
    hot_set_domain_quota(hot, 2 * charge);
    touch_new(hot, &k_other, &small_shape);        /* unpinned, other domain */
    for (uint64_t i = 0; i < 2; i++) {
        struct kvt_chunk_key k = domain_key(6, 60 + i);
        assert_int_equal(hot_get_or_create(hot, &k, &small_shape, &pins[i]), 0);
    }
    /* Domain 6's chunks are all pinned: no room of its own to make, and the
     * other domain's unpinned chunk is not taken instead. */
    assert_int_equal(hot_get_or_create(hot, &k_next, &small_shape, &c), -EDQUOT);
    assert_true(is_present(hot, &k_other));
    /* Bigger than the quota itself: refused whatever is pinned. */
    const struct kvt_chunk_shape big = { 4096, 2, 8, KVT_CHUNK_INT8 };
    assert_true(charge_of(&big) > 2 * charge);
    struct kvt_chunk_key k_big = domain_key(5, 51);
    assert_int_equal(hot_get_or_create(hot, &k_big, &big, &c), -EDQUOT);
    hot_stats(hot, &st);
    assert_int_equal(st.evictions, 0);
    assert_int_equal(hot_domain_used(hot, 6), 2 * charge);

    /* One put makes room: the put chunk is evicted for the new one. */
    hot_put(hot, pins[0]);
    assert_int_equal(hot_get_or_create(hot, &k_next, &small_shape, &c), 0);
    hot_put(hot, c);
    hot_put(hot, pins[1]);
    assert_int_equal(hot_domain_used(hot, 6), 2 * charge);
    assert_true(is_present(hot, &k_other));
    hot_stats(hot, &st);
    assert_int_equal(st.quota_evictions, 1);
    hot_destroy(hot);
}

static void test_set_budget_shrinks(void **state)
{
    uint64_t charge = charge_of(&small_shape);
    struct hook_log log = { 0 };
    struct kvt_chunk_key k[8];
    struct kvt_chunk *a, *b;
    struct kvt_hot *hot;
    struct kvt_hot_stats st;

    (void)state;
    assert_int_equal(hot_create(8 * charge, &hot), 0);
    hot_set_evict_hook(hot, record_hook, &log);
    for (uint32_t i = 0; i < 8; i++) {
        k[i] = make_key(4, i, 0, 0, 0);
        touch_new(hot, &k[i], &small_shape);
    }
    hot_set_budget(hot, 3 * charge);
    hot_stats(hot, &st);
    assert_int_equal(st.budget_bytes, 3 * charge);
    assert_int_equal(st.used_bytes, 3 * charge);
    assert_int_equal(st.evictions, 5);
    assert_int_equal(log.n, 5);
    for (int i = 0; i < 5; i++)
        assert_key_equal(&log.keys[i], &k[i]);

    /* Pinned chunks above the new budget stay; every unpinned one goes. */
    assert_int_equal(hot_get(hot, &k[6], &a), 0);
    assert_int_equal(hot_get(hot, &k[7], &b), 0);
    hot_set_budget(hot, charge);
    hot_stats(hot, &st);
    assert_int_equal(st.chunks, 2);
    assert_int_equal(st.used_bytes, 2 * charge);
    assert_false(is_present(hot, &k[5]));
    hot_put(hot, a);
    hot_put(hot, b);
    /* The next insert evicts back under the budget. */
    touch_new(hot, &k[0], &small_shape);
    hot_stats(hot, &st);
    assert_int_equal(st.used_bytes, charge);
    assert_true(is_present(hot, &k[0]));
    hot_destroy(hot);
}

/* ---- drops ------------------------------------------------------------------- */

static void test_drop_object(void **state)
{
    struct kvt_hot *hot;
    struct kvt_hot_stats st;
    struct kvt_chunk *held;
    const struct kvt_chunk_key others[] = {
        make_key(1, 10, 21, 0, 0),     /* same ns and hi, other lo */
        make_key(1, 11, 20, 0, 0),     /* other hi */
        make_key(2, 10, 20, 0, 0),     /* other namespace */
    };

    (void)state;
    assert_int_equal(hot_create(1 << 20, &hot), 0);
    for (uint32_t layer = 0; layer < 4; layer++)
        for (uint32_t idx = 0; idx < 3; idx++) {
            struct kvt_chunk_key k = make_key(1, 10, 20, layer, idx);

            touch_new(hot, &k, &small_shape);
        }
    for (size_t i = 0; i < ARRAY_LEN(others); i++)
        touch_new(hot, &others[i], &small_shape);
    {
        struct kvt_chunk_key k = make_key(1, 10, 20, 2, 1);

        assert_int_equal(hot_get(hot, &k, &held), 0);   /* dropped while pinned */
    }

    assert_int_equal(hot_drop_object(hot, 1, 10, 20), 12);
    assert_int_equal(hot_drop_object(hot, 1, 10, 20), 0);
    for (uint32_t layer = 0; layer < 4; layer++)
        for (uint32_t idx = 0; idx < 3; idx++) {
            struct kvt_chunk_key k = make_key(1, 10, 20, layer, idx);

            assert_false(is_present(hot, &k));
        }
    for (size_t i = 0; i < ARRAY_LEN(others); i++)
        assert_true(is_present(hot, &others[i]));
    hot_stats(hot, &st);
    assert_int_equal(st.chunks, 3);
    assert_int_equal(st.used_bytes, 4 * charge_of(&small_shape));
    hot_put(hot, held);
    assert_int_equal(used_bytes(hot), 3 * charge_of(&small_shape));
    hot_destroy(hot);
}

/* Progress of a drop: every report, to check they start at 0 of total,
 * never go back, and end at total of total. */
struct drop_reports {
    uint64_t n, first_done, last_done, total;
    bool backwards;
};

static void record_progress(void *arg, uint64_t done, uint64_t total)
{
    struct drop_reports *r = arg;

    if (r->n == 0)
        r->first_done = done;
    else if (done < r->last_done || total != r->total)
        r->backwards = true;
    r->last_done = done;
    r->total = total;
    r->n++;
}

static void test_drop_namespace(void **state)
{
    struct kvt_hot *hot;
    struct kvt_hot_stats st;

    (void)state;
    assert_int_equal(hot_create(1 << 20, &hot), 0);
    for (uint64_t ns = 1; ns <= 3; ns++)
        for (uint32_t i = 0; i < 5 * ns; i++) {
            struct kvt_chunk_key k = make_key(ns, i, i * 7, i % 3, i % 2);

            touch_new(hot, &k, &small_shape);
        }
    assert_int_equal(hot_drop_namespace(hot, 2, NULL, NULL), 10);
    assert_int_equal(hot_drop_namespace(hot, 2, NULL, NULL), 0);
    assert_int_equal(hot_drop_namespace(hot, 9, NULL, NULL), 0);
    {
        struct kvt_chunk_key k1 = make_key(1, 0, 0, 0, 0), k3 = make_key(3, 0, 0, 0, 0);
        struct kvt_chunk_key k2 = make_key(2, 0, 0, 0, 0);

        assert_true(is_present(hot, &k1));
        assert_true(is_present(hot, &k3));
        assert_false(is_present(hot, &k2));
    }
    hot_stats(hot, &st);
    assert_int_equal(st.chunks, 20);
    struct drop_reports rep = { 0 };
    assert_int_equal(hot_drop_namespace(hot, 0, record_progress, &rep), 20);
    assert_true(rep.n >= 2);
    assert_int_equal(rep.first_done, 0);
    assert_int_equal(rep.last_done, 20);
    assert_int_equal(rep.total, 20);
    assert_false(rep.backwards);
    hot_stats(hot, &st);
    assert_int_equal(st.chunks, 0);
    assert_int_equal(st.used_bytes, 0);
    hot_destroy(hot);
}

/* ---- block pool ---------------------------------------------------------------- */

/* A Llama-sized chunk: its 512 KiB block is mmapped, so it can be pooled. */
static const struct kvt_chunk_shape big_shape = { 256, 8, 128, KVT_CHUNK_INT8 };

static void assert_within_budget(struct kvt_hot *hot)
{
    struct kvt_hot_stats st;

    hot_stats(hot, &st);
    assert_true(st.used_bytes + st.pooled_bytes <= st.budget_bytes);
    assert_true(st.pooled_bytes <= st.budget_bytes / 16);
}

static void test_block_pool(void **state)
{
    const size_t block = chunk_data_bytes(&big_shape);
    struct kvt_hot *hot;
    struct kvt_hot_stats st;
    struct kvt_chunk *c;

    (void)state;
    assert_int_equal(hot_create(64u << 20, &hot), 0);
    for (uint32_t i = 0; i < 20; i++) {
        struct kvt_chunk_key k = make_key(1, 1, 1, 0, i);
        assert_int_equal(hot_get_or_create(hot, &k, &big_shape, &c), 0);
        memset(c->data, 0x5a, block);
        chunk_bit_set(c->present, 0);
        hot_put(hot, c);
        assert_within_budget(hot);
    }
    hot_stats(hot, &st);
    assert_int_equal(st.pooled_bytes, 0);
    assert_int_equal(st.block_reuses, 0);

    /* Dropped: as many blocks as fit 1/16 of the budget are kept. */
    assert_int_equal(hot_drop_namespace(hot, 1, NULL, NULL), 20);
    hot_stats(hot, &st);
    assert_int_equal(st.used_bytes, 0);
    assert_int_equal(st.pooled_bytes, ((64u << 20) / 16) / block * block);
    uint64_t pooled = st.pooled_bytes;

    /* Reused, and a reused block's chunk has no token present. */
    for (uint32_t i = 0; i < 3; i++) {
        struct kvt_chunk_key k = make_key(2, 2, 2, 0, i);
        assert_int_equal(hot_get_or_create(hot, &k, &big_shape, &c), 0);
        assert_false(chunk_bit_has(c->present, 0));
        assert_int_equal(chunk_bits_leading(c->present, c->shape.tokens), 0);
        hot_put(hot, c);
    }
    hot_stats(hot, &st);
    assert_int_equal(st.block_reuses, 3);
    assert_int_equal(st.pooled_bytes, pooled - 3 * block);

    /* Chunks filling the budget push the pool out before any chunk. */
    for (uint32_t i = 0; i < 200; i++) {
        struct kvt_chunk_key k = make_key(3, 3, 3, 0, i);
        touch_new(hot, &k, &big_shape);
        assert_within_budget(hot);
    }
    hot_stats(hot, &st);
    assert_int_equal(st.pooled_bytes, 0);

    /* Demotion to a target counts chunks; what it frees is pooled. */
    hot_evict_to(hot, st.used_bytes / 2);
    hot_stats(hot, &st);
    assert_true(st.used_bytes <= (64u << 20) / 2);
    assert_true(st.pooled_bytes > 0);
    assert_within_budget(hot);

    /* A smaller budget shrinks the pool with it. */
    hot_set_budget(hot, 16u << 20);
    assert_within_budget(hot);
    hot_destroy(hot);
}

/* ---- presence bitmap --------------------------------------------------------- */

static uint64_t rng_next(uint64_t *s)   /* splitmix64 */
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);

    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static void clear_bit(struct kvt_chunk *c, uint32_t tok)
{
    c->present[tok / 64] &= ~(UINT64_C(1) << (tok % 64));
}

static void clear_all(struct kvt_chunk *c)
{
    memset(c->present, 0, (c->shape.tokens + 63) / 64 * 8);
}

static bool ref_has_range(const struct kvt_chunk *c, uint32_t first, uint32_t n)
{
    if ((uint64_t)first + n > c->shape.tokens)
        return n == 0;
    for (uint32_t t = first; t < first + n; t++)
        if (!chunk_bit_has(c->present, t))
            return false;
    return true;
}

static uint32_t ref_leading(const struct kvt_chunk *c)
{
    uint32_t t = 0;

    while (t < c->shape.tokens && chunk_bit_has(c->present, t))
        t++;
    return t;
}

static void check_bitmap_edges(struct kvt_chunk *c)
{
    uint32_t T = c->shape.tokens;

    clear_all(c);
    assert_int_equal(chunk_bits_leading(c->present, c->shape.tokens), 0);
    assert_true(chunk_bits_range(c->present, c->shape.tokens, 0, 0));
    assert_true(chunk_bits_range(c->present, c->shape.tokens, T, 0));
    assert_false(chunk_bits_range(c->present, c->shape.tokens, 0, 1));
    assert_false(chunk_bits_range(c->present, c->shape.tokens, T - 1, 1));

    for (uint32_t t = 0; t < T; t++)
        chunk_bit_set(c->present, t);
    assert_int_equal(chunk_bits_leading(c->present, c->shape.tokens), T);
    assert_true(chunk_bits_range(c->present, c->shape.tokens, 0, T));
    assert_true(chunk_bits_range(c->present, c->shape.tokens, T - 1, 1));
    assert_false(chunk_bits_range(c->present, c->shape.tokens, 0, T + 1));   /* past the end */
    assert_false(chunk_bits_range(c->present, c->shape.tokens, T, 1));
    assert_false(chunk_bits_range(c->present, c->shape.tokens, 1, T));
    assert_false(chunk_bits_range(c->present, c->shape.tokens, UINT32_MAX, 2));   /* first + n wraps */
    assert_false(chunk_bits_range(c->present, c->shape.tokens, 1, UINT32_MAX));

    clear_bit(c, T - 1);
    assert_int_equal(chunk_bits_leading(c->present, c->shape.tokens), T - 1);
    assert_false(chunk_bits_range(c->present, c->shape.tokens, 0, T));
    assert_true(chunk_bits_range(c->present, c->shape.tokens, 0, T - 1));
    assert_false(chunk_bits_range(c->present, c->shape.tokens, T - 1, 1));
    chunk_bit_set(c->present, T - 1);

    clear_bit(c, 0);
    assert_int_equal(chunk_bits_leading(c->present, c->shape.tokens), 0);
    assert_int_equal(chunk_bits_range(c->present, c->shape.tokens, 1, T - 1), true);
    chunk_bit_set(c->present, 0);

    if (T > 64) {   /* a hole exactly on a word boundary */
        clear_bit(c, 64);
        assert_int_equal(chunk_bits_leading(c->present, c->shape.tokens), 64);
        assert_true(chunk_bits_range(c->present, c->shape.tokens, 0, 64));
        assert_false(chunk_bits_range(c->present, c->shape.tokens, 63, 2));
        assert_false(chunk_bits_range(c->present, c->shape.tokens, 64, 1));
        assert_true(chunk_bits_range(c->present, c->shape.tokens, 65, T - 65));
        chunk_bit_set(c->present, 64);
        clear_bit(c, 63);
        assert_int_equal(chunk_bits_leading(c->present, c->shape.tokens), 63);
        assert_true(chunk_bits_range(c->present, c->shape.tokens, 64, T - 64));
        assert_false(chunk_bits_range(c->present, c->shape.tokens, 0, 64));
    }
}

static void check_bitmap_random(struct kvt_chunk *c, uint64_t *seed)
{
    uint32_t T = c->shape.tokens;

    for (int pattern = 0; pattern < 200; pattern++) {
        /* Mostly-full bitmaps with a few holes, like real chunks, and some
         * sparse ones. */
        uint32_t holes = (uint32_t)(rng_next(seed) % 4);
        bool sparse = pattern % 10 == 0;

        clear_all(c);
        for (uint32_t t = 0; t < T; t++)
            if (!sparse || rng_next(seed) % 2)
                chunk_bit_set(c->present, t);
        for (uint32_t h = 0; h < holes; h++)
            clear_bit(c, (uint32_t)(rng_next(seed) % T));
        if (pattern % 7 == 0)   /* a full prefix ending at a random point */
            for (uint32_t t = (uint32_t)(rng_next(seed) % T); t < T; t++)
                clear_bit(c, t);

        assert_int_equal(chunk_bits_leading(c->present, c->shape.tokens), ref_leading(c));
        for (int q = 0; q < 100; q++) {
            uint32_t first = (uint32_t)(rng_next(seed) % (T + 1));
            uint32_t n = (uint32_t)(rng_next(seed) % (T + 2 - first));

            if (q % 4 == 0) {   /* start on a word edge or just before */
                first = first / 64 * 64;
                if (q % 8 == 0 && first > 0)
                    first--;
            }
            if (first > T)
                first = T;
            if (n > T + 1 - first)
                n = T + 1 - first;
            if (chunk_bits_range(c->present, c->shape.tokens, first, n) != ref_has_range(c, first, n))
                fail_msg("T=%u first=%u n=%u: has_range %d, reference %d", T,
                         first, n, chunk_bits_range(c->present, c->shape.tokens, first, n),
                         ref_has_range(c, first, n));
        }
    }
}

static void test_bitmap(void **state)
{
    const uint32_t sizes[] = { 1, 63, 64, 65, 4096 };
    uint64_t seed = 12345;
    struct kvt_hot *hot;

    (void)state;
    assert_int_equal(hot_create(1 << 20, &hot), 0);
    for (size_t i = 0; i < ARRAY_LEN(sizes); i++) {
        struct kvt_chunk_shape s = { sizes[i], 1, 1, KVT_CHUNK_INT8 };
        struct kvt_chunk_key k = make_key(1, i, 0, 0, 0);
        struct kvt_chunk *c;

        assert_int_equal(hot_get_or_create(hot, &k, &s, &c), 0);
        check_bitmap_edges(c);
        check_bitmap_random(c, &seed);
        hot_put(hot, c);
    }
    hot_destroy(hot);
}

/* ---- threads ------------------------------------------------------------------- */

#define STRESS_THREADS 4
#ifndef STRESS_ITERS          /* per thread; -DSTRESS_ITERS=... for valgrind */
#define STRESS_ITERS 250000
#endif
#define STRESS_HELD 2

struct stress {
    struct kvt_hot *hot;
    uint64_t budget;
    atomic_int hook_calls, hook_errors;
};

struct stress_worker {
    struct stress *st;
    pthread_t thread;
    uint64_t seed;
    int errors;         /* cmocka asserts are not thread-safe: count here */
    uint64_t created, hits, enospc;
};

/* 2 namespaces x 4 objects x 4 layers x 2 chunks = 64 keys; each key has
 * one shape so a mismatch is always a bug. */
static struct kvt_chunk_key stress_key(uint64_t r)
{
    return make_key(1 + r % 2, (r >> 1) % 4, 0, (uint32_t)(r >> 3) % 4,
                    (uint32_t)(r >> 5) % 2);
}

static const struct kvt_chunk_shape *stress_shape(const struct kvt_chunk_key *k)
{
    return k->layer % 2 ? &wide_shape : &small_shape;
}

static uint8_t stress_sig(const struct kvt_chunk_key *k, uint32_t tok)
{
    return (uint8_t)(k->ns_id * 131 + k->obj_hi * 31 + k->layer * 7 + k->chunk_idx * 3 + tok);
}

/* Every present token carries its key's signature in K, V and the scales.
 * Call with the chunk lock held. Returns the number of bad tokens. */
static int stress_check(const struct kvt_chunk *c)
{
    size_t row = chunk_row_bytes(&c->shape), srow = c->shape.heads;
    struct kvt_chunk_view v;
    int bad = 0;

    chunk_view(&c->shape, c->data, &v);
    for (uint32_t t = 0; t < c->shape.tokens; t++) {
        uint8_t sig = stress_sig(&c->key, t), inv = (uint8_t)~sig;

        if (!chunk_bit_has(c->present, t))
            continue;
        for (size_t b = 0; b < row; b++)
            bad += v.k[t * row + b] != sig || v.v[t * row + b] != inv;
        for (size_t h = 0; h < srow; h++)
            bad += v.k_scale[t * srow + h] != sig || v.v_scale[t * srow + h] != -sig;
    }
    return bad;
}

static void stress_write(struct kvt_chunk *c, uint32_t t)
{
    size_t row = chunk_row_bytes(&c->shape), srow = c->shape.heads;
    uint8_t sig = stress_sig(&c->key, t);
    struct kvt_chunk_view v;

    chunk_view(&c->shape, c->data, &v);
    memset(v.k + t * row, sig, row);
    memset(v.v + t * row, (uint8_t)~sig, row);
    for (size_t h = 0; h < srow; h++) {
        v.k_scale[t * srow + h] = sig;
        v.v_scale[t * srow + h] = -sig;
    }
    chunk_bit_set(c->present, t);
}

static void stress_hook(void *arg, struct kvt_chunk *c)
{
    struct stress *st = arg;

    atomic_fetch_add(&st->hook_calls, 1);
    pthread_rwlock_rdlock(&c->lock);
    if (stress_check(c))
        atomic_fetch_add(&st->hook_errors, 1);
    pthread_rwlock_unlock(&c->lock);
}

static void *stress_run(void *arg)
{
    struct stress_worker *w = arg;
    struct kvt_hot *hot = w->st->hot;
    struct kvt_chunk *held[STRESS_HELD] = { 0 };
    int n_held = 0;

    for (int i = 0; i < STRESS_ITERS; i++) {
        uint64_t r = rng_next(&w->seed);
        struct kvt_chunk_key k = stress_key(r >> 8);
        const struct kvt_chunk_shape *s = stress_shape(&k);
        uint32_t op = (uint32_t)(r % 100);
        struct kvt_chunk *c = NULL;
        struct kvt_hot_stats hs;
        int rc;

        if (op < 55) {
            rc = hot_get_or_create(hot, &k, s, &c);
            if (rc == 0) {
                w->created++;
                pthread_rwlock_wrlock(&c->lock);
                stress_write(c, (uint32_t)(r >> 32) % s->tokens);
                w->errors += stress_check(c);
                pthread_rwlock_unlock(&c->lock);
                hot_mark_dirty(hot, c);
            } else if (rc == -ENOSPC) {
                w->enospc++;
            } else {
                w->errors++;
            }
        } else if (op < 85) {
            rc = hot_get(hot, &k, &c);
            if (rc == 0) {
                w->hits++;
                pthread_rwlock_rdlock(&c->lock);
                w->errors += stress_check(c);
                pthread_rwlock_unlock(&c->lock);
            } else if (rc != -ENOENT) {
                w->errors++;
            }
        } else if (op < 89) {
            hot_drop_object(hot, k.ns_id, k.obj_hi, k.obj_lo);
        } else if (op < 90) {
            hot_drop_namespace(hot, (r >> 40) % 3, NULL, NULL);
        } else if (n_held > 0) {
            hot_put(hot, held[--n_held]);
        }
        if (c) {
            if (memcmp(&c->key, &k, sizeof(k)) || memcmp(&c->shape, s, sizeof(*s)))
                w->errors++;
            /* Keep some pins across operations so eviction and drops meet
             * pinned chunks. */
            if (n_held < STRESS_HELD && r % 3 == 0)
                held[n_held++] = c;
            else
                hot_put(hot, c);
        }
        hot_stats(hot, &hs);
        if (hs.used_bytes > w->st->budget)
            w->errors++;
    }
    while (n_held > 0)
        hot_put(hot, held[--n_held]);
    return NULL;
}

static void test_threads_stress(void **state)
{
    struct stress st = { .budget = 18 * charge_of(&small_shape) };
    struct stress_worker workers[STRESS_THREADS] = { 0 };
    struct kvt_hot_stats hs;
    uint64_t linked_bytes = 0, linked = 0, created = 0, hits = 0;

    (void)state;
    assert_int_equal(hot_create(st.budget, &st.hot), 0);
    hot_set_evict_hook(st.hot, stress_hook, &st);
    for (int i = 0; i < STRESS_THREADS; i++) {
        workers[i].st = &st;
        workers[i].seed = 1000 + (uint64_t)i;
        assert_int_equal(pthread_create(&workers[i].thread, NULL, stress_run, &workers[i]), 0);
    }
    for (int i = 0; i < STRESS_THREADS; i++) {
        pthread_join(workers[i].thread, NULL);
        assert_int_equal(workers[i].errors, 0);
        created += workers[i].created;
        hits += workers[i].hits;
    }
    assert_int_equal(atomic_load(&st.hook_errors), 0);
    assert_true(atomic_load(&st.hook_calls) > 0);
    assert_true(created > 0 && hits > 0);

    /* With every pin released, used_bytes is exactly the linked chunks. */
    for (uint64_t r = 0; r < 64; r++) {
        struct kvt_chunk_key k = stress_key(r);
        struct kvt_chunk *c;

        if (hot_get(st.hot, &k, &c) == 0) {
            pthread_rwlock_rdlock(&c->lock);
            assert_int_equal(stress_check(c), 0);
            pthread_rwlock_unlock(&c->lock);
            linked_bytes += c->charged_bytes;
            linked++;
            hot_put(st.hot, c);
        }
    }
    hot_stats(st.hot, &hs);
    assert_true(hs.evictions > 0);
    assert_int_equal(hs.chunks, linked);
    assert_int_equal(hs.used_bytes, linked_bytes);
    assert_true(hs.used_bytes <= st.budget);
    assert_int_equal(hot_drop_namespace(st.hot, 0, NULL, NULL), linked);
    hot_stats(st.hot, &hs);
    assert_int_equal(hs.used_bytes, 0);
    assert_int_equal(hs.chunks, 0);
    hot_destroy(st.hot);
}

/* ---- block pool under concurrency --------------------------------------------------- */

/* Two poolable shapes (512 and 256 KiB blocks) and one small (malloc) one,
 * so blocks of several sizes meet in the pool and trims happen. */
static const struct kvt_chunk_shape pool_shapes[3] = {
    { 256, 8, 128, KVT_CHUNK_INT8 },
    { 128, 8, 128, KVT_CHUNK_INT8 },
    { 16, 1, 64, KVT_CHUNK_INT8 },
};

#define POOL_STRESS_ITERS 3000

struct pool_stress {
    struct kvt_hot *hot;
    atomic_int workers_left;
    atomic_int bad;                  /* a block whose bytes changed while held */
};

struct pool_worker {
    struct pool_stress *ps;
    unsigned seed;
};

/* Create or find a chunk, fill its whole block with one byte, check the
 * block still holds it, put it. A block handed to two chunks at once, or
 * unmapped while in use, fails the check or faults (ASan). */
static void *pool_worker_main(void *arg)
{
    struct pool_worker *w = arg;
    struct kvt_hot *hot = w->ps->hot;

    for (int i = 0; i < POOL_STRESS_ITERS; i++) {
        int si = (int)(rand_r(&w->seed) % 3);
        struct kvt_chunk_key k = { .ns_id = 1 + rand_r(&w->seed) % 3,
                                   .obj_lo = rand_r(&w->seed) % 32,
                                   .domain = rand_r(&w->seed) % 3, .chunk_idx = (uint32_t)si };
        struct kvt_chunk *c;
        if (hot_get_or_create(hot, &k, &pool_shapes[si], &c) != 0)
            continue;                /* -ENOSPC/-EDQUOT while others hold pins */
        size_t n = chunk_data_bytes(&c->shape);
        unsigned char mark = (unsigned char)(1 + rand_r(&w->seed) % 250);
        pthread_rwlock_wrlock(&c->lock);
        memset(c->data, mark, n);
        chunk_bit_set(c->present, 0);
        for (size_t off = 0; off < n; off += 4093)
            if (((unsigned char *)c->data)[off] != mark)
                atomic_store(&w->ps->bad, 1);
        pthread_rwlock_unlock(&c->lock);
        hot_put(hot, c);
    }
    atomic_fetch_sub(&w->ps->workers_left, 1);
    return NULL;
}

static void test_pool_stress(void **state)
{
    const uint64_t unit = chunk_data_bytes(&pool_shapes[0]);
    struct pool_stress ps = { .workers_left = 4 };
    struct pool_worker w[4];
    pthread_t t[4];
    struct kvt_hot_stats st;
    unsigned seed = 99;

    (void)state;
    assert_int_equal(hot_create(unit * 40, &ps.hot), 0);
    for (int i = 0; i < 4; i++) {
        w[i] = (struct pool_worker){ &ps, 100u + (unsigned)i };
        assert_int_equal(pthread_create(&t[i], NULL, pool_worker_main, &w[i]), 0);
    }
    /* Meanwhile: drops, demotion to a target, budget and quota changes. */
    while (atomic_load(&ps.workers_left) > 0) {
        switch (rand_r(&seed) % 5) {
        case 0: hot_evict_to(ps.hot, unit * (rand_r(&seed) % 20)); break;
        case 1: hot_drop_namespace(ps.hot, rand_r(&seed) % 4, NULL, NULL); break;
        case 2: hot_set_budget(ps.hot, unit * (20 + rand_r(&seed) % 40)); break;
        case 3:
            hot_set_domain_quota(ps.hot, rand_r(&seed) % 2 ? unit * (5 + rand_r(&seed) % 10) : 0);
            hot_enforce_domain_quota(ps.hot);
            break;
        case 4: hot_drop_object(ps.hot, 1 + rand_r(&seed) % 3, 0, rand_r(&seed) % 32); break;
        }
        hot_stats(ps.hot, &st);
        assert_true(st.pooled_bytes <= st.budget_bytes / 16);
        usleep(200);
    }
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    assert_int_equal(atomic_load(&ps.bad), 0);
    hot_set_budget(ps.hot, unit * 40);
    hot_stats(ps.hot, &st);
    assert_true(st.used_bytes + st.pooled_bytes <= st.budget_bytes);
    assert_true(st.block_reuses > 0);
    /* Everything dropped: only the pool holds bytes; budget 0: nothing. */
    hot_drop_namespace(ps.hot, 0, NULL, NULL);
    hot_stats(ps.hot, &st);
    assert_int_equal(st.used_bytes, 0);
    for (uint32_t dom = 0; dom < 3; dom++)
        assert_int_equal(hot_domain_used(ps.hot, dom), 0);
    hot_set_budget(ps.hot, 0);
    hot_stats(ps.hot, &st);
    assert_int_equal(st.pooled_bytes, 0);
    hot_destroy(ps.hot);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_chunk_layout),
        cmocka_unit_test(test_create_get_put),
        cmocka_unit_test(test_shape_mismatch),
        cmocka_unit_test(test_budget_never_exceeded),
        cmocka_unit_test(test_lru_order),
        cmocka_unit_test(test_pinned_survives),
        cmocka_unit_test(test_lookup_during_hook_keeps_chunk),
        cmocka_unit_test(test_enospc_all_pinned),
        cmocka_unit_test(test_domain_quota_evicts_own),
        cmocka_unit_test(test_domain_quota_edquot),
        cmocka_unit_test(test_set_budget_shrinks),
        cmocka_unit_test(test_drop_object),
        cmocka_unit_test(test_drop_namespace),
        cmocka_unit_test(test_block_pool),
        cmocka_unit_test(test_bitmap),
        cmocka_unit_test(test_threads_stress),
        cmocka_unit_test(test_pool_stress),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
