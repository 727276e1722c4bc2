/* notify.h - systemd glue: socket activation and sd_notify (READY, STATUS,
 * WATCHDOG, STOPPING). Every call is a no-op when not run by systemd. */
#ifndef KVT_NOTIFY_H
#define KVT_NOTIFY_H

#include <stdbool.h>
#include <stdint.h>

/* How often STATUS= is refreshed, whatever the watchdog interval. */
#define NOTIFY_STATUS_USEC (5u * 1000000u)

struct kvt_notify {
    bool enabled;              /* $NOTIFY_SOCKET is set */
    int timer_fd;              /* periodic tick for the loop; -1 when disabled */
    uint64_t watchdog_usec;    /* WatchdogSec= in µs, 0 when off */
    uint64_t tick_usec;        /* timer period */
    uint64_t since_status_usec;/* time since the last STATUS= */
};

/* The inherited (socket-activated) listening fd of `type` (SOCK_SEQPACKET
 * or SOCK_STREAM) bound to the Unix socket `path`, set non-blocking and
 * close-on-exec; -1 when none was passed (not activated, or not for this
 * path). The caller owns the fd; systemd owns the socket file. */
int notify_listen_fd(const char *path, int type);

/* Read $NOTIFY_SOCKET and $WATCHDOG_USEC; when notifying, create the
 * timerfd the loop must watch (n->timer_fd). Returns 0 or -errno. */
int notify_init(struct kvt_notify *n);
/* Close the timerfd. n may be half-built (timer_fd -1). */
void notify_fini(struct kvt_notify *n);

/* READY=1 with a first STATUS= line. */
void notify_ready(struct kvt_notify *n, const char *status);
/* The timerfd fired: sends WATCHDOG=1 when the watchdog is on, and returns
 * true when a fresh STATUS= is due (then call notify_status). */
bool notify_tick(struct kvt_notify *n);
/* STATUS=<text>. */
void notify_status(struct kvt_notify *n, const char *status);
/* STOPPING=1 with a STATUS= line. */
void notify_stopping(struct kvt_notify *n, const char *status);

#endif
