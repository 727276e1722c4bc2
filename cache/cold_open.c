/* cold_open.c - the cold file: create, format and check it, rebuild the
 * index from its regions at open (recovery), and close. */
#include <errno.h>
#include <libgen.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <syslog.h>
#include <unistd.h>

#include "cold_int.h"

/* ---- recovery --------------------------------------------------------- */

/* Make sure bytes [0, need) of the region are in buf. */
static int scan_load(struct kvt_cold *c, uint32_t r, uint8_t *buf, uint32_t *loaded,
                     uint64_t need)
{
    while (*loaded < need) {
        uint32_t step = (uint32_t)min_u64(SCAN_STEP, c->region_bytes - *loaded);
        int rc = c->io->ops->read(c->io, buf + *loaded, step, cold_region_base(c, r) + *loaded);
        if (rc < 0) {
            cold_io_error_locked(c, rc, "recovery read");
            return rc;
        }
        *loaded += step;
    }
    return 0;
}

static bool all_zero(const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i])
            return false;
    return true;
}

/* Tombstones met during recovery are applied once at the end: every entry
 * is checked against the newest tombstone of its object, of its namespace
 * and of all namespaces, O((n + t) log t) rather than a scan of the index
 * per tombstone. That equals applying them in log order, because the index
 * keeps only the newest record of each key and a tombstone drops every
 * record older than itself. */
struct tomb {
    uint64_t ns, hi, lo, seq;          /* hi = lo = 0 for a namespace */
    uint8_t kind;
};

struct recovery {
    struct tomb *tombs;
    size_t n, cap;
};

static int tomb_cmp(const void *a, const void *b)
{
    const struct tomb *x = a, *y = b;

    if (x->kind != y->kind)
        return x->kind < y->kind ? -1 : 1;
    if (x->ns != y->ns)
        return x->ns < y->ns ? -1 : 1;
    if (x->hi != y->hi)
        return x->hi < y->hi ? -1 : 1;
    return x->lo < y->lo ? -1 : x->lo > y->lo;
}

static void tomb_add(struct kvt_cold *c, struct recovery *rv, const struct cold_record_header *h)
{
    bool object = h->kind == COLD_REC_TOMB_OBJECT;

    if (rv->n == rv->cap) {
        size_t cap = rv->cap ? rv->cap * 2 : 256;
        struct tomb *t = realloc(rv->tombs, cap * sizeof(*t));
        if (!t) {
            cold_index_drop_matching(c, h->kind, &h->key, h->seq, NULL);   /* slower, same result */
            return;
        }
        rv->tombs = t;
        rv->cap = cap;
    }
    rv->tombs[rv->n++] = (struct tomb){
        .kind = h->kind, .ns = h->key.ns_id, .seq = h->seq,
        .hi = object ? h->key.obj_hi : 0, .lo = object ? h->key.obj_lo : 0,
    };
}

/* Seq of the newest tombstone (kind, ns, hi, lo), 0 if none. */
static uint64_t tomb_seq(const struct recovery *rv, uint8_t kind, uint64_t ns,
                         uint64_t hi, uint64_t lo)
{
    struct tomb key = { .kind = kind, .ns = ns, .hi = hi, .lo = lo };
    const struct tomb *t = bsearch(&key, rv->tombs, rv->n, sizeof(key), tomb_cmp);

    return t ? t->seq : 0;
}

