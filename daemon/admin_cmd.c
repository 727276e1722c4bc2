/* admin_cmd.c - the admin commands: one handler each, one table keyed by
 * name. Long ones (flush, evict of a namespace or tier) start a job and
 * defer their reply (see admin.c for the framing), and so do the listings.
 *
 * "contexts" looks up every listed context's chunks, so its cost grows with
 * the names known (at most REGISTRY_NAMES_MAX per namespace). "contexts"
 * and "namespaces" also walk the cold index once (cold_namespace_usage),
 * linear in its records, with the cold lock held. With the names back after
 * a restart that is 270 ms for 10000 names over 960k cold records (4 ms
 * for the walk alone), so both run on a job thread of their own, not on
 * the loop (admin_start_listing): they read only what is locked (the
 * registry, the tiers), never the loop's own state (sessions). */
#include "daemon/admin_cmd.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "daemon/admin_json.h"
#include "daemon/admin_text.h"
#include "daemon/job.h"
#include "daemon/log.h"
#include "daemon/session.h"


/* A handler fills reply (which already holds "ok": true) and returns 0, or
 * returns -errno with a human sentence in err; the dispatcher then sends
 * {"ok": false, "error": err} instead. */
typedef int (*admin_fn)(struct kvt_admin_conn *c, const cJSON *req, cJSON *reply,
                        char *err, size_t errlen);



/* What the cold tier holds per namespace (none without a cold tier). */
static int cold_usage(struct kvt_server *srv, struct kvt_cold_ns_usage **u, size_t *n)
{
    *u = NULL;
    *n = 0;
    return srv->tiers.cold ? cold_namespace_usage(srv->tiers.cold, u, n) : 0;
}

static const struct kvt_cold_ns_usage *usage_of(const struct kvt_cold_ns_usage *u, size_t n,
                                                uint64_t ns_id)
{
    for (size_t i = 0; i < n; i++)
        if (u[i].ns_id == ns_id)
            return &u[i];
    return NULL;
}

static void add_cold_columns(cJSON *o, const struct kvt_cold_ns_usage *u)
{
    add_u64(o, "cold_objects", u ? u->objects : 0);
    add_u64(o, "cold_bytes", u ? u->bytes : 0);
}

/* The registry's namespaces, then those only the cold tier holds (after a
 * restart, until a client attaches their model again): their name and
 * geometry are not on disk. */
