/* test_soak.c - proves that kvtierd keeps its promises under lasting mixed
 * load: one daemon with a small hot tier and a small cold file, so eviction,
 * demotion and cold reclaim run all the time; six client processes (four as
 * root, two as nobody: two sharing domains with the same context names and
 * token ids) each running a random mix of every data call (tests/soak_client.c);
 * one admin process looping over stats, contexts, clients, flush, evicts of a
 * context, a namespace and the hot tier, config set hot-bytes up and down,
 * and health; and a client SIGKILLed every few seconds, mid-request, and
 * started again on its record. Every fetched value must be a version its
 * client stored (or the one shared prefix value of its domain); absent is
 * allowed, wrong, resurrected-after-drop or another domain's data is not, and
 * no call may fail otherwise. At the end: the daemon's fds are as before the
 * load and its RSS is flat from warm-up to the end, /dev/shm holds nothing of
 * ours, the daemon still serves, stops with exit 0 on SIGTERM, and after a
 * restart the data synced before the stop is all there, and every client's
 * record still checks out.
 *
 * Runs for $SOAK_SECONDS or argv[1] seconds (default 25, what `make test`
 * runs); `make soak SOAK_SECONDS=N` runs it longer. Prints progress every
 * 5 s and a summary by kind of operation. */
#include "tests/helpers.h"
#include "tests/soak.h"

#include <cjson/cJSON.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define DEFAULT_SECONDS 25
#define PROGRESS_SECONDS 5
#define STOP_GRACE_SECONDS 60         /* a process still busy this long after stop hangs */
#define RSS_SLACK_BYTES (32ull << 20)

