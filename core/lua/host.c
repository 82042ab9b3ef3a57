/*
 * host.c - the LuaJIT host: state, sandbox, watchdog, policy loading (see host.h).
 *
 * Registry layout: the `counterd` API table (built once), the shared table behind
 * counterd.shared, and one entry per loaded policy (its module table), referenced by
 * name from h->policies.
 */
#include "host.h"

#include <lauxlib.h>
#include <lua.h>
#include <luajit.h>
#include <lualib.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../base/buf.h"
#include "../base/clock.h"
#include "../base/hash.h"
#include "../base/log.h"
#include "../base/mem.h"
#include "../obs/metrics.h"

#define MAX_POLICIES 8

struct policy {
    char name[32];
    int ref; /* module table in the registry */
    char path[512];
    struct metric_series *m_calls;
};

struct lua_task {
    struct lua_host *h;
    lua_State *co;
    int ref; /* anchors the coroutine in the registry while it runs */
    lua_task_done_fn done;
    void *arg;
    struct trace_span *span; /* the request it serves, when traced */
    struct lua_task *prev, *next;
};

struct lua_pending {
    void (*cancel)(void *arg);
    void *arg;
    struct lua_pending *prev, *next;
};

struct lua_host {
    lua_State *L;
    char *dir;
    struct lua_task *tasks; /* running or waiting */
    struct lua_pending *pending;
    int role_ref;
    char role_name[32]; /* "" until a role is loaded */
    struct http_client *client;
    struct event_base *base;
    struct metrics *metrics;
    int api_ref; /* the counterd table */
    struct policy policies[MAX_POLICIES];
    int npolicies;
    /* Functions a policy file must define (lua_host_policy_entry): "name" -> "fn". */
    char entries[MAX_POLICIES][2][32];
    int nentries;
    int budget_ms;
    double deadline_ms; /* 0: no call running under the watchdog */
    /* The Lua heap as the allocator sees it, and the most a policy call may grow it to
     * (0 outside one); heap_hit says the cap refused an allocation. */
    lua_Alloc alloc;
    void *alloc_ud;
    int64_t heap, heap_limit;
    int heap_hit;
    int policies_running; /* policy calls on the C stack now (they nest) */
    struct metric *m_errors, *m_calls, *m_reloads;
};

/* The hook runs every HOOK_EVERY VM instructions of non-compiled code. */
#define HOOK_EVERY 1000
/* How far one policy call may grow the Lua heap. Past it allocations fail ("not enough
 * memory"): a string or table built in a loop, table.concat, string.format or gsub
 * cannot take the node's memory, nor the seconds it takes to fill it. */
#define POLICY_HEAP_MAX ((int64_t)64 << 20)

static struct lua_host *host_of(lua_State *L)
{
    lua_getfield(L, LUA_REGISTRYINDEX, "counterd.host");
    struct lua_host *h = lua_touserdata(L, -1);
    lua_pop(L, 1);
    return h;
}

struct lua_host *lua_host_of(lua_State *L)
{
    return host_of(L);
}

static void watchdog(lua_State *L, lua_Debug *ar)
{
    (void)ar;
    struct lua_host *h = host_of(L);
    if (h && h->deadline_ms && clock_mono_ms() > h->deadline_ms) {
        /* Level 0 is the Lua function the hook interrupted: its file:line tells the reader
         * where the policy was looping (luaL_error would name the caller, often C). */
        luaL_where(L, 0);
        lua_pushfstring(L, "policy ran longer than its budget of %d ms", h->budget_ms);
        lua_concat(L, 2);
        lua_error(L);
    }
}

static int past_deadline(const struct lua_host *h)
{
    return h->deadline_ms && clock_mono_ms() > h->deadline_ms;
}

void lua_host_check_budget(lua_State *L)
{
    lua_checkstack(L, 2);
    struct lua_host *h = host_of(L);
    if (h && past_deadline(h))
        luaL_error(L, "policy ran longer than its budget of %d ms", h->budget_ms);
}

