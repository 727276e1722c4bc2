/* test_remote_tier.c - proves the remote tier (API.md, "Beyond one host")
 * with real memcached servers on loopback ports and two kvtierd as two
 * hosts (own sockets, own cold files, nothing shared but the pool):
 *  - a 4096-token prefix stored and synced on host A is matched whole and
 *    fetched within the int8 bound by a fresh host B, and counted in B's
 *    stats (remote hits, promotions, servers up);
 *  - with one of 3 servers killed, remote-replicas = 1 still serves all of
 *    it, remote-replicas = 0 misses what lived there, and no call takes
 *    longer than remote-timeout-ms per server plus a margin (also with a
 *    server that hangs instead of dying);
 *  - garbage planted under a record's name, a record copied under another
 *    name, and a host with another key (or none) are misses, never wrong
 *    values, and counted as rejected in stats;
 *  - another domain name sees none of the records; a record over the
 *    servers' item size is refused (never split) and counted;
 *  - only completed chunks are written through, each once; a fetch waiting
 *    on a hung pool leaves the event loop serving; a hung pool holds
 *    neither kvt_sync nor SIGTERM past its timeouts; the remote keys are
 *    read at start only. */
#include "tests/helpers.h"
#include "tests/memcached_util.h"

#include <cjson/cJSON.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "cache/remote.h"
#include "cache/remote_format.h"
#include "proto/prefix.h"

#define LAYERS 2
#define HEADS 4
#define DIM 64
#define CHUNK 256
#define N_TOK 4096
#define N_CHUNKS (N_TOK / CHUNK)
#define TAIL 100                /* a partial last chunk past N_TOK */
#define SEED 41
#define TIMEOUT_MS 300
/* Per server: the timeout, plus room for a loaded (or sanitized) build. */
#define MARGIN_MS 400
#define MODEL "remote-model"
#define DOMAIN "team-a"

static int32_t tokens[N_TOK + TAIL];
static const char *domain_name = DOMAIN;   /* the hosts' remote-domain */
static char key_a[128], key_b[128], dir[64];

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void write_key(const char *path, char fill)
{
    char hex[65];
    memset(hex, fill, 64);
    hex[64] = '\n';
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    assert_int_equal(fwrite(hex, 1, 65, f), 65);
    fclose(f);
    chmod(path, 0600);
}

static int setup(void **state)
{
    (void)state;
    for (int i = 0; i < N_TOK + TAIL; i++)
        tokens[i] = 5000 + i * 13;
    snprintf(dir, sizeof(dir), "/var/tmp/kvtier-remote-XXXXXX");
    assert_non_null(mkdtemp(dir));
    snprintf(key_a, sizeof(key_a), "%s/a.key", dir);
    snprintf(key_b, sizeof(key_b), "%s/b.key", dir);
    write_key(key_a, 'a');
    write_key(key_b, 'b');
    return 0;
}

static int teardown(void **state)
{
    char cmd[128];
    (void)state;
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    return system(cmd) == 0 ? 0 : -1;
}

struct host {
    struct test_daemon d;
    char cold[128];
};

/* A host of the pool: its own sockets and cold file; key NULL: no seal;
 * timeout_ms its remote-timeout-ms. */
static void host_start_flags(struct host *h, const struct mc_pool *p, const char *replicas,
                             const char *key, const char *name, const char *timeout_ms,
                             const char *flag, const char *value)
{
    char domain[96];
    snprintf(h->cold, sizeof(h->cold), "%s/%s.cold", dir, name);
    unlink(h->cold);
    snprintf(domain, sizeof(domain), "%s:%u", domain_name, (unsigned)getuid());
    if (key)
        daemon_start(&h->d, "--remote", p->list, "--remote-replicas", replicas,
                     "--remote-timeout-ms", timeout_ms, "--remote-domain", domain,
                     "--remote-key-file", key, "--cold-path", h->cold, "--cold-bytes", "16M",
                     "--cold-region-bytes", "1M", "--chunk-tokens", "256", flag, value, NULL);
    else
        daemon_start(&h->d, "--remote", p->list, "--remote-replicas", replicas,
                     "--remote-timeout-ms", timeout_ms, "--remote-domain", domain,
                     "--cold-path", h->cold, "--cold-bytes", "16M",
                     "--cold-region-bytes", "1M", "--chunk-tokens", "256", flag, value, NULL);
}

