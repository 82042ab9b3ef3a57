/*
 * topk.c - a bounded set of the heaviest keys (see topk.h): slots, a min-heap of slot
 * indices by weight, and an open-addressing hash (linear probing, deletion by backward
 * shift) from key to slot. Every operation is O(log slots); nothing allocates after
 * topk_new except topk_list's scratch copy. It never reads the store.
 */
#include "topk.h"

#include <stdlib.h>
#include <string.h>

#include "../base/mem.h"

struct slot {
    uint32_t key;
    uint32_t hpos; /* where the slot is in heap[] */
    int64_t w, err;
};

struct topk {
    unsigned cap, n;
    struct slot *s;
    uint32_t *heap; /* slot indices; heap[0] is the lightest */
    uint32_t *hash; /* slot index + 1, 0 when empty */
    uint32_t hmask;
    int64_t total;
};

struct topk *topk_new(unsigned slots)
{
    if (slots < 1)
        slots = 1;
    if (slots > (1u << 20))
        slots = 1u << 20;
    struct topk *t = xcalloc(1, sizeof *t);
    t->cap = slots;
    t->s = xcalloc(slots, sizeof *t->s);
    t->heap = xcalloc(slots, sizeof *t->heap);
    uint32_t hs = 4;
    while (hs < 2 * slots)
        hs *= 2;
    t->hash = xcalloc(hs, sizeof *t->hash);
    t->hmask = hs - 1;
    return t;
}

void topk_free(struct topk *t)
{
    if (!t)
        return;
    free(t->s);
    free(t->heap);
    free(t->hash);
    free(t);
}

void topk_reset(struct topk *t)
{
    memset(t->hash, 0, ((size_t)t->hmask + 1) * sizeof *t->hash);
    t->n = 0;
    t->total = 0;
}

/* ---------------------------------------------------------------- hash */

static uint32_t home_of(const struct topk *t, uint32_t key)
{
    return (uint32_t)(((uint64_t)key * 0x9E3779B97F4A7C15ULL) >> 32) & t->hmask;
}

/* The hash position holding key, or the empty one where it would go. */
static uint32_t hash_pos(const struct topk *t, uint32_t key)
{
    uint32_t p = home_of(t, key);
    while (t->hash[p] && t->s[t->hash[p] - 1].key != key)
        p = (p + 1) & t->hmask;
    return p;
}

/* Removes the entry at p, moving later entries of the run back so lookups still find them. */
static void hash_del(struct topk *t, uint32_t p)
{
    uint32_t q = p;
    t->hash[p] = 0;
    for (;;) {
        q = (q + 1) & t->hmask;
        if (!t->hash[q])
            return;
        uint32_t h = home_of(t, t->s[t->hash[q] - 1].key);
        /* The entry at q may move to p only if its home is not in (p, q] (cyclically). */
        if ((p < q) ? (h <= p || h > q) : (h <= p && h > q)) {
            t->hash[p] = t->hash[q];
            t->hash[q] = 0;
            p = q;
        }
    }
}

/* ---------------------------------------------------------------- heap */

/* Whether slot a is lighter than slot b (ties: the larger key is lighter). */
static int lighter(const struct topk *t, uint32_t a, uint32_t b)
{
    const struct slot *x = &t->s[a], *y = &t->s[b];
    return x->w < y->w || (x->w == y->w && x->key > y->key);
}

static void heap_put(struct topk *t, uint32_t i, uint32_t slot)
{
    t->heap[i] = slot;
    t->s[slot].hpos = i;
}

static void sift_up(struct topk *t, uint32_t i)
{
    uint32_t slot = t->heap[i];
    while (i > 0) {
        uint32_t up = (i - 1) / 2;
        if (!lighter(t, slot, t->heap[up]))
            break;
        heap_put(t, i, t->heap[up]);
        i = up;
    }
    heap_put(t, i, slot);
}

static void sift_down(struct topk *t, uint32_t i)
{
    uint32_t slot = t->heap[i];
    for (;;) {
        uint32_t c = 2 * i + 1;
        if (c >= t->n)
            break;
        if (c + 1 < t->n && lighter(t, t->heap[c + 1], t->heap[c]))
            c++;
        if (!lighter(t, t->heap[c], slot))
            break;
        heap_put(t, i, t->heap[c]);
        i = c;
    }
    heap_put(t, i, slot);
}

