/*
 * test_http.c - unit tests of the HTTP server's wire behaviour and limits
 * (core/net/http.c), in process.
 *
 * Each test starts fresh servers on 127.0.0.1 (ephemeral ports) on an event_base that the
 * main thread runs, and one client thread that talks to them through blocking sockets
 * and makes the checks. The main thread only runs the loop and the handler; it polls a
 * flag every 10 ms to stop once the client thread is done. The handler echoes what it
 * parsed as JSON; paths starting with /async are answered 50 ms later from a timer.
 *
 * Never include this from core/.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <event2/event.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "base/buf.h"
#include "base/json.h"
#include "net/http.h"
#include "unit.h"

#define MAX_BODY 1024        /* the main server's body limit */
#define BIG_BODY 100000      /* what body_limit allows for /big */
#define REQ_TIMEOUT_MS 300   /* the slow server's request timeout */
#define IDLE_TIMEOUT_MS 1000 /* the slow server's idle timeout */

/* ---------------------------------------------------------------- the server side */

struct env {
    struct event_base *base;
    struct http_server *srv;  /* limits: max_body_bytes MAX_BODY, /big gets BIG_BODY */
    struct http_server *cap;  /* max_conns 3 */
    struct http_server *slow; /* request and idle timeouts short */
    int port, cap_port, slow_port;
    atomic_int done;
    int async_pending; /* main thread only */
    void (*client)(struct env *);
    struct http_server_stats st_srv, st_cap, st_slow; /* read after the run */
    struct http_answer_stats an_srv, an_cap, an_slow;
};

struct pending {
    struct http_request *req;
    struct event *ev;
    struct env *env;
};

static size_t body_limit(const char *path, size_t len, void *arg)
{
    (void)arg;
    return len == 4 && memcmp(path, "/big", 4) == 0 ? BIG_BODY : 0;
}

/* Answers with what the server parsed. */
static void echo(struct http_request *req)
{
    if (strcmp(req->path, "/error") == 0) {
        http_respond_error(req, 422, "bad_field", "field %s is bad", "x");
        return;
    }
    struct buf b = BUF_INIT;
    buf_puts(&b, "{\"method\":");
    buf_json_str(&b, req->method_name, strlen(req->method_name));
    buf_puts(&b, ",\"path\":");
    buf_json_str(&b, req->path, req->path_len);
    buf_puts(&b, ",\"query\":");
    buf_json_str(&b, req->query, req->query_len);
    buf_puts(&b, ",\"body_len\":");
    buf_u64(&b, req->body_len);
    if (req->body_len <= 64) {
        buf_puts(&b, ",\"body\":");
        buf_json_str(&b, req->body, req->body_len);
    }
    const char *x = http_request_header(req, "x-test");
    buf_puts(&b, ",\"x_test\":");
    if (x)
        buf_json_str(&b, x, strlen(x));
    else
        buf_puts(&b, "null");
    buf_printf(&b, ",\"keep_alive\":%d}", req->keep_alive);
    http_respond_json(req, 200, b.data, b.len);
    buf_free(&b);
}

static void on_async(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct pending *p = arg;
    echo(p->req);
    p->env->async_pending--;
    event_free(p->ev);
    free(p);
}

static void handler(struct http_request *req, void *arg)
{
    struct env *e = arg;
    if (strncmp(req->path, "/async", 6) == 0) {
        struct pending *p = calloc(1, sizeof *p);
        p->req = req;
        p->env = e;
        p->ev = evtimer_new(e->base, on_async, p);
        struct timeval tv = {0, 50 * 1000};
        evtimer_add(p->ev, &tv);
        e->async_pending++;
        return;
    }
    echo(req);
}

static void on_poll(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct env *e = arg;
    /* Stop once the client is done and no asynchronous answer is still owed. */
    if (atomic_load(&e->done) && e->async_pending == 0)
        event_base_loopexit(e->base, NULL);
}

static void *client_main(void *arg)
{
    struct env *e = arg;
    e->client(e);
    atomic_store(&e->done, 1);
    return NULL;
}

/* Starts the servers, runs client in a thread until it returns, stops everything. */
static void run_with_servers(void (*client)(struct env *), struct env *e)
{
    signal(SIGPIPE, SIG_IGN); /* as main.c does: writes to a closed socket return EPIPE */
    memset(e, 0, sizeof *e);
    e->client = client;
    e->base = event_base_new();
    char err[256];
    struct http_server_opts o;
    memset(&o, 0, sizeof o);
    o.bind_addr = "127.0.0.1";
    o.max_body_bytes = MAX_BODY;
    o.body_limit = body_limit;
    e->srv = http_server_new(e->base, &o, handler, e, err, sizeof err);
    memset(&o, 0, sizeof o);
    o.max_conns = 3;
    e->cap = http_server_new(e->base, &o, handler, e, err, sizeof err);
    memset(&o, 0, sizeof o);
    o.request_timeout_ms = REQ_TIMEOUT_MS;
    o.idle_timeout_ms = IDLE_TIMEOUT_MS;
    e->slow = http_server_new(e->base, &o, handler, e, err, sizeof err);
    if (!e->srv || !e->cap || !e->slow) {
        unit_fail(__FILE__, __LINE__, "http_server_new failed: %s", err);
        goto out;
    }
    e->port = http_server_port(e->srv);
    e->cap_port = http_server_port(e->cap);
    e->slow_port = http_server_port(e->slow);
    CHECK(e->port > 0 && e->cap_port > 0 && e->slow_port > 0);

    struct event *poll_ev = event_new(e->base, -1, EV_PERSIST, on_poll, e);
    struct timeval tv = {0, 10 * 1000};
    event_add(poll_ev, &tv);
    pthread_t th;
    pthread_create(&th, NULL, client_main, e);
    event_base_loop(e->base, 0);
    pthread_join(th, NULL);
    event_free(poll_ev);
    http_server_stats(e->srv, &e->st_srv);
    http_server_stats(e->cap, &e->st_cap);
    http_server_stats(e->slow, &e->st_slow);
    e->an_srv = *http_server_answers(e->srv);
    e->an_cap = *http_server_answers(e->cap);
    e->an_slow = *http_server_answers(e->slow);
out:
    http_server_free(e->srv);
    http_server_free(e->cap);
    http_server_free(e->slow);
    event_base_free(e->base);
}

