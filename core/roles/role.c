/*
 * role.c - starting and stopping a role's common parts (see role.h).
 */
#include "role.h"

#include <stdlib.h>

#include "../base/mem.h"
#include "../net/client.h"
#include "../net/otlp.h"
#include "../net/httpmetrics.h"
#include "../obs/metrics.h"
#include "config.h"
#include "policy.h"
#include "reload.h"
#include "tracing.h"

int role_start(const struct role_parts *p, struct event_base *base, const struct config *cfg,
               const struct host_info *li, unsigned flags, char *err, size_t errlen)
{
    if (!*p->metrics)
        *p->metrics = metrics_new();
    if (tracing_start(base, cfg, *p->metrics, p->otlp, err, errlen) < 0)
        return -1;
    *p->admin_token = cfg->admin_token[0] ? xstrdup(cfg->admin_token) : NULL;
    *p->client = client_new(base);
    *p->lua = host_new(cfg->lua_dir, li, *p->metrics);
    policy_declare(*p->lua);
    if (cfg->net) /* policy_faults_decide then leaves the delays to the wire */
        host_shared_set_number(*p->lua, "faults.net", 1);
    if (flags & ROLE_LUA_IO) {
        host_set_base(*p->lua, base);
        host_set_client(*p->lua, *p->client);
    }
    return 0;
}

struct http_server_opts role_server_opts(const struct config *cfg)
{
    return (struct http_server_opts){.bind_addr = cfg->bind,
                                     .port = cfg->port,
                                     .max_conns = cfg->max_conns,
                                     .idle_timeout_ms = cfg->idle_timeout_ms,
                                     .request_timeout_ms = cfg->request_timeout_ms};
}

int role_listen(const struct role_parts *p, struct event_base *base, const struct config *cfg,
                const struct http_server_opts *so, http_handler_fn handler, void *arg, char *err,
                size_t errlen)
{
    *p->reload = reload_new(base, *p->lua, cfg);
    *p->server = http_server_new(base, so, handler, arg, err, errlen);
    if (!*p->server)
        return -1;
    httpmetrics_register(*p->metrics, *p->server);
    return 0;
}

void role_stop(const struct role_parts *p)
{
    reload_free(*p->reload);
    host_free(*p->lua);
    http_server_free(*p->server);
    client_free(*p->client);
    otlp_stop(*p->otlp);
    metrics_free(*p->metrics);
    free(*p->admin_token);
}
