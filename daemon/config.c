/* config.c - one table of keys serves the config file, the flags and `config set`. */
#include "daemon/config.h"

#include <ctype.h>
#include <sched.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>

#include "daemon/log.h"
#include "proto/proto.h"

enum key_type { K_PATH, K_SIZE, K_U32, K_QUANT, K_LEVEL, K_MODE, K_SHARE, K_COLDIO,
               K_PRIO, K_REMOTE, K_RDOMAIN };

/* One row per key: the config file, the command line (--KEY VALUE or
 * --KEY=VALUE), `config get/set/rewrite` and the documentation
 * (kvtierd(8), checked against this table by test_config) all read it.
 * A row may stop after max: live then defaults to false. */
struct key_def {
    const char *name;
    enum key_type type;
    size_t offset;
    uint64_t min, max;      /* K_SIZE, K_U32 */
    bool live;              /* `config set` and SIGHUP change it while running */
};

#define OFF(f) offsetof(struct kvt_config, f)
static const struct key_def keys[] = {
    { "socket",         K_PATH,  OFF(socket),         0, 0 },
    { "admin-socket",   K_PATH,  OFF(admin_socket),   0, 0 },
    { "cold-path",      K_PATH,  OFF(cold_path),      0, 0 },
    { "hot-bytes",      K_SIZE,  OFF(hot_bytes),      1 << 20, UINT64_C(1) << 44, true },
    { "cold-bytes",     K_SIZE,  OFF(cold_bytes),     0, UINT64_C(1) << 50 },
    { "chunk-tokens",   K_U32,   OFF(chunk_tokens),   1, 4096 },
    { "quant",          K_QUANT, OFF(quant_none),     0, 0 },
    { "outliers",       K_U32,   OFF(outliers),       0, 16, true },
    { "share-hot",      K_U32,   OFF(share_hot),      0, 1 },
    { "workers",        K_U32,   OFF(workers),        1, 256 },
    { "poll-us",        K_U32,   OFF(poll_us),        0, 1000, true },
    { "log-level",      K_LEVEL, OFF(log_level),      0, 0, true },
    { "max-clients",    K_U32,   OFF(max_clients),    1, 65536 },
    { "max-clients-per-uid", K_U32, OFF(max_clients_per_uid), 1, 65536 },
    { "attach-timeout-ms",   K_U32, OFF(attach_timeout_ms),   10, 3600000 },
    { "max-spans",      K_U32,   OFF(max_spans),      1, KVT_SPANS_MAX },
    { "max-frame",      K_SIZE,  OFF(max_frame),      4096, KVT_FRAME_MAX },
    { "max-client-shm", K_SIZE,  OFF(max_client_shm), 1 << 20, UINT64_C(1) << 40 },
    { "socket-mode",    K_MODE,  OFF(socket_mode),    0, 0777 },
    { "share",          K_SHARE, 0,                   0, 0 },
    { "hot-high-watermark", K_U32, OFF(hot_high_pct), 1, 100, true },
    { "hot-low-watermark",  K_U32, OFF(hot_low_pct),  1, 100, true },
    { "cold-region-bytes",  K_SIZE, OFF(cold_region_bytes), 1 << 20, 1u << 30 },
    { "cold-io",        K_COLDIO, OFF(cold_pread),    0, 0 },
    { "promote-priority", K_PRIO, OFF(promote_idle), 0, 0 },
    { "hot-quota",      K_SIZE,  OFF(hot_quota),      0, UINT64_C(1) << 44, true },
    { "cold-quota",     K_SIZE,  OFF(cold_quota),     0, UINT64_C(1) << 50, true },
    { "max-namespaces-per-uid", K_U32, OFF(max_ns_per_uid), 1, 65536 },
    { "remote",         K_REMOTE, OFF(remote),        0, 0 },
    { "remote-replicas", K_U32,  OFF(remote_replicas), 0, 8 },
    { "remote-timeout-ms", K_U32, OFF(remote_timeout_ms), 1, 60000 },
    { "remote-key-file", K_PATH, OFF(remote_key_file), 0, 0 },
    { "remote-domain",  K_RDOMAIN, 0,                 0, 0 },
};
#define N_KEYS (sizeof(keys) / sizeof(keys[0]))

