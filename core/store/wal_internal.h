/*
 * wal_internal.h - what the log's files share inside core/store (never included from
 * outside it; wal.h is the interface): the record format's constants, struct wal, the
 * record reader, and the wal__ functions one wal*.c file offers the others.
 *
 * Threads: the event loop's thread does everything but fdatasync, which a second thread
 * runs so the loop keeps serving while the disk works (wal_sync.c). Under "always" that
 * thread is the group commit: every record written before it starts an fdatasync shares
 * that one call, and the records written while it runs wait for the loop's wal_kick() (the
 * answers it released come back meanwhile) before the next. The two share w->mu for: want,
 * synced, shared_written, busy, hold, stop, sync_errno, and the current segment's fd while
 * it is being replaced.
 *
 * Positions: a global count of record bytes appended since wal_open (headers excluded),
 * so "is record R durable" is one comparison whatever segment R went to.
 */
#ifndef COUNTERD_STORE_WAL_INTERNAL_H
#define COUNTERD_STORE_WAL_INTERNAL_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/types.h>

#include "../base/buf.h"
#include "wal.h"

#define LOG_MAGIC "CNTDLOG1"
#define SNAP_MAGIC "CNTDSNP1"
#define MAGIC_LEN 8
#define MAX_RECORD (1u << 20)
#define REC_COUNTER 'C'
#define REC_DEDUP 'D'
#define REC_END 'E'
#define REC_FAILOVER 'F'
#define REC_SETTLE 'S'
#define REC_STRONG 'A'  /* a strong-counter proposal this replica accepted */
#define REC_PROMISE 'P' /* a strong-counter epoch this replica promised */
#define REC_DROP 'X'    /* a counter dropped by the tombstone GC (gstore_drop) */

#define SNAPSHOT_RETRY_S 2.0 /* after a failed snapshot; doubled each time, up to: */
#define SNAPSHOT_RETRY_MAX_S 60.0
#define RESERVE_CHUNK (256u << 10) /* log space reserved ahead at a time (fallocate) */
#define RECOVER_ROOM (64u << 10)   /* room a failed log must find again to take writes */
#define RETRY_MS 1000.0            /* a failed log tries to recover this often */
#define SNAP_PARENT_GONE 125       /* a snapshot child's exit status: its parent died */
#define WAL_KICK_WAIT_MS 2.0       /* the longest the fsync thread waits for wal_kick() */

/* Why the log takes no writes (w->failed). */
enum { FAIL_NONE, FAIL_SPACE, FAIL_IO };

struct wal {
    char *dir, *node_id;
    struct tokset *tokset;
    struct strongrep *strong;
    enum wal_fsync policy;
    size_t snapshot_bytes;
    int dir_fd, lock_fd, notify_fd;
    uint64_t seg; /* number of the segment being written */
    int fd;
    struct buf buf;          /* records not yet written */
    uint64_t appended;       /* position after the last buffered record */
    uint64_t written;        /* position written to the file */
    uint64_t since_snapshot; /* bytes written since the last snapshot began */
    /* Failure (see wal.h "Failures"): loop thread only. */
    int failed; /* FAIL_* */
    char fail_text[320];
    double fail_since, retry_at; /* unix s; monotonic ms */
    size_t held;                 /* buffered bytes whose write failed: written on recovery */
    int write_failed;            /* a write(2) failed (not only a reservation) */
    int recovering;              /* the running snapshot re-establishes a failed log */
    uint64_t recover_upto;       /* position that snapshot makes durable */
    uint64_t errors[WAL_ERR_COUNT];
    /* Space reserved ahead in the current segment, as file offsets: seg_size is where the
     * next write lands, reserved how far fallocate has backed the file. */
    uint64_t seg_size, reserved;
    int no_prealloc;   /* the file system cannot reserve: ENOSPC shows at write(2) */
    int run_forgotten; /* the run file is removed: the next unclean start mints an id */
    /* Shared with the fsync thread, under mu. */
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t wake, idle;
    uint64_t want, synced, shared_written;
    int busy, stop, sync_errno;
    int dir_dirty; /* a new segment's directory entry is not yet fsynced */
    /* Under "always": an fsync finished and the loop has not called wal_kick() since, so
     * what is written now waits (group commit, see wal_kick in wal.h). */
    int hold;
    /* Bumped when a recovery drops the segment a failed fsync was on. */
    unsigned sync_gen;
    /* Segments replaced by wal__rotate_ex(), for the thread to fsync (per policy) and close: the
     * loop never waits for a disk flush. upto: the position their records end at. */
    struct {
        int fd;
        uint64_t upto;
        int discard; /* close without fsync: a recovery snapshot covers its records */
    } old[8];
    int nold;
    double last_sync_ms;
    /* Snapshot child. */
    pid_t snap_pid;
    uint64_t snap_seg;
    uint64_t snap_size; /* bytes of the last snapshot: the log may grow as much again */
    double retry_after;
    int snap_fails; /* consecutive failed snapshots (the retry backs off) */
    char snap_text[320];
};

