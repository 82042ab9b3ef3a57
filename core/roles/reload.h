/*
 * reload.h - live editing of the Lua files: POST /admin/reload and --watch, every role.
 *
 * A reload is a transaction (host_reload): the new files are compiled and initialised
 * first and replace the old ones only if all succeed. With --watch, a timer looks at the
 * files under the Lua folder twice a second and reloads when one changed; a reload that
 * fails is logged with file:line and retried only after the next change.
 */
#ifndef COUNTERD_ROLES_RELOAD_H
#define COUNTERD_ROLES_RELOAD_H

struct event_base;
struct host;
struct config;
struct http_request;
struct reload;

/* @return the reloader (watching when cfg->watch is set). */
struct reload *reload_new(struct event_base *base, struct host *lua, const struct config *cfg);
void reload_free(struct reload *r);

/*
 * Answers POST /admin/reload: 200 {"status":"reloaded","files":[...],"reloads":n}, or 422
 * {"error":"reload_failed","detail","file","line","message"} with the old files serving.
 */
void reload_handle(struct reload *r, struct http_request *req);

#endif
