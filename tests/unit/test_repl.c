/*
 * test_repl.c - core/repl (repl.c, repl_body.c, repl_merge.c, repl_serve.c)
 * without a network: a repl is built with one peer that is never contacted (the loop is
 * never run), and its pure parts are driven through repl_internal.h: the merge of a
 * /sync body (max-merge, idempotence, rejected entries, malformed bodies), the pages this
 * node writes (full and delta, the receiver's own state left out) read back by a second
 * node, the cursors it gives out, and the partition and faults-policy decisions.
 */
#include <arpa/inet.h>
#include <event2/event.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/clock.h"
#include "base/json.h"
#include "net/client.h"
#include "base/mem.h"
#include "obs/metrics.h"
#include "repl/repl_internal.h"
#include "store/gstore.h"
#include "store/tokset.h"
#include "unit.h"

struct node {
    struct event_base *base;
    struct gstore *store;
    struct metrics *reg;
    struct repl *r;
    struct client *client; /* for the tests that make calls; NULL otherwise */
    struct json_parser jp;
    int changed_calls;
    struct tokset *ts;
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

static void hook_tokens(void *arg, uint32_t id, const struct repl_token *el, size_t n)
{
    struct node *nd = arg;
    for (size_t i = 0; i < n; i++)
        tokset_merge(nd->ts, id, el[i].tok, el[i].tlen, el[i].amount, el[i].settled,
                     gstore_seq(nd->store));
}

/* The replicated hook of the tests: keys of namespace "r" stay where they are. */
static int hook_replicated(void *arg, const char *key, size_t len)
{
    (void)arg;
    return !(len > 2 && memcmp(key, "r/", 2) == 0);
}

static void hook_put_ext(void *arg, struct buf *b)
{
    (void)arg;
    buf_puts(b, ",\"namespaces\":{\"v\":1}");
}

static void node_init_peer(struct node *n, const char *node_id, const char *peer_url)
{
    memset(n, 0, sizeof *n);
    n->base = event_base_new();
    n->store = gstore_new();
    n->reg = metrics_new();
    json_parser_init(&n->jp);
    n->ts = tokset_new();
    const char *peers[1] = {peer_url};
    struct repl_config cfg = {
        .node_id = node_id, .region = "test", .peers = peers, .npeers = 1, .tokset = n->ts};
    struct repl_hooks hooks = {.decide = hook_decide,
                               .changed = hook_changed,
                               .tokens = hook_tokens,
                               .replicated = hook_replicated,
                               .put_ext = hook_put_ext,
                               .arg = n};
    n->r = repl_new(n->base, NULL, n->store, n->reg, &cfg, &hooks);
}

static void node_init(struct node *n, const char *node_id)
{
    node_init_peer(n, node_id, "http://127.0.0.1:9/");
}

static void node_free(struct node *n)
{
    repl_free(n->r);
    client_free(n->client); /* the repl's calls are cancelled: the client may go */
    tokset_free(n->ts);
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

/* ---------------------------------------------------------------- the compact body */

/* Merges body[0..len) (JSON or compact) into n as a /sync message, tokens included. */
static int merge_any(struct node *n, const char *body, size_t len, struct merge_error *e)
{
    const struct json *root = repl__parse(n->r, body, len);
    if (!root) {
        snprintf(e->detail, sizeof e->detail, "%s", n->r->parser.err);
        return -2;
    }
    int rc = repl__merge_body(n->r, root, 0, e);
    if (rc >= 0)
        repl__apply_tokens(n->r, root, "test");
    return rc;
}

/* A's whole state as pages (compact or JSON) merged into b. @return the pages. */
static int copy_state(struct node *a, struct node *b, int compact)
{
    uint32_t next = 0;
    int pages = 0;
    struct merge_error e;
    a->r->tok_after = 0;
    while (next < gstore_count(a->store) && pages < 1000) {
        repl__page_begin(a->r);
        a->r->compact_out = compact;
        repl__page_full(a->r, &next);
        repl__body_finish(a->r, NULL, "x", next < gstore_count(a->store));
        const char *body = a->r->out.data;
        size_t len = a->r->out.len;
        if (compact) {
            repl__compact_wrap(a->r);
            body = a->r->cout.data;
            len = a->r->cout.len;
        }
        a->r->compact_out = 0;
        CHECK(merge_any(b, body, len, &e) >= 0);
        pages++;
    }
    return pages;
}

struct tok_cmp {
    struct node *other;
    uint32_t other_id;
    int diffs, n;
};

static void cmp_token(void *arg, uint32_t id, const char *tok, size_t tlen, int64_t amount,
                      int settled, uint64_t seq)
{
    struct tok_cmp *t = arg;
    int64_t a2 = 0;
    int s2 = -1;
    int found = tokset_get(t->other->ts, t->other_id, tok, tlen, &a2, &s2);
    t->n++;
    if (!found || a2 != amount || s2 != settled)
        t->diffs++;
}

/* Whether counter id of x is the same in y: entries and folded replicas by name, tokens. */
static int same_counter(struct node *x, struct node *y, uint32_t id)
{
    size_t nlen;
    const struct gcounter *c = gstore_counter(x->store, id);
    const char *name = gstore_counter_name(c, &nlen);
    uint32_t yid = gstore_find(y->store, name, nlen);
    if (yid == GSTORE_NONE)
        return 0;
    const struct gcounter *d = gstore_counter(y->store, yid);
    unsigned n = gstore_counter_entries(c), found = 0;
    if (n != gstore_counter_entries(d))
        return 0;
    for (unsigned i = 0; i < n; i++) {
        struct gentry e, f;
        gstore_counter_entry(c, i, &e);
        for (unsigned j = 0; j < n; j++) {
            gstore_counter_entry(d, j, &f);
            if (strcmp(gstore_replica_name(x->store, e.rep), gstore_replica_name(y->store, f.rep)))
                continue;
            found += e.pos == f.pos && e.neg == f.neg;
        }
    }
    const uint16_t *fx, *fy;
    unsigned nfx = gstore_folded_list(x->store, id, &fx),
             nfy = gstore_folded_list(y->store, yid, &fy);
    if (found != n || nfx != nfy)
        return 0;
    for (unsigned i = 0; i < nfx; i++) {
        int hit = 0;
        for (unsigned j = 0; j < nfy; j++)
            hit |=
                !strcmp(gstore_replica_name(x->store, fx[i]), gstore_replica_name(y->store, fy[j]));
        if (!hit)
            return 0;
    }
    struct tok_cmp t = {y, yid, 0, 0};
    tokset_each(x->ts, id, 0, cmp_token, &t);
    return !t.diffs && (unsigned)t.n == tokset_elements(y->ts, yid);
}

/* A random store: counters of up to 5 replicas (values up to INT64_MAX), decrements,
 * folded replicas and token-set elements. */
static void random_store(struct node *a, unsigned seed)
{
    static const char *reps[6] = {"b-1", "b-1~aa01", "c-2~zz9", "d-3", "e-4~q1w2", "f-5~0000"};
    struct merge_error e;
    char body[1024], name[32];
    for (int i = 0; i < 300; i++) {
        seed = seed * 1103515245u + 12345u;
        snprintf(name, sizeof name, "r%u.%d", seed % 1000, i);
        int len = snprintf(body, sizeof body, "{\"counts\":{\"%s\":{", name);
        int k = 1 + (int)(seed >> 8) % 5;
        for (int j = 0; j < k; j++) {
            uint64_t v = (seed >> 3) % 4 == 0 ? (uint64_t)INT64_MAX - (uint64_t)j : seed % 100000;
            len += snprintf(body + len, sizeof body - (size_t)len, "%s\"%s\":%llu", j ? "," : "",
                            reps[(j + i) % 5], (unsigned long long)v);
        }
        len += snprintf(body + len, sizeof body - (size_t)len, "}}");
        if (i % 3 == 0)
            len += snprintf(body + len, sizeof body - (size_t)len,
                            ",\"decrements\":{\"%s\":{\"%s\":%u}}", name, reps[i % 5], seed % 977);
        if (i % 11 == 0)
            len += snprintf(body + len, sizeof body - (size_t)len, ",\"folded\":{\"%s\":[\"%s\"]}",
                            name, reps[5]);
        snprintf(body + len, sizeof body - (size_t)len, "}");
        CHECK(merge(a, body, 0, &e) >= 0);
        uint32_t id = gstore_find(a->store, name, strlen(name));
        for (int t = 0; i % 4 == 1 && t < 3; t++) {
            char tok[16];
            snprintf(tok, sizeof tok, "tok%d-%d", i, t);
            tokset_merge(a->ts, id, tok, strlen(tok), t % 2 ? -(int64_t)t - 5 : INT64_MAX - t,
                         t == 1, gstore_seq(a->store));
        }
    }
}

/* A random store copied as compact pages equals the same store copied as JSON pages. */
static void test_compact_round_trip(void)
{
    for (unsigned seed = 1; seed <= 5; seed++) {
        struct node a, b, c;
        node_init(&a, "a-1");
        node_init(&b, "b-2");
        node_init(&c, "c-3");
        random_store(&a, seed);
        a.r->page_bytes = 700 * seed; /* several pages */
        CHECK(copy_state(&a, &b, 0) > 1);
        CHECK(copy_state(&a, &c, 1) > 1);
        CHECK_EQ_I64(gstore_count(c.store), gstore_count(a.store));
        CHECK_EQ_I64(gstore_count(b.store), gstore_count(a.store));
        CHECK(tokset_count(c.ts) > 0);
        CHECK_EQ_I64((int64_t)tokset_count(c.ts), (int64_t)tokset_count(b.ts));
        int diffs = 0;
        for (uint32_t id = 0; id < gstore_count(a.store); id++)
            diffs += !same_counter(&a, &c, id) + !same_counter(&b, &c, id);
        CHECK_EQ_I64(diffs, 0);
        /* A compact page is much smaller than the JSON page of the same counters. */
        uint32_t next = 0;
        a.r->page_bytes = 1 << 30;
        repl__page_begin(a.r);
        repl__page_full(a.r, &next);
        repl__body_finish(a.r, NULL, "x", 0);
        size_t json_len = a.r->out.len;
        repl__page_begin(a.r);
        a.r->compact_out = 1;
        next = 0;
        repl__page_full(a.r, &next);
        repl__body_finish(a.r, NULL, "x", 0);
        repl__compact_wrap(a.r);
        a.r->compact_out = 0;
        CHECK(a.r->cout.len * 2 < json_len);
        node_free(&a);
        node_free(&b);
        node_free(&c);
    }
}

/* Compact bodies built by hand. */
static void cb_varint(struct buf *b, uint64_t v)
{
    do {
        buf_putc(b, (char)((v & 0x7f) | (v > 0x7f ? 0x80 : 0)));
        v >>= 7;
    } while (v);
}

static void cb_str(struct buf *b, const char *s)
{
    cb_varint(b, strlen(s));
    buf_puts(b, s);
}

/* "CSB1", the envelope, a table of reps (NULL-terminated): the start of a compact body. */
static void cb_begin(struct buf *b, const char *const *reps)
{
    const char *env = "{\"node_id\":\"z-9\",\"incarnation\":\"00\",\"counts\":{}}";
    buf_reset(b);
    buf_puts(b, "CSB1");
    cb_str(b, env);
    unsigned n = 0;
    while (reps[n])
        n++;
    cb_varint(b, n);
    for (unsigned i = 0; i < n; i++)
        cb_str(b, reps[i]);
}

/* Entries this node cannot hold are skipped with the JSON body's reasons. */
static void test_compact_rejects_entries(void)
{
    struct node n;
    node_init(&n, "a-1");
    struct buf b = {0};
    struct merge_error e;
    static const char *const reps[] = {"b-1", "bad id!", "c-2~x1", NULL};
    cb_begin(&b, reps);
    cb_varint(&b, 3);
    cb_str(&b, "ok"); /* b-1: 5, "bad id!": 1, c-2~x1: 2^63 */
    cb_varint(&b, 3);
    cb_varint(&b, 0), cb_varint(&b, 5), cb_varint(&b, 1);
    cb_varint(&b, 1), cb_varint(&b, 1), cb_varint(&b, 0);
    cb_varint(&b, 2), cb_varint(&b, (uint64_t)INT64_MAX + 1), cb_varint(&b, 0);
    cb_varint(&b, 0), cb_varint(&b, 0);
    cb_str(&b, "bad name"); /* two entries, skipped */
    cb_varint(&b, 2);
    cb_varint(&b, 0), cb_varint(&b, 1), cb_varint(&b, 0);
    cb_varint(&b, 2), cb_varint(&b, 1), cb_varint(&b, 0);
    cb_varint(&b, 0), cb_varint(&b, 0);
    cb_str(&b, "fold"); /* folds a bare node id: skipped whole */
    cb_varint(&b, 1);
    cb_varint(&b, 2), cb_varint(&b, 7), cb_varint(&b, 0);
    cb_varint(&b, 1), cb_varint(&b, 0);
    cb_varint(&b, 0);
    CHECK_EQ_I64(merge_any(&n, b.data, b.len, &e), 1);
    CHECK_EQ_I64(value(&n, "ok"), 4);
    CHECK_EQ_I64(value(&n, "bad name"), -1);
    CHECK_EQ_I64(value(&n, "fold"), -1);
    CHECK_EQ_I64((int64_t)n.r->nrejects, 5);
    const char *want[4] = {"bad_node_id", "out_of_range", "bad_name", "folded_bad_id"};
    CHECK_EQ_I64(n.r->nlisted, 4);
    for (int i = 0; i < 4 && i < n.r->nlisted; i++)
        CHECK_STR_EQ(n.r->rejects[i].reason, want[i]);
    buf_free(&b);
    node_free(&n);
}

/* A compact body whose structure is wrong is refused whole, naming what is wrong: cut at
 * every length, an index beyond the table, a bad settled byte, bytes after the end. */
static void test_compact_malformed_refused_whole(void)
{
    struct node n;
    node_init(&n, "a-1");
    struct buf b = {0};
    struct merge_error e;
    static const char *const reps[] = {"b-1", "c-2~x1", NULL};
    cb_begin(&b, reps);
    size_t head = b.len;
    cb_varint(&b, 2);
    cb_str(&b, "k1");
    cb_varint(&b, 2);
    cb_varint(&b, 0), cb_varint(&b, 300), cb_varint(&b, 2);
    cb_varint(&b, 1), cb_varint(&b, 1u << 20), cb_varint(&b, 0);
    cb_varint(&b, 0);
    cb_varint(&b, 1), cb_str(&b, "t1"), cb_varint(&b, 9), buf_putc(&b, 1);
    cb_str(&b, "k2");
    cb_varint(&b, 1);
    cb_varint(&b, 1), cb_varint(&b, 4), cb_varint(&b, 0);
    cb_varint(&b, 0), cb_varint(&b, 0);
    for (size_t cut = 4; cut < b.len; cut++) {
        int rc = merge_any(&n, b.data, cut, &e);
        CHECK(rc == -1 || rc == -2);
        CHECK(strstr(e.detail, cut < head ? "" : "compact body") != NULL);
        CHECK_EQ_I64(gstore_count(n.store), 0);
    }
    buf_putc(&b, 0);
    CHECK_EQ_I64(merge_any(&n, b.data, b.len, &e), -1);
    CHECK_EQ_I64(e.status, 400);
    CHECK_STR_EQ(e.code, "bad_body");
    CHECK_STR_EQ(e.detail, "compact body: 1 bytes after the last counter");
    CHECK_EQ_I64(gstore_count(n.store), 0);
    b.len--;
    b.data[b.len - 5] = 2; /* k2's replica index: beyond the table of 2 */
    CHECK_EQ_I64(merge_any(&n, b.data, b.len, &e), -1);
    CHECK(strstr(e.detail, "beyond the table") != NULL);
    CHECK_EQ_I64(gstore_count(n.store), 0);
    b.data[b.len - 5] = 1;
    b.data[b.len - 10] = 2; /* t1's settled byte */
    CHECK_EQ_I64(merge_any(&n, b.data, b.len, &e), -1);
    CHECK(strstr(e.detail, "settled") != NULL);
    CHECK_EQ_I64(gstore_count(n.store), 0);
    b.data[b.len - 10] = 1;
    CHECK_EQ_I64(merge_any(&n, b.data, b.len, &e), 3);
    CHECK_EQ_I64(value(&n, "k1"), 300 - 2 + (1 << 20));
    CHECK_EQ_I64(value(&n, "k2"), 4);
    int64_t amount = 0;
    int settled = 0;
    CHECK_EQ_I64(tokset_get(n.ts, gstore_find(n.store, "k1", 2), "t1", 2, &amount, &settled), 1);
    CHECK_EQ_I64(amount, -5);
    CHECK_EQ_I64(settled, 1);
    buf_free(&b);
    node_free(&n);
}

/* ---------------------------------------------------------------- the counter lifecycle */

/* Whether counter name has the same lifecycle state (floors by replica name, flags) in x and
 * y, and the same value. */
static int same_life(struct node *x, struct node *y, const char *name)
{
    uint32_t ix = gstore_find(x->store, name, strlen(name));
    uint32_t iy = gstore_find(y->store, name, strlen(name));
    if (ix == GSTORE_NONE || iy == GSTORE_NONE)
        return 0;
    struct glife a, b;
    int ha = gstore_life(x->store, ix, &a), hb = gstore_life(y->store, iy, &b);
    if (ha != hb || a.flags != b.flags || a.nfloor != b.nfloor || a.ndfloor != b.ndfloor)
        return 0;
    for (int f = 0; f < 2; f++) {
        const struct gentry *fa = f ? a.dfloor : a.floor, *fb = f ? b.dfloor : b.floor;
        size_t n = f ? a.ndfloor : a.nfloor, hit = 0;
        for (size_t i = 0; i < n; i++)
            for (size_t j = 0; j < n; j++)
                hit += !strcmp(gstore_replica_name(x->store, fa[i].rep),
                               gstore_replica_name(y->store, fb[j].rep)) &&
                       fa[i].pos == fb[j].pos && fa[i].neg == fb[j].neg;
        if (hit != n)
            return 0;
    }
    return gstore_value(x->store, gstore_counter(x->store, ix)) ==
           gstore_value(y->store, gstore_counter(y->store, iy));
}

/* A store with cleared, deleted and sealed counters, in "default" and another namespace. */
static void life_store(struct node *a)
{
    struct merge_error e;
    CHECK(merge(a,
                "{\"counts\":{\"plain\":{\"b-1\":5},\"cl\":{\"b-1\":7,\"c-2~x\":3},"
                "\"ns1/cl\":{\"b-1\":9},\"del\":{\"b-1\":4},\"sealed\":{\"c-2~x\":2}},"
                "\"decrements\":{\"cl\":{\"c-2~x\":1}}}",
                0, &e) > 0);
    CHECK_EQ_I64(gstore_clear(a->store, gstore_find(a->store, "cl", 2)), 0);
    CHECK_EQ_I64(gstore_clear(a->store, gstore_find(a->store, "ns1/cl", 6)), 0);
    CHECK_EQ_I64(gstore_delete(a->store, gstore_find(a->store, "del", 3)), 0);
    CHECK_EQ_I64(gstore_delete(a->store, gstore_find(a->store, "sealed", 6)), 0);
    CHECK_EQ_I64(gstore_seal(a->store, gstore_find(a->store, "sealed", 6)), 1);
    /* Counted again after the clear: above the floor. */
    CHECK(merge(a, "{\"counts\":{\"cl\":{\"b-1\":10}}}", 0, &e) > 0);
}

/* Floors, delete floors and flags travel in JSON and compact pages alike and are merged. */
static void test_life_round_trip(void)
{
    struct node a, b, c;
    node_init(&a, "a-1");
    node_init(&b, "b-2");
    node_init(&c, "c-3");
    life_store(&a);
    repl__page_begin(a.r);
    uint32_t next = 0;
    repl__page_full(a.r, &next);
    repl__body_finish(a.r, NULL, "x", 0);
    char *out = xstrdup(buf_cstr(&a.r->out));
    CHECK(strstr(out, "\"floors\":{\"cl\":{\"pos\":{\"b-1\":7,\"c-2~x\":3},\"neg\":{\"c-2~x\":1}}"
                      ",\"ns1/cl\":{\"pos\":{\"b-1\":9},\"neg\":{}}") != NULL);
    CHECK(strstr(out, "\"dfloors\":{\"del\":{\"pos\":{\"b-1\":4},\"neg\":{}}") != NULL);
    CHECK(strstr(out, "\"life\":{\"del\":[\"deleted\"],\"sealed\":[\"deleted\",\"sealed\"]}") !=
          NULL);
    CHECK(strstr(out, "\"features\":[\"folded\",\"digest\",\"compact\",\"life\"]") != NULL);
    CHECK(strstr(out, ",\"namespaces\":{\"v\":1}") != NULL); /* put_ext */
    /* b and c hold "sealed" deleted, not sealed yet (as every node does when it is sealed). */
    const char *dead = "{\"features\":[\"life\"],\"counts\":{\"sealed\":{\"c-2~x\":2}},"
                       "\"floors\":{\"sealed\":{\"pos\":{\"c-2~x\":2}}},"
                       "\"dfloors\":{\"sealed\":{\"pos\":{\"c-2~x\":2}}},"
                       "\"life\":{\"sealed\":[\"deleted\"]}}";
    struct merge_error e;
    CHECK(merge(&b, dead, 0, &e) > 0 && merge(&c, dead, 0, &e) > 0);
    CHECK(copy_state(&a, &b, 0) == 1);
    a.r->life_out = 1;
    CHECK(copy_state(&a, &c, 1) == 1);
    a.r->life_out = 0;
    static const char *const names[5] = {"plain", "cl", "ns1/cl", "del", "sealed"};
    for (int i = 0; i < 5; i++) {
        unit_context("%s", names[i]);
        CHECK(same_life(&a, &b, names[i]));
        CHECK(same_life(&a, &c, names[i]));
    }
    unit_context("%s", "");
    CHECK_EQ_I64(value(&b, "cl"), 3);
    CHECK(gstore_dead(b.store, gstore_find(b.store, "del", 3)));
    CHECK(gstore_dead(c.store, gstore_find(c.store, "sealed", 6)));
    /* Merging the same again changes nothing. */
    CHECK_EQ_I64(merge(&b, out, 0, &e), 0);
    /* A sealed tombstone a node does not hold (it dropped it) is not created again. */
    struct node d;
    node_init(&d, "d-4");
    CHECK_EQ_I64(merge(&d, out, 0, &e) > 0, 1);
    CHECK_EQ_U64(gstore_find(d.store, "sealed", 6), GSTORE_NONE);
    CHECK(gstore_find(d.store, "del", 3) != GSTORE_NONE); /* deleted, not sealed: kept */
    node_free(&d);
    free(out);
    /* A compact page for a peer before "life" is "CSB1", without lifecycle state. */
    repl__page_begin(a.r);
    a.r->compact_out = 1;
    next = 0;
    repl__page_full(a.r, &next);
    repl__body_finish(a.r, NULL, "x", 0);
    repl__compact_wrap(a.r);
    a.r->compact_out = 0;
    CHECK(memcmp(a.r->cout.data, "CSB1", 4) == 0);
    node_free(&a);
    node_free(&b);
    node_free(&c);
}

/* A sealed tombstone takes a state without deletion whole (a new life) only from a node that
 * knows the lifecycle: the entries of one that does not (the original lab, counterd before
 * "life") are merged, so its old copy does not bring the counter back. */
static void test_sealed_tombstone_and_unaware_peers(void)
{
    struct node n;
    node_init(&n, "a-1");
    struct merge_error e;
    CHECK_EQ_I64(merge(&n, "{\"counts\":{\"s\":{\"b-1\":5,\"c-2\":3}}}", 0, &e), 2);
    uint32_t id = gstore_find(n.store, "s", 1);
    CHECK_EQ_I64(gstore_delete(n.store, id), 0);
    CHECK_EQ_I64(gstore_seal(n.store, id), 1);
    CHECK(gstore_dead(n.store, id));
    /* Its old copy, from an original-format peer and from a counterd before "life". */
    CHECK_EQ_I64(merge(&n, "{\"counts\":{\"s\":{\"b-1\":5,\"c-2\":3}}}", 0, &e), 0);
    CHECK_EQ_I64(merge(&n,
                       "{\"incarnation\":\"01\",\"features\":[\"folded\",\"digest\"],"
                       "\"counts\":{\"s\":{\"b-1\":5}}}",
                       0, &e),
                 0);
    CHECK(gstore_dead(n.store, id));
    /* Counted after the deletion there: that increment alone. */
    merge(&n, "{\"counts\":{\"s\":{\"b-1\":7}}}", 0, &e);
    CHECK(!gstore_dead(n.store, id));
    CHECK_EQ_I64(value(&n, "s"), 2);
    /* From a node that knows the lifecycle, a state without deletion is a new life. */
    CHECK_EQ_I64(gstore_delete(n.store, id), 0);
    CHECK_EQ_I64(gstore_seal(n.store, id), 1);
    CHECK(merge(&n,
                "{\"incarnation\":\"01\",\"features\":[\"life\"],"
                "\"counts\":{\"s\":{\"d-4\":1}}}",
                0, &e) > 0);
    CHECK(!gstore_dead(n.store, id));
    CHECK_EQ_I64(value(&n, "s"), 1);
    node_free(&n);
}

/* A full walk by id while counters are dropped and their ids given to new names, on both
 * sides of the cursor: the walk and the delta from the seq it began at bring every counter
 * that exists at the end, with its value. */
static void test_full_walk_with_drops_and_reuse(void)
{
    struct node a, b;
    node_init(&a, "a-1");
    node_init(&b, "b-2");
    int rep = gstore_replica(a.store, "a-1", 3);
    char name[32];
    for (int i = 0; i < 200; i++) {
        snprintf(name, sizeof name, "k%d", i);
        CHECK_EQ_I64(gstore_incr(a.store, gstore_create(a.store, name, strlen(name)), rep, i + 1),
                     0);
    }
    a.r->page_bytes = 300;
    uint64_t s0 = gstore_seq(a.store), upto = 0;
    uint32_t next = 0;
    struct merge_error e;
    int pages = 0, dropped = 0;
    while (next < gstore_count(a.store) && pages < 1000) {
        repl__page_begin(a.r);
        repl__page_full(a.r, &next);
        repl__body_finish(a.r, NULL, "x", 1);
        CHECK(merge(&b, buf_cstr(&a.r->out), 1, &e) >= 0);
        if (++pages == 3) { /* mid-walk: drop every 9th id, then new names take ids back */
            for (uint32_t id = 0; id < gstore_count(a.store); id += 9) {
                CHECK_EQ_I64(gstore_delete(a.store, id), 0);
                gstore_drop(a.store, id);
                dropped++;
            }
            for (int i = 0; i < dropped; i++) {
                snprintf(name, sizeof name, "new%d", i);
                uint32_t id = gstore_create(a.store, name, strlen(name));
                CHECK_EQ_I64(gstore_incr(a.store, id, rep, 1000 + i), 0);
            }
        }
    }
    CHECK(pages > 3 && dropped > 10);
    repl__page_begin(a.r);
    a.r->page_bytes = 1 << 20;
    CHECK_EQ_I64(repl__page_delta(a.r, s0, 0, &upto), 0);
    repl__body_finish(a.r, NULL, "x", 0);
    CHECK(merge(&b, buf_cstr(&a.r->out), 1, &e) >= 0);
    int missing = 0;
    for (uint32_t id = 0; id < gstore_count(a.store); id++) {
        if (!gstore_exists(a.store, id))
            continue;
        size_t len;
        const char *nm = gstore_counter_name(gstore_counter(a.store, id), &len);
        snprintf(name, sizeof name, "%.*s", (int)len, nm);
        missing += value(&b, name) != value(&a, name);
    }
    CHECK_EQ_I64(missing, 0);
    CHECK_EQ_I64(value(&b, "new0"), 1000);
    node_free(&a);
    node_free(&b);
}

/* Merges body and checks that counter "c" was skipped whole for reason why. */
static void check_life_refused(const char *body, const char *why)
{
    struct node n;
    node_init(&n, "a-1");
    struct merge_error e;
    unit_context("%s", why);
    CHECK_EQ_I64(merge(&n, body, 0, &e), 0);
    CHECK_EQ_I64(value(&n, "c"), -1);
    CHECK(n.r->nlisted >= 1);
    if (n.r->nlisted >= 1)
        CHECK_STR_EQ(n.r->rejects[n.r->nlisted - 1].reason, why);
    unit_context("%s", "");
    node_free(&n);
}

static void test_life_malformed_refused(void)
{
    static const char *const cases[][2] = {
        {"\"floors\":{\"c\":{\"pos\":{\"b-1\":-1}}}", "floor_negative"},
        {"\"floors\":{\"c\":{\"pos\":{\"bad id\":1}}}", "floor_bad_node_id"},
        {"\"floors\":{\"c\":{\"neg\":{\"b-1\":1.5}}}", "floor_not_an_integer"},
        {"\"floors\":{\"c\":{\"pos\":{\"b-1\":99999999999999999999}}}", "floor_out_of_range"},
        {"\"floors\":{\"c\":7}", "floor_not_an_object"},
        {"\"floors\":{\"c\":{\"pos\":[]}}", "floor_not_an_object"},
        {"\"floors\":{\"c\":{\"pos\":{\"c-1\":1}}}", "floor_without_entry"},
        {"\"dfloors\":{\"c\":{\"pos\":{\"c-1\":1}}}", "dfloor_without_entry"},
        {"\"dfloors\":{\"c\":{\"pos\":{\"b-1\":-2}}}", "dfloor_negative"},
        {"\"floors\":{\"c\":{\"pos\":{\"b-1\":1}},\"c\":{\"pos\":{\"b-1\":2}}}", "floor_twice"},
        {"\"life\":{\"c\":\"deleted\"}", "life_not_a_list"},
        {"\"life\":{\"c\":[\"deleted\",\"gone\"]}", "life_bad_flag"},
    };
    char body[512];
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        snprintf(body, sizeof body, "{\"counts\":{\"c\":{\"b-1\":5}},%s}", cases[i][0]);
        check_life_refused(body, cases[i][1]);
    }
    check_life_refused("{\"counts\":{\"c\":{\"b-1\":5,\"bad id\":1}},"
                       "\"floors\":{\"c\":{\"pos\":{\"b-1\":1}}}}",
                       "life_with_skipped_entries");
    /* A member that is not an object of counters fails the message, merging nothing. */
    struct node n;
    node_init(&n, "a-1");
    struct merge_error e;
    CHECK_EQ_I64(merge(&n, "{\"counts\":{\"c\":{\"b-1\":1}},\"floors\":3}", 0, &e), -1);
    CHECK_STR_EQ(e.detail, "floors must be an object of counters");
    CHECK_EQ_I64(merge(&n, "{\"counts\":{\"c\":{\"b-1\":1}},\"dfloors\":[]}", 0, &e), -1);
    CHECK_STR_EQ(e.detail, "dfloors must be an object of counters");
    CHECK_EQ_I64(merge(&n, "{\"counts\":{\"c\":{\"b-1\":1}},\"life\":\"x\"}", 0, &e), -1);
    CHECK_STR_EQ(e.detail, "life must be an object of counters");
    CHECK_EQ_I64(gstore_count(n.store), 0);
    /* The rest of a message merges; a floor above its entry is clamped by the store. */
    CHECK_EQ_I64(merge(&n,
                       "{\"counts\":{\"c\":{\"b-1\":5},\"d\":{\"b-1\":2}},"
                       "\"floors\":{\"c\":{\"pos\":{\"b-1\":-1}},\"d\":{\"pos\":{\"b-1\":9}}}}",
                       0, &e),
                 1);
    CHECK_EQ_I64(value(&n, "c"), -1);
    CHECK_EQ_I64(value(&n, "d"), 0);
    node_free(&n);
}

/* Compact lifecycle sections: a wrong structure refuses the body whole, a bad entry skips
 * its counter. */
static void test_life_compact_malformed(void)
{
    struct node n;
    node_init(&n, "a-1");
    struct buf b = {0};
    struct merge_error e;
    static const char *const reps[] = {"b-1", "bad id!", NULL};
    cb_begin(&b, reps);
    memcpy(b.data, "CSB2", 4);
    cb_varint(&b, 2);
    cb_str(&b, "c"); /* b-1: 5; a clear floor of "bad id!" */
    cb_varint(&b, 1);
    cb_varint(&b, 0), cb_varint(&b, 5), cb_varint(&b, 0);
    cb_varint(&b, 0), cb_varint(&b, 0);
    buf_putc(&b, 4);
    cb_varint(&b, 1), cb_varint(&b, 1), cb_varint(&b, 1), cb_varint(&b, 0);
    cb_str(&b, "d"); /* b-1: 6, deleted with a delete floor of b-1: 6 */
    cb_varint(&b, 1);
    cb_varint(&b, 0), cb_varint(&b, 6), cb_varint(&b, 0);
    cb_varint(&b, 0), cb_varint(&b, 0);
    size_t lbyte = b.len;
    buf_putc(&b, 1 | 8);
    cb_varint(&b, 1), cb_varint(&b, 0), cb_varint(&b, 6), cb_varint(&b, 0);
    CHECK_EQ_I64(merge_any(&n, b.data, b.len, &e), 1);
    CHECK_EQ_I64(value(&n, "c"), -1);
    CHECK_EQ_I64((int64_t)n.r->nlisted, 1);
    CHECK_STR_EQ(n.r->rejects[0].reason, "floor_bad_node_id");
    CHECK(gstore_dead(n.store, gstore_find(n.store, "d", 1)));
    b.data[lbyte] = 16; /* an unknown bit */
    CHECK_EQ_I64(merge_any(&n, b.data, b.len, &e), -1);
    CHECK(strstr(e.detail, "lifecycle byte") != NULL);
    b.data[lbyte] = 8;
    b.data[lbyte + 2] = 2; /* the floor's replica index: beyond the table */
    CHECK_EQ_I64(merge_any(&n, b.data, b.len, &e), -1);
    CHECK(strstr(e.detail, "beyond the table") != NULL);
    /* The same body as "CSB1" has bytes after its last counter's tokens. */
    b.data[lbyte + 2] = 0;
    memcpy(b.data, "CSB1", 4);
    CHECK_EQ_I64(merge_any(&n, b.data, b.len, &e), -1);
    buf_free(&b);
    node_free(&n);
}

/* Keys of other namespaces are counters; those the replicated hook refuses are left out of
 * every page and ignored (counted) when received. */
static void test_regional_left_out(void)
{
    struct node a, b;
    node_init(&a, "a-1");
    node_init(&b, "b-2");
    struct merge_error e;
    CHECK_EQ_I64(merge(&a,
                       "{\"counts\":{\"ns1/x\":{\"b-1\":1},\"bad/ns/x\":{\"b-1\":1},"
                       "\"/x\":{\"b-1\":1},\"r/y\":{\"b-1\":2},\"plain\":{\"b-1\":3}},"
                       "\"decrements\":{\"r/y\":{\"b-1\":1}},\"floors\":{\"r/y\":{}},"
                       "\"life\":{\"r/y\":[\"deleted\"]},"
                       "\"tokens\":{\"r/y\":{\"t1\":{\"amount\":2,\"settled\":true}}}}",
                       0, &e),
                 2);
    CHECK_EQ_I64(value(&a, "ns1/x"), 1);
    CHECK_EQ_I64(value(&a, "r/y"), -1);
    CHECK_EQ_I64((int64_t)a.r->nrejects, 2);
    CHECK_STR_EQ(a.r->rejects[0].reason, "bad_name");
    CHECK_EQ_I64((int64_t)a.r->nignored, 1);
    repl__apply_tokens(a.r,
                       json_parse(&a.jp,
                                  "{\"tokens\":{\"r/y\":{\"t\":{\"amount\":1,"
                                  "\"settled\":true}}}}",
                                  56),
                       "test");
    CHECK_EQ_I64(value(&a, "r/y"), -1);
    /* A regional counter counted here stays here: in no page, JSON or compact. */
    int rep = gstore_replica(a.store, "a-1", 3);
    CHECK_EQ_I64(gstore_incr(a.store, gstore_create(a.store, "r/local", 7), rep, 4), 0);
    repl__page_begin(a.r);
    uint32_t next = 0;
    repl__page_full(a.r, &next);
    repl__body_finish(a.r, NULL, "x", 0);
    CHECK(strstr(buf_cstr(&a.r->out), "r/local") == NULL);
    CHECK_EQ_I64(a.r->page_counters, 2);
    CHECK_EQ_I64(copy_state(&a, &b, 1), 1);
    CHECK_EQ_I64(value(&b, "r/local"), -1);
    CHECK_EQ_I64(value(&b, "ns1/x"), 1);
    /* Received in a compact body: ignored and counted. */
    struct buf cb = {0};
    static const char *const reps[] = {"b-1", NULL};
    cb_begin(&cb, reps);
    cb_varint(&cb, 1);
    cb_str(&cb, "r/z");
    cb_varint(&cb, 1);
    cb_varint(&cb, 0), cb_varint(&cb, 5), cb_varint(&cb, 0);
    cb_varint(&cb, 0), cb_varint(&cb, 0);
    CHECK_EQ_I64(merge_any(&b, cb.data, cb.len, &e), 0);
    CHECK_EQ_I64(value(&b, "r/z"), -1);
    CHECK_EQ_I64((int64_t)b.r->nignored, 1);
    CHECK_EQ_I64((int64_t)b.r->nrejects, 0);
    struct buf m = {0};
    metrics_render(b.reg, &m);
    CHECK(strstr(buf_cstr(&m), "counterd_sync_ignored_total{reason=\"regional\"} 1") != NULL);
    buf_free(&m);
    buf_free(&cb);
    /* An original-format peer gets only namespace "default". */
    repl__page_begin(a.r);
    a.r->original_out = 1;
    next = 0;
    repl__page_full(a.r, &next);
    repl__body_finish(a.r, NULL, NULL, 0);
    a.r->original_out = 0;
    CHECK(strstr(buf_cstr(&a.r->out), "ns1/x") == NULL);
    CHECK(strstr(buf_cstr(&a.r->out), "\"plain\"") != NULL);
    CHECK(strstr(buf_cstr(&a.r->out), "namespaces") == NULL); /* no put_ext for it */
    node_free(&a);
    node_free(&b);
}

/* Runs n's loop until flag is set or 3 s pass. */
static void run_until(struct node *n, const int *flag)
{
    double end = clock_mono_ms() + 3000;
    while (!*flag && clock_mono_ms() < end)
        event_base_loop(n->base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
}

/* Accepts one connection on lfd and reads its request whole, running n's loop meanwhile.
 * @return the connection, or -1. */
static int accept_request(struct node *n, int lfd)
{
    int cfd = -1;
    double end = clock_mono_ms() + 3000;
    while (cfd < 0 && clock_mono_ms() < end) {
        event_base_loop(n->base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
        struct pollfd pfd = {.fd = lfd, .events = POLLIN};
        if (poll(&pfd, 1, 10) == 1)
            cfd = accept(lfd, NULL, NULL);
    }
    static char req[1 << 16];
    size_t got = 0;
    while (cfd >= 0 && clock_mono_ms() < end && got < sizeof req - 1) {
        event_base_loop(n->base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
        struct pollfd pfd = {.fd = cfd, .events = POLLIN};
        if (poll(&pfd, 1, 10) != 1)
            continue;
        ssize_t r = read(cfd, req + got, sizeof req - 1 - got);
        if (r <= 0)
            break;
        got += (size_t)r;
        req[got] = '\0';
        const char *hend = strstr(req, "\r\n\r\n");
        const char *cl = strstr(req, "Content-Length:");
        if (!cl)
            cl = strstr(req, "content-length:");
        if (hend && cl && got >= (size_t)(hend + 4 - req) + strtoul(cl + 15, NULL, 10))
            return cfd;
    }
    if (cfd >= 0)
        close(cfd);
    return -1;
}

/* A partition made while an exchange is on the wire drops it, whichever way it was going:
 * a send the faults policy was still delaying is never made, and an answer that arrives
 * after the cut is not merged. Both rounds end "partitioned", not failed. */
static void test_partition_cuts_what_is_in_flight(void)
{
    /* The send: delayed 100 ms by the policy, the partition comes at once. Port 9 refuses,
     * so a send that was made would end the round as a failure instead. */
    struct node a;
    node_init(&a, "a-1");
    a.client = client_new(a.base);
    a.r->client = a.client;
    decide_verdict = REPL_DELAY;
    decide_delay = 100;
    int done = 0;
    repl_sync_now(a.r, sync_done, &done);
    repl_set_partition(a.r, 1);
    run_until(&a, &done);
    CHECK_EQ_I64(done, 1);
    CHECK_EQ_I64(a.r->peers[0].last_status, ST_PARTITION);
    CHECK(strstr(a.r->peers[0].last_error, "in flight") != NULL);
    node_free(&a);
    decide_verdict = REPL_DELIVER;
    decide_delay = 0;

    /* The answer: a peer that answers with a count after the partition was made. */
    int lfd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t sl = sizeof sa;
    CHECK(lfd >= 0 && bind(lfd, (struct sockaddr *)&sa, sizeof sa) == 0 && listen(lfd, 4) == 0 &&
          getsockname(lfd, (struct sockaddr *)&sa, &sl) == 0);
    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/", ntohs(sa.sin_port));
    node_init_peer(&a, "a-1", url);
    a.client = client_new(a.base);
    a.r->client = a.client;
    done = 0;
    repl_sync_now(a.r, sync_done, &done);
    int cfd = accept_request(&a, lfd);
    CHECK(cfd >= 0);
    repl_set_partition(a.r, 1);
    const char *body = "{\"node_id\":\"b-1\",\"counts\":{\"late\":{\"b-1\":5}}}";
    char resp[512];
    int n = snprintf(resp, sizeof resp,
                     "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                     "Content-Length: %zu\r\nConnection: close\r\n\r\n%s",
                     strlen(body), body);
    CHECK_EQ_I64(write(cfd, resp, (size_t)n), n);
    run_until(&a, &done);
    CHECK_EQ_I64(done, 1);
    CHECK_EQ_I64(value(&a, "late"), -1);
    CHECK_EQ_I64(a.r->peers[0].last_status, ST_PARTITION);
    close(cfd);
    close(lfd);
    node_free(&a);
}

UNIT_MAIN("test_repl", UNIT_CASE(test_merge_is_max_and_idempotent),
          UNIT_CASE(test_merge_skips_what_it_cannot_hold),
          UNIT_CASE(test_malformed_bodies_merge_nothing), UNIT_CASE(test_pages_round_trip),
          UNIT_CASE(test_delta_leaves_out_the_receivers_own_state), UNIT_CASE(test_cursors),
          UNIT_CASE(test_decisions), UNIT_CASE(test_compact_round_trip),
          UNIT_CASE(test_compact_rejects_entries), UNIT_CASE(test_compact_malformed_refused_whole),
          UNIT_CASE(test_round_end_gives_back_scratch), UNIT_CASE(test_life_round_trip),
          UNIT_CASE(test_life_malformed_refused), UNIT_CASE(test_life_compact_malformed),
          UNIT_CASE(test_regional_left_out), UNIT_CASE(test_sealed_tombstone_and_unaware_peers),
          UNIT_CASE(test_full_walk_with_drops_and_reuse),
          UNIT_CASE(test_partition_cuts_what_is_in_flight))
