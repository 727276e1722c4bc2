/* admin.c - the admin socket: one JSON request per line, one JSON reply per
 * line, read and answered on the loop thread; the commands themselves are
 * in admin_cmd.c. Requests must be UTF-8 and every reply is: a name that
 * is not (clients may use any bytes) goes out \xNN-escaped, with its exact
 * bytes in hex beside it (admin_text.h).
 *
 * The loop never waits on an admin client. Connections are non-blocking;
 * replies (and progress lines) go into the connection's output buffer and
 * out as fast as the client reads, the rest on EPOLLOUT. While output is
 * pending the daemon reads nothing more from that connection (the requests
 * it already holds, at most ADMIN_LINE_MAX bytes, are still answered), so a
 * client that stops reading stops being served, not the daemon. One whose
 * unread replies would pass ADMIN_OUT_MAX is closed, with a log line.
 *
 * Long commands (flush, evict of a namespace or tier) run as jobs on a
 * thread of their own (job.c): their connection gets its reply, and
 * progress lines if it asked, when the loop hears from the job, and its
 * further requests wait meanwhile. One long command runs at a time. The
 * listings (namespaces, contexts) run the same way, one per connection and
 * any number at once: they walk every known name and the cold index, which
 * took 270 ms for 10000 names over 960k cold records, too long to hold the
 * loop (docs/performance.md).
 *
 * Lifetime: a connection is freed only from its own event (conn_event),
 * because the loop may hold an event for it in the batch it is working
 * through; other paths (the job event) mark it doomed instead.
 */
#include "daemon/admin.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "daemon/admin_cmd.h"
#include "daemon/admin_text.h"
#include "daemon/job.h"
#include "daemon/log.h"
#include "daemon/sockpath.h"

/* A drained buffer larger than this is given back: an idle connection
 * should not keep the memory of the one big reply it once had. */
#define OUT_KEEP_BYTES (64u << 10)

/* ---- output -------------------------------------------------------------------- */

static size_t out_pending(const struct kvt_admin_conn *c)
{
    return c->out_len - c->out_off;
}

/* Give the socket what it takes of c's output without waiting. Returns 0
 * (some may still be pending), or -errno when the client is gone. */
