/*
 * region_http.c - a region node's endpoints (API.md, "Region node") and its route table.
 *
 * Every request that fails validation is answered before anything is changed.
 */
#include "region_internal.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "../base/clock.h"
#include "../base/mem.h"
#include "../lua/host.h"
#include "../net/auth.h"
#include "../net/http.h"
#include "../net/url.h"
#include "../obs/metrics.h"
#include "../obs/trace.h"
#include "policy.h"
#include "reqbody.h"
#include "reload.h"
#include "route.h"

/* ---------------------------------------------------------------- handlers */

/* "ok", or "degraded" with the reasons: the node still answers reads (so 200). */
static void h_health(void *role, struct http_request *req)
{
    struct region *rg = role;
    struct buf *b = &rg->out;
    const char *why[2];
    int n = 0;
    if (rg->wal && (why[n] = wal_status(rg->wal)))
        n++;
    if (rg->wal && (why[n] = wal_snapshot_status(rg->wal)))
        n++;
    buf_puts(b, n ? "{\"status\":\"degraded\"," : "{\"status\":\"ok\",");
    buf_puts(b, "\"service\":\"counter\",");
    region__put_identity(rg, b);
    if (n) {
        buf_puts(b, ",\"degraded\":[");
        for (int i = 0; i < n; i++) {
            if (i)
                buf_putc(b, ',');
            region__put_str(b, why[i]);
        }
        buf_putc(b, ']');
    }
    buf_putc(b, '}');
    region__respond_out(req, rg, 200);
}

static void h_metrics(void *role, struct http_request *req)
{
    struct region *rg = role;
    http_respond_metrics(req, rg->metrics, &rg->out);
}

static void h_counter(void *role, struct http_request *req)
{
    struct region *rg = role;
    char name[256];
    long n = reqbody_path_name(req, req->path + 9, req->path_len - 9, name, sizeof name);
    if (n < 0)
        return;
    uint32_t id = gstore_find(rg->store, name, (size_t)n);
    if (id != GSTORE_NONE && gstore_dead(rg->store, id))
        id = GSTORE_NONE; /* a deleted counter answers as an unknown one */
    const struct gcounter *c = id == GSTORE_NONE ? NULL : gstore_counter(rg->store, id);
    struct buf *b = &rg->out;
    buf_puts(b, "{\"counter\":");
    buf_json_str(b, name, (size_t)n);
    buf_putc(b, ',');
    region__put_counts(rg, b, c, id);
    buf_putc(b, ',');
    region__put_identity(rg, b);
    buf_putc(b, '}');
    region__respond_out(req, rg, 200);
}

/* {"region","node_id","network_partition","last_sync_time" (no closing brace): the head of
 * /counters and of /admin/sync. */
static void put_sync_head(struct region *rg, struct buf *b)
{
    buf_putc(b, '{');
    region__put_identity(rg, b);
    buf_puts(b, repl_partitioned(rg->repl) ? ",\"network_partition\":true"
                                           : ",\"network_partition\":false");
    buf_puts(b, ",\"last_sync_time\":");
    buf_printf(b, "%.3f", repl_last_sync_time(rg->repl));
}

static void put_partition(struct region *rg, struct buf *b)
{
    buf_puts(b, repl_partitioned(rg->repl) ? "{\"network_partition\":true,"
                                           : "{\"network_partition\":false,");
    region__put_identity(rg, b);
}

static void h_partition_get(void *role, struct http_request *req)
{
    struct region *rg = role;
    put_partition(rg, &rg->out);
    buf_putc(&rg->out, '}');
    region__respond_out(req, rg, 200);
}

static void h_partition_set(void *role, struct http_request *req)
{
    struct region *rg = role;
    int enabled;
    const struct json *root = reqbody_object(&rg->parser, req);
    if (!root)
        return;
    const struct json *v = json_get(root, "enabled");
    char q[16];
    long qn = v ? URL_QUERY_ABSENT : url_query_get(req->query, "enabled", q, sizeof q);
    if (qn == URL_QUERY_BAD) {
        char detail[200];
        url_query_bad_detail("enabled", 7, detail, sizeof detail);
        http_respond_error(req, 400, "bad_field", "%s", detail);
        return;
    }
    if (v && (v->type == JSON_TRUE || v->type == JSON_FALSE)) {
        enabled = v->type == JSON_TRUE;
    } else if (qn >= 0 && (!strcmp(q, "true") || !strcmp(q, "false"))) {
        enabled = !strcmp(q, "true"); /* the coordinator's query form */
    } else {
        http_respond_error(req, 400, "bad_field", "enabled must be true or false");
        return;
    }
    repl_set_partition(rg->repl, enabled);
    struct buf *b = &rg->out;
    put_partition(rg, b);
    buf_puts(b, enabled ? ",\"message\":\"Network partition enabled\"}"
                        : ",\"message\":\"Network partition disabled\"}");
    region__respond_out(req, rg, 200);
}

