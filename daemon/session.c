/* session.c - a client connection: attach, validate, dispatch, reply.
 *
 * A session has at most one request being served. Its fd is registered with
 * EPOLLONESHOT, so the loop hears from it again only after the reply is sent
 * (by the loop itself for small requests, by the last worker for large ones)
 * and the fd is re-armed. That one rule gives per-client ordering and keeps
 * the session, its buffer and its region alive while workers use them.
 */
#include "daemon/session.h"
#include "daemon/session_internal.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <unistd.h>

#include "daemon/log.h"

/* Below this many client bytes a store/fetch runs on the loop thread: a
 * hand-off to a worker costs more than the work (decode steps). */
#define INLINE_BYTES (256u << 10)
#define MATCH_INLINE_CHUNK 512u     /* see op_match */
/* Bound on chunk segments per request: the plan's memory stays small. */
#define MAX_SEGMENTS (1u << 20)
/* fetch_segment_tokens */
#define FETCH_SEGMENT_BYTES SIMD_STREAM_MIN_BYTES
/* The reason of a store refused by dp_stage. */
#define NONFINITE_REASON "stored values must be finite in int8 mode (NaN or Inf found)"

void session_rearm(struct kvt_session *s)
{
    struct epoll_event ev = { .events = EPOLLIN | EPOLLONESHOT, .data.ptr = &s->h };
    epoll_ctl(s->srv->epfd, EPOLL_CTL_MOD, s->fd, &ev);
}

void session_send_reply(struct kvt_session *s, uint16_t op, uint32_t seq, int status,
                        uint64_t value, const struct kvt_attach_info *info, const char *why)
{
    struct kvt_reply rep;

    memset(&rep, 0, sizeof(rep));
    proto_hdr(&rep.hdr, (uint16_t)(op | KVT_OP_REPLY), sizeof(rep), seq);
    rep.status = status;
    rep.value = value;
    if (info) {
        rep.attach = *info;
        if (!status && !info->quant)      /* int8 */
            rep.outliers = KVT_OUTLIERS_KNOWN | s->srv->cfg.outliers;
    }
    if (status && why)
        snprintf(rep.reason, sizeof(rep.reason), "%s", why);
    /* A client waits for exactly this reply, so the socket buffer has room;
     * if it has not, the peer is broken and the loop will see it hang up. */
    if (send(s->fd, &rep, sizeof(rep), MSG_NOSIGNAL | MSG_DONTWAIT) < 0)
        log_debug("client pid %d: reply not sent: %s", (int)s->cred.pid, strerror(errno));
}

/* Admin stats: a successful store or fetch counts its K+V bytes in the
 * client's dtype. Only then has s->view been parsed and validated. */
static void count_traffic(struct kvt_session *s, uint16_t op)
{
    struct kvt_server *srv = s->srv;
    uint64_t tokens = 0;

    for (uint32_t i = 0; i < s->view.req->n_spans; i++)
        tokens += s->view.spans[i].n_tokens;
    uint64_t bytes = tokens * dp_client_row_bytes(&s->rq) * 2;
    if (op == KVT_OP_STORE) {
        atomic_fetch_add(&srv->stores, 1);
        atomic_fetch_add(&srv->bytes_in, bytes);
    } else {
        atomic_fetch_add(&srv->fetches, 1);
        atomic_fetch_add(&srv->bytes_out, bytes);
    }
}

/* Admin `contexts`: a successful named store makes its name known. A full
 * name set is counted in the namespace, not an error for the client. */
static void remember_name(struct kvt_session *s)
{
    uint64_t hi, lo;

    /* A name with a NUL inside (possible on the wire, not through the C
     * API) could not be listed as the string it hashes from. */
    if (memchr(s->view.name, '\0', s->view.req->name_len))
        return;
    dp_named_object(&s->rq, &hi, &lo);
    int rc = registry_name_add(s->ns, s->view.name, s->view.req->name_len, hi, lo);
    if (rc == -ENOMEM)
        log_debug("client pid %d: context name not recorded: out of memory",
                  (int)s->cred.pid);
}

