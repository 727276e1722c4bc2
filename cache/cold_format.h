/* cold_format.h - the cold file's on-disk format, byte by byte.
 *
 * Every integer is little-endian (the build refuses big-endian hosts rather
 * than byte-swap: kvtier runs on x86-64 and aarch64). Offsets are in bytes.
 *
 * File:
 *   0                        file header block, COLD_BLOCK (4096) bytes:
 *                            struct cold_file_header, then zeros
 *   4096 + i * region_bytes  region i, for i in [0, n_regions)
 *   file_bytes = 4096 + n_regions * region_bytes
 *
 * Region (region_bytes, a power of two >= 1 MiB):
 *   +0     region header block, 4096 bytes: struct cold_region_header, zeros
 *   +4096  records back to back. A record never crosses the region's end.
 *          After a cold_sync and before a region switch the writer pads the
 *          last write with zeros up to the next 4096 boundary and continues
 *          there, so a reader that finds zeros from a non-aligned position up
 *          to the next boundary skips to that boundary. Anything else that is
 *          not a record of this region's sequence number ends the region's log.
 *
 * Record (chunk kind):
 *   +0              struct cold_record_header (96 bytes)
 *   +96             presence bitmap: ceil(tokens / 64) u64 words, never compressed
 *                   (chunk_bitmap_bytes, chunk.h)
 *   +96 + bitmap    data block: stored_len bytes, an LZ4 block
 *                   (LZ4_compress_default) when flags has COLD_REC_LZ4, else the
 *                   raw data block of chunk.h (stored_len == raw_len)
 * Tombstones are a bare header (shape, raw_len, stored_len all zero).
 *
 * Record (name kind, format 3 on): a named context's name, so that listings
 * after a restart can show it (chunk keys hold only XXH3_128 of the name).
 *   +0              struct cold_record_header: key.ns_id, obj_hi, obj_lo and
 *                   domain those of the context's chunks, key.layer
 *                   COLD_NAME_LAYER, chunk_idx and reserved 0; shape zero,
 *                   flags 0, raw_len == stored_len == the block's bytes
 *   +96             name block: struct cold_name_block (24 bytes), then
 *                   model_len bytes of the namespace's model name, then
 *                   name_len bytes of the context name; no NUL in either,
 *                   no padding. XXH3_128 of the name is (obj_hi, obj_lo).
 * A name record lives like a chunk record: a newer one of its key replaces
 * it, tombstones drop it, and it goes with its region. The writer logs it
 * again with the context's chunk 0 of layer 0 whenever that chunk goes to a
 * newer region than the name's, so the name is never reclaimed before that
 * chunk (an object is counted by it, and without it the context's length
 * is 0). A reader that finds one whose block is not as above skips it,
 * counts it (names_skipped) and logs it.
 *
 * Checksums are XXH3-64. Record and region-header checksums are seeded with
 * the file header's random `seed`, so bytes a client stored inside a payload
 * can never be mistaken for a record of another file or forged without
 * reading the file (only the daemon can). The file header's own checksum
 * uses seed 0, as the seed is not known before it is read.
 *
 * Versions. Each header carries the format version it was written in:
 *   1  the first format. The shape's last 4 bytes were a u32 elem (0, 1, 2 or
 *      0xff), and an int8 data block had no outlier arrays.
 *   2  the shape's last 4 bytes are u16 elem, u16 outliers (chunk.h), and an
 *      int8 data block holds `outliers` f16 values and indices per token and
 *      head. On a little-endian disk a version-1 shape reads as the same elem
 *      with outliers 0, and a version-1 int8 block is exactly a version-2
 *      block with outliers 0: nothing else changed.
 *   3  adds name records (kind COLD_REC_NAME). A version-2 file is a
 *      version-3 file without them; a version-2 build would take the first
 *      name record of a region as the end of its log, hence the new version.
 * A build writes COLD_FORMAT_VERSION and reads COLD_FORMAT_VERSION_MIN up to
 * it; it refuses a file header of any other version (a newer build's file
 * is never read by guesswork). Opening a file of an older version upgrades
 * it: once recovery succeeded, its file header is rewritten in this version
 * and made durable before anything else is written, so a region header or
 * record is never newer than the file header above it. Region headers and
 * records of the older version stay where they are, readable, until their
 * region is reused. The rules a reader applies:
 *   - file header: MIN <= version <= COLD_FORMAT_VERSION, else refused;
 *   - region header: MIN <= version <= the file header's version as found at
 *     open, else the region is taken as unused;
 *   - record: version == its region header's version (a region's use is
 *     written by one process, in one version), and a version-1 chunk record
 *     has outliers 0; a record breaking either is taken as torn.
 */
#ifndef KVT_COLD_FORMAT_H
#define KVT_COLD_FORMAT_H

#include <stdint.h>

#include "chunk.h"

#if __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the cold file format is little-endian; add byte swapping first"
#endif

#define COLD_BLOCK 4096u               /* O_DIRECT alignment and header blocks */
#define COLD_FORMAT_VERSION 3u            /* written by this build */
#define COLD_FORMAT_VERSION_MIN 1u        /* the oldest this build reads */
#define COLD_FILE_MAGIC "KVTCOLD1"     /* 8 bytes, no terminator on disk */
#define COLD_REGION_MAGIC "KVTREGN1"
#define COLD_RECORD_MAGIC 0x5254564bu  /* "KVTR" read as a little-endian u32 */

