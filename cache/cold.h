/* cold.h - SSD tier: one preallocated file, a log of LZ4 records in large
 * regions, written and read with io_uring + O_DIRECT (pread/pwrite fallback),
 * every record checksummed with xxh3, the index rebuilt from disk on open.
 *
 * The cold tier stores chunk images: a chunk key, its shape, its presence
 * bitmap and its data block (chunk.h). It copies what it is given; callers
 * own their buffers (struct kvt_chunk_image: chunk.h). All functions are
 * thread-safe.
 */
#ifndef KVT_COLD_H
#define KVT_COLD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "chunk.h"

struct kvt_cold;

struct kvt_cold_config {
    const char *path;          /* the cold file; created if missing */
    uint64_t bytes;            /* file size; rounded down to a 4 KiB header
                                * plus whole regions, at least 2 regions */
    uint32_t region_bytes;     /* 0 = default (64 MiB); power of two >= 1 MiB,
                                * <= 1 GiB */
    bool force_pread;          /* skip io_uring, use pread/pwrite */
    /* Write buffers: records are packed into them and each full buffer is
     * one aligned write. 0 = defaults (8 buffers of 1 MiB); at most 64;
     * buffer bytes a power of two >= 64 KiB (clipped to region_bytes). */
    uint32_t write_buffers;
    uint32_t write_buffer_bytes;
    /* Called once per burst of I/O errors and for the one fallback warning;
     * level is a syslog priority. May be NULL. */
    void (*log)(void *arg, int level, const char *msg);
    void *log_arg;
    /* Told the keys of chunk records whose write failed (a full disk, an
     * I/O error): they have left the index, so the caller must write them
     * again from wherever it still holds them. Returns how many of the n it
     * no longer holds: those are lost, counted in records_lost and logged.
     * Called once per failed write, on the backend's completion thread or
     * inside cold_put, cold_sync or cold_close, with no lock of the cold
     * tier held; every call for a failure has returned before the
     * cold_sync or cold_close that covers it returns. It must not call the
     * cold tier, nor wait for anything that may wait for a cold_put (a
     * chunk lock held across one). keys is valid during the call only.
     * NULL: every such record counts as lost. */
    uint64_t (*unwritten)(void *arg, const struct kvt_chunk_key *keys, size_t n);
    void *unwritten_arg;
};

struct kvt_cold_stats {
    uint64_t capacity_bytes, used_bytes;   /* live record bytes on disk */
    uint64_t records;                      /* live records in the index */
    uint64_t puts, gets, hits, misses;
    uint64_t bytes_written, bytes_read;    /* file bytes, after compression */
    uint64_t raw_bytes_in;                 /* payload bytes before compression */
    uint64_t checksum_failures, io_errors;
    uint64_t regions_reclaimed, records_recovered;
    uint64_t records_torn;     /* bad records (torn or corrupt) found at open
                                * (also in checksum_failures) */
    uint64_t quota_drops;      /* records dropped for a domain's quota */
    uint64_t records_unwritten;    /* chunk records whose write failed */
    uint64_t records_lost;     /* of those, the ones the unwritten hook no
                                * longer held: gone from every tier */
    uint64_t names;            /* live name records (not in `records`) */
    uint64_t names_skipped;    /* name records found malformed at open, or
                                * refused by cold_name_refuse */
    bool uring;                            /* false when using pread/pwrite */
};

/* Open (creating and preallocating if needed) and rebuild the index from the
 * file. Torn or corrupt records are skipped. Returns 0, or -errno when the file
 * cannot be opened or sized (a bad on-disk header, or one whose region size or
 * file size differs from cfg, is -EINVAL, with the file left untouched;
 * -EBUSY if another cold_open holds the file). */
int cold_open(const struct kvt_cold_config *cfg, struct kvt_cold **out);
/* Write out buffered records (not fsynced unless cold_sync ran) and close.
 * No other call on cold may run concurrently or afterwards. */
void cold_close(struct kvt_cold *cold);

/* Set the live record bytes each sharing domain (key.domain) may hold in
 * the index; 0 = no quota. Holds at once: a domain over it loses its
 * oldest records now (counted in quota_drops), as a put over it would. */
void cold_set_domain_quota(struct kvt_cold *cold, uint64_t bytes);
/* Up to max sharing domains that hold live records, into out; returns how
 * many. */
size_t cold_domains(struct kvt_cold *cold, uint32_t *out, size_t max);
/* Live record bytes of domain now. */
uint64_t cold_domain_used(struct kvt_cold *cold, uint32_t domain);

/* What the cold tier holds of one namespace. */
struct kvt_cold_ns_usage {
    uint64_t ns_id;
    uint32_t domain;
    uint64_t records;          /* live chunk records */
    uint64_t bytes;            /* their bytes in the file */
    uint64_t objects;          /* contexts or token prefixes: their chunk 0 of layer 0 */
};
/* Every namespace with live records, by ns_id, into *out (malloc'd, the
 * caller frees; NULL when none) and *n. Returns 0 or -ENOMEM. */
int cold_namespace_usage(struct kvt_cold *cold, struct kvt_cold_ns_usage **out, size_t *n);

/* Append a record for img (replacing any older record of the same key). If
 * the key's domain would go over the domain quota, that domain's oldest
 * records leave the index first (they become misses; other domains' records
 * are never dropped for it), counted in quota_drops. The
 * data is compressed into the current write buffer, so this returns before
 * the disk write; it blocks only when every write buffer is in flight.
 * Returns 0, -EINVAL for NULL pointers, a shape out of chunk.h's bounds or
 * a key whose layer is COLD_NAME_LAYER (a name record's, cold_format.h),
 * -E2BIG if the record is larger than a region, -ENOMEM, or -EIO if a write
 * failed while the record was appended (the record is then not stored, and
 * its key goes to the unwritten hook like the failed write's records). */
