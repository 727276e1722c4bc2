/* sockpath.h - preparing the path of a listening Unix socket. */
#ifndef KVT_SOCKPATH_H
#define KVT_SOCKPATH_H

#include <stdbool.h>
#include <sys/types.h>
#include <sys/un.h>

/* Create the socket's parent directory (one level, mode 0755) if missing.
 * Returns 0 or -errno. */
int sockpath_make_parent_dir(const char *path);

/* A socket file nobody answers on is a leftover of a daemon that died and is
 * removed; one that answers belongs to a running daemon: -EADDRINUSE. type is
 * the socket type served there (SOCK_SEQPACKET, SOCK_STREAM). */
int sockpath_clear_stale(const struct sockaddr_un *sa, int type);

/* A listening socket of `type` at path: the one systemd passed for it if
 * the daemon was socket-activated (*owned = false: never unlink it), else a
 * new one bound with `mode` (*owned = true once the file exists). The fd is
 * non-blocking and close-on-exec. `what` names it in log lines. Returns the
 * fd or -errno (logged). */
int sockpath_listen(const char *what, const char *path, int type, mode_t mode,
                    int backlog, bool *owned);

#endif
