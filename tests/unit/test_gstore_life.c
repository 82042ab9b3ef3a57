/*
 * test_gstore_life.c - unit tests of the counter lifecycle in the CRDT store
 * (core/store/gstore.c, gstore.h "Lifecycle"): observed resets (clear floors), deletions
 * (delete floors, dead counters, revival), seals and the new-life rule, folding with
 * floors, and dropping counters (ids reused, memory given back).
 *
 * The merge laws with lifecycle states are checked as properties over random histories:
 * each replica's state is compared, after every operation, with a brute-force model kept
 * by the test (entries, both floors, flags), never with the store's own idea of itself.
 * The random states depend on the printed seed (COUNTERD_TEST_SEED replays a run);
 * COUNTERD_TEST_SCALE scales the iteration counts. Never include this from core/.
 */
#include <malloc.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "store/gstore.h"
#include "unit.h"

#define NREP 4 /* replicas (and stores) in the random tests */

/* ---------------------------------------------------------------- the model */

/* One replica's view of the counter: per replica id, entries and floors. */
struct lm {
    int64_t e[NREP][2], f[NREP][2], d[NREP][2]; /* [rep][pos, neg] */
    unsigned flags;
};

static int64_t max64(int64_t a, int64_t b)
{
    return a > b ? a : b;
}

static int lm_dead(const struct lm *m)
{
    if (!(m->flags & GLIFE_DELETED))
        return 0;
    for (int r = 0; r < NREP; r++)
        for (int k = 0; k < 2; k++)
            if (m->e[r][k] != m->d[r][k])
                return 0;
    return 1;
}

static __int128 lm_value(const struct lm *m)
{
    __int128 v = 0;
    for (int r = 0; r < NREP; r++)
        v += (__int128)(m->e[r][0] - m->f[r][0]) - (m->e[r][1] - m->f[r][1]);
    return v;
}

static void lm_join(struct lm *a, const struct lm *b)
{
    for (int r = 0; r < NREP; r++)
        for (int k = 0; k < 2; k++) {
            a->e[r][k] = max64(a->e[r][k], b->e[r][k]);
            a->d[r][k] = max64(a->d[r][k], b->d[r][k]);
            a->f[r][k] = max64(max64(a->f[r][k], b->f[r][k]), a->d[r][k]);
        }
    a->flags |= b->flags;
}

/* ---------------------------------------------------------------- store helpers */

/* A store with replicas "r0".."r<NREP-1>" and the counter "c" (*id). */
static struct gstore *store_new(uint32_t *id)
{
    struct gstore *st = gstore_new();
    char name[8];
    for (int i = 0; i < NREP; i++)
        CHECK_EQ_I64(gstore_replica(st, name, (size_t)snprintf(name, sizeof name, "r%d", i)), i);
    *id = gstore_create(st, "c", 1);
    return st;
}

/* A counter's whole state, copied out (gstore_life's arrays live until the next change). */
struct full {
    struct gentry e[NREP * 2], f[NREP * 2], d[NREP * 2];
    size_t ne, nf, nd;
    struct glife life;
};

static void full_export(const struct gstore *st, uint32_t id, struct full *s)
{
    const struct gcounter *c = gstore_counter(st, id);
    s->ne = gstore_counter_entries(c);
    for (unsigned i = 0; i < s->ne; i++)
        gstore_counter_entry(c, i, &s->e[i]);
    struct glife l;
    gstore_life(st, id, &l);
    s->nf = l.nfloor;
    s->nd = l.ndfloor;
    if (l.nfloor) /* the arrays are NULL when empty */
        memcpy(s->f, l.floor, l.nfloor * sizeof *s->f);
    if (l.ndfloor)
        memcpy(s->d, l.dfloor, l.ndfloor * sizeof *s->d);
    s->life = (struct glife){s->f, s->nf, s->d, s->nd, l.flags};
}

/* Merges counter id of src into counter id of dst (checked first). @return the merge's. */
static int merge_full(struct gstore *dst, const struct gstore *src, uint32_t id)
{
    static struct full s;
    full_export(src, id, &s);
    CHECK_EQ_I64(gstore_merge_life_check(dst, id, s.e, s.ne, NULL, 0, &s.life), 0);
    return gstore_merge_life(dst, id, s.e, s.ne, NULL, 0, &s.life, 0);
}

/* Reads counter id's state into a model. */
static void lm_read(const struct gstore *st, uint32_t id, struct lm *m)
{
    memset(m, 0, sizeof *m);
    struct full s;
    full_export(st, id, &s);
    for (size_t i = 0; i < s.ne; i++) {
        m->e[s.e[i].rep][0] = s.e[i].pos;
        m->e[s.e[i].rep][1] = s.e[i].neg;
    }
    for (size_t i = 0; i < s.nf; i++) {
        m->f[s.f[i].rep][0] = s.f[i].pos;
        m->f[s.f[i].rep][1] = s.f[i].neg;
    }
    for (size_t i = 0; i < s.nd; i++) {
        m->d[s.d[i].rep][0] = s.d[i].pos;
        m->d[s.d[i].rep][1] = s.d[i].neg;
    }
    m->flags = s.life.flags;
}

/* Checks counter id against the model: state, value (every reader), deadness. */
static void check_lm(const struct gstore *st, uint32_t id, const struct lm *want, const char *what)
{
    struct lm got;
    lm_read(st, id, &got);
    if (memcmp(&got, want, sizeof got) != 0)
        unit_fail(__FILE__, __LINE__, "%s: the state differs from the model", what);
    const struct gcounter *c = gstore_counter(st, id);
    __int128 v = lm_value(want);
    CHECK(gstore_value(st, c) == v);
    CHECK_EQ_I64(gstore_counter_value(c), gstore_clamp(v, NULL));
    for (int r = 0; r < NREP; r++)
        CHECK_EQ_I64(gstore_counter_net(c, r),
                     (want->e[r][0] - want->f[r][0]) - (want->e[r][1] - want->f[r][1]));
    CHECK_EQ_I64(gstore_dead(st, id), lm_dead(want));
}

