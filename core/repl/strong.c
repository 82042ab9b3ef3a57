/*
 * strong.c - the strong counter's leader (see strong.h for the protocol).
 *
 * An exchange sends one message to every replica and gathers the answers; each leg
 * waits out the simulated delay (a libevent timer, never a sleep) before the message
 * leaves and again before its answer counts. An exchange is decided as soon as a
 * majority answered, or too many failed to ever make one; its stragglers still run to
 * the end (a slow replica should still learn the value) and the exchange is freed after
 * the last one. A failed accept round is the exception: its legs that have not left yet
 * never do, so fewer replicas can hold a proposal that no majority took.
 */
#include "strong.h"

#include <event2/event.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../base/buf.h"
#include "../base/clock.h"
#include "../base/json.h"
#include "../base/log.h"
#include "../base/mem.h"
#include "../net/client.h"
#include "../obs/trace.h"
#include "../store/gstore.h"
#include "../store/strongrep.h"

#define MAX_OPS_PER_ROUND 10000
#define RETRY_MS 500

struct op {
    struct op *next;
    enum strong_kind kind;
    int64_t amount, value, before;
    int duplicate;    /* its token was seen: value is the first answer's */
    double window_ms; /* how long its token is remembered */
    size_t tlen;      /* its token's entry ("~ns/token") follows name's NUL; 0: no token */
    int durable;      /* its round's majority keeps its data on disk */
    double arrived_ms, started_ms;
    strong_done_fn done;
    void *arg;
    struct trace_ctx trace; /* the request's span, when traced (has_trace) */
    int has_trace;
    size_t len;
    char name[];
};

enum ex_kind { EX_PREPARE, EX_ACCEPT };

struct leg {
    struct exchange *ex;
    int idx;
    struct event *timer;
    struct client_call *call;
    int status; /* HTTP status once answered; 0 none */
    int held;   /* the replica may hold this message's proposal: sent and not refused */
    char *body; /* the answer, kept while its return delay runs */
    int done;
    struct trace_span *span; /* this message's client span, when tracing */
};

struct exchange {
    struct exchange *prev, *next; /* every exchange not yet freed, for strong_free */
    struct strong *s;
    enum ex_kind kind;
    uint64_t epoch, round;
    char *msg;
    size_t msg_len;
    struct leg legs[STRONG_MAX_REPLICAS];
    int ok, failed, stale, outstanding, decided;
    int ok_durable;  /* of ok: replicas that said they keep their data on disk */
    int success;     /* once decided */
    int repair_only; /* an accept round that proposes committed values again, no increment */
    int settles;     /* the repair round that answers a failed round's increments */
    uint64_t stale_promised;
    struct buf why; /* "us-west: partitioned; ..." */
    double start_ms;
    struct event *timeout;
    /* Accept: the increments it carries and the values it proposes. */
    struct op *ops;
    struct strongrep *proposed;
    /* Prepare: the highest-ballot entry per counter among the answers. */
    struct strongrep *found;
    struct trace_span *span; /* the round (or prepare), when tracing */
};

struct strong {
    struct event_base *base;
    struct client *client;
    struct strong_config cfg;
    char *node_id;
    char *replica_ids[STRONG_MAX_REPLICAS]; /* node ids, learned from answers */
    int replica_up[STRONG_MAX_REPLICAS];
    struct strong_hooks hooks;
    const char *headers[4];
    char from_header[256];
    char *auth_header; /* a copy: the caller's string need not outlive strong_new() */
    int majority;
    int ready;
    uint64_t epoch, round, next_epoch;
    struct strongrep *committed;
    struct strongrep *repair; /* counters a failed round touched: propose them again */
    struct op *queue, *queue_tail;
    struct exchange *current; /* the undecided exchange, or NULL */
    struct exchange *live;    /* every exchange not yet freed */
    struct event *retry;
    signed char durable[STRONG_MAX_REPLICAS]; /* -1 not known yet, 0 keeps no data, 1 on disk */
    int rested_on_volatile; /* a decision counted a replica without data (allow_volatile) */
    /* A failed round's increments whose outcome the repair round settles, the replicas
     * that may hold their proposal, and what the failed round met. */
    struct op *unsettled;
    int unsettled_held[STRONG_MAX_REPLICAS];
    char *unsettled_why;
    char last_error[1024]; /* why the last exchange failed */
    uint64_t rounds_ok, rounds_failed;
    double last_round_ms;
    int freeing;
    struct strongrep *tokens; /* token entry -> when it expires (monotonic ms) */
    double next_sweep_ms;     /* expired tokens are forgotten at most once a second */
};

static void start_next(struct strong *s);

/* ---------------------------------------------------------------- answering */

static void finish_op(struct op *o, enum strong_status st, double round_ms, const char *detail)
{
    struct strong_result r = {.status = st,
                              .value = o->value,
                              .durable = o->durable,
                              .lock_wait_ms = o->started_ms ? o->started_ms - o->arrived_ms : 0,
                              .round_ms = round_ms,
                              .detail = detail,
                              .duplicate = o->duplicate,
                              .before = o->before};
    o->done(o->arg, &r);
    free(o);
}

/* Answers every op of the list with st (STRONG_NO_QUORUM or STRONG_AMBIGUOUS). */
static void fail_ops(struct op *o, enum strong_status st, double round_ms, const char *detail)
{
    if (o && st == STRONG_AMBIGUOUS) {
        int n = 0;
        for (struct op *x = o; x; x = x->next)
            n++;
        log_warn("strong: %d increment(s) answered ambiguous: %s", n, detail);
    }
    while (o) {
        struct op *next = o->next;
        finish_op(o, st, round_ms, detail);
        o = next;
    }
}

/* ---------------------------------------------------------------- exchanges */

