/* job.h - a long admin command (flush, evict of a namespace or tier) or a
 * listing (namespaces, contexts) on a thread of its own, so the event loop
 * serves clients meanwhile and can report the command's progress. */
#ifndef KVT_JOB_H
#define KVT_JOB_H

#include <stdbool.h>
#include <stdint.h>

struct kvt_job;

/* The work; runs on the job's thread and returns 0 or -errno. It may call
 * job_progress as it goes. */
typedef int (*job_fn)(struct kvt_job *j, void *arg);

/* Start fn(j, arg) on a new thread. The job's eventfd is added to epfd with
 * data.ptr = tag and becomes readable at the first progress report, about
 * every 200 ms after that, and at the end; the loop then calls job_poll.
 * Returns 0 or -errno. */
int job_start(job_fn fn, void *arg, int epfd, void *tag, struct kvt_job **out);
/* From fn: done of total units so far (total may grow while it runs). */
void job_progress(struct kvt_job *j, uint64_t done, uint64_t total);
/* The same, shaped as the progress callbacks of cache/ and daemon/tiers. */
void job_progress_cb(void *job, uint64_t done, uint64_t total);
/* On the loop thread, after the eventfd was readable: progress so far.
 * Returns true once fn has returned, with its result in *rc. */
bool job_poll(struct kvt_job *j, uint64_t *done, uint64_t *total, int *rc);
/* Wait for the thread to end, then free the job. NULL is ignored. */
void job_free(struct kvt_job *j);

#endif
