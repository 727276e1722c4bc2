/* kvtierctl.h - what kvtierctl's parts share: value formatting and the
 * Prometheus output of `metrics` (kvtierctl_metrics.c). */
#ifndef KVT_KVTIERCTL_H
#define KVT_KVTIERCTL_H

#include <cjson/cJSON.h>
#include <stddef.h>

/* A JSON value as text: whole numbers without a fraction, "-" for null. */
void ctl_format_value(const cJSON *v, char *buf, size_t len);
/* The stats reply in the Prometheus text exposition format, on stdout. */
void ctl_print_metrics(const cJSON *reply);

#endif
