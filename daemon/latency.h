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
};

void latency_record(struct kvt_latency *l, uint64_t ns);
/* Upper bound in microseconds of the p-th percentile (0 < p <= 100), 0 when
 * nothing was recorded; *count gets the number of requests. */
uint64_t latency_percentile_us(const struct kvt_latency *l, double p, uint64_t *count);
/* Monotonic clock in nanoseconds. */
uint64_t latency_now_ns(void);

#endif
