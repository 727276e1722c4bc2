/* make_corpus.c - writes the generated seed inputs of the fuzz targets into
 * DIR/<target>/ (make fuzz-corpus): well-formed request sequences for
 * fuzz_frames and fuzz_admin, and for fuzz_cold_records the records of a
 * real cold file written by cache/cold.c. Usage: make_corpus DIR */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include "cache/cold.h"
#include "cache/cold_format.h"
#include "proto/proto.h"
#include "tests/fuzz/fuzz_input.h"
#include "tests/fuzz/fuzz_util.h"

static const char *out_dir;

struct seed {
    uint8_t buf[1 << 16];
    size_t len;
};

static void add(struct seed *s, const void *p, size_t n)
{
    FUZZ_CHECK(s->len + n <= sizeof(s->buf), "seed too large");
    memcpy(s->buf + s->len, p, n);
    s->len += n;
}

static void write_seed(const char *target, const char *name, const struct seed *s)
{
    char path[512];

    snprintf(path, sizeof(path), "%s/%s", out_dir, target);
    mkdir(path, 0755);
    snprintf(path, sizeof(path), "%s/%s/%s", out_dir, target, name);
    FILE *f = fopen(path, "wb");
    FUZZ_CHECK(f && fwrite(s->buf, 1, s->len, f) == s->len && fclose(f) == 0, "%s: %s", path,
               strerror(errno));
}

/* ---- fuzz_frames --------------------------------------------------------- */

static void packet(struct seed *s, unsigned ctl, const void *pkt, size_t len, const void *fill)
{
    uint8_t c = (uint8_t)ctl, l[2] = { (uint8_t)len, (uint8_t)(len >> 8) };

    add(s, &c, 1);
    add(s, l, 2);
    if (len)
        add(s, pkt, len);
    if (ctl & FRAME_CTL_FILL)
        add(s, fill, FRAME_FILL_BYTES);
}

static void attach(struct seed *s, unsigned fd_kind, uint32_t dtype, uint64_t region_bytes,
                   const void *fill)
{
    struct kvt_attach_req a = { .n_layers = 2, .n_kv_heads = 2, .head_dim = 16, .dtype = dtype,
                                .chunk_tokens = 16, .name_len = 7, .region_bytes = region_bytes,
                                .name = "model-a" };

    proto_hdr(&a.hdr, KVT_OP_ATTACH, sizeof(a), 1);
    packet(s, fd_kind | (fill ? FRAME_CTL_FILL : 0), &a, sizeof(a), fill);
}

/* A named request: op, request flags and raw outliers (proto.h
 * KVT_DATA_RAW), context name, spans (layer, start, n, k_off, v_off). */
static void named_flags(struct seed *s, uint16_t op, uint32_t seq, uint8_t flags,
                        uint8_t outliers, const char *name, uint32_t n_spans,
                        const struct kvt_wire_span *spans)
{
    uint8_t buf[4096] = { 0 };
    struct kvt_data_req r = { .addr = KVT_ADDR_NAMED, .flags = flags, .raw_outliers = outliers,
                              .n_spans = n_spans, .name_len = (uint32_t)strlen(name) };
    size_t name_pad = (r.name_len + 7) & ~7u;
    size_t len = sizeof(r) + name_pad + n_spans * sizeof(*spans);

    proto_hdr(&r.hdr, op, (uint32_t)len, seq);
    memcpy(buf, &r, sizeof(r));
    memcpy(buf + sizeof(r), name, r.name_len);
    if (n_spans)
        memcpy(buf + sizeof(r) + name_pad, spans, n_spans * sizeof(*spans));
    packet(s, FRAME_FD_NONE, buf, len, NULL);
}

static void named(struct seed *s, uint16_t op, uint32_t seq, const char *name, uint32_t n_spans,
                  const struct kvt_wire_span *spans)
{
    named_flags(s, op, seq, 0, 0, name, n_spans, spans);
}

/* A named FETCH with the raw flag and O outliers. */
static void named_raw_fetch(struct seed *s, uint32_t seq, const char *name, uint8_t outliers,
                            uint32_t n_spans, const struct kvt_wire_span *spans)
{
    named_flags(s, KVT_OP_FETCH, seq, KVT_DATA_RAW, outliers, name, n_spans, spans);
}

