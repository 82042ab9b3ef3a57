/*
 * luarole.c - roles written in Lua (see luarole.h).
 *
 * counterd.config, as a role sees it:
 *   role, node_id, region, port          this process
 *   regions = {{name=, url=, endpoint=, name_known=}, ...}
 *                                         from REGION_ENDPOINTS, else nil (use conf/lab.lua);
 *                                         an item given as host:port has name = endpoint
 *                                         and name_known = false until its /health tells
 *                                         the name (net/discover.h), then both are updated
 *   coordinator_url                       from COORDINATOR_URL, else nil
 *   admin_token                           COUNTERD_ADMIN_TOKEN, or nil
 *   upstream_timeout_ms                   calls to the services behind this one
 *   metrics_top_n                         counter names a metric labels before "_other"
 */
#include "luarole.h"

#include <lauxlib.h>
#include <lua.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../base/buf.h"
#include "../base/log.h"
#include "../base/mem.h"
#include "../lua/api.h"
#include "../lua/host.h"
#include "../lua/task.h"
#include "../net/auth.h"
#include "../net/client.h"
#include "../net/discover.h"
#include "../net/endpoint.h"
#include "../net/http.h"
#include "../obs/metrics.h"
#include "config.h"
#include "gateway.h"
#include "reload.h"
#include "role.h"
#include "route.h"

struct luarole {
    struct gateway *gateway; /* the gateway's C hot path, for that role */
    char *admin_token;       /* guards the admin endpoints when set */
    char *web_dir;           /* the gateway's dashboard files, or NULL */
    struct metrics *metrics;
    struct host *lua;
    struct client *client;
    struct http_server *server;
    struct reload *reload;
    struct otlp *otlp; /* span export, when tracing is on */
    struct buf out;
    struct discover *discover; /* names of the regions given as host:port, or NULL */
};

/* ---------------------------------------------------------------- requests */

static void push_request(lua_State *L, struct http_request *req)
{
    lua_createtable(L, 0, 6);
    lua_pushstring(L, req->method_name);
    lua_setfield(L, -2, "method");
    lua_pushlstring(L, req->path, req->path_len);
    lua_setfield(L, -2, "path");
    lua_pushlstring(L, req->query, req->query_len);
    lua_setfield(L, -2, "query");
    lua_pushlstring(L, req->body, req->body_len);
    lua_setfield(L, -2, "body");
    lua_pushnumber(L, req->start_ms);
    lua_setfield(L, -2, "start_ms");
    /* The headers a role needs, by lower-case name. */
    static const char *wanted[] = {"x-client-region", "traceparent",  "authorization",
                                   "content-type",    "x-request-id", NULL};
    lua_createtable(L, 0, 4);
    for (const char **w = wanted; *w; w++) {
        const char *v = http_request_header(req, *w);
        if (v) {
            lua_pushstring(L, v);
            lua_setfield(L, -2, *w);
        }
    }
    lua_setfield(L, -2, "headers");
}

struct answer_ctx {
    struct luarole *lr;
    struct http_request *req;
};

/* Encodes the body (a table) under protection: a bad value is a 500, not a crash. */
static int encode_body(lua_State *L)
{
    struct buf *b = lua_touserdata(L, 2);
    api_json_encode_at(L, 1, b);
    return 0;
}

static void on_answer(lua_State *co, int nresults, const char *err, void *arg)
{
    struct answer_ctx *ctx = arg;
    struct luarole *lr = ctx->lr;
    struct http_request *req = ctx->req;
    free(ctx);
    if (err) {
        log_error("request %s %s failed in Lua: %s", req->method_name, req->path, err);
        http_respond_error(req, 500, "internal", "the %s handler failed: %s", req->method_name,
                           err);
        return;
    }
    int status = nresults >= 1 ? (int)lua_tointeger(co, 1) : 0;
    if (status < 100 || status > 599) {
        http_respond_error(req, 500, "internal", "the handler returned no valid status");
        return;
    }
    const char *ctype =
        nresults >= 3 && lua_isstring(co, 3) ? lua_tostring(co, 3) : "application/json";
    const char *extra = nresults >= 4 && lua_isstring(co, 4) ? lua_tostring(co, 4) : NULL;
    buf_reset(&lr->out);
    if (nresults >= 2 && lua_type(co, 2) == LUA_TSTRING) {
        size_t len;
        const char *s = lua_tolstring(co, 2, &len);
        http_respond_ex(req, status, ctype, extra, s, len);
        return;
    }
    if (nresults >= 2 && lua_istable(co, 2)) {
        lua_State *L = host_state(lr->lua);
        lua_pushcfunction(L, encode_body);
        lua_pushvalue(co, 2);
        lua_xmove(co, L, 1);
        lua_pushlightuserdata(L, &lr->out);
        if (lua_pcall(L, 2, 0, 0) != 0) {
            const char *msg = lua_tostring(L, -1);
            log_error("cannot encode the answer to %s %s: %s", req->method_name, req->path, msg);
            http_respond_error(req, 500, "internal", "cannot encode the answer: %s", msg);
            lua_pop(L, 1);
            buf_trim(&lr->out, 1u << 20);
            return;
        }
    }
    http_respond_ex(req, status, ctype, extra, lr->out.data ? lr->out.data : "", lr->out.len);
    buf_trim(&lr->out, 1u << 20);
}

