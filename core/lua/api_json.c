/*
 * api_json.c - counterd.json: JSON for Lua roles, on cJSON.
 *
 *   counterd.json.decode(text) -> value, or nil, "error at offset N"
 *   counterd.json.encode(value) -> text       (raises on cycles, functions, NaN keys...)
 *   counterd.json.null                        decodes from null, encodes to null
 *   counterd.json.array(t) -> t               marks t to encode as an array even if empty
 *
 * Encoding: a table whose keys are exactly 1..n is an array; any other table an object
 * with its keys sorted, so answers are stable; an empty unmarked table is {}. Numbers
 * that are integers up to 2^53 are written without a fraction. Lua numbers are doubles,
 * so counts past 2^53 lose precision here: the C core keeps exact ones.
 */
#include <cjson/cJSON.h>
#include <lauxlib.h>
#include <lua.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../base/buf.h"
#include "host.h"

#define ARRAY_MARK "counterd.json.array"
#define MAX_DEPTH 64

static void push_value(lua_State *L, const cJSON *v, int depth)
{
    luaL_checkstack(L, 4, "json too deep");
    if (cJSON_IsNull(v)) {
        lua_pushlightuserdata(L, NULL);
    } else if (cJSON_IsBool(v)) {
        lua_pushboolean(L, cJSON_IsTrue(v));
    } else if (cJSON_IsNumber(v)) {
        lua_pushnumber(L, v->valuedouble);
    } else if (cJSON_IsString(v)) {
        lua_pushstring(L, v->valuestring);
    } else if (cJSON_IsArray(v)) {
        lua_createtable(L, cJSON_GetArraySize(v), 0);
        int i = 1;
        for (const cJSON *c = v->child; c; c = c->next) {
            push_value(L, c, depth + 1);
            lua_rawseti(L, -2, i++);
        }
        luaL_getmetatable(L, ARRAY_MARK);
        lua_setmetatable(L, -2);
    } else if (cJSON_IsObject(v)) {
        lua_createtable(L, 0, 8);
        for (const cJSON *c = v->child; c; c = c->next) {
            push_value(L, c, depth + 1);
            lua_setfield(L, -2, c->string);
        }
    } else {
        lua_pushnil(L);
    }
}

static int l_decode(lua_State *L)
{
    size_t len;
    const char *text = luaL_checklstring(L, 1, &len);
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(text, len, &end, 0);
    /* cJSON's own "nothing after the value" check wants a NUL inside len: do it here. */
    while (root && end < text + len && (*end == ' ' || *end == '\t' || *end == '\n' || *end == '\r'))
        end++;
    if (!root || end != text + len) {
        cJSON_Delete(root);
        lua_pushnil(L);
        lua_pushfstring(L, "invalid JSON at offset %d", end ? (int)(end - text) : 0);
        return 2;
    }
    push_value(L, root, 0);
    cJSON_Delete(root);
    return 1;
}

static void encode(lua_State *L, int idx, struct buf *b, int depth);

static void encode_number(lua_State *L, struct buf *b, lua_Number n)
{
    if (!isfinite(n))
        luaL_error(L, "counterd.json.encode: cannot encode %f", n);
    if (n == floor(n) && fabs(n) <= 9007199254740992.0) {
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

static void encode(lua_State *L, int idx, struct buf *b, int depth)
{
    if (depth > MAX_DEPTH)
        luaL_error(L, "counterd.json.encode: nesting deeper than %d (a cycle?)", MAX_DEPTH);
    switch (lua_type(L, idx)) {
    case LUA_TNIL: buf_puts(b, "null"); break;
    case LUA_TBOOLEAN: buf_puts(b, lua_toboolean(L, idx) ? "true" : "false"); break;
    case LUA_TNUMBER: encode_number(L, b, lua_tonumber(L, idx)); break;
    case LUA_TSTRING: {
        size_t len;
        const char *s = lua_tolstring(L, idx, &len);
        buf_json_str(b, s, len);
        break;
    }
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

void lua_api_json_inject(lua_State *L)
{
    luaL_newmetatable(L, ARRAY_MARK);
    lua_pop(L, 1);
    luaL_newmetatable(L, "counterd.json.buf");
    lua_pushcfunction(L, buf_gc);
    lua_setfield(L, -2, "__gc");
    lua_pop(L, 1);
    lua_newtable(L);
    lua_pushcfunction(L, l_decode);
    lua_setfield(L, -2, "decode");
    lua_pushcfunction(L, l_encode);
    lua_setfield(L, -2, "encode");
    lua_pushcfunction(L, l_array);
    lua_setfield(L, -2, "array");
    lua_pushlightuserdata(L, NULL);
    lua_setfield(L, -2, "null");
    lua_setfield(L, -2, "json");
}

/* For C callers (roles answering a table): encodes the value at idx into b.
 * Runs under the caller's protection (errors propagate as Lua errors). */
int lua_api_json_encode_at(lua_State *L, int idx, struct buf *b);
int lua_api_json_encode_at(lua_State *L, int idx, struct buf *b)
{
    encode(L, idx, b, 0);
    return 0;
}
