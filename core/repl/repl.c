/*
 * repl.c - push-pull anti-entropy over HTTP /sync (see repl.h).
 *
 * Wire format (API.md, "POST /sync"), one JSON object each way:
 *   {"node_id": "...", "incarnation": "<hex>", "timestamp": <unix s>,
 *    "counts": {"<counter>": {"<replica>": <increments>, ...}, ...},
 *    "decrements": {...same shape, only when some exist...},
 *    "tokens": {"<counter>": {"<token>": {"amount": <n>, "settled": <bool>}, ...}, ...}
 *                                   (token-set elements of the counters sent, store/tokset.h)
 *    "folded": {"<counter>": ["<replica>", ...], ...}
 *                                   (the folded replicas of the counters sent, gstore_fold)
 *    "floors": {"<counter>": {"pos": {"<replica>": N}, "neg": {...}}, ...}
 *    "dfloors": {...same shape...}, "life": {"<counter>": ["deleted", "sealed"], ...}
 *                                   (the lifecycle state of the counters sent that have one:
 *                                    clear floor, delete floor, flags; gstore.h "Lifecycle")
 *    "features": ["folded", "digest", "compact", "life"]   (what this node understands)
 *    "digest": {...}                (a step of the digest exchange, repl_digest.c: answered
 *                                    with the next step instead of a page)
 *    "since": "<cursor>"            (request: the cursor the peer gave us last time)
 *    "cursor": "<cursor>", "more": <bool>   (answer)}
 *
 * Cursors are opaque to the peer. "D.<incarnation>.<seq>" means "everything changed after
 * seq"; "F.<incarnation>.<seq>.<id>" means "a full walk started at seq, continue at
 * counter id"; "D.<incarnation>.<seq>.<base>" is a page of a delta that started at base.
 * A cursor from another incarnation of this node is answered with full state.
 *
 * Token-set elements travel with their counter, those changed after the start of the
 * series of pages (a page that stops early moves the cursor past elements of counters it
 * did not reach: their counter comes in a later page, with every element since the start).
 *
 * A peer whose answers carry no "incarnation" speaks the original lab's /sync: it holds one
 * value per node id and knows no decrements. Its format is learned from a first exchange
 * that pushes nothing; from then on it gets, per counter, each node's incarnations summed
 * under the node id (a value that only grows, so its max-merge stays right) and no
 * decrements; a /sync it sends us is answered the same way, in full.
 *
 * A counter's folded replicas (tombstones) travel with every copy of it, so its folded entry
 * never reaches a node without them. A counter whose tombstones this node cannot take (a
 * bad id, this node's own replica id, too many) is skipped whole, entries included.
 *
 * The fold gate (repl_fold_want / repl_fold_ready): a retired incarnation may be folded
 * once this node has pulled every peer's full state (cursor "" through more=false, with
 * nothing skipped) in series that started after a given time, and every peer says it
 * understands "folded"; README "Durability" says why that is enough.
 *
 * A counter is keyed by its name (namespace "default") or "<ns>/<name>". Counters the
 * replicated hook refuses (a regional namespace's) are in no page and no fingerprint this
 * node sends, and those received are ignored and counted (counterd_sync_ignored_total). A
 * node that does not say "life" gets "CSB1" compact bodies without lifecycle state; an
 * original-lab region gets namespace "default" only, without lifecycle state.
 *
 * Entries a message carries that this node cannot hold (a name outside the charset, a
 * negative or non-integer count, one beyond int64, a counter with too many replicas) are
 * skipped, counted per peer and reason, logged once per peer and reason, and listed in the
 * answer ("rejected", the first REJECT_LIST_MAX); everything else is merged.
 *
 * Delivery guarantee: a push is acknowledged (peer->acked advances) only when the peer
 * answered 200, so a lost message is simply sent again next round. The store's change
 * list makes "counters changed after seq" cost the number of changes.
 */
#include "repl.h"

#include <event2/event.h>
#include <inttypes.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../base/clock.h"
#include "../base/hash.h"
#include "../base/log.h"
#include "../base/mem.h"
#include "../net/client.h"
#include "../obs/metrics.h"
#include "repl_internal.h"

/* ---------------------------------------------------------------- decisions */

int repl__decide(struct repl *r, const char *dir, const char *from, const char *to, int *delay_ms)
{
    *delay_ms = 0;
    /* The partition is enforced here whatever a policy says: API.md promises it. */
    if (r->partitioned)
        return REPL_DROP;
    if (!r->hooks.decide)
        return REPL_DELIVER;
    int a = r->hooks.decide(r->hooks.arg, dir, from, to, "sync", r->partitioned, delay_ms);
    if (a == REPL_DELAY && *delay_ms <= 0)
        a = REPL_DELIVER;
    return a < 0 ? REPL_DELIVER : a;
}

/* The origin tag of a node that sent us a /sync: a configured peer's, or 0. */
int repl__origin_of_node(const struct repl *r, const char *node_id)
{
    for (int i = 0; i < r->npeers; i++)
        if (r->peers[i].node_id[0] && strcmp(r->peers[i].node_id, node_id) == 0)
            return i + 1;
    return 0;
}

/* ---------------------------------------------------------------- rounds */

static void exchange_start(struct peer *p);

/*
 * Gives back the scratch a round grew beyond what a delta round needs (a full-state page
 * grows the buffers, the parser and the merge tables to ~15 MB, and they would stay at
 * that peak while the node idles). Every user of them sizes them again from nothing. The
 * freed blocks sit between the store's arena chunks in the heap: malloc_trim returns their
 * pages to the system, or the process would keep them resident.
 */