int cold_put(struct kvt_cold *cold, const struct kvt_chunk_image *img);

/* A named context's name with its namespace's identity, as the cold tier
 * keeps it (a name record, cold_format.h). Strings are NUL-terminated
 * copies of model_len / name_len bytes without a NUL. */
struct kvt_cold_name {
    uint64_t ns_id, obj_hi, obj_lo;    /* obj: XXH3_128 of name (high, low) */
    uint32_t domain;
    uint32_t layers, heads, dim, chunk_tokens;
    uint32_t model_len, name_len;
    char model[128];                   /* 1..127 bytes */
    char name[256];                    /* 1..255 bytes */
};

/* cold_put, and for the chunk 0 of layer 0 of a named context also keep
 * its name (NULL: none given). The name is logged after the chunk, once
 * per region: when the tier holds it already in the region being written,
 * nothing more is written; when it holds it in an older one, it is logged
 * again (from memory, when name is NULL), so that the name stays as long
 * as that chunk does. It leaves with the context's records (a drop, the
 * region's reuse). Returns what cold_put returns. A name that does not
 * belong to img's key or is out of bounds is not kept (logged once) and
 * the chunk is put without it, as with NULL. */
int cold_put_named(struct kvt_cold *cold, const struct kvt_chunk_image *img,
                   const struct kvt_cold_name *name);
/* Every name the tier holds, into *out (malloc'd, the caller frees; NULL
 * when none) and *n, in no order. One walk of the index under its lock:
 * meant for open, not for a listing on a loop. Returns 0 or -ENOMEM. */
int cold_names(struct kvt_cold *cold, struct kvt_cold_name **out, size_t *n);
/* Forget a name the caller found wrong (its namespace identity does not
 * give its ns_id): it leaves the index, counted in names_skipped. Its
 * record stays on disk until its region is reused, and is refused again
 * at the next open. */
void cold_name_refuse(struct kvt_cold *cold, const struct kvt_cold_name *name);

/* Without I/O: is key present, and how many tokens from token 0 are present
 * without a gap? Returns 0 or -ENOENT. */
int cold_lookup(struct kvt_cold *cold, const struct kvt_chunk_key *key,
                uint32_t *leading_tokens);

/* Read, verify and decompress the record of key. On success fills *shape,
 * present[] (room for KVT_CHUNK_MAX_TOKENS bits; bits past shape->tokens are
 * zeroed) and data (data_cap bytes). Returns 0, -ENOENT if absent, -EBADMSG
 * on a checksum or format failure (the record is then dropped from the index
 * and counted), -ENOSPC if data_cap is too small, -EINVAL, -ENOMEM, or -EIO
 * (the record is dropped as well, so the next get misses). */
int cold_get(struct kvt_cold *cold, const struct kvt_chunk_key *key,
             struct kvt_chunk_shape *shape, uint64_t *present,
             void *data, size_t data_cap);
/* cold_get that also gives the record's sequence number (*seq), which is
 * new whenever key's record is replaced, or dropped and written again: a
 * record read earlier is still key's record while cold_record_seq gives
 * the same number. */
int cold_get_seq(struct kvt_cold *cold, const struct kvt_chunk_key *key,
                 struct kvt_chunk_shape *shape, uint64_t *present,
                 void *data, size_t data_cap, uint64_t *seq);
/* The sequence number of key's record now, without I/O. Returns 0 or
 * -ENOENT. */
int cold_record_seq(struct kvt_cold *cold, const struct kvt_chunk_key *key, uint64_t *seq);

/* Forget records: every chunk of an object / a namespace (0 = all). The
 * index forgets them at once; a tombstone is logged so that they stay
 * forgotten after a restart, once it is on disk: cold_sync_tombstones or
 * cold_sync makes it so. A tombstone whose write fails is kept and logged
 * again, under its own sequence number, before the next record and by
 * every sync, until a write of it succeeds. Returns how many records were
 * dropped. */
uint64_t cold_drop_object(struct kvt_cold *cold, uint64_t ns_id,
                          uint64_t obj_hi, uint64_t obj_lo);
uint64_t cold_drop_namespace(struct kvt_cold *cold, uint64_t ns_id);

/* Write every buffered record (and tombstone, failed ones logged again) and
 * fsync: once it returns 0, every record put and every drop before the call
 * survives a crash or power loss. Returns 0, -EIO while a tombstone is still
 * not written, or the -errno of
 * the first write or fsync failure since the previous cold_sync (the records
 * of a failed write have been dropped and handed to the unwritten hook,
 * which has returned for each of them by then; records_lost says which of
 * them are gone). */
int cold_sync(struct kvt_cold *cold);

/* Make every tombstone logged before the call durable: log again those
 * whose write failed, write the buffers, wait, fsync. Chunk records in the
 * same writes are written too, but their errors are left for cold_sync.
 * Returns 0 once every tombstone logged before the call survives a crash,
 * or -EIO (some are still kept for the next write: their drops hold in the
 * index, and may be undone by a restart until that write succeeds). */
int cold_sync_tombstones(struct kvt_cold *cold);
/* Without I/O: is a tombstone whose write failed (or one that could not be
 * tracked), or one of a drop that dropped any record (a name record too,
 * though cold_drop_* count only chunks), not yet known to be on disk? It may have been logged again already, by any
 * append, and sit in a write buffer: a drop must sync while this is true,
 * even one that dropped nothing (a client retrying a failed drop). */
bool cold_tombstones_behind(struct kvt_cold *cold);

void cold_stats(struct kvt_cold *cold, struct kvt_cold_stats *out);

#endif
