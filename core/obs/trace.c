/*
 * trace.c - traceparent, spans, and OTLP/HTTP JSON batches (see trace.h).
 *
 * A span is encoded into JSON when it ends and appended to the batch being filled; the
 * batches form a ring of queue_spans / batch_spans slots, each one a request body in the
 * making (it starts with the resourceSpans/scopeSpans envelope). trace_flush closes the
 * oldest and hands it to the sender, which copies it; the slot is free again at once, and
 * the spans count as exported or dropped when the sender reports back. Must never include
 * net/ or block: the sender does the I/O.
 */
#include "trace.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../base/buf.h"
#include "../base/hash.h"
#include "../base/hex.h"
#include "../base/mem.h"
#include "metrics.h"

#define NAME_MAX_BYTES 127
#define ATTR_STR_MAX 256
#define ATTRS_MAX_BYTES 4096
#define STATUS_MSG_MAX 200

enum { ST_UNSET = 0, ST_ERROR = 2 }; /* OTLP status codes */

struct trace_span {
    struct trace_ctx ctx;
    uint8_t parent_id[8];
    uint8_t has_parent, kind, status;
    uint64_t start_ns;
    char name[NAME_MAX_BYTES + 1];
    char status_msg[STATUS_MSG_MAX + 1];
    struct buf attrs; /* JSON attribute objects, comma-separated */
};

struct batch {
    struct buf body; /* the envelope's head, then JSON span objects, comma-separated */
    int n;
};

static struct {
    struct buf envelope_head; /* {"resourceSpans":[{"resource":...,"spans":[ */
    struct batch *ring;
    int nbatches, batch_spans;
    int head, count; /* ring[head] is the oldest; count slots in use (the last is filling) */
    int queued, inflight;
    struct trace_sender sender;
    struct trace_stats stats;
    struct metric_series *m_exported, *m_dropped_full, *m_dropped_failed;
} T;

int trace__on;

/* ---------------------------------------------------------------- traceparent */

/* Reads n bytes of hex from s into out[n/2]; @return 1 when some byte is not zero, 0 when
 * all are, -1 on a bad digit. */
static int read_hex(const char *s, size_t n, uint8_t *out)
{
    int nonzero = 0;
    for (size_t i = 0; i < n; i += 2) {
        /* upper case is not valid in a traceparent */
        int hi = hex_val_lower((unsigned char)s[i]), lo = hex_val_lower((unsigned char)s[i + 1]);
        if (hi < 0 || lo < 0)
            return -1;
        out[i / 2] = (uint8_t)(hi << 4 | lo);
        nonzero |= out[i / 2] != 0;
    }
    return nonzero;
}

int trace_parse_traceparent(const char *s, size_t len, struct trace_ctx *out)
{
    if (!s)
        return -1;
    while (len && (*s == ' ' || *s == '\t')) {
        s++;
        len--;
    }
    while (len && (s[len - 1] == ' ' || s[len - 1] == '\t'))
        len--;
    if (len < TRACEPARENT_LEN || s[2] != '-' || s[35] != '-' || s[52] != '-')
        return -1;
    uint8_t version;
    if (read_hex(s, 2, &version) < 0 || version == 0xff)
        return -1;
    /* Version 00 is exactly 55 bytes; a later version may append "-..." fields. */
    if (version == 0 ? len != TRACEPARENT_LEN : (len > TRACEPARENT_LEN && s[55] != '-'))
        return -1;
    struct trace_ctx c;
    if (read_hex(s + 3, 32, c.trace_id) != 1 || read_hex(s + 36, 16, c.span_id) != 1 ||
        read_hex(s + 53, 2, &c.flags) < 0)
        return -1;
    *out = c;
    return 0;
}

static void put_hex(char *out, const uint8_t *in, size_t n)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[in[i] >> 4];
        out[2 * i + 1] = digits[in[i] & 15];
    }
}

void trace_format_traceparent(const struct trace_ctx *c, char *out)
{
    memcpy(out, "00-", 3);
    put_hex(out + 3, c->trace_id, 16);
    out[35] = '-';
    put_hex(out + 36, c->span_id, 8);
    out[52] = '-';
    put_hex(out + 53, &c->flags, 1);
    out[TRACEPARENT_LEN] = '\0';
}

/* ---------------------------------------------------------------- JSON pieces */

