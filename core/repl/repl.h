/*
 * repl.h - push-pull anti-entropy between region nodes over HTTP /sync.
 *
 * Every interval (and on demand, for force-sync) a round runs: with each peer, one or
 * more exchanges, each a POST /sync that pushes what the peer has not acknowledged and
 * pulls what this node has not seen (the peer's answer). Both directions are deltas
 * after first contact: pushes start at the sequence number the peer last acknowledged,
 * pulls at the opaque cursor the peer gave us last time. Large states travel in pages.
 * A full-state exchange runs on first contact and after a peer restarts. Anti-entropy runs
 * every full_every rounds, after a partition heals and in every round asked for
 * (force-sync): a digest exchange with a counterd peer (repl_digest.c: what differs, found
 * by comparing hash trees), full state with a peer of the original lab.
 *
 * Every message passes through a decision hook (the faults policy): deliver, drop or
 * delay. A partitioned node neither sends nor accepts replication, whatever the hook
 * says: the partition of API.md is symmetric.
 */
#ifndef COUNTERD_REPL_REPL_H
#define COUNTERD_REPL_REPL_H

#include <stddef.h>
#include <stdint.h>

#include "../net/http.h"

struct buf;
struct json;

struct event_base;
struct client;
struct gstore;
struct metrics;
struct tokset;
struct repl;
struct trace_span;

enum repl_action { REPL_DELIVER, REPL_DROP, REPL_DELAY };

/* One token-set element as a peer sent it. */
struct repl_token {
    const char *tok;
    size_t tlen;
    int64_t amount;
    int settled;
};

struct repl_hooks {
    /*
     * Decides the fate of one message. dir is "out" (this node sends) or "in" (this node
     * received it); from/to are node ids (a peer's URL until its id is known).
     * @return an enum repl_action (REPL_DELAY sets *delay_ms), or -1 when the hook
     *         failed: the message is then treated as if there were no hook.
     */
    int (*decide)(void *arg, const char *dir, const char *from, const char *to, const char *kind,
                  int partitioned, int *delay_ms);
    /* Called for every counter a merge changed (to persist it); may be NULL. */
    void (*changed)(void *arg, uint32_t id);
    /* Called after changed with what the merge added to the counter's value; may be NULL. */
    void (*added)(void *arg, uint32_t id, int64_t amount);
    /* Called, after its entries were merged, with the token-set elements a peer sent for
     * counter id (see store/tokset.h): the caller joins them. May be NULL. */
    void (*tokens)(void *arg, uint32_t id, const struct repl_token *el, size_t n);
    void *arg;
    /*
     * Called before a /sync push is built: writes this node's log, so that no change
     * leaves for a peer before it is in the log (a node keeps its replica id after a
     * crash only on that condition; see store/wal.h). May be NULL.
     * @return 0, or -1 to fail the exchange (it is retried next round).
     */
    int (*before_send)(void *arg);
    /*
     * Called before a peer's answer of len bytes is merged: whether the merge could be
     * logged (a full disk refuses it; see store/wal.h "Failures"). May be NULL.
     * @return 0, or -1 to fail the exchange, merging nothing (it is retried next round).
     */
    int (*before_merge)(void *arg, size_t len);
    /*
     * Whether the counter keyed key is replicated (README "Counter lifecycle": namespaces of
     * type "regional" are counted where they land and never leave the node). A counter
     * that is not is left out of every delta, full-state page and digest this node sends,
     * and dropped from what it receives. May be NULL: every counter is replicated.
     */
    int (*replicated)(void *arg, const char *key, size_t len);
    /*
     * Extra members of every counterd /sync message this node sends (requests and
     * answers, digest steps included): put_ext appends ",\"name\":<value>" members to
     * the JSON object being written into b (nothing for no member); take_ext is given
     * every counterd message received, once it was accepted (the namespace register
     * travels so). May be NULL.
     */
    void (*put_ext)(void *arg, struct buf *b);
    void (*take_ext)(void *arg, const struct json *msg);
};

struct repl_config {
    const char *node_id, *region, *service;
    const char *const *peers; /* base URLs, e.g. http://127.0.0.1:8002 */
    int npeers;
    int interval_ms;             /* default 5000 */
    int timeout_ms;              /* one exchange; default 3000 */
    int full_every;              /* anti-entropy every N rounds; default 12 */
    size_t page_bytes;           /* target size of one /sync body; default 1 MiB */
    const char *auth_header;     /* sent with every /sync, e.g. "Authorization: Bearer x" */
    const struct tokset *tokset; /* the counters' token sets, sent with them; may be NULL */
    const char *replica_id;      /* this node's replica id: a peer may not fold it; may be NULL */
};