#define SCRATCH_KEEP (256u << 10)
static void scratch_trim(struct repl *r)
{
    int freed = 0;
    struct buf *bufs[] = {&r->out,     &r->counts,   &r->decs,  &r->toks, &r->folds,
                          &r->dg,      &r->cbody,    &r->creps, &r->cout, &r->toks_c,
                          &r->lfloors, &r->ldfloors, &r->lflags};
    for (size_t i = 0; i < sizeof bufs / sizeof *bufs; i++)
        if (bufs[i]->cap > SCRATCH_KEEP) {
            buf_free(bufs[i]);
            freed = 1;
        }
    if (r->raw_cap * (2 * sizeof *r->raw + sizeof *r->raw_item) > SCRATCH_KEEP) {
        free(r->raw);
        free(r->entries);
        free(r->raw_item);
        r->raw = r->entries = NULL;
        r->raw_item = NULL;
        r->nraw = r->raw_cap = 0;
        freed = 1;
    }
    if (r->life_in_cap * sizeof *r->life_in > SCRATCH_KEEP) {
        free(r->life_in);
        r->life_in = NULL;
        r->nlife_in = r->life_in_cap = 0;
        freed = 1;
    }
    if (r->items_cap * sizeof *r->items + r->seen_cap * sizeof *r->seen > SCRATCH_KEEP) {
        free(r->items);
        free(r->seen);
        r->items = NULL;
        r->seen = NULL;
        r->nitems = r->items_cap = r->seen_cap = 0;
        freed = 1;
    }
    freed |= r->parser.stack_cap * sizeof *r->parser.stack > SCRATCH_KEEP;
    json_parser_free(&r->parser); /* keeps nothing: the next parse starts a chunk */
#ifdef __GLIBC__
    if (freed)
        malloc_trim(0);
#endif
}

static void round_finish(struct repl *r)
{
    r->round_running = 0;
    scratch_trim(r);
    trace_span_end(r->round_span);
    r->round_span = NULL;
    struct waiter *w = r->waiters;
    r->waiters = NULL;
    while (w) {
        struct waiter *next = w->next;
        w->done(w->arg, 1);
        free(w);
        w = next;
    }
}

static void round_start(struct repl *r);

static void maybe_next_round(struct repl *r)
{
    if (!r->round_running && r->next_waiters)
        round_start(r);
}

static void peer_round_end(struct peer *p, enum peer_status st)
{
    struct repl *r = p->r;
    p->in_round = 0;
    p->last_status = st;
    double ms = clock_mono_ms() - p->round_start_ms;
    if (st == ST_SUCCESS) {
        metric_add(r->m_ok, 1);
        metric_observe(r->m_latency, ms / 1000.0);
        p->last_ok_ms = clock_mono_ms();
        r->last_sync_unix = clock_unix_s();
        p->last_ok_unix = r->last_sync_unix;
        if (p->failures)
            log_info("sync with %s works again after %d failed rounds", repl__peer_name(p),
                     p->failures);
        p->failures = 0;
    } else if (st == ST_PARTITION) {
        metric_add(r->m_part, 1);
    } else {
        metric_add(r->m_err, 1);
    }
    if (--r->round_left == 0 && !r->round_starting) {
        round_finish(r);
        maybe_next_round(r);
    }
}