static void json_hex(struct buf *b, const uint8_t *id, size_t n)
{
    char *p = buf_reserve(b, 2 * n + 2);
    p[0] = '"';
    put_hex(p + 1, id, n);
    p[2 * n + 1] = '"';
    b->len += 2 * n + 2;
}

static void attr_key(struct buf *b, const char *key)
{
    if (b->len)
        buf_putc(b, ',');
    buf_puts(b, "{\"key\":");
    buf_json_str(b, key, strlen(key));
    buf_puts(b, ",\"value\":{");
}

static void attr_string(struct buf *b, const char *key, const char *v, size_t len)
{
    attr_key(b, key);
    buf_puts(b, "\"stringValue\":");
    buf_json_str(b, v, len > ATTR_STR_MAX ? ATTR_STR_MAX : len);
    buf_puts(b, "}}");
}

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* ---------------------------------------------------------------- the tracer */

static double queued_spans(void *arg)
{
    (void)arg;
    return T.queued;
}

int trace_init(const struct trace_opts *o, char *err, size_t errlen)
{
    if (!o->service_name || !*o->service_name) {
        snprintf(err, errlen, "tracing needs a service name");
        return -1;
    }
    if (!o->sender.send) {
        snprintf(err, errlen, "tracing needs a sender");
        return -1;
    }
    trace_shutdown();
    memset(&T, 0, sizeof T);
    T.batch_spans = o->batch_spans > 0 ? o->batch_spans : 512;
    int queue = o->queue_spans > 0 ? o->queue_spans : 2048;
    if (queue < T.batch_spans)
        queue = T.batch_spans;
    T.nbatches = (queue + T.batch_spans - 1) / T.batch_spans;
    T.ring = xcalloc((size_t)T.nbatches, sizeof *T.ring);
    T.sender = o->sender;

    struct buf res = BUF_INIT;
    attr_string(&res, "service.name", o->service_name, strlen(o->service_name));
    for (const char *const *kv = o->resource; kv && kv[0] && kv[1]; kv += 2)
        attr_string(&res, kv[0], kv[1], strlen(kv[1]));
    attr_string(&res, "telemetry.sdk.name", "counterd", 8);
    attr_string(&res, "telemetry.sdk.language", "c", 1);
    struct buf *h = &T.envelope_head;
    buf_puts(h, "{\"resourceSpans\":[{\"resource\":{\"attributes\":[");
    buf_append(h, res.data, res.len);
    buf_puts(h, "]},\"scopeSpans\":[{\"scope\":{\"name\":\"counterd\"},\"spans\":[");
    buf_free(&res);

    if (o->metrics) {
        T.m_exported = metric_only(metrics_add(o->metrics, METRIC_COUNTER,
                                               "counterd_trace_spans_exported_total",
                                               "Spans the collector accepted", NULL, NULL, 0));
        struct metric *dropped = metrics_add(
            o->metrics, METRIC_COUNTER, "counterd_trace_spans_dropped_total",
            "Spans not exported: the queue was full, or the collector failed or was too slow",
            "reason", NULL, 0);
        const char *full[1] = {"queue_full"}, *failed[1] = {"export_failed"};
        T.m_dropped_full = metric_series(dropped, full);
        T.m_dropped_failed = metric_series(dropped, failed);
        metric_set_fn(
            metric_only(metrics_add(o->metrics, METRIC_GAUGE, "counterd_trace_spans_queued",
                                    "Spans waiting for export", NULL, NULL, 0)),
            queued_spans, NULL);
    }
    trace__on = 1;
    return 0;
}

void trace_shutdown(void)
{
    if (!trace__on)
        return;
    trace__on = 0;
    for (int i = 0; i < T.nbatches; i++)
        buf_free(&T.ring[i].body);
    free(T.ring);
    T.ring = NULL;
    buf_free(&T.envelope_head);
}

static void count_dropped(int full, int n)
{
    if (full) {
        T.stats.dropped_queue_full += (uint64_t)n;
        if (T.m_dropped_full)
            metric_add(T.m_dropped_full, n);
    } else {
        T.stats.dropped_export_failed += (uint64_t)n;
        if (T.m_dropped_failed)
            metric_add(T.m_dropped_failed, n);
    }
}

