/*
 * names.c - the sorted index of counter names (see names.h).
 *
 * The index is an array of ids in byte order of the names they carry. New counters are
 * sorted apart (a radix sort over 8 bytes of their names at a time, so each name is read
 * a few times rather than once per comparison) and merged in from the back by binary
 * search, so the array grows once per sync to exactly its new size. It never copies a
 * name and never changes the store.
 *
 * Dropped counters (names_forget) leave it in batches: forgetting clears the id's bit in
 * a bitmap of indexed ids (O(1)), and the next sync removes every forgotten id in one pass
 * before it takes anything in, and gives back the room the array no longer needs. An id
 * dropped and then given to a new counter is a hole below the indexed range that exists
 * again: a sync finds it among the bitmap's clear bits.
 */
#include "names.h"

#include <stdlib.h>
#include <string.h>

#include "../base/mem.h"
#include "gstore.h"

struct names {
    uint32_t *ids; /* [0, m): counters in name order (forgotten ones until the next sync) */
    uint32_t m, cap;
    uint32_t n;   /* every id below n is in ids or a hole (dropped, forgotten, or reused) */
    uint64_t *in; /* bit per id below n: in ids and not forgotten */
    uint32_t words;
    uint32_t gone; /* forgotten ids still in ids */
};

struct names *names_new(void)
{
    return xcalloc(1, sizeof(struct names));
}

void names_free(struct names *nx)
{
    if (!nx)
        return;
    free(nx->ids);
    free(nx->in);
    free(nx);
}

static int in_has(const struct names *nx, uint32_t id)
{
    return id < nx->n && (nx->in[id / 64] >> (id % 64) & 1);
}

static void in_set(struct names *nx, uint32_t id, int on)
{
    if (on)
        nx->in[id / 64] |= (uint64_t)1 << (id % 64);
    else
        nx->in[id / 64] &= ~((uint64_t)1 << (id % 64));
}

/* Room in the bitmap for ids below n (grown or shrunk; bits beyond the old room are 0). */
static void in_room(struct names *nx, uint32_t n)
{
    uint32_t words = (n + 63) / 64;
    if (words > nx->words || words < nx->words / 2) {
        nx->in = xrealloc(nx->in, ((size_t)words + 1) * sizeof *nx->in);
        for (uint32_t w = nx->words; w <= words; w++)
            nx->in[w] = 0;
        nx->words = words;
    }
}

void names_forget(struct names *nx, uint32_t id)
{
    if (!in_has(nx, id))
        return;
    in_set(nx, id, 0);
    nx->gone++;
}

/* Removes the forgotten ids from the array in one pass, and any id that no longer names a
 * counter (a drop the index was not told of); shrinks the array when it is much too big. */
static void compact(struct names *nx, const struct gstore *st)
{
    int check = nx->m - nx->gone > gstore_live(st);
    if (!nx->gone && !check)
        return;
    uint32_t j = 0;
    for (uint32_t i = 0; i < nx->m; i++) {
        uint32_t id = nx->ids[i];
        if (!in_has(nx, id))
            continue;
        if (check && !gstore_exists(st, id)) {
            in_set(nx, id, 0);
            continue;
        }
        nx->ids[j++] = id;
    }
    nx->m = j;
    nx->gone = 0;
    if (nx->cap > nx->m + nx->m / 4 + 1024) {
        nx->cap = nx->m;
        nx->ids = xrealloc(nx->ids, ((size_t)nx->cap + 1) * sizeof *nx->ids);
    }
}

static const char *name_of(const struct gstore *st, uint32_t id, size_t *len)
{
    return gstore_counter_name(gstore_counter(st, id), len);
}

/* Byte order of a[0..alen) and b[0..blen): <0, 0, >0. */
static int cmp_bytes(const char *a, size_t alen, const char *b, size_t blen)
{
    int c = memcmp(a, b, alen < blen ? alen : blen);
    if (c)
        return c;
    return alen < blen ? -1 : alen > blen;
}

/* ---------------------------------------------------------------- sorting new ids */

