/* soak.h - what the soak test's processes share: the geometry, the counters
 * by kind of operation, and each client's record of what it stored, all in
 * one anonymous shared mapping made before the first fork. A client killed
 * and started again continues from its record, so every value fetched is
 * checked against every version stored since the daemon started. */
#ifndef KVT_TEST_SOAK_H
#define KVT_TEST_SOAK_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "client/kvtier.h"

#define SOAK_LAYERS 4
#define SOAK_HEADS 4
#define SOAK_DIM 64
#define SOAK_ROW_ELEMS (SOAK_HEADS * SOAK_DIM)
#define SOAK_CHUNK 16                 /* tokens per chunk (model and daemon) */
#define SOAK_TOKENS 128               /* per named context and layer: 8 chunks */
#define SOAK_CTXS 6                   /* named contexts per client */
#define SOAK_BASES 4                  /* shared token prefixes ... */
#define SOAK_TAILS 3                  /* ... each with these continuations */
#define SOAK_BASE_TOKENS 32
#define SOAK_SEQ_TOKENS 64            /* base + tail */
#define SOAK_CLIENTS_MAX 8
#define SOAK_NOBODY 65534
#define SOAK_REPORTS_MAX 60           /* failure lines printed per run */
#define SOAK_HISTORIES_MAX 12         /* event histories printed with them */

/* A token whose value may be anything: a store of it failed with an error
 * while another version was already in doubt. Never a version number. */
#define SOAK_VER_UNKNOWN UINT32_MAX

enum soak_kind {
    SOAK_STORE, SOAK_STORE_BATCH, SOAK_FETCH, SOAK_FETCH_BATCH, SOAK_STORE_TOKENS,
    SOAK_MATCH_TOKENS, SOAK_FETCH_TOKENS, SOAK_DROP, SOAK_SYNC, SOAK_LENGTH,
    SOAK_RESOLVE, SOAK_ADMIN_STATS, SOAK_ADMIN_CONTEXTS, SOAK_ADMIN_CLIENTS,
    SOAK_ADMIN_FLUSH, SOAK_ADMIN_EVICT_CTX, SOAK_ADMIN_EVICT_NS, SOAK_ADMIN_EVICT_HOT,
    SOAK_ADMIN_CONFIG, SOAK_ADMIN_HEALTH, SOAK_KILL, SOAK_KINDS
};

struct soak_count {
    _Atomic uint64_t ops;
    _Atomic uint64_t absent;          /* -ENOENT, or an admin job already running */
    _Atomic uint64_t errors;          /* any other failure */
    _Atomic uint64_t wrong;           /* a value, length or reply that breaks a promise */
};

/* The operation a client has in flight, written before the request goes
 * out, so that the next incarnation of a killed client knows which tokens
 * may hold either version. */
struct soak_journal {
    _Atomic uint32_t active;
    uint32_t ctx, layer_mask, token_start, n_tokens, version;
};

struct soak_client {
    uint32_t domain;                  /* 0: root's domain, 1: nobody's */
    uint32_t domain_slot;             /* index within the domain: names, model */
    uid_t uid;
    kvt_dtype dtype;
    _Atomic pid_t pid;
    uint32_t incarnation;
    uint32_t next_version;            /* versions start at 1; 0 = not stored */
    struct soak_journal journal;
    /* The version each token holds (0: never stored, or dropped), and one
     * more it may hold (0: none) while a failed or killed store is in doubt. */
    uint32_t ver[SOAK_CTXS][SOAK_LAYERS][SOAK_TOKENS];
    uint32_t alt[SOAK_CTXS][SOAK_LAYERS][SOAK_TOKENS];
    /* `evict --tier hot` drops unsynced stores and the cold tier's copy is
     * read back (kvtierctl(1)): a token stored before one may hold any of
     * its versions from the one it held at the last kvt_sync (synced)
     * on, never one from before its context's last drop (drop_floor).
     * epoch: sh->evict_hot_started when its version was stored, one less
     * if an evict of the hot tier was running then. */
    uint32_t synced[SOAK_CTXS][SOAK_LAYERS][SOAK_TOKENS];
    uint32_t epoch[SOAK_CTXS][SOAK_LAYERS][SOAK_TOKENS];
    uint32_t drop_floor[SOAK_CTXS];
};

/* What happened when, for the report of a broken promise: every named
 * store and drop of the clients and every admin command, in a ring. */
#define SOAK_EVENTS 65536
struct soak_event {
    float t0, t1;                     /* seconds since the load began; t1 0: running */
    int16_t client;                   /* -1: the admin process */
    uint8_t kind, ctx;
    int32_t rc;
    uint32_t layer_mask, token_start, n_tokens, version;
};

struct soak_shared {
    _Atomic int stop;
    _Atomic uint32_t reports;         /* failure lines printed, to bound the noise */
    _Atomic uint32_t histories;       /* event histories printed */
    /* Fetches that returned a dropped context's data, by whether an admin
     * flush ran while that drop did. */
    _Atomic uint64_t resurrected_flush, resurrected_other;
    _Atomic uint32_t evict_hot_started, evict_hot_done;
    double t_start;                   /* CLOCK_MONOTONIC, seconds */
    _Atomic uint64_t n_events;
    struct soak_event events[SOAK_EVENTS];
    char socket[320];
    uint32_t n_clients;
    struct soak_count count[SOAK_KINDS];
    struct soak_client client[SOAK_CLIENTS_MAX];
};

extern const char *const soak_kind_name[SOAK_KINDS];

/* Context ctx of the client at domain_slot: "soak.s<slot>.c<ctx>". The
 * same names in both domains, so a leak between them shows as a wrong value. */
void soak_ctx_name(char *buf, size_t len, uint32_t domain_slot, uint32_t ctx);
/* Even slots attach to model "soak-a", odd ones to "soak-b". */
const char *soak_model_name(uint32_t domain_slot);

/* Record the start of an event; returns its slot for soak_event_end. */
uint64_t soak_event_begin(struct soak_shared *sh, int client, enum soak_kind kind,
                          uint32_t ctx, uint32_t layer_mask, uint32_t token_start,
                          uint32_t n_tokens, uint32_t version);
void soak_event_end(struct soak_shared *sh, uint64_t slot, int rc);

/* Print client's stores, drops and syncs of (ctx, layer, token), newest
 * first, back to the store of version found, then the admin commands since
 * (a bounded number of times per run). */
void soak_print_history(struct soak_shared *sh, int client, uint32_t ctx, uint32_t layer,
                        uint32_t token, uint32_t found);
/* Whether an admin flush ran during client's last successful drop of ctx. */
int soak_drop_raced_flush(struct soak_shared *sh, int client, uint32_t ctx);

/* Print a failure line (at most a few dozen per run, then only count). */
void soak_report(struct soak_shared *sh, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Run client i's random mix of operations until sh->stop. Returns the
 * process exit status: 0, or nonzero when it could not start. */
int soak_client_run(struct soak_shared *sh, uint32_t i);

/* After the load: fetch every token client i's record says it holds, chunk
 * by chunk, and check each value (absent is allowed, except where the
 * record says dropped or never stored: then it must be absent). Returns the
 * number of broken promises, or -1 when it could not connect. */
int soak_client_verify(struct soak_shared *sh, uint32_t i);

/* Store every token of context "soak-final" for client i's domain and model
 * and kvt_sync (synced = nonzero: check instead that it is all there and
 * exact). Returns 0, the failing call's rc, or 1 for wrong values. */
int soak_final_data(struct soak_shared *sh, uint32_t i, int synced);

#endif
