/* fuzz_util.c - what every fuzz target uses: fd counting. */
#include "tests/fuzz/fuzz_util.h"

#include <dirent.h>
#include <string.h>

int fuzz_fd_count(void)
{
    DIR *d = opendir("/proc/self/fd");
    struct dirent *e;
    int n = 0;

    if (!d)
        abort();
    while ((e = readdir(d)))
        if (e->d_name[0] != '.')
            n++;
    closedir(d);
    return n - 1;              /* the directory's own fd */
}