static void finish(struct kvt_session *s, uint16_t op, uint32_t seq, int status,
                   uint64_t value, const char *why)
{
    if (status && status != -ENOENT)
        log_debug("client pid %d uid %u: op %u failed: %s (%s)", (int)s->cred.pid,
                  (unsigned)s->cred.uid, op, strerror(-status), why ? why : "");
    if (status == 0 && (op == KVT_OP_STORE || op == KVT_OP_FETCH)) {
        count_traffic(s, op);
        latency_record(op == KVT_OP_STORE ? &s->srv->store_latency : &s->srv->fetch_latency,
                       latency_now_ns() - s->received_ns);
    }
    if (status == 0 && op == KVT_OP_STORE && s->view.req->addr == KVT_ADDR_NAMED)
        remember_name(s);
    session_send_reply(s, op, seq, status, value, NULL, why);
    atomic_fetch_add(&s->srv->requests, 1);
    session_rearm(s);
}

/* ---- data requests ------------------------------------------------------------- */

/* The reason sent with a failed store or fetch (NULL: none to add). */
static const char *data_reason(struct kvt_session *s, int rc)
{
    switch (rc) {
    case -ENOENT: return "some requested tokens are not cached";
    case -EOPNOTSUPP: return s->rq.raw ? "raw fetch of a chunk stored lossless" : NULL;
    case -ERANGE:
        if (!s->rq.raw)
            return NULL;
        snprintf(s->reason, sizeof(s->reason),
                 "a stored chunk holds %u outliers per vector, more than raw_outliers",
                 (unsigned)atomic_load(&s->raw_refused_outliers));
        return s->reason;
    case -ENOSPC: return "hot tier full of pinned chunks";
    case -EDQUOT: {
        /* The shape the hot tier charged (as dp_store builds it). */
        struct kvt_chunk_shape shape = dp_chunk_shape(&s->srv->dp, s->ns, s->elem);
        struct kvt_hot_stats hs;
        uint64_t chunk = hot_chunk_bytes(&shape);
        hot_stats(s->srv->dp.hot, &hs);
        if (!hs.domain_quota_bytes || hs.domain_quota_bytes >= chunk)
            return "hot-quota of this sharing domain reached and its own chunks are pinned";
        snprintf(s->reason, sizeof(s->reason),
                 "hot-quota is smaller than one chunk of this model (%llu bytes)",
                 (unsigned long long)chunk);
        return s->reason;
    }
    }
    return NULL;
}

/* Once the last part is submitted, s may be gone: that part can finish,
 * reply and have the loop close the session before workers_submit_list
 * returns. So nothing of s is read after it (the count and the pool are
 * taken first, every item's fn is set before any is submitted). */
static void submit_parts(struct kvt_session *s, void (*fn)(struct work_item *))
{
    const unsigned n = s->n_parts;
    struct kvt_workers *workers = s->srv->workers;
    struct session_part *parts = s->parts;

    atomic_store(&s->parts_left, n);
    for (unsigned i = 0; i < n; i++) {
        parts[i].item.fn = fn;
        parts[i].item.next = i + 1 < n ? &parts[i + 1].item : NULL;
    }
    /* One lock and one wake-up round for all of them. */
    workers_submit_list(workers, &parts[0].item, &parts[n - 1].item, n);
}

static void part_run(struct work_item *item);

/* Segments of a claim that starts at segment i. */
static size_t claimed(const struct kvt_session *s, size_t i)
{
    return s->n_segs - i < s->grain ? s->n_segs - i : s->grain;
}

/* A split int8 store's first phase: the parts stage or check its segments
 * (dp_stage), and the last to finish either frees every stage and answers
 * the refusal, or submits the store parts, which commit the stages.
 * No part waits for another: with as many busy sessions as workers, a
 * barrier inside a part would leave every worker waiting. */