static struct test_daemon d;
static struct soak_shared *sh;
static char cold_dir[64], cold_path[128];
static unsigned soak_seconds = DEFAULT_SECONDS;
static int failures;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void failure(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void failure(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "soak: FAILED: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    failures++;
}

static void start_daemon(int again)
{
    /* Hot 4 MiB (the admin moves it between 2 and 6) against a working set
     * of about 20 MiB; 48 MiB of 1 MiB cold regions fill and get reclaimed. */
#define SOAK_FLAGS "--hot-bytes", "4M", "--cold-bytes", "48M", "--cold-region-bytes", "1M", \
        "--chunk-tokens", "16", "--cold-path", cold_path, "--workers", "2", \
        "--log-level", "info", NULL
    if (again)
        daemon_restart(&d, SOAK_FLAGS);
    else
        daemon_start(&d, SOAK_FLAGS);
#undef SOAK_FLAGS
}

/* ---- the admin process ------------------------------------------------------ */

static uint64_t admin_rng;

static uint32_t admin_rnd(uint32_t n)
{
    admin_rng ^= admin_rng << 13;
    admin_rng ^= admin_rng >> 7;
    admin_rng ^= admin_rng << 17;
    return (uint32_t)(admin_rng % n);
}

/* Any namespace id the daemon knows, as its "0x..." string; 0 if none. */
static int pick_namespace(char *id, size_t len)
{
    char reply[16384];
    int rc = admin_request(&d, "{\"cmd\":\"namespaces\"}", reply, sizeof(reply)), n;

    if (rc)
        return rc;
    cJSON *r = cJSON_Parse(reply);
    const cJSON *list = cJSON_GetObjectItemCaseSensitive(r, "namespaces");
    n = cJSON_GetArraySize(list);
    const cJSON *ns = n > 0 ? cJSON_GetArrayItem(list, (int)admin_rnd((uint32_t)n)) : NULL;
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(ns, "id");
    rc = cJSON_IsString(v) ? 0 : -ENOENT;
    if (!rc)
        snprintf(id, len, "%s", v->valuestring);
    cJSON_Delete(r);
    return rc;
}

/* One admin command; counts it as done, busy (another job runs) or failed. */
static void admin_one(void)
{
    static const char *const hot_sizes[] = { "2M", "3M", "4M", "6M" };
    static char reply[1 << 16];
    char req[512], ns[64];
    enum soak_kind kind;
    uint32_t r = admin_rnd(100);

    if (r < 20) {
        kind = SOAK_ADMIN_STATS;
        snprintf(req, sizeof(req), "{\"cmd\":\"stats\"}");
    } else if (r < 30) {
        kind = SOAK_ADMIN_CONTEXTS;
        snprintf(req, sizeof(req), "{\"cmd\":\"contexts\"}");
    } else if (r < 40) {
        kind = SOAK_ADMIN_CLIENTS;
        snprintf(req, sizeof(req), "{\"cmd\":\"clients\"}");
    } else if (r < 52) {
        kind = SOAK_ADMIN_HEALTH;
        snprintf(req, sizeof(req), "{\"cmd\":\"health\"}");
    } else if (r < 60) {
        kind = SOAK_ADMIN_FLUSH;
        snprintf(req, sizeof(req), "{\"cmd\":\"flush\"}");
    } else if (r < 75) {
        char name[64];
        kind = SOAK_ADMIN_EVICT_CTX;
        soak_ctx_name(name, sizeof(name), admin_rnd(4), admin_rnd(SOAK_CTXS));
        snprintf(req, sizeof(req), "{\"cmd\":\"evict\",\"context\":\"%s\"}", name);
    } else if (r < 77) {
        kind = SOAK_ADMIN_EVICT_NS;
        if (pick_namespace(ns, sizeof(ns)))
            return;
        snprintf(req, sizeof(req), "{\"cmd\":\"evict\",\"namespace\":\"%s\"}", ns);
    } else if (r < 80) {
        kind = SOAK_ADMIN_EVICT_HOT;
        snprintf(req, sizeof(req), "{\"cmd\":\"evict\",\"tier\":\"hot\"}");
    } else {
        kind = SOAK_ADMIN_CONFIG;
        snprintf(req, sizeof(req), "{\"cmd\":\"config\",\"op\":\"set\",\"key\":\"hot-bytes\","
                 "\"value\":\"%s\"}", hot_sizes[admin_rnd(4)]);
    }
    struct soak_count *c = &sh->count[kind];
    atomic_fetch_add(&c->ops, 1);
    uint64_t ev = soak_event_begin(sh, -1, kind, 0, 0, 0, 0, 0);
    if (kind == SOAK_ADMIN_EVICT_HOT)
        atomic_fetch_add(&sh->evict_hot_started, 1);
    int rc = admin_request(&d, req, reply, sizeof(reply));
    if (kind == SOAK_ADMIN_EVICT_HOT)
        atomic_fetch_add(&sh->evict_hot_done, 1);
    soak_event_end(sh, ev, rc);
    if (rc) {
        atomic_fetch_add(&c->errors, 1);
        soak_report(sh, "admin %s: %s", req, kvt_strerror(rc));
        return;
    }
    cJSON *rep = cJSON_Parse(reply);
    const cJSON *ok = cJSON_GetObjectItemCaseSensitive(rep, "ok");
    const cJSON *err = cJSON_GetObjectItemCaseSensitive(rep, "error");
    if (cJSON_IsTrue(ok) && kind == SOAK_ADMIN_HEALTH &&
        !cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(rep, "serving"))) {
        atomic_fetch_add(&c->wrong, 1);
        soak_report(sh, "admin health: not serving: %s", reply);
    } else if (cJSON_IsFalse(ok) && cJSON_IsString(err) &&
               strstr(err->valuestring, "already running")) {
        atomic_fetch_add(&c->absent, 1);
    } else if (!cJSON_IsTrue(ok)) {
        atomic_fetch_add(&c->errors, 1);
        soak_report(sh, "admin %s: %.300s", req, reply);
    }
    cJSON_Delete(rep);
}

static int admin_run(void)
{
    admin_rng = 0x9e3779b97f4a7c15ull ^ (uint64_t)getpid();
    while (!atomic_load(&sh->stop)) {
        admin_one();
        usleep(50000 + admin_rnd(100000));
    }
    return 0;
}

/* ---- the supervisor ------------------------------------------------------- */

static pid_t spawn(int (*fn)(uint32_t), uint32_t i)
{
    pid_t pid = fork();

    if (pid == 0)
        _exit(fn(i));
    return pid;
}

static int run_client(uint32_t i)
{
    return soak_client_run(sh, i);
}

static int run_admin(uint32_t i)
{
    (void)i;
    return admin_run();
}