/* ---------------------------------------------------------------- wal_rec.c: records */

/* Each buffers one framed record (or, for a counter with many token-set elements, several)
 * at the end of b. */
void wal__encode_counter(struct buf *b, const struct gstore *st, const struct tokset *ts,
                         uint32_t id, uint64_t after, const char *token, size_t tlen,
                         const struct dedup_answer *a, double at);
void wal__encode_strong(struct buf *b, const char *counter, size_t clen,
                        const struct strongrep_entry *e);
void wal__encode_promise(struct buf *b, uint64_t epoch);
void wal__encode_dedup(struct buf *b, const char *counter, size_t clen, const char *token,
                       size_t tlen, double at, const struct dedup_answer *a);
void wal__encode_end(struct buf *b, uint64_t counters, uint64_t dedups);
void wal__encode_drop(struct buf *b, const char *counter, size_t clen);
/* Whether a well-formed record (valid length, CRC and type) starts at data[off]. */
int wal__record_at(const unsigned char *data, size_t size, size_t off);

/* Reads a record's fields, little-endian; past the end it sets bad and yields zeros. */
struct reader {
    const unsigned char *p, *end;
    int bad;
};

static inline unsigned wal__get_u8(struct reader *r)
{
    if (r->p >= r->end) {
        r->bad = 1;
        return 0;
    }
    return *r->p++;
}

static inline uint32_t wal__get_u32(struct reader *r)
{
    if (r->end - r->p < 4) {
        r->bad = 1;
        r->p = r->end;
        return 0;
    }
    uint32_t v = (uint32_t)r->p[0] | (uint32_t)r->p[1] << 8 | (uint32_t)r->p[2] << 16 |
                 (uint32_t)r->p[3] << 24;
    r->p += 4;
    return v;
}

static inline uint64_t wal__get_u64(struct reader *r)
{
    uint64_t lo = wal__get_u32(r);
    return lo | (uint64_t)wal__get_u32(r) << 32;
}

static inline double wal__get_f64(struct reader *r)
{
    uint64_t v = wal__get_u64(r);
    double d;
    memcpy(&d, &v, 8);
    return d;
}

static inline const char *wal__get_str8(struct reader *r, size_t *len)
{
    size_t n = wal__get_u8(r);
    if ((size_t)(r->end - r->p) < n) {
        r->bad = 1;
        r->p = r->end;
        *len = 0;
        return "";
    }
    const char *s = (const char *)r->p;
    r->p += n;
    *len = n;
    return s;
}

/* ---------------------------------------------------------------- wal_seg.c: directory */

struct wal_listing {
    uint64_t *segs, *snaps;
    size_t nsegs, nsnaps;
    int has_meta, has_clean;
};

enum wal_file_kind { FILE_LOG, FILE_SNAP, FILE_SNAP_TMP };
#define FILE_NAME_LEN 64

/* Writes the name of segment n's file of kind k ("wal-00000042.log") into out. */
void wal__file_name(char out[FILE_NAME_LEN], enum wal_file_kind k, uint64_t n);
/* Lists the directory (segments and snapshots sorted); remove_tmp: deletes *.tmp files.
 * @return 0, or -1 with errno. wal__listing_free() frees it. */
