/* proto.h - the kvtier control protocol: message layouts, limits, validation.
 *
 * Transport: a Unix SOCK_SEQPACKET socket, one message per packet, so framing
 * is the kernel's and a truncated message is simply a short one. Every
 * message is a fixed-size little-endian header followed by a body; all
 * structs below are packed by construction (explicit padding, asserted
 * sizes). Bulk K/V data never crosses the socket: requests carry offsets into
 * the client's shared memory region, which the client creates (a sealed
 * memfd) and passes with SCM_RIGHTS in ATTACH. docs/protocol.md has the
 * byte-by-byte description.
 *
 * A client has at most one request outstanding; replies carry the request's
 * seq. Every field is validated by the receiver (proto_parse_*).
 */
#ifndef KVT_PROTO_H
#define KVT_PROTO_H

#include <stddef.h>
#include <stdint.h>

#define KVT_PROTO_MAGIC   0x3154564bu   /* "KVT1" as little-endian bytes */
#define KVT_PROTO_VERSION 1

/* Hard protocol bounds; the daemon may configure tighter ones. */
#define KVT_NAME_MAX        127          /* model name bytes */
#define KVT_CTX_NAME_MAX    255          /* context name bytes (KVT_CTX_MAX) */
#define KVT_GEOM_MAX        1024         /* layers, heads, head_dim */
#define KVT_SPANS_MAX       65536        /* spans in one request */
#define KVT_FRAME_MAX       (4u << 20)   /* largest message, bytes */
#define KVT_REASON_MAX      96           /* bytes of the reply's reason text */

enum kvt_op {
    KVT_OP_ATTACH = 1,   /* model geometry + region fd -> namespace */
    KVT_OP_STORE  = 2,   /* spans of a named context or of token chunks */
    KVT_OP_FETCH  = 3,
    KVT_OP_LENGTH = 4,   /* named context -> leading tokens in every layer */
    KVT_OP_DROP   = 5,   /* named context -> gone from every tier */
    KVT_OP_MATCH  = 6,   /* token chunk keys -> tokens cached */
    KVT_OP_SYNC   = 7,   /* -> everything stored is on the cold tier */
    KVT_OP_MATCH_PREFIX = 8,   /* MATCH, and a stored partial last chunk too */
    KVT_OP_LOCATE = 9,   /* spans -> where their rows lie in shared hot blocks */
    KVT_OP_BLOCKS = 10,  /* shared hot block ids -> their memfds (SCM_RIGHTS) */
    KVT_OP_MAX_   = 11,
};
#define KVT_OP_REPLY 0x8000u            /* op | KVT_OP_REPLY in replies */

struct kvt_msg_hdr {
    uint32_t magic;      /* KVT_PROTO_MAGIC */
    uint16_t version;    /* KVT_PROTO_VERSION */
    uint16_t op;         /* enum kvt_op, | KVT_OP_REPLY in replies */
    uint32_t len;        /* whole message in bytes, header included */
    uint32_t seq;        /* chosen by the client, echoed in the reply */
};
_Static_assert(sizeof(struct kvt_msg_hdr) == 16, "header is 16 bytes");

struct kvt_attach_req {
    struct kvt_msg_hdr hdr;
    uint32_t n_layers, n_kv_heads, head_dim;
    uint32_t dtype;          /* kvt_dtype */
    uint32_t chunk_tokens;   /* 0 = daemon default */
    uint32_t name_len;       /* 1..KVT_NAME_MAX */
    uint64_t region_bytes;   /* size of the memfd passed with SCM_RIGHTS */
    char name[128];          /* name_len bytes, rest zero */
};
_Static_assert(sizeof(struct kvt_attach_req) == 176, "attach is 176 bytes");

struct kvt_attach_info {     /* reply value block of ATTACH */
    uint32_t chunk_tokens;   /* effective tokens per chunk */
    uint32_t max_spans;      /* spans per request the daemon accepts */
    uint32_t max_frame;      /* bytes per message the daemon accepts */
    uint32_t quant;          /* 0 = int8, 1 = lossless */
    uint64_t ns_id;
};
_Static_assert(sizeof(struct kvt_attach_info) == 24, "attach info is 24 bytes");

enum kvt_addr {
    KVT_ADDR_NAMED = 0,      /* a named context: name follows */
    KVT_ADDR_TOKENS = 1,     /* token-addressed: chunk keys follow */
};

