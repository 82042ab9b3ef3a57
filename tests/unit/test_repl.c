/*
 * test_repl.c - core/repl (repl.c, repl_body.c, repl_merge.c, repl_serve.c)
 * without a network: a repl is built with one peer that is never contacted (the loop is
 * never run), and its pure parts are driven through repl_internal.h: the merge of a
 * /sync body (max-merge, idempotence, rejected entries, malformed bodies), the pages this
 * node writes (full and delta, the receiver's own state left out) read back by a second
 * node, the cursors it gives out, and the partition and faults-policy decisions.
 */
#include <event2/event.h>
#include <stdio.h>
#include <string.h>

#include "base/json.h"
#include "obs/metrics.h"
#include "repl/repl_internal.h"
#include "store/gstore.h"
#include "unit.h"

struct node {
    struct event_base *base;
    struct gstore *store;
    struct metrics *reg;
    struct repl *r;
    struct json_parser jp;
    int changed_calls;
};

static int decide_verdict = REPL_DELIVER, decide_delay = 0;

static int hook_decide(void *arg, const char *dir, const char *from, const char *to,
                       const char *kind, int partitioned, int *delay_ms)
{
    *delay_ms = decide_delay;
    return decide_verdict;
}

static void hook_changed(void *arg, uint32_t id)
{
    ((struct node *)arg)->changed_calls++;
}

static void node_init(struct node *n, const char *node_id)
{
    memset(n, 0, sizeof *n);
    n->base = event_base_new();
    n->store = gstore_new();
    n->reg = metrics_new();
    json_parser_init(&n->jp);
    static const char *const peers[1] = {"http://127.0.0.1:9/"};
    struct repl_config cfg = {.node_id = node_id, .region = "test", .peers = peers, .npeers = 1};
    struct repl_hooks hooks = {.decide = hook_decide, .changed = hook_changed, .arg = n};
    n->r = repl_new(n->base, NULL, n->store, n->reg, &cfg, &hooks);
}

static void node_free(struct node *n)
{
    repl_free(n->r);
    json_parser_free(&n->jp);
    metrics_free(n->reg);
    gstore_free(n->store);
    event_base_free(n->base);
}

/* Merges body into n with origin. @return what repl__merge_body returns. */
static int merge(struct node *n, const char *body, int origin, struct merge_error *e)
{
    const struct json *root = json_parse(&n->jp, body, strlen(body));
    if (!root) {
        unit_fail(__FILE__, __LINE__, "test body is not JSON: %s", body);
        return -99;
    }
    return repl__merge_body(n->r, root, origin, e);
}

static int64_t value(struct node *n, const char *name)
{
    uint32_t id = gstore_find(n->store, name, strlen(name));
    return id == GSTORE_NONE ? -1 : gstore_counter_value(gstore_counter(n->store, id));
}

static void test_merge_is_max_and_idempotent(void)
{
    struct node n;
    node_init(&n, "a-1");
    struct merge_error e;
    const char *body = "{\"node_id\":\"b-1\",\"counts\":{\"c\":{\"b-1\":5,\"c-1\":2}},"
                       "\"decrements\":{\"c\":{\"b-1\":1}}}";
    CHECK_EQ_I64(merge(&n, body, 0, &e), 2);
    CHECK_EQ_I64(value(&n, "c"), 6);
    CHECK_EQ_I64(n.changed_calls, 1);
    /* The same body again changes nothing; a lower value never lowers a replica. */
    CHECK_EQ_I64(merge(&n, body, 0, &e), 0);
    CHECK_EQ_I64(merge(&n, "{\"counts\":{\"c\":{\"b-1\":3}}}", 0, &e), 0);
    CHECK_EQ_I64(value(&n, "c"), 6);
    CHECK_EQ_I64(merge(&n, "{\"counts\":{\"c\":{\"b-1\":9}}}", 0, &e), 1);
    CHECK_EQ_I64(value(&n, "c"), 10);
    CHECK_EQ_I64(n.changed_calls, 2);
    /* A name given twice merges both, by max. */
    CHECK_EQ_I64(merge(&n, "{\"counts\":{\"d\":{\"b-1\":4},\"d\":{\"b-1\":7}}}", 0, &e), 1);
    CHECK_EQ_I64(value(&n, "d"), 7);
    node_free(&n);
}

