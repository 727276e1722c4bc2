/* hot.c - RAM tier: chunk memory, hash index, byte budget, LRU eviction,
 * pinning (walks over every chunk: hot_walk.c;
 * eviction, budget and quotas: hot_evict.c). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <xxhash.h>

#include "hot_int.h"

#define HOT_INITIAL_BUCKETS 64
/* Freed data blocks are pooled for reuse (cache/blocks.c) up to this share
 * of the budget, at most HOT_POOL_MAX_BYTES: enough for what a demotion
 * batch frees and for a prefill that was just dropped. */
#define HOT_POOL_SHARE 16
#define HOT_POOL_MAX_BYTES (UINT64_C(1) << 30)


/* ---- chunk memory ---------------------------------------------------------- */

static uint64_t chunk_charge(const struct kvt_chunk_shape *s)
{
    return sizeof(struct kvt_chunk) + chunk_bitmap_bytes(s->tokens) + chunk_data_bytes(s);
}

uint64_t hot_pool_cap(uint64_t budget_bytes)
{
    uint64_t cap = budget_bytes / HOT_POOL_SHARE;
    return cap < HOT_POOL_MAX_BYTES ? cap : HOT_POOL_MAX_BYTES;
}

/* A new chunk with every token absent, on block (taken from the pool) or on
 * a new one when block is NULL (none yet with lazy: its owner makes it,
 * hot_stage_data); block is the chunk's or released either way. The data
 * is left as it comes: the presence bitmap says what is valid, and zeroing
 * gigabytes would cost time for nothing. */
static int chunk_alloc(const struct kvt_chunk_key *key,
                       const struct kvt_chunk_shape *shape, uint64_t charged,
                       void *block, bool lazy, struct kvt_chunk **out)
{
    size_t data_bytes = chunk_data_bytes(shape);
    struct kvt_chunk *c;
    int rc = -ENOMEM;

    /* The bitmap rides behind the struct: one allocation, and its size is a
     * multiple of 8 so present[] is aligned. */
    c = calloc(1, sizeof(*c) + chunk_bitmap_bytes(shape->tokens));
    if (!c)
        goto err;
    c->present = (uint64_t *)(c + 1);
    if (block)                       /* another chunk's: maybe another domain's */
        c->data = block_claim(block, data_bytes, key->domain);
    else
        c->data = lazy ? NULL : block_new(data_bytes, key->domain);
    block = NULL;
    if (!c->data && !lazy)
        goto err;
    rc = -pthread_rwlock_init(&c->lock, NULL);
    if (rc < 0)
        goto err;
    c->key = *key;
    c->shape = *shape;
    c->charged_bytes = charged;
    *out = c;
    return 0;
err:
    block_release(block, data_bytes);
    if (c)
        block_release(c->data, data_bytes);
    free(c);
    return rc;
}

void hot_chunk_free(struct kvt_chunk *c)
{
    pthread_rwlock_destroy(&c->lock);
    block_release(c->data, chunk_data_bytes(&c->shape));
    free(c);
}

/* Move c's data block into the pool if the pool has room under its cap and
 * the budget; the pool's bytes count in used_bytes. */
/* Put a free block into the pool if it has room under its cap and the
 * budget (the pool's bytes count in used_bytes); mu held. Returns whether
 * it was taken. */
static bool pool_put_locked(struct kvt_hot *hot, void *block, size_t bytes)
{
    if (!block || !block_poolable(bytes) ||
        hot->pool.pooled_bytes + bytes > hot->pool_cap_bytes ||
        hot->used_bytes + bytes > hot->budget_bytes || !pool_add(&hot->pool, block, bytes))
        return false;
    hot->used_bytes += bytes;
    return true;
}

void hot_pool_keep(struct kvt_hot *hot, struct kvt_chunk *c)
{
    size_t bytes = chunk_data_bytes(&c->shape);

    if (!c->data || !block_poolable(bytes))    /* NULL: handed over already */
        return;
    pthread_mutex_lock(&hot->mu);
    if (pool_put_locked(hot, c->data, bytes))
        c->data = NULL;
    pthread_mutex_unlock(&hot->mu);
}

/* Chunks to free are collected under the mutex, chained through hash_next
 * (unused once unlinked), and freed after it is released: munmap and the
 * TLB shootdown it implies should not stall every other worker. Their
 * blocks go to the pool while it has room. */
