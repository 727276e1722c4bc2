/* test_loop_disk.c - the event loop never reads the disk: a small request
 * that needs the cold tier (a fetch of chunks that left RAM, a store that
 * appends to one) is handed whole to a worker, answered from there, and
 * counted in stats' tiers.loop_disk_handoffs; requests that RAM answers,
 * and plain misses, stay on the loop (the counter does not move). While
 * one client fetches cold data in a loop, another's decode steps keep
 * being served, each with its own values, and each client's requests stay
 * in order (a store then a fetch of the same tokens always reads the
 * store). A drop with a cold tier, now on a worker, still answers and
 * leaves the context absent. A small store that creates chunks whose
 * blocks must be made (mmap'd and faulted in) goes to a worker too,
 * counted in tiers.loop_block_handoffs, once per creating request; one
 * that finds pooled blocks (a dropped context's) stays on the loop. */
#include "tests/helpers.h"

#include <cjson/cJSON.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LAYERS 4
#define HEADS 2
#define DIM 64
#define CHUNK 64
#define ROW (HEADS * DIM * 2)        /* f16 bytes per token */
#define COLD_TOKENS 100              /* two chunks per layer: 200 KiB, under the inline bound */
#define COLD_ROUNDS 20
#define DECODE_STEPS 400

static struct test_daemon d;
static char cold_dir[64], cold_path[128];

static void start(void)
{
    snprintf(cold_dir, sizeof(cold_dir), "/var/tmp/kvtier-loopdisk-XXXXXX");
    assert_non_null(mkdtemp(cold_dir));
    snprintf(cold_path, sizeof(cold_path), "%s/cold.kvt", cold_dir);
    daemon_start(&d, "--hot-bytes", "64M", "--cold-bytes", "64M",
                 "--cold-region-bytes", "4M", "--workers", "2",
                 "--cold-path", cold_path, NULL);
}

static void cleanup(void)
{
    char cmd[128];

    daemon_cleanup(&d);
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", cold_dir);
    if (system(cmd) != 0)
        fprintf(stderr, "cannot remove %s\n", cold_dir);
}

static kvt_client *client(void)
{
    kvt_model m = test_model("loopdisk-model", LAYERS, HEADS, DIM, KVT_F16, CHUNK);
    kvt_client *c = NULL;

    CHECK_OK(kvt_connect(d.socket, &m, &c));
    return c;
}

/* One stats counter: tiers.<name>. */
static double tiers_stat(const char *name)
{
    char reply[8192];

    CHECK_OK(admin_request(&d, "{\"cmd\":\"stats\"}", reply, sizeof(reply)));
    cJSON *r = cJSON_Parse(reply);
    assert_non_null(r);
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(
        cJSON_GetObjectItemCaseSensitive(r, "tiers"), name);
    if (!cJSON_IsNumber(v))
        fail_msg("stats has no tiers.%s: %s", name, reply);
    double n = v->valuedouble;
    cJSON_Delete(r);
    return n;
}

static double handoffs(void)
{
    return tiers_stat("loop_disk_handoffs");
}

static void evict_hot(void)
{
    char reply[512];

    CHECK_OK(admin_request(&d, "{\"cmd\":\"evict\",\"tier\":\"hot\"}", reply, sizeof(reply)));
    if (!strstr(reply, "\"ok\":true"))
        fail_msg("evict --tier hot: %s", reply);
}

/* Tokens [first, first + n) of every layer in one batch, values of seed. */
struct run {
    uint8_t *k[LAYERS], *v[LAYERS];
    kvt_span spans[LAYERS];
};

static void run_init(struct run *r, uint32_t first, uint32_t n)
{
    for (uint32_t l = 0; l < LAYERS; l++) {
        r->k[l] = calloc(n, ROW);
        r->v[l] = calloc(n, ROW);
        assert_true(r->k[l] && r->v[l]);
        r->spans[l] = (kvt_span){ l, first, n, r->k[l], r->v[l] };
    }
}

static void run_fill(struct run *r, uint64_t seed)
{
    for (uint32_t l = 0; l < LAYERS; l++) {
        const kvt_span *s = &r->spans[l];
        test_fill(r->k[l], KVT_F16, seed, l, s->token_start, s->n_tokens, HEADS, DIM);
        test_fill(r->v[l], KVT_F16, seed + 1, l, s->token_start, s->n_tokens, HEADS, DIM);
    }
}

/* 0 when every layer holds seed's values within the int8 bound. */
static size_t run_check(const struct run *r, uint64_t seed)
{
    size_t bad = 0;

    for (uint32_t l = 0; l < LAYERS; l++) {
        const kvt_span *s = &r->spans[l];
        bad += test_check(r->k[l], KVT_F16, seed, l, s->token_start, s->n_tokens, HEADS, DIM, 0);
        bad += test_check(r->v[l], KVT_F16, seed + 1, l, s->token_start, s->n_tokens, HEADS,
                          DIM, 0);
    }
    return bad;
}