static void ex_destroy(struct exchange *ex)
{
    struct strong *s = ex->s;
    if (ex->prev)
        ex->prev->next = ex->next;
    else
        s->live = ex->next;
    if (ex->next)
        ex->next->prev = ex->prev;
    if (ex->timeout)
        event_free(ex->timeout);
    trace_span_end(ex->span);
    strongrep_free(ex->proposed);
    strongrep_free(ex->found);
    buf_free(&ex->why);
    free(ex->msg);
    free(ex);
}

static void ex_maybe_free(struct exchange *ex)
{
    if (ex->decided && !ex->outstanding)
        ex_destroy(ex);
}

static const char *replica_label(struct strong *s, int i)
{
    return s->replica_ids[i] ? s->replica_ids[i] : s->cfg.replica_names[i];
}

static void on_decided(struct exchange *ex, int success);

/* Remembers whether replica i keeps its data, and says so in the log when that changes. */
static void note_durable(struct strong *s, int i, int durable)
{
    if (s->durable[i] == durable)
        return;
    s->durable[i] = (signed char)durable;
    if (durable)
        log_info("strong replica %s keeps its data on disk", s->cfg.replica_names[i]);
    else if (s->cfg.allow_volatile)
        log_warn("strong replica %s keeps no data (no DATA_DIR): it counts toward a majority "
                 "because volatile replicas are allowed, and answers that rest on it say "
                 "\"durable\": false",
                 s->cfg.replica_names[i]);
    else
        log_error("strong replica %s keeps no data (no DATA_DIR): it counts toward no majority; "
                  "give its region node a DATA_DIR, or start the strong counter with "
                  "--allow-volatile-replicas",
                  s->cfg.replica_names[i]);
}

/*
 * Whether a replica that answered status (error code err, or NULL) may have stored the
 * message. Every 4xx, and 503 "partitioned", come before a replica changes anything; a
 * 503 "unavailable" may come after (its log failed once the proposal was in memory).
 */
static int may_hold(int status, const char *err)
{
    if (status == 200)
        return 1;
    if (status >= 400 && status < 500)
        return 0;
    return !(status == 503 && err && !strcmp(err, "partitioned"));
}

/* Whether a transport error proves the message never reached the replica: it failed
 * before a connection existed. */
static int never_delivered(const char *error)
{
    return error && (strstr(error, "Failed to connect") || strstr(error, "Couldn't connect") ||
                     strstr(error, "Could not resolve") || strstr(error, "Couldn't resolve"));
}

/* Records one leg's end and decides the exchange once the outcome is certain. A round
 * that carries increments, or settles a failed one's, waits for all its answers before
 * it fails (or for its deadline): each answer makes the increments' answer more certain. */
static void leg_end(struct leg *l, int ok, const char *why)
{
    struct exchange *ex = l->ex;
    struct strong *s = ex->s;
    l->done = 1;
    if (l->span) {
        trace_span_attr_cstr(l->span, "strong.replica", replica_label(s, l->idx));
        if (l->status)
            trace_span_attr_int(l->span, "http.status_code", l->status);
        if (!ok)
            trace_span_error(l->span, why);
        trace_span_end(l->span);
        l->span = NULL;
    }
    ex->outstanding--;
    s->replica_up[l->idx] = ok;
    if (ok) {
        ex->ok++;
    } else {
        ex->failed++;
        buf_printf(&ex->why, "%s%s: %s", ex->why.len ? "; " : "", s->cfg.replica_names[l->idx],
                   why);
    }
    if (!ex->decided && !s->freeing) {
        int n = s->cfg.nreplicas;
        if (ex->ok >= s->majority)
            on_decided(ex, 1);
        else if (ex->failed > n - s->majority &&
                 (!(ex->ops || ex->settles) || ex->outstanding == 0))
            on_decided(ex, 0);
    }
    ex_maybe_free(ex);
}

/* Reads a prepare answer into ex->found. @return 0, or -1 (malformed). */
static int read_prepare(struct exchange *ex, const struct json *root)
{
    const struct json *entries = json_get(root, "entries");
    if (!entries || entries->type != JSON_ARR)
        return -1;
    for (uint32_t i = 0; i < entries->len; i++) {
        const struct json *e = &entries->u.items[i];
        if (e->type != JSON_ARR || e->len != 4 || e->u.items[0].type != JSON_STR)
            return -1;
        for (int k = 1; k < 4; k++)
            if (e->u.items[k].type != JSON_INT)
                return -1;
        if (e->u.items[1].u.i < 0 || e->u.items[2].u.i < 0)
            return -1;
        strongrep_accept(ex->found, e->u.items[0].u.s, e->u.items[0].len,
                         (uint64_t)e->u.items[1].u.i, (uint64_t)e->u.items[2].u.i,
                         e->u.items[3].u.i);
    }
    return 0;
}

/* The answer of a leg, after its return delay. The leg (and its exchange) may be freed
 * by the time this returns; body is the caller's. */
static void leg_answer(struct leg *l, const char *body)
{
    struct exchange *ex = l->ex;
    struct strong *s = ex->s;
    char why[160];
    struct json_parser p;
    json_parser_init(&p);
    const struct json *root = body ? json_parse(&p, body, strlen(body)) : NULL;
    const struct json *nid = root ? json_get(root, "node_id") : NULL;
    if (nid && nid->type == JSON_STR &&
        (!s->replica_ids[l->idx] || strcmp(s->replica_ids[l->idx], nid->u.s) != 0)) {
        free(s->replica_ids[l->idx]);
        s->replica_ids[l->idx] = xstrdup(nid->u.s);
    }
    if (l->status == 200 && root && root->type == JSON_OBJ) {
        const struct json *d = json_get(root, "durable");
        int durable = d && d->type == JSON_TRUE;
        note_durable(s, l->idx, durable);
        if (!durable && !s->cfg.allow_volatile) {
            json_parser_free(&p);
            leg_end(l, 0,
                    "keeps no data (its region node has no DATA_DIR), so it counts "
                    "toward no majority");
            return;
        }
        if (ex->kind == EX_ACCEPT || read_prepare(ex, root) == 0) {
            ex->ok_durable += durable;
            json_parser_free(&p);
            leg_end(l, 1, NULL);
            return;
        }
    }
    const struct json *err = root ? json_get(root, "error") : NULL;
    l->held = may_hold(l->status, err && err->type == JSON_STR ? err->u.s : NULL);
    if (l->status == 409 && err && err->type == JSON_STR && !strcmp(err->u.s, "stale_epoch")) {
        const struct json *pr = json_get(root, "promised");
        if (pr && pr->type == JSON_INT && pr->u.i > 0 && (uint64_t)pr->u.i > ex->stale_promised)
            ex->stale_promised = (uint64_t)pr->u.i;
        ex->stale++;
        snprintf(why, sizeof why, "promised a newer epoch");
    } else if (err && err->type == JSON_STR) {
        snprintf(why, sizeof why, "%d %s", l->status, err->u.s);
    } else {
        snprintf(why, sizeof why, "answered %d", l->status);
    }
    json_parser_free(&p);
    leg_end(l, 0, why);
}

