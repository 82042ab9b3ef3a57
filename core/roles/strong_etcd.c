/*
 * strong_etcd.c - the strong counter in etcd, through its JSON gateway (see strong_etcd.h).
 *
 * Every call goes to the endpoint in use (the first of --etcd until it stops answering);
 * one the connection to which failed before anything was sent is tried on the next
 * endpoint at once. An answer that never came after the request was sent is ambiguous:
 * its operations answer so, and the next calls go to the next endpoint. A probe of every
 * endpoint every 250 ms (/v3/maintenance/status) feeds /admin/etcd, sends calls away from a
 * member that knows no leader and back to the first endpoint once it has one, and answers
 * (ambiguous) a call held by a member whose leader changed since it was sent: etcd dropped
 * its proposal and would answer only at its own timeout.
 *
 * It must never say applied or not applied before etcd has said so (ambiguous when it
 * cannot know), and never send again on its own what may have been applied (a retry after
 * an ambiguous outcome is the client's, with its token).
 */
#include "strong_etcd.h"

#include <event2/event.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../base/base64.h"
#include "../base/clock.h"
#include "../base/hash.h"
#include "../base/json.h"
#include "../base/log.h"
#include "../base/mem.h"
#include "../net/client.h"
#include "../obs/metrics.h"
#include "../store/gstore.h"

#define NBUCKETS 1024
#define MAX_ATTEMPTS 64    /* conflicts one batch may meet before it gives up */
#define KEEP_COUNTERS 4096 /* idle counters whose revision is remembered */
#define LIST_PAGE 1000
#define LIST_MAX 100000
#define PROBE_MS 250 /* between status probes of every endpoint */

enum outcome { OUT_OK, OUT_NOT_APPLIED, OUT_AMBIGUOUS };
enum txn_metric { TXN_COMMITTED, TXN_CONFLICT, TXN_NOT_APPLIED, TXN_AMBIGUOUS };
static const char *const txn_outcomes[4] = {"committed", "conflict", "not_applied", "ambiguous"};
enum call_kind { CALL_TXN, CALL_RANGE, CALL_LEASE, CALL_STATUS };
static const char *const call_kinds[4] = {"txn", "range", "lease", "status"};

struct endpoint_state {
    char url[256];
    int ok;         /* the last probe answered, with a leader */
    double seen_ms; /* when the last probe's answer came */
    uint64_t member_id, leader, raft_term;
    char error[256];
    int probing;
};

struct op {
    struct op *next;
    enum strong_kind kind;
    int64_t amount;
    char *token;
    size_t tlen;
    int window_s;
    strong_done_fn done;
    void *arg;
    double queued_ms, sent_ms;
    /* The plan of the attempt in flight. */
    int overflow;
    int64_t value;
};

struct counter {
    struct counter *next; /* hash chain */
    struct etcd_strong *e;
    char *ekey; /* the etcd key */
    size_t eklen;
    int64_t rev; /* its mod_revision when last seen; 0: absent */
    int64_t value;
    struct op *head, *tail; /* waiting */
    struct op *batch;       /* in flight */
    int attempts;
    struct counter *lease_next; /* waiting for a lease */
    int waiting_lease;
    struct buf keys; /* the batch's token keys, NUL-separated */
};

struct lease {
    int window_s;
    int64_t id;
    double granted_ms;
    int granting;
    struct counter *waiters;
};

/* One call to etcd, tried on the endpoints in turn while none was reached. */
struct call {
    struct call *prev, *next;
    struct etcd_strong *e;
    enum call_kind kind;
    const char *path;
    struct buf body;
    int ep, tried;
    double start_ms;
    struct client_call *cc;
    char failures[512];
    void (*done)(struct call *c, enum outcome out, const struct json *root, const char *detail);
    void *arg;
};

struct etcd_strong {
    struct event_base *base;
    struct client *client;
    struct json_parser parser;
    char prefix[256];
    int timeout_ms;
    struct endpoint_state eps[ETCD_MAX_ENDPOINTS];
    int neps, cur;
    struct counter *buckets[NBUCKETS];
    int ncounters;
    struct lease leases[16];
    int nleases;
    struct call *calls;
    struct event *probe_timer;
    int stopping; /* etcd_strong_free: nothing is sent any more */
    struct metric_series *m_txn[4], *m_batch, *m_retries, *m_latency[4];
    struct metric *m_up;
};

/* ---------------------------------------------------------------- txn JSON */

static void put_b64(struct buf *b, const char *s, size_t n)
{
    buf_putc(b, '"');
    base64_encode(b, s, n);
    buf_putc(b, '"');
}

static void put_b64_i64(struct buf *b, int64_t v)
{
    char t[24];
    int n = snprintf(t, sizeof t, "%" PRId64, v);
    put_b64(b, t, (size_t)n);
}