static void set_path(char *dst, const char *src)
{
    snprintf(dst, CONFIG_PATH_MAX, "%s", src);
}

/* One worker per CPU this process may run on (its affinity mask, which
 * taskset, cgroups' cpusets and systemd's CPUAffinity= narrow): fewer leave
 * a large fetch waiting on dequantization that idle cores could share. */
static uint32_t default_workers(void)
{
    cpu_set_t set;
    int n = 0;

    if (sched_getaffinity(0, sizeof(set), &set) == 0)
        n = CPU_COUNT(&set);
    if (n < 1)
        n = 2;
    return n > 256 ? 256 : (uint32_t)n;
}

void config_defaults(struct kvt_config *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    set_path(cfg->socket, "/run/kvtier/kvtier.sock");
    set_path(cfg->admin_socket, "/run/kvtier/admin.sock");
    set_path(cfg->cold_path, "/var/cache/kvtier/cold.kvt");
    cfg->hot_bytes = UINT64_C(8) << 30;
    cfg->cold_bytes = 0;
    cfg->chunk_tokens = 256;
    /* Real keys carry a few channels tens of times larger than the rest;
     * keeping 4 per vector exact holds the int8 error of the others at
     * their own scale for 8 bytes more per vector (docs/performance.md). */
    cfg->outliers = 4;
    cfg->workers = default_workers();
    cfg->poll_us = 50;
    cfg->log_level = LOG_INFO;
    cfg->max_clients = 256;
    /* A quarter of the default max-clients: one uid cannot fill the daemon,
     * and 64 engines of one uid on one host is already a lot. */
    cfg->max_clients_per_uid = 64;
    /* libkvtier attaches right after connecting; 10 s is ample on a loaded
     * host and short enough that silent connections do not pile up. */
    cfg->attach_timeout_ms = 10000;
    cfg->max_ns_per_uid = 64;
    cfg->max_spans = 8192;
    cfg->max_frame = 1u << 20;
    cfg->max_client_shm = UINT64_C(1) << 30;
    cfg->socket_mode = 0666;
    /* Cold readers hold no lock of the hot tier, no chunk and not the
     * drop lock, only the cold index's mutex for short copies
     * (tiers_promote_many): SCHED_IDLE costs mostly the reading client's
     * time, and spares the other clients' decode steps. */
    cfg->promote_idle = 1;
    cfg->hot_high_pct = 90;
    cfg->hot_low_pct = 80;
    cfg->remote_replicas = 1;
    /* A LAN round trip is well under 1 ms and a 1 MiB record a few ms:
     * 200 ms means a server that is dead or stuck, not a busy one. */
    cfg->remote_timeout_ms = 200;
    cfg->cold_region_bytes = 64u << 20;
}

void config_dev_defaults(struct kvt_config *cfg)
{
    config_defaults(cfg);
    set_path(cfg->socket, "var/kvtier.sock");
    set_path(cfg->admin_socket, "var/admin.sock");
    set_path(cfg->cold_path, "var/cold.kvt");
    cfg->hot_bytes = UINT64_C(1) << 30;
    cfg->cold_bytes = UINT64_C(1) << 30;
}

int config_parse_size(const char *s, uint64_t *out)
{
    char *end;

    if (!s || !isdigit((unsigned char)*s))
        return -EINVAL;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno)
        return -ERANGE;
    int shift = 0;
    switch (*end) {
    case 'K': case 'k': shift = 10; end++; break;
    case 'M': case 'm': shift = 20; end++; break;
    case 'G': case 'g': shift = 30; end++; break;
    case 'T': case 't': shift = 40; end++; break;
    }
    /* 256MB and 1GiB mean what 256M and 1G mean: powers of 1024 always,
     * as memory sizes are, so the three spellings never disagree. */
    if (shift && (*end == 'i' || *end == 'I') && (end[1] == 'B' || end[1] == 'b'))
        end += 2;
    else if (*end == 'B' || *end == 'b')
        end++;
    if (*end)
        return -EINVAL;
    if (shift && v > (UINT64_MAX >> shift))
        return -ERANGE;
    *out = (uint64_t)v << shift;
    return 0;
}

