/* kvtier.c - libkvtier: connection, reconnect, and the public API calls. */
#include "client/kvtier.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "client/batch.h"
#include "client/copier.h"
#include "client/region.h"
#include "proto/prefix.h"
#include "proto/proto.h"

#define DEFAULT_SOCKET        "/run/kvtier/kvtier.sock"
#define DEFAULT_SPIN_US       50      /* see receive_reply */
#define MAX_SPIN_US           10000
/* Staging for non-shared buffers is taken from the region per request; a
 * bound keeps one huge batch from pinning the whole region and keeps the
 * copies cache-friendly enough to overlap with the daemon's work. */
#define STAGE_MAX_BYTES       (8u << 20)

struct kvt_client {
    char *socket_path;
    char model_name[KVT_NAME_MAX + 1];
    kvt_model model;                 /* .name points at model_name */
    size_t row_bytes;                /* one token's K (or V) in client dtype */
    int fd;                          /* -1 while disconnected */
    uint32_t seq;
    struct kvt_region region;        /* survives reconnects */
    struct kvt_attach_info info;
    uint32_t outliers;               /* the attach reply's (KVT_OUTLIERS_KNOWN | n) */
    void *msg;                       /* request buffer, grown on demand */
    size_t msg_cap;
    size_t send_max;                 /* largest message the socket can send */
    char last_error[KVT_REASON_MAX];
    uint64_t spin_ns;                /* poll this long for a reply, then sleep */
    bool resend;                     /* call_begin lost the connection */
    struct copier *copier;           /* copy path helpers, made on first need */
    bool copier_tried;
};

static size_t dtype_bytes(kvt_dtype t)
{
    return t == KVT_F32 ? 4 : 2;
}

const char *kvt_strerror(int err)
{
    switch (err) {
    case 0:             return "Success";
    case -ENOENT:       return "Not found: the data is absent (never stored, dropped or evicted), or no daemon socket";
    case -EINVAL:       return "Invalid argument: the request breaks the API's limits";
    case -ECONNREFUSED: return "Connection refused: kvtierd is not running on that socket";
    case -EPROTO:       return "Protocol error: the daemon speaks another protocol version";
    case -EBADMSG:      return "Malformed message";
    case -EMSGSIZE:     return "Message larger than the daemon accepts";
    case -E2BIG:        return "Too many spans or tokens in one request";
    case -EOVERFLOW:    return "Token range or buffer size overflows";
    case -EFAULT:       return "Buffer outside the shared memory region";
    case -ENOSPC:       return "The cache is full and nothing can be evicted";
    case -EDQUOT:       return "Quota of this sharing domain exceeded";
    case -ENOMEM:       return "Out of memory (or shared memory region too small)";
    case -EOPNOTSUPP:   return "Operation not supported by this daemon";
    case -EACCES:       return "Permission denied";
    case -EUSERS:       return "The daemon has too many clients";
    case -EAGAIN:       return "The daemon is busy; try again";
    case -ESHUTDOWN:    return "The daemon is shutting down";
    case -ECONNRESET:   return "Connection to kvtierd lost";
    }
    if (err < 0) {
        const char *s = strerrordesc_np(-err);
        if (s)
            return s;
    }
    return "Unknown error";
}

/* Why this thread's last kvt_connect failed: it has no handle to hold the
 * reason, so kvt_last_error(NULL) gives it. */
static __thread char connect_error[512];

const char *kvt_last_error(const kvt_client *c)
{
    return c ? c->last_error : connect_error;
}

/* kvt_connect failed with rc: say why in words that name the socket, as
 * -ENOENT's own sentence speaks of absent data. `why`, when not empty, is
 * the library's own reason (a region size it cannot have). */
static void connect_failed(const kvt_client *c, const char *path, int rc, const char *why)
{
    if (why && *why)
        snprintf(connect_error, sizeof(connect_error), "%s", why);
    else if (c && c->last_error[0])
        snprintf(connect_error, sizeof(connect_error), "%s", c->last_error);
    else if (rc == -ENOENT)
        snprintf(connect_error, sizeof(connect_error),
                 "no kvtierd socket at %s (is kvtierd running? `make run` serves "
                 "var/kvtier.sock in its tree)", path);
    else if (rc == -ECONNREFUSED)
        snprintf(connect_error, sizeof(connect_error),
                 "kvtierd is not accepting connections on %s (not running, or stopping)", path);
    else if (rc == -EPROTOTYPE)
        snprintf(connect_error, sizeof(connect_error),
                 "%s is not kvtierd's data socket (the admin socket?)", path);
    else if (rc == -EINVAL && !c)
        snprintf(connect_error, sizeof(connect_error),
                 "bad model: name 1..127 bytes, layers, heads and head_dim 1..1024, a known dtype");
    else
        snprintf(connect_error, sizeof(connect_error), "cannot connect to %s: %s", path,
                 kvt_strerror(rc));
}

/* Refuse a call without asking the daemon; kvt_last_error() then gives our
 * reason, as it gives the daemon's for its refusals (and never a stale one
 * from an earlier call). */
static int refuse(kvt_client *c, int rc, const char *why)
{
    snprintf(c->last_error, sizeof(c->last_error), "%s", why);
    return rc;
}

uint32_t kvt_chunk_tokens(const kvt_client *c)
{
    return c ? c->info.chunk_tokens : 0;
}

/* ---- transport ------------------------------------------------------------ */

static bool connection_lost(int rc)
{
    return rc == -EPIPE || rc == -ECONNRESET || rc == -ENOTCONN ||
           rc == -ECONNABORTED || rc == -EBADF;
}

