/* proto.c - encode helpers and receiver-side validation of control messages. */
#include "proto/proto.h"

#include <errno.h>
#include <string.h>

#define PAD8(n) (((size_t)(n) + 7) & ~(size_t)7)

static int fail(const char **why, const char *reason, int err)
{
    if (why)
        *why = reason;
    return err;
}

void proto_hdr(struct kvt_msg_hdr *h, uint16_t op, uint32_t len, uint32_t seq)
{
    h->magic = KVT_PROTO_MAGIC;
    h->version = KVT_PROTO_VERSION;
    h->op = op;
    h->len = len;
    h->seq = seq;
}

int proto_check_hdr(const void *msg, size_t len, const char **why)
{
    struct kvt_msg_hdr h;

    if (len < sizeof(h))
        return fail(why, "message shorter than its header", -EBADMSG);
    memcpy(&h, msg, sizeof(h));
    if (h.magic != KVT_PROTO_MAGIC)
        return fail(why, "bad magic: not a kvtier message", -EPROTO);
    if (h.version != KVT_PROTO_VERSION)
        return fail(why, "unsupported protocol version", -EPROTO);
    if (h.len != len)
        return fail(why, "header length does not match message size", -EBADMSG);
    if (len > KVT_FRAME_MAX)
        return fail(why, "message larger than the frame limit", -EMSGSIZE);
    if ((h.op & KVT_OP_REPLY) || h.op == 0 || h.op >= KVT_OP_MAX_)
        return fail(why, "unknown operation", -EOPNOTSUPP);
    return 0;
}

int proto_parse_attach(const void *msg, size_t len, const char **why)
{
    const struct kvt_attach_req *a = msg;

    if (len != sizeof(*a))
        return fail(why, "attach request has the wrong size", -EBADMSG);
    if (a->name_len < 1 || a->name_len > KVT_NAME_MAX)
        return fail(why, "model name must be 1..127 bytes", -EINVAL);
    if (memchr(a->name, '\0', a->name_len))
        return fail(why, "model name contains a NUL byte", -EINVAL);
    for (size_t i = a->name_len; i < sizeof(a->name); i++)
        if (a->name[i])
            return fail(why, "model name padding is not zero", -EBADMSG);
    if (a->n_layers < 1 || a->n_layers > KVT_GEOM_MAX ||
        a->n_kv_heads < 1 || a->n_kv_heads > KVT_GEOM_MAX ||
        a->head_dim < 1 || a->head_dim > KVT_GEOM_MAX)
        return fail(why, "layers, kv heads and head dim must be 1..1024", -EINVAL);
    if (a->dtype > 2)
        return fail(why, "unknown dtype", -EINVAL);
    if (a->region_bytes == 0)
        return fail(why, "shared memory region is empty", -EINVAL);
    return 0;
}

int proto_parse_blocks(const void *msg, size_t len, const uint64_t **ids, uint32_t *n,
                       const char **why)
{
    const struct kvt_blocks_req *r = msg;

    if (len < sizeof(*r))
        return fail(why, "blocks request shorter than its fixed part", -EBADMSG);
    if (r->reserved)
        return fail(why, "reserved fields must be zero", -EBADMSG);
    if (r->n_ids < 1 || r->n_ids > KVT_BLOCKS_MAX)
        return fail(why, "blocks request needs 1..250 ids", -EINVAL);
    if (len != sizeof(*r) + (size_t)r->n_ids * sizeof(uint64_t))
        return fail(why, "request length does not match its counts", -EBADMSG);
    *ids = (const uint64_t *)((const uint8_t *)msg + sizeof(*r));
    *n = r->n_ids;
    return 0;
}

size_t proto_data_size(uint32_t name_len, uint32_t n_keys, uint32_t n_spans)
{
    /* Each count is bounded before multiplying, so none of this overflows. */
    if (name_len > KVT_CTX_NAME_MAX || n_spans > KVT_SPANS_MAX ||
        n_keys > KVT_FRAME_MAX / sizeof(struct kvt_wire_key))
        return 0;
    size_t n = sizeof(struct kvt_data_req) + PAD8(name_len) +
               (size_t)n_keys * sizeof(struct kvt_wire_key) +
               (size_t)n_spans * sizeof(struct kvt_wire_span);
    return n > KVT_FRAME_MAX ? 0 : n;
}

size_t proto_tokens_bytes(uint16_t op, uint32_t n_tokens)
{
    return op == KVT_OP_MATCH_PREFIX ? PAD8((uint64_t)n_tokens * sizeof(int32_t)) : 0;
}

uint64_t proto_raw_row_bytes(uint32_t n_kv_heads, uint32_t head_dim, uint32_t outliers)
{
    /* scale (f32) + outlier index and value (u16 each) + int8 elements */
    return (uint64_t)n_kv_heads * (4u + 4ull * outliers + head_dim);
}

