/*
 * topk.h - a bounded set of the heaviest keys (counter ids), for "what changed most" and
 * "what is largest" without a scan of the store (API.md, "GET /top").
 *
 * A fixed number of slots, a min-heap over their weights and a hash from key to slot;
 * nothing grows after topk_new. Two ways to feed it:
 *   - topk_add: the space-saving sketch (Metwally et al., 2005). A key not held takes the
 *     lightest slot and its weight plus the amount, and remembers that weight as its
 *     possible overcount (err). Every key whose true sum exceeds total/slots is held, and
 *     a held key's weight is its true sum plus at most err.
 *   - topk_set: the largest values. A key's weight is its current value; a key not held
 *     replaces the lightest one only if it is heavier. Exact for values that only grow;
 *     a held key whose value falls stays held until heavier ones push it out.
 * One instance uses one of the two.
 *
 * Plain C: no libevent, Lua or curl, no clock (the caller rotates windows). Not
 * thread-safe; one event loop owns it.
 */
#ifndef COUNTERD_STORE_TOPK_H
#define COUNTERD_STORE_TOPK_H

#include <stddef.h>
#include <stdint.h>

struct topk;

struct topk_item {
    uint32_t key;
    int64_t weight;
    int64_t err; /* topk_add: how much of weight may not be this key's (0 for topk_set) */
};

/* @return a set of slots (1..1<<20) keys, empty. */
struct topk *topk_new(unsigned slots);
void topk_free(struct topk *t);
/* Empties it (keeps its slots). */
void topk_reset(struct topk *t);

/* Space-saving: adds amount (> 0; others are ignored) to key's weight. */
void topk_add(struct topk *t, uint32_t key, int64_t amount);
/* Largest values: sets key's weight to value (taking a slot when it is among the largest). */
void topk_set(struct topk *t, uint32_t key, int64_t value);

/* Forgets key (a counter deleted or dropped): its slot is free again. */
void topk_remove(struct topk *t, uint32_t key);
/* @return 1 and *out filled when key is held, else 0. */
int topk_get(const struct topk *t, uint32_t key, struct topk_item *out);
/* Keys held. */
unsigned topk_count(const struct topk *t);
/* The sum of every amount topk_add took since the last reset. */
int64_t topk_total(const struct topk *t);
/* Copies the held keys into out[0..max), heaviest first (ties: smaller key first).
 * @return how many. */
unsigned topk_list(const struct topk *t, struct topk_item *out, unsigned max);

size_t topk_memory(const struct topk *t);

#endif
