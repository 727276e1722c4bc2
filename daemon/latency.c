/* latency.c - log2 histograms of request latency, read as percentiles. */
#include "daemon/latency.h"

#include <time.h>

uint64_t latency_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

void latency_record(struct kvt_latency *l, uint64_t ns)
{
    uint64_t us = ns / 1000;
    unsigned i = us ? 64 - (unsigned)__builtin_clzll(us) : 0;
    if (i >= LATENCY_BUCKETS)
        i = LATENCY_BUCKETS - 1;
    atomic_fetch_add_explicit(&l->bucket[i], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&l->sum_ns, ns, memory_order_relaxed);
}

void latency_snapshot(const struct kvt_latency *l, uint64_t n[LATENCY_BUCKETS],
                      uint64_t *sum_ns)
{
    for (unsigned i = 0; i < LATENCY_BUCKETS; i++)
        n[i] = atomic_load_explicit(&l->bucket[i], memory_order_relaxed);
    *sum_ns = atomic_load_explicit(&l->sum_ns, memory_order_relaxed);
}

uint64_t latency_percentile_us(const struct kvt_latency *l, double p, uint64_t *count)
{
    uint64_t n[LATENCY_BUCKETS], total = 0, seen = 0;

    for (unsigned i = 0; i < LATENCY_BUCKETS; i++) {
        n[i] = atomic_load_explicit(&l->bucket[i], memory_order_relaxed);
        total += n[i];
    }
    *count = total;
    if (total == 0)
        return 0;
    /* The rank of the p-th percentile, rounded up, at least 1. */
    uint64_t rank = (uint64_t)((double)total * p / 100.0 + 0.999999);
    if (rank < 1)
        rank = 1;
    for (unsigned i = 0; i < LATENCY_BUCKETS; i++) {
        seen += n[i];
        if (seen >= rank)
            return (uint64_t)1 << i;
    }
    return (uint64_t)1 << (LATENCY_BUCKETS - 1);
}
