/* test_admin.c - proves that the admin socket's commands take effect on a
 * live daemon: evicting a context makes a client's fetch miss, evicting the
 * hot tier leaves synced data fetchable from the cold tier, flush fills the
 * cold tier, config set changes the hot budget (and refuses keys that cannot
 * change live), bad requests get ok:false while the daemon keeps serving,
 * other uids are refused, kvtierctl prints stats, JSON and Prometheus
 * metrics with the documented exit codes, and `contexts` lists the named
 * contexts stored (with their length in tokens) until they are dropped or
 * evicted. */
#include "tests/helpers.h"

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#define LAYERS 2
#define HEADS 2
#define DIM 64
#define CHUNK 16
#define TOKENS 64
#define SEED 7

static struct test_daemon d;
static char cold_dir[64];

/* ---- admin socket helpers ---------------------------------------------------- */

static int admin_connect(const char *path)
{
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    if (strlen(path) >= sizeof(sa.sun_path))
        return -1;
    memcpy(sa.sun_path, path, strlen(path) + 1);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    return fd;
}

/* daemon_start returns once the data socket accepts; the admin socket
 * comes up a moment later in the same start-up. */
static void wait_admin(void)
{
    for (int i = 0; i < 500; i++) {
        int fd = admin_connect(d.admin_socket);
        if (fd >= 0) {
            close(fd);
            return;
        }
        usleep(10000);
    }
    fail_msg("admin socket %s did not accept within 5 s", d.admin_socket);
}

static int send_all(int fd, const char *buf, size_t len)
{
    while (len) {
        ssize_t n = send(fd, buf, len, MSG_NOSIGNAL);
        if (n <= 0)
            return -1;
        buf += n;
        len -= (size_t)n;
    }
    return 0;
}

/* One reply line parsed, or NULL on EOF/garbage. */
static cJSON *read_reply(int fd)
{
    static char buf[1 << 20];
    size_t len = 0;

    while (len < sizeof(buf) - 1) {
        ssize_t n = recv(fd, buf + len, 1, 0);     /* byte by byte: keep later lines */
        if (n <= 0)
            return NULL;
        if (buf[len] == '\n') {
            buf[len] = '\0';
            return cJSON_Parse(buf);
        }
        len++;
    }
    return NULL;
}

static cJSON *admin_on(int fd, const char *request)
{
    if (send_all(fd, request, strlen(request)) || send_all(fd, "\n", 1))
        return NULL;
    return read_reply(fd);
}

/* One request on a fresh connection; fails the test if no reply. */
static cJSON *admin(const char *request)
{
    int fd = admin_connect(d.admin_socket);
    if (fd < 0)
        fail_msg("cannot connect to %s", d.admin_socket);
    cJSON *reply = admin_on(fd, request);
    close(fd);
    if (!reply)
        fail_msg("no reply to %s", request);
    return reply;
}

static bool reply_ok(const cJSON *reply)
{
    return cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(reply, "ok"));
}

/* A long command asked for with "progress": true: its first line must be a
 * progress line (no "ok") for command with this total; further progress
 * lines are skipped. Returns the reply, which must say ok. */
static cJSON *read_job_reply(int fd, const char *command, double total)
{
    cJSON *line = read_reply(fd);
    const cJSON *p = cJSON_GetObjectItemCaseSensitive(line, "progress");

    assert_true(cJSON_IsObject(p));
    assert_false(cJSON_HasObjectItem(line, "ok"));
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(p, "command")->valuestring, command);
    assert_true(cJSON_GetObjectItemCaseSensitive(p, "total")->valuedouble == total);
    while (!cJSON_HasObjectItem(line, "ok")) {
        cJSON_Delete(line);
        line = read_reply(fd);
        assert_non_null(line);
    }
    assert_true(reply_ok(line));
    return line;
}

