/*
 * api.h - the counterd table's bindings, one file per API area (api_*.c), as lua-nginx-module
 * keeps one file per ngx.* area. Only the host (host.c) injects them.
 */
#ifndef COUNTERD_LUA_API_H
#define COUNTERD_LUA_API_H

struct lua_State;

/* Binding injectors (one file per API area): each adds its functions to the table on top. */
/* counterd.now_ms, time, token, conf, require and policy (api_core.c). */
void api_core_inject(struct lua_State *L);
void api_log_inject(struct lua_State *L);
void api_shared_inject(struct lua_State *L);
void api_json_inject(struct lua_State *L);
void api_http_inject(struct lua_State *L);
void api_timer_inject(struct lua_State *L);
void api_metrics_inject(struct lua_State *L);
void api_trace_inject(struct lua_State *L);
/* counterd.query (api_url.c): the query-string decoder the C routes use. */
void api_url_inject(struct lua_State *L);
/* These two replace functions of the global string and table tables instead:
 * string.find, match, gmatch and gsub with a matcher the budget can stop (api_pattern.c),
 * string.rep and table.sort bounded in policy calls (api_limits.c). */
void api_pattern_inject(struct lua_State *L);
void api_limits_inject(struct lua_State *L);

/* For C callers (roles answering a table): encodes the value at idx into b (api_json.c).
 * Runs under the caller's protection (errors propagate as Lua errors). */
struct buf;
int api_json_encode_at(struct lua_State *L, int idx, struct buf *b);

#endif
