/*
 * test_trace.c - unit tests of tracing (core/obs/trace.c): traceparent parsing and
 * formatting against the W3C Trace Context rules, and the tracer's spans, OTLP/JSON
 * batches, bounds and drop accounting, driven through a fake sender.
 *
 * The batches are read back with the core's strict JSON reader, so a malformed body or a
 * wrong field fails here, not in a collector. Never include this from core/.
 */
#include <stdio.h>
#include <string.h>

#include "base/buf.h"
#include "base/json.h"
#include "obs/metrics.h"
#include "obs/trace.h"
#include "unit.h"

#define EXAMPLE "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

static int parse(const char *s, struct trace_ctx *c)
{
    return trace_parse_traceparent(s, strlen(s), c);
}

/* ---------------------------------------------------------------- traceparent */

static void test_parse_example(void)
{
    struct trace_ctx c;
    REQUIRE(parse(EXAMPLE, &c) == 0);
    static const uint8_t tid[16] = {0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6,
                                    0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e, 0x47, 0x36};
    static const uint8_t sid[8] = {0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7};
    CHECK_MEM_EQ(c.trace_id, 16, tid, 16);
    CHECK_MEM_EQ(c.span_id, 8, sid, 8);
    CHECK_EQ_I64(c.flags, 1);
    char out[TRACEPARENT_LEN + 1];
    trace_format_traceparent(&c, out);
    CHECK_STR_EQ(out, EXAMPLE);
    CHECK_EQ_I64(strlen(out), TRACEPARENT_LEN);

    /* Not sampled, and other flag bits, are kept as they are. */
    REQUIRE(parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00", &c) == 0);
    CHECK_EQ_I64(c.flags, 0);
    REQUIRE(parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-09", &c) == 0);
    CHECK_EQ_I64(c.flags, 9);
    /* Blanks around the value (optional whitespace of a header) are allowed. */
    REQUIRE(parse(" \t" EXAMPLE " ", &c) == 0);
    CHECK_MEM_EQ(c.trace_id, 16, tid, 16);
    /* A later version may add fields after a dash; they are ignored. */
    REQUIRE(parse("cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-ever", &c) == 0);
    CHECK_MEM_EQ(c.span_id, 8, sid, 8);
    CHECK(parse("cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", &c) == 0);
}

static void test_parse_rejects(void)
{
    static const char *bad[] = {
        "",
        "00",
        /* version 00 is exactly 55 bytes */
        EXAMPLE "-",
        EXAMPLE "0",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
        /* a later version's extra fields start with a dash */
        "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
        /* version ff is forbidden */
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        /* upper-case hex is not valid */
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00F067AA0BA902B7-01",
        "0A-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        /* all-zero ids are invalid */
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
        /* separators */
        "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7_01",
        /* shifted fields */
        "00-4bf92f3577b34da6a3ce929d0e0e473-600f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b-701",
        /* not hex */
        "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902bz-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g",
        "0x-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        /* a blank inside is not a blank around */
        "00-4bf92f3577b34da6a3ce929d0e0e4736 -00f067aa0ba902b7-01",
        NULL,
    };
    struct trace_ctx c, untouched;
    memset(&untouched, 0x5a, sizeof untouched);
    for (int i = 0; bad[i]; i++) {
        unit_context("'%s'", bad[i]);
        c = untouched;
        CHECK(parse(bad[i], &c) == -1);
        CHECK(memcmp(&c, &untouched, sizeof c) == 0); /* nothing written on failure */
    }
    unit_context("%s", "");
    CHECK(trace_parse_traceparent(NULL, 0, &c) == -1);
    /* Only len bytes are read: the valid prefix of a longer buffer is judged alone. */
    CHECK(trace_parse_traceparent(EXAMPLE, TRACEPARENT_LEN - 1, &c) == -1);
    CHECK(trace_parse_traceparent(EXAMPLE "zzz", TRACEPARENT_LEN, &c) == 0);
}

/* Random contexts survive format -> parse; every single-byte change to a valid value is
 * either refused or read as exactly that change. */
static void test_roundtrip_and_mutations(void)
{
    struct unit_rng rng;
    rng_init(&rng, "trace");
    long n = unit_iters(20000);
    for (long it = 0; it < n; it++) {
        struct trace_ctx c, back;
        for (int i = 0; i < 16; i++)
            c.trace_id[i] = (uint8_t)rng_u64(&rng);
        for (int i = 0; i < 8; i++)
            c.span_id[i] = (uint8_t)rng_u64(&rng);
        c.trace_id[rng_below(&rng, 16)] |= 1; /* never all zero */
        c.span_id[rng_below(&rng, 8)] |= 1;
        c.flags = (uint8_t)rng_u64(&rng);
        char s[TRACEPARENT_LEN + 1];
        trace_format_traceparent(&c, s);
        unit_context("iteration %ld: %s", it, s);
        REQUIRE(parse(s, &back) == 0);
        CHECK(memcmp(&c, &back, sizeof c) == 0);

        size_t pos = rng_below(&rng, TRACEPARENT_LEN);
        char was = s[pos];
        char ch = (char)rng_range(&rng, 32, 126);
        s[pos] = ch;
        int rc = parse(s, &back);
        int dash = pos == 2 || pos == 35 || pos == 52;
        int hex = (ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f');
        if (ch == was)
            CHECK(rc == 0);
        else if (dash || !hex)
            CHECK(rc == -1);
        else if (pos < 2) /* another version: valid unless it became ff */
            CHECK(rc == ((s[0] == 'f' && s[1] == 'f') ? -1 : 0));
        else if (rc == 0) {
            char again[TRACEPARENT_LEN + 1];
            trace_format_traceparent(&back, again);
            CHECK_MEM_EQ(again + 3, TRACEPARENT_LEN - 3, s + 3, TRACEPARENT_LEN - 3);
        } else {
            /* The only other refusal: the change made an id all zeros. */
            CHECK(!strncmp(s + 3, "00000000000000000000000000000000", 32) ||
                  !strncmp(s + 36, "0000000000000000", 16));
        }
    }
}

/* ---------------------------------------------------------------- a fake sender */

#define MAX_BODIES 16

static struct {
    struct buf bodies[MAX_BODIES];
    int nbodies, wakes, refuse;
} fake;

static int fake_send(void *arg, const char *body, size_t len)
{
    (void)arg;
    if (fake.refuse)
        return -1;
    if (fake.nbodies < MAX_BODIES) {
        buf_reset(&fake.bodies[fake.nbodies]);
        buf_append(&fake.bodies[fake.nbodies], body, len);
        fake.nbodies++;
    }
    return 0;
}

static void fake_wake(void *arg)
{
    (void)arg;
    fake.wakes++;
}

static void fake_reset(void)
{
    for (int i = 0; i < MAX_BODIES; i++)
        buf_free(&fake.bodies[i]);
    memset(&fake, 0, sizeof fake);
}

static int start_tracer(struct metrics *reg, int batch, int queue)
{
    fake_reset();
    static const char *const resource[] = {"region", "us-east", "service.instance.id", "us-east-1",
                                           NULL};
    struct trace_opts o = {.service_name = "counter-us-east",
                           .resource = resource,
                           .batch_spans = batch,
                           .queue_spans = queue,
                           .metrics = reg,
                           .sender = {fake_send, fake_wake, NULL}};
    char err[128];
    return trace_init(&o, err, sizeof err);
}

static const struct json *path(const struct json *v, const char *key)
{
    return v ? json_get(v, key) : NULL;
}

static const struct json *item(const struct json *v, uint32_t i)
{
    return v && v->type == JSON_ARR && i < v->len ? &v->u.items[i] : NULL;
}

static int str_is(const struct json *v, const char *s)
{
    return v && v->type == JSON_STR && strcmp(v->u.s, s) == 0;
}

/* The value object of attribute key in an attributes array, or NULL. */
static const struct json *attr(const struct json *attrs, const char *key)
{
    for (uint32_t i = 0; attrs && attrs->type == JSON_ARR && i < attrs->len; i++)
        if (str_is(json_get(&attrs->u.items[i], "key"), key))
            return json_get(&attrs->u.items[i], "value");
    return NULL;
}

/* The spans array of body number i (the only resource and scope). */
static const struct json *spans_of(struct json_parser *p, int i)
{
    if (i >= fake.nbodies)
        return NULL;
    const struct json *root = json_parse(p, fake.bodies[i].data, fake.bodies[i].len);
    const struct json *rs = item(path(root, "resourceSpans"), 0);
    return path(item(path(rs, "scopeSpans"), 0), "spans");
}

static const struct json *span_named(const struct json *spans, const char *name)
{
    for (uint32_t i = 0; spans && i < spans->len; i++)
        if (str_is(json_get(&spans->u.items[i], "name"), name))
            return &spans->u.items[i];
    return NULL;
}

/* ---------------------------------------------------------------- the tracer */

static void test_off_costs_nothing(void)
{
    trace_shutdown();
    CHECK(!trace_enabled());
    struct trace_span *s = trace_span_start("x", TRACE_SERVER, NULL);
    CHECK(s == NULL);
    CHECK(trace_span_child(NULL, "y", TRACE_CLIENT) == NULL);
    /* Every call takes NULL. */
    trace_span_attr_cstr(NULL, "k", "v");
    trace_span_attr_int(NULL, "k", 1);
    trace_span_attr_bool(NULL, "k", 1);
    trace_span_route(NULL, "GET", "/x");
    trace_span_set_name(NULL, "z");
    trace_span_http_status(NULL, 500, NULL);
    trace_span_error(NULL, "e");
    trace_span_end(NULL);
    char tp[TRACEPARENT_LEN + 1] = "untouched";
    CHECK(trace_span_traceparent(NULL, tp) == -1);
    CHECK_STR_EQ(tp, "untouched");
    CHECK(trace_span_ctx(NULL) == NULL);
    CHECK_EQ_I64(trace_flush(0), 0);
}

static void test_spans_encoded(void)
{
    struct metrics *reg = metrics_new();
    REQUIRE(start_tracer(reg, 512, 2048) == 0);
    CHECK(trace_enabled());

    struct trace_ctx caller;
    REQUIRE(parse(EXAMPLE, &caller) == 0);
    struct trace_span *srv = trace_span_start("POST /api/increment", TRACE_SERVER, &caller);
    REQUIRE(srv != NULL);
    trace_span_route(srv, NULL, "/api/increment");
    trace_span_attr_cstr(srv, "counter.name", "views");
    trace_span_attr_int(srv, "counter.amount", -9007199254740993LL); /* not a double */
    trace_span_attr_bool(srv, "flag", 1);
    trace_span_attr_str(srv, "quote", "a\"b\\c\n", 6);
    struct trace_span *cli = trace_span_child(srv, "POST /increment", TRACE_CLIENT);
    trace_span_http_status(cli, 0, "Connection refused");

    /* The child's traceparent names the child, in the caller's trace. */
    char tp[TRACEPARENT_LEN + 1];
    REQUIRE(trace_span_traceparent(cli, tp) == 0);
    struct trace_ctx got;
    REQUIRE(parse(tp, &got) == 0);
    CHECK_MEM_EQ(got.trace_id, 16, caller.trace_id, 16);
    CHECK(memcmp(got.span_id, trace_span_ctx(cli)->span_id, 8) == 0);
    CHECK(memcmp(got.span_id, caller.span_id, 8) != 0);
    CHECK_EQ_I64(got.flags, 1);

    trace_span_end(cli);
    trace_span_http_status(srv, 503, NULL);
    trace_span_end(srv);
    struct trace_span *root = trace_span_start("sync round", TRACE_INTERNAL, NULL);
    trace_span_end(root);

    struct trace_stats st;
    trace_get_stats(&st);
    CHECK_EQ_I64(st.queued, 3);
    CHECK_EQ_I64(fake.wakes, 0); /* the batch is not full: the timer sends it */
    CHECK_EQ_I64(trace_flush(1), 0);
    CHECK_EQ_I64(trace_flush(0), 1);
    REQUIRE(fake.nbodies == 1);

    struct json_parser p;
    json_parser_init(&p);
    const struct json *root_json = json_parse(&p, fake.bodies[0].data, fake.bodies[0].len);
    REQUIRE(root_json != NULL);
    const struct json *res = path(item(path(root_json, "resourceSpans"), 0), "resource");
    const struct json *rattrs = path(res, "attributes");
    CHECK(str_is(path(attr(rattrs, "service.name"), "stringValue"), "counter-us-east"));
    CHECK(str_is(path(attr(rattrs, "region"), "stringValue"), "us-east"));
    CHECK(str_is(path(attr(rattrs, "service.instance.id"), "stringValue"), "us-east-1"));
    const struct json *scope =
        item(path(item(path(root_json, "resourceSpans"), 0), "scopeSpans"), 0);
    CHECK(str_is(path(path(scope, "scope"), "name"), "counterd"));
    const struct json *spans = path(scope, "spans");
    REQUIRE(spans && spans->type == JSON_ARR && spans->len == 3);

    const struct json *js = span_named(spans, "POST /api/increment");
    const struct json *jc = span_named(spans, "POST /increment");
    const struct json *jr = span_named(spans, "sync round");
    REQUIRE(js && jc && jr);
    CHECK(str_is(json_get(js, "traceId"), "4bf92f3577b34da6a3ce929d0e0e4736"));
    CHECK(str_is(json_get(js, "parentSpanId"), "00f067aa0ba902b7"));
    CHECK(str_is(json_get(jc, "traceId"), "4bf92f3577b34da6a3ce929d0e0e4736"));
    const struct json *sid = json_get(js, "spanId");
    REQUIRE(sid && sid->type == JSON_STR && sid->len == 16);
    CHECK(str_is(json_get(jc, "parentSpanId"), sid->u.s));
    CHECK(strncmp(json_get(jc, "spanId")->u.s, tp + 36, 16) == 0);
    /* A new trace: its own id, no parent. */
    CHECK(json_get(jr, "parentSpanId") == NULL);
    const struct json *rt = json_get(jr, "traceId");
    REQUIRE(rt && rt->type == JSON_STR && rt->len == 32);
    CHECK(strcmp(rt->u.s, "4bf92f3577b34da6a3ce929d0e0e4736") != 0);
    CHECK(strcmp(rt->u.s, "00000000000000000000000000000000") != 0);

    const struct json *k = json_get(js, "kind");
    CHECK(k && k->type == JSON_INT && k->u.i == TRACE_SERVER);
    k = json_get(jc, "kind");
    CHECK(k && k->type == JSON_INT && k->u.i == TRACE_CLIENT);
    k = json_get(jr, "kind");
    CHECK(k && k->type == JSON_INT && k->u.i == TRACE_INTERNAL);

    /* Times: nanosecond strings, end not before start, the child inside its parent. */
    uint64_t t[3][2];
    const struct json *all[3] = {js, jc, jr};
    for (int i = 0; i < 3; i++) {
        const struct json *a = json_get(all[i], "startTimeUnixNano");
        const struct json *b = json_get(all[i], "endTimeUnixNano");
        REQUIRE(a && b && a->type == JSON_STR && b->type == JSON_STR);
        t[i][0] = strtoull(a->u.s, NULL, 10);
        t[i][1] = strtoull(b->u.s, NULL, 10);
        CHECK(t[i][0] > 1600000000ull * 1000000000ull);
        CHECK(t[i][0] <= t[i][1]);
    }
    CHECK(t[0][0] <= t[1][0] && t[1][1] <= t[0][1]);

    const struct json *sa = json_get(js, "attributes");
    CHECK(str_is(path(attr(sa, "http.route"), "stringValue"), "/api/increment"));
    CHECK(str_is(path(attr(sa, "counter.name"), "stringValue"), "views"));
    CHECK(str_is(path(attr(sa, "counter.amount"), "intValue"), "-9007199254740993"));
    const struct json *flag = path(attr(sa, "flag"), "boolValue");
    CHECK(flag && flag->type == JSON_TRUE);
    CHECK(str_is(path(attr(sa, "quote"), "stringValue"), "a\"b\\c\n"));
    CHECK(str_is(path(attr(sa, "http.status_code"), "intValue"), "503"));
    /* 5xx on a server span is an error; so is a client span with no answer. */
    const struct json *code = path(json_get(js, "status"), "code");
    CHECK(code && code->type == JSON_INT && code->u.i == 2);
    code = path(json_get(jc, "status"), "code");
    CHECK(code && code->type == JSON_INT && code->u.i == 2);
    CHECK(str_is(path(json_get(jc, "status"), "message"), "Connection refused"));
    CHECK(path(json_get(jr, "status"), "code") == NULL); /* unset */

    /* The sender's report decides exported or dropped. */
    trace_sent(1);
    trace_get_stats(&st);
    CHECK_EQ_U64(st.exported, 3);
    CHECK_EQ_I64(st.queued, 0);
    CHECK_EQ_I64(st.inflight, 0);

    json_parser_free(&p);
    trace_shutdown();
    fake_reset();
    metrics_free(reg);
}

static void test_status_rules(void)
{
    REQUIRE(start_tracer(NULL, 512, 2048) == 0);
    /* A 4xx is the client's fault on a server span, a failure on a client span. */
    struct trace_span *s = trace_span_start("s", TRACE_SERVER, NULL);
    struct trace_span *c = trace_span_start("c", TRACE_CLIENT, NULL);
    struct trace_span *ok = trace_span_start("ok", TRACE_CLIENT, NULL);
    trace_span_http_status(s, 404, NULL);
    trace_span_http_status(c, 404, NULL);
    trace_span_http_status(ok, 200, NULL);
    trace_span_end(s);
    trace_span_end(c);
    trace_span_end(ok);
    REQUIRE(trace_flush(0) == 1);
    struct json_parser p;
    json_parser_init(&p);
    const struct json *spans = spans_of(&p, 0);
    REQUIRE(spans && spans->len == 3);
    CHECK(path(json_get(span_named(spans, "s"), "status"), "code") == NULL);
    const struct json *code = path(json_get(span_named(spans, "c"), "status"), "code");
    CHECK(code && code->type == JSON_INT && code->u.i == 2);
    CHECK(str_is(path(json_get(span_named(spans, "c"), "status"), "message"), "HTTP 404"));
    CHECK(path(json_get(span_named(spans, "ok"), "status"), "code") == NULL);
    json_parser_free(&p);
    trace_shutdown();
    fake_reset();
}

static void test_unsampled_propagates_not_exported(void)
{
    REQUIRE(start_tracer(NULL, 512, 2048) == 0);
    struct trace_ctx caller;
    REQUIRE(parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00", &caller) == 0);
    struct trace_span *s = trace_span_start("s", TRACE_SERVER, &caller);
    REQUIRE(s != NULL);
    struct trace_span *c = trace_span_child(s, "c", TRACE_CLIENT);
    char tp[TRACEPARENT_LEN + 1];
    REQUIRE(trace_span_traceparent(c, tp) == 0);
    CHECK(strncmp(tp, "00-4bf92f3577b34da6a3ce929d0e0e4736-", 36) == 0);
    CHECK_STR_EQ(tp + 52, "-00"); /* the caller's decision travels on */
    trace_span_end(c);
    trace_span_end(s);
    struct trace_stats st;
    trace_get_stats(&st);
    CHECK_EQ_I64(st.queued, 0);
    CHECK_EQ_I64(trace_flush(0), 0);
    CHECK_EQ_I64(fake.nbodies, 0);
    trace_shutdown();
    fake_reset();
}

static void end_spans(int n)
{
    for (int i = 0; i < n; i++) {
        char name[32];
        snprintf(name, sizeof name, "span %d", i);
        trace_span_end(trace_span_start(name, TRACE_INTERNAL, NULL));
    }
}

static void test_batches_bounded_and_drops_counted(void)
{
    struct metrics *reg = metrics_new();
    REQUIRE(start_tracer(reg, 4, 8) == 0);
    end_spans(11); /* two batches of 4 fill the queue; 3 find no room */
    struct trace_stats st;
    trace_get_stats(&st);
    CHECK_EQ_I64(st.queued, 8);
    CHECK_EQ_U64(st.dropped_queue_full, 3);
    CHECK_EQ_I64(fake.wakes, 2); /* each full batch asks for a flush */

    CHECK_EQ_I64(trace_flush(1), 1);
    CHECK_EQ_I64(trace_flush(0), 0); /* one send in flight at a time */
    end_spans(1);                    /* room again: a third batch opens */
    trace_get_stats(&st);
    CHECK_EQ_I64(st.queued, 5);
    CHECK_EQ_I64(st.inflight, 4);
    trace_sent(1);
    CHECK_EQ_I64(trace_flush(1), 1);
    trace_sent(0);                   /* the collector failed this one */
    CHECK_EQ_I64(trace_flush(1), 0); /* the last batch has 1 span: only the timer sends it */
    fake.refuse = 1;
    CHECK_EQ_I64(trace_flush(0), -1);
    trace_get_stats(&st);
    CHECK_EQ_U64(st.exported, 4);
    CHECK_EQ_U64(st.dropped_export_failed, 5);
    CHECK_EQ_U64(st.dropped_queue_full, 3);
    CHECK_EQ_I64(st.queued, 0);
    CHECK_EQ_I64(st.inflight, 0);

    /* Each body holds exactly its batch. */
    struct json_parser p;
    json_parser_init(&p);
    REQUIRE(fake.nbodies == 2);
    const struct json *s0 = spans_of(&p, 0);
    CHECK(s0 && s0->len == 4 && span_named(s0, "span 0") && span_named(s0, "span 3"));
    const struct json *s1 = spans_of(&p, 1);
    CHECK(s1 && s1->len == 4 && span_named(s1, "span 4") && span_named(s1, "span 7"));
    json_parser_free(&p);

    struct buf out = BUF_INIT;
    metrics_render(reg, &out);
    const char *text = buf_cstr(&out);
    CHECK(strstr(text, "counterd_trace_spans_dropped_total{reason=\"queue_full\"} 3\n") != NULL);
    CHECK(strstr(text, "counterd_trace_spans_dropped_total{reason=\"export_failed\"} 5\n") != NULL);
    CHECK(strstr(text, "counterd_trace_spans_exported_total 4\n") != NULL);
    CHECK(strstr(text, "counterd_trace_spans_queued 0\n") != NULL);
    buf_free(&out);

    /* Many rounds through a slow sender: memory and queue stay within the bound. */
    fake.refuse = 0;
    long rounds = unit_iters(2000);
    for (long i = 0; i < rounds; i++) {
        end_spans(7);
        trace_get_stats(&st);
        CHECK(st.queued <= 8);
        trace_flush(0);
        if (i % 3 == 0)
            trace_sent(i % 2 == 0);
    }
    trace_shutdown();
    fake_reset();
    metrics_free(reg);
}

static void test_attributes_bounded(void)
{
    REQUIRE(start_tracer(NULL, 512, 2048) == 0);
    struct trace_span *s = trace_span_start("big", TRACE_SERVER, NULL);
    char longv[1000];
    memset(longv, 'x', sizeof longv);
    trace_span_attr_str(s, "long", longv, sizeof longv);
    for (int i = 0; i < 500; i++)
        trace_span_attr_int(s, "many", i);
    char longname[400];
    memset(longname, 'n', sizeof longname - 1);
    longname[sizeof longname - 1] = '\0';
    trace_span_set_name(s, longname);
    trace_span_end(s);
    REQUIRE(trace_flush(0) == 1);
    struct json_parser p;
    json_parser_init(&p);
    const struct json *spans = spans_of(&p, 0);
    REQUIRE(spans && spans->len == 1);
    const struct json *sp = &spans->u.items[0];
    const struct json *v = path(attr(json_get(sp, "attributes"), "long"), "stringValue");
    CHECK(v && v->type == JSON_STR && v->len == 256);
    const struct json *attrs = json_get(sp, "attributes");
    REQUIRE(attrs && attrs->type == JSON_ARR);
    CHECK(attrs->len > 50 && attrs->len < 200); /* stopped near 4 KiB, not all 500 */
    const struct json *name = json_get(sp, "name");
    CHECK(name && name->type == JSON_STR && name->len == 127);
    CHECK(fake.bodies[0].len < 8192);
    json_parser_free(&p);
    trace_shutdown();
    fake_reset();
}

static void test_init_checks(void)
{
    char err[128];
    struct trace_opts o = {.service_name = "", .sender = {fake_send, NULL, NULL}};
    CHECK(trace_init(&o, err, sizeof err) == -1);
    CHECK(!trace_enabled());
    o.service_name = "gateway";
    o.sender.send = NULL;
    CHECK(trace_init(&o, err, sizeof err) == -1);
    o.sender.send = fake_send;
    CHECK(trace_init(&o, err, sizeof err) == 0);
    CHECK(trace_enabled());
    /* A span open across shutdown is freed, not exported (and does not crash). */
    struct trace_span *s = trace_span_start("late", TRACE_SERVER, NULL);
    trace_shutdown();
    CHECK(!trace_enabled());
    trace_span_attr_cstr(s, "k", "v");
    trace_span_end(s);
    trace_shutdown(); /* twice is fine */
    fake_reset();
}

UNIT_MAIN("test_trace", UNIT_CASE(test_parse_example), UNIT_CASE(test_parse_rejects),
          UNIT_CASE(test_roundtrip_and_mutations), UNIT_CASE(test_off_costs_nothing),
          UNIT_CASE(test_spans_encoded), UNIT_CASE(test_status_rules),
          UNIT_CASE(test_unsampled_propagates_not_exported),
          UNIT_CASE(test_batches_bounded_and_drops_counted), UNIT_CASE(test_attributes_bounded),
          UNIT_CASE(test_init_checks))
