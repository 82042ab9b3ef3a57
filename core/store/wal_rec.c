/*
 * wal_rec.c - the log's record codec: how a counter, an idempotency entry, a strong-counter
 * proposal or promise, a dropped counter and a snapshot's end become framed bytes ([u32 length][u32
 * CRC-32C] [payload], see wal.h), and whether bytes hold a well-formed record.
 *
 * Pure functions of their arguments: no file, no struct wal, no store changes (applying a
 * record is wal_recover.c's).
 */
#define _GNU_SOURCE
#include "wal_internal.h"

#include <string.h>

#include "../base/buf.h"
#include "../base/crc32c.h"

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

/* Stores v little-endian at p. */
static void le64(unsigned char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++, v >>= 8)
        p[i] = (unsigned char)v;
}

/* An increment's token part (str8 token, amount, local and total count, f64 time) in one
 * append: every tokened increment's record carries it. */
static void put_token(struct buf *b, const char *token, size_t tlen, const struct dedup_answer *a,
                      double at)
{
    unsigned char t[1 + 255 + 32];
    uint64_t atv;
    memcpy(&atv, &at, 8);
    t[0] = (unsigned char)tlen;
    memcpy(t + 1, token, tlen & 0xff);
    unsigned char *p = t + 1 + (tlen & 0xff);
    le64(p, (uint64_t)a->amount);
    le64(p + 8, (uint64_t)a->local_count);
    le64(p + 16, (uint64_t)a->total_count);
    le64(p + 24, atv);
    buf_append(b, t, (size_t)(p + 32 - t));
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

/* A floor of the lifecycle state: a u8 count, then (str8 replica id, u64 pos, u64 neg) each. */
static void put_floor(struct buf *b, const struct gstore *st, const struct gentry *f, size_t n)
{
    put_u8(b, (unsigned)n);
    for (size_t i = 0; i < n; i++) {
        const char *rn = gstore_replica_name(st, f[i].rep);
        put_str8(b, rn, strlen(rn));
        put_u64(b, (uint64_t)f[i].pos);
        put_u64(b, (uint64_t)f[i].neg);
    }
}

/*
 * A counter's record up to its token part: its entries, a flags byte (bit 0: the
 * increment's token follows; bit 1: its folded replicas follow, a u16 count and their ids,
 * see gstore_fold; bit 2: its lifecycle state follows, a u8 of GLIFE_* flags, the clear
 * floor and the delete floor, see gstore_life), then those. Records of older versions have
 * flags 0 to 3, and a counter that never had a floor or a deletion is written without bit 2.
 */
static void counter_head(struct buf *b, const struct gstore *st, uint32_t id, const char *token,
                         size_t tlen, const struct dedup_answer *a, double at)
{
    const struct gcounter *c = gstore_counter(st, id);
    size_t nlen;
    const char *name = gstore_counter_name(c, &nlen);
    unsigned n = gstore_counter_entries(c);
    put_u8(b, REC_COUNTER);
    put_str8(b, name, nlen);
    put_u8(b, n);
    for (unsigned i = 0; i < n; i++) {
        struct gentry e;
        gstore_counter_entry(c, i, &e);
        const char *rn = gstore_replica_name(st, e.rep);
        put_str8(b, rn, strlen(rn));
        unsigned char pn[16];
        le64(pn, (uint64_t)e.pos);
        le64(pn + 8, (uint64_t)e.neg);
        buf_append(b, pn, sizeof pn);
    }
    const uint16_t *folded;
    unsigned nf = gstore_folded_list(st, id, &folded);
    struct glife life;
    int has_life = gstore_life(st, id, &life);
    put_u8(b, (token ? 1u : 0u) | (nf ? 2u : 0u) | (has_life ? 4u : 0u));
    if (token)
        put_token(b, token, tlen, a, at);
    if (nf) {
        put_u8(b, nf & 0xff);
        put_u8(b, nf >> 8);
        for (unsigned i = 0; i < nf; i++) {
            const char *rn = gstore_replica_name(st, folded[i]);
            put_str8(b, rn, strlen(rn));
        }
    }
    if (has_life) {
        put_u8(b, life.flags & 0xff);
        put_floor(b, st, life.floor, life.nfloor);
        put_floor(b, st, life.dfloor, life.ndfloor);
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
void wal__encode_counter(struct buf *b, const struct gstore *st, const struct tokset *ts,
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

void wal__encode_strong(struct buf *b, const char *counter, size_t clen,
                        const struct strongrep_entry *e)
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

void wal__encode_promise(struct buf *b, uint64_t epoch)
{
    size_t start = b->len;
    buf_append(b, "\0\0\0\0\0\0\0\0", 8);
    put_u8(b, REC_PROMISE);
    put_u64(b, epoch);
    frame(b, start);
}

void wal__encode_dedup(struct buf *b, const char *counter, size_t clen, const char *token,
                       size_t tlen, double at, const struct dedup_answer *a)
{
    size_t start = b->len;
    buf_append(b, "\0\0\0\0\0\0\0\0", 8);
    put_u8(b, REC_DEDUP);
    put_str8(b, counter, clen);
    put_str8(b, token, tlen);
    put_u64(b, (uint64_t)a->amount);
    put_u64(b, (uint64_t)a->local_count);
    put_u64(b, (uint64_t)a->total_count);
    put_f64(b, at);
    frame(b, start);
}

void wal__encode_end(struct buf *b, uint64_t counters, uint64_t dedups)
{
    size_t start = b->len;
    buf_append(b, "\0\0\0\0\0\0\0\0", 8);
    put_u8(b, REC_END);
    put_u64(b, counters);
    put_u64(b, dedups);
    frame(b, start);
}

void wal__encode_drop(struct buf *b, const char *counter, size_t clen)
{
    size_t start = b->len;
    buf_append(b, "\0\0\0\0\0\0\0\0", 8);
    put_u8(b, REC_DROP);
    put_str8(b, counter, clen);
    frame(b, start);
}

/* ---------------------------------------------------------------- decoding */

/* Whether a well-formed record (valid length, CRC and payload) starts at off. */
int wal__record_at(const unsigned char *data, size_t size, size_t off)
{
    if (size - off < 9)
        return 0;
    struct reader r = {data + off, data + size, 0};
    uint32_t len = wal__get_u32(&r), crc = wal__get_u32(&r);
    if (len == 0 || len > MAX_RECORD || len > size - off - 8)
        return 0;
    if (crc32c(0, data + off + 8, len) != crc)
        return 0;
    unsigned type = data[off + 8];
    return type == REC_COUNTER || type == REC_DEDUP || type == REC_END || type == REC_FAILOVER ||
           type == REC_SETTLE || type == REC_STRONG || type == REC_PROMISE || type == REC_DROP;
}
