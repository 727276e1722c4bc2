/* test_cold_format.c - proves the cold tier reads the cold file formats it
 * claims to and refuses the others (cache/cold_format.h, "Versions"), on a
 * real file through io_uring:
 *   - a genuine format-1 file (made by this build, every version field then
 *     set to 1 with its checksum, byte for byte what a format-1 kvtierd
 *     wrote, as no record of it has outliers) opens: every record reads back
 *     bit-identical, a tombstone still holds, nothing is counted as corrupt;
 *     the file header is upgraded to format 2 with one log line, the region
 *     headers stay format 1; a reopen reads everything without upgrading
 *     again; records put and synced before a kill -9 come back next to the
 *     old ones, in a format-2 region; a format-1 region reused by the log is
 *     written as format 2, and every record read after that is exact;
 *   - a format-1 record whose shape has outliers (bytes that were the high
 *     half of format 1's u32 elem) is corrupt: skipped like a torn record,
 *     while the same record in format 2 reads back exactly;
 *   - a file header of format 3 (or 0) is refused with -EINVAL and a log
 *     line naming the format, the file left byte for byte; a region header
 *     newer than its file's is taken as unused; a record whose version is
 *     not its region's (3 in a format-2 region, 1 in a format-2 region) is
 *     skipped as torn; set back to format 2, the same file reads whole.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <sys/wait.h>
#include <unistd.h>
#include <cmocka.h>

#include "cache/cold.h"
#include "cache/cold_format.h"
#include "tests/cold_file_edit.h"
#include "tests/disk_dir.h"

#define MIB (1024u * 1024u)
#define BITMAP_WORDS (KVT_CHUNK_MAX_TOKENS / 64)
#define FILE_BYTES (COLD_BLOCK + 8 * MIB)      /* 8 regions of 1 MiB */
#define REGION_BYTES MIB

struct env {
    char dir[256];
    char path[300];
    char logs[8192];                   /* every message, one a line */
};

struct tchunk {
    struct kvt_chunk_image img;
    uint64_t present[BITMAP_WORDS];
    uint8_t *data;
    size_t bytes;
};

static void test_log(void *arg, int level, const char *msg)
{
    struct env *env = arg;
    size_t used = strlen(env->logs);
    (void)level;
    snprintf(env->logs + used, sizeof(env->logs) - used, "%s\n", msg);
    if (getenv("TEST_COLD_VERBOSE"))
        fprintf(stderr, "log: %s\n", msg);
}

/* How many logged lines contain text. */
static int logged(const struct env *env, const char *text)
{
    int n = 0;
    for (const char *p = env->logs; (p = strstr(p, text)); p += strlen(text))
        n++;
    return n;
}

static int setup(void **state)
{
    struct env *env = calloc(1, sizeof(*env));

    assert_non_null(env);
    assert_true(test_disk_dir_make(env->dir, sizeof(env->dir), "cold-format"));
    snprintf(env->path, sizeof(env->path), "%s/cold.kvt", env->dir);
    *state = env;
    return 0;
}

static int teardown(void **state)
{
    struct env *env = *state;
    test_disk_dir_remove(env->dir);
    free(env);
    return 0;
}

static struct kvt_cold_config config(struct env *env)
{
    return (struct kvt_cold_config){ .path = env->path, .bytes = FILE_BYTES,
                                     .region_bytes = REGION_BYTES, .log = test_log,
                                     .log_arg = env };
}

static int try_open(struct env *env, struct kvt_cold **c)
{
    struct kvt_cold_config cfg = config(env);
    env->logs[0] = 0;
    return cold_open(&cfg, c);
}

static struct kvt_cold *open_cold(struct env *env)
{
    struct kvt_cold *c = NULL;
    struct kvt_cold_stats st;

    assert_int_equal(try_open(env, &c), 0);
    cold_stats(c, &st);
    assert_true(st.uring);
    return c;
}

static struct kvt_chunk_key key_of(uint64_t obj)
{
    return (struct kvt_chunk_key){ .ns_id = 5, .obj_hi = obj, .obj_lo = ~obj, .domain = 1000 };
}

