/*
 * discover.h - learns the region names of endpoints given without one (net/endpoint.h)
 * from each service's GET /health ({"region": "us-west", ...}), as the original lab's
 * services do.
 *
 * Asking never blocks anything: each unnamed endpoint is asked on the event loop, and
 * again with a growing delay (100 ms doubling to 2 s) until it answers with a valid
 * name. Each name is reported once through the callback. A failure is logged once per
 * endpoint (then again when the name comes); the caller shows the pending ones in its
 * views (discover_pending). Never invents a name.
 */
#ifndef COUNTERD_NET_DISCOVER_H
#define COUNTERD_NET_DISCOVER_H

#include "endpoint.h"

struct event_base;
struct client;
struct discover;

/* Called from the loop when endpoint i's name is learned (valid, and not another's). */
typedef void (*discover_cb)(void *arg, int i, const char *name);

/*
 * Starts asking every endpoint of eps[0..n) whose name is "" (copied). auth_header
 * ("Authorization: Bearer ...") or NULL is sent with each call.
 * @return the asker (NULL when every endpoint already has a name: nothing to learn).
 */
struct discover *discover_start(struct event_base *base, struct client *client,
                                const struct endpoint *eps, int n, const char *auth_header,
                                discover_cb cb, void *arg);
/* Cancels what is in flight, without calling back. NULL is fine. */
void discover_free(struct discover *d);
/* @return the number of endpoints whose name is not known yet (0 for NULL). */
int discover_pending(const struct discover *d);

#endif