static void on_return_delay(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct leg *l = arg;
    event_free(l->timer);
    l->timer = NULL;
    char *body = l->body;
    l->body = NULL;
    leg_answer(l, body);
    free(body);
}

static void on_leg_result(const struct client_result *res, void *arg)
{
    struct leg *l = arg;
    struct strong *s = l->ex->s;
    l->call = NULL;
    if (res->status == 0) {
        l->held = !never_delivered(res->error);
        char why[200];
        snprintf(why, sizeof why, "unreachable (%s)", res->error ? res->error : "no answer");
        leg_end(l, 0, why);
        return;
    }
    l->status = res->status;
    /* The answer crosses the same link back: the policy decides its fate too. */
    int delay_ms = 0;
    int a = s->hooks.decide ? s->hooks.decide(s->hooks.arg, "out", replica_label(s, l->idx),
                                              s->node_id, "strong-ack", &delay_ms)
                            : 0;
    if (a == 1) {
        /* The leader never learns what the replica answered: it may hold the proposal. */
        l->status = 0;
        leg_end(l, 0, "answer dropped by the faults policy");
        return;
    }
    if (a == 2 && delay_ms > 0) {
        l->body = xstrndup(res->body, res->len);
        l->timer = evtimer_new(s->base, on_return_delay, l);
        struct timeval tv = {delay_ms / 1000, (delay_ms % 1000) * 1000};
        evtimer_add(l->timer, &tv);
        return;
    }
    leg_answer(l, res->body);
}

static void leg_send(struct leg *l)
{
    struct exchange *ex = l->ex;
    struct strong *s = ex->s;
    char url[600];
    snprintf(url, sizeof url, "%s%s", s->cfg.replica_urls[l->idx],
             ex->kind == EX_PREPARE ? "/strong/prepare" : "/strong/accept");
    const char *headers[5];
    char tp[TRACE_HEADER_LEN + 1];
    int h = 0;
    for (; s->headers[h]; h++)
        headers[h] = s->headers[h];
    if (l->span) {
        memcpy(tp, "traceparent: ", 13);
        trace_span_traceparent(l->span, tp + 13);
        headers[h++] = tp;
    }
    headers[h] = NULL;
    struct client_call_opts o = {.method = "POST",
                                 .url = url,
                                 .body = ex->msg,
                                 .body_len = ex->msg_len,
                                 .headers = headers,
                                 .timeout_ms = s->cfg.timeout_ms};
    l->call = client_request(s->client, &o, on_leg_result, l);
    if (!l->call)
        leg_end(l, 0, "the request could not be started");
    else
        l->held = 1;
}

/* Ends a leg that will never be sent, without counting it as the replica's failure. The
 * caller frees the exchange (ex_maybe_free) when it can. */
static void leg_skip(struct leg *l)
{
    if (l->timer) {
        event_free(l->timer);
        l->timer = NULL;
    }
    l->done = 1;
    if (l->span) {
        trace_span_error(l->span, "not sent: the round had already failed");
        trace_span_end(l->span);
        l->span = NULL;
    }
    l->ex->outstanding--;
}

/* A failed accept round's legs still waiting out their send delay never leave. */
static void cancel_unsent(struct exchange *ex)
{
    for (int i = 0; i < ex->s->cfg.nreplicas; i++) {
        struct leg *l = &ex->legs[i];
        if (l->timer && !l->done && !l->call && l->status == 0)
            leg_skip(l);
    }
}

static void on_send_delay(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct leg *l = arg;
    event_free(l->timer);
    l->timer = NULL;
    leg_send(l);
}

static void on_timeout(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct exchange *ex = arg;
    if (!ex->decided) {
        buf_printf(&ex->why, "%sno majority within %d ms", ex->why.len ? "; " : "",
                   ex->s->cfg.timeout_ms);
        on_decided(ex, 0);
        ex_maybe_free(ex);
    }
}

