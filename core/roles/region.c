/*
 * region.c - the region role (see region.h).
 *
 * Every answer is written straight into a reusable buffer: no DOM on the way out.
 * Every request that fails validation is answered before anything is changed.
 */
#include "region.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../base/buf.h"
#include "../base/clock.h"
#include "../base/hash.h"
#include "../base/json.h"
#include "../base/log.h"
#include "../base/mem.h"
#include "../lua/host.h"
#include "../net/auth.h"
#include "../net/client.h"
#include "../net/otlp.h"
#include "../net/server.h"
#include "../net/url.h"
#include "../net/httpmetrics.h"
#include "../obs/metrics.h"
#include "../obs/trace.h"
#include "../repl/replica.h"
#include "../repl/replication.h"
#include "../store/dedup.h"
#include "../store/gcounter.h"
#include "../store/strongrep.h"
#include "../store/tokset.h"
#include "../store/wal.h"
#include "config.h"
#include "reqbody.h"
#include "reload.h"
#include "tracing.h"

#include <event2/event.h>

#define DEDUP_MAX 200000
#define DEDUP_WINDOW_S 600.0

struct region {
    char *node_id, *region;
    char *replica_id; /* "<node_id>~<incarnation>": where this process counts */
    int self;         /* replica_id interned in the store */
    /* Replicas grouped by node id for the API's "nodes" and "local_count". */
    int *rep_node;
    int rep_node_len;
    char **node_names;
    int nnodes, self_node;
    struct gstore *store;
    struct dedup *dedup;
    struct tokset *tokset; /* the counters' token sets (store/tokset.h) */
    /* Every region's node id, ours first: the homes of tokens, once all are known. */
    const char **home_ids;
    int nhome, home_known, settle_scan;
    struct event *tok_timer;
    uint64_t young_seen;
    double young_logged_ms;
    struct strongrep *strong; /* this node's replica of the strong counter */
    struct replica replica;
    struct reload *reload;
    struct metrics *metrics;
    struct lua_host *lua;
    struct http_client *client;
    struct repl *repl;
    struct http_server *server;
    struct json_parser parser;
    struct buf out;
    /* Durability: the log, and answers held until their records are fsynced. */
    struct wal *wal;
    struct event *wal_notify, *wal_timer;
    struct durable_wait *waits, *waits_tail;
    struct wal_metric {
        struct region *rg;
        enum wal_error kind;
    } wal_metrics[WAL_ERR_COUNT];
    char *admin_token;
    struct otlp *otlp; /* span export, when tracing is on */
    struct metric *m_incr;
    struct metric_series *m_local, *m_synced;
    struct metric_series *m_tok_pending, *m_tok_applied, *m_tok_already, *m_tok_failed, *m_tok_gc,
        *m_window_cut;
    /* Folding this node's retired incarnations (README "Durability"). */
    struct event *fold_timer;
    double start_ms, fold_after_ms;
    double fold_armed;   /* the gate's start (monotonic ms); 0: not armed */
    double fold_next;    /* no new gate before this */
    uint64_t fold_stuck; /* retired entries the last pass could not fold */
    char fold_why[320];
    struct metric_series *m_folded, *m_fold_skipped;
};

/* ---------------------------------------------------------------- JSON views */

static void put_str(struct buf *b, const char *s)
{
    buf_json_str(b, s, strlen(s));
}

/* "region":..,"node_id":.. (no braces) */
static void put_identity(struct region *rg, struct buf *b)
{
    buf_puts(b, "\"region\":");
    put_str(b, rg->region);
    buf_puts(b, ",\"node_id\":");
    put_str(b, rg->node_id);
}

/* The node a replica belongs to: its id up to '~' (see gcounter_replica_node_len). */
static int node_of(struct region *rg, int rep)
{
    if (rep >= rg->rep_node_len) {
        int n = gstore_replica_count(rg->store);
        rg->rep_node = xrealloc(rg->rep_node, (size_t)n * sizeof *rg->rep_node);
        for (int r = rg->rep_node_len; r < n; r++) {
            const char *name = gstore_replica_name(rg->store, r);
            size_t len = gcounter_replica_node_len(name, strlen(name));
            if (!len)
                len = strlen(name);
            int k = 0;
            while (k < rg->nnodes &&
                   !(strlen(rg->node_names[k]) == len && !memcmp(rg->node_names[k], name, len)))
                k++;
            if (k == rg->nnodes) {
                rg->node_names =
                    xrealloc(rg->node_names, (size_t)(rg->nnodes + 1) * sizeof *rg->node_names);
                rg->node_names[rg->nnodes++] = xstrndup(name, len);
            }
            rg->rep_node[r] = k;
        }
        rg->rep_node_len = n;
    }
    return rg->rep_node[rep];
}

/* This node's net contribution to c, over all its incarnations, exact. */
static gcount_wide local_wide(struct region *rg, const struct gcounter *c)
{
    struct gnode nodes[GCOUNTER_MAX_ENTRIES];
    unsigned k = c ? gcounter_nodes(rg->store, c, nodes) : 0;
    int self = gstore_replica_node(rg->store, rg->self);
    for (unsigned j = 0; j < k; j++)
        if (nodes[j].node == self)
            return nodes[j].pos - nodes[j].neg;
    return 0;
}

/* The same, clamped to int64 (see API.md, "Totals beyond int64"). */
static int64_t local_of(struct region *rg, const struct gcounter *c)
{
    return gcount_clamp(local_wide(rg, c), NULL);
}

/* The counter's value, exact: its entries, plus the increments pending for their tokens'
 * homes. */
static gcount_wide total_wide(struct region *rg, const struct gcounter *c, uint32_t id)
{
    gcount_wide v = gstore_value(rg->store, c);
    if (id != GSTORE_NONE)
        v += tokset_pending(rg->tokset, id);
    return v;
}

/* The same, clamped to int64 (see API.md, "Totals beyond int64"). */
static int64_t total_of(struct region *rg, const struct gcounter *c, uint32_t id)
{
    return gcount_clamp(total_wide(rg, c, id), NULL);
}

static void put_wide_str(struct buf *b, gcount_wide v)
{
    char s[48];
    buf_putc(b, '"');
    buf_append(b, s, gcount_str(v, s));
    buf_putc(b, '"');
}

/* Whether this node is the home of a token: one that names it ("<our node id>/..."), or one
 * hashed to it among every region, never while it does not know them all. */
static int is_home(struct region *rg, const char *tok, size_t tlen)
{
    size_t n = strlen(rg->node_id);
    if (tlen > n && tok[n] == '/' && !memcmp(tok, rg->node_id, n))
        return 1;
    return rg->home_known && tokset_home(tok, tlen, rg->home_ids, rg->nhome) == 0;
}

/*
 * "local_count":..,"total_count":..,"nodes":{"us-east-1":15,...}[,"pending":..] (no braces):
 * each node's net contribution, incarnations summed, and the increments held for their
 * tokens' homes (in total_count, not in nodes). A count beyond int64 is clamped to its
 * range, and "beyond_int64":true with "exact" (the same three as decimal strings) follow.
 */
