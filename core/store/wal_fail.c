/*
 * wal_fail.c - what makes the log fail and how it recovers by itself (wal.h "Failures"):
 * error kinds and counts, the disk-full reserve (space allocated ahead of the writes), and
 * the two recoveries (room again; a fresh segment and snapshot after an I/O error).
 *
 * Loop thread only. Never acknowledges what a failure may have lost: writes stay refused
 * until the recovery is on disk.
 */
#define _GNU_SOURCE
#include "wal_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "../base/buf.h"
#include "../base/clock.h"
#include "../base/log.h"

static const char *const kind_names[WAL_ERR_COUNT] = {"disk_full", "io_error", "fsync", "snapshot"};

const char *wal_error_name(enum wal_error e)
{
    return (unsigned)e < WAL_ERR_COUNT ? kind_names[e] : "unknown";
}

/* Errors that more free space cures; anything else may have left data behind it unsure. */
int wal__space_errno(int e)
{
    return e == ENOSPC || e == EDQUOT;
}

enum wal_error wal__kind_of(int e)
{
    return wal__space_errno(e) ? WAL_ERR_DISK_FULL : WAL_ERR_IO;
}

/*
 * Counts an error of kind and, on the first one, stops the log taking writes: one log line
 * per transition. A later I/O or fsync error turns a full disk into the graver state.
 */
void wal__fail(struct wal *w, enum wal_error kind, int e, const char *what)
{
    w->errors[kind]++;
    int to = kind == WAL_ERR_DISK_FULL ? FAIL_SPACE : FAIL_IO;
    if (w->failed >= to)
        return;
    if (!w->failed)
        w->fail_since = clock_unix_s();
    /* Records applied but not in the log (a failed write), or not surely on disk (a failed
     * fsync): a crash now must not keep the replica id. A refused reservation applied
     * nothing. */
    if (kind != WAL_ERR_DISK_FULL || w->write_failed)
        wal_forget_run(w);
    w->failed = to;
    w->retry_at = clock_mono_ms() + RETRY_MS;
    snprintf(w->fail_text, sizeof w->fail_text, "%s: %s in %s: %s", kind_names[kind], what, w->dir,
             strerror(e));
    log_error("%s; this node answers writes 503 until %s", w->fail_text,
              to == FAIL_SPACE ? "there is room again (it retries every second)"
                               : "a fresh snapshot and log segment are on disk (it retries)");
}

void wal__recovered(struct wal *w)
{
    log_info("the log in %s takes writes again, %.1f s after \"%s\"", w->dir,
             clock_unix_s() - w->fail_since, w->fail_text);
    w->failed = FAIL_NONE;
    w->fail_text[0] = '\0';
    w->held = 0;
    w->write_failed = 0;
    /* Room came back: a snapshot that failed for want of it need not wait out its back-off
     * (up to a minute) before it tries again. */
    w->retry_after = 0;
}

/*
 * Makes the current segment's space up to file offset end allocated (fallocate keeping the
 * size, so a crash leaves no zeros in the log), a chunk at a time and then, when the disk
 * is nearly full, exactly what is needed. @return 0, or -1 with errno.
 */
int wal__reserve_room(struct wal *w, uint64_t end)
{
    uint64_t from = w->reserved > w->seg_size ? w->reserved : w->seg_size;
    if (w->no_prealloc || end <= from)
        return 0;
    uint64_t len = end - from < RESERVE_CHUNK ? RESERVE_CHUNK : end - from;
    int rc;
    while ((rc = fallocate(w->fd, FALLOC_FL_KEEP_SIZE, (off_t)from, (off_t)len)) < 0 &&
           errno == EINTR)
        ;
    if (rc < 0 && wal__space_errno(errno) && len > end - from) {
        len = end - from;
        rc = fallocate(w->fd, FALLOC_FL_KEEP_SIZE, (off_t)from, (off_t)len);
    }
    if (rc == 0) {
        w->reserved = from + len;
        return 0;
    }
    if (errno == EOPNOTSUPP || errno == ENOSYS) {
        w->no_prealloc = 1;
        log_warn("the file system of %s cannot reserve space ahead (fallocate: %s): a full disk "
                 "is noticed only when a write fails, and the writes of that moment are applied "
                 "but not acknowledged",
                 w->dir, strerror(errno));
        return 0;
    }
    return -1;
}

