/*
 * sandbox.c - the sandbox and the budget of the Lua host (see host.h).
 *
 * Each file gets a fresh environment from an allow-list (no io, os.execute, loadfile,
 * dofile, require), its own copies of the libraries and a read-only view of the counterd
 * table. A call into policy code runs under a deadline (an instruction-count hook, the
 * JIT off) and a cap on how far it may grow the Lua heap, and its pcall cannot catch the
 * budget's error. This file must never let a budget outlive the call it bounds.
 */
#include <lauxlib.h>
#include <lua.h>
#include <luajit.h>
#include <lualib.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../base/clock.h"
#include "../base/log.h"
#include "host_internal.h"
#include "sandbox.h"

/* The hook runs every HOOK_EVERY VM instructions of non-compiled code. */
#define HOOK_EVERY 1000
/* How far one policy call may grow the Lua heap. Past it allocations fail ("not enough
 * memory"): a string or table built in a loop, table.concat, string.format or gsub
 * cannot take the node's memory, nor the seconds it takes to fill it. */
#define POLICY_HEAP_MAX ((int64_t)64 << 20)

static void watchdog(lua_State *L, lua_Debug *ar)
{
    (void)ar;
    struct host *h = host_of(L);
    if (h && h->deadline_ms && clock_mono_ms() > h->deadline_ms) {
        /* Level 0 is the Lua function the hook interrupted: its file:line tells the reader
         * where the policy was looping (luaL_error would name the caller, often C). */
        luaL_where(L, 0);
        lua_pushfstring(L, "policy ran longer than its budget of %d ms", h->budget_ms);
        lua_concat(L, 2);
        lua_error(L);
    }
}

int sandbox__past_deadline(const struct host *h)
{
    return h->deadline_ms && clock_mono_ms() > h->deadline_ms;
}

void sandbox_check_budget(lua_State *L)
{
    lua_checkstack(L, 2);
    struct host *h = host_of(L);
    if (h && sandbox__past_deadline(h))
        luaL_error(L, "policy ran longer than its budget of %d ms", h->budget_ms);
}

double sandbox_deadline_ms(lua_State *L)
{
    lua_checkstack(L, 2);
    struct host *h = host_of(L);
    return h ? h->deadline_ms : 0;
}

int sandbox_in_policy(lua_State *L)
{
    lua_checkstack(L, 2);
    struct host *h = host_of(L);
    return h && h->policies_running > 0;
}

/* LuaJIT's allocator, counted, refusing to grow the heap past the running call's cap. */
static void *heap_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
    struct host *h = ud;
    int64_t grow = (int64_t)nsize - (int64_t)osize;
    if (grow > 0 && h->heap_limit && h->heap + grow > h->heap_limit) {
        h->heap_hit = 1;
        return NULL;
    }
    void *p = h->alloc(h->alloc_ud, ptr, osize, nsize);
    if (p || nsize == 0)
        h->heap += grow;
    return p;
}

void sandbox__count_heap(struct host *h)
{
    lua_State *L = h->L;
    /* Count the heap from here on: LuaJIT's own allocator behind a counter. */
    h->alloc = lua_getallocf(L, &h->alloc_ud);
    h->heap = (int64_t)lua_gc(L, LUA_GCCOUNT, 0) * 1024 + lua_gc(L, LUA_GCCOUNTB, 0);
    lua_setallocf(L, heap_alloc, h);
}

void sandbox__watch_begin(struct host *h, struct watch *outer, int policy)
{
    outer->policy = policy;
    h->policies_running += policy;
    outer->deadline_ms = h->deadline_ms;
    outer->heap_limit = h->heap_limit;
    if (!h->deadline_ms)
        h->deadline_ms = clock_mono_ms() + h->budget_ms;
    if (!h->heap_limit) {
        h->heap_limit = h->heap + POLICY_HEAP_MAX;
        h->heap_hit = 0;
    }
}

