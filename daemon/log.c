/* log.c - one line per message to stderr, prefixed <N> so journald keeps the priority. */
#include "daemon/log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

/* The level is process-wide by nature (stderr is), and atomic because SIGHUP
 * reloads it while workers log. */
static atomic_int current_level = LOG_INFO;

static const char *const level_names[] = {
    [LOG_ERR] = "err", [LOG_WARNING] = "warning",
    [LOG_INFO] = "info", [LOG_DEBUG] = "debug",
};

void log_set_level(int level) { atomic_store(&current_level, level); }
int log_level(void) { return atomic_load(&current_level); }

int log_parse_level(const char *s)
{
    for (int i = 0; i <= LOG_DEBUG; i++)
        if (level_names[i] && strcmp(s, level_names[i]) == 0)
            return i;
    return -EINVAL;
}

const char *log_level_name(int level)
{
    return level >= 0 && level <= LOG_DEBUG && level_names[level] ? level_names[level] : "?";
}

void log_msg(int level, const char *fmt, ...)
{
    char line[1024];
    va_list ap;

    if (level > atomic_load(&current_level))
        return;
    int n = snprintf(line, sizeof(line), "<%d>", level);
    va_start(ap, fmt);
    vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
    va_end(ap);
    size_t len = strlen(line);
    line[len++] = '\n';
    /* One write per line so lines from several threads never interleave. */
    fwrite(line, 1, len, stderr);
    fflush(stderr);
}