void config_format_size(uint64_t v, char *buf, size_t len)
{
    static const char unit[] = "KMGT";
    int u = -1;

    while (v && u < 3 && (v & 1023) == 0) {
        v >>= 10;
        u++;
    }
    if (u < 0)
        snprintf(buf, len, "%" PRIu64, v);
    else
        snprintf(buf, len, "%" PRIu64 "%c", v, unit[u]);
}

static int reason(char *err, size_t len, int rc, const char *fmt, const char *a)
{
    if (err && len)
        snprintf(err, len, fmt, a);
    return rc;
}

/* `share = 1000,1001` puts those uids in one sharing domain; each line is a
 * new group. */
static int set_share(struct kvt_config *cfg, const char *value, char *err, size_t len)
{
    struct kvt_config tmp = *cfg;
    uint32_t group = 0;
    char buf[512];

    for (uint32_t i = 0; i < tmp.n_share; i++)
        if (tmp.share_group[i] >= group)
            group = tmp.share_group[i] + 1;
    snprintf(buf, sizeof(buf), "%s", value);
    for (char *save = NULL, *tok = strtok_r(buf, ", ", &save); tok;
         tok = strtok_r(NULL, ", ", &save)) {
        char *end;
        errno = 0;
        unsigned long uid = strtoul(tok, &end, 10);
        if (*end || errno || uid > UINT32_MAX - 1 || !isdigit((unsigned char)*tok))
            return reason(err, len, -EINVAL, "share: '%s' is not a uid", tok);
        for (uint32_t i = 0; i < tmp.n_share; i++)
            if (tmp.share_uid[i] == (uid_t)uid)
                return reason(err, len, -EINVAL, "share: uid %s is in two groups", tok);
        if (tmp.n_share == CONFIG_SHARE_MAX)
            return reason(err, len, -ERANGE, "share: more than %s uids", "64");
        tmp.share_uid[tmp.n_share] = (uid_t)uid;
        tmp.share_group[tmp.n_share++] = group;
    }
    *cfg = tmp;
    return 0;
}

/* `remote-domain = NAME:UID[,UID...]` names, in the pool, the sharing
 * domain those uids belong to here; every host that uses the same NAME
 * shares it, whatever its uids. Each line names one domain. */
static int set_rdomain(struct kvt_config *cfg, const char *value, char *err, size_t len)
{
    struct kvt_config tmp = *cfg;
    const char *colon = strchr(value, ':');
    char buf[512];
    size_t name_len = colon ? (size_t)(colon - value) : 0;

    if (!colon || name_len == 0 || name_len >= CONFIG_RDOMAIN_NAME)
        return reason(err, len, -EINVAL, "remote-domain: expected NAME:UID[,UID...] with a "
                      "name of 1..63 bytes%s", "");
    for (size_t i = 0; i < name_len; i++)
        if (!isalnum((unsigned char)value[i]) && !strchr("._-", value[i]))
            return reason(err, len, -EINVAL, "remote-domain: a name is letters, digits, "
                          "'.', '_' and '-'%s", "");
    for (uint32_t i = 0; i < tmp.n_rdomain; i++)
        if (strlen(tmp.rdomain_name[i]) == name_len &&
            !memcmp(tmp.rdomain_name[i], value, name_len))
            return reason(err, len, -EINVAL, "remote-domain: %s is named twice", value);
    snprintf(buf, sizeof(buf), "%s", colon + 1);
    int uids = 0;
    for (char *save = NULL, *tok = strtok_r(buf, ", ", &save); tok;
         tok = strtok_r(NULL, ", ", &save), uids++) {
        char *end;
        errno = 0;
        unsigned long uid = strtoul(tok, &end, 10);
        if (*end || errno || uid > UINT32_MAX - 1 || !isdigit((unsigned char)*tok))
            return reason(err, len, -EINVAL, "remote-domain: '%s' is not a uid", tok);
        for (uint32_t i = 0; i < tmp.n_rdomain; i++)
            if (tmp.rdomain_uid[i] == (uid_t)uid)
                return reason(err, len, -EINVAL, "remote-domain: uid %s is named twice", tok);
        if (tmp.n_rdomain == CONFIG_RDOMAIN_MAX)
            return reason(err, len, -ERANGE, "remote-domain: more than %s uids", "16");
        tmp.rdomain_uid[tmp.n_rdomain] = (uid_t)uid;
        memcpy(tmp.rdomain_name[tmp.n_rdomain], value, name_len);
        tmp.rdomain_name[tmp.n_rdomain++][name_len] = '\0';
    }
    if (!uids)
        return reason(err, len, -EINVAL, "remote-domain: no uid after '%s'", value);
    *cfg = tmp;
    return 0;
}

