/*
 * test_topk.c - core/store/topk.c: the bounded heaviest-keys set. Fixed cases, then
 * property runs against brute-force models (every key's true sum or value in a plain
 * array):
 *   - space-saving (topk_add): the weights sum to the stream's total; a held key's weight
 *     is its true sum plus at most its err, and err <= total/slots; every key whose true sum
 *     is above total/slots is held; topk_list is sorted heaviest first;
 *   - largest values (topk_set) with values that only grow: the held weights are exactly
 *     the slots largest values; with values that also fall, every held weight is its key's
 *     value.
 * Skewed streams (a few hot keys in many cold ones) make the evictions and the hash's
 * backward-shift deletions common.
 *
 * Never include this from core/.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store/topk.h"
#include "unit.h"

static void test_basics(void)
{
    struct topk *t = topk_new(3);
    struct topk_item it, out[8];
    CHECK_EQ_U64(topk_count(t), 0);
    CHECK_EQ_U64(topk_list(t, out, 8), 0);
    CHECK(!topk_get(t, 7, &it));
    topk_add(t, 7, 5);
    topk_add(t, 8, 2);
    topk_add(t, 9, 1);
    topk_add(t, 7, 0);  /* ignored */
    topk_add(t, 7, -3); /* ignored */
    CHECK_EQ_U64(topk_count(t), 3);
    CHECK_EQ_I64(topk_total(t), 8);
    /* A fourth key takes the lightest slot (9, weight 1): weight 1 + 4, err 1. */
    topk_add(t, 10, 4);
    CHECK(!topk_get(t, 9, &it));
    REQUIRE(topk_get(t, 10, &it));
    CHECK_EQ_I64(it.weight, 5);
    CHECK_EQ_I64(it.err, 1);
    REQUIRE(topk_list(t, out, 8) == 3);
    CHECK_EQ_U64(out[0].key, 7); /* 7 and 10 weigh 5: the smaller key first */
    CHECK_EQ_U64(out[1].key, 10);
    CHECK_EQ_U64(out[2].key, 8);
    CHECK_EQ_U64(topk_list(t, out, 1), 1);
    topk_reset(t);
    CHECK_EQ_U64(topk_count(t), 0);
    CHECK(!topk_get(t, 7, &it));
    CHECK_EQ_I64(topk_total(t), 0);
    topk_free(t);

    t = topk_new(2);
    topk_set(t, 1, 10);
    topk_set(t, 2, 20);
    topk_set(t, 3, 5); /* lighter than both: not taken */
    CHECK(!topk_get(t, 3, &it));
    topk_set(t, 3, 15); /* heavier than 1 */
    CHECK(!topk_get(t, 1, &it));
    REQUIRE(topk_get(t, 3, &it));
    CHECK_EQ_I64(it.weight, 15);
    topk_set(t, 2, -4); /* a held key falls: still held, lightest now */
    REQUIRE(topk_list(t, out, 8) == 2);
    CHECK_EQ_U64(out[0].key, 3);
    CHECK_EQ_I64(out[1].weight, -4);
    CHECK(topk_memory(t) > 0);
    topk_free(t);
}

/* A skewed key: one of a few hot keys often, else one of many cold ones. */
static uint32_t skewed_key(struct unit_rng *r, uint32_t nkeys)
{
    if (rng_below(r, 3) == 0)
        return (uint32_t)rng_below(r, nkeys < 8 ? nkeys : 8);
    return (uint32_t)rng_below(r, nkeys);
}

static void check_sorted(const struct topk_item *out, unsigned n)
{
    for (unsigned i = 1; i < n; i++)
        CHECK(out[i - 1].weight > out[i].weight ||
              (out[i - 1].weight == out[i].weight && out[i - 1].key < out[i].key));
}

static void check_space_saving(struct topk *t, const int64_t *truth, uint32_t nkeys, unsigned slots)
{
    int64_t total = topk_total(t), sum = 0;
    struct topk_item *out = malloc(slots * sizeof *out);
    unsigned n = topk_list(t, out, slots);
    CHECK_EQ_U64(n, topk_count(t));
    check_sorted(out, n);
    for (unsigned i = 0; i < n; i++) {
        sum += out[i].weight;
        REQUIRE(out[i].key < nkeys);
        CHECK(out[i].weight >= truth[out[i].key]);
        CHECK(out[i].weight - out[i].err <= truth[out[i].key]);
        CHECK(out[i].err * (int64_t)slots <= total);
        struct topk_item g;
        CHECK(topk_get(t, out[i].key, &g) && g.weight == out[i].weight);
    }
    CHECK_EQ_I64(sum, total);
    for (uint32_t k = 0; k < nkeys; k++) {
        struct topk_item g;
        if (truth[k] * (int64_t)slots > total)
            CHECK(topk_get(t, k, &g));
    }
    free(out);
}

