/* test_bad_input.c - proves that kvtierd survives hostile and broken clients:
 * talking raw SOCK_SEQPACKET, every malformed message (short, bad magic or
 * version, lying length, unknown op, over max-frame, nonzero reserved fields),
 * every bad ATTACH (no fd, unsealed memfd, plain file, wrong size, over-long
 * name) and every bad data request (before ATTACH, layer out of range, buffer
 * outside the region, huge token counts, too many spans, over-long context
 * name) gets an error reply with a reason on a connection that stays usable;
 * fds smuggled in with any message are closed; a client that dies in the
 * middle of a 64 MiB store or fetch is cleaned up. Through the API the same
 * mistakes are -EINVAL with kvt_last_error() set, and batches over the
 * daemon's span and frame limits are split by the library. Afterwards a
 * normal client stores and fetches correctly, the daemon's fd count is back
 * to its baseline and nothing named kvtier is in /dev/shm. */
#include "tests/helpers.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "proto/proto.h"

#define LAYERS 4
#define HEADS 2
#define DIM 16
#define ROW (HEADS * DIM * 4)            /* one token's K (or V), f32 */
#define CHUNK 16
#define REGION (1u << 20)
#define MAX_SPANS 64                     /* the daemon's --max-spans */
#define MAX_FRAME (64u << 10)            /* the daemon's --max-frame */
#define MODEL "bad-input"
#define PAD8(n) (((size_t)(n) + 7) & ~(size_t)7)

static struct test_daemon d;
static int baseline_fds;                  /* daemon fds with no client */
static uint32_t seq;

/* ---- raw protocol ----------------------------------------------------------- */

/* The next reply, checked for framing; fails the test if none comes. */
static struct kvt_reply raw_reply(int sock)
{
    struct kvt_reply rep;
    int rc = test_raw_reply(sock, &rep, 30000);

    if (rc)
        fail_msg("no well-formed reply from kvtierd within 30 s: %s", strerror(-rc));
    return rep;
}

/* Send msg (with fds) and require a reply with status `want`; an error reply
 * must carry a reason, and a readable header's op and seq are echoed. */
#define EXPECT_STATUS(sock, msg, len, fds, n_fds, want) \
    expect_status(__LINE__, sock, msg, len, fds, n_fds, want)
static struct kvt_reply expect_status(int line, int sock, const void *msg, size_t len,
                                      const int *fds, int n_fds, int want)
{
    struct kvt_msg_hdr h = { 0 };

    if (test_raw_send(sock, msg, len, fds, n_fds))
        fail_msg("line %d: sendmsg of %zu bytes: %s", line, len, strerror(errno));
    struct kvt_reply rep = raw_reply(sock);
    if (rep.status != want)
        fail_msg("line %d: status %d (%s) \"%s\", want %d (%s)", line, rep.status,
                 kvt_strerror(rep.status), rep.reason, want, kvt_strerror(want));
    if (want != 0 && rep.reason[0] == '\0')
        fail_msg("line %d: error %d came without a reason", line, want);
    if (len >= sizeof(h) && len <= MAX_FRAME) {
        memcpy(&h, msg, sizeof(h));
        if (rep.hdr.seq != h.seq || rep.hdr.op != (h.op | KVT_OP_REPLY))
            fail_msg("line %d: reply op 0x%x seq %u for op 0x%x seq %u", line,
                     rep.hdr.op, rep.hdr.seq, h.op, h.seq);
    }
    return rep;
}

static int sealed_memfd(size_t bytes, int sealed)
{
    int fd = memfd_create("kvtier-test-region", MFD_CLOEXEC | MFD_ALLOW_SEALING);

    if (fd < 0 || ftruncate(fd, (off_t)bytes) < 0)
        return -1;
    if (sealed && fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) < 0)
        return -1;
    return fd;
}

static struct kvt_attach_req attach_req(const char *name, uint64_t region_bytes)
{
    struct kvt_attach_req a;
    size_t n = strlen(name);

