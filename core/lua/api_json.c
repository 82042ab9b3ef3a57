/*
 * api_json.c - counterd.json: JSON for Lua roles.
 *
 *   counterd.json.decode(text) -> value, or nil, "... at offset N"
 *   counterd.json.encode(value) -> text       (raises on cycles, functions, NaN...)
 *   counterd.json.null                        decodes from null, encodes to null
 *   counterd.json.array(t) -> t               marks t to encode as an array even if empty
 *
 * Decoding uses the core's strict reader (base/json.h), which keeps integers exact: an
 * integer beyond 2^53, which a Lua number cannot hold, becomes a LuaJIT int64_t cdata
 * (it compares and adds with numbers) and is encoded back digit for digit, so counts
 * relayed through Lua stay exact. Encoding: a table whose keys are exactly 1..n is an
 * array; any other table an object with its keys sorted, so answers are stable; an empty
 * unmarked table is {}. Integral numbers up to 2^53 are written without a fraction.
 */
#include <lauxlib.h>
#include <lua.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../base/buf.h"
#include "../base/json.h"
#include "host.h"
#include "sandbox.h"
#include "api.h"

#define ARRAY_MARK "counterd.json.array"
#define INT64_MAKER "counterd.json.int64"
#define MAX_DEPTH 64
#define LUA_TCDATA_ 10                  /* LuaJIT's type number for cdata */
#define EXACT_DOUBLE 9007199254740992.0 /* 2^53 */

static void push_value(lua_State *L, const struct json *v)
{
    luaL_checkstack(L, 6, "json too deep");
    switch (v->type) {
    case JSON_NULL: lua_pushlightuserdata(L, NULL); break;
    case JSON_TRUE: lua_pushboolean(L, 1); break;
    case JSON_FALSE: lua_pushboolean(L, 0); break;
    case JSON_INT:
        if (v->u.i >= -(int64_t)EXACT_DOUBLE && v->u.i <= (int64_t)EXACT_DOUBLE) {
            lua_pushnumber(L, (double)v->u.i);
        } else {
            /* hi * 2^32 + lo, computed in int64_t by the maker (see json_inject). */
            lua_getfield(L, LUA_REGISTRYINDEX, INT64_MAKER);
            lua_pushnumber(L, (double)(v->u.i >> 32));
            lua_pushnumber(L, (double)(uint32_t)(v->u.i & 0xffffffff));
            lua_call(L, 2, 1);
        }
        break;
    case JSON_NUM: lua_pushnumber(L, v->num); break;
    case JSON_STR: lua_pushlstring(L, v->u.s, v->len); break;
    case JSON_ARR:
        lua_createtable(L, (int)v->len, 0);
        for (uint32_t i = 0; i < v->len; i++) {
            push_value(L, &v->u.items[i]);
            lua_rawseti(L, -2, (int)i + 1);
        }
        luaL_getmetatable(L, ARRAY_MARK);
        lua_setmetatable(L, -2);
        break;
    case JSON_OBJ:
        lua_createtable(L, 0, (int)v->len);
        for (uint32_t i = 0; i < v->len; i++) {
            const struct json_member *m = &v->u.members[i];
            lua_pushlstring(L, m->key, m->key_len);
            push_value(L, &m->val);
            lua_rawset(L, -3);
        }
        break;
    default: lua_pushnil(L);
    }
}

static int parser_gc(lua_State *L)
{
    json_parser_free(lua_touserdata(L, 1));
    return 0;
}

static int l_decode(lua_State *L)
{
    size_t len;
    const char *text = luaL_checklstring(L, 1, &len);
    struct json_parser *p = lua_touserdata(L, lua_upvalueindex(1));
    const struct json *root = json_parse(p, text, len);
    if (!root) {
        lua_pushnil(L);
        lua_pushstring(L, p->err);
        return 2;
    }
    push_value(L, root);
    return 1;
}

static void encode(lua_State *L, int idx, struct buf *b, int depth);

