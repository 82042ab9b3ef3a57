/*
 * log.c - one-line logs to stderr (see log.h).
 */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

static char log_name[64] = "counterd";
static enum log_level log_min = LOG_INFO;

void log_init(const char *name)
{
    snprintf(log_name, sizeof log_name, "%s", name);
    const char *lv = getenv("COUNTERD_LOG");
    if (!lv)
        return;
    if (!strcmp(lv, "debug"))
        log_min = LOG_DEBUG;
    else if (!strcmp(lv, "warn"))
        log_min = LOG_WARN;
    else if (!strcmp(lv, "error"))
        log_min = LOG_ERROR;
    else if (!strcmp(lv, "info"))
        log_min = LOG_INFO;
    else
        log_warn("COUNTERD_LOG=%s is not a level (debug, info, warn, error): logging at %s", lv,
                 log_min == LOG_DEBUG   ? "debug"
                 : log_min == LOG_WARN  ? "warn"
                 : log_min == LOG_ERROR ? "error"
                                        : "info");
}

int log_enabled(enum log_level level)
{
    return level >= log_min;
}

void log_msg(enum log_level level, const char *fmt, ...)
{
    static const char *names[] = {"debug", "info", "warn", "error"};
    if (level < log_min)
        return;
    struct timeval tv;
    gettimeofday(&tv, NULL);
    struct tm tm;
    gmtime_r(&tv.tv_sec, &tm);
    char line[1024];
    int n = snprintf(line, sizeof line, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %-5s [%s] ",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                     (long)(tv.tv_usec / 1000), names[level], log_name);
    va_list ap;
    va_start(ap, fmt);
    if (n > 0 && (size_t)n < sizeof line)
        vsnprintf(line + n, sizeof line - (size_t)n, fmt, ap);
    va_end(ap);
    /* One write per line so lines from concurrent processes do not interleave. */
    size_t len = strnlen(line, sizeof line - 2);
    line[len++] = '\n';
    fwrite(line, 1, len, stderr);
}
