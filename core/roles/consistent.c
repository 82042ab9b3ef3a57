/*
 * consistent.c - the strong counter's service (port 8004, "counter-consistent").
 *
 * The HTTP face of repl/strong.c: increments wait for a majority of the replicas, reads
 * answer the committed value. The faults policy (lua/policies/faults.lua) decides the
 * fate and the delay of every replication message, as it does between region nodes.
 *
 * A failed increment says what is known (strong.h): 503 no_quorum when it was provably
 * not applied, 503 ambiguous when it may have been. Every 200 says "durable": whether it
 * rests on replicas that keep their data on disk (false only with
 * --allow-volatile-replicas, which lets replicas without DATA_DIR count).
 *
 * With --strong-backend etcd the same handlers serve, over strong_etcd.c instead: changes
 * are etcd transactions, reads are linearizable etcd ranges (answered later, not from
 * memory), and answers add "backend":"etcd".
 */
#include "consistent.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../base/buf.h"
#include "../base/clock.h"
#include "../base/json.h"
#include "../base/log.h"
#include "../base/mem.h"
#include "../lua/host.h"
#include "../net/auth.h"
#include "../net/client.h"
#include "../net/endpoint.h"
#include "../net/http.h"
#include "../net/url.h"
#include "../obs/metrics.h"
#include "../obs/trace.h"
#include "../repl/strong.h"
#include "../store/gstore.h"
#include "../store/strongrep.h"
#include "config.h"
#include "policy.h"
#include "reqbody.h"
#include "reload.h"
#include "role.h"
#include "route.h"
#include "strong_etcd.h"

/* What a counterd_strong_replica_up series reads. */
struct replica_gauge {
    struct consistent *c;
    int i;
};

struct consistent {
    struct strong *strong;
    struct etcd_strong *etcd; /* --strong-backend etcd: instead of strong */
    int use_etcd;
    struct host *lua;
    struct client *client;
    struct http_server *server;
    struct metrics *metrics;
    struct json_parser parser;
    struct buf out;
    char *admin_token;
    struct reload *reload;
    struct otlp *otlp; /* span export, when tracing is on */
    struct metric *m_value, *m_incr;
    struct metric_series *m_failed[3]; /* by error: no_quorum, ambiguous, overflow */
    struct metric_series *m_latency, *m_lock;
    char replica_names[STRONG_MAX_REPLICAS][64];
    struct replica_gauge gauges[STRONG_MAX_REPLICAS];
    int nreplicas;
    int allow_volatile;
    char node_id[128], region[64];
};

/* One increment waiting for its round. */
struct pending {
    struct consistent *c;
    struct http_request *req;
    double start_ms;
    size_t len;
    char name[];
};

static void respond_out(struct consistent *c, struct http_request *req, int status)
{
    http_respond_json(req, status, c->out.data, c->out.len);
    buf_trim(&c->out, 1u << 20);
}

/* The etcd backend's reads, answered when etcd has (defined with the /v1 handlers). */
static void etcd_read(struct consistent *c, struct http_request *req, const char *key, size_t klen,
                      const char *ns, const char *name);
static void etcd_listing(struct consistent *c, struct http_request *req, const char *ns);

static const char *const failure_names[3] = {"no_quorum", "ambiguous", "overflow"};

static void increment_done(void *arg, const struct strong_result *r)
{
    struct pending *p = arg;
    struct consistent *c = p->c;
    double total = clock_mono_ms() - p->start_ms;
    const char *labels[1] = {p->name};
    if (r->status == STRONG_OK) {
        metric_add(metric_series(c->m_incr, labels), 1);
        metric_set(metric_series(c->m_value, labels), (double)r->value);
        metric_observe(c->m_latency, total / 1000);
        metric_observe(c->m_lock, r->lock_wait_ms / 1000);
        struct buf *b = &c->out;
        buf_reset(b);
        buf_puts(b, "{\"counter\":");
        buf_json_str(b, p->name, p->len);
        buf_puts(b, ",\"value\":");
        buf_i64(b, r->value);
        buf_puts(b, ",\"consistency\":\"strong\",\"durable\":");
        buf_puts(b, r->durable ? "true" : "false");
        buf_puts(b, ",\"lock_wait_ms\":");
        buf_json_ms(b, r->lock_wait_ms);
        buf_puts(b, ",\"coordination_delay_ms\":");
        buf_json_ms(b, r->round_ms);
        buf_puts(b, ",\"total_latency_ms\":");
        buf_json_ms(b, total);
        buf_puts(b, c->use_etcd ? ",\"backend\":\"etcd\"}" : "}");
        respond_out(c, p->req, 200);
    } else if (r->status == STRONG_OVERFLOW) {
        metric_add(c->m_failed[2], 1);
        http_respond_error(p->req, 409, "overflow",
                           "counter %s would leave the signed 64-bit range; nothing was applied",
                           p->name);
    } else if (r->status == STRONG_AMBIGUOUS) {
        metric_add(c->m_failed[1], 1);
        http_respond_error(p->req, 503, "ambiguous", "%s",
                           r->detail ? r->detail : "outcome unknown: it may have been applied");
    } else {
        metric_add(c->m_failed[0], 1);
        http_respond_error(p->req, 503, "no_quorum", "%s", r->detail ? r->detail : "no quorum");
    }
    free(p);
}

