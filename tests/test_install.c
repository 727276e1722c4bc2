/* test_install.c - proves `make install DESTDIR=... PREFIX=/usr/local`
 * lays out everything an operator and a client developer need: daemon,
 * libraries, header, pkg-config file, systemd units (with @SBINDIR@
 * substituted), sysusers.d and tmpfiles.d snippets, the example config
 * (never overwriting an edited one) and the man pages; that the units pass
 * `systemd-analyze verify` with the binary path they name resolving; that
 * the example config starts a daemon; and that a program outside the tree
 * builds with `pkg-config --cflags --libs kvtier` alone, links libkvtier
 * and calls kvt_strerror. Runs from the repository root; $KVTIER_BUILD
 * is passed to make as B=. */
#include "tests/helpers.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static char tmp[256], dest[300];
static struct test_daemon d;

/* Run a shell command; its output goes to tmp/cmd.log, printed on failure. */
static int run(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int run(const char *fmt, ...)
{
    char cmd[4096], full[4400];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(cmd, sizeof(cmd), fmt, ap);
    va_end(ap);
    snprintf(full, sizeof(full), "( %s ) > '%s/cmd.log' 2>&1", cmd, tmp);
    int st = system(full);
    int rc = st == -1 ? -1 : WIFEXITED(st) ? WEXITSTATUS(st) : 128;
    if (rc != 0) {
        char show[600];
        fprintf(stderr, "command failed (%d): %s\n", rc, cmd);
        snprintf(show, sizeof(show), "tail -n 30 '%s/cmd.log' >&2", tmp);
        if (system(show) != 0)
            fprintf(stderr, "(no output)\n");
    }
    return rc;
}

static void expect_file(const char *rel, mode_t type, int executable)
{
    char path[600];
    struct stat sb;

    snprintf(path, sizeof(path), "%s/%s", dest, rel);
    if (stat(path, &sb) != 0)
        fail_msg("make install did not create %s", rel);
    if ((sb.st_mode & S_IFMT) != type)
        fail_msg("%s has the wrong file type (mode 0%o)", rel, (unsigned)sb.st_mode);
    if (executable && access(path, X_OK) != 0)
        fail_msg("%s is not executable", rel);
}

static int make_install(const char *vars)
{
    /* Not inside our own make's jobserver: the sub-make stands alone. */
    return run("env -u MAKEFLAGS -u MAKELEVEL -u MFLAGS make -s install B='%s' %s",
               test_build_dir(), vars);
}

static int setup(void **state)
{
    (void)state;
    if (access("Makefile", R_OK) != 0 || access("client/kvtier.h", R_OK) != 0) {
        fprintf(stderr, "test_install runs from the repository root\n");
        return -1;
    }
    snprintf(tmp, sizeof(tmp), "/var/tmp/kvtier-install-XXXXXX");
    if (!mkdtemp(tmp))
        return -1;
    snprintf(dest, sizeof(dest), "%s/dest", tmp);
    return 0;
}

static int teardown(void **state)
{
    char cmd[400];

    (void)state;
    daemon_cleanup(&d);
    if (tmp[0]) {
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmp);
        if (system(cmd) != 0)
            fprintf(stderr, "cannot remove %s\n", tmp);
    }
    return 0;
}

