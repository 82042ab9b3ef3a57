/*
 * region_incr.c - POST /increment on a region node: the hot path, in C.
 *
 * An increment is checked, then (a retry of a known token) answered as the first time,
 * or applied to this node's entry (or held for its token's home), remembered, logged and
 * answered once durable. Nothing is changed before every check passed.
 */
#include "region_internal.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "../base/clock.h"
#include "../net/http.h"
#include "../obs/metrics.h"
#include "../obs/trace.h"
#include "../store/tokset.h"
#include "reqbody.h"

/* The idempotency token of an increment, if any. @return 0, or -1 with r a 400. */
static int incr_token(const struct json *root, const char **token, size_t *tlen,
                      struct incr_result *r)
{
    *token = NULL;
    *tlen = 0;
    const struct json *v = json_get(root, "idempotency_token");
    if (v && v->type != JSON_NULL) {
        if (v->type != JSON_STR || v->len == 0 || v->len > DEDUP_TOKEN_MAX ||
            (v->flags & JSON_F_HAS_NUL)) {
            region__incr_error(r, 400, "bad_field",
                               "idempotency_token must be a string of 1-%d bytes", DEDUP_TOKEN_MAX);
            return -1;
        }
        *token = v->u.s;
        *tlen = v->len;
    }
    /* Sent by the gateways of older versions when another region failed to answer: the
     * token's home decides now (store/tokset.h), so it is accepted and ignored. */
    return 0;
}

void region__incr_error(struct incr_result *r, int status, const char *code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->detail, sizeof r->detail, fmt, ap);
    va_end(ap);
    r->status = status;
    r->code = code;
}

int region__incr_item(const struct json *item, struct incr_body *ib, const char **token,
                      size_t *tlen, struct incr_result *r)
{
    struct reqbody_err e;
    if (reqbody_increment_fields(item, ib, &e) < 0) {
        region__incr_error(r, 400, e.code, "%s", e.detail);
        return -1;
    }
    return incr_token(item, token, tlen, r);
}

/* The rest of the answer to an add of /v1/counters (region_v1.c): "namespace","counter"
 * (without the namespace),"delta","region","node_id"[,"count"] and tail. */
static void put_v1_answer(struct region *rg, const char *key, size_t klen, int64_t total,
                          const char *tail)
{
    struct buf *b = &rg->out;
    size_t skip = strcmp(rg->v1_ns, "default") ? strlen(rg->v1_ns) + 1 : 0;
    buf_puts(b, "\"namespace\":");
    region__put_str(b, rg->v1_ns);
    buf_puts(b, ",\"counter\":");
    buf_json_str(b, key + skip, klen - skip);
    buf_puts(b, ",\"delta\":");
    buf_i64(b, rg->v1_delta);
    if (rg->v1_count) {
        buf_puts(b, ",\"count\":");
        buf_i64(b, total);
    }
    buf_putc(b, ',');
    region__put_identity(rg, b);
    buf_puts(b, tail);
}

/* The answer to an increment: head ("{" or a batch item's "{\"status\":200,"), then
 * "counter","local_count","total_count","node_id","region" and tail (",\"duplicate\":true}",
 * ",\"pending\":true}" or "}"). */
static void put_incr_answer(struct region *rg, const char *head, const char *name, size_t nlen,
                            int64_t local, int64_t total, const char *tail)
{
    struct buf *b = &rg->out;
    buf_puts(b, head);
    if (rg->v1_ns) {
        put_v1_answer(rg, name, nlen, total, tail);
        return;
    }
    buf_puts(b, "\"counter\":");
    buf_json_str(b, name, nlen);
    buf_puts(b, ",\"local_count\":");
    buf_i64(b, local);
    buf_puts(b, ",\"total_count\":");
    buf_i64(b, total);
    buf_puts(b, ",\"node_id\":");
    region__put_str(b, rg->node_id);
    buf_puts(b, ",\"region\":");
    region__put_str(b, rg->region);
    buf_puts(b, tail);
}

/*
 * A retry of a known token (this node's window, or the counter's token set): the first
 * answer again (appended to rg->out), or 409 when the amount differs.
 * @return 1 when answered (r says how), 0 when unknown.
 */
static int incr_retry(struct region *rg, const struct incr_body *ib, const char *token, size_t tlen,
                      uint32_t id, double now, const char *head, struct incr_result *r)
{
    struct dedup_answer prev;
    int known = token && dedup_get(rg->dedup, ib->name, ib->nlen, token, tlen, now, &prev);
    int64_t tok_amount;
    int tok_settled;
    if (token && !known && id != GSTORE_NONE &&
        tokset_get(rg->tokset, id, token, tlen, &tok_amount, &tok_settled)) {
        known = 1; /* taken by another region, for this token's home: merged here */
        prev = (struct dedup_answer){tok_amount, DEDUP_ELSEWHERE, 0};
    }
    if (!known)
        return 0;
    if (prev.amount != ib->amount) {
        region__incr_error(r, 409, "idempotency_conflict",
                           "idempotency_token was used with amount %" PRId64
                           " on this counter, not %" PRId64,
                           prev.amount, ib->amount);
        return 1;
    }
    if (prev.local_count == DEDUP_ELSEWHERE || prev.local_count == DEDUP_SETTLED) {
        /* Not applied to this node's entry: answer with the counts here. */
        const struct gcounter *pc = id == GSTORE_NONE ? NULL : gstore_counter(rg->store, id);
        prev.local_count = region__local_of(rg, pc);
        prev.total_count = region__total_of(rg, pc, id);
    }
    put_incr_answer(rg, head, ib->name, ib->nlen, prev.local_count, prev.total_count,
                    ",\"duplicate\":true}");
    /* The first request's record may not be durable yet: neither is this answer. */
    r->status = 200;
    r->pos = rg->wal ? wal_position(rg->wal) : 0;
    return 1;
}

