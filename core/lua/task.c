/*
 * task.c - the Lua host's tasks: coroutines the event loop drives (request handlers of
 * Lua roles, timers), and the work they wait for (see host.h).
 *
 * A task is anchored in the registry while it runs or waits, and ends exactly once (its
 * done callback, then its coroutine is released). This file must never let a Lua error
 * unwind through the event loop: every resume's status is checked.
 */
#include <lauxlib.h>
#include <lua.h>
#include <stdlib.h>

#include "../base/log.h"
#include "../base/mem.h"
#include "host_internal.h"
#include "task.h"

struct task {
    struct host *h;
    lua_State *co;
    int ref; /* anchors the coroutine in the registry while it runs */
    task_done_fn done;
    void *arg;
    struct trace_span *span; /* the request it serves, when traced */
    struct task *prev, *next;
};

struct task_pending {
    void (*cancel)(void *arg);
    void *arg;
    struct task_pending *prev, *next;
};

lua_State *task_state(struct task *t)
{
    return t->co;
}

struct task *task_of(lua_State *co)
{
    lua_getfield(co, LUA_REGISTRYINDEX, "counterd.tasks");
    lua_pushthread(co);
    lua_rawget(co, -2);
    struct task *t = lua_touserdata(co, -1);
    lua_pop(co, 2);
    return t;
}

static void task_end(struct task *t, int status)
{
    struct host *h = t->h;
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

void task_resume(struct task *t, int nargs)
{
    int status = lua_resume(t->co, nargs);
    if (status == LUA_YIELD)
        return; /* waiting for its next event */
    task_end(t, status);
}

void task_spawn(struct host *h, int nargs, task_done_fn done, void *arg)
{
    task_spawn_traced(h, nargs, done, arg, NULL);
}

struct trace_span *task_span(struct task *t)
{
    return t ? t->span : NULL;
}

void task_spawn_traced(struct host *h, int nargs, task_done_fn done, void *arg,
                       struct trace_span *span)
{
    lua_State *L = h->L;
    lua_State *co = lua_newthread(L);
    struct task *t = xcalloc(1, sizeof *t);
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
    task_resume(t, nargs);
}

struct task_pending *task_pending_add(struct host *h, void (*cancel)(void *arg), void *arg)
{
    struct task_pending *p = xcalloc(1, sizeof *p);
    p->cancel = cancel;
    p->arg = arg;
    p->next = h->pending;
    if (h->pending)
        h->pending->prev = p;
    h->pending = p;
    return p;
}

void task_pending_remove(struct host *h, struct task_pending *p)
{
    if (p->prev)
        p->prev->next = p->next;
    else
        h->pending = p->next;
    if (p->next)
        p->next->prev = p->prev;
    free(p);
}

void task__free_all(struct host *h)
{
    while (h->pending) { /* timers and calls tasks wait for */
        struct task_pending *p = h->pending;
        h->pending = p->next;
        p->cancel(p->arg);
        free(p);
    }
    while (h->tasks) { /* waiting on events that will not come any more */
        struct task *t = h->tasks;
        h->tasks = t->next;
        free(t);
    }
}