static void part_check_run(struct work_item *item)
{
    struct session_part *p = (struct session_part *)item;
    struct kvt_session *s = p->s;
    size_t i;

    while ((i = atomic_fetch_add_explicit(&s->next_check, s->grain, memory_order_relaxed)) <
               s->n_segs &&
           !atomic_load_explicit(&s->status, memory_order_relaxed)) {
        if (dp_stage(&s->srv->dp, &s->rq, s->segs + i, claimed(s, i))) {
            int zero = 0;
            atomic_compare_exchange_strong(&s->status, &zero, -EINVAL);
        }
    }
    if (atomic_fetch_sub_explicit(&s->parts_left, 1, memory_order_acq_rel) != 1)
        return;
    if (atomic_load(&s->status)) {
        dp_release(&s->srv->dp, s->segs, s->n_segs);
        free(s->segs);
        s->segs = NULL;
        finish(s, s->op, s->seq, -EINVAL, 0, NONFINITE_REASON);
        return;
    }
    /* Every part has returned from its check, so the items are free. */
    submit_parts(s, part_run);
}

static void part_run(struct work_item *item)
{
    struct session_part *p = (struct session_part *)item;
    struct kvt_session *s = p->s;
    struct kvt_datapath *dp = &s->srv->dp;
    size_t i;

    while ((i = atomic_fetch_add_explicit(&s->next_seg, s->grain, memory_order_relaxed)) <
           s->n_segs) {
        /* A fetch stops at the first failure (the reply is an error); a
         * store goes on, so that every staged segment is committed or freed. */
        if (s->op != KVT_OP_STORE && atomic_load_explicit(&s->status, memory_order_relaxed))
            break;
        size_t n = claimed(s, i);
        int rc = s->op == KVT_OP_STORE ? dp_store(dp, &s->rq, s->segs + i, n)
                                       : dp_fetch(dp, &s->rq, s->segs + i, n);
        if (rc) {
            int zero = 0;
            atomic_compare_exchange_strong(&s->status, &zero, rc);
        }
    }
    /* The last part to finish answers; acq_rel orders every part's writes
     * into the client's region before the reply that tells it to look. */
    if (atomic_fetch_sub_explicit(&s->parts_left, 1, memory_order_acq_rel) == 1) {
        int status = atomic_load(&s->status);
        free(s->segs);
        s->segs = NULL;
        finish(s, s->op, s->seq, status, 0, data_reason(s, status));
    }
}

/* Stage and store, or fetch, segments [0, n_segs) on this thread. On the
 * loop, -EWOULDBLOCK says it needs the disk (tiers_forbid_disk) and
 * -EINPROGRESS a new chunk block (hot_forbid_new_blocks): what it did is
 * redone, s->segs are still there and free of stages. */
static int run_whole(struct kvt_session *s, size_t n_segs, const char **why)
{
    struct kvt_datapath *dp = &s->srv->dp;
    int refused = s->op == KVT_OP_STORE ? dp_stage(dp, &s->rq, s->segs, n_segs) : 0;
    int rc = refused ? refused
           : s->op == KVT_OP_STORE ? dp_store(dp, &s->rq, s->segs, n_segs)
                                   : dp_fetch(dp, &s->rq, s->segs, n_segs);

    *why = refused ? NONFINITE_REASON : data_reason(s, rc);
    return rc;
}

/* A small request the loop could not finish without the disk, whole on a
 * worker. */
static void whole_run(struct work_item *item)
{
    struct session_part *p = (struct session_part *)item;
    struct kvt_session *s = p->s;
    const char *why = NULL;
    int rc = run_whole(s, p->count, &why);

    free(s->segs);
    s->segs = NULL;
    finish(s, s->op, s->seq, rc, 0, why);
}

/* Tokens of a fetch segment for a request split among the workers: a
 * chunk, or an equal part of it of at least FETCH_SEGMENT_BYTES of K (so
 * that the copies still stream, SIMD_STREAM_MIN_BYTES). A request's parts
 * end together within one segment's copy: a 1 MiB chunk of bf16 K and V
 * takes a quarter of a millisecond on one thread of sixteen sharing the
 * memory, and a large restore makes such a request per layer. */
static uint32_t fetch_segment_tokens(const struct kvt_session *s, size_t row)
{
    const uint32_t C = s->ns->chunk_tokens;
    uint64_t parts = (uint64_t)C * row / FETCH_SEGMENT_BYTES;

    if (s->op != KVT_OP_FETCH || parts < 2)
        return C;
    return (uint32_t)((C + parts - 1) / parts);
}