/* ---------------------------------------------------------------- examples */

static void test_clear_basic(void)
{
    uint32_t id;
    struct gstore *st = store_new(&id);
    struct glife l;
    CHECK_EQ_I64(gstore_life(st, id, &l), 0);
    CHECK_EQ_I64(gstore_incr(st, id, 0, 5), 0);
    CHECK_EQ_I64(gstore_incr(st, id, 1, -2), 0);
    uint64_t seq = gstore_seq(st);
    CHECK_EQ_I64(gstore_clear(st, id), 0);
    CHECK(gstore_seq(st) > seq);
    CHECK_EQ_U64(gstore_changed_after(st, seq), id);
    const struct gcounter *c = gstore_counter(st, id);
    CHECK(gstore_value(st, c) == 0);
    CHECK_EQ_I64(gstore_counter_value(c), 0);
    CHECK_EQ_I64(gstore_counter_net(c, 0), 0);
    CHECK_EQ_DBL(gstore_total(st), 0);
    CHECK_EQ_DBL(gstore_replica_net(st, 1), 0);
    CHECK(!gstore_dead(st, id));
    CHECK_EQ_I64(gstore_life(st, id, &l), 1);
    CHECK_EQ_U64(l.nfloor, 2);
    CHECK_EQ_U64(l.ndfloor, 0);
    CHECK_EQ_U64(l.flags, 0);
    CHECK_EQ_I64(gstore_incr(st, id, 0, 3), 0);
    CHECK_EQ_I64(gstore_incr(st, id, 2, 4), 0); /* a new entry: its floor is 0 */
    c = gstore_counter(st, id);
    CHECK(gstore_value(st, c) == 7);
    CHECK_EQ_I64(gstore_counter_net(c, 0), 3);
    CHECK_EQ_I64(gstore_counter_net(c, 2), 4);
    CHECK_EQ_DBL(gstore_total(st), 7);
    CHECK_EQ_DBL(gstore_replica_net(st, 0), 3);
    struct gnode nodes[GCOUNTER_MAX_ENTRIES];
    unsigned k = gstore_counter_nodes(st, c, nodes);
    gstore_wide sum = 0;
    for (unsigned j = 0; j < k; j++)
        sum += nodes[j].pos - nodes[j].neg;
    CHECK(sum == 7);
    /* A wider entry moves the block: the floors move with it. */
    CHECK_EQ_I64(gstore_incr(st, id, 1, 1 << 20), 0);
    CHECK(gstore_value(st, gstore_counter(st, id)) == 7 + (1 << 20));
    CHECK_EQ_I64(gstore_incr(st, id, 3, -1), 0);
    CHECK(gstore_value(st, gstore_counter(st, id)) == 6 + (1 << 20));
    CHECK_EQ_DBL(gstore_total(st), 6 + (1 << 20));
    gstore_free(st);
}

/* A clears having seen only its own increments and B's first ones; B's concurrent ones
 * survive, exactly, everywhere. */
static void test_partition_example(void)
{
    uint32_t id;
    struct gstore *a = store_new(&id), *b = store_new(&id);
    CHECK_EQ_I64(gstore_incr(a, id, 0, 10), 0);
    CHECK_EQ_I64(gstore_incr(b, id, 1, 7), 0);
    merge_full(a, b, id);
    merge_full(b, a, id);
    /* Partition: B counts 4 and -1 more; A counts 2 and clears. */
    CHECK_EQ_I64(gstore_incr(b, id, 1, 4), 0);
    CHECK_EQ_I64(gstore_incr(b, id, 1, -1), 0);
    CHECK_EQ_I64(gstore_incr(a, id, 0, 2), 0);
    CHECK_EQ_I64(gstore_clear(a, id), 0);
    CHECK(gstore_value(a, gstore_counter(a, id)) == 0);
    /* Heal. */
    CHECK(merge_full(a, b, id) > 0);
    CHECK(merge_full(b, a, id) > 0);
    CHECK(gstore_value(a, gstore_counter(a, id)) == 3);
    CHECK(gstore_value(b, gstore_counter(b, id)) == 3);
    CHECK_EQ_DBL(gstore_total(a), 3);
    CHECK_EQ_DBL(gstore_total(b), 3);
    CHECK_EQ_DBL(gstore_replica_net(b, 1), 3);
    CHECK_EQ_I64(merge_full(a, b, id), 0); /* converged: nothing changes */
    gstore_free(a);
    gstore_free(b);
}

/* Two clears of the same increments subtract them once. */
static void test_concurrent_clears(void)
{
    uint32_t id;
    struct gstore *a = store_new(&id), *b = store_new(&id);
    CHECK_EQ_I64(gstore_incr(a, id, 0, 10), 0);
    CHECK_EQ_I64(gstore_incr(b, id, 1, 5), 0);
    merge_full(a, b, id);
    merge_full(b, a, id);
    CHECK_EQ_I64(gstore_clear(a, id), 0);
    CHECK_EQ_I64(gstore_incr(b, id, 1, 1), 0);
    CHECK_EQ_I64(gstore_clear(b, id), 0); /* B observed one more */
    CHECK_EQ_I64(gstore_incr(a, id, 0, 2), 0);
    merge_full(a, b, id);
    merge_full(b, a, id);
    CHECK(gstore_value(a, gstore_counter(a, id)) == 2);
    CHECK(gstore_value(b, gstore_counter(b, id)) == 2);
    gstore_free(a);
    gstore_free(b);
}

/* A deletion and an increment it had not observed: the counter lives again, holding that
 * increment alone, on both sides. */
