/*
 * dedup.c - the idempotency window (see dedup.h): a token window whose payload is the
 * first answer.
 */
#include "dedup.h"

#include <stdlib.h>
#include <string.h>

#include "../base/mem.h"
#include "tokwin.h"

struct dedup {
    struct tokwin *w;
    double window_s;
    double (*window_of)(void *arg, const char *counter, size_t clen);
    void *window_arg;
};

struct dedup *dedup_new(size_t max_entries, double window_s)
{
    struct dedup *d = xmalloc(sizeof *d);
    d->w = tokwin_new(max_entries, window_s);
    d->window_s = window_s;
    d->window_of = NULL;
    d->window_arg = NULL;
    return d;
}

void dedup_set_window_fn(struct dedup *d, double (*fn)(void *arg, const char *counter, size_t clen),
                         void *arg)
{
    d->window_of = fn;
    d->window_arg = arg;
}

void dedup_free(struct dedup *d)
{
    if (!d)
        return;
    tokwin_free(d->w);
    free(d);
}

int dedup_get(struct dedup *d, const char *counter, size_t clen, const char *token, size_t tlen,
              double now_s, struct dedup_answer *out)
{
    size_t len;
    const void *p = tokwin_get(d->w, counter, clen, token, tlen, now_s, &len, NULL);
    if (!p || len != sizeof *out)
        return 0;
    memcpy(out, p, sizeof *out);
    return 1;
}

void dedup_put(struct dedup *d, const char *counter, size_t clen, const char *token, size_t tlen,
               double now_s, const struct dedup_answer *a)
{
    double win = d->window_of ? d->window_of(d->window_arg, counter, clen) : d->window_s;
    tokwin_put_for(d->w, counter, clen, token, tlen, now_s, a, sizeof *a, win);
}

size_t dedup_count(const struct dedup *d)
{
    return tokwin_count(d->w);
}

double dedup_oldest_at(const struct dedup *d)
{
    return tokwin_oldest_at(d->w);
}

uint64_t dedup_evicted_young(const struct dedup *d)
{
    return tokwin_evicted_young(d->w);
}

struct each {
    void (*fn)(void *arg, const char *counter, size_t clen, const char *token, size_t tlen,
               double at, const struct dedup_answer *a);
    void *arg;
};

static void each_entry(void *arg, const char *counter, size_t clen, const char *token, size_t tlen,
                       double at, const void *payload, size_t len, uint64_t seq)
{
    (void)seq;
    struct each *e = arg;
    struct dedup_answer a;
    if (len != sizeof a)
        return;
    memcpy(&a, payload, sizeof a);
    e->fn(e->arg, counter, clen, token, tlen, at, &a);
}

void dedup_foreach(const struct dedup *d,
                   void (*fn)(void *arg, const char *counter, size_t clen, const char *token,
                              size_t tlen, double at, const struct dedup_answer *a),
                   void *arg)
{
    struct each e = {fn, arg};
    tokwin_foreach(d->w, 0, each_entry, &e);
}