void hot_free_chunks(struct kvt_hot *hot, struct kvt_chunk *list)
{
    while (list) {
        struct kvt_chunk *next = list->hash_next;

        hot_pool_keep(hot, list);
        hot_chunk_free(list);
        list = next;
    }
}

/* Take pooled blocks out of the pool and the budget until at most
 * keep_bytes stay; mu held. Needed when the budget shrinks, or when a new
 * chunk needs the room and the pool has no block of its size (another
 * model's, or stores running ahead of demotion at the budget). The blocks
 * wait on hot->unmap, a list of nodes (no link is written into a block,
 * which clients may map: blocks.c), for whoever drops the mutex next to
 * unmap them (hot_unmap_take): munmap and its TLB shootdown must not hold
 * up every worker. Without memory for a node, a block is unmapped here. */
struct unmap_node {
    struct unmap_node *next;
    void *p;
    size_t bytes;
};

void hot_pool_trim(struct kvt_hot *hot, uint64_t keep_bytes)
{
    while (hot->pool.pooled_bytes > keep_bytes) {
        size_t bytes;
        void *p = pool_take_any(&hot->pool, &bytes);
        hot->used_bytes -= bytes;
        struct unmap_node *node = malloc(sizeof(*node));
        if (!node) {
            block_release(p, bytes);
            continue;
        }
        *node = (struct unmap_node){ .next = hot->unmap, .p = p, .bytes = bytes };
        hot->unmap = node;
    }
}

/* The blocks hot_pool_trim set aside, to pass to hot_unmap_all after unlocking. */
void *hot_unmap_take(struct kvt_hot *hot)
{
    void *chain = hot->unmap;

    hot->unmap = NULL;
    return chain;
}

void hot_unmap_all(void *chain)
{
    while (chain) {
        struct unmap_node *node = chain;
        chain = node->next;
        block_release(node->p, node->bytes);
        free(node);
    }
}

/* ---- index and lists (tier mutex held) ------------------------------------- */

static size_t bucket_of(const struct kvt_hot *hot, const struct kvt_chunk_key *key)
{
    return XXH3_64bits(key, sizeof(*key)) & (hot->n_buckets - 1);
}

static size_t link_slot(const struct kvt_chunk_key *key)
{
    return (XXH3_64bits(key, sizeof(*key)) >> 32) % HOT_LINK_SLOTS;
}

static struct kvt_chunk *index_find(struct kvt_hot *hot, const struct kvt_chunk_key *key)
{
    struct kvt_chunk *c = hot->buckets[bucket_of(hot, key)];

    while (c && memcmp(&c->key, key, sizeof(*key)) != 0)
        c = c->hash_next;
    return c;
}

/* Double the buckets once there are more chunks than buckets, keeping chains
 * about one long. A failed allocation only makes chains longer. */
static void index_grow(struct kvt_hot *hot)
{
    struct kvt_chunk **old = hot->buckets;
    size_t old_n = hot->n_buckets;
    struct kvt_chunk **b = calloc(old_n * 2, sizeof(*b));

    if (!b)
        return;
    hot->buckets = b;
    hot->n_buckets = old_n * 2;
    for (size_t i = 0; i < old_n; i++) {
        struct kvt_chunk *c = old[i], *next;

        for (; c; c = next) {
            size_t h = bucket_of(hot, &c->key);

            next = c->hash_next;
            c->hash_next = b[h];
            b[h] = c;
        }
    }
    free(old);
}

static void index_remove(struct kvt_hot *hot, struct kvt_chunk *c)
{
    struct kvt_chunk **pp = &hot->buckets[bucket_of(hot, &c->key)];

    while (*pp != c)
        pp = &(*pp)->hash_next;
    *pp = c->hash_next;
    c->hash_next = NULL;
}

static void lru_remove(struct kvt_hot *hot, struct kvt_chunk *c)
{
    if (c->lru_prev)
        c->lru_prev->lru_next = c->lru_next;
    else
        hot->lru_head = c->lru_next;
    if (c->lru_next)
        c->lru_next->lru_prev = c->lru_prev;
    else
        hot->lru_tail = c->lru_prev;
    c->lru_prev = c->lru_next = NULL;
}

static void lru_push_head(struct kvt_hot *hot, struct kvt_chunk *c)
{
    c->lru_prev = NULL;
    c->lru_next = hot->lru_head;
    if (hot->lru_head)
        hot->lru_head->lru_prev = c;
    else
        hot->lru_tail = c;
    hot->lru_head = c;
}

