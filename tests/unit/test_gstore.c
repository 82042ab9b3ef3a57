/*
 * test_gstore.c - unit tests of the CRDT store (core/store/gstore.c).
 *
 * The merge laws are checked as properties over thousands of random states, each one
 * compared with a model kept by the test (per replica: pos, neg), never with the store's
 * own idea of itself. The change list is compared with a brute-force scan of every
 * counter's mseq. Overflow and capacity limits are checked at their exact edges.
 *
 * The random states depend on the printed seed (COUNTERD_TEST_SEED replays a run);
 * COUNTERD_TEST_SCALE scales the iteration counts. Never include this from core/.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store/gstore.h"
#include "unit.h"

#define MAXR 16 /* replicas in the random property tests */

/* The model of one counter: what each replica contributed. */
struct mstate {
    int64_t pos[MAXR], neg[MAXR];
    uint8_t present[MAXR];
};

/* A store with replicas "r0".."r<nrep-1>" interned in that order, so that replica k has the
 * same small integer in every store of a test and entries can move between stores. The
 * counter "c" is created after the first `before` replicas are interned (its initial room
 * depends on that), the rest after it. */
static struct gstore *new_store(int nrep, int before, uint32_t *id)
{
    struct gstore *st = gstore_new();
    char name[16];
    for (int i = 0; i < nrep; i++) {
        if (i == before && id)
            *id = gstore_create(st, "c", 1);
        int n = snprintf(name, sizeof name, "r%d", i);
        int rep = gstore_replica(st, name, (size_t)n);
        CHECK_EQ_I64(rep, i);
    }
    if (id && before >= nrep)
        *id = gstore_create(st, "c", 1);
    if (id)
        CHECK(*id != GSTORE_NONE);
    return st;
}

/* Reads counter id into a model, checking the entries are well formed. */
static void export_state(const struct gstore *st, uint32_t id, int nrep, struct mstate *m)
{
    memset(m, 0, sizeof *m);
    const struct gcounter *c = gstore_counter(st, id);
    unsigned n = gstore_counter_entries(c);
    for (unsigned i = 0; i < n; i++) {
        struct gentry e;
        gstore_counter_entry(c, i, &e);
        CHECK(e.rep >= 0 && e.rep < nrep);
        if (e.rep < 0 || e.rep >= nrep || e.rep >= MAXR)
            continue;
        CHECK(!m->present[e.rep]); /* one entry per replica */
        CHECK(e.pos >= 0);
        CHECK(e.neg >= 0);
        m->present[e.rep] = 1;
        m->pos[e.rep] = e.pos;
        m->neg[e.rep] = e.neg;
    }
}

/* The counter's entries as an array (in the store's order). */
static size_t export_entries(const struct gstore *st, uint32_t id, struct gentry *out)
{
    const struct gcounter *c = gstore_counter(st, id);
    unsigned n = gstore_counter_entries(c);
    for (unsigned i = 0; i < n; i++)
        gstore_counter_entry(c, i, &out[i]);
    return n;
}

static int state_eq(const struct mstate *a, const struct mstate *b, int nrep)
{
    for (int r = 0; r < nrep; r++) {
        if (a->present[r] != b->present[r] || a->pos[r] != b->pos[r] || a->neg[r] != b->neg[r])
            return 0;
    }
    return 1;
}

static void model_join(const struct mstate *a, const struct mstate *b, struct mstate *out)
{
    struct mstate j;
    for (int r = 0; r < MAXR; r++) {
        j.present[r] = a->present[r] | b->present[r];
        j.pos[r] = a->pos[r] > b->pos[r] ? a->pos[r] : b->pos[r];
        j.neg[r] = a->neg[r] > b->neg[r] ? a->neg[r] : b->neg[r];
    }
    *out = j;
}

/* Replicas whose entry differs between old and joined: what gstore_merge must report. */
static int model_changed(const struct mstate *old, const struct mstate *joined, int nrep)
{
    int n = 0;
    for (int r = 0; r < nrep; r++)
        if (old->present[r] != joined->present[r] || old->pos[r] != joined->pos[r] ||
            old->neg[r] != joined->neg[r])
            n++;
    return n;
}

/* Checks counter id against the model: entries, value, per-replica net. */
static void check_state(const struct gstore *st, uint32_t id, const struct mstate *want, int nrep,
                        const char *what)
{
    struct mstate got;
    export_state(st, id, nrep, &got);
    const struct gcounter *c = gstore_counter(st, id);
    __int128 sp = 0, sn = 0;
    unsigned present = 0;
    int any_neg = 0;
    for (int r = 0; r < nrep; r++) {
        if (got.present[r] != want->present[r] || got.pos[r] != want->pos[r] ||
            got.neg[r] != want->neg[r])
            unit_fail(__FILE__, __LINE__,
                      "%s: replica %d is (present %d, pos %" PRId64 ", neg %" PRId64
                      "), expected (present %d, pos %" PRId64 ", neg %" PRId64 ")",
                      what, r, got.present[r], got.pos[r], got.neg[r], want->present[r],
                      want->pos[r], want->neg[r]);
        sp += want->pos[r];
        sn += want->neg[r];
        present += want->present[r];
        any_neg |= want->neg[r] != 0;
        CHECK_EQ_I64(gstore_counter_net(c, r), want->pos[r] - want->neg[r]);
    }
    CHECK_EQ_I64(gstore_counter_net(c, nrep), 0); /* a replica without an entry */
    CHECK_EQ_U64(gstore_counter_entries(c), present);
    CHECK_EQ_I64(gstore_counter_value(c), gstore_clamp(sp - sn, NULL));
    CHECK(gstore_value(st, c) == sp - sn); /* exact, whatever the range */
    if (any_neg)
        CHECK(gstore_counter_has_neg(c));
}

/* Random non-zero amount: mostly small, sometimes large, about a third negative. */
static int64_t random_amount(struct unit_rng *rng)
{
    uint64_t cls = rng_below(rng, 100);
    int64_t mag = cls < 70   ? rng_range(rng, 1, 1000)
                  : cls < 95 ? rng_range(rng, 1, (int64_t)1 << 32)
                             : rng_range(rng, 1, (int64_t)1 << 40);
    return rng_below(rng, 3) == 0 ? -mag : mag;
}

/* Applies up to max_ops random increments to counter id, mirrored in the model. */
static void random_incrs(struct unit_rng *rng, struct gstore *st, uint32_t id, int nrep,
                         struct mstate *m, int max_ops)
{
    int ops = (int)rng_below(rng, (uint64_t)max_ops + 1);
    for (int k = 0; k < ops; k++) {
        int rep = (int)rng_below(rng, (uint64_t)nrep);
        int64_t amount = random_amount(rng);
        uint64_t seq0 = gstore_seq(st);
        int rc = gstore_incr(st, id, rep, amount);
        CHECK_EQ_I64(rc, 0);
        if (rc != 0)
            continue;
        m->present[rep] = 1;
        if (amount > 0)
            m->pos[rep] += amount;
        else
            m->neg[rep] -= amount;
        CHECK(gstore_seq(st) > seq0);
        CHECK_EQ_U64(gstore_counter_mseq(gstore_counter(st, id)), gstore_seq(st));
    }
}

static void shuffle(struct unit_rng *rng, struct gentry *e, size_t n)
{
    for (size_t i = n; i > 1; i--) {
        size_t j = (size_t)rng_below(rng, i);
        struct gentry t = e[i - 1];
        e[i - 1] = e[j];
        e[j] = t;
    }
}

/* Merges in[0..n) into a fresh store's counter and checks the outcome against want. */
static void check_merge_fresh(int nrep, const struct gentry *in, size_t n,
                              const struct mstate *want, const char *what)
{
    uint32_t id = GSTORE_NONE;
    struct gstore *st = new_store(nrep, nrep, &id);
    CHECK_EQ_I64(gstore_merge_check(st, GSTORE_NONE, in, n), 0);
    CHECK_EQ_I64(gstore_merge_check(st, id, in, n), 0);
    int rc = gstore_merge(st, id, in, n);
    struct mstate empty;
    memset(&empty, 0, sizeof empty);
    CHECK_EQ_I64(rc, model_changed(&empty, want, nrep));
    check_state(st, id, want, nrep, what);
    gstore_free(st);
}

/* ---------------------------------------------------------------- merge laws */

/*
 * For random states a, b, c (each built by random increments in its own store):
 * merge is commutative, associative and idempotent, equals the per-replica max of the
 * model, dominates both inputs, reports the number of replica entries it changed, and
 * bumps the sequence number exactly when something changed.
 */
