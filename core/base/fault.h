/*
 * fault.h - fault points: the places a crash test can make the process die on purpose.
 *
 * Declared once here; switched on by the environment, COUNTERD_FAULTS="point=crash@N,...":
 * the Nth time the point is reached, the process sends itself SIGKILL (no clean-up, like
 * a power cut for everything not yet on disk). Off, a point costs one predictable branch.
 * Points that stand for a system call (fault_error) also take "point=eio@N" or
 * "point=enospc@N": the Nth call fails with that errno instead.
 */
#ifndef COUNTERD_BASE_FAULT_H
#define COUNTERD_BASE_FAULT_H

#define FAULT_POINTS(X)                                                                            \
    X(WAL_BEFORE_WRITE, "wal_before_write")             /* records buffered, not yet written */    \
    X(WAL_AFTER_WRITE, "wal_after_write")               /* written to the file, not yet fsynced */ \
    X(WAL_AFTER_FSYNC, "wal_after_fsync")               /* durable, not yet acknowledged */        \
    X(SNAPSHOT_BEFORE_RENAME, "snapshot_before_rename") /* snapshot written, not in place */       \
    X(WAL_WRITE, "wal_write")                           /* the log's write(2) */                   \
    X(WAL_FSYNC, "wal_fsync")                           /* the log's fdatasync */

enum fault_point {
#define FAULT_ENUM(id, name) FAULT_##id,
    FAULT_POINTS(FAULT_ENUM)
#undef FAULT_ENUM
        FAULT_COUNT
};

extern int fault_armed; /* any point switched on */

/* Reads COUNTERD_FAULTS. @return 0, or -1 with a sentence in err for a bad setting. */
int fault_init(char *err, unsigned long errlen);
void fault__hit(enum fault_point p);

static inline void fault_hit(enum fault_point p)
{
    if (__builtin_expect(fault_armed, 0))
        fault__hit(p);
}

int fault__error(enum fault_point p);

/* Reached before the system call p stands for. @return 0, or the errno it must fail with
 * (errno is then set too). Thread-safe. */
static inline int fault_error(enum fault_point p)
{
    if (__builtin_expect(fault_armed, 0))
        return fault__error(p);
    return 0;
}

#endif