/* Sends ex->msg to every replica. The exchange may be decided before this returns. */
static void ex_start(struct exchange *ex)
{
    struct strong *s = ex->s;
    s->current = ex;
    ex->start_ms = clock_mono_ms();
    int n = s->cfg.nreplicas;
    ex->outstanding = n;
    int max_delay = 0;
    for (int i = 0; i < n; i++) {
        struct leg *l = &ex->legs[i];
        l->ex = ex;
        l->idx = i;
        if (ex->span) {
            /* From the policy's delay to the answer's: the WAN model shows in the trace. */
            l->span = trace_span_child(
                ex->span, ex->kind == EX_PREPARE ? "POST /strong/prepare" : "POST /strong/accept",
                TRACE_CLIENT);
            trace_span_attr_cstr(l->span, "http.method", "POST");
            trace_span_attr_cstr(l->span, "http.url", s->cfg.replica_urls[i]);
        }
    }
    /* The round's deadline: the timeout plus the longest simulated delay both ways. */
    ex->timeout = evtimer_new(s->base, on_timeout, ex);
    ex->outstanding++; /* held while legs start, so no leg frees ex under us */
    for (int i = 0; i < n && !s->freeing; i++) {
        struct leg *l = &ex->legs[i];
        if (ex->decided && !ex->success && ex->kind == EX_ACCEPT) {
            leg_skip(l); /* the round failed before this leg left */
            continue;
        }
        int delay_ms = 0;
        int a = s->hooks.decide ? s->hooks.decide(s->hooks.arg, "out", s->node_id,
                                                  replica_label(s, i), "strong", &delay_ms)
                                : 0;
        if (a == 1) {
            leg_end(l, 0, "dropped by the faults policy (partition or cut link)");
        } else if (a == 2 && delay_ms > 0) {
            if (delay_ms > max_delay)
                max_delay = delay_ms;
            l->timer = evtimer_new(s->base, on_send_delay, l);
            struct timeval tv = {delay_ms / 1000, (delay_ms % 1000) * 1000};
            evtimer_add(l->timer, &tv);
        } else {
            leg_send(l);
        }
    }
    int total = s->cfg.timeout_ms + 2 * max_delay;
    struct timeval tv = {total / 1000, (total % 1000) * 1000};
    evtimer_add(ex->timeout, &tv);
    ex->outstanding--;
    if (!ex->decided && !s->freeing && !ex->outstanding &&
        ex->failed > n - s->majority) /* every leg ended while they started */
        on_decided(ex, 0);
    ex_maybe_free(ex);
}

static struct exchange *ex_new(struct strong *s, enum ex_kind kind)
{
    struct exchange *ex = xcalloc(1, sizeof *ex);
    ex->s = s;
    ex->kind = kind;
    ex->next = s->live;
    if (s->live)
        s->live->prev = ex;
    s->live = ex;
    return ex;
}

/* ---------------------------------------------------------------- recovery (prepare) */

static void on_retry(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    start_next(arg);
}

static void schedule_retry(struct strong *s)
{
    if (s->freeing || evtimer_pending(s->retry, NULL))
        return;
    struct timeval tv = {0, RETRY_MS * 1000};
    evtimer_add(s->retry, &tv);
}

static void start_prepare(struct strong *s)
{
    struct exchange *ex = ex_new(s, EX_PREPARE);
    ex->epoch = s->next_epoch;
    ex->found = strongrep_new();
    if (trace_enabled()) {
        ex->span = trace_span_start("strong prepare", TRACE_INTERNAL, NULL);
        trace_span_attr_int(ex->span, "strong.epoch", (int64_t)ex->epoch);
        trace_span_attr_int(ex->span, "strong.replicas", s->cfg.nreplicas);
    }
    struct buf b = {0};
    buf_printf(&b, "{\"epoch\":%" PRIu64 ",\"leader\":", ex->epoch);
    buf_json_str(&b, s->node_id, strlen(s->node_id));
    buf_putc(&b, '}');
    ex->msg = b.data;
    ex->msg_len = b.len;
    ex_start(ex);
}

static void copy_found(void *arg, const char *name, size_t len, const struct strongrep_entry *e)
{
    struct strong *s = arg;
    strongrep_accept(s->committed, name, len, e->epoch, e->round, e->value);
    strongrep_accept(s->repair, name, len, 0, 0, 0);
    /* A token recovered is remembered a default window from now: when it was seen is not
     * replicated, and remembering longer only makes a late retry safer. */
    if (name[0] == '~' && !strongrep_get(s->tokens, name, len))
        strongrep_put(s->tokens, name, len,
                      (int64_t)(clock_mono_ms() + STRONG_TOKEN_WINDOW_S * 1000.0));
}

static void prepare_decided(struct exchange *ex, int success)
{
    struct strong *s = ex->s;
    if (success) {
        /* The new epoch's values: what the highest ballot of a majority says. */
        strongrep_free(s->committed);
        strongrep_free(s->repair);
        s->committed = strongrep_new();
        s->repair = strongrep_new();
        strongrep_each(ex->found, copy_found, s);
        s->epoch = ex->epoch;
        s->round = 0;
        s->ready = 1;
        if (ex->ok_durable < s->majority)
            s->rested_on_volatile = 1;
        s->last_error[0] = '\0';
        log_info("strong leader %s: epoch %" PRIu64 ", %zu counter(s) recovered from %d of %d "
                 "replicas",
                 s->node_id, s->epoch, strongrep_count(s->committed), ex->ok, s->cfg.nreplicas);
        return;
    }
    if (ex->stale && ex->stale_promised >= s->next_epoch) {
        s->next_epoch = ex->stale_promised + 1; /* retried at once by start_next */
        return;
    }
    s->next_epoch++;
    /* No majority: the queued increments cannot be served now. */
    struct op *q = s->queue;
    s->queue = s->queue_tail = NULL;
    char detail[600];
    snprintf(detail, sizeof detail,
             "no quorum: the strong leader needs %d of %d replicas to start and reached %d (%s); "
             "nothing was applied",
             s->majority, s->cfg.nreplicas, ex->ok, ex->why.len ? buf_cstr(&ex->why) : "-");
    snprintf(s->last_error, sizeof s->last_error, "%s", detail);
    fail_ops(q, STRONG_NO_QUORUM, clock_mono_ms() - ex->start_ms, detail);
    schedule_retry(s);
}

/* ---------------------------------------------------------------- rounds (accept) */

struct round_build {
    struct buf *b;
    struct strong *s;
    struct strongrep *proposed;
};

static void put_proposal(void *arg, const char *name, size_t len, const struct strongrep_entry *e)
{
    struct buf *b = arg;
    if (b->data[b->len - 1] != '[')
        buf_putc(b, ',');
    buf_putc(b, '[');
    buf_json_str(b, name, len);
    buf_printf(b, ",%" PRId64 "]", e->value);
}

/*
 * What a repair proposes for name: its committed value. A name with none is a tombstone (a
 * failed round's new counter or token: known not applied from now on), except a lab counter
 * (no namespace), which has always been repaired to 0. A token being forgotten is forgotten.
 */
