/*
 * wal.c - the durable log and snapshots (see wal.h): opening and closing, appending and
 * writing records, housekeeping. The concerns live beside it: wal_rec.c (record codec),
 * wal_recover.c (start-up replay), wal_seg.c (directory and segments), wal_id.c (replica id),
 * wal_fail.c (failures, disk-full reserve), wal_sync.c (fsync thread), wal_snap.c
 * (snapshots); wal_internal.h is what they share.
 *
 * Threads and positions: see wal_internal.h. Never says a position is written or durable
 * before write(2) (or the fsync thread) returned for it.
 */
#define _GNU_SOURCE
#include "wal_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../base/buf.h"
#include "../base/clock.h"
#include "../base/fault.h"
#include "../base/log.h"
#include "../base/mem.h"

int wal_parse_fsync(const char *s)
{
    if (!strcmp(s, "always"))
        return WAL_FSYNC_ALWAYS;
    if (!strcmp(s, "everysec"))
        return WAL_FSYNC_EVERYSEC;
    if (!strcmp(s, "no"))
        return WAL_FSYNC_NO;
    return -1;
}

const char *wal_fsync_name(enum wal_fsync f)
{
    return f == WAL_FSYNC_ALWAYS ? "always" : f == WAL_FSYNC_EVERYSEC ? "everysec" : "no";
}

/* ---------------------------------------------------------------- open and close */

/* Frees w and closes what it holds (the fsync thread must be stopped already). */
static void release(struct wal *w)
{
    if (w->snap_pid > 0) {
        kill(w->snap_pid, SIGKILL);
        wal__reap_snapshot(w, 1);
    }
    int fds[4] = {w->fd, w->notify_fd, w->lock_fd /* releases the flock */, w->dir_fd};
    for (int i = 0; i < 4; i++)
        if (fds[i] >= 0)
            close(fds[i]);
    buf_free(&w->buf);
    pthread_mutex_destroy(&w->mu);
    pthread_cond_destroy(&w->wake);
    pthread_cond_destroy(&w->idle);
    free(w->dir);
    free(w->node_id);
    free(w);
}

/* A log not yet open: w's options, no descriptor, the fsync thread's lock and signals. */
static struct wal *wal_new(const struct wal_opts *o)
{
    struct wal *w = xcalloc(1, sizeof *w);
    w->dir = xstrdup(o->dir);
    w->node_id = xstrdup(o->node_id);
    w->tokset = o->tokset;
    w->strong = o->strong;
    w->policy = o->fsync;
    w->snapshot_bytes = o->snapshot_bytes ? o->snapshot_bytes : (64u << 20);
    w->fd = w->lock_fd = w->notify_fd = w->dir_fd = -1;
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->wake, NULL);
    pthread_cond_init(&w->idle, NULL);
    return w;
}

/*
 * After recovery: drops the clean mark, starts a new segment after every file in l (and
 * after snapshot snap), deletes what snap covers, counts the segments replayed since it
 * toward the next snapshot, and starts the fsync thread. @return 0, or -1 with err.
 */
static int start_log(struct wal *w, const struct wal_listing *l, uint64_t snap, char *err,
                     size_t errlen)
{
    if (l->has_clean && (unlinkat(w->dir_fd, "clean", 0) < 0 || wal__fsync_dir(w) < 0)) {
        snprintf(err, errlen, "cannot remove %s/clean: %s", w->dir, strerror(errno));
        return -1;
    }
    w->seg = (l->nsegs ? l->segs[l->nsegs - 1] : 0);
    if (w->seg < snap)
        w->seg = snap;
    w->seg++;
    if ((w->fd = wal__open_segment(w, w->seg)) < 0) {
        snprintf(err, errlen, "cannot create log segment %" PRIu64 " in %s: %s", w->seg, w->dir,
                 strerror(errno));
        return -1;
    }
    w->seg_size = MAGIC_LEN;
    /* Files the snapshot covers are left over from a stop between a snapshot and their
     * deletion. */
    wal__remove_covered(w, l, snap);
    /* The segments replayed since the snapshot count toward the next one. */
    for (size_t i = 0; i < l->nsegs; i++)
        if (l->segs[i] > snap) {
            struct stat sb;
            char name[FILE_NAME_LEN];
            wal__file_name(name, FILE_LOG, l->segs[i]);
            if (fstatat(w->dir_fd, name, &sb, 0) == 0)
                w->since_snapshot += (uint64_t)sb.st_size;
        }
    if (wal__start_sync(w) < 0) {
        snprintf(err, errlen, "cannot start the fsync thread: %s", strerror(errno));
        return -1;
    }
    return 0;
}

