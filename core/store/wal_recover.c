/*
 * wal_recover.c - start-up recovery: the newest snapshot, then every newer log segment,
 * replayed into the store; a torn tail of the last segment told apart from damage.
 *
 * Reads only, until everything is read: it never changes the directory before deciding
 * the log is sound, and it never drops a damaged record silently (it refuses, naming the
 * file, the offset and how to recover).
 */
#define _GNU_SOURCE
#include "wal_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <fcntl.h>
#include <errno.h>
#include <inttypes.h>

#include "../base/clock.h"
#include "../base/log.h"
#include "../base/mem.h"

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
    struct gentry floor[GCOUNTER_MAX_ENTRIES], dfloor[GCOUNTER_MAX_ENTRIES]; /* lifecycle */
    uint64_t end_counters, end_dedups; /* from a snapshot's END record */
    int seen_end;
    char why[160]; /* why a payload was refused */
};

/* A snapshot's END record: how many counters and idempotency entries it holds. */
static int apply_end(struct recovery *rc, struct reader *r)
{
    rc->end_counters = wal__get_u64(r);
    rc->end_dedups = wal__get_u64(r);
    rc->seen_end = 1;
    return r->bad || r->p != r->end ? (snprintf(rc->why, sizeof rc->why, "bad end record"), -1) : 0;
}

/* A snapshot's idempotency entry. */
static int apply_dedup(struct recovery *rc, struct reader *r)
{
    size_t clen, tlen;
    const char *counter = wal__get_str8(r, &clen);
    const char *token = wal__get_str8(r, &tlen);
    struct dedup_answer a;
    a.amount = (int64_t)wal__get_u64(r);
    a.local_count = (int64_t)wal__get_u64(r);
    a.total_count = (int64_t)wal__get_u64(r);
    double at = wal__get_f64(r);
    if (r->bad || r->p != r->end || !gstore_key_valid(counter, clen) || !tlen) {
        snprintf(rc->why, sizeof rc->why, "bad idempotency record");
        return -1;
    }
    dedup_put(rc->d, counter, clen, token, tlen, at, &a); /* it expires by its window */
    rc->records++;
    return 0;
}

