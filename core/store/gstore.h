/*
 * gstore.h - the CRDT store: one PN-counter per name, keyed by replica.
 *
 * A counter is two G-Counters side by side: per replica, the total of its increments
 * (pos) and the total of its decrements (neg). Merge takes the per-replica maximum of
 * each, so it is commutative, associative and idempotent; the value is sum(pos) -
 * sum(neg). Each entry is an exact int64_t: an increment that would take its replica's
 * own entry out of that range is refused (GSTORE_EOVERFLOW) and changes nothing. Sums are
 * never refused: they are computed in 128 bits (255 entries of up to 2^63-1 fit), so a
 * merge never fails for the range of a total, and readers clamp or print them exactly.
 *
 * Replica ids (node ids, or one id per incarnation of a node) are interned to small
 * integers. Counters are addressed by a dense uint32_t id that never changes, and every
 * change gives the counter a new sequence number and moves it to the tail of a change
 * list, so "what changed after seq S" costs the number of changed counters, not the size
 * of the store. That is what replication deltas and sync cursors are built on.
 *
 * Plain C: no libevent, Lua or curl. Not thread-safe; one event loop owns it.
 */
#ifndef COUNTERD_STORE_GCOUNTER_H
#define COUNTERD_STORE_GCOUNTER_H

#include <stddef.h>
#include <stdint.h>

#define GSTORE_NONE UINT32_MAX
#define GSTORE_MAX_REPLICAS 65535
#define GSTORE_REPLICA_NAME_MAX 240
#define GCOUNTER_MAX_ENTRIES 255
#define GCOUNTER_NAME_MAX 255

/* Folded incarnations a counter may hold (see gstore_fold): bounds its log record. */
#define GCOUNTER_MAX_FOLDED 1024

/* Errors returned by the mutating calls; nothing is applied when one is returned. */
#define GSTORE_EOVERFLOW (-1) /* the replica's own entry would leave the int64 range */
#define GSTORE_EFULL (-2)     /* more than GCOUNTER_MAX_ENTRIES replicas in one counter */
#define GSTORE_EFOLDED (-3)   /* more than GCOUNTER_MAX_FOLDED folded replicas in one counter */

struct gstore;
struct gcounter;

/* Totals, exact: up to 255 entries of up to 2^63-1 each always fit 128 bits. */
__extension__ typedef __int128 gstore_wide;

/* v clamped to the int64_t range; *beyond (may be NULL) says whether it was clamped. */
static inline int64_t gstore_clamp(gstore_wide v, int *beyond)
{
    int out = v > INT64_MAX || v < INT64_MIN;
    if (beyond)
        *beyond = out;
    return v > INT64_MAX ? INT64_MAX : v < INT64_MIN ? INT64_MIN : (int64_t)v;
}

/* API.md's rule for counter names and replica ids: 1-200 bytes of [A-Za-z0-9_.:-]. */
static inline int gstore_counter_name_valid(const char *s, size_t n)
{
    if (n == 0 || n > 200)
        return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '.' || c == ':' || c == '-'))
            return 0;
    }
    return 1;
}

/*
 * A replica id is a node id, optionally followed by "~" and 1-32 bytes of [A-Za-z0-9]
 * naming one incarnation of that node (a node that lost its data comes back as a new
 * replica, so the per-replica max of a merge never swallows its new increments).
 * @return the length of the node id part, or 0 when the id is not valid.
 */
static inline size_t gstore_counter_replica_node_len(const char *s, size_t n)
{
    size_t k = 0;
    while (k < n && s[k] != '~')
        k++;
    if (!gstore_counter_name_valid(s, k))
        return 0;
    if (k == n)
        return k;
    size_t tail = n - k - 1;
    if (tail == 0 || tail > 32)
        return 0;
    for (size_t i = k + 1; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')))
            return 0;
    }
    return k;
}

/*
 * A store key: a counter of namespace "default" is keyed by its name; a counter of any
 * other namespace by "<namespace>/<name>" (README "Counter lifecycle"). Namespace names are
 * 1-GSTORE_NS_MAX bytes of [A-Za-z0-9_.-], so a key is at most 249 bytes.
 */
#define GSTORE_NS_MAX 48
static inline int gstore_ns_name_valid(const char *s, size_t n)
{
    if (n == 0 || n > GSTORE_NS_MAX)
        return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '.' || c == '-'))
            return 0;
    }
    return 1;
}
/* @return the length of the namespace part of a key ("ns/name": 2; a bare name: 0), or
 *         -1 when the key is not a valid one. */
