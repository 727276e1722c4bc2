/* test_cold_format.c - proves the cold tier reads the cold file formats it
 * claims to and refuses the others (cache/cold_format.h, "Versions"), on a
 * real file through io_uring:
 *   - a genuine format-1 file (made by this build, every version field then
 *     set to 1 with its checksum, byte for byte what a format-1 kvtierd
 *     wrote, as no record of it has outliers) opens: every record reads back
 *     bit-identical, a tombstone still holds, nothing is counted as corrupt;
 *     the file header is upgraded to the current format (3) with one log
 *     line, the region
 *     headers stay format 1; a reopen reads everything without upgrading
 *     again; records put and synced before a kill -9 come back next to the
 *     old ones, in a current-format region; a format-1 region reused by the
 *     log is written in the current format, and every record read after
 *     that is exact;
 *   - a format-1 record whose shape has outliers (bytes that were the high
 *     half of format 1's u32 elem) is corrupt: skipped like a torn record,
 *     while the same record in the current format reads back exactly;
 *   - a file header of format 4 (or 0) is refused with -EINVAL and a log
 *     line naming the format, the file left byte for byte; a region header
 *     newer than its file's is taken as unused; a record whose version is
 *     not its region's (4 in a format-3 region, 1 in a format-3 region) is
 *     skipped as torn; set back to format 3, the same file reads whole;
 *   - names (format 3): the name given with a context's chunk 0 of layer
 *     0 comes back after a reopen, and after a kill -9 once synced, with
 *     its namespace identity, for each domain under its own key; it
 *     follows that chunk into new regions, so it outlives the region it
 *     was first written in, and goes with the chunk's last region once
 *     the chunk is no longer written; a drop takes it (also after a
 *     reopen); a name not of its key is not kept (logged once) while
 *     its chunk is; a chunk keyed as a name (layer COLD_NAME_LAYER) is
 *     refused by cold_put and, forged into a file, skipped as corrupt,
 *     after which the context's first chunk puts as usual; a drop of a
 *     context held only by its name (chunks dropped for a quota) asks for
 *     its tombstone's sync and holds after a kill -9; a first chunk put
 *     again as its record starts the region that held it and its name
 *     keeps the name; a name record whose
 *     bytes are flipped is skipped as corrupt, and one whose checksum
 *     holds but whose name does not hash to its key is skipped, counted
 *     in names_skipped and logged, while the chunks are served as before;
 *     a format-2 file (no names) opens, is upgraded, and takes names;
 *     name records in a format-2 region are torn.
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
#include <xxhash.h>
#include <cmocka.h>

#include "cache/cold.h"
#include "cache/cold_format.h"
#include "tests/cold_file_edit.h"
#include "tests/disk_dir.h"

#define MIB (1024u * 1024u)
#define BITMAP_WORDS (KVT_CHUNK_MAX_TOKENS / 64)
#define FILE_BYTES (COLD_BLOCK + 8 * MIB)      /* 8 regions of 1 MiB */
#define REGION_BYTES MIB
#define CUR COLD_FORMAT_VERSION
_Static_assert(COLD_FORMAT_VERSION == 3, "this test's format-3 cases need a look");

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
    assert_int_equal(logged(env, "upgraded from format 1 to 3"), 1);
    for (int i = 0; i < OLD; i++)
        assert_int_equal(get_matches(c, &old[i]), i == DROPPED ? -ENOENT : 0);
    versions(env->path, 0, CUR, 1);
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
     * region after them, in the current format. */
    versions(env->path, 0, CUR, 1);
    versions(env->path, n.regions, CUR, CUR);

    /* Round the log until it reuses region 0: the current format there too. */
    for (int round = 0; round < 8; round++)
        for (int i = 0; i < NEW; i++)
            assert_int_equal(cold_put(c, &fresh[i].img), 0);
    assert_int_equal(cold_sync(c), 0);
    versions(env->path, 0, CUR, CUR);
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
    assert_int_equal(cold_file_set_versions(env->path,
                                            &(struct cold_file_versions){ CUR, CUR, CUR }, &n), 0);
    assert_true(n.regions >= 2);

    /* A file header of a format this build does not read. */
    static const uint32_t refused[] = { CUR + 1, 0 };
    for (int i = 0; i < 2; i++) {
        set_versions(env, refused[i], CUR, CUR);
        void *before = file_bytes(env->path);
        char want[64];
        c = NULL;
        assert_int_equal(try_open(env, &c), -EINVAL);
        assert_null(c);
        snprintf(want, sizeof(want), "cold file of format %u, but this kvtierd reads "
                 "formats 1 to %u", refused[i], CUR);
        assert_int_equal(logged(env, want), 1);
        void *after = file_bytes(env->path);
        assert_memory_equal(before, after, FILE_BYTES);
        free(before);
        free(after);
    }

    /* Region headers newer than the file's: not regions of this file. */
    set_versions(env, CUR, CUR + 1, CUR + 1);
    opens_empty(env, t, N, 0);
    /* Records not of their region's version end its log, as torn ones. */
    set_versions(env, CUR, CUR, CUR + 1);
    opens_empty(env, t, N, n.regions);
    set_versions(env, CUR, CUR, 1);
    opens_empty(env, t, N, n.regions);

    /* Nothing else was touched: all in the current format, everything is back. */
    set_versions(env, CUR, CUR, CUR);
    c = open_cold(env);
    assert_clean(c, N);
    for (int i = 0; i < N; i++)
        assert_int_equal(get_matches(c, &t[i]), 0);
    cold_close(c);
    for (int i = 0; i < N; i++)
        free(t[i].data);
}

