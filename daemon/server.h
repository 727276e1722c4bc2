/* server.h - kvtierd's event loop: listening socket, sessions, signals. */
#ifndef KVT_SERVER_H
#define KVT_SERVER_H

#include <stdatomic.h>
#include <stdbool.h>

#include "daemon/config.h"
#include "daemon/latency.h"
#include "daemon/notify.h"
#include "daemon/registry.h"
#include "daemon/store.h"
#include "daemon/tiers.h"
#include "daemon/workers.h"

struct kvt_session;
struct kvt_admin_conn;
struct kvt_job;
struct kvt_admin_work;

struct kvt_server {
    struct kvt_config cfg;
    const char *config_path;         /* re-read on SIGHUP; NULL if none */
    int epfd, listen_fd, sig_fd;
    bool socket_owned;               /* we created the socket file: unlink it */
    struct kvt_registry reg;
    struct kvt_datapath dp;
    struct kvt_tiers tiers;
    struct kvt_workers *workers;
    struct kvt_session *sessions;    /* doubly linked, loop thread only */
    unsigned n_sessions;             /* served: counted against the caps */
    unsigned n_refused;              /* over a cap, waiting to be told so */
    /* Connection limits (loop thread only; admin stats). */
    uint64_t refused_max_clients;    /* refused: max-clients reached */
    uint64_t refused_per_uid;        /* refused: max-clients-per-uid reached */
    uint64_t refused_unanswered;     /* refused, and closed without a reply */
    uint64_t attach_timeouts;        /* closed: no attach in attach-timeout-ms */
    uint64_t accept_fd_shortages;    /* accepts that failed for lack of fds */
    uint64_t refusals_unlogged;      /* refusals since the last refusal log line */
    uint64_t refusal_logged_ns;
    /* Sessions that must attach by a deadline: one timer for the earliest. */
    int attach_timer_fd;
    uint64_t attach_timer_ns;        /* deadline it is armed for; 0 = disarmed */
    /* Out of fds: the listening sockets leave epoll until this timer fires. */
    int accept_pause_fd;
    bool accept_paused;
    uint64_t shortage_since_ns;      /* first failure of this burst; 0 = none */
    uint64_t shortage_failures;      /* failed accepts in this burst */
    atomic_ulong requests;           /* served, for logs */
    struct kvt_latency store_latency, fetch_latency;   /* receipt to reply */
    struct kvt_notify notify;        /* systemd: READY, STATUS, WATCHDOG */
    /* Data traffic by op, counted when a request succeeds (admin stats). */
    atomic_ulong stores, fetches;
    atomic_ulong bytes_in, bytes_out;   /* client K+V bytes stored / fetched */
    /* Admin socket (daemon/admin.c), loop thread only. */
    int admin_fd;
    bool admin_owned;                /* we created the admin socket file */
    struct kvt_admin_conn *admin_conns;
    struct kvt_job *job;             /* the long admin command running, or NULL */
    struct kvt_admin_work *job_work; /* what it does */
    struct kvt_admin_conn *job_conn; /* waits for its reply; NULL if gone */
};

/* Set up everything and bind the sockets. Returns 0 or -errno (logged). */
int server_init(struct kvt_server *srv, const struct kvt_config *cfg,
                const char *config_path);
/* Serve until SIGTERM/SIGINT; then stop accepting, finish in-flight
 * requests, close every session. Returns 0 on a clean stop. */
int server_run(struct kvt_server *srv);
/* Apply the keys of cfg that can change while running (log-level, poll-us,
 * hot-bytes, watermarks, quotas): SIGHUP and admin "config set" both do. */
void server_apply_live(struct kvt_server *srv, const struct kvt_config *cfg);
/* Release everything; unlinks the socket file. srv may be half-built. */
void server_fini(struct kvt_server *srv);

/* accept() on a listening socket failed with err: when it is for lack of
 * fds or memory (EMFILE, ENFILE, ENOBUFS, ENOMEM) both listening sockets
 * leave epoll for ACCEPT_PAUSE_MS, so the loop does not spin on a backlog
 * it cannot take, and the burst is logged once. Returns true when err was
 * such a shortage (the caller stops accepting), false otherwise. */
bool server_accept_failed(struct kvt_server *srv, const char *which, int err);
/* A session must attach by deadline_ns (CLOCK_MONOTONIC): make sure the
 * attach timer fires by then. */
void server_attach_deadline(struct kvt_server *srv, uint64_t deadline_ns);

/* Event-loop tags: epoll data.ptr points at one of these first members. */
enum ev_kind { EV_LISTEN = 1, EV_SIGNAL, EV_SESSION, EV_ADMIN_LISTEN, EV_ADMIN,
              EV_TIMER, EV_JOB, EV_ATTACH_TIMER, EV_ACCEPT_PAUSE };

#endif