int trace_flush(int only_full)
{
    if (!trace__on || T.inflight || T.count == 0)
        return 0;
    struct batch *b = &T.ring[T.head];
    if (b->n == 0 || (only_full && b->n < T.batch_spans))
        return 0;
    buf_puts(&b->body, "]}]}]}");
    int n = b->n;
    b->n = 0;
    T.head = (T.head + 1) % T.nbatches;
    T.count--;
    T.queued -= n;
    T.inflight = n;
    /* The slot is not reused before this returns: nothing here ends a span. */
    int rc = T.sender.send(T.sender.arg, b->body.data, b->body.len);
    buf_reset(&b->body);
    buf_trim(&b->body, 1u << 20);
    if (rc < 0) {
        if (T.inflight) { /* not already reported by the sender */
            T.inflight = 0;
            count_dropped(0, n);
        }
        return -1;
    }
    return 1;
}

void trace_sent(int ok)
{
    int n = T.inflight;
    T.inflight = 0;
    if (!trace__on || n == 0)
        return;
    if (ok) {
        T.stats.exported += (uint64_t)n;
        if (T.m_exported)
            metric_add(T.m_exported, n);
    } else {
        count_dropped(0, n);
    }
}

void trace_get_stats(struct trace_stats *out)
{
    *out = T.stats;
    out->queued = T.queued;
    out->inflight = T.inflight;
}

/* Queues an ended span's JSON, or drops it when every batch is full. */
static void enqueue(const struct trace_span *s, uint64_t end_ns)
{
    struct batch *b = T.count ? &T.ring[(T.head + T.count - 1) % T.nbatches] : NULL;
    if (!b || b->n >= T.batch_spans) {
        if (T.count == T.nbatches) {
            count_dropped(1, 1);
            return;
        }
        b = &T.ring[(T.head + T.count) % T.nbatches];
        T.count++;
        buf_reset(&b->body);
        buf_append(&b->body, T.envelope_head.data, T.envelope_head.len);
        b->n = 0;
    }
    struct buf *o = &b->body;
    if (b->n)
        buf_putc(o, ',');
    buf_puts(o, "{\"traceId\":");
    json_hex(o, s->ctx.trace_id, 16);
    buf_puts(o, ",\"spanId\":");
    json_hex(o, s->ctx.span_id, 8);
    if (s->has_parent) {
        buf_puts(o, ",\"parentSpanId\":");
        json_hex(o, s->parent_id, 8);
    }
    buf_puts(o, ",\"name\":");
    buf_json_str(o, s->name, strlen(s->name));
    buf_puts(o, ",\"kind\":");
    buf_u64(o, s->kind);
    buf_puts(o, ",\"startTimeUnixNano\":\"");
    buf_u64(o, s->start_ns);
    buf_puts(o, "\",\"endTimeUnixNano\":\"");
    buf_u64(o, end_ns);
    buf_puts(o, "\",\"attributes\":[");
    if (s->attrs.len)
        buf_append(o, s->attrs.data, s->attrs.len);
    buf_puts(o, "],\"status\":{");
    if (s->status == ST_ERROR) {
        buf_puts(o, "\"code\":2,\"message\":");
        buf_json_str(o, s->status_msg, strlen(s->status_msg));
    }
    buf_puts(o, "}}");
    b->n++;
    T.queued++;
    if (b->n == T.batch_spans && !T.inflight && T.sender.wake)
        T.sender.wake(T.sender.arg);
}

/* ---------------------------------------------------------------- spans */

/* Copies name[0..len) into dst (NAME_MAX_BYTES + 1 bytes), cut to fit, NUL-terminated. */
static void copy_name(char *dst, const char *name, size_t len)
{
    if (len > NAME_MAX_BYTES)
        len = NAME_MAX_BYTES;
    memcpy(dst, name, len);
    dst[len] = '\0';
}

/* A random id; all zeros is invalid in W3C Trace Context, so it is never returned. */
static void random_id(uint8_t *out, size_t n)
{
    int nonzero;
    do {
        nonzero = 0;
        for (size_t i = 0; i < n; i += 8) {
            uint64_t v = hash_fast_random_u64();
            memcpy(out + i, &v, n - i < 8 ? n - i : 8);
            nonzero |= v != 0;
        }
    } while (!nonzero);
}

