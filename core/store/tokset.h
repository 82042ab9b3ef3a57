/*
 * tokset.h - each counter's token set: the increments a region took for a token whose home
 * is another region, part of the counter's CRDT state.
 *
 * Every idempotency token T has one home region (tokset_home). Only the home ever adds a
 * tokened increment to a replica entry. Any other region that takes T adds an element
 * (T, amount, pending) to the counter's set instead; the home, on learning a pending
 * element, applies its amount to its own entry (unless it had applied T already) and marks
 * the element settled in the same change. A counter's value is the sum of its entries plus
 * the amounts of its pending elements, so the increment counts once wherever it was taken
 * and whatever was retried.
 *
 * Merge is a join: per token, the larger of (state, amount) with settled > pending; the
 * same token always names the same increment, so differing amounts only come from a client
 * that reused a token (counted as a conflict; the larger amount is kept).
 *
 * Every element carries the store sequence number of its last change, so replication and
 * the log carry only what changed. A settled element is dropped (tokset_gc) once every peer
 * has acknowledged a position at or after its settling; a pending one never is.
 *
 * Plain C: no libevent, Lua or curl. Not thread-safe; one event loop owns it.
 */
#ifndef COUNTERD_STORE_TOKSET_H
#define COUNTERD_STORE_TOKSET_H

#include <stddef.h>
#include <stdint.h>

#define TOKSET_TOKEN_MAX 128

/* tokset_merge's result bits. */
#define TOKSET_CHANGED 1  /* added, or its state or amount changed: the counter changed */
#define TOKSET_CONFLICT 2 /* the same token with another amount */
#define TOKSET_SETTLED 4  /* a pending element (or a new one) became settled */

struct tokset;

struct tokset *tokset_new(void);
void tokset_free(struct tokset *ts);

/*
 * The home region of a token among the node ids ids[0..n) (in any order): ids[i] when the
 * token is "<ids[i]>/<rest>", otherwise the highest of a fixed hash of (id, token)
 * (rendezvous hashing: the same answer in every process that has the same set).
 * @return the index in ids, or -1 when n == 0.
 */
int tokset_home(const char *tok, size_t tlen, const char *const *ids, int n);

/* @return 1 with its amount and state when (counter id, tok) is in the set, else 0. */
int tokset_get(const struct tokset *ts, uint32_t id, const char *tok, size_t tlen, int64_t *amount,
               int *settled);
/* Sum of the amounts of counter id's pending elements (0 when it has none). */
int64_t tokset_pending(const struct tokset *ts, uint32_t id);
/* Number of counter id's elements (pending and settled). */
unsigned tokset_elements(const struct tokset *ts, uint32_t id);

/*
 * Joins (tok, amount, settled) into counter id's set, stamping a change with seq.
 * @return TOKSET_* bits (0: nothing changed); tlen must be 1..TOKSET_TOKEN_MAX.
 */
int tokset_merge(struct tokset *ts, uint32_t id, const char *tok, size_t tlen, int64_t amount,
                 int settled, uint64_t seq);

/*
 * Drops the settled elements whose settling change is at or before acked (every peer has
 * it). @return how many were dropped.
 */
size_t tokset_gc(struct tokset *ts, uint64_t acked);
/*
 * Forgets counter id's whole set, pending and settled (the counter was dropped: its id
 * may name another counter next). @return how many elements were dropped.
 */
size_t tokset_forget(struct tokset *ts, uint32_t id);

typedef void (*tokset_fn)(void *arg, uint32_t id, const char *tok, size_t tlen, int64_t amount,
                          int settled, uint64_t seq);
/* Calls fn for counter id's elements changed after seq `after`, oldest change first. */
void tokset_each(const struct tokset *ts, uint32_t id, uint64_t after, tokset_fn fn, void *arg);
/* Calls fn for every pending element (fn must not change the set). */
void tokset_each_pending(const struct tokset *ts, tokset_fn fn, void *arg);

size_t tokset_count(const struct tokset *ts);
size_t tokset_pending_count(const struct tokset *ts);
uint64_t tokset_conflicts(const struct tokset *ts);
/* Bytes held, for metrics. */
size_t tokset_memory(const struct tokset *ts);

#endif
