/*
 * host_internal.h - what the files of the Lua host share (host.c, sandbox.c, task.c,
 * api_core.c): the host's structure and the helpers one of them defines for the others.
 * Nothing outside core/lua/ includes it: the rest of the core sees host.h only.
 */
#ifndef COUNTERD_LUA_HOST_INTERNAL_H
#define COUNTERD_LUA_HOST_INTERNAL_H

#include <lua.h>
#include <stddef.h>
#include <stdint.h>

#include "host.h"

#define MAX_POLICIES 8

struct policy {
    char name[32];
    int ref; /* module table in the registry */
    char path[512];
    struct metric_series *m_calls;
};

struct lua_task;
struct lua_pending;

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

/* ---------------------------------------------------------------- host.c */

/* The loaded policy of that name, or NULL. */
struct policy *lua_host__find_policy(struct lua_host *h, const char *name);
/* Counts one call into policy p (counterd_lua_policy_calls_total). */
void lua_host__count_call(struct lua_host *h, struct policy *p);

/* ---------------------------------------------------------------- sandbox.c */

/* Puts the counting, capped allocator under the new state (before anything is allocated
 * in it), and after the libraries are open the pcall guards and the watchdog hook. */
void lua_host__count_heap(struct lua_host *h);
void lua_host__make_guards(struct lua_host *h);
void lua_host__start_watchdog(struct lua_host *h);

/* Whether the running call's deadline has passed. */
int lua_host__past_deadline(const struct lua_host *h);

/* What a call under the watchdog replaced, to put back when it ends. */
struct watch {
    double deadline_ms;
    int64_t heap_limit;
    int policy;
};

/* Starts a call's budget of time and heap, unless it runs inside a call that has one
 * (a policy loading another): the outer budget then covers both. policy: the call runs
 * policy code (rather than a role or configuration file being loaded). */
void lua_host__watch_begin(struct lua_host *h, struct watch *outer, int policy);
/* Ends it; a failed call's "not enough memory" becomes a message saying which limit. */
void lua_host__watch_end(struct lua_host *h, lua_State *L, const struct watch *outer, int failed);

/* Message handler for lua_pcall: keeps the message (which carries file:line). */
int lua_host__on_error(lua_State *L);

/* Runs the function on top of the stack (below it its nargs arguments) under the
 * watchdog; policy says it is policy code. @return 0, or -1 with the message on top of
 * the stack. */
int lua_host__guarded_call(struct lua_host *h, int nargs, int nresults, int policy);

/*
 * Runs <lua_dir>/<folder>/<name>.lua in a fresh sandbox under the budget and leaves what
 * it returned on the stack; interpreted only (jit_off) for policies, so the watchdog sees
 * every instruction. @return 0, or -1 with "file:line: message" in err.
 */
int lua_host__run_file(struct lua_host *h, const char *folder, const char *name, int jit_off,
                       char *path, size_t pathlen, char *err, size_t errlen);

/* Pushes a fresh environment for one file (see sandbox.c). */
void lua_host__push_sandbox(struct lua_host *h);

/* ---------------------------------------------------------------- task.c */

/* Cancels the work tasks wait for and frees the tasks (the state is closed after). */
void lua_host__free_tasks(struct lua_host *h);

/* ---------------------------------------------------------------- api_core.c */

/* counterd.now_ms, time, token, conf, require and policy, on the table on top. */
void lua_api_core_inject(lua_State *L);

#endif