static void test_merge_laws(void)
{
    struct unit_rng rng;
    rng_init(&rng, "merge_laws");
    long iters = unit_iters(50000);
    struct gentry ea[MAXR], eb[MAXR], ec[MAXR], eab[MAXR], ebc[MAXR], all[6 * MAXR];
    for (long it = 0; it < iters; it++) {
        unit_context("iteration %ld", it);
        int nrep = 1 + (int)rng_below(&rng, MAXR);
        struct mstate ma, mb, mc, mab, mbc, mabc;
        memset(&ma, 0, sizeof ma);
        memset(&mb, 0, sizeof mb);
        memset(&mc, 0, sizeof mc);
        uint32_t ida, idb, idc;
        struct gstore *a = new_store(nrep, (int)rng_below(&rng, (uint64_t)nrep + 1), &ida);
        struct gstore *b = new_store(nrep, (int)rng_below(&rng, (uint64_t)nrep + 1), &idb);
        struct gstore *c = new_store(nrep, (int)rng_below(&rng, (uint64_t)nrep + 1), &idc);
        random_incrs(&rng, a, ida, nrep, &ma, 24);
        random_incrs(&rng, b, idb, nrep, &mb, 24);
        random_incrs(&rng, c, idc, nrep, &mc, 24);
        check_state(a, ida, &ma, nrep, "state a");
        check_state(b, idb, &mb, nrep, "state b");
        check_state(c, idc, &mc, nrep, "state c");

        size_t na = export_entries(a, ida, ea), nb = export_entries(b, idb, eb),
               nc = export_entries(c, idc, ec);
        shuffle(&rng, ea, na);
        shuffle(&rng, eb, nb);
        shuffle(&rng, ec, nc);
        model_join(&ma, &mb, &mab);
        model_join(&mb, &mc, &mbc);
        model_join(&mab, &mc, &mabc);

        /* Commutative, in fresh stores: a then b, b then a. */
        uint32_t id1, id2;
        struct gstore *s1 = new_store(nrep, (int)rng_below(&rng, (uint64_t)nrep + 1), &id1);
        struct gstore *s2 = new_store(nrep, (int)rng_below(&rng, (uint64_t)nrep + 1), &id2);
        CHECK(gstore_merge(s1, id1, ea, na) >= 0);
        CHECK(gstore_merge(s1, id1, eb, nb) >= 0);
        CHECK(gstore_merge(s2, id2, eb, nb) >= 0);
        CHECK(gstore_merge(s2, id2, ea, na) >= 0);
        check_state(s1, id1, &mab, nrep, "merge(a, b) in a fresh store");
        check_state(s2, id2, &mab, nrep, "merge(b, a) in a fresh store");
        {
            struct mstate x, y;
            export_state(s1, id1, nrep, &x);
            export_state(s2, id2, nrep, &y);
            CHECK(state_eq(&x, &y, nrep));
        }

        /* Commutative in place: b into a, a into b; the return is the number of replica
         * entries that changed, and the sequence number moves only on a change. */
        size_t nab = export_entries(s1, id1, eab);
        uint64_t seq0 = gstore_seq(a);
        int rc = gstore_merge(a, ida, eb, nb);
        CHECK_EQ_I64(rc, model_changed(&ma, &mab, nrep));
        if (rc > 0) {
            CHECK(gstore_seq(a) > seq0);
            CHECK_EQ_U64(gstore_counter_mseq(gstore_counter(a, ida)), gstore_seq(a));
        } else {
            CHECK_EQ_U64(gstore_seq(a), seq0);
        }
        check_state(a, ida, &mab, nrep, "b merged into a");
        seq0 = gstore_seq(b);
        rc = gstore_merge(b, idb, ea, na);
        CHECK_EQ_I64(rc, model_changed(&mb, &mab, nrep));
        CHECK(rc > 0 ? gstore_seq(b) > seq0 : gstore_seq(b) == seq0);
        check_state(b, idb, &mab, nrep, "a merged into b");

        /* Idempotent: merging the same states again changes nothing and says so. */
        uint64_t mseq0 = gstore_counter_mseq(gstore_counter(a, ida));
        seq0 = gstore_seq(a);
        CHECK_EQ_I64(gstore_merge(a, ida, eb, nb), 0);
        CHECK_EQ_I64(gstore_merge(a, ida, ea, na), 0);
        CHECK_EQ_I64(gstore_merge(a, ida, eab, nab), 0);
        CHECK_EQ_U64(gstore_seq(a), seq0);
        CHECK_EQ_U64(gstore_counter_mseq(gstore_counter(a, ida)), mseq0);
        CHECK_EQ_U64(gstore_changed_after(a, seq0), GSTORE_NONE);
        check_state(a, ida, &mab, nrep, "a after idempotent merges");
        /* Its own entries merged into itself. */
        {
            struct gentry self[MAXR];
            size_t ns = export_entries(a, ida, self);
            shuffle(&rng, self, ns);
            CHECK_EQ_I64(gstore_merge(a, ida, self, ns), 0);
            CHECK_EQ_U64(gstore_seq(a), seq0);
        }

        /* Dominance: the merge is >= each input, per replica. */
        {
            struct mstate x;
            export_state(a, ida, nrep, &x);
            for (int r = 0; r < nrep; r++) {
                CHECK(x.pos[r] >= ma.pos[r] && x.pos[r] >= mb.pos[r]);
                CHECK(x.neg[r] >= ma.neg[r] && x.neg[r] >= mb.neg[r]);
                CHECK(x.present[r] >= (ma.present[r] | mb.present[r]));
            }
        }

        /* Associative: (a + b) + c == a + (b + c), both equal to the model. */
        uint32_t id3, id4, id5;
        struct gstore *s3 = new_store(nrep, (int)rng_below(&rng, (uint64_t)nrep + 1), &id3);
        CHECK(gstore_merge(s3, id3, eab, nab) >= 0);
        CHECK(gstore_merge(s3, id3, ec, nc) >= 0);
        struct gstore *s4 = new_store(nrep, (int)rng_below(&rng, (uint64_t)nrep + 1), &id4);
        CHECK(gstore_merge(s4, id4, eb, nb) >= 0);
        CHECK(gstore_merge(s4, id4, ec, nc) >= 0);
        check_state(s4, id4, &mbc, nrep, "merge(b, c)");
        size_t nbc = export_entries(s4, id4, ebc);
        struct gstore *s5 = new_store(nrep, (int)rng_below(&rng, (uint64_t)nrep + 1), &id5);
        CHECK(gstore_merge(s5, id5, ea, na) >= 0);
        CHECK(gstore_merge(s5, id5, ebc, nbc) >= 0);
        check_state(s3, id3, &mabc, nrep, "merge(merge(a, b), c)");
        check_state(s5, id5, &mabc, nrep, "merge(a, merge(b, c))");

        /* One call with every entry, in any order, a replica appearing several times
         * (also with smaller values than its maximum): the same result. */
        size_t n = 0;
        memcpy(all + n, ea, na * sizeof *ea);
        n += na;
        memcpy(all + n, eb, nb * sizeof *eb);
        n += nb;
        memcpy(all + n, ec, nc * sizeof *ec);
        n += nc;
        memcpy(all + n, eab, nab * sizeof *eab);
        n += nab;
        shuffle(&rng, all, n);
        check_merge_fresh(nrep, all, n, &mabc, "merge of every entry in one call");
        /* Split into one entry per side (as /sync sends counts and decrements apart). */
        {
            struct gentry split[2 * MAXR];
            size_t ns = 0;
            for (size_t i = 0; i < nbc; i++) {
                split[ns++] = (struct gentry){ebc[i].rep, ebc[i].pos, 0};
                split[ns++] = (struct gentry){ebc[i].rep, 0, ebc[i].neg};
            }
            shuffle(&rng, split, ns);
            check_merge_fresh(nrep, split, ns, &mbc, "merge of split pos/neg entries");
        }

        gstore_free(a);
        gstore_free(b);
        gstore_free(c);
        gstore_free(s1);
        gstore_free(s2);
        gstore_free(s3);
        gstore_free(s4);
        gstore_free(s5);
    }
    unit_context("%s", "");
}

/*
 * Merges whose sums may leave the int64 range: never refused for that (only entries must
 * fit, and they always do); the merge is applied as the model says and the value, read
 * wide, is the model's exact (128-bit) one.
 */
static void test_merge_overflow_random(void)
{
    struct unit_rng rng;
    rng_init(&rng, "merge_overflow_random");
    long iters = unit_iters(20000);
    long beyond = 0, within = 0;
    for (long it = 0; it < iters; it++) {
        unit_context("iteration %ld", it);
        int nrep = 1 + (int)rng_below(&rng, 8);
        uint32_t id;
        struct gstore *st = new_store(nrep, (int)rng_below(&rng, (uint64_t)nrep + 1), &id);
        /* A starting state: each value at most INT64_MAX / nrep. */
        struct mstate m;
        memset(&m, 0, sizeof m);
        struct gentry init[8];
        size_t ni = 0;
        for (int r = 0; r < nrep; r++) {
            if (rng_below(&rng, 3) == 0)
                continue;
            init[ni] =
                (struct gentry){r, rng_range(&rng, 1, INT64_MAX / nrep),
                                rng_below(&rng, 2) ? rng_range(&rng, 1, INT64_MAX / nrep) : 0};
            m.present[r] = 1;
            m.pos[r] = init[ni].pos;
            m.neg[r] = init[ni].neg;
            ni++;
        }
        CHECK(gstore_merge(st, id, init, ni) >= 0);
        check_state(st, id, &m, nrep, "initial state");

        /* Input: 1..10 entries, values anywhere in [1, INT64_MAX] or small, no all-zero
         * entry (see test_merge_zero_entry for those). */
        struct gentry in[10];
        size_t n = 1 + (size_t)rng_below(&rng, 10);
        struct mstate min;
        memset(&min, 0, sizeof min);
        for (size_t k = 0; k < n; k++) {
            int r = (int)rng_below(&rng, (uint64_t)nrep);
            int64_t p =
                rng_below(&rng, 2) ? rng_range(&rng, 0, INT64_MAX) : rng_range(&rng, 0, 1000);
            int64_t q = rng_below(&rng, 2)   ? 0
                        : rng_below(&rng, 2) ? rng_range(&rng, 0, INT64_MAX)
                                             : rng_range(&rng, 0, 1000);
            if (p == 0 && q == 0)
                p = 1;
            in[k] = (struct gentry){r, p, q};
            min.present[r] = 1;
            if (p > min.pos[r])
                min.pos[r] = p;
            if (q > min.neg[r])
                min.neg[r] = q;
        }
        struct mstate j;
        model_join(&m, &min, &j);
        __int128 sp = 0, sn = 0;
        for (int r = 0; r < nrep; r++) {
            sp += j.pos[r];
            sn += j.neg[r];
        }
        if (sp > INT64_MAX || sn > INT64_MAX)
            beyond++;
        else
            within++;
        CHECK_EQ_I64(gstore_merge_check(st, id, in, n), 0);
        CHECK_EQ_I64(gstore_merge_check(st, GSTORE_NONE, in, n), 0);
        CHECK_EQ_I64(gstore_merge(st, id, in, n), model_changed(&m, &j, nrep));
        check_state(st, id, &j, nrep, "after a merge");
        gstore_free(st);
    }
    unit_context("%s", "");
    /* The generator must exercise both ranges, or the test proves nothing. */
    CHECK(beyond > iters / 10);
    CHECK(within > iters / 10);
}

