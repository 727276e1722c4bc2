/* admin_text.c - requests in, replies out: UTF-8 checks, the \xNN escape
 * of names that are not UTF-8, and their hex form (see admin_text.h). */
#include "daemon/admin_text.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

/* Length of the valid UTF-8 sequence at s (left bytes available), or 0.
 * The second byte's range is what excludes overlong forms (E0, F0),
 * surrogates (ED) and code points past U+10FFFF (F4). */
static size_t utf8_seq_len(const unsigned char *s, size_t left)
{
    unsigned char lo = 0x80, hi = 0xbf;
    size_t n;

    if (s[0] < 0x80)
        return 1;
    if (s[0] >= 0xc2 && s[0] <= 0xdf)
        n = 2;
    else if (s[0] >= 0xe0 && s[0] <= 0xef)
        n = 3;
    else if (s[0] >= 0xf0 && s[0] <= 0xf4)
        n = 4;
    else
        return 0;
    if (s[0] == 0xe0)
        lo = 0xa0;
    else if (s[0] == 0xed)
        hi = 0x9f;
    else if (s[0] == 0xf0)
        lo = 0x90;
    else if (s[0] == 0xf4)
        hi = 0x8f;
    if (left < n || s[1] < lo || s[1] > hi)
        return 0;
    for (size_t i = 2; i < n; i++)
        if (s[i] < 0x80 || s[i] > 0xbf)
            return 0;
    return n;
}

size_t utf8_valid_len(const char *text, size_t len)
{
    const unsigned char *s = (const unsigned char *)text;
    size_t at = 0;

    while (at < len) {
        size_t n = utf8_seq_len(s + at, len - at);
        if (!n)
            break;
        at += n;
    }
    return at;
}

int admin_text_check_request(const char *line, size_t len, char *err, size_t errlen)
{
    size_t valid = utf8_valid_len(line, len);
    const char *nul = memchr(line, '\0', len);

    if (nul) {
        snprintf(err, errlen, "the request holds a NUL byte (at byte %zu)", (size_t)(nul - line));
        return -EINVAL;
    }
    if (valid < len) {
        snprintf(err, errlen, "the request is not valid UTF-8 (byte %zu is 0x%02x); "
                 "give names that are not UTF-8 in hex (\"context_hex\")",
                 valid, (unsigned char)line[valid]);
        return -EINVAL;
    }
    /* Each backslash escapes the next character, so "\\u0000" is text. */
    for (size_t i = 0; i + 1 < len; i++) {
        if (line[i] != '\\')
            continue;
        if (line[i + 1] == 'u' && i + 6 <= len && !memcmp(line + i + 2, "0000", 4)) {
            snprintf(err, errlen, "the request holds a NUL character (\\u0000 at byte %zu); "
                     "names cannot contain one", i);
            return -EINVAL;
        }
        i++;
    }
    return 0;
}

/* A cJSON-allocated copy of s with each byte outside a valid UTF-8
 * sequence written as \xNN; NULL when out of memory. */
static char *escaped(const char *s)
{
    static const char digits[] = "0123456789abcdef";
    const unsigned char *in = (const unsigned char *)s;
    size_t len = strlen(s);
    char *out = cJSON_malloc(len * 4 + 1), *o = out;

    if (!out)
        return NULL;
    for (size_t at = 0; at < len;) {
        size_t n = utf8_seq_len(in + at, len - at);
        if (n) {
            memcpy(o, in + at, n);
            o += n;
            at += n;
        } else {
            *o++ = '\\';
            *o++ = 'x';
            *o++ = digits[in[at] >> 4];
            *o++ = digits[in[at] & 15];
            at++;
        }
    }
    *o = '\0';
    return out;
}

static bool is_valid(const char *s)
{
    size_t len = strlen(s);
    return utf8_valid_len(s, len) == len;
}

int admin_text_make_valid(cJSON *item)
{
    for (; item; item = item->next) {
        if (item->string && !is_valid(item->string)) {
            char *key = escaped(item->string);
            if (!key)
                return -ENOMEM;
            if (!(item->type & cJSON_StringIsConst))
                cJSON_free(item->string);
            item->string = key;
            item->type &= ~cJSON_StringIsConst;
        }
        if (cJSON_IsString(item) && item->valuestring && !is_valid(item->valuestring)) {
            char *value = escaped(item->valuestring);
            if (!value)
                return -ENOMEM;
            if (!(item->type & cJSON_IsReference))
                cJSON_free(item->valuestring);
            item->valuestring = value;
            item->type &= ~cJSON_IsReference;
        }
        if (item->child) {
            int rc = admin_text_make_valid(item->child);
            if (rc)
                return rc;
        }
    }
    return 0;
}

int admin_text_add_name(cJSON *obj, const char *key, const char *name)
{
    static const char digits[] = "0123456789abcdef";
    size_t len = strlen(name);
    char hex_key[64], hex[2 * 1024 + 1];

    if (is_valid(name))
        return cJSON_AddStringToObject(obj, key, name) ? 0 : -ENOMEM;
    char *shown = escaped(name);
    bool added = shown && cJSON_AddStringToObject(obj, key, shown);
    cJSON_free(shown);
    if (!added)
        return -ENOMEM;
    /* Names are at most KVT_CTX_NAME_MAX (255) bytes; hex[] has room. */
    if (len > (sizeof(hex) - 1) / 2)
        len = (sizeof(hex) - 1) / 2;
    for (size_t i = 0; i < len; i++) {
        hex[2 * i] = digits[(unsigned char)name[i] >> 4];
        hex[2 * i + 1] = digits[(unsigned char)name[i] & 15];
    }
    hex[2 * len] = '\0';
    snprintf(hex_key, sizeof(hex_key), "%s_hex", key);
    return cJSON_AddStringToObject(obj, hex_key, hex) ? 0 : -ENOMEM;
}

static int hex_digit(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

int admin_text_unhex(const char *hex, char *out, size_t cap, size_t *len)
{
    size_t n = strlen(hex);

    if (n == 0 || n % 2 || n / 2 + 1 > cap)
        return -EINVAL;
    for (size_t i = 0; i < n / 2; i++) {
        int hi = hex_digit(hex[2 * i]), lo = hex_digit(hex[2 * i + 1]);
        if (hi < 0 || lo < 0 || (hi | lo) == 0)
            return -EINVAL;
        out[i] = (char)(hi << 4 | lo);
    }
    out[n / 2] = '\0';
    *len = n / 2;
    return 0;
}
