/*
 * test_tokset.c - unit tests of the counters' token sets (core/store/tokset.c): the home of
 * a token, the join, the pending sum, walking by sequence number, and collection of settled
 * elements. Never include this from core/.
 */
#include <dirent.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "store/tokset.h"
#include "store/wal.h"
#include "unit.h"
#include "unit_fs.h"

static int merge(struct tokset *ts, uint32_t id, const char *tok, int64_t amount, int settled,
                 uint64_t seq)
{
    return tokset_merge(ts, id, tok, strlen(tok), amount, settled, seq);
}

static int home(const char *tok, const char *const *ids, int n)
{
    return tokset_home(tok, strlen(tok), ids, n);
}

static void test_home(void)
{
    const char *ids[3] = {"us-east-1", "us-west-1", "eu-west-1"};
    const char *rev[3] = {"eu-west-1", "us-west-1", "us-east-1"};
    CHECK_EQ_I64(home("us-west-1/abc", ids, 3), 1);
    CHECK_EQ_I64(home("eu-west-1/x/y", ids, 3), 2);
    CHECK_EQ_I64(home("x", ids, 0), -1);
    /* A prefix that names no region: hashed like any token. The answer does not depend on
     * the order of the ids, and every region is somebody's home. */
    int seen[3] = {0, 0, 0}, moved = 0;
    for (int i = 0; i < 3000; i++) {
        char tok[32];
        snprintf(tok, sizeof tok, "%s%d", i % 2 ? "order/" : "tok-", i);
        int h = home(tok, ids, 3), r = home(tok, rev, 3);
        if (h < 0 || r < 0 || strcmp(ids[h], rev[r]) != 0)
            moved++;
        if (h >= 0)
            seen[h]++;
        /* Two regions of three: a token whose home stays keeps it (rendezvous hashing). */
        int h2 = home(tok, ids, 2);
        if (h < 2 && h2 != h)
            moved++;
    }
    CHECK_EQ_I64(moved, 0);
    for (int i = 0; i < 3; i++)
        CHECK(seen[i] > 800);
}

static void test_join(void)
{
    struct tokset *ts = tokset_new();
    int64_t amount;
    int settled;
    CHECK_EQ_I64(tokset_get(ts, 1, "a", 1, &amount, &settled), 0);
    CHECK_EQ_I64(merge(ts, 1, "a", 5, 0, 10), TOKSET_CHANGED);
    CHECK_EQ_I64(merge(ts, 1, "b", -2, 0, 11), TOKSET_CHANGED);
    CHECK_EQ_I64(merge(ts, 2, "a", 7, 0, 12), TOKSET_CHANGED);
    CHECK_EQ_I64(tokset_pending(ts, 1), 3);
    CHECK_EQ_I64(tokset_pending(ts, 2), 7);
    CHECK_EQ_I64(tokset_pending(ts, 3), 0);
    CHECK_EQ_U64(tokset_count(ts), 3);
    CHECK_EQ_U64(tokset_pending_count(ts), 3);
    /* The same element again: nothing changes (idempotent). */
    CHECK_EQ_I64(merge(ts, 1, "a", 5, 0, 13), 0);
    /* Settled wins, whatever the order; its amount no longer counts. */
    CHECK_EQ_I64(merge(ts, 1, "a", 5, 1, 14), TOKSET_CHANGED | TOKSET_SETTLED);
    CHECK_EQ_I64(tokset_pending(ts, 1), -2);
    CHECK_EQ_I64(merge(ts, 1, "a", 5, 0, 15), 0);
    CHECK(tokset_get(ts, 1, "a", 1, &amount, &settled) && settled == 1 && amount == 5);
    /* Unknown and settled at once (a home that settles what it learns). */
    CHECK_EQ_I64(merge(ts, 1, "c", 4, 1, 16), TOKSET_CHANGED | TOKSET_SETTLED);
    CHECK_EQ_I64(tokset_pending(ts, 1), -2);
    /* A reused token with another amount: the larger is kept, counted once. */
    CHECK_EQ_I64(merge(ts, 2, "a", 9, 0, 17), TOKSET_CHANGED | TOKSET_CONFLICT);
    CHECK_EQ_I64(merge(ts, 2, "a", 3, 0, 18), 0);
    CHECK_EQ_I64(tokset_pending(ts, 2), 9);
    CHECK_EQ_U64(tokset_conflicts(ts), 1);
    CHECK_EQ_U64(tokset_pending_count(ts), 2);
    tokset_free(ts);
}