/* ---------------------------------------------------------------- increments and edges */

static void test_incr_basic(void)
{
    uint32_t id;
    struct gstore *st = new_store(3, 0, &id);
    const struct gcounter *c = gstore_counter(st, id);
    size_t len = 0;
    CHECK_STR_EQ(gstore_counter_name(c, &len), "c");
    CHECK_EQ_U64(len, 1);
    CHECK_EQ_U64(gstore_counter_entries(c), 0);
    CHECK_EQ_I64(gstore_counter_value(c), 0);
    CHECK(!gstore_counter_has_neg(c));

    CHECK_EQ_I64(gstore_incr(st, id, 1, 5), 0);
    c = gstore_counter(st, id);
    CHECK_EQ_I64(gstore_counter_value(c), 5);
    CHECK_EQ_I64(gstore_counter_net(c, 1), 5);
    CHECK_EQ_I64(gstore_counter_net(c, 0), 0);
    CHECK_EQ_U64(gstore_counter_entries(c), 1);
    CHECK(!gstore_counter_has_neg(c));

    CHECK_EQ_I64(gstore_incr(st, id, 1, -7), 0);
    c = gstore_counter(st, id);
    CHECK_EQ_I64(gstore_counter_value(c), -2);
    CHECK_EQ_I64(gstore_counter_net(c, 1), -2);
    CHECK(gstore_counter_has_neg(c));
    struct gentry e;
    gstore_counter_entry(c, 0, &e);
    CHECK_EQ_I64(e.rep, 1);
    CHECK_EQ_I64(e.pos, 5);
    CHECK_EQ_I64(e.neg, 7);

    CHECK_EQ_I64(gstore_incr(st, id, 0, 10), 0);
    CHECK_EQ_I64(gstore_incr(st, id, 2, -1), 0);
    c = gstore_counter(st, id);
    CHECK_EQ_I64(gstore_counter_value(c), 7);
    CHECK_EQ_U64(gstore_counter_entries(c), 3);

    /* Amount 0 is no change: no entry, no new sequence number. */
    uint32_t id2 = gstore_create(st, "zero", 4);
    uint64_t seq0 = gstore_seq(st);
    CHECK_EQ_I64(gstore_incr(st, id2, 0, 0), 0);
    CHECK_EQ_U64(gstore_counter_entries(gstore_counter(st, id2)), 0);
    CHECK_EQ_U64(gstore_seq(st), seq0);
    CHECK_EQ_I64(gstore_incr(st, id, 0, 0), 0);
    CHECK_EQ_U64(gstore_seq(st), seq0);
    gstore_free(st);
}

static void test_incr_overflow(void)
{
    uint32_t id;
    struct gstore *st = new_store(3, 3, &id);
    CHECK_EQ_I64(gstore_incr(st, id, 0, INT64_MAX), 0);
    CHECK_EQ_I64(gstore_counter_value(gstore_counter(st, id)), INT64_MAX);
    uint64_t seq0 = gstore_seq(st);
    uint64_t mseq0 = gstore_counter_mseq(gstore_counter(st, id));

    /* The replica's own entry is what is bounded, not the sum. */
    CHECK_EQ_I64(gstore_incr(st, id, 0, 1), GSTORE_EOVERFLOW);
    const struct gcounter *c = gstore_counter(st, id);
    CHECK_EQ_U64(gstore_seq(st), seq0);
    CHECK_EQ_U64(gstore_counter_mseq(c), mseq0);
    CHECK_EQ_I64(gstore_incr(st, id, 1, 1), 0);
    CHECK_EQ_I64(gstore_incr(st, id, 1, INT64_MAX - 1), 0);
    CHECK_EQ_I64(gstore_incr(st, id, 1, 1), GSTORE_EOVERFLOW);
    c = gstore_counter(st, id);
    CHECK_EQ_I64(gstore_counter_value(c), INT64_MAX); /* clamped */
    CHECK(gstore_value(st, c) == (__int128)INT64_MAX * 2);
    CHECK_EQ_I64(gstore_counter_net(c, 1), INT64_MAX);

    /* Decrements have their own entry. */
    CHECK_EQ_I64(gstore_incr(st, id, 2, -INT64_MAX), 0);
    CHECK_EQ_I64(gstore_incr(st, id, 2, -1), GSTORE_EOVERFLOW);
    CHECK_EQ_I64(gstore_incr(st, id, 2, INT64_MIN), GSTORE_EOVERFLOW);
    CHECK_EQ_I64(gstore_incr(st, id, 0, -INT64_MAX), 0);
    c = gstore_counter(st, id);
    CHECK(gstore_value(st, c) == 0);
    CHECK_EQ_I64(gstore_counter_value(c), 0);
    CHECK_EQ_I64(gstore_counter_net(c, 2), -INT64_MAX);

    /* INT64_MIN on a fresh counter: its magnitude does not fit, refused whole. */
    uint32_t id2 = gstore_create(st, "min", 3);
    seq0 = gstore_seq(st);
    CHECK_EQ_I64(gstore_incr(st, id2, 0, INT64_MIN), GSTORE_EOVERFLOW);
    c = gstore_counter(st, id2);
    CHECK_EQ_U64(gstore_counter_entries(c), 0);
    CHECK_EQ_I64(gstore_counter_value(c), 0);
    CHECK(!gstore_counter_has_neg(c));
    CHECK_EQ_U64(gstore_seq(st), seq0);
    /* INT64_MIN + 1 is the largest decrement and fits; below the range, the value clamps. */
    CHECK_EQ_I64(gstore_incr(st, id2, 0, INT64_MIN + 1), 0);
    CHECK_EQ_I64(gstore_incr(st, id2, 1, INT64_MIN + 1), 0);
    c = gstore_counter(st, id2);
    CHECK_EQ_I64(gstore_counter_value(c), INT64_MIN);
    CHECK(gstore_value(st, c) == (__int128)(INT64_MIN + 1) * 2);
    gstore_free(st);
}

static void test_merge_overflow_edges(void)
{
    uint32_t id;
    struct gstore *st = new_store(3, 3, &id);

    /* Sums beyond int64 merge: the value is exact wide, clamped narrow. */
    struct gentry pos_ovf[] = {{0, INT64_MAX, 0}, {1, 1, 0}};
    CHECK_EQ_I64(gstore_merge_check(st, GSTORE_NONE, pos_ovf, 2), 0);
    CHECK_EQ_I64(gstore_merge(st, id, pos_ovf, 2), 2);
    const struct gcounter *c = gstore_counter(st, id);
    CHECK(gstore_value(st, c) == (__int128)INT64_MAX + 1);
    CHECK_EQ_I64(gstore_counter_value(c), INT64_MAX);
    int beyond = 0;
    CHECK_EQ_I64(gstore_clamp(gstore_value(st, c), &beyond), INT64_MAX);
    CHECK(beyond);
    struct gentry neg_ovf[] = {{0, 0, INT64_MAX}, {1, 0, 1}, {2, 0, INT64_MAX}};
    CHECK_EQ_I64(gstore_merge(st, id, neg_ovf, 3), 3);
    c = gstore_counter(st, id);
    CHECK(gstore_value(st, c) == -(__int128)INT64_MAX);
    CHECK_EQ_I64(gstore_clamp(gstore_value(st, c), &beyond), -INT64_MAX);
    CHECK(!beyond);

    /* Per replica the merge is a max: equal or repeated entries change nothing more. */
    struct gentry full[] = {{0, INT64_MAX, INT64_MAX}, {0, INT64_MAX, INT64_MAX}};
    CHECK_EQ_I64(gstore_merge(st, id, full, 2), 0);

    char s[48];
    CHECK_EQ_U64(gstore_wide_str((__int128)INT64_MAX * 255, s), 22);
    CHECK(strcmp(s, "2351959869397967830785") == 0);
    gstore_wide_str(-(__int128)INT64_MAX - 1, s);
    CHECK(strcmp(s, "-9223372036854775808") == 0);
    gstore_wide_str(0, s);
    CHECK(strcmp(s, "0") == 0);
    gstore_free(st);
}

/* A bare node id (an original-format peer's sum) counts only where above the node's
 * incarnations summed, and groups with them. */
static void test_bare_node_entries(void)
{
    struct gstore *st = gstore_new();
    int a1 = gstore_replica(st, "a~1", 3), a2 = gstore_replica(st, "a~2", 3);
    int a = gstore_replica(st, "a", 1), b = gstore_replica(st, "b", 1);
    CHECK_EQ_I64(gstore_replica_node(st, a1), gstore_replica_node(st, a));
    CHECK_EQ_I64(gstore_replica_node(st, a2), gstore_replica_node(st, a));
    CHECK(strcmp(gstore_node_name(st, gstore_replica_node(st, a1)), "a") == 0);
    uint32_t id = gstore_create(st, "c", 1);
    struct gentry e[] = {{a1, 5, 0}, {a2, 3, 1}, {a, 8, 0}, {b, 4, 0}};
    CHECK(gstore_merge(st, id, e, 4) > 0);
    const struct gcounter *c = gstore_counter(st, id);
    CHECK(gstore_value(st, c) == 7 + 4); /* a: max(5 + 3, 8) - 1; b: 4 */
    struct gentry more[] = {{a, 12, 0}};
    CHECK_EQ_I64(gstore_merge(st, id, more, 1), 1);
    c = gstore_counter(st, id);
    CHECK(gstore_value(st, c) == 11 + 4);
    struct gnode nodes[8];
    CHECK_EQ_U64(gstore_counter_nodes(st, c, nodes), 2);
    CHECK(nodes[0].pos == 12 && nodes[0].neg == 1);
    gstore_free(st);
}