/* Gives back the space reserved past the end of a segment (it is being left). */
void wal__release_room(int fd, uint64_t size, uint64_t reserved)
{
    if (reserved > size)
        (void)fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)size,
                        (off_t)(reserved - size));
}

int wal_reserve(struct wal *w, size_t need)
{
    if (w->failed)
        return -1;
    if (wal__reserve_room(w, w->seg_size + w->buf.len + need) == 0)
        return 0;
    int e = errno;
    wal__fail(w, wal__kind_of(e), e, "cannot reserve space for the log");
    return -1;
}

const char *wal_status(const struct wal *w)
{
    return w->failed ? w->fail_text : NULL;
}

const char *wal_snapshot_status(const struct wal *w)
{
    return w->snap_text[0] ? w->snap_text : NULL;
}

int wal_sync_failed(const struct wal *w)
{
    return w->failed == FAIL_IO;
}

uint64_t wal_errors(const struct wal *w, enum wal_error e)
{
    return (unsigned)e < WAL_ERR_COUNT ? w->errors[e] : 0;
}

/*
 * Drops what a failed log holds: the records that could not be written, and the fsync
 * error (the thread fsyncs again, but claims nothing about older positions). What they
 * covered is in the memory the recovery snapshot is taken from. Call with w->mu held.
 */
void wal__forget_failed(struct wal *w)
{
    buf_reset(&w->buf);
    w->held = 0;
    w->write_failed = 0;
    w->written = w->appended;
    w->shared_written = w->want = w->synced;
    w->sync_errno = 0;
    w->sync_gen++;
}

/* A full disk: write what is held once there is room for it and some more. */
void wal__recover_space(struct wal *w)
{
    if (clock_mono_ms() < w->retry_at)
        return;
    w->retry_at = clock_mono_ms() + RETRY_MS;
    if (wal__reserve_room(w, w->seg_size + w->buf.len + RECOVER_ROOM) < 0) {
        int e = errno;
        w->errors[wal__kind_of(e)]++;
        if (!wal__space_errno(e))
            wal__fail(w, WAL_ERR_IO, e, "cannot reserve space for the log");
        return;
    }
    if (w->buf.len) {
        if (wal__log_write(w) < 0) {
            int e = errno;
            if (ftruncate(w->fd, (off_t)w->seg_size) < 0 || !wal__space_errno(e))
                wal__fail(w, WAL_ERR_IO, e, "cannot write the log");
            else
                w->errors[WAL_ERR_DISK_FULL]++;
            return;
        }
        wal__wrote(w);
    }
    wal__recovered(w);
}

/*
 * An I/O or fsync error: what was written since the last good fsync may never reach the
 * disk, and a second fsync cannot be trusted to say so. The memory is right, so a snapshot
 * of it, after a fresh segment, makes everything durable again; writes wait for it.
 */
void wal__recover_io(struct wal *w, const struct gstore *st, const struct dedup *d)
{
    if (clock_mono_ms() < w->retry_at || clock_unix_s() < w->retry_after)
        return;
    w->retry_at = clock_mono_ms() + RETRY_MS;
    /* A fresh segment, unless no record went to the current one (then the snapshot of
     * the segments before it covers everything). */
    if (w->seg_size > MAGIC_LEN || w->buf.len || w->seg == 1) {
        if (wal__rotate_ex(w, 1) < 0) {
            int e = errno;
            w->errors[wal__kind_of(e)]++;
            return;
        }
    } else {
        pthread_mutex_lock(&w->mu);
        wal__forget_failed(w);
        pthread_mutex_unlock(&w->mu);
    }
    w->recover_upto = w->appended;
    if (wal__fork_snapshot(w, st, d, w->seg - 1) == 0)
        w->recovering = 1;
}
