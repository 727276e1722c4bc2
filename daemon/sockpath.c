/* sockpath.c - parent directory and stale-file handling for listening sockets. */
#include "daemon/sockpath.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "daemon/config.h"
#include "daemon/log.h"
#include "daemon/notify.h"

int sockpath_make_parent_dir(const char *path)
{
    char dir[CONFIG_PATH_MAX];

    snprintf(dir, sizeof(dir), "%s", path);
    char *slash = strrchr(dir, '/');
    if (!slash || slash == dir)
        return 0;
    *slash = '\0';
    if (mkdir(dir, 0755) < 0 && errno != EEXIST)
        return -errno;
    return 0;
}

int sockpath_clear_stale(const struct sockaddr_un *sa, int type)
{
    int fd = socket(AF_UNIX, type | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    int alive = connect(fd, (const struct sockaddr *)sa, sizeof(*sa)) == 0;
    close(fd);
    if (alive)
        return -EADDRINUSE;
    if (unlink(sa->sun_path) < 0 && errno != ENOENT)
        return -errno;
    return 0;
}

int sockpath_listen(const char *what, const char *path, int type, mode_t mode,
                    int backlog, bool *owned)
{
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    int fd, rc;

    *owned = false;
    if (strlen(path) >= sizeof(sa.sun_path)) {
        log_err("%s path %s is longer than %zu bytes", what, path, sizeof(sa.sun_path) - 1);
        return -ENAMETOOLONG;
    }
    memcpy(sa.sun_path, path, strlen(path) + 1);
    /* Socket activation: systemd created, bound and owns the file. */
    fd = notify_listen_fd(path, type);
    if (fd >= 0) {
        log_info("using the socket-activated %s %s", what, path);
        return fd;
    }
    rc = sockpath_make_parent_dir(path);
    if (rc) {
        log_err("cannot create the directory of %s: %s", path, strerror(-rc));
        return rc;
    }
    rc = sockpath_clear_stale(&sa, type);
    if (rc) {
        log_err("%s %s: %s", what, path,
                rc == -EADDRINUSE ? "another kvtierd is serving it" : strerror(-rc));
        return rc;
    }
    fd = socket(AF_UNIX, type | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        goto err_errno;
    /* Linux creates the socket file with the socket inode's mode (less the
     * umask): set it first, so the file is never more open than `mode`, not
     * even between bind and chmod. */
    if (fchmod(fd, mode) < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
        goto err_errno;
    *owned = true;
    if (chmod(path, mode) < 0 || listen(fd, backlog) < 0)
        goto err_errno;
    return fd;
err_errno:
    rc = -errno;
    log_err("cannot listen on %s: %s", path, strerror(-rc));
    if (fd >= 0)
        close(fd);
    return rc;
}