/* GCOUNTER_MAX_ENTRIES replicas fit in one counter; one more is GSTORE_EFULL. */
static void test_full(void)
{
    int nrep = GCOUNTER_MAX_ENTRIES + 2;
    uint32_t id;
    /* Created before any replica is known: it grows one entry at a time. */
    struct gstore *st = new_store(nrep, 0, &id);
    for (int r = 0; r < GCOUNTER_MAX_ENTRIES; r++)
        CHECK_EQ_I64(gstore_incr(st, id, r, r % 2 ? 1 : -1), 0);
    const struct gcounter *c = gstore_counter(st, id);
    CHECK_EQ_U64(gstore_counter_entries(c), GCOUNTER_MAX_ENTRIES);
    int64_t v0 = gstore_counter_value(c);
    CHECK_EQ_I64(v0, GCOUNTER_MAX_ENTRIES % 2 ? -1 : 0);
    uint64_t seq0 = gstore_seq(st);

    CHECK_EQ_I64(gstore_incr(st, id, GCOUNTER_MAX_ENTRIES, 1), GSTORE_EFULL);
    CHECK_EQ_I64(gstore_incr(st, id, GCOUNTER_MAX_ENTRIES + 1, -1), GSTORE_EFULL);
    struct gentry extra[] = {{GCOUNTER_MAX_ENTRIES, 1, 0}};
    CHECK_EQ_I64(gstore_merge_check(st, id, extra, 1), GSTORE_EFULL);
    CHECK_EQ_I64(gstore_merge(st, id, extra, 1), GSTORE_EFULL);
    /* Mixed with an entry that would change: nothing applied. */
    struct gentry mixed[] = {{0, 100, 0}, {GCOUNTER_MAX_ENTRIES + 1, 1, 0}};
    CHECK_EQ_I64(gstore_merge(st, id, mixed, 2), GSTORE_EFULL);
    c = gstore_counter(st, id);
    CHECK_EQ_U64(gstore_counter_entries(c), GCOUNTER_MAX_ENTRIES);
    CHECK_EQ_I64(gstore_counter_value(c), v0);
    CHECK_EQ_I64(gstore_counter_net(c, 0), -1);
    CHECK_EQ_U64(gstore_seq(st), seq0);

    /* Replicas already present still take increments and merges. */
    CHECK_EQ_I64(gstore_incr(st, id, 7, 5), 0);
    struct gentry known[] = {{0, 100, 1}};
    CHECK_EQ_I64(gstore_merge(st, id, known, 1), 1);
    CHECK_EQ_I64(gstore_counter_value(gstore_counter(st, id)), v0 + 5 + 100);

    /* In one merge: 255 distinct replicas (with repeats) fit, 256 do not. */
    struct gentry in[2 * GCOUNTER_MAX_ENTRIES + 2];
    size_t n = 0;
    for (int r = 0; r < GCOUNTER_MAX_ENTRIES; r++) {
        in[n++] = (struct gentry){r, 1 + r, 0};
        if (r % 3 == 0)
            in[n++] = (struct gentry){r, 1, 2};
    }
    CHECK_EQ_I64(gstore_merge_check(st, GSTORE_NONE, in, n), 0);
    uint32_t id2 = gstore_create(st, "full2", 5);
    CHECK_EQ_I64(gstore_merge(st, id2, in, n), GCOUNTER_MAX_ENTRIES);
    CHECK_EQ_U64(gstore_counter_entries(gstore_counter(st, id2)), GCOUNTER_MAX_ENTRIES);
    in[n++] = (struct gentry){GCOUNTER_MAX_ENTRIES, 1, 0};
    CHECK_EQ_I64(gstore_merge_check(st, GSTORE_NONE, in, n), GSTORE_EFULL);
    uint32_t id3 = gstore_create(st, "full3", 5);
    seq0 = gstore_seq(st);
    CHECK_EQ_I64(gstore_merge(st, id3, in, n), GSTORE_EFULL);
    CHECK_EQ_U64(gstore_counter_entries(gstore_counter(st, id3)), 0);
    CHECK_EQ_U64(gstore_seq(st), seq0);
    gstore_free(st);
}

/*
 * An entry with pos = neg = 0 for a replica the counter does not have is the state the
 * counter already has (a missing replica counts 0): merging it is no change, so it must
 * not bump the sequence number (the counter would be re-sent in every delta) nor be
 * counted as a changed entry. The wire lets peers send it: /sync accepts
 * {"counts": {"c": {"n1": 0}}}.
 */
static void test_merge_zero_entry(void)
{
    uint32_t id;
    struct gstore *st = new_store(3, 3, &id);
    CHECK_EQ_I64(gstore_incr(st, id, 0, 4), 0);
    uint64_t seq0 = gstore_seq(st);
    struct gentry zero[] = {{1, 0, 0}};
    CHECK_EQ_I64(gstore_merge(st, id, zero, 1), 0);
    CHECK_EQ_U64(gstore_seq(st), seq0);
    CHECK_EQ_U64(gstore_changed_after(st, seq0), GSTORE_NONE);
    CHECK_EQ_I64(gstore_counter_value(gstore_counter(st, id)), 4);
    gstore_free(st);
}

/* ---------------------------------------------------------------- change tracking */

struct dcounter {
    struct mstate m;
    uint64_t mseq; /* as the model expects it */
};

static const struct gstore *walk_store;

static int by_mseq(const void *a, const void *b)
{
    uint64_t x = gstore_counter_mseq(gstore_counter(walk_store, *(const uint32_t *)a));
    uint64_t y = gstore_counter_mseq(gstore_counter(walk_store, *(const uint32_t *)b));
    return x < y ? -1 : x > y;
}

/* Compares the change-list walk after seq with a scan of every counter's mseq. */
static void check_walk(const struct gstore *st, uint64_t seq)
{
    uint32_t n = gstore_count(st);
    uint32_t *want = malloc(((size_t)n + 1) * sizeof *want);
    uint32_t nw = 0;
    /* Brute force: the counters with mseq > seq, ordered by mseq (all distinct). */
    for (uint32_t id = 0; id < n; id++)
        if (gstore_counter_mseq(gstore_counter(st, id)) > seq)
            want[nw++] = id;
    walk_store = st;
    qsort(want, nw, sizeof *want, by_mseq);
    uint32_t k = 0, id = gstore_changed_after(st, seq);
    uint64_t last = seq;
    for (; id != GSTORE_NONE && k <= n; id = gstore_changed_next(st, id), k++) {
        if (k >= nw || id != want[k]) {
            unit_fail(__FILE__, __LINE__,
                      "walk after seq %" PRIu64 ": item %u is counter %u, expected %s%u", seq, k,
                      id, k >= nw ? "the end after " : "", k >= nw ? nw : want[k]);
            break;
        }
        uint64_t ms = gstore_counter_mseq(gstore_counter(st, id));
        CHECK(ms > last); /* change order */
        last = ms;
    }
    if (id == GSTORE_NONE)
        CHECK_EQ_U64(k, nw);
    free(want);
}

/*
 * Random creations, increments and merges (changing or not) over a few hundred counters.
 * After each operation: the sequence number moved exactly when the model says something
 * changed, and the changed counter carries it. Walks after random points are compared
 * with a brute-force scan. Creating a counter that does not exist yet may or may not count
 * as a change (the header does not say); the model takes what the store reports, but the
 * new counter must then be the latest change.
 */