/* Answers in the tallies, and those that took longer than min_s (a bucket bound). */
static uint64_t answers_total(const struct http_answer_stats *a)
{
    uint64_t n = 0;
    for (int b = 0; b <= HTTP_DURATION_NBOUNDS; b++)
        n += a->by_duration[b];
    return n;
}

static uint64_t answers_slower(const struct http_answer_stats *a, double min_s)
{
    uint64_t n = 0;
    for (int b = 0; b <= HTTP_DURATION_NBOUNDS; b++)
        if (b > 0 && http_duration_bounds_s[b - 1] >= min_s)
            n += a->by_duration[b];
    return n;
}

#define STATUS(a, code) ((a).by_status[(code)-100])

/* ---------------------------------------------------------------- the client side */

struct cli {
    int fd;
    struct buf in; /* received, not yet consumed */
};

struct resp {
    int status;
    char head[16384]; /* status line and headers, NUL-terminated */
    struct buf body;
    const struct json *json; /* the body parsed, when it is JSON */
    struct json_parser jp;
};

static double now_s(void)
{
    return unit_now_s();
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static int cli_open(struct cli *c, int port)
{
    memset(c, 0, sizeof *c);
    c->fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(c->fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        unit_fail(__FILE__, __LINE__, "connect to port %d: %s", port, strerror(errno));
        return -1;
    }
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct timeval tv = {5, 0};
    setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    return 0;
}

static void cli_close(struct cli *c)
{
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    buf_free(&c->in);
}

static void cli_send_n(struct cli *c, const char *s, size_t n)
{
    while (n) {
        ssize_t k = send(c->fd, s, n, MSG_NOSIGNAL);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0) {
            unit_fail(__FILE__, __LINE__, "send: %s", strerror(errno));
            return;
        }
        s += k;
        n -= (size_t)k;
    }
}

static void cli_send(struct cli *c, const char *s)
{
    cli_send_n(c, s, strlen(s));
}

/* Reads more bytes into c->in. @return bytes read, 0 on EOF, -1 on error or timeout. */
static ssize_t cli_fill(struct cli *c)
{
    char tmp[65536];
    ssize_t k;
    do
        k = recv(c->fd, tmp, sizeof tmp, 0);
    while (k < 0 && errno == EINTR);
    if (k > 0)
        buf_append(&c->in, tmp, (size_t)k);
    return k;
}

static const char *find_crlf2(const struct buf *b)
{
    for (size_t i = 0; i + 3 < b->len; i++)
        if (memcmp(b->data + i, "\r\n\r\n", 4) == 0)
            return b->data + i;
    return NULL;
}

/* The value of header name in r (case-insensitive), copied into out; NULL when absent. */
static const char *resp_header(const struct resp *r, const char *name, char *out, size_t cap)
{
    size_t nl = strlen(name);
    const char *p = strstr(r->head, "\r\n");
    while (p && p[2]) {
        p += 2;
        const char *eol = strstr(p, "\r\n");
        if (!eol)
            eol = p + strlen(p);
        if ((size_t)(eol - p) > nl && strncasecmp(p, name, nl) == 0 && p[nl] == ':') {
            const char *v = p + nl + 1;
            while (*v == ' ')
                v++;
            size_t vl = (size_t)(eol - v);
            if (vl >= cap)
                vl = cap - 1;
            memcpy(out, v, vl);
            out[vl] = '\0';
            return out;
        }
        p = eol;
    }
    return NULL;
}

static void resp_init(struct resp *r)
{
    memset(r, 0, sizeof *r);
    json_parser_init(&r->jp);
}

static void resp_free(struct resp *r)
{
    buf_free(&r->body);
    json_parser_free(&r->jp);
}

/*
 * Reads one response (head: a HEAD request, whose answer has no body).
 * @return 0, or -1 on EOF, error or timeout before a whole response.
 */
static int cli_read(struct cli *c, struct resp *r, int head)
{
    buf_reset(&r->body);
    r->status = 0;
    r->head[0] = '\0';
    r->json = NULL;
    const char *end;
    while (!(end = find_crlf2(&c->in)))
        if (cli_fill(c) <= 0)
            return -1;
    size_t hl = (size_t)(end - c->in.data) + 4;
    if (hl >= sizeof r->head) {
        unit_fail(__FILE__, __LINE__, "response head of %zu bytes", hl);
        return -1;
    }
    memcpy(r->head, c->in.data, hl);
    r->head[hl] = '\0';
    if (sscanf(r->head, "HTTP/1.%*d %d", &r->status) != 1) {
        unit_fail(__FILE__, __LINE__, "bad status line in '%.60s'", r->head);
        return -1;
    }
    char v[64];
    size_t len = 0;
    if (resp_header(r, "Content-Length", v, sizeof v))
        len = (size_t)strtoul(v, NULL, 10);
    else if (r->status != 100)
        unit_fail(__FILE__, __LINE__, "response without Content-Length: %s", r->head);
    if (head || r->status == 100)
        len = 0;
    while (c->in.len < hl + len)
        if (cli_fill(c) <= 0)
            return -1;
    buf_append(&r->body, c->in.data + hl, len);
    buf_consume(&c->in, hl + len);
    buf_cstr(&r->body);
    if (len && resp_header(r, "Content-Type", v, sizeof v) && strcmp(v, "application/json") == 0) {
        r->json = json_parse(&r->jp, r->body.data, r->body.len);
        if (!r->json)
            unit_fail(__FILE__, __LINE__, "JSON body does not parse (%s): %s", r->jp.err,
                      r->body.data);
    }
    return 0;
}

