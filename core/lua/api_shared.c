/*
 * api_shared.c - counterd.shared: state that outlives a policy reload.
 *
 *   counterd.shared.get(key) -> value or nil
 *   counterd.shared.set(key, value)      value: string, number, boolean or nil (deletes)
 *   counterd.shared.incr(key, n) -> new number (missing keys count from 0)
 *
 * The values live in a table held by the host, not by any policy, so a reloaded policy
 * finds what the old one kept. Only plain values are allowed: a table or function could
 * keep the old policy's code alive behind its back.
 */
#include <lauxlib.h>
#include <lua.h>

#include "host.h"
#include "api.h"

#define SHARED_KEY "counterd.shared.data"

static void push_data(lua_State *L)
{
    lua_getfield(L, LUA_REGISTRYINDEX, SHARED_KEY);
}

static int l_get(lua_State *L)
{
    luaL_checkstring(L, 1);
    push_data(L);
    lua_pushvalue(L, 1);
    lua_rawget(L, -2);
    return 1;
}

static int l_set(lua_State *L)
{
    luaL_checkstring(L, 1);
    int t = lua_type(L, 2);
    if (t != LUA_TSTRING && t != LUA_TNUMBER && t != LUA_TBOOLEAN && t != LUA_TNIL)
        return luaL_error(L,
                          "counterd.shared.set: values must be strings, numbers, booleans "
                          "or nil, not %s",
                          lua_typename(L, t));
    push_data(L);
    lua_pushvalue(L, 1);
    lua_pushvalue(L, 2);
    lua_rawset(L, -3);
    return 0;
}

static int l_incr(lua_State *L)
{
    luaL_checkstring(L, 1);
    lua_Number n = luaL_optnumber(L, 2, 1);
    push_data(L);
    lua_pushvalue(L, 1);
    lua_rawget(L, -2);
    lua_Number v = lua_isnumber(L, -1) ? lua_tonumber(L, -1) : 0;
    lua_pop(L, 1);
    lua_pushvalue(L, 1);
    lua_pushnumber(L, v + n);
    lua_rawset(L, -3);
    lua_pushnumber(L, v + n);
    return 1;
}

void api_shared_inject(lua_State *L)
{
    lua_newtable(L);
    lua_setfield(L, LUA_REGISTRYINDEX, SHARED_KEY);
    lua_newtable(L);
    lua_pushcfunction(L, l_get);
    lua_setfield(L, -2, "get");
    lua_pushcfunction(L, l_set);
    lua_setfield(L, -2, "set");
    lua_pushcfunction(L, l_incr);
    lua_setfield(L, -2, "incr");
    lua_setfield(L, -2, "shared");
}
