/* lock_owner.h - the process holding a file's flock (from /proc/locks). */
#ifndef KVT_LOCK_OWNER_H
#define KVT_LOCK_OWNER_H

#include <sys/types.h>

/* The pid holding an flock on the file at path, or 0 when none is found
 * (no lock, or /proc/locks unreadable). */
pid_t lock_owner(const char *path);

#endif
