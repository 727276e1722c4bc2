/* remote_format.h - a remote tier record as it sits in a memcached item, byte by byte.
 *
 * Every integer is little-endian (as cold_format.h: the build runs on
 * little-endian hosts only). A record is one memcached item:
 *
 *   +0   struct kvt_remote_record_header (64 bytes)
 *   +64  payload, payload_bytes bytes:
 *          presence bitmap, chunk_bitmap_bytes(shape.tokens) bytes (chunk.h)
 *          data block, chunk_data_bytes(&shape) bytes (chunk.h), the rows of
 *          absent tokens zeroed
 *        sealed (seal == REMOTE_SEAL_AES256GCM): the payload is AES-256-GCM
 *        ciphertext under the record's own key, HMAC-SHA256(pool key,
 *        "kvtier remote record key 1" || key_salt), and `nonce`, and `tag`
 *        is its GCM tag; key_salt and nonce are random per record;
 *        plain (REMOTE_SEAL_XXH3): the payload is as above and `tag` is the
 *        XXH3-128 of the item's name, the header with tag zeroed, and the
 *        payload, low 64 bits first.
 *
 * The associated data of the seal, and the prefix of the checksum, is the
 * item's name followed by the header with tag zeroed: a record copied
 * under another name, or with its shape edited, fails its check. Names
 * are made by remote_record_name (remote.h).
 *
 * A reader takes a record only if magic, version and seal are what it
 * writes itself (a plain record is refused by a host holding a key, a
 * sealed one by a host without), the shape is valid, payload_bytes is
 * exactly the bitmap and data block of that shape, the item's length is
 * 64 + payload_bytes, and the check passes. Anything else is a miss
 * (counted as rejected), never data.
 */
#ifndef KVT_REMOTE_FORMAT_H
#define KVT_REMOTE_FORMAT_H

#include <stdint.h>

#include "chunk.h"

#define REMOTE_RECORD_MAGIC 0x5254564bu   /* "KVTR" */
#define REMOTE_RECORD_VERSION 1
#define REMOTE_SEAL_XXH3 0
#define REMOTE_SEAL_AES256GCM 1
#define REMOTE_SALT_BYTES 8
#define REMOTE_NONCE_BYTES 12
#define REMOTE_TAG_BYTES 16

/* Why a key per record: many hosts seal under one pool key with no shared
 * counter, so nonces are random, and random 96-bit GCM nonces under one
 * key are good for 2^32 records (NIST SP 800-38D), which a busy fleet
 * writes in hours; one repeat would leak the key's GHASH subkey. With the
 * salt, a nonce repeat matters only under a repeated salt too: 160 random
 * bits per record. */
struct kvt_remote_record_header {
    uint32_t magic;            /* REMOTE_RECORD_MAGIC */
    uint16_t version;          /* REMOTE_RECORD_VERSION */
    uint16_t seal;             /* REMOTE_SEAL_* */
    uint32_t payload_bytes;    /* bytes after this header */
    struct kvt_chunk_shape shape;
    uint8_t key_salt[REMOTE_SALT_BYTES]; /* random per record; 0 when plain */
    uint8_t nonce[REMOTE_NONCE_BYTES];   /* random per record; 0 when plain */
    uint8_t tag[REMOTE_TAG_BYTES];
};
_Static_assert(sizeof(struct kvt_remote_record_header) == 64, "remote record header is 64 bytes");

#endif
