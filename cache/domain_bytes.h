/* domain_bytes.h - bytes charged to each sharing domain, for per-domain quotas.
 *
 * A small open-addressing map from domain to bytes, owned by one tier and
 * guarded by that tier's lock (it has none of its own). Domains are few (one
 * per uid or share group), so entries are never removed: a domain whose
 * bytes drop to 0 keeps its slot.
 */
#ifndef KVT_DOMAIN_BYTES_H
#define KVT_DOMAIN_BYTES_H

#include <stddef.h>
#include <stdint.h>

struct kvt_domain_bytes {
    uint64_t *keys;        /* domain + 1; 0 = empty slot */
    uint64_t *bytes;
    size_t cap, n;         /* cap is 0 or a power of two */
};

/* Make sure domain has a slot, so that later adds cannot fail.
 * Returns 0 or -ENOMEM. */
int domain_bytes_reserve(struct kvt_domain_bytes *m, uint32_t domain);
/* Bytes charged to domain (0 if it has no slot). */
uint64_t domain_bytes_get(const struct kvt_domain_bytes *m, uint32_t domain);
/* Charge or credit domain; its slot must have been reserved. */
void domain_bytes_add(struct kvt_domain_bytes *m, uint32_t domain, uint64_t bytes);
void domain_bytes_sub(struct kvt_domain_bytes *m, uint32_t domain, uint64_t bytes);
/* Copy up to max domains whose bytes exceed limit into out; returns how
 * many. */
size_t domain_bytes_over(const struct kvt_domain_bytes *m, uint64_t limit, uint32_t *out,
                         size_t max);
/* Free the map's memory (m itself is the caller's). */
void domain_bytes_free(struct kvt_domain_bytes *m);

#endif
