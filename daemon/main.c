/* main.c - kvtierd: parse the command line, load the config, run the server. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/config.h"
#include "daemon/log.h"
#include "daemon/server.h"

/* The usage line, then every key with its production default, both from
 * the key table (the one kvtierd(8) documents). */
static void usage(FILE *f)
{
    struct kvt_config def;
    char value[512];

    config_defaults(&def);
    fprintf(f,
        "Usage: kvtierd [--config FILE] [--dev] [--KEY VALUE | --KEY=VALUE]... [--version] [--help]\n"
        "--dev uses the embedded development config: sockets and cold file under ./var.\n"
        "Every config key is also an option (kvtierd(8)); SIZE is bytes or K, M, G, T\n"
        "(powers of 1024, also written KB/KiB...). Keys and their defaults (* = live):\n");
    for (size_t i = 0; config_key_name(i); i++) {
        config_get(&def, config_key_name(i), value, sizeof(value));
        fprintf(f, "  --%-24s %s%s\n", config_key_name(i), *value ? value : "(none)",
                config_key_live(config_key_name(i)) ? " *" : "");
    }
}

/* "--frobnicate=1" -> "frobnicate" in buf. */
static const char *option_name(const char *arg, char *buf, size_t len)
{
    while (*arg == '-')
        arg++;
    snprintf(buf, len, "%.*s", (int)strcspn(arg, "="), arg);
    return buf;
}

static int unknown_option(const char *arg)
{
    char name[128];
    const char *near = config_suggest_key(option_name(arg, name, sizeof(name)));

    if (!near && !strncmp(name, "conf", 4))
        near = "config";
    fprintf(stderr, "<3>kvtierd: unknown option '%s'%s%s%s (kvtierd --help lists them)\n", arg,
            near ? "; did you mean --" : "", near ? near : "", near ? "?" : "");
    return 2;
}

/* One option of the command line: GNU long-option syntax (--KEY VALUE or
 * --KEY=VALUE), names matched exactly: getopt_long's abbreviations would
 * take --hot-byte for --hot-bytes, and a config key should be spelt one
 * way on the command line and in the file. */
struct opt {
    char name[128];
    const char *value;           /* NULL for --dev, --help, --version */
};

static bool is_flag(const char *name)
{
    return !strcmp(name, "dev") || !strcmp(name, "help") || !strcmp(name, "version");
}

static bool known(const char *name)
{
    struct kvt_config probe;
    char buf[8];

    config_defaults(&probe);
    return is_flag(name) || !strcmp(name, "config") ||
           config_get(&probe, name, buf, sizeof(buf)) == 0;
}

/* The option at argv[*i] into *o, advancing *i past it (and its value).
 * Returns 0, or 2 after saying what is wrong. */
static int next_option(int argc, char **argv, int *i, struct opt *o)
{
    const char *arg = argv[*i];
    const char *eq = strchr(arg, '=');

    if (strncmp(arg, "--", 2) || !arg[2]) {
        if (!strcmp(arg, "-h")) {
            snprintf(o->name, sizeof(o->name), "help");
            o->value = NULL;
            (*i)++;
            return 0;
        }
        fprintf(stderr, "<3>kvtierd: unexpected argument '%s' (options are --KEY VALUE or "
                "--KEY=VALUE; kvtierd --help lists them)\n", arg);
        return 2;
    }
    snprintf(o->name, sizeof(o->name), "%.*s", (int)(eq ? eq - arg - 2 : (long)strlen(arg + 2)),
             arg + 2);
    if (!known(o->name))
        return unknown_option(arg);
    (*i)++;
    if (is_flag(o->name)) {
        if (eq) {
            fprintf(stderr, "<3>kvtierd: --%s takes no value\n", o->name);
            return 2;
        }
        o->value = NULL;
        return 0;
    }
    if (eq) {
        o->value = eq + 1;
        return 0;
    }
    if (*i >= argc) {
        fprintf(stderr, "<3>kvtierd: option '%s' needs a value (--KEY VALUE or "
                "--KEY=VALUE)\n", arg);
        return 2;
    }
    o->value = argv[(*i)++];
    return 0;
}

int main(int argc, char **argv)
{
    struct kvt_config cfg;
    struct kvt_server srv;
    const char *config_path = NULL;
    struct opt o;
    char err[512];
    bool dev = false;
    int rc;

    /* Two passes: find --config/--dev first so flags beat the file. */
    for (int i = 1; i < argc;) {
        if ((rc = next_option(argc, argv, &i, &o)))
            return rc;
        if (!strcmp(o.name, "help")) {
            usage(stdout);
            return 0;
        }
        if (!strcmp(o.name, "version")) {
            printf("kvtierd %s\n", KVT_VERSION);
            return 0;
        }
        if (!strcmp(o.name, "dev"))
            dev = true;
        if (!strcmp(o.name, "config"))
            config_path = o.value;
    }
    if (dev)
        config_dev_defaults(&cfg);
    else
        config_defaults(&cfg);
    if (config_path && config_load_file(&cfg, config_path, err, sizeof(err))) {
        fprintf(stderr, "<3>kvtierd: %s\n", err);
        return 2;
    }
    for (int i = 1; i < argc;) {
        next_option(argc, argv, &i, &o);          /* checked above */
        if (!o.value || !strcmp(o.name, "config"))
            continue;
        if (config_set(&cfg, o.name, o.value, err, sizeof(err))) {
            fprintf(stderr, "<3>kvtierd: --%s\n", err);
            return 2;
        }
    }
    if (config_validate(&cfg, err, sizeof(err))) {
        fprintf(stderr, "<3>kvtierd: %s\n", err);
        return 2;
    }
    log_set_level((int)cfg.log_level);

    rc = server_init(&srv, &cfg, config_path);
    if (rc == 0)
        rc = server_run(&srv);
    server_fini(&srv);
    /* 2: the configuration or a file it names is not usable, so starting
     * again would fail again (the unit's RestartPreventExitStatus); 1: any
     * other failure, which a restart may cure. */
    if (rc == -EINVAL)
        return 2;
    return rc ? 1 : 0;
}
