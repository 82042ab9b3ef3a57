/*
 * names.c - the sorted index of counter names (see names.h).
 *
 * The index is an array of ids in byte order of the names they carry. New counters are
 * sorted apart (a merge sort over their ids) and merged in from the back, so the array
 * grows once per sync to exactly its new size. It never copies a name and never changes
 * the store.
 */
#include "names.h"

#include <stdlib.h>
#include <string.h>

#include "../base/mem.h"
#include "gstore.h"

struct names {
    uint32_t *ids; /* [0, n): every counter with id < n, in name order */
    uint32_t n;
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
    free(nx);
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

static int cmp_ids(const struct gstore *st, uint32_t a, uint32_t b)
{
    size_t al, bl;
    const char *an = name_of(st, a, &al), *bn = name_of(st, b, &bl);
    return cmp_bytes(an, al, bn, bl);
}

/* Sorts v[0..n) by name, using tmp (room for n). */
static void sort_ids(const struct gstore *st, uint32_t *v, uint32_t *tmp, uint32_t n)
{
    if (n < 2)
        return;
    uint32_t h = n / 2;
    sort_ids(st, v, tmp, h);
    sort_ids(st, v + h, tmp, n - h);
    if (cmp_ids(st, v[h - 1], v[h]) <= 0)
        return; /* already in order: ids created in name order cost n compares */
    memcpy(tmp, v, h * sizeof *v);
    uint32_t i = 0, j = h, k = 0;
    while (i < h && j < n)
        v[k++] = cmp_ids(st, v[j], tmp[i]) < 0 ? v[j++] : tmp[i++];
    while (i < h)
        v[k++] = tmp[i++];
}

uint32_t names_sync(struct names *nx, const struct gstore *st)
{
    uint32_t total = gstore_count(st), k = total - nx->n, n = nx->n;
    if (k == 0)
        return 0;
    uint32_t *fresh = xmalloc((size_t)k * 2 * sizeof *fresh), *tmp = fresh + k;
    for (uint32_t i = 0; i < k; i++)
        fresh[i] = n + i;
    sort_ids(st, fresh, tmp, k);
    nx->ids = xrealloc(nx->ids, (size_t)total * sizeof *nx->ids);
    /* Merge from the back: the old ids move right at most k places, never over a fresh one
     * not yet placed. */
    uint32_t i = n, j = k, out = total;
    while (j > 0) {
        if (i > 0 && cmp_ids(st, nx->ids[i - 1], fresh[j - 1]) > 0)
            nx->ids[--out] = nx->ids[--i];
        else
            nx->ids[--out] = fresh[--j];
    }
    free(fresh);
    nx->n = total;
    return k;
}

uint32_t names_count(const struct names *nx)
{
    return nx->n;
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
    uint32_t lo = 0, hi = nx->n;
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
        *hi = nx->n;
        return;
    }
    *lo = search(nx, st, prefix, len, 0, 0);
    *hi = search(nx, st, prefix, len, len, 1);
}

size_t names_memory(const struct names *nx)
{
    return sizeof *nx + (size_t)nx->n * sizeof *nx->ids;
}
