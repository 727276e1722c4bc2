/* admin_config.c - the admin "config" command: get a key or all of them,
 * set one that can change while running, and rewrite the config file with
 * the live values so that they survive SIGHUP and restarts. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "daemon/admin_cmd.h"
#include "daemon/log.h"
#include "daemon/server.h"

/* Values set live are the daemon's until SIGHUP re-reads the file (which
 * then wins) or it restarts; rewriting the file makes them its values. */
static int config_rewrite(struct kvt_server *srv, cJSON *reply, char *err, size_t errlen)
{
    unsigned changed;
    int rc;

    if (!srv->config_path) {
        snprintf(err, errlen, "kvtierd was started without --config: there is no file to "
                 "rewrite");
        return -ENOENT;
    }
    rc = config_rewrite_file(srv->config_path, &srv->cfg, &changed, err, errlen);
    if (rc)
        return rc;
    log_info("admin: config rewrite: %u keys written to %s", changed, srv->config_path);
    cJSON_AddStringToObject(reply, "file", srv->config_path);
    cJSON_AddNumberToObject(reply, "keys_written", changed);
    return 0;
}

static int config_set_live(struct kvt_server *srv, const char *key, const cJSON *value,
                           char *err, size_t errlen)
{
    struct kvt_config cfg = srv->cfg;
    char text[64];
    int rc;

    if (cJSON_IsNumber(value))
        snprintf(text, sizeof(text), "%.0f", value->valuedouble);
    else if (cJSON_IsString(value))
        snprintf(text, sizeof(text), "%s", value->valuestring);
    else {
        snprintf(err, errlen, "config set needs a \"value\" (string or number)");
        return -EINVAL;
    }
    /* Refused before its value is parsed, so the reason is the one that
     * holds whatever the value: the remote tier's keys name its servers,
     * secret and domains, which are set up once at start. An unknown key
     * was refused by the caller. */
    if (!config_key_live(key)) {
        snprintf(err, errlen, "%s cannot change while running; set it in the config file "
                 "and restart%s", key,
                 !strncmp(key, "remote", 6) ? " (the remote tier's keys are read at start only)"
                                            : "");
        return -EPERM;
    }
    rc = config_set(&cfg, key, text, err, errlen);
    if (rc)
        return rc;
    rc = config_validate(&cfg, err, errlen);
    if (rc)
        return rc;
    server_apply_live(srv, &cfg);
    log_info("admin: config set %s = %s", key, text);
    return 0;
}

int admin_cmd_config(struct kvt_admin_conn *conn, const cJSON *req, cJSON *reply,
                      char *err, size_t errlen)
{
    struct kvt_server *srv = conn->srv;
    const cJSON *op = cJSON_GetObjectItemCaseSensitive(req, "op");
    const cJSON *key = cJSON_GetObjectItemCaseSensitive(req, "key");
    char value[1024];
    int rc;

    if (!cJSON_IsString(op) || (strcmp(op->valuestring, "get") && strcmp(op->valuestring, "set") &&
                                strcmp(op->valuestring, "rewrite"))) {
        snprintf(err, errlen, "config needs \"op\": \"get\", \"set\" or \"rewrite\"");
        return -EINVAL;
    }
    if (!strcmp(op->valuestring, "rewrite"))
        return config_rewrite(srv, reply, err, errlen);
    if (key && !cJSON_IsString(key)) {
        snprintf(err, errlen, "config \"key\" must be a string");
        return -EINVAL;
    }
    if (!strcmp(op->valuestring, "get") && !key) {
        cJSON *all = cJSON_AddObjectToObject(reply, "config");
        for (size_t i = 0; config_key_name(i); i++) {
            config_get(&srv->cfg, config_key_name(i), value, sizeof(value));
            cJSON_AddStringToObject(all, config_key_name(i), value);
        }
        return 0;
    }
    if (!key) {
        snprintf(err, errlen, "config set needs a \"key\"");
        return -EINVAL;
    }
    if (config_get(&srv->cfg, key->valuestring, value, sizeof(value))) {
        const char *near = config_suggest_key(key->valuestring);
        snprintf(err, errlen, "unknown config key '%.200s'%s%s%s", key->valuestring,
                 near ? " (did you mean " : "", near ? near : "", near ? "?)" : "");
        return -ENOENT;
    }
    if (!strcmp(op->valuestring, "set")) {
        rc = config_set_live(srv, key->valuestring,
                             cJSON_GetObjectItemCaseSensitive(req, "value"), err, errlen);
        if (rc)
            return rc;
        config_get(&srv->cfg, key->valuestring, value, sizeof(value));
    }
    cJSON_AddStringToObject(reply, "key", key->valuestring);
    cJSON_AddStringToObject(reply, "value", value);
    return 0;
}
