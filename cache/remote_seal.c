/* remote_seal.c - AES-256-GCM or XXH3-128 over a remote record, in place. */
#include "cache/remote_seal.h"

#include <ctype.h>
#include <stdbool.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <openssl/crypto.h>
#include <xxhash.h>

#include "cache/remote_format.h"

struct remote_seal {
    bool sealed;
    uint8_t key[REMOTE_KEY_BYTES];
};

int remote_seal_create(const uint8_t *key, struct remote_seal **out)
{
    struct remote_seal *s = calloc(1, sizeof(*s));

    if (!s)
        return -ENOMEM;
    if (key) {
        s->sealed = true;
        memcpy(s->key, key, REMOTE_KEY_BYTES);
    }
    *out = s;
    return 0;
}

void remote_seal_free(struct remote_seal *s)
{
    if (!s)
        return;
    OPENSSL_cleanse(s->key, sizeof(s->key));
    free(s);
}

uint16_t remote_seal_kind(const struct remote_seal *s)
{
    return s->sealed ? REMOTE_SEAL_AES256GCM : REMOTE_SEAL_XXH3;
}

/* The checksum of a plain record: name, header with tag zeroed, payload. */
static XXH128_hash_t plain_sum(const char *name, size_t name_len, const uint8_t *item,
                               size_t len)
{
    struct kvt_remote_record_header h;
    XXH3_state_t *st = XXH3_createState();
    XXH128_hash_t sum = { 0, 0 };

    if (!st)
        return sum;    /* a sum nobody writes: the record then fails, a miss */
    memcpy(&h, item, sizeof(h));
    memset(h.tag, 0, sizeof(h.tag));
    XXH3_128bits_reset(st);
    XXH3_128bits_update(st, name, name_len);
    XXH3_128bits_update(st, &h, sizeof(h));
    XXH3_128bits_update(st, item + sizeof(h), len - sizeof(h));
    sum = XXH3_128bits_digest(st);
    XXH3_freeState(st);
    return sum;
}

/* The record's own key: HMAC-SHA256(pool key, label || salt). */
static bool record_key(const struct remote_seal *s, const uint8_t salt[REMOTE_SALT_BYTES],
                       uint8_t out[32])
{
    static const char label[] = "kvtier remote record key 1";
    uint8_t msg[sizeof(label) + REMOTE_SALT_BYTES];
    unsigned out_len = 0;

    memcpy(msg, label, sizeof(label));
    memcpy(msg + sizeof(label), salt, REMOTE_SALT_BYTES);
    return HMAC(EVP_sha256(), s->key, REMOTE_KEY_BYTES, msg, sizeof(msg), out, &out_len) &&
           out_len == 32;
}

/* One GCM pass over the payload in place; enc 1 seals, 0 opens (then
 * tag is checked). */
static int gcm(const struct remote_seal *s, int enc, const char *name, size_t name_len,
               uint8_t *item, size_t len)
{
    struct kvt_remote_record_header *hp = (void *)item, aad;
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    int out_len, rc = enc ? -EIO : -EBADMSG;
    uint8_t *p = item + sizeof(aad), key[32];
    size_t left = len - sizeof(aad);

    if (!ctx)
        return enc ? -EIO : -EBADMSG;
    memcpy(&aad, item, sizeof(aad));
    memset(aad.tag, 0, sizeof(aad.tag));
    if (!record_key(s, hp->key_salt, key) ||
        EVP_CipherInit_ex(ctx, EVP_aes_256_gcm(), NULL, NULL, NULL, enc) != 1 ||
        EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_IVLEN, REMOTE_NONCE_BYTES, NULL) != 1 ||
        EVP_CipherInit_ex(ctx, NULL, NULL, key, hp->nonce, enc) != 1 ||
        EVP_CipherUpdate(ctx, NULL, &out_len, (const uint8_t *)name, (int)name_len) != 1 ||
        EVP_CipherUpdate(ctx, NULL, &out_len, (const uint8_t *)&aad, sizeof(aad)) != 1)
        goto out;
    /* int lengths: cut the payload in slices well below INT_MAX. */
    while (left) {
        int take = left > (1u << 30) ? 1 << 30 : (int)left;
        if (EVP_CipherUpdate(ctx, p, &out_len, p, take) != 1)
            goto out;
        p += take;
        left -= (size_t)take;
    }
    if (!enc && EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, REMOTE_TAG_BYTES, hp->tag) != 1)
        goto out;
    if (EVP_CipherFinal_ex(ctx, p, &out_len) != 1)
        goto out;
    if (enc && EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, REMOTE_TAG_BYTES, hp->tag) != 1)
        goto out;
    rc = 0;