static void h_increment(void *role, struct http_request *req)
{
    struct consistent *c = role;
    struct incr_body ib;
    if (reqbody_increment(&c->parser, req, &ib) < 0)
        return;
    struct pending *p = xmalloc(sizeof *p + ib.nlen + 1);
    p->c = c;
    p->req = req;
    p->start_ms = req->start_ms;
    p->len = ib.nlen;
    memcpy(p->name, ib.name, ib.nlen);
    p->name[ib.nlen] = '\0';
    if (req->span) {
        trace_span_attr_str(req->span, "counter.name", p->name, p->len);
        trace_span_attr_int(req->span, "counter.amount", ib.amount);
    }
    if (c->etcd) {
        struct strong_op op = {.kind = STRONG_ADD,
                               .name = p->name,
                               .len = p->len,
                               .amount = ib.amount,
                               .span = req->span};
        etcd_strong_submit(c->etcd, &op, increment_done, p);
        return;
    }
    strong_increment_traced(c->strong, p->name, p->len, ib.amount, req->span, increment_done, p);
}

static int not_ready(struct consistent *c, struct http_request *req)
{
    if (c->etcd || strong_ready(c->strong))
        return 0;
    const char *why = strong_last_error(c->strong);
    http_respond_error(req, 503, "no_quorum",
                       "the strong leader has not yet heard from a majority of its replicas, "
                       "so it cannot tell the committed value%s%s",
                       *why ? "; last attempt: " : "", why);
    return 1;
}

static void h_counter(void *role, struct http_request *req)
{
    struct consistent *c = role;
    char name[256];
    long n = reqbody_path_name(req, req->path + 9, req->path_len - 9, name, sizeof name);
    if (n < 0)
        return;
    if (not_ready(c, req))
        return;
    if (c->etcd) {
        etcd_read(c, req, name, (size_t)n, NULL, NULL);
        return;
    }
    struct buf *b = &c->out;
    buf_puts(b, "{\"counter\":");
    buf_json_str(b, name, (size_t)n);
    buf_puts(b, ",\"value\":");
    buf_i64(b, strong_value(c->strong, name, (size_t)n));
    buf_puts(b, ",\"consistency\":\"strong\",\"note\":\"This value is guaranteed to be the "
                "latest\",\"durable\":");
    buf_puts(b, strong_durable(c->strong) ? "true}" : "false}");
    respond_out(c, req, 200);
}

static void put_counter(void *arg, const char *name, size_t len, int64_t value)
{
    struct buf *b = arg;
    if (b->data[b->len - 1] != '{')
        buf_putc(b, ',');
    buf_json_str(b, name, len);
    buf_putc(b, ':');
    buf_i64(b, value);
}

static void h_counters(void *role, struct http_request *req)
{
    struct consistent *c = role;
    if (c->etcd) {
        etcd_listing(c, req, NULL);
        return;
    }
    if (not_ready(c, req))
        return;
    struct buf *b = &c->out;
    buf_puts(b, "{\"counters\":{");
    strong_each(c->strong, put_counter, b);
    buf_puts(b, "},\"consistency\":\"strong\",\"durable\":");
    buf_puts(b, strong_durable(c->strong) ? "true}" : "false}");
    respond_out(c, req, 200);
}

static void h_health(void *role, struct http_request *req)
{
    struct consistent *c = role;
    if (c->etcd) {
        struct buf *b = &c->out;
        const char *ep = etcd_strong_endpoint(c->etcd);
        buf_printf(b,
                   "{\"status\":\"ok\",\"service\":\"counter-consistent\",\"backend\":\"etcd\","
                   "\"ready\":%s,\"durable\":true,\"etcd_endpoint\":",
                   etcd_strong_healthy(c->etcd) ? "true" : "false");
        buf_json_str(b, ep, strlen(ep));
        buf_puts(b, ",\"etcd\":");
        etcd_strong_admin(c->etcd, b);
        buf_putc(b, '}');
        respond_out(c, req, 200);
        return;
    }
    struct strong_stats st;
    strong_stats(c->strong, &st);
    struct buf *b = &c->out;
    buf_printf(b,
               "{\"status\":\"ok\",\"service\":\"counter-consistent\",\"backend\":\"embedded\","
               "\"ready\":%s,"
               "\"epoch\":%" PRIu64 ",\"replicas_up\":%d,\"durable\":%s,"
               "\"allow_volatile_replicas\":%s,\"volatile_replicas\":[",
               strong_ready(c->strong) ? "true" : "false", st.epoch, st.replicas_up,
               strong_durable(c->strong) ? "true" : "false", c->allow_volatile ? "true" : "false");
    int k = 0;
    for (int i = 0; i < c->nreplicas; i++) {
        if (strong_replica_durable(c->strong, i) == 0) {
            if (k++)
                buf_putc(b, ',');
            buf_json_str(b, c->replica_names[i], strlen(c->replica_names[i]));
        }
    }
    const char *why = strong_last_error(c->strong);
    buf_puts(b, "],\"last_error\":");
    if (*why)
        buf_json_str(b, why, strlen(why));
    else
        buf_puts(b, "null");
    buf_putc(b, '}');
    respond_out(c, req, 200);
}