struct force_sync {
    struct region *rg;
    struct http_request *req;
};

/*
 * "peers":{"us-west-1":{"url","status","format","last_success","last_error",...},...}: per
 * peer, the last finished round (for a force-sync: its own round) and the last failure.
 * @return the number of peers whose last round failed.
 */
static int put_peers(struct region *rg, struct buf *b, const char **first_error)
{
    int failed = 0;
    buf_puts(b, "\"peers\":{");
    for (int i = 0; i < repl_peer_count(rg->repl); i++) {
        struct repl_peer_info pi;
        repl_peer_info(rg->repl, i, &pi);
        if (i)
            buf_putc(b, ',');
        region__put_str(b, pi.node_id ? pi.node_id : pi.url);
        buf_puts(b, ":{\"url\":");
        region__put_str(b, pi.url);
        buf_puts(b, ",\"status\":");
        region__put_str(b, pi.status);
        buf_puts(b, ",\"format\":");
        if (pi.format)
            region__put_str(b, pi.format);
        else
            buf_puts(b, "null");
        buf_printf(b, ",\"last_success\":%.3f,\"failed_rounds\":%d,\"last_error\":", pi.last_ok,
                   pi.failed_rounds);
        if (pi.last_error)
            region__put_str(b, pi.last_error);
        else
            buf_puts(b, "null");
        buf_printf(b, ",\"last_error_time\":%.3f}", pi.last_error_time);
        if (!strcmp(pi.status, "failed")) {
            if (!failed && first_error)
                *first_error = pi.last_error;
            failed++;
        }
    }
    buf_putc(b, '}');
    return failed;
}

/*
 * The round is over. 200 "sync_completed" when no exchange failed (a partitioned peer is
 * not a failure: the partition says so); else 502 "sync_failed", with error and detail as
 * every error, and the same fields (API.md, "POST /admin/force-sync").
 */
static void force_sync_done(void *arg, int completed)
{
    struct force_sync *fs = arg;
    struct region *rg = fs->rg;
    if (!completed) {
        free(fs); /* shutting down: the connection is closed unanswered */
        return;
    }
    region__update_home(rg); /* the round may have taught us the last peer's node id */
    buf_reset(&rg->out);
    struct buf *b = &rg->out;
    struct buf peers = {0};
    const char *why = NULL;
    int failed = put_peers(rg, &peers, &why);
    if (failed) {
        buf_puts(b, "{\"status\":\"sync_failed\",\"error\":\"sync_failed\",\"detail\":");
        char detail[700];
        snprintf(detail, sizeof detail, "%d of %d peer exchange(s) failed; first: %s", failed,
                 repl_peer_count(rg->repl), why ? why : "no answer");
        region__put_str(b, detail);
        buf_putc(b, ',');
    } else {
        buf_puts(b, "{\"status\":\"sync_completed\",");
    }
    region__put_identity(rg, b);
    buf_putc(b, ',');
    region__put_first_counters(rg, b);
    buf_putc(b, ',');
    buf_append(b, peers.data, peers.len);
    buf_putc(b, '}');
    buf_free(&peers);
    region__respond_out(fs->req, rg, failed ? 502 : 200);
    free(fs);
}

/* GET /admin/sync: this node's replication as the coordinator's /global/status shows it. */
static void h_sync_status(void *role, struct http_request *req)
{
    struct region *rg = role;
    struct buf *b = &rg->out;
    put_sync_head(rg, b);
    region__put_changes(rg, b);
    region__gc_put_status(rg, b);
    buf_putc(b, ',');
    put_peers(rg, b, NULL);
    buf_putc(b, '}');
    region__respond_out(req, rg, 200);
}

static void h_force_sync(void *role, struct http_request *req)
{
    struct region *rg = role;
    if (repl_partitioned(rg->repl)) {
        http_respond_error(req, 503, "partitioned",
                           "this node is partitioned: it does not replicate until healed");
        return;
    }
    struct force_sync *fs = xmalloc(sizeof *fs);
    fs->rg = rg;
    fs->req = req;
    repl_sync_now_traced(rg->repl, req->span, force_sync_done, fs);
}

/* ---------------------------------------------------------------- strong replica */

/*
 * POST /strong/prepare and /strong/accept from the strong leader: replication like /sync,
 * so the partition switch and the faults policy apply to it the same way.
 */
