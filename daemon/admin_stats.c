/* admin_stats.c - the admin "stats" command: every counter of the tiers,
 * the connections and the data path, which process answers (pid, version,
 * start time), and the latency histograms `kvtierctl metrics` exports. */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "daemon/admin_cmd.h"
#include "daemon/admin_json.h"
#include "daemon/admin_remote.h"
#include "daemon/session.h"

/* When the process started: taken before main, so it is the daemon's own
 * start even for the first request, and the uptime does not jump when the
 * wall clock is set (it is measured on the monotonic clock). */
static struct timespec start_real, start_mono;

__attribute__((constructor)) static void note_start(void)
{
    clock_gettime(CLOCK_REALTIME, &start_real);
    clock_gettime(CLOCK_MONOTONIC, &start_mono);
}

static double seconds(const struct timespec *t)
{
    return (double)t->tv_sec + (double)t->tv_nsec / 1e9;
}

static void add_process(cJSON *reply)
{
    struct timespec now;

    clock_gettime(CLOCK_MONOTONIC, &now);
    add_u64(reply, "pid", (uint64_t)getpid());
    cJSON_AddStringToObject(reply, "version", KVT_VERSION);
    cJSON_AddNumberToObject(reply, "start_time_seconds", seconds(&start_real));
    add_u64(reply, "uptime_seconds", (uint64_t)(seconds(&now) - seconds(&start_mono)));
}

/* Percentiles for people (bucket upper bounds: exact to a factor of two),
 * and the buckets themselves with the sum for a histogram. */
static void add_latency(struct kvt_server *srv, cJSON *reply)
{
    cJSON *lat = cJSON_AddObjectToObject(reply, "latency_us");
    const struct { const char *name; const struct kvt_latency *l; } hist[] = {
        { "store", &srv->store_latency }, { "fetch", &srv->fetch_latency },
    };

    for (size_t i = 0; i < 2; i++) {
        uint64_t n, counts[LATENCY_BUCKETS], sum_ns;
        cJSON *h = cJSON_AddObjectToObject(lat, hist[i].name);
        add_u64(h, "p50", latency_percentile_us(hist[i].l, 50, &n));
        add_u64(h, "p99", latency_percentile_us(hist[i].l, 99, &n));
        add_u64(h, "p999", latency_percentile_us(hist[i].l, 99.9, &n));
        add_u64(h, "count", n);
        latency_snapshot(hist[i].l, counts, &sum_ns);
        cJSON_AddNumberToObject(h, "sum_us", (double)sum_ns / 1e3);
        cJSON *b = cJSON_AddArrayToObject(h, "buckets");
        for (unsigned j = 0; j < LATENCY_BUCKETS; j++)
            cJSON_AddItemToArray(b, cJSON_CreateNumber((double)counts[j]));
    }
}

#define STATS_DOMAINS_MAX 256

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

/* Bytes per sharing domain in each tier, against the quotas: every domain
 * that holds anything in either tier, by domain id. */
static void add_domains(struct kvt_server *srv, cJSON *reply)
{
    uint32_t ids[2 * STATS_DOMAINS_MAX];
    size_t n = hot_domains(srv->dp.hot, ids, STATS_DOMAINS_MAX);
    cJSON *list = cJSON_AddArrayToObject(reply, "domains");

    if (srv->tiers.cold)
        n += cold_domains(srv->tiers.cold, ids + n, STATS_DOMAINS_MAX);
    if (n > 1)
        qsort(ids, n, sizeof(ids[0]), cmp_u32);
    for (size_t i = 0; i < n; i++) {
        if (i && ids[i] == ids[i - 1])
            continue;
        cJSON *o = cJSON_CreateObject();
        add_u64(o, "domain", ids[i]);
        add_u64(o, "hot_bytes", hot_domain_used(srv->dp.hot, ids[i]));
        add_u64(o, "cold_bytes",
                srv->tiers.cold ? cold_domain_used(srv->tiers.cold, ids[i]) : 0);
        cJSON_AddItemToArray(list, o);
    }
}