void sandbox__watch_end(struct host *h, lua_State *L, const struct watch *outer, int failed)
{
    if (failed && h->heap_hit && !outer->heap_limit) {
        const char *msg = lua_tostring(L, -1);
        if (msg && strcmp(msg, "not enough memory") == 0) {
            lua_pop(L, 1);
            lua_pushfstring(L,
                            "policy grew the Lua heap past its limit of %d MiB (not enough "
                            "memory)",
                            (int)(POLICY_HEAP_MAX >> 20));
        }
    }
    h->deadline_ms = outer->deadline_ms;
    h->heap_limit = outer->heap_limit;
    h->policies_running -= outer->policy;
}

/*
 * What the sandbox's pcall and xpcall return through: a call past its deadline must not
 * be able to catch the watchdog's error and go on looping, so once the budget is spent a
 * caught error is raised again. Upvalue 1 is the host.
 */
static int budget_check(lua_State *L)
{
    if (lua_toboolean(L, 1))
        return lua_gettop(L);
    struct host *h = lua_touserdata(L, lua_upvalueindex(1));
    if (!sandbox__past_deadline(h))
        return lua_gettop(L);
    const char *msg = lua_tostring(L, 2);
    if (msg && strstr(msg, "policy ran longer than its budget")) {
        lua_settop(L, 2);
        return lua_error(L);
    }
    return luaL_error(L, "policy ran longer than its budget of %d ms", h->budget_ms);
}

/* The sandbox's pcall and xpcall: the built-in ones (a task may yield inside them),
 * their results passed through budget_check. */
static const char guards_lua[] = "local pcall, xpcall, check = ...\n"
                                 "return function(...) return check(pcall(...)) end,\n"
                                 "  function(...) return check(xpcall(...)) end\n";

void sandbox__make_guards(struct host *h)
{
    lua_State *L = h->L;
    if (luaL_loadbuffer(L, guards_lua, sizeof guards_lua - 1, "=counterd") != 0) {
        log_error("cannot compile the pcall guards: %s", lua_tostring(L, -1));
        abort();
    }
    lua_getglobal(L, "pcall");
    lua_getglobal(L, "xpcall");
    lua_pushlightuserdata(L, h);
    lua_pushcclosure(L, budget_check, 1);
    lua_call(L, 3, 2);
    lua_setfield(L, LUA_REGISTRYINDEX, "counterd.xpcall");
    lua_setfield(L, LUA_REGISTRYINDEX, "counterd.pcall");
}

void sandbox__start_watchdog(struct host *h)
{
    lua_sethook(h->L, watchdog, LUA_MASKCOUNT, HOOK_EVERY);
}

int sandbox__on_error(lua_State *L)
{
    if (!lua_isstring(L, 1)) {
        lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
        return 1;
    }
    return 1;
}

/* ---------------------------------------------------------------- sandbox */

static void copy_global(lua_State *L, int env, const char *name)
{
    lua_getglobal(L, name);
    lua_setfield(L, env, name);
}

static void copy_field(lua_State *L, int dst, const char *lib, const char *name)
{
    lua_getglobal(L, lib);
    lua_getfield(L, -1, name);
    lua_setfield(L, dst, name);
    lua_pop(L, 1);
}

/* Puts a copy of the global library table lib into env: a file that replaces string.find
 * or math.random replaces it for itself only. */
static void copy_library(lua_State *L, int env, const char *lib)
{
    lua_getglobal(L, lib);
    int src = lua_gettop(L);
    lua_newtable(L);
    lua_pushnil(L);
    while (lua_next(L, src)) {
        lua_pushvalue(L, -2);
        lua_insert(L, -2);
        lua_rawset(L, -4);
    }
    lua_setfield(L, env, lib);
    lua_pop(L, 1);
}

static int readonly_newindex(lua_State *L)
{
    return luaL_error(L,
                      "counterd.%s cannot be changed from a sandbox (it is shared by every "
                      "policy and role); keep state in counterd.shared",
                      lua_isstring(L, 2) ? lua_tostring(L, 2) : "?");
}

/* Pushes an empty table that reads through to the table at idx and refuses writes. */
static void push_readonly(lua_State *L, int idx)
{
    lua_newtable(L);
    lua_createtable(L, 0, 3);
    lua_pushvalue(L, idx);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, readonly_newindex);
    lua_setfield(L, -2, "__newindex");
    lua_pushboolean(L, 0);
    lua_setfield(L, -2, "__metatable");
    lua_setmetatable(L, -2);
}