static void h_strong(void *role, struct http_request *req)
{
    struct region *rg = role;
    const char *from = http_request_header(req, "X-Counterd-Node");
    if (!from)
        from = "strong";
    trace_span_attr_cstr(req->span, "strong.leader", from);
    int partitioned = repl_partitioned(rg->repl), delay_ms = 0;
    int a =
        policy_faults_decide(rg->lua, "in", from, rg->node_id, "strong", partitioned, &delay_ms);
    if (partitioned || a == 1) {
        http_respond_error(req, 503, "partitioned",
                           partitioned ? "this node is partitioned: it takes no replication"
                                       : "the faults policy drops strong replication from %s",
                           from);
        return;
    }
    /* An accept's records are smaller than its JSON entries, plus a promise. */
    if (req->method == HTTP_M_POST && region__reserve_log(rg, req, 2 * req->body_len + 4096) < 0)
        return;
    int64_t pos = replica_handle(&rg->replica, req, &rg->out);
    if (pos < 0)
        return;
    region__respond_durable_ex(rg, req, (uint64_t)pos, 1);
}

/* ---------------------------------------------------------------- routing */

static void h_sync(void *role, struct http_request *req)
{
    struct region *rg = role;
    /* What a merge changes is logged: a peer's records take about their JSON size. */
    if (region__reserve_log(rg, req, 2 * req->body_len + (64u << 10)) < 0)
        return;
    repl_handle_sync(rg->repl, req);
}

static void h_reload(void *role, struct http_request *req)
{
    reload_handle(((struct region *)role)->reload, req);
}

/* The region's endpoints; a span is named after its route, whatever the method. */
static const struct route routes[] = {
    {ROUTE_POST, "/increment", 0, region__h_increment, "/increment", NULL},
    {ROUTE_POST, "/increments", 0, region__h_increments, "/increments", NULL},
    {ROUTE_GET, "/counter/", 1, h_counter, "/counter/{name}", "counter.name"},
    {ROUTE_GET, "/health", 0, h_health, "/health", NULL},
    {ROUTE_POST, "/sync", 0, h_sync, "/sync", NULL},
    {ROUTE_GET, "/counters", 0, region__h_counters, "/counters", NULL},
    {ROUTE_POST, "/counters/read", 0, region__h_counters_read, "/counters/read", NULL},
    {ROUTE_GET, "/top", 0, region__h_top, "/top", NULL},
    {ROUTE_ANY, "/v1/counters/", 1, region__h_v1_counters, "/v1/counters/{path}", NULL},
    {ROUTE_ANY, "/v1/namespaces", 0, region__h_namespaces, "/v1/namespaces", NULL},
    {ROUTE_ANY, "/v1/namespaces/", 1, region__h_namespaces, "/v1/namespaces/{ns}", NULL},
    {ROUTE_GET, "/metrics", 0, h_metrics, "/metrics", NULL},
    {ROUTE_GET, "/admin/partition", 0, h_partition_get, "/admin/partition", NULL},
    {ROUTE_POST, "/admin/partition", 0, h_partition_set, "/admin/partition", NULL},
    {ROUTE_POST, "/admin/reload", 0, h_reload, "/admin/reload", NULL},
    {ROUTE_POST, "/admin/force-sync", 0, h_force_sync, "/admin/force-sync", NULL},
    {ROUTE_GET, "/admin/sync", 0, h_sync_status, "/admin/sync", NULL},
    {ROUTE_ANY, "/strong/accept", 0, h_strong, "/strong/accept", NULL},
    {ROUTE_ANY, "/strong/prepare", 0, h_strong, "/strong/prepare", NULL},
    {ROUTE_ANY, "/strong/", 1, h_strong, NULL, NULL},
    {0, NULL, 0, NULL, NULL, NULL}};

void region__handle(struct http_request *req, void *arg)
{
    struct region *rg = arg;
    if (req->span) {
        route_trace(routes, req);
        trace_span_attr_cstr(req->span, "region", rg->region);
        trace_span_attr_cstr(req->span, "node_id", rg->node_id);
    }
    buf_reset(&rg->out);
    int strong = req->path_len > 8 && memcmp(req->path, "/strong/", 8) == 0;
    if (((req->path_len >= 7 && memcmp(req->path, "/admin/", 7) == 0) ||
         http_path_is(req, "/sync") || strong) &&
        auth_refuse_unauthorized(req, rg->admin_token))
        return;
    route_serve(routes, rg, req);
}

size_t region__body_limit(const char *path, size_t len, void *arg)
{
    (void)arg;
    if (len == 11 && memcmp(path, "/increments", 11) == 0)
        return region__batch_body_limit();
    return len == 5 && memcmp(path, "/sync", 5) == 0 ? REPL_MAX_BODY : 0;
}
