/* test_cli.c - proves the command lines behave as kvtierctl(1) and
 * kvtierd(8) say, against a real daemon:
 *  - kvtierctl takes its options before or after the command, says
 *    "unknown command", prints --version, says that a data socket is the
 *    data socket, and finds a `make run` daemon's var/admin.sock from the
 *    directory it runs in;
 *  - evict says what it dropped and what remains;
 *  - kvtierd takes --key=value and sizes such as 256MiB or 4MB, refuses an
 *    unknown option with the nearest key, and `config get` shows sizes as
 *    written;
 *  - every key's default in `kvtierd --help` (the key table) is the one
 *    kvtierd(8) documents;
 *  - after a restart, `contexts` and `namespaces` list what the cold tier
 *    holds: the context names with their lengths and domain, the model
 *    names and geometry (kept on the cold tier), and its counts;
 *  - metrics: latency as _seconds histograms whose count is the stats'
 *    count, kvtier_build_info, the start time, pid/uptime/version in stats,
 *    and cold.quota_drops as kvtier_cold_quota_drops_total;
 *  - the cold tier's reader threads run SCHED_IDLE by default (promote-priority
 *    idle), not with normal, and a bad value is refused by name. */
#include "tests/helpers.h"

#include <cjson/cJSON.h>
#include <ctype.h>
#include <dirent.h>
#include <sched.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "tests/cmd_util.h"

#define LAYERS 2
#define HEADS 4
#define DIM 64
#define TOKENS 256

static struct test_daemon d;
static char out[1 << 17];

static void store_contexts(int n)
{
    struct test_ctx_shape s = { LAYERS, TOKENS, HEADS, DIM };
    kvt_model m = test_model("cli", LAYERS, HEADS, DIM, KVT_F16, TOKENS);
    kvt_client *c;

    CHECK_OK(kvt_connect(d.socket, &m, &c));
    CHECK_OK(test_store_contexts(c, &s, 0, n));
    for (int i = 0; i < n; i++)
        assert_int_equal(test_check_context(c, &s, i), 0);
    kvt_disconnect(c);
}

static cJSON *stats(void)
{
    assert_int_equal(test_ctl(out, sizeof(out), d.admin_socket, "stats --json"), 0);
    cJSON *r = cJSON_Parse(out);
    assert_non_null(r);
    return r;
}

static void ctl_options_go_anywhere(void **state)
{
    char args[4600], bin[4096];
    (void)state;
    daemon_start(&d, "--hot-bytes", "64M", NULL);

    /* --json after the command, --socket after it too, and --socket=. */
    assert_int_equal(test_ctl(out, sizeof(out), d.admin_socket, "stats --json"), 0);
    cJSON *r = cJSON_Parse(out);
    assert_true(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(r, "ok")));
    cJSON_Delete(r);
    assert_int_equal(test_cmd(out, sizeof(out), "%s/kvtierctl stats --socket '%s' --json",
                              test_build_dir(), d.admin_socket), 0);
    assert_int_equal(out[0], '{');
    assert_int_equal(test_cmd(out, sizeof(out), "%s/kvtierctl --socket='%s' health",
                              test_build_dir(), d.admin_socket), 0);

    assert_int_equal(test_ctl(out, sizeof(out), d.admin_socket, "bogus"), 2);
    assert_non_null(strstr(out, "unknown command 'bogus'"));
    assert_int_equal(test_ctl(out, sizeof(out), d.admin_socket, "stats --frob"), 2);
    assert_non_null(strstr(out, "unknown option '--frob'"));
    assert_int_equal(test_cmd(out, sizeof(out), "%s/kvtierctl --version", test_build_dir()), 0);
    assert_string_equal(out, "kvtierctl " KVT_VERSION "\n");
    assert_int_equal(test_ctl(out, sizeof(out), d.admin_socket, "--tier hot stats"), 2);

    /* The data socket is named for what it is. */
    assert_int_equal(test_ctl(out, sizeof(out), d.socket, "health"), 3);
    assert_non_null(strstr(out, "is kvtierd's data socket"));

    /* Without --socket or $KVTIER_ADMIN_SOCKET, from a directory with no
     * var/admin.sock, it says where a `make run` daemon listens. */
    snprintf(args, sizeof(args), "cd '%s' && env -u KVTIER_ADMIN_SOCKET %s/kvtierctl health",
             d.dir, realpath(test_build_dir(), bin));
    struct stat st;
    if (stat("/run/kvtier/admin.sock", &st) != 0) {
        assert_int_equal(test_cmd(out, sizeof(out), "%s", args), 3);
        assert_non_null(strstr(out, "var/admin.sock"));
    }
    daemon_stop(&d);
}

