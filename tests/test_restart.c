/* test_restart.c - proves that clients ride over daemon restarts: after
 * kill -9 and a new kvtierd on the same socket, an existing handle's next
 * call reconnects and re-attaches by itself, gets -ENOENT for what the old
 * daemon held only in RAM, and then stores and fetches correctly (its
 * kvt_alloc buffers included); while no daemon runs, calls fail with a
 * connection error instead of hanging. And that SIGTERM is a clean stop:
 * kvtierd exits 0 with a client connected, removes its socket files and
 * leaves nothing in /dev/shm, and the handle carries on with the next one.
 * And that context names ride over restarts with the cold tier: after
 * SIGTERM, `contexts` lists the same names, namespaces, domains and token
 * lengths as before it, and `namespaces` the same models and geometry,
 * for root's domain and nobody's alike; a namespace's listing never shows
 * the other domain's name stored under the same model; a name stored and
 * synced before a kill -9 is listed after it, one dropped before it is
 * not; a name record corrupted on disk is skipped (a log line, a count),
 * its context still served, and the others still listed; one whose
 * checksum holds but whose namespace identity does not give its id is
 * refused (a log line, a count) and listed nowhere. */
#include "tests/helpers.h"
#include "tests/cold_file_edit.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define LAYERS 4
#define HEADS 4
#define DIM 64
#define T 100
#define ROW (HEADS * DIM * 2)          /* f16 */

static struct test_daemon d;
static uint16_t k[T * HEADS * DIM], v[T * HEADS * DIM];

static kvt_client *connect_client(void)
{
    kvt_model m = test_model("restart-model", LAYERS, HEADS, DIM, KVT_F16, 16);
    kvt_client *c = NULL;
    CHECK_OK(kvt_connect(d.socket, &m, &c));
    return c;
}

static void store_layers(kvt_client *c, const char *ctx, uint64_t seed, void *kbuf)
{
    for (uint32_t l = 0; l < LAYERS; l++) {
        test_fill(kbuf, KVT_F16, seed, l, 0, T, HEADS, DIM);
        test_fill(v, KVT_F16, seed + 1, l, 0, T, HEADS, DIM);
        CHECK_OK(kvt_store(c, ctx, l, 0, T, kbuf, v));
    }
}

static void check_layers(kvt_client *c, const char *ctx, uint64_t seed, void *kbuf)
{
    for (uint32_t l = 0; l < LAYERS; l++) {
        memset(kbuf, 0, sizeof(k));
        memset(v, 0, sizeof(v));
        CHECK_OK(kvt_fetch(c, ctx, l, 0, T, kbuf, v));
        assert_int_equal(test_check(kbuf, KVT_F16, seed, l, 0, T, HEADS, DIM, 0), 0);
        assert_int_equal(test_check(v, KVT_F16, seed + 1, l, 0, T, HEADS, DIM, 0), 0);
    }
}

/* Between daemons a call fails fast with "no daemon": the socket file is
 * stale after kill -9 (refused) or gone after SIGTERM (absent). */
static void expect_no_daemon(kvt_client *c)
{
    uint32_t len;
    int rc = kvt_length(c, "any", &len);
    if (rc != -ECONNREFUSED && rc != -ENOENT)
        fail_msg("kvt_length with no daemon = %d (%s), want -ECONNREFUSED or -ENOENT",
                 rc, kvt_strerror(rc));
}

static void handle_reconnects_after_kill_9(void **state)
{
    (void)state;
    uint32_t len = 99;

    daemon_start(&d, "--cold-bytes", "0", NULL);       /* RAM only */
    kvt_client *c = connect_client();
    void *shared_k = kvt_alloc(c, sizeof(k));           /* must survive reconnects */
    assert_non_null(shared_k);
    store_layers(c, "ram-only", 1, k);
    check_layers(c, "ram-only", 1, shared_k);

    daemon_kill(&d);
    expect_no_daemon(c);
    daemon_restart(&d, "--cold-bytes", "0", NULL);

    /* The first call after the restart reconnects; the old RAM is gone. */
    CHECK_RC(kvt_fetch(c, "ram-only", 0, 0, T, k, v), -ENOENT);
    CHECK_OK(kvt_length(c, "ram-only", &len));
    assert_int_equal(len, 0);

    store_layers(c, "after-kill", 3, shared_k);
    check_layers(c, "after-kill", 3, k);
    check_layers(c, "after-kill", 3, shared_k);
    CHECK_OK(kvt_length(c, "after-kill", &len));
    assert_int_equal(len, T);

    /* A second kill without an intervening call: the next call is a
     * store, which must land in the new daemon. */
    daemon_kill(&d);
    daemon_restart(&d, "--cold-bytes", "0", NULL);
    store_layers(c, "after-second-kill", 5, k);
    check_layers(c, "after-second-kill", 5, shared_k);

    kvt_free(c, shared_k);
    kvt_disconnect(c);
}

