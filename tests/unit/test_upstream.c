/*
 * test_upstream.c - core/net/upstream.c: target URLs read by libcurl's URL parser (IPv4,
 * [IPv6], names, default port, path prefix, what is refused), and one request through the
 * pool to a listener on loopback, by IPv4, by [::1] (when the machine has IPv6 on loopback)
 * and by the name localhost (the looked-up path).
 */
#include <arpa/inet.h>
#include <event2/event.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "net/upstream.h"
#include "unit.h"

static void check_url(const char *url, const char *host, const char *port, const char *hdr,
                      const char *path)
{
    struct upstream_target t;
    char err[300] = "";
    unit_context("%s", url);
    CHECK_EQ_I64(upstream_parse_url(url, &t, err, sizeof err), 0);
    CHECK_STR_EQ(err, "");
    CHECK_STR_EQ(t.host, host);
    CHECK_STR_EQ(t.port, port);
    CHECK_STR_EQ(t.host_header, hdr);
    CHECK_STR_EQ(t.path, path);
    unit_context("%s", "");
}

static void check_refused(const char *url, const char *why)
{
    struct upstream_target t;
    char err[300] = "";
    unit_context("%s", url);
    CHECK_EQ_I64(upstream_parse_url(url, &t, err, sizeof err), -1);
    CHECK(strstr(err, url) != NULL);
    CHECK(strstr(err, why) != NULL);
    unit_context("%s", "");
}

static void test_parse(void)
{
    check_url("http://127.0.0.1:8001", "127.0.0.1", "8001", "127.0.0.1:8001", "");
    check_url("http://127.0.0.1:8001/", "127.0.0.1", "8001", "127.0.0.1:8001", "");
    check_url("http://region-a", "region-a", "80", "region-a", "");
    check_url("http://[::1]:9000", "::1", "9000", "[::1]:9000", "");
    check_url("http://[::1]", "::1", "80", "[::1]", "");
    check_url("http://[2001:db8::7]:8001/eu/west/", "2001:db8::7", "8001", "[2001:db8::7]:8001",
              "/eu/west");
    check_url("http://gw.example:8080/api", "gw.example", "8080", "gw.example:8080", "/api");
    check_url("HTTP://Example:81", "Example", "81", "Example:81", "");
    check_refused("https://127.0.0.1:8001", "only http://");
    check_refused("ftp://127.0.0.1", "only http://");
    check_refused("127.0.0.1:8001", "not an http://");
    check_refused("http://127.0.0.1:8001/?a=1", "no query");
    check_refused("http://u:p@127.0.0.1:8001", "user info");
    check_refused("http://127.0.0.1:99999", "not an http://");
    check_refused("http://[::1:8001", "not an http://");
    check_refused("", "not an http://");
}

/* ---------------------------------------------------------------- a round trip */

struct trip {
    struct event_base *base;
    int lfd;
    char got[512];
    size_t got_len;
    int status, called;
    char body[64];
    struct event *conn_ev;
};

/* The client writes from the same loop: the listener reads as the loop lets it. */
static void on_conn_read(evutil_socket_t c, short what, void *arg)
{
    struct trip *t = arg;
    ssize_t n = read(c, t->got + t->got_len, sizeof t->got - 1 - t->got_len);
    if (n > 0)
        t->got_len += (size_t)n;
    if (n > 0 && !strstr(t->got, "\r\n\r\n") && t->got_len < sizeof t->got - 1)
        return; /* more of the request to come */
    const char *ans = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
    ssize_t w = write(c, ans, strlen(ans));
    (void)w;
    event_free(t->conn_ev);
    t->conn_ev = NULL;
    close(c);
}

static void on_accept(evutil_socket_t fd, short what, void *arg)
{
    struct trip *t = arg;
    int c = accept(fd, NULL, NULL);
    if (c < 0 || t->conn_ev) {
        if (c >= 0)
            close(c); /* one connection per trip */
        return;
    }
    t->conn_ev = event_new(t->base, c, EV_READ | EV_PERSIST, on_conn_read, t);
    event_add(t->conn_ev, NULL);
}

