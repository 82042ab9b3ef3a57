/*
 * mem.h - allocation that never returns NULL.
 *
 * Like Redis' zmalloc, an allocation failure is not a recoverable error for a server that
 * holds its state in memory: we log and abort instead of threading NULL checks through
 * every caller. Nothing here may depend on libevent, Lua or curl.
 */
#ifndef COUNTERD_BASE_MEM_H
#define COUNTERD_BASE_MEM_H

#include <stddef.h>

void *xmalloc(size_t n);
void *xcalloc(size_t count, size_t n);
void *xrealloc(void *p, size_t n);
char *xstrdup(const char *s);
char *xstrndup(const char *s, size_t n);

#endif
