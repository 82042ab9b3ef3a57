/*
 * region_v1.c - the counter operations of a namespace on a region node (API.md, "Counter
 * operations"): /v1/counters/{ns}/{name}/add, /add-and-get, /clear, GET and DELETE of a
 * counter, and the listing of a namespace.
 *
 * An add is POST /increment under another name (region_incr.c: the same tokens, pending,
 * log and answers held until durable). A clear and a delete are logged before they are
 * answered like an increment, and refused with nothing applied when the log has no room.
 * Nothing is changed before every check passed.
 */
#include "region_internal.h"

#include <inttypes.h>
#include <string.h>

#include "../base/clock.h"
#include "../net/http.h"
#include "../obs/metrics.h"
#include "../store/nsreg.h"
#include "../store/tokset.h"
#include "reqbody.h"

/* A parsed /v1/counters path: {ns}[/{name}[/{op}]]. */
struct v1_path {
    const char *ns, *name, *op;
    size_t nslen, nlen, oplen;
};

static void split(const char *p, size_t n, struct v1_path *v)
{
    const char **part[3] = {&v->ns, &v->name, &v->op};
    size_t *len[3] = {&v->nslen, &v->nlen, &v->oplen};
    memset(v, 0, sizeof *v);
    for (int k = 0; k < 3 && n; k++) {
        const char *slash = k < 2 ? memchr(p, '/', n) : NULL;
        size_t l = slash ? (size_t)(slash - p) : n;
        *part[k] = p;
        *len[k] = l;
        p += l + (slash ? 1 : 0);
        n -= l + (slash ? 1 : 0);
        if (!slash)
            break;
    }
}

/* The counter's id when it is alive, or GSTORE_NONE after answering 404. */
static uint32_t live_counter(struct region *rg, struct http_request *req, const struct v1_path *v,
                             const char *key, size_t klen)
{
    uint32_t id = gstore_find(rg->store, key, klen);
    if (id != GSTORE_NONE && !gstore_dead(rg->store, id))
        return id;
    http_respond_error(req, 404, "not_found", "counter %.*s does not exist in namespace %.*s",
                       (int)v->nlen, v->name, (int)v->nslen, v->ns);
    return GSTORE_NONE;
}

/* {"namespace":..,"counter":.. (no closing brace) */
static void put_head(struct buf *b, const struct v1_path *v)
{
    buf_puts(b, "{\"namespace\":");
    buf_json_str(b, v->ns, v->nslen);
    buf_puts(b, ",\"counter\":");
    buf_json_str(b, v->name, v->nlen);
}

/* The idempotency token of a body. @return 0, or -1 after answering 400. */
static int body_token(struct http_request *req, const struct json *root, const char **tok,
                      size_t *tlen)
{
    *tok = NULL;
    *tlen = 0;
    const struct json *t = json_get(root, "idempotency_token");
    if (!t || t->type == JSON_NULL)
        return 0;
    if (t->type != JSON_STR || t->len == 0 || t->len > DEDUP_TOKEN_MAX ||
        (t->flags & JSON_F_HAS_NUL)) {
        http_respond_error(req, 400, "bad_field",
                           "idempotency_token must be a string of 1-%d bytes", DEDUP_TOKEN_MAX);
        return -1;
    }
    *tok = t->u.s;
    *tlen = t->len;
    return 0;
}