static void assert_error_reply(const cJSON *reply)
{
    assert_non_null(reply);
    assert_false(reply_ok(reply));
    const cJSON *err = cJSON_GetObjectItemCaseSensitive(reply, "error");
    assert_true(cJSON_IsString(err) && strlen(err->valuestring) > 0);
}

/* stats field "section.field" (section NULL for the top level). */
static double stat_of(const char *section, const char *field)
{
    cJSON *r = admin("{\"cmd\":\"stats\"}");
    assert_true(reply_ok(r));
    const cJSON *obj = section ? cJSON_GetObjectItemCaseSensitive(r, section) : r;
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, field);
    if (!cJSON_IsNumber(v))
        fail_msg("stats has no number %s.%s", section ? section : "", field);
    double x = v->valuedouble;
    cJSON_Delete(r);
    return x;
}

static void expect_ok(const char *request)
{
    cJSON *r = admin(request);
    if (!reply_ok(r))
        fail_msg("%s failed", request);
    cJSON_Delete(r);
}

/* ---- data helpers ------------------------------------------------------------- */

static size_t row_bytes(void)
{
    return (size_t)HEADS * DIM * 2;
}

static kvt_client *client(void)
{
    kvt_model m = test_model("admin-test", LAYERS, HEADS, DIM, KVT_F16, CHUNK);
    kvt_client *c;
    CHECK_OK(kvt_connect(d.socket, &m, &c));
    return c;
}

static void store_ctx(kvt_client *c, const char *ctx)
{
    void *k = malloc(TOKENS * row_bytes()), *v = malloc(TOKENS * row_bytes());
    for (uint32_t l = 0; l < LAYERS; l++) {
        test_fill(k, KVT_F16, SEED, l, 0, TOKENS, HEADS, DIM);
        test_fill(v, KVT_F16, SEED + 1, l, 0, TOKENS, HEADS, DIM);
        CHECK_OK(kvt_store(c, ctx, l, 0, TOKENS, k, v));
    }
    free(k);
    free(v);
}

/* Fetch every layer; returns the first error, and checks values on success. */
static int fetch_ctx(kvt_client *c, const char *ctx)
{
    void *k = malloc(TOKENS * row_bytes()), *v = malloc(TOKENS * row_bytes());
    int rc = 0;
    for (uint32_t l = 0; l < LAYERS && rc == 0; l++) {
        rc = kvt_fetch(c, ctx, l, 0, TOKENS, k, v);
        if (rc == 0) {
            assert_int_equal(test_check(k, KVT_F16, SEED, l, 0, TOKENS, HEADS, DIM, 0), 0);
            assert_int_equal(test_check(v, KVT_F16, SEED + 1, l, 0, TOKENS, HEADS, DIM, 0), 0);
        }
    }
    free(k);
    free(v);
    return rc;
}

static void start_with_cold(void)
{
    char path[128];
    snprintf(cold_dir, sizeof(cold_dir), "/var/tmp/kvtier-admin-cold-XXXXXX");
    assert_non_null(mkdtemp(cold_dir));
    snprintf(path, sizeof(path), "%s/cold.kvt", cold_dir);
    daemon_start(&d, "--cold-bytes", "32M", "--cold-region-bytes", "1M",
                 "--cold-path", path, NULL);
    wait_admin();
}

static void stop_all(void)
{
    char cmd[128];
    daemon_stop(&d);
    daemon_cleanup(&d);
    if (cold_dir[0]) {
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", cold_dir);
        assert_int_equal(system(cmd), 0);
        cold_dir[0] = '\0';
    }
}

/* ---- tests -------------------------------------------------------------------- */

