/*
 * gateway.h - the gateway's hot path in C: POST /api/increment.
 *
 * The rest of the gateway is lua/roles/gateway.lua. Forwarding increments is the one
 * path that must keep up with the regions, so it is C: parse and check the body, ask
 * lua/policies/routing.lua for a region, forward on a pooled keep-alive connection,
 * fail over with the same idempotency token, and add the gateway's fields to the answer.
 * AddCount of an eventual namespace (POST /v1/counters/{ns}/{name}/add, /add-and-get) takes
 * the same path once the Lua role has told C the namespace's type (counterd.shared).
 */
#ifndef COUNTERD_ROLES_GATEWAY_H
#define COUNTERD_ROLES_GATEWAY_H

#include <stddef.h>

struct event_base;
struct host;
struct metrics;
struct http_request;
struct gateway;

struct gateway_region {
    const char *name, *url;
    int unnamed; /* name is only the address: not routed to until gateway_name_region */
};

/* @return the hot path, or NULL with a sentence in err. */
struct gateway *gateway_new(struct event_base *base, struct host *lua, struct metrics *metrics,
                            const struct gateway_region *regions, int nregions, int timeout_ms,
                            char *err, size_t errlen);
/* Names the region at url (given as host:port) and routes to it from now on. */
void gateway_name_region(struct gateway *g, const char *url, const char *name);
/* Cancels what is in flight (their connections are closed by the server). */
void gateway_free(struct gateway *g);
/* @return 1 when req was taken (POST /api/increment, /api/increments, an eventual AddCount),
 *         0 to let the Lua role answer. */
int gateway_handle(struct gateway *g, struct http_request *req);
/* The server's body limit by path (http_server_opts.body_limit): POST /api/increments takes
 * batches larger than the default. @return the limit, or 0 for the default. */
size_t gateway_body_limit(const char *path, size_t len, void *arg);

#endif
