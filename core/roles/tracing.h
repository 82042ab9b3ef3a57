/*
 * tracing.h - a role's tracing, from its configuration: the OTLP exporter (net/otlp.h)
 * with the service name and resource attributes of the original lab's services.
 */
#ifndef COUNTERD_ROLES_TRACING_H
#define COUNTERD_ROLES_TRACING_H

#include <stddef.h>

struct config;
struct event_base;
struct metrics;
struct otlp;

/*
 * Starts exporting spans when cfg names an OTLP endpoint. The default service name is
 * the lab's: counter-<region> for a region node, counter-consistent for the strong
 * counter, else the role's name.
 * @return 0 (*out is NULL when tracing stays off), or -1 with a sentence in err.
 */
int tracing_start(struct event_base *base, const struct config *cfg, struct metrics *metrics,
                  struct otlp **out, char *err, size_t errlen);

#endif
