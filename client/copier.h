/* copier.h - a few threads that share the copy path's large memcpys. */
#ifndef KVT_COPIER_H
#define KVT_COPIER_H

#include <stddef.h>

/* One contiguous copy of a batch. */
struct copy_part {
    void *dst;
    const void *src;
    size_t bytes;
};

struct copier;

/* Copies smaller than this stay on the caller's thread. */
#define COPIER_MIN_BYTES (2u << 20)

/* Start `threads` helper threads (1..COPIER_MAX_THREADS). Returns 0 or
 * -errno; *out owns them until copier_destroy. */
#define COPIER_MAX_THREADS 15
int copier_create(unsigned threads, struct copier **out);
/* Copy every part, the caller's thread taking a share beside the helpers;
 * returns when all bytes are copied. cp may be NULL: the caller copies
 * alone. Not for concurrent use by several threads. */
void copier_run(struct copier *cp, const struct copy_part *parts, size_t n_parts);
/* Stop and join the helpers; NULL is ignored. */
void copier_destroy(struct copier *cp);

/* The copy threads a client uses, its own included: $KVTIER_COPY_THREADS
 * (1..16), else a quarter of the CPUs this process may run on, at least 2
 * where it may run on 2 and at most 8 (copier.c has the measurements). */
unsigned copier_threads_wanted(void);

#endif
