/* test_admin_backpressure.c - proves that admin clients which stop reading
 * cannot stall the daemon. Ten admin connections each ask for megabytes of
 * `contexts` replies and read nothing; meanwhile every one of them is
 * answered as far as its socket takes, another connection's `health` and a
 * data client's store and fetch are answered, each within 5 s (a daemon
 * that waits on each blocked reader in turn needs 2 s per connection, 20 s
 * here). A reader that starts late gets every reply, complete, valid and in
 * order. A connection that lets more than 4 MiB of replies pile up unread
 * is closed, with a log line, and the daemon serves on. */
#include "tests/helpers.h"

#include <cjson/cJSON.h>
#include <poll.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>

#define LAYERS 1
#define HEADS 2
#define DIM 64
#define CHUNK 16
#define TOKENS 16
#define NAMES 64                 /* contexts stored, so `contexts` is ~16 KiB */
#define NAME_BYTES 200
#define SILENT 10                /* connections that read nothing */
#define SILENT_REQUESTS 80       /* each: ~1.3 MiB of replies, under the bound */
#define GREEDY_REQUESTS 400      /* ~6.5 MiB of replies, past the 4 MiB bound */
#define PROMPT_MS 5000           /* "answered at all" while the others block */

static struct test_daemon d;

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void send_text(int fd, const char *text, size_t len)
{
    while (len) {
        ssize_t n = send(fd, text, len, MSG_NOSIGNAL);
        if (n <= 0)
            fail_msg("send to the admin socket: %s", n < 0 ? strerror(errno) : "closed");
        text += n;
        len -= (size_t)n;
    }
}

/* An admin connection that has sent `count` copies of request (a line),
 * then one `health` line, all at once. */
static int pipelined(const char *request, int count)
{
    size_t one = strlen(request), len = one * (size_t)count;
    const char *health = "{\"cmd\":\"health\"}\n";
    char *text = malloc(len + strlen(health));
    int fd = test_admin_connect(&d);

    assert_true(fd >= 0);
    for (int i = 0; i < count; i++)
        memcpy(text + one * (size_t)i, request, one);
    memcpy(text + len, health, strlen(health));
    send_text(fd, text, len + strlen(health));
    free(text);
    return fd;
}

static int unread_bytes(int fd)
{
    int n = 0;
    assert_int_equal(ioctl(fd, FIONREAD, &n), 0);
    return n;
}

/* Reply lines of one connection, read with a deadline. */
struct lines {
    int fd;
    char *buf;
    size_t len, cap, next;
};

/* The next line into *out (NUL-terminated, valid until the next call):
 * 0, -ECONNRESET at EOF, -ETIMEDOUT when none came within timeout_ms. */
static int next_line(struct lines *r, char **out, int timeout_ms)
{
    uint64_t deadline = now_ms() + (uint64_t)timeout_ms;

    if (r->next) {                   /* drop the line returned last time */
        memmove(r->buf, r->buf + r->next, r->len - r->next);
        r->len -= r->next;
        r->next = 0;
    }
    for (;;) {
        char *nl = r->len ? memchr(r->buf, '\n', r->len) : NULL;
        if (nl) {
            *nl = '\0';
            r->next = (size_t)(nl - r->buf) + 1;
            *out = r->buf;
            return 0;
        }
        if (r->len + 65536 > r->cap) {
            r->cap = r->cap * 2 + 65536;
            r->buf = realloc(r->buf, r->cap);
            assert_non_null(r->buf);
        }
        uint64_t now = now_ms();
        struct pollfd p = { .fd = r->fd, .events = POLLIN };
        if (now >= deadline || poll(&p, 1, (int)(deadline - now)) == 0)
            return -ETIMEDOUT;
        ssize_t n = recv(r->fd, r->buf + r->len, r->cap - r->len, MSG_DONTWAIT);
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
            continue;
        if (n <= 0)
            return -ECONNRESET;
        r->len += (size_t)n;
    }
}

/* The next line as JSON with "ok": true; fails the test otherwise. */
static cJSON *next_ok(struct lines *r, int timeout_ms)
{
    char *line;
    int rc = next_line(r, &line, timeout_ms);
    if (rc)
        fail_msg("no reply line: %s", strerror(-rc));
    cJSON *reply = cJSON_Parse(line);
    if (!cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(reply, "ok")))
        fail_msg("not an ok reply: %.200s", line);
    return reply;
}

static kvt_client *client_with_names(void)
{
    kvt_model m = test_model("backpressure", LAYERS, HEADS, DIM, KVT_F16, CHUNK);
    size_t bytes = (size_t)TOKENS * HEADS * DIM * 2;
    void *k = calloc(1, bytes), *v = calloc(1, bytes);
    char name[NAME_BYTES + 1];
    kvt_client *c;

    CHECK_OK(kvt_connect(d.socket, &m, &c));
    memset(name, 'n', NAME_BYTES);
    name[NAME_BYTES] = '\0';
    for (int i = 0; i < NAMES; i++) {
        char prefix[16];
        int n = snprintf(prefix, sizeof(prefix), "ctx-%03d-", i);
        memcpy(name, prefix, (size_t)n);
        CHECK_OK(kvt_store(c, name, 0, 0, TOKENS, k, v));
    }
    free(k);
    free(v);
    return c;
}

