/*
 * sandbox.h - the budget of policy calls, for C functions that can run long (sandbox.c builds the
 * sandboxes and enforces the budget). Part of the host (host.h).
 */
#ifndef COUNTERD_LUA_SANDBOX_H
#define COUNTERD_LUA_SANDBOX_H

struct lua_State;

/*
 * The budget of the policy call running, for C functions that can run long: the
 * monotonic time (ms) it must end by, or 0 outside a policy call (a role's task, the
 * host's own work). sandbox_check_budget raises "policy ran longer than its budget of
 * N ms" (with the caller's file:line) once that time has passed; otherwise it returns.
 * Both work on any state: without a host there is no budget.
 */
double sandbox_deadline_ms(struct lua_State *L);
void sandbox_check_budget(struct lua_State *L);
/* Whether policy code is running (a policy file loading, or a call into a policy): what
 * it starts must end with the call. */
int sandbox_in_policy(struct lua_State *L);

#endif