/*
 * POST /admin/coordination-delay?delay_ms=N sets the one-way delay the faults policy
 * applies to strong replication (faults.coordination_delay_ms in counterd.shared);
 * delay_ms=default goes back to the WAN latency model. GET shows it.
 */
static void h_coordination_delay(struct consistent *c, struct http_request *req, int set)
{
    if (set) {
        char q[32];
        long qn = url_query_get(req->query, "delay_ms", q, sizeof q);
        if (qn == URL_QUERY_BAD) {
            char detail[200];
            url_query_bad_detail("delay_ms", 8, detail, sizeof detail);
            http_respond_error(req, 400, "bad_field", "%s", detail);
            return;
        }
        if (qn < 0) {
            http_respond_error(req, 400, "bad_field",
                               "delay_ms is required (query parameter): 0-60000, or default");
            return;
        }
        char *end = q;
        int dflt = !strcmp(q, "default");
        long v = dflt ? -1 : strtol(q, &end, 10);
        if (!dflt && (end == q || *end || v < 0 || v > 60000)) {
            http_respond_error(req, 400, "bad_field",
                               "delay_ms must be an integer from 0 to 60000, or default");
            return;
        }
        host_shared_set_number(c->lua, "faults.coordination_delay_ms", v < 0 ? NAN : (double)v);
    }
    double v = host_shared_get_number(c->lua, "faults.coordination_delay_ms");
    struct buf *b = &c->out;
    buf_puts(b, "{\"coordination_delay_ms\":");
    if (v == v) {
        buf_printf(b,
                   "%.0f,\"message\":\"Strong replication now waits %.0f ms each way on "
                   "every link between regions\"}",
                   v, v);
    } else {
        buf_puts(b, "null,\"message\":\"Strong replication follows the WAN latency model of "
                    "lua/policies/faults.lua\"}");
    }
    respond_out(c, req, 200);
}

static void h_metrics(void *role, struct http_request *req)
{
    struct consistent *c = role;
    http_respond_metrics(req, c->metrics, &c->out);
}

static void h_delay_get(void *role, struct http_request *req)
{
    h_coordination_delay(role, req, 0);
}

static void h_delay_set(void *role, struct http_request *req)
{
    h_coordination_delay(role, req, 1);
}

static void h_reload(void *role, struct http_request *req)
{
    reload_handle(((struct consistent *)role)->reload, req);
}

/* ---------------------------------------------------------------- /v1/counters */

/* A /v1 operation waiting for its round: what its answer names. */
struct v1_pending {
    struct consistent *c;
    struct http_request *req;
    enum strong_kind kind;
    int with_count; /* add-and-get */
    int64_t delta;
    char ns[GSTORE_NS_MAX + 1], name[256];
    size_t klen;
    char key[];
};

/* {"namespace","counter" of p, with the opening brace, into c->out. */
static void v1_head(struct buf *b, const char *ns, const char *name)
{
    buf_puts(b, "{\"namespace\":");
    buf_json_str(b, ns, strlen(ns));
    buf_puts(b, ",\"counter\":");
    buf_json_str(b, name, strlen(name));
}

/* ,"region","node_id","consistency","durable"} */
static void v1_tail(struct consistent *c, struct buf *b, int durable)
{
    buf_puts(b, ",\"region\":");
    buf_json_str(b, c->region, strlen(c->region));
    buf_puts(b, ",\"node_id\":");
    buf_json_str(b, c->node_id, strlen(c->node_id));
    buf_puts(b, ",\"consistency\":\"strong\",\"durable\":");
    buf_puts(b, durable ? "true" : "false");
    buf_puts(b, c->use_etcd ? ",\"backend\":\"etcd\"}" : "}");
}

/* A failed round's detail, for an operation that carried a token: a retry is safe. */
static void v1_fail(struct v1_pending *p, const struct strong_result *r)
{
    static const char legacy[] = ". Strong increments take no idempotency token: a retry may "
                                 "count it twice";
    char detail[1024];
    snprintf(detail, sizeof detail, "%s", r->detail ? r->detail : "no quorum");
    char *cut = strstr(detail, legacy);
    if (cut)
        snprintf(cut, sizeof detail - (size_t)(cut - detail),
                 ". A retry with the same idempotency_token applies it exactly once");
    int amb = r->status == STRONG_AMBIGUOUS;
    metric_add(p->c->m_failed[amb], 1);
    http_respond_error(p->req, 503, amb ? "ambiguous" : "no_quorum", "%s", detail);
}

