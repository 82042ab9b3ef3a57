/*
 * log.h - one-line logs to stderr: time, level, the process' name, the message.
 *
 * Logging is for operators, not the hot path: nothing here is called per request except
 * on errors. The level comes from COUNTERD_LOG (debug|info|warn|error, default info).
 */
#ifndef COUNTERD_BASE_LOG_H
#define COUNTERD_BASE_LOG_H

enum log_level { LOG_DEBUG, LOG_INFO, LOG_WARN, LOG_ERROR };

/* Sets the name shown in each line (e.g. "region us-east-1") and reads COUNTERD_LOG. */
void log_init(const char *name);
void log_msg(enum log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int log_enabled(enum log_level level);

#define log_debug(...) (log_enabled(LOG_DEBUG) ? log_msg(LOG_DEBUG, __VA_ARGS__) : (void)0)
#define log_info(...) log_msg(LOG_INFO, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_WARN, __VA_ARGS__)
#define log_error(...) log_msg(LOG_ERROR, __VA_ARGS__)

#endif