void etcd_txn_json(struct buf *out, const char *key, size_t len, int64_t rev, enum etcd_put put,
                   int64_t value, const struct etcd_tok *toks, int ntoks)
{
    buf_puts(out, "{\"compare\":[");
    if (rev > 0) {
        buf_puts(out, "{\"target\":\"MOD\",\"result\":\"EQUAL\",\"key\":");
        put_b64(out, key, len);
        buf_printf(out, ",\"mod_revision\":\"%" PRId64 "\"}", rev);
    } else {
        buf_puts(out, "{\"target\":\"CREATE\",\"result\":\"EQUAL\",\"key\":");
        put_b64(out, key, len);
        buf_puts(out, ",\"create_revision\":\"0\"}");
    }
    for (int i = 0; i < ntoks; i++) {
        buf_puts(out, ",{\"target\":\"CREATE\",\"result\":\"EQUAL\",\"key\":");
        put_b64(out, toks[i].key, toks[i].len);
        buf_puts(out, ",\"create_revision\":\"0\"}");
    }
    buf_puts(out, "],\"success\":[");
    int n = 0;
    if (put == ETCD_PUT_VALUE) {
        buf_puts(out, "{\"request_put\":{\"key\":");
        put_b64(out, key, len);
        buf_puts(out, ",\"value\":");
        put_b64_i64(out, value);
        buf_puts(out, "}}");
        n++;
    } else if (put == ETCD_PUT_DELETE) {
        buf_puts(out, "{\"request_delete_range\":{\"key\":");
        put_b64(out, key, len);
        buf_puts(out, "}}");
        n++;
    }
    for (int i = 0; i < ntoks; i++) {
        if (!toks[i].put)
            continue;
        buf_puts(out, n++ ? ",{\"request_put\":{\"key\":" : "{\"request_put\":{\"key\":");
        put_b64(out, toks[i].key, toks[i].len);
        buf_puts(out, ",\"value\":");
        put_b64_i64(out, toks[i].value);
        if (toks[i].lease)
            buf_printf(out, ",\"lease\":\"%" PRId64 "\"", toks[i].lease);
        buf_puts(out, "}}");
    }
    buf_puts(out, "],\"failure\":[{\"request_range\":{\"key\":");
    put_b64(out, key, len);
    buf_puts(out, "}}");
    for (int i = 0; i < ntoks; i++) {
        buf_puts(out, ",{\"request_range\":{\"key\":");
        put_b64(out, toks[i].key, toks[i].len);
        buf_puts(out, "}}");
    }
    buf_puts(out, "]}");
}

int etcd_error_not_applied(const char *m)
{
    /* etcd refuses these before proposing anything to Raft. "request timed out", "leader
     * changed" and the like come after a proposal, which may still commit. */
    static const char *const refused[] = {"no leader",
                                          "too many requests",
                                          "not capable",
                                          "too many operations in txn request",
                                          "request is too large",
                                          "requested lease not found",
                                          "duplicate key given in txn request",
                                          "key is not provided",
                                          "permission denied",
                                          "user name is empty",
                                          "invalid auth token",
                                          "authentication is not enabled",
                                          "mvcc: required revision has been compacted",
                                          "mvcc: required revision is a future revision",
                                          "etcdserver: server stopped",
                                          "unhealthy cluster"};
    for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++)
        if (strstr(m, refused[i]))
            return 1;
    return 0;
}

/* ---------------------------------------------------------------- JSON reading */

static int64_t json_i64(const struct json *o, const char *name)
{
    const struct json *v = json_get(o, name);
    if (!v)
        return 0;
    if (v->type == JSON_INT)
        return v->u.i;
    if (v->type == JSON_STR)
        return strtoll(v->u.s, NULL, 10);
    return 0;
}

static uint64_t json_u64(const struct json *o, const char *name)
{
    const struct json *v = json_get(o, name);
    if (v && v->type == JSON_STR)
        return strtoull(v->u.s, NULL, 10);
    return v && v->type == JSON_INT ? (uint64_t)v->u.i : 0;
}

/* The first kv of a range answer: 1 with its value and mod_revision, 0 when there is none,
 * -1 when it does not read (a value that is no integer). */
static int first_kv(const struct json *range, int64_t *value, int64_t *rev)
{
    const struct json *kvs = range ? json_get(range, "kvs") : NULL;
    if (!kvs || kvs->type != JSON_ARR || kvs->len == 0)
        return 0;
    const struct json *kv = &kvs->u.items[0];
    const struct json *v = json_get(kv, "value");
    char t[32];
    long n = v && v->type == JSON_STR ? base64_decode(v->u.s, v->len, t, sizeof t - 1) : 0;
    if (n <= 0)
        return -1;
    t[n] = '\0';
    char *end;
    *value = strtoll(t, &end, 10);
    if (*end)
        return -1;
    *rev = json_i64(kv, "mod_revision");
    return 1;
}

/* ---------------------------------------------------------------- calls */

static void call_send(struct call *c);

static void call_finish(struct call *c, enum outcome out, const struct json *root,
                        const char *detail)
{
    struct etcd_strong *e = c->e;
    if (c->prev)
        c->prev->next = c->next;
    else
        e->calls = c->next;
    if (c->next)
        c->next->prev = c->prev;
    metric_observe(e->m_latency[c->kind], (clock_mono_ms() - c->start_ms) / 1000);
    c->done(c, out, root, detail);
    buf_free(&c->body);
    free(c);
}

/* Whether curl's error says the request never left (nothing connected). */
static int not_sent(const char *err)
{
    return strstr(err, "Failed to connect") || strstr(err, "Couldn't connect") ||
           strstr(err, "Connection refused") || strstr(err, "Could not resolve") ||
           strstr(err, "Connection timed out");
}

