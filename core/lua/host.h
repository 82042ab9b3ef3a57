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
/* Whether a policy of that name is loaded. */
int lua_host_has_policy(struct lua_host *h, const char *name);

/*
 * Asks the faults policy what to do with one replication message:
 * faults.decide(dir, from, to, kind, partitioned) -> "deliver" | "drop" | "delay", ms.
 * @return 0 deliver, 1 drop, 2 delay (*delay_ms set), or -1 when there is no faults
 *         policy or it failed (logged with file:line and counted).
 */
int lua_host_faults_decide(struct lua_host *h, const char *dir, const char *from, const char *to,
                           const char *kind, int partitioned, int *delay_ms);

/* Binding injectors (one file per API area): each adds its functions to the table on top. */
void lua_api_log_inject(struct lua_State *L);
void lua_api_shared_inject(struct lua_State *L);

#endif
