/*
 * strong.h - the strong counter's leader: increments acknowledged by a majority.
 *
 * One leader (the strong service, port 8004) orders every increment and replicates it to
 * the replicas, one per region node (repl/replica.c). An increment is acknowledged only
 * after a majority of the replicas has fsynced the counter's new value. Without one it
 * fails, and the leader's value does not move; the failure says what is known:
 *   - STRONG_NO_QUORUM: provably not applied. The proposal never left the leader, every
 *     replica refused it, or every replica that may hold it has since taken the next
 *     round's higher ballot (or a majority has), so no later leader can adopt it.
 *   - STRONG_AMBIGUOUS: a replica may hold the proposal (it accepted it, or its answer
 *     never came) and no later round has yet replaced it at a majority: a leader that
 *     recovers from that replica may adopt it, so it may or may not be applied.
 * After a failed round the next one repairs (proposes the committed values again) before
 * it carries new increments, and a failed round's increments get their answer from that
 * repair: a repair that reaches a majority, or every replica that held the proposal,
 * turns an unknown outcome into a certain no_quorum.
 *
 * Replicas without a log (a region node without DATA_DIR) say "durable": false in their
 * answers. Such an answer counts toward no majority, since what it accepted is gone after
 * the node restarts and a recovering leader would read older values back, unless the
 * leader was started with allow_volatile: then it counts, and answers that rest on it say
 * durable 0.
 *
 * The protocol is single-decree Paxos per counter, with one stable leader:
 *   - A starting leader picks an epoch higher than any replica promised (prepare), reads
 *     what a majority accepted and keeps, per counter, the value of the highest ballot
 *     (epoch, round): every acknowledged value was accepted by a majority, and any two
 *     majorities meet, so none is lost. It then proposes those values again in its epoch.
 *   - Increments queue while a round is in flight and go out together in the next round
 *     (group commit); inside a round they are ordered as they arrived, so each answer
 *     carries the value right after its own increment. "lock_wait_ms" is the time an
 *     increment waited for the round in flight: the leader's lock.
 *   - A round that misses its majority leaves the committed values as they were; the next
 *     round (with a higher ballot) proposes the committed value again for every counter
 *     it touched, so a replica that accepted the failed proposal forgets it.
 *   - A replica refusing an epoch (stale_epoch) means another leader took over: this one
 *     prepares again with a higher epoch.
 *
 * Every message passes through a decision hook (the faults policy: drop or delay, both
 * ways), so partitions cut strong replication and the WAN latency model slows it.
 */
#ifndef COUNTERD_REPL_STRONG_H
#define COUNTERD_REPL_STRONG_H

#include <stddef.h>
#include <stdint.h>

struct event_base;
struct client;
struct strong;
struct trace_span;

#define STRONG_MAX_REPLICAS 16

struct strong_config {
    const char *node_id, *region;
    const char *replica_names[STRONG_MAX_REPLICAS]; /* regions, e.g. "us-west" */
    const char *replica_urls[STRONG_MAX_REPLICAS];  /* base URLs */
    int nreplicas;
    int timeout_ms;          /* one round, not counting simulated delays; default 3000 */
    const char *auth_header; /* "Authorization: Bearer x", or NULL */
    int allow_volatile;      /* count replicas that keep no data toward a majority */
};

struct strong_hooks {
    /*
     * Decides the fate of one message: dir "out", from/to node ids (a replica's region
     * until its node id is known), kind "strong" (leader to replica) or "strong-ack" (the
     * answer). @return 0 deliver, 1 drop, 2 delay (*delay_ms set), -1 no decision.
     */
    int (*decide)(void *arg, const char *dir, const char *from, const char *to, const char *kind,
                  int *delay_ms);
    void *arg;
};

enum strong_status {
    STRONG_OK,
    STRONG_NO_QUORUM,
    STRONG_OVERFLOW,
    STRONG_AMBIGUOUS,
    STRONG_NOT_FOUND /* a clear or delete of a counter that does not exist (or was deleted) */
};

struct strong_result {
    enum strong_status status;
    int64_t value;       /* the counter right after this increment (STRONG_OK) */
    int durable;         /* STRONG_OK: a majority that keeps its data on disk accepted it */
    double lock_wait_ms; /* queued behind the round in flight */
    double round_ms;     /* the replication round that decided it */
    const char *detail;  /* why it failed (NULL when it did not) */
    int duplicate;       /* its token was seen: nothing was applied again, value is the first's */
    int64_t before;      /* a clear: the value it cleared */
};

