/* test_cold.c - proves the cold tier keeps its contract, once on the io_uring
 * backend and once on the pread/pwrite backend (force_pread):
 *   - put/get round trips are exact for int8 and every lossless element type,
 *     from the write buffers and from disk; absent keys are -ENOENT;
 *   - a newer put of a key wins, also after reopening; the record's
 *     sequence number (cold_get_seq, cold_record_seq) stays the same
 *     across a reopen and is new after each put; a dropped key has none;
 *   - many records spread over several regions all come back after reopen;
 *   - records synced before a kill -9 are all there after reopen;
 *   - a byte flipped on disk is -EBADMSG and counted, the others are fine;
 *   - a torn last record and garbage after it are skipped by recovery;
 *   - a file far smaller than the data reclaims its oldest regions and keeps
 *     serving the newest records exactly, without errors;
 *   - drop_object / drop_namespace survive reopening;
 *   - a domain quota drops only the over-quota domain's oldest records (by
 *     record seq, across regions), counted in quota_drops; re-putting a key
 *     does not count its old record; quota 0 lifts the limit; a lowered
 *     quota drops every over-quota domain's oldest records at once;
 *   - compressible data is stored smaller, random data raw (<= raw + header);
 *   - a bad or mismatched file header is -EINVAL and the file is unchanged;
 *   - failing writes (RLIMIT_FSIZE makes them fail with EFBIG or come up
 *     short) and failing reads (the file truncated under us) are counted,
 *     logged once per burst and become misses, never wrong data;
 *   - with io_uring_setup refused (seccomp, as systemd sandboxes may do) the
 *     tier falls back to pread/pwrite with exactly one warning;
 *   - readers running next to a writer (with reclaim) only ever see exact
 *     data or -ENOENT;
 *   - cold_namespace_usage counts each namespace's chunk records, bytes and
 *     objects (chunk 0 of layer 0) exactly through puts, replacements,
 *     drops, quota drops, region reuse and a reopen: they add up to the
 *     tier's records and used bytes, and a namespace with nothing left is
 *     not listed.
 * Files live in a temporary directory under /var/tmp (or the current
 * directory if /var/tmp is tmpfs, which would hide O_DIRECT behaviour).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <sys/wait.h>
#include <unistd.h>
#include <cmocka.h>

#include "cache/cold.h"
#include "cache/cold_format.h"
#include "tests/disk_dir.h"

#define MIB (1024u * 1024u)
#define BITMAP_WORDS (KVT_CHUNK_MAX_TOKENS / 64)

enum backend { URING, PREAD };

struct env {
    enum backend backend;
    char dir[256];
    char path[300];
    uint32_t wbufs, wbuf_bytes;        /* write buffers; 0 = the defaults */
    atomic_int logs;
};

enum fill { RANDOM, COMPRESSIBLE };

/* A chunk whose contents follow from (id, version, fill), so any reader can
 * rebuild what it should have got. */
struct tchunk {
    struct kvt_chunk_image img;
    uint64_t present[BITMAP_WORDS];
    uint8_t *data;
    size_t bytes;
};

static void test_log(void *arg, int level, const char *msg)
{
    struct env *env = arg;
    (void)level;
    atomic_fetch_add(&env->logs, 1);
    if (getenv("TEST_COLD_VERBOSE"))
        fprintf(stderr, "log: %s\n", msg);
}

