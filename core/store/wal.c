/*
 * wal.c - the durable log and snapshots (see wal.h).
 *
 * Threads: the event loop's thread does everything but fdatasync, which a second thread
 * runs so the loop keeps serving while the disk works. Under "always" that thread is the
 * group commit: every record written before it starts an fdatasync shares that one call.
 * The two share w->mu for: want, synced, shared_written, busy, stop, sync_errno, and the
 * current segment's fd while it is being replaced.
 *
 * Positions: a global count of record bytes appended since wal_open (headers excluded),
 * so "is record R durable" is one comparison whatever segment R went to.
 */
#define _GNU_SOURCE
#include "wal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "../base/buf.h"
#include "../base/clock.h"
#include "../base/crc32c.h"
#include "../base/fault.h"
#include "../base/hash.h"
#include "../base/log.h"
#include "../base/mem.h"

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

#define SNAPSHOT_RETRY_S 2.0 /* after a failed snapshot; doubled each time, up to: */
#define SNAPSHOT_RETRY_MAX_S 60.0
#define RESERVE_CHUNK (256u << 10) /* log space reserved ahead at a time (fallocate) */
#define RECOVER_ROOM (64u << 10)   /* room a failed log must find again to take writes */
#define RETRY_MS 1000.0            /* a failed log tries to recover this often */
#define SNAP_PARENT_GONE 125       /* a snapshot child's exit status: its parent died */

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
    /* Bumped when a recovery drops the segment a failed fsync was on. */
    unsigned sync_gen;
    /* Segments replaced by rotate(), for the thread to fsync (per policy) and close: the
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

/* ---------------------------------------------------------------- encoding */

static void put_u8(struct buf *b, unsigned v)
{
    buf_putc(b, (char)(uint8_t)v);
}

static void put_u32(struct buf *b, uint32_t v)
{
    unsigned char t[4] = {(unsigned char)v, (unsigned char)(v >> 8), (unsigned char)(v >> 16),
                          (unsigned char)(v >> 24)};
    buf_append(b, t, 4);
}

static void put_u64(struct buf *b, uint64_t v)
{
    put_u32(b, (uint32_t)v);
    put_u32(b, (uint32_t)(v >> 32));
}

static void put_f64(struct buf *b, double d)
{
    uint64_t v;
    memcpy(&v, &d, 8);
    put_u64(b, v);
}

static void put_str8(struct buf *b, const char *s, size_t n)
{
    put_u8(b, (unsigned)n);
    buf_append(b, s, n);
}

/* Frames the payload that starts at b->data[start] (after 8 reserved bytes). */
static void frame(struct buf *b, size_t start)
{
    uint32_t len = (uint32_t)(b->len - start - 8);
    uint32_t crc = crc32c(0, b->data + start + 8, len);
    unsigned char h[8] = {(unsigned char)len,         (unsigned char)(len >> 8),
                          (unsigned char)(len >> 16), (unsigned char)(len >> 24),
                          (unsigned char)crc,         (unsigned char)(crc >> 8),
                          (unsigned char)(crc >> 16), (unsigned char)(crc >> 24)};
    memcpy(b->data + start, h, 8);
}

/*
 * A counter's record up to its token part: its entries, a flags byte (bit 0: the
 * increment's token follows; bit 1: its folded replicas follow, a u16 count and their ids,
 * see gstore_fold), then those. Records of older versions have flags 0 or 1.
 */
static void counter_head(struct buf *b, const struct gstore *st, uint32_t id, const char *token,
                         size_t tlen, const struct dedup_answer *a, double at)
{
    const struct gcounter *c = gstore_counter(st, id);
    size_t nlen;
    const char *name = gcounter_name(c, &nlen);
    unsigned n = gcounter_entries(c);
    put_u8(b, REC_COUNTER);
    put_str8(b, name, nlen);
    put_u8(b, n);
    for (unsigned i = 0; i < n; i++) {
        struct gentry e;
        gcounter_entry(c, i, &e);
        const char *rn = gstore_replica_name(st, e.rep);
        put_str8(b, rn, strlen(rn));
        put_u64(b, (uint64_t)e.pos);
        put_u64(b, (uint64_t)e.neg);
    }
    const uint16_t *folded;
    unsigned nf = gstore_folded_list(st, id, &folded);
    put_u8(b, (token ? 1u : 0u) | (nf ? 2u : 0u));
    if (token) {
        put_str8(b, token, tlen);
        put_u64(b, (uint64_t)a->amount);
        put_u64(b, (uint64_t)a->local_count);
        put_u64(b, (uint64_t)a->total_count);
        put_f64(b, at);
    }
    if (nf) {
        put_u8(b, nf & 0xff);
        put_u8(b, nf >> 8);
        for (unsigned i = 0; i < nf; i++) {
            const char *rn = gstore_replica_name(st, folded[i]);
            put_str8(b, rn, strlen(rn));
        }
    }
}

/* Token-set elements after a counter's head: a u32 count, then token, amount, settled each.
 * Past half the record limit the record is closed and another one of the same counter
 * (entries again, no token) carries the rest: replaying both is the same merge. */
struct tok_writer {
    struct buf *b;
    const struct gstore *st;
    uint32_t id, n;
    size_t start, count_at;
};

static void tok_count(struct tok_writer *tw)
{
    uint32_t n = tw->n;
    unsigned char t[4] = {(unsigned char)n, (unsigned char)(n >> 8), (unsigned char)(n >> 16),
                          (unsigned char)(n >> 24)};
    memcpy(tw->b->data + tw->count_at, t, 4);
}

static void put_tok(void *arg, uint32_t id, const char *tok, size_t tlen, int64_t amount,
                    int settled, uint64_t seq)
{
    (void)id;
    (void)seq;
    struct tok_writer *tw = arg;
    if (tw->b->len - tw->start > MAX_RECORD / 2) {
        tok_count(tw);
        frame(tw->b, tw->start);
        tw->start = tw->b->len;
        buf_append(tw->b, "\0\0\0\0\0\0\0\0", 8);
        counter_head(tw->b, tw->st, tw->id, NULL, 0, NULL, 0);
        tw->count_at = tw->b->len;
        put_u32(tw->b, 0);
        tw->n = 0;
    }
    put_str8(tw->b, tok, tlen);
    put_u64(tw->b, (uint64_t)amount);
    put_u8(tw->b, settled ? 1 : 0);
    tw->n++;
}

/* A counter's record (or records), with its token-set elements changed after seq `after`. */
static void encode_counter(struct buf *b, const struct gstore *st, const struct tokset *ts,
                           uint32_t id, uint64_t after, const char *token, size_t tlen,
                           const struct dedup_answer *a, double at)
{
    size_t start = b->len;
    buf_append(b, "\0\0\0\0\0\0\0\0", 8);
    counter_head(b, st, id, token, tlen, a, at);
    if (ts && tokset_elements(ts, id)) {
        struct tok_writer tw = {b, st, id, 0, start, b->len};
        put_u32(b, 0);
        tokset_each(ts, id, after, put_tok, &tw);
        if (tw.n == 0 && tw.start == start) {
            b->len = tw.count_at; /* nothing changed in the set */
        } else {
            tok_count(&tw);
            start = tw.start;
        }
    }
    frame(b, start);
}

