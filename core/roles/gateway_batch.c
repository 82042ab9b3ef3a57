/*
 * gateway_batch.c - POST /api/increments on the gateway: a batch of increments, each
 * routed by the routing policy as POST /api/increment would route it alone.
 *
 * Items for the same region go to it as one POST /increments; the sub-batches for different
 * regions are sent at once. Every item carries a token (the client's, or one made for the
 * region chosen, as gateway.c makes them), so a sub-batch whose region does not answer (or
 * answers 5xx) is sent again, item by item re-routed among the regions not tried, and each
 * increment still counts once. Each item is answered with what its region answered, plus
 * routed_to_endpoint and routing. A region of the original lab has no POST /increments (it
 * answers 404 or 405): its items go to it one POST /increment each, and the gateway
 * remembers that for BATCHLESS_MS, or until the region stops answering. It must never
 * forward an item without its token, nor answer before every item has its answer.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../base/buf.h"
#include "../base/clock.h"
#include "../base/hash.h"
#include "../base/json.h"
#include "../base/log.h"
#include "../base/mem.h"
#include "../net/http.h"
#include "../obs/metrics.h"
#include "../obs/trace.h"
#include "../store/dedup.h"
#include "../store/tokset.h"
#include "gateway.h"
#include "gateway_internal.h"
#include "reqbody.h"

/* As a region takes them (region_batch.c), and a body whose items, with the tokens made
 * here (at most 128 bytes more an item), a region still takes (2 MiB). */
#define BATCH_MAX 1000
#define BATCH_BODY_MAX ((2u << 20) - BATCH_MAX * 128u)
/* How long a region that answered POST /increments 404 or 405 is taken to have none. */
#define BATCHLESS_MS 60000.0

struct gw_item {
    size_t off, len;          /* its body {"counter_name","amount","idempotency_token"} in text */
    size_t name_off, tok_off; /* its counter name and token, NUL-terminated, in text */
    int own_token;            /* the client gave the token */
    unsigned tried;           /* a bit per region tried */
    size_t roff, rlen;        /* its answer in res */
};

struct gw_sub;

struct gw_batch {
    struct gateway *g;
    struct http_request *req;
    char routing[64];
    char client_region[64];
    int has_client_region;
    size_t n, failed;
    unsigned failed_regions; /* a bit per region whose failure was told (logged) */
    struct gw_item *items;
    struct buf text, res;
    struct gw_sub *subs; /* sub-batches in flight */
    struct gw_batch *prev, *next;
};

/* The items of one batch sent to one region. */
struct gw_sub {
    struct gw_batch *b;
    int region;
    int single;  /* the items one by one, in order, as POST /increment: the region has no
                  * POST /increments */
    size_t done; /* single: the items answered; idx[done] is in flight */
    size_t n;
    size_t *idx;
    struct upstream_req *ureq;
    struct trace_span *span;
    struct gw_sub *prev, *next;
};

static void batch_dispatch(struct gw_batch *b, const size_t *idx, size_t n);
static void send_sub(struct gw_batch *b, int r, const size_t *idx, size_t n);
static void sub_post(struct gw_sub *sub);

/* ---------------------------------------------------------------- answers */

/* req answered status: counted, and its time observed, as gateway.c does for one increment. */
static void count(struct gateway *g, struct http_request *req, int status)
{
    struct metric *m = metrics_find(gateway__metrics(g), "gateway_requests_total");
    char st[8];
    snprintf(st, sizeof st, "%d", status);
    const char *labels[3] = {"POST", "/api/increments", st};
    if (m)
        metric_add(metric_series(m, labels), 1);
    const char *ep[1] = {"/api/increments"};
    m = metrics_find(gateway__metrics(g), "gateway_request_duration_seconds");
    if (m)
        metric_observe(metric_series(m, ep), (clock_mono_ms() - req->start_ms) / 1000.0);
}