static int setup(void **state)
{
    struct env *env = calloc(1, sizeof(*env));

    assert_non_null(env);
    env->backend = *(enum backend *)*state;
    assert_true(test_disk_dir_make(env->dir, sizeof(env->dir), "cold"));
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

static struct kvt_cold_config config(struct env *env, uint64_t bytes, uint32_t region)
{
    return (struct kvt_cold_config){
        .path = env->path, .bytes = bytes, .region_bytes = region,
        .force_pread = env->backend == PREAD, .log = test_log, .log_arg = env,
        .write_buffers = env->wbufs, .write_buffer_bytes = env->wbuf_bytes,
    };
}

static struct kvt_cold *open_cold(struct env *env, uint64_t bytes, uint32_t region)
{
    struct kvt_cold_config cfg = config(env, bytes, region);
    struct kvt_cold *c = NULL;
    struct kvt_cold_stats st;

    assert_int_equal(cold_open(&cfg, &c), 0);
    cold_stats(c, &st);
    assert_int_equal(st.uring, env->backend == URING);
    return c;
}

static struct kvt_chunk_key key_of(uint64_t ns, uint64_t obj, uint32_t layer, uint32_t idx)
{
    return (struct kvt_chunk_key){ .ns_id = ns, .obj_hi = obj, .obj_lo = ~obj,
                                   .domain = 1000, .layer = layer, .chunk_idx = idx };
}

static uint64_t xorshift(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

static void chunk_fill(struct tchunk *t, uint64_t id, uint64_t version, enum fill fill)
{
    uint64_t s = id * 0x9e3779b97f4a7c15ull + version * 0xbf58476d1ce4e5b9ull + 1;
    uint32_t tokens = t->img.shape.tokens;

    memset(t->present, 0, sizeof(t->present));
    for (uint32_t i = 0; i < tokens; i++)   /* a gap after 3/4 of the tokens */
        if (i != tokens * 3 / 4 || tokens == 1)
            t->present[i / 64] |= UINT64_C(1) << (i % 64);
    for (size_t i = 0; i < t->bytes; i += 8) {
        uint64_t v = fill == RANDOM ? xorshift(&s) : (i / 64) % 7 * 0x0101010101010101ull + id;
        memcpy(t->data + i, &v, t->bytes - i < 8 ? t->bytes - i : 8);
    }
    /* Stamp id and version so a concurrent reader can tell what it got. */
    if (t->bytes >= 16) {
        memcpy(t->data, &id, 8);
        memcpy(t->data + 8, &version, 8);
    }
}

static void chunk_make(struct tchunk *t, struct kvt_chunk_key key, struct kvt_chunk_shape shape,
                       uint64_t id, uint64_t version, enum fill fill)
{
    t->img.key = key;
    t->img.shape = shape;
    t->bytes = chunk_data_bytes(&shape);
    t->data = malloc(t->bytes);
    assert_non_null(t->data);
    t->img.present = t->present;
    t->img.data = t->data;
    chunk_fill(t, id, version, fill);
}

static void chunk_free(struct tchunk *t)
{
    free(t->data);
    t->data = NULL;
}

/* A lossless f16 chunk of about `bytes` bytes: tokens x 8 heads x 64 dim. */
static struct kvt_chunk_shape shape_of_bytes(size_t bytes)
{
    uint32_t tokens = (uint32_t)(bytes / (2 * 8 * 64 * 2));
    return (struct kvt_chunk_shape){ .tokens = tokens ? tokens : 1, .heads = 8, .dim = 64, .elem = 1 };
}

/* 0 if key's record reads back exactly as t, else the cold_get error (or
 * -EPROTO for wrong contents). */
static int get_matches(struct kvt_cold *c, const struct tchunk *t)
{
    struct kvt_chunk_shape shape;
    uint64_t present[BITMAP_WORDS];
    uint8_t *data = malloc(t->bytes + 64);
    int rc;

    assert_non_null(data);
    memset(present, 0xa5, sizeof(present));
    rc = cold_get(c, &t->img.key, &shape, present, data, t->bytes + 64);
    if (rc == 0 && (memcmp(&shape, &t->img.shape, sizeof(shape)) != 0 ||
                    memcmp(present, t->present, sizeof(present)) != 0 ||
                    memcmp(data, t->data, t->bytes) != 0))
        rc = -EPROTO;
    free(data);
    return rc;
}

static void assert_no_errors(struct kvt_cold *c)
{
    struct kvt_cold_stats st;

    cold_stats(c, &st);
    assert_int_equal(st.io_errors, 0);
    assert_int_equal(st.checksum_failures, 0);
}

/* Offset of needle in the file, or -1. */
static off_t file_find(const char *path, const void *needle, size_t n)
{
    int fd = open(path, O_RDONLY);
    struct stat st;
    uint8_t *buf;
    off_t at = -1;

    assert_true(fd >= 0);
    assert_int_equal(fstat(fd, &st), 0);
    buf = malloc((size_t)st.st_size);
    assert_non_null(buf);
    assert_int_equal(pread(fd, buf, (size_t)st.st_size, 0), st.st_size);
    uint8_t *p = memmem(buf, (size_t)st.st_size, needle, n);
    if (p)
        at = p - buf;
    free(buf);
    close(fd);
    return at;
}

static void file_write(const char *path, off_t off, const void *buf, size_t n)
{
    int fd = open(path, O_WRONLY);
    assert_true(fd >= 0);
    assert_int_equal(pwrite(fd, buf, n, off), (ssize_t)n);
    assert_int_equal(fsync(fd), 0);
    close(fd);
}

/* ---- tests -------------------------------------------------------------- */

static void test_round_trip(void **state)
{
    struct env *env = *state;
    static const struct kvt_chunk_shape shapes[] = {
        { 16, 4, 64, KVT_CHUNK_INT8 }, { 16, 4, 64, 1 }, { 8, 2, 32, 0 },
        { 32, 8, 128, 2 }, { 1, 1, 1, KVT_CHUNK_INT8 }, { 300, 2, 16, 0 },
    };
    enum { N = sizeof(shapes) / sizeof(shapes[0]) };
    struct tchunk t[N];
    struct kvt_cold *c = open_cold(env, COLD_BLOCK + 8 * MIB, MIB);
    struct kvt_chunk_key absent = key_of(9, 9, 9, 9);
    struct kvt_chunk_shape shape;
    uint64_t present[BITMAP_WORDS];
    uint8_t small[16];
    uint32_t leading;

    for (int i = 0; i < N; i++) {
        chunk_make(&t[i], key_of(1, 100 + i, 0, 0), shapes[i], i, 1, i % 2 ? RANDOM : COMPRESSIBLE);
        assert_int_equal(cold_put(c, &t[i].img), 0);
    }
    for (int i = 0; i < N; i++)          /* served from the write buffer */
        assert_int_equal(get_matches(c, &t[i]), 0);
    assert_int_equal(cold_sync(c), 0);
    for (int i = 0; i < N; i++) {        /* served from disk */
        assert_int_equal(get_matches(c, &t[i]), 0);
        assert_int_equal(cold_lookup(c, &t[i].img.key, &leading), 0);
        assert_int_equal(leading, shapes[i].tokens == 1 ? 1 : shapes[i].tokens * 3 / 4);
    }
    assert_int_equal(cold_get(c, &absent, &shape, present, small, sizeof(small)), -ENOENT);
    assert_int_equal(cold_lookup(c, &absent, &leading), -ENOENT);
    assert_int_equal(cold_get(c, &t[0].img.key, &shape, present, small, sizeof(small)), -ENOSPC);
    assert_no_errors(c);
    assert_int_equal(atomic_load(&env->logs), 0);
    cold_close(c);
    for (int i = 0; i < N; i++)
        chunk_free(&t[i]);
}

static void test_overwrite_newest_wins(void **state)
{
    struct env *env = *state;
    struct kvt_chunk_key key = key_of(1, 7, 3, 2);
    struct kvt_chunk_shape shape = shape_of_bytes(40000);
    struct tchunk v[3];
    struct kvt_cold *c = open_cold(env, COLD_BLOCK + 8 * MIB, MIB);

    for (int i = 0; i < 3; i++)
        chunk_make(&v[i], key, shape, 7, (uint64_t)i + 1, RANDOM);
    assert_int_equal(cold_put(c, &v[0].img), 0);
    uint64_t seq0 = 0, seq1 = 0, seq = 0, present[BITMAP_WORDS];
    struct kvt_chunk_shape got;
    uint8_t *buf = malloc(v[0].bytes);
    assert_non_null(buf);
    assert_int_equal(cold_record_seq(c, &key, &seq0), 0);
    assert_int_equal(cold_put(c, &v[1].img), 0);
    assert_int_equal(get_matches(c, &v[1]), 0);
    assert_int_equal(cold_get_seq(c, &key, &got, present, buf, v[0].bytes, &seq1), 0);
    assert_int_equal(memcmp(buf, v[1].data, v[1].bytes), 0);
    assert_true(seq1 > seq0);
    assert_int_equal(cold_record_seq(c, &key, &seq), 0);
    assert_int_equal(seq, seq1);
    assert_int_equal(cold_sync(c), 0);
    assert_int_equal(get_matches(c, &v[1]), 0);
    cold_close(c);
    c = open_cold(env, COLD_BLOCK + 8 * MIB, MIB);
    assert_int_equal(get_matches(c, &v[1]), 0);
    assert_int_equal(cold_record_seq(c, &key, &seq), 0);
    assert_int_equal(seq, seq1);             /* the same record */
    assert_int_equal(cold_put(c, &v[2].img), 0);
    assert_int_equal(cold_record_seq(c, &key, &seq), 0);
    assert_true(seq > seq1);
    cold_close(c);
    c = open_cold(env, COLD_BLOCK + 8 * MIB, MIB);
    assert_int_equal(get_matches(c, &v[2]), 0);
    struct kvt_cold_stats st;
    cold_stats(c, &st);
    assert_int_equal(st.records, 1);
    assert_no_errors(c);
    assert_int_equal(cold_drop_object(c, key.ns_id, key.obj_hi, key.obj_lo), 1);
    assert_int_equal(cold_record_seq(c, &key, &seq), -ENOENT);
    assert_int_equal(cold_get_seq(c, &key, &got, present, buf, v[0].bytes, &seq), -ENOENT);
    free(buf);
    cold_close(c);
    for (int i = 0; i < 3; i++)
        chunk_free(&v[i]);
}

static void test_many_regions_and_reopen(void **state)
{
    struct env *env = *state;
    enum { N = 80 };
    struct tchunk t[N];
    struct kvt_cold_stats st;
    struct kvt_cold *c;

    /* Few small write buffers: records span buffers and puts must wait. */
    env->wbufs = 3;
    env->wbuf_bytes = 64 * 1024;
    c = open_cold(env, COLD_BLOCK + 16 * MIB, MIB);
    for (int i = 0; i < N; i++) {
        chunk_make(&t[i], key_of(2, (uint64_t)i, (uint32_t)i % 4, 0),
                   shape_of_bytes(60000 + 3000 * (size_t)(i % 20)), (uint64_t)i, 1,
                   i % 3 ? RANDOM : COMPRESSIBLE);
        assert_int_equal(cold_put(c, &t[i].img), 0);
    }
    for (int i = 0; i < N; i++)
        assert_int_equal(get_matches(c, &t[i]), 0);
    cold_stats(c, &st);
    assert_true(st.used_bytes > 3 * MIB);    /* so at least 4 regions of 1 MiB */
    cold_close(c);

    c = open_cold(env, COLD_BLOCK + 16 * MIB, MIB);
    cold_stats(c, &st);
    assert_int_equal(st.records_recovered, N);
    assert_int_equal(st.records, N);
    assert_int_equal(st.regions_reclaimed, 0);
    for (int i = 0; i < N; i++)
        assert_int_equal(get_matches(c, &t[i]), 0);
    assert_no_errors(c);
    cold_close(c);
    for (int i = 0; i < N; i++)
        chunk_free(&t[i]);
}

static void test_synced_records_survive_kill(void **state)
{
    struct env *env = *state;
    enum { SYNCED = 30, UNSYNCED = 10 };
    struct kvt_cold_config cfg = config(env, COLD_BLOCK + 16 * MIB, MIB);
    struct tchunk t[SYNCED + UNSYNCED];
    int status;

    cfg.log = NULL;
    for (int i = 0; i < SYNCED + UNSYNCED; i++)
        chunk_make(&t[i], key_of(3, (uint64_t)i, 0, 0), shape_of_bytes(70000), (uint64_t)i, 1,
                   RANDOM);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        struct kvt_cold *c;
        if (cold_open(&cfg, &c) != 0)
            _exit(2);
        for (int i = 0; i < SYNCED; i++)
            if (cold_put(c, &t[i].img) != 0)
                _exit(3);
        if (cold_sync(c) != 0)
            _exit(4);
        for (int i = SYNCED; i < SYNCED + UNSYNCED; i++)
            cold_put(c, &t[i].img);
        kill(getpid(), SIGKILL);
        _exit(5);
    }
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFSIGNALED(status));
    assert_int_equal(WTERMSIG(status), SIGKILL);

    struct kvt_cold *c = open_cold(env, COLD_BLOCK + 16 * MIB, MIB);
    for (int i = 0; i < SYNCED; i++)
        assert_int_equal(get_matches(c, &t[i]), 0);
    for (int i = SYNCED; i < SYNCED + UNSYNCED; i++) {
        int rc = get_matches(c, &t[i]);     /* may or may not have made it */
        assert_true(rc == 0 || rc == -ENOENT);
    }
    /* A record whose first half was written and whose second half was
     * still in memory is legitimately found torn. */
    struct kvt_cold_stats st;
    cold_stats(c, &st);
    assert_int_equal(st.io_errors, 0);
    assert_true(st.records_torn <= 1);
    cold_close(c);
    for (int i = 0; i < SYNCED + UNSYNCED; i++)
        chunk_free(&t[i]);
}