static void test_delete_revive(void)
{
    uint32_t id;
    struct gstore *a = store_new(&id), *b = store_new(&id);
    CHECK_EQ_I64(gstore_incr(a, id, 0, 10), 0);
    merge_full(b, a, id);
    CHECK_EQ_I64(gstore_delete(a, id), 0);
    CHECK(gstore_dead(a, id));
    CHECK_EQ_U64(gstore_dead_total(a), 1);
    CHECK(gstore_value(a, gstore_counter(a, id)) == 0);
    CHECK_EQ_I64(gstore_incr(b, id, 1, 3), 0); /* concurrent, unobserved */
    merge_full(a, b, id);
    merge_full(b, a, id);
    CHECK(!gstore_dead(a, id));
    CHECK(!gstore_dead(b, id));
    CHECK_EQ_U64(gstore_dead_total(a), 0);
    CHECK(gstore_value(a, gstore_counter(a, id)) == 3);
    CHECK(gstore_value(b, gstore_counter(b, id)) == 3);
    /* Deleted again, and a local increment revives it. */
    CHECK_EQ_I64(gstore_delete(b, id), 0);
    CHECK(gstore_dead(b, id));
    CHECK_EQ_I64(gstore_seal(b, id), 1);
    CHECK_EQ_I64(gstore_seal(b, id), 0);
    CHECK_EQ_I64(gstore_incr(b, id, 1, -2), 0);
    CHECK(!gstore_dead(b, id));
    CHECK_EQ_U64(gstore_dead_total(b), 0);
    CHECK(gstore_value(b, gstore_counter(b, id)) == -2);
    CHECK_EQ_I64(gstore_seal(b, id), 0); /* not dead */
    /* A deletion clears the seal. */
    CHECK_EQ_I64(gstore_delete(b, id), 0);
    struct glife l;
    gstore_life(b, id, &l);
    CHECK_EQ_U64(l.flags, GLIFE_DELETED);
    /* A merge of the flags alone is a change. */
    CHECK_EQ_I64(gstore_seal(b, id), 1);
    merge_full(a, b, id);
    CHECK(gstore_dead(a, id));
    uint64_t seq = gstore_seq(a);
    CHECK_EQ_I64(gstore_seal(a, id), 0); /* already sealed by the merge */
    CHECK_EQ_U64(gstore_seq(a), seq);
    gstore_free(a);
    gstore_free(b);
}

/* A floor or flag change alone is a change: new seq, a return of 1. */
static void test_life_only_change(void)
{
    uint32_t id;
    struct gstore *a = store_new(&id), *b = store_new(&id);
    CHECK_EQ_I64(gstore_incr(a, id, 0, 4), 0);
    merge_full(b, a, id);
    CHECK_EQ_I64(gstore_clear(a, id), 0);
    uint64_t seq = gstore_seq(b);
    CHECK_EQ_I64(merge_full(b, a, id), 1);
    CHECK(gstore_seq(b) > seq);
    CHECK_EQ_U64(gstore_changed_after(b, seq), id);
    CHECK(gstore_value(b, gstore_counter(b, id)) == 0);
    CHECK_EQ_I64(merge_full(b, a, id), 0);
    gstore_free(a);
    gstore_free(b);
}

/* The new-life rule, both ways: a sealed tombstone takes a state counted since without a
 * deletion whole, and such a state keeps itself against a sealed tombstone. */
static void test_seal_new_life(void)
{
    uint32_t id;
    struct gstore *a = store_new(&id), *b = store_new(&id);
    CHECK_EQ_I64(gstore_incr(a, id, 0, 100), 0);
    CHECK_EQ_I64(gstore_incr(a, id, 1, 50), 0);
    CHECK_EQ_I64(gstore_delete(a, id), 0);
    merge_full(b, a, id);
    CHECK_EQ_I64(gstore_seal(a, id), 1);
    merge_full(b, a, id);
    CHECK(gstore_dead(b, id));
    /* B drops the tombstone and counts the name again. */
    gstore_drop(b, id);
    CHECK(!gstore_exists(b, id));
    uint32_t nid = gstore_create(b, "c", 1);
    CHECK(nid != GSTORE_NONE);
    CHECK_EQ_I64(gstore_incr(b, nid, 1, 3), 0);
    struct gstore *a2 = store_new(&id); /* A's tombstone, twice, for both orders */
    merge_full(a2, a, id);
    /* A receives B's new life: it takes it whole. */
    static struct full s;
    full_export(b, nid, &s);
    CHECK_EQ_I64(gstore_merge_life_check(a, id, s.e, s.ne, NULL, 0, &s.life), 0);
    CHECK(gstore_merge_life(a, id, s.e, s.ne, NULL, 0, &s.life, 0) > 0);
    CHECK(!gstore_dead(a, id));
    CHECK(gstore_value(a, gstore_counter(a, id)) == 3);
    struct glife l;
    gstore_life(a, id, &l);
    CHECK_EQ_U64(l.flags, 0);
    CHECK_EQ_U64(l.nfloor, 0);
    CHECK_EQ_U64(gstore_counter_entries(gstore_counter(a, id)), 1);
    CHECK_EQ_DBL(gstore_total(a), 3);
    CHECK_EQ_U64(gstore_dead_total(a), 0);
    /* B receives A's old sealed tombstone (anti-entropy): it keeps its new life. */
    full_export(a2, id, &s);
    CHECK_EQ_I64(gstore_merge_life(b, nid, s.e, s.ne, NULL, 0, &s.life, 0), 0);
    CHECK(gstore_value(b, gstore_counter(b, nid)) == 3);
    CHECK(!gstore_dead(b, nid));
    /* An unsealed tombstone merges as always (the deletion wins what it observed). */
    struct gstore *a3 = store_new(&id);
    CHECK_EQ_I64(gstore_incr(a3, id, 1, 3), 0);
    CHECK_EQ_I64(gstore_delete(a3, id), 0);
    CHECK(merge_full(b, a3, id) > 0);
    CHECK(gstore_dead(b, nid));
    gstore_free(a);
    gstore_free(a2);
    gstore_free(a3);
    gstore_free(b);
}

