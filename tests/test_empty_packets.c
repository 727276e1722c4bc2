/* test_empty_packets.c - proves that zero-length packets neither leak fds
 * nor pass for a hang-up: 200 empty packets each carrying an fd
 * (SCM_RIGHTS), before and after ATTACH, each get an -EBADMSG reply; the
 * daemon's fd count stays flat; an empty packet without an fd is answered
 * the same way; the connection keeps working (it attaches and is served);
 * and only a real hang-up closes the session. */
#include "tests/helpers.h"

#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>

#include "proto/proto.h"

#define REGION (1u << 20)
#define PACKETS 200

static struct test_daemon d;
static int baseline_fds;

static int sealed_memfd(void)
{
    int fd = memfd_create("kvtier-test-region", MFD_CLOEXEC | MFD_ALLOW_SEALING);

    if (fd < 0 || ftruncate(fd, REGION) < 0 ||
        fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) < 0)
        return -1;
    return fd;
}

static void attach(int sock, uint32_t seq)
{
    struct kvt_attach_req a;
    struct kvt_reply rep;
    int mfd = sealed_memfd();

    assert_true(mfd >= 0);
    memset(&a, 0, sizeof(a));
    proto_hdr(&a.hdr, KVT_OP_ATTACH, sizeof(a), seq);
    a.n_layers = 2;
    a.n_kv_heads = 2;
    a.head_dim = 16;
    a.dtype = KVT_F32;
    a.name_len = 5;
    memcpy(a.name, "empty", 5);
    a.region_bytes = REGION;
    CHECK_OK(test_raw_send(sock, &a, sizeof(a), &mfd, 1));
    CHECK_OK(test_raw_reply(sock, &rep, 30000));
    if (rep.status != 0 || rep.hdr.seq != seq)
        fail_msg("attach: status %d (%s) seq %u", rep.status, rep.reason, rep.hdr.seq);
    close(mfd);
}

/* n empty packets, each with an fd of /dev/null; each must be answered. */
static void send_empty_packets(int sock, int n, int with_fd)
{
    int null_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    struct kvt_reply rep;

    assert_true(null_fd >= 0);
    for (int i = 0; i < n; i++) {
        CHECK_OK(test_raw_send(sock, "", 0, &null_fd, with_fd ? 1 : 0));
        int rc = test_raw_reply(sock, &rep, 30000);
        if (rc)
            fail_msg("empty packet %d: no reply (%s); the daemon closed the session",
                     i, kvt_strerror(rc));
        assert_int_equal(rep.status, -EBADMSG);
        assert_true(rep.reason[0] != '\0');
    }
    close(null_fd);
}

static void empty_packets_with_fds_are_answered_and_closed(void **state)
{
    (void)state;
    int sock = test_raw_connect(d.socket);

    assert_true(sock >= 0);
    send_empty_packets(sock, PACKETS, 1);
    assert_int_equal(daemon_fd_count(&d), baseline_fds + 1);
    attach(sock, 7);
    send_empty_packets(sock, PACKETS, 1);
    assert_int_equal(daemon_fd_count(&d), baseline_fds + 1);
    close(sock);
    assert_int_equal(daemon_wait_fd_count(&d, baseline_fds), baseline_fds);
}

static void empty_packet_without_fd_is_not_a_hang_up(void **state)
{
    (void)state;
    int sock = test_raw_connect(d.socket);

    assert_true(sock >= 0);
    send_empty_packets(sock, 3, 0);
    attach(sock, 9);                      /* still the same, working session */
    assert_int_equal(daemon_fd_count(&d), baseline_fds + 1);
    close(sock);                          /* a real hang-up closes it */
    assert_int_equal(daemon_wait_fd_count(&d, baseline_fds), baseline_fds);
}

static int start_daemon(void **state)
{
    (void)state;
    daemon_start(&d, NULL);
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
        cmocka_unit_test(empty_packets_with_fds_are_answered_and_closed),
        cmocka_unit_test(empty_packet_without_fd_is_not_a_hang_up),
    };
    return cmocka_run_group_tests(tests, start_daemon, stop_daemon);
}