static void peer_failed(struct peer *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void peer_failed(struct peer *p, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    /* Log the first failure and then about once a minute, not every round. */
    if (p->failures == 0 || p->failures % 12 == 0)
        log_error("sync with %s (%s) failed: %s", repl__peer_name(p), p->sync_url, msg);
    p->failures++;
    snprintf(p->last_error, sizeof p->last_error, "%s", msg);
    p->last_error_unix = clock_unix_s();
    p->probed = 0;
    p->pull_began_ms = 0;
    peer_round_end(p, ST_ERROR);
}

/* A partition switched on while a message was on the (simulated) wire drops it: nothing
 * crosses the cut after it is made, whichever way it was going. */
static void cut_in_flight(struct peer *p)
{
    snprintf(p->last_error, sizeof p->last_error, "%s",
             "this node was partitioned while the exchange was in flight: dropped");
    p->last_error_unix = clock_unix_s();
    p->dg_phase = DG_NONE;
    peer_round_end(p, ST_PARTITION);
}

/* An answer that is not a 200 JSON object this node may merge: the round ends for the peer
 * (partitioned or failed). @return 1 when it was such an answer, 0 to go on. */
static int answer_refused(struct peer *p, const struct client_result *res, const struct json *root)
{
    struct repl *r = p->r;
    if (res->status == 0) {
        peer_failed(p, "%s", res->error ? res->error : "no answer");
        return 1;
    }
    if (res->status == 503 && root) {
        const struct json *code = json_get(root, "error");
        if (code && code->type == JSON_STR && strcmp(code->u.s, "partitioned") == 0) {
            const struct json *d = json_get(root, "detail");
            snprintf(p->last_error, sizeof p->last_error, "the peer refused: %s",
                     d && d->type == JSON_STR ? d->u.s : "partitioned");
            p->last_error_unix = clock_unix_s();
            peer_round_end(p, ST_PARTITION);
            return 1;
        }
    }
    if (res->status != 200) {
        const struct json *d = root ? json_get(root, "detail") : NULL;
        peer_failed(p, "HTTP %d%s%s", res->status, d && d->type == JSON_STR ? ": " : "",
                    d && d->type == JSON_STR ? d->u.s : "");
        return 1;
    }
    if (r->hooks.before_merge && r->hooks.before_merge(r->hooks.arg, res->len) < 0) {
        peer_failed(p, "this node cannot log what the answer would change (its disk is full "
                       "or failing): nothing merged");
        return 1;
    }
    if (!root || root->type != JSON_OBJ) {
        peer_failed(p, "the answer is not a JSON object%s%s", root ? "" : ": ",
                    root ? "" : r->parser.err);
        return 1;
    }
    return 0;
}

/* What an answer says of the peer: its node id, its format, its features. */
static enum peer_format learn_peer(struct peer *p, const struct json *root)
{
    const struct json *nid = json_get(root, "node_id");
    const struct json *inc = json_get(root, "incarnation");
    if (nid && nid->type == JSON_STR && gstore_counter_name_valid(nid->u.s, nid->len))
        snprintf(p->node_id, sizeof p->node_id, "%s", nid->u.s);
    /* counterd always says its incarnation; the original lab's region never does. */
    enum peer_format fmt = inc && inc->type == JSON_STR ? FMT_COUNTERD : FMT_ORIGINAL;
    if (fmt != p->format && fmt == FMT_ORIGINAL)
        log_warn("peer %s (%s) speaks the original lab's /sync: it gets each node's "
                 "incarnations summed under the node id, increments only",
                 repl__peer_name(p), p->url);
    p->format = fmt;
    p->probed = 1;
    const struct json *feat = json_get(root, "features");
    p->folds = p->digests = p->compacts = p->lifes = 0;
    for (uint32_t i = 0; feat && feat->type == JSON_ARR && i < feat->len; i++) {
        if (feat->u.items[i].type != JSON_STR)
            continue;
        p->folds |= strcmp(feat->u.items[i].u.s, "folded") == 0;
        p->digests |= strcmp(feat->u.items[i].u.s, "digest") == 0;
        p->compacts |= strcmp(feat->u.items[i].u.s, "compact") == 0;
        p->lifes |= strcmp(feat->u.items[i].u.s, "life") == 0;
    }
    return fmt;
}

/* Merges the answer's state and token-set elements. @return 0, or -1 when the round
 * failed for the peer (it cannot be merged). */
static int merge_answer(struct peer *p, const struct json *root, struct trace_span *sp)
{
    struct repl *r = p->r;
    struct merge_error e;
    r->merge_peer = repl__peer_name(p);
    int changed = repl__merge_body(r, root, repl__peer_origin(p), &e);
    r->merge_peer = NULL;
    if (changed < 0) {
        peer_failed(p, "cannot merge the answer: %s", e.detail);
        return -1;
    }
    metric_add(r->m_conflicts, changed);
    if (r->nrejects)
        p->pull_skipped = 1;
    trace_span_attr_int(sp, "sync.counters_received", (int64_t)r->nitems);
    const struct json *refused = json_get(root, "rejected_count");
    if (refused && refused->type == JSON_INT && refused->u.i > 0 &&
        repl__first_time(r, repl__peer_name(p), "refused"))
        log_warn("peer %s skipped %" PRId64 " entries of our push as entries it cannot hold "
                 "(its answer lists them; logged once per peer)",
                 repl__peer_name(p), refused->u.i);
    repl__apply_tokens(r, root, p->node_id[0] ? p->node_id : p->url);
    if (p->format == FMT_COUNTERD && r->hooks.take_ext)
        r->hooks.take_ext(r->hooks.arg, root); /* the namespace register, for one */
    return 0;
}

/* The push is on the peer now: what it acknowledged moves on. */
static void push_acknowledged(struct peer *p)
{
    if (p->full_push) {
        p->full_next = p->sent_next;
        if (p->sent_full_done) {
            p->full_push = 0;
            p->acked = p->full_s0;
            p->tok_acked = p->full_s0;
        }
    } else {
        if (p->sent_acked > p->acked)
            p->acked = p->sent_acked;
        if (!p->push_more)
            p->tok_acked = p->acked; /* the series of pages is complete */
    }
}

/* The answer's incarnation: a new one means the peer restarted and may have lost what it
 * acknowledged, so full state is pushed again. */
static void note_incarnation(struct peer *p, const struct json *inc)
{
    if (!inc || inc->type != JSON_STR || inc->len >= sizeof p->incarnation)
        return;
    if (p->incarnation[0] && strcmp(p->incarnation, inc->u.s) != 0) {
        log_info("peer %s restarted (incarnation %s -> %s): pushing full state", repl__peer_name(p),
                 p->incarnation, inc->u.s);
        p->full_push = 1;
        p->full_next = 0;
        p->acked = 0;
        p->tok_acked = 0;
    }
    snprintf(p->incarnation, sizeof p->incarnation, "%s", inc->u.s);
}

/* Keeps the answer's cursor for the next pull and closes a complete pull of the peer's
 * whole state (the fold gate). @return 1 when the peer has more to send. */
static int follow_cursor(struct peer *p, const struct json *root, enum peer_format fmt)
{
    const struct json *cursor = json_get(root, "cursor");
    const struct json *more = json_get(root, "more");
    int pull_more = 0;
    if (cursor && cursor->type == JSON_STR && cursor->len < sizeof p->cursor) {
        snprintf(p->cursor, sizeof p->cursor, "%s", cursor->u.s);
        pull_more = more && more->type == JSON_TRUE;
    } else {
        p->cursor[0] = '\0'; /* a peer without cursors (the lab's) answers full state */
    }
    if (!pull_more && p->pull_began_ms > 0) {
        if (!p->pull_skipped && fmt == FMT_COUNTERD)
            p->pull_full_ms = p->pull_began_ms;
        p->pull_was_skipped = p->pull_skipped;
        p->pull_began_ms = 0;
    }
    return pull_more;
}

/* Another exchange with p in this round, unless the round has run away. */
static void exchange_again(struct peer *p)
{
    if (++p->exchanges < MAX_EXCHANGES) {
        exchange_start(p);
        return;
    }
    peer_failed(p, "the round stopped after %d exchanges with more to exchange", MAX_EXCHANGES);
}

/* The answer to a digest message: merged, then the next step of the descent or repair. */
static void digest_done(struct peer *p, const struct json *root, struct trace_span *sp)
{
    if (merge_answer(p, root, sp) < 0)
        return;
    note_incarnation(p, json_get(root, "incarnation"));
    if (p->full_push) { /* it restarted: full state, both ways, instead */
        p->dg_phase = DG_NONE;
        p->cursor[0] = '\0';
        exchange_again(p);
        return;
    }
    const char *why = NULL;
    int more = repl__digest_answer(p, root, &why);
    if (more < 0) {
        p->dg_phase = DG_NONE;
        peer_failed(p, "digest exchange: %s", why);
        return;
    }
    if (more) {
        exchange_again(p);
        return;
    }
    trace_span_attr_int(sp, "sync.counters_repaired", (int64_t)p->dg_repaired);
    peer_round_end(p, ST_SUCCESS);
}

static void exchange_done(struct peer *p, const struct client_result *res, struct trace_span *sp)
{
    struct repl *r = p->r;
    metric_add(r->m_bytes_recv, (double)res->len);
    metric_add(p->m_bytes[p->kind][1], (double)res->len);
    const struct json *root = res->status ? repl__parse(r, res->body, res->len) : NULL;
    if (res->status == 400 && p->sent_compact) {
        /* A node that does not read compact bodies (another version now at that address):
         * the same exchange again in JSON, and its next answer says what it reads. */
        log_warn("peer %s refused a compact /sync body (HTTP 400): sending JSON to it",
                 repl__peer_name(p));
        p->compacts = 0;
        exchange_again(p);
        return;
    }
    if (p->r->partitioned) {
        trace_span_error(sp, "partitioned");
        cut_in_flight(p);
        return;
    }
    if (answer_refused(p, res, root)) {
        p->dg_phase = DG_NONE;
        return;
    }
    enum peer_format fmt = learn_peer(p, root);
    if (p->dg_phase != DG_NONE) {
        digest_done(p, root, sp);
        return;
    }
    if (merge_answer(p, root, sp) < 0)
        return;
    push_acknowledged(p);
    note_incarnation(p, json_get(root, "incarnation"));
    int pull_more = follow_cursor(p, root, fmt);
    if (p->push_more || p->full_push || pull_more) {
        exchange_again(p);
        return;
    }
    if (p->digest_due && p->digests && fmt == FMT_COUNTERD) {
        /* The deltas are through: what still differs is what they missed. */
        p->digest_due = 0;
        repl__digest_begin(p);
        exchange_again(p);
        return;
    }
    peer_round_end(p, ST_SUCCESS);
}

/* The exchange's span ends here, after what the answer did has been recorded on it. */
static void on_exchange_done(const struct client_result *res, void *arg)
{
    struct peer *p = arg;
    struct trace_span *sp = p->span;
    p->call = NULL;
    p->span = NULL;
    trace_span_http_status(sp, res->status, res->error);
    exchange_done(p, res, sp);
    /* Named after the exchange: a first answer is what tells us the peer's node id. */
    trace_span_attr_cstr(sp, "sync.peer", repl__peer_name(p));
    trace_span_end(sp);
}

/* Ends the exchange's span with an error, before any call was made. */
static void span_failed(struct peer *p, const char *why)
{
    trace_span_attr_cstr(p->span, "sync.peer", repl__peer_name(p));
    trace_span_error(p->span, why);
    trace_span_end(p->span);
    p->span = NULL;
}

/* Builds this exchange's push into r->out: nothing yet for a peer of unknown format, a
 * page of the full walk, or a page of the delta since what the peer acknowledged. */
static void build_push(struct peer *p)
{
    struct repl *r = p->r;
    if (p->dg_phase != DG_NONE) {
        repl__digest_build(p);
        return;
    }
    repl__page_begin(r);
    p->push_more = 0;
    p->kind = p->full_push || p->cursor[0] != 'D' ? KIND_FULL : KIND_DELTA;
    r->original_out = p->format == FMT_ORIGINAL;
    r->compact_out = p->compacts && !r->compact_off && p->probed && !r->original_out;
    r->life_out = r->compact_out && p->lifes; /* a peer before "life" reads only "CSB1" */
    if (p->cursor[0] == '\0') {               /* the answer starts the peer's full state */
        p->pull_began_ms = clock_mono_ms();
        p->pull_skipped = 0;
    }
    if (!p->probed) {
        /* First contact, or back after a failure (it may be another program now): push
         * nothing until the answer says which format the peer speaks (an original-format
         * peer would keep our replica ids as node ids for ever). */
        p->push_more = 1;
        p->sent_next = p->full_next;
        p->sent_full_done = 0;
        p->sent_acked = p->acked;
    } else if (p->full_push) {
        if (p->full_next == 0)
            p->full_s0 = gstore_seq(r->store); /* a walk starts: later changes go by delta */
        r->tok_after = 0;
        uint32_t next = p->full_next;
        repl__page_full(r, &next);
        p->sent_next = next;
        p->sent_full_done = next >= gstore_count(r->store);
        p->push_more = !p->sent_full_done;
    } else {
        r->tok_after = p->tok_acked;
        p->push_more = repl__page_delta(r, p->acked, repl__peer_origin(p), &p->sent_acked);
    }
    repl__decs_unsent(r, repl__peer_name(p), r->page_decs_unsent);
    repl__body_finish(r, p->cursor, NULL, 0);
    r->original_out = 0;
}

static void exchange_send(struct peer *p)
{
    struct repl *r = p->r;
    if (r->hooks.before_send && r->hooks.before_send(r->hooks.arg) < 0) {
        span_failed(p, "the log cannot be written");
        peer_failed(p, "this node's log cannot be written: nothing is sent that a crash "
                       "could take back");
        return;
    }
    build_push(p);
    const char *body = r->out.data;
    size_t body_len = r->out.len;
    p->sent_compact = r->compact_out;
    if (r->compact_out) {
        repl__compact_wrap(r);
        body = r->cout.data;
        body_len = r->cout.len;
        r->compact_out = 0;
        r->life_out = 0;
    }
    const char *headers[4] = {r->auth_header, NULL, NULL, NULL};
    char tp[TRACE_HEADER_LEN + 1];
    if (p->span) {
        trace_span_attr_int(p->span, "sync.counters_sent", r->page_counters);
        trace_span_attr_int(p->span, "sync.bytes_sent", (int64_t)r->out.len);
        trace_span_attr_bool(p->span, "sync.full", p->full_push);
        memcpy(tp, "traceparent: ", 13);
        trace_span_traceparent(p->span, tp + 13);
        headers[r->auth_header ? 1 : 0] = tp;
    }
    if (body != r->out.data)
        headers[(r->auth_header ? 1 : 0) + (p->span ? 1 : 0)] =
            "Content-Type: application/octet-stream";
    struct client_call_opts o = {.method = "POST",
                                 .url = p->sync_url,
                                 .body = body,
                                 .body_len = body_len,
                                 .headers = headers,
                                 .timeout_ms = r->timeout_ms};
    metric_add(r->m_bytes_sent, (double)body_len);
    metric_add(p->m_bytes[p->kind][0], (double)body_len);
    p->sent_bytes = body_len;
    p->call = client_request(r->client, &o, on_exchange_done, p);
    if (!p->call) {
        span_failed(p, "cannot start the HTTP call");
        peer_failed(p, "cannot start the HTTP call");
    }
}

static void on_delay_out(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct peer *p = arg;
    if (!p->r->partitioned) {
        exchange_send(p);
        return;
    }
    span_failed(p, "partitioned");
    cut_in_flight(p);
}

static void exchange_start(struct peer *p)
{
    struct repl *r = p->r;
    int delay_ms;
    int a = repl__decide(r, "out", r->node_id, repl__peer_name(p), &delay_ms);
    if (trace_enabled()) {
        /* The span covers the policy's delay too: WAN latency shows in the trace. */
        p->span = trace_span_child(r->round_span, "POST /sync", TRACE_CLIENT);
        trace_span_attr_cstr(p->span, "http.method", "POST");
        trace_span_attr_cstr(p->span, "http.url", p->sync_url);
        if (a == REPL_DELAY)
            trace_span_attr_int(p->span, "sync.delay_ms", delay_ms);
    }
    if (a == REPL_DROP) {
        snprintf(p->last_error, sizeof p->last_error, "%s",
                 r->partitioned ? "this node is partitioned" : "dropped by the faults policy");
        p->last_error_unix = clock_unix_s();
        span_failed(p, r->partitioned ? "partitioned" : "dropped by the faults policy");
        peer_round_end(p, ST_PARTITION);
        return;
    }
    if (a == REPL_DELAY) {
        struct timeval tv = {delay_ms / 1000, (delay_ms % 1000) * 1000};
        evtimer_add(p->delay_ev, &tv);
        return;
    }
    exchange_send(p);
}

static void round_start(struct repl *r)
{
    r->round_running = 1;
    r->waiters = r->next_waiters;
    r->next_waiters = NULL;
    r->round_left = r->npeers;
    r->round_starting = 1;
    if (trace_enabled()) {
        /* A round asked for by a traced request (force-sync) belongs to its trace. */
        const struct trace_ctx *parent = NULL;
        for (struct waiter *w = r->waiters; w && !parent; w = w->next)
            if (w->has_parent)
                parent = &w->parent;
        r->round_span = trace_span_start("sync round", TRACE_INTERNAL, parent);
        trace_span_attr_cstr(r->round_span, "node_id", r->node_id);
        trace_span_attr_cstr(r->round_span, "region", r->region);
        trace_span_attr_int(r->round_span, "sync.peers", r->npeers);
        trace_span_attr_cstr(r->round_span, "sync.trigger", r->waiters ? "request" : "interval");
    }
    for (int i = 0; i < r->npeers; i++) {
        struct peer *p = &r->peers[i];
        p->in_round = 1;
        p->exchanges = 0;
        p->round_start_ms = clock_mono_ms();
        if (p->dg_phase != DG_NONE)
            p->digest_due = 1; /* the last one did not finish: again, this round */
        p->dg_phase = DG_NONE;
        p->dg_repaired = 0;
        /* Anti-entropy: a digest exchange with a peer that speaks it (every full_every
         * rounds, after a partition, and in a round someone asked for); full state
         * otherwise. */
        int periodic = ++p->rounds_since_full >= r->full_every;
        if (p->digests && p->format == FMT_COUNTERD) {
            if (periodic || r->waiters) {
                p->rounds_since_full = 0;
                p->digest_due = 1;
            }
        } else if (periodic) {
            p->rounds_since_full = 0;
            p->full_push = 1;
            p->full_next = 0;
            p->cursor[0] = '\0';
        }
        if (r->fold_after > 0 && p->pull_full_ms < r->fold_after &&
            p->pull_began_ms < r->fold_after)
            p->cursor[0] = '\0'; /* the fold gate wants its full state, pulled from now */
        exchange_start(p);
    }
    r->round_starting = 0;
    if (r->round_left == 0) {
        round_finish(r);
        maybe_next_round(r);
    }
}

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct repl *r = arg;
    if (!r->round_running)
        round_start(r);
}

