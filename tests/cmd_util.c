/* cmd_util.c - run a shell command line from a test and keep its output. */
#include "tests/cmd_util.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "tests/helpers.h"

int test_cmd(char *out, size_t len, const char *fmt, ...)
{
    char line[4096];
    va_list ap;
    size_t n = 0;

    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    snprintf(line + strlen(line), sizeof(line) - strlen(line), " 2>&1");
    FILE *p = popen(line, "r");
    if (!p)
        fail_msg("popen %s failed", line);
    for (size_t got; n + 1 < len && (got = fread(out + n, 1, len - 1 - n, p)) > 0;)
        n += got;
    out[n] = '\0';
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

int test_ctl(char *out, size_t len, const char *admin_socket, const char *args)
{
    return test_cmd(out, len, "%s/kvtierctl --socket '%s' %s", test_build_dir(), admin_socket,
                    args);
}