static inline int gstore_key_ns_len(const char *s, size_t n)
{
    size_t k = 0;
    while (k < n && s[k] != '/')
        k++;
    if (k == n)
        return gstore_counter_name_valid(s, n) ? 0 : -1;
    if (!gstore_ns_name_valid(s, k) || !gstore_counter_name_valid(s + k + 1, n - k - 1))
        return -1;
    return (int)k;
}
static inline int gstore_key_valid(const char *s, size_t n)
{
    return gstore_key_ns_len(s, n) >= 0;
}

/* One replica's totals, as merged: both are >= 0. */
struct gentry {
    int rep;
    int64_t pos;
    int64_t neg;
};

struct gstore *gstore_new(void);
void gstore_free(struct gstore *st);

/*
 * Interns a replica id.
 * @return its small integer (>= 0), or -1 when name is empty, longer than
 *         GSTORE_REPLICA_NAME_MAX, or the table is full.
 */
int gstore_replica(struct gstore *st, const char *name, size_t len);
/* @return the replica's id string (NUL-terminated), or NULL when rep is not interned. */
const char *gstore_replica_name(const struct gstore *st, int rep);
/* @return the node a replica belongs to (its id up to '~'), or -1 when rep is not
 *         interned; gstore_node_name names it. */
int gstore_replica_node(const struct gstore *st, int rep);
const char *gstore_node_name(const struct gstore *st, int node);
int gstore_replica_count(const struct gstore *st);

/*
 * How many replica entries a new counter gets room for (default: every replica interned
 * so far). A region sets it to the number of nodes: counters then never reallocate as
 * the peers' entries arrive, which would leave a freed block per counter behind.
 */
void gstore_expect_replicas(struct gstore *st, int n);

/* @return the id of the counter called name, or GSTORE_NONE. */
uint32_t gstore_find(const struct gstore *st, const char *name, size_t len);
/*
 * Finds or creates the counter called name (1..GCOUNTER_NAME_MAX bytes; the caller
 * validates the alphabet). A new counter has no entries and value 0.
 * @return its id, or GSTORE_NONE when len is out of range.
 */
uint32_t gstore_create(struct gstore *st, const char *name, size_t len);
/*
 * Makes room for n more counters (the table and the id index), so that creating them
 * rehashes nothing: for a transfer that says how many counters it brings. A hint only:
 * nothing is refused beyond it, and an n out of range does nothing.
 */
void gstore_reserve(struct gstore *st, uint32_t n);
/* @return the counter with this id; id must be < gstore_count() and gstore_exists(). */
const struct gcounter *gstore_counter(const struct gstore *st, uint32_t id);
/* One past the highest id in use: walks over ids go up to it and skip !gstore_exists().
 * A new counter takes the lowest dropped id, or this one. */
uint32_t gstore_count(const struct gstore *st);

/*
 * Adds amount (negative: a decrement) to replica rep of counter id.
 * @return 0, or GSTORE_EOVERFLOW / GSTORE_EFULL with nothing applied.
 */
int gstore_incr(struct gstore *st, uint32_t id, int rep, int64_t amount);

/*
 * Checks that merging in[0..n) into counter id (GSTORE_NONE: a counter not created yet)
 * would succeed. Entries must have pos, neg >= 0; a replica may appear more than once.
 * @return 0, or GSTORE_EFULL (the range of a sum never refuses a merge).
 */
int gstore_merge_check(struct gstore *st, uint32_t id, const struct gentry *in, size_t n);
/*
 * Merges in[0..n) into counter id (per replica: max of pos, max of neg).
 * @return the number of replica entries that changed (>= 0), or GSTORE_EFULL with
 *         nothing applied.
 */
int gstore_merge(struct gstore *st, uint32_t id, const struct gentry *in, size_t n);

/*
 * gstore_merge that also remembers where the state came from: when the merge changes the
 * counter and leaves it exactly equal to in (the sender has all of it), the counter is
 * tagged with origin (1..GCOUNTER_MAX_ORIGIN) until its next change, so replication need
 * not send it back to that sender. Any other change clears the tag.
 */
#define GCOUNTER_MAX_ORIGIN 127
int gstore_merge_from(struct gstore *st, uint32_t id, const struct gentry *in, size_t n,
                      int origin);

/*
 * Folding retired incarnations (README "Durability").
 *
 * A replica that will never count again (a retired incarnation of a node) can be folded
 * into another replica of the same counter: its pos and neg are added to that replica's
 * entry, its entry is removed, and (counter, replica) becomes a tombstone ("folded"). A
 * tombstone is held outside the GCOUNTER_MAX_ENTRIES cap and is never removed. Merging
 * keeps it a join: an incoming entry of a folded replica is dropped, and incoming
 * tombstones drop the local entries they name in the same change that takes the incoming
 * entries by max. This is exact only under the caller's rule (replication's fold gate):
 * the folding replica holds the highest value of the folded one anywhere, and its folded
 * entry only ever travels with the tombstone.
 */