/* POST .../add and .../add-and-get: the increment path with the answer of /v1. */
static void h_add(struct region *rg, struct http_request *req, const struct v1_path *v,
                  const char *key, size_t klen, int with_count)
{
    const struct json *root = reqbody_object(&rg->parser, req);
    if (!root)
        return;
    const struct json *d = json_get(root, "delta");
    if (root->type != JSON_OBJ || !d || d->type != JSON_INT || d->u.i == 0) {
        http_respond_error(req, 400, "bad_field", "delta must be a non-zero 64-bit integer");
        return;
    }
    const char *tok;
    size_t tlen;
    if (body_token(req, root, &tok, &tlen) < 0)
        return;
    struct incr_body ib = {root, key, klen, d->u.i};
    uint32_t id = gstore_find(rg->store, key, klen);
    if (rg->wal && region__reserve_log(rg, req, region__incr_record_max(rg, id, klen, tlen)) < 0)
        return;
    char ns[GSTORE_NS_MAX + 1];
    memcpy(ns, v->ns, v->nslen);
    ns[v->nslen] = '\0';
    rg->v1_ns = ns;
    rg->v1_count = with_count;
    rg->v1_delta = d->u.i;
    struct incr_result r;
    int status = region__incr_apply(rg, &ib, tok, tlen, clock_unix_s(), "{", &r);
    rg->v1_ns = NULL;
    if (status != 200) {
        http_respond_error(req, r.status, r.code, "%s", r.detail);
        return;
    }
    region__respond_durable(rg, req, r.pos);
}

static void h_get(struct region *rg, struct http_request *req, const struct v1_path *v,
                  const char *key, size_t klen)
{
    uint32_t id = live_counter(rg, req, v, key, klen);
    if (id == GSTORE_NONE)
        return;
    struct buf *b = &rg->out;
    put_head(b, v);
    buf_putc(b, ',');
    region__put_count_nodes(rg, b, gstore_counter(rg->store, id), id);
    buf_putc(b, ',');
    region__put_identity(rg, b);
    buf_putc(b, '}');
    region__respond_out(req, rg, 200);
}

/* The answer of a clear: "count" (after), "cleared" (what it observed). */
static void put_clear(struct region *rg, const struct v1_path *v, int64_t count, int64_t cleared,
                      int dup)
{
    struct buf *b = &rg->out;
    put_head(b, v);
    buf_puts(b, ",\"count\":");
    buf_i64(b, count);
    buf_puts(b, ",\"cleared\":");
    buf_i64(b, cleared);
    buf_putc(b, ',');
    region__put_identity(rg, b);
    buf_puts(b, dup ? ",\"duplicate\":true}" : "}");
}

/* A clear's token is remembered in the idempotency window with amount 0 (an add's delta
 * is never 0): local_count holds what it cleared, total_count the count after. */
static void h_clear(struct region *rg, struct http_request *req, const struct v1_path *v,
                    const char *key, size_t klen)
{
    const struct json *root = reqbody_object(&rg->parser, req);
    if (!root)
        return;
    const char *tok;
    size_t tlen;
    if (body_token(req, root, &tok, &tlen) < 0)
        return;
    double now = clock_unix_s();
    struct dedup_answer prev;
    if (tok && dedup_get(rg->dedup, key, klen, tok, tlen, now, &prev)) {
        if (prev.amount != 0) {
            http_respond_error(req, 409, "idempotency_conflict",
                               "idempotency_token was used for an add of %" PRId64
                               " on this counter, not a clear",
                               prev.amount);
            return;
        }
        uint32_t id = gstore_find(rg->store, key, klen);
        const struct gcounter *c = id == GSTORE_NONE ? NULL : gstore_counter(rg->store, id);
        put_clear(rg, v, region__total_of(rg, c, id), prev.local_count, 1);
        region__respond_durable(rg, req, rg->wal ? wal_position(rg->wal) : 0);
        return;
    }
    uint32_t id = live_counter(rg, req, v, key, klen);
    if (id == GSTORE_NONE)
        return;
    /* The record carries the counter's floors too: room for its entries three times. */
    if (rg->wal &&
        region__reserve_log(rg, req, 3 * region__incr_record_max(rg, id, klen, tlen)) < 0)
        return;
    int64_t cleared = gstore_clamp(gstore_value(rg->store, gstore_counter(rg->store, id)), NULL);
    if (gstore_clear(rg->store, id) != 0) {
        http_respond_error(req, 409, "too_many_replicas",
                           "counter %s has too many node ids; nothing was cleared", key);
        return;
    }
    const struct gcounter *c = gstore_counter(rg->store, id);
    struct dedup_answer a = {0, cleared, region__total_of(rg, c, id)};
    if (tok)
        dedup_put(rg->dedup, key, klen, tok, tlen, now, &a);
    uint64_t pos =
        rg->wal ? wal_append(rg->wal, rg->store, id, tok, tlen, tok ? &a : NULL, now) : 0;
    metric_add(rg->m_clears, 1);
    put_clear(rg, v, a.total_count, cleared, 0);
    region__respond_durable(rg, req, pos);
}