static void v1_done(void *arg, const struct strong_result *r)
{
    struct v1_pending *p = arg;
    struct consistent *c = p->c;
    struct buf *b = &c->out;
    buf_reset(b);
    if (r->status == STRONG_NOT_FOUND) {
        http_respond_error(p->req, 404, "not_found", "counter %s does not exist in namespace %s",
                           p->name, p->ns);
    } else if (r->status == STRONG_OVERFLOW) {
        metric_add(c->m_failed[2], 1);
        http_respond_error(p->req, 409, "overflow",
                           "counter %s would leave the signed 64-bit range; nothing was applied",
                           p->key);
    } else if (r->status != STRONG_OK) {
        v1_fail(p, r);
    } else {
        v1_head(b, p->ns, p->name);
        if (p->kind == STRONG_ADD) {
            buf_puts(b, ",\"delta\":");
            buf_i64(b, p->delta);
            if (p->with_count) {
                buf_puts(b, ",\"count\":");
                buf_i64(b, r->value);
            }
        } else if (p->kind == STRONG_CLEAR) {
            int64_t now = 0;
            if (r->duplicate && c->etcd)
                now = r->value; /* read back in the txn that found the token */
            else if (r->duplicate)
                strong_get(c->strong, p->key, p->klen, &now);
            buf_puts(b, ",\"count\":");
            buf_i64(b, now);
            buf_puts(b, ",\"cleared\":");
            buf_i64(b, r->before);
        } else {
            buf_puts(b, ",\"deleted\":true");
        }
        if (r->duplicate)
            buf_puts(b, ",\"duplicate\":true");
        v1_tail(c, b, r->durable);
        respond_out(c, p->req, 200);
    }
    free(p);
}

/* The body of add / add-and-get / clear: delta (add), idempotency_token, and the window the
 * gateway forwards from the namespace (idempotency_window_seconds). @return 0, or -1 after
 * answering 400. */
static int v1_body(struct consistent *c, struct http_request *req, struct strong_op *op)
{
    const struct json *root = reqbody_object(&c->parser, req);
    if (!root)
        return -1;
    if (op->kind == STRONG_ADD) {
        const struct json *d = json_get(root, "delta");
        if (!d || d->type != JSON_INT || d->u.i == 0) {
            http_respond_error(req, 400, "bad_field",
                               "delta must be a non-zero integer in the signed 64-bit range");
            return -1;
        }
        op->amount = d->u.i;
    }
    const struct json *t = json_get(root, "idempotency_token");
    if (t && t->type != JSON_NULL) {
        int bad = t->type != JSON_STR || t->len == 0 || t->len > STRONGREP_TOKEN_MAX;
        for (uint32_t i = 0; !bad && i < t->len; i++)
            bad = (unsigned char)t->u.s[i] < 0x20;
        if (bad) {
            http_respond_error(req, 400, "bad_field",
                               "idempotency_token must be a string of 1-%d bytes without "
                               "control characters",
                               STRONGREP_TOKEN_MAX);
            return -1;
        }
        op->token = t->u.s;
        op->tlen = t->len;
    }
    const struct json *w = json_get(root, "idempotency_window_seconds");
    if (w && w->type != JSON_NULL) {
        if (w->type != JSON_INT || w->u.i < 1 || w->u.i > 86400) {
            http_respond_error(req, 400, "bad_field",
                               "idempotency_window_seconds must be an integer from 1 to 86400");
            return -1;
        }
        op->window_s = (int)w->u.i;
    }
    return 0;
}

/* Splits /v1/counters/<ns>[/<name>[/<verb>]] into its parts. @return the number of parts
 * after the prefix (1-3), or -1 after answering 400/404. */
static int v1_path(struct http_request *req, char *ns, char *name, char *verb, size_t cap)
{
    const char *p = req->path + 13, *end = req->path + req->path_len;
    char *parts[3] = {ns, name, verb};
    int n = 0;
    while (p < end && n < 3) {
        const char *q = memchr(p, '/', (size_t)(end - p));
        size_t len = (size_t)((q ? q : end) - p);
        if (len >= cap)
            len = cap - 1;
        memcpy(parts[n], p, len);
        parts[n++][len] = '\0';
        p = q ? q + 1 : end;
        if (!q)
            break;
    }
    if (p < end || n == 0) {
        http_respond_error(req, 404, "not_found", "no endpoint %s %.200s", req->method_name,
                           req->path);
        return -1;
    }
    if (!gstore_ns_name_valid(ns, strlen(ns))) {
        http_respond_error(req, 400, "bad_field", "namespace must be 1-%d bytes of [A-Za-z0-9_.-]",
                           GSTORE_NS_MAX);
        return -1;
    }
    if (n >= 2 && !gstore_counter_name_valid(name, strlen(name))) {
        http_respond_error(req, 400, "bad_name",
                           "counter names are 1-200 bytes of [A-Za-z0-9_.:-]");
        return -1;
    }
    return n;
}

struct v1_list {
    struct buf *b;
    const char *ns;
    size_t nsl;
    int n;
};

static void v1_put(void *arg, const char *key, size_t len, int64_t value)
{
    struct v1_list *l = arg;
    int k = gstore_key_ns_len(key, len);
    if (k > 0 ? (size_t)k != l->nsl || memcmp(key, l->ns, l->nsl) : strcmp(l->ns, "default"))
        return;
    size_t skip = k > 0 ? (size_t)k + 1 : 0;
    buf_puts(l->b, l->n++ ? "," : "");
    buf_json_str(l->b, key + skip, len - skip);
    buf_puts(l->b, ":{\"count\":");
    buf_i64(l->b, value);
    buf_puts(l->b, ",\"nodes\":{}}");
}

