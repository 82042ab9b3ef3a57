/*
 * test_strong.c - core/repl/strong.c, the strong counter's leader, without a network.
 *
 * As h2o's unit tests do, it includes the .c to reach its statics. The leader is built
 * with three replicas on loopback ports nothing listens on, and the event loop never
 * runs: each leg's HTTP call is cancelled and its answer handed to leg_answer() directly,
 * as on_leg_result() would. This drives the decisions: a prepare a majority answers makes
 * the leader ready, a round a majority accepts commits and answers its increments, a round
 * that no replica took fails certainly (no_quorum, after every answer), one a replica
 * may hold is left to the repair round, a newer promised epoch sends the leader back to
 * recovery with the next epoch above it, and an overflowing increment fails alone.
 */
#include "repl/strong.c"

#include "net/client.h"
#include "unit.h"

struct got {
    int calls;
    enum strong_status status;
    int64_t value;
    int durable, duplicate;
    int64_t before;
    char detail[600];
};

static void on_done(void *arg, const struct strong_result *r)
{
    struct got *g = arg;
    g->calls++;
    g->status = r->status;
    g->value = r->value;
    g->durable = r->durable;
    g->duplicate = r->duplicate;
    g->before = r->before;
    snprintf(g->detail, sizeof g->detail, "%s", r->detail ? r->detail : "");
}

struct leader {
    struct event_base *base;
    struct client *client;
    struct strong *s;
};

static void leader_init(struct leader *t)
{
    t->base = event_base_new();
    t->client = client_new(t->base);
    struct strong_config cfg = {.node_id = "strong-1", .region = "us-east", .nreplicas = 3};
    const char *names[3] = {"us-east", "us-west", "eu-west"};
    const char *urls[3] = {"http://127.0.0.1:1", "http://127.0.0.1:2", "http://127.0.0.1:3"};
    for (int i = 0; i < 3; i++) {
        cfg.replica_names[i] = names[i];
        cfg.replica_urls[i] = urls[i];
    }
    t->s = strong_new(t->base, t->client, &cfg, NULL);
}

static void leader_free(struct leader *t)
{
    strong_free(t->s);
    client_free(t->client);
    event_base_free(t->base);
}

/* Replica i of exchange ex answers status with body, as on_leg_result would hand it on. */
static void answer(struct exchange *ex, int i, int status, const char *body)
{
    struct leg *l = &ex->legs[i];
    if (l->call) {
        client_cancel(l->call);
        l->call = NULL;
    }
    l->status = status;
    leg_answer(l, body);
}

static const char *OK_DURABLE = "{\"node_id\":\"r\",\"durable\":true,\"entries\":[]}";

/* Makes the leader ready: two of three replicas answer its prepare. */
static void make_ready(struct leader *t)
{
    struct exchange *ex = t->s->current;
    REQUIRE(ex && ex->kind == EX_PREPARE);
    CHECK_EQ_I64(strong_ready(t->s), 0);
    answer(ex, 0, 200, OK_DURABLE);
    CHECK_EQ_I64(strong_ready(t->s), 0); /* one of three is no majority */
    answer(ex, 1, 200, OK_DURABLE);
    CHECK_EQ_I64(strong_ready(t->s), 1);
    CHECK_EQ_U64(t->s->epoch, 1);
    answer(ex, 2, 200, OK_DURABLE); /* the straggler; the exchange is freed after it */
}

static void test_static_rules(void)
{
    /* Whether a replica may hold a message it answered with status (error code). */
    CHECK_EQ_I64(may_hold(200, NULL), 1);
    CHECK_EQ_I64(may_hold(409, "stale_epoch"), 0);
    CHECK_EQ_I64(may_hold(400, NULL), 0);
    CHECK_EQ_I64(may_hold(503, "partitioned"), 0);
    CHECK_EQ_I64(may_hold(503, "unavailable"), 1);
    CHECK_EQ_I64(may_hold(500, NULL), 1);
    /* A transport error proves nothing arrived only when no connection existed. */
    CHECK_EQ_I64(never_delivered("Failed to connect to 127.0.0.1 port 1"), 1);
    CHECK_EQ_I64(never_delivered("Could not resolve host: x"), 1);
    CHECK_EQ_I64(never_delivered("Operation timed out after 3000 ms"), 0);
    CHECK_EQ_I64(never_delivered(NULL), 0);
}