static void host_start_timeout(struct host *h, const struct mc_pool *p, const char *replicas,
                               const char *key, const char *name, const char *timeout_ms)
{
    host_start_flags(h, p, replicas, key, name, timeout_ms, NULL, NULL);
}

static void host_start(struct host *h, const struct mc_pool *p, const char *replicas,
                       const char *key, const char *name)
{
    host_start_timeout(h, p, replicas, key, name, "300");
}

static void host_stop(struct host *h)
{
    daemon_stop(&h->d);
    daemon_cleanup(&h->d);
    unlink(h->cold);
}

static kvt_client *connect_host(struct host *h, kvt_dtype dt)
{
    kvt_model m = test_model(MODEL, LAYERS, HEADS, DIM, dt, CHUNK);
    kvt_client *c = NULL;
    CHECK_OK(kvt_connect(h->d.socket, &m, &c));
    return c;
}

/* Host A: store the whole prefix by tokens, then sync (the pool too). */
static void store_prefix(struct host *a)
{
    kvt_client *c = connect_host(a, KVT_F16);
    size_t bytes = (size_t)N_TOK * HEADS * DIM * 2;
    kvt_span spans[LAYERS];

    for (uint32_t l = 0; l < LAYERS; l++) {
        spans[l] = (kvt_span){ l, 0, N_TOK, malloc(bytes), malloc(bytes) };
        test_fill(spans[l].k, KVT_F16, SEED, l, 0, N_TOK, HEADS, DIM);
        test_fill(spans[l].v, KVT_F16, SEED + 1, l, 0, N_TOK, HEADS, DIM);
    }
    CHECK_OK(kvt_store_tokens(c, tokens, N_TOK, spans, LAYERS));
    CHECK_OK(kvt_sync(c));
    for (uint32_t l = 0; l < LAYERS; l++) {
        free(spans[l].k);
        free(spans[l].v);
    }
    kvt_disconnect(c);
}

/* Host B: match, then fetch what matched; every value within the bound.
 * Returns the tokens matched; *slowest_ms the longest call. */
static uint32_t match_and_fetch(struct host *b, uint64_t *slowest_ms)
{
    kvt_client *c = connect_host(b, KVT_F32);
    size_t bytes = (size_t)N_TOK * HEADS * DIM * 4;
    kvt_span spans[LAYERS];
    uint32_t n = 0;

    uint64_t t0 = now_ms();
    CHECK_OK(kvt_match_tokens(c, tokens, N_TOK, &n));
    uint64_t t1 = now_ms();
    *slowest_ms = t1 - t0;
    assert_true(n % CHUNK == 0 || n == N_TOK);
    if (n) {
        for (uint32_t l = 0; l < LAYERS; l++)
            spans[l] = (kvt_span){ l, 0, n, malloc(bytes), malloc(bytes) };
        CHECK_OK(kvt_fetch_tokens(c, tokens, n, spans, LAYERS));
        uint64_t t2 = now_ms();
        if (t2 - t1 > *slowest_ms)
            *slowest_ms = t2 - t1;
        for (uint32_t l = 0; l < LAYERS; l++) {
            assert_int_equal(test_check(spans[l].k, KVT_F32, SEED, l, 0, n, HEADS, DIM, 0), 0);
            assert_int_equal(test_check(spans[l].v, KVT_F32, SEED + 1, l, 0, n, HEADS, DIM, 0), 0);
            free(spans[l].k);
            free(spans[l].v);
        }
    }
    /* Past the match: absent, never made up. */
    if (n < N_TOK) {
        spans[0] = (kvt_span){ 0, 0, N_TOK, malloc(bytes), malloc(bytes) };
        CHECK_RC(kvt_fetch_tokens(c, tokens, N_TOK, spans, 1), -ENOENT);
        free(spans[0].k);
        free(spans[0].v);
    }
    kvt_disconnect(c);
    return n;
}

/* A number of B's stats: remote.<field>. */
static double remote_stat(struct host *h, const char *field)
{
    static char reply[1 << 16];
    CHECK_OK(admin_request(&h->d, "{\"cmd\":\"stats\"}", reply, sizeof(reply)));
    cJSON *r = cJSON_Parse(reply);
    assert_non_null(r);
    const cJSON *rem = cJSON_GetObjectItemCaseSensitive(r, "remote");
    assert_true(cJSON_IsObject(rem));
    double v = cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(rem, field));
    cJSON_Delete(r);
    return v;
}