/* Folding a replica moves its floors with its entry: values stay exact. */
static void test_fold_floors(void)
{
    uint32_t id;
    struct gstore *st = store_new(&id);
    CHECK_EQ_I64(gstore_incr(st, id, 0, 9), 0);
    CHECK_EQ_I64(gstore_incr(st, id, 0, -4), 0);
    CHECK_EQ_I64(gstore_incr(st, id, 1, 6), 0);
    CHECK_EQ_I64(gstore_incr(st, id, 2, 1), 0);
    CHECK_EQ_I64(gstore_clear(st, id), 0);
    CHECK_EQ_I64(gstore_incr(st, id, 0, 2), 0);
    CHECK_EQ_I64(gstore_incr(st, id, 1, 3), 0);
    CHECK(gstore_value(st, gstore_counter(st, id)) == 5);
    CHECK_EQ_I64(gstore_fold(st, id, 0, 1), 1); /* into an existing entry */
    CHECK(gstore_value(st, gstore_counter(st, id)) == 5);
    CHECK_EQ_I64(gstore_counter_net(gstore_counter(st, id), 1), 5);
    CHECK_EQ_DBL(gstore_replica_net(st, 1), 5);
    CHECK_EQ_DBL(gstore_replica_net(st, 0), 0);
    CHECK_EQ_I64(gstore_fold(st, id, 2, 3), 1); /* into a replica without an entry */
    CHECK(gstore_value(st, gstore_counter(st, id)) == 5);
    CHECK_EQ_I64(gstore_counter_net(gstore_counter(st, id), 3), 0);
    CHECK_EQ_DBL(gstore_total(st), 5);
    /* And a deleted counter stays dead when folded. */
    CHECK_EQ_I64(gstore_delete(st, id), 0);
    CHECK_EQ_I64(gstore_fold(st, id, 3, 1), 1);
    CHECK(gstore_dead(st, id));
    CHECK(gstore_value(st, gstore_counter(st, id)) == 0);
    gstore_free(st);
}

/* The check refuses exactly what the merge would: the entry cap, the folded cap. */
static void test_life_checks(void)
{
    uint32_t id;
    struct gstore *a = store_new(&id), *b = store_new(&id);
    gstore_set_max_entries(a, 2);
    CHECK_EQ_I64(gstore_incr(a, id, 0, 1), 0);
    CHECK_EQ_I64(gstore_incr(a, id, 1, 1), 0);
    CHECK_EQ_I64(gstore_incr(b, id, 2, 1), 0);
    CHECK_EQ_I64(gstore_clear(b, id), 0);
    static struct full s;
    full_export(b, id, &s);
    uint64_t seq = gstore_seq(a);
    CHECK_EQ_I64(gstore_merge_life_check(a, id, s.e, s.ne, NULL, 0, &s.life), GSTORE_EFULL);
    CHECK_EQ_I64(gstore_merge_life(a, id, s.e, s.ne, NULL, 0, &s.life, 0), GSTORE_EFULL);
    CHECK_EQ_U64(gstore_seq(a), seq);
    /* A floor naming a replica without an entry is clamped to 0: no entry, no refusal. */
    struct gentry fl = {2, 5, 0};
    struct glife l = {&fl, 1, NULL, 0, 0};
    CHECK_EQ_I64(gstore_merge_life_check(a, id, NULL, 0, NULL, 0, &l), 0);
    CHECK_EQ_I64(gstore_merge_life(a, id, NULL, 0, NULL, 0, &l, 0), 0);
    CHECK_EQ_U64(gstore_counter_entries(gstore_counter(a, id)), 2);
    /* A floor above its entry is clamped to it. */
    struct gentry fl0 = {0, 7, 3};
    l = (struct glife){&fl0, 1, NULL, 0, 0};
    CHECK_EQ_I64(gstore_merge_life(a, id, NULL, 0, NULL, 0, &l, 0), 1);
    CHECK(gstore_value(a, gstore_counter(a, id)) == 1);
    /* The folded cap. */
    int folded[GCOUNTER_MAX_FOLDED + 1];
    for (int i = 0; i <= GCOUNTER_MAX_FOLDED; i++)
        folded[i] = 100 + i;
    CHECK_EQ_I64(gstore_merge_life_check(a, id, NULL, 0, folded, GCOUNTER_MAX_FOLDED + 1, &l),
                 GSTORE_EFOLDED);
    CHECK_EQ_I64(gstore_merge_life(a, id, NULL, 0, folded, GCOUNTER_MAX_FOLDED + 1, &l, 0),
                 GSTORE_EFOLDED);
    gstore_free(a);
    gstore_free(b);
}

/* ---------------------------------------------------------------- properties */

/* Whether every replica holds the deletion replica i's tombstone made (its delete floor,
 * or more): the caller's rule for sealing. */
static int held_everywhere(const struct lm *m, int i)
{
    for (int s = 0; s < NREP; s++) {
        if (!(m[s].flags & GLIFE_DELETED))
            return 0;
        for (int r = 0; r < NREP; r++)
            for (int k = 0; k < 2; k++)
                if (m[s].d[r][k] < m[i].d[r][k])
                    return 0;
    }
    return 1;
}