static void test_prepare_recovers_the_highest_ballot(void)
{
    struct leader t;
    leader_init(&t);
    struct exchange *ex = t.s->current;
    REQUIRE(ex && ex->kind == EX_PREPARE);
    /* Two replicas hold c under different ballots: (epoch, round) (1, 4) beats (1, 2). */
    answer(ex, 0, 200,
           "{\"node_id\":\"a\",\"durable\":true,\"entries\":[[\"c\",1,2,10],[\"d\",1,1,3]]}");
    answer(ex, 1, 200, "{\"node_id\":\"b\",\"durable\":true,\"entries\":[[\"c\",1,4,12]]}");
    CHECK_EQ_I64(strong_ready(t.s), 1);
    CHECK_EQ_I64(strong_value(t.s, "c", 1), 12);
    CHECK_EQ_I64(strong_value(t.s, "d", 1), 3);
    CHECK_EQ_U64(t.s->epoch, 1);
    /* What was recovered is proposed again by a repair round (started once nothing waits
     * behind the retry timer: here, at once, since no failure came before). */
    REQUIRE(t.s->current && t.s->current->kind == EX_ACCEPT);
    CHECK_EQ_I64(t.s->current->repair_only, 1);
    CHECK_EQ_I64((int64_t)strongrep_count(t.s->current->proposed), 2);
    answer(ex, 2, 200, OK_DURABLE);
    leader_free(&t);
}

static void test_round_commits_on_a_majority(void)
{
    struct leader t;
    leader_init(&t);
    make_ready(&t);
    struct got g = {0}, g2 = {0};
    strong_increment(t.s, "c", 1, 5, on_done, &g);
    struct exchange *ex = t.s->current;
    REQUIRE(ex && ex->kind == EX_ACCEPT);
    CHECK_EQ_U64(ex->round, 1);
    /* A second increment waits for the next round. */
    strong_increment(t.s, "c", 1, 2, on_done, &g2);
    CHECK(t.s->current == ex);
    answer(ex, 0, 200, "{\"durable\":true}");
    CHECK_EQ_I64(g.calls, 0);
    answer(ex, 2, 200, "{\"durable\":true}");
    CHECK_EQ_I64(g.calls, 1);
    CHECK_EQ_I64(g.status, STRONG_OK);
    CHECK_EQ_I64(g.value, 5);
    CHECK_EQ_I64(g.durable, 1);
    CHECK_EQ_I64(strong_value(t.s, "c", 1), 5);
    /* The next round starts at once with the waiting increment: 5 + 2. */
    struct exchange *ex2 = t.s->current;
    REQUIRE(ex2 && ex2 != ex);
    CHECK_EQ_U64(ex2->round, 2);
    answer(ex, 1, 200, "{\"durable\":true}");
    answer(ex2, 1, 200, "{\"durable\":true}");
    answer(ex2, 2, 200, "{\"durable\":true}");
    CHECK_EQ_I64(g2.calls, 1);
    CHECK_EQ_I64(g2.value, 7);
    CHECK_EQ_I64(strong_value(t.s, "c", 1), 7);
    answer(ex2, 0, 200, "{\"durable\":true}");
    leader_free(&t);
}

static void test_round_no_replica_took_fails_certainly(void)
{
    struct leader t;
    leader_init(&t);
    make_ready(&t);
    struct got g = {0};
    strong_increment(t.s, "d", 1, 1, on_done, &g);
    struct exchange *ex = t.s->current;
    REQUIRE(ex && ex->kind == EX_ACCEPT);
    const char *part = "{\"error\":\"partitioned\",\"detail\":\"x\"}";
    answer(ex, 0, 503, part);
    answer(ex, 1, 503, part);
    /* A majority can no longer accept, but a round that carries increments waits for
     * every answer: each one makes its answer more certain. */
    CHECK_EQ_I64(g.calls, 0);
    answer(ex, 2, 503, part);
    CHECK_EQ_I64(g.calls, 1);
    CHECK_EQ_I64(g.status, STRONG_NO_QUORUM);
    CHECK(strstr(g.detail, "needs 2 of 3 replicas") != NULL);
    CHECK(strstr(g.detail, "nothing was applied") != NULL);
    CHECK_EQ_I64(strong_value(t.s, "d", 1), 0);
    CHECK_EQ_U64(t.s->rounds_failed, 1);
    CHECK(t.s->current == NULL); /* the repair round waits for the retry timer */
    leader_free(&t);
}

