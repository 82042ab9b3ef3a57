/*
 * policy.c - the roles' side of the Lua policies: routing.route, faults.decide and the
 * lab's regions, called through the host's generic calls (see policy.h).
 *
 * Policies answer with codes ("unknown_policy", "no_healthy_region"), never with
 * sentences to be matched: the sentences people read are written here. Nothing here
 * keeps a Lua value across calls or lets a Lua error reach the caller.
 */
#include "policy.h"

#include <lauxlib.h>
#include <lua.h>
#include <stdio.h>
#include <string.h>

#include "../base/buf.h"
#include "../base/log.h"
#include "../lua/host.h"

void policy_declare(struct host *h)
{
    host_policy_entry(h, "routing", "route");
    host_policy_entry(h, "faults", "decide");
}

/* ---------------------------------------------------------------- routing */

/* Pushes route()'s six arguments on L. */
static void push_route_args(lua_State *L, const char *policy, const char *counter,
                            const char *client_region, const char *token, const char *const *names,
                            const int *healthy, int n)
{
    lua_pushstring(L, policy);
    lua_pushstring(L, counter);
    if (client_region)
        lua_pushstring(L, client_region);
    else
        lua_pushnil(L);
    lua_createtable(L, n, 0);
    for (int i = 0; i < n; i++) {
        lua_pushstring(L, names[i]);
        lua_rawseti(L, -2, i + 1);
    }
    lua_createtable(L, n, 0);
    for (int i = 0; i < n; i++) {
        lua_pushboolean(L, healthy[i]);
        lua_rawseti(L, -2, i + 1);
    }
    if (token)
        lua_pushstring(L, token);
    else
        lua_pushnil(L);
}

/*
 * The sentence for route()'s nil, code, known (the three values on top of L), in err.
 * @return -1 for an unknown policy, -2 otherwise (no healthy region, or a code of the
 *         file's own, passed on as it is).
 */
static int route_refused(lua_State *L, const char *policy, char *err, size_t errlen)
{
    const char *code = lua_tostring(L, -2);
    if (!code) {
        snprintf(err, errlen, "no region");
        return -2;
    }
    if (strcmp(code, "no_healthy_region") == 0) {
        snprintf(err, errlen, "no healthy region");
        return -2;
    }
    if (strcmp(code, "unknown_policy") != 0) {
        snprintf(err, errlen, "%s", code);
        return -2;
    }
    struct buf known = {0};
    for (int i = 1; lua_istable(L, -1); i++) {
        lua_rawgeti(L, -1, i);
        const char *name = lua_tostring(L, -1);
        if (name)
            buf_printf(&known, "%s%s", i > 1 ? ", " : "", name);
        lua_pop(L, 1);
        if (!name)
            break;
    }
    if (known.len)
        snprintf(err, errlen, "unknown routing policy '%s' (known: %s)", policy, known.data);
    else
        snprintf(err, errlen, "unknown routing policy '%s'", policy);
    buf_free(&known);
    return -1;
}

int policy_route(struct host *h, const char *policy, const char *counter, const char *client_region,
                 const char *token, const char *const *names, const int *healthy, int n, char *err,
                 size_t errlen)
{
    lua_State *L = host_state(h);
    int top = lua_gettop(L);
    char lerr[512];
    if (!host_has_policy(h, "routing") && host_load_policy(h, "routing", lerr, sizeof lerr) < 0) {
        log_error("routing policy not loaded: %s", lerr);
        return -3;
    }
    push_route_args(L, policy, counter, client_region, token, names, healthy, n);
    int rc = host_call_policy(h, "routing", "route", 6, 3, lerr, sizeof lerr);
    if (rc == -1) {
        /* Only a policy that removed its own route() gets here (loading checks it). */
        log_error("routing.route is not a function any more; choosing a healthy region instead");
        host_count_error(h, "routing");
        return -3;
    }
    if (rc < 0) {
        log_error("routing.route failed, choosing a healthy region instead: %s", lerr);
        return -3;
    }
    if (lua_isnumber(L, -3)) {
        int i = (int)lua_tointeger(L, -3);
        rc = i >= 1 && i <= n ? i - 1 : -3;
        if (rc == -3) {
            log_error("routing.route returned %d, not a region index 1..%d", i, n);
            host_count_error(h, "routing");
        }
    } else {
        rc = route_refused(L, policy, err, errlen);
    }
    lua_settop(L, top);
    return rc;
}

