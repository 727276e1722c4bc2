/* accept_pause.c - pauses accepting while the daemon is out of fds. */
#include "daemon/accept_pause.h"

#include <errno.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include "daemon/latency.h"
#include "daemon/log.h"

/* How long the listening sockets stay out of epoll after an accept failed
 * for lack of fds: long enough that the loop sleeps (10 tries a second),
 * short enough that a client in the backlog barely notices. */
#define ACCEPT_PAUSE_MS 100

static void resume(struct kvt_handler *h, uint32_t events)
{
    struct kvt_accept_pause *p = KVT_OWNER(h, struct kvt_accept_pause, on_timer);
    uint64_t expirations;

    (void)events;
    if (read(p->timer_fd, &expirations, sizeof(expirations)) < 0 || !p->paused)
        return;
    p->paused = false;
    for (unsigned i = 0; i < p->n_listeners; i++) {
        struct epoll_event ev = { .events = EPOLLIN, .data.ptr = p->listeners[i].h };
        if (epoll_ctl(p->epfd, EPOLL_CTL_ADD, p->listeners[i].fd, &ev) < 0)
            log_err("cannot resume accepting on a listening socket: %s", strerror(errno));
    }
}

int accept_pause_init(struct kvt_accept_pause *p, int epfd)
{
    struct epoll_event ev = { .events = EPOLLIN, .data.ptr = &p->on_timer };

    p->on_timer.fn = resume;
    p->epfd = epfd;
    p->timer_fd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
    if (p->timer_fd < 0 || epoll_ctl(epfd, EPOLL_CTL_ADD, p->timer_fd, &ev) < 0)
        return -errno;
    return 0;
}

int accept_pause_add(struct kvt_accept_pause *p, int fd, struct kvt_handler *h)
{
    struct epoll_event ev = { .events = EPOLLIN, .data.ptr = h };

    if (p->n_listeners == ACCEPT_PAUSE_LISTENERS)
        return -ENOSPC;
    if (!p->paused && epoll_ctl(p->epfd, EPOLL_CTL_ADD, fd, &ev) < 0)
        return -errno;
    p->listeners[p->n_listeners].fd = fd;
    p->listeners[p->n_listeners++].h = h;
    return 0;
}

void accept_pause_remove(struct kvt_accept_pause *p, int fd)
{
    for (unsigned i = 0; i < p->n_listeners; i++) {
        if (p->listeners[i].fd != fd)
            continue;
        if (!p->paused)
            epoll_ctl(p->epfd, EPOLL_CTL_DEL, fd, NULL);
        p->listeners[i] = p->listeners[--p->n_listeners];
        return;
    }
}

bool accept_pause_failed(struct kvt_accept_pause *p, const char *which, int err)
{
    if (err != EMFILE && err != ENFILE && err != ENOBUFS && err != ENOMEM)
        return false;
    p->fd_shortages++;
    p->shortage_failures++;
    if (!p->shortage_since_ns) {
        p->shortage_since_ns = latency_now_ns();
        log_warn("%s accept: %s: out of file descriptors or memory; not accepting for "
                 "%d ms at a time until it succeeds (%u clients)", which, strerror(err),
                 ACCEPT_PAUSE_MS, p->n_clients ? *p->n_clients : 0);
    }
    if (p->paused)
        return true;
    /* Level-triggered listening sockets with a backlog stay readable: out
     * of epoll they cannot wake the loop until the timer puts them back. */
    for (unsigned i = 0; i < p->n_listeners; i++)
        epoll_ctl(p->epfd, EPOLL_CTL_DEL, p->listeners[i].fd, NULL);
    struct itimerspec its = { .it_value = { .tv_sec = ACCEPT_PAUSE_MS / 1000,
                                            .tv_nsec = (ACCEPT_PAUSE_MS % 1000) * 1000000L } };
    if (timerfd_settime(p->timer_fd, 0, &its, NULL) < 0)
        log_warn("timerfd_settime: %s", strerror(errno));
    p->paused = true;
    return true;
}

void accept_pause_ok(struct kvt_accept_pause *p)
{
    if (!p->shortage_since_ns)
        return;
    log_info("accepting connections again after %llu ms: %llu accepts failed for "
             "lack of file descriptors or memory",
             (unsigned long long)((latency_now_ns() - p->shortage_since_ns) / 1000000u),
             (unsigned long long)p->shortage_failures);
    p->shortage_since_ns = 0;
    p->shortage_failures = 0;
}

void accept_pause_fini(struct kvt_accept_pause *p)
{
    if (p->timer_fd >= 0)
        close(p->timer_fd);
    p->timer_fd = -1;
}
