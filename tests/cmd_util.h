/* cmd_util.h - run a shell command line from a test and keep its output. */
#ifndef KVT_TEST_CMD_UTIL_H
#define KVT_TEST_CMD_UTIL_H

#include <stddef.h>

/* Run the command line (printf-style) under sh with stderr joined to
 * stdout; its output goes into out (len bytes, NUL-terminated). Returns its
 * exit status, or 128 + the signal that ended it. */
int test_cmd(char *out, size_t len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* `BUILD/kvtierctl --socket ADMIN ARGS` through test_cmd. */
int test_ctl(char *out, size_t len, const char *admin_socket, const char *args);

#endif
