/* test_hot_ops.c - proves the hot tier's chunk operations (cache/hot_ops.c)
 * keep the protocol the daemon used to write by hand:
 *  - hot_write marks exactly its tokens present and the chunk dirty; a
 *    failing fill callback leaves new tokens absent and the chunk clean, and
 *    makes tokens it overwrote absent (and the chunk dirty, so a colder
 *    copy follows); hot_read is -ENOENT unless every token is present;
 *  - hot_write_back hands over present rows only, zeros elsewhere, even on
 *    a recycled block that still holds another chunk's bytes, marks the
 *    chunk clean, and leaves it dirty when the callback fails;
 *  - the fill hook runs once on creation, before the write; -ESTALE from it
 *    creates the chunk again in the hook's shape (outliers), which the write
 *    callback then sees; another error throws the chunk away and is
 *    returned; hot_load keeps only chunks the hook gave tokens;
 *  - a chunk whose shape differs only in outliers is used as it is;
 *  - hot_leading_tokens and hot_redirty. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "tests/hot_util.h"

static int read_rows(void *arg, const struct kvt_chunk_shape *s, void *data)
{
    struct rows *r = arg;
    struct kvt_chunk_view cv;

    chunk_view(s, data, &cv);
    r->byte = cv.k[(size_t)r->tok * chunk_row_bytes(s)];
    r->calls++;
    return 0;
}

static uint32_t leading(struct kvt_hot *hot, uint32_t idx)
{
    struct kvt_chunk_key k = key_of(idx);
    uint32_t n = 999;

    assert_int_equal(hot_leading_tokens(hot, &k, &n), 0);
    return n;
}

static void write_read_and_failed_fill(void **state)
{
    (void)state;
    struct kvt_hot *hot;
    struct kvt_chunk_key k = key_of(0);
    struct rows r = { .tok = 0, .n = 10, .byte = 0x11 };

    assert_int_equal(hot_create(1 << 20, &hot), 0);
    assert_int_equal(hot_write(hot, &k, &shape4, 0, 10, write_rows, &r), 0);
    assert_int_equal(leading(hot, 0), 10);
    assert_int_equal(hot_count_dirty(hot), 1);

    struct rows rd = { .tok = 3, .n = 7 };
    assert_int_equal(hot_read(hot, &k, 3, 7, read_rows, &rd), 0);
    assert_int_equal(rd.byte, 0x11);
    rd.calls = 0;
    assert_int_equal(hot_read(hot, &k, 5, 6, read_rows, &rd), -ENOENT);   /* token 10 absent */
    assert_int_equal(rd.calls, 0);

    /* Clean it, then a failing fill of new tokens: still absent, still clean. */
    struct kvt_chunk *c;
    assert_int_equal(hot_get(hot, &k, &c), 0);
    assert_true(hot_take_dirty(hot, c));
    struct rows bad = { .tok = 20, .n = 4, .byte = 0x22, .rc = -EINVAL };
    assert_int_equal(hot_write(hot, &k, &shape4, 20, 4, write_rows, &bad), -EINVAL);
    assert_false(chunk_bits_range(c->present, 64, 20, 1));
    assert_int_equal(hot_count_dirty(hot), 0);
    /* A failing overwrite of present tokens: those become absent, and dirty. */
    bad.tok = 8;
    assert_int_equal(hot_write(hot, &k, &shape4, 8, 4, write_rows, &bad), -EINVAL);
    assert_int_equal(leading(hot, 0), 8);
    assert_int_equal(hot_count_dirty(hot), 1);
    hot_put(hot, c);
    hot_destroy(hot);
}

struct image_seen {
    int calls, rc;
    int bad_zero, bad_row;
    uint32_t leading;
};

static int check_image(void *arg, const struct kvt_chunk_image *img)
{
    struct image_seen *seen = arg;
    const struct kvt_chunk_shape *s = &img->shape;
    struct kvt_chunk_view cv;
    size_t row = chunk_row_bytes(s);

    chunk_view(s, (void *)img->data, &cv);
    for (uint32_t t = 0; t < s->tokens; t++) {
        for (size_t b = 0; b < row; b++) {
            uint8_t got = cv.k[t * row + b];
            if (chunk_bit_has(img->present, t) ? got != 0x33 : got != 0)
                chunk_bit_has(img->present, t) ? seen->bad_row++ : seen->bad_zero++;
        }
    }
    seen->leading = chunk_bits_leading(img->present, s->tokens);
    seen->calls++;
    return seen->rc;
}

