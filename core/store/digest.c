/*
 * digest.c - the hash tree over the store's counters (see digest.h).
 *
 * Layout: one array of fingerprints per level (level DIGEST_DEPTH: the leaves), a head per
 * leaf and a next per counter chaining the leaf's counters (ids + 1, so 0 ends a list and
 * calloc'd memory is an empty tree), and the leaves touched since the last update (a bitmap
 * and a list). Fingerprints are sums, so a recomputed leaf moves its ancestors by the same
 * difference: no level above the leaves is ever recomputed.
 *
 * Its hashes use fixed keys: they must be the same on every node. It never changes the
 * store.
 */
#include "digest.h"

#include <stdlib.h>
#include <string.h>

#include "../base/hash.h"
#include "../base/mem.h"
#include "gstore.h"

/* A fixed SipHash key: a counter's leaf and its hash must be the same on every node. */
static const uint8_t KEY_NAME[16] = "counterd.name.1";

struct digest {
    uint64_t *level[DIGEST_DEPTH + 1];
    uint32_t *head;    /* per leaf: its first counter's id + 1; 0: empty */
    uint32_t *next;    /* per counter: the next counter's id + 1 in its leaf; 0: last */
    uint32_t nmembers; /* counters linked so far (ids 0 .. nmembers-1) */
    uint32_t next_cap;
    uint64_t seq;        /* the store's seq as of the last update */
    uint8_t *dirty_bits; /* per leaf */
    uint32_t *dirty;     /* the leaves whose bit is set */
    uint32_t ndirty, dirty_cap;
    uint64_t *rep_hash; /* per interned replica: the hash of its name | 1; 0: not computed */
    int rep_cap;
    const struct gstore *st; /* the store it is used with (set by the first update) */
    int (*keep)(void *arg, const char *key, size_t len);
    void *keep_arg;
};

/* next[id] of an id in no leaf: dropped (digest_forget), or not a counter when linked. */
#define UNLINKED UINT32_MAX

static int level_bits(int level)
{
    int b = DIGEST_LEAF_BITS - DIGEST_FANOUT_BITS * (DIGEST_DEPTH - level);
    return b > 0 ? b : 0;
}

uint32_t digest_level_size(int level)
{
    return 1u << level_bits(level);
}

uint32_t digest_fanout(int level)
{
    return 1u << (level_bits(level + 1) - level_bits(level));
}

struct digest *digest_new(void)
{
    struct digest *d = xcalloc(1, sizeof *d);
    for (int l = 0; l <= DIGEST_DEPTH; l++)
        d->level[l] = xcalloc(digest_level_size(l), sizeof(uint64_t));
    d->head = xcalloc(DIGEST_LEAVES, sizeof *d->head);
    d->dirty_bits = xcalloc(DIGEST_LEAVES / 8, 1);
    return d;
}

void digest_free(struct digest *d)
{
    if (!d)
        return;
    for (int l = 0; l <= DIGEST_DEPTH; l++)
        free(d->level[l]);
    free(d->head);
    free(d->next);
    free(d->dirty_bits);
    free(d->dirty);
    free(d->rep_hash);
    free(d);
}

