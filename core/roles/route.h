/*
 * route.h - a role's routes, declared once: method, path, handler, traced name.
 *
 * Each role keeps one table (as Redis declares its command table) and dispatches from it;
 * the span of a request is named from the same table. This file never answers anything a
 * role did not declare, and holds no role's knowledge.
 */
#ifndef COUNTERD_ROLES_ROUTE_H
#define COUNTERD_ROLES_ROUTE_H

struct http_request;

enum {
    ROUTE_GET = 1,  /* GET and HEAD */
    ROUTE_POST = 2, /* POST */
    ROUTE_ANY = 4   /* every method: the handler decides */
};

struct route {
    unsigned methods; /* ROUTE_GET | ROUTE_POST, or ROUTE_ANY */
    const char *path; /* the exact path; with prefix, what a longer path starts with */
    int prefix;       /* the path is a prefix of a longer one ("/counter/" + name) */
    void (*handler)(void *role, struct http_request *req);
    const char *traced; /* the span's route ("/counter/{name}"), or NULL: name kept */
    const char *attr;   /* a span attribute given the rest of a prefix path, or NULL */
};

/*
 * The first route of table (ended by a NULL path) whose path matches req's, whatever the
 * method. @return it, or NULL.
 */
const struct route *route_find(const struct route *table, const struct http_request *req);

/* Names req's span "<METHOD> <traced>" after its route (and sets the route's attribute). */
void route_trace(const struct route *table, struct http_request *req);

/*
 * Calls the handler of the first route matching req's path and method.
 * @return 1 when one took req; 0 when no route has its path; -1 when routes have its path
 *         but none its method (nothing answered).
 */
int route_dispatch(const struct route *table, void *role, struct http_request *req);

/*
 * route_dispatch, then answers what no route took: 405 with the path's methods in Allow,
 * or 404 not_found.
 */
void route_serve(const struct route *table, void *role, struct http_request *req);

#endif