/* Contents follow from id; a gap in the presence bitmap after 3/4 of the
 * tokens. */
static void chunk_make(struct tchunk *t, uint64_t id, struct kvt_chunk_shape shape)
{
    uint64_t s = id * 0x9e3779b97f4a7c15ull + 1;

    memset(t, 0, sizeof(*t));
    t->img.key = key_of(id);
    t->img.shape = shape;
    t->bytes = chunk_data_bytes(&shape);
    t->data = malloc(t->bytes);
    assert_non_null(t->data);
    t->img.present = t->present;
    t->img.data = t->data;
    for (uint32_t i = 0; i < shape.tokens; i++)
        if (i != shape.tokens * 3 / 4 || shape.tokens == 1)
            t->present[i / 64] |= UINT64_C(1) << (i % 64);
    for (size_t i = 0; i < t->bytes; i++) {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        t->data[i] = (uint8_t)(id % 3 == 0 ? i / 256 : s);   /* some compress */
    }
}

/* 0 if t's key reads back bit-identical, else cold_get's error or -EPROTO. */
static int get_matches(struct kvt_cold *c, const struct tchunk *t)
{
    struct kvt_chunk_shape shape;
    uint64_t present[BITMAP_WORDS];
    uint8_t *data = malloc(t->bytes);
    int rc;

    assert_non_null(data);
    rc = cold_get(c, &t->img.key, &shape, present, data, t->bytes);
    if (rc == 0 && (memcmp(&shape, &t->img.shape, sizeof(shape)) != 0 ||
                    memcmp(present, t->present, sizeof(present)) != 0 ||
                    memcmp(data, t->data, t->bytes) != 0))
        rc = -EPROTO;
    free(data);
    return rc;
}

/* Shapes as a format-1 daemon stored them: int8 without outliers and the
 * lossless types, 40 to 160 KiB each. */
static struct kvt_chunk_shape v1_shape(int i)
{
    static const struct kvt_chunk_shape shapes[] = {
        { 64, 8, 128, KVT_CHUNK_INT8 }, { 64, 4, 64, 1 }, { 32, 4, 64, 0 },
        { 300, 2, 64, 2 }, { 100, 8, 64, KVT_CHUNK_INT8 },
    };
    return shapes[i % 5];
}

static void versions(const char *path, uint32_t r, uint32_t want_file, uint32_t want_region)
{
    uint32_t file, region;
    assert_int_equal(cold_file_get_versions(path, r, &file, &region), 0);
    assert_int_equal(file, want_file);
    assert_int_equal(region, want_region);
}

static void assert_clean(struct kvt_cold *c, uint64_t recovered)
{
    struct kvt_cold_stats st;
    cold_stats(c, &st);
    assert_int_equal(st.records_recovered, recovered);
    assert_int_equal(st.records_torn, 0);
    assert_int_equal(st.checksum_failures, 0);
    assert_int_equal(st.io_errors, 0);
}

/* ---- tests -------------------------------------------------------------- */

enum { OLD = 30, NEW = 12, DROPPED = 7 };