static void encode_strong(struct buf *b, const char *counter, size_t clen,
                          const struct strong_entry *e)
{
    size_t start = b->len;
    buf_append(b, "\0\0\0\0\0\0\0\0", 8);
    put_u8(b, REC_STRONG);
    put_str8(b, counter, clen);
    put_u64(b, e->epoch);
    put_u64(b, e->round);
    put_u64(b, (uint64_t)e->value);
    frame(b, start);
}

static void encode_promise(struct buf *b, uint64_t epoch)
{
    size_t start = b->len;
    buf_append(b, "\0\0\0\0\0\0\0\0", 8);
    put_u8(b, REC_PROMISE);
    put_u64(b, epoch);
    frame(b, start);
}

/* ---------------------------------------------------------------- decoding */

struct reader {
    const unsigned char *p, *end;
    int bad;
};

static unsigned get_u8(struct reader *r)
{
    if (r->p >= r->end) {
        r->bad = 1;
        return 0;
    }
    return *r->p++;
}

static uint32_t get_u32(struct reader *r)
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

static uint64_t get_u64(struct reader *r)
{
    uint64_t lo = get_u32(r);
    return lo | (uint64_t)get_u32(r) << 32;
}

static double get_f64(struct reader *r)
{
    uint64_t v = get_u64(r);
    double d;
    memcpy(&d, &v, 8);
    return d;
}

