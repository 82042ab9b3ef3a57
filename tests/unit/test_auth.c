/*
 * test_auth.c - core/net/auth.c: the admin token, checked inside the project's HTTP server
 * (requests through a socketpair adopted by it). No token: everything passes. A token: only
 * "Authorization: Bearer <token>" (the scheme in any case, the token exactly) passes; anything else
 * gets 401, the JSON error and a WWW-Authenticate header, and the handler behind it is not reached.
 *
 * Never include this from core/.
 */
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "base/buf.h"
#include "base/clock.h"
#include "net/auth.h"
#include "net/http.h"
#include "unit.h"
#include "unit_http.h"

struct fx {
    struct event_base *base;
    struct http_server *srv;
    const char *token;
    int reached; /* requests the handler behind the check saw */
};

static void handler(struct http_request *req, void *arg)
{
    struct fx *f = arg;
    if (auth_refuse_unauthorized(req, f->token))
        return;
    f->reached++;
    http_respond_json(req, 200, "{}", 2);
}

static int fx_init(struct fx *f, const char *token)
{
    memset(f, 0, sizeof *f);
    f->token = token;
    f->base = event_base_new();
    f->srv = unit_http_server(f->base, handler, f);
    return f->srv ? 0 : -1;
}

static void fx_free(struct fx *f)
{
    if (f->srv)
        http_server_free(f->srv);
    event_base_free(f->base);
}

/* One request (Connection: close, with the header lines given); the whole answer into out.
 * @return the status, or -1 when no whole answer came within 5 s. */
static int exchange(struct fx *f, const char *headers, struct buf *out)
{
    struct buf req = BUF_INIT;
    buf_printf(&req, "GET /admin/x HTTP/1.1\r\nHost: t\r\nConnection: close\r\n%s\r\n", headers);
    int status = unit_http_raw(f->base, f->srv, &req, out);
    buf_free(&req);
    return status;
}

static const char refusal[] = "{\"detail\":\"this endpoint needs Authorization: Bearer <admin "
                              "token>\",\"error\":\"unauthorized\"}";

/* headers ("" or "Name: value\r\n" lines) get status; a 401 is checked whole. */
static void check(struct fx *f, const char *headers, int status)
{
    struct buf out = BUF_INIT;
    unit_context("token '%s', headers '%s'", f->token ? f->token : "(null)", headers);
    int before = f->reached;
    CHECK_EQ_I64(exchange(f, headers, &out), status);
    const char *a = buf_cstr(&out);
    const char *body = strstr(a, "\r\n\r\n");
    if (status == 401) {
        CHECK_EQ_I64(f->reached, before);
        CHECK(strstr(a, "\r\nWWW-Authenticate: Bearer\r\n") != NULL);
        CHECK(strstr(a, "\r\nContent-Type: application/json") != NULL);
        CHECK_STR_EQ(body ? body + 4 : "", refusal);
    } else {
        CHECK_EQ_I64(f->reached, before + 1);
        CHECK(strstr(a, "WWW-Authenticate") == NULL);
        CHECK_STR_EQ(body ? body + 4 : "", "{}");
    }
    buf_free(&out);
    unit_context("%s", "");
}

static void test_no_token(void)
{
    const char *tokens[] = {NULL, ""};
    for (int i = 0; i < 2; i++) {
        struct fx f;
        REQUIRE(fx_init(&f, tokens[i]) == 0);
        check(&f, "", 200);
        check(&f, "Authorization: Bearer anything\r\n", 200);
        check(&f, "Authorization: Basic eDp5\r\n", 200);
        fx_free(&f);
    }
}

static void test_token(void)
{
    struct fx f;
    REQUIRE(fx_init(&f, "s3cret-T0ken") == 0);
    check(&f, "Authorization: Bearer s3cret-T0ken\r\n", 200);
    check(&f, "authorization: Bearer s3cret-T0ken\r\n", 200); /* header names: any case */
    check(&f, "Authorization: bearer s3cret-T0ken\r\n", 200); /* the scheme too (RFC 9110) */
    check(&f, "Authorization: BEARER s3cret-T0ken\r\n", 200);
    check(&f, "", 401);
    check(&f, "Authorization: s3cret-T0ken\r\n", 401);
    check(&f, "Authorization: Basic s3cret-T0ken\r\n", 401);
    check(&f, "Authorization: Bearer\r\n", 401);
    check(&f, "Authorization: Bearer:s3cret-T0ken\r\n", 401);
    check(&f, "Authorization: Bearer \r\n", 401);
    check(&f, "Authorization: Bearer s3cret-T0ke\r\n", 401);   /* a prefix */
    check(&f, "Authorization: Bearer s3cret-T0kenn\r\n", 401); /* one more byte */
    check(&f, "Authorization: Bearer s3cret-T0kem\r\n", 401);  /* the last byte differs */
    check(&f, "Authorization: Bearer S3cret-T0ken\r\n", 401);  /* the first byte differs */
    check(&f, "Authorization: Bearer s3cret-t0ken\r\n", 401);  /* case matters */
    check(&f, "Authorization: Bearer s3cret-T0kens3cret-T0ken\r\n", 401); /* twice */
    check(&f, "X-Token: s3cret-T0ken\r\n", 401);
    fx_free(&f);

    /* A one-byte token: the comparison wraps on the shorter string without reading past. */
    REQUIRE(fx_init(&f, "x") == 0);
    check(&f, "Authorization: Bearer x\r\n", 200);
    check(&f, "Authorization: Bearer xx\r\n", 401);
    check(&f, "Authorization: Bearer y\r\n", 401);
    fx_free(&f);
}

UNIT_MAIN("auth", UNIT_CASE(test_no_token), UNIT_CASE(test_token))
