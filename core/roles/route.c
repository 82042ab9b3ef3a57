/*
 * route.c - dispatch from a role's route table (see route.h).
 */
#include "route.h"

#include <string.h>

#include "../net/http.h"
#include "../obs/trace.h"

static int path_matches(const struct route *r, const struct http_request *req)
{
    size_t n = strlen(r->path);
    if (r->prefix)
        return req->path_len > n && memcmp(req->path, r->path, n) == 0;
    return req->path_len == n && memcmp(req->path, r->path, n) == 0;
}

static int method_matches(const struct route *r, const struct http_request *req)
{
    if (r->methods & ROUTE_ANY)
        return 1;
    if (req->method == HTTP_M_GET || req->method == HTTP_M_HEAD)
        return (r->methods & ROUTE_GET) != 0;
    return req->method == HTTP_M_POST && (r->methods & ROUTE_POST);
}

const struct route *route_find(const struct route *table, const struct http_request *req)
{
    for (const struct route *r = table; r->path; r++)
        if (path_matches(r, req))
            return r;
    return NULL;
}

void route_trace(const struct route *table, struct http_request *req)
{
    const struct route *r = route_find(table, req);
    if (!r || !r->traced)
        return;
    trace_span_route(req->span, req->method_name, r->traced);
    if (r->attr) {
        size_t n = strlen(r->path);
        trace_span_attr_str(req->span, r->attr, req->path + n, req->path_len - n);
    }
}

int route_dispatch(const struct route *table, void *role, struct http_request *req)
{
    int seen = 0;
    for (const struct route *r = table; r->path; r++) {
        if (!path_matches(r, req))
            continue;
        seen = 1;
        if (method_matches(r, req)) {
            r->handler(role, req);
            return 1;
        }
    }
    return seen ? -1 : 0;
}

void route_serve(const struct route *table, void *role, struct http_request *req)
{
    int rc = route_dispatch(table, role, req);
    if (rc > 0)
        return;
    if (rc == 0) {
        http_respond_error(req, 404, "not_found", "no endpoint %s %.200s", req->method_name,
                           req->path);
        return;
    }
    unsigned methods = 0;
    for (const struct route *r = table; r->path; r++)
        if (path_matches(r, req))
            methods |= r->methods;
    const char *allow = (methods & ROUTE_GET) && (methods & ROUTE_POST) ? "GET, HEAD, POST"
                        : methods & ROUTE_GET                           ? "GET, HEAD"
                                                                        : "POST";
    http_respond_not_allowed(req, allow);
}