static void tokens(struct seed *s, uint16_t op, uint32_t seq, uint32_t n_tokens,
                   uint32_t n_spans, const struct kvt_wire_span *spans)
{
    uint8_t buf[4096] = { 0 };
    uint32_t n_keys = (n_tokens + 15) / 16;
    struct kvt_data_req r = { .addr = KVT_ADDR_TOKENS, .n_spans = n_spans, .n_keys = n_keys,
                              .n_tokens = n_tokens };
    size_t len = sizeof(r) + n_keys * sizeof(struct kvt_wire_key) + n_spans * sizeof(*spans);

    proto_hdr(&r.hdr, op, (uint32_t)len, seq);
    memcpy(buf, &r, sizeof(r));
    for (uint32_t i = 0; i < n_keys; i++) {
        struct kvt_wire_key k = { .hi = 0x1234 + i, .lo = 0x5678 * (i + 1) };
        memcpy(buf + sizeof(r) + i * sizeof(k), &k, sizeof(k));
    }
    if (n_spans)
        memcpy(buf + sizeof(r) + n_keys * sizeof(struct kvt_wire_key), spans,
               n_spans * sizeof(*spans));
    packet(s, FRAME_FD_NONE, buf, len, NULL);
}

static void frames_seeds(void)
{
    /* f32 rows of 2 heads x 16 dims: 128 bytes a token. */
    const struct kvt_wire_span two_layers[2] = {
        { .layer = 0, .token_start = 0, .n_tokens = 20, .k_off = 0, .v_off = 4096 },
        { .layer = 1, .token_start = 0, .n_tokens = 20, .k_off = 8192, .v_off = 12288 },
    };
    const struct kvt_wire_span past_end = { .layer = 0, .token_start = 5, .n_tokens = 30,
                                            .k_off = 65536 - 100, .v_off = 0 };
    const struct kvt_wire_span big = { .layer = 0, .token_start = 0, .n_tokens = 4096,
                                       .k_off = 0, .v_off = 524288 };
    const float nan_fill[4] = { __builtin_nanf(""), __builtin_inff(), -__builtin_inff(), 1e38f };
    const uint8_t f16_fill[16] = { 0x00, 0x7c, 0x00, 0xfc, 0x01, 0x7e, 0xff, 0x7b,
                                   0x00, 0x80, 0x01, 0x00, 0x00, 0x3c, 0x00, 0xbc };
    struct seed s;
    uint8_t sync[sizeof(struct kvt_data_req)] = { 0 };
    struct kvt_data_req *sr = (void *)sync;

    s.len = 0;                 /* named context: store, fetch, length, drop, sync */
    attach(&s, FRAME_FD_REGION, 0, 65536, NULL);
    named(&s, KVT_OP_STORE, 2, "chat-1", 2, two_layers);
    named(&s, KVT_OP_FETCH, 3, "chat-1", 2, two_layers);
    named(&s, KVT_OP_LENGTH, 4, "chat-1", 0, NULL);
    named(&s, KVT_OP_DROP, 5, "chat-1", 0, NULL);
    named(&s, KVT_OP_FETCH, 6, "chat-1", 1, two_layers);
    proto_hdr(&sr->hdr, KVT_OP_SYNC, sizeof(sync), 7);
    packet(&s, FRAME_FD_NONE, sync, sizeof(sync), NULL);
    write_seed("fuzz_frames", "named_cycle", &s);

    s.len = 0;                 /* token-addressed: store, match, fetch */
    attach(&s, FRAME_FD_REGION, 1, 65536, NULL);
    tokens(&s, KVT_OP_STORE, 2, 20, 2, two_layers);
    tokens(&s, KVT_OP_MATCH, 3, 20, 0, NULL);
    tokens(&s, KVT_OP_FETCH, 4, 20, 1, two_layers);
    write_seed("fuzz_frames", "token_cycle", &s);

    s.len = 0;                 /* raw fetches: in range, at the bound, over it */
    attach(&s, FRAME_FD_REGION, 0, 65536, NULL);
    named(&s, KVT_OP_STORE, 2, "raw", 2, two_layers);
    named_raw_fetch(&s, 3, "raw", 4, 2, two_layers);
    named_raw_fetch(&s, 4, "raw", 16, 1, two_layers);
    named_raw_fetch(&s, 5, "raw", 17, 1, two_layers);
    write_seed("fuzz_frames", "raw_fetch", &s);

    s.len = 0;                 /* odd floats stored and read back, f32 and f16 */
    attach(&s, FRAME_FD_REGION, 0, 65536, nan_fill);
    named(&s, KVT_OP_STORE, 2, "nan", 2, two_layers);
    named(&s, KVT_OP_FETCH, 3, "nan", 2, two_layers);
    packet(&s, FRAME_FD_RECONNECT, NULL, 0, NULL);
    s.len -= 2;                /* a reconnect is a bare control byte */
    attach(&s, FRAME_FD_REGION, 1, 65536, f16_fill);
    named(&s, KVT_OP_STORE, 2, "half", 2, two_layers);
    named(&s, KVT_OP_FETCH, 3, "half", 2, two_layers);
    write_seed("fuzz_frames", "odd_floats", &s);

    s.len = 0;                 /* a request that goes to the workers */
    attach(&s, FRAME_FD_REGION, 1, 1u << 20, NULL);
    named(&s, KVT_OP_STORE, 2, "big", 1, &big);
    named(&s, KVT_OP_FETCH, 3, "big", 1, &big);
    write_seed("fuzz_frames", "workers", &s);

    s.len = 0;                 /* every kind of bad region fd, then a good one */
    attach(&s, FRAME_FD_NONE, 0, 65536, NULL);
    attach(&s, FRAME_FD_UNSEALED, 0, 65536, NULL);
    attach(&s, FRAME_FD_FILE, 0, 65536, NULL);
    attach(&s, FRAME_FD_PIPE, 0, 65536, NULL);
    attach(&s, FRAME_FD_WRITE_SEALED, 0, 65536, NULL);
    attach(&s, FRAME_FD_REGION, 0, 4096, NULL);          /* size mismatch */
    attach(&s, FRAME_FD_SEVERAL, 0, 65536, NULL);
    attach(&s, FRAME_FD_REGION, 0, 65536, NULL);          /* already attached */
    named(&s, KVT_OP_STORE, 9, "x", 1, &past_end);
    write_seed("fuzz_frames", "bad_fds", &s);

    s.len = 0;                 /* framing: short, unknown op, wrong len, oversized */
    uint8_t junk[5000] = { 0 };
    packet(&s, FRAME_FD_NONE, junk, 3, NULL);
    struct kvt_msg_hdr h;
    proto_hdr(&h, 99, sizeof(h), 5);
    packet(&s, FRAME_FD_NONE, &h, sizeof(h), NULL);
    proto_hdr(&h, KVT_OP_STORE | KVT_OP_REPLY, sizeof(h), 6);
    packet(&s, FRAME_FD_NONE, &h, sizeof(h), NULL);
    proto_hdr(&h, KVT_OP_FETCH, 100, 7);
    packet(&s, FRAME_FD_NONE, &h, sizeof(h), NULL);
    proto_hdr(&h, KVT_OP_FETCH, 0, 8);
    memcpy(junk, &h, sizeof(h));
    packet(&s, FRAME_CTL_FIX_HDR, junk, sizeof(junk), NULL);   /* > max-frame */
    named(&s, KVT_OP_LENGTH, 9, "before-attach", 0, NULL);
    packet(&s, FRAME_FD_NONE, junk, 0, NULL);             /* empty: a hang-up */
    named(&s, KVT_OP_LENGTH, 10, "after", 0, NULL);
    write_seed("fuzz_frames", "framing", &s);
}