/* GET /v1/counters/<ns>: the namespace's counters, whole (the strong counter holds few). */
static void v1_list(struct consistent *c, struct http_request *req, const char *ns)
{
    if (c->etcd) {
        etcd_listing(c, req, ns);
        return;
    }
    struct buf *b = &c->out;
    buf_puts(b, "{\"namespace\":");
    buf_json_str(b, ns, strlen(ns));
    buf_puts(b, ",\"counters\":{");
    struct v1_list l = {b, ns, strlen(ns), 0};
    strong_each(c->strong, v1_put, &l);
    buf_printf(b, "},\"total_counters\":%d,\"truncated\":false,\"next_cursor\":null", l.n);
    v1_tail(c, b, strong_durable(c->strong));
    respond_out(c, req, 200);
}

/* GET /v1/counters/<ns>/<name>: 404 when unknown or deleted. */
static void v1_get(struct consistent *c, struct http_request *req, const char *ns, const char *name,
                   const char *key, size_t klen)
{
    int64_t v;
    if (c->etcd) {
        etcd_read(c, req, key, klen, ns, name);
        return;
    }
    if (!strong_get(c->strong, key, klen, &v)) {
        http_respond_error(req, 404, "not_found", "counter %s does not exist in namespace %s", name,
                           ns);
        return;
    }
    struct buf *b = &c->out;
    v1_head(b, ns, name);
    buf_puts(b, ",\"count\":");
    buf_i64(b, v);
    buf_puts(b, ",\"nodes\":{}");
    v1_tail(c, b, strong_durable(c->strong));
    respond_out(c, req, 200);
}

/* The operation a method and verb name: 0 with op->kind, or -1 after answering 404/405. */
static int v1_kind(struct http_request *req, int parts, const char *verb, struct strong_op *op,
                   int *with_count)
{
    int post = req->method == HTTP_M_POST;
    *with_count = 0;
    if (parts == 2) {
        if (req->method == HTTP_M_DELETE) {
            op->kind = STRONG_DELETE;
            return 0;
        }
        http_respond_not_allowed(req, "GET, HEAD, DELETE");
        return -1;
    }
    if (!strcmp(verb, "add") || !strcmp(verb, "add-and-get") || !strcmp(verb, "clear")) {
        if (!post) {
            http_respond_not_allowed(req, "POST");
            return -1;
        }
        op->kind = verb[0] == 'c' ? STRONG_CLEAR : STRONG_ADD;
        *with_count = !strcmp(verb, "add-and-get");
        return 0;
    }
    http_respond_error(req, 404, "not_found", "no endpoint %s %.200s", req->method_name, req->path);
    return -1;
}

static void h_v1(void *role, struct http_request *req)
{
    struct consistent *c = role;
    char ns[256], name[256], verb[256] = "";
    int parts = v1_path(req, ns, name, verb, sizeof ns);
    if (parts < 0 || not_ready(c, req))
        return;
    int get = req->method == HTTP_M_GET || req->method == HTTP_M_HEAD;
    if (parts == 1) {
        if (get)
            v1_list(c, req, ns);
        else
            http_respond_not_allowed(req, "GET, HEAD");
        return;
    }
    char key[GSTORE_NS_MAX + 260];
    int kl = strcmp(ns, "default") ? snprintf(key, sizeof key, "%s/%s", ns, name)
                                   : snprintf(key, sizeof key, "%s", name);
    if (parts == 2 && get) {
        v1_get(c, req, ns, name, key, (size_t)kl);
        return;
    }
    struct strong_op op = {.name = key, .len = (size_t)kl, .span = req->span};
    int with_count;
    if (v1_kind(req, parts, verb, &op, &with_count) < 0 ||
        (op.kind != STRONG_DELETE && v1_body(c, req, &op) < 0))
        return;
    struct v1_pending *p = xcalloc(1, sizeof *p + (size_t)kl + 1);
    *p = (struct v1_pending){.c = c,
                             .req = req,
                             .kind = op.kind,
                             .with_count = with_count,
                             .delta = op.amount,
                             .klen = (size_t)kl};
    snprintf(p->ns, sizeof p->ns, "%s", ns);
    snprintf(p->name, sizeof p->name, "%s", name);
    memcpy(p->key, key, (size_t)kl);
    if (c->etcd)
        etcd_strong_submit(c->etcd, &op, v1_done, p);
    else
        strong_submit(c->strong, &op, v1_done, p);
}

/* ---------------------------------------------------------------- etcd reads */

/* A read waiting for etcd: /counter/{name} (ns empty) or a /v1 one. */
struct etcd_pending {
    struct consistent *c;
    struct http_request *req;
    int v1;
    char ns[GSTORE_NS_MAX + 1], name[256];
};