static void tombs_apply(struct kvt_cold *c, struct recovery *rv)
{
    size_t kept = 0;
    uint64_t all;

    if (rv->n == 0)
        return;
    qsort(rv->tombs, rv->n, sizeof(*rv->tombs), tomb_cmp);
    for (size_t i = 0; i < rv->n; i++) {        /* keep the newest of each */
        struct tomb *last = kept ? &rv->tombs[kept - 1] : NULL;
        if (last && tomb_cmp(last, &rv->tombs[i]) == 0) {
            if (rv->tombs[i].seq > last->seq)
                last->seq = rv->tombs[i].seq;
        } else {
            rv->tombs[kept++] = rv->tombs[i];
        }
    }
    rv->n = kept;
    all = tomb_seq(rv, COLD_REC_TOMB_NAMESPACE, 0, 0, 0);
    for (uint64_t i = 0; i < c->n_buckets; i++) {
        struct cold_entry *e = c->buckets[i], *next;
        for (; e; e = next) {
            const struct kvt_chunk_key *k = &e->key;
            next = e->hash_next;
            if (e->seq < all ||
                e->seq < tomb_seq(rv, COLD_REC_TOMB_NAMESPACE, k->ns_id, 0, 0) ||
                e->seq < tomb_seq(rv, COLD_REC_TOMB_OBJECT, k->ns_id, k->obj_hi, k->obj_lo))
                cold_index_remove(c, e);
        }
    }
}

/* A name record whose checksum holds but whose block is not a name's (a
 * bug, or bytes crafted with the seed) is skipped and counted: its
 * context is still served, only not listed by name. */
static void replay_name(struct kvt_cold *c, const struct cold_record_header *h,
                        const uint8_t *rec, uint64_t off, uint32_t n, uint32_t r)
{
    struct kvt_cold_name name;
    struct cold_entry *e;

    if (cold_name_decode(h, rec + REC_HDR, &name)) {
        /* The first is logged here, a total at the end of recovery. */
        if (c->st.names_skipped++ == 0)
            cold_log(c, LOG_WARNING, "cold: malformed name record at offset %llu of %s "
                     "skipped; its context is served but not listed by name",
                     (unsigned long long)off, c->path);
        return;
    }
    e = calloc(1, sizeof(*e));
    if (e)
        e->name = malloc(h->raw_len);
    if (!e || !e->name) {
        cold_entry_free(e);
        cold_log(c, LOG_ERR, "cold: out of memory while recovering; name record skipped");
        return;
    }
    memcpy(e->name, rec + REC_HDR, h->raw_len);
    e->key = h->key;
    e->off = off;
    e->seq = h->seq;
    e->rec_bytes = n;
    e->raw_len = h->raw_len;
    e->region = r;
    cold_index_put(c, e);
}

static void replay(struct kvt_cold *c, struct recovery *rv, const struct cold_record_header *h,
                   const uint8_t *rec, uint64_t off, uint32_t n, uint32_t r)
{
    struct cold_entry *e;

    if (h->seq >= c->next_record_seq)
        c->next_record_seq = h->seq + 1;
    if (h->kind == COLD_REC_TOMB_OBJECT || h->kind == COLD_REC_TOMB_NAMESPACE) {
        tomb_add(c, rv, h);
        return;
    }
    if (h->kind == COLD_REC_NAME) {
        replay_name(c, h, rec, off, n, r);
        return;
    }
    e = calloc(1, sizeof(*e));
    if (!e) {
        cold_log(c, LOG_ERR, "cold: out of memory while recovering; record skipped");
        return;
    }
    e->key = h->key;
    e->off = off;
    e->seq = h->seq;
    e->rec_bytes = n;
    e->raw_len = h->raw_len;
    e->leading_tokens = chunk_bits_leading(rec + REC_HDR, h->shape.tokens);
    e->region = r;
    cold_index_put(c, e);
}