/* ---- names (format 3) ----------------------------------------------------- */

#define MODEL "llama-test"

static struct kvt_cold_name name_make(const char *ctx, uint64_t ns, uint32_t domain)
{
    XXH128_hash_t h = XXH3_128bits(ctx, strlen(ctx));
    struct kvt_cold_name n = { .ns_id = ns, .obj_hi = h.high64, .obj_lo = h.low64,
                               .domain = domain, .layers = 4, .heads = 8, .dim = 128,
                               .chunk_tokens = 64, .model_len = strlen(MODEL),
                               .name_len = strlen(ctx) };
    memcpy(n.model, MODEL, n.model_len);
    memcpy(n.name, ctx, n.name_len);
    return n;
}

/* A chunk of the context n names. */
static void named_chunk(struct tchunk *t, const struct kvt_cold_name *n, uint32_t layer,
                        uint32_t chunk_idx, uint64_t id)
{
    chunk_make(t, id, v1_shape((int)id));
    t->img.key = (struct kvt_chunk_key){ .ns_id = n->ns_id, .obj_hi = n->obj_hi,
                                         .obj_lo = n->obj_lo, .domain = n->domain,
                                         .layer = layer, .chunk_idx = chunk_idx };
}

/* How many names c holds; *found (may be NULL) set to the one equal to
 * want (every field), if any. */
static size_t names_held(struct kvt_cold *c, const struct kvt_cold_name *want, bool *found)
{
    struct kvt_cold_name *all;
    size_t n;

    assert_int_equal(cold_names(c, &all, &n), 0);
    if (found)
        *found = false;
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(strlen(all[i].name), all[i].name_len);
        assert_int_equal(strlen(all[i].model), all[i].model_len);
        if (found && want && memcmp(&all[i], want, sizeof(*want)) == 0)
            *found = true;
    }
    free(all);
    return n;
}

static bool holds_name(struct kvt_cold *c, const struct kvt_cold_name *want)
{
    bool found;
    names_held(c, want, &found);
    return found;
}

enum { FILLERS = 12 };

