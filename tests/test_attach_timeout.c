/* test_attach_timeout.c - proves that connections which never attach do not
 * hold a place for ever: with attach-timeout-ms 300 a connection that never
 * speaks, and one that only sends junk, are both closed by the daemon (the
 * client sees the hang-up), counted in the admin stats as attach_timeouts and
 * logged; an attached session that was idle for longer than that stays open
 * and is served; and the daemon's fd count is back to one client. */
#include "tests/helpers.h"

#include <fcntl.h>
#include <poll.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>

#include "proto/proto.h"

#define REGION (1u << 20)

static struct test_daemon d;
static int baseline_fds;

/* An attached raw connection (the library would reconnect by itself, and
 * hide a close). */
static int raw_attached(void)
{
    struct kvt_attach_req a;
    struct kvt_reply rep;
    int sock = test_raw_connect(d.socket);
    int mfd = memfd_create("kvtier-test-region", MFD_CLOEXEC | MFD_ALLOW_SEALING);

    assert_true(sock >= 0 && mfd >= 0);
    assert_int_equal(ftruncate(mfd, REGION), 0);
    assert_int_equal(fcntl(mfd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW), 0);
    memset(&a, 0, sizeof(a));
    proto_hdr(&a.hdr, KVT_OP_ATTACH, sizeof(a), 1);
    a.n_layers = 1;
    a.n_kv_heads = 2;
    a.head_dim = 16;
    a.dtype = KVT_F32;
    a.name_len = 7;
    memcpy(a.name, "timeout", 7);
    a.region_bytes = REGION;
    CHECK_OK(test_raw_send(sock, &a, sizeof(a), &mfd, 1));
    CHECK_OK(test_raw_reply(sock, &rep, 30000));
    assert_int_equal(rep.status, 0);
    close(mfd);
    return sock;
}

/* Wait (up to 30 s) for the daemon to hang up on sock. */
static int hung_up(int sock)
{
    struct pollfd p = { .fd = sock, .events = POLLIN };
    char buf[256];

    for (;;) {
        if (poll(&p, 1, 30000) != 1)
            return 0;
        ssize_t n = recv(sock, buf, sizeof(buf), 0);
        if (n <= 0)
            return 1;               /* a reply to junk may come first */
    }
}

static void unattached_connections_are_closed_attached_stay(void **state)
{
    (void)state;
    char reply[8192];
    struct kvt_reply rep;
    uint8_t req[64];

    int attached = raw_attached();
    int silent = test_raw_connect(d.socket);
    int junk = test_raw_connect(d.socket);
    assert_true(silent >= 0 && junk >= 0);
    CHECK_OK(test_raw_send(junk, "junk", 4, NULL, 0));

    if (!hung_up(silent))
        fail_msg("a silent connection was still open after 30 s");
    if (!hung_up(junk))
        fail_msg("a connection that never attached was still open after 30 s");
    close(silent);
    close(junk);

    /* The attached one is older than both and has been idle all along. */
    struct kvt_data_req *r = (struct kvt_data_req *)req;
    size_t len = proto_data_size(3, 0, 0);
    memset(req, 0, sizeof(req));
    proto_hdr(&r->hdr, KVT_OP_LENGTH, (uint32_t)len, 2);
    r->name_len = 3;
    memcpy(req + sizeof(*r), "ctx", 3);
    CHECK_OK(test_raw_send(attached, req, len, NULL, 0));
    CHECK_OK(test_raw_reply(attached, &rep, 30000));
    if (rep.status != 0)
        fail_msg("attached session: LENGTH status %d (%s)", rep.status, rep.reason);
    assert_int_equal(daemon_wait_fd_count(&d, baseline_fds + 1), baseline_fds + 1);

    CHECK_OK(admin_request(&d, "{\"cmd\":\"stats\"}", reply, sizeof(reply)));
    if (!strstr(reply, "\"attach_timeouts\":2"))
        fail_msg("stats do not count 2 attach timeouts: %s", reply);
    assert_true(test_file_contains(d.log, "did not attach within 300 ms"));
    close(attached);
}

static int start_daemon(void **state)
{
    (void)state;
    daemon_start(&d, "--attach-timeout-ms", "300", NULL);
    baseline_fds = daemon_idle_fd_count(&d);
    assert_true(baseline_fds > 0);
    return 0;
}

static int stop_daemon(void **state)
{
    (void)state;
    daemon_stop(&d);
    daemon_cleanup(&d);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(unattached_connections_are_closed_attached_stay),
    };
    return cmocka_run_group_tests(tests, start_daemon, stop_daemon);
}
