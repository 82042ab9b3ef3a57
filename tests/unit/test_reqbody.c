/*
 * test_reqbody.c - core/roles/reqbody.c: the body of an increment (API.md) and a counter
 * name from a path, read inside the project's HTTP server. Each request goes through a
 * socketpair adopted by the server (no port); the handler answers 200 with what was read,
 * or reqbody has answered 400 itself: the test reads the whole answer (status, the JSON
 * error and detail naming the field and the reason).
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
#include "roles/reqbody.h"
#include "unit.h"
#include "unit_http.h"

struct fx {
    struct event_base *base;
    struct http_server *srv;
    struct json_parser parser;
};

/* /incr: reqbody_increment; /object: reqbody_object; /counter/<raw>: reqbody_path_name. */
static void handler(struct http_request *req, void *arg)
{
    struct fx *f = arg;
    struct buf b = BUF_INIT;
    if (http_path_is(req, "/incr")) {
        struct incr_body in;
        if (reqbody_increment(&f->parser, req, &in) < 0)
            return;
        buf_puts(&b, "{\"name\":");
        buf_json_str(&b, in.name, in.nlen);
        buf_printf(&b, ",\"amount\":%lld,\"extra\":%s}", (long long)in.amount,
                   json_get(in.root, "extra") ? "true" : "false");
    } else if (http_path_is(req, "/object")) {
        const struct json *o = reqbody_object(&f->parser, req);
        if (!o)
            return;
        buf_printf(&b, "{\"type\":\"%s\"}", json_type_name(o->type));
    } else if (!strncmp(req->path, "/counter/", 9)) {
        char name[256];
        long n = reqbody_path_name(req, req->path + 9, req->path_len - 9, name, sizeof name);
        if (n < 0)
            return;
        buf_puts(&b, "{\"name\":");
        buf_json_str(&b, name, (size_t)n);
        buf_puts(&b, "}");
    } else {
        buf_puts(&b, "{}");
    }
    http_respond_json(req, 200, b.data, b.len);
    buf_free(&b);
}

static int fx_init(struct fx *f)
{
    memset(f, 0, sizeof *f);
    f->base = event_base_new();
    json_parser_init(&f->parser);
    f->srv = unit_http_server(f->base, handler, f);
    return f->srv ? 0 : -1;
}

static void fx_free(struct fx *f)
{
    if (f->srv)
        http_server_free(f->srv);
    json_parser_free(&f->parser);
    event_base_free(f->base);
}

/* One request through the server (unit_http.h). */
static int exchange(struct fx *f, const char *method, const char *path, const char *body,
                    struct buf *out)
{
    return unit_http(f->base, f->srv, method, path, body, out);
}

static void check_ok(struct fx *f, const char *path, const char *body, const char *expect)
{
    struct buf out = BUF_INIT;
    unit_context("%s %s", path, body ? body : "(no body)");
    CHECK_EQ_I64(exchange(f, "POST", path, body, &out), 200);
    CHECK_STR_EQ(unit_http_body(&out), expect);
    buf_free(&out);
    unit_context("%s", "");
}

/* Refused with 400: error is the code, detail the start of the sentence (all of it when
 * it ends with '$'). */
static void check_400(struct fx *f, const char *path, const char *body, const char *error,
                      const char *detail)
{
    struct buf out = BUF_INIT;
    unit_context("%s %s", path, body ? body : "(no body)");
    CHECK_EQ_I64(exchange(f, "POST", path, body, &out), 400);
    char head[512], tail[128];
    size_t dl = strlen(detail);
    int whole = dl && detail[dl - 1] == '$';
    snprintf(head, sizeof head, "{\"detail\":\"%.*s%s", (int)(whole ? dl - 1 : dl), detail,
             whole ? "\"," : "");
    snprintf(tail, sizeof tail, "\",\"error\":\"%s\"}", error);
    const char *got = unit_http_body(&out);
    CHECK_MEM_EQ(got, strlen(head) < strlen(got) ? strlen(head) : strlen(got), head, strlen(head));
    size_t gl = strlen(got), tl = strlen(tail);
    CHECK(gl >= tl && !strcmp(got + gl - tl, tail));
    buf_free(&out);
    unit_context("%s", "");
}

static void test_increment_ok(void)
{
    struct fx f;
    REQUIRE(fx_init(&f) == 0);
    const char *dflt = "{\"name\":\"views\",\"amount\":1,\"extra\":false}";
    check_ok(&f, "/incr", NULL, dflt);
    check_ok(&f, "/incr", "", dflt);
    check_ok(&f, "/incr", " \r\n\t ", dflt);
    check_ok(&f, "/incr", "{}", dflt);
    check_ok(&f, "/incr", "{\"counter_name\":null,\"amount\":null}", dflt);
    check_ok(&f, "/incr", "{\"counter_name\":\"clicks\"}",
             "{\"name\":\"clicks\",\"amount\":1,\"extra\":false}");
    check_ok(&f, "/incr", "{\"amount\":-5,\"extra\":1}",
             "{\"name\":\"views\",\"amount\":-5,\"extra\":true}");
    check_ok(&f, "/incr", "{\"counter_name\":\"a.b:c-d_e\",\"amount\":9223372036854775807}",
             "{\"name\":\"a.b:c-d_e\",\"amount\":9223372036854775807,\"extra\":false}");
    check_ok(&f, "/incr", "{\"amount\":-9223372036854775808}",
             "{\"name\":\"views\",\"amount\":-9223372036854775808,\"extra\":false}");
    check_ok(&f, "/incr", "{\"amount\":0}", "{\"name\":\"views\",\"amount\":0,\"extra\":false}");
    /* 200 bytes: the longest name. */
    char body[300], expect[400], name[201];
    memset(name, 'n', 200);
    name[200] = '\0';
    snprintf(body, sizeof body, "{\"counter_name\":\"%s\"}", name);
    snprintf(expect, sizeof expect, "{\"name\":\"%s\",\"amount\":1,\"extra\":false}", name);
    check_ok(&f, "/incr", body, expect);
    fx_free(&f);
}

