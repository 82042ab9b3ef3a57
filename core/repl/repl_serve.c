/*
 * repl_serve.c - an incoming POST /sync answered (see repl_internal.h; wire format
 * at the top of repl.c): the partition and the faults policy first (drop, delay,
 * deliver), then the merge of its body and a page of this node's state from the cursor
 * it sent.
 *
 * It never starts an exchange of its own.
 */
#include <event2/event.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../base/clock.h"
#include "../base/mem.h"
#include "../obs/metrics.h"
#include "repl_internal.h"

/* ---------------------------------------------------------------- incoming /sync */

int repl__parse_cursor(struct repl *r, const char *s, int *full, uint64_t *seq, uint32_t *next,
                       uint64_t *base)
{
    char kind, inc[17];
    unsigned long long a = 0, b = 0;
    int n = 0, m = 0;
    if (sscanf(s, "%c.%16[0-9a-f].%llu%n", &kind, inc, &a, &n) != 3)
        return -1;
    if (strcmp(inc, r->incarnation) != 0)
        return -1;
    if (kind == 'D' && s[n] == '\0') {
        *full = 0;
        *seq = *base = a;
        return 0;
    }
    if (kind == 'D' && s[n] == '.' && sscanf(s + n + 1, "%llu%n", &b, &m) == 1 &&
        s[n + 1 + m] == '\0' && b <= a) {
        *full = 0;
        *seq = a;
        *base = b;
        return 0;
    }
    if (kind == 'F' && s[n] == '.' && sscanf(s + n + 1, "%llu", &b) == 1 && b <= UINT32_MAX) {
        *full = 1;
        *seq = a;
        *next = (uint32_t)b;
        return 0;
    }
    return -1;
}

/* Merges the body of a /sync request. @return 0 with *origin set (the sender's tag), or
 * -1 when it was answered with an error (nothing merged). */
static int merge_request(struct repl *r, struct http_request *req, const struct json *root,
                         const struct json *nid, int *origin)
{
    *origin = nid && nid->type == JSON_STR ? repl__origin_of_node(r, nid->u.s) : 0;
    struct merge_error e;
    r->merge_peer = nid && nid->type == JSON_STR ? nid->u.s : NULL;
    int changed = repl__merge_body(r, root, *origin, &e);
    r->merge_peer = NULL;
    if (changed < 0) {
        http_respond_error(req, e.status, e.code, "%s", e.detail);
        return -1;
    }
    repl__apply_tokens(r, root, nid && nid->type == JSON_STR ? nid->u.s : "a peer");
    const struct json *inc = json_get(root, "incarnation");
    if (inc && inc->type == JSON_STR && r->hooks.take_ext)
        r->hooks.take_ext(r->hooks.arg, root); /* a counterd message, accepted */
    metric_add(r->m_conflicts, changed);
    if (req->span) {
        if (nid && nid->type == JSON_STR)
            trace_span_attr_str(req->span, "sync.peer", nid->u.s, nid->len);
        trace_span_attr_int(req->span, "sync.counters_received", (int64_t)r->nitems);
        trace_span_attr_int(req->span, "sync.conflicts_resolved", changed);
    }
    return 0;
}

/* Answers with the page in r->counts (and the rest) and the merge's rejected entries. */
static void respond_page(struct repl *r, struct http_request *req, const char *cursor, int more)
{
    trace_span_attr_int(req->span, "sync.counters_sent", r->page_counters);
    repl__body_finish(r, NULL, cursor, more);
    r->original_out = 0;
    repl__put_rejects(r);
    r->last_sync_unix = clock_unix_s();
    if (r->compact_out) {
        r->compact_out = 0;
        repl__compact_wrap(r);
        r->life_out = 0;
        metric_add(r->m_bytes_sent, (double)r->cout.len);
        http_respond_ex(req, 200, "application/octet-stream", NULL, r->cout.data, r->cout.len);
        return;
    }
    metric_add(r->m_bytes_sent, (double)r->out.len);
    http_respond_json(req, 200, r->out.data, r->out.len);
}

