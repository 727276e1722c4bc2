/* kvtierctl.c - the operator's command line: one admin-socket request, its
 * reply printed for people (aligned "key value" lines), as raw JSON (--json)
 * or, for `metrics`, in the Prometheus text exposition format.
 *
 * Exit codes: 0 ok, 1 the daemon replied ok:false, 2 usage, 3 cannot reach
 * the daemon.
 */
#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define DEFAULT_ADMIN_SOCKET "/run/kvtier/admin.sock"
#define REPLY_MAX (64u << 20)   /* a sane bound on one reply line */

enum { EXIT_OK = 0, EXIT_DAEMON = 1, EXIT_USAGE = 2, EXIT_CONNECT = 3 };

static void usage(FILE *f)
{
    fprintf(f,
        "Usage: kvtierctl [--socket ADMIN_PATH] [--json] COMMAND [ARGS]\n"
        "  stats                       tier sizes, hit/miss, traffic\n"
        "  metrics                     the same in Prometheus text format\n"
        "  namespaces | clients\n"
        "  contexts [NS]               named contexts stored since the daemon started\n"
        "  evict --context NAME [--namespace NS] | --namespace NS | --tier hot|cold|all\n"
        "  flush                       hot tier to cold tier, fsynced; returns when done\n"
        "  config get [KEY] | config set KEY VALUE\n"
        "  health                      exit 0 when the daemon is serving\n"
        "The admin socket is $KVTIER_ADMIN_SOCKET, else " DEFAULT_ADMIN_SOCKET ".\n");
}

/* ---- requests ------------------------------------------------------------------ */

/* A context name as the shell gave it. JSON text is UTF-8, so a name with
 * any byte past ASCII (perhaps not UTF-8: `contexts` shows such bytes as
 * \xNN, and $'...' in the shell turns that back into the bytes) travels as
 * its exact bytes in hex. */
static void add_context(cJSON *req, const char *name)
{
    static const char digits[] = "0123456789abcdef";
    size_t len = strlen(name);
    bool ascii = true;
    char *hex;

    for (size_t i = 0; i < len; i++)
        ascii &= (unsigned char)name[i] < 0x80;
    hex = ascii ? NULL : malloc(2 * len + 1);
    if (!hex) {                      /* out of memory: the daemon will say why */
        cJSON_AddStringToObject(req, "context", name);
        return;
    }
    for (size_t i = 0; i < len; i++) {
        hex[2 * i] = digits[(unsigned char)name[i] >> 4];
        hex[2 * i + 1] = digits[(unsigned char)name[i] & 15];
    }
    hex[2 * len] = '\0';
    cJSON_AddStringToObject(req, "context_hex", hex);
    free(hex);
}

/* Build the request for argv (the command and its arguments). Returns NULL
 * after printing a usage error. */
static cJSON *build_request(int argc, char **argv, const char **cmd_out)
{
    const char *cmd = argv[0];
    cJSON *req = cJSON_CreateObject();

    *cmd_out = cmd;
    if (!strcmp(cmd, "stats") || !strcmp(cmd, "metrics") || !strcmp(cmd, "namespaces") ||
        !strcmp(cmd, "clients") || !strcmp(cmd, "flush") || !strcmp(cmd, "health")) {
        if (argc != 1)
            goto bad;
        cJSON_AddStringToObject(req, "cmd", strcmp(cmd, "metrics") ? cmd : "stats");
        return req;
    }
    if (!strcmp(cmd, "contexts")) {
        if (argc > 2)
            goto bad;
        cJSON_AddStringToObject(req, "cmd", "contexts");
        if (argc == 2)
            cJSON_AddStringToObject(req, "namespace", argv[1]);
        return req;
    }
    if (!strcmp(cmd, "evict")) {
        cJSON_AddStringToObject(req, "cmd", "evict");
        for (int i = 1; i < argc; i += 2) {
            const char *opt = argv[i];
            if (i + 1 >= argc)
                goto bad;
            if (!strcmp(opt, "--context"))
                add_context(req, argv[i + 1]);
            else if (!strcmp(opt, "--namespace"))
                cJSON_AddStringToObject(req, "namespace", argv[i + 1]);
            else if (!strcmp(opt, "--tier"))
                cJSON_AddStringToObject(req, "tier", argv[i + 1]);
            else
                goto bad;
        }
        bool ctx = cJSON_HasObjectItem(req, "context") || cJSON_HasObjectItem(req, "context_hex"),
             ns = cJSON_HasObjectItem(req, "namespace"),
             tier = cJSON_HasObjectItem(req, "tier");
        if ((tier && (ctx || ns)) || (!tier && !ctx && !ns))
            goto bad;
        return req;
    }
    if (!strcmp(cmd, "config") && argc >= 2) {
        cJSON_AddStringToObject(req, "cmd", "config");
        if (!strcmp(argv[1], "get") && argc <= 3) {
            cJSON_AddStringToObject(req, "op", "get");
            if (argc == 3)
                cJSON_AddStringToObject(req, "key", argv[2]);
            return req;
        }
        if (!strcmp(argv[1], "set") && argc == 4) {
            cJSON_AddStringToObject(req, "op", "set");
            cJSON_AddStringToObject(req, "key", argv[2]);
            cJSON_AddStringToObject(req, "value", argv[3]);
            return req;
        }
    }
bad:
    fprintf(stderr, "kvtierctl: bad arguments for '%s'\n", cmd);
    usage(stderr);
    cJSON_Delete(req);
    return NULL;
}