static void test_delta_tracking(void)
{
    struct unit_rng rng;
    rng_init(&rng, "delta_tracking");
    enum { NAMES = 300, NREP = 6 };
    struct gstore *st = new_store(NREP, 0, NULL);
    struct dcounter *dc = calloc(NAMES, sizeof *dc);
    uint32_t *ids = malloc(NAMES * sizeof *ids); /* name index -> id */
    for (int i = 0; i < NAMES; i++)
        ids[i] = GSTORE_NONE;
    uint32_t *name_of = malloc(NAMES * sizeof *name_of); /* id -> name index */
    char name[32];
    CHECK_EQ_U64(gstore_seq(st), 0);
    CHECK_EQ_U64(gstore_changed_after(st, 0), GSTORE_NONE);

    long ops = unit_iters(200000), walks = 0;
    for (long op = 0; op < ops; op++) {
        unit_context("operation %ld", op);
        uint64_t seq0 = gstore_seq(st);
        uint32_t count = gstore_count(st);
        uint64_t kind = rng_below(&rng, 100);
        if (kind < 8 || count == 0) {
            int ni = (int)rng_below(&rng, NAMES);
            int len = snprintf(name, sizeof name, "ctr.%d", ni);
            uint32_t id = gstore_create(st, name, (size_t)len);
            REQUIRE(id != GSTORE_NONE);
            if (ids[ni] != GSTORE_NONE) {
                CHECK_EQ_U64(id, ids[ni]); /* find-or-create of an existing one */
                CHECK_EQ_U64(gstore_count(st), count);
                CHECK_EQ_U64(gstore_seq(st), seq0);
            } else {
                CHECK_EQ_U64(id, count); /* ids are dense, in creation order */
                CHECK_EQ_U64(gstore_count(st), count + 1);
                ids[ni] = id;
                name_of[id] = (uint32_t)ni;
                uint64_t ms = gstore_counter_mseq(gstore_counter(st, id));
                if (gstore_seq(st) != seq0) {
                    CHECK_EQ_U64(gstore_seq(st), seq0 + 1);
                    CHECK_EQ_U64(ms, gstore_seq(st));
                } else {
                    CHECK(ms <= seq0);
                }
                dc[ni].mseq = ms;
            }
            continue;
        }
        uint32_t id = (uint32_t)rng_below(&rng, count);
        struct dcounter *d = &dc[name_of[id]];
        int changed;
        if (kind < 60) {
            /* An increment; amount 0 now and then (no change). */
            int rep = (int)rng_below(&rng, NREP);
            int64_t amount = rng_range(&rng, -5, 5);
            CHECK_EQ_I64(gstore_incr(st, id, rep, amount), 0);
            changed = amount != 0;
            if (amount) {
                d->m.present[rep] = 1;
                if (amount > 0)
                    d->m.pos[rep] += amount;
                else
                    d->m.neg[rep] -= amount;
            }
        } else if (kind < 80) {
            /* A merge of random entries: a change or not, as the model says. */
            struct gentry in[8];
            size_t n = 1 + (size_t)rng_below(&rng, 8);
            struct mstate min;
            memset(&min, 0, sizeof min);
            for (size_t k = 0; k < n; k++) {
                int r = (int)rng_below(&rng, NREP);
                in[k] = (struct gentry){r, rng_range(&rng, 0, 40), rng_range(&rng, 0, 40)};
                if (in[k].pos == 0 && in[k].neg == 0)
                    in[k].pos = 1;
                min.present[r] = 1;
                if (in[k].pos > min.pos[r])
                    min.pos[r] = in[k].pos;
                if (in[k].neg > min.neg[r])
                    min.neg[r] = in[k].neg;
            }
            struct mstate j;
            model_join(&d->m, &min, &j);
            changed = model_changed(&d->m, &j, NREP);
            CHECK_EQ_I64(gstore_merge(st, id, in, n), changed);
            d->m = j;
        } else if (kind < 92) {
            /* A merge of what the counter already holds, or less: never a change. */
            struct gentry in[NREP];
            size_t n = export_entries(st, id, in);
            for (size_t k = 0; k < n; k++) {
                if (rng_below(&rng, 2))
                    in[k].pos = rng_range(&rng, 0, in[k].pos);
                if (rng_below(&rng, 2))
                    in[k].neg = rng_range(&rng, 0, in[k].neg);
                if (in[k].pos == 0 && in[k].neg == 0)
                    in[k] = (struct gentry){in[k].rep, d->m.pos[in[k].rep], d->m.neg[in[k].rep]};
            }
            shuffle(&rng, in, n);
            n = (size_t)rng_below(&rng, n + 1);
            CHECK_EQ_I64(gstore_merge(st, id, in, n), 0);
            changed = 0;
        } else {
            /* A walk after a random point, mostly recent ones. */
            uint64_t s = rng_below(&rng, 2) ? rng_below(&rng, seq0 + 1)
                         : seq0 > 20        ? seq0 - rng_below(&rng, 20)
                                            : 0;
            check_walk(st, s);
            walks++;
            CHECK_EQ_U64(gstore_seq(st), seq0);
            continue;
        }
        if (changed) {
            CHECK_EQ_U64(gstore_seq(st), seq0 + 1);
            CHECK_EQ_U64(gstore_counter_mseq(gstore_counter(st, id)), gstore_seq(st));
            d->mseq = gstore_seq(st);
            /* The latest change is this counter, alone. */
            CHECK_EQ_U64(gstore_changed_after(st, seq0), id);
            CHECK_EQ_U64(gstore_changed_next(st, id), GSTORE_NONE);
        } else {
            CHECK_EQ_U64(gstore_seq(st), seq0);
            CHECK_EQ_U64(gstore_counter_mseq(gstore_counter(st, id)), d->mseq);
        }

        if (op % 1000 == 999) {
            /* Every counter as the model says, every mseq as the model says. */
            for (uint32_t k = 0; k < gstore_count(st); k++) {
                struct dcounter *x = &dc[name_of[k]];
                CHECK_EQ_U64(gstore_counter_mseq(gstore_counter(st, k)), x->mseq);
                check_state(st, k, &x->m, NREP, "full check");
            }
            check_walk(st, 0);
        }
    }
    unit_context("%s", "");
    check_walk(st, 0);
    check_walk(st, gstore_seq(st));
    CHECK_EQ_U64(gstore_changed_after(st, gstore_seq(st)), GSTORE_NONE);
    CHECK(walks > 0);

    /* Re-touching old counters moves them to the end, each listed once. */
    uint64_t mark = gstore_seq(st);
    uint32_t n = gstore_count(st);
    if (n >= 3) {
        CHECK_EQ_I64(gstore_incr(st, 0, 0, 1), 0);
        CHECK_EQ_I64(gstore_incr(st, n - 1, 0, 1), 0);
        CHECK_EQ_I64(gstore_incr(st, 0, 1, 1), 0);
        CHECK_EQ_I64(gstore_incr(st, 1, 1, 1), 0);
        uint32_t w = gstore_changed_after(st, mark);
        CHECK_EQ_U64(w, n - 1);
        w = w == GSTORE_NONE ? w : gstore_changed_next(st, w);
        CHECK_EQ_U64(w, 0);
        w = w == GSTORE_NONE ? w : gstore_changed_next(st, w);
        CHECK_EQ_U64(w, 1);
        w = w == GSTORE_NONE ? w : gstore_changed_next(st, w);
        CHECK_EQ_U64(w, GSTORE_NONE);
        check_walk(st, mark);
        check_walk(st, mark + 2);
    }
    free(dc);
    free(ids);
    free(name_of);
    gstore_free(st);
}

/* ---------------------------------------------------------------- many counters, names */

static int make_name(char *out, uint32_t i)
{
    /* Varied lengths and shared prefixes. */
    return snprintf(out, 64, "n%u.%.*s", i, (int)(i * 2654435761u % 23),
                    "abcdefghijklmnopqrstuvwxyz");
}

static void test_many_counters(void)
{
    uint32_t n = (uint32_t)unit_iters(200000);
    struct gstore *st = gstore_new();
    char name[64];
    size_t mem0 = gstore_memory(st);
    for (uint32_t i = 0; i < n; i++) {
        int len = make_name(name, i);
        uint32_t id = gstore_create(st, name, (size_t)len);
        if (id != i) {
            CHECK_EQ_U64(id, i);
            break;
        }
    }
    CHECK_EQ_U64(gstore_count(st), n);
    CHECK(gstore_memory(st) > mem0);
    uint64_t seq = gstore_seq(st);
    long bad = 0;
    for (uint32_t i = 0; i < n; i++) {
        int len = make_name(name, i);
        uint32_t id = gstore_find(st, name, (size_t)len);
        size_t got_len = 0;
        const char *got = id < n ? gstore_counter_name(gstore_counter(st, id), &got_len) : "";
        if (id != i || got_len != (size_t)len || memcmp(got, name, (size_t)len) != 0 ||
            got[len] != '\0') {
            if (bad++ < 5)
                unit_fail(__FILE__, __LINE__, "gstore_find(%s) = %u, expected %u", name, id, i);
        }
        /* Find-or-create of an existing name creates nothing. */
        if (i % 97 == 0 && gstore_create(st, name, (size_t)len) != i)
            bad++;
    }
    CHECK_EQ_I64(bad, 0);
    CHECK_EQ_U64(gstore_count(st), n);
    CHECK_EQ_U64(gstore_seq(st), seq);

    /* Unknown names: further numbers, altered last bytes, prefixes, extensions. */
    long found = 0;
    for (uint32_t i = 0; i < n; i += 7) {
        int len = make_name(name, i + n);
        found += gstore_find(st, name, (size_t)len) != GSTORE_NONE;
        len = make_name(name, i);
        name[len - 1] ^= 0x20;
        found += gstore_find(st, name, (size_t)len) != GSTORE_NONE;
        name[len - 1] ^= 0x20;
        found += gstore_find(st, name, (size_t)len - 1) != GSTORE_NONE;
        name[len] = 'x';
        found += gstore_find(st, name, (size_t)len + 1) != GSTORE_NONE;
    }
    CHECK_EQ_I64(found, 0);
    CHECK_EQ_U64(gstore_count(st), n);
    gstore_free(st);
}

/* gstore_reserve between creates, of any size (0, too big, less or more than what comes):
 * every name keeps its id, finds miss nothing and invent nothing, and a reservation
 * changes no counter and no sequence number. */
static void test_reserve(void)
{
    struct unit_rng rng;
    rng_init(&rng, "reserve");
    uint32_t n = (uint32_t)unit_iters(60000);
    struct gstore *st = gstore_new();
    char name[64];
    long bad = 0;
    uint32_t made = 0;
    while (made < n) {
        uint64_t seq = gstore_seq(st);
        uint32_t k = (uint32_t)rng_below(&rng, 5000);
        gstore_reserve(st, rng_below(&rng, 4) == 0 ? UINT32_MAX : k);
        gstore_reserve(st, 0);
        if (gstore_seq(st) != seq || gstore_count(st) != made)
            bad++;
        uint32_t m = (uint32_t)rng_below(&rng, 2 * (uint64_t)k + 1);
        for (uint32_t j = 0; j < m && made < n; j++, made++) {
            int len = make_name(name, made);
            if (gstore_create(st, name, (size_t)len) != made)
                bad++;
            uint32_t old = (uint32_t)rng_below(&rng, made + 1);
            len = make_name(name, old);
            if (gstore_find(st, name, (size_t)len) != old)
                bad++;
            len = make_name(name, made + 1);
            if (gstore_find(st, name, (size_t)len) != GSTORE_NONE)
                bad++;
        }
    }
    for (uint32_t i = 0; i < n; i++) {
        int len = make_name(name, i);
        if (gstore_find(st, name, (size_t)len) != i || gstore_create(st, name, (size_t)len) != i)
            bad++;
    }
    CHECK_EQ_I64(bad, 0);
    CHECK_EQ_U64(gstore_count(st), n);
    gstore_free(st);

    /* Reserved up front, the table is sized once: 1.5 slots a counter (6 bytes each), and
     * creating the reserved counters does not grow it. */
    st = gstore_new();
    gstore_reserve(st, n);
    size_t before = gstore_memory(st);
    CHECK(before >= (size_t)n * 3 / 2 * 5 && before <= (size_t)n * 3 / 2 * 5 + (size_t)n * 4 + 64);
    for (uint32_t i = 0; i < n; i++) {
        int len = make_name(name, i);
        CHECK_EQ_U64(gstore_create(st, name, (size_t)len), i);
    }
    struct gstore *plain = gstore_new();
    for (uint32_t i = 0; i < n; i++) {
        int len = make_name(name, i);
        gstore_create(plain, name, (size_t)len);
    }
    /* Same arena; the reserved table is at most what growing by half could give. */
    CHECK(gstore_memory(st) <= gstore_memory(plain) + 2 * (size_t)n);
    gstore_free(plain);
    gstore_free(st);
}