static void put_counts(struct region *rg, struct buf *b, const struct gcounter *c, uint32_t id)
{
    struct gnode nodes[GCOUNTER_MAX_ENTRIES];
    unsigned k = c ? gcounter_nodes(rg->store, c, nodes) : 0;
    gcount_wide local = local_wide(rg, c), total = total_wide(rg, c, id);
    int beyond = 0, any = 0;
    buf_puts(b, "\"local_count\":");
    buf_i64(b, gcount_clamp(local, &beyond));
    any |= beyond;
    buf_puts(b, ",\"total_count\":");
    buf_i64(b, gcount_clamp(total, &beyond));
    any |= beyond;
    buf_puts(b, ",\"nodes\":{");
    for (unsigned j = 0; j < k; j++) {
        if (j)
            buf_putc(b, ',');
        put_str(b, gstore_node_name(rg->store, nodes[j].node));
        buf_putc(b, ':');
        buf_i64(b, gcount_clamp(nodes[j].pos - nodes[j].neg, &beyond));
        any |= beyond;
    }
    buf_putc(b, '}');
    int64_t pending = id == GSTORE_NONE ? 0 : tokset_pending(rg->tokset, id);
    if (pending) {
        buf_puts(b, ",\"pending\":");
        buf_i64(b, pending);
    }
    if (!any)
        return;
    buf_puts(b, ",\"beyond_int64\":true,\"exact\":{\"local_count\":");
    put_wide_str(b, local);
    buf_puts(b, ",\"total_count\":");
    put_wide_str(b, total);
    buf_puts(b, ",\"nodes\":{");
    for (unsigned j = 0; j < k; j++) {
        if (j)
            buf_putc(b, ',');
        put_str(b, gstore_node_name(rg->store, nodes[j].node));
        buf_putc(b, ':');
        put_wide_str(b, nodes[j].pos - nodes[j].neg);
    }
    buf_puts(b, "}}");
}

/* {"views":{"local_count","total_count","nodes"},...} */
static void put_all_counters(struct region *rg, struct buf *b)
{
    buf_putc(b, '{');
    uint32_t n = gstore_count(rg->store);
    for (uint32_t id = 0; id < n; id++) {
        const struct gcounter *c = gstore_counter(rg->store, id);
        size_t len;
        const char *name = gcounter_name(c, &len);
        if (id)
            buf_putc(b, ',');
        buf_json_str(b, name, len);
        buf_puts(b, ":{");
        put_counts(rg, b, c, id);
        buf_putc(b, '}');
    }
    buf_putc(b, '}');
}

static void respond_out(struct http_request *req, struct region *rg, int status)
{
    http_respond_json(req, status, rg->out.data, rg->out.len);
    buf_trim(&rg->out, 1u << 20); /* a /counters answer can be 100 MB: do not keep it */
}

/* ---------------------------------------------------------------- durability */

/* An answer held until the record it acknowledges is durable: under fsync=always, or
 * (need_sync) a strong-counter replica's answer, which waits for fsync under any policy. */
struct durable_wait {
    struct durable_wait *next;
    struct http_request *req;
    uint64_t pos;
    int need_sync;
    size_t len;
    char body[];
};

/* Answers rg->out for req once the log is durable up to pos (now, unless fsync=always
 * or need_sync). */
static void respond_durable_ex(struct region *rg, struct http_request *req, uint64_t pos,
                               int need_sync)
{
    if (!rg->wal || (wal_policy(rg->wal) != WAL_FSYNC_ALWAYS && !need_sync) || pos == 0) {
        /* The server writes the log (before_flush) before this answer leaves. */
        http_respond_json(req, 200, rg->out.data, rg->out.len);
        buf_trim(&rg->out, 1u << 20);
        return;
    }
    struct durable_wait *w = xmalloc(sizeof *w + rg->out.len);
    w->next = NULL;
    w->req = req;
    w->pos = pos;
    w->need_sync = need_sync;
    w->len = rg->out.len;
    memcpy(w->body, rg->out.data, rg->out.len);
    if (rg->waits_tail)
        rg->waits_tail->next = w;
    else
        rg->waits = w;
    rg->waits_tail = w;
}

static void respond_durable(struct region *rg, struct http_request *req, uint64_t pos)
{
    respond_durable_ex(rg, req, pos, 0);
}

/*
 * Releases the held answers whose records are durable now. They are in log order, and
 * the fsynced position never passes the durable one, so the head is always the next.
 */
static void release_durable(struct region *rg)
{
    uint64_t durable = wal_durable(rg->wal), synced = wal_synced(rg->wal);
    int failed = wal_sync_failed(rg->wal); /* a full disk only delays them */
    while (rg->waits && (rg->waits->pos <= (rg->waits->need_sync ? synced : durable) || failed)) {
        struct durable_wait *w = rg->waits;
        rg->waits = w->next;
        if (!rg->waits)
            rg->waits_tail = NULL;
        if (w->pos <= (w->need_sync ? synced : durable))
            http_respond_json(w->req, 200, w->body, w->len);
        else
            http_respond_error(w->req, 503, "unavailable",
                               "the increment was applied but could not be made durable "
                               "(disk error); retry with the same idempotency_token");
        free(w);
    }
}

static void on_wal_notify(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct region *rg = arg;
    wal_notified(rg->wal);
    release_durable(rg);
}

static void on_wal_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct region *rg = arg;
    wal_write(rg->wal); /* what merges of answers to our own /sync changed */
    wal_tick(rg->wal, rg->store, rg->dedup);
    if (rg->waits)
        release_durable(rg); /* a failed fsync is only noticed here */
}

/*
 * Whether the log can take need more bytes: asked before a write applies anything. On a
 * full or failed disk it answers 503 unavailable (nothing applied) and returns -1.
 */
static int reserve_log(struct region *rg, struct http_request *req, size_t need)
{
    if (!rg->wal || wal_reserve(rg->wal, need) == 0)
        return 0;
    const char *why = wal_status(rg->wal);
    http_respond_error(req, 503, "unavailable",
                       "%s: this node cannot write its log, so it applies no writes until it "
                       "can (it retries by itself); nothing was applied (%s)",
                       strncmp(why, "disk_full", 9) == 0 ? "the disk is full" : "disk error", why);
    return -1;
}

/* Log bytes one increment may take: its counter's record (one entry, one token-set
 * element and one folded replica more than now), token and answer. */
static size_t incr_record_max(struct region *rg, uint32_t id, size_t nlen, size_t tlen)
{
    const struct gcounter *c = id == GSTORE_NONE ? NULL : gstore_counter(rg->store, id);
    size_t entries = (c ? gcounter_entries(c) : 0) + 1;
    size_t elements = (id == GSTORE_NONE ? 0 : tokset_elements(rg->tokset, id)) + 1;
    const uint16_t *f;
    size_t folded = (id == GSTORE_NONE ? 0 : gstore_folded_list(rg->store, id, &f)) + 1;
    return 256 + 2 * (nlen + tlen) + entries * (GSTORE_REPLICA_NAME_MAX + 18) +
           elements * (TOKSET_TOKEN_MAX + 16) + folded * (GSTORE_REPLICA_NAME_MAX + 1);
}

/* Before a peer's /sync answer is merged: room in the log for what it may change (as much
 * as the /sync handler asks of a request of that size). */
static int before_merge(void *arg, size_t len)
{
    struct region *rg = arg;
    return rg->wal ? wal_reserve(rg->wal, 2 * len + (64u << 10)) : 0;
}

/* The server calls this before any answer of a loop iteration leaves: the log first. */
static int before_flush(void *arg)
{
    struct region *rg = arg;
    return rg->wal ? wal_write(rg->wal) : 0;
}

/*
 * Before a /sync push leaves: the log first, as for an answer, so a crash never takes
 * back a change a peer holds (that is what lets a restart keep the replica id). After a
 * failed write the push may go only once the run file is gone (the next start then mints
 * a new id).
 */
static int before_send(void *arg)
{
    struct region *rg = arg;
    if (!rg->wal)
        return 0;
    int rc = wal_write(rg->wal);
    wal_synced(rg->wal); /* notices a failed fsync */
    if (rc < 0 || wal_failed(rg->wal))
        return wal_forget_run(rg->wal);
    return 0;
}

static void persist_changed(struct region *rg, uint32_t id)
{
    if (rg->wal)
        wal_append(rg->wal, rg->store, id, NULL, 0, NULL, 0);
}

/* ---------------------------------------------------------------- handlers */