/* Whether the server closes the connection within ms, with nothing more to read. */
static int cli_wait_eof(struct cli *c, int ms)
{
    if (c->in.len)
        return 0;
    struct pollfd pfd = {c->fd, POLLIN, 0};
    double until = now_s() + ms / 1000.0;
    for (;;) {
        int left = (int)((until - now_s()) * 1000);
        if (left < 0)
            left = 0;
        int k = poll(&pfd, 1, left);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            return 0; /* still open */
        char tmp[256];
        ssize_t n = recv(c->fd, tmp, sizeof tmp, MSG_DONTWAIT);
        if (n == 0 || (n < 0 && errno == ECONNRESET))
            return 1;
        if (n > 0) {
            buf_append(&c->in, tmp, (size_t)n);
            return 0; /* data, not a close */
        }
        if (errno != EAGAIN && errno != EINTR)
            return 0;
    }
}

static const char *jstr(const struct resp *r, const char *key)
{
    const struct json *v = json_get(r->json, key);
    return v && v->type == JSON_STR ? v->u.s : "<missing>";
}

static int64_t jint(const struct resp *r, const char *key)
{
    const struct json *v = json_get(r->json, key);
    return v && v->type == JSON_INT ? v->u.i : INT64_MIN;
}

/* One request on c, its answer into r; checks the status. */
#define EXCHANGE(c, r, text, want_status)                                                          \
    do {                                                                                           \
        cli_send((c), (text));                                                                     \
        int rc_ = cli_read((c), (r), strncmp((text), "HEAD ", 5) == 0);                            \
        CHECK_EQ_I64(rc_, 0);                                                                      \
        CHECK_EQ_I64((r)->status, (want_status));                                                  \
    } while (0)

/* Reads an error answer: status, {"error": code}, Connection: close, then the close. */
static void expect_error_close(struct cli *c, struct resp *r, int status, const char *code)
{
    int rc = cli_read(c, r, 0);
    CHECK_EQ_I64(rc, 0);
    if (rc != 0)
        return;
    CHECK_EQ_I64(r->status, status);
    CHECK_STR_EQ(jstr(r, "error"), code);
    const struct json *d = json_get(r->json, "detail");
    CHECK(d && d->type == JSON_STR && d->len > 0);
    char v[64];
    const char *conn = resp_header(r, "Connection", v, sizeof v);
    CHECK(conn && strcasecmp(conn, "close") == 0);
    CHECK(cli_wait_eof(c, 2000));
}

/* ---------------------------------------------------------------- cases */

static void client_keep_alive(struct env *e)
{
    struct cli c;
    struct resp r;
    resp_init(&r);
    if (cli_open(&c, e->port) < 0)
        return;
    char req[256], v[64];
    for (int i = 0; i < 5; i++) {
        snprintf(req, sizeof req, "GET /ka?i=%d HTTP/1.1\r\nHost: t\r\nX-Test: v%d\r\n\r\n", i, i);
        EXCHANGE(&c, &r, req, 200);
        CHECK_STR_EQ(jstr(&r, "method"), "GET");
        CHECK_STR_EQ(jstr(&r, "path"), "/ka");
        snprintf(v, sizeof v, "i=%d", i);
        CHECK_STR_EQ(jstr(&r, "query"), v);
        snprintf(v, sizeof v, "v%d", i);
        CHECK_STR_EQ(jstr(&r, "x_test"), v);
        CHECK_EQ_I64(jint(&r, "keep_alive"), 1);
        CHECK(resp_header(&r, "Connection", v, sizeof v) == NULL || strcasecmp(v, "close") != 0);
    }
    EXCHANGE(&c, &r, "POST /p HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello", 200);
    CHECK_STR_EQ(jstr(&r, "method"), "POST");
    CHECK_EQ_I64(jint(&r, "body_len"), 5);
    CHECK_STR_EQ(jstr(&r, "body"), "hello");
    /* A body with NUL bytes keeps its length. */
    cli_send_n(&c, "PUT /n HTTP/1.1\r\nContent-Length: 3\r\n\r\na\0b", 41);
    CHECK_EQ_I64(cli_read(&c, &r, 0), 0);
    CHECK_EQ_I64(jint(&r, "body_len"), 3);
    CHECK_STR_EQ(jstr(&r, "method"), "PUT");
    /* No query: "" ; header names are case-insensitive. */
    EXCHANGE(&c, &r, "DELETE /d HTTP/1.1\r\nx-TEST: lower\r\n\r\n", 200);
    CHECK_STR_EQ(jstr(&r, "query"), "");
    CHECK_STR_EQ(jstr(&r, "x_test"), "lower");
    CHECK_STR_EQ(jstr(&r, "method"), "DELETE");
    /* The absolute form is split like the origin form. */
    EXCHANGE(&c, &r, "GET http://example.com:80/abs/x?y=1&z=%20 HTTP/1.1\r\n\r\n", 200);
    CHECK_STR_EQ(jstr(&r, "path"), "/abs/x");
    CHECK_STR_EQ(jstr(&r, "query"), "y=1&z=%20");
    /* HEAD: headers only; the next answer on the connection must start clean. */
    EXCHANGE(&c, &r, "HEAD /h HTTP/1.1\r\nHost: t\r\n\r\n", 200);
    CHECK(resp_header(&r, "Content-Length", v, sizeof v) && atoi(v) > 0);
    EXCHANGE(&c, &r, "GET /after-head HTTP/1.1\r\n\r\n", 200);
    CHECK_STR_EQ(jstr(&r, "path"), "/after-head");
    /* http_respond_error's shape. */
    EXCHANGE(&c, &r, "GET /error HTTP/1.1\r\n\r\n", 422);
    CHECK_STR_EQ(r.body.data, "{\"detail\":\"field x is bad\",\"error\":\"bad_field\"}");
    CHECK(resp_header(&r, "Content-Type", v, sizeof v) && strcmp(v, "application/json") == 0);
    CHECK(strncmp(r.head, "HTTP/1.1 422 Unprocessable Content\r\n", 36) == 0);
    /* Still open. */
    CHECK(!cli_wait_eof(&c, 200));
    EXCHANGE(&c, &r, "GET /last HTTP/1.1\r\n\r\n", 200);
    cli_close(&c);
    resp_free(&r);
}