static void run_free(struct run *r)
{
    for (uint32_t l = 0; l < LAYERS; l++) {
        free(r->k[l]);
        free(r->v[l]);
    }
}

/* Contexts name (COLD_TOKENS tokens of seed) on the cold tier only. */
static void store_cold_contexts(kvt_client *c, const char *const *names, int n, uint64_t seed)
{
    struct run r;

    run_init(&r, 0, COLD_TOKENS);
    for (int i = 0; i < n; i++) {
        run_fill(&r, seed + 2 * (uint64_t)i);
        CHECK_OK(kvt_store_batch(c, names[i], r.spans, LAYERS));
    }
    CHECK_OK(kvt_sync(c));
    run_free(&r);
    evict_hot();
}

static void fetch_cold_context(kvt_client *c, const char *name, uint64_t seed)
{
    struct run r;

    run_init(&r, 0, COLD_TOKENS);
    CHECK_OK(kvt_fetch_batch(c, name, r.spans, LAYERS));
    assert_int_equal(run_check(&r, seed), 0);
    run_free(&r);
}

/* Which requests go to a worker, and that their answers are right. */
static void small_requests_needing_the_disk_go_to_a_worker(void **state)
{
    (void)state;
    start();
    kvt_client *c = client();
    struct run one;

    const char *cold = "cold";
    store_cold_contexts(c, &cold, 1, 10);
    double before = handoffs();
    fetch_cold_context(c, cold, 10);     /* promotes: needs the disk */
    assert_true(handoffs() == before + 1);
    fetch_cold_context(c, cold, 10);     /* in RAM now: the loop answers */
    assert_true(handoffs() == before + 1);
    assert_true(tiers_stat("promotions") >= LAYERS * 2);

    /* A plain miss costs an index lookup, not a hand-off. */
    run_init(&one, 0, 1);
    CHECK_RC(kvt_fetch_batch(c, "never-stored", one.spans, LAYERS), -ENOENT);
    assert_true(handoffs() == before + 1);

    /* Appending a decode step to chunks that left RAM merges their
     * records in first: a worker does it, and the old tokens survive. */
    evict_hot();
    run_free(&one);
    run_init(&one, COLD_TOKENS, 1);
    run_fill(&one, 20);
    CHECK_OK(kvt_store_batch(c, "cold", one.spans, LAYERS));
    assert_true(handoffs() == before + 2);
    memset(one.k[0], 0, ROW);
    CHECK_OK(kvt_fetch_batch(c, "cold", one.spans, LAYERS));
    assert_int_equal(run_check(&one, 20), 0);
    fetch_cold_context(c, cold, 10);     /* tokens 0..99 still seed 10's */
    uint32_t len = 0;
    CHECK_OK(kvt_length(c, "cold", &len));
    assert_int_equal(len, COLD_TOKENS + 1);

    /* A drop with a cold tier runs on a worker: its count and its effect. */
    CHECK_OK(kvt_drop(c, "cold"));
    CHECK_RC(kvt_fetch_batch(c, "cold", one.spans, LAYERS), -ENOENT);
    CHECK_OK(kvt_length(c, "cold", &len));
    assert_int_equal(len, 0);

    run_free(&one);
    kvt_disconnect(c);
    cleanup();
}

static char cold_names[COLD_ROUNDS][24];
static const char *cold_list[COLD_ROUNDS];

struct cold_reader {
    atomic_int rounds;
    atomic_bool stop;
};

/* Fetch each cold context once: every fetch promotes. (Emptying RAM in
 * between would drop the decoder's unsynced chunks.) */
static void *cold_reader_main(void *arg)
{
    struct cold_reader *cr = arg;
    kvt_client *c = client();

    for (int i = 0; i < COLD_ROUNDS && !atomic_load(&cr->stop); i++) {
        fetch_cold_context(c, cold_list[i], 1000 + 2 * (uint64_t)i);
        atomic_fetch_add(&cr->rounds, 1);
    }
    kvt_disconnect(c);
    return NULL;
}

/* Another client's decode steps while cold fetches are in flight: every
 * step is answered, in order, with its own values. */
