/*
 * gstore.c - the CRDT store (see gstore.h).
 *
 * Memory is the constraint that shapes this file: a region must hold a million counters
 * in well under 128 MB. Each counter is one malloc'd block: a 24-byte header, then the
 * arrays pos[cap], neg[cap] (only once the counter has been decremented), rep[cap], and
 * the name. The table holds 32-bit ids, not pointers, and the change list links ids.
 *
 * Tombstones of folded replicas (gstore_fold) live apart, in a table keyed by counter id
 * that is empty until a first fold: a store without them pays one test per merge.
 */
#include "gstore.h"

#include <stdlib.h>
#include <string.h>

#include "../base/hash.h"
#include "../base/mem.h"

#define F_NEG 1u       /* the neg array exists */
#define ORIGIN_SHIFT 1 /* flags bits 1-7: the origin tag of the last change */

struct gcounter {
    uint64_t mseq;       /* sequence number of the last change */
    uint32_t prev, next; /* change list, oldest first */
    uint32_t hash;       /* low bits of the name's hash */
    uint8_t name_len;
    uint8_t n;     /* entries in use */
    uint8_t cap;   /* entries allocated */
    uint8_t flags; /* F_NEG, origin tag */
    /* int64_t pos[cap]; int64_t neg[cap] if F_NEG; uint16_t rep[cap]; char name[name_len+1] */
};

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
    struct gcounter **by_id;
    uint32_t count, id_cap;
    uint32_t *slots; /* open addressing, linear probing; GSTORE_NONE = empty */
    uint32_t mask;
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
    size_t bytes; /* counter blocks */
    /* Aggregates for metrics, kept as doubles: their exact sum may leave int64 range. */
    double total;
    double *rep_net;
    uint32_t *rep_entries; /* per replica: counters where it has an entry */
    unsigned max_entries;  /* GCOUNTER_MAX_ENTRIES, or lower in tests */
    struct tombs *tombs;   /* open addressing by counter id; NULL until a first tombstone */
    uint32_t tmask, ntombc;
    uint64_t ntombs;
};

/* ---------------------------------------------------------------- counter layout */

static inline int64_t *c_pos(const struct gcounter *c)
{
    return (int64_t *)(c + 1);
}
static inline int64_t *c_neg(const struct gcounter *c)
{
    return (c->flags & F_NEG) ? c_pos(c) + c->cap : NULL;
}
static inline uint16_t *c_rep(const struct gcounter *c)
{
    return (uint16_t *)(c_pos(c) + (size_t)c->cap * ((c->flags & F_NEG) ? 2 : 1));
}
static inline char *c_name(const struct gcounter *c)
{
    return (char *)(c_rep(c) + c->cap);
}

static size_t c_size(unsigned cap, unsigned flags, unsigned name_len)
{
    return sizeof(struct gcounter) + (size_t)cap * 8 * ((flags & F_NEG) ? 2 : 1) + (size_t)cap * 2 +
           name_len + 1;
}

/* Copies c into a new block with room for cap entries and the given flags. */
static struct gcounter *c_reshape(struct gstore *st, struct gcounter *c, unsigned cap,
                                  unsigned flags)
{
    size_t sz = c_size(cap, flags, c->name_len);
    struct gcounter *d = xmalloc(sz);
    *d = *c;
    d->cap = (uint8_t)cap;
    d->flags = (uint8_t)flags;
    memcpy(c_pos(d), c_pos(c), (size_t)c->n * 8);
    if (flags & F_NEG) {
        if (c->flags & F_NEG)
            memcpy(c_neg(d), c_neg(c), (size_t)c->n * 8);
        else
            memset(c_neg(d), 0, (size_t)cap * 8);
    }
    memcpy(c_rep(d), c_rep(c), (size_t)c->n * 2);
    memcpy(c_name(d), c_name(c), (size_t)c->name_len + 1);
    st->bytes += sz;
    st->bytes -= c_size(c->cap, c->flags, c->name_len);
    free(c);
    return d;
}