out:
    OPENSSL_cleanse(key, sizeof(key));
    EVP_CIPHER_CTX_free(ctx);
    return rc;
}

int remote_seal_close(const struct remote_seal *s, const char *name, size_t name_len,
                      void *item, size_t len)
{
    struct kvt_remote_record_header *h = item;

    h->seal = remote_seal_kind(s);
    memset(h->tag, 0, sizeof(h->tag));
    if (!s->sealed) {
        memset(h->key_salt, 0, sizeof(h->key_salt));
        memset(h->nonce, 0, sizeof(h->nonce));
        XXH128_hash_t sum = plain_sum(name, name_len, item, len);
        memcpy(h->tag, &sum.low64, 8);
        memcpy(h->tag + 8, &sum.high64, 8);
        return 0;
    }
    /* A random salt (the record's key) and nonce: remote_format.h says
     * why a key per record. */
    if (RAND_bytes(h->key_salt, REMOTE_SALT_BYTES) != 1 ||
        RAND_bytes(h->nonce, REMOTE_NONCE_BYTES) != 1)
        return -EIO;
    return gcm(s, 1, name, name_len, item, len);
}

int remote_seal_open(const struct remote_seal *s, const char *name, size_t name_len,
                     void *item, size_t len)
{
    const struct kvt_remote_record_header *h = item;

    if (!s->sealed) {
        XXH128_hash_t sum = plain_sum(name, name_len, item, len);
        uint8_t want[REMOTE_TAG_BYTES];
        memcpy(want, &sum.low64, 8);
        memcpy(want + 8, &sum.high64, 8);
        return memcmp(want, h->tag, sizeof(want)) ? -EBADMSG : 0;
    }
    return gcm(s, 0, name, name_len, item, len);
}

static int hexval(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c = tolower(c);
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

int remote_seal_read_key(const char *path, uint8_t key[REMOTE_KEY_BYTES], const char **why)
{
    uint8_t buf[2 * REMOTE_KEY_BYTES + 2];
    struct stat st;
    ssize_t got;
    int rc = 0, fd = open(path, O_RDONLY | O_CLOEXEC);

    *why = NULL;
    if (fd < 0)
        return -errno;
    got = read(fd, buf, sizeof(buf));
    if (got < 0) {
        rc = -errno;
        goto out;
    }
    if (got == REMOTE_KEY_BYTES) {
        memcpy(key, buf, REMOTE_KEY_BYTES);
    } else if (got == 2 * REMOTE_KEY_BYTES ||
               (got == 2 * REMOTE_KEY_BYTES + 1 && buf[got - 1] == '\n')) {
        for (int i = 0; i < REMOTE_KEY_BYTES; i++) {
            int hi = hexval(buf[2 * i]), lo = hexval(buf[2 * i + 1]);
            if (hi < 0 || lo < 0) {
                *why = "key file: expected 64 hex digits or 32 raw bytes";
                rc = -EINVAL;
                goto out;
            }
            key[i] = (uint8_t)(hi << 4 | lo);
        }
    } else {
        *why = "key file: expected 64 hex digits or 32 raw bytes";
        rc = -EINVAL;
        goto out;
    }
    if (fstat(fd, &st) == 0 && (st.st_mode & 077))
        *why = "key file can be read by group or others; it should be 0600 or 0400";
out:
    OPENSSL_cleanse(buf, sizeof(buf));
    close(fd);
    return rc;
}