static void add_repair(void *arg, const char *name, size_t len, const struct strongrep_entry *e)
{
    (void)e;
    struct round_build *rb = arg;
    struct strong *s = rb->s;
    if (strongrep_get(rb->proposed, name, len))
        return;
    const struct strongrep_entry *c = strongrep_get(s->committed, name, len);
    int64_t v = c ? c->value : memchr(name, '/', len) ? STRONGREP_DELETED : 0;
    if (name[0] == '~' && !c) /* swept once its window has passed */
        strongrep_put(s->tokens, name, len,
                      (int64_t)(clock_mono_ms() + STRONG_TOKEN_WINDOW_S * 1000.0));
    else if (name[0] == '~' && !strongrep_get(s->tokens, name, len))
        v = STRONGREP_FORGET;
    strongrep_put(rb->proposed, name, len, v);
}

/* The entry of name in the round's proposal, else the committed one; NULL when none, or when
 * it is being forgotten. */
static const struct strongrep_entry *current(const struct exchange *ex, const char *name,
                                             size_t len)
{
    const struct strongrep_entry *e = strongrep_get(ex->proposed, name, len);
    if (!e)
        e = strongrep_get(ex->s->committed, name, len);
    return e && e->value != STRONGREP_FORGET ? e : NULL;
}

/* An op whose token is live: answered with the first answer's value, applied nothing.
 * @return 1 when it waits for the round that carries its first (it joins that round). */
static int take_duplicate(struct exchange *ex, struct op *o, const struct strongrep_entry *t)
{
    o->duplicate = 1;
    o->value = o->before = t->value;
    if (strongrep_get(ex->proposed, o->name + o->len + 1, o->tlen))
        return 1;
    o->durable = !ex->s->rested_on_volatile;
    finish_op(o, STRONG_OK, 0, NULL);
    return 0;
}

/*
 * Puts op o into the round's proposal: the counter's new value and, in the same round, its
 * token's entry. @return 1 when the round carries it, 0 when it was answered (a duplicate
 * already committed, not found, overflow).
 */
static int take_op(struct exchange *ex, struct op *o, double now)
{
    struct strong *s = ex->s;
    const char *tname = o->name + o->len + 1;
    o->started_ms = now;
    if (o->tlen) {
        const struct strongrep_entry *t = current(ex, tname, o->tlen);
        const struct strongrep_entry *until = strongrep_get(s->tokens, tname, o->tlen);
        if (t && t->value != STRONGREP_DELETED && until && now < (double)until->value)
            return take_duplicate(ex, o, t);
    }
    const struct strongrep_entry *c = current(ex, o->name, o->len);
    int exists = c && c->value != STRONGREP_DELETED;
    int64_t cur = exists ? c->value : 0, next = 0;
    if (o->kind != STRONG_ADD && !exists) {
        finish_op(o, STRONG_NOT_FOUND, 0, "no such counter");
        return 0;
    }
    if (o->kind == STRONG_ADD &&
        (__builtin_add_overflow(cur, o->amount, &next) || next <= STRONGREP_DELETED)) {
        finish_op(o, STRONG_OVERFLOW, 0, "the counter would leave the signed 64-bit range");
        return 0;
    }
    if (o->kind == STRONG_DELETE)
        next = STRONGREP_DELETED;
    o->before = cur;
    o->value = o->kind == STRONG_DELETE ? 0 : next;
    strongrep_put(ex->proposed, o->name, o->len, next);
    if (o->tlen) {
        strongrep_put(ex->proposed, tname, o->tlen, o->kind == STRONG_ADD ? next : cur);
        strongrep_put(s->tokens, tname, o->tlen, (int64_t)(now + o->window_ms));
    }
    return 1;
}

/* Tokens past their window, at most once a second and 1000 a round: proposed forgotten. */
static void sweep_tokens(struct exchange *ex, double now);

/*
 * Moves the queue, in arrival order, into the round's proposal (at most MAX_OPS_PER_ROUND
 * operations); one that would overflow, or finds no counter to clear, fails alone.
 * @return how many increments the round carries.
 */
static int take_queue(struct exchange *ex, double now)
{
    struct strong *s = ex->s;
    struct op **tail = &ex->ops;
    int taken = 0;
    while (s->queue && taken < MAX_OPS_PER_ROUND) {
        struct op *o = s->queue;
        s->queue = o->next;
        o->next = NULL;
        if (!take_op(ex, o, now))
            continue;
        *tail = o;
        tail = &o->next;
        taken++;
    }
    if (!s->queue)
        s->queue_tail = NULL;
    return taken;
}

/* The round's accept message: {"epoch","round","leader","entries":[...]}, into ex->msg. */
static void round_message(struct exchange *ex)
{
    struct buf b = {0};
    buf_printf(&b, "{\"epoch\":%" PRIu64 ",\"round\":%" PRIu64 ",\"leader\":", ex->epoch,
               ex->round);
    buf_json_str(&b, ex->s->node_id, strlen(ex->s->node_id));
    buf_puts(&b, ",\"entries\":[");
    strongrep_each(ex->proposed, put_proposal, &b);
    buf_puts(&b, "]}");
    ex->msg = b.data;
    ex->msg_len = b.len;
}

struct sweep {
    double now;
    struct buf names; /* expired token entries, each NUL-terminated */
    int n;
};

static void find_expired(void *arg, const char *name, size_t len, const struct strongrep_entry *e)
{
    struct sweep *sw = arg;
    if (sw->n < 1000 && (double)e->value <= sw->now) {
        buf_append(&sw->names, name, len + 1);
        sw->n++;
    }
}