static int c_find_rep(const struct gcounter *c, int rep)
{
    const uint16_t *r = c_rep(c);
    for (unsigned i = 0; i < c->n; i++)
        if (r[i] == rep)
            return (int)i;
    return -1;
}

/* ---------------------------------------------------------------- change list */

static void list_unlink(struct gstore *st, uint32_t id)
{
    struct gcounter *c = st->by_id[id];
    if (c->prev != GSTORE_NONE)
        st->by_id[c->prev]->next = c->next;
    else
        st->head = c->next;
    if (c->next != GSTORE_NONE)
        st->by_id[c->next]->prev = c->prev;
    else
        st->tail = c->prev;
}

static void list_append(struct gstore *st, uint32_t id)
{
    struct gcounter *c = st->by_id[id];
    c->prev = st->tail;
    c->next = GSTORE_NONE;
    if (st->tail != GSTORE_NONE)
        st->by_id[st->tail]->next = id;
    else
        st->head = id;
    st->tail = id;
}

static void touch(struct gstore *st, uint32_t id)
{
    st->by_id[id]->mseq = ++st->seq;
    if (st->tail != id) {
        list_unlink(st, id);
        list_append(st, id);
    }
}

/* ---------------------------------------------------------------- store */

struct gstore *gstore_new(void)
{
    struct gstore *st = xcalloc(1, sizeof *st);
    st->mask = 1023;
    st->slots = xmalloc((st->mask + 1) * sizeof *st->slots);
    memset(st->slots, 0xff, (st->mask + 1) * sizeof *st->slots);
    st->head = st->tail = GSTORE_NONE;
    st->max_entries = GCOUNTER_MAX_ENTRIES;
    return st;
}

