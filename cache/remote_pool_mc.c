/* remote_pool_mc.c - the remote pool on libmemcached: ketama, binary
 * protocol, replicas, bounded waits, ejection of failing servers.
 *
 * A memcached_st is not thread-safe, so the pool keeps `handles` clones of
 * one configured handle and lends one per call (a caller that finds none
 * free waits until its deadline at most). Each clone learns on its own
 * that a server is down and skips it for RETRY_S afterwards: after a
 * server dies every clone pays at most one timeout, then misses at once.
 *
 * libmemcached ejects only a server it cannot connect to. One that hangs
 * (stopped, or its host wedged: the kernel still accepts connections)
 * costs a full timeout on every operation, on every clone, forever: so
 * the pool itself marks a server that timed out as hung for RETRY_S, and
 * until then names it holds first are misses and failed writes at once.
 */
#include "cache/remote_pool.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <libmemcached/memcached.h>
#include <xxhash.h>

/* A server that failed is left out for this long, then tried again. */
#define RETRY_S 2
/* Failures in a row that eject a server (from its clone's continuum). */
#define FAILURE_LIMIT 1

struct mc_pool {
    struct remote_pool base;
    pthread_mutex_t mu;               /* free list, stats */
    pthread_cond_t freed;
    memcached_st **free_list;
    size_t n_free, n_handles;
    memcached_st **all;
    size_t n_servers;
    struct remote_server_stats srv[REMOTE_SERVERS_MAX];
    uint64_t hung_until[REMOTE_SERVERS_MAX];   /* CLOCK_MONOTONIC ns, under mu */
};

uint64_t remote_now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static memcached_st *borrow(struct mc_pool *p, uint64_t deadline_ns)
{
    memcached_st *h = NULL;
    struct timespec ts;

    /* The condvar runs on CLOCK_REALTIME: turn the deadline into that. */
    uint64_t now = remote_now_ns(), wait = deadline_ns > now ? deadline_ns - now : 0;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += (time_t)(wait / 1000000000u);
    ts.tv_nsec += (long)(wait % 1000000000u);
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&p->mu);
    while (p->n_free == 0)
        if (pthread_cond_timedwait(&p->freed, &p->mu, &ts) == ETIMEDOUT)
            break;
    if (p->n_free)
        h = p->free_list[--p->n_free];
    pthread_mutex_unlock(&p->mu);
    return h;
}

static void give_back(struct mc_pool *p, memcached_st *h)
{
    pthread_mutex_lock(&p->mu);
    p->free_list[p->n_free++] = h;
    pthread_cond_signal(&p->freed);
    pthread_mutex_unlock(&p->mu);
}

/* Index of the server key maps to first (its primary), or -1. */
static int server_of(struct mc_pool *p, memcached_st *h, const char *key, size_t len)
{
    memcached_return_t rc;
    const memcached_instance_st *in = memcached_server_by_key(h, key, len, &rc);

    if (!in)
        return -1;
    const char *host = memcached_server_name(in);
    in_port_t port = memcached_server_port(in);
    for (size_t i = 0; i < p->n_servers; i++)
        if (p->srv[i].port == port && strcmp(p->srv[i].host, host) == 0)
            return (int)i;
    return -1;
}

/* Count an operation of server i (-1: unknown) under p->mu. */
static void account(struct mc_pool *p, int i, bool ok, uint64_t hit, uint64_t miss,
                    uint64_t read, uint64_t written)
{
    if (i < 0)
        return;
    struct remote_server_stats *s = &p->srv[i];
    s->seen = true;
    s->up = ok;
    s->errors += !ok;
    s->hits += hit;
    s->misses += miss;
    s->bytes_read += read;
    s->bytes_written += written;
}

/* Whether server i (-1: unknown) timed out less than RETRY_S ago. */
static bool is_hung(struct mc_pool *p, int i, uint64_t now)
{
    bool hung;

    if (i < 0)
        return false;
    pthread_mutex_lock(&p->mu);
    hung = p->hung_until[i] > now;
    pthread_mutex_unlock(&p->mu);
    return hung;
}

/* A failed call (under p->mu): the server libmemcached last lost, if it
 * knows it; a timeout marks it hung for RETRY_S. */
static void account_failure(struct mc_pool *p, memcached_st *h, int fallback, bool timed_out)
{
    const memcached_instance_st *in = memcached_server_get_last_disconnect(h);
    int idx = fallback;

    if (in) {
        const char *host = memcached_server_name(in);
        in_port_t port = memcached_server_port(in);
        for (size_t i = 0; i < p->n_servers; i++)
            if (p->srv[i].port == port && strcmp(p->srv[i].host, host) == 0)
                idx = (int)i;
    }
    account(p, idx, false, 0, 0, 0, 0);
    if (timed_out && idx >= 0)
        p->hung_until[idx] = remote_now_ns() + (uint64_t)RETRY_S * 1000000000u;
}

