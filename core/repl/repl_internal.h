/*
 * repl_internal.h - what the files of the replication module share, and nothing
 * else may include: its state (struct repl, struct peer) and its internal functions
 * (repl__*). The module answers three questions, one file each:
 *
 *   repl.c  rounds and exchanges with the peers (the client side), set-up, views
 *   repl_body.c     how this node's state is written into a /sync page (encoding)
 *   repl_merge.c    how a /sync body a peer sent is read and merged (decoding, rejects)
 *   repl_serve.c    how an incoming POST /sync is answered
 *   repl_digest.c   the digest exchange (anti-entropy over hash trees, store/digest.h)
 *   repl_compact.c  the compact body between counterd nodes (written and read)
 *
 * The wire format and the guarantees are described at the top of repl.c.
 */
#ifndef COUNTERD_REPL_REPL_INTERNAL_H
#define COUNTERD_REPL_REPL_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "../base/buf.h"
#include "../base/json.h"
#include "../obs/trace.h"
#include "../store/digest.h"
#include "../store/gstore.h"
#include "repl.h"

struct event;
struct client_call;
struct metric;
struct metric_series;

#define MAX_EXCHANGES 100000 /* per peer per round: a runaway guard, not a tuning knob */

enum peer_status { ST_NONE, ST_SUCCESS, ST_ERROR, ST_PARTITION };
enum peer_format { FMT_UNKNOWN, FMT_COUNTERD, FMT_ORIGINAL };
/* What an exchange carries, for the bytes metrics: a delta, full state, the digest's
 * fingerprints, the counters of the leaves that differ. */
enum sync_kind { KIND_DELTA, KIND_FULL, KIND_DIGEST, KIND_REPAIR, KIND_N };
enum dg_phase { DG_NONE, DG_DESCEND, DG_REPAIR };

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
    struct client_call *call;
    struct event *delay_ev;
    uint64_t sent_acked; /* acked value once this push is acknowledged */
    uint32_t sent_next;  /* full walk position once acknowledged */
    int sent_full_done, push_more;
    size_t sent_bytes;
    int in_round, exchanges;
    double round_start_ms, last_ok_ms;
    int failures;
    uint64_t tok_acked;          /* token-set elements up to this seq are on the peer */
    struct client_call *id_call; /* GET /health for its node id */
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
    /* The digest exchange (repl_digest.c). */
    int digests;            /* its answers say it understands "digest" */
    int compacts;           /* its answers say it understands "compact" (repl_compact.c) */
    int lifes;              /* its answers say it understands "life" (floors in compact bodies) */
    int sent_compact;       /* the exchange in flight pushed a compact body */
    int digest_due;         /* this round ends with a digest exchange */
    enum dg_phase dg_phase; /* the digest exchange in progress */
    int dg_level;           /* the level of the fingerprints the next request carries */
    uint32_t *dg_groups;    /* their parents (level dg_level - 1) */
    uint32_t dg_ngroups, dg_groups_cap;
    uint32_t *dg_leaves; /* the leaves that differ */
    uint32_t dg_nleaves, dg_leaves_cap, dg_leaf_next, dg_sent_next;
    uint64_t dg_repaired;                     /* counters repaired so far */
    enum sync_kind kind;                      /* of the exchange in flight */
    struct metric_series *m_bytes[KIND_N][2]; /* sent, received */
    struct metric_series *m_repaired;
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
    uint32_t tfirst, nt; /* a compact body's token-set elements: ctok[tfirst .. tfirst+nt) */
    /* Its lifecycle state (gstore.h "Lifecycle"): floors in life_in[lfirst .. lfirst+nl)
     * (clear) and [dfirst .. dfirst+nd) (delete), flags GLIFE_*. */
    uint32_t lfirst, nl, dfirst, nd;
    uint8_t has_life, lflags, has_floor, has_dfloor;
    const char *lbad; /* why its lifecycle state cannot be taken (the counter is skipped) */
};

