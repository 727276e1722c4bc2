/* remote.h - the remote tier: chunk records in a pool of memcached servers
 * shared by many hosts, written through in the background, sealed.
 *
 * The remote tier stores chunk images (chunk.h) under names made from a
 * scope (who may read them: a sharing domain's name and a model
 * namespace's identity, both the same on every host) and the chunk key's
 * object, layer and chunk number: never from host-local numbers such as
 * uids or namespace ids. Records are remote_format.h's, sealed or
 * checksummed (remote_seal.h); a record that fails any check is a miss,
 * counted as rejected.
 *
 * Writes are queued and done by the tier's own writer threads, which ask
 * the caller's source hook for the chunk's image when they get to it (the
 * queue holds keys, not copies). Reads are synchronous for the caller and
 * bounded in time: no call waits for a server longer than timeout_ms per
 * server, and a pool that is down costs a miss. Thread-safe.
 */
#ifndef KVT_REMOTE_H
#define KVT_REMOTE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "chunk.h"
#include "remote_pool.h"
#include "remote_seal.h"

struct kvt_remote;

/* A record's name: "kvt1/<scope hex>/<object hex>/<layer>/<chunk>", at
 * most REMOTE_NAME_MAX - 1 bytes (memcached allows 250), NUL-terminated. */
#define REMOTE_NAME_MAX 112
struct kvt_remote_name {
    uint32_t len;
    char s[REMOTE_NAME_MAX];
};

/* Who may read a record: the first 128 bits of the SHA-256 of the domain
 * name and the namespace's name and geometry (remote_scope). */
struct kvt_remote_scope {
    uint64_t hi, lo;
};

/* Called on a writer thread for a queued write: give emit(ctx, img) the
 * chunk's current image (absent rows zeroed) once and return its result,
 * or return -ENOENT when the chunk is gone from every local tier. */
typedef int (*remote_emit_fn)(void *ctx, const struct kvt_chunk_image *img);
typedef int (*remote_source_fn)(void *arg, const struct kvt_chunk_key *key,
                                remote_emit_fn emit, void *ctx);
/* Called by remote_get_many for each valid record, on the calling thread;
 * img is valid during the call only (img->key is the key asked for).
 * Returns 0, or -errno when the caller could not use it (counted as
 * rejected when -EBADMSG). */
typedef int (*remote_image_fn)(void *arg, size_t idx, const struct kvt_chunk_image *img);

struct kvt_remote_config {
    const char *servers;       /* remote_pool_config.servers */
    uint32_t replicas, timeout_ms;
    const uint8_t *key;        /* REMOTE_KEY_BYTES, or NULL: checksum only */
    uint32_t writers;          /* writer threads; 0 = 2 */
    uint32_t queue_max;        /* queued writes; 0 = 65536; more are dropped */
    remote_source_fn source;
    void *source_arg;
};

struct kvt_remote_stats {
    uint64_t gets, hits, misses;       /* records asked for, found valid, not */
    uint64_t rejected;                 /* found, but failed a check: misses */
    uint64_t errors;                   /* calls that met a failing server */
    uint64_t puts, put_errors, too_large, put_dropped, put_gone;
    uint64_t bytes_read, bytes_written;   /* item bytes */
    uint64_t get_calls, get_ns_total, get_ns_max;   /* remote_get_many latency */
    uint64_t put_ns_total, put_ns_max;
    uint64_t queued;                   /* writes waiting now */
    bool sealed;
    size_t n_servers;
    struct remote_server_stats servers[REMOTE_SERVERS_MAX];
};

/* Returns false when the digest failed (out of memory): no scope, so the
 * pool is not used for that call (never a shared fallback scope). */
bool remote_scope(const char *domain_name, const char *ns_name, uint32_t layers,
                  uint32_t heads, uint32_t dim, uint32_t chunk_tokens,
                  struct kvt_remote_scope *out);
void remote_record_name(const struct kvt_remote_scope *scope, const struct kvt_chunk_key *key,
                        struct kvt_remote_name *out);

/* Set the pool client up and start the writers. Nothing is connected yet.
 * Returns 0, -EINVAL (*why says why), -ENOMEM. */
int remote_open(const struct kvt_remote_config *cfg, struct kvt_remote **out, const char **why);
/* Stop and free: queued writes are done for up to timeout_ms per server,
 * those not begun by then are dropped (counted in put_dropped); a write
 * in hand is bounded by the timeout. So closing never waits on the pool
 * much longer than 2 x timeout_ms per server, however long the queue. */
void remote_close(struct kvt_remote *r);

/* Queue a write of key's chunk under name; returns at once. Returns 0, or
 * -ENOSPC when the queue is full (the write is dropped and counted). */
int remote_put_async(struct kvt_remote *r, const struct kvt_remote_name *name,
                     const struct kvt_chunk_key *key);
/* Wait until every write queued before the call was tried. */
void remote_drain(struct kvt_remote *r);

/* Ask the pool for n records (names[i] for keys[i], all of one shape
 * family) and call got for each valid one. Returns how many got accepted. */
size_t remote_get_many(struct kvt_remote *r, const struct kvt_remote_name *names,
                       const struct kvt_chunk_key *const *keys, size_t n,
                       remote_image_fn got, void *arg);

void remote_stats(struct kvt_remote *r, struct kvt_remote_stats *out);

#endif
