/* log.h - stderr logging with <N> priority prefixes for journald. */
#ifndef KVT_LOG_H
#define KVT_LOG_H

#include <syslog.h>

/* Messages above this syslog priority are dropped (LOG_INFO by default). */
void log_set_level(int level);
int log_level(void);
/* Parse "err|warning|info|debug"; returns the priority or -EINVAL. */
int log_parse_level(const char *s);
const char *log_level_name(int level);

void log_msg(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define log_err(...)  log_msg(LOG_ERR, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_WARNING, __VA_ARGS__)
#define log_info(...) log_msg(LOG_INFO, __VA_ARGS__)
#define log_debug(...) log_msg(LOG_DEBUG, __VA_ARGS__)

#endif