/* kvtierd run in a tree as `make run` runs it: kvtierctl run there finds
 * var/admin.sock without being told. */
static void ctl_finds_the_dev_socket_in_the_tree(void **state)
{
    char dir[256], var[270], sock[300], admin[300], bin[4096];
    struct stat st;
    (void)state;

    if (stat("/run/kvtier/admin.sock", &st) == 0)
        skip();                      /* a system daemon comes first */
    daemon_start(&d, "--hot-bytes", "64M", NULL);
    daemon_stop(&d);
    snprintf(dir, sizeof(dir), "%s", d.dir);
    snprintf(var, sizeof(var), "%s/var", dir);
    assert_int_equal(mkdir(var, 0755), 0);
    snprintf(sock, sizeof(sock), "%s/kvtier.sock", var);
    snprintf(admin, sizeof(admin), "%s/admin.sock", var);
    snprintf(d.socket, sizeof(d.socket), "%s", sock);
    snprintf(d.admin_socket, sizeof(d.admin_socket), "%s", admin);
    daemon_restart(&d, "--hot-bytes", "64M", "--socket", sock, "--admin-socket", admin, NULL);
    assert_non_null(realpath(test_build_dir(), bin));
    assert_int_equal(test_cmd(out, sizeof(out),
                              "cd '%s' && env -u KVTIER_ADMIN_SOCKET %s/kvtierctl health",
                              dir, bin), 0);
    assert_string_equal(out, "serving true\n");
    daemon_stop(&d);
}

static void evict_says_dropped_and_remaining(void **state)
{
    (void)state;
    daemon_start(&d, "--hot-bytes", "64M", NULL);
    store_contexts(3);
    assert_int_equal(test_ctl(out, sizeof(out), d.admin_socket, "evict --context ctx-0"), 0);
    /* One context of one chunk per layer: LAYERS chunks gone, the other
     * two contexts' 2 * LAYERS left. */
    char want[256];
    snprintf(want, sizeof(want),
             "dropped:   %d chunks from the hot tier, 0 records from the cold tier\n"
             "remaining: %d chunks in the hot tier, 0 records in the cold tier\n",
             LAYERS, 2 * LAYERS);
    assert_string_equal(out, want);
    daemon_stop(&d);
}

static void kvtierd_takes_key_equals_value_and_sizes(void **state)
{
    (void)state;
    daemon_start(&d, "--hot-bytes=256MiB", "--max-frame", "2MB", "--hot-quota=1G", NULL);
    assert_int_equal(test_ctl(out, sizeof(out), d.admin_socket, "config get hot-bytes"), 0);
    assert_string_equal(out, "hot-bytes 256M\n");
    assert_int_equal(test_ctl(out, sizeof(out), d.admin_socket, "config get max-frame"), 0);
    assert_string_equal(out, "max-frame 2M\n");
    assert_int_equal(test_ctl(out, sizeof(out), d.admin_socket, "config get hot-quota"), 0);
    assert_string_equal(out, "hot-quota 1G\n");
    assert_int_equal(test_ctl(out, sizeof(out), d.admin_socket, "config set hot-bytes 512M"), 0);
    assert_string_equal(out, "hot-bytes 512M\n");
    assert_int_equal(test_ctl(out, sizeof(out), d.admin_socket, "config set hot-bytes 3000000"), 0);
    assert_string_equal(out, "hot-bytes 3000000\n");       /* not a whole unit: bytes */
    assert_int_equal(test_ctl(out, sizeof(out), d.admin_socket, "config get hot-byte"), 1);
    assert_non_null(strstr(out, "did you mean hot-bytes?"));
    daemon_stop(&d);

    const char *bin = test_build_dir();
    assert_int_equal(test_cmd(out, sizeof(out), "%s/kvtierd --frobnicate", bin), 2);
    assert_non_null(strstr(out, "unknown option '--frobnicate'"));
    assert_int_equal(test_cmd(out, sizeof(out), "%s/kvtierd --hot-byte=1G", bin), 2);
    assert_non_null(strstr(out, "did you mean --hot-bytes?"));
    assert_int_equal(test_cmd(out, sizeof(out), "%s/kvtierd --cold-region 4M", bin), 2);
    assert_non_null(strstr(out, "did you mean --cold-region-bytes?"));
    assert_int_equal(test_cmd(out, sizeof(out), "%s/kvtierd --hot-bytes", bin), 2);
    assert_non_null(strstr(out, "needs a value"));
    assert_int_equal(test_cmd(out, sizeof(out), "%s/kvtierd --hot-bytes=12Q", bin), 2);
    assert_non_null(strstr(out, "hot-bytes: expected a size"));
    assert_int_equal(test_cmd(out, sizeof(out), "%s/kvtierd stray", bin), 2);
    assert_non_null(strstr(out, "unexpected argument 'stray'"));
    assert_int_equal(test_cmd(out, sizeof(out), "%s/kvtierd --cold-bytes 64M --cold-path "
                              "/nonexistent/cold.kvt", bin), 2);
    assert_non_null(strstr(out, "fewer than two cold-region-bytes regions"));
}