static const struct key_def *find_key(const char *name)
{
    for (size_t i = 0; i < N_KEYS; i++)
        if (strcmp(keys[i].name, name) == 0)
            return &keys[i];
    return NULL;
}

int config_set(struct kvt_config *cfg, const char *key, const char *value,
               char *err, size_t len)
{
    const struct key_def *k = find_key(key);
    uint8_t *field;
    uint64_t v;
    char *end;
    int rc;

    if (!k) {
        const char *near = config_suggest_key(key);
        if (err && len)
            snprintf(err, len, "unknown config key '%s'%s%s%s", key,
                     near ? " (did you mean " : "", near ? near : "", near ? "?)" : "");
        return -ENOENT;
    }
    field = (uint8_t *)cfg + k->offset;
    switch (k->type) {
    case K_PATH:
        if (!*value || strlen(value) >= 108)   /* sun_path bound for sockets */
            return reason(err, len, -EINVAL, "%s: path empty or longer than 107 bytes", key);
        set_path((char *)field, value);
        return 0;
    case K_SIZE:
        rc = config_parse_size(value, &v);
        if (rc)
            return reason(err, len, rc, "%s: expected a size like 512M or 8G", key);
        if (v < k->min || v > k->max)
            return reason(err, len, -ERANGE, "%s: size out of range", key);
        if (k->max <= UINT32_MAX)
            *(uint32_t *)field = (uint32_t)v;
        else
            *(uint64_t *)field = v;
        return 0;
    case K_U32:
        errno = 0;
        v = strtoull(value, &end, 10);
        if (*end || errno || !isdigit((unsigned char)*value))
            return reason(err, len, -EINVAL, "%s: expected a whole number", key);
        if (v < k->min || v > k->max)
            return reason(err, len, -ERANGE, "%s: number out of range", key);
        *(uint32_t *)field = (uint32_t)v;
        return 0;
    case K_MODE:
        errno = 0;
        v = strtoull(value, &end, 8);
        if (*end || errno || !*value || v > k->max)
            return reason(err, len, -EINVAL, "%s: expected an octal mode like 0660", key);
        *(uint32_t *)field = (uint32_t)v;
        return 0;
    case K_QUANT:
        if (strcmp(value, "int8") && strcmp(value, "none"))
            return reason(err, len, -EINVAL, "%s: expected int8 or none", key);
        *(uint32_t *)field = strcmp(value, "none") == 0;
        return 0;
    case K_LEVEL:
        rc = log_parse_level(value);
        if (rc < 0)
            return reason(err, len, -EINVAL, "%s: expected err, warning, info or debug", key);
        *(uint32_t *)field = (uint32_t)rc;
        return 0;
    case K_SHARE:
        return set_share(cfg, value, err, len);
    case K_RDOMAIN:
        return set_rdomain(cfg, value, err, len);
    case K_REMOTE:
        /* Empty turns the tier off; the list itself is parsed at start,
         * where a bad one stops kvtierd with its reason. */
        if (strlen(value) >= CONFIG_REMOTE_MAX)
            return reason(err, len, -EINVAL, "%s: server list too long", key);
        snprintf((char *)field, CONFIG_REMOTE_MAX, "%s", value);
        return 0;
    case K_COLDIO:
        if (strcmp(value, "uring") && strcmp(value, "pread"))
            return reason(err, len, -EINVAL, "%s: expected uring or pread", key);
        *(uint32_t *)field = strcmp(value, "pread") == 0;
        return 0;
    case K_PRIO:
        if (strcmp(value, "idle") && strcmp(value, "normal"))
            return reason(err, len, -EINVAL, "%s: expected idle or normal", key);
        *(uint32_t *)field = strcmp(value, "idle") == 0;
        return 0;
    }
    return -EINVAL;
}

