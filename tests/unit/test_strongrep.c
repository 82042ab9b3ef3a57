/*
 * test_strongrep.c - a strong-counter replica's state: ballots order proposals, promises
 * only rise, and a late copy of an older round never overwrites a newer value.
 */
#include "../../core/store/strongrep.h"
#include "unit.h"

static void test_ballots_order_proposals(void)
{
    struct strongrep *s = strongrep_new();
    CHECK(strongrep_get(s, "a", 1) == NULL);
    CHECK_EQ_I64(strongrep_accept(s, "a", 1, 1, 2, 10), 1);
    /* An older round of the same epoch arrives late: kept out. */
    CHECK_EQ_I64(strongrep_accept(s, "a", 1, 1, 1, 5), 0);
    CHECK_EQ_I64(strongrep_get(s, "a", 1)->value, 10);
    /* The same ballot again (a retransmission) is accepted. */
    CHECK_EQ_I64(strongrep_accept(s, "a", 1, 1, 2, 10), 1);
    /* A newer epoch wins whatever its round. */
    CHECK_EQ_I64(strongrep_accept(s, "a", 1, 2, 0, 7), 1);
    CHECK_EQ_I64(strongrep_get(s, "a", 1)->value, 7);
    CHECK_EQ_U64(strongrep_get(s, "a", 1)->epoch, 2);
    CHECK_EQ_U64(strongrep_promised(s), 2);
    strongrep_free(s);
}

static void test_promises_only_rise(void)
{
    struct strongrep *s = strongrep_new();
    CHECK_EQ_U64(strongrep_promised(s), 0);
    CHECK_EQ_I64(strongrep_promise(s, 5), 1);
    CHECK_EQ_I64(strongrep_promise(s, 5), 0);
    CHECK_EQ_I64(strongrep_promise(s, 4), 0);
    CHECK_EQ_U64(strongrep_promised(s), 5);
    strongrep_free(s);
}

static void count_one(void *arg, const char *name, size_t len, const struct strongrep_entry *e)
{
    (void)name;
    (void)len;
    int64_t *sum = arg;
    *sum += e->value;
}

static void test_many_counters(void)
{
    struct strongrep *s = strongrep_new();
    char name[32];
    for (int i = 0; i < 5000; i++) {
        int n = snprintf(name, sizeof name, "c%d", i);
        CHECK_EQ_I64(strongrep_accept(s, name, (size_t)n, 1, 1, i), 1);
    }
    CHECK_EQ_U64(strongrep_count(s), 5000);
    for (int i = 0; i < 5000; i += 499) {
        int n = snprintf(name, sizeof name, "c%d", i);
        REQUIRE(strongrep_get(s, name, (size_t)n) != NULL);
        CHECK_EQ_I64(strongrep_get(s, name, (size_t)n)->value, i);
    }
    int64_t sum = 0;
    strongrep_each(s, count_one, &sum);
    CHECK_EQ_I64(sum, 4999LL * 5000 / 2);
    strongrep_free(s);
}

/* FORGET removes an entry unless a higher ballot holds it; DELETED is kept like a value. */
static void test_forget_and_tombstones(void)
{
    struct strongrep *s = strongrep_new();
    CHECK_EQ_I64(strongrep_accept(s, "~ns/t1", 6, 1, 2, 5), 1);
    CHECK_EQ_I64(strongrep_accept(s, "~ns/t1", 6, 1, 1, STRONGREP_FORGET), 0);
    CHECK(strongrep_get(s, "~ns/t1", 6) != NULL);
    CHECK_EQ_I64(strongrep_accept(s, "~ns/t1", 6, 1, 3, STRONGREP_FORGET), 1);
    CHECK(strongrep_get(s, "~ns/t1", 6) == NULL);
    CHECK_EQ_U64(strongrep_count(s), 0);
    CHECK_EQ_I64(strongrep_accept(s, "ns/c", 4, 1, 3, STRONGREP_DELETED), 1);
    CHECK_EQ_I64(strongrep_accept(s, "ns/c", 4, 1, 2, 9), 0); /* a late older proposal */
    CHECK_EQ_I64(strongrep_get(s, "ns/c", 4)->value, STRONGREP_DELETED);
    strongrep_put(s, "~x/y", 4, STRONGREP_FORGET); /* the leader's maps keep it as a value */
    CHECK_EQ_I64(strongrep_get(s, "~x/y", 4)->value, STRONGREP_FORGET);
    strongrep_free(s);
}

static void test_entry_names(void)
{
    CHECK(strongrep_name_valid("views", 5));
    CHECK(strongrep_name_valid("ns/c", 4));
    CHECK(strongrep_name_valid("~ns/any token/with \"quotes\"", 27));
    CHECK(!strongrep_name_valid("~ns/", 4));
    CHECK(!strongrep_name_valid("~/t", 3));
    CHECK(!strongrep_name_valid("~ns/a\nb", 7));
    CHECK(!strongrep_name_valid("ns/c/d", 6));
    CHECK(!strongrep_name_valid("", 0));
}

UNIT_MAIN("test_strongrep", UNIT_CASE(test_ballots_order_proposals),
          UNIT_CASE(test_promises_only_rise), UNIT_CASE(test_many_counters),
          UNIT_CASE(test_forget_and_tombstones), UNIT_CASE(test_entry_names))