/* Replay region r's records in log order until its log ends. */
static void scan_region(struct kvt_cold *c, struct recovery *rv, uint32_t r, uint8_t *buf)
{
    uint32_t loaded = 0;
    uint64_t p = COLD_BLOCK;

    while (p + REC_HDR <= c->region_bytes && scan_load(c, r, buf, &loaded, p + REC_HDR) == 0) {
        struct cold_record_header h;
        int64_t n;

        memcpy(&h, buf + p, REC_HDR);
        if (h.magic != COLD_RECORD_MAGIC) {
            uint64_t next = round_up(p, COLD_BLOCK);
            if (next != p && scan_load(c, r, buf, &loaded, next) == 0 &&
                all_zero(buf + p, next - p)) {
                p = next;              /* padding after a sync */
                continue;
            }
            break;                     /* the end of this region's log */
        }
        if (h.region_seq != c->regions[r].seq)
            break;                     /* left from an older use of the region */
        n = cold_record_check(&h, c->regions[r].version, c->region_bytes - p);
        if (n < 0 || scan_load(c, r, buf, &loaded, p + (uint64_t)n) < 0) {
            c->st.records_torn++;
            c->st.checksum_failures++;
            cold_log_burst(c, LOG_WARNING, "cold: torn record in region %u at offset %llu "
                           "of %s; the rest of the region is skipped", r, (unsigned long long)p, c->path);
            break;
        }
        if (!cold_record_sum_ok(c, buf + p, (uint32_t)n)) {
            /* The header is whole and of this region's use, so its length
             * can be trusted to find the next record: one corrupt record
             * (a flipped bit in its data) costs only itself. A torn tail
             * after a crash ends here too, at the garbage that follows. */
            c->st.records_torn++;
            c->st.checksum_failures++;
            cold_log_burst(c, LOG_WARNING, "cold: checksum failure in the record at offset %llu "
                           "of region %u of %s; record dropped", (unsigned long long)p, r, c->path);
            p += (uint64_t)n;
            continue;
        }
        replay(c, rv, &h, buf + p, cold_region_base(c, r) + p, (uint32_t)n, r);
        p += (uint64_t)n;
    }
}

/* A region header is never newer than its file's (cold_format.h): one that
 * is was not written by a kvtierd into this file as it stands. */
static bool region_header_ok(const struct kvt_cold *c, const struct cold_region_header *h,
                             uint32_t r)
{
    return memcmp(h->magic, COLD_REGION_MAGIC, 8) == 0 &&
           h->version >= COLD_FORMAT_VERSION_MIN && h->version <= c->file_version &&
           h->index == r && h->seq >= 1 &&
           memcmp(h->file_uuid, c->uuid, sizeof(c->uuid)) == 0 &&
           h->checksum == XXH3_64bits_withSeed(h, offsetof(struct cold_region_header, checksum),
                                              c->seed);
}

struct region_order {
    uint64_t seq;
    uint32_t r;
};

