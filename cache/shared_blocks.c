/* shared_blocks.c - chunk blocks that clients of one sharing domain may map
 * read-only (blocks.h, "shared blocks").
 *
 * Each shared block is a memfd of its own: the block's data, then one page
 * holding its struct kvt_block_tail. The daemon maps it shared and writable
 * and then seals it with F_SEAL_FUTURE_WRITE, so that a writable mapping,
 * write() or hole punch by anyone else fails while the daemon's own mapping
 * keeps working. A registry of slots (id -> fd and domain) answers
 * KVT_OP_BLOCKS; the id carries its slot in the low bits and a serial in
 * the high ones, so an id is never handed out twice. A block that changes
 * domain gets a new memfd: clients of the old domain keep the old pages
 * (their mapping, their view of what was theirs) and never see the new
 * domain's rows.
 */
#include "blocks.h"
#include "proto/proto.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define SLOT_BITS 24
#define SLOT_MASK ((UINT64_C(1) << SLOT_BITS) - 1)
#define PAGE 4096

struct slot {
    uint64_t id;                     /* 0: free */
    int fd;
    uint32_t domain;
};

static bool shared_on;
static uint64_t max_shared;
static pthread_mutex_t reg_mu = PTHREAD_MUTEX_INITIALIZER;
static struct slot *slots;
static uint32_t n_slots, cap_slots;
static uint32_t *free_slots;         /* stack of free slot numbers */
static uint32_t n_free;
static uint64_t serial;
static atomic_ulong live, fallbacks;

void blocks_set_shared(bool on, uint64_t max_blocks)
{
    shared_on = on;
    max_shared = max_blocks;
}

bool blocks_shared(void)
{
    return shared_on;
}

uint64_t blocks_shared_count(void)
{
    return atomic_load(&live);
}

uint64_t blocks_share_fallbacks(void)
{
    return atomic_load(&fallbacks);
}

static size_t data_span(size_t bytes)
{
    return (bytes + PAGE - 1) & ~(size_t)(PAGE - 1);
}

size_t block_map_len(size_t bytes)
{
    return shared_on ? data_span(bytes) + PAGE : bytes;
}

static struct kvt_block_tail *tail_of(const void *p, size_t bytes)
{
    return (struct kvt_block_tail *)((char *)p + data_span(bytes));
}

/* A slot for fd: its id, or 0 when the registry is full or out of memory. */
static uint64_t slot_add(int fd, uint32_t domain, uint32_t *slot_out)
{
    uint32_t slot;
    uint64_t id = 0;

    pthread_mutex_lock(&reg_mu);
    if (atomic_load(&live) >= max_shared)
        goto out;
    if (n_free) {
        slot = free_slots[--n_free];
    } else {
        if (n_slots == cap_slots) {
            uint32_t cap = cap_slots ? cap_slots * 2 : 1024;
            struct slot *ns = cap <= SLOT_MASK ? realloc(slots, cap * sizeof(*ns)) : NULL;
            uint32_t *nf = ns ? realloc(free_slots, cap * sizeof(*nf)) : NULL;
            if (ns)
                slots = ns;
            if (!nf)
                goto out;
            free_slots = nf;
            cap_slots = cap;
        }
        slot = n_slots++;
    }
    id = (++serial << SLOT_BITS) | slot;
    slots[slot] = (struct slot){ .id = id, .fd = fd, .domain = domain };
    *slot_out = slot;
out:
    pthread_mutex_unlock(&reg_mu);
    return id;
}

static void slot_drop(uint32_t slot, uint64_t id)
{
    int fd = -1;

    pthread_mutex_lock(&reg_mu);
    if (slot < n_slots && slots[slot].id == id) {
        fd = slots[slot].fd;
        slots[slot].id = 0;
        free_slots[n_free++] = slot;
    }
    pthread_mutex_unlock(&reg_mu);
    if (fd >= 0)
        close(fd);
}

