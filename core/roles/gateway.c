/*
 * gateway.c - the gateway's increment path (see gateway.h).
 *
 * Failover: a region that does not answer, or answers 5xx, is skipped for DOWN_MS and the
 * increment goes to the next region the routing policy picks among the others, with the
 * same idempotency token. Every increment carries a token: the client's, or one made here
 * as "<node id of the region chosen>/<random>", which makes that region the token's home
 * (store/tokset.h). Only the home adds a tokened increment to its entry; another region
 * that takes it holds it as pending until the home settles it, so an increment counts once
 * whichever regions got it and whatever timed out. A client's own token is sent to its
 * home first (random and round-robin routing), so a failover is the only detour.
 */
#include "gateway.h"
#include "gateway_internal.h"

#include <event2/event.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../base/buf.h"
#include "../base/clock.h"
#include "../base/hash.h"
#include "../base/json.h"
#include "../base/log.h"
#include "../base/mem.h"
#include "../lua/host.h"
#include "../net/http.h"
#include "../net/upstream.h"
#include "../obs/metrics.h"
#include "../obs/trace.h"
#include "../store/gstore.h"
#include "../store/tokset.h"
#include "policy.h"

#define MAX_REGIONS 16
#define DOWN_MS 2000.0
#define POOL_CONNS 64

struct gateway;

struct gw_region {
    struct gateway *g;
    char *name, *url, *host;
    char node_id[TOKSET_TOKEN_MAX]; /* learned from its answers; "" until then */
    struct upstream *pool;
    struct upstream_req *probe; /* a GET /health asking its node id */
    double down_until, probe_after;
    double probe_gap; /* ms until the next probe after a failed one: 100 doubling to 1000 */
    int unnamed;      /* known by its address only: down until gateway_name_region */
    struct metric_series *m_routed;
    /* gateway_batch.c: taken to have no POST /increments until then (ms; 0: it has one) */
    double batchless_until;
};

struct forward;

struct gateway {
    struct host *lua;
    struct gw_region regions[MAX_REGIONS];
    const char *names[MAX_REGIONS];
    int n, timeout_ms;
    struct json_parser parser;
    struct buf tmp;
    struct forward *inflight;
    const char *ids[MAX_REGIONS]; /* the regions' node ids, once every one is known */
    int ids_known;
    struct event *probe_timer;            /* asks for unknown node ids until every one is known */
    struct metric *m_requests, *m_routed; /* m_routed: by region */
    struct metric_series *m_duration, *m_ok; /* m_ok: requests answered 200 */
    struct metrics *metrics;
    struct gw_batch *batches; /* POST /api/increments in flight (gateway_batch.c) */
};

/* One increment on its way: kept for failover. */
struct forward {
    struct gateway *g;
    struct http_request *req;
    struct upstream_req *ureq;
    int region;
    unsigned tried; /* bit per region */
    char routing[64];
    char counter[256];
    char client_region[64];
    int has_client_region;
    char token[129];         /* the client's idempotency token, "" when it gave none */
    const struct json *root; /* the client's body, until it is forwarded the first time */
    int has_own_token;       /* the body has an idempotency_token (valid or not) */
    struct buf body;         /* the body to forward, token included */
    const char *endpoint;    /* POST /v1/counters/...: its template (metrics); NULL otherwise */
    char *upath;             /* /v1: the path forwarded (the client's); NULL: "/increment" */
    struct trace_span *span; /* the attempt in flight (client span), when tracing */
    struct forward *prev, *next;
};

/* ---------------------------------------------------------------- answers */

/* A /v1 add answered status: counted by its endpoint's template, never by its names. */
static void count_v1(struct gateway *g, struct http_request *req, int status, const char *ep)
{
    char st[8];
    snprintf(st, sizeof st, "%d", status);
    const char *labels[3] = {"POST", ep, st};
    metric_add(metric_series(g->m_requests, labels), 1);
    struct metric *dur = metrics_find(g->metrics, "gateway_request_duration_seconds");
    const char *lv[1] = {ep};
    metric_observe(metric_series(dur, lv), (clock_mono_ms() - req->start_ms) / 1000.0);
}

