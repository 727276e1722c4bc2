/* admin.h - the admin socket: newline-delimited JSON commands for operators. */
#ifndef KVT_ADMIN_H
#define KVT_ADMIN_H

#include <stdbool.h>

#include "daemon/accept_pause.h"
#include "daemon/loop.h"

/* Longest request line; a longer one gets an error reply and the connection
 * is closed (there is no way to find the start of the next request). */
#define ADMIN_LINE_MAX (64u << 10)
/* Unread reply bytes a connection may leave queued before the next reply
 * closes it instead: a client pipelining requests it does not read would
 * otherwise grow the daemon without limit. One reply may be larger (the
 * first is always queued). */
#define ADMIN_OUT_MAX (4u << 20)

struct kvt_server;
struct kvt_admin_conn;
struct kvt_admin_work;
struct kvt_admin_listing;
struct kvt_job;

/* The admin side's own state, loop thread only. The commands read and
 * change the server they administer (srv); the socket, its connections and
 * the long command running are the admin side's. */
/* Listings (namespaces, contexts) running at once, each on a thread of its
 * own that outlives its connection: a bound, as admin connections are not
 * bounded. Well above an operator and a few monitors polling at once (the
 * backpressure test runs 10); past it a listing is refused as busy. */
#define ADMIN_LISTINGS_MAX 16u

struct kvt_admin {
    struct kvt_handler on_accept;    /* the listening socket is readable */
    struct kvt_handler on_job;       /* the running job reported */
    struct kvt_server *srv;
    int epfd;
    struct kvt_accept_pause *pause;  /* shared with the data socket */
    const char *path;
    int fd;                          /* listening; -1 if none */
    bool owned;                      /* we created the socket file: unlink it */
    struct kvt_admin_conn *conns;
    struct kvt_admin_listing *listings;  /* listings running, doubly linked */
    unsigned n_listings;             /* how many: at most ADMIN_LISTINGS_MAX */
    struct kvt_job *job;             /* the long admin command running, or NULL */
    struct kvt_admin_work *job_work; /* what it does */
    struct kvt_admin_conn *job_conn; /* waits for its reply; NULL if gone */
};

/* Create (or adopt, when systemd passed it by socket activation) the
 * admin socket at path, mode 0600, and register it with epfd through
 * pause. a is filled in (admin_close may be called on it even on failure).
 * Returns 0 or -errno (logged). */
int admin_open(struct kvt_admin *a, struct kvt_server *srv, const char *path, int epfd,
               struct kvt_accept_pause *pause);
/* Close every admin connection and the listening socket (unlinks the file
 * if we created it); waits for a job still running. */
void admin_close(struct kvt_admin *a);

#endif
