/* server.c - the event loop: accept clients, route readiness, handle signals. */
#include "daemon/server.h"
#include "cache/blocks.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <sys/un.h>
#include <unistd.h>

#include "daemon/log.h"
#include "daemon/sockpath.h"
#include "daemon/session.h"

/* fds the daemon needs besides one per client: its own files, timers,
 * admin connections, and connections refused but not yet answered. */
#define FD_RESERVE (64 + SESSION_REFUSED_MAX)
/* Expired connections are closed in sweeps at least this far apart, each
 * one log line, however the deadlines are spread. */
#define ATTACH_SWEEP_GAP_NS (250 * 1000000ull)

static void accept_clients(struct kvt_handler *h, uint32_t events);
static void handle_signals(struct kvt_handler *h, uint32_t events);
static void notify_timer(struct kvt_handler *h, uint32_t events);
static void attach_timer(struct kvt_handler *h, uint32_t events);

static int listen_on(struct kvt_server *srv)
{
    int fd = sockpath_listen("socket", srv->cfg.socket, SOCK_SEQPACKET,
                             (mode_t)srv->cfg.socket_mode, 128, &srv->socket_owned);
    if (fd < 0)
        return fd;
    srv->listen_fd = fd;
    return 0;
}

/* Clients cost one fd each, and the usual soft limit (1024) is below what
 * a large max-clients needs: take what the hard limit allows, and say so
 * when even that is short (clients then wait in the backlog; see
 * accept_pause.h). */
static void raise_fd_limit(const struct kvt_config *cfg)
{
    rlim_t want = (rlim_t)cfg->max_clients + FD_RESERVE;
    struct rlimit lim;

    if (getrlimit(RLIMIT_NOFILE, &lim) < 0)
        return;
    if (cfg->share_hot) {
        /* Every shared hot block holds an fd: take all the hard limit
         * gives, and leave the clients theirs. */
        rlim_t all = lim.rlim_max == RLIM_INFINITY ? (rlim_t)1 << 20 : lim.rlim_max;
        if (lim.rlim_cur < all) {
            lim.rlim_cur = all;
            if (setrlimit(RLIMIT_NOFILE, &lim) < 0)
                getrlimit(RLIMIT_NOFILE, &lim);
        }
        uint64_t spare = lim.rlim_cur > want ? (uint64_t)(lim.rlim_cur - want) : 0;
        blocks_set_shared(true, spare);
        log_info("share-hot: up to %llu hot blocks shared with clients (RLIMIT_NOFILE %llu)",
                 (unsigned long long)spare, (unsigned long long)lim.rlim_cur);
    }
    if (lim.rlim_cur >= want)
        return;
    lim.rlim_cur = lim.rlim_max != RLIM_INFINITY && lim.rlim_max < want ? lim.rlim_max : want;
    if (setrlimit(RLIMIT_NOFILE, &lim) < 0)
        getrlimit(RLIMIT_NOFILE, &lim);
    if (lim.rlim_cur < want)
        log_warn("RLIMIT_NOFILE is %llu, below max-clients %u + %u for the daemon itself: "
                 "raise LimitNOFILE= (connections beyond it wait in the backlog)",
                 (unsigned long long)lim.rlim_cur, cfg->max_clients, FD_RESERVE);
}

static int add_timer(struct kvt_server *srv, int *fd, struct kvt_handler *h)
{
    struct epoll_event ev = { .events = EPOLLIN, .data.ptr = h };

    *fd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
    if (*fd < 0 || epoll_ctl(srv->epfd, EPOLL_CTL_ADD, *fd, &ev) < 0)
        return -errno;
    return 0;
}

static void arm_timer(int fd, uint64_t at_ns, int flags)
{
    struct itimerspec its = { .it_value = { .tv_sec = (time_t)(at_ns / 1000000000u),
                                            .tv_nsec = (long)(at_ns % 1000000000u) } };
    if (timerfd_settime(fd, flags, &its, NULL) < 0)
        log_warn("timerfd_settime: %s", strerror(errno));
}

