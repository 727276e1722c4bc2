/* cold_file_edit.h - for the cold format tests: rewrite the version fields
 * of a real cold file in place, recomputing every checksum as
 * cache/cold_format.h defines it, so the file reads as one that a kvtierd
 * of that version wrote. Used by the unit test of the cold tier and by the
 * daemon test; needs only the format header and libxxhash. */
#ifndef KVT_TEST_COLD_FILE_EDIT_H
#define KVT_TEST_COLD_FILE_EDIT_H

#include <stdbool.h>
#include <stdint.h>

struct cold_file_versions {
    uint32_t file;          /* the file header's version */
    uint32_t region;        /* every region header's */
    uint16_t record;        /* every record's */
    /* Leave the name records out (counted in names all the same): files
     * of format 1 and 2 have none, and a name record is not a record of
     * those formats. */
    bool drop_names;
};

/* What cold_file_set_versions found and rewrote. */
struct cold_file_counts {
    uint32_t regions;       /* region headers (valid in any version) */
    uint64_t chunks;        /* chunk records of the regions' logs */
    uint64_t tombstones;
    uint64_t names;         /* name records */
    uint64_t outliers;      /* chunk records whose shape has outliers > 0 */
};

/* Set every version field of the cold file at path to v: the file header,
 * each region header that is whole (magic, index, the file's uuid and a
 * checksum with the file's seed; any version) and each record of such a
 * region's log, walked as recovery walks it (records of the region's use
 * back to back, zero padding to a block boundary skipped). The file must
 * not be open in a daemon. Returns 0 and fills *counts (may be NULL), or
 * -errno (-EINVAL: the file header is not a cold file's). */
int cold_file_set_versions(const char *path, const struct cold_file_versions *v,
                           struct cold_file_counts *counts);

/* The versions found in the file header and in region r's header (0 when
 * the region header is not whole). Returns 0 or -errno. */
int cold_file_get_versions(const char *path, uint32_t r, uint32_t *file, uint32_t *region);

#endif
