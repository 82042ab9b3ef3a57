/*
 * role.h - one way to start and stop a role: the parts every service has.
 *
 * A service (region, strong, the Lua roles) starts in one order: its metrics registry,
 * its tracing (the OTLP endpoint of its configuration), the admin token, an HTTP client,
 * its Lua host; then its own parts; then role_listen: the reloader (POST /admin/reload,
 * --watch) and the server, whose metrics follow the role's. role_stop frees them in the
 * reverse order. The event base and the signals are main.c's. Nothing here knows what a
 * particular role answers.
 */
#ifndef COUNTERD_ROLES_ROLE_H
#define COUNTERD_ROLES_ROLE_H

#include <stddef.h>

#include "../lua/host.h"
#include "../net/http.h"

struct config;
struct event_base;
struct client;
struct metrics;
struct otlp;
struct reload;

/* Where a role keeps the parts every role has: role_start and role_listen fill them. */
struct role_parts {
    struct metrics **metrics; /* made by role_start unless the role made it first */
    struct otlp **otlp;
    char **admin_token; /* NULL when the configuration has none */
    struct client **client;
    struct host **lua;
    struct reload **reload;
    struct http_server **server;
};

/* The Lua host may call out (counterd.http, timers): it gets the event base and client. */
#define ROLE_LUA_IO 1u

/*
 * Metrics (when *p->metrics is NULL), tracing, the admin token, the client and the Lua
 * host described by li.
 * @return 0, or -1 with a sentence in err (role_stop frees what was made).
 */
int role_start(const struct role_parts *p, struct event_base *base, const struct config *cfg,
               const struct host_info *li, unsigned flags, char *err, size_t errlen);

/* The server options of cfg (address, port, limits); a role adds its hooks. */
struct http_server_opts role_server_opts(const struct config *cfg);

/*
 * The reloader, then the server with so, answering through handler, and its metrics.
 * @return 0, or -1 with a sentence in err (e.g. the port is taken).
 */
int role_listen(const struct role_parts *p, struct event_base *base, const struct config *cfg,
                const struct http_server_opts *so, http_handler_fn handler, void *arg, char *err,
                size_t errlen);

/* Frees the parts (any may be NULL): the reloader and the Lua host's tasks first, then
 * the server and its connections, the client, tracing (after everything that could still
 * end a span) and the metrics. */
void role_stop(const struct role_parts *p);

#endif
