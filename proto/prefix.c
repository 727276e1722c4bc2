/* prefix.c - chained xxh3-128 keys for token-addressed prefix chunks. */
#include "proto/prefix.h"

#include <errno.h>
#include <xxhash.h>

/* Changing the seed or the hashed layout changes every key: it is part of the
 * protocol (docs/protocol.md, "Token keys"). */
#define PREFIX_SEED UINT64_C(0x6b7674696572)    /* "kvtier" */

uint32_t prefix_n_keys(uint32_t n_tokens, uint32_t chunk_tokens)
{
    return (uint32_t)(((uint64_t)n_tokens + chunk_tokens - 1) / chunk_tokens);
}

/* H(prev, count, tokens[0..count)) with a reusable state. */
static void key_of(XXH3_state_t *st, struct kvt_wire_key prev, const int32_t *tokens,
                   uint32_t count, struct kvt_wire_key *key)
{
    /* Little-endian fields: the key must not depend on the host. */
    uint8_t head[20];
    for (int b = 0; b < 8; b++) {
        head[b] = (uint8_t)(prev.hi >> (8 * b));
        head[8 + b] = (uint8_t)(prev.lo >> (8 * b));
    }
    for (int b = 0; b < 4; b++)
        head[16 + b] = (uint8_t)(count >> (8 * b));

    XXH3_128bits_reset_withSeed(st, PREFIX_SEED);
    XXH3_128bits_update(st, head, sizeof(head));
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    XXH3_128bits_update(st, tokens, (size_t)count * sizeof(int32_t));
#else
    for (uint32_t t = 0; t < count; t++) {
        uint32_t v = (uint32_t)tokens[t];
        uint8_t le[4] = { (uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16),
                          (uint8_t)(v >> 24) };
        XXH3_128bits_update(st, le, sizeof(le));
    }
#endif
    XXH128_hash_t h = XXH3_128bits_digest(st);
    key->hi = h.high64;
    key->lo = h.low64;
}

int prefix_keys(const int32_t *tokens, uint32_t n_tokens, uint32_t chunk_tokens,
                struct kvt_wire_key *keys)
{
    /* Heap state: its layout is private to the library's ABI. */
    XXH3_state_t *st = XXH3_createState();
    struct kvt_wire_key prev = { 0, 0 };
    uint32_t n_keys = prefix_n_keys(n_tokens, chunk_tokens);

    if (!st)
        return -ENOMEM;
    for (uint32_t i = 0; i < n_keys; i++) {
        uint32_t first = i * chunk_tokens;
        uint32_t count = n_tokens - first < chunk_tokens ? n_tokens - first
                                                         : chunk_tokens;
        key_of(st, prev, tokens + first, count, &keys[i]);
        prev = keys[i];
    }
    XXH3_freeState(st);
    return 0;
}

int prefix_key_after(const struct kvt_wire_key *prev, const int32_t *tokens,
                     uint32_t count, struct kvt_wire_key *key)
{
    XXH3_state_t *st = XXH3_createState();
    struct kvt_wire_key first = { 0, 0 };

    if (!st)
        return -ENOMEM;
    key_of(st, prev ? *prev : first, tokens, count, key);
    XXH3_freeState(st);
    return 0;
}
