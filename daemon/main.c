/* main.c - kvtierd: parse the command line, load the config, run the server. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "daemon/config.h"
#include "daemon/log.h"
#include "daemon/server.h"

static void usage(FILE *f)
{
    fprintf(f,
        "Usage: kvtierd [--config FILE] [--socket PATH] [--admin-socket PATH]\n"
        "               [--hot-bytes SIZE] [--cold-path FILE] [--cold-bytes SIZE]\n"
        "               [--chunk-tokens N] [--quant int8|none] [--outliers N] [--workers N]\n"
        "               [--log-level err|warning|info|debug] [--dev] [--version] [--help]\n"
        "Every config key is also a flag: --KEY VALUE (see kvtierd(8)).\n"
        "--dev uses the embedded development config: sockets and cold file under ./var.\n");
}

int main(int argc, char **argv)
{
    struct kvt_config cfg;
    struct kvt_server srv;
    const char *config_path = NULL;
    char err[512];
    bool dev = false;
    int rc;

    /* Two passes: find --config/--dev first so flags beat the file. */
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage(stdout);
            return 0;
        }
        if (strcmp(argv[i], "--version") == 0) {
            printf("kvtierd %s\n", KVT_VERSION);
            return 0;
        }
        if (strcmp(argv[i], "--dev") == 0)
            dev = true;
        if (strcmp(argv[i], "--config") == 0 && i + 1 < argc)
            config_path = argv[++i];
    }
    if (dev)
        config_dev_defaults(&cfg);
    else
        config_defaults(&cfg);
    if (config_path && config_load_file(&cfg, config_path, err, sizeof(err))) {
        fprintf(stderr, "<3>kvtierd: %s\n", err);
        return 2;
    }
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--dev") == 0)
            continue;
        if (strcmp(a, "--config") == 0) {
            i++;
            continue;
        }
        if (strncmp(a, "--", 2) != 0 || i + 1 >= argc) {
            fprintf(stderr, "<3>kvtierd: unexpected argument '%s' (flags take a value)\n", a);
            usage(stderr);
            return 2;
        }
        if (config_set(&cfg, a + 2, argv[++i], err, sizeof(err))) {
            fprintf(stderr, "<3>kvtierd: %s\n", err);
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
