/*
 * host.c - the LuaJIT host: the state, loading files and reloading them as a transaction,
 * and calling their functions (see host.h). The sandbox and the budget are sandbox.c's,
 * tasks are task.c's, counterd's own fields api_core.c's.
 *
 * Registry layout: the `counterd` API table (built once), the shared table behind
 * counterd.shared, and one entry per loaded policy (its module table), referenced by
 * name from h->policies. This file knows no policy by name: what a policy means belongs
 * to the roles that call it (core/roles/policy.c).
 */
#include "host.h"

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../base/buf.h"
#include "../base/hash.h"
#include "../base/log.h"
#include "../base/mem.h"
#include "../obs/metrics.h"
#include "host_internal.h"
#include "api.h"

struct host *host_of(lua_State *L)
{
    lua_getfield(L, LUA_REGISTRYINDEX, "counterd.host");
    struct host *h = lua_touserdata(L, -1);
    lua_pop(L, 1);
    return h;
}

/* The state with its libraries, bounded where a policy could keep them busy. */
static void open_state(struct host *h)
{
    h->L = luaL_newstate();
    if (!h->L) {
        log_error("cannot create the Lua state");
        abort();
    }
    lua_State *L = h->L;
    sandbox__count_heap(h);
    luaL_openlibs(L);
    /* Matching and the other library functions a policy could keep busy for seconds,
     * bounded by the budget; installed in the real tables, so that s:find() and the
     * copies each sandbox gets use them too. */
    api_pattern_inject(L);
    api_limits_inject(L);
    /* getmetatable("") would hand out the real string table, shared by every file. */
    lua_pushliteral(L, "");
    lua_getmetatable(L, -1);
    lua_pushboolean(L, 0);
    lua_setfield(L, -2, "__metatable");
    lua_pop(L, 2);
    /* LuaJIT's math.random starts from a fixed seed: every gateway would route the same. */
    lua_getglobal(L, "math");
    lua_getfield(L, -1, "randomseed");
    lua_pushnumber(L, (double)(hash_random_u64() >> 12));
    lua_call(L, 1, 0);
    lua_pop(L, 1);
    lua_pushlightuserdata(L, h);
    lua_setfield(L, LUA_REGISTRYINDEX, "counterd.host");
    sandbox__make_guards(h);
}

/* The single counterd table every policy sees (the global, package.loaded.counterd). */
static void build_api(struct host *h, const struct host_info *info)
{
    lua_State *L = h->L;
    lua_newtable(L);
    lua_pushstring(L, info->role ? info->role : "");
    lua_setfield(L, -2, "role");
    lua_pushstring(L, info->node_id ? info->node_id : "");
    lua_setfield(L, -2, "node_id");
    lua_pushstring(L, info->region ? info->region : "");
    lua_setfield(L, -2, "region");
    api_core_inject(L);
    api_log_inject(L);
    api_shared_inject(L);
    api_json_inject(L);
    api_http_inject(L);
    api_url_inject(L);
    api_timer_inject(L);
    api_metrics_inject(L);
    api_trace_inject(L);
    lua_pushvalue(L, -1);
    lua_setglobal(L, "counterd");
    lua_getglobal(L, "package");
    lua_getfield(L, -1, "loaded");
    lua_pushvalue(L, -3);
    lua_setfield(L, -2, "counterd");
    lua_pop(L, 2);
    h->api_ref = luaL_ref(L, LUA_REGISTRYINDEX);
}

static void add_metrics(struct host *h, struct metrics *metrics)
{
    h->m_errors =
        metrics_add(metrics, METRIC_COUNTER, "counterd_policy_errors_total",
                    "Lua policy calls that failed and fell back to the default", "policy", NULL, 0);
    h->m_calls = metrics_add(metrics, METRIC_COUNTER, "counterd_lua_policy_calls_total",
                             "Calls into Lua policies", "policy", NULL, 0);
    h->m_reloads =
        metrics_add(metrics, METRIC_COUNTER, "counterd_lua_reloads_total",
                    "Reloads of the Lua files, by result (ok, error)", "result", NULL, 0);
}

