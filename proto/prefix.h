/* prefix.h - token-addressed chunk keys: a chained hash over token chunks.
 *
 * Part of the protocol: the client derives the keys it sends, and the daemon
 * derives the keys of partial chunks for MATCH_PREFIX, both with this code. */
#ifndef KVT_PREFIX_H
#define KVT_PREFIX_H

#include <stdint.h>

#include "proto/proto.h"

/* Number of chunk keys for n_tokens tokens: ceil(n_tokens / chunk_tokens). */
uint32_t prefix_n_keys(uint32_t n_tokens, uint32_t chunk_tokens);

/* keys[i] = H(keys[i-1], count, tokens of chunk i), keys[-1] = 0, where the
 * last chunk may be partial. Because each key hashes its predecessor, key i
 * names the whole prefix tokens[0 .. end of chunk i), so equal prefixes give
 * equal keys whoever computes them, and a partial tail never collides with
 * the full chunk it starts. keys holds prefix_n_keys() entries. Returns 0
 * or -ENOMEM. */
int prefix_keys(const int32_t *tokens, uint32_t n_tokens, uint32_t chunk_tokens,
                struct kvt_wire_key *keys);

/* *key = the key of a chunk of `count` tokens (1..chunk_tokens) that follows
 * the chunk keyed *prev (NULL: it is the first chunk), i.e. the key
 * prefix_keys gives the last chunk of a call that ends after those tokens.
 * Returns 0 or -ENOMEM. */
int prefix_key_after(const struct kvt_wire_key *prev, const int32_t *tokens,
                     uint32_t count, struct kvt_wire_key *key);

#endif