/* One store and one fetch of a fresh context; returns how long they took. */
static uint64_t data_round_trip_ms(kvt_client *c)
{
    size_t bytes = (size_t)TOKENS * HEADS * DIM * 2;
    void *k = malloc(bytes), *v = malloc(bytes);
    uint64_t start = now_ms();

    test_fill(k, KVT_F16, 1, 0, 0, TOKENS, HEADS, DIM);
    test_fill(v, KVT_F16, 2, 0, 0, TOKENS, HEADS, DIM);
    CHECK_OK(kvt_store(c, "meanwhile", 0, 0, TOKENS, k, v));
    memset(k, 0, bytes);
    CHECK_OK(kvt_fetch(c, "meanwhile", 0, 0, TOKENS, k, v));
    uint64_t took = now_ms() - start;
    assert_int_equal(test_check(k, KVT_F16, 1, 0, 0, TOKENS, HEADS, DIM, 0), 0);
    free(k);
    free(v);
    return took;
}

static uint64_t health_ms(void)
{
    struct lines r = { .fd = test_admin_connect(&d) };
    uint64_t start = now_ms();

    assert_true(r.fd >= 0);
    send_text(r.fd, "{\"cmd\":\"health\"}\n", 17);
    cJSON *reply = next_ok(&r, PROMPT_MS);
    uint64_t took = now_ms() - start;
    assert_true(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(reply, "serving")));
    cJSON_Delete(reply);
    free(r.buf);
    close(r.fd);
    return took;
}

static void silent_readers_do_not_stall_the_loop(void **state)
{
    (void)state;
    int silent[SILENT];

    daemon_start(&d, NULL);
    kvt_client *c = client_with_names();
    for (int i = 0; i < SILENT; i++)
        silent[i] = pipelined("{\"cmd\":\"contexts\"}\n", SILENT_REQUESTS);

    /* Once the daemon answers the first, every one is answered as far as
     * its socket takes, without waiting for the others to read. */
    uint64_t start = now_ms();
    while (unread_bytes(silent[0]) == 0 && now_ms() - start < 30000)
        usleep(1000);
    assert_true(unread_bytes(silent[0]) > 0);
    start = now_ms();
    for (int i = 0; i < SILENT; i++) {
        while (unread_bytes(silent[i]) == 0 && now_ms() - start < PROMPT_MS)
            usleep(1000);
        if (unread_bytes(silent[i]) == 0)
            fail_msg("silent connection %d got nothing within %d ms", i, PROMPT_MS);
    }
    /* Their replies are far more than a socket holds: they now wait on us. */
    assert_true(unread_bytes(silent[0]) < SILENT_REQUESTS * NAMES * NAME_BYTES);

    uint64_t took = health_ms();
    if (took > PROMPT_MS)
        fail_msg("health took %llu ms behind silent admin readers", (unsigned long long)took);
    took = data_round_trip_ms(c);
    if (took > PROMPT_MS)
        fail_msg("store+fetch took %llu ms behind silent admin readers",
                 (unsigned long long)took);

    /* The late readers get every reply in full, in order, health last. */
    for (int i = 0; i < SILENT; i++) {
        struct lines r = { .fd = silent[i] };
        for (int n = 0; n < SILENT_REQUESTS; n++) {
            cJSON *reply = next_ok(&r, 30000);
            const cJSON *list = cJSON_GetObjectItemCaseSensitive(reply, "contexts");
            /* Each listing runs when its turn comes, on a thread: those
             * after the data client's store list its context too. */
            int listed = cJSON_GetArraySize(list);
            assert_true(listed == NAMES || listed == NAMES + 1);
            const cJSON *last = cJSON_GetArrayItem(list, NAMES - 1);
            assert_int_equal(strlen(cJSON_GetObjectItemCaseSensitive(last, "name")->valuestring),
                             NAME_BYTES);
            cJSON_Delete(reply);
        }
        cJSON *reply = next_ok(&r, 30000);
        assert_true(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(reply, "serving")));
        cJSON_Delete(reply);
        free(r.buf);
        close(silent[i]);
    }
    kvt_disconnect(c);
    daemon_stop(&d);
    daemon_cleanup(&d);
}

static void a_reader_past_the_bound_is_closed(void **state)
{
    (void)state;
    char *line;
    int replies = 0, rc;

    daemon_start(&d, NULL);
    kvt_client *c = client_with_names();
    struct lines r = { .fd = pipelined("{\"cmd\":\"contexts\"}\n", GREEDY_REQUESTS) };

    /* Wait for the daemon to give up on it, then read what it had sent. */
    uint64_t start = now_ms();
    while (!test_file_contains(d.log, "replies unread") && now_ms() - start < 30000)
        usleep(10000);
    assert_true(test_file_contains(d.log, "replies unread"));
    while ((rc = next_line(&r, &line, 30000)) == 0) {
        cJSON *reply = cJSON_Parse(line);
        assert_true(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(reply, "ok")));
        cJSON_Delete(reply);
        replies++;
    }
    assert_int_equal(rc, -ECONNRESET);
    /* What its socket held came; the rest, queued past the bound, went. */
    assert_true(replies < GREEDY_REQUESTS);
    free(r.buf);
    close(r.fd);

    assert_true(health_ms() <= PROMPT_MS);
    assert_true(data_round_trip_ms(c) <= PROMPT_MS);
    kvt_disconnect(c);
    daemon_stop(&d);
    daemon_cleanup(&d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(silent_readers_do_not_stall_the_loop),
        cmocka_unit_test(a_reader_past_the_bound_is_closed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