/* ---- context names on the cold tier ----------------------------------------- */

/* The tiers' name_of hook: the name a named store left in the registry
 * for the object of key, with its namespace's identity. The namespace must
 * be key's domain's (ids are per domain: this only guards the rule). */
static int name_of(void *arg, const struct kvt_chunk_key *key, struct kvt_cold_name *out)
{
    struct kvt_server *srv = arg;
    struct kvt_ns *ns = registry_find(&srv->reg, key->ns_id);
    int rc = -ENOENT;

    if (ns && ns->domain == key->domain)
        rc = registry_name_lookup(ns, key->obj_hi, key->obj_lo, out->name, sizeof(out->name));
    if (rc >= 0) {
        out->name_len = (uint32_t)rc;
        out->ns_id = ns->id;
        out->obj_hi = key->obj_hi;
        out->obj_lo = key->obj_lo;
        out->domain = ns->domain;
        out->layers = ns->layers;
        out->heads = ns->heads;
        out->dim = ns->dim;
        out->chunk_tokens = ns->chunk_tokens;
        out->model_len = (uint32_t)strlen(ns->name);
        memcpy(out->model, ns->name, out->model_len + 1);
        rc = 0;
    }
    registry_put(&srv->reg, ns);
    return rc;
}

/* After a restart: the names the cold tier kept go back into the registry,
 * under idle entries of their namespaces, so `namespaces` and `contexts`
 * list what they listed before. A name whose namespace identity does not
 * hash to its id is refused (and counted by the cold tier). */
static void restore_names(struct kvt_server *srv)
{
    struct kvt_cold_name *names;
    size_t n, restored = 0, full = 0;

    if (!srv->tiers.cold)
        return;
    if (cold_names(srv->tiers.cold, &names, &n)) {
        log_warn("cold tier: out of memory listing context names; they are not listed");
        return;
    }
    for (size_t i = 0; i < n; i++) {
        const struct kvt_cold_name *c = &names[i];
        int rc = registry_restore(&srv->reg, c->ns_id, c->domain, c->model, c->layers,
                                  c->heads, c->dim, c->chunk_tokens, c->name, c->name_len,
                                  c->obj_hi, c->obj_lo);
        if (rc == -EBADMSG) {
            log_warn("cold tier: a name record's namespace (domain %u) does not match its "
                     "id 0x%016llx; skipped", (unsigned)c->domain, (unsigned long long)c->ns_id);
            cold_name_refuse(srv->tiers.cold, c);
        } else if (rc) {
            full++;
        } else {
            restored++;
        }
    }
    if (n)
        log_info("cold tier: %zu context names restored%s", restored,
                 full ? " (some not: too many namespaces or names, or no memory)" : "");
    free(names);
}