static void orphan_push(struct kvt_hot *hot, struct kvt_chunk *c)
{
    c->lru_prev = NULL;
    c->lru_next = hot->orphans;
    if (hot->orphans)
        hot->orphans->lru_prev = c;
    hot->orphans = c;
}

static void orphan_remove(struct kvt_hot *hot, struct kvt_chunk *c)
{
    if (c->lru_prev)
        c->lru_prev->lru_next = c->lru_next;
    else
        hot->orphans = c->lru_next;
    if (c->lru_next)
        c->lru_next->lru_prev = c->lru_prev;
    c->lru_prev = c->lru_next = NULL;
}

/* Charges go through these two so used_bytes and domain_used agree. */
static void charge(struct kvt_hot *hot, uint32_t domain, uint64_t bytes)
{
    hot->used_bytes += bytes;
    domain_bytes_add(&hot->domain_used, domain, bytes);
}

static void uncharge(struct kvt_hot *hot, uint32_t domain, uint64_t bytes)
{
    hot->used_bytes -= bytes;
    domain_bytes_sub(&hot->domain_used, domain, bytes);
}

/* Every change of linked or pins goes through these four, which keep
 * evictable_bytes and used_bytes true to their definitions above. */
static void chunk_link(struct kvt_hot *hot, struct kvt_chunk *c)
{
    size_t h;

    if (hot->n_chunks >= hot->n_buckets)
        index_grow(hot);
    h = bucket_of(hot, &c->key);
    c->hash_next = hot->buckets[h];
    hot->buckets[h] = c;
    lru_push_head(hot, c);
    c->linked = true;
    hot->n_chunks++;
    hot->link_gen[link_slot(&c->key)]++;
    if (!c->pins)
        hot->evictable_bytes += c->charged_bytes;
}

/* Unlink at once; a pinned chunk waits on the orphan list for its last put. */
void hot_chunk_unlink(struct kvt_hot *hot, struct kvt_chunk *c,
                      struct kvt_chunk **to_free)
{
    index_remove(hot, c);
    lru_remove(hot, c);
    c->linked = false;
    hot->n_chunks--;
    if (c->pins) {
        orphan_push(hot, c);
        return;
    }
    hot->evictable_bytes -= c->charged_bytes;
    uncharge(hot, c->key.domain, c->charged_bytes);
    c->hash_next = *to_free;
    *to_free = c;
}

void hot_chunk_pin(struct kvt_hot *hot, struct kvt_chunk *c)
{
    if (c->linked && !c->pins)
        hot->evictable_bytes -= c->charged_bytes;
    c->pins++;
}

void hot_chunk_unpin(struct kvt_hot *hot, struct kvt_chunk *c,
                        struct kvt_chunk **to_free)
{
    if (--c->pins)
        return;
    if (c->linked) {
        hot->evictable_bytes += c->charged_bytes;
        return;
    }
    orphan_remove(hot, c);
    uncharge(hot, c->key.domain, c->charged_bytes);
    c->hash_next = *to_free;
    *to_free = c;
}

/* A lookup: pin, make most recently used, and tell a running evict hook
 * that the chunk is in use again. */
static void chunk_touch(struct kvt_hot *hot, struct kvt_chunk *c)
{
    hot_chunk_pin(hot, c);
    lru_remove(hot, c);
    lru_push_head(hot, c);
    c->touched = true;
}

/* ---- public ---------------------------------------------------------------- */

uint64_t hot_chunk_bytes(const struct kvt_chunk_shape *shape)
{
    return chunk_charge(shape);
}

int hot_create(uint64_t budget_bytes, struct kvt_hot **out)
{
    struct kvt_hot *hot = calloc(1, sizeof(*hot));
    int rc = -ENOMEM;

    if (!hot)
        goto err;
    hot->n_buckets = HOT_INITIAL_BUCKETS;
    hot->buckets = calloc(hot->n_buckets, sizeof(*hot->buckets));
    if (!hot->buckets)
        goto err;
    rc = -pthread_mutex_init(&hot->mu, NULL);
    if (rc < 0)
        goto err;
    rc = -pthread_cond_init(&hot->hook_done, NULL);
    if (rc < 0)
        goto err_mutex;
    hot->budget_bytes = budget_bytes;
    hot->pool_cap_bytes = hot_pool_cap(budget_bytes);
    *out = hot;
    return 0;
err_mutex:
    pthread_mutex_destroy(&hot->mu);
err:
    if (hot)
        free(hot->buckets);
    free(hot);
    return rc;
}

