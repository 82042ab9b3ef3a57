/*
 * api_core.c - counterd's own fields: now_ms, time, token, and the loaders conf, require
 * and policy (the proxy through which a role calls a policy under the budget).
 *
 * A policy call from Lua never raises into its caller for the policy's own failure: it
 * returns nil, "policy failed: ..." (logged and counted), so the caller can fall back.
 */
#include <lauxlib.h>
#include <lua.h>
#include <stdio.h>
#include <string.h>

#include "../base/clock.h"
#include "../base/hash.h"
#include "../base/log.h"
#include "host_internal.h"
#include "api.h"

static int api_now_ms(lua_State *L)
{
    lua_pushnumber(L, clock_mono_ms());
    return 1;
}

/* counterd.token(): 16 random hex digits (an idempotency token, a request id). */
static int api_token(lua_State *L)
{
    char t[17];
    snprintf(t, sizeof t, "%016llx", (unsigned long long)hash_random_u64());
    lua_pushstring(L, t);
    return 1;
}

static int api_unix_time(lua_State *L)
{
    lua_pushnumber(L, clock_unix_s());
    return 1;
}

/* Runs <lua_dir>/<folder>/<name>.lua in a sandbox and pushes what it returns. */
static int load_file_sandboxed(lua_State *L, const char *folder, const char *name)
{
    for (const char *c = name; *c; c++)
        if (!((*c >= 'a' && *c <= 'z') || (*c >= '0' && *c <= '9') || *c == '_'))
            return luaL_error(L, "bad module name '%s'", name);
    struct host *h = host_of(L);
    char path[512];
    snprintf(path, sizeof path, "%s/%s/%s.lua", h->dir, folder, name);
    if (luaL_loadfile(L, path) != 0)
        return lua_error(L);
    sandbox__push_sandbox(h);
    /* The sandbox is built on the main stack; a task (a coroutine) calling us needs it on
     * its own. */
    if (L != h->L)
        lua_xmove(h->L, L, 1);
    lua_setfenv(L, -2);
    lua_call(L, 0, 1);
    return 1;
}

static int load_sandboxed(lua_State *L, const char *folder)
{
    return load_file_sandboxed(L, folder, luaL_checkstring(L, 1));
}

/* counterd.conf(name): the value <lua_dir>/conf/<name>.lua returns, read afresh. */
static int api_conf(lua_State *L)
{
    return load_sandboxed(L, "conf");
}

/*
 * counterd.require(name): the module <lua_dir>/lib/<name>.lua, loaded once (until a
 * reload); "bench/<name>" loads <lua_dir>/bench/<name>.lua the same way.
 */
static int api_require(lua_State *L)
{
    const char *name = luaL_checkstring(L, 1);
    lua_settop(L, 1);
    lua_getfield(L, LUA_REGISTRYINDEX, "counterd.modules");
    lua_getfield(L, -1, name);
    if (!lua_isnil(L, -1))
        return 1;
    lua_pop(L, 1); /* stack: name, modules */
    if (!strncmp(name, "bench/", 6))
        load_file_sandboxed(L, "bench", name + 6);
    else
        load_file_sandboxed(L, "lib", name);
    lua_pushvalue(L, -1);
    lua_setfield(L, 2, name);
    return 1;
}

/* ---------------------------------------------------------------- policies from Lua */

/*
 * counterd.policy(name) gives a role a policy as a proxy: policy.fn(...) calls the loaded
 * version of fn under the time budget; an error or overrun returns nil, "policy failed:
 * file:line: message" (logged and counted) instead of raising, so the caller can fall
 * back to a safe default. A reloaded policy is picked up at the next call.
 */
static int policy_call(lua_State *L)
{
    struct host *h = host_of(L);
    const char *policy = lua_tostring(L, lua_upvalueindex(1));
    const char *fn = lua_tostring(L, lua_upvalueindex(2));
    struct policy *p = host__find_policy(h, policy);
    int nargs = lua_gettop(L);
    if (!p) {
        lua_pushnil(L);
        lua_pushfstring(L, "policy failed: policy %s is not loaded", policy);
        return 2;
    }
    host__count_call(h, p);
    lua_rawgeti(L, LUA_REGISTRYINDEX, p->ref);
    lua_getfield(L, -1, fn);
    lua_remove(L, -2);
    lua_insert(L, 1);
    lua_pushcfunction(L, sandbox__on_error);
    lua_insert(L, 1);
    struct watch outer;
    sandbox__watch_begin(h, &outer, 1);
    int rc = lua_pcall(L, nargs, LUA_MULTRET, 1);
    sandbox__watch_end(h, L, &outer, rc != 0);
    if (rc != 0) {
        /* Called from a policy whose own budget is spent: that call must end too. */
        if (sandbox__past_deadline(h))
            return lua_error(L);
        const char *msg = lua_tostring(L, -1);
        log_error("%s.%s failed: %s", policy, fn, msg ? msg : "?");
        host_count_error(h, policy);
        lua_pushnil(L);
        lua_pushfstring(L, "policy failed: %s", msg ? msg : "?");
        return 2;
    }
    return lua_gettop(L) - 1;
}

static int policy_index(lua_State *L)
{
    struct host *h = host_of(L);
    lua_getfield(L, 1, "__name");
    const char *policy = lua_tostring(L, -1);
    struct policy *p = host__find_policy(h, policy);
    if (!p)
        return 0;
    lua_rawgeti(L, LUA_REGISTRYINDEX, p->ref);
    lua_pushvalue(L, 2);
    lua_rawget(L, -2);
    if (!lua_isfunction(L, -1))
        return 1; /* a plain field, as it is now */
    lua_pushstring(L, policy);
    lua_pushvalue(L, 2);
    lua_pushcclosure(L, policy_call, 2);
    return 1;
}

static int api_policy(lua_State *L)
{
    const char *name = luaL_checkstring(L, 1);
    struct host *h = host_of(L);
    if (!host__find_policy(h, name)) {
        char err[512];
        if (host_load_policy(h, name, err, sizeof err) < 0)
            return luaL_error(L, "policy %s: %s", name, err);
    }
    lua_createtable(L, 0, 1);
    lua_pushstring(L, name);
    lua_setfield(L, -2, "__name");
    lua_createtable(L, 0, 1);
    lua_pushcfunction(L, policy_index);
    lua_setfield(L, -2, "__index");
    lua_setmetatable(L, -2);
    return 1;
}

void api_core_inject(lua_State *L)
{
    lua_pushcfunction(L, api_now_ms);
    lua_setfield(L, -2, "now_ms");
    lua_pushcfunction(L, api_unix_time);
    lua_setfield(L, -2, "time");
    lua_pushcfunction(L, api_token);
    lua_setfield(L, -2, "token");
    lua_pushcfunction(L, api_policy);
    lua_setfield(L, -2, "policy");
    lua_pushcfunction(L, api_conf);
    lua_setfield(L, -2, "conf");
    lua_pushcfunction(L, api_require);
    lua_setfield(L, -2, "require");
}