static void test_flipped_byte_detected(void **state)
{
    struct env *env = *state;
    enum { N = 10, BAD = 5 };
    struct tchunk t[N];
    struct kvt_cold_stats st;
    struct kvt_cold *c = open_cold(env, COLD_BLOCK + 8 * MIB, MIB);

    for (int i = 0; i < N; i++) {
        chunk_make(&t[i], key_of(4, (uint64_t)i, 0, 0), shape_of_bytes(64000), (uint64_t)i, 1,
                   RANDOM);
        assert_int_equal(cold_put(c, &t[i].img), 0);
    }
    assert_int_equal(cold_sync(c), 0);
    off_t at = file_find(env->path, t[BAD].data + 1000, 64);
    assert_true(at > 0);
    uint8_t byte = t[BAD].data[1010] ^ 0x40;
    file_write(env->path, at + 10, &byte, 1);

    assert_int_equal(get_matches(c, &t[BAD]), -EBADMSG);
    cold_stats(c, &st);
    assert_int_equal(st.checksum_failures, 1);
    assert_int_equal(get_matches(c, &t[BAD]), -ENOENT);    /* dropped */
    for (int i = 0; i < N; i++)
        if (i != BAD)
            assert_int_equal(get_matches(c, &t[i]), 0);
    cold_stats(c, &st);
    assert_int_equal(st.checksum_failures, 1);
    assert_int_equal(st.io_errors, 0);
    cold_close(c);
    for (int i = 0; i < N; i++)
        chunk_free(&t[i]);
}

