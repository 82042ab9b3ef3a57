/*
 * httpmetrics.c - the HTTP server's own metrics (see httpmetrics.h).
 *
 * It reads the server's tallies and never touches a connection.
 */
#include "httpmetrics.h"

#include <stdio.h>
#include <stdlib.h>

#include "../base/mem.h"
#include "../obs/metrics.h"
#include "http.h"

struct http_metrics {
    const struct http_server *srv;
    struct metric *requests;
    struct metric_series *duration, *open, *accepted, *rejected;
};

static void collect(void *arg)
{
    struct http_metrics *hm = arg;
    const struct http_answer_stats *a = http_server_answers(hm->srv);
    for (int i = 0; i < 500; i++) {
        if (!a->by_status[i])
            continue; /* a code never answered has no series */
        char code[8];
        snprintf(code, sizeof code, "%d", i + 100);
        const char *v[1] = {code};
        metric_set(metric_series(hm->requests, v), (double)a->by_status[i]);
    }
    metric_load_histogram(hm->duration, a->by_duration, a->duration_sum_s);
    struct http_server_stats st;
    http_server_stats(hm->srv, &st);
    metric_set(hm->open, st.open);
    metric_set(hm->accepted, (double)st.accepted);
    metric_set(hm->rejected, (double)st.rejected);
}

void httpmetrics_register(struct metrics *reg, const struct http_server *srv)
{
    struct http_metrics *hm = xcalloc(1, sizeof *hm);
    hm->srv = srv;
    hm->requests = metrics_add(reg, METRIC_COUNTER, "counterd_http_requests_total",
                               "HTTP answers written, by status code", "code", NULL, 0);
    hm->duration =
        metric_only(metrics_add(reg, METRIC_HISTOGRAM, "counterd_http_request_duration_seconds",
                                "Time from the first byte of an HTTP request to its answer", NULL,
                                http_duration_bounds_s, HTTP_DURATION_NBOUNDS));
    hm->open = metric_only(metrics_add(reg, METRIC_GAUGE, "counterd_http_connections_open",
                                       "HTTP connections open now", NULL, NULL, 0));
    hm->accepted =
        metric_only(metrics_add(reg, METRIC_COUNTER, "counterd_http_connections_accepted_total",
                                "HTTP connections accepted", NULL, NULL, 0));
    hm->rejected = metric_only(
        metrics_add(reg, METRIC_COUNTER, "counterd_http_connections_rejected_total",
                    "HTTP connections refused with 503 at the connection cap", NULL, NULL, 0));
    metrics_add_collector(reg, collect, hm, free);
}