struct host *host_new(const char *lua_dir, const struct host_info *info, struct metrics *metrics)
{
    struct host *h = xcalloc(1, sizeof *h);
    h->dir = xstrdup(lua_dir);
    h->budget_ms = info->budget_ms > 0 ? info->budget_ms : 50;
    open_state(h);
    build_api(h, info);
    lua_State *L = h->L;
    h->role_ref = LUA_NOREF;
    lua_newtable(L);
    lua_setfield(L, LUA_REGISTRYINDEX, "counterd.modules");
    lua_newtable(L); /* coroutine -> its task */
    lua_setfield(L, LUA_REGISTRYINDEX, "counterd.tasks");
    h->metrics = metrics;
    sandbox__start_watchdog(h);
    if (metrics)
        add_metrics(h, metrics);
    return h;
}

void host_free(struct host *h)
{
    if (!h)
        return;
    task__free_all(h);
    lua_close(h->L);
    free(h->dir);
    free(h);
}

void host_set_client(struct host *h, struct client *client)
{
    h->client = client;
}
struct client *host_client(struct host *h)
{
    return h->client;
}
void host_set_base(struct host *h, struct event_base *base)
{
    h->base = base;
}
struct event_base *host_base(struct host *h)
{
    return h->base;
}
struct metrics *host_metrics(struct host *h)
{
    return h->metrics;
}

const char *host_dir(const struct host *h)
{
    return h->dir;
}
lua_State *host_state(struct host *h)
{
    return h->L;
}

struct policy *host__find_policy(struct host *h, const char *name)
{
    for (int i = 0; i < h->npolicies; i++)
        if (strcmp(h->policies[i].name, name) == 0)
            return &h->policies[i];
    return NULL;
}

int host_has_policy(struct host *h, const char *name)
{
    return host__find_policy(h, name) != NULL;
}

void host_count_error(struct host *h, const char *policy)
{
    if (h->m_errors) {
        const char *v[1] = {policy};
        metric_add(metric_series(h->m_errors, v), 1);
    }
}

/*
 * The function the C core calls in a policy (declared by its caller): a file without it is
 * refused when loaded, so that a misspelt name is an error at reload time rather than a
 * silent fallback on every later call.
 */
static const char *entry_point(const struct host *h, const char *policy)
{
    for (int i = 0; i < h->nentries; i++)
        if (strcmp(h->entries[i][0], policy) == 0)
            return h->entries[i][1];
    return NULL;
}

void host_policy_entry(struct host *h, const char *policy, const char *fn)
{
    for (int i = 0; i < h->nentries; i++)
        if (strcmp(h->entries[i][0], policy) == 0) {
            snprintf(h->entries[i][1], sizeof h->entries[i][1], "%s", fn);
            return;
        }
    if (h->nentries == MAX_POLICIES) {
        log_error("too many policy entry points (at most %d); %s.%s is not checked", MAX_POLICIES,
                  policy, fn);
        return;
    }
    snprintf(h->entries[h->nentries][0], sizeof h->entries[0][0], "%s", policy);
    snprintf(h->entries[h->nentries][1], sizeof h->entries[0][1], "%s", fn);
    h->nentries++;
}

/*
 * Runs policies/<name>.lua and its init() and leaves the module table on the stack.
 * @return 0, or -1 with "file:line: message" in err (the stack as it was).
 */
static int stage_policy(struct host *h, const char *name, char *path, size_t pathlen, char *err,
                        size_t errlen)
{
    lua_State *L = h->L;
    int top = lua_gettop(L);
    if (sandbox__run_file(h, "policies", name, 1, path, pathlen, err, errlen) < 0)
        goto fail;
    if (!lua_istable(L, -1)) {
        snprintf(err, errlen, "%s: the file must return a table of functions (it returned %s)",
                 path, luaL_typename(L, -1));
        goto fail;
    }
    const char *fn = entry_point(h, name);
    if (fn) {
        lua_getfield(L, -1, fn);
        int ok = lua_isfunction(L, -1);
        lua_pop(L, 1);
        if (!ok) {
            snprintf(err, errlen, "%s: the file must return a table with a %s() function", path,
                     fn);
            goto fail;
        }
    }
    lua_getfield(L, -1, "init");
    if (lua_isfunction(L, -1)) {
        if (sandbox__guarded_call(h, 0, 0, 1) != 0) {
            snprintf(err, errlen, "%s", lua_tostring(L, -1));
            goto fail;
        }
    } else {
        lua_pop(L, 1);
    }
    return 0;
fail:
    lua_settop(L, top);
    return -1;
}

/*
 * Runs roles/<name>.lua and leaves its module table on the stack.
 * @return 0, or -1 with "file:line: message" in err (the stack as it was).
 */
