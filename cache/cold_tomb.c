/* cold_tomb.c - the cold tier's drops: tombstones logged, tracked until
 * they are on disk, logged again when their write failed, and synced.
 *
 * A drop takes the records out of the index at once; only its tombstone
 * keeps them out after a restart, and only once it is on disk. So every
 * tombstone is tracked (struct cold_tomb in cold_int.h) from its append
 * until the write that holds it retires with success before any gap of
 * its region. A failed write marks it (cold_tombs_retired_locked, as
 * records' keys go to the unwritten hook), and it is logged again, under
 * its own seq, before the next append (cold_prepare_append_locked in
 * cold.c) and by every sync. cold_sync_tombstones is what a drop waits
 * for when it must be durable.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <unistd.h>

#include "cold_int.h"

/* Write b retired (ok: with success): the tombstones in it are on disk,
 * or, with every later one of its region, must be logged again (recovery
 * ends the region's log at the gap), as drop_unwritten_locked does for
 * records. One that spans buffers is on disk when the buffer holding its
 * end is, since buffers retire in order and an earlier failure marked it. */
void cold_tombs_retired_locked(struct kvt_cold *c, const struct cold_wbuf *b, bool ok)
{
    for (size_t i = 0; i < c->n_tombs; i++) {
        struct cold_tomb *t = &c->tombs[i];
        uint64_t end = t->off + REC_HDR;

        if (t->state != TOMB_WRITING || t->region != b->region || end <= b->file_off)
            continue;
        if (!ok) {
            t->state = TOMB_FAILED;
            t->failed_once = true;
            c->n_tombs_failed++;
        } else if (end <= b->file_off + b->len) {
            t->state = TOMB_WRITTEN;
        }
    }
}

/* Forget the tombstones that are on disk (put_lock and lock held). */
void cold_tombs_compact_locked(struct kvt_cold *c)
{
    size_t kept = 0;

    for (size_t i = 0; i < c->n_tombs; i++)
        if (c->tombs[i].state != TOMB_WRITTEN)
            c->tombs[kept++] = c->tombs[i];
    c->n_tombs = kept;
}

/* Append tombstone i of tombs and track where it went. Its entry stays at
 * i: only put_lock holders, such as the caller, move entries. */
int cold_tomb_log_locked(struct kvt_cold *c, size_t i)
{
    struct cold_tomb *t = &c->tombs[i];
    struct cold_record_header h = {
        .magic = COLD_RECORD_MAGIC, .version = COLD_FORMAT_VERSION, .kind = t->kind,
        .key = t->key, .seq = t->seq,
    };
    struct cold_entry at;
    int rc;

    if (t->state == TOMB_FAILED)
        c->n_tombs_failed--;
    t->state = TOMB_APPENDING;         /* retiring writes leave it alone */
    rc = cold_append_record_locked(c, (uint8_t *)&h, REC_HDR, NULL, 0, &at);
    t = &c->tombs[i];
    t->seq = h.seq;
    t->off = at.off;
    t->region = at.region;
    t->state = rc ? TOMB_FAILED : TOMB_WRITING;
    t->failed_once |= rc != 0;
    c->n_tombs_failed += rc != 0;
    return rc;
}

/* Room for one more entry in tombs; 0 or -ENOMEM (put_lock and lock). */
static int tombs_reserve_locked(struct kvt_cold *c)
{
    if (c->n_tombs == c->cap_tombs) {
        size_t cap = c->cap_tombs ? c->cap_tombs * 2 : 16;
        struct cold_tomb *t = realloc(c->tombs, cap * sizeof(*t));
        if (!t)
            return -ENOMEM;
        c->tombs = t;
        c->cap_tombs = cap;
    }
    return 0;
}

/* Drop matching records now and log a tombstone, both under put_lock so no
 * put of the same object can fall between them: it is older than the
 * tombstone (and dropped here) or newer (and kept, also after restart).
 * Older and newer are by record sequence number, taken in append order
 * under the same locks, so log order and sequence order agree even when
 * the write buffers reach the disk out of order; recovery compares the
 * numbers. Whoever drops must first make sure no write-back of the
 * object's hot chunks is still to come (daemon/tiers.c drops hot first). */