static void encode_number(lua_State *L, struct buf *b, lua_Number n)
{
    if (!isfinite(n))
        luaL_error(L, "counterd.json.encode: cannot encode %f", n);
    if (n == floor(n) && fabs(n) <= EXACT_DOUBLE) {
        buf_i64(b, (int64_t)n);
        return;
    }
    /* The shortest form that reads back as the same double: 1.66, not 1.6599999999999999. */
    char tmp[32];
    for (int prec = 15; prec <= 17; prec++) {
        snprintf(tmp, sizeof tmp, "%.*g", prec, n);
        if (strtod(tmp, NULL) == n)
            break;
    }
    buf_puts(b, tmp);
}

/* An int64_t/uint64_t cdata: tostring gives "123LL" or "123ULL"; the digits are the value. */
static void encode_cdata(lua_State *L, int idx, struct buf *b)
{
    lua_getglobal(L, "tostring");
    lua_pushvalue(L, idx);
    lua_call(L, 1, 1);
    size_t n;
    const char *s = lua_tolstring(L, -1, &n);
    size_t digits = 0;
    while (digits < n && (s[digits] == '-' || (s[digits] >= '0' && s[digits] <= '9')))
        digits++;
    if (!digits || (strcmp(s + digits, "LL") && strcmp(s + digits, "ULL")))
        luaL_error(L, "counterd.json.encode: cannot encode cdata %s", s);
    buf_append(b, s, digits);
    lua_pop(L, 1);
}

/* Whether the table at idx is an array: marked, or keys exactly 1..n with n > 0. */
static int is_array(lua_State *L, int idx, size_t *n)
{
    *n = lua_objlen(L, idx);
    if (lua_getmetatable(L, idx)) {
        luaL_getmetatable(L, ARRAY_MARK);
        int marked = lua_rawequal(L, -1, -2);
        lua_pop(L, 2);
        if (marked)
            return 1;
    }
    if (*n == 0)
        return 0;
    size_t count = 0;
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        lua_pop(L, 1);
        if (lua_type(L, -1) != LUA_TNUMBER) {
            lua_pop(L, 1);
            return 0;
        }
        count++;
    }
    return count == *n;
}

static void encode_table(lua_State *L, int idx, struct buf *b, int depth)
{
    size_t n;
    if (is_array(L, idx, &n)) {
        buf_putc(b, '[');
        for (size_t i = 1; i <= n; i++) {
            if (i > 1)
                buf_putc(b, ',');
            lua_rawgeti(L, idx, (int)i);
            encode(L, lua_gettop(L), b, depth + 1);
            lua_pop(L, 1);
        }
        buf_putc(b, ']');
        return;
    }
    /* Keys sorted, for answers that read the same every time. The keys live in a Lua
     * table, so an error while encoding a value leaks nothing. */
    lua_newtable(L);
    int keys = lua_gettop(L), count = 0;
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        lua_pop(L, 1);
        if (lua_type(L, -1) != LUA_TSTRING)
            luaL_error(L, "counterd.json.encode: object keys must be strings");
        lua_pushvalue(L, -1);
        lua_rawseti(L, keys, ++count);
    }
    lua_getglobal(L, "table");
    lua_getfield(L, -1, "sort");
    lua_pushvalue(L, keys);
    lua_call(L, 1, 0);
    lua_pop(L, 1);
    buf_putc(b, '{');
    for (int i = 1; i <= count; i++) {
        if (i > 1)
            buf_putc(b, ',');
        lua_rawgeti(L, keys, i);
        size_t len;
        const char *k = lua_tolstring(L, -1, &len);
        buf_json_str(b, k, len);
        buf_putc(b, ':');
        lua_rawget(L, idx);
        encode(L, lua_gettop(L), b, depth + 1);
        lua_pop(L, 1);
    }
    buf_putc(b, '}');
    lua_pop(L, 1);
}

/*
 * The text a policy call may encode. The buffer is C memory, which the cap on a policy
 * call's Lua heap does not see: without this, a table holding one 1 MiB string ten
 * thousand times would take seconds and 10 GB before the budget could stop it.
 */
#define POLICY_MAX_TEXT ((size_t)64 << 20)

