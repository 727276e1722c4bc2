/* test_isolation.c - proves that sharing domains isolate tenants: a client
 * running as another uid (nobody), with the same model, cannot see root's
 * named context (-ENOENT, length 0) or root's token prefix (match 0), and its
 * stores under the same names leave root's data untouched; a daemon started
 * with `--share 0,65534` makes both uids one domain, so each fetches what the
 * other stored. With `--share 1000,1001`, a client running as uid
 * 2^31 + 1000 (the number the group's domain used to have: its lowest uid
 * with the top bit set) cannot see the group's named context or token
 * prefix, and the group cannot see what that uid stores under the same
 * names, while the two group members still share. Also proves a client cannot pull its region out from under
 * the daemon: ftruncate() on the sealed memfd fails with EPERM, also while a
 * thread keeps trying during hundreds of stores and fetches, and the daemon
 * keeps serving correct data. */
#include "tests/helpers.h"

#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define LAYERS 4
#define HEADS 4
#define DIM 64
#define CHUNK 16
#define T 64                          /* tokens of every context: 4 chunks */
#define ROW_F16 (HEADS * DIM * 2)
#define NOBODY 65534
#define ROOT_SEED 100
#define GROUP_A 1000u
#define GROUP_B 1001u
#define HIGH_UID ((uid_t)(0x80000000u | GROUP_A))   /* a share group's old domain id */
#define GROUP_SEED 10
#define HIGH_SEED 20
#define NOBODY_SEED 200

static struct test_daemon d;
static int32_t tokens[T];

static kvt_model model(void)
{
    return test_model("shared-model", LAYERS, HEADS, DIM, KVT_F16, CHUNK);
}

/* Store T tokens of every layer (seed, seed + 1 for V) under a name and
 * under the token sequence. Returns 0 or the failing call's rc. */
static int store_all(kvt_client *c, const char *ctx, uint64_t seed)
{
    static uint16_t k[LAYERS][T * HEADS * DIM], v[LAYERS][T * HEADS * DIM];
    kvt_span spans[LAYERS];

    for (uint32_t l = 0; l < LAYERS; l++) {
        test_fill(k[l], KVT_F16, seed, l, 0, T, HEADS, DIM);
        test_fill(v[l], KVT_F16, seed + 1, l, 0, T, HEADS, DIM);
        spans[l] = (kvt_span){ l, 0, T, k[l], v[l] };
    }
    int rc = kvt_store_batch(c, ctx, spans, LAYERS);
    return rc ? rc : kvt_store_tokens(c, tokens, T, spans, LAYERS);
}

/* Fetch both ways and compare with seed's values. Returns 0, the failing
 * call's rc, or 1 for wrong values. */
static int fetch_all(kvt_client *c, const char *ctx, uint64_t seed)
{
    static uint16_t k[LAYERS][T * HEADS * DIM], v[LAYERS][T * HEADS * DIM];
    kvt_span spans[LAYERS];
    size_t bad = 0;

    for (uint32_t l = 0; l < LAYERS; l++)
        spans[l] = (kvt_span){ l, 0, T, k[l], v[l] };
    for (int by_tokens = 0; by_tokens < 2; by_tokens++) {
        memset(k, 0, sizeof(k));
        memset(v, 0, sizeof(v));
        int rc = by_tokens ? kvt_fetch_tokens(c, tokens, T, spans, LAYERS)
                           : kvt_fetch_batch(c, ctx, spans, LAYERS);
        if (rc)
            return rc;
        for (uint32_t l = 0; l < LAYERS; l++) {
            bad += test_check(k[l], KVT_F16, seed, l, 0, T, HEADS, DIM, 0);
            bad += test_check(v[l], KVT_F16, seed + 1, l, 0, T, HEADS, DIM, 0);
        }
    }
    return bad ? 1 : 0;
}

/* ---- separate domains ------------------------------------------------------- */

