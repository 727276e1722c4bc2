/* batch.h - the copy path: which tokens of which spans one request carries,
 * and where in the region the buffers outside it are staged. */
#ifndef KVT_BATCH_H
#define KVT_BATCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "client/copier.h"
#include "client/kvtier.h"
#include "client/region.h"

/* Tokens [tok, tok + n) of spans[span], sent in one request. */
struct batch_piece {
    size_t span;
    uint32_t tok, n;
    bool k_shared, v_shared;     /* buffer already in the region: zero copy */
    uint64_t k_off, v_off;       /* region offsets the request names */
};

struct batch {
    struct batch_piece *pieces;  /* room for max_pieces, owned by the caller */
    struct copy_part *parts;     /* room for 2 * max_pieces, likewise */
    size_t n;
    uint8_t *stage;              /* region block for the staged rows, or NULL */
    size_t staged_bytes;         /* its size */
};

/* Where the next batch starts: span index and tokens of it already sent. */
struct batch_cursor {
    size_t span;
    uint32_t done;
};

/* Fill b with the pieces that follow `at` (at most max_pieces, staging at
 * most stage_cap bytes), allocate their staging block and advance `at`.
 * Returns 0, or -ENOMEM when not one token can be staged (b stays empty). */
int batch_plan(struct kvt_region *r, size_t row, const kvt_span *spans, size_t n_spans,
               size_t max_pieces, size_t stage_cap, struct batch_cursor *at, struct batch *b);
/* Copy the staged rows into the region (a store) or out of it (a fetch). */
void batch_copy(const struct batch *b, const struct kvt_region *r, size_t row,
                const kvt_span *spans, bool into_region, struct copier *cp);
/* Free the staging block; b may be empty. */
void batch_release(struct kvt_region *r, struct batch *b);

#endif