void repl_sync_now(struct repl *r, void (*done)(void *arg, int completed), void *arg)
{
    repl_sync_now_traced(r, NULL, done, arg);
}

void repl_sync_now_traced(struct repl *r, const struct trace_span *parent,
                          void (*done)(void *arg, int completed), void *arg)
{
    struct waiter *w = xcalloc(1, sizeof *w);
    w->done = done;
    w->arg = arg;
    if (parent) {
        w->parent = *trace_span_ctx(parent);
        w->has_parent = 1;
    }
    w->next = r->next_waiters;
    r->next_waiters = w;
    maybe_next_round(r);
}

/* ---------------------------------------------------------------- set-up */

static double lag_ms(void *arg)
{
    struct repl *r = arg;
    double now = clock_mono_ms(), worst = 0;
    for (int i = 0; i < r->npeers; i++) {
        double since = r->peers[i].last_ok_ms ? r->peers[i].last_ok_ms : r->start_ms;
        if (now - since > worst)
            worst = now - since;
    }
    return worst;
}

static double peer_last_ok(void *arg)
{
    return ((struct peer *)arg)->last_ok_unix;
}
static double peer_failures(void *arg)
{
    return ((struct peer *)arg)->failures;
}
static double peer_original(void *arg)
{
    return ((struct peer *)arg)->format == FMT_ORIGINAL;
}

