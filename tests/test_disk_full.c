/* test_disk_full.c - proves that a full disk under the cold tier never makes
 * a sync lie, with io_uring and again with the pread/pwrite fallback. The
 * cold file lives on a small tmpfs the test mounts; it is made sparse
 * (everything but its header punched out) and the file system is filled
 * with another file, so every write of the cold tier fails with ENOSPC.
 *
 *  - While the disk is full, kvt_sync fails, and keeps failing at every
 *    later call (the chunks whose writes failed are dirty again, not
 *    forgotten); stats count the I/O errors and the unwritten records.
 *    Once space is freed, kvt_sync succeeds, and after kill -9 and a
 *    restart every value comes back from the disk within the int8 bound.
 *  - Chunks demoted and evicted from RAM while the disk is full are lost:
 *    cold.records_lost (and kvtier_cold_records_lost_total in kvtierctl
 *    metrics) counts them, the log says so, and the next kvt_sync of the
 *    client and the next admin flush fail; after that, with space again,
 *    both succeed and SIGTERM exits 0.
 *  - SIGTERM with data that cannot be written exits non-zero and logs it,
 *    even after an earlier kvt_sync already reported the failure.
 *
 * Needs root (mount); skipped otherwise. The mount is always undone. */
#include "tests/helpers.h"

#include <cjson/cJSON.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define LAYERS 2
#define HEADS 8
#define DIM 128
#define TOKENS 256            /* one chunk per layer per context */
#define FS_BYTES "48m"
#define COLD_BYTES "32M"

static struct test_daemon d;
static const char *io_mode = "uring";
static struct test_small_fs fs;
static char cold_path[128];

static void unmount_all(void)
{
    test_small_fs_unmount(&fs);
}

/* Whether the daemon's whole log (it may be long at debug level) has text. */
static bool log_contains(const char *text)
{
    FILE *f = fopen(d.log, "r");
    char line[4096];
    bool found = false;

    while (f && !found && fgets(line, sizeof(line), f))
        found = strstr(line, text) != NULL;
    if (f)
        fclose(f);
    return found;
}

/* Runs at exit too, so a failed assertion never leaves a mount behind. */
static void cleanup(void)
{
    daemon_cleanup(&d);
    unmount_all();
}

static void daemon_args_start(bool restart, const char *hot)
{
    if (restart)
        daemon_restart(&d, "--hot-bytes", hot, "--cold-bytes", COLD_BYTES,
                       "--cold-io", io_mode, "--cold-region-bytes", "4M",
                       "--chunk-tokens", "256", "--cold-path", cold_path, NULL);
    else
        daemon_start(&d, "--hot-bytes", hot, "--cold-bytes", COLD_BYTES,
                     "--cold-io", io_mode, "--cold-region-bytes", "4M",
                     "--chunk-tokens", "256", "--cold-path", cold_path, NULL);
}

static void free_disk(void)
{
    test_small_fs_free(&fs);
}

/* Mount the small file system, let a first daemon create the cold file
 * there, then punch out everything but the header and fill the disk: the
 * daemon started next finds a valid, empty cold file it cannot write to. */
static void start_on_full_disk(const char *hot)
{
    cleanup();                                 /* what a failed test left */
    if (test_small_fs_mount(&fs, FS_BYTES) != 0)
        skip();
    snprintf(cold_path, sizeof(cold_path), "%s/cold.kvt", fs.mnt);
    daemon_args_start(false, hot);
    daemon_stop(&d);
    test_punch_hole(cold_path, 4096, (32 << 20) - 4096);
    test_small_fs_fill(&fs);
    daemon_args_start(true, hot);
}

static kvt_client *client(void)
{
    kvt_model m = test_model("full-model", LAYERS, HEADS, DIM, KVT_F16, 0);
    kvt_client *c = NULL;
    CHECK_OK(kvt_connect(d.socket, &m, &c));
    return c;
}

static const struct test_ctx_shape shape = { LAYERS, TOKENS, HEADS, DIM };

/* stats' section.field as a number. */
static double stat_of(const char *section, const char *field)
{
    static char reply[1 << 16];
    double v;

    CHECK_OK(admin_request(&d, "{\"cmd\":\"stats\"}", reply, sizeof(reply)));
    cJSON *r = cJSON_Parse(reply);
    assert_non_null(r);
    cJSON *f = cJSON_GetObjectItem(cJSON_GetObjectItem(r, section), field);
    if (!cJSON_IsNumber(f))
        fail_msg("stats has no %s.%s: %s", section, field, reply);
    v = f->valuedouble;
    cJSON_Delete(r);
    return v;
}

