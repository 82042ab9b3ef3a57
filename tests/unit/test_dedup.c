/*
 * test_dedup.c - unit tests of the idempotency window (core/store/dedup.c).
 *
 * Time is passed explicitly (now_s), so expiry is tested without sleeping. Never include
 * this from core/.
 */
#include <stdio.h>
#include <string.h>

#include "store/dedup.h"
#include "unit.h"

static struct dedup_answer answer(int64_t a, int64_t l, int64_t t)
{
    struct dedup_answer x = {a, l, t};
    return x;
}

static void put(struct dedup *d, const char *counter, const char *token, double now,
                struct dedup_answer a)
{
    dedup_put(d, counter, strlen(counter), token, strlen(token), now, &a);
}

/* 1 and the answer when found; the answer is left as "poison" otherwise. */
static int get(struct dedup *d, const char *counter, const char *token, double now,
               struct dedup_answer *out)
{
    *out = answer(-777, -777, -777);
    return dedup_get(d, counter, strlen(counter), token, strlen(token), now, out);
}

static void test_get_after_put(void)
{
    struct dedup *d = dedup_new(100, 60);
    struct dedup_answer a;
    CHECK_EQ_U64(dedup_count(d), 0);
    CHECK_EQ_I64(get(d, "views", "tok-1", 1000, &a), 0);
    put(d, "views", "tok-1", 1000, answer(5, 17, 42));
    CHECK_EQ_U64(dedup_count(d), 1);
    CHECK_EQ_I64(get(d, "views", "tok-1", 1001, &a), 1);
    CHECK_EQ_I64(a.amount, 5);
    CHECK_EQ_I64(a.local_count, 17);
    CHECK_EQ_I64(a.total_count, 42);
    /* Extreme values come back exactly. */
    put(d, "views", "tok-2", 1000, answer(INT64_MIN + 1, INT64_MAX, INT64_MIN));
    CHECK_EQ_I64(get(d, "views", "tok-2", 1000, &a), 1);
    CHECK_EQ_I64(a.amount, INT64_MIN + 1);
    CHECK_EQ_I64(a.local_count, INT64_MAX);
    CHECK_EQ_I64(a.total_count, INT64_MIN);
    /* Looking up does not consume. */
    CHECK_EQ_I64(get(d, "views", "tok-1", 1002, &a), 1);
    CHECK_EQ_I64(a.local_count, 17);
    CHECK_EQ_U64(dedup_count(d), 2);
    dedup_free(d);
}

static void test_misses(void)
{
    struct dedup *d = dedup_new(100, 60);
    struct dedup_answer a;
    put(d, "views", "tok", 10, answer(1, 2, 3));
    CHECK_EQ_I64(get(d, "views", "tok", 10, &a), 1);
    CHECK_EQ_I64(get(d, "clicks", "tok", 10, &a), 0); /* other counter */
    CHECK_EQ_I64(a.amount, -777);                     /* out untouched on a miss */
    CHECK_EQ_I64(get(d, "views", "tok2", 10, &a), 0); /* other token */
    CHECK_EQ_I64(get(d, "views", "to", 10, &a), 0);   /* prefix of the token */
    CHECK_EQ_I64(get(d, "view", "tok", 10, &a), 0);   /* prefix of the counter */
    CHECK_EQ_I64(get(d, "views", "TOK", 10, &a), 0);  /* case matters */
    CHECK_EQ_I64(get(d, "tok", "views", 10, &a), 0);  /* swapped */

    /* The boundary between counter and token is part of the key. */
    put(d, "ab", "c", 10, answer(7, 7, 7));
    CHECK_EQ_I64(get(d, "a", "bc", 10, &a), 0);
    CHECK_EQ_I64(get(d, "abc", "", 10, &a), 0);
    CHECK_EQ_I64(get(d, "ab", "c", 10, &a), 1);
    CHECK_EQ_I64(a.amount, 7);
    /* Same token, two counters: two entries with their own answers. */
    put(d, "clicks", "tok", 11, answer(9, 9, 9));
    CHECK_EQ_I64(get(d, "clicks", "tok", 11, &a), 1);
    CHECK_EQ_I64(a.amount, 9);
    CHECK_EQ_I64(get(d, "views", "tok", 11, &a), 1);
    CHECK_EQ_I64(a.amount, 1);
    CHECK_EQ_U64(dedup_count(d), 3);

    /* Tokens of the largest size API.md allows, with the longest counter names. */
    char name[201], tok[DEDUP_TOKEN_MAX + 1];
    memset(name, 'n', 200);
    name[200] = '\0';
    memset(tok, 't', DEDUP_TOKEN_MAX);
    tok[DEDUP_TOKEN_MAX] = '\0';
    put(d, name, tok, 12, answer(3, 4, 5));
    CHECK_EQ_I64(get(d, name, tok, 12, &a), 1);
    CHECK_EQ_I64(a.total_count, 5);
    tok[DEDUP_TOKEN_MAX - 1] = 'u';
    CHECK_EQ_I64(get(d, name, tok, 12, &a), 0);
    dedup_free(d);
}

