/*
 * test_client.c - core/net/client.c, the libcurl multi client on the libevent loop, against
 * the project's own HTTP server on a loopback ephemeral port, both on one event_base: a GET
 * and a POST round trip (what the server received: method, body, content type, no
 * "Expect: 100-continue"), other methods, a large answer, the status of a non-2xx answer,
 * keep-alive reuse, a call's timeout, a refused connection, cancel, the pending count,
 * client_free with calls in flight, and a callback that starts the next call.
 *
 * Every wait is bounded by a deadline; the server holds the answers of /hold requests and
 * answers them all before it is freed. Never include this from core/.
 */
#include <arpa/inet.h>
#include <curl/curl.h>
#include <event2/event.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "base/buf.h"
#include "base/clock.h"
#include "net/client.h"
#include "net/http.h"
#include "unit.h"

#define MAX_HELD 16
#define BIG (3u << 20) /* a 3 MiB answer: many write callbacks */

struct fx {
    struct event_base *base;
    struct http_server *srv;
    struct client *cl;
    int port;
    struct http_request *held[MAX_HELD];
    int nheld;
    /* What the server saw last. */
    char method[16], ctype[64], expect[64], path[128];
    struct buf body;
    int requests;
};

struct got {
    int called, status;
    char error[256];
    struct buf body;
    double elapsed_ms;
    struct fx *fx;
    /* Chained calls: how many more to start from the callback. */
    int chain;
};

static char *big_body;

static void handler(struct http_request *req, void *arg)
{
    struct fx *f = arg;
    f->requests++;
    snprintf(f->method, sizeof f->method, "%s", req->method_name);
    snprintf(f->path, sizeof f->path, "%s", req->path);
    const char *h = http_request_header(req, "content-type");
    snprintf(f->ctype, sizeof f->ctype, "%s", h ? h : "");
    h = http_request_header(req, "expect");
    snprintf(f->expect, sizeof f->expect, "%s", h ? h : "");
    buf_reset(&f->body);
    buf_append(&f->body, req->body, req->body_len);
    if (http_path_is(req, "/hold") && f->nheld < MAX_HELD) {
        f->held[f->nheld++] = req;
        return;
    }
    if (http_path_is(req, "/teapot")) {
        http_respond_error(req, 418, "teapot", "short and stout");
        return;
    }
    if (http_path_is(req, "/big")) {
        http_respond_ex(req, 200, "text/plain", NULL, big_body, BIG);
        return;
    }
    /* Echo the body (or "hello" when there is none). */
    if (req->body_len)
        http_respond_ex(req, 200, "text/plain", NULL, req->body, req->body_len);
    else
        http_respond_ex(req, 200, "text/plain", NULL, "hello", 5);
}

static int fx_init(struct fx *f)
{
    memset(f, 0, sizeof *f);
    signal(SIGPIPE, SIG_IGN);
    curl_global_init(CURL_GLOBAL_DEFAULT);
    f->base = event_base_new();
    struct http_server_opts o = {.port = 0, .max_body_bytes = 4 << 20};
    char err[256] = "";
    f->srv = http_server_new(f->base, &o, handler, f, err, sizeof err);
    if (!f->srv) {
        fprintf(stderr, "server: %s\n", err);
        return -1;
    }
    f->port = http_server_port(f->srv);
    f->cl = client_new(f->base);
    return 0;
}

/* Runs the loop until *flag reaches want or ms pass. @return 1 when it did. */
static int run_until(struct fx *f, const int *flag, int want, double ms)
{
    double end = clock_mono_ms() + ms;
    while (*flag < want && clock_mono_ms() < end) {
        struct timeval tv = {0, 20000};
        event_base_loopexit(f->base, &tv);
        event_base_loop(f->base, EVLOOP_ONCE);
    }
    return *flag >= want;
}

/* Runs the loop for ms whatever happens. */
static void run_for(struct fx *f, double ms)
{
    int never = 0;
    run_until(f, &never, 1, ms);
}