static void on_answer(const struct client_result *res, void *arg)
{
    struct call *c = arg;
    struct etcd_strong *e = c->e;
    const char *url = e->eps[c->ep].url;
    c->cc = NULL;
    char detail[768];
    if (res->status == 0) {
        const char *err = res->error ? res->error : "no answer";
        if (not_sent(err)) {
            size_t fl = strlen(c->failures);
            snprintf(c->failures + fl, sizeof c->failures - fl, "%s%s: %s", fl ? "; " : "", url,
                     err);
            if (c->kind != CALL_STATUS && !e->stopping && ++c->tried < e->neps) {
                /* Nothing was sent: the next endpoint may take it, and the next calls. */
                if (e->cur == c->ep)
                    e->cur = (c->ep + 1) % e->neps;
                c->ep = (c->ep + 1) % e->neps;
                call_send(c);
                return;
            }
            snprintf(detail, sizeof detail, "etcd not reached, nothing was sent: %s", c->failures);
            call_finish(c, OUT_NOT_APPLIED, NULL, detail);
            return;
        }
        if (c->kind != CALL_STATUS && e->neps > 1 && e->cur == c->ep)
            e->cur = (c->ep + 1) % e->neps;
        snprintf(detail, sizeof detail,
                 "etcd %s did not answer %s within %d ms after it was sent (%s)%s%s%s", url,
                 c->path, e->timeout_ms, err,
                 c->kind == CALL_TXN ? ": it may have been applied" : "",
                 c->failures[0] ? "; not reached before it: " : "", c->failures);
        call_finish(c, OUT_AMBIGUOUS, NULL, detail);
        return;
    }
    const struct json *root = json_parse(&e->parser, res->body, res->len);
    if (!root || root->type != JSON_OBJ) {
        snprintf(detail, sizeof detail,
                 "etcd %s answered %s with HTTP %d and no JSON object: %.200s", url, c->path,
                 res->status, root ? "" : e->parser.err);
        call_finish(c, res->status >= 500 ? OUT_AMBIGUOUS : OUT_NOT_APPLIED, NULL, detail);
        return;
    }
    const struct json *err = json_get(root, "error");
    if (!err) {
        const struct json *m = json_get(root, "message");
        if (m && json_get(root, "code"))
            err = m;
    }
    if (err || res->status != 200) {
        const char *msg = err && err->type == JSON_STR ? err->u.s : "(no message)";
        int proven = etcd_error_not_applied(msg);
        snprintf(detail, sizeof detail, "etcd %s refused %s (HTTP %d): %.300s%s", url, c->path,
                 res->status, msg, proven ? "; nothing was applied" : "; it may have been applied");
        call_finish(c, proven ? OUT_NOT_APPLIED : OUT_AMBIGUOUS, root, detail);
        return;
    }
    call_finish(c, OUT_OK, root, NULL);
}

static void call_send(struct call *c)
{
    struct etcd_strong *e = c->e;
    char url[320];
    snprintf(url, sizeof url, "%s%s", e->eps[c->ep].url, c->path);
    /* One deadline for the whole operation, whichever endpoints it tries: what is left of
     * --etcd-timeout-ms since it started. A connection gets a share of it, so that members
     * a partition hides (their packets dropped, nothing refused) cost a share each, not the
     * whole timeout each. */
    int timeout = c->kind == CALL_STATUS && e->timeout_ms > 900 ? 900 : e->timeout_ms;
    int left = timeout - (int)(clock_mono_ms() - c->start_ms);
    if (left < 10) {
        char detail[768];
        snprintf(detail, sizeof detail, "etcd not reached within %d ms, nothing was sent: %s",
                 timeout, c->failures);
        call_finish(c, OUT_NOT_APPLIED, NULL, detail);
        return;
    }
    int share = timeout / (e->neps > 0 ? e->neps : 1);
    share = share < 250 ? 250 : share;
    struct client_call_opts o = {.method = "POST",
                                 .url = url,
                                 .body = c->body.data,
                                 .body_len = c->body.len,
                                 .timeout_ms = left,
                                 .connect_timeout_ms = share < left ? share : left};
    c->cc = client_request(e->client, &o, on_answer, c);
    if (!c->cc) {
        char detail[400];
        snprintf(detail, sizeof detail, "the HTTP client refused a call to %s", url);
        call_finish(c, OUT_NOT_APPLIED, NULL, detail);
    }
}

/* Starts a call whose body the caller writes into the returned call's body before
 * call_send. */
static struct call *
call_new(struct etcd_strong *e, enum call_kind kind, const char *path,
         void (*done)(struct call *, enum outcome, const struct json *, const char *), void *arg)
{
    struct call *c = xcalloc(1, sizeof *c);
    c->e = e;
    c->kind = kind;
    c->path = path;
    c->ep = e->cur;
    c->start_ms = clock_mono_ms();
    c->done = done;
    c->arg = arg;
    c->next = e->calls;
    if (e->calls)
        e->calls->prev = c;
    e->calls = c;
    return c;
}

/* ---------------------------------------------------------------- counters */

/* The etcd key of a store key: P c/<ns>/<name>. */
static void counter_key(const struct etcd_strong *e, struct buf *out, const char *key, size_t len)
{
    buf_puts(out, e->prefix);
    buf_puts(out, "c/");
    if (!memchr(key, '/', len))
        buf_puts(out, "default/");
    buf_append(out, key, len);
}

static struct counter **slot_of(struct etcd_strong *e, const char *ekey, size_t len)
{
    struct counter **p = &e->buckets[hash_bytes(ekey, len) % NBUCKETS];
    while (*p && ((*p)->eklen != len || memcmp((*p)->ekey, ekey, len)))
        p = &(*p)->next;
    return p;
}

static struct counter *counter_of(struct etcd_strong *e, const char *key, size_t len)
{
    struct buf k = BUF_INIT;
    counter_key(e, &k, key, len);
    struct counter **p = slot_of(e, k.data, k.len);
    if (*p) {
        buf_free(&k);
        return *p;
    }
    struct counter *c = xcalloc(1, sizeof *c);
    c->e = e;
    c->ekey = xstrndup(k.data, k.len);
    c->eklen = k.len;
    buf_free(&k);
    *p = c;
    e->ncounters++;
    return c;
}

static void counter_forget(struct counter *c)
{
    struct etcd_strong *e = c->e;
    struct counter **p = slot_of(e, c->ekey, c->eklen);
    *p = c->next;
    e->ncounters--;
    buf_free(&c->keys);
    free(c->ekey);
    free(c);
}

static void answer(struct op *o, const struct strong_result *r)
{
    o->done(o->arg, r);
    free(o->token);
    free(o);
}

/* Answers every operation of the batch with the same failure. */
static void fail_batch(struct counter *c, enum strong_status st, const char *detail)
{
    double now = clock_mono_ms();
    while (c->batch) {
        struct op *o = c->batch;
        c->batch = o->next;
        struct strong_result r = {.status = st,
                                  .detail = detail,
                                  .lock_wait_ms = o->sent_ms - o->queued_ms,
                                  .round_ms = now - o->sent_ms};
        answer(o, &r);
    }
}

static void send_batch(struct counter *c);