static void test_expiry(void)
{
    struct dedup *d = dedup_new(1000, 10);
    struct dedup_answer a;
    put(d, "c", "t1", 100, answer(1, 1, 1));
    put(d, "c", "t2", 104, answer(2, 2, 2));
    put(d, "c", "t3", 108, answer(3, 3, 3));
    CHECK_EQ_I64(get(d, "c", "t1", 109.9, &a), 1);
    CHECK_EQ_I64(get(d, "c", "t1", 110.1, &a), 0); /* 10.1 s old */
    CHECK_EQ_I64(get(d, "c", "t2", 110.1, &a), 1);
    CHECK_EQ_I64(a.amount, 2);
    CHECK_EQ_U64(dedup_count(d), 2); /* forgotten, not only hidden */
    CHECK_EQ_I64(get(d, "c", "t2", 114.5, &a), 0);
    CHECK_EQ_I64(get(d, "c", "t3", 114.5, &a), 1);
    CHECK_EQ_U64(dedup_count(d), 1);
    /* A put also forgets what is old. */
    put(d, "c", "t4", 130, answer(4, 4, 4));
    CHECK_EQ_U64(dedup_count(d), 1);
    CHECK_EQ_I64(get(d, "c", "t3", 130, &a), 0);
    CHECK_EQ_I64(get(d, "c", "t4", 130, &a), 1);
    /* After expiry the same token is new again. */
    put(d, "c", "t1", 131, answer(11, 11, 11));
    CHECK_EQ_I64(get(d, "c", "t1", 131, &a), 1);
    CHECK_EQ_I64(a.amount, 11);
    /* Everything goes after a long pause. */
    CHECK_EQ_I64(get(d, "c", "t4", 1e6, &a), 0);
    CHECK_EQ_U64(dedup_count(d), 0);
    dedup_free(d);
}

static void test_bound(void)
{
    struct dedup *d = dedup_new(3, 1e9);
    struct dedup_answer a;
    put(d, "c", "a", 1, answer(1, 0, 0));
    put(d, "c", "b", 2, answer(2, 0, 0));
    put(d, "c", "c", 3, answer(3, 0, 0));
    CHECK_EQ_U64(dedup_count(d), 3);
    put(d, "c", "d", 4, answer(4, 0, 0));
    CHECK_EQ_U64(dedup_count(d), 3);
    CHECK_EQ_I64(get(d, "c", "a", 4, &a), 0); /* the oldest went first */
    CHECK_EQ_I64(get(d, "c", "b", 4, &a), 1);
    CHECK_EQ_I64(get(d, "c", "c", 4, &a), 1);
    CHECK_EQ_I64(get(d, "c", "d", 4, &a), 1);
    CHECK_EQ_I64(a.amount, 4);
    /* Looking an entry up does not make it younger: eviction is by insertion. */
    put(d, "c", "e", 5, answer(5, 0, 0));
    CHECK_EQ_I64(get(d, "c", "b", 5, &a), 0);
    CHECK_EQ_I64(get(d, "c", "c", 5, &a), 1);
    CHECK_EQ_U64(dedup_count(d), 3);
    dedup_free(d);

    /* A larger run: exactly the newest max_entries remain. */
    struct unit_rng rng;
    rng_init(&rng, "bound");
    size_t max = 1000, n = (size_t)unit_iters(5000);
    if (n < 2 * max)
        n = 2 * max;
    d = dedup_new(max, 1e9);
    char tok[32];
    for (size_t i = 0; i < n; i++) {
        snprintf(tok, sizeof tok, "t%zu", i);
        put(d, "ctr", tok, (double)i, answer((int64_t)i, 0, 0));
        if (dedup_count(d) != (i + 1 < max ? i + 1 : max)) {
            CHECK_EQ_U64(dedup_count(d), i + 1 < max ? i + 1 : max);
            break;
        }
    }
    long wrong = 0;
    for (int k = 0; k < 3000; k++) {
        size_t i = (size_t)rng_below(&rng, n);
        snprintf(tok, sizeof tok, "t%zu", i);
        int want = i >= n - max;
        int got = get(d, "ctr", tok, (double)n, &a);
        if (got != want || (got && a.amount != (int64_t)i))
            wrong++;
    }
    CHECK_EQ_I64(wrong, 0);
    dedup_free(d);
}

