/*
 * test_route.c - unit tests of a role's route table (core/roles/route.c): which route a
 * path and a method reach, and what a table says when a path has routes but not for the
 * method. Never include this from core/.
 */
#include <string.h>

#include "net/http.h"
#include "roles/route.h"
#include "unit.h"

static const char *called;

static void h_get(void *role, struct http_request *req)
{
    called = "get";
}

static void h_post(void *role, struct http_request *req)
{
    called = "post";
}

static void h_any(void *role, struct http_request *req)
{
    called = "any";
}

static void h_prefix(void *role, struct http_request *req)
{
    called = "prefix";
}

static const struct route table[] = {
    {ROUTE_GET, "/health", 0, h_get, "/health", NULL},
    {ROUTE_GET, "/both", 0, h_get, NULL, NULL},
    {ROUTE_POST, "/both", 0, h_post, NULL, NULL},
    {ROUTE_ANY, "/strong/accept", 0, h_any, "/strong/accept", NULL},
    {ROUTE_GET, "/counter/", 1, h_prefix, "/counter/{name}", "counter.name"},
    {0, NULL, 0, NULL, NULL, NULL}};

static struct http_request req_of(enum http_verb m, const char *path)
{
    static const char *names[] = {
        [HTTP_M_GET] = "GET", [HTTP_M_HEAD] = "HEAD", [HTTP_M_POST] = "POST"};
    struct http_request r = {0};
    r.method = m;
    r.method_name = m <= HTTP_M_POST && names[m] ? names[m] : "PUT";
    r.path = path;
    r.path_len = strlen(path);
    r.query = "";
    r.body = "";
    return r;
}

/* @return the dispatch's result; called says which handler ran ("" when none). */
static int dispatch(enum http_verb m, const char *path)
{
    struct http_request r = req_of(m, path);
    called = "";
    return route_dispatch(table, NULL, &r);
}

static void test_methods(void)
{
    CHECK_EQ_I64(dispatch(HTTP_M_GET, "/health"), 1);
    CHECK_STR_EQ(called, "get");
    CHECK_EQ_I64(dispatch(HTTP_M_HEAD, "/health"), 1); /* HEAD is a GET */
    CHECK_STR_EQ(called, "get");
    CHECK_EQ_I64(dispatch(HTTP_M_POST, "/health"), -1); /* the path, not the method */
    CHECK_STR_EQ(called, "");
    CHECK_EQ_I64(dispatch(HTTP_M_PUT, "/health"), -1);
    CHECK_EQ_I64(dispatch(HTTP_M_PUT, "/both"), -1);
    CHECK_EQ_I64(dispatch(HTTP_M_POST, "/both"), 1); /* two routes, one path */
    CHECK_STR_EQ(called, "post");
    CHECK_EQ_I64(dispatch(HTTP_M_GET, "/both"), 1);
    CHECK_STR_EQ(called, "get");
    CHECK_EQ_I64(dispatch(HTTP_M_POST, "/strong/accept"), 1);
    CHECK_STR_EQ(called, "any");
    CHECK_EQ_I64(dispatch(HTTP_M_PUT, "/strong/accept"), 1);
    CHECK_STR_EQ(called, "any");
}

static void test_paths(void)
{
    CHECK_EQ_I64(dispatch(HTTP_M_GET, "/nothing"), 0);
    CHECK_EQ_I64(dispatch(HTTP_M_GET, "/health/"), 0); /* exact paths are exact */
    CHECK_EQ_I64(dispatch(HTTP_M_GET, "/healt"), 0);
    CHECK_EQ_I64(dispatch(HTTP_M_GET, "/counter/views"), 1);
    CHECK_STR_EQ(called, "prefix");
    CHECK_EQ_I64(dispatch(HTTP_M_GET, "/counter/"), 0); /* a prefix needs something after */
    CHECK_EQ_I64(dispatch(HTTP_M_GET, "/counter"), 0);
    struct http_request r = req_of(HTTP_M_GET, "/counter/x");
    const struct route *found = route_find(table, &r);
    REQUIRE(found != NULL);
    CHECK_STR_EQ(found->traced, "/counter/{name}");
    r = req_of(HTTP_M_POST, "/both"); /* the first route of the path, whatever the method */
    found = route_find(table, &r);
    REQUIRE(found != NULL);
    CHECK(found->handler == h_get);
    r = req_of(HTTP_M_GET, "/none");
    CHECK(route_find(table, &r) == NULL);
    route_trace(table, &r); /* no span: nothing to name */
}

UNIT_MAIN("test_route", UNIT_CASE(test_methods), UNIT_CASE(test_paths))