static int region_order_cmp(const void *a, const void *b)
{
    const struct region_order *x = a, *y = b;
    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

/* Rebuild the index: regions in sequence order, records in log order, so
 * newer records replace older ones and tombstones drop what precedes them.
 * Appending resumes in a fresh region after the newest one. */
static int recover(struct kvt_cold *c)
{
    struct region_order *order = calloc(c->n_regions, sizeof(*order));
    struct recovery rv = { 0 };
    uint8_t *buf = NULL;
    uint32_t used = 0;
    int rc = 0;

    if (!order || posix_memalign((void **)&buf, COLD_BLOCK, COLD_BLOCK) != 0) {
        rc = -ENOMEM;
        goto out;
    }
    for (uint32_t r = 0; r < c->n_regions; r++) {
        struct cold_region_header h;
        rc = c->io->ops->read(c->io, buf, COLD_BLOCK, cold_region_base(c, r));
        if (rc < 0) {
            cold_io_error_locked(c, rc, "recovery read");   /* open is single-threaded */
            rc = 0;
            continue;
        }
        memcpy(&h, buf, sizeof(h));
        if (!region_header_ok(c, &h, r))
            continue;                  /* never used, or its header was torn */
        c->regions[r].seq = h.seq;
        c->regions[r].version = h.version;
        order[used++] = (struct region_order){ h.seq, r };
    }
    qsort(order, used, sizeof(*order), region_order_cmp);
    free(buf);
    buf = NULL;
    if (used > 0 && posix_memalign((void **)&buf, COLD_BLOCK, c->region_bytes) != 0) {
        rc = -ENOMEM;
        goto out;
    }
    for (uint32_t i = 0; i < used; i++) {
        scan_region(c, &rv, order[i].r, buf);
        if (order[i].seq >= c->next_region_seq)
            c->next_region_seq = order[i].seq + 1;
    }
    tombs_apply(c, &rv);
    if (c->st.names_skipped > 1)
        cold_log(c, LOG_WARNING, "cold: %llu malformed name records skipped in %s",
                 (unsigned long long)c->st.names_skipped, c->path);
    c->next_region = used ? (order[used - 1].r + 1) % c->n_regions : 0;
    c->st.records_recovered = c->n_entries - c->n_names;
    c->err_burst = false;              /* what open found does not mute what follows */
out:
    free(rv.tombs);
    free(buf);
    free(order);
    return rc;
}

/* ---- open and close --------------------------------------------------- */

static int config_check(struct kvt_cold *c, const struct kvt_cold_config *cfg)
{
    uint64_t region = cfg->region_bytes ? cfg->region_bytes : DEFAULT_REGION_BYTES;
    uint64_t wbuf = cfg->write_buffer_bytes ? cfg->write_buffer_bytes : DEFAULT_WBUF_BYTES;
    uint64_t n;

    if (!cfg->path || region < MIB || region > MAX_REGION_BYTES || (region & (region - 1)) ||
        wbuf < MIN_WBUF_BYTES || (wbuf & (wbuf - 1)) || cfg->write_buffers > MAX_WBUFS ||
        cfg->bytes < COLD_BLOCK)
        return -EINVAL;
    n = (cfg->bytes - COLD_BLOCK) / region;
    if (n < 2 || n > UINT32_MAX)
        return -EINVAL;
    c->region_bytes = (uint32_t)region;
    c->n_regions = (uint32_t)n;
    c->file_bytes = COLD_BLOCK + n * region;
    c->max_record = c->region_bytes - COLD_BLOCK;
    c->wbuf_bytes = (uint32_t)min_u64(wbuf, region);
    c->n_wbufs = cfg->write_buffers ? cfg->write_buffers : DEFAULT_WBUFS;
    return 0;
}

/* One block of fd at off. On c->fd, falls back from O_DIRECT if the file
 * system accepted the flag at open but refuses it on I/O (EINVAL): this is
 * the first I/O of every open, so the backends never see that refusal. */
static int block_io(struct kvt_cold *c, int fd, void *block, uint64_t off, bool write)
{
    for (;;) {
        ssize_t n = write ? pwrite(fd, block, COLD_BLOCK, (off_t)off)
                          : pread(fd, block, COLD_BLOCK, (off_t)off);
        if (n == COLD_BLOCK)
            return 0;
        if (n >= 0)
            return -EINVAL;            /* shorter than a header: not our file */
        if (errno == EINTR)
            continue;
        if (errno != EINVAL || fd != c->fd || !c->direct)
            return -errno;
        fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_DIRECT);
        c->direct = false;
        cold_log(c, LOG_WARNING, "cold: %s refuses O_DIRECT; using buffered I/O", c->path);
    }
}

/* Preallocate fd to the configured size and write a new file header. */
static int file_format(struct kvt_cold *c, int fd)
{
    struct cold_file_header h = { .magic = COLD_FILE_MAGIC };
    uint8_t *block = NULL;
    int rc;

    h.version = COLD_FORMAT_VERSION;
    h.block_bytes = COLD_BLOCK;
    h.region_bytes = c->region_bytes;
    h.file_bytes = c->file_bytes;
    if (getrandom(h.uuid, sizeof(h.uuid), 0) != sizeof(h.uuid) ||
        getrandom(&h.seed, sizeof(h.seed), 0) != sizeof(h.seed))
        return -EIO;
    h.created_unix = (uint64_t)time(NULL);
    h.checksum = XXH3_64bits(&h, offsetof(struct cold_file_header, checksum));

    if (fallocate(fd, 0, 0, (off_t)c->file_bytes) < 0) {
        /* No fallocate on this file system: a sparse file still works. */
        if (errno != EOPNOTSUPP && errno != ENOSYS)
            return -errno;
        if (ftruncate(fd, (off_t)c->file_bytes) < 0)
            return -errno;
    }
    if (posix_memalign((void **)&block, COLD_BLOCK, COLD_BLOCK) != 0)
        return -ENOMEM;
    memset(block, 0, COLD_BLOCK);
    memcpy(block, &h, sizeof(h));
    rc = block_io(c, fd, block, 0, true);
    if (rc == 0 && fdatasync(fd) < 0)
        rc = -errno;
    free(block);
    return rc;
}