/* STORE, FETCH, LENGTH, DROP, MATCH, SYNC, MATCH_PREFIX. After the fixed
 * part come, in order:
 *   name:  name_len bytes, zero-padded to a multiple of 8
 *   keys:  n_keys  x struct kvt_wire_key   (token chunk chain hashes)
 *   spans: n_spans x struct kvt_wire_span
 *   tokens (MATCH_PREFIX only): n_tokens x int32, zero-padded to a multiple
 *          of 8 bytes; the daemon hashes the candidate partial chunks
 *          after the longest run of whole ones from them (proto/prefix.h)
 * For KVT_ADDR_TOKENS, n_keys == ceil(n_tokens / chunk_tokens) and key i
 * addresses tokens [i*chunk_tokens, min((i+1)*chunk_tokens, n_tokens)). */
struct kvt_data_req {
    struct kvt_msg_hdr hdr;
    uint8_t addr;            /* enum kvt_addr */
    uint8_t flags;           /* KVT_DATA_*; FETCH only, else 0 */
    uint8_t raw_outliers;    /* KVT_DATA_RAW: 0..KVT_RAW_OUTLIERS_MAX; else 0 */
    uint8_t reserved0[1];    /* 0 */
    uint32_t n_spans;
    uint32_t name_len;       /* KVT_ADDR_NAMED: 1..KVT_CTX_NAME_MAX; else 0 */
    uint32_t n_keys;         /* KVT_ADDR_TOKENS: as above; else 0 */
    uint32_t n_tokens;       /* KVT_ADDR_TOKENS: tokens the keys cover */
    uint32_t reserved1;      /* 0 */
};
_Static_assert(sizeof(struct kvt_data_req) == 40, "data request is 40 bytes");

/* flags of a data request. KVT_DATA_RAW (FETCH only): each span's k and v
 * receive, per token, the stored int8 row instead of values in the client's
 * dtype, laid out as
 *   float scale[H]; uint16_t out_idx[H][O]; uint16_t out_val[H][O] (f16 bits);
 *   int8_t q[H][D]
 * with H = n_kv_heads, D = head_dim, O = raw_outliers: H * (4 + 4 O + D)
 * bytes a row (proto_raw_row_bytes). Older clients send 0 here and are
 * served as before. */
#define KVT_DATA_RAW          1u
#define KVT_DATA_FLAGS_KNOWN  KVT_DATA_RAW
#define KVT_RAW_OUTLIERS_MAX  16   /* = KVT_CHUNK_MAX_OUTLIERS (asserted in daemon/) */

struct kvt_wire_key {
    uint64_t hi, lo;
};
_Static_assert(sizeof(struct kvt_wire_key) == 16, "key is 16 bytes");

struct kvt_wire_span {
    uint32_t layer;
    uint32_t token_start;
    uint32_t n_tokens;
    uint32_t reserved;       /* 0 */
    uint64_t k_off;          /* byte offsets into the client's region */
    uint64_t v_off;
};
_Static_assert(sizeof(struct kvt_wire_span) == 32, "span is 32 bytes");

#define KVT_OUTLIERS_KNOWN 0x80000000u

struct kvt_reply {
    struct kvt_msg_hdr hdr;
    int32_t status;          /* 0 or -errno */
    uint32_t outliers;       /* ATTACH to an int8 daemon: KVT_OUTLIERS_KNOWN |
                              * the outliers per vector it keeps in the chunks
                              * it makes (0..16); else 0 (older daemons: 0) */
    uint64_t value;          /* LENGTH, MATCH: tokens; DROP: chunks dropped */
    struct kvt_attach_info attach;   /* ATTACH only, else zero */
    char reason[KVT_REASON_MAX];     /* NUL-terminated, "" on success */
};
_Static_assert(sizeof(struct kvt_reply) == 152, "reply is 152 bytes");

/* ---- shared hot blocks (kvtierd `share-hot`, docs/protocol.md) -------------
 * A daemon started with share-hot keeps each large chunk block of the hot
 * tier in a memfd of its own, sealed against writes by anyone but the
 * daemon (F_SEAL_FUTURE_WRITE), that only ever holds chunks of one sharing
 * domain. LOCATE (a data request like FETCH, every span's v_off 0) writes,
 * at each span's k_off in the region, one struct kvt_locate_entry per chunk
 * the span touches, in token order; the reply's value is the entries
 * written. BLOCKS asks for the memfds of up to KVT_BLOCKS_MAX ids; the
 * reply carries them with SCM_RIGHTS, in order, value = how many: the
 * first id not given is gone or not the caller's domain's.
 *
 * A client maps a memfd read-only, its whole size; struct kvt_block_tail
 * sits in its last page. The rows an entry names are valid while the
 * tail's gen still equals the entry's gen: the daemon changes gen before
 * it writes into, reuses or lets go of a block. So a client copies, waits
 * for the copy, then reads gen again, and fetches any rows whose block
 * changed in the ordinary way. */
