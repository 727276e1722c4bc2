/* test_oversize_reply.c - proves that a request larger than max-frame is
 * answered with -EMSGSIZE in a reply that carries the request's own op and
 * seq, so a client can match it to what it sent: for a STORE, a FETCH and an
 * ATTACH over the limit, each on a connection that stays usable. */
#include "tests/helpers.h"

#include <stdlib.h>
#include <string.h>

#include "proto/proto.h"

#define MAX_FRAME (64u << 10)            /* the daemon's --max-frame */

static struct test_daemon d;

static void over_max_frame_reply_echoes_op_and_seq(void **state)
{
    (void)state;
    const uint16_t ops[] = { KVT_OP_STORE, KVT_OP_FETCH, KVT_OP_ATTACH };
    size_t big = MAX_FRAME + 4096;
    uint8_t *msg = calloc(1, big);
    struct kvt_reply rep;
    int sock = test_raw_connect(d.socket);

    assert_non_null(msg);
    assert_true(sock >= 0);
    for (size_t i = 0; i < sizeof(ops) / sizeof(ops[0]); i++) {
        uint32_t seq = 0x5e000 + (uint32_t)i;
        proto_hdr((struct kvt_msg_hdr *)msg, ops[i], (uint32_t)big, seq);
        CHECK_OK(test_raw_send(sock, msg, big, NULL, 0));
        CHECK_OK(test_raw_reply(sock, &rep, 30000));
        assert_int_equal(rep.status, -EMSGSIZE);
        assert_string_equal(rep.reason, "message larger than max-frame");
        if (rep.hdr.seq != seq || rep.hdr.op != (ops[i] | KVT_OP_REPLY))
            fail_msg("reply op 0x%x seq %u for op 0x%x seq %u", rep.hdr.op, rep.hdr.seq,
                     ops[i], seq);
    }
    /* The connection is still served: a short junk packet gets its answer. */
    CHECK_OK(test_raw_send(sock, "junk", 4, NULL, 0));
    CHECK_OK(test_raw_reply(sock, &rep, 30000));
    assert_int_equal(rep.status, -EBADMSG);
    close(sock);
    free(msg);
}

static int start_daemon(void **state)
{
    (void)state;
    daemon_start(&d, "--max-frame", "64K", NULL);
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
        cmocka_unit_test(over_max_frame_reply_echoes_op_and_seq),
    };
    return cmocka_run_group_tests(tests, start_daemon, stop_daemon);
}
