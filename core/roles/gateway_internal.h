/*
 * gateway_internal.h - what gateway.c lends gateway_batch.c (POST /api/increments): the
 * routing choice, a region's pool, and its failover state. Nothing else includes it.
 */
#ifndef COUNTERD_ROLES_GATEWAY_INTERNAL_H
#define COUNTERD_ROLES_GATEWAY_INTERNAL_H

#include <stddef.h>

#include "../net/upstream.h"

struct gateway;
struct gw_batch;
struct http_request;
struct json_parser;
struct metrics;

/* What the routing policy is asked for one increment. */
struct gateway_choice {
    const char *routing, *counter;
    const char *client_region; /* X-Client-Region, or NULL */
    const char *token;         /* the client's own token, or NULL */
    unsigned tried;            /* a bit per region already tried: not picked again */
};

/*
 * The region for one increment, as POST /api/increment picks it (a client's token to its
 * home first, then the policy among the regions up and not tried).
 * @return its index; -1 (the policy refused the routing: err says why), -2 (no region left).
 */
int gateway__pick(struct gateway *g, const struct gateway_choice *c, char *err, size_t errlen);

/* Sends POST <region's prefix><path> with body to region i on its keep-alive pool.
 * @return the handle, for upstream_cancel. */
struct upstream_req *gateway__send(struct gateway *g, int i, const char *path, const char *body,
                                   size_t len, const char *traceparent, upstream_cb cb, void *arg);

/* Region i did not answer (or answered 5xx): skipped as POST /api/increment skips it. */
void gateway__region_failed(struct gateway *g, int i, const char *why);
/* Region i answered 200 and took `taken` increments: counted, and its node id learned. */
void gateway__region_answered(struct gateway *g, int i, const char *body, size_t len, size_t taken);

const char *gateway__region_name(const struct gateway *g, int i);
const char *gateway__region_url(const struct gateway *g, int i);
/* "" until learned from its answers. */
const char *gateway__region_node_id(const struct gateway *g, int i);
/* Until when region i is taken to have no POST /increments (a monotonic ms; 0: it has). */
double *gateway__region_batchless_until(struct gateway *g, int i);
struct gw_batch **gateway__batches(struct gateway *g);
struct json_parser *gateway__parser(struct gateway *g);
struct metrics *gateway__metrics(struct gateway *g);

/* gateway_batch.c: @return 1 (req taken: answered now or when its batch is done). */
int gateway__batch_handle(struct gateway *g, struct http_request *req);
/* Cancels the batches in flight (their connections are closed by the server). */
void gateway__batch_free(struct gateway *g);

#endif
