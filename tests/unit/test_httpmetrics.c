/*
 * test_httpmetrics.c - core/net/httpmetrics.c: the HTTP server's tallies as Prometheus
 * series. Requests go through socketpairs adopted by a server; the registry is rendered
 * and its lines compared: answers by status code (a code never answered has no series),
 * the duration histogram's count, connections accepted and open, each render reading the
 * server again.
 *
 * Never include this from core/.
 */
#include <event2/event.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "base/buf.h"
#include "base/clock.h"
#include "net/http.h"
#include "net/httpmetrics.h"
#include "obs/metrics.h"
#include "unit.h"
#include "unit_http.h"

struct fx {
    struct event_base *base;
    struct http_server *srv;
    struct metrics *reg;
};

/* /s/<code>: answered with that status. */
static void handler(struct http_request *req, void *arg)
{
    (void)arg;
    int code = 200;
    if (!strncmp(req->path, "/s/", 3))
        code = atoi(req->path + 3);
    http_respond_error(req, code, "x", "status %d", code);
}

static int fx_init(struct fx *f)
{
    memset(f, 0, sizeof *f);
    f->base = event_base_new();
    f->srv = unit_http_server(f->base, handler, f);
    if (!f->srv)
        return -1;
    f->reg = metrics_new();
    httpmetrics_register(f->reg, f->srv);
    return 0;
}

static void fx_free(struct fx *f)
{
    metrics_free(f->reg);
    http_server_free(f->srv);
    event_base_free(f->base);
}

/* One request through the server (unit_http.h). */
static int exchange(struct fx *f, const char *method, const char *path, const char *body,
                    struct buf *out)
{
    return unit_http(f->base, f->srv, method, path, body, out);
}

/* The registry rendered (static buffer). */
static const char *render(struct fx *f)
{
    static char text[16384];
    struct buf b = BUF_INIT;
    metrics_render(f->reg, &b);
    snprintf(text, sizeof text, "%s", buf_cstr(&b));
    buf_free(&b);
    return text;
}

static void check_line(const char *text, const char *line)
{
    char want[256];
    snprintf(want, sizeof want, "\n%s\n", line);
    unit_context("%s", line);
    CHECK(strstr(text, want) != NULL);
    unit_context("%s", "");
}

static void test_series(void)
{
    struct fx f;
    REQUIRE(fx_init(&f) == 0);
    const char *t = render(&f);
    check_line(t, "# TYPE counterd_http_requests_total counter");
    CHECK(strstr(t, "counterd_http_requests_total{") == NULL); /* nothing answered yet */
    check_line(t, "counterd_http_request_duration_seconds_count 0");
    check_line(t, "counterd_http_connections_accepted_total 0");
    check_line(t, "counterd_http_connections_open 0");
    check_line(t, "counterd_http_connections_rejected_total 0");

    struct buf out = BUF_INIT;
    CHECK_EQ_I64(exchange(&f, "GET", "/", NULL, &out), 200);
    CHECK_EQ_I64(exchange(&f, "GET", "/s/200", NULL, &out), 200);
    CHECK_EQ_I64(exchange(&f, "GET", "/s/404", NULL, &out), 404);
    CHECK_EQ_I64(exchange(&f, "GET", "/s/599", NULL, &out), 599);
    CHECK_EQ_I64(exchange(&f, "GET", "/s/100", NULL, &out), 100);
    buf_free(&out);
    t = render(&f);
    check_line(t, "counterd_http_requests_total{code=\"200\"} 2");
    check_line(t, "counterd_http_requests_total{code=\"404\"} 1");
    check_line(t, "counterd_http_requests_total{code=\"599\"} 1");
    check_line(t, "counterd_http_requests_total{code=\"100\"} 1");
    CHECK(strstr(t, "code=\"500\"") == NULL);
    check_line(t, "counterd_http_request_duration_seconds_count 5");
    check_line(t, "counterd_http_request_duration_seconds_bucket{le=\"+Inf\"} 5");
    check_line(t, "counterd_http_connections_accepted_total 5");
    check_line(t, "counterd_http_connections_open 0");

    /* One connection held open: seen at the next render. */
    int sv[2];
    REQUIRE(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv) == 0);
    REQUIRE(http_server_adopt(f.srv, sv[1]) == 0);
    event_base_loop(f.base, EVLOOP_NONBLOCK);
    t = render(&f);
    check_line(t, "counterd_http_connections_open 1");
    check_line(t, "counterd_http_connections_accepted_total 6");
    close(sv[0]);
    for (int i = 0; i < 20; i++) {
        event_base_loop(f.base, EVLOOP_NONBLOCK);
        struct pollfd p = {sv[1], 0, 0};
        poll(&p, 0, 1);
    }
    check_line(render(&f), "counterd_http_connections_open 0");
    fx_free(&f);
}

UNIT_MAIN("httpmetrics", UNIT_CASE(test_series))
