/*
 * replication.c - push-pull anti-entropy over HTTP /sync (see replication.h).
 *
 * Wire format (API.md, "POST /sync"), one JSON object each way:
 *   {"node_id": "...", "incarnation": "<hex>", "timestamp": <unix s>,
 *    "counts": {"<counter>": {"<replica>": <increments>, ...}, ...},
 *    "decrements": {...same shape, only when some exist...},
 *    "tokens": {"<counter>": {"<token>": {"amount": <n>, "settled": <bool>}, ...}, ...}
 *                                   (token-set elements of the counters sent, store/tokset.h)
 *    "folded": {"<counter>": ["<replica>", ...], ...}
 *                                   (the folded replicas of the counters sent, gstore_fold)
 *    "features": ["folded"]         (this node understands "folded")
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
 * Entries a message carries that this node cannot hold (a name outside the charset, a
 * negative or non-integer count, one beyond int64, a counter with too many replicas) are
 * skipped, counted per peer and reason, logged once per peer and reason, and listed in the
 * answer ("rejected", the first REJECT_LIST_MAX); everything else is merged.
 *
 * Delivery guarantee: a push is acknowledged (peer->acked advances) only when the peer
 * answered 200, so a lost message is simply sent again next round. The store's change
 * list makes "counters changed after seq" cost the number of changes.
 */
#include "replication.h"

#include <event2/event.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../base/buf.h"
#include "../base/clock.h"
#include "../base/hash.h"
#include "../base/json.h"
#include "../base/log.h"
#include "../base/mem.h"
#include "../net/client.h"
#include "../obs/metrics.h"
#include "../obs/trace.h"
#include "../store/gcounter.h"
#include "../store/tokset.h"

#define MAX_EXCHANGES 100000 /* per peer per round: a runaway guard, not a tuning knob */

enum peer_status { ST_NONE, ST_SUCCESS, ST_ERROR, ST_PARTITION };
enum peer_format { FMT_UNKNOWN, FMT_COUNTERD, FMT_ORIGINAL };

#define REJECT_LIST_MAX 20    /* rejected entries listed in an answer */
#define REJECT_LOGGED_MAX 256 /* (peer, reason) pairs remembered as logged */

struct repl;

struct peer {
    struct repl *r;
    char *url, *sync_url;
    char node_id[GSTORE_REPLICA_NAME_MAX + 1]; /* learned from its answers */
    char incarnation[40];
    char cursor[128]; /* the peer's cursor for our next pull; "" = full state */
    uint64_t acked;   /* our changes up to this seq are on the peer */
    int full_push;    /* push full state (a walk by id) instead of a delta */
    uint32_t full_next;
    uint64_t full_s0;
    int rounds_since_full;
    /* The exchange in flight. */
    struct http_call *call;
    struct event *delay_ev;
    uint64_t sent_acked; /* acked value once this push is acknowledged */
    uint32_t sent_next;  /* full walk position once acknowledged */
    int sent_full_done, push_more;
    size_t sent_bytes;
    int in_round, exchanges;
    double round_start_ms, last_ok_ms;
    int failures;
    uint64_t tok_acked;        /* token-set elements up to this seq are on the peer */
    struct http_call *id_call; /* GET /health for its node id */
    double id_after;
    struct trace_span *span; /* the exchange's client span, when tracing */
    /* What the status views show. */
    enum peer_status last_status; /* of the last finished round */
    char last_error[512];         /* the last failure, or why it was partitioned */
    double last_ok_unix, last_error_unix;
    enum peer_format format;
    int probed; /* its format is known from an answer since it last failed */
    /* The fold gate: pulls of the peer's full state (monotonic ms they began at). */
    double pull_began_ms; /* a pull from cursor "" in progress; 0: none */
    double pull_full_ms;  /* the last one completed with nothing skipped; 0: none */
    int pull_skipped;     /* the one in progress skipped entries */
    int pull_was_skipped; /* the last one completed skipped entries (it does not count) */
    int folds;            /* its answers say it understands "folded" */
};

/* One entry a message carried that this node did not take. */
struct reject {
    char counter[64], node[64];
    const char *reason;
};

struct waiter {
    void (*done)(void *arg, int completed);
    void *arg;
    struct trace_ctx parent; /* the request that asked for the round, when traced */
    int has_parent;
    struct waiter *next;
};

/* A /sync received while the faults policy delays it. */
struct delayed_in {
    struct repl *r;
    struct http_request *req;
    struct buf body;
    struct event *ev;
    struct delayed_in *prev, *next;
};

/* One counter of an incoming body: its entries are entries[first .. first+n). */
struct in_item {
    const char *name;
    uint32_t len, first, n;
    uint32_t id;
    uint8_t in_counts, in_decs;
    uint32_t ffirst, nf; /* its folded replicas: fold_in[ffirst .. ffirst+nf) */
    const char *fbad;    /* why its folded list cannot be taken (the counter is skipped) */
    uint8_t partial;     /* some of its entries were skipped */
};

struct repl {
    struct event_base *base;
    struct http_client *client;
    struct gstore *store;
    struct repl_hooks hooks;
    char *node_id, *region, *service;
    char *auth_header;
    char incarnation[17];
    int interval_ms, timeout_ms, full_every;
    size_t page_bytes;
    struct peer *peers;
    int npeers;
    int partitioned;
    double last_sync_unix, start_ms;
    struct event *tick;
    /* Rounds. */
    int round_running, round_left, round_starting;
    struct waiter *waiters, *next_waiters;
    struct delayed_in *delayed;
    /* Scratch for parsing and merging bodies. */
    struct json_parser parser;
    struct in_item *items;
    size_t nitems, items_cap;
    struct gentry *raw, *entries; /* as read, and grouped by item */
    uint32_t *raw_item;
    size_t nraw, raw_cap;
    uint32_t *seen;
    size_t seen_cap;
    struct buf out, counts, decs, toks, folds;
    double fold_after;    /* pull full state from peers not pulled since; 0: not wanted */
    const char *self_rep; /* this node's replica id: no peer may fold it */
    int *fold_in;         /* the folded replicas an incoming body names, by item */
    size_t nfold_in, fold_in_cap;
    int page_counters;    /* counters in the page being built */
    int page_decs_unsent; /* of which with decrements an original-format peer cannot take */
    uint64_t tok_after;   /* the page carries token-set elements changed after this seq */
    const struct tokset *tokset;
    struct repl_token *tokel;
    size_t tokel_cap;
    int tok_rejected;              /* elements refused so far (logged at the first) */
    struct trace_span *round_span; /* the round in progress, when tracing */
    int original_out;              /* the page being built is for an original-format peer */
    /* Entries the message being merged carried and this node did not take. */
    const char *merge_peer; /* its sender, for the metric and the log */
    struct reject rejects[REJECT_LIST_MAX];
    int nlisted;                        /* rejects[] in use */
    uint64_t nrejects;                  /* entries skipped */
    uint32_t logged[REJECT_LOGGED_MAX]; /* hashes of (peer, reason) already logged */
    int nlogged;
    struct metric *m_rejected, *m_decs;
    /* Metrics. */
    struct metric_series *m_ok, *m_err, *m_part, *m_conflicts, *m_latency, *m_bytes_sent,
        *m_bytes_recv, *m_lag, *m_tok_rejected;
};

