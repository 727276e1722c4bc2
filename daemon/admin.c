/* admin.c - the admin socket: one JSON request per line, one JSON reply per
 * line, read and answered on the loop thread; the commands themselves are
 * in admin_cmd.c.
 *
 * Long commands (flush, evict of a namespace or tier) run as jobs on a
 * thread of their own (job.c): their connection gets its reply, and
 * progress lines if it asked, when the loop hears from the job, and reads
 * no other request meanwhile. Replies are sent with a blocking send
 * bounded by SEND_TIMEOUT_S, so an admin client that stops reading cannot
 * hold the loop for longer than that.
 */
#include "daemon/admin.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "daemon/admin_cmd.h"
#include "daemon/job.h"
#include "daemon/log.h"
#include "daemon/sockpath.h"
#include "daemon/session.h"

#define SEND_TIMEOUT_S 2


static const enum ev_kind tag_admin_listen = EV_ADMIN_LISTEN;

/* ---- framing ------------------------------------------------------------------ */

/* Send all of buf; returns 0 or -errno. */
static int send_all(int fd, const char *buf, size_t len)
{
    while (len) {
        ssize_t n = send(fd, buf, len, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return n < 0 ? -errno : -EPIPE;
        buf += n;
        len -= (size_t)n;
    }
    return 0;
}

static int send_reply(int fd, cJSON *reply)
{
    char *text = cJSON_PrintUnformatted(reply);
    int rc;

    if (!text)
        return -ENOMEM;
    size_t len = strlen(text);
    rc = send_all(fd, text, len);
    if (rc == 0)
        rc = send_all(fd, "\n", 1);
    cJSON_free(text);
    return rc;
}

static int send_error(int fd, const char *why)
{
    cJSON *reply = cJSON_CreateObject();
    if (!reply)
        return -ENOMEM;
    cJSON_AddBoolToObject(reply, "ok", false);
    cJSON_AddStringToObject(reply, "error", why);
    int rc = send_reply(fd, reply);
    cJSON_Delete(reply);
    return rc;
}

/* Parse, dispatch and answer one request line. Returns 0, or -errno when
 * the reply could not be sent (the connection is then closed). */
static int handle_line(struct kvt_admin_conn *c, const char *line, size_t len)
{
    char err[512] = "";
    cJSON *req = cJSON_ParseWithLength(line, len);
    const cJSON *cmd = cJSON_GetObjectItemCaseSensitive(req, "cmd");
    cJSON *reply = NULL;
    int rc = -EINVAL;

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
        /* Read nothing more until the reply went out; EPOLLHUP still
         * arrives, so a client that goes away is noticed. */
        struct epoll_event ev = { .events = 0, .data.ptr = c };
        epoll_ctl(c->srv->epfd, EPOLL_CTL_MOD, c->fd, &ev);
        c->waiting = true;
        rc = 0;
    } else if (rc == 0) {
        rc = send_reply(c->fd, reply);
    } else {
        log_debug("admin: %.*s: %s", (int)(len < 200 ? len : 200), line, err);
        rc = send_error(c->fd, err[0] ? err : strerror(-rc));
    }
    cJSON_Delete(reply);
    cJSON_Delete(req);
    return rc;
}

/* ---- connections ----------------------------------------------------------------- */