static void names_kept_with_their_chunk(void **state)
{
    struct env *env = *state;
    /* The same name in two domains is two names, each under its key. */
    struct kvt_cold_name alpha = name_make("chat-alpha", 0x11, 1000);
    struct kvt_cold_name beta = name_make("chat-beta", 0x11, 1000);
    struct kvt_cold_name other = name_make("chat-alpha", 0x23, 65534);
    struct kvt_cold_name gamma = name_make("chat-gamma", 0x11, 1000);
    struct tchunk a0, a1, a_l1, b0, o0, g0, filler[FILLERS];
    struct kvt_cold_stats st;
    int status;
    struct kvt_cold *c = open_cold(env);

    named_chunk(&a0, &alpha, 0, 0, 1);
    named_chunk(&a1, &alpha, 0, 1, 2);
    named_chunk(&a_l1, &alpha, 1, 0, 3);
    named_chunk(&b0, &beta, 0, 0, 4);
    named_chunk(&o0, &other, 0, 0, 5);
    named_chunk(&g0, &gamma, 0, 0, 6);
    assert_int_equal(cold_put_named(c, &a0.img, &alpha), 0);
    assert_int_equal(cold_put(c, &a1.img), 0);
    assert_int_equal(cold_put(c, &a_l1.img), 0);
    assert_int_equal(cold_put_named(c, &b0.img, &beta), 0);
    assert_int_equal(cold_put_named(c, &o0.img, &other), 0);
    /* A name that is not the chunk's, or for a chunk other than the
     * first of layer 0, is not kept (logged once), but the chunk is: a
     * refused put would leave it dirty in the hot tier for good. */
    env->logs[0] = 0;
    assert_int_equal(cold_put_named(c, &g0.img, &beta), 0);
    assert_int_equal(cold_put_named(c, &a1.img, &alpha), 0);
    struct kvt_cold_name bad = alpha;
    bad.name[0] ^= 1;
    assert_int_equal(cold_put_named(c, &a0.img, &bad), 0);
    bad = alpha;
    bad.model_len = 0;
    assert_int_equal(cold_put_named(c, &a0.img, &bad), 0);
    assert_int_equal(logged(env, "was not kept"), 1);
    assert_int_equal(get_matches(c, &g0), 0);
    assert_int_equal(get_matches(c, &a0), 0);
    assert_int_equal(names_held(c, NULL, NULL), 3);
    assert_false(holds_name(c, &bad));
    /* Put again with its name: nothing more is written for the name. */
    cold_stats(c, &st);
    uint64_t written = st.puts;
    assert_int_equal(cold_put_named(c, &a0.img, &alpha), 0);
    cold_stats(c, &st);
    assert_int_equal(st.puts, written + 1);
    assert_int_equal(st.names, 3);
    assert_int_equal(st.records, 6);
    assert_int_equal(names_held(c, NULL, NULL), 3);
    assert_int_equal(cold_sync(c), 0);
    cold_close(c);

    c = open_cold(env);
    assert_clean(c, 6);
    assert_int_equal(names_held(c, NULL, NULL), 3);
    assert_true(holds_name(c, &alpha));
    assert_true(holds_name(c, &beta));
    assert_true(holds_name(c, &other));
    cold_close(c);

    /* Synced before a kill -9: there. */
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        struct kvt_cold_config cfg = config(env);
        cfg.log = NULL;
        if (cold_open(&cfg, &c) != 0 || cold_put_named(c, &g0.img, &gamma) != 0 ||
            cold_sync(c) != 0)
            _exit(2);
        kill(getpid(), SIGKILL);
        _exit(3);
    }
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
    c = open_cold(env);
    assert_int_equal(names_held(c, NULL, NULL), 4);
    assert_true(holds_name(c, &gamma));

    /* A drop takes the name; the count it returns is of chunks. */
    assert_int_equal(cold_drop_object(c, beta.ns_id, beta.obj_hi, beta.obj_lo), 1);
    assert_false(holds_name(c, &beta));
    assert_int_equal(cold_sync(c), 0);
    cold_close(c);
    c = open_cold(env);
    assert_int_equal(names_held(c, NULL, NULL), 3);
    assert_false(holds_name(c, &beta));
    assert_true(holds_name(c, &alpha));

    /* Refused by the caller: gone, counted. */
    cold_name_refuse(c, &gamma);
    cold_stats(c, &st);
    assert_int_equal(st.names_skipped, 1);
    assert_int_equal(st.names, 2);
    assert_int_equal(get_matches(c, &g0), 0);      /* its chunk stays */

    /* Lap the log several times, writing alpha's first chunk each round
     * without its name: the name follows it from memory; the other
     * domain's name, whose chunk is not written again, goes with the
     * last region that held the chunk. */
    for (int i = 0; i < FILLERS; i++)
        chunk_make(&filler[i], 200 + (uint64_t)i, v1_shape(i));
    for (int round = 0; round < 40; round++) {
        assert_int_equal(cold_put(c, &a0.img), 0);
        for (int i = 0; i < FILLERS; i++)
            assert_int_equal(cold_put(c, &filler[i].img), 0);
    }
    assert_int_equal(cold_sync(c), 0);
    cold_stats(c, &st);
    assert_true(st.regions_reclaimed >= 8);
    assert_true(holds_name(c, &alpha));
    assert_false(holds_name(c, &other));
    assert_int_equal(get_matches(c, &o0), -ENOENT);
    cold_close(c);
    c = open_cold(env);
    assert_int_equal(names_held(c, NULL, NULL), 1);
    assert_true(holds_name(c, &alpha));
    assert_int_equal(get_matches(c, &a0), 0);
    cold_close(c);

    struct tchunk *all[] = { &a0, &a1, &a_l1, &b0, &o0, &g0 };
    for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++)
        free(all[i]->data);
    for (int i = 0; i < FILLERS; i++)
        free(filler[i].data);
}