/* Whether every segment lies in one chunk (a request the loop serves
 * whole, as before its fetch segments were split). */
static bool one_chunk(const struct dp_segment *segs, size_t n)
{
    for (size_t i = 1; i < n; i++)
        if (memcmp(&segs[i].key, &segs[0].key, sizeof(segs[0].key)))
            return false;
    return true;
}

static int spans_request(struct kvt_session *s, const char **why)
{
    size_t n_segs, row = dp_client_row_bytes(&s->rq);
    uint64_t bytes = 0;

    for (uint32_t i = 0; i < s->view.req->n_spans; i++)
        bytes += (uint64_t)s->view.spans[i].n_tokens * row * 2;
    unsigned workers = s->srv->cfg.workers;
    bool small = bytes <= INLINE_BYTES || workers < 2;
    uint32_t seg_tokens = small ? 0 : fetch_segment_tokens(s, row);
    int rc = dp_plan(&s->rq, seg_tokens, MAX_SEGMENTS, &s->segs, &n_segs);

    if (rc == -E2BIG && seg_tokens)       /* whole chunks may still fit */
        rc = dp_plan(&s->rq, 0, MAX_SEGMENTS, &s->segs, &n_segs);
    if (rc) {
        *why = rc == -E2BIG ? "request covers too many chunks" : "out of memory";
        return rc;
    }
    small = small || one_chunk(s->segs, n_segs);
    /* A fetch that may ask the pool waits on the network: never on the
     * loop, which must keep serving everyone else meanwhile. A small one
     * goes to a worker whole. */
    bool may_wait = s->op == KVT_OP_FETCH && dp_fetch_may_ask_pool(&s->srv->dp, &s->rq);
    /* A store is checked whole before any of it is linked (dp_stage):
     * a refused one stores nothing. Small requests run here, unless they
     * turn out to need the disk (a chunk only on SSD, a drop under way):
     * then one worker does the whole request and answers, and the loop
     * serves the other clients meanwhile. */
    if (small && !may_wait) {
        rc = run_whole(s, n_segs, why);
        if (rc != -EWOULDBLOCK && rc != -EINPROGRESS) {
            free(s->segs);
            s->segs = NULL;
            return rc;
        }
        atomic_fetch_add_explicit(rc == -EWOULDBLOCK ? &s->srv->disk_handoffs
                                                     : &s->srv->block_handoffs,
                                  1, memory_order_relaxed);
        s->parts[0] = (struct session_part){ .item.fn = whole_run, .s = s, .count = n_segs };
        workers_submit(s->srv->workers, &s->parts[0].item);
        return 1;
    }

    /* One part per worker, each claiming segments until none are left:
     * segments carry at most chunk_tokens each, so they are close to equal
     * in bytes, and the threads that are awake do the work. */
    unsigned parts = workers < SESSION_MAX_PARTS ? workers : SESSION_MAX_PARTS;
    if (small)
        parts = 1;
    if (parts > n_segs)
        parts = (unsigned)n_segs;
    atomic_store(&s->status, 0);
    atomic_store(&s->next_seg, 0);
    atomic_store(&s->next_check, 0);
    s->n_segs = n_segs;
    /* About sixteen claims per part: enough to even out late starters, and
     * each claim still a batch, whose misses dp_fetch promotes together
     * (many SSD reads in flight at once). */
    s->grain = n_segs / ((size_t)parts * 16);
    if (s->grain == 0)
        s->grain = 1;
    s->n_parts = parts;
    for (unsigned i = 0; i < parts; i++)
        s->parts[i] = (struct session_part){ .s = s };
    submit_parts(s, s->op == KVT_OP_STORE && !s->srv->dp.lossless ? part_check_run : part_run);
    return 1;     /* answered by the last worker */
}

/* Table-driven dispatch: handlers see a request whose framing, fields and
 * offsets are already valid. A handler returns 0/-errno (and may set *value
 * and *why), or 1 when the reply will be sent later by a worker. */
