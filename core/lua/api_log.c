/*
 * api_log.c - counterd.log: policies write to the node's log.
 *
 *   counterd.log.info("text"), .warn, .error, .debug; counterd.log("text") is info.
 * Each line names the calling file:line.
 */
#include <lauxlib.h>
#include <lua.h>

#include "../base/log.h"
#include "host.h"
#include "api.h"

static int log_at(lua_State *L, enum log_level level)
{
    int n = lua_gettop(L);
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    for (int i = 1; i <= n; i++) {
        if (i > 1)
            luaL_addchar(&b, ' ');
        const char *s = luaL_checkstring(L, i);
        luaL_addstring(&b, s);
    }
    luaL_pushresult(&b);
    luaL_where(L, 1);
    log_msg(level, "lua %s%s", lua_tostring(L, -1), lua_tostring(L, -2));
    return 0;
}

static int l_debug(lua_State *L)
{
    return log_at(L, LOG_DEBUG);
}
static int l_info(lua_State *L)
{
    return log_at(L, LOG_INFO);
}
static int l_warn(lua_State *L)
{
    return log_at(L, LOG_WARN);
}
static int l_error(lua_State *L)
{
    return log_at(L, LOG_ERROR);
}

static int l_call(lua_State *L)
{
    lua_remove(L, 1); /* the table itself */
    return log_at(L, LOG_INFO);
}

void api_log_inject(lua_State *L)
{
    lua_newtable(L);
    lua_pushcfunction(L, l_debug);
    lua_setfield(L, -2, "debug");
    lua_pushcfunction(L, l_info);
    lua_setfield(L, -2, "info");
    lua_pushcfunction(L, l_warn);
    lua_setfield(L, -2, "warn");
    lua_pushcfunction(L, l_error);
    lua_setfield(L, -2, "error");
    lua_newtable(L);
    lua_pushcfunction(L, l_call);
    lua_setfield(L, -2, "__call");
    lua_setmetatable(L, -2);
    lua_setfield(L, -2, "log");
}
