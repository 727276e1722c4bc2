/* test_drop_durable.c - proves that once kvt_drop returns, the dropped
 * context never comes back, also after kill -9 of the daemon and a restart:
 *
 *  - a context stored, synced and dropped, with kill -9 right after the
 *    drop's reply, is absent after the restart; twenty rounds each for a
 *    context in RAM and on the cold tier, one demoted (only on the cold
 *    tier) and one dropped while an admin flush of other chunks runs;
 *    the same for an admin `evict --context` and `evict --namespace`;
 *  - on a full disk (a small tmpfs, as test_disk_full.c) the drop of a
 *    context that is on the cold tier fails with -EIO (the tombstone could
 *    not be written) while a fetch already misses, and so does a kvt_sync
 *    that tries to write it; once space is freed,
 *    a kvt_sync (or a second kvt_drop) writes the tombstone again, and
 *    after kill -9 and a restart the context is still absent, never its
 *    old data.
 *
 * Before the fix the drop's tombstone sat in a write buffer when the drop
 * replied, and a tombstone caught in a failed write was never written
 * again: in both cases the old records came back after the restart. */
#include "tests/helpers.h"

#include <fcntl.h>
#include <sys/file.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LAYERS 2
#define HEADS 8
#define DIM 128
#define CHUNK 16
#define TOKENS 64
#define ROW (HEADS * DIM * 2)          /* f16 bytes per token */
#define ROUNDS 20
#define NOISE_CONTEXTS 16
#define NOISE_TOKENS 256

static struct test_daemon d;
static struct test_small_fs fs;
static char cold_dir[64], cold_path[128];
static const char *hot_bytes = "64M", *cold_bytes = "256M";

static void start(bool restart)
{
    if (restart)
        daemon_restart(&d, "--hot-bytes", hot_bytes, "--cold-bytes", cold_bytes,
                       "--cold-region-bytes", "4M", "--chunk-tokens", "16",
                       "--cold-path", cold_path, NULL);
    else
        daemon_start(&d, "--hot-bytes", hot_bytes, "--cold-bytes", cold_bytes,
                     "--cold-region-bytes", "4M", "--chunk-tokens", "16",
                     "--cold-path", cold_path, NULL);
}

static void start_fresh(void)
{
    snprintf(cold_dir, sizeof(cold_dir), "/var/tmp/kvtier-dropdur-XXXXXX");
    assert_non_null(mkdtemp(cold_dir));
    snprintf(cold_path, sizeof(cold_path), "%s/cold.kvt", cold_dir);
    start(false);
}

static void cleanup(void)
{
    char cmd[128];

    daemon_cleanup(&d);
    if (cold_dir[0]) {
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", cold_dir);
        if (system(cmd) != 0)
            fprintf(stderr, "cannot remove %s\n", cold_dir);
        cold_dir[0] = '\0';
    }
    test_small_fs_unmount(&fs);
}

static kvt_client *client(void)
{
    kvt_model m = test_model("dropdur-model", LAYERS, HEADS, DIM, KVT_F16, CHUNK);
    kvt_client *c = NULL;

    CHECK_OK(kvt_connect(d.socket, &m, &c));
    return c;
}

static void store_context(kvt_client *c, const char *name, uint64_t seed, uint32_t tokens)
{
    uint8_t *k = malloc((size_t)tokens * ROW), *v = malloc((size_t)tokens * ROW);

    for (uint32_t l = 0; l < LAYERS; l++) {
        test_fill(k, KVT_F16, seed * 2, l, 0, tokens, HEADS, DIM);
        test_fill(v, KVT_F16, seed * 2 + 1, l, 0, tokens, HEADS, DIM);
        CHECK_OK(kvt_store(c, name, l, 0, tokens, k, v));
    }
    free(k);
    free(v);
}

/* The first layer's fetch: 0 (with the stored values checked, or the
 * test fails as WRONG DATA) or the error. */