/* Many entries: the table grows and every one is still found, with its own answer. */
static void test_many(void)
{
    size_t n = (size_t)unit_iters(50000);
    struct dedup *d = dedup_new(1000000, 3600);
    char ctr[32], tok[64];
    for (size_t i = 0; i < n; i++) {
        int cl = snprintf(ctr, sizeof ctr, "counter.%zu", i % 97);
        int tl = snprintf(tok, sizeof tok, "%016zx-%zu", (size_t)(i * 0x9E3779B97F4A7C15ULL), i);
        struct dedup_answer a = answer((int64_t)i, (int64_t)i * 3, -(int64_t)i);
        dedup_put(d, ctr, (size_t)cl, tok, (size_t)tl, 1000.0 + (double)i / n, &a);
    }
    CHECK_EQ_U64(dedup_count(d), n);
    long wrong = 0, false_hits = 0;
    for (size_t i = 0; i < n; i++) {
        int cl = snprintf(ctr, sizeof ctr, "counter.%zu", i % 97);
        int tl = snprintf(tok, sizeof tok, "%016zx-%zu", (size_t)(i * 0x9E3779B97F4A7C15ULL), i);
        struct dedup_answer a;
        if (!dedup_get(d, ctr, (size_t)cl, tok, (size_t)tl, 1500, &a) || a.amount != (int64_t)i ||
            a.local_count != (int64_t)i * 3 || a.total_count != -(int64_t)i)
            wrong++;
        /* The same token under the next counter was never put. */
        cl = snprintf(ctr, sizeof ctr, "counter.%zu", (i + 1) % 97);
        if (dedup_get(d, ctr, (size_t)cl, tok, (size_t)tl, 1500, &a))
            false_hits++;
    }
    CHECK_EQ_I64(wrong, 0);
    CHECK_EQ_I64(false_hits, 0);
    CHECK_EQ_U64(dedup_count(d), n);
    /* An hour later all of them are gone. */
    struct dedup_answer a;
    CHECK_EQ_I64(get(d, "counter.0", "x", 1001.0 + 3600 + 1, &a), 0);
    CHECK_EQ_U64(dedup_count(d), 0);
    dedup_free(d);
}

/* The entry bound cutting the window short is visible: the oldest entry's time, and how
 * many entries were evicted before their time was up. */
static void test_window_cut_short(void)
{
    struct dedup *d = dedup_new(3, 60);
    CHECK_EQ_DBL(dedup_oldest_at(d), 0);
    put(d, "c", "a", 100, answer(1, 1, 1));
    put(d, "c", "b", 101, answer(1, 1, 1));
    put(d, "c", "c", 102, answer(1, 1, 1));
    CHECK_EQ_DBL(dedup_oldest_at(d), 100);
    CHECK_EQ_U64(dedup_evicted_young(d), 0);
    put(d, "c", "d", 103, answer(1, 1, 1)); /* "a" goes after 3 s of its 60 */
    CHECK_EQ_U64(dedup_evicted_young(d), 1);
    CHECK_EQ_DBL(dedup_oldest_at(d), 101);
    put(d, "c", "e", 200, answer(1, 1, 1)); /* the rest expire: not cut short */
    CHECK_EQ_U64(dedup_evicted_young(d), 1);
    CHECK_EQ_DBL(dedup_oldest_at(d), 200);
    dedup_free(d);
}

UNIT_MAIN("test_dedup", UNIT_CASE(test_get_after_put), UNIT_CASE(test_misses),
          UNIT_CASE(test_expiry), UNIT_CASE(test_bound), UNIT_CASE(test_many),
          UNIT_CASE(test_window_cut_short))