struct seen {
    char toks[16][8];
    uint64_t seqs[16];
    int n;
};

static void collect(void *arg, uint32_t id, const char *tok, size_t tlen, int64_t amount,
                    int settled, uint64_t seq)
{
    (void)id;
    (void)amount;
    (void)settled;
    struct seen *s = arg;
    if (s->n < 16) {
        snprintf(s->toks[s->n], sizeof s->toks[0], "%.*s", (int)tlen, tok);
        s->seqs[s->n++] = seq;
    }
}

static void test_each_after(void)
{
    struct tokset *ts = tokset_new();
    merge(ts, 1, "a", 1, 0, 1);
    merge(ts, 1, "b", 1, 0, 2);
    merge(ts, 1, "c", 1, 0, 3);
    merge(ts, 1, "a", 1, 1, 4); /* a changes last */
    struct seen s = {0};
    tokset_each(ts, 1, 0, collect, &s);
    REQUIRE(s.n == 3);
    CHECK_STR_EQ(s.toks[0], "b");
    CHECK_STR_EQ(s.toks[1], "c");
    CHECK_STR_EQ(s.toks[2], "a");
    memset(&s, 0, sizeof s);
    tokset_each(ts, 1, 2, collect, &s);
    REQUIRE(s.n == 2);
    CHECK_STR_EQ(s.toks[0], "c");
    CHECK_STR_EQ(s.toks[1], "a");
    memset(&s, 0, sizeof s);
    tokset_each(ts, 1, 4, collect, &s);
    CHECK_EQ_I64(s.n, 0);
    tokset_each(ts, 9, 0, collect, &s);
    CHECK_EQ_I64(s.n, 0);
    memset(&s, 0, sizeof s);
    tokset_each_pending(ts, collect, &s);
    CHECK_EQ_I64(s.n, 2);
    tokset_free(ts);
}

static void test_gc(void)
{
    struct tokset *ts = tokset_new();
    merge(ts, 1, "a", 1, 0, 1);
    merge(ts, 1, "b", 2, 0, 2);
    merge(ts, 2, "c", 3, 0, 3);
    merge(ts, 1, "a", 1, 1, 5);
    merge(ts, 2, "c", 3, 1, 7);
    /* Pending elements are never collected, settled ones once acknowledged. */
    CHECK_EQ_U64(tokset_gc(ts, 4), 0);
    CHECK_EQ_U64(tokset_gc(ts, 5), 1);
    CHECK_EQ_I64(tokset_get(ts, 1, "a", 1, NULL, NULL), 0);
    CHECK_EQ_I64(tokset_get(ts, 1, "b", 1, NULL, NULL), 1);
    CHECK_EQ_U64(tokset_gc(ts, 100), 1);
    CHECK_EQ_U64(tokset_count(ts), 1);
    CHECK_EQ_U64(tokset_elements(ts, 2), 0);
    CHECK_EQ_I64(tokset_pending(ts, 1), 2);
    merge(ts, 1, "b", 2, 1, 101);
    CHECK_EQ_U64(tokset_gc(ts, 101), 1);
    CHECK_EQ_U64(tokset_count(ts), 0);
    CHECK_EQ_U64(tokset_memory(ts) > 0, 1);
    tokset_free(ts);
}

/* A dropped counter's set goes whole, pending and settled, and the settled queue still
 * collects the other counters' elements. */
