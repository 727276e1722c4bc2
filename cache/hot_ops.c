/* hot_ops.c - the hot tier's chunk operations: write a segment, read one,
 * load a chunk through the fill hook, write a chunk back, leading tokens.
 * The chunk lock, the presence bits and the dirty flag are handled here
 * and nowhere else; callers bring callbacks that move the values. */
#include <errno.h>
#include <stdlib.h>

#include "hot_int.h"

/* How often an operation looks again when the chunk it found was dropped
 * (or thrown away by a creator that could not fill it) before it got the
 * lock, or had to be created again with a colder copy's outliers. */
#define GONE_RETRIES 8

/* Unpin c and, if dirty, mark it dirty: one pass under the mutex. The
 * chunk's lock is not held (lock order allows it, but the last pin of a
 * dropped chunk frees it, lock included). */
static void put_dirty(struct kvt_hot *hot, struct kvt_chunk *c, bool dirty)
{
    struct kvt_chunk *to_free = NULL;

    pthread_mutex_lock(&hot->mu);
    if (dirty)
        c->dirty = true;
    hot_chunk_unpin(hot, c, &to_free);
    pthread_mutex_unlock(&hot->mu);
    hot_free_chunks(hot, to_free);
}

/* Find or create key's chunk, write-locked and not gone, and on creation
 * run the fill hook (creating again with the colder copy's outliers when
 * it asks). Returns 0, -EAGAIN when the chunk stays gone, the hook's
 * errors or hot_get_or_create's. */
static int get_filled(struct kvt_hot *hot, const struct kvt_chunk_key *key,
                      const struct kvt_chunk_shape *want, struct kvt_chunk **out,
                      bool *created)
{
    struct kvt_chunk_shape shape = *want;

    for (int attempt = 0; attempt <= GONE_RETRIES; attempt++) {
        struct kvt_chunk *c;
        hot_fill_fn fill = NULL;
        void *arg = NULL;
        int rc = hot_get_or_create_wrlocked(hot, key, &shape, &c, created);

        if (rc)
            return rc;
        /* Only a creation reads the hook: a found chunk costs no mutex
         * pass beyond the lookup and the final put. */
        if (*created) {
            pthread_mutex_lock(&hot->mu);
            fill = hot->fill_fn;
            arg = hot->fill_arg;
            pthread_mutex_unlock(&hot->mu);
        }
        /* Created: nobody else has seen its values yet, so the colder
         * copy's tokens are in before any store's rows and any write-back. */
        if (fill) {
            struct kvt_chunk_shape other = c->shape;

            rc = fill(arg, &c->key, &c->shape, c->data, c->present, &other);
            if (rc) {
                hot_discard(hot, c);
                pthread_rwlock_unlock(&c->lock);
                hot_put(hot, c);
                if (rc != -ESTALE)
                    return rc;
                if (!chunk_shape_compatible(&other, &shape) || !chunk_shape_valid(&other))
                    return -EIO;         /* a hook that breaks its contract */
                shape = other;
                continue;
            }
        }
        if (!c->gone) {
            *out = c;
            return 0;
        }
        pthread_rwlock_unlock(&c->lock);
        hot_put(hot, c);
    }
    return -EAGAIN;
}

int hot_write(struct kvt_hot *hot, const struct kvt_chunk_key *key,
              const struct kvt_chunk_shape *shape, uint32_t tok, uint32_t n,
              hot_rows_fn fill, void *arg)
{
    struct kvt_chunk *c;
    bool created, dirty = true;
    int rc = get_filled(hot, key, shape, &c, &created);

    if (rc)
        return rc;
    if (n > c->shape.tokens || tok > c->shape.tokens - n) {
        rc = -EINVAL;
        dirty = false;
        goto out;
    }
    /* The write lock makes each token's new K/V appear to readers all at
     * once: a racing read sees old or new rows, never a mix. A client
     * copying out of the shared block sees its gen change. */
    block_bump(c->data, chunk_data_bytes(&c->shape));
    rc = fill(arg, &c->shape, c->data);
    if (rc == 0) {
        for (uint32_t t = 0; t < n; t++)
            chunk_bit_set(c->present, tok + t);
    } else {
        /* The rows hold nothing usable now. Tokens that were there before
         * are lost with them; the colder copy must lose them too. */
        dirty = false;
        for (uint32_t t = 0; t < n; t++) {
            if (chunk_bit_has(c->present, tok + t)) {
                chunk_bit_clear(c->present, tok + t);
                dirty = true;
            }
        }
    }
out:
    pthread_rwlock_unlock(&c->lock);
    put_dirty(hot, c, dirty);
    return rc;
}

int hot_read(struct kvt_hot *hot, const struct kvt_chunk_key *key, uint32_t tok,
             uint32_t n, hot_rows_fn read, void *arg)
{
    struct kvt_chunk *c;
    int rc = hot_get(hot, key, &c);

    if (rc)
        return rc;
    pthread_rwlock_rdlock(&c->lock);
    if (!c->gone && chunk_bits_range(c->present, c->shape.tokens, tok, n))
        rc = read(arg, &c->shape, c->data);
    else
        rc = -ENOENT;
    pthread_rwlock_unlock(&c->lock);
    put_dirty(hot, c, false);
    return rc;
}

