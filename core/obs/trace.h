/*
 * trace.h - distributed tracing: W3C traceparent in and out, spans, and their batching
 * as OTLP/HTTP JSON bodies.
 *
 * One tracer per process: the one module of the core that is not a handle. Why, precisely:
 *  - A span is the handle. Every call on a span (attributes, children, end, traceparent)
 *    takes the span, and a child could find its tracer through its parent; what needs
 *    the tracer itself is the start of a root or of a span continuing a remote parent
 *    (trace_span_start: 4 call sites, in net/http.c, repl/repl.c and
 *    repl/strong.c) and trace_enabled (11 sites, in those and lua/api_http.c,
 *    lua/api_trace.c). Threading a struct tracer * to them would add a field and a
 *    constructor argument to the HTTP server, replication, the strong leader and the Lua
 *    host, and a parameter through every role that builds them, in modules that otherwise
 *    know nothing of tracing, to remove one global.
 *  - There is never a second tracer to choose: a process plays one role, exports to one
 *    collector, under one service.name, from one thread (the event loop's; the log's
 *    fsync thread never traces).
 *  - Off must cost one load and a branch on the request path (trace__on below); a handle
 *    would cost the same NULL test at the same sites.
 * What it costs: a test that turns tracing on turns it off again (trace_shutdown) before
 * the next case, and spans may not be started from another thread.
 * With tracing off (trace_init never
 * called) every call below is a check of one flag: trace_span_start returns NULL, and
 * every function taking a span accepts NULL and does nothing, so call sites need no
 * conditions of their own.
 *
 * A span is encoded when it ends and queued in batches; a bounded number of batches wait,
 * and a span that finds them all full is dropped and counted. Sending a batch is the
 * role's business: it hands a sender (typically an HTTP POST through the event loop's
 * curl client, see net/otlp.h) that reports the outcome later with trace_sent. At most
 * one batch is in flight; nothing here ever blocks or grows without bound.
 *
 * Plain C: no libevent, Lua or curl; never includes net/.
 */
#ifndef COUNTERD_OBS_TRACE_H
#define COUNTERD_OBS_TRACE_H

#include <stddef.h>
#include <stdint.h>

struct metrics;
struct trace_span;

/* "00-" 32 hex "-" 16 hex "-" 2 hex */
#define TRACEPARENT_LEN 55
/* "traceparent: " and the value, without CRLF */
#define TRACE_HEADER_LEN (13 + TRACEPARENT_LEN)

#define TRACE_FLAG_SAMPLED 1u

/* A span's identity as it travels between processes. */
struct trace_ctx {
    uint8_t trace_id[16];
    uint8_t span_id[8];
    uint8_t flags; /* TRACE_FLAG_SAMPLED: the caller records this trace */
};

/* OTLP's SpanKind values. */
enum trace_kind { TRACE_INTERNAL = 1, TRACE_SERVER = 2, TRACE_CLIENT = 3 };

/*
 * Parses a traceparent header value (W3C Trace Context, level 1): version 00 exactly, a
 * later version with its extra fields ignored, surrounding blanks allowed; ids in
 * lower-case hex and not all zero; version ff refused.
 * @return 0 with *out filled, or -1 when s is not a valid traceparent.
 */
int trace_parse_traceparent(const char *s, size_t len, struct trace_ctx *out);

/* Writes "00-<trace id>-<span id>-<flags>" and a NUL into out (TRACEPARENT_LEN + 1 bytes). */
void trace_format_traceparent(const struct trace_ctx *c, char *out);

/* ---------------------------------------------------------------- the tracer */

struct trace_sender {
    /*
     * Sends one batch: body[0..len) is a complete OTLP/HTTP JSON request body, valid only
     * during the call. Return 0 once the send has started, and call trace_sent(ok) when it
     * ends (possibly before returning); return -1 when it cannot start (the batch's spans
     * are dropped and counted).
     */
    int (*send)(void *arg, const char *body, size_t len);
    /* A batch is full: flush soon, from the loop (not from inside this call). May be NULL. */
    void (*wake)(void *arg);
    void *arg;
};