static void test_round_a_replica_may_hold_is_settled_by_the_repair(void)
{
    struct leader t;
    leader_init(&t);
    make_ready(&t);
    struct got g = {0};
    strong_increment(t.s, "e", 1, 4, on_done, &g);
    struct exchange *ex = t.s->current;
    REQUIRE(ex);
    answer(ex, 0, 200, "{\"durable\":true}");          /* holds it */
    answer(ex, 1, 503, "{\"error\":\"partitioned\"}"); /* does not */
    answer(ex, 2, 503, "{\"error\":\"unavailable\"}"); /* may */
    /* Not answered yet: the repair round that starts now settles it. */
    CHECK_EQ_I64(g.calls, 0);
    struct exchange *rep = t.s->current;
    REQUIRE(rep && rep != ex && rep->repair_only && rep->settles);
    answer(rep, 0, 200, "{\"durable\":true}");
    answer(rep, 1, 200, "{\"durable\":true}");
    CHECK_EQ_I64(g.calls, 1);
    CHECK_EQ_I64(g.status, STRONG_NO_QUORUM); /* the repair replaced it: certainly not applied */
    CHECK_EQ_I64(strong_value(t.s, "e", 1), 0);
    answer(rep, 2, 200, "{\"durable\":true}");
    leader_free(&t);
}

static void test_newer_promise_sends_the_leader_back_to_recovery(void)
{
    struct leader t;
    leader_init(&t);
    make_ready(&t);
    struct got g = {0};
    strong_increment(t.s, "f", 1, 1, on_done, &g);
    struct exchange *ex = t.s->current;
    REQUIRE(ex);
    const char *stale = "{\"error\":\"stale_epoch\",\"promised\":7}";
    answer(ex, 0, 409, stale);
    answer(ex, 1, 409, "{\"error\":\"stale_epoch\",\"promised\":5}");
    answer(ex, 2, 409, stale);
    CHECK_EQ_I64(g.calls, 1);
    CHECK_EQ_I64(g.status, STRONG_NO_QUORUM); /* a 409 changes nothing on the replica */
    CHECK_EQ_I64(strong_ready(t.s), 0);
    CHECK_EQ_U64(t.s->next_epoch, 8); /* above every promise seen */
    leader_free(&t);
}

static void test_overflow_fails_alone(void)
{
    struct leader t;
    leader_init(&t);
    make_ready(&t);
    struct got big = {0}, over = {0}, ok = {0};
    strong_increment(t.s, "g", 1, INT64_MAX, on_done, &big);
    struct exchange *ex = t.s->current;
    REQUIRE(ex);
    answer(ex, 0, 200, "{\"durable\":true}");
    answer(ex, 1, 200, "{\"durable\":true}");
    CHECK_EQ_I64(big.value, INT64_MAX);
    answer(ex, 2, 200, "{\"durable\":true}");
    strong_increment(t.s, "g", 1, 1, on_done, &over);
    CHECK_EQ_I64(over.calls, 1);
    CHECK_EQ_I64(over.status, STRONG_OVERFLOW);
    CHECK_EQ_I64(strong_value(t.s, "g", 1), INT64_MAX);
    strong_increment(t.s, "g", 1, -1, on_done, &ok);
    REQUIRE(t.s->current);
    ex = t.s->current;
    answer(ex, 0, 200, "{\"durable\":true}");
    answer(ex, 1, 200, "{\"durable\":true}");
    CHECK_EQ_I64(ok.status, STRONG_OK);
    CHECK_EQ_I64(ok.value, INT64_MAX - 1);
    answer(ex, 2, 200, "{\"durable\":true}");
    leader_free(&t);
}

/* Queues a /v1 operation on key with token (NULL: none). */
static void submit(struct leader *t, enum strong_kind kind, const char *key, int64_t delta,
                   const char *token, struct got *g)
{
    struct strong_op op = {.kind = kind,
                           .name = key,
                           .len = strlen(key),
                           .amount = delta,
                           .token = token,
                           .tlen = token ? strlen(token) : 0};
    strong_submit(t->s, &op, on_done, g);
}

/* Every replica of the round in flight accepts it. */
static void all_accept(struct leader *t)
{
    struct exchange *ex = t->s->current;
    REQUIRE(ex && ex->kind == EX_ACCEPT);
    for (int i = 0; i < 3; i++)
        answer(ex, i, 200, "{\"durable\":true}");
}