static void test_name_limits(void)
{
    struct gstore *st = gstore_new();
    char big[GCOUNTER_NAME_MAX + 2];
    memset(big, 'x', sizeof big);
    CHECK_EQ_U64(gstore_create(st, big, 0), GSTORE_NONE);
    CHECK_EQ_U64(gstore_create(st, big, GCOUNTER_NAME_MAX + 1), GSTORE_NONE);
    CHECK_EQ_U64(gstore_count(st), 0);
    CHECK_EQ_U64(gstore_seq(st), 0);
    uint32_t id = gstore_create(st, big, GCOUNTER_NAME_MAX);
    CHECK_EQ_U64(id, 0);
    CHECK_EQ_U64(gstore_find(st, big, GCOUNTER_NAME_MAX), 0);
    CHECK_EQ_U64(gstore_find(st, big, GCOUNTER_NAME_MAX - 1), GSTORE_NONE);
    CHECK_EQ_U64(gstore_find(st, big, GCOUNTER_NAME_MAX + 1), GSTORE_NONE);
    CHECK_EQ_U64(gstore_find(st, big, 0), GSTORE_NONE);
    size_t len = 0;
    const char *nm = gstore_counter_name(gstore_counter(st, 0), &len);
    CHECK_MEM_EQ(nm, len, big, GCOUNTER_NAME_MAX);
    uint32_t one = gstore_create(st, "x", 1);
    CHECK_EQ_U64(one, 1);
    CHECK_EQ_U64(gstore_find(st, "x", 1), 1);
    CHECK_EQ_U64(gstore_find(st, "xx", 2), GSTORE_NONE);
    gstore_free(st);
}

static void test_replicas(void)
{
    struct gstore *st = gstore_new();
    CHECK_EQ_I64(gstore_replica_count(st), 0);
    CHECK_EQ_I64(gstore_replica(st, "us-east-1", 9), 0);
    CHECK_EQ_I64(gstore_replica(st, "us-west-1", 9), 1);
    CHECK_EQ_I64(gstore_replica(st, "us-east-1", 9), 0);
    CHECK_EQ_I64(gstore_replica(st, "us-east-1x", 9), 0); /* len decides */
    CHECK_EQ_I64(gstore_replica(st, "us-east", 7), 2);
    CHECK_EQ_I64(gstore_replica_count(st), 3);
    CHECK_STR_EQ(gstore_replica_name(st, 0), "us-east-1");
    CHECK_STR_EQ(gstore_replica_name(st, 2), "us-east");
    CHECK(gstore_replica_name(st, 3) == NULL);
    CHECK(gstore_replica_name(st, -1) == NULL);
    CHECK_EQ_I64(gstore_replica(st, "", 0), -1);
    char big[GSTORE_REPLICA_NAME_MAX + 1];
    memset(big, 'r', sizeof big);
    CHECK_EQ_I64(gstore_replica(st, big, GSTORE_REPLICA_NAME_MAX + 1), -1);
    CHECK_EQ_I64(gstore_replica(st, big, GSTORE_REPLICA_NAME_MAX), 3);
    CHECK_EQ_I64(gstore_replica(st, big, GSTORE_REPLICA_NAME_MAX), 3);
    CHECK_EQ_I64(gstore_replica_count(st), 4);
    CHECK_EQ_U64(strlen(gstore_replica_name(st, 3)), GSTORE_REPLICA_NAME_MAX);
    CHECK_EQ_DBL(gstore_replica_net(st, 0), 0);
    CHECK_EQ_DBL(gstore_replica_net(st, 99), 0);
    CHECK_EQ_DBL(gstore_replica_net(st, -1), 0);
    CHECK_EQ_DBL(gstore_total(st), 0);
    gstore_free(st);
}

/* gstore_total and gstore_replica_net equal the sums over every counter (small amounts,
 * so the doubles are exact). */
static void test_aggregates(void)
{
    struct unit_rng rng;
    rng_init(&rng, "aggregates");
    enum { NREP = 5, NC = 60 };
    struct gstore *st = new_store(NREP, 0, NULL);
    char name[16];
    for (int i = 0; i < NC; i++) {
        int len = snprintf(name, sizeof name, "a%d", i);
        CHECK_EQ_U64(gstore_create(st, name, (size_t)len), i);
    }
    long ops = unit_iters(100000);
    for (long op = 0; op < ops; op++) {
        uint32_t id = (uint32_t)rng_below(&rng, NC);
        int rep = (int)rng_below(&rng, NREP);
        if (rng_below(&rng, 4)) {
            CHECK_EQ_I64(gstore_incr(st, id, rep, rng_range(&rng, -1000, 1000)), 0);
        } else {
            struct gentry e = {rep, 0, 0};
            struct gentry cur;
            const struct gcounter *c = gstore_counter(st, id);
            for (unsigned k = 0; k < gstore_counter_entries(c); k++) {
                gstore_counter_entry(c, k, &cur);
                if (cur.rep == rep)
                    e = cur;
            }
            e.pos += rng_range(&rng, 0, 3000);
            e.neg += rng_range(&rng, 0, 3000);
            if (e.pos == 0 && e.neg == 0)
                e.pos = 1;
            CHECK(gstore_merge(st, id, &e, 1) >= 0);
        }
        if (op % 997 == 0 || op == ops - 1) {
            double total = 0, net[NREP] = {0};
            for (uint32_t k = 0; k < NC; k++) {
                const struct gcounter *c = gstore_counter(st, k);
                total += (double)gstore_counter_value(c);
                for (int r = 0; r < NREP; r++)
                    net[r] += (double)gstore_counter_net(c, r);
            }
            CHECK_EQ_DBL(gstore_total(st), total);
            for (int r = 0; r < NREP; r++)
                CHECK_EQ_DBL(gstore_replica_net(st, r), net[r]);
        }
    }
    gstore_free(st);
}

static void test_name_valid(void)
{
    for (int ch = 0; ch < 256; ch++) {
        char s[1] = {(char)ch};
        int want = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
                   (ch >= '0' && ch <= '9') || ch == '_' || ch == '.' || ch == ':' || ch == '-';
        if (gstore_counter_name_valid(s, 1) != want)
            unit_fail(__FILE__, __LINE__,
                      "gstore_counter_name_valid(byte 0x%02x) = %d, expected %d", ch,
                      gstore_counter_name_valid(s, 1), want);
    }
    char s[202];
    memset(s, 'a', sizeof s);
    CHECK(!gstore_counter_name_valid(s, 0));
    CHECK(gstore_counter_name_valid(s, 1));
    CHECK(gstore_counter_name_valid(s, 200));
    CHECK(!gstore_counter_name_valid(s, 201));
    CHECK(gstore_counter_name_valid("AZaz09_.:-", 10));
    CHECK(gstore_counter_name_valid("us-east-1:views.total_2", 23));
    CHECK(!gstore_counter_name_valid("a\0b", 3));
    CHECK(!gstore_counter_name_valid("a b", 3));
    CHECK(!gstore_counter_name_valid("a/b", 3));
    CHECK(!gstore_counter_name_valid("caf\xc3\xa9", 5));
    CHECK(!gstore_counter_name_valid("a%20", 4));
    CHECK(!gstore_counter_name_valid("a+b", 3));
    s[199] = '!';
    CHECK(!gstore_counter_name_valid(s, 200));
}

/* ---------------------------------------------------------------- folded incarnations */

/* Counter id's state as a sender has it: its entries and its tombstones. */
struct fstate {
    struct gentry e[GCOUNTER_MAX_ENTRIES];
    int f[GCOUNTER_MAX_FOLDED];
    size_t n, nf;
};

static void fold_export(const struct gstore *st, uint32_t id, struct fstate *s)
{
    const struct gcounter *c = gstore_counter(st, id);
    s->n = gstore_counter_entries(c);
    for (unsigned i = 0; i < s->n; i++)
        gstore_counter_entry(c, i, &s->e[i]);
    const uint16_t *reps;
    s->nf = gstore_folded_list(st, id, &reps);
    for (size_t i = 0; i < s->nf; i++)
        s->f[i] = reps[i];
}

/* Merges counter id of src into counter id of dst, tombstones included. */
static int fold_merge(struct gstore *dst, const struct gstore *src, uint32_t id)
{
    static struct fstate s;
    fold_export(src, id, &s);
    return gstore_merge_folded(dst, id, s.e, s.n, s.f, s.nf, 0);
}

