/* test_fetch_split.c - a large fetch that the workers share reads each
 * chunk in parts (session.c, fetch_segment_tokens: 256-token chunks of
 * 8 x 128 f16 in two parts of 128 tokens), and what it returns is still the
 * stored bytes: lossless, bit for bit, for spans that start and end inside
 * chunks and inside parts, from RAM and from SSD. A chunk that a request
 * needs from SSD is read from disk once, not once per part (stats
 * cold.gets). */
#include "tests/helpers.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LAYERS 4
#define HEADS 8
#define DIM 128
#define CHUNK 256
#define TOKENS 4096                  /* 16 chunks a layer */
#define ROW (HEADS * DIM * 2)        /* f16 bytes per token */
#define SEED 7

static struct test_daemon d;
static char cold_dir[64], cold_path[128];

static void start(void)
{
    snprintf(cold_dir, sizeof(cold_dir), "/var/tmp/kvtier-split-XXXXXX");
    assert_non_null(mkdtemp(cold_dir));
    snprintf(cold_path, sizeof(cold_path), "%s/cold.kvt", cold_dir);
    daemon_start(&d, "--quant", "none", "--hot-bytes", "256M", "--cold-bytes", "256M",
                 "--workers", "2", "--cold-path", cold_path, NULL);
}

static void cleanup(void)
{
    daemon_cleanup(&d);
    test_remove_dir(cold_dir);
}

/* Every layer's K and V, as stored. */
static uint8_t *kv[LAYERS][2];

static kvt_client *connect_and_store(void)
{
    kvt_model m = test_model("split-model", LAYERS, HEADS, DIM, KVT_F16, CHUNK);
    kvt_span spans[LAYERS];
    kvt_client *c;

    CHECK_OK(kvt_connect(d.socket, &m, &c));
    for (uint32_t l = 0; l < LAYERS; l++) {
        for (int s = 0; s < 2; s++) {
            kv[l][s] = malloc((size_t)TOKENS * ROW);
            assert_non_null(kv[l][s]);
            test_fill(kv[l][s], KVT_F16, SEED + 2 * l + s, l, 0, TOKENS, HEADS, DIM);
        }
        spans[l] = (kvt_span){ l, 0, TOKENS, kv[l][0], kv[l][1] };
    }
    CHECK_OK(kvt_store_batch(c, "ctx", spans, LAYERS));
    return c;
}

static void free_stored(void)
{
    for (uint32_t l = 0; l < LAYERS; l++)
        for (int s = 0; s < 2; s++)
            free(kv[l][s]);
}

/* Fetch tokens [start[l], start[l] + n[l]) of each layer in one batch into
 * kvt_alloc buffers (the daemon writes them in place) and compare bytes. */
static void fetch_and_compare(kvt_client *c, const uint32_t *start, const uint32_t *n)
{
    kvt_span spans[LAYERS];

    for (uint32_t l = 0; l < LAYERS; l++) {
        spans[l] = (kvt_span){ l, start[l], n[l], kvt_alloc(c, (size_t)n[l] * ROW),
                               kvt_alloc(c, (size_t)n[l] * ROW) };
        assert_non_null(spans[l].k);
        assert_non_null(spans[l].v);
        memset(spans[l].k, 0xA5, (size_t)n[l] * ROW);
        memset(spans[l].v, 0x5A, (size_t)n[l] * ROW);
    }
    CHECK_OK(kvt_fetch_batch(c, "ctx", spans, LAYERS));
    for (uint32_t l = 0; l < LAYERS; l++) {
        if (memcmp(spans[l].k, kv[l][0] + (size_t)start[l] * ROW, (size_t)n[l] * ROW) ||
            memcmp(spans[l].v, kv[l][1] + (size_t)start[l] * ROW, (size_t)n[l] * ROW))
            fail_msg("layer %u tokens [%u, %u): fetched bytes differ from stored", l,
                     start[l], start[l] + n[l]);
        kvt_free(c, spans[l].k);
        kvt_free(c, spans[l].v);
    }
}

/* Spans starting and ending inside chunks and inside their parts: 37 is
 * in a chunk's first part, 130 in its second, 255 its last token. */
static const uint32_t odd_start[LAYERS] = { 37, 130, 255, 1 };
static const uint32_t odd_n[LAYERS] = { 3000, 2000, 3841, 129 };

static void split_fetch_returns_stored_bytes_from_ram(void **state)
{
    (void)state;
    start();
    kvt_client *c = connect_and_store();
    const uint32_t all_start[LAYERS] = { 0 }, all_n[LAYERS] = { TOKENS, TOKENS, TOKENS, TOKENS };

    fetch_and_compare(c, all_start, all_n);
    fetch_and_compare(c, odd_start, odd_n);
    assert_true(test_stat(&d, "hot", "misses") == 0);
    kvt_disconnect(c);
    free_stored();
    daemon_stop(&d);
    cleanup();
}

static void split_fetch_reads_each_chunk_from_disk_once(void **state)
{
    (void)state;
    start();
    kvt_client *c = connect_and_store();
    const uint32_t all_start[LAYERS] = { 0 }, all_n[LAYERS] = { TOKENS, TOKENS, TOKENS, TOKENS };

    CHECK_OK(kvt_sync(c));
    test_evict_hot(&d);
    assert_true(test_stat(&d, "hot", "chunks") == 0);
    double gets = test_stat(&d, "cold", "gets");
    /* 128 parts in 2 workers' claims of 4 (session.c: n / (parts * 16)):
     * no claim splits a chunk's two parts, so every chunk is read once. */
    fetch_and_compare(c, all_start, all_n);
    assert_true(test_stat(&d, "cold", "gets") - gets == LAYERS * (TOKENS / CHUNK));
    assert_true(test_stat(&d, "hot", "chunks") == LAYERS * (TOKENS / CHUNK));

    /* Now from RAM again, and after another eviction at odd offsets. */
    fetch_and_compare(c, odd_start, odd_n);
    test_evict_hot(&d);
    fetch_and_compare(c, odd_start, odd_n);
    kvt_disconnect(c);
    free_stored();
    daemon_stop(&d);
    cleanup();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(split_fetch_returns_stored_bytes_from_ram),
        cmocka_unit_test(split_fetch_reads_each_chunk_from_disk_once),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