/* Threads of pid whose scheduling policy (/proc stat field 41) is
 * SCHED_IDLE. */
static int idle_threads(pid_t pid)
{
    char path[64];
    int n = 0;

    snprintf(path, sizeof(path), "/proc/%d/task", (int)pid);
    DIR *dir = opendir(path);
    assert_non_null(dir);
    for (struct dirent *e; (e = readdir(dir));) {
        char stat[1024], file[400];
        if (e->d_name[0] == '.')
            continue;
        snprintf(file, sizeof(file), "%s/%s/stat", path, e->d_name);
        FILE *f = fopen(file, "r");
        if (!f)
            continue;                 /* the thread ended */
        size_t len = fread(stat, 1, sizeof(stat) - 1, f);
        fclose(f);
        stat[len] = '\0';
        char *p = strrchr(stat, ')');
        for (int field = 2; p && field < 41; field++)
            p = strchr(p + 1, ' ');
        if (p && atoi(p + 1) == SCHED_IDLE)
            n++;
    }
    closedir(dir);
    return n;
}

/* Cold reads' threads run SCHED_IDLE by default (promote-priority idle),
 * as other threads with normal; a bad value is refused by name. */
static void cold_readers_run_idle(void **state)
{
    (void)state;
    char cold_path[300];
    daemon_start(&d, "--hot-bytes", "64M", NULL);
    daemon_stop(&d);
    snprintf(cold_path, sizeof(cold_path), "%s/cold.kvt", d.dir);
    daemon_restart(&d, "--hot-bytes", "64M", "--cold-path", cold_path, "--cold-bytes", "64M",
                   "--cold-region-bytes", "4M", NULL);      /* idle, the default */
    assert_int_equal(test_ctl(out, sizeof(out), d.admin_socket, "config get promote-priority"), 0);
    assert_string_equal(out, "promote-priority idle\n");
    for (int i = 0; i < 100 && idle_threads(d.pid) < 16; i++)
        usleep(10000);                /* each thread sets its own, as it starts */
    assert_int_equal(idle_threads(d.pid), 16);
    daemon_stop(&d);
    daemon_restart(&d, "--hot-bytes", "64M", "--cold-path", cold_path, "--cold-bytes", "64M",
                   "--cold-region-bytes", "4M", "--promote-priority=normal", NULL);
    assert_int_equal(test_ctl(out, sizeof(out), d.admin_socket, "config get promote-priority"), 0);
    assert_string_equal(out, "promote-priority normal\n");
    assert_int_equal(idle_threads(d.pid), 0);
    daemon_stop(&d);
    assert_int_equal(test_cmd(out, sizeof(out), "%s/kvtierd --promote-priority low",
                              test_build_dir()), 2);
    assert_non_null(strstr(out, "promote-priority: expected idle or normal"));
}

/* The text of kvtierd(8)'s paragraph for --KEY, troff markup removed, or
 * NULL when it has none. */