typedef int (*op_handler)(struct kvt_session *s, uint64_t *value, const char **why);

static int op_spans(struct kvt_session *s, uint64_t *value, const char **why)
{
    (void)value;
    if (s->rq.raw && s->srv->dp.lossless) {
        *why = "raw fetch needs int8 storage; this daemon stores lossless";
        return -EOPNOTSUPP;
    }
    return spans_request(s, why);
}

static int op_length(struct kvt_session *s, uint64_t *value, const char **why)
{
    (void)why;
    *value = dp_length(&s->srv->dp, &s->rq);
    return 0;
}

static void match_run(struct work_item *item)
{
    struct session_part *p = (struct session_part *)item;
    struct kvt_session *s = p->s;
    const uint16_t op = s->op;
    uint64_t matched = op == KVT_OP_MATCH ? dp_match(&s->srv->dp, &s->rq)
                                          : dp_match_prefix(&s->srv->dp, &s->rq);

    finish(s, op, s->seq, 0, matched, NULL);
}

/* A match that may ask the pool waits on the network; MATCH_PREFIX may hash
 * up to chunk_tokens - 1 candidate tails of up to chunk_tokens tokens (25 us
 * at 256 tokens a chunk, 3.5 ms at 4096). Either goes to a worker (above
 * MATCH_INLINE_CHUNK for MATCH_PREFIX), so the loop keeps serving others. */
static int op_match(struct kvt_session *s, uint64_t *value, const char **why)
{
    const bool prefix = s->op == KVT_OP_MATCH_PREFIX;

    (void)why;
    if (!tiers_remote_serves(&s->srv->tiers, s->ns) &&
        (!prefix || s->ns->chunk_tokens <= MATCH_INLINE_CHUNK)) {
        *value = prefix ? dp_match_prefix(&s->srv->dp, &s->rq) : dp_match(&s->srv->dp, &s->rq);
        return 0;
    }
    s->parts[0] = (struct session_part){ .item.fn = match_run, .s = s };
    workers_submit(s->srv->workers, &s->parts[0].item);
    return 1;
}

/* Drop the request's context from both tiers; returns the hot chunks. */
static uint64_t drop_now(struct kvt_session *s, uint64_t *cold_records)
{
    uint64_t hi, lo, dropped = dp_drop(&s->srv->dp, &s->rq, cold_records);

    if (s->view.req->addr == KVT_ADDR_NAMED) {
        dp_named_object(&s->rq, &hi, &lo);
        registry_name_remove(s->ns, hi, lo);
    }
    return dropped;
}

/* When the cold tier held the context, the reply waits until its
 * tombstone is on disk (a kill -9 after the reply must not bring the data
 * back). */
static void drop_run(struct work_item *item)
{
    struct session_part *p = (struct session_part *)item;
    uint64_t cold_records = 0, dropped = drop_now(p->s, &cold_records);
    int rc = tiers_drop_needs_sync(&p->s->srv->tiers, cold_records)
                 ? tiers_drop_sync(&p->s->srv->tiers) : 0;

    finish(p->s, KVT_OP_DROP, p->s->seq, rc, dropped,
           rc ? "dropped, but the drop could not be written to the cold tier: "
                "the data may return after a restart" : NULL);
}

/* With a cold tier a drop waits for the promotions in flight (drop_lock)
 * and may wait for its tombstone: a worker does it. Without one it is a
 * few hash lookups, done here. The client's next request comes after the
 * reply either way. */
static int op_drop(struct kvt_session *s, uint64_t *value, const char **why)
{
    (void)why;
    if (!s->srv->tiers.cold) {
        *value = drop_now(s, NULL);
        return 0;
    }
    s->parts[0] = (struct session_part){ .item.fn = drop_run, .s = s };
    workers_submit(s->srv->workers, &s->parts[0].item);
    return 1;
}

static void sync_run(struct work_item *item)
{
    struct session_part *p = (struct session_part *)item;
    struct kvt_tiers *t = &p->s->srv->tiers;
    /* The client's earlier stores are queued for the pool already (one
     * request at a time per session), so draining covers them. The pool
     * is a cache: its failures are counted in stats, not this reply's. */
    tiers_remote_sync(t);
    int rc = t->cold ? tiers_flush(t, &p->s->lost_seen, NULL, NULL) : 0;

    finish(p->s, KVT_OP_SYNC, p->s->seq, rc, 0,
           rc ? "writing the hot tier to the cold tier failed" : NULL);
}