int block_fd(uint64_t id, uint32_t domain)
{
    uint64_t slot = id & SLOT_MASK;
    int fd = -ENOENT;

    pthread_mutex_lock(&reg_mu);
    if (id && slot < n_slots && slots[slot].id == id && slots[slot].domain == domain) {
        fd = fcntl(slots[slot].fd, F_DUPFD_CLOEXEC, 0);
        if (fd < 0)
            fd = -errno;
    }
    pthread_mutex_unlock(&reg_mu);
    return fd;
}

/* Map a new block of bytes at `at` (MAP_FIXED, replacing what is there) or
 * anywhere (at == NULL): a sealed memfd, or private memory when no memfd
 * can be had. NULL if neither. */
void *block_map_shared(size_t bytes, bool populate, uint32_t domain, void *at)
{
    size_t len = block_map_len(bytes);
    int flags = (at ? MAP_FIXED : 0) | (populate ? MAP_POPULATE : 0);
    int fd = memfd_create("kvtier-block", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    uint32_t slot = 0;
    uint64_t id = 0;
    void *p = MAP_FAILED;

    if (fd >= 0 && ftruncate(fd, (off_t)len) == 0)
        p = mmap(at, len, PROT_READ | PROT_WRITE, MAP_SHARED | flags, fd, 0);
    if (p != MAP_FAILED &&
        fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_FUTURE_WRITE | F_SEAL_SEAL) == 0)
        id = slot_add(fd, domain, &slot);
    if (!id) {
        /* No fd, no seal or no slot: a private block, which nobody maps. */
        if (p != MAP_FAILED && !at)
            munmap(p, len);
        if (fd >= 0)
            close(fd);
        atomic_fetch_add(&fallbacks, 1);
        p = mmap(at, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | flags, -1, 0);
        if (p == MAP_FAILED)
            return NULL;
        return p;                    /* its tail stays zero: magic 0, not shared */
    }
    struct kvt_block_tail *t = tail_of(p, bytes);
    *t = (struct kvt_block_tail){ .magic = KVT_BLOCK_MAGIC, .id = id, .gen = 2,
                                  .data_bytes = bytes, .domain = domain, .slot = slot };
    atomic_fetch_add(&live, 1);
    return p;
}

static bool is_shared(const void *p, size_t bytes)
{
    return shared_on && p && block_poolable(bytes) && tail_of(p, bytes)->magic == KVT_BLOCK_MAGIC;
}

void block_bump(void *p, size_t bytes)
{
    if (!is_shared(p, bytes))
        return;
    __atomic_fetch_add(&tail_of(p, bytes)->gen, 2, __ATOMIC_RELAXED);
    /* Seen before any store that follows, non-temporal ones included. */
    atomic_thread_fence(memory_order_seq_cst);
}

int block_locate(const void *p, size_t bytes, uint64_t *id, uint64_t *gen)
{
    if (!is_shared(p, bytes))
        return -ENOENT;
    const struct kvt_block_tail *t = tail_of(p, bytes);
    *id = t->id;
    *gen = __atomic_load_n(&t->gen, __ATOMIC_ACQUIRE);
    return 0;
}

/* Let go of a shared block's memfd: the tail says dead (and gen moves) for
 * clients that still map it; their pages go when their mappings do. */
void block_unshare(void *p, size_t bytes)
{
    if (!is_shared(p, bytes))
        return;
    struct kvt_block_tail *t = tail_of(p, bytes);
    __atomic_fetch_add(&t->gen, 2, __ATOMIC_RELAXED);
    __atomic_store_n(&t->dead, 1, __ATOMIC_RELEASE);
    slot_drop(t->slot, t->id);
    atomic_fetch_sub(&live, 1);
}

void *block_claim(void *p, size_t bytes, uint32_t domain)
{
    if (!shared_on || !block_poolable(bytes))
        return p;
    struct kvt_block_tail *t = tail_of(p, bytes);
    if (t->magic == KVT_BLOCK_MAGIC && t->domain == domain) {
        block_bump(p, bytes);
        return p;
    }
    /* Another domain's (or a private) block: new pages in its place, so
     * that whoever mapped the old memfd keeps seeing only the old rows. */
    block_unshare(p, bytes);
    void *q = block_map_shared(bytes, true, domain, p);
    if (!q)
        munmap(p, block_map_len(bytes));
    return q;
}
