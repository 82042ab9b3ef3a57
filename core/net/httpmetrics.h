/*
 * httpmetrics.h - the HTTP server's own metrics, the same on every role:
 *
 *   counterd_http_requests_total{code}            answers written, by status code
 *   counterd_http_request_duration_seconds        first byte of a request to its answer
 *   counterd_http_connections_open                connections open now
 *   counterd_http_connections_accepted_total      connections accepted
 *   counterd_http_connections_rejected_total      connections refused at the cap (503)
 *
 * The server tallies in its own fields (core/net/http.c); they are copied into the
 * registry only when /metrics is rendered, so the request path pays a few additions.
 */
#ifndef COUNTERD_NET_HTTPMETRICS_H
#define COUNTERD_NET_HTTPMETRICS_H

struct metrics;
struct http_server;

/* Registers the families in reg, read from srv at each render: srv must outlive every
 * render of reg (a role frees its server before its registry). */
void httpmetrics_register(struct metrics *reg, const struct http_server *srv);

#endif