static int nobody_sees_nothing(void *arg)
{
    (void)arg;
    kvt_model m = model();
    kvt_client *c;
    uint32_t n = 99;
    uint16_t k[T * HEADS * DIM], v[T * HEADS * DIM];
    kvt_span span = { 0, 0, T, k, v };

    CHILD_CHECK(test_become_uid(NOBODY) == 0, 10);
    CHILD_CHECK(kvt_connect(d.socket, &m, &c) == 0, 11);
    CHILD_CHECK(kvt_fetch(c, "secret", 0, 0, 1, k, v) == -ENOENT, 12);
    CHILD_CHECK(kvt_fetch(c, "secret", LAYERS - 1, 0, T, k, v) == -ENOENT, 13);
    CHILD_CHECK(kvt_length(c, "secret", &n) == 0 && n == 0, 14);
    CHILD_CHECK(kvt_match_tokens(c, tokens, T, &n) == 0 && n == 0, 15);
    CHILD_CHECK(kvt_fetch_tokens(c, tokens, T, &span, 1) == -ENOENT, 16);
    /* Dropping root's context from here must not drop it either. */
    CHILD_CHECK(kvt_drop(c, "secret") == 0, 17);
    /* Its own stores under the same names work, in its own domain. */
    CHILD_CHECK(store_all(c, "secret", NOBODY_SEED) == 0, 18);
    CHILD_CHECK(fetch_all(c, "secret", NOBODY_SEED) == 0, 19);
    CHILD_CHECK(kvt_length(c, "secret", &n) == 0 && n == T, 20);
    kvt_disconnect(c);
    return 0;
}

static void other_uid_cannot_read_or_poison(void **state)
{
    (void)state;
    kvt_model m = model();
    kvt_client *c;
    uint32_t n = 0;

    daemon_start(&d, NULL);
    CHECK_OK(kvt_connect(d.socket, &m, &c));
    CHECK_OK(store_all(c, "secret", ROOT_SEED));
    CHECK_OK(fetch_all(c, "secret", ROOT_SEED));

    assert_int_equal(test_in_child(nobody_sees_nothing, NULL), 0);

    /* Root's data is still root's: same values, same length, same prefix. */
    CHECK_OK(fetch_all(c, "secret", ROOT_SEED));
    CHECK_OK(kvt_length(c, "secret", &n));
    assert_int_equal(n, T);
    CHECK_OK(kvt_match_tokens(c, tokens, T, &n));
    assert_int_equal(n, T);
    kvt_disconnect(c);
}

/* ---- one domain by --share ------------------------------------------------------ */

static int nobody_shares_with_root(void *arg)
{
    (void)arg;
    kvt_model m = model();
    kvt_client *c;
    uint32_t n = 0;

    CHILD_CHECK(test_become_uid(NOBODY) == 0, 30);
    CHILD_CHECK(kvt_connect(d.socket, &m, &c) == 0, 31);
    CHILD_CHECK(kvt_length(c, "from-root", &n) == 0 && n == T, 32);
    CHILD_CHECK(kvt_match_tokens(c, tokens, T, &n) == 0 && n == T, 33);
    CHILD_CHECK(fetch_all(c, "from-root", ROOT_SEED) == 0, 34);
    /* Store under another name with the same tokens: the prefix now holds
     * nobody's values for root too (one domain, last writer wins). */
    CHILD_CHECK(store_all(c, "from-nobody", NOBODY_SEED) == 0, 35);
    kvt_disconnect(c);
    return 0;
}

static void share_joins_uids_into_one_domain(void **state)
{
    (void)state;
    kvt_model m = model();
    kvt_client *c;

    daemon_start(&d, "--share", "0,65534", NULL);
    CHECK_OK(kvt_connect(d.socket, &m, &c));
    CHECK_OK(store_all(c, "from-root", ROOT_SEED));

    assert_int_equal(test_in_child(nobody_shares_with_root, NULL), 0);

    CHECK_OK(fetch_all(c, "from-nobody", NOBODY_SEED));
    kvt_disconnect(c);
}

/* ---- a share group's domain is nobody else's ------------------------------------ */