double lua_host_deadline_ms(lua_State *L)
{
    lua_checkstack(L, 2);
    struct lua_host *h = host_of(L);
    return h ? h->deadline_ms : 0;
}

int lua_host_in_policy(lua_State *L)
{
    lua_checkstack(L, 2);
    struct lua_host *h = host_of(L);
    return h && h->policies_running > 0;
}

/* LuaJIT's allocator, counted, refusing to grow the heap past the running call's cap. */
static void *host_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
    struct lua_host *h = ud;
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

/* What a call under the watchdog replaced, to put back when it ends. */
struct watch {
    double deadline_ms;
    int64_t heap_limit;
    int policy;
};

/* Starts a call's budget of time and heap, unless it runs inside a call that has one
 * (a policy loading another): the outer budget then covers both. policy: the call runs
 * policy code (rather than a role or configuration file being loaded). */
static void watch_begin(struct lua_host *h, struct watch *outer, int policy)
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

/* Ends it; a failed call's "not enough memory" becomes a message saying which limit. */
static void watch_end(struct lua_host *h, lua_State *L, const struct watch *outer, int failed)
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
    struct lua_host *h = lua_touserdata(L, lua_upvalueindex(1));
    if (!past_deadline(h))
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

static void make_guards(struct lua_host *h)
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

/* Message handler for lua_pcall: keeps the message (which carries file:line). */
static int on_error(lua_State *L)
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
static void push_api_view(struct lua_host *h)
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

/* Pushes a fresh environment for one policy file. */
static void push_sandbox(struct lua_host *h)
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

/* ---------------------------------------------------------------- set-up */

static int api_policy(lua_State *L);

static int api_now_ms(lua_State *L)
{
    lua_pushnumber(L, clock_mono_ms());
    return 1;
}

