/* fuzz_util.h - what every fuzz target uses: findings and fd counting. */
#ifndef KVT_FUZZ_UTIL_H
#define KVT_FUZZ_UTIL_H

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>

/* A finding: print file:line and the reason, then abort so libFuzzer keeps
 * the input as a crash. */
#define FUZZ_CHECK(cond, ...) do {                                            \
        if (!(cond)) {                                                        \
            fprintf(stderr, "%s:%d: check failed: %s: ", __FILE__, __LINE__,  \
                    #cond);                                                   \
            fprintf(stderr, __VA_ARGS__);                                     \
            fputc('\n', stderr);                                              \
            abort();                                                          \
        }                                                                     \
    } while (0)

/* Open file descriptors of this process, from /proc/self/fd. */
int fuzz_fd_count(void);

#endif
