/* accept_pause.h - takes the listening sockets out of the loop for a while
 * when accept() fails for lack of fds or memory, so the loop does not spin
 * on a backlog it cannot take. Shared by the data and admin sockets. */
#ifndef KVT_ACCEPT_PAUSE_H
#define KVT_ACCEPT_PAUSE_H

#include <stdbool.h>
#include <stdint.h>

#include "daemon/loop.h"

#define ACCEPT_PAUSE_LISTENERS 2

struct kvt_accept_pause {
    struct kvt_handler on_timer;     /* the pause is over */
    int epfd, timer_fd;
    bool paused;
    unsigned n_listeners;
    struct {
        int fd;
        struct kvt_handler *h;
    } listeners[ACCEPT_PAUSE_LISTENERS];
    uint64_t fd_shortages;           /* accepts that failed for lack of fds (stats) */
    uint64_t shortage_since_ns;      /* first failure of this burst; 0 = none */
    uint64_t shortage_failures;      /* failed accepts in this burst */
    const unsigned *n_clients;       /* for the log line; may be NULL */
};

/* Create the pause timer and register it with epfd. Returns 0 or -errno. */
int accept_pause_init(struct kvt_accept_pause *p, int epfd);
/* Register listening fd with epoll (EPOLLIN, data.ptr = h) and have it
 * paused with the others. Returns 0, -ENOSPC past ACCEPT_PAUSE_LISTENERS,
 * or epoll_ctl's -errno. */
int accept_pause_add(struct kvt_accept_pause *p, int fd, struct kvt_handler *h);
/* Forget fd (before it is closed); it leaves epoll. */
void accept_pause_remove(struct kvt_accept_pause *p, int fd);
/* accept() on the listening socket `which` failed with err: when it is for
 * lack of fds or memory (EMFILE, ENFILE, ENOBUFS, ENOMEM) every listening
 * socket leaves epoll for ACCEPT_PAUSE_MS and the burst is logged once.
 * Returns true when err was such a shortage (the caller stops accepting). */
bool accept_pause_failed(struct kvt_accept_pause *p, const char *which, int err);
/* An accept succeeded: ends a shortage burst (one log line). */
void accept_pause_ok(struct kvt_accept_pause *p);
/* Close the timer. p may be half-built. */
void accept_pause_fini(struct kvt_accept_pause *p);

#endif