static void sigterm_is_a_clean_stop(void **state)
{
    (void)state;
    uint32_t len = 99;

    daemon_start(&d, "--cold-bytes", "0", NULL);
    kvt_client *c = connect_client();
    store_layers(c, "before-term", 7, k);

    daemon_stop(&d);                                  /* asserts exit status 0 */
    assert_int_equal(access(d.socket, F_OK), -1);
    assert_int_equal(errno, ENOENT);
    assert_int_equal(access(d.admin_socket, F_OK), -1);
    assert_int_equal(shm_kvtier_files(), 0);
    expect_no_daemon(c);

    daemon_restart(&d, "--cold-bytes", "0", NULL);
    /* No cold tier was configured, so nothing was written down to serve. */
    CHECK_OK(kvt_length(c, "before-term", &len));
    assert_int_equal(len, 0);
    store_layers(c, "after-term", 9, k);
    check_layers(c, "after-term", 9, k);

    daemon_stop(&d);
    assert_int_equal(access(d.socket, F_OK), -1);
    assert_int_equal(shm_kvtier_files(), 0);
    kvt_disconnect(c);
}

/* ---- names after a restart ------------------------------------------------ */

#define NOBODY 65534
static char cold_dir[64], cold_path[400];

#define COLD_FLAGS "--cold-path", cold_path, "--cold-bytes", "64M", "--cold-region-bytes", "4M"

static cJSON *admin_json(const char *request)
{
    static char reply[1 << 20];
    CHECK_OK(admin_request(&d, request, reply, sizeof(reply)));
    cJSON *r = cJSON_Parse(reply);
    assert_non_null(r);
    if (!cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(r, "ok")))
        fail_msg("%s: %s", request, reply);
    return r;
}

/* The contexts listing as text, one "name namespace domain tokens" line
 * each, in the reply's order (sorted within each namespace). */
static void contexts_text(const char *request, char *out, size_t len)
{
    cJSON *r = admin_json(request), *e;
    size_t used = 0;

    out[0] = '\0';
    cJSON_ArrayForEach(e, cJSON_GetObjectItemCaseSensitive(r, "contexts")) {
        const cJSON *name = cJSON_GetObjectItemCaseSensitive(e, "name");
        const cJSON *ns = cJSON_GetObjectItemCaseSensitive(e, "namespace");
        const cJSON *dom = cJSON_GetObjectItemCaseSensitive(e, "domain");
        const cJSON *tok = cJSON_GetObjectItemCaseSensitive(e, "tokens");
        assert_true(cJSON_IsString(name) && cJSON_IsString(ns) && cJSON_IsNumber(dom) &&
                    cJSON_IsNumber(tok));
        used += (size_t)snprintf(out + used, len - used, "%s %s %.0f %.0f\n", name->valuestring,
                                 ns->valuestring, dom->valuedouble, tok->valuedouble);
        assert_true(used < len);
    }
    cJSON_Delete(r);
}

/* The namespaces listing's identity columns, one line each, sorted by id:
 * what the registry lists is in no order. */
