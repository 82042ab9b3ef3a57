/*
 * gstore.c - the CRDT store (see gstore.h).
 *
 * Memory is the constraint that shapes this file: a region holds a million counters in
 * less than Redis needs for a million INCR keys. A counter is one block in an arena of
 * 1 MB chunks (no malloc header, no size-class rounding): a 21-byte header, the name,
 * the replica ids (1 byte each while they are below 256), then pos[cap] and neg[cap]
 * (only once the counter has been decremented) as unsigned integers of 1, 2, 4 or 8
 * bytes, the width its largest value needs (a counter incremented a few times holds
 * 1-byte entries). A block that must grow (an entry, a decrement, a wider value, a replica
 * id above 255) is copied into a bigger one and its old block goes to a free list of its
 * exact size. by_id holds 32-bit arena offsets, the table 32-bit ids and a 1-byte tag of
 * the hash per slot (a probe reads a block only when its tag matches), and the change
 * list links ids: 36 bytes a counter with a short name and three small entries, plus 4 in
 * by_id and 6-10 in the table.
 *
 * Tombstones of folded replicas (gstore_fold) live apart, in a table keyed by counter id
 * that is empty until a first fold: a store without them pays one test per merge.
 *
 * Floors (gstore.h "Lifecycle") live in the block, as more vectors beside the entries,
 * slot for slot (a floor is never above its entry, so it has the entries' width and a
 * replica without an entry has none), and only in the blocks of counters that were cleared
 * or deleted: a store that never clears pays nothing, and the readers of a block alone
 * (gstore_counter_value, _net, _nodes) see its floors.
 *
 * Dropping (gstore_drop) gives everything back: the id goes to a min-heap of free ids (the
 * lowest is reused first, the highest fall off the end so by_id shrinks), the table slot
 * keeps a "gone" tag until the next rehash (the table shrinks when half empty), and the
 * block goes to its free list; free lists are doubly linked and every chunk counts the
 * units in use, so a chunk left empty unlinks its free blocks and is freed.
 */
#include "gstore.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../base/hash.h"
#include "../base/mem.h"

#define F_NEG 1u       /* the neg array exists */
#define ORIGIN_SHIFT 1 /* flags bits 1-7: the origin tag of the last change */
#define L_WC 3u        /* layout bits 0-1: the width class of the entries */
#define L_REP16 4u     /* layout: replica ids take 2 bytes (one is above 255) */
#define L_FL 8u        /* layout: the clear floor's vector exists */
#define L_DEL 16u      /* layout: deleted (GLIFE_DELETED); the delete floor's vector exists */
#define L_SEALED 32u   /* state: GLIFE_SEALED */
#define L_DEAD 64u     /* state: deleted and no entry above the delete floor */
#define L_LIFE (L_FL | L_DEL | L_SEALED | L_DEAD)

/* Every field is at most 4-byte aligned: blocks sit at 4-byte boundaries of the arena. */
struct gcounter {
    uint32_t mseq_lo, mseq_hi; /* sequence number of the last change */
    uint32_t prev, next;       /* change list, oldest first */
    uint8_t name_len;
    uint8_t n;      /* entries in use */
    uint8_t cap;    /* entries allocated */
    uint8_t flags;  /* F_NEG, origin tag */
    uint8_t layout; /* bits 0-1 (wc): entries are (1 << wc) bytes; L_REP16, L_FL, L_DEL, and
                     * the state bits L_SEALED, L_DEAD */
    /* char name[name_len + 1]; rep[cap] (1 byte, 2 with L_REP16); then vectors of
     * pos[cap] + neg[cap] if F_NEG (unaligned): the entries, the clear floor if L_FL, the
     * delete floor if L_DEL (L_DEL implies L_FL). A floor is never above its entry, so it
     * fits the entries' width, and a replica without an entry has a floor of 0. */
    unsigned char data[];
};

/* The arena: blocks are addressed by a 32-bit offset in 4-byte units, the chunk in the
 * high bits, so 2^14 chunks of 1 MB (16 GB) can be addressed. */
#define UNIT 4u
#define CHUNK_BITS 18 /* units per chunk: 2^18 * 4 bytes = 1 MB */
#define CHUNK_UNITS (1u << CHUNK_BITS)
#define MAX_CHUNKS (1u << (32 - CHUNK_BITS))
#define HEAD_SIZE offsetof(struct gcounter, data)
/* The biggest block: a 255-byte name, 255 entries of 8-byte pos and neg. */
#define MAX_UNITS ((HEAD_SIZE + 256 + GCOUNTER_MAX_ENTRIES * 18 + UNIT - 1) / UNIT)

/* One counter's folded replicas (tombstones), kept for good: up to TOMBS_INLINE in the
 * slot itself (most counters have one or two), more in a block of cap. */
#define TOMBS_INLINE 4
struct tombs {
    uint32_t id;     /* GSTORE_NONE: an empty slot */
    uint16_t n, cap; /* cap 0: inline */
    union {
        uint16_t in[TOMBS_INLINE];
        uint16_t *reps;
    } u;
};

struct gstore {
    uint32_t *by_id; /* arena offsets */
    uint32_t count, id_cap;
    unsigned char **chunks; /* NULL: a chunk given back (its index is reused first) */
    uint32_t nchunks, chunk_cap;
    uint32_t *chunk_used; /* per chunk: units in blocks not free */
    uint32_t *chunk_end;  /* per chunk but the current one: units its blocks cover */
    uint32_t cur;         /* the chunk blocks are cut from, GSTORE_NONE: none */
    uint32_t bump, room;  /* units used and available in the current chunk */
    size_t arena_bytes;   /* in chunks */
    uint32_t *free_at;    /* per block size in units: a free block, GSTORE_NONE = none */
    uint32_t live;        /* counters not dropped */
    uint32_t *fids;       /* dropped ids below count, a min-heap (some may be stale) */
    uint32_t nfids, fids_cap;
    uint32_t gone_slots; /* table slots of dropped counters (tag TAG_GONE) */
    uint32_t *slots;     /* open addressing, linear probing; GSTORE_NONE = empty */
    uint8_t *tags;       /* per slot: its counter's tag_of(hash), 0 = empty */
    uint32_t nslots;     /* any size: a hash maps to a slot by multiplication */
    uint64_t seq;
    uint32_t head, tail; /* change list */
    char **rep_names;
    int nrep, rep_cap;
    int *rep_node;     /* replica -> node index (its id up to '~') */
    uint8_t *rep_bare; /* the replica id is a bare node id (no '~') */
    char **node_names;
    int nnode, node_cap;
    int expect_reps;        /* entries a new counter gets room for; 0: nrep */
    struct gentry *scratch; /* merge workspace */
    size_t scratch_cap;
    struct gentry *fscr, *dscr; /* merge workspace: the merged floors */
    size_t life_cap;
    size_t bytes; /* tombstone blocks */
    /* Aggregates for metrics, kept as doubles: their exact sum may leave int64 range. */
    double total;
    double *rep_net;
    uint32_t *rep_entries; /* per replica: counters where it has an entry */
    unsigned max_entries;  /* GCOUNTER_MAX_ENTRIES, or lower in tests */
    struct tombs *tombs;   /* open addressing by counter id; NULL until a first tombstone */
    uint32_t tmask, ntombc;
    uint64_t ntombs;
    uint32_t ndead;         /* counters with L_DEAD */
    struct gentry *life_fl; /* gstore_life's answer: the clear floor, the delete floor */
    struct gentry *life_dfl;
};

/* ---------------------------------------------------------------- arena */

static struct gcounter *at(const struct gstore *st, uint32_t off)
{
    return (struct gcounter *)(st->chunks[off >> CHUNK_BITS] +
                               (size_t)(off & (CHUNK_UNITS - 1)) * UNIT);
}

static struct gcounter *cnt(const struct gstore *st, uint32_t id)
{
    return at(st, st->by_id[id]);
}

/*
 * A free block holds three words: the next and previous free blocks of its size (free
 * lists are doubly linked, so that a chunk given back unlinks its blocks one by one) and
 * its size in units. A remainder of fewer than FREE_MIN units is never listed.
 */
#define FREE_MIN 3u
static uint32_t fw_get(const struct gstore *st, uint32_t off, unsigned w)
{
    uint32_t v;
    memcpy(&v, (unsigned char *)at(st, off) + w * 4u, 4);
    return v;
}
static void fw_set(const struct gstore *st, uint32_t off, unsigned w, uint32_t v)
{
    memcpy((unsigned char *)at(st, off) + w * 4u, &v, 4);
}

static void fl_unlink(struct gstore *st, uint32_t off, uint32_t units)
{
    uint32_t next = fw_get(st, off, 0), prev = fw_get(st, off, 1);
    if (prev != GSTORE_NONE)
        fw_set(st, prev, 0, next);
    else
        st->free_at[units] = next;
    if (next != GSTORE_NONE)
        fw_set(st, next, 1, prev);
}

/* Units a chunk of index k holds: 4 KB doubling up to 1 MB, so a small store stays small. */
static uint32_t chunk_room(uint32_t k)
{
    uint32_t room = k >= 8 ? CHUNK_UNITS : (CHUNK_UNITS >> 8) << k;
    return room < MAX_UNITS ? MAX_UNITS : room;
}

/* Gives chunk k back (every block in it is free): unlinks its blocks, frees it. */
static void chunk_release(struct gstore *st, uint32_t k)
{
    uint32_t end = k == st->cur ? st->bump : st->chunk_end[k];
    for (uint32_t u = 0; u < end;) {
        uint32_t off = k << CHUNK_BITS | u, units = fw_get(st, off, 2);
        fl_unlink(st, off, units);
        u += units;
    }
    free(st->chunks[k]);
    st->chunks[k] = NULL;
    st->arena_bytes -= (size_t)chunk_room(k) * UNIT;
    if (k == st->cur) {
        st->cur = GSTORE_NONE;
        st->room = st->bump = 0;
    }
    while (st->nchunks && !st->chunks[st->nchunks - 1])
        st->nchunks--;
}

