/* admin_json.h - how the admin replies write numbers and ids. */
#ifndef KVT_ADMIN_JSON_H
#define KVT_ADMIN_JSON_H

#include <cjson/cJSON.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>

/* Counters go out as JSON numbers: exact up to 2^53, far beyond any byte
 * count a daemon reaches. 64-bit ids go out as hex strings instead. */
static inline void add_u64(cJSON *obj, const char *name, uint64_t v)
{
    cJSON_AddNumberToObject(obj, name, (double)v);
}

static inline void add_id(cJSON *obj, const char *name, uint64_t id)
{
    char buf[24];
    snprintf(buf, sizeof(buf), "0x%016" PRIx64, id);
    cJSON_AddStringToObject(obj, name, buf);
}

#endif