static void evict_context_makes_fetch_miss(void **state)
{
    (void)state;
    daemon_start(&d, NULL);
    wait_admin();
    kvt_client *c = client();
    store_ctx(c, "a");
    store_ctx(c, "b");
    CHECK_OK(fetch_ctx(c, "a"));

    cJSON *r = admin("{\"cmd\":\"evict\",\"context\":\"a\"}");
    assert_true(reply_ok(r));
    assert_true(cJSON_GetObjectItemCaseSensitive(r, "hot_chunks")->valuedouble > 0);
    cJSON_Delete(r);
    CHECK_RC(fetch_ctx(c, "a"), -ENOENT);
    CHECK_OK(fetch_ctx(c, "b"));

    /* With the namespace id taken from `namespaces`. */
    r = admin("{\"cmd\":\"namespaces\"}");
    assert_true(reply_ok(r));
    const cJSON *ns = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(r, "namespaces"), 0);
    assert_non_null(ns);
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(ns, "name")->valuestring, "admin-test");
    assert_int_equal((int)cJSON_GetObjectItemCaseSensitive(ns, "clients")->valuedouble, 1);
    char req[256];
    char ns_id[32];
    snprintf(ns_id, sizeof(ns_id), "%s", cJSON_GetObjectItemCaseSensitive(ns, "id")->valuestring);
    snprintf(req, sizeof(req), "{\"cmd\":\"evict\",\"context\":\"b\",\"namespace\":\"%s\"}",
             ns_id);
    cJSON_Delete(r);
    expect_ok(req);
    CHECK_RC(fetch_ctx(c, "b"), -ENOENT);

    /* A whole namespace, with progress: the first line counts the chunks
     * to free, the reply how many went. */
    store_ctx(c, "c");
    store_ctx(c, "d");
    const double chunks = 2.0 * LAYERS * (TOKENS / CHUNK);
    snprintf(req, sizeof(req), "{\"cmd\":\"evict\",\"namespace\":\"%s\",\"progress\":true}",
             ns_id);
    int fd = admin_connect(d.admin_socket);
    assert_true(fd >= 0);
    assert_int_equal(send_all(fd, req, strlen(req)), 0);
    assert_int_equal(send_all(fd, "\n", 1), 0);
    r = read_job_reply(fd, "evict", chunks);
    assert_true(cJSON_GetObjectItemCaseSensitive(r, "hot_chunks")->valuedouble == chunks);
    cJSON_Delete(r);
    close(fd);
    CHECK_RC(fetch_ctx(c, "c"), -ENOENT);
    CHECK_RC(fetch_ctx(c, "d"), -ENOENT);

    /* clients lists this process. */
    r = admin("{\"cmd\":\"clients\"}");
    const cJSON *cl = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(r, "clients"), 0);
    assert_non_null(cl);
    assert_int_equal((int)cJSON_GetObjectItemCaseSensitive(cl, "pid")->valuedouble, (int)getpid());
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(cl, "namespace")->valuestring, "admin-test");
    cJSON_Delete(r);

    kvt_disconnect(c);
    stop_all();
}

static void evict_hot_tier_keeps_synced_data(void **state)
{
    (void)state;
    start_with_cold();
    kvt_client *c = client();
    store_ctx(c, "synced");
    CHECK_OK(kvt_sync(c));
    expect_ok("{\"cmd\":\"evict\",\"tier\":\"hot\"}");
    assert_true(stat_of("hot", "chunks") == 0);
    CHECK_OK(fetch_ctx(c, "synced"));          /* promoted from the cold tier */
    assert_true(stat_of("tiers", "promotions") > 0);
    assert_true(stat_of("tiers", "demote_errors") == 0);
    assert_true(stat_of(NULL, "fetches") >= LAYERS);
    assert_true(stat_of(NULL, "bytes_in") == (double)LAYERS * TOKENS * row_bytes() * 2);
    /* The promoted fetch missed RAM; a second fetch hits it. */
    assert_true(stat_of("hot", "misses") > 0);
    double hits = stat_of("hot", "hits");
    CHECK_OK(fetch_ctx(c, "synced"));
    assert_true(stat_of("hot", "hits") > hits);
    /* Latency percentiles cover every successful store and fetch. */
    cJSON *r = admin("{\"cmd\":\"stats\"}");
    const cJSON *lat = cJSON_GetObjectItemCaseSensitive(r, "latency_us");
    for (const char *const *op = (const char *const[]){ "store", "fetch", NULL }; *op; op++) {
        const cJSON *h = cJSON_GetObjectItemCaseSensitive(lat, *op);
        double count = cJSON_GetObjectItemCaseSensitive(h, "count")->valuedouble;
        double p50 = cJSON_GetObjectItemCaseSensitive(h, "p50")->valuedouble;
        double p99 = cJSON_GetObjectItemCaseSensitive(h, "p99")->valuedouble;
        assert_true(count >= LAYERS);
        assert_true(p50 >= 1 && p99 >= p50);
    }
    cJSON_Delete(r);

    /* Evicting every tier loses it for good. */
    expect_ok("{\"cmd\":\"evict\",\"tier\":\"all\"}");
    CHECK_RC(fetch_ctx(c, "synced"), -ENOENT);
    kvt_disconnect(c);
    stop_all();
}