static void fx_free(struct fx *f)
{
    client_free(f->cl);
    f->cl = NULL;
    for (int i = 0; i < f->nheld; i++)
        http_respond_ex(f->held[i], 200, "text/plain", NULL, "late", 4);
    f->nheld = 0;
    run_for(f, 50); /* the late answers are written (or dropped: their clients left) */
    if (f->srv)
        http_server_free(f->srv);
    event_base_free(f->base);
    buf_free(&f->body);
    curl_global_cleanup();
}

static void on_done(const struct client_result *res, void *arg)
{
    struct got *g = arg;
    g->called++;
    g->status = res->status;
    snprintf(g->error, sizeof g->error, "%s", res->error ? res->error : "");
    buf_reset(&g->body);
    buf_append(&g->body, res->body, res->len);
    g->elapsed_ms = res->elapsed_ms;
    /* The body is NUL-terminated. */
    if (res->body[res->len] != '\0')
        g->status = -1;
}

static void url_of(struct fx *f, char *url, size_t cap, const char *path)
{
    snprintf(url, cap, "http://127.0.0.1:%d%s", f->port, path);
}

static void test_get(void)
{
    struct fx f;
    REQUIRE(fx_init(&f) == 0);
    struct got g = {0};
    char url[128];
    url_of(&f, url, sizeof url, "/hi?x=1");
    struct client_call_opts o = {.url = url};
    CHECK_EQ_I64(client_pending(f.cl), 0);
    CHECK(client_request(f.cl, &o, on_done, &g) != NULL);
    CHECK_EQ_I64(client_pending(f.cl), 1);
    CHECK(run_until(&f, &g.called, 1, 5000));
    CHECK_EQ_I64(g.called, 1);
    CHECK_EQ_I64(g.status, 200);
    CHECK_STR_EQ(g.error, "");
    CHECK_MEM_EQ(g.body.data, g.body.len, "hello", 5);
    CHECK(g.elapsed_ms >= 0 && g.elapsed_ms < 5000);
    CHECK_STR_EQ(f.method, "GET");
    CHECK_STR_EQ(f.path, "/hi");
    CHECK_STR_EQ(f.ctype, "");
    CHECK_EQ_I64(client_pending(f.cl), 0);
    run_for(&f, 50);
    CHECK_EQ_I64(g.called, 1); /* once only */
    buf_free(&g.body);
    fx_free(&f);
}

static void test_post(void)
{
    struct fx f;
    REQUIRE(fx_init(&f) == 0);
    struct got g = {0};
    char url[128];
    url_of(&f, url, sizeof url, "/echo");
    /* A body over curl's "Expect: 100-continue" threshold (1 KiB or 1 MiB by version):
     * no "Expect", no second's wait for a "100 Continue". */
    enum { LARGE = (3 << 20) / 2 };
    char *body = malloc(LARGE);
    REQUIRE(body != NULL);
    for (size_t i = 0; i < LARGE; i++)
        body[i] = (char)('a' + i % 26);
    body[0] = '{';
    struct client_call_opts o = {.method = "POST", .url = url, .body = body, .body_len = LARGE};
    CHECK(client_request(f.cl, &o, on_done, &g) != NULL);
    double t0 = clock_mono_ms();
    CHECK(run_until(&f, &g.called, 1, 5000));
    CHECK(clock_mono_ms() - t0 < 900);
    CHECK_EQ_I64(g.status, 200);
    CHECK_STR_EQ(f.method, "POST");
    CHECK_STR_EQ(f.ctype, "application/json");
    CHECK_STR_EQ(f.expect, "");
    CHECK_MEM_EQ(f.body.data, f.body.len, body, LARGE);
    CHECK_MEM_EQ(g.body.data, g.body.len, body, LARGE);

    /* The body is copied at the call: changing it afterwards changes nothing. */
    const char *hdrs[] = {"Content-Type: text/plain", "X-Test: 1", NULL};
    struct client_call_opts o2 = {
        .method = "POST", .url = url, .body = body, .body_len = 5, .headers = hdrs};
    g.called = 0;
    CHECK(client_request(f.cl, &o2, on_done, &g) != NULL);
    memset(body, 'y', 5);
    CHECK(run_until(&f, &g.called, 1, 5000));
    CHECK_STR_EQ(f.ctype, "text/plain");
    CHECK_MEM_EQ(f.body.data, f.body.len, "{bcde", 5);

    /* POST without a body sends an empty one. */
    struct client_call_opts o3 = {.method = "POST", .url = url};
    g.called = 0;
    CHECK(client_request(f.cl, &o3, on_done, &g) != NULL);
    CHECK(run_until(&f, &g.called, 1, 5000));
    CHECK_EQ_I64(g.status, 200);
    CHECK_STR_EQ(f.method, "POST");
    CHECK_EQ_I64(f.body.len, 0);
    free(body);
    buf_free(&g.body);
    fx_free(&f);
}