/* "ok", or "degraded" with the reasons: the node still answers reads (so 200). */
static void h_health(struct region *rg, struct http_request *req)
{
    struct buf *b = &rg->out;
    const char *why[2];
    int n = 0;
    if (rg->wal && (why[n] = wal_status(rg->wal)))
        n++;
    if (rg->wal && (why[n] = wal_snapshot_status(rg->wal)))
        n++;
    buf_puts(b, n ? "{\"status\":\"degraded\"," : "{\"status\":\"ok\",");
    buf_puts(b, "\"service\":\"counter\",");
    put_identity(rg, b);
    if (n) {
        buf_puts(b, ",\"degraded\":[");
        for (int i = 0; i < n; i++) {
            if (i)
                buf_putc(b, ',');
            put_str(b, why[i]);
        }
        buf_putc(b, ']');
    }
    buf_putc(b, '}');
    respond_out(req, rg, 200);
}

static void h_metrics(struct region *rg, struct http_request *req)
{
    http_respond_metrics(req, rg->metrics, &rg->out);
}

static void h_increment(struct region *rg, struct http_request *req)
{
    struct incr_body ib;
    if (reqbody_increment(&rg->parser, req, &ib) < 0)
        return;
    const struct json *root = ib.root, *v;
    const char *name = ib.name;
    size_t nlen = ib.nlen;
    int64_t amount = ib.amount;
    const char *token = NULL;
    size_t tlen = 0;
    v = json_get(root, "idempotency_token");
    if (v && v->type != JSON_NULL) {
        if (v->type != JSON_STR || v->len == 0 || v->len > DEDUP_TOKEN_MAX ||
            (v->flags & JSON_F_HAS_NUL)) {
            http_respond_error(req, 400, "bad_field",
                               "idempotency_token must be a string of 1-%d bytes", DEDUP_TOKEN_MAX);
            return;
        }
        token = v->u.s;
        tlen = v->len;
    }
    /* Sent by the gateways of older versions when another region failed to answer: the
     * token's home decides now (store/tokset.h), so it is accepted and ignored. */

    if (req->span) {
        trace_span_attr_str(req->span, "counter.name", name, nlen);
        trace_span_attr_int(req->span, "counter.amount", amount);
    }
    if (rg->wal) {
        uint32_t fid = gstore_find(rg->store, name, nlen);
        if (reserve_log(rg, req, incr_record_max(rg, fid, nlen, tlen)) < 0)
            return;
    }
    struct dedup_answer prev;
    double now = clock_unix_s();
    uint32_t id = gstore_find(rg->store, name, nlen);
    int known = token && dedup_get(rg->dedup, name, nlen, token, tlen, now, &prev);
    int64_t tok_amount;
    int tok_settled;
    if (token && !known && id != GSTORE_NONE &&
        tokset_get(rg->tokset, id, token, tlen, &tok_amount, &tok_settled)) {
        known = 1; /* taken by another region, for this token's home: merged here */
        prev = (struct dedup_answer){tok_amount, DEDUP_ELSEWHERE, 0};
    }
    if (known) {
        if (prev.amount != amount) {
            http_respond_error(req, 409, "idempotency_conflict",
                               "idempotency_token was used with amount %" PRId64
                               " on this counter, not %" PRId64,
                               prev.amount, amount);
            return;
        }
        if (prev.local_count == DEDUP_ELSEWHERE || prev.local_count == DEDUP_SETTLED) {
            /* Not applied to this node's entry: answer with the counts here. */
            const struct gcounter *pc = id == GSTORE_NONE ? NULL : gstore_counter(rg->store, id);
            prev.local_count = local_of(rg, pc);
            prev.total_count = total_of(rg, pc, id);
        }
        struct buf *b = &rg->out;
        buf_puts(b, "{\"counter\":");
        buf_json_str(b, name, nlen);
        buf_puts(b, ",\"local_count\":");
        buf_i64(b, prev.local_count);
        buf_puts(b, ",\"total_count\":");
        buf_i64(b, prev.total_count);
        buf_puts(b, ",\"node_id\":");
        put_str(b, rg->node_id);
        buf_puts(b, ",\"region\":");
        put_str(b, rg->region);
        buf_puts(b, ",\"duplicate\":true}");
        /* The first request's record may not be durable yet: neither is this answer. */
        respond_durable(rg, req, rg->wal ? wal_position(rg->wal) : 0);
        return;
    }

    if (id == GSTORE_NONE && amount == INT64_MIN) {
        http_respond_error(req, 409, "overflow", "counter %s would leave the signed 64-bit range",
                           name);
        return;
    }
    if (id == GSTORE_NONE)
        id = gstore_create(rg->store, name, nlen);
    int pending = token && !is_home(rg, token, tlen);
    const struct gcounter *c = gstore_counter(rg->store, id);
    int rc = 0;
    int64_t sum;
    if (pending) {
        /* Not this token's home: a pending element of the counter's token set, which the
         * home applies (once) when it learns it. It counts in this node's total now. */
        /* The held increments of a counter are bounded like a replica's own entry. */
        if (amount == INT64_MIN ||
            __builtin_add_overflow(tokset_pending(rg->tokset, id), amount, &sum))
            rc = GSTORE_EOVERFLOW;
        else
            tokset_merge(rg->tokset, id, token, tlen, amount, 0, gstore_touch(rg->store, id));
    } else {
        rc = gstore_incr(rg->store, id, rg->self, amount);
    }
    if (rc == GSTORE_EOVERFLOW) {
        http_respond_error(req, 409, "overflow",
                           "counter %s would leave the signed 64-bit range; nothing was applied",
                           name);
        return;
    }
    if (rc == GSTORE_EFULL) {
        http_respond_error(req, 409, "too_many_replicas", "counter %s has too many node ids", name);
        return;
    }
    c = gstore_counter(rg->store, id);
    struct dedup_answer a = {amount, local_of(rg, c), total_of(rg, c, id)};
    struct dedup_answer remembered = a;
    if (pending) {
        remembered.local_count = DEDUP_ELSEWHERE;
        metric_add(rg->m_tok_pending, 1);
    }
    if (token)
        dedup_put(rg->dedup, name, nlen, token, tlen, now, &remembered);
    uint64_t pos =
        rg->wal ? wal_append(rg->wal, rg->store, id, token, tlen, token ? &remembered : NULL, now)
                : 0;

    const char *labels[3] = {"counter", rg->region, name};
    metric_add(metric_series(rg->m_incr, labels), 1);

    struct buf *b = &rg->out;
    buf_puts(b, "{\"counter\":");
    buf_json_str(b, name, nlen);
    buf_puts(b, ",\"local_count\":");
    buf_i64(b, a.local_count);
    buf_puts(b, ",\"total_count\":");
    buf_i64(b, a.total_count);
    buf_puts(b, ",\"node_id\":");
    put_str(b, rg->node_id);
    buf_puts(b, ",\"region\":");
    put_str(b, rg->region);
    buf_puts(b, pending ? ",\"pending\":true}" : "}");
    respond_durable(rg, req, pos);
}

static void h_counter(struct region *rg, struct http_request *req, const char *raw, size_t rlen)
{
    char name[256];
    long n = reqbody_path_name(req, raw, rlen, name, sizeof name);
    if (n < 0)
        return;
    uint32_t id = gstore_find(rg->store, name, (size_t)n);
    const struct gcounter *c = id == GSTORE_NONE ? NULL : gstore_counter(rg->store, id);
    struct buf *b = &rg->out;
    buf_puts(b, "{\"counter\":");
    buf_json_str(b, name, (size_t)n);
    buf_putc(b, ',');
    put_counts(rg, b, c, id);
    buf_putc(b, ',');
    put_identity(rg, b);
    buf_putc(b, '}');
    respond_out(req, rg, 200);
}

/* {"region","node_id","network_partition","last_sync_time" (no closing brace): the head of
 * /counters and of /admin/sync. */
static void put_sync_head(struct region *rg, struct buf *b)
{
    buf_putc(b, '{');
    put_identity(rg, b);
    buf_puts(b, repl_partitioned(rg->repl) ? ",\"network_partition\":true"
                                           : ",\"network_partition\":false");
    buf_puts(b, ",\"last_sync_time\":");
    buf_printf(b, "%.3f", repl_last_sync_time(rg->repl));
}