static void etcd_read_done(void *arg, int status, int found, int64_t value, const char *detail)
{
    struct etcd_pending *p = arg;
    struct consistent *c = p->c;
    struct buf *b = &c->out;
    buf_reset(b);
    if (status != STRONG_OK) {
        http_respond_error(p->req, 503, "no_quorum", "linearizable read failed: %s",
                           detail ? detail : "etcd did not answer");
    } else if (p->v1 && !found) {
        http_respond_error(p->req, 404, "not_found", "counter %s does not exist in namespace %s",
                           p->name, p->ns);
    } else if (p->v1) {
        v1_head(b, p->ns, p->name);
        buf_puts(b, ",\"count\":");
        buf_i64(b, value);
        buf_puts(b, ",\"nodes\":{}");
        v1_tail(c, b, 1);
        respond_out(c, p->req, 200);
    } else {
        buf_puts(b, "{\"counter\":");
        buf_json_str(b, p->name, strlen(p->name));
        buf_puts(b, ",\"value\":");
        buf_i64(b, found ? value : 0);
        buf_puts(b, ",\"consistency\":\"strong\",\"note\":\"This value is guaranteed to be the "
                    "latest\",\"durable\":true,\"backend\":\"etcd\"}");
        respond_out(c, p->req, 200);
    }
    free(p);
}

static void etcd_read(struct consistent *c, struct http_request *req, const char *key, size_t klen,
                      const char *ns, const char *name)
{
    struct etcd_pending *p = xcalloc(1, sizeof *p);
    p->c = c;
    p->req = req;
    p->v1 = ns != NULL;
    snprintf(p->ns, sizeof p->ns, "%s", ns ? ns : "");
    snprintf(p->name, sizeof p->name, "%.*s", (int)(name ? strlen(name) : klen), name ? name : key);
    etcd_strong_get(c->etcd, key, klen, etcd_read_done, p);
}

static void etcd_list_done(void *arg, int status, const struct etcd_row *rows, size_t n,
                           const char *detail)
{
    struct etcd_pending *p = arg;
    struct consistent *c = p->c;
    struct buf *b = &c->out;
    buf_reset(b);
    if (status != STRONG_OK) {
        http_respond_error(p->req, 503, "no_quorum", "linearizable read failed: %s",
                           detail ? detail : "etcd did not answer");
    } else if (p->v1) {
        buf_puts(b, "{\"namespace\":");
        buf_json_str(b, p->ns, strlen(p->ns));
        buf_puts(b, ",\"counters\":{");
        struct v1_list l = {b, p->ns, strlen(p->ns), 0};
        for (size_t i = 0; i < n; i++)
            v1_put(&l, rows[i].key, rows[i].len, rows[i].value);
        buf_printf(b, "},\"total_counters\":%d,\"truncated\":%s,\"next_cursor\":null", l.n,
                   detail ? "true" : "false");
        v1_tail(c, b, 1);
        respond_out(c, p->req, 200);
    } else {
        buf_puts(b, "{\"counters\":{");
        for (size_t i = 0; i < n; i++)
            put_counter(b, rows[i].key, rows[i].len, rows[i].value);
        buf_puts(b, "},\"consistency\":\"strong\",\"durable\":true,\"backend\":\"etcd\"");
        buf_puts(b, detail ? ",\"truncated\":true}" : "}");
        respond_out(c, p->req, 200);
    }
    free(p);
}

static void etcd_listing(struct consistent *c, struct http_request *req, const char *ns)
{
    struct etcd_pending *p = xcalloc(1, sizeof *p);
    p->c = c;
    p->req = req;
    p->v1 = ns != NULL;
    snprintf(p->ns, sizeof p->ns, "%s", ns ? ns : "");
    etcd_strong_list(c->etcd, ns, etcd_list_done, p);
}

/* GET /admin/etcd: the endpoints as their last status probe saw them (404 when embedded). */
static void h_admin_etcd(void *role, struct http_request *req)
{
    struct consistent *c = role;
    if (!c->etcd) {
        http_respond_error(req, 404, "not_found",
                           "this strong counter runs the embedded backend (--strong-backend etcd "
                           "has /admin/etcd)");
        return;
    }
    etcd_strong_admin(c->etcd, &c->out);
    respond_out(c, req, 200);
}

/* The strong counter's endpoints; only /counter/{name} renames its span. */
static const struct route routes[] = {
    {ROUTE_POST, "/increment", 0, h_increment, NULL, NULL},
    {ROUTE_GET, "/counter/", 1, h_counter, "/counter/{name}", NULL},
    {ROUTE_GET, "/counters", 0, h_counters, NULL, NULL},
    {ROUTE_GET, "/health", 0, h_health, NULL, NULL},
    {ROUTE_GET, "/metrics", 0, h_metrics, NULL, NULL},
    {ROUTE_GET, "/admin/coordination-delay", 0, h_delay_get, NULL, NULL},
    {ROUTE_POST, "/admin/coordination-delay", 0, h_delay_set, NULL, NULL},
    {ROUTE_POST, "/admin/reload", 0, h_reload, NULL, NULL},
    {ROUTE_GET, "/admin/etcd", 0, h_admin_etcd, NULL, NULL},
    {ROUTE_ANY, "/v1/counters/", 1, h_v1, NULL, NULL},
    {0, NULL, 0, NULL, NULL, NULL}};