/* Whether the request's sender says feature what in "features" ("compact": it reads compact
 * answers; "life": with the counters' lifecycle state). */
static int says(const struct repl *r, const struct json *root, const char *what)
{
    const struct json *feat = json_get(root, "features");
    for (uint32_t i = 0; !r->compact_off && feat && feat->type == JSON_ARR && i < feat->len; i++)
        if (feat->u.items[i].type == JSON_STR && strcmp(feat->u.items[i].u.s, what) == 0)
            return 1;
    return 0;
}

/* The original lab's region (neither an incarnation nor decrements): our state in its
 * format, whole, without a cursor. */
static void answer_original(struct repl *r, struct http_request *req, const char *from)
{
    size_t page = r->page_bytes;
    uint32_t next = 0;
    r->original_out = 1;
    r->page_bytes = SIZE_MAX;
    repl__page_full(r, &next);
    r->page_bytes = page;
    repl__decs_unsent(r, from, r->page_decs_unsent);
    respond_page(r, req, NULL, 0);
}

/* The page the request's "since" asks for (full state when it is none of ours), and the
 * cursor (cap bytes) that continues it. @return 1 when more remain. */
static int page_since(struct repl *r, const struct json *root, int origin, char *cursor, size_t cap,
                      int *was_full)
{
    int full = 1;
    uint64_t seq = 0, base = 0;
    uint32_t next = 0;
    const struct json *since = json_get(root, "since");
    if (!since || since->type != JSON_STR ||
        repl__parse_cursor(r, since->u.s, &full, &seq, &next, &base) < 0) {
        full = 1;
        seq = gstore_seq(r->store);
        next = 0;
    }
    int more;
    *was_full = full;
    if (full) {
        r->tok_after = 0;
        repl__page_full(r, &next);
        more = next < gstore_count(r->store);
        if (more)
            snprintf(cursor, cap, "F.%s.%" PRIu64 ".%u", r->incarnation, seq, next);
        else
            snprintf(cursor, cap, "D.%s.%" PRIu64, r->incarnation, seq);
        return more;
    }
    uint64_t upto;
    r->tok_after = base;
    more = repl__page_delta(r, seq, origin, &upto);
    if (more && base < upto)
        snprintf(cursor, cap, "D.%s.%" PRIu64 ".%" PRIu64, r->incarnation, upto, base);
    else
        snprintf(cursor, cap, "D.%s.%" PRIu64, r->incarnation, upto);
    return more;
}

/* Bytes of an exchange a peer started, on that peer's series (origin: its tag; 0: none). */
static void count_peer_bytes(struct repl *r, int origin, enum sync_kind kind, size_t in, size_t out)
{
    if (origin < 1 || origin > r->npeers)
        return;
    struct peer *p = &r->peers[origin - 1];
    metric_add(p->m_bytes[kind][1], (double)in);
    metric_add(p->m_bytes[kind][0], (double)out);
    if (kind == KIND_REPAIR)
        metric_add(p->m_repaired, (double)r->merged_counters);
}

/* A step of a peer's digest exchange: the repair it pushed is merged already. */
static void answer_digest(struct repl *r, struct http_request *req, const struct json *dg,
                          int origin, size_t len)
{
    uint64_t repaired = r->merged_counters;
    enum sync_kind kind = repl__digest_respond(r, dg);
    trace_span_attr_int(req->span, "sync.counters_sent", r->page_counters);
    repl__body_finish(r, NULL, NULL, 0);
    buf_reset(&r->dg);
    repl__put_rejects(r);
    metric_add(r->m_bytes_sent, (double)r->out.len);
    r->merged_counters = repaired;
    count_peer_bytes(r, origin, kind, len, r->out.len);
    r->last_sync_unix = clock_unix_s();
    http_respond_json(req, 200, r->out.data, r->out.len);
}