int config_get(const struct kvt_config *cfg, const char *key, char *buf, size_t len)
{
    const struct key_def *k = find_key(key);
    const uint8_t *field;

    if (!k)
        return -ENOENT;
    field = (const uint8_t *)cfg + k->offset;
    switch (k->type) {
    case K_PATH:  snprintf(buf, len, "%s", (const char *)field); break;
    case K_SIZE:
        config_format_size(k->max <= UINT32_MAX ? *(const uint32_t *)field :
                           *(const uint64_t *)field, buf, len);
        break;
    case K_U32:   snprintf(buf, len, "%" PRIu32, *(const uint32_t *)field); break;
    case K_MODE:  snprintf(buf, len, "%04o", *(const uint32_t *)field); break;
    case K_QUANT: snprintf(buf, len, "%s", *(const uint32_t *)field ? "none" : "int8"); break;
    case K_COLDIO: snprintf(buf, len, "%s", *(const uint32_t *)field ? "pread" : "uring"); break;
    case K_PRIO: snprintf(buf, len, "%s", *(const uint32_t *)field ? "idle" : "normal"); break;
    case K_LEVEL: snprintf(buf, len, "%s", log_level_name((int)*(const uint32_t *)field)); break;
    case K_REMOTE: snprintf(buf, len, "%s", (const char *)field); break;
    case K_RDOMAIN: {
        size_t at = 0;
        buf[0] = '\0';
        for (uint32_t i = 0; i < cfg->n_rdomain && at < len; i++)
            at += (size_t)snprintf(buf + at, len - at, "%s%s:%u", i ? "," : "",
                                   cfg->rdomain_name[i], (unsigned)cfg->rdomain_uid[i]);
        break;
    }
    case K_SHARE: {
        size_t at = 0;
        buf[0] = '\0';
        for (uint32_t i = 0; i < cfg->n_share && at < len; i++)
            at += (size_t)snprintf(buf + at, len - at, "%s%u:%u", i ? "," : "",
                                   cfg->share_group[i], (unsigned)cfg->share_uid[i]);
        break;
    }
    }
    return 0;
}

const char *config_key_name(size_t i)
{
    return i < N_KEYS ? keys[i].name : NULL;
}

bool config_key_live(const char *name)
{
    const struct key_def *k = find_key(name);
    return k && k->live;
}

/* Edits (insert, delete, substitute) from a to b, rows of at most 64. */
static size_t edit_distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b), row[65];

    if (la > 64 || lb > 64)
        return SIZE_MAX;
    for (size_t j = 0; j <= lb; j++)
        row[j] = j;
    for (size_t i = 1; i <= la; i++) {
        size_t diag = row[0];
        row[0] = i;
        for (size_t j = 1; j <= lb; j++) {
            size_t up = row[j];
            size_t best = diag + (a[i - 1] != b[j - 1]);
            if (up + 1 < best)
                best = up + 1;
            if (row[j - 1] + 1 < best)
                best = row[j - 1] + 1;
            row[j] = best;
            diag = up;
        }
    }
    return row[lb];
}

