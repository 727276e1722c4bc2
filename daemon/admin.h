/* admin.h - the admin socket: newline-delimited JSON commands for operators. */
#ifndef KVT_ADMIN_H
#define KVT_ADMIN_H

#include "daemon/server.h"

/* Longest request line; a longer one gets an error reply and the connection
 * is closed (there is no way to find the start of the next request). */
#define ADMIN_LINE_MAX (64u << 10)
/* Unread reply bytes a connection may leave queued before the next reply
 * closes it instead: a client pipelining requests it does not read would
 * otherwise grow the daemon without limit. One reply may be larger (the
 * first is always queued). */
#define ADMIN_OUT_MAX (4u << 20)

/* Create (or adopt, when systemd passed it by socket activation) the
 * admin socket at srv->cfg.admin_socket, mode 0600, and register it with
 * srv->epfd. Returns 0 or -errno (logged). */
int admin_listen(struct kvt_server *srv);
/* Loop callbacks: the listening socket is readable / a connection is ready
 * (readable, writable or hung up: the connection knows what it waits for). */
void admin_accept(struct kvt_server *srv);
void admin_readable(struct kvt_admin_conn *conn);
/* Loop callback: the running long command reported progress or its end. */
void admin_job_event(struct kvt_server *srv);
/* Close every admin connection and the listening socket (unlinks the file
 * if we created it). srv may be half-built. */
void admin_close(struct kvt_server *srv);

#endif