static int by_line(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void namespaces_text(char *out, size_t len)
{
    cJSON *r = admin_json("{\"cmd\":\"namespaces\"}"), *e;
    char *lines[64];
    int n = 0;

    cJSON_ArrayForEach(e, cJSON_GetObjectItemCaseSensitive(r, "namespaces")) {
        char *line = NULL;
        const cJSON *name = cJSON_GetObjectItemCaseSensitive(e, "name");
        assert_true(n < 64);
        assert_true(asprintf(&line, "%s %s %.0f %.0f %.0f %.0f %.0f\n",
                             cJSON_GetObjectItemCaseSensitive(e, "id")->valuestring,
                             cJSON_IsString(name) ? name->valuestring : "(null)",
                             cJSON_GetObjectItemCaseSensitive(e, "domain")->valuedouble,
                             cJSON_GetObjectItemCaseSensitive(e, "layers")->valuedouble,
                             cJSON_GetObjectItemCaseSensitive(e, "kv_heads")->valuedouble,
                             cJSON_GetObjectItemCaseSensitive(e, "head_dim")->valuedouble,
                             cJSON_GetObjectItemCaseSensitive(e, "chunk_tokens")->valuedouble) > 0);
        lines[n++] = line;
    }
    qsort(lines, (size_t)n, sizeof(lines[0]), by_line);
    out[0] = '\0';
    for (int i = 0; i < n; i++) {
        assert_true(strlen(out) + strlen(lines[i]) < len);
        strcat(out, lines[i]);
        free(lines[i]);
    }
    cJSON_Delete(r);
}

static uint64_t cold_stat(const char *key)
{
    cJSON *r = admin_json("{\"cmd\":\"stats\"}");
    const cJSON *val = cJSON_GetObjectItemCaseSensitive(
        cJSON_GetObjectItemCaseSensitive(r, "cold"), key);
    assert_true(cJSON_IsNumber(val));
    uint64_t n = (uint64_t)val->valuedouble;
    cJSON_Delete(r);
    return n;
}

/* The namespace id a context is listed under, from the text listing. */
static void ns_of(const char *listing, const char *name, char *id, size_t len)
{
    char want[128];
    snprintf(want, sizeof(want), "%s ", name);
    const char *at = strstr(listing, want);
    assert_non_null(at);
    assert_int_equal(sscanf(at + strlen(want), "%18s", id), 1);
    assert_true(strlen(id) < len);
}

static int nobody_stores(void *arg)
{
    kvt_client *c = NULL;
    kvt_model m = test_model("restart-model", LAYERS, HEADS, DIM, KVT_F16, 16);
    (void)arg;
    CHILD_CHECK(test_become_uid(NOBODY) == 0, 10);
    CHILD_CHECK(kvt_connect(d.socket, &m, &c) == 0, 11);
    for (uint32_t l = 0; l < LAYERS; l++) {
        test_fill(k, KVT_F16, 40, l, 0, T, HEADS, DIM);
        CHILD_CHECK(kvt_store(c, "nobody-ctx", l, 0, T, k, v) == 0, 12);
        /* The same name as root's: listed under nobody's namespace only. */
        CHILD_CHECK(kvt_store(c, "shared-name", l, 0, 20, k, v) == 0, 13);
    }
    kvt_disconnect(c);
    return 0;
}

/* Offset of the only occurrence of text in the file, or -1. */
static long file_find(const char *path, const char *text)
{
    int fd = open(path, O_RDONLY);
    size_t n = 64u << 20, tl = strlen(text);
    char *buf = malloc(n);
    long at = -1;

    assert_true(fd >= 0 && buf);
    ssize_t got = pread(fd, buf, n, 0);
    assert_true(got > 0);
    for (size_t i = 0; i + tl <= (size_t)got; i++)
        if (!memcmp(buf + i, text, tl)) {
            assert_int_equal(at, -1);
            at = (long)i;
        }
    free(buf);
    close(fd);
    return at;
}

static void names_listed_after_restart(void **state)
{
    static char before[8192], after[8192], ns_before[4096], ns_after[4096];
    char root_ns[24], nobody_ns[24], req[160];
    uint32_t len;
    (void)state;

    snprintf(cold_dir, sizeof(cold_dir), "/var/tmp/kvtier-names-XXXXXX");
    assert_non_null(mkdtemp(cold_dir));
    snprintf(cold_path, sizeof(cold_path), "%s/cold.kvt", cold_dir);
    daemon_start(&d, COLD_FLAGS, NULL);
    kvt_client *c = connect_client();
    store_layers(c, "root-ctx", 11, k);
    for (uint32_t l = 0; l < LAYERS; l++) {
        test_fill(k, KVT_F16, 12, l, 0, T, HEADS, DIM);
        CHECK_OK(kvt_store(c, "root-short", l, 0, 40, k, v));
        CHECK_OK(kvt_store(c, "shared-name", l, 0, 60, k, v));
    }
    assert_int_equal(test_in_child(nobody_stores, NULL), 0);
    kvt_disconnect(c);

    contexts_text("{\"cmd\":\"contexts\"}", before, sizeof(before));
    namespaces_text(ns_before, sizeof(ns_before));
    assert_non_null(strstr(before, "root-short "));
    assert_non_null(strstr(before, "nobody-ctx "));
    ns_of(before, "root-ctx", root_ns, sizeof(root_ns));
    ns_of(before, "nobody-ctx", nobody_ns, sizeof(nobody_ns));
    assert_string_not_equal(root_ns, nobody_ns);

    daemon_stop(&d);                  /* SIGTERM: the hot tier goes to the cold tier */
    daemon_restart(&d, COLD_FLAGS, NULL);
    contexts_text("{\"cmd\":\"contexts\"}", after, sizeof(after));
    namespaces_text(ns_after, sizeof(ns_after));
    assert_string_equal(after, before);
    assert_string_equal(ns_after, ns_before);
    assert_int_equal(cold_stat("names"), 5);
    assert_int_equal(cold_stat("names_skipped"), 0);

    /* Each namespace lists its own domain's names only. */
    snprintf(req, sizeof(req), "{\"cmd\":\"contexts\",\"namespace\":\"%s\"}", root_ns);
    contexts_text(req, after, sizeof(after));
    char want[512];
    snprintf(want, sizeof(want), "root-ctx %s 0 %d\nroot-short %s 0 40\nshared-name %s 0 60\n",
             root_ns, T, root_ns, root_ns);
    assert_string_equal(after, want);
    snprintf(req, sizeof(req), "{\"cmd\":\"contexts\",\"namespace\":\"%s\"}", nobody_ns);
    contexts_text(req, after, sizeof(after));
    snprintf(want, sizeof(want), "nobody-ctx %s %d %d\nshared-name %s %d 20\n", nobody_ns,
             NOBODY, T, nobody_ns, NOBODY);
    assert_string_equal(after, want);

    /* Synced before a kill -9: listed after it; dropped before it: not. */
    c = connect_client();
    for (uint32_t l = 0; l < LAYERS; l++) {
        test_fill(k, KVT_F16, 13, l, 0, T, HEADS, DIM);
        CHECK_OK(kvt_store(c, "root-synced", l, 0, 30, k, v));
    }
    CHECK_OK(kvt_drop(c, "root-short"));
    CHECK_OK(kvt_sync(c));
    daemon_kill(&d);
    daemon_restart(&d, COLD_FLAGS, NULL);
    snprintf(req, sizeof(req), "{\"cmd\":\"contexts\",\"namespace\":\"%s\"}", root_ns);
    contexts_text(req, after, sizeof(after));
    snprintf(want, sizeof(want), "root-ctx %s 0 %d\nroot-synced %s 0 30\nshared-name %s 0 60\n",
             root_ns, T, root_ns, root_ns);
    assert_string_equal(after, want);
    check_layers(c, "root-ctx", 11, k);
    daemon_stop(&d);

    /* A name record whose bytes are flipped: skipped, and its context is
     * still served; the others are listed as before. */
    long at = file_find(cold_path, "root-synced");
    assert_true(at > 0);
    int fd = open(cold_path, O_RDWR);
    char b = 'X';
    assert_true(fd >= 0);
    assert_int_equal(pwrite(fd, &b, 1, at), 1);
    close(fd);
    daemon_restart(&d, COLD_FLAGS, NULL);
    contexts_text(req, after, sizeof(after));
    snprintf(want, sizeof(want), "root-ctx %s 0 %d\nshared-name %s 0 60\n", root_ns, T, root_ns);
    assert_string_equal(after, want);
    assert_int_equal(cold_stat("checksum_failures"), 1);
    assert_true(test_file_contains(d.log, "checksum failure"));
    CHECK_OK(kvt_length(c, "root-synced", &len));
    assert_int_equal(len, 30);
    daemon_stop(&d);

    /* A name record whose model name was changed, every checksum then made
     * to hold (as a bug, or someone with the file's seed, could write): its
     * model and geometry no longer hash to its namespace id, so the name is
     * refused, logged and counted, never listed under any namespace. The
     * corrupt one above now has a good checksum but a name that does not
     * hash to its key: skipped as malformed. */
    at = file_find(cold_path, "restart-modelroot-ctx");
    assert_true(at > 0);
    fd = open(cold_path, O_RDWR);
    assert_true(fd >= 0);
    assert_int_equal(pwrite(fd, "Q", 1, at + 12), 1);     /* restart-modeQ */
    close(fd);
    assert_int_equal(cold_file_set_versions(cold_path, &(struct cold_file_versions){ 3, 3, 3 },
                                            NULL), 0);
    daemon_restart(&d, COLD_FLAGS, NULL);
    contexts_text("{\"cmd\":\"contexts\"}", after, sizeof(after));
    assert_null(strstr(after, "root-ctx "));
    assert_null(strstr(after, "root-synced "));
    assert_non_null(strstr(after, "nobody-ctx "));
    assert_int_equal(cold_stat("names_skipped"), 2);
    assert_true(test_file_contains(d.log, "does not match its id"));
    CHECK_OK(kvt_length(c, "root-ctx", &len));
    assert_int_equal(len, T);
    kvt_disconnect(c);
    daemon_stop(&d);
    unlink(cold_path);
    rmdir(cold_dir);
}

static int cleanup(void **state)
{
    (void)state;
    daemon_cleanup(&d);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(handle_reconnects_after_kill_9, cleanup),
        cmocka_unit_test_teardown(sigterm_is_a_clean_stop, cleanup),
        cmocka_unit_test_teardown(names_listed_after_restart, cleanup),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
