/*
 * region_top.c - GET /top on a region node (API.md, "GET /top"): the counters that changed
 * most in the last minute, the largest ones, and the candidates for the most diverged.
 *
 * The state is bounded and kept as counters change: two space-saving sketches of
 * TOP_SLOTS slots (store/topk.h), this minute's and the previous one's amounts per counter
 * (local increments and what merges added), and a TOP_SLOTS set of the largest totals. A
 * request reads only that state, a bounded walk of the change list and the counters it
 * names: it must never scan the store. (Counters read back from the log at start never
 * went through the hooks: requests take them into the largest set, TOP_CATCH_UP at a
 * time, once.)
 */
#include "region_internal.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "../base/clock.h"
#include "../base/mem.h"
#include "../net/http.h"
#include "../net/url.h"
#include "../store/topk.h"

#define TOP_SLOTS 1024
#define TOP_WINDOW_MS 60000.0
#define TOP_DEFAULT 10
#define TOP_MAX 100
/* How many counters a request may offer the largest set (those it has not seen). */
#define TOP_CATCH_UP 200000

struct region_top {
    struct topk *cur, *prev; /* amounts per counter: this window, the previous one */
    double cur_start;        /* monotonic ms */
    struct topk *largest;    /* counters by total */
    uint32_t seen;           /* ids below this were offered to largest */
    uint32_t loaded;         /* counters read back from the log: the others came by hooks */
    int64_t local, merged;   /* amounts since start: local changes, what merges added */
};

struct region_top *region__top_new(uint32_t loaded)
{
    struct region_top *t = xcalloc(1, sizeof *t);
    t->loaded = loaded;
    t->cur = topk_new(TOP_SLOTS);
    t->prev = topk_new(TOP_SLOTS);
    t->largest = topk_new(TOP_SLOTS);
    t->cur_start = clock_mono_ms();
    return t;
}

void region__top_free(struct region_top *t)
{
    if (!t)
        return;
    topk_free(t->cur);
    topk_free(t->prev);
    topk_free(t->largest);
    free(t);
}

/* Starts a new window when this one is over (both, after a quiet window). */
static void rotate(struct region_top *t, double now)
{
    double age = now - t->cur_start;
    if (age < TOP_WINDOW_MS)
        return;
    if (age >= 2 * TOP_WINDOW_MS) {
        topk_reset(t->prev);
        t->cur_start = now;
    } else {
        struct topk *old = t->prev;
        t->prev = t->cur;
        t->cur = old;
        t->cur_start += TOP_WINDOW_MS;
    }
    topk_reset(t->cur);
}

/* Counter id changed by amount (either sign) and now totals total; sum takes its magnitude. */
static void count(struct region *rg, uint32_t id, int64_t amount, int64_t total, int64_t *sum)
{
    struct region_top *t = rg->top;
    int64_t m = amount == INT64_MIN ? INT64_MAX : amount < 0 ? -amount : amount;
    rotate(t, clock_mono_ms());
    topk_add(t->cur, id, m);
    topk_set(t->largest, id, total);
    *sum = *sum > INT64_MAX - m ? INT64_MAX : *sum + m;
}

/* A local increment (or decrement) of counter id. */
void region__top_count(struct region *rg, uint32_t id, int64_t amount, int64_t total)
{
    count(rg, id, amount, total, &rg->top->local);
}

/* What a merge from a peer added to counter id. */
void region__top_merged(struct region *rg, uint32_t id, int64_t amount, int64_t total)
{
    count(rg, id, amount, total, &rg->top->merged);
}

void region__top_forget(struct region *rg, uint32_t id)
{
    struct region_top *t = rg->top;
    topk_remove(t->cur, id);
    topk_remove(t->prev, id);
    topk_remove(t->largest, id);
}

/* Whether GET /top may show counter id: it exists and is not dead. */
static int showable(struct region *rg, uint32_t id)
{
    return id < gstore_count(rg->store) && gstore_exists(rg->store, id) &&
           !gstore_dead(rg->store, id);
}

/* ,"changes":{"local":..,"merged":..}: the amounts (magnitudes) changed since the node
 * started, by local increments and by merges (GET /admin/sync). */
void region__put_changes(struct region *rg, struct buf *b)
{
    buf_printf(b, ",\"changes\":{\"local\":%" PRId64 ",\"merged\":%" PRId64 "}", rg->top->local,
               rg->top->merged);
}

/* The changes of the last minute: this window's, plus the part of the previous window's
 * still inside the minute (as if spread evenly over it). */
static int64_t rate_of(struct region_top *t, uint32_t id, double now)
{
    double f = (now - t->cur_start) / TOP_WINDOW_MS;
    struct topk_item c = {0, 0, 0}, p = {0, 0, 0};
    topk_get(t->cur, id, &c);
    topk_get(t->prev, id, &p);
    double r = (double)c.weight + (double)p.weight * (f < 1 ? 1 - f : 0);
    return r >= 9.2e18 ? INT64_MAX : (int64_t)(r + 0.5);
}

/* ---------------------------------------------------------------- candidates */

struct cand {
    uint32_t id;
    int64_t key; /* what the answer is sorted by */
};

static int cmp_cand(const void *a, const void *b)
{
    const struct cand *x = a, *y = b;
    if (x->key != y->key)
        return x->key > y->key ? -1 : 1;
    return x->id < y->id ? -1 : x->id > y->id;
}

/* Adds out[*n] = id unless it is there already (n is at most a few hundred). */
static void add_cand(struct cand *out, unsigned *n, uint32_t id, int64_t key)
{
    for (unsigned i = 0; i < *n; i++)
        if (out[i].id == id)
            return;
    out[(*n)++] = (struct cand){id, key};
}

