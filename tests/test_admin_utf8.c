/* test_admin_utf8.c - proves that every admin reply is JSON in valid UTF-8
 * (checked by a strict validator written here, not by the daemon's) even
 * when a client names its model and contexts with bytes that are not UTF-8:
 * `contexts`, `namespaces` and `clients` list such a name with each bad byte
 * as \xNN and its exact bytes in hex ("name_hex"), valid names as they are;
 * such a context can be evicted by "context_hex" and by `kvtierctl evict
 * --context` given the raw bytes. Request lines that are not UTF-8, not
 * JSON, or hide a NUL in a string get a clear error, and an error sentence
 * that quotes a request stays valid UTF-8. */
#include "tests/helpers.h"

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#define LAYERS 1
#define HEADS 2
#define DIM 64
#define CHUNK 16
#define TOKENS 16

static struct test_daemon d;

/* RFC 3629: shortest forms only, no surrogates, nothing past U+10FFFF. */
static bool strict_utf8(const char *text, size_t len)
{
    const unsigned char *s = (const unsigned char *)text;
    size_t i = 0;

    while (i < len) {
        unsigned char b = s[i];
        size_t n;
        unsigned char lo = 0x80, hi = 0xbf;
        if (b < 0x80) {
            i++;
            continue;
        } else if (b >= 0xc2 && b <= 0xdf) {
            n = 1;
        } else if (b >= 0xe0 && b <= 0xef) {
            n = 2;
            if (b == 0xe0)
                lo = 0xa0;
            if (b == 0xed)
                hi = 0x9f;
        } else if (b >= 0xf0 && b <= 0xf4) {
            n = 3;
            if (b == 0xf0)
                lo = 0x90;
            if (b == 0xf4)
                hi = 0x8f;
        } else {
            return false;
        }
        if (i + n >= len)
            return false;
        if (s[i + 1] < lo || s[i + 1] > hi)
            return false;
        for (size_t k = 2; k <= n; k++)
            if (s[i + k] < 0x80 || s[i + k] > 0xbf)
                return false;
        i += n + 1;
    }
    return true;
}

/* The reply to request as JSON, after checking its raw line is UTF-8. */
static cJSON *admin_valid(const char *request)
{
    static char line[1 << 20];
    int rc = admin_request(&d, request, line, sizeof(line));

    if (rc)
        fail_msg("no reply to %s: %s", request, strerror(-rc));
    if (!strict_utf8(line, strlen(line)))
        fail_msg("reply is not valid UTF-8: %.300s", line);
    cJSON *reply = cJSON_Parse(line);
    if (!cJSON_IsObject(reply))
        fail_msg("reply is not JSON: %.300s", line);
    return reply;
}

static bool reply_ok(const cJSON *reply)
{
    return cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(reply, "ok"));
}