void hot_destroy(struct kvt_hot *hot)
{
    struct kvt_chunk *c, *next;

    if (!hot)
        return;
    for (c = hot->lru_head; c; c = next) {
        next = c->lru_next;
        hot_chunk_free(c);
    }
    for (c = hot->orphans; c; c = next) {
        next = c->lru_next;
        hot_chunk_free(c);
    }
    hot_pool_trim(hot, 0);
    hot_unmap_all(hot_unmap_take(hot));
    pthread_cond_destroy(&hot->hook_done);
    pthread_mutex_destroy(&hot->mu);
    domain_bytes_free(&hot->domain_used);
    free(hot->buckets);
    free(hot);
}

void hot_set_evict_hook(struct kvt_hot *hot, hot_evict_fn fn, void *arg)
{
    pthread_mutex_lock(&hot->mu);
    hot->evict_fn = fn;
    hot->evict_arg = arg;
    pthread_mutex_unlock(&hot->mu);
}

void hot_set_fill_hook(struct kvt_hot *hot, hot_fill_fn fn, void *arg)
{
    pthread_mutex_lock(&hot->mu);
    hot->fill_fn = fn;
    hot->fill_arg = arg;
    pthread_mutex_unlock(&hot->mu);
}

int hot_get(struct kvt_hot *hot, const struct kvt_chunk_key *key,
            struct kvt_chunk **out)
{
    struct kvt_chunk *c;
    int rc = -ENOENT;

    pthread_mutex_lock(&hot->mu);
    c = index_find(hot, key);
    if (c) {
        chunk_touch(hot, c);
        *out = c;
        rc = 0;
    }
    pthread_mutex_unlock(&hot->mu);
    return rc;
}

int hot_redirty(struct kvt_hot *hot, const struct kvt_chunk_key *key)
{
    struct kvt_chunk *c;
    int rc = -ENOENT;

    pthread_mutex_lock(&hot->mu);
    c = index_find(hot, key);
    if (c) {
        lru_remove(hot, c);
        lru_push_head(hot, c);
        c->touched = true;           /* abandons an eviction in progress */
        c->dirty = true;
        rc = 0;
    }
    pthread_mutex_unlock(&hot->mu);
    return rc;
}

/* Set on the event loop's thread (hot_forbid_new_blocks). */
static _Thread_local bool new_blocks_forbidden;

void hot_forbid_new_blocks(bool forbid)
{
    new_blocks_forbidden = forbid;
}

/* What get_or_create makes: a linked chunk, or a stage (with a block, or
 * with one only if the pool or an evicted chunk gives it one). */
enum make_as { AS_CHUNK, AS_STAGE, AS_STAGE_LAZY };

/* hot_get_or_create; with created non-NULL, a chunk it creates is
 * write-locked before it is linked (nobody can wait for it yet) and
 * *created tells which happened. As a stage, it never looks key up: it
 * makes a chunk as a creation would (same evictions, same charge) but
 * leaves it unlinked, pinned once, on the orphan list (hot_stage_alloc). */
static int get_or_create(struct kvt_hot *hot, const struct kvt_chunk_key *key,
                         const struct kvt_chunk_shape *shape,
                         struct kvt_chunk **out, bool *created, enum make_as as)
{
    const bool stage = as != AS_CHUNK;
    struct kvt_chunk *c, *fresh = NULL, *to_free = NULL;
    size_t data_bytes = chunk_data_bytes(shape);
    void *block = NULL, *unmap;
    uint64_t need;
    int rc;

    if (created)
        *created = false;
    if (!chunk_shape_valid(shape))
        return -EINVAL;
    need = chunk_charge(shape);