    memset(&a, 0, sizeof(a));
    proto_hdr(&a.hdr, KVT_OP_ATTACH, sizeof(a), ++seq);
    a.n_layers = LAYERS;
    a.n_kv_heads = HEADS;
    a.head_dim = DIM;
    a.dtype = KVT_F32;
    a.chunk_tokens = CHUNK;
    a.name_len = (uint32_t)n;
    memcpy(a.name, name, n < sizeof(a.name) ? n : sizeof(a.name));
    a.region_bytes = region_bytes;
    return a;
}

/* A named data request: the fixed part, ctx padded to 8, n_spans spans of
 * 4 tokens (layer i % LAYERS, K at i * 1024, V at i * 1024 + 512). Lengths
 * are computed here, not by proto_data_size, so over-long names can be built.
 * Returns the message length; *spans points at the first span. */
static size_t data_req(uint8_t *buf, uint16_t op, const char *ctx, uint32_t n_spans,
                       struct kvt_wire_span **spans)
{
    struct kvt_data_req *r = (struct kvt_data_req *)buf;
    size_t name_len = strlen(ctx);
    size_t len = sizeof(*r) + PAD8(name_len) + (size_t)n_spans * sizeof(**spans);

    memset(buf, 0, len);
    proto_hdr(&r->hdr, op, (uint32_t)len, ++seq);
    r->addr = KVT_ADDR_NAMED;
    r->n_spans = n_spans;
    r->name_len = (uint32_t)name_len;
    memcpy(buf + sizeof(*r), ctx, name_len);
    struct kvt_wire_span *s = (void *)(buf + sizeof(*r) + PAD8(name_len));
    for (uint32_t i = 0; i < n_spans; i++)
        s[i] = (struct kvt_wire_span){ .layer = i % LAYERS, .token_start = 0,
                                       .n_tokens = 4, .k_off = (uint64_t)i * 1024,
                                       .v_off = (uint64_t)i * 1024 + 512 };
    if (spans)
        *spans = s;
    return len;
}

/* A raw client attached with a sealed region that the test maps too. */
struct raw_client {
    int sock;
    uint8_t *region;
};

static struct raw_client raw_attached(void)
{
    struct raw_client rc;
    int mfd = sealed_memfd(REGION, 1);

    assert_true(mfd >= 0);
    rc.sock = test_raw_connect(d.socket);
    assert_true(rc.sock >= 0);
    rc.region = mmap(NULL, REGION, PROT_READ | PROT_WRITE, MAP_SHARED, mfd, 0);
    assert_true(rc.region != MAP_FAILED);
    struct kvt_attach_req a = attach_req(MODEL, REGION);
    struct kvt_reply rep = EXPECT_STATUS(rc.sock, &a, sizeof(a), &mfd, 1, 0);
    assert_int_equal(rep.attach.chunk_tokens, CHUNK);
    assert_int_equal(rep.attach.max_spans, MAX_SPANS);
    assert_int_equal(rep.attach.max_frame, MAX_FRAME);
    close(mfd);
    return rc;
}

static void raw_close(struct raw_client *rc)
{
    munmap(rc->region, REGION);
    close(rc->sock);
}

/* ---- framing ------------------------------------------------------------------ */

