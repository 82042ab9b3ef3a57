/*
 * otlp.c - the OTLP/HTTP JSON span exporter (see otlp.h).
 *
 * The exporter owns its own curl client, so its connection to the collector neither
 * competes with replication or the Lua roles' calls nor is cancelled with them. Its own
 * calls are never traced (nothing here starts a span), so exporting cannot feed itself.
 */
#include "otlp.h"

#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../base/log.h"
#include "../base/mem.h"
#include "../obs/trace.h"
#include "client.h"

struct otlp {
    struct event_base *base;
    struct client *client;
    struct client_call *call; /* the POST in flight */
    struct event *timer, *wake_ev;
    char *url;
    int timeout_ms;
    int failures; /* in a row: logged at the first, then every 60th (about once a minute) */
};

static void on_posted(const struct client_result *res, void *arg)
{
    struct otlp *x = arg;
    x->call = NULL;
    int ok = res->status >= 200 && res->status < 300;
    if (!ok) {
        char why[300]; /* a curl error is up to 256 bytes */
        if (res->status)
            snprintf(why, sizeof why, "HTTP %d", res->status);
        else
            snprintf(why, sizeof why, "%s", res->error ? res->error : "no answer");
        if (x->failures++ % 60 == 0)
            log_warn("trace export to %s failed (%s): its spans are dropped", x->url, why);
    } else if (x->failures) {
        log_info("trace export to %s works again", x->url);
        x->failures = 0;
    }
    trace_sent(ok);
    /* A batch that filled up while this one was out goes now, not at the next tick. */
    trace_flush(1);
}

static int send_batch(void *arg, const char *body, size_t len)
{
    struct otlp *x = arg;
    static const char *const headers[] = {"Content-Type: application/json", NULL};
    struct client_call_opts o = {.method = "POST",
                                 .url = x->url,
                                 .body = body,
                                 .body_len = len,
                                 .headers = headers,
                                 .timeout_ms = x->timeout_ms};
    x->call = client_request(x->client, &o, on_posted, x);
    return x->call ? 0 : -1;
}

static void wake(void *arg)
{
    struct otlp *x = arg;
    event_active(x->wake_ev, 0, 0);
}

static void on_wake(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
    trace_flush(1);
}

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
    trace_flush(0);
}

struct otlp *otlp_start(struct event_base *base, const struct otlp_opts *o, char *err,
                        size_t errlen)
{
    const char *ep = o->endpoint;
    if (!ep || (strncmp(ep, "http://", 7) && strncmp(ep, "https://", 8))) {
        snprintf(err, errlen, "the OTLP endpoint '%s' is not an http:// URL", ep ? ep : "");
        return NULL;
    }
    struct otlp *x = xcalloc(1, sizeof *x);
    x->base = base;
    size_t n = strlen(ep);
    while (n && ep[n - 1] == '/')
        n--;
    x->url = xmalloc(n + sizeof "/v1/traces");
    memcpy(x->url, ep, n);
    memcpy(x->url + n, "/v1/traces", sizeof "/v1/traces");
    x->timeout_ms = o->timeout_ms > 0 ? o->timeout_ms : 5000;
    x->client = client_new(base);
    x->wake_ev = event_new(base, -1, 0, on_wake, x);
    x->timer = event_new(base, -1, EV_PERSIST, on_tick, x);

    struct trace_opts to = {.service_name = o->service_name,
                            .resource = o->resource,
                            .batch_spans = o->batch_spans,
                            .queue_spans = o->queue_spans,
                            .metrics = o->metrics,
                            .sender = {send_batch, wake, x}};
    if (trace_init(&to, err, errlen) < 0) {
        otlp_stop(x);
        return NULL;
    }
    int delay = o->delay_ms > 0 ? o->delay_ms : 1000;
    struct timeval tv = {delay / 1000, (delay % 1000) * 1000};
    event_add(x->timer, &tv);
    log_info("tracing on: spans of service %s go to %s", o->service_name, x->url);
    return x;
}

void otlp_stop(struct otlp *x)
{
    if (!x)
        return;
    trace_shutdown();
    if (x->call)
        client_cancel(x->call);
    client_free(x->client);
    event_free(x->timer);
    event_free(x->wake_ev);
    free(x->url);
    free(x);
}