/* The dashboard: GET / is web/index.html, GET /web/<file> the files beside it. */
static int serve_static(struct luarole *lr, struct http_request *req)
{
    if (!lr->web_dir || (req->method != HTTP_M_GET && req->method != HTTP_M_HEAD))
        return 0;
    const char *file;
    size_t flen;
    if (req->path_len == 1 && req->path[0] == '/') {
        file = "index.html";
        flen = 10;
    } else if (req->path_len > 5 && !memcmp(req->path, "/web/", 5)) {
        file = req->path + 5;
        flen = req->path_len - 5;
    } else {
        return 0;
    }
    for (size_t i = 0; i < flen; i++) /* no '/', no "..": one flat folder */
        if (!((file[i] >= 'a' && file[i] <= 'z') || (file[i] >= '0' && file[i] <= '9') ||
              file[i] == '-' || file[i] == '_' || (file[i] == '.' && i > 0))) {
            http_respond_error(req, 404, "not_found", "no such file");
            return 1;
        }
    static const struct {
        const char *ext, *type;
    } types[] = {{".html", "text/html; charset=utf-8"},
                 {".js", "text/javascript; charset=utf-8"},
                 {".css", "text/css; charset=utf-8"},
                 {".svg", "image/svg+xml"},
                 {".json", "application/json"}};
    const char *type = NULL;
    for (size_t i = 0; i < sizeof types / sizeof *types; i++) {
        size_t el = strlen(types[i].ext);
        if (flen > el && !memcmp(file + flen - el, types[i].ext, el))
            type = types[i].type;
    }
    char path[1024];
    snprintf(path, sizeof path, "%s/%.*s", lr->web_dir, (int)flen, file);
    FILE *f = type ? fopen(path, "rb") : NULL;
    if (!f) {
        http_respond_error(req, 404, "not_found", "no such file");
        return 1;
    }
    buf_reset(&lr->out);
    char chunk[8192];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0)
        buf_append(&lr->out, chunk, n);
    fclose(f);
    http_respond_ex(req, 200, type, "Cache-Control: no-cache\r\n", lr->out.data ? lr->out.data : "",
                    lr->out.len);
    buf_trim(&lr->out, 1u << 20);
    return 1;
}

/* The endpoints that change what the cluster does: everything under the gateway's
 * /admin/, and the coordinator's partition and force-sync fan-outs. */
static int is_admin(const struct http_request *req)
{
    static const char *prefixes[] = {"/admin/", "/global/partition", "/global/force-sync", NULL};
    for (const char **p = prefixes; *p; p++) {
        size_t n = strlen(*p);
        if (req->path_len >= n && !memcmp(req->path, *p, n))
            return 1;
    }
    return 0;
}

/* Every request no route takes: a task of the role's handle(req). */
static void run_lua(struct luarole *lr, struct http_request *req)
{
    lua_State *L = host_state(lr->lua);
    if (host_push_role_fn(lr->lua, "handle") < 0) {
        http_respond_error(req, 503, "unavailable", "no role is loaded");
        return;
    }
    push_request(L, req);
    struct answer_ctx *ctx = xmalloc(sizeof *ctx);
    ctx->lr = lr;
    ctx->req = req;
    task_spawn_traced(lr->lua, 1, on_answer, ctx, req->span);
}

static void h_increment(void *role, struct http_request *req)
{
    struct luarole *lr = role;
    if (!lr->gateway || !gateway_handle(lr->gateway, req))
        run_lua(lr, req);
}

static void h_static(void *role, struct http_request *req)
{
    struct luarole *lr = role;
    if (!serve_static(lr, req))
        run_lua(lr, req);
}

static void h_reload(void *role, struct http_request *req)
{
    struct luarole *lr = role;
    if (req->method == HTTP_M_POST)
        reload_handle(lr->reload, req);
    else
        http_respond_error(req, 405, "method_not_allowed", "use POST");
}

static void h_metrics(void *role, struct http_request *req)
{
    struct luarole *lr = role;
    http_respond_metrics(req, lr->metrics, &lr->out);
}