static void malformed_messages_get_a_reason(void **state)
{
    (void)state;
    int sock = test_raw_connect(d.socket);
    assert_true(sock >= 0);
    struct kvt_attach_req a = attach_req(MODEL, REGION);
    struct kvt_attach_req bad;

    EXPECT_STATUS(sock, &a, 8, NULL, 0, -EBADMSG);         /* shorter than a header */
    bad = a;
    bad.hdr.magic = 0x12345678;
    EXPECT_STATUS(sock, &bad, sizeof(bad), NULL, 0, -EPROTO);
    bad = a;
    bad.hdr.version = KVT_PROTO_VERSION + 1;
    EXPECT_STATUS(sock, &bad, sizeof(bad), NULL, 0, -EPROTO);
    bad = a;
    bad.hdr.len = sizeof(bad) + 8;
    EXPECT_STATUS(sock, &bad, sizeof(bad), NULL, 0, -EBADMSG);
    bad.hdr.len = sizeof(bad.hdr);
    EXPECT_STATUS(sock, &bad, sizeof(bad), NULL, 0, -EBADMSG);
    bad = a;
    bad.hdr.op = 42;
    EXPECT_STATUS(sock, &bad, sizeof(bad), NULL, 0, -EOPNOTSUPP);
    bad.hdr.op = KVT_OP_STORE | KVT_OP_REPLY;              /* a reply as a request */
    EXPECT_STATUS(sock, &bad, sizeof(bad), NULL, 0, -EOPNOTSUPP);

    /* One packet over --max-frame, its header honest about the length. */
    size_t big = MAX_FRAME + 4096;
    uint8_t *msg = calloc(1, big);
    assert_non_null(msg);
    proto_hdr((struct kvt_msg_hdr *)msg, KVT_OP_STORE, (uint32_t)big, ++seq);
    EXPECT_STATUS(sock, msg, big, NULL, 0, -EMSGSIZE);
    free(msg);

    /* None of it changed anything: the connection still attaches. */
    int mfd = sealed_memfd(REGION, 1);
    a = attach_req(MODEL, REGION);
    EXPECT_STATUS(sock, &a, sizeof(a), &mfd, 1, 0);
    close(mfd);
    close(sock);
}

/* ---- ATTACH ------------------------------------------------------------------- */

static void bad_attach_is_refused(void **state)
{
    (void)state;
    uint8_t buf[256];
    /* Earlier tests' connections are gone before counting. */
    assert_int_equal(daemon_wait_fd_count(&d, baseline_fds), baseline_fds);
    int sock = test_raw_connect(d.socket);
    assert_true(sock >= 0);
    EXPECT_STATUS(sock, "junk", 4, NULL, 0, -EBADMSG);       /* session open now */
    int with_conn = daemon_fd_count(&d);
    assert_int_equal(with_conn, baseline_fds + 1);

    size_t len = data_req(buf, KVT_OP_LENGTH, "ctx", 0, NULL);
    EXPECT_STATUS(sock, buf, len, NULL, 0, -ENOTCONN);      /* before ATTACH */
    len = data_req(buf, KVT_OP_FETCH, "ctx", 1, NULL);
    EXPECT_STATUS(sock, buf, len, NULL, 0, -ENOTCONN);

    struct kvt_attach_req a = attach_req(MODEL, REGION);
    EXPECT_STATUS(sock, &a, sizeof(a), NULL, 0, -EINVAL);   /* no fd */

    int unsealed = sealed_memfd(REGION, 0);
    assert_true(unsealed >= 0);
    a = attach_req(MODEL, REGION);
    EXPECT_STATUS(sock, &a, sizeof(a), &unsealed, 1, -EINVAL);
    /* Sealed against growing only: still shrinkable, still refused. */
    assert_int_equal(fcntl(unsealed, F_ADD_SEALS, F_SEAL_GROW), 0);
    a = attach_req(MODEL, REGION);
    EXPECT_STATUS(sock, &a, sizeof(a), &unsealed, 1, -EINVAL);
    close(unsealed);

    char path[400];
    snprintf(path, sizeof(path), "%s/plain-file", d.dir);
    int plain = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    assert_true(plain >= 0);
    assert_int_equal(ftruncate(plain, REGION), 0);
    a = attach_req(MODEL, REGION);
    EXPECT_STATUS(sock, &a, sizeof(a), &plain, 1, -EINVAL);
    close(plain);
    unlink(path);

    int mfd = sealed_memfd(REGION, 1);
    assert_true(mfd >= 0);
    a = attach_req(MODEL, REGION * 2);                       /* claims more than it is */
    EXPECT_STATUS(sock, &a, sizeof(a), &mfd, 1, -EINVAL);
    a = attach_req(MODEL, REGION / 2);
    EXPECT_STATUS(sock, &a, sizeof(a), &mfd, 1, -EINVAL);

    char long_name[129];
    memset(long_name, 'm', 128);
    long_name[128] = '\0';
    a = attach_req(long_name, REGION);                       /* 128-byte model name */
    EXPECT_STATUS(sock, &a, sizeof(a), &mfd, 1, -EINVAL);
    a = attach_req(MODEL, REGION);
    a.n_layers = KVT_GEOM_MAX + 1;
    EXPECT_STATUS(sock, &a, sizeof(a), &mfd, 1, -EINVAL);
    a = attach_req(MODEL, REGION);
    a.chunk_tokens = 1u << 20;
    EXPECT_STATUS(sock, &a, sizeof(a), &mfd, 1, -EINVAL);

    /* Every fd above was closed by the daemon, refused or not. */
    assert_int_equal(daemon_fd_count(&d), with_conn);

    /* The same connection attaches properly, once. */
    a = attach_req(MODEL, REGION);
    EXPECT_STATUS(sock, &a, sizeof(a), &mfd, 1, 0);
    a = attach_req(MODEL, REGION);
    EXPECT_STATUS(sock, &a, sizeof(a), &mfd, 1, -EALREADY);
    assert_int_equal(daemon_fd_count(&d), with_conn);
    close(mfd);
    close(sock);

    /* Through the API: an over-long model name never reaches the daemon. */
    kvt_model m = test_model(long_name, LAYERS, HEADS, DIM, KVT_F32, CHUNK);
    kvt_client *c = NULL;
    CHECK_RC(kvt_connect(d.socket, &m, &c), -EINVAL);
    assert_null(c);
    m = test_model(MODEL, 0, HEADS, DIM, KVT_F32, CHUNK);
    CHECK_RC(kvt_connect(d.socket, &m, &c), -EINVAL);
}