#define KVT_BLOCKS_MAX      250          /* ids per BLOCKS request (SCM_MAX_FD 253) */
#define KVT_LOCATE_MAX      16384        /* entries per LOCATE (it runs on the loop) */
#define KVT_BLOCK_MAGIC     UINT64_C(0x31304b4c42545648)   /* "HVTBLK01" */

struct kvt_locate_entry {
    uint64_t block;          /* block id, 0: not in a shared block (fetch it) */
    uint64_t gen;            /* the block's gen when located */
    uint64_t k_at, v_at;     /* byte offsets in the block of the first token's
                              * K and V rows (rows follow contiguously) */
    uint32_t tok;            /* first token, from the span's token_start */
    uint32_t n;              /* tokens */
};
_Static_assert(sizeof(struct kvt_locate_entry) == 40, "locate entry is 40 bytes");

struct kvt_blocks_req {
    struct kvt_msg_hdr hdr;
    uint32_t n_ids;          /* 1..KVT_BLOCKS_MAX */
    uint32_t reserved;       /* 0 */
    /* n_ids x uint64_t block ids follow */
};
_Static_assert(sizeof(struct kvt_blocks_req) == 24, "blocks request is 24 bytes");

struct kvt_block_tail {      /* in the last page of a shared block's memfd */
    uint64_t magic;          /* KVT_BLOCK_MAGIC */
    uint64_t id;
    uint64_t gen;            /* even; changes before the data does */
    uint64_t data_bytes;     /* the chunk block's bytes, from offset 0 */
    uint32_t domain;
    uint32_t slot;           /* the daemon's own */
    uint32_t dead;           /* 1 once the daemon has let go of the block */
    uint32_t reserved;
};
_Static_assert(sizeof(struct kvt_block_tail) == 48, "block tail is 48 bytes");

/* A validated view of a data request; pointers alias the message buffer. */
struct kvt_data_view {
    const struct kvt_data_req *req;
    const char *name;                  /* not NUL-terminated; name_len bytes */
    const struct kvt_wire_key *keys;
    const struct kvt_wire_span *spans;
    const int32_t *tokens;             /* MATCH_PREFIX: n_tokens ids; else NULL */
};

/* Check the header of a received message of len bytes: magic, version, op
 * known and not a reply, hdr.len == len <= KVT_FRAME_MAX. Returns 0 or
 * -EPROTO/-EBADMSG/-EMSGSIZE with *why set to a static reason. */
int proto_check_hdr(const void *msg, size_t len, const char **why);

/* Validate an ATTACH request whose header passed proto_check_hdr. */
int proto_parse_attach(const void *msg, size_t len, const char **why);

/* Validate a data request (any op but ATTACH) whose header passed
 * proto_check_hdr: exact length, reserved fields zero, counts within
 * max_spans and the protocol bounds, name/keys/spans as the op requires.
 * Geometry and region offsets are the session's to check. */
int proto_parse_data(const void *msg, size_t len, uint32_t max_spans,
                     struct kvt_data_view *out, const char **why);

/* Validate a BLOCKS request whose header passed proto_check_hdr: *ids
 * aliases the message (8-byte aligned in a buffer that is). */
int proto_parse_blocks(const void *msg, size_t len, const uint64_t **ids, uint32_t *n,
                       const char **why);

/* Bytes of a data request with these counts, or 0 if it would exceed
 * KVT_FRAME_MAX. */
size_t proto_data_size(uint32_t name_len, uint32_t n_keys, uint32_t n_spans);

/* Bytes of the token ids that follow the spans of an op's request of
 * n_tokens tokens: PAD8(4 n_tokens) for MATCH_PREFIX, 0 for the others. */
size_t proto_tokens_bytes(uint16_t op, uint32_t n_tokens);

/* Bytes of one token's raw row (KVT_DATA_RAW) for this geometry. */
uint64_t proto_raw_row_bytes(uint32_t n_kv_heads, uint32_t head_dim, uint32_t outliers);

/* Fill a header. */
void proto_hdr(struct kvt_msg_hdr *h, uint16_t op, uint32_t len, uint32_t seq);

#endif