static void sweep_tokens(struct exchange *ex, double now)
{
    struct strong *s = ex->s;
    if (now < s->next_sweep_ms)
        return;
    s->next_sweep_ms = now + 1000;
    struct sweep sw = {.now = now};
    strongrep_each(s->tokens, find_expired, &sw);
    for (size_t at = 0; at < sw.names.len;) {
        const char *name = sw.names.data + at;
        size_t len = strlen(name);
        strongrep_accept(s->tokens, name, len, 0, 0, STRONGREP_FORGET);
        if (!strongrep_get(ex->proposed, name, len))
            strongrep_put(ex->proposed, name, len, STRONGREP_FORGET);
        at += len + 1;
    }
    buf_free(&sw.names);
}

static void start_round(struct strong *s)
{
    struct exchange *ex = ex_new(s, EX_ACCEPT);
    ex->epoch = s->epoch;
    ex->round = ++s->round;
    ex->proposed = strongrep_new();
    double now = clock_mono_ms();
    /* A round that repairs carries no increment: were it to fail too, the increments
     * waiting were never sent, so their no_quorum is certain. */
    ex->repair_only = strongrep_count(s->repair) > 0;
    ex->settles = s->unsettled != NULL;
    int taken = ex->repair_only ? 0 : take_queue(ex, now);
    if (!ex->repair_only)
        sweep_tokens(ex, now);
    struct round_build rb = {NULL, s, ex->proposed};
    strongrep_each(s->repair, add_repair, &rb);
    strongrep_free(s->repair);
    s->repair = strongrep_new();
    if (strongrep_count(ex->proposed) == 0) {
        s->round--;
        ex->decided = 1;
        ex_maybe_free(ex);
        return;
    }
    if (trace_enabled()) {
        /* One round carries many increments: it joins the first traced one's trace. */
        const struct trace_ctx *parent = NULL;
        for (struct op *o = ex->ops; o && !parent; o = o->next)
            if (o->has_trace)
                parent = &o->trace;
        ex->span = trace_span_start("strong round", TRACE_INTERNAL, parent);
        trace_span_attr_int(ex->span, "strong.epoch", (int64_t)ex->epoch);
        trace_span_attr_int(ex->span, "strong.round", (int64_t)ex->round);
        trace_span_attr_int(ex->span, "strong.increments", taken);
        trace_span_attr_int(ex->span, "strong.counters", (int64_t)strongrep_count(ex->proposed));
        trace_span_attr_int(ex->span, "strong.replicas", s->cfg.nreplicas);
    }
    round_message(ex);
    ex_start(ex);
}

static void commit_one(void *arg, const char *name, size_t len, const struct strongrep_entry *e)
{
    struct exchange *ex = arg;
    strongrep_accept(ex->s->committed, name, len, ex->epoch, ex->round, e->value);
}

static void mark_repair(void *arg, const char *name, size_t len, const struct strongrep_entry *e)
{
    (void)e;
    strongrep_accept(((struct strong *)arg)->repair, name, len, 0, 0, 0);
}

/* Names the replicas of held[] into b ("us-east, us-west"). @return how many. */
static int held_names(struct strong *s, const int *held, struct buf *b)
{
    int n = 0;
    for (int i = 0; i < s->cfg.nreplicas; i++) {
        if (held[i]) {
            buf_printf(b, "%s%s", n ? ", " : "", s->cfg.replica_names[i]);
            n++;
        }
    }
    return n;
}

/*
 * Answers the failed round's increments (s->unsettled) once the repair round ex is
 * decided: no replica can hold their proposal any more when the repair reached a majority
 * or every replica that may have held it (its 200 means it took the higher ballot).
 */
static void settle(struct exchange *ex, int success, double ms)
{
    struct strong *s = ex->s;
    struct op *ops = s->unsettled;
    if (!ops)
        return;
    s->unsettled = NULL;
    int still[STRONG_MAX_REPLICAS] = {0};
    for (int i = 0; i < s->cfg.nreplicas; i++)
        still[i] = s->unsettled_held[i] && !(ex->legs[i].done && ex->legs[i].status == 200);
    struct buf names = {0}, detail = {0};
    if (success || held_names(s, still, &names) == 0) {
        buf_printf(&detail,
                   "no quorum: %s; the leader's next round replaced its proposal %s: nothing "
                   "was applied",
                   s->unsettled_why,
                   success ? "at a majority" : "on every replica that had taken it");
        fail_ops(ops, STRONG_NO_QUORUM, ms, buf_cstr(&detail));
    } else {
        buf_printf(&detail,
                   "outcome unknown: %s; %s may hold its proposal and no later round has "
                   "replaced it at a majority yet, so it may or may not have been applied (a "
                   "leader recovering from that replica may adopt it). Strong increments take "
                   "no idempotency token: a retry may count it twice",
                   s->unsettled_why, buf_cstr(&names));
        fail_ops(ops, STRONG_AMBIGUOUS, ms, buf_cstr(&detail));
    }
    free(s->unsettled_why);
    s->unsettled_why = NULL;
    buf_free(&names);
    buf_free(&detail);
}

/* A round a majority accepted: commit it and answer its increments. */
static void round_succeeded(struct exchange *ex, struct op *ops, double ms)
{
    struct strong *s = ex->s;
    s->rounds_ok++;
    s->last_error[0] = '\0';
    int durable = ex->ok_durable >= s->majority;
    if (!durable)
        s->rested_on_volatile = 1;
    strongrep_each(ex->proposed, commit_one, ex);
    while (ops) {
        struct op *next = ops->next;
        ops->durable = durable;
        finish_op(ops, STRONG_OK, ms, NULL);
        ops = next;
    }
    if (ex->repair_only)
        settle(ex, 1, ms);
}

/* A failed repair round: what waits behind it was never sent, so it fails for certain. */
static void repair_failed(struct exchange *ex, const char *base, double ms)
{
    struct strong *s = ex->s;
    settle(ex, 0, ms);
    struct op *q = s->queue;
    s->queue = s->queue_tail = NULL;
    struct buf detail = {0};
    buf_printf(&detail,
               "no quorum: %s; increments wait until it succeeds, so this one was not "
               "sent: nothing was applied",
               base);
    fail_ops(q, STRONG_NO_QUORUM, ms, buf_cstr(&detail));
    buf_free(&detail);
}

