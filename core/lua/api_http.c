/*
 * api_http.c - counterd.http: non-blocking HTTP for Lua tasks, cosocket style.
 *
 *   local res, err = counterd.http.request{url = "http://...", method = "POST",
 *                                          body = "...", headers = {"X-A: b"},
 *                                          timeout_ms = 2000}
 *     res = {status = 200, body = "...", elapsed_ms = 1.25}; no answer: nil, "reason"
 *   counterd.http.get(url [, opts]), counterd.http.post(url, body [, opts]): the same, with
 *     the method, url (and body) given as arguments
 *   local all = counterd.http.multi{ {url = ...}, {url = ..., method = "POST"} }
 *     all[i] = a res table, or {error = "reason"}; the calls run in parallel
 *
 * The calling task yields while curl works; the loop resumes it with the answer. Calling
 * these outside a task (in a policy, or at a file's top level) raises an error. Expected
 * failures (refused, timeout) are returned, not raised.
 *
 * With tracing on, every call is a client span, a child of the span of the request the
 * task serves (a new trace otherwise), and carries its traceparent header.
 */
#include <lauxlib.h>
#include <lua.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "../base/mem.h"
#include "../net/client.h"
#include "../obs/trace.h"
#include "host.h"
#include "task.h"
#include "api.h"

#define MAX_HEADERS 16
#define MAX_MULTI 64

struct op;

struct call {
    struct op *op;
    int index;                  /* 1-based slot in the results */
    struct client_call *handle; /* NULL once answered */
    struct trace_span *span;    /* the call's client span, when tracing */
};

/* One yield: n calls whose answers resume the task when the last arrives. */
struct op {
    struct host *h;
    struct task *task;
    struct task_pending *pending;
    int n, left, multi;
    int results_ref; /* table of results (multi) */
    struct call calls[];
};

/* The host closes while the task waits: cancel what is still in flight. */
static void op_cancel(void *arg)
{
    struct op *op = arg;
    for (int i = 0; i < op->n; i++)
        if (op->calls[i].handle) {
            client_cancel(op->calls[i].handle);
            trace_span_error(op->calls[i].span, "cancelled");
            trace_span_end(op->calls[i].span);
        }
    free(op);
}

static void op_free(struct op *op)
{
    task_pending_remove(op->h, op->pending);
    free(op);
}

static void push_result(lua_State *co, const struct client_result *res)
{
    lua_createtable(co, 0, 3);
    lua_pushinteger(co, res->status);
    lua_setfield(co, -2, "status");
    lua_pushlstring(co, res->body, res->len);
    lua_setfield(co, -2, "body");
    lua_pushnumber(co, res->elapsed_ms);
    lua_setfield(co, -2, "elapsed_ms");
}

static void on_done(const struct client_result *res, void *arg)
{
    struct call *c = arg;
    struct op *op = c->op;
    lua_State *co = task_state(op->task);
    c->handle = NULL;
    if (c->span) {
        trace_span_http_status(c->span, res->status, res->error);
        trace_span_end(c->span);
        c->span = NULL;
    }
    if (!op->multi) {
        int nret;
        if (res->status) {
            push_result(co, res);
            nret = 1;
        } else {
            lua_pushnil(co);
            lua_pushstring(co, res->error ? res->error : "no answer");
            nret = 2;
        }
        struct task *t = op->task;
        op_free(op);
        task_resume(t, nret);
        return;
    }
    lua_rawgeti(co, LUA_REGISTRYINDEX, op->results_ref);
    if (res->status) {
        push_result(co, res);
    } else {
        lua_createtable(co, 0, 1);
        lua_pushstring(co, res->error ? res->error : "no answer");
        lua_setfield(co, -2, "error");
    }
    lua_rawseti(co, -2, c->index);
    lua_pop(co, 1);
    if (--op->left > 0)
        return;
    struct task *t = op->task;
    lua_rawgeti(co, LUA_REGISTRYINDEX, op->results_ref);
    luaL_unref(co, LUA_REGISTRYINDEX, op->results_ref);
    op_free(op);
    task_resume(t, 1);
}