static char *man_paragraph(const char *man, const char *key)
{
    char needle[160];
    size_t at = 0;

    at += (size_t)snprintf(needle, sizeof(needle), "\\-\\-");
    for (const char *k = key; *k && at + 3 < sizeof(needle); k++)
        at += (size_t)snprintf(needle + at, sizeof(needle) - at, *k == '-' ? "\\-" : "%c", *k);
    const char *p = man;
    /* An entry: the line after ".TP" starts with it; --hot-bytes is not
     * --hot-bytes-x. */
    for (; (p = strstr(p, needle)); p += at) {
        const char *line = p;
        while (line > man && line[-1] != '\n')
            line--;
        if (line - man >= 4 && !strncmp(line - 4, ".TP\n", 4) && line[0] == '.' &&
            !isalnum((unsigned char)p[at]) && p[at] != '\\')
            break;
    }
    if (!p)
        return NULL;
    const char *end = strstr(p, "\n.TP");
    const char *sh = strstr(p, "\n.SH");
    if (!end || (sh && sh < end))
        end = sh;
    char *text = calloc(1, (size_t)(end - p) + 1), *o = text;
    for (const char *s = p; s < end; s++) {
        if (*s == '\n' && s[1] == '.') {        /* a macro line: drop the macro */
            s++;
            while (s < end && *s != ' ' && *s != '\n')
                s++;
            *o++ = ' ';
            continue;
        }
        if (*s == '\\' && s[1] == '-') {
            *o++ = '-';
            s++;
        } else if (*s == '\\' && s[1] == 'f') {
            s += 2;
        } else if (*s == '"') {
            continue;
        } else {
            *o++ = *s == '\n' ? ' ' : *s;
        }
    }
    return text;
}

/* Whether a "default X" in text has X == want (trailing ",.;:)" cut). */
static int documents_default(const char *text, const char *want)
{
    for (const char *p = text; (p = strcasestr(p, "default")); p += 7) {
        char word[300];
        const char *w = p + 7;
        while (*w == ' ')
            w++;
        size_t n = strcspn(w, " ");
        snprintf(word, sizeof(word), "%.*s", (int)n, w);
        while (*word && strchr(",.;:)", word[strlen(word) - 1]))
            word[strlen(word) - 1] = '\0';
        if (!strcmp(word, want))
            return 1;
    }
    return 0;
}

static void man_page_defaults_are_the_tables(void **state)
{
    char path[512], *man;
    FILE *f;
    (void)state;

    snprintf(path, sizeof(path), "%s/../docs/man/kvtierd.8", test_build_dir());
    f = fopen(path, "r");
    if (!f)
        f = fopen("docs/man/kvtierd.8", "r");
    assert_non_null(f);
    man = calloc(1, 1 << 20);
    fread(man, 1, (1 << 20) - 1, f);
    fclose(f);
    assert_int_equal(test_cmd(out, sizeof(out), "%s/kvtierd --help", test_build_dir()), 0);
    int keys = 0;
    for (char *line = strtok(out, "\n"); line; line = strtok(NULL, "\n")) {
        char key[128], def[300];
        if (strncmp(line, "  --", 4) || sscanf(line, " --%127s %299s", key, def) != 2)
            continue;
        keys++;
        char *text = man_paragraph(man, key);
        if (!text)
            fail_msg("kvtierd(8) has no entry for --%s", key);
        /* workers defaults to the CPUs the daemon may run on: --help shows
         * this machine's count, the page says what it is counted from. */
        bool per_host = !strcmp(key, "workers") && strcasestr(text, "number of CPUs");
        if (strcmp(def, "(none)") && !per_host && !documents_default(text, def))
            fail_msg("kvtierd(8) does not give --%s's default %s: %s", key, def, text);
        free(text);
    }
    assert_true(keys >= 20);
    free(man);
}

/* Value of kvtier_NAME (a line "kvtier_NAME VALUE") in the metrics text. */
static double metric(const char *text, const char *name)
{
    char needle[256];
    snprintf(needle, sizeof(needle), "\n%s ", name);
    const char *p = strstr(text, needle);
    if (!p)
        fail_msg("metrics have no %s", name);
    return strtod(p + strlen(needle), NULL);
}

