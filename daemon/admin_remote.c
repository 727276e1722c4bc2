/* admin_remote.c - the remote tier's counters and servers as admin JSON. */
#include "daemon/admin_remote.h"

#include <stdlib.h>

static void add_u64(cJSON *obj, const char *name, uint64_t v)
{
    cJSON_AddNumberToObject(obj, name, (double)v);
}

void admin_remote_stats(struct kvt_tiers *t, cJSON *reply)
{
    struct kvt_remote_stats *st;

    if (!t->remote) {
        cJSON_AddNullToObject(reply, "remote");
        return;
    }
    st = malloc(sizeof(*st));           /* 64 servers' worth: not on the stack */
    if (!st)
        return;
    remote_stats(t->remote, st);
    cJSON *r = cJSON_AddObjectToObject(reply, "remote");
    cJSON_AddBoolToObject(r, "sealed", st->sealed);
    add_u64(r, "gets", st->gets);
    add_u64(r, "hits", st->hits);
    add_u64(r, "misses", st->misses);
    add_u64(r, "rejected", st->rejected);
    add_u64(r, "errors", st->errors);
    add_u64(r, "puts", st->puts);
    add_u64(r, "put_errors", st->put_errors);
    add_u64(r, "too_large", st->too_large);
    add_u64(r, "put_dropped", st->put_dropped);
    add_u64(r, "put_gone", st->put_gone);
    add_u64(r, "queued", st->queued);
    add_u64(r, "bytes_read", st->bytes_read);
    add_u64(r, "bytes_written", st->bytes_written);
    add_u64(r, "promotions", atomic_load(&t->remote_promotions));
    add_u64(r, "get_calls", st->get_calls);
    cJSON_AddNumberToObject(r, "get_us_mean", st->get_calls ?
                            (double)st->get_ns_total / 1e3 / (double)st->get_calls : 0.0);
    cJSON_AddNumberToObject(r, "get_us_max", (double)st->get_ns_max / 1e3);
    cJSON_AddNumberToObject(r, "put_us_mean", st->puts ?
                            (double)st->put_ns_total / 1e3 / (double)st->puts : 0.0);
    cJSON_AddNumberToObject(r, "put_us_max", (double)st->put_ns_max / 1e3);
    cJSON *servers = cJSON_AddArrayToObject(r, "servers");
    for (size_t i = 0; i < st->n_servers; i++) {
        const struct remote_server_stats *s = &st->servers[i];
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "host", s->host);
        add_u64(o, "port", s->port);
        cJSON_AddStringToObject(o, "state", !s->seen ? "unknown" : s->up ? "up" : "down");
        add_u64(o, "hits", s->hits);
        add_u64(o, "misses", s->misses);
        add_u64(o, "errors", s->errors);
        add_u64(o, "bytes_read", s->bytes_read);
        add_u64(o, "bytes_written", s->bytes_written);
        cJSON_AddItemToArray(servers, o);
    }
    free(st);
}
