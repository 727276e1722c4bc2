/* test_hot_stage.c - proves the hot tier's staged chunks (hot_stage_alloc,
 * hot_stage_commit, hot_stage_free in cache/hot_ops.c):
 *  - a stage is charged to the budget and to its key's domain like a new
 *    chunk while no lookup finds it, and freeing it gives every byte back
 *    (the pool keeps a big block, which the next stage takes back);
 *  - a failing fill callback frees the stage and returns its error;
 *  - committing over an absent chunk makes the stage that chunk: every
 *    token present, dirty, one chunk's charge;
 *  - committing over an existing chunk of the same shape swaps the block:
 *    the stage's rows readable, every token present, dirty again after a
 *    write-back, the old block's charge released once;
 *  - an existing chunk with other outliers is -ESTALE and keeps its rows
 *    (the caller writes in place instead); another shape is -EINVAL;
 *  - a drop between alloc and commit: the commit is a store after it;
 *  - a stage makes room as a creation does (LRU eviction) and is refused
 *    -ENOSPC when only pinned chunks fill the budget;
 *  - a promotion's stage (hot_stage_alloc_empty) gets its block from the
 *    pool, or makes it when first asked for it (hot_stage_data); linked
 *    with hot_link_promoted it is a clean chunk of exactly the tokens
 *    given; a key with a chunk gives no stamp (-EEXIST), and a chunk of
 *    the key linked after the stamp, even one gone again since, makes the
 *    link -EAGAIN with the stage still the caller's. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "tests/hot_util.h"

static const struct kvt_chunk_shape other = { 64, 4, 8, KVT_CHUNK_INT8, 4 };

/* Reads every token's first and last K byte; byte = 0 if they differ. */
static int read_rows(void *arg, const struct kvt_chunk_shape *s, void *data)
{
    struct rows *r = arg;
    struct kvt_chunk_view cv;
    size_t row = chunk_row_bytes(s);

    chunk_view(s, data, &cv);
    r->byte = cv.k[0];
    for (size_t b = 0; b < (size_t)s->tokens * row; b++)
        if (cv.k[b] != r->byte)
            r->byte = 0;
    return 0;
}

static uint8_t chunk_byte(struct kvt_hot *hot, uint32_t idx, uint32_t tokens)
{
    struct kvt_chunk_key k = key_of(idx);
    struct rows r = { 0 };

    assert_int_equal(hot_read(hot, &k, 0, tokens, read_rows, &r), 0);
    return r.byte;
}

static uint64_t used(struct kvt_hot *hot)
{
    struct kvt_hot_stats st;

    hot_stats(hot, &st);
    return st.used_bytes;            /* chunks (and stages), the pool not counted */
}

static int noop_image(void *arg, const struct kvt_chunk_image *img)
{
    (void)arg;
    (void)img;
    return 0;
}

static void stage_charged_then_freed(void **state)
{
    (void)state;
    struct kvt_hot *hot;
    struct kvt_chunk_key k = key_of(0);
    struct kvt_chunk *st;
    struct rows w = { .byte = 0x21 };
    struct kvt_hot_stats hs;

    assert_int_equal(hot_create(64 << 20, &hot), 0);
    for (int i = 0; i < 2; i++) {
        const struct kvt_chunk_shape *s = i ? &big4 : &shape4;
        assert_int_equal(hot_stage_alloc(hot, &k, s, write_rows, &w, &st), 0);
        assert_int_equal(used(hot), hot_chunk_bytes(s));
        assert_int_equal(hot_domain_used(hot, 1), hot_chunk_bytes(s));
        hot_stats(hot, &hs);
        assert_int_equal(hs.chunks, 0);
        struct rows r = { 0 };
        assert_int_equal(hot_read(hot, &k, 0, 1, read_rows, &r), -ENOENT);
        hot_stage_free(hot, st);
        assert_int_equal(used(hot), 0);
        assert_int_equal(hot_domain_used(hot, 1), 0);
    }
    hot_stats(hot, &hs);
    assert_int_equal(hs.pooled_bytes, chunk_data_bytes(&big4));
    assert_int_equal(hs.used_bytes, 0);
    /* The next big stage takes the pooled block back. */
    assert_int_equal(hot_stage_alloc(hot, &k, &big4, write_rows, &w, &st), 0);
    hot_stats(hot, &hs);
    assert_int_equal(hs.pooled_bytes, 0);
    assert_int_equal(hs.used_bytes, hot_chunk_bytes(&big4));
    hot_stage_free(hot, st);
    hot_stage_free(hot, NULL);

    /* A fill that fails: its error, and nothing left charged. */
    struct rows bad = { .byte = 0x22, .rc = -EINVAL };
    st = NULL;
    assert_int_equal(hot_stage_alloc(hot, &k, &shape4, write_rows, &bad, &st), -EINVAL);
    assert_null(st);
    assert_int_equal(used(hot), 0);
    assert_int_equal(hot_domain_used(hot, 1), 0);
    hot_destroy(hot);
}