/* ---- data requests ------------------------------------------------------------------ */

static void bad_data_requests_are_refused(void **state)
{
    (void)state;
    uint8_t buf[4096];
    struct kvt_wire_span *s;
    size_t len;
    struct raw_client rc = raw_attached();

    len = data_req(buf, KVT_OP_STORE, "ctx", 1, &s);
    s->layer = LAYERS;                                       /* wrong geometry */
    EXPECT_STATUS(rc.sock, buf, len, NULL, 0, -EINVAL);
    len = data_req(buf, KVT_OP_FETCH, "ctx", 1, &s);
    s->layer = UINT32_MAX;
    EXPECT_STATUS(rc.sock, buf, len, NULL, 0, -EINVAL);

    len = data_req(buf, KVT_OP_STORE, "ctx", 1, &s);
    s->k_off = REGION - 2 * ROW;                             /* 4 tokens: runs past the end */
    EXPECT_STATUS(rc.sock, buf, len, NULL, 0, -EFAULT);
    len = data_req(buf, KVT_OP_FETCH, "ctx", 1, &s);
    s->v_off = UINT64_MAX - 16;                              /* off + bytes would wrap */
    EXPECT_STATUS(rc.sock, buf, len, NULL, 0, -EFAULT);
    len = data_req(buf, KVT_OP_STORE, "ctx", 1, &s);
    s->k_off = REGION;
    EXPECT_STATUS(rc.sock, buf, len, NULL, 0, -EFAULT);

    len = data_req(buf, KVT_OP_STORE, "ctx", 1, &s);
    s->n_tokens = 0xFFFFFFF0u;                               /* n_tokens x row overflows 32 bits */
    s->k_off = s->v_off = 0;
    EXPECT_STATUS(rc.sock, buf, len, NULL, 0, -EFAULT);
    len = data_req(buf, KVT_OP_FETCH, "ctx", 1, &s);
    s->token_start = 64;
    s->n_tokens = 0xFFFFFFF0u;
    EXPECT_STATUS(rc.sock, buf, len, NULL, 0, -EOVERFLOW);

    len = data_req(buf, KVT_OP_STORE, "ctx", MAX_SPANS + 1, NULL);
    EXPECT_STATUS(rc.sock, buf, len, NULL, 0, -E2BIG);

    char long_ctx[KVT_CTX_MAX + 2];
    memset(long_ctx, 'c', KVT_CTX_MAX + 1);                  /* 256 bytes */
    long_ctx[KVT_CTX_MAX + 1] = '\0';
    len = data_req(buf, KVT_OP_STORE, long_ctx, 1, NULL);
    EXPECT_STATUS(rc.sock, buf, len, NULL, 0, -EINVAL);

    len = data_req(buf, KVT_OP_STORE, "ctx", 2, &s);
    ((struct kvt_data_req *)buf)->reserved0[0] = 1;
    EXPECT_STATUS(rc.sock, buf, len, NULL, 0, -EBADMSG);
    len = data_req(buf, KVT_OP_STORE, "ctx", 2, &s);
    ((struct kvt_data_req *)buf)->flags = KVT_DATA_RAW;   /* fetch only */
    EXPECT_STATUS(rc.sock, buf, len, NULL, 0, -EINVAL);
    len = data_req(buf, KVT_OP_FETCH, "ctx", 2, &s);
    ((struct kvt_data_req *)buf)->flags = KVT_DATA_RAW;
    ((struct kvt_data_req *)buf)->raw_outliers = KVT_RAW_OUTLIERS_MAX + 1;
    EXPECT_STATUS(rc.sock, buf, len, NULL, 0, -EINVAL);
    len = data_req(buf, KVT_OP_STORE, "ctx", 2, &s);
    ((struct kvt_data_req *)buf)->reserved1 = 7;
    EXPECT_STATUS(rc.sock, buf, len, NULL, 0, -EBADMSG);
    len = data_req(buf, KVT_OP_STORE, "ctx", 2, &s);
    s[1].reserved = 1;
    EXPECT_STATUS(rc.sock, buf, len, NULL, 0, -EBADMSG);

    /* Token-addressed with a key count that does not fit n_tokens. */
    len = data_req(buf, KVT_OP_MATCH, "", 0, NULL);
    struct kvt_data_req *r = (struct kvt_data_req *)buf;
    r->addr = KVT_ADDR_TOKENS;
    r->n_keys = 1;
    r->n_tokens = 3 * CHUNK;
    len += sizeof(struct kvt_wire_key);
    r->hdr.len = (uint32_t)len;
    memset(buf + sizeof(*r), 0xab, sizeof(struct kvt_wire_key));
    EXPECT_STATUS(rc.sock, buf, len, NULL, 0, -EINVAL);

    /* Nothing above stored anything, and the connection still works. */
    len = data_req(buf, KVT_OP_FETCH, "ctx", 1, NULL);
    EXPECT_STATUS(rc.sock, buf, len, NULL, 0, -ENOENT);
    test_fill(rc.region, KVT_F32, 5, 2, 0, 4, HEADS, DIM);
    test_fill(rc.region + 512, KVT_F32, 6, 2, 0, 4, HEADS, DIM);
    len = data_req(buf, KVT_OP_STORE, "ctx", 1, &s);
    s->layer = 2;
    EXPECT_STATUS(rc.sock, buf, len, NULL, 0, 0);
    len = data_req(buf, KVT_OP_FETCH, "ctx", 1, &s);
    s->layer = 2;
    s->k_off = 8192;
    s->v_off = 16384;
    EXPECT_STATUS(rc.sock, buf, len, NULL, 0, 0);
    assert_int_equal(test_check(rc.region + 8192, KVT_F32, 5, 2, 0, 4, HEADS, DIM, 0), 0);
    assert_int_equal(test_check(rc.region + 16384, KVT_F32, 6, 2, 0, 4, HEADS, DIM, 0), 0);
    raw_close(&rc);
}