static void test_methods_and_status(void)
{
    struct fx f;
    REQUIRE(fx_init(&f) == 0);
    big_body = malloc(BIG);
    for (size_t i = 0; i < BIG; i++)
        big_body[i] = (char)('a' + i % 26);
    struct got g = {0};
    char url[128];
    url_of(&f, url, sizeof url, "/m");
    const char *methods[] = {"PUT", "DELETE", "HEAD"};
    for (int i = 0; i < 3; i++) {
        unit_context("%s", methods[i]);
        struct client_call_opts o = {.method = methods[i], .url = url};
        g.called = 0;
        CHECK(client_request(f.cl, &o, on_done, &g) != NULL);
        CHECK(run_until(&f, &g.called, 1, 5000));
        CHECK_EQ_I64(g.status, 200);
        CHECK_STR_EQ(f.method, methods[i]);
        CHECK_EQ_I64(g.body.len, i == 2 ? 0 : 5); /* HEAD: no body */
    }
    unit_context("%s", "");

    /* A non-2xx answer is an answer: its status and body, no transport error. */
    url_of(&f, url, sizeof url, "/teapot");
    struct client_call_opts o = {.url = url};
    g.called = 0;
    CHECK(client_request(f.cl, &o, on_done, &g) != NULL);
    CHECK(run_until(&f, &g.called, 1, 5000));
    CHECK_EQ_I64(g.status, 418);
    CHECK_STR_EQ(g.error, "");
    CHECK(strstr(g.body.data, "\"error\":\"teapot\"") != NULL);

    /* A large answer, whole. */
    url_of(&f, url, sizeof url, "/big");
    g.called = 0;
    CHECK(client_request(f.cl, &o, on_done, &g) != NULL);
    CHECK(run_until(&f, &g.called, 1, 10000));
    CHECK_EQ_I64(g.status, 200);
    CHECK_MEM_EQ(g.body.data, g.body.len, big_body, BIG);
    buf_free(&g.body);
    fx_free(&f);
    free(big_body);
    big_body = NULL;
}

/* Calls one after the other reuse one connection. */
static void test_keep_alive(void)
{
    struct fx f;
    REQUIRE(fx_init(&f) == 0);
    struct got g = {0};
    char url[128];
    url_of(&f, url, sizeof url, "/ka");
    struct client_call_opts o = {.url = url};
    for (int i = 0; i < 5; i++) {
        g.called = 0;
        CHECK(client_request(f.cl, &o, on_done, &g) != NULL);
        CHECK(run_until(&f, &g.called, 1, 5000));
        CHECK_EQ_I64(g.status, 200);
    }
    struct http_server_stats st;
    http_server_stats(f.srv, &st);
    CHECK_EQ_U64(st.requests, 5);
    CHECK_EQ_U64(st.accepted, 1);
    buf_free(&g.body);
    fx_free(&f);
}