/* The exchange families: outcomes, conflicts, latency, lag, bytes. */
static void repl_metrics_sync(struct repl *r, struct metrics *reg)
{
    const char *lv[3] = {r->service, r->region, "success"};
    struct metric *ops =
        metrics_add(reg, METRIC_COUNTER, "counter_sync_operations_total",
                    "Sync exchanges with peers by outcome", "service,region,status", NULL, 0);
    r->m_ok = metric_series(ops, lv);
    lv[2] = "error";
    r->m_err = metric_series(ops, lv);
    lv[2] = "partition";
    r->m_part = metric_series(ops, lv);
    r->m_conflicts = metric_series(
        metrics_add(reg, METRIC_COUNTER, "counter_conflicts_resolved_total",
                    "Replica entries a merge changed (the other side's value was higher)",
                    "service,region", NULL, 0),
        lv);
    r->m_latency =
        metric_series(metrics_add(reg, METRIC_HISTOGRAM, "counter_sync_latency_seconds",
                                  "Time of a complete sync round with one peer", "service,region",
                                  metrics_latency_buckets, metrics_latency_nbuckets),
                      lv);
    r->m_lag = metric_series(metrics_add(reg, METRIC_GAUGE, "counter_sync_lag_ms",
                                         "Milliseconds since the least recently synced peer "
                                         "was last synced",
                                         "service,region", NULL, 0),
                             lv);
    metric_set_fn(r->m_lag, lag_ms, r);
    struct metric *bytes =
        metrics_add(reg, METRIC_COUNTER, "counterd_sync_bytes_total",
                    "Bytes of /sync bodies sent and received", "direction", NULL, 0);
    const char *d1[1] = {"sent"};
    r->m_bytes_sent = metric_series(bytes, d1);
    d1[0] = "received";
    r->m_bytes_recv = metric_series(bytes, d1);
}