static void arena_free(struct gstore *st, uint32_t off, uint32_t units)
{
    if (!st->free_at) {
        st->free_at = xmalloc((MAX_UNITS + 1) * sizeof *st->free_at);
        memset(st->free_at, 0xff, (MAX_UNITS + 1) * sizeof *st->free_at);
    }
    uint32_t next = st->free_at[units], k = off >> CHUNK_BITS;
    fw_set(st, off, 0, next);
    fw_set(st, off, 1, GSTORE_NONE);
    fw_set(st, off, 2, units);
    if (next != GSTORE_NONE)
        fw_set(st, next, 1, off);
    st->free_at[units] = off;
    st->chunk_used[k] -= units;
    if (!st->chunk_used[k])
        chunk_release(st, k);
}

/* Starts a new chunk at the lowest free index (a released chunk's, or a new one); the
 * rest of the current chunk goes to a free list. */
static void chunk_new(struct gstore *st)
{
    uint32_t k = 0;
    while (k < st->nchunks && st->chunks[k])
        k++;
    if (k == MAX_CHUNKS) {
        fprintf(stderr, "counterd: the counter arena is full (%u MB)\n", MAX_CHUNKS);
        abort();
    }
    if (st->cur != GSTORE_NONE) {
        uint32_t cur = st->cur, rest = st->room - st->bump;
        st->chunk_end[cur] = rest >= FREE_MIN ? st->room : st->bump;
        st->cur = GSTORE_NONE;
        if (rest >= FREE_MIN) {
            st->chunk_used[cur] += rest;
            arena_free(st, cur << CHUNK_BITS | (st->room - rest), rest);
        }
    }
    if (k >= st->chunk_cap) {
        st->chunk_cap = st->chunk_cap ? st->chunk_cap * 2 : 16;
        st->chunks = xrealloc(st->chunks, st->chunk_cap * sizeof *st->chunks);
        st->chunk_used = xrealloc(st->chunk_used, st->chunk_cap * sizeof *st->chunk_used);
        st->chunk_end = xrealloc(st->chunk_end, st->chunk_cap * sizeof *st->chunk_end);
    }
    if (k == st->nchunks)
        st->nchunks++;
    st->room = chunk_room(k);
    st->chunks[k] = xmalloc((size_t)st->room * UNIT);
    st->chunk_used[k] = 0;
    st->arena_bytes += (size_t)st->room * UNIT;
    st->bump = 0;
    st->cur = k;
}

/* @return the offset of a block of units (<= MAX_UNITS): a free one of that size, or the
 *         next in the current chunk. */
static uint32_t arena_alloc(struct gstore *st, uint32_t units)
{
    uint32_t off = st->free_at ? st->free_at[units] : GSTORE_NONE;
    if (off != GSTORE_NONE) {
        fl_unlink(st, off, units);
    } else {
        if (st->cur == GSTORE_NONE || st->bump + units > st->room)
            chunk_new(st);
        off = st->cur << CHUNK_BITS | st->bump;
        st->bump += units;
    }
    st->chunk_used[off >> CHUNK_BITS] += units;
    return off;
}

/* ---------------------------------------------------------------- counter layout */

/* Vectors a block holds: the entries, and the floors of layout. */
static inline unsigned c_nvec(unsigned layout)
{
    return 1u + ((layout & L_FL) != 0) + ((layout & L_DEL) != 0);
}

static uint32_t c_units(unsigned name_len, unsigned cap, unsigned flags, unsigned layout)
{
    size_t sz = HEAD_SIZE + name_len + 1 + (size_t)cap * ((layout & L_REP16) ? 2 : 1) +
                ((size_t)cap << (layout & L_WC)) * ((flags & F_NEG) ? 2 : 1) * c_nvec(layout);
    return (uint32_t)((sz + UNIT - 1) / UNIT);
}

static inline char *c_name(const struct gcounter *c)
{
    return (char *)c->data;
}
static inline unsigned char *c_reps(const struct gcounter *c)
{
    return (unsigned char *)c->data + c->name_len + 1;
}
static inline unsigned char *c_vals(const struct gcounter *c)
{
    return c_reps(c) + (size_t)c->cap * ((c->layout & L_REP16) ? 2 : 1);
}

static inline uint64_t load_w(const unsigned char *p, unsigned wc)
{
    uint16_t v16;
    uint32_t v32;
    uint64_t v64;
    switch (wc) {
    case 0: return *p;
    case 1: memcpy(&v16, p, 2); return v16;
    case 2: memcpy(&v32, p, 4); return v32;
    default: memcpy(&v64, p, 8); return v64;
    }
}

static inline void store_w(unsigned char *p, unsigned wc, uint64_t v)
{
    uint16_t v16 = (uint16_t)v;
    uint32_t v32 = (uint32_t)v;
    switch (wc) {
    case 0: *p = (unsigned char)v; break;
    case 1: memcpy(p, &v16, 2); break;
    case 2: memcpy(p, &v32, 4); break;
    default: memcpy(p, &v, 8);
    }
}

/* The width class a value needs: 1, 2, 4 or 8 bytes. */
static inline unsigned wc_for(int64_t v)
{
    uint64_t u = (uint64_t)v;
    return u <= UINT8_MAX ? 0 : u <= UINT16_MAX ? 1 : u <= UINT32_MAX ? 2 : 3;
}

/* The layout replica rep needs. */
static inline unsigned rep_layout(int rep)
{
    return rep > UINT8_MAX ? L_REP16 : 0;
}

/* The smallest layout with room for both a and b (and the state bits of both). */
static inline unsigned layout_max(unsigned a, unsigned b)
{
    unsigned w = (a & L_WC) > (b & L_WC) ? (a & L_WC) : (b & L_WC);
    return w | ((a | b) & ~L_WC);
}

static inline int c_rep(const struct gcounter *c, unsigned i)
{
    uint16_t r;
    if (!(c->layout & L_REP16))
        return c_reps(c)[i];
    memcpy(&r, c_reps(c) + 2 * (size_t)i, 2);
    return r;
}
/* rep must fit the counter's layout (see c_fit). */
static inline void c_set_rep(struct gcounter *c, unsigned i, int rep)
{
    uint16_t r = (uint16_t)rep;
    if (!(c->layout & L_REP16))
        c_reps(c)[i] = (unsigned char)rep;
    else
        memcpy(c_reps(c) + 2 * (size_t)i, &r, 2);
}
static inline int64_t c_pos(const struct gcounter *c, unsigned i)
{
    unsigned wc = c->layout & L_WC;
    return (int64_t)load_w(c_vals(c) + ((size_t)i << wc), wc);
}
static inline int64_t c_neg(const struct gcounter *c, unsigned i)
{
    if (!(c->flags & F_NEG))
        return 0;
    unsigned wc = c->layout & L_WC;
    return (int64_t)load_w(c_vals(c) + ((size_t)(c->cap + i) << wc), wc);
}
/* The value must fit the counter's width (see c_fit). */
static inline void c_set_pos(struct gcounter *c, unsigned i, int64_t v)
{
    unsigned wc = c->layout & L_WC;
    store_w(c_vals(c) + ((size_t)i << wc), wc, (uint64_t)v);
}
/* Needs F_NEG unless v is 0. */
static inline void c_set_neg(struct gcounter *c, unsigned i, int64_t v)
{
    if (c->flags & F_NEG)
        store_w(c_vals(c) + ((size_t)(c->cap + i) << (c->layout & L_WC)), c->layout & L_WC,
                (uint64_t)v);
}

/* Vector v (0: the entries, 1: the clear floor, 2: the delete floor), slot i, neg or pos. */
static inline unsigned char *c_slot(const struct gcounter *c, unsigned v, unsigned i, int neg)
{
    size_t per = (size_t)c->cap * ((c->flags & F_NEG) ? 2 : 1);
    return c_vals(c) + ((v * per + (neg ? c->cap : 0) + i) << (c->layout & L_WC));
}
/* A floor's (v 1 or 2) pos and neg at slot i: 0 when the block has no such vector. */
static inline int64_t c_fpos(const struct gcounter *c, unsigned v, unsigned i)
{
    if (!(c->layout & (v == 1 ? L_FL : L_DEL)))
        return 0;
    return (int64_t)load_w(c_slot(c, v, i, 0), c->layout & L_WC);
}
static inline int64_t c_fneg(const struct gcounter *c, unsigned v, unsigned i)
{
    if (!(c->flags & F_NEG) || !(c->layout & (v == 1 ? L_FL : L_DEL)))
        return 0;
    return (int64_t)load_w(c_slot(c, v, i, 1), c->layout & L_WC);
}
/* Sets a floor at slot i; the block must hold that vector (and F_NEG unless neg is 0). */
static inline void c_set_floor(struct gcounter *c, unsigned v, unsigned i, int64_t pos, int64_t neg)
{
    store_w(c_slot(c, v, i, 0), c->layout & L_WC, (uint64_t)pos);
    if (c->flags & F_NEG)
        store_w(c_slot(c, v, i, 1), c->layout & L_WC, (uint64_t)neg);
}
/* Zeroes the floors at slot i (a new entry). */
static inline void c_zero_floors(struct gcounter *c, unsigned i)
{
    for (unsigned v = 1; v < c_nvec(c->layout); v++)
        c_set_floor(c, v, i, 0, 0);
}
/* What entry i holds above the clear floor: pos - fpos - (neg - fneg). */
static inline gstore_wide c_above(const struct gcounter *c, unsigned i)
{
    return (gstore_wide)(c_pos(c, i) - c_fpos(c, 1, i)) - (c_neg(c, i) - c_fneg(c, 1, i));
}

static uint64_t c_mseq(const struct gcounter *c)
{
    return (uint64_t)c->mseq_hi << 32 | c->mseq_lo;
}

/*
 * Makes room in counter id for cap entries, the neg array when flags has F_NEG and
 * the values, replica ids and floors of layout (none of them ever shrinks): copies it into
 * a new block when its own is too small (a floor new to it is 0). @return the counter,
 * moved or not.
 */
