/*
 * test_digest.c - unit tests of the hash tree over the store (core/store/digest.c): equal
 * states give equal fingerprints whatever the order of changes and of replica interning,
 * any single difference is found down to its leaf, and the lazy update equals a rebuild.
 * Never include this from core/.
 */
#include <stdio.h>
#include <string.h>

#include "store/digest.h"
#include "store/gstore.h"
#include "unit.h"

static uint32_t create(struct gstore *st, const char *name)
{
    return gstore_create(st, name, strlen(name));
}

static int rep(struct gstore *st, const char *name)
{
    return gstore_replica(st, name, strlen(name));
}

static void merge1(struct gstore *st, const char *counter, const char *replica, int64_t pos,
                   int64_t neg)
{
    struct gentry e = {rep(st, replica), pos, neg};
    gstore_merge(st, create(st, counter), &e, 1);
}

/* The same state, reached in the order given by seed: counters, entries and replica ids
 * interned in a different order each time. */
static struct gstore *build(uint64_t seed, int ncounters)
{
    static const char *const reps[3] = {"us-east-1~a1", "us-west-1~b2", "eu-west-1"};
    struct gstore *st = gstore_new();
    struct unit_rng rng;
    rng_init(&rng, "digest-build");
    rng.s[0] ^= seed;
    for (int k = 0; k < 3; k++)
        rep(st, reps[(k + seed) % 3]);
    for (int step = 0; step < 4 * ncounters; step++) {
        int i = (int)rng_below(&rng, (uint64_t)ncounters);
        char name[32];
        snprintf(name, sizeof name, "c%d", i);
        /* The final value of each entry depends on (i, replica) only: merges are max. */
        for (int k = 0; k < 3; k++)
            if ((i + k) % 4 != 0)
                merge1(st, name, reps[k], (int64_t)(i * 7 + k + 1), k == 1 ? i % 3 : 0);
    }
    for (int i = 0; i < ncounters; i++) { /* every counter, even one the walk missed */
        char name[32];
        snprintf(name, sizeof name, "c%d", i);
        for (int k = 0; k < 3; k++)
            if ((i + k) % 4 != 0)
                merge1(st, name, reps[k], (int64_t)(i * 7 + k + 1), k == 1 ? i % 3 : 0);
    }
    return st;
}

static int trees_equal(const struct digest *a, const struct digest *b)
{
    for (int l = 0; l <= DIGEST_DEPTH; l++)
        for (uint32_t i = 0; i < digest_level_size(l); i++)
            if (digest_node(a, l, i) != digest_node(b, l, i))
                return 0;
    return 1;
}

static void test_shape(void)
{
    CHECK_EQ_U64(digest_level_size(0), 1);
    CHECK_EQ_U64(digest_level_size(DIGEST_DEPTH), DIGEST_LEAVES);
    for (int l = 0; l < DIGEST_DEPTH; l++)
        CHECK_EQ_U64((uint64_t)digest_level_size(l) * digest_fanout(l), digest_level_size(l + 1));
    CHECK(digest_leaf_of("abc", 3) < DIGEST_LEAVES);
    CHECK_EQ_U64(digest_leaf_of("abc", 3), digest_leaf_of("abc", 3));
}

static void test_order_independent(void)
{
    int n = (int)unit_iters(3000);
    struct gstore *a = build(1, n), *b = build(2, n);
    struct digest *da = digest_new(), *db = digest_new();
    CHECK_EQ_U64(digest_update(da, a), (uint64_t)n);
    digest_update(db, b);
    CHECK(digest_root(da) != 0);
    CHECK_EQ_U64(digest_root(da), digest_root(db));
    CHECK(trees_equal(da, db));
    /* A zero entry is no entry. */
    merge1(b, "c0", "zero-node", 0, 0);
    digest_update(db, b);
    CHECK_EQ_U64(digest_root(da), digest_root(db));
    /* Nothing changed: nothing is hashed again. */
    CHECK_EQ_U64(digest_update(da, a), 0);
    digest_free(da);
    digest_free(db);
    gstore_free(a);
    gstore_free(b);
}