/* The next batch: the adds at the head of the queue (a token once), or one clear or delete. */
static void next_batch(struct counter *c)
{
    struct etcd_strong *e = c->e;
    if (c->batch || c->waiting_lease || e->stopping)
        return;
    if (!c->head) {
        if (e->ncounters > KEEP_COUNTERS)
            counter_forget(c);
        return;
    }
    struct op **tail = &c->batch;
    int n = 0;
    double now = clock_mono_ms();
    while (c->head && n < ETCD_MAX_BATCH) {
        struct op *o = c->head;
        if (n > 0 && (o->kind != STRONG_ADD || c->batch->kind != STRONG_ADD))
            break;
        int repeated = 0;
        for (struct op *b = c->batch; o->token && b && !repeated; b = b->next)
            repeated = b->token && b->tlen == o->tlen && !memcmp(b->token, o->token, o->tlen);
        if (repeated)
            break; /* a token twice in one txn is refused: its second goes next time */
        c->head = o->next;
        o->next = NULL;
        o->sent_ms = now;
        *tail = o;
        tail = &o->next;
        n++;
    }
    if (!c->head)
        c->tail = NULL;
    c->attempts = 0;
    metric_observe(e->m_batch, n);
    send_batch(c);
}

/* The namespace of an etcd counter key, for its tokens' keys. */
static void token_key(const struct counter *c, struct buf *out, const struct op *o)
{
    const struct etcd_strong *e = c->e;
    size_t pl = strlen(e->prefix) + 2; /* P c/ */
    const char *ns = c->ekey + pl;
    const char *slash = memchr(ns, '/', c->eklen - pl);
    buf_puts(out, e->prefix);
    buf_puts(out, "tok/");
    buf_append(out, ns, (size_t)(slash - ns) + 1);
    buf_append(out, o->token, o->tlen);
}

static struct lease *lease_of(struct etcd_strong *e, int window_s)
{
    for (int i = 0; i < e->nleases; i++)
        if (e->leases[i].window_s == window_s)
            return &e->leases[i];
    if (e->nleases == (int)(sizeof e->leases / sizeof e->leases[0])) {
        /* Rare: more windows than slots. Reuse the oldest not being granted. */
        for (int i = 0; i < e->nleases; i++)
            if (!e->leases[i].granting && !e->leases[i].waiters) {
                e->leases[i] = (struct lease){.window_s = window_s};
                return &e->leases[i];
            }
        return NULL;
    }
    e->leases[e->nleases] = (struct lease){.window_s = window_s};
    return &e->leases[e->nleases++];
}

/* A token put now lives at least its window: a lease of 2 windows serves the tokens of one
 * window from its grant. */
static int lease_fresh(const struct lease *l)
{
    return l->id && clock_mono_ms() < l->granted_ms + l->window_s * 1000.0;
}

static void lease_granted(struct call *call, enum outcome out, const struct json *root,
                          const char *detail)
{
    struct lease *l = call->arg;
    l->granting = 0;
    if (out == OUT_OK) {
        l->id = json_i64(root, "ID");
        l->granted_ms = call->start_ms;
    }
    struct counter *w = l->waiters;
    l->waiters = NULL;
    while (w) {
        struct counter *c = w;
        w = c->lease_next;
        c->lease_next = NULL;
        c->waiting_lease = 0;
        if (out == OUT_OK && l->id) {
            send_batch(c);
        } else {
            char d[900];
            snprintf(d, sizeof d,
                     "nothing was applied: the change was not sent, since etcd granted no lease "
                     "for its idempotency token (%s)",
                     detail ? detail : "no lease ID in the answer");
            fail_batch(c, STRONG_NO_QUORUM, d);
            next_batch(c);
        }
    }
}

/* @return the lease for window_s, or 0 after queueing c behind its grant (-1: none). */
static int64_t need_lease(struct counter *c, int window_s)
{
    struct etcd_strong *e = c->e;
    struct lease *l = lease_of(e, window_s);
    if (!l)
        return -1;
    if (lease_fresh(l))
        return l->id;
    c->waiting_lease = 1;
    c->lease_next = l->waiters;
    l->waiters = c;
    if (!l->granting) {
        l->granting = 1;
        l->id = 0;
        struct call *call = call_new(e, CALL_LEASE, "/v3/lease/grant", lease_granted, l);
        buf_printf(&call->body, "{\"TTL\":\"%d\"}", 2 * window_s + 10);
        call_send(call);
    }
    return 0;
}

static void txn_done(struct call *call, enum outcome out, const struct json *root,
                     const char *detail);

/* Sends the batch's txn, from what is known of the counter. */
static void send_batch(struct counter *c)
{
    struct etcd_strong *e = c->e;
    if (e->stopping) {
        fail_batch(c, STRONG_NO_QUORUM, "the strong role stopped; nothing was applied");
        return;
    }
    struct op *first = c->batch;
    int ntoks = 0;
    for (struct op *o = first; o; o = o->next)
        ntoks += o->token != NULL;
    struct etcd_tok toks[ETCD_MAX_BATCH];
    /* The plan: each add's value after it (an add that would overflow is left out). */
    int64_t v = c->rev ? c->value : 0;
    int applied = 0;
    enum etcd_put put = ETCD_PUT_NONE;
    for (struct op *o = first; o; o = o->next) {
        o->overflow = 0;
        if (o->kind == STRONG_ADD) {
            int64_t nv;
            if (__builtin_add_overflow(v, o->amount, &nv) || nv < INT64_MIN + 2) {
                o->overflow = 1;
                continue;
            }
            v = nv;
            o->value = v;
            applied++;
            put = ETCD_PUT_VALUE;
        } else if (c->rev) {
            o->value = c->value; /* a clear's token keeps the value it cleared */
            v = 0;
            applied++;
            put = o->kind == STRONG_CLEAR ? ETCD_PUT_VALUE : ETCD_PUT_DELETE;
        }
    }
    buf_reset(&c->keys);
    size_t offs[ETCD_MAX_BATCH];
    int k = 0;
    for (struct op *o = first; o; o = o->next) {
        if (!o->token)
            continue;
        offs[k] = c->keys.len;
        token_key(c, &c->keys, o);
        buf_putc(&c->keys, '\0');
        int64_t lease = 0;
        int put_tok = applied && !o->overflow;
        if (put_tok) {
            lease = need_lease(c, o->window_s > 0 ? o->window_s : STRONG_TOKEN_WINDOW_S);
            if (lease == 0)
                return; /* resumed by lease_granted */
            if (lease < 0) {
                fail_batch(c, STRONG_NO_QUORUM,
                           "too many token windows in use; nothing was applied");
                next_batch(c);
                return;
            }
        }
        toks[k] = (struct etcd_tok){NULL, 0, put_tok, o->value, lease};
        k++;
    }
    for (int i = 0; i < k; i++) {
        toks[i].key = c->keys.data + offs[i];
        toks[i].len = strlen(toks[i].key);
    }
    struct call *call = call_new(e, CALL_TXN, "/v3/kv/txn", txn_done, c);
    etcd_txn_json(&call->body, c->ekey, c->eklen, c->rev, put, v, toks, ntoks);
    call_send(call);
}