int admin_cmd_stats(struct kvt_admin_conn *conn, const cJSON *req, cJSON *reply,
                     char *err, size_t errlen)
{
    struct kvt_server *srv = conn->srv;
    struct kvt_hot_stats hs;
    cJSON *hot = cJSON_AddObjectToObject(reply, "hot");

    (void)req, (void)err, (void)errlen;
    hot_stats(srv->dp.hot, &hs);
    add_u64(hot, "budget_bytes", hs.budget_bytes);
    add_u64(hot, "used_bytes", hs.used_bytes);
    add_u64(hot, "pooled_bytes", hs.pooled_bytes);
    add_u64(hot, "block_reuses", hs.block_reuses);
    add_u64(hot, "chunks", hs.chunks);
    add_u64(hot, "evictions", hs.evictions);
    add_u64(hot, "hits", atomic_load(&srv->dp.hot_hits));
    add_u64(hot, "misses", atomic_load(&srv->dp.hot_misses));

    if (srv->tiers.cold) {
        struct kvt_cold_stats cs;
        cJSON *cold = cJSON_AddObjectToObject(reply, "cold");
        cold_stats(srv->tiers.cold, &cs);
        add_u64(cold, "capacity_bytes", cs.capacity_bytes);
        add_u64(cold, "used_bytes", cs.used_bytes);
        add_u64(cold, "records", cs.records);
        add_u64(cold, "puts", cs.puts);
        add_u64(cold, "gets", cs.gets);
        add_u64(cold, "hits", cs.hits);
        add_u64(cold, "misses", cs.misses);
        add_u64(cold, "bytes_written", cs.bytes_written);
        add_u64(cold, "bytes_read", cs.bytes_read);
        add_u64(cold, "raw_bytes_in", cs.raw_bytes_in);
        cJSON_AddNumberToObject(cold, "compression_ratio",
                                cs.bytes_written ? (double)cs.raw_bytes_in /
                                                   (double)cs.bytes_written : 0.0);
        add_u64(cold, "checksum_failures", cs.checksum_failures);
        add_u64(cold, "io_errors", cs.io_errors);
        add_u64(cold, "records_unwritten", cs.records_unwritten);
        add_u64(cold, "records_lost", cs.records_lost);
        add_u64(cold, "regions_reclaimed", cs.regions_reclaimed);
        add_u64(cold, "quota_drops", cs.quota_drops);
        add_u64(cold, "names", cs.names);
        add_u64(cold, "names_skipped", cs.names_skipped);
        cJSON_AddBoolToObject(cold, "uring", cs.uring);
    } else {
        cJSON_AddNullToObject(reply, "cold");
    }

    cJSON *tiers = cJSON_AddObjectToObject(reply, "tiers");
    add_u64(tiers, "demotions", atomic_load(&srv->tiers.demotions));
    add_u64(tiers, "promotions", atomic_load(&srv->tiers.promotions));
    add_u64(tiers, "demote_errors", atomic_load(&srv->tiers.demote_errors));
    add_u64(tiers, "loop_disk_handoffs", atomic_load(&srv->disk_handoffs));
    add_u64(tiers, "loop_block_handoffs", atomic_load(&srv->block_handoffs));
    admin_remote_stats(&srv->tiers, reply);
    add_domains(srv, reply);
    add_u64(reply, "clients", srv->n_sessions);
    cJSON *conns = cJSON_AddObjectToObject(reply, "connections");
    add_u64(conns, "refused_max_clients", srv->refused_max_clients);
    add_u64(conns, "refused_per_uid", srv->refused_per_uid);
    add_u64(conns, "refused_unanswered", srv->refused_unanswered);
    add_u64(conns, "attach_timeouts", srv->attach_timeouts);
    add_u64(conns, "accept_fd_shortages", srv->accept.fd_shortages);
    add_u64(reply, "requests", atomic_load(&srv->requests));
    add_u64(reply, "stores", atomic_load(&srv->stores));
    add_u64(reply, "fetches", atomic_load(&srv->fetches));
    add_u64(reply, "bytes_in", atomic_load(&srv->bytes_in));
    add_u64(reply, "bytes_out", atomic_load(&srv->bytes_out));

    add_process(reply);
    add_latency(srv, reply);
    return 0;
}