static const char *get_str8(struct reader *r, size_t *len)
{
    size_t n = get_u8(r);
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

/* State of one recovery. */
struct recovery {
    struct gstore *st;
    struct dedup *d;
    struct tokset *ts;
    struct strongrep *strong;
    double now;
    uint64_t records;
    struct gentry entries[GCOUNTER_MAX_ENTRIES];
    int folded[GCOUNTER_MAX_FOLDED];
    uint64_t end_counters, end_dedups; /* from a snapshot's END record */
    int seen_end;
    char why[160]; /* why a payload was refused */
};

/* Applies one record's payload. @return 0, or -1 with rc->why. */
static int apply(struct recovery *rc, const unsigned char *p, size_t len, int in_snapshot)
{
    struct reader r = {p, p + len, 0};
    unsigned type = get_u8(&r);
    if (type == REC_END && in_snapshot) {
        rc->end_counters = get_u64(&r);
        rc->end_dedups = get_u64(&r);
        rc->seen_end = 1;
        return r.bad || r.p != r.end ? (snprintf(rc->why, sizeof rc->why, "bad end record"), -1)
                                     : 0;
    }
    if (type == REC_DEDUP && in_snapshot) {
        size_t clen, tlen;
        const char *counter = get_str8(&r, &clen);
        const char *token = get_str8(&r, &tlen);
        struct dedup_answer a;
        a.amount = (int64_t)get_u64(&r);
        a.local_count = (int64_t)get_u64(&r);
        a.total_count = (int64_t)get_u64(&r);
        double at = get_f64(&r);
        if (r.bad || r.p != r.end || !gcounter_name_valid(counter, clen) || !tlen) {
            snprintf(rc->why, sizeof rc->why, "bad idempotency record");
            return -1;
        }
        dedup_put(rc->d, counter, clen, token, tlen, at, &a); /* it expires by its window */
        rc->records++;
        return 0;
    }
    if (type == REC_FAILOVER || type == REC_SETTLE) {
        /* Failover records and settlements of older versions (the take-back design):
         * exactly-once no longer needs them. */
        rc->records++;
        return 0;
    }
    if (type == REC_STRONG || type == REC_PROMISE) {
        size_t clen = 0;
        const char *counter = type == REC_STRONG ? get_str8(&r, &clen) : NULL;
        struct strong_entry e;
        e.epoch = get_u64(&r);
        e.round = type == REC_STRONG ? get_u64(&r) : 0;
        e.value = type == REC_STRONG ? (int64_t)get_u64(&r) : 0;
        if (r.bad || r.p != r.end || (counter && !gcounter_name_valid(counter, clen))) {
            snprintf(rc->why, sizeof rc->why, "bad strong-counter record");
            return -1;
        }
        if (rc->strong && counter)
            strongrep_accept(rc->strong, counter, clen, e.epoch, e.round, e.value);
        else if (rc->strong)
            strongrep_promise(rc->strong, e.epoch);
        rc->records++;
        return 0;
    }
    if (type != REC_COUNTER) {
        snprintf(rc->why, sizeof rc->why, "unknown record type 0x%02x", type);
        return -1;
    }
    size_t nlen;
    const char *name = get_str8(&r, &nlen);
    unsigned n = get_u8(&r);
    for (unsigned i = 0; i < n && !r.bad; i++) {
        size_t rlen;
        const char *rn = get_str8(&r, &rlen);
        int64_t pos = (int64_t)get_u64(&r), neg = (int64_t)get_u64(&r);
        if (r.bad)
            break;
        if (!gcounter_replica_node_len(rn, rlen) || pos < 0 || neg < 0) {
            snprintf(rc->why, sizeof rc->why, "bad replica entry in counter record");
            return -1;
        }
        rc->entries[i].rep = gstore_replica(rc->st, rn, rlen);
        rc->entries[i].pos = pos;
        rc->entries[i].neg = neg;
        if (rc->entries[i].rep < 0) {
            snprintf(rc->why, sizeof rc->why, "too many replica ids");
            return -1;
        }
    }
    unsigned flags = get_u8(&r);
    size_t tlen = 0;
    const char *token = NULL;
    struct dedup_answer a = {0, 0, 0};
    double at = 0;
    if (flags & 1) {
        token = get_str8(&r, &tlen);
        a.amount = (int64_t)get_u64(&r);
        a.local_count = (int64_t)get_u64(&r);
        a.total_count = (int64_t)get_u64(&r);
        at = get_f64(&r);
    }
    if (flags & ~3u)
        r.bad = 1;
    unsigned nf = 0;
    if (flags & 2) {
        nf = get_u8(&r);
        nf |= get_u8(&r) << 8;
        if (nf > GCOUNTER_MAX_FOLDED)
            r.bad = 1;
        for (unsigned i = 0; i < nf && !r.bad; i++) {
            size_t rlen;
            const char *rn = get_str8(&r, &rlen);
            if (r.bad || !gcounter_replica_node_len(rn, rlen) ||
                (rc->folded[i] = gstore_replica(rc->st, rn, rlen)) < 0) {
                snprintf(rc->why, sizeof rc->why, "bad folded replica in counter record");
                return -1;
            }
        }
    }
    /* Token-set elements, when the record has them (older records end here). */
    const unsigned char *toks = r.p;
    uint32_t ntoks = r.p < r.end ? get_u32(&r) : 0;
    for (uint32_t i = 0; i < ntoks && !r.bad; i++) {
        size_t kl;
        get_str8(&r, &kl);
        get_u64(&r);
        unsigned st = get_u8(&r);
        if (kl == 0 || kl > TOKSET_TOKEN_MAX || st > 1)
            r.bad = 1;
    }
    if (r.bad || r.p != r.end || !gcounter_name_valid(name, nlen) || (token && !tlen)) {
        snprintf(rc->why, sizeof rc->why, "malformed counter record");
        return -1;
    }
    uint32_t id = gstore_find(rc->st, name, nlen);
    if (gstore_merge_check_folded(rc->st, id, rc->entries, n, rc->folded, nf) != 0) {
        snprintf(rc->why, sizeof rc->why, "counter %.*s cannot be merged (out of range)", (int)nlen,
                 name);
        return -1;
    }
    if (id == GSTORE_NONE)
        id = gstore_create(rc->st, name, nlen);
    gstore_merge_folded(rc->st, id, rc->entries, n, rc->folded, nf, 0);
    if (ntoks && rc->ts) {
        struct reader tr = {toks + 4, r.end, 0};
        uint64_t seq = gstore_seq(rc->st) + 1;
        int changed = 0;
        for (uint32_t i = 0; i < ntoks; i++) {
            size_t kl;
            const char *k = get_str8(&tr, &kl);
            int64_t amount = (int64_t)get_u64(&tr);
            int settled = (int)get_u8(&tr);
            changed |= tokset_merge(rc->ts, id, k, kl, amount, settled, seq);
        }
        if (changed & TOKSET_CHANGED)
            gstore_touch(rc->st, id);
    }
    if (token)
        dedup_put(rc->d, name, nlen, token, tlen, at, &a);
    rc->records++;
    return 0;
}

/* Whether a well-formed record (valid length, CRC and payload) starts at off. */
static int record_at(const unsigned char *data, size_t size, size_t off)
{
    if (size - off < 9)
        return 0;
    struct reader r = {data + off, data + size, 0};
    uint32_t len = get_u32(&r), crc = get_u32(&r);
    if (len == 0 || len > MAX_RECORD || len > size - off - 8)
        return 0;
    if (crc32c(0, data + off + 8, len) != crc)
        return 0;
    unsigned type = data[off + 8];
    return type == REC_COUNTER || type == REC_DEDUP || type == REC_END || type == REC_FAILOVER ||
           type == REC_SETTLE || type == REC_STRONG || type == REC_PROMISE;
}

static int read_file(int dir_fd, const char *name, unsigned char **data, size_t *size, char *err,
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

/*
 * Replays one file. last: the newest log segment, whose bad tail may be a torn write.
 * @return 0 (with *cut_at set to where a torn tail starts, or to the size), or -1.
 */
static int replay_file(struct recovery *rc, int dir_fd, const char *dir, const char *name,
                       int is_snapshot, int last, size_t *cut_at, char *err, size_t errlen)
{
    unsigned char *data;
    size_t size;
    if (read_file(dir_fd, name, &data, &size, err, errlen) < 0)
        return -1;
    const char *magic = is_snapshot ? SNAP_MAGIC : LOG_MAGIC;
    size_t off = MAGIC_LEN;
    int rcode = 0;
    *cut_at = size;
    if (size < MAGIC_LEN || memcmp(data, magic, MAGIC_LEN) != 0) {
        if (last && !is_snapshot && size < MAGIC_LEN &&
            memcmp(data, magic, size) == 0) { /* created, header not finished: torn */
            *cut_at = 0;
            goto out;
        }
        snprintf(err, errlen,
                 "%s/%s is not a counterd %s (bad header). Move it out of the directory if it "
                 "does not belong there.",
                 dir, name, is_snapshot ? "snapshot" : "log segment");
        rcode = -1;
        goto out;
    }
    while (off < size) {
        int good = record_at(data, size, off);
        if (good) {
            uint32_t len = (uint32_t)data[off] | (uint32_t)data[off + 1] << 8 |
                           (uint32_t)data[off + 2] << 16 | (uint32_t)data[off + 3] << 24;
            if (apply(rc, data + off + 8, len, is_snapshot) < 0) {
                snprintf(err, errlen,
                         "%s/%s: record at offset %zu has a valid checksum but cannot be "
                         "applied (%s). This is a bug or deliberate damage: keep a copy of the "
                         "directory and report it; to start anyway, move the file aside (the "
                         "node will count under a new replica id and its peers re-send what "
                         "they hold).",
                         dir, name, off, rc->why);
                rcode = -1;
                goto out;
            }
            off += 8 + len;
            continue;
        }
        /* A bad record: torn tail, or damage with good data after it? */
        size_t next = off + 1;
        while (next < size && !record_at(data, size, next))
            next++;
        if (next >= size && last && !is_snapshot) {
            *cut_at = off;
            goto out;
        }
        snprintf(err, errlen,
                 "%s/%s is damaged at offset %zu (%s). counterd does not drop acknowledged "
                 "data silently, so it will not start. To recover: keep a copy of the data "
                 "directory; then truncate the file there (truncate -s %zu %s/%s), losing "
                 "the %zu bytes after it unless the peers still hold them, or move the file "
                 "aside. The node then counts under a new replica id and its peers re-send "
                 "what they have.",
                 dir, name, off,
                 next < size ? "valid records follow the damage" : "the file ends damaged", off,
                 dir, name, size - off);
        rcode = -1;
        goto out;
    }
out:
    free(data);
    return rcode;
}

/* ---------------------------------------------------------------- directory */

static int fsync_dir(struct wal *w)
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

static int write_all(int fd, const void *p, size_t n)
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
static int write_small(struct wal *w, const char *name, const char *text)
{
    char tmp[64];
    snprintf(tmp, sizeof tmp, "%s.tmp", name);
    int fd = openat(w->dir_fd, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return -1;
    int rc = write_all(fd, text, strlen(text)) == 0 && fsync(fd) == 0 ? 0 : -1;
    close(fd);
    if (rc == 0)
        rc = renameat(w->dir_fd, tmp, w->dir_fd, name);
    if (rc < 0) {
        int e = errno;
        unlinkat(w->dir_fd, tmp, 0);
        errno = e;
    }
    if (rc == 0)
        rc = fsync_dir(w);
    return rc;
}

/* The files named after a segment number, and their names' one format. */
enum file_kind { FILE_LOG, FILE_SNAP, FILE_SNAP_TMP };
static const struct {
    const char *prefix, *suffix;
} file_kinds[] = {
    [FILE_LOG] = {"wal-", ".log"},
    [FILE_SNAP] = {"snapshot-", ".snap"},
    [FILE_SNAP_TMP] = {"snapshot-", ".snap.tmp"},
};
#define FILE_NAME_LEN 64

/* Writes the name of segment n's file of kind k ("wal-00000042.log") into out. */
static void file_name(char out[FILE_NAME_LEN], enum file_kind k, uint64_t n)
{
    snprintf(out, FILE_NAME_LEN, "%s%08" PRIu64 "%s", file_kinds[k].prefix, n,
             file_kinds[k].suffix);
}

/* Whether name is a file of kind k, and its segment number. @return 1 (with *n) or 0. */
static int file_parse(const char *name, enum file_kind k, uint64_t *n)
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
static int open_segment(struct wal *w, uint64_t seg)
{
    char name[64];
    file_name(name, FILE_LOG, seg);
    int fd = openat(w->dir_fd, name, O_WRONLY | O_CREAT | O_EXCL | O_APPEND | O_CLOEXEC, 0644);
    if (fd < 0)
        return -1;
    if (write_all(fd, LOG_MAGIC, MAGIC_LEN) < 0) {
        int e = errno;
        close(fd);
        unlinkat(w->dir_fd, name, 0); /* or the next try finds it there (a full disk) */
        errno = e;
        return -1;
    }
    w->dir_dirty = 1;
    return fd;
}

struct listing {
    uint64_t *segs, *snaps;
    size_t nsegs, nsnaps;
    int has_meta, has_clean;
};

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static int list_dir(int dir_fd, struct listing *l, int remove_tmp)
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

static void listing_free(struct listing *l)
{
    free(l->segs);
    free(l->snaps);
}

static int read_meta(struct wal *w, char *node, size_t nlen, char *replica, size_t rlen)
{
    unsigned char *data;
    size_t size;
    char err[256];
    if (read_file(w->dir_fd, "meta", &data, &size, err, sizeof err) < 0)
        return -1;
    char *text = xstrndup((const char *)data, size);
    free(data);
    int ok = 0;
    node[0] = replica[0] = '\0';
    for (char *save = NULL, *line = strtok_r(text, "\n", &save); line;
         line = strtok_r(NULL, "\n", &save)) {
        if (!strcmp(line, "counterd-data 1"))
            ok = 1;
        else if (!strncmp(line, "node_id=", 8))
            snprintf(node, nlen, "%s", line + 8);
        else if (!strncmp(line, "replica_id=", 11))
            snprintf(replica, rlen, "%s", line + 11);
    }
    free(text);
    return ok && node[0] && replica[0] ? 0 : -1;
}

/*
 * The boot this process runs in: /proc/sys/kernel/random/boot_id, or COUNTERD_BOOT_ID
 * (test-only: a test changes it to simulate a reboot). "" when unknown.
 */
static void read_boot_id(char *out, size_t len)
{
    const char *env = getenv("COUNTERD_BOOT_ID");
    out[0] = '\0';
    if (env && *env) {
        snprintf(out, len, "%s", env);
    } else {
        FILE *f = fopen("/proc/sys/kernel/random/boot_id", "r");
        if (f) {
            if (!fgets(out, (int)len, f))
                out[0] = '\0';
            fclose(f);
        }
    }
    out[strcspn(out, "\r\n")] = '\0';
    for (char *p = out; *p; p++)
        if (*p == '=' || (unsigned char)*p < ' ')
            *p = '_';
}

/*
 * Whether the last run's log holds everything it acknowledged or replicated, so its
 * replica id may be kept after an unclean stop (see wal.h). The "run" file is written at
 * every start with the boot id and the replica id, and removed (wal_forget_run) the moment
 * a log write or fsync fails. @return NULL when the id may be kept, or why not.
 */
static const char *run_proves_complete(struct wal *w, const char *replica, const char *boot)
{
    unsigned char *data;
    size_t size;
    char err[256];
    if (!boot[0])
        return "the boot id is unknown";
    if (read_file(w->dir_fd, "run", &data, &size, err, sizeof err) < 0)
        return "the last run recorded a failed log write, or predates the run file";
    char *text = xstrndup((const char *)data, size);
    free(data);
    int ok = 0, same_replica = 0, same_boot = 0;
    for (char *save = NULL, *line = strtok_r(text, "\n", &save); line;
         line = strtok_r(NULL, "\n", &save)) {
        if (!strcmp(line, "counterd-run 1"))
            ok = 1;
        else if (!strncmp(line, "replica_id=", 11))
            same_replica = !strcmp(line + 11, replica);
        else if (!strncmp(line, "boot_id=", 8))
            same_boot = !strcmp(line + 8, boot);
    }
    free(text);
    if (!ok || !same_replica)
        return "the run file does not match the meta file";
    /* After a reboot, what was written but not fsynced may be gone, and a /sync push does
     * not wait for fsync even under "always": a peer may hold more of the old id than
     * the log does. */
    if (!same_boot)
        return "the machine rebooted since the last run (a /sync push may have carried "
               "changes the reboot lost)";
    return NULL;
}

/* Records this run: boot id and replica id (see run_proves_complete). @return 0 or -1. */
static int write_run(struct wal *w, const char *replica, const char *boot)
{
    char text[512];
    snprintf(text, sizeof text, "counterd-run 1\nreplica_id=%s\nboot_id=%s\n", replica, boot);
    return write_small(w, "run", text);
}

int wal_forget_run(struct wal *w)
{
    if (w->run_forgotten)
        return 0;
    if ((unlinkat(w->dir_fd, "run", 0) < 0 && errno != ENOENT) || fsync_dir(w) < 0) {
        log_error("data directory %s: cannot remove the run file after a failed log write "
                  "(%s); a crash now could make the next start keep a replica id whose "
                  "changes its log does not hold",
                  w->dir, strerror(errno));
        return -1;
    }
    w->run_forgotten = 1;
    log_warn("data directory %s: a log write failed; the next unclean start counts under a "
             "new replica id",
             w->dir);
    return 0;
}

/* ---------------------------------------------------------------- failures */

static const char *const kind_names[WAL_ERR_COUNT] = {"disk_full", "io_error", "fsync", "snapshot"};

const char *wal_error_name(enum wal_error e)
{
    return (unsigned)e < WAL_ERR_COUNT ? kind_names[e] : "unknown";
}

/* Errors that more free space cures; anything else may have left data behind it unsure. */
static int space_errno(int e)
{
    return e == ENOSPC || e == EDQUOT;
}

static enum wal_error kind_of(int e)
{
    return space_errno(e) ? WAL_ERR_DISK_FULL : WAL_ERR_IO;
}

/*
 * Counts an error of kind and, on the first one, stops the log taking writes: one log line
 * per transition. A later I/O or fsync error turns a full disk into the graver state.
 */
static void wal_fail(struct wal *w, enum wal_error kind, int e, const char *what)
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

static void wal_recovered(struct wal *w)
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
static int reserve_room(struct wal *w, uint64_t end)
{
    uint64_t from = w->reserved > w->seg_size ? w->reserved : w->seg_size;
    if (w->no_prealloc || end <= from)
        return 0;
    uint64_t len = end - from < RESERVE_CHUNK ? RESERVE_CHUNK : end - from;
    int rc;
    while ((rc = fallocate(w->fd, FALLOC_FL_KEEP_SIZE, (off_t)from, (off_t)len)) < 0 &&
           errno == EINTR)
        ;
    if (rc < 0 && space_errno(errno) && len > end - from) {
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
static void release_room(int fd, uint64_t size, uint64_t reserved)
{
    if (reserved > size)
        (void)fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)size,
                        (off_t)(reserved - size));
}

int wal_reserve(struct wal *w, size_t need)
{
    if (w->failed)
        return -1;
    if (reserve_room(w, w->seg_size + w->buf.len + need) == 0)
        return 0;
    int e = errno;
    wal_fail(w, kind_of(e), e, "cannot reserve space for the log");
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

/* The log's own write and fdatasync: fault points for the tests (COUNTERD_FAULTS). */
static int log_write(struct wal *w)
{
    return fault_error(FAULT_WAL_WRITE) ? -1 : write_all(w->fd, w->buf.data, w->buf.len);
}

static int log_fdatasync(int fd)
{
    return fault_error(FAULT_WAL_FSYNC) ? -1 : fdatasync(fd);
}

/* ---------------------------------------------------------------- fsync thread */

/* Flushes and closes the segments rotate() handed over. Called with w->mu held; drops it
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
        int rc = skip ? 0 : log_fdatasync(fd);
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

static void *sync_main(void *arg)
{
    struct wal *w = arg;
    pthread_mutex_lock(&w->mu);
    while (!w->stop) {
        if (w->nold) {
            settle_old(w);
            if (w->policy == WAL_FSYNC_ALWAYS) {
                uint64_t one = 1;
                ssize_t k = write(w->notify_fd, &one, sizeof one);
                (void)k;
            }
            continue;
        }
        uint64_t target = 0;
        double now = clock_mono_ms();
        /* want is raised under "always", and under any policy by wal_write_sync(). */
        if (w->sync_errno)
            target = 0; /* see settle_old: wait for a recovery */
        else if (w->want > w->synced)
            target = w->want;
        else if (w->policy == WAL_FSYNC_EVERYSEC && w->shared_written > w->synced &&
                 now - w->last_sync_ms >= 1000)
            target = w->shared_written;
        if (!target) {
            if (w->policy == WAL_FSYNC_EVERYSEC) {
                struct timespec ts;
                clock_gettime(CLOCK_REALTIME, &ts);
                ts.tv_nsec += 200 * 1000000L;
                if (ts.tv_nsec >= 1000000000L) {
                    ts.tv_sec++;
                    ts.tv_nsec -= 1000000000L;
                }
                pthread_cond_timedwait(&w->wake, &w->mu, &ts);
            } else {
                pthread_cond_wait(&w->wake, &w->mu);
            }
            continue;
        }
        int fd = w->fd, dir = w->dir_dirty;
        unsigned gen = w->sync_gen;
        w->dir_dirty = 0;
        w->busy = 1;
        pthread_mutex_unlock(&w->mu);
        int rc = dir ? fsync(w->dir_fd) : 0;
        if (rc == 0)
            rc = log_fdatasync(fd);
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
        if (w->policy == WAL_FSYNC_ALWAYS || target == w->want) {
            uint64_t one = 1;
            ssize_t k = write(w->notify_fd, &one, sizeof one);
            (void)k;
        }
    }
    settle_old(w); /* what rotate() handed over just before the stop */
    pthread_mutex_unlock(&w->mu);
    return NULL;
}

/* ---------------------------------------------------------------- open and close */

void wal_new_replica_id(char *out, size_t len, const char *node_id)
{
    snprintf(out, len, "%s~%08" PRIx32, node_id, (uint32_t)random_u64());
}

static int replica_known(const struct gstore *st, const char *id)
{
    for (int r = 0; r < gstore_replica_count(st); r++)
        if (!strcmp(gstore_replica_name(st, r), id))
            return 1;
    return 0;
}

static void reap_snapshot(struct wal *w, int block);

/* Frees w and closes what it holds (the fsync thread must be stopped already). */
static void release(struct wal *w)
{
    if (w->snap_pid > 0) {
        kill(w->snap_pid, SIGKILL);
        reap_snapshot(w, 1);
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

struct wal *wal_open(const struct wal_opts *o, struct gstore *st, struct dedup *d,
                     struct wal_info *info, char *err, size_t errlen)
{
    double t0 = clock_mono_ms();
    memset(info, 0, sizeof *info);
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
    struct listing l = {0};

    if (mkdir_p(o->dir) < 0 || (w->dir_fd = open(o->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0) {
        snprintf(err, errlen, "cannot use data directory %s: %s", o->dir, strerror(errno));
        goto fail;
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
        snprintf(err, errlen, "data directory %s is in use by another counterd process", o->dir);
        goto fail;
    }
    if (list_dir(w->dir_fd, &l, 0) < 0) {
        snprintf(err, errlen, "cannot list %s: %s", o->dir, strerror(errno));
        goto fail;
    }

    /* Who this directory belongs to, and whether its last run ended cleanly. */
    char meta_node[256], meta_replica[GSTORE_REPLICA_NAME_MAX + 1];
    if (l.has_meta) {
        if (read_meta(w, meta_node, sizeof meta_node, meta_replica, sizeof meta_replica) < 0) {
            snprintf(err, errlen,
                     "%s/meta is damaged; move the directory aside to start afresh "
                     "(the node then counts under a new replica id)",
                     o->dir);
            goto fail;
        }
        if (strcmp(meta_node, o->node_id) != 0) {
            snprintf(err, errlen, "data directory %s belongs to node %s, not %s", o->dir, meta_node,
                     o->node_id);
            goto fail;
        }
    } else if (l.nsegs || l.nsnaps) {
        snprintf(err, errlen,
                 "data directory %s has log files but no meta file; it is "
                 "damaged or not counterd's",
                 o->dir);
        goto fail;
    }

    /* Recover: the newest snapshot, then every newer segment. Nothing is changed on disk
     * until all of it has been read. */
    struct recovery rc;
    memset(&rc, 0, sizeof rc);
    rc.st = st;
    rc.d = d;
    rc.ts = o->tokset;
    rc.strong = o->strong;
    rc.now = clock_unix_s();
    uint64_t snap = l.nsnaps ? l.snaps[l.nsnaps - 1] : 0;
    char name[64];
    size_t cut_at = 0;
    if (snap) {
        file_name(name, FILE_SNAP, snap);
        if (replay_file(&rc, w->dir_fd, o->dir, name, 1, 0, &cut_at, err, errlen) < 0)
            goto fail;
        if (!rc.seen_end || rc.end_counters != gstore_count(st)) {
            snprintf(err, errlen,
                     "%s/%s is incomplete (no end record, or a count that does not "
                     "match). Move it aside to fall back on older files, if any.",
                     o->dir, name);
            goto fail;
        }
        info->snapshot_seg = snap;
        struct stat sb;
        if (fstatat(w->dir_fd, name, &sb, 0) == 0)
            w->snap_size = (uint64_t)sb.st_size;
    }
    uint64_t prev = snap, torn_seg = 0;
    size_t torn_at = 0, torn_size = 0;
    for (size_t i = 0; i < l.nsegs; i++) {
        uint64_t s = l.segs[i];
        if (s <= snap)
            continue;
        if (!prev)
            prev = s - 1; /* no snapshot: the log starts at its oldest segment */
        if (s != prev + 1) {
            snprintf(err, errlen,
                     "data directory %s: log segment %08" PRIu64 " is missing "
                     "(found %08" PRIu64 " after %08" PRIu64 "); the log cannot be replayed "
                     "past the gap",
                     o->dir, prev + 1, s, prev);
            goto fail;
        }
        file_name(name, FILE_LOG, s);
        int is_last = i + 1 == l.nsegs;
        if (replay_file(&rc, w->dir_fd, o->dir, name, 0, is_last, &cut_at, err, errlen) < 0)
            goto fail;
        if (is_last) {
            struct stat sb;
            /* A tail to cut, or no whole header at all (an empty segment included). */
            if (fstatat(w->dir_fd, name, &sb, 0) == 0 &&
                ((size_t)sb.st_size > cut_at || cut_at < MAGIC_LEN)) {
                torn_seg = s;
                torn_at = cut_at;
                torn_size = (size_t)sb.st_size;
            }
        }
        prev = s;
    }
    info->records = rc.records;

    /* Now the directory may change: cut the torn tail, settle the replica id. */
    struct listing tmp;
    if (list_dir(w->dir_fd, &tmp, 1) == 0) /* removes *.tmp left by a crashed write */
        listing_free(&tmp);
    if (torn_seg && torn_at <= MAGIC_LEN) {
        /* Nothing but a (partial) header: the crash came as the segment was created.
         * Remove it, or it would sit before the next segment with a bad header. */
        file_name(name, FILE_LOG, torn_seg);
        if (unlinkat(w->dir_fd, name, 0) < 0 || fsync_dir(w) < 0) {
            snprintf(err, errlen, "cannot remove the empty %s/%s: %s", o->dir, name,
                     strerror(errno));
            goto fail;
        }
        info->torn_bytes = torn_size;
        log_warn("removed %s/%s: a log segment the crash left without records (%zu bytes)", o->dir,
                 name, torn_size);
        l.nsegs--; /* it was the newest: the next segment takes its number */
        torn_seg = 0;
    }
    if (torn_seg) {
        file_name(name, FILE_LOG, torn_seg);
        int fd = openat(w->dir_fd, name, O_WRONLY | O_CLOEXEC);
        if (fd < 0 || ftruncate(fd, (off_t)torn_at) < 0 || fsync(fd) < 0) {
            snprintf(err, errlen, "cannot cut the torn tail of %s/%s: %s", o->dir, name,
                     strerror(errno));
            if (fd >= 0)
                close(fd);
            goto fail;
        }
        close(fd);
        info->torn_bytes = torn_size - torn_at;
        log_warn("cut a torn tail of %zu bytes at offset %zu in %s/%s (a write the crash "
                 "interrupted; it was never acknowledged under fsync=always)",
                 torn_size - torn_at, torn_at, o->dir, name);
    }
    /*
     * Settle the replica id. A stop that was clean, or a crash whose log provably holds
     * everything the run acknowledged or sent to a peer, keeps it: every change is
     * written (write(2)) before its answer or any /sync carrying it leaves, and a process
     * crash loses nothing the kernel has. A torn tail on the same boot is no exception:
     * the write that tore had not returned, so nothing in it had left. Otherwise a peer
     * may hold more of the old id than this log, and its max-merge would swallow new
     * increments: mint a new incarnation.
     */
    info->clean = l.has_meta && l.has_clean;
    char boot[128];
    read_boot_id(boot, sizeof boot);
    const char *mint_why = !l.has_meta ? "a new data directory" : NULL;
    if (l.has_meta && !info->clean)
        mint_why = run_proves_complete(w, meta_replica, boot);
    if (!mint_why) {
        snprintf(info->replica_id, sizeof info->replica_id, "%s", meta_replica);
        snprintf(info->id_reason, sizeof info->id_reason, "kept replica id %s: %s", meta_replica,
                 info->clean ? "the last stop was clean"
                             : "the last stop was a crash on the same boot, and its log holds "
                               "everything it acknowledged or replicated");
    } else {
        /* A fresh incarnation, distinct from every replica id the store already knows. */
        do {
            wal_new_replica_id(info->replica_id, sizeof info->replica_id, o->node_id);
        } while (replica_known(st, info->replica_id));
        info->new_replica = 1;
        char text[512];
        snprintf(text, sizeof text, "counterd-data 1\nnode_id=%s\nreplica_id=%s\n", o->node_id,
                 info->replica_id);
        if (write_small(w, "meta", text) < 0) {
            snprintf(err, errlen, "cannot write %s/meta: %s", o->dir, strerror(errno));
            goto fail;
        }
        snprintf(info->id_reason, sizeof info->id_reason, "new replica id %s: %s", info->replica_id,
                 mint_why);
    }
    if (write_run(w, info->replica_id, boot) < 0) {
        log_warn("cannot write %s/run (%s): the next unclean start will count under a new "
                 "replica id",
                 o->dir, strerror(errno));
        if (unlinkat(w->dir_fd, "run", 0) < 0 && errno != ENOENT) {
            snprintf(err, errlen, "cannot replace %s/run: %s", o->dir, strerror(errno));
            goto fail;
        }
        w->run_forgotten = 1;
    }
    if (l.has_clean && (unlinkat(w->dir_fd, "clean", 0) < 0 || fsync_dir(w) < 0)) {
        snprintf(err, errlen, "cannot remove %s/clean: %s", o->dir, strerror(errno));
        goto fail;
    }

    w->seg = (l.nsegs ? l.segs[l.nsegs - 1] : 0);
    if (w->seg < snap)
        w->seg = snap;
    w->seg++;
    if ((w->fd = open_segment(w, w->seg)) < 0) {
        snprintf(err, errlen, "cannot create log segment %" PRIu64 " in %s: %s", w->seg, o->dir,
                 strerror(errno));
        goto fail;
    }
    w->seg_size = MAGIC_LEN;
    /* Segments the snapshot covers are left over from a stop between a snapshot and
     * their deletion. */
    for (size_t i = 0; i < l.nsegs; i++)
        if (l.segs[i] <= snap) {
            file_name(name, FILE_LOG, l.segs[i]);
            unlinkat(w->dir_fd, name, 0);
        }
    for (size_t i = 0; i + 1 < l.nsnaps; i++) {
        file_name(name, FILE_SNAP, l.snaps[i]);
        unlinkat(w->dir_fd, name, 0);
    }
    /* The segments replayed since the snapshot count toward the next one. */
    for (size_t i = 0; i < l.nsegs; i++)
        if (l.segs[i] > snap) {
            struct stat sb;
            file_name(name, FILE_LOG, l.segs[i]);
            if (fstatat(w->dir_fd, name, &sb, 0) == 0)
                w->since_snapshot += (uint64_t)sb.st_size;
        }

    w->notify_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    w->last_sync_ms = clock_mono_ms();
    if (w->notify_fd < 0 || pthread_create(&w->thread, NULL, sync_main, w) != 0) {
        snprintf(err, errlen, "cannot start the fsync thread: %s", strerror(errno));
        goto fail;
    }
    listing_free(&l);
    info->ms = clock_mono_ms() - t0;
    return w;
fail:
    listing_free(&l);
    release(w);
    return NULL;
}

static void stop_thread(struct wal *w)
{
    pthread_mutex_lock(&w->mu);
    w->stop = 1;
    pthread_cond_broadcast(&w->wake);
    pthread_mutex_unlock(&w->mu);
    pthread_join(w->thread, NULL);
}

static void recover_space(struct wal *w);

int wal_close(struct wal *w)
{
    if (!w)
        return 0;
    if (w->failed == FAIL_SPACE) {
        w->retry_at = 0; /* one last try: a clean stop keeps the replica id */
        recover_space(w);
    }
    int rc = wal_write(w);
    if (rc == 0 && !w->failed)
        release_room(w->fd, w->seg_size, w->reserved);
    stop_thread(w);
    if (rc == 0 && !w->failed && log_fdatasync(w->fd) == 0) {
        char text[GSTORE_REPLICA_NAME_MAX + 2] = "";
        rc = write_small(w, "clean", text);
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
    stop_thread(w);
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
    uint64_t mseq = gcounter_mseq(gstore_counter(st, id));
    encode_counter(&w->buf, st, w->tokset, id, mseq ? mseq - 1 : 0, token, tlen, a, at);
    return appended(w, before);
}

uint64_t wal_append_tokens(struct wal *w, const struct gstore *st, uint32_t id, uint64_t after)
{
    size_t before = w->buf.len;
    encode_counter(&w->buf, st, w->tokset, id, after, NULL, 0, NULL, 0);
    return appended(w, before);
}

/* The buffer reached the file: account for it. */
static void wrote(struct wal *w)
{
    w->written = w->appended;
    w->seg_size += w->buf.len;
    w->since_snapshot += w->buf.len;
    buf_trim(&w->buf, 4u << 20);
    pthread_mutex_lock(&w->mu);
    w->shared_written = w->written;
    if (w->policy == WAL_FSYNC_ALWAYS) {
        w->want = w->written;
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
        wal_fail(w, kind_of(e), e, "cannot write the log");
    else
        wal_fail(w, WAL_ERR_IO, e, "cannot write the log nor cut the partial write");
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
    if (log_write(w) < 0) {
        write_failed(w, errno);
        return -1;
    }
    fault_hit(FAULT_WAL_AFTER_WRITE);
    wrote(w);
    return 0;
}

uint64_t wal_append_strong(struct wal *w, const char *counter, size_t clen,
                           const struct strong_entry *e)
{
    size_t before = w->buf.len;
    encode_strong(&w->buf, counter, clen, e);
    return appended(w, before);
}

uint64_t wal_append_promise(struct wal *w, uint64_t epoch)
{
    size_t before = w->buf.len;
    encode_promise(&w->buf, epoch);
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

uint64_t wal_synced(struct wal *w)
{
    pthread_mutex_lock(&w->mu);
    uint64_t v = w->synced;
    int e = w->sync_errno;
    pthread_mutex_unlock(&w->mu);
    if (e && w->failed != FAIL_IO) /* the fsync thread cannot log from under the lock */
        wal_fail(w, WAL_ERR_FSYNC, e,
                 "fdatasync of the log failed (what it covered may not be "
                 "on disk)");
    return v;
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

enum wal_fsync wal_policy(const struct wal *w)
{
    return w->policy;
}

/* ---------------------------------------------------------------- snapshots */

struct snap_writer {
    int fd;
    struct buf b;
    int failed, err;
    uint64_t dedups;
};

static void snap_flush(struct snap_writer *sw, int force)
{
    if (sw->b.len < (1u << 20) && !force)
        return;
    if (!sw->failed && write_all(sw->fd, sw->b.data, sw->b.len) < 0) {
        sw->failed = 1;
        sw->err = errno ? errno : EIO;
    }
    buf_reset(&sw->b);
}

static void snap_dedup(void *arg, const char *counter, size_t clen, const char *token, size_t tlen,
                       double at, const struct dedup_answer *a)
{
    struct snap_writer *sw = arg;
    size_t start = sw->b.len;
    buf_append(&sw->b, "\0\0\0\0\0\0\0\0", 8);
    put_u8(&sw->b, REC_DEDUP);
    put_str8(&sw->b, counter, clen);
    put_str8(&sw->b, token, tlen);
    put_u64(&sw->b, (uint64_t)a->amount);
    put_u64(&sw->b, (uint64_t)a->local_count);
    put_u64(&sw->b, (uint64_t)a->total_count);
    put_f64(&sw->b, at);
    frame(&sw->b, start);
    sw->dedups++;
    snap_flush(sw, 0);
}

static void snap_strong(void *arg, const char *name, size_t len, const struct strong_entry *e)
{
    struct snap_writer *sw = arg;
    encode_strong(&sw->b, name, len, e);
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
    file_name(name, FILE_SNAP, seg);
    file_name(tmp, FILE_SNAP_TMP, seg);
    struct snap_writer sw = {0};
    sw.fd = openat(dir_fd, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (sw.fd < 0)
        _exit(child_status(errno));
    buf_append(&sw.b, SNAP_MAGIC, MAGIC_LEN);
    uint32_t n = gstore_count(st);
    for (uint32_t id = 0; id < n && !sw.failed; id++) {
        encode_counter(&sw.b, st, w->tokset, id, 0, NULL, 0, NULL, 0);
        snap_flush(&sw, 0);
    }
    dedup_foreach(d, snap_dedup, &sw);
    if (w->strong) {
        encode_promise(&sw.b, strongrep_promised(w->strong));
        strongrep_each(w->strong, snap_strong, &sw);
    }
    size_t start = sw.b.len;
    buf_append(&sw.b, "\0\0\0\0\0\0\0\0", 8);
    put_u8(&sw.b, REC_END);
    put_u64(&sw.b, n);
    put_u64(&sw.b, sw.dedups);
    frame(&sw.b, start);
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
    file_name(tmp, FILE_SNAP_TMP, covers);
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

/*
 * Drops what a failed log holds: the records that could not be written, and the fsync
 * error (the thread fsyncs again, but claims nothing about older positions). What they
 * covered is in the memory the recovery snapshot is taken from. Call with w->mu held.
 */
static void forget_failed(struct wal *w)
{
    buf_reset(&w->buf);
    w->held = 0;
    w->write_failed = 0;
    w->written = w->appended;
    w->shared_written = w->want = w->synced;
    w->sync_errno = 0;
    w->sync_gen++;
}

/* Starts the next segment; the fsync thread flushes (per policy) and closes the old one,
 * so the loop never waits for the disk here. discard: the old one's records need no
 * fsync (a recovery snapshot covers them); its buffered records are dropped too. */
static int rotate_ex(struct wal *w, int discard)
{
    if (!discard && wal_write(w) < 0)
        return -1;
    pthread_mutex_lock(&w->mu);
    int rc = -1;
    if (w->nold < (int)(sizeof w->old / sizeof w->old[0])) {
        int fd = open_segment(w, w->seg + 1);
        if (fd >= 0) {
            release_room(w->fd, w->seg_size, w->reserved);
            w->old[w->nold].fd = w->fd;
            w->old[w->nold].upto = w->written;
            w->old[w->nold].discard = discard;
            w->nold++;
            w->fd = fd;
            w->seg++;
            w->seg_size = MAGIC_LEN;
            w->reserved = 0;
            if (discard)
                forget_failed(w);
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

static int rotate(struct wal *w)
{
    return rotate_ex(w, 0);
}

/* Forks the child that snapshots the memory as of the end of segment covers. */
static int fork_snapshot(struct wal *w, const struct gstore *st, const struct dedup *d,
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
             gstore_count(st), (int)pid, covers);
    return 0;
}

int wal_snapshot(struct wal *w, const struct gstore *st, const struct dedup *d)
{
    if (w->snap_pid > 0 || w->failed)
        return -1;
    if (rotate(w) < 0) {
        if (!w->failed)
            snapshot_failed(w, w->seg, "cannot start a new log segment");
        return -1;
    }
    return fork_snapshot(w, st, d, w->seg - 1);
}

int wal_snapshot_running(const struct wal *w)
{
    return w->snap_pid > 0;
}

static void reap_snapshot(struct wal *w, int block)
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
            file_name(tmp, FILE_SNAP_TMP, w->snap_seg);
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
        wal_recovered(w);
    }
    /* Everything the snapshot covers is now redundant. */
    struct listing l;
    if (list_dir(w->dir_fd, &l, 0) == 0) {
        char name[64];
        for (size_t i = 0; i < l.nsegs; i++)
            if (l.segs[i] <= w->snap_seg) {
                file_name(name, FILE_LOG, l.segs[i]);
                unlinkat(w->dir_fd, name, 0);
            }
        for (size_t i = 0; i < l.nsnaps; i++)
            if (l.snaps[i] < w->snap_seg) {
                file_name(name, FILE_SNAP, l.snaps[i]);
                unlinkat(w->dir_fd, name, 0);
            }
        fsync_dir(w);
        listing_free(&l);
    }
    char name[64];
    struct stat sb;
    file_name(name, FILE_SNAP, w->snap_seg);
    if (fstatat(w->dir_fd, name, &sb, 0) == 0)
        w->snap_size = (uint64_t)sb.st_size;
    log_info("snapshot covering log segments up to %" PRIu64 " is in place (%" PRIu64 " bytes)",
             w->snap_seg, w->snap_size);
}

/* A full disk: write what is held once there is room for it and some more. */
static void recover_space(struct wal *w)
{
    if (clock_mono_ms() < w->retry_at)
        return;
    w->retry_at = clock_mono_ms() + RETRY_MS;
    if (reserve_room(w, w->seg_size + w->buf.len + RECOVER_ROOM) < 0) {
        int e = errno;
        w->errors[kind_of(e)]++;
        if (!space_errno(e))
            wal_fail(w, WAL_ERR_IO, e, "cannot reserve space for the log");
        return;
    }
    if (w->buf.len) {
        if (log_write(w) < 0) {
            int e = errno;
            if (ftruncate(w->fd, (off_t)w->seg_size) < 0 || !space_errno(e))
                wal_fail(w, WAL_ERR_IO, e, "cannot write the log");
            else
                w->errors[WAL_ERR_DISK_FULL]++;
            return;
        }
        wrote(w);
    }
    wal_recovered(w);
}

/*
 * An I/O or fsync error: what was written since the last good fsync may never reach the
 * disk, and a second fsync cannot be trusted to say so. The memory is right, so a snapshot
 * of it, after a fresh segment, makes everything durable again; writes wait for it.
 */
static void recover_io(struct wal *w, const struct gstore *st, const struct dedup *d)
{
    if (clock_mono_ms() < w->retry_at || clock_unix_s() < w->retry_after)
        return;
    w->retry_at = clock_mono_ms() + RETRY_MS;
    /* A fresh segment, unless no record went to the current one (then the snapshot of
     * the segments before it covers everything). */
    if (w->seg_size > MAGIC_LEN || w->buf.len || w->seg == 1) {
        if (rotate_ex(w, 1) < 0) {
            int e = errno;
            w->errors[kind_of(e)]++;
            return;
        }
    } else {
        pthread_mutex_lock(&w->mu);
        forget_failed(w);
        pthread_mutex_unlock(&w->mu);
    }
    w->recover_upto = w->appended;
    if (fork_snapshot(w, st, d, w->seg - 1) == 0)
        w->recovering = 1;
}

void wal_tick(struct wal *w, const struct gstore *st, const struct dedup *d)
{
    if (w->snap_pid > 0) {
        reap_snapshot(w, 0);
        return;
    }
    if (w->failed == FAIL_SPACE)
        recover_space(w);
    else if (w->failed == FAIL_IO)
        recover_io(w, st, d);
    if (w->failed)
        return;
    /* Like Redis' AOF rewrite: not before the log is as big as the last snapshot, so a
     * large store is not rewritten over and over (write amplification stays under 2x). */
    uint64_t due = w->snapshot_bytes > w->snap_size ? w->snapshot_bytes : w->snap_size;
    if ((w->since_snapshot >= due || w->snap_text[0]) && clock_unix_s() >= w->retry_after)
        wal_snapshot(w, st, d); /* a failed one is retried whatever the log's size */
}