/* The stored value of a token found in the failure branch's range i+1, or 0 when none. */
static int token_found(const struct json *responses, int i, int64_t *value)
{
    if (!responses || responses->type != JSON_ARR || (uint32_t)i + 1 >= responses->len)
        return 0;
    const struct json *r = json_get(&responses->u.items[i + 1], "response_range");
    int64_t rev;
    return first_kv(r, value, &rev) == 1;
}

static void txn_done(struct call *call, enum outcome out, const struct json *root,
                     const char *detail)
{
    struct counter *c = call->arg;
    struct etcd_strong *e = c->e;
    double now = clock_mono_ms();
    if (out != OUT_OK) {
        if (out == OUT_NOT_APPLIED && detail && strstr(detail, "requested lease not found") &&
            c->attempts++ < 2) {
            for (int i = 0; i < e->nleases; i++)
                e->leases[i].id = 0;
            send_batch(c);
            return;
        }
        metric_add(e->m_txn[out == OUT_AMBIGUOUS ? TXN_AMBIGUOUS : TXN_NOT_APPLIED], 1);
        fail_batch(c, out == OUT_AMBIGUOUS ? STRONG_AMBIGUOUS : STRONG_NO_QUORUM, detail);
        next_batch(c);
        return;
    }
    const struct json *ok = json_get(root, "succeeded");
    const struct json *responses = json_get(root, "responses");
    if (ok && ok->type == JSON_TRUE) {
        metric_add(e->m_txn[TXN_COMMITTED], 1);
        const struct json *h = json_get(root, "header");
        int64_t rev = h ? json_i64(h, "revision") : 0;
        int changed = 0;
        while (c->batch) {
            struct op *o = c->batch;
            c->batch = o->next;
            struct strong_result r = {.status = STRONG_OK,
                                      .durable = 1,
                                      .value = o->value,
                                      .lock_wait_ms = o->sent_ms - o->queued_ms,
                                      .round_ms = now - o->sent_ms};
            if (o->overflow) {
                r.status = STRONG_OVERFLOW;
            } else if (o->kind != STRONG_ADD && !c->rev) {
                r.status = STRONG_NOT_FOUND;
            } else if (o->kind == STRONG_CLEAR) {
                r.before = o->value;
                r.value = 0;
                c->value = 0;
                changed = 1;
            } else if (o->kind == STRONG_DELETE) {
                c->rev = 0;
                c->value = 0;
            } else {
                c->value = o->value;
                changed = 1;
            }
            answer(o, &r);
        }
        if (changed)
            c->rev = rev;
        next_batch(c);
        return;
    }
    /* A conflict: the counter moved, or a token is there. What is there came back. */
    metric_add(e->m_txn[TXN_CONFLICT], 1);
    const struct json *r0 = responses && responses->type == JSON_ARR && responses->len > 0
                                ? json_get(&responses->u.items[0], "response_range")
                                : NULL;
    int64_t value = 0, rev = 0;
    int got = first_kv(r0, &value, &rev);
    if (got < 0 || !r0) {
        char d[600];
        snprintf(d, sizeof d,
                 "etcd key %.300s does not hold a decimal integer; nothing was applied", c->ekey);
        metric_add(e->m_txn[TXN_NOT_APPLIED], 1);
        fail_batch(c, STRONG_NO_QUORUM, d);
        next_batch(c);
        return;
    }
    c->rev = got ? rev : 0;
    c->value = got ? value : 0;
    /* Tokens found answer now, as duplicates; the rest go again. */
    struct op **p = &c->batch;
    int k = 0;
    while (*p) {
        struct op *o = *p;
        int64_t stored;
        if (o->token && token_found(responses, k++, &stored)) {
            *p = o->next;
            struct strong_result r = {.status = STRONG_OK,
                                      .durable = 1,
                                      .duplicate = 1,
                                      .value = o->kind == STRONG_CLEAR ? c->value : stored,
                                      .before = stored,
                                      .lock_wait_ms = o->sent_ms - o->queued_ms,
                                      .round_ms = now - o->sent_ms};
            answer(o, &r);
            continue;
        }
        p = &o->next;
    }
    if (!c->batch) {
        next_batch(c);
        return;
    }
    metric_add(e->m_retries, 1);
    if (++c->attempts >= MAX_ATTEMPTS) {
        char d[600];
        snprintf(d, sizeof d,
                 "etcd key %.300s changed under %d transactions in a row; nothing was applied",
                 c->ekey, MAX_ATTEMPTS);
        fail_batch(c, STRONG_NO_QUORUM, d);
        next_batch(c);
        return;
    }
    send_batch(c);
}