/* gateway_batch_items_total{status}: an item of POST /api/increments answered status. */
static void count_item(struct gateway *g, int status)
{
    static const char name[] = "gateway_batch_items_total";
    struct metric *m = metrics_find(gateway__metrics(g), name);
    if (!m)
        m = metrics_add(gateway__metrics(g), METRIC_COUNTER, name,
                        "Items of POST /api/increments, by the status each was answered", "status",
                        NULL, 0);
    char st[12];
    snprintf(st, sizeof st, "%d", status);
    const char *labels[1] = {st};
    metric_add(metric_series(m, labels), 1);
}

/* Item i's answer: obj[0..len) is an object; the gateway's fields are added to it. */
static void item_answer(struct gw_batch *b, size_t i, int status, const char *obj, size_t len,
                        int region)
{
    struct gw_item *it = &b->items[i];
    it->roff = b->res.len;
    while (len && obj[len - 1] != '}')
        len--;
    buf_append(&b->res, obj, len ? len - 1 : 0);
    if (region >= 0) {
        const char *url = gateway__region_url(b->g, region);
        buf_puts(&b->res, ",\"routed_to_endpoint\":");
        buf_json_str(&b->res, url, strlen(url));
    }
    buf_puts(&b->res, ",\"routing\":");
    buf_json_str(&b->res, b->routing, strlen(b->routing));
    buf_putc(&b->res, '}');
    it->rlen = b->res.len - it->roff;
    if (status != 200)
        b->failed++;
    count_item(b->g, status);
}

/* Item i's error, as POST /increment's: {"status","error","detail"}. */
static void item_error(struct gw_batch *b, size_t i, int status, const char *code,
                       const char *detail)
{
    struct buf e = {0};
    buf_printf(&e, "{\"status\":%d,\"error\":", status);
    buf_json_str(&e, code, strlen(code));
    buf_puts(&e, ",\"detail\":");
    buf_json_str(&e, detail, strlen(detail));
    buf_putc(&e, '}');
    item_answer(b, i, status, e.data, e.len, -1);
    buf_free(&e);
}

static void batch_free(struct gw_batch *b)
{
    struct gw_batch **head = gateway__batches(b->g);
    if (b->prev)
        b->prev->next = b->next;
    else
        *head = b->next;
    if (b->next)
        b->next->prev = b->prev;
    buf_free(&b->text);
    buf_free(&b->res);
    free(b->items);
    free(b);
}

/* Every item has its answer: {"results":[...],"ok","failed","latency_ms","routing"}. */
static void batch_done(struct gw_batch *b)
{
    struct buf out = {0};
    buf_puts(&out, "{\"results\":[");
    for (size_t i = 0; i < b->n; i++) {
        if (i)
            buf_putc(&out, ',');
        buf_append(&out, b->res.data + b->items[i].roff, b->items[i].rlen);
    }
    buf_printf(&out, "],\"ok\":%zu,\"failed\":%zu,\"latency_ms\":", b->n - b->failed, b->failed);
    buf_json_ms(&out, clock_mono_ms() - b->req->start_ms);
    buf_puts(&out, ",\"routing\":");
    buf_json_str(&out, b->routing, strlen(b->routing));
    buf_putc(&out, '}');
    count(b->g, b->req, 200);
    http_respond_json(b->req, 200, out.data, out.len);
    buf_free(&out);
    batch_free(b);
}

/* ---------------------------------------------------------------- a region's answer */

/*
 * The objects of the "results" array that opens a region's answer ({"results":[{...},...]):
 * at most max, as offsets and lengths. Items are flat objects; strings may hold anything.
 * @return how many, or -1 when the answer is not of that shape.
 */
