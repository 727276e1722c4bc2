/* test_proto.c - proves the receiver-side validation of the wire protocol:
 * a valid message of every op passes proto_check_hdr and its parser, every
 * rejection path of proto_check_hdr / proto_parse_attach / proto_parse_data
 * returns its documented negative errno with a reason, proto_data_size
 * refuses what would not fit a frame, and 100000 random mutations of valid
 * messages (in exact-size heap buffers, so ASan sees any over-read) never
 * crash and never yield a view pointing outside the message. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "proto/proto.h"

#define BUF_CAP 8192
#define MAX_SPANS 64

/* Fail with the line of the caller, the errno values and the reason. */
#define EXPECT(call, want) do {                                               \
        const char *why_ = NULL;                                              \
        int rc_ = call(&why_);                                                \
        if (rc_ != (want))                                                    \
            fail_msg("%s:%d: %s = %d (%s), want %d", __FILE__, __LINE__,      \
                     #call, rc_, why_ ? why_ : "no reason", (want));          \
        if ((want) != 0 && (!why_ || !*why_))                                 \
            fail_msg("%s:%d: %s rejected without a reason", __FILE__,         \
                     __LINE__, #call);                                        \
    } while (0)

static uint8_t buf[BUF_CAP];
static size_t len;
static struct kvt_data_view view;

static int check_hdr(const char **why) { return proto_check_hdr(buf, len, why); }
static int parse_attach(const char **why) { return proto_parse_attach(buf, len, why); }
static int parse_data(const char **why)
{
    return proto_parse_data(buf, len, MAX_SPANS, &view, why);
}
static int parse_data_unbounded(const char **why)
{
    return proto_parse_data(buf, len, UINT32_MAX, &view, why);
}

static struct kvt_data_req *req(void) { return (struct kvt_data_req *)buf; }
static struct kvt_attach_req *att(void) { return (struct kvt_attach_req *)buf; }

static void make_attach(void)
{
    memset(buf, 0, sizeof(buf));
    len = sizeof(struct kvt_attach_req);
    proto_hdr(&att()->hdr, KVT_OP_ATTACH, (uint32_t)len, 1);
    att()->n_layers = 32;
    att()->n_kv_heads = 8;
    att()->head_dim = 128;
    att()->dtype = 1;
    att()->name_len = 5;
    att()->region_bytes = 1 << 20;
    memcpy(att()->name, "llama", 5);
}

static const char *name_ptr(void) { return (const char *)buf + sizeof(struct kvt_data_req); }

static struct kvt_wire_span *span_at(uint32_t i)
{
    const struct kvt_data_req *r = req();
    size_t at = sizeof(*r) + ((r->name_len + 7u) & ~7u) +
                (size_t)r->n_keys * sizeof(struct kvt_wire_key) +
                (size_t)i * sizeof(struct kvt_wire_span);
    return (struct kvt_wire_span *)(buf + at);
}

/* A valid data request: named when name != NULL, else token-addressed with
 * n_keys keys over n_tokens tokens. */
static void make_data(uint16_t op, const char *name, uint32_t n_keys,
                      uint32_t n_tokens, uint32_t n_spans)
{
    uint32_t name_len = name ? (uint32_t)strlen(name) : 0;

    len = proto_data_size(name_len, n_keys, n_spans) + proto_tokens_bytes(op, n_tokens);
    assert_true(len > 0 && len <= sizeof(buf));
    memset(buf, 0, sizeof(buf));
    proto_hdr(&req()->hdr, op, (uint32_t)len, 9);
    req()->addr = name ? KVT_ADDR_NAMED : KVT_ADDR_TOKENS;
    req()->n_spans = n_spans;
    req()->name_len = name_len;
    req()->n_keys = n_keys;
    req()->n_tokens = n_tokens;
    memcpy(buf + sizeof(struct kvt_data_req), name ? name : "", name_len);
    struct kvt_wire_key *keys =
        (void *)(buf + sizeof(struct kvt_data_req) + ((name_len + 7u) & ~7u));
    for (uint32_t i = 0; i < n_keys; i++)
        keys[i] = (struct kvt_wire_key){ 0x1111 * (i + 1), 0x2222 * (i + 1) };
    for (uint32_t i = 0; i < n_spans; i++)
        *span_at(i) = (struct kvt_wire_span){ .layer = i, .token_start = 4 * i,
                                              .n_tokens = 4, .k_off = 4096 * i,
                                              .v_off = 4096 * i + 2048 };
}

/* ---- valid messages ---------------------------------------------------------- */

static void valid_message_of_every_op_passes(void **state)
{
    (void)state;
    make_attach();
    EXPECT(check_hdr, 0);
    EXPECT(parse_attach, 0);

    const uint16_t span_ops[] = { KVT_OP_STORE, KVT_OP_FETCH };
    for (size_t i = 0; i < 2; i++) {
        make_data(span_ops[i], "chat-1", 0, 0, 3);
        EXPECT(check_hdr, 0);
        EXPECT(parse_data, 0);
        assert_ptr_equal(view.req, buf);
        assert_ptr_equal(view.name, name_ptr());
        assert_memory_equal(view.name, "chat-1", 6);
        assert_ptr_equal(view.spans, span_at(0));
        assert_int_equal(view.spans[2].layer, 2);

        make_data(span_ops[i], NULL, 3, 40, 2);      /* tokens: 3 keys of 16 */
        EXPECT(check_hdr, 0);
        EXPECT(parse_data, 0);
        assert_ptr_equal(view.keys, buf + sizeof(struct kvt_data_req));
        assert_int_equal(view.keys[2].hi, 0x3333);
        assert_ptr_equal(view.spans, span_at(0));
    }
    const uint16_t named_ops[] = { KVT_OP_LENGTH, KVT_OP_DROP };
    for (size_t i = 0; i < 2; i++) {
        make_data(named_ops[i], "x", 0, 0, 0);
        EXPECT(check_hdr, 0);
        EXPECT(parse_data, 0);
    }
    make_data(KVT_OP_MATCH, NULL, 2, 17, 0);
    EXPECT(check_hdr, 0);
    EXPECT(parse_data, 0);
    make_data(KVT_OP_SYNC, NULL, 0, 0, 0);
    req()->addr = KVT_ADDR_NAMED;
    EXPECT(check_hdr, 0);
    EXPECT(parse_data, 0);

    /* Edges that are still valid. */
    make_data(KVT_OP_STORE, "s", 0, 0, MAX_SPANS);
    EXPECT(parse_data, 0);
    make_data(KVT_OP_FETCH, "s", 0, 0, 1);
    span_at(0)->token_start = UINT32_MAX - 1;
    span_at(0)->n_tokens = 1;                        /* ends exactly at 2^32 - 1 */
    EXPECT(parse_data, 0);
    char longest[KVT_CTX_NAME_MAX + 1];
    memset(longest, 'n', KVT_CTX_NAME_MAX);
    longest[KVT_CTX_NAME_MAX] = '\0';
    make_data(KVT_OP_LENGTH, longest, 0, 0, 0);
    EXPECT(parse_data, 0);
    make_attach();
    att()->name_len = KVT_NAME_MAX;
    memset(att()->name, 'm', KVT_NAME_MAX);
    att()->n_layers = att()->n_kv_heads = att()->head_dim = KVT_GEOM_MAX;
    att()->dtype = 2;
    EXPECT(parse_attach, 0);
}

/* ---- header ------------------------------------------------------------------- */

static void header_rejections(void **state)
{
    (void)state;
    make_attach();
    len = 0;
    EXPECT(check_hdr, -EBADMSG);
    len = sizeof(struct kvt_msg_hdr) - 1;
    EXPECT(check_hdr, -EBADMSG);

    make_attach();
    att()->hdr.magic ^= 1;
    EXPECT(check_hdr, -EPROTO);
    make_attach();
    att()->hdr.version = 0;
    EXPECT(check_hdr, -EPROTO);
    att()->hdr.version = KVT_PROTO_VERSION + 1;
    EXPECT(check_hdr, -EPROTO);

    make_attach();
    att()->hdr.len = (uint32_t)len + 1;
    EXPECT(check_hdr, -EBADMSG);
    att()->hdr.len = (uint32_t)len - 1;
    EXPECT(check_hdr, -EBADMSG);

    const uint16_t bad_ops[] = { 0, KVT_OP_MAX_, 0x7fff, KVT_OP_STORE | KVT_OP_REPLY,
                                 KVT_OP_REPLY, 0xffff };
    for (size_t i = 0; i < sizeof(bad_ops) / sizeof(bad_ops[0]); i++) {
        make_data(KVT_OP_LENGTH, "x", 0, 0, 0);
        req()->hdr.op = bad_ops[i];
        EXPECT(check_hdr, -EOPNOTSUPP);
    }

    /* A whole message one word over the frame limit, its header honest. */
    size_t big_len = KVT_FRAME_MAX + 8;
    uint8_t *big = calloc(1, big_len);
    assert_non_null(big);
    proto_hdr((struct kvt_msg_hdr *)big, KVT_OP_STORE, (uint32_t)big_len, 1);
    const char *why = NULL;
    assert_int_equal(proto_check_hdr(big, big_len, &why), -EMSGSIZE);
    assert_non_null(why);
    free(big);
}

/* ---- ATTACH --------------------------------------------------------------------- */

static void attach_rejections(void **state)
{
    (void)state;
    make_attach();
    len = sizeof(struct kvt_attach_req) - 1;
    EXPECT(parse_attach, -EBADMSG);
    len = sizeof(struct kvt_attach_req) + 1;
    EXPECT(parse_attach, -EBADMSG);

    make_attach();
    att()->name_len = 0;
    EXPECT(parse_attach, -EINVAL);
    att()->name_len = KVT_NAME_MAX + 1;              /* 128 bytes of name */
    memset(att()->name, 'm', sizeof(att()->name));
    EXPECT(parse_attach, -EINVAL);
    att()->name_len = UINT32_MAX;
    EXPECT(parse_attach, -EINVAL);

    make_attach();
    att()->name[2] = '\0';
    EXPECT(parse_attach, -EINVAL);
    make_attach();
    att()->name[127] = 'x';                          /* padding after the name */
    EXPECT(parse_attach, -EBADMSG);

    uint32_t *geom[3];
    for (int g = 0; g < 3; g++) {
        make_attach();
        geom[0] = &att()->n_layers;
        geom[1] = &att()->n_kv_heads;
        geom[2] = &att()->head_dim;
        *geom[g] = 0;
        EXPECT(parse_attach, -EINVAL);
        *geom[g] = KVT_GEOM_MAX + 1;
        EXPECT(parse_attach, -EINVAL);
        *geom[g] = UINT32_MAX;
        EXPECT(parse_attach, -EINVAL);
    }
    make_attach();
    att()->dtype = 3;
    EXPECT(parse_attach, -EINVAL);
    make_attach();
    att()->region_bytes = 0;
    EXPECT(parse_attach, -EINVAL);
}

/* ---- data requests ---------------------------------------------------------------- */

static void data_framing_rejections(void **state)
{
    (void)state;
    make_data(KVT_OP_STORE, "ctx", 0, 0, 1);
    len = sizeof(struct kvt_data_req) - 1;
    EXPECT(parse_data, -EBADMSG);

    make_data(KVT_OP_STORE, "ctx", 0, 0, 1);
    req()->reserved0[0] = 1;
    EXPECT(parse_data, -EBADMSG);

    /* the raw flag: FETCH only, outliers 0..16 and only with the flag */
    make_data(KVT_OP_FETCH, "ctx", 0, 0, 1);
    req()->flags = KVT_DATA_RAW;
    req()->raw_outliers = KVT_RAW_OUTLIERS_MAX;
    EXPECT(parse_data, 0);
    req()->raw_outliers = 0;
    EXPECT(parse_data, 0);
    req()->raw_outliers = KVT_RAW_OUTLIERS_MAX + 1;
    EXPECT(parse_data, -EINVAL);
    req()->raw_outliers = 255;
    EXPECT(parse_data, -EINVAL);
    req()->raw_outliers = 4;
    req()->flags = 2;                       /* unknown flag */
    EXPECT(parse_data, -EINVAL);
    req()->flags = 0;                       /* outliers without the flag */
    EXPECT(parse_data, -EINVAL);
    make_data(KVT_OP_STORE, "ctx", 0, 0, 1);
    req()->flags = KVT_DATA_RAW;            /* not a FETCH */
    EXPECT(parse_data, -EINVAL);
    make_data(KVT_OP_STORE, "ctx", 0, 0, 1);
    req()->raw_outliers = 4;
    EXPECT(parse_data, -EINVAL);
    assert_int_equal(proto_raw_row_bytes(8, 128, 4), 1184);
    assert_int_equal(proto_raw_row_bytes(8, 128, 4) % 4, 0);
    make_data(KVT_OP_STORE, "ctx", 0, 0, 1);
    req()->reserved1 = 0x80000000u;
    EXPECT(parse_data, -EBADMSG);
    make_data(KVT_OP_STORE, "ctx", 0, 0, 2);
    span_at(1)->reserved = 1;
    EXPECT(parse_data, -EBADMSG);

    make_data(KVT_OP_FETCH, "ctx", 0, 0, 1);
    req()->addr = 2;
    EXPECT(parse_data, -EINVAL);

    /* Length must match the counts exactly, both ways. */
    make_data(KVT_OP_STORE, "ctx", 0, 0, 2);
    len += sizeof(struct kvt_wire_span);
    EXPECT(parse_data, -EBADMSG);
    make_data(KVT_OP_STORE, "ctx", 0, 0, 2);
    len -= 8;
    EXPECT(parse_data, -EBADMSG);
    make_data(KVT_OP_STORE, "ctx", 0, 0, 2);
    req()->n_spans = 3;
    EXPECT(parse_data, -EBADMSG);
    make_data(KVT_OP_FETCH, NULL, 2, 20, 1);
    req()->n_keys = 0x10000000;                       /* count past the frame */
    EXPECT(parse_data, -EBADMSG);

    make_data(KVT_OP_STORE, "ctx", 0, 0, 1);
    buf[sizeof(struct kvt_data_req) + 5] = 'x';     /* "ctx" padded to 8 */
    EXPECT(parse_data, -EBADMSG);
}

static void data_field_rejections(void **state)
{
    (void)state;
    make_data(KVT_OP_STORE, "ctx", 0, 0, MAX_SPANS);
    req()->n_spans = MAX_SPANS + 1;
    EXPECT(parse_data, -E2BIG);
    make_data(KVT_OP_STORE, "ctx", 0, 0, 1);
    req()->n_spans = KVT_SPANS_MAX + 1;               /* over the protocol bound */
    EXPECT(parse_data_unbounded, -E2BIG);

    make_data(KVT_OP_STORE, "ctx", 0, 0, 0);
    EXPECT(parse_data, -EINVAL);
    make_data(KVT_OP_FETCH, NULL, 1, 4, 0);
    EXPECT(parse_data, -EINVAL);
    make_data(KVT_OP_LENGTH, "ctx", 0, 0, 1);
    EXPECT(parse_data, -EINVAL);
    make_data(KVT_OP_MATCH, NULL, 1, 4, 1);
    EXPECT(parse_data, -EINVAL);

    make_data(KVT_OP_SYNC, "ctx", 0, 0, 0);
    EXPECT(parse_data, -EINVAL);
    make_data(KVT_OP_SYNC, NULL, 1, 4, 0);
    EXPECT(parse_data, -EINVAL);
    make_data(KVT_OP_SYNC, NULL, 0, 0, 0);
    req()->addr = KVT_ADDR_TOKENS;
    EXPECT(parse_data, -EINVAL);

    make_data(KVT_OP_MATCH, "ctx", 0, 0, 0);
    EXPECT(parse_data, -EINVAL);
    make_data(KVT_OP_DROP, NULL, 0, 0, 0);
    req()->addr = KVT_ADDR_NAMED;                     /* named, name_len 0 */
    EXPECT(parse_data, -EINVAL);
    make_data(KVT_OP_DROP, "ctx", 0, 0, 0);
    req()->name_len = KVT_CTX_NAME_MAX + 1;
    EXPECT(parse_data, -EINVAL);
    make_data(KVT_OP_FETCH, "ctx", 0, 0, 1);
    req()->n_keys = 1;
    EXPECT(parse_data, -EINVAL);
    make_data(KVT_OP_FETCH, "ctx", 0, 0, 1);
    req()->n_tokens = 5;
    EXPECT(parse_data, -EINVAL);

    make_data(KVT_OP_LENGTH, NULL, 1, 4, 0);
    EXPECT(parse_data, -EINVAL);
    make_data(KVT_OP_DROP, NULL, 1, 4, 0);
    EXPECT(parse_data, -EINVAL);
    make_data(KVT_OP_STORE, NULL, 1, 4, 1);
    req()->name_len = 3;
    EXPECT(parse_data, -EINVAL);
    make_data(KVT_OP_STORE, NULL, 1, 4, 1);
    req()->n_tokens = 0;
    EXPECT(parse_data, -EINVAL);
    make_data(KVT_OP_MATCH, NULL, 0, 4, 0);
    EXPECT(parse_data, -EINVAL);

    make_data(KVT_OP_STORE, "ctx", 0, 0, 1);
    buf[sizeof(struct kvt_data_req) + 1] = '\0';     /* NUL inside the name */
    EXPECT(parse_data, -EINVAL);

    make_data(KVT_OP_STORE, "ctx", 0, 0, 3);
    span_at(2)->n_tokens = 0;
    EXPECT(parse_data, -EINVAL);
    make_data(KVT_OP_FETCH, "ctx", 0, 0, 1);
    span_at(0)->token_start = UINT32_MAX;
    span_at(0)->n_tokens = 1;
    EXPECT(parse_data, -EOVERFLOW);
    make_data(KVT_OP_FETCH, "ctx", 0, 0, 1);
    span_at(0)->token_start = 16;
    span_at(0)->n_tokens = 0xFFFFFFF0u;
    EXPECT(parse_data, -EOVERFLOW);
}

static void data_size_bounds(void **state)
{
    (void)state;
    assert_int_equal(proto_data_size(0, 0, 0), sizeof(struct kvt_data_req));
    assert_int_equal(proto_data_size(1, 0, 0), sizeof(struct kvt_data_req) + 8);
    assert_int_equal(proto_data_size(8, 0, 0), sizeof(struct kvt_data_req) + 8);
    assert_int_equal(proto_data_size(9, 2, 3), sizeof(struct kvt_data_req) + 16 + 2 * 16 + 3 * 32);
    assert_int_equal(proto_data_size(KVT_CTX_NAME_MAX + 1, 0, 1), 0);
    assert_int_equal(proto_data_size(0, 0, KVT_SPANS_MAX + 1), 0);
    assert_int_equal(proto_data_size(0, UINT32_MAX, 0), 0);
    assert_int_equal(proto_data_size(UINT32_MAX, UINT32_MAX, UINT32_MAX), 0);
    /* Every piece in bounds, the sum over the frame. */
    uint32_t keys = (KVT_FRAME_MAX - sizeof(struct kvt_data_req)) / sizeof(struct kvt_wire_key);
    assert_true(proto_data_size(0, keys, 0) > 0);
    assert_true(proto_data_size(0, keys, 0) <= KVT_FRAME_MAX);
    assert_int_equal(proto_data_size(0, keys, 1), 0);
}

/* ---- random mutations ---------------------------------------------------------------- */

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint64_t rnd(void)
{
    /* xorshift64*: deterministic, so a failure reproduces. */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 0x2545f4914f6cdd1dull;
}

/* Numbers that sit on the bounds the parsers check. */
static uint32_t edge_value(size_t msg_len)
{
    const uint32_t edges[] = { 0, 1, 2, 7, 8, 127, 128, 255, 256, 1024, 1025,
                               MAX_SPANS, MAX_SPANS + 1, KVT_SPANS_MAX + 1,
                               0x7fffffff, 0x80000000u, 0xfffffff0u, UINT32_MAX,
                               KVT_FRAME_MAX, (uint32_t)msg_len };
    return edges[rnd() % (sizeof(edges) / sizeof(edges[0]))];
}

static void check_view_inside(const uint8_t *msg, size_t n)
{
    const struct kvt_data_req *r = view.req;
    const uint8_t *end = msg + n;

    assert_ptr_equal(r, msg);
    assert_true((const uint8_t *)view.name + r->name_len <= end);
    assert_true((const uint8_t *)(view.keys + r->n_keys) <= end);
    assert_true((const uint8_t *)(view.spans + r->n_spans) == end);
    assert_true(r->n_spans <= MAX_SPANS);
}

static void save_seed(uint8_t seeds[][BUF_CAP], size_t *seed_len, int i)
{
    memcpy(seeds[i], buf, len);
    seed_len[i] = len;
}

static void random_mutations_never_crash(void **state)
{
    (void)state;
    uint8_t seeds[6][BUF_CAP];
    size_t seed_len[6];
    unsigned accepted = 0;

    make_attach();
    save_seed(seeds, seed_len, 0);
    make_data(KVT_OP_STORE, "chat", 0, 0, 4);
    save_seed(seeds, seed_len, 1);
    make_data(KVT_OP_FETCH, NULL, 3, 40, 3);
    save_seed(seeds, seed_len, 2);
    make_data(KVT_OP_LENGTH, "a-longer-context-name", 0, 0, 0);
    save_seed(seeds, seed_len, 3);
    make_data(KVT_OP_MATCH, NULL, 5, 70, 0);
    save_seed(seeds, seed_len, 4);
    make_data(KVT_OP_SYNC, NULL, 0, 0, 0);
    req()->addr = KVT_ADDR_NAMED;
    save_seed(seeds, seed_len, 5);

    for (int iter = 0; iter < 100000; iter++) {
        int s = (int)(rnd() % 6);
        size_t n = seed_len[s];
        uint8_t work[BUF_CAP + 64];

        memcpy(work, seeds[s], n);
        memset(work + n, (int)(rnd() & 0xff), 64);
        switch (rnd() % 4) {                     /* sometimes resize the packet */
        case 0: n = rnd() % (n + 1); break;
        case 1: n += rnd() % 64; break;
        default: break;
        }
        int mutations = 1 + (int)(rnd() % 4);
        for (int m = 0; m < mutations && n > 0; m++) {
            size_t at = rnd() % n;
            if (rnd() & 1) {
                work[at] = (uint8_t)rnd();
            } else {
                at &= ~(size_t)3;                /* a whole field */
                uint32_t v = edge_value(n);
                if (at + 4 <= n)
                    memcpy(work + at, &v, 4);
            }
        }
        if (rnd() % 3 == 0 && n >= sizeof(struct kvt_msg_hdr)) {
            uint32_t v = (uint32_t)n;            /* keep the header honest */
            memcpy(work + offsetof(struct kvt_msg_hdr, len), &v, 4);
        }

        /* An exact-size copy: ASan reports any read past the packet. */
        uint8_t *msg = malloc(n ? n : 1);
        assert_non_null(msg);
        memcpy(msg, work, n);
        const char *why = NULL;
        int rc = proto_check_hdr(msg, n, &why);
        if (rc == 0) {
            uint16_t op = ((const struct kvt_msg_hdr *)msg)->op;
            why = NULL;
            if (op == KVT_OP_ATTACH) {
                rc = proto_parse_attach(msg, n, &why);
            } else {
                memset(&view, 0, sizeof(view));
                rc = proto_parse_data(msg, n, MAX_SPANS, &view, &why);
                if (rc == 0)
                    check_view_inside(msg, n);
            }
            accepted += rc == 0;
        }
        assert_true(rc <= 0);
        if (rc < 0 && !why)
            fail_msg("iteration %d: rejected with %d but no reason", iter, rc);
        free(msg);
    }
    /* The mutations must not be so wild that nothing ever parses. */
    assert_true(accepted > 100);
}

/* MATCH_PREFIX carries the token ids after the keys, padded to 8 bytes;
 * the view points at them, and a wrong length or a stray padding byte is
 * refused. The other ops carry none. */
static void match_prefix_carries_tokens(void **state)
{
    (void)state;
    assert_int_equal(proto_tokens_bytes(KVT_OP_MATCH_PREFIX, 5), 24);
    assert_int_equal(proto_tokens_bytes(KVT_OP_MATCH_PREFIX, 4), 16);
    assert_int_equal(proto_tokens_bytes(KVT_OP_MATCH, 5), 0);

    make_data(KVT_OP_MATCH_PREFIX, NULL, 1, 5, 0);
    int32_t *ids = (int32_t *)(buf + len - 24);
    for (int i = 0; i < 5; i++)
        ids[i] = 100 + i;
    EXPECT(check_hdr, 0);
    EXPECT(parse_data, 0);
    assert_ptr_equal(view.tokens, ids);
    assert_int_equal(view.tokens[4], 104);

    buf[len - 1] = 1;                       /* padding after 5 ids */
    EXPECT(parse_data, -EBADMSG);
    buf[len - 1] = 0;
    len -= 8;                               /* the ids cut short */
    req()->hdr.len = (uint32_t)len;
    EXPECT(parse_data, -EBADMSG);

    make_data(KVT_OP_MATCH, NULL, 1, 5, 0);
    EXPECT(parse_data, 0);
    assert_null(view.tokens);
    make_data(KVT_OP_MATCH_PREFIX, "named", 0, 0, 0);
    EXPECT(parse_data, -EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(valid_message_of_every_op_passes),
        cmocka_unit_test(header_rejections),
        cmocka_unit_test(attach_rejections),
        cmocka_unit_test(data_framing_rejections),
        cmocka_unit_test(data_field_rejections),
        cmocka_unit_test(data_size_bounds),
        cmocka_unit_test(random_mutations_never_crash),
        cmocka_unit_test(match_prefix_carries_tokens),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