void etcd_strong_submit(struct etcd_strong *e, const struct strong_op *op, strong_done_fn done,
                        void *arg)
{
    struct counter *c = counter_of(e, op->name, op->len);
    struct op *o = xcalloc(1, sizeof *o);
    o->kind = op->kind;
    o->amount = op->amount;
    if (op->token) {
        o->token = xstrndup(op->token, op->tlen);
        o->tlen = op->tlen;
    }
    o->window_s = op->window_s;
    o->done = done;
    o->arg = arg;
    o->queued_ms = clock_mono_ms();
    if (c->tail)
        c->tail->next = o;
    else
        c->head = o;
    c->tail = o;
    next_batch(c);
}

/* ---------------------------------------------------------------- reads */

struct get {
    etcd_get_fn fn;
    void *arg;
};

static void get_done(struct call *call, enum outcome out, const struct json *root,
                     const char *detail)
{
    struct get *g = call->arg;
    int64_t value = 0, rev;
    if (out != OUT_OK) {
        g->fn(g->arg, STRONG_NO_QUORUM, 0, 0, detail);
    } else {
        int found = first_kv(root, &value, &rev);
        if (found < 0)
            g->fn(g->arg, STRONG_NO_QUORUM, 0, 0, "the counter's etcd key holds no integer");
        else
            g->fn(g->arg, STRONG_OK, found, value, NULL);
    }
    free(g);
}

void etcd_strong_get(struct etcd_strong *e, const char *key, size_t len, etcd_get_fn fn, void *arg)
{
    struct get *g = xmalloc(sizeof *g);
    *g = (struct get){fn, arg};
    struct buf k = BUF_INIT;
    counter_key(e, &k, key, len);
    struct call *call = call_new(e, CALL_RANGE, "/v3/kv/range", get_done, g);
    buf_puts(&call->body, "{\"key\":");
    put_b64(&call->body, k.data, k.len);
    buf_putc(&call->body, '}');
    buf_free(&k);
    call_send(call);
}

struct list {
    struct etcd_strong *e;
    etcd_list_fn fn;
    void *arg;
    struct buf from, end; /* the range left to read (etcd keys) */
    int64_t revision;     /* every page at the first's revision */
    struct buf keys;      /* the store keys read, back to back */
    struct etcd_row *rows;
    size_t n, cap;
};

static void list_page(struct list *l);

static void list_finish(struct list *l, int status, const char *detail)
{
    for (size_t i = 0; i < l->n; i++)
        l->rows[i].key = l->keys.data + (size_t)(uintptr_t)l->rows[i].key;
    l->fn(l->arg, status, l->rows, l->n, detail);
    buf_free(&l->from);
    buf_free(&l->end);
    buf_free(&l->keys);
    free(l->rows);
    free(l);
}

static void list_done(struct call *call, enum outcome out, const struct json *root,
                      const char *detail)
{
    struct list *l = call->arg;
    struct etcd_strong *e = l->e;
    if (out != OUT_OK) {
        list_finish(l, STRONG_NO_QUORUM, detail);
        return;
    }
    if (!l->revision) {
        const struct json *h = json_get(root, "header");
        l->revision = h ? json_i64(h, "revision") : 0;
    }
    const struct json *kvs = json_get(root, "kvs");
    size_t pl = strlen(e->prefix) + 2;
    char last[1024];
    size_t lastlen = 0;
    for (uint32_t i = 0; kvs && kvs->type == JSON_ARR && i < kvs->len; i++) {
        const struct json *kv = &kvs->u.items[i];
        const struct json *k = json_get(kv, "key"), *v = json_get(kv, "value");
        char key[1024], t[32];
        long kl = k && k->type == JSON_STR ? base64_decode(k->u.s, k->len, key, sizeof key) : -1;
        long vl = v && v->type == JSON_STR ? base64_decode(v->u.s, v->len, t, sizeof t - 1) : -1;
        if (kl < 0)
            continue;
        memcpy(last, key, (size_t)kl);
        lastlen = (size_t)kl;
        if (vl > 0)
            t[vl] = '\0';
        char *end = t;
        int64_t value = vl > 0 ? strtoll(t, &end, 10) : 0;
        if (vl <= 0 || *end || (size_t)kl <= pl) {
            /* Not written by counterd: said in the log, left out of the listing. */
            log_warn("etcd key %.*s under %s does not hold a decimal integer; not listed", (int)kl,
                     key, e->prefix);
            continue;
        }
        /* P c/<ns>/<name> -> "ns/name", or "name" in the default namespace. */
        const char *sk = key + pl;
        size_t sl = (size_t)kl - pl;
        if (sl > 8 && !memcmp(sk, "default/", 8)) {
            sk += 8;
            sl -= 8;
        }
        if (l->n == l->cap) {
            l->cap = l->cap ? 2 * l->cap : 64;
            l->rows = xrealloc(l->rows, l->cap * sizeof *l->rows);
        }
        l->rows[l->n++] = (struct etcd_row){(const char *)(uintptr_t)l->keys.len, sl, value};
        buf_append(&l->keys, sk, sl);
    }
    const struct json *more = json_get(root, "more");
    if (more && more->type == JSON_TRUE && lastlen && l->n < LIST_MAX) {
        buf_reset(&l->from);
        buf_append(&l->from, last, lastlen);
        buf_putc(&l->from, '\0'); /* the key right after the last one read */
        list_page(l);
        return;
    }
    list_finish(l, STRONG_OK, more && more->type == JSON_TRUE ? "truncated" : NULL);
}

static void list_page(struct list *l)
{
    struct call *call = call_new(l->e, CALL_RANGE, "/v3/kv/range", list_done, l);
    struct buf *b = &call->body;
    buf_puts(b, "{\"key\":");
    put_b64(b, l->from.data, l->from.len);
    buf_puts(b, ",\"range_end\":");
    put_b64(b, l->end.data, l->end.len);
    buf_printf(b, ",\"limit\":\"%d\"", LIST_PAGE);
    if (l->revision)
        buf_printf(b, ",\"revision\":\"%" PRId64 "\"", l->revision);
    buf_putc(b, '}');
    call_send(call);
}