static void flush_fills_the_cold_tier(void **state)
{
    (void)state;
    start_with_cold();
    kvt_client *c = client();
    store_ctx(c, "flushed");

    /* With progress: a progress line counting every dirty chunk comes
     * first, the reply last; a request pipelined behind the flush on the
     * same connection is answered after it, in order. */
    const double dirty = (double)LAYERS * (TOKENS / CHUNK);
    int fd = admin_connect(d.admin_socket);
    assert_true(fd >= 0);
    const char *two = "{\"cmd\":\"flush\",\"progress\":true}\n{\"cmd\":\"health\"}\n";
    assert_int_equal(send_all(fd, two, strlen(two)), 0);
    cJSON *line = read_job_reply(fd, "flush", dirty);
    assert_true(cJSON_GetObjectItemCaseSensitive(line, "chunks_written")->valuedouble == dirty);
    cJSON_Delete(line);
    line = read_reply(fd);
    assert_true(reply_ok(line));
    assert_true(cJSON_HasObjectItem(line, "serving"));
    cJSON_Delete(line);
    close(fd);
    assert_true(stat_of("cold", "records") >= dirty);
    assert_true(stat_of("cold", "bytes_written") > 0);

    /* A client that hangs up while its flush runs: the flush finishes,
     * the daemon serves on (and, under ASan, touches no freed connection). */
    store_ctx(c, "abandoned");
    fd = admin_connect(d.admin_socket);
    assert_true(fd >= 0);
    const char *flush = "{\"cmd\":\"flush\",\"progress\":true}\n";
    assert_int_equal(send_all(fd, flush, strlen(flush)), 0);
    close(fd);
    for (int i = 0; i < 100 && stat_of("cold", "records") < dirty * 2; i++)
        usleep(10000);
    assert_true(stat_of("cold", "records") >= dirty * 2);

    /* Nothing dirty: the flush still syncs and says so (once the abandoned
     * one has ended: one long command at a time); a bad "progress" is
     * refused. */
    cJSON *r = admin("{\"cmd\":\"flush\"}");
    for (int i = 0; i < 500 && !reply_ok(r); i++) {
        const cJSON *e = cJSON_GetObjectItemCaseSensitive(r, "error");
        assert_non_null(strstr(e->valuestring, "already running"));
        cJSON_Delete(r);
        usleep(10000);
        r = admin("{\"cmd\":\"flush\"}");
    }
    assert_true(reply_ok(r));
    assert_true(cJSON_GetObjectItemCaseSensitive(r, "chunks_written")->valuedouble == 0);
    cJSON_Delete(r);
    r = admin("{\"cmd\":\"flush\",\"progress\":\"yes\"}");
    assert_error_reply(r);
    cJSON_Delete(r);
    kvt_disconnect(c);
    stop_all();

    /* Without a cold tier: an error, and "cold": null in stats. */
    daemon_start(&d, NULL);
    wait_admin();
    r = admin("{\"cmd\":\"flush\"}");
    assert_error_reply(r);
    cJSON_Delete(r);
    r = admin("{\"cmd\":\"stats\"}");
    assert_true(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(r, "cold")));
    cJSON_Delete(r);
    stop_all();
}