static void test_forget(void)
{
    struct tokset *ts = tokset_new();
    size_t empty = tokset_memory(ts);
    merge(ts, 1, "a", 1, 0, 1);
    merge(ts, 2, "b", 2, 1, 2);
    merge(ts, 1, "c", 3, 1, 3);
    merge(ts, 2, "d", 4, 1, 4);
    merge(ts, 1, "e", 5, 0, 5);
    CHECK_EQ_U64(tokset_forget(ts, 3), 0);
    CHECK_EQ_U64(tokset_forget(ts, 1), 3);
    CHECK_EQ_U64(tokset_elements(ts, 1), 0);
    CHECK_EQ_I64(tokset_pending(ts, 1), 0);
    CHECK_EQ_U64(tokset_pending_count(ts), 0);
    CHECK_EQ_U64(tokset_count(ts), 2);
    CHECK_EQ_I64(tokset_get(ts, 1, "c", 1, NULL, NULL), 0);
    /* The id names a new counter: it starts with an empty set. */
    merge(ts, 1, "c", 7, 0, 6);
    CHECK_EQ_I64(tokset_pending(ts, 1), 7);
    CHECK_EQ_U64(tokset_gc(ts, 100), 2);
    CHECK_EQ_U64(tokset_forget(ts, 2), 0);
    CHECK_EQ_U64(tokset_forget(ts, 1), 1);
    CHECK_EQ_U64(tokset_count(ts), 0);
    CHECK_EQ_U64(tokset_memory(ts), empty);
    tokset_free(ts);
}

/* Many counters and tokens, merged in random order from three replicas: every replica's
 * set ends the same, the pending sums match a recount, and collection empties it. */
static void test_random_joins(void)
{
    struct unit_rng rng;
    rng_init(&rng, "tokset");
    long n = unit_iters(20000);
    struct tokset *a = tokset_new(), *b = tokset_new();
    uint64_t seq = 0;
    int64_t want_pending = 0;
    for (long i = 0; i < n; i++) {
        char tok[32];
        uint32_t id = (uint32_t)rng_below(&rng, 50);
        int len = snprintf(tok, sizeof tok, "t%ld", i);
        int64_t amount = rng_range(&rng, -5, 5);
        int settle = rng_below(&rng, 3) == 0;
        tokset_merge(a, id, tok, (size_t)len, amount, 0, ++seq);
        if (settle)
            tokset_merge(a, id, tok, (size_t)len, amount, 1, ++seq);
        else
            want_pending += amount;
        /* b learns them in another order: settled first when it is settled. */
        tokset_merge(b, id, tok, (size_t)len, amount, settle, ++seq);
        tokset_merge(b, id, tok, (size_t)len, amount, 0, ++seq);
    }
    int64_t got_a = 0, got_b = 0;
    for (uint32_t id = 0; id < 50; id++) {
        got_a += tokset_pending(a, id);
        got_b += tokset_pending(b, id);
    }
    CHECK_EQ_I64(got_a, want_pending);
    CHECK_EQ_I64(got_b, want_pending);
    CHECK_EQ_U64(tokset_count(a), tokset_count(b));
    CHECK_EQ_U64(tokset_pending_count(a), tokset_pending_count(b));
    tokset_gc(a, seq);
    CHECK_EQ_U64(tokset_count(a), tokset_pending_count(a));
    tokset_free(a);
    tokset_free(b);
}

/* ---------------------------------------------------------------- durability */

struct node {
    struct gstore *st;
    struct dedup *d;
    struct tokset *ts;
    struct wal *w;
    struct wal_info info;
    char err[1024];
};

static int node_open(struct node *n, const char *dir)
{
    memset(n, 0, sizeof *n);
    n->st = gstore_new();
    n->d = dedup_new(1000, 600);
    n->ts = tokset_new();
    struct wal_opts o = {dir, "us-west-1", WAL_FSYNC_NO, 4096, n->ts, NULL};
    n->w = wal_open(&o, n->st, n->d, &n->info, n->err, sizeof n->err);
    return n->w ? 0 : -1;
}

static void node_free(struct node *n)
{
    gstore_free(n->st);
    dedup_free(n->d);
    tokset_free(n->ts);
}