static void metrics_are_histograms_with_build_and_start(void **state)
{
    (void)state;
    time_t before = time(NULL);
    /* A cold quota of 1M against 8 contexts of ~1 MiB: the flush drops. */
    char cold_path[300];
    daemon_start(&d, "--hot-bytes", "64M", NULL);
    daemon_stop(&d);
    snprintf(cold_path, sizeof(cold_path), "%s/cold.kvt", d.dir);
    daemon_restart(&d, "--hot-bytes", "64M", "--cold-path", cold_path, "--cold-bytes", "64M",
                   "--cold-region-bytes", "4M", "--cold-quota", "1M", NULL);
    store_contexts(8);
    assert_int_equal(test_ctl(out, sizeof(out), d.admin_socket, "flush"), 0);

    cJSON *r = stats();
    assert_int_equal((int)cJSON_GetObjectItemCaseSensitive(r, "pid")->valuedouble, d.pid);
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(r, "version")->valuestring, KVT_VERSION);
    double up = cJSON_GetObjectItemCaseSensitive(r, "uptime_seconds")->valuedouble;
    assert_true(up >= 0 && up <= (double)(time(NULL) - before) + 1);
    const cJSON *cold = cJSON_GetObjectItemCaseSensitive(r, "cold");
    double drops = cJSON_GetObjectItemCaseSensitive(cold, "quota_drops")->valuedouble;
    assert_true(drops > 0);
    const cJSON *lat = cJSON_GetObjectItemCaseSensitive(r, "latency_us");
    double stores = cJSON_GetObjectItemCaseSensitive(
        cJSON_GetObjectItemCaseSensitive(lat, "store"), "count")->valuedouble;
    double fetches = cJSON_GetObjectItemCaseSensitive(
        cJSON_GetObjectItemCaseSensitive(lat, "fetch"), "count")->valuedouble;
    cJSON_Delete(r);
    assert_true(stores > 0 && fetches > 0);

    assert_int_equal(test_ctl(out, sizeof(out), d.admin_socket, "metrics"), 0);
    assert_non_null(strstr(out, "# TYPE kvtier_request_duration_seconds histogram\n"));
    assert_non_null(strstr(out, "\nkvtier_build_info{version=\"" KVT_VERSION "\"} 1\n"));
    double start = metric(out, "kvtier_process_start_time_seconds");
    assert_true(start >= (double)before - 1 && start <= (double)time(NULL) + 1);
    assert_true(metric(out, "kvtier_cold_quota_drops_total") == drops);
    /* Buckets cumulative and never falling, +Inf == _count == the count. */
    for (const char *const *op = (const char *const[]){ "store", "fetch", NULL }; *op; op++) {
        char needle[128];
        double last = 0;
        int n = 0;
        snprintf(needle, sizeof(needle), "kvtier_request_duration_seconds_bucket{op=\"%s\",le=\"",
                 *op);
        for (const char *p = out; (p = strstr(p, needle)); n++) {
            p = strstr(p, "} ") + 2;
            double v = strtod(p, NULL);
            assert_true(v >= last);
            last = v;
        }
        assert_true(n > 20);
        assert_true(last == (!strcmp(*op, "store") ? stores : fetches));
        snprintf(needle, sizeof(needle), "kvtier_request_duration_seconds_count{op=\"%s\"}", *op);
        assert_true(metric(out, needle) == last);
        snprintf(needle, sizeof(needle), "kvtier_request_duration_seconds_sum{op=\"%s\"}", *op);
        assert_true(metric(out, needle) > 0 && metric(out, needle) < last * 10);
    }
    daemon_stop(&d);
}