static long split_results(const char *s, size_t len, size_t *off, size_t *olen, size_t max)
{
    static const char head[] = "{\"results\":[";
    size_t i = sizeof head - 1, n = 0;
    if (len < i || memcmp(s, head, i) != 0)
        return -1;
    int depth = 0, instr = 0;
    for (; i < len; i++) {
        char c = s[i];
        if (instr) {
            if (c == '\\')
                i++;
            else if (c == '"')
                instr = 0;
        } else if (c == '"') {
            instr = 1;
        } else if (c == '{') {
            if (depth++ == 0 && n < max)
                off[n] = i;
        } else if (c == '}') {
            if (--depth < 0)
                return -1;
            if (depth == 0 && n < max) {
                olen[n] = i + 1 - off[n];
                n++;
            }
        } else if (c == ']' && depth == 0) {
            return (long)n;
        }
    }
    return -1;
}

/* The "status" of an item's answer (200 when it has none). */
static int result_status(const char *obj, size_t len)
{
    static const char key[] = "\"status\":";
    for (size_t k = 0; k + sizeof key - 1 < len; k++)
        if (!memcmp(obj + k, key, sizeof key - 1))
            return atoi(obj + k + sizeof key - 1);
    return 200;
}

/* An item's error from its region, whose detail names the item's index in the sub-batch
 * ("increments[<k>]..."): answered with the index in the client's batch instead. */
static void renumber_answer(struct gw_batch *b, size_t i, int status, const char *obj, size_t len,
                            int region)
{
    static const char key[] = "\"detail\":\"increments[";
    const char *p = NULL;
    for (size_t k = 0; !p && k + sizeof key - 1 <= len; k++)
        if (!memcmp(obj + k, key, sizeof key - 1))
            p = obj + k;
    const char *q = p ? memchr(p, ']', len - (size_t)(p - obj)) : NULL;
    if (!q) {
        item_answer(b, i, status, obj, len, region);
        return;
    }
    struct buf e = {0};
    buf_append(&e, obj, (size_t)(p - obj) + sizeof key - 1);
    buf_u64(&e, i);
    buf_append(&e, q, len - (size_t)(q - obj));
    item_answer(b, i, status, e.data, e.len, region);
    buf_free(&e);
}

/* The region answered 200: each item of sub takes its result. @return 0, -1 if malformed. */
static int take_results(struct gw_sub *sub, const char *body, size_t len)
{
    struct gw_batch *b = sub->b;
    size_t *off = xmalloc(2 * sub->n * sizeof *off), *olen = off + sub->n, taken = 0;
    long n = split_results(body, len, off, olen, sub->n);
    if (n != (long)sub->n) {
        free(off);
        return -1;
    }
    for (size_t k = 0; k < sub->n; k++) {
        int st = result_status(body + off[k], olen[k]);
        if (st == 200) {
            item_answer(b, sub->idx[k], st, body + off[k], olen[k], sub->region);
            taken++;
        } else {
            renumber_answer(b, sub->idx[k], st, body + off[k], olen[k], sub->region);
        }
    }
    gateway__region_answered(b->g, sub->region, body, len, taken);
    free(off);
    return 0;
}

static void sub_free(struct gw_sub *sub)
{
    struct gw_batch *b = sub->b;
    if (sub->prev)
        sub->prev->next = sub->next;
    else
        b->subs = sub->next;
    if (sub->next)
        sub->next->prev = sub->prev;
    if (sub->span) {
        trace_span_error(sub->span, "cancelled");
        trace_span_end(sub->span);
    }
    free(sub->idx);
    free(sub);
}

/* The region's answer to the items idx[0..n) of sub, status (not 200 for a sub-batch, any
 * for a single item), is each one's: {"status":<status>, <the fields of the region's object>}. */
static void take_verdict(struct gw_sub *sub, const size_t *idx, size_t n, int status,
                         const char *body, size_t len)
{
    struct gw_batch *b = sub->b;
    int obj = len > 2 && body[0] == '{';
    struct buf e = {0};
    buf_printf(&e, "{\"status\":%d", status);
    if (obj) {
        buf_putc(&e, ',');
        buf_append(&e, body + 1, len - 1);
    } else {
        buf_putc(&e, '}');
    }
    for (size_t k = 0; k < n; k++)
        item_answer(b, idx[k], status, e.data, e.len, sub->region);
    buf_free(&e);
    if (status == 200)
        gateway__region_answered(b->g, sub->region, body, len, n);
}