    pthread_mutex_lock(&hot->mu);
    c = stage ? NULL : index_find(hot, key);
    if (c)
        goto found;
    rc = domain_bytes_reserve(&hot->domain_used, key->domain);
    if (rc < 0)
        goto out;
    /* A pooled block of this size becomes the chunk's: its bytes move from
     * the pool to the chunk's charge below. */
    block = pool_take(&hot->pool, data_bytes);
    if (block)
        hot->used_bytes -= data_bytes;
    /* The domain's quota first (its own chunks only), then the global
     * budget; both drop the mutex around hooks, so repeat until both hold
     * at once. */
    do {
        rc = hot_evict_domain_until_fits(hot, key->domain, need, &to_free);
        if (rc == 0)
            rc = hot_evict_until_fits(hot, need, false, &to_free);
    } while (rc == 0 && !hot_quota_fits(hot, key->domain, need));
    if (rc < 0) {
        /* The mutex was dropped around hooks: someone may have created it. */
        c = stage ? NULL : index_find(hot, key);
        if (c)
            goto found;
        goto out;
    }
    /* At the budget, the chunks evicted for this one free as many bytes as
     * it needs, usually in a block of its size: hand that over directly. */
    for (struct kvt_chunk *v = to_free; v && !block && block_poolable(data_bytes); v = v->hash_next) {
        if (chunk_data_bytes(&v->shape) == data_bytes) {
            block = v->data;
            v->data = NULL;
            hot->pool.reused++;
        }
    }
    /* Reserve the bytes so no other thread spends them, then allocate
     * without the mutex: mmap must not stall every worker. The victims are
     * freed first, so RSS does not overshoot the budget. */
    charge(hot, key->domain, need);
    unmap = hot_unmap_take(hot);
    pthread_mutex_unlock(&hot->mu);
    hot_unmap_all(unmap);
    hot_free_chunks(hot, to_free);
    to_free = NULL;
    if (!block && block_poolable(data_bytes)) {
        /* The victims just freed are likely of this size. */
        pthread_mutex_lock(&hot->mu);
        block = pool_take(&hot->pool, data_bytes);
        if (block)
            hot->used_bytes -= data_bytes;
        pthread_mutex_unlock(&hot->mu);
    }
    if (!block && block_poolable(data_bytes) && as == AS_CHUNK && new_blocks_forbidden) {
        /* A new block's first touch takes milliseconds; not on this thread. */
        pthread_mutex_lock(&hot->mu);
        uncharge(hot, key->domain, need);
        rc = -EINPROGRESS;
        goto out;
    }
    rc = chunk_alloc(key, shape, need, block, as == AS_STAGE_LAZY, &fresh);
    block = NULL;
    if (rc == 0 && created)
        pthread_rwlock_wrlock(&fresh->lock);    /* unpublished: never waits */
    pthread_mutex_lock(&hot->mu);
    if (rc < 0) {
        uncharge(hot, key->domain, need);
        goto out;
    }
    if (stage) {
        /* An orphan with one pin: charged as a chunk, found by no lookup,
         * freed (and uncharged) by its last hot_put like any orphan. */
        fresh->pins = 1;
        orphan_push(hot, fresh);
        *out = fresh;
        fresh = NULL;
        rc = 0;
        goto out;
    }
    c = index_find(hot, key);
    if (c) {
        /* Another thread created it meanwhile: use theirs, free ours. */
        uncharge(hot, key->domain, need);
        if (created)
            pthread_rwlock_unlock(&fresh->lock);
        goto found;
    }
    c = fresh;
    fresh = NULL;
    chunk_link(hot, c);
    chunk_touch(hot, c);
    *out = c;
    if (created)
        *created = true;
    rc = 0;
    goto out;
found:
    /* Another outliers value is another format of the same values: the
     * chunk keeps its own (the caller works with c->shape). */
    if (!chunk_shape_compatible(&c->shape, shape)) {
        rc = -EINVAL;
        goto out;
    }
    chunk_touch(hot, c);
    *out = c;
    rc = 0;
out:
    /* A block taken from the pool but not used (found, or no room) goes
     * back to it rather than to the OS. */
    if (block && pool_put_locked(hot, block, data_bytes))
        block = NULL;
    unmap = hot_unmap_take(hot);
    pthread_mutex_unlock(&hot->mu);
    hot_unmap_all(unmap);
    if (fresh) {
        fresh->hash_next = to_free;  /* unused: it was never linked */
        to_free = fresh;
    }
    hot_free_chunks(hot, to_free);
    block_release(block, data_bytes);
    return rc;
}

int hot_get_or_create(struct kvt_hot *hot, const struct kvt_chunk_key *key,
                      const struct kvt_chunk_shape *shape,
                      struct kvt_chunk **out)
{
    return get_or_create(hot, key, shape, out, NULL, AS_CHUNK);
}

int hot_stage_chunk(struct kvt_hot *hot, const struct kvt_chunk_key *key,
                    const struct kvt_chunk_shape *shape, struct kvt_chunk **out)
{
    return get_or_create(hot, key, shape, out, NULL, AS_STAGE);
}