static void v1_file_read_and_upgraded(void **state)
{
    struct env *env = *state;
    struct tchunk old[OLD], fresh[NEW];
    struct cold_file_counts n;
    struct kvt_cold *c = open_cold(env);
    int status;

    for (int i = 0; i < OLD; i++) {
        chunk_make(&old[i], (uint64_t)i, v1_shape(i));
        assert_int_equal(cold_put(c, &old[i].img), 0);
    }
    assert_int_equal(cold_drop_object(c, 5, DROPPED, ~(uint64_t)DROPPED), 1);
    assert_int_equal(cold_sync(c), 0);
    cold_close(c);
    assert_int_equal(cold_file_set_versions(env->path, &(struct cold_file_versions){ 1, 1, 1 },
                                            &n), 0);
    assert_true(n.regions >= 3);
    assert_int_equal(n.chunks, OLD);
    assert_int_equal(n.tombstones, 1);
    assert_int_equal(n.outliers, 0);
    versions(env->path, 0, 1, 1);

    /* Read as it is, then upgraded: the file header only, said once. */
    c = open_cold(env);
    assert_clean(c, OLD - 1);
    assert_int_equal(logged(env, "upgraded from format 1 to 2"), 1);
    for (int i = 0; i < OLD; i++)
        assert_int_equal(get_matches(c, &old[i]), i == DROPPED ? -ENOENT : 0);
    versions(env->path, 0, 2, 1);
    cold_close(c);

    c = open_cold(env);
    assert_clean(c, OLD - 1);
    assert_int_equal(logged(env, "upgraded"), 0);
    for (int i = 0; i < OLD; i++)
        assert_int_equal(get_matches(c, &old[i]), i == DROPPED ? -ENOENT : 0);
    cold_close(c);

    /* New records, synced, then kill -9: old and new come back. */
    for (int i = 0; i < NEW; i++)
        chunk_make(&fresh[i], 100 + (uint64_t)i, v1_shape(i));
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        struct kvt_cold_config cfg = config(env);
        cfg.log = NULL;
        if (cold_open(&cfg, &c) != 0)
            _exit(2);
        for (int i = 0; i < NEW; i++)
            if (cold_put(c, &fresh[i].img) != 0)
                _exit(3);
        if (cold_sync(c) != 0)
            _exit(4);
        kill(getpid(), SIGKILL);
        _exit(5);
    }
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
    c = open_cold(env);
    assert_clean(c, OLD - 1 + NEW);
    for (int i = 0; i < OLD; i++)
        assert_int_equal(get_matches(c, &old[i]), i == DROPPED ? -ENOENT : 0);
    for (int i = 0; i < NEW; i++)
        assert_int_equal(get_matches(c, &fresh[i]), 0);
    /* The old regions are still format 1; the new records went to the
     * region after them, in format 2. */
    versions(env->path, 0, 2, 1);
    versions(env->path, n.regions, 2, 2);

    /* Round the log until it reuses region 0: format 2 there too. */
    for (int round = 0; round < 8; round++)
        for (int i = 0; i < NEW; i++)
            assert_int_equal(cold_put(c, &fresh[i].img), 0);
    assert_int_equal(cold_sync(c), 0);
    versions(env->path, 0, 2, 2);
    cold_close(c);
    c = open_cold(env);
    for (int i = 0; i < OLD; i++) {
        int rc = get_matches(c, &old[i]);
        assert_true(rc == 0 || rc == -ENOENT);        /* gone with its region */
    }
    for (int i = 0; i < NEW; i++)
        assert_int_equal(get_matches(c, &fresh[i]), 0);
    struct kvt_cold_stats st;
    cold_stats(c, &st);
    assert_int_equal(st.records_torn, 0);
    assert_int_equal(st.checksum_failures, 0);
    cold_close(c);
    for (int i = 0; i < OLD; i++)
        free(old[i].data);
    for (int i = 0; i < NEW; i++)
        free(fresh[i].data);
}

static void v1_record_with_outliers_is_corrupt(void **state)
{
    struct env *env = *state;
    struct kvt_chunk_shape with_outliers = { 16, 4, 64, KVT_CHUNK_INT8, 4 };
    struct tchunk t[3];
    struct cold_file_counts n;
    struct kvt_cold_stats st;
    struct kvt_cold *c = open_cold(env);

    chunk_make(&t[0], 1, v1_shape(0));
    chunk_make(&t[1], 2, v1_shape(1));
    chunk_make(&t[2], 3, with_outliers);              /* last in its region */
    for (int i = 0; i < 3; i++)
        assert_int_equal(cold_put(c, &t[i].img), 0);
    cold_close(c);
    c = open_cold(env);                               /* format 2: fine */
    assert_clean(c, 3);
    for (int i = 0; i < 3; i++)
        assert_int_equal(get_matches(c, &t[i]), 0);
    cold_close(c);

    assert_int_equal(cold_file_set_versions(env->path, &(struct cold_file_versions){ 1, 1, 1 },
                                            &n), 0);
    assert_int_equal(n.chunks, 3);
    assert_int_equal(n.outliers, 1);
    c = open_cold(env);
    cold_stats(c, &st);
    assert_int_equal(st.records_recovered, 2);
    assert_int_equal(st.records_torn, 1);
    assert_int_equal(get_matches(c, &t[0]), 0);
    assert_int_equal(get_matches(c, &t[1]), 0);
    assert_int_equal(get_matches(c, &t[2]), -ENOENT);
    cold_close(c);
    for (int i = 0; i < 3; i++)
        free(t[i].data);
}