/* One difference in b: the roots differ, and exactly one leaf, the counter's. */
static void check_one_difference(struct gstore *a, struct gstore *b, struct digest *da,
                                 struct digest *db, const char *counter)
{
    digest_update(da, a);
    digest_update(db, b);
    CHECK(digest_root(da) != digest_root(db));
    uint32_t leaf = digest_leaf_of(counter, strlen(counter)), differ = 0;
    for (uint32_t i = 0; i < DIGEST_LEAVES; i++)
        if (digest_node(da, DIGEST_DEPTH, i) != digest_node(db, DIGEST_DEPTH, i)) {
            differ++;
            CHECK_EQ_U64(i, leaf);
        }
    CHECK_EQ_U64(differ, 1);
}

static void test_single_difference(void)
{
    struct gstore *a = build(3, 500), *b = build(4, 500);
    struct digest *da = digest_new(), *db = digest_new();
    unit_context("increment");
    gstore_incr(b, gstore_find(b, "c5", 2), rep(b, "us-east-1~a1"), 1);
    check_one_difference(a, b, da, db, "c5");
    gstore_incr(a, gstore_find(a, "c5", 2), rep(a, "us-east-1~a1"), 1);
    digest_update(da, a);
    digest_update(db, b);
    CHECK_EQ_U64(digest_root(da), digest_root(db));

    unit_context("decrement");
    gstore_incr(a, gstore_find(a, "c7", 2), rep(a, "eu-west-1"), -1);
    check_one_difference(b, a, db, da, "c7");
    gstore_incr(b, gstore_find(b, "c7", 2), rep(b, "eu-west-1"), -1);

    unit_context("new counter");
    merge1(a, "only-here", "eu-west-1", 1, 0);
    check_one_difference(b, a, db, da, "only-here");
    merge1(b, "only-here", "eu-west-1", 1, 0);

    unit_context("same total under another replica");
    merge1(a, "c9", "x-node", 1, 0);
    merge1(b, "c9", "y-node", 1, 0);
    digest_update(da, a);
    digest_update(db, b);
    CHECK(digest_root(da) != digest_root(db));
    merge1(a, "c9", "y-node", 1, 0);
    merge1(b, "c9", "x-node", 1, 0);

    unit_context("folded replica");
    uint32_t ida = gstore_find(a, "c10", 3), idb = gstore_find(b, "c10", 3);
    merge1(a, "c10", "old~1", 5, 0);
    merge1(b, "c10", "old~1", 5, 0);
    digest_update(da, a);
    digest_update(db, b);
    CHECK_EQ_U64(digest_root(da), digest_root(db));
    CHECK_EQ_I64(gstore_fold(a, ida, rep(a, "old~1"), rep(a, "eu-west-1")), 1);
    check_one_difference(b, a, db, da, "c10");
    CHECK_EQ_I64(gstore_fold(b, idb, rep(b, "old~1"), rep(b, "eu-west-1")), 1);
    digest_update(da, a);
    digest_update(db, b);
    CHECK_EQ_U64(digest_root(da), digest_root(db));
    unit_context("%s", "");
    digest_free(da);
    digest_free(db);
    gstore_free(a);
    gstore_free(b);
}

/* Updated after every few changes, or built once at the end: the same tree, and each
 * leaf lists each of its counters once. */
static void test_lazy_equals_rebuild(void)
{
    struct gstore *st = gstore_new();
    struct digest *lazy = digest_new();
    struct unit_rng rng;
    rng_init(&rng, "digest-lazy");
    int r0 = rep(st, "n1"), r1 = rep(st, "n2");
    long steps = unit_iters(20000);
    for (long s = 0; s < steps; s++) {
        char name[32];
        snprintf(name, sizeof name, "k%" PRIu64, rng_below(&rng, 2000));
        gstore_incr(st, create(st, name), rng_below(&rng, 2) ? r0 : r1, rng_range(&rng, -3, 5));
        if (rng_below(&rng, 50) == 0)
            digest_update(lazy, st);
    }
    digest_update(lazy, st);
    struct digest *fresh = digest_new();
    digest_update(fresh, st);
    CHECK(trees_equal(lazy, fresh));
    uint32_t seen = 0;
    for (uint32_t leaf = 0; leaf < DIGEST_LEAVES; leaf++)
        for (uint32_t id = digest_leaf_first(lazy, leaf); id != GSTORE_NONE;
             id = digest_leaf_next(lazy, id)) {
            size_t len;
            const char *name = gstore_counter_name(gstore_counter(st, id), &len);
            CHECK_EQ_U64(digest_leaf_of(name, len), leaf);
            seen++;
        }
    CHECK_EQ_U64(seen, gstore_count(st));
    CHECK(digest_memory(lazy) > 0);
    digest_free(lazy);
    digest_free(fresh);
    gstore_free(st);
}

