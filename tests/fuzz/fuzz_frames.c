/* fuzz_frames.c - data-socket packets, with the fds a client may attach to
 * them, through the daemon's real request path: a fresh struct kvt_server
 * per input (server_init), a session on one end of a SOCK_SEQPACKET
 * socketpair (session_open), the loop's events dispatched to
 * session_readable, and the attach/store/fetch/length/drop/match/sync
 * handlers behind it. The input layout is in fuzz_input.h.
 *
 * Checked for every input, besides what the sanitizers catch:
 *   - every packet, an empty one too, gets exactly one reply, within
 *     FUZZ_REPLY_TIMEOUT_MS, and the reply is well-formed: 152 bytes, magic,
 *     version, its op the request's with the reply bit, its seq echoed,
 *     status 0 or -errno, reserved zero, a NUL-terminated reason that is
 *     empty on success, an attach block only on a successful ATTACH and
 *     then with the limits of the configuration;
 *   - no fd and no mapping of a client region is left once the session
 *     and the server are gone (fd count and /proc/self/maps before/after).
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <syslog.h>
#include <unistd.h>

#include "daemon/session.h"
#include "proto/proto.h"
#include "tests/fuzz/fuzz_input.h"
#include "tests/fuzz/fuzz_server.h"

#define REGION_NAME "kvt-fuzz-region"
#define MAX_FDS FUZZ_MAX_FDS

struct client {
    struct kvt_server *srv;
    int fd;                          /* our end; -1 when hung up */
    unsigned packets, replies;
};

static void client_connect(struct client *c)
{
    int sv[2];

    FUZZ_CHECK(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) == 0, "%s",
               strerror(errno));
    c->fd = sv[0];
    FUZZ_CHECK(session_open(c->srv, sv[1]) == 0, "session_open failed");
}

/* Hang up and wait until the loop has closed the session. */
static void client_hang_up(struct client *c)
{
    if (c->fd < 0)
        return;
    close(c->fd);
    c->fd = -1;
    for (int waited = 0; c->srv->n_sessions; waited += 10) {
        FUZZ_CHECK(waited < FUZZ_REPLY_TIMEOUT_MS, "the session outlived its client");
        fuzz_server_pump(c->srv, 10);
    }
}

static int memfd_of(uint64_t bytes, unsigned seals, const uint8_t *fill)
{
    int fd = memfd_create(REGION_NAME, MFD_CLOEXEC | MFD_ALLOW_SEALING);

    FUZZ_CHECK(fd >= 0 && ftruncate(fd, (off_t)bytes) == 0, "%s", strerror(errno));
    if (fill) {
        uint8_t *p = mmap(NULL, bytes, PROT_WRITE, MAP_SHARED, fd, 0);
        FUZZ_CHECK(p != MAP_FAILED, "%s", strerror(errno));
        for (uint64_t i = 0; i < bytes; i++)
            p[i] = fill[i % FRAME_FILL_BYTES];
        munmap(p, bytes);
    }
    if (seals)
        FUZZ_CHECK(fcntl(fd, F_ADD_SEALS, seals) == 0, "%s", strerror(errno));
    return fd;
}