static void test_merge_skips_what_it_cannot_hold(void)
{
    struct node n;
    node_init(&n, "a-1");
    struct merge_error e;
    const char *body = "{\"counts\":{\"ok\":{\"b-1\":3,\"c-1\":-1,\"d-1\":1.5,\"\":2},"
                       "\"bad name\":{\"b-1\":1},\"x\":7}}";
    CHECK_EQ_I64(merge(&n, body, 0, &e), 1);
    CHECK_EQ_I64(value(&n, "ok"), 3);
    CHECK_EQ_I64(value(&n, "bad name"), -1);
    CHECK_EQ_I64(value(&n, "x"), -1);
    CHECK_EQ_I64((int64_t)n.r->nrejects, 5);
    CHECK_EQ_I64(n.r->nlisted, 5);
    const char *want[5] = {"negative", "not_an_integer", "bad_node_id", "bad_name",
                           "not_an_object"};
    for (int i = 0; i < 5 && i < n.r->nlisted; i++)
        CHECK_STR_EQ(n.r->rejects[i].reason, want[i]);
    /* The answer lists them. */
    buf_reset(&n.r->out);
    buf_puts(&n.r->out, "{}");
    repl__put_rejects(n.r);
    CHECK(strstr(buf_cstr(&n.r->out), "\"rejected_count\":5}") != NULL);
    CHECK(strstr(buf_cstr(&n.r->out), "{\"counter\":\"ok\",\"node_id\":\"c-1\",\"reason\":"
                                      "\"negative\"}") != NULL);
    node_free(&n);
}

static void test_malformed_bodies_merge_nothing(void)
{
    struct node n;
    node_init(&n, "a-1");
    struct merge_error e;
    CHECK_EQ_I64(merge(&n, "{\"node_id\":\"b-1\"}", 0, &e), -1);
    CHECK_EQ_I64(e.status, 400);
    CHECK_STR_EQ(e.code, "bad_field");
    CHECK_STR_EQ(e.detail, "counts must be an object of counters");
    CHECK_EQ_I64(merge(&n, "{\"counts\":{\"c\":{\"b-1\":1}},\"decrements\":[]}", 0, &e), -1);
    CHECK_STR_EQ(e.detail, "decrements must be an object of counters");
    CHECK_EQ_I64(merge(&n, "{\"counts\":{\"c\":{\"b-1\":1}},\"folded\":3}", 0, &e), -1);
    CHECK_EQ_I64(gstore_count(n.store), 0);
    /* "decrements": null is no decrements. */
    CHECK_EQ_I64(merge(&n, "{\"counts\":{\"c\":{\"b-1\":1}},\"decrements\":null}", 0, &e), 1);
    node_free(&n);
}

/* A's state written as pages and merged into B equals A's, page after page. */
static void test_pages_round_trip(void)
{
    struct node a, b;
    node_init(&a, "a-1");
    node_init(&b, "b-1");
    int rep = gstore_replica(a.store, "a-1", 3);
    char name[32];
    for (int i = 0; i < 50; i++) {
        snprintf(name, sizeof name, "k%d", i);
        uint32_t id = gstore_create(a.store, name, strlen(name));
        CHECK_EQ_I64(gstore_incr(a.store, id, rep, i + 1), 0);
        if (i % 7 == 0)
            CHECK_EQ_I64(gstore_incr(a.store, id, rep, -1), 0);
    }
    a.r->page_bytes = 200; /* several pages */
    uint32_t next = 0;
    int pages = 0;
    struct merge_error e;
    while (next < gstore_count(a.store) && pages < 100) {
        repl__page_begin(a.r);
        repl__page_full(a.r, &next);
        repl__body_finish(a.r, NULL, "x", next < gstore_count(a.store));
        CHECK(merge(&b, buf_cstr(&a.r->out), 1, &e) > 0);
        pages++;
    }
    CHECK(pages > 1);
    for (int i = 0; i < 50; i++) {
        snprintf(name, sizeof name, "k%d", i);
        CHECK_EQ_I64(value(&b, name), value(&a, name));
    }
    /* A delta after A's current seq is empty; one change makes a page of one counter. */
    uint64_t seq = gstore_seq(a.store), upto = 0;
    repl__page_begin(a.r);
    CHECK_EQ_I64(repl__page_delta(a.r, seq, 0, &upto), 0);
    CHECK_EQ_I64(a.r->page_counters, 0);
    CHECK_EQ_U64(upto, seq);
    CHECK_EQ_I64(gstore_incr(a.store, gstore_find(a.store, "k3", 2), rep, 10), 0);
    repl__page_begin(a.r);
    CHECK_EQ_I64(repl__page_delta(a.r, seq, 0, &upto), 0);
    CHECK_EQ_I64(a.r->page_counters, 1);
    CHECK_EQ_U64(upto, gstore_seq(a.store));
    node_free(&a);
    node_free(&b);
}