/* Whether the daemon still lists a session of pid. */
static int session_listed(pid_t pid)
{
    static char reply[1 << 16];
    int found = 0;

    if (admin_request(&d, "{\"cmd\":\"clients\"}", reply, sizeof(reply)))
        return -1;
    cJSON *r = cJSON_Parse(reply);
    const cJSON *c;
    cJSON_ArrayForEach(c, cJSON_GetObjectItemCaseSensitive(r, "clients")) {
        const cJSON *p = cJSON_GetObjectItemCaseSensitive(c, "pid");
        if (cJSON_IsNumber(p) && (pid_t)p->valuedouble == pid)
            found = 1;
    }
    cJSON_Delete(r);
    return found;
}

/* SIGKILL client i wherever it is (nearly always inside a call), wait
 * until the daemon has closed its session, so its last request is done
 * one way or the other, and start it again on its record. */
static void kill_and_restart(uint32_t i)
{
    struct soak_count *c = &sh->count[SOAK_KILL];
    pid_t pid = atomic_load(&sh->client[i].pid);
    int listed = 1;

    atomic_fetch_add(&c->ops, 1);
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    for (int t = 0; t < 3000 && listed; t++) {       /* up to 30 s */
        listed = session_listed(pid);
        if (listed)
            usleep(10000);
    }
    if (listed) {
        atomic_fetch_add(&c->errors, 1);
        failure("the daemon still lists client pid %d 30 s after it was killed", (int)pid);
    }
    atomic_store(&sh->client[i].pid, spawn(run_client, i));
}

static uint64_t total(int field_errors)
{
    uint64_t n = 0;
    for (int k = 0; k < SOAK_KINDS; k++)
        n += field_errors ? atomic_load(&sh->count[k].errors) : atomic_load(&sh->count[k].ops);
    return n;
}

static uint64_t total_wrong(void)
{
    uint64_t n = 0;
    for (int k = 0; k < SOAK_KINDS; k++)
        n += atomic_load(&sh->count[k].wrong);
    return n;
}

static void progress(double elapsed)
{
    char line[2048];
    size_t at = 0;

    at += (size_t)snprintf(line + at, sizeof(line) - at,
                           "soak %3.0f/%u s: %llu ops, %llu errors, %llu wrong |", elapsed,
                           soak_seconds, (unsigned long long)total(0),
                           (unsigned long long)total(1), (unsigned long long)total_wrong());
    for (int k = 0; k < SOAK_KINDS && at < sizeof(line) - 64; k++) {
        const struct soak_count *c = &sh->count[k];
        unsigned long long ops = atomic_load(&c->ops), err = atomic_load(&c->errors),
                           wrong = atomic_load(&c->wrong);
        at += (size_t)snprintf(line + at, sizeof(line) - at, " %s %llu", soak_kind_name[k], ops);
        if (err || wrong)
            at += (size_t)snprintf(line + at, sizeof(line) - at, " (%llu err, %llu WRONG)",
                                   err, wrong);
    }
    printf("%s\n", line);
    fflush(stdout);
}

static void summary(void)
{
    printf("soak summary after %u s:\n%-14s %10s %10s %8s %8s\n", soak_seconds, "kind", "ops",
           "absent", "errors", "wrong");
    for (int k = 0; k < SOAK_KINDS; k++) {
        const struct soak_count *c = &sh->count[k];
        printf("%-14s %10llu %10llu %8llu %8llu\n", soak_kind_name[k],
               (unsigned long long)atomic_load(&c->ops),
               (unsigned long long)atomic_load(&c->absent),
               (unsigned long long)atomic_load(&c->errors),
               (unsigned long long)atomic_load(&c->wrong));
    }
    fflush(stdout);
}

/* Wait up to STOP_GRACE_SECONDS for pid; a process that does not stop by
 * then is stuck in a call the daemon never answers. */
static void reap(pid_t pid, const char *what)
{
    int st;

    for (int t = 0; t < STOP_GRACE_SECONDS * 10; t++) {
        if (waitpid(pid, &st, WNOHANG) == pid) {
            if (!WIFEXITED(st) || WEXITSTATUS(st))
                failure("%s (pid %d) ended with status 0x%x", what, (int)pid, st);
            return;
        }
        usleep(100000);
    }
    failure("%s (pid %d) still running %d s after the stop: a call hangs", what, (int)pid,
            STOP_GRACE_SECONDS);
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
}

