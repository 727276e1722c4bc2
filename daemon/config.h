/* config.h - kvtierd settings: defaults, config file, flags, one key table. */
#ifndef KVT_CONFIG_H
#define KVT_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define CONFIG_PATH_MAX 256
#define CONFIG_SHARE_MAX 64     /* uids in all `share` groups together */
#define CONFIG_REMOTE_MAX 2048  /* bytes of the `remote` server list */
#define CONFIG_RDOMAIN_MAX 16   /* `remote-domain` names */
#define CONFIG_RDOMAIN_NAME 64  /* bytes of one, NUL included */

struct kvt_config {
    char socket[CONFIG_PATH_MAX];
    char admin_socket[CONFIG_PATH_MAX];
    char cold_path[CONFIG_PATH_MAX];
    uint64_t hot_bytes;
    uint64_t cold_bytes;
    uint64_t hot_quota;         /* bytes per sharing domain, 0 = none */
    uint64_t cold_quota;        /* bytes per sharing domain, 0 = none */
    uint32_t chunk_tokens;      /* default for clients that pass 0 */
    uint32_t quant_none;        /* 1: lossless storage */
    uint32_t share_hot;         /* 1: hot blocks in sealed memfds clients map */
    uint32_t outliers;          /* int8: elements per vector kept exact (0..16) */
    uint32_t workers;
    uint32_t poll_us;           /* loop polls this long after an event */
    uint32_t log_level;         /* syslog priority */
    uint32_t max_clients;
    uint32_t max_clients_per_uid;   /* connections of one uid at once */
    uint32_t attach_timeout_ms; /* an unattached connection is closed after it */
    uint32_t max_ns_per_uid;    /* namespaces one sharing domain has attached */
    uint32_t max_spans;         /* per request */
    uint32_t max_frame;         /* bytes per control message */
    uint64_t max_client_shm;    /* bytes of one client's region */
    uint32_t socket_mode;       /* file mode of the data socket */
    uint32_t hot_high_pct;      /* demote above this % of hot-bytes ... */
    uint32_t hot_low_pct;       /* ... down to this % */
    uint32_t cold_region_bytes; /* cold file region size (0 = default) */
    uint32_t cold_pread;        /* 1: pread/pwrite instead of io_uring */
    uint32_t promote_idle;      /* 1: cold readers run SCHED_IDLE */
    /* Sharing domains: share_uid[i] belongs to group share_group[i]. */
    uint32_t n_share;
    uid_t share_uid[CONFIG_SHARE_MAX];
    uint32_t share_group[CONFIG_SHARE_MAX];
    /* The remote tier (API.md, "Beyond one host"). remote[0] == 0: none. */
    char remote[CONFIG_REMOTE_MAX];
    uint32_t remote_replicas;   /* extra copies of each record */
    uint32_t remote_timeout_ms; /* bound on any wait on one server */
    char remote_key_file[CONFIG_PATH_MAX];   /* "" = records checksummed only */
    /* Names of sharing domains in the pool, the same on every host:
     * rdomain_uid[i] belongs to the domain named rdomain_name[i]. A domain
     * with no name is not shared through the pool. */
    uint32_t n_rdomain;
    uid_t rdomain_uid[CONFIG_RDOMAIN_MAX];
    char rdomain_name[CONFIG_RDOMAIN_MAX][CONFIG_RDOMAIN_NAME];
};

/* Production defaults (sockets under /run/kvtier). */
void config_defaults(struct kvt_config *cfg);
/* The embedded development config of `make run` / --dev: sockets and cold
 * file under ./var, small budgets, no root needed. */
void config_dev_defaults(struct kvt_config *cfg);

/* Set one key ("hot-bytes") from text ("8G"). Returns 0, or -EINVAL/-ERANGE
 * /-ENOENT with a reason in err (errlen bytes); cfg is unchanged on error. */
int config_set(struct kvt_config *cfg, const char *key, const char *value,
               char *err, size_t errlen);
/* Read "key = value" lines ('#' comments, blank lines). Stops at the first
 * bad line with "FILE:LINE: reason" in err. */
int config_load_file(struct kvt_config *cfg, const char *path, char *err, size_t errlen);
/* Check cross-key consistency after loading. */
int config_validate(const struct kvt_config *cfg, char *err, size_t errlen);

/* Parse a SIZE: bytes or K/M/G/T (powers of 1024), optionally followed by
 * B or iB (256MB, 1GiB: still powers of 1024). Returns 0 or -EINVAL/-ERANGE. */
int config_parse_size(const char *s, uint64_t *out);
/* A size in the largest unit that holds it exactly: 536870912 -> "512M". */
void config_format_size(uint64_t v, char *buf, size_t len);

/* Format key's current value into buf; returns 0 or -ENOENT. */
int config_get(const struct kvt_config *cfg, const char *key, char *buf, size_t len);
/* Key names in table order, NULL-terminated (for listings and --help). */
const char *config_key_name(size_t i);
/* Whether `config set` (and SIGHUP) may change the key while running. */
bool config_key_live(const char *name);
/* The key nearest to a misspelt name ("hot-byte" -> "hot-bytes"), or NULL
 * when none is near. */
const char *config_suggest_key(const char *name);

/* Where a config file line's key and value lie (offsets into the line;
 * the value stops before a '#' comment and trailing blanks). */
struct config_line {
    size_t key_off, key_len, value_off, value_len;
};
/* Returns 1 for a "key = value" line, 0 for a blank or comment line,
 * -EINVAL for anything else. */
int config_line_parse(const char *line, size_t len, struct config_line *out);

/* `config rewrite`: make the file at path give live's value for every live
 * key (config_key_live) where it gives another: the key's last line gets
 * the new value (its comment and spacing kept), a key the file lacks is
 * appended. Everything else stays byte for byte. Written to a temporary
 * file beside it, fsynced and renamed over it, so a crash leaves the old
 * file or the new one. *changed gets the number of keys written. Returns 0
 * or -errno with a sentence in err. */
int config_rewrite_file(const char *path, const struct kvt_config *live, unsigned *changed,
                        char *err, size_t errlen);

#endif
