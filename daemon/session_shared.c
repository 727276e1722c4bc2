/* session_shared.c - LOCATE and BLOCKS: clients of a domain copying rows
 * straight out of the daemon's shared hot blocks (kvtierd share-hot;
 * proto.h "shared hot blocks", docs/protocol.md).
 *
 * LOCATE finds every chunk a request's spans touch in RAM and writes, per
 * chunk, which block holds its rows and where, with the block's gen: the
 * client then maps the block (BLOCKS), copies, and checks the gen again.
 * Nothing here copies rows or waits: a chunk that is not in RAM (only on
 * SSD or in the pool, or partly absent) gets block 0 and the client
 * fetches those rows as before, which promotes them. Both run on the loop:
 * a lookup per chunk, and a dup per fd.
 */
#include "daemon/session_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "cache/blocks.h"
#include "daemon/log.h"
#include "daemon/store.h"

struct locate_arg {
    uint32_t tok;
    uint16_t elem;                   /* the client's rows' element type */
    struct kvt_locate_entry *e;
};

/* hot_read callback, under the chunk's read lock: the block and gen. */
static int locate_rows(void *arg, const struct kvt_chunk_shape *shape, void *data)
{
    struct locate_arg *a = arg;
    uint64_t row = chunk_row_bytes(shape);

    if (shape->elem != a->elem ||
        block_locate(data, chunk_data_bytes(shape), &a->e->block, &a->e->gen) < 0) {
        a->e->block = 0;
        return 0;
    }
    a->e->k_at = (uint64_t)a->tok * row;
    a->e->v_at = (uint64_t)shape->tokens * row + (uint64_t)a->tok * row;
    return 0;
}

/* Chunks span s touches: the entries of its table. */
static uint64_t span_chunks(const struct kvt_wire_span *s, uint32_t C)
{
    return (s->token_start + (uint64_t)s->n_tokens - 1) / C - s->token_start / C + 1;
}

int session_locate(struct kvt_session *s, uint64_t *value, const char **why)
{
    struct kvt_datapath *dp = &s->srv->dp;
    const struct kvt_data_view *v = &s->view;
    const uint32_t C = s->ns->chunk_tokens;
    struct dp_segment *segs = NULL;
    size_t n_segs, at = 0;
    uint64_t written = 0;
    int rc;

    if (!blocks_shared()) {
        *why = "this daemon does not share its hot blocks (share-hot is 0)";
        return -EOPNOTSUPP;
    }
    if (!dp->lossless) {
        *why = "shared hot blocks serve lossless daemons (quant none) only";
        return -EOPNOTSUPP;
    }
    uint64_t entries = 0;
    for (uint32_t i = 0; i < v->req->n_spans; i++)
        entries += span_chunks(&v->spans[i], C);
    if (entries > KVT_LOCATE_MAX) {
        /* A lookup per chunk on the loop: bounded, so no client holds the
         * loop (and every other client) for long. */
        *why = "locate covers more than 16384 chunks: split it";
        return -E2BIG;
    }
    for (uint32_t i = 0; i < v->req->n_spans; i++) {
        const struct kvt_wire_span *sp = &v->spans[i];
        uint64_t bytes = span_chunks(sp, C) * sizeof(struct kvt_locate_entry);
        if (sp->k_off % 8 || sp->k_off > s->region_bytes || bytes > s->region_bytes - sp->k_off) {
            *why = "locate table lies outside the shared memory region (or is not 8-aligned)";
            return -EFAULT;
        }
    }
    rc = dp_plan(&s->rq, 0, KVT_LOCATE_MAX, &segs, &n_segs);
    if (rc) {
        *why = rc == -E2BIG ? "request covers too many chunks" : "out of memory";
        return rc;
    }
    struct kvt_chunk_shape want = dp_chunk_shape(dp, s->ns, s->elem);
    for (uint32_t i = 0; i < v->req->n_spans; i++) {
        const struct kvt_wire_span *sp = &v->spans[i];
        uint8_t *table = s->region + sp->k_off;
        uint32_t done = 0;
        for (uint64_t j = span_chunks(sp, C); j > 0; j--, at++) {
            const struct dp_segment *g = &segs[at];
            struct kvt_locate_entry e = { .tok = done, .n = g->n };
            struct locate_arg a = { .tok = g->tok, .elem = want.elem, .e = &e };
            if (hot_read(dp->hot, &g->key, g->tok, g->n, locate_rows, &a) < 0)
                e.block = 0;
            if (!e.block)
                e.gen = e.k_at = e.v_at = 0;
            memcpy(table, &e, sizeof(e));
            table += sizeof(e);
            done += g->n;
            written++;
        }
    }
    free(segs);
    atomic_fetch_add(&s->srv->locates, 1);
    *value = written;
    return 0;
}

/* Answer a BLOCKS request with the fds of its ids, in order, up to the
 * first that is gone or another domain's. */
void session_blocks(struct kvt_session *s, size_t len)
{
    const struct kvt_msg_hdr *h = (const void *)s->buf;
    const char *why = NULL;
    const uint64_t *ids;
    uint32_t n = 0, given = 0;
    int fds[KVT_BLOCKS_MAX];
    int rc;

    if (!s->ns) {
        rc = -ENOTCONN;
        why = "attach first";
    } else if (!blocks_shared()) {
        rc = -EOPNOTSUPP;
        why = "this daemon does not share its hot blocks (share-hot is 0)";
    } else {
        rc = proto_parse_blocks(s->buf, len, &ids, &n, &why);
    }
    for (uint32_t i = 0; rc == 0 && i < n; i++) {
        int fd = block_fd(ids[i], s->domain);
        if (fd < 0) {
            if (fd != -ENOENT)
                log_debug("client pid %d: block fd: %s", (int)s->cred.pid, strerror(-fd));
            break;
        }
        fds[given++] = fd;
    }
    if (rc == 0 && n && !given) {
        rc = -ENOENT;
        why = "no such shared block in this domain (gone, or never yours)";
    }

    struct kvt_reply rep;
    memset(&rep, 0, sizeof(rep));
    proto_hdr(&rep.hdr, (uint16_t)(KVT_OP_BLOCKS | KVT_OP_REPLY), sizeof(rep), h->seq);
    rep.status = rc;
    rep.value = given;
    if (rc && why)
        snprintf(rep.reason, sizeof(rep.reason), "%s", why);
    union {
        char buf[CMSG_SPACE(sizeof(int) * KVT_BLOCKS_MAX)];
        struct cmsghdr align;
    } ctl;
    struct iovec iov = { .iov_base = &rep, .iov_len = sizeof(rep) };
    struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1 };
    if (given) {
        memset(&ctl, 0, sizeof(ctl));
        msg.msg_control = ctl.buf;
        msg.msg_controllen = CMSG_SPACE(sizeof(int) * given);
        struct cmsghdr *cm = CMSG_FIRSTHDR(&msg);
        cm->cmsg_level = SOL_SOCKET;
        cm->cmsg_type = SCM_RIGHTS;
        cm->cmsg_len = CMSG_LEN(sizeof(int) * given);
        memcpy(CMSG_DATA(cm), fds, sizeof(int) * given);
    }
    if (sendmsg(s->fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT) < 0)
        log_debug("client pid %d: blocks reply not sent: %s", (int)s->cred.pid, strerror(errno));
    for (uint32_t i = 0; i < given; i++)
        close(fds[i]);
    atomic_fetch_add(&s->srv->requests, 1);
    session_rearm(s);
}