/* Region r answered POST /increments 404 or 405: the original lab's region, which has none.
 * Said once in the log; its items go one POST /increment each for BATCHLESS_MS. */
static void region_batchless(struct gateway *g, int r, int status)
{
    double *until = gateway__region_batchless_until(g, r), now = clock_mono_ms();
    if (*until <= now)
        log_warn("region %s has no POST /increments (it answered %d): the items of POST "
                 "/api/increments for it go one POST /increment each; asked again in %.0f s",
                 gateway__region_name(g, r), status, BATCHLESS_MS / 1000);
    *until = now + BATCHLESS_MS;
}

/* Region r did not answer sub (status 0) or answered 5xx: skipped, told once a batch. */
static void region_failed(struct gw_sub *sub, int status, const char *err)
{
    struct gw_batch *b = sub->b;
    int r = sub->region;
    /* A single item unanswered: the region may be restarting, perhaps upgraded. */
    if (sub->single && status == 0)
        *gateway__region_batchless_until(b->g, r) = 0;
    if (b->failed_regions & 1u << r)
        return;
    b->failed_regions |= 1u << r;
    char why[256];
    snprintf(why, sizeof why, "%s: %s", gateway__region_name(b->g, r),
             err ? err : http_status_text(status));
    gateway__region_failed(b->g, r, why);
}

static void on_sub_answer(int status, const char *body, size_t len, const char *err, int sent,
                          void *arg)
{
    (void)sent; /* applied or not, each token's home counts it once */
    struct gw_sub *sub = arg;
    struct gw_batch *b = sub->b;
    sub->ureq = NULL;
    if (sub->span) {
        trace_span_http_status(sub->span, status, err);
        trace_span_end(sub->span);
        sub->span = NULL;
    }
    if (status == 200 && !sub->single && take_results(sub, body, len) < 0) {
        status = 0;
        err = "an answer that is not a batch's";
    }
    int batchless = !sub->single && (status == 404 || status == 405);
    if (batchless || status == 0 || status >= 500) {
        int r = sub->region;
        size_t n = sub->n - sub->done, *idx = xmalloc(n * sizeof *idx);
        memcpy(idx, sub->idx + sub->done, n * sizeof *idx);
        if (batchless)
            region_batchless(b->g, r, status);
        else
            region_failed(sub, status, err);
        sub_free(sub);
        if (batchless)
            send_sub(b, r, idx, n); /* the same items and tokens, one by one */
        else
            batch_dispatch(b, idx, n); /* the same items and tokens, elsewhere */
        free(idx);
    } else if (sub->single) {
        take_verdict(sub, sub->idx + sub->done, 1, status, body, len);
        if (++sub->done < sub->n)
            sub_post(sub); /* the next item, once this one is answered: in order */
        else
            sub_free(sub);
    } else {
        if (status != 200)
            take_verdict(sub, sub->idx, sub->n, status, body, len);
        sub_free(sub);
    }
    if (!b->subs)
        batch_done(b);
}

/* ---------------------------------------------------------------- sending */

/* gateway_batch_fallback_items_total{region}: an item sent alone, its region having no
 * POST /increments. */
static void count_fallback(struct gateway *g, int r)
{
    static const char name[] = "gateway_batch_fallback_items_total";
    struct metric *m = metrics_find(gateway__metrics(g), name);
    if (!m)
        m = metrics_add(gateway__metrics(g), METRIC_COUNTER, name,
                        "Items of POST /api/increments sent as one POST /increment each, their "
                        "region having no POST /increments (the original lab's)",
                        "region", NULL, 0);
    const char *labels[1] = {gateway__region_name(g, r)};
    metric_add(metric_series(m, labels), 1);
}

