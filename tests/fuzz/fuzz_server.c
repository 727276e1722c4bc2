/* fuzz_server.c - a real kvtierd server inside the fuzzing process: its
 * sockets in a private temporary directory, its events dispatched here. */
#include "tests/fuzz/fuzz_server.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <syslog.h>
#include <unistd.h>

#include "daemon/admin.h"
#include "daemon/log.h"
#include "daemon/session.h"

static char fuzz_dir[256];

static void remove_dir(void)
{
    if (fuzz_dir[0])
        rmdir(fuzz_dir);
}

static const char *private_dir(void)
{
    if (!fuzz_dir[0]) {
        const char *tmp = getenv("TMPDIR");
        snprintf(fuzz_dir, sizeof(fuzz_dir), "%s/kvtier-fuzz.XXXXXX", tmp && *tmp ? tmp : "/tmp");
        if (!mkdtemp(fuzz_dir)) {
            perror("fuzz: mkdtemp");
            abort();
        }
        atexit(remove_dir);
    }
    return fuzz_dir;
}

void fuzz_config(struct kvt_config *cfg)
{
    const char *dir = private_dir();
    const char *level = getenv("KVT_FUZZ_LOG");

    config_defaults(cfg);
    snprintf(cfg->socket, sizeof(cfg->socket), "%s/kvtier.sock", dir);
    snprintf(cfg->admin_socket, sizeof(cfg->admin_socket), "%s/admin.sock", dir);
    snprintf(cfg->cold_path, sizeof(cfg->cold_path), "%s/cold.kvt", dir);
    cfg->hot_bytes = 4u << 20;
    cfg->cold_bytes = 0;
    cfg->workers = 2;
    cfg->poll_us = 0;
    cfg->max_frame = FUZZ_MAX_FRAME;
    cfg->max_client_shm = FUZZ_MAX_CLIENT_SHM;
    cfg->log_level = level && log_parse_level(level) >= 0 ? (uint32_t)log_parse_level(level)
                                                         : LOG_ERR;
}

void fuzz_server_start(struct kvt_server *srv)
{
    struct kvt_config cfg;

    fuzz_config(&cfg);
    log_set_level((int)cfg.log_level);
    int rc = server_init(srv, &cfg, NULL);
    if (rc) {
        fprintf(stderr, "fuzz: server_init: %s\n", strerror(-rc));
        abort();
    }
}

void fuzz_server_stop(struct kvt_server *srv)
{
    server_fini(srv);
}

int fuzz_server_pump(struct kvt_server *srv, int timeout_ms)
{
    struct epoll_event evs[16];
    int n = epoll_wait(srv->epfd, evs, 16, timeout_ms);

    /* Every fd carries its handler (daemon/loop.h), as in server_run. */
    for (int i = 0; i < n; i++) {
        struct kvt_handler *h = evs[i].data.ptr;
        h->fn(h, evs[i].events);
    }
    return n < 0 ? 0 : n;
}

void fuzz_send_packet(int fd, const void *pkt, size_t len, const int *fds, int n_fds)
{
    union {
        struct cmsghdr align;
        char buf[CMSG_SPACE(FUZZ_MAX_FDS * sizeof(int))];
    } ctl;
    struct iovec iov = { .iov_base = (void *)pkt, .iov_len = len };
    struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };

    FUZZ_CHECK(n_fds >= 0 && n_fds <= FUZZ_MAX_FDS, "%d fds", n_fds);
    if (n_fds) {
        memset(&ctl, 0, sizeof(ctl));
        mh.msg_control = ctl.buf;
        mh.msg_controllen = CMSG_SPACE((size_t)n_fds * sizeof(int));
        struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
        cm->cmsg_level = SOL_SOCKET;
        cm->cmsg_type = SCM_RIGHTS;
        cm->cmsg_len = CMSG_LEN((size_t)n_fds * sizeof(int));
        memcpy(CMSG_DATA(cm), fds, (size_t)n_fds * sizeof(int));
    }
    FUZZ_CHECK(sendmsg(fd, &mh, MSG_NOSIGNAL) == (ssize_t)len, "sendmsg: %s", strerror(errno));
}