static void h_counters(struct region *rg, struct http_request *req)
{
    struct buf *b = &rg->out;
    put_sync_head(rg, b);
    buf_puts(b, ",\"counters\":");
    put_all_counters(rg, b);
    buf_putc(b, '}');
    respond_out(req, rg, 200);
}

static void put_partition(struct region *rg, struct buf *b)
{
    buf_puts(b, repl_partitioned(rg->repl) ? "{\"network_partition\":true,"
                                           : "{\"network_partition\":false,");
    put_identity(rg, b);
}

static void h_partition_get(struct region *rg, struct http_request *req)
{
    put_partition(rg, &rg->out);
    buf_putc(&rg->out, '}');
    respond_out(req, rg, 200);
}

static void h_partition_set(struct region *rg, struct http_request *req)
{
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
    respond_out(req, rg, 200);
}

static void update_home(struct region *rg);

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
        put_str(b, pi.node_id ? pi.node_id : pi.url);
        buf_puts(b, ":{\"url\":");
        put_str(b, pi.url);
        buf_puts(b, ",\"status\":");
        put_str(b, pi.status);
        buf_puts(b, ",\"format\":");
        if (pi.format)
            put_str(b, pi.format);
        else
            buf_puts(b, "null");
        buf_printf(b, ",\"last_success\":%.3f,\"failed_rounds\":%d,\"last_error\":", pi.last_ok,
                   pi.failed_rounds);
        if (pi.last_error)
            put_str(b, pi.last_error);
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
    update_home(rg); /* the round may have taught us the last peer's node id */
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
        put_str(b, detail);
        buf_putc(b, ',');
    } else {
        buf_puts(b, "{\"status\":\"sync_completed\",");
    }
    put_identity(rg, b);
    buf_puts(b, ",\"counters\":");
    put_all_counters(rg, b);
    buf_putc(b, ',');
    buf_append(b, peers.data, peers.len);
    buf_putc(b, '}');
    buf_free(&peers);
    respond_out(fs->req, rg, failed ? 502 : 200);
    free(fs);
}

/* GET /admin/sync: this node's replication as the coordinator's /global/status shows it. */
static void h_sync_status(struct region *rg, struct http_request *req)
{
    struct buf *b = &rg->out;
    put_sync_head(rg, b);
    buf_putc(b, ',');
    put_peers(rg, b, NULL);
    buf_putc(b, '}');
    respond_out(req, rg, 200);
}