/* One random operation at replica i (store st[i], model m[i]). */
static void random_op(struct unit_rng *rng, struct gstore **st, struct lm *m, uint32_t id)
{
    int i = (int)rng_below(rng, NREP);
    uint64_t k = rng_below(rng, 100), seq = gstore_seq(st[i]);
    if (k < 45) {
        int64_t amount = rng_range(rng, 1, k < 5 ? (int64_t)1 << 40 : 1000);
        if (rng_below(rng, 3) == 0)
            amount = -amount;
        CHECK_EQ_I64(gstore_incr(st[i], id, i, amount), 0);
        m[i].e[i][amount > 0 ? 0 : 1] += amount > 0 ? amount : -amount;
    } else if (k < 55) {
        CHECK_EQ_I64(gstore_clear(st[i], id), 0);
        memcpy(m[i].f, m[i].e, sizeof m[i].f);
    } else if (k < 60) {
        CHECK_EQ_I64(gstore_delete(st[i], id), 0);
        memcpy(m[i].f, m[i].e, sizeof m[i].f);
        memcpy(m[i].d, m[i].e, sizeof m[i].d);
        m[i].flags = GLIFE_DELETED;
    } else if (k < 65) {
        int can = lm_dead(&m[i]) && !(m[i].flags & GLIFE_SEALED) && held_everywhere(m, i);
        if (!can)
            return;
        CHECK_EQ_I64(gstore_seal(st[i], id), 1);
        m[i].flags |= GLIFE_SEALED;
    } else {
        int j = (int)rng_below(rng, NREP);
        struct lm before = m[i];
        int rc = merge_full(st[i], st[j], id);
        lm_join(&m[i], &m[j]);
        int changed = memcmp(&before, &m[i], sizeof before) != 0;
        CHECK_EQ_I64(rc > 0, changed);
        CHECK_EQ_I64(gstore_seq(st[i]) > seq, changed);
    }
    check_lm(st[i], id, &m[i], "after an operation");
}

/* Random histories of increments, clears, deletions, seals and merges at NREP replicas:
 * every state equals the model's after every step, and the replicas converge to the
 * join of all of them whatever the order of the final exchange. */
static void test_life_random(void)
{
    struct unit_rng rng;
    rng_init(&rng, "life_random");
    long rounds = unit_iters(2000);
    for (long round = 0; round < rounds; round++) {
        unit_context("round %ld", round);
        struct gstore *st[NREP];
        struct lm m[NREP];
        uint32_t id = 0;
        for (int i = 0; i < NREP; i++)
            st[i] = store_new(&id);
        memset(m, 0, sizeof m);
        int ops = (int)rng_range(&rng, 1, 60);
        for (int op = 0; op < ops; op++)
            random_op(&rng, st, m, id);
        struct lm all = m[0];
        for (int i = 1; i < NREP; i++)
            lm_join(&all, &m[i]);
        /* Gossip in a random order until every replica has everything (with repeats). */
        for (int pass = 0; pass < 3; pass++)
            for (int x = 0; x < NREP * NREP; x++) {
                int i = (int)rng_below(&rng, NREP), j = (int)rng_below(&rng, NREP);
                merge_full(st[i], st[j], id);
            }
        for (int i = 0; i < NREP; i++)
            for (int j = 0; j < NREP; j++)
                merge_full(st[i], st[j], id);
        for (int i = 0; i < NREP; i++) {
            check_lm(st[i], id, &all, "converged");
            CHECK_EQ_DBL(gstore_total(st[i]), (double)lm_value(&all));
            CHECK_EQ_U64(gstore_dead_total(st[i]), lm_dead(&all));
        }
        for (int i = 0; i < NREP; i++)
            gstore_free(st[i]);
    }
    unit_context("%s", "");
}

/* For random states a, b, c: merges in every order give the same state (commutative,
 * associative), and merging a state twice changes nothing the second time. */
static void test_life_laws(void)
{
    struct unit_rng rng;
    rng_init(&rng, "life_laws");
    long rounds = unit_iters(2000);
    for (long round = 0; round < rounds; round++) {
        unit_context("round %ld", round);
        struct gstore *st[NREP];
        struct lm m[NREP];
        uint32_t id = 0;
        for (int i = 0; i < NREP; i++)
            st[i] = store_new(&id);
        memset(m, 0, sizeof m);
        int ops = (int)rng_range(&rng, 1, 40);
        for (int op = 0; op < ops; op++)
            random_op(&rng, st, m, id);
        /* Six stores, each merging states 0, 1, 2 in one of the orders. */
        static const int orders[6][3] = {{0, 1, 2}, {0, 2, 1}, {1, 0, 2},
                                         {1, 2, 0}, {2, 0, 1}, {2, 1, 0}};
        struct lm want = m[0], got;
        lm_join(&want, &m[1]);
        lm_join(&want, &m[2]);
        for (int o = 0; o < 6; o++) {
            struct gstore *x = store_new(&id);
            for (int s = 0; s < 3; s++)
                merge_full(x, st[orders[o][s]], id);
            CHECK_EQ_I64(merge_full(x, st[orders[o][1]], id), 0); /* idempotent */
            lm_read(x, id, &got);
            CHECK(memcmp(&got, &want, sizeof got) == 0);
            check_lm(x, id, &want, "an order");
            gstore_free(x);
        }
        for (int i = 0; i < NREP; i++)
            gstore_free(st[i]);
    }
    unit_context("%s", "");
}

/* Merges src's counter "c" into dst's, creating it there first when it has none (as
 * replication does); nothing when src has none. */
static void merge_named(struct gstore *dst, const struct gstore *src)
{
    uint32_t from = gstore_find(src, "c", 1);
    if (from == GSTORE_NONE)
        return;
    static struct full s;
    full_export(src, from, &s);
    uint32_t to = gstore_create(dst, "c", 1);
    CHECK_EQ_I64(gstore_merge_life_check(dst, to, s.e, s.ne, NULL, 0, &s.life), 0);
    CHECK(gstore_merge_life(dst, to, s.e, s.ne, NULL, 0, &s.life, 0) >= 0);
}