/*
 * Starts c's call: with tracing on, as a client span of the task's request whose
 * traceparent is added to headers (which has a free slot after its NULL).
 */
static struct client_call *start_call(struct host *h, struct task *t, struct call *c,
                                      struct client_call_opts *o, const char **headers)
{
    char tp[TRACE_HEADER_LEN + 1];
    if (trace_enabled()) {
        /* Named by method and path: "GET /counter/views", not the whole URL. */
        char path[128], name[160];
        client_url_path(o->url, path, sizeof path);
        snprintf(name, sizeof name, "%s %s", o->method, path);
        c->span = trace_span_child(task_span(t), name, TRACE_CLIENT);
        trace_span_attr_cstr(c->span, "http.method", o->method);
        trace_span_attr_cstr(c->span, "http.url", o->url);
        memcpy(tp, "traceparent: ", 13);
        trace_span_traceparent(c->span, tp + 13);
        int n = 0, own = 0; /* a traceparent the caller set itself wins */
        for (; headers[n]; n++)
            own |= strncasecmp(headers[n], "traceparent:", 12) == 0;
        if (!own) {
            headers[n] = tp;
            headers[n + 1] = NULL;
            o->headers = headers;
        }
    }
    struct client_call *call = client_request(host_client(h), o, on_done, c);
    if (!call && c->span) {
        trace_span_error(c->span, "the request could not be started");
        trace_span_end(c->span);
        c->span = NULL;
    }
    return call;
}

/* Reads the request table at idx into o (strings stay on L's stack, valid until return). */
static void read_opts(lua_State *L, int idx, struct client_call_opts *o, const char **headers)
{
    luaL_checktype(L, idx, LUA_TTABLE);
    memset(o, 0, sizeof *o);
    lua_getfield(L, idx, "url");
    o->url = luaL_checkstring(L, -1);
    lua_getfield(L, idx, "method");
    o->method = luaL_optstring(L, -1, "GET");
    lua_getfield(L, idx, "body");
    if (!lua_isnil(L, -1))
        o->body = luaL_checklstring(L, -1, &o->body_len);
    lua_getfield(L, idx, "timeout_ms");
    o->timeout_ms = (int)luaL_optinteger(L, -1, 5000);
    lua_getfield(L, idx, "headers");
    int n = 0;
    if (lua_istable(L, -1)) {
        int ht = lua_gettop(L);
        for (int i = 1; n < MAX_HEADERS; i++) {
            lua_rawgeti(L, ht, i);
            if (lua_isnil(L, -1)) {
                lua_pop(L, 1);
                break;
            }
            headers[n++] = luaL_checkstring(L, -1); /* stays on the stack */
        }
    }
    headers[n] = NULL;
    o->headers = n ? headers : NULL;
}

static struct task *need_task(lua_State *L, const char *fn)
{
    struct task *t = task_of(L);
    if (!t)
        luaL_error(L,
                   "counterd.http.%s can only be called from a request handler or task "
                   "(it yields)",
                   fn);
    return t;
}

static int l_request(lua_State *L)
{
    struct task *t = need_task(L, "request");
    struct host *h = host_of(L);
    struct client_call_opts o;
    const char *headers[MAX_HEADERS + 2];
    read_opts(L, 1, &o, headers);
    struct op *op = xcalloc(1, sizeof *op + sizeof(struct call));
    op->h = h;
    op->task = t;
    op->n = op->left = 1;
    op->calls[0].op = op;
    op->calls[0].index = 1;
    op->calls[0].handle = start_call(h, t, &op->calls[0], &o, headers);
    if (!op->calls[0].handle) {
        free(op);
        lua_pushnil(L);
        lua_pushstring(L, "the request could not be started");
        return 2;
    }
    op->pending = task_pending_add(h, op_cancel, op);
    return lua_yield(L, 0);
}