static void h_force_sync(struct region *rg, struct http_request *req)
{
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
static void h_strong(struct region *rg, struct http_request *req)
{
    const char *from = http_request_header(req, "X-Counterd-Node");
    if (!from)
        from = "strong";
    trace_span_attr_cstr(req->span, "strong.leader", from);
    int partitioned = repl_partitioned(rg->repl), delay_ms = 0;
    int a =
        lua_host_faults_decide(rg->lua, "in", from, rg->node_id, "strong", partitioned, &delay_ms);
    if (partitioned || a == 1) {
        http_respond_error(req, 503, "partitioned",
                           partitioned ? "this node is partitioned: it takes no replication"
                                       : "the faults policy drops strong replication from %s",
                           from);
        return;
    }
    /* An accept's records are smaller than its JSON entries, plus a promise. */
    if (req->method == HTTP_M_POST && reserve_log(rg, req, 2 * req->body_len + 4096) < 0)
        return;
    int64_t pos = replica_handle(&rg->replica, req, &rg->out);
    if (pos < 0)
        return;
    respond_durable_ex(rg, req, (uint64_t)pos, 1);
}

/* ---------------------------------------------------------------- routing */

/* Names the request's span after its route and says which node answered it. */
static void trace_request(struct region *rg, struct http_request *req)
{
    static const char *const routes[] = {"/increment",
                                         "/health",
                                         "/sync",
                                         "/counters",
                                         "/metrics",
                                         "/admin/partition",
                                         "/admin/reload",
                                         "/strong/accept",
                                         "/strong/prepare",
                                         "/admin/force-sync",
                                         NULL};
    const char *route = NULL;
    for (const char *const *r = routes; *r && !route; r++)
        if (http_path_is(req, *r))
            route = *r;
    if (!route && http_path_is(req, "/admin/sync"))
        route = "/admin/sync";
    if (!route && req->path_len > 9 && memcmp(req->path, "/counter/", 9) == 0) {
        route = "/counter/{name}";
        trace_span_attr_str(req->span, "counter.name", req->path + 9, req->path_len - 9);
    }
    if (route)
        trace_span_route(req->span, req->method_name, route);
    trace_span_attr_cstr(req->span, "region", rg->region);
    trace_span_attr_cstr(req->span, "node_id", rg->node_id);
}

static void handle(struct http_request *req, void *arg)
{
    struct region *rg = arg;
    if (req->span)
        trace_request(rg, req);
    enum http_verb m = req->method;
    int get = m == HTTP_M_GET || m == HTTP_M_HEAD, post = m == HTTP_M_POST;
    buf_reset(&rg->out);
    int strong = req->path_len > 8 && memcmp(req->path, "/strong/", 8) == 0;
    if (((req->path_len >= 7 && memcmp(req->path, "/admin/", 7) == 0) ||
         http_path_is(req, "/sync") || strong) &&
        http_refuse_unauthorized(req, rg->admin_token))
        return;
    if (strong)
        return h_strong(rg, req);

    if (http_path_is(req, "/increment")) {
        if (!post)
            return http_respond_not_allowed(req, "POST");
        return h_increment(rg, req);
    }
    if (req->path_len > 9 && memcmp(req->path, "/counter/", 9) == 0) {
        if (!get)
            return http_respond_not_allowed(req, "GET, HEAD");
        return h_counter(rg, req, req->path + 9, req->path_len - 9);
    }
    if (http_path_is(req, "/health")) {
        if (!get)
            return http_respond_not_allowed(req, "GET, HEAD");
        return h_health(rg, req);
    }
    if (http_path_is(req, "/sync")) {
        if (!post)
            return http_respond_not_allowed(req, "POST");
        /* What a merge changes is logged: a peer's records take about their JSON size. */
        if (reserve_log(rg, req, 2 * req->body_len + (64u << 10)) < 0)
            return;
        return repl_handle_sync(rg->repl, req);
    }
    if (http_path_is(req, "/counters")) {
        if (!get)
            return http_respond_not_allowed(req, "GET, HEAD");
        return h_counters(rg, req);
    }
    if (http_path_is(req, "/metrics")) {
        if (!get)
            return http_respond_not_allowed(req, "GET, HEAD");
        return h_metrics(rg, req);
    }
    if (http_path_is(req, "/admin/partition")) {
        if (get)
            return h_partition_get(rg, req);
        if (post)
            return h_partition_set(rg, req);
        return http_respond_not_allowed(req, "GET, HEAD, POST");
    }
    if (http_path_is(req, "/admin/reload")) {
        if (!post)
            return http_respond_not_allowed(req, "POST");
        return reload_handle(rg->reload, req);
    }
    if (http_path_is(req, "/admin/force-sync")) {
        if (!post)
            return http_respond_not_allowed(req, "POST");
        return h_force_sync(rg, req);
    }
    if (http_path_is(req, "/admin/sync")) {
        if (!get)
            return http_respond_not_allowed(req, "GET, HEAD");
        return h_sync_status(rg, req);
    }
    http_respond_error(req, 404, "not_found", "no endpoint %s %.200s", req->method_name, req->path);
}

static size_t body_limit(const char *path, size_t len, void *arg)
{
    (void)arg;
    return len == 5 && memcmp(path, "/sync", 5) == 0 ? REPL_MAX_BODY : 0;
}

/* ---------------------------------------------------------------- set-up */

static int faults_decide(void *arg, const char *dir, const char *from, const char *to,
                         const char *kind, int partitioned, int *delay_ms)
{
    struct region *rg = arg;
    /* A node that cannot log does not pull either: merging the answer would need it. */
    if (rg->wal && wal_failed(rg->wal) && !strcmp(dir, "out"))
        return REPL_DROP;
    return lua_host_faults_decide(rg->lua, dir, from, to, kind, partitioned, delay_ms);
}

/* Entries of counter id changed by a merge. A counter with a token set is never tagged as
 * the sender's state (gstore_merge_from): the sender may lack some of its elements. */
static void merged(void *arg, uint32_t id)
{
    struct region *rg = arg;
    if (tokset_elements(rg->tokset, id))
        gstore_touch(rg->store, id);
    persist_changed(rg, id);
}

/* Copies counter id's name into out (GCOUNTER_NAME_MAX + 1 bytes). @return its length. */
static size_t counter_name(struct region *rg, uint32_t id, char *out)
{
    size_t n;
    const char *p = gcounter_name(gstore_counter(rg->store, id), &n);
    memcpy(out, p, n);
    out[n] = '\0';
    return n;
}

/* Whether a window entry says this node added the token's increment to its own entry. */
static int applied_here(const struct dedup_answer *w)
{
    return w->local_count != DEDUP_ELSEWHERE && w->local_count != DEDUP_SETTLED;
}

/* Remembers that tok is settled by its home, unless this node applied it itself. */
static void remember_settled(struct region *rg, const char *name, size_t nlen, const char *tok,
                             size_t tlen, int64_t amount, double now)
{
    struct dedup_answer w;
    if (dedup_get(rg->dedup, name, nlen, tok, tlen, now, &w) && w.local_count != DEDUP_ELSEWHERE)
        return; /* applied here (the home), or known settled already */
    struct dedup_answer s = {amount, DEDUP_SETTLED, 0};
    dedup_put(rg->dedup, name, nlen, tok, tlen, now, &s);
}

/*
 * The home settles a pending element of counter id: when it applied tok itself (its
 * window), it only marks it settled; otherwise it adds the amount to its own entry and
 * marks it settled in the same change, logged as one record.
 * @return 0, or -1 when the amount cannot be applied (it stays pending and counted).
 */
static int settle_at_home(struct region *rg, uint32_t id, const char *tok, size_t tlen,
                          int64_t amount, double now)
{
    char name[GCOUNTER_NAME_MAX + 1]; /* a copy: an increment may move the counter */
    size_t nlen = counter_name(rg, id, name);
    struct dedup_answer w;
    if (dedup_get(rg->dedup, name, nlen, tok, tlen, now, &w) && applied_here(&w)) {
        if (w.amount != amount)
            log_warn("token %.*s of counter %s was applied here with amount %" PRId64
                     " and taken elsewhere with %" PRId64 ": counted once, with ours",
                     (int)tlen, tok, name, w.amount, amount);
        tokset_merge(rg->tokset, id, tok, tlen, w.amount, 1, gstore_touch(rg->store, id));
        metric_add(rg->m_tok_already, 1);
        if (rg->wal)
            wal_append(rg->wal, rg->store, id, NULL, 0, NULL, 0);
        return 0;
    }
    int rc = gstore_incr(rg->store, id, rg->self, amount);
    if (rc != 0) {
        metric_add(rg->m_tok_failed, 1);
        log_error("cannot apply increment %s/%.*s of %" PRId64 " taken by another region (%s): "
                  "it stays pending, counted in every total, and is retried at the next merge",
                  name, (int)tlen, tok, amount,
                  rc == GSTORE_EOVERFLOW ? "out of range" : "too many replicas");
        return -1;
    }
    tokset_merge(rg->tokset, id, tok, tlen, amount, 1, gstore_seq(rg->store));
    const struct gcounter *c = gstore_counter(rg->store, id);
    struct dedup_answer a = {amount, local_of(rg, c), total_of(rg, c, id)};
    dedup_put(rg->dedup, name, nlen, tok, tlen, now, &a);
    metric_add(rg->m_tok_applied, 1);
    if (rg->wal)
        wal_append(rg->wal, rg->store, id, tok, tlen, &a, now);
    return 0;
}

/*
 * Token-set elements a peer sent for counter id (store/tokset.h), joined into ours. The
 * home settles what is pending; every node remembers what it learned is settled, so a
 * retry that reaches it later is a duplicate, and an element it already collected is not
 * taken in again.
 */
static void tokens_learned(void *arg, uint32_t id, const struct repl_token *el, size_t n)
{
    struct region *rg = arg;
    double now = clock_unix_s();
    char name[GCOUNTER_NAME_MAX + 1];
    size_t nlen = counter_name(rg, id, name);
    uint64_t before = gstore_seq(rg->store);
    int changed = 0;
    for (size_t i = 0; i < n; i++) {
        const struct repl_token *e = &el[i];
        int64_t amount = e->amount, mine;
        int settled = e->settled, mine_settled = 0;
        int have = tokset_get(rg->tokset, id, e->tok, e->tlen, &mine, &mine_settled);
        if (have && mine_settled)
            continue; /* settled is final */
        struct dedup_answer w;
        int inwin = dedup_get(rg->dedup, name, nlen, e->tok, e->tlen, now, &w);
        if (!have && inwin && settled)
            continue; /* collected here already, or known: not taken in again */
        if (!have && inwin && w.local_count == DEDUP_SETTLED)
            settled = 1; /* a stale pending: its home settled it, and we have that */
        /* Only the home applies a token: having applied it makes us its home, even before
         * we know every region (after a restart). */
        if (!settled && (is_home(rg, e->tok, e->tlen) || (inwin && applied_here(&w)))) {
            changed |= settle_at_home(rg, id, e->tok, e->tlen, amount, now) < 0 &&
                       tokset_merge(rg->tokset, id, e->tok, e->tlen, amount, 0,
                                    gstore_touch(rg->store, id));
            continue;
        }
        int rc = tokset_merge(rg->tokset, id, e->tok, e->tlen, amount, settled,
                              gstore_seq(rg->store) + 1);
        if (rc & TOKSET_CHANGED) {
            gstore_touch(rg->store, id);
            changed = 1;
        }
        if (rc & TOKSET_CONFLICT)
            log_warn("token %.*s of counter %s came with two amounts: the larger counts",
                     (int)e->tlen, e->tok, name);
        if (rc & TOKSET_SETTLED)
            remember_settled(rg, name, nlen, e->tok, e->tlen, amount, now);
    }
    if (changed && rg->wal)
        wal_append_tokens(rg->wal, rg->store, id, before);
}

struct pending_list {
    uint32_t *ids;
    char (*toks)[TOKSET_TOKEN_MAX];
    uint8_t *tlens;
    int64_t *amounts;
    size_t n, cap;
};

static void collect_pending(void *arg, uint32_t id, const char *tok, size_t tlen, int64_t amount,
                            int settled, uint64_t seq)
{
    (void)settled;
    (void)seq;
    struct pending_list *l = arg;
    if (l->n == l->cap) {
        l->cap = l->cap ? l->cap * 2 : 64;
        l->ids = xrealloc(l->ids, l->cap * sizeof *l->ids);
        l->toks = xrealloc(l->toks, l->cap * sizeof *l->toks);
        l->tlens = xrealloc(l->tlens, l->cap * sizeof *l->tlens);
        l->amounts = xrealloc(l->amounts, l->cap * sizeof *l->amounts);
    }
    l->ids[l->n] = id;
    memcpy(l->toks[l->n], tok, tlen);
    l->tlens[l->n] = (uint8_t)tlen;
    l->amounts[l->n++] = amount;
}

/* Settles the pending elements whose home is this node (taken while it did not know every
 * region, or that it could not apply before). */
static void settle_own(struct region *rg)
{
    struct pending_list l = {0};
    tokset_each_pending(rg->tokset, collect_pending, &l);
    double now = clock_unix_s();
    size_t done = 0;
    for (size_t i = 0; i < l.n; i++) {
        char name[GCOUNTER_NAME_MAX + 1];
        size_t nlen = counter_name(rg, l.ids[i], name);
        struct dedup_answer w;
        int mine =
            is_home(rg, l.toks[i], l.tlens[i]) ||
            (dedup_get(rg->dedup, name, nlen, l.toks[i], l.tlens[i], now, &w) && applied_here(&w));
        if (!mine)
            continue;
        /* A settlement is a logged change: without room in the log, later (the timer). */
        if (rg->wal && wal_reserve(rg->wal, incr_record_max(rg, l.ids[i], nlen, l.tlens[i])) < 0) {
            rg->settle_scan = 1;
            break;
        }
        if (settle_at_home(rg, l.ids[i], l.toks[i], l.tlens[i], l.amounts[i], now) == 0)
            done++;
    }
    if (done)
        log_info("settled %zu pending increment(s) whose home is this node", done);
    free(l.ids);
    free(l.toks);
    free(l.tlens);
    free(l.amounts);
}

/*
 * Every half second: learns the regions (ours and the peers' node ids, from their answers)
 * and settles what is ours once they are all known; forgets settled elements every peer
 * has; reports how far back the idempotency window reaches.
 */
static void update_home(struct region *rg)
{
    if (!rg->home_known) {
        int np = rg->nhome - 1;
        repl_learn_peer_ids(rg->repl);
        if (repl_peer_ids(rg->repl, rg->home_ids + 1, np) == np) {
            rg->home_known = 1;
            rg->settle_scan = 1;
            log_info("every region's node id is known: tokens' homes are decided here from now on");
        }
    }
    if (rg->settle_scan) {
        rg->settle_scan = 0;
        settle_own(rg);
    }
}

static void on_tok_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct region *rg = arg;
    update_home(rg);
    size_t gone = tokset_gc(rg->tokset, repl_tokens_acked(rg->repl));
    if (gone)
        metric_add(rg->m_tok_gc, (double)gone);
    uint64_t young = dedup_evicted_young(rg->dedup);
    if (young > rg->young_seen) {
        double oldest = dedup_oldest_at(rg->dedup);
        metric_add(rg->m_window_cut, (double)(young - rg->young_seen));
        if (clock_mono_ms() - rg->young_logged_ms > 60000) {
            log_warn("the idempotency window holds %d entries: it now reaches back %.0f s, not "
                     "%.0f s (%" PRIu64 " tokens forgotten early so far); a retry later than that "
                     "may count twice",
                     DEDUP_MAX, oldest ? clock_unix_s() - oldest : 0, DEDUP_WINDOW_S, young);
            rg->young_logged_ms = clock_mono_ms();
        }
        rg->young_seen = young;
    }
}