/* ---- transport ------------------------------------------------------------------ */

static int connect_admin(const char *path)
{
    struct sockaddr_un sa = { .sun_family = AF_UNIX };

    if (strlen(path) >= sizeof(sa.sun_path))
        return -ENAMETOOLONG;
    memcpy(sa.sun_path, path, strlen(path) + 1);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        int rc = -errno;
        close(fd);
        return rc;
    }
    return fd;
}

static int send_line(int fd, const char *text)
{
    size_t len = strlen(text);
    for (size_t at = 0; at < len;) {
        ssize_t n = send(fd, text + at, len - at, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -errno;
        at += (size_t)n;
    }
    return send(fd, "\n", 1, MSG_NOSIGNAL) == 1 ? 0 : -errno;
}

/* Lines from the daemon. A flush with progress sends several lines in a
 * row, so what one recv returns past a newline is kept for the next. */
struct line_reader {
    int fd;
    char *buf;
    size_t len, cap, next;           /* next: start of what follows a line */
};

/* The next line, NUL-terminated, into *out (valid until the next call).
 * Returns 0, or -ECONNRESET when the daemon closed the connection first. */
static int read_line(struct line_reader *r, char **out)
{
    if (r->next) {                   /* drop the line returned last time */
        memmove(r->buf, r->buf + r->next, r->len - r->next);
        r->len -= r->next;
        r->next = 0;
    }
    for (size_t scanned = 0;;) {
        char *nl = r->len > scanned ? memchr(r->buf + scanned, '\n', r->len - scanned) : NULL;
        if (nl) {
            *nl = '\0';
            r->next = (size_t)(nl - r->buf) + 1;
            *out = r->buf;
            return 0;
        }
        scanned = r->len;
        if (r->len + 1 >= r->cap) {
            size_t cap = r->cap ? r->cap * 2 : 4096;
            char *bigger = cap <= REPLY_MAX ? realloc(r->buf, cap) : NULL;
            if (!bigger)
                return -ECONNRESET;
            r->buf = bigger;
            r->cap = cap;
        }
        ssize_t n = recv(r->fd, r->buf + r->len, r->cap - r->len - 1, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -ECONNRESET;
        r->len += (size_t)n;
    }
}

/* A long command's progress line, redrawn in place on the terminal. */
static void show_progress(const cJSON *progress)
{
    const cJSON *what = cJSON_GetObjectItemCaseSensitive(progress, "command");
    const cJSON *d = cJSON_GetObjectItemCaseSensitive(progress, "done");
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(progress, "total");
    double done = cJSON_IsNumber(d) ? d->valuedouble : 0;
    double total = cJSON_IsNumber(t) ? t->valuedouble : 0;
    bool flush = cJSON_IsString(what) && !strcmp(what->valuestring, "flush");

    fprintf(stderr, "\r%s: %.0f of %.0f chunks %s (%3.0f%%)", flush ? "flushing" : "evicting",
            done, total, flush ? "written" : "freed", total > 0 ? 100.0 * done / total : 100.0);
    fflush(stderr);
}

/* ---- human output ------------------------------------------------------------------ */

static void format_value(const cJSON *v, char *buf, size_t len)
{
    if (cJSON_IsNumber(v)) {
        double d = v->valuedouble;
        if (d == floor(d) && fabs(d) < 9007199254740992.0)
            snprintf(buf, len, "%.0f", d);
        else
            snprintf(buf, len, "%.3f", d);
    } else if (cJSON_IsString(v)) {
        snprintf(buf, len, "%s", v->valuestring);
    } else if (cJSON_IsBool(v)) {
        snprintf(buf, len, "%s", cJSON_IsTrue(v) ? "true" : "false");
    } else if (!v || cJSON_IsNull(v)) {
        snprintf(buf, len, "-");
    } else {
        char *s = cJSON_PrintUnformatted(v);
        snprintf(buf, len, "%s", s ? s : "?");
        cJSON_free(s);
    }
}

/* Width of the longest dotted key under obj, for alignment. */
static size_t key_width(const cJSON *obj, size_t prefix)
{
    size_t w = 0;
    for (const cJSON *it = obj->child; it; it = it->next) {
        size_t k = prefix + strlen(it->string);
        if (cJSON_IsObject(it))
            k = key_width(it, k + 1);
        if (k > w)
            w = k;
    }
    return w;
}

/* Scalars as "key value" lines, nested objects with dotted keys. */
static void print_flat(const cJSON *obj, const char *prefix, int width)
{
    char key[256], val[1024];

    for (const cJSON *it = obj->child; it; it = it->next) {
        if (!*prefix && !strcmp(it->string, "ok"))
            continue;
        snprintf(key, sizeof(key), "%s%s%s", prefix, *prefix ? "." : "", it->string);
        if (cJSON_IsObject(it)) {
            print_flat(it, key, width);
        } else if (!cJSON_IsArray(it)) {
            format_value(it, val, sizeof(val));
            printf("%-*s %s\n", width, key, val);
        }
    }
}

/* Whether a member is the hex twin of a name ("name_hex"): that is for
 * scripts (--json); a table shows the name's escaped form alone. */
static bool is_hex_twin(const char *key)
{
    size_t len = strlen(key);
    return len > 4 && !strcmp(key + len - 4, "_hex");
}

/* An array of objects as a table with a header row, columns aligned. The
 * columns are the first row's members, looked up by name in each row (a
 * row may have members the first has not, or lack some). */
static void print_table(const cJSON *rows)
{
    const cJSON *first = rows->child;
    const char *col[32];
    char val[1024];
    int width[32] = { 0 }, ncol = 0;

    if (!first) {
        printf("(none)\n");
        return;
    }
    for (const cJSON *c = first->child; c && ncol < 32; c = c->next) {
        if (is_hex_twin(c->string))
            continue;
        col[ncol] = c->string;
        width[ncol++] = (int)strlen(c->string);
    }
    for (const cJSON *r = rows->child; r; r = r->next) {
        for (int i = 0; i < ncol; i++) {
            format_value(cJSON_GetObjectItemCaseSensitive(r, col[i]), val, sizeof(val));
            if ((int)strlen(val) > width[i])
                width[i] = (int)strlen(val);
        }
    }
    for (int i = 0; i < ncol; i++)
        printf("%-*s%s", i + 1 < ncol ? width[i] : 0, col[i], i + 1 < ncol ? "  " : "\n");
    for (const cJSON *r = rows->child; r; r = r->next) {
        for (int i = 0; i < ncol; i++) {
            format_value(cJSON_GetObjectItemCaseSensitive(r, col[i]), val, sizeof(val));
            /* The last column unpadded: no trailing blanks. */
            printf("%-*s%s", i + 1 < ncol ? width[i] : 0, val, i + 1 < ncol ? "  " : "\n");
        }
    }
}

static void print_human(const char *cmd, const cJSON *reply)
{
    const cJSON *config = cJSON_GetObjectItemCaseSensitive(reply, "config");
    const cJSON *key = cJSON_GetObjectItemCaseSensitive(reply, "key");
    const cJSON *value = cJSON_GetObjectItemCaseSensitive(reply, "value");

    if (!strcmp(cmd, "config") && cJSON_IsObject(config)) {
        print_flat(config, "", (int)key_width(config, 0));
        return;
    }
    if (!strcmp(cmd, "config") && cJSON_IsString(key) && cJSON_IsString(value)) {
        printf("%s %s\n", key->valuestring, value->valuestring);
        return;
    }
    if (!strcmp(cmd, "flush")) {
        const cJSON *n = cJSON_GetObjectItemCaseSensitive(reply, "chunks_written");
        printf("flushed: %.0f chunks written, cold file synced\n",
               cJSON_IsNumber(n) ? n->valuedouble : 0);
        return;
    }
    if (!strcmp(cmd, "contexts")) {
        const cJSON *list = cJSON_GetObjectItemCaseSensitive(reply, "contexts");
        const cJSON *untracked = cJSON_GetObjectItemCaseSensitive(reply, "untracked");
        if (cJSON_IsArray(list))
            print_table(list);
        if (cJSON_IsNumber(untracked) && untracked->valuedouble > 0)
            printf("(%.0f stores named a context past the per-namespace limit of "
                   "names; those names are not listed)\n", untracked->valuedouble);
        return;
    }
    print_flat(reply, "", (int)key_width(reply, 0));
    for (const cJSON *it = reply->child; it; it = it->next)
        if (cJSON_IsArray(it))
            print_table(it);
    /* The pool's servers, one row each with its state. */
    const cJSON *servers = cJSON_GetObjectItemCaseSensitive(
        cJSON_GetObjectItemCaseSensitive(reply, "remote"), "servers");
    if (cJSON_IsArray(servers)) {
        printf("remote servers:\n");
        print_table(servers);
    }
}

/* ---- Prometheus ---------------------------------------------------------------------- */

struct metric {
    const char *section;     /* NULL: top level of the stats reply */
    const char *field;
    const char *name;        /* after the kvtier_ prefix */
    const char *type;
    const char *help;
};

static const struct metric metrics[] = {
    { "hot", "budget_bytes", "hot_budget_bytes", "gauge", "Byte budget of the RAM tier." },
    { "hot", "used_bytes", "hot_used_bytes", "gauge", "Bytes held by the RAM tier." },
    { "hot", "pooled_bytes", "hot_pooled_bytes", "gauge", "Free data blocks kept for reuse (within the budget)." },
    { "hot", "block_reuses", "hot_block_reuses_total", "counter", "New chunks that reused a freed block." },
    { "hot", "chunks", "hot_chunks", "gauge", "Chunks in the RAM tier." },
    { "hot", "evictions", "hot_evictions_total", "counter", "Chunks dropped from the RAM tier for space." },
    { "hot", "hits", "hot_hits_total", "counter", "Fetched chunk segments found in RAM." },
    { "hot", "misses", "hot_misses_total", "counter", "Fetched chunk segments not in RAM (promoted or absent)." },
    { "cold", "capacity_bytes", "cold_capacity_bytes", "gauge", "Size of the cold tier file." },
    { "cold", "used_bytes", "cold_used_bytes", "gauge", "Live record bytes on the cold tier." },
    { "cold", "records", "cold_records", "gauge", "Live records on the cold tier." },
    { "cold", "puts", "cold_puts_total", "counter", "Records written to the cold tier." },
    { "cold", "gets", "cold_gets_total", "counter", "Record reads from the cold tier." },
    { "cold", "hits", "cold_hits_total", "counter", "Cold tier lookups that found a record." },
    { "cold", "misses", "cold_misses_total", "counter", "Cold tier lookups that found nothing." },
    { "cold", "bytes_written", "cold_written_bytes_total", "counter", "File bytes written, after compression." },
    { "cold", "bytes_read", "cold_read_bytes_total", "counter", "File bytes read." },
    { "cold", "raw_bytes_in", "cold_raw_bytes_total", "counter", "Payload bytes before compression." },
    { "cold", "compression_ratio", "cold_compression_ratio", "gauge", "Raw bytes in per file byte written." },
    { "cold", "checksum_failures", "cold_checksum_failures_total", "counter", "Records that failed their checksum." },
    { "cold", "io_errors", "cold_io_errors_total", "counter", "Cold tier I/O errors." },
    { "cold", "records_unwritten", "cold_records_unwritten_total", "counter", "Chunk records whose write failed (written again while in RAM)." },
    { "cold", "records_lost", "cold_records_lost_total", "counter", "Chunk records lost: their write failed after they left RAM." },
    { "cold", "regions_reclaimed", "cold_regions_reclaimed_total", "counter", "Cold file regions reclaimed." },
    { "cold", "uring", "cold_uring", "gauge", "1 when the cold tier uses io_uring." },
    { "tiers", "demotions", "demotions_total", "counter", "Chunks written from the RAM tier to the cold tier." },
    { "tiers", "promotions", "promotions_total", "counter", "Chunks read back from the cold tier." },
    { "tiers", "demote_errors", "demote_errors_total", "counter", "Chunks that could not be written to the cold tier." },
    { "remote", "gets", "remote_gets_total", "counter", "Records asked of the remote pool." },
    { "remote", "hits", "remote_hits_total", "counter", "Remote records found and valid." },
    { "remote", "misses", "remote_misses_total", "counter", "Remote records absent, rejected or not answered in time." },
    { "remote", "rejected", "remote_rejected_total", "counter", "Remote records that failed their seal or checksum (misses)." },
    { "remote", "errors", "remote_errors_total", "counter", "Remote reads that met a failing or slow server." },
    { "remote", "puts", "remote_puts_total", "counter", "Records written through to the pool." },
    { "remote", "put_errors", "remote_put_errors_total", "counter", "Writes to the pool that failed." },
    { "remote", "too_large", "remote_too_large_total", "counter", "Records a server refused as larger than its item size (-I)." },
    { "remote", "put_dropped", "remote_put_dropped_total", "counter", "Writes dropped because the queue was full." },
    { "remote", "queued", "remote_queued", "gauge", "Writes waiting for the pool." },
    { "remote", "bytes_read", "remote_read_bytes_total", "counter", "Record bytes read from the pool." },
    { "remote", "bytes_written", "remote_written_bytes_total", "counter", "Record bytes written to the pool." },
    { "remote", "promotions", "remote_promotions_total", "counter", "Chunks brought into RAM from the pool." },
    { "remote", "get_us_mean", "remote_get_latency_mean_us", "gauge", "Mean time of one read call to the pool." },
    { "remote", "get_us_max", "remote_get_latency_max_us", "gauge", "Longest read call to the pool." },
    { "remote", "put_us_mean", "remote_put_latency_mean_us", "gauge", "Mean time of one record write." },
    { "remote", "put_us_max", "remote_put_latency_max_us", "gauge", "Longest record write." },
    { "remote", "sealed", "remote_sealed", "gauge", "1 when records are sealed with remote-key-file." },
    { NULL, "clients", "clients", "gauge", "Connected data clients." },
    { NULL, "requests", "requests_total", "counter", "Data requests served." },
    { NULL, "stores", "stores_total", "counter", "Successful store requests." },
    { NULL, "fetches", "fetches_total", "counter", "Successful fetch requests." },
    { NULL, "bytes_in", "stored_bytes_total", "counter", "K/V bytes received from clients." },
    { NULL, "bytes_out", "fetched_bytes_total", "counter", "K/V bytes sent to clients." },
    { "connections", "refused_max_clients", "connections_refused_max_clients_total", "counter", "Connections refused at max-clients." },
    { "connections", "refused_per_uid", "connections_refused_per_uid_total", "counter", "Connections refused at max-clients-per-uid." },
    { "connections", "refused_unanswered", "connections_refused_unanswered_total", "counter", "Refused connections closed without a reply." },
    { "connections", "attach_timeouts", "connections_attach_timeouts_total", "counter", "Connections closed for not attaching within attach-timeout-ms." },
    { "connections", "accept_fd_shortages", "connections_accept_fd_shortages_total", "counter", "Accepts that failed for lack of fds or memory." },
};

/* One series per pool server and counter, labelled with its address. */
static void print_remote_servers(const cJSON *remote)
{
    static const char *const field[] = { "hits", "misses", "errors", "bytes_read",
                                         "bytes_written" };
    const cJSON *servers = cJSON_GetObjectItemCaseSensitive(remote, "servers"), *s;

    if (!cJSON_IsArray(servers))
        return;
    printf("# HELP kvtier_remote_server_up 1 when the server's last operation succeeded.\n"
           "# TYPE kvtier_remote_server_up gauge\n");
    cJSON_ArrayForEach(s, servers) {
        const char *host = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(s, "host"));
        const char *state = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(s, "state"));
        double port = cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(s, "port"));
        printf("kvtier_remote_server_up{server=\"%s:%.0f\"} %d\n", host ? host : "?", port,
               state && !strcmp(state, "up"));
    }
    for (size_t f = 0; f < sizeof(field) / sizeof(field[0]); f++) {
        printf("# HELP kvtier_remote_server_%s_total Per-server %s of the remote pool.\n"
               "# TYPE kvtier_remote_server_%s_total counter\n", field[f], field[f], field[f]);
        cJSON_ArrayForEach(s, servers) {
            const char *host = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(s, "host"));
            double port = cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(s, "port"));
            double v = cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(s, field[f]));
            printf("kvtier_remote_server_%s_total{server=\"%s:%.0f\"} %.0f\n", field[f],
                   host ? host : "?", port, v);
        }
    }
}