static void sync_done(void *arg, int completed)
{
    *(int *)arg = completed ? 1 : -1;
}

/* A full-state page grows the page buffers and the merge tables to megabytes; the end of a
 * round gives that back (a node idling after a full sync must not keep its peak), and the
 * next page still builds and merges. */
static void test_round_end_gives_back_scratch(void)
{
    struct node a, b;
    node_init(&a, "a-1");
    memset(&b, 0, sizeof b);
    b.base = event_base_new();
    b.store = gstore_new();
    b.reg = metrics_new();
    json_parser_init(&b.jp);
    struct repl_config cfg = {.node_id = "b-1", .region = "test"}; /* no peers */
    struct repl_hooks hooks = {.decide = hook_decide, .changed = hook_changed, .arg = &b};
    b.r = repl_new(b.base, NULL, b.store, b.reg, &cfg, &hooks);
    int rep = gstore_replica(a.store, "a-1", 3);
    char name[32];
    for (int i = 0; i < 40000; i++) {
        snprintf(name, sizeof name, "counter-%d", i);
        CHECK_EQ_I64(gstore_incr(a.store, gstore_create(a.store, name, strlen(name)), rep, 7), 0);
    }
    a.r->page_bytes = 8u << 20; /* one page */
    uint32_t next = 0;
    struct merge_error e;
    repl__page_begin(a.r);
    repl__page_full(a.r, &next);
    repl__body_finish(a.r, NULL, "x", 0);
    CHECK_EQ_U64(next, gstore_count(a.store));
    CHECK(merge(&b, buf_cstr(&a.r->out), 1, &e) > 0);
    /* b builds the same page back: its own buffers grow too. */
    b.r->page_bytes = 8u << 20;
    next = 0;
    repl__page_begin(b.r);
    repl__page_full(b.r, &next);
    repl__body_finish(b.r, NULL, "x", 0);
    CHECK(b.r->out.cap > (512u << 10));
    CHECK(b.r->items_cap >= 40000);
    CHECK(b.r->raw_cap >= 40000);
    int done = 0;
    repl_sync_now(b.r, sync_done, &done); /* no peers: the round ends at once */
    CHECK_EQ_I64(done, 1);
    CHECK(b.r->out.cap <= (256u << 10) && b.r->counts.cap <= (256u << 10));
    CHECK_EQ_U64(b.r->items_cap, 0);
    CHECK_EQ_U64(b.r->raw_cap, 0);
    CHECK_EQ_U64(b.r->seen_cap, 0);
    CHECK(b.r->parser.chunks == NULL && b.r->parser.stack_cap == 0);
    /* And it works again from nothing. */
    CHECK_EQ_I64(gstore_incr(a.store, gstore_find(a.store, "counter-5", 9), rep, 1), 0);
    next = 0;
    repl__page_begin(a.r);
    repl__page_full(a.r, &next);
    repl__body_finish(a.r, NULL, "x", 0);
    CHECK_EQ_I64(merge(&b, buf_cstr(&a.r->out), 1, &e), 1);
    CHECK_EQ_I64(value(&b, "counter-5"), 8);
    node_free(&a);
    node_free(&b);
}

/* What came whole from a peer is not sent back to it in a delta, and is to the others. */
static void test_delta_leaves_out_the_receivers_own_state(void)
{
    struct node n;
    node_init(&n, "a-1");
    struct merge_error e;
    uint64_t s0 = gstore_seq(n.store), upto;
    CHECK_EQ_I64(merge(&n, "{\"counts\":{\"p\":{\"b-1\":4}}}", 1, &e), 1);
    repl__page_begin(n.r);
    repl__page_delta(n.r, s0, 1, &upto);
    CHECK_EQ_I64(n.r->page_counters, 0);
    repl__page_begin(n.r);
    repl__page_delta(n.r, s0, 2, &upto);
    CHECK_EQ_I64(n.r->page_counters, 1);
    node_free(&n);
}