static int send_with_fd(int sock, const void *buf, size_t len, int fd)
{
    struct iovec iov = { .iov_base = (void *)buf, .iov_len = len };
    union {
        struct cmsghdr align;
        char buf[CMSG_SPACE(sizeof(int))];
    } ctl;
    struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };

    if (fd >= 0) {
        memset(&ctl, 0, sizeof(ctl));
        mh.msg_control = ctl.buf;
        mh.msg_controllen = sizeof(ctl.buf);
        struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
        cm->cmsg_level = SOL_SOCKET;
        cm->cmsg_type = SCM_RIGHTS;
        cm->cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(cm), &fd, sizeof(int));
    }
    ssize_t n;
    do
        n = sendmsg(sock, &mh, MSG_NOSIGNAL);
    while (n < 0 && errno == EINTR);
    if (n < 0)
        return -errno;
    return (size_t)n == len ? 0 : -EMSGSIZE;
}

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Receive the reply. A small call is answered in ~20 us, less than it
 * takes to put this thread to sleep and wake it again on a busy or virtual
 * machine, so the reply is polled for spin_ns first (the caller is blocked
 * in the call either way) and only then waited for. */
static ssize_t receive_reply(kvt_client *c, struct kvt_reply *rep)
{
    uint64_t deadline = c->spin_ns ? now_ns() + c->spin_ns : 0;
    int flags = MSG_TRUNC | (deadline ? MSG_DONTWAIT : 0);

    for (;;) {
        ssize_t n = recv(c->fd, rep, sizeof(*rep), flags);
        if (n >= 0)
            return n;
        if (errno == EAGAIN && (flags & MSG_DONTWAIT)) {
            if (now_ns() >= deadline)
                flags &= ~MSG_DONTWAIT;
        } else if (errno != EINTR) {
            return -errno;
        }
    }
}

/* Send a request; its reply is collected by await_reply. */
static int send_request(kvt_client *c, void *msg, size_t len, int pass_fd)
{
    struct kvt_msg_hdr *h = msg;

    h->seq = ++c->seq;
    return send_with_fd(c->fd, msg, len, pass_fd);
}

/* Wait for the reply to the request `msg` that was sent last. Connection
 * loss is returned as such so the caller can reconnect; everything else is
 * the daemon's answer. */
static int await_reply(kvt_client *c, const void *msg, struct kvt_reply *rep)
{
    const struct kvt_msg_hdr *h = msg;
    ssize_t n = receive_reply(c, rep);
    if (n < 0)
        return (int)n;
    if (n == 0)
        return -ECONNRESET;
    if ((size_t)n != sizeof(*rep) || rep->hdr.magic != KVT_PROTO_MAGIC ||
        rep->hdr.len != sizeof(*rep) || rep->hdr.op != (h->op | KVT_OP_REPLY) ||
        rep->hdr.seq != h->seq || rep->status > 0)
        return -EPROTO;
    rep->reason[sizeof(rep->reason) - 1] = '\0';
    snprintf(c->last_error, sizeof(c->last_error), "%s", rep->reason);
    return rep->status;
}

static int transact(kvt_client *c, void *msg, size_t len, int pass_fd,
                    struct kvt_reply *rep)
{
    int rc = send_request(c, msg, len, pass_fd);
    return rc ? rc : await_reply(c, msg, rep);
}

static void drop_connection(kvt_client *c)
{
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
}

