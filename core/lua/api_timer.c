/*
 * api_timer.c - counterd.sleep, counterd.spawn, counterd.every: time for Lua tasks.
 *
 *   counterd.sleep(ms)            yields the calling task for ms milliseconds
 *   counterd.spawn(fn, ...)       runs fn(...) as a new task now (errors are logged)
 *   counterd.every(ms, fn)        runs fn() as a task every ms milliseconds; a run still
 *                                 going when the next is due makes that one skip
 *
 * Policies cannot call spawn or every: the tasks would run outside their time budget.
 */
#include <event2/event.h>
#include <lauxlib.h>
#include <lua.h>
#include <stdlib.h>

#include "../base/log.h"
#include "../base/mem.h"
#include "host.h"
#include "task.h"
#include "sandbox.h"
#include "api.h"

struct sleeper {
    struct host *h;
    struct task *task;
    struct event *ev;
    struct task_pending *pending;
};

static void sleeper_cancel(void *arg)
{
    struct sleeper *s = arg;
    event_free(s->ev);
    free(s);
}

static void on_wake(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct sleeper *s = arg;
    struct task *t = s->task;
    task_pending_remove(s->h, s->pending);
    event_free(s->ev);
    free(s);
    task_resume(t, 0);
}

static int l_sleep(lua_State *L)
{
    double ms = luaL_checknumber(L, 1);
    struct task *t = task_of(L);
    if (!t)
        return luaL_error(L, "counterd.sleep can only be called from a request handler or task");
    struct sleeper *s = xcalloc(1, sizeof *s);
    s->h = host_of(L);
    s->task = t;
    s->ev = evtimer_new(host_base(s->h), on_wake, s);
    s->pending = task_pending_add(s->h, sleeper_cancel, s);
    if (ms < 0)
        ms = 0;
    struct timeval tv = {(long)(ms / 1000), (long)((long)ms % 1000) * 1000};
    evtimer_add(s->ev, &tv);
    return lua_yield(L, 0);
}

/* A task or a timer started by a policy would run after the policy call, outside its
 * budget, where a loop holds the event loop for good: policies cannot start them. */
static void refuse_in_policy(lua_State *L, const char *fn)
{
    if (sandbox_in_policy(L))
        luaL_error(L,
                   "counterd.%s: a policy cannot start tasks (they would run outside its "
                   "time budget)",
                   fn);
}

static int l_spawn(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TFUNCTION);
    refuse_in_policy(L, "spawn");
    struct host *h = host_of(L);
    int n = lua_gettop(L);
    lua_State *main = host_state(h);
    /* Copy the function and its arguments to the main state, which spawns from there. */
    for (int i = 1; i <= n; i++)
        lua_pushvalue(L, i);
    lua_xmove(L, main, n);
    task_spawn(h, n - 1, NULL, NULL);
    return 0;
}

struct ticker {
    struct host *h;
    int fn_ref;
    int running;
    struct event *ev;
};

static void ticker_done(lua_State *co, int nresults, const char *err, void *arg)
{
    (void)co;
    (void)nresults;
    struct ticker *tk = arg;
    tk->running = 0;
    if (err)
        log_error("periodic lua task failed: %s", err);
}

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct ticker *tk = arg;
    if (tk->running)
        return;
    tk->running = 1;
    lua_State *L = host_state(tk->h);
    lua_rawgeti(L, LUA_REGISTRYINDEX, tk->fn_ref);
    task_spawn(tk->h, 0, ticker_done, tk);
}

static int ticker_gc(lua_State *L)
{
    struct ticker **p = lua_touserdata(L, 1);
    if (*p) {
        event_free((*p)->ev);
        free(*p);
        *p = NULL;
    }
    return 0;
}

static int l_every(lua_State *L)
{
    double ms = luaL_checknumber(L, 1);
    luaL_checktype(L, 2, LUA_TFUNCTION);
    if (ms < 1)
        return luaL_error(L, "counterd.every: the period must be at least 1 ms");
    refuse_in_policy(L, "every");
    struct host *h = host_of(L);
    struct ticker *tk = xcalloc(1, sizeof *tk);
    tk->h = h;
    lua_pushvalue(L, 2);
    tk->fn_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    tk->ev = event_new(host_base(h), -1, EV_PERSIST, on_tick, tk);
    struct timeval tv = {(long)(ms / 1000), (long)((long)ms % 1000) * 1000};
    event_add(tk->ev, &tv);
    /* Owned by the Lua state: freed when it closes. */
    struct ticker **p = lua_newuserdata(L, sizeof *p);
    *p = tk;
    luaL_getmetatable(L, "counterd.ticker");
    lua_setmetatable(L, -2);
    lua_getfield(L, LUA_REGISTRYINDEX, "counterd.tickers");
    lua_pushvalue(L, -2);
    lua_rawseti(L, -2, (int)lua_objlen(L, -2) + 1);
    lua_pop(L, 1);
    return 1;
}

void api_timer_inject(lua_State *L)
{
    luaL_newmetatable(L, "counterd.ticker");
    lua_pushcfunction(L, ticker_gc);
    lua_setfield(L, -2, "__gc");
    lua_pop(L, 1);
    lua_newtable(L);
    lua_setfield(L, LUA_REGISTRYINDEX, "counterd.tickers");
    lua_pushcfunction(L, l_sleep);
    lua_setfield(L, -2, "sleep");
    lua_pushcfunction(L, l_spawn);
    lua_setfield(L, -2, "spawn");
    lua_pushcfunction(L, l_every);
    lua_setfield(L, -2, "every");
}
