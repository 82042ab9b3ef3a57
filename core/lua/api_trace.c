/*
 * api_trace.c - counterd.trace: the span of the request a task serves.
 *
 *   counterd.trace.route("/api/counter/{name}")  names the span "<METHOD> <route>" and
 *                                                 sets http.route
 *   counterd.trace.attr("counter.name", "views") adds an attribute (string, number or
 *                                                 boolean)
 *   counterd.trace.traceparent()                  the W3C traceparent that makes a callee
 *                                                 a child of this request, or nil
 *   counterd.trace.enabled()                      whether spans are exported at all
 *
 * counterd.http calls propagate the context on their own; these are for naming and
 * describing. Outside a traced task (tracing off, a timer, a policy) they do nothing and
 * traceparent() returns nil: a role never needs to check first.
 */
#include <lauxlib.h>
#include <lua.h>
#include <stdint.h>

#include "../obs/trace.h"
#include "host.h"
#include "task.h"
#include "api.h"

static struct trace_span *current(lua_State *L)
{
    if (!trace_enabled())
        return NULL;
    return task_span(task_of(L));
}

static int l_route(lua_State *L)
{
    const char *route = luaL_checkstring(L, 1);
    struct trace_span *s = current(L);
    if (!s)
        return 0;
    trace_span_route(s, NULL, route); /* keeps the method the server put in the name */
    return 0;
}

static int l_attr(lua_State *L)
{
    const char *key = luaL_checkstring(L, 1);
    struct trace_span *s = current(L);
    if (!s)
        return 0;
    switch (lua_type(L, 2)) {
    case LUA_TBOOLEAN: trace_span_attr_bool(s, key, lua_toboolean(L, 2)); break;
    case LUA_TNUMBER: {
        lua_Number v = lua_tonumber(L, 2);
        if (v == (lua_Number)(int64_t)v)
            trace_span_attr_int(s, key, (int64_t)v);
        else
            trace_span_attr_cstr(s, key, lua_tostring(L, 2));
        break;
    }
    case LUA_TSTRING: {
        size_t len;
        const char *v = lua_tolstring(L, 2, &len);
        trace_span_attr_str(s, key, v, len);
        break;
    }
    default:
        return luaL_error(L, "counterd.trace.attr: %s must be a string, number or boolean", key);
    }
    return 0;
}

static int l_traceparent(lua_State *L)
{
    char tp[TRACEPARENT_LEN + 1];
    if (trace_span_traceparent(current(L), tp) < 0)
        lua_pushnil(L);
    else
        lua_pushstring(L, tp);
    return 1;
}

static int l_enabled(lua_State *L)
{
    lua_pushboolean(L, trace_enabled());
    return 1;
}

void api_trace_inject(lua_State *L)
{
    lua_newtable(L);
    lua_pushcfunction(L, l_route);
    lua_setfield(L, -2, "route");
    lua_pushcfunction(L, l_attr);
    lua_setfield(L, -2, "attr");
    lua_pushcfunction(L, l_traceparent);
    lua_setfield(L, -2, "traceparent");
    lua_pushcfunction(L, l_enabled);
    lua_setfield(L, -2, "enabled");
    lua_setfield(L, -2, "trace");
}