static void h_delete(struct region *rg, struct http_request *req, const struct v1_path *v,
                     const char *key, size_t klen)
{
    uint32_t id = live_counter(rg, req, v, key, klen);
    if (id == GSTORE_NONE)
        return;
    if (rg->wal && region__reserve_log(rg, req, 3 * region__incr_record_max(rg, id, klen, 0)) < 0)
        return;
    if (gstore_delete(rg->store, id) != 0) {
        http_respond_error(req, 409, "too_many_replicas",
                           "counter %s has too many node ids; nothing was deleted", key);
        return;
    }
    uint64_t pos = rg->wal ? wal_append(rg->wal, rg->store, id, NULL, 0, NULL, 0) : 0;
    region__top_forget(rg, id);
    metric_add(rg->m_del_delete, 1);
    struct buf *b = &rg->out;
    put_head(b, v);
    buf_puts(b, ",\"deleted\":true,");
    region__put_identity(rg, b);
    buf_putc(b, '}');
    region__respond_durable(rg, req, pos);
}

/* One counter's route: {name} (GET, DELETE) or {name}/{op} (POST). */
static void counter_op(struct region *rg, struct http_request *req, const struct v1_path *v)
{
    if (!gstore_counter_name_valid(v->name, v->nlen)) {
        http_respond_error(req, 400, "bad_name",
                           "counter names are 1-200 bytes of [A-Za-z0-9_.:-]");
        return;
    }
    char key[GCOUNTER_NAME_MAX + 1];
    size_t klen = region__ns_key(v->ns, v->nslen, v->name, v->nlen, key);
    int get = req->method == HTTP_M_GET || req->method == HTTP_M_HEAD;
    int post = req->method == HTTP_M_POST;
    if (!v->op && get)
        h_get(rg, req, v, key, klen);
    else if (!v->op && req->method == HTTP_M_DELETE)
        h_delete(rg, req, v, key, klen);
    else if (v->op && v->oplen == 3 && !memcmp(v->op, "add", 3) && post)
        h_add(rg, req, v, key, klen, 0);
    else if (v->op && v->oplen == 11 && !memcmp(v->op, "add-and-get", 11) && post)
        h_add(rg, req, v, key, klen, 1);
    else if (v->op && v->oplen == 5 && !memcmp(v->op, "clear", 5) && post)
        h_clear(rg, req, v, key, klen);
    else if (!v->op || (v->oplen == 3 && !memcmp(v->op, "add", 3)) ||
             (v->oplen == 11 && !memcmp(v->op, "add-and-get", 11)) ||
             (v->oplen == 5 && !memcmp(v->op, "clear", 5)))
        http_respond_error(req, 405, "method_not_allowed",
                           v->op ? "use POST" : "use GET or DELETE on a counter");
    else
        http_respond_error(req, 404, "not_found",
                           "no such operation: use add, add-and-get or clear");
}

void region__h_v1_counters(void *role, struct http_request *req)
{
    struct region *rg = role;
    struct v1_path v;
    split(req->path + 13, req->path_len - 13, &v); /* after "/v1/counters/" */
    if (!region__ns_for_op(rg, req, v.ns, v.nslen))
        return;
    if (!v.name) {
        if (req->method == HTTP_M_GET || req->method == HTTP_M_HEAD)
            region__list(rg, req, v.ns, v.nslen, 1);
        else
            http_respond_error(req, 405, "method_not_allowed", "use GET to list a namespace");
        return;
    }
    counter_op(rg, req, &v);
}
