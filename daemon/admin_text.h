/* admin_text.h - the admin socket's text rules: requests must be UTF-8,
 * replies always are. Clients may name contexts and models with any bytes
 * (the data protocol carries bytes), but JSON text is UTF-8, so a name that
 * is not goes out with each byte that is not part of a valid UTF-8 sequence
 * written as the four characters \xNN (lowercase hex, the notation of the
 * shell's $'...'), and its exact bytes in hex beside it ("name_hex"). */
#ifndef KVT_ADMIN_TEXT_H
#define KVT_ADMIN_TEXT_H

#include <cjson/cJSON.h>
#include <stddef.h>

/* Bytes of text[0..len) up to the first that does not begin a valid UTF-8
 * sequence (RFC 3629: shortest form, no surrogates, at most U+10FFFF);
 * len when all of it is valid. */
size_t utf8_valid_len(const char *text, size_t len);

/* Check a request line (len bytes) before it is parsed: UTF-8, no NUL byte
 * and no \u0000 escape (cJSON would end the string there, and a context
 * "a\u0000b" would silently become "a"). Returns 0, or -EINVAL with a
 * sentence in err. */
int admin_text_check_request(const char *line, size_t len, char *err, size_t errlen);

/* Replace every string (and member name) under item that is not valid
 * UTF-8 by its \xNN-escaped form, so the reply prints as valid JSON text.
 * Returns 0 or -ENOMEM (item is then partly escaped, still valid to free). */
int admin_text_make_valid(cJSON *item);

/* Add name (NUL-terminated, any bytes) to obj as key; when it is not valid
 * UTF-8, the escaped form, and its exact bytes as hex under key "_hex"
 * (e.g. "name_hex"). Returns 0 or -ENOMEM. */
int admin_text_add_name(cJSON *obj, const char *key, const char *name);

/* Decode hex (an even number of hex digits, case-insensitive) into out
 * (cap bytes), NUL-terminated; *len gets the byte count. A name cannot hold
 * a NUL byte. Returns 0, or -EINVAL (not hex, odd, a 00 byte, or longer
 * than cap - 1 bytes). */
int admin_text_unhex(const char *hex, char *out, size_t cap, size_t *len);

#endif