static void *file_bytes(const char *path)
{
    uint8_t *buf = malloc(FILE_BYTES);
    int fd = open(path, O_RDONLY);

    assert_non_null(buf);
    assert_true(fd >= 0);
    assert_int_equal(pread(fd, buf, FILE_BYTES, 0), FILE_BYTES);
    close(fd);
    return buf;
}

static void set_versions(struct env *env, uint32_t file, uint32_t region, uint16_t record)
{
    struct cold_file_versions v = { file, region, record };
    assert_int_equal(cold_file_set_versions(env->path, &v, NULL), 0);
}

/* Opens: nothing recovered, and `torn` records counted as torn. */
static void opens_empty(struct env *env, const struct tchunk *t, int n, uint64_t torn)
{
    struct kvt_cold *c = open_cold(env);
    struct kvt_cold_stats st;

    cold_stats(c, &st);
    assert_int_equal(st.records_recovered, 0);
    assert_int_equal(st.records_torn, torn);
    for (int i = 0; i < n; i++)
        assert_int_equal(get_matches(c, &t[i]), -ENOENT);
    cold_close(c);
}

static void other_versions_refused(void **state)
{
    enum { N = 16 };
    struct env *env = *state;
    struct tchunk t[N];
    struct cold_file_counts n;
    struct kvt_cold *c = open_cold(env);

    for (int i = 0; i < N; i++) {
        chunk_make(&t[i], (uint64_t)i, v1_shape(i));
        assert_int_equal(cold_put(c, &t[i].img), 0);
    }
    cold_close(c);
    assert_int_equal(cold_file_set_versions(env->path, &(struct cold_file_versions){ 2, 2, 2 },
                                            &n), 0);
    assert_true(n.regions >= 2);

    /* A file header of a format this build does not read. */
    static const uint32_t refused[] = { 3, 0 };
    for (int i = 0; i < 2; i++) {
        set_versions(env, refused[i], 2, 2);
        void *before = file_bytes(env->path);
        char want[64];
        c = NULL;
        assert_int_equal(try_open(env, &c), -EINVAL);
        assert_null(c);
        snprintf(want, sizeof(want), "cold file of format %u, but this kvtierd reads "
                 "formats 1 to 2", refused[i]);
        assert_int_equal(logged(env, want), 1);
        void *after = file_bytes(env->path);
        assert_memory_equal(before, after, FILE_BYTES);
        free(before);
        free(after);
    }

    /* Region headers newer than the file's: not regions of this file. */
    set_versions(env, 2, 3, 3);
    opens_empty(env, t, N, 0);
    /* Records not of their region's version end its log, as torn ones. */
    set_versions(env, 2, 2, 3);
    opens_empty(env, t, N, n.regions);
    set_versions(env, 2, 2, 1);
    opens_empty(env, t, N, n.regions);

    /* Nothing else was touched: all in format 2, everything is back. */
    set_versions(env, 2, 2, 2);
    c = open_cold(env);
    assert_clean(c, N);
    for (int i = 0; i < N; i++)
        assert_int_equal(get_matches(c, &t[i]), 0);
    cold_close(c);
    for (int i = 0; i < N; i++)
        free(t[i].data);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(v1_file_read_and_upgraded, setup, teardown),
        cmocka_unit_test_setup_teardown(v1_record_with_outliers_is_corrupt, setup, teardown),
        cmocka_unit_test_setup_teardown(other_versions_refused, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