/* Puts key in a new slot (there is room) at hash position p. */
static void insert(struct topk *t, uint32_t p, uint32_t key, int64_t w, int64_t err)
{
    uint32_t slot = t->n++;
    t->s[slot] = (struct slot){key, 0, w, err};
    t->hash[p] = slot + 1;
    heap_put(t, slot, slot);
    sift_up(t, slot);
}

/* Gives the lightest slot to key with weight w. */
static void replace_lightest(struct topk *t, uint32_t key, int64_t w, int64_t err)
{
    uint32_t slot = t->heap[0];
    hash_del(t, hash_pos(t, t->s[slot].key));
    t->s[slot].key = key;
    t->s[slot].w = w;
    t->s[slot].err = err;
    t->hash[hash_pos(t, key)] = slot + 1;
    sift_down(t, 0);
}

/* ---------------------------------------------------------------- feeding */

static int64_t sat_add(int64_t a, int64_t b)
{
    int64_t s;
    return __builtin_add_overflow(a, b, &s) ? INT64_MAX : s;
}

void topk_add(struct topk *t, uint32_t key, int64_t amount)
{
    if (amount <= 0)
        return;
    t->total = sat_add(t->total, amount);
    uint32_t p = hash_pos(t, key);
    if (t->hash[p]) {
        struct slot *s = &t->s[t->hash[p] - 1];
        s->w = sat_add(s->w, amount);
        sift_down(t, s->hpos);
    } else if (t->n < t->cap) {
        insert(t, p, key, amount, 0);
    } else {
        int64_t min = t->s[t->heap[0]].w;
        replace_lightest(t, key, sat_add(min, amount), min);
    }
}

void topk_set(struct topk *t, uint32_t key, int64_t value)
{
    uint32_t p = hash_pos(t, key);
    if (t->hash[p]) {
        struct slot *s = &t->s[t->hash[p] - 1];
        int64_t old = s->w;
        s->w = value;
        if (value > old)
            sift_down(t, s->hpos);
        else
            sift_up(t, s->hpos);
    } else if (t->n < t->cap) {
        insert(t, p, key, value, 0);
    } else if (value > t->s[t->heap[0]].w) {
        replace_lightest(t, key, value, 0);
    }
}

void topk_remove(struct topk *t, uint32_t key)
{
    uint32_t p = hash_pos(t, key);
    if (!t->hash[p])
        return;
    uint32_t slot = t->hash[p] - 1, i = t->s[slot].hpos;
    hash_del(t, p);
    t->n--;
    if (i != t->n) {
        uint32_t moved = t->heap[t->n];
        heap_put(t, i, moved);
        sift_down(t, i);
        sift_up(t, t->s[moved].hpos);
    }
    if (slot != t->n) { /* the last slot takes the freed one: slots stay 0..n-1 */
        t->s[slot] = t->s[t->n];
        t->hash[hash_pos(t, t->s[slot].key)] = slot + 1;
        t->heap[t->s[slot].hpos] = slot;
    }
}

/* ---------------------------------------------------------------- reading */

int topk_get(const struct topk *t, uint32_t key, struct topk_item *out)
{
    uint32_t p = hash_pos(t, key);
    if (!t->hash[p])
        return 0;
    const struct slot *s = &t->s[t->hash[p] - 1];
    *out = (struct topk_item){s->key, s->w, s->err};
    return 1;
}

unsigned topk_count(const struct topk *t)
{
    return t->n;
}

int64_t topk_total(const struct topk *t)
{
    return t->total;
}

static int cmp_heavier(const void *a, const void *b)
{
    const struct topk_item *x = a, *y = b;
    if (x->weight != y->weight)
        return x->weight > y->weight ? -1 : 1;
    return x->key < y->key ? -1 : x->key > y->key;
}

unsigned topk_list(const struct topk *t, struct topk_item *out, unsigned max)
{
    if (t->n == 0 || max == 0)
        return 0;
    struct topk_item *all = xmalloc((size_t)t->n * sizeof *all);
    for (unsigned i = 0; i < t->n; i++)
        all[i] = (struct topk_item){t->s[i].key, t->s[i].w, t->s[i].err};
    qsort(all, t->n, sizeof *all, cmp_heavier);
    unsigned k = t->n < max ? t->n : max;
    memcpy(out, all, (size_t)k * sizeof *out);
    free(all);
    return k;
}

size_t topk_memory(const struct topk *t)
{
    return sizeof *t + (size_t)t->cap * (sizeof *t->s + sizeof *t->heap) +
           ((size_t)t->hmask + 1) * sizeof *t->hash;
}