static void test_torn_tail_skipped(void **state)
{
    struct env *env = *state;
    enum { N = 10 };
    struct tchunk t[N], later;
    struct kvt_cold_stats st;
    struct kvt_cold *c = open_cold(env, COLD_BLOCK + 8 * MIB, MIB);
    uint8_t garbage[8192];
    uint64_t s = 42;

    for (int i = 0; i < N; i++) {
        chunk_make(&t[i], key_of(5, (uint64_t)i, 0, 0), shape_of_bytes(50000), (uint64_t)i, 1,
                   RANDOM);
        assert_int_equal(cold_put(c, &t[i].img), 0);
    }
    chunk_make(&later, key_of(5, 99, 0, 0), shape_of_bytes(50000), 99, 1, RANDOM);
    cold_close(c);
    for (size_t i = 0; i < sizeof(garbage); i += 8) {
        uint64_t v = xorshift(&s);
        memcpy(garbage + i, &v, 8);
    }
    /* Random data is stored raw, so the file holds it verbatim. */
    off_t last = file_find(env->path, t[N - 1].data + 64, 64) - 64;
    assert_true(last > 0);

    /* Garbage right behind the last record: the log just ends there. */
    file_write(env->path, last + (off_t)t[N - 1].bytes, garbage, sizeof(garbage));
    c = open_cold(env, COLD_BLOCK + 8 * MIB, MIB);
    cold_stats(c, &st);
    assert_int_equal(st.records_recovered, N);
    assert_int_equal(st.records_torn, 0);
    cold_close(c);

    /* The last record loses its second half, as a torn write leaves it. */
    uint8_t *zeros = calloc(1, t[N - 1].bytes);
    assert_non_null(zeros);
    file_write(env->path, last + (off_t)t[N - 1].bytes / 2, zeros, t[N - 1].bytes / 2);
    free(zeros);
    c = open_cold(env, COLD_BLOCK + 8 * MIB, MIB);
    cold_stats(c, &st);
    assert_int_equal(st.records_recovered, N - 1);
    assert_int_equal(st.records_torn, 1);
    for (int i = 0; i < N - 1; i++)
        assert_int_equal(get_matches(c, &t[i]), 0);
    assert_int_equal(get_matches(c, &t[N - 1]), -ENOENT);
    /* The log goes on after a torn tail, and that survives a reopen too. */
    assert_int_equal(cold_put(c, &later.img), 0);
    cold_close(c);
    c = open_cold(env, COLD_BLOCK + 8 * MIB, MIB);
    assert_int_equal(get_matches(c, &later), 0);
    for (int i = 0; i < N - 1; i++)
        assert_int_equal(get_matches(c, &t[i]), 0);
    cold_close(c);
    for (int i = 0; i < N; i++)
        chunk_free(&t[i]);
    chunk_free(&later);
}

static void test_small_file_reclaims_oldest(void **state)
{
    struct env *env = *state;
    enum { N = 40, NEWEST = 4 };
    struct tchunk t[N];
    struct kvt_cold_stats st;
    struct kvt_cold *c = open_cold(env, COLD_BLOCK + 4 * MIB, MIB);

    for (int i = 0; i < N; i++) {
        chunk_make(&t[i], key_of(6, (uint64_t)i, 0, 0), shape_of_bytes(200000), (uint64_t)i, 1,
                   RANDOM);
        assert_int_equal(cold_put(c, &t[i].img), 0);
        for (int j = i - NEWEST + 1 < 0 ? 0 : i - NEWEST + 1; j <= i; j++)
            assert_int_equal(get_matches(c, &t[j]), 0);
    }
    for (int pass = 0; pass < 2; pass++) {
        int present = 0;
        for (int i = 0; i < N; i++) {
            int rc = get_matches(c, &t[i]);
            assert_true(rc == 0 || rc == -ENOENT);
            present += rc == 0;
            if (i >= N - NEWEST)
                assert_int_equal(rc, 0);
        }
        assert_int_equal(get_matches(c, &t[0]), -ENOENT);
        assert_true(present >= NEWEST && present <= N / 2);   /* 4 regions of 5 */
        cold_stats(c, &st);
        assert_true(pass == 1 || st.regions_reclaimed >= 4);
        assert_true(st.used_bytes <= st.capacity_bytes);
        assert_no_errors(c);
        cold_close(c);
        c = open_cold(env, COLD_BLOCK + 4 * MIB, MIB);
    }
    cold_close(c);
    for (int i = 0; i < N; i++)
        chunk_free(&t[i]);
}

static void test_drops_survive_reopen(void **state)
{
    struct env *env = *state;
    struct kvt_chunk_shape shape = { 16, 4, 64, KVT_CHUNK_INT8 };
    struct tchunk a[4], b, ns2[3], a_later;
    struct kvt_cold_stats st;
    struct kvt_cold *c = open_cold(env, COLD_BLOCK + 8 * MIB, MIB);

    for (int i = 0; i < 4; i++) {
        chunk_make(&a[i], key_of(1, 0xa, (uint32_t)i, 0), shape, (uint64_t)i, 1, RANDOM);
        assert_int_equal(cold_put(c, &a[i].img), 0);
    }
    chunk_make(&b, key_of(1, 0xb, 0, 0), shape, 10, 1, RANDOM);
    assert_int_equal(cold_put(c, &b.img), 0);
    for (int i = 0; i < 3; i++) {
        chunk_make(&ns2[i], key_of(2, 0xc + (uint64_t)i, 0, 0), shape, 20 + (uint64_t)i, 1, RANDOM);
        assert_int_equal(cold_put(c, &ns2[i].img), 0);
    }
    assert_int_equal(cold_sync(c), 0);
    assert_int_equal(cold_drop_object(c, 1, 0xa, ~UINT64_C(0xa)), 4);
    assert_int_equal(cold_drop_namespace(c, 2), 3);
    chunk_make(&a_later, key_of(1, 0xa, 9, 0), shape, 30, 1, RANDOM);
    assert_int_equal(cold_put(c, &a_later.img), 0);   /* newer than the tombstones */
    assert_int_equal(cold_put(c, &ns2[2].img), 0);
    for (int i = 0; i < 4; i++)
        assert_int_equal(get_matches(c, &a[i]), -ENOENT);
    cold_close(c);

    c = open_cold(env, COLD_BLOCK + 8 * MIB, MIB);
    for (int i = 0; i < 4; i++)
        assert_int_equal(get_matches(c, &a[i]), -ENOENT);
    for (int i = 0; i < 2; i++)
        assert_int_equal(get_matches(c, &ns2[i]), -ENOENT);
    assert_int_equal(get_matches(c, &ns2[2]), 0);
    assert_int_equal(get_matches(c, &b), 0);
    assert_int_equal(get_matches(c, &a_later), 0);
    cold_stats(c, &st);
    assert_int_equal(st.records, 3);
    assert_int_equal(cold_drop_namespace(c, 0), 3);   /* 0 = every namespace */
    cold_close(c);

    c = open_cold(env, COLD_BLOCK + 8 * MIB, MIB);
    cold_stats(c, &st);
    assert_int_equal(st.records, 0);
    assert_no_errors(c);
    cold_close(c);
    for (int i = 0; i < 4; i++)
        chunk_free(&a[i]);
    for (int i = 0; i < 3; i++)
        chunk_free(&ns2[i]);
    chunk_free(&b);
    chunk_free(&a_later);
}

