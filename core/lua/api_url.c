/*
 * api_url.c - counterd.query: the query-string decoder of the C routes (core/net/url.c),
 * for the Lua roles, so that a C route and a Lua route read a query string alike.
 *
 *   local q, detail, name = counterd.query("a=1&b=x+y")
 *     q = {a = "1", b = "x y"}; '+' is a space; the first of repeated names wins; a bare
 *     "a" is a = "". On a bad percent-escape: nil, the 400 detail (the C routes' wording),
 *     and the parameter's name as written.
 *
 * It never raises for bad input (a string that is not a query string is the client's
 * error, answered with a 400); only a non-string argument is misuse and raises.
 */
#include <lauxlib.h>
#include <lua.h>
#include <string.h>

#include "../net/url.h"
#include "host.h"
#include "api.h"

/* Decodes src into scratch and pushes it; @return 0, or -1 on a bad escape. */
static int push_decoded(lua_State *L, const char *src, size_t len, char *scratch, size_t cap)
{
    long n = url_form_decode(src, len, scratch, cap);
    if (n < 0)
        return -1; /* cap is the whole query's length + 1: only a bad escape fails */
    lua_pushlstring(L, scratch, (size_t)n);
    return 0;
}

static int l_query(lua_State *L)
{
    size_t len;
    const char *q = lua_isnoneornil(L, 1) ? "" : luaL_checklstring(L, 1, &len);
    len = strlen(q);
    char *scratch = lua_newuserdata(L, len + 1); /* collected with the call: no leak on error */
    lua_newtable(L);
    struct url_param p;
    while (url_query_next(&q, &p)) {
        if (push_decoded(L, p.name, p.name_len, scratch, len + 1) < 0)
            goto bad;
        if (push_decoded(L, p.value, p.value_len, scratch, len + 1) < 0) {
            lua_pop(L, 1);
            goto bad;
        }
        lua_pushvalue(L, -2);
        lua_rawget(L, -4);
        int seen = !lua_isnil(L, -1) || lua_objlen(L, -3) == 0;
        lua_pop(L, 1);
        if (seen) /* the first of repeated names wins; an empty name is skipped */
            lua_pop(L, 2);
        else
            lua_rawset(L, -3);
    }
    return 1;
bad:;
    char detail[200];
    url_query_bad_detail(p.name, p.name_len, detail, sizeof detail);
    lua_pushnil(L);
    lua_pushstring(L, detail);
    lua_pushlstring(L, p.name, p.name_len);
    return 3;
}

void api_url_inject(lua_State *L)
{
    lua_pushcfunction(L, l_query);
    lua_setfield(L, -2, "query");
}
