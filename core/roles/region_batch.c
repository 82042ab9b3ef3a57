/*
 * region_batch.c - POST /increments on a region node: many increments in one request.
 *
 * {"increments":[{counter_name, amount, idempotency_token}, ...]}: the body is parsed once,
 * every item is checked, room in the log is reserved for all of them, then each is applied,
 * remembered, logged and answered exactly as POST /increment would (region_incr.c), in
 * order, into one answer that leaves once the last record is durable. A body that is not a
 * batch changes nothing; a bad item changes nothing but itself. It must never answer an
 * item differently from POST /increment, nor acknowledge anything before its record.
 */
#include "region_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../base/clock.h"
#include "../base/mem.h"
#include "../net/http.h"
#include "../obs/metrics.h"
#include "../obs/trace.h"
#include "reqbody.h"

/* The most items of one batch (more: 413), and the body that can hold them (1000 items of
 * the largest name and token, escaped, fit in it). */
#define BATCH_MAX 1000
#define BATCH_BODY_MAX (2u << 20)
/* Items kept on the stack; a larger batch takes them from the heap. */
#define BATCH_STACK 64

struct batch_item {
    struct incr_body ib;
    const char *token;
    size_t tlen;
    int ok; /* its fields are good: it is applied */
};

size_t region__batch_body_limit(void)
{
    return BATCH_BODY_MAX;
}

/* The batch's items. @return them, or NULL after answering 400 or 413 (nothing applied). */
static const struct json *batch_items(struct region *rg, struct http_request *req)
{
    const struct json *root = reqbody_object(&rg->parser, req);
    if (!root)
        return NULL;
    const struct json *items = json_get(root, "increments");
    if (!items || items->type != JSON_ARR) {
        http_respond_error(req, 400, "bad_field",
                           "increments must be an array of increments, not %s",
                           items ? json_type_name(items->type) : "missing");
        return NULL;
    }
    if (items->len == 0) {
        http_respond_error(req, 400, "bad_field", "increments must hold 1-%d items, not 0",
                           BATCH_MAX);
        return NULL;
    }
    if (items->len > BATCH_MAX) {
        http_respond_error(req, 413, "too_large", "increments holds %u items: at most %d a batch",
                           (unsigned)items->len, BATCH_MAX);
        return NULL;
    }
    return items;
}

/* Reads item i's fields. @return 0, or -1 with r a 400 naming the item. */
static int check_item(const struct json *v, size_t i, struct batch_item *it, struct incr_result *r)
{
    it->ok = 0;
    if (v->type != JSON_OBJ) {
        region__incr_error(r, 400, "bad_field", "increments[%zu] must be an object, not %s", i,
                           json_type_name(v->type));
        return -1;
    }
    if (region__incr_item(v, &it->ib, &it->token, &it->tlen, r) < 0) {
        char d[sizeof r->detail];
        memcpy(d, r->detail, sizeof d);
        region__incr_error(r, r->status, r->code, "increments[%zu].%s", i, d);
        return -1;
    }
    it->ok = 1;
    return 0;
}

/* counterd_batch_items_total{status}: n more items of POST /increments answered status. */
static void count_items(struct region *rg, int status, size_t n)
{
    static const char name[] = "counterd_batch_items_total";
    struct metric *m = metrics_find(rg->metrics, name);
    if (!m)
        m = metrics_add(rg->metrics, METRIC_COUNTER, name,
                        "Items of POST /increments, by the status each was answered", "status",
                        NULL, 0);
    char st[12];
    snprintf(st, sizeof st, "%d", status);
    const char *labels[1] = {st};
    metric_add(metric_series(m, labels), (double)n);
}

/* {"status":<s>,"error":<code>,"detail":<detail>}: an item's error, as POST /increment's. */
static void put_item_error(struct region *rg, const struct incr_result *r)
{
    struct buf *b = &rg->out;
    buf_puts(b, "{\"status\":");
    buf_i64(b, r->status);
    buf_puts(b, ",\"error\":");
    region__put_str(b, r->code);
    buf_puts(b, ",\"detail\":");
    region__put_str(b, r->detail);
    buf_putc(b, '}');
}

/* Checks every item and reserves room in the log for the good ones.
 * @return 0, or -1 after answering 503 (nothing applied). */
static int check_all(struct region *rg, struct http_request *req, const struct json *items,
                     struct batch_item *its)
{
    size_t need = 0;
    struct incr_result r;
    for (size_t i = 0; i < items->len; i++) {
        struct batch_item *it = &its[i];
        if (check_item(&items->u.items[i], i, it, &r) < 0 || !rg->wal)
            continue;
        uint32_t fid = gstore_find(rg->store, it->ib.name, it->ib.nlen);
        need += region__incr_record_max(rg, fid, it->ib.nlen, it->tlen);
    }
    return rg->wal ? region__reserve_log(rg, req, need) : 0;
}

/*
 * {"results":[<item answer>, ...],"ok":<n>,"failed":<n>,"node_id","region"}: 200 once
 * the body is a batch, whatever became of each item; each result is what POST /increment
 * would have answered, with its "status".
 */
void region__h_increments(void *role, struct http_request *req)
{
    struct region *rg = role;
    const struct json *items = batch_items(rg, req);
    if (!items)
        return;
    struct batch_item stack[BATCH_STACK];
    struct batch_item *its = items->len <= BATCH_STACK ? stack : xmalloc(items->len * sizeof *its);
    if (req->span)
        trace_span_attr_int(req->span, "counter.batch_size", items->len);
    if (check_all(rg, req, items, its) < 0)
        goto done;
    double now = clock_unix_s();
    uint64_t pos = 0;
    size_t failed = 0;
    struct incr_result r;
    buf_puts(&rg->out, "{\"results\":[");
    for (size_t i = 0; i < items->len; i++) {
        if (i)
            buf_putc(&rg->out, ',');
        struct batch_item *it = &its[i];
        if (!it->ok)
            check_item(&items->u.items[i], i, it, &r); /* its error again, to answer */
        else if (region__incr_apply(rg, &it->ib, it->token, it->tlen, now, "{\"status\":200,",
                                    &r) == 200) {
            pos = r.pos > pos ? r.pos : pos;
            continue;
        } else {
            char d[sizeof r.detail];
            memcpy(d, r.detail, sizeof d);
            region__incr_error(&r, r.status, r.code, "increments[%zu]: %s", i, d);
        }
        failed++;
        count_items(rg, r.status, 1);
        put_item_error(rg, &r);
    }
    if (items->len > failed)
        count_items(rg, 200, items->len - failed);
    buf_printf(&rg->out, "],\"ok\":%zu,\"failed\":%zu,", items->len - failed, failed);
    region__put_identity(rg, &rg->out);
    buf_putc(&rg->out, '}');
    region__respond_durable(rg, req, pos);
done:
    if (its != stack)
        free(its);
}
