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
#include "task.h"
#include "api.h"

#define MAX_POLICIES 8

struct policy {
    char name[32];
    int ref; /* module table in the registry */
    char path[512];
    struct metric_series *m_calls;
};

struct task;
struct task_pending;

struct host {
    lua_State *L;
    char *dir;
    struct task *tasks; /* running or waiting */
    struct task_pending *pending;
    int role_ref;
    char role_name[32]; /* "" until a role is loaded */
    struct client *client;
    struct event_base *base;
    struct metrics *metrics;
    int api_ref; /* the counterd table */
    struct policy policies[MAX_POLICIES];
    int npolicies;
    /* Functions a policy file must define (host_policy_entry): "name" -> "fn". */
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
struct policy *host__find_policy(struct host *h, const char *name);
/* Counts one call into policy p (counterd_lua_policy_calls_total). */
void host__count_call(struct host *h, struct policy *p);

/* ---------------------------------------------------------------- sandbox.c */

/* Puts the counting, capped allocator under the new state (before anything is allocated
 * in it), and after the libraries are open the pcall guards and the watchdog hook. */
void sandbox__count_heap(struct host *h);
void sandbox__make_guards(struct host *h);
void sandbox__start_watchdog(struct host *h);

/* Whether the running call's deadline has passed. */
int sandbox__past_deadline(const struct host *h);

/* What a call under the watchdog replaced, to put back when it ends. */
struct watch {
    double deadline_ms;
    int64_t heap_limit;
    int policy;
};

/* Starts a call's budget of time and heap, unless it runs inside a call that has one
 * (a policy loading another): the outer budget then covers both. policy: the call runs
 * policy code (rather than a role or configuration file being loaded). */
void sandbox__watch_begin(struct host *h, struct watch *outer, int policy);
/* Ends it; a failed call's "not enough memory" becomes a message saying which limit. */
void sandbox__watch_end(struct host *h, lua_State *L, const struct watch *outer, int failed);

/* Message handler for lua_pcall: keeps the message (which carries file:line). */
int sandbox__on_error(lua_State *L);

/* Runs the function on top of the stack (below it its nargs arguments) under the
 * watchdog; policy says it is policy code. @return 0, or -1 with the message on top of
 * the stack. */
int sandbox__guarded_call(struct host *h, int nargs, int nresults, int policy);

/*
 * Runs <lua_dir>/<folder>/<name>.lua in a fresh sandbox under the budget and leaves what
 * it returned on the stack; interpreted only (jit_off) for policies, so the watchdog sees
 * every instruction. @return 0, or -1 with "file:line: message" in err.
 */
int sandbox__run_file(struct host *h, const char *folder, const char *name, int jit_off, char *path,
                      size_t pathlen, char *err, size_t errlen);

/* Pushes a fresh environment for one file (see sandbox.c). */
void sandbox__push_sandbox(struct host *h);

/* ---------------------------------------------------------------- task.c */

/* Cancels the work tasks wait for and frees the tasks (the state is closed after). */
void task__free_all(struct host *h);

/* ---------------------------------------------------------------- api_core.c */

#endif