static struct gcounter *c_fit(struct gstore *st, uint32_t id, unsigned cap, unsigned flags,
                              unsigned layout)
{
    struct gcounter *c = cnt(st, id);
    unsigned ncap = cap > c->cap ? cap : c->cap;
    unsigned nflags = (flags & F_NEG) | c->flags;
    unsigned nlayout = layout_max(layout, c->layout);
    if (ncap == c->cap && nflags == c->flags && nlayout == c->layout)
        return c;
    uint32_t units = c_units(c->name_len, ncap, nflags, nlayout);
    uint32_t off = arena_alloc(st, units), old = st->by_id[id];
    c = at(st, old);
    struct gcounter *d = at(st, off);
    memcpy(d, c, HEAD_SIZE + c->name_len + 1u);
    d->cap = (uint8_t)ncap;
    d->flags = (uint8_t)nflags;
    d->layout = (uint8_t)nlayout;
    for (unsigned i = 0; i < c->n; i++) {
        c_set_rep(d, i, c_rep(c, i));
        c_set_pos(d, i, c_pos(c, i));
        c_set_neg(d, i, c_neg(c, i));
        for (unsigned v = 1; v < c_nvec(nlayout); v++)
            c_set_floor(d, v, i, c_fpos(c, v, i), c_fneg(c, v, i));
    }
    arena_free(st, old, c_units(c->name_len, c->cap, c->flags, c->layout));
    st->by_id[id] = off;
    return d;
}

static inline int c_find_rep(const struct gcounter *c, int rep)
{
    const unsigned char *r = c_reps(c);
    if (!(c->layout & L_REP16)) {
        for (unsigned i = 0; i < c->n; i++)
            if (r[i] == rep)
                return (int)i;
        return -1;
    }
    for (unsigned i = 0; i < c->n; i++) {
        uint16_t v;
        memcpy(&v, r + 2 * (size_t)i, 2);
        if (v == rep)
            return (int)i;
    }
    return -1;
}

/* ---------------------------------------------------------------- change list */

static void list_unlink(struct gstore *st, uint32_t id)
{
    struct gcounter *c = cnt(st, id);
    if (c->prev != GSTORE_NONE)
        cnt(st, c->prev)->next = c->next;
    else
        st->head = c->next;
    if (c->next != GSTORE_NONE)
        cnt(st, c->next)->prev = c->prev;
    else
        st->tail = c->prev;
}

static void list_append(struct gstore *st, uint32_t id)
{
    struct gcounter *c = cnt(st, id);
    c->prev = st->tail;
    c->next = GSTORE_NONE;
    if (st->tail != GSTORE_NONE)
        cnt(st, st->tail)->next = id;
    else
        st->head = id;
    st->tail = id;
}

/* A change of counter id, which is at c. */
static void touch_at(struct gstore *st, struct gcounter *c, uint32_t id)
{
    ++st->seq;
    c->mseq_lo = (uint32_t)st->seq;
    c->mseq_hi = (uint32_t)(st->seq >> 32);
    if (st->tail != id) {
        list_unlink(st, id);
        list_append(st, id);
    }
}

static void touch(struct gstore *st, uint32_t id)
{
    touch_at(st, cnt(st, id), id);
}

/* ---------------------------------------------------------------- store */

struct gstore *gstore_new(void)
{
    struct gstore *st = xcalloc(1, sizeof *st);
    st->nslots = 1024;
    st->slots = xmalloc(st->nslots * sizeof *st->slots);
    memset(st->slots, 0xff, st->nslots * sizeof *st->slots);
    st->tags = xcalloc(st->nslots, 1);
    st->head = st->tail = GSTORE_NONE;
    st->cur = GSTORE_NONE;
    st->max_entries = GCOUNTER_MAX_ENTRIES;
    return st;
}

void gstore_free(struct gstore *st)
{
    if (!st)
        return;
    for (uint32_t i = 0; i < st->nchunks; i++)
        free(st->chunks[i]);
    free(st->chunks);
    free(st->chunk_used);
    free(st->chunk_end);
    free(st->fids);
    free(st->free_at);
    for (int i = 0; i < st->nrep; i++)
        free(st->rep_names[i]);
    free(st->rep_names);
    for (int i = 0; i < st->nnode; i++)
        free(st->node_names[i]);
    free(st->node_names);
    free(st->rep_node);
    free(st->rep_bare);
    free(st->rep_net);
    free(st->rep_entries);
    if (st->tombs)
        for (uint32_t i = 0; i <= st->tmask; i++)
            if (st->tombs[i].id != GSTORE_NONE && st->tombs[i].cap)
                free(st->tombs[i].u.reps);
    free(st->tombs);
    free(st->by_id);
    free(st->slots);
    free(st->tags);
    free(st->scratch);
    free(st->fscr);
    free(st->dscr);
    free(st->life_fl);
    free(st->life_dfl);
    free(st);
}
int gstore_replica(struct gstore *st, const char *name, size_t len)
{
    if (len == 0 || len > GSTORE_REPLICA_NAME_MAX)
        return -1;
    for (int i = 0; i < st->nrep; i++)
        if (strlen(st->rep_names[i]) == len && memcmp(st->rep_names[i], name, len) == 0)
            return i;
    if (st->nrep >= GSTORE_MAX_REPLICAS)
        return -1;
    if (st->nrep == st->rep_cap) {
        st->rep_cap = st->rep_cap ? st->rep_cap * 2 : 8;
        st->rep_names = xrealloc(st->rep_names, (size_t)st->rep_cap * sizeof *st->rep_names);
        st->rep_net = xrealloc(st->rep_net, (size_t)st->rep_cap * sizeof *st->rep_net);
        st->rep_node = xrealloc(st->rep_node, (size_t)st->rep_cap * sizeof *st->rep_node);
        st->rep_bare = xrealloc(st->rep_bare, (size_t)st->rep_cap * sizeof *st->rep_bare);
        st->rep_entries = xrealloc(st->rep_entries, (size_t)st->rep_cap * sizeof *st->rep_entries);
    }
    st->rep_names[st->nrep] = xstrndup(name, len);
    st->rep_net[st->nrep] = 0;
    st->rep_entries[st->nrep] = 0;
    size_t nlen = gstore_counter_replica_node_len(name, len);
    if (!nlen)
        nlen = len;
    int k = 0;
    while (k < st->nnode &&
           !(strlen(st->node_names[k]) == nlen && memcmp(st->node_names[k], name, nlen) == 0))
        k++;
    if (k == st->nnode) {
        if (st->nnode == st->node_cap) {
            st->node_cap = st->node_cap ? st->node_cap * 2 : 8;
            st->node_names =
                xrealloc(st->node_names, (size_t)st->node_cap * sizeof *st->node_names);
        }
        st->node_names[st->nnode++] = xstrndup(name, nlen);
    }
    st->rep_node[st->nrep] = k;
    st->rep_bare[st->nrep] = nlen == len;
    return st->nrep++;
}

const char *gstore_replica_name(const struct gstore *st, int rep)
{
    return rep >= 0 && rep < st->nrep ? st->rep_names[rep] : NULL;
}

int gstore_replica_node(const struct gstore *st, int rep)
{
    return rep >= 0 && rep < st->nrep ? st->rep_node[rep] : -1;
}

const char *gstore_node_name(const struct gstore *st, int node)
{
    return node >= 0 && node < st->nnode ? st->node_names[node] : NULL;
}

int gstore_replica_count(const struct gstore *st)
{
    return st->nrep;
}

void gstore_expect_replicas(struct gstore *st, int n)
{
    st->expect_reps = n;
}

/* The slot a hash starts probing at: any table size, no modulo. */
static uint32_t slot_of(uint32_t h, uint32_t nslots)
{
    return (uint32_t)(((uint64_t)h * nslots) >> 32);
}

/*
 * The tag of a slot: 7 bits of the hash that slot_of does not use (it takes the high
 * bits), and the top bit so that 0 means empty. A probe compares tags, a byte array
 * beside the slots, and reads a counter's block (a cache miss) only when its tag matches:
 * one in 128 of the others.
 */
static inline uint8_t tag_of(uint32_t h)
{
    return (uint8_t)(0x80u | (h & 0x7fu));
}

/* The id of the counter called name, whose hash is h, or GSTORE_NONE. */
static uint32_t find_h(const struct gstore *st, const char *name, size_t len, uint32_t h)
{
    uint8_t tag = tag_of(h);
    for (uint32_t i = slot_of(h, st->nslots);; i = i + 1 == st->nslots ? 0 : i + 1) {
        uint8_t t = st->tags[i];
        if (!t)
            return GSTORE_NONE;
        if (t != tag)
            continue;
        const struct gcounter *c = cnt(st, st->slots[i]);
        if (c->name_len == len && memcmp(c_name(c), name, len) == 0)
            return st->slots[i];
    }
}

uint32_t gstore_find(const struct gstore *st, const char *name, size_t len)
{
    if (len == 0 || len > GCOUNTER_NAME_MAX)
        return GSTORE_NONE;
    return find_h(st, name, len, (uint32_t)hash_bytes(name, len));
}

/* The tag of a slot whose counter was dropped: probes go on past it, a new name may take
 * it. */
#define TAG_GONE 1u

static void slot_put(struct gstore *st, uint32_t h, uint32_t id)
{
    uint32_t i = slot_of(h, st->nslots);
    while (st->tags[i] & 0x80u)
        i = i + 1 == st->nslots ? 0 : i + 1;
    if (st->tags[i] == TAG_GONE)
        st->gone_slots--;
    st->slots[i] = id;
    st->tags[i] = tag_of(h);
}

/* Rebuilds the table with n slots (n > count * 5 / 4), rehashing every name. */
static void table_resize(struct gstore *st, uint32_t n)
{
    free(st->slots);
    free(st->tags);
    st->slots = xmalloc((size_t)n * sizeof *st->slots);
    memset(st->slots, 0xff, (size_t)n * sizeof *st->slots);
    st->tags = xcalloc(n, 1);
    st->nslots = n;
    st->gone_slots = 0;
    for (uint32_t id = 0; id < st->count; id++) {
        if (st->by_id[id] == GSTORE_NONE)
            continue;
        const struct gcounter *c = cnt(st, id);
        slot_put(st, (uint32_t)hash_bytes(c_name(c), c->name_len), id);
    }
}

