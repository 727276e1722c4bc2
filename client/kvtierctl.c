/* kvtierctl.c - the operator's command line: one admin-socket request, its
 * reply printed for people (aligned "key value" lines), as raw JSON (--json)
 * or, for `metrics`, in the Prometheus text exposition format.
 *
 * Exit codes: 0 ok, 1 the daemon replied ok:false, 2 usage, 3 cannot reach
 * the daemon.
 */
#include <cjson/cJSON.h>
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "client/kvtierctl.h"

#define DEFAULT_ADMIN_SOCKET "/run/kvtier/admin.sock"
#define DEV_ADMIN_SOCKET "var/admin.sock"   /* kvtierd --dev, run in the tree */
#define REPLY_MAX (64u << 20)   /* a sane bound on one reply line */

enum { EXIT_OK = 0, EXIT_DAEMON = 1, EXIT_USAGE = 2, EXIT_CONNECT = 3 };

static void usage(FILE *f)
{
    fprintf(f,
        "Usage: kvtierctl [--socket ADMIN_PATH] [--json] COMMAND [ARGS]   (options anywhere)\n"
        "  stats                       tier sizes, hit/miss, traffic, pid, uptime, version\n"
        "  metrics                     the same in Prometheus text format\n"
        "  namespaces | clients\n"
        "  contexts [NS]               named contexts, and what the cold tier holds\n"
        "  evict --context NAME [--namespace NS] | --namespace NS | --tier hot|cold|all\n"
        "  flush                       hot tier to cold tier, fsynced; returns when done\n"
        "  config get [KEY] | config set KEY VALUE | config rewrite\n"
        "  health                      exit 0 when the daemon is serving\n"
        "  --version, --help\n"
        "The admin socket is --socket, else $KVTIER_ADMIN_SOCKET, else " DEFAULT_ADMIN_SOCKET
        ",\nelse " DEV_ADMIN_SOCKET " (what `make run` creates) when that exists.\n");
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

/* The command line: options may come before or after the command. */
struct cmdline {
    const char *socket;              /* NULL: find one (admin_socket_path) */
    bool json;
    const char *context, *ns, *tier; /* evict's options */
    int argc;                        /* the command and its arguments */
    char **argv;
};

static const char *const commands[] = {
    "stats", "metrics", "namespaces", "clients", "contexts", "evict", "flush", "config",
    "health", NULL,
};

static bool known_command(const char *cmd)
{
    for (const char *const *c = commands; *c; c++)
        if (!strcmp(*c, cmd))
            return true;
    return false;
}

static int bad_args(const char *cmd, const char *why)
{
    fprintf(stderr, "kvtierctl: %s: %s\n", cmd, why);
    usage(stderr);
    return -EINVAL;
}

/* Build the request for the command line into *out. Returns 0, or -EINVAL
 * after printing a usage error. */
static int build_request(const struct cmdline *cl, cJSON **out)
{
    const char *cmd = cl->argv[0];
    int argc = cl->argc;
    char **argv = cl->argv;
    bool evict = !strcmp(cmd, "evict");
    cJSON *req;

    if (!known_command(cmd)) {
        fprintf(stderr, "kvtierctl: unknown command '%s'\n", cmd);
        usage(stderr);
        return -EINVAL;
    }
    if (!evict && (cl->context || cl->ns || cl->tier))
        return bad_args(cmd, "--context, --namespace and --tier are for evict");
    req = cJSON_CreateObject();
    *out = req;
    if (!strcmp(cmd, "stats") || !strcmp(cmd, "metrics") || !strcmp(cmd, "namespaces") ||
        !strcmp(cmd, "clients") || !strcmp(cmd, "flush") || !strcmp(cmd, "health")) {
        if (argc != 1)
            goto extra;
        cJSON_AddStringToObject(req, "cmd", strcmp(cmd, "metrics") ? cmd : "stats");
        return 0;
    }
    if (!strcmp(cmd, "contexts")) {
        if (argc > 2)
            goto extra;
        cJSON_AddStringToObject(req, "cmd", "contexts");
        if (argc == 2)
            cJSON_AddStringToObject(req, "namespace", argv[1]);
        return 0;
    }
    if (evict) {
        if (argc != 1)
            goto extra;
        if ((cl->tier && (cl->context || cl->ns)) || (!cl->tier && !cl->context && !cl->ns)) {
            cJSON_Delete(req);
            *out = NULL;
            return bad_args(cmd, "give --context NAME [--namespace NS], --namespace NS "
                            "or --tier hot|cold|all");
        }
        cJSON_AddStringToObject(req, "cmd", "evict");
        if (cl->context)
            add_context(req, cl->context);
        if (cl->ns)
            cJSON_AddStringToObject(req, "namespace", cl->ns);
        if (cl->tier)
            cJSON_AddStringToObject(req, "tier", cl->tier);
        return 0;
    }
    /* config */
    cJSON_AddStringToObject(req, "cmd", "config");
    if (argc >= 2 && !strcmp(argv[1], "get") && argc <= 3) {
        cJSON_AddStringToObject(req, "op", "get");
        if (argc == 3)
            cJSON_AddStringToObject(req, "key", argv[2]);
        return 0;
    }
    if (argc == 4 && !strcmp(argv[1], "set")) {
        cJSON_AddStringToObject(req, "op", "set");
        cJSON_AddStringToObject(req, "key", argv[2]);
        cJSON_AddStringToObject(req, "value", argv[3]);
        return 0;
    }
    if (argc == 2 && !strcmp(argv[1], "rewrite")) {
        cJSON_AddStringToObject(req, "op", "rewrite");
        return 0;
    }
    cJSON_Delete(req);
    *out = NULL;
    return bad_args(cmd, "expected get [KEY], set KEY VALUE or rewrite");
extra:
    cJSON_Delete(req);
    *out = NULL;
    return bad_args(cmd, "unexpected arguments");
}

/* Parse options anywhere on the line (getopt_long permutes them to the
 * front). Returns 0, 1 when --help or --version was answered, or -EINVAL
 * after a usage error. */
static int parse_cmdline(int argc, char **argv, struct cmdline *cl)
{
    enum { OPT_CONTEXT = 256, OPT_NAMESPACE, OPT_TIER };
    static const struct option opts[] = {
        { "socket",    required_argument, NULL, 's' },
        { "json",      no_argument,       NULL, 'j' },
        { "help",      no_argument,       NULL, 'h' },
        { "version",   no_argument,       NULL, 'V' },
        { "context",   required_argument, NULL, OPT_CONTEXT },
        { "namespace", required_argument, NULL, OPT_NAMESPACE },
        { "tier",      required_argument, NULL, OPT_TIER },
        { NULL, 0, NULL, 0 },
    };
    int o;

    memset(cl, 0, sizeof(*cl));
    opterr = 0;
    while ((o = getopt_long(argc, argv, ":s:jhV", opts, NULL)) != -1) {
        switch (o) {
        case 's': cl->socket = optarg; break;
        case 'j': cl->json = true; break;
        case 'h': usage(stdout); return 1;
        case 'V': printf("kvtierctl %s\n", KVT_VERSION); return 1;
        case OPT_CONTEXT: cl->context = optarg; break;
        case OPT_NAMESPACE: cl->ns = optarg; break;
        case OPT_TIER: cl->tier = optarg; break;
        case ':':
            fprintf(stderr, "kvtierctl: option '%s' needs a value\n", argv[optind - 1]);
            usage(stderr);
            return -EINVAL;
        default:
            fprintf(stderr, "kvtierctl: unknown option '%s'\n", argv[optind - 1]);
            usage(stderr);
            return -EINVAL;
        }
    }
    if (optind == argc) {
        fprintf(stderr, "kvtierctl: no command given\n");
        usage(stderr);
        return -EINVAL;
    }
    cl->argc = argc - optind;
    cl->argv = argv + optind;
    return 0;
}

static bool exists(const char *path)
{
    return access(path, F_OK) == 0;
}

/* --socket, else $KVTIER_ADMIN_SOCKET, else the production path; when that
 * does not exist, a `make run` daemon's socket in the current directory. */
static const char *admin_socket_path(const struct cmdline *cl)
{
    const char *env = getenv("KVTIER_ADMIN_SOCKET");

    if (cl->socket)
        return cl->socket;
    if (env && *env)
        return env;
    if (!exists(DEFAULT_ADMIN_SOCKET) && exists(DEV_ADMIN_SOCKET))
        return DEV_ADMIN_SOCKET;
    return DEFAULT_ADMIN_SOCKET;
}

/* Why the admin socket at path cannot be reached, with where to look. */
static void say_cannot_connect(const char *path, int err)
{
    if (err == -EPROTOTYPE) {
        fprintf(stderr, "kvtierctl: %s is kvtierd's data socket (for libkvtier clients); "
                "kvtierctl talks to the admin socket (admin-socket in the config, "
                "admin.sock beside it by default)\n", path);
        return;
    }
    fprintf(stderr, "kvtierctl: cannot connect to %s: %s\n", path, strerror(-err));
    if (err == -ENOENT || err == -ECONNREFUSED)
        fprintf(stderr, "kvtierctl: is kvtierd running? A `make run` daemon listens on "
                "%s in its tree: run kvtierctl there, or pass --socket PATH "
                "(or set KVTIER_ADMIN_SOCKET)\n", DEV_ADMIN_SOCKET);
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

void ctl_format_value(const cJSON *v, char *buf, size_t len)
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
            ctl_format_value(it, val, sizeof(val));
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
            ctl_format_value(cJSON_GetObjectItemCaseSensitive(r, col[i]), val, sizeof(val));
            if ((int)strlen(val) > width[i])
                width[i] = (int)strlen(val);
        }
    }
    for (int i = 0; i < ncol; i++)
        printf("%-*s%s", i + 1 < ncol ? width[i] : 0, col[i], i + 1 < ncol ? "  " : "\n");
    for (const cJSON *r = rows->child; r; r = r->next) {
        for (int i = 0; i < ncol; i++) {
            ctl_format_value(cJSON_GetObjectItemCaseSensitive(r, col[i]), val, sizeof(val));
            /* The last column unpadded: no trailing blanks. */
            printf("%-*s%s", i + 1 < ncol ? width[i] : 0, val, i + 1 < ncol ? "  " : "\n");
        }
    }
}

