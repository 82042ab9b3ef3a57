/*
 * otlp.h - the OTLP/HTTP span exporter: turns tracing on (obs/trace.h) and sends its
 * batches as JSON (POST <endpoint>/v1/traces) through a curl client on the event loop.
 *
 * A timer flushes every delay_ms; a full batch is flushed on the next loop iteration.
 * One POST is in flight at a time, with a timeout: while the collector is slow or down,
 * batches queue up to the tracer's bound and then spans are dropped and counted
 * (counterd_trace_spans_dropped_total). Nothing here runs on a request's path: requests
 * only append their spans to the tracer's queue.
 */
#ifndef COUNTERD_NET_OTLP_H
#define COUNTERD_NET_OTLP_H

#include <stddef.h>

struct event_base;
struct metrics;
struct otlp;

struct otlp_opts {
    const char *endpoint;        /* base URL, e.g. http://127.0.0.1:4318 ("/v1/traces" added) */
    const char *service_name;    /* resource service.name */
    const char *const *resource; /* more resource attributes: key, value, ..., NULL */
    int batch_spans;             /* default 512 */
    int queue_spans;             /* default 2048 */
    int delay_ms;                /* between flushes; default 1000 */
    int timeout_ms;              /* one POST; default 5000 */
    struct metrics *metrics;     /* the tracer's metrics go here */
};

/*
 * Starts the exporter and turns tracing on for the process.
 * @return the exporter, or NULL with a sentence in err.
 */
struct otlp *otlp_start(struct event_base *base, const struct otlp_opts *o, char *err,
                        size_t errlen);
/* Turns tracing off, cancels the POST in flight and drops what is queued. NULL is fine. */
void otlp_stop(struct otlp *x);

#endif