static uint64_t drop_and_log(struct kvt_cold *c, uint8_t kind, uint64_t ns_id,
                             uint64_t obj_hi, uint64_t obj_lo)
{
    struct cold_record_header h = {
        .magic = COLD_RECORD_MAGIC, .version = COLD_FORMAT_VERSION, .kind = kind,
        .key = { .ns_id = ns_id, .obj_hi = obj_hi, .obj_lo = obj_lo },
    };
    uint64_t dropped, names;
    bool replaced_failed = false;
    int rc;

    pthread_mutex_lock(&c->put_lock);
    pthread_mutex_lock(&c->lock);
    dropped = cold_index_drop_matching(c, kind, &h.key, UINT64_MAX, &names);
    /* The count returned is of chunks, but a context held only by its
     * name (its chunks gone for a quota) must not come back either. */
    if (dropped || names)
        c->drops_logged++;
    cold_tombs_compact_locked(c);
    /* This tombstone drops all that an earlier failed one of the same
     * object or namespace did, and more: that one need not be kept. */
    for (size_t i = 0; i < c->n_tombs; i++) {
        struct cold_tomb *t = &c->tombs[i];
        if (t->state == TOMB_FAILED && t->kind == kind &&
            !memcmp(&t->key, &h.key, sizeof(h.key))) {
            t->state = TOMB_WRITTEN;
            c->n_tombs_failed--;
            replaced_failed = true;
        }
    }
    cold_tombs_compact_locked(c);
    /* Logged even when nothing matched: a record whose write reported an
     * error may still have reached the disk and must not come back. The
     * entry tracks it until it is on disk; a failed write logs it again. */
    if (tombs_reserve_locked(c) == 0) {
        size_t i = c->n_tombs++;
        c->tombs[i] = (struct cold_tomb){ .key = h.key, .kind = kind,
                                          .state = TOMB_APPENDING,
                                          .failed_once = replaced_failed };
        cold_prepare_append_locked(c);
        rc = cold_tomb_log_locked(c, i);
    } else {
        c->tombs_untracked++;
        cold_log(c, LOG_ERR, "cold: no memory to track a tombstone; if its write fails, "
                 "dropped records may return after a restart");
        rc = cold_append_locked(c, (uint8_t *)&h, REC_HDR, NULL, 0, NULL);
    }
    if (rc < 0)
        cold_log(c, LOG_WARNING, "cold: tombstone write failed; it is written again before "
                 "the next record, and dropped records may return after a restart until then");
    cold_flush_locked(c);
    pthread_mutex_unlock(&c->lock);
    pthread_mutex_unlock(&c->put_lock);
    cold_report_unwritten(c);
    return dropped;
}

uint64_t cold_drop_object(struct kvt_cold *c, uint64_t ns_id, uint64_t obj_hi,
                          uint64_t obj_lo)
{
    return drop_and_log(c, COLD_REC_TOMB_OBJECT, ns_id, obj_hi, obj_lo);
}

uint64_t cold_drop_namespace(struct kvt_cold *c, uint64_t ns_id)
{
    return drop_and_log(c, COLD_REC_TOMB_NAMESPACE, ns_id, 0, 0);
}

int cold_sync_tombstones(struct kvt_cold *c)
{
    int rc = 0;

    uint64_t drops;

    pthread_mutex_lock(&c->put_lock);
    pthread_mutex_lock(&c->lock);
    cold_drain_locked(c);
    if (c->n_tombs_failed || c->tombs_untracked)
        rc = -EIO;
    c->tombs_untracked = 0;
    drops = c->drops_logged;           /* all of them are written now */
    pthread_mutex_unlock(&c->lock);
    pthread_mutex_unlock(&c->put_lock);
    if (cold_fdatasync(c))
        rc = -EIO;
    if (rc == 0) {
        pthread_mutex_lock(&c->lock);
        if (c->drops_synced < drops)
            c->drops_synced = drops;
        pthread_mutex_unlock(&c->lock);
    }
    return rc;
}

bool cold_tombstones_behind(struct kvt_cold *c)
{
    bool behind;

    pthread_mutex_lock(&c->lock);
    behind = c->tombs_untracked > 0 || c->drops_logged > c->drops_synced;
    for (size_t i = 0; i < c->n_tombs && !behind; i++)
        behind = c->tombs[i].failed_once && c->tombs[i].state != TOMB_WRITTEN;
    pthread_mutex_unlock(&c->lock);
    return behind;
}