static int fetch_context(kvt_client *c, const char *name, uint64_t seed)
{
    uint8_t *k = malloc((size_t)TOKENS * ROW), *v = malloc((size_t)TOKENS * ROW);
    int rc = kvt_fetch(c, name, 0, 0, TOKENS, k, v);

    if (rc == 0 && (test_check(k, KVT_F16, seed * 2, 0, 0, TOKENS, HEADS, DIM, 0) ||
                    test_check(v, KVT_F16, seed * 2 + 1, 0, 0, TOKENS, HEADS, DIM, 0)))
        fail_msg("%s: fetch returned data that is not what was stored", name);
    free(k);
    free(v);
    return rc;
}

static void admin_ok(const char *request)
{
    char reply[4096];

    CHECK_OK(admin_request(&d, request, reply, sizeof(reply)));
    if (!strstr(reply, "\"ok\":true"))
        fail_msg("%s: %s", request, reply);
}

/* A killed daemon's in-flight io_uring writes keep its cold file (and the
 * file's lock) open a moment after it was reaped: wait for the lock, up to
 * 10 s, or the restart fails with EBUSY. */
static void wait_cold_file_unlocked(void)
{
    int fd = open(cold_path, O_RDONLY | O_CLOEXEC);

    assert_true(fd >= 0);
    for (int i = 0; i < 1000 && flock(fd, LOCK_EX | LOCK_NB) < 0; i++)
        usleep(10000);
    close(fd);
}

/* Kill -9 now, restart, and expect name gone; *c reconnects by itself. */
static void kill_restart_expect_gone(kvt_client *c, const char *name, uint64_t seed)
{
    daemon_kill(&d);
    wait_cold_file_unlocked();
    start(true);
    int rc = fetch_context(c, name, seed);
    if (rc != -ENOENT)
        fail_msg("%s came back after kvt_drop, kill -9 and a restart: fetch = %d (%s); log %s",
                 name, rc, kvt_strerror(rc), d.log);
}

enum how { IN_RAM, DEMOTED, DURING_FLUSH, ADMIN_CONTEXT, ADMIN_NAMESPACE };

/* Dirty chunks enough for a flush that takes a while. */
static void store_noise(kvt_client *c, int round)
{
    for (int i = 0; i < NOISE_CONTEXTS; i++) {
        char name[32];
        snprintf(name, sizeof(name), "noise-%d", i);
        store_context(c, name, 1000 + (uint64_t)round * NOISE_CONTEXTS + i, NOISE_TOKENS);
    }
}

static void drop_then_kill(enum how how)
{
    char req[256], reply[4096];

    start_fresh();
    kvt_client *c = client();
    for (int round = 0; round < ROUNDS; round++) {
        char name[32];
        uint64_t seed = (uint64_t)round + 1;
        snprintf(name, sizeof(name), "ctx-%d-%d", (int)how, round);
        store_context(c, name, seed, TOKENS);
        CHECK_OK(kvt_sync(c));
        CHECK_OK(fetch_context(c, name, seed));
        switch (how) {
        case IN_RAM:
            CHECK_OK(kvt_drop(c, name));
            break;
        case DEMOTED:
            /* Synced, so after the hot tier is emptied only the cold
             * tier holds the context; the fetch promotes nothing back
             * because it is not asked for. */
            admin_ok("{\"cmd\":\"evict\",\"tier\":\"hot\"}");
            CHECK_OK(kvt_drop(c, name));
            break;
        case DURING_FLUSH:
            store_noise(c, round);
            /* The first progress line comes when the flush has started;
             * the flush goes on after this connection closes. */
            CHECK_OK(admin_request(&d, "{\"cmd\":\"flush\",\"progress\":true}", reply,
                                   sizeof(reply)));
            CHECK_OK(kvt_drop(c, name));
            break;
        case ADMIN_CONTEXT:
            snprintf(req, sizeof(req), "{\"cmd\":\"evict\",\"context\":\"%s\"}", name);
            admin_ok(req);
            break;
        case ADMIN_NAMESPACE:
            CHECK_OK(admin_request(&d, "{\"cmd\":\"namespaces\"}", reply, sizeof(reply)));
            char *id = strstr(reply, "\"id\":\"");
            if (!id)
                fail_msg("namespaces: no id in %s", reply);
            id += 6;
            *strchr(id, '"') = '\0';
            snprintf(req, sizeof(req), "{\"cmd\":\"evict\",\"namespace\":\"%s\"}", id);
            admin_ok(req);
            break;
        }
        kill_restart_expect_gone(c, name, seed);
    }
    kvt_disconnect(c);
    daemon_stop(&d);
    cleanup();
}

