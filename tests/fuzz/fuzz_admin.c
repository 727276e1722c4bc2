/* fuzz_admin.c - admin socket request lines through the daemon's real admin
 * path: a fresh struct kvt_server per input (server_init) holding one
 * attached client with a stored context (so namespaces, clients, contexts
 * and evict have something to list and drop), a real connection to its
 * admin socket accepted and each line read by the handlers the admin side
 * registers with the loop (daemon/loop.h), run by the command table, long
 * commands on their job thread with their replies sent from the job's
 * handler. Only the loop's handlers are called, so the framing can change
 * underneath.
 *
 * The input is the byte stream a client writes; it is sent one line at a
 * time, each reply read before the next line goes. Checked, besides what the
 * sanitizers catch:
 *   - every non-empty line gets exactly one reply line (after any progress
 *     lines) within FUZZ_REPLY_TIMEOUT_MS, a JSON object with a boolean
 *     "ok", and an "error" string when "ok" is false; progress lines are
 *     objects with a "progress" object;
 *   - an unfinished last line gets no reply;
 *   - no fd is left once the connection and the server are gone.
 */
#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "daemon/admin_cmd.h"
#include "daemon/session.h"
#include "proto/proto.h"
#include "tests/fuzz/fuzz_server.h"

#define REGION_BYTES (64u << 10)
#define REPLY_MAX (1u << 20)

/* Serve the loop until the data client's reply has come. */
static void data_call(struct kvt_server *srv, int fd, const void *pkt, size_t len, int region)
{
    struct kvt_reply r;

    fuzz_send_packet(fd, pkt, len, &region, region >= 0);
    for (int waited = 0;; waited += 5) {
        FUZZ_CHECK(waited < FUZZ_REPLY_TIMEOUT_MS, "no reply from the data socket");
        fuzz_server_pump(srv, 5);
        ssize_t n = recv(fd, &r, sizeof(r), MSG_DONTWAIT);
        if (n < 0 && errno == EAGAIN)
            continue;
        FUZZ_CHECK(n == sizeof(r) && r.status == 0, "setup request failed: %zd %d %s", n,
                   r.status, r.reason);
        return;
    }
}

/* One attached client that stored 20 tokens of context "ctx-a" in layer 0:
 * returns its fd (the session stays open for the whole input). */
static int attach_client(struct kvt_server *srv)
{
    struct kvt_attach_req a = { .n_layers = 2, .n_kv_heads = 2, .head_dim = 8, .dtype = 0,
                                .chunk_tokens = 16, .name_len = 10,
                                .region_bytes = REGION_BYTES, .name = "fuzz-model" };
    struct {
        struct kvt_data_req r;
        char name[8];
        struct kvt_wire_span span;
    } store = {
        .r = { .addr = KVT_ADDR_NAMED, .n_spans = 1, .name_len = 5 },
        .name = "ctx-a",
        .span = { .layer = 0, .token_start = 0, .n_tokens = 20, .k_off = 0, .v_off = 8192 },
    };
    int sv[2];

    FUZZ_CHECK(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) == 0, "%s",
               strerror(errno));
    FUZZ_CHECK(session_open(srv, sv[1]) == 0, "session_open failed");
    int region = memfd_create("kvt-fuzz-admin", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    FUZZ_CHECK(region >= 0 && ftruncate(region, REGION_BYTES) == 0 &&
               fcntl(region, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW) == 0, "%s",
               strerror(errno));
    proto_hdr(&a.hdr, KVT_OP_ATTACH, sizeof(a), 1);
    data_call(srv, sv[0], &a, sizeof(a), region);
    close(region);
    proto_hdr(&store.r.hdr, KVT_OP_STORE, sizeof(store), 2);
    data_call(srv, sv[0], &store, sizeof(store), -1);
    return sv[0];
}

static int admin_connect(struct kvt_server *srv)
{
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", srv->cfg.admin_socket);
    FUZZ_CHECK(fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0, "%s",
               strerror(errno));
    for (int waited = 0; !srv->admin.conns; waited += 5) {
        FUZZ_CHECK(waited < FUZZ_REPLY_TIMEOUT_MS, "admin connection not accepted");
        fuzz_server_pump(srv, 5);
    }
    return fd;
}

struct reader {
    char *buf;
    size_t len;
};

/* Check one reply line; returns true when it is the final reply (not a
 * progress line). */
