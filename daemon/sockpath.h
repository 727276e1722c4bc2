/* sockpath.h - preparing the path of a listening Unix socket. */
#ifndef KVT_SOCKPATH_H
#define KVT_SOCKPATH_H

#include <sys/un.h>

/* Create the socket's parent directory (one level, mode 0755) if missing.
 * Returns 0 or -errno. */
int sockpath_make_parent_dir(const char *path);

/* A socket file nobody answers on is a leftover of a daemon that died and is
 * removed; one that answers belongs to a running daemon: -EADDRINUSE. type is
 * the socket type served there (SOCK_SEQPACKET, SOCK_STREAM). */
int sockpath_clear_stale(const struct sockaddr_un *sa, int type);

#endif