/* ---------------------------------------------------------------- encoding */

/*
 * A counter for an original-format peer: per node, its incarnations summed (the bare
 * entry where that is higher, see gcounter_nodes), increments only.
 */
static void append_counter_original(struct repl *r, const struct gcounter *c, struct buf *counts)
{
    struct gnode nodes[GCOUNTER_MAX_ENTRIES];
    size_t nlen;
    const char *name = gcounter_name(c, &nlen);
    unsigned k = gcounter_nodes(r->store, c, nodes);
    r->page_counters++;
    if (counts->len > 1)
        buf_putc(counts, ',');
    buf_json_str(counts, name, nlen);
    buf_puts(counts, ":{");
    for (unsigned j = 0; j < k; j++) {
        const char *node = gstore_node_name(r->store, nodes[j].node);
        if (j)
            buf_putc(counts, ',');
        buf_json_str(counts, node, strlen(node));
        buf_putc(counts, ':');
        buf_i64(counts, gcount_clamp(nodes[j].pos, NULL)); /* clamped: still never shrinks */
    }
    buf_putc(counts, '}');
    if (gcounter_has_neg(c))
        r->page_decs_unsent++;
}

struct tok_page {
    struct buf *b;
    int n;
};

static void append_token(void *arg, uint32_t id, const char *tok, size_t tlen, int64_t amount,
                         int settled, uint64_t seq)
{
    (void)id;
    (void)seq;
    struct tok_page *tp = arg;
    if (tp->n++)
        buf_putc(tp->b, ',');
    buf_json_str(tp->b, tok, tlen);
    buf_puts(tp->b, ":{\"amount\":");
    buf_i64(tp->b, amount);
    buf_puts(tp->b, settled ? ",\"settled\":true}" : ",\"settled\":false}");
}

/* The counter's token-set elements changed after r->tok_after, into r->toks. */
static void append_tokens(struct repl *r, const struct gcounter *c)
{
    if (!r->tokset || !tokset_count(r->tokset))
        return;
    size_t nlen;
    const char *name = gcounter_name(c, &nlen);
    uint32_t id = gstore_find(r->store, name, nlen);
    if (id == GSTORE_NONE || !tokset_elements(r->tokset, id))
        return;
    size_t at = r->toks.len;
    if (r->toks.len > 1)
        buf_putc(&r->toks, ',');
    buf_json_str(&r->toks, name, nlen);
    buf_puts(&r->toks, ":{");
    struct tok_page tp = {&r->toks, 0};
    tokset_each(r->tokset, id, r->tok_after, append_token, &tp);
    if (!tp.n)
        r->toks.len = at;
    else
        buf_putc(&r->toks, '}');
}

/* The counter's folded replicas, into r->folds: they travel with every copy of it. */
static void append_folded(struct repl *r, const struct gcounter *c)
{
    if (!gstore_folded_total(r->store))
        return;
    size_t nlen;
    const char *name = gcounter_name(c, &nlen);
    const uint16_t *reps;
    unsigned nf = gstore_folded_list(r->store, gstore_find(r->store, name, nlen), &reps);
    if (!nf)
        return;
    if (r->folds.len > 1)
        buf_putc(&r->folds, ',');
    buf_json_str(&r->folds, name, nlen);
    buf_puts(&r->folds, ":[");
    for (unsigned i = 0; i < nf; i++) {
        const char *rn = gstore_replica_name(r->store, reps[i]);
        if (i)
            buf_putc(&r->folds, ',');
        buf_json_str(&r->folds, rn, strlen(rn));
    }
    buf_putc(&r->folds, ']');
}

static void append_counter(struct repl *r, const struct gcounter *c, struct buf *counts,
                           struct buf *decs)
{
    size_t nlen;
    const char *name = gcounter_name(c, &nlen);
    unsigned n = gcounter_entries(c);
    struct gentry e;

    if (r->original_out) {
        append_counter_original(r, c, counts);
        return;
    }
    append_tokens(r, c);
    append_folded(r, c);
    r->page_counters++;
    if (counts->len > 1)
        buf_putc(counts, ',');
    buf_json_str(counts, name, nlen);
    buf_puts(counts, ":{");
    for (unsigned i = 0; i < n; i++) {
        gcounter_entry(c, i, &e);
        if (i)
            buf_putc(counts, ',');
        const char *rn = gstore_replica_name(r->store, e.rep);
        buf_json_str(counts, rn, strlen(rn));
        buf_putc(counts, ':');
        buf_i64(counts, e.pos);
    }
    buf_putc(counts, '}');
    if (!gcounter_has_neg(c))
        return;
    if (decs->len > 1)
        buf_putc(decs, ',');
    buf_json_str(decs, name, nlen);
    buf_puts(decs, ":{");
    int first = 1;
    for (unsigned i = 0; i < n; i++) {
        gcounter_entry(c, i, &e);
        if (!e.neg)
            continue;
        if (!first)
            buf_putc(decs, ',');
        first = 0;
        const char *rn = gstore_replica_name(r->store, e.rep);
        buf_json_str(decs, rn, strlen(rn));
        buf_putc(decs, ':');
        buf_i64(decs, e.neg);
    }
    buf_putc(decs, '}');
}

/* A page of the full state, by id from *next; sets *next to where the next page starts. */
static void page_full(struct repl *r, uint32_t *next)
{
    uint32_t id = *next, count = gstore_count(r->store);
    for (; id < count; id++) {
        if (r->counts.len + r->decs.len + r->toks.len + r->folds.len >= r->page_bytes)
            break;
        append_counter(r, gstore_counter(r->store, id), &r->counts, &r->decs);
    }
    *next = id;
}

/*
 * A page of the counters changed after since, leaving out those whose last change came
 * whole from the receiver (origin tag skip_origin; 0 skips nothing). Sets *upto to the seq the page
 * covers: every change up to it is in this page or an earlier one. @return 1 when more remain.
 */