int proto_parse_data(const void *msg, size_t len, uint32_t max_spans,
                     struct kvt_data_view *out, const char **why)
{
    const struct kvt_data_req *r = msg;
    const uint8_t *p = msg;

    if (len < sizeof(*r))
        return fail(why, "request shorter than its fixed part", -EBADMSG);
    if (r->reserved0[0] || r->reserved1)
        return fail(why, "reserved fields must be zero", -EBADMSG);
    if (r->flags & ~KVT_DATA_FLAGS_KNOWN)
        return fail(why, "unknown request flags", -EINVAL);
    if (r->flags && r->hdr.op != KVT_OP_FETCH)
        return fail(why, "request flags are for fetch only", -EINVAL);
    if (!(r->flags & KVT_DATA_RAW) && r->raw_outliers)
        return fail(why, "raw_outliers without the raw flag", -EINVAL);
    if (r->raw_outliers > KVT_RAW_OUTLIERS_MAX)
        return fail(why, "raw_outliers must be 0..16", -EINVAL);
    if (r->addr != KVT_ADDR_NAMED && r->addr != KVT_ADDR_TOKENS)
        return fail(why, "unknown addressing mode", -EINVAL);
    if (r->n_spans > max_spans || r->n_spans > KVT_SPANS_MAX)
        return fail(why, "too many spans in one request", -E2BIG);

    uint16_t op = r->hdr.op;
    int spans_needed = op == KVT_OP_STORE || op == KVT_OP_FETCH || op == KVT_OP_LOCATE;
    if (spans_needed && r->n_spans == 0)
        return fail(why, "store/fetch/locate needs at least one span", -EINVAL);
    if (!spans_needed && r->n_spans != 0)
        return fail(why, "this operation takes no spans", -EINVAL);

    if (op == KVT_OP_SYNC) {
        if (r->addr != KVT_ADDR_NAMED || r->name_len || r->n_keys || r->n_tokens)
            return fail(why, "sync takes no arguments", -EINVAL);
    } else if (r->addr == KVT_ADDR_NAMED) {
        if (op == KVT_OP_MATCH || op == KVT_OP_MATCH_PREFIX)
            return fail(why, "match needs token keys", -EINVAL);
        if (r->name_len < 1 || r->name_len > KVT_CTX_NAME_MAX)
            return fail(why, "context name must be 1..255 bytes", -EINVAL);
        if (r->n_keys || r->n_tokens)
            return fail(why, "named request carries token keys", -EINVAL);
    } else {
        if (op == KVT_OP_LENGTH || op == KVT_OP_DROP)
            return fail(why, "length/drop need a context name", -EINVAL);
        if (r->name_len)
            return fail(why, "token request carries a name", -EINVAL);
        if (r->n_tokens < 1 || r->n_keys < 1)
            return fail(why, "token request needs at least one token", -EINVAL);
    }

    size_t want = proto_data_size(r->name_len, r->n_keys, r->n_spans);
    size_t tokens_bytes = proto_tokens_bytes(op, r->n_tokens);
    if (want == 0 || tokens_bytes > KVT_FRAME_MAX - want || want + tokens_bytes != len)
        return fail(why, "request length does not match its counts", -EBADMSG);

    const char *name = (const char *)p + sizeof(*r);
    if (r->name_len && memchr(name, '\0', r->name_len))
        return fail(why, "context name contains a NUL byte", -EINVAL);
    for (size_t i = r->name_len; i < PAD8(r->name_len); i++)
        if (name[i])
            return fail(why, "name padding is not zero", -EBADMSG);

    out->req = r;
    out->name = name;
    out->keys = (const void *)(p + sizeof(*r) + PAD8(r->name_len));
    out->spans = (const void *)((const uint8_t *)out->keys +
                                (size_t)r->n_keys * sizeof(struct kvt_wire_key));
    out->tokens = NULL;
    if (tokens_bytes) {
        const uint8_t *t = p + want;
        /* The padding is checked as the name's is: no hidden bytes. */
        for (size_t i = (size_t)r->n_tokens * sizeof(int32_t); i < tokens_bytes; i++)
            if (t[i])
                return fail(why, "token padding is not zero", -EBADMSG);
        out->tokens = (const void *)t;
    }
    for (uint32_t i = 0; i < r->n_spans; i++) {
        if (out->spans[i].reserved)
            return fail(why, "span reserved field must be zero", -EBADMSG);
        if (out->spans[i].n_tokens == 0)
            return fail(why, "a span has zero tokens", -EINVAL);
        if (op == KVT_OP_LOCATE && out->spans[i].v_off)
            return fail(why, "locate spans carry v_off 0", -EINVAL);
        if ((uint64_t)out->spans[i].token_start + out->spans[i].n_tokens > UINT32_MAX)
            return fail(why, "span token range overflows", -EOVERFLOW);
    }
    return 0;
}