static int stage_role(struct host *h, const char *name, char *path, size_t pathlen, char *err,
                      size_t errlen)
{
    lua_State *L = h->L;
    int top = lua_gettop(L);
    if (sandbox__run_file(h, "roles", name, 0, path, pathlen, err, errlen) < 0)
        goto fail;
    lua_getfield(L, -1, "handle");
    if (!lua_istable(L, -2) || !lua_isfunction(L, -1)) {
        snprintf(err, errlen, "%s: the file must return a table with a handle(req) function", path);
        goto fail;
    }
    lua_pop(L, 1);
    return 0;
fail:
    lua_settop(L, top);
    return -1;
}

int host_reload(struct host *h, struct buf *files, char *err, size_t errlen)
{
    lua_State *L = h->L;
    int top = lua_gettop(L);
    char path[512];
    int refs[MAX_POLICIES], role = LUA_NOREF, n = 0;
    /* Library modules are read afresh: the new role must not run on the old helpers. A
     * fresh cache is installed while staging and the old one put back on failure. */
    lua_getfield(L, LUA_REGISTRYINDEX, "counterd.modules");
    int old_modules = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_newtable(L);
    lua_setfield(L, LUA_REGISTRYINDEX, "counterd.modules");
    for (; n < h->npolicies; n++) {
        if (stage_policy(h, h->policies[n].name, path, sizeof path, err, errlen) < 0)
            goto fail;
        refs[n] = luaL_ref(L, LUA_REGISTRYINDEX);
        if (files)
            buf_printf(files, "%s%s", files->len ? "\n" : "", path);
    }
    if (h->role_name[0]) {
        if (stage_role(h, h->role_name, path, sizeof path, err, errlen) < 0)
            goto fail;
        role = luaL_ref(L, LUA_REGISTRYINDEX);
        if (files)
            buf_printf(files, "%s%s", files->len ? "\n" : "", path);
    }
    /* Everything compiled and initialised: swap. */
    for (int i = 0; i < n; i++) {
        luaL_unref(L, LUA_REGISTRYINDEX, h->policies[i].ref);
        h->policies[i].ref = refs[i];
    }
    if (role != LUA_NOREF) {
        luaL_unref(L, LUA_REGISTRYINDEX, h->role_ref);
        h->role_ref = role;
    }
    luaL_unref(L, LUA_REGISTRYINDEX, old_modules);
    lua_settop(L, top);
    if (h->m_reloads) {
        const char *v[1] = {"ok"};
        metric_add(metric_series(h->m_reloads, v), 1);
    }
    log_info("reloaded %d policy file(s)%s", n, h->role_name[0] ? " and the role" : "");
    return 0;
fail:
    for (int i = 0; i < n; i++)
        luaL_unref(L, LUA_REGISTRYINDEX, refs[i]);
    lua_rawgeti(L, LUA_REGISTRYINDEX, old_modules);
    lua_setfield(L, LUA_REGISTRYINDEX, "counterd.modules");
    luaL_unref(L, LUA_REGISTRYINDEX, old_modules);
    lua_settop(L, top);
    if (h->m_reloads) {
        const char *v[1] = {"error"};
        metric_add(metric_series(h->m_reloads, v), 1);
    }
    log_error("reload failed, the old Lua files keep serving: %s", err);
    return -1;
}

void host_shared_set_number(struct host *h, const char *key, double v)
{
    lua_State *L = h->L;
    lua_getfield(L, LUA_REGISTRYINDEX, "counterd.shared.data");
    if (v == v)
        lua_pushnumber(L, v);
    else
        lua_pushnil(L);
    lua_setfield(L, -2, key);
    lua_pop(L, 1);
}

double host_shared_get_number(struct host *h, const char *key)
{
    lua_State *L = h->L;
    lua_getfield(L, LUA_REGISTRYINDEX, "counterd.shared.data");
    lua_getfield(L, -1, key);
    double v = lua_isnumber(L, -1) ? lua_tonumber(L, -1) : NAN;
    lua_pop(L, 2);
    return v;
}

int host_load_policy(struct host *h, const char *name, char *err, size_t errlen)
{
    lua_State *L = h->L;
    int top = lua_gettop(L);
    char path[512];
    if (stage_policy(h, name, path, sizeof path, err, errlen) < 0)
        goto fail;
    struct policy *p = host__find_policy(h, name);
    if (!p) {
        if (h->npolicies == MAX_POLICIES) {
            snprintf(err, errlen, "too many policies (at most %d)", MAX_POLICIES);
            goto fail;
        }
        p = &h->policies[h->npolicies++];
        snprintf(p->name, sizeof p->name, "%s", name);
    } else {
        luaL_unref(L, LUA_REGISTRYINDEX, p->ref);
    }
    p->ref = luaL_ref(L, LUA_REGISTRYINDEX);
    snprintf(p->path, sizeof p->path, "%s", path);
    lua_settop(L, top);
    log_info("policy %s loaded from %s", name, path);
    return 0;
fail:
    lua_settop(L, top);
    return -1;
}