/* An id and 8 bytes of its name from some depth on (big-endian, 0 past its end). */
struct ent {
    uint64_t key;
    uint32_t id;
};

static uint64_t chunk_of(const struct gstore *st, uint32_t id, size_t depth)
{
    size_t len;
    const char *s = name_of(st, id, &len);
    uint64_t k = 0;
    for (size_t i = depth; i < depth + 8; i++)
        k = k << 8 | (i < len ? (unsigned char)s[i] : 0);
    return k;
}

/* Sorts a[0..n) by key, stable (LSD radix, a byte a pass; a pass where every key has the
 * same byte is skipped), using tmp (room for n). */
static void radix_sort(struct ent *a, struct ent *tmp, size_t n)
{
    for (int shift = 0; shift < 64; shift += 8) {
        size_t count[256] = {0};
        for (size_t i = 0; i < n; i++)
            count[(a[i].key >> shift) & 255]++;
        if (count[(a[0].key >> shift) & 255] == n)
            continue;
        size_t at = 0;
        for (int b = 0; b < 256; b++) {
            size_t c = count[b];
            count[b] = at;
            at += c;
        }
        for (size_t i = 0; i < n; i++)
            tmp[count[(a[i].key >> shift) & 255]++] = a[i];
        memcpy(a, tmp, n * sizeof *a);
    }
}

static void insertion_sort(struct ent *a, size_t n)
{
    for (size_t i = 1; i < n; i++) {
        struct ent e = a[i];
        size_t j = i;
        for (; j > 0 && a[j - 1].key > e.key; j--)
            a[j] = a[j - 1];
        a[j] = e;
    }
}

/*
 * Sorts a[0..n) by name: by 8 bytes from depth on, then each run of equal keys by the next
 * 8 (names are distinct and hold no NUL, so names in such a run all go on past them). A
 * name is read once per level it takes part in, not once per comparison.
 */
static void sort_level(const struct gstore *st, struct ent *a, struct ent *tmp, size_t n,
                       size_t depth)
{
    if (n < 2 || depth >= GCOUNTER_NAME_MAX)
        return;
    for (size_t i = 0; i < n; i++)
        a[i].key = chunk_of(st, a[i].id, depth);
    if (n < 64)
        insertion_sort(a, n);
    else
        radix_sort(a, tmp, n);
    for (size_t i = 0, j; i < n; i = j) {
        for (j = i + 1; j < n && a[j].key == a[i].key; j++)
            ;
        if (j - i > 1)
            sort_level(st, a + i, tmp, j - i, depth + 8);
    }
}

/* ---------------------------------------------------------------- merging */

