/*
 * host.h - the LuaJIT host: one Lua state per process, owned by the event loop.
 *
 * Policies are Lua files under <lua_dir>/policies/ that people edit while the node runs.
 * Each is loaded into its own sandbox (an allow-listed environment: no io, no os.execute,
 * no loadfile/dofile) with the JIT off, so an instruction-count hook can stop one that
 * runs past its time budget. A policy file returns a table of functions; the C core
 * calls them with plain arguments through the host_* calls below, always under
 * lua_pcall: a Lua error is logged with file:line and counted, and the caller falls back
 * to what it would do without a policy. Loading is a transaction: the new file replaces
 * the old one only if it compiles and runs.
 *
 * The host knows no policy by name: it loads files, calls a named function of a loaded
 * one, runs tasks and builds sandboxes. What routing and faults mean (their functions,
 * arguments and answers) is core/roles/policy.c's. Files: host.c (state, loading, reload,
 * calls), sandbox.c (sandbox and budget: sandbox.h), task.c (tasks: task.h), api_*.c (the
 * counterd table: api.h).
 */
#ifndef COUNTERD_LUA_HOST_H
#define COUNTERD_LUA_HOST_H

#include <stddef.h>

struct lua_State;
struct metrics;
struct host;

struct host_info {
    const char *role, *node_id, *region;
    int budget_ms; /* longest a policy call may run; default 50 */
};

struct host *host_new(const char *lua_dir, const struct host_info *info, struct metrics *metrics);
void host_free(struct host *h);
const char *host_dir(const struct host *h);
struct lua_State *host_state(struct host *h);

/*
 * Loads <lua_dir>/policies/<name>.lua, replacing the loaded version only on success.
 * @return 0, or -1 with "file:line: message" in err (the old version keeps serving).
 */
int host_load_policy(struct host *h, const char *name, char *err, size_t errlen);
/*
 * Reloads every loaded policy file and the role file (a transaction): all are compiled
 * and initialised first (library modules read afresh); only if all succeed do they replace
 * the old ones. Tasks already running finish on the code they started with.
 * @return 0 with the files' paths appended to files (one a line; files may be NULL), or
 *         -1 with "file:line: message" in err: the old versions keep serving.
 */
struct buf;
int host_reload(struct host *h, struct buf *files, char *err, size_t errlen);

/* counterd.shared from C: a number, or NaN to delete / for a missing or non-number key. */
void host_shared_set_number(struct host *h, const char *key, double v);
double host_shared_get_number(struct host *h, const char *key);

/* Whether a policy of that name is loaded. */
int host_has_policy(struct host *h, const char *name);

/*
 * Declares that policies/<policy>.lua must define fn() (the caller will call it): a file
 * without it is refused when loaded or reloaded, so a misspelt name is an error at reload
 * time rather than a silent fallback on every later call. Declare before loading.
 */
void host_policy_entry(struct host *h, const char *policy, const char *fn);

/*
 * Calls fn of the loaded policy with the nargs values on top of the main stack (popped),
 * under the budget, and counts the call (counterd_lua_policy_calls_total).
 * @return 0 with nresults values pushed; -1 when the policy is not loaded or has no
 *         function fn; -2 when the call failed (counted in counterd_policy_errors_total).
 *         On -1 and -2 nothing is pushed and err says why ("file:line: message").
 */
int host_call_policy(struct host *h, const char *policy, const char *fn, int nargs, int nresults,
                     char *err, size_t errlen);
/* Counts a failed policy call the caller found (an answer it cannot use): it logs what it
 * falls back to. */
void host_count_error(struct host *h, const char *policy);
/* Pushes the loaded policy's module table on the main stack. @return 0, or -1 (nothing
 * pushed) when it is not loaded. */
int host_push_policy(struct host *h, const char *name);

/*
 * Runs the function below nargs arguments on top of the main stack under the budget, as
 * configuration code (a value a conf file returned), not policy code.
 * @return 0 with nresults values pushed, or -1 with "file:line: message" in err (nothing
 *         pushed).
 */
int host_pcall(struct host *h, int nargs, int nresults, char *err, size_t errlen);

/*
 * Loads <lua_dir>/roles/<name>.lua (sandboxed like a policy, but with the JIT on: it is
 * the product's own code, and it runs as tasks). It must return a table with handle(req).
 * @return 0, or -1 with "file:line: message" in err.
 */
int host_load_role(struct host *h, const char *name, char *err, size_t errlen);
/*
 * Runs <lua_dir>/<folder>/<name>.lua in a fresh sandbox (JIT on) and pushes what it
 * returns on the main stack: a module that is neither a role nor a policy (the scenario
 * runner's files). @return 0, or -1 with "file:line: message" in err (nothing pushed).
 */
int host_load_module(struct host *h, const char *folder, const char *name, char *err,
                     size_t errlen);
/* Pushes the loaded role's function fn on the main stack. @return 0, or -1 (nothing pushed). */
int host_push_role_fn(struct host *h, const char *fn);
/* Pushes the loaded role's field (any value, nil when absent) on the main stack. */
void host_push_role_field(struct host *h, const char *field);

/* The host a state belongs to. */
struct host *host_of(struct lua_State *L);

/* Outgoing HTTP for counterd.http (the host does not own it). */
struct client;
void host_set_client(struct host *h, struct client *client);
struct client *host_client(struct host *h);
struct event_base;
void host_set_base(struct host *h, struct event_base *base);
struct event_base *host_base(struct host *h);
struct metrics *host_metrics(struct host *h);

#endif