/* Run kvtierctl ARGS, output into buf; returns its exit status. */
static int kvtierctl(const char *args, char *buf, size_t len)
{
    char cmd[512];
    size_t n;

    snprintf(cmd, sizeof(cmd), "%s/kvtierctl --socket '%s' %s 2>&1", test_build_dir(),
             d.admin_socket, args);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    n = fread(buf, 1, len - 1, p);
    buf[n] = '\0';
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void sync_fails_until_the_data_is_on_disk(void **state)
{
    (void)state;
    const int n = 4;
    start_on_full_disk("64M");                 /* everything stays in RAM */
    kvt_client *c = client();
    CHECK_OK(test_store_contexts(c, &shape, 0, n));
    CHECK_RC(kvt_sync(c), -EIO);
    /* The failed records left the index but their chunks are still in
     * RAM: the next sync must write them again (and fail again), not
     * report success for data that is nowhere on disk. */
    CHECK_RC(kvt_sync(c), -EIO);
    CHECK_RC(kvt_sync(c), -EIO);
    assert_true(stat_of("cold", "io_errors") > 0);
    assert_true(stat_of("cold", "records_unwritten") > 0);
    assert_true(stat_of("cold", "records_lost") == 0);

    free_disk();
    CHECK_OK(kvt_sync(c));
    kvt_disconnect(c);
    daemon_kill(&d);
    daemon_args_start(true, "64M");
    c = client();
    for (int i = 0; i < n; i++)
        if (test_check_context(c, &shape, i) != 0)
            fail_msg("context %d not on disk after a successful sync", i);
    assert_true(stat_of("tiers", "promotions") >= n * LAYERS);
    kvt_disconnect(c);
    daemon_stop(&d);
    cleanup();
}

static void evicted_chunks_that_never_reached_disk_are_lost_and_said_so(void **state)
{
    (void)state;
    char out[1 << 16];
    const int n = 16;                          /* 16 MiB through a 4 MiB hot tier */
    start_on_full_disk("4M");
    kvt_client *c = client();
    CHECK_OK(test_store_contexts(c, &shape, 0, n));
    CHECK_RC(kvt_sync(c), -EIO);
    double lost = stat_of("cold", "records_lost");
    assert_true(lost > 0);
    assert_true(log_contains("lost"));
    assert_int_equal(kvtierctl("metrics", out, sizeof(out)), 0);
    if (!strstr(out, "kvtier_cold_records_lost_total "))
        fail_msg("metrics lack kvtier_cold_records_lost_total:\n%s", out);
    assert_int_equal(kvtierctl("flush", out, sizeof(out)), 1);

    /* Each caller hears of a loss once; with space again what is still in
     * RAM is written, and the next sync, flush and SIGTERM succeed. The
     * demoter may have lost more chunks since the failed sync (the disk
     * was still full): then, and only then, the first sync fails again. */
    free_disk();
    int rc = kvt_sync(c);
    double lost_now = stat_of("cold", "records_lost");
    CHECK_RC(rc, lost_now > lost ? -EIO : 0);
    CHECK_OK(kvt_sync(c));
    assert_true(stat_of("cold", "records_lost") == lost_now);
    (void)kvtierctl("flush", out, sizeof(out));
    assert_int_equal(kvtierctl("flush", out, sizeof(out)), 0);
    kvt_disconnect(c);
    daemon_stop(&d);
    cleanup();
}

static void sigterm_with_unwritable_data_exits_nonzero(void **state)
{
    (void)state;
    start_on_full_disk("64M");
    kvt_client *c = client();
    CHECK_OK(test_store_contexts(c, &shape, 0, 2));
    CHECK_RC(kvt_sync(c), -EIO);               /* the error is reported once here */
    kvt_disconnect(c);
    int st = daemon_terminate(&d);
    if (!WIFEXITED(st) || WEXITSTATUS(st) == 0)
        fail_msg("kvtierd exited 0 (status 0x%x) with data it could not write; log %s",
                 st, d.log);
    assert_true(log_contains("final flush failed"));
    cleanup();
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
        cmocka_unit_test(sync_fails_until_the_data_is_on_disk),
        cmocka_unit_test(evicted_chunks_that_never_reached_disk_are_lost_and_said_so),
        cmocka_unit_test(sigterm_with_unwritable_data_exits_nonzero),
    };
    atexit(unmount_all);
    int failed = cmocka_run_group_tests_name("disk full, io_uring", tests, NULL, NULL);
    failed += cmocka_run_group_tests_name("disk full, pread fallback", tests, use_pread, NULL);
    return failed;
}
