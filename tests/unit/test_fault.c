/*
 * test_fault.c - unit tests of the fault points (core/base/fault.c) that the crash and
 * disk-full tests rely on: COUNTERD_FAULTS is read strictly, "eio@N"/"enospc@N" fail the
 * Nth call exactly, and "crash@N" kills the process at the Nth hit, not before.
 *
 * The points' counters are process-wide: each case arms a point no other case uses.
 * Never include this from core/.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "base/fault.h"
#include "unit.h"

static int init_with(const char *spec, char *err, size_t errlen)
{
    setenv("COUNTERD_FAULTS", spec, 1);
    err[0] = '\0';
    return fault_init(err, errlen);
}

static void test_bad_settings_are_refused(void)
{
    static const char *const bad[] = {"wal_write",        "wal_write=",          "wal_write=boom@1",
                                      "wal_write=eio@0",  "wal_write=eio@-2",    "wal_write=eio@3x",
                                      "wal_write=crash@", "wal_fsync=enospc@1.5"};
    char err[256];
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        unit_context("%s", bad[i]);
        CHECK_EQ_I64(init_with(bad[i], err, sizeof err), -1);
        CHECK(strstr(err, "is not point=crash@N, eio@N or enospc@N") != NULL);
    }
    unit_context("%s", "");
    CHECK_EQ_I64(init_with("no_such_point=eio@1", err, sizeof err), -1);
    CHECK_STR_EQ(err, "COUNTERD_FAULTS: unknown fault point 'no_such_point'");
    /* Nothing set: nothing armed, nothing fails. */
    CHECK_EQ_I64(init_with("", err, sizeof err), 0);
    CHECK_EQ_I64(fault_armed, 0);
    CHECK_EQ_I64(fault_error(FAULT_WAL_WRITE), 0);
}

/* The Nth call fails with the errno asked for, and only that one. */
static void test_error_points_fail_the_nth_call(void)
{
    char err[256];
    REQUIRE(init_with("wal_fsync=enospc@3", err, sizeof err) == 0);
    CHECK_EQ_I64(fault_armed, 1);
    CHECK_EQ_I64(fault_error(FAULT_WAL_FSYNC), 0);
    CHECK_EQ_I64(fault_error(FAULT_WAL_FSYNC), 0);
    errno = 0;
    CHECK_EQ_I64(fault_error(FAULT_WAL_FSYNC), ENOSPC);
    CHECK_EQ_I64(errno, ENOSPC);
    CHECK_EQ_I64(fault_error(FAULT_WAL_FSYNC), 0);
    CHECK_EQ_I64(fault_error(FAULT_WAL_WRITE), 0); /* another point: untouched */

    REQUIRE(init_with("wal_write=eio@1", err, sizeof err) == 0);
    CHECK_EQ_I64(fault_error(FAULT_WAL_WRITE), EIO);
    CHECK_EQ_I64(fault_error(FAULT_WAL_WRITE), 0);
}

/* crash@3: a child passes the point twice, and dies of SIGKILL at the third. */
static void test_crash_point_kills_at_the_nth_hit(void)
{
    int fds[2];
    REQUIRE(pipe(fds) == 0);
    fflush(NULL);
    pid_t pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        close(fds[0]);
        char err[256];
        if (init_with("snapshot_before_rename=crash@3", err, sizeof err) != 0)
            _exit(2);
        for (int i = 0; i < 5; i++) {
            fault_hit(FAULT_SNAPSHOT_BEFORE_RENAME);
            if (write(fds[1], "x", 1) != 1)
                _exit(3);
        }
        _exit(0);
    }
    close(fds[1]);
    char got[8];
    ssize_t n, total = 0;
    while ((n = read(fds[0], got, sizeof got)) > 0)
        total += n;
    close(fds[0]);
    int status;
    REQUIRE(waitpid(pid, &status, 0) == pid);
    CHECK(WIFSIGNALED(status));
    CHECK_EQ_I64(WIFSIGNALED(status) ? WTERMSIG(status) : -1, SIGKILL);
    CHECK_EQ_I64(total, 2);
}

UNIT_MAIN("test_fault", UNIT_CASE(test_bad_settings_are_refused),
          UNIT_CASE(test_error_points_fail_the_nth_call),
          UNIT_CASE(test_crash_point_kills_at_the_nth_hit))