/* r0 = X~a (retired), r1 = X~b (current), r2 = Y. */
static void test_fold_basic(void)
{
    uint32_t id;
    struct gstore *st = new_store(3, 3, &id);
    CHECK_EQ_I64(gstore_incr(st, id, 0, 5), 0);
    CHECK_EQ_I64(gstore_incr(st, id, 0, -2), 0);
    CHECK_EQ_I64(gstore_incr(st, id, 1, 3), 0);
    CHECK_EQ_I64(gstore_incr(st, id, 2, 7), 0);
    CHECK_EQ_U64(gstore_replica_entries(st, 0), 1);
    uint64_t seq = gstore_seq(st);
    CHECK_EQ_I64(gstore_fold(st, id, 0, 1), 1);
    CHECK(gstore_seq(st) > seq); /* a change, replicated and logged like any */
    const struct gcounter *c = gstore_counter(st, id);
    CHECK_EQ_I64(gstore_counter_value(c), 13);
    CHECK_EQ_I64((int64_t)gstore_value(st, c), 13);
    CHECK_EQ_U64(gstore_counter_entries(c), 2);
    CHECK_EQ_I64(gstore_counter_net(c, 1), 6);
    CHECK_EQ_I64(gstore_counter_net(c, 0), 0);
    CHECK(gstore_folded(st, id, 0));
    CHECK(!gstore_folded(st, id, 1));
    CHECK_EQ_U64(gstore_replica_entries(st, 0), 0);
    CHECK_EQ_U64(gstore_folded_total(st), 1);
    CHECK_EQ_DBL(gstore_total(st), 13);
    CHECK_EQ_DBL(gstore_replica_net(st, 1), 6);
    CHECK_EQ_DBL(gstore_replica_net(st, 0), 0);
    CHECK_EQ_I64(gstore_fold(st, id, 0, 1), 0); /* nothing left to fold */

    /* A retired replica alone: the current one takes its place. */
    uint32_t id2 = gstore_create(st, "d", 1);
    CHECK_EQ_I64(gstore_incr(st, id2, 0, 4), 0);
    CHECK_EQ_I64(gstore_fold(st, id2, 0, 1), 1);
    CHECK_EQ_I64(gstore_counter_net(gstore_counter(st, id2), 1), 4);
    CHECK_EQ_U64(gstore_counter_entries(gstore_counter(st, id2)), 1);

    /* Overflow of the entry that takes the value: nothing applied. */
    uint32_t id3 = gstore_create(st, "e", 1);
    CHECK_EQ_I64(gstore_incr(st, id3, 1, INT64_MAX - 1), 0);
    CHECK_EQ_I64(gstore_incr(st, id3, 0, 5), 0);
    seq = gstore_seq(st);
    CHECK_EQ_I64(gstore_fold(st, id3, 0, 1), GSTORE_EOVERFLOW);
    CHECK_EQ_U64(gstore_seq(st), seq);
    CHECK_EQ_U64(gstore_counter_entries(gstore_counter(st, id3)), 2);
    CHECK(!gstore_folded(st, id3, 0));
    gstore_free(st);
}

/* The merge rules: a stale R never comes back, a tombstone drops R in the same change that
 * takes the folded entry, whatever the order. */
static void test_fold_merge_rules(void)
{
    struct unit_rng rng;
    rng_init(&rng, "fold_merge_rules");
    uint32_t id;
    struct gstore *a = new_store(3, 3, &id), *b = new_store(3, 3, &id);
    CHECK_EQ_I64(gstore_incr(b, id, 0, 10), 0); /* R counted 10, then died */
    CHECK_EQ_I64(gstore_incr(b, id, 2, 1), 0);
    CHECK_EQ_I64(fold_merge(a, b, id) > 0, 1); /* the folder holds R's highest value */
    CHECK_EQ_I64(gstore_incr(a, id, 1, 2), 0);
    CHECK_EQ_I64(gstore_fold(a, id, 0, 1), 1);
    CHECK_EQ_I64((int64_t)gstore_value(a, gstore_counter(a, id)), 13);

    /* The stale peer's R is dropped, not counted again. */
    uint64_t seq = gstore_seq(a);
    CHECK_EQ_I64(fold_merge(a, b, id), 0);
    CHECK_EQ_U64(gstore_seq(a), seq);
    CHECK_EQ_I64((int64_t)gstore_value(a, gstore_counter(a, id)), 13);
    CHECK_EQ_I64(gstore_merge_check(a, id, NULL, 0), 0);

    /* The stale peer learns the fold: R goes, X~b's folded value comes, in one change. */
    CHECK(fold_merge(b, a, id) > 0);
    CHECK_EQ_I64((int64_t)gstore_value(b, gstore_counter(b, id)), 13);
    CHECK(gstore_folded(b, id, 0));
    CHECK_EQ_I64(gstore_counter_net(gstore_counter(b, id), 0), 0);
    CHECK_EQ_U64(gstore_replica_entries(b, 0), 0);
    CHECK_EQ_DBL(gstore_total(b), 13);
    /* And R sent again (by anyone stale) stays out. */
    struct gentry r = {0, 10, 0};
    CHECK_EQ_I64(gstore_merge(b, id, &r, 1), 0);
    CHECK_EQ_I64((int64_t)gstore_value(b, gstore_counter(b, id)), 13);
    gstore_free(a);
    gstore_free(b);

    /* Random interleavings: R's final value reaches the folder before it folds (the gate's
     * promise); then merges in any order, the folder counting on, converge exactly. */
    for (long iter = 0; iter < unit_iters(300); iter++) {
        unit_context("iteration %ld", iter);
        struct gstore *s[3];
        for (int k = 0; k < 3; k++)
            s[k] = new_store(3, 3, &id);
        int64_t want = 0;
        int64_t rv = 1 + (int64_t)rng_below(&rng, 100);
        CHECK_EQ_I64(gstore_incr(s[1], id, 0, rv), 0); /* R's last state, on node 1 */
        want += rv;
        if (rng_below(&rng, 2)) {
            CHECK_EQ_I64(gstore_incr(s[1], id, 0, -3), 0);
            want -= 3;
        }
        fold_merge(s[2], s[1], id); /* node 2 has it too */
        fold_merge(s[0], s[rng_below(&rng, 2) ? 1 : 2], id);
        int folded = 0;
        for (int step = 0; step < 30; step++) {
            int op = (int)rng_below(&rng, 4);
            if (op == 0) {
                int64_t v = 1 + (int64_t)rng_below(&rng, 5);
                if (gstore_incr(s[0], id, 1, v) == 0)
                    want += v;
            } else if (op == 1 && !folded) {
                CHECK_EQ_I64(gstore_fold(s[0], id, 0, 1), 1);
                folded = 1;
            } else {
                int x = (int)rng_below(&rng, 3), y = (int)rng_below(&rng, 3);
                if (x != y)
                    CHECK(fold_merge(s[x], s[y], id) >= 0);
            }
            for (int k = 0; k < 3; k++) /* no store counts R twice, at any time */
                CHECK((int64_t)gstore_value(s[k], gstore_counter(s[k], id)) <= want);
        }
        if (!folded)
            CHECK_EQ_I64(gstore_fold(s[0], id, 0, 1), 1);
        for (int round = 0; round < 2; round++)
            for (int x = 0; x < 3; x++)
                for (int y = 0; y < 3; y++)
                    if (x != y)
                        fold_merge(s[x], s[y], id);
        for (int k = 0; k < 3; k++) {
            const struct gcounter *c = gstore_counter(s[k], id);
            CHECK_EQ_I64((int64_t)gstore_value(s[k], c), want);
            CHECK_EQ_I64(gstore_counter_net(c, 0), 0);
            CHECK(gstore_folded(s[k], id, 0));
            CHECK_EQ_DBL(gstore_total(s[k]), (double)want);
            gstore_free(s[k]);
        }
        if (unit_g.fails)
            break;
    }
    unit_context("%s", "");
}

/* A counter touched by more incarnations over time than it has room for stays writable
 * once the retired ones are folded; tombstones are bounded too. */
static void test_fold_cap(void)
{
    struct gstore *st = gstore_new();
    gstore_set_max_entries(st, 3);
    uint32_t id = gstore_create(st, "c", 1);
    char name[32];
    int y = gstore_replica(st, "Y", 1), prev = -1;
    CHECK_EQ_I64(gstore_incr(st, id, y, 1), 0);
    int64_t want = 1;
    for (int inc = 0; inc < 40; inc++) {
        int n = snprintf(name, sizeof name, "X~%d", inc);
        int cur = gstore_replica(st, name, (size_t)n);
        if (prev >= 0)
            CHECK_EQ_I64(gstore_fold(st, id, prev, cur), 1);
        CHECK_EQ_I64(gstore_incr(st, id, cur, inc + 1), 0);
        want += inc + 1;
        prev = cur;
        CHECK(gstore_counter_entries(gstore_counter(st, id)) <= 2);
    }
    CHECK_EQ_I64((int64_t)gstore_value(st, gstore_counter(st, id)), want);
    CHECK_EQ_U64(gstore_folded_total(st), 39);
    /* Without folding the cap refuses. */
    for (int inc = 40; inc < 42; inc++) {
        int n = snprintf(name, sizeof name, "X~%d", inc);
        int rep = gstore_replica(st, name, (size_t)n);
        CHECK_EQ_I64(gstore_incr(st, id, rep, 1), inc == 40 ? 0 : GSTORE_EFULL);
    }
    gstore_free(st);

    /* GCOUNTER_MAX_FOLDED tombstones, then a fold or a merge beyond is refused whole. */
    st = gstore_new();
    id = gstore_create(st, "c", 1);
    int into = gstore_replica(st, "X~cur", 5);
    for (int i = 0; i < GCOUNTER_MAX_FOLDED; i++) {
        int n = snprintf(name, sizeof name, "X~%d", i);
        int rep = gstore_replica(st, name, (size_t)n);
        CHECK_EQ_I64(gstore_incr(st, id, rep, 1), 0);
        CHECK_EQ_I64(gstore_fold(st, id, rep, into), 1);
    }
    int last = gstore_replica(st, "X~last", 6);
    CHECK_EQ_I64(gstore_incr(st, id, last, 1), 0);
    CHECK_EQ_I64(gstore_fold(st, id, last, into), GSTORE_EFOLDED);
    struct gentry e = {into, 5000, 0};
    CHECK_EQ_I64(gstore_merge_check_folded(st, id, &e, 1, &last, 1), GSTORE_EFOLDED);
    CHECK_EQ_I64(gstore_merge_folded(st, id, &e, 1, &last, 1, 0), GSTORE_EFOLDED);
    CHECK_EQ_I64((int64_t)gstore_value(st, gstore_counter(st, id)), GCOUNTER_MAX_FOLDED + 1);
    gstore_free(st);
}