/* Random histories through a whole lifecycle: counts, a deletion everyone receives, seals
 * everywhere, then each replica drops the tombstone or not and counts the name again or
 * not; gossip in a random order. Every replica ends with the join of the new lives alone
 * (the sealed tombstone swallows none of them, whichever way it meets them), or with the
 * tombstone when nobody counted again. */
static void test_new_life_random(void)
{
    struct unit_rng rng;
    rng_init(&rng, "new_life_random");
    long rounds = unit_iters(1000);
    for (long round = 0; round < rounds; round++) {
        unit_context("round %ld", round);
        struct gstore *st[NREP];
        uint32_t id = 0;
        for (int i = 0; i < NREP; i++)
            st[i] = store_new(&id);
        for (int k = (int)rng_below(&rng, 10); k >= 0; k--) {
            int i = (int)rng_below(&rng, NREP);
            CHECK_EQ_I64(gstore_incr(st[i], id, i, rng_range(&rng, -50, 100) | 1), 0);
        }
        int del = (int)rng_below(&rng, NREP);
        for (int i = 0; i < NREP; i++)
            merge_named(st[del], st[i]);
        CHECK_EQ_I64(gstore_delete(st[del], id), 0);
        for (int i = 0; i < NREP; i++)
            merge_named(st[i], st[del]);
        for (int i = 0; i < NREP; i++)
            CHECK_EQ_I64(gstore_seal(st[i], id), 1);
        /* The new lives, and what their join must be. */
        struct lm want;
        memset(&want, 0, sizeof want);
        int lives = 0;
        for (int i = 0; i < NREP; i++) {
            if (rng_below(&rng, 2))
                continue; /* keeps its tombstone a while */
            gstore_drop(st[i], id);
            if (rng_below(&rng, 3) == 0)
                continue; /* dropped, the name not counted again */
            uint32_t nid = gstore_create(st[i], "c", 1);
            int64_t amount = rng_range(&rng, 1, 30);
            CHECK_EQ_I64(gstore_incr(st[i], nid, i, amount), 0);
            want.e[i][0] = amount;
            lives++;
        }
        for (int x = 0; x < NREP * NREP * 2; x++)
            merge_named(st[rng_below(&rng, NREP)], st[rng_below(&rng, NREP)]);
        for (int i = 0; i < NREP; i++)
            for (int j = 0; j < NREP; j++)
                merge_named(st[i], st[j]);
        for (int i = 0; i < NREP; i++) {
            uint32_t cid = gstore_find(st[i], "c", 1);
            if (cid == GSTORE_NONE) { /* every replica dropped it, nobody counted again */
                CHECK(!lives);
                continue;
            }
            if (lives)
                check_lm(st[i], cid, &want, "the new lives");
            else
                CHECK(gstore_dead(st[i], cid));
        }
        for (int i = 0; i < NREP; i++)
            gstore_free(st[i]);
    }
    unit_context("%s", "");
}

/* ---------------------------------------------------------------- dropping */

static void test_drop_basic(void)
{
    struct gstore *st = gstore_new();
    int r = gstore_replica(st, "r0", 2);
    uint32_t a = gstore_create(st, "a", 1), b = gstore_create(st, "b", 1),
             c = gstore_create(st, "c", 1);
    CHECK_EQ_I64(gstore_incr(st, a, r, 1), 0);
    CHECK_EQ_I64(gstore_incr(st, b, r, 20), 0);
    CHECK_EQ_I64(gstore_incr(st, c, r, 300), 0);
    CHECK_EQ_I64(gstore_fold(st, b, r, gstore_replica(st, "r1", 2)), 1);
    CHECK_EQ_I64(gstore_delete(st, b), 0);
    CHECK_EQ_U64(gstore_dead_total(st), 1);
    CHECK_EQ_U64(gstore_folded_total(st), 1);
    gstore_drop(st, b);
    CHECK(!gstore_exists(st, b));
    CHECK(gstore_exists(st, a) && gstore_exists(st, c));
    CHECK_EQ_U64(gstore_find(st, "b", 1), GSTORE_NONE);
    CHECK_EQ_U64(gstore_find(st, "c", 1), c);
    CHECK_EQ_U64(gstore_count(st), 3);
    CHECK_EQ_U64(gstore_live(st), 2);
    CHECK_EQ_U64(gstore_dead_total(st), 0);
    CHECK_EQ_U64(gstore_folded_total(st), 0);
    CHECK_EQ_DBL(gstore_total(st), 301);
    CHECK_EQ_U64(gstore_replica_entries(st, 1), 0);
    /* The change list no longer holds it. */
    int seen = 0;
    for (uint32_t id = gstore_changed_after(st, 0); id != GSTORE_NONE;
         id = gstore_changed_next(st, id)) {
        CHECK(id != b);
        seen++;
    }
    CHECK_EQ_I64(seen, 2);
    /* The name counted again starts from zero, in the freed id, without tombstones. */
    uint32_t b2 = gstore_create(st, "b", 1);
    CHECK_EQ_U64(b2, b);
    CHECK_EQ_U64(gstore_live(st), 3);
    CHECK(gstore_value(st, gstore_counter(st, b2)) == 0);
    CHECK_EQ_U64(gstore_counter_entries(gstore_counter(st, b2)), 0);
    CHECK(!gstore_folded(st, b2, r));
    struct glife l;
    CHECK_EQ_I64(gstore_life(st, b2, &l), 0);
    CHECK_EQ_U64(gstore_changed_after(st, gstore_seq(st) - 1), b2);
    /* Dropping the highest ids shrinks the count. */
    gstore_drop(st, c);
    CHECK_EQ_U64(gstore_count(st), 2);
    gstore_drop(st, a);
    CHECK_EQ_U64(gstore_count(st), 2);
    gstore_drop(st, b2);
    CHECK_EQ_U64(gstore_count(st), 0);
    CHECK_EQ_U64(gstore_live(st), 0);
    CHECK_EQ_U64(gstore_changed_after(st, 0), GSTORE_NONE);
    CHECK_EQ_U64(gstore_create(st, "z", 1), 0);
    gstore_free(st);
}