/*
 * Folds replica from into replica into in counter id.
 * @return 1 when folded, 0 when from has no entry there (nothing to do), GSTORE_EOVERFLOW
 *         (into's entry would leave the int64 range) or GSTORE_EFOLDED (the counter holds
 *         GCOUNTER_MAX_FOLDED tombstones), with nothing applied.
 */
int gstore_fold(struct gstore *st, uint32_t id, int from, int into);
/* Whether replica rep is folded in counter id. */
int gstore_folded(const struct gstore *st, uint32_t id, int rep);
/* Counter id's folded replicas: sets *reps (valid until the next change) and @return how
 * many. */
unsigned gstore_folded_list(const struct gstore *st, uint32_t id, const uint16_t **reps);
/* Tombstones in the whole store. */
uint64_t gstore_folded_total(const struct gstore *st);
/* Counters in which replica rep has an entry. */
uint32_t gstore_replica_entries(const struct gstore *st, int rep);
/*
 * gstore_merge_check / gstore_merge_from with the sender's tombstones of this counter
 * (folded[0..nf), replica ids): they are added, and drop the entries they name.
 * @return as gstore_merge_check / gstore_merge_from, or GSTORE_EFOLDED.
 */
int gstore_merge_check_folded(struct gstore *st, uint32_t id, const struct gentry *in, size_t n,
                              const int *folded, size_t nf);
int gstore_merge_folded(struct gstore *st, uint32_t id, const struct gentry *in, size_t n,
                        const int *folded, size_t nf, int origin);
/*
 * Lifecycle: observed resets, deletions, and their garbage collection (README "Counter
 * lifecycle"; API.md "Namespaces and the counter lifecycle").
 *
 * A counter may hold two floors, vectors of per-replica (pos, neg) like its entries. The
 * clear floor is what the clears and deletions that reached it had observed; the delete
 * floor what the deletions had observed (so the clear floor is >= the delete floor).
 * Floors merge by per-entry maximum, like the entries, and never exceed them (a floor is
 * an observed state). The value, the nodes' parts and a replica's net are what lies above
 * the clear floor: sum(pos - fpos) - sum(neg - fneg). Increments the clearing replica had
 * not observed (made elsewhere, concurrently or behind a partition) are above the floor
 * and survive the reset.
 *
 * A counter is dead when it was deleted and none of its entries is above the delete
 * floor: reads answer it as an unknown counter and listings leave it out. An increment the
 * deletion had not observed brings it back, holding that increment alone.
 *
 * A dead counter is a tombstone until every replica holds it; then it is sealed (a flag
 * merged by OR, so it travels like the floors); once every replica holds the seal it is
 * dropped (gstore_drop): its memory is given back and its id may be reused, and the name
 * counted again starts from zero. A sealed tombstone that receives a state carrying no
 * deletion and some count takes that state whole instead of merging it (a new life: the
 * sender had the tombstone, dropped it and counted the name again); the other way round,
 * a counter with entries and no deletion that receives a sealed tombstone keeps its state
 * (so the merge stays commutative: a full-state exchange from a replica that has not
 * dropped the tombstone yet does not swallow the new life). Any other state merges as
 * always.
 */
#define GLIFE_DELETED 1u /* the counter was deleted at least once (a delete floor exists) */
#define GLIFE_SEALED 2u  /* every replica held the tombstone: it may be dropped */
struct glife {
    const struct gentry *floor; /* the clear floor, by replica (entries' pos/neg) */
    size_t nfloor;
    const struct gentry *dfloor; /* the delete floor */
    size_t ndfloor;
    unsigned flags; /* GLIFE_* */
};

/* Clears counter id (an observed reset): its clear floor becomes its entries. A change
 * (new seq). @return 0, or GSTORE_EFULL with nothing applied. */
int gstore_clear(struct gstore *st, uint32_t id);
/* Deletes counter id: both floors become its entries, GLIFE_DELETED is set and
 * GLIFE_SEALED cleared. A change. @return 0, or GSTORE_EFULL with nothing applied. */
int gstore_delete(struct gstore *st, uint32_t id);
/* Seals a dead counter. A change. @return 1 when sealed now, 0 when it is not dead or was
 * sealed already. */
int gstore_seal(struct gstore *st, uint32_t id);
/* Whether counter id is dead (deleted, nothing above its delete floor). */
int gstore_dead(const struct gstore *st, uint32_t id);
/* Dead counters in the store (tombstones, sealed or not). */
uint32_t gstore_dead_total(const struct gstore *st);
/*
 * Counter id's lifecycle state: fills *out (arrays valid until the store's next change).
 * @return 1 when the counter has a floor or a deletion, 0 when it never had (out is then
 *         all empty).
 */
