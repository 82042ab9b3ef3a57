/*
 * test_log.c - core/base/log.c: the line's form (UTC time to the millisecond, level,
 * [name], message, one newline), the level from COUNTERD_LOG, and a message too long for
 * a line cut, still ending with its newline. stderr is pointed at a file while logging.
 *
 * log.c keeps its level and name in statics: the cases run in an order that only raises
 * or sets the level (a later log_init without COUNTERD_LOG keeps the earlier level).
 * Never include this from core/.
 */
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "base/log.h"
#include "unit.h"

static FILE *capture_file;
static int saved_fd = -1;

static void capture_begin(void)
{
    fflush(stderr);
    capture_file = tmpfile();
    saved_fd = dup(2);
    dup2(fileno(capture_file), 2);
}

/* @return what was written to stderr since capture_begin (static buffer). */
static const char *capture_end(void)
{
    static char text[8192];
    fflush(stderr);
    dup2(saved_fd, 2);
    close(saved_fd);
    rewind(capture_file);
    size_t n = fread(text, 1, sizeof text - 1, capture_file);
    text[n] = '\0';
    fclose(capture_file);
    return text;
}

static int lines(const char *s)
{
    int n = 0;
    for (; *s; s++)
        n += *s == '\n';
    return n;
}

static void test_default_level_and_form(void)
{
    unsetenv("COUNTERD_LOG");
    log_init("region us-east-1");
    CHECK(!log_enabled(LOG_DEBUG));
    CHECK(log_enabled(LOG_INFO));
    CHECK(log_enabled(LOG_ERROR));
    capture_begin();
    log_debug("hidden %d", 1);
    log_info("counted %d of %s", 42, "views");
    log_warn("careful");
    log_error("broken: %s", "disk");
    const char *out = capture_end();
    CHECK_EQ_I64(lines(out), 3);
    CHECK(strstr(out, "hidden") == NULL);
    regex_t re;
    REQUIRE(regcomp(&re,
                    "^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\\.[0-9]{3}Z info  "
                    "\\[region us-east-1\\] counted 42 of views\n"
                    "[0-9T:.Z-]{24} warn  \\[region us-east-1\\] careful\n"
                    "[0-9T:.Z-]{24} error \\[region us-east-1\\] broken: disk\n$",
                    REG_EXTENDED) == 0);
    CHECK(regexec(&re, out, 0, NULL, 0) == 0);
    if (regexec(&re, out, 0, NULL, 0) != 0)
        fprintf(stderr, "  the log was:\n%s", out);
    regfree(&re);
}

static void test_levels(void)
{
    setenv("COUNTERD_LOG", "error", 1);
    log_init("n");
    CHECK(!log_enabled(LOG_WARN));
    CHECK(log_enabled(LOG_ERROR));
    capture_begin();
    log_info("i");
    log_warn("w");
    log_error("e");
    const char *out = capture_end();
    CHECK_EQ_I64(lines(out), 1);
    CHECK(strstr(out, " error [n] e\n") != NULL);

    setenv("COUNTERD_LOG", "warn", 1);
    log_init("n");
    capture_begin();
    log_info("i");
    log_warn("w");
    out = capture_end();
    CHECK_EQ_I64(lines(out), 1);
    CHECK(strstr(out, " warn  [n] w\n") != NULL);

    setenv("COUNTERD_LOG", "debug", 1);
    log_init("n");
    CHECK(log_enabled(LOG_DEBUG));
    capture_begin();
    log_debug("d%d", 7);
    out = capture_end();
    CHECK_EQ_I64(lines(out), 1);
    CHECK(strstr(out, " debug [n] d7\n") != NULL);

    /* A value that is no level is said, not ignored; the level stays where it was. */
    setenv("COUNTERD_LOG", "verbose", 1);
    capture_begin();
    log_init("n");
    out = capture_end();
    CHECK_EQ_I64(lines(out), 1);
    CHECK(strstr(out, " warn  [n] COUNTERD_LOG=verbose is not a level (debug, info, warn, "
                      "error): logging at debug\n") != NULL);
    CHECK(log_enabled(LOG_DEBUG));
    setenv("COUNTERD_LOG", "info", 1);
    log_init("n");
    CHECK(!log_enabled(LOG_DEBUG));
    CHECK(log_enabled(LOG_INFO));
    unsetenv("COUNTERD_LOG");
}

/* The time is UTC whatever the local zone. */
static void test_utc(void)
{
    setenv("TZ", "XYZ-05:30", 1); /* UTC+05:30: no hour of it matches UTC's */
    tzset();
    time_t before = time(NULL);
    capture_begin();
    log_error("when");
    const char *out = capture_end();
    time_t after = time(NULL);
    char a[32], b[32];
    struct tm tm;
    strftime(a, sizeof a, "%Y-%m-%dT%H:%M", gmtime_r(&before, &tm));
    strftime(b, sizeof b, "%Y-%m-%dT%H:%M", gmtime_r(&after, &tm));
    CHECK(strncmp(out, a, strlen(a)) == 0 || strncmp(out, b, strlen(b)) == 0);
    unsetenv("TZ");
    tzset();
}

static void test_long_lines_and_names(void)
{
    /* A name longer than 63 bytes is cut. */
    char name[100];
    memset(name, 'N', sizeof name - 1);
    name[sizeof name - 1] = '\0';
    log_init(name);
    char msg[3000];
    memset(msg, 'm', sizeof msg - 1);
    msg[sizeof msg - 1] = '\0';
    capture_begin();
    log_error("%s", msg);
    log_error("after");
    const char *out = capture_end();
    CHECK_EQ_I64(lines(out), 2);
    const char *nl = strchr(out, '\n');
    REQUIRE(nl != NULL);
    CHECK_EQ_I64(nl - out + 1, 1023); /* one line of 1 KiB at most, with its newline */
    char cut[80];
    snprintf(cut, sizeof cut, "[%.*s] ", 63, name);
    CHECK(strstr(out, cut) != NULL);
    CHECK(strstr(nl + 1, "] after\n") != NULL);
    log_init("counterd");
}

UNIT_MAIN("log", UNIT_CASE(test_default_level_and_form), UNIT_CASE(test_levels),
          UNIT_CASE(test_utc), UNIT_CASE(test_long_lines_and_names))
