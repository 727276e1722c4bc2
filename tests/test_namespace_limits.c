/* test_namespace_limits.c - proves that no uid can use up the namespace
 * registry: a uid holding max-namespaces-per-uid models attached (the
 * default 64, or as configured) is refused a new one with -EDQUOT and a
 * reason naming the key (in the daemon's log), while it can still attach a
 * second client to a model it has, and root and another uid can attach new
 * models meanwhile (the members of a share group count together, so there
 * the other member is refused too); one uid attaching and
 * detaching far more distinct models than the registry once held (1100, one
 * after another) never locks out root; and a model whose idle entry the
 * registry freed keeps its data (the namespace id comes from the identity),
 * while its context names leave the `contexts` listing as documented. */
#include "tests/helpers.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define LAYERS 2
#define HEADS 2
#define DIM 32
#define CHUNK 16
#define T 32
#define DEFAULT_CAP 64     /* max-namespaces-per-uid's default */
#define UID_A 1000
#define UID_B 1001
#define MANY 1100          /* more than the 1024 entries the registry once had */

static struct test_daemon d;
static int cap;            /* max-namespaces-per-uid of the daemon under test */
static int shared;         /* 1: UID_A and UID_B are one share group */

static kvt_model model(const char *name)
{
    return test_model(name, LAYERS, HEADS, DIM, KVT_F16, CHUNK);
}

static int attach_once(const char *name)
{
    kvt_model m = model(name);
    kvt_client *c;
    int rc = kvt_connect(d.socket, &m, &c);

    kvt_disconnect(c);
    return rc;
}

/* ---- the per-uid cap ------------------------------------------------------ */

/* uid A fills its cap and is refused one more, then holds its clients until
 * the parent has checked that others still attach (one byte each way). */
static int uid_a_at_cap(int ready_fd, int done_fd)
{
    kvt_client *c[DEFAULT_CAP + 1] = { 0 };
    char name[32], byte = 1;

    CHILD_CHECK(test_become_uid(UID_A) == 0, 10);
    for (int i = 0; i < cap; i++) {
        kvt_model m;
        snprintf(name, sizeof(name), "a-model-%d", i);
        m = model(name);
        CHILD_CHECK(kvt_connect(d.socket, &m, &c[i]) == 0, 11);
    }
    CHILD_CHECK(attach_once("a-model-extra") == -EDQUOT, 12);
    /* A model it has attached costs nothing more. */
    kvt_model again = model("a-model-0");
    CHILD_CHECK(kvt_connect(d.socket, &again, &c[cap]) == 0, 13);
    CHILD_CHECK(write(ready_fd, &byte, 1) == 1, 14);
    CHILD_CHECK(read(done_fd, &byte, 1) == 1, 15);
    for (int i = 0; i <= cap; i++)
        kvt_disconnect(c[i]);
    return 0;
}

static int uid_b_attaches(void *arg)
{
    (void)arg;
    CHILD_CHECK(test_become_uid(UID_B) == 0, 20);
    CHILD_CHECK(attach_once("b-model") == (shared ? -EDQUOT : 0), 21);
    return 0;
}

/* With the daemon started with max-namespaces-per-uid = cap. */
static void check_cap(void)
{
    int ready[2], done[2], status;
    char byte = 0, text[96];

    assert_int_equal(pipe(ready), 0);
    assert_int_equal(pipe(done), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(ready[0]);
        close(done[1]);
        _exit(uid_a_at_cap(ready[1], done[0]));
    }
    close(ready[1]);
    close(done[0]);
    ssize_t got = read(ready[0], &byte, 1);

    /* With uid A at its cap (or failed: then the child's code says why). */
    int root_rc = got == 1 ? attach_once("root-model") : 0;
    int b_status = got == 1 ? test_in_child(uid_b_attaches, NULL) : 0;
    if (got == 1)              /* else the child is gone: no SIGPIPE */
        assert_int_equal(write(done[1], &byte, 1), 1);
    close(ready[0]);
    close(done[1]);
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    CHECK_OK(root_rc);
    assert_int_equal(b_status, 0);
    snprintf(text, sizeof(text), "this %s has attached %d models (max-namespaces-per-uid)",
             shared ? "uid's share group" : "uid", cap);
    assert_true(test_file_contains(d.log, text));
}

static void default_cap_refuses_uid_others_attach(void **state)
{
    (void)state;
    cap = DEFAULT_CAP;
    /* Each model here is one connection, and max-clients-per-uid's default
     * (64) would refuse the 65th before the namespace cap is asked. */
    daemon_start(&d, "--max-clients-per-uid", "128", NULL);
    check_cap();
}

