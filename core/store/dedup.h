/*
 * dedup.h - the idempotency window: which (counter, token) increments were already applied.
 *
 * A client (or the gateway, failing over to another region) may send the same increment
 * twice; with an idempotency_token the second one must return the first answer and count
 * nothing. Entries are remembered for a bounded time and a bounded number; the oldest go
 * first. Plain C: no libevent, Lua or curl.
 */
#ifndef COUNTERD_STORE_DEDUP_H
#define COUNTERD_STORE_DEDUP_H

#include <stddef.h>
#include <stdint.h>

#define DEDUP_TOKEN_MAX 128

struct dedup;

/* local_count of an entry for a token this region did not add to its own entry (it took
 * it as pending for the token's home, or learned it from a peer): a retry here is a
 * duplicate, answered with the counts of the moment. DEDUP_SETTLED: the same, known to
 * be settled by its home (store/tokset.h). */
#define DEDUP_ELSEWHERE INT64_MIN
#define DEDUP_SETTLED (INT64_MIN + 1)

/* What the first request with a token was answered. */
struct dedup_answer {
    int64_t amount, local_count, total_count;
};

/* max_entries: at most this many remembered; window_s: each is forgotten after this long. */
struct dedup *dedup_new(size_t max_entries, double window_s);
void dedup_free(struct dedup *d);
/* Gives each counter key its own window (a namespace's idempotency window): fn answers
 * the window of the entries put from now on, in seconds. NULL: window_s for all. */
void dedup_set_window_fn(struct dedup *d, double (*fn)(void *arg, const char *counter, size_t clen),
                         void *arg);

/* @return 1 and the first answer when (counter, token) was seen within the window, else 0. */
int dedup_get(struct dedup *d, const char *counter, size_t clen, const char *token, size_t tlen,
              double now_s, struct dedup_answer *out);
/* Remembers an applied increment (evicting the oldest entries to stay in bounds). */
void dedup_put(struct dedup *d, const char *counter, size_t clen, const char *token, size_t tlen,
               double now_s, const struct dedup_answer *a);
size_t dedup_count(const struct dedup *d);
/* Time the oldest remembered entry was put (0: none), and how many entries the entry bound
 * evicted before the window was up: what cuts the idempotency guarantee short. */
double dedup_oldest_at(const struct dedup *d);
uint64_t dedup_evicted_young(const struct dedup *d);

/* Calls fn for every remembered entry, oldest first (for snapshots). */
void dedup_foreach(const struct dedup *d,
                   void (*fn)(void *arg, const char *counter, size_t clen, const char *token,
                              size_t tlen, double at, const struct dedup_answer *a),
                   void *arg);

#endif
