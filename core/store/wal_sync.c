/*
 * wal_sync.c - the fsync thread: fdatasync off the event loop (the group commit under
 * "always", once a second under "everysec"), and the closing of segments rotation hands
 * over.
 *
 * Shares with the loop only what w->mu guards (wal_internal.h); never fsyncs again after a
 * failed fsync until a recovery snapshot covers what it was about.
 */
#define _GNU_SOURCE
#include "wal_internal.h"

#include <errno.h>
#include <pthread.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "../base/clock.h"
#include "../base/fault.h"

/* The log's own write and fdatasync: fault points for the tests (COUNTERD_FAULTS). */
int wal__log_write(struct wal *w)
{
    return fault_error(FAULT_WAL_WRITE) ? -1 : wal__write_all(w->fd, w->buf.data, w->buf.len);
}

int wal__log_fdatasync(int fd)
{
    return fault_error(FAULT_WAL_FSYNC) ? -1 : fdatasync(fd);
}

/* Flushes and closes the segments wal__rotate_ex() handed over. Called with w->mu held; drops it
 * around the system calls. */
static void settle_old(struct wal *w)
{
    while (w->nold) {
        int fd = w->old[0].fd;
        uint64_t upto = w->old[0].upto;
        /* After a failed fsync nothing is fsynced until a recovery snapshot covers it:
         * a second fdatasync may "succeed" on pages the kernel already dropped. */
        int skip = w->old[0].discard || w->sync_errno || w->policy == WAL_FSYNC_NO;
        unsigned gen = w->sync_gen;
        memmove(w->old, w->old + 1, (size_t)--w->nold * sizeof w->old[0]);
        w->busy = 1;
        pthread_mutex_unlock(&w->mu);
        int rc = skip ? 0 : wal__log_fdatasync(fd);
        int e = errno;
        close(fd);
        pthread_mutex_lock(&w->mu);
        w->busy = 0;
        if (skip || gen != w->sync_gen)
            continue;
        if (rc != 0)
            w->sync_errno = e;
        else if (upto > w->synced)
            w->synced = upto;
    }
}

/* Wakes the loop (wal_notify_fd). */
static void notify(struct wal *w)
{
    uint64_t one = 1;
    ssize_t k = write(w->notify_fd, &one, sizeof one);
    (void)k;
}

/* The position to fsync up to now, or 0 for none. Called with w->mu held. */
static uint64_t sync_target(const struct wal *w)
{
    /* want is raised under "always", and under any policy by wal_write_sync(). */
    if (w->sync_errno)
        return 0; /* see settle_old: wait for a recovery */
    if (w->want > w->synced)
        return w->want;
    /* Under "always", records held for a wal_kick() that did not come in time. */
    if (w->policy == WAL_FSYNC_ALWAYS && w->shared_written > w->synced &&
        clock_mono_ms() - w->last_sync_ms >= WAL_KICK_WAIT_MS)
        return w->shared_written;
    if (w->policy == WAL_FSYNC_EVERYSEC && w->shared_written > w->synced &&
        clock_mono_ms() - w->last_sync_ms >= 1000)
        return w->shared_written;
    return 0;
}

/* Waits for work: a signal, or under "everysec" also 200 ms, under "always" with records
 * held also the rest of WAL_KICK_WAIT_MS. Called with w->mu held. */
static void wait_for_work(struct wal *w)
{
    long ns = 200 * 1000000L;
    if (w->policy == WAL_FSYNC_ALWAYS && w->shared_written > w->synced && !w->sync_errno) {
        double left = WAL_KICK_WAIT_MS - (clock_mono_ms() - w->last_sync_ms);
        ns = left > 0 ? (long)(left * 1e6) + 1 : 1;
    } else if (w->policy != WAL_FSYNC_EVERYSEC) {
        pthread_cond_wait(&w->wake, &w->mu);
        return;
    }
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_nsec += ns;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    pthread_cond_timedwait(&w->wake, &w->mu, &ts);
}

/* fdatasyncs the current segment (and first the directory, when it has a new entry), which
 * makes everything written up to target durable. Called with w->mu held; drops it around
 * the system calls. */
static void sync_to(struct wal *w, uint64_t target)
{
    int fd = w->fd, dir = w->dir_dirty;
    unsigned gen = w->sync_gen;
    w->dir_dirty = 0;
    w->busy = 1;
    pthread_mutex_unlock(&w->mu);
    int rc = dir ? fsync(w->dir_fd) : 0;
    if (rc == 0)
        rc = wal__log_fdatasync(fd);
    int e = errno;
    if (rc == 0)
        fault_hit(FAULT_WAL_AFTER_FSYNC);
    pthread_mutex_lock(&w->mu);
    w->busy = 0;
    w->last_sync_ms = clock_mono_ms();
    if (gen != w->sync_gen) {
        /* A recovery replaced the segment meanwhile: this result is about old data. */
    } else if (rc == 0) {
        if (target > w->synced)
            w->synced = target;
    } else {
        w->sync_errno = e;
    }
    pthread_cond_broadcast(&w->idle);
}

static void *sync_main(void *arg)
{
    struct wal *w = arg;
    pthread_mutex_lock(&w->mu);
    while (!w->stop) {
        if (w->nold) {
            settle_old(w);
            if (w->policy == WAL_FSYNC_ALWAYS)
                notify(w);
            continue;
        }
        uint64_t target = sync_target(w);
        if (!target) {
            wait_for_work(w);
            continue;
        }
        sync_to(w, target);
        if (w->policy == WAL_FSYNC_ALWAYS)
            w->hold = 1; /* until the loop answered this group (wal_kick) */
        if (w->policy == WAL_FSYNC_ALWAYS || target == w->want)
            notify(w);
    }
    settle_old(w); /* what wal__rotate_ex() handed over just before the stop */
    pthread_mutex_unlock(&w->mu);
    return NULL;
}

int wal__start_sync(struct wal *w)
{
    w->notify_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    w->last_sync_ms = clock_mono_ms();
    if (w->notify_fd < 0)
        return -1;
    int e = pthread_create(&w->thread, NULL, sync_main, w);
    if (e != 0) {
        errno = e;
        return -1;
    }
    return 0;
}

void wal__stop_sync(struct wal *w)
{
    pthread_mutex_lock(&w->mu);
    w->stop = 1;
    pthread_cond_broadcast(&w->wake);
    pthread_mutex_unlock(&w->mu);
    pthread_join(w->thread, NULL);
}

uint64_t wal_synced(struct wal *w)
{
    pthread_mutex_lock(&w->mu);
    uint64_t v = w->synced;
    int e = w->sync_errno;
    pthread_mutex_unlock(&w->mu);
    if (e && w->failed != FAIL_IO) /* the fsync thread cannot log from under the lock */
        wal__fail(w, WAL_ERR_FSYNC, e,
                  "fdatasync of the log failed (what it covered may not be "
                  "on disk)");
    return v;
}