void gstore_free(struct gstore *st)
{
    if (!st)
        return;
    for (uint32_t i = 0; i < st->count; i++)
        free(st->by_id[i]);
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
    free(st->scratch);
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

uint32_t gstore_find(const struct gstore *st, const char *name, size_t len)
{
    if (len == 0 || len > GCOUNTER_NAME_MAX)
        return GSTORE_NONE;
    uint32_t h = (uint32_t)hash_bytes(name, len);
    for (uint32_t i = h & st->mask;; i = (i + 1) & st->mask) {
        uint32_t id = st->slots[i];
        if (id == GSTORE_NONE)
            return GSTORE_NONE;
        const struct gcounter *c = st->by_id[id];
        if (c->hash == h && c->name_len == len && memcmp(c_name(c), name, len) == 0)
            return id;
    }
}

static void table_grow(struct gstore *st)
{
    uint32_t nmask = st->mask * 2 + 1;
    uint32_t *ns = xmalloc(((size_t)nmask + 1) * sizeof *ns);
    memset(ns, 0xff, ((size_t)nmask + 1) * sizeof *ns);
    for (uint32_t id = 0; id < st->count; id++) {
        uint32_t i = st->by_id[id]->hash & nmask;
        while (ns[i] != GSTORE_NONE)
            i = (i + 1) & nmask;
        ns[i] = id;
    }
    free(st->slots);
    st->slots = ns;
    st->mask = nmask;
}

uint32_t gstore_create(struct gstore *st, const char *name, size_t len)
{
    uint32_t id = gstore_find(st, name, len);
    if (id != GSTORE_NONE || len == 0 || len > GCOUNTER_NAME_MAX)
        return id;
    if (st->count == GSTORE_NONE - 1)
        return GSTORE_NONE;
    if ((uint64_t)(st->count + 1) * 4 > (uint64_t)(st->mask + 1) * 3)
        table_grow(st);
    if (st->count == st->id_cap) {
        st->id_cap = st->id_cap ? st->id_cap * 2 : 1024;
        st->by_id = xrealloc(st->by_id, (size_t)st->id_cap * sizeof *st->by_id);
    }
    /* In a steady cluster a counter gets an entry from each node: sizing it once avoids
     * a realloc per new entry. */
    int want = st->expect_reps > 0 ? st->expect_reps : st->nrep;
    unsigned cap = want < 1                      ? 1
                   : want > GCOUNTER_MAX_ENTRIES ? GCOUNTER_MAX_ENTRIES
                                                 : (unsigned)want;
    size_t sz = c_size(cap, 0, (unsigned)len);
    struct gcounter *c = xmalloc(sz);
    memset(c, 0, sizeof *c);
    c->hash = (uint32_t)hash_bytes(name, len);
    c->name_len = (uint8_t)len;
    c->cap = (uint8_t)cap;
    memcpy(c_name(c), name, len);
    c_name(c)[len] = '\0';
    st->bytes += sz;

    id = st->count++;
    st->by_id[id] = c;
    uint32_t i = c->hash & st->mask;
    while (st->slots[i] != GSTORE_NONE)
        i = (i + 1) & st->mask;
    st->slots[i] = id;
    c->mseq = ++st->seq;
    list_append(st, id);
    return id;
}

const struct gcounter *gstore_counter(const struct gstore *st, uint32_t id)
{
    return st->by_id[id];
}

uint32_t gstore_count(const struct gstore *st)
{
    return st->count;
}

int gstore_incr(struct gstore *st, uint32_t id, int rep, int64_t amount)
{
    struct gcounter *c = st->by_id[id];
    if (amount == 0)
        return 0;
    if (amount == INT64_MIN)
        return GSTORE_EOVERFLOW;
    int64_t mag = amount > 0 ? amount : -amount, tmp;
    int i = c_find_rep(c, rep);
    /* Only this replica's own entry must stay in range: totals are computed wide. */
    int64_t mine = i < 0 ? 0 : amount > 0 ? c_pos(c)[i] : (c_neg(c) ? c_neg(c)[i] : 0);
    if (__builtin_add_overflow(mine, mag, &tmp))
        return GSTORE_EOVERFLOW;
    if (i < 0 && c->n >= st->max_entries)
        return GSTORE_EFULL;

    unsigned flags = (c->flags & F_NEG) | (amount < 0 ? F_NEG : 0); /* clears the origin */
    if ((i < 0 && c->n == c->cap) || (flags & F_NEG) != (c->flags & F_NEG))
        c = st->by_id[id] = c_reshape(st, c, i < 0 && c->n == c->cap ? c->cap + 1u : c->cap, flags);
    c->flags = (uint8_t)flags;
    if (i < 0) {
        i = c->n++;
        c_rep(c)[i] = (uint16_t)rep;
        st->rep_entries[rep]++;
        c_pos(c)[i] = 0;
        if (c->flags & F_NEG)
            c_neg(c)[i] = 0;
    }
    if (amount > 0)
        c_pos(c)[i] += mag;
    else
        c_neg(c)[i] += mag;
    st->total += (double)amount;
    st->rep_net[rep] += (double)amount;
    touch(st, id);
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
                         const int *folded, size_t nf, int *dropped)
{
    const struct gcounter *c = id == GSTORE_NONE ? NULL : st->by_id[id];
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
        const int64_t *neg = c_neg(c);
        for (unsigned i = 0; i < c->n; i++) {
            if (nf && list_has(folded, nf, c_rep(c)[i])) {
                (*dropped)++; /* folded by the sender: its value is in another entry now */
                continue;
            }
            m[k].rep = c_rep(c)[i];
            m[k].pos = c_pos(c)[i];
            m[k].neg = neg ? neg[i] : 0;
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
    int dropped;
    int k = merge_compute(st, id, in, n, folded, nf, &dropped);
    return k < 0 ? k : 0;
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

/*
 * Replaces counter id's entries by m[0..k) (some of its entries were dropped by
 * tombstones, so the merged entries are not its own in the same order).
 * @return how many entries changed (dropped ones included).
 */
static int rewrite_entries(struct gstore *st, uint32_t id, const struct gentry *m, int k)
{
    struct gcounter *c = st->by_id[id];
    int changed = 0;
    for (int i = 0; i < k; i++) {
        int o = c_find_rep(c, m[i].rep);
        if (o < 0 || c_pos(c)[o] != m[i].pos || (c_neg(c) ? c_neg(c)[o] : 0) != m[i].neg)
            changed++;
    }
    for (unsigned i = 0; i < c->n; i++) {
        int rep = c_rep(c)[i];
        double d = (double)c_pos(c)[i] - (double)(c_neg(c) ? c_neg(c)[i] : 0);
        st->total -= d;
        st->rep_net[rep] -= d;
        st->rep_entries[rep]--;
        int kept = 0;
        for (int j = 0; j < k && !kept; j++)
            kept = m[j].rep == rep;
        changed += !kept;
    }
    unsigned flags = c->flags;
    for (int i = 0; i < k; i++)
        if (m[i].neg)
            flags |= F_NEG;
    if ((unsigned)k > c->cap || flags != c->flags)
        c = st->by_id[id] = c_reshape(st, c, (unsigned)k > c->cap ? (unsigned)k : c->cap, flags);
    for (int i = 0; i < k; i++) {
        c_rep(c)[i] = (uint16_t)m[i].rep;
        c_pos(c)[i] = m[i].pos;
        if (c_neg(c))
            c_neg(c)[i] = m[i].neg;
        double d = (double)m[i].pos - (double)m[i].neg;
        st->total += d;
        st->rep_net[m[i].rep] += d;
        st->rep_entries[m[i].rep]++;
    }
    c->n = (uint8_t)k;
    return changed;
}

int gstore_merge_folded(struct gstore *st, uint32_t id, const struct gentry *in, size_t n,
                        const int *folded, size_t nf, int origin)
{
    int dropped;
    int k = merge_compute(st, id, in, n, folded, nf, &dropped);
    if (k < 0)
        return k;
    struct gcounter *c = st->by_id[id];
    const struct gentry *m = st->scratch;
    int changed = 0;
    if (dropped) {
        changed = rewrite_entries(st, id, m, k);
        c = st->by_id[id];
    } else {
        unsigned flags = c->flags;
        for (int i = 0; i < k; i++)
            if (m[i].neg)
                flags |= F_NEG;
        if ((unsigned)k > c->cap || flags != c->flags)
            c = st->by_id[id] =
                c_reshape(st, c, (unsigned)k > c->cap ? (unsigned)k : c->cap, flags);

        /* The first c->n merged entries are the counter's own, in the same order. */
        int64_t *pos = c_pos(c), *neg = c_neg(c);
        uint16_t *rep = c_rep(c);
        for (int i = 0; i < k; i++) {
            int64_t old_pos = 0, old_neg = 0;
            if ((unsigned)i >= c->n) {
                rep[i] = (uint16_t)m[i].rep;
                st->rep_entries[m[i].rep]++;
            } else {
                old_pos = pos[i];
                old_neg = neg ? neg[i] : 0;
                if (old_pos == m[i].pos && old_neg == m[i].neg)
                    continue;
            }
            pos[i] = m[i].pos;
            if (neg)
                neg[i] = m[i].neg;
            double d = (double)(m[i].pos - old_pos) - (double)(m[i].neg - old_neg);
            st->total += d;
            st->rep_net[m[i].rep] += d;
            changed++;
        }
        c->n = (uint8_t)k;
    }
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
        c->flags = (uint8_t)((c->flags & F_NEG) | (unsigned)tag << ORIGIN_SHIFT);
        touch(st, id);
    }
    return changed + added;
}

int gstore_fold(struct gstore *st, uint32_t id, int from, int into)
{
    struct gcounter *c = st->by_id[id];
    int i = c_find_rep(c, from);
    if (i < 0 || from == into)
        return 0;
    const struct tombs *t = tombs_find(st, id);
    if (t && t->n >= GCOUNTER_MAX_FOLDED)
        return GSTORE_EFOLDED;
    int j = c_find_rep(c, into);
    int64_t *pos = c_pos(c), *neg = c_neg(c);
    int64_t fp = pos[i], fn = neg ? neg[i] : 0, sp, sn;
    if (__builtin_add_overflow(j < 0 ? 0 : pos[j], fp, &sp) ||
        __builtin_add_overflow(j < 0 || !neg ? 0 : neg[j], fn, &sn))
        return GSTORE_EOVERFLOW;
    if (j < 0) {
        c_rep(c)[i] = (uint16_t)into; /* into takes from's place */
        st->rep_entries[into]++;
        j = i;
    } else {
        unsigned last = c->n - 1u;
        pos[i] = pos[last];
        if (neg)
            neg[i] = neg[last];
        c_rep(c)[i] = c_rep(c)[last];
        if ((unsigned)j == last)
            j = i;
        c->n--;
    }
    pos[j] = sp;
    if (neg)
        neg[j] = sn;
    st->rep_entries[from]--;
    double d = (double)fp - (double)fn;
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
    struct gcounter *c = st->by_id[id];
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
    if (id == GSTORE_NONE || st->by_id[id]->mseq <= seq)
        return GSTORE_NONE;
    for (;;) {
        uint32_t prev = st->by_id[id]->prev;
        if (prev == GSTORE_NONE || st->by_id[prev]->mseq <= seq)
            return id;
        id = prev;
    }
}

uint32_t gstore_changed_next(const struct gstore *st, uint32_t id)
{
    return st->by_id[id]->next;
}

size_t gstore_memory(const struct gstore *st)
{
    return st->bytes + ((size_t)st->mask + 1) * sizeof *st->slots +
           (size_t)st->id_cap * sizeof *st->by_id;
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
    return c->mseq;
}

int64_t gstore_counter_value(const struct gcounter *c)
{
    gstore_wide v = 0;
    const int64_t *neg = c_neg(c);
    for (unsigned i = 0; i < c->n; i++)
        v += (gstore_wide)c_pos(c)[i] - (neg ? neg[i] : 0);
    return gstore_clamp(v, NULL);
}

unsigned gstore_counter_nodes(const struct gstore *st, const struct gcounter *c, struct gnode *out)
{
    /* Per node: incarnations summed, and apart the bare entry (an original-format peer's
     * sum of that node's incarnations, which it learned from us or another region). */
    gstore_wide bare_pos[GCOUNTER_MAX_ENTRIES], bare_neg[GCOUNTER_MAX_ENTRIES];
    const int64_t *neg = c_neg(c);
    unsigned k = 0;
    for (unsigned i = 0; i < c->n; i++) {
        int rep = c_rep(c)[i];
        int node = st->rep_node[rep];
        unsigned j = 0;
        while (j < k && out[j].node != node)
            j++;
        if (j == k) {
            out[k].node = node;
            out[k].pos = out[k].neg = bare_pos[k] = bare_neg[k] = 0;
            k++;
        }
        int64_t p = c_pos(c)[i], q = neg ? neg[i] : 0;
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
    const int64_t *neg = c_neg(c);
    return c_pos(c)[i] - (neg ? neg[i] : 0);
}

unsigned gstore_counter_entries(const struct gcounter *c)
{
    return c->n;
}

void gstore_counter_entry(const struct gcounter *c, unsigned i, struct gentry *out)
{
    const int64_t *neg = c_neg(c);
    out->rep = c_rep(c)[i];
    out->pos = c_pos(c)[i];
    out->neg = neg ? neg[i] : 0;
}

int gstore_counter_has_neg(const struct gcounter *c)
{
    return (c->flags & F_NEG) != 0;
}

int gstore_counter_origin(const struct gcounter *c)
{
    return c->flags >> ORIGIN_SHIFT;
}
