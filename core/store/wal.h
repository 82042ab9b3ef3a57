/*
 * wal.h - durability: an append-only log of framed records, and snapshots that let it be
 * cut short.
 *
 * A data directory holds:
 *   meta                  node id and the replica id this node counts under
 *   wal-NNNNNNNN.log      log segments; a record is [u32 length][u32 CRC-32C][payload]
 *   snapshot-NNNNNNNN.snap  every counter and idempotency entry, as of the end of
 *                         segment NNNNNNNN (written by a forked child, like Redis' RDB)
 *   clean                 present only between a graceful stop and the next start
 *   run                   this run's boot id and replica id; removed when a write fails
 *   LOCK                  held (flock) while a process uses the directory (never by the
 *                         snapshot child, which also dies with its parent)
 *
 * A record carries a counter's whole state (its per-replica totals, its lifecycle state:
 * floors and flags, see gstore.h "Lifecycle") and the elements of its token set that this
 * change made (store/tokset.h; a snapshot: all of them), so replaying it is a merge:
 * idempotent, order-free, safe to repeat. The one exception is a drop record (the tombstone
 * GC gave a counter back): replay drops the counter at that point of the log, and a later
 * record of its name starts a new life. A snapshot holds only the counters that exist. An
 * increment's record also carries its idempotency token and first answer, so a retry after a crash
 * is still recognised.
 *
 * Start-up (wal_open) loads the newest snapshot, replays the newer segments, cuts a torn
 * tail of the last segment, and refuses a damaged record that has valid data after it
 * (corruption, not a torn write), naming the file, the offset and how to recover.
 *
 * A node keeps its replica id across a clean stop, and across a crash on the same boot
 * when its log holds everything it acknowledged or replicated (the "run" file, written at
 * start with the boot id, proves it; a failed log write or fsync removes it). Otherwise
 * (new or lost directory, a reboot, a failed write) it gets a new replica id: its peers
 * may hold more of its old id than its disk does, and a max-merge would swallow new
 * increments counted under that id.
 *
 * Failures. A write (increment, merge, strong record) first asks wal_reserve() whether the
 * log has room for it; the log keeps space reserved ahead (fallocate), so a full disk is
 * seen there, before anything is applied, and the write is refused. What makes the log
 * fail, and how it recovers by itself (wal_tick):
 *   disk_full  ENOSPC/EDQUOT reserving or writing: a partial write is cut off the file,
 *              its records stay buffered; once there is room again they are written
 *              and writes are taken again.
 *   io_error   any other write error (or a partial write that could not be cut)
 *   fsync      fdatasync failed: what it covered may never reach the disk, and a second
 *              fsync cannot be trusted to say so. Answers waiting for it fail; the log
 *              takes writes again only after a fresh segment and a snapshot of the memory
 *              (which holds everything) are on disk and fsynced.
 * A failed snapshot leaves no temporary file; it is retried, backing off from 2 s to 60 s.
 * A snapshot never takes the log's room: it fails for want of room (ENOSPC) rather than
 * leave the file system less free space than the log's next reservation.
 *
 * Plain C (and one thread for fsync); no libevent, Lua or curl.
 */
#ifndef COUNTERD_STORE_WAL_H
#define COUNTERD_STORE_WAL_H

#include <stddef.h>
#include <stdint.h>

#include "dedup.h"
#include "gstore.h"
#include "strongrep.h"
#include "tokset.h"

enum wal_fsync {
    WAL_FSYNC_NO,       /* write(2) before acknowledging; the OS flushes when it likes */
    WAL_FSYNC_EVERYSEC, /* write(2) before acknowledging; fdatasync once a second */
    WAL_FSYNC_ALWAYS,   /* acknowledge after fdatasync (concurrent writes share one) */
};

struct wal_opts {
    const char *dir;
    const char *node_id;
    enum wal_fsync fsync;
    size_t snapshot_bytes;    /* log bytes between snapshots; default 64 MiB */
    struct tokset *tokset;    /* the counters' token sets: logged with their counters */
    struct strongrep *strong; /* likewise: this node's strong-counter replica */
};

/* What wal_open found and did. */
struct wal_info {
    char replica_id[GSTORE_REPLICA_NAME_MAX + 1];
    int new_replica;       /* a new incarnation (new directory, reboot, failed write) */
    char id_reason[512];   /* which case applied: "kept replica id X: ..." / "new ..." */
    int clean;             /* the last run stopped gracefully */
    uint64_t snapshot_seg; /* segment the loaded snapshot covers (0: none) */
    uint64_t records;      /* records replayed from snapshot and log */
    uint64_t torn_bytes;   /* bytes cut from the end of the last segment */
    double ms;             /* time recovery took */
};

struct wal;

/* What went wrong, for counterd_wal_write_errors_total{reason}. */
enum wal_error {
    WAL_ERR_DISK_FULL, /* "disk_full": ENOSPC or EDQUOT */
    WAL_ERR_IO,        /* "io_error": any other write error */
    WAL_ERR_FSYNC,     /* "fsync" */
    WAL_ERR_SNAPSHOT,  /* "snapshot": a snapshot could not be written */
    WAL_ERR_COUNT
};

/*
 * Writes a new incarnation's replica id for node_id into out: "<node_id>~<8 hex digits>",
 * random (wal_open mints one when the directory cannot keep its id; a node without a data
 * directory mints one at every start).
 */
void wal_new_replica_id(char *out, size_t len, const char *node_id);

