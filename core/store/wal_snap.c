/*
 * wal_snap.c - snapshots: a forked child writes every counter, idempotency entry and
 * strong-counter state as of the end of a segment (like Redis' RDB), the parent reaps it
 * and deletes what it made obsolete; a failed one is retried, backing off.
 *
 * The child never touches the LOCK, the log or the sockets, and never renames a snapshot
 * into place once its parent is gone.
 */
#define _GNU_SOURCE
#include "wal_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../base/buf.h"
#include "../base/clock.h"
#include "../base/fault.h"
#include "../base/log.h"

struct snap_writer {
    int fd;
    struct buf b;
    int failed, err;
    uint64_t dedups;
};

/*
 * Whether writing len more bytes would leave the file system less than the log's next
 * reservation (RESERVE_CHUNK): the log and a snapshot share the disk, and a snapshot that
 * took the last of it would make the log refuse writes until the snapshot failed. Taking
 * writes comes first; the snapshot fails for want of room (ENOSPC) and is retried.
 */
static int leaves_no_room(int fd, size_t len)
{
    struct statvfs v;
    if (fstatvfs(fd, &v) < 0)
        return 0; /* the write itself will say */
    return (uint64_t)v.f_bavail * v.f_frsize < (uint64_t)len + RESERVE_CHUNK;
}

static void snap_flush(struct snap_writer *sw, int force)
{
    if (sw->b.len < (1u << 20) && !force)
        return;
    if (!sw->failed && leaves_no_room(sw->fd, sw->b.len)) {
        sw->failed = 1;
        sw->err = ENOSPC;
    } else if (!sw->failed && wal__write_all(sw->fd, sw->b.data, sw->b.len) < 0) {
        sw->failed = 1;
        sw->err = errno ? errno : EIO;
    }
    buf_reset(&sw->b);
}

static void snap_dedup(void *arg, const char *counter, size_t clen, const char *token, size_t tlen,
                       double at, const struct dedup_answer *a)
{
    struct snap_writer *sw = arg;
    wal__encode_dedup(&sw->b, counter, clen, token, tlen, at, a);
    sw->dedups++;
    snap_flush(sw, 0);
}

static void snap_strong(void *arg, const char *name, size_t len, const struct strongrep_entry *e)
{
    struct snap_writer *sw = arg;
    wal__encode_strong(&sw->b, name, len, e);
    snap_flush(sw, 0);
}

/* The exit status of a snapshot child that failed with errno e. */
static int child_status(int e)
{
    return e > 0 && e < SNAP_PARENT_GONE ? e : SNAP_PARENT_GONE - 1;
}

/*
 * Runs in the forked child: writes the snapshot and puts it in place. Never returns.
 *
 * The child keeps no descriptor but the directory's: not the LOCK (flock locks are shared
 * by the descriptors fork copies), not the listening sockets nor the log. It dies with its
 * parent (PR_SET_PDEATHSIG), and a parent that is gone gets no snapshot renamed into
 * place: the next process owns the directory the moment its predecessor is dead.
 * A failed snapshot removes its temporary file; its exit status is the errno.
 */
static void snapshot_child(struct wal *w, const struct gstore *st, const struct dedup *d,
                           uint64_t seg, pid_t parent)
{
    int dir_fd = w->dir_fd;
    if (dir_fd > 3)
        close_range(3, (unsigned)dir_fd - 1, 0);
    close_range((unsigned)dir_fd + 1, ~0u, 0);
    if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 || getppid() != parent)
        _exit(SNAP_PARENT_GONE);
    char tmp[96], name[64];
    wal__file_name(name, FILE_SNAP, seg);
    wal__file_name(tmp, FILE_SNAP_TMP, seg);
    struct snap_writer sw = {0};
    sw.fd = openat(dir_fd, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (sw.fd < 0)
        _exit(child_status(errno));
    buf_append(&sw.b, SNAP_MAGIC, MAGIC_LEN);
    uint32_t n = gstore_count(st), written = 0;
    for (uint32_t id = 0; id < n && !sw.failed; id++) {
        if (!gstore_exists(st, id))
            continue; /* dropped: its id names nothing */
        wal__encode_counter(&sw.b, st, w->tokset, id, 0, NULL, 0, NULL, 0);
        written++;
        snap_flush(&sw, 0);
    }
    dedup_foreach(d, snap_dedup, &sw);
    if (w->strong) {
        wal__encode_promise(&sw.b, strongrep_promised(w->strong));
        strongrep_each(w->strong, snap_strong, &sw);
    }
    wal__encode_end(&sw.b, written, sw.dedups);
    snap_flush(&sw, 1);
    int e = sw.failed ? sw.err : 0;
    if (!e && fsync(sw.fd) < 0)
        e = errno;
    close(sw.fd);
    if (e) {
        unlinkat(dir_fd, tmp, 0);
        _exit(child_status(e));
    }
    fault_hit(FAULT_SNAPSHOT_BEFORE_RENAME);
    if (getppid() != parent) {
        unlinkat(dir_fd, tmp, 0);
        _exit(SNAP_PARENT_GONE);
    }
    if (renameat(dir_fd, tmp, dir_fd, name) < 0) {
        e = errno;
        unlinkat(dir_fd, tmp, 0);
        _exit(child_status(e));
    }
    if (fsync(dir_fd) < 0)
        _exit(child_status(errno));
    _exit(0);
}

