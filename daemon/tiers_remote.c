/* tiers_remote.c - joins the remote tier to the hot and cold tiers: its
 * source of records to write, its promotions, its names for domains. */
#include "daemon/tiers.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>

#include "daemon/log.h"
#include "daemon/registry.h"

/* A copy of a hot chunk's leading tokens, taken under its read lock so the
 * network write runs without it. */
struct hot_copy {
    uint32_t lead;
    struct kvt_chunk_shape shape;
    uint64_t present[KVT_CHUNK_MAX_TOKENS / 64];
    void *data;
};

static int copy_hot_rows(void *arg, const struct kvt_chunk_shape *s, void *data)
{
    struct hot_copy *c = arg;

    c->shape = *s;
    c->data = malloc(chunk_data_bytes(s));
    if (!c->data)
        return -ENOMEM;
    memset(c->present, 0, sizeof(c->present));
    for (uint32_t tok = 0; tok < c->lead; tok++)
        chunk_bit_set(c->present, tok);
    /* Only the rows the bitmap vouches for: a recycled block may hold
     * another domain's bytes elsewhere. */
    chunk_copy_present(s, c->data, data, c->present);
    return 0;
}

/* The remote tier's source hook: the chunk from RAM, or its cold record
 * when it left RAM before the writer came to it. Only a complete chunk is
 * emitted (-ENOENT otherwise): a record of some leading tokens, written
 * before or after the whole one, could be the copy the pool keeps. */
static int remote_source(void *arg, const struct kvt_chunk_key *key, remote_emit_fn emit,
                         void *ctx)
{
    struct kvt_tiers *t = arg;
    struct hot_copy c = { 0 };
    int rc = -ENOENT;

    if (hot_leading_tokens(t->hot, key, &c.lead) == 0 && c.lead > 0 &&
        hot_read(t->hot, key, 0, c.lead, copy_hot_rows, &c) == 0) {
        struct kvt_chunk_image img = { .key = *key, .shape = c.shape,
                                       .present = c.present, .data = c.data };
        rc = c.lead == c.shape.tokens ? emit(ctx, &img) : -ENOENT;
        free(c.data);
        return rc;
    }
    free(c.data);
    if (!t->cold || cold_lookup(t->cold, key, NULL) != 0)
        return -ENOENT;
    /* Only the record knows its shape: a buffer for common chunks first,
     * then one for the largest the pool takes at all (memcached -I caps
     * items at 1 GiB; 128 MiB is far past any chunk the tests or common
     * models make). */
    size_t cap = (size_t)8 << 20;
    for (int attempt = 0; attempt < 2; attempt++, cap = (size_t)128 << 20) {
        struct kvt_chunk_shape got;
        void *buf = malloc(cap);
        if (!buf)
            return -ENOMEM;
        rc = cold_get(t->cold, key, &got, c.present, buf, cap);
        if (rc == 0) {
            struct kvt_chunk_image img = { .key = *key, .shape = got, .present = c.present,
                                           .data = buf };
            rc = chunk_bits_leading(c.present, got.tokens) == got.tokens ? emit(ctx, &img)
                                                                         : -ENOENT;
        }
        free(buf);
        if (rc != -ENOSPC)
            break;
    }
    return rc == -EBADMSG || rc == -EIO ? -ENOENT : rc;
}

/* The local domain named `name` in the pool, or UINT32_MAX. */
static uint32_t domain_named(const struct kvt_tiers *t, const char *name)
{
    for (uint32_t i = 0; i < t->n_rdomain; i++)
        if (!strcmp(t->rdomain[i].name, name))
            return t->rdomain[i].domain;
    return UINT32_MAX;
}

/* The pool name of domain, or NULL when it has none. */
static const char *domain_name(const struct kvt_tiers *t, uint32_t domain)
{
    for (uint32_t i = 0; i < t->n_rdomain; i++)
        if (t->rdomain[i].domain == domain)
            return t->rdomain[i].name;
    return NULL;
}

static bool scope_of(const struct kvt_tiers *t, const struct kvt_ns *ns,
                     struct kvt_remote_scope *out)
{
    const char *name = t->remote ? domain_name(t, ns->domain) : NULL;

    if (!name)
        return false;
    return remote_scope(name, ns->name, ns->layers, ns->heads, ns->dim, ns->chunk_tokens, out);
}

bool tiers_remote_serves(struct kvt_tiers *t, const struct kvt_ns *ns)
{
    return t->remote && domain_name(t, ns->domain);
}