/* The same mistakes through the API: refused with a reason, nothing sent. */
static void api_mistakes_are_einval_with_a_reason(void **state)
{
    (void)state;
    kvt_model m = test_model(MODEL, LAYERS, HEADS, DIM, KVT_F32, CHUNK);
    kvt_client *c;
    float k[8 * HEADS * DIM], v[8 * HEADS * DIM];
    char long_ctx[KVT_CTX_MAX + 2];

    memset(long_ctx, 'c', KVT_CTX_MAX + 1);
    long_ctx[KVT_CTX_MAX + 1] = '\0';
    test_fill(k, KVT_F32, 1, 0, 0, 8, HEADS, DIM);
    test_fill(v, KVT_F32, 2, 0, 0, 8, HEADS, DIM);
    CHECK_OK(kvt_connect(d.socket, &m, &c));

    /* A daemon-side error first, so a stale reason would show below. */
    CHECK_RC(kvt_fetch(c, "api-ctx", 0, 0, 8, k, v), -ENOENT);
    assert_true(kvt_last_error(c)[0] != '\0');
    char daemon_reason[KVT_REASON_MAX];
    snprintf(daemon_reason, sizeof(daemon_reason), "%s", kvt_last_error(c));

    CHECK_RC(kvt_store(c, "api-ctx", LAYERS, 0, 8, k, v), -EINVAL);
    assert_true(kvt_last_error(c)[0] != '\0');
    assert_string_not_equal(kvt_last_error(c), daemon_reason);
    CHECK_RC(kvt_fetch(c, "api-ctx", 1000, 0, 8, k, v), -EINVAL);
    CHECK_RC(kvt_store(c, long_ctx, 0, 0, 8, k, v), -EINVAL);
    assert_true(kvt_last_error(c)[0] != '\0');
    CHECK_RC(kvt_store(c, "", 0, 0, 8, k, v), -EINVAL);
    CHECK_RC(kvt_store(c, "api-ctx", 0, 0, 0, k, v), -EINVAL);
    CHECK_RC(kvt_store(c, "api-ctx", 0, 0xFFFFFFF0u, 0x20, k, v), -EOVERFLOW);
    assert_true(kvt_last_error(c)[0] != '\0');
    CHECK_RC(kvt_store(c, "api-ctx", 0, 0, 8, NULL, v), -EINVAL);
    uint32_t len;
    CHECK_RC(kvt_length(c, long_ctx, &len), -EINVAL);

    /* A success clears the reason. */
    CHECK_OK(kvt_store(c, "api-ctx", 0, 0, 8, k, v));
    assert_string_equal(kvt_last_error(c), "");
    kvt_disconnect(c);
}

