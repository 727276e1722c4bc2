/* remote.c - the remote tier: record names, records, the writer queue, reads. */
#include "cache/remote.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "cache/remote_format.h"

#define WRITERS_MAX 16
/* Records asked for in one round trip: a few MiB on common shapes. */
#define GET_BATCH 32
/* Batches in flight at once in one remote_get_many (each on a handle of
 * its own: the pool keeps 16 for readers). */
#define GET_THREADS 4

struct put_job {
    struct put_job *next;
    struct kvt_remote_name name;
    struct kvt_chunk_key key;
    uint64_t ticket;
};

struct kvt_remote {
    struct remote_pool *pool;
    struct remote_seal *seal;
    uint32_t timeout_ms, queue_max;
    size_t n_servers;
    remote_source_fn source;
    void *source_arg;
    /* The queue: FIFO, tickets in order. A writer takes the head and keeps
     * its ticket in busy[] until done, so `done_upto` (every ticket below
     * it tried) is the least of the busy tickets and the head's. */
    pthread_mutex_t mu;
    pthread_cond_t work, done;
    struct put_job *head, *tail;
    uint64_t n_queued, next_ticket;
    uint64_t busy[WRITERS_MAX];       /* ticket in hand, 0 = idle */
    bool stopping;
    /* Set by remote_close: queued writes not started by then are dropped
     * (CLOCK_MONOTONIC ns; 0 = none). */
    uint64_t drop_after;
    pthread_t threads[WRITERS_MAX];
    unsigned n_threads;
    /* Counters, under mu (cheap next to a network round trip). */
    struct kvt_remote_stats st;
};

bool remote_scope(const char *domain_name, const char *ns_name, uint32_t layers,
                  uint32_t heads, uint32_t dim, uint32_t chunk_tokens,
                  struct kvt_remote_scope *out)
{
    uint32_t geo[4] = { layers, heads, dim, chunk_tokens };
    uint8_t md[EVP_MAX_MD_SIZE];
    unsigned md_len = 0;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();

    /* SHA-256, not a fast hash: a client picks its namespace's name, and
     * with a hash whose collisions can be searched for it could pick one
     * whose scope is another domain's, and read that domain's records.
     * NUL-separated, so ("ab", "c") and ("a", "bc") differ. */
    bool ok = ctx && EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) == 1 &&
              EVP_DigestUpdate(ctx, "kvtier remote scope 2", 22) == 1 &&
              EVP_DigestUpdate(ctx, domain_name, strlen(domain_name) + 1) == 1 &&
              EVP_DigestUpdate(ctx, ns_name, strlen(ns_name) + 1) == 1 &&
              EVP_DigestUpdate(ctx, geo, sizeof(geo)) == 1 &&
              EVP_DigestFinal_ex(ctx, md, &md_len) == 1 && md_len >= 16;
    EVP_MD_CTX_free(ctx);
    if (ok) {
        memcpy(&out->hi, md, 8);
        memcpy(&out->lo, md + 8, 8);
    }
    return ok;
}

void remote_record_name(const struct kvt_remote_scope *scope, const struct kvt_chunk_key *key,
                        struct kvt_remote_name *out)
{
    int n = snprintf(out->s, sizeof(out->s), "kvt1/%016" PRIx64 "%016" PRIx64 "/%016" PRIx64
                     "%016" PRIx64 "/%" PRIu32 "/%" PRIu32, scope->hi, scope->lo,
                     key->obj_hi, key->obj_lo, key->layer, key->chunk_idx);
    out->len = (uint32_t)n;
}

static uint64_t lowest_unfinished(struct kvt_remote *r)
{
    uint64_t low = r->head ? r->head->ticket : r->next_ticket;

    for (unsigned i = 0; i < r->n_threads; i++)
        if (r->busy[i] && r->busy[i] < low)
            low = r->busy[i];
    return low;
}

struct emit_ctx {
    struct kvt_remote *r;
    const struct kvt_remote_name *name;
    void *buf;
    size_t cap;
    int rc;
};