/* Two nodes that differ only in a clear, a deletion or a seal differ, in that counter's leaf
 * alone; once both did the same, they are equal again. */
static void test_lifecycle_differences(void)
{
    struct gstore *a = build(5, 500), *b = build(6, 500);
    struct digest *da = digest_new(), *db = digest_new();
    digest_update(da, a);
    digest_update(db, b);
    CHECK_EQ_U64(digest_root(da), digest_root(db));
    unit_context("clear");
    CHECK_EQ_I64(gstore_clear(a, gstore_find(a, "c5", 2)), 0);
    check_one_difference(b, a, db, da, "c5");
    CHECK_EQ_I64(gstore_clear(b, gstore_find(b, "c5", 2)), 0);
    digest_update(da, a);
    digest_update(db, b);
    CHECK_EQ_U64(digest_root(da), digest_root(db));
    unit_context("delete");
    CHECK_EQ_I64(gstore_delete(b, gstore_find(b, "c7", 2)), 0);
    check_one_difference(a, b, da, db, "c7");
    CHECK_EQ_I64(gstore_delete(a, gstore_find(a, "c7", 2)), 0);
    digest_update(da, a);
    digest_update(db, b);
    CHECK_EQ_U64(digest_root(da), digest_root(db));
    unit_context("seal");
    CHECK_EQ_I64(gstore_seal(a, gstore_find(a, "c7", 2)), 1);
    check_one_difference(b, a, db, da, "c7");
    CHECK_EQ_I64(gstore_seal(b, gstore_find(b, "c7", 2)), 1);
    digest_update(da, a);
    digest_update(db, b);
    CHECK_EQ_U64(digest_root(da), digest_root(db));
    CHECK(trees_equal(da, db));
    unit_context("%s", "");
    digest_free(da);
    digest_free(db);
    gstore_free(a);
    gstore_free(b);
}

/* Floors received in any order (and replicas interned in any order) hash alike. */
static void test_lifecycle_order_independent(void)
{
    struct gstore *st[2] = {gstore_new(), gstore_new()};
    struct digest *d[2] = {digest_new(), digest_new()};
    static const char *const reps[3] = {"n1~a", "n2~b", "n3"};
    for (int k = 0; k < 2; k++) {
        for (int j = 0; j < 3; j++) {
            int i = k ? 2 - j : j; /* the other order on the second node */
            struct gentry e[3], fl[1];
            for (int x = 0; x < 3; x++)
                e[x] = (struct gentry){rep(st[k], reps[(x + i) % 3]), 10 + (x + i) % 3, 1};
            fl[0] = (struct gentry){rep(st[k], reps[i]), 5 + i, 1};
            struct glife life = {.floor = fl, .nfloor = 1};
            uint32_t id = create(st[k], "cleared");
            CHECK(gstore_merge_life(st[k], id, e, 3, NULL, 0, &life, 0) >= 0);
        }
        digest_update(d[k], st[k]);
    }
    CHECK_EQ_U64(digest_root(d[0]), digest_root(d[1]));
    struct glife l;
    CHECK_EQ_I64(gstore_life(st[0], gstore_find(st[0], "cleared", 7), &l), 1);
    CHECK_EQ_U64(l.nfloor, 3);
    for (int k = 0; k < 2; k++) {
        digest_free(d[k]);
        gstore_free(st[k]);
    }
}

/* A dropped id leaves its leaf; given to another name, it is in that name's leaf: the tree
 * equals one built from nothing, and each leaf lists each counter once. */