/* Random creations, increments, deletions and drops against a model of names and values:
 * lookups, ids, counts, walks, the change list and the aggregates stay exact. */
#define DROP_NAMES 400
static void test_drop_random(void)
{
    struct unit_rng rng;
    rng_init(&rng, "drop_random");
    long rounds = unit_iters(60);
    for (long round = 0; round < rounds; round++) {
        unit_context("round %ld", round);
        struct gstore *st = gstore_new();
        int r0 = gstore_replica(st, "r0", 2), r1 = gstore_replica(st, "r1", 2);
        static uint32_t idof[DROP_NAMES];
        static int64_t val[DROP_NAMES];
        static int folded[DROP_NAMES];
        for (int i = 0; i < DROP_NAMES; i++)
            idof[i] = GSTORE_NONE;
        char name[16];
        for (int op = 0; op < 5000; op++) {
            int i = (int)rng_below(&rng, DROP_NAMES);
            size_t len = (size_t)snprintf(name, sizeof name, "n%d", i);
            uint64_t k = rng_below(&rng, 100);
            if (idof[i] == GSTORE_NONE) {
                idof[i] = gstore_create(st, name, len);
                REQUIRE(idof[i] != GSTORE_NONE);
                val[i] = 0;
                folded[i] = 0;
            } else if (k < 50) {
                int64_t amount = rng_range(&rng, -100, 100);
                CHECK_EQ_I64(gstore_incr(st, idof[i], k < 25 ? r0 : r1, amount), 0);
                val[i] += amount;
            } else if (k < 60) {
                int rc = gstore_fold(st, idof[i], r0, r1);
                CHECK(rc >= 0);
                folded[i] |= rc == 1;
            } else if (k < 70) {
                CHECK_EQ_I64(gstore_clear(st, idof[i]), 0);
                val[i] = 0;
            } else {
                gstore_drop(st, idof[i]);
                idof[i] = GSTORE_NONE;
            }
        }
        uint32_t live = 0, top = 0;
        uint64_t nfolded = 0;
        double total = 0;
        for (int i = 0; i < DROP_NAMES; i++) {
            size_t len = (size_t)snprintf(name, sizeof name, "n%d", i);
            CHECK_EQ_U64(gstore_find(st, name, len), idof[i]);
            if (idof[i] == GSTORE_NONE)
                continue;
            live++;
            top = idof[i] + 1 > top ? idof[i] + 1 : top;
            CHECK(gstore_exists(st, idof[i]));
            CHECK(gstore_value(st, gstore_counter(st, idof[i])) == val[i]);
            CHECK_EQ_I64(gstore_folded(st, idof[i], r0), folded[i]);
            nfolded += (uint64_t)folded[i];
            total += (double)val[i];
        }
        CHECK_EQ_U64(gstore_live(st), live);
        CHECK_EQ_U64(gstore_count(st), top);
        CHECK_EQ_DBL(gstore_total(st), total);
        CHECK_EQ_U64(gstore_folded_total(st), nfolded);
        uint32_t walked = 0, listed = 0;
        for (uint32_t id = 0; id < gstore_count(st); id++)
            walked += (uint32_t)gstore_exists(st, id);
        for (uint32_t id = gstore_changed_after(st, 0); id != GSTORE_NONE;
             id = gstore_changed_next(st, id)) {
            CHECK(gstore_exists(st, id));
            listed++;
        }
        CHECK_EQ_U64(walked, live);
        CHECK_EQ_U64(listed, live);
        gstore_free(st);
    }
    unit_context("%s", "");
}

/* Creates n counters (a few entries each), deletes and drops them all (in id order, or
 * shuffled): @return gstore_memory at its peak. */
static size_t fill_and_drop(struct gstore *st, uint32_t n, struct unit_rng *rng, int shuffled)
{
    char name[32];
    uint32_t *ids = malloc((size_t)n * sizeof *ids);
    for (uint32_t i = 0; i < n; i++) {
        ids[i] = gstore_create(st, name, (size_t)snprintf(name, sizeof name, "counter:%u", i));
        gstore_incr(st, ids[i], (int)(i % 3), (int64_t)(i % 1000) + 1);
        if (i % 4 == 0)
            gstore_incr(st, ids[i], (int)(i % 3 + 1) % 3, -1);
    }
    size_t peak = gstore_memory(st);
    for (uint32_t i = n; shuffled && i > 1; i--) {
        uint32_t j = (uint32_t)rng_below(rng, i), t = ids[i - 1];
        ids[i - 1] = ids[j];
        ids[j] = t;
    }
    for (uint32_t i = 0; i < n; i++) {
        gstore_delete(st, ids[i]);
        gstore_drop(st, ids[i]);
    }
    free(ids);
    return peak;
}

/* 1M counters created, deleted and dropped: the store's memory returns to within 10% of
 * what it held before, twice (ids and blocks are reused the second time). */
