/*
 * test_names.c - core/store/names.c: the sorted index of counter names. Fixed cases (an
 * empty store, names that are prefixes of each other, a cursor that names no counter),
 * then a random run against a brute-force model (every name, sorted by strcmp after each
 * sync): the order, names_after for any key, names_prefix for any prefix, with counters
 * created in bursts between syncs, as a region creates them between listings; and the
 * same with counters dropped between syncs and their ids given to new ones.
 *
 * Never include this from core/.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store/gstore.h"
#include "store/names.h"
#include "unit.h"

static uint32_t mk(struct gstore *st, const char *name)
{
    return gstore_create(st, name, strlen(name));
}

static const char *at(struct gstore *st, struct names *nx, uint32_t pos)
{
    static char out[256];
    size_t len;
    const char *p = gstore_counter_name(gstore_counter(st, names_at(nx, pos)), &len);
    snprintf(out, sizeof out, "%.*s", (int)len, p);
    return out;
}

static void test_basics(void)
{
    struct gstore *st = gstore_new();
    struct names *nx = names_new();
    uint32_t lo, hi;
    CHECK_EQ_U64(names_sync(nx, st), 0);
    CHECK_EQ_U64(names_count(nx), 0);
    CHECK_EQ_U64(names_after(nx, st, "a", 1), 0);
    names_prefix(nx, st, "a", 1, &lo, &hi);
    CHECK_EQ_U64(lo, 0);
    CHECK_EQ_U64(hi, 0);
    const char *in[] = {"views", "a", "ab", "abc", "b", "Z", "a:b", "a-", "a.", "ab_"};
    for (size_t i = 0; i < sizeof in / sizeof *in; i++)
        mk(st, in[i]);
    CHECK_EQ_U64(names_count(nx), 0); /* lazy: nothing until a sync */
    CHECK_EQ_U64(names_sync(nx, st), 10);
    const char *want[] = {"Z", "a", "a-", "a.", "a:b", "ab", "ab_", "abc", "b", "views"};
    for (uint32_t i = 0; i < 10; i++)
        CHECK_STR_EQ(at(st, nx, i), want[i]);
    CHECK_EQ_U64(names_after(nx, st, "a", 1), 2);  /* after "a": "a-" */
    CHECK_EQ_U64(names_after(nx, st, "aa", 2), 5); /* no such counter: "ab" comes next */
    CHECK_EQ_U64(names_after(nx, st, "zzz", 3), 10);
    CHECK_EQ_U64(names_after(nx, st, "A", 1), 0);
    names_prefix(nx, st, "ab", 2, &lo, &hi);
    CHECK_EQ_U64(lo, 5);
    CHECK_EQ_U64(hi, 8);
    names_prefix(nx, st, "a", 1, &lo, &hi);
    CHECK_EQ_U64(lo, 1);
    CHECK_EQ_U64(hi, 8);
    names_prefix(nx, st, "c", 1, &lo, &hi);
    CHECK_EQ_U64(lo, hi);
    names_prefix(nx, st, "", 0, &lo, &hi);
    CHECK_EQ_U64(lo, 0);
    CHECK_EQ_U64(hi, 10);
    /* New counters merge in where they belong; old positions shift, names do not. */
    mk(st, "aa");
    mk(st, "0");
    CHECK_EQ_U64(names_sync(nx, st), 2);
    CHECK_STR_EQ(at(st, nx, 0), "0");
    CHECK_STR_EQ(at(st, nx, 6), "aa");
    CHECK_EQ_U64(names_memory(nx) >= 12 * sizeof(uint32_t), 1);
    names_free(nx);
    gstore_free(st);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* A random name over a small alphabet (so prefixes and near-misses are common). */
static void rand_name(struct unit_rng *r, char *out, size_t maxlen)
{
    static const char alpha[] = "ab:Z-09_.";
    size_t len = 1 + rng_below(r, maxlen);
    for (size_t i = 0; i < len; i++)
        out[i] = alpha[rng_below(r, sizeof alpha - 1)];
    out[len] = '\0';
}

/* The model's answers: first index above key, and the prefix range. */
static uint32_t model_after(char **v, uint32_t n, const char *key)
{
    uint32_t i = 0;
    while (i < n && strcmp(v[i], key) <= 0)
        i++;
    return i;
}

