/* bench_outliers.c - `make bench`'s shape 2 rows with the daemon started
 * with outliers = 0, 4 and 8 (libkvtier(3), kvt_fetch; kvtierd(8), --outliers): store and fetch against
 * memcpy, and what the hot tier holds per token against f16. */
#include <errno.h>
#include <math.h>
#include <stdio.h>

#include <cjson/cJSON.h>

#include "tests/bench.h"

/* Hot tier bytes per token held: the chunks' bytes (stats' used_bytes,
 * which leaves out the pool of free blocks) over the tokens of every
 * context the contexts command lists. */
static double hot_bytes_per_token(void)
{
    char reply[8192];
    double used, tokens = 0;
    admin_query("{\"cmd\":\"stats\"}", reply, sizeof(reply));
    cJSON *r = cJSON_Parse(reply);
    const cJSON *hot = cJSON_GetObjectItemCaseSensitive(r, "hot");
    used = cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(hot, "used_bytes"));
    cJSON_Delete(r);
    admin_query("{\"cmd\":\"contexts\"}", reply, sizeof(reply));
    r = cJSON_Parse(reply);
    const cJSON *ctx;
    cJSON_ArrayForEach(ctx, cJSON_GetObjectItemCaseSensitive(r, "contexts"))
        tokens += cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(ctx, "tokens"));
    cJSON_Delete(r);
    if (!(tokens > 0) || isnan(used))
        die("hot tier stats", -EIO);
    return used / tokens;
}

/* Shape 2's store and fetch on a daemon started with --outliers N, for N
 * = 0, 4 and 8, and the hot tier's bytes per token each time. A daemon
 * that refuses the flag (one from before the key) skips the section. */
void bench_outliers(double ref)
{
    static const char *const values[] = { "0", "4", "8" };
    const double f16_per_token = (double)L2_LAYERS * L2_HEADS * L2_DIM * 2 * 2;
    char why[256], name[80], key[96];

    for (size_t i = 0; i < sizeof(values) / sizeof(values[0]); i++) {
        if (try_start_daemon("6G", "0", NULL, "--outliers", values[i], why, sizeof(why))) {
            printf("shape2 with outliers: skipped, kvtierd refuses --outliers %s: %s\n",
                   values[i], why);
            json_num("shape2_outliers_skipped", 1);
            return;
        }
        for (int shared = 1; shared >= 0; shared--) {
            struct prefill p;
            const char *path = shared ? "zero-copy" : "copy";
            const char *kpath = shared ? "zerocopy" : "copy";
            prefill_setup(&p, shared, "llama-3-8b");
            double ts = prefill_time(&p, 0, "prefill"), tf = prefill_time(&p, 1, "prefill");
            double gs = (double)p.bytes / ts / 1e9, gf = (double)p.bytes / tf / 1e9;
            snprintf(name, sizeof(name), "shape2 store, outliers %s (%s)", values[i], path);
            row(name, gs, ref, L2_TOKENS / ts);
            snprintf(name, sizeof(name), "shape2 fetch, outliers %s (%s)", values[i], path);
            row(name, gf, ref, L2_TOKENS / tf);
            snprintf(key, sizeof(key), "shape2_store_%s_outliers%s_gbs", kpath, values[i]);
            json_num(key, gs);
            snprintf(key, sizeof(key), "shape2_store_%s_outliers%s_ratio", kpath, values[i]);
            json_num(key, gs / ref);
            snprintf(key, sizeof(key), "shape2_fetch_%s_outliers%s_gbs", kpath, values[i]);
            json_num(key, gf);
            snprintf(key, sizeof(key), "shape2_fetch_%s_outliers%s_ratio", kpath, values[i]);
            json_num(key, gf / ref);
            prefill_teardown(&p, shared);
        }
        /* Both paths stored the same context: 2048 tokens of 32 layers. */
        double per_token = hot_bytes_per_token();
        snprintf(name, sizeof(name), "hot bytes per token, outliers %s", values[i]);
        printf("%-44s %8.0f B     %5.3fx f16 (%.0f B)\n", name, per_token,
               per_token / f16_per_token, f16_per_token);
        snprintf(key, sizeof(key), "hot_bytes_per_token_outliers%s", values[i]);
        json_num(key, per_token);
        snprintf(key, sizeof(key), "hot_bytes_per_token_outliers%s_vs_f16", values[i]);
        json_num(key, per_token / f16_per_token);
        stop_daemon();
    }
}
