/* server.h - kvtierd's event loop: listening socket, sessions, signals. */
#ifndef KVT_SERVER_H
#define KVT_SERVER_H

#include <stdatomic.h>
#include <stdbool.h>

#include "daemon/accept_pause.h"
#include "daemon/admin.h"
#include "daemon/config.h"
#include "daemon/latency.h"
#include "daemon/loop.h"
#include "daemon/notify.h"
#include "daemon/registry.h"
#include "daemon/store.h"
#include "daemon/tiers.h"
#include "daemon/workers.h"

struct kvt_session;

struct kvt_server {
    struct kvt_config cfg;
    const char *config_path;         /* re-read on SIGHUP; NULL if none */
    int epfd, listen_fd, sig_fd;
    bool socket_owned;               /* we created the socket file: unlink it */
    /* What the loop calls for the server's own fds (loop.h). */
    struct kvt_handler on_listen, on_signal, on_notify_timer, on_attach_timer;
    bool stopping;                   /* SIGTERM/SIGINT seen: leave the loop */
    bool attach_due;                 /* the attach timer fired in this batch */
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
    uint64_t refusals_unlogged;      /* refusals since the last refusal log line */
    uint64_t refusal_logged_ns;
    /* Sessions that must attach by a deadline: one timer for the earliest. */
    int attach_timer_fd;
    uint64_t attach_timer_ns;        /* deadline it is armed for; 0 = disarmed */
    /* Out of fds: the listening sockets leave epoll for a while. */
    struct kvt_accept_pause accept;
    atomic_ulong requests;           /* served, for logs */
    struct kvt_latency store_latency, fetch_latency;   /* receipt to reply */
    struct kvt_notify notify;        /* systemd: READY, STATUS, WATCHDOG */
    /* Data traffic by op, counted when a request succeeds (admin stats). */
    atomic_ulong stores, fetches;
    atomic_ulong locates;            /* LOCATE requests answered */
    atomic_ulong bytes_in, bytes_out;   /* client K+V bytes stored / fetched */
    /* Small requests the loop handed to a worker because they needed the
     * disk (a chunk only on SSD, drop_lock taken): admin stats. */
    atomic_ulong disk_handoffs;
    atomic_ulong block_handoffs;      /* small requests that needed a new block */
    struct kvt_admin admin;          /* the admin socket's side (daemon/admin.c) */
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

/* A session must attach by deadline_ns (CLOCK_MONOTONIC): make sure the
 * attach timer fires by then. */
void server_attach_deadline(struct kvt_server *srv, uint64_t deadline_ns);

#endif
