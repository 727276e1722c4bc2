/* test_cold_tier.c - proves the cold tier's promises against a real daemon and
 * a real file, with io_uring and again with the pread/pwrite fallback:
 * a working set of 4x hot-bytes stored by one process is fetched by another
 * within the int8 bound; kvt_sync then kill -9 keeps everything synced;
 * SIGTERM then restart keeps everything stored; a flipped byte on disk is a
 * miss (never wrong data) and nothing else is lost; a cold file too small for
 * the working set serves the newest data without errors; a partly filled
 * chunk on a recycled block reaches the disk with zeros, not with the
 * rows of the chunk that had the block before. */
#include "tests/helpers.h"

#include <cjson/cJSON.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define LAYERS 4
#define HEADS 8
#define DIM 128
#define TOKENS 256            /* one chunk per layer per context */
#define ROW (HEADS * DIM * 2) /* f16 bytes per token */

static struct test_daemon d;
static const char *io_mode = "uring";
static char cold_path[400];

/* int8 bytes + scales per context: 4 layers x 256 tokens x (2 KiB + 64 B). */
#define CTX_HOT_BYTES ((size_t)LAYERS * TOKENS * (2 * HEADS * DIM + 2 * HEADS * 4))

static char cold_dir[64];

/* The cold file lives in its own temp dir, made before the daemon's. */
static void start(const char *hot, const char *cold)
{
    snprintf(cold_dir, sizeof(cold_dir), "/var/tmp/kvtier-cold-XXXXXX");
    assert_non_null(mkdtemp(cold_dir));
    snprintf(cold_path, sizeof(cold_path), "%s/cold.kvt", cold_dir);
    daemon_start(&d, "--hot-bytes", hot, "--cold-bytes", cold, "--cold-io", io_mode,
                 "--cold-region-bytes", "4M", "--chunk-tokens", "256",
                 "--cold-path", cold_path, NULL);
}

static void cleanup(void)
{
    char cmd[128];
    daemon_cleanup(&d);
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", cold_dir);
    if (system(cmd) != 0)
        fprintf(stderr, "cannot remove %s\n", cold_dir);
}

static void restart(const char *hot, const char *cold)
{
    daemon_restart(&d, "--hot-bytes", hot, "--cold-bytes", cold, "--cold-io", io_mode,
                   "--cold-region-bytes", "4M", "--chunk-tokens", "256",
                   "--cold-path", cold_path, NULL);
}

static kvt_client *client(void)
{
    kvt_model m = test_model("cold-model", LAYERS, HEADS, DIM, KVT_F16, 0);
    kvt_client *c = NULL;
    CHECK_OK(kvt_connect(d.socket, &m, &c));
    return c;
}

static const struct test_ctx_shape shape = { LAYERS, TOKENS, HEADS, DIM };

static int n_contexts_for(size_t bytes)
{
    return (int)(bytes / CTX_HOT_BYTES) + 1;
}

static int child_store(void *arg)
{
    int n = *(int *)arg;
    kvt_client *c = client();
    int rc = test_store_contexts(c, &shape, 0, n);
    kvt_disconnect(c);
    return rc ? 10 : 0;
}

static int child_fetch(void *arg)
{
    int n = *(int *)arg, bad = 0;
    kvt_client *c = client();
    for (int i = 0; i < n; i++)
        if (test_check_context(c, &shape, i) != 0)
            bad++;
    kvt_disconnect(c);
    if (bad)
        fprintf(stderr, "%d of %d contexts missing or wrong\n", bad, n);
    return bad ? 20 : 0;
}

static void working_set_four_times_hot(void **state)
{
    (void)state;
    int n = n_contexts_for(4 * (32u << 20));        /* 4 x 32 MiB */
    start("32M", "512M");
    assert_int_equal(test_in_child(child_store, &n), 0);
    assert_int_equal(test_in_child(child_fetch, &n), 0);
    daemon_stop(&d);
    cleanup();
}

static void sync_survives_kill9_and_sigterm_survives_restart(void **state)
{
    (void)state;
    int n = 40, rc;
    start("32M", "256M");
    kvt_client *c = client();
    CHECK_OK(test_store_contexts(c, &shape, 0, n));
    CHECK_OK(kvt_sync(c));
    daemon_kill(&d);
    restart("32M", "256M");
    for (int i = 0; i < n; i++) {
        rc = test_check_context(c, &shape, i);         /* the handle reconnects itself */
        if (rc)
            fail_msg("after kill -9: ctx-%d: %d (%s)", i, rc, kvt_strerror(rc));
    }
    /* Unsynced stores, then a clean stop: SIGTERM writes the hot tier out. */
    CHECK_OK(test_store_contexts(c, &shape, n, n));
    daemon_stop(&d);
    restart("32M", "256M");
    for (int i = 0; i < 2 * n; i++) {
        rc = test_check_context(c, &shape, i);
        if (rc)
            fail_msg("after SIGTERM: ctx-%d: %d (%s)", i, rc, kvt_strerror(rc));
    }
    uint32_t len = 0;
    CHECK_OK(kvt_length(c, "ctx-3", &len));
    assert_int_equal(len, TOKENS);
    CHECK_OK(kvt_drop(c, "ctx-3"));
    daemon_stop(&d);
    restart("32M", "256M");
    CHECK_RC(test_check_context(c, &shape, 3), -ENOENT);  /* drops survive restarts too */
    CHECK_OK(test_check_context(c, &shape, 4));
    kvt_disconnect(c);
    daemon_stop(&d);
    cleanup();
}