/* The hottest counters: both windows' keys, by rate, best first. @return how many (<= max). */
static unsigned hot(struct region_top *t, struct cand *out, unsigned max, double now)
{
    struct topk_item *items = xmalloc(2 * TOP_SLOTS * sizeof *items);
    unsigned n = topk_list(t->cur, items, TOP_SLOTS);
    n += topk_list(t->prev, items + n, TOP_SLOTS);
    struct cand *all = xmalloc((n ? n : 1) * sizeof *all);
    unsigned k = 0;
    for (unsigned i = 0; i < n; i++) {
        int64_t r = rate_of(t, items[i].key, now);
        struct topk_item dummy;
        if (r > 0 && (i < topk_count(t->cur) || !topk_get(t->cur, items[i].key, &dummy)))
            all[k++] = (struct cand){items[i].key, r};
    }
    qsort(all, k, sizeof *all, cmp_cand);
    unsigned m = k < max ? k : max;
    memcpy(out, all, m * sizeof *out);
    free(all);
    free(items);
    return m;
}

/* The largest counters, best first. @return how many (<= max). */
static unsigned largest(struct region *rg, struct cand *out, unsigned max)
{
    struct region_top *t = rg->top;
    uint32_t stop = t->loaded - t->seen > TOP_CATCH_UP ? t->seen + TOP_CATCH_UP : t->loaded;
    for (uint32_t id = t->seen; id < stop; id++)
        if (showable(rg, id))
            topk_set(t->largest, id, region__total_of(rg, gstore_counter(rg->store, id), id));
    t->seen = stop;
    struct topk_item items[TOP_MAX];
    unsigned k = topk_list(t->largest, items, max);
    for (unsigned i = 0; i < k; i++)
        out[i] = (struct cand){items[i].key, items[i].weight};
    return k;
}

/* The hottest counters, then the oldest changes some peer has not acknowledged (at most
 * 2 x max in all, walked from the point every peer acknowledged). */
static unsigned lag_candidates(struct region *rg, struct cand *out, unsigned max, double now)
{
    unsigned n = hot(rg->top, out, max, now);
    unsigned cap = 2 * max;
    uint32_t id = gstore_changed_after(rg->store, repl_tokens_acked(rg->repl));
    for (unsigned walked = 0; id != GSTORE_NONE && n < cap && walked < cap; walked++) {
        add_cand(out, &n, id, 0);
        id = gstore_changed_next(rg->store, id);
    }
    return n;
}

/* ---------------------------------------------------------------- GET /top */

/* by and limit from the query. @return 0 ('r'ate, 't'otal or 'l'ag in *by), or -1 after
 * answering 400. */
static int top_query(struct http_request *req, char *by, unsigned *limit)
{
    char v[16];
    long n = url_query_get(req->query, "by", v, sizeof v);
    if (n != URL_QUERY_ABSENT &&
        (n < 0 || (strcmp(v, "rate") && strcmp(v, "total") && strcmp(v, "lag")))) {
        http_respond_error(req, 400, "bad_field", "by must be rate, total or lag");
        return -1;
    }
    *by = n == URL_QUERY_ABSENT ? 'r' : v[0];
    n = url_query_get(req->query, "limit", v, sizeof v);
    *limit = TOP_DEFAULT;
    if (n == URL_QUERY_ABSENT)
        return 0;
    char *end = NULL;
    long x = n > 0 && n < 4 && v[0] >= '0' && v[0] <= '9' ? strtol(v, &end, 10) : 0;
    if (!end || *end || x < 1 || x > TOP_MAX) {
        http_respond_error(req, 400, "bad_field", "limit must be an integer from 1 to %d", TOP_MAX);
        return -1;
    }
    *limit = (unsigned)x;
    return 0;
}

static void put_cands(struct region *rg, struct buf *b, const struct cand *c, unsigned n,
                      double now)
{
    buf_puts(b, ",\"counters\":[");
    int first = 1;
    for (unsigned i = 0; i < n; i++) {
        if (!showable(rg, c[i].id))
            continue; /* deleted or expired: never shown */
        const struct gcounter *gc = gstore_counter(rg->store, c[i].id);
        size_t len;
        const char *name = gstore_counter_name(gc, &len);
        buf_puts(b, !first ? ",{\"counter\":" : "{\"counter\":");
        first = 0;
        buf_json_str(b, name, len);
        buf_printf(b, ",\"total_count\":%" PRId64 ",\"rate_per_minute\":%" PRId64 "}",
                   region__total_of(rg, gc, c[i].id), rate_of(rg->top, c[i].id, now));
    }
    buf_putc(b, ']');
}

void region__h_top(void *role, struct http_request *req)
{
    struct region *rg = role;
    char by;
    unsigned limit;
    if (top_query(req, &by, &limit) < 0)
        return;
    double now = clock_mono_ms();
    rotate(rg->top, now);
    struct cand c[2 * TOP_MAX];
    unsigned n = by == 'r'   ? hot(rg->top, c, limit, now)
                 : by == 't' ? largest(rg, c, limit)
                             : lag_candidates(rg, c, limit, now);
    struct buf *b = &rg->out;
    buf_puts(b, by == 'r'   ? "{\"by\":\"rate\","
                : by == 't' ? "{\"by\":\"total\","
                            : "{\"by\":\"lag\",");
    buf_printf(b, "\"window_seconds\":%d,", (int)(TOP_WINDOW_MS / 1000));
    region__put_identity(rg, b);
    put_cands(rg, b, c, n, now);
    buf_printf(b, ",\"tracked\":{\"rate\":%u,\"total\":%u,\"slots\":%d}}", topk_count(rg->top->cur),
               topk_count(rg->top->largest), TOP_SLOTS);
    region__respond_out(req, rg, 200);
}