static void test_keep_alive(void)
{
    struct env e;
    run_with_servers(client_keep_alive, &e);
    CHECK_EQ_U64(e.st_srv.requests, 13);
    CHECK_EQ_U64(e.st_srv.bad_requests, 0);
    /* Every answer is tallied once, by its status and in one duration bucket. */
    CHECK_EQ_U64(STATUS(e.an_srv, 200), 12);
    CHECK_EQ_U64(STATUS(e.an_srv, 422), 1);
    CHECK_EQ_U64(answers_total(&e.an_srv), 13);
    CHECK(e.an_srv.duration_sum_s >= 0 && e.an_srv.duration_sum_s < 13 * 1.0);
    for (int b = 1; b < HTTP_DURATION_NBOUNDS; b++)
        CHECK(http_duration_bounds_s[b] > http_duration_bounds_s[b - 1]);
}

static void read_paths(struct cli *c, struct resp *r, const char *const *paths, int n)
{
    for (int i = 0; i < n; i++) {
        unit_context("pipelined answer %d", i);
        if (cli_read(c, r, 0) != 0) {
            unit_fail(__FILE__, __LINE__, "no answer %d (%s expected)", i, paths[i]);
            break;
        }
        CHECK_EQ_I64(r->status, 200);
        CHECK_STR_EQ(jstr(r, "path"), paths[i]);
    }
    unit_context("%s", "");
}

static void client_pipelining(struct env *e)
{
    struct cli c;
    struct resp r;
    resp_init(&r);
    if (cli_open(&c, e->port) < 0)
        return;
    /* One write, with an asynchronous answer in the middle and one at the end. */
    cli_send(&c, "GET /p1 HTTP/1.1\r\nHost: t\r\n\r\n"
                 "GET /async HTTP/1.1\r\nHost: t\r\n\r\n"
                 "GET /p3 HTTP/1.1\r\nHost: t\r\n\r\n"
                 "POST /p4 HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc"
                 "GET /async2 HTTP/1.1\r\nHost: t\r\n\r\n"
                 "GET /async3 HTTP/1.1\r\nHost: t\r\n\r\n"
                 "GET /p7 HTTP/1.1\r\nHost: t\r\n\r\n");
    static const char *const paths[] = {"/p1", "/async", "/p3", "/p4", "/async2", "/async3", "/p7"};
    double t0 = now_s();
    read_paths(&c, &r, paths, 7);
    CHECK(now_s() - t0 >= 0.14); /* three 50 ms answers, one after the other */
    /* The first request asynchronous. */
    cli_send(&c, "GET /async HTTP/1.1\r\n\r\nGET /b2 HTTP/1.1\r\n\r\n");
    static const char *const paths2[] = {"/async", "/b2"};
    read_paths(&c, &r, paths2, 2);
    /* Requests behind an asynchronous one sent while it is pending. */
    cli_send(&c, "GET /async HTTP/1.1\r\n\r\n");
    sleep_ms(10);
    cli_send(&c, "GET /c2 HTTP/1.1\r\n\r\nGET /c3");
    sleep_ms(10);
    cli_send(&c, " HTTP/1.1\r\n\r\n");
    static const char *const paths3[] = {"/async", "/c2", "/c3"};
    read_paths(&c, &r, paths3, 3);
    /* Requests split across writes at awkward places. */
    static const char *parts[] = {"GE",  "T /s1 HTTP/1.1\r", "\nContent-Length: 2\r\n\r",
                                  "\nx", "yGET /s2 HT",      "TP/1.1\r\n\r\n"};
    for (size_t i = 0; i < sizeof parts / sizeof *parts; i++) {
        cli_send(&c, parts[i]);
        sleep_ms(5);
    }
    static const char *const paths4[] = {"/s1", "/s2"};
    read_paths(&c, &r, paths4, 2);
    /* Many at once. */
    struct buf many = BUF_INIT;
    for (int i = 0; i < 200; i++)
        buf_printf(&many, "GET /m%d HTTP/1.1\r\n\r\n", i);
    cli_send_n(&c, many.data, many.len);
    char path[16];
    for (int i = 0; i < 200; i++) {
        if (cli_read(&c, &r, 0) != 0) {
            unit_fail(__FILE__, __LINE__, "no answer to /m%d", i);
            break;
        }
        snprintf(path, sizeof path, "/m%d", i);
        if (strcmp(jstr(&r, "path"), path) != 0) {
            CHECK_STR_EQ(jstr(&r, "path"), path);
            break;
        }
    }
    buf_free(&many);
    cli_close(&c);
    resp_free(&r);
}

static void test_pipelining(void)
{
    struct env e;
    run_with_servers(client_pipelining, &e);
    CHECK_EQ_U64(e.st_srv.requests, 7 + 2 + 3 + 2 + 200);
    CHECK_EQ_U64(STATUS(e.an_srv, 200), 7 + 2 + 3 + 2 + 200);
    CHECK_EQ_U64(answers_total(&e.an_srv), 7 + 2 + 3 + 2 + 200);
    /* The five answered 50 ms later took at least that; the others are held behind them
     * but start their clock when they are parsed. */
    CHECK(answers_slower(&e.an_srv, 0.025) >= 5);
    CHECK(e.an_srv.duration_sum_s >= 5 * 0.05);
}