static void test_increment_refused(void)
{
    struct fx f;
    REQUIRE(fx_init(&f) == 0);
    check_400(&f, "/incr", "{", "bad_json", "body is not valid JSON: ");
    check_400(&f, "/incr", "{\"amount\":1,}", "bad_json", "body is not valid JSON: ");
    check_400(&f, "/incr", "[1]", "bad_json", "body must be a JSON object, not array$");
    check_400(&f, "/incr", "\"views\"", "bad_json", "body must be a JSON object, not string$");
    check_400(&f, "/incr", "5", "bad_json", "body must be a JSON object, not ");
    check_400(&f, "/incr", "{\"counter_name\":5}", "bad_field",
              "counter_name must be a string, not ");
    check_400(&f, "/incr", "{\"counter_name\":[\"a\"]}", "bad_field",
              "counter_name must be a string, not array$");
    check_400(&f, "/incr", "{\"counter_name\":\"\"}", "bad_name",
              "counter_name must be 1-200 bytes of [A-Za-z0-9_.:-]$");
    check_400(&f, "/incr", "{\"counter_name\":\"a b\"}", "bad_name",
              "counter_name must be 1-200 bytes of [A-Za-z0-9_.:-]$");
    check_400(&f, "/incr", "{\"counter_name\":\"a/b\"}", "bad_name",
              "counter_name must be 1-200 bytes of [A-Za-z0-9_.:-]$");
    char body[300];
    char name[202];
    memset(name, 'n', 201);
    name[201] = '\0';
    snprintf(body, sizeof body, "{\"counter_name\":\"%s\"}", name);
    check_400(&f, "/incr", body, "bad_name", "counter_name must be 1-200 bytes");
    check_400(&f, "/incr", "{\"amount\":1.5}", "bad_field",
              "amount must be an integer, without fraction or exponent$");
    check_400(&f, "/incr", "{\"amount\":1e3}", "bad_field",
              "amount must be an integer, without fraction or exponent$");
    check_400(&f, "/incr", "{\"amount\":9223372036854775808}", "bad_field",
              "amount must be an integer in the signed 64-bit range$");
    check_400(&f, "/incr", "{\"amount\":-9223372036854775809}", "bad_field",
              "amount must be an integer in the signed 64-bit range$");
    check_400(&f, "/incr", "{\"amount\":\"1\"}", "bad_field",
              "amount must be an integer, not string$");
    check_400(&f, "/incr", "{\"amount\":true}", "bad_field", "amount must be an integer, not ");
    check_400(&f, "/incr", "{\"amount\":{}}", "bad_field",
              "amount must be an integer, not object$");
    /* The name is checked before the amount: one error, the first. */
    check_400(&f, "/incr", "{\"counter_name\":\"\",\"amount\":1.5}", "bad_name",
              "counter_name must be");
    fx_free(&f);
}

static void test_object(void)
{
    struct fx f;
    REQUIRE(fx_init(&f) == 0);
    check_ok(&f, "/object", NULL, "{\"type\":\"object\"}");
    check_ok(&f, "/object", "\n", "{\"type\":\"object\"}");
    check_ok(&f, "/object", "{\"a\":[1,2]}", "{\"type\":\"object\"}");
    check_400(&f, "/object", "null", "bad_json", "body must be a JSON object, not ");
    check_400(&f, "/object", "{\"a\":}", "bad_json", "body is not valid JSON: ");
    fx_free(&f);
}

static void test_path_name(void)
{
    struct fx f;
    REQUIRE(fx_init(&f) == 0);
    struct buf out = BUF_INIT;
    CHECK_EQ_I64(exchange(&f, "GET", "/counter/views", NULL, &out), 200);
    CHECK_STR_EQ(unit_http_body(&out), "{\"name\":\"views\"}");
    CHECK_EQ_I64(exchange(&f, "GET", "/counter/a%2Eb%3Ac", NULL, &out), 200);
    CHECK_STR_EQ(unit_http_body(&out), "{\"name\":\"a.b:c\"}");
    const char *bad[] = {"/counter/",     "/counter/a%20b", "/counter/a%2",
                         "/counter/a%zz", "/counter/a%2Fb", "/counter/%00"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        unit_context("%s", bad[i]);
        CHECK_EQ_I64(exchange(&f, "GET", bad[i], NULL, &out), 400);
        CHECK_STR_EQ(unit_http_body(&out), "{\"detail\":\"counter names are 1-200 bytes of "
                                           "[A-Za-z0-9_.:-]\",\"error\":\"bad_name\"}");
    }
    unit_context("%s", "");
    buf_free(&out);
    fx_free(&f);
}

UNIT_MAIN("reqbody", UNIT_CASE(test_increment_ok), UNIT_CASE(test_increment_refused),
          UNIT_CASE(test_object), UNIT_CASE(test_path_name))