/* Build a record from img and store it. */
static int emit_record(void *arg, const struct kvt_chunk_image *img)
{
    struct emit_ctx *e = arg;
    struct kvt_remote *r = e->r;
    const size_t bm = chunk_bitmap_bytes(img->shape.tokens);
    const size_t data = chunk_data_bytes(&img->shape);
    const size_t len = sizeof(struct kvt_remote_record_header) + bm + data;
    struct kvt_remote_record_header *h;
    uint64_t t0;
    int rc;

    if (!chunk_shape_valid(&img->shape))
        return -EINVAL;
    if (len > e->cap) {
        void *nb = realloc(e->buf, len);
        if (!nb)
            return -ENOMEM;
        e->buf = nb;
        e->cap = len;
    }
    h = e->buf;
    memset(h, 0, sizeof(*h));
    h->magic = REMOTE_RECORD_MAGIC;
    h->version = REMOTE_RECORD_VERSION;
    h->payload_bytes = (uint32_t)(bm + data);
    h->shape = img->shape;
    memcpy((uint8_t *)e->buf + sizeof(*h), img->present, bm);
    memcpy((uint8_t *)e->buf + sizeof(*h) + bm, img->data, data);
    rc = remote_seal_close(r->seal, e->name->s, e->name->len, e->buf, len);
    if (rc)
        return rc;
    t0 = remote_now_ns();
    rc = r->pool->ops->set(r->pool, e->name->s, e->name->len, e->buf, len);
    uint64_t ns = remote_now_ns() - t0;
    pthread_mutex_lock(&r->mu);
    r->st.puts++;
    r->st.put_ns_total += ns;
    if (ns > r->st.put_ns_max)
        r->st.put_ns_max = ns;
    if (rc == 0)
        r->st.bytes_written += len;
    else if (rc == -E2BIG)
        r->st.too_large++;
    else
        r->st.put_errors++;
    pthread_mutex_unlock(&r->mu);
    return rc;
}

static void *writer_main(void *arg)
{
    struct kvt_remote *r = arg;
    struct emit_ctx e = { .r = r };
    unsigned me;

    pthread_mutex_lock(&r->mu);
    me = r->n_threads++;     /* set before any other thread reads busy[] */
    pthread_cond_broadcast(&r->done);
    for (;;) {
        while (!r->head && !r->stopping)
            pthread_cond_wait(&r->work, &r->mu);
        if (!r->head)
            break;           /* stopping, and the queue is empty */
        struct put_job *j = r->head;
        r->head = j->next;
        if (!r->head)
            r->tail = NULL;
        r->n_queued--;
        if (r->drop_after && remote_now_ns() > r->drop_after) {
            /* Closing, past the grace: the chunk stays in the local tiers,
             * and a pool that is slow must not hold the exit. */
            r->st.put_dropped++;
            pthread_cond_broadcast(&r->done);
            free(j);
            continue;
        }
        r->busy[me] = j->ticket;
        pthread_mutex_unlock(&r->mu);

        e.name = &j->name;
        int rc = r->source(r->source_arg, &j->key, emit_record, &e);
        pthread_mutex_lock(&r->mu);
        if (rc == -ENOENT)
            r->st.put_gone++;     /* dropped or evicted everywhere first */
        r->busy[me] = 0;
        pthread_cond_broadcast(&r->done);
        free(j);
    }
    pthread_mutex_unlock(&r->mu);
    free(e.buf);
    return NULL;
}

int remote_open(const struct kvt_remote_config *cfg, struct kvt_remote **out, const char **why)
{
    struct kvt_remote *r = calloc(1, sizeof(*r));
    unsigned writers = cfg->writers ? cfg->writers : 2;
    int rc;

    *why = NULL;
    if (!r)
        return -ENOMEM;
    if (writers > WRITERS_MAX)
        writers = WRITERS_MAX;
    pthread_mutex_init(&r->mu, NULL);
    pthread_cond_init(&r->work, NULL);
    pthread_cond_init(&r->done, NULL);
    r->timeout_ms = cfg->timeout_ms;
    r->queue_max = cfg->queue_max ? cfg->queue_max : 65536;
    r->source = cfg->source;
    r->source_arg = cfg->source_arg;
    r->next_ticket = 1;
    rc = remote_seal_create(cfg->key, &r->seal);
    if (rc)
        goto err;
    r->st.sealed = cfg->key != NULL;
    /* A connection for each writer and as many again for readers. */
    struct remote_pool_config pc = { .servers = cfg->servers, .replicas = cfg->replicas,
                                     .timeout_ms = cfg->timeout_ms,
                                     .handles = writers + 16 };
    rc = remote_pool_open_memcached(&pc, &r->pool, why);
    if (rc)
        goto err;
    struct remote_server_stats tmp[REMOTE_SERVERS_MAX];
    r->n_servers = r->pool->ops->servers(r->pool, tmp, REMOTE_SERVERS_MAX);
    for (unsigned i = 0; i < writers; i++) {
        rc = -pthread_create(&r->threads[i], NULL, writer_main, r);
        if (rc)
            goto err;
        /* n_threads is counted by each thread; wait for it to be, so
         * remote_close joins exactly what started. */
        pthread_mutex_lock(&r->mu);
        while (r->n_threads <= i)
            pthread_cond_wait(&r->done, &r->mu);
        pthread_mutex_unlock(&r->mu);
    }
    *out = r;
    return 0;
err:
    remote_close(r);
    return rc;
}