/* Offset in the file of the only occurrence of text (which is in a name
 * record), or -1. */
static long find_text(const char *path, const char *text)
{
    uint8_t *buf = file_bytes(path);
    long at = -1;

    for (size_t i = 0; i + strlen(text) <= FILE_BYTES; i++)
        if (memcmp(buf + i, text, strlen(text)) == 0) {
            assert_int_equal(at, -1);
            at = (long)i;
        }
    free(buf);
    return at;
}

static void flip_byte(const char *path, long at)
{
    int fd = open(path, O_RDWR);
    uint8_t b;

    assert_true(fd >= 0);
    assert_int_equal(pread(fd, &b, 1, at), 1);
    b ^= 0x20;
    assert_int_equal(pwrite(fd, &b, 1, at), 1);
    close(fd);
}

static void bad_name_records_skipped(void **state)
{
    struct env *env = *state;
    struct kvt_cold_name nm[3] = { name_make("ctx-name-one-7f3a", 0x11, 1000),
                                   name_make("ctx-name-two-7f3a", 0x11, 1000),
                                   name_make("ctx-name-three-7f3a", 0x11, 1000) };
    struct tchunk t[3];
    struct cold_file_counts n;
    struct kvt_cold_stats st;
    struct kvt_cold *c = open_cold(env);

    for (int i = 0; i < 3; i++) {
        named_chunk(&t[i], &nm[i], 0, 0, (uint64_t)i + 1);
        assert_int_equal(cold_put_named(c, &t[i].img, &nm[i]), 0);
    }
    assert_int_equal(cold_sync(c), 0);
    cold_close(c);

    /* A flipped bit: the record fails its checksum and costs only itself. */
    long at = find_text(env->path, "ctx-name-two-7f3a");
    assert_true(at > 0);
    flip_byte(env->path, at + 3);
    c = open_cold(env);
    cold_stats(c, &st);
    assert_int_equal(st.records_torn, 1);
    assert_int_equal(st.names, 2);
    assert_true(holds_name(c, &nm[0]));
    assert_false(holds_name(c, &nm[1]));
    assert_true(holds_name(c, &nm[2]));
    for (int i = 0; i < 3; i++)
        assert_int_equal(get_matches(c, &t[i]), 0);
    cold_close(c);

    /* The same bytes with a checksum that holds (as only a bug, or someone
     * with the seed, could write): the name no longer hashes to its key,
     * so it is skipped, counted and logged, never listed. */
    assert_int_equal(cold_file_set_versions(env->path,
                                            &(struct cold_file_versions){ CUR, CUR, CUR }, &n), 0);
    assert_int_equal(n.names, 3);
    c = open_cold(env);
    assert_clean(c, 3);
    cold_stats(c, &st);
    assert_int_equal(st.names_skipped, 1);
    assert_int_equal(st.names, 2);
    assert_int_equal(logged(env, "malformed name record"), 1);
    assert_false(holds_name(c, &nm[1]));
    assert_int_equal(names_held(c, NULL, NULL), 2);
    for (int i = 0; i < 3; i++)
        assert_int_equal(get_matches(c, &t[i]), 0);
    cold_close(c);

    /* A name record in a format-2 region is not of that format: torn. */
    assert_int_equal(cold_file_set_versions(env->path, &(struct cold_file_versions){ 2, 2, 2 },
                                            NULL), 0);
    c = open_cold(env);
    cold_stats(c, &st);
    assert_true(st.records_torn >= 1);
    assert_int_equal(st.names, 0);
    assert_int_equal(get_matches(c, &t[0]), 0);     /* before the first name */
    cold_close(c);
    for (int i = 0; i < 3; i++)
        free(t[i].data);
}

/* A chunk record keyed as a name (layer COLD_NAME_LAYER) would sit in the
 * slot of its context's name without one; the next put of the context's
 * first chunk read a name from it. The API refuses such a key, and a file
 * that holds one (its checksum whole) has it skipped as corrupt. */