const char *config_suggest_key(const char *name)
{
    const char *best = NULL;
    size_t best_d = SIZE_MAX, limit = strlen(name) / 3 + 1;

    if (limit < 2)
        limit = 2;
    for (size_t i = 0; i < N_KEYS; i++) {
        size_t d = edit_distance(name, keys[i].name);
        /* A prefix of a key ("cold-region") is a likely slip too. */
        if (strlen(name) >= 4 && !strncmp(keys[i].name, name, strlen(name)))
            d = 1;
        if (d < best_d) {
            best_d = d;
            best = keys[i].name;
        }
    }
    return best_d <= limit ? best : NULL;
}

static bool blank(char ch)
{
    return isspace((unsigned char)ch);
}

int config_line_parse(const char *line, size_t len, struct config_line *out)
{
    const char *hash = memchr(line, '#', len);
    size_t end = hash ? (size_t)(hash - line) : len, at = 0;

    memset(out, 0, sizeof(*out));
    while (at < end && blank(line[at]))
        at++;
    while (end > at && blank(line[end - 1]))
        end--;
    if (at == end)
        return 0;
    const char *eq = memchr(line + at, '=', end - at);
    if (!eq)
        return -EINVAL;
    out->key_off = at;
    out->key_len = (size_t)(eq - line) - at;
    while (out->key_len && blank(line[at + out->key_len - 1]))
        out->key_len--;
    out->value_off = (size_t)(eq - line) + 1;
    while (out->value_off < end && blank(line[out->value_off]))
        out->value_off++;
    out->value_len = end - out->value_off;
    return 1;
}

int config_load_file(struct kvt_config *cfg, const char *path, char *err, size_t len)
{
    struct kvt_config tmp = *cfg;
    char line[1024], why[256], key[128], value[1024];
    struct config_line cl;
    unsigned lineno = 0;
    int rc = 0;
    FILE *f = fopen(path, "re");

    if (!f) {
        rc = -errno;
        snprintf(err, len, "%s: %s", path, strerror(-rc));
        return rc;
    }
    while (fgets(line, sizeof(line), f)) {
        lineno++;
        if (!strchr(line, '\n') && !feof(f)) {
            snprintf(err, len, "%s:%u: line too long", path, lineno);
            rc = -EINVAL;
            goto out;
        }
        rc = config_line_parse(line, strlen(line), &cl);
        if (rc == 0)
            continue;
        if (rc < 0 || cl.key_len == 0 || cl.key_len >= sizeof(key)) {
            snprintf(err, len, "%s:%u: expected 'key = value'", path, lineno);
            rc = -EINVAL;
            goto out;
        }
        snprintf(key, sizeof(key), "%.*s", (int)cl.key_len, line + cl.key_off);
        snprintf(value, sizeof(value), "%.*s", (int)cl.value_len, line + cl.value_off);
        rc = config_set(&tmp, key, value, why, sizeof(why));
        if (rc) {
            snprintf(err, len, "%s:%u: %s", path, lineno, why);
            goto out;
        }
    }
    *cfg = tmp;
out:
    fclose(f);
    return rc;
}

int config_validate(const struct kvt_config *cfg, char *err, size_t len)
{
    if (strcmp(cfg->socket, cfg->admin_socket) == 0)
        return reason(err, len, -EINVAL, "socket and admin-socket are the same path%s", "");
    if (cfg->hot_low_pct > cfg->hot_high_pct)
        return reason(err, len, -EINVAL, "hot-low-watermark is above hot-high-watermark%s", "");
    if (cfg->cold_region_bytes & (cfg->cold_region_bytes - 1))
        return reason(err, len, -EINVAL, "cold-region-bytes must be a power of two%s", "");
    /* The cold file is a header block and at least two regions. */
    if (cfg->cold_bytes && cfg->cold_bytes < 2 * cfg->cold_region_bytes + 4096)
        return reason(err, len, -EINVAL, "cold-bytes holds fewer than two cold-region-bytes "
                      "regions: raise cold-bytes or lower cold-region-bytes%s", "");
    if (cfg->max_frame < proto_data_size(KVT_CTX_NAME_MAX, 0, 1))
        return reason(err, len, -EINVAL, "max-frame is too small for one span%s", "");
    return 0;
}
