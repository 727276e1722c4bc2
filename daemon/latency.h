/* latency.h - lock-free latency histograms for the admin stats. */
#ifndef KVT_LATENCY_H
#define KVT_LATENCY_H

#include <stdatomic.h>
#include <stdint.h>

/* Bucket i counts requests that took [2^(i-1), 2^i) microseconds (bucket 0:
 * under 1 us), so a percentile is exact to a factor of two: enough to tell
 * 20 us from 2 ms, at the cost of one atomic add per request. */
#define LATENCY_BUCKETS 40

struct kvt_latency {
    atomic_ulong bucket[LATENCY_BUCKETS];
    atomic_ulong sum_ns;             /* of every request recorded */
};

void latency_record(struct kvt_latency *l, uint64_t ns);
/* Upper bound in microseconds of the p-th percentile (0 < p <= 100), 0 when
 * nothing was recorded; *count gets the number of requests. */
uint64_t latency_percentile_us(const struct kvt_latency *l, double p, uint64_t *count);
/* The counts of every bucket (n[i]: requests under 2^i us, the last bucket
 * everything longer) and the sum of their times in nanoseconds, for a
 * Prometheus histogram. Read without a lock: a request recorded meanwhile
 * may be in the sum and not yet in its bucket, or the other way round. */
void latency_snapshot(const struct kvt_latency *l, uint64_t n[LATENCY_BUCKETS],
                      uint64_t *sum_ns);
/* Monotonic clock in nanoseconds. */
uint64_t latency_now_ns(void);

#endif