static void test_space_saving_model(void)
{
    struct unit_rng r;
    rng_init(&r, "topk_ss");
    long rounds = unit_iters(30);
    for (long round = 0; round < rounds && !unit_g.fails; round++) {
        unit_context("round %ld", round);
        unsigned slots = 1 + (unsigned)rng_below(&r, 64);
        uint32_t nkeys = 1 + (uint32_t)rng_below(&r, 500);
        int64_t *truth = calloc(nkeys, sizeof *truth);
        struct topk *t = topk_new(slots);
        long steps = 1 + (long)rng_below(&r, 3000);
        for (long i = 0; i < steps; i++) {
            uint32_t k = skewed_key(&r, nkeys);
            int64_t amount = 1 + (int64_t)rng_below(&r, rng_below(&r, 10) ? 3 : 1000);
            topk_add(t, k, amount);
            truth[k] += amount;
            if (i % 97 == 0)
                check_space_saving(t, truth, nkeys, slots);
        }
        check_space_saving(t, truth, nkeys, slots);
        topk_free(t);
        free(truth);
    }
}

static int cmp_desc(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x > y ? -1 : x < y;
}

static void check_largest(struct topk *t, const int64_t *truth, uint32_t nkeys, unsigned slots,
                          int grow_only)
{
    struct topk_item *out = malloc(slots * sizeof *out);
    int64_t *sorted = malloc(nkeys * sizeof *sorted);
    unsigned n = topk_list(t, out, slots);
    check_sorted(out, n);
    for (unsigned i = 0; i < n; i++)
        CHECK_EQ_I64(out[i].weight, truth[out[i].key]);
    if (grow_only) {
        uint32_t seen = 0;
        for (uint32_t k = 0; k < nkeys; k++)
            if (truth[k] > 0)
                sorted[seen++] = truth[k];
        qsort(sorted, seen, sizeof *sorted, cmp_desc);
        CHECK_EQ_U64(n, seen < slots ? seen : slots);
        for (unsigned i = 0; i < n && i < seen; i++)
            CHECK_EQ_I64(out[i].weight, sorted[i]);
    }
    free(sorted);
    free(out);
}

static void test_largest_model(void)
{
    struct unit_rng r;
    rng_init(&r, "topk_set");
    long rounds = unit_iters(30);
    for (long round = 0; round < rounds && !unit_g.fails; round++) {
        int grow_only = round % 2 == 0;
        unit_context("round %ld grow_only %d", round, grow_only);
        unsigned slots = 1 + (unsigned)rng_below(&r, 64);
        uint32_t nkeys = 1 + (uint32_t)rng_below(&r, 500);
        int64_t *truth = calloc(nkeys, sizeof *truth);
        struct topk *t = topk_new(slots);
        long steps = 1 + (long)rng_below(&r, 3000);
        for (long i = 0; i < steps; i++) {
            uint32_t k = skewed_key(&r, nkeys);
            int64_t d = 1 + (int64_t)rng_below(&r, 50);
            if (!grow_only && rng_below(&r, 3) == 0)
                d = -d;
            truth[k] += d;
            topk_set(t, k, truth[k]);
            if (i % 89 == 0)
                check_largest(t, truth, nkeys, slots, grow_only);
        }
        check_largest(t, truth, nkeys, slots, grow_only);
        topk_free(t);
        free(truth);
    }
}

/* topk_remove frees the key's slot: the others stay found, in order, and a new key takes
 * the slot without evicting anyone. */
static void test_remove(void)
{
    struct topk *t = topk_new(8);
    for (uint32_t k = 1; k <= 8; k++)
        topk_set(t, k, (int64_t)k * 10);
    topk_remove(t, 3);
    topk_remove(t, 8);
    topk_remove(t, 99); /* absent: nothing */
    CHECK_EQ_U64(topk_count(t), 6);
    struct topk_item it;
    CHECK(!topk_get(t, 3, &it));
    CHECK(!topk_get(t, 8, &it));
    for (uint32_t k = 1; k <= 7; k++)
        if (k != 3)
            CHECK(topk_get(t, k, &it) && it.weight == (int64_t)k * 10);
    topk_set(t, 50, 5);
    topk_set(t, 51, 6);
    CHECK_EQ_U64(topk_count(t), 8);
    CHECK(topk_get(t, 1, &it)); /* nobody was evicted */
    struct topk_item out[8];
    unsigned n = topk_list(t, out, 8);
    CHECK_EQ_U64(n, 8);
    for (unsigned i = 1; i < n; i++)
        CHECK(out[i - 1].weight >= out[i].weight);
    for (uint32_t k = 1; k <= 7; k++)
        topk_remove(t, k);
    topk_remove(t, 50);
    topk_remove(t, 51);
    CHECK_EQ_U64(topk_count(t), 0);
    topk_free(t);
}

UNIT_MAIN("topk", UNIT_CASE(test_remove), UNIT_CASE(test_basics),
          UNIT_CASE(test_space_saving_model), UNIT_CASE(test_largest_model))