/* Sends sub's request: all its items as one POST /increments, or (single) its next item
 * alone as POST /increment. */
static void sub_post(struct gw_sub *sub)
{
    struct gw_batch *b = sub->b;
    int r = sub->region;
    struct buf body = {0};
    if (sub->single) {
        const struct gw_item *it = &b->items[sub->idx[sub->done]];
        buf_append(&body, b->text.data + it->off, it->len);
        count_fallback(b->g, r);
    } else {
        buf_puts(&body, "{\"increments\":[");
        for (size_t k = 0; k < sub->n; k++) {
            const struct gw_item *it = &b->items[sub->idx[k]];
            if (k)
                buf_putc(&body, ',');
            buf_append(&body, b->text.data + it->off, it->len);
        }
        buf_puts(&body, "]}");
    }
    const char *path = sub->single ? "/increment" : "/increments";
    char tp[TRACEPARENT_LEN + 1], *tpp = NULL;
    if (b->req->span) {
        sub->span = trace_span_child(
            b->req->span, sub->single ? "POST /increment" : "POST /increments", TRACE_CLIENT);
        trace_span_attr_cstr(sub->span, "counter.routed_to", gateway__region_name(b->g, r));
        trace_span_attr_int(sub->span, "counter.batch_size", sub->single ? 1 : (long long)sub->n);
        trace_span_traceparent(sub->span, tp);
        tpp = tp;
    }
    sub->ureq = gateway__send(b->g, r, path, body.data, body.len, tpp, on_sub_answer, sub);
    buf_free(&body);
}

/* Sends the items idx[0..n) whose region is r: as one POST /increments, or one POST
 * /increment after another while r is taken to have no POST /increments. */
static void send_sub(struct gw_batch *b, int r, const size_t *idx, size_t n)
{
    struct gw_sub *sub = xcalloc(1, sizeof *sub);
    sub->b = b;
    sub->region = r;
    sub->single = *gateway__region_batchless_until(b->g, r) > clock_mono_ms();
    sub->idx = xmalloc(n * sizeof *sub->idx);
    sub->n = n;
    for (size_t k = 0; k < n; k++) {
        b->items[idx[k]].tried |= 1u << r;
        sub->idx[k] = idx[k];
    }
    sub->next = b->subs;
    if (b->subs)
        b->subs->prev = sub;
    b->subs = sub;
    sub_post(sub);
}

/* An item's token for region r, its home, when the client gave none: as gateway.c makes
 * them, "<node id>/<16 hex digits>" (the digits alone while the node id is not known). */
static void make_token(struct gw_batch *b, struct gw_item *it, int r)
{
    static const char hex[] = "0123456789abcdef";
    const char *home = gateway__region_node_id(b->g, r);
    size_t hl = strlen(home);
    if (hl + 18 > TOKSET_TOKEN_MAX)
        hl = 0;
    char tok[TOKSET_TOKEN_MAX + 1];
    memcpy(tok, home, hl);
    if (hl)
        tok[hl++] = '/';
    uint64_t v = hash_fast_random_u64();
    for (int i = 15; i >= 0; i--, v >>= 4)
        tok[hl + (size_t)i] = hex[v & 15];
    tok[hl + 16] = '\0';
    /* The item's body ends with "\"idempotency_token\":null}" until now: rewritten whole. */
    struct buf body = {0};
    buf_append(&body, b->text.data + it->off, it->len - 5);
    buf_json_str(&body, tok, hl + 16);
    size_t start = b->text.len;
    buf_append(&b->text, body.data, body.len);
    buf_free(&body);
    buf_putc(&b->text, '}');
    it->off = start;
    it->len = b->text.len - start;
}

/* Routes the items idx[0..n) (each among the regions it has not tried) and sends them,
 * grouped by region. An item no region can take is answered 503. */
