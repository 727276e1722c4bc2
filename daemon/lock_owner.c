/* lock_owner.c - who holds a file's flock, for a clear refusal when a
 * second kvtierd is pointed at a cold file another one serves. */
#include "daemon/lock_owner.h"

#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

pid_t lock_owner(const char *path)
{
    struct stat st;
    char line[256], type[16];
    unsigned maj, min;
    unsigned long ino;
    int pid;
    pid_t found = 0;
    FILE *f;

    if (stat(path, &st) < 0 || !(f = fopen("/proc/locks", "re")))
        return 0;
    /* "1: FLOCK  ADVISORY  WRITE 4242 fd:01:1234567 0 EOF"; waiters have
     * "->" where the type is and are skipped. */
    while (fgets(line, sizeof(line), f)) {
        if (sscanf(line, "%*d: %15s %*s %*s %d %x:%x:%lu", type, &pid, &maj, &min, &ino) == 5 &&
            !strcmp(type, "FLOCK") && maj == major(st.st_dev) && min == minor(st.st_dev) &&
            ino == (unsigned long)st.st_ino && pid > 0) {
            found = (pid_t)pid;
            break;
        }
    }
    fclose(f);
    return found;
}
