/*
 * test_failover.c - failover records and settlements, and the token window under them:
 * records are kept once, walked in order after a sequence number, settled once, and the
 * region list matches whole names only.
 */
#include "../../core/store/failover.h"
#include "../../core/store/tokwin.h"
#include "unit.h"

struct seen {
    int n;
    uint64_t seqs[64];
    char tokens[64][16];
    int64_t amounts[64];
    char from[64][FAILOVER_FROM_MAX];
};

static void collect(void *arg, const char *counter, size_t clen, const char *token, size_t tlen,
                    double at, const struct failover_rec *rec, uint64_t seq)
{
    (void)counter;
    (void)clen;
    (void)at;
    struct seen *s = arg;
    if (s->n >= 64)
        return;
    s->seqs[s->n] = seq;
    snprintf(s->tokens[s->n], sizeof s->tokens[0], "%.*s", (int)tlen, token);
    s->amounts[s->n] = rec->amount;
    snprintf(s->from[s->n], sizeof s->from[0], "%s", rec->from);
    s->n++;
}

static void test_records_are_kept_once_and_walked_in_order(void)
{
    struct failovers *f = failovers_new();
    struct failover_rec a = {5, "us-east"}, b = {-2, "us-east,us-west"};
    CHECK_EQ_I64(failovers_record(f, "views", 5, "t1", 2, &a, 100), 1);
    CHECK_EQ_I64(failovers_record(f, "views", 5, "t2", 2, &b, 101), 1);
    CHECK_EQ_I64(failovers_record(f, "views", 5, "t1", 2, &b, 102), 0); /* known: kept */
    CHECK_EQ_I64(failovers_record(f, "other", 5, "t1", 2, &a, 103), 1); /* another counter */
    CHECK_EQ_U64(failovers_seq(f), 3);

    struct seen s = {0};
    failovers_foreach(f, 0, collect, &s);
    REQUIRE(s.n == 3);
    CHECK_STR_EQ(s.tokens[0], "t1");
    CHECK_EQ_I64(s.amounts[0], 5);
    CHECK_STR_EQ(s.from[0], "us-east");
    CHECK_STR_EQ(s.tokens[1], "t2");
    CHECK_EQ_I64(s.amounts[1], -2);
    CHECK_STR_EQ(s.from[1], "us-east,us-west");
    CHECK(s.seqs[0] < s.seqs[1] && s.seqs[1] < s.seqs[2]);

    struct seen after = {0};
    failovers_foreach(f, s.seqs[1], collect, &after);
    CHECK_EQ_I64(after.n, 1);
    struct seen none = {0};
    failovers_foreach(f, failovers_seq(f), collect, &none);
    CHECK_EQ_I64(none.n, 0);
    failovers_free(f);
}

static void test_settlements(void)
{
    struct failovers *f = failovers_new();
    CHECK_EQ_I64(failovers_settled(f, "c", 1, "tok", 3, 10), 0);
    failovers_settle(f, "c", 1, "tok", 3, 10);
    CHECK_EQ_I64(failovers_settled(f, "c", 1, "tok", 3, 11), 1);
    CHECK_EQ_I64(failovers_settled(f, "c", 1, "tok2", 4, 11), 0);
    CHECK_EQ_I64(failovers_settled(f, "d", 1, "tok", 3, 11), 0);
    /* Kept a day, then forgotten. */
    CHECK_EQ_I64(failovers_settled(f, "c", 1, "tok", 3, 10 + 86400 - 1), 1);
    CHECK_EQ_I64(failovers_settled(f, "c", 1, "tok", 3, 10 + 86400 + 1), 0);
    failovers_free(f);
}

static void test_names_match_whole_regions(void)
{
    CHECK_EQ_I64(failover_names("us-east", "us-east"), 1);
    CHECK_EQ_I64(failover_names("us-east,us-west", "us-west"), 1);
    CHECK_EQ_I64(failover_names("us-east,us-west", "us-wes"), 0);
    CHECK_EQ_I64(failover_names("us-east,us-west", "us"), 0);
    CHECK_EQ_I64(failover_names("us-east-2", "us-east"), 0);
    CHECK_EQ_I64(failover_names("", "us-east"), 0);
}

static void count_entries(void *arg, const char *counter, size_t clen, const char *token,
                          size_t tlen, double at, const void *payload, size_t len, uint64_t seq)
{
    (void)counter;
    (void)clen;
    (void)token;
    (void)tlen;
    (void)at;
    (void)payload;
    (void)len;
    uint64_t *last = arg;
    CHECK(seq > *last); /* strictly increasing */
    *last = seq;
}

static void test_window_replaces_and_evicts_in_order(void)
{
    struct tokwin *w = tokwin_new(100, 60);
    for (int i = 0; i < 250; i++) {
        char tok[16];
        snprintf(tok, sizeof tok, "t%d", i % 150); /* the last 100 puts replace older keys */
        CHECK(tokwin_put(w, "c", 1, tok, strlen(tok), 1000 + i * 0.01, &i, sizeof i) > 0);
    }
    CHECK_EQ_U64(tokwin_count(w), 100);
    uint64_t last = 0;
    tokwin_foreach(w, 0, count_entries, &last);
    CHECK_EQ_U64(last, tokwin_seq(w));
    size_t len;
    int x;
    const void *v = tokwin_get(w, "c", 1, "t99", 3, 1003, &len, NULL);
    REQUIRE(v != NULL && len == sizeof x);
    memcpy(&x, v, sizeof x); /* payloads are not aligned */
    CHECK_EQ_I64(x, 249);
    v = tokwin_get(w, "c", 1, "t0", 2, 1003, &len, NULL); /* replaced at i = 150: kept */
    REQUIRE(v != NULL);
    memcpy(&x, v, sizeof x);
    CHECK_EQ_I64(x, 150);
    CHECK(tokwin_get(w, "c", 1, "t100", 4, 1003, &len, NULL) == NULL); /* the oldest: evicted */
    /* Keys too long are refused, not truncated. */
    char big[600];
    memset(big, 'x', sizeof big);
    CHECK_EQ_U64(tokwin_put(w, "c", 1, big, sizeof big, 1003, "", 0), 0);
    /* Everything ages out. */
    CHECK(tokwin_get(w, "c", 1, "t99", 3, 1003 + 61, &len, NULL) == NULL);
    CHECK_EQ_U64(tokwin_count(w), 0);
    tokwin_free(w);
}

UNIT_MAIN("test_failover", UNIT_CASE(test_records_are_kept_once_and_walked_in_order),
          UNIT_CASE(test_settlements), UNIT_CASE(test_names_match_whole_regions),
          UNIT_CASE(test_window_replaces_and_evicts_in_order))