/* A pending element taken as a region takes it: one change of the counter, one record. */
static void take(struct node *n, const char *name, const char *tok, int64_t amount, int settled)
{
    uint32_t id = gstore_create(n->st, name, strlen(name));
    tokset_merge(n->ts, id, tok, strlen(tok), amount, settled, gstore_touch(n->st, id));
    wal_append(n->w, n->st, id, NULL, 0, NULL, 0);
}

/* Pending and settled elements come back from the log (after a crash: nothing but what was
 * written), from records split because one counter has too many elements for one, and from
 * a snapshot. */
static void test_log_and_snapshot(void)
{
    char dir[] = "/tmp/counterd-test-tokset-XXXXXX";
    REQUIRE(mkdtemp(dir) != NULL);
    struct node n;
    REQUIRE(node_open(&n, dir) == 0);
    take(&n, "views", "us-east-1/a", 3, 0);
    take(&n, "views", "us-east-1/b", 4, 0);
    take(&n, "views", "us-east-1/b", 4, 1); /* settled later: a second record */
    /* 12,000 elements of ~100 bytes in one change: more than one record can hold. */
    uint32_t big = gstore_create(n.st, "big", 3);
    uint64_t before = gstore_seq(n.st), seq = gstore_touch(n.st, big);
    char tok[TOKSET_TOKEN_MAX];
    for (int i = 0; i < 12000; i++) {
        int len = snprintf(tok, sizeof tok, "eu-west-1/%090d", i);
        tokset_merge(n.ts, big, tok, (size_t)len, 1, i % 3 == 0, seq);
    }
    wal_append_tokens(n.w, n.st, big, before);
    CHECK_EQ_I64(wal_write(n.w), 0);
    wal_abandon(n.w);
    node_free(&n);

    REQUIRE(node_open(&n, dir) == 0);
    uint32_t views = gstore_find(n.st, "views", 5);
    REQUIRE(views != GSTORE_NONE);
    int64_t amount = 0;
    int settled = -1;
    CHECK(tokset_get(n.ts, views, "us-east-1/a", 11, &amount, &settled) && amount == 3 && !settled);
    CHECK(tokset_get(n.ts, views, "us-east-1/b", 11, &amount, &settled) && amount == 4 && settled);
    CHECK_EQ_I64(tokset_pending(n.ts, views), 3);
    big = gstore_find(n.st, "big", 3);
    REQUIRE(big != GSTORE_NONE);
    CHECK_EQ_U64(tokset_elements(n.ts, big), 12000);
    CHECK_EQ_I64(tokset_pending(n.ts, big), 8000);
    /* A snapshot, then the log it covers is gone: the same state from the snapshot. */
    REQUIRE(wal_snapshot(n.w, n.st, n.d) == 0);
    for (int i = 0; i < 500 && wal_snapshot_running(n.w); i++) {
        usleep(10000);
        wal_tick(n.w, n.st, n.d);
    }
    CHECK_EQ_I64(wal_snapshot_running(n.w), 0);
    CHECK_EQ_I64(wal_close(n.w), 0);
    node_free(&n);

    REQUIRE(node_open(&n, dir) == 0);
    CHECK(n.info.snapshot_seg > 0);
    views = gstore_find(n.st, "views", 5);
    big = gstore_find(n.st, "big", 3);
    REQUIRE(views != GSTORE_NONE && big != GSTORE_NONE);
    CHECK_EQ_I64(tokset_pending(n.ts, views), 3);
    CHECK_EQ_U64(tokset_count(n.ts), 12002);
    CHECK_EQ_I64(tokset_pending(n.ts, big), 8000);
    wal_close(n.w);
    node_free(&n);
    rm_rf(dir);
}

UNIT_MAIN("test_tokset", UNIT_CASE(test_home), UNIT_CASE(test_join), UNIT_CASE(test_each_after),
          UNIT_CASE(test_gc), UNIT_CASE(test_forget), UNIT_CASE(test_random_joins),
          UNIT_CASE(test_log_and_snapshot))