int hot_stage_alloc_empty(struct kvt_hot *hot, const struct kvt_chunk_key *key,
                          const struct kvt_chunk_shape *shape, struct kvt_chunk **out)
{
    return get_or_create(hot, key, shape, out, NULL, AS_STAGE_LAZY);
}

void *hot_stage_data(struct kvt_chunk *stage)
{
    /* Nobody else can reach the stage: no lock to set its block. Its
     * writer touches every page at once (block_new_unpopulated). */
    if (!stage->data)
        stage->data = block_new_unpopulated(chunk_data_bytes(&stage->shape),
                                            stage->key.domain);
    return stage->data;
}

int hot_link_staged(struct kvt_hot *hot, struct kvt_chunk *stage, struct kvt_chunk **found)
{
    struct kvt_chunk *c;
    int rc = 0;

    pthread_mutex_lock(&hot->mu);
    c = index_find(hot, &stage->key);
    if (c) {
        chunk_touch(hot, c);         /* also abandons an eviction in progress */
        *found = c;
        rc = -EEXIST;
    } else {
        /* Every bit was set before this, without any lock: nobody could
         * see the stage, and the mutex publishes it whole. */
        orphan_remove(hot, stage);
        stage->dirty = true;
        chunk_link(hot, stage);
        hot_chunk_unpin(hot, stage, NULL);   /* linked: never freed here */
    }
    pthread_mutex_unlock(&hot->mu);
    return rc;
}

int hot_absent_stamp(struct kvt_hot *hot, const struct kvt_chunk_key *key, uint64_t *stamp)
{
    struct kvt_chunk *c;

    pthread_mutex_lock(&hot->mu);
    c = index_find(hot, key);
    if (!c)
        *stamp = hot->link_gen[link_slot(key)];
    pthread_mutex_unlock(&hot->mu);
    return c ? -EEXIST : 0;
}

int hot_link_promoted(struct kvt_hot *hot, struct kvt_chunk *stage, const uint64_t *present,
                      uint64_t stamp)
{
    int rc = -EAGAIN;

    pthread_mutex_lock(&hot->mu);
    /* No link of the key since the stamp (nor of another key of its
     * slot): it has had no chunk in between, so nothing of RAM's can have
     * replaced the colder copy the caller checked after stamping. */
    if (hot->link_gen[link_slot(&stage->key)] == stamp && !index_find(hot, &stage->key)) {
        memcpy(stage->present, present, chunk_bitmap_bytes(stage->shape.tokens));
        orphan_remove(hot, stage);
        stage->dirty = false;        /* it is the colder copy */
        chunk_link(hot, stage);
        hot_chunk_unpin(hot, stage, NULL);   /* linked: never freed here */
        rc = 0;
    }
    pthread_mutex_unlock(&hot->mu);
    return rc;
}

int hot_get_or_create_wrlocked(struct kvt_hot *hot, const struct kvt_chunk_key *key,
                               const struct kvt_chunk_shape *shape,
                               struct kvt_chunk **out, bool *created)
{
    int rc = get_or_create(hot, key, shape, out, created, AS_CHUNK);

    /* Pinned, so it stays while we wait (without the tier mutex: lock order). */
    if (rc == 0 && !*created)
        pthread_rwlock_wrlock(&(*out)->lock);
    return rc;
}

void hot_discard(struct kvt_hot *hot, struct kvt_chunk *chunk)
{
    struct kvt_chunk *to_free = NULL;

    chunk->gone = true;
    pthread_mutex_lock(&hot->mu);
    if (chunk->linked)
        hot_chunk_unlink(hot, chunk, &to_free);   /* pinned: stays an orphan */
    pthread_mutex_unlock(&hot->mu);
}

void hot_put(struct kvt_hot *hot, struct kvt_chunk *chunk)
{
    struct kvt_chunk *to_free = NULL;

    pthread_mutex_lock(&hot->mu);
    hot_chunk_unpin(hot, chunk, &to_free);
    pthread_mutex_unlock(&hot->mu);
    hot_free_chunks(hot, to_free);
}

void hot_mark_dirty(struct kvt_hot *hot, struct kvt_chunk *chunk)
{
    pthread_mutex_lock(&hot->mu);
    chunk->dirty = true;
    pthread_mutex_unlock(&hot->mu);
}

void hot_mark_clean(struct kvt_hot *hot, struct kvt_chunk *chunk)
{
    pthread_mutex_lock(&hot->mu);
    chunk->dirty = false;
    pthread_mutex_unlock(&hot->mu);
}