static int fd_of_kind(unsigned kind, uint64_t region_bytes, const uint8_t *fill)
{
    int fd, p[2];

    switch (kind) {
    case FRAME_FD_REGION:
        return memfd_of(region_bytes, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL, fill);
    case FRAME_FD_UNSEALED:
        return memfd_of(region_bytes, 0, fill);
    case FRAME_FD_WRITE_SEALED:
        return memfd_of(region_bytes, F_SEAL_SHRINK | F_SEAL_WRITE, fill);
    case FRAME_FD_FILE:
        fd = open("/tmp", O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
        FUZZ_CHECK(fd >= 0 && ftruncate(fd, (off_t)region_bytes) == 0, "%s", strerror(errno));
        return fd;
    case FRAME_FD_PIPE:
        FUZZ_CHECK(pipe2(p, O_CLOEXEC) == 0, "%s", strerror(errno));
        close(p[1]);
        return p[0];
    }
    return -1;
}

/* The fds the control byte asks for, into fds[]; returns how many. */
static int make_fds(unsigned kind, const uint8_t *pkt, size_t len, const uint8_t *fill,
                    int *fds)
{
    uint64_t region_bytes = FRAME_REGION_DEFAULT;

    if (len >= offsetof(struct kvt_attach_req, name)) {
        uint64_t want;
        memcpy(&want, pkt + offsetof(struct kvt_attach_req, region_bytes), sizeof(want));
        if (want >= 1 && want <= FRAME_REGION_MAX)
            region_bytes = want;
    }
    if (kind == FRAME_FD_NONE)
        return 0;
    if (kind != FRAME_FD_SEVERAL) {
        fds[0] = fd_of_kind(kind, region_bytes, fill);
        return 1;
    }
    static const unsigned several[MAX_FDS] = {
        FRAME_FD_REGION, FRAME_FD_PIPE, FRAME_FD_FILE, FRAME_FD_UNSEALED,
        FRAME_FD_WRITE_SEALED, FRAME_FD_REGION,
    };
    for (int i = 0; i < MAX_FDS; i++)
        fds[i] = fd_of_kind(several[i], region_bytes, fill);
    return MAX_FDS;
}

static void send_packet(struct client *c, const uint8_t *pkt, size_t len, const int *fds,
                        int n_fds)
{
    fuzz_send_packet(c->fd, pkt, len, fds, n_fds);
    c->packets++;
}

static void check_reply(const struct kvt_reply *r, const uint8_t *pkt, size_t len,
                        uint32_t max_spans)
{
    struct kvt_msg_hdr h = { 0 };
    static const struct kvt_attach_info no_info;

    /* Even a packet cut at max-frame names its op and seq (protocol.md). */
    if (len >= sizeof(h))
        memcpy(&h, pkt, sizeof(h));
    uint16_t op = (uint16_t)((h.op & ~KVT_OP_REPLY) | KVT_OP_REPLY);
    FUZZ_CHECK(r->hdr.magic == KVT_PROTO_MAGIC && r->hdr.version == KVT_PROTO_VERSION &&
               r->hdr.len == sizeof(*r), "bad reply header");
    FUZZ_CHECK(r->hdr.op == op, "reply op 0x%x, want 0x%x", r->hdr.op, op);
    FUZZ_CHECK(r->hdr.seq == h.seq, "reply seq %u, want %u", r->hdr.seq, h.seq);
    FUZZ_CHECK(r->status <= 0 && r->status >= -4095, "status %d", r->status);
    FUZZ_CHECK(memchr(r->reason, '\0', sizeof(r->reason)), "reason not terminated");
    FUZZ_CHECK(r->status != 0 || r->reason[0] == '\0', "a reason on success: %s", r->reason);
    FUZZ_CHECK(r->status != 0 || (len >= sizeof(h) && len <= FUZZ_MAX_FRAME),
               "success for a %zu-byte packet", len);
    if (r->hdr.op == (KVT_OP_ATTACH | KVT_OP_REPLY) && r->status == 0) {
        FUZZ_CHECK(r->attach.chunk_tokens >= 1 && r->attach.chunk_tokens <= KVT_CHUNK_MAX_TOKENS &&
                   r->attach.max_frame == FUZZ_MAX_FRAME && r->attach.max_spans == max_spans &&
                   r->attach.ns_id != 0, "bad attach info");
        FUZZ_CHECK(r->attach.quant ? r->outliers == 0
                                   : (r->outliers & KVT_OUTLIERS_KNOWN) &&
                                     (r->outliers & ~KVT_OUTLIERS_KNOWN) <= KVT_RAW_OUTLIERS_MAX,
                   "attach reply outliers 0x%x", r->outliers);
    } else {
        FUZZ_CHECK(r->outliers == 0, "outliers 0x%x in a reply that is not a successful attach",
                   r->outliers);
        FUZZ_CHECK(!memcmp(&r->attach, &no_info, sizeof(no_info)),
                   "attach info in a reply that is not a successful attach");
    }
}

/* Wait for the reply to the packet just sent (or the hang-up an empty
 * packet earns), serving the loop meanwhile. */
static void await_reply(struct client *c, const uint8_t *pkt, size_t len)
{
    struct kvt_reply r;

    for (int waited = 0;; waited += 5) {
        FUZZ_CHECK(waited < FUZZ_REPLY_TIMEOUT_MS, "no reply to a %zu-byte packet", len);
        fuzz_server_pump(c->srv, 0);
        struct pollfd pfd = { .fd = c->fd, .events = POLLIN };
        if (poll(&pfd, 1, 5) == 0)
            continue;
        ssize_t n = recv(c->fd, &r, sizeof(r), MSG_DONTWAIT | MSG_TRUNC);
        if (n < 0 && errno == EAGAIN)
            continue;
        /* An empty packet, with or without fds, is a bad request too: the
         * daemon answers it and never hangs up on a connected client. */
        FUZZ_CHECK(n != 0 && !(n < 0 && errno == ECONNRESET), "hung up on a %zu-byte packet",
                   len);
        FUZZ_CHECK(n == (ssize_t)sizeof(r), "reply of %zd bytes", n);
        c->replies++;
        check_reply(&r, pkt, len, c->srv->cfg.max_spans);
        return;
    }
}

/* Mappings of client regions left in this process. */
static int region_mappings(void)
{
    FILE *f = fopen("/proc/self/maps", "r");
    char line[512];
    int n = 0;

    FUZZ_CHECK(f, "%s", strerror(errno));
    while (fgets(line, sizeof(line), f))
        if (strstr(line, REGION_NAME))
            n++;
    fclose(f);
    return n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static uint8_t pkt[UINT16_MAX + 1];
    struct kvt_server srv;
    struct client c = { .srv = &srv, .fd = -1 };
    int fds_before = fuzz_fd_count(), maps_before = region_mappings();
    size_t at = 0;

    fuzz_server_start(&srv);
    client_connect(&c);
    while (at < size) {
        unsigned ctl = data[at++], kind = ctl & FRAME_CTL_FD_MASK;
        int fds[MAX_FDS], n_fds;

        if (kind == FRAME_FD_RECONNECT) {
            client_hang_up(&c);
            client_connect(&c);
            continue;
        }
        size_t len = 0;
        if (at + 2 <= size)
            len = (size_t)data[at] | (size_t)data[at + 1] << 8;
        at += at + 2 <= size ? 2 : size - at;
        if (len > size - at)
            len = size - at;
        memcpy(pkt, data + at, len);
        at += len;
        const uint8_t *fill = NULL;
        if ((ctl & FRAME_CTL_FILL) && size - at >= FRAME_FILL_BYTES) {
            fill = data + at;
            at += FRAME_FILL_BYTES;
        }
        if ((ctl & FRAME_CTL_FIX_HDR) && len >= sizeof(struct kvt_msg_hdr)) {
            struct kvt_msg_hdr h;
            memcpy(&h, pkt, sizeof(h));
            proto_hdr(&h, h.op, (uint32_t)len, h.seq);
            memcpy(pkt, &h, sizeof(h));
        }
        n_fds = make_fds(kind, pkt, len, fill, fds);
        send_packet(&c, pkt, len, fds, n_fds);
        for (int i = 0; i < n_fds; i++)
            close(fds[i]);           /* in flight, the kernel holds them */
        await_reply(&c, pkt, len);
    }
    client_hang_up(&c);
    fuzz_server_stop(&srv);

    int fds_after = fuzz_fd_count(), maps_after = region_mappings();
    FUZZ_CHECK(fds_after == fds_before, "%d fds open before the input, %d after",
               fds_before, fds_after);
    FUZZ_CHECK(maps_after == maps_before, "%d region mappings before the input, %d after",
               maps_before, maps_after);
    return 0;
}