/* splitmix64's finalizer: every input bit reaches every output bit. */
static uint64_t mix(uint64_t x)
{
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

/* The hash of a counter's name: its top bits are its leaf. */
static uint64_t name_hash(const char *name, size_t len)
{
    return siphash13(name, len, KEY_NAME);
}

static uint32_t leaf_of_hash(uint64_t h)
{
    return (uint32_t)(h >> (64 - DIGEST_LEAF_BITS));
}

uint32_t digest_leaf_of(const char *name, size_t len)
{
    return leaf_of_hash(name_hash(name, len));
}

/* The hash of replica rep's name, computed once per replica. */
static uint64_t rep_hash(struct digest *d, const struct gstore *st, int rep)
{
    if (rep >= d->rep_cap) {
        int cap = rep + 64;
        d->rep_hash = xrealloc(d->rep_hash, (size_t)cap * sizeof *d->rep_hash);
        memset(d->rep_hash + d->rep_cap, 0, (size_t)(cap - d->rep_cap) * sizeof *d->rep_hash);
        d->rep_cap = cap;
    }
    if (!d->rep_hash[rep]) {
        const char *n = gstore_replica_name(st, rep);
        d->rep_hash[rep] = siphash13(n, n ? strlen(n) : 0, KEY_NAME) | 1;
    }
    return d->rep_hash[rep];
}

/* A floor's part of a counter's hash: a sum over its entries (so in no order), salted. */
static uint64_t floor_hash(struct digest *d, const struct gstore *st, const struct gentry *fl,
                           size_t n, uint64_t salt)
{
    uint64_t sum = 0;
    for (size_t i = 0; i < n; i++) {
        if (!fl[i].pos && !fl[i].neg)
            continue; /* as no entry: equal states hash equal */
        uint64_t eh = mix(rep_hash(d, st, fl[i].rep) ^ salt ^ (uint64_t)fl[i].pos);
        sum += mix(eh + (uint64_t)fl[i].neg * 0x9e3779b97f4a7c15ULL);
    }
    return sum;
}

/* The counter's lifecycle state as a hash: 0 when it has none (so the hash of a counter that
 * never had any is what it was before floors existed). */
static uint64_t life_hash(struct digest *d, const struct gstore *st, uint32_t id)
{
    struct glife l;
    if (!gstore_life(st, id, &l))
        return 0;
    uint64_t fl = floor_hash(d, st, l.floor, l.nfloor, 0x2127599bf4325c37ULL);
    uint64_t dfl = floor_hash(d, st, l.dfloor, l.ndfloor, 0x880355f21e6d1965ULL);
    unsigned flags = l.flags & (GLIFE_DELETED | GLIFE_SEALED);
    if (!fl && !dfl && !flags)
        return 0;
    return mix(fl + 0x94d049bb133111ebULL) ^ mix(dfl + 0x3c6ef372fe94f82bULL) * 3 ^
           mix(flags + 0xa54ff53a5f1d36f1ULL) * 5;
}

/* The counter's hash, given the hash of its name. */
static uint64_t counter_hash(struct digest *d, const struct gstore *st, uint32_t id,
                             const struct gcounter *c, uint64_t h)
{
    uint64_t entries = 0, folded = 0, life = life_hash(d, st, id);
    unsigned n = gstore_counter_entries(c);
    for (unsigned i = 0; i < n; i++) {
        struct gentry e;
        gstore_counter_entry(c, i, &e);
        if (!e.pos && !e.neg)
            continue;
        uint64_t eh = mix(rep_hash(d, st, e.rep) ^ (uint64_t)e.pos);
        entries += mix(eh + (uint64_t)e.neg * 0x9e3779b97f4a7c15ULL);
    }
    const uint16_t *reps;
    unsigned nf = gstore_folded_total(st) ? gstore_folded_list(st, id, &reps) : 0;
    for (unsigned i = 0; i < nf; i++)
        folded += mix(rep_hash(d, st, reps[i]) ^ 0x5851f42d4c957f2dULL);
    uint64_t x = mix(h ^ mix(entries + 0x2545f4914f6cdd1dULL) ^
                     mix(folded + 0x14057b7ef767814fULL) * 0xd6e8feb86659fd93ULL);
    return life ? mix(x ^ mix(life + 0x1f83d9abfb41bd6bULL)) : x;
}

/* Whether the counter called name[0..len) is in the fingerprints (digest_set_keep). */
static int kept(const struct digest *d, const char *name, size_t len)
{
    return !d->keep || d->keep(d->keep_arg, name, len);
}

uint64_t digest_counter_hash(struct digest *d, const struct gstore *st, uint32_t id)
{
    if (id >= gstore_count(st) || !gstore_exists(st, id))
        return 0;
    const struct gcounter *c = gstore_counter(st, id);
    size_t len;
    const char *name = gstore_counter_name(c, &len);
    return kept(d, name, len) ? counter_hash(d, st, id, c, name_hash(name, len)) : 0;
}

void digest_set_keep(struct digest *d, int (*keep)(void *arg, const char *key, size_t len),
                     void *arg)
{
    d->keep = keep;
    d->keep_arg = arg;
}

static void mark_dirty(struct digest *d, uint32_t leaf)
{
    uint8_t bit = (uint8_t)(1u << (leaf & 7));
    if (d->dirty_bits[leaf >> 3] & bit)
        return;
    d->dirty_bits[leaf >> 3] |= bit;
    if (d->ndirty == d->dirty_cap) {
        d->dirty_cap = d->dirty_cap ? d->dirty_cap * 2 : 1024;
        d->dirty = xrealloc(d->dirty, d->dirty_cap * sizeof *d->dirty);
    }
    d->dirty[d->ndirty++] = leaf;
}

static uint32_t leaf_of_id(const struct gstore *st, uint32_t id)
{
    size_t len;
    const char *name = gstore_counter_name(gstore_counter(st, id), &len);
    return digest_leaf_of(name, len);
}

/* Chains the counters created since the last update into their leaves. */
static void grow_next(struct digest *d, uint32_t count);

/* Links counter id into its leaf (or marks it UNLINKED when it is no counter). */
static void link_id(struct digest *d, const struct gstore *st, uint32_t id)
{
    if (!gstore_exists(st, id)) {
        d->next[id] = UNLINKED;
        return;
    }
    uint32_t leaf = leaf_of_id(st, id);
    d->next[id] = d->head[leaf];
    d->head[leaf] = id + 1;
    mark_dirty(d, leaf);
}

static void link_new(struct digest *d, const struct gstore *st)
{
    uint32_t count = gstore_count(st);
    grow_next(d, count);
    for (uint32_t id = d->nmembers; id < count; id++)
        link_id(d, st, id);
}

void digest_forget(struct digest *d, uint32_t id)
{
    if (!d->st || id >= d->nmembers || d->next[id] == UNLINKED || !gstore_exists(d->st, id))
        return;
    uint32_t leaf = leaf_of_id(d->st, id);
    for (uint32_t *at = &d->head[leaf]; *at; at = &d->next[*at - 1])
        if (*at == id + 1) {
            *at = d->next[id];
            break;
        }
    d->next[id] = UNLINKED;
    mark_dirty(d, leaf);
}

/* Recomputes a leaf from its counters and moves its ancestors by the difference. */
static size_t recompute(struct digest *d, const struct gstore *st, uint32_t leaf)
{
    uint64_t fp = 0;
    size_t n = 0;
    for (uint32_t v = d->head[leaf]; v; v = d->next[v - 1], n++)
        fp += digest_counter_hash(d, st, v - 1);
    uint64_t delta = fp - d->level[DIGEST_DEPTH][leaf];
    uint32_t i = leaf;
    for (int l = DIGEST_DEPTH; l >= 0; l--) {
        d->level[l][i] += delta;
        if (l > 0)
            i >>= level_bits(l) - level_bits(l - 1);
    }
    return n;
}

static void grow_next(struct digest *d, uint32_t count)
{
    if (count <= d->next_cap)
        return;
    /* Exactly what the store holds (4 bytes a counter, no slack): it grows once per update
     * that finds new counters (at most once per digest message). */
    d->next = xrealloc(d->next, (size_t)count * sizeof *d->next);
    d->next_cap = count;
}

/*
 * The whole tree again, walking the counters by id (the order they lie in memory): what
 * a first update, or one after changes to a good part of the store, costs least as.
 */
static size_t rebuild(struct digest *d, const struct gstore *st)
{
    uint32_t count = gstore_count(st);
    grow_next(d, count);
    memset(d->head, 0, (size_t)DIGEST_LEAVES * sizeof *d->head);
    memset(d->level[DIGEST_DEPTH], 0, (size_t)DIGEST_LEAVES * sizeof(uint64_t));
    for (uint32_t id = 0; id < count; id++) {
        if (!gstore_exists(st, id)) {
            d->next[id] = UNLINKED;
            continue;
        }
        const struct gcounter *c = gstore_counter(st, id);
        size_t len;
        const char *name = gstore_counter_name(c, &len);
        uint64_t h = name_hash(name, len);
        uint32_t leaf = leaf_of_hash(h);
        d->next[id] = d->head[leaf];
        d->head[leaf] = id + 1;
        if (kept(d, name, len))
            d->level[DIGEST_DEPTH][leaf] += counter_hash(d, st, id, c, h);
    }
    for (int l = DIGEST_DEPTH - 1; l >= 0; l--) {
        uint32_t f = digest_fanout(l);
        for (uint32_t i = 0; i < digest_level_size(l); i++) {
            uint64_t sum = 0;
            for (uint32_t k = 0; k < f; k++)
                sum += d->level[l + 1][i * f + k];
            d->level[l][i] = sum;
        }
    }
    for (uint32_t i = 0; i < d->ndirty; i++)
        d->dirty_bits[d->dirty[i] >> 3] = 0;
    d->ndirty = 0;
    d->nmembers = count;
    d->seq = gstore_seq(st);
    return count;
}

size_t digest_update(struct digest *d, const struct gstore *st)
{
    d->st = st;
    uint32_t count = gstore_count(st), walked = 0;
    /* The store's id arrays shrink when its highest ids are dropped (forgotten first), and
     * so does next, once half of it is beyond them. */
    if (count < d->nmembers)
        d->nmembers = count;
    if (d->next_cap > 1024 && count < d->next_cap / 2) {
        d->next_cap = count < 1024 ? 1024 : count;
        d->next = xrealloc(d->next, (size_t)d->next_cap * sizeof *d->next);
    }
    uint32_t old = d->nmembers;
    if (d->seq == 0 || count - old > count / 8)
        return rebuild(d, st);
    link_new(d, st);
    d->nmembers = count;
    /* Counters created since are dirty already; the others changed in place, or were
     * created at the id of a dropped counter (in no leaf yet). */
    for (uint32_t id = gstore_changed_after(st, d->seq); id != GSTORE_NONE;
         id = gstore_changed_next(st, id)) {
        if (id < old && gstore_exists(st, id)) {
            if (d->next[id] == UNLINKED)
                link_id(d, st, id);
            else
                mark_dirty(d, leaf_of_id(st, id));
        }
        if (++walked > count / 8 && count > 4096)
            return rebuild(d, st);
    }
    size_t hashed = 0;
    for (uint32_t i = 0; i < d->ndirty; i++) {
        uint32_t leaf = d->dirty[i];
        hashed += recompute(d, st, leaf);
        d->dirty_bits[leaf >> 3] = 0;
    }
    d->ndirty = 0;
    d->seq = gstore_seq(st);
    return hashed;
}

uint64_t digest_node(const struct digest *d, int level, uint32_t i)
{
    return d->level[level][i];
}

uint64_t digest_root(const struct digest *d)
{
    return d->level[0][0];
}

uint32_t digest_leaf_first(const struct digest *d, uint32_t leaf)
{
    uint32_t v = d->head[leaf];
    return v ? v - 1 : GSTORE_NONE;
}

uint32_t digest_leaf_next(const struct digest *d, uint32_t id)
{
    uint32_t v = d->next[id];
    return v ? v - 1 : GSTORE_NONE;
}

size_t digest_memory(const struct digest *d)
{
    size_t n = sizeof *d + (size_t)DIGEST_LEAVES * sizeof *d->head + DIGEST_LEAVES / 8 +
               (size_t)d->next_cap * sizeof *d->next + (size_t)d->dirty_cap * sizeof *d->dirty +
               (size_t)d->rep_cap * sizeof *d->rep_hash;
    for (int l = 0; l <= DIGEST_DEPTH; l++)
        n += (size_t)digest_level_size(l) * sizeof(uint64_t);
    return n;
}