static int attach(kvt_client *c)
{
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    struct kvt_attach_req req;
    struct kvt_reply rep;
    int rc;

    if (strlen(c->socket_path) >= sizeof(sa.sun_path))
        return -ENAMETOOLONG;
    strcpy(sa.sun_path, c->socket_path);
    c->fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    if (c->fd < 0)
        return -errno;
    /* The kernel refuses (EMSGSIZE) a SEQPACKET message larger than the
     * socket's send buffer less 32 bytes, and the default buffer (about
     * 208 KiB) is smaller than a frame of max-spans spans. Ask for room for
     * the largest frame and keep every request within what we got. */
    int want = KVT_FRAME_MAX + 4096, got = 0;
    socklen_t got_len = sizeof(got);
    setsockopt(c->fd, SOL_SOCKET, SO_SNDBUF, &want, sizeof(want));
    if (getsockopt(c->fd, SOL_SOCKET, SO_SNDBUF, &got, &got_len) == 0 && got > 4096)
        c->send_max = (size_t)got - 64;
    if (connect(c->fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        rc = -errno;
        goto err;
    }

    memset(&req, 0, sizeof(req));
    proto_hdr(&req.hdr, KVT_OP_ATTACH, sizeof(req), 0);
    req.n_layers = c->model.n_layers;
    req.n_kv_heads = c->model.n_kv_heads;
    req.head_dim = c->model.head_dim;
    req.dtype = c->model.dtype;
    req.chunk_tokens = c->model.chunk_tokens;
    req.name_len = (uint32_t)strlen(c->model_name);
    req.region_bytes = c->region.bytes;
    memcpy(req.name, c->model_name, req.name_len);
    rc = transact(c, &req, sizeof(req), c->region.fd, &rep);
    if (rc == -ECONNRESET || rc == -EPIPE)
        rc = -ECONNREFUSED;      /* closed before answering: not serving */
    if (rc)
        goto err;
    c->info = rep.attach;
    c->outliers = rep.outliers;
    return 0;
err:
    drop_connection(c);
    return rc;
}

/* One request with transparent reconnect: if the daemon went away (restart),
 * attach again with the same region and resend once. Requests are idempotent
 * (stores overwrite, fetches read), so a resend is safe.
 *
 * call_begin sends and call_end collects the reply, so that the copy path
 * can stage its next request while the daemon works on this one; `msg`
 * must stay as it is until call_end returns. One call at a time. */
static int call_begin(kvt_client *c, void *msg, size_t len)
{
    int rc = 0;

    c->last_error[0] = '\0';
    c->resend = false;
    if (c->fd < 0 && (rc = attach(c)))
        return rc;
    rc = send_request(c, msg, len, -1);
    if (connection_lost(rc)) {
        drop_connection(c);
        c->resend = true;
        return 0;
    }
    return rc;
}

static int call_end(kvt_client *c, void *msg, size_t len, struct kvt_reply *rep)
{
    int rc = c->resend ? -ECONNRESET : await_reply(c, msg, rep);

    c->resend = false;
    if (!connection_lost(rc) && rc != -EPROTO)
        return rc;
    drop_connection(c);
    if ((rc = attach(c)))
        return rc;
    rc = transact(c, msg, len, -1, rep);
    if (connection_lost(rc) || rc == -EPROTO)
        drop_connection(c);
    return rc;
}

static int call(kvt_client *c, void *msg, size_t len, struct kvt_reply *rep)
{
    int rc = call_begin(c, msg, len);
    return rc ? rc : call_end(c, msg, len, rep);
}

/* ---- connection ------------------------------------------------------------ */

static int check_model(const kvt_model *m)
{
    if (!m || !m->name)
        return -EINVAL;
    size_t n = strnlen(m->name, KVT_NAME_MAX + 1);
    if (n < 1 || n > KVT_NAME_MAX)
        return -EINVAL;
    if (m->n_layers < 1 || m->n_layers > KVT_GEOM_MAX ||
        m->n_kv_heads < 1 || m->n_kv_heads > KVT_GEOM_MAX ||
        m->head_dim < 1 || m->head_dim > KVT_GEOM_MAX)
        return -EINVAL;
    if ((unsigned)m->dtype > KVT_BF16)
        return -EINVAL;
    return 0;
}

static uint64_t spin_ns_wanted(void)
{
    const char *s = getenv("KVTIER_SPIN_US");
    char *end;

    if (!s || !*s)
        return DEFAULT_SPIN_US * 1000;
    unsigned long v = strtoul(s, &end, 10);
    if (*end || v > MAX_SPIN_US)
        return DEFAULT_SPIN_US * 1000;
    return (uint64_t)v * 1000;
}

int kvt_connect_region(const char *socket_path, const kvt_model *model,
                       size_t region_bytes, kvt_client **out)
{
    const char *why = "";
    kvt_client *c = NULL;
    size_t bytes;
    int rc;

    connect_error[0] = '\0';
    if (!socket_path)
        socket_path = getenv("KVTIER_SOCKET");
    if (!socket_path || !*socket_path)
        socket_path = DEFAULT_SOCKET;
    if (!out) {
        snprintf(connect_error, sizeof(connect_error), "out is NULL");
        return -EINVAL;
    }
    *out = NULL;
    rc = check_model(model);
    if (rc)
        goto err;
    rc = region_size(region_bytes, &bytes, &why);
    if (rc)
        goto err;

    c = calloc(1, sizeof(*c));
    if (!c) {
        rc = -ENOMEM;
        goto err;
    }
    c->fd = -1;
    c->region.fd = -1;
    c->spin_ns = spin_ns_wanted();
    c->socket_path = strdup(socket_path);
    if (!c->socket_path) {
        rc = -ENOMEM;
        goto err;
    }
    c->model = *model;
    strcpy(c->model_name, model->name);
    c->model.name = c->model_name;
    c->row_bytes = (size_t)model->n_kv_heads * model->head_dim *
                   dtype_bytes(model->dtype);
    rc = region_create(&c->region, bytes);
    if (rc) {
        why = "cannot create the shared memory region (memfd) of that size";
        goto err;
    }
    rc = attach(c);
    if (rc)
        goto err;               /* the daemon's reason, if it gave one, is in c */
    *out = c;
    return 0;
err:
    connect_failed(c, socket_path, rc, why);
    kvt_disconnect(c);
    return rc;
}

int kvt_connect(const char *socket_path, const kvt_model *model, kvt_client **out)
{
    return kvt_connect_region(socket_path, model, 0, out);
}

void kvt_disconnect(kvt_client *c)
{
    if (!c)
        return;
    drop_connection(c);
    copier_destroy(c->copier);
    region_destroy(&c->region);
    free(c->msg);
    free(c->socket_path);
    free(c);
}

int kvt_region(const kvt_client *c, void **base, size_t *bytes)
{
    if (!c || !base || !bytes)
        return -EINVAL;
    *base = c->region.base;
    *bytes = c->region.bytes;
    return 0;
}

void *kvt_alloc(kvt_client *c, size_t bytes)
{
    return c ? region_alloc(&c->region, bytes) : NULL;
}

void kvt_free(kvt_client *c, void *p)
{
    if (c)
        region_free(&c->region, p);
}

/* ---- requests ---------------------------------------------------------------- */

static void *msg_buffer(kvt_client *c, size_t len)
{
    if (len > c->msg_cap) {
        void *p = realloc(c->msg, len);
        if (!p)
            return NULL;
        c->msg = p;
        c->msg_cap = len;
    }
    memset(c->msg, 0, len);
    return c->msg;
}

/* What a request addresses: a named context or the keys of a token call. */
struct target {
    uint8_t addr;
    const char *name;
    uint32_t name_len;
    const struct kvt_wire_key *keys;
    uint32_t n_keys;
    uint32_t n_tokens;       /* tokens of the call (token addressing) */
    const int32_t *tokens;   /* MATCH_PREFIX: the ids, sent after the keys */
};

static int target_named(kvt_client *c, const char *ctx, struct target *t)
{
    c->last_error[0] = '\0';
    if (!ctx)
        return refuse(c, -EINVAL, "context name is NULL");
    size_t n = strnlen(ctx, KVT_CTX_MAX + 1);
    if (n < 1 || n > KVT_CTX_MAX)
        return refuse(c, -EINVAL, "context name must be 1..255 bytes");
    *t = (struct target){ .addr = KVT_ADDR_NAMED, .name = ctx,
                          .name_len = (uint32_t)n };
    return 0;
}

/* Build the fixed part and name/keys of a request; returns where spans go. */
static struct kvt_wire_span *build_request(kvt_client *c, uint16_t op,
                                           const struct target *t,
                                           uint32_t n_spans, size_t *len)
{
    *len = proto_data_size(t->name_len, t->n_keys, n_spans);
    size_t tokens_bytes = proto_tokens_bytes(op, t->n_tokens);
    if (*len == 0 || tokens_bytes > KVT_FRAME_MAX - *len) {
        *len = 0;
        return NULL;
    }
    size_t tokens_at = *len;
    *len += tokens_bytes;
    struct kvt_data_req *r = msg_buffer(c, *len);
    if (!r)
        return NULL;
    proto_hdr(&r->hdr, op, (uint32_t)*len, 0);
    r->addr = t->addr;
    r->n_spans = n_spans;
    r->name_len = t->name_len;
    r->n_keys = t->n_keys;
    r->n_tokens = t->n_tokens;
    uint8_t *p = (uint8_t *)(r + 1);
    /* A named target has no keys and a token target no name (NULL): memcpy
     * from NULL is undefined even for 0 bytes. */
    if (t->name_len)
        memcpy(p, t->name, t->name_len);
    p += (t->name_len + 7) & ~7u;
    if (t->n_keys)
        memcpy(p, t->keys, (size_t)t->n_keys * sizeof(*t->keys));
    if (tokens_bytes)
        memcpy((uint8_t *)r + tokens_at, t->tokens, (size_t)t->n_tokens * sizeof(int32_t));
    return (struct kvt_wire_span *)(p + (size_t)t->n_keys * sizeof(*t->keys));
}

static int simple_op(kvt_client *c, uint16_t op, const struct target *t,
                     uint64_t *value)
{
    struct kvt_reply rep;
    size_t len;

    if (!build_request(c, op, t, 0, &len))
        return len ? -ENOMEM : -E2BIG;
    int rc = call(c, c->msg, len, &rep);
    if (rc == 0 && value)
        *value = rep.value;
    return rc;
}

static int check_spans(kvt_client *c, const struct target *t,
                       const kvt_span *spans, size_t n_spans)
{
    if (!spans || n_spans == 0)
        return refuse(c, -EINVAL, "no spans");
    for (size_t i = 0; i < n_spans; i++) {
        const kvt_span *s = &spans[i];
        if (s->layer >= c->model.n_layers)
            return refuse(c, -EINVAL, "span layer out of range for this model");
        if (s->n_tokens == 0)
            return refuse(c, -EINVAL, "a span has zero tokens");
        if (!s->k || !s->v)
            return refuse(c, -EINVAL, "a span has a NULL k or v buffer");
        if ((uint64_t)s->token_start + s->n_tokens > UINT32_MAX)
            return refuse(c, -EOVERFLOW, "span token range overflows");
        if (t->addr == KVT_ADDR_TOKENS &&
            (uint64_t)s->token_start + s->n_tokens > t->n_tokens)
            return refuse(c, -EINVAL, "span reaches past the tokens of the call");
    }
    return 0;
}

/* How many pieces one request may carry: the daemon's span limit and
 * what fits in a frame beside the name or keys. Returns 0 or -E2BIG. */
static int max_pieces(kvt_client *c, const struct target *t, size_t n_spans, size_t *out)
{
    size_t frame_max = c->info.max_frame ? c->info.max_frame : KVT_FRAME_MAX;
    if (c->send_max && frame_max > c->send_max)
        frame_max = c->send_max;
    size_t fixed = proto_data_size(t->name_len, t->n_keys, 0);
    if (fixed == 0 || fixed + sizeof(struct kvt_wire_span) > frame_max)
        return refuse(c, -E2BIG, "too many tokens to leave room for a span in one request");
    size_t n = (frame_max - fixed) / sizeof(struct kvt_wire_span);
    if (c->info.max_spans && n > c->info.max_spans)
        n = c->info.max_spans;
    if (n == 0)
        return -E2BIG;
    *out = n < n_spans ? n : n_spans;
    return 0;
}

/* Plan the batch at `at`. The first stage of a call takes at most half of
 * the largest free block, so that the next one fits beside it while the
 * first is in flight (`busy`); when it does not, -EBUSY says to plan again
 * once the stage in flight is released. */
static int plan_next(kvt_client *c, const kvt_span *spans, size_t n_spans, size_t max_batch,
                     struct batch_cursor *at, struct batch *b, bool busy)
{
    size_t cap = region_largest_free(&c->region);
    if (!busy && at->span == 0 && at->done == 0)
        cap /= 2;               /* the first stage leaves room for a second */
    if (cap > STAGE_MAX_BYTES)
        cap = STAGE_MAX_BYTES;
    int rc = batch_plan(&c->region, c->row_bytes, spans, n_spans, max_batch, cap, at, b);
    if (rc == -ENOMEM && !busy && cap < region_largest_free(&c->region))
        rc = batch_plan(&c->region, c->row_bytes, spans, n_spans, max_batch,
                        region_largest_free(&c->region), at, b);
    if (rc == -ENOMEM)
        return busy ? -EBUSY : refuse(c, -ENOMEM, "shared memory region too full to stage one token");
    return rc;
}

/* Send batch b: build its request and start the call. */
static int send_batch(kvt_client *c, uint16_t op, const struct target *t,
                      const kvt_span *spans, const struct batch *b, size_t *len)
{
    struct kvt_wire_span *ws = build_request(c, op, t, (uint32_t)b->n, len);
    if (!ws)
        return *len ? -ENOMEM : -E2BIG;
    for (size_t i = 0; i < b->n; i++) {
        const struct batch_piece *p = &b->pieces[i];
        const kvt_span *s = &spans[p->span];
        ws[i] = (struct kvt_wire_span){ .layer = s->layer,
                                        .token_start = s->token_start + p->tok,
                                        .n_tokens = p->n,
                                        .k_off = p->k_off, .v_off = p->v_off };
    }
    return call_begin(c, c->msg, *len);
}

static struct copier *copy_helpers(kvt_client *c)
{
    if (!c->copier_tried) {
        unsigned n = copier_threads_wanted();
        c->copier_tried = true;
        if (n > 1 && copier_create(n - 1, &c->copier))
            c->copier = NULL;       /* copy alone: slower, still correct */
    }
    return c->copier;
}

/* Store or fetch spans. Spans whose buffers live in the region go by offset;
 * the others are staged through region blocks, in as many requests as the
 * staging bound and the daemon's span limit require. Two stages take turns
 * so the copying overlaps the daemon's work: a store copies batch i+1 in
 * while the daemon converts batch i; a fetch copies batch i out while the
 * daemon fills batch i+1. */
static int spans_op(kvt_client *c, uint16_t op, const struct target *t,
                    const kvt_span *spans, size_t n_spans)
{
    const bool store = op == KVT_OP_STORE;
    struct batch b[2] = { 0 };
    struct batch_cursor at = { 0, 0 };
    struct kvt_reply rep;
    size_t max_batch, len = 0;
    int rc = check_spans(c, t, spans, n_spans);
    if (!rc)
        rc = max_pieces(c, t, n_spans, &max_batch);
    if (rc)
        return rc;
    for (int i = 0; i < 2; i++) {
        b[i].pieces = calloc(max_batch, sizeof(*b[i].pieces));
        b[i].parts = calloc(2 * max_batch, sizeof(*b[i].parts));
        if (!b[i].pieces || !b[i].parts) {
            rc = -ENOMEM;
            goto out;
        }
    }
    struct batch *now = &b[0], *next = &b[1];

    if ((rc = plan_next(c, spans, n_spans, max_batch, &at, now, false)))
        goto out;
    /* The first batch is the largest: small calls never start helpers. */
    struct copier *cp = now->staged_bytes >= COPIER_MIN_BYTES ? copy_helpers(c) : NULL;
    if (store)
        batch_copy(now, &c->region, c->row_bytes, spans, true, cp);
    if ((rc = send_batch(c, op, t, spans, now, &len)))
        goto out;
    for (;;) {
        bool more = at.span < n_spans, staged_next = false;
        if (store && more) {
            rc = plan_next(c, spans, n_spans, max_batch, &at, next, true);
            if (rc && rc != -EBUSY)
                goto out;
            staged_next = rc == 0;
            if (staged_next)
                batch_copy(next, &c->region, c->row_bytes, spans, true, cp);
        }
        rc = call_end(c, c->msg, len, &rep);
        if (rc)
            goto out;
        if (!store && more) {
            rc = plan_next(c, spans, n_spans, max_batch, &at, next, true);
            if (rc && rc != -EBUSY)
                goto out;
            staged_next = rc == 0;
            if (staged_next && (rc = send_batch(c, op, t, spans, next, &len)))
                goto out;
        }
        if (!store)
            batch_copy(now, &c->region, c->row_bytes, spans, false, cp);
        batch_release(&c->region, now);
        if (!more)
            break;
        if (!staged_next) {             /* the region had room for one stage */
            if ((rc = plan_next(c, spans, n_spans, max_batch, &at, next, false)))
                goto out;
            if (store)
                batch_copy(next, &c->region, c->row_bytes, spans, true, cp);
        }
        if ((store || !staged_next) && (rc = send_batch(c, op, t, spans, next, &len)))
            goto out;
        struct batch *done = now;
        now = next;
        next = done;
    }
out:
    for (int i = 0; i < 2; i++) {
        batch_release(&c->region, &b[i]);
        free(b[i].pieces);
        free(b[i].parts);
    }
    return rc;
}

/* ---- named contexts ------------------------------------------------------------ */

int kvt_store(kvt_client *c, const char *ctx, uint32_t layer,
              uint32_t token_start, uint32_t n_tokens, const void *k, const void *v)
{
    kvt_span s = { layer, token_start, n_tokens, (void *)k, (void *)v };
    return kvt_store_batch(c, ctx, &s, 1);
}

int kvt_fetch(kvt_client *c, const char *ctx, uint32_t layer,
              uint32_t token_start, uint32_t n_tokens, void *k, void *v)
{
    kvt_span s = { layer, token_start, n_tokens, k, v };
    return kvt_fetch_batch(c, ctx, &s, 1);
}

int kvt_store_batch(kvt_client *c, const char *ctx, const kvt_span *spans, size_t n_spans)
{
    struct target t;
    int rc = c ? target_named(c, ctx, &t) : -EINVAL;
    return rc ? rc : spans_op(c, KVT_OP_STORE, &t, spans, n_spans);
}

int kvt_fetch_batch(kvt_client *c, const char *ctx, const kvt_span *spans, size_t n_spans)
{
    struct target t;
    int rc = c ? target_named(c, ctx, &t) : -EINVAL;
    return rc ? rc : spans_op(c, KVT_OP_FETCH, &t, spans, n_spans);
}

int kvt_length(kvt_client *c, const char *ctx, uint32_t *n_tokens)
{
    struct target t;
    uint64_t v = 0;
    int rc = c && n_tokens ? target_named(c, ctx, &t) : -EINVAL;
    if (rc)
        return rc;
    rc = simple_op(c, KVT_OP_LENGTH, &t, &v);
    if (rc == 0)
        *n_tokens = (uint32_t)v;
    return rc;
}

int kvt_drop(kvt_client *c, const char *ctx)
{
    struct target t;
    int rc = c ? target_named(c, ctx, &t) : -EINVAL;
    return rc ? rc : simple_op(c, KVT_OP_DROP, &t, NULL);
}

int kvt_sync(kvt_client *c)
{
    struct target t = { .addr = KVT_ADDR_NAMED };
    return c ? simple_op(c, KVT_OP_SYNC, &t, NULL) : -EINVAL;
}

/* ---- token-addressed prefixes ---------------------------------------------------- */

/* Keys depend on the daemon's chunk size, known once attached; a daemon
 * restarted with another default chunk size changes it, so the keys are
 * computed after making sure the handle is attached. */
static int token_target(kvt_client *c, const int32_t *tokens, uint32_t n_tokens,
                        struct target *t, struct kvt_wire_key **keys)
{
    if (!c)
        return -EINVAL;
    c->last_error[0] = '\0';
    if (!tokens || n_tokens == 0)
        return refuse(c, -EINVAL, "no tokens");
    if (c->fd < 0) {
        int rc = attach(c);
        if (rc)
            return rc;
    }
    uint32_t n_keys = prefix_n_keys(n_tokens, c->info.chunk_tokens);
    if (proto_data_size(0, n_keys, 0) == 0)
        return refuse(c, -E2BIG, "too many tokens for one request");
    *keys = malloc((size_t)n_keys * sizeof(**keys));
    if (!*keys)
        return -ENOMEM;
    int rc = prefix_keys(tokens, n_tokens, c->info.chunk_tokens, *keys);
    if (rc) {
        free(*keys);
        *keys = NULL;
        return rc;
    }
    *t = (struct target){ .addr = KVT_ADDR_TOKENS, .keys = *keys,
                          .n_keys = n_keys, .n_tokens = n_tokens };
    return 0;
}

static int tokens_spans_op(kvt_client *c, uint16_t op, const int32_t *tokens,
                           uint32_t n_tokens, const kvt_span *spans, size_t n_spans)
{
    struct target t;
    struct kvt_wire_key *keys = NULL;
    int rc = token_target(c, tokens, n_tokens, &t, &keys);
    if (rc == 0)
        rc = spans_op(c, op, &t, spans, n_spans);
    free(keys);
    return rc;
}

int kvt_store_tokens(kvt_client *c, const int32_t *tokens, uint32_t n_tokens,
                     const kvt_span *spans, size_t n_spans)
{
    return tokens_spans_op(c, KVT_OP_STORE, tokens, n_tokens, spans, n_spans);
}

int kvt_fetch_tokens(kvt_client *c, const int32_t *tokens, uint32_t n_tokens,
                     const kvt_span *spans, size_t n_spans)
{
    return tokens_spans_op(c, KVT_OP_FETCH, tokens, n_tokens, spans, n_spans);
}

int kvt_raw_outliers(const kvt_client *c)
{
    if (!c)
        return -EINVAL;
    if (c->info.quant)
        return -EOPNOTSUPP;
    if (!(c->outliers & KVT_OUTLIERS_KNOWN))
        return 4;                    /* a daemon that does not say: the default */
    uint32_t n = c->outliers & ~KVT_OUTLIERS_KNOWN;
    return (int)(n > KVT_RAW_OUTLIERS_MAX ? KVT_RAW_OUTLIERS_MAX : n);
}

size_t kvt_raw_row_bytes(const kvt_client *c, uint32_t outliers)
{
    if (!c || outliers > KVT_RAW_OUTLIERS_MAX)
        return 0;
    return (size_t)proto_raw_row_bytes(c->model.n_kv_heads, c->model.head_dim, outliers);
}

/* Raw rows are not in the client's dtype, so there is nothing to stage
 * them through: every buffer must already lie in the region. */
int kvt_fetch_tokens_raw(kvt_client *c, const int32_t *tokens, uint32_t n_tokens,
                         const kvt_span *spans, uint32_t n_spans, uint32_t outliers)
{
    struct target t;
    struct kvt_wire_key *keys = NULL;
    struct kvt_reply rep;
    size_t len;

    if (!c)
        return -EINVAL;
    if (outliers > KVT_RAW_OUTLIERS_MAX)
        return refuse(c, -EINVAL, "raw outliers must be 0..16");
    const size_t row = kvt_raw_row_bytes(c, outliers);
    int rc = token_target(c, tokens, n_tokens, &t, &keys);
    if (rc)
        return rc;
    rc = check_spans(c, &t, spans, n_spans);
    struct kvt_wire_span *w = rc ? NULL : build_request(c, KVT_OP_FETCH, &t, n_spans, &len);
    if (!rc && !w)
        rc = len ? -ENOMEM : -E2BIG;
    for (uint32_t i = 0; i < n_spans && !rc; i++) {
        const kvt_span *s = &spans[i];
        size_t bytes = (size_t)s->n_tokens * row;
        w[i] = (struct kvt_wire_span){ .layer = s->layer, .token_start = s->token_start,
                                       .n_tokens = s->n_tokens };
        if (!region_contains(&c->region, s->k, bytes, &w[i].k_off) ||
            !region_contains(&c->region, s->v, bytes, &w[i].v_off))
            rc = refuse(c, -EINVAL, "raw fetch buffers must lie in the client's region (kvt_alloc)");
    }
    if (!rc) {
        struct kvt_data_req *r = (struct kvt_data_req *)c->msg;
        r->flags = KVT_DATA_RAW;
        r->raw_outliers = (uint8_t)outliers;
        rc = call(c, c->msg, len, &rep);
    }
    free(keys);
    return rc;
}

static int match_op(kvt_client *c, uint16_t op, const int32_t *tokens,
                    uint32_t n_tokens, uint32_t *n_cached)
{
    struct target t;
    struct kvt_wire_key *keys = NULL;
    uint64_t v = 0;

    if (!n_cached)
        return -EINVAL;
    int rc = token_target(c, tokens, n_tokens, &t, &keys);
    if (rc == 0) {
        t.tokens = tokens;
        rc = simple_op(c, op, &t, &v);
    }
    free(keys);
    if (rc == 0)
        *n_cached = (uint32_t)v;
    return rc;
}

int kvt_match_tokens(kvt_client *c, const int32_t *tokens, uint32_t n_tokens,
                     uint32_t *n_cached)
{
    return match_op(c, KVT_OP_MATCH, tokens, n_tokens, n_cached);
}

int kvt_match_prefix(kvt_client *c, const int32_t *tokens, uint32_t n_tokens,
                     uint32_t *n_cached)
{
    int rc = match_op(c, KVT_OP_MATCH_PREFIX, tokens, n_tokens, n_cached);
    /* A daemon from before MATCH_PREFIX: whole chunks are still a true
     * answer, only a shorter one. */
    if (rc == -EOPNOTSUPP)
        rc = match_op(c, KVT_OP_MATCH, tokens, n_tokens, n_cached);
    return rc;
}

int kvt_client_model(const kvt_client *c, kvt_model *out)
{
    if (!c || !out)
        return -EINVAL;
    *out = c->model;
    return 0;
}

/* ---- shared hot blocks ---------------------------------------------------- */

static uint64_t located_chunks(const kvt_span *s, uint32_t C)
{
    return ((uint64_t)s->token_start + s->n_tokens - 1) / C - s->token_start / C + 1;
}

int kvt_locate_tokens(kvt_client *c, const int32_t *tokens, uint32_t n_tokens,
                      const kvt_span *spans, size_t n_spans, kvt_located *out,
                      size_t max_out, size_t *n_out)
{
    struct target t;
    struct kvt_wire_key *keys = NULL;
    struct kvt_reply rep;
    uint64_t total = 0;
    size_t len;

    if (!c || !n_out)
        return -EINVAL;
    int rc = token_target(c, tokens, n_tokens, &t, &keys);
    if (rc)
        return rc;
    const uint32_t C = c->info.chunk_tokens;
    if (!spans || n_spans == 0)
        rc = refuse(c, -EINVAL, "no spans");
    else if (n_spans > c->info.max_spans)
        rc = refuse(c, -E2BIG, "more spans than the daemon takes in one request");
    for (size_t i = 0; i < n_spans && !rc; i++) {
        if (spans[i].layer >= c->model.n_layers || spans[i].n_tokens == 0 ||
            (uint64_t)spans[i].token_start + spans[i].n_tokens > n_tokens)
            rc = refuse(c, -EINVAL, "span outside the model's layers or the call's tokens");
        else
            total += located_chunks(&spans[i], C);
    }
    if (!rc && total > KVT_LOCATE_MAX)
        rc = refuse(c, -E2BIG, "locate covers more than 16384 chunks: split it");
    if (!rc && total > max_out) {
        *n_out = (size_t)total;
        rc = refuse(c, -ENOSPC, "more located entries than room for them");
    }
    uint8_t *table = NULL;
    if (!rc) {
        table = region_alloc(&c->region, (size_t)total * sizeof(struct kvt_locate_entry));
        if (!table)
            rc = refuse(c, -ENOMEM, "no room in the shared region for the locate table");
    }
    struct kvt_wire_span *w = rc ? NULL : build_request(c, KVT_OP_LOCATE, &t, (uint32_t)n_spans, &len);
    if (!rc && !w)
        rc = len ? -ENOMEM : -E2BIG;
    uint64_t at = 0;
    for (size_t i = 0; i < n_spans && !rc; i++) {
        w[i] = (struct kvt_wire_span){ .layer = spans[i].layer,
                                       .token_start = spans[i].token_start,
                                       .n_tokens = spans[i].n_tokens };
        region_contains(&c->region, table + at * sizeof(struct kvt_locate_entry), 0, &w[i].k_off);
        at += located_chunks(&spans[i], C);
    }
    if (!rc)
        rc = call(c, c->msg, len, &rep);
    if (!rc && rep.value != total)
        rc = refuse(c, -EPROTO, "the daemon located another number of chunks than asked");
    if (!rc) {
        at = 0;
        for (size_t i = 0; i < n_spans; i++) {
            for (uint64_t j = located_chunks(&spans[i], C); j > 0; j--, at++) {
                struct kvt_locate_entry e;
                memcpy(&e, table + at * sizeof(e), sizeof(e));
                out[at] = (kvt_located){ .block = e.block, .gen = e.gen, .k_at = e.k_at,
                                         .v_at = e.v_at, .span = (uint32_t)i, .tok = e.tok,
                                         .n = e.n };
            }
        }
        *n_out = (size_t)total;
    }
    if (table)
        region_free(&c->region, table);
    free(keys);
    return rc;
}

/* Map one fd the daemon gave for id: read-only, its tail checked; at
 * (MAP_FIXED) if not NULL, where the mapping must then be want bytes. */
static int map_block(int fd, uint64_t id, void *at, size_t want, kvt_block *b)
{
    struct stat st;
    const size_t page = 4096;

    if (fstat(fd, &st) < 0)
        return -errno;
    if (st.st_size < (off_t)page || st.st_size % page)
        return -EPROTO;
    if (at && (size_t)st.st_size != want)
        return -EXDEV;
    void *p = mmap(at, (size_t)st.st_size, PROT_READ, MAP_SHARED | (at ? MAP_FIXED : 0), fd, 0);
    if (p == MAP_FAILED)
        return -errno;
    const struct kvt_block_tail *t = (const void *)((const char *)p + st.st_size - page);
    if (t->magic != KVT_BLOCK_MAGIC || t->id != id ||
        t->data_bytes > (uint64_t)st.st_size - page) {
        if (at)
            mmap(p, (size_t)st.st_size, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
        else
            munmap(p, (size_t)st.st_size);
        return -EPROTO;
    }
    *b = (kvt_block){ .id = id, .base = p, .map_bytes = (size_t)st.st_size,
                      .data_bytes = (size_t)t->data_bytes };
    return 0;
}

static int map_blocks(kvt_client *c, const uint64_t *ids, size_t n, kvt_block *out,
                      void **run)
{
    union {
        char buf[CMSG_SPACE(sizeof(int) * KVT_BLOCKS_MAX)];
        struct cmsghdr align;
    } ctl;
    struct kvt_reply rep;
    int fds[KVT_BLOCKS_MAX], n_fds = 0, rc;

    if (!c || !ids || !out || n == 0 || n > KVT_BLOCKS_MAX)
        return c ? refuse(c, -EINVAL, "map 1..250 blocks at a time") : -EINVAL;
    c->last_error[0] = '\0';
    if (c->fd < 0 && (rc = attach(c)))
        return rc;
    size_t len = sizeof(struct kvt_blocks_req) + n * sizeof(uint64_t);
    struct kvt_blocks_req *r = msg_buffer(c, len);
    if (!r)
        return -ENOMEM;
    proto_hdr(&r->hdr, KVT_OP_BLOCKS, (uint32_t)len, 0);
    r->n_ids = (uint32_t)n;
    memcpy(r + 1, ids, n * sizeof(uint64_t));
    rc = send_request(c, r, len, -1);
    if (rc) {
        if (connection_lost(rc))
            drop_connection(c);
        return rc;
    }

    struct iovec iov = { .iov_base = &rep, .iov_len = sizeof(rep) };
    struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.buf,
                         .msg_controllen = sizeof(ctl.buf) };
    ssize_t got;
    do
        got = recvmsg(c->fd, &mh, MSG_CMSG_CLOEXEC);
    while (got < 0 && errno == EINTR);
    for (struct cmsghdr *cm = got >= 0 ? CMSG_FIRSTHDR(&mh) : NULL; cm; cm = CMSG_NXTHDR(&mh, cm)) {
        if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS)
            continue;
        size_t k = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        for (size_t i = 0; i < k; i++) {
            int fd;
            memcpy(&fd, CMSG_DATA(cm) + i * sizeof(int), sizeof(int));
            if (n_fds < KVT_BLOCKS_MAX)
                fds[n_fds++] = fd;
            else
                close(fd);
        }
    }
    if (got <= 0) {
        rc = got < 0 ? -errno : -ECONNRESET;
        drop_connection(c);
    } else if ((size_t)got != sizeof(rep) || rep.hdr.magic != KVT_PROTO_MAGIC ||
               rep.hdr.op != (KVT_OP_BLOCKS | KVT_OP_REPLY) || rep.hdr.seq != r->hdr.seq ||
               rep.status > 0 || (mh.msg_flags & MSG_CTRUNC) ||
               (rep.status == 0 && (rep.value != (uint64_t)n_fds || rep.value > n))) {
        rc = -EPROTO;
        drop_connection(c);
    } else {
        rep.reason[sizeof(rep.reason) - 1] = '\0';
        snprintf(c->last_error, sizeof(c->last_error), "%s", rep.reason);
        rc = rep.status;
    }
    /* A run: one reservation, the blocks side by side in it (all of the
     * first one's size; the run stops before one of another size). */
    uint8_t *base = NULL;
    size_t size = 0;
    struct stat st;
    if (rc == 0 && run && n_fds) {
        if (fstat(fds[0], &st) < 0 || st.st_size <= 0) {
            rc = -EPROTO;
        } else {
            size = (size_t)st.st_size;
            void *p = mmap(NULL, size * (size_t)n_fds, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
            if (p == MAP_FAILED)
                rc = -errno;
            else
                base = p;
        }
    }
    int mapped = 0;
    for (int i = 0; i < n_fds; i++) {
        if (rc == 0) {
            rc = map_block(fds[i], ids[i], base ? base + (size_t)i * size : NULL, size, &out[i]);
            if (rc == 0)
                mapped++;
            else if (rc != -EXDEV)
                refuse(c, rc, "a shared block the daemon gave could not be mapped");
        }
        close(fds[i]);
    }
    if (rc == -EXDEV && mapped)
        rc = 0;                      /* the run ends where the size changes */
    if (base && mapped < n_fds)
        munmap(base + (size_t)mapped * size, (size_t)(n_fds - mapped) * size);
    if (rc) {
        for (int i = 0; i < mapped; i++)
            kvt_block_unmap(&out[i]);
        return rc;
    }
    if (run)
        *run = base;
    return mapped;
}

int kvt_block_map(kvt_client *c, const uint64_t *ids, size_t n, kvt_block *out)
{
    return map_blocks(c, ids, n, out, NULL);
}

int kvt_block_map_run(kvt_client *c, const uint64_t *ids, size_t n, kvt_block *out, void **base)
{
    if (!base)
        return c ? refuse(c, -EINVAL, "no place for the run's base") : -EINVAL;
    *base = NULL;
    return map_blocks(c, ids, n, out, base);
}

void kvt_block_unmap(kvt_block *b)
{
    if (b && b->base) {
        munmap((void *)b->base, b->map_bytes);
        b->base = NULL;
    }
}

static const struct kvt_block_tail *block_tail(const kvt_block *b)
{
    return (const void *)((const char *)b->base + b->map_bytes - 4096);
}

uint64_t kvt_block_gen(const kvt_block *b)
{
    return b && b->base ? __atomic_load_n(&block_tail(b)->gen, __ATOMIC_ACQUIRE) : 0;
}

int kvt_block_dead(const kvt_block *b)
{
    return !b || !b->base || __atomic_load_n(&block_tail(b)->dead, __ATOMIC_ACQUIRE) != 0;
}