/* A flush waits for the disk (and the pool's writes): a worker does it,
 * the loop serves on. */
static int op_sync(struct kvt_session *s, uint64_t *value, const char **why)
{
    (void)value;
    if (!s->srv->tiers.cold && !s->srv->tiers.remote) {
        *why = "this daemon has no cold tier (cold-bytes 0)";
        return -EOPNOTSUPP;
    }
    s->parts[0] = (struct session_part){ .item.fn = sync_run, .s = s };
    workers_submit(s->srv->workers, &s->parts[0].item);
    return 1;
}

static const struct {
    op_handler fn;
} op_table[KVT_OP_MAX_] = {
    [KVT_OP_STORE]  = { op_spans },
    [KVT_OP_FETCH]  = { op_spans },
    [KVT_OP_LENGTH] = { op_length },
    [KVT_OP_DROP]   = { op_drop },
    [KVT_OP_MATCH]  = { op_match },
    [KVT_OP_MATCH_PREFIX] = { op_match },
    [KVT_OP_SYNC]   = { op_sync },
    [KVT_OP_LOCATE] = { session_locate },
};

static void handle_data(struct kvt_session *s, size_t len)
{
    const struct kvt_msg_hdr *h = (const void *)s->buf;
    const char *why = NULL;
    uint64_t value = 0;
    int rc;

    s->op = h->op;
    s->seq = h->seq;
    if (h->op == KVT_OP_BLOCKS) {
        session_blocks(s, len);
        return;
    }
    if (!s->ns) {
        rc = -ENOTCONN;
        why = "attach first";
        goto out;
    }
    rc = proto_parse_data(s->buf, len, s->srv->cfg.max_spans, &s->view, &why);
    if (rc)
        goto out;
    s->rq = (struct dp_request){ .ns = s->ns, .elem = s->elem, .region = s->region,
                                 .region_bytes = s->region_bytes, .view = &s->view,
                                 .raw = s->view.req->flags & KVT_DATA_RAW,
                                 .raw_outliers = s->view.req->raw_outliers,
                                 .locate = h->op == KVT_OP_LOCATE,
                                 .raw_refused_outliers = &s->raw_refused_outliers };
    atomic_store(&s->raw_refused_outliers, 0);
    rc = dp_validate(&s->rq, &why);
    if (rc)
        goto out;
    rc = op_table[h->op].fn(s, &value, &why);
    if (rc == 1)
        return;
out:
    finish(s, s->op, s->seq, rc, value, why);
}

/* ---- reading ---------------------------------------------------------------------- */

/* Receive one packet. Its length is returned (more than buf_cap if it was
 * cut short), or -errno. Of the fds that came with it the first is returned
 * in *fd (-1 if none) and the rest are closed, so a client cannot leak fds
 * into us; *ancillary says whether control data came at all, even cut
 * short, which tells an empty packet from a hang-up. */
static ssize_t receive(struct kvt_session *s, int *fd, bool *ancillary)
{
    struct iovec iov = { .iov_base = s->buf, .iov_len = s->buf_cap };
    union {
        struct cmsghdr align;
        char buf[CMSG_SPACE(4 * sizeof(int))];
    } ctl;
    struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1,
                         .msg_control = ctl.buf, .msg_controllen = sizeof(ctl.buf) };
    ssize_t n;

    *fd = -1;
    *ancillary = false;
    do
        n = recvmsg(s->fd, &mh, MSG_TRUNC | MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
    while (n < 0 && errno == EINTR);
    if (n < 0)
        return -errno;
    *ancillary = mh.msg_controllen > 0 || (mh.msg_flags & MSG_CTRUNC);
    for (struct cmsghdr *cm = CMSG_FIRSTHDR(&mh); cm; cm = CMSG_NXTHDR(&mh, cm)) {
        if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS)
            continue;
        size_t nfd = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        for (size_t i = 0; i < nfd; i++) {
            int f;
            memcpy(&f, CMSG_DATA(cm) + i * sizeof(int), sizeof(int));
            if (*fd < 0)
                *fd = f;
            else
                close(f);
        }
    }
    return n;
}