static void check_against(struct gstore *st, struct names *nx, char **v, uint32_t n,
                          struct unit_rng *r)
{
    REQUIRE(names_count(nx) == n);
    for (uint32_t i = 0; i < n; i++)
        CHECK_STR_EQ(at(st, nx, i), v[i]);
    for (int q = 0; q < 30; q++) {
        char key[16];
        rand_name(r, key, 6);
        size_t klen = strlen(key);
        CHECK_EQ_U64(names_after(nx, st, key, klen), model_after(v, n, key));
        uint32_t lo, hi, mlo = 0, mhi;
        while (mlo < n && strcmp(v[mlo], key) < 0)
            mlo++;
        mhi = mlo;
        while (mhi < n && !strncmp(v[mhi], key, klen))
            mhi++;
        names_prefix(nx, st, key, klen, &lo, &hi);
        CHECK_EQ_U64(lo, mlo);
        CHECK_EQ_U64(hi, mhi);
    }
}

static void test_model(void)
{
    struct unit_rng r;
    rng_init(&r, "names_model");
    long rounds = unit_iters(40);
    for (long round = 0; round < rounds; round++) {
        unit_context("round %ld", round);
        struct gstore *st = gstore_new();
        struct names *nx = names_new();
        uint32_t cap = 4096, n = 0;
        char **v = calloc(cap, sizeof *v);
        int bursts = 1 + (int)rng_below(&r, 8);
        for (int b = 0; b < bursts; b++) {
            uint32_t more = (uint32_t)rng_below(&r, 300);
            for (uint32_t i = 0; i < more && n < cap; i++) {
                char name[24];
                rand_name(&r, name, round % 2 ? 8 : 14);
                uint32_t before = gstore_count(st);
                mk(st, name);
                if (gstore_count(st) > before)
                    v[n++] = strdup(name);
            }
            if (b % 2) { /* in slices, as the region's timer takes them in */
                uint32_t k;
                while ((k = names_pending(nx, st)) > 0) {
                    uint32_t step = 1 + (uint32_t)rng_below(&r, 64);
                    CHECK_EQ_U64(names_sync_some(nx, st, step), k < step ? k : step);
                }
            } else {
                names_sync(nx, st);
            }
            qsort(v, n, sizeof *v, cmp_str);
            check_against(st, nx, v, n, &r);
            if (unit_g.fails)
                break;
        }
        for (uint32_t i = 0; i < n; i++)
            free(v[i]);
        free(v);
        names_free(nx);
        gstore_free(st);
        if (unit_g.fails)
            break;
    }
}

/* Ids made in name order and in reverse: both sorts are right (the first is linear). */
static void test_ordered_input(void)
{
    struct gstore *st = gstore_new();
    struct names *nx = names_new();
    char name[32];
    for (int i = 0; i < 2000; i++) {
        snprintf(name, sizeof name, "c%05d", i % 2 ? i : 3999 - i);
        mk(st, name);
    }
    names_sync(nx, st);
    for (uint32_t i = 1; i < names_count(nx); i++) {
        char prev[256];
        snprintf(prev, sizeof prev, "%s", at(st, nx, i - 1));
        CHECK(strcmp(prev, at(st, nx, i)) < 0);
    }
    names_free(nx);
    gstore_free(st);
}

/* Long names sharing long prefixes, in big batches: the radix levels go 8 bytes deeper
 * each, down to names of 200 bytes. */
static void test_long_prefixes(void)
{
    struct unit_rng r;
    rng_init(&r, "names_long");
    struct gstore *st = gstore_new();
    struct names *nx = names_new();
    uint32_t cap = 6000, n = 0;
    char **v = calloc(cap, sizeof *v);
    for (int b = 0; b < 3; b++) {
        for (int i = 0; i < 2000; i++) {
            char name[201];
            size_t len = 1 + rng_below(&r, 200);
            for (size_t j = 0; j < len; j++) /* mostly 'a': long common prefixes */
                name[j] = rng_below(&r, 16) ? 'a' : "b:Z"[rng_below(&r, 3)];
            name[len] = '\0';
            uint32_t before = gstore_count(st);
            mk(st, name);
            if (gstore_count(st) > before)
                v[n++] = strdup(name);
        }
        names_sync(nx, st);
        qsort(v, n, sizeof *v, cmp_str);
        check_against(st, nx, v, n, &r);
    }
    for (uint32_t i = 0; i < n; i++)
        free(v[i]);
    free(v);
    names_free(nx);
    gstore_free(st);
}

