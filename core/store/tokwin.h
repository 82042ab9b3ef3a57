/*
 * tokwin.h - a window of (counter, token) keys, each with a small payload, bounded in
 * time and in number; the oldest go first.
 *
 * The idempotency window (dedup.h) is this: entries keyed by a counter name and a client's
 * token, forgotten after a while. Every insertion gets the next sequence number, so "what
 * was added after seq S" can be walked in order.
 * Plain C: no libevent, Lua or curl.
 */
#ifndef COUNTERD_STORE_TOKWIN_H
#define COUNTERD_STORE_TOKWIN_H

#include <stddef.h>
#include <stdint.h>

#define TOKWIN_KEY_MAX 511 /* counter + 1 + token */

struct tokwin;

/* max_entries: at most this many; window_s: each is forgotten after this long (unless put
 * with a window of its own, tokwin_put_for). */
struct tokwin *tokwin_new(size_t max_entries, double window_s);
void tokwin_free(struct tokwin *w);

/*
 * @return the payload of (counter, token) if it was put within the window (its length in
 *         *len, its time in *at when not NULL), else NULL. Valid until the next put
 *         or get (a get forgets what has expired).
 */
const void *tokwin_get(struct tokwin *w, const char *counter, size_t clen, const char *token,
                       size_t tlen, double now_s, size_t *len, double *at);
/*
 * Remembers (counter, token) with a copy of payload[0..len), replacing an older entry
 * with the same key, and evicts what is out of bounds.
 * @return the entry's sequence number, or 0 when the key is too long.
 */
uint64_t tokwin_put(struct tokwin *w, const char *counter, size_t clen, const char *token,
                    size_t tlen, double now_s, const void *payload, size_t len);
/* tokwin_put for an entry forgotten after window_s seconds instead of the window's own
 * (an idempotency window per namespace). @return as tokwin_put. */
uint64_t tokwin_put_for(struct tokwin *w, const char *counter, size_t clen, const char *token,
                        size_t tlen, double now_s, const void *payload, size_t len,
                        double window_s);
size_t tokwin_count(const struct tokwin *w);
/* Time the oldest entry was put (0: empty). */
double tokwin_oldest_at(const struct tokwin *w);
/* Entries evicted by the entry bound before their time was up (the window was cut short). */
uint64_t tokwin_evicted_young(const struct tokwin *w);
/* The sequence number of the latest put (0: none yet). */
uint64_t tokwin_seq(const struct tokwin *w);

typedef void (*tokwin_fn)(void *arg, const char *counter, size_t clen, const char *token,
                          size_t tlen, double at, const void *payload, size_t len, uint64_t seq);
/* Calls fn for each entry put after seq `after`, oldest first. */
void tokwin_foreach(const struct tokwin *w, uint64_t after, tokwin_fn fn, void *arg);

#endif
