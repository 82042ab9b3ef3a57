/*
 * test_replica.c - core/repl/replica.c, the strong counter's replica side, memory only (no
 * log: "durable":false), inside the project's HTTP server (requests through a socketpair
 * adopted by it): prepare raises the promise and answers what was accepted; accept stores
 * each entry unless a higher ballot is held; messages of older epochs get 409 stale_epoch
 * with the promise; every malformed message gets 400 naming the field and changes nothing;
 * other methods and paths are refused.
 *
 * Never include this from core/.
 */
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "base/buf.h"
#include "base/clock.h"
#include "base/json.h"
#include "net/http.h"
#include "repl/replica.h"
#include "store/strongrep.h"
#include "unit.h"
#include "unit_http.h"

struct fx {
    struct event_base *base;
    struct http_server *srv;
    struct json_parser parser;
    struct replica rep;
    struct buf out;
};

static void handler(struct http_request *req, void *arg)
{
    struct fx *f = arg;
    buf_reset(&f->out);
    int64_t pos = replica_handle(&f->rep, req, &f->out);
    if (pos < 0)
        return;
    if (pos != 0) /* memory only: nothing to wait for */
        http_respond_error(req, 500, "test", "position %lld without a log", (long long)pos);
    else
        http_respond_json(req, 200, f->out.data, f->out.len);
}

static int fx_init(struct fx *f)
{
    memset(f, 0, sizeof *f);
    f->base = event_base_new();
    json_parser_init(&f->parser);
    f->rep.state = strongrep_new();
    f->rep.wal = NULL;
    f->rep.node_id = "us-east-1";
    f->rep.region = "us-east";
    f->rep.parser = &f->parser;
    f->srv = unit_http_server(f->base, handler, f);
    return f->srv ? 0 : -1;
}

static void fx_free(struct fx *f)
{
    if (f->srv)
        http_server_free(f->srv);
    strongrep_free(f->rep.state);
    json_parser_free(&f->parser);
    buf_free(&f->out);
    event_base_free(f->base);
}

/* One request through the server (unit_http.h). */
static int exchange(struct fx *f, const char *method, const char *path, const char *body,
                    struct buf *out)
{
    return unit_http(f->base, f->srv, method, path, body, out);
}

/* A POST of body to path: its status, and its answer's body is expect. */
static void post(struct fx *f, const char *path, const char *body, int status, const char *expect)
{
    struct buf out = BUF_INIT;
    unit_context("%s %s", path, body);
    CHECK_EQ_I64(exchange(f, "POST", path, body, &out), status);
    CHECK_STR_EQ(unit_http_body(&out), expect);
    buf_free(&out);
    unit_context("%s", "");
}

#define ID "{\"node_id\":\"us-east-1\",\"region\":\"us-east\",\"durable\":false"