/* Drops (names_forget, then gstore_drop) between syncs, and new counters that take the
 * dropped ids: after each sync the index is exactly the live names, in order; a dropped
 * id never shows; the arrays shrink when the index does. */
static void test_forget(void)
{
    struct unit_rng r;
    rng_init(&r, "names_forget");
    long rounds = unit_iters(40);
    for (long round = 0; round < rounds && !unit_g.fails; round++) {
        unit_context("round %ld", round);
        struct gstore *st = gstore_new();
        struct names *nx = names_new();
        uint32_t cap = 4096, n = 0;
        char **v = calloc(cap, sizeof *v);
        for (int b = 0; b < 12 && !unit_g.fails; b++) {
            uint32_t more = (uint32_t)rng_below(&r, 300), drops = (uint32_t)rng_below(&r, 300);
            for (uint32_t i = 0; i < drops && n; i++) {
                uint32_t k = (uint32_t)rng_below(&r, n);
                uint32_t id = gstore_find(st, v[k], strlen(v[k]));
                names_forget(nx, id);
                if (rng_below(&r, 4) == 0)
                    names_forget(nx, id); /* twice: the same */
                gstore_drop(st, id);
                free(v[k]);
                v[k] = v[--n];
            }
            for (uint32_t i = 0; i < more && n < cap; i++) {
                char name[24];
                rand_name(&r, name, round % 2 ? 8 : 14);
                uint32_t live = gstore_live(st);
                mk(st, name);
                if (gstore_live(st) > live)
                    v[n++] = strdup(name);
            }
            if (b % 2) {
                uint32_t k;
                while ((k = names_pending(nx, st)) > 0) {
                    uint32_t step = 1 + (uint32_t)rng_below(&r, 64);
                    CHECK_EQ_U64(names_sync_some(nx, st, step), k < step ? k : step);
                }
                names_sync(nx, st); /* takes the forgotten ones out */
            } else {
                names_sync(nx, st);
            }
            qsort(v, n, sizeof *v, cmp_str);
            check_against(st, nx, v, n, &r);
            for (uint32_t i = 0; i < names_count(nx); i++)
                CHECK(gstore_exists(st, names_at(nx, i)));
        }
        /* Everything dropped: the index is empty and gives its room back. */
        size_t full = names_memory(nx);
        for (uint32_t i = 0; i < n; i++) {
            uint32_t id = gstore_find(st, v[i], strlen(v[i]));
            names_forget(nx, id);
            gstore_drop(st, id);
            free(v[i]);
        }
        CHECK_EQ_U64(names_pending(nx, st), 0);
        names_sync(nx, st);
        CHECK_EQ_U64(names_count(nx), 0);
        CHECK(names_memory(nx) <= full);
        free(v);
        names_free(nx);
        gstore_free(st);
    }
    unit_context("%s", "");
}

/* 100k names indexed, all dropped: the index's memory returns to what it was empty. */
static void test_forget_memory(void)
{
    struct gstore *st = gstore_new();
    struct names *nx = names_new();
    size_t empty = names_memory(nx);
    uint32_t n = (uint32_t)unit_iters(100000);
    char name[32];
    for (uint32_t i = 0; i < n; i++)
        mk(st, (snprintf(name, sizeof name, "n%u", i), name));
    names_sync(nx, st);
    CHECK_EQ_U64(names_count(nx), n);
    CHECK(names_memory(nx) >= (size_t)n * 4);
    for (uint32_t id = 0; id < n; id++) {
        names_forget(nx, id);
        gstore_drop(st, id);
    }
    names_sync(nx, st);
    CHECK_EQ_U64(names_count(nx), 0);
    printf("  index of %u names: empty %zu bytes, after dropping them all %zu\n", n, empty,
           names_memory(nx));
    CHECK(names_memory(nx) <= empty + 64);
    /* Counted again: ids from 0, all listed. */
    for (uint32_t i = 0; i < 10; i++)
        mk(st, (snprintf(name, sizeof name, "again%u", i), name));
    names_sync(nx, st);
    CHECK_EQ_U64(names_count(nx), 10);
    CHECK_STR_EQ(at(st, nx, 0), "again0");
    names_free(nx);
    gstore_free(st);
}

UNIT_MAIN("names", UNIT_CASE(test_basics), UNIT_CASE(test_model), UNIT_CASE(test_ordered_input),
          UNIT_CASE(test_long_prefixes), UNIT_CASE(test_forget), UNIT_CASE(test_forget_memory))