int hot_load(struct kvt_hot *hot, const struct kvt_chunk_key *key,
             const struct kvt_chunk_shape *shape)
{
    struct kvt_chunk *c;
    bool created;
    int rc = get_filled(hot, key, shape, &c, &created);

    if (rc)
        return rc;
    /* A chunk that was already here holds every token of its colder copy
     * (its creator merged it in first; later copies are written from it). */
    if (created && chunk_bits_none(c->present, c->shape.tokens)) {
        hot_discard(hot, c);         /* no empty chunk left behind */
        rc = -ENOENT;
    }
    pthread_rwlock_unlock(&c->lock);
    put_dirty(hot, c, false);
    return rc;
}

int hot_write_back(struct kvt_hot *hot, struct kvt_chunk *c, hot_image_fn fn, void *arg)
{
    int rc = 0;

    pthread_rwlock_rdlock(&c->lock);
    /* A dropped chunk is never written: its drop marks it gone under the
     * write lock, so a write-back either finished before (and the drop's
     * tombstone follows its record) or sees the mark. The read lock keeps
     * stores out between the dirty test and the copy, so a store after it
     * marks the chunk dirty again. */
    if (!c->gone && hot_take_dirty(hot, c)) {
        const struct kvt_chunk_shape *s = &c->shape;
        void *copy = NULL;
        struct kvt_chunk_image img = { .key = c->key, .shape = *s,
                                       .present = c->present, .data = c->data };

        /* Where a chunk has no token its block may still hold an earlier
         * chunk's rows, perhaps another domain's: those must not leave.
         * Only partly filled chunks (usually a context's last) pay for the
         * copy. */
        if (!chunk_bits_range(c->present, s->tokens, 0, s->tokens)) {
            copy = malloc(chunk_data_bytes(s));
            if (copy) {
                chunk_copy_present(s, copy, c->data, c->present);
                img.data = copy;
            } else {
                rc = -ENOMEM;
            }
        }
        if (rc == 0)
            rc = fn(arg, &img);
        free(copy);
        if (rc)
            hot_mark_dirty(hot, c);      /* not written: try again later */
    }
    pthread_rwlock_unlock(&c->lock);
    return rc;
}

int hot_leading_tokens(struct kvt_hot *hot, const struct kvt_chunk_key *key,
                       uint32_t *tokens)
{
    struct kvt_chunk *c;
    int rc = hot_get(hot, key, &c);

    if (rc)
        return rc;
    pthread_rwlock_rdlock(&c->lock);
    if (c->gone)
        rc = -ENOENT;
    else
        *tokens = chunk_bits_leading(c->present, c->shape.tokens);
    pthread_rwlock_unlock(&c->lock);
    put_dirty(hot, c, false);
    return rc;
}

/* ---- staged chunks: a whole chunk written aside, swapped in later ---------- */

int hot_stage_alloc(struct kvt_hot *hot, const struct kvt_chunk_key *key,
                    const struct kvt_chunk_shape *shape, hot_rows_fn fill, void *arg,
                    struct kvt_chunk **out)
{
    struct kvt_chunk *stage;
    int rc = hot_stage_chunk(hot, key, shape, &stage);

    if (rc)
        return rc;
    /* Nobody else can reach the stage: no lock is needed to fill it. */
    rc = fill(arg, &stage->shape, stage->data);
    if (rc) {
        hot_put(hot, stage);
        return rc;
    }
    for (uint32_t t = 0; t < stage->shape.tokens; t++)
        chunk_bit_set(stage->present, t);
    *out = stage;
    return 0;
}

int hot_stage_commit(struct kvt_hot *hot, struct kvt_chunk *stage)
{
    for (int attempt = 0; attempt <= GONE_RETRIES; attempt++) {
        struct kvt_chunk *c;
        void *old;
        int rc = hot_link_staged(hot, stage, &c);

        if (rc == 0)
            return 0;                /* a new chunk, made of the stage itself */
        if (!chunk_shape_compatible(&c->shape, &stage->shape) ||
            c->shape.outliers != stage->shape.outliers) {
            rc = chunk_shape_compatible(&c->shape, &stage->shape) ? -ESTALE : -EINVAL;
            put_dirty(hot, c, false);
            return rc;
        }
        pthread_rwlock_wrlock(&c->lock);
        if (c->gone) {               /* dropped before the lock: look again */
            pthread_rwlock_unlock(&c->lock);
            put_dirty(hot, c, false);
            continue;
        }
        /* Under the write lock a racing read sees every token old (the
         * block it had) or new (the stage's), never a mix; the old block
         * leaves with the stage and its charge. */
        old = c->data;
        c->data = stage->data;
        stage->data = old;
        for (uint32_t t = 0; t < c->shape.tokens; t++)
            chunk_bit_set(c->present, t);
        pthread_rwlock_unlock(&c->lock);
        put_dirty(hot, c, true);
        hot_put(hot, stage);
        return 0;
    }
    return -EAGAIN;
}

void hot_stage_free(struct kvt_hot *hot, struct kvt_chunk *stage)
{
    if (stage)
        hot_put(hot, stage);
}