static void test_timeout(void)
{
    struct fx f;
    REQUIRE(fx_init(&f) == 0);
    struct got g = {0};
    char url[128];
    url_of(&f, url, sizeof url, "/hold");
    struct client_call_opts o = {.url = url, .timeout_ms = 200};
    double t0 = clock_mono_ms();
    CHECK(client_request(f.cl, &o, on_done, &g) != NULL);
    CHECK(run_until(&f, &g.called, 1, 5000));
    double dt = clock_mono_ms() - t0;
    CHECK_EQ_I64(g.called, 1);
    CHECK_EQ_I64(g.status, 0);
    CHECK(g.error[0] != '\0');
    CHECK(strstr(g.error, "imeout") != NULL || strstr(g.error, "imed out") != NULL);
    CHECK(dt >= 190 && dt < 2000);
    CHECK(g.elapsed_ms >= 190 && g.elapsed_ms < 2000);
    CHECK_EQ_I64(f.nheld, 1); /* the server did get it */
    CHECK_EQ_I64(client_pending(f.cl), 0);
    buf_free(&g.body);
    fx_free(&f);
}

/* A port nobody listens on: no answer, a transport error, soon. */
static void test_refused(void)
{
    struct fx f;
    REQUIRE(fx_init(&f) == 0);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    REQUIRE(fd >= 0);
    REQUIRE(bind(fd, (struct sockaddr *)&a, len) == 0);
    REQUIRE(getsockname(fd, (struct sockaddr *)&a, &len) == 0);
    close(fd); /* bound, never listened, closed: connecting is refused */
    char url[128];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/x", ntohs(a.sin_port));
    struct got g = {0};
    struct client_call_opts o = {.url = url, .timeout_ms = 3000};
    CHECK(client_request(f.cl, &o, on_done, &g) != NULL);
    CHECK(run_until(&f, &g.called, 1, 5000));
    CHECK_EQ_I64(g.status, 0);
    CHECK(g.error[0] != '\0');
    CHECK(g.elapsed_ms < 2500);

    /* A scheme the client refuses (only http and https): an error through the callback. */
    struct client_call_opts o2 = {.url = "ftp://127.0.0.1/x"};
    g.called = 0;
    CHECK(client_request(f.cl, &o2, on_done, &g) != NULL);
    CHECK(run_until(&f, &g.called, 1, 5000));
    CHECK_EQ_I64(g.status, 0);
    CHECK(g.error[0] != '\0');
    CHECK_EQ_I64(client_pending(f.cl), 0);
    buf_free(&g.body);
    fx_free(&f);
}

static void test_cancel_and_pending(void)
{
    struct fx f;
    REQUIRE(fx_init(&f) == 0);
    char url[128];
    url_of(&f, url, sizeof url, "/hold");
    struct got g[3] = {{0}};
    struct client_call *c[3];
    struct client_call_opts o = {.url = url, .timeout_ms = 5000};
    for (int i = 0; i < 3; i++) {
        c[i] = client_request(f.cl, &o, on_done, &g[i]);
        CHECK(c[i] != NULL);
        CHECK_EQ_I64(client_pending(f.cl), i + 1);
    }
    CHECK(run_until(&f, &f.nheld, 3, 5000)); /* all three reached the server */
    client_cancel(c[1]);
    CHECK_EQ_I64(client_pending(f.cl), 2);
    client_cancel(NULL); /* nothing */
    CHECK_EQ_I64(client_pending(f.cl), 2);
    /* Answer all three: the cancelled call's callback is never called. */
    for (int i = 0; i < f.nheld; i++)
        http_respond_ex(f.held[i], 200, "text/plain", NULL, "late", 4);
    f.nheld = 0;
    int both = 0;
    double end = clock_mono_ms() + 5000;
    while (!(g[0].called && g[2].called) && clock_mono_ms() < end)
        run_for(&f, 20);
    both = g[0].called && g[2].called;
    CHECK(both);
    run_for(&f, 50);
    CHECK_EQ_I64(g[0].called, 1);
    CHECK_EQ_I64(g[1].called, 0);
    CHECK_EQ_I64(g[2].called, 1);
    CHECK_EQ_I64(g[0].status, 200);
    CHECK_EQ_I64(client_pending(f.cl), 0);

    /* Cancel before the loop ever ran: nothing sent, nothing called. */
    int before = f.requests;
    struct got h = {0};
    struct client_call *x = client_request(f.cl, &o, on_done, &h);
    CHECK(x != NULL);
    client_cancel(x);
    CHECK_EQ_I64(client_pending(f.cl), 0);
    run_for(&f, 100);
    CHECK_EQ_I64(h.called, 0);
    CHECK_EQ_I64(f.requests, before);

    /* client_free with calls in flight: no callback (valgrind and ASan see no leak). */
    struct got k[2] = {{0}};
    for (int i = 0; i < 2; i++)
        CHECK(client_request(f.cl, &o, on_done, &k[i]) != NULL);
    CHECK(run_until(&f, &f.nheld, 2, 5000));
    CHECK_EQ_I64(client_pending(f.cl), 2);
    client_free(f.cl);
    f.cl = client_new(f.base);
    run_for(&f, 50);
    CHECK_EQ_I64(k[0].called + k[1].called, 0);
    for (int i = 0; i < 3; i++)
        buf_free(&g[i].body);
    fx_free(&f);
}