/*
 * What C answers for a Lua role; every other request, and a route's path with another
 * method, goes to the role's handle(req). The gateway's increment span is named by
 * gateway.c once its body parses (a bad body keeps the server's name).
 */
static const struct route routes[] = {{ROUTE_POST, "/api/increment", 0, h_increment, NULL, NULL},
                                      {ROUTE_POST, "/api/increments", 0, h_increment, NULL, NULL},
                                      {ROUTE_POST, "/v1/counters/", 1, h_increment, NULL, NULL},
                                      {ROUTE_GET, "/", 0, h_static, NULL, NULL},
                                      {ROUTE_GET, "/web/", 1, h_static, NULL, NULL},
                                      {ROUTE_ANY, "/admin/reload", 0, h_reload, NULL, NULL},
                                      {ROUTE_GET, "/metrics", 0, h_metrics, NULL, NULL},
                                      {0, NULL, 0, NULL, NULL, NULL}};

static void handle(struct http_request *req, void *arg)
{
    struct luarole *lr = arg;
    if (is_admin(req) && auth_refuse_unauthorized(req, lr->admin_token))
        return;
    if (route_dispatch(routes, lr, req) <= 0)
        run_lua(lr, req);
}

/* ---------------------------------------------------------------- set-up */

/* counterd.config from the process' configuration. */
static int push_config(lua_State *L, const struct config *cfg, char *err, size_t errlen)
{
    lua_getglobal(L, "counterd");
    lua_createtable(L, 0, 8);
    lua_pushstring(L, cfg->role);
    lua_setfield(L, -2, "role");
    lua_pushstring(L, cfg->node_id);
    lua_setfield(L, -2, "node_id");
    lua_pushstring(L, cfg->region);
    lua_setfield(L, -2, "region");
    lua_pushinteger(L, cfg->port);
    lua_setfield(L, -2, "port");
    lua_pushinteger(L, cfg->request_timeout_up_ms);
    lua_setfield(L, -2, "upstream_timeout_ms");
    lua_pushinteger(L, cfg->metrics_top_n);
    lua_setfield(L, -2, "metrics_top_n");
    if (cfg->admin_token[0]) {
        lua_pushstring(L, cfg->admin_token);
        lua_setfield(L, -2, "admin_token");
    }
    if (cfg->coordinator_url[0]) {
        lua_pushstring(L, cfg->coordinator_url);
        lua_setfield(L, -2, "coordinator_url");
    }
    if (cfg->strong_url[0]) {
        lua_pushstring(L, cfg->strong_url);
        lua_setfield(L, -2, "strong_url");
    }
    if (cfg->strong_embedded_url[0]) {
        lua_pushstring(L, cfg->strong_embedded_url);
        lua_setfield(L, -2, "strong_embedded_url");
    }
    if (cfg->region_endpoints[0]) {
        struct endpoint eps[16];
        int n = endpoint_list_parse(cfg->region_endpoints_from, cfg->region_endpoints, eps, 16, err,
                                    errlen);
        if (n < 0) {
            lua_pop(L, 2);
            return -1;
        }
        lua_createtable(L, n, 0);
        for (int i = 0; i < n; i++) {
            lua_createtable(L, 0, 4);
            lua_pushstring(L, eps[i].name[0] ? eps[i].name : eps[i].addr);
            lua_setfield(L, -2, "name");
            lua_pushstring(L, eps[i].url);
            lua_setfield(L, -2, "url");
            lua_pushstring(L, eps[i].addr);
            lua_setfield(L, -2, "endpoint");
            lua_pushboolean(L, eps[i].name[0] != '\0');
            lua_setfield(L, -2, "name_known");
            lua_rawseti(L, -2, i + 1);
        }
        lua_setfield(L, -2, "regions");
    }
    lua_setfield(L, -2, "config");
    lua_pop(L, 1);
    return 0;
}

/* The gateway's hot path, on the regions the Lua role resolved (its M.regions). */
static int start_gateway(struct luarole *lr, struct event_base *base, const struct config *cfg,
                         char *err, size_t errlen)
{
    lua_State *L = host_state(lr->lua);
    struct gateway_region regions[16];
    int n = 0, rc = -1;
    lua_pushnil(L); /* keeps the pops below symmetric */
    host_push_role_field(lr->lua, "regions");
    if (!lua_istable(L, -1)) {
        snprintf(err, errlen, "gateway.lua has no regions table (M.regions)");
        lua_pop(L, 2);
        goto out;
    }
    for (int i = 1; n < 16; i++) {
        lua_rawgeti(L, -1, i);
        if (!lua_istable(L, -1)) {
            lua_pop(L, 1);
            break;
        }
        lua_getfield(L, -1, "name");
        lua_getfield(L, -2, "url");
        regions[n].name = lua_tostring(L, -2);
        regions[n].url = lua_tostring(L, -1);
        lua_getfield(L, -3, "name_known");
        regions[n].unnamed = lua_isboolean(L, -1) && !lua_toboolean(L, -1);
        lua_pop(L, 1);
        if (!regions[n].name || !regions[n].url) {
            snprintf(err, errlen, "gateway.lua: region %d has no name or url", i);
            lua_pop(L, 5);
            goto out;
        }
        n++;
        lua_pop(L, 3); /* the strings stay alive: the table holds them */
    }
    lr->gateway = gateway_new(base, lr->lua, lr->metrics, regions, n, cfg->request_timeout_up_ms,
                              err, errlen);
    lua_pop(L, 2);
    rc = lr->gateway ? 0 : -1;
out:
    return rc;
}