static void lays_out_every_file(void **state)
{
    char path[600], kvtierctl[600];
    (void)state;

    char vars[600];
    snprintf(vars, sizeof(vars), "DESTDIR='%s' PREFIX=/usr/local", dest);
    assert_int_equal(make_install(vars), 0);

    expect_file("usr/local/sbin/kvtierd", S_IFREG, 1);
    expect_file("usr/local/lib/libkvtier.so.0.1.0", S_IFREG, 0);
    expect_file("usr/local/lib/libkvtier.so.0", S_IFREG, 0);     /* via the links */
    expect_file("usr/local/lib/libkvtier.so", S_IFREG, 0);
    expect_file("usr/local/lib/libkvtier.a", S_IFREG, 0);
    expect_file("usr/local/include/kvtier.h", S_IFREG, 0);
    expect_file("usr/local/lib/pkgconfig/kvtier.pc", S_IFREG, 0);
    expect_file("usr/local/lib/systemd/system/kvtierd.service", S_IFREG, 0);
    expect_file("usr/local/lib/systemd/system/kvtierd.socket", S_IFREG, 0);
    expect_file("usr/local/lib/systemd/system/kvtierd-admin.socket", S_IFREG, 0);
    expect_file("usr/local/lib/sysusers.d/kvtier.conf", S_IFREG, 0);
    expect_file("usr/local/lib/tmpfiles.d/kvtier.conf", S_IFREG, 0);
    expect_file("etc/kvtier/kvtierd.conf", S_IFREG, 0);
    expect_file("usr/local/share/man/man8/kvtierd.8", S_IFREG, 0);
    expect_file("usr/local/share/man/man3/libkvtier.3", S_IFREG, 0);
    /* kvtierctl is installed once the build has it. */
    snprintf(kvtierctl, sizeof(kvtierctl), "%s/kvtierctl", test_build_dir());
    if (access(kvtierctl, X_OK) == 0)
        expect_file("usr/local/bin/kvtierctl", S_IFREG, 1);
    /* So is libkvtier-llama (make llama; make test builds it first). */
    snprintf(path, sizeof(path), "%s/libkvtier-llama.so", test_build_dir());
    if (access(path, F_OK) == 0) {
        expect_file("usr/local/lib/libkvtier-llama.so.0.1.0", S_IFREG, 0);
        expect_file("usr/local/lib/libkvtier-llama.so.0", S_IFREG, 0);
        expect_file("usr/local/lib/libkvtier-llama.a", S_IFREG, 0);
        expect_file("usr/local/include/kvtier_llama.h", S_IFREG, 0);
    }

    /* The Python package, importable from there over the installed library
     * (not a sanitized one: python3 would need libasan preloaded). */
    assert_int_equal(run("p=$(echo '%s'/usr/local/lib/python3*/*-packages) && "
                         "test -f \"$p/kvtier/__init__.py\" && test -f \"$p/kvtier/hf.py\"",
                         dest), 0);
#ifndef __SANITIZE_ADDRESS__
    assert_int_equal(run("p=$(echo '%s'/usr/local/lib/python3*/*-packages) && cd / && "
                         "PYTHONPATH=\"$p\" PYTHONDONTWRITEBYTECODE=1 "
                         "KVTIER_LIB='%s/usr/local/lib/libkvtier.so.0' "
                         "/usr/bin/python3 -c 'import kvtier, kvtier.hf'", dest, dest), 0);
#endif

    snprintf(path, sizeof(path), "%s/usr/local/lib/systemd/system/kvtierd.service", dest);
    if (!test_file_contains(path, "ExecStart=/usr/local/sbin/kvtierd --config /etc/kvtier/kvtierd.conf"))
        fail_msg("%s: ExecStart does not name /usr/local/sbin/kvtierd", path);
    assert_int_equal(run("! grep -rI '@[A-Z]*@' '%s'", dest), 0);
    snprintf(path, sizeof(path), "%s/usr/local/lib/sysusers.d/kvtier.conf", dest);
    assert_true(test_file_contains(path, "u kvtier - \"kvtier KV-cache daemon\" /var/lib/kvtier"));
    snprintf(path, sizeof(path), "%s/usr/local/lib/tmpfiles.d/kvtier.conf", dest);
    assert_true(test_file_contains(path, "d /var/cache/kvtier 0750 kvtier kvtier"));

    /* The man pages format without warnings. */
    assert_int_equal(run("for m in '%s'/usr/local/share/man/man*/*; do "
                         "out=$(groff -man -ww -z \"$m\" 2>&1) || exit 1; "
                         "[ -z \"$out\" ] || { echo \"$m: $out\"; exit 1; }; done", dest), 0);

    /* An operator's edit survives a reinstall. */
    snprintf(path, sizeof(path), "%s/etc/kvtier/kvtierd.conf", dest);
    FILE *f = fopen(path, "a");
    assert_non_null(f);
    fputs("# edited by the operator\n", f);
    fclose(f);
    assert_int_equal(make_install(vars), 0);
    assert_true(test_file_contains(path, "# edited by the operator"));
}