struct trace_span *trace_span_start(const char *name, enum trace_kind kind,
                                    const struct trace_ctx *parent)
{
    if (!trace__on)
        return NULL;
    struct trace_span *s = xcalloc(1, sizeof *s);
    if (parent) {
        memcpy(s->ctx.trace_id, parent->trace_id, sizeof s->ctx.trace_id);
        memcpy(s->parent_id, parent->span_id, sizeof s->parent_id);
        s->ctx.flags = parent->flags;
        s->has_parent = 1;
    } else {
        random_id(s->ctx.trace_id, sizeof s->ctx.trace_id);
        s->ctx.flags = TRACE_FLAG_SAMPLED;
    }
    random_id(s->ctx.span_id, sizeof s->ctx.span_id);
    s->kind = (uint8_t)kind;
    s->start_ns = now_ns();
    copy_name(s->name, name, strlen(name));
    return s;
}

struct trace_span *trace_span_child(const struct trace_span *parent, const char *name,
                                    enum trace_kind kind)
{
    if (!trace__on)
        return NULL;
    return trace_span_start(name, kind, parent ? &parent->ctx : NULL);
}

const struct trace_ctx *trace_span_ctx(const struct trace_span *s)
{
    return s ? &s->ctx : NULL;
}

int trace_span_traceparent(const struct trace_span *s, char *out)
{
    if (!s)
        return -1;
    trace_format_traceparent(&s->ctx, out);
    return 0;
}

void trace_span_set_name(struct trace_span *s, const char *name)
{
    if (s)
        copy_name(s->name, name, strlen(name));
}

void trace_span_route(struct trace_span *s, const char *method, const char *route)
{
    if (!s)
        return;
    /* A server span is named "<METHOD> <path>": method NULL keeps its first word. */
    char name[NAME_MAX_BYTES + 1];
    size_t ml = method ? strlen(method) : strcspn(s->name, " ");
    if (ml > 31)
        ml = 31;
    size_t rl = strlen(route);
    if (ml + 1 + rl > NAME_MAX_BYTES)
        rl = NAME_MAX_BYTES - ml - 1;
    memcpy(name, method ? method : s->name, ml);
    name[ml] = ' ';
    memcpy(name + ml + 1, route, rl);
    name[ml + 1 + rl] = '\0';
    memcpy(s->name, name, ml + rl + 2);
    trace_span_attr_cstr(s, "http.route", route);
}

/* Whether one more attribute fits the span's budget. */
static int attr_room(struct trace_span *s)
{
    return s && s->attrs.len < ATTRS_MAX_BYTES;
}

void trace_span_attr_str(struct trace_span *s, const char *key, const char *v, size_t len)
{
    if (attr_room(s))
        attr_string(&s->attrs, key, v, len);
}

void trace_span_attr_cstr(struct trace_span *s, const char *key, const char *v)
{
    if (attr_room(s))
        attr_string(&s->attrs, key, v, strlen(v));
}

void trace_span_attr_int(struct trace_span *s, const char *key, int64_t v)
{
    if (!attr_room(s))
        return;
    /* OTLP/JSON writes 64-bit integers as strings. */
    attr_key(&s->attrs, key);
    buf_puts(&s->attrs, "\"intValue\":\"");
    buf_i64(&s->attrs, v);
    buf_puts(&s->attrs, "\"}}");
}

void trace_span_attr_bool(struct trace_span *s, const char *key, int v)
{
    if (!attr_room(s))
        return;
    attr_key(&s->attrs, key);
    buf_puts(&s->attrs, v ? "\"boolValue\":true}}" : "\"boolValue\":false}}");
}

void trace_span_error(struct trace_span *s, const char *msg)
{
    if (!s)
        return;
    s->status = ST_ERROR;
    snprintf(s->status_msg, sizeof s->status_msg, "%s", msg ? msg : "");
}

void trace_span_http_status(struct trace_span *s, int status, const char *err)
{
    if (!s)
        return;
    if (status == 0) {
        trace_span_error(s, err ? err : "no answer");
        return;
    }
    trace_span_attr_int(s, "http.status_code", status);
    if (status >= 500 || (status >= 400 && s->kind == TRACE_CLIENT)) {
        char msg[32];
        snprintf(msg, sizeof msg, "HTTP %d", status);
        trace_span_error(s, msg);
    }
}

void trace_span_end(struct trace_span *s)
{
    if (!s)
        return;
    if (trace__on && (s->ctx.flags & TRACE_FLAG_SAMPLED))
        enqueue(s, now_ns());
    buf_free(&s->attrs);
    free(s);
}