static void config_set_changes_live_keys_only(void **state)
{
    (void)state;
    daemon_start(&d, "--hot-bytes", "256M", NULL);
    wait_admin();
    assert_true(stat_of("hot", "budget_bytes") == 256.0 * 1024 * 1024);
    expect_ok("{\"cmd\":\"config\",\"op\":\"set\",\"key\":\"hot-bytes\",\"value\":\"64M\"}");
    assert_true(stat_of("hot", "budget_bytes") == 64.0 * 1024 * 1024);

    cJSON *r = admin("{\"cmd\":\"config\",\"op\":\"get\",\"key\":\"hot-bytes\"}");
    assert_true(reply_ok(r));
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(r, "value")->valuestring, "64M");
    cJSON_Delete(r);

    r = admin("{\"cmd\":\"config\",\"op\":\"set\",\"key\":\"workers\",\"value\":\"3\"}");
    assert_error_reply(r);
    assert_non_null(strstr(cJSON_GetObjectItemCaseSensitive(r, "error")->valuestring,
                           "cannot change while running"));
    cJSON_Delete(r);
    r = admin("{\"cmd\":\"config\",\"op\":\"set\",\"key\":\"hot-low-watermark\",\"value\":\"95\"}");
    assert_error_reply(r);                        /* above the high watermark */
    cJSON_Delete(r);
    /* poll-us is live; out of range is refused and changes nothing. */
    expect_ok("{\"cmd\":\"config\",\"op\":\"set\",\"key\":\"poll-us\",\"value\":0}");
    r = admin("{\"cmd\":\"config\",\"op\":\"set\",\"key\":\"poll-us\",\"value\":5000}");
    assert_error_reply(r);
    cJSON_Delete(r);
    r = admin("{\"cmd\":\"config\",\"op\":\"get\",\"key\":\"poll-us\"}");
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(r, "value")->valuestring, "0");
    cJSON_Delete(r);
    r = admin("{\"cmd\":\"config\",\"op\":\"get\",\"key\":\"no-such-key\"}");
    assert_error_reply(r);
    cJSON_Delete(r);

    r = admin("{\"cmd\":\"config\",\"op\":\"get\"}");
    const cJSON *all = cJSON_GetObjectItemCaseSensitive(r, "config");
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(all, "admin-socket")->valuestring,
                        d.admin_socket);
    cJSON_Delete(r);

    r = admin("{\"cmd\":\"health\"}");
    assert_true(reply_ok(r));
    assert_true(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(r, "serving")));
    cJSON_Delete(r);
    stop_all();
}

static void bad_requests_get_errors_and_daemon_serves_on(void **state)
{
    (void)state;
    daemon_start(&d, NULL);
    wait_admin();
    int fd = admin_connect(d.admin_socket);
    assert_true(fd >= 0);
    cJSON *r = admin_on(fd, "{\"cmd\": ");
    assert_error_reply(r);
    cJSON_Delete(r);
    r = admin_on(fd, "{\"cmd\":\"no-such-command\"}");
    assert_error_reply(r);
    cJSON_Delete(r);
    r = admin_on(fd, "[1,2,3]");
    assert_error_reply(r);
    cJSON_Delete(r);
    r = admin_on(fd, "{\"cmd\":\"health\"}");     /* the connection continues */
    assert_true(reply_ok(r));
    cJSON_Delete(r);

    /* 100 KiB without a newline: error, then the daemon closes. */
    size_t big = 100 << 10;
    char *line = malloc(big);
    memset(line, 'x', big);
    send_all(fd, line, big);
    free(line);
    r = read_reply(fd);
    assert_error_reply(r);
    cJSON_Delete(r);
    assert_null(read_reply(fd));
    close(fd);

    expect_ok("{\"cmd\":\"health\"}");
    kvt_client *c = client();
    store_ctx(c, "still-serving");
    CHECK_OK(fetch_ctx(c, "still-serving"));
    kvt_disconnect(c);
    stop_all();
}