/*
 * Pushes this sandbox's view of the counterd table: every field reads through to the one
 * shared table, and neither it nor its plain sub-tables (counterd.shared, counterd.json,
 * counterd.config, ...) can be written, so no file can change the API under another.
 * A rawset on the view only changes this sandbox's own copy.
 */
static void push_api_view(struct host *h)
{
    lua_State *L = h->L;
    lua_rawgeti(L, LUA_REGISTRYINDEX, h->api_ref);
    int api = lua_gettop(L);
    lua_newtable(L);
    int content = lua_gettop(L);
    lua_pushnil(L);
    while (lua_next(L, api)) {
        if (lua_type(L, -1) == LUA_TTABLE) {
            if (lua_getmetatable(L, -1)) { /* an object of its own kind: kept as it is */
                lua_pop(L, 1);
            } else {
                push_readonly(L, lua_gettop(L));
                lua_remove(L, -2);
            }
        }
        lua_pushvalue(L, -2);
        lua_insert(L, -2);
        lua_rawset(L, content);
    }
    push_readonly(L, content);
    lua_replace(L, api);
    lua_settop(L, api);
}

void sandbox__push_sandbox(struct host *h)
{
    lua_State *L = h->L;
    static const char *globals[] = {"assert", "error",        "ipairs",       "next",
                                    "pairs",  "select",       "tonumber",     "tostring",
                                    "type",   "unpack",       "rawequal",     "rawget",
                                    "rawset", "setmetatable", "getmetatable", NULL};
    static const char *libraries[] = {"string", "table", "math", "bit", NULL};
    lua_newtable(L);
    int env = lua_gettop(L);
    for (const char **g = globals; *g; g++)
        copy_global(L, env, *g);
    for (const char **l = libraries; *l; l++)
        copy_library(L, env, *l);
    lua_getfield(L, LUA_REGISTRYINDEX, "counterd.pcall");
    lua_setfield(L, env, "pcall");
    lua_getfield(L, LUA_REGISTRYINDEX, "counterd.xpcall");
    lua_setfield(L, env, "xpcall");
    lua_newtable(L); /* os: time only */
    int os = lua_gettop(L);
    copy_field(L, os, "os", "time");
    copy_field(L, os, "os", "clock");
    copy_field(L, os, "os", "date");
    lua_setfield(L, env, "os");
    push_api_view(h);
    lua_setfield(L, env, "counterd");
    lua_pushvalue(L, env);
    lua_setfield(L, env, "_G");
}

int sandbox__guarded_call(struct host *h, int nargs, int nresults, int policy)
{
    lua_State *L = h->L;
    int base = lua_gettop(L) - nargs;
    lua_pushcfunction(L, sandbox__on_error);
    lua_insert(L, base);
    struct watch outer;
    sandbox__watch_begin(h, &outer, policy);
    int rc = lua_pcall(L, nargs, nresults, base);
    sandbox__watch_end(h, L, &outer, rc != 0);
    lua_remove(L, base);
    return rc == 0 ? 0 : -1;
}

int sandbox__run_file(struct host *h, const char *folder, const char *name, int jit_off, char *path,
                      size_t pathlen, char *err, size_t errlen)
{
    lua_State *L = h->L;
    snprintf(path, pathlen, "%s/%s/%s.lua", h->dir, folder, name);
    if (luaL_loadfile(L, path) != 0) {
        snprintf(err, errlen, "%s", lua_tostring(L, -1));
        return -1;
    }
    if (jit_off)
        luaJIT_setmode(L, -1, LUAJIT_MODE_ALLFUNC | LUAJIT_MODE_OFF);
    sandbox__push_sandbox(h);
    lua_setfenv(L, -2);
    if (sandbox__guarded_call(h, 0, 1, jit_off) != 0) {
        snprintf(err, errlen, "%s", lua_tostring(L, -1));
        return -1;
    }
    return 0;
}