struct wal *wal_open(const struct wal_opts *o, struct gstore *st, struct dedup *d,
                     struct wal_info *info, char *err, size_t errlen)
{
    double t0 = clock_mono_ms();
    memset(info, 0, sizeof *info);
    struct wal *w = wal_new(o);
    struct wal_listing l = {0};
    char meta_replica[GSTORE_REPLICA_NAME_MAX + 1] = "";
    uint64_t snap = 0;
    if (wal__lock_dir(w, o->dir, err, errlen) < 0)
        goto fail;
    if (wal__list_dir(w->dir_fd, &l, 0) < 0) {
        snprintf(err, errlen, "cannot list %s: %s", o->dir, strerror(errno));
        goto fail;
    }
    /* Who this directory belongs to; then its state (nothing on disk changes until all of
     * it has been read); then the replica id; then a new segment to write to. */
    if (wal__check_meta(w, &l, meta_replica, sizeof meta_replica, err, errlen) < 0 ||
        wal__recover(w, &l, st, d, info, &snap, err, errlen) < 0 ||
        wal__settle_replica_id(w, &l, meta_replica, st, info, err, errlen) < 0 ||
        start_log(w, &l, snap, err, errlen) < 0)
        goto fail;
    wal__listing_free(&l);
    info->ms = clock_mono_ms() - t0;
    return w;
fail:
    wal__listing_free(&l);
    release(w);
    return NULL;
}

int wal_close(struct wal *w)
{
    if (!w)
        return 0;
    if (w->failed == FAIL_SPACE) {
        w->retry_at = 0; /* one last try: a clean stop keeps the replica id */
        wal__recover_space(w);
    }
    int rc = wal_write(w);
    if (rc == 0 && !w->failed)
        wal__release_room(w->fd, w->seg_size, w->reserved);
    wal__stop_sync(w);
    if (rc == 0 && !w->failed && wal__log_fdatasync(w->fd) == 0) {
        char text[GSTORE_REPLICA_NAME_MAX + 2] = "";
        rc = wal__write_small(w, "clean", text);
    } else {
        rc = -1;
    }
    if (rc < 0)
        log_error("data directory %s: the final write failed; the next start will use a new "
                  "replica id",
                  w->dir);
    release(w);
    return rc;
}

void wal_abandon(struct wal *w)
{
    if (!w)
        return;
    wal__stop_sync(w);
    release(w);
}

/* ---------------------------------------------------------------- writing */

/* Counts the bytes an encode_* call just buffered. @return the position after them. */
static uint64_t appended(struct wal *w, size_t before)
{
    w->appended += w->buf.len - before;
    return w->appended;
}

uint64_t wal_append(struct wal *w, const struct gstore *st, uint32_t id, const char *token,
                    size_t tlen, const struct dedup_answer *a, double at)
{
    size_t before = w->buf.len;
    /* The elements this change made carry the counter's sequence number. */
    uint64_t mseq = gstore_counter_mseq(gstore_counter(st, id));
    wal__encode_counter(&w->buf, st, w->tokset, id, mseq ? mseq - 1 : 0, token, tlen, a, at);
    return appended(w, before);
}

uint64_t wal_append_drop(struct wal *w, const struct gstore *st, uint32_t id)
{
    size_t before = w->buf.len, nlen;
    const char *name = gstore_counter_name(gstore_counter(st, id), &nlen);
    wal__encode_drop(&w->buf, name, nlen);
    return appended(w, before);
}

uint64_t wal_append_tokens(struct wal *w, const struct gstore *st, uint32_t id, uint64_t after)
{
    size_t before = w->buf.len;
    wal__encode_counter(&w->buf, st, w->tokset, id, after, NULL, 0, NULL, 0);
    return appended(w, before);
}

/* The buffer reached the file: account for it. */
void wal__wrote(struct wal *w)
{
    w->written = w->appended;
    w->seg_size += w->buf.len;
    w->since_snapshot += w->buf.len;
    buf_trim(&w->buf, 4u << 20);
    pthread_mutex_lock(&w->mu);
    int none_held = w->shared_written <= w->synced;
    w->shared_written = w->written;
    /* Under "always" an idle thread starts at once; a busy one, or one whose last fsync the
     * loop has not yet answered, takes these records with the next group (wal_kick). An
     * idle thread is woken for the first records held, to bound their wait. */
    if (w->policy == WAL_FSYNC_ALWAYS && !w->busy && !w->hold) {
        w->want = w->written;
        pthread_cond_signal(&w->wake);
    } else if (w->policy == WAL_FSYNC_ALWAYS && !w->busy && none_held) {
        pthread_cond_signal(&w->wake);
    }
    pthread_mutex_unlock(&w->mu);
}