static void handle(struct http_request *req, void *arg)
{
    struct consistent *c = arg;
    buf_reset(&c->out);
    if (req->path_len >= 7 && memcmp(req->path, "/admin/", 7) == 0 &&
        auth_refuse_unauthorized(req, c->admin_token))
        return;
    if (req->span)
        route_trace(routes, req);
    route_serve(routes, c, req);
}

/* ---------------------------------------------------------------- set-up */

static int decide(void *arg, const char *dir, const char *from, const char *to, const char *kind,
                  int *delay_ms)
{
    struct consistent *c = arg;
    return policy_faults_decide(c->lua, dir, from, to, kind, 0, delay_ms);
}

static double epoch_of(void *arg)
{
    struct strong_stats st;
    strong_stats(((struct consistent *)arg)->strong, &st);
    return (double)st.epoch;
}

static double replica_up(void *arg)
{
    struct replica_gauge *g = arg;
    return strong_replica_up(g->c->strong, g->i);
}

static double replica_durable(void *arg)
{
    struct replica_gauge *g = arg;
    return strong_replica_durable(g->c->strong, g->i) == 1;
}

static void register_metrics(struct consistent *c, const struct config *cfg, int n)
{
    static const double buckets[] = {0.001, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1,
                                     0.15,  0.25,  0.5,  1,     2.5,  5};
    int nb = (int)(sizeof buckets / sizeof buckets[0]);
    c->m_value = metrics_add(c->metrics, METRIC_GAUGE, "consistent_counter_value",
                             "Committed value of each strong counter (top names; the rest _other)",
                             "counter_name", NULL, 0);
    metric_limit(c->m_value, cfg->metrics_top_n, 0);
    c->m_incr = metrics_add(c->metrics, METRIC_COUNTER, "consistent_counter_increments_total",
                            "Strong increments acknowledged (top names; the rest _other)",
                            "counter_name", NULL, 0);
    metric_limit(c->m_incr, cfg->metrics_top_n, 0);
    c->m_latency = metric_only(metrics_add(
        c->metrics, METRIC_HISTOGRAM, "consistent_counter_increment_latency_seconds",
        "Time from a strong increment's arrival to its acknowledgement", NULL, buckets, nb));
    c->m_lock = metric_only(metrics_add(
        c->metrics, METRIC_HISTOGRAM, "consistent_counter_lock_wait_seconds",
        "Time a strong increment waited for the replication round in flight", NULL, buckets, nb));
    if (c->use_etcd)
        goto failures; /* no epoch nor replicas: etcd's own (strong_etcd.c's metrics) */
    metric_set_fn(
        metric_only(metrics_add(c->metrics, METRIC_GAUGE, "counterd_strong_epoch",
                                "The strong leader's epoch (0 while recovering)", NULL, NULL, 0)),
        epoch_of, c);
    struct metric *up = metrics_add(c->metrics, METRIC_GAUGE, "counterd_strong_replica_up",
                                    "Whether the replica answered its last replication message",
                                    "replica", NULL, 0);
    struct metric *durable =
        metrics_add(c->metrics, METRIC_GAUGE, "counterd_strong_replica_durable",
                    "Whether the replica's last answer said it keeps its data on disk (a DATA_DIR)",
                    "replica", NULL, 0);
    for (int i = 0; i < n; i++) {
        c->gauges[i] = (struct replica_gauge){c, i};
        const char *labels[1] = {c->replica_names[i]};
        metric_set_fn(metric_series(up, labels), replica_up, &c->gauges[i]);
        metric_set_fn(metric_series(durable, labels), replica_durable, &c->gauges[i]);
    }
failures:;
    struct metric *failed = metrics_add(
        c->metrics, METRIC_COUNTER, "counterd_strong_increment_failures_total",
        "Strong increments not acknowledged, by error: no_quorum (provably not applied), "
        "ambiguous (may have been applied), overflow",
        "error", NULL, 0);
    for (int i = 0; i < 3; i++) {
        const char *labels[1] = {failure_names[i]};
        c->m_failed[i] = metric_series(failed, labels);
    }
}

/* Fills names/urls from REGION_ENDPOINTS, else from lua/conf/lab.lua. @return the count. */
static int replicas_of(struct consistent *c, const struct config *cfg, char urls[][512], char *err,
                       size_t errlen)
{
    int n = 0;
    if (cfg->region_endpoints[0]) {
        /* A replica given as host:port is labelled by its address (metrics, errors) until
         * its first answer gives its node id (strong.c's replica_ids). */
        struct endpoint eps[STRONG_MAX_REPLICAS];
        n = endpoint_list_parse(cfg->region_endpoints_from, cfg->region_endpoints, eps,
                                STRONG_MAX_REPLICAS, err, errlen);
        for (int i = 0; i < n; i++) {
            const char *label = eps[i].name[0] ? eps[i].name : eps[i].addr;
            if (strlen(label) >= sizeof c->replica_names[i]) {
                snprintf(err, errlen, "%s: '%s' is longer than %zu bytes",
                         cfg->region_endpoints_from, label, sizeof c->replica_names[i] - 1);
                return -1;
            }
            snprintf(c->replica_names[i], sizeof c->replica_names[i], "%s", label);
            snprintf(urls[i], 512, "%s", eps[i].url);
        }
        if (n == 0)
            snprintf(err, errlen, "%s has no endpoint", cfg->region_endpoints_from);
        return n;
    }
    n = policy_lab_regions(c->lua, c->replica_names, urls, STRONG_MAX_REPLICAS);
    if (n <= 0)
        snprintf(err, errlen, "no replicas: set REGION_ENDPOINTS (or fix lua/conf/lab.lua)");
    return n;
}