static void count_f(struct forward *f, int status);

static void count(struct gateway *g, struct http_request *req, int status)
{
    if (status == 200) {
        metric_add(g->m_ok, 1);
    } else {
        char st[8];
        snprintf(st, sizeof st, "%d", status);
        const char *labels[3] = {"POST", "/api/increment", st};
        metric_add(metric_series(g->m_requests, labels), 1);
    }
    metric_observe(g->m_duration, (clock_mono_ms() - req->start_ms) / 1000.0);
}

static void count_f(struct forward *f, int status)
{
    if (f->endpoint)
        count_v1(f->g, f->req, status, f->endpoint);
    else
        count(f->g, f->req, status);
}

static void forward_free(struct forward *f)
{
    struct gateway *g = f->g;
    if (f->prev)
        f->prev->next = f->next;
    else
        g->inflight = f->next;
    if (f->next)
        f->next->prev = f->prev;
    if (f->span) { /* cancelled */
        trace_span_error(f->span, "cancelled");
        trace_span_end(f->span);
    }
    buf_free(&f->body);
    free(f->upath);
    free(f);
}

static void fail(struct forward *f, int status, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void fail(struct forward *f, int status, const char *code, const char *fmt, ...)
{
    char detail[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail, sizeof detail, fmt, ap);
    va_end(ap);
    count_f(f, status);
    http_respond_error(f->req, status, code, "%s", detail);
    forward_free(f);
}

/* ---------------------------------------------------------------- regions' node ids */

/* Records region i's node id from one of its answers ("node_id":"..."). */
static void learn_node_id(struct gateway *g, int i, const char *body, size_t len)
{
    static const char key[] = "\"node_id\":\"";
    size_t kl = sizeof key - 1;
    for (size_t k = 0; k + kl <= len; k++) {
        if (memcmp(body + k, key, kl) != 0)
            continue;
        const char *p = body + k + kl, *q = memchr(p, '"', len - k - kl);
        struct gw_region *r = &g->regions[i];
        if (!q || !gstore_counter_name_valid(p, (size_t)(q - p)) ||
            (size_t)(q - p) >= sizeof r->node_id)
            return;
        memcpy(r->node_id, p, (size_t)(q - p));
        r->node_id[q - p] = '\0';
        for (int j = 0; j < g->n; j++)
            if (!g->regions[j].node_id[0])
                return;
        for (int j = 0; j < g->n; j++)
            g->ids[j] = g->regions[j].node_id;
        g->ids_known = 1;
        log_info("every region's node id is known: increments go to their tokens' homes");
        return;
    }
}

static void on_probe(int status, const char *body, size_t len, const char *err, int sent, void *arg)
{
    (void)err;
    (void)sent;
    struct gw_region *r = arg;
    r->probe = NULL;
    if (status == 200) {
        learn_node_id(r->g, (int)(r - r->g->regions), body, len);
        return;
    }
    /* Not up yet (a lab starting), or not answering: asked again soon, then less often. */
    r->probe_after = clock_mono_ms() + r->probe_gap;
    r->probe_gap = r->probe_gap < 500 ? r->probe_gap * 2 : 1000;
}

/* Asks the regions whose node id is not known yet for it (GET /health), once a second. */
static void probe_regions(struct gateway *g)
{
    double now = clock_mono_ms();
    for (int i = 0; i < g->n; i++) {
        struct gw_region *r = &g->regions[i];
        if (r->node_id[0] || r->probe || now < r->probe_after)
            continue;
        r->probe_after = now + 1000; /* an answer that never comes: asked again then */
        struct buf *b = &g->tmp;
        buf_reset(b);
        buf_puts(b, "GET ");
        buf_puts(b, upstream_path(r->pool)); /* the URL's path prefix, "" for none */
        buf_puts(b, "/health HTTP/1.1\r\nHost: ");
        buf_puts(b, r->host);
        buf_puts(b, "\r\n\r\n");
        r->probe = upstream_send(r->pool, b->data, b->len, g->timeout_ms, on_probe, r);
    }
}

/* Every 100 ms until every region's node id is known, so that a gateway started before
 * its regions learns them without waiting for increments to ask. */
static void on_probe_timer(evutil_socket_t fd, short what, void *arg)
{
    struct gateway *g = arg;
    if (g->ids_known)
        event_del(g->probe_timer);
    else
        probe_regions(g);
}

/* ---------------------------------------------------------------- forwarding */

static void send_to(struct forward *f, int i);
static void body_with_token(struct buf *out, const struct http_request *req,
                            const struct json *root, const char *token, const char *home);

/* Picks the next region for f: the policy's choice among those not yet tried and up. */
static int pick(struct forward *f, char *err, size_t errlen)
{
    struct gateway *g = f->g;
    int healthy[MAX_REGIONS], any = 0;
    double now = clock_mono_ms();
    for (int i = 0; i < g->n; i++) {
        healthy[i] = !(f->tried & (1u << i)) && now >= g->regions[i].down_until;
        any |= healthy[i];
    }
    if (!any) {
        snprintf(err, errlen, "no healthy region");
        return -2;
    }
    /* A client's token goes to its home when the policy leaves the region open. */
    if (f->token[0] && g->ids_known &&
        (!strcmp(f->routing, "random") || !strcmp(f->routing, "round-robin"))) {
        int h = tokset_home(f->token, strlen(f->token), g->ids, g->n);
        if (h >= 0 && healthy[h])
            return h;
    }
    int i =
        policy_route(g->lua, f->routing, f->counter, f->has_client_region ? f->client_region : NULL,
                     f->token[0] ? f->token : NULL, g->names, healthy, g->n, err, errlen);
    if (i == -3) {
        /* The policy failed (logged and counted): any healthy region is a safe answer. */
        int up[MAX_REGIONS], k = 0;
        for (int j = 0; j < g->n; j++)
            if (healthy[j])
                up[k++] = j;
        i = up[hash_fast_random_u64() % (uint64_t)k];
    }
    return i;
}

static void on_answer(int status, const char *body, size_t len, const char *err, int sent,
                      void *arg)
{
    struct forward *f = arg;
    struct gateway *g = f->g;
    struct gw_region *r = &g->regions[f->region];
    f->ureq = NULL;
    if (f->span) {
        trace_span_http_status(f->span, status, err);
        trace_span_end(f->span);
        f->span = NULL;
    }
    if (status == 0 || status >= 500) {
        (void)sent; /* applied or not, the token's home counts it once */
        r->down_until = clock_mono_ms() + DOWN_MS;
        log_warn("increment on %s failed (%s); failing over", r->name,
                 err ? err : http_status_text(status));
        char perr[256];
        int i = pick(f, perr, sizeof perr);
        if (i < 0) {
            fail(f, 503, "unavailable", "no region took the increment (last: %s: %s)", r->name,
                 err ? err : http_status_text(status));
            return;
        }
        send_to(f, i);
        return;
    }
    if (status == 404 && f->upath && memmem(body, len, "\"detail\":\"namespace ", 20)) {
        /* A namespace the gateway learnt elsewhere, which has not reached this region yet:
         * another region of the (eventual) namespace counts it. */
        char perr[256];
        int i = pick(f, perr, sizeof perr);
        if (i >= 0) {
            send_to(f, i);
            return;
        }
    }
    if (status != 200) {
        /* The region's own verdict (a bad field, an overflow): passed on as it is. */
        count_f(f, status);
        http_respond_json(f->req, status, body, len);
        forward_free(f);
        return;
    }
    metric_add(r->m_routed, 1);
    if (!r->node_id[0])
        learn_node_id(g, f->region, body, len);
    if (f->req->span)
        trace_span_attr_cstr(f->req->span, "counter.routed_to", r->name);
    /* The region's answer plus routing, routed_to_endpoint, latency_ms: spliced, so its
     * integers stay exact. */
    size_t end = len;
    while (end && (body[end - 1] == ' ' || body[end - 1] == '\n' || body[end - 1] == '\r'))
        end--;
    if (!end || body[end - 1] != '}') {
        fail(f, 502, "unavailable", "region %s answered something that is not a JSON object",
             r->name);
        return;
    }
    struct buf *b = &g->tmp;
    buf_reset(b);
    buf_append(b, body, end - 1);
    buf_puts(b, ",\"latency_ms\":");
    buf_json_ms(b, clock_mono_ms() - f->req->start_ms);
    buf_puts(b, ",\"routed_to_endpoint\":");
    buf_json_str(b, r->url, strlen(r->url));
    buf_puts(b, ",\"routing\":");
    buf_json_str(b, f->routing, strlen(f->routing));
    buf_putc(b, '}');
    count_f(f, 200);
    http_respond_json(f->req, 200, b->data, b->len);
    forward_free(f);
}

static void send_to(struct forward *f, int i)
{
    struct gateway *g = f->g;
    struct gw_region *r = &g->regions[i];
    f->region = i;
    f->tried |= 1u << i;
    struct buf *b = &g->tmp;
    buf_reset(b);
    buf_puts(b, "POST ");
    buf_puts(b, upstream_path(r->pool)); /* the URL's path prefix, "" for none */
    buf_puts(b, f->upath ? f->upath : "/increment");
    buf_puts(b, " HTTP/1.1\r\nHost: ");
    buf_puts(b, r->host);
    if (f->req->span) {
        /* One client span per attempt: a failover shows as a second one. */
        f->span = trace_span_child(f->req->span, "POST /increment", TRACE_CLIENT);
        trace_span_attr_cstr(f->span, "counter.name", f->counter);
        trace_span_attr_cstr(f->span, "counter.routed_to", r->name);
        trace_span_attr_cstr(f->span, "http.method", "POST");
        trace_span_attr_cstr(f->span, "http.url", r->url);
        char tp[TRACEPARENT_LEN + 1];
        trace_span_traceparent(f->span, tp);
        buf_puts(b, "\r\ntraceparent: ");
        buf_puts(b, tp);
    }
    if (f->root) {
        /* The first attempt: the token is made for the region chosen, its home. */
        body_with_token(&f->body, f->req, f->root, f->has_own_token ? "" : NULL, r->node_id);
        f->root = NULL;
    }
    buf_puts(b, "\r\nContent-Type: application/json\r\nContent-Length: ");
    buf_u64(b, f->body.len);
    buf_puts(b, "\r\n\r\n");
    buf_append(b, f->body.data, f->body.len);
    f->ureq = upstream_send(r->pool, b->data, b->len, g->timeout_ms, on_answer, f);
}

/* The client's body, as written (exact integers), with an idempotency token when it has
 * none: "<home>/<16 hex digits>" (just the digits while home's node id is not known yet), so
 * a retry on another region is recognised and counted by home alone. */
static void body_with_token(struct buf *out, const struct http_request *req,
                            const struct json *root, const char *token, const char *home)
{
    if (token) {
        buf_append(out, req->body, req->body_len);
        return;
    }
    static const char hex[] = "0123456789abcdef";
    char tok[TOKSET_TOKEN_MAX];
    size_t hl = strlen(home);
    if (hl + 18 > sizeof tok)
        hl = 0;
    memcpy(tok, home, hl);
    if (hl)
        tok[hl++] = '/';
    uint64_t v = hash_fast_random_u64();
    for (int i = 15; i >= 0; i--, v >>= 4)
        tok[hl + (size_t)i] = hex[v & 15];
    tok[hl + 16] = '\0';
    if (root->len == 0) {
        buf_puts(out, "{\"idempotency_token\":\"");
        buf_puts(out, tok);
        buf_puts(out, "\"}");
        return;
    }
    const char *brace = memchr(req->body, '{', req->body_len); /* the object's first byte */
    size_t at = (size_t)(brace - req->body);
    buf_append(out, req->body, at + 1);
    buf_puts(out, "\"idempotency_token\":\"");
    buf_puts(out, tok);
    buf_puts(out, "\",");
    buf_append(out, brace + 1, req->body_len - at - 1);
}

/* The gateway's span of an increment: what the client asked for. */
static void trace_increment(struct http_request *req, const struct json *name,
                            const struct json *amount, const struct json *routing)
{
    trace_span_route(req->span, "POST", "/api/increment");
    if (name && name->type == JSON_STR)
        trace_span_attr_str(req->span, "counter.name", name->u.s, name->len);
    else if (!name || name->type == JSON_NULL)
        trace_span_attr_cstr(req->span, "counter.name", "views");
    if (amount && amount->type == JSON_INT)
        trace_span_attr_int(req->span, "counter.amount", amount->u.i);
    else if (!amount || amount->type == JSON_NULL)
        trace_span_attr_int(req->span, "counter.amount", 1);
    trace_span_attr_cstr(req->span, "routing",
                         routing && routing->type == JSON_STR ? routing->u.s : "random");
}

/* The client's body: {} when empty. @return it, or NULL after answering 400 (counted). */
static const struct json *parse_body(struct gateway *g, struct http_request *req)
{
    static const struct json empty = {.type = JSON_OBJ};
    const struct json *root = &empty;
    size_t k = 0;
    while (k < req->body_len && strchr(" \t\r\n", req->body[k]))
        k++;
    if (k < req->body_len) {
        root = json_parse(&g->parser, req->body, req->body_len);
        if (!root || root->type != JSON_OBJ) {
            count(g, req, 400);
            if (!root)
                http_respond_error(req, 400, "bad_json", "body is not valid JSON: %s",
                                   g->parser.err);
            else
                http_respond_error(req, 400, "bad_json", "body must be a JSON object");
            return NULL;
        }
    }
    return root;
}

/* A new increment on its way, in the list of those in flight. */
static struct forward *forward_new(struct gateway *g, struct http_request *req,
                                   const struct json *root, const struct json *routing,
                                   const struct json *name, const struct json *token)
{
    struct forward *f = xcalloc(1, sizeof *f);
    f->g = g;
    f->req = req;
    snprintf(f->routing, sizeof f->routing, "%s",
             routing && routing->type == JSON_STR ? routing->u.s : "random");
    snprintf(f->counter, sizeof f->counter, "%s",
             name && name->type == JSON_STR && name->len < sizeof f->counter ? name->u.s : "views");
    if (token && token->type == JSON_STR && token->len < sizeof f->token)
        memcpy(f->token, token->u.s, token->len + 1);
    if (!g->ids_known)
        probe_regions(g);
    const char *cr = http_request_header(req, "x-client-region");
    if (cr) {
        f->has_client_region = 1;
        snprintf(f->client_region, sizeof f->client_region, "%s", cr);
    }
    /* A token in the body that is not a string is the region's to refuse: forwarded as is. */
    f->root = root;
    f->has_own_token = token && token->type != JSON_NULL;
    f->next = g->inflight;
    if (g->inflight)
        g->inflight->prev = f;
    g->inflight = f;
    return f;
}

/*
 * POST /v1/counters/{ns}/{name}/add and /add-and-get of a namespace the Lua role knows as
 * eventual ("gw.v1.eventual.<ns>" in counterd.shared, until when): forwarded as an
 * increment is. Anything else, and every mistake, is the Lua role's (it answers 400 with
 * the field, 404 for a namespace it does not know, and the other types).
 * @return 1 when req was taken.
 */
static int v1_add(struct gateway *g, struct http_request *req)
{
    const char *p = req->path + 13, *end = req->path + req->path_len;
    const char *s1 = memchr(p, '/', (size_t)(end - p));
    const char *s2 = s1 ? memchr(s1 + 1, '/', (size_t)(end - s1 - 1)) : NULL;
    if (!s2 || !gstore_ns_name_valid(p, (size_t)(s1 - p)) ||
        !gstore_counter_name_valid(s1 + 1, (size_t)(s2 - s1 - 1)))
        return 0;
    size_t vl = (size_t)(end - s2 - 1);
    int and_get = vl == 11 && !memcmp(s2 + 1, "add-and-get", 11);
    if (!and_get && !(vl == 3 && !memcmp(s2 + 1, "add", 3)))
        return 0;
    char key[80];
    snprintf(key, sizeof key, "gw.v1.eventual.%.*s", (int)(s1 - p), p);
    if (!(host_shared_get_number(g->lua, key) > clock_mono_ms()))
        return 0;
    static const struct json empty = {.type = JSON_OBJ};
    const struct json *root = &empty;
    if (req->body_len && !(root = json_parse(&g->parser, req->body, req->body_len)))
        return 0;
    /* A counter's operations meet at its home region unless the client says otherwise:
     * its reads see its adds, and its clears observe them. */
    static const struct json sticky = {.type = JSON_STR, .len = 6, .u.s = "sticky"};
    const struct json *d = json_get(root, "delta"), *routing = json_get(root, "routing");
    const struct json *token = json_get(root, "idempotency_token");
    const struct json *fo = json_get(root, "failover");
    if (root->type != JSON_OBJ || !d || d->type != JSON_INT || d->u.i == 0 ||
        (routing && (routing->type != JSON_STR || routing->len == 0 || routing->len > 63)) ||
        (token && (token->type != JSON_STR || token->len == 0 || token->len > 128)) ||
        (fo && fo->type != JSON_TRUE && fo->type != JSON_FALSE))
        return 0;
    char name[256];
    struct json nm = {.type = JSON_STR, .len = (uint32_t)(s2 - s1 - 1), .u.s = name};
    memcpy(name, s1 + 1, nm.len);
    name[nm.len] = '\0';
    struct forward *f = forward_new(g, req, root, routing ? routing : &sticky, &nm, token);
    f->endpoint = and_get ? "/v1/counters/{ns}/{name}/add-and-get" : "/v1/counters/{ns}/{name}/add";
    f->upath = xstrndup(req->path, req->path_len);
    if (req->span)
        trace_span_route(req->span, "POST", f->endpoint);
    char err[512];
    int i = pick(f, err, sizeof err);
    if (i == -1) {
        fail(f, 400, "bad_field", "routing: %s", err);
        return 1;
    }
    if (i < 0) {
        fail(f, 503, "unavailable", "no region can take it: %s", err);
        return 1;
    }
    send_to(f, i);
    return 1;
}

int gateway_handle(struct gateway *g, struct http_request *req)
{
    if (req->method == HTTP_M_POST && http_path_is(req, "/api/increments"))
        return gateway__batch_handle(g, req);
    if (req->method == HTTP_M_POST && req->path_len > 13 && !memcmp(req->path, "/v1/counters/", 13))
        return v1_add(g, req);
    if (req->method != HTTP_M_POST || req->path_len != 14 ||
        memcmp(req->path, "/api/increment", 14))
        return 0;
    const struct json *root = parse_body(g, req);
    if (!root)
        return 1;
    const struct json *routing = json_get(root, "routing");
    if (routing && routing->type != JSON_NULL &&
        (routing->type != JSON_STR || routing->len == 0 || routing->len > 63)) {
        count(g, req, 400);
        http_respond_error(req, 400, "bad_field",
                           "routing must be a string naming a routing policy");
        return 1;
    }
    const struct json *name = json_get(root, "counter_name");
    const struct json *token = json_get(root, "idempotency_token");
    if (req->span)
        trace_increment(req, name, json_get(root, "amount"), routing);
    struct forward *f = forward_new(g, req, root, routing, name, token);

    char err[512];
    int i = pick(f, err, sizeof err);
    if (i == -1) {
        fail(f, 400, "bad_field", "routing: %s", err);
        return 1;
    }
    if (i < 0) {
        fail(f, 503, "unavailable", "no region can take the increment: %s", err);
        return 1;
    }
    send_to(f, i);
    return 1;
}

/* ---------------------------------------------------------------- set-up */

struct gateway *gateway_new(struct event_base *base, struct host *lua, struct metrics *metrics,
                            const struct gateway_region *regions, int nregions, int timeout_ms,
                            char *err, size_t errlen)
{
    if (nregions < 1 || nregions > MAX_REGIONS) {
        snprintf(err, errlen, "the gateway needs 1 to %d regions, not %d", MAX_REGIONS, nregions);
        return NULL;
    }
    struct gateway *g = xcalloc(1, sizeof *g);
    g->lua = lua;
    g->n = nregions;
    g->timeout_ms = timeout_ms;
    g->metrics = metrics;
    json_parser_init(&g->parser);
    struct metric *routed = metrics_find(metrics, "gateway_routed_to_region_total");
    if (!routed)
        routed =
            metrics_add(metrics, METRIC_COUNTER, "gateway_routed_to_region_total",
                        "Increments forwarded, by the region that took them", "region", NULL, 0);
    g->m_routed = routed;
    g->m_requests = metrics_find(metrics, "gateway_requests_total");
    if (!g->m_requests)
        g->m_requests =
            metrics_add(metrics, METRIC_COUNTER, "gateway_requests_total",
                        "Requests answered by the gateway", "method,endpoint,status", NULL, 0);
    struct metric *dur = metrics_find(metrics, "gateway_request_duration_seconds");
    if (!dur)
        dur = metrics_add(metrics, METRIC_HISTOGRAM, "gateway_request_duration_seconds",
                          "Time the gateway took to answer", "endpoint", metrics_latency_buckets,
                          metrics_latency_nbuckets);
    const char *ep[1] = {"/api/increment"};
    g->m_duration = metric_series(dur, ep);
    const char *ok[3] = {"POST", "/api/increment", "200"};
    g->m_ok = metric_series(g->m_requests, ok);
    for (int i = 0; i < nregions; i++) {
        struct gw_region *r = &g->regions[i];
        r->g = g;
        r->name = xstrdup(regions[i].name);
        r->url = xstrdup(regions[i].url);
        g->names[i] = r->name;
        const char *lv[1] = {r->name};
        /* A region known only by its address is not routed to until its name is known:
         * failover_from must name it, and the routing policy chooses by names. */
        r->unnamed = regions[i].unnamed;
        if (r->unnamed)
            r->down_until = INFINITY;
        else
            r->m_routed = metric_series(routed, lv);
        r->pool = upstream_new(base, r->url, POOL_CONNS, err, errlen);
        if (!r->pool) {
            g->n = i + 1;
            gateway_free(g);
            return NULL;
        }
        r->host = xstrdup(upstream_host_header(r->pool)); /* libcurl's reading of r->url */
        r->probe_gap = 100;
    }
    probe_regions(g);
    g->probe_timer = event_new(base, -1, EV_PERSIST, on_probe_timer, g);
    struct timeval tick = {0, 100 * 1000};
    event_add(g->probe_timer, &tick);
    return g;
}

void gateway_name_region(struct gateway *g, const char *url, const char *name)
{
    for (int i = 0; i < g->n; i++) {
        struct gw_region *r = &g->regions[i];
        if (!r->unnamed || strcmp(r->url, url) != 0)
            continue;
        r->unnamed = 0;
        free(r->name);
        r->name = xstrdup(name);
        g->names[i] = r->name;
        const char *lv[1] = {r->name};
        r->m_routed = metric_series(g->m_routed, lv);
        r->down_until = 0;
    }
}

void gateway_free(struct gateway *g)
{
    if (!g)
        return;
    gateway__batch_free(g);
    while (g->inflight) {
        struct forward *f = g->inflight;
        if (f->ureq)
            upstream_cancel(f->ureq);
        forward_free(f);
    }
    for (int i = 0; i < g->n; i++) {
        if (g->regions[i].probe)
            upstream_cancel(g->regions[i].probe);
        upstream_free(g->regions[i].pool);
        free(g->regions[i].name);
        free(g->regions[i].url);
        free(g->regions[i].host);
    }
    if (g->probe_timer)
        event_free(g->probe_timer);
    json_parser_free(&g->parser);
    buf_free(&g->tmp);
    free(g);
}

/* ---------------------------------------------------------------- for gateway_batch.c */

int gateway__pick(struct gateway *g, const struct gateway_choice *c, char *err, size_t errlen)
{
    struct forward f = {.g = g, .tried = c->tried};
    snprintf(f.routing, sizeof f.routing, "%s", c->routing);
    snprintf(f.counter, sizeof f.counter, "%s", c->counter);
    if (c->token && strlen(c->token) < sizeof f.token)
        snprintf(f.token, sizeof f.token, "%s", c->token);
    if (c->client_region) {
        f.has_client_region = 1;
        snprintf(f.client_region, sizeof f.client_region, "%s", c->client_region);
    }
    if (!g->ids_known)
        probe_regions(g);
    return pick(&f, err, errlen);
}

struct upstream_req *gateway__send(struct gateway *g, int i, const char *path, const char *body,
                                   size_t len, const char *traceparent, upstream_cb cb, void *arg)
{
    struct gw_region *r = &g->regions[i];
    struct buf *b = &g->tmp;
    buf_reset(b);
    buf_puts(b, "POST ");
    buf_puts(b, upstream_path(r->pool));
    buf_puts(b, path);
    buf_puts(b, " HTTP/1.1\r\nHost: ");
    buf_puts(b, r->host);
    if (traceparent) {
        buf_puts(b, "\r\ntraceparent: ");
        buf_puts(b, traceparent);
    }
    buf_puts(b, "\r\nContent-Type: application/json\r\nContent-Length: ");
    buf_u64(b, len);
    buf_puts(b, "\r\n\r\n");
    buf_append(b, body, len);
    return upstream_send(r->pool, b->data, b->len, g->timeout_ms, cb, arg);
}

void gateway__region_failed(struct gateway *g, int i, const char *why)
{
    struct gw_region *r = &g->regions[i];
    r->down_until = clock_mono_ms() + DOWN_MS;
    log_warn("increments on %s failed (%s); failing over", r->name, why);
}

void gateway__region_answered(struct gateway *g, int i, const char *body, size_t len, size_t taken)
{
    struct gw_region *r = &g->regions[i];
    if (r->m_routed && taken)
        metric_add(r->m_routed, (double)taken);
    if (!r->node_id[0])
        learn_node_id(g, i, body, len);
}

const char *gateway__region_name(const struct gateway *g, int i)
{
    return g->regions[i].name;
}

const char *gateway__region_url(const struct gateway *g, int i)
{
    return g->regions[i].url;
}

const char *gateway__region_node_id(const struct gateway *g, int i)
{
    return g->regions[i].node_id;
}

double *gateway__region_batchless_until(struct gateway *g, int i)
{
    return &g->regions[i].batchless_until;
}

struct gw_batch **gateway__batches(struct gateway *g)
{
    return &g->batches;
}

struct json_parser *gateway__parser(struct gateway *g)
{
    return &g->parser;
}

struct metrics *gateway__metrics(struct gateway *g)
{
    return g->metrics;
}
