/* disk_dir.h - a scratch directory on a real disk for the cold tier's unit
 * tests: O_DIRECT and io_uring behave differently on tmpfs, so /var/tmp is
 * tried first and tmpfs is skipped. Header-only: the unit tests link no
 * shared test code. */
#ifndef KVT_TEST_DISK_DIR_H
#define KVT_TEST_DISK_DIR_H

#include <dirent.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/vfs.h>
#include <unistd.h>

#define TEST_TMPFS_MAGIC 0x01021994

/* Make dir (n bytes) as BASE/kvt-test-TAG.XXXXXX; false if no base works. */
static inline bool test_disk_dir_make(char *dir, size_t n, const char *tag)
{
    static const char *bases[] = { "/var/tmp", "." };

    for (size_t i = 0; i < 2; i++) {
        struct statfs sf;
        if (statfs(bases[i], &sf) == 0 && sf.f_type == TEST_TMPFS_MAGIC)
            continue;
        snprintf(dir, n, "%s/kvt-test-%s.XXXXXX", bases[i], tag);
        if (mkdtemp(dir))
            return true;
    }
    dir[0] = 0;
    return false;
}

/* Remove dir and the files in it. */
static inline void test_disk_dir_remove(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *de;
    char p[600];

    while (d && (de = readdir(d))) {
        if (strcmp(de->d_name, ".") && strcmp(de->d_name, "..")) {
            snprintf(p, sizeof(p), "%s/%s", dir, de->d_name);
            unlink(p);
        }
    }
    if (d)
        closedir(d);
    rmdir(dir);
}

#endif