static int out_flush(struct kvt_admin_conn *c)
{
    while (out_pending(c)) {
        ssize_t n = send(c->fd, c->out + c->out_off, out_pending(c), MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return 0;
        if (n < 0)
            return -errno;
        c->out_off += (size_t)n;
    }
    c->out_off = c->out_len = 0;
    if (c->out_cap > OUT_KEEP_BYTES) {
        free(c->out);
        c->out = NULL;
        c->out_cap = 0;
    }
    return 0;
}

/* Append text and its newline to c's output. A single reply may be larger
 * than ADMIN_OUT_MAX (a `contexts` over many names); what is refused is
 * output piling up behind replies the client has not read. Returns 0,
 * -ENOBUFS past the bound (logged), -ENOMEM, or a send error. */
static int out_queue(struct kvt_admin_conn *c, const char *text, size_t len)
{
    size_t need = len + 1;

    if (out_pending(c) && out_pending(c) + need > ADMIN_OUT_MAX) {
        int rc = out_flush(c);
        if (rc)
            return rc;
        if (out_pending(c) && out_pending(c) + need > ADMIN_OUT_MAX) {
            log_warn("admin: pid %d left %zu bytes of replies unread (the bound is %u MiB); "
                     "closing its connection", (int)c->pid, out_pending(c),
                     ADMIN_OUT_MAX >> 20);
            return -ENOBUFS;
        }
    }
    /* Move the unsent bytes to the front when that frees at least half. */
    if (c->out_off && c->out_len + need > c->out_cap && c->out_off >= c->out_len / 2) {
        memmove(c->out, c->out + c->out_off, out_pending(c));
        c->out_len -= c->out_off;
        c->out_off = 0;
    }
    if (c->out_len + need > c->out_cap) {
        size_t cap = c->out_cap ? c->out_cap * 2 : 4096;
        while (cap < c->out_len + need)
            cap *= 2;
        char *bigger = realloc(c->out, cap);
        if (!bigger)
            return -ENOMEM;
        c->out = bigger;
        c->out_cap = cap;
    }
    memcpy(c->out + c->out_len, text, len);
    c->out[c->out_len + len] = '\n';
    c->out_len += need;
    return 0;
}

/* ---- framing ------------------------------------------------------------------ */

/* Queue reply as one line; every string in it is made valid UTF-8 first,
 * whatever bytes the names it carries hold. Returns 0 or -errno. */
static int send_reply(struct kvt_admin_conn *c, cJSON *reply)
{
    int rc = admin_text_make_valid(reply);
    char *text;

    if (rc)
        return rc;
    text = cJSON_PrintUnformatted(reply);
    if (!text)
        return -ENOMEM;
    rc = out_queue(c, text, strlen(text));
    cJSON_free(text);
    return rc;
}

static int send_error(struct kvt_admin_conn *c, const char *why)
{
    cJSON *reply = cJSON_CreateObject();
    if (!reply)
        return -ENOMEM;
    cJSON_AddBoolToObject(reply, "ok", false);
    cJSON_AddStringToObject(reply, "error", why);
    int rc = send_reply(c, reply);
    cJSON_Delete(reply);
    return rc;
}

/* Parse, dispatch and answer one request line (NUL-terminated at len).
 * Returns 0, or -errno when the reply could not be queued (the connection
 * is then closed). */
static int handle_line(struct kvt_admin_conn *c, const char *line, size_t len)
{
    char err[512] = "";
    cJSON *req = NULL, *reply = NULL;
    const cJSON *cmd;
    const char *parse_end = NULL;
    int rc = admin_text_check_request(line, len, err, sizeof(err));

    if (rc)
        goto out;
    rc = -EINVAL;
    req = cJSON_ParseWithLengthOpts(line, len + 1, &parse_end, true);
    if (!req) {
        size_t at = parse_end && parse_end >= line ? (size_t)(parse_end - line) : 0;
        snprintf(err, sizeof(err), "the request is not valid JSON (near byte %zu)", at);
        goto out;
    }
    cmd = cJSON_GetObjectItemCaseSensitive(req, "cmd");
    if (!cJSON_IsObject(req)) {
        snprintf(err, sizeof(err), "the request is not a JSON object");
        goto out;
    }
    if (!cJSON_IsString(cmd)) {
        snprintf(err, sizeof(err), "the request has no \"cmd\" string");
        goto out;
    }
    reply = cJSON_CreateObject();
    if (!reply) {
        rc = -ENOMEM;
        snprintf(err, sizeof(err), "out of memory");
        goto out;
    }
    cJSON_AddBoolToObject(reply, "ok", true);
    rc = admin_dispatch(c, cmd->valuestring, req, reply, err, sizeof(err));
out:
    if (rc == ADMIN_DEFERRED) {
        c->waiting = true;          /* no more requests until its reply */
        rc = 0;
    } else if (rc == 0) {
        rc = send_reply(c, reply);
    } else {
        log_debug("admin: %.*s: %s", (int)utf8_valid_len(line, len < 200 ? len : 200), line,
                  err);
        rc = send_error(c, err[0] ? err : strerror(-rc));
    }
    cJSON_Delete(reply);
    cJSON_Delete(req);
    return rc;
}

/* ---- connections ----------------------------------------------------------------- */

static void conn_close(struct kvt_admin_conn *c)
{
    struct kvt_admin *a = c->admin;

    if (a->job_conn == c)
        a->job_conn = NULL;         /* the job goes on; its reply is dropped */
    if (c->listing)
        c->listing->conn = NULL;    /* so does a listing */
    epoll_ctl(a->epfd, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    if (c->prev)
        c->prev->next = c->next;
    else
        a->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    free(c->out);
    free(c);
}

/* Close c soon, not now: the loop may still hold an event for c in the
 * batch it is working through (a hang-up behind the job event that made a
 * send fail), and it must not find c freed. Shutting the socket down both
 * ways makes its next wait report EPOLLHUP, which conn_event turns
 * into conn_close. Nothing more is read from or sent to c meanwhile. */
static void conn_doom(struct kvt_admin_conn *c)
{
    struct epoll_event ev = { .events = 0, .data.ptr = c };

    c->doomed = true;
    c->events = 0;
    shutdown(c->fd, SHUT_RDWR);
    epoll_ctl(c->admin->epfd, EPOLL_CTL_MOD, c->fd, &ev);
}

/* Watch for what c can do next: write while output is pending (reading
 * nothing then: back-pressure), else read unless it waits for a long
 * command. Watching nothing still reports a hang-up. */
static int conn_watch(struct kvt_admin_conn *c)
{
    uint32_t want = out_pending(c) ? EPOLLOUT : c->waiting || c->closing ? 0 : EPOLLIN;
    struct epoll_event ev = { .events = want, .data.ptr = c };

    if (want == c->events)
        return 0;
    if (epoll_ctl(c->admin->epfd, EPOLL_CTL_MOD, c->fd, &ev) < 0)
        return -errno;
    c->events = want;
    return 0;
}

/* After queueing output: send what the socket takes and watch for the
 * rest; a connection that failed, or is closing with nothing left to
 * send, is doomed. */
static void conn_settle(struct kvt_admin_conn *c)
{
    if (c->doomed)
        return;
    if (out_flush(c) || (c->closing && !out_pending(c)) || conn_watch(c))
        conn_doom(c);
}

/* Answer every complete line in the buffer, in order, until one is
 * deferred; the replies queue in c's output. */
static void answer_lines(struct kvt_admin_conn *c)
{
    size_t start = 0;

    for (char *nl; !c->waiting && !c->doomed && !c->closing &&
                   (nl = memchr(c->buf + start, '\n', c->len - start));) {
        size_t line_len = (size_t)(nl - (c->buf + start));
        *nl = '\0';
        if (line_len && handle_line(c, c->buf + start, line_len))
            conn_doom(c);
        start += line_len + 1;
    }
    memmove(c->buf, c->buf + start, c->len - start);
    c->len -= start;
    if (!c->doomed && !c->closing && c->len > ADMIN_LINE_MAX) {
        c->closing = true;          /* no way to find the next request's start */
        if (send_error(c, "request line longer than 64 KiB; closing the connection"))
            conn_doom(c);
    }
}

/* Whether c's socket reports a hang-up or an error now. */
static bool hung_up(const struct kvt_admin_conn *c)
{
    struct pollfd p = { .fd = c->fd };
    return poll(&p, 1, 0) > 0 && (p.revents & (POLLHUP | POLLERR));
}

/* c's socket is ready for what conn_watch asked (or hung up, or the event
 * predates a change made earlier in this batch, so each step copes with
 * finding nothing to do). Pending output goes first; then one read
 * (level-triggered: the loop comes back if more is waiting), and every
 * complete line is answered in order. */
static void conn_event(struct kvt_handler *h, uint32_t events)
{
    struct kvt_admin_conn *c = KVT_OWNER(h, struct kvt_admin_conn, h);

    (void)events;                   /* the connection knows what it waits for */
    if (c->doomed) {
        conn_close(c);
        return;
    }
    if (out_pending(c)) {
        if (out_flush(c)) {
            conn_close(c);
            return;
        }
    } else if (c->waiting || c->closing) {
        if (hung_up(c))             /* it watches nothing else */
            conn_close(c);
        return;
    } else {
        ssize_t n = recv(c->fd, c->buf + c->len, ADMIN_LINE_MAX + 1 - c->len, MSG_DONTWAIT);
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
            conn_close(c);
            return;
        }
        if (n > 0) {
            c->len += (size_t)n;
            answer_lines(c);
        }
    }
    conn_settle(c);
    if (c->doomed)                  /* its own event: no other in this batch */
        conn_close(c);
}

static int send_progress(struct kvt_admin_conn *c, const char *what, uint64_t done,
                         uint64_t total)
{
    cJSON *line = cJSON_CreateObject();
    cJSON *p = cJSON_AddObjectToObject(line, "progress");
    int rc;

    cJSON_AddStringToObject(p, "command", what);
    cJSON_AddNumberToObject(p, "done", (double)done);
    cJSON_AddNumberToObject(p, "total", (double)(total > done ? total : done));
    cJSON_AddStringToObject(p, "unit", "chunks");
    rc = send_reply(c, line);
    cJSON_Delete(line);
    return rc;
}

static int send_job_reply(struct kvt_admin_conn *c, const struct kvt_admin_work *w,
                          uint64_t done, int rc)
{
    char err[256] = "";                /* the size of kvt_admin_work.err (admin_cmd.c) */
    cJSON *reply = cJSON_CreateObject();

    if (!reply)
        return -ENOMEM;
    cJSON_AddBoolToObject(reply, "ok", true);
    admin_job_result(w, done, rc, reply, err, sizeof(err));
    rc = rc ? send_error(c, err) : send_reply(c, reply);
    cJSON_Delete(reply);
    return rc;
}

/* The running long command reported progress or its end. */
static void job_event(struct kvt_handler *h, uint32_t events)
{
    struct kvt_admin *a = KVT_OWNER(h, struct kvt_admin, on_job);
    struct kvt_admin_conn *c = a->job_conn;
    struct kvt_admin_work *w = a->job_work;
    uint64_t done, total;
    int rc;

    (void)events;
    bool ended = job_poll(a->job, &done, &total, &rc);
    if (c && c->doomed)
        c = NULL;                   /* going away: no more lines for it */
    /* Every job that was asked for progress sends at least one line, even
     * one that ended before the loop looked. Later ones wait until the
     * client has read the last: it gets the news, not a backlog. */
    if (c && c->progress && (!c->progress_sent || (!ended && !out_pending(c)))) {
        c->progress_sent = true;
        if (send_progress(c, admin_work_name(w), done, total))
            conn_doom(c);
        conn_settle(c);
    }
    if (!ended)
        return;
    job_free(a->job);
    a->job = NULL;
    a->job_work = NULL;
    a->job_conn = NULL;
    log_info("admin: %s ended: %llu chunks, %s", admin_work_name(w), (unsigned long long)done,
             rc ? strerror(-rc) : "done");
    if (c && !c->doomed) {          /* else its client went away */
        c->waiting = false;
        if (send_job_reply(c, w, done, rc))
            conn_doom(c);
        else
            answer_lines(c);        /* lines that came while it waited */
        conn_settle(c);
    }
    admin_work_free(w);
}

/* A listing ended (it reports nothing before): its reply, if its
 * connection is still there. */
static void listing_event(struct kvt_handler *h, uint32_t events)
{
    struct kvt_admin_listing *l = KVT_OWNER(h, struct kvt_admin_listing, on_job);
    struct kvt_admin *a = l->admin;
    struct kvt_admin_conn *c = l->conn;
    uint64_t done, total;
    int rc;

    (void)events;
    if (!job_poll(l->job, &done, &total, &rc))
        return;
    job_free(l->job);
    a->n_listings--;
    if (l->prev)
        l->prev->next = l->next;
    else
        a->listings = l->next;
    if (l->next)
        l->next->prev = l->prev;
    if (c)
        c->listing = NULL;
    if (c && !c->doomed) {
        c->waiting = false;
        if (send_job_reply(c, l->work, done, rc))
            conn_doom(c);
        else
            answer_lines(c);        /* lines that came while it waited */
        conn_settle(c);
    }
    admin_work_free(l->work);
    free(l);
}

int admin_start_listing(struct kvt_admin_conn *c, int (*fn)(struct kvt_job *, void *),
                        struct kvt_admin_work *w)
{
    struct kvt_admin *a = c->admin;
    struct kvt_admin_listing *l = malloc(sizeof(*l));
    int rc;

    if (!l) {
        admin_work_free(w);
        return -ENOMEM;
    }
    *l = (struct kvt_admin_listing){ .on_job.fn = listing_event, .admin = a, .conn = c,
                                     .work = w };
    rc = job_start(fn, w, a->epfd, &l->on_job, &l->job);
    if (rc) {
        admin_work_free(w);
        free(l);
        return rc;
    }
    l->next = a->listings;
    if (l->next)
        l->next->prev = l;
    a->listings = l;
    a->n_listings++;
    c->listing = l;
    c->progress = false;
    return ADMIN_DEFERRED;
}

/* Only the daemon's own uid and root may administer it: the socket's mode
 * says so too, but a socket passed in by systemd or a chmod'ed path must
 * not widen that. */
static bool peer_allowed(int fd, struct ucred *cred)
{
    socklen_t len = sizeof(*cred);

    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, cred, &len) < 0)
        return false;
    return cred->uid == 0 || cred->uid == geteuid();
}