static void print_metrics(const cJSON *reply)
{
    char val[64];

    for (size_t i = 0; i < sizeof(metrics) / sizeof(metrics[0]); i++) {
        const struct metric *m = &metrics[i];
        const cJSON *obj = m->section ? cJSON_GetObjectItemCaseSensitive(reply, m->section) : reply;
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, m->field);
        if (!v)
            continue;      /* no cold tier: its metrics are absent */
        if (cJSON_IsBool(v))
            snprintf(val, sizeof(val), "%d", cJSON_IsTrue(v) ? 1 : 0);
        else
            format_value(v, val, sizeof(val));
        printf("# HELP kvtier_%s %s\n# TYPE kvtier_%s %s\nkvtier_%s %s\n",
               m->name, m->help, m->name, m->type, m->name, val);
    }
    const cJSON *lat = cJSON_GetObjectItemCaseSensitive(reply, "latency_us");
    printf("# HELP kvtier_request_latency_us Store/fetch latency percentiles (log2 bucket upper bounds).\n"
           "# TYPE kvtier_request_latency_us gauge\n");
    for (const char *const *op = (const char *const[]){ "store", "fetch", NULL }; *op; op++) {
        const cJSON *h = cJSON_GetObjectItemCaseSensitive(lat, *op);
        static const char *const field[] = { "p50", "p99", "p999" };
        static const char *const quantile[] = { "0.5", "0.99", "0.999" };
        for (size_t q = 0; q < 3; q++) {
            const cJSON *v = cJSON_GetObjectItemCaseSensitive(h, field[q]);
            if (cJSON_IsNumber(v))
                printf("kvtier_request_latency_us{op=\"%s\",quantile=\"%s\"} %.0f\n",
                       *op, quantile[q], v->valuedouble);
        }
    }
    const cJSON *domains = cJSON_GetObjectItemCaseSensitive(reply, "domains");
    static const char *const tier[] = { "hot", "cold" };
    for (size_t t = 0; t < 2; t++) {
        printf("# HELP kvtier_domain_%s_bytes Bytes a sharing domain holds in the %s tier.\n"
               "# TYPE kvtier_domain_%s_bytes gauge\n", tier[t], tier[t], tier[t]);
        const cJSON *dom;
        cJSON_ArrayForEach(dom, domains) {
            char field[16];
            snprintf(field, sizeof(field), "%s_bytes", tier[t]);
            const cJSON *id = cJSON_GetObjectItemCaseSensitive(dom, "domain");
            const cJSON *v = cJSON_GetObjectItemCaseSensitive(dom, field);
            if (cJSON_IsNumber(id) && cJSON_IsNumber(v))
                printf("kvtier_domain_%s_bytes{domain=\"%.0f\"} %.0f\n", tier[t],
                       id->valuedouble, v->valuedouble);
        }
    }
    print_remote_servers(cJSON_GetObjectItemCaseSensitive(reply, "remote"));
    printf("# HELP kvtier_cold_enabled 1 when the daemon has a cold tier.\n"
           "# TYPE kvtier_cold_enabled gauge\nkvtier_cold_enabled %d\n",
           cJSON_IsObject(cJSON_GetObjectItemCaseSensitive(reply, "cold")));
}

