/*
 * tokset.c - the counters' token sets (see tokset.h).
 *
 * Elements sit in one chained hash table keyed by (counter id, token), and in a list per
 * counter in change order (so "changed after seq S" walks back from the newest). Settled
 * elements are also queued in settling order, which is sequence order, so collection pops
 * from the head. Only counters that have elements get a per-counter record.
 */
#include "tokset.h"

#include <stdlib.h>
#include <string.h>

#include "../base/hash.h"
#include "../base/mem.h"

struct tctr;

struct telem {
    struct telem *chain;             /* hash bucket */
    struct telem *older, *newer;     /* the counter's elements, by seq */
    struct telem *gc_next, *gc_prev; /* settled, in settling order */
    struct tctr *ctr;
    uint64_t hash, seq;
    int64_t amount;
    uint8_t settled, tlen;
    char tok[];
};

struct tctr {
    struct tctr *chain;
    uint32_t id;
    unsigned n;
    uint64_t pending; /* sum of pending amounts, modulo 2^64 (exact while it fits) */
    struct telem *oldest, *newest;
};

struct tokset {
    struct telem **buckets;
    size_t nbuckets, count, npending;
    struct tctr **cbuckets;
    size_t ncbuckets, nctr;
    struct telem *gc_head, *gc_tail;
    uint64_t conflicts;
    size_t bytes;
};

struct tokset *tokset_new(void)
{
    struct tokset *ts = xcalloc(1, sizeof *ts);
    ts->nbuckets = 256;
    ts->buckets = xcalloc(ts->nbuckets, sizeof *ts->buckets);
    ts->ncbuckets = 64;
    ts->cbuckets = xcalloc(ts->ncbuckets, sizeof *ts->cbuckets);
    return ts;
}

void tokset_free(struct tokset *ts)
{
    if (!ts)
        return;
    for (size_t b = 0; b < ts->ncbuckets; b++) {
        struct tctr *c = ts->cbuckets[b];
        while (c) {
            struct tctr *cn = c->chain;
            struct telem *e = c->oldest;
            while (e) {
                struct telem *n = e->newer;
                free(e);
                e = n;
            }
            free(c);
            c = cn;
        }
    }
    free(ts->buckets);
    free(ts->cbuckets);
    free(ts);
}

/* ---------------------------------------------------------------- home */

/* A fixed key: every process must compute the same home. */
static const uint8_t home_key[16] = {'c', 'o', 'u', 'n', 't', 'e', 'r', 'd',
                                     '-', 'h', 'o', 'm', 'e', '-', 'v', '1'};

int tokset_home(const char *tok, size_t tlen, const char *const *ids, int n)
{
    if (n <= 0)
        return -1;
    const char *slash = memchr(tok, '/', tlen);
    if (slash)
        for (int i = 0; i < n; i++)
            if (strlen(ids[i]) == (size_t)(slash - tok) &&
                !memcmp(ids[i], tok, (size_t)(slash - tok)))
                return i;
    char buf[512];
    int best = -1;
    uint64_t best_h = 0;
    for (int i = 0; i < n; i++) {
        size_t il = strlen(ids[i]);
        if (il + 1 + tlen > sizeof buf)
            il = sizeof buf - 1 - tlen; /* ids are at most 240 bytes, tokens 128: never */
        memcpy(buf, ids[i], il);
        buf[il] = '\0';
        memcpy(buf + il + 1, tok, tlen);
        uint64_t h = siphash13(buf, il + 1 + tlen, home_key);
        if (best < 0 || h > best_h || (h == best_h && strcmp(ids[i], ids[best]) < 0)) {
            best = i;
            best_h = h;
        }
    }
    return best;
}

/* ---------------------------------------------------------------- tables */

static uint64_t elem_hash(uint32_t id, const char *tok, size_t tlen)
{
    char key[4 + TOKSET_TOKEN_MAX];
    memcpy(key, &id, 4);
    memcpy(key + 4, tok, tlen);
    return hash_bytes(key, 4 + tlen);
}

static struct tctr *ctr_find(const struct tokset *ts, uint32_t id)
{
    for (struct tctr *c = ts->cbuckets[id & (ts->ncbuckets - 1)]; c; c = c->chain)
        if (c->id == id)
            return c;
    return NULL;
}