/* A strong-counter proposal accepted (REC_STRONG) or an epoch promised (REC_PROMISE). */
static int apply_strong(struct recovery *rc, struct reader *r, unsigned type)
{
    size_t clen = 0;
    const char *counter = type == REC_STRONG ? wal__get_str8(r, &clen) : NULL;
    struct strongrep_entry e;
    e.epoch = wal__get_u64(r);
    e.round = type == REC_STRONG ? wal__get_u64(r) : 0;
    e.value = type == REC_STRONG ? (int64_t)wal__get_u64(r) : 0;
    if (r->bad || r->p != r->end || (counter && !strongrep_name_valid(counter, clen))) {
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

/* A counter record as read (pointers into the record; see wal_rec.c for its layout). */
struct counter_rec {
    const char *name, *token;
    size_t nlen, tlen;
    unsigned n, nf; /* entries (in rc->entries), folded replicas (in rc->folded) */
    int has_life;   /* the lifecycle state (floors in rc->floor, rc->dfloor) */
    struct glife life;
    struct dedup_answer a;
    double at;
    const unsigned char *toks; /* the token-set elements, after their u32 count */
    uint32_t ntoks;
};

/* The counter's per-replica entries, into rc->entries. @return 0, or -1 with rc->why. */
static int read_entries(struct recovery *rc, struct reader *r, struct counter_rec *c)
{
    c->n = wal__get_u8(r);
    for (unsigned i = 0; i < c->n && !r->bad; i++) {
        size_t rlen;
        const char *rn = wal__get_str8(r, &rlen);
        int64_t pos = (int64_t)wal__get_u64(r), neg = (int64_t)wal__get_u64(r);
        if (r->bad)
            break;
        if (!gstore_counter_replica_node_len(rn, rlen) || pos < 0 || neg < 0) {
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
    return 0;
}

/* One floor of the lifecycle state into out. @return its length, or -1 with rc->why. */
static int read_floor(struct recovery *rc, struct reader *r, struct gentry *out)
{
    unsigned n = wal__get_u8(r);
    for (unsigned i = 0; i < n && !r->bad; i++) {
        size_t rlen;
        const char *rn = wal__get_str8(r, &rlen);
        int64_t pos = (int64_t)wal__get_u64(r), neg = (int64_t)wal__get_u64(r);
        if (r->bad)
            break;
        if (!gstore_counter_replica_node_len(rn, rlen) || pos < 0 || neg < 0 ||
            (out[i].rep = gstore_replica(rc->st, rn, rlen)) < 0) {
            snprintf(rc->why, sizeof rc->why, "bad floor entry in counter record");
            return -1;
        }
        out[i].pos = pos;
        out[i].neg = neg;
    }
    return (int)n;
}

/* The lifecycle state (flags bit 2, after the folded replicas): GLIFE_* flags and the two
 * floors. @return 0, or -1 with rc->why. */
static int read_life(struct recovery *rc, struct reader *r, struct counter_rec *c)
{
    c->life.flags = wal__get_u8(r);
    int nfloor = read_floor(rc, r, rc->floor);
    int ndfloor = nfloor < 0 ? -1 : read_floor(rc, r, rc->dfloor);
    if (ndfloor < 0)
        return -1;
    if (c->life.flags & ~(unsigned)(GLIFE_DELETED | GLIFE_SEALED))
        r->bad = 1;
    c->life.floor = rc->floor;
    c->life.nfloor = (size_t)nfloor;
    c->life.dfloor = rc->dfloor;
    c->life.ndfloor = (size_t)ndfloor;
    return 0;
}

/* The flags byte and what it announces: the increment's token and first answer (bit 0),
 * the folded replicas into rc->folded (bit 1), the lifecycle state (bit 2).
 * @return 0, or -1 with rc->why. */
static int read_flagged(struct recovery *rc, struct reader *r, struct counter_rec *c)
{
    unsigned flags = wal__get_u8(r);
    if (flags & 1) {
        c->token = wal__get_str8(r, &c->tlen);
        c->a.amount = (int64_t)wal__get_u64(r);
        c->a.local_count = (int64_t)wal__get_u64(r);
        c->a.total_count = (int64_t)wal__get_u64(r);
        c->at = wal__get_f64(r);
    }
    if (flags & ~7u)
        r->bad = 1;
    c->has_life = (flags & 4) != 0;
    if (!(flags & 2))
        return c->has_life ? read_life(rc, r, c) : 0;
    c->nf = wal__get_u8(r);
    c->nf |= wal__get_u8(r) << 8;
    if (c->nf > GCOUNTER_MAX_FOLDED)
        r->bad = 1;
    for (unsigned i = 0; i < c->nf && !r->bad; i++) {
        size_t rlen;
        const char *rn = wal__get_str8(r, &rlen);
        if (r->bad || !gstore_counter_replica_node_len(rn, rlen) ||
            (rc->folded[i] = gstore_replica(rc->st, rn, rlen)) < 0) {
            snprintf(rc->why, sizeof rc->why, "bad folded replica in counter record");
            return -1;
        }
    }
    return c->has_life ? read_life(rc, r, c) : 0;
}

/* Token-set elements, when the record has them (older records end before): checked here,
 * merged by merge_tokens once the counter is known good. */
static void read_tokens(struct reader *r, struct counter_rec *c)
{
    c->ntoks = r->p < r->end ? wal__get_u32(r) : 0;
    c->toks = r->p;
    for (uint32_t i = 0; i < c->ntoks && !r->bad; i++) {
        size_t kl;
        wal__get_str8(r, &kl);
        wal__get_u64(r);
        unsigned st = wal__get_u8(r);
        if (kl == 0 || kl > TOKSET_TOKEN_MAX || st > 1)
            r->bad = 1;
    }
}

static void merge_tokens(struct recovery *rc, uint32_t id, const struct counter_rec *c,
                         const unsigned char *end)
{
    struct reader tr = {c->toks, end, 0};
    uint64_t seq = gstore_seq(rc->st) + 1;
    int changed = 0;
    for (uint32_t i = 0; i < c->ntoks; i++) {
        size_t kl;
        const char *k = wal__get_str8(&tr, &kl);
        int64_t amount = (int64_t)wal__get_u64(&tr);
        int settled = (int)wal__get_u8(&tr);
        changed |= tokset_merge(rc->ts, id, k, kl, amount, settled, seq);
    }
    if (changed & TOKSET_CHANGED)
        gstore_touch(rc->st, id);
}

/* A counter's entries (merged), its token-set elements, and an increment's answer. */
static int apply_counter(struct recovery *rc, struct reader *r)
{
    struct counter_rec c;
    memset(&c, 0, sizeof c);
    c.name = wal__get_str8(r, &c.nlen);
    if (read_entries(rc, r, &c) < 0 || read_flagged(rc, r, &c) < 0)
        return -1;
    read_tokens(r, &c);
    if (r->bad || r->p != r->end || !gstore_key_valid(c.name, c.nlen) || (c.token && !c.tlen)) {
        snprintf(rc->why, sizeof rc->why, "malformed counter record");
        return -1;
    }
    uint32_t id = gstore_find(rc->st, c.name, c.nlen);
    const struct glife *life = c.has_life ? &c.life : NULL;
    if (gstore_merge_life_check(rc->st, id, rc->entries, c.n, rc->folded, c.nf, life) != 0) {
        snprintf(rc->why, sizeof rc->why, "counter %.*s cannot be merged (out of range)",
                 (int)c.nlen, c.name);
        return -1;
    }
    if (id == GSTORE_NONE)
        id = gstore_create(rc->st, c.name, c.nlen);
    gstore_merge_life(rc->st, id, rc->entries, c.n, rc->folded, c.nf, life, 0);
    if (c.ntoks && rc->ts)
        merge_tokens(rc, id, &c, r->end);
    if (c.token)
        dedup_put(rc->d, c.name, c.nlen, c.token, c.tlen, c.at, &c.a);
    rc->records++;
    return 0;
}

/* A counter the tombstone GC dropped: it is dropped here too, at this point of the log (a
 * later record of the name is a new life). A name not held is nothing to do: the records
 * of the counter's life were in files a snapshot already replaced. */
static int apply_drop(struct recovery *rc, struct reader *r)
{
    size_t clen;
    const char *counter = wal__get_str8(r, &clen);
    if (r->bad || r->p != r->end || !gstore_key_valid(counter, clen)) {
        snprintf(rc->why, sizeof rc->why, "bad drop record");
        return -1;
    }
    uint32_t id = gstore_find(rc->st, counter, clen);
    if (id != GSTORE_NONE) {
        if (rc->ts)
            tokset_forget(rc->ts, id);
        gstore_drop(rc->st, id);
    }
    rc->records++;
    return 0;
}

/* Applies one record's payload. @return 0, or -1 with rc->why. */
static int apply(struct recovery *rc, const unsigned char *p, size_t len, int in_snapshot)
{
    struct reader r = {p, p + len, 0};
    unsigned type = wal__get_u8(&r);
    if (type == REC_END && in_snapshot)
        return apply_end(rc, &r);
    if (type == REC_DEDUP && in_snapshot)
        return apply_dedup(rc, &r);
    if (type == REC_FAILOVER || type == REC_SETTLE) {
        /* Failover records and settlements of older versions (the take-back design):
         * exactly-once no longer needs them. */
        rc->records++;
        return 0;
    }
    if (type == REC_STRONG || type == REC_PROMISE)
        return apply_strong(rc, &r, type);
    if (type == REC_DROP && !in_snapshot)
        return apply_drop(rc, &r);
    if (type != REC_COUNTER) {
        snprintf(rc->why, sizeof rc->why, "unknown record type 0x%02x", type);
        return -1;
    }
    return apply_counter(rc, &r);
}

/*
 * Applies the records of a file's data after its header. @return 0 (with *cut_at set to
 * where a torn tail starts when last, else left), or -1 with err.
 */
static int replay_records(struct recovery *rc, const unsigned char *data, size_t size,
                          const char *dir, const char *name, int is_snapshot, int last,
                          size_t *cut_at, char *err, size_t errlen)
{
    size_t off = MAGIC_LEN;
    while (off < size) {
        int good = wal__record_at(data, size, off);
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
                return -1;
            }
            off += 8 + len;
            continue;
        }
        /* A bad record: torn tail, or damage with good data after it? */
        size_t next = off + 1;
        while (next < size && !wal__record_at(data, size, next))
            next++;
        if (next >= size && last && !is_snapshot) {
            *cut_at = off;
            return 0;
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
        return -1;
    }
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
    if (wal__read_file(dir_fd, name, &data, &size, err, errlen) < 0)
        return -1;
    const char *magic = is_snapshot ? SNAP_MAGIC : LOG_MAGIC;
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
    rcode = replay_records(rc, data, size, dir, name, is_snapshot, last, cut_at, err, errlen);
out:
    free(data);
    return rcode;
}

/* The newest snapshot: replayed whole, and complete (its end record agrees). */
static int replay_snapshot(struct wal *w, struct recovery *rc, uint64_t snap, struct wal_info *info,
                           char *err, size_t errlen)
{
    char name[FILE_NAME_LEN];
    size_t cut_at = 0;
    wal__file_name(name, FILE_SNAP, snap);
    if (replay_file(rc, w->dir_fd, w->dir, name, 1, 0, &cut_at, err, errlen) < 0)
        return -1;
    if (!rc->seen_end || rc->end_counters != gstore_live(rc->st)) {
        snprintf(err, errlen,
                 "%s/%s is incomplete (no end record, or a count that does not "
                 "match). Move it aside to fall back on older files, if any.",
                 w->dir, name);
        return -1;
    }
    info->snapshot_seg = snap;
    struct stat sb;
    if (fstatat(w->dir_fd, name, &sb, 0) == 0)
        w->snap_size = (uint64_t)sb.st_size;
    return 0;
}

/* What the last segment's replay found to cut: seg 0 when nothing. */
struct torn {
    uint64_t seg;
    size_t at, size;
};

/* Every segment newer than snapshot snap, in order and without a gap. */
static int replay_segments(struct wal *w, struct recovery *rc, const struct wal_listing *l,
                           uint64_t snap, struct torn *torn, char *err, size_t errlen)
{
    char name[FILE_NAME_LEN];
    uint64_t prev = snap;
    for (size_t i = 0; i < l->nsegs; i++) {
        uint64_t s = l->segs[i];
        if (s <= snap)
            continue;
        if (!prev)
            prev = s - 1; /* no snapshot: the log starts at its oldest segment */
        if (s != prev + 1) {
            snprintf(err, errlen,
                     "data directory %s: log segment %08" PRIu64 " is missing "
                     "(found %08" PRIu64 " after %08" PRIu64 "); the log cannot be replayed "
                     "past the gap",
                     w->dir, prev + 1, s, prev);
            return -1;
        }
        wal__file_name(name, FILE_LOG, s);
        int is_last = i + 1 == l->nsegs;
        size_t cut_at = 0;
        if (replay_file(rc, w->dir_fd, w->dir, name, 0, is_last, &cut_at, err, errlen) < 0)
            return -1;
        struct stat sb;
        /* A tail to cut, or no whole header at all (an empty segment included). */
        if (is_last && fstatat(w->dir_fd, name, &sb, 0) == 0 &&
            ((size_t)sb.st_size > cut_at || cut_at < MAGIC_LEN))
            *torn = (struct torn){s, cut_at, (size_t)sb.st_size};
        prev = s;
    }
    return 0;
}

/* Cuts the torn tail replay_segments found, or removes a segment that has nothing but a
 * (partial) header. @return 0, or -1 with err. */
static int cut_torn(struct wal *w, struct wal_listing *l, const struct torn *t,
                    struct wal_info *info, char *err, size_t errlen)
{
    char name[FILE_NAME_LEN];
    wal__file_name(name, FILE_LOG, t->seg);
    if (t->at <= MAGIC_LEN) {
        /* The crash came as the segment was created. Remove it, or it would sit before the
         * next segment with a bad header. */
        if (unlinkat(w->dir_fd, name, 0) < 0 || wal__fsync_dir(w) < 0) {
            snprintf(err, errlen, "cannot remove the empty %s/%s: %s", w->dir, name,
                     strerror(errno));
            return -1;
        }
        info->torn_bytes = t->size;
        log_warn("removed %s/%s: a log segment the crash left without records (%zu bytes)", w->dir,
                 name, t->size);
        l->nsegs--; /* it was the newest: the next segment takes its number */
        return 0;
    }
    int fd = openat(w->dir_fd, name, O_WRONLY | O_CLOEXEC);
    if (fd < 0 || ftruncate(fd, (off_t)t->at) < 0 || fsync(fd) < 0) {
        snprintf(err, errlen, "cannot cut the torn tail of %s/%s: %s", w->dir, name,
                 strerror(errno));
        if (fd >= 0)
            close(fd);
        return -1;
    }
    close(fd);
    info->torn_bytes = t->size - t->at;
    log_warn("cut a torn tail of %zu bytes at offset %zu in %s/%s (a write the crash "
             "interrupted; it was never acknowledged under fsync=always)",
             t->size - t->at, t->at, w->dir, name);
    return 0;
}

int wal__recover(struct wal *w, struct wal_listing *l, struct gstore *st, struct dedup *d,
                 struct wal_info *info, uint64_t *snap, char *err, size_t errlen)
{
    struct recovery rc;
    memset(&rc, 0, sizeof rc);
    rc.st = st;
    rc.d = d;
    rc.ts = w->tokset;
    rc.strong = w->strong;
    rc.now = clock_unix_s();
    struct torn torn = {0, 0, 0};
    *snap = l->nsnaps ? l->snaps[l->nsnaps - 1] : 0;
    if ((*snap && replay_snapshot(w, &rc, *snap, info, err, errlen) < 0) ||
        replay_segments(w, &rc, l, *snap, &torn, err, errlen) < 0)
        return -1;
    info->records = rc.records;
    /* Now the directory may change. */
    struct wal_listing tmp;
    if (wal__list_dir(w->dir_fd, &tmp, 1) == 0) /* removes *.tmp left by a crashed write */
        wal__listing_free(&tmp);
    return torn.seg ? cut_torn(w, l, &torn, info, err, errlen) : 0;
}