/* A callback may start the next call (callbacks never run inside curl). */
static void on_chain(const struct client_result *res, void *arg)
{
    struct got *g = arg;
    on_done(res, arg);
    if (g->chain-- > 0) {
        char url[128];
        url_of(g->fx, url, sizeof url, "/chain");
        struct client_call_opts o = {.url = url};
        if (!client_request(g->fx->cl, &o, on_chain, g))
            g->status = -2;
    }
}

static void test_callback_starts_call(void)
{
    struct fx f;
    REQUIRE(fx_init(&f) == 0);
    struct got g = {0};
    g.fx = &f;
    g.chain = 4;
    char url[128];
    url_of(&f, url, sizeof url, "/chain");
    struct client_call_opts o = {.url = url};
    CHECK(client_request(f.cl, &o, on_chain, &g) != NULL);
    CHECK(run_until(&f, &g.called, 5, 5000));
    CHECK_EQ_I64(g.called, 5);
    CHECK_EQ_I64(g.status, 200);
    CHECK_EQ_I64(f.requests, 5);
    CHECK_EQ_I64(client_pending(f.cl), 0);
    buf_free(&g.body);
    fx_free(&f);
}

/* Many calls at once, all answered, each exactly once. */
static void test_many(void)
{
    struct fx f;
    REQUIRE(fx_init(&f) == 0);
    enum { N = 40 };
    static struct got g[N];
    memset(g, 0, sizeof g);
    char url[128];
    int done = 0;
    for (int i = 0; i < N; i++) {
        snprintf(url, sizeof url, "http://127.0.0.1:%d/n", f.port);
        char body[32];
        int n = snprintf(body, sizeof body, "%d", i);
        struct client_call_opts o = {
            .method = "POST", .url = url, .body = body, .body_len = (size_t)n};
        CHECK(client_request(f.cl, &o, on_done, &g[i]) != NULL);
    }
    CHECK_EQ_I64(client_pending(f.cl), N);
    double end = clock_mono_ms() + 10000;
    while (client_pending(f.cl) > 0 && clock_mono_ms() < end)
        run_for(&f, 20);
    for (int i = 0; i < N; i++) {
        char body[32];
        int n = snprintf(body, sizeof body, "%d", i);
        unit_context("call %d", i);
        CHECK_EQ_I64(g[i].called, 1);
        CHECK_EQ_I64(g[i].status, 200);
        CHECK_MEM_EQ(g[i].body.data, g[i].body.len, body, (size_t)n);
        done += g[i].called;
        buf_free(&g[i].body);
    }
    unit_context("%s", "");
    CHECK_EQ_I64(done, N);
    fx_free(&f);
}

UNIT_MAIN("client", UNIT_CASE(test_get), UNIT_CASE(test_post), UNIT_CASE(test_methods_and_status),
          UNIT_CASE(test_keep_alive), UNIT_CASE(test_timeout), UNIT_CASE(test_refused),
          UNIT_CASE(test_cancel_and_pending), UNIT_CASE(test_callback_starts_call),
          UNIT_CASE(test_many))