/* How many of the pool's servers B's stats list in state `state`. */
static int servers_in_state(struct host *h, const char *state)
{
    static char reply[1 << 16];
    int n = 0;
    CHECK_OK(admin_request(&h->d, "{\"cmd\":\"stats\"}", reply, sizeof(reply)));
    cJSON *r = cJSON_Parse(reply);
    const cJSON *s;
    cJSON_ArrayForEach(s, cJSON_GetObjectItemCaseSensitive(
                              cJSON_GetObjectItemCaseSensitive(r, "remote"), "servers"))
        n += !strcmp(cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(s, "state")), state);
    cJSON_Delete(r);
    return n;
}

static void prefix_stored_on_one_host_is_fetched_on_another(void **state)
{
    struct mc_pool p;
    struct host a, b;
    uint64_t slowest;
    (void)state;

    CHECK_OK(mc_start(&p, 3, 64, "1m"));
    host_start(&a, &p, "1", key_a, "a");
    store_prefix(&a);
    /* One write per chunk: the client splits this store where its staging
     * room runs out (inside layer 1's last chunk), and the chunk is written
     * once, when complete, not once per part (which once made 33 of 32). */
    assert_int_equal(remote_stat(&a, "puts"), N_CHUNKS * LAYERS);
    assert_int_equal(remote_stat(&a, "put_errors"), 0);
    assert_int_equal(remote_stat(&a, "queued"), 0);

    host_start(&b, &p, "1", key_a, "b");
    assert_int_equal(match_and_fetch(&b, &slowest), N_TOK);
    assert_int_equal(remote_stat(&b, "hits"), N_CHUNKS * LAYERS);
    assert_int_equal(remote_stat(&b, "promotions"), N_CHUNKS * LAYERS);
    assert_int_equal(remote_stat(&b, "rejected"), 0);
    assert_true(remote_stat(&b, "bytes_read") > (double)N_TOK * LAYERS * HEADS * DIM * 2);
    assert_int_equal(servers_in_state(&b, "up"), 3);
    /* Promoted: a second match is served locally, asking the pool nothing. */
    double gets = remote_stat(&b, "gets");
    assert_int_equal(match_and_fetch(&b, &slowest), N_TOK);
    assert_int_equal(remote_stat(&b, "gets"), gets);
    host_stop(&b);
    host_stop(&a);
    mc_stop(&p);
}

/* A stores with `replicas`, one server of three dies (or hangs), then a
 * fresh B matches: returns the tokens B got. */
static uint32_t with_one_server_down(const char *replicas, int hang, double *misses,
                                     double *hits)
{
    struct mc_pool p;
    struct host a, b;
    uint64_t slowest;

    CHECK_OK(mc_start(&p, 3, 64, "1m"));
    host_start(&a, &p, replicas, key_a, "a");
    store_prefix(&a);
    host_stop(&a);
    if (hang)
        mc_pause(&p, 1, 1);
    else
        mc_kill(&p, 1);
    host_start(&b, &p, replicas, key_a, "b");
    uint32_t n = match_and_fetch(&b, &slowest);
    print_message("replicas %s, server %s: matched %u, slowest call %llu ms\n", replicas,
                  hang ? "hung" : "killed", n, (unsigned long long)slowest);
    assert_true(slowest <= 3 * (TIMEOUT_MS + MARGIN_MS));
    *misses = remote_stat(&b, "misses");
    *hits = remote_stat(&b, "hits");
    assert_int_equal(remote_stat(&b, "rejected"), 0);
    assert_true(servers_in_state(&b, "down") <= 1);
    host_stop(&b);
    mc_stop(&p);
    return n;
}

static void replicas_survive_a_dead_server(void **state)
{
    double misses, hits;
    (void)state;
    assert_int_equal(with_one_server_down("1", 0, &misses, &hits), N_TOK);
    assert_int_equal(misses, 0);
    assert_int_equal(hits, N_CHUNKS * LAYERS);
}

static void without_replicas_a_dead_server_is_a_miss(void **state)
{
    double misses, hits;
    (void)state;
    /* 32 records over 3 servers: the dead one held some of them, and only
     * those are missing (the match asked for every chunk past the first
     * miss at once, so the live servers' records were hits). */
    assert_true(with_one_server_down("0", 0, &misses, &hits) < N_TOK);
    assert_true(misses >= 1);
    assert_true(hits >= 1);
}