static int page_delta(struct repl *r, uint64_t since, int skip_origin, uint64_t *upto)
{
    uint32_t id = gstore_changed_after(r->store, since);
    uint64_t last = since;
    for (; id != GSTORE_NONE; id = gstore_changed_next(r->store, id)) {
        const struct gcounter *c = gstore_counter(r->store, id);
        if (r->counts.len + r->decs.len + r->toks.len + r->folds.len >= r->page_bytes) {
            *upto = last;
            return 1;
        }
        /* The receiver sent us exactly this state: it need not come back. */
        if (!skip_origin || gcounter_origin(c) != skip_origin)
            append_counter(r, c, &r->counts, &r->decs);
        last = gcounter_mseq(c);
    }
    *upto = gstore_seq(r->store);
    return 0;
}

static void page_begin(struct repl *r)
{
    r->page_counters = 0;
    r->page_decs_unsent = 0;
    buf_reset(&r->counts);
    buf_reset(&r->decs);
    buf_reset(&r->toks);
    buf_reset(&r->folds);
    buf_putc(&r->counts, '{');
    buf_putc(&r->decs, '{');
    buf_putc(&r->toks, '{');
    buf_putc(&r->folds, '{');
}

/* Writes the envelope around the page in counts/decs into r->out. */
static void body_finish(struct repl *r, const char *since, const char *cursor, int more)
{
    struct buf *o = &r->out;
    buf_reset(o);
    buf_puts(o, "{\"node_id\":");
    buf_json_str(o, r->node_id, strlen(r->node_id));
    buf_puts(o, ",\"incarnation\":\"");
    buf_puts(o, r->incarnation);
    buf_puts(o, "\",\"timestamp\":");
    buf_printf(o, "%.3f", clock_unix_s());
    buf_puts(o, ",\"counts\":");
    buf_append(o, r->counts.data, r->counts.len);
    buf_putc(o, '}');
    if (r->decs.len > 1) {
        buf_puts(o, ",\"decrements\":");
        buf_append(o, r->decs.data, r->decs.len);
        buf_putc(o, '}');
    }
    if (r->toks.len > 1) {
        buf_puts(o, ",\"tokens\":");
        buf_append(o, r->toks.data, r->toks.len);
        buf_putc(o, '}');
    }
    if (r->folds.len > 1) {
        buf_puts(o, ",\"folded\":");
        buf_append(o, r->folds.data, r->folds.len);
        buf_putc(o, '}');
    }
    if (!r->original_out)
        buf_puts(o, ",\"features\":[\"folded\"]");
    if (since && *since) {
        buf_puts(o, ",\"since\":");
        buf_json_str(o, since, strlen(since));
    }
    if (cursor) {
        buf_puts(o, ",\"cursor\":");
        buf_json_str(o, cursor, strlen(cursor));
        buf_puts(o, more ? ",\"more\":true" : ",\"more\":false");
    }
    buf_putc(o, '}');
}

/* ---------------------------------------------------------------- decoding and merging */

struct merge_error {
    int status;
    const char *code;
    char detail[256];
};