void etcd_strong_list(struct etcd_strong *e, const char *ns, etcd_list_fn fn, void *arg)
{
    struct list *l = xcalloc(1, sizeof *l);
    l->e = e;
    l->fn = fn;
    l->arg = arg;
    buf_puts(&l->from, e->prefix);
    buf_puts(&l->from, "c/");
    if (ns) {
        buf_puts(&l->from, ns);
        buf_putc(&l->from, '/');
    }
    /* The end of the range: the prefix with its last byte one higher ('/' + 1 = '0'). */
    buf_append(&l->end, l->from.data, l->from.len);
    l->end.data[l->end.len - 1]++;
    list_page(l);
}

/* ---------------------------------------------------------------- status */

/*
 * The member at endpoint ep has a new leader: a call it took before the last probe saw the
 * old one (or none) was a proposal to a leader that is gone, which etcd drops and answers
 * only at its own request timeout (seconds). Such calls answer now, as ambiguous as their
 * timeout would be, so their retries (with their tokens) reach the new leader sooner.
 */
static void cut_stuck_calls(struct etcd_strong *e, int ep, double before_ms)
{
    for (int again = 1; again;) {
        again = 0;
        for (struct call *c = e->calls; c; c = c->next) {
            if (c->ep != ep || c->kind == CALL_STATUS || !c->cc || c->start_ms >= before_ms)
                continue;
            client_cancel(c->cc);
            c->cc = NULL;
            char detail[600];
            snprintf(detail, sizeof detail,
                     "etcd %s changed leader while it held %s (sent %.0f ms ago)%s", e->eps[ep].url,
                     c->path, clock_mono_ms() - c->start_ms,
                     c->kind == CALL_TXN ? ": it may have been applied" : "");
            call_finish(c, c->kind == CALL_TXN ? OUT_AMBIGUOUS : OUT_NOT_APPLIED, NULL, detail);
            again = 1; /* the list changed under us (a finished txn may send the next) */
            break;
        }
    }
}

static void probe_done(struct call *call, enum outcome out, const struct json *root,
                       const char *detail)
{
    struct endpoint_state *s = call->arg;
    struct etcd_strong *e = call->e;
    s->probing = 0;
    if (out != OUT_OK) {
        s->ok = 0;
        snprintf(s->error, sizeof s->error, "%s", detail ? detail : "no answer");
    } else {
        const struct json *h = json_get(root, "header");
        uint64_t before = s->leader;
        s->member_id = h ? json_u64(h, "member_id") : 0;
        s->raft_term = json_u64(root, "raftTerm");
        s->leader = json_u64(root, "leader");
        s->ok = s->leader != 0;
        if (s->ok && s->leader != before && s->seen_ms > 0)
            cut_stuck_calls(e, (int)(s - e->eps), s->seen_ms);
        s->seen_ms = clock_mono_ms();
        if (s->ok)
            s->error[0] = '\0';
        else
            snprintf(s->error, sizeof s->error, "the member knows no leader");
    }
    /* Back to the region's own member once it answers with a leader. */
    if (s == &e->eps[0] && s->ok)
        e->cur = 0;
    /* A member without a leader (cut off from a majority) would hold every call until it
     * times out: the calls go to the first member that has one. */
    if (!s->ok && s == &e->eps[e->cur])
        for (int i = 0; i < e->neps; i++)
            if (e->eps[i].ok) {
                e->cur = i;
                break;
            }
}

static void probe(evutil_socket_t fd, short what, void *arg)
{
    struct etcd_strong *e = arg;
    for (int i = 0; i < e->neps; i++) {
        if (e->eps[i].probing)
            continue;
        struct call *call =
            call_new(e, CALL_STATUS, "/v3/maintenance/status", probe_done, &e->eps[i]);
        call->ep = i;
        buf_puts(&call->body, "{}");
        e->eps[i].probing = 1;
        call_send(call);
    }
    struct timeval tv = {0, PROBE_MS * 1000};
    evtimer_add(e->probe_timer, &tv);
}

static double endpoint_up(void *arg)
{
    return ((struct endpoint_state *)arg)->ok;
}

void etcd_strong_admin(struct etcd_strong *e, struct buf *out)
{
    buf_puts(out, "{\"endpoints\":[");
    const char *leader = NULL;
    uint64_t leader_id = 0;
    for (int i = 0; i < e->neps; i++) {
        struct endpoint_state *s = &e->eps[i];
        if (s->ok && !leader_id)
            leader_id = s->leader;
        if (s->ok && s->member_id == s->leader)
            leader = s->url;
        buf_puts(out, i ? ",{\"url\":" : "{\"url\":");
        buf_json_str(out, s->url, strlen(s->url));
        buf_printf(out,
                   ",\"ok\":%s,\"leader\":%s,\"member_id\":\"%" PRIx64 "\",\"raft_term\":%" PRIu64
                   ",\"in_use\":%s,\"error\":",
                   s->ok ? "true" : "false", s->ok && s->member_id == s->leader ? "true" : "false",
                   s->member_id, s->raft_term, i == e->cur ? "true" : "false");
        if (s->error[0])
            buf_json_str(out, s->error, strlen(s->error));
        else
            buf_puts(out, "null");
        buf_putc(out, '}');
    }
    buf_puts(out, "],\"leader\":");
    if (leader) {
        buf_json_str(out, leader, strlen(leader));
    } else if (leader_id) {
        char t[32];
        int n = snprintf(t, sizeof t, "%" PRIx64, leader_id);
        buf_json_str(out, t, (size_t)n);
    } else {
        buf_puts(out, "null");
    }
    buf_puts(out, ",\"prefix\":");
    buf_json_str(out, e->prefix, strlen(e->prefix));
    buf_printf(out, ",\"timeout_ms\":%d}", e->timeout_ms);
}

