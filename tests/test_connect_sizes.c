/* test_connect_sizes.c - proves the defaults and refusals a client meets
 * at connect: kvtierd's workers default to the CPUs it may run on (its
 * affinity mask) and --workers still overrides; a region above the daemon's
 * max-client-shm is refused with -EINVAL and a reason, read through
 * kvt_last_error(NULL), that names both sizes; a KVTIER_SHM_BYTES that is
 * not a size is refused, not replaced; kvt_connect_region and kvt_region
 * give the region asked for. */
#include "tests/helpers.h"

#include <sched.h>
#include <stdlib.h>
#include <string.h>

static struct test_daemon d;

static void config_value(const char *key, char *out, size_t len)
{
    char req[128], reply[512];

    snprintf(req, sizeof(req), "{\"cmd\":\"config\",\"op\":\"get\",\"key\":\"%s\"}", key);
    CHECK_OK(admin_request(&d, req, reply, sizeof(reply)));
    const char *v = strstr(reply, "\"value\":\"");
    if (!v)
        fail_msg("config get %s: %s", key, reply);
    v += strlen("\"value\":\"");
    size_t n = strcspn(v, "\"");
    snprintf(out, len, "%.*s", (int)n, v);
}

static void workers_follow_affinity(void **state)
{
    (void)state;
    cpu_set_t all, one;
    char want[16], got[16];

    assert_int_equal(sched_getaffinity(0, sizeof(all), &all), 0);
    /* As many as this process may use (the daemon inherits the mask). */
    daemon_start(&d, NULL);
    config_value("workers", got, sizeof(got));
    snprintf(want, sizeof(want), "%d", CPU_COUNT(&all) > 256 ? 256 : CPU_COUNT(&all));
    assert_string_equal(got, want);
    daemon_stop(&d);
    daemon_cleanup(&d);

    /* Pinned to one CPU: one worker. */
    CPU_ZERO(&one);
    for (int cpu = 0; cpu < CPU_SETSIZE; cpu++)
        if (CPU_ISSET(cpu, &all)) {
            CPU_SET(cpu, &one);
            break;
        }
    assert_int_equal(sched_setaffinity(0, sizeof(one), &one), 0);
    daemon_start(&d, NULL);
    assert_int_equal(sched_setaffinity(0, sizeof(all), &all), 0);
    config_value("workers", got, sizeof(got));
    assert_string_equal(got, "1");
    daemon_stop(&d);
    daemon_cleanup(&d);

    /* The flag beats the default. */
    daemon_start(&d, "--workers", "3", NULL);
    config_value("workers", got, sizeof(got));
    assert_string_equal(got, "3");
    daemon_stop(&d);
    daemon_cleanup(&d);
}

static void region_sizes_and_refusals(void **state)
{
    (void)state;
    kvt_model m = test_model("sizes", 2, 2, 16, KVT_F32, 0);
    kvt_client *c = NULL;
    void *base = NULL;
    size_t bytes = 0;

    daemon_start(&d, "--max-client-shm", "16M", NULL);
    /* The default region (256M) is above 16M. */
    CHECK_RC(kvt_connect(d.socket, &m, &c), -EINVAL);
    assert_null(c);
    const char *why = kvt_last_error(NULL);
    if (!strstr(why, "256M") || !strstr(why, "max-client-shm (16M)"))
        fail_msg("reason does not name both sizes: \"%s\"", why);

    /* Asked for by size, within the limit: that region, and a clean reason. */
    CHECK_OK(kvt_connect_region(d.socket, &m, 16u << 20, &c));
    assert_string_equal(kvt_last_error(NULL), "");
    CHECK_OK(kvt_region(c, &base, &bytes));
    assert_int_equal(bytes, 16u << 20);
    void *p = kvt_alloc(c, 4096);
    assert_true((uint8_t *)p >= (uint8_t *)base && (uint8_t *)p + 4096 <= (uint8_t *)base + bytes);
    CHECK_RC(kvt_region(c, NULL, &bytes), -EINVAL);
    kvt_disconnect(c);
    c = NULL;

    /* KVTIER_SHM_BYTES: a size is used, anything else refused (not 256M). */
    setenv("KVTIER_SHM_BYTES", "8M", 1);
    CHECK_OK(kvt_connect(d.socket, &m, &c));
    CHECK_OK(kvt_region(c, &base, &bytes));
    assert_int_equal(bytes, 8u << 20);
    kvt_disconnect(c);
    c = NULL;
    const char *bad[] = { "8 M", "lots", "0", "-1", "2P", "" };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        setenv("KVTIER_SHM_BYTES", bad[i], 1);
        int rc = kvt_connect(d.socket, &m, &c);
        if (bad[i][0] == '\0') {        /* empty: unset, the default (refused here) */
            assert_int_equal(rc, -EINVAL);
            assert_non_null(strstr(kvt_last_error(NULL), "max-client-shm"));
            continue;
        }
        if (rc != -EINVAL || !strstr(kvt_last_error(NULL), "KVTIER_SHM_BYTES"))
            fail_msg("KVTIER_SHM_BYTES=\"%s\": rc %d, \"%s\"", bad[i], rc, kvt_last_error(NULL));
        assert_null(c);
    }
    unsetenv("KVTIER_SHM_BYTES");
    /* A bad model says so too. */
    m.n_layers = 0;
    CHECK_RC(kvt_connect(d.socket, &m, &c), -EINVAL);
    assert_non_null(strstr(kvt_last_error(NULL), "bad model"));
    daemon_stop(&d);
    daemon_cleanup(&d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(workers_follow_affinity),
        cmocka_unit_test(region_sizes_and_refusals),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