static bool check_line(const char *line, size_t len)
{
    cJSON *j = cJSON_ParseWithLength(line, len);
    bool final;

    FUZZ_CHECK(cJSON_IsObject(j), "reply is not a JSON object: %.*s", (int)len, line);
    const cJSON *progress = cJSON_GetObjectItemCaseSensitive(j, "progress");
    const cJSON *ok = cJSON_GetObjectItemCaseSensitive(j, "ok");
    if (progress) {
        FUZZ_CHECK(cJSON_IsObject(progress) && !ok, "bad progress line: %.*s", (int)len, line);
        final = false;
    } else {
        FUZZ_CHECK(cJSON_IsBool(ok), "reply without a boolean ok: %.*s", (int)len, line);
        const cJSON *err = cJSON_GetObjectItemCaseSensitive(j, "error");
        FUZZ_CHECK(cJSON_IsTrue(ok) || (cJSON_IsString(err) && err->valuestring[0]),
                   "failure without an error sentence: %.*s", (int)len, line);
        final = true;
    }
    cJSON_Delete(j);
    return final;
}

/* Serve the loop until a final reply line has come; extra bytes after it
 * would be a second reply to one line. */
static void await_reply(struct kvt_server *srv, int fd, struct reader *rd)
{
    for (int waited = 0;; waited += 5) {
        FUZZ_CHECK(waited < FUZZ_REPLY_TIMEOUT_MS, "no admin reply");
        fuzz_server_pump(srv, 0);
        struct pollfd pfd = { .fd = fd, .events = POLLIN };
        if (poll(&pfd, 1, 5) == 0)
            continue;
        FUZZ_CHECK(rd->len < REPLY_MAX, "reply longer than %u bytes", REPLY_MAX);
        ssize_t n = recv(fd, rd->buf + rd->len, REPLY_MAX - rd->len, MSG_DONTWAIT);
        if (n < 0 && errno == EAGAIN)
            continue;
        FUZZ_CHECK(n > 0, "admin connection closed before its reply");
        rd->len += (size_t)n;
        char *nl;
        while ((nl = memchr(rd->buf, '\n', rd->len))) {
            size_t line = (size_t)(nl - rd->buf);
            bool final = check_line(rd->buf, line);
            rd->len -= line + 1;
            memmove(rd->buf, nl + 1, rd->len);
            if (final) {
                FUZZ_CHECK(rd->len == 0, "bytes after the final reply: %.*s", (int)rd->len,
                           rd->buf);
                return;
            }
        }
    }
}

static void hang_up(struct kvt_server *srv, int admin_fd)
{
    close(admin_fd);
    for (int waited = 0; srv->admin.conns; waited += 5) {
        FUZZ_CHECK(waited < FUZZ_REPLY_TIMEOUT_MS, "admin connection outlived its client");
        fuzz_server_pump(srv, 5);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static char reply_buf[REPLY_MAX];
    struct reader rd = { .buf = reply_buf };
    struct kvt_server srv;
    int fds_before = fuzz_fd_count();
    size_t at = 0;

    /* A line longer than the limit closes the connection (test_admin
     * proves that); below it every line is answered, which is checked. */
    if (size > ADMIN_LINE_MAX)
        return 0;
    fuzz_server_start(&srv);
    int client = attach_client(&srv);
    int fd = admin_connect(&srv);
    while (at < size) {
        const uint8_t *nl = memchr(data + at, '\n', size - at);
        size_t len = nl ? (size_t)(nl - (data + at)) + 1 : size - at;
        FUZZ_CHECK(send(fd, data + at, len, MSG_NOSIGNAL) == (ssize_t)len, "%s",
                   strerror(errno));
        at += len;
        if (nl && len > 1)
            await_reply(&srv, fd, &rd);
    }
    /* An unfinished line is not answered: give the loop a turn to show it. */
    fuzz_server_pump(&srv, 0);
    struct pollfd pfd = { .fd = fd, .events = POLLIN };
    FUZZ_CHECK(poll(&pfd, 1, 0) == 0, "a reply nobody asked for");
    hang_up(&srv, fd);
    close(client);
    fuzz_server_stop(&srv);

    int fds_after = fuzz_fd_count();
    FUZZ_CHECK(fds_after == fds_before, "%d fds open before the input, %d after",
               fds_before, fds_after);
    return 0;
}