/* The load itself; returns the daemon's RSS at the end of the warm-up. */
static uint64_t run_load(uint64_t *rss_end)
{
    double t0 = now_s(), deadline = t0 + soak_seconds;
    double warm = t0 + (soak_seconds / 4.0 > 5 ? soak_seconds / 4.0 : 5);
    double next_progress = t0 + PROGRESS_SECONDS, next_kill = t0 + 2;
    uint64_t rss_warm = 0;
    pid_t admin = spawn(run_admin, 0);

    for (uint32_t i = 0; i < sh->n_clients; i++)
        atomic_store(&sh->client[i].pid, spawn(run_client, i));
    srand((unsigned)getpid());
    for (double t = t0; t < deadline; t = now_s()) {
        usleep(100000);
        for (uint32_t i = 0; i < sh->n_clients; i++) {
            int st;
            pid_t pid = atomic_load(&sh->client[i].pid);
            if (waitpid(pid, &st, WNOHANG) == pid) {
                failure("client %u (pid %d) ended by itself, status 0x%x", i, (int)pid, st);
                atomic_store(&sh->client[i].pid, spawn(run_client, i));
            }
        }
        if (!rss_warm && t >= warm)
            rss_warm = daemon_rss_bytes(&d);
        if (t >= next_kill) {
            kill_and_restart((uint32_t)rand() % sh->n_clients);
            next_kill = now_s() + 1.5 + (rand() % 2500) / 1000.0;
        }
        if (t >= next_progress) {
            progress(t - t0);
            next_progress += PROGRESS_SECONDS;
        }
    }
    *rss_end = daemon_rss_bytes(&d);
    atomic_store(&sh->stop, 1);
    reap(admin, "the admin process");
    for (uint32_t i = 0; i < sh->n_clients; i++)
        reap(atomic_load(&sh->client[i].pid), "a client");
    progress(now_s() - t0);
    return rss_warm;
}

/* ---- checks after the load -------------------------------------------------- */

static uint32_t verify_index;

static int child_final_store(void *arg)
{
    (void)arg;
    return soak_final_data(sh, verify_index, 0) ? 30 : 0;
}

static int child_final_check(void *arg)
{
    (void)arg;
    return soak_final_data(sh, verify_index, 1) ? 31 : 0;
}

static int child_verify(void *arg)
{
    (void)arg;
    int bad = soak_client_verify(sh, verify_index);
    return bad < 0 ? 40 : bad > 0 ? 41 : 0;
}

/* Once per (domain, model): the first two slots of each domain. */
static void for_each_namespace(int (*fn)(void *), const char *what)
{
    for (uint32_t i = 0; i < sh->n_clients; i++) {
        if (sh->client[i].domain_slot >= 2)
            continue;
        verify_index = i;
        int rc = test_in_child(fn, NULL);
        if (rc)
            failure("%s for client %u.%u: status %d", what, sh->client[i].domain,
                    sh->client[i].domain_slot, rc);
    }
}

static void setup_clients(void)
{
    /* domain, slot, dtype: the dtypes cross within each namespace. */
    static const struct { uint32_t domain, slot; kvt_dtype dt; } plan[] = {
        { 0, 0, KVT_F16 }, { 0, 1, KVT_F32 }, { 0, 2, KVT_F32 }, { 0, 3, KVT_F16 },
        { 1, 0, KVT_F16 }, { 1, 1, KVT_F32 },
    };
    int other_uid = getuid() == 0;

    sh->n_clients = 0;
    for (size_t i = 0; i < sizeof(plan) / sizeof(plan[0]); i++) {
        if (plan[i].domain && !other_uid)
            continue;                 /* not root: one domain only */
        struct soak_client *c = &sh->client[sh->n_clients++];
        c->domain = plan[i].domain;
        c->domain_slot = plan[i].slot;
        c->dtype = plan[i].dt;
        c->uid = plan[i].domain ? SOAK_NOBODY : getuid();
    }
    if (!other_uid)
        printf("soak: not root, so no second sharing domain\n");
}

