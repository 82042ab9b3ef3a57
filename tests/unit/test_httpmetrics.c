/*
 * test_httpmetrics.c - core/net/httpmetrics.c: the HTTP server's tallies as Prometheus
 * series. Requests go through socketpairs adopted by a server; the registry is rendered
 * and its lines compared: answers by status code (a code never answered has no series),
 * the duration histogram's count, connections accepted and open, each render reading the
 * server again.
 *
 * Never include this from core/.
 */
#include <errno.h>
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
    struct http_server_opts o = {.port = 0};
    char err[256] = "";
    f->srv = http_server_new(f->base, &o, handler, f, err, sizeof err);
    if (!f->srv) {
        fprintf(stderr, "server: %s\n", err);
        return -1;
    }
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

/* One request (Connection: close) through a socketpair; the whole answer into out.
 * @return the status, or -1 when no whole answer came within 5 s. */
static int exchange(struct fx *f, const char *method, const char *path, const char *body,
                    struct buf *out)
{
    int sv[2];
    buf_reset(out);
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv) < 0)
        return -1;
    if (http_server_adopt(f->srv, sv[1]) < 0) {
        close(sv[0]);
        return -1;
    }
    struct buf req = BUF_INIT;
    buf_printf(&req, "%s %s HTTP/1.1\r\nHost: t\r\nConnection: close\r\n", method, path);
    if (body)
        buf_printf(&req, "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n%s",
                   strlen(body), body);
    else
        buf_puts(&req, "\r\n");
    size_t sent = 0;
    int eof = 0;
    double end = clock_mono_ms() + 5000;
    while (!eof && clock_mono_ms() < end) {
        if (sent < req.len) {
            ssize_t w = write(sv[0], req.data + sent, req.len - sent);
            if (w > 0)
                sent += (size_t)w;
        }
        event_base_loop(f->base, EVLOOP_NONBLOCK);
        char tmp[4096];
        ssize_t n = read(sv[0], tmp, sizeof tmp);
        if (n > 0)
            buf_append(out, tmp, (size_t)n);
        else if (n == 0)
            eof = 1;
        else if (errno == EAGAIN) {
            struct pollfd p = {sv[0], POLLIN, 0};
            poll(&p, 1, 1);
        }
    }
    close(sv[0]);
    event_base_loop(f->base, EVLOOP_NONBLOCK); /* the server sees the close */
    buf_free(&req);
    int status = -1;
    if (!eof || out->len < 12 || sscanf(buf_cstr(out), "HTTP/1.1 %d", &status) != 1)
        return -1;
    return status;
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