/* ---- fuzz_admin ---------------------------------------------------------- */

static void admin_seeds(void)
{
    static const char *const seeds[][2] = {
        { "stats", "{\"cmd\":\"stats\"}\n{\"cmd\":\"health\"}\n" },
        { "lists", "{\"cmd\":\"namespaces\"}\n{\"cmd\":\"clients\"}\n{\"cmd\":\"contexts\"}\n" },
        { "contexts_ns", "{\"cmd\":\"contexts\",\"namespace\":\"0x1\"}\n"
                         "{\"cmd\":\"contexts\",\"namespace\":7}\n" },
        { "evict_context", "{\"cmd\":\"evict\",\"context\":\"ctx-a\"}\n"
                           "{\"cmd\":\"contexts\"}\n" },
        { "evict_tier", "{\"cmd\":\"evict\",\"tier\":\"hot\",\"progress\":true}\n"
                        "{\"cmd\":\"evict\",\"tier\":\"cold\"}\n"
                        "{\"cmd\":\"evict\",\"tier\":\"all\"}\n" },
        { "evict_ns", "{\"cmd\":\"evict\",\"namespace\":\"0x10\"}\n{\"cmd\":\"stats\"}\n" },
        { "flush", "{\"cmd\":\"flush\",\"progress\":true}\n" },
        { "config", "{\"cmd\":\"config\",\"op\":\"get\"}\n"
                    "{\"cmd\":\"config\",\"op\":\"get\",\"key\":\"hot-bytes\"}\n"
                    "{\"cmd\":\"config\",\"op\":\"set\",\"key\":\"hot-bytes\",\"value\":\"2M\"}\n"
                    "{\"cmd\":\"config\",\"op\":\"set\",\"key\":\"hot-quota\",\"value\":65536}\n"
                    "{\"cmd\":\"config\",\"op\":\"set\",\"key\":\"workers\",\"value\":3}\n" },
        { "bad", "{\"cmd\":\"nope\"}\n[1,2]\n{\"cmd\":5}\n\n{\"cmd\":\"evict\"}\n{" },
    };
    struct seed s;

    for (size_t i = 0; i < sizeof(seeds) / sizeof(seeds[0]); i++) {
        s.len = 0;
        add(&s, seeds[i][1], strlen(seeds[i][1]));
        write_seed("fuzz_admin", seeds[i][0], &s);
    }
}