static void test_drop_memory(void)
{
    struct unit_rng rng;
    rng_init(&rng, "drop_memory");
    uint32_t n = (uint32_t)unit_iters(1000000);
    struct gstore *st = gstore_new();
    for (int i = 0; i < 3; i++) {
        char name[8];
        gstore_replica(st, name, (size_t)snprintf(name, sizeof name, "r%d", i));
    }
    gstore_expect_replicas(st, 3);
    size_t before = gstore_memory(st);
    for (int pass = 0; pass < 2; pass++) {
        size_t peak = fill_and_drop(st, n, &rng, pass);
        size_t after = gstore_memory(st);
        printf("  pass %d: %u counters, memory before %zu, peak %zu (%.1f bytes a counter), "
               "after %zu\n",
               pass, n, before, peak, (double)(peak - before) / n, after);
        CHECK(after <= before + before / 10);
        CHECK_EQ_U64(gstore_count(st), 0);
        CHECK_EQ_U64(gstore_live(st), 0);
        CHECK_EQ_U64(gstore_dead_total(st), 0);
        CHECK_EQ_DBL(gstore_total(st), 0);
    }
    /* A store kept half full: the other half's memory is reused, not grown. */
    uint32_t half = n / 2;
    char name[32];
    for (uint32_t i = 0; i < n; i++)
        gstore_incr(st, gstore_create(st, name, (size_t)snprintf(name, sizeof name, "k%u", i)), 0,
                    1);
    size_t full = gstore_memory(st);
    for (uint32_t i = 0; i < n; i += 2)
        gstore_drop(st, gstore_find(st, name, (size_t)snprintf(name, sizeof name, "k%u", i)));
    CHECK_EQ_U64(gstore_live(st), n - half);
    for (uint32_t i = 0; i < half; i++)
        gstore_incr(st, gstore_create(st, name, (size_t)snprintf(name, sizeof name, "m%u", i)), 0,
                    1);
    CHECK_EQ_U64(gstore_count(st), n);
    CHECK(gstore_memory(st) <= full + full / 10);
    gstore_free(st);
}

/* A store that keeps W counters while N = 10 W (then 4 W) more are created, deleted and
 * dropped ends as big as it began, within 10% and one arena chunk (1 MB: the chunk that
 * held the last of W and the first of N keeps its freed part): its table and id array
 * shrink back to the sizes growing to W would have made, whatever the order of drops. */
static void test_drop_memory_warm(void)
{
    uint32_t n = (uint32_t)unit_iters(1000000);
    for (uint32_t w = n / 10; w <= n / 4; w += n / 4 - n / 10) {
        struct gstore *st = gstore_new();
        int rep = gstore_replica(st, "r0", 2);
        char name[32];
        for (uint32_t i = 0; i < w; i++)
            gstore_incr(st, gstore_create(st, name, (size_t)snprintf(name, sizeof name, "w%u", i)),
                        rep, 1);
        size_t before = gstore_memory(st);
        uint32_t *ids = malloc((size_t)n * sizeof *ids);
        CHECK(ids != NULL);
        for (uint32_t i = 0; i < n; i++) {
            ids[i] = gstore_create(st, name, (size_t)snprintf(name, sizeof name, "c%u", i));
            gstore_incr(st, ids[i], rep, 1);
        }
        for (uint32_t i = 0; i < n; i++)
            gstore_delete(st, ids[i]);
        for (uint32_t i = 0; i < n; i++) /* the lowest first, as the GC's walk does */
            gstore_drop(st, ids[i]);
        size_t after = gstore_memory(st);
        printf("  %u kept, %u dropped: memory before %zu, after %zu\n", w, n, before, after);
        CHECK(after <= before + before / 10 + (1u << 20));
        CHECK_EQ_U64(gstore_live(st), w);
        free(ids);
        gstore_free(st);
    }
}

/* The process' resident set in bytes (/proc/self/statm), 0 when unknown. */
static size_t rss_bytes(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    unsigned long size = 0, res = 0;
    if (!f)
        return 0;
    if (fscanf(f, "%lu %lu", &size, &res) != 2)
        res = 0;
    fclose(f);
    return (size_t)res * (size_t)sysconf(_SC_PAGESIZE);
}

/* The same seen from outside: after 1M counters created, deleted and dropped, and
 * malloc_trim, the process' RSS is within 10% of what it was before. Only in the plain
 * build at full scale (ASan's quarantine and valgrind keep freed memory on purpose). */
static void test_drop_rss(void)
{
#if defined(__SANITIZE_ADDRESS__)
    printf("  skipped under ASan (its quarantine holds freed memory)\n");
    return;
#endif
    if (unit_g.scale < 1) {
        printf("  skipped at scale %.2f\n", unit_g.scale);
        return;
    }
    struct unit_rng rng;
    rng_init(&rng, "drop_rss");
    struct gstore *st = gstore_new();
    for (int i = 0; i < 3; i++) {
        char name[8];
        gstore_replica(st, name, (size_t)snprintf(name, sizeof name, "r%d", i));
    }
    fill_and_drop(st, 1000, &rng, 1); /* the store's own small arrays, as a running one has */
    printf("  measuring\n");          /* and stdout's buffer */
    malloc_trim(0);
    size_t before = rss_bytes();
    size_t peak = fill_and_drop(st, 1000000, &rng, 1);
    malloc_trim(0);
    size_t after = rss_bytes();
    printf("  RSS before %zu KB, store at its peak %zu KB, RSS after %zu KB\n", before / 1024,
           peak / 1024, after / 1024);
    CHECK(before > 0);
    CHECK(after <= before + before / 10);
    gstore_free(st);
}

UNIT_MAIN("test_gstore_life", UNIT_CASE(test_clear_basic), UNIT_CASE(test_partition_example),
          UNIT_CASE(test_concurrent_clears), UNIT_CASE(test_delete_revive),
          UNIT_CASE(test_life_only_change), UNIT_CASE(test_seal_new_life),
          UNIT_CASE(test_fold_floors), UNIT_CASE(test_life_checks), UNIT_CASE(test_life_random),
          UNIT_CASE(test_life_laws), UNIT_CASE(test_new_life_random), UNIT_CASE(test_drop_basic),
          UNIT_CASE(test_drop_random), UNIT_CASE(test_drop_memory),
          UNIT_CASE(test_drop_memory_warm), UNIT_CASE(test_drop_rss))