/* A write failed with e: cut what part of it reached the file, so the records written
 * again later follow a whole one, and keep them buffered. */
static void write_failed(struct wal *w, int e)
{
    int cut = ftruncate(w->fd, (off_t)w->seg_size) == 0;
    w->held = w->buf.len;
    w->write_failed = 1;
    if (cut)
        wal__fail(w, wal__kind_of(e), e, "cannot write the log");
    else
        wal__fail(w, WAL_ERR_IO, e, "cannot write the log nor cut the partial write");
}

int wal_write(struct wal *w)
{
    /* A refused reservation leaves what was reserved before it writable: only a failed
     * write or fsync stops the log writing. */
    if (w->failed == FAIL_IO || w->write_failed) {
        /* Records appended since the failure (callers check wal_reserve first, so there
         * should be none) wait with the others; only their answers are refused. */
        if (w->buf.len <= w->held)
            return 0;
        w->held = w->buf.len;
        return -1;
    }
    if (w->buf.len == 0)
        return 0;
    fault_hit(FAULT_WAL_BEFORE_WRITE);
    if (wal__log_write(w) < 0) {
        write_failed(w, errno);
        return -1;
    }
    fault_hit(FAULT_WAL_AFTER_WRITE);
    wal__wrote(w);
    return 0;
}

uint64_t wal_append_strong(struct wal *w, const char *counter, size_t clen,
                           const struct strongrep_entry *e)
{
    size_t before = w->buf.len;
    wal__encode_strong(&w->buf, counter, clen, e);
    return appended(w, before);
}

uint64_t wal_append_promise(struct wal *w, uint64_t epoch)
{
    size_t before = w->buf.len;
    wal__encode_promise(&w->buf, epoch);
    return appended(w, before);
}

int wal_write_sync(struct wal *w)
{
    if (wal_write(w) < 0)
        return -1;
    pthread_mutex_lock(&w->mu);
    if (w->want < w->written) {
        w->want = w->written;
        pthread_cond_signal(&w->wake);
    }
    pthread_mutex_unlock(&w->mu);
    return 0;
}

int wal_failed(const struct wal *w)
{
    return w->failed;
}

uint64_t wal_position(const struct wal *w)
{
    return w->appended;
}

uint64_t wal_durable(struct wal *w)
{
    if (w->policy != WAL_FSYNC_ALWAYS)
        return w->written;
    return wal_synced(w);
}

int wal_notify_fd(const struct wal *w)
{
    return w->notify_fd;
}

void wal_notified(struct wal *w)
{
    uint64_t v;
    ssize_t k = read(w->notify_fd, &v, sizeof v);
    (void)k;
}

void wal_kick(struct wal *w)
{
    if (w->policy != WAL_FSYNC_ALWAYS)
        return;
    wal_write(w); /* what this iteration's requests appended joins the group */
    pthread_mutex_lock(&w->mu);
    w->hold = 0;
    if (!w->busy && w->want < w->written) {
        w->want = w->written;
        pthread_cond_signal(&w->wake);
    }
    pthread_mutex_unlock(&w->mu);
}

enum wal_fsync wal_policy(const struct wal *w)
{
    return w->policy;
}

void wal_tick(struct wal *w, const struct gstore *st, const struct dedup *d)
{
    if (w->snap_pid > 0) {
        wal__reap_snapshot(w, 0);
        return;
    }
    if (w->failed == FAIL_SPACE)
        wal__recover_space(w);
    else if (w->failed == FAIL_IO)
        wal__recover_io(w, st, d);
    if (w->failed)
        return;
    /* Like Redis' AOF rewrite: not before the log is as big as the last snapshot, so a
     * large store is not rewritten over and over (write amplification stays under 2x). */
    uint64_t due = w->snapshot_bytes > w->snap_size ? w->snapshot_bytes : w->snap_size;
    if ((w->since_snapshot >= due || w->snap_text[0]) && clock_unix_s() >= w->retry_after)
        wal_snapshot(w, st, d); /* a failed one is retried whatever the log's size */
}