static void flipped_byte_is_a_miss_and_nothing_else(void **state)
{
    (void)state;
    int n = 12, missing = 0, wrong = 0;
    start("64M", "64M");
    kvt_client *c = client();
    CHECK_OK(test_store_contexts(c, &shape, 0, n));
    daemon_stop(&d);            /* everything on disk */

    /* Flip a byte inside the first record's data block: file header block,
     * region header block, record header, bitmap, then some way in. */
    int fd = open(cold_path, O_RDWR);
    assert_true(fd >= 0);
    off_t at = 4096 + 4096 + 96 + 32 + 5000;
    uint8_t b;
    assert_int_equal(pread(fd, &b, 1, at), 1);
    b ^= 0x5a;
    assert_int_equal(pwrite(fd, &b, 1, at), 1);
    close(fd);

    restart("64M", "64M");
    for (int i = 0; i < n; i++) {
        int rc = test_check_context(c, &shape, i);
        if (rc == -ENOENT) {
            missing++;
            print_message("ctx-%d missing after the flip\n", i);
        }
        else if (rc)
            wrong++;
    }
    print_message("flipped byte: %d of %d contexts missing\n", missing, n);
    if (missing != 1) {
        char cmd[512];
        snprintf(cmd, sizeof(cmd), "grep -v 'attached\\|detached' '%s' | tail -20", d.log);
        if (system(cmd)) {}
    }
    assert_int_equal(wrong, 0);
    assert_int_equal(missing, 1);
    kvt_disconnect(c);
    daemon_stop(&d);

    /* The daemon said so in its log. */
    char cmd[512];
    snprintf(cmd, sizeof(cmd), "grep -qi checksum '%s'", d.log);
    assert_int_equal(system(cmd), 0);
    cleanup();
}

static void small_cold_file_keeps_the_newest(void **state)
{
    (void)state;
    /* 16 MiB of cold regions for ~96 MiB stored: the oldest are reclaimed. */
    int n = n_contexts_for(96u << 20), present = 0;
    start("16M", "16M");
    kvt_client *c = client();
    CHECK_OK(test_store_contexts(c, &shape, 0, n));
    for (int i = 0; i < n; i++) {
        int rc = test_check_context(c, &shape, i);
        if (rc == 1)
            fail_msg("ctx-%d returned wrong data", i);
        if (rc == 0)
            present++;
        else if (rc != -ENOENT)
            fail_msg("ctx-%d: %s", i, kvt_strerror(rc));
    }
    /* The newest context is always there; the oldest is gone. */
    CHECK_OK(test_check_context(c, &shape, n - 1));
    CHECK_RC(test_check_context(c, &shape, 0), -ENOENT);
    print_message("small cold file: %d of %d contexts kept\n", present, n);
    assert_true(present >= 4);
    kvt_disconnect(c);
    daemon_stop(&d);
    cleanup();
}

/* A cold stats field. */
static double cold_stat(const char *field)
{
    char reply[8192];
    CHECK_OK(admin_request(&d, "{\"cmd\":\"stats\"}", reply, sizeof(reply)));
    cJSON *r = cJSON_Parse(reply);
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(
        cJSON_GetObjectItemCaseSensitive(r, "cold"), field);
    assert_true(cJSON_IsNumber(v));
    double x = v->valuedouble;
    cJSON_Delete(r);
    return x;
}

static void recycled_block_leaves_no_old_rows_on_disk(void **state)
{
    uint8_t *k = malloc(ROW), *v = malloc(ROW);

    (void)state;
    /* Two contexts of incompressible rows, dropped: their 512 KiB blocks
     * go to the pool (64M budget: up to 4 MiB pooled). */
    start("64M", "64M");
    kvt_client *c = client();
    CHECK_OK(test_store_contexts(c, &shape, 0, 2));
    CHECK_OK(kvt_drop(c, "ctx-0"));
    CHECK_OK(kvt_drop(c, "ctx-1"));
    /* One token per layer: four new chunks on recycled blocks, 255 of
     * their 256 rows never written. Synced, they must compress like rows
     * of zeros, not like the old random rows left in the blocks. */
    for (uint32_t l = 0; l < LAYERS; l++) {
        test_fill(k, KVT_F16, 77, l, 0, 1, HEADS, DIM);
        test_fill(v, KVT_F16, 78, l, 0, 1, HEADS, DIM);
        CHECK_OK(kvt_store(c, "partial", l, 0, 1, k, v));
    }
    CHECK_OK(kvt_sync(c));
    double raw = cold_stat("raw_bytes_in"), written = cold_stat("bytes_written");
    print_message("partial chunks: %.0f raw bytes written as %.0f\n", raw, written);
    assert_true(raw >= (double)LAYERS * TOKENS * 2 * HEADS * DIM);
    assert_true(written < raw / 8);
    kvt_disconnect(c);
    daemon_stop(&d);
    cleanup();
    free(k);
    free(v);
}

static int use_pread(void **state)
{
    (void)state;
    io_mode = "pread";
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(working_set_four_times_hot),
        cmocka_unit_test(sync_survives_kill9_and_sigterm_survives_restart),
        cmocka_unit_test(flipped_byte_is_a_miss_and_nothing_else),
        cmocka_unit_test(small_cold_file_keeps_the_newest),
        cmocka_unit_test(recycled_block_leaves_no_old_rows_on_disk),
    };
    const struct CMUnitTest fallback[] = {
        cmocka_unit_test(working_set_four_times_hot),
        cmocka_unit_test(sync_survives_kill9_and_sigterm_survives_restart),
        cmocka_unit_test(flipped_byte_is_a_miss_and_nothing_else),
        cmocka_unit_test(small_cold_file_keeps_the_newest),
    };
    int failed = cmocka_run_group_tests_name("cold tier, io_uring", tests, NULL, NULL);
    failed += cmocka_run_group_tests_name("cold tier, pread fallback", fallback,
                                          use_pread, NULL);
    return failed;
}
