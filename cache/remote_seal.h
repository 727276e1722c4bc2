/* remote_seal.h - seals and checks remote records: AES-256-GCM (OpenSSL
 * libcrypto) with a pool key, or an XXH3-128 checksum without one.
 *
 * The record layout is remote_format.h's. Both directions work in place on
 * a whole item (header + payload) so a record is built and read with no
 * second copy. Thread-safe: a seal holds only its key.
 */
#ifndef KVT_REMOTE_SEAL_H
#define KVT_REMOTE_SEAL_H

#include <stddef.h>
#include <stdint.h>

#define REMOTE_KEY_BYTES 32

struct remote_seal;

/* key: REMOTE_KEY_BYTES bytes, or NULL for the checksum only. Returns 0 or
 * -ENOMEM. */
int remote_seal_create(const uint8_t *key, struct remote_seal **out);
void remote_seal_free(struct remote_seal *s);
/* REMOTE_SEAL_AES256GCM with a key, else REMOTE_SEAL_XXH3. */
uint16_t remote_seal_kind(const struct remote_seal *s);

/* Fill the header's seal, nonce and tag of item (header fields magic ..
 * shape and the payload already in place, len bytes in all), encrypting
 * the payload in place when sealed. name is the item's name. Returns 0,
 * -EIO when the cipher fails. */
int remote_seal_close(const struct remote_seal *s, const char *name, size_t name_len,
                      void *item, size_t len);
/* Check item (len bytes, already checked to hold a header whose seal is
 * this seal's kind and payload_bytes == len - header) under name and, when
 * sealed, decrypt its payload in place. Returns 0 or -EBADMSG. */
int remote_seal_open(const struct remote_seal *s, const char *name, size_t name_len,
                     void *item, size_t len);

/* Read a key file: 32 raw bytes, or 64 hex digits with an optional final
 * newline. Returns 0, -errno of open/read, or -EINVAL (with why set) for
 * any other content; warns through *why too (why non-NULL, rc 0) when the
 * file can be read by group or others. */
int remote_seal_read_key(const char *path, uint8_t key[REMOTE_KEY_BYTES], const char **why);

#endif
