/*
 * tokwin.c - a bounded window of (counter, token) entries (see tokwin.h).
 *
 * A chained hash table for lookup and a list in insertion order for eviction. Each entry
 * has its own window (a namespace's idempotency window): the head goes once its own
 * window is over, and a lookup treats an entry whose window is over as absent (a short
 * window behind a longer one at the head is forgotten at once, and freed later). A
 * replaced entry moves to the tail with a new sequence number, which keeps the list
 * sorted by sequence.
 */
#include "tokwin.h"

#include <stdlib.h>
#include <string.h>

#include "../base/hash.h"
#include "../base/mem.h"

struct tentry {
    struct tentry *chain; /* next in the same bucket */
    struct tentry *older, *newer;
    double at;
    double window; /* this entry is forgotten after window seconds */
    uint64_t hash, seq;
    uint16_t klen, plen;
    uint32_t cap; /* bytes data[] has room for */
    char data[];  /* key: counter '\0' token, then the payload */
};

struct tokwin {
    struct tentry **buckets;
    size_t nbuckets, count, max_entries;
    double window_s;
    uint64_t seq, evicted_young;
    struct tentry *oldest, *newest;
    /* The last entry evicted, kept for the next put: a full window (the steady state)
     * then reuses its oldest entry's memory instead of a free and a malloc per put. */
    struct tentry *spare;
    /* The last key a get did not find, while no put came since: the usual "get, miss,
     * apply, put" of an idempotent increment then hashes and searches once, not twice. */
    char miss_key[TOKWIN_KEY_MAX + 1];
    size_t miss_klen;
    uint64_t miss_hash, miss_seq;
    int miss_valid;
};

struct tokwin *tokwin_new(size_t max_entries, double window_s)
{
    struct tokwin *w = xcalloc(1, sizeof *w);
    w->max_entries = max_entries ? max_entries : 1;
    w->window_s = window_s;
    w->nbuckets = 1024;
    w->buckets = xcalloc(w->nbuckets, sizeof *w->buckets);
    return w;
}

void tokwin_free(struct tokwin *w)
{
    if (!w)
        return;
    struct tentry *e = w->oldest;
    while (e) {
        struct tentry *n = e->newer;
        free(e);
        e = n;
    }
    free(w->spare);
    free(w->buckets);
    free(w);
}

/* An entry with room for size bytes of data: the spare when it is big enough. */
static struct tentry *entry_alloc(struct tokwin *w, size_t size)
{
    struct tentry *e = w->spare;
    if (e && e->cap >= size) {
        w->spare = NULL;
        return e;
    }
    size_t cap = (size + 63) & ~(size_t)63; /* rounded, so that most entries fit a spare */
    e = xmalloc(sizeof *e + cap);
    e->cap = (uint32_t)cap;
    return e;
}

static void entry_release(struct tokwin *w, struct tentry *e)
{
    if (!w->spare || w->spare->cap < e->cap) {
        free(w->spare);
        w->spare = e;
    } else {
        free(e);
    }
}

static size_t make_key(char *out, const char *counter, size_t clen, const char *token, size_t tlen)
{
    memcpy(out, counter, clen);
    out[clen] = '\0';
    memcpy(out + clen + 1, token, tlen);
    return clen + 1 + tlen;
}

static void unlink_entry(struct tokwin *w, struct tentry *e)
{
    struct tentry **pp = &w->buckets[e->hash & (w->nbuckets - 1)];
    while (*pp != e)
        pp = &(*pp)->chain;
    *pp = e->chain;
    if (e->older)
        e->older->newer = e->newer;
    else
        w->oldest = e->newer;
    if (e->newer)
        e->newer->older = e->older;
    else
        w->newest = e->older;
    w->count--;
    entry_release(w, e);
}

static void expire(struct tokwin *w, double now_s)
{
    while (w->oldest && (now_s - w->oldest->at > w->oldest->window || w->count > w->max_entries)) {
        if (now_s - w->oldest->at <= w->oldest->window)
            w->evicted_young++;
        unlink_entry(w, w->oldest);
    }
}

static struct tentry *find(struct tokwin *w, const char *key, size_t klen, uint64_t h)
{
    for (struct tentry *e = w->buckets[h & (w->nbuckets - 1)]; e; e = e->chain)
        if (e->hash == h && e->klen == klen && memcmp(e->data, key, klen) == 0)
            return e;
    return NULL;
}