static int list_namespaces(struct kvt_server *srv, const cJSON *req, cJSON *reply,
                           char *err, size_t errlen)
{
    struct kvt_cold_ns_usage *u;
    size_t n_u;
    cJSON *list = cJSON_AddArrayToObject(reply, "namespaces");

    (void)req;
    if (cold_usage(srv, &u, &n_u)) {
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    pthread_mutex_lock(&srv->reg.lock);
    for (uint32_t i = 0; i < srv->reg.n_ns; i++) {
        const struct kvt_ns *ns = srv->reg.ns[i];
        cJSON *o = cJSON_CreateObject();
        add_id(o, "id", ns->id);
        admin_text_add_name(o, "name", ns->name);
        add_u64(o, "domain", ns->domain);
        add_u64(o, "layers", ns->layers);
        add_u64(o, "kv_heads", ns->heads);
        add_u64(o, "head_dim", ns->dim);
        add_u64(o, "chunk_tokens", ns->chunk_tokens);
        add_u64(o, "clients", ns->clients);
        add_cold_columns(o, usage_of(u, n_u, ns->id));
        cJSON_AddItemToArray(list, o);
    }
    for (size_t j = 0; j < n_u; j++) {
        bool known = false;
        for (uint32_t i = 0; i < srv->reg.n_ns && !known; i++)
            known = srv->reg.ns[i]->id == u[j].ns_id;
        if (known)
            continue;
        cJSON *o = cJSON_CreateObject();
        add_id(o, "id", u[j].ns_id);
        cJSON_AddNullToObject(o, "name");
        add_u64(o, "domain", u[j].domain);
        for (const char *const *k = (const char *const[]){ "layers", "kv_heads", "head_dim",
                                                           "chunk_tokens", NULL }; *k; k++)
            cJSON_AddNullToObject(o, *k);
        add_u64(o, "clients", 0);
        add_cold_columns(o, &u[j]);
        cJSON_AddItemToArray(list, o);
    }
    pthread_mutex_unlock(&srv->reg.lock);
    free(u);
    return 0;
}

static int cmd_clients(struct kvt_admin_conn *conn, const cJSON *req, cJSON *reply,
                       char *err, size_t errlen)
{
    struct kvt_server *srv = conn->srv;
    cJSON *list = cJSON_AddArrayToObject(reply, "clients");

    (void)req, (void)err, (void)errlen;
    for (const struct kvt_session *s = srv->sessions; s; s = s->next) {
        cJSON *o = cJSON_CreateObject();
        add_u64(o, "pid", (uint64_t)s->cred.pid);
        add_u64(o, "uid", s->cred.uid);
        add_u64(o, "domain", s->domain);
        if (s->ns) {
            admin_text_add_name(o, "namespace", s->ns->name);
            add_id(o, "namespace_id", s->ns->id);
        } else {
            cJSON_AddNullToObject(o, "namespace");
        }
        cJSON_AddItemToArray(list, o);
    }
    return 0;
}

/* A namespace id as "123" or "0x7b" (JSON numbers lose bits above 2^53,
 * so ids travel as strings; a small number is accepted too). */
static int parse_ns_id(const cJSON *item, uint64_t *id)
{
    if (cJSON_IsNumber(item) && item->valuedouble >= 1 && item->valuedouble < 9007199254740992.0) {
        *id = (uint64_t)item->valuedouble;
        return 0;
    }
    if (!cJSON_IsString(item) || !*item->valuestring)
        return -EINVAL;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(item->valuestring, &end, 0);
    if (*end || errno || v == 0 || item->valuestring[0] == '-')
        return -EINVAL;
    *id = v;
    return 0;
}

/* ---- long commands: flush, evict of a namespace or tier ------------------ */

/* What a long command does on its job thread, and what it found. */
typedef int (*admin_list_fn)(struct kvt_server *srv, const cJSON *req, cJSON *reply,
                             char *err, size_t errlen);

struct kvt_admin_work {
    struct kvt_server *srv;
    const char *what;                /* "flush", "evict", a listing: logs, progress */
    /* A listing: its handler, a copy of the request, the reply it built
     * (without "ok") or its error sentence. */
    admin_list_fn list;
    cJSON *req, *reply;
    char err[256];
    uint64_t ns_id;                  /* evict: 0 = every namespace */
    bool hot, cold;                  /* evict: the tiers to empty */
    /* evict of a context: its object id in the n_ids namespaces ids */
    bool context;
    uint64_t obj_hi, obj_lo;
    uint64_t hot_chunks, cold_records;
    uint32_t n_ids;
    uint64_t ids[];                  /* allocated with the work */
};

/* An evict's reply: what it dropped ("hot_chunks", "cold_records"), then
 * what the tiers still hold, so nobody reads one for the other. */
static void add_evicted(struct kvt_server *srv, const struct kvt_admin_work *w, cJSON *reply)
{
    struct kvt_hot_stats hs;
    cJSON *left = cJSON_AddObjectToObject(reply, "remaining");

    add_u64(reply, "hot_chunks", w->hot_chunks);
    add_u64(reply, "cold_records", w->cold_records);
    hot_stats(srv->dp.hot, &hs);
    add_u64(left, "hot_chunks", hs.chunks);
    if (srv->tiers.cold) {
        struct kvt_cold_stats cs;
        cold_stats(srv->tiers.cold, &cs);
        add_u64(left, "cold_records", cs.records);
    } else {
        add_u64(left, "cold_records", 0);
    }
}

static int run_flush(struct kvt_job *j, void *arg)
{
    struct kvt_admin_work *w = arg;
    return tiers_flush(&w->srv->tiers, &w->srv->tiers.flush_lost_seen, job_progress_cb, j);
}

static int run_evict(struct kvt_job *j, void *arg)
{
    struct kvt_admin_work *w = arg;

    /* Both tiers: in the order that keeps what is dropped from coming back. */
    if (w->hot && w->cold)
        w->hot_chunks = tiers_drop_namespace(&w->srv->tiers, w->ns_id, job_progress_cb, j,
                                             &w->cold_records);
    else if (w->hot)
        w->hot_chunks = hot_drop_namespace(w->srv->dp.hot, w->ns_id, job_progress_cb, j);
    else if (w->srv->tiers.cold)
        w->cold_records = cold_drop_namespace(w->srv->tiers.cold, w->ns_id);
    /* The reply says the data is gone for good: its tombstone on disk. */
    if (w->cold && tiers_drop_needs_sync(&w->srv->tiers, w->cold_records))
        return tiers_drop_sync(&w->srv->tiers);
    return 0;
}

static int run_evict_context(struct kvt_job *j, void *arg)
{
    struct kvt_admin_work *w = arg;
    uint64_t records;

    (void)j;
    for (uint32_t i = 0; i < w->n_ids; i++) {
        w->hot_chunks += tiers_drop_object(&w->srv->tiers, w->ids[i], w->obj_hi, w->obj_lo,
                                           &records);
        w->cold_records += records;
    }
    if (tiers_drop_needs_sync(&w->srv->tiers, w->cold_records))
        return tiers_drop_sync(&w->srv->tiers);
    return 0;
}

/* Start a long command on a job thread (daemon/job.c) so the loop serves
 * clients meanwhile; conn gets its reply when it ends (admin.c, job_event),
 * and with "progress": true a {"progress": ...} line before that, at the
 * start and about every 200 ms. One runs at a time. Takes w. */
static int start_job(struct kvt_admin_conn *conn, const cJSON *req, job_fn fn,
                     struct kvt_admin_work *w, char *err, size_t errlen)
{
    struct kvt_admin *a = conn->admin;
    const cJSON *progress = cJSON_GetObjectItemCaseSensitive(req, "progress");
    int rc;

    if (progress && !cJSON_IsBool(progress)) {
        snprintf(err, errlen, "\"progress\" must be true or false");
        rc = -EINVAL;
        goto err;
    }
    if (a->job) {
        snprintf(err, errlen, "a %s is already running; try again when it ends",
                 a->job_work->what);
        rc = -EBUSY;
        goto err;
    }
    rc = job_start(fn, w, a->epfd, &a->on_job, &a->job);
    if (rc) {
        snprintf(err, errlen, "cannot start the %s: %s", w->what, strerror(-rc));
        goto err;
    }
    a->job_work = w;
    a->job_conn = conn;
    conn->progress = cJSON_IsTrue(progress);
    conn->progress_sent = false;
    log_info("admin: %s started", w->what);
    return ADMIN_DEFERRED;
err:
    admin_work_free(w);
    return rc;
}

static int run_listing(struct kvt_job *j, void *arg)
{
    struct kvt_admin_work *w = arg;

    (void)j;
    w->reply = cJSON_CreateObject();
    if (!w->reply)
        return -ENOMEM;
    return w->list(w->srv, w->req, w->reply, w->err, sizeof(w->err));
}

/* A listing on a job thread of its own (admin.c); its reply is sent when
 * it ends. */
static int start_listing(struct kvt_admin_conn *conn, const cJSON *req, const char *what,
                         admin_list_fn fn, char *err, size_t errlen)
{
    struct kvt_admin_work *w;
    int rc;

    if (conn->admin->n_listings >= ADMIN_LISTINGS_MAX) {
        snprintf(err, errlen, "%u listings are running, the most at once; try again "
                 "when one ends", ADMIN_LISTINGS_MAX);
        return -EBUSY;
    }
    w = calloc(1, sizeof(*w));
    if (!w)
        return -ENOMEM;
    *w = (struct kvt_admin_work){ .srv = conn->srv, .what = what, .list = fn,
                                  .req = cJSON_Duplicate(req, true) };
    if (!w->req) {
        free(w);
        return -ENOMEM;
    }
    rc = admin_start_listing(conn, run_listing, w);    /* takes w */
    if (rc < 0)
        snprintf(err, errlen, "cannot start the %s listing: %s", what, strerror(-rc));
    return rc;
}

static int evict_tier(struct kvt_admin_conn *conn, const cJSON *req, const char *tier,
                      char *err, size_t errlen)
{
    struct kvt_server *srv = conn->srv;
    bool want_hot = !strcmp(tier, "hot") || !strcmp(tier, "all");
    bool want_cold = !strcmp(tier, "cold") || !strcmp(tier, "all");
    struct kvt_admin_work *w;

    if (!want_hot && !want_cold) {
        snprintf(err, errlen, "tier must be hot, cold or all, not '%s'", tier);
        return -EINVAL;
    }
    if (!strcmp(tier, "cold") && !srv->tiers.cold) {
        snprintf(err, errlen, "this daemon has no cold tier (cold-bytes 0)");
        return -EOPNOTSUPP;
    }
    w = calloc(1, sizeof(*w));
    if (!w)
        return -ENOMEM;
    *w = (struct kvt_admin_work){ .srv = srv, .what = "evict", .hot = want_hot,
                                  .cold = want_cold };
    int rc = start_job(conn, req, run_evict, w, err, errlen);
    /* Every context is gone once no tier is left holding it. */
    if (rc == ADMIN_DEFERRED && want_hot && (want_cold || !srv->tiers.cold)) {
        struct kvt_ns **ns;
        uint32_t n;
        if (registry_hold_all(&srv->reg, &ns, &n))
            log_warn("admin: evict: out of memory: context names stay listed");
        for (uint32_t i = 0; i < n; i++)
            registry_names_clear(ns[i]);
        registry_put_all(&srv->reg, ns, n);
    }
    return rc;
}

static int evict_namespace(struct kvt_admin_conn *conn, const cJSON *req, uint64_t ns_id,
                           char *err, size_t errlen)
{
    struct kvt_server *srv = conn->srv;
    struct kvt_admin_work *w = calloc(1, sizeof(*w));

    if (!w)
        return -ENOMEM;
    *w = (struct kvt_admin_work){ .srv = srv, .what = "evict", .ns_id = ns_id, .hot = true,
                                  .cold = true };
    int rc = start_job(conn, req, run_evict, w, err, errlen);
    struct kvt_ns *known = registry_find(&srv->reg, ns_id);
    if (rc == ADMIN_DEFERRED && known)
        registry_names_clear(known);
    registry_put(&srv->reg, known);
    return rc;
}

/* A named context's object id is the one daemon/store.c derives. Without a
 * namespace, the context goes from every namespace the registry holds (so
 * not from an idle one it has freed: name it to reach that one's data).
 * With a cold tier the drop waits for its tombstone to be on disk, so it
 * runs as a job (and, like the other evicts, is refused while one runs);
 * without one it is quick and answered at once. */
static int evict_context(struct kvt_admin_conn *conn, const cJSON *req, const char *name,
                         size_t len, const uint64_t *ns_id, cJSON *reply, char *err,
                         size_t errlen)
{
    struct kvt_server *srv = conn->srv;
    XXH128_hash_t h = XXH3_128bits(name, len);
    struct kvt_ns **all = NULL;
    uint32_t n = 1;
    int rc = 0;

    if (!ns_id && (rc = registry_hold_all(&srv->reg, &all, &n))) {
        snprintf(err, errlen, "out of memory");
        return rc;
    }
    struct kvt_admin_work *w = calloc(1, sizeof(*w) + n * sizeof(w->ids[0]));
    if (!w) {
        registry_put_all(&srv->reg, all, ns_id ? 0 : n);
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    *w = (struct kvt_admin_work){ .srv = srv, .what = "evict", .context = true,
                                  .obj_hi = h.high64, .obj_lo = h.low64, .n_ids = n };
    for (uint32_t i = 0; i < n; i++)
        w->ids[i] = ns_id ? *ns_id : all[i]->id;
    if (srv->tiers.cold) {
        rc = start_job(conn, req, run_evict_context, w, err, errlen);    /* takes w */
    } else {
        (void)run_evict_context(NULL, w);
        add_evicted(srv, w, reply);
        free(w);
    }
    /* Unless refused, the name leaves the listing now; the data goes with
     * the drop (at once, or on the job). */
    struct kvt_ns *one = ns_id && rc >= 0 ? registry_find(&srv->reg, *ns_id) : NULL;
    for (uint32_t i = 0; rc >= 0 && i < n; i++) {
        struct kvt_ns *known = ns_id ? one : all[i];
        if (known)
            registry_name_remove(known, h.high64, h.low64);
    }
    registry_put(&srv->reg, one);
    registry_put_all(&srv->reg, all, ns_id ? 0 : n);
    return rc;
}

static int cmd_evict(struct kvt_admin_conn *conn, const cJSON *req, cJSON *reply,
                     char *err, size_t errlen)
{
    const cJSON *tier = cJSON_GetObjectItemCaseSensitive(req, "tier");
    const cJSON *ctx = cJSON_GetObjectItemCaseSensitive(req, "context");
    const cJSON *ctx_hex = cJSON_GetObjectItemCaseSensitive(req, "context_hex");
    const cJSON *ns = cJSON_GetObjectItemCaseSensitive(req, "namespace");
    char name[KVT_CTX_NAME_MAX + 1];
    uint64_t ns_id = 0;
    size_t len;

    if (ns && parse_ns_id(ns, &ns_id)) {
        snprintf(err, errlen, "namespace must be an id like \"0x1f\" or \"31\"");
        return -EINVAL;
    }
    if (cJSON_IsString(tier) && !ctx && !ctx_hex && !ns) {
        return evict_tier(conn, req, tier->valuestring, err, errlen);
    } else if (cJSON_IsString(ctx) && !ctx_hex && !tier) {
        len = strlen(ctx->valuestring);
        if (len == 0 || len > KVT_CTX_NAME_MAX) {
            snprintf(err, errlen, "context names are 1 to %d bytes", KVT_CTX_NAME_MAX);
            return -EINVAL;
        }
        return evict_context(conn, req, ctx->valuestring, len, ns ? &ns_id : NULL, reply,
                             err, errlen);
    } else if (cJSON_IsString(ctx_hex) && !ctx && !tier) {
        /* The exact bytes of a name that is not UTF-8 (its "name_hex"). */
        if (admin_text_unhex(ctx_hex->valuestring, name, sizeof(name), &len)) {
            snprintf(err, errlen, "context_hex must be 1 to %d bytes as hex digits, "
                     "none of them 00", KVT_CTX_NAME_MAX);
            return -EINVAL;
        }
        return evict_context(conn, req, name, len, ns ? &ns_id : NULL, reply, err, errlen);
    } else if (ns && !ctx && !ctx_hex && !tier) {
        return evict_namespace(conn, req, ns_id, err, errlen);
    }
    snprintf(err, errlen, "evict takes {\"tier\": T}, {\"namespace\": ID} "
             "or {\"context\" or \"context_hex\": NAME[, \"namespace\": ID]}");
    return -EINVAL;
}

static int by_name(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* One namespace's contexts, sorted by name, appended to list. Lengths are
 * computed from the tiers after the names are copied, so a store running
 * meanwhile on a worker never waits for this walk. */
static int list_contexts(struct kvt_server *srv, struct kvt_ns *ns, cJSON *list,
                         uint64_t *untracked)
{
    char **names;
    uint32_t n;
    int rc = registry_names_copy(ns, &names, &n);

    if (rc)
        return rc;
    if (n > 1)                 /* names is NULL when n is 0 */
        qsort(names, n, sizeof(*names), by_name);
    for (uint32_t i = 0; i < n; i++) {
        cJSON *o = cJSON_CreateObject();
        admin_text_add_name(o, "name", names[i]);
        add_id(o, "namespace", ns->id);
        add_u64(o, "domain", ns->domain);
        add_u64(o, "tokens", dp_context_length(&srv->dp, ns, names[i], strlen(names[i])));
        cJSON_AddItemToArray(list, o);
        free(names[i]);
    }
    free(names);
    pthread_mutex_lock(&ns->names_lock);
    *untracked += ns->names_overflow;
    pthread_mutex_unlock(&ns->names_lock);
    return 0;
}

/* What the cold tier holds of each namespace listed (or of ns_id alone):
 * after a restart the names are not known, but the data is served. */
static void add_cold_contexts(const struct kvt_cold_ns_usage *u, size_t n_u, const uint64_t *ns_id,
                              const cJSON *listed, cJSON *reply)
{
    cJSON *cold = cJSON_AddArrayToObject(reply, "cold");
    char id[24];

    for (size_t i = 0; i < n_u; i++) {
        const cJSON *e;
        uint64_t names = 0;
        if (ns_id && u[i].ns_id != *ns_id)
            continue;
        snprintf(id, sizeof(id), "0x%016" PRIx64, u[i].ns_id);
        cJSON_ArrayForEach(e, listed) {
            const cJSON *ns = cJSON_GetObjectItemCaseSensitive(e, "namespace");
            names += cJSON_IsString(ns) && !strcmp(ns->valuestring, id);
        }
        cJSON *o = cJSON_CreateObject();
        add_id(o, "namespace", u[i].ns_id);
        add_u64(o, "objects", u[i].objects);
        add_u64(o, "records", u[i].records);
        add_u64(o, "bytes", u[i].bytes);
        add_u64(o, "names_listed", names);
        cJSON_AddItemToArray(cold, o);
    }
}

static int list_contexts_cmd(struct kvt_server *srv, const cJSON *req, cJSON *reply,
                             char *err, size_t errlen)
{
    const cJSON *ns_item = cJSON_GetObjectItemCaseSensitive(req, "namespace");
    struct kvt_cold_ns_usage *u = NULL;
    struct kvt_ns **ns = NULL;
    uint64_t ns_id, untracked = 0;
    uint32_t n = 0;
    size_t n_u = 0;
    int rc;

    if (ns_item && parse_ns_id(ns_item, &ns_id)) {
        snprintf(err, errlen, "namespace must be an id like \"0x1f\" or \"31\"");
        return -EINVAL;
    }
    rc = cold_usage(srv, &u, &n_u);
    if (rc)
        goto out;
    if (ns_item) {
        ns = malloc(sizeof(*ns));
        if (!ns) {
            rc = -ENOMEM;
            goto out;
        }
        ns[0] = registry_find(&srv->reg, ns_id);
        n = ns[0] != NULL;
        if (!ns[0] && !usage_of(u, n_u, ns_id)) {
            snprintf(err, errlen, "no namespace 0x%016" PRIx64 " attached now or lately, "
                     "nor on the cold tier", ns_id);
            rc = -ENOENT;
            goto out;
        }
    } else {
        rc = registry_hold_all(&srv->reg, &ns, &n);
        if (rc)
            goto out;
    }
    cJSON *list = cJSON_AddArrayToObject(reply, "contexts");
    for (uint32_t i = 0; i < n; i++) {
        rc = list_contexts(srv, ns[i], list, &untracked);
        if (rc)
            goto out;
    }
    add_u64(reply, "untracked", untracked);
    add_cold_contexts(u, n_u, ns_item ? &ns_id : NULL, list, reply);
out:
    if (rc == -ENOMEM)
        snprintf(err, errlen, "out of memory");
    registry_put_all(&srv->reg, ns, n);
    free(u);
    return rc;
}

static int cmd_namespaces(struct kvt_admin_conn *conn, const cJSON *req, cJSON *reply,
                          char *err, size_t errlen)
{
    (void)reply;
    return start_listing(conn, req, "namespaces", list_namespaces, err, errlen);
}

static int cmd_contexts(struct kvt_admin_conn *conn, const cJSON *req, cJSON *reply,
                        char *err, size_t errlen)
{
    (void)reply;
    return start_listing(conn, req, "contexts", list_contexts_cmd, err, errlen);
}

static int cmd_flush(struct kvt_admin_conn *conn, const cJSON *req, cJSON *reply,
                     char *err, size_t errlen)
{
    struct kvt_admin_work *w;

    (void)reply;
    if (!conn->srv->tiers.cold) {
        snprintf(err, errlen, "this daemon has no cold tier (cold-bytes 0)");
        return -EOPNOTSUPP;
    }
    w = calloc(1, sizeof(*w));
    if (!w)
        return -ENOMEM;
    *w = (struct kvt_admin_work){ .srv = conn->srv, .what = "flush" };
    return start_job(conn, req, run_flush, w, err, errlen);
}

static int cmd_health(struct kvt_admin_conn *conn, const cJSON *req, cJSON *reply,
                      char *err, size_t errlen)
{
    struct kvt_server *srv = conn->srv;
    (void)srv, (void)req, (void)err, (void)errlen;
    cJSON_AddBoolToObject(reply, "serving", true);
    return 0;
}

static const struct {
    const char *name;
    admin_fn fn;
} commands[] = {
    { "stats",      admin_cmd_stats },
    { "namespaces", cmd_namespaces },
    { "contexts",   cmd_contexts },
    { "clients",    cmd_clients },
    { "evict",      cmd_evict },
    { "flush",      cmd_flush },
    { "config",     admin_cmd_config },
    { "health",     cmd_health },
};

int admin_dispatch(struct kvt_admin_conn *c, const char *name, const cJSON *req,
                   cJSON *reply, char *err, size_t errlen)
{
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
        if (!strcmp(commands[i].name, name))
            return commands[i].fn(c, req, reply, err, errlen);
    snprintf(err, errlen, "unknown command '%.100s'", name);
    return -EINVAL;
}

const char *admin_work_name(const struct kvt_admin_work *w)
{
    return w->what;
}

void admin_work_free(struct kvt_admin_work *w)
{
    if (!w)
        return;
    cJSON_Delete(w->req);
    cJSON_Delete(w->reply);
    free(w);
}

void admin_job_result(const struct kvt_admin_work *w, uint64_t done, int rc, cJSON *reply,
                      char *err, size_t errlen)
{
    if (w->list && rc) {
        snprintf(err, errlen, "%s", w->err[0] ? w->err
                                   : rc == -ENOMEM ? "out of memory" : strerror(-rc));
    } else if (w->list) {
        /* The listing built its members on the job's thread: they move. */
        for (cJSON *item; (item = w->reply->child);)
            cJSON_AddItemToObject(reply, item->string,
                                  cJSON_DetachItemViaPointer(w->reply, item));
    } else if (rc && !strcmp(w->what, "flush"))
        snprintf(err, errlen, "writing the hot tier to the cold tier failed: %s", strerror(-rc));
    else if (rc)
        snprintf(err, errlen, "%s failed: %s", w->what, strerror(-rc));
    else if (!strcmp(w->what, "flush"))
        add_u64(reply, "chunks_written", done);
    else
        add_evicted(w->srv, w, reply);
}