static struct kvt_chunk_key domain_key_of(uint32_t domain, uint64_t obj)
{
    struct kvt_chunk_key k = key_of(4, obj, 0, 0);

    k.domain = domain;
    return k;
}

static void test_domain_quota_drops_oldest(void **state)
{
    enum { A_N = 4, B_N = 12 };
    struct env *env = *state;
    struct kvt_chunk_shape shape = shape_of_bytes(200000);   /* ~5 per 1 MiB region */
    struct tchunk a[A_N], b[B_N];
    struct kvt_cold *c = open_cold(env, COLD_BLOCK + 16 * MIB, MIB);
    struct kvt_cold_stats st;
    uint64_t rec;

    for (uint64_t i = 0; i < A_N; i++)
        chunk_make(&a[i], domain_key_of(10, 100 + i), shape, 100 + i, 1, RANDOM);
    for (uint64_t i = 0; i < B_N; i++)
        chunk_make(&b[i], domain_key_of(20, 200 + i), shape, 200 + i, 1, RANDOM);
    assert_int_equal(cold_put(c, &b[0].img), 0);
    rec = cold_domain_used(c, 20);            /* random data: every record this size */
    assert_true(rec > chunk_data_bytes(&shape));
    cold_set_domain_quota(c, 4 * rec + rec / 2);
    /* Domain 10's records sit between domain 20's in the same regions. */
    for (uint64_t i = 1; i < B_N; i++) {
        if (i % 3 == 1)
            assert_int_equal(cold_put(c, &a[i / 3].img), 0);
        assert_int_equal(cold_put(c, &b[i].img), 0);
        assert_true(cold_domain_used(c, 20) <= 4 * rec + rec / 2);
    }
    assert_int_equal(cold_domain_used(c, 20), 4 * rec);
    assert_int_equal(cold_domain_used(c, 10), A_N * rec);
    for (int i = 0; i < A_N; i++)
        assert_int_equal(get_matches(c, &a[i]), 0);
    for (int i = 0; i < B_N; i++)
        assert_int_equal(get_matches(c, &b[i]), i < B_N - 4 ? -ENOENT : 0);
    cold_stats(c, &st);
    assert_int_equal(st.quota_drops, B_N - 4);
    assert_int_equal(st.regions_reclaimed, 0);
    assert_int_equal(st.records, A_N + 4);

    /* A newer record of a key the domain holds replaces it: no drop. */
    chunk_fill(&b[B_N - 4], 200 + B_N - 4, 2, RANDOM);
    assert_int_equal(cold_put(c, &b[B_N - 4].img), 0);
    cold_stats(c, &st);
    assert_int_equal(st.quota_drops, B_N - 4);
    for (int i = B_N - 4; i < B_N; i++)
        assert_int_equal(get_matches(c, &b[i]), 0);

    /* Quota 0: no limit. */
    cold_set_domain_quota(c, 0);
    assert_int_equal(cold_put(c, &b[0].img), 0);
    assert_int_equal(get_matches(c, &b[0]), 0);
    assert_int_equal(cold_domain_used(c, 20), 5 * rec);

    /* Lowering the quota applies at once, to every domain over it: each
     * keeps its two newest records (by seq: b[8] was re-put, b[0] last). */
    cold_set_domain_quota(c, 2 * rec + rec / 2);
    assert_int_equal(cold_domain_used(c, 20), 2 * rec);
    assert_int_equal(cold_domain_used(c, 10), 2 * rec);
    assert_int_equal(get_matches(c, &b[0]), 0);
    assert_int_equal(get_matches(c, &b[B_N - 4]), 0);
    for (int i = B_N - 3; i < B_N; i++)
        assert_int_equal(get_matches(c, &b[i]), -ENOENT);
    for (int i = 0; i < A_N; i++)
        assert_int_equal(get_matches(c, &a[i]), i >= 2 ? 0 : -ENOENT);
    assert_no_errors(c);
    cold_close(c);
    for (int i = 0; i < A_N; i++)
        chunk_free(&a[i]);
    for (int i = 0; i < B_N; i++)
        chunk_free(&b[i]);
}