/* On SOCK_SEQPACKET a read of 0 bytes is also an empty packet (which may
 * carry fds): it is a hang-up only when the peer has shut down too. */
static bool peer_hung_up(int fd)
{
    struct pollfd p = { .fd = fd, .events = POLLRDHUP };

    return poll(&p, 1, 0) == 1 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR));
}

static void close_fd(int *fd)
{
    if (*fd >= 0)
        close(*fd);
    *fd = -1;
}

/* The session's fd is readable (or hung up): one request. */
static void session_readable(struct kvt_handler *handler, uint32_t events)
{
    struct kvt_session *s = KVT_OWNER(handler, struct kvt_session, h);
    const struct kvt_msg_hdr *h = (const void *)s->buf;
    const char *why = NULL;
    bool ancillary;
    int fd, rc;
    ssize_t n = receive(s, &fd, &ancillary);

    (void)events;                  /* a hang-up shows in what receive finds */
    s->received_ns = latency_now_ns();

    if (n == -EAGAIN) {
        session_rearm(s);
        return;
    }
    if (n < 0 || (n == 0 && !ancillary && peer_hung_up(s->fd))) {
        close_fd(&fd);
        session_close(s);      /* hung up or broken: the client is gone */
        return;
    }
    /* MSG_TRUNC leaves the first buf_cap bytes of a longer packet in the
     * buffer, so even a frame over max-frame names its op and seq. */
    uint32_t seq = (size_t)n >= sizeof(*h) ? h->seq : 0;
    uint16_t op = (size_t)n >= sizeof(*h) ? h->op : 0;

    /* Every fd is closed before the reply goes out, except the region of
     * an ATTACH, which session_attach closes once it is mapped. */
    if (s->refused) {
        close_fd(&fd);
        session_send_reply(s, op & (uint16_t)~KVT_OP_REPLY, seq, -EUSERS, 0, NULL, s->refused);
        session_close(s);
        return;
    }
    if ((size_t)n > s->buf_cap) {
        rc = -EMSGSIZE;
        why = "message larger than max-frame";
    } else {
        rc = proto_check_hdr(s->buf, (size_t)n, &why);
    }
    if (rc == 0 && op == KVT_OP_ATTACH) {
        session_attach(s, fd);
        return;
    }
    close_fd(&fd);
    if (rc) {
        finish(s, op & (uint16_t)~KVT_OP_REPLY, seq, rc, 0, why);
        return;
    }
    handle_data(s, (size_t)n);
}

/* ---- lifetime ------------------------------------------------------------------------ */

/* Why a new connection of uid is refused, or NULL. Refused connections take
 * no place, so a uid that floods past its cap keeps nobody else out. The
 * scan is bounded by max-clients (n_sessions never exceeds it), and accept
 * is not on the path of any request. */
static const char *over_cap(struct kvt_server *srv, uid_t uid)
{
    unsigned same_uid = 0;

    if (srv->n_sessions >= srv->cfg.max_clients) {
        srv->refused_max_clients++;
        return "too many clients (max-clients)";
    }
    for (const struct kvt_session *s = srv->sessions; s; s = s->next)
        same_uid += !s->refused && s->cred.uid == uid;
    if (same_uid >= srv->cfg.max_clients_per_uid) {
        srv->refused_per_uid++;
        return "too many clients of this uid (max-clients-per-uid)";
    }
    return NULL;
}

/* At most one line a second: a client reconnecting in a loop must not
 * flood the log. The line counts the refusals it stands for. */