/* 0 when nothing is visible under ctx or the prefix. */
static int sees_nothing(kvt_client *c, const char *ctx)
{
    uint16_t k[T * HEADS * DIM], v[T * HEADS * DIM];
    kvt_span span = { 0, 0, T, k, v };
    uint32_t n = 99;

    if (kvt_fetch(c, ctx, 0, 0, 1, k, v) != -ENOENT)
        return 1;
    if (kvt_length(c, ctx, &n) || n != 0)
        return 2;
    if (kvt_match_tokens(c, tokens, T, &n) || n != 0)
        return 3;
    if (kvt_fetch_tokens(c, tokens, T, &span, 1) != -ENOENT)
        return 4;
    return 0;
}

static int group_a_stores(void *arg)
{
    kvt_model m = model();
    kvt_client *c;

    (void)arg;
    CHILD_CHECK(test_become_uid(GROUP_A) == 0, 10);
    CHILD_CHECK(kvt_connect(d.socket, &m, &c) == 0, 11);
    CHILD_CHECK(store_all(c, "group-secret", GROUP_SEED) == 0, 12);
    kvt_disconnect(c);
    return 0;
}

static int high_uid_sees_nothing_then_stores(void *arg)
{
    kvt_model m = model();
    kvt_client *c;

    (void)arg;
    CHILD_CHECK(test_become_uid(HIGH_UID) == 0, 20);
    CHILD_CHECK(kvt_connect(d.socket, &m, &c) == 0, 21);
    CHILD_CHECK(sees_nothing(c, "group-secret") == 0, 22);
    CHILD_CHECK(store_all(c, "high-secret", HIGH_SEED) == 0, 23);
    CHILD_CHECK(fetch_all(c, "high-secret", HIGH_SEED) == 0, 24);
    kvt_disconnect(c);
    return 0;
}

static int group_b_shares_with_a_only(void *arg)
{
    kvt_model m = model();
    kvt_client *c;
    uint32_t n = 99;

    (void)arg;
    CHILD_CHECK(test_become_uid(GROUP_B) == 0, 30);
    CHILD_CHECK(kvt_connect(d.socket, &m, &c) == 0, 31);
    CHILD_CHECK(kvt_length(c, "high-secret", &n) == 0 && n == 0, 32);
    /* The prefix is the group's own (GROUP_SEED), not the high uid's. */
    CHILD_CHECK(fetch_all(c, "group-secret", GROUP_SEED) == 0, 33);
    kvt_disconnect(c);
    return 0;
}

static void top_bit_uid_is_not_the_share_group(void **state)
{
    (void)state;
    daemon_start(&d, "--share", "1000,1001", NULL);
    assert_int_equal(test_in_child(group_a_stores, NULL), 0);
    assert_int_equal(test_in_child(high_uid_sees_nothing_then_stores, NULL), 0);
    assert_int_equal(test_in_child(group_b_shares_with_a_only, NULL), 0);
}

/* ---- the region cannot be truncated ---------------------------------------------- */

/* Marks the fds (below MAX_FDS) of this process that are libkvtier regions:
 * memfds that the library names "kvtier-region". */
#define MAX_FDS 4096
static void mark_region_fds(bool is_region[MAX_FDS])
{
    char path[300], link[256];
    DIR *dir = opendir("/proc/self/fd");

    assert_non_null(dir);
    memset(is_region, 0, MAX_FDS * sizeof(bool));
    for (struct dirent *e; (e = readdir(dir));) {
        int fd = atoi(e->d_name);
        if (e->d_name[0] == '.' || fd < 0 || fd >= MAX_FDS)
            continue;
        snprintf(path, sizeof(path), "/proc/self/fd/%s", e->d_name);
        ssize_t n = readlink(path, link, sizeof(link) - 1);
        if (n <= 0)
            continue;
        link[n] = '\0';
        is_region[fd] = strncmp(link, "/memfd:kvtier-region", 20) == 0;
    }
    closedir(dir);
}

/* Connect, and find the new client's region fd: the one region fd that was
 * not there before. */
static kvt_client *connect_and_find_region(int *region_fd)
{
    static bool before[MAX_FDS], after[MAX_FDS];
    kvt_model m = model();
    kvt_client *c;

    mark_region_fds(before);
    CHECK_OK(kvt_connect(d.socket, &m, &c));
    mark_region_fds(after);
    *region_fd = -1;
    for (int fd = 0; fd < MAX_FDS; fd++) {
        if (after[fd] && !before[fd]) {
            assert_int_equal(*region_fd, -1);
            *region_fd = fd;
        }
    }
    assert_true(*region_fd >= 0);
    return c;
}

