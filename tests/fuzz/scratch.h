/*
 * scratch.h - a private scratch directory for a fuzz target's data directories.
 *
 * Under /dev/shm when it exists (fsync is free there, so fsync=always costs nothing),
 * else under $TMPDIR or /tmp. Named after the target and the process id; removed at a
 * normal exit. A crash leaves it behind, so each start first removes the directories of
 * processes that no longer exist.
 *
 * Never linked into counterd.
 */
#ifndef COUNTERD_FUZZ_SCRATCH_H
#define COUNTERD_FUZZ_SCRATCH_H

/* @return the path of a new empty directory for this process (exits on failure). */
const char *scratch_dir(const char *target);

/* Removes everything inside path, keeping path itself. */
void scratch_empty(const char *path);

#endif
