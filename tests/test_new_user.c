/* test_new_user.c - proves that the README's first steps work as written:
 *  - the C program in README.md, taken from the README itself, compiles
 *    with the README's own command and, run in a tree where `kvtierd --dev`
 *    serves (as after `make run`), stores, fetches within the int8 bound it
 *    states and exits 0;
 *  - `make run` prints the kvtierctl and client lines to use;
 *  - libkvtier.a and libkvtier.so define no global symbol but kvt_*;
 *  - kvt_connect with no daemon says "no kvtierd socket at PATH" through
 *    kvt_last_error(NULL), and names a socket that is not the data socket. */
#include "tests/helpers.h"

#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tests/cmd_util.h"

static char out[1 << 16], root[PATH_MAX], tree[64];
static pid_t dev_pid;

/* The repository root: the build dir's parent. */
static void find_root(void)
{
    char up[PATH_MAX];
    snprintf(up, sizeof(up), "%.4000s/..", test_build_dir());
    assert_non_null(realpath(up, root));
}

static char *read_readme(void)
{
    static char text[1 << 17];
    char path[PATH_MAX + 16];
    snprintf(path, sizeof(path), "%s/README.md", root);
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    size_t n = fread(text, 1, sizeof(text) - 1, f);
    text[n] = '\0';
    fclose(f);
    return text;
}

/* The README's text between start and the next end, into a new string. */
static char *between(const char *text, const char *start, const char *end)
{
    const char *a = strstr(text, start);
    if (!a)
        fail_msg("README.md has no '%s'", start);
    a += strlen(start);
    const char *b = strstr(a, end);
    assert_non_null(b);
    return strndup(a, (size_t)(b - a));
}

static int setup(void **state)
{
    char var[128], bin[PATH_MAX + 16], rel[PATH_MAX];
    (void)state;

    find_root();
    snprintf(tree, sizeof(tree), "/var/tmp/kvtier-newuser-XXXXXX");
    assert_non_null(mkdtemp(tree));
    snprintf(var, sizeof(var), "%s/var", tree);
    assert_int_equal(mkdir(var, 0755), 0);
    snprintf(rel, sizeof(rel), "%s/kvtierd", test_build_dir());
    assert_non_null(realpath(rel, bin));
    dev_pid = fork();
    assert_true(dev_pid >= 0);
    if (dev_pid == 0) {
        char log[128];
        snprintf(log, sizeof(log), "%s/kvtierd.log", tree);
        int fd = open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
        if (fd < 0 || dup2(fd, 2) < 0 || chdir(tree) < 0)
            _exit(126);
        execl(bin, bin, "--dev", "--hot-bytes", "64M", "--cold-bytes", "0", (char *)NULL);
        _exit(127);
    }
    snprintf(var, sizeof(var), "%s/var/kvtier.sock", tree);
    for (int i = 0; i < 1000 && !test_socket_accepts(var); i++)
        usleep(10000);
    assert_true(test_socket_accepts(var));
    return 0;
}

static int teardown(void **state)
{
    char cmd[128];
    (void)state;
    if (dev_pid > 0) {
        kill(dev_pid, SIGTERM);
        waitpid(dev_pid, NULL, 0);
    }
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tree);
    return system(cmd) == 0 ? 0 : -1;
}

static void readme_program_compiles_and_runs(void **state)
{
    char src[128];
    (void)state;
    const char *readme = read_readme();
    char *prog = between(readme, "```c\n", "```");
    /* The static build command, as the README gives it. */
    char *cmd = between(readme, "Build it in the tree with\n`", "`");
    assert_non_null(strstr(cmd, "cc prog.c"));
    assert_non_null(strstr(readme, "int8-lossy by default"));

    snprintf(src, sizeof(src), "%s/prog.c", tree);
    FILE *f = fopen(src, "w");
    assert_non_null(f);
    fputs(prog, f);
    fclose(f);
    /* Run in the repository root, as the README's paths are; prog.c and
     * the program are the scratch tree's. */
    char *at = strstr(cmd, "prog.c"), *o = strstr(cmd, "-o prog");
    assert_non_null(at);
    assert_non_null(o);
    *at = '\0';
    o[3] = '\0';
    if (test_cmd(out, sizeof(out), "cd '%s' && %s%s/prog.c%s%s/prog%s", root, cmd, tree,
                 at + strlen("prog.c"), tree, o + strlen("-o prog")) != 0)
        fail_msg("the README's command fails:\n%s", out);
    /* In the tree where the dev daemon runs, as after `make run`. */
    assert_int_equal(test_cmd(out, sizeof(out), "cd '%s' && ./prog", tree), 0);
    assert_non_null(strstr(out, "stored and fetched 16 tokens; largest error 0.00"));
    free(prog);
    free(cmd);
}

static void make_run_says_what_to_type(void **state)
{
    (void)state;
    assert_int_equal(test_cmd(out, sizeof(out), "make -s -n -C '%s' run", root), 0);
    assert_non_null(strstr(out, "kvtierctl health"));
    assert_non_null(strstr(out, "var/admin.sock"));
    assert_non_null(strstr(out, "kvt_connect(\\\"var/kvtier.sock\\\""));
}

/* Every defined global symbol of the library is kvt_* (nm -g). */
static void library_exports_only_kvt(void **state)
{
    (void)state;
    assert_int_equal(test_cmd(out, sizeof(out), "nm -g --defined-only '%s/libkvtier.a' | "
                              "awk 'NF == 3 { print $3 }'", test_build_dir()), 0);
    assert_non_null(strstr(out, "kvt_connect\n"));
    for (char *line = strtok(out, "\n"); line; line = strtok(NULL, "\n"))
        if (strncmp(line, "kvt_", 4))
            fail_msg("libkvtier.a exports %s", line);
    assert_int_equal(test_cmd(out, sizeof(out), "nm -D --defined-only --without-symbol-versions "
                              "'%s/libkvtier.so' | awk 'NF == 3 && $3 !~ /^KVTIER_/ { print $3 }'",
                              test_build_dir()), 0);
    assert_non_null(strstr(out, "kvt_fetch\n"));
    for (char *line = strtok(out, "\n"); line; line = strtok(NULL, "\n"))
        if (strncmp(line, "kvt_", 4))
            fail_msg("libkvtier.so exports %s", line);
}

static void connect_without_daemon_names_the_socket(void **state)
{
    char path[128], want[200];
    kvt_model m = test_model("nobody", 1, 1, 64, KVT_F32, 0);
    kvt_client *c;
    (void)state;

    snprintf(path, sizeof(path), "%s/var/none.sock", tree);
    CHECK_RC(kvt_connect(path, &m, &c), -ENOENT);
    snprintf(want, sizeof(want), "no kvtierd socket at %s", path);
    assert_non_null(strstr(kvt_last_error(NULL), want));
    /* The admin socket is a stream socket, not the data socket. */
    snprintf(path, sizeof(path), "%s/var/admin.sock", tree);
    CHECK_RC(kvt_connect(path, &m, &c), -EPROTOTYPE);
    assert_non_null(strstr(kvt_last_error(NULL), "is not kvtierd's data socket"));
    /* A success clears it. */
    snprintf(path, sizeof(path), "%s/var/kvtier.sock", tree);
    CHECK_OK(kvt_connect(path, &m, &c));
    assert_string_equal(kvt_last_error(NULL), "");
    kvt_disconnect(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(readme_program_compiles_and_runs),
        cmocka_unit_test(make_run_says_what_to_type),
        cmocka_unit_test(library_exports_only_kvt),
        cmocka_unit_test(connect_without_daemon_names_the_socket),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