static double window_seconds(void *arg)
{
    struct region *rg = arg;
    double oldest = dedup_oldest_at(rg->dedup);
    return oldest ? clock_unix_s() - oldest : 0;
}

static double tokset_pending_gauge(void *arg)
{
    return (double)tokset_pending_count(((struct region *)arg)->tokset);
}

static double tokset_size_gauge(void *arg)
{
    return (double)tokset_count(((struct region *)arg)->tokset);
}

/*
 * The replicas' net contributions summed (mine: this node's only), for the gauges. A bare
 * node id (an original-format peer's sum of that node's incarnations) of a node whose
 * incarnations this store holds too is left out, as reads leave it out wherever the
 * incarnations sum at least as much.
 */
static double replicas_total(struct region *rg, int mine)
{
    int n = gstore_replica_count(rg->store);
    char *has_inc = xcalloc((size_t)(n ? n : 1), 1); /* node indexes are below n */
    for (int r = 0; r < n; r++)
        if (strchr(gstore_replica_name(rg->store, r), '~'))
            has_inc[gstore_replica_node(rg->store, r)] = 1;
    double sum = 0;
    for (int r = 0; r < n; r++) {
        if (mine && node_of(rg, r) != rg->self_node)
            continue;
        if (!strchr(gstore_replica_name(rg->store, r), '~') &&
            has_inc[gstore_replica_node(rg->store, r)])
            continue;
        sum += gstore_replica_net(rg->store, r);
    }
    free(has_inc);
    return sum;
}

static double local_total(void *arg)
{
    return replicas_total(arg, 1);
}

static double synced_total(void *arg)
{
    return replicas_total(arg, 0);
}
static double wal_writable(void *arg)
{
    return !wal_failed(((struct region *)arg)->wal);
}
static double wal_error_count(void *arg)
{
    const struct wal_metric *m = arg;
    return (double)wal_errors(m->rg->wal, m->kind);
}
static double store_counters(void *arg)
{
    return gstore_count(((struct region *)arg)->store);
}
/* This node's replica ids in the store: the current one and the retired ones (one per
 * reboot, lost directory or failed log write; see store/wal.h). */
static double incarnations(void *arg)
{
    struct region *rg = arg;
    int n = gstore_replica_count(rg->store), k = 0;
    for (int r = 0; r < n; r++)
        if (node_of(rg, r) == rg->self_node &&
            (r == rg->self || gstore_replica_entries(rg->store, r) > 0))
            k++; /* a folded one has no entry left */
    return k;
}
static double store_bytes(void *arg)
{
    return (double)gstore_memory(((struct region *)arg)->store);
}

static double rss_bytes(void *arg)
{
    (void)arg;
    long pages = 0, rss = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (f) {
        if (fscanf(f, "%ld %ld", &pages, &rss) != 2)
            rss = 0;
        fclose(f);
    }
    return (double)rss * (double)sysconf(_SC_PAGESIZE);
}

/* ---------------------------------------------------------------- folding */

/* Whether rep is a retired incarnation of this node (not a bare node id). */
static int retired_mine(struct region *rg, int rep)
{
    const char *name = gstore_replica_name(rg->store, rep);
    size_t len = strlen(name);
    return rep != rg->self && node_of(rg, rep) == rg->self_node &&
           gcounter_replica_node_len(name, len) != len;
}

/* Entries of retired incarnations of this node, over every counter. */
static uint64_t retired_left(struct region *rg)
{
    int n = gstore_replica_count(rg->store);
    uint64_t k = 0;
    for (int r = 0; r < n; r++)
        if (gstore_replica_entries(rg->store, r) && retired_mine(rg, r))
            k += gstore_replica_entries(rg->store, r);
    return k;
}

/*
 * Folds every retired incarnation of this node into its current one, in every counter:
 * one logged change per counter. Called only once the fold gate is open.
 */
static uint64_t fold_pass(struct region *rg)
{
    uint64_t folded = 0, skipped = 0;
    int reps[GCOUNTER_MAX_ENTRIES];
    const char *skip_why = NULL;
    char skip_name[GCOUNTER_NAME_MAX + 1] = "";
    for (uint32_t id = 0; id < gstore_count(rg->store); id++) {
        const struct gcounter *c = gstore_counter(rg->store, id);
        unsigned n = gcounter_entries(c), k = 0;
        for (unsigned i = 0; i < n; i++) {
            struct gentry e;
            gcounter_entry(c, i, &e);
            if (retired_mine(rg, e.rep))
                reps[k++] = e.rep;
        }
        if (!k)
            continue;
        /* A fold is a logged change: without room in the log, the rest waits (next gate). */
        size_t nlen;
        gcounter_name(c, &nlen);
        if (rg->wal && wal_reserve(rg->wal, incr_record_max(rg, id, nlen, 0) +
                                                k * (GSTORE_REPLICA_NAME_MAX + 1)) < 0) {
            log_warn("folding stopped at counter %u of %u: the log has no room (%s)", id,
                     gstore_count(rg->store), wal_status(rg->wal));
            break;
        }
        int changed = 0;
        for (unsigned i = 0; i < k; i++) {
            int rc = gstore_fold(rg->store, id, reps[i], rg->self);
            if (rc == 1) {
                folded++;
                changed = 1;
            } else if (rc < 0) {
                skipped++;
                skip_why = rc == GSTORE_EOVERFLOW ? "the current entry would leave the int64 range"
                                                  : "the counter holds too many folded replicas";
                counter_name(rg, id, skip_name);
            }
        }
        if (changed)
            persist_changed(rg, id);
    }
    metric_add(rg->m_folded, (double)folded);
    metric_add(rg->m_fold_skipped, (double)skipped);
    log_info("folded %" PRIu64 " entries of retired incarnations of %s into %s", folded,
             rg->node_id, rg->replica_id);
    if (skipped)
        log_warn("%" PRIu64 " entries of retired incarnations not folded (e.g. counter %s: %s); "
                 "they stay, counted once (counterd_incarnations_fold_skipped_total)",
                 skipped, skip_name, skip_why);
    return skipped;
}