int etcd_strong_healthy(const struct etcd_strong *e)
{
    for (int i = 0; i < e->neps; i++)
        if (e->eps[i].ok)
            return 1;
    return 0;
}

const char *etcd_strong_endpoint(const struct etcd_strong *e)
{
    return e->eps[e->cur].url;
}

/* ---------------------------------------------------------------- set-up */

static void register_metrics(struct etcd_strong *e, struct metrics *m)
{
    static const double sizes[] = {1, 2, 4, 8, 16, 32, 48};
    static const double secs[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                  0.1,   0.25,   0.5,   1,    2.5,   5};
    struct metric *txn = metrics_add(
        m, METRIC_COUNTER, "counterd_etcd_txns_total",
        "etcd transactions of strong changes, by outcome: committed, conflict (the counter "
        "moved or a token was there: read back in the same txn), not_applied, ambiguous",
        "outcome", NULL, 0);
    for (int i = 0; i < 4; i++) {
        const char *labels[1] = {txn_outcomes[i]};
        e->m_txn[i] = metric_series(txn, labels);
    }
    e->m_batch = metric_only(metrics_add(m, METRIC_HISTOGRAM, "counterd_etcd_batch_size",
                                         "Strong operations carried by one etcd transaction "
                                         "(group commit)",
                                         NULL, sizes, 7));
    e->m_retries =
        metric_only(metrics_add(m, METRIC_COUNTER, "counterd_etcd_conflict_retries_total",
                                "Transactions sent again after a conflict", NULL, NULL, 0));
    struct metric *lat =
        metrics_add(m, METRIC_HISTOGRAM, "counterd_etcd_request_duration_seconds",
                    "Time of one call to etcd's JSON gateway, by call", "call", secs, 12);
    for (int i = 0; i < 4; i++) {
        const char *labels[1] = {call_kinds[i]};
        e->m_latency[i] = metric_series(lat, labels);
    }
    e->m_up = metrics_add(m, METRIC_GAUGE, "counterd_etcd_endpoint_up",
                          "Whether the etcd endpoint answered its last status probe with a leader",
                          "endpoint", NULL, 0);
    for (int i = 0; i < e->neps; i++) {
        const char *labels[1] = {e->eps[i].url};
        metric_set_fn(metric_series(e->m_up, labels), endpoint_up, &e->eps[i]);
    }
}

struct etcd_strong *etcd_strong_new(struct event_base *base, struct client *client,
                                    struct metrics *metrics, const struct etcd_strong_config *cfg,
                                    char *err, size_t errlen)
{
    struct etcd_strong *e = xcalloc(1, sizeof *e);
    e->base = base;
    e->client = client;
    e->timeout_ms = cfg->timeout_ms > 0 ? cfg->timeout_ms : 2000;
    json_parser_init(&e->parser);
    if (!cfg->prefix || !*cfg->prefix || strlen(cfg->prefix) >= sizeof e->prefix) {
        snprintf(err, errlen, "--etcd-prefix must be 1-%zu bytes", sizeof e->prefix - 1);
        goto fail;
    }
    snprintf(e->prefix, sizeof e->prefix, "%s", cfg->prefix);
    const char *p = cfg->endpoints ? cfg->endpoints : "";
    while (*p) {
        const char *q = strchr(p, ',');
        size_t n = q ? (size_t)(q - p) : strlen(p);
        while (n && p[n - 1] == '/')
            n--;
        if (n == 0 || e->neps == ETCD_MAX_ENDPOINTS || n >= sizeof e->eps[0].url ||
            (strncmp(p, "http://", 7) && strncmp(p, "https://", 8))) {
            snprintf(err, errlen,
                     "--etcd (ETCD_ENDPOINTS): '%.*s' is not an http:// URL (at most %d, "
                     "comma-separated)",
                     (int)(n < 200 ? n : 200), p, ETCD_MAX_ENDPOINTS);
            goto fail;
        }
        snprintf(e->eps[e->neps].url, sizeof e->eps[0].url, "%.*s", (int)n, p);
        snprintf(e->eps[e->neps].error, sizeof e->eps[0].error, "not probed yet");
        e->neps++;
        p = q ? q + 1 : p + n;
    }
    if (e->neps == 0) {
        snprintf(err, errlen, "--strong-backend etcd needs --etcd URL[,URL...] (ETCD_ENDPOINTS)");
        goto fail;
    }
    register_metrics(e, metrics);
    e->probe_timer = evtimer_new(base, probe, e);
    probe(-1, 0, e);
    return e;
fail:
    json_parser_free(&e->parser);
    free(e);
    return NULL;
}

void etcd_strong_free(struct etcd_strong *e)
{
    if (!e)
        return;
    event_free(e->probe_timer);
    e->stopping = 1;
    /* Each call answers as what it is: a change sent may have been applied. */
    while (e->calls) {
        struct call *c = e->calls;
        if (c->cc)
            client_cancel(c->cc);
        c->cc = NULL;
        char detail[300];
        snprintf(detail, sizeof detail, "the strong role stopped while etcd %s had %s",
                 e->eps[c->ep].url, c->path);
        call_finish(c, c->kind == CALL_TXN ? OUT_AMBIGUOUS : OUT_NOT_APPLIED, NULL, detail);
    }
    for (int i = 0; i < NBUCKETS; i++) {
        while (e->buckets[i]) {
            struct counter *c = e->buckets[i];
            /* What is left was never sent: a batch waiting for its lease, the queue. */
            fail_batch(c, STRONG_NO_QUORUM, "the strong role stopped; nothing was applied");
            c->batch = c->head;
            c->head = c->tail = NULL;
            fail_batch(c, STRONG_NO_QUORUM, "the strong role stopped; nothing was applied");
            e->buckets[i] = c->next;
            buf_free(&c->keys);
            free(c->ekey);
            free(c);
        }
    }
    json_parser_free(&e->parser);
    free(e);
}