/* Store n one-token spans (layers interleaved) in one call and fetch them
 * back in one call. */
static void many_spans_round_trip(const char *socket, uint32_t n)
{
    kvt_model m = test_model(MODEL, LAYERS, HEADS, DIM, KVT_F32, CHUNK);
    kvt_client *c;
    kvt_span *spans = calloc(n, sizeof(*spans));
    uint8_t *k = malloc((size_t)n * ROW), *v = malloc((size_t)n * ROW);
    uint8_t *k2 = malloc((size_t)n * ROW), *v2 = malloc((size_t)n * ROW);
    assert_true(spans && k && v && k2 && v2);

    CHECK_OK(kvt_connect(socket, &m, &c));
    for (uint32_t i = 0; i < n; i++) {
        uint32_t layer = i % LAYERS, tok = i / LAYERS;
        test_fill(k + (size_t)i * ROW, KVT_F32, 11, layer, tok, 1, HEADS, DIM);
        test_fill(v + (size_t)i * ROW, KVT_F32, 12, layer, tok, 1, HEADS, DIM);
        spans[i] = (kvt_span){ layer, tok, 1, k + (size_t)i * ROW, v + (size_t)i * ROW };
    }
    CHECK_OK(kvt_store_batch(c, "many-spans", spans, n));
    for (uint32_t i = 0; i < n; i++) {
        spans[i].k = k2 + (size_t)i * ROW;
        spans[i].v = v2 + (size_t)i * ROW;
    }
    CHECK_OK(kvt_fetch_batch(c, "many-spans", spans, n));
    for (uint32_t i = 0; i < n; i++) {
        uint32_t layer = i % LAYERS, tok = i / LAYERS;
        assert_int_equal(test_check(k2 + (size_t)i * ROW, KVT_F32, 11, layer, tok, 1,
                                    HEADS, DIM, 0), 0);
        assert_int_equal(test_check(v2 + (size_t)i * ROW, KVT_F32, 12, layer, tok, 1,
                                    HEADS, DIM, 0), 0);
    }
    uint32_t len = 0;
    CHECK_OK(kvt_length(c, "many-spans", &len));
    assert_int_equal(len, n / LAYERS);
    kvt_disconnect(c);
    free(spans);
    free(k);
    free(v);
    free(k2);
    free(v2);
}

