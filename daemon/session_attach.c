/* session_attach.c - a session's ATTACH: the client's region mapped (only
 * memory that cannot fault under the daemon) and its model's namespace. */
#include "daemon/session.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/magic.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include "daemon/log.h"

/* The daemon reads and writes the client's region through its own mapping,
 * and a fault there is SIGBUS for the whole daemon, so only memory that
 * cannot fault under us is accepted: a shmem memfd sealed against shrinking.
 *  - F_SEAL_SHRINK: no ftruncate below the size we map (reads past the end
 *    of a file are SIGBUS).
 *  - shmem (tmpfs), nothing else: hugetlbfs lets FALLOC_FL_PUNCH_HOLE
 *    through F_SEAL_SHRINK, and touching the hole needs a page from the
 *    huge-page pool, which the client (or anyone) can have emptied: SIGBUS.
 *    Disk files fault on I/O errors and truncation by another path.
 * What shmem still lets the client do, and why it cannot fault our reads:
 *  - punch a hole: the hole reads back as zeros; the next touch allocates
 *    a fresh page. The client loses only its own data.
 *  - make that allocation fail: lack of memory is ENOMEM, which the kernel
 *    handles as out-of-memory (reclaim, the OOM killer), not SIGBUS. There
 *    is no ENOSPC: memfds live on the kernel's internal shmem mount, which
 *    has no size limit, and only memfd_create makes sealable shmem files
 *    (files on a size-limited tmpfs such as /dev/shm are born with
 *    F_SEAL_SEAL, so they never carry F_SEAL_SHRINK).
 *  - one gap is left: under strict overcommit (vm.overcommit_memory = 2) a
 *    memfd page is charged when first touched, and at the commit limit that
 *    charge fails as SIGBUS. operations.md says not to run kvtierd so.
 * Swap-in I/O errors and poisoned memory fault any process; a client
 * cannot cause them (MADV_HWPOISON needs CAP_SYS_ADMIN). */
static int map_region(struct kvt_session *s, int fd, uint64_t bytes, const char **why)
{
    struct stat st;
    struct statfs fs = { 0 };
    int seals = fcntl(fd, F_GET_SEALS);

    if (fstatfs(fd, &fs) < 0 || fs.f_type != TMPFS_MAGIC) {
        *why = fs.f_type == HUGETLBFS_MAGIC
                   ? "region is on hugetlbfs, whose pages can vanish under the daemon: "
                     "pass a plain memfd"
                   : "region must be a memfd (shmem)";
        return -EINVAL;
    }
    if (seals < 0 || !(seals & F_SEAL_SHRINK)) {
        *why = "region must be a memfd sealed with F_SEAL_SHRINK";
        return -EINVAL;
    }
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || (uint64_t)st.st_size != bytes) {
        *why = "region size does not match the attach request";
        return -EINVAL;
    }
    if (bytes > s->srv->cfg.max_client_shm) {
        *why = "region larger than max-client-shm";
        return -EINVAL;
    }
    void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) {
        *why = "cannot map the region";
        return -errno;
    }
    s->region = p;
    s->region_bytes = bytes;
    return 0;
}

void session_attach(struct kvt_session *s, int fd)
{
    const struct kvt_attach_req *a = (const void *)s->buf;
    const char *why = NULL;
    struct kvt_attach_info info = { 0 };
    char name[KVT_NAME_MAX + 1];
    int rc = proto_parse_attach(s->buf, a->hdr.len, &why);

    if (rc)
        goto out;
    if (s->ns) {
        rc = -EALREADY;
        why = "already attached";
        goto out;
    }
    if (fd < 0) {
        rc = -EINVAL;
        why = "attach must pass the region fd (SCM_RIGHTS)";
        goto out;
    }
    uint32_t chunk = a->chunk_tokens ? a->chunk_tokens : s->srv->cfg.chunk_tokens;
    if (chunk > KVT_CHUNK_MAX_TOKENS) {
        rc = -EINVAL;
        why = "chunk_tokens above 4096";
        goto out;
    }
    rc = map_region(s, fd, a->region_bytes, &why);
    if (rc)
        goto out;
    memcpy(name, a->name, a->name_len);
    name[a->name_len] = '\0';
    uint32_t max_ns = s->srv->cfg.max_ns_per_uid;
    rc = registry_attach(&s->srv->reg, s->domain, name, a->n_layers, a->n_kv_heads,
                         a->head_dim, chunk, max_ns, &s->ns);
    if (rc) {
        /* A share group's members count together: say whose models these are. */
        snprintf(s->reason, sizeof(s->reason),
                 "this %s has attached %u models (max-namespaces-per-uid)",
                 registry_is_shared(&s->srv->cfg, s->cred.uid) ? "uid's share group" : "uid",
                 (unsigned)max_ns);
        why = rc == -EDQUOT ? s->reason : "out of memory for a new namespace";
        munmap(s->region, s->region_bytes);
        s->region = NULL;
        goto out;
    }
    s->elem = (enum kvt_elem)a->dtype;
    s->attach_deadline_ns = 0;
    info.chunk_tokens = chunk;
    info.max_spans = s->srv->cfg.max_spans;
    info.max_frame = s->srv->cfg.max_frame;
    info.quant = s->srv->cfg.quant_none;
    info.ns_id = s->ns->id;
    log_info("client pid %d uid %u attached: model %s (%u layers, %u heads, dim %u, chunk %u)",
             (int)s->cred.pid, (unsigned)s->cred.uid, name, a->n_layers,
             a->n_kv_heads, a->head_dim, chunk);
out:
    if (rc)
        log_debug("client pid %d uid %u: attach refused: %s", (int)s->cred.pid,
                 (unsigned)s->cred.uid, why ? why : strerror(-rc));
    if (fd >= 0)
        close(fd);     /* the mapping holds the memory; the fd is not needed */
    session_send_reply(s, KVT_OP_ATTACH, a->hdr.seq, rc, 0, rc ? NULL : &info, why);
    session_rearm(s);
}