static void batch_dispatch(struct gw_batch *b, const size_t *idx, size_t n)
{
    size_t *by = xmalloc(n * sizeof *by);
    int *reg = xmalloc(n * sizeof *reg);
    for (size_t k = 0; k < n; k++) {
        struct gw_item *it = &b->items[idx[k]];
        struct gateway_choice c = {b->routing, b->text.data + it->name_off,
                                   b->has_client_region ? b->client_region : NULL,
                                   it->own_token ? b->text.data + it->tok_off : NULL, it->tried};
        char err[256];
        reg[k] = gateway__pick(b->g, &c, err, sizeof err);
        if (reg[k] >= 0 && !it->own_token && !it->tried)
            make_token(b, it, reg[k]);
        if (reg[k] < 0) {
            char d[400];
            snprintf(d, sizeof d, "increments[%zu]: no region took the increment (%s)", idx[k],
                     err);
            item_error(b, idx[k], 503, "unavailable", d);
        }
    }
    for (size_t k = 0; k < n; k++) {
        if (reg[k] < 0)
            continue;
        size_t m = 0;
        int r = reg[k];
        for (size_t j = k; j < n; j++)
            if (reg[j] == r) {
                by[m++] = idx[j];
                reg[j] = -1;
            }
        send_sub(b, r, by, m);
    }
    free(by);
    free(reg);
}

/* ---------------------------------------------------------------- the request */

/* Item i of the client's batch, checked as a region checks it, kept as the body sent on.
 * @return 0, or -1 after answering it 400. */
static int take_item(struct gw_batch *b, size_t i, const struct json *v)
{
    struct gw_item *it = &b->items[i];
    char d[400];
    if (v->type != JSON_OBJ) {
        snprintf(d, sizeof d, "increments[%zu] must be an object, not %s", i,
                 json_type_name(v->type));
        item_error(b, i, 400, "bad_field", d);
        return -1;
    }
    struct incr_body ib;
    struct reqbody_err e;
    if (reqbody_increment_fields(v, &ib, &e) < 0) {
        snprintf(d, sizeof d, "increments[%zu].%s", i, e.detail);
        item_error(b, i, 400, e.code, d);
        return -1;
    }
    const struct json *t = json_get(v, "idempotency_token");
    if (t && t->type != JSON_NULL &&
        (t->type != JSON_STR || t->len == 0 || t->len > DEDUP_TOKEN_MAX ||
         (t->flags & JSON_F_HAS_NUL))) {
        snprintf(d, sizeof d, "increments[%zu].idempotency_token must be a string of 1-%d bytes", i,
                 DEDUP_TOKEN_MAX);
        item_error(b, i, 400, "bad_field", d);
        return -1;
    }
    it->own_token = t && t->type == JSON_STR;
    it->name_off = b->text.len;
    buf_append(&b->text, ib.name, ib.nlen);
    buf_putc(&b->text, '\0');
    it->tok_off = b->text.len;
    if (it->own_token)
        buf_append(&b->text, t->u.s, t->len);
    buf_putc(&b->text, '\0');
    it->off = b->text.len;
    buf_puts(&b->text, "{\"counter_name\":");
    buf_json_str(&b->text, ib.name, ib.nlen);
    buf_printf(&b->text, ",\"amount\":%lld,\"idempotency_token\":", (long long)ib.amount);
    if (it->own_token)
        buf_json_str(&b->text, t->u.s, t->len);
    else
        buf_puts(&b->text, "null");
    buf_putc(&b->text, '}');
    it->len = b->text.len - it->off;
    return 0;
}