static void client_headers_too_large(struct env *e)
{
    struct cli c;
    struct resp r;
    resp_init(&r);
    struct buf req = BUF_INIT;
    /* One header of 9000 bytes. */
    if (cli_open(&c, e->port) < 0)
        return;
    buf_puts(&req, "GET / HTTP/1.1\r\nHost: t\r\nX-Big: ");
    for (int i = 0; i < 9000; i++)
        buf_putc(&req, 'a');
    buf_puts(&req, "\r\n\r\n");
    cli_send_n(&c, req.data, req.len);
    expect_error_close(&c, &r, 431, "headers_too_large");
    CHECK(strncmp(r.head, "HTTP/1.1 431 ", 13) == 0);
    cli_close(&c);
    /* Many headers adding up to more than 8 KiB. */
    if (cli_open(&c, e->port) < 0)
        return;
    buf_reset(&req);
    buf_puts(&req, "GET / HTTP/1.1\r\n");
    for (int i = 0; i < 40; i++) {
        buf_printf(&req, "X-H%d: ", i);
        for (int k = 0; k < 250; k++)
            buf_putc(&req, 'b');
        buf_puts(&req, "\r\n");
    }
    buf_puts(&req, "\r\n");
    cli_send_n(&c, req.data, req.len);
    expect_error_close(&c, &r, 431, "headers_too_large");
    cli_close(&c);
    /* A request target of 9000 bytes. */
    if (cli_open(&c, e->port) < 0)
        return;
    buf_reset(&req);
    buf_puts(&req, "GET /");
    for (int i = 0; i < 9000; i++)
        buf_putc(&req, 'u');
    buf_puts(&req, " HTTP/1.1\r\n\r\n");
    cli_send_n(&c, req.data, req.len);
    expect_error_close(&c, &r, 431, "headers_too_large");
    cli_close(&c);
    /* Headers of 7000 bytes are fine, also in several reads. */
    if (cli_open(&c, e->port) < 0)
        return;
    buf_reset(&req);
    buf_puts(&req, "GET /ok HTTP/1.1\r\nX-Test: ");
    for (int i = 0; i < 7000; i++)
        buf_putc(&req, 'c');
    buf_puts(&req, "\r\n\r\n");
    cli_send_n(&c, req.data, 3000);
    sleep_ms(20);
    cli_send_n(&c, req.data + 3000, req.len - 3000);
    CHECK_EQ_I64(cli_read(&c, &r, 0), 0);
    CHECK_EQ_I64(r.status, 200);
    CHECK_EQ_U64(strlen(jstr(&r, "x_test")), 7000);
    cli_close(&c);
    buf_free(&req);
    resp_free(&r);
}

static void test_headers_too_large(void)
{
    struct env e;
    run_with_servers(client_headers_too_large, &e);
    CHECK_EQ_U64(e.st_srv.bad_requests, 3);
    CHECK_EQ_U64(e.st_srv.requests, 1);
    /* Answers the server gives on its own (no handler) are tallied too. */
    CHECK_EQ_U64(STATUS(e.an_srv, 431), 3);
    CHECK_EQ_U64(STATUS(e.an_srv, 200), 1);
    CHECK_EQ_U64(answers_total(&e.an_srv), 4);
}

static void client_body_limits(struct env *e)
{
    struct cli c;
    struct resp r;
    resp_init(&r);
    char req[256];
    char *body = malloc(BIG_BODY + 1);
    memset(body, 'x', BIG_BODY + 1);

    /* Exactly the limit. */
    if (cli_open(&c, e->port) < 0)
        goto out;
    snprintf(req, sizeof req, "POST /b HTTP/1.1\r\nContent-Length: %d\r\n\r\n", MAX_BODY);
    cli_send(&c, req);
    cli_send_n(&c, body, MAX_BODY);
    CHECK_EQ_I64(cli_read(&c, &r, 0), 0);
    CHECK_EQ_I64(r.status, 200);
    CHECK_EQ_I64(jint(&r, "body_len"), MAX_BODY);
    /* One byte over, announced: refused from the headers, connection closed. */
    snprintf(req, sizeof req, "POST /b HTTP/1.1\r\nContent-Length: %d\r\n\r\n", MAX_BODY + 1);
    cli_send(&c, req);
    expect_error_close(&c, &r, 413, "too_large");
    CHECK(strncmp(r.head, "HTTP/1.1 413 ", 13) == 0);
    cli_close(&c);

    /* Chunked, over the limit only once the chunks add up. */
    if (cli_open(&c, e->port) < 0)
        goto out;
    struct buf ch = BUF_INIT;
    buf_puts(&ch, "POST /b HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n");
    for (int i = 0; i < 3; i++) {
        buf_puts(&ch, "200\r\n"); /* 512 bytes each */
        buf_append(&ch, body, 512);
        buf_puts(&ch, "\r\n");
    }
    buf_puts(&ch, "0\r\n\r\n");
    cli_send_n(&c, ch.data, ch.len);
    expect_error_close(&c, &r, 413, "too_large");
    cli_close(&c);
    buf_free(&ch);

    /* body_limit raises the limit for /big only. */
    if (cli_open(&c, e->port) < 0)
        goto out;
    snprintf(req, sizeof req, "POST /big HTTP/1.1\r\nContent-Length: %d\r\n\r\n", 5000);
    cli_send(&c, req);
    cli_send_n(&c, body, 5000);
    CHECK_EQ_I64(cli_read(&c, &r, 0), 0);
    CHECK_EQ_I64(r.status, 200);
    CHECK_EQ_I64(jint(&r, "body_len"), 5000);
    snprintf(req, sizeof req, "POST /big HTTP/1.1\r\nContent-Length: %d\r\n\r\n", BIG_BODY);
    cli_send(&c, req);
    cli_send_n(&c, body, BIG_BODY);
    CHECK_EQ_I64(cli_read(&c, &r, 0), 0);
    CHECK_EQ_I64(r.status, 200);
    CHECK_EQ_I64(jint(&r, "body_len"), BIG_BODY);
    snprintf(req, sizeof req, "POST /big HTTP/1.1\r\nContent-Length: %d\r\n\r\n", BIG_BODY + 1);
    cli_send(&c, req);
    expect_error_close(&c, &r, 413, "too_large");
    cli_close(&c);
    if (cli_open(&c, e->port) < 0)
        goto out;
    cli_send(&c, "POST /bigger HTTP/1.1\r\nContent-Length: 5000\r\n\r\n");
    expect_error_close(&c, &r, 413, "too_large");
    cli_close(&c);
out:
    free(body);
    resp_free(&r);
}