static void test_compression(void **state)
{
    struct env *env = *state;
    struct kvt_chunk_shape shape = shape_of_bytes(256 * 1024);
    struct tchunk z, r, big;
    struct kvt_cold_stats st0, st1, st2;
    struct kvt_cold *c = open_cold(env, COLD_BLOCK + 8 * MIB, MIB);
    uint64_t overhead = sizeof(struct cold_record_header) + chunk_bitmap_bytes(shape.tokens);

    chunk_make(&z, key_of(7, 1, 0, 0), shape, 1, 1, COMPRESSIBLE);
    chunk_make(&r, key_of(7, 2, 0, 0), shape, 2, 1, RANDOM);
    cold_stats(c, &st0);
    assert_int_equal(cold_put(c, &z.img), 0);
    cold_stats(c, &st1);
    assert_true(st1.used_bytes - st0.used_bytes < z.bytes / 4);
    assert_int_equal(cold_put(c, &r.img), 0);
    cold_stats(c, &st2);
    assert_true(st2.used_bytes - st1.used_bytes <= r.bytes + overhead);
    assert_true(st2.used_bytes - st1.used_bytes >= r.bytes);
    assert_int_equal(st2.raw_bytes_in, 2 * (z.bytes + chunk_bitmap_bytes(shape.tokens)));
    assert_int_equal(get_matches(c, &z), 0);
    assert_int_equal(get_matches(c, &r), 0);

    /* Larger than a region: random data cannot fit, compressible data does. */
    chunk_make(&big, key_of(7, 3, 0, 0), shape_of_bytes(3 * MIB / 2), 3, 1, RANDOM);
    assert_int_equal(cold_put(c, &big.img), -E2BIG);
    chunk_fill(&big, 3, 1, COMPRESSIBLE);
    assert_int_equal(cold_put(c, &big.img), 0);
    assert_int_equal(cold_sync(c), 0);
    assert_int_equal(get_matches(c, &big), 0);
    assert_no_errors(c);
    cold_close(c);
    chunk_free(&z);
    chunk_free(&r);
    chunk_free(&big);
}

static uint8_t *file_slurp(const char *path, size_t *n)
{
    int fd = open(path, O_RDONLY);
    struct stat st;
    uint8_t *buf;

    assert_true(fd >= 0);
    assert_int_equal(fstat(fd, &st), 0);
    *n = (size_t)st.st_size;
    buf = malloc(*n + 1);
    assert_non_null(buf);
    assert_int_equal(pread(fd, buf, *n, 0), (ssize_t)*n);
    close(fd);
    return buf;
}

static void assert_open_refused(struct env *env, uint64_t bytes, uint32_t region)
{
    struct kvt_cold_config cfg = config(env, bytes, region);
    struct kvt_cold *c = NULL;
    size_t n0, n1;
    uint8_t *before = file_slurp(env->path, &n0);

    assert_int_equal(cold_open(&cfg, &c), -EINVAL);
    assert_null(c);
    uint8_t *after = file_slurp(env->path, &n1);
    assert_int_equal(n0, n1);
    assert_memory_equal(before, after, n0);
    free(before);
    free(after);
}

static void test_bad_header_refused(void **state)
{
    struct env *env = *state;
    uint8_t junk[3 * COLD_BLOCK];
    uint64_t s = 7;

    for (size_t i = 0; i < sizeof(junk); i += 8) {
        uint64_t v = xorshift(&s);
        memcpy(junk + i, &v, 8);
    }
    int fd = open(env->path, O_RDWR | O_CREAT | O_TRUNC, 0600);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, junk, sizeof(junk)), (ssize_t)sizeof(junk));
    close(fd);
    assert_open_refused(env, COLD_BLOCK + 4 * MIB, MIB);
    assert_int_equal(truncate(env->path, 100), 0);      /* shorter than a header */
    assert_open_refused(env, COLD_BLOCK + 4 * MIB, MIB);

    /* A good file opened with another geometry, or one flipped bit. */
    unlink(env->path);
    struct kvt_cold *c = open_cold(env, COLD_BLOCK + 4 * MIB, MIB);
    struct tchunk t;
    chunk_make(&t, key_of(8, 1, 0, 0), shape_of_bytes(10000), 1, 1, RANDOM);
    assert_int_equal(cold_put(c, &t.img), 0);
    cold_close(c);
    assert_open_refused(env, COLD_BLOCK + 4 * MIB, 2 * MIB);
    assert_open_refused(env, COLD_BLOCK + 8 * MIB, MIB);
    uint8_t *file;
    size_t n;
    file = file_slurp(env->path, &n);
    file[40] ^= 1;                                      /* inside the uuid */
    file_write(env->path, 40, &file[40], 1);
    assert_open_refused(env, COLD_BLOCK + 4 * MIB, MIB);
    file[40] ^= 1;
    file_write(env->path, 40, &file[40], 1);
    free(file);
    c = open_cold(env, COLD_BLOCK + 4 * MIB, MIB);
    assert_int_equal(get_matches(c, &t), 0);
    /* One opener at a time. */
    struct kvt_cold_config cfg = config(env, COLD_BLOCK + 4 * MIB, MIB);
    struct kvt_cold *c2 = NULL;
    assert_int_equal(cold_open(&cfg, &c2), -EBUSY);
    cold_close(c);
    chunk_free(&t);
}

static void test_disk_errors_become_misses(void **state)
{
    struct env *env = *state;
    enum { N = 40 };
    struct tchunk t[N];
    struct kvt_cold_stats st;
    struct rlimit saved, limit;
    struct kvt_cold *c = open_cold(env, COLD_BLOCK + 8 * MIB, MIB);
    int put_ok = 0, present = 0;

    /* Writes that end past 2 MiB come up short, later ones fail (EFBIG). */
    assert_int_equal(getrlimit(RLIMIT_FSIZE, &saved), 0);
    limit = saved;
    limit.rlim_cur = 2 * MIB;
    signal(SIGXFSZ, SIG_IGN);
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &limit), 0);
    for (int i = 0; i < N; i++) {
        chunk_make(&t[i], key_of(12, (uint64_t)i, 0, 0), shape_of_bytes(100000), (uint64_t)i, 1,
                   RANDOM);
        int rc = cold_put(c, &t[i].img);
        assert_true(rc == 0 || rc == -EIO);
        put_ok += rc == 0;
    }
    assert_true(cold_sync(c) < 0);
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &saved), 0);
    signal(SIGXFSZ, SIG_DFL);
    for (int i = 0; i < N; i++) {
        int rc = get_matches(c, &t[i]);
        assert_true(rc == 0 || rc == -ENOENT);
        present += rc == 0;
    }
    cold_stats(c, &st);
    assert_true(put_ok > 0);
    assert_true(present >= 5 && present < N);     /* the first region is fine */
    assert_true(st.io_errors >= 1);
    assert_int_equal(st.checksum_failures, 0);
    /* One burst, one message for the errors and one for the records lost
     * (without an unwritten hook every record of a failed write is). */
    assert_int_equal(atomic_load(&env->logs), 2);
    assert_int_equal(st.records, (uint64_t)present);

    /* With the limit gone the tier writes again. */
    for (int i = 0; i < N; i++)
        assert_int_equal(cold_put(c, &t[i].img), 0);
    assert_int_equal(cold_sync(c), 0);
    for (int i = N - 5; i < N; i++)
        assert_int_equal(get_matches(c, &t[i]), 0);

    /* Reads past a truncation come up short: -EIO once, then a miss. */
    assert_int_equal(truncate(env->path, COLD_BLOCK + MIB), 0);
    assert_int_equal(get_matches(c, &t[N - 1]), -EIO);
    assert_int_equal(get_matches(c, &t[N - 1]), -ENOENT);
    cold_stats(c, &st);
    assert_int_equal(st.checksum_failures, 0);
    assert_true(atomic_load(&env->logs) >= 2);
    cold_close(c);
    for (int i = 0; i < N; i++)
        chunk_free(&t[i]);
}