static void drop_of_a_context_in_ram_survives_kill(void **state)
{
    (void)state;
    drop_then_kill(IN_RAM);
}

static void drop_of_a_demoted_context_survives_kill(void **state)
{
    (void)state;
    drop_then_kill(DEMOTED);
}

static void drop_during_a_flush_survives_kill(void **state)
{
    (void)state;
    drop_then_kill(DURING_FLUSH);
}

static void admin_evict_context_survives_kill(void **state)
{
    (void)state;
    drop_then_kill(ADMIN_CONTEXT);
}

static void admin_evict_namespace_survives_kill(void **state)
{
    (void)state;
    drop_then_kill(ADMIN_NAMESPACE);
}

/* Store and sync a context on the small file system, then leave its
 * region alone and punch out every other region of the cold file, and
 * fill the disk: the restarted daemon recovers the context and appends in
 * the next region, where every write fails. */
static kvt_client *synced_context_then_full_disk(const char *name, uint64_t seed)
{
    cleanup();
    if (test_small_fs_mount(&fs, "48m") != 0)
        skip();
    snprintf(cold_path, sizeof(cold_path), "%s/cold.kvt", fs.mnt);
    cold_bytes = "32M";
    start(false);
    kvt_client *c = client();
    store_context(c, name, seed, TOKENS);
    CHECK_OK(kvt_sync(c));
    daemon_stop(&d);
    /* The header block, then region 0, which holds the records. */
    test_punch_hole(cold_path, 4096 + (4 << 20), (32 << 20) - 4096 - (4 << 20));
    test_small_fs_fill(&fs);
    start(true);
    CHECK_OK(fetch_context(c, name, seed));
    return c;
}

static void drop_on_a_full_disk(bool retry_with_drop)
{
    const char *name = "full-ctx";
    kvt_client *c = synced_context_then_full_disk(name, 7);

    /* Either answer is honest; success would have to mean on disk. */
    int rc = kvt_drop(c, name);
    if (rc != 0 && rc != -EIO)
        fail_msg("kvt_drop on a full disk = %d (%s)", rc, kvt_strerror(rc));
    CHECK_RC(fetch_context(c, name, 7), -ENOENT);    /* the RAM drop holds */
    /* Whatever the drop did, the tombstone's write has now failed. */
    CHECK_RC(kvt_sync(c), -EIO);
    test_small_fs_free(&fs);
    if (retry_with_drop)
        CHECK_OK(kvt_drop(c, name));
    else
        CHECK_OK(kvt_sync(c));
    kill_restart_expect_gone(c, name, 7);
    kvt_disconnect(c);
    daemon_stop(&d);
    cold_bytes = "256M";
    cleanup();
}

static void full_disk_tombstone_written_by_the_next_sync(void **state)
{
    (void)state;
    drop_on_a_full_disk(false);
}

static void full_disk_tombstone_written_by_a_second_drop(void **state)
{
    (void)state;
    drop_on_a_full_disk(true);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(drop_of_a_context_in_ram_survives_kill),
        cmocka_unit_test(drop_of_a_demoted_context_survives_kill),
        cmocka_unit_test(drop_during_a_flush_survives_kill),
        cmocka_unit_test(admin_evict_context_survives_kill),
        cmocka_unit_test(admin_evict_namespace_survives_kill),
        cmocka_unit_test(full_disk_tombstone_written_by_the_next_sync),
        cmocka_unit_test(full_disk_tombstone_written_by_a_second_drop),
    };
    atexit(cleanup);
    return cmocka_run_group_tests_name("durable drop", tests, NULL, NULL);
}