static void write_back_gives_present_rows_only(void **state)
{
    (void)state;
    struct kvt_hot *hot;
    struct kvt_chunk_key k0 = key_of(0), k1 = key_of(1);
    struct rows junk = { .tok = 0, .n = 64, .byte = 0xee };
    struct kvt_chunk *c;

    /* A full chunk of junk, dropped: its block is pooled and reused. */
    assert_int_equal(hot_create(64 << 20, &hot), 0);
    assert_true(block_poolable(chunk_data_bytes(&big4)));
    assert_int_equal(hot_write(hot, &k0, &big4, 0, 64, write_rows, &junk), 0);
    assert_int_equal(hot_drop_object(hot, 7, 1, 2), 1);
    struct kvt_hot_stats st;
    hot_stats(hot, &st);
    assert_int_equal(st.pooled_bytes, chunk_data_bytes(&big4));
    struct rows r = { .tok = 5, .n = 3, .byte = 0x33 };
    assert_int_equal(hot_write(hot, &k1, &big4, 5, 3, write_rows, &r), 0);
    hot_stats(hot, &st);
    assert_int_equal(st.block_reuses, 1);               /* the junk block */

    assert_int_equal(hot_pin_dirty(hot, &c, 1), 1);
    struct image_seen seen = { .rc = -EIO };
    assert_int_equal(hot_write_back(hot, c, check_image, &seen), -EIO);
    assert_int_equal(hot_count_dirty(hot), 1);          /* failed: still dirty */
    seen.rc = 0;
    assert_int_equal(hot_write_back(hot, c, check_image, &seen), 0);
    assert_int_equal(seen.calls, 2);
    assert_int_equal(seen.bad_zero, 0);                 /* no junk left the tier */
    assert_int_equal(seen.bad_row, 0);
    assert_int_equal(hot_count_dirty(hot), 0);
    assert_int_equal(hot_write_back(hot, c, check_image, &seen), 0);
    assert_int_equal(seen.calls, 2);                    /* clean: nothing to write */
    assert_int_equal(hot_redirty(hot, &k1), 0);
    assert_int_equal(hot_count_dirty(hot), 1);
    hot_put(hot, c);
    assert_int_equal(hot_redirty(hot, &k0), -ENOENT);
    hot_destroy(hot);
}

struct fill_log {
    int calls, rc_first, rc_then;
    struct kvt_chunk_shape other;
    uint32_t give_token;            /* UINT32_MAX: give none */
    int write_calls_seen;           /* write callback calls before the hook */
    struct rows *rows;
};

static int fill_hook(void *arg, const struct kvt_chunk_key *key,
                     const struct kvt_chunk_shape *shape, void *data, uint64_t *present,
                     struct kvt_chunk_shape *other)
{
    struct fill_log *f = arg;
    (void)key;
    (void)data;

    if (f->rows)
        f->write_calls_seen += f->rows->calls;
    if (f->calls++ == 0 && f->rc_first) {
        *other = f->other;
        return f->rc_first;
    }
    if (f->rc_then)
        return f->rc_then;
    if (f->give_token < shape->tokens)
        chunk_bit_set(present, f->give_token);
    return 0;
}

static void fill_hook_on_creation(void **state)
{
    (void)state;
    struct kvt_hot *hot;
    struct kvt_chunk_key k = key_of(0), k2 = key_of(2), k3 = key_of(3);
    struct rows r = { .tok = 0, .n = 4, .byte = 0x44 };
    struct fill_log f = { .rc_first = -ESTALE, .other = shape0, .give_token = 40,
                          .rows = &r };

    assert_int_equal(hot_create(64 << 20, &hot), 0);
    hot_set_fill_hook(hot, fill_hook, &f);
    /* Asked with 4, the colder copy has 0: created again with 0. */
    assert_int_equal(hot_write(hot, &k, &shape4, 0, 4, write_rows, &r), 0);
    assert_int_equal(f.calls, 2);
    assert_int_equal(f.write_calls_seen, 0);            /* hook before the write */
    assert_int_equal(r.seen.outliers, 0);
    assert_int_equal(leading(hot, 0), 4);
    struct kvt_chunk *c;
    assert_int_equal(hot_get(hot, &k, &c), 0);
    assert_true(chunk_bit_has(c->present, 40));         /* what the hook merged */
    hot_put(hot, c);
    /* Found now, in its own shape: no hook, and 0 outliers it stays. */
    r.tok = 4;
    assert_int_equal(hot_write(hot, &k, &shape4, 4, 4, write_rows, &r), 0);
    assert_int_equal(f.calls, 2);
    assert_int_equal(r.seen.outliers, 0);
    /* Another geometry is still refused. */
    struct kvt_chunk_shape wider = shape4;
    wider.dim = 16;
    assert_int_equal(hot_write(hot, &k, &wider, 0, 1, write_rows, &r), -EINVAL);

    /* An error of the hook throws the chunk away. */
    f = (struct fill_log){ .rc_then = -EIO, .give_token = UINT32_MAX };
    assert_int_equal(hot_write(hot, &k2, &shape4, 0, 4, write_rows, &r), -EIO);
    assert_int_equal(hot_get(hot, &k2, &c), -ENOENT);

    /* hot_load keeps a chunk the hook filled, and none that it did not. */
    f = (struct fill_log){ .give_token = UINT32_MAX };
    assert_int_equal(hot_load(hot, &k3, &shape4), -ENOENT);
    assert_int_equal(hot_get(hot, &k3, &c), -ENOENT);
    f = (struct fill_log){ .rc_first = -ESTALE, .other = shape0, .give_token = 0 };
    assert_int_equal(hot_load(hot, &k3, &shape4), 0);
    assert_int_equal(hot_get(hot, &k3, &c), 0);
    assert_int_equal(c->shape.outliers, 0);
    hot_put(hot, c);
    assert_int_equal(hot_load(hot, &k3, &shape4), 0);   /* there: no hook */
    assert_int_equal(f.calls, 2);
    hot_destroy(hot);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(write_read_and_failed_fill),
        cmocka_unit_test(write_back_gives_present_rows_only),
        cmocka_unit_test(fill_hook_on_creation),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
