/*
 * digest.h - a hash tree over the store's counters, so two nodes find what differs between
 * them by exchanging a few fingerprints instead of their whole state (anti-entropy as
 * Dynamo, Cassandra and Riak do it).
 *
 * Every counter falls in one of DIGEST_LEAVES leaves by a fixed hash of its name (the
 * same on every node). Its own hash is computed canonically from its name, its non-zero
 * entries keyed by replica NAME (interned ids differ per node), its folded replicas and its
 * lifecycle state (both floors, entry by entry as the entries, and its flags; gstore.h
 * "Lifecycle"), so it does not depend on the order changes arrived in, and two nodes that
 * differ only in a clear, a deletion or a seal differ. Counters the keep filter refuses
 * (digest_set_keep: those a node does not replicate) are in no fingerprint, and ids of
 * dropped counters (gstore_exists) in no leaf. A leaf's fingerprint is the sum
 * (mod 2^64) of its counters' hashes, and each node of the tree above the leaves the sum of
 * its children: two nodes holding the same state have equal fingerprints everywhere, and
 * any single difference changes the fingerprint of its leaf and of every ancestor (up to
 * a 2^-64 chance).
 *
 * The tree is maintained lazily: digest_update walks the store's change list since the
 * last call, recomputes each touched leaf from its members (a per-leaf list of counter ids:
 * 4 bytes per counter) and adds the difference to the leaf's ancestors. Token sets
 * (store/tokset.h) are not part of the fingerprint.
 *
 * Plain C: no libevent, Lua or curl. Never changes the store. Not thread-safe.
 */
#ifndef COUNTERD_STORE_DIGEST_H
#define COUNTERD_STORE_DIGEST_H

#include <stddef.h>
#include <stdint.h>

struct gstore;
struct digest;

#define DIGEST_LEAF_BITS 17 /* 131,072 leaves: about 8 counters a leaf at 1M counters */
#define DIGEST_LEAVES (1u << DIGEST_LEAF_BITS)
#define DIGEST_FANOUT_BITS 3 /* 8 children a node (the root has 4) */
#define DIGEST_DEPTH 6       /* levels 0 (the root) .. DIGEST_DEPTH (the leaves) */

struct digest *digest_new(void);
void digest_free(struct digest *d);

/*
 * Brings the tree up to date with every change of st since the last call (the first call
 * takes in the whole store). d must always be used with the same store.
 * @return the number of counters whose hash was computed.
 */
size_t digest_update(struct digest *d, const struct gstore *st);

/*
 * Leaves out of every fingerprint the counters for which keep(arg, key, len) is 0 (NULL:
 * none is left out). The answer for a key must not change once the key is in the tree.
 */
void digest_set_keep(struct digest *d, int (*keep)(void *arg, const char *key, size_t len),
                     void *arg);

/*
 * Counter id is being dropped (called before gstore_drop, while it still exists): it leaves
 * its leaf, whose fingerprint is recomputed at the next update. The id may be given to
 * another counter later: digest_update links it again, in that counter's leaf.
 */
void digest_forget(struct digest *d, uint32_t id);

/* How many nodes level (0..DIGEST_DEPTH) has: a power of two. */
uint32_t digest_level_size(int level);
/* How many children a node of level (0..DIGEST_DEPTH-1) has. */
uint32_t digest_fanout(int level);
/* The fingerprint of node i of level (as of the last digest_update). */
uint64_t digest_node(const struct digest *d, int level, uint32_t i);
/* The root's fingerprint: equal on two nodes holding the same state. */
uint64_t digest_root(const struct digest *d);

/* The leaf a counter called name[0..len) belongs to, on every node. */
uint32_t digest_leaf_of(const char *name, size_t len);
/* The canonical hash of counter id (see the top of this file). */
uint64_t digest_counter_hash(struct digest *d, const struct gstore *st, uint32_t id);

/* The counters of leaf (as of the last digest_update): the first, then each next; the
 * end is GSTORE_NONE. */
uint32_t digest_leaf_first(const struct digest *d, uint32_t leaf);
uint32_t digest_leaf_next(const struct digest *d, uint32_t id);

/* Bytes the digest holds. */
size_t digest_memory(const struct digest *d);

#endif