static void chunk_keyed_as_name_refused(void **state)
{
    enum { MARK = 0x5a5a5a5au };
    struct env *env = *state;
    struct kvt_cold_name nm = name_make("crafted-name-slot", 0x11, 1000);
    struct tchunk forged, first;
    struct kvt_cold_stats st;
    struct kvt_chunk_key k;
    struct kvt_cold *c = open_cold(env);

    named_chunk(&forged, &nm, COLD_NAME_LAYER, 0, 3);
    assert_int_equal(cold_put(c, &forged.img), -EINVAL);
    assert_int_equal(cold_put_named(c, &forged.img, NULL), -EINVAL);
    forged.img.key.layer = MARK;
    assert_int_equal(cold_put(c, &forged.img), 0);
    assert_int_equal(cold_sync(c), 0);
    cold_close(c);

    /* Rekey the record on disk as a name's, checksums made whole again. */
    uint8_t *buf = file_bytes(env->path);
    long at = -1;
    k = forged.img.key;
    for (size_t i = 0; i + sizeof(k) <= FILE_BYTES; i++)
        if (memcmp(buf + i, &k, sizeof(k)) == 0) {
            assert_int_equal(at, -1);
            at = (long)i;
        }
    free(buf);
    assert_true(at > 0);
    k.layer = COLD_NAME_LAYER;
    int fd = open(env->path, O_RDWR);
    assert_true(fd >= 0);
    assert_int_equal(pwrite(fd, &k, sizeof(k), at), (ssize_t)sizeof(k));
    close(fd);
    assert_int_equal(cold_file_set_versions(env->path,
                                            &(struct cold_file_versions){ CUR, CUR, CUR }, NULL),
                     0);

    c = open_cold(env);
    cold_stats(c, &st);
    assert_int_equal(st.records_torn, 1);
    assert_int_equal(st.records, 0);
    assert_int_equal(names_held(c, NULL, NULL), 0);
    /* The context's first chunk, with no name and with one: stored, and
     * the name is the given one. */
    named_chunk(&first, &nm, 0, 0, 4);
    assert_int_equal(cold_put(c, &first.img), 0);
    assert_int_equal(names_held(c, NULL, NULL), 0);
    assert_int_equal(cold_put_named(c, &first.img, &nm), 0);
    assert_true(holds_name(c, &nm));
    assert_int_equal(get_matches(c, &first), 0);
    cold_close(c);
    free(forged.data);
    free(first.data);
}

/* A context whose only record left is its name (its chunks dropped for a
 * quota, which spares names) is dropped for good: the drop counts no
 * chunk, yet says its tombstone must be synced, as the daemon does
 * before it replies; after a kill -9 the name is not back. */
static void name_only_drop_durable(void **state)
{
    struct env *env = *state;
    struct kvt_cold_name nm = name_make("only-its-name-left", 0x11, 1000);
    struct tchunk t;
    int status;

    named_chunk(&t, &nm, 0, 0, 1);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        struct kvt_cold_config cfg = config(env);
        struct kvt_cold *c;
        cfg.log = NULL;
        if (cold_open(&cfg, &c) != 0 || cold_put_named(c, &t.img, &nm) != 0 ||
            cold_sync(c) != 0)
            _exit(2);
        cold_set_domain_quota(c, 1);
        if (cold_lookup(c, &t.img.key, NULL) != -ENOENT || names_held(c, NULL, NULL) != 1)
            _exit(3);
        if (cold_drop_object(c, nm.ns_id, nm.obj_hi, nm.obj_lo) != 0)
            _exit(4);
        if (!cold_tombstones_behind(c))
            _exit(5);                  /* the daemon would reply without a sync */
        if (cold_sync_tombstones(c) != 0 || cold_tombstones_behind(c))
            _exit(6);
        kill(getpid(), SIGKILL);
        _exit(7);
    }
    assert_int_equal(waitpid(pid, &status, 0), pid);
    if (WIFEXITED(status))
        fail_msg("child exited %d", WEXITSTATUS(status));
    assert_true(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
    struct kvt_cold *c = open_cold(env);
    assert_int_equal(names_held(c, NULL, NULL), 0);
    assert_false(cold_tombstones_behind(c));
    cold_close(c);
    free(t.data);
}

/* The first chunk put again (without its name) when its record starts a
 * region, the one that held that chunk and its name: the reclaim takes
 * the name's entry before the chunk is in, and the name is logged again
 * from a copy taken before. Two regions, chunks of more than half of one,
 * so which put starts which region is known. */