int server_init(struct kvt_server *srv, const struct kvt_config *cfg,
                const char *config_path)
{
    sigset_t mask;
    int rc;

    memset(srv, 0, sizeof(*srv));
    srv->epfd = srv->listen_fd = srv->sig_fd = -1;
    srv->admin.fd = -1;
    srv->notify.timer_fd = -1;
    srv->attach_timer_fd = srv->accept.timer_fd = -1;
    srv->on_listen.fn = accept_clients;
    srv->on_signal.fn = handle_signals;
    srv->on_notify_timer.fn = notify_timer;
    srv->on_attach_timer.fn = attach_timer;
    srv->accept.n_clients = &srv->n_sessions;
    srv->cfg = *cfg;
    srv->config_path = config_path;

    /* Signals arrive as fd readiness, so the loop handles them between
     * requests. Blocked before any thread starts: threads inherit the mask,
     * so no worker can take a SIGTERM's default action. */
    sigemptyset(&mask);
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGINT);
    sigaddset(&mask, SIGHUP);
    sigaddset(&mask, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &mask, NULL);

    raise_fd_limit(cfg);
    rc = registry_init(&srv->reg);
    if (rc)
        return rc;

    srv->dp.simd = simd_best();
    srv->dp.lossless = cfg->quant_none;
    atomic_store(&srv->dp.outliers, cfg->outliers);
    rc = hot_create(cfg->hot_bytes, &srv->dp.hot);
    if (rc)
        return rc;
    srv->dp.tiers = &srv->tiers;
    rc = tiers_open(&srv->tiers, srv->dp.hot, cfg, name_of, srv);
    if (rc)
        return rc;
    restore_names(srv);
    rc = tiers_remote_open(&srv->tiers, cfg);
    if (rc)
        return rc;
    rc = workers_start(cfg->workers, &srv->workers);
    if (rc) {
        log_err("cannot start %u workers: %s", cfg->workers, strerror(-rc));
        return rc;
    }

    srv->sig_fd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
    srv->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (srv->sig_fd < 0 || srv->epfd < 0)
        return -errno;

    rc = accept_pause_init(&srv->accept, srv->epfd);
    if (rc)
        return rc;
    rc = listen_on(srv);
    if (rc)
        return rc;
    rc = accept_pause_add(&srv->accept, srv->listen_fd, &srv->on_listen);
    if (rc)
        return rc;
    struct epoll_event ev = { .events = EPOLLIN, .data.ptr = &srv->on_signal };
    if (epoll_ctl(srv->epfd, EPOLL_CTL_ADD, srv->sig_fd, &ev) < 0)
        return -errno;
    rc = add_timer(srv, &srv->attach_timer_fd, &srv->on_attach_timer);
    if (rc)
        return rc;
    rc = admin_open(&srv->admin, srv, cfg->admin_socket, srv->epfd, &srv->accept);
    if (rc)
        return rc;
    rc = notify_init(&srv->notify);
    if (rc)
        return rc;
    ev.data.ptr = &srv->on_notify_timer;
    if (srv->notify.timer_fd >= 0 &&
        epoll_ctl(srv->epfd, EPOLL_CTL_ADD, srv->notify.timer_fd, &ev) < 0)
        return -errno;
    log_info("kvtierd %s serving %s: hot tier %llu MiB, %s, %u outliers, chunk %u tokens, "
             "%u workers, kernels %s",
             KVT_VERSION, cfg->socket, (unsigned long long)(cfg->hot_bytes >> 20),
             cfg->quant_none ? "lossless" : "int8", cfg->quant_none ? 0 : cfg->outliers,
             cfg->chunk_tokens, cfg->workers, srv->dp.simd->name);
    return 0;
}

static void accept_clients(struct kvt_handler *h, uint32_t events)
{
    struct kvt_server *srv = KVT_OWNER(h, struct kvt_server, on_listen);

    (void)events;
    for (;;) {
        int fd = accept4(srv->listen_fd, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED &&
                !accept_pause_failed(&srv->accept, "data socket", errno))
                log_warn("accept: %s", strerror(errno));
            return;
        }
        accept_pause_ok(&srv->accept);
        int rc = session_open(srv, fd);
        if (rc && rc != -EUSERS)       /* refusals log themselves, rate-limited */
            log_warn("cannot open a session: %s", strerror(-rc));
    }
}

void server_attach_deadline(struct kvt_server *srv, uint64_t deadline_ns)
{
    if (srv->attach_timer_ns && srv->attach_timer_ns <= deadline_ns)
        return;
    srv->attach_timer_ns = deadline_ns;
    arm_timer(srv->attach_timer_fd, deadline_ns, TFD_TIMER_ABSTIME);
}

/* The attach timer fired: expire_unattached runs after this batch. */
static void attach_timer(struct kvt_handler *h, uint32_t events)
{
    (void)events;
    KVT_OWNER(h, struct kvt_server, on_attach_timer)->attach_due = true;
}

/* Close the sessions whose attach deadline has passed and re-arm for the
 * next one. Runs after a batch of events, never inside one: a session it
 * closes may have an event later in the same batch. */
