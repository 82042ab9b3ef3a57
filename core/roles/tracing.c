/*
 * tracing.c - a role's tracing from its configuration (see tracing.h).
 */
#include "tracing.h"

#include <stdio.h>
#include <string.h>

#include "../net/otlp.h"
#include "config.h"

int tracing_start(struct event_base *base, const struct config *cfg, struct metrics *metrics,
                  struct otlp **out, char *err, size_t errlen)
{
    *out = NULL;
    if (!cfg->otlp_endpoint[0])
        return 0;
    char service[256];
    if (cfg->service_name[0])
        snprintf(service, sizeof service, "%s", cfg->service_name);
    else if (!strcmp(cfg->role, "region"))
        snprintf(service, sizeof service, "counter-%s", cfg->region);
    else if (!strcmp(cfg->role, "strong"))
        snprintf(service, sizeof service, "counter-consistent");
    else
        snprintf(service, sizeof service, "%s", cfg->role);
    /* A coordinator or gateway has no region or node id of its own. */
    const char *resource[8] = {"counterd.role", cfg->role, NULL};
    if (!strcmp(cfg->role, "region")) {
        resource[2] = "region";
        resource[3] = cfg->region;
        resource[4] = "service.instance.id";
        resource[5] = cfg->node_id;
        resource[6] = NULL;
    }
    struct otlp_opts o = {.endpoint = cfg->otlp_endpoint,
                          .service_name = service,
                          .resource = resource,
                          .batch_spans = cfg->trace_batch,
                          .queue_spans = cfg->trace_queue,
                          .delay_ms = cfg->trace_delay_ms,
                          .timeout_ms = cfg->trace_timeout_ms,
                          .metrics = metrics};
    *out = otlp_start(base, &o, err, errlen);
    return *out ? 0 : -1;
}