static void listings_show_the_cold_tier_after_restart(void **state)
{
    char cold_path[300], args[128];
    (void)state;
    daemon_start(&d, "--hot-bytes", "64M", NULL);
    daemon_stop(&d);
    snprintf(cold_path, sizeof(cold_path), "%s/cold.kvt", d.dir);
    daemon_restart(&d, "--hot-bytes", "64M", "--cold-path", cold_path, "--cold-bytes", "64M",
                   "--cold-region-bytes", "4M", NULL);
    store_contexts(3);
    assert_int_equal(test_ctl(out, sizeof(out), d.admin_socket, "namespaces --json"), 0);
    cJSON *r = cJSON_Parse(out);
    const cJSON *ns = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(r, "namespaces"), 0);
    char *id = strdup(cJSON_GetObjectItemCaseSensitive(ns, "id")->valuestring);
    cJSON_Delete(r);
    daemon_stop(&d);                 /* SIGTERM writes the hot tier to the cold tier */
    daemon_restart(&d, "--hot-bytes", "64M", "--cold-path", cold_path, "--cold-bytes", "64M",
                   "--cold-region-bytes", "4M", NULL);

    /* The names come back from the cold tier, with the data. */
    assert_int_equal(test_ctl(out, sizeof(out), d.admin_socket, "contexts --json"), 0);
    r = cJSON_Parse(out);
    const cJSON *list = cJSON_GetObjectItemCaseSensitive(r, "contexts");
    assert_int_equal(cJSON_GetArraySize(list), 3);
    for (int i = 0; i < 3; i++) {
        const cJSON *e = cJSON_GetArrayItem(list, i);
        char name[16];
        snprintf(name, sizeof(name), "ctx-%d", i);
        assert_string_equal(cJSON_GetObjectItemCaseSensitive(e, "name")->valuestring, name);
        assert_string_equal(cJSON_GetObjectItemCaseSensitive(e, "namespace")->valuestring, id);
        assert_int_equal((int)cJSON_GetObjectItemCaseSensitive(e, "domain")->valuedouble, 0);
        assert_int_equal((int)cJSON_GetObjectItemCaseSensitive(e, "tokens")->valuedouble, TOKENS);
    }
    const cJSON *cold = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(r, "cold"), 0);
    assert_non_null(cold);
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(cold, "namespace")->valuestring, id);
    assert_int_equal((int)cJSON_GetObjectItemCaseSensitive(cold, "objects")->valuedouble, 3);
    assert_int_equal((int)cJSON_GetObjectItemCaseSensitive(cold, "records")->valuedouble,
                     3 * LAYERS);
    assert_int_equal((int)cJSON_GetObjectItemCaseSensitive(cold, "names_listed")->valuedouble, 3);
    cJSON_Delete(r);
    assert_int_equal(test_ctl(out, sizeof(out), d.admin_socket, "contexts"), 0);
    snprintf(args, sizeof(args), "ctx-1  %s  0       256\n", id);
    assert_non_null(strstr(out, args));
    assert_null(strstr(out, "(no context names known"));
    assert_non_null(strstr(out, "cold tier"));
    snprintf(args, sizeof(args), "contexts %s --json", id);
    assert_int_equal(test_ctl(out, sizeof(out), d.admin_socket, args), 0);

    assert_int_equal(test_ctl(out, sizeof(out), d.admin_socket, "namespaces --json"), 0);
    r = cJSON_Parse(out);
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(r, "namespaces")), 1);
    ns = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(r, "namespaces"), 0);
    assert_non_null(ns);
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(ns, "id")->valuestring, id);
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(ns, "name")->valuestring, "cli");
    assert_int_equal((int)cJSON_GetObjectItemCaseSensitive(ns, "layers")->valuedouble, LAYERS);
    assert_int_equal((int)cJSON_GetObjectItemCaseSensitive(ns, "kv_heads")->valuedouble, HEADS);
    assert_int_equal((int)cJSON_GetObjectItemCaseSensitive(ns, "head_dim")->valuedouble, DIM);
    assert_int_equal((int)cJSON_GetObjectItemCaseSensitive(ns, "chunk_tokens")->valuedouble,
                     TOKENS);
    assert_int_equal((int)cJSON_GetObjectItemCaseSensitive(ns, "clients")->valuedouble, 0);
    assert_int_equal((int)cJSON_GetObjectItemCaseSensitive(ns, "cold_objects")->valuedouble, 3);
    cJSON_Delete(r);
    /* They are served: every context reads back. */
    struct test_ctx_shape shape = { LAYERS, TOKENS, HEADS, DIM };
    kvt_model m = test_model("cli", LAYERS, HEADS, DIM, KVT_F16, TOKENS);
    kvt_client *c;
    CHECK_OK(kvt_connect(d.socket, &m, &c));
    for (int i = 0; i < 3; i++)
        assert_int_equal(test_check_context(c, &shape, i), 0);
    kvt_disconnect(c);
    free(id);
    daemon_stop(&d);
}

static int teardown(void **state)
{
    (void)state;
    daemon_cleanup(&d);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(ctl_options_go_anywhere, teardown),
        cmocka_unit_test_teardown(ctl_finds_the_dev_socket_in_the_tree, teardown),
        cmocka_unit_test_teardown(evict_says_dropped_and_remaining, teardown),
        cmocka_unit_test_teardown(kvtierd_takes_key_equals_value_and_sizes, teardown),
        cmocka_unit_test(man_page_defaults_are_the_tables),
        cmocka_unit_test_teardown(cold_readers_run_idle, teardown),
        cmocka_unit_test_teardown(listings_show_the_cold_tier_after_restart, teardown),
        cmocka_unit_test_teardown(metrics_are_histograms_with_build_and_start, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
