/* batch.c - the copy path: plans requests over spans and stages the rows of
 * buffers that live outside the shared region. */
#include "client/batch.h"

#include <errno.h>

/* Where each piece's K and V go: the caller's region offset when shared,
 * else the next aligned place in the stage. */
static void place_staged(struct batch *b, const struct kvt_region *r, size_t row)
{
    size_t at = b->stage ? (size_t)(b->stage - r->base) : 0;
    for (size_t i = 0; i < b->n; i++) {
        struct batch_piece *p = &b->pieces[i];
        size_t bytes = ((size_t)p->n * row + REGION_ALIGN - 1) & ~(size_t)(REGION_ALIGN - 1);
        if (!p->k_shared) {
            p->k_off = at;
            at += bytes;
        }
        if (!p->v_shared) {
            p->v_off = at;
            at += bytes;
        }
    }
}

int batch_plan(struct kvt_region *r, size_t row, const kvt_span *spans, size_t n_spans,
               size_t max_pieces, size_t stage_cap, struct batch_cursor *at, struct batch *b)
{
    struct batch_cursor cur = *at;
    size_t staged = 0;

    b->n = 0;
    b->stage = NULL;
    b->staged_bytes = 0;
    /* A batch holds at most one piece per span: a span is split only when
     * the staging room runs out, and that ends the batch. */
    while (cur.span < n_spans && b->n < max_pieces) {
        const kvt_span *s = &spans[cur.span];
        size_t bytes = (size_t)s->n_tokens * row;
        struct batch_piece *p = &b->pieces[b->n];
        uint64_t off;

        p->span = cur.span;
        p->tok = cur.done;
        p->k_shared = region_contains(r, s->k, bytes, &off);
        if (p->k_shared)
            p->k_off = off + (size_t)cur.done * row;
        p->v_shared = region_contains(r, s->v, bytes, &off);
        if (p->v_shared)
            p->v_off = off + (size_t)cur.done * row;
        size_t per_tok = (p->k_shared ? 0 : row) + (p->v_shared ? 0 : row);
        uint32_t take = s->n_tokens - cur.done;
        if (per_tok) {
            /* 2 * REGION_ALIGN: room for aligning the K and V arrays. */
            size_t used = staged + 2 * REGION_ALIGN;
            size_t room = stage_cap > used ? (stage_cap - used) / per_tok : 0;
            if (room == 0)
                break;
            if (room < take)
                take = (uint32_t)room;
            staged += (size_t)take * per_tok + 2 * REGION_ALIGN;
        }
        p->n = take;
        b->n++;
        cur.done += take;
        if (cur.done == s->n_tokens) {
            cur.span++;
            cur.done = 0;
        }
    }
    if (b->n == 0)
        return -ENOMEM;
    if (staged) {
        b->stage = region_alloc(r, staged);
        if (!b->stage) {
            b->n = 0;
            return -ENOMEM;
        }
        b->staged_bytes = staged;
    }
    place_staged(b, r, row);
    *at = cur;
    return 0;
}

void batch_copy(const struct batch *b, const struct kvt_region *r, size_t row,
                const kvt_span *spans, bool into_region, struct copier *cp)
{
    size_t n = 0;

    for (size_t i = 0; i < b->n; i++) {
        const struct batch_piece *p = &b->pieces[i];
        const kvt_span *s = &spans[p->span];
        size_t bytes = (size_t)p->n * row, skip = (size_t)p->tok * row;
        for (int kv = 0; kv < 2; kv++) {
            if (kv == 0 ? p->k_shared : p->v_shared)
                continue;
            uint8_t *user = (uint8_t *)(kv == 0 ? s->k : s->v) + skip;
            uint8_t *staged = r->base + (kv == 0 ? p->k_off : p->v_off);
            b->parts[n++] = (struct copy_part){ into_region ? staged : user,
                                                into_region ? user : staged, bytes };
        }
    }
    copier_run(cp, b->parts, n);
}

void batch_release(struct kvt_region *r, struct batch *b)
{
    region_free(r, b->stage);
    b->stage = NULL;
    b->staged_bytes = 0;
    b->n = 0;
}
