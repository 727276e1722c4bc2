/* test_build_tree_link.c - proves a program linked against the build tree
 * the usual way (`-Lbuild -lkvtier` with an rpath to build/) starts and
 * runs: the loader finds libkvtier's soname, libkvtier.so.0, there. The
 * program is compiled by this test with the system's cc, as a client
 * developer would, and calls kvt_strerror and kvt_connect (which must fail
 * cleanly: nothing listens on the path it is given). */
#include "tests/helpers.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static const char program[] =
    "#include <errno.h>\n"
    "#include <stdio.h>\n"
    "#include <string.h>\n"
    "#include <kvtier.h>\n"
    "int main(void)\n"
    "{\n"
    "    kvt_model m = { .name = \"m\", .n_layers = 1, .n_kv_heads = 1,\n"
    "                    .head_dim = 8, .dtype = KVT_F32 };\n"
    "    kvt_client *c = NULL;\n"
    "    int rc = kvt_connect(\"/nonexistent/kvtier.sock\", &m, &c);\n"
    "    if (rc == 0 || c || strlen(kvt_strerror(rc)) == 0)\n"
    "        return 3;\n"
    "    printf(\"linked: %s\\n\", kvt_strerror(-ENOENT));\n"
    "    return 0;\n"
    "}\n";

static int run(const char *cmd)
{
    int st = system(cmd);
    return st == -1 ? -1 : WIFEXITED(st) ? WEXITSTATUS(st) : 128;
}

static void program_linked_with_rpath_runs(void **state)
{
    char dir[] = "/var/tmp/kvtier-link-XXXXXX", cmd[8192], out[128];
    (void)state;

    assert_non_null(mkdtemp(dir));
    char *build = realpath(test_build_dir(), NULL), *root = realpath(".", NULL);
    assert_non_null(build);
    assert_non_null(root);
    snprintf(cmd, sizeof(cmd), "%s/prog.c", dir);
    FILE *f = fopen(cmd, "w");
    assert_non_null(f);
    fputs(program, f);
    assert_int_equal(fclose(f), 0);

    /* A sanitized library needs its runtime in the program too. */
#if defined(__SANITIZE_ADDRESS__)
    const char *san = "-fsanitize=address,undefined";
#else
    const char *san = "";
#endif
    snprintf(cmd, sizeof(cmd),
             "cc %s -I'%s/client' -o '%s/prog' '%s/prog.c' -L'%s' -lkvtier "
             "-Wl,-rpath,'%s' 2> '%s/cc.log' || { cat '%s/cc.log' >&2; exit 1; }",
             san, root, dir, dir, build, build, dir, dir);
    int rc = run(cmd);
    if (rc != 0)
        fail_msg("cc against %s failed (%d)", build, rc);

    snprintf(out, sizeof(out), "%s/out", dir);
    snprintf(cmd, sizeof(cmd), "'%s/prog' > '%s' 2>&1", dir, out);
    rc = run(cmd);
    if (rc != 0) {
        char show[200];
        snprintf(show, sizeof(show), "cat '%s' >&2", out);
        if (system(show) != 0)
            fprintf(stderr, "(no output)\n");
        fail_msg("the program linked with -L%s -lkvtier did not run (exit %d)", build, rc);
    }
    assert_true(test_file_contains(out, "linked: "));
    free(build);
    free(root);

    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    assert_int_equal(run(cmd), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(program_linked_with_rpath_runs),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