/*
 * The fold gate, checked every 250 ms: once a retired incarnation of this node has entries
 * and fold_after_ms have passed since the start, ask for a full pull of every peer from now;
 * fold when all are in.
 */
static void on_fold_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct region *rg = arg;
    double now = clock_mono_ms();
    uint64_t left = retired_left(rg);
    if (left < rg->fold_stuck)
        rg->fold_stuck = left;
    /* Entries a pass could not fold stay so (an entry never shrinks): only new ones call
     * for another gate and its full pulls. */
    if (left <= rg->fold_stuck || (rg->wal && wal_failed(rg->wal))) {
        if (rg->fold_armed)
            repl_fold_want(rg->repl, 0);
        rg->fold_armed = 0;
        return;
    }
    if (now < rg->start_ms + rg->fold_after_ms || now < rg->fold_next)
        return;
    if (!rg->fold_armed) {
        rg->fold_armed = now;
        rg->fold_why[0] = '\0';
        repl_fold_want(rg->repl, now);
        return;
    }
    char why[sizeof rg->fold_why];
    if (!repl_fold_ready(rg->repl, rg->fold_armed, why, sizeof why)) {
        if (strcmp(why, rg->fold_why) != 0 && now - rg->fold_armed > 30000)
            log_info("retired incarnations of %s are not folded yet: %s", rg->node_id, why);
        if (now - rg->fold_armed > 30000)
            snprintf(rg->fold_why, sizeof rg->fold_why, "%s", why);
        return;
    }
    rg->fold_stuck = fold_pass(rg);
    repl_fold_want(rg->repl, 0);
    rg->fold_armed = 0;
    rg->fold_next = now + rg->fold_after_ms;
}