static void check_room(lua_State *L, const struct buf *b, size_t more)
{
    if (b->len + more > POLICY_MAX_TEXT && sandbox_deadline_ms(L))
        luaL_error(L, "counterd.json.encode: a policy may encode at most %d MiB of text",
                   (int)(POLICY_MAX_TEXT >> 20));
}

static void encode(lua_State *L, int idx, struct buf *b, int depth)
{
    check_room(L, b, 0);
    if (depth > MAX_DEPTH)
        luaL_error(L, "counterd.json.encode: nesting deeper than %d (a cycle?)", MAX_DEPTH);
    switch (lua_type(L, idx)) {
    case LUA_TNIL: buf_puts(b, "null"); break;
    case LUA_TBOOLEAN: buf_puts(b, lua_toboolean(L, idx) ? "true" : "false"); break;
    case LUA_TNUMBER: encode_number(L, b, lua_tonumber(L, idx)); break;
    case LUA_TSTRING: {
        size_t len;
        const char *s = lua_tolstring(L, idx, &len);
        check_room(L, b, len);
        buf_json_str(b, s, len);
        break;
    }
    case LUA_TCDATA_: encode_cdata(L, idx, b); break;
    case LUA_TLIGHTUSERDATA:
        if (lua_touserdata(L, idx) == NULL) {
            buf_puts(b, "null");
            break;
        }
        /* fall through */
    case LUA_TTABLE:
        if (lua_type(L, idx) == LUA_TTABLE) {
            encode_table(L, idx, b, depth);
            break;
        }
        /* fall through */
    default: luaL_error(L, "counterd.json.encode: cannot encode a %s", luaL_typename(L, idx));
    }
}

/* Encodes into a userdata-owned buffer so a Lua error cannot leak it. */
static int buf_gc(lua_State *L)
{
    buf_free(lua_touserdata(L, 1));
    return 0;
}

static int l_encode(lua_State *L)
{
    luaL_checkany(L, 1);
    struct buf *b = lua_newuserdata(L, sizeof *b);
    memset(b, 0, sizeof *b);
    luaL_getmetatable(L, "counterd.json.buf");
    lua_setmetatable(L, -2);
    encode(L, 1, b, 0);
    lua_pushlstring(L, b->data ? b->data : "", b->len);
    buf_free(b);
    return 1;
}

static int l_array(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    luaL_getmetatable(L, ARRAY_MARK);
    lua_setmetatable(L, 1);
    lua_settop(L, 1);
    return 1;
}

void api_json_inject(lua_State *L)
{
    luaL_newmetatable(L, ARRAY_MARK);
    lua_pop(L, 1);
    /* Exact big integers as int64_t cdata. */
    if (luaL_dostring(
            L, "local ffi = require('ffi') "
               "return function(hi, lo) return ffi.new('int64_t', hi) * 4294967296 + lo end"))
        lua_error(L);
    lua_setfield(L, LUA_REGISTRYINDEX, INT64_MAKER);
    luaL_newmetatable(L, "counterd.json.buf");
    lua_pushcfunction(L, buf_gc);
    lua_setfield(L, -2, "__gc");
    lua_pop(L, 1);
    lua_newtable(L);
    /* One reusable parser, freed with the state. */
    struct json_parser *p = lua_newuserdata(L, sizeof *p);
    json_parser_init(p);
    lua_newtable(L);
    lua_pushcfunction(L, parser_gc);
    lua_setfield(L, -2, "__gc");
    lua_setmetatable(L, -2);
    lua_pushcclosure(L, l_decode, 1);
    lua_setfield(L, -2, "decode");
    lua_pushcfunction(L, l_encode);
    lua_setfield(L, -2, "encode");
    lua_pushcfunction(L, l_array);
    lua_setfield(L, -2, "array");
    lua_pushlightuserdata(L, NULL);
    lua_setfield(L, -2, "null");
    lua_setfield(L, -2, "json");
}

/* (api.h) */
int api_json_encode_at(lua_State *L, int idx, struct buf *b)
{
    encode(L, idx, b, 0);
    return 0;
}