/* The first position of ids[0..n) whose name is above id's. */
static uint32_t upper(const struct names *nx, const struct gstore *st, uint32_t n, uint32_t id)
{
    size_t len;
    const char *key = name_of(st, id, &len);
    uint32_t lo = 0, hi = n;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        size_t ml;
        const char *m = name_of(st, nx->ids[mid], &ml);
        if (cmp_bytes(m, ml, key, len) > 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return lo;
}

/*
 * Merges fresh[0..k) (sorted) into ids[0..n) (room for n + k), from the back: each fresh
 * id finds its place by binary search and the old ids after it move up in one memmove, so
 * the cost is k log n name comparisons and n moves, not n comparisons.
 */
static void merge_in(struct names *nx, const struct gstore *st, uint32_t n, const uint32_t *fresh,
                     uint32_t k)
{
    uint32_t i = n;
    for (uint32_t j = k; j-- > 0;) {
        uint32_t p = upper(nx, st, i, fresh[j]);
        memmove(nx->ids + p + j + 1, nx->ids + p, (size_t)(i - p) * sizeof *nx->ids);
        nx->ids[p + j] = fresh[j];
        i = p;
    }
}

uint32_t names_sync(struct names *nx, const struct gstore *st)
{
    return names_sync_some(nx, st, UINT32_MAX);
}

/*
 * Collects into a[0..) up to max counters not in the index: first the ids from n on (n
 * moves past them), then, when more are new than those (need), ids below n given to new
 * counters. @return how many.
 */
static uint32_t collect(struct names *nx, const struct gstore *st, struct ent *a, uint32_t max,
                        uint32_t need)
{
    uint32_t k = 0, count = gstore_count(st), old = nx->n, id = nx->n;
    for (; id < count && k < max; id++)
        if (gstore_exists(st, id))
            a[k++] = (struct ent){0, id};
    nx->n = id;
    for (uint32_t w = 0; id == count && k < max && k < need && w < (old + 63) / 64; w++) {
        uint64_t holes = ~nx->in[w];
        while (holes && k < max && k < need) {
            uint32_t h = w * 64 + (uint32_t)__builtin_ctzll(holes);
            holes &= holes - 1;
            if (h < old && gstore_exists(st, h))
                a[k++] = (struct ent){0, h};
        }
    }
    return k;
}

uint32_t names_sync_some(struct names *nx, const struct gstore *st, uint32_t max)
{
    compact(nx, st);
    uint32_t count = gstore_count(st), live = gstore_live(st);
    if (nx->n > count) { /* the highest ids were dropped (and forgotten) */
        nx->n = count;
        for (uint32_t w = count / 64; w < nx->words; w++)
            nx->in[w] &= w == count / 64 ? ((uint64_t)1 << (count % 64)) - 1 : 0;
        in_room(nx, count);
    }
    uint32_t need = live > nx->m ? live - nx->m : 0;
    uint32_t k = need < max ? need : max;
    if (k == 0)
        return 0;
    struct ent *a = xmalloc((size_t)k * 2 * sizeof *a);
    k = collect(nx, st, a, k, need);
    in_room(nx, nx->n);
    for (uint32_t i = 0; i < k; i++)
        in_set(nx, a[i].id, 1);
    sort_level(st, a, a + k, k, 0);
    uint32_t *fresh = (uint32_t *)(a + k); /* the sorted ids, over the scratch half */
    for (uint32_t i = 0; i < k; i++)
        fresh[i] = a[i].id;
    uint32_t m = nx->m, total = m + k;
    if (total > nx->cap) {
        nx->cap = total;
        nx->ids = xrealloc(nx->ids, (size_t)total * sizeof *nx->ids);
    }
    merge_in(nx, st, m, fresh, k);
    free(a);
    nx->m = total;
    return k;
}

uint32_t names_pending(const struct names *nx, const struct gstore *st)
{
    uint32_t live = gstore_live(st), in = nx->m - nx->gone;
    return live > in ? live - in : 0;
}

uint32_t names_count(const struct names *nx)
{
    return nx->m;
}

uint32_t names_at(const struct names *nx, uint32_t pos)
{
    return nx->ids[pos];
}

/*
 * The first position whose name, cut to cut bytes when cut is not 0, compares above key
 * (strict) or at least equal to it (!strict). Order is kept by the cut, so the predicate
 * is monotone over the index.
 */
static uint32_t search(const struct names *nx, const struct gstore *st, const char *key, size_t len,
                       size_t cut, int strict)
{
    uint32_t lo = 0, hi = nx->m;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        size_t nl;
        const char *name = name_of(st, nx->ids[mid], &nl);
        if (cut && nl > cut)
            nl = cut;
        int c = cmp_bytes(name, nl, key, len);
        if (strict ? c > 0 : c >= 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return lo;
}

uint32_t names_after(const struct names *nx, const struct gstore *st, const char *key, size_t len)
{
    return search(nx, st, key, len, 0, 1);
}

void names_prefix(const struct names *nx, const struct gstore *st, const char *prefix, size_t len,
                  uint32_t *lo, uint32_t *hi)
{
    if (len == 0) {
        *lo = 0;
        *hi = nx->m;
        return;
    }
    *lo = search(nx, st, prefix, len, 0, 0);
    *hi = search(nx, st, prefix, len, len, 1);
}

size_t names_memory(const struct names *nx)
{
    return sizeof *nx + (size_t)nx->cap * sizeof *nx->ids + (size_t)nx->words * sizeof *nx->in;
}