/* ---- fuzz_cold_records ----------------------------------------------------- */

static uint8_t region[COLD_FUZZ_REGION_BYTES];

static void cold_seeds(void)
{
    char dir[] = "/tmp/kvtier-corpus.XXXXXX", path[64];
    static uint64_t present[KVT_CHUNK_MAX_TOKENS / 64];
    static uint8_t data[1 << 16];
    struct kvt_cold *cold;
    struct kvt_cold_config cfg = { .path = path, .bytes = COLD_FUZZ_FILE_BYTES,
                                   .region_bytes = COLD_FUZZ_REGION_BYTES, .force_pread = true };
    struct kvt_chunk_image img = { .present = present, .data = data };

    FUZZ_CHECK(mkdtemp(dir), "%s", strerror(errno));
    snprintf(path, sizeof(path), "%s/cold.kvt", dir);
    FUZZ_CHECK(cold_open(&cfg, &cold) == 0, "cold_open");
    /* int8, compressible: an LZ4 record with every token present. */
    img.key = (struct kvt_chunk_key){ .ns_id = 1, .obj_hi = 2, .obj_lo = 3, .domain = 1 };
    img.shape = (struct kvt_chunk_shape){ .tokens = 16, .heads = 2, .dim = 16,
                                          .elem = KVT_CHUNK_INT8 };
    present[0] = 0xffff;
    memset(data, 0x11, sizeof(data));
    FUZZ_CHECK(cold_put(cold, &img) == 0, "put");
    /* f16, incompressible: a raw record with a gap in its tokens. */
    img.key.layer = 1;
    img.shape.elem = 1;
    present[0] = 0xff0f;
    for (size_t i = 0; i < sizeof(data); i++)
        data[i] = (uint8_t)(i * 2654435761u >> 13);
    FUZZ_CHECK(cold_put(cold, &img) == 0, "put");
    /* A newer copy of the first key, then a sync (padding to a block). */
    img.key.layer = 0;
    img.shape.elem = KVT_CHUNK_INT8;
    present[0] = 0x00ff;
    FUZZ_CHECK(cold_put(cold, &img) == 0 && cold_sync(cold) == 0, "put, sync");
    /* A named context's first chunk, with its name record after it. */
    XXH128_hash_t h = XXH3_128bits("chat-1", 6);
    struct kvt_cold_name name = { .ns_id = 9, .obj_hi = h.high64, .obj_lo = h.low64,
                                  .domain = 1, .layers = 2, .heads = 2, .dim = 16,
                                  .chunk_tokens = 16, .model_len = 7, .name_len = 6,
                                  .model = "model-a", .name = "chat-1" };
    img.key = (struct kvt_chunk_key){ .ns_id = 9, .obj_hi = h.high64, .obj_lo = h.low64,
                                      .domain = 1 };
    FUZZ_CHECK(cold_put_named(cold, &img, &name) == 0, "put named");
    /* Another object and namespace, then tombstones for both. */
    img.key = (struct kvt_chunk_key){ .ns_id = 4, .obj_hi = 5, .obj_lo = 6, .domain = 2,
                                      .chunk_idx = 1 };
    img.shape = (struct kvt_chunk_shape){ .tokens = 70, .heads = 1, .dim = 8, .elem = 2 };
    present[0] = ~UINT64_C(0);
    present[1] = 0x3f;
    FUZZ_CHECK(cold_put(cold, &img) == 0, "put");
    img.key.ns_id = 8;
    FUZZ_CHECK(cold_put(cold, &img) == 0, "put");
    cold_drop_object(cold, 4, 5, 6);
    cold_drop_namespace(cold, 8);
    FUZZ_CHECK(cold_sync(cold) == 0, "sync");
    cold_close(cold);

    int fd = open(path, O_RDONLY | O_CLOEXEC);
    FUZZ_CHECK(fd >= 0 && pread(fd, region, sizeof(region), COLD_BLOCK) == sizeof(region),
               "%s", strerror(errno));
    close(fd);
    unlink(path);
    rmdir(dir);

    size_t log_len = sizeof(region);
    while (log_len > COLD_BLOCK && !region[log_len - 1])
        log_len--;
    const uint8_t *log = region + COLD_BLOCK;
    log_len -= COLD_BLOCK;

    static const struct { const char *name; uint8_t flags; } variants[] = {
        { "real_log", COLD_IN_FIX_SUMS },
        { "real_log_other_seed", 0 },                /* every checksum fails */
        { "real_log_put_reopen", COLD_IN_FIX_SUMS | COLD_IN_PUT_REOPEN },
        { "two_regions", COLD_IN_FIX_SUMS | COLD_IN_TWO_REGIONS },
        { "two_regions_r1_newer", COLD_IN_FIX_SUMS | COLD_IN_TWO_REGIONS | COLD_IN_R1_NEWER |
                                  COLD_IN_PUT_REOPEN },
        { "real_log_v1", COLD_IN_FIX_SUMS | COLD_IN_V1 | COLD_IN_PUT_REOPEN },
    };
    struct seed s;
    for (size_t i = 0; i < sizeof(variants) / sizeof(variants[0]); i++) {
        s.len = 0;
        add(&s, &variants[i].flags, 1);
        if (variants[i].flags & COLD_IN_TWO_REGIONS) {
            /* Region 0 gets the first records only, region 1 all of them. */
            uint16_t split = (uint16_t)(log_len / 2);
            uint8_t l[2] = { (uint8_t)split, (uint8_t)(split >> 8) };
            add(&s, l, 2);
            add(&s, log, split);
        }
        add(&s, log, log_len);
        write_seed("fuzz_cold_records", variants[i].name, &s);
    }
    /* A torn tail: the last record cut short. */
    s.len = 0;
    uint8_t flags = COLD_IN_FIX_SUMS;
    add(&s, &flags, 1);
    add(&s, log, log_len - 40);
    write_seed("fuzz_cold_records", "torn_tail", &s);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s CORPUS_DIR\n", argv[0]);
        return 2;
    }
    out_dir = argv[1];
    mkdir(out_dir, 0755);
    frames_seeds();
    admin_seeds();
    cold_seeds();
    return 0;
}