/* The example config is what the unit starts with: it must load and
 * validate. Only the paths and budgets are pointed at a temp dir. */
static void example_config_starts(void **state)
{
    char conf[600];
    (void)state;

    snprintf(conf, sizeof(conf), "%s/etc/kvtier/kvtierd.conf", dest);
    assert_int_equal(access(conf, R_OK), 0);
    daemon_start(&d, "--config", conf, "--hot-bytes", "64M", "--cold-bytes", "0", NULL);
    daemon_stop(&d);
}

static void units_verify(void **state)
{
    char vars[600], unitdir[600];
    (void)state;

    /* A second install without DESTDIR, into a prefix under tmp: the units
     * then name a kvtierd that really exists, so verify checks the
     * ExecStart path instead of being told to ignore it. */
    snprintf(vars, sizeof(vars), "PREFIX='%s/p' SYSCONFDIR='%s/p/etc'", tmp, tmp);
    assert_int_equal(make_install(vars), 0);
    snprintf(unitdir, sizeof(unitdir), "%s/p/lib/systemd/system", tmp);
    assert_int_equal(run("cd '%s' && out=$(systemd-analyze verify --man=no ./kvtierd.service "
                         "./kvtierd.socket ./kvtierd-admin.socket 2>&1) && echo \"$out\" && "
                         "[ -z \"$out\" ]", unitdir), 0);
}

static void builds_against_installed_library(void **state)
{
    (void)state;
    char src[400];

    snprintf(src, sizeof(src), "%s/prog.c", tmp);
    FILE *f = fopen(src, "w");
    assert_non_null(f);
    fputs("#include <errno.h>\n#include <stdio.h>\n#include <kvtier.h>\n"
          "int main(void)\n{\n"
          "    const char *s = kvt_strerror(-ENOENT);\n"
          "    kvt_client *c = NULL;\n"
          "    kvt_model m = { .name = \"m\", .n_layers = 1, .n_kv_heads = 1,\n"
          "                    .head_dim = 64, .dtype = KVT_F32 };\n"
          "    int rc = kvt_connect(\"/nonexistent/kvtier.sock\", &m, &c);\n"
          "    printf(\"%s / %s\\n\", s, kvt_strerror(rc));\n"
          "    return !(s && *s && rc < 0);\n}\n", f);
    fclose(f);
    /* Outside the tree, with only what pkg-config says. The sysroot maps
     * the .pc file's /usr/local paths into DESTDIR. */
    assert_int_equal(run("cd '%s' && flags=$(PKG_CONFIG_PATH='%s/usr/local/lib/pkgconfig' "
                         "PKG_CONFIG_SYSROOT_DIR='%s' pkg-config --cflags --libs kvtier) && "
                         "echo \"$flags\" && cc -std=c11 -Wall -Werror -o prog prog.c $flags",
                         tmp, dest, dest), 0);
    /* An ASan build's library wants its runtime; it need not come first. */
    assert_int_equal(run("cd '%s' && LD_LIBRARY_PATH='%s/usr/local/lib' "
                         "ASAN_OPTIONS=verify_asan_link_order=0:detect_leaks=0 ./prog && "
                         "LD_LIBRARY_PATH='%s/usr/local/lib' ldd ./prog | grep -q '%s/usr/local/lib/libkvtier.so.0'",
                         tmp, dest, dest, dest), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(lays_out_every_file),
        cmocka_unit_test(example_config_starts),
        cmocka_unit_test(units_verify),
        cmocka_unit_test(builds_against_installed_library),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