static void a_hung_server_costs_at_most_its_timeout(void **state)
{
    double misses, hits;
    (void)state;
    (void)with_one_server_down("0", 1, &misses, &hits);
    assert_true(misses >= 1);
}

/* The name A's daemon gives the record of (chunk, layer). */
static void record_name(uint32_t chunk, uint32_t layer, struct kvt_remote_name *out)
{
    struct kvt_wire_key keys[N_CHUNKS];
    struct kvt_remote_scope scope;
    CHECK_OK(prefix_keys(tokens, N_TOK, CHUNK, keys));
    assert_true(remote_scope(DOMAIN, MODEL, LAYERS, HEADS, DIM, CHUNK, &scope));
    struct kvt_chunk_key k = { .obj_hi = keys[chunk].hi, .obj_lo = keys[chunk].lo,
                               .layer = layer };
    remote_record_name(&scope, &k, out);
}

/* Put val under name on every server (wherever ketama and replicas look). */
static void plant(const struct mc_pool *p, const char *name, const void *val, size_t len)
{
    for (int i = 0; i < p->n; i++)
        CHECK_OK(mc_set(p, i, name, val, len));
}

static void bad_records_are_misses_and_counted(void **state)
{
    struct mc_pool p;
    struct host a, b;
    struct kvt_remote_name n00, n10, n01, n20;
    uint64_t slowest;
    void *rec = NULL;
    ssize_t len = -1;
    (void)state;

    CHECK_OK(mc_start(&p, 3, 64, "1m"));
    host_start(&a, &p, "0", key_a, "a");
    store_prefix(&a);
    host_stop(&a);
    record_name(0, 0, &n00);
    record_name(1, 0, &n10);
    record_name(0, 1, &n01);
    /* The daemon's names are the ones computed here: a record is there. */
    for (int i = 0; i < p.n && len < 0; i++)
        len = mc_get(&p, i, n10.s, &rec);
    assert_true(len > 64);
    /* Each record has a salt (its own key) and a nonce of its own. */
    void *rec2 = NULL;
    ssize_t len2 = -1;
    record_name(2, 0, &n20);
    for (int i = 0; i < p.n && len2 < 0; i++)
        len2 = mc_get(&p, i, n20.s, &rec2);
    assert_int_equal(len2, len);
    const struct kvt_remote_record_header *h1 = rec, *h2 = rec2;
    assert_memory_not_equal(h1->key_salt, h2->key_salt, REMOTE_SALT_BYTES);
    assert_memory_not_equal(h1->nonce, h2->nonce, REMOTE_NONCE_BYTES);

    /* A lossless host: A's int8 records would make it serve approximations. */
    host_start_flags(&b, &p, "0", key_a, "b", "300", "--quant", "none");
    assert_int_equal(match_and_fetch(&b, &slowest), 0);
    assert_true(remote_stat(&b, "rejected") >= 1);
    host_stop(&b);
    /* Another key: every record fails to open. */
    host_start(&b, &p, "0", key_b, "b");
    assert_int_equal(match_and_fetch(&b, &slowest), 0);
    assert_true(remote_stat(&b, "rejected") >= 1);
    host_stop(&b);
    /* No key: sealed records are not plain ones. */
    host_start(&b, &p, "0", NULL, "b");
    assert_int_equal(match_and_fetch(&b, &slowest), 0);
    assert_true(remote_stat(&b, "rejected") >= 1);
    host_stop(&b);

    /* Chunk 1's record under chunk 0's name, and under layer 1's. */
    plant(&p, n00.s, rec, (size_t)len);
    host_start(&b, &p, "0", key_a, "b");
    assert_int_equal(match_and_fetch(&b, &slowest), 0);
    assert_true(remote_stat(&b, "rejected") >= 1);
    host_stop(&b);
    plant(&p, n00.s, "x", 1);
    plant(&p, n01.s, rec, (size_t)len);
    host_start(&b, &p, "0", key_a, "b");
    assert_int_equal(match_and_fetch(&b, &slowest), 0);
    assert_true(remote_stat(&b, "rejected") >= 2);   /* n00's garbage too */
    host_stop(&b);

    /* Garbage of a record's own length, and a record with one bit flipped. */
    char *junk = malloc((size_t)len);
    memset(junk, 0x5a, (size_t)len);
    plant(&p, n00.s, junk, (size_t)len);
    plant(&p, n01.s, junk, (size_t)len);
    memcpy(junk, rec, (size_t)len);
    junk[len / 2] ^= 1;
    plant(&p, n10.s, junk, (size_t)len);
    /* And one with its salt edited: another key, so its tag fails. */
    ((struct kvt_remote_record_header *)rec2)->key_salt[0] ^= 1;
    plant(&p, n20.s, rec2, (size_t)len2);
    host_start(&b, &p, "0", key_a, "b");
    assert_int_equal(match_and_fetch(&b, &slowest), 0);
    assert_true(remote_stat(&b, "rejected") >= 4);
    host_stop(&b);
    free(junk);
    free(rec2);
    free(rec);
    mc_stop(&p);
}

