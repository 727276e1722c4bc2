/* admin_cmd.h - the admin commands, for the admin socket's framing in
 * admin.c. */
#ifndef KVT_ADMIN_CMD_H
#define KVT_ADMIN_CMD_H

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "daemon/admin.h"
#include "daemon/server.h"

/* One admin connection (admin.c owns it; commands read srv and set the
 * progress flags of a deferred reply). */
struct kvt_admin_conn {
    struct kvt_handler h;            /* the loop calls admin.c through it */
    struct kvt_admin *admin;
    struct kvt_server *srv;          /* admin->srv, what the commands serve */
    int fd;                          /* non-blocking */
    pid_t pid;                       /* the peer, for logs */
    uint32_t events;                 /* what epoll watches on fd now */
    bool waiting;                    /* a deferred reply is pending */
    bool progress;                   /* it wants progress lines meanwhile */
    bool progress_sent;              /* at least one went out */
    bool closing;                    /* closes once its output is out */
    bool doomed;                     /* closes at its next event (conn_doom) */
    struct kvt_admin_listing *listing;   /* its listing running, or NULL */
    char *out;                       /* reply bytes the socket has not taken: */
    size_t out_off, out_len, out_cap;   /* out[out_off, out_len) */
    size_t len;                      /* bytes of an unfinished line in buf */
    char buf[ADMIN_LINE_MAX + 2];    /* the line, its '\n', then a NUL */
    struct kvt_admin_conn *prev, *next;
};

/* A handler returns this instead of 0 when the reply is sent later (flush,
 * the listings):
 * the connection reads no further request until then. */
#define ADMIN_DEFERRED 1

/* A listing (namespaces, contexts) running on a thread of its own for one
 * connection: any number may run, one per connection, beside the long
 * command. admin.c owns it; it outlives its connection if that goes. */
struct kvt_admin_listing {
    struct kvt_handler on_job;       /* its job reported */
    struct kvt_admin *admin;
    struct kvt_admin_conn *conn;     /* waits for its reply; NULL if gone */
    struct kvt_job *job;
    struct kvt_admin_work *work;
    struct kvt_admin_listing *prev, *next;
};

/* Run fn(job, w) on a job thread for c (admin.c); c gets the reply that
 * admin_job_result makes of w when it ends. Takes w (freed on failure).
 * Returns ADMIN_DEFERRED or -errno. */
int admin_start_listing(struct kvt_admin_conn *c, int (*fn)(struct kvt_job *, void *),
                        struct kvt_admin_work *w);

/* Run the command called name: fills reply (which holds "ok": true) and
 * returns 0, returns ADMIN_DEFERRED after starting a long command (its
 * reply comes from admin.c's job_event), or returns -errno with a sentence in
 * err. */
int admin_dispatch(struct kvt_admin_conn *c, const char *name, const cJSON *req,
                   cJSON *reply, char *err, size_t errlen);

/* The commands kept in files of their own: "stats" (admin_stats.c) and
 * "config" (admin_config.c), called as admin_dispatch's handlers are. */
int admin_cmd_stats(struct kvt_admin_conn *c, const cJSON *req, cJSON *reply,
                    char *err, size_t errlen);
int admin_cmd_config(struct kvt_admin_conn *c, const cJSON *req, cJSON *reply,
                     char *err, size_t errlen);

/* The work a job runs: its name ("flush", "evict", "contexts", ...) and,
 * once the job ended with rc, its reply fields (rc == 0) or its error
 * sentence. admin_work_free frees it (NULL: nothing). */
const char *admin_work_name(const struct kvt_admin_work *w);
void admin_work_free(struct kvt_admin_work *w);
void admin_job_result(const struct kvt_admin_work *w, uint64_t done, int rc, cJSON *reply,
                      char *err, size_t errlen);

#endif