/* counterd.token(): 16 random hex digits (an idempotency token, a request id). */
static int api_token(lua_State *L)
{
    char t[17];
    snprintf(t, sizeof t, "%016llx", (unsigned long long)random_u64());
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
    struct lua_host *h = host_of(L);
    char path[512];
    snprintf(path, sizeof path, "%s/%s/%s.lua", h->dir, folder, name);
    if (luaL_loadfile(L, path) != 0)
        return lua_error(L);
    push_sandbox(h);
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

struct lua_host *lua_host_new(const char *lua_dir, const struct lua_host_info *info,
                              struct metrics *metrics)
{
    struct lua_host *h = xcalloc(1, sizeof *h);
    h->dir = xstrdup(lua_dir);
    h->budget_ms = info->budget_ms > 0 ? info->budget_ms : 50;
    h->L = luaL_newstate();
    if (!h->L) {
        log_error("cannot create the Lua state");
        abort();
    }
    lua_State *L = h->L;
    /* Count the heap from here on: LuaJIT's own allocator behind a counter. */
    h->alloc = lua_getallocf(L, &h->alloc_ud);
    h->heap = (int64_t)lua_gc(L, LUA_GCCOUNT, 0) * 1024 + lua_gc(L, LUA_GCCOUNTB, 0);
    lua_setallocf(L, host_alloc, h);
    luaL_openlibs(L);
    /* Matching and the other library functions a policy could keep busy for seconds,
     * bounded by the budget; installed in the real tables, so that s:find() and the
     * copies each sandbox gets use them too. */
    lua_api_pattern_inject(L);
    lua_api_limits_inject(L);
    /* getmetatable("") would hand out the real string table, shared by every file. */
    lua_pushliteral(L, "");
    lua_getmetatable(L, -1);
    lua_pushboolean(L, 0);
    lua_setfield(L, -2, "__metatable");
    lua_pop(L, 2);
    /* LuaJIT's math.random starts from a fixed seed: every gateway would route the same. */
    lua_getglobal(L, "math");
    lua_getfield(L, -1, "randomseed");
    lua_pushnumber(L, (double)(random_u64() >> 12));
    lua_call(L, 1, 0);
    lua_pop(L, 1);
    lua_pushlightuserdata(L, h);
    lua_setfield(L, LUA_REGISTRYINDEX, "counterd.host");
    make_guards(h);

    /* The single counterd table every policy sees. */
    lua_newtable(L);
    lua_pushstring(L, info->role ? info->role : "");
    lua_setfield(L, -2, "role");
    lua_pushstring(L, info->node_id ? info->node_id : "");
    lua_setfield(L, -2, "node_id");
    lua_pushstring(L, info->region ? info->region : "");
    lua_setfield(L, -2, "region");
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
    lua_api_log_inject(L);
    lua_api_shared_inject(L);
    lua_api_json_inject(L);
    lua_api_http_inject(L);
    lua_api_timer_inject(L);
    lua_api_metrics_inject(L);
    lua_api_trace_inject(L);
    lua_pushvalue(L, -1);
    lua_setglobal(L, "counterd");
    lua_getglobal(L, "package");
    lua_getfield(L, -1, "loaded");
    lua_pushvalue(L, -3);
    lua_setfield(L, -2, "counterd");
    lua_pop(L, 2);
    h->api_ref = luaL_ref(L, LUA_REGISTRYINDEX);

    h->role_ref = LUA_NOREF;
    lua_newtable(L);
    lua_setfield(L, LUA_REGISTRYINDEX, "counterd.modules");
    lua_newtable(L); /* coroutine -> its task */
    lua_setfield(L, LUA_REGISTRYINDEX, "counterd.tasks");
    h->metrics = metrics;

    lua_sethook(L, watchdog, LUA_MASKCOUNT, HOOK_EVERY);
    if (metrics) {
        h->m_errors = metrics_add(metrics, METRIC_COUNTER, "counterd_policy_errors_total",
                                  "Lua policy calls that failed and fell back to the default",
                                  "policy", NULL, 0);
        h->m_calls = metrics_add(metrics, METRIC_COUNTER, "counterd_lua_policy_calls_total",
                                 "Calls into Lua policies", "policy", NULL, 0);
        h->m_reloads =
            metrics_add(metrics, METRIC_COUNTER, "counterd_lua_reloads_total",
                        "Reloads of the Lua files, by result (ok, error)", "result", NULL, 0);
    }
    return h;
}

void lua_host_free(struct lua_host *h)
{
    if (!h)
        return;
    while (h->pending) { /* timers and calls tasks wait for */
        struct lua_pending *p = h->pending;
        h->pending = p->next;
        p->cancel(p->arg);
        free(p);
    }
    while (h->tasks) { /* waiting on events that will not come any more */
        struct lua_task *t = h->tasks;
        h->tasks = t->next;
        free(t);
    }
    lua_close(h->L);
    free(h->dir);
    free(h);
}

const char *lua_host_dir(const struct lua_host *h)
{
    return h->dir;
}
lua_State *lua_host_state(struct lua_host *h)
{
    return h->L;
}

static struct policy *find_policy(struct lua_host *h, const char *name)
{
    for (int i = 0; i < h->npolicies; i++)
        if (strcmp(h->policies[i].name, name) == 0)
            return &h->policies[i];
    return NULL;
}

int lua_host_has_policy(struct lua_host *h, const char *name)
{
    return find_policy(h, name) != NULL;
}

static void count_error(struct lua_host *h, const char *policy)
{
    if (h->m_errors) {
        const char *v[1] = {policy};
        metric_add(metric_series(h->m_errors, v), 1);
    }
}

/* Runs the function on top of the stack (below it its nargs arguments) under the
 * watchdog; policy says it is policy code. @return 0, or -1 with the message on top of
 * the stack. */
static int guarded_call(struct lua_host *h, int nargs, int nresults, int policy)
{
    lua_State *L = h->L;
    int base = lua_gettop(L) - nargs;
    lua_pushcfunction(L, on_error);
    lua_insert(L, base);
    struct watch outer;
    watch_begin(h, &outer, policy);
    int rc = lua_pcall(L, nargs, nresults, base);
    watch_end(h, L, &outer, rc != 0);
    lua_remove(L, base);
    return rc == 0 ? 0 : -1;
}

/*
 * Runs <lua_dir>/<folder>/<name>.lua in a fresh sandbox under the budget and leaves what
 * it returned on the stack; interpreted only (jit_off) for policies, so the watchdog sees
 * every instruction. @return 0, or -1 with "file:line: message" in err.
 */
static int run_file(struct lua_host *h, const char *folder, const char *name, int jit_off,
                    char *path, size_t pathlen, char *err, size_t errlen)
{
    lua_State *L = h->L;
    snprintf(path, pathlen, "%s/%s/%s.lua", h->dir, folder, name);
    if (luaL_loadfile(L, path) != 0) {
        snprintf(err, errlen, "%s", lua_tostring(L, -1));
        return -1;
    }
    if (jit_off)
        luaJIT_setmode(L, -1, LUAJIT_MODE_ALLFUNC | LUAJIT_MODE_OFF);
    push_sandbox(h);
    lua_setfenv(L, -2);
    if (guarded_call(h, 0, 1, jit_off) != 0) {
        snprintf(err, errlen, "%s", lua_tostring(L, -1));
        return -1;
    }
    return 0;
}

/*
 * The function the C core calls in a policy (declared by its caller): a file without it is
 * refused when loaded, so that a misspelt name is an error at reload time rather than a
 * silent fallback on every later call.
 */
static const char *entry_point(const struct lua_host *h, const char *policy)
{
    for (int i = 0; i < h->nentries; i++)
        if (strcmp(h->entries[i][0], policy) == 0)
            return h->entries[i][1];
    return NULL;
}

void lua_host_policy_entry(struct lua_host *h, const char *policy, const char *fn)
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
static int stage_policy(struct lua_host *h, const char *name, char *path, size_t pathlen, char *err,
                        size_t errlen)
{
    lua_State *L = h->L;
    int top = lua_gettop(L);
    if (run_file(h, "policies", name, 1, path, pathlen, err, errlen) < 0)
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
        if (guarded_call(h, 0, 0, 1) != 0) {
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
static int stage_role(struct lua_host *h, const char *name, char *path, size_t pathlen, char *err,
                      size_t errlen)
{
    lua_State *L = h->L;
    int top = lua_gettop(L);
    if (run_file(h, "roles", name, 0, path, pathlen, err, errlen) < 0)
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

int lua_host_reload(struct lua_host *h, struct buf *files, char *err, size_t errlen)
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

void lua_host_shared_set_number(struct lua_host *h, const char *key, double v)
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

double lua_host_shared_get_number(struct lua_host *h, const char *key)
{
    lua_State *L = h->L;
    lua_getfield(L, LUA_REGISTRYINDEX, "counterd.shared.data");
    lua_getfield(L, -1, key);
    double v = lua_isnumber(L, -1) ? lua_tonumber(L, -1) : NAN;
    lua_pop(L, 2);
    return v;
}

int lua_host_load_policy(struct lua_host *h, const char *name, char *err, size_t errlen)
{
    lua_State *L = h->L;
    int top = lua_gettop(L);
    char path[512];
    if (stage_policy(h, name, path, sizeof path, err, errlen) < 0)
        goto fail;
    struct policy *p = find_policy(h, name);
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

int lua_host_load_role(struct lua_host *h, const char *name, char *err, size_t errlen)
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

int lua_host_load_module(struct lua_host *h, const char *folder, const char *name, char *err,
                         size_t errlen)
{
    int top = lua_gettop(h->L);
    char path[512];
    if (run_file(h, folder, name, 0, path, sizeof path, err, errlen) < 0) {
        lua_settop(h->L, top);
        return -1;
    }
    return 0;
}

/* Pushes the function fn of the module table behind ref. @return 0, or -1 (nothing pushed). */
static int push_module_fn(struct lua_host *h, int ref, const char *fn)
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

int lua_host_push_role_fn(struct lua_host *h, const char *fn)
{
    return push_module_fn(h, h->role_ref, fn);
}

void lua_host_push_role_field(struct lua_host *h, const char *field)
{
    if (h->role_ref == LUA_NOREF) {
        lua_pushnil(h->L);
        return;
    }
    lua_rawgeti(h->L, LUA_REGISTRYINDEX, h->role_ref);
    lua_getfield(h->L, -1, field);
    lua_remove(h->L, -2);
}

static void count_call(struct lua_host *h, struct policy *p)
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
static int push_policy_fn(struct lua_host *h, const char *policy, const char *fn)
{
    struct policy *p = find_policy(h, policy);
    if (p)
        count_call(h, p);
    return p ? push_module_fn(h, p->ref, fn) : -1;
}

void lua_host_count_error(struct lua_host *h, const char *policy)
{
    count_error(h, policy);
}

int lua_host_pcall(struct lua_host *h, int nargs, int nresults, char *err, size_t errlen)
{
    if (guarded_call(h, nargs, nresults, 0) != 0) {
        snprintf(err, errlen, "%s", lua_tostring(h->L, -1));
        lua_pop(h->L, 1);
        return -1;
    }
    return 0;
}

int lua_host_call_policy(struct lua_host *h, const char *policy, const char *fn, int nargs,
                         int nresults, char *err, size_t errlen)
{
    lua_State *L = h->L;
    if (push_policy_fn(h, policy, fn) < 0) {
        lua_pop(L, nargs);
        snprintf(err, errlen, "%s.%s is not loaded", policy, fn);
        return -1;
    }
    lua_insert(L, -(nargs + 1));
    if (guarded_call(h, nargs, nresults, 1) != 0) {
        const char *msg = lua_tostring(L, -1);
        snprintf(err, errlen, "%s", msg ? msg : "(error object is not a string)");
        lua_pop(L, 1);
        count_error(h, policy);
        return -2;
    }
    return 0;
}

int lua_host_push_policy(struct lua_host *h, const char *name)
{
    struct policy *p = find_policy(h, name);
    if (!p)
        return -1;
    lua_rawgeti(h->L, LUA_REGISTRYINDEX, p->ref);
    return 0;
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
    struct lua_host *h = host_of(L);
    const char *policy = lua_tostring(L, lua_upvalueindex(1));
    const char *fn = lua_tostring(L, lua_upvalueindex(2));
    struct policy *p = find_policy(h, policy);
    int nargs = lua_gettop(L);
    if (!p) {
        lua_pushnil(L);
        lua_pushfstring(L, "policy failed: policy %s is not loaded", policy);
        return 2;
    }
    count_call(h, p);
    lua_rawgeti(L, LUA_REGISTRYINDEX, p->ref);
    lua_getfield(L, -1, fn);
    lua_remove(L, -2);
    lua_insert(L, 1);
    lua_pushcfunction(L, on_error);
    lua_insert(L, 1);
    struct watch outer;
    watch_begin(h, &outer, 1);
    int rc = lua_pcall(L, nargs, LUA_MULTRET, 1);
    watch_end(h, L, &outer, rc != 0);
    if (rc != 0) {
        /* Called from a policy whose own budget is spent: that call must end too. */
        if (past_deadline(h))
            return lua_error(L);
        const char *msg = lua_tostring(L, -1);
        log_error("%s.%s failed: %s", policy, fn, msg ? msg : "?");
        count_error(h, policy);
        lua_pushnil(L);
        lua_pushfstring(L, "policy failed: %s", msg ? msg : "?");
        return 2;
    }
    return lua_gettop(L) - 1;
}

static int policy_index(lua_State *L)
{
    struct lua_host *h = host_of(L);
    lua_getfield(L, 1, "__name");
    const char *policy = lua_tostring(L, -1);
    struct policy *p = find_policy(h, policy);
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
    struct lua_host *h = host_of(L);
    if (!find_policy(h, name)) {
        char err[512];
        if (lua_host_load_policy(h, name, err, sizeof err) < 0)
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

/* ---------------------------------------------------------------- tasks */

void lua_host_set_client(struct lua_host *h, struct http_client *client)
{
    h->client = client;
}
struct http_client *lua_host_client(struct lua_host *h)
{
    return h->client;
}
void lua_host_set_base(struct lua_host *h, struct event_base *base)
{
    h->base = base;
}
struct event_base *lua_host_base(struct lua_host *h)
{
    return h->base;
}
struct metrics *lua_host_metrics(struct lua_host *h)
{
    return h->metrics;
}
lua_State *lua_task_state(struct lua_task *t)
{
    return t->co;
}

struct lua_task *lua_task_of(lua_State *co)
{
    lua_getfield(co, LUA_REGISTRYINDEX, "counterd.tasks");
    lua_pushthread(co);
    lua_rawget(co, -2);
    struct lua_task *t = lua_touserdata(co, -1);
    lua_pop(co, 2);
    return t;
}

static void task_end(struct lua_task *t, int status)
{
    struct lua_host *h = t->h;
    lua_State *co = t->co;
    if (status == 0) {
        if (t->done)
            t->done(co, lua_gettop(co), NULL, t->arg);
    } else {
        const char *msg = lua_tostring(co, -1);
        if (!msg)
            msg = "(error object is not a string)";
        if (t->done)
            t->done(co, 0, msg, t->arg);
        else
            log_error("lua task failed: %s", msg);
    }
    lua_settop(co, 0);
    lua_getfield(h->L, LUA_REGISTRYINDEX, "counterd.tasks");
    lua_pushthread(co);
    lua_xmove(co, h->L, 1);
    lua_pushnil(h->L);
    lua_rawset(h->L, -3);
    lua_pop(h->L, 1);
    luaL_unref(h->L, LUA_REGISTRYINDEX, t->ref);
    if (t->prev)
        t->prev->next = t->next;
    else
        h->tasks = t->next;
    if (t->next)
        t->next->prev = t->prev;
    free(t);
}

void lua_task_resume(struct lua_task *t, int nargs)
{
    int status = lua_resume(t->co, nargs);
    if (status == LUA_YIELD)
        return; /* waiting for its next event */
    task_end(t, status);
}

void lua_host_spawn(struct lua_host *h, int nargs, lua_task_done_fn done, void *arg)
{
    lua_host_spawn_traced(h, nargs, done, arg, NULL);
}

struct trace_span *lua_task_span(struct lua_task *t)
{
    return t ? t->span : NULL;
}

void lua_host_spawn_traced(struct lua_host *h, int nargs, lua_task_done_fn done, void *arg,
                           struct trace_span *span)
{
    lua_State *L = h->L;
    lua_State *co = lua_newthread(L);
    struct lua_task *t = xcalloc(1, sizeof *t);
    t->h = h;
    t->co = co;
    t->done = done;
    t->arg = arg;
    t->span = span;
    /* Anchor the coroutine, and map it to its task. */
    lua_getfield(L, LUA_REGISTRYINDEX, "counterd.tasks");
    lua_pushvalue(L, -2);
    lua_pushlightuserdata(L, t);
    lua_rawset(L, -3);
    lua_pop(L, 1);
    t->ref = luaL_ref(L, LUA_REGISTRYINDEX); /* pops the thread */
    lua_xmove(L, co, nargs + 1);             /* the function and its arguments */
    t->next = h->tasks;
    if (h->tasks)
        h->tasks->prev = t;
    h->tasks = t;
    lua_task_resume(t, nargs);
}

struct lua_pending *lua_host_pending_add(struct lua_host *h, void (*cancel)(void *arg), void *arg)
{
    struct lua_pending *p = xcalloc(1, sizeof *p);
    p->cancel = cancel;
    p->arg = arg;
    p->next = h->pending;
    if (h->pending)
        h->pending->prev = p;
    h->pending = p;
    return p;
}

void lua_host_pending_remove(struct lua_host *h, struct lua_pending *p)
{
    if (p->prev)
        p->prev->next = p->next;
    else
        h->pending = p->next;
    if (p->next)
        p->next->prev = p->prev;
    free(p);
}