/* A missing file is built under a temporary name and renamed into place,
 * so a crash while formatting never leaves a header-less file at path. */
static int file_create(struct kvt_cold *c)
{
    char *tmp = NULL, *dir = NULL;
    int fd = -1, dfd = -1, rc;

    if (asprintf(&tmp, "%s.new", c->path) < 0) {
        tmp = NULL;
        rc = -ENOMEM;
        goto out;
    }
    fd = open(tmp, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        rc = -errno;
        goto out;
    }
    rc = file_format(c, fd);
    if (rc == 0 && rename(tmp, c->path) < 0)
        rc = -errno;
    if (rc < 0) {
        unlink(tmp);
        goto out;
    }
    dir = strdup(c->path);
    if (dir && (dfd = open(dirname(dir), O_RDONLY | O_DIRECTORY | O_CLOEXEC)) >= 0)
        fsync(dfd);
out:
    if (dfd >= 0)
        close(dfd);
    if (fd >= 0)
        close(fd);
    free(dir);
    free(tmp);
    return rc;
}

/* Read and check the file header against the configuration; touches nothing. */
static int file_check(struct kvt_cold *c, const struct stat *st)
{
    struct cold_file_header h;
    uint8_t *block = NULL;
    int rc;

    if (posix_memalign((void **)&block, COLD_BLOCK, COLD_BLOCK) != 0)
        return -ENOMEM;
    rc = block_io(c, c->fd, block, 0, false);
    memcpy(&h, block, sizeof(h));
    free(block);
    if (rc < 0)
        return rc;
    bool ours = memcmp(h.magic, COLD_FILE_MAGIC, 8) == 0 &&
                h.checksum == XXH3_64bits(&h, offsetof(struct cold_file_header, checksum));
    if (ours && (h.version < COLD_FORMAT_VERSION_MIN || h.version > COLD_FORMAT_VERSION)) {
        /* Checked first: the other fields may mean something else in
         * another version. */
        cold_log(c, LOG_ERR, "cold: %s is a cold file of format %u, but this kvtierd reads "
                 "formats %u to %u; left untouched. Run a kvtierd that reads format %u, or "
                 "move the file aside to start with an empty cold tier", c->path, h.version,
                 COLD_FORMAT_VERSION_MIN, COLD_FORMAT_VERSION, h.version);
        return -EINVAL;
    }
    if (ours && h.file_bytes == c->file_bytes && (uint64_t)st->st_size < h.file_bytes) {
        /* Cut short (a copy that stopped, a restore that failed): its tail
         * regions are gone, and reading them would fail at every fetch.
         * Refused, not repaired: the operator decides what the file is. */
        cold_log(c, LOG_ERR, "cold: %s is %llu bytes but its header says %llu: the file "
                 "was truncated; left untouched. Restore it whole, or move it aside to "
                 "start with an empty cold tier", c->path,
                 (unsigned long long)st->st_size, (unsigned long long)h.file_bytes);
        return -EINVAL;
    }
    if (!ours || h.block_bytes != COLD_BLOCK || h.region_bytes != c->region_bytes ||
        h.file_bytes != c->file_bytes) {
        cold_log(c, LOG_ERR, "cold: %s is not a cold file of this configuration "
                 "(region %u bytes, file %llu bytes); left untouched", c->path,
                 c->region_bytes, (unsigned long long)c->file_bytes);
        return -EINVAL;
    }
    memcpy(c->uuid, h.uuid, sizeof(c->uuid));
    c->seed = h.seed;
    c->file_version = h.version;
    return 0;
}