static void commit_new_and_over_existing(void **state)
{
    (void)state;
    struct kvt_hot *hot;
    struct kvt_chunk_key k = key_of(0);
    struct kvt_chunk *st, *c;
    struct rows w = { .byte = 0x31 };

    assert_int_equal(hot_create(64 << 20, &hot), 0);
    /* Absent: the stage becomes the chunk. */
    assert_int_equal(hot_stage_alloc(hot, &k, &shape4, write_rows, &w, &st), 0);
    assert_int_equal(hot_stage_commit(hot, st), 0);
    assert_int_equal(chunk_byte(hot, 0, 64), 0x31);
    assert_int_equal(hot_count_dirty(hot), 1);
    assert_int_equal(used(hot), hot_chunk_bytes(&shape4));
    assert_int_equal(hot_domain_used(hot, 1), hot_chunk_bytes(&shape4));

    /* Existing, partly filled and clean: swapped, all present, dirty. */
    struct kvt_chunk_key k1 = key_of(1);
    struct rows part = { .tok = 0, .n = 10, .byte = 0x41 };
    assert_int_equal(hot_write(hot, &k1, &big4, 0, 10, write_rows, &part), 0);
    assert_int_equal(hot_get(hot, &k1, &c), 0);
    assert_int_equal(hot_write_back(hot, c, noop_image, NULL), 0);
    hot_put(hot, c);
    assert_int_equal(hot_count_dirty(hot), 1);             /* k0 only */
    w.byte = 0x42;
    assert_int_equal(hot_stage_alloc(hot, &k1, &big4, write_rows, &w, &st), 0);
    assert_int_equal(used(hot), hot_chunk_bytes(&shape4) + 2 * hot_chunk_bytes(&big4));
    assert_int_equal(hot_stage_commit(hot, st), 0);
    assert_int_equal(chunk_byte(hot, 1, 64), 0x42);
    uint32_t lead = 0;
    assert_int_equal(hot_leading_tokens(hot, &k1, &lead), 0);
    assert_int_equal(lead, 64);
    assert_int_equal(hot_count_dirty(hot), 2);
    assert_int_equal(used(hot), hot_chunk_bytes(&shape4) + hot_chunk_bytes(&big4));
    assert_int_equal(hot_domain_used(hot, 1), hot_chunk_bytes(&shape4) + hot_chunk_bytes(&big4));
    hot_destroy(hot);
}

static void commit_over_other_outliers(void **state)
{
    (void)state;
    struct kvt_hot *hot;
    struct kvt_chunk_key k = key_of(0);
    struct kvt_chunk *st;
    struct rows old = { .byte = 0x51 }, w = { .byte = 0x52 };

    assert_int_equal(hot_create(64 << 20, &hot), 0);
    assert_int_equal(hot_write(hot, &k, &shape0, 0, 64, write_rows, &old), 0);
    assert_int_equal(hot_stage_alloc(hot, &k, &shape4, write_rows, &w, &st), 0);
    assert_int_equal(hot_stage_commit(hot, st), -ESTALE);
    assert_int_equal(chunk_byte(hot, 0, 64), 0x51);     /* kept as it was */
    hot_stage_free(hot, st);
    assert_int_equal(used(hot), hot_chunk_bytes(&shape0));

    assert_int_equal(hot_stage_alloc(hot, &k, &other, write_rows, &w, &st), 0);
    assert_int_equal(hot_stage_commit(hot, st), -EINVAL);
    hot_stage_free(hot, st);
    assert_int_equal(chunk_byte(hot, 0, 64), 0x51);
    assert_int_equal(used(hot), hot_chunk_bytes(&shape0));
    assert_int_equal(hot_domain_used(hot, 1), hot_chunk_bytes(&shape0));
    hot_destroy(hot);
}

static void drop_between_alloc_and_commit(void **state)
{
    (void)state;
    struct kvt_hot *hot;
    struct kvt_chunk_key k = key_of(0), k1 = key_of(1);
    struct kvt_chunk *st;
    struct rows old = { .byte = 0x61 }, w = { .byte = 0x62 };
    struct kvt_hot_stats hs;

    assert_int_equal(hot_create(64 << 20, &hot), 0);
    assert_int_equal(hot_write(hot, &k, &shape4, 0, 64, write_rows, &old), 0);
    assert_int_equal(hot_write(hot, &k1, &shape4, 0, 64, write_rows, &old), 0);
    assert_int_equal(hot_stage_alloc(hot, &k, &shape4, write_rows, &w, &st), 0);
    assert_int_equal(hot_drop_object(hot, 7, 1, 2), 2);    /* the stage is no chunk */
    assert_int_equal(used(hot), hot_chunk_bytes(&shape4));
    assert_int_equal(hot_stage_commit(hot, st), 0);
    /* A store after the drop: its chunk alone, the other one stays gone. */
    hot_stats(hot, &hs);
    assert_int_equal(hs.chunks, 1);
    assert_int_equal(chunk_byte(hot, 0, 64), 0x62);
    struct rows r = { 0 };
    assert_int_equal(hot_read(hot, &k1, 0, 1, read_rows, &r), -ENOENT);
    assert_int_equal(used(hot), hot_chunk_bytes(&shape4));
    hot_destroy(hot);
}