struct repl {
    struct event_base *base;
    struct client *client;
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
    struct buf lfloors, ldfloors, lflags; /* the page's "floors", "dfloors" and "life" */
    int life_out;                         /* the page's lifecycle state goes out (not original) */
    struct gentry *life_in;               /* the floors an incoming body carries, by item */
    size_t nlife_in, life_in_cap;
    uint64_t nignored; /* counters of the last merge left out: not replicated */
    int merge_aware;   /* the message being merged comes from a node that knows the lifecycle */
    struct metric_series *m_ignored; /* counterd_sync_ignored_total{reason="regional"} */
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
    /* The digest exchange. */
    struct digest *digest;
    struct buf dg;    /* the "digest" member of the message being built */
    uint32_t *dg_ids; /* node ids a message lists */
    uint32_t dg_nids, dg_ids_cap;
    uint64_t merged_counters; /* counters the last merge changed */
    /* The replica ids read last (a body names the same few in every counter): their
     * check and look-up are made once. */
    struct {
        char name[GSTORE_REPLICA_NAME_MAX + 1];
        size_t len;
        int rep;
    } rep_seen[4];
    unsigned rep_seen_next;
    struct metric *m_peer_bytes;
    /* The compact body (repl_compact.c). */
    int compact_off;               /* COUNTERD_SYNC_COMPACT=0: JSON only, as before it */
    int compact_out;               /* the page being built is compact */
    struct buf cbody, creps, cout; /* its counters, its replica table, the whole body */
    struct buf toks_c;             /* one counter's token-set elements */
    uint32_t cnreps, cgen;         /* replicas in the table; the page's generation */
    struct {
        uint32_t gen, idx;
    } * cmap; /* store replica -> the page's table index, when gen is the page's */
    size_t cmap_cap;
    const char *cin; /* the binary section of the body being read; NULL: JSON */
    size_t cin_len;
    int cin_life; /* its counters carry their lifecycle state ("CSB2") */
    struct {
        const char *s;
        uint32_t len;
        int rep; /* -3: not resolved yet, -1: not a replica id, -2: no room */
    } * ctab;    /* its replica table */
    uint32_t ctab_n;
    size_t ctab_cap;
    struct repl_token *ctok; /* its token-set elements */
    size_t nctok, ctok_cap;
    int ctok_rejected;
    /* Metrics. */
    struct metric_series *m_ok, *m_err, *m_part, *m_conflicts, *m_latency, *m_bytes_sent,
        *m_bytes_recv, *m_lag, *m_tok_rejected;
};

/* Why a /sync body could not be merged at all: the answer to give (status, code, detail). */
struct merge_error {
    int status;
    const char *code;
    char detail[256];
};

static inline const char *repl__peer_name(const struct peer *p)
{
    return p->node_id[0] ? p->node_id : p->url;
}

/* The origin tag of what a peer sends us: its position + 1. */
static inline int repl__peer_origin(const struct peer *p)
{
    return (int)(p - p->r->peers) + 1;
}

/* ---------------------------------------------------------------- repl_body.c */

/* Starts an empty page in r->counts, decs, toks and folds. */
void repl__page_begin(struct repl *r);
/* A page of the full state, by id from *next; sets *next to where the next page starts. */
void repl__page_full(struct repl *r, uint32_t *next);
/*
 * A page of the counters changed after since, leaving out those whose last change came
 * whole from the receiver (origin tag skip_origin; 0 skips nothing). Sets *upto to the seq
 * the page covers. @return 1 when more remain, 0 otherwise.
 */
int repl__page_delta(struct repl *r, uint64_t since, int skip_origin, uint64_t *upto);
/* Writes the envelope around the page into r->out (since: the request's "since"; cursor:
 * the answer's, NULL in a request). */
void repl__body_finish(struct repl *r, const char *since, const char *cursor, int more);

/* A page of the counters of leaves[0..n), stopping once it holds limit bytes (at least one
 * leaf). @return the number of leaves in the page. */
uint32_t repl__page_leaves(struct repl *r, const uint32_t *leaves, uint32_t n, size_t limit);

/* ---------------------------------------------------------------- repl_digest.c */

/* Starts a digest exchange with p (at the root's children). */
void repl__digest_begin(struct peer *p);
/* Builds p's next digest message into r->out. */
void repl__digest_build(struct peer *p);
/* Takes the answer to it (its counters merged already). @return 1 when another exchange
 * follows, 0 when the digest exchange is complete, -1 with why when the answer is wrong. */
int repl__digest_answer(struct peer *p, const struct json *root, const char **why);
/* Checks an incoming request's "digest" (nothing is merged before). @return 0, or -1 with
 * e filled. */
int repl__digest_check(struct repl *r, const struct json *dg, struct merge_error *e);
/* Builds the answer to a checked "digest" (its counts merged) into r->counts.. and r->dg.
 * @return what it was. */
