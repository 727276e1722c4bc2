/* session.h - one connected client: credentials, region, request handling. */
#ifndef KVT_SESSION_H
#define KVT_SESSION_H

#include <stdatomic.h>
#include <stdint.h>
#include <sys/socket.h>

#include "daemon/server.h"

#define SESSION_MAX_PARTS 64
/* Connections refused over a cap wait for their first request to be told
 * so (a reply needs the request's seq); at most this many at once. */
#define SESSION_REFUSED_MAX 64

struct session_part {
    struct work_item item;           /* first: the worker hands us this */
    struct kvt_session *s;
    size_t count;                    /* segments of a request run whole */
};

struct kvt_session {
    struct kvt_handler h;            /* the loop calls session_readable through it */
    struct kvt_server *srv;
    int fd;
    struct ucred cred;
    uint32_t domain;
    const char *refused;             /* over a cap: why; answer once, close */
    uint64_t attach_deadline_ns;     /* closed if not attached by then; 0 once attached */
    uint64_t lost_seen;              /* its sync's cursor on lost records (tiers.h) */
    struct kvt_ns *ns;               /* NULL until attached */
    enum kvt_elem elem;
    char reason[KVT_REASON_MAX];     /* a refusal's text built for this request */
    _Atomic uint32_t raw_refused_outliers;   /* a raw fetch's -ERANGE: the chunk's count */
    uint8_t *region;
    uint64_t region_bytes;
    uint8_t *buf;                    /* the request being served */
    size_t buf_cap;
    /* The request handed to workers (one at a time per session). */
    uint16_t op;
    uint32_t seq;
    uint64_t received_ns;            /* when the request arrived */
    struct kvt_data_view view;
    struct dp_request rq;
    struct dp_segment *segs;
    size_t n_segs;                   /* of a split request */
    unsigned n_parts;                /* of a split request: parts[0..n_parts) */
    /* Parts claim `grain` segments at a time from next_seg (one counter
     * per phase of a store): a part that started late, its worker asleep
     * or busy, takes fewer, and no slice waits alone for a slow thread. */
    size_t grain;
    atomic_size_t next_seg, next_check;
    atomic_uint parts_left;
    atomic_int status;
    struct session_part parts[SESSION_MAX_PARTS];
    struct kvt_session *prev, *next;
};

/* Take an accepted connection; registers it with epoll. Returns 0 or -errno
 * (the fd is closed on failure). */
int session_open(struct kvt_server *srv, int fd);
/* Inside the session module (session.c, session_attach.c): answer one
 * request (status 0 or -errno, why sent with a failure), watch the fd for
 * the next one, and serve an ATTACH whose header is valid (fd: the region
 * passed with it, or -1; closed here). */
void session_send_reply(struct kvt_session *s, uint16_t op, uint32_t seq, int status,
                        uint64_t value, const struct kvt_attach_info *info, const char *why);
void session_rearm(struct kvt_session *s);
void session_attach(struct kvt_session *s, int fd);

/* Close and free (loop thread, no request in flight). */
void session_close(struct kvt_session *s);
/* Close every session whose attach deadline is before now_ns (they never
 * have a request in flight). Returns the earliest deadline left, or 0. */
uint64_t session_expire_unattached(struct kvt_server *srv, uint64_t now_ns);

#endif