/* Grows the table by half once it is 4/5 full: it holds 1.25-1.9 slots per counter. */
static void table_grow(struct gstore *st)
{
    table_resize(st, st->nslots + st->nslots / 2);
}

/* Room in by_id for cap ids. */
static void ids_reserve(struct gstore *st, uint32_t cap)
{
    if (cap <= st->id_cap)
        return;
    st->id_cap = cap;
    st->by_id = xrealloc(st->by_id, (size_t)st->id_cap * sizeof *st->by_id);
}

void gstore_reserve(struct gstore *st, uint32_t n)
{
    if (n > UINT32_MAX / 2)
        return;
    uint64_t want = (uint64_t)st->live + n;
    if (want * 5 > (uint64_t)st->nslots * 4) {
        /* 1.5 slots per counter: the middle of what growing by half gives. */
        uint64_t slots = want + want / 2 + 1;
        if (slots > UINT32_MAX / 3 * 2)
            return;
        table_resize(st, (uint32_t)slots);
    }
    want = (uint64_t)st->count + n;
    if (want < GSTORE_NONE)
        ids_reserve(st, (uint32_t)want);
}

/* The dropped ids: a min-heap, so that the lowest is reused first and the highest ones
 * stay free (the arrays indexed by id shrink when they are). An entry is stale when its id
 * was reused or fell off the end (id >= count): it is skipped when it comes up. */