struct trace_opts {
    const char *service_name; /* resource attribute service.name; required */
    /* More resource attributes: key, value, key, value, ..., NULL. May be NULL. */
    const char *const *resource;
    int batch_spans; /* spans per batch; default 512 */
    int queue_spans; /* spans waiting at most (rounded up to whole batches); default 2048 */
    /* counterd_trace_spans_exported_total, counterd_trace_spans_dropped_total{reason},
     * counterd_trace_spans_queued are registered here. May be NULL. */
    struct metrics *metrics;
    struct trace_sender sender;
};

/* Internal: whether tracing is on (read through trace_enabled). */
extern int trace__on;

static inline int trace_enabled(void)
{
    return trace__on;
}

/*
 * Turns tracing on for this process.
 * @return 0, or -1 with a sentence in err (tracing is then off).
 */
int trace_init(const struct trace_opts *o, char *err, size_t errlen);
/* Turns tracing off and drops what is queued. Spans still open may end later: they are
 * freed, not exported. Safe to call when tracing is off. */
void trace_shutdown(void);

/*
 * Sends the oldest waiting batch when no send is in flight (only a full one when
 * only_full). Call it from a timer (every second or so) and after a wake.
 * @return 1 when a send started, 0 when there was nothing to send or a send is in
 *         flight, -1 when the sender refused (the batch was dropped).
 */
int trace_flush(int only_full);
/* The sender's report on the batch in flight: ok = the collector accepted it. */
void trace_sent(int ok);

struct trace_stats {
    uint64_t exported, dropped_queue_full, dropped_export_failed;
    int queued, inflight;
};
void trace_get_stats(struct trace_stats *out);

/* ---------------------------------------------------------------- spans */

/*
 * Starts a span now: a child of parent (same trace, parent's sampled flag), or the root
 * of a new, sampled trace when parent is NULL. name is copied (cut at 127 bytes).
 * @return the span, or NULL when tracing is off. A span of an unsampled trace exists
 *         (its context propagates) but is never exported.
 */
struct trace_span *trace_span_start(const char *name, enum trace_kind kind,
                                    const struct trace_ctx *parent);
/* A child of span parent; a new root when parent is NULL (e.g. a request that came in
 * before tracing was on). NULL when tracing is off. */
struct trace_span *trace_span_child(const struct trace_span *parent, const char *name,
                                    enum trace_kind kind);
/* The span's context (its own span id), or NULL for a NULL span. */
const struct trace_ctx *trace_span_ctx(const struct trace_span *s);
/* Writes the traceparent that makes the receiver's spans children of s, NUL-terminated,
 * into out (TRACEPARENT_LEN + 1 bytes). @return 0, or -1 for a NULL span (out untouched). */
int trace_span_traceparent(const struct trace_span *s, char *out);

void trace_span_set_name(struct trace_span *s, const char *name);
/* Names a server span after its route ("POST /counter/{name}") and sets http.route;
 * method NULL keeps the first word of the span's name (the server's "<METHOD> <path>"). */
void trace_span_route(struct trace_span *s, const char *method, const char *route);

/* Attributes; strings are cut at 256 bytes, and a span keeps at most 4 KiB of them. */
void trace_span_attr_str(struct trace_span *s, const char *key, const char *v, size_t len);
void trace_span_attr_cstr(struct trace_span *s, const char *key, const char *v);
void trace_span_attr_int(struct trace_span *s, const char *key, int64_t v);
void trace_span_attr_bool(struct trace_span *s, const char *key, int v);

/* Marks the span failed (status ERROR) with a message. */
void trace_span_error(struct trace_span *s, const char *msg);
/*
 * Records an HTTP outcome: http.status_code when status is not 0, and status ERROR when
 * no answer came (status 0; err says why), on 5xx, and on 4xx of a client span.
 */
void trace_span_http_status(struct trace_span *s, int status, const char *err);

/* Ends the span now: it is queued for export (or dropped and counted) and freed. */
void trace_span_end(struct trace_span *s);

#endif