int host_load_role(struct host *h, const char *name, char *err, size_t errlen)
{
    lua_State *L = h->L;
    int top = lua_gettop(L);
    char path[512];
    if (stage_role(h, name, path, sizeof path, err, errlen) < 0)
        goto fail;
    if (h->role_ref != LUA_NOREF)
        luaL_unref(L, LUA_REGISTRYINDEX, h->role_ref);
    h->role_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    snprintf(h->role_name, sizeof h->role_name, "%s", name);
    lua_settop(L, top);
    log_info("role %s loaded from %s", name, path);
    return 0;
fail:
    lua_settop(L, top);
    return -1;
}

int host_load_module(struct host *h, const char *folder, const char *name, char *err, size_t errlen)
{
    int top = lua_gettop(h->L);
    char path[512];
    if (sandbox__run_file(h, folder, name, 0, path, sizeof path, err, errlen) < 0) {
        lua_settop(h->L, top);
        return -1;
    }
    return 0;
}

/* Pushes the function fn of the module table behind ref. @return 0, or -1 (nothing pushed). */
static int push_module_fn(struct host *h, int ref, const char *fn)
{
    if (ref == LUA_NOREF)
        return -1;
    lua_rawgeti(h->L, LUA_REGISTRYINDEX, ref);
    lua_getfield(h->L, -1, fn);
    lua_remove(h->L, -2);
    if (!lua_isfunction(h->L, -1)) {
        lua_pop(h->L, 1);
        return -1;
    }
    return 0;
}

int host_push_role_fn(struct host *h, const char *fn)
{
    return push_module_fn(h, h->role_ref, fn);
}

void host_push_role_field(struct host *h, const char *field)
{
    if (h->role_ref == LUA_NOREF) {
        lua_pushnil(h->L);
        return;
    }
    lua_rawgeti(h->L, LUA_REGISTRYINDEX, h->role_ref);
    lua_getfield(h->L, -1, field);
    lua_remove(h->L, -2);
}

void host__count_call(struct host *h, struct policy *p)
{
    if (!h->m_calls)
        return;
    if (!p->m_calls) {
        const char *v[1] = {p->name};
        p->m_calls = metric_series(h->m_calls, v);
    }
    metric_add(p->m_calls, 1);
}

/* Pushes policy.fn; @return 0, or -1 (nothing pushed) when either is missing. */
static int push_policy_fn(struct host *h, const char *policy, const char *fn)
{
    struct policy *p = host__find_policy(h, policy);
    if (p)
        host__count_call(h, p);
    return p ? push_module_fn(h, p->ref, fn) : -1;
}

int host_pcall(struct host *h, int nargs, int nresults, char *err, size_t errlen)
{
    if (sandbox__guarded_call(h, nargs, nresults, 0) != 0) {
        snprintf(err, errlen, "%s", lua_tostring(h->L, -1));
        lua_pop(h->L, 1);
        return -1;
    }
    return 0;
}

int host_call_policy(struct host *h, const char *policy, const char *fn, int nargs, int nresults,
                     char *err, size_t errlen)
{
    lua_State *L = h->L;
    if (push_policy_fn(h, policy, fn) < 0) {
        lua_pop(L, nargs);
        if (host__find_policy(h, policy))
            snprintf(err, errlen, "%s.%s is not a function", policy, fn);
        else
            snprintf(err, errlen, "policy %s is not loaded", policy);
        return -1;
    }
    lua_insert(L, -(nargs + 1));
    if (sandbox__guarded_call(h, nargs, nresults, 1) != 0) {
        const char *msg = lua_tostring(L, -1);
        snprintf(err, errlen, "%s", msg ? msg : "(error object is not a string)");
        lua_pop(L, 1);
        host_count_error(h, policy);
        return -2;
    }
    return 0;
}

int host_push_policy(struct host *h, const char *name)
{
    struct policy *p = host__find_policy(h, name);
    if (!p)
        return -1;
    lua_rawgeti(h->L, LUA_REGISTRYINDEX, p->ref);
    return 0;
}