/* ---------------------------------------------------------------- layout */

/*
 * Many counters in one store against a model of each: random increments whose values cross
 * every entry width (1, 2, 4, 8 bytes) at and around its edges, decrements, merges,
 * folds, new entries beyond a counter's initial room and replica ids above 255 (2 bytes
 * each), so blocks move and are reused from
 * the free lists while their neighbours stay intact. After each operation the counter is
 * compared with its model; every so often every counter, its name and the table and the
 * change list are.
 */
#define LAY_COUNTERS 300

struct lay {
    struct gstore *st;
    struct mstate m[LAY_COUNTERS];
    uint16_t folded[LAY_COUNTERS]; /* bit r: replica r folded */
    char names[LAY_COUNTERS][GCOUNTER_NAME_MAX + 1];
    size_t lens[LAY_COUNTERS];
    uint32_t n;
    int rid[MAXR]; /* the store's replica id of model replica r (above 255 in some rounds) */
};

/* Counter id against its model: every entry, tombstone and the value. */
static void lay_check(struct lay *L, uint32_t id)
{
    const struct gcounter *c = gstore_counter(L->st, id);
    const struct mstate *m = &L->m[id];
    unsigned present = 0;
    __int128 v = 0;
    for (int r = 0; r < MAXR; r++) {
        present += m->present[r];
        v += (__int128)m->pos[r] - m->neg[r];
        CHECK_EQ_I64(gstore_counter_net(c, L->rid[r]), m->pos[r] - m->neg[r]);
        CHECK_EQ_I64(gstore_folded(L->st, id, L->rid[r]), L->folded[id] >> r & 1);
    }
    unsigned n = gstore_counter_entries(c);
    CHECK_EQ_U64(n, present);
    for (unsigned i = 0; i < n; i++) {
        struct gentry e;
        gstore_counter_entry(c, i, &e);
        int r = 0;
        while (r < MAXR && L->rid[r] != e.rep)
            r++;
        CHECK(r < MAXR && m->present[r] && e.pos == m->pos[r] && e.neg == m->neg[r]);
    }
    CHECK(gstore_value(L->st, c) == v);
}

/* A magnitude near one of the width edges, or anywhere. */
static int64_t lay_amount(struct unit_rng *rng)
{
    static const int64_t edges[] = {
        1, 255, 256, 65535, 65536, 4294967295LL, 4294967296LL, INT64_MAX / 2, INT64_MAX};
    uint64_t k = rng_below(rng, 12);
    if (k < 9) {
        int64_t e = edges[k], d = rng_range(rng, 0, 2);
        return e - d > 0 ? e - d : 1;
    }
    return k == 9 ? rng_range(rng, 1, 10) : rng_range(rng, 1, INT64_MAX);
}

static void lay_create(struct unit_rng *rng, struct lay *L)
{
    uint32_t i = L->n;
    size_t len = rng_below(rng, 4) == 0 ? GCOUNTER_NAME_MAX : (size_t)rng_range(rng, 1, 40);
    int k = snprintf(L->names[i], sizeof L->names[i], "n%u-", i);
    for (size_t j = (size_t)k; j < len; j++)
        L->names[i][j] = (char)('a' + (int)rng_below(rng, 26));
    L->lens[i] = len > (size_t)k ? len : (size_t)k;
    L->names[i][L->lens[i]] = '\0';
    CHECK_EQ_U64(gstore_create(L->st, L->names[i], L->lens[i]), i);
    memset(&L->m[i], 0, sizeof L->m[i]);
    L->folded[i] = 0;
    L->n++;
}

static void lay_incr(struct unit_rng *rng, struct lay *L, uint32_t id)
{
    int rep = (int)rng_below(rng, MAXR);
    if (L->folded[id] >> rep & 1)
        return; /* a folded replica never counts again */
    int64_t mag = lay_amount(rng), sum;
    int dec = rng_below(rng, 4) == 0;
    int64_t *mine = dec ? &L->m[id].neg[rep] : &L->m[id].pos[rep];
    int over = __builtin_add_overflow(*mine, mag, &sum);
    CHECK_EQ_I64(gstore_incr(L->st, id, L->rid[rep], dec ? -mag : mag),
                 over ? GSTORE_EOVERFLOW : 0);
    if (!over) {
        *mine = sum;
        L->m[id].present[rep] = 1;
    }
}

static int64_t lay_sat(int64_t a, int64_t b)
{
    int64_t s;
    return __builtin_add_overflow(a, b, &s) ? INT64_MAX : s;
}

static void lay_merge(struct unit_rng *rng, struct lay *L, uint32_t id)
{
    struct gentry in[8];
    size_t n = (size_t)rng_range(rng, 1, 8);
    struct mstate want = L->m[id];
    for (size_t j = 0; j < n; j++) {
        int rep = (int)rng_below(rng, MAXR);
        int64_t p = L->m[id].pos[rep], q = L->m[id].neg[rep];
        in[j].rep = L->rid[rep];
        in[j].pos = rng_below(rng, 2) ? p : lay_sat(p, lay_amount(rng) / 3);
        in[j].neg = rng_below(rng, 3) ? q : lay_sat(q, lay_amount(rng) / 3);
        if (L->folded[id] >> rep & 1 || (!want.present[rep] && !in[j].pos && !in[j].neg))
            continue; /* dropped: folded, or an absent replica's zero */
        want.present[rep] = 1;
        want.pos[rep] = in[j].pos > want.pos[rep] ? in[j].pos : want.pos[rep];
        want.neg[rep] = in[j].neg > want.neg[rep] ? in[j].neg : want.neg[rep];
    }
    CHECK_EQ_I64(gstore_merge(L->st, id, in, n), model_changed(&L->m[id], &want, MAXR));
    L->m[id] = want;
}

static void lay_fold(struct unit_rng *rng, struct lay *L, uint32_t id)
{
    int from = (int)rng_below(rng, MAXR), into = (int)rng_below(rng, MAXR);
    struct mstate *m = &L->m[id];
    if (L->folded[id] >> into & 1)
        return;
    int64_t sp, sn;
    int expect = !m->present[from] || from == into ? 0 : 1;
    if (expect && (__builtin_add_overflow(m->pos[into], m->pos[from], &sp) ||
                   __builtin_add_overflow(m->neg[into], m->neg[from], &sn)))
        expect = GSTORE_EOVERFLOW;
    CHECK_EQ_I64(gstore_fold(L->st, id, L->rid[from], L->rid[into]), expect);
    if (expect != 1)
        return;
    m->pos[into] = sp;
    m->neg[into] = sn;
    m->present[into] = 1;
    m->present[from] = 0;
    m->pos[from] = m->neg[from] = 0;
    L->folded[id] |= (uint16_t)(1u << from);
}

static void lay_check_all(struct lay *L)
{
    for (uint32_t id = 0; id < L->n; id++) {
        lay_check(L, id);
        size_t len;
        const char *name = gstore_counter_name(gstore_counter(L->st, id), &len);
        CHECK(len == L->lens[id] && memcmp(name, L->names[id], len) == 0 && name[len] == '\0');
        CHECK_EQ_U64(gstore_find(L->st, L->names[id], L->lens[id]), id);
    }
    check_walk(L->st, 0);
}

static void test_layout_model(void)
{
    struct unit_rng rng;
    rng_init(&rng, "layout_model");
    long rounds = unit_iters(20);
    for (long round = 0; round < rounds; round++) {
        static struct lay L;
        memset(&L, 0, sizeof L);
        L.st = gstore_new();
        gstore_expect_replicas(L.st, (int)rng_range(&rng, 0, 4));
        /* Odd rounds: replicas 8.. have ids above 255 (2-byte ids in a counter). */
        int nids = round % 2 ? 300 : MAXR;
        char name[8];
        for (int r = 0; r < nids; r++)
            CHECK_EQ_I64(gstore_replica(L.st, name, (size_t)snprintf(name, sizeof name, "r%d", r)),
                         r);
        for (int r = 0; r < MAXR; r++)
            L.rid[r] = round % 2 && r >= 8 ? 250 + 3 * r : r;
        for (long op = 0; op < 6000; op++) {
            uint64_t k = rng_below(&rng, 100);
            if (L.n == 0 || (k < 3 && L.n < LAY_COUNTERS)) {
                lay_create(&rng, &L);
                continue;
            }
            uint32_t id = (uint32_t)rng_below(&rng, L.n);
            uint64_t seq = gstore_seq(L.st);
            if (k < 60)
                lay_incr(&rng, &L, id);
            else if (k < 90)
                lay_merge(&rng, &L, id);
            else
                lay_fold(&rng, &L, id);
            if (gstore_seq(L.st) != seq)
                CHECK_EQ_U64(gstore_counter_mseq(gstore_counter(L.st, id)), gstore_seq(L.st));
            lay_check(&L, id);
            if (op % 1000 == 999)
                lay_check_all(&L);
        }
        lay_check_all(&L);
        gstore_free(L.st);
    }
}

UNIT_MAIN("test_gstore", UNIT_CASE(test_merge_laws), UNIT_CASE(test_merge_overflow_random),
          UNIT_CASE(test_incr_basic), UNIT_CASE(test_incr_overflow),
          UNIT_CASE(test_merge_overflow_edges), UNIT_CASE(test_bare_node_entries),
          UNIT_CASE(test_full), UNIT_CASE(test_merge_zero_entry), UNIT_CASE(test_delta_tracking),
          UNIT_CASE(test_many_counters), UNIT_CASE(test_reserve), UNIT_CASE(test_name_limits),
          UNIT_CASE(test_replicas), UNIT_CASE(test_aggregates), UNIT_CASE(test_name_valid),
          UNIT_CASE(test_fold_basic), UNIT_CASE(test_fold_merge_rules), UNIT_CASE(test_fold_cap),
          UNIT_CASE(test_layout_model))