int wal__list_dir(int dir_fd, struct wal_listing *l, int remove_tmp);
void wal__listing_free(struct wal_listing *l);
/* Creates the directory if needed, opens it and takes its LOCK into w->dir_fd and
 * w->lock_fd. @return 0, or -1 with a sentence in err. */
int wal__lock_dir(struct wal *w, const char *dir, char *err, size_t errlen);
/* Deletes the segments up to and the snapshots before segment upto (a snapshot covers
 * them), as listed in l. */
void wal__remove_covered(struct wal *w, const struct wal_listing *l, uint64_t upto);
/* @return 0, or -1 with errno (and a sentence in err for wal__read_file). */
int wal__fsync_dir(struct wal *w);
int wal__write_all(int fd, const void *p, size_t n);
/* Writes a small file atomically (temp, fsync, rename, fsync dir). */
int wal__write_small(struct wal *w, const char *name, const char *text);
int wal__read_file(int dir_fd, const char *name, unsigned char **data, size_t *size, char *err,
                   size_t errlen);
/* Creates segment seg with its header. @return its fd, or -1 with errno. */
int wal__open_segment(struct wal *w, uint64_t seg);
/* Starts the next segment (see wal_seg.c). @return 0, or -1 with errno. */
int wal__rotate_ex(struct wal *w, int discard);

/* ---------------------------------------------------------------- wal_recover.c, wal_id.c */

/*
 * Replays the newest snapshot and the newer segments listed in l into the store (w's
 * options), then cuts a torn tail off the last segment; sets info's snapshot_seg, records
 * and torn_bytes, w->snap_size, and the covering snapshot in *snap.
 * @return 0, or -1 with a sentence in err.
 */
int wal__recover(struct wal *w, struct wal_listing *l, struct gstore *st, struct dedup *d,
                 struct wal_info *info, uint64_t *snap, char *err, size_t errlen);
/* Checks the meta file against node_id into meta_replica (l->has_meta) or that the
 * directory is new. @return 0, or -1 with a sentence in err. */
int wal__check_meta(struct wal *w, const struct wal_listing *l, char *meta_replica, size_t rlen,
                    char *err, size_t errlen);
/* Keeps or mints the replica id into info (wal.h), writes the meta and run files.
 * @return 0, or -1 with a sentence in err. */
int wal__settle_replica_id(struct wal *w, const struct wal_listing *l, const char *meta_replica,
                           const struct gstore *st, struct wal_info *info, char *err,
                           size_t errlen);

/* ---------------------------------------------------------------- wal_fail.c: failures */

/* Errors that more free space cures (ENOSPC, EDQUOT). */
int wal__space_errno(int e);
enum wal_error wal__kind_of(int e);
/* Counts an error and, on the first, stops the log taking writes (see wal_fail.c). */
void wal__fail(struct wal *w, enum wal_error kind, int e, const char *what);
void wal__recovered(struct wal *w);
/* Reserves the current segment's space up to file offset end. @return 0, or -1 with errno. */
int wal__reserve_room(struct wal *w, uint64_t end);
void wal__release_room(int fd, uint64_t size, uint64_t reserved);
/* Drops what a failed log holds (call with w->mu held). */
void wal__forget_failed(struct wal *w);
void wal__recover_space(struct wal *w);
void wal__recover_io(struct wal *w, const struct gstore *st, const struct dedup *d);

/* ---------------------------------------------------------------- wal_sync.c, wal_snap.c, wal.c */

/* The log's write of w->buf and fdatasync (fault points). @return 0, or -1 with errno. */
int wal__log_write(struct wal *w);
int wal__log_fdatasync(int fd);
/* Starts and stops the fsync thread. wal__start_sync: @return 0, or -1 with errno. */
int wal__start_sync(struct wal *w);
void wal__stop_sync(struct wal *w);
/* Forks the child that snapshots the memory as of the end of segment covers. */
int wal__fork_snapshot(struct wal *w, const struct gstore *st, const struct dedup *d,
                       uint64_t covers);
/* Reaps the snapshot child (waiting for it when block) and finishes its work. */
void wal__reap_snapshot(struct wal *w, int block);
/* The buffer reached the file: accounts for it. */
void wal__wrote(struct wal *w);

#endif