/* The strong leader over the replicas (REGION_ENDPOINTS, else lua/conf/lab.lua). @return 0,
 * or -1 with a sentence in err. */
static int start_strong(struct consistent *c, struct event_base *base, const struct config *cfg,
                        const char *node_id, char *err, size_t errlen)
{
    char urls[STRONG_MAX_REPLICAS][512];
    int n = replicas_of(c, cfg, urls, err, errlen);
    if (n <= 0)
        return -1;
    struct strong_config sc = {
        .node_id = node_id,
        .region = cfg->region,
        .nreplicas = n,
        .timeout_ms = cfg->request_timeout_up_ms > 0 ? cfg->request_timeout_up_ms : 3000,
        .allow_volatile = cfg->allow_volatile_replicas};
    c->nreplicas = n;
    c->allow_volatile = cfg->allow_volatile_replicas;
    snprintf(c->node_id, sizeof c->node_id, "%s", node_id);
    snprintf(c->region, sizeof c->region, "%s", cfg->region);
    if (c->allow_volatile)
        log_warn("--allow-volatile-replicas: replicas without DATA_DIR count toward a majority; "
                 "what rests on them is lost when they restart, and answers say \"durable\": "
                 "false");
    char auth[300];
    if (cfg->admin_token[0]) {
        snprintf(auth, sizeof auth, "Authorization: Bearer %s", cfg->admin_token);
        sc.auth_header = auth;
    }
    for (int i = 0; i < n; i++) {
        sc.replica_names[i] = c->replica_names[i];
        sc.replica_urls[i] = urls[i];
    }
    register_metrics(c, cfg, n);
    struct strong_hooks hooks = {decide, c};
    c->strong = strong_new(base, c->client, &sc, &hooks);
    return 0;
}

/* The strong counter in etcd (--strong-backend etcd). @return 0, or -1 with a sentence in err. */
static int start_etcd(struct consistent *c, struct event_base *base, const struct config *cfg,
                      const char *node_id, char *err, size_t errlen)
{
    c->use_etcd = 1;
    snprintf(c->node_id, sizeof c->node_id, "%s", node_id);
    snprintf(c->region, sizeof c->region, "%s", cfg->region);
    register_metrics(c, cfg, 0);
    struct etcd_strong_config ec = {cfg->etcd_endpoints, cfg->etcd_prefix, cfg->etcd_timeout_ms};
    c->etcd = etcd_strong_new(base, c->client, c->metrics, &ec, err, errlen);
    return c->etcd ? 0 : -1;
}

static struct role_parts parts_of(struct consistent *c)
{
    return (struct role_parts){&c->metrics, &c->otlp,   &c->admin_token, &c->client,
                               &c->lua,     &c->reload, &c->server};
}

struct consistent *consistent_new(struct event_base *base, const struct config *cfg, char *err,
                                  size_t errlen)
{
    struct consistent *c = xcalloc(1, sizeof *c);
    struct role_parts parts = parts_of(c);
    json_parser_init(&c->parser);
    char node_id[128];
    snprintf(node_id, sizeof node_id, "%s-strong", cfg->region);
    struct host_info li = {"strong", node_id, cfg->region, cfg->policy_budget_ms};
    if (role_start(&parts, base, cfg, &li, ROLE_LUA_IO, err, errlen) < 0)
        goto fail;
    char lerr[512];
    if (host_load_policy(c->lua, "faults", lerr, sizeof lerr) < 0)
        log_error("faults policy not loaded, strong replication runs without it: %s", lerr);
    if (!strcmp(cfg->strong_backend, "etcd") ? start_etcd(c, base, cfg, node_id, err, errlen) < 0
                                             : start_strong(c, base, cfg, node_id, err, errlen) < 0)
        goto fail;
    struct http_server_opts so = role_server_opts(cfg);
    if (role_listen(&parts, base, cfg, &so, handle, c, err, errlen) < 0)
        goto fail;
    if (c->etcd)
        log_info("strong counter %s listening on %s:%d, backend etcd at %s (prefix %s)", node_id,
                 cfg->bind, http_server_port(c->server), cfg->etcd_endpoints, cfg->etcd_prefix);
    else
        log_info("strong counter %s listening on %s:%d, %d replica(s), a majority is %d", node_id,
                 cfg->bind, http_server_port(c->server), c->nreplicas, c->nreplicas / 2 + 1);
    return c;
fail:
    consistent_free(c);
    return NULL;
}

void consistent_free(struct consistent *c)
{
    if (!c)
        return;
    /* The leader answers what it holds while the server still has the connections. */
    strong_free(c->strong);
    etcd_strong_free(c->etcd);
    struct role_parts parts = parts_of(c);
    role_stop(&parts);
    json_parser_free(&c->parser);
    buf_free(&c->out);
    free(c);
}