static double number(const cJSON *obj, const char *name)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, name);
    return cJSON_IsNumber(v) ? v->valuedouble : 0;
}

/* What an evict dropped, then what the tiers still hold. */
static void print_evicted(const cJSON *reply)
{
    const cJSON *left = cJSON_GetObjectItemCaseSensitive(reply, "remaining");

    printf("dropped:   %.0f chunks from the hot tier, %.0f records from the cold tier\n",
           number(reply, "hot_chunks"), number(reply, "cold_records"));
    if (cJSON_IsObject(left))
        printf("remaining: %.0f chunks in the hot tier, %.0f records in the cold tier\n",
               number(left, "hot_chunks"), number(left, "cold_records"));
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
    if (!strcmp(cmd, "config") && cJSON_IsString(cJSON_GetObjectItemCaseSensitive(reply, "file"))) {
        const cJSON *n = cJSON_GetObjectItemCaseSensitive(reply, "keys_written");
        printf("rewrote %s: %.0f keys changed from what it said\n",
               cJSON_GetObjectItemCaseSensitive(reply, "file")->valuestring,
               cJSON_IsNumber(n) ? n->valuedouble : 0);
        return;
    }
    if (!strcmp(cmd, "evict")) {
        print_evicted(reply);
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
        const cJSON *cold = cJSON_GetObjectItemCaseSensitive(reply, "cold");
        bool cold_holds = cJSON_GetArraySize(cold) > 0;
        if (cJSON_IsArray(list) && (list->child || !cold_holds))
            print_table(list);
        else if (cJSON_IsArray(list))
            printf("(no context names known: the cold tier holds token prefixes, or contexts "
                   "stored by a kvtierd that kept no names)\n");
        if (cJSON_IsNumber(untracked) && untracked->valuedouble > 0)
            printf("(%.0f stores named a context past the per-namespace limit of "
                   "names; those names are not listed)\n", untracked->valuedouble);
        if (cold_holds) {
            /* Objects the names above do not cover are token prefixes,
             * or contexts whose name record is gone (written by an older
             * kvtierd, skipped as corrupt): served, not listed by name. */
            printf("\ncold tier (contexts and token prefixes it holds, named or not):\n");
            print_table(cold);
        }
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

/* ---- main ------------------------------------------------------------------------------ */

int main(int argc, char **argv)
{
    struct cmdline cl;
    const char *path, *cmd;
    bool json;
    char *line = NULL, *text = NULL;
    struct line_reader reader = { .fd = -1 };
    bool progress = false;
    cJSON *req = NULL, *reply = NULL;
    int fd = -1, rc = EXIT_OK;

    rc = parse_cmdline(argc, argv, &cl);
    if (rc)
        return rc > 0 ? EXIT_OK : EXIT_USAGE;
    if (build_request(&cl, &req))
        return EXIT_USAGE;
    cmd = cl.argv[0];
    json = cl.json;
    path = admin_socket_path(&cl);

    fd = connect_admin(path);
    if (fd < 0) {
        say_cannot_connect(path, fd);
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
        ctl_print_metrics(reply);
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