/* In a child as uid 65534: connect and expect a refusal, then EOF. */
static int connect_as_nobody(void *arg)
{
    (void)arg;
    if (test_become_uid(65534))
        return 10;
    int fd = admin_connect(d.admin_socket);
    if (fd < 0)
        return 11;
    /* The daemon answers a refused peer at accept, maybe before our
     * request is sent (the send may then fail): the reply is read anyway. */
    const char *req = "{\"cmd\":\"health\"}\n";
    send_all(fd, req, strlen(req));
    cJSON *r = read_reply(fd);
    if (!r || reply_ok(r))
        return 12;
    cJSON_Delete(r);
    if (read_reply(fd))
        return 13;
    close(fd);
    return 0;
}

static void other_uids_are_refused(void **state)
{
    (void)state;
    if (geteuid() != 0)
        skip();
    daemon_start(&d, NULL);
    wait_admin();
    struct stat st;
    assert_int_equal(stat(d.admin_socket, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    /* Open the file mode up so the peer-credential check is what refuses. */
    assert_int_equal(chmod(d.admin_socket, 0666), 0);
    assert_int_equal(test_in_child(connect_as_nobody, NULL), 0);
    expect_ok("{\"cmd\":\"health\"}");
    stop_all();
}

/* Run kvtierctl ARGS with output into buf; returns its exit status. */
static int ctl(char *buf, size_t len, const char *socket, const char *args)
{
    char cmd[1024];
    snprintf(cmd, sizeof(cmd), "%s/kvtierctl --socket '%s' %s 2>/dev/null",
             test_build_dir(), socket, args);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    size_t n = fread(buf, 1, len - 1, p);
    buf[n] = '\0';
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void kvtierctl_prints_and_exits_as_documented(void **state)
{
    (void)state;
    static char out[1 << 16];
    start_with_cold();
    kvt_client *c = client();
    store_ctx(c, "ctl");

    assert_int_equal(ctl(out, sizeof(out), d.admin_socket, "stats"), 0);
    assert_non_null(strstr(out, "hot.used_bytes"));
    assert_non_null(strstr(out, "cold.records"));

    assert_int_equal(ctl(out, sizeof(out), d.admin_socket, "--json stats"), 0);
    cJSON *r = cJSON_Parse(out);
    assert_true(reply_ok(r));
    cJSON_Delete(r);

    assert_int_equal(ctl(out, sizeof(out), d.admin_socket, "metrics"), 0);
    assert_non_null(strstr(out, "# TYPE kvtier_hot_used_bytes gauge\nkvtier_hot_used_bytes "));
    assert_non_null(strstr(out, "kvtier_request_duration_seconds_count{op=\"store\"} 2\n"));
    assert_non_null(strstr(out, "kvtier_domain_hot_bytes{domain=\"0\"} "));   /* root */
    assert_non_null(strstr(out, "# TYPE kvtier_stores_total counter\nkvtier_stores_total 2\n"));
    assert_non_null(strstr(out, "# TYPE kvtier_connections_attach_timeouts_total counter\n"
                                "kvtier_connections_attach_timeouts_total 0\n"));

    /* Piped, flush prints its result and nothing else (no progress); on a
     * terminal (script(1) gives it one) it draws progress on stderr. */
    char cmd[512];
    snprintf(cmd, sizeof(cmd), "%s/kvtierctl --socket '%s' flush 2>&1", test_build_dir(),
             d.admin_socket);
    FILE *pipe = popen(cmd, "r");
    size_t n = fread(out, 1, sizeof(out) - 1, pipe);
    out[n] = '\0';
    assert_int_equal(pclose(pipe), 0);
    assert_string_equal(out, "flushed: 8 chunks written, cold file synced\n");
    store_ctx(c, "ctl");                          /* dirty again */
    snprintf(cmd, sizeof(cmd), "script -qec \"%s/kvtierctl --socket '%s' flush\" /dev/null",
             test_build_dir(), d.admin_socket);
    pipe = popen(cmd, "r");
    n = fread(out, 1, sizeof(out) - 1, pipe);
    out[n] = '\0';
    assert_int_equal(pclose(pipe), 0);
    /* "0 of 8" or "8 of 8": a flush this small may end before the loop
     * first looks at it. */
    assert_non_null(strstr(out, "\rflushing: "));
    assert_non_null(strstr(out, " of 8 chunks written"));
    assert_non_null(strstr(out, "flushed: 8 chunks written"));
    assert_int_equal(ctl(out, sizeof(out), d.admin_socket, "evict --context ctl"), 0);
    CHECK_RC(fetch_ctx(c, "ctl"), -ENOENT);
    assert_int_equal(ctl(out, sizeof(out), d.admin_socket, "config set hot-bytes 32M"), 0);
    assert_int_equal(ctl(out, sizeof(out), d.admin_socket, "config get hot-bytes"), 0);
    assert_string_equal(out, "hot-bytes 32M\n");   /* a size as written */
    assert_int_equal(ctl(out, sizeof(out), d.admin_socket, "health"), 0);

    assert_int_equal(ctl(out, sizeof(out), d.admin_socket, "config set workers 4"), 1);
    assert_int_equal(ctl(out, sizeof(out), d.admin_socket, "no-such-command"), 2);
    assert_int_equal(ctl(out, sizeof(out), d.admin_socket, "evict"), 2);
    assert_int_equal(ctl(out, sizeof(out), "/nonexistent/admin.sock", "health"), 3);
    kvt_disconnect(c);
    stop_all();
}

/* `contexts` reply (for namespace ns_id, or every namespace if NULL): its
 * array, checked to hold exactly the names given, in order, each TOKENS
 * long and in namespace want_ns. Frees the reply. */
static void expect_contexts(const char *ns_id, const char *want_ns, const char *const *names,
                            int n)
{
    char req[256];
    if (ns_id)
        snprintf(req, sizeof(req), "{\"cmd\":\"contexts\",\"namespace\":\"%s\"}", ns_id);
    else
        snprintf(req, sizeof(req), "{\"cmd\":\"contexts\"}");
    cJSON *r = admin(req);
    assert_true(reply_ok(r));
    const cJSON *list = cJSON_GetObjectItemCaseSensitive(r, "contexts");
    assert_true(cJSON_IsArray(list));
    assert_int_equal(cJSON_GetArraySize(list), n);
    for (int i = 0; i < n; i++) {
        const cJSON *e = cJSON_GetArrayItem(list, i);
        assert_string_equal(cJSON_GetObjectItemCaseSensitive(e, "name")->valuestring, names[i]);
        assert_string_equal(cJSON_GetObjectItemCaseSensitive(e, "namespace")->valuestring, want_ns);
        assert_int_equal((int)cJSON_GetObjectItemCaseSensitive(e, "tokens")->valuedouble, TOKENS);
    }
    assert_int_equal((int)cJSON_GetObjectItemCaseSensitive(r, "untracked")->valuedouble, 0);
    cJSON_Delete(r);
}

static void contexts_lists_names_until_dropped_or_evicted(void **state)
{
    (void)state;
    static char out[1 << 16];
    char ns_id[64], args[128];
    const char *both[] = { "alpha", "beta" }, *beta[] = { "beta" };

    daemon_start(&d, NULL);
    wait_admin();
    kvt_client *c = client();
    expect_contexts(NULL, "", NULL, 0);
    store_ctx(c, "beta");
    store_ctx(c, "alpha");
    store_ctx(c, "alpha");                         /* a known name stays one entry */

    cJSON *r = admin("{\"cmd\":\"namespaces\"}");
    const cJSON *ns = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(r, "namespaces"), 0);
    assert_non_null(ns);
    snprintf(ns_id, sizeof(ns_id), "%s", cJSON_GetObjectItemCaseSensitive(ns, "id")->valuestring);
    cJSON_Delete(r);

    expect_contexts(NULL, ns_id, both, 2);
    expect_contexts(ns_id, ns_id, both, 2);
    r = admin("{\"cmd\":\"contexts\",\"namespace\":\"0x1234\"}");
    assert_error_reply(r);                        /* no such namespace */
    cJSON_Delete(r);

    CHECK_OK(kvt_drop(c, "alpha"));
    expect_contexts(NULL, ns_id, beta, 1);

    /* kvtierctl: a table, raw JSON, a namespace filter, exit 1 when refused. */
    assert_int_equal(ctl(out, sizeof(out), d.admin_socket, "contexts"), 0);
    assert_non_null(strstr(out, "name"));
    assert_non_null(strstr(out, "tokens"));
    snprintf(args, sizeof(args), "beta  %s  0       64\n", ns_id);
    assert_non_null(strstr(out, args));
    assert_int_equal(ctl(out, sizeof(out), d.admin_socket, "--json contexts"), 0);
    r = cJSON_Parse(out);
    assert_true(reply_ok(r));
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(r, "contexts")), 1);
    cJSON_Delete(r);
    snprintf(args, sizeof(args), "contexts %s", ns_id);
    assert_int_equal(ctl(out, sizeof(out), d.admin_socket, args), 0);
    assert_non_null(strstr(out, "beta"));
    assert_int_equal(ctl(out, sizeof(out), d.admin_socket, "contexts 0x1234"), 1);
    assert_int_equal(ctl(out, sizeof(out), d.admin_socket, "contexts a b"), 2);

    expect_ok("{\"cmd\":\"evict\",\"context\":\"beta\"}");
    expect_contexts(NULL, ns_id, NULL, 0);
    assert_int_equal(ctl(out, sizeof(out), d.admin_socket, "contexts"), 0);
    assert_string_equal(out, "(none)\n");

    /* Evicting the namespace, or every tier, forgets its names too. */
    store_ctx(c, "gamma");
    snprintf(args, sizeof(args), "{\"cmd\":\"evict\",\"namespace\":\"%s\"}", ns_id);
    expect_ok(args);
    expect_contexts(NULL, ns_id, NULL, 0);
    store_ctx(c, "delta");
    expect_ok("{\"cmd\":\"evict\",\"tier\":\"all\"}");
    expect_contexts(NULL, ns_id, NULL, 0);

    /* A store large enough to be split across worker threads records its
     * name too (from the last worker to finish). */
    const uint32_t big = 2048;
    void *k = calloc(big, row_bytes()), *v = calloc(big, row_bytes());
    for (uint32_t l = 0; l < LAYERS; l++)
        CHECK_OK(kvt_store(c, "big", l, 0, big, k, v));
    free(k);
    free(v);
    r = admin("{\"cmd\":\"contexts\"}");
    const cJSON *e = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(r, "contexts"), 0);
    assert_non_null(e);
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(e, "name")->valuestring, "big");
    assert_int_equal((int)cJSON_GetObjectItemCaseSensitive(e, "tokens")->valuedouble, (int)big);
    cJSON_Delete(r);

    kvt_disconnect(c);
    stop_all();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(evict_context_makes_fetch_miss),
        cmocka_unit_test(evict_hot_tier_keeps_synced_data),
        cmocka_unit_test(flush_fills_the_cold_tier),
        cmocka_unit_test(config_set_changes_live_keys_only),
        cmocka_unit_test(bad_requests_get_errors_and_daemon_serves_on),
        cmocka_unit_test(other_uids_are_refused),
        cmocka_unit_test(kvtierctl_prints_and_exits_as_documented),
        cmocka_unit_test(contexts_lists_names_until_dropped_or_evicted),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