static void stage_makes_room_or_is_refused(void **state)
{
    (void)state;
    struct kvt_hot *hot;
    struct kvt_chunk_key k = key_of(0), k1 = key_of(1);
    struct kvt_chunk *st, *c;
    struct rows w = { .byte = 0x71 };
    struct kvt_hot_stats hs;

    /* Room for one chunk and a half: a stage evicts the LRU chunk. */
    assert_int_equal(hot_create(hot_chunk_bytes(&shape4) * 3 / 2, &hot), 0);
    assert_int_equal(hot_write(hot, &k, &shape4, 0, 64, write_rows, &w), 0);
    assert_int_equal(hot_stage_alloc(hot, &k1, &shape4, write_rows, &w, &st), 0);
    hot_stats(hot, &hs);
    assert_int_equal(hs.evictions, 1);
    assert_int_equal(hs.chunks, 0);
    assert_int_equal(hot_stage_commit(hot, st), 0);
    assert_int_equal(chunk_byte(hot, 1, 64), 0x71);

    /* Its only chunk pinned: no room for a stage, nothing evicted. */
    assert_int_equal(hot_get(hot, &k1, &c), 0);
    st = NULL;
    assert_int_equal(hot_stage_alloc(hot, &k1, &shape4, write_rows, &w, &st), -ENOSPC);
    assert_null(st);
    hot_put(hot, c);
    assert_int_equal(used(hot), hot_chunk_bytes(&shape4));
    hot_stats(hot, &hs);
    assert_int_equal(hs.chunks, 1);
    assert_int_equal(hs.evictions, 1);
    hot_destroy(hot);
}

static void promoted_linked_clean_or_refused(void **state)
{
    (void)state;
    struct kvt_hot *hot;
    struct kvt_chunk_key k = key_of(0), k1 = key_of(1);
    struct kvt_chunk *st;
    struct rows w = { .byte = 0x81 };
    struct kvt_hot_stats hs;
    uint64_t present[1] = { (UINT64_C(1) << 10) - 1 }, stamp;
    uint32_t lead = 0;

    assert_int_equal(hot_create(64 << 20, &hot), 0);
    /* Nothing pooled: no block until the writer asks for it. */
    assert_int_equal(hot_stage_alloc_empty(hot, &k, &big4, &st), 0);
    assert_int_equal(used(hot), hot_chunk_bytes(&big4));
    void *data = hot_stage_data(st);
    assert_non_null(data);
    assert_ptr_equal(hot_stage_data(st), data);
    write_rows(&w, &big4, data);
    assert_int_equal(hot_absent_stamp(hot, &k, &stamp), 0);
    assert_int_equal(hot_link_promoted(hot, st, present, stamp), 0);
    /* Clean, tokens 0..9 only. */
    assert_int_equal(hot_count_dirty(hot), 0);
    assert_int_equal(hot_leading_tokens(hot, &k, &lead), 0);
    assert_int_equal(lead, 10);
    assert_int_equal(chunk_byte(hot, 0, 10), 0x81);
    struct rows r = { 0 };
    assert_int_equal(hot_read(hot, &k, 10, 1, read_rows, &r), -ENOENT);
    assert_int_equal(hot_absent_stamp(hot, &k, &stamp), -EEXIST);

    /* Stamped, then a chunk of k1 comes and goes: the link is refused. */
    assert_int_equal(hot_absent_stamp(hot, &k1, &stamp), 0);
    assert_int_equal(hot_write(hot, &k1, &big4, 0, 64, write_rows, &w), 0);
    assert_int_equal(hot_drop_object(hot, 7, 1, 2), 2);   /* k and k1: two blocks pooled */
    assert_int_equal(hot_stage_alloc_empty(hot, &k1, &big4, &st), 0);
    hot_stats(hot, &hs);
    assert_int_equal(hs.pooled_bytes, chunk_data_bytes(&big4));   /* one is the stage's */
    write_rows(&w, &big4, hot_stage_data(st));
    assert_int_equal(hot_link_promoted(hot, st, present, stamp), -EAGAIN);
    hot_stats(hot, &hs);
    assert_int_equal(hs.chunks, 0);
    assert_int_equal(hot_read(hot, &k1, 0, 1, read_rows, &r), -ENOENT);
    hot_stage_free(hot, st);
    assert_int_equal(used(hot), 0);
    assert_int_equal(hot_domain_used(hot, 1), 0);
    hot_destroy(hot);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(stage_charged_then_freed),
        cmocka_unit_test(commit_new_and_over_existing),
        cmocka_unit_test(commit_over_other_outliers),
        cmocka_unit_test(drop_between_alloc_and_commit),
        cmocka_unit_test(stage_makes_room_or_is_refused),
        cmocka_unit_test(promoted_linked_clean_or_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