static int merr(struct merge_error *e, int status, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int merr(struct merge_error *e, int status, const char *code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    e->status = status;
    e->code = code;
    vsnprintf(e->detail, sizeof e->detail, fmt, ap);
    va_end(ap);
    return -1;
}

/* Index of the item called name, adding it when absent (open addressing over items). */
static uint32_t item_slot(struct repl *r, const char *name, uint32_t len)
{
    uint32_t mask = (uint32_t)r->seen_cap - 1;
    uint32_t i = (uint32_t)hash_bytes(name, len) & mask;
    for (;; i = (i + 1) & mask) {
        uint32_t v = r->seen[i];
        if (v == 0) {
            if (r->nitems == r->items_cap) {
                r->items_cap = r->items_cap ? r->items_cap * 2 : 256;
                r->items = xrealloc(r->items, r->items_cap * sizeof *r->items);
            }
            struct in_item *it = &r->items[r->nitems];
            memset(it, 0, sizeof *it);
            it->name = name;
            it->len = len;
            it->id = GSTORE_NONE;
            r->seen[i] = (uint32_t)++r->nitems;
            return (uint32_t)r->nitems - 1;
        }
        struct in_item *it = &r->items[v - 1];
        if (it->len == len && memcmp(it->name, name, len) == 0)
            return v - 1;
    }
}

static void push_raw(struct repl *r, uint32_t item, int rep, int64_t pos, int64_t neg)
{
    if (r->nraw == r->raw_cap) {
        r->raw_cap = r->raw_cap ? r->raw_cap * 2 : 1024;
        r->raw = xrealloc(r->raw, r->raw_cap * sizeof *r->raw);
        r->entries = xrealloc(r->entries, r->raw_cap * sizeof *r->entries);
        r->raw_item = xrealloc(r->raw_item, r->raw_cap * sizeof *r->raw_item);
    }
    r->raw[r->nraw].rep = rep;
    r->raw[r->nraw].pos = pos;
    r->raw[r->nraw].neg = neg;
    r->raw_item[r->nraw] = item;
    r->nraw++;
}

/* s[0..n) cut to fit dst (at a UTF-8 boundary), NUL-terminated. */
static void copy_cut(char *dst, size_t cap, const char *s, size_t n)
{
    if (n >= cap) {
        n = cap - 1;
        while (n > 0 && ((unsigned char)s[n] & 0xC0) == 0x80)
            n--;
    }
    memcpy(dst, s, n);
    dst[n] = '\0';
}

/* Whether (peer, what) is new: what is logged once per peer, in at most REJECT_LOGGED_MAX
 * pairs (beyond, the metrics still count). */
static int first_time(struct repl *r, const char *peer, const char *what)
{
    uint32_t h = (uint32_t)(hash_bytes(peer, strlen(peer)) * 31 + hash_bytes(what, strlen(what)));
    for (int i = 0; i < r->nlogged; i++)
        if (r->logged[i] == h)
            return 0;
    if (r->nlogged == REJECT_LOGGED_MAX)
        return 0;
    r->logged[r->nlogged++] = h;
    return 1;
}

/* Counters sent to an original-format peer without their decrements: counted, logged once. */
static void decs_unsent(struct repl *r, const char *peer, int n)
{
    if (!n)
        return;
    const char *lv[1] = {peer};
    metric_add(metric_series(r->m_decs, lv), n);
    if (first_time(r, peer, "decrements"))
        log_warn("peer %s speaks the original lab's /sync and cannot take decrements: "
                 "counters with decrements reach it as their increments only, and its totals "
                 "of those differ (counterd_sync_decrements_unsent_total)",
                 peer);
}

/*
 * Skips one entry (node NULL: every entry of the counter) a message carried: counted per
 * sender and reason, logged once per sender and reason, and listed in the answer.
 */
static void reject(struct repl *r, const char *counter, size_t clen, const char *node, size_t nlen,
                   const char *reason, uint64_t entries)
{
    const char *peer = r->merge_peer ? r->merge_peer : "unknown";
    const char *lv[2] = {peer, reason};
    metric_add(metric_series(r->m_rejected, lv), (double)entries);
    if (r->nlisted < REJECT_LIST_MAX) {
        struct reject *x = &r->rejects[r->nlisted++];
        copy_cut(x->counter, sizeof x->counter, counter, clen);
        copy_cut(x->node, sizeof x->node, node ? node : "", node ? nlen : 0);
        x->reason = reason;
    }
    r->nrejects += entries;
    if (!first_time(r, peer, reason))
        return;
    char cn[64], nn[64];
    copy_cut(cn, sizeof cn, counter, clen);
    copy_cut(nn, sizeof nn, node ? node : "*", node ? nlen : 1);
    for (char *q = cn; *q; q++)
        *q = (unsigned char)*q < 0x20 ? '?' : *q;
    for (char *q = nn; *q; q++)
        *q = (unsigned char)*q < 0x20 ? '?' : *q;
    log_warn("sync from %s: skipped entries it sent (%s), first counter \"%s\" node \"%s\"; the "
             "rest of its messages is merged (counterd_sync_rejected_entries_total counts them; "
             "logged once per peer and reason)",
             peer, reason, cn, nn);
}

/*
 * Reads one map ("counts" or "decrements") of a /sync body into items and raw entries.
 * Entries this node cannot hold are skipped (see reject()); only a map that is not an
 * object fails the message.
 */
static int read_map(struct repl *r, const struct json *map, const char *what, int is_neg,
                    struct merge_error *e)
{
    if (!map)
        return 0;
    if (map->type != JSON_OBJ)
        return merr(e, 400, "bad_field", "%s must be an object of counters", what);
    for (uint32_t i = 0; i < map->len; i++) {
        const struct json_member *m = &map->u.members[i];
        const struct json *vec = &m->val;
        if (!gcounter_name_valid(m->key, m->key_len)) {
            reject(r, m->key, m->key_len, NULL, 0, "bad_name",
                   vec->type == JSON_OBJ && vec->len ? vec->len : 1);
            continue;
        }
        if (vec->type != JSON_OBJ) {
            reject(r, m->key, m->key_len, NULL, 0, "not_an_object", 1);
            continue;
        }
        uint32_t idx = item_slot(r, m->key, m->key_len);
        struct in_item *it = &r->items[idx];
        if (is_neg)
            it->in_decs = 1;
        else
            it->in_counts = 1; /* a name given twice: both merge, by max */
        for (uint32_t k = 0; k < vec->len; k++) {
            const struct json_member *en = &vec->u.members[k];
            const struct json *v = &en->val;
            const char *why = NULL;
            if (!gcounter_replica_node_len(en->key, en->key_len))
                why = "bad_node_id";
            else if (v->type == JSON_INT && v->u.i < 0)
                why = "negative";
            else if (v->type == JSON_NUM && (v->flags & JSON_F_BIGINT))
                why = v->num < 0 ? "negative" : "out_of_range";
            else if (v->type != JSON_INT)
                why = "not_an_integer";
            int rep = why ? -1 : gstore_replica(r->store, en->key, en->key_len);
            if (!why && rep < 0)
                why = "too_many_replicas";
            if (why) {
                reject(r, m->key, m->key_len, en->key, en->key_len, why, 1);
                r->items[idx].partial = 1;
                continue;
            }
            push_raw(r, idx, rep, is_neg ? 0 : v->u.i, is_neg ? v->u.i : 0);
            it->n++;
        }
    }
    return 0;
}

/*
 * Reads the "folded" map of a /sync body: each counter's folded replicas, into fold_in by
 * item. A list this node cannot take marks its item (it->fbad): that counter is skipped
 * whole, since its entries hold the folded values. Only a map that is not an object fails
 * the message.
 */
static int read_folded(struct repl *r, const struct json *map, struct merge_error *e)
{
    r->nfold_in = 0;
    if (!map || map->type == JSON_NULL)
        return 0;
    if (map->type != JSON_OBJ)
        return merr(e, 400, "bad_field", "folded must be an object of counters");
    for (uint32_t i = 0; i < map->len; i++) {
        const struct json_member *m = &map->u.members[i];
        const struct json *list = &m->val;
        if (!gcounter_name_valid(m->key, m->key_len)) {
            reject(r, m->key, m->key_len, NULL, 0, "bad_name", 1);
            continue;
        }
        struct in_item *it = &r->items[item_slot(r, m->key, m->key_len)];
        if (list->type != JSON_ARR) {
            it->fbad = "folded_not_a_list";
            continue;
        }
        if (it->nf) {
            it->fbad = "folded_twice";
            continue;
        }
        it->ffirst = (uint32_t)r->nfold_in;
        for (uint32_t k = 0; k < list->len && !it->fbad; k++) {
            const struct json *v = &list->u.items[k];
            int rep = -1;
            size_t node_len = v->type == JSON_STR ? gcounter_replica_node_len(v->u.s, v->len) : 0;
            if (!node_len || node_len == v->len) /* a bare node id is never folded */
                it->fbad = "folded_bad_id";
            else if (r->self_rep && strcmp(v->u.s, r->self_rep) == 0)
                it->fbad = "folds_this_replica";
            else if (list->len > GCOUNTER_MAX_FOLDED)
                it->fbad = "too_many_folded";
            else if ((rep = gstore_replica(r->store, v->u.s, v->len)) < 0)
                it->fbad = "too_many_replicas";
            if (it->fbad)
                break;
            if (r->nfold_in == r->fold_in_cap) {
                r->fold_in_cap = r->fold_in_cap ? r->fold_in_cap * 2 : 256;
                r->fold_in = xrealloc(r->fold_in, r->fold_in_cap * sizeof *r->fold_in);
            }
            r->fold_in[r->nfold_in++] = rep;
            it->nf++;
        }
    }
    return 0;
}

/*
 * Merges a /sync body (request or answer) into the store, tagging what it changes with
 * origin (the sender's peer number + 1, or 0). Entries it cannot hold are skipped and
 * recorded (r->rejects, r->nrejects); the rest is merged.
 * @return the number of replica entries that changed, or -1 with e filled when the
 *         message itself is malformed (nothing merged).
 */
static int merge_body(struct repl *r, const struct json *root, int origin, struct merge_error *e)
{
    const struct json *counts = json_get(root, "counts");
    const struct json *decs = json_get(root, "decrements");
    const struct json *folded = json_get(root, "folded");
    r->nrejects = 0;
    r->nlisted = 0;
    r->nitems = r->nraw = 0;
    if (!counts || counts->type != JSON_OBJ)
        return merr(e, 400, "bad_field", "counts must be an object of counters");
    if (decs && decs->type == JSON_NULL)
        decs = NULL;
    if (decs && decs->type != JSON_OBJ)
        return merr(e, 400, "bad_field", "decrements must be an object of counters");

    size_t want = (size_t)counts->len + (decs ? decs->len : 0) +
                  (folded && folded->type == JSON_OBJ ? folded->len : 0);
    size_t cap = 16;
    while (cap < want * 2)
        cap *= 2;
    if (cap > r->seen_cap) {
        free(r->seen);
        r->seen = xmalloc(cap * sizeof *r->seen);
    }
    r->seen_cap = cap;
    memset(r->seen, 0, cap * sizeof *r->seen);

    if (read_map(r, counts, "counts", 0, e) < 0 || read_map(r, decs, "decrements", 1, e) < 0 ||
        read_folded(r, folded, e) < 0)
        return -1;

    /* Group the entries by counter (a counting sort), so each item's run is contiguous. */
    uint32_t off = 0;
    for (size_t i = 0; i < r->nitems; i++) {
        r->items[i].first = off;
        off += r->items[i].n;
        r->items[i].n = 0;
    }
    for (size_t k = 0; k < r->nraw; k++) {
        struct in_item *it = &r->items[r->raw_item[k]];
        r->entries[it->first + it->n++] = r->raw[k];
    }

    int changed = 0;
    for (size_t i = 0; i < r->nitems; i++) {
        struct in_item *it = &r->items[i];
        if (!it->fbad && it->nf && it->partial)
            it->fbad = "folded_with_skipped_entries"; /* its folded values may be in those */
        if (it->fbad) {
            reject(r, it->name, it->len, NULL, 0, it->fbad, it->n ? it->n : 1);
            continue;
        }
        if (it->n == 0 && it->nf == 0)
            continue; /* nothing to merge (or every entry skipped): change and create nothing */
        it->id = gstore_find(r->store, it->name, it->len);
        const int *fl = it->nf ? r->fold_in + it->ffirst : NULL;
        const struct gentry *en = it->n ? r->entries + it->first : NULL; /* may be NULL */
        int ck = gstore_merge_check_folded(r->store, it->id, en, it->n, fl, it->nf);
        if (ck < 0) {
            reject(r, it->name, it->len, NULL, 0,
                   ck == GSTORE_EFOLDED ? "too_many_folded" : "too_many_replicas",
                   it->n ? it->n : 1);
            continue;
        }
        if (it->id == GSTORE_NONE)
            it->id = gstore_create(r->store, it->name, it->len);
        int rc = gstore_merge_folded(r->store, it->id, en, it->n, fl, it->nf, origin);
        if (rc > 0) {
            changed += rc;
            if (r->hooks.changed)
                r->hooks.changed(r->hooks.arg, it->id);
        }
    }
    return changed;
}

/* ,"rejected":[{"counter","node_id","reason"},...],"rejected_count":N into r->out, whose
 * closing brace it moves to the end; nothing when the last merge skipped nothing. */
static void put_rejects(struct repl *r)
{
    if (!r->nrejects || !r->out.len)
        return;
    r->out.len--; /* the closing brace */
    buf_puts(&r->out, ",\"rejected\":[");
    for (int i = 0; i < r->nlisted; i++) {
        const struct reject *x = &r->rejects[i];
        if (i)
            buf_putc(&r->out, ',');
        buf_puts(&r->out, "{\"counter\":");
        buf_json_str(&r->out, x->counter, strlen(x->counter));
        if (x->node[0]) {
            buf_puts(&r->out, ",\"node_id\":");
            buf_json_str(&r->out, x->node, strlen(x->node));
        }
        buf_puts(&r->out, ",\"reason\":\"");
        buf_puts(&r->out, x->reason);
        buf_puts(&r->out, "\"}");
    }
    buf_printf(&r->out, "],\"rejected_count\":%" PRIu64 "}", r->nrejects);
}

/*
 * The "tokens" of a /sync body, after its counts were merged: each counter's elements are
 * handed to the tokens hook. An element counterd cannot hold (a token of the wrong size, an
 * amount that is not an integer) is skipped, counted and logged; the rest are merged.
 */
static void apply_tokens(struct repl *r, const struct json *root, const char *from)
{
    const struct json *toks = json_get(root, "tokens");
    if (!toks || toks->type != JSON_OBJ || !r->hooks.tokens)
        return;
    int before = r->tok_rejected;
    for (uint32_t i = 0; i < toks->len; i++) {
        const struct json_member *m = &toks->u.members[i];
        const char *why = NULL;
        if (!gcounter_name_valid(m->key, m->key_len) || m->val.type != JSON_OBJ) {
            why = "not a counter name with an object of tokens";
            r->tok_rejected++;
        }
        uint32_t id = why ? GSTORE_NONE : gstore_create(r->store, m->key, m->key_len);
        if (!why && id == GSTORE_NONE) {
            why = "cannot create the counter";
            r->tok_rejected++;
        }
        size_t n = 0;
        const struct json *els = &m->val;
        if (!why && els->len > r->tokel_cap) {
            r->tokel_cap = els->len;
            r->tokel = xrealloc(r->tokel, r->tokel_cap * sizeof *r->tokel);
        }
        for (uint32_t k = 0; !why && k < els->len; k++) {
            const struct json_member *t = &els->u.members[k];
            const struct json *a = t->val.type == JSON_OBJ ? json_get(&t->val, "amount") : NULL;
            const struct json *st = t->val.type == JSON_OBJ ? json_get(&t->val, "settled") : NULL;
            if (t->key_len == 0 || t->key_len > TOKSET_TOKEN_MAX ||
                memchr(t->key, '\0', t->key_len) || !a || a->type != JSON_INT || !st ||
                (st->type != JSON_TRUE && st->type != JSON_FALSE)) {
                if (r->tok_rejected++ == 0)
                    log_error("sync from %s: token %.*s of counter %.*s is not a token-set "
                              "element (token 1-%d bytes, amount an integer, settled a "
                              "boolean): skipped (logged once; counted in "
                              "counterd_sync_rejected_tokens_total)",
                              from, (int)(t->key_len > 64 ? 64 : t->key_len), t->key,
                              (int)m->key_len, m->key, TOKSET_TOKEN_MAX);
                continue;
            }
            r->tokel[n++] = (struct repl_token){t->key, t->key_len, a->u.i, st->type == JSON_TRUE};
        }
        if (why) {
            if (r->tok_rejected == 1)
                log_error("sync from %s: tokens.%.*s skipped: %s (logged once; counted in "
                          "counterd_sync_rejected_tokens_total)",
                          from, (int)(m->key_len > 64 ? 64 : m->key_len), m->key, why);
            continue;
        }
        if (n)
            r->hooks.tokens(r->hooks.arg, id, r->tokel, n);
    }
    if (r->tok_rejected > before)
        metric_add(r->m_tok_rejected, r->tok_rejected - before);
}

/* ---------------------------------------------------------------- decisions */

static int decide(struct repl *r, const char *dir, const char *from, const char *to, int *delay_ms)
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

static const char *peer_name(const struct peer *p)
{
    return p->node_id[0] ? p->node_id : p->url;
}

/* The origin tag of what a peer sends us: its position + 1. */
static int peer_origin(const struct peer *p)
{
    return (int)(p - p->r->peers) + 1;
}

/* The origin tag of a node that sent us a /sync: a configured peer's, or 0. */
static int origin_of_node(const struct repl *r, const char *node_id)
{
    for (int i = 0; i < r->npeers; i++)
        if (r->peers[i].node_id[0] && strcmp(r->peers[i].node_id, node_id) == 0)
            return i + 1;
    return 0;
}

/* ---------------------------------------------------------------- rounds */

static void exchange_start(struct peer *p);

static void round_finish(struct repl *r)
{
    r->round_running = 0;
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
            log_info("sync with %s works again after %d failed rounds", peer_name(p), p->failures);
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
        log_error("sync with %s (%s) failed: %s", peer_name(p), p->sync_url, msg);
    p->failures++;
    snprintf(p->last_error, sizeof p->last_error, "%s", msg);
    p->last_error_unix = clock_unix_s();
    p->probed = 0;
    p->pull_began_ms = 0;
    peer_round_end(p, ST_ERROR);
}

static void exchange_done(struct peer *p, const struct http_result *res, struct trace_span *sp)
{
    struct repl *r = p->r;
    metric_add(r->m_bytes_recv, (double)res->len);
    if (res->status == 0) {
        peer_failed(p, "%s", res->error ? res->error : "no answer");
        return;
    }
    const struct json *root = json_parse(&r->parser, res->body, res->len);
    if (res->status == 503 && root) {
        const struct json *code = json_get(root, "error");
        if (code && code->type == JSON_STR && strcmp(code->u.s, "partitioned") == 0) {
            const struct json *d = json_get(root, "detail");
            snprintf(p->last_error, sizeof p->last_error, "the peer refused: %s",
                     d && d->type == JSON_STR ? d->u.s : "partitioned");
            p->last_error_unix = clock_unix_s();
            peer_round_end(p, ST_PARTITION);
            return;
        }
    }
    if (res->status != 200) {
        const struct json *d = root ? json_get(root, "detail") : NULL;
        peer_failed(p, "HTTP %d%s%s", res->status, d && d->type == JSON_STR ? ": " : "",
                    d && d->type == JSON_STR ? d->u.s : "");
        return;
    }
    if (r->hooks.before_merge && r->hooks.before_merge(r->hooks.arg, res->len) < 0) {
        peer_failed(p, "this node cannot log what the answer would change (its disk is full "
                       "or failing): nothing merged");
        return;
    }
    if (!root || root->type != JSON_OBJ) {
        peer_failed(p, "the answer is not a JSON object%s%s", root ? "" : ": ",
                    root ? "" : r->parser.err);
        return;
    }
    const struct json *nid = json_get(root, "node_id");
    const struct json *inc = json_get(root, "incarnation");
    const struct json *cursor = json_get(root, "cursor");
    const struct json *more = json_get(root, "more");

    if (nid && nid->type == JSON_STR && gcounter_name_valid(nid->u.s, nid->len))
        snprintf(p->node_id, sizeof p->node_id, "%s", nid->u.s);
    /* counterd always says its incarnation; the original lab's region never does. */
    enum peer_format fmt = inc && inc->type == JSON_STR ? FMT_COUNTERD : FMT_ORIGINAL;
    if (fmt != p->format && fmt == FMT_ORIGINAL)
        log_warn("peer %s (%s) speaks the original lab's /sync: it gets each node's "
                 "incarnations summed under the node id, increments only",
                 peer_name(p), p->url);
    p->format = fmt;
    p->probed = 1;
    const struct json *feat = json_get(root, "features");
    p->folds = 0;
    for (uint32_t i = 0; feat && feat->type == JSON_ARR && i < feat->len; i++)
        if (feat->u.items[i].type == JSON_STR && strcmp(feat->u.items[i].u.s, "folded") == 0)
            p->folds = 1;

    struct merge_error e;
    r->merge_peer = peer_name(p);
    int changed = merge_body(r, root, peer_origin(p), &e);
    r->merge_peer = NULL;
    if (changed < 0) {
        peer_failed(p, "cannot merge the answer: %s", e.detail);
        return;
    }
    metric_add(r->m_conflicts, changed);
    if (r->nrejects)
        p->pull_skipped = 1;
    trace_span_attr_int(sp, "sync.counters_received", (int64_t)r->nitems);
    const struct json *refused = json_get(root, "rejected_count");
    if (refused && refused->type == JSON_INT && refused->u.i > 0 &&
        first_time(r, peer_name(p), "refused"))
        log_warn("peer %s skipped %" PRId64 " entries of our push as entries it cannot hold "
                 "(its answer lists them; logged once per peer)",
                 peer_name(p), refused->u.i);

    apply_tokens(r, root, p->node_id[0] ? p->node_id : p->url);

    /* The push is on the peer now. */
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
    if (inc && inc->type == JSON_STR && inc->len < sizeof p->incarnation) {
        if (p->incarnation[0] && strcmp(p->incarnation, inc->u.s) != 0) {
            /* The peer restarted: it may have lost what it acknowledged. */
            log_info("peer %s restarted (incarnation %s -> %s): pushing full state", peer_name(p),
                     p->incarnation, inc->u.s);
            p->full_push = 1;
            p->full_next = 0;
            p->acked = 0;
            p->tok_acked = 0;
        }
        snprintf(p->incarnation, sizeof p->incarnation, "%s", inc->u.s);
    }
    int pull_more = 0;
    if (cursor && cursor->type == JSON_STR && cursor->len < sizeof p->cursor) {
        snprintf(p->cursor, sizeof p->cursor, "%s", cursor->u.s);
        pull_more = more && more->type == JSON_TRUE;
    } else {
        p->cursor[0] = '\0'; /* a peer without cursors (the lab's) answers full state */
    }
    if (!pull_more && p->pull_began_ms > 0) {
        /* A pull of the peer's whole state is complete (the fold gate). */
        if (!p->pull_skipped && fmt == FMT_COUNTERD)
            p->pull_full_ms = p->pull_began_ms;
        p->pull_was_skipped = p->pull_skipped;
        p->pull_began_ms = 0;
    }
    if ((p->push_more || p->full_push || pull_more) && ++p->exchanges < MAX_EXCHANGES) {
        exchange_start(p);
        return;
    }
    peer_round_end(p, ST_SUCCESS);
}

/* The exchange's span ends here, after what the answer did has been recorded on it. */
static void on_exchange_done(const struct http_result *res, void *arg)
{
    struct peer *p = arg;
    struct trace_span *sp = p->span;
    p->call = NULL;
    p->span = NULL;
    trace_span_http_status(sp, res->status, res->error);
    exchange_done(p, res, sp);
    /* Named after the exchange: a first answer is what tells us the peer's node id. */
    trace_span_attr_cstr(sp, "sync.peer", peer_name(p));
    trace_span_end(sp);
}

static void exchange_send(struct peer *p)
{
    struct repl *r = p->r;
    if (r->hooks.before_send && r->hooks.before_send(r->hooks.arg) < 0) {
        trace_span_attr_cstr(p->span, "sync.peer", peer_name(p));
        trace_span_error(p->span, "the log cannot be written");
        trace_span_end(p->span);
        p->span = NULL;
        peer_failed(p, "this node's log cannot be written: nothing is sent that a crash "
                       "could take back");
        return;
    }
    page_begin(r);
    p->push_more = 0;
    r->original_out = p->format == FMT_ORIGINAL;
    if (p->cursor[0] == '\0') { /* the answer starts the peer's full state */
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
        page_full(r, &next);
        p->sent_next = next;
        p->sent_full_done = next >= gstore_count(r->store);
        p->push_more = !p->sent_full_done;
    } else {
        r->tok_after = p->tok_acked;
        p->push_more = page_delta(r, p->acked, peer_origin(p), &p->sent_acked);
    }
    decs_unsent(r, peer_name(p), r->page_decs_unsent);
    body_finish(r, p->cursor, NULL, 0);
    r->original_out = 0;
    const char *headers[3] = {r->auth_header, NULL, NULL};
    char tp[TRACE_HEADER_LEN + 1];
    if (p->span) {
        trace_span_attr_int(p->span, "sync.counters_sent", r->page_counters);
        trace_span_attr_int(p->span, "sync.bytes_sent", (int64_t)r->out.len);
        trace_span_attr_bool(p->span, "sync.full", p->full_push);
        memcpy(tp, "traceparent: ", 13);
        trace_span_traceparent(p->span, tp + 13);
        headers[r->auth_header ? 1 : 0] = tp;
    }
    struct http_call_opts o = {.method = "POST",
                               .url = p->sync_url,
                               .body = r->out.data,
                               .body_len = r->out.len,
                               .headers = headers,
                               .timeout_ms = r->timeout_ms};
    metric_add(r->m_bytes_sent, (double)r->out.len);
    p->sent_bytes = r->out.len;
    p->call = http_client_request(r->client, &o, on_exchange_done, p);
    if (!p->call) {
        trace_span_attr_cstr(p->span, "sync.peer", peer_name(p));
        trace_span_error(p->span, "cannot start the HTTP call");
        trace_span_end(p->span);
        p->span = NULL;
        peer_failed(p, "cannot start the HTTP call");
    }
}

static void on_delay_out(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    exchange_send(arg);
}

static void exchange_start(struct peer *p)
{
    struct repl *r = p->r;
    int delay_ms;
    int a = decide(r, "out", r->node_id, peer_name(p), &delay_ms);
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
        trace_span_attr_cstr(p->span, "sync.peer", peer_name(p));
        trace_span_error(p->span, r->partitioned ? "partitioned" : "dropped by the faults policy");
        trace_span_end(p->span);
        p->span = NULL;
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
        if (++p->rounds_since_full >= r->full_every) {
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

/* ---------------------------------------------------------------- incoming /sync */

static int parse_cursor(struct repl *r, const char *s, int *full, uint64_t *seq, uint32_t *next,
                        uint64_t *base)
{
    char kind, inc[17];
    unsigned long long a = 0, b = 0;
    int n = 0, m = 0;
    if (sscanf(s, "%c.%16[0-9a-f].%llu%n", &kind, inc, &a, &n) != 3)
        return -1;
    if (strcmp(inc, r->incarnation) != 0)
        return -1;
    if (kind == 'D' && s[n] == '\0') {
        *full = 0;
        *seq = *base = a;
        return 0;
    }
    if (kind == 'D' && s[n] == '.' && sscanf(s + n + 1, "%llu%n", &b, &m) == 1 &&
        s[n + 1 + m] == '\0' && b <= a) {
        *full = 0;
        *seq = a;
        *base = b;
        return 0;
    }
    if (kind == 'F' && s[n] == '.' && sscanf(s + n + 1, "%llu", &b) == 1 && b <= UINT32_MAX) {
        *full = 1;
        *seq = a;
        *next = (uint32_t)b;
        return 0;
    }
    return -1;
}

static void answer_sync(struct repl *r, struct http_request *req, const char *body, size_t len)
{
    const struct json *root = json_parse(&r->parser, body, len);
    if (!root) {
        http_respond_error(req, 400, "bad_json", "body is not valid JSON: %s", r->parser.err);
        return;
    }
    const struct json *nid = json_get(root, "node_id");
    int origin = nid && nid->type == JSON_STR ? origin_of_node(r, nid->u.s) : 0;
    struct merge_error e;
    r->merge_peer = nid && nid->type == JSON_STR ? nid->u.s : NULL;
    int changed = merge_body(r, root, origin, &e);
    r->merge_peer = NULL;
    if (changed < 0) {
        http_respond_error(req, e.status, e.code, "%s", e.detail);
        return;
    }
    apply_tokens(r, root, nid && nid->type == JSON_STR ? nid->u.s : "a peer");
    metric_add(r->m_conflicts, changed);
    metric_add(r->m_bytes_recv, (double)len);
    if (req->span) {
        if (nid && nid->type == JSON_STR)
            trace_span_attr_str(req->span, "sync.peer", nid->u.s, nid->len);
        trace_span_attr_int(req->span, "sync.counters_received", (int64_t)r->nitems);
        trace_span_attr_int(req->span, "sync.conflicts_resolved", changed);
    }

    int full = 1;
    uint64_t seq = 0, base = 0;
    uint32_t next = 0;
    const struct json *since = json_get(root, "since");
    if (!since || since->type != JSON_STR ||
        parse_cursor(r, since->u.s, &full, &seq, &next, &base) < 0) {
        full = 1;
        seq = gstore_seq(r->store);
        next = 0;
    }
    char cursor[96];
    int more;
    page_begin(r);
    const struct json *inc = json_get(root, "incarnation");
    if ((!inc || inc->type != JSON_STR) && !json_get(root, "decrements")) {
        /* The original lab's region (neither an incarnation nor decrements): our state in
         * its format, whole, without a cursor. */
        size_t page = r->page_bytes;
        uint32_t from = 0;
        r->original_out = 1;
        r->page_bytes = SIZE_MAX;
        page_full(r, &from);
        r->page_bytes = page;
        decs_unsent(r, nid->u.s, r->page_decs_unsent);
        trace_span_attr_int(req->span, "sync.counters_sent", r->page_counters);
        body_finish(r, NULL, NULL, 0);
        r->original_out = 0;
        put_rejects(r);
        metric_add(r->m_bytes_sent, (double)r->out.len);
        r->last_sync_unix = clock_unix_s();
        http_respond_json(req, 200, r->out.data, r->out.len);
        return;
    }
    if (full) {
        r->tok_after = 0;
        page_full(r, &next);
        more = next < gstore_count(r->store);
        if (more)
            snprintf(cursor, sizeof cursor, "F.%s.%" PRIu64 ".%u", r->incarnation, seq, next);
        else
            snprintf(cursor, sizeof cursor, "D.%s.%" PRIu64, r->incarnation, seq);
    } else {
        uint64_t upto;
        r->tok_after = base;
        more = page_delta(r, seq, origin, &upto);
        if (more && base < upto)
            snprintf(cursor, sizeof cursor, "D.%s.%" PRIu64 ".%" PRIu64, r->incarnation, upto,
                     base);
        else
            snprintf(cursor, sizeof cursor, "D.%s.%" PRIu64, r->incarnation, upto);
    }
    trace_span_attr_int(req->span, "sync.counters_sent", r->page_counters);
    body_finish(r, NULL, cursor, more);
    put_rejects(r);
    metric_add(r->m_bytes_sent, (double)r->out.len);
    r->last_sync_unix = clock_unix_s();
    http_respond_json(req, 200, r->out.data, r->out.len);
}

static void delayed_free(struct delayed_in *d)
{
    struct repl *r = d->r;
    if (d->prev)
        d->prev->next = d->next;
    else
        r->delayed = d->next;
    if (d->next)
        d->next->prev = d->prev;
    event_free(d->ev);
    buf_free(&d->body);
    free(d);
}

static void on_delay_in(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct delayed_in *d = arg;
    struct repl *r = d->r;
    if (r->partitioned)
        http_respond_error(d->req, 503, "partitioned",
                           "this node is partitioned and does not accept replication");
    else
        answer_sync(r, d->req, d->body.data, d->body.len);
    delayed_free(d);
}

void repl_handle_sync(struct repl *r, struct http_request *req)
{
    if (r->partitioned) {
        http_respond_error(req, 503, "partitioned",
                           "this node is partitioned and does not accept replication");
        return;
    }
    const struct json *root = json_parse(&r->parser, req->body, req->body_len);
    if (!root) {
        http_respond_error(req, 400, "bad_json", "body is not valid JSON: %s", r->parser.err);
        return;
    }
    if (root->type != JSON_OBJ) {
        http_respond_error(req, 400, "bad_json", "body must be a JSON object");
        return;
    }
    const struct json *nid = json_get(root, "node_id");
    if (!nid || nid->type != JSON_STR || !gcounter_name_valid(nid->u.s, nid->len)) {
        http_respond_error(req, 400, "bad_field",
                           "node_id must be a string of 1-200 bytes of [A-Za-z0-9_.:-]");
        return;
    }
    int delay_ms;
    int a = decide(r, "in", nid->u.s, r->node_id, &delay_ms);
    if (a == REPL_DROP) {
        metric_add(r->m_part, 1);
        http_respond_error(req, 503, "partitioned",
                           "the faults policy drops replication from %s to %s", nid->u.s,
                           r->node_id);
        return;
    }
    if (a == REPL_DELAY) {
        struct delayed_in *d = xcalloc(1, sizeof *d);
        d->r = r;
        d->req = req;
        buf_append(&d->body, req->body, req->body_len);
        d->ev = evtimer_new(r->base, on_delay_in, d);
        d->next = r->delayed;
        if (r->delayed)
            r->delayed->prev = d;
        r->delayed = d;
        struct timeval tv = {delay_ms / 1000, (delay_ms % 1000) * 1000};
        evtimer_add(d->ev, &tv);
        return;
    }
    answer_sync(r, req, req->body, req->body_len);
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

struct repl *repl_new(struct event_base *base, struct http_client *client, struct gstore *store,
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
    snprintf(r->incarnation, sizeof r->incarnation, "%016" PRIx64, random_u64());
    r->interval_ms = cfg->interval_ms > 0 ? cfg->interval_ms : 5000;
    r->timeout_ms = cfg->timeout_ms > 0 ? cfg->timeout_ms : 3000;
    r->full_every = cfg->full_every > 0 ? cfg->full_every : 12;
    r->page_bytes = cfg->page_bytes ? cfg->page_bytes : (1u << 20);
    r->start_ms = clock_mono_ms();
    json_parser_init(&r->parser);

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
    r->m_tok_rejected = metric_only(
        metrics_add(reg, METRIC_COUNTER, "counterd_sync_rejected_tokens_total",
                    "Token-set elements of /sync bodies skipped as malformed", NULL, NULL, 0));

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
            http_client_cancel(p->call);
        if (p->id_call)
            http_client_cancel(p->id_call);
        trace_span_error(p->span, "stopped");
        trace_span_end(p->span);
        event_free(p->delay_ev);
        free(p->url);
        free(p->sync_url);
    }
    while (r->delayed)
        delayed_free(r->delayed);
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
    free(r->tokel);
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

static void on_peer_id(const struct http_result *res, void *arg)
{
    struct peer *p = arg;
    p->id_call = NULL;
    if (res->status != 200 || p->node_id[0])
        return;
    const struct json *root = json_parse(&p->r->parser, res->body, res->len);
    const struct json *nid = root ? json_get(root, "node_id") : NULL;
    if (nid && nid->type == JSON_STR && gcounter_name_valid(nid->u.s, nid->len))
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
        struct http_call_opts o = {.method = "GET", .url = url, .timeout_ms = 1000};
        p->id_call = http_client_request(r->client, &o, on_peer_id, p);
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
            snprintf(why, n, "peer %s speaks the original lab's /sync", peer_name(p));
        else if (p->probed && !p->folds)
            snprintf(why, n, "peer %s does not understand folded replicas (an older version)",
                     peer_name(p));
        else if (p->pull_full_ms < after_ms && p->pull_was_skipped)
            snprintf(why, n,
                     "the full state of peer %s has entries this node skips "
                     "(counterd_sync_rejected_entries_total): its copy of a retired "
                     "id might not be the highest",
                     peer_name(p));
        else if (p->pull_full_ms < after_ms)
            snprintf(why, n, "waiting for a full pull from peer %s%s%s", peer_name(p),
                     p->last_error[0] ? ": " : "", p->last_error);
        else
            continue;
        return 0;
    }
    return 1;
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
    out->format = p->format == FMT_ORIGINAL   ? "original"
                  : p->format == FMT_COUNTERD ? "counterd"
                                              : NULL;
}