/* The largest /sync body a node accepts. */
#define REPL_MAX_BODY (16u << 20)

struct repl *repl_new(struct event_base *base, struct client *client, struct gstore *store,
                      struct metrics *metrics, const struct repl_config *cfg,
                      const struct repl_hooks *hooks);
/* Stops rounds; waiters are called with completed = 0. */
void repl_free(struct repl *r);

void repl_set_partition(struct repl *r, int on);
int repl_partitioned(const struct repl *r);
/* Unix time of the last successful exchange with any peer; 0 if none yet. */
double repl_last_sync_time(const struct repl *r);
/*
 * The highest change seq that every peer is known to hold, token-set elements included
 * (0 until each peer completed an exchange): what is settled at or before it may be
 * forgotten. With no peers, the store's seq.
 */
uint64_t repl_tokens_acked(const struct repl *r);
/*
 * Fills ids[0..npeers) with the peers' node ids as learned from their answers.
 * @return how many are known (the others are NULL).
 */
int repl_peer_ids(const struct repl *r, const char **ids, int max);
/* Asks the peers whose node id is not known yet for it (GET /health; at most once a second
 * each), without waiting for a sync round. */
void repl_learn_peer_ids(struct repl *r);
/*
 * The fold gate (README "Durability"). repl_fold_want(r, t) asks every round to pull the
 * full state of each peer not fully pulled since monotonic time t (0: stop asking).
 * @return 1 when every peer's full state was pulled in a series that began at or after t
 *         (clock_mono_ms), with nothing skipped, and every peer understands folded
 *         replicas; otherwise 0 with why.
 */
void repl_fold_want(struct repl *r, double after_ms);
int repl_fold_ready(const struct repl *r, double after_ms, char *why, size_t n);
/*
 * Whether every peer knows the counter lifecycle (its answers say "life"; none speaks the
 * original lab's /sync). A peer that does not keeps deleted counters alive and would send
 * their entries back after a drop: tombstones should not be dropped until this says 1.
 * @return 1 or 0 (0 too while a peer has not answered yet); with no peers, 1.
 */
int repl_peers_know_life(const struct repl *r);
/*
 * Counter id is being dropped (gstore_drop; call it first, while the counter exists): the
 * digest forgets it (store/digest.h digest_forget). Its id may then be given to another name.
 */
void repl_forget(struct repl *r, uint32_t id);
/* This process' incarnation id (hex), sent with every message. */
const char *repl_incarnation(const struct repl *r);

/*
 * Runs a complete round with every peer, starting now or right after the round in
 * flight, and calls done(arg, 1) once it has finished (whatever each peer answered), or
 * done(arg, 0) from repl_free if it never will.
 */
void repl_sync_now(struct repl *r, void (*done)(void *arg, int completed), void *arg);
/* The same, for a traced request (parent may be NULL): the round's spans join its trace
 * (when several requests wait for one round, the first traced one's). */
void repl_sync_now_traced(struct repl *r, const struct trace_span *parent,
                          void (*done)(void *arg, int completed), void *arg);

/* What the status views say of one peer. */
struct repl_peer_info {
    const char *url;
    const char *node_id;    /* NULL until it has answered */
    const char *status;     /* of the last finished round: "ok", "failed", "partitioned",
                               "never" (no round finished yet) */
    const char *last_error; /* the last failure, or why the last partitioned round was; NULL */
    double last_ok;         /* unix time of the last successful round; 0: none */
    double last_error_time; /* unix time of last_error; 0: none */
    int failed_rounds;      /* consecutive */
    const char *format;     /* "counterd", "original" (the original lab's /sync), NULL: unknown */
    uint64_t acked;         /* changes up to this seq are on the peer (see repl_tokens_acked) */
};
int repl_peer_count(const struct repl *r);
/* Fills out for peer i (0 <= i < repl_peer_count); the strings live until the next round. */
void repl_peer_info(const struct repl *r, int i, struct repl_peer_info *out);

/* Answers POST /sync: merges the body and answers this node's state (API.md). */
void repl_handle_sync(struct repl *r, struct http_request *req);

#endif