static const char *str_of(const cJSON *obj, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

/* The error of a refused request, which must mention about. */
static void expect_error(const char *request, const char *about)
{
    cJSON *r = admin_valid(request);
    assert_false(reply_ok(r));
    const char *err = str_of(r, "error");
    assert_non_null(err);
    if (!strstr(err, about))
        fail_msg("error for %s does not mention '%s': %s", request, about, err);
    cJSON_Delete(r);
}

static void hex(const char *bytes, char *out)
{
    for (const unsigned char *b = (const unsigned char *)bytes; *b; b++, out += 2)
        sprintf(out, "%02x", *b);
    *out = '\0';
}

static void store(kvt_client *c, const char *ctx)
{
    size_t bytes = (size_t)TOKENS * HEADS * DIM * 2;
    void *k = calloc(1, bytes), *v = calloc(1, bytes);
    CHECK_OK(kvt_store(c, ctx, 0, 0, TOKENS, k, v));
    free(k);
    free(v);
}

static int fetch(kvt_client *c, const char *ctx)
{
    size_t bytes = (size_t)TOKENS * HEADS * DIM * 2;
    void *k = malloc(bytes), *v = malloc(bytes);
    int rc = kvt_fetch(c, ctx, 0, 0, TOKENS, k, v);
    free(k);
    free(v);
    return rc;
}

#define MODEL "model-\xff\xfe"
static const struct {
    const char *bytes, *shown;   /* as stored; as listed */
    bool escaped;
} names[] = {
    { "bad-\xc3\x28", "bad-\\xc3(", true },                  /* lead byte, no follower */
    { "cut-\xe2\x82", "cut-\\xe2\\x82", true },              /* sequence cut short */
    { "ok-\xc3\xa9-\xe2\x82\xac-\xf0\x9f\x98\x80", "ok-\xc3\xa9-\xe2\x82\xac-\xf0\x9f\x98\x80",
      false },                                               /* e acute, euro, emoji */
    { "ovl-\xc0\xaf", "ovl-\\xc0\\xaf", true },              /* overlong '/' */
    { "sur-\xed\xa0\x80", "sur-\\xed\\xa0\\x80", true },     /* a UTF-16 surrogate */
};
#define N_NAMES (sizeof(names) / sizeof(names[0]))

/* The `contexts` entry listed as shown, or NULL. */
static const cJSON *listed(const cJSON *reply, const char *shown)
{
    const cJSON *e;
    cJSON_ArrayForEach(e, cJSON_GetObjectItemCaseSensitive(reply, "contexts"))
        if (str_of(e, "name") && !strcmp(str_of(e, "name"), shown))
            return e;
    return NULL;
}

static int ctl(char *out, size_t len, const char *args)
{
    char cmd[1024];
    snprintf(cmd, sizeof(cmd), "%s/kvtierctl --socket '%s' %s 2>&1", test_build_dir(),
             d.admin_socket, args);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    size_t n = fread(out, 1, len - 1, p);
    out[n] = '\0';
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void names_that_are_not_utf8_are_listed_escaped(void **state)
{
    (void)state;
    kvt_model m = test_model(MODEL, LAYERS, HEADS, DIM, KVT_F16, CHUNK);
    char want_hex[600];
    kvt_client *c;

    daemon_start(&d, NULL);
    CHECK_OK(kvt_connect(d.socket, &m, &c));
    for (size_t i = 0; i < N_NAMES; i++)
        store(c, names[i].bytes);

    cJSON *r = admin_valid("{\"cmd\":\"contexts\"}");
    assert_true(reply_ok(r));
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(r, "contexts")),
                     N_NAMES);
    for (size_t i = 0; i < N_NAMES; i++) {
        const cJSON *e = listed(r, names[i].shown);
        if (!e)
            fail_msg("contexts does not list %s", names[i].shown);
        hex(names[i].bytes, want_hex);
        if (names[i].escaped)
            assert_string_equal(str_of(e, "name_hex"), want_hex);
        else
            assert_null(cJSON_GetObjectItemCaseSensitive(e, "name_hex"));
        assert_int_equal((int)cJSON_GetObjectItemCaseSensitive(e, "tokens")->valuedouble, TOKENS);
    }
    cJSON_Delete(r);

    hex(MODEL, want_hex);
    r = admin_valid("{\"cmd\":\"namespaces\"}");
    const cJSON *ns = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(r, "namespaces"), 0);
    assert_string_equal(str_of(ns, "name"), "model-\\xff\\xfe");
    assert_string_equal(str_of(ns, "name_hex"), want_hex);
    cJSON_Delete(r);
    r = admin_valid("{\"cmd\":\"clients\"}");
    const cJSON *cl = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(r, "clients"), 0);
    assert_string_equal(str_of(cl, "namespace"), "model-\\xff\\xfe");
    assert_string_equal(str_of(cl, "namespace_hex"), want_hex);
    cJSON_Delete(r);

    /* Evict by the exact bytes in hex: only that context goes. */
    char req[700];
    hex(names[0].bytes, want_hex);
    snprintf(req, sizeof(req), "{\"cmd\":\"evict\",\"context_hex\":\"%s\"}", want_hex);
    r = admin_valid(req);
    assert_true(reply_ok(r));
    assert_true(cJSON_GetObjectItemCaseSensitive(r, "hot_chunks")->valuedouble > 0);
    cJSON_Delete(r);
    CHECK_RC(fetch(c, names[0].bytes), -ENOENT);
    CHECK_OK(fetch(c, names[1].bytes));

    /* kvtierctl: the table shows the escaped name; evict --context takes
     * the raw bytes (as the shell's $'sur-\xed\xa0\x80' gives them). */
    static char out[1 << 16];
    assert_int_equal(ctl(out, sizeof(out), "contexts"), 0);
    assert_true(strict_utf8(out, strlen(out)));
    assert_non_null(strstr(out, "cut-\\xe2\\x82  "));
    assert_null(strstr(out, "name_hex"));
    assert_int_equal(ctl(out, sizeof(out), "evict --context 'sur-\xed\xa0\x80'"), 0);
    CHECK_RC(fetch(c, names[4].bytes), -ENOENT);
    CHECK_OK(fetch(c, names[2].bytes));
    r = admin_valid("{\"cmd\":\"contexts\"}");
    assert_null(listed(r, names[4].shown));
    assert_non_null(listed(r, names[3].shown));
    cJSON_Delete(r);

    kvt_disconnect(c);
    daemon_stop(&d);
    daemon_cleanup(&d);
}

static void requests_that_are_not_utf8_or_json_are_refused(void **state)
{
    (void)state;
    daemon_start(&d, NULL);

    expect_error("{\"cmd\":\"health\",\"x\":\"\xff\"}", "UTF-8");
    expect_error("{\"cmd\":\"evict\",\"context\":\"\xc0\xaf\"}", "UTF-8");
    expect_error("{\"cmd\": ", "JSON");
    expect_error("{\"cmd\":\"health\"} trailing", "JSON");
    /* "a\u0000b" would parse as the C string "a": refused, not evicted. */
    expect_error("{\"cmd\":\"evict\",\"context\":\"a\\u0000b\"}", "NUL");
    expect_error("{\"cmd\":\"evict\",\"context_hex\":\"zz\"}", "hex");
    expect_error("{\"cmd\":\"evict\",\"context_hex\":\"610062\"}", "hex");
    expect_error("{\"cmd\":\"evict\",\"context_hex\":\"61\",\"context\":\"a\"}", "evict takes");
    /* A quoted request cut short must not split a character: 'a' and
     * then two-byte characters put a cut inside one. */
    char req[512] = "{\"cmd\":\"a";
    for (int i = 0; i < 80; i++)
        strcat(req, "\xc3\xa9");
    strcat(req, "\"}");
    expect_error(req, "unknown command");
    /* An escaped backslash before u0000 is text, not a NUL. */
    cJSON *r = admin_valid("{\"cmd\":\"evict\",\"context\":\"a\\\\u0000b\"}");
    assert_true(reply_ok(r));
    cJSON_Delete(r);
    r = admin_valid("{\"cmd\":\"health\"}");
    assert_true(reply_ok(r));
    cJSON_Delete(r);
    daemon_stop(&d);
    daemon_cleanup(&d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(names_that_are_not_utf8_are_listed_escaped),
        cmocka_unit_test(requests_that_are_not_utf8_or_json_are_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
