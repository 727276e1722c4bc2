/* workers.h - a fixed pool of threads running queued work items in order. */
#ifndef KVT_WORKERS_H
#define KVT_WORKERS_H

#include <stdbool.h>

struct kvt_workers;

/* Caller-owned work item: no allocation on submit, so submit cannot fail.
 * The item must stay valid until fn has been called. */
struct work_item {
    void (*fn)(struct work_item *item);
    struct work_item *next;
};

int workers_start(unsigned n_threads, struct kvt_workers **out);
/* The same; with idle, the threads run SCHED_IDLE: any other thread that
 * wakes on their CPU runs first (the event loop, the clients). Lowering
 * needs no privilege, but an unprivileged thread cannot come back, and on
 * a machine kept busy it gets a very small share: whatever it holds makes
 * others wait that long (kvtierd(8), promote-priority). */
int workers_start_idle(unsigned n_threads, bool idle, struct kvt_workers **out);
void workers_submit(struct kvt_workers *w, struct work_item *item);
/* Queue n items linked through their next fields, first to last, under one
 * lock, and wake as many threads as there are items. */
void workers_submit_list(struct kvt_workers *w, struct work_item *first,
                         struct work_item *last, unsigned n);
/* Run every queued item, then join and free the pool. NULL is ignored. */
void workers_stop(struct kvt_workers *w);

#endif