static int mc_errno(memcached_return_t rc)
{
    switch (rc) {
    case MEMCACHED_SUCCESS:
        return 0;
    case MEMCACHED_E2BIG:
        return -E2BIG;
    case MEMCACHED_TIMEOUT:
        return -ETIMEDOUT;
    default:
        return -EIO;
    }
}

static int mc_set(struct remote_pool *base, const char *name, size_t name_len,
                  const void *value, size_t len)
{
    struct mc_pool *p = (struct mc_pool *)base;
    memcached_st *h = borrow(p, UINT64_MAX);
    memcached_return_t rc;
    int srv;

    srv = server_of(p, h, name, name_len);
    if (is_hung(p, srv, remote_now_ns())) {
        give_back(p, h);
        return -ETIMEDOUT;
    }
    rc = memcached_set(h, name, name_len, value, len, 0, 0);
    /* The text of "object too large" varies by server version. */
    if (rc == MEMCACHED_SERVER_ERROR || rc == MEMCACHED_E2BIG) {
        const char *msg = memcached_last_error_message(h);
        if (rc == MEMCACHED_E2BIG || (msg && strstr(msg, "too large")))
            rc = MEMCACHED_E2BIG;
    }
    pthread_mutex_lock(&p->mu);
    if (rc == MEMCACHED_SUCCESS || rc == MEMCACHED_E2BIG)
        account(p, srv, true, 0, 0, 0, rc == MEMCACHED_SUCCESS ? len : 0);
    else
        account_failure(p, h, srv, rc == MEMCACHED_TIMEOUT);
    pthread_mutex_unlock(&p->mu);
    give_back(p, h);
    return mc_errno(rc);
}

/* Names to their index, for matching answers that come in any order. */
struct name_index {
    size_t cap;
    size_t *slot;          /* idx + 1; 0 = empty */
};

static int index_build(struct name_index *ix, const char *const *names, const size_t *lens,
                       size_t n)
{
    ix->cap = 16;
    while (ix->cap < 2 * n)
        ix->cap *= 2;
    ix->slot = calloc(ix->cap, sizeof(*ix->slot));
    if (!ix->slot)
        return -ENOMEM;
    for (size_t i = 0; i < n; i++) {
        size_t at = XXH3_64bits(names[i], lens[i]) & (ix->cap - 1);
        while (ix->slot[at])
            at = (at + 1) & (ix->cap - 1);
        ix->slot[at] = i + 1;
    }
    return 0;
}

/* The index of key among names, or SIZE_MAX for a name nobody asked for. */
static size_t index_find(const struct name_index *ix, const char *const *names,
                         const size_t *lens, const char *key, size_t len)
{
    size_t at = XXH3_64bits(key, len) & (ix->cap - 1);

    for (; ix->slot[at]; at = (at + 1) & (ix->cap - 1)) {
        size_t i = ix->slot[at] - 1;
        if (lens[i] == len && memcmp(names[i], key, len) == 0)
            return i;
    }
    return SIZE_MAX;
}

/* The names of names[0..n) whose first server is not hung, into ask[]
 * (their indices in at[]); returns how many. */
static size_t names_to_ask(struct mc_pool *p, memcached_st *h, const char *const *names,
                           const size_t *lens, size_t n, const char **ask, size_t *ask_lens,
                           size_t *at)
{
    uint64_t now = remote_now_ns();
    size_t m = 0;

    for (size_t i = 0; i < n; i++) {
        if (is_hung(p, server_of(p, h, names[i], lens[i]), now))
            continue;
        ask[m] = names[i];
        ask_lens[m] = lens[i];
        at[m++] = i;
    }
    return m;
}