static void name_kept_across_region_reuse(void **state)
{
    struct env *env = *state;
    struct kvt_cold_name nm = name_make("name-over-reuse", 0x11, 1000);
    const struct kvt_chunk_shape big = { 160, 8, 128, 1 };
    struct kvt_cold_config cfg = config(env);
    struct kvt_cold_stats st;
    struct tchunk a0, filler;
    struct kvt_cold *c;

    cfg.bytes = COLD_BLOCK + 2 * REGION_BYTES;
    assert_true(chunk_data_bytes(&big) > REGION_BYTES / 2 &&
                chunk_data_bytes(&big) < REGION_BYTES - 2 * COLD_BLOCK);
    named_chunk(&a0, &nm, 0, 0, 1);
    chunk_make(&filler, 2, big);           /* 2 % 3 != 0: incompressible */
    a0.img.shape = big;
    free(a0.data);
    a0.bytes = filler.bytes;
    a0.data = malloc(a0.bytes);
    assert_non_null(a0.data);
    a0.img.data = a0.data;
    memcpy(a0.data, filler.data, a0.bytes);
    memcpy(a0.present, filler.present, sizeof(a0.present));
    a0.data[0] ^= 1;

    assert_int_equal(cold_open(&cfg, &c), 0);
    assert_int_equal(cold_put_named(c, &a0.img, &nm), 0);     /* region 0 */
    assert_int_equal(cold_put(c, &filler.img), 0);            /* region 1 */
    assert_int_equal(cold_put(c, &a0.img), 0);                /* reclaims region 0 */
    cold_stats(c, &st);
    assert_int_equal(st.regions_reclaimed, 1);
    assert_true(holds_name(c, &nm));
    assert_int_equal(cold_sync(c), 0);
    cold_close(c);
    assert_int_equal(cold_open(&cfg, &c), 0);
    assert_true(holds_name(c, &nm));
    assert_int_equal(get_matches(c, &a0), 0);
    cold_close(c);
    free(a0.data);
    free(filler.data);
}

static void v2_file_upgraded_takes_names(void **state)
{
    struct env *env = *state;
    struct kvt_cold_name nm = name_make("after-upgrade", 0x11, 1000);
    struct tchunk t[4];
    struct cold_file_counts n;
    struct kvt_cold *c = open_cold(env);

    for (int i = 0; i < 3; i++) {
        chunk_make(&t[i], (uint64_t)i, v1_shape(i));
        assert_int_equal(cold_put(c, &t[i].img), 0);
    }
    cold_close(c);
    assert_int_equal(cold_file_set_versions(env->path, &(struct cold_file_versions){ 2, 2, 2 },
                                            &n), 0);
    assert_int_equal(n.names, 0);
    c = open_cold(env);
    assert_clean(c, 3);
    assert_int_equal(logged(env, "upgraded from format 2 to 3"), 1);
    versions(env->path, 0, CUR, 2);
    for (int i = 0; i < 3; i++)
        assert_int_equal(get_matches(c, &t[i]), 0);
    named_chunk(&t[3], &nm, 0, 0, 9);
    assert_int_equal(cold_put_named(c, &t[3].img, &nm), 0);
    assert_int_equal(cold_sync(c), 0);
    cold_close(c);
    c = open_cold(env);
    assert_clean(c, 4);
    assert_true(holds_name(c, &nm));
    versions(env->path, n.regions, CUR, CUR);
    for (int i = 0; i < 4; i++)
        assert_int_equal(get_matches(c, &t[i]), 0);
    cold_close(c);
    for (int i = 0; i < 4; i++)
        free(t[i].data);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(v1_file_read_and_upgraded, setup, teardown),
        cmocka_unit_test_setup_teardown(v1_record_with_outliers_is_corrupt, setup, teardown),
        cmocka_unit_test_setup_teardown(other_versions_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(names_kept_with_their_chunk, setup, teardown),
        cmocka_unit_test_setup_teardown(bad_name_records_skipped, setup, teardown),
        cmocka_unit_test_setup_teardown(v2_file_upgraded_takes_names, setup, teardown),
        cmocka_unit_test_setup_teardown(chunk_keyed_as_name_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(name_only_drop_durable, setup, teardown),
        cmocka_unit_test_setup_teardown(name_kept_across_region_reuse, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