static void expire_unattached(struct kvt_server *srv)
{
    uint64_t expirations;

    if (read(srv->attach_timer_fd, &expirations, sizeof(expirations)) < 0 && errno != EAGAIN)
        log_warn("attach timer: %s", strerror(errno));
    srv->attach_timer_ns = 0;
    uint64_t now = latency_now_ns();
    uint64_t next = session_expire_unattached(srv, now);
    if (next)
        server_attach_deadline(srv, next > now + ATTACH_SWEEP_GAP_NS ? next
                                                                    : now + ATTACH_SWEEP_GAP_NS);
}

/* SIGHUP: re-read the config file and apply what can change live. */
static void reload(struct kvt_server *srv)
{
    struct kvt_config cfg;
    char err[512];

    if (!srv->config_path) {
        log_info("SIGHUP: no config file to reload");
        return;
    }
    config_defaults(&cfg);
    if (config_load_file(&cfg, srv->config_path, err, sizeof(err))) {
        log_err("SIGHUP: %s; keeping the running config", err);
        return;
    }
    server_apply_live(srv, &cfg);
    /* The remote tier keeps what it started with: say so when the file
     * now says otherwise, rather than let it look applied. */
    if (strcmp(cfg.remote, srv->cfg.remote) || cfg.remote_replicas != srv->cfg.remote_replicas ||
        cfg.remote_timeout_ms != srv->cfg.remote_timeout_ms ||
        strcmp(cfg.remote_key_file, srv->cfg.remote_key_file) ||
        cfg.n_rdomain != srv->cfg.n_rdomain ||
        memcmp(cfg.rdomain_uid, srv->cfg.rdomain_uid, sizeof(cfg.rdomain_uid)) ||
        memcmp(cfg.rdomain_name, srv->cfg.rdomain_name, sizeof(cfg.rdomain_name)))
        log_warn("SIGHUP: the remote tier keys of %s differ from the running ones; they "
                 "are read at start only and apply after a restart", srv->config_path);
    log_info("SIGHUP: reloaded %s (log-level %s, poll-us %u, hot-bytes %llu, hot-quota %llu, "
             "cold-quota %llu, outliers %u)", srv->config_path,
             log_level_name((int)cfg.log_level), (unsigned)cfg.poll_us,
             (unsigned long long)cfg.hot_bytes, (unsigned long long)cfg.hot_quota,
             (unsigned long long)cfg.cold_quota, (unsigned)cfg.outliers);
}

/* SIGTERM or SIGINT sets stopping: the loop leaves after this batch. */
static void handle_signals(struct kvt_handler *h, uint32_t events)
{
    struct kvt_server *srv = KVT_OWNER(h, struct kvt_server, on_signal);
    struct signalfd_siginfo si;

    (void)events;
    while (read(srv->sig_fd, &si, sizeof(si)) == sizeof(si)) {
        if (si.ssi_signo == SIGTERM || si.ssi_signo == SIGINT) {
            log_info("%s: stopping", si.ssi_signo == SIGTERM ? "SIGTERM" : "SIGINT");
            srv->stopping = true;
        } else if (si.ssi_signo == SIGHUP) {
            reload(srv);
        }
    }
}

/* The STATUS= line systemctl status shows: live figures, refreshed by the
 * timer every NOTIFY_STATUS_USEC. */
static void format_status(struct kvt_server *srv, char *buf, size_t len)
{
    struct kvt_hot_stats hs;

    hot_stats(srv->dp.hot, &hs);
    snprintf(buf, len, "%u clients, hot %llu/%llu MiB, %lu requests served",
             srv->n_sessions, (unsigned long long)(hs.used_bytes >> 20),
             (unsigned long long)(hs.budget_bytes >> 20),
             (unsigned long)atomic_load(&srv->requests));
}

static void notify_timer(struct kvt_handler *h, uint32_t events)
{
    struct kvt_server *srv = KVT_OWNER(h, struct kvt_server, on_notify_timer);
    char status[256];

    (void)events;
    if (!notify_tick(&srv->notify))
        return;
    format_status(srv, status, sizeof(status));
    notify_status(&srv->notify, status);
}