/* A token rides in the round of its value; clear, delete, and a duplicate. */
static void test_tokens_clear_and_delete(void)
{
    struct leader t;
    leader_init(&t);
    make_ready(&t);
    struct got a = {0}, dup = {0}, cl = {0}, del = {0}, gone = {0}, again = {0};
    submit(&t, STRONG_ADD, "ns/c", 5, "t1", &a);
    REQUIRE(t.s->current);
    const struct strongrep_entry *te = strongrep_get(t.s->current->proposed, "~ns/t1", 6);
    REQUIRE(te != NULL);
    CHECK_EQ_I64(te->value, 5); /* the token's entry, in the same proposal as the value */
    all_accept(&t);
    CHECK_EQ_I64(a.status, STRONG_OK);
    submit(&t, STRONG_ADD, "ns/c", 5, "t1", &dup); /* committed: answered at once */
    CHECK_EQ_I64(dup.calls, 1);
    CHECK_EQ_I64(dup.duplicate, 1);
    CHECK_EQ_I64(dup.value, 5);
    CHECK_EQ_I64(strong_value(t.s, "ns/c", 4), 5);
    submit(&t, STRONG_CLEAR, "ns/c", 0, "t2", &cl);
    all_accept(&t);
    CHECK_EQ_I64(cl.before, 5);
    CHECK_EQ_I64(strong_value(t.s, "ns/c", 4), 0);
    submit(&t, STRONG_DELETE, "ns/c", 0, NULL, &del);
    all_accept(&t);
    int64_t v = -1;
    CHECK_EQ_I64(strong_get(t.s, "ns/c", 4, &v), 0);
    submit(&t, STRONG_CLEAR, "ns/c", 0, NULL, &gone);
    CHECK_EQ_I64(gone.status, STRONG_NOT_FOUND);
    submit(&t, STRONG_ADD, "ns/c", 2, NULL, &again); /* a new life from 0 */
    all_accept(&t);
    CHECK_EQ_I64(again.value, 2);
    leader_free(&t);
}

/* A token recovered from the replicas is a duplicate for the next leader; a failed round's
 * token is repaired to a tombstone (known not applied), so its retry applies. */
static void test_tokens_recovered_and_repaired(void)
{
    struct leader t;
    leader_init(&t);
    struct exchange *ex = t.s->current;
    REQUIRE(ex && ex->kind == EX_PREPARE);
    answer(ex, 0, 200, "{\"durable\":true,\"entries\":[[\"ns/c\",1,3,15],[\"~ns/t\",1,3,15]]}");
    answer(ex, 1, 200, OK_DURABLE);
    answer(ex, 2, 200, OK_DURABLE);
    all_accept(&t); /* the repair round of what was recovered */
    struct got dup = {0}, f = {0}, retry = {0};
    submit(&t, STRONG_ADD, "ns/c", 5, "t", &dup);
    CHECK_EQ_I64(dup.calls, 1);
    CHECK_EQ_I64(dup.duplicate, 1);
    CHECK_EQ_I64(strong_value(t.s, "ns/c", 4), 15);
    submit(&t, STRONG_ADD, "ns/c", 1, "u", &f);
    ex = t.s->current;
    REQUIRE(ex);
    answer(ex, 0, 200, "{\"durable\":true}");          /* holds it */
    answer(ex, 1, 503, "{\"error\":\"partitioned\"}"); /* does not */
    answer(ex, 2, 503, "{\"error\":\"partitioned\"}");
    struct exchange *rep = t.s->current;
    REQUIRE(rep && rep->repair_only);
    const struct strongrep_entry *te = strongrep_get(rep->proposed, "~ns/u", 5);
    REQUIRE(te != NULL);
    CHECK_EQ_I64(te->value, STRONGREP_DELETED);
    all_accept(&t);
    CHECK_EQ_I64(f.status, STRONG_NO_QUORUM);
    submit(&t, STRONG_ADD, "ns/c", 1, "u", &retry);
    all_accept(&t);
    CHECK_EQ_I64(retry.duplicate, 0);
    CHECK_EQ_I64(retry.value, 16);
    leader_free(&t);
}

UNIT_MAIN("test_strong", UNIT_CASE(test_static_rules),
          UNIT_CASE(test_prepare_recovers_the_highest_ballot),
          UNIT_CASE(test_round_commits_on_a_majority),
          UNIT_CASE(test_round_no_replica_took_fails_certainly),
          UNIT_CASE(test_round_a_replica_may_hold_is_settled_by_the_repair),
          UNIT_CASE(test_newer_promise_sends_the_leader_back_to_recovery),
          UNIT_CASE(test_overflow_fails_alone), UNIT_CASE(test_tokens_clear_and_delete),
          UNIT_CASE(test_tokens_recovered_and_repaired))