static void conn_close(struct kvt_admin_conn *c)
{
    struct kvt_server *srv = c->srv;

    if (srv->job_conn == c)
        srv->job_conn = NULL;       /* the job goes on; its reply is dropped */
    epoll_ctl(srv->epfd, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    if (c->prev)
        c->prev->next = c->next;
    else
        srv->admin_conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    free(c);
}

/* Close c soon, not now: the loop may still hold an event for c in the
 * batch it is working through (a hang-up behind the job event that made a
 * send fail), and it must not find c freed. Shutting the socket down both
 * ways makes its next wait report EPOLLHUP, which admin_readable turns
 * into conn_close. Nothing more is read from or sent to c meanwhile. */
static void conn_doom(struct kvt_admin_conn *c)
{
    struct epoll_event ev = { .events = 0, .data.ptr = c };

    c->doomed = true;
    c->waiting = true;
    shutdown(c->fd, SHUT_RDWR);
    epoll_ctl(c->srv->epfd, EPOLL_CTL_MOD, c->fd, &ev);
}

/* Answer every complete line in the buffer, in order, until one is
 * deferred. Returns false when the connection is to be closed. */
static bool answer_lines(struct kvt_admin_conn *c)
{
    size_t start = 0;

    for (char *nl; !c->waiting && (nl = memchr(c->buf + start, '\n', c->len - start));) {
        size_t line_len = (size_t)(nl - (c->buf + start));
        *nl = '\0';
        if (line_len && handle_line(c, c->buf + start, line_len)) {
            conn_doom(c);
            return false;
        }
        start += line_len + 1;
    }
    memmove(c->buf, c->buf + start, c->len - start);
    c->len -= start;
    if (c->len > ADMIN_LINE_MAX) {
        send_error(c->fd, "request line longer than 64 KiB; closing the connection");
        conn_doom(c);
        return false;
    }
    return true;
}

/* One read per readiness (level-triggered: the loop comes back if more is
 * waiting), then every complete line in the buffer is answered in order.
 * A connection waiting for a deferred reply listens for nothing, so being
 * called means it hung up. */
void admin_readable(struct kvt_admin_conn *c)
{
    size_t room = ADMIN_LINE_MAX + 1 - c->len;
    ssize_t n;

    if (c->waiting) {
        conn_close(c);
        return;
    }
    n = recv(c->fd, c->buf + c->len, room, MSG_DONTWAIT);
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (n <= 0) {
        conn_close(c);
        return;
    }
    c->len += (size_t)n;
    answer_lines(c);
}

static void send_progress(struct kvt_admin_conn *c, const char *what, uint64_t done,
                          uint64_t total)
{
    cJSON *line = cJSON_CreateObject();
    cJSON *p = cJSON_AddObjectToObject(line, "progress");

    cJSON_AddStringToObject(p, "command", what);
    cJSON_AddNumberToObject(p, "done", (double)done);
    cJSON_AddNumberToObject(p, "total", (double)(total > done ? total : done));
    cJSON_AddStringToObject(p, "unit", "chunks");
    if (send_reply(c->fd, line))
        conn_doom(c);
    cJSON_Delete(line);
}

static int send_job_reply(struct kvt_admin_conn *c, const struct kvt_admin_work *w,
                          uint64_t done, int rc)
{
    char err[160] = "";
    cJSON *reply = cJSON_CreateObject();

    if (!reply)
        return -ENOMEM;
    cJSON_AddBoolToObject(reply, "ok", true);
    admin_job_result(w, done, rc, reply, err, sizeof(err));
    rc = rc ? send_error(c->fd, err) : send_reply(c->fd, reply);
    cJSON_Delete(reply);
    return rc;
}

void admin_job_event(struct kvt_server *srv)
{
    struct kvt_admin_conn *c = srv->job_conn;
    struct kvt_admin_work *w = srv->job_work;
    uint64_t done, total;
    int rc;

    bool ended = job_poll(srv->job, &done, &total, &rc);
    /* Every job that was asked for progress sends at least one line, even
     * one that ended before the loop looked. */
    if (c && c->doomed)
        c = NULL;                   /* going away: no more lines for it */
    if (c && c->progress && (!ended || !c->progress_sent)) {
        c->progress_sent = true;
        send_progress(c, admin_work_name(w), done, total);
        if (c->doomed)
            c = NULL;
    }
    if (!ended)
        return;
    job_free(srv->job);
    srv->job = NULL;
    srv->job_work = NULL;
    srv->job_conn = NULL;
    log_info("admin: %s ended: %llu chunks, %s", admin_work_name(w), (unsigned long long)done,
             rc ? strerror(-rc) : "done");
    if (c) {                        /* else its client went away */
        c->waiting = false;
        struct epoll_event ev = { .events = EPOLLIN, .data.ptr = c };
        if (send_job_reply(c, w, done, rc) || epoll_ctl(srv->epfd, EPOLL_CTL_MOD, c->fd, &ev) < 0)
            conn_doom(c);
        else
            answer_lines(c);        /* lines that came while it waited */
    }
    free(w);
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

void admin_accept(struct kvt_server *srv)
{
    struct timeval tv = { .tv_sec = SEND_TIMEOUT_S };
    struct ucred cred = { 0 };

    for (;;) {
        int fd = accept4(srv->admin_fd, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED &&
                !server_accept_failed(srv, "admin socket", errno))
                log_warn("admin accept: %s", strerror(errno));
            return;
        }
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
        if (!peer_allowed(fd, &cred)) {
            log_warn("admin: refusing pid %d uid %u (only uid %u and root)",
                     (int)cred.pid, (unsigned)cred.uid, (unsigned)geteuid());
            send_error(fd, "permission denied: only the daemon's user and root "
                           "may use the admin socket");
            close(fd);
            continue;
        }
        struct kvt_admin_conn *c = malloc(sizeof(*c));
        if (!c) {
            close(fd);
            continue;
        }
        *c = (struct kvt_admin_conn){ .kind = EV_ADMIN, .srv = srv, .fd = fd };
        struct epoll_event ev = { .events = EPOLLIN, .data.ptr = c };
        if (epoll_ctl(srv->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
            log_warn("admin: epoll_ctl: %s", strerror(errno));
            close(fd);
            free(c);
            continue;
        }
        c->next = srv->admin_conns;
        if (c->next)
            c->next->prev = c;
        srv->admin_conns = c;
    }
}

/* ---- the listening socket ---------------------------------------------------------- */

int admin_listen(struct kvt_server *srv)
{
    int rc;

    /* 0600: the admin socket is for the service owner (and root) only;
     * SO_PEERCRED is checked at accept as well. */
    rc = sockpath_listen("admin socket", srv->cfg.admin_socket, SOCK_STREAM, 0600, 16,
                         &srv->admin_owned);
    if (rc < 0)
        return rc;
    srv->admin_fd = rc;
    struct epoll_event ev = { .events = EPOLLIN, .data.ptr = (void *)&tag_admin_listen };
    if (epoll_ctl(srv->epfd, EPOLL_CTL_ADD, srv->admin_fd, &ev) < 0) {
        rc = -errno;
        log_err("admin socket: epoll_ctl: %s", strerror(-rc));
        return rc;
    }
    return 0;
}

void admin_close(struct kvt_server *srv)
{
    while (srv->admin_conns)
        conn_close(srv->admin_conns);
    job_free(srv->job);             /* waits for a job still running */
    srv->job = NULL;
    free(srv->job_work);
    srv->job_work = NULL;
    if (srv->admin_fd >= 0) {
        if (srv->epfd >= 0)
            epoll_ctl(srv->epfd, EPOLL_CTL_DEL, srv->admin_fd, NULL);
        close(srv->admin_fd);
        srv->admin_fd = -1;
    }
    if (srv->admin_owned) {
        unlink(srv->cfg.admin_socket);
        srv->admin_owned = false;
    }
}
