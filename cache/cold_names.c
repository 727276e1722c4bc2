/* cold_names.c - the cold tier's name records: a named context's name and
 * its namespace's identity, checked and encoded as cold_format.h lays them
 * out, and listed for a daemon that restarts. Writing them (they follow
 * their context's chunk 0 of layer 0) is cold_put_named in cold.c. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>

#include "cold_int.h"

void cold_entry_free(struct cold_entry *e)
{
    if (!e)
        return;
    free(e->name);
    free(e);
}

static bool geometry_ok(uint32_t layers, uint32_t heads, uint32_t dim, uint32_t chunk_tokens)
{
    return layers >= 1 && layers <= COLD_NAME_LAYERS_MAX && heads >= 1 &&
           heads <= KVT_CHUNK_MAX_HEADS && dim >= 1 && dim <= KVT_CHUNK_MAX_DIM &&
           chunk_tokens >= 1 && chunk_tokens <= KVT_CHUNK_MAX_TOKENS;
}

static bool text_ok(const char *s, size_t len, size_t max)
{
    return len >= 1 && len <= max && !memchr(s, '\0', len);
}

/* Whether the context name hashes to the object id. */
static bool object_ok(const char *name, size_t len, uint64_t hi, uint64_t lo)
{
    XXH128_hash_t h = XXH3_128bits(name, len);
    return h.high64 == hi && h.low64 == lo;
}

int cold_name_encode(const struct kvt_cold_name *n, const struct kvt_chunk_key *chunk,
                     uint8_t *block, uint32_t *len)
{
    struct cold_name_block b = { 0 };

    if (n->ns_id != chunk->ns_id || n->obj_hi != chunk->obj_hi || n->obj_lo != chunk->obj_lo ||
        n->domain != chunk->domain || chunk->layer != 0 || chunk->chunk_idx != 0 ||
        !geometry_ok(n->layers, n->heads, n->dim, n->chunk_tokens) ||
        !text_ok(n->model, n->model_len, COLD_NAME_MODEL_MAX) ||
        !text_ok(n->name, n->name_len, COLD_NAME_CONTEXT_MAX) ||
        !object_ok(n->name, n->name_len, n->obj_hi, n->obj_lo))
        return -EINVAL;
    b.layers = n->layers;
    b.heads = n->heads;
    b.dim = n->dim;
    b.chunk_tokens = n->chunk_tokens;
    b.model_len = (uint8_t)n->model_len;
    b.name_len = (uint8_t)n->name_len;
    memcpy(block, &b, sizeof(b));
    memcpy(block + sizeof(b), n->model, n->model_len);
    memcpy(block + sizeof(b) + n->model_len, n->name, n->name_len);
    *len = (uint32_t)(sizeof(b) + n->model_len + n->name_len);
    return 0;
}

int cold_name_decode(const struct cold_record_header *h, const uint8_t *block,
                     struct kvt_cold_name *out)
{
    struct cold_name_block b;
    const char *model = (const char *)block + sizeof(b);

    if (h->raw_len < sizeof(b))
        return -EBADMSG;
    memcpy(&b, block, sizeof(b));
    if (h->key.layer != COLD_NAME_LAYER || h->key.chunk_idx || h->key.reserved ||
        h->key.ns_id == 0 || b.reserved || b.reserved2 ||
        h->raw_len != sizeof(b) + (uint32_t)b.model_len + b.name_len)
        return -EBADMSG;
    const char *name = model + b.model_len;      /* inside the block: checked above */
    if (!geometry_ok(b.layers, b.heads, b.dim, b.chunk_tokens) ||
        !text_ok(model, b.model_len, COLD_NAME_MODEL_MAX) ||
        !text_ok(name, b.name_len, COLD_NAME_CONTEXT_MAX) ||
        !object_ok(name, b.name_len, h->key.obj_hi, h->key.obj_lo))
        return -EBADMSG;
    *out = (struct kvt_cold_name){
        .ns_id = h->key.ns_id, .obj_hi = h->key.obj_hi, .obj_lo = h->key.obj_lo,
        .domain = h->key.domain, .layers = b.layers, .heads = b.heads, .dim = b.dim,
        .chunk_tokens = b.chunk_tokens, .model_len = b.model_len, .name_len = b.name_len,
    };
    memcpy(out->model, model, b.model_len);
    memcpy(out->name, name, b.name_len);
    return 0;
}

int cold_names(struct kvt_cold *c, struct kvt_cold_name **out, size_t *n_out)
{
    struct kvt_cold_name *names = NULL;
    size_t n = 0;
    int rc = 0;

    pthread_mutex_lock(&c->lock);
    if (c->n_names) {
        names = malloc(c->n_names * sizeof(*names));
        if (!names)
            rc = -ENOMEM;
    }
    for (uint32_t r = 0; r < c->n_regions && names; r++)
        for (const struct cold_entry *e = c->regions[r].entries; e; e = e->reg_next) {
            struct cold_record_header h = { .key = e->key, .raw_len = e->raw_len };
            /* Checked when it was read or put: decoding cannot fail. */
            if (e->name && n < c->n_names && cold_name_decode(&h, e->name, &names[n]) == 0)
                n++;
        }
    pthread_mutex_unlock(&c->lock);
    if (n == 0) {
        free(names);
        names = NULL;
    }
    *out = names;
    *n_out = n;
    return rc;
}

void cold_name_refuse(struct kvt_cold *c, const struct kvt_cold_name *n)
{
    struct kvt_chunk_key k = { .ns_id = n->ns_id, .obj_hi = n->obj_hi, .obj_lo = n->obj_lo,
                               .domain = n->domain, .layer = COLD_NAME_LAYER };

    pthread_mutex_lock(&c->lock);
    struct cold_entry *e = *cold_index_slot(c, &k);
    if (e && e->name) {
        cold_index_remove(c, e);
        c->st.names_skipped++;
    }
    pthread_mutex_unlock(&c->lock);
}