static void test_prepare_accept(void)
{
    struct fx f;
    REQUIRE(fx_init(&f) == 0);
    post(&f, "/strong/prepare", "{\"epoch\":3,\"leader\":\"a\"}", 200,
         ID ",\"promised\":3,\"entries\":[]}");
    CHECK_EQ_U64(strongrep_promised(f.rep.state), 3);
    post(&f, "/strong/accept",
         "{\"epoch\":3,\"round\":1,\"leader\":\"a\",\"entries\":[[\"views\",5],[\"clicks\",-2]]}",
         200, ID ",\"accepted\":2,\"epoch\":3}");
    const struct strongrep_entry *e = strongrep_get(f.rep.state, "views", 5);
    REQUIRE(e != NULL);
    CHECK_EQ_U64(e->epoch, 3);
    CHECK_EQ_U64(e->round, 1);
    CHECK_EQ_I64(e->value, 5);
    /* An older round of the same epoch: kept out; a newer one: stored. */
    post(&f, "/strong/accept", "{\"epoch\":3,\"round\":0,\"entries\":[[\"views\",1]]}", 200,
         ID ",\"accepted\":0,\"epoch\":3}");
    post(&f, "/strong/accept",
         "{\"epoch\":3,\"round\":2,\"entries\":[[\"views\",7],[\"new\",9223372036854775807]]}", 200,
         ID ",\"accepted\":2,\"epoch\":3}");
    CHECK_EQ_I64(strongrep_get(f.rep.state, "views", 5)->value, 7);
    CHECK_EQ_I64(strongrep_count(f.rep.state), 3);

    /* A new leader's prepare: the promise rises, the entries come back (any order). */
    struct buf out = BUF_INIT;
    CHECK_EQ_I64(exchange(&f, "POST", "/strong/prepare", "{\"epoch\":4}", &out), 200);
    const char *b = unit_http_body(&out);
    CHECK(strncmp(b, ID ",\"promised\":4,\"entries\":[", strlen(ID) + 25) == 0);
    CHECK(strstr(b, "[\"views\",3,2,7]") != NULL);
    CHECK(strstr(b, "[\"clicks\",3,1,-2]") != NULL);
    CHECK(strstr(b, "[\"new\",3,2,9223372036854775807]") != NULL);
    buf_free(&out);
    CHECK_EQ_U64(strongrep_promised(f.rep.state), 4);

    /* The same epoch again, or an older one: 409 with the promise; nothing changes. */
    const char *stale4 = "{\"detail\":\"epoch 4 is older than the epoch 4 this replica promised "
                         "to\",\"error\":\"stale_epoch\",\"promised\":4}";
    post(&f, "/strong/prepare", "{\"epoch\":4}", 409, stale4);
    post(&f, "/strong/prepare", "{\"epoch\":2}", 409,
         "{\"detail\":\"epoch 2 is older than the epoch 4 this replica promised to\",\"error\":"
         "\"stale_epoch\",\"promised\":4}");
    post(&f, "/strong/accept", "{\"epoch\":3,\"round\":9,\"entries\":[[\"views\",100]]}", 409,
         "{\"detail\":\"epoch 3 is older than the epoch 4 this replica promised to\",\"error\":"
         "\"stale_epoch\",\"promised\":4}");
    CHECK_EQ_I64(strongrep_get(f.rep.state, "views", 5)->value, 7);
    /* An accept at the promised epoch is fine; a newer epoch's accept raises the promise. */
    post(&f, "/strong/accept", "{\"epoch\":4,\"round\":0,\"entries\":[[\"views\",8]]}", 200,
         ID ",\"accepted\":1,\"epoch\":4}");
    post(&f, "/strong/accept", "{\"epoch\":6,\"round\":0,\"entries\":[[\"views\",9]]}", 200,
         ID ",\"accepted\":1,\"epoch\":6}");
    CHECK_EQ_U64(strongrep_promised(f.rep.state), 6);
    post(&f, "/strong/prepare", "{\"epoch\":5}", 409,
         "{\"detail\":\"epoch 5 is older than the epoch 6 this replica promised to\",\"error\":"
         "\"stale_epoch\",\"promised\":6}");
    /* An accept with no entries raises the promise too, in memory as on disk. */
    post(&f, "/strong/accept", "{\"epoch\":8,\"round\":0,\"entries\":[]}", 200,
         ID ",\"accepted\":0,\"epoch\":8}");
    CHECK_EQ_U64(strongrep_promised(f.rep.state), 8);
    post(&f, "/strong/accept", "{\"epoch\":7,\"round\":0,\"entries\":[[\"views\",1]]}", 409,
         "{\"detail\":\"epoch 7 is older than the epoch 8 this replica promised to\",\"error\":"
         "\"stale_epoch\",\"promised\":8}");
    fx_free(&f);
}

