/*
 * upstream.h - a pooled keep-alive HTTP/1.1 client for one hot path: the gateway
 * forwarding increments to a region.
 *
 * libcurl serves every other outgoing call; its per-transfer set-up cost halves the
 * gateway's forwarding rate, so this client keeps a pool of open connections per target
 * and writes prepared request bytes on them, one request in flight per connection,
 * parsing answers with http-parser. When every connection is busy, requests wait in order.
 *
 * A request that fails on a reused connection before any byte of the answer arrived (the
 * target had closed it while idle) is sent once more on a fresh connection: the gateway's
 * requests carry an idempotency token, so this never counts twice.
 */
#ifndef COUNTERD_NET_UPSTREAM_H
#define COUNTERD_NET_UPSTREAM_H

#include <stddef.h>

struct event_base;
struct upstream;
struct upstream_req;

/*
 * status 0: no answer (err says why); then sent tells whether the whole request had been
 * written (the target may have acted on it) or not (it certainly did not).
 */
typedef void (*upstream_cb)(int status, const char *body, size_t len, const char *err, int sent,
                            void *arg);

/* A target URL in the parts the pool needs (see upstream_parse_url). */
struct upstream_target {
    char host[200];        /* for the lookup: a name, an IPv4 address, or IPv6 without [] */
    char port[8];          /* "80" when the URL names none */
    char host_header[216]; /* the Host header: the URL's host (IPv6 in []) and its port */
    char path[256];        /* the path prefix, without a trailing '/': "" for none */
};

/*
 * Reads an http:// URL with libcurl's URL parser: http://host[:port][/path], the host a
 * name, an IPv4 address or [IPv6]. https (this client speaks plain TCP), other schemes, a
 * query, a fragment or user info are refused.
 * @return 0, or -1 with a sentence naming the URL and why in err.
 */
int upstream_parse_url(const char *url, struct upstream_target *t, char *err, size_t errlen);

/*
 * A pool for an http:// URL (upstream_parse_url; resolved now, and again while the pool
 * lives when the host is a name; numeric addresses need no lookup).
 * @return the pool, or NULL with a sentence in err.
 */
struct upstream *upstream_new(struct event_base *base, const char *url, int max_conns, char *err,
                              size_t errlen);
/* The target's Host header value and path prefix ("" or "/prefix"), for the requests the
 * owner writes: both live as long as the pool. */
const char *upstream_host_header(const struct upstream *u);
const char *upstream_path(const struct upstream *u);
/* Closes every connection; pending requests are dropped without their callbacks. */
void upstream_free(struct upstream *u);

/*
 * Sends the request req[0..len) (a complete HTTP/1.1 request, keep-alive) and calls cb
 * once with the answer, from the loop (never from inside this call).
 * @return a handle valid until the callback, for upstream_cancel.
 */
struct upstream_req *upstream_send(struct upstream *u, const char *req, size_t len, int timeout_ms,
                                   upstream_cb cb, void *arg);
/* Drops a request: its callback will not be called. */
void upstream_cancel(struct upstream_req *r);

#endif
