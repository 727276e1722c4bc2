/* kvtierctl_metrics.c - `kvtierctl metrics`: the stats reply in the
 * Prometheus text exposition format, every name prefixed kvtier_. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "client/kvtierctl.h"

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
    { "cold", "records", "cold_records", "gauge", "Live chunk records on the cold tier." },
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
    { "cold", "quota_drops", "cold_quota_drops_total", "counter", "Records dropped to keep a sharing domain within cold-quota." },
    { "cold", "regions_reclaimed", "cold_regions_reclaimed_total", "counter", "Cold file regions reclaimed." },
    { "cold", "names", "cold_names", "gauge", "Context names kept on the cold tier." },
    { "cold", "names_skipped", "cold_names_skipped_total", "counter", "Malformed name records skipped." },
    { "cold", "uring", "cold_uring", "gauge", "1 when the cold tier uses io_uring." },
    { "tiers", "demotions", "demotions_total", "counter", "Chunks written from the RAM tier to the cold tier." },
    { "tiers", "promotions", "promotions_total", "counter", "Chunks read back from the cold tier." },
    { "tiers", "demote_errors", "demote_errors_total", "counter", "Chunks that could not be written to the cold tier." },
    { "tiers", "loop_disk_handoffs", "loop_disk_handoffs_total", "counter", "Small requests the loop handed to a worker because they needed the disk." },
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
    { NULL, "uptime_seconds", "uptime_seconds", "gauge", "Seconds since kvtierd started." },
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

/* Store and fetch latency as Prometheus histograms in seconds, which sum
 * across hosts. The daemon's buckets are powers of two of microseconds:
 * bucket i holds requests under 2^i us (and at least 2^(i-1)); the last one
 * holds everything longer, so it is +Inf alone. */
static void print_latency(const cJSON *lat)
{
    printf("# HELP kvtier_request_duration_seconds Store/fetch time from receipt to reply.\n"
           "# TYPE kvtier_request_duration_seconds histogram\n");
    for (const char *const *op = (const char *const[]){ "store", "fetch", NULL }; *op; op++) {
        const cJSON *h = cJSON_GetObjectItemCaseSensitive(lat, *op);
        const cJSON *buckets = cJSON_GetObjectItemCaseSensitive(h, "buckets");
        const cJSON *sum = cJSON_GetObjectItemCaseSensitive(h, "sum_us");
        int n = cJSON_GetArraySize(buckets);
        double seen = 0;

        if (!cJSON_IsArray(buckets) || !cJSON_IsNumber(sum) || n < 1)
            continue;
        for (int i = 0; i < n; i++) {
            const cJSON *b = cJSON_GetArrayItem(buckets, i);
            seen += cJSON_IsNumber(b) ? b->valuedouble : 0;
            if (i + 1 < n)
                printf("kvtier_request_duration_seconds_bucket{op=\"%s\",le=\"%.10g\"} %.0f\n",
                       *op, ldexp(1e-6, i), seen);
        }
        printf("kvtier_request_duration_seconds_bucket{op=\"%s\",le=\"+Inf\"} %.0f\n"
               "kvtier_request_duration_seconds_sum{op=\"%s\"} %.6f\n"
               "kvtier_request_duration_seconds_count{op=\"%s\"} %.0f\n",
               *op, seen, *op, sum->valuedouble / 1e6, *op, seen);
    }
}

/* Which build runs (a constant 1 with labels, as Prometheus exporters do)
 * and when it started, so restarts show on a graph. */
static void print_build(const cJSON *reply)
{
    const cJSON *version = cJSON_GetObjectItemCaseSensitive(reply, "version");
    const cJSON *start = cJSON_GetObjectItemCaseSensitive(reply, "start_time_seconds");

    if (cJSON_IsString(version))
        printf("# HELP kvtier_build_info The running kvtierd's version (always 1).\n"
               "# TYPE kvtier_build_info gauge\nkvtier_build_info{version=\"%s\"} 1\n",
               version->valuestring);
    if (cJSON_IsNumber(start))
        printf("# HELP kvtier_process_start_time_seconds When kvtierd started, in seconds since the epoch.\n"
               "# TYPE kvtier_process_start_time_seconds gauge\n"
               "kvtier_process_start_time_seconds %.3f\n", start->valuedouble);
}


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

void ctl_print_metrics(const cJSON *reply)
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
            ctl_format_value(v, val, sizeof(val));
        printf("# HELP kvtier_%s %s\n# TYPE kvtier_%s %s\nkvtier_%s %s\n",
               m->name, m->help, m->name, m->type, m->name, val);
    }
    print_latency(cJSON_GetObjectItemCaseSensitive(reply, "latency_us"));
    print_build(reply);
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
