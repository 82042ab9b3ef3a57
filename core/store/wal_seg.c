/*
 * wal_seg.c - the data directory and its files: their names, listing them, the lock,
 * small files written atomically, and log segments (created, started anew by rotation).
 *
 * Plain file-system calls; never decides what a file's records mean (wal_recover.c) nor
 * which replica id the node counts under (wal_id.c).
 */
#define _GNU_SOURCE
#include "wal_internal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../base/log.h"
#include "../base/mem.h"

int wal__fsync_dir(struct wal *w)
{
    return fsync(w->dir_fd);
}

static int mkdir_p(const char *path)
{
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s", path);
    for (char *p = tmp + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(tmp, 0755) < 0 && errno != EEXIST)
            return -1;
        *p = '/';
    }
    return mkdir(tmp, 0755) < 0 && errno != EEXIST ? -1 : 0;
}

int wal__write_all(int fd, const void *p, size_t n)
{
    const char *c = p;
    while (n) {
        ssize_t k = write(fd, c, n);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            return -1;
        c += k;
        n -= (size_t)k;
    }
    return 0;
}

/* Writes a small file atomically (temp, fsync, rename, fsync dir). */
int wal__write_small(struct wal *w, const char *name, const char *text)
{
    char tmp[64];
    snprintf(tmp, sizeof tmp, "%s.tmp", name);
    int fd = openat(w->dir_fd, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return -1;
    int rc = wal__write_all(fd, text, strlen(text)) == 0 && fsync(fd) == 0 ? 0 : -1;
    close(fd);
    if (rc == 0)
        rc = renameat(w->dir_fd, tmp, w->dir_fd, name);
    if (rc < 0) {
        int e = errno;
        unlinkat(w->dir_fd, tmp, 0);
        errno = e;
    }
    if (rc == 0)
        rc = wal__fsync_dir(w);
    return rc;
}

/* The files named after a segment number, and their names' one format. */
static const struct {
    const char *prefix, *suffix;
} file_kinds[] = {
    [FILE_LOG] = {"wal-", ".log"},
    [FILE_SNAP] = {"snapshot-", ".snap"},
    [FILE_SNAP_TMP] = {"snapshot-", ".snap.tmp"},
};
void wal__file_name(char out[FILE_NAME_LEN], enum wal_file_kind k, uint64_t n)
{
    snprintf(out, FILE_NAME_LEN, "%s%08" PRIu64 "%s", file_kinds[k].prefix, n,
             file_kinds[k].suffix);
}

/* Whether name is a file of kind k, and its segment number. @return 1 (with *n) or 0. */
static int file_parse(const char *name, enum wal_file_kind k, uint64_t *n)
{
    size_t plen = strlen(file_kinds[k].prefix);
    if (strncmp(name, file_kinds[k].prefix, plen) != 0 || name[plen] < '0' || name[plen] > '9')
        return 0;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(name + plen, &end, 10);
    if (errno || strcmp(end, file_kinds[k].suffix) != 0)
        return 0;
    *n = v;
    return 1;
}

/* Creates a segment with its header. Its directory entry is fsynced by the fsync thread
 * before the first fsync of its records (w->dir_dirty); a torn header is handled at
 * start-up. Call with w->mu held once the thread runs. */
int wal__open_segment(struct wal *w, uint64_t seg)
{
    char name[64];
    wal__file_name(name, FILE_LOG, seg);
    int fd = openat(w->dir_fd, name, O_WRONLY | O_CREAT | O_EXCL | O_APPEND | O_CLOEXEC, 0644);
    if (fd < 0)
        return -1;
    if (wal__write_all(fd, LOG_MAGIC, MAGIC_LEN) < 0) {
        int e = errno;
        close(fd);
        unlinkat(w->dir_fd, name, 0); /* or the next try finds it there (a full disk) */
        errno = e;
        return -1;
    }
    w->dir_dirty = 1;
    return fd;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

int wal__list_dir(int dir_fd, struct wal_listing *l, int remove_tmp)
{
    memset(l, 0, sizeof *l);
    int fd = dup(dir_fd);
    DIR *d = fdopendir(fd);
    if (!d) {
        close(fd);
        return -1;
    }
    rewinddir(d);
    size_t cs = 0, cn = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        uint64_t n;
        if (file_parse(e->d_name, FILE_LOG, &n)) {
            if (l->nsegs == cs)
                l->segs = xrealloc(l->segs, (cs = cs ? cs * 2 : 16) * sizeof *l->segs);
            l->segs[l->nsegs++] = n;
        } else if (file_parse(e->d_name, FILE_SNAP, &n)) {
            if (l->nsnaps == cn)
                l->snaps = xrealloc(l->snaps, (cn = cn ? cn * 2 : 4) * sizeof *l->snaps);
            l->snaps[l->nsnaps++] = n;
        } else if (!strcmp(e->d_name, "meta")) {
            l->has_meta = 1;
        } else if (!strcmp(e->d_name, "clean")) {
            l->has_clean = 1;
        } else if (remove_tmp && strlen(e->d_name) > 4 &&
                   !strcmp(e->d_name + strlen(e->d_name) - 4, ".tmp")) {
            if (unlinkat(dir_fd, e->d_name, 0) == 0)
                log_warn("removed %s: a temporary file of a snapshot (or meta file) that never "
                         "finished, left by a process that died",
                         e->d_name);
        }
    }
    closedir(d);
    if (l->nsegs)
        qsort(l->segs, l->nsegs, sizeof *l->segs, cmp_u64);
    if (l->nsnaps)
        qsort(l->snaps, l->nsnaps, sizeof *l->snaps, cmp_u64);
    return 0;
}

void wal__listing_free(struct wal_listing *l)
{
    free(l->segs);
    free(l->snaps);
}

int wal__lock_dir(struct wal *w, const char *dir, char *err, size_t errlen)
{
    if (mkdir_p(dir) < 0 || (w->dir_fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0) {
        snprintf(err, errlen, "cannot use data directory %s: %s", dir, strerror(errno));
        return -1;
    }
    w->lock_fd = openat(w->dir_fd, "LOCK", O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    /* A snapshot child of a process that just died may hold the lock for the moment it
     * takes to drop it (see snapshot_child): wait up to a second. */
    int locked = -1;
    for (int i = 0; w->lock_fd >= 0 && i < 20; i++) {
        if ((locked = flock(w->lock_fd, LOCK_EX | LOCK_NB)) == 0 || errno != EWOULDBLOCK)
            break;
        usleep(50 * 1000);
    }
    if (w->lock_fd < 0 || locked < 0) {
        snprintf(err, errlen, "data directory %s is in use by another counterd process", dir);
        return -1;
    }
    return 0;
}

void wal__remove_covered(struct wal *w, const struct wal_listing *l, uint64_t upto)
{
    char name[FILE_NAME_LEN];
    for (size_t i = 0; i < l->nsegs; i++)
        if (l->segs[i] <= upto) {
            wal__file_name(name, FILE_LOG, l->segs[i]);
            unlinkat(w->dir_fd, name, 0);
        }
    for (size_t i = 0; i < l->nsnaps; i++)
        if (l->snaps[i] < upto) {
            wal__file_name(name, FILE_SNAP, l->snaps[i]);
            unlinkat(w->dir_fd, name, 0);
        }
}

int wal__read_file(int dir_fd, const char *name, unsigned char **data, size_t *size, char *err,
                   size_t errlen)
{
    int fd = openat(dir_fd, name, O_RDONLY | O_CLOEXEC);
    struct stat sb;
    if (fd < 0 || fstat(fd, &sb) < 0) {
        snprintf(err, errlen, "cannot read %s: %s", name, strerror(errno));
        if (fd >= 0)
            close(fd);
        return -1;
    }
    *size = (size_t)sb.st_size;
    *data = xmalloc(*size ? *size : 1);
    size_t got = 0;
    while (got < *size) {
        ssize_t n = read(fd, *data + got, *size - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            snprintf(err, errlen, "cannot read %s: %s", name, n < 0 ? strerror(errno) : "short");
            close(fd);
            free(*data);
            return -1;
        }
        got += (size_t)n;
    }
    close(fd);
    return 0;
}

/* ---------------------------------------------------------------- segments */

/* Starts the next segment; the fsync thread flushes (per policy) and closes the old one,
 * so the loop never waits for the disk here. discard: the old one's records need no
 * fsync (a recovery snapshot covers them); its buffered records are dropped too. */
int wal__rotate_ex(struct wal *w, int discard)
{
    if (!discard && wal_write(w) < 0)
        return -1;
    pthread_mutex_lock(&w->mu);
    int rc = -1;
    if (w->nold < (int)(sizeof w->old / sizeof w->old[0])) {
        int fd = wal__open_segment(w, w->seg + 1);
        if (fd >= 0) {
            wal__release_room(w->fd, w->seg_size, w->reserved);
            w->old[w->nold].fd = w->fd;
            w->old[w->nold].upto = w->written;
            w->old[w->nold].discard = discard;
            w->nold++;
            w->fd = fd;
            w->seg++;
            w->seg_size = MAGIC_LEN;
            w->reserved = 0;
            if (discard)
                wal__forget_failed(w);
            pthread_cond_signal(&w->wake);
            rc = 0;
        }
    } else {
        errno = EBUSY; /* the disk is far behind: snapshot later */
    }
    pthread_mutex_unlock(&w->mu);
    if (rc < 0 && !discard)
        log_error("cannot start a new log segment in %s: %s", w->dir, strerror(errno));
    return rc;
}