/* Rewrite an older file's header in this build's version, once recovery
 * has read the file as it was. Durable before cold_open returns, so before
 * the first region header or record of this version is written: a file
 * never holds a region newer than its header says (cold_format.h). The
 * header lies in the file's first sector, which a crash cannot leave half
 * written. From now on a kvtierd that reads only the old version refuses
 * the file by its version check. */
static int file_upgrade(struct kvt_cold *c)
{
    struct cold_file_header h;
    uint8_t *block = NULL;
    uint32_t from = c->file_version;
    int rc;

    if (from == COLD_FORMAT_VERSION)
        return 0;
    if (posix_memalign((void **)&block, COLD_BLOCK, COLD_BLOCK) != 0)
        return -ENOMEM;
    rc = block_io(c, c->fd, block, 0, false);
    if (rc < 0)
        goto out;
    memcpy(&h, block, sizeof(h));
    h.version = COLD_FORMAT_VERSION;
    h.checksum = XXH3_64bits(&h, offsetof(struct cold_file_header, checksum));
    memcpy(block, &h, sizeof(h));
    rc = block_io(c, c->fd, block, 0, true);
    if (rc == 0 && fdatasync(c->fd) < 0)
        rc = -errno;
    if (rc < 0) {
        char buf[64];
        cold_log(c, LOG_ERR, "cold: cannot upgrade %s from format %u to %u: %s", c->path,
                 from, COLD_FORMAT_VERSION, strerror_r(-rc, buf, sizeof(buf)));
        goto out;
    }
    c->file_version = COLD_FORMAT_VERSION;
    cold_log(c, LOG_NOTICE, "cold: cold file %s upgraded from format %u to %u; kvtierd "
             "releases that read only format %u can no longer open it", c->path, from,
             COLD_FORMAT_VERSION, from);
out:
    free(block);
    return rc;
}

static int file_open(struct kvt_cold *c)
{
    struct stat st;
    int rc;

    c->direct = true;
    c->fd = open(c->path, O_RDWR | O_CLOEXEC | O_DIRECT);
    if (c->fd < 0 && errno == ENOENT) {
        rc = file_create(c);
        if (rc < 0)
            return rc;
        c->fd = open(c->path, O_RDWR | O_CLOEXEC | O_DIRECT);
    }
    if (c->fd < 0 && errno == EINVAL) {
        c->direct = false;
        cold_log(c, LOG_WARNING, "cold: %s refuses O_DIRECT; using buffered I/O", c->path);
        c->fd = open(c->path, O_RDWR | O_CLOEXEC);
    }
    if (c->fd < 0)
        return -errno;
    /* Two daemons appending to one log would interleave garbage. */
    if (flock(c->fd, LOCK_EX | LOCK_NB) < 0)
        return errno == EWOULDBLOCK ? -EBUSY : -errno;
    if (fstat(c->fd, &st) < 0)
        return -errno;
    if (st.st_size == 0) {
        rc = file_format(c, c->fd);    /* an empty file is ours to format */
        if (rc < 0 || fstat(c->fd, &st) < 0)
            return rc < 0 ? rc : -errno;
    }
    return file_check(c, &st);
}

static int io_start(struct kvt_cold *c)
{
    if (!c->cfg.force_pread) {
        int rc = cold_io_open_uring(c->fd, c->n_wbufs, &c->io);
        if (rc == 0) {
            c->st.uring = true;
            return 0;
        }
        char buf[64];
        cold_log(c, LOG_WARNING, "cold: io_uring unavailable (%s); using pread/pwrite",
                 strerror_r(-rc, buf, sizeof(buf)));
    }
    return cold_io_open_pread(c->fd, &c->io);
}