/* Batches over the daemon's limits are the library's to split: more spans
 * than --max-spans, and, on a daemon with default limits, a batch of
 * max-spans spans whose single request (256 KiB) is larger than a default
 * socket send buffer. */
static struct test_daemon defaults;

static void api_splits_batches_over_the_limits(void **state)
{
    (void)state;
    many_spans_round_trip(d.socket, 1000);
    daemon_start(&defaults, NULL);
    many_spans_round_trip(defaults.socket, 8192);
    daemon_stop(&defaults);
}

static int cleanup_defaults(void **state)
{
    (void)state;
    daemon_cleanup(&defaults);
    return 0;
}

/* ---- fds --------------------------------------------------------------------------- */

static void smuggled_fds_are_closed(void **state)
{
    (void)state;
    uint8_t buf[256];
    int fds[8];
    assert_int_equal(daemon_wait_fd_count(&d, baseline_fds), baseline_fds);
    struct raw_client rc = raw_attached();
    int with_conn = daemon_fd_count(&d);
    assert_int_equal(with_conn, baseline_fds + 1);

    for (int i = 0; i < 8; i++) {
        fds[i] = open("/dev/null", O_RDONLY | O_CLOEXEC);
        assert_true(fds[i] >= 0);
    }
    size_t len = data_req(buf, KVT_OP_LENGTH, "ctx", 0, NULL);
    EXPECT_STATUS(rc.sock, buf, len, fds, 3, 0);              /* a good request */
    assert_int_equal(daemon_fd_count(&d), with_conn);
    len = data_req(buf, KVT_OP_FETCH, "absent", 1, NULL);
    EXPECT_STATUS(rc.sock, buf, len, fds, 1, -ENOENT);
    assert_int_equal(daemon_fd_count(&d), with_conn);
    len = data_req(buf, KVT_OP_LENGTH, "ctx", 0, NULL);
    EXPECT_STATUS(rc.sock, buf, len, fds, 8, 0);              /* more than the daemon takes */
    assert_int_equal(daemon_fd_count(&d), with_conn);
    ((struct kvt_msg_hdr *)buf)->magic = 0;
    EXPECT_STATUS(rc.sock, buf, len, fds, 2, -EPROTO);
    assert_int_equal(daemon_fd_count(&d), with_conn);
    EXPECT_STATUS(rc.sock, buf, 4, fds, 2, -EBADMSG);
    assert_int_equal(daemon_fd_count(&d), with_conn);
    struct kvt_attach_req a = attach_req(MODEL, REGION);
    EXPECT_STATUS(rc.sock, &a, sizeof(a), fds, 4, -EALREADY);
    assert_int_equal(daemon_fd_count(&d), with_conn);

    for (int i = 0; i < 8; i++)
        close(fds[i]);
    raw_close(&rc);
}

/* ---- clients that die ------------------------------------------------------------------ */

#define BIG_REGION (64u << 20)

/* Child: attach with a 64 MiB region, send one STORE or FETCH covering all of
 * it, and exit without waiting for the reply. */
static int big_request_then_die(void *arg)
{
    uint16_t op = *(const uint16_t *)arg;
    struct kvt_reply rep;
    uint8_t buf[256];
    struct kvt_wire_span *s;
    int mfd = sealed_memfd(BIG_REGION, 1);
    int sock = test_raw_connect(d.socket);

    struct timeval timeout = { .tv_sec = 30 };
    if (mfd < 0 || sock < 0 ||
        setsockopt(sock, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout)) < 0)
        return 10;
    uint8_t *region = mmap(NULL, BIG_REGION, PROT_READ | PROT_WRITE, MAP_SHARED, mfd, 0);
    if (region == MAP_FAILED)
        return 11;
    memset(region, 0x3c, BIG_REGION);                  /* f32 0.0115: real pages */
    struct kvt_attach_req a = attach_req(MODEL, BIG_REGION);
    if (test_raw_send(sock, &a, sizeof(a), &mfd, 1) ||
        recv(sock, &rep, sizeof(rep), 0) != sizeof(rep) || rep.status != 0)
        return 12;
    /* LAYERS spans, each a K and a V block of BIG_REGION / LAYERS / 2. */
    const uint64_t block = BIG_REGION / LAYERS / 2;
    size_t len = data_req(buf, op, "dying", LAYERS, &s);
    for (uint32_t l = 0; l < LAYERS; l++) {
        s[l].layer = l;
        s[l].n_tokens = (uint32_t)(block / ROW);
        s[l].k_off = 2 * l * block;
        s[l].v_off = 2 * l * block + block;
    }
    return test_raw_send(sock, buf, len, NULL, 0) ? 13 : 0;
}

