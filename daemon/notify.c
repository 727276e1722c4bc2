/* notify.c - systemd glue: take activated sockets, tell systemd how we are. */
#include "daemon/notify.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include "daemon/log.h"

int notify_listen_fd(const char *path, int type)
{
    /* unset_environment = 0: the data and the admin socket each look
     * through the same inherited set. sd_listen_fds() checks $LISTEN_PID,
     * so a daemon that merely inherited the variables takes nothing. */
    int n = sd_listen_fds(0);

    for (int fd = SD_LISTEN_FDS_START; n > 0 && fd < SD_LISTEN_FDS_START + n; fd++) {
        if (sd_is_socket_unix(fd, type, 1, path, 0) <= 0)
            continue;
        /* The loop accepts until EAGAIN, so the fd must not block;
         * sd_listen_fds() already set FD_CLOEXEC. */
        int fl = fcntl(fd, F_GETFL);
        if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0) {
            log_err("activated socket %s: %s", path, strerror(errno));
            return -1;
        }
        return fd;
    }
    return -1;
}

int notify_init(struct kvt_notify *n)
{
    uint64_t wd = 0;

    memset(n, 0, sizeof(*n));
    n->timer_fd = -1;
    const char *sock = getenv("NOTIFY_SOCKET");
    if (!sock || !*sock)
        return 0;
    n->enabled = true;
    /* WATCHDOG_PID unset is accepted: it then means "this process". */
    if (sd_watchdog_enabled(0, &wd) > 0 && wd > 0)
        n->watchdog_usec = wd;
    /* Ping at half the interval, as sd_watchdog_enabled(3) advises, so a
     * late tick still lands in time; without a watchdog, tick for STATUS. */
    n->tick_usec = NOTIFY_STATUS_USEC;
    if (n->watchdog_usec && n->watchdog_usec / 2 < n->tick_usec)
        n->tick_usec = n->watchdog_usec / 2 ? n->watchdog_usec / 2 : 1;

    n->timer_fd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
    if (n->timer_fd < 0)
        return -errno;
    struct itimerspec its = {
        .it_interval = { .tv_sec = (time_t)(n->tick_usec / 1000000),
                         .tv_nsec = (long)(n->tick_usec % 1000000) * 1000 },
    };
    its.it_value = its.it_interval;
    if (timerfd_settime(n->timer_fd, 0, &its, NULL) < 0)
        return -errno;
    if (n->watchdog_usec)
        log_info("systemd watchdog every %llu ms; pinging every %llu ms",
                 (unsigned long long)(n->watchdog_usec / 1000),
                 (unsigned long long)(n->tick_usec / 1000));
    return 0;
}

void notify_fini(struct kvt_notify *n)
{
    if (n->timer_fd >= 0)
        close(n->timer_fd);
    n->timer_fd = -1;
}

static void send_state(struct kvt_notify *n, const char *state)
{
    if (!n->enabled)
        return;
    int rc = sd_notify(0, state);
    if (rc < 0)
        log_debug("sd_notify: %s", strerror(-rc));
}

static void send_with_status(struct kvt_notify *n, const char *state, const char *status)
{
    char msg[512];

    snprintf(msg, sizeof(msg), "%s%sSTATUS=%s", state, *state ? "\n" : "", status);
    send_state(n, msg);
}

void notify_ready(struct kvt_notify *n, const char *status)
{
    send_with_status(n, "READY=1", status);
}

bool notify_tick(struct kvt_notify *n)
{
    uint64_t expirations = 0;

    if (!n->enabled)
        return false;
    if (read(n->timer_fd, &expirations, sizeof(expirations)) != sizeof(expirations))
        return false;
    if (n->watchdog_usec)
        send_state(n, "WATCHDOG=1");
    n->since_status_usec += expirations * n->tick_usec;
    if (n->since_status_usec < NOTIFY_STATUS_USEC)
        return false;
    n->since_status_usec = 0;
    return true;
}

void notify_status(struct kvt_notify *n, const char *status)
{
    send_with_status(n, "", status);
}

void notify_stopping(struct kvt_notify *n, const char *status)
{
    send_with_status(n, "STOPPING=1", status);
}