/* A host whose domain has another pool name sees none of A's records
 * (they are absent for it, not rejected); A itself still serves them. */
static void domains_stay_apart_in_the_pool(void **state)
{
    struct mc_pool p;
    struct host a, b;
    uint64_t slowest;
    (void)state;

    CHECK_OK(mc_start(&p, 3, 64, "1m"));
    host_start(&a, &p, "1", key_a, "a");
    store_prefix(&a);
    domain_name = "team-b";
    host_start(&b, &p, "1", key_a, "b");
    domain_name = DOMAIN;
    assert_int_equal(match_and_fetch(&b, &slowest), 0);
    assert_true(remote_stat(&b, "misses") >= 1);
    assert_int_equal(remote_stat(&b, "hits"), 0);
    assert_int_equal(remote_stat(&b, "rejected"), 0);
    host_stop(&b);
    assert_int_equal(match_and_fetch(&a, &slowest), N_TOK);
    host_stop(&a);
    mc_stop(&p);
}

/* Records are never split: servers whose item size (-I) is below a record
 * refuse it, counted as too_large; the host serves its own copy still. */
static void records_over_the_item_size_are_refused_and_counted(void **state)
{
    struct mc_pool p;
    struct host a, b;
    uint64_t slowest;
    (void)state;

    CHECK_OK(mc_start(&p, 1, 64, "64k"));
    host_start(&a, &p, "0", key_a, "a");
    store_prefix(&a);
    assert_true(remote_stat(&a, "too_large") >= N_CHUNKS * LAYERS);
    assert_int_equal(remote_stat(&a, "too_large"), remote_stat(&a, "puts"));
    assert_int_equal(remote_stat(&a, "bytes_written"), 0);
    assert_int_equal(match_and_fetch(&a, &slowest), N_TOK);
    host_start(&b, &p, "0", key_a, "b");
    assert_int_equal(match_and_fetch(&b, &slowest), 0);
    host_stop(&b);
    host_stop(&a);
    mc_stop(&p);
}

/* Store tokens [from, to) of a call of n_tok tokens, every layer. */
static void store_range(kvt_client *c, uint32_t n_tok, uint32_t from, uint32_t to)
{
    size_t bytes = (size_t)(to - from) * HEADS * DIM * 2;
    kvt_span spans[LAYERS];

    for (uint32_t l = 0; l < LAYERS; l++) {
        spans[l] = (kvt_span){ l, from, to - from, malloc(bytes), malloc(bytes) };
        test_fill(spans[l].k, KVT_F16, SEED, l, from, to - from, HEADS, DIM);
        test_fill(spans[l].v, KVT_F16, SEED + 1, l, from, to - from, HEADS, DIM);
    }
    CHECK_OK(kvt_store_tokens(c, tokens, n_tok, spans, LAYERS));
    for (uint32_t l = 0; l < LAYERS; l++) {
        free(spans[l].k);
        free(spans[l].v);
    }
}

/* Only completed chunks go to the pool: a partial tail stays local, and a
 * chunk whose tokens came in two stores (the later part first) is written
 * once, when the second makes it whole. Another host matches up to the
 * last chunk boundary and gets every value. */