/* In a child: refuse io_uring_setup with ENOSYS, then use the tier. */
static void test_uring_refused_falls_back(void **state)
{
    struct env *env = *state;
    int status;
    pid_t pid = fork();

    assert_true(pid >= 0);
    if (pid == 0) {
        struct sock_filter filter[] = {
            BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
            BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_io_uring_setup, 0, 1),
            BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | ENOSYS),
            BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        };
        struct sock_fprog prog = { .len = sizeof(filter) / sizeof(filter[0]), .filter = filter };
        struct kvt_cold_config cfg = config(env, COLD_BLOCK + 4 * MIB, MIB);
        struct kvt_cold_stats st;
        struct kvt_cold *c;
        struct tchunk t;

        if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) || prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog))
            _exit(2);
        if (cold_open(&cfg, &c) != 0)
            _exit(3);
        chunk_make(&t, key_of(13, 1, 0, 0), shape_of_bytes(30000), 1, 1, RANDOM);
        if (cold_put(c, &t.img) || cold_sync(c) || get_matches(c, &t))
            _exit(4);
        cold_stats(c, &st);
        if (st.uring || atomic_load(&env->logs) != 1)
            _exit(5);
        cold_close(c);
        _exit(0);
    }
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
}

/* ---- readers next to a writer ------------------------------------------ */

enum { MT_KEYS = 56, MT_READERS = 3, MT_WRITES = 300, MT_READS = 400 };

struct mt {
    struct kvt_cold *cold;
    struct kvt_chunk_shape shape;
    atomic_int bad, hits, done_writing;
};

static void *mt_reader(void *arg)
{
    struct mt *mt = arg;
    size_t bytes = chunk_data_bytes(&mt->shape);
    struct tchunk want = { .bytes = bytes };
    uint8_t *got = malloc(bytes);
    uint64_t present[BITMAP_WORDS], s = (uint64_t)(uintptr_t)&want;
    struct kvt_chunk_shape shape;

    want.data = malloc(bytes);
    want.img.shape = mt->shape;
    /* At least MT_READS gets, and on until the writer is done (bounded). */
    for (int i = 0; got && want.data && i < 200000 &&
                    (i < MT_READS || !atomic_load(&mt->done_writing)); i++) {
        uint64_t id = xorshift(&s) % MT_KEYS, version;
        struct kvt_chunk_key key = key_of(11, id, 0, 0);
        int rc = cold_get(mt->cold, &key, &shape, present, got, bytes);
        if (rc == -ENOENT)
            continue;
        if (rc != 0) {
            atomic_fetch_add(&mt->bad, 1);
            continue;
        }
        memcpy(&version, got + 8, 8);
        chunk_fill(&want, id, version, RANDOM);
        if (memcmp(got, want.data, bytes) != 0 || memcmp(present, want.present, sizeof(present)))
            atomic_fetch_add(&mt->bad, 1);
        atomic_fetch_add(&mt->hits, 1);
    }
    free(want.data);
    free(got);
    return NULL;
}

static void test_readers_with_writer(void **state)
{
    struct env *env = *state;
    struct mt mt = { .shape = shape_of_bytes(60000) };
    pthread_t readers[MT_READERS];
    struct tchunk t;
    struct kvt_cold_stats st;
    uint64_t s = 1;

    /* Buffers smaller than a record: reads mix disk and memory. Live data
     * fills most of the file, so reclaim races with reads of its records. */
    env->wbufs = 4;
    env->wbuf_bytes = 64 * 1024;
    mt.cold = open_cold(env, COLD_BLOCK + 4 * MIB, MIB);
    chunk_make(&t, key_of(11, 0, 0, 0), mt.shape, 0, 1, RANDOM);
    for (int i = 0; i < MT_KEYS; i++) {
        t.img.key = key_of(11, (uint64_t)i, 0, 0);
        chunk_fill(&t, (uint64_t)i, 1, RANDOM);
        assert_int_equal(cold_put(mt.cold, &t.img), 0);
    }
    for (int i = 0; i < MT_READERS; i++)
        assert_int_equal(pthread_create(&readers[i], NULL, mt_reader, &mt), 0);
    for (int i = 0; i < MT_WRITES; i++) {
        uint64_t id = xorshift(&s) % MT_KEYS;
        t.img.key = key_of(11, id, 0, 0);
        chunk_fill(&t, id, 2 + (uint64_t)i, RANDOM);
        assert_int_equal(cold_put(mt.cold, &t.img), 0);
        if (i % 50 == 49)
            assert_int_equal(cold_sync(mt.cold), 0);
    }
    atomic_store(&mt.done_writing, 1);
    for (int i = 0; i < MT_READERS; i++)
        pthread_join(readers[i], NULL);
    assert_int_equal(atomic_load(&mt.bad), 0);
    assert_true(atomic_load(&mt.hits) > 0);
    cold_stats(mt.cold, &st);
    assert_true(st.regions_reclaimed > 0);
    assert_no_errors(mt.cold);
    cold_close(mt.cold);
    chunk_free(&t);
}

/* Usage of ns in u (NULL if not listed); checks the list is sorted and
 * that it adds up to the tier's records and bytes. */