static void test_refused(void)
{
    struct fx f;
    REQUIRE(fx_init(&f) == 0);
    post(&f, "/strong/prepare", "{\"epoch\":2}", 200, ID ",\"promised\":2,\"entries\":[]}");
    post(&f, "/strong/accept", "{\"epoch\":2,\"round\":1,\"entries\":[[\"views\",1]]}", 200,
         ID ",\"accepted\":1,\"epoch\":2}");
    const char *epoch_bad = "{\"detail\":\"epoch must be a non-negative integer\",\"error\":"
                            "\"bad_field\"}";
    const char *round_bad = "{\"detail\":\"round must be a non-negative integer\",\"error\":"
                            "\"bad_field\"}";
    const char *entries_bad = "{\"detail\":\"entries must be an array of at most 100000 [name, "
                              "value] pairs\",\"error\":\"bad_field\"}";
    post(&f, "/strong/prepare", "{}", 400, epoch_bad);
    post(&f, "/strong/prepare", "{\"epoch\":-1}", 400, epoch_bad);
    post(&f, "/strong/prepare", "{\"epoch\":\"9\"}", 400, epoch_bad);
    post(&f, "/strong/prepare", "{\"epoch\":9.5}", 400, epoch_bad);
    post(&f, "/strong/prepare", "[]", 400,
         "{\"detail\":\"body must be a JSON object\",\"error\":\"bad_json\"}");
    post(&f, "/strong/accept", "{\"round\":1,\"entries\":[]}", 400, epoch_bad);
    post(&f, "/strong/accept", "{\"epoch\":9,\"entries\":[]}", 400, round_bad);
    post(&f, "/strong/accept", "{\"epoch\":9,\"round\":-3,\"entries\":[]}", 400, round_bad);
    post(&f, "/strong/accept", "{\"epoch\":9,\"round\":1}", 400, entries_bad);
    post(&f, "/strong/accept", "{\"epoch\":9,\"round\":1,\"entries\":{}}", 400, entries_bad);
    /* One bad entry refuses the whole message, the good ones before it included. */
    const char *bad_entries[] = {
        "[\"views\"]",       "[\"views\",1,2]", "[5,1]",
        "[\"a b\",1]",       "[\"\",1]",        "[\"views\",1.5]",
        "[\"views\",\"1\"]", "\"views\"",       "[\"views\",9223372036854775808]"};
    for (size_t i = 0; i < sizeof bad_entries / sizeof *bad_entries; i++) {
        char body[256];
        snprintf(body, sizeof body, "{\"epoch\":9,\"round\":1,\"entries\":[[\"views\",5],%s]}",
                 bad_entries[i]);
        post(&f, "/strong/accept", body, 400,
             "{\"detail\":\"entries[1] must be [counter name, integer value]\",\"error\":"
             "\"bad_field\"}");
    }
    /* Validation comes before the epoch check, and nothing changed. */
    CHECK_EQ_U64(strongrep_promised(f.rep.state), 2);
    CHECK_EQ_I64(strongrep_get(f.rep.state, "views", 5)->value, 1);
    CHECK_EQ_I64(strongrep_count(f.rep.state), 1);

    struct buf out = BUF_INIT;
    CHECK_EQ_I64(exchange(&f, "POST", "/strong/prepare", "{\"epoch\":", &out), 400);
    CHECK(strstr(unit_http_body(&out), "body is not valid JSON: ") != NULL);
    CHECK_EQ_I64(exchange(&f, "GET", "/strong/prepare", NULL, &out), 405);
    CHECK(strstr(unit_http_body(&out), "\"error\":\"method_not_allowed\"") != NULL);
    CHECK_EQ_I64(exchange(&f, "POST", "/strong/other", "{}", &out), 404);
    CHECK_STR_EQ(unit_http_body(&out), "{\"detail\":\"no such strong-counter endpoint\",\"error\":"
                                       "\"not_found\"}");
    CHECK_EQ_I64(exchange(&f, "POST", "/strong/prepared", "{}", &out), 404);
    buf_free(&out);
    CHECK_EQ_U64(strongrep_promised(f.rep.state), 2);
    fx_free(&f);
}

UNIT_MAIN("replica", UNIT_CASE(test_prepare_accept), UNIT_CASE(test_refused))