static void only_completed_chunks_are_written_through(void **state)
{
    struct mc_pool p;
    struct host a, b;
    uint64_t slowest;
    uint32_t n = 0;
    (void)state;

    CHECK_OK(mc_start(&p, 3, 64, "1m"));
    host_start(&a, &p, "0", key_a, "a");
    kvt_client *c = connect_host(&a, KVT_F16);
    store_range(c, N_TOK + TAIL, CHUNK + 44, N_TOK + TAIL);   /* chunk 1 incomplete */
    store_range(c, N_TOK + TAIL, 0, CHUNK + 44);              /* ... now complete */
    CHECK_OK(kvt_sync(c));
    CHECK_OK(kvt_match_tokens(c, tokens, N_TOK + TAIL, &n));
    assert_int_equal(n, N_TOK + TAIL);                        /* A has its tail */
    kvt_disconnect(c);
    assert_int_equal(remote_stat(&a, "puts"), N_CHUNKS * LAYERS);
    assert_int_equal(remote_stat(&a, "put_gone"), 0);
    assert_int_equal(remote_stat(&a, "put_errors"), 0);

    host_start(&b, &p, "0", key_a, "b");
    c = connect_host(&b, KVT_F32);
    CHECK_OK(kvt_match_tokens(c, tokens, N_TOK + TAIL, &n));
    kvt_disconnect(c);
    assert_int_equal(n, N_TOK);
    assert_true(remote_stat(&b, "misses") >= LAYERS);         /* the tails */
    assert_int_equal(remote_stat(&b, "hits"), N_CHUNKS * LAYERS);
    assert_int_equal(match_and_fetch(&b, &slowest), N_TOK);   /* values checked */
    host_stop(&b);
    host_stop(&a);
    mc_stop(&p);
}

struct slow_fetch {
    kvt_client *c;
    int rc;
    uint64_t ms;
};

static void *fetch_first_chunk(void *arg)
{
    struct slow_fetch *f = arg;
    size_t bytes = (size_t)CHUNK * HEADS * DIM * 4;
    kvt_span sp = { 0, 0, CHUNK, malloc(bytes), malloc(bytes) };
    uint64_t t0 = now_ms();

    f->rc = kvt_fetch_tokens(f->c, tokens, CHUNK, &sp, 1);
    f->ms = now_ms() - t0;
    free(sp.k);
    free(sp.v);
    return NULL;
}

/* A small fetch that must ask a hung pool waits for it on a worker: the
 * event loop meanwhile answers the admin socket and other clients' local
 * requests at once. */
static void a_fetch_waiting_on_the_pool_leaves_the_loop_serving(void **state)
{
    struct mc_pool p;
    struct host a, b;
    static char reply[1 << 16];
    (void)state;

    CHECK_OK(mc_start(&p, 1, 64, "1m"));
    host_start(&a, &p, "0", key_a, "a");
    store_prefix(&a);
    host_stop(&a);
    mc_pause(&p, 0, 1);
    host_start_timeout(&b, &p, "0", key_a, "b", "1500");
    struct slow_fetch f = { .c = connect_host(&b, KVT_F32) };
    kvt_client *other = connect_host(&b, KVT_F16);
    size_t bytes = (size_t)16 * HEADS * DIM * 2;
    void *k = calloc(1, bytes), *v = calloc(1, bytes);
    pthread_t th;

    assert_int_equal(pthread_create(&th, NULL, fetch_first_chunk, &f), 0);
    usleep(200 * 1000);                     /* the fetch is waiting now */
    uint64_t t0 = now_ms();
    CHECK_OK(admin_request(&b.d, "{\"cmd\":\"stats\"}", reply, sizeof(reply)));
    CHECK_OK(kvt_store(other, "local", 0, 0, 16, k, v));
    CHECK_OK(kvt_fetch(other, "local", 0, 0, 16, k, v));
    uint64_t loop_ms = now_ms() - t0;
    assert_int_equal(pthread_join(th, NULL), 0);
    print_message("fetch waiting on a hung pool: %llu ms; loop answered in %llu ms\n",
                  (unsigned long long)f.ms, (unsigned long long)loop_ms);
    CHECK_RC(f.rc, -ENOENT);
    assert_true(f.ms >= 1000);              /* it did wait on the pool */
    assert_true(f.ms <= 1500 + MARGIN_MS);
    assert_true(loop_ms < 500);             /* while the loop did not */
    free(k);
    free(v);
    kvt_disconnect(other);
    kvt_disconnect(f.c);
    host_stop(&b);
    mc_stop(&p);
}

/* Every server hung: kvt_sync returns within the timeouts (each writer
 * pays one per server, then skips them), and SIGTERM with writes queued
 * exits 0 promptly: the rest of the queue is dropped past the grace. */