static int mc_get_many(struct remote_pool *base, const char *const *all_names,
                       const size_t *all_lens, size_t n_all, uint64_t deadline_ns,
                       remote_got_fn got, void *arg)
{
    struct mc_pool *p = (struct mc_pool *)base;
    struct name_index ix = { 0 };
    memcached_result_st res;
    memcached_return_t rc;
    bool *found = NULL;
    const char **names = NULL;
    size_t *lens = NULL, *at = NULL, n;
    memcached_st *h;
    int ret = 0;

    if (n_all == 0)
        return 0;
    h = borrow(p, deadline_ns);
    if (!h)
        return -EBUSY;
    found = calloc(n_all, sizeof(*found));
    names = malloc(n_all * sizeof(*names));
    lens = malloc(n_all * sizeof(*lens));
    at = malloc(n_all * sizeof(*at));
    if (!found || !names || !lens || !at) {
        ret = -ENOMEM;
        goto out;
    }
    n = names_to_ask(p, h, all_names, all_lens, n_all, names, lens, at);
    if (n == 0) {
        ret = -ETIMEDOUT;          /* all on hung servers: misses */
        goto out;
    }
    if (index_build(&ix, names, lens, n)) {
        ret = -ENOMEM;
        goto out;
    }
    memcached_result_create(h, &res);
    rc = memcached_mget(h, names, lens, n);
    if (rc != MEMCACHED_SUCCESS && rc != MEMCACHED_SOME_ERRORS) {
        pthread_mutex_lock(&p->mu);
        account_failure(p, h, -1, rc == MEMCACHED_TIMEOUT);
        pthread_mutex_unlock(&p->mu);
        ret = mc_errno(rc);
        goto done;
    }
    for (;;) {
        memcached_result_st *r = memcached_fetch_result(h, &res, &rc);
        if (!r)
            break;
        size_t i = index_find(&ix, names, lens, memcached_result_key_value(r),
                              memcached_result_key_length(r));
        if (i != SIZE_MAX && !found[i]) {
            found[i] = true;
            got(arg, at[i], memcached_result_value(r), memcached_result_length(r));
        }
        if (remote_now_ns() > deadline_ns) {
            /* Answers still on their way would be read by the next call
             * on this handle: drop its connections instead. */
            memcached_quit(h);
            ret = -ETIMEDOUT;
            break;
        }
    }
    if (rc != MEMCACHED_END && rc != MEMCACHED_SUCCESS && rc != MEMCACHED_NOTFOUND && !ret) {
        pthread_mutex_lock(&p->mu);
        account_failure(p, h, -1, rc == MEMCACHED_TIMEOUT);
        pthread_mutex_unlock(&p->mu);
        ret = mc_errno(rc);
    }
    pthread_mutex_lock(&p->mu);
    for (size_t i = 0; i < n; i++) {
        int s = server_of(p, h, names[i], lens[i]);
        if (s >= 0 && found[i]) {
            p->srv[s].hits++;
            p->srv[s].up = p->srv[s].seen = true;
        } else if (s >= 0) {
            p->srv[s].misses++;
        }
    }
    pthread_mutex_unlock(&p->mu);
    if (!ret && n < n_all)
        ret = -ETIMEDOUT;          /* some were on a hung server: misses */
done:
    memcached_result_free(&res);
out:
    free(ix.slot);
    free(found);
    free(names);
    free(lens);
    free(at);
    give_back(p, h);
    return ret;
}

static size_t mc_servers(struct remote_pool *base, struct remote_server_stats *out, size_t max)
{
    struct mc_pool *p = (struct mc_pool *)base;
    size_t n;

    pthread_mutex_lock(&p->mu);
    n = p->n_servers < max ? p->n_servers : max;
    memcpy(out, p->srv, n * sizeof(*out));
    pthread_mutex_unlock(&p->mu);
    return n;
}

static void mc_close(struct remote_pool *base)
{
    struct mc_pool *p = (struct mc_pool *)base;

    if (!p)
        return;
    for (size_t i = 0; i < p->n_handles; i++)
        if (p->all[i])
            memcached_free(p->all[i]);
    free(p->all);
    free(p->free_list);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->freed);
    free(p);
}

static const struct remote_pool_ops mc_ops = {
    .name = "libmemcached",
    .set = mc_set,
    .get_many = mc_get_many,
    .servers = mc_servers,
    .close = mc_close,
};

