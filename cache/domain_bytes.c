/* domain_bytes.c - per-sharing-domain byte counts: a linear-probing map. */
#include <errno.h>
#include <stdlib.h>

#include "domain_bytes.h"

#define DOMAIN_BYTES_INITIAL 16

static size_t slot_of(const struct kvt_domain_bytes *m, uint64_t key)
{
    /* Fibonacci hashing: uids are dense small numbers. */
    size_t i = (size_t)((key * UINT64_C(0x9e3779b97f4a7c15)) >> 32) & (m->cap - 1);

    while (m->keys[i] && m->keys[i] != key)
        i = (i + 1) & (m->cap - 1);
    return i;
}

static int grow(struct kvt_domain_bytes *m)
{
    struct kvt_domain_bytes bigger = { .cap = m->cap ? m->cap * 2 : DOMAIN_BYTES_INITIAL };

    bigger.keys = calloc(bigger.cap, sizeof(*bigger.keys));
    bigger.bytes = calloc(bigger.cap, sizeof(*bigger.bytes));
    if (!bigger.keys || !bigger.bytes) {
        domain_bytes_free(&bigger);
        return -ENOMEM;
    }
    for (size_t i = 0; i < m->cap; i++) {
        if (!m->keys[i])
            continue;
        size_t j = slot_of(&bigger, m->keys[i]);
        bigger.keys[j] = m->keys[i];
        bigger.bytes[j] = m->bytes[i];
    }
    bigger.n = m->n;
    domain_bytes_free(m);
    *m = bigger;
    return 0;
}

int domain_bytes_reserve(struct kvt_domain_bytes *m, uint32_t domain)
{
    uint64_t key = (uint64_t)domain + 1;
    size_t i;

    if (m->cap && m->keys[slot_of(m, key)] == key)
        return 0;
    /* Keep the load at most one half, so probes stay short. */
    if ((m->n + 1) * 2 > m->cap) {
        int rc = grow(m);
        if (rc < 0)
            return rc;
    }
    i = slot_of(m, key);
    m->keys[i] = key;
    m->bytes[i] = 0;
    m->n++;
    return 0;
}

uint64_t domain_bytes_get(const struct kvt_domain_bytes *m, uint32_t domain)
{
    uint64_t key = (uint64_t)domain + 1;
    size_t i;

    if (!m->cap)
        return 0;
    i = slot_of(m, key);
    return m->keys[i] == key ? m->bytes[i] : 0;
}

/* A domain without a slot is a caller's bug; it is ignored rather than
 * written into an empty slot, which would corrupt the probe chains. */
void domain_bytes_add(struct kvt_domain_bytes *m, uint32_t domain, uint64_t bytes)
{
    uint64_t key = (uint64_t)domain + 1;
    size_t i;

    if (!m->cap)
        return;
    i = slot_of(m, key);
    if (m->keys[i] == key)
        m->bytes[i] += bytes;
}

void domain_bytes_sub(struct kvt_domain_bytes *m, uint32_t domain, uint64_t bytes)
{
    domain_bytes_add(m, domain, -bytes);   /* modulo 2^64: the same as -= */
}

void domain_bytes_free(struct kvt_domain_bytes *m)
{
    free(m->keys);
    free(m->bytes);
    m->keys = NULL;
    m->bytes = NULL;
    m->cap = m->n = 0;
}

size_t domain_bytes_over(const struct kvt_domain_bytes *m, uint64_t limit, uint32_t *out,
                         size_t max)
{
    size_t n = 0;

    for (size_t i = 0; i < m->cap && n < max; i++)
        if (m->keys[i] && m->bytes[i] > limit)
            out[n++] = (uint32_t)(m->keys[i] - 1);
    return n;
}