/* @return "no" / "everysec" / "always" as enum wal_fsync, or -1. */
int wal_parse_fsync(const char *s);
const char *wal_fsync_name(enum wal_fsync f);

/*
 * Opens (creating if needed) the data directory, recovers its state into st and d (both
 * empty), and starts a new log segment.
 * @return the log, or NULL with a sentence in err (damage: which file, which offset, how
 *         to recover; the directory is left as it was).
 */
struct wal *wal_open(const struct wal_opts *o, struct gstore *st, struct dedup *d,
                     struct wal_info *info, char *err, size_t errlen);
/*
 * Writes what is buffered, fsyncs, marks the directory clean and closes it.
 * @return 0, or -1 when the final write or fsync failed (the directory is then not clean).
 */
int wal_close(struct wal *w);
/* Closes without writing or marking anything, as a crash would (for tests). */
void wal_abandon(struct wal *w);

/*
 * Buffers a record of counter id's current state; with token (NULL for none), also the
 * increment's first answer a, applied at unix time at.
 * @return the log position at the end of the record: it is on disk (per the fsync policy)
 *         once wal_durable() >= it.
 */
uint64_t wal_append(struct wal *w, const struct gstore *st, uint32_t id, const char *token,
                    size_t tlen, const struct dedup_answer *a, double at);
/* A record that counter id is dropped (call it before gstore_drop): replay drops it at this
 * point of the log, and a later record of its name is a new life. @return as wal_append. */
uint64_t wal_append_drop(struct wal *w, const struct gstore *st, uint32_t id);
/* A record of counter id's entries and the token-set elements changed after seq `after`
 * (several changes of the set made at once). @return as wal_append. */
uint64_t wal_append_tokens(struct wal *w, const struct gstore *st, uint32_t id, uint64_t after);
/*
 * Writes the buffered records to the file (write(2)); under "always" also asks the fsync
 * thread to make them durable.
 * @return 0 (also when the log has failed and nothing new was appended since), or -1
 *         when this call's records could not be written (the answers that acknowledge
 *         them must not leave; wal_failed() is then true until the log recovers).
 */
int wal_write(struct wal *w);
/* Buffers a strong-counter proposal accepted / an epoch promised (see strongrep.h). */
uint64_t wal_append_strong(struct wal *w, const char *counter, size_t clen,
                           const struct strongrep_entry *e);
uint64_t wal_append_promise(struct wal *w, uint64_t epoch);
/*
 * wal_write(), then asks the fsync thread to make everything written durable whatever the
 * policy (a strong-counter replica acknowledges only what is on disk); wal_notify_fd()
 * becomes readable when it is. @return as wal_write.
 */
int wal_write_sync(struct wal *w);
/* Position up to which records are fsynced (whatever the policy). */
uint64_t wal_synced(struct wal *w);
/* Whether the log takes no writes now (see "Failures"). */
int wal_failed(const struct wal *w);
/*
 * Removes the run file, so that the next start after a crash mints a new replica id:
 * called once a log write or fsync failed, before anything else leaves the process.
 * Idempotent. @return 0, or -1 when the file could not be removed (logged).
 */
int wal_forget_run(struct wal *w);
/*
 * Whether the log can take need more bytes of records than are buffered. Call it before
 * applying a change that will be logged: on -1 apply nothing and answer 503.
 * @return 0, or -1 when the log has failed (wal_status() says why).
 */
int wal_reserve(struct wal *w, size_t need);
/* Why the log takes no writes ("disk_full: cannot ... in DIR: No space left on device"),
 * or NULL when it does. */
const char *wal_status(const struct wal *w);
/* Why snapshots fail ("snapshot_failed: ..."), or NULL when the last one worked. */
const char *wal_snapshot_status(const struct wal *w);
/* Whether an fsync failed: records not durable yet may never be (until the recovery). */
int wal_sync_failed(const struct wal *w);
/* Errors of one kind since wal_open. */
uint64_t wal_errors(const struct wal *w, enum wal_error e);
/* "disk_full", "io_error", "fsync", "snapshot". */
const char *wal_error_name(enum wal_error e);
/* Position after the last record appended (buffered or not). */
uint64_t wal_position(const struct wal *w);
/* Position up to which records are as durable as the policy promises. */
uint64_t wal_durable(struct wal *w);
/* Becomes readable when wal_durable() advanced under "always"; wal_notified() drains it. */
int wal_notify_fd(const struct wal *w);
void wal_notified(struct wal *w);
/*
 * Under "always": writes what is buffered and lets the fsync thread start the next group
 * commit. After each fsync the thread holds the records written meanwhile until this call
 * (or at most WAL_KICK_WAIT_MS), so that the clients whose answers that fsync released
 * can join them: call it one loop iteration after wal_notified(), once the loop has read
 * what arrived. No-op under the other policies.
 */
void wal_kick(struct wal *w);
enum wal_fsync wal_policy(const struct wal *w);

/*
 * Housekeeping, called a few times a second: starts a snapshot when the log has grown past
 * snapshot_bytes, reaps a finished one and deletes what it made obsolete, and tries to
 * recover a failed log (at most once a second).
 */
void wal_tick(struct wal *w, const struct gstore *st, const struct dedup *d);
/* Starts a snapshot now unless one is running. @return 0, or -1 (logged). */
int wal_snapshot(struct wal *w, const struct gstore *st, const struct dedup *d);
/* Whether a snapshot child is running. */
int wal_snapshot_running(const struct wal *w);

#endif
