/* test_config_rewrite.c - proves what kvtierd(8) and kvtierctl(1) say of
 * values set live: SIGHUP gives every live key the config file's value (or
 * its default), so a `config set` is undone by it; `config rewrite` writes
 * the live values into the file, on the keys' own lines with their
 * comments kept and missing keys appended, every other byte unchanged,
 * mode kept, no temporary file left, so SIGHUP and a restart keep them.
 * Without --config, rewrite is refused. */
#include "tests/helpers.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <sys/stat.h>

#include "tests/cmd_util.h"

static struct test_daemon d;
static char conf[400], out[1 << 16];

static const char original[] =
    "# kvtierd test config\n"
    "hot-bytes = 256M    # the RAM budget\n"
    "\n"
    "log-level=info\n"
    "workers = 2\n";

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static char *read_file(const char *path)
{
    static char buf[1 << 16];
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    buf[n] = '\0';
    fclose(f);
    return buf;
}

static void expect_get(const char *key, const char *want)
{
    char args[128], line[256];
    snprintf(args, sizeof(args), "config get %s", key);
    assert_int_equal(test_ctl(out, sizeof(out), d.admin_socket, args), 0);
    snprintf(line, sizeof(line), "%s %s\n", key, want);
    assert_string_equal(out, line);
}

static void set(const char *key, const char *value)
{
    char args[256];
    snprintf(args, sizeof(args), "config set %s %s", key, value);
    assert_int_equal(test_ctl(out, sizeof(out), d.admin_socket, args), 0);
}

/* SIGHUP, then wait until the daemon logged the reload. */
static void sighup(void)
{
    size_t before = test_file_lines(d.log);
    assert_int_equal(kill(d.pid, SIGHUP), 0);
    for (int i = 0; i < 500; i++) {
        if (test_file_lines(d.log) > before && test_file_contains(d.log, "SIGHUP: reloaded"))
            return;
        usleep(10000);
    }
    fail_msg("no reload logged after SIGHUP");
}

static int files_in(const char *dir)
{
    DIR *dp = opendir(dir);
    int n = 0;
    assert_non_null(dp);
    for (struct dirent *e; (e = readdir(dp));)
        n += e->d_name[0] != '.';
    closedir(dp);
    return n;
}

static void rewrite_keeps_live_values_through_sighup_and_restart(void **state)
{
    char confdir[300], want[1024];
    struct stat st;
    (void)state;

    daemon_start(&d, "--hot-bytes", "64M", NULL);
    daemon_stop(&d);
    snprintf(confdir, sizeof(confdir), "%s/etc", d.dir);
    assert_int_equal(mkdir(confdir, 0755), 0);
    snprintf(conf, sizeof(conf), "%s/kvtierd.conf", confdir);
    write_file(conf, original);
    assert_int_equal(chmod(conf, 0640), 0);
    daemon_restart(&d, "--config", conf, NULL);
    expect_get("hot-bytes", "256M");

    /* A set value is undone by SIGHUP: hot-bytes back to the file's,
     * poll-us (not in the file) back to its default. */
    set("hot-bytes", "128M");
    set("poll-us", "10");
    sighup();
    expect_get("hot-bytes", "256M");
    expect_get("poll-us", "50");

    /* Rewritten, the file gives the set values; the rest is unchanged. */
    set("hot-bytes", "128M");
    set("poll-us", "10");
    set("hot-quota", "32M");
    assert_int_equal(test_ctl(out, sizeof(out), d.admin_socket, "config rewrite"), 0);
    snprintf(want, sizeof(want), "rewrote %s: 3 keys changed from what it said\n", conf);
    assert_string_equal(out, want);
    assert_string_equal(read_file(conf),
        "# kvtierd test config\n"
        "hot-bytes = 128M    # the RAM budget\n"
        "\n"
        "log-level=info\n"
        "workers = 2\n"
        "# written by `kvtierctl config rewrite`\n"
        "poll-us = 10\n"
        "hot-quota = 32M\n");
    assert_int_equal(stat(conf, &st), 0);
    assert_int_equal(st.st_mode & 07777, 0640);
    assert_int_equal(files_in(confdir), 1);                 /* no temporary left */
    /* Nothing differs now: a second rewrite changes nothing. */
    assert_int_equal(test_ctl(out, sizeof(out), d.admin_socket, "config rewrite"), 0);
    assert_non_null(strstr(out, ": 0 keys changed"));

    set("hot-bytes", "512M");                  /* not rewritten: SIGHUP undoes it */
    sighup();
    expect_get("hot-bytes", "128M");
    expect_get("poll-us", "10");
    expect_get("hot-quota", "32M");
    daemon_stop(&d);
    daemon_restart(&d, "--config", conf, NULL);
    expect_get("hot-bytes", "128M");
    expect_get("hot-quota", "32M");
    daemon_stop(&d);
}

static void rewrite_without_a_config_file_is_refused(void **state)
{
    (void)state;
    daemon_start(&d, "--hot-bytes", "64M", NULL);
    assert_int_equal(test_ctl(out, sizeof(out), d.admin_socket, "config rewrite"), 1);
    assert_non_null(strstr(out, "started without --config"));
    daemon_stop(&d);
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
        cmocka_unit_test_teardown(rewrite_keeps_live_values_through_sighup_and_restart, teardown),
        cmocka_unit_test_teardown(rewrite_without_a_config_file_is_refused, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