/*
 * Applies a new increment to counter id: to this node's entry, or (not this token's home)
 * as a pending element of the counter's token set, which the home applies (once) when it
 * learns it; it counts in this node's total now. @return 0, or a GSTORE_E* code.
 */
static int incr_apply(struct region *rg, uint32_t id, const char *token, size_t tlen,
                      int64_t amount, int pending)
{
    int64_t sum;
    if (!pending)
        return gstore_incr(rg->store, id, rg->self, amount);
    /* The held increments of a counter are bounded like a replica's own entry. */
    if (amount == INT64_MIN || __builtin_add_overflow(tokset_pending(rg->tokset, id), amount, &sum))
        return GSTORE_EOVERFLOW;
    tokset_merge(rg->tokset, id, token, tlen, amount, 0, gstore_touch(rg->store, id));
    return 0;
}

/* Remembers, logs and counts an applied increment, and appends its answer to rg->out.
 * @return the log position the answer waits for. */
static uint64_t incr_done(struct region *rg, const struct incr_body *ib, const char *token,
                          size_t tlen, uint32_t id, int pending, double now, const char *head)
{
    const struct gcounter *c = gstore_counter(rg->store, id);
    struct dedup_answer a = {ib->amount, region__local_of(rg, c), region__total_of(rg, c, id)};
    struct dedup_answer remembered = a;
    if (pending) {
        remembered.local_count = DEDUP_ELSEWHERE;
        metric_add(rg->m_tok_pending, 1);
    }
    if (token)
        dedup_put(rg->dedup, ib->name, ib->nlen, token, tlen, now, &remembered);
    uint64_t pos =
        rg->wal ? wal_append(rg->wal, rg->store, id, token, tlen, token ? &remembered : NULL, now)
                : 0;

    region__top_count(rg, id, ib->amount, a.total_count);
    const char *labels[3] = {"counter", rg->region, ib->name};
    metric_add(metric_series(rg->m_incr, labels), 1);
    put_incr_answer(rg, head, ib->name, ib->nlen, a.local_count, a.total_count,
                    pending ? ",\"pending\":true}" : "}");
    return pos;
}

/* region__incr_apply with the counter's id already looked up (GSTORE_NONE: not yet). */
static int incr_apply_id(struct region *rg, const struct incr_body *ib, const char *token,
                         size_t tlen, uint32_t id, double now, const char *head,
                         struct incr_result *r)
{
    const char *name = ib->name;
    if (incr_retry(rg, ib, token, tlen, id, now, head, r))
        return r->status;
    if (id == GSTORE_NONE && ib->amount == INT64_MIN) {
        region__incr_error(r, 409, "overflow", "counter %s would leave the signed 64-bit range",
                           name);
        return r->status;
    }
    if (id == GSTORE_NONE)
        id = gstore_create(rg->store, name, ib->nlen);
    int pending = token && !region__is_home(rg, token, tlen);
    int rc = incr_apply(rg, id, token, tlen, ib->amount, pending);
    if (rc == GSTORE_EOVERFLOW) {
        region__incr_error(r, 409, "overflow",
                           "counter %s would leave the signed 64-bit range; nothing was applied",
                           name);
        return r->status;
    }
    if (rc == GSTORE_EFULL) {
        region__incr_error(r, 409, "too_many_replicas", "counter %s has too many node ids", name);
        return r->status;
    }
    r->status = 200;
    r->pos = incr_done(rg, ib, token, tlen, id, pending, now, head);
    return 200;
}

int region__incr_apply(struct region *rg, const struct incr_body *ib, const char *token,
                       size_t tlen, double now, const char *head, struct incr_result *r)
{
    uint32_t id = gstore_find(rg->store, ib->name, ib->nlen);
    return incr_apply_id(rg, ib, token, tlen, id, now, head, r);
}

void region__h_increment(void *role, struct http_request *req)
{
    struct region *rg = role;
    struct incr_body ib;
    struct incr_result r;
    const char *token;
    size_t tlen;
    if (reqbody_increment(&rg->parser, req, &ib) < 0)
        return;
    if (incr_token(ib.root, &token, &tlen, &r) < 0) {
        http_respond_error(req, r.status, r.code, "%s", r.detail);
        return;
    }
    if (req->span) {
        trace_span_attr_str(req->span, "counter.name", ib.name, ib.nlen);
        trace_span_attr_int(req->span, "counter.amount", ib.amount);
    }
    /* One lookup for both: reserving room in the log changes no counter. */
    uint32_t id = gstore_find(rg->store, ib.name, ib.nlen);
    if (rg->wal && region__reserve_log(rg, req, region__incr_record_max(rg, id, ib.nlen, tlen)) < 0)
        return;
    if (incr_apply_id(rg, &ib, token, tlen, id, clock_unix_s(), "{", &r) != 200) {
        http_respond_error(req, r.status, r.code, "%s", r.detail);
        return;
    }
    region__respond_durable(rg, req, r.pos);
}
