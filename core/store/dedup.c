/*
 * dedup.c - the idempotency window (see dedup.h).
 *
 * A chained hash table for lookup and a FIFO list in insertion order for eviction: since
 * every entry lives for the same window, the oldest is always at the head.
 */
#include "dedup.h"

#include <stdlib.h>
#include <string.h>

#include "../base/hash.h"
#include "../base/mem.h"

struct dentry {
    struct dentry *chain;      /* next in the same bucket */
    struct dentry *older, *newer;
    double at;
    uint64_t hash;
    struct dedup_answer answer;
    uint16_t klen;
    char key[]; /* counter '\0' token */
};

struct dedup {
    struct dentry **buckets;
    size_t nbuckets, count, max_entries;
    double window_s;
    struct dentry *oldest, *newest;
};

struct dedup *dedup_new(size_t max_entries, double window_s)
{
    struct dedup *d = xcalloc(1, sizeof *d);
    d->max_entries = max_entries ? max_entries : 1;
    d->window_s = window_s;
    d->nbuckets = 1024;
    d->buckets = xcalloc(d->nbuckets, sizeof *d->buckets);
    return d;
}

void dedup_free(struct dedup *d)
{
    if (!d)
        return;
    struct dentry *e = d->oldest;
    while (e) {
        struct dentry *n = e->newer;
        free(e);
        e = n;
    }
    free(d->buckets);
    free(d);
}

static size_t make_key(char *out, const char *counter, size_t clen, const char *token, size_t tlen)
{
    memcpy(out, counter, clen);
    out[clen] = '\0';
    memcpy(out + clen + 1, token, tlen);
    return clen + 1 + tlen;
}

static void unlink_entry(struct dedup *d, struct dentry *e)
{
    struct dentry **pp = &d->buckets[e->hash & (d->nbuckets - 1)];
    while (*pp != e)
        pp = &(*pp)->chain;
    *pp = e->chain;
    if (e->older)
        e->older->newer = e->newer;
    else
        d->oldest = e->newer;
    if (e->newer)
        e->newer->older = e->older;
    else
        d->newest = e->older;
    d->count--;
    free(e);
}

static void expire(struct dedup *d, double now_s)
{
    while (d->oldest && (now_s - d->oldest->at > d->window_s || d->count > d->max_entries))
        unlink_entry(d, d->oldest);
}

int dedup_get(struct dedup *d, const char *counter, size_t clen, const char *token, size_t tlen,
              double now_s, struct dedup_answer *out)
{
    char key[512];
    if (clen + 1 + tlen > sizeof key)
        return 0;
    expire(d, now_s);
    size_t klen = make_key(key, counter, clen, token, tlen);
    uint64_t h = hash_bytes(key, klen);
    for (struct dentry *e = d->buckets[h & (d->nbuckets - 1)]; e; e = e->chain) {
        if (e->hash == h && e->klen == klen && memcmp(e->key, key, klen) == 0) {
            *out = e->answer;
            return 1;
        }
    }
    return 0;
}

static void grow(struct dedup *d)
{
    size_t n = d->nbuckets * 2;
    struct dentry **b = xcalloc(n, sizeof *b);
    for (struct dentry *e = d->oldest; e; e = e->newer) {
        e->chain = b[e->hash & (n - 1)];
        b[e->hash & (n - 1)] = e;
    }
    free(d->buckets);
    d->buckets = b;
    d->nbuckets = n;
}

void dedup_put(struct dedup *d, const char *counter, size_t clen, const char *token, size_t tlen,
               double now_s, const struct dedup_answer *a)
{
    if (clen + 1 + tlen > 511)
        return;
    struct dentry *e = xmalloc(sizeof *e + clen + 1 + tlen);
    e->klen = (uint16_t)make_key(e->key, counter, clen, token, tlen);
    e->hash = hash_bytes(e->key, e->klen);
    e->at = now_s;
    e->answer = *a;
    e->newer = NULL;
    e->older = d->newest;
    if (d->newest)
        d->newest->newer = e;
    else
        d->oldest = e;
    d->newest = e;
    size_t b = e->hash & (d->nbuckets - 1);
    e->chain = d->buckets[b];
    d->buckets[b] = e;
    d->count++;
    if (d->count > d->nbuckets && d->nbuckets < ((size_t)1 << 24))
        grow(d);
    expire(d, now_s);
}

size_t dedup_count(const struct dedup *d) { return d->count; }

void dedup_foreach(const struct dedup *d,
                   void (*fn)(void *arg, const char *counter, size_t clen, const char *token,
                              size_t tlen, double at, const struct dedup_answer *a),
                   void *arg)
{
    for (const struct dentry *e = d->oldest; e; e = e->newer) {
        size_t clen = strlen(e->key);
        fn(arg, e->key, clen, e->key + clen + 1, e->klen - clen - 1, e->at, &e->answer);
    }
}