/* A region's name came from its /health: the Lua roles and the gateway's hot path see it
 * from now on (counterd.config.regions[i] is the table web.regions() hands out). */
static void on_region_name(void *arg, int i, const char *name)
{
    struct luarole *lr = arg;
    lua_State *L = host_state(lr->lua);
    lua_getglobal(L, "counterd");
    lua_getfield(L, -1, "config");
    lua_getfield(L, -1, "regions");
    lua_rawgeti(L, -1, i + 1);
    if (lua_istable(L, -1)) {
        lua_pushstring(L, name);
        lua_setfield(L, -2, "name");
        lua_pushboolean(L, 1);
        lua_setfield(L, -2, "name_known");
        lua_getfield(L, -1, "url");
        if (lr->gateway && lua_isstring(L, -1))
            gateway_name_region(lr->gateway, lua_tostring(L, -1), name);
        lua_pop(L, 1);
    }
    lua_pop(L, 4);
}

static double names_unknown(void *arg)
{
    return discover_pending(((struct luarole *)arg)->discover);
}

/* Starts learning the names of the regions REGION_ENDPOINTS gives as host:port. */
static void start_discovery(struct luarole *lr, struct event_base *base, const struct config *cfg)
{
    metric_set_fn(
        metric_only(metrics_add(lr->metrics, METRIC_GAUGE, "counterd_region_names_unknown",
                                "Regions given as host:port whose /health has not "
                                "told their name yet",
                                NULL, NULL, 0)),
        names_unknown, lr);
    if (!cfg->region_endpoints[0])
        return;
    struct endpoint eps[16];
    char err[512];
    int n = endpoint_list_parse(cfg->region_endpoints_from, cfg->region_endpoints, eps, 16, err,
                                sizeof err);
    if (n > 0) /* push_config already refused a bad list */
        lr->discover = discover_start(base, lr->client, eps, n, NULL, on_region_name, lr);
}

static struct role_parts parts_of(struct luarole *lr)
{
    return (struct role_parts){&lr->metrics, &lr->otlp,   &lr->admin_token, &lr->client,
                               &lr->lua,     &lr->reload, &lr->server};
}

struct luarole *luarole_new(struct event_base *base, const struct config *cfg, char *err,
                            size_t errlen)
{
    struct luarole *lr = xcalloc(1, sizeof *lr);
    struct role_parts parts = parts_of(lr);
    struct host_info li = {cfg->role, cfg->node_id, cfg->region, cfg->policy_budget_ms};
    if (role_start(&parts, base, cfg, &li, ROLE_LUA_IO, err, errlen) < 0)
        goto fail;
    if (push_config(host_state(lr->lua), cfg, err, errlen) < 0 ||
        host_load_role(lr->lua, cfg->role, err, errlen) < 0)
        goto fail;
    if (!strcmp(cfg->role, "gateway")) {
        if (start_gateway(lr, base, cfg, err, errlen) < 0)
            goto fail;
        lr->web_dir = xstrdup(cfg->web_dir);
    }
    start_discovery(lr, base, cfg);
    struct http_server_opts so = role_server_opts(cfg);
    if (lr->gateway)
        so.body_limit = gateway_body_limit;
    if (role_listen(&parts, base, cfg, &so, handle, lr, err, errlen) < 0)
        goto fail;
    log_info("%s listening on %s:%d", cfg->role, cfg->bind, http_server_port(lr->server));
    return lr;
fail:
    luarole_free(lr);
    return NULL;
}

void luarole_free(struct luarole *lr)
{
    if (!lr)
        return;
    /* Tasks first (they own pending answers and calls), then the server, then curl. */
    discover_free(lr->discover);
    gateway_free(lr->gateway);
    struct role_parts parts = parts_of(lr);
    role_stop(&parts);
    buf_free(&lr->out);
    free(lr->web_dir);
    free(lr);
}