static void test_body_limits(void)
{
    struct env e;
    run_with_servers(client_body_limits, &e);
    CHECK_EQ_U64(e.st_srv.requests, 3);
    CHECK_EQ_U64(e.st_srv.bad_requests, 4);
}

static void client_malformed(struct env *e)
{
    struct cli good, bad;
    struct resp r;
    resp_init(&r);
    if (cli_open(&good, e->port) < 0)
        return;
    EXCHANGE(&good, &r, "GET /before HTTP/1.1\r\n\r\n", 200);
    static const char *const malformed[] = {
        "BLAH\x01 / HTTP/1.1\r\n\r\n",
        "GET / HTTP/1.1\r\nContent-Length: abc\r\n\r\n",
        "GET / HTTP/1.1\r\nNo-Colon-Here\r\n\r\n",
        "GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        "GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        "\r\n\r\n\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
    };
    for (size_t i = 0; i < sizeof malformed / sizeof *malformed; i++) {
        unit_context("malformed request %zu", i);
        if (cli_open(&bad, e->port) < 0)
            return;
        cli_send(&bad, malformed[i]);
        expect_error_close(&bad, &r, 400, "bad_request");
        cli_close(&bad);
        /* The other connection is unharmed. */
        EXCHANGE(&good, &r, "GET /still HTTP/1.1\r\n\r\n", 200);
        CHECK_STR_EQ(jstr(&r, "path"), "/still");
    }
    unit_context("%s", "");
    /* A good request, then garbage in the same write: the first is answered, then 400. */
    if (cli_open(&bad, e->port) < 0)
        return;
    cli_send(&bad, "GET /first HTTP/1.1\r\n\r\nJUNK JUNK JUNK\r\n\r\n");
    CHECK_EQ_I64(cli_read(&bad, &r, 0), 0);
    CHECK_EQ_I64(r.status, 200);
    CHECK_STR_EQ(jstr(&r, "path"), "/first");
    expect_error_close(&bad, &r, 400, "bad_request");
    cli_close(&bad);
    cli_close(&good);
    resp_free(&r);
}

static void test_malformed(void)
{
    struct env e;
    run_with_servers(client_malformed, &e);
    CHECK_EQ_U64(e.st_srv.bad_requests, 7);
}

static void client_chunked(struct env *e)
{
    struct cli c;
    struct resp r;
    resp_init(&r);
    if (cli_open(&c, e->port) < 0)
        return;
    EXCHANGE(&c, &r,
             "POST /c HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
             "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
             200);
    CHECK_EQ_I64(jint(&r, "body_len"), 11);
    CHECK_STR_EQ(jstr(&r, "body"), "hello world");
    /* Extensions, upper-case hex, a trailer; sent in pieces. */
    cli_send(&c, "POST /c2 HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nA;ext=1\r\n0123");
    sleep_ms(10);
    cli_send(&c, "456789\r\n");
    sleep_ms(10);
    cli_send(&c, "0\r\nX-Trailer: t\r\n\r\n");
    CHECK_EQ_I64(cli_read(&c, &r, 0), 0);
    CHECK_EQ_I64(r.status, 200);
    CHECK_EQ_I64(jint(&r, "body_len"), 10);
    CHECK_STR_EQ(jstr(&r, "body"), "0123456789");
    /* The connection goes on. */
    EXCHANGE(&c, &r, "GET /after HTTP/1.1\r\n\r\n", 200);
    CHECK_EQ_I64(jint(&r, "body_len"), 0);
    cli_close(&c);
    resp_free(&r);
}

static void test_chunked(void)
{
    struct env e;
    run_with_servers(client_chunked, &e);
    CHECK_EQ_U64(e.st_srv.requests, 3);
}

static void client_http10(struct env *e)
{
    struct cli c;
    struct resp r;
    resp_init(&r);
    char v[64];
    if (cli_open(&c, e->port) < 0)
        return;
    EXCHANGE(&c, &r, "GET /old HTTP/1.0\r\n\r\n", 200);
    CHECK_EQ_I64(jint(&r, "keep_alive"), 0);
    CHECK(resp_header(&r, "Connection", v, sizeof v) && strcasecmp(v, "close") == 0);
    CHECK(cli_wait_eof(&c, 2000));
    cli_close(&c);
    /* HTTP/1.0 asking for keep-alive gets it, and says so. */
    if (cli_open(&c, e->port) < 0)
        return;
    EXCHANGE(&c, &r, "GET /old-ka HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", 200);
    CHECK_EQ_I64(jint(&r, "keep_alive"), 1);
    CHECK(resp_header(&r, "Connection", v, sizeof v) && strcasecmp(v, "keep-alive") == 0);
    EXCHANGE(&c, &r, "GET /old-ka2 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", 200);
    CHECK_STR_EQ(jstr(&r, "path"), "/old-ka2");
    CHECK(!cli_wait_eof(&c, 100));
    cli_close(&c);
    /* HTTP/1.1 with Connection: close. */
    if (cli_open(&c, e->port) < 0)
        return;
    EXCHANGE(&c, &r, "GET /bye HTTP/1.1\r\nConnection: close\r\n\r\n", 200);
    CHECK_EQ_I64(jint(&r, "keep_alive"), 0);
    CHECK(resp_header(&r, "Connection", v, sizeof v) && strcasecmp(v, "close") == 0);
    CHECK(cli_wait_eof(&c, 2000));
    cli_close(&c);
    /* Pipelined behind a closing request: nothing more is answered. */
    if (cli_open(&c, e->port) < 0)
        return;
    cli_send(&c, "GET /x1 HTTP/1.1\r\nConnection: close\r\n\r\nGET /x2 HTTP/1.1\r\n\r\n");
    CHECK_EQ_I64(cli_read(&c, &r, 0), 0);
    CHECK_STR_EQ(jstr(&r, "path"), "/x1");
    CHECK(cli_wait_eof(&c, 2000));
    cli_close(&c);
    resp_free(&r);
}