static void answer_sync(struct repl *r, struct http_request *req, const char *body, size_t len)
{
    const struct json *root = repl__parse(r, body, len);
    if (!root) {
        http_respond_error(req, 400, "bad_json", "body is not valid JSON: %s", r->parser.err);
        return;
    }
    const struct json *nid = json_get(root, "node_id");
    const struct json *dg = json_get(root, "digest");
    struct merge_error e;
    if (dg && repl__digest_check(r, dg, &e) < 0) {
        http_respond_error(req, e.status, e.code, "%s", e.detail);
        return;
    }
    int origin;
    if (merge_request(r, req, root, nid, &origin) < 0)
        return;
    metric_add(r->m_bytes_recv, (double)len);
    if (dg) {
        answer_digest(r, req, dg, origin, len);
        return;
    }
    repl__page_begin(r);
    const struct json *inc = json_get(root, "incarnation");
    if ((!inc || inc->type != JSON_STR) && !json_get(root, "decrements")) {
        answer_original(r, req, nid->u.s);
        return;
    }
    char cursor[96];
    int full;
    r->compact_out = says(r, root, "compact");
    r->life_out = r->compact_out && says(r, root, "life");
    int more = page_since(r, root, origin, cursor, sizeof cursor, &full);
    int compact = r->compact_out;
    respond_page(r, req, cursor, more);
    count_peer_bytes(r, origin, full ? KIND_FULL : KIND_DELTA, len,
                     compact ? r->cout.len : r->out.len);
}

void repl__delayed_free(struct delayed_in *d)
{
    struct repl *r = d->r;
    if (d->prev)
        d->prev->next = d->next;
    else
        r->delayed = d->next;
    if (d->next)
        d->next->prev = d->prev;
    event_free(d->ev);
    buf_free(&d->body);
    free(d);
}

static void on_delay_in(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct delayed_in *d = arg;
    struct repl *r = d->r;
    if (r->partitioned)
        http_respond_error(d->req, 503, "partitioned",
                           "this node is partitioned and does not accept replication");
    else
        answer_sync(r, d->req, d->body.data, d->body.len);
    repl__delayed_free(d);
}

void repl_handle_sync(struct repl *r, struct http_request *req)
{
    if (r->partitioned) {
        http_respond_error(req, 503, "partitioned",
                           "this node is partitioned and does not accept replication");
        return;
    }
    const struct json *root = repl__parse(r, req->body, req->body_len);
    if (!root) {
        http_respond_error(req, 400, "bad_json", "body is not valid JSON: %s", r->parser.err);
        return;
    }
    if (root->type != JSON_OBJ) {
        http_respond_error(req, 400, "bad_json", "body must be a JSON object");
        return;
    }
    const struct json *nid = json_get(root, "node_id");
    if (!nid || nid->type != JSON_STR || !gstore_counter_name_valid(nid->u.s, nid->len)) {
        http_respond_error(req, 400, "bad_field",
                           "node_id must be a string of 1-200 bytes of [A-Za-z0-9_.:-]");
        return;
    }
    int delay_ms;
    int a = repl__decide(r, "in", nid->u.s, r->node_id, &delay_ms);
    if (a == REPL_DROP) {
        metric_add(r->m_part, 1);
        http_respond_error(req, 503, "partitioned",
                           "the faults policy drops replication from %s to %s", nid->u.s,
                           r->node_id);
        return;
    }
    if (a == REPL_DELAY) {
        struct delayed_in *d = xcalloc(1, sizeof *d);
        d->r = r;
        d->req = req;
        buf_append(&d->body, req->body, req->body_len);
        d->ev = evtimer_new(r->base, on_delay_in, d);
        d->next = r->delayed;
        if (r->delayed)
            r->delayed->prev = d;
        r->delayed = d;
        struct timeval tv = {delay_ms / 1000, (delay_ms % 1000) * 1000};
        evtimer_add(d->ev, &tv);
        return;
    }
    answer_sync(r, req, req->body, req->body_len);
}