int gstore_life(const struct gstore *st, uint32_t id, struct glife *out);
/*
 * gstore_merge_check_folded / gstore_merge_folded with the sender's lifecycle state of the
 * counter (life may be NULL: none): floors by per-entry max (clamped to the merged
 * entries), flags by OR, and the new-life rule above. Floor entries name replicas like
 * entries (interned ids in rep).
 * @return as gstore_merge_folded; a change of the floors or flags alone counts as 1.
 */
int gstore_merge_life_check(struct gstore *st, uint32_t id, const struct gentry *in, size_t n,
                            const int *folded, size_t nf, const struct glife *life);
int gstore_merge_life(struct gstore *st, uint32_t id, const struct gentry *in, size_t n,
                      const int *folded, size_t nf, const struct glife *life, int origin);
/*
 * Removes counter id: its name no longer finds it, its block and floors are given back,
 * its id may be given to a counter created later, and the arrays indexed by id shrink
 * when the highest ids are gone. The caller first tells every structure indexed by
 * counter id (names, digest, top, token set, log).
 */
void gstore_drop(struct gstore *st, uint32_t id);
/* Whether id (< gstore_count()) names a counter: 0 once dropped. Every walk over ids
 * skips the ids for which this is 0; gstore_counter() must not be called for them. */
int gstore_exists(const struct gstore *st, uint32_t id);
/* Counters in the store (not dropped; dead ones included). */
uint32_t gstore_live(const struct gstore *st);
/* Lowers the cap on a counter's entries (1..GCOUNTER_MAX_ENTRIES): for tests. */
void gstore_set_max_entries(struct gstore *st, unsigned n);

/*
 * Records a change of counter id that is not in its entries (its token set, store/tokset.h):
 * a new sequence number, the tail of the change list, no origin tag.
 * @return the new sequence number.
 */
uint64_t gstore_touch(struct gstore *st, uint32_t id);

/* The sequence number of the latest change (0 for an empty store). */
uint64_t gstore_seq(const struct gstore *st);
/* The first counter, in change order, whose last change is after seq; or GSTORE_NONE. */
uint32_t gstore_changed_after(const struct gstore *st, uint64_t seq);
/* The counter changed next after id, or GSTORE_NONE. */
uint32_t gstore_changed_next(const struct gstore *st, uint32_t id);

/* Sum of every counter's value, and one replica's net contribution summed over every
 * counter, above the clear floors: aggregates for metrics (doubles, since exact sums may
 * leave int64 range). */
double gstore_total(const struct gstore *st);
double gstore_replica_net(const struct gstore *st, int rep);

/* Bytes the store holds (counters, table, index), for metrics and benchmarks. */
size_t gstore_memory(const struct gstore *st);

/* Reading one counter. */
const char *gstore_counter_name(const struct gcounter *c, size_t *len);
uint64_t gstore_counter_mseq(const struct gcounter *c);
/* sum(pos) - sum(neg) over the entries above the clear floor, clamped to int64_t (see
 * gstore_value). */
int64_t gstore_counter_value(const struct gcounter *c);

/*
 * One node's part of a counter: its incarnations ("node~x") summed. A bare entry "node"
 * (what a peer in the original lab's format sends: it holds one value per node id, the
 * sum of that node's incarnations it learned) counts only where it is above that sum,
 * so its echo of our own sums never counts twice, and it still carries what we have not
 * yet heard from the incarnations themselves.
 */
struct gnode {
    int node; /* gstore_node_name() */
    gstore_wide pos, neg;
};
/* Fills out[] (room for gstore_counter_entries(c)) with c's nodes. @return how many. */
unsigned gstore_counter_nodes(const struct gstore *st, const struct gcounter *c, struct gnode *out);
/* Writes v in decimal into out (room for 41 bytes). @return its length. */
size_t gstore_wide_str(gstore_wide v, char *out);
/* The counter's value as the API answers it: the sum of its nodes' pos - neg, exact.
 * c may be NULL (0). */
gstore_wide gstore_value(const struct gstore *st, const struct gcounter *c);
/* Replica rep's net contribution above the clear floor: (pos - fpos) - (neg - fneg), 0 when
 * absent. */
int64_t gstore_counter_net(const struct gcounter *c, int rep);
unsigned gstore_counter_entries(const struct gcounter *c);
void gstore_counter_entry(const struct gcounter *c, unsigned i, struct gentry *out);
/* Whether any replica has decremented this counter. */
int gstore_counter_has_neg(const struct gcounter *c);
/* The origin tag of the counter's last change (see gstore_merge_from), or 0. */
int gstore_counter_origin(const struct gcounter *c);

#endif