static struct tctr *ctr_get(struct tokset *ts, uint32_t id)
{
    struct tctr *c = ctr_find(ts, id);
    if (c)
        return c;
    if (ts->nctr >= ts->ncbuckets) {
        size_t n = ts->ncbuckets * 2;
        struct tctr **b = xcalloc(n, sizeof *b);
        for (size_t i = 0; i < ts->ncbuckets; i++) {
            struct tctr *x = ts->cbuckets[i];
            while (x) {
                struct tctr *next = x->chain;
                x->chain = b[x->id & (n - 1)];
                b[x->id & (n - 1)] = x;
                x = next;
            }
        }
        free(ts->cbuckets);
        ts->cbuckets = b;
        ts->ncbuckets = n;
    }
    c = xcalloc(1, sizeof *c);
    c->id = id;
    c->chain = ts->cbuckets[id & (ts->ncbuckets - 1)];
    ts->cbuckets[id & (ts->ncbuckets - 1)] = c;
    ts->nctr++;
    ts->bytes += sizeof *c;
    return c;
}

static void ctr_drop(struct tokset *ts, struct tctr *c)
{
    struct tctr **pp = &ts->cbuckets[c->id & (ts->ncbuckets - 1)];
    while (*pp != c)
        pp = &(*pp)->chain;
    *pp = c->chain;
    ts->nctr--;
    ts->bytes -= sizeof *c;
    free(c);
}

static struct telem *find(const struct tokset *ts, uint32_t id, const char *tok, size_t tlen,
                          uint64_t h)
{
    for (struct telem *e = ts->buckets[h & (ts->nbuckets - 1)]; e; e = e->chain)
        if (e->hash == h && e->ctr->id == id && e->tlen == tlen && !memcmp(e->tok, tok, tlen))
            return e;
    return NULL;
}

static void grow(struct tokset *ts)
{
    size_t n = ts->nbuckets * 2;
    struct telem **b = xcalloc(n, sizeof *b);
    for (size_t i = 0; i < ts->nbuckets; i++) {
        struct telem *e = ts->buckets[i];
        while (e) {
            struct telem *next = e->chain;
            e->chain = b[e->hash & (n - 1)];
            b[e->hash & (n - 1)] = e;
            e = next;
        }
    }
    free(ts->buckets);
    ts->buckets = b;
    ts->nbuckets = n;
}

/* Moves e to the newest end of its counter's list. */
static void to_newest(struct tctr *c, struct telem *e)
{
    if (c->newest == e)
        return;
    if (e->older)
        e->older->newer = e->newer;
    else
        c->oldest = e->newer;
    e->newer->older = e->older; /* e is not the newest: it has a newer one */
    e->older = c->newest;
    e->newer = NULL;
    c->newest->newer = e;
    c->newest = e;
}

static void settle(struct tokset *ts, struct telem *e)
{
    e->settled = 1;
    e->gc_next = NULL;
    e->gc_prev = ts->gc_tail;
    if (ts->gc_tail)
        ts->gc_tail->gc_next = e;
    else
        ts->gc_head = e;
    ts->gc_tail = e;
}

/* ---------------------------------------------------------------- reading */

int tokset_get(const struct tokset *ts, uint32_t id, const char *tok, size_t tlen, int64_t *amount,
               int *settled)
{
    if (!ts->count || tlen == 0 || tlen > TOKSET_TOKEN_MAX)
        return 0;
    const struct telem *e = find(ts, id, tok, tlen, elem_hash(id, tok, tlen));
    if (!e)
        return 0;
    if (amount)
        *amount = e->amount;
    if (settled)
        *settled = e->settled;
    return 1;
}

int64_t tokset_pending(const struct tokset *ts, uint32_t id)
{
    if (!ts->count)
        return 0;
    const struct tctr *c = ctr_find(ts, id);
    return c ? (int64_t)c->pending : 0;
}

unsigned tokset_elements(const struct tokset *ts, uint32_t id)
{
    if (!ts->count)
        return 0;
    const struct tctr *c = ctr_find(ts, id);
    return c ? c->n : 0;
}

/* ---------------------------------------------------------------- changing */

