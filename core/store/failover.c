/*
 * failover.c - failover records and settlements (see failover.h): two token windows.
 */
#include "failover.h"

#include <stdlib.h>
#include <string.h>

#include "../base/mem.h"
#include "tokwin.h"

#define KEEP_S 86400.0
#define KEEP_MAX 100000

struct failovers {
    struct tokwin *records, *settled;
};

struct failovers *failovers_new(void)
{
    struct failovers *f = xmalloc(sizeof *f);
    f->records = tokwin_new(KEEP_MAX, KEEP_S);
    f->settled = tokwin_new(KEEP_MAX, KEEP_S);
    return f;
}

void failovers_free(struct failovers *f)
{
    if (!f)
        return;
    tokwin_free(f->records);
    tokwin_free(f->settled);
    free(f);
}

int failovers_record(struct failovers *f, const char *counter, size_t clen, const char *token,
                     size_t tlen, const struct failover_rec *rec, double now_s)
{
    if (tokwin_get(f->records, counter, clen, token, tlen, now_s, NULL, NULL))
        return 0;
    /* Stored as the amount and the names, no padding. */
    char payload[8 + FAILOVER_FROM_MAX];
    size_t n = strnlen(rec->from, FAILOVER_FROM_MAX - 1);
    memcpy(payload, &rec->amount, 8);
    memcpy(payload + 8, rec->from, n);
    return tokwin_put(f->records, counter, clen, token, tlen, now_s, payload, 8 + n) != 0;
}

uint64_t failovers_seq(const struct failovers *f)
{
    return tokwin_seq(f->records);
}

struct each {
    void (*fn)(void *arg, const char *counter, size_t clen, const char *token, size_t tlen,
               double at, const struct failover_rec *rec, uint64_t seq);
    void (*settled_fn)(void *arg, const char *counter, size_t clen, const char *token, size_t tlen,
                       double at);
    void *arg;
};

static void each_record(void *arg, const char *counter, size_t clen, const char *token, size_t tlen,
                        double at, const void *payload, size_t len, uint64_t seq)
{
    struct each *e = arg;
    struct failover_rec rec;
    if (len < 8 || len - 8 >= FAILOVER_FROM_MAX)
        return;
    memcpy(&rec.amount, payload, 8);
    memcpy(rec.from, (const char *)payload + 8, len - 8);
    rec.from[len - 8] = '\0';
    e->fn(e->arg, counter, clen, token, tlen, at, &rec, seq);
}

void failovers_foreach(const struct failovers *f, uint64_t after,
                       void (*fn)(void *arg, const char *counter, size_t clen, const char *token,
                                  size_t tlen, double at, const struct failover_rec *rec,
                                  uint64_t seq),
                       void *arg)
{
    struct each e = {fn, NULL, arg};
    tokwin_foreach(f->records, after, each_record, &e);
}

int failovers_settled(struct failovers *f, const char *counter, size_t clen, const char *token,
                      size_t tlen, double now_s)
{
    return tokwin_get(f->settled, counter, clen, token, tlen, now_s, NULL, NULL) != NULL;
}

void failovers_settle(struct failovers *f, const char *counter, size_t clen, const char *token,
                      size_t tlen, double now_s)
{
    tokwin_put(f->settled, counter, clen, token, tlen, now_s, "", 0);
}

static void each_settled(void *arg, const char *counter, size_t clen, const char *token,
                         size_t tlen, double at, const void *payload, size_t len, uint64_t seq)
{
    (void)payload;
    (void)len;
    (void)seq;
    struct each *e = arg;
    e->settled_fn(e->arg, counter, clen, token, tlen, at);
}

void failovers_foreach_settled(const struct failovers *f,
                               void (*fn)(void *arg, const char *counter, size_t clen,
                                          const char *token, size_t tlen, double at),
                               void *arg)
{
    struct each e = {NULL, fn, arg};
    tokwin_foreach(f->settled, 0, each_settled, &e);
}

int failover_names(const char *from, const char *region)
{
    size_t rl = strlen(region);
    for (const char *p = from; *p;) {
        size_t n = strcspn(p, ",");
        if (n == rl && !memcmp(p, region, rl))
            return 1;
        p += n + (p[n] == ',');
    }
    return 0;
}
