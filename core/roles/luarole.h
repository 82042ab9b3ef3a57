/*
 * luarole.h - a role written in Lua: the coordinator and the gateway.
 *
 * The C side serves HTTP, answers /metrics, and runs every other request as a task of
 * lua/roles/<role>.lua's handle(req), which may call counterd.http.* (non-blocking) and
 * returns status, body (a string, or a table sent as JSON), and optionally a content
 * type and extra header lines.
 */
#ifndef COUNTERD_ROLES_LUAROLE_H
#define COUNTERD_ROLES_LUAROLE_H

#include <stddef.h>

struct event_base;
struct config;
struct luarole;

/* @return the running role, or NULL with a sentence in err. */
struct luarole *luarole_new(struct event_base *base, const struct config *cfg, char *err,
                            size_t errlen);
void luarole_free(struct luarole *lr);

#endif