/* ---------------------------------------------------------------- faults */

/* faults.decide's answer (the two values on top of L) as policy_faults_decide returns it. */
static int faults_action(lua_State *L, int *delay_ms)
{
    const char *action = lua_tostring(L, -2);
    if (!action) {
        log_error("faults.decide returned %s, not an action; delivering", luaL_typename(L, -2));
    } else if (strcmp(action, "deliver") == 0) {
        return 0;
    } else if (strcmp(action, "drop") == 0) {
        return 1;
    } else if (strcmp(action, "delay") == 0) {
        double ms = lua_tonumber(L, -1);
        if (ms > 0 && ms <= 600000) {
            *delay_ms = (int)ms;
            return 2;
        }
        log_error("faults.decide asked for a delay of %g ms (must be 0 < ms <= 600000); "
                  "delivering",
                  ms);
    } else {
        log_error("faults.decide returned unknown action '%s'; delivering", action);
    }
    return -1;
}

int policy_faults_decide(struct host *h, const char *dir, const char *from, const char *to,
                         const char *kind, int partitioned, int *delay_ms)
{
    lua_State *L = host_state(h);
    int top = lua_gettop(L);
    lua_pushstring(L, dir);
    lua_pushstring(L, from);
    lua_pushstring(L, to);
    lua_pushstring(L, kind);
    lua_pushboolean(L, partitioned);
    char err[512];
    int rc = host_call_policy(h, "faults", "decide", 5, 2, err, sizeof err);
    if (rc == -1)
        return -1;
    if (rc < 0) {
        log_error("faults.decide failed, delivering as if there were no policy: %s", err);
        return -1;
    }
    rc = faults_action(L, delay_ms);
    if (rc < 0)
        host_count_error(h, "faults");
    lua_settop(L, top);
    /* With a real network (--net, "faults.net") the wire delays every packet of the link:
     * a delay here would count the WAN twice. Drops still apply. */
    if (rc == 2 && host_shared_get_number(h, "faults.net") == 1)
        rc = 0;
    return rc;
}

int policy_faults_link(struct host *h, const char *a, const char *b, int *delay_ms, int *cut,
                       char *err, size_t errlen)
{
    lua_State *L = host_state(h);
    int top = lua_gettop(L);
    lua_pushstring(L, a);
    lua_pushstring(L, b);
    if (host_call_policy(h, "faults", "link", 2, 2, err, errlen) < 0)
        return -1;
    int rc = 0;
    double ms = lua_tonumber(L, -2);
    if (!lua_isnumber(L, -2) || ms < 0 || ms > 600000) {
        snprintf(err, errlen,
                 "faults.link(%s, %s) returned %s as the delay, not a number of ms "
                 "from 0 to 600000",
                 a, b, luaL_typename(L, -2));
        host_count_error(h, "faults");
        rc = -1;
    } else {
        *delay_ms = (int)ms;
        *cut = lua_toboolean(L, -1);
    }
    lua_settop(L, top);
    return rc;
}

/* ---------------------------------------------------------------- the lab */

int policy_lab_regions(struct host *h, char names[][64], char urls[][512], int max)
{
    lua_State *L = host_state(h);
    int top = lua_gettop(L), n = 0;
    char err[512];
    if (host_load_module(h, "conf", "lab", err, sizeof err) < 0) {
        log_error("lua/conf/lab.lua: %s", err);
        goto out;
    }
    if (!lua_istable(L, -1)) {
        log_error("lua/conf/lab.lua: no table");
        goto out;
    }
    lua_getfield(L, -1, "regions");
    if (host_pcall(h, 0, 1, err, sizeof err) != 0) {
        log_error("lua/conf/lab.lua: regions(): %s", err);
        goto out;
    }
    if (!lua_istable(L, -1))
        goto out;
    for (int i = 1; n < max; i++) {
        lua_rawgeti(L, -1, i);
        if (!lua_istable(L, -1))
            break;
        lua_getfield(L, -1, "name");
        lua_getfield(L, -2, "url");
        if (lua_isstring(L, -2) && lua_isstring(L, -1)) {
            snprintf(names[n], 64, "%s", lua_tostring(L, -2));
            snprintf(urls[n], 512, "%s", lua_tostring(L, -1));
            n++;
        }
        lua_pop(L, 3);
    }
out:
    lua_settop(L, top);
    return n;
}