typedef void (*strong_done_fn)(void *arg, const struct strong_result *r);

struct strong *strong_new(struct event_base *base, struct client *client,
                          const struct strong_config *cfg, const struct strong_hooks *hooks);
/* Stops; every pending increment is answered first: STRONG_NO_QUORUM when it was not
 * sent, STRONG_AMBIGUOUS when it was. */
void strong_free(struct strong *s);

/*
 * Queues an increment (name must be valid); done is called exactly once: later, from the
 * loop, or from inside this call when no round is in flight and the increment fails alone
 * (STRONG_OVERFLOW: the counter would leave int64). The caller must not touch arg after
 * this call (unit.strong's test_overflow_fails_alone shows the synchronous case).
 */
void strong_increment(struct strong *s, const char *name, size_t len, int64_t amount,
                      strong_done_fn done, void *arg);
/* The same for a traced request (span may be NULL): the round that carries it, and its
 * messages to the replicas, join the request's trace (the first traced one's, when a
 * round carries several). */
void strong_increment_traced(struct strong *s, const char *name, size_t len, int64_t amount,
                             const struct trace_span *span, strong_done_fn done, void *arg);

/*
 * The lifecycle operations (API.md, "Strong namespaces"), on a store key ("ns/name").
 * An idempotency token is proposed in the same round as the value it produced, as an entry
 * "~<ns>/<token>" holding the answer's value (strongrep.h), so a majority holds both or
 * neither: a retry after an ambiguous 503 applies exactly once, across a leader restart
 * too. The leader forgets a token window_s after it saw it (after a restart: a window after
 * recovering it) by proposing STRONGREP_FORGET for its entry.
 */
#define STRONG_TOKEN_WINDOW_S 600
enum strong_kind { STRONG_ADD, STRONG_CLEAR, STRONG_DELETE };
struct strong_op {
    enum strong_kind kind;
    const char *name; /* a valid store key */
    size_t len;
    int64_t amount;    /* STRONG_ADD: non-zero */
    const char *token; /* NULL: none; else 1-STRONGREP_TOKEN_MAX bytes, none below 0x20 */
    size_t tlen;
    int window_s; /* how long the token is remembered; 0: STRONG_TOKEN_WINDOW_S */
    const struct trace_span *span;
};
/* Queues op; done is called exactly once, as for strong_increment. A clear or delete of a
 * counter that does not exist answers STRONG_NOT_FOUND; a clear's result has .before. */
void strong_submit(struct strong *s, const struct strong_op *op, strong_done_fn done, void *arg);
/* @return 1 with *value when name is a live counter, 0 when unknown or deleted. */
int strong_get(const struct strong *s, const char *name, size_t len, int64_t *value);

/* Whether the leader has recovered from a majority and serves. */
int strong_ready(const struct strong *s);
/* The committed value of name (0 when unknown). Only meaningful when ready. */
int64_t strong_value(const struct strong *s, const char *name, size_t len);
/* Calls fn for every committed counter (not deleted ones, nor token entries). */
void strong_each(const struct strong *s,
                 void (*fn)(void *arg, const char *name, size_t len, int64_t value), void *arg);

struct strong_stats {
    uint64_t epoch, rounds_committed, rounds_failed;
    int replicas_up; /* replicas whose last exchange succeeded */
    double last_round_ms;
};
void strong_stats(const struct strong *s, struct strong_stats *out);
/* Whether replica i answered its last exchange. */
int strong_replica_up(const struct strong *s, int i);
/* Whether replica i said it keeps its data on disk: 1 yes, 0 no, -1 not known yet. */
int strong_replica_durable(const struct strong *s, int i);
/* Whether every value the leader holds rests on a majority that keeps its data on disk:
 * always 1 unless allow_volatile; then 0 from the first recovery or round that counted a
 * replica without data toward its majority, until the leader restarts. */
int strong_durable(const struct strong *s);
/* Why the last exchange failed ("" when none has, or one succeeded since). */
const char *strong_last_error(const struct strong *s);

#endif
