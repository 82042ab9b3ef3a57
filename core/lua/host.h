/*
 * host.h - the LuaJIT host: one Lua state per process, owned by the event loop.
 *
 * Policies are Lua files under <lua_dir>/policies/ that people edit while the node runs.
 * Each is loaded into its own sandbox (an allow-listed environment: no io, no os.execute,
 * no loadfile/dofile) with the JIT off, so an instruction-count hook can stop one that
 * runs past its time budget. A policy file returns a table of functions; the C core
 * calls them with plain arguments through the lua_host_* calls below, always under
 * lua_pcall: a Lua error is logged with file:line and counted, and the caller falls back
 * to what it would do without a policy. Loading is a transaction: the new file replaces
 * the old one only if it compiles and runs.
 *
 * The host knows no policy by name: it loads files, calls a named function of a loaded
 * one, runs tasks and builds sandboxes. What routing and faults mean (their functions,
 * arguments and answers) is core/roles/policy.c's. Files: host.c (state, loading, reload,
 * calls), sandbox.c (sandbox and budget), task.c (tasks), api_*.c (the counterd table).
 */
#ifndef COUNTERD_LUA_HOST_H
#define COUNTERD_LUA_HOST_H

#include <stddef.h>

struct lua_State;
struct metrics;
struct lua_host;

struct lua_host_info {
    const char *role, *node_id, *region;
    int budget_ms; /* longest a policy call may run; default 50 */
};

struct lua_host *lua_host_new(const char *lua_dir, const struct lua_host_info *info,
                              struct metrics *metrics);
void lua_host_free(struct lua_host *h);
const char *lua_host_dir(const struct lua_host *h);
struct lua_State *lua_host_state(struct lua_host *h);

/*
 * Loads <lua_dir>/policies/<name>.lua, replacing the loaded version only on success.
 * @return 0, or -1 with "file:line: message" in err (the old version keeps serving).
 */
int lua_host_load_policy(struct lua_host *h, const char *name, char *err, size_t errlen);
/*
 * Reloads every loaded policy file and the role file (a transaction): all are compiled
 * and initialised first (library modules read afresh); only if all succeed do they replace
 * the old ones. Tasks already running finish on the code they started with.
 * @return 0 with the files' paths appended to files (one a line; files may be NULL), or
 *         -1 with "file:line: message" in err: the old versions keep serving.
 */
struct buf;
int lua_host_reload(struct lua_host *h, struct buf *files, char *err, size_t errlen);

/* counterd.shared from C: a number, or NaN to delete / for a missing or non-number key. */
void lua_host_shared_set_number(struct lua_host *h, const char *key, double v);
double lua_host_shared_get_number(struct lua_host *h, const char *key);

/* Whether a policy of that name is loaded. */
int lua_host_has_policy(struct lua_host *h, const char *name);

/*
 * Declares that policies/<policy>.lua must define fn() (the caller will call it): a file
 * without it is refused when loaded or reloaded, so a misspelt name is an error at reload
 * time rather than a silent fallback on every later call. Declare before loading.
 */
void lua_host_policy_entry(struct lua_host *h, const char *policy, const char *fn);

/*
 * Calls fn of the loaded policy with the nargs values on top of the main stack (popped),
 * under the budget, and counts the call (counterd_lua_policy_calls_total).
 * @return 0 with nresults values pushed; -1 when the policy is not loaded or has no
 *         function fn; -2 when the call failed (counted in counterd_policy_errors_total).
 *         On -1 and -2 nothing is pushed and err says why ("file:line: message").
 */
int lua_host_call_policy(struct lua_host *h, const char *policy, const char *fn, int nargs,
                         int nresults, char *err, size_t errlen);
/* Counts a failed policy call the caller found (an answer it cannot use): it logs what it
 * falls back to. */
void lua_host_count_error(struct lua_host *h, const char *policy);
/* Pushes the loaded policy's module table on the main stack. @return 0, or -1 (nothing
 * pushed) when it is not loaded. */
int lua_host_push_policy(struct lua_host *h, const char *name);

/*
 * Runs the function below nargs arguments on top of the main stack under the budget, as
 * configuration code (a value a conf file returned), not policy code.
 * @return 0 with nresults values pushed, or -1 with "file:line: message" in err (nothing
 *         pushed).
 */
int lua_host_pcall(struct lua_host *h, int nargs, int nresults, char *err, size_t errlen);

/*
 * Loads <lua_dir>/roles/<name>.lua (sandboxed like a policy, but with the JIT on: it is
 * the product's own code, and it runs as tasks). It must return a table with handle(req).
 * @return 0, or -1 with "file:line: message" in err.
 */