static const struct kvt_cold_ns_usage *usage_check(struct kvt_cold *c, struct kvt_cold_ns_usage **u,
                                                   size_t *n, uint64_t ns)
{
    struct kvt_cold_stats st;
    const struct kvt_cold_ns_usage *found = NULL;
    uint64_t records = 0, bytes = 0;

    free(*u);
    assert_int_equal(cold_namespace_usage(c, u, n), 0);
    cold_stats(c, &st);
    for (size_t i = 0; i < *n; i++) {
        assert_true(i == 0 || (*u)[i - 1].ns_id < (*u)[i].ns_id);
        assert_true((*u)[i].records > 0 && (*u)[i].objects <= (*u)[i].records);
        records += (*u)[i].records;
        bytes += (*u)[i].bytes;
        if ((*u)[i].ns_id == ns)
            found = &(*u)[i];
    }
    assert_int_equal(records, st.records);
    assert_int_equal(bytes, st.used_bytes);
    return found;
}

static void test_namespace_usage_follows_the_index(void **state)
{
    struct env *env = *state;
    struct kvt_chunk_shape shape = { 16, 4, 64, KVT_CHUNK_INT8 };
    enum { OBJ = 6, LAYERS = 3, CHUNKS = 2 };
    struct tchunk t[OBJ][LAYERS][CHUNKS], big;
    struct kvt_cold_ns_usage *u = NULL;
    const struct kvt_cold_ns_usage *x;
    size_t n;
    struct kvt_cold *c = open_cold(env, COLD_BLOCK + 4 * MIB, MIB);

    /* Namespaces 3 and 5 (domain 1000), 3 objects each. */
    for (int o = 0; o < OBJ; o++)
        for (uint32_t l = 0; l < LAYERS; l++)
            for (uint32_t i = 0; i < CHUNKS; i++) {
                chunk_make(&t[o][l][i], key_of(o < 3 ? 3 : 5, 0x100 + (uint64_t)o, l, i), shape,
                           (uint64_t)(o * 100 + (int)(l * 10 + i)), 1, RANDOM);
                assert_int_equal(cold_put(c, &t[o][l][i].img), 0);
            }
    x = usage_check(c, &u, &n, 3);
    assert_int_equal(n, 2);
    assert_non_null(x);
    assert_int_equal(x->records, 3 * LAYERS * CHUNKS);
    assert_int_equal(x->objects, 3);
    assert_int_equal(x->domain, 1000);
    /* A newer record of a key replaces its old one: nothing more counted. */
    assert_int_equal(cold_put(c, &t[0][0][0].img), 0);
    assert_int_equal(cold_put(c, &t[0][1][1].img), 0);
    x = usage_check(c, &u, &n, 3);
    assert_int_equal(x->records, 3 * LAYERS * CHUNKS);
    assert_int_equal(x->objects, 3);
    /* A dropped object leaves its namespace's counts. */
    assert_int_equal(cold_drop_object(c, 3, 0x100, ~UINT64_C(0x100)), LAYERS * CHUNKS);
    x = usage_check(c, &u, &n, 3);
    assert_int_equal(x->records, 2 * LAYERS * CHUNKS);
    assert_int_equal(x->objects, 2);
    assert_int_equal(cold_sync(c), 0);
    cold_close(c);

    /* Recovery counts the same. */
    c = open_cold(env, COLD_BLOCK + 4 * MIB, MIB);
    x = usage_check(c, &u, &n, 3);
    assert_int_equal(n, 2);
    assert_int_equal(x->records, 2 * LAYERS * CHUNKS);
    assert_int_equal(x->objects, 2);
    x = usage_check(c, &u, &n, 5);
    assert_int_equal(x->records, 3 * LAYERS * CHUNKS);
    /* A dropped namespace is not listed. */
    assert_int_equal(cold_drop_namespace(c, 3), 2 * LAYERS * CHUNKS);
    assert_null(usage_check(c, &u, &n, 3));
    assert_int_equal(n, 1);
    /* A quota drops the oldest records: the counts follow. */
    cold_set_domain_quota(c, 4 * 4096);
    x = usage_check(c, &u, &n, 5);
    assert_non_null(x);
    assert_true(x->records < 3 * LAYERS * CHUNKS);
    cold_set_domain_quota(c, 0);
    /* Region reuse: a lap of large records of namespace 7 takes the rest. */
    chunk_make(&big, key_of(7, 0x999, 0, 0), shape_of_bytes(300000), 999, 1, RANDOM);
    for (uint32_t i = 0; i < 20; i++) {
        big.img.key.chunk_idx = i;
        assert_int_equal(cold_put(c, &big.img), 0);
        (void)usage_check(c, &u, &n, 7);
    }
    assert_null(usage_check(c, &u, &n, 5));
    x = usage_check(c, &u, &n, 7);
    assert_non_null(x);
    assert_true(x->records < 20);
    assert_int_equal(x->objects, 0);            /* its chunk 0 went with its region */
    assert_int_equal(cold_sync(c), 0);
    cold_close(c);
    c = open_cold(env, COLD_BLOCK + 4 * MIB, MIB);
    (void)usage_check(c, &u, &n, 7);
    assert_no_errors(c);
    cold_close(c);
    free(u);
    for (int o = 0; o < OBJ; o++)
        for (int l = 0; l < LAYERS; l++)
            for (int i = 0; i < CHUNKS; i++)
                chunk_free(&t[o][l][i]);
    chunk_free(&big);
}

#define BOTH(fn) \
    { #fn "/io_uring", fn, setup, teardown, &uring }, \
    { #fn "/pread", fn, setup, teardown, &pread_mode }

int main(void)
{
    static enum backend uring = URING, pread_mode = PREAD;
    const struct CMUnitTest tests[] = {
        BOTH(test_round_trip),
        BOTH(test_overwrite_newest_wins),
        BOTH(test_many_regions_and_reopen),
        BOTH(test_synced_records_survive_kill),
        BOTH(test_flipped_byte_detected),
        BOTH(test_torn_tail_skipped),
        BOTH(test_small_file_reclaims_oldest),
        BOTH(test_drops_survive_reopen),
        BOTH(test_domain_quota_drops_oldest),
        BOTH(test_compression),
        BOTH(test_bad_header_refused),
        BOTH(test_disk_errors_become_misses),
        BOTH(test_readers_with_writer),
        BOTH(test_namespace_usage_follows_the_index),
        { "test_uring_refused_falls_back", test_uring_refused_falls_back, setup, teardown, &uring },
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
