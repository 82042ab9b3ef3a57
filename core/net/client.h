/*
 * client.h - asynchronous HTTP client: libcurl's multi socket API on the libevent loop.
 *
 * Every outgoing call of counterd (replication, the coordinator's fan-out, the gateway's
 * forwarding) goes through here. Calls never block the loop: curl tells us which sockets
 * to watch and when to wake it, and the loop drives it. Connections to the same host are
 * kept alive and reused by the multi handle's connection cache.
 */
#ifndef COUNTERD_NET_CLIENT_H
#define COUNTERD_NET_CLIENT_H

#include <stddef.h>

struct event_base;
struct client;
struct client_call;

struct client_result {
    int status;       /* HTTP status, or 0 when no answer came (see error) */
    const char *body; /* NUL-terminated */
    size_t len;
    const char *error; /* transport error when status is 0, else NULL */
    double elapsed_ms;
};

/* Called once per call, from the loop, unless the call was cancelled. */
typedef void (*client_cb)(const struct client_result *res, void *arg);

struct client_call_opts {
    const char *method; /* "GET" (default), "POST", ... */
    const char *url;
    const char *body; /* copied; sent as application/json unless a header says otherwise */
    size_t body_len;
    const char *const *headers; /* NULL-terminated "Name: value" lines, or NULL */
    int timeout_ms;             /* whole call; default 5000 */
    int connect_timeout_ms;     /* default: timeout_ms */
};

struct client *client_new(struct event_base *base);
/* Cancels every pending call without calling back. */
void client_free(struct client *cl);

/*
 * Starts a call.
 * @return a handle valid until the callback returns or client_cancel; NULL when
 *         curl refuses the options (the callback is then not called).
 */
struct client_call *client_request(struct client *cl, const struct client_call_opts *o,
                                   client_cb cb, void *arg);
void client_cancel(struct client_call *call);
/* Number of calls in flight. */
int client_pending(const struct client *cl);

/*
 * The path of url as libcurl reads it (no query, no fragment; "/" for none), into out
 * (NUL-terminated, cut to cap-1 bytes): what a client span is named by.
 * @return 0, or -1 when libcurl cannot read url (out is then "/").
 */
int client_url_path(const char *url, char *out, size_t cap);

#endif
