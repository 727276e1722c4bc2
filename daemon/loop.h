/* loop.h - what an fd registered with the event loop carries: its handler.
 *
 * epoll's data.ptr of every fd the loop waits on points at a struct
 * kvt_handler embedded in the object that owns the fd (a session, an admin
 * connection, the admin side's listening socket, a timer of the server).
 * The loop calls h->fn and knows nothing else of its owners, so a module
 * adds an fd without the loop naming it. */
#ifndef KVT_LOOP_H
#define KVT_LOOP_H

#include <stddef.h>
#include <stdint.h>

struct kvt_handler {
    /* events: what epoll reported (EPOLLIN, EPOLLOUT, EPOLLHUP, ...). The
     * owner may free itself inside fn: the loop does not touch h after. */
    void (*fn)(struct kvt_handler *h, uint32_t events);
};

/* The object that embeds handler h as its member `field`. */
#define KVT_OWNER(h, type, field) ((type *)(void *)((char *)(h) - offsetof(type, field)))

#endif
