/*
 * api_limits.c - the standard library functions a policy call could keep busy for
 * seconds, bounded while one runs; outside a policy call they are the originals.
 *
 *   string.rep    a result longer than MAX_REP bytes is refused
 *   table.sort    compares through a function that watches the deadline: the built-in
 *                 sort compares in C, where the watchdog hook never runs, and a sort of
 *                 a few million numbers (or quicksort's worst case on a crafted order)
 *                 takes seconds
 *
 * Matching is in api_pattern.c. Whatever else can grow without bound (table.concat,
 * string.format, gsub's output, '..' in a loop) meets the cap host.c puts on the heap a
 * policy call may grow, which also bounds the time spent filling that memory; unpack and
 * string.byte refuse more results than the Lua stack holds, and string.format refuses
 * widths over 99, before doing any work.
 */
#include <lauxlib.h>
#include <lua.h>
#include <stdint.h>

#include "host.h"
#include "sandbox.h"
#include "api.h"

#define MAX_REP (1 << 20)

/* Calls the original (upvalue 1) with the arguments as they are. */
static int call_original(lua_State *L)
{
    int n = lua_gettop(L);
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    lua_call(L, n, LUA_MULTRET);
    return lua_gettop(L);
}

/* string.rep(s, n [, sep]). The arguments are checked here, like the original does, so
 * that an error names 'rep' and not the C call behind it. */
static int l_rep(lua_State *L)
{
    size_t len, seplen;
    luaL_checklstring(L, 1, &len);
    lua_Number count = luaL_checknumber(L, 2);
    luaL_optlstring(L, 3, "", &seplen);
    /* The count as the original reads it: out of the 32-bit range is INT32_MIN. */
    double n = count >= -2147483648.0 && count < 2147483648.0 ? (double)(int32_t)count : -1;
    if (n >= 1) {
        double total = (double)len * n + (double)seplen * (n - 1);
        if (total > MAX_REP && sandbox_deadline_ms(L))
            return luaL_error(L,
                              "string.rep: a policy may build strings of at most %d bytes "
                              "(this one would be %f)",
                              MAX_REP, total);
    }
    return call_original(L);
}

static int less_watched(lua_State *L)
{
    static unsigned calls;
    if ((++calls & 1023) == 0)
        sandbox_check_budget(L);
    lua_pushboolean(L, lua_lessthan(L, 1, 2));
    return 1;
}

/* table.sort(t [, comp]). A comp of the policy's own is Lua, which the hook watches. */
static int l_sort(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    if (!lua_isnoneornil(L, 2)) {
        luaL_checktype(L, 2, LUA_TFUNCTION);
    } else if (sandbox_deadline_ms(L)) {
        lua_settop(L, 1);
        lua_pushcfunction(L, less_watched);
    }
    return call_original(L);
}

static void wrap(lua_State *L, const char *lib, const char *name, lua_CFunction fn)
{
    lua_getglobal(L, lib);
    lua_getfield(L, -1, name);
    lua_pushcclosure(L, fn, 1);
    lua_setfield(L, -2, name);
    lua_pop(L, 1);
}

void api_limits_inject(lua_State *L)
{
    wrap(L, "string", "rep", l_rep);
    wrap(L, "table", "sort", l_sort);
}