enum sync_kind repl__digest_respond(struct repl *r, const struct json *dg);

/* ---------------------------------------------------------------- repl_compact.c */

/* Parses a /sync body, JSON or compact (its envelope; r->cin is then its binary section,
 * NULL for JSON). @return the root, or NULL with why in r->parser.err. */
const struct json *repl__parse(struct repl *r, const char *body, size_t len);
/* Starts a compact page (r->cbody, r->creps). */
void repl__compact_begin(struct repl *r);
/* Appends counter id (c) to the compact page. */
void repl__compact_counter(struct repl *r, uint32_t id, const struct gcounter *c);
/* The compact body into r->cout: r->out (the envelope) and the page. */
void repl__compact_wrap(struct repl *r);
/* Reads and merges r->cin (checked whole first). @return the replica entries changed, or
 * -1 with why in err (nothing merged). */
int repl__compact_merge(struct repl *r, int origin, char *err, size_t errlen);
/* Hands the token-set elements of the compact body merged last to the tokens hook. */
void repl__compact_tokens(struct repl *r, const char *from);

/* ---------------------------------------------------------------- repl_merge.c */

/* For repl_compact.c: skips entries as a JSON body's (see reject()); a new item (no
 * look-up of its name); one entry of item; merges the items read. */
void repl__reject(struct repl *r, const char *counter, size_t clen, const char *node, size_t nlen,
                  const char *reason, uint64_t entries);
uint32_t repl__item_new(struct repl *r, const char *name, uint32_t len);
/* Whether counter key[0..len) is replicated (the replicated hook; none: every counter). */
int repl__replicated(const struct repl *r, const char *key, size_t len);
/* A counter a message carried that this node does not replicate: left out, counted. */
void repl__ignore(struct repl *r);
/* Adds floor entry (rep, pos, neg) to item it's clear floor (dfloor 0) or delete floor,
 * joining it with an entry of the same replica: the floor being read must be the last one
 * pushed (a reader takes one floor of one counter at a time). */
void repl__life_push(struct repl *r, struct in_item *it, int dfloor, int rep, int64_t pos,
                     int64_t neg);
void repl__fold_push(struct repl *r, struct in_item *it, int rep);
void repl__push_entry(struct repl *r, uint32_t item, int rep, int64_t pos, int64_t neg);
int repl__merge_items(struct repl *r, int origin);

/*
 * Merges a /sync body (request or answer) into the store, tagging what it changes with
 * origin. Entries it cannot hold are skipped and recorded (r->rejects, r->nrejects).
 * @return the number of replica entries that changed, or -1 with e filled when the
 *         message itself is malformed (nothing merged).
 */
int repl__merge_body(struct repl *r, const struct json *root, int origin, struct merge_error *e);
/* Appends the last merge's rejected entries to the JSON object in r->out. */
void repl__put_rejects(struct repl *r);
/* Hands the body's token-set elements to the tokens hook (skipping those it cannot hold). */
void repl__apply_tokens(struct repl *r, const struct json *root, const char *from);
/* @return 1 when (peer, what) is new (to be logged), 0 when it was seen before. */
int repl__first_time(struct repl *r, const char *peer, const char *what);
/* Counts and logs (once) n counters sent to an original-format peer without decrements. */
void repl__decs_unsent(struct repl *r, const char *peer, int n);

/* ---------------------------------------------------------------- repl.c */

/* The faults policy's verdict on one message (the partition first). @return an enum
 * repl_action; *delay_ms is set for REPL_DELAY. */
int repl__decide(struct repl *r, const char *dir, const char *from, const char *to, int *delay_ms);
/* The origin tag of a node that sent us a /sync: a configured peer's, or 0. */
int repl__origin_of_node(const struct repl *r, const char *node_id);

/* ---------------------------------------------------------------- repl_serve.c */

/*
 * Reads a cursor this node gave out: "D.<inc>.<seq>[.<base>]" (a delta) or
 * "F.<inc>.<seq>.<id>" (a full walk). @return 0 with the fields set, or -1 when it is not
 * one of this incarnation's (the caller answers with full state).
 */
int repl__parse_cursor(struct repl *r, const char *s, int *full, uint64_t *seq, uint32_t *next,
                       uint64_t *base);
/* Unlinks and frees a delayed incoming /sync (its request is answered or dropped already). */
void repl__delayed_free(struct delayed_in *d);

#endif