static void client_dying_mid_request_is_cleaned_up(void **state)
{
    (void)state;
    uint16_t store = KVT_OP_STORE, fetch = KVT_OP_FETCH;

    assert_int_equal(test_in_child(big_request_then_die, &store), 0);
    assert_int_equal(test_in_child(big_request_then_die, &fetch), 0);
    assert_int_equal(test_in_child(big_request_then_die, &store), 0);
    assert_int_equal(daemon_wait_fd_count(&d, baseline_fds), baseline_fds);
    assert_int_equal(waitpid(d.pid, NULL, WNOHANG), 0);       /* still running */
}

/* ---- afterwards ------------------------------------------------------------------------ */

static void daemon_still_serves_normal_clients(void **state)
{
    (void)state;
    enum { T = 100 };
    kvt_model m = test_model(MODEL, LAYERS, HEADS, DIM, KVT_F16, CHUNK);
    kvt_client *c;
    uint16_t k[T * HEADS * DIM], v[T * HEADS * DIM];

    assert_int_equal(waitpid(d.pid, NULL, WNOHANG), 0);
    CHECK_OK(kvt_connect(d.socket, &m, &c));
    for (uint32_t l = 0; l < LAYERS; l++) {
        test_fill(k, KVT_F16, 21, l, 0, T, HEADS, DIM);
        test_fill(v, KVT_F16, 22, l, 0, T, HEADS, DIM);
        CHECK_OK(kvt_store(c, "after-all", l, 0, T, k, v));
    }
    uint32_t len = 0;
    CHECK_OK(kvt_length(c, "after-all", &len));
    assert_int_equal(len, T);
    for (uint32_t l = 0; l < LAYERS; l++) {
        memset(k, 0, sizeof(k));
        memset(v, 0, sizeof(v));
        CHECK_OK(kvt_fetch(c, "after-all", l, 0, T, k, v));
        assert_int_equal(test_check(k, KVT_F16, 21, l, 0, T, HEADS, DIM, 0), 0);
        assert_int_equal(test_check(v, KVT_F16, 22, l, 0, T, HEADS, DIM, 0), 0);
    }
    kvt_disconnect(c);

    assert_int_equal(daemon_wait_fd_count(&d, baseline_fds), baseline_fds);
    assert_int_equal(shm_kvtier_files(), 0);
}

static int start_daemon(void **state)
{
    (void)state;
    daemon_start(&d, "--max-spans", "64", "--max-frame", "64K", NULL);
    baseline_fds = daemon_idle_fd_count(&d);
    assert_true(baseline_fds > 0);
    return 0;
}

static int stop_daemon(void **state)
{
    (void)state;
    daemon_stop(&d);
    daemon_cleanup(&d);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(malformed_messages_get_a_reason),
        cmocka_unit_test(bad_attach_is_refused),
        cmocka_unit_test(bad_data_requests_are_refused),
        cmocka_unit_test(api_mistakes_are_einval_with_a_reason),
        cmocka_unit_test_teardown(api_splits_batches_over_the_limits, cleanup_defaults),
        cmocka_unit_test(smuggled_fds_are_closed),
        cmocka_unit_test(client_dying_mid_request_is_cleaned_up),
        cmocka_unit_test(daemon_still_serves_normal_clients),
    };
    return cmocka_run_group_tests(tests, start_daemon, stop_daemon);
}