static int l_multi(lua_State *L)
{
    struct task *t = need_task(L, "multi");
    struct host *h = host_of(L);
    luaL_checktype(L, 1, LUA_TTABLE);
    int n = (int)lua_objlen(L, 1);
    if (n > MAX_MULTI)
        return luaL_error(L, "counterd.http.multi: at most %d calls at once", MAX_MULTI);
    lua_createtable(L, n, 0);
    if (n == 0)
        return 1;
    struct op *op = xcalloc(1, sizeof *op + (size_t)n * sizeof(struct call));
    op->h = h;
    op->task = t;
    op->n = op->left = n;
    op->multi = 1;
    /* Validate everything before starting anything, so an error leaks no call. */
    for (int i = 1; i <= n; i++) {
        lua_rawgeti(L, 1, i);
        luaL_checktype(L, -1, LUA_TTABLE);
        lua_getfield(L, -1, "url");
        if (!lua_isstring(L, -1)) {
            free(op);
            return luaL_error(L, "counterd.http.multi: call %d has no url", i);
        }
        lua_pop(L, 2);
    }
    lua_pushvalue(L, 2);
    op->results_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    for (int i = 1; i <= n; i++) {
        int top = lua_gettop(L);
        lua_rawgeti(L, 1, i);
        struct client_call_opts o;
        const char *headers[MAX_HEADERS + 2];
        read_opts(L, lua_gettop(L), &o, headers);
        op->calls[i - 1].op = op;
        op->calls[i - 1].index = i;
        op->calls[i - 1].handle = start_call(h, t, &op->calls[i - 1], &o, headers);
        if (!op->calls[i - 1].handle) {
            /* Counts as answered with an error, now. */
            lua_rawgeti(L, LUA_REGISTRYINDEX, op->results_ref);
            lua_createtable(L, 0, 1);
            lua_pushstring(L, "the request could not be started");
            lua_setfield(L, -2, "error");
            lua_rawseti(L, -2, i);
            lua_pop(L, 1);
            op->left--;
        }
        lua_settop(L, top);
    }
    if (op->left == 0) {
        lua_rawgeti(L, LUA_REGISTRYINDEX, op->results_ref);
        luaL_unref(L, LUA_REGISTRYINDEX, op->results_ref);
        free(op);
        return 1;
    }
    op->pending = task_pending_add(h, op_cancel, op);
    return lua_yield(L, 0);
}

/* get(url [, opts]) and post(url, body [, opts]): request() with the table filled in. */
static int shortcut(lua_State *L, const char *method, int has_body)
{
    luaL_checkstring(L, 1);
    int opts = has_body ? 3 : 2;
    lua_settop(L, opts);
    if (lua_isnil(L, opts)) {
        lua_newtable(L);
        lua_replace(L, opts);
    }
    luaL_checktype(L, opts, LUA_TTABLE);
    lua_pushvalue(L, 1);
    lua_setfield(L, opts, "url");
    lua_pushstring(L, method);
    lua_setfield(L, opts, "method");
    if (has_body) {
        lua_pushvalue(L, 2);
        lua_setfield(L, opts, "body");
    }
    lua_replace(L, 1); /* the options table becomes the only argument */
    lua_settop(L, 1);
    return l_request(L);
}

static int l_get(lua_State *L)
{
    return shortcut(L, "GET", 0);
}
static int l_post(lua_State *L)
{
    return shortcut(L, "POST", 1);
}

void api_http_inject(lua_State *L)
{
    lua_newtable(L);
    lua_pushcfunction(L, l_request);
    lua_setfield(L, -2, "request");
    lua_pushcfunction(L, l_get);
    lua_setfield(L, -2, "get");
    lua_pushcfunction(L, l_post);
    lua_setfield(L, -2, "post");
    lua_pushcfunction(L, l_multi);
    lua_setfield(L, -2, "multi");
    lua_setfield(L, -2, "http");
}