/* A failed round of increments: certain failure when no replica took it, an unknown
 * outcome while the leader must recover, else left to the repair round to settle. */
static void increments_failed(struct exchange *ex, struct op *ops, const char *base, double ms)
{
    struct strong *s = ex->s;
    cancel_unsent(ex);
    int held[STRONG_MAX_REPLICAS] = {0}, nheld = 0;
    for (int i = 0; i < s->cfg.nreplicas; i++)
        nheld += held[i] = ex->legs[i].held;
    struct buf detail = {0};
    if (nheld == 0) {
        buf_printf(&detail, "no quorum: %s; no replica took it: nothing was applied", base);
        fail_ops(ops, STRONG_NO_QUORUM, ms, buf_cstr(&detail));
    } else if (!s->ready) {
        struct buf names = {0};
        held_names(s, held, &names);
        buf_printf(&detail,
                   "outcome unknown: %s; %s may hold its proposal and the leader must "
                   "recover before a round can replace it, so it may or may not have been "
                   "applied. Strong increments take no idempotency token: a retry may count "
                   "it twice",
                   base, buf_cstr(&names));
        buf_free(&names);
        fail_ops(ops, STRONG_AMBIGUOUS, ms, buf_cstr(&detail));
    } else if (ops) {
        /* The repair round, which starts next, settles them. */
        s->unsettled = ops;
        memcpy(s->unsettled_held, held, sizeof held);
        s->unsettled_why = xstrdup(base);
    }
    buf_free(&detail);
}

static void round_decided(struct exchange *ex, int success)
{
    struct strong *s = ex->s;
    double ms = clock_mono_ms() - ex->start_ms;
    s->last_round_ms = ms;
    struct op *ops = ex->ops;
    ex->ops = NULL;
    if (success) {
        round_succeeded(ex, ops, ms);
        return;
    }
    s->rounds_failed++;
    strongrep_each(ex->proposed, mark_repair, s);
    if (ex->stale) {
        /* A replica promised a newer epoch: another leader ran. Recover before going on. */
        s->ready = 0;
        if (ex->stale_promised >= s->next_epoch)
            s->next_epoch = ex->stale_promised + 1;
        log_warn("strong leader %s: a replica promised epoch %" PRIu64 "; recovering", s->node_id,
                 ex->stale_promised);
    }
    /* What the round met, then what that means for its increments. */
    struct buf base = {0};
    buf_printf(&base, "%s needs %d of %d replicas to accept it and %d did (%s)",
               ex->repair_only ? "the leader's repair round" : "an increment", s->majority,
               s->cfg.nreplicas, ex->ok, ex->why.len ? buf_cstr(&ex->why) : "-");
    snprintf(s->last_error, sizeof s->last_error, "no quorum: %s", buf_cstr(&base));
    if (ex->repair_only)
        repair_failed(ex, buf_cstr(&base), ms);
    else
        increments_failed(ex, ops, buf_cstr(&base), ms);
    buf_free(&base);
    schedule_retry(s); /* the repair round, if nothing else comes first */
}

static void on_decided(struct exchange *ex, int success)
{
    struct strong *s = ex->s;
    ex->decided = 1;
    ex->success = success;
    if (s->current == ex)
        s->current = NULL;
    if (ex->span) {
        trace_span_attr_int(ex->span, "strong.acks", ex->ok);
        if (!success)
            trace_span_error(ex->span, ex->why.len ? buf_cstr(&ex->why) : "no majority");
        trace_span_end(ex->span);
        ex->span = NULL;
    }
    if (ex->kind == EX_PREPARE)
        prepare_decided(ex, success);
    else
        round_decided(ex, success);
    start_next(s);
}

/*
 * Starts whatever should run next, unless an exchange is undecided. After a failure the
 * retry timer holds back a new prepare and a repair-only round, unless increments wait
 * for it: those of the failed round (the repair settles them) or new ones (each learns
 * quickly whether a majority is back).
 */
static void start_next(struct strong *s)
{
    if (s->current || s->freeing)
        return;
    int waiting = evtimer_pending(s->retry, NULL);
    if (!s->ready) {
        if (!waiting)
            start_prepare(s);
        return;
    }
    if (s->queue || s->unsettled || (strongrep_count(s->repair) && !waiting))
        start_round(s);
}

/* ---------------------------------------------------------------- public */

struct strong *strong_new(struct event_base *base, struct client *client,
                          const struct strong_config *cfg, const struct strong_hooks *hooks)
{
    struct strong *s = xcalloc(1, sizeof *s);
    s->base = base;
    s->client = client;
    s->cfg = *cfg;
    if (s->cfg.timeout_ms <= 0)
        s->cfg.timeout_ms = 3000;
    s->node_id = xstrdup(cfg->node_id);
    for (int i = 0; i < cfg->nreplicas; i++) {
        s->cfg.replica_names[i] = xstrdup(cfg->replica_names[i]);
        s->cfg.replica_urls[i] = xstrdup(cfg->replica_urls[i]);
    }
    if (hooks)
        s->hooks = *hooks;
    snprintf(s->from_header, sizeof s->from_header, "X-Counterd-Node: %s", cfg->node_id);
    int h = 0;
    s->headers[h++] = s->from_header;
    if (cfg->auth_header) {
        s->auth_header = xstrdup(cfg->auth_header);
        s->headers[h++] = s->auth_header;
    }
    s->headers[h] = NULL;
    s->cfg.auth_header = NULL;
    s->majority = cfg->nreplicas / 2 + 1;
    memset(s->durable, -1, sizeof s->durable);
    s->next_epoch = 1;
    s->committed = strongrep_new();
    s->repair = strongrep_new();
    s->tokens = strongrep_new();
    s->retry = evtimer_new(base, on_retry, s);
    start_next(s);
    return s;
}