/* Wait for events. For poll-us after the last event the loop polls instead
 * of sleeping: waking an idle core costs 20-100 us on a virtual machine
 * (an inter-processor interrupt through the hypervisor), several times the
 * cost of serving a decode step, and a client's next call usually follows
 * within microseconds. The price is at most poll-us of CPU per burst. */
static int wait_events(struct kvt_server *srv, struct epoll_event *evs, int max)
{
    uint64_t poll_ns = (uint64_t)srv->cfg.poll_us * 1000, start = 0;

    for (;;) {
        int n = epoll_wait(srv->epfd, evs, max, poll_ns ? 0 : -1);
        if (n != 0)
            return n;
        uint64_t now = latency_now_ns();
        if (!start)
            start = now;
        if (now - start >= poll_ns)
            return epoll_wait(srv->epfd, evs, max, -1);
    }
}

int server_run(struct kvt_server *srv)
{
    struct epoll_event evs[64];
    char status[256];

    /* server_init has bound and listened on the sockets: from here a
     * client's connect succeeds, so systemd may start what depends on us. */
    format_status(srv, status, sizeof(status));
    notify_ready(&srv->notify, status);
    /* One SSD read here would stall every client, and so would faulting
     * in a new chunk's block: what needs either goes to a worker
     * (session.c). */
    tiers_forbid_disk(true);
    hot_forbid_new_blocks(true);
    while (!srv->stopping) {
        int n = wait_events(srv, evs, 64);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            log_err("epoll_wait: %s", strerror(errno));
            return -errno;
        }
        srv->attach_due = false;
        /* Each fd's handler (loop.h); a stop takes effect before the next
         * event, as a request after the signal is not served. */
        for (int i = 0; i < n && !srv->stopping; i++) {
            struct kvt_handler *h = evs[i].data.ptr;
            h->fn(h, evs[i].events);
        }
        if (srv->attach_due && !srv->stopping)
            expire_unattached(srv);
    }
    tiers_forbid_disk(false);        /* the final flush waits for the disk, as it must */
    hot_forbid_new_blocks(false);
    notify_stopping(&srv->notify, "stopping: finishing requests, writing the hot tier to the cold tier");
    /* Stop accepting first, then let every queued request finish, so each
     * client in the middle of a call gets its answer. */
    accept_pause_remove(&srv->accept, srv->listen_fd);
    close(srv->listen_fd);
    srv->listen_fd = -1;
    workers_stop(srv->workers);
    srv->workers = NULL;
    /* The warm-restart promise: everything stored is on the cold tier,
     * fsynced, before we exit. */
    if (srv->tiers.cold) {
        struct kvt_hot_stats hs;
        hot_stats(srv->dp.hot, &hs);
        log_info("writing the hot tier (%llu chunks) to the cold tier",
                 (unsigned long long)hs.chunks);
        /* Fails also when chunks were lost to write errors since the last
         * admin flush reported them: the next start will not have them. */
        int rc = tiers_flush(&srv->tiers, &srv->tiers.flush_lost_seen, NULL, NULL);
        if (rc) {
            log_err("final flush failed: %s; not everything stored is on the cold tier "
                    "(see the errors above), exiting with failure", strerror(-rc));
            return rc;
        }
    }
    log_info("stopped after %lu requests", (unsigned long)atomic_load(&srv->requests));
    return 0;
}

void server_fini(struct kvt_server *srv)
{
    workers_stop(srv->workers);
    srv->workers = NULL;
    while (srv->sessions)
        session_close(srv->sessions);
    admin_close(&srv->admin);
    if (srv->listen_fd >= 0)
        close(srv->listen_fd);
    if (srv->socket_owned)
        unlink(srv->cfg.socket);
    if (srv->sig_fd >= 0)
        close(srv->sig_fd);
    if (srv->attach_timer_fd >= 0)
        close(srv->attach_timer_fd);
    accept_pause_fini(&srv->accept);
    notify_fini(&srv->notify);
    if (srv->epfd >= 0)
        close(srv->epfd);
    tiers_close(&srv->tiers);
    if (srv->dp.hot)
        hot_destroy(srv->dp.hot);
    registry_fini(&srv->reg);
}