static void accept_conns(struct kvt_handler *h, uint32_t events)
{
    struct kvt_admin *a = KVT_OWNER(h, struct kvt_admin, on_accept);
    static const char refusal[] = "{\"ok\":false,\"error\":\"permission denied: only the "
                                  "daemon's user and root may use the admin socket\"}\n";
    struct ucred cred = { 0 };

    (void)events;
    for (;;) {
        int fd = accept4(a->fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
        if (fd < 0) {
            if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED &&
                !accept_pause_failed(a->pause, "admin socket", errno))
                log_warn("admin accept: %s", strerror(errno));
            return;
        }
        accept_pause_ok(a->pause);
        if (!peer_allowed(fd, &cred)) {
            log_warn("admin: refusing pid %d uid %u (only uid %u and root)",
                     (int)cred.pid, (unsigned)cred.uid, (unsigned)geteuid());
            /* A fresh socket's buffer takes one short line; if not, the
             * refusal is the close alone. */
            (void)!send(fd, refusal, sizeof(refusal) - 1, MSG_NOSIGNAL | MSG_DONTWAIT);
            close(fd);
            continue;
        }
        struct kvt_admin_conn *c = malloc(sizeof(*c));
        if (!c) {
            close(fd);
            continue;
        }
        *c = (struct kvt_admin_conn){ .h.fn = conn_event, .admin = a, .srv = a->srv, .fd = fd,
                                      .pid = cred.pid, .events = EPOLLIN };
        struct epoll_event ev = { .events = EPOLLIN, .data.ptr = &c->h };
        if (epoll_ctl(a->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
            log_warn("admin: epoll_ctl: %s", strerror(errno));
            close(fd);
            free(c);
            continue;
        }
        c->next = a->conns;
        if (c->next)
            c->next->prev = c;
        a->conns = c;
    }
}

/* ---- the listening socket ---------------------------------------------------------- */

int admin_open(struct kvt_admin *a, struct kvt_server *srv, const char *path, int epfd,
               struct kvt_accept_pause *pause)
{
    int rc;

    *a = (struct kvt_admin){ .on_accept.fn = accept_conns, .on_job.fn = job_event,
                             .srv = srv, .epfd = epfd, .pause = pause, .path = path,
                             .fd = -1 };
    /* 0600: the admin socket is for the service owner (and root) only;
     * SO_PEERCRED is checked at accept as well. */
    rc = sockpath_listen("admin socket", path, SOCK_STREAM, 0600, 16, &a->owned);
    if (rc < 0)
        return rc;
    a->fd = rc;
    rc = accept_pause_add(pause, a->fd, &a->on_accept);
    if (rc)
        log_err("admin socket: epoll_ctl: %s", strerror(-rc));
    return rc;
}

void admin_close(struct kvt_admin *a)
{
    while (a->conns)
        conn_close(a->conns);
    job_free(a->job);               /* waits for a job still running */
    a->job = NULL;
    admin_work_free(a->job_work);
    a->job_work = NULL;
    while (a->listings) {
        struct kvt_admin_listing *l = a->listings;
        a->listings = l->next;
        job_free(l->job);           /* waits, as above */
        admin_work_free(l->work);
        free(l);
    }
    if (a->fd >= 0) {
        if (a->pause)
            accept_pause_remove(a->pause, a->fd);
        close(a->fd);
        a->fd = -1;
    }
    if (a->owned) {
        unlink(a->path);
        a->owned = false;
    }
}