static void on_answer(int status, const char *body, size_t len, const char *err, int sent,
                      void *arg)
{
    struct trip *t = arg;
    t->called++;
    t->status = status;
    snprintf(t->body, sizeof t->body, "%.*s", (int)len, body ? body : "");
    event_base_loopbreak(t->base);
}

/* A listener on a free port of addr (AF_INET or AF_INET6 loopback); @return its port or 0. */
static int listen_on(int family, int *fd_out)
{
    int fd = socket(family, SOCK_STREAM, 0);
    if (fd < 0)
        return 0;
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    socklen_t len;
    if (family == AF_INET) {
        struct sockaddr_in *a = (struct sockaddr_in *)&ss;
        a->sin_family = AF_INET;
        a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        len = sizeof *a;
    } else {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
        a->sin6_family = AF_INET6;
        a->sin6_addr = in6addr_loopback;
        len = sizeof *a;
    }
    if (bind(fd, (struct sockaddr *)&ss, len) < 0 || listen(fd, 4) < 0 ||
        getsockname(fd, (struct sockaddr *)&ss, &len) < 0) {
        close(fd);
        return 0;
    }
    *fd_out = fd;
    return ntohs(family == AF_INET ? ((struct sockaddr_in *)&ss)->sin_port
                                   : ((struct sockaddr_in6 *)&ss)->sin6_port);
}

static void round_trip(int family, const char *host_fmt)
{
    struct trip t;
    memset(&t, 0, sizeof t);
    int port = listen_on(family, &t.lfd);
    if (!port) {
        fprintf(stderr, "  (no %s loopback here: %s skipped)\n",
                family == AF_INET ? "IPv4" : "IPv6", host_fmt);
        return;
    }
    char url[128], err[300] = "";
    snprintf(url, sizeof url, host_fmt, port);
    unit_context("%s", url);
    t.base = event_base_new();
    struct event *acc = event_new(t.base, t.lfd, EV_READ | EV_PERSIST, on_accept, &t);
    event_add(acc, NULL);
    struct upstream *u = upstream_new(t.base, url, 2, err, sizeof err);
    CHECK(u != NULL);
    if (u) {
        char req[256];
        int n = snprintf(req, sizeof req, "GET %s/health HTTP/1.1\r\nHost: %s\r\n\r\n",
                         upstream_path(u), upstream_host_header(u));
        upstream_send(u, req, (size_t)n, 3000, on_answer, &t);
        struct timeval limit = {5, 0};
        event_base_loopexit(t.base, &limit); /* bounded even if nothing answers */
        event_base_dispatch(t.base);
        CHECK_EQ_I64(t.called, 1);
        CHECK_EQ_I64(t.status, 200);
        CHECK_STR_EQ(t.body, "ok");
        CHECK_MEM_EQ(t.got, t.got_len, req, (size_t)n);
        upstream_free(u);
    }
    if (t.conn_ev) {
        close(event_get_fd(t.conn_ev));
        event_free(t.conn_ev);
    }
    event_free(acc);
    event_base_free(t.base);
    close(t.lfd);
    unit_context("%s", "");
}

static void test_round_trip(void)
{
    signal(SIGPIPE, SIG_IGN);
    round_trip(AF_INET, "http://127.0.0.1:%d/prefix");
    round_trip(AF_INET6, "http://[::1]:%d");
}

/* A name, looked up (localhost may be 127.0.0.1 or ::1 first: listen where it points). */
static void test_round_trip_name(void)
{
    struct upstream_target t;
    char err[300];
    CHECK_EQ_I64(upstream_parse_url("http://localhost:1", &t, err, sizeof err), 0);
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof hints);
    hints.ai_socktype = SOCK_STREAM;
    if (getaddrinfo("localhost", "1", &hints, &res) != 0 || !res) {
        fprintf(stderr, "  (localhost does not resolve here: skipped)\n");
        return;
    }
    int family = res->ai_family;
    freeaddrinfo(res);
    round_trip(family, "http://localhost:%d/a/b/");
}

UNIT_MAIN("test_upstream", UNIT_CASE(test_parse), UNIT_CASE(test_round_trip),
          UNIT_CASE(test_round_trip_name))
