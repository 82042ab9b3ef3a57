/*
 * names.h - the store's counters in byte order of their names: a sorted index of counter
 * ids, for listings that cost what they return (API.md, "GET /counters").
 *
 * The index holds 4 bytes per counter (its id) and a bit per id, nothing else: names are
 * read from the store. It is lazy: counters created since the last look (the id range
 * [indexed, gstore_count()), and dropped ids given to new counters) are sorted and merged
 * in by names_sync, which a listing calls first, or a slice at a time by names_sync_some
 * (the region's timer, so that the first listing after a bulk fill finds them sorted);
 * cursor and prefix are binary searches. Counters dropped (names_forget) leave at the
 * next sync.
 *
 * Plain C: no libevent, Lua or curl. Not thread-safe; one event loop owns it.
 */
#ifndef COUNTERD_STORE_NAMES_H
#define COUNTERD_STORE_NAMES_H

#include <stddef.h>
#include <stdint.h>

struct gstore;
struct names;

struct names *names_new(void);
void names_free(struct names *nx);

/*
 * Takes in the counters created since the last call: sorts them (O(k log k)) and merges
 * them into the index (O(n + k)), holding k ids more while it merges.
 * @return how many were taken in.
 */
uint32_t names_sync(struct names *nx, const struct gstore *st);
/* The same for at most max of them, the oldest first (bounded work for an idle slice). */
uint32_t names_sync_some(struct names *nx, const struct gstore *st, uint32_t max);
/*
 * Counter id is being dropped (call it before gstore_drop): O(1); the next sync takes it
 * out (so a listing, which syncs first, never shows it). An id not in the index is
 * ignored.
 */
void names_forget(struct names *nx, uint32_t id);
/* Counters created since the last call, not in the index yet. */
uint32_t names_pending(const struct names *nx, const struct gstore *st);

/* Counters in the index (gstore_live() right after names_sync). */
uint32_t names_count(const struct names *nx);
/* The id of the counter at position pos (< names_count()) in name order. */
uint32_t names_at(const struct names *nx, uint32_t pos);

/* @return the first position whose name is byte-wise greater than key[0..len) (the
 *         next page after a cursor naming key, whether or not key is a counter). */
uint32_t names_after(const struct names *nx, const struct gstore *st, const char *key, size_t len);

/* Sets [*lo, *hi) to the positions whose names start with prefix[0..len) (len 0: all). */
void names_prefix(const struct names *nx, const struct gstore *st, const char *prefix, size_t len,
                  uint32_t *lo, uint32_t *hi);

/* Bytes the index holds. */
size_t names_memory(const struct names *nx);

#endif