static void configured_cap_refuses_uid_others_attach(void **state)
{
    (void)state;
    cap = 3;
    daemon_start(&d, "--max-namespaces-per-uid", "3", NULL);
    check_cap();
}

/* A share group's members count together: UID_B is refused too. */
static void share_group_counts_together(void **state)
{
    (void)state;
    cap = 2;
    shared = 1;
    daemon_start(&d, "--max-namespaces-per-uid", "2", "--share", "1000,1001", NULL);
    check_cap();
    shared = 0;
}

/* ---- many models in sequence ------------------------------------------------ */

static int uid_a_attaches_many(void *arg)
{
    char name[32];

    (void)arg;
    CHILD_CHECK(test_become_uid(UID_A) == 0, 30);
    for (int i = 0; i < MANY; i++) {
        snprintf(name, sizeof(name), "seq-model-%d", i);
        int rc = attach_once(name);
        if (rc) {
            fprintf(stderr, "model %d: %s\n", i, kvt_strerror(rc));
            return 31;
        }
    }
    return 0;
}

static void many_models_in_sequence_do_not_lock_out_root(void **state)
{
    (void)state;
    daemon_start(&d, NULL);
    assert_int_equal(test_in_child(uid_a_attaches_many, NULL), 0);
    CHECK_OK(attach_once("root-after-many"));
}

/* ---- data outlives a freed entry ------------------------------------------ */

static void store_keep(kvt_client *c, uint16_t *k, uint16_t *v)
{
    for (uint32_t l = 0; l < LAYERS; l++) {
        test_fill(k, KVT_F16, 40, l, 0, T, HEADS, DIM);
        test_fill(v, KVT_F16, 41, l, 0, T, HEADS, DIM);
        CHECK_OK(kvt_store(c, "keep", l, 0, T, k, v));
    }
}

static void freed_namespace_keeps_its_data(void **state)
{
    static uint16_t k[T * HEADS * DIM], v[T * HEADS * DIM];
    static char reply[1 << 20];
    kvt_model first = model("first-model");
    kvt_client *c;
    char name[32];

    (void)state;
    daemon_start(&d, NULL);
    CHECK_OK(kvt_connect(d.socket, &first, &c));
    store_keep(c, k, v);
    kvt_disconnect(c);
    CHECK_OK(admin_request(&d, "{\"cmd\":\"contexts\"}", reply, sizeof(reply)));
    assert_non_null(strstr(reply, "\"name\":\"keep\""));

    for (int i = 0; i < MANY; i++) {
        snprintf(name, sizeof(name), "filler-%d", i);
        CHECK_OK(attach_once(name));
    }
    /* The idle entry of first-model was the oldest: it is gone. */
    CHECK_OK(admin_request(&d, "{\"cmd\":\"namespaces\"}", reply, sizeof(reply)));
    assert_non_null(strstr(reply, "\"name\":\"filler-1099\""));
    assert_null(strstr(reply, "\"name\":\"first-model\""));

    CHECK_OK(kvt_connect(d.socket, &first, &c));
    for (uint32_t l = 0; l < LAYERS; l++) {
        memset(k, 0, sizeof(k));
        memset(v, 0, sizeof(v));
        CHECK_OK(kvt_fetch(c, "keep", l, 0, T, k, v));
        assert_int_equal(test_check(k, KVT_F16, 40, l, 0, T, HEADS, DIM, 0), 0);
        assert_int_equal(test_check(v, KVT_F16, 41, l, 0, T, HEADS, DIM, 0), 0);
    }
    /* Its names went with the entry; a new store lists the context again. */
    CHECK_OK(admin_request(&d, "{\"cmd\":\"contexts\"}", reply, sizeof(reply)));
    assert_null(strstr(reply, "\"name\":\"keep\""));
    store_keep(c, k, v);
    CHECK_OK(admin_request(&d, "{\"cmd\":\"contexts\"}", reply, sizeof(reply)));
    assert_non_null(strstr(reply, "\"name\":\"keep\""));
    kvt_disconnect(c);
}

static int teardown(void **state)
{
    (void)state;
    daemon_cleanup(&d);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(default_cap_refuses_uid_others_attach, teardown),
        cmocka_unit_test_teardown(configured_cap_refuses_uid_others_attach, teardown),
        cmocka_unit_test_teardown(share_group_counts_together, teardown),
        cmocka_unit_test_teardown(many_models_in_sequence_do_not_lock_out_root, teardown),
        cmocka_unit_test_teardown(freed_namespace_keeps_its_data, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
