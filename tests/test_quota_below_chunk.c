/* test_quota_below_chunk.c - proves that a hot-quota smaller than one chunk
 * of the client's model is reported as that, not as "chunks are pinned":
 * a store into an empty daemon with hot-quota 64K and a model whose chunks
 * take over 512 KiB gets -EDQUOT, and the reason the client reads through
 * kvt_last_error says the quota is smaller than one chunk and gives the
 * chunk's bytes (at least its int8 data block). */
#include "tests/helpers.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define LAYERS 1
#define HEADS 8
#define DIM 128
#define CHUNK 256
/* int8 data block of one chunk (cache/chunk.h): scales, then K and V. */
#define CHUNK_DATA_BYTES (CHUNK * HEADS * 4 * 2 + CHUNK * HEADS * DIM * 2)

static struct test_daemon d;

static void quota_below_one_chunk_says_so(void **state)
{
    static uint16_t k[HEADS * DIM], v[HEADS * DIM];
    kvt_model m = test_model("big-chunks", LAYERS, HEADS, DIM, KVT_F16, CHUNK);
    kvt_client *c;
    const char *prefix = "hot-quota is smaller than one chunk of this model (";

    (void)state;
    daemon_start(&d, "--hot-quota", "64K", NULL);
    CHECK_OK(kvt_connect(d.socket, &m, &c));
    test_fill(k, KVT_F16, 1, 0, 0, 1, HEADS, DIM);
    test_fill(v, KVT_F16, 2, 0, 0, 1, HEADS, DIM);
    CHECK_RC(kvt_store(c, "ctx", 0, 0, 1, k, v), -EDQUOT);

    const char *why = kvt_last_error(c);
    const char *at = strstr(why, prefix);
    if (!at)
        fail_msg("reason is \"%s\"", why);
    char *end;
    unsigned long long bytes = strtoull(at + strlen(prefix), &end, 10);
    assert_string_equal(end, " bytes)");
    assert_true(bytes >= CHUNK_DATA_BYTES);
    kvt_disconnect(c);
}

static int teardown(void **state)
{
    (void)state;
    daemon_cleanup(&d);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(quota_below_one_chunk_says_so, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