int tokset_merge(struct tokset *ts, uint32_t id, const char *tok, size_t tlen, int64_t amount,
                 int settled, uint64_t seq)
{
    if (tlen == 0 || tlen > TOKSET_TOKEN_MAX)
        return 0;
    settled = !!settled;
    uint64_t h = elem_hash(id, tok, tlen);
    struct telem *e = find(ts, id, tok, tlen, h);
    if (!e) {
        struct tctr *c = ctr_get(ts, id);
        e = xmalloc(sizeof *e + tlen);
        memset(e, 0, sizeof *e);
        e->ctr = c;
        e->hash = h;
        e->seq = seq;
        e->amount = amount;
        e->tlen = (uint8_t)tlen;
        memcpy(e->tok, tok, tlen);
        e->older = c->newest;
        if (c->newest)
            c->newest->newer = e;
        else
            c->oldest = e;
        c->newest = e;
        c->n++;
        size_t b = h & (ts->nbuckets - 1);
        e->chain = ts->buckets[b];
        ts->buckets[b] = e;
        ts->count++;
        ts->bytes += sizeof *e + tlen;
        if (ts->count > ts->nbuckets)
            grow(ts);
        if (settled) {
            settle(ts, e);
            return TOKSET_CHANGED | TOKSET_SETTLED;
        }
        c->pending += (uint64_t)amount;
        ts->npending++;
        return TOKSET_CHANGED;
    }
    int rc = 0;
    if (e->settled)
        return 0; /* settled is final: its amount no longer counts anywhere */
    struct tctr *c = e->ctr;
    if (e->amount != amount && (settled || amount > e->amount)) {
        ts->conflicts++; /* counted where the join changes it, not at every echo */
        rc |= TOKSET_CONFLICT;
    }
    if (settled) {
        c->pending -= (uint64_t)e->amount;
        ts->npending--;
        e->amount = amount;
        settle(ts, e);
        rc |= TOKSET_CHANGED | TOKSET_SETTLED;
    } else if (amount > e->amount) {
        c->pending += (uint64_t)amount - (uint64_t)e->amount;
        e->amount = amount;
        rc |= TOKSET_CHANGED;
    }
    if (rc & TOKSET_CHANGED) {
        e->seq = seq;
        to_newest(c, e);
    }
    return rc;
}

static void unlink_elem(struct tokset *ts, struct telem *e)
{
    struct telem **pp = &ts->buckets[e->hash & (ts->nbuckets - 1)];
    while (*pp != e)
        pp = &(*pp)->chain;
    *pp = e->chain;
    struct tctr *c = e->ctr;
    if (e->older)
        e->older->newer = e->newer;
    else
        c->oldest = e->newer;
    if (e->newer)
        e->newer->older = e->older;
    else
        c->newest = e->older;
    ts->count--;
    ts->bytes -= sizeof *e + e->tlen;
    if (--c->n == 0)
        ctr_drop(ts, c);
    free(e);
}

size_t tokset_gc(struct tokset *ts, uint64_t acked)
{
    size_t n = 0;
    while (ts->gc_head && ts->gc_head->seq <= acked) {
        struct telem *e = ts->gc_head;
        ts->gc_head = e->gc_next;
        if (ts->gc_head)
            ts->gc_head->gc_prev = NULL;
        else
            ts->gc_tail = NULL;
        unlink_elem(ts, e);
        n++;
    }
    return n;
}

size_t tokset_forget(struct tokset *ts, uint32_t id)
{
    if (!ts->count)
        return 0;
    struct tctr *c = ctr_find(ts, id);
    if (!c)
        return 0;
    size_t n = c->n;
    for (size_t i = 0; i < n; i++) {
        struct telem *e = c->oldest;
        if (!e->settled) {
            ts->npending--;
        } else {
            if (e->gc_prev)
                e->gc_prev->gc_next = e->gc_next;
            else
                ts->gc_head = e->gc_next;
            if (e->gc_next)
                e->gc_next->gc_prev = e->gc_prev;
            else
                ts->gc_tail = e->gc_prev;
        }
        unlink_elem(ts, e); /* frees c with its last element */
    }
    return n;
}

/* ---------------------------------------------------------------- walking */

void tokset_each(const struct tokset *ts, uint32_t id, uint64_t after, tokset_fn fn, void *arg)
{
    if (!ts->count)
        return;
    const struct tctr *c = ctr_find(ts, id);
    if (!c)
        return;
    const struct telem *e = c->newest;
    if (e->seq <= after)
        return;
    while (e->older && e->older->seq > after)
        e = e->older;
    for (; e; e = e->newer)
        fn(arg, id, e->tok, e->tlen, e->amount, e->settled, e->seq);
}

void tokset_each_pending(const struct tokset *ts, tokset_fn fn, void *arg)
{
    if (!ts->npending)
        return;
    for (size_t b = 0; b < ts->nbuckets; b++)
        for (const struct telem *e = ts->buckets[b]; e; e = e->chain)
            if (!e->settled)
                fn(arg, e->ctr->id, e->tok, e->tlen, e->amount, 0, e->seq);
}

size_t tokset_count(const struct tokset *ts)
{
    return ts->count;
}

size_t tokset_pending_count(const struct tokset *ts)
{
    return ts->npending;
}

uint64_t tokset_conflicts(const struct tokset *ts)
{
    return ts->conflicts;
}

size_t tokset_memory(const struct tokset *ts)
{
    return ts->bytes + ts->nbuckets * sizeof *ts->buckets + ts->ncbuckets * sizeof *ts->cbuckets;
}