struct cold_file_header {
    char     magic[8];         /*   0: COLD_FILE_MAGIC */
    uint32_t version;          /*   8: format version (see above) */
    uint32_t block_bytes;      /*  12: COLD_BLOCK */
    uint64_t region_bytes;     /*  16: size of every region */
    uint64_t file_bytes;       /*  24: 4096 + n_regions * region_bytes */
    uint8_t  uuid[16];         /*  32: random at creation; region headers carry it */
    uint64_t seed;             /*  48: random at creation; seeds record checksums */
    uint64_t created_unix;     /*  56: seconds since the epoch, informational */
    uint64_t reserved[7];      /*  64: zero */
    uint64_t checksum;         /* 120: XXH3-64, seed 0, of bytes 0..119 */
};
_Static_assert(sizeof(struct cold_file_header) == 128, "file header is 128 bytes");

struct cold_region_header {
    char     magic[8];         /*   0: COLD_REGION_MAGIC */
    uint32_t version;          /*   8: <= the file header's */
    uint32_t index;            /*  12: this region's number, guards misplaced copies */
    uint64_t seq;              /*  16: region sequence, >= 1; larger = newer use */
    uint8_t  file_uuid[16];    /*  24: cold_file_header.uuid */
    uint64_t first_record_seq; /*  40: first record seq of this use, informational */
    uint64_t reserved;         /*  48: zero */
    uint64_t checksum;         /*  56: XXH3-64, file seed, of bytes 0..55 */
};
_Static_assert(sizeof(struct cold_region_header) == 64, "region header is 64 bytes");

enum cold_record_kind {
    COLD_REC_CHUNK = 1,        /* a chunk image under `key` */
    COLD_REC_TOMB_OBJECT = 2,  /* drops older records of key.ns_id/obj_hi/obj_lo */
    COLD_REC_TOMB_NAMESPACE = 3, /* drops older records of key.ns_id (0 = all) */
    COLD_REC_NAME = 4,         /* a context's name (format 3 on) */
};

#define COLD_NAME_FIRST_VERSION 3u     /* the first format with name records */
#define COLD_NAME_LAYER 0xffffffffu    /* key.layer of a name record: no chunk's */
#define COLD_NAME_MODEL_MAX 127u       /* bytes of a model name (daemon's bound) */
#define COLD_NAME_CONTEXT_MAX 255u     /* bytes of a context name (KVT_CTX_NAME_MAX) */

/* The fixed start of a name record's block: the namespace's identity
 * besides its domain (in the key), so that a restarted daemon can list the
 * namespace and measure the context without a client attaching it. */
struct cold_name_block {
    uint32_t layers;           /*   0: 1..COLD_NAME_LAYERS_MAX */
    uint32_t heads;            /*   4: 1..KVT_CHUNK_MAX_HEADS */
    uint32_t dim;              /*   8: 1..KVT_CHUNK_MAX_DIM */
    uint32_t chunk_tokens;     /*  12: 1..KVT_CHUNK_MAX_TOKENS */
    uint8_t  model_len;        /*  16: 1..COLD_NAME_MODEL_MAX */
    uint8_t  name_len;         /*  17: 1..COLD_NAME_CONTEXT_MAX */
    uint16_t reserved;         /*  18: zero */
    uint32_t reserved2;        /*  20: zero */
};
_Static_assert(sizeof(struct cold_name_block) == 24, "name block is 24 bytes");
#define COLD_NAME_LAYERS_MAX 1024u      /* the wire protocol's bound (KVT_GEOM_MAX) */
#define COLD_NAME_BLOCK_MAX (24u + COLD_NAME_MODEL_MAX + COLD_NAME_CONTEXT_MAX)

#define COLD_REC_LZ4 0x01u     /* record flag: the data block is LZ4-compressed */

struct cold_record_header {
    uint32_t magic;            /*   0: COLD_RECORD_MAGIC */
    uint16_t version;          /*   4: its region header's version */
    uint8_t  kind;             /*   6: enum cold_record_kind */
    uint8_t  flags;            /*   7: COLD_REC_LZ4 or 0 */
    struct kvt_chunk_key key;  /*   8: 40 bytes, chunk.h layout */
    struct kvt_chunk_shape shape; /* 48: 16 bytes: tokens, heads, dim, elem, outliers */
    uint64_t seq;              /*  64: record sequence, unique, grows with the log */
    uint64_t region_seq;       /*  72: seq of the region use it was written in */
    uint32_t raw_len;          /*  80: data block bytes = chunk_data_bytes(&shape) */
    uint32_t stored_len;       /*  84: data block bytes on disk, <= raw_len */
    uint64_t checksum;         /*  88: XXH3-64, file seed, of the whole record
                                *      (header with this field zero, bitmap, data) */
};
_Static_assert(sizeof(struct cold_record_header) == 96, "record header is 96 bytes");
_Static_assert(sizeof(struct kvt_chunk_shape) == 16, "chunk shape is 16 bytes");

#endif