static void test_http10(void)
{
    struct env e;
    run_with_servers(client_http10, &e);
    CHECK_EQ_U64(e.st_srv.requests, 5);
}

static void client_max_conns(struct env *e)
{
    struct cli c[3], extra;
    struct resp r;
    resp_init(&r);
    for (int i = 0; i < 3; i++) {
        if (cli_open(&c[i], e->cap_port) < 0)
            return;
        /* An answer proves the server accepted it. */
        EXCHANGE(&c[i], &r, "GET /in HTTP/1.1\r\n\r\n", 200);
    }
    if (cli_open(&extra, e->cap_port) < 0)
        return;
    int rc = cli_read(&extra, &r, 0);
    CHECK_EQ_I64(rc, 0);
    if (rc == 0) {
        CHECK_EQ_I64(r.status, 503);
        CHECK(strncmp(r.head, "HTTP/1.1 503 Service Unavailable\r\n", 34) == 0);
        CHECK_STR_EQ(jstr(&r, "error"), "unavailable");
        char v[64];
        CHECK(resp_header(&r, "Connection", v, sizeof v) && strcasecmp(v, "close") == 0);
        CHECK(r.json != NULL); /* the whole body, as Content-Length says */
    }
    CHECK(cli_wait_eof(&extra, 2000));
    cli_close(&extra);
    /* The three still work. */
    for (int i = 0; i < 3; i++)
        EXCHANGE(&c[i], &r, "GET /again HTTP/1.1\r\n\r\n", 200);
    /* Once one leaves, a new connection gets in (after the server saw the close). */
    cli_close(&c[0]);
    int ok = 0;
    for (int attempt = 0; attempt < 100 && !ok; attempt++) {
        if (cli_open(&extra, e->cap_port) < 0)
            break;
        cli_send(&extra, "GET /new HTTP/1.1\r\n\r\n");
        if (cli_read(&extra, &r, 0) == 0 && r.status == 200)
            ok = 1;
        cli_close(&extra);
        if (!ok)
            sleep_ms(20);
    }
    CHECK(ok);
    cli_close(&c[1]);
    cli_close(&c[2]);
    resp_free(&r);
}

static void test_max_conns(void)
{
    struct env e;
    run_with_servers(client_max_conns, &e);
    CHECK(e.st_cap.rejected >= 1);
    CHECK(e.st_cap.accepted >= 4);
    CHECK_EQ_U64(STATUS(e.an_cap, 503), e.st_cap.rejected);
}

static void client_timeouts(struct env *e)
{
    struct cli half, idle, c;
    struct resp r;
    resp_init(&r);
    /* A request that never ends: 408 at the first sweep after the timeout, then close. */
    if (cli_open(&half, e->slow_port) < 0)
        return;
    double t0 = now_s();
    cli_send(&half, "GET /half HTTP/1.1\r\nHost: t\r\n");
    int rc = cli_read(&half, &r, 0);
    double dt = now_s() - t0;
    CHECK_EQ_I64(rc, 0);
    if (rc == 0) {
        CHECK_EQ_I64(r.status, 408);
        CHECK_STR_EQ(jstr(&r, "error"), "timeout");
    }
    CHECK(dt >= REQ_TIMEOUT_MS / 1000.0);
    CHECK(dt <= 2.5); /* the sweep runs every second */
    CHECK(cli_wait_eof(&half, 2000));
    cli_close(&half);

    /* Slow but complete within the timeout: answered. */
    if (cli_open(&c, e->slow_port) < 0)
        return;
    cli_send(&c, "GET /slow HTTP/1.1\r\n");
    sleep_ms(60);
    cli_send(&c, "Host: t\r\n");
    sleep_ms(60);
    cli_send(&c, "\r\n");
    CHECK_EQ_I64(cli_read(&c, &r, 0), 0);
    CHECK_EQ_I64(r.status, 200);
    /* Idle between requests longer than the request timeout: not a slow request. */
    sleep_ms(REQ_TIMEOUT_MS + 200);
    EXCHANGE(&c, &r, "GET /later HTTP/1.1\r\n\r\n", 200);
    cli_close(&c);

    /* Idle past the idle timeout: closed without an answer. */
    if (cli_open(&idle, e->slow_port) < 0)
        return;
    EXCHANGE(&idle, &r, "GET /then-idle HTTP/1.1\r\n\r\n", 200);
    t0 = now_s();
    CHECK(cli_wait_eof(&idle, IDLE_TIMEOUT_MS + 2500));
    dt = now_s() - t0;
    CHECK(dt >= IDLE_TIMEOUT_MS / 1000.0 - 0.05);
    cli_close(&idle);
    resp_free(&r);
}