/* The families of what peers send and of each peer, and repl_metrics_sync's. */
static void repl_metrics(struct repl *r, struct metrics *reg)
{
    repl_metrics_sync(r, reg);
    r->m_rejected = metrics_add(reg, METRIC_COUNTER, "counterd_sync_rejected_entries_total",
                                "Entries of /sync messages skipped because this node cannot hold "
                                "them, by sender and reason",
                                "peer,reason", NULL, 0);
    metric_limit(r->m_rejected, 256, 0);
    r->m_decs = metrics_add(reg, METRIC_COUNTER, "counterd_sync_decrements_unsent_total",
                            "Counters sent to an original-format peer without their decrements",
                            "peer", NULL, 0);
    metric_limit(r->m_decs, 64, 0);
    struct metric *last_ok =
        metrics_add(reg, METRIC_GAUGE, "counterd_sync_peer_last_success_timestamp_seconds",
                    "Unix time of the last successful sync round with each peer (0: none yet)",
                    "peer", NULL, 0);
    struct metric *fails =
        metrics_add(reg, METRIC_GAUGE, "counterd_sync_peer_failed_rounds",
                    "Consecutive failed sync rounds with each peer", "peer", NULL, 0);
    struct metric *orig =
        metrics_add(reg, METRIC_GAUGE, "counterd_sync_peer_original_format",
                    "1 when the peer speaks the original lab's /sync", "peer", NULL, 0);
    for (int i = 0; i < r->npeers; i++) {
        const char *pv[1] = {r->peers[i].url};
        metric_set_fn(metric_series(last_ok, pv), peer_last_ok, &r->peers[i]);
        metric_set_fn(metric_series(fails, pv), peer_failures, &r->peers[i]);
        metric_set_fn(metric_series(orig, pv), peer_original, &r->peers[i]);
    }
    struct metric *repaired = metrics_add(
        reg, METRIC_COUNTER, "counterd_sync_repaired_counters_total",
        "Counters a digest exchange with each peer repaired here (they differed)", "peer", NULL, 0);
    r->m_peer_bytes = metrics_add(reg, METRIC_COUNTER, "counterd_sync_peer_bytes_total",
                                  "Bytes of /sync bodies exchanged with each peer, by what they "
                                  "carried (delta, full, digest, repair) and direction",
                                  "peer,kind,direction", NULL, 0);
    static const char *const kinds[KIND_N] = {"delta", "full", "digest", "repair"};
    for (int i = 0; i < r->npeers; i++) {
        struct peer *p = &r->peers[i];
        const char *pv[1] = {p->url};
        p->m_repaired = metric_series(repaired, pv);
        for (int k = 0; k < KIND_N; k++) {
            const char *lv[3] = {p->url, kinds[k], "sent"};
            p->m_bytes[k][0] = metric_series(r->m_peer_bytes, lv);
            lv[2] = "received";
            p->m_bytes[k][1] = metric_series(r->m_peer_bytes, lv);
        }
    }
    const char *why[1] = {"regional"};
    r->m_ignored = metric_series(
        metrics_add(reg, METRIC_COUNTER, "counterd_sync_ignored_total",
                    "Counters of /sync messages left out because this node does not replicate "
                    "them (a regional namespace's), by reason",
                    "reason", NULL, 0),
        why);
    r->m_tok_rejected = metric_only(
        metrics_add(reg, METRIC_COUNTER, "counterd_sync_rejected_tokens_total",
                    "Token-set elements of /sync bodies skipped as malformed", NULL, NULL, 0));
}