static void test_forget_then_reuse(void)
{
    struct gstore *st = build(7, 300);
    struct digest *d = digest_new();
    digest_update(d, st);
    int r0 = rep(st, "us-east-1~a1");
    uint32_t last = GSTORE_NONE;
    for (int i = 0; i < 300; i += 3) {
        char name[32];
        snprintf(name, sizeof name, "c%d", i);
        uint32_t id = gstore_find(st, name, strlen(name));
        CHECK_EQ_I64(gstore_delete(st, id), 0);
        digest_forget(d, id);
        gstore_drop(st, id);
        if (i % 2)
            digest_update(d, st);
        last = id;
    }
    digest_forget(d, last);     /* forgotten already: nothing */
    digest_forget(d, 1u << 30); /* an id beyond the store: nothing */
    digest_update(d, st);
    struct digest *fresh = digest_new();
    digest_update(fresh, st);
    CHECK(trees_equal(d, fresh));
    for (int i = 0; i < 60; i++) { /* new names, at the ids given back */
        char name[32];
        snprintf(name, sizeof name, "new%d", i);
        CHECK_EQ_I64(gstore_incr(st, create(st, name), r0, i + 1), 0);
    }
    digest_update(d, st);
    digest_free(fresh);
    fresh = digest_new();
    digest_update(fresh, st);
    CHECK(trees_equal(d, fresh));
    uint32_t seen = 0;
    for (uint32_t leaf = 0; leaf < DIGEST_LEAVES; leaf++)
        for (uint32_t id = digest_leaf_first(d, leaf); id != GSTORE_NONE;
             id = digest_leaf_next(d, id)) {
            size_t len;
            CHECK(gstore_exists(st, id));
            const char *name = gstore_counter_name(gstore_counter(st, id), &len);
            CHECK_EQ_U64(digest_leaf_of(name, len), leaf);
            seen++;
        }
    CHECK_EQ_U64(seen, gstore_live(st));
    digest_free(d);
    digest_free(fresh);
    gstore_free(st);
}

/* A digest of a store that shrank (its highest ids dropped) gives the id array back: it
 * ends as small as one built for what is left, and the tree still equals a fresh one. */
static void test_shrinks_with_the_store(void)
{
    struct gstore *st = build(3, 20000);
    struct digest *d = digest_new();
    digest_update(d, st);
    size_t big = digest_memory(d);
    for (uint32_t id = gstore_count(st) - 1; id >= 2000; id--) {
        CHECK_EQ_I64(gstore_delete(st, id), 0);
        digest_forget(d, id);
        gstore_drop(st, id);
        if (id % 1000 == 0)
            digest_update(d, st);
    }
    digest_update(d, st);
    CHECK_EQ_U64(gstore_count(st), 2000);
    struct digest *fresh = digest_new();
    digest_update(fresh, st);
    CHECK(trees_equal(d, fresh));
    printf("  digest memory: %zu at 20000, %zu at 2000, a fresh one %zu\n", big, digest_memory(d),
           digest_memory(fresh));
    CHECK(digest_memory(d) <= digest_memory(fresh) + 16384); /* its dirty list is bigger */
    CHECK(digest_memory(d) + 50000 < big); /* next: 4 bytes an id, 18,000 ids fewer */
    digest_free(d);
    digest_free(fresh);
    gstore_free(st);
}

static int keep_not_regional(void *arg, const char *key, size_t len)
{
    (void)arg;
    return !(len > 2 && memcmp(key, "r/", 2) == 0);
}

/* Counters the keep filter refuses are in no fingerprint. */
static void test_keep_filter(void)
{
    struct gstore *a = build(8, 200), *b = build(9, 200);
    struct digest *da = digest_new(), *db = digest_new();
    digest_set_keep(da, keep_not_regional, NULL);
    digest_set_keep(db, keep_not_regional, NULL);
    merge1(a, "r/local", "us-east-1~a1", 3, 0);
    digest_update(da, a);
    digest_update(db, b);
    CHECK_EQ_U64(digest_root(da), digest_root(db));
    merge1(a, "ns/shared", "us-east-1~a1", 3, 0);
    check_one_difference(b, a, db, da, "ns/shared");
    digest_free(da);
    digest_free(db);
    gstore_free(a);
    gstore_free(b);
}

UNIT_MAIN("test_digest", UNIT_CASE(test_shape), UNIT_CASE(test_order_independent),
          UNIT_CASE(test_single_difference), UNIT_CASE(test_lazy_equals_rebuild),
          UNIT_CASE(test_lifecycle_differences), UNIT_CASE(test_lifecycle_order_independent),
          UNIT_CASE(test_forget_then_reuse), UNIT_CASE(test_keep_filter),
          UNIT_CASE(test_shrinks_with_the_store))
