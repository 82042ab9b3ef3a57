/*
 * fault.c - fault points (see fault.h).
 */
#include "fault.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int fault_armed;

static const char *names[FAULT_COUNT] = {
#define FAULT_NAME(id, name) name,
    FAULT_POINTS(FAULT_NAME)
#undef FAULT_NAME
};
static long crash_at[FAULT_COUNT]; /* 0: off */
static long hits[FAULT_COUNT];
static long fail_at[FAULT_COUNT]; /* 0: off */
static int fail_errno[FAULT_COUNT];
static long calls[FAULT_COUNT]; /* fault_error() calls, counted atomically */

int fault_init(char *err, unsigned long errlen)
{
    const char *spec = getenv("COUNTERD_FAULTS");
    if (!spec || !*spec)
        return 0;
    char buf[512];
    snprintf(buf, sizeof buf, "%s", spec);
    for (char *save = NULL, *item = strtok_r(buf, ",", &save); item;
         item = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(item, '=');
        long n = 0;
        char tail;
        int e = 0;
        if (eq && sscanf(eq + 1, "eio@%ld%c", &n, &tail) == 1)
            e = EIO;
        else if (eq && sscanf(eq + 1, "enospc@%ld%c", &n, &tail) == 1)
            e = ENOSPC;
        else if (!eq || sscanf(eq + 1, "crash@%ld%c", &n, &tail) != 1)
            n = 0;
        if (n < 1) {
            snprintf(err, errlen, "COUNTERD_FAULTS: '%s' is not point=crash@N, eio@N or enospc@N",
                     item);
            return -1;
        }
        *eq = '\0';
        int p = 0;
        while (p < FAULT_COUNT && strcmp(names[p], item) != 0)
            p++;
        if (p == FAULT_COUNT) {
            snprintf(err, errlen, "COUNTERD_FAULTS: unknown fault point '%s'", item);
            return -1;
        }
        if (e) {
            fail_at[p] = n;
            fail_errno[p] = e;
        } else {
            crash_at[p] = n;
        }
        fault_armed = 1;
    }
    return 0;
}

void fault__hit(enum fault_point p)
{
    if (crash_at[p] && ++hits[p] == crash_at[p]) {
        static const char msg[] = "counterd: fault point reached: crashing\n";
        ssize_t w = write(2, msg, sizeof msg - 1);
        (void)w;
        kill(getpid(), SIGKILL);
    }
}

int fault__error(enum fault_point p)
{
    if (!fail_at[p] || __atomic_add_fetch(&calls[p], 1, __ATOMIC_RELAXED) != fail_at[p])
        return 0;
    errno = fail_errno[p];
    return fail_errno[p];
}