struct repl *repl_new(struct event_base *base, struct client *client, struct gstore *store,
                      struct metrics *reg, const struct repl_config *cfg,
                      const struct repl_hooks *hooks)
{
    struct repl *r = xcalloc(1, sizeof *r);
    r->base = base;
    r->client = client;
    r->store = store;
    if (hooks)
        r->hooks = *hooks;
    r->node_id = xstrdup(cfg->node_id);
    r->region = xstrdup(cfg->region);
    r->service = xstrdup(cfg->service ? cfg->service : "counter");
    r->auth_header = cfg->auth_header ? xstrdup(cfg->auth_header) : NULL;
    r->tokset = cfg->tokset;
    r->self_rep = cfg->replica_id;
    snprintf(r->incarnation, sizeof r->incarnation, "%016" PRIx64, hash_random_u64());
    r->interval_ms = cfg->interval_ms > 0 ? cfg->interval_ms : 5000;
    r->timeout_ms = cfg->timeout_ms > 0 ? cfg->timeout_ms : 3000;
    r->full_every = cfg->full_every > 0 ? cfg->full_every : 12;
    r->page_bytes = cfg->page_bytes ? cfg->page_bytes : (1u << 20);
    const char *compact = getenv("COUNTERD_SYNC_COMPACT");
    r->compact_off = compact && strcmp(compact, "0") == 0;
    r->start_ms = clock_mono_ms();
    json_parser_init(&r->parser);
    r->digest = digest_new();
    if (r->hooks.replicated) /* what a node does not replicate is in no fingerprint */
        digest_set_keep(r->digest, r->hooks.replicated, r->hooks.arg);

    r->npeers = cfg->npeers;
    r->peers = xcalloc((size_t)(r->npeers ? r->npeers : 1), sizeof *r->peers);
    for (int i = 0; i < r->npeers; i++) {
        struct peer *p = &r->peers[i];
        p->r = r;
        size_t n = strlen(cfg->peers[i]);
        while (n && cfg->peers[i][n - 1] == '/')
            n--;
        p->url = xstrndup(cfg->peers[i], n);
        p->sync_url = xmalloc(n + 6);
        snprintf(p->sync_url, n + 6, "%s/sync", p->url);
        p->full_push = 1; /* first contact: full state both ways */
        p->delay_ev = evtimer_new(base, on_delay_out, p);
    }

    repl_metrics(r, reg);

    r->tick = event_new(base, -1, EV_PERSIST, on_tick, r);
    struct timeval tv = {r->interval_ms / 1000, (r->interval_ms % 1000) * 1000};
    if (r->npeers)
        event_add(r->tick, &tv);
    return r;
}

void repl_free(struct repl *r)
{
    if (!r)
        return;
    event_free(r->tick);
    for (int i = 0; i < r->npeers; i++) {
        struct peer *p = &r->peers[i];
        if (p->call)
            client_cancel(p->call);
        if (p->id_call)
            client_cancel(p->id_call);
        trace_span_error(p->span, "stopped");
        trace_span_end(p->span);
        event_free(p->delay_ev);
        free(p->dg_groups);
        free(p->dg_leaves);
        free(p->url);
        free(p->sync_url);
    }
    while (r->delayed)
        repl__delayed_free(r->delayed);
    struct waiter *lists[2] = {r->waiters, r->next_waiters};
    for (int i = 0; i < 2; i++)
        while (lists[i]) {
            struct waiter *next = lists[i]->next;
            lists[i]->done(lists[i]->arg, 0);
            free(lists[i]);
            lists[i] = next;
        }
    trace_span_end(r->round_span);
    free(r->peers);
    json_parser_free(&r->parser);
    free(r->items);
    free(r->raw);
    free(r->raw_item);
    free(r->entries);
    free(r->seen);
    buf_free(&r->out);
    buf_free(&r->counts);
    buf_free(&r->decs);
    buf_free(&r->toks);
    buf_free(&r->folds);
    free(r->fold_in);
    free(r->life_in);
    buf_free(&r->lfloors);
    buf_free(&r->ldfloors);
    buf_free(&r->lflags);
    free(r->tokel);
    digest_free(r->digest);
    buf_free(&r->dg);
    free(r->dg_ids);
    buf_free(&r->cbody);
    buf_free(&r->creps);
    buf_free(&r->cout);
    buf_free(&r->toks_c);
    free(r->cmap);
    free(r->ctab);
    free(r->ctok);
    free(r->node_id);
    free(r->region);
    free(r->service);
    free(r->auth_header);
    free(r);
}

