/* workers.c - worker threads for the data path (quantize/dequantize passes). */
#include "daemon/workers.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/log.h"

struct kvt_workers {
    pthread_mutex_t lock;
    pthread_cond_t wake;
    struct work_item *head, *tail;   /* FIFO */
    bool stopping;
    bool idle;
    unsigned n_threads;
    pthread_t threads[];
};

static void *worker_main(void *arg)
{
    struct kvt_workers *w = arg;

    if (w->idle) {
        struct sched_param sp = { 0 };
        int rc = pthread_setschedparam(pthread_self(), SCHED_IDLE, &sp);
        if (rc)
            log_warn("worker thread: SCHED_IDLE not set: %s", strerror(rc));
    }
    pthread_mutex_lock(&w->lock);
    for (;;) {
        while (!w->head && !w->stopping)
            pthread_cond_wait(&w->wake, &w->lock);
        struct work_item *item = w->head;
        if (!item)
            break;                       /* stopping and drained */
        w->head = item->next;
        if (!w->head)
            w->tail = NULL;
        pthread_mutex_unlock(&w->lock);
        item->fn(item);
        pthread_mutex_lock(&w->lock);
    }
    pthread_mutex_unlock(&w->lock);
    return NULL;
}

int workers_start(unsigned n_threads, struct kvt_workers **out)
{
    return workers_start_idle(n_threads, false, out);
}

int workers_start_idle(unsigned n_threads, bool idle, struct kvt_workers **out)
{
    struct kvt_workers *w = calloc(1, sizeof(*w) + n_threads * sizeof(pthread_t));
    int rc;

    if (!w)
        return -ENOMEM;
    w->idle = idle;
    pthread_mutex_init(&w->lock, NULL);
    pthread_cond_init(&w->wake, NULL);
    for (; w->n_threads < n_threads; w->n_threads++) {
        rc = pthread_create(&w->threads[w->n_threads], NULL, worker_main, w);
        if (rc) {
            workers_stop(w);
            return -rc;
        }
    }
    *out = w;
    return 0;
}

void workers_submit(struct kvt_workers *w, struct work_item *item)
{
    workers_submit_list(w, item, item, 1);
}

void workers_submit_list(struct kvt_workers *w, struct work_item *first,
                         struct work_item *last, unsigned n)
{
    last->next = NULL;
    pthread_mutex_lock(&w->lock);
    if (w->tail)
        w->tail->next = first;
    else
        w->head = first;
    w->tail = last;
    if (n >= w->n_threads)
        pthread_cond_broadcast(&w->wake);
    else
        for (unsigned i = 0; i < n; i++)
            pthread_cond_signal(&w->wake);
    pthread_mutex_unlock(&w->lock);
}

void workers_stop(struct kvt_workers *w)
{
    if (!w)
        return;
    pthread_mutex_lock(&w->lock);
    w->stopping = true;
    pthread_cond_broadcast(&w->wake);
    pthread_mutex_unlock(&w->lock);
    for (unsigned i = 0; i < w->n_threads; i++)
        pthread_join(w->threads[i], NULL);
    pthread_mutex_destroy(&w->lock);
    pthread_cond_destroy(&w->wake);
    free(w);
}
