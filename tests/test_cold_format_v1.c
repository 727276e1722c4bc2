/* test_cold_format_v1.c - proves that kvtierd takes over a cold file of
 * format 1 and refuses one of a format it does not read:
 *   - a genuine format-1 file (written by kvtierd, then every version field
 *     set to 1 with its checksum: its int8 records have no outliers, so this
 *     is byte for byte what a format-1 kvtierd wrote) is served: every
 *     context fetches within the int8 bound; the start logs the upgrade once
 *     and leaves the file header at the current format (3), the old region
 *     headers at 1;
 *     a restart serves everything again without upgrading again; contexts
 *     stored and synced before a kill -9 come back next to the old ones;
 *   - a file header of format 4 makes the start fail with exit status 2
 *     and a log line naming the format, the file left byte for byte; set
 *     back to format 3 the same file is served whole.
 * The daemon's files hold name records (format 3); the format-1 file is
 * made without them, as a format-1 kvtierd wrote none.
 */
#include "tests/helpers.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <xxhash.h>

#include "tests/cold_file_edit.h"

#define OLD 12                         /* contexts in the format-1 file */
#define NEW 6                          /* stored after the upgrade */

static struct test_daemon d;
static char cold_dir[64], cold_path[400];
static const struct test_ctx_shape shape = { 3, 300, 4, 64 };

#define COLD_FLAGS "--hot-bytes", "64M", "--cold-path", cold_path, "--cold-bytes", "64M", \
    "--cold-region-bytes", "4M"

static kvt_client *client(void)
{
    kvt_model m = test_model("format-v1", shape.layers, shape.heads, shape.dim, KVT_F16, 0);
    kvt_client *c = NULL;
    CHECK_OK(kvt_connect(d.socket, &m, &c));
    return c;
}

/* The cold file lives in its own temp dir, made before the daemon's. A
 * daemon of today with outliers 0 (the only int8 layout format 1 had)
 * stores contexts 0..OLD-1 into it and stops. */
static int setup(void **state)
{
    (void)state;
    snprintf(cold_dir, sizeof(cold_dir), "/var/tmp/kvtier-cold-v1-XXXXXX");
    assert_non_null(mkdtemp(cold_dir));
    snprintf(cold_path, sizeof(cold_path), "%s/cold.kvt", cold_dir);
    daemon_start(&d, COLD_FLAGS, "--outliers", "0", NULL);
    kvt_client *c = client();
    CHECK_OK(test_store_contexts(c, &shape, 0, OLD));
    CHECK_OK(kvt_sync(c));
    kvt_disconnect(c);
    daemon_stop(&d);
    return 0;
}

static int teardown(void **state)
{
    char cmd[128];
    (void)state;
    daemon_cleanup(&d);
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", cold_dir);
    if (system(cmd) != 0)
        fprintf(stderr, "cannot remove %s\n", cold_dir);
    return 0;
}

/* Occurrences of text in the daemon's log (every start appends to it). */
static int log_count(const char *text)
{
    FILE *f = fopen(d.log, "r");
    char *buf = NULL;
    size_t cap = 0;
    int n = 0;

    assert_non_null(f);
    ssize_t len = getdelim(&buf, &cap, '\0', f);
    fclose(f);
    for (const char *p = buf; len > 0 && (p = strstr(p, text)); p += strlen(text))
        n++;
    free(buf);
    return n;
}

static void versions(uint32_t r, uint32_t want_file, uint32_t want_region)
{
    uint32_t file, region;
    assert_int_equal(cold_file_get_versions(cold_path, r, &file, &region), 0);
    assert_int_equal(file, want_file);
    assert_int_equal(region, want_region);
}

static void check_contexts(int first, int count)
{
    kvt_client *c = client();
    for (int i = first; i < first + count; i++)
        if (test_check_context(c, &shape, i) != 0)
            fail_msg("context %d does not fetch as stored", i);
    kvt_disconnect(c);
}

static uint64_t file_hash(void)
{
    XXH3_state_t *st = XXH3_createState();
    static char buf[1 << 20];
    int fd = open(cold_path, O_RDONLY);
    ssize_t n;

    assert_non_null(st);
    assert_true(fd >= 0);
    XXH3_64bits_reset(st);
    while ((n = read(fd, buf, sizeof(buf))) > 0)
        XXH3_64bits_update(st, buf, (size_t)n);
    assert_int_equal(n, 0);
    close(fd);
    uint64_t h = XXH3_64bits_digest(st);
    XXH3_freeState(st);
    return h;
}

static void v1_file_served_and_upgraded(void **state)
{
    struct cold_file_counts n;
    (void)state;

    assert_int_equal(cold_file_set_versions(cold_path,
                                            &(struct cold_file_versions){ 1, 1, 1, true }, &n), 0);
    assert_true(n.chunks >= OLD * shape.layers);
    assert_int_equal(n.outliers, 0);
    versions(0, 1, 1);

    daemon_restart(&d, COLD_FLAGS, NULL);
    assert_int_equal(log_count("upgraded from format 1 to 3"), 1);
    versions(0, 3, 1);
    check_contexts(0, OLD);
    daemon_stop(&d);

    daemon_restart(&d, COLD_FLAGS, NULL);
    check_contexts(0, OLD);
    assert_int_equal(log_count("upgraded from format"), 1);

    kvt_client *c = client();
    CHECK_OK(test_store_contexts(c, &shape, OLD, NEW));
    CHECK_OK(kvt_sync(c));
    kvt_disconnect(c);
    daemon_kill(&d);
    daemon_restart(&d, COLD_FLAGS, NULL);
    check_contexts(0, OLD + NEW);
    versions(0, 3, 1);
    assert_int_equal(log_count("upgraded from format"), 1);
    daemon_stop(&d);
}

static void v4_file_refused_exit_2(void **state)
{
    (void)state;

    assert_int_equal(cold_file_set_versions(cold_path, &(struct cold_file_versions){ 4, 3, 3 },
                                            NULL), 0);
    uint64_t before = file_hash();
    assert_int_equal(daemon_start_status(&d, COLD_FLAGS, NULL), 2);
    assert_int_equal(log_count("is a cold file of format 4, but this kvtierd reads formats "
                               "1 to 3; left untouched"), 1);
    assert_false(test_socket_accepts(d.socket));
    assert_true(file_hash() == before);

    assert_int_equal(cold_file_set_versions(cold_path, &(struct cold_file_versions){ 3, 3, 3 },
                                            NULL), 0);
    daemon_restart(&d, COLD_FLAGS, NULL);
    check_contexts(0, OLD);
    daemon_stop(&d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(v1_file_served_and_upgraded, setup, teardown),
        cmocka_unit_test_setup_teardown(v4_file_refused_exit_2, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
