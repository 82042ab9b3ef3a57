/*
 * region.h - the region role: a G-Counter node of API.md ("Region node").
 *
 * Wires the store, the HTTP server, replication, the Lua faults policy and metrics
 * together, and answers the region endpoints. The hot path (/increment) stays in C.
 */
#ifndef COUNTERD_ROLES_REGION_H
#define COUNTERD_ROLES_REGION_H

#include <stddef.h>

struct event_base;
struct config;
struct region;

/* @return the running node, or NULL with a sentence in err (e.g. the port is taken). */
struct region *region_new(struct event_base *base, const struct config *cfg, char *err,
                          size_t errlen);
void region_free(struct region *rg);

#endif