static void soak(void **state)
{
    char reply[512];
    (void)state;

    snprintf(cold_dir, sizeof(cold_dir), "/var/tmp/kvtier-soak-XXXXXX");
    assert_non_null(mkdtemp(cold_dir));
    snprintf(cold_path, sizeof(cold_path), "%s/cold.kvt", cold_dir);
    sh = mmap(NULL, sizeof(*sh), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    assert_true(sh != MAP_FAILED);
    memset(sh, 0, sizeof(*sh));
    sh->t_start = now_s();
    start_daemon(0);
    snprintf(sh->socket, sizeof(sh->socket), "%s", d.socket);
    setup_clients();
    int fds_idle = daemon_idle_fd_count(&d);

    uint64_t rss_end, rss_warm = run_load(&rss_end);
    summary();

    int fds_after = daemon_idle_fd_count(&d);
    for (int t = 0; t < 100 && fds_after != fds_idle; t++) {
        usleep(100000);
        fds_after = daemon_idle_fd_count(&d);
    }
    printf("soak: daemon fds idle %d before, %d after; RSS %.1f MiB after warm-up, "
           "%.1f MiB at the end\n", fds_idle, fds_after, rss_warm / 1048576.0,
           rss_end / 1048576.0);
    if (fds_after != fds_idle)
        failure("the daemon holds %d fds with no client, %d before the load", fds_after,
                fds_idle);
    if (rss_end > rss_warm + rss_warm / 4 + RSS_SLACK_BYTES)
        failure("the daemon's RSS grew from %.1f to %.1f MiB", rss_warm / 1048576.0,
                rss_end / 1048576.0);
    if (shm_kvtier_files())
        failure("%d kvtier files left in /dev/shm", shm_kvtier_files());
    if (admin_request(&d, "{\"cmd\":\"health\"}", reply, sizeof(reply)) ||
        !strstr(reply, "\"serving\":true"))
        failure("health after the load: %s", reply);

    for_each_namespace(child_final_store, "store and sync of soak-final");
    daemon_stop(&d);                   /* asserts exit status 0 */
    start_daemon(1);
    for_each_namespace(child_final_check, "synced data after a restart");
    /* Room for the verification's own reports, however many came before. */
    atomic_store(&sh->reports, SOAK_REPORTS_MAX - 12);
    atomic_store(&sh->histories, SOAK_HISTORIES_MAX - 2);
    for (uint32_t i = 0; i < sh->n_clients; i++) {
        verify_index = i;
        if (test_in_child(child_verify, NULL))
            failure("client %u's data after the restart does not check out", i);
    }
    daemon_stop(&d);
    daemon_cleanup(&d);
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", cold_dir);
    if (system(cmd) != 0)
        fprintf(stderr, "cannot remove %s\n", cold_dir);

    uint64_t errors = total(1), wrong = total_wrong();
    printf("soak: fetches that returned a dropped context's data: %llu after a drop that "
           "raced an admin flush, %llu after one that did not\n",
           (unsigned long long)atomic_load(&sh->resurrected_flush),
           (unsigned long long)atomic_load(&sh->resurrected_other));
    munmap(sh, sizeof(*sh));
    if (wrong)
        failure("%llu broken promises (wrong values, data after a drop, bad lengths)",
                (unsigned long long)wrong);
    if (errors)
        failure("%llu calls failed", (unsigned long long)errors);
    if (failures)
        fail_msg("soak: %d failures (see above)", failures);
}

int main(int argc, char **argv)
{
    const char *env = getenv("SOAK_SECONDS");
    const char *arg = argc > 1 ? argv[1] : env;

    if (arg && *arg) {
        char *end;
        unsigned long s = strtoul(arg, &end, 10);
        if (*end || s == 0 || s > 7 * 24 * 3600) {
            fprintf(stderr, "usage: %s [SECONDS] (or $SOAK_SECONDS), 1 .. 604800\n", argv[0]);
            return 2;
        }
        soak_seconds = (unsigned)s;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(soak, NULL, NULL),
    };
    return cmocka_run_group_tests_name("soak", tests, NULL, NULL);
}