void remote_close(struct kvt_remote *r)
{
    if (!r)
        return;
    pthread_mutex_lock(&r->mu);
    r->stopping = true;
    /* The queue may hold many writes, each a round trip to a server that
     * may hang: the writes begun within one timeout per server are
     * finished (each bounded by the timeout), the rest dropped. */
    r->drop_after = remote_now_ns() +
                    (uint64_t)r->timeout_ms * 1000000u * (r->n_servers ? r->n_servers : 1);
    pthread_cond_broadcast(&r->work);
    pthread_mutex_unlock(&r->mu);
    for (unsigned i = 0; i < r->n_threads; i++)
        pthread_join(r->threads[i], NULL);
    while (r->head) {
        struct put_job *j = r->head;
        r->head = j->next;
        free(j);
    }
    if (r->pool)
        r->pool->ops->close(r->pool);
    remote_seal_free(r->seal);
    pthread_mutex_destroy(&r->mu);
    pthread_cond_destroy(&r->work);
    pthread_cond_destroy(&r->done);
    free(r);
}

int remote_put_async(struct kvt_remote *r, const struct kvt_remote_name *name,
                     const struct kvt_chunk_key *key)
{
    struct put_job *j = malloc(sizeof(*j));
    int rc = 0;

    pthread_mutex_lock(&r->mu);
    /* The pool is a cache: a store must never wait for it, so past the
     * bound writes are dropped (the chunk is still in the local tiers). */
    if (!j || r->n_queued >= r->queue_max || r->stopping) {
        r->st.put_dropped++;
        rc = -ENOSPC;
        free(j);
        goto out;
    }
    j->next = NULL;
    j->name = *name;
    j->key = *key;
    j->ticket = r->next_ticket++;
    if (r->tail)
        r->tail->next = j;
    else
        r->head = j;
    r->tail = j;
    r->n_queued++;
    pthread_cond_signal(&r->work);
out:
    pthread_mutex_unlock(&r->mu);
    return rc;
}

void remote_drain(struct kvt_remote *r)
{
    pthread_mutex_lock(&r->mu);
    uint64_t upto = r->next_ticket;
    while (lowest_unfinished(r) < upto && r->n_threads)
        pthread_cond_wait(&r->done, &r->mu);
    pthread_mutex_unlock(&r->mu);
}

/* The header's checks, on the item as it came: a record that fails them
 * costs no copy and no cipher pass. (The header is copied out: the value
 * is libmemcached's buffer, with no promise of alignment.) */
static int record_check(const struct kvt_remote *r, const void *item, size_t len)
{
    struct kvt_remote_record_header h;

    if (len < sizeof(h))
        return -EBADMSG;
    memcpy(&h, item, sizeof(h));
    if (h.magic != REMOTE_RECORD_MAGIC || h.version != REMOTE_RECORD_VERSION ||
        h.seal != remote_seal_kind(r->seal) || !chunk_shape_valid(&h.shape))
        return -EBADMSG;
    const size_t bm = chunk_bitmap_bytes(h.shape.tokens);
    const size_t data = chunk_data_bytes(&h.shape);
    if (h.payload_bytes != bm + data || len != sizeof(h) + bm + data)
        return -EBADMSG;
    return 0;
}

/* Open a copy of an item that passed record_check, in place; fill img. */
static int record_open(struct kvt_remote *r, const struct kvt_remote_name *name, void *item,
                       size_t len, struct kvt_chunk_image *img)
{
    const struct kvt_remote_record_header *h = item;

    if (remote_seal_open(r->seal, name->s, name->len, item, len))
        return -EBADMSG;
    img->shape = h->shape;
    img->present = (const uint64_t *)((uint8_t *)item + sizeof(*h));
    img->data = (uint8_t *)item + sizeof(*h) + chunk_bitmap_bytes(h->shape.tokens);
    return 0;
}

struct get_ctx {
    struct kvt_remote *r;
    const struct kvt_remote_name *names;
    const struct kvt_chunk_key *const *keys;
    size_t n, first_batch, stride;     /* this thread's batches */
    uint64_t deadline;
    remote_image_fn got;
    void *arg;
    size_t accepted, rejected, bytes, errors;
};