struct truncator {
    int fd;
    atomic_bool stop;
    atomic_ulong refused, succeeded;
};

/* Keeps trying to shrink the region to nothing, and to grow it. */
static void *truncate_forever(void *arg)
{
    struct truncator *t = arg;

    for (unsigned long i = 0; !atomic_load(&t->stop); i++) {
        int rc = ftruncate(t->fd, i % 2 ? 0 : (off_t)1 << 34);
        if (rc == 0)
            atomic_fetch_add(&t->succeeded, 1);
        else if (errno == EPERM)
            atomic_fetch_add(&t->refused, 1);
    }
    return NULL;
}

static void truncating_the_region_fails_and_daemon_serves(void **state)
{
    (void)state;
    enum { N = 32, ROUNDS = 300 };
    kvt_model m = model();
    kvt_client *c;

    int fd;

    daemon_start(&d, NULL);
    c = connect_and_find_region(&fd);
    assert_int_equal(ftruncate(fd, 0), -1);
    assert_int_equal(errno, EPERM);
    assert_int_equal(ftruncate(fd, 4096), -1);
    assert_int_equal(errno, EPERM);

    /* K in the region itself (the daemon reads and writes it in place), V
     * in ordinary memory (staged through the region). */
    uint16_t *k = kvt_alloc(c, (size_t)N * ROW_F16);
    uint16_t *v = malloc((size_t)N * ROW_F16);
    assert_true(k && v);

    struct truncator t = { .fd = fd };
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, truncate_forever, &t), 0);
    for (uint32_t round = 0; round < ROUNDS; round++) {
        uint32_t layer = round % LAYERS, start = (round * 7) % (T - N);
        test_fill(k, KVT_F16, round, layer, start, N, HEADS, DIM);
        test_fill(v, KVT_F16, round + 1000, layer, start, N, HEADS, DIM);
        CHECK_OK(kvt_store(c, "trunc", layer, start, N, k, v));
        memset(k, 0, (size_t)N * ROW_F16);
        memset(v, 0, (size_t)N * ROW_F16);
        CHECK_OK(kvt_fetch(c, "trunc", layer, start, N, k, v));
        assert_int_equal(test_check(k, KVT_F16, round, layer, start, N, HEADS, DIM, 0), 0);
        assert_int_equal(test_check(v, KVT_F16, round + 1000, layer, start, N, HEADS, DIM, 0), 0);
    }
    atomic_store(&t.stop, true);
    pthread_join(th, NULL);
    assert_int_equal(atomic_load(&t.succeeded), 0);
    assert_true(atomic_load(&t.refused) > 0);

    kvt_free(c, k);
    free(v);
    kvt_disconnect(c);

    /* The daemon is alive and a new client is served. */
    assert_int_equal(waitpid(d.pid, NULL, WNOHANG), 0);
    CHECK_OK(kvt_connect(d.socket, &m, &c));
    CHECK_OK(store_all(c, "after", ROOT_SEED));
    CHECK_OK(fetch_all(c, "after", ROOT_SEED));
    kvt_disconnect(c);
}

static int stop_daemon(void **state)
{
    (void)state;
    daemon_stop(&d);
    daemon_cleanup(&d);
    return 0;
}

int main(void)
{
    if (geteuid() != 0) {
        fprintf(stderr, "test_isolation: needs root to run a client as uid %d\n", NOBODY);
        return 1;
    }
    for (uint32_t i = 0; i < T; i++)
        tokens[i] = (int32_t)(i * 7919 % 32000);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(other_uid_cannot_read_or_poison, stop_daemon),
        cmocka_unit_test_teardown(share_joins_uids_into_one_domain, stop_daemon),
        cmocka_unit_test_teardown(top_bit_uid_is_not_the_share_group, stop_daemon),
        cmocka_unit_test_teardown(truncating_the_region_fails_and_daemon_serves, stop_daemon),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
