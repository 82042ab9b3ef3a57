/*
 * consistent.h - the strong counter's service (role "strong", port 8004): API.md's
 * "Strong counter" endpoints on top of repl/strong.c.
 */
#ifndef COUNTERD_ROLES_CONSISTENT_H
#define COUNTERD_ROLES_CONSISTENT_H

#include <stddef.h>

struct event_base;
struct config;
struct consistent;

/* @return the running service, or NULL with a sentence in err. */
struct consistent *consistent_new(struct event_base *base, const struct config *cfg, char *err,
                                  size_t errlen);
void consistent_free(struct consistent *c);

#endif
