/* soak_events.c - the soak test's shared bookkeeping: names of the kinds
 * of operation, bounded failure reports, and the ring of timed events that
 * explains a broken promise. */
#include "tests/soak.h"

#include <stdarg.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>

const char *const soak_kind_name[SOAK_KINDS] = {
    "store", "store_batch", "fetch", "fetch_batch", "store_tokens", "match_tokens",
    "fetch_tokens", "drop", "sync", "length", "resolve", "adm:stats", "adm:contexts",
    "adm:clients", "adm:flush", "adm:evict-ctx", "adm:evict-ns", "adm:evict-hot",
    "adm:config", "adm:health", "kill",
};

void soak_report(struct soak_shared *sh, const char *fmt, ...)
{
    char line[600];
    va_list ap;

    if (atomic_fetch_add(&sh->reports, 1) >= SOAK_REPORTS_MAX)
        return;
    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    fprintf(stderr, "soak: pid %d: %s\n", (int)getpid(), line);
}

static float soak_now(const struct soak_shared *sh)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    float t = (float)((double)ts.tv_sec + ts.tv_nsec / 1e9 - sh->t_start);
    return t > 0 ? t : 1e-6f;
}

uint64_t soak_event_begin(struct soak_shared *sh, int client, enum soak_kind kind,
                          uint32_t ctx, uint32_t layer_mask, uint32_t token_start,
                          uint32_t n_tokens, uint32_t version)
{
    uint64_t slot = atomic_fetch_add(&sh->n_events, 1);
    struct soak_event *e = &sh->events[slot % SOAK_EVENTS];

    *e = (struct soak_event){ .t0 = soak_now(sh), .client = (int16_t)client,
                              .kind = (uint8_t)kind, .ctx = (uint8_t)ctx,
                              .layer_mask = layer_mask, .token_start = token_start,
                              .n_tokens = n_tokens, .version = version };
    return slot;
}

void soak_event_end(struct soak_shared *sh, uint64_t slot, int rc)
{
    struct soak_event *e = &sh->events[slot % SOAK_EVENTS];
    e->rc = rc;
    e->t1 = soak_now(sh);
}

void soak_ctx_name(char *buf, size_t len, uint32_t domain_slot, uint32_t ctx)
{
    snprintf(buf, len, "soak.s%u.c%u", domain_slot, ctx);
}

const char *soak_model_name(uint32_t domain_slot)
{
    return domain_slot % 2 ? "soak-b" : "soak-a";
}

#define HISTORY_ADMIN_MAX 16

static void print_event(const struct soak_event *e)
{
    fprintf(stderr, "soak:     %8.3f..%8.3f s  %-12s", e->t0, e->t1, soak_kind_name[e->kind]);
    if (e->client >= 0 && e->kind != SOAK_DROP && e->kind != SOAK_SYNC)
        fprintf(stderr, " version %u layers 0x%x tokens %u+%u", e->version, e->layer_mask,
                e->token_start, e->n_tokens);
    fprintf(stderr, " -> %s\n", e->t1 == 0 ? "(running)" : e->rc ? kvt_strerror(e->rc) : "ok");
}

/* Why a bad value may be there: this client's stores and drops of (ctx,
 * layer, token), newest first, back to the store of the version found;
 * then every admin command since that store. */
void soak_print_history(struct soak_shared *sh, int client, uint32_t ctx, uint32_t layer,
                        uint32_t token, uint32_t found)
{
    uint64_t head = atomic_load(&sh->n_events), lo = head > SOAK_EVENTS ? head - SOAK_EVENTS : 0;
    const struct soak_event *admin[HISTORY_ADMIN_MAX];
    float since = -1;
    int n_admin = 0, back_to_found = 0;

    if (atomic_fetch_add(&sh->histories, 1) >= SOAK_HISTORIES_MAX)
        return;
    fprintf(stderr, "soak:   this client's stores and drops of that token and syncs, newest "
            "first:\n");
    for (uint64_t i = head; i-- > lo && !back_to_found;) {
        const struct soak_event *e = &sh->events[i % SOAK_EVENTS];
        if (e->client != client || (e->ctx != ctx && e->kind != SOAK_SYNC))
            continue;
        if (e->kind != SOAK_DROP && e->kind != SOAK_SYNC && (!(e->layer_mask & (1u << layer)) || token < e->token_start ||
                                     token >= e->token_start + e->n_tokens))
            continue;
        print_event(e);
        since = e->t0;
        back_to_found = found && e->kind != SOAK_DROP && e->version == found;
    }
    if (!back_to_found)
        fprintf(stderr, "soak:     (older events are out of the ring)\n");
    for (uint64_t i = head; i-- > lo && n_admin < HISTORY_ADMIN_MAX;) {
        const struct soak_event *e = &sh->events[i % SOAK_EVENTS];
        if (e->client < 0 && (e->t1 == 0 || e->t1 >= since))
            admin[n_admin++] = e;
    }
    fprintf(stderr, "soak:   admin commands since (the last %d at most):\n", HISTORY_ADMIN_MAX);
    while (n_admin--)
        print_event(admin[n_admin]);
}

/* Whether an admin flush ran at any time during this client's last
 * successful drop of ctx. */
int soak_drop_raced_flush(struct soak_shared *sh, int client, uint32_t ctx)
{
    uint64_t head = atomic_load(&sh->n_events), lo = head > SOAK_EVENTS ? head - SOAK_EVENTS : 0;
    const struct soak_event *drop = NULL;

    for (uint64_t i = head; i-- > lo && !drop;) {
        const struct soak_event *e = &sh->events[i % SOAK_EVENTS];
        if (e->client == client && e->ctx == ctx && e->kind == SOAK_DROP && e->rc == 0)
            drop = e;
    }
    for (uint64_t i = head; drop && i-- > lo;) {
        const struct soak_event *e = &sh->events[i % SOAK_EVENTS];
        if (e->client < 0 && e->kind == SOAK_ADMIN_FLUSH && e->t0 <= drop->t1 &&
            (e->t1 == 0 || e->t1 >= drop->t0))
            return 1;
    }
    return 0;
}