/* One batch's answers arrive with names relative to the batch. */
struct batch_ctx {
    struct get_ctx *g;
    size_t at;
};

static void got_item(void *arg, size_t idx, const void *value, size_t len)
{
    struct batch_ctx *bc = arg;
    struct get_ctx *g = bc->g;
    idx += bc->at;
    struct kvt_chunk_image img = { .key = *g->keys[idx] };
    void *item = NULL;

    g->bytes += len;
    int rc = record_check(g->r, value, len);
    if (rc) {
        g->rejected++;
        return;
    }
    /* A copy: the seal opens in place, and the value is libmemcached's. */
    item = malloc(len);
    if (!item)
        return;
    memcpy(item, value, len);
    rc = record_open(g->r, &g->names[idx], item, len, &img);
    if (rc == 0)
        rc = g->got(g->arg, idx, &img);
    if (rc == 0)
        g->accepted++;
    else if (rc == -EBADMSG)
        g->rejected++;
    free(item);
}

static void *get_batches(void *arg)
{
    struct get_ctx *g = arg;
    const char *ptrs[GET_BATCH];
    size_t lens[GET_BATCH];

    for (size_t b = g->first_batch; b * GET_BATCH < g->n; b += g->stride) {
        size_t at = b * GET_BATCH, m = g->n - at < GET_BATCH ? g->n - at : GET_BATCH;
        struct batch_ctx bc = { .g = g, .at = at };
        for (size_t i = 0; i < m; i++) {
            ptrs[i] = g->names[at + i].s;
            lens[i] = g->names[at + i].len;
        }
        if (g->r->pool->ops->get_many(g->r->pool, ptrs, lens, m, g->deadline, got_item, &bc))
            g->errors++;
        if (remote_now_ns() > g->deadline)
            break;           /* the rest are misses */
    }
    return NULL;
}

size_t remote_get_many(struct kvt_remote *r, const struct kvt_remote_name *names,
                       const struct kvt_chunk_key *const *keys, size_t n,
                       remote_image_fn got, void *arg)
{
    struct get_ctx g[GET_THREADS];
    pthread_t th[GET_THREADS];
    bool started[GET_THREADS] = { false };
    size_t batches = (n + GET_BATCH - 1) / GET_BATCH;
    size_t threads = batches < GET_THREADS ? batches : GET_THREADS;
    uint64_t t0 = remote_now_ns();
    /* A dead server costs one timeout (then its clone skips it), so a call
     * waits at most the timeout per server, whatever the batches. */
    const uint64_t deadline = t0 + (uint64_t)r->timeout_ms * 1000000u * r->n_servers;
    struct get_ctx sum = { 0 };

    if (n == 0)
        return 0;
    /* Several batches in flight: one connection's round trips and one
     * core's decryption would otherwise bound a large match. got() runs
     * on these threads at once (the caller's hook is thread-safe). */
    for (size_t t = 0; t < threads; t++) {
        g[t] = (struct get_ctx){ .r = r, .names = names, .keys = keys, .n = n,
                                 .first_batch = t, .stride = threads, .deadline = deadline,
                                 .got = got, .arg = arg };
        if (t > 0)
            started[t] = pthread_create(&th[t], NULL, get_batches, &g[t]) == 0;
    }
    get_batches(&g[0]);
    for (size_t t = 1; t < threads; t++) {
        if (started[t])
            pthread_join(th[t], NULL);
        else
            get_batches(&g[t]);     /* no thread: do its share here */
    }
    for (size_t t = 0; t < threads; t++) {
        sum.accepted += g[t].accepted;
        sum.rejected += g[t].rejected;
        sum.bytes += g[t].bytes;
        sum.errors += g[t].errors;
    }
    uint64_t ns = remote_now_ns() - t0;
    pthread_mutex_lock(&r->mu);
    r->st.gets += n;
    r->st.hits += sum.accepted;
    r->st.misses += n - sum.accepted;
    r->st.rejected += sum.rejected;
    r->st.errors += sum.errors;
    r->st.bytes_read += sum.bytes;
    r->st.get_calls++;
    r->st.get_ns_total += ns;
    if (ns > r->st.get_ns_max)
        r->st.get_ns_max = ns;
    pthread_mutex_unlock(&r->mu);
    return sum.accepted;
}

void remote_stats(struct kvt_remote *r, struct kvt_remote_stats *out)
{
    pthread_mutex_lock(&r->mu);
    *out = r->st;
    out->queued = r->n_queued;
    pthread_mutex_unlock(&r->mu);
    out->n_servers = r->pool->ops->servers(r->pool, out->servers, REMOTE_SERVERS_MAX);
}