static void log_refusal(struct kvt_server *srv, const struct kvt_session *s, bool unanswered)
{
    uint64_t now = latency_now_ns();

    srv->refusals_unlogged++;
    if (srv->refusal_logged_ns && now - srv->refusal_logged_ns < 1000000000u)
        return;
    log_warn("refusing client pid %d uid %u: %s%s (%llu refused since the last such line)",
             (int)s->cred.pid, (unsigned)s->cred.uid, s->refused,
             unanswered ? "; closed unanswered, too many refusals pending" : "",
             (unsigned long long)srv->refusals_unlogged);
    srv->refusal_logged_ns = now;
    srv->refusals_unlogged = 0;
}

int session_open(struct kvt_server *srv, int fd)
{
    struct kvt_session *s = calloc(1, sizeof(*s));
    socklen_t len = sizeof(s ? s->cred : (struct ucred){ 0 });
    int rc;

    if (!s) {
        close(fd);
        return -ENOMEM;
    }
    s->h.fn = session_readable;
    s->srv = srv;
    s->lost_seen = tiers_records_lost(&srv->tiers);   /* earlier losses are not ours */
    s->fd = fd;
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &s->cred, &len) < 0) {
        rc = -errno;
        goto err;
    }
    s->domain = registry_domain(&srv->cfg, s->cred.uid);
    s->refused = over_cap(srv, s->cred.uid);
    if (s->refused && srv->n_refused >= SESSION_REFUSED_MAX) {
        /* Telling it needs its first request; with this many waiting it
         * is closed now (libkvtier reports ECONNREFUSED). */
        srv->refused_unanswered++;
        log_refusal(srv, s, true);
        rc = -EUSERS;
        goto err;
    }
    s->attach_deadline_ns = latency_now_ns() + (uint64_t)srv->cfg.attach_timeout_ms * 1000000u;
    s->buf_cap = srv->cfg.max_frame;
    s->buf = malloc(s->buf_cap);
    if (!s->buf) {
        rc = -ENOMEM;
        goto err;
    }
    struct epoll_event ev = { .events = EPOLLIN | EPOLLONESHOT, .data.ptr = &s->h };
    if (epoll_ctl(srv->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
        rc = -errno;
        goto err;
    }
    s->next = srv->sessions;
    if (s->next)
        s->next->prev = s;
    srv->sessions = s;
    if (s->refused) {
        srv->n_refused++;
        log_refusal(srv, s, false);
    } else {
        srv->n_sessions++;
    }
    server_attach_deadline(srv, s->attach_deadline_ns);
    return 0;
err:
    free(s->buf);
    free(s);
    close(fd);
    return rc;
}

void session_close(struct kvt_session *s)
{
    struct kvt_server *srv = s->srv;

    if (s->ns) {
        log_info("client pid %d uid %u detached", (int)s->cred.pid, (unsigned)s->cred.uid);
        registry_detach(&srv->reg, s->ns);
    }
    epoll_ctl(srv->epfd, EPOLL_CTL_DEL, s->fd, NULL);
    close(s->fd);
    if (s->region)
        munmap(s->region, s->region_bytes);
    if (s->prev)
        s->prev->next = s->next;
    else
        srv->sessions = s->next;
    if (s->next)
        s->next->prev = s->prev;
    if (s->refused)
        srv->n_refused--;
    else
        srv->n_sessions--;
    free(s->segs);
    free(s->buf);
    free(s);
}

/* One line per sweep, not per connection: many silent connections expiring
 * together must not flood the log. */
uint64_t session_expire_unattached(struct kvt_server *srv, uint64_t now_ns)
{
    uint64_t next = 0;
    unsigned closed = 0;
    struct ucred last = { 0 };

    for (struct kvt_session *s = srv->sessions, *after; s; s = after) {
        after = s->next;
        if (!s->attach_deadline_ns)
            continue;
        if (s->attach_deadline_ns > now_ns) {
            if (!next || s->attach_deadline_ns < next)
                next = s->attach_deadline_ns;
            continue;
        }
        last = s->cred;
        closed++;
        srv->attach_timeouts++;
        session_close(s);
    }
    if (closed)
        log_info("closed %u connection%s that did not attach within %u ms (attach-timeout-ms; "
                 "the last of pid %d uid %u)", closed, closed == 1 ? "" : "s",
                 srv->cfg.attach_timeout_ms, (int)last.pid, (unsigned)last.uid);
    return next;
}