static void decode_steps_go_on_while_another_client_reads_the_disk(void **state)
{
    (void)state;
    start();
    kvt_client *setup = client(), *dec;
    struct cold_reader cr = { 0 };
    pthread_t reader;

    for (int i = 0; i < COLD_ROUNDS; i++) {
        snprintf(cold_names[i], sizeof(cold_names[i]), "cold-%d", i);
        cold_list[i] = cold_names[i];
    }
    store_cold_contexts(setup, cold_list, COLD_ROUNDS, 1000);
    kvt_disconnect(setup);
    double before = handoffs();
    dec = client();
    assert_int_equal(pthread_create(&reader, NULL, cold_reader_main, &cr), 0);
    struct run step;
    for (uint32_t i = 0; i < DECODE_STEPS || atomic_load(&cr.rounds) < COLD_ROUNDS; i++) {
        run_init(&step, i % 4096, 1);
        run_fill(&step, 100 + i);
        CHECK_OK(kvt_store_batch(dec, "decode", step.spans, LAYERS));
        for (uint32_t l = 0; l < LAYERS; l++) {
            memset(step.k[l], 0, ROW);
            memset(step.v[l], 0, ROW);
        }
        CHECK_OK(kvt_fetch_batch(dec, "decode", step.spans, LAYERS));
        assert_int_equal(run_check(&step, 100 + i), 0);
        run_free(&step);
        if (i > 200000)
            break;                   /* the reader is stuck: fail below */
    }
    atomic_store(&cr.stop, true);
    pthread_join(reader, NULL);
    assert_int_equal(atomic_load(&cr.rounds), COLD_ROUNDS);
    /* Every cold fetch went through a worker, and no decode step did (its
     * chunks never left RAM, and no drop took drop_lock). */
    assert_true(handoffs() == before + COLD_ROUNDS);
    kvt_disconnect(dec);
    cleanup();
}

/* Chunks of 8 heads x 128: blocks of ~150 KiB, which are mmap'd. */
#define BIG_HEADS 8
#define BIG_DIM 128
#define BIG_ROW (BIG_HEADS * BIG_DIM * 2)

/* One decode step: token tok of every layer, values of seed. */
static void big_step(kvt_client *c, const char *name, uint32_t tok, uint64_t seed, bool store)
{
    static uint8_t k[LAYERS][BIG_ROW], v[LAYERS][BIG_ROW];
    kvt_span spans[LAYERS];

    for (uint32_t l = 0; l < LAYERS; l++) {
        spans[l] = (kvt_span){ l, tok, 1, k[l], v[l] };
        if (store) {
            test_fill(k[l], KVT_F16, seed, l, tok, 1, BIG_HEADS, BIG_DIM);
            test_fill(v[l], KVT_F16, seed + 1, l, tok, 1, BIG_HEADS, BIG_DIM);
        } else {
            memset(k[l], 0, BIG_ROW);
            memset(v[l], 0, BIG_ROW);
        }
    }
    if (store) {
        CHECK_OK(kvt_store_batch(c, name, spans, LAYERS));
        return;
    }
    CHECK_OK(kvt_fetch_batch(c, name, spans, LAYERS));
    for (uint32_t l = 0; l < LAYERS; l++) {
        assert_int_equal(test_check(k[l], KVT_F16, seed, l, tok, 1, BIG_HEADS, BIG_DIM, 0), 0);
        assert_int_equal(test_check(v[l], KVT_F16, seed + 1, l, tok, 1, BIG_HEADS, BIG_DIM, 0),
                         0);
    }
}

static void new_blocks_are_made_on_a_worker(void **state)
{
    (void)state;
    daemon_start(&d, "--hot-bytes", "64M", "--workers", "2", NULL);
    kvt_model m = test_model("loopblock-model", LAYERS, BIG_HEADS, BIG_DIM, KVT_F16, CHUNK);
    kvt_client *c = NULL;
    CHECK_OK(kvt_connect(d.socket, &m, &c));

    double blocks = tiers_stat("loop_block_handoffs"), disk = handoffs();
    for (uint32_t tok = 0; tok <= CHUNK; tok++)
        big_step(c, "steps", tok, 40, true);
    /* Token 0 and token CHUNK each created a chunk per layer. */
    assert_true(tiers_stat("loop_block_handoffs") == blocks + 2);
    assert_true(handoffs() == disk);
    for (uint32_t tok = 0; tok <= CHUNK; tok += CHUNK / 4)
        big_step(c, "steps", tok, 40, false);

    /* A dropped context's blocks wait in the pool: the next context's
     * first step takes them, on the loop. */
    CHECK_OK(kvt_drop(c, "steps"));
    big_step(c, "again", 0, 50, true);
    assert_true(tiers_stat("loop_block_handoffs") == blocks + 2);
    big_step(c, "again", 0, 50, false);
    kvt_disconnect(c);
    daemon_cleanup(&d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(small_requests_needing_the_disk_go_to_a_worker),
        cmocka_unit_test(decode_steps_go_on_while_another_client_reads_the_disk),
        cmocka_unit_test(new_blocks_are_made_on_a_worker),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
