/* registry.c - sharing domains (from SO_PEERCRED uids) and model namespaces. */
#include "daemon/registry.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

int registry_init(struct kvt_registry *reg)
{
    memset(reg, 0, sizeof(*reg));
    return -pthread_mutex_init(&reg->lock, NULL);
}

void registry_fini(struct kvt_registry *reg)
{
    for (uint32_t i = 0; i < reg->n_ns; i++)
        free(reg->ns[i]);
    reg->n_ns = 0;
    pthread_mutex_destroy(&reg->lock);
}

uint32_t registry_domain(const struct kvt_config *cfg, uid_t uid)
{
    for (uint32_t i = 0; i < cfg->n_share; i++) {
        if (cfg->share_uid[i] != uid)
            continue;
        uid_t lowest = uid;
        for (uint32_t j = 0; j < cfg->n_share; j++)
            if (cfg->share_group[j] == cfg->share_group[i] && cfg->share_uid[j] < lowest)
                lowest = cfg->share_uid[j];
        return (uint32_t)lowest | 0x80000000u;
    }
    return (uint32_t)uid;
}

int registry_attach(struct kvt_registry *reg, uint32_t domain, const char *name,
                    uint32_t layers, uint32_t heads, uint32_t dim,
                    uint32_t chunk_tokens, struct kvt_ns **out)
{
    int rc = 0;

    pthread_mutex_lock(&reg->lock);
    for (uint32_t i = 0; i < reg->n_ns; i++) {
        struct kvt_ns *ns = reg->ns[i];
        if (ns->domain == domain && ns->layers == layers && ns->heads == heads &&
            ns->dim == dim && ns->chunk_tokens == chunk_tokens &&
            strcmp(ns->name, name) == 0) {
            ns->clients++;
            *out = ns;
            goto out;
        }
    }
    if (reg->n_ns == REGISTRY_NS_MAX) {
        rc = -ENOSPC;
        goto out;
    }
    struct kvt_ns *ns = calloc(1, sizeof(*ns));
    if (!ns) {
        rc = -ENOMEM;
        goto out;
    }
    ns->domain = domain;
    strncpy(ns->name, name, sizeof(ns->name) - 1);
    ns->layers = layers;
    ns->heads = heads;
    ns->dim = dim;
    ns->chunk_tokens = chunk_tokens;
    /* Hash of the identity, fixed-width fields first, then the name. */
    uint32_t ident[5 + 32] = { domain, layers, heads, dim, chunk_tokens };
    memcpy(&ident[5], name, strlen(name));   /* name <= 127 bytes: fits */
    ns->id = XXH3_64bits(ident, sizeof(ident)) | 1;   /* never 0: 0 means "all" */
    ns->clients = 1;
    reg->ns[reg->n_ns++] = ns;
    *out = ns;
out:
    pthread_mutex_unlock(&reg->lock);
    return rc;
}

void registry_detach(struct kvt_registry *reg, struct kvt_ns *ns)
{
    pthread_mutex_lock(&reg->lock);
    if (ns->clients)
        ns->clients--;
    pthread_mutex_unlock(&reg->lock);
}