/* The client's batch. @return its items, or NULL after answering 400 or 413. */
static const struct json *batch_body(struct gateway *g, struct http_request *req,
                                     const struct json **routing)
{
    struct json_parser *p = gateway__parser(g);
    const struct json *root = json_parse(p, req->body, req->body_len);
    int st = 400;
    const char *code = "bad_json";
    char d[300];
    const struct json *items = root ? json_get(root, "increments") : NULL;
    *routing = root ? json_get(root, "routing") : NULL;
    if (!root)
        snprintf(d, sizeof d, "body is not valid JSON: %s", p->err);
    else if (root->type != JSON_OBJ)
        snprintf(d, sizeof d, "body must be a JSON object, not %s", json_type_name(root->type));
    else if ((code = "bad_field") && (!items || items->type != JSON_ARR))
        snprintf(d, sizeof d, "increments must be an array of increments, not %s",
                 items ? json_type_name(items->type) : "missing");
    else if (items->len == 0)
        snprintf(d, sizeof d, "increments must hold 1-%d items, not 0", BATCH_MAX);
    else if (items->len > BATCH_MAX && (st = 413) && (code = "too_large"))
        snprintf(d, sizeof d, "increments holds %u items: at most %d a batch", (unsigned)items->len,
                 BATCH_MAX);
    else if (*routing && (*routing)->type != JSON_NULL &&
             ((*routing)->type != JSON_STR || (*routing)->len == 0 || (*routing)->len > 63))
        snprintf(d, sizeof d, "routing must be a string naming a routing policy");
    else
        return items;
    count(g, req, st);
    http_respond_error(req, st, code, "%s", d);
    return NULL;
}

size_t gateway_body_limit(const char *path, size_t len, void *arg)
{
    (void)arg;
    return len == 15 && memcmp(path, "/api/increments", 15) == 0 ? BATCH_BODY_MAX : 0;
}

int gateway__batch_handle(struct gateway *g, struct http_request *req)
{
    const struct json *routing;
    const struct json *items = batch_body(g, req, &routing);
    if (!items)
        return 1;
    struct gw_batch *b = xcalloc(1, sizeof *b);
    b->g = g;
    b->req = req;
    b->n = items->len;
    b->items = xcalloc(b->n, sizeof *b->items);
    snprintf(b->routing, sizeof b->routing, "%s",
             routing && routing->type == JSON_STR ? routing->u.s : "random");
    const char *cr = http_request_header(req, "x-client-region");
    if (cr) {
        b->has_client_region = 1;
        snprintf(b->client_region, sizeof b->client_region, "%s", cr);
    }
    if (req->span) {
        trace_span_route(req->span, "POST", "/api/increments");
        trace_span_attr_int(req->span, "counter.batch_size", (long long)b->n);
        trace_span_attr_cstr(req->span, "routing", b->routing);
    }
    struct gw_batch **head = gateway__batches(g);
    b->next = *head;
    if (*head)
        (*head)->prev = b;
    *head = b;
    size_t *idx = xmalloc(b->n * sizeof *idx), n = 0;
    for (size_t i = 0; i < b->n; i++)
        if (take_item(b, i, &items->u.items[i]) == 0)
            idx[n++] = i;
    /* A routing the policy refuses is the whole batch's mistake: nothing is sent. */
    if (n) {
        const struct gw_item *it = &b->items[idx[0]];
        struct gateway_choice c = {b->routing, b->text.data + it->name_off,
                                   b->has_client_region ? b->client_region : NULL, NULL, 0};
        char err[256];
        if (gateway__pick(g, &c, err, sizeof err) == -1) {
            count(g, req, 400);
            http_respond_error(req, 400, "bad_field", "routing: %s", err);
            free(idx);
            batch_free(b);
            return 1;
        }
    }
    batch_dispatch(b, idx, n);
    free(idx);
    if (!b->subs)
        batch_done(b);
    return 1;
}

void gateway__batch_free(struct gateway *g)
{
    struct gw_batch **head = gateway__batches(g);
    while (*head) {
        struct gw_batch *b = *head;
        while (b->subs) {
            if (b->subs->ureq)
                upstream_cancel(b->subs->ureq);
            sub_free(b->subs);
        }
        batch_free(b);
    }
}