int lua_host_load_role(struct lua_host *h, const char *name, char *err, size_t errlen);
/*
 * Runs <lua_dir>/<folder>/<name>.lua in a fresh sandbox (JIT on) and pushes what it
 * returns on the main stack: a module that is neither a role nor a policy (the scenario
 * runner's files). @return 0, or -1 with "file:line: message" in err (nothing pushed).
 */
int lua_host_load_module(struct lua_host *h, const char *folder, const char *name, char *err,
                         size_t errlen);
/* Pushes the loaded role's function fn on the main stack. @return 0, or -1 (nothing pushed). */
int lua_host_push_role_fn(struct lua_host *h, const char *fn);
/* Pushes the loaded role's field (any value, nil when absent) on the main stack. */
void lua_host_push_role_field(struct lua_host *h, const char *field);

/*
 * Tasks: coroutines the event loop drives (request handlers of Lua roles, timers).
 * Inside a task, counterd.http.request() and counterd.sleep() yield until their event
 * comes, like OpenResty's cosockets; outside one they raise an error.
 */
struct lua_task;

/* Called once when a task ends: nresults values are on top of co (err is NULL), or the
 * task failed with err ("file:line: message"). co's stack is cleared afterwards. */
typedef void (*lua_task_done_fn)(struct lua_State *co, int nresults, const char *err, void *arg);

/*
 * Runs the function below nargs arguments on top of the host's main stack (both are
 * popped) in a new task. done may be NULL (errors are then logged).
 */
void lua_host_spawn(struct lua_host *h, int nargs, lua_task_done_fn done, void *arg);
/*
 * The same for a task serving a request traced by span (may be NULL): the task's
 * counterd.http calls become its children, and counterd.trace names it. span must stay
 * open until the task ends (a request's span ends with its answer, which done gives).
 */
struct trace_span;
void lua_host_spawn_traced(struct lua_host *h, int nargs, lua_task_done_fn done, void *arg,
                           struct trace_span *span);
/* The span of the request a task serves, or NULL. */
struct trace_span *lua_task_span(struct lua_task *t);
/* The task running on co, or NULL when co is not a task (a plain pcall, a policy). */
struct lua_task *lua_task_of(struct lua_State *co);
struct lua_State *lua_task_state(struct lua_task *t);
/* Resumes a task that yielded, with nargs values already pushed on its state. */
void lua_task_resume(struct lua_task *t, int nargs);
struct lua_host *lua_host_of(struct lua_State *L);

/*
 * Work a task waits for (a timer, an HTTP call) registers how to cancel it, so that
 * closing the host while tasks wait frees everything. Remove it when it completes.
 */
struct lua_pending;
struct lua_pending *lua_host_pending_add(struct lua_host *h, void (*cancel)(void *arg), void *arg);
void lua_host_pending_remove(struct lua_host *h, struct lua_pending *p);

/* Outgoing HTTP for counterd.http (the host does not own it). */
struct http_client;
void lua_host_set_client(struct lua_host *h, struct http_client *client);
struct http_client *lua_host_client(struct lua_host *h);
struct event_base;
void lua_host_set_base(struct lua_host *h, struct event_base *base);
struct event_base *lua_host_base(struct lua_host *h);
struct metrics *lua_host_metrics(struct lua_host *h);

/*
 * The budget of the policy call running, for C functions that can run long: the
 * monotonic time (ms) it must end by, or 0 outside a policy call (a role's task, the
 * host's own work). lua_host_check_budget raises "policy ran longer than its budget of
 * N ms" (with the caller's file:line) once that time has passed; otherwise it returns.
 * Both work on any state: without a host there is no budget.
 */
double lua_host_deadline_ms(struct lua_State *L);
void lua_host_check_budget(struct lua_State *L);
/* Whether policy code is running (a policy file loading, or a call into a policy): what
 * it starts must end with the call. */
int lua_host_in_policy(struct lua_State *L);

/* Binding injectors (one file per API area): each adds its functions to the table on top. */
void lua_api_log_inject(struct lua_State *L);
void lua_api_shared_inject(struct lua_State *L);
void lua_api_json_inject(struct lua_State *L);
void lua_api_http_inject(struct lua_State *L);
void lua_api_timer_inject(struct lua_State *L);
void lua_api_metrics_inject(struct lua_State *L);
void lua_api_trace_inject(struct lua_State *L);
/* counterd.query (api_url.c); lua_api_http_inject calls it, as the query decoder belongs
 * with HTTP. */
void lua_api_url_inject(struct lua_State *L);
/* These two replace functions of the global string and table tables instead:
 * string.find, match, gmatch and gsub with a matcher the budget can stop (api_pattern.c),
 * string.rep and table.sort bounded in policy calls (api_limits.c). */
void lua_api_pattern_inject(struct lua_State *L);
void lua_api_limits_inject(struct lua_State *L);

#endif