struct region *region_new(struct event_base *base, const struct config *cfg, char *err,
                          size_t errlen)
{
    struct region *rg = xcalloc(1, sizeof *rg);
    rg->node_id = xstrdup(cfg->node_id);
    rg->region = xstrdup(cfg->region);
    rg->store = gstore_new();
    gstore_expect_replicas(rg->store, cfg->npeers + 1);
    /* Tests only: a lower cap on a counter's replica entries (folding at small scale). */
    const char *cap = getenv("COUNTERD_TEST_MAX_ENTRIES");
    if (cap && *cap)
        gstore_set_max_entries(rg->store, (unsigned)atoi(cap));
    rg->start_ms = clock_mono_ms();
    rg->fold_after_ms = cfg->fold_after_ms;
    rg->dedup = dedup_new(DEDUP_MAX, DEDUP_WINDOW_S);
    rg->tokset = tokset_new();
    rg->strong = strongrep_new();
    rg->admin_token = cfg->admin_token[0] ? xstrdup(cfg->admin_token) : NULL;
    char rid[GSTORE_REPLICA_NAME_MAX + 1];
    if (cfg->data_dir[0]) {
        struct wal_opts wo = {cfg->data_dir,
                              cfg->node_id,
                              (enum wal_fsync)wal_parse_fsync(cfg->fsync),
                              (size_t)cfg->snapshot_bytes,
                              rg->tokset,
                              rg->strong};
        struct wal_info info;
        rg->wal = wal_open(&wo, rg->store, rg->dedup, &info, err, errlen);
        if (!rg->wal) {
            region_free(rg);
            return NULL;
        }
        snprintf(rid, sizeof rid, "%s", info.replica_id);
        log_info("data directory %s: %u counters from %" PRIu64 " records in %.0f ms; last stop "
                 "%s; fsync %s; %s",
                 cfg->data_dir, gstore_count(rg->store), info.records, info.ms,
                 info.clean ? "clean" : "not clean (or a new directory)", cfg->fsync,
                 info.id_reason);
    } else {
        /* Nothing survives this process: it is a new incarnation, which must not count
         * under an id whose old value its peers may hold higher (they would swallow its
         * increments). */
        snprintf(rid, sizeof rid, "%s~%08" PRIx32, cfg->node_id, (uint32_t)random_u64());
        log_warn("no data directory (--data-dir / DATA_DIR): counts live in memory only");
    }
    rg->replica_id = xstrdup(rid);
    rg->self = gstore_replica(rg->store, rid, strlen(rid));
    rg->self_node = node_of(rg, rg->self);
    rg->metrics = metrics_new();
    json_parser_init(&rg->parser);
    rg->replica = (struct replica){rg->strong, rg->wal, rg->node_id, rg->region, &rg->parser};

    const char *id3[3] = {"counter", cfg->region, cfg->node_id};
    rg->m_local = metric_series(metrics_add(rg->metrics, METRIC_GAUGE, "counter_local_count",
                                            "This node's own contribution, summed over counters",
                                            "service,region,node_id", NULL, 0),
                                id3);
    metric_set_fn(rg->m_local, local_total, rg);
    rg->m_synced = metric_series(metrics_add(rg->metrics, METRIC_GAUGE, "counter_synced_count",
                                             "Total of every counter as this node sees it",
                                             "service,region", NULL, 0),
                                 id3);
    metric_set_fn(rg->m_synced, synced_total, rg);
    struct metric *tok = metrics_add(
        rg->metrics, METRIC_COUNTER, "counterd_token_increments_total",
        "Tokened increments away from their home: taken here as pending, or settled here as "
        "their home (applied, or already applied), or not applicable yet",
        "outcome", NULL, 0);
    const char *o1[1] = {"pending"};
    rg->m_tok_pending = metric_series(tok, o1);
    o1[0] = "settled_applied";
    rg->m_tok_applied = metric_series(tok, o1);
    o1[0] = "settled_already_applied";
    rg->m_tok_already = metric_series(tok, o1);
    o1[0] = "settle_failed";
    rg->m_tok_failed = metric_series(tok, o1);
    rg->m_tok_gc =
        metric_only(metrics_add(rg->metrics, METRIC_COUNTER, "counterd_token_set_collected_total",
                                "Settled token-set elements forgotten once every peer "
                                "had them",
                                NULL, NULL, 0));
    metric_set_fn(metric_only(metrics_add(rg->metrics, METRIC_GAUGE, "counterd_token_set_pending",
                                          "Pending token-set elements held (increments waiting "
                                          "for their home)",
                                          NULL, NULL, 0)),
                  tokset_pending_gauge, rg);
    metric_set_fn(
        metric_only(metrics_add(rg->metrics, METRIC_GAUGE, "counterd_token_set_elements",
                                "Token-set elements held, pending and settled", NULL, NULL, 0)),
        tokset_size_gauge, rg);
    metric_set_fn(
        metric_only(metrics_add(rg->metrics, METRIC_GAUGE, "counterd_idempotency_window_seconds",
                                "Age of the oldest token the idempotency window remembers: how "
                                "far back a retry is recognised",
                                NULL, NULL, 0)),
        window_seconds, rg);
    rg->m_window_cut = metric_only(
        metrics_add(rg->metrics, METRIC_COUNTER, "counterd_idempotency_evicted_early_total",
                    "Tokens the idempotency window's entry bound forgot before their time was up",
                    NULL, NULL, 0));
    rg->m_incr = metrics_add(rg->metrics, METRIC_COUNTER, "counter_increments_total",
                             "Increment requests applied, by counter (top names; the rest _other)",
                             "service,region,counter_name", NULL, 0);
    metric_limit(rg->m_incr, cfg->metrics_top_n, 2);
    metric_set_fn(metric_only(metrics_add(rg->metrics, METRIC_GAUGE, "counterd_store_counters",
                                          "Counters held", NULL, NULL, 0)),
                  store_counters, rg);
    metric_set_fn(
        metric_only(metrics_add(rg->metrics, METRIC_GAUGE, "counterd_replica_incarnations",
                                "This node's replica ids with entries in the store: the "
                                "current one and retired ones not folded yet",
                                NULL, NULL, 0)),
        incarnations, rg);
    rg->m_folded = metric_only(
        metrics_add(rg->metrics, METRIC_COUNTER, "counterd_incarnations_folded_total",
                    "Entries of this node's retired incarnations folded into its current one "
                    "(one per counter and incarnation)",
                    NULL, NULL, 0));
    rg->m_fold_skipped = metric_only(metrics_add(
        rg->metrics, METRIC_COUNTER, "counterd_incarnations_fold_skipped_total",
        "Entries of retired incarnations left unfolded: the current entry would leave the int64 "
        "range, or the counter holds too many folded replicas",
        NULL, NULL, 0));
    metric_set_fn(metric_only(metrics_add(rg->metrics, METRIC_GAUGE, "counterd_store_bytes",
                                          "Bytes the counter store holds", NULL, NULL, 0)),
                  store_bytes, rg);
    metric_set_fn(
        metric_only(metrics_add(rg->metrics, METRIC_GAUGE, "process_resident_memory_bytes",
                                "Resident memory of this process", NULL, NULL, 0)),
        rss_bytes, rg);

    if (rg->wal) {
        metric_set_fn(metric_only(metrics_add(rg->metrics, METRIC_GAUGE, "counterd_wal_writable",
                                              "1 when the log takes writes, 0 when the disk is "
                                              "full or failed (writes answer 503)",
                                              NULL, NULL, 0)),
                      wal_writable, rg);
        struct metric *m =
            metrics_add(rg->metrics, METRIC_COUNTER, "counterd_wal_write_errors_total",
                        "Failed log reservations, writes, fsyncs and snapshots, by "
                        "reason (disk_full, io_error, fsync, snapshot)",
                        "reason", NULL, 0);
        for (int k = 0; k < WAL_ERR_COUNT; k++) {
            const char *reason[1] = {wal_error_name((enum wal_error)k)};
            rg->wal_metrics[k] = (struct wal_metric){rg, (enum wal_error)k};
            metric_set_fn(metric_series(m, reason), wal_error_count, &rg->wal_metrics[k]);
        }
    }
    if (tracing_start(base, cfg, rg->metrics, &rg->otlp, err, errlen) < 0) {
        region_free(rg);
        return NULL;
    }
    struct lua_host_info li = {"region", cfg->node_id, cfg->region, cfg->policy_budget_ms};
    rg->lua = lua_host_new(cfg->lua_dir, &li, rg->metrics);
    char lerr[512];
    if (lua_host_load_policy(rg->lua, "faults", lerr, sizeof lerr) < 0)
        log_error("faults policy not loaded, replication runs without it: %s", lerr);

    rg->reload = reload_new(base, rg->lua, cfg);
    rg->client = http_client_new(base);
    char auth[300];
    snprintf(auth, sizeof auth, "Authorization: Bearer %s", cfg->admin_token);
    struct repl_config rc = {.node_id = cfg->node_id,
                             .region = cfg->region,
                             .service = "counter",
                             .peers = (const char *const *)cfg->peers,
                             .npeers = cfg->npeers,
                             .interval_ms = cfg->sync_interval_ms,
                             .timeout_ms = cfg->sync_timeout_ms,
                             .auth_header = cfg->admin_token[0] ? auth : NULL,
                             .tokset = rg->tokset,
                             .replica_id = rg->replica_id};
    struct repl_hooks hooks = {.decide = faults_decide,
                               .changed = merged,
                               .tokens = tokens_learned,
                               .arg = rg,
                               .before_send = before_send,
                               .before_merge = before_merge};
    rg->repl = repl_new(base, rg->client, rg->store, rg->metrics, &rc, &hooks);
    rg->nhome = cfg->npeers + 1;
    rg->home_ids = xcalloc((size_t)rg->nhome, sizeof *rg->home_ids);
    rg->home_ids[0] = rg->node_id;
    rg->home_known = cfg->npeers == 0;
    rg->settle_scan = 1;
    rg->tok_timer = event_new(base, -1, EV_PERSIST, on_tok_timer, rg);
    struct timeval ttv = {0, 200 * 1000};
    event_add(rg->tok_timer, &ttv);
    rg->fold_timer = event_new(base, -1, EV_PERSIST, on_fold_timer, rg);
    struct timeval ftv = {0, 250 * 1000};
    event_add(rg->fold_timer, &ftv);

    struct http_server_opts so = {.bind_addr = cfg->bind,
                                  .port = cfg->port,
                                  .max_conns = cfg->max_conns,
                                  .idle_timeout_ms = cfg->idle_timeout_ms,
                                  .request_timeout_ms = cfg->request_timeout_ms,
                                  .body_limit = body_limit,
                                  .before_flush = before_flush,
                                  .before_flush_arg = rg};
    rg->server = http_server_new(base, &so, handle, rg, err, errlen);
    if (!rg->server) {
        region_free(rg);
        return NULL;
    }
    http_metrics_register(rg->metrics, rg->server);
    if (rg->wal) {
        rg->wal_notify =
            event_new(base, wal_notify_fd(rg->wal), EV_READ | EV_PERSIST, on_wal_notify, rg);
        event_add(rg->wal_notify, NULL);
        rg->wal_timer = event_new(base, -1, EV_PERSIST, on_wal_timer, rg);
        struct timeval tv = {0, 200 * 1000};
        event_add(rg->wal_timer, &tv);
    }
    log_info("region %s node %s (replica %s) listening on %s:%d with %d peer(s), sync every "
             "%d ms",
             cfg->region, cfg->node_id, rg->replica_id, cfg->bind, http_server_port(rg->server),
             cfg->npeers, cfg->sync_interval_ms);
    return rg;
}

void region_free(struct region *rg)
{
    if (!rg)
        return;
    /* Owners of pending answers first, then the server holding their connections. */
    repl_free(rg->repl);
    while (rg->waits) {
        struct durable_wait *w = rg->waits;
        rg->waits = w->next;
        /* Never sent (the server is freed below); frees a connection its client closed. */
        http_respond_error(w->req, 503, "unavailable", "the node is stopping");
        free(w);
    }
    http_server_free(rg->server);
    if (rg->wal_notify)
        event_free(rg->wal_notify);
    if (rg->wal_timer)
        event_free(rg->wal_timer);
    if (rg->tok_timer)
        event_free(rg->tok_timer);
    if (rg->fold_timer)
        event_free(rg->fold_timer);
    if (rg->wal)
        wal_close(rg->wal); /* writes the rest, fsyncs, marks the directory clean */
    http_client_free(rg->client);
    reload_free(rg->reload);
    lua_host_free(rg->lua);
    otlp_stop(rg->otlp); /* after everything that could still end a span */
    metrics_free(rg->metrics);
    dedup_free(rg->dedup);
    tokset_free(rg->tokset);
    free(rg->home_ids);
    strongrep_free(rg->strong);
    gstore_free(rg->store);
    json_parser_free(&rg->parser);
    buf_free(&rg->out);
    for (int i = 0; i < rg->nnodes; i++)
        free(rg->node_names[i]);
    free(rg->node_names);
    free(rg->rep_node);
    free(rg->replica_id);
    free(rg->admin_token);
    free(rg->node_id);
    free(rg->region);
    free(rg);
}