static void test_timeouts(void)
{
    struct env e;
    run_with_servers(client_timeouts, &e);
    CHECK_EQ_U64(e.st_slow.timeouts, 1);
    CHECK_EQ_U64(e.st_slow.requests, 3);
    CHECK_EQ_U64(STATUS(e.an_slow, 408), 1);
    CHECK_EQ_U64(STATUS(e.an_slow, 200), 3);
    /* The 408 waited out the request timeout; /slow took its 120 ms of pauses. */
    CHECK(answers_slower(&e.an_slow, 0.25) >= 1);
    CHECK(answers_slower(&e.an_slow, 0.1) >= 2);
}

static void client_expect(struct env *e)
{
    struct cli c;
    struct resp r;
    resp_init(&r);
    if (cli_open(&c, e->port) < 0)
        return;
    cli_send(&c,
             "POST /e HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n");
    /* The interim answer comes before we send the body. */
    CHECK_EQ_I64(cli_read(&c, &r, 0), 0);
    CHECK_EQ_I64(r.status, 100);
    CHECK(strncmp(r.head, "HTTP/1.1 100 Continue\r\n", 23) == 0);
    cli_send(&c, "hello");
    CHECK_EQ_I64(cli_read(&c, &r, 0), 0);
    CHECK_EQ_I64(r.status, 200);
    CHECK_EQ_I64(jint(&r, "body_len"), 5);
    CHECK_STR_EQ(jstr(&r, "body"), "hello");
    /* Without Expect, no interim answer. */
    EXCHANGE(&c, &r, "POST /e2 HTTP/1.1\r\nContent-Length: 2\r\n\r\nok", 200);
    CHECK_STR_EQ(jstr(&r, "path"), "/e2");
    /* A chunked body is a body too: the client waits for the interim answer. */
    cli_send(&c, "POST /e4 HTTP/1.1\r\nTransfer-Encoding: chunked\r\n"
                 "Expect: 100-continue\r\n\r\n");
    {
        struct pollfd pfd = {c.fd, POLLIN, 0};
        int k = poll(&pfd, 1, 1000);
        CHECK_EQ_I64(k, 1); /* the 100 (or any answer) within a second */
        if (k == 1) {
            CHECK_EQ_I64(cli_read(&c, &r, 0), 0);
            CHECK_EQ_I64(r.status, 100);
        }
        cli_send(&c, "3\r\nabc\r\n0\r\n\r\n");
        CHECK_EQ_I64(cli_read(&c, &r, 0), 0);
        CHECK_EQ_I64(r.status, 200);
        CHECK_STR_EQ(jstr(&r, "body"), "abc");
    }
    /* Over the limit: the final answer, no 100 Continue. */
    cli_send(&c, "POST /e3 HTTP/1.1\r\nContent-Length: 5000\r\nExpect: 100-continue\r\n\r\n");
    expect_error_close(&c, &r, 413, "too_large");
    cli_close(&c);
    resp_free(&r);
}

static void test_expect_continue(void)
{
    struct env e;
    run_with_servers(client_expect, &e);
    CHECK_EQ_U64(e.st_srv.requests, 3);
}

static void client_gone(struct env *e)
{
    struct cli c;
    struct resp r;
    resp_init(&r);
    /* Clients that leave while their answer is pending, with and without bytes held
     * behind it: the late answer must not touch freed memory. */
    for (int i = 0; i < 3; i++) {
        if (cli_open(&c, e->port) < 0)
            return;
        cli_send(&c, i == 0   ? "GET /async HTTP/1.1\r\n\r\n"
                     : i == 1 ? "GET /async HTTP/1.1\r\n\r\nGET /behind HTTP/1.1\r\n\r\n"
                              : "GET /async HTTP/1.1\r\n\r\nGET /behi");
        sleep_ms(10);
        cli_close(&c);
    }
    sleep_ms(150);
    if (cli_open(&c, e->port) < 0)
        return;
    EXCHANGE(&c, &r, "GET /alive HTTP/1.1\r\n\r\n", 200);
    cli_close(&c);
    sleep_ms(100); /* let the server see the close before the counts are read */
    resp_free(&r);
}

/* A client that half-closes after its request (shutdown(SHUT_WR), as "nc -N" does) still
 * gets its answer, also when the handler answers later. */
static void client_half_close(struct env *e)
{
    static const char *const reqs[] = {
        "GET /sync HTTP/1.1\r\nConnection: close\r\n\r\n",
        "GET /async HTTP/1.1\r\nConnection: close\r\n\r\n",
        "GET /sync10 HTTP/1.0\r\n\r\n",
        "GET /async10 HTTP/1.0\r\n\r\n",
    };
    struct cli c;
    struct resp r;
    resp_init(&r);
    for (size_t i = 0; i < sizeof reqs / sizeof *reqs; i++) {
        unit_context("request %zu", i);
        if (cli_open(&c, e->port) < 0)
            return;
        cli_send(&c, reqs[i]);
        shutdown(c.fd, SHUT_WR);
        int rc = cli_read(&c, &r, 0);
        CHECK_EQ_I64(rc, 0);
        if (rc == 0)
            CHECK_EQ_I64(r.status, 200);
        cli_close(&c);
    }
    unit_context("%s", "");
    sleep_ms(100);
    resp_free(&r);
}

static void test_half_close(void)
{
    struct env e;
    run_with_servers(client_half_close, &e);
}

static void test_client_gone(void)
{
    struct env e;
    run_with_servers(client_gone, &e);
    CHECK_EQ_I64(e.st_srv.open, 0);
}

UNIT_MAIN("test_http", UNIT_CASE(test_keep_alive), UNIT_CASE(test_pipelining),
          UNIT_CASE(test_headers_too_large), UNIT_CASE(test_body_limits), UNIT_CASE(test_malformed),
          UNIT_CASE(test_chunked), UNIT_CASE(test_http10), UNIT_CASE(test_max_conns),
          UNIT_CASE(test_timeouts), UNIT_CASE(test_expect_continue), UNIT_CASE(test_half_close),
          UNIT_CASE(test_client_gone))