void repl_set_partition(struct repl *r, int on)
{
    if (r->partitioned != !!on)
        log_info("network partition %s", on ? "enabled" : "disabled");
    r->partitioned = !!on;
    if (!on) {
        /* Whatever was pulled before may be stale on the other side: start afresh. */
        for (int i = 0; i < r->npeers; i++)
            r->peers[i].rounds_since_full = r->full_every;
    }
}

int repl_partitioned(const struct repl *r)
{
    return r->partitioned;
}
double repl_last_sync_time(const struct repl *r)
{
    return r->last_sync_unix;
}
uint64_t repl_tokens_acked(const struct repl *r)
{
    uint64_t min = gstore_seq(r->store);
    for (int i = 0; i < r->npeers; i++)
        if (r->peers[i].tok_acked < min)
            min = r->peers[i].tok_acked;
    return min;
}

int repl_peer_ids(const struct repl *r, const char **ids, int max)
{
    int known = 0;
    for (int i = 0; i < r->npeers && i < max; i++) {
        ids[i] = r->peers[i].node_id[0] ? r->peers[i].node_id : NULL;
        known += ids[i] != NULL;
    }
    return known;
}

static void on_peer_id(const struct client_result *res, void *arg)
{
    struct peer *p = arg;
    p->id_call = NULL;
    if (res->status != 200 || p->node_id[0])
        return;
    const struct json *root = json_parse(&p->r->parser, res->body, res->len);
    const struct json *nid = root ? json_get(root, "node_id") : NULL;
    if (nid && nid->type == JSON_STR && gstore_counter_name_valid(nid->u.s, nid->len))
        snprintf(p->node_id, sizeof p->node_id, "%s", nid->u.s);
}

void repl_learn_peer_ids(struct repl *r)
{
    double now = clock_mono_ms();
    for (int i = 0; i < r->npeers; i++) {
        struct peer *p = &r->peers[i];
        if (p->node_id[0] || p->id_call || now < p->id_after)
            continue;
        p->id_after = now + 200;
        char url[600];
        snprintf(url, sizeof url, "%s/health", p->url);
        struct client_call_opts o = {.method = "GET", .url = url, .timeout_ms = 1000};
        p->id_call = client_request(r->client, &o, on_peer_id, p);
    }
}

void repl_fold_want(struct repl *r, double after_ms)
{
    r->fold_after = after_ms;
}

int repl_fold_ready(const struct repl *r, double after_ms, char *why, size_t n)
{
    for (int i = 0; i < r->npeers; i++) {
        const struct peer *p = &r->peers[i];
        if (p->format == FMT_ORIGINAL)
            snprintf(why, n, "peer %s speaks the original lab's /sync", repl__peer_name(p));
        else if (p->probed && !p->folds)
            snprintf(why, n, "peer %s does not understand folded replicas (an older version)",
                     repl__peer_name(p));
        else if (p->pull_full_ms < after_ms && p->pull_was_skipped)
            snprintf(why, n,
                     "the full state of peer %s has entries this node skips "
                     "(counterd_sync_rejected_entries_total): its copy of a retired "
                     "id might not be the highest",
                     repl__peer_name(p));
        else if (p->pull_full_ms < after_ms)
            snprintf(why, n, "waiting for a full pull from peer %s%s%s", repl__peer_name(p),
                     p->last_error[0] ? ": " : "", p->last_error);
        else
            continue;
        return 0;
    }
    return 1;
}

int repl_peers_know_life(const struct repl *r)
{
    for (int i = 0; i < r->npeers; i++)
        if (r->peers[i].format != FMT_COUNTERD || !r->peers[i].lifes)
            return 0;
    return 1;
}

void repl_forget(struct repl *r, uint32_t id)
{
    digest_forget(r->digest, id);
}

const char *repl_incarnation(const struct repl *r)
{
    return r->incarnation;
}

int repl_peer_count(const struct repl *r)
{
    return r->npeers;
}

void repl_peer_info(const struct repl *r, int i, struct repl_peer_info *out)
{
    static const char *const names[] = {"never", "ok", "failed", "partitioned"};
    const struct peer *p = &r->peers[i];
    out->url = p->url;
    out->node_id = p->node_id[0] ? p->node_id : NULL;
    out->status = names[p->last_status];
    out->last_error = p->last_error[0] ? p->last_error : NULL;
    out->last_ok = p->last_ok_unix;
    out->last_error_time = p->last_error_unix;
    out->failed_rounds = p->failures;
    out->acked = p->tok_acked;
    out->format = p->format == FMT_ORIGINAL   ? "original"
                  : p->format == FMT_COUNTERD ? "counterd"
                                              : NULL;
}