static void cold_free(struct kvt_cold *c)
{
    if (c->io)
        c->io->ops->close(c->io);
    for (uint64_t i = 0; c->buckets && i < c->n_buckets; i++) {
        struct cold_entry *e = c->buckets[i], *next;
        for (; e; e = next) {
            next = e->hash_next;
            cold_entry_free(e);
        }
    }
    for (uint32_t i = 0; c->wbufs && i < c->n_wbufs; i++)
        free(c->wbufs[i].mem);
    free(c->wbufs);
    free(c->fifo);
    free(c->buckets);
    free(c->regions);
    free(c->region_order);
    free(c->unwritten);
    free(c->tombs);
    domain_bytes_free(&c->domain_used);
    cold_ns_free(c);
    if (c->hash)
        XXH3_freeState(c->hash);
    if (c->fd >= 0)
        close(c->fd);
    if (c->locks_ready) {
        pthread_cond_destroy(&c->wb_cond);
        pthread_mutex_destroy(&c->lock);
        pthread_mutex_destroy(&c->put_lock);
    }
    free(c->path);
    free(c);
}

int cold_open(const struct kvt_cold_config *cfg, struct kvt_cold **out)
{
    struct kvt_cold *c;
    int rc;

    if (!cfg || !out)
        return -EINVAL;
    c = calloc(1, sizeof(*c));
    if (!c)
        return -ENOMEM;
    c->fd = -1;
    pthread_mutex_init(&c->put_lock, NULL);
    pthread_mutex_init(&c->lock, NULL);
    pthread_cond_init(&c->wb_cond, NULL);
    c->locks_ready = true;
    c->cfg = *cfg;
    c->cur_region = -1;
    c->next_region_seq = 1;
    c->next_record_seq = 1;
    rc = config_check(c, cfg);
    if (rc < 0)
        goto err;
    c->path = strdup(cfg->path);
    c->cfg.path = c->path;
    c->n_buckets = 1024;
    c->buckets = calloc(c->n_buckets, sizeof(*c->buckets));
    c->regions = calloc(c->n_regions, sizeof(*c->regions));
    c->region_order = calloc(c->n_regions, sizeof(*c->region_order));
    c->wbufs = calloc(c->n_wbufs, sizeof(*c->wbufs));
    c->fifo = calloc(c->n_wbufs, sizeof(*c->fifo));
    c->hash = XXH3_createState();
    if (!c->path || !c->buckets || !c->regions || !c->region_order || !c->wbufs || !c->fifo || !c->hash) {
        rc = -ENOMEM;
        goto err;
    }
    for (uint32_t i = 0; i < c->n_wbufs; i++) {
        struct cold_wbuf *b = &c->wbufs[i];
        if (posix_memalign((void **)&b->mem, COLD_BLOCK, c->wbuf_bytes) != 0) {
            b->mem = NULL;
            rc = -ENOMEM;
            goto err;
        }
        b->req.done = cold_wbuf_done;
        b->cold = c;
    }
    c->n_free = c->n_wbufs;
    rc = file_open(c);
    if (rc < 0)
        goto err;
    rc = io_start(c);
    if (rc < 0)
        goto err;
    rc = recover(c);
    if (rc < 0)
        goto err;
    rc = file_upgrade(c);
    if (rc < 0)
        goto err;
    *out = c;
    return 0;
err:
    cold_free(c);
    return rc;
}

void cold_close(struct kvt_cold *c)
{
    if (!c)
        return;
    pthread_mutex_lock(&c->put_lock);
    pthread_mutex_lock(&c->lock);
    cold_drain_locked(c);
    if (c->n_tombs_failed)
        cold_log(c, LOG_ERR, "cold: %zu tombstones could not be written to %s; contexts "
                 "dropped since the last successful write may return after the restart",
                 c->n_tombs_failed, c->path);
    pthread_mutex_unlock(&c->lock);
    pthread_mutex_unlock(&c->put_lock);
    cold_free(c);
}