/* ---- main ------------------------------------------------------------------------------ */

int main(int argc, char **argv)
{
    const char *path = getenv("KVTIER_ADMIN_SOCKET");
    const char *cmd;
    bool json = false;
    char *line = NULL, *text = NULL;
    struct line_reader reader = { .fd = -1 };
    bool progress = false;
    cJSON *req = NULL, *reply = NULL;
    int i, fd = -1, rc = EXIT_OK;

    if (!path || !*path)
        path = DEFAULT_ADMIN_SOCKET;
    for (i = 1; i < argc && argv[i][0] == '-'; i++) {
        if (!strcmp(argv[i], "--json")) {
            json = true;
        } else if (!strcmp(argv[i], "--socket") && i + 1 < argc) {
            path = argv[++i];
        } else if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            usage(stdout);
            return EXIT_OK;
        } else {
            fprintf(stderr, "kvtierctl: unknown option '%s'\n", argv[i]);
            usage(stderr);
            return EXIT_USAGE;
        }
    }
    if (i == argc) {
        usage(stderr);
        return EXIT_USAGE;
    }
    req = build_request(argc - i, argv + i, &cmd);
    if (!req)
        return EXIT_USAGE;

    fd = connect_admin(path);
    if (fd < 0) {
        fprintf(stderr, "kvtierctl: cannot connect to %s: %s\n", path, strerror(-fd));
        rc = EXIT_CONNECT;
        goto out;
    }
    /* Progress is for a person watching; scripts get the reply alone. */
    if ((!strcmp(cmd, "flush") || !strcmp(cmd, "evict")) && isatty(STDERR_FILENO)) {
        progress = true;
        cJSON_AddBoolToObject(req, "progress", true);
    }
    text = cJSON_PrintUnformatted(req);
    reader.fd = fd;
    /* A refused peer is answered at accept, perhaps before our request
     * goes out (the send then fails): the reply is read whatever happened. */
    if (text)
        send_line(fd, text);
    for (;;) {
        if (!text || read_line(&reader, &line)) {
            if (progress)
                fputc('\n', stderr);
            fprintf(stderr, "kvtierctl: %s: the daemon closed the connection without a reply\n",
                    path);
            rc = EXIT_CONNECT;
            goto out;
        }
        reply = cJSON_Parse(line);
        const cJSON *p = cJSON_GetObjectItemCaseSensitive(reply, "progress");
        if (!cJSON_IsObject(p) || cJSON_HasObjectItem(reply, "ok"))
            break;
        if (progress)
            show_progress(p);
        cJSON_Delete(reply);
        reply = NULL;
    }
    if (progress)
        fputc('\n', stderr);
    if (!cJSON_IsObject(reply)) {
        fprintf(stderr, "kvtierctl: the daemon's reply is not JSON: %.200s\n", line);
        rc = EXIT_DAEMON;
        goto out;
    }
    if (!cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(reply, "ok"))) {
        const cJSON *err = cJSON_GetObjectItemCaseSensitive(reply, "error");
        if (json)
            printf("%s\n", line);
        fprintf(stderr, "kvtierctl: %s\n",
                cJSON_IsString(err) ? err->valuestring : "the daemon refused the request");
        rc = EXIT_DAEMON;
        goto out;
    }
    if (json)
        printf("%s\n", line);
    else if (!strcmp(cmd, "metrics"))
        print_metrics(reply);
    else
        print_human(cmd, reply);
out:
    cJSON_Delete(reply);
    cJSON_Delete(req);
    cJSON_free(text);
    free(reader.buf);
    if (fd >= 0)
        close(fd);
    return rc;
}