void strong_free(struct strong *s)
{
    if (!s)
        return;
    s->freeing = 1;
    fail_ops(s->queue, STRONG_NO_QUORUM, 0,
             "no quorum: the strong leader is stopping; this increment was not sent: nothing was "
             "applied");
    s->queue = NULL;
    fail_ops(s->unsettled, STRONG_AMBIGUOUS, 0,
             "outcome unknown: the strong leader is stopping before a majority confirmed this "
             "increment or a later round replaced it, so it may or may not have been applied");
    s->unsettled = NULL;
    /* Every exchange still alive: cancel its calls and timers, answer its increments. */
    while (s->live) {
        struct exchange *ex = s->live;
        int held = 0;
        for (int i = 0; i < s->cfg.nreplicas; i++) {
            struct leg *l = &ex->legs[i];
            held += l->held;
            if (l->call)
                client_cancel(l->call);
            if (l->timer)
                event_free(l->timer);
            free(l->body);
            trace_span_error(l->span, "the strong leader is stopping");
            trace_span_end(l->span);
        }
        if (held)
            fail_ops(ex->ops, STRONG_AMBIGUOUS, 0,
                     "outcome unknown: the strong leader is stopping while replicas may hold "
                     "this increment's proposal, so it may or may not have been applied");
        else
            fail_ops(ex->ops, STRONG_NO_QUORUM, 0,
                     "no quorum: the strong leader is stopping and no replica took this "
                     "increment: nothing was applied");
        ex_destroy(ex);
    }
    event_free(s->retry);
    free(s->unsettled_why);
    strongrep_free(s->committed);
    strongrep_free(s->repair);
    strongrep_free(s->tokens);
    for (int i = 0; i < s->cfg.nreplicas; i++) {
        free((char *)s->cfg.replica_names[i]);
        free((char *)s->cfg.replica_urls[i]);
        free(s->replica_ids[i]);
    }
    free(s->node_id);
    free(s->auth_header);
    free(s);
}

void strong_increment(struct strong *s, const char *name, size_t len, int64_t amount,
                      strong_done_fn done, void *arg)
{
    strong_increment_traced(s, name, len, amount, NULL, done, arg);
}

void strong_increment_traced(struct strong *s, const char *name, size_t len, int64_t amount,
                             const struct trace_span *span, strong_done_fn done, void *arg)
{
    struct strong_op op = {
        .kind = STRONG_ADD, .name = name, .len = len, .amount = amount, .span = span};
    strong_submit(s, &op, done, arg);
}

void strong_submit(struct strong *s, const struct strong_op *op, strong_done_fn done, void *arg)
{
    /* The token's entry: "~<namespace>/<token>", the namespace of a bare name "default". */
    int nl = gstore_key_ns_len(op->name, op->len);
    const char *ns = nl > 0 ? op->name : "default";
    size_t nsl = nl > 0 ? (size_t)nl : 7, tlen = op->token ? 2 + nsl + op->tlen : 0;
    size_t len = op->len;
    struct op *o = xcalloc(1, sizeof *o + len + 1 + tlen + 1);
    o->has_trace = op->span != NULL;
    if (op->span)
        o->trace = *trace_span_ctx(op->span);
    o->kind = op->kind;
    o->amount = op->amount;
    o->window_ms = (op->window_s > 0 ? op->window_s : STRONG_TOKEN_WINDOW_S) * 1000.0;
    o->arrived_ms = clock_mono_ms();
    o->done = done;
    o->arg = arg;
    o->len = len;
    memcpy(o->name, op->name, len);
    if (op->token) {
        char *t = o->name + len + 1;
        t[0] = '~';
        memcpy(t + 1, ns, nsl);
        t[1 + nsl] = '/';
        memcpy(t + 2 + nsl, op->token, op->tlen);
        o->tlen = tlen;
    }
    if (s->queue_tail)
        s->queue_tail->next = o;
    else
        s->queue = o;
    s->queue_tail = o;
    start_next(s);
}

int strong_ready(const struct strong *s)
{
    return s->ready;
}

int64_t strong_value(const struct strong *s, const char *name, size_t len)
{
    int64_t v = 0;
    strong_get(s, name, len, &v);
    return v;
}

int strong_get(const struct strong *s, const char *name, size_t len, int64_t *value)
{
    const struct strongrep_entry *e = strongrep_get(s->committed, name, len);
    if (!e || e->value == STRONGREP_DELETED || (len && name[0] == '~'))
        return 0;
    *value = e->value;
    return 1;
}

struct each_ctx {
    void (*fn)(void *arg, const char *name, size_t len, int64_t value);
    void *arg;
};

static void each_one(void *arg, const char *name, size_t len, const struct strongrep_entry *e)
{
    struct each_ctx *c = arg;
    if (name[0] != '~' && e->value != STRONGREP_DELETED)
        c->fn(c->arg, name, len, e->value);
}

void strong_each(const struct strong *s,
                 void (*fn)(void *arg, const char *name, size_t len, int64_t value), void *arg)
{
    struct each_ctx c = {fn, arg};
    strongrep_each(s->committed, each_one, &c);
}

void strong_stats(const struct strong *s, struct strong_stats *out)
{
    out->epoch = s->epoch;
    out->rounds_committed = s->rounds_ok;
    out->rounds_failed = s->rounds_failed;
    out->last_round_ms = s->last_round_ms;
    out->replicas_up = 0;
    for (int i = 0; i < s->cfg.nreplicas; i++)
        out->replicas_up += s->replica_up[i];
}

int strong_replica_up(const struct strong *s, int i)
{
    return i >= 0 && i < s->cfg.nreplicas && s->replica_up[i];
}

int strong_replica_durable(const struct strong *s, int i)
{
    return i >= 0 && i < s->cfg.nreplicas ? s->durable[i] : -1;
}

int strong_durable(const struct strong *s)
{
    return !s->rested_on_volatile;
}

const char *strong_last_error(const struct strong *s)
{
    return s->last_error;
}