const void *tokwin_get(struct tokwin *w, const char *counter, size_t clen, const char *token,
                       size_t tlen, double now_s, size_t *len, double *at)
{
    char key[TOKWIN_KEY_MAX + 1];
    if (clen + 1 + tlen > TOKWIN_KEY_MAX)
        return NULL;
    expire(w, now_s);
    size_t klen = make_key(key, counter, clen, token, tlen);
    uint64_t h = hash_bytes(key, klen);
    struct tentry *e = find(w, key, klen, h);
    if (e && now_s - e->at > e->window) {
        unlink_entry(w, e); /* its window is over, behind a longer one */
        e = NULL;
    }
    if (!e) {
        memcpy(w->miss_key, key, klen);
        w->miss_klen = klen;
        w->miss_hash = h;
        w->miss_seq = w->seq;
        w->miss_valid = 1;
        return NULL;
    }
    if (len)
        *len = e->plen;
    if (at)
        *at = e->at;
    return e->data + e->klen;
}

static void grow(struct tokwin *w)
{
    size_t n = w->nbuckets * 2;
    struct tentry **b = xcalloc(n, sizeof *b);
    for (struct tentry *e = w->oldest; e; e = e->newer) {
        e->chain = b[e->hash & (n - 1)];
        b[e->hash & (n - 1)] = e;
    }
    free(w->buckets);
    w->buckets = b;
    w->nbuckets = n;
}

uint64_t tokwin_put(struct tokwin *w, const char *counter, size_t clen, const char *token,
                    size_t tlen, double now_s, const void *payload, size_t len)
{
    return tokwin_put_for(w, counter, clen, token, tlen, now_s, payload, len, w->window_s);
}

uint64_t tokwin_put_for(struct tokwin *w, const char *counter, size_t clen, const char *token,
                        size_t tlen, double now_s, const void *payload, size_t len, double window_s)
{
    if (clen + 1 + tlen > TOKWIN_KEY_MAX || len > UINT16_MAX)
        return 0;
    struct tentry *e = entry_alloc(w, clen + 1 + tlen + len);
    e->klen = (uint16_t)make_key(e->data, counter, clen, token, tlen);
    e->plen = (uint16_t)len;
    memcpy(e->data + e->klen, payload, len);
    if (w->miss_valid && w->miss_seq == w->seq && w->miss_klen == e->klen &&
        memcmp(w->miss_key, e->data, e->klen) == 0) {
        e->hash = w->miss_hash; /* just looked up and absent */
    } else {
        e->hash = hash_bytes(e->data, e->klen);
        struct tentry *old = find(w, e->data, e->klen, e->hash);
        if (old)
            unlink_entry(w, old);
    }
    w->miss_valid = 0;
    e->at = now_s;
    e->window = window_s;
    e->seq = ++w->seq;
    e->newer = NULL;
    e->older = w->newest;
    if (w->newest)
        w->newest->newer = e;
    else
        w->oldest = e;
    w->newest = e;
    size_t b = e->hash & (w->nbuckets - 1);
    e->chain = w->buckets[b];
    w->buckets[b] = e;
    w->count++;
    if (w->count > w->nbuckets && w->nbuckets < ((size_t)1 << 24))
        grow(w);
    uint64_t seq = e->seq;
    expire(w, now_s);
    return seq;
}

size_t tokwin_count(const struct tokwin *w)
{
    return w->count;
}
double tokwin_oldest_at(const struct tokwin *w)
{
    return w->oldest ? w->oldest->at : 0;
}

uint64_t tokwin_evicted_young(const struct tokwin *w)
{
    return w->evicted_young;
}

uint64_t tokwin_seq(const struct tokwin *w)
{
    return w->seq;
}

void tokwin_foreach(const struct tokwin *w, uint64_t after, tokwin_fn fn, void *arg)
{
    const struct tentry *e = w->newest;
    while (e && e->older && e->older->seq > after)
        e = e->older;
    if (e && e->seq <= after)
        return;
    for (; e; e = e->newer) {
        size_t clen = strlen(e->data);
        fn(arg, e->data, clen, e->data + clen + 1, e->klen - clen - 1, e->at, e->data + e->klen,
           e->plen, e->seq);
    }
}
