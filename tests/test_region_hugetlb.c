/* test_region_hugetlb.c - proves that a client cannot crash kvtierd with
 * SIGBUS through a hugetlbfs region. hugetlbfs lets FALLOC_FL_PUNCH_HOLE
 * through F_SEAL_SHRINK, and once the huge-page pool is empty a read of the
 * hole faults. An ATTACH with a sealed MFD_HUGETLB memfd is refused with
 * -EINVAL and a reason naming hugetlbfs; the attack (touch the page, attach,
 * punch the hole, empty the pool, STORE from the hole) leaves the daemon
 * running and answering ("attach first"), and a libkvtier client, whose
 * region is an ordinary memfd, still attaches and round-trips data.
 *
 * The test sets vm.nr_hugepages and restores it. Where the kernel cannot
 * allocate huge pages the refusal is still checked (an unbacked hugetlb
 * memfd can be sized and sealed); only the punch-hole step, which needs a
 * page to punch, is skipped, and the test says so. */
#include "tests/helpers.h"

#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>

#include "proto/proto.h"

#define NR_HUGEPAGES "/proc/sys/vm/nr_hugepages"
#define HEADS 2
#define DIM 16
#define ROW (HEADS * DIM * 4)             /* one f32 token row */

static struct test_daemon d;
static long saved_nr_hugepages = -1;

static long read_long(const char *path)
{
    long v = -1;
    FILE *f = fopen(path, "r");

    if (f && fscanf(f, "%ld", &v) != 1)
        v = -1;
    if (f)
        fclose(f);
    return v;
}

static int write_long(const char *path, long v)
{
    FILE *f = fopen(path, "w");
    int ok = f && fprintf(f, "%ld\n", v) > 0;

    if (f && fclose(f) != 0)
        ok = 0;
    return ok ? 0 : -1;
}

/* A field of /proc/meminfo ("HugePages_Free:"), or -1. */
static long meminfo(const char *field)
{
    char line[256];
    long v = -1;
    FILE *f = fopen("/proc/meminfo", "r");

    while (f && fgets(line, sizeof(line), f))
        if (strncmp(line, field, strlen(field)) == 0)
            v = strtol(line + strlen(field), NULL, 10);
    if (f)
        fclose(f);
    return v;
}

static void restore_nr_hugepages(void)
{
    if (saved_nr_hugepages >= 0 && write_long(NR_HUGEPAGES, saved_nr_hugepages))
        fprintf(stderr, "cannot restore %s to %ld\n", NR_HUGEPAGES, saved_nr_hugepages);
}

static struct kvt_attach_req attach_req(uint64_t region_bytes)
{
    struct kvt_attach_req a;

    memset(&a, 0, sizeof(a));
    proto_hdr(&a.hdr, KVT_OP_ATTACH, sizeof(a), 1);
    a.n_layers = 1;
    a.n_kv_heads = HEADS;
    a.head_dim = DIM;
    a.dtype = KVT_F32;
    a.chunk_tokens = 16;
    a.name_len = 4;
    memcpy(a.name, "huge", 4);
    a.region_bytes = region_bytes;
    return a;
}

/* STORE of one token of layer 0, K and V from the first page of the region. */
static size_t store_req(uint8_t *buf)
{
    struct kvt_data_req *r = (struct kvt_data_req *)buf;
    size_t len = sizeof(*r) + 8 + sizeof(struct kvt_wire_span);

    memset(buf, 0, len);
    proto_hdr(&r->hdr, KVT_OP_STORE, (uint32_t)len, 2);
    r->addr = KVT_ADDR_NAMED;
    r->n_spans = 1;
    r->name_len = 3;
    memcpy(buf + sizeof(*r), "ctx", 3);
    struct kvt_wire_span *s = (void *)(buf + sizeof(*r) + 8);
    *s = (struct kvt_wire_span){ .layer = 0, .n_tokens = 1, .k_off = 0, .v_off = ROW };
    return len;
}

static void daemon_alive(void)
{
    int st;

    if (waitpid(d.pid, &st, WNOHANG) == d.pid) {
        d.pid = 0;
        fail_msg("kvtierd died: %s (log %s)",
                 WIFSIGNALED(st) ? strsignal(WTERMSIG(st)) : "exited", d.log);
    }
}