/* "memcached://h1:p1,h2:p2" or "h1:p1,..." into p->srv. */
static int parse_servers(struct mc_pool *p, const char *list, const char **why)
{
    char buf[4096];

    if (strncmp(list, "memcached://", 12) == 0)
        list += 12;
    if (strlen(list) >= sizeof(buf)) {
        *why = "remote: server list too long";
        return -EINVAL;
    }
    snprintf(buf, sizeof(buf), "%s", list);
    for (char *save = NULL, *tok = strtok_r(buf, ", ", &save); tok;
         tok = strtok_r(NULL, ", ", &save)) {
        char *host = tok, *colon;
        unsigned long port = 11211;
        if (*host == '[') {                     /* [v6]:port */
            char *end = strchr(host, ']');
            if (!end) {
                *why = "remote: unterminated [address]";
                return -EINVAL;
            }
            *end = '\0';
            host++;
            colon = end[1] == ':' ? end + 1 : NULL;
        } else {
            colon = strrchr(host, ':');
        }
        if (colon) {
            char *e;
            *colon = '\0';
            port = strtoul(colon + 1, &e, 10);
            if (*e || port == 0 || port > 65535) {
                *why = "remote: bad port";
                return -EINVAL;
            }
        }
        if (!*host || strlen(host) >= REMOTE_HOST_MAX) {
            *why = "remote: empty or overlong host name";
            return -EINVAL;
        }
        if (p->n_servers == REMOTE_SERVERS_MAX) {
            *why = "remote: more than 64 servers";
            return -EINVAL;
        }
        struct remote_server_stats *s = &p->srv[p->n_servers++];
        snprintf(s->host, sizeof(s->host), "%s", host);
        s->port = (uint16_t)port;
    }
    if (p->n_servers == 0) {
        *why = "remote: no server in the list";
        return -EINVAL;
    }
    return 0;
}

int remote_pool_open_memcached(const struct remote_pool_config *cfg, struct remote_pool **out,
                               const char **why)
{
    struct mc_pool *p = calloc(1, sizeof(*p));
    memcached_st *m = NULL;
    int rc;

    *why = NULL;
    if (!p)
        return -ENOMEM;
    p->base.ops = &mc_ops;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->freed, NULL);
    rc = parse_servers(p, cfg->servers, why);
    if (rc)
        goto err;
    rc = -ENOMEM;
    m = memcached_create(NULL);
    if (!m)
        goto err;
    for (size_t i = 0; i < p->n_servers; i++)
        if (memcached_server_add(m, p->srv[i].host, p->srv[i].port) != MEMCACHED_SUCCESS) {
            *why = "remote: libmemcached refused a server";
            rc = -EINVAL;
            goto err;
        }
    const uint64_t ms = cfg->timeout_ms;
    /* Non-blocking sockets are what make the poll timeout bound a wait;
     * ketama keeps most keys in place when a server comes or goes; the
     * binary protocol is the one libmemcached replicates with. */
    memcached_behavior_set(m, MEMCACHED_BEHAVIOR_NO_BLOCK, 1);
    memcached_behavior_set(m, MEMCACHED_BEHAVIOR_TCP_NODELAY, 1);
    memcached_behavior_set(m, MEMCACHED_BEHAVIOR_BINARY_PROTOCOL, 1);
    memcached_behavior_set(m, MEMCACHED_BEHAVIOR_DISTRIBUTION,
                           MEMCACHED_DISTRIBUTION_CONSISTENT_KETAMA);
    memcached_behavior_set(m, MEMCACHED_BEHAVIOR_NUMBER_OF_REPLICAS, cfg->replicas);
    memcached_behavior_set(m, MEMCACHED_BEHAVIOR_CONNECT_TIMEOUT, ms);
    memcached_behavior_set(m, MEMCACHED_BEHAVIOR_POLL_TIMEOUT, ms);
    memcached_behavior_set(m, MEMCACHED_BEHAVIOR_SND_TIMEOUT, ms * 1000);
    memcached_behavior_set(m, MEMCACHED_BEHAVIOR_RCV_TIMEOUT, ms * 1000);
    memcached_behavior_set(m, MEMCACHED_BEHAVIOR_SERVER_FAILURE_LIMIT, FAILURE_LIMIT);
    memcached_behavior_set(m, MEMCACHED_BEHAVIOR_RETRY_TIMEOUT, RETRY_S);
    memcached_behavior_set(m, MEMCACHED_BEHAVIOR_DEAD_TIMEOUT, RETRY_S);
    memcached_behavior_set(m, MEMCACHED_BEHAVIOR_SERVER_TIMEOUT_LIMIT, 1);
    memcached_behavior_set(m, MEMCACHED_BEHAVIOR_REMOVE_FAILED_SERVERS, 1);
    p->n_handles = cfg->handles ? cfg->handles : 8;
    p->all = calloc(p->n_handles, sizeof(*p->all));
    p->free_list = calloc(p->n_handles, sizeof(*p->free_list));
    if (!p->all || !p->free_list)
        goto err;
    for (size_t i = 0; i < p->n_handles; i++) {
        p->all[i] = memcached_clone(NULL, m);
        if (!p->all[i])
            goto err;
        p->free_list[p->n_free++] = p->all[i];
    }
    memcached_free(m);
    *out = &p->base;
    return 0;
err:
    if (m)
        memcached_free(m);
    mc_close(&p->base);
    return rc;
}