static void a_hung_pool_never_holds_sync_or_exit(void **state)
{
    struct mc_pool p;
    struct host a;
    (void)state;

    CHECK_OK(mc_start(&p, 3, 64, "1m"));
    for (int i = 0; i < p.n; i++)
        mc_pause(&p, i, 1);
    host_start(&a, &p, "0", key_a, "a");
    uint64_t t0 = now_ms();
    store_prefix(&a);                       /* store, then kvt_sync */
    uint64_t sync_ms = now_ms() - t0;
    assert_true(sync_ms <= 3 * (TIMEOUT_MS + MARGIN_MS));
    assert_int_equal(remote_stat(&a, "queued"), 0);
    assert_true(remote_stat(&a, "put_errors") >= 1);

    /* Again without the sync, and stop at once: writes are queued. */
    kvt_client *c = connect_host(&a, KVT_F16);
    store_range(c, N_TOK, 0, N_TOK);
    kvt_disconnect(c);
    t0 = now_ms();
    host_stop(&a);                          /* asserts exit status 0 */
    uint64_t exit_ms = now_ms() - t0;
    print_message("hung pool: store + sync %llu ms, SIGTERM to exit %llu ms\n",
                  (unsigned long long)sync_ms, (unsigned long long)exit_ms);
    /* The grace (a timeout per server), a write in hand, the final flush. */
    assert_true(exit_ms <= 2 * 3 * (TIMEOUT_MS + MARGIN_MS));
    mc_stop(&p);
}

/* The remote tier's keys are read at start only: config set refuses each
 * with the reason, and one pool name for two domains of a host is refused
 * at start (it would join them through the pool). */
static void remote_keys_are_read_at_start_only(void **state)
{
    static const char *const keys[] = { "remote", "remote-replicas", "remote-timeout-ms",
                                        "remote-key-file", "remote-domain" };
    struct mc_pool p;
    struct host a;
    static char reply[1 << 16], req[512], domain[96], share[64];
    (void)state;

    CHECK_OK(mc_start(&p, 1, 64, "1m"));
    host_start(&a, &p, "1", key_a, "a");
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
        snprintf(req, sizeof(req), "{\"cmd\":\"config\",\"op\":\"set\",\"key\":\"%s\","
                 "\"value\":\"2\"}", keys[i]);
        CHECK_OK(admin_request(&a.d, req, reply, sizeof(reply)));
        cJSON *r = cJSON_Parse(reply);
        const cJSON *err = cJSON_GetObjectItemCaseSensitive(r, "error");
        assert_true(cJSON_IsString(err));
        assert_non_null(strstr(err->valuestring, "read at start only"));
        cJSON_Delete(r);
    }
    CHECK_OK(admin_request(&a.d, "{\"cmd\":\"config\",\"op\":\"get\","
                                 "\"key\":\"remote-replicas\"}", reply, sizeof(reply)));
    assert_non_null(strstr(reply, "\"value\":\"1\""));
    daemon_stop(&a.d);                      /* keeps its dir for the starts below */

    /* This uid and another, in two domains here, under one pool name. */
    snprintf(domain, sizeof(domain), "dup:%u,%u", (unsigned)getuid(), (unsigned)getuid() + 4242);
    assert_true(daemon_start_status(&a.d, "--remote", p.list, "--remote-domain", domain,
                                    NULL) > 0);
    /* In one share group they are one domain: it starts. */
    snprintf(share, sizeof(share), "%u,%u", (unsigned)getuid(), (unsigned)getuid() + 4242);
    daemon_restart(&a.d, "--remote", p.list, "--remote-domain", domain, "--share", share, NULL);
    host_stop(&a);
    mc_stop(&p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(prefix_stored_on_one_host_is_fetched_on_another),
        cmocka_unit_test(replicas_survive_a_dead_server),
        cmocka_unit_test(without_replicas_a_dead_server_is_a_miss),
        cmocka_unit_test(a_hung_server_costs_at_most_its_timeout),
        cmocka_unit_test(bad_records_are_misses_and_counted),
        cmocka_unit_test(domains_stay_apart_in_the_pool),
        cmocka_unit_test(records_over_the_item_size_are_refused_and_counted),
        cmocka_unit_test(only_completed_chunks_are_written_through),
        cmocka_unit_test(a_fetch_waiting_on_the_pool_leaves_the_loop_serving),
        cmocka_unit_test(a_hung_pool_never_holds_sync_or_exit),
        cmocka_unit_test(remote_keys_are_read_at_start_only),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