/* A snapshot could not be made: say so in the status, count it, retry later (backing
 * off), and leave no temporary file behind. */
static void snapshot_failed(struct wal *w, uint64_t covers, const char *why)
{
    char tmp[96];
    wal__file_name(tmp, FILE_SNAP_TMP, covers);
    unlinkat(w->dir_fd, tmp, 0); /* the child removes it, unless it was killed */
    w->errors[WAL_ERR_SNAPSHOT]++;
    double wait = SNAPSHOT_RETRY_S;
    for (int i = 0; i < w->snap_fails && wait < SNAPSHOT_RETRY_MAX_S; i++)
        wait *= 2;
    if (wait > SNAPSHOT_RETRY_MAX_S)
        wait = SNAPSHOT_RETRY_MAX_S;
    w->snap_fails++;
    w->retry_after = clock_unix_s() + wait;
    snprintf(w->snap_text, sizeof w->snap_text,
             "snapshot_failed: the snapshot covering log segments up to %" PRIu64 " in %s "
             "failed (%s); %d in a row, next try in %.0f s",
             covers, w->dir, why, w->snap_fails, wait);
    log_error("%s", w->snap_text); /* at most one a minute: the retry backs off */
}

/* Forks the child that snapshots the memory as of the end of segment covers. */
int wal__fork_snapshot(struct wal *w, const struct gstore *st, const struct dedup *d,
                       uint64_t covers)
{
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) {
        snapshot_failed(w, covers, strerror(errno));
        return -1;
    }
    if (pid == 0)
        snapshot_child(w, st, d, covers, parent);
    w->snap_pid = pid;
    w->snap_seg = covers;
    w->since_snapshot = 0;
    log_info("snapshot of %u counters started (pid %d), covering log segments up to %" PRIu64,
             gstore_live(st), (int)pid, covers);
    return 0;
}

int wal_snapshot(struct wal *w, const struct gstore *st, const struct dedup *d)
{
    if (w->snap_pid > 0 || w->failed)
        return -1;
    if (wal__rotate_ex(w, 0) < 0) {
        if (!w->failed)
            snapshot_failed(w, w->seg, "cannot start a new log segment");
        return -1;
    }
    return wal__fork_snapshot(w, st, d, w->seg - 1);
}

int wal_snapshot_running(const struct wal *w)
{
    return w->snap_pid > 0;
}

void wal__reap_snapshot(struct wal *w, int block)
{
    int status;
    pid_t r = waitpid(w->snap_pid, &status, block ? 0 : WNOHANG);
    if (r == 0 || (r < 0 && errno == EINTR))
        return;
    pid_t pid = w->snap_pid;
    w->snap_pid = 0;
    int recovering = w->recovering;
    w->recovering = 0;
    if (r < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        if (!block) {
            char why[160];
            if (r >= 0 && WIFEXITED(status) && WEXITSTATUS(status) < SNAP_PARENT_GONE - 1)
                snprintf(why, sizeof why, "pid %d: %s", (int)pid, strerror(WEXITSTATUS(status)));
            else
                snprintf(why, sizeof why, "pid %d: status 0x%x", (int)pid, r < 0 ? 0 : status);
            snapshot_failed(w, w->snap_seg, why);
        } else {
            char tmp[96]; /* killed on the way out: leave no temporary file */
            wal__file_name(tmp, FILE_SNAP_TMP, w->snap_seg);
            unlinkat(w->dir_fd, tmp, 0);
        }
        return;
    }
    if (w->snap_text[0])
        log_info("snapshots work again in %s after %d failed", w->dir, w->snap_fails);
    w->snap_text[0] = '\0';
    w->snap_fails = 0;
    if (recovering) {
        pthread_mutex_lock(&w->mu);
        if (w->recover_upto > w->synced)
            w->synced = w->recover_upto;
        w->shared_written = w->written;
        pthread_mutex_unlock(&w->mu);
        wal__recovered(w);
    }
    /* Everything the snapshot covers is now redundant. */
    struct wal_listing l;
    if (wal__list_dir(w->dir_fd, &l, 0) == 0) {
        wal__remove_covered(w, &l, w->snap_seg);
        wal__fsync_dir(w);
        wal__listing_free(&l);
    }
    char name[64];
    struct stat sb;
    wal__file_name(name, FILE_SNAP, w->snap_seg);
    if (fstatat(w->dir_fd, name, &sb, 0) == 0)
        w->snap_size = (uint64_t)sb.st_size;
    log_info("snapshot covering log segments up to %" PRIu64 " is in place (%" PRIu64 " bytes)",
             w->snap_seg, w->snap_size);
}