int tiers_remote_open(struct kvt_tiers *t, const struct kvt_config *cfg)
{
    uint8_t key[REMOTE_KEY_BYTES];
    const char *why = NULL;
    bool have_key = cfg->remote_key_file[0] != '\0';
    int rc;

    if (!cfg->remote[0])
        return 0;
    t->remote_lossless = cfg->quant_none;
    if (have_key) {
        rc = remote_seal_read_key(cfg->remote_key_file, key, &why);
        if (rc) {
            log_err("remote-key-file %s: %s", cfg->remote_key_file,
                    why ? why : strerror(-rc));
            return rc;
        }
        if (why)
            log_warn("remote-key-file %s: %s", cfg->remote_key_file, why);
    } else {
        log_warn("remote tier without remote-key-file: records are checksummed but not "
                 "sealed, so anyone who can reach the pool can read prompts' KV and "
                 "write records every host will take");
    }
    /* Each named uid's domain here gets the name: a `share` group is one
     * domain, so naming any member names the group. */
    for (uint32_t i = 0; i < cfg->n_rdomain; i++) {
        uint32_t d = registry_domain(cfg, cfg->rdomain_uid[i]);
        const char *had = domain_name(t, d);
        uint32_t other = domain_named(t, cfg->rdomain_name[i]);
        /* One name for two domains here would join, through the pool, uids
         * that share nothing on this host: their records have one name. */
        if (other != UINT32_MAX && other != d) {
            log_err("remote-domain %s names uids of two sharing domains here (%u and %u): "
                    "put them in one share group or give them different names",
                    cfg->rdomain_name[i], (unsigned)other, (unsigned)d);
            return -EINVAL;
        }
        if (had) {
            if (strcmp(had, cfg->rdomain_name[i]))
                log_warn("remote-domain: uid %u is in the domain named %s already; "
                         "%s ignored for it", (unsigned)cfg->rdomain_uid[i], had,
                         cfg->rdomain_name[i]);
            continue;
        }
        t->rdomain[t->n_rdomain].domain = d;
        memcpy(t->rdomain[t->n_rdomain++].name, cfg->rdomain_name[i], CONFIG_RDOMAIN_NAME);
    }
    if (!t->n_rdomain)
        log_warn("remote tier: no remote-domain is named, so nothing is shared through "
                 "the pool");
    struct kvt_remote_config rc_cfg = {
        .servers = cfg->remote, .replicas = cfg->remote_replicas,
        .timeout_ms = cfg->remote_timeout_ms, .key = have_key ? key : NULL,
        .source = remote_source, .source_arg = t,
    };
    rc = remote_open(&rc_cfg, &t->remote, &why);
    memset(key, 0, sizeof(key));
    if (rc) {
        log_err("remote %s: %s", cfg->remote, why ? why : strerror(-rc));
        return rc;
    }
    struct kvt_remote_stats st;
    remote_stats(t->remote, &st);
    log_info("remote tier: %zu memcached servers, %u replicas, timeout %u ms, records %s",
             st.n_servers, cfg->remote_replicas, cfg->remote_timeout_ms,
             have_key ? "sealed (AES-256-GCM)" : "checksummed (xxh3)");
    return 0;
}

void tiers_remote_close(struct kvt_tiers *t)
{
    if (t->remote) {
        struct kvt_remote_stats st;
        remote_stats(t->remote, &st);
        if (st.queued)
            log_info("remote tier: %llu writes queued at exit; those not done within "
                     "remote-timeout-ms per server are dropped",
                     (unsigned long long)st.queued);
    }
    remote_close(t->remote);
    t->remote = NULL;
}

void tiers_remote_write(struct kvt_tiers *t, const struct kvt_ns *ns,
                        const struct kvt_chunk_key *const *keys, size_t n)
{
    struct kvt_remote_scope scope;
    struct kvt_remote_name name;

    if (!scope_of(t, ns, &scope))
        return;
    for (size_t i = 0; i < n; i++) {
        if (i && !memcmp(keys[i], keys[i - 1], sizeof(*keys[i])))
            continue;
        remote_record_name(&scope, keys[i], &name);
        (void)remote_put_async(t->remote, &name, keys[i]);   /* counted when dropped */
    }
}

struct promote_rows {
    const struct kvt_chunk_image *img;
};

/* hot_rows_fn: the record's rows into a chunk of the record's own shape;
 * a chunk in RAM that keeps other outliers is left alone (a miss). */
static int rows_from_record(void *arg, const struct kvt_chunk_shape *s, void *data)
{
    const struct kvt_chunk_image *img = ((struct promote_rows *)arg)->img;
    uint32_t lead = chunk_bits_leading(img->present, img->shape.tokens);

    if (memcmp(s, &img->shape, sizeof(*s)))
        return -ESTALE;
    for (uint32_t tok = 0; tok < lead; tok++)
        chunk_copy_token(s, data, img->data, tok);
    return 0;
}

struct fetch_ctx {
    struct kvt_tiers *t;
    const struct kvt_ns *ns;
};

static int promote_record(void *arg, size_t idx, const struct kvt_chunk_image *img)
{
    struct fetch_ctx *f = arg;
    uint32_t lead = chunk_bits_leading(img->present, img->shape.tokens);
    struct promote_rows pr = { .img = img };
    int rc;

    (void)idx;
    /* A valid, authentic record of another geometry can only come from a
     * host with another idea of the namespace: not this one's data. */
    if (img->shape.tokens != f->ns->chunk_tokens || img->shape.heads != f->ns->heads ||
        img->shape.dim != f->ns->dim)
        return -EBADMSG;
    /* A lossless host serves the values stored, exactly: a record a host
     * in int8 mode quantized would make it serve approximations. */
    if (f->t->remote_lossless && img->shape.elem == KVT_CHUNK_INT8)
        return -EBADMSG;
    if (lead == 0)
        return -ENOENT;
    rc = tiers_write(f->t, &img->key, &img->shape, 0, lead, rows_from_record, &pr);
    if (rc == 0)
        atomic_fetch_add(&f->t->remote_promotions, 1);
    else
        log_debug("remote record not promoted: %s", strerror(-rc));
    return rc;
}

size_t tiers_remote_fetch(struct kvt_tiers *t, const struct kvt_ns *ns,
                          const struct kvt_chunk_key *const *keys, size_t n)
{
    struct kvt_remote_scope scope;
    struct fetch_ctx f = { .t = t, .ns = ns };
    struct kvt_remote_name *names;
    size_t got;

    if (n == 0 || !scope_of(t, ns, &scope))
        return 0;
    names = malloc(n * sizeof(*names));
    if (!names)
        return 0;
    for (size_t i = 0; i < n; i++)
        remote_record_name(&scope, keys[i], &names[i]);
    got = remote_get_many(t->remote, names, keys, n, promote_record, &f);
    free(names);
    return got;
}

void tiers_remote_sync(struct kvt_tiers *t)
{
    if (t->remote)
        remote_drain(t->remote);
}