static void hugetlb_region_is_refused_and_cannot_fault(void **state)
{
    (void)state;
    long page_bytes = meminfo("Hugepagesize:") * 1024;
    struct kvt_reply rep;
    uint8_t buf[128];
    uint8_t *p = MAP_FAILED;

    int mfd = memfd_create("kvtier-test-huge", MFD_CLOEXEC | MFD_ALLOW_SEALING | MFD_HUGETLB);
    if (mfd < 0 || page_bytes <= 0) {
        fprintf(stderr, "SKIP: this kernel has no hugetlbfs memfds (%s)\n", strerror(errno));
        skip();
    }
    /* A page in the pool, if the kernel can find one. */
    saved_nr_hugepages = read_long(NR_HUGEPAGES);
    long in_use = meminfo("HugePages_Total:") - meminfo("HugePages_Free:");
    if (saved_nr_hugepages >= 0)
        write_long(NR_HUGEPAGES, in_use + 1);
    int have_page = meminfo("HugePages_Free:") >= 1;

    assert_int_equal(ftruncate(mfd, page_bytes), 0);
    assert_int_equal(fcntl(mfd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL), 0);
    if (have_page) {
        p = mmap(NULL, (size_t)page_bytes, PROT_READ | PROT_WRITE, MAP_SHARED, mfd, 0);
        have_page = p != MAP_FAILED;
    }
    if (have_page)
        memset(p, 1, (size_t)page_bytes);     /* the page the daemon would map */
    else
        fprintf(stderr, "SKIP (part): no huge page could be allocated; checking the "
                        "refusal of an unbacked hugetlb memfd, not the punch-hole attack\n");

    int sock = test_raw_connect(d.socket);
    assert_true(sock >= 0);
    struct kvt_attach_req a = attach_req((uint64_t)page_bytes);
    CHECK_OK(test_raw_send(sock, &a, sizeof(a), &mfd, 1));
    CHECK_OK(test_raw_reply(sock, &rep, 30000));
    if (rep.status != -EINVAL || !strstr(rep.reason, "hugetlbfs"))
        fail_msg("hugetlb attach: status %d (%s) \"%s\", want -EINVAL naming hugetlbfs",
                 rep.status, kvt_strerror(rep.status), rep.reason);

    if (have_page) {
        /* The attack: free the page under the (would-be) mapping and leave
         * the pool with no page to fault in. */
        assert_int_equal(fallocate(mfd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0,
                                   page_bytes), 0);
        munmap(p, (size_t)page_bytes);
        in_use = meminfo("HugePages_Total:") - meminfo("HugePages_Free:");
        assert_int_equal(write_long(NR_HUGEPAGES, in_use), 0);
        assert_int_equal(meminfo("HugePages_Free:"), 0);
    }
    size_t len = store_req(buf);
    CHECK_OK(test_raw_send(sock, buf, len, NULL, 0));
    int rc = test_raw_reply(sock, &rep, 30000);
    daemon_alive();
    CHECK_OK(rc);
    assert_int_equal(rep.status, -ENOTCONN);
    restore_nr_hugepages();
    close(sock);
    close(mfd);

    /* Ordinary memfds, as libkvtier makes them, still attach and work. */
    kvt_model m = test_model("huge-ok", 1, HEADS, DIM, KVT_F32, 16);
    float k[HEADS * DIM], v[HEADS * DIM], k2[HEADS * DIM], v2[HEADS * DIM];
    kvt_client *c;
    for (int i = 0; i < HEADS * DIM; i++) {
        k[i] = (float)i;
        v[i] = (float)-i;
    }
    CHECK_OK(kvt_connect(d.socket, &m, &c));
    CHECK_OK(kvt_store(c, "ok", 0, 0, 1, k, v));
    CHECK_OK(kvt_fetch(c, "ok", 0, 0, 1, k2, v2));
    assert_memory_equal(k, k2, sizeof(k));
    assert_memory_equal(v, v2, sizeof(v));
    kvt_disconnect(c);
    daemon_alive();
}

static int start_daemon(void **state)
{
    (void)state;
    daemon_start(&d, "--quant", "none", NULL);
    return 0;
}

static int stop_daemon(void **state)
{
    (void)state;
    restore_nr_hugepages();
    if (d.pid > 0)
        daemon_stop(&d);
    daemon_cleanup(&d);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(hugetlb_region_is_refused_and_cannot_fault),
    };
    return cmocka_run_group_tests(tests, start_daemon, stop_daemon);
}