static void test_cursors(void)
{
    struct node n;
    node_init(&n, "a-1");
    const char *inc = repl_incarnation(n.r);
    char c[128];
    int full = -1;
    uint64_t seq = 0, base = 0;
    uint32_t next = 0;
    snprintf(c, sizeof c, "D.%s.42", inc);
    CHECK_EQ_I64(repl__parse_cursor(n.r, c, &full, &seq, &next, &base), 0);
    CHECK(full == 0 && seq == 42 && base == 42);
    snprintf(c, sizeof c, "D.%s.42.7", inc);
    CHECK_EQ_I64(repl__parse_cursor(n.r, c, &full, &seq, &next, &base), 0);
    CHECK(full == 0 && seq == 42 && base == 7);
    snprintf(c, sizeof c, "F.%s.9.13", inc);
    CHECK_EQ_I64(repl__parse_cursor(n.r, c, &full, &seq, &next, &base), 0);
    CHECK(full == 1 && seq == 9 && next == 13);
    /* A base after the seq, another incarnation's, or junk: full state. */
    snprintf(c, sizeof c, "D.%s.7.42", inc);
    CHECK_EQ_I64(repl__parse_cursor(n.r, c, &full, &seq, &next, &base), -1);
    CHECK_EQ_I64(repl__parse_cursor(n.r, "D.0123456789abcdef.5", &full, &seq, &next, &base),
                 strcmp(inc, "0123456789abcdef") == 0 ? 0 : -1);
    snprintf(c, sizeof c, "X.%s.5", inc);
    CHECK_EQ_I64(repl__parse_cursor(n.r, c, &full, &seq, &next, &base), -1);
    CHECK_EQ_I64(repl__parse_cursor(n.r, "", &full, &seq, &next, &base), -1);
    snprintf(c, sizeof c, "D.%s.5x", inc);
    CHECK_EQ_I64(repl__parse_cursor(n.r, c, &full, &seq, &next, &base), -1);
    node_free(&n);
}

static void test_decisions(void)
{
    struct node n;
    node_init(&n, "a-1");
    int delay;
    decide_verdict = REPL_DELIVER;
    CHECK_EQ_I64(repl__decide(n.r, "out", "a-1", "b-1", &delay), REPL_DELIVER);
    decide_verdict = REPL_DROP;
    CHECK_EQ_I64(repl__decide(n.r, "out", "a-1", "b-1", &delay), REPL_DROP);
    decide_verdict = REPL_DELAY;
    decide_delay = 250;
    CHECK_EQ_I64(repl__decide(n.r, "in", "b-1", "a-1", &delay), REPL_DELAY);
    CHECK_EQ_I64(delay, 250);
    decide_delay = 0; /* a delay of nothing is a delivery */
    CHECK_EQ_I64(repl__decide(n.r, "in", "b-1", "a-1", &delay), REPL_DELIVER);
    decide_verdict = -1; /* a failed hook: as if there were none */
    CHECK_EQ_I64(repl__decide(n.r, "in", "b-1", "a-1", &delay), REPL_DELIVER);
    /* The partition drops whatever the policy says. */
    decide_verdict = REPL_DELIVER;
    repl_set_partition(n.r, 1);
    CHECK_EQ_I64(repl__decide(n.r, "out", "a-1", "b-1", &delay), REPL_DROP);
    repl_set_partition(n.r, 0);
    CHECK_EQ_I64(repl__decide(n.r, "out", "a-1", "b-1", &delay), REPL_DELIVER);
    /* Origins: a configured peer's position + 1 once its node id is known, else 0. */
    CHECK_EQ_I64(repl__origin_of_node(n.r, "b-1"), 0);
    snprintf(n.r->peers[0].node_id, sizeof n.r->peers[0].node_id, "b-1");
    CHECK_EQ_I64(repl__origin_of_node(n.r, "b-1"), 1);
    CHECK_EQ_I64(repl__peer_origin(&n.r->peers[0]), 1);
    CHECK_STR_EQ(n.r->peers[0].url, "http://127.0.0.1:9");
    CHECK_STR_EQ(n.r->peers[0].sync_url, "http://127.0.0.1:9/sync");
    node_free(&n);
}

UNIT_MAIN("test_repl", UNIT_CASE(test_merge_is_max_and_idempotent),
          UNIT_CASE(test_merge_skips_what_it_cannot_hold),
          UNIT_CASE(test_malformed_bodies_merge_nothing), UNIT_CASE(test_pages_round_trip),
          UNIT_CASE(test_delta_leaves_out_the_receivers_own_state), UNIT_CASE(test_cursors),
          UNIT_CASE(test_decisions), UNIT_CASE(test_round_end_gives_back_scratch))
