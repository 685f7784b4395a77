/* log.c - one line per message on stderr, prefixed with the program name and level. */
#include <stdarg.h>
#include <stdio.h>

#include "log.h"

int log_level = LOG_INFO;

void log_msg(int level, const char *fmt, ...)
{
    static const char *const names[] = { "error", "warning", "info", "debug" };
    if (level > log_level)
        return;
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    fprintf(stderr, "oag-supervisor: %s: %s\n", names[level], buf);
}