static void fids_push(struct gstore *st, uint32_t id)
{
    if (st->nfids == st->fids_cap) {
        st->fids_cap = st->fids_cap ? st->fids_cap * 2 : 64;
        st->fids = xrealloc(st->fids, (size_t)st->fids_cap * sizeof *st->fids);
    }
    uint32_t i = st->nfids++;
    while (i && st->fids[(i - 1) / 2] > id) {
        st->fids[i] = st->fids[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    st->fids[i] = id;
}

static uint32_t fids_pop(struct gstore *st)
{
    uint32_t top = st->fids[0], last = st->fids[--st->nfids], i = 0;
    for (;;) {
        uint32_t c = 2 * i + 1;
        if (c >= st->nfids)
            break;
        if (c + 1 < st->nfids && st->fids[c + 1] < st->fids[c])
            c++;
        if (st->fids[c] >= last)
            break;
        st->fids[i] = st->fids[c];
        i = c;
    }
    if (st->nfids)
        st->fids[i] = last;
    return top;
}

/* Rebuilds the heap from by_id (ascending: a heap already) when stale entries are many. */
static void fids_rebuild(struct gstore *st)
{
    uint32_t nfree = st->count - st->live;
    if (st->nfids - nfree <= st->count / 8 + 64)
        return;
    st->nfids = 0;
    st->fids_cap = nfree + 64;
    st->fids = xrealloc(st->fids, (size_t)st->fids_cap * sizeof *st->fids);
    for (uint32_t id = 0; id < st->count; id++)
        if (st->by_id[id] == GSTORE_NONE)
            st->fids[st->nfids++] = id;
}

/* @return the id a new counter takes: the lowest dropped one, or count. */
static uint32_t ids_take(struct gstore *st)
{
    while (st->live < st->count && st->nfids) {
        uint32_t id = fids_pop(st);
        if (id < st->count && st->by_id[id] == GSTORE_NONE)
            return id;
    }
    return st->count;
}

/* The entries a new counter gets room for. */
static unsigned new_cap(const struct gstore *st)
{
    /* In a steady cluster a counter gets an entry from each node: sizing it once avoids
     * a new block per new entry. */
    int want = st->expect_reps > 0 ? st->expect_reps : st->nrep;
    return want < 1 ? 1 : want > GCOUNTER_MAX_ENTRIES ? GCOUNTER_MAX_ENTRIES : (unsigned)want;
}

uint32_t gstore_create(struct gstore *st, const char *name, size_t len)
{
    if (len == 0 || len > GCOUNTER_NAME_MAX)
        return GSTORE_NONE;
    uint32_t h = (uint32_t)hash_bytes(name, len);
    uint32_t id = find_h(st, name, len, h);
    if (id != GSTORE_NONE)
        return id;
    if (st->count == GSTORE_NONE - 1 || st->nslots > UINT32_MAX / 3 * 2)
        return GSTORE_NONE;
    if ((uint64_t)(st->live + 1) * 5 > (uint64_t)st->nslots * 4)
        table_grow(st);
    else if ((uint64_t)(st->live + st->gone_slots + 1) * 5 > (uint64_t)st->nslots * 4)
        table_resize(st, st->nslots); /* the slots of dropped counters make probes long */
    id = ids_take(st);
    if (id == st->count && st->count == st->id_cap)
        ids_reserve(st, st->id_cap ? st->id_cap * 2 : 1024);
    unsigned cap = new_cap(st);
    uint32_t off = arena_alloc(st, c_units((unsigned)len, cap, 0, 0));
    struct gcounter *c = at(st, off);
    memset(c, 0, HEAD_SIZE);
    c->name_len = (uint8_t)len;
    c->cap = (uint8_t)cap;
    memcpy(c_name(c), name, len);
    c_name(c)[len] = '\0';

    if (id == st->count)
        st->count++;
    st->live++;
    st->by_id[id] = off;
    slot_put(st, h, id);
    ++st->seq;
    c->mseq_lo = (uint32_t)st->seq;
    c->mseq_hi = (uint32_t)(st->seq >> 32);
    list_append(st, id);
    return id;
}

const struct gcounter *gstore_counter(const struct gstore *st, uint32_t id)
{
    return cnt(st, id);
}

uint32_t gstore_count(const struct gstore *st)
{
    return st->count;
}

/* What every applied increment does after its entry changed. */
static void incr_done(struct gstore *st, struct gcounter *c, uint32_t id, int rep, int64_t amount)
{
    c->flags &= F_NEG; /* clears the origin */
    if (c->layout & L_DEAD) {
        /* An increment the deletion had not observed: the counter lives again. */
        c->layout &= (uint8_t)~L_DEAD;
        st->ndead--;
    }
    st->total += (double)amount;
    st->rep_net[rep] += (double)amount;
    touch_at(st, c, id);
}

int gstore_incr(struct gstore *st, uint32_t id, int rep, int64_t amount)
{
    struct gcounter *c = cnt(st, id);
    if (amount == 0)
        return 0;
    if (amount == INT64_MIN)
        return GSTORE_EOVERFLOW;
    int64_t mag = amount > 0 ? amount : -amount, sum;
    int i = c_find_rep(c, rep);
    if (i >= 0 && amount > 0) {
        /* The usual case: an existing entry grows and keeps its width, in place. */
        unsigned wc = c->layout & L_WC;
        unsigned char *p = c_vals(c) + ((size_t)i << wc);
        if (__builtin_add_overflow((int64_t)load_w(p, wc), mag, &sum))
            return GSTORE_EOVERFLOW;
        if (wc_for(sum) <= wc) {
            store_w(p, wc, (uint64_t)sum);
            incr_done(st, c, id, rep, amount);
            return 0;
        }
    }
    /* Only this replica's own entry must stay in range: totals are computed wide. */
    int64_t mine = i < 0 ? 0 : amount > 0 ? c_pos(c, (unsigned)i) : c_neg(c, (unsigned)i);
    if (__builtin_add_overflow(mine, mag, &sum))
        return GSTORE_EOVERFLOW;
    if (i < 0 && c->n >= st->max_entries)
        return GSTORE_EFULL;
    unsigned need = i < 0 && c->n == c->cap ? c->cap + 1u : c->cap;
    unsigned layout = wc_for(sum) | (i < 0 ? rep_layout(rep) : 0);
    c = c_fit(st, id, need, amount < 0 ? F_NEG : 0, layout);
    if (i < 0) {
        i = c->n++;
        c_set_rep(c, (unsigned)i, rep);
        st->rep_entries[rep]++;
        c_set_pos(c, (unsigned)i, 0);
        c_set_neg(c, (unsigned)i, 0);
        c_zero_floors(c, (unsigned)i);
    }
    if (amount > 0)
        c_set_pos(c, (unsigned)i, sum);
    else
        c_set_neg(c, (unsigned)i, sum);
    incr_done(st, c, id, rep, amount);
    return 0;
}

/* ---------------------------------------------------------------- tombstones */

static uint32_t tomb_hash(uint32_t id)
{
    return id * 2654435761u;
}

static struct tombs *tombs_find(const struct gstore *st, uint32_t id)
{
    if (!st->ntombc || id == GSTORE_NONE)
        return NULL;
    for (uint32_t i = tomb_hash(id) & st->tmask;; i = (i + 1) & st->tmask) {
        if (st->tombs[i].id == id)
            return &st->tombs[i];
        if (st->tombs[i].id == GSTORE_NONE)
            return NULL;
    }
}

static struct tombs *tombs_get(struct gstore *st, uint32_t id)
{
    struct tombs *t = tombs_find(st, id);
    if (t)
        return t;
    if (!st->tombs || (uint64_t)(st->ntombc + 1) * 4 > (uint64_t)(st->tmask + 1) * 3) {
        uint32_t nmask = st->tombs ? st->tmask * 2 + 1 : 63;
        struct tombs *nt = xmalloc(((size_t)nmask + 1) * sizeof *nt);
        memset(nt, 0, ((size_t)nmask + 1) * sizeof *nt);
        for (uint32_t i = 0; i <= nmask; i++)
            nt[i].id = GSTORE_NONE;
        for (uint32_t i = 0; st->tombs && i <= st->tmask; i++) {
            if (st->tombs[i].id == GSTORE_NONE)
                continue;
            uint32_t j = tomb_hash(st->tombs[i].id) & nmask;
            while (nt[j].id != GSTORE_NONE)
                j = (j + 1) & nmask;
            nt[j] = st->tombs[i];
        }
        st->bytes += ((size_t)nmask + 1) * sizeof *nt;
        if (st->tombs)
            st->bytes -= ((size_t)st->tmask + 1) * sizeof *nt;
        free(st->tombs);
        st->tombs = nt;
        st->tmask = nmask;
    }
    uint32_t i = tomb_hash(id) & st->tmask;
    while (st->tombs[i].id != GSTORE_NONE)
        i = (i + 1) & st->tmask;
    st->tombs[i].id = id;
    st->ntombc++;
    return &st->tombs[i];
}

static const uint16_t *tombs_reps(const struct tombs *t)
{
    return t->cap ? t->u.reps : t->u.in;
}

static int tombs_has(const struct tombs *t, int rep)
{
    if (!t)
        return 0;
    const uint16_t *r = tombs_reps(t);
    for (unsigned i = 0; i < t->n; i++)
        if (r[i] == rep)
            return 1;
    return 0;
}

static int list_has(const int *list, size_t n, int rep)
{
    for (size_t i = 0; i < n; i++)
        if (list[i] == rep)
            return 1;
    return 0;
}

/* Adds tombstone (id, rep). @return 1 when it is new. */
static int tomb_add(struct gstore *st, uint32_t id, int rep)
{
    struct tombs *t = tombs_get(st, id);
    if (tombs_has(t, rep))
        return 0;
    if (!t->cap && t->n == TOMBS_INLINE) {
        uint16_t *r = xmalloc(2 * TOMBS_INLINE * sizeof *r);
        memcpy(r, t->u.in, sizeof t->u.in);
        t->u.reps = r;
        t->cap = 2 * TOMBS_INLINE;
        st->bytes += (size_t)t->cap * sizeof *r;
    } else if (t->cap && t->n == t->cap) {
        st->bytes += (size_t)t->cap * sizeof *t->u.reps;
        t->cap = (uint16_t)(t->cap * 2);
        t->u.reps = xrealloc(t->u.reps, (size_t)t->cap * sizeof *t->u.reps);
    }
    if (t->cap)
        t->u.reps[t->n++] = (uint16_t)rep;
    else
        t->u.in[t->n++] = (uint16_t)rep;
    st->ntombs++;
    return 1;
}

/* ---------------------------------------------------------------- merging */

/*
 * Computes the merge of counter id (or nothing) with in[0..n) and the sender's tombstones
 * folded[0..nf) into st->scratch; *dropped says how many local entries the tombstones
 * drop. @return the number of merged entries, or an error.
 */
static int merge_compute(struct gstore *st, uint32_t id, const struct gentry *in, size_t n,
                         const int *folded, size_t nf, int skip_local, int *dropped)
{
    const struct gcounter *c = id == GSTORE_NONE || skip_local ? NULL : cnt(st, id);
    const struct tombs *t = tombs_find(st, id);
    size_t need = (c ? c->n : 0) + n;
    *dropped = 0;
    if (need > st->scratch_cap) {
        st->scratch_cap = need < 64 ? 64 : need;
        st->scratch = xrealloc(st->scratch, st->scratch_cap * sizeof *st->scratch);
    }
    if (nf) {
        unsigned total = t ? t->n : 0;
        for (size_t f = 0; f < nf; f++)
            if (!tombs_has(t, folded[f]) && !list_has(folded, f, folded[f]))
                total++;
        if (total > GCOUNTER_MAX_FOLDED)
            return GSTORE_EFOLDED;
    }
    struct gentry *m = st->scratch;
    size_t k = 0;
    if (c) {
        for (unsigned i = 0; i < c->n; i++) {
            if (nf && list_has(folded, nf, c_rep(c, i))) {
                (*dropped)++; /* folded by the sender: its value is in another entry now */
                continue;
            }
            m[k].rep = c_rep(c, i);
            m[k].pos = c_pos(c, i);
            m[k].neg = c_neg(c, i);
            k++;
        }
    }
    for (size_t j = 0; j < n; j++) {
        if ((t && tombs_has(t, in[j].rep)) || (nf && list_has(folded, nf, in[j].rep)))
            continue; /* a folded replica: its value is in another entry */
        size_t i = 0;
        while (i < k && m[i].rep != in[j].rep)
            i++;
        if (i == k && in[j].pos == 0 && in[j].neg == 0)
            continue; /* an absent replica already counts 0: nothing to add */
        if (i == k) {
            if (k >= st->max_entries)
                return GSTORE_EFULL;
            m[k].rep = in[j].rep;
            m[k].pos = m[k].neg = 0;
            k++;
        }
        if (in[j].pos > m[i].pos)
            m[i].pos = in[j].pos;
        if (in[j].neg > m[i].neg)
            m[i].neg = in[j].neg;
    }
    return (int)k;
}

int gstore_merge_check(struct gstore *st, uint32_t id, const struct gentry *in, size_t n)
{
    return gstore_merge_check_folded(st, id, in, n, NULL, 0);
}

int gstore_merge_check_folded(struct gstore *st, uint32_t id, const struct gentry *in, size_t n,
                              const int *folded, size_t nf)
{
    return gstore_merge_life_check(st, id, in, n, folded, nf, NULL);
}

/* Whether the merged entries m[0..k) are exactly the state in[0..n) describes. */
static int equals_input(const struct gentry *m, int k, const struct gentry *in, size_t n)
{
    for (int i = 0; i < k; i++) {
        int64_t pos = 0, neg = 0;
        int seen = 0;
        for (size_t j = 0; j < n; j++) {
            if (in[j].rep != m[i].rep)
                continue;
            seen = 1;
            if (in[j].pos > pos)
                pos = in[j].pos;
            if (in[j].neg > neg)
                neg = in[j].neg;
        }
        if (!seen || pos != m[i].pos || neg != m[i].neg)
            return 0;
    }
    return 1;
}

int gstore_merge(struct gstore *st, uint32_t id, const struct gentry *in, size_t n)
{
    return gstore_merge_folded(st, id, in, n, NULL, 0, 0);
}

int gstore_merge_from(struct gstore *st, uint32_t id, const struct gentry *in, size_t n, int origin)
{
    return gstore_merge_folded(st, id, in, n, NULL, 0, origin);
}

/* The room counter id needs for the merged entries m[0..k): *flags gets F_NEG when one has
 * a neg, @return the layout of their values and replica ids. */
static unsigned merged_shape(const struct gentry *m, int k, unsigned *flags)
{
    unsigned layout = 0;
    for (int i = 0; i < k; i++) {
        if (m[i].neg)
            *flags |= F_NEG;
        unsigned w = wc_for(m[i].pos > m[i].neg ? m[i].pos : m[i].neg) | rep_layout(m[i].rep);
        layout = layout_max(layout, w);
    }
    return layout;
}

/*
 * Replaces counter id's entries by m[0..k) (some of its entries were dropped by
 * tombstones, so the merged entries are not its own in the same order).
 * @return how many entries changed (dropped ones included).
 */
static int rewrite_entries(struct gstore *st, uint32_t id, const struct gentry *m, int k)
{
    struct gcounter *c = cnt(st, id);
    int changed = 0;
    for (int i = 0; i < k; i++) {
        int o = c_find_rep(c, m[i].rep);
        if (o < 0 || c_pos(c, (unsigned)o) != m[i].pos || c_neg(c, (unsigned)o) != m[i].neg)
            changed++;
    }
    for (unsigned i = 0; i < c->n; i++) {
        int rep = c_rep(c, i);
        double d = (double)c_pos(c, i) - (double)c_neg(c, i);
        st->total -= d;
        st->rep_net[rep] -= d;
        st->rep_entries[rep]--;
        int kept = 0;
        for (int j = 0; j < k && !kept; j++)
            kept = m[j].rep == rep;
        changed += !kept;
    }
    unsigned flags = 0, wc = merged_shape(m, k, &flags);
    c = c_fit(st, id, (unsigned)k, flags, wc);
    for (int i = 0; i < k; i++) {
        c_set_rep(c, (unsigned)i, m[i].rep);
        c_set_pos(c, (unsigned)i, m[i].pos);
        c_set_neg(c, (unsigned)i, m[i].neg);
        double d = (double)m[i].pos - (double)m[i].neg;
        st->total += d;
        st->rep_net[m[i].rep] += d;
        st->rep_entries[m[i].rep]++;
    }
    c->n = (uint8_t)k;
    return changed;
}

/* Writes the merged entries m[0..k) into counter id, whose own entries are the first
 * c->n of them in the same order. @return how many entries changed. */
static int update_entries(struct gstore *st, uint32_t id, const struct gentry *m, int k)
{
    unsigned flags = 0, wc = merged_shape(m, k, &flags);
    struct gcounter *c = c_fit(st, id, (unsigned)k, flags, wc);
    int changed = 0;
    for (int i = 0; i < k; i++) {
        int64_t old_pos = 0, old_neg = 0;
        if ((unsigned)i >= c->n) {
            c_set_rep(c, (unsigned)i, m[i].rep);
            st->rep_entries[m[i].rep]++;
        } else {
            old_pos = c_pos(c, (unsigned)i);
            old_neg = c_neg(c, (unsigned)i);
            if (old_pos == m[i].pos && old_neg == m[i].neg)
                continue;
        }
        c_set_pos(c, (unsigned)i, m[i].pos);
        c_set_neg(c, (unsigned)i, m[i].neg);
        double d = (double)(m[i].pos - old_pos) - (double)(m[i].neg - old_neg);
        st->total += d;
        st->rep_net[m[i].rep] += d;
        changed++;
    }
    c->n = (uint8_t)k;
    return changed;
}

int gstore_merge_folded(struct gstore *st, uint32_t id, const struct gentry *in, size_t n,
                        const int *folded, size_t nf, int origin)
{
    return gstore_merge_life(st, id, in, n, folded, nf, NULL, origin);
}

/* gstore_merge_folded of a counter without lifecycle state and a state without any. */
static int merge_plain(struct gstore *st, uint32_t id, const struct gentry *in, size_t n,
                       const int *folded, size_t nf, int origin)
{
    int dropped;
    int k = merge_compute(st, id, in, n, folded, nf, 0, &dropped);
    if (k < 0)
        return k;
    const struct gentry *m = st->scratch;
    int changed = dropped ? rewrite_entries(st, id, m, k) : update_entries(st, id, m, k);
    int added = 0;
    for (size_t f = 0; f < nf; f++)
        added += tomb_add(st, id, folded[f]);
    if (changed || added) {
        /* The sender has all of it only if it also has every tombstone we hold. */
        const struct tombs *t = tombs_find(st, id);
        int covered = 1;
        for (unsigned i = 0; t && i < t->n && covered; i++)
            covered = list_has(folded, nf, tombs_reps(t)[i]);
        int tag =
            origin > 0 && origin <= GCOUNTER_MAX_ORIGIN && covered && equals_input(m, k, in, n)
                ? origin
                : 0;
        struct gcounter *c = cnt(st, id);
        c->flags = (uint8_t)((c->flags & F_NEG) | (unsigned)tag << ORIGIN_SHIFT);
        touch(st, id);
    }
    return changed + added;
}

/* ---------------------------------------------------------------- lifecycle */

/* Takes counter c's parts above its clear floor out of the aggregates (sign -1) or puts
 * them back (sign 1), with its replicas' entry counts. */
static void agg_apply(struct gstore *st, const struct gcounter *c, int sign)
{
    for (unsigned i = 0; i < c->n; i++) {
        int rep = c_rep(c, i);
        double d = (double)c_above(c, i);
        st->total += sign * d;
        st->rep_net[rep] += sign * d;
        st->rep_entries[rep] = (uint32_t)((int64_t)st->rep_entries[rep] + sign);
    }
}

/* The buffers gstore_life answers in, made with the first lifecycle state. */
static void life_bufs(struct gstore *st)
{
    if (!st->life_fl) {
        st->life_fl = xmalloc(GCOUNTER_MAX_ENTRIES * sizeof *st->life_fl);
        st->life_dfl = xmalloc(GCOUNTER_MAX_ENTRIES * sizeof *st->life_dfl);
    }
}

static unsigned c_life_flags(const struct gcounter *c)
{
    return ((c->layout & L_DEL) ? GLIFE_DELETED : 0) | ((c->layout & L_SEALED) ? GLIFE_SEALED : 0);
}

int gstore_clear(struct gstore *st, uint32_t id)
{
    struct gcounter *c = cnt(st, id);
    agg_apply(st, c, -1);
    c = c_fit(st, id, c->cap, 0, L_FL);
    for (unsigned i = 0; i < c->n; i++)
        c_set_floor(c, 1, i, c_pos(c, i), c_neg(c, i));
    agg_apply(st, c, 1); /* the entries, each now at 0 above the floor */
    life_bufs(st);
    c->flags &= F_NEG;
    touch_at(st, c, id);
    return 0;
}

int gstore_delete(struct gstore *st, uint32_t id)
{
    struct gcounter *c = cnt(st, id);
    agg_apply(st, c, -1);
    c = c_fit(st, id, c->cap, 0, L_FL | L_DEL);
    for (unsigned i = 0; i < c->n; i++) {
        c_set_floor(c, 1, i, c_pos(c, i), c_neg(c, i));
        c_set_floor(c, 2, i, c_pos(c, i), c_neg(c, i));
    }
    agg_apply(st, c, 1);
    life_bufs(st);
    if (!(c->layout & L_DEAD))
        st->ndead++;
    c->layout = (uint8_t)((c->layout & ~L_SEALED) | L_DEAD);
    c->flags &= F_NEG;
    touch_at(st, c, id);
    return 0;
}

int gstore_seal(struct gstore *st, uint32_t id)
{
    struct gcounter *c = cnt(st, id);
    if (!(c->layout & L_DEAD) || (c->layout & L_SEALED))
        return 0;
    c->layout |= L_SEALED;
    c->flags &= F_NEG;
    touch_at(st, c, id);
    return 1;
}

int gstore_dead(const struct gstore *st, uint32_t id)
{
    return (cnt(st, id)->layout & L_DEAD) != 0;
}

uint32_t gstore_dead_total(const struct gstore *st)
{
    return st->ndead;
}

int gstore_life(const struct gstore *st, uint32_t id, struct glife *out)
{
    const struct gcounter *c = cnt(st, id);
    memset(out, 0, sizeof *out);
    if (!(c->layout & (L_FL | L_DEL)))
        return 0;
    size_t nf = 0, nd = 0;
    for (unsigned i = 0; i < c->n; i++) {
        int64_t p = c_fpos(c, 1, i), q = c_fneg(c, 1, i);
        if (p || q)
            st->life_fl[nf++] = (struct gentry){c_rep(c, i), p, q};
        p = c_fpos(c, 2, i);
        q = c_fneg(c, 2, i);
        if (p || q)
            st->life_dfl[nd++] = (struct gentry){c_rep(c, i), p, q};
    }
    out->floor = st->life_fl;
    out->nfloor = nf;
    out->dfloor = st->life_dfl;
    out->ndfloor = nd;
    out->flags = c_life_flags(c);
    return 1;
}

/* The per-replica maximum of v[0..n) for rep ((0, 0) when it is absent). */
static void vec_max(const struct gentry *v, size_t n, int rep, int64_t *pos, int64_t *neg)
{
    *pos = *neg = 0;
    for (size_t j = 0; j < n; j++) {
        if (v[j].rep != rep)
            continue;
        if (v[j].pos > *pos)
            *pos = v[j].pos;
        if (v[j].neg > *neg)
            *neg = v[j].neg;
    }
}

/* A state's flags: GLIFE_SEALED means nothing without GLIFE_DELETED. */
static unsigned life_flags(const struct glife *l)
{
    unsigned f = l ? l->flags & (GLIFE_DELETED | GLIFE_SEALED) : 0;
    return (f & GLIFE_DELETED) ? f : 0;
}

/* Whether the state in[0..n) + l is a sealed tombstone (nothing above its delete floor). */
static int in_sealed_dead(const struct gentry *in, size_t n, const struct glife *l)
{
    if (life_flags(l) != (GLIFE_DELETED | GLIFE_SEALED))
        return 0;
    for (size_t j = 0; j < n; j++) {
        int64_t p, q, dp, dq;
        vec_max(in, n, in[j].rep, &p, &q);
        vec_max(l->dfloor, l->ndfloor, in[j].rep, &dp, &dq);
        if (p > dp || q > dq)
            return 0;
    }
    return 1;
}

/*
 * The new-life rule, both ways (so that the merge stays commutative): a sealed tombstone
 * that receives a state counted since without a deletion takes it whole (1), and a state
 * counted without a deletion that receives a sealed tombstone keeps itself (2): either
 * way the sender or the receiver dropped the tombstone and counted the name again. 0: a
 * merge as always.
 */
static int life_mode(const struct gcounter *c, const struct gentry *in, size_t n,
                     const struct glife *life)
{
    if (!c)
        return 0;
    if ((c->layout & (L_SEALED | L_DEAD)) == (L_SEALED | L_DEAD) &&
        !(life_flags(life) & GLIFE_DELETED)) {
        for (size_t j = 0; j < n; j++)
            if (in[j].pos || in[j].neg)
                return 1;
        return 0;
    }
    if (!(c->layout & L_DEL) && c->n > 0 && in_sealed_dead(in, n, life))
        return 2;
    return 0;
}

/*
 * merge_compute with lifecycle states: the merged entries in st->scratch, their clear and
 * delete floors (per-entry max, the clear floor at least the delete floor, both clamped
 * to the entries) in st->fscr and st->dscr, *flags the merged GLIFE_ flags, *mode the
 * new-life rule's verdict. @return the number of merged entries, or an error.
 */
static int life_compute(struct gstore *st, uint32_t id, const struct gentry *in, size_t n,
                        const int *folded, size_t nf, const struct glife *life, unsigned *flags,
                        int *mode)
{
    const struct gcounter *c = id == GSTORE_NONE ? NULL : cnt(st, id);
    int dropped;
    *mode = life_mode(c, in, n, life);
    if (*mode == 2) {
        n = 0;
        life = NULL;
    }
    int k = merge_compute(st, id, in, n, folded, nf, *mode == 1, &dropped);
    if (k < 0)
        return k;
    if (st->life_cap < st->scratch_cap) {
        st->life_cap = st->scratch_cap;
        st->fscr = xrealloc(st->fscr, st->life_cap * sizeof *st->fscr);
        st->dscr = xrealloc(st->dscr, st->life_cap * sizeof *st->dscr);
    }
    const struct gentry *m = st->scratch;
    const struct gcounter *own = *mode == 1 ? NULL : c;
    for (int i = 0; i < k; i++) {
        int64_t v[2][2] = {{0, 0}, {0, 0}}, a, b; /* [clear, delete][pos, neg] */
        int o = own ? c_find_rep(own, m[i].rep) : -1;
        for (unsigned f = 0; f < 2 && o >= 0; f++) {
            v[f][0] = c_fpos(own, f + 1, (unsigned)o);
            v[f][1] = c_fneg(own, f + 1, (unsigned)o);
        }
        for (unsigned f = 0; f < 2 && life; f++) {
            if (f == 0)
                vec_max(life->floor, life->nfloor, m[i].rep, &a, &b);
            else
                vec_max(life->dfloor, life->ndfloor, m[i].rep, &a, &b);
            v[f][0] = a > v[f][0] ? a : v[f][0];
            v[f][1] = b > v[f][1] ? b : v[f][1];
        }
        for (unsigned f = 0; f < 2; f++) {
            if (f == 0 && v[1][0] > v[0][0])
                v[0][0] = v[1][0];
            if (f == 0 && v[1][1] > v[0][1])
                v[0][1] = v[1][1];
            if (v[f][0] > m[i].pos)
                v[f][0] = m[i].pos;
            if (v[f][1] > m[i].neg)
                v[f][1] = m[i].neg;
        }
        st->fscr[i] = (struct gentry){m[i].rep, v[0][0], v[0][1]};
        st->dscr[i] = (struct gentry){m[i].rep, v[1][0], v[1][1]};
    }
    *flags = life_flags(life) | (own ? c_life_flags(own) : 0);
    return k;
}

int gstore_merge_life_check(struct gstore *st, uint32_t id, const struct gentry *in, size_t n,
                            const int *folded, size_t nf, const struct glife *life)
{
    unsigned flags;
    int mode, dropped, k;
    if ((id == GSTORE_NONE || !(cnt(st, id)->layout & L_LIFE)) && !life_flags(life))
        k = merge_compute(st, id, in, n, folded, nf, 0, &dropped); /* floors add no entry */
    else
        k = life_compute(st, id, in, n, folded, nf, life, &flags, &mode);
    return k < 0 ? k : 0;
}

/* How writing the merged state (k entries, flags) changes counter c: @return the number
 * of entries that change (dropped ones included); *other says whether a floor or a flag
 * changes. */
static int life_changes(const struct gstore *st, const struct gcounter *c, int k, unsigned flags,
                        int *other)
{
    const struct gentry *m = st->scratch, *f = st->fscr, *d = st->dscr;
    int changed = 0;
    *other = c_life_flags(c) != flags;
    for (int i = 0; i < k; i++) {
        int o = c_find_rep(c, m[i].rep);
        unsigned u = (unsigned)o;
        if (o < 0 || c_pos(c, u) != m[i].pos || c_neg(c, u) != m[i].neg)
            changed++;
        if (o < 0 ? f[i].pos || f[i].neg || d[i].pos || d[i].neg
                  : c_fpos(c, 1, u) != f[i].pos || c_fneg(c, 1, u) != f[i].neg ||
                        c_fpos(c, 2, u) != d[i].pos || c_fneg(c, 2, u) != d[i].neg)
            *other = 1;
    }
    for (unsigned i = 0; i < c->n; i++) {
        int kept = 0;
        for (int j = 0; j < k && !kept; j++)
            kept = m[j].rep == c_rep(c, i);
        changed += !kept;
    }
    return changed;
}

/* Moves counter id into a block of exactly this shape (its entries are rewritten next). */
static struct gcounter *c_reshape(struct gstore *st, uint32_t id, unsigned cap, unsigned flags,
                                  unsigned layout)
{
    uint32_t old = st->by_id[id];
    struct gcounter *c = at(st, old);
    uint32_t off = arena_alloc(st, c_units(c->name_len, cap, flags, layout));
    c = at(st, old);
    struct gcounter *d = at(st, off);
    memcpy(d, c, HEAD_SIZE + c->name_len + 1u);
    d->cap = (uint8_t)cap;
    d->flags = (uint8_t)flags;
    d->layout = (uint8_t)layout;
    d->n = 0;
    arena_free(st, old, c_units(c->name_len, c->cap, c->flags, c->layout));
    st->by_id[id] = off;
    return d;
}

/* Writes the merged state (st's scratch: k entries and their floors, flags) into counter
 * id; mode 1 (a new life) gives it a block of the new state's shape. */
static void life_write(struct gstore *st, uint32_t id, int k, unsigned flags, int mode)
{
    const struct gentry *m = st->scratch, *f = st->fscr, *d = st->dscr;
    struct gcounter *c = cnt(st, id);
    agg_apply(st, c, -1);
    if (c->layout & L_DEAD)
        st->ndead--;
    unsigned fl = 0, layout = merged_shape(m, k, &fl), cap = (unsigned)k;
    int floors = 0, dead = (flags & GLIFE_DELETED) != 0;
    for (int i = 0; i < k; i++) {
        floors |= f[i].pos || f[i].neg;
        dead &= m[i].pos == d[i].pos && m[i].neg == d[i].neg;
    }
    layout |= (flags & GLIFE_DELETED) ? L_FL | L_DEL : floors ? L_FL : 0;
    if (mode == 1)
        c = c_reshape(st, id, cap > c->cap ? cap : c->cap, fl, layout);
    else
        c = c_fit(st, id, cap, fl, layout);
    for (int i = 0; i < k; i++) {
        c_set_rep(c, (unsigned)i, m[i].rep);
        c_set_pos(c, (unsigned)i, m[i].pos);
        c_set_neg(c, (unsigned)i, m[i].neg);
        if (c->layout & L_FL)
            c_set_floor(c, 1, (unsigned)i, f[i].pos, f[i].neg);
        if (c->layout & L_DEL)
            c_set_floor(c, 2, (unsigned)i, d[i].pos, d[i].neg);
    }
    c->n = (uint8_t)k;
    c->layout = (uint8_t)((c->layout & ~(L_SEALED | L_DEAD)) |
                          ((flags & GLIFE_SEALED) ? L_SEALED : 0) | (dead ? L_DEAD : 0));
    st->ndead += (uint32_t)dead;
    agg_apply(st, c, 1);
    life_bufs(st);
}

/* Whether the merged floors and flags are exactly those of life (NULL: none). */
static int life_equals_input(const struct gstore *st, int k, unsigned flags,
                             const struct glife *life)
{
    if (flags != life_flags(life))
        return 0;
    for (int i = 0; i < k; i++) {
        int64_t p = 0, q = 0, dp = 0, dq = 0;
        if (life) {
            vec_max(life->floor, life->nfloor, st->fscr[i].rep, &p, &q);
            vec_max(life->dfloor, life->ndfloor, st->dscr[i].rep, &dp, &dq);
        }
        if (p != st->fscr[i].pos || q != st->fscr[i].neg || dp != st->dscr[i].pos ||
            dq != st->dscr[i].neg)
            return 0;
    }
    return 1;
}

int gstore_merge_life(struct gstore *st, uint32_t id, const struct gentry *in, size_t n,
                      const int *folded, size_t nf, const struct glife *life, int origin)
{
    if (!(cnt(st, id)->layout & L_LIFE) &&
        (!life || (!life->nfloor && !life->ndfloor && !life_flags(life))))
        return merge_plain(st, id, in, n, folded, nf, origin);
    unsigned flags;
    int mode, other;
    int k = life_compute(st, id, in, n, folded, nf, life, &flags, &mode);
    if (k < 0)
        return k;
    int changed = life_changes(st, cnt(st, id), k, flags, &other);
    if (changed || other)
        life_write(st, id, k, flags, mode);
    int added = 0;
    for (size_t f = 0; f < nf; f++)
        added += tomb_add(st, id, folded[f]);
    if (!changed && !other && !added)
        return 0;
    const struct tombs *t = tombs_find(st, id);
    int covered = mode != 2;
    for (unsigned i = 0; t && i < t->n && covered; i++)
        covered = list_has(folded, nf, tombs_reps(t)[i]);
    int tag = origin > 0 && origin <= GCOUNTER_MAX_ORIGIN && covered &&
                      equals_input(st->scratch, k, in, n) && life_equals_input(st, k, flags, life)
                  ? origin
                  : 0;
    struct gcounter *c = cnt(st, id);
    c->flags = (uint8_t)((c->flags & F_NEG) | (unsigned)tag << ORIGIN_SHIFT);
    touch(st, id);
    return changed + added ? changed + added : 1;
}

/* Moves slot src of c (entry and floors) to slot dst. */
static void c_move(struct gcounter *c, unsigned dst, unsigned src)
{
    c_set_pos(c, dst, c_pos(c, src));
    c_set_neg(c, dst, c_neg(c, src));
    c_set_rep(c, dst, c_rep(c, src));
    for (unsigned v = 1; v < c_nvec(c->layout); v++)
        c_set_floor(c, v, dst, c_fpos(c, v, src), c_fneg(c, v, src));
}

int gstore_fold(struct gstore *st, uint32_t id, int from, int into)
{
    struct gcounter *c = cnt(st, id);
    int i = c_find_rep(c, from);
    if (i < 0 || from == into)
        return 0;
    const struct tombs *t = tombs_find(st, id);
    if (t && t->n >= GCOUNTER_MAX_FOLDED)
        return GSTORE_EFOLDED;
    int j = c_find_rep(c, into);
    int64_t fp = c_pos(c, (unsigned)i), fn = c_neg(c, (unsigned)i), sp, sn;
    if (__builtin_add_overflow(j < 0 ? 0 : c_pos(c, (unsigned)j), fp, &sp) ||
        __builtin_add_overflow(j < 0 ? 0 : c_neg(c, (unsigned)j), fn, &sn))
        return GSTORE_EOVERFLOW;
    /* The floors move with the entry (each is at most its entry: their sums fit too). */
    int64_t fl[3][2] = {{0, 0}, {0, 0}, {0, 0}};
    for (unsigned v = 1; v < 3; v++) {
        fl[v][0] = c_fpos(c, v, (unsigned)i) + (j < 0 ? 0 : c_fpos(c, v, (unsigned)j));
        fl[v][1] = c_fneg(c, v, (unsigned)i) + (j < 0 ? 0 : c_fneg(c, v, (unsigned)j));
    }
    double d = (double)(c_above(c, (unsigned)i));
    unsigned wp = wc_for(sp), wn = wc_for(sn);
    c = c_fit(st, id, c->cap, 0, layout_max(wp, wn) | rep_layout(into));
    if (j < 0) {
        c_set_rep(c, (unsigned)i, into); /* into takes from's place */
        st->rep_entries[into]++;
        j = i;
    } else {
        unsigned last = c->n - 1u;
        c_move(c, (unsigned)i, last);
        if ((unsigned)j == last)
            j = i;
        c->n--;
    }
    c_set_pos(c, (unsigned)j, sp);
    c_set_neg(c, (unsigned)j, sn);
    for (unsigned v = 1; v < c_nvec(c->layout); v++)
        c_set_floor(c, v, (unsigned)j, fl[v][0], fl[v][1]);
    st->rep_entries[from]--;
    st->rep_net[from] -= d;
    st->rep_net[into] += d;
    tomb_add(st, id, from);
    c->flags = (uint8_t)(c->flags & F_NEG);
    touch(st, id);
    return 1;
}

int gstore_folded(const struct gstore *st, uint32_t id, int rep)
{
    return tombs_has(tombs_find(st, id), rep);
}

unsigned gstore_folded_list(const struct gstore *st, uint32_t id, const uint16_t **reps)
{
    const struct tombs *t = tombs_find(st, id);
    *reps = t ? tombs_reps(t) : NULL;
    return t ? t->n : 0;
}

uint64_t gstore_folded_total(const struct gstore *st)
{
    return st->ntombs;
}

uint32_t gstore_replica_entries(const struct gstore *st, int rep)
{
    return rep >= 0 && rep < st->nrep ? st->rep_entries[rep] : 0;
}

void gstore_set_max_entries(struct gstore *st, unsigned n)
{
    st->max_entries = n < 1 ? 1 : n > GCOUNTER_MAX_ENTRIES ? GCOUNTER_MAX_ENTRIES : n;
}

uint64_t gstore_touch(struct gstore *st, uint32_t id)
{
    struct gcounter *c = cnt(st, id);
    c->flags = (uint8_t)(c->flags & F_NEG);
    touch(st, id);
    return st->seq;
}

uint64_t gstore_seq(const struct gstore *st)
{
    return st->seq;
}

double gstore_total(const struct gstore *st)
{
    return st->total;
}

double gstore_replica_net(const struct gstore *st, int rep)
{
    return rep >= 0 && rep < st->nrep ? st->rep_net[rep] : 0;
}

uint32_t gstore_changed_after(const struct gstore *st, uint64_t seq)
{
    uint32_t id = st->tail;
    if (id == GSTORE_NONE || c_mseq(cnt(st, id)) <= seq)
        return GSTORE_NONE;
    for (;;) {
        uint32_t prev = cnt(st, id)->prev;
        if (prev == GSTORE_NONE || c_mseq(cnt(st, prev)) <= seq)
            return id;
        id = prev;
    }
}

uint32_t gstore_changed_next(const struct gstore *st, uint32_t id)
{
    return cnt(st, id)->next;
}

size_t gstore_memory(const struct gstore *st)
{
    /* The last chunk's unused part is not touched yet: not resident, not counted. */
    size_t arena = st->arena_bytes - (size_t)(st->room - st->bump) * UNIT;
    return arena + st->bytes + (size_t)st->nslots * (sizeof *st->slots + 1) +
           (size_t)st->count * sizeof *st->by_id + (size_t)st->fids_cap * sizeof *st->fids;
}

/* ---------------------------------------------------------------- reading */

const char *gstore_counter_name(const struct gcounter *c, size_t *len)
{
    if (len)
        *len = c->name_len;
    return c_name(c);
}

uint64_t gstore_counter_mseq(const struct gcounter *c)
{
    return c_mseq(c);
}

int64_t gstore_counter_value(const struct gcounter *c)
{
    gstore_wide v = 0;
    if (c->layout & L_FL) {
        for (unsigned i = 0; i < c->n; i++)
            v += c_above(c, i);
        return gstore_clamp(v, NULL);
    }
    for (unsigned i = 0; i < c->n; i++)
        v += (gstore_wide)c_pos(c, i) - c_neg(c, i);
    return gstore_clamp(v, NULL);
}

unsigned gstore_counter_nodes(const struct gstore *st, const struct gcounter *c, struct gnode *out)
{
    /* Per node: incarnations summed, and apart the bare entry (an original-format peer's
     * sum of that node's incarnations, which it learned from us or another region). */
    gstore_wide bare_pos[GCOUNTER_MAX_ENTRIES], bare_neg[GCOUNTER_MAX_ENTRIES];
    unsigned k = 0;
    for (unsigned i = 0; i < c->n; i++) {
        int rep = c_rep(c, i);
        int node = st->rep_node[rep];
        unsigned j = 0;
        while (j < k && out[j].node != node)
            j++;
        if (j == k) {
            out[k].node = node;
            out[k].pos = out[k].neg = bare_pos[k] = bare_neg[k] = 0;
            k++;
        }
        /* Above the clear floor: what the clears observed is not counted. */
        int64_t p = c_pos(c, i) - c_fpos(c, 1, i), q = c_neg(c, i) - c_fneg(c, 1, i);
        if (st->rep_bare[rep]) {
            bare_pos[j] = p;
            bare_neg[j] = q;
        } else {
            out[j].pos += p;
            out[j].neg += q;
        }
    }
    for (unsigned j = 0; j < k; j++) {
        if (bare_pos[j] > out[j].pos)
            out[j].pos = bare_pos[j];
        if (bare_neg[j] > out[j].neg)
            out[j].neg = bare_neg[j];
    }
    return k;
}

size_t gstore_wide_str(gstore_wide v, char *out)
{
    char tmp[48];
    size_t n = 0, k = 0;
    unsigned __int128 u = v < 0 ? -(unsigned __int128)v : (unsigned __int128)v;
    do {
        tmp[n++] = (char)('0' + (int)(u % 10));
        u /= 10;
    } while (u);
    if (v < 0)
        out[k++] = '-';
    while (n)
        out[k++] = tmp[--n];
    out[k] = '\0';
    return k;
}

gstore_wide gstore_value(const struct gstore *st, const struct gcounter *c)
{
    struct gnode nodes[GCOUNTER_MAX_ENTRIES];
    unsigned k = c ? gstore_counter_nodes(st, c, nodes) : 0;
    gstore_wide v = 0;
    for (unsigned j = 0; j < k; j++)
        v += nodes[j].pos - nodes[j].neg;
    return v;
}

int64_t gstore_counter_net(const struct gcounter *c, int rep)
{
    int i = c_find_rep(c, rep);
    if (i < 0)
        return 0;
    return (c_pos(c, (unsigned)i) - c_fpos(c, 1, (unsigned)i)) -
           (c_neg(c, (unsigned)i) - c_fneg(c, 1, (unsigned)i));
}

unsigned gstore_counter_entries(const struct gcounter *c)
{
    return c->n;
}

void gstore_counter_entry(const struct gcounter *c, unsigned i, struct gentry *out)
{
    out->rep = c_rep(c, i);
    out->pos = c_pos(c, i);
    out->neg = c_neg(c, i);
}

int gstore_counter_has_neg(const struct gcounter *c)
{
    return (c->flags & F_NEG) != 0;
}

int gstore_counter_origin(const struct gcounter *c)
{
    return c->flags >> ORIGIN_SHIFT;
}

/* ---------------------------------------------------------------- dropping */

/* Removes counter id's tombstones of folded replicas (backward-shift deletion). */
static void tombs_remove(struct gstore *st, uint32_t id)
{
    struct tombs *t = tombs_find(st, id);
    if (!t)
        return;
    if (t->cap) {
        st->bytes -= (size_t)t->cap * sizeof *t->u.reps;
        free(t->u.reps);
    }
    st->ntombs -= t->n;
    st->ntombc--;
    uint32_t i = (uint32_t)(t - st->tombs), mask = st->tmask;
    for (uint32_t j = (i + 1) & mask; st->tombs[j].id != GSTORE_NONE; j = (j + 1) & mask) {
        uint32_t h = tomb_hash(st->tombs[j].id) & mask;
        /* The entry at j may move to i unless its home lies cyclically in (i, j]. */
        int stays = i < j ? h > i && h <= j : h > i || h <= j;
        if (!stays) {
            st->tombs[i] = st->tombs[j];
            i = j;
        }
    }
    memset(&st->tombs[i], 0, sizeof st->tombs[i]);
    st->tombs[i].id = GSTORE_NONE;
    if (!st->ntombc) {
        st->bytes -= ((size_t)st->tmask + 1) * sizeof *st->tombs;
        free(st->tombs);
        st->tombs = NULL;
        st->tmask = 0;
    }
}

/* Takes counter id (at c) out of the table: its slot keeps a TAG_GONE. */
static void slot_remove(struct gstore *st, uint32_t id, const struct gcounter *c)
{
    uint32_t h = (uint32_t)hash_bytes(c_name(c), c->name_len);
    uint32_t i = slot_of(h, st->nslots);
    while (!(st->tags[i] == tag_of(h) && st->slots[i] == id))
        i = i + 1 == st->nslots ? 0 : i + 1;
    st->tags[i] = TAG_GONE;
    st->slots[i] = GSTORE_NONE;
    st->gone_slots++;
}

/* After a drop: the highest free ids fall off the end, and the table and by_id shrink
 * when they are half empty, to about what growing to this size would have made them (a
 * table 1.5 slots a counter, by_id a quarter more than the ids), so that a store that
 * held many more counters for a while ends as big as one that never did. Each shrink
 * waits for a quarter of what remains to go: a few rehashes, however many are dropped. */
static void drop_shrink(struct gstore *st)
{
    while (st->count && st->by_id[st->count - 1] == GSTORE_NONE)
        st->count--;
    fids_rebuild(st);
    if (st->id_cap > 1024 && st->count < st->id_cap / 2) {
        uint32_t n = st->count + st->count / 4;
        st->id_cap = n < 1024 ? 1024 : n;
        st->by_id = xrealloc(st->by_id, (size_t)st->id_cap * sizeof *st->by_id);
    }
    if (st->nslots > 1024 && (uint64_t)st->live * 2 < st->nslots) {
        uint32_t n = st->live + st->live / 2 + 1;
        table_resize(st, n < 1024 ? 1024 : n);
    }
}

void gstore_drop(struct gstore *st, uint32_t id)
{
    struct gcounter *c = cnt(st, id);
    slot_remove(st, id, c);
    list_unlink(st, id);
    agg_apply(st, c, -1);
    if (c->layout & L_DEAD)
        st->ndead--;
    tombs_remove(st, id);
    arena_free(st, st->by_id[id], c_units(c->name_len, c->cap, c->flags, c->layout));
    st->by_id[id] = GSTORE_NONE;
    st->live--;
    if (id + 1 < st->count)
        fids_push(st, id);
    drop_shrink(st);
}

int gstore_exists(const struct gstore *st, uint32_t id)
{
    return id < st->count && st->by_id[id] != GSTORE_NONE;
}

uint32_t gstore_live(const struct gstore *st)
{
    return st->live;
}
