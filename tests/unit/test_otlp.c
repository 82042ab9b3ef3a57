/*
 * test_otlp.c - core/net/otlp.c, the exporter's transport (the JSON encoding itself is
 * test_trace's): against a collector on loopback (the project's HTTP server on an ephemeral
 * port, on the exporter's loop; written by hand, as the project's server would trace its
 * own requests), spans go as POST <endpoint>/v1/traces with a JSON body
 * carrying the service name; a full batch goes at once, a partial one at the timer; a
 * collector that fails or is gone makes the spans counted as dropped; stop with a POST in
 * flight turns tracing off; an endpoint that is not http(s):// is refused. Also
 * core/roles/tracing.c, which starts it from a role's configuration (service name and
 * resource attributes).
 *
 * Every wait is bounded. Never include this from core/.
 */
#define _GNU_SOURCE /* strcasestr */
#include <arpa/inet.h>
#include <curl/curl.h>
#include <event2/event.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "base/buf.h"
#include "base/clock.h"
#include "net/otlp.h"
#include "obs/metrics.h"
#include "obs/trace.h"
#include "roles/config.h"
#include "roles/tracing.h"
#include "unit.h"

/* A collector on loopback, by hand: the project's HTTP server would trace its own requests
 * (a span per POST) and feed the exporter. Keep-alive; one request at a time per connection. */
struct conn {
    struct collector *c;
    struct event *ev;
    struct buf in;
    struct conn *next;
};

struct collector {
    struct event_base *base;
    int lfd, port;
    struct event *accept_ev;
    struct conn *conns;
    int status; /* answer with this; 0: hold the requests */
    int posts;
    char path[64], ctype[64], method[8];
    struct buf body; /* the last one */
};

/* A whole request at the start of in: records it, answers it, drops it from in. */
static int take_request(struct conn *k, int fd)
{
    struct collector *c = k->c;
    const char *s = buf_cstr(&k->in);
    const char *end = strstr(s, "\r\n\r\n");
    if (!end)
        return 0;
    size_t hlen = (size_t)(end - s) + 4, clen = 0;
    const char *cl = strcasestr(s, "\r\ncontent-length:");
    if (cl && cl < end)
        clen = strtoul(cl + 17, NULL, 10);
    if (k->in.len < hlen + clen)
        return 0;
    c->posts++;
    sscanf(s, "%7s %63s", c->method, c->path);
    const char *ct = strcasestr(s, "\r\ncontent-type:");
    c->ctype[0] = '\0';
    if (ct && ct < end)
        sscanf(ct + 15, " %63[^\r]", c->ctype);
    buf_reset(&c->body);
    buf_append(&c->body, s + hlen, clen);
    buf_consume(&k->in, hlen + clen);
    if (c->status) {
        char ans[128];
        int n =
            snprintf(ans, sizeof ans, "HTTP/1.1 %d X\r\nContent-Length: 2\r\n\r\n{}", c->status);
        ssize_t w = write(fd, ans, (size_t)n);
        (void)w;
    }
    return 1;
}

static void on_conn(evutil_socket_t fd, short what, void *arg)
{
    (void)what;
    struct conn *k = arg;
    char tmp[65536];
    ssize_t n = read(fd, tmp, sizeof tmp);
    if (n <= 0) {
        event_del(k->ev); /* closed by the exporter: freed with the collector */
        return;
    }
    buf_append(&k->in, tmp, (size_t)n);
    while (take_request(k, fd))
        ;
}

static void on_accept(evutil_socket_t lfd, short what, void *arg)
{
    (void)what;
    struct collector *c = arg;
    int fd = accept(lfd, NULL, NULL);
    if (fd < 0)
        return;
    struct conn *k = calloc(1, sizeof *k);
    k->c = c;
    k->ev = event_new(c->base, fd, EV_READ | EV_PERSIST, on_conn, k);
    event_add(k->ev, NULL);
    k->next = c->conns;
    c->conns = k;
}

static int collector_start(struct event_base *base, struct collector *c)
{
    c->base = base;
    c->lfd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    if (c->lfd < 0 || bind(c->lfd, (struct sockaddr *)&a, len) < 0 || listen(c->lfd, 8) < 0 ||
        getsockname(c->lfd, (struct sockaddr *)&a, &len) < 0)
        return -1;
    c->port = ntohs(a.sin_port);
    c->accept_ev = event_new(base, c->lfd, EV_READ | EV_PERSIST, on_accept, c);
    event_add(c->accept_ev, NULL);
    return 0;
}

static void collector_stop(struct collector *c)
{
    while (c->conns) {
        struct conn *k = c->conns;
        c->conns = k->next;
        close(event_get_fd(k->ev));
        event_free(k->ev);
        buf_free(&k->in);
        free(k);
    }
    if (c->accept_ev)
        event_free(c->accept_ev);
    if (c->lfd >= 0)
        close(c->lfd);
    buf_free(&c->body);
}

static void run_until(struct event_base *base, const int *flag, int want, double ms)
{
    double end = clock_mono_ms() + ms;
    while (*flag < want && clock_mono_ms() < end) {
        struct timeval tv = {0, 10000};
        event_base_loopexit(base, &tv);
        event_base_loop(base, EVLOOP_ONCE);
    }
}

static void run_for(struct event_base *base, double ms)
{
    int never = 0;
    run_until(base, &never, 1, ms);
}

struct fx {
    struct event_base *base;
    struct collector col;
    struct metrics *reg;
    struct otlp *x;
};

static int fx_init(struct fx *f, int status)
{
    memset(f, 0, sizeof *f);
    signal(SIGPIPE, SIG_IGN);
    curl_global_init(CURL_GLOBAL_DEFAULT);
    f->base = event_base_new();
    f->reg = metrics_new();
    f->col.status = status;
    return collector_start(f->base, &f->col);
}

static struct otlp *start(struct fx *f, const char *endpoint_fmt, int batch, int delay_ms)
{
    char ep[128], err[256] = "";
    snprintf(ep, sizeof ep, endpoint_fmt, f->col.port);
    static const char *const resource[] = {"deployment.environment", "test", NULL};
    struct otlp_opts o = {.endpoint = ep,
                          .service_name = "unit-otlp",
                          .resource = resource,
                          .batch_spans = batch,
                          .queue_spans = batch * 4,
                          .delay_ms = delay_ms,
                          .timeout_ms = 300,
                          .metrics = f->reg};
    f->x = otlp_start(f->base, &o, err, sizeof err);
    if (!f->x)
        fprintf(stderr, "otlp_start: %s\n", err);
    return f->x;
}

static void fx_free(struct fx *f)
{
    otlp_stop(f->x);
    f->x = NULL;
    run_for(f->base, 20);
    collector_stop(&f->col);
    metrics_free(f->reg);
    event_base_free(f->base);
    curl_global_cleanup();
}

static void spans(int n, const char *name)
{
    for (int i = 0; i < n; i++) {
        struct trace_span *s = trace_span_start(name, TRACE_SERVER, NULL);
        trace_span_attr_int(s, "i", i);
        trace_span_end(s);
    }
}

static void test_exports(void)
{
    struct fx f;
    REQUIRE(fx_init(&f, 200) == 0);
    /* Trailing slashes of the endpoint are dropped; a long delay: only full batches go. */
    REQUIRE(start(&f, "http://127.0.0.1:%d//", 4, 60000) != NULL);
    CHECK(trace_enabled());
    spans(3, "partial");
    run_for(f.base, 100);
    CHECK_EQ_I64(f.col.posts, 0); /* not full, and the timer is a minute away */
    spans(1, "partial");          /* the batch is full: it goes on the next loop iteration */
    run_until(f.base, &f.col.posts, 1, 3000);
    CHECK_EQ_I64(f.col.posts, 1);
    CHECK_STR_EQ(f.col.method, "POST");
    CHECK_STR_EQ(f.col.path, "/v1/traces");
    CHECK_STR_EQ(f.col.ctype, "application/json");
    const char *b = buf_cstr(&f.col.body);
    CHECK(strstr(b, "\"resourceSpans\"") != NULL);
    CHECK(strstr(b, "unit-otlp") != NULL);
    CHECK(strstr(b, "deployment.environment") != NULL);
    CHECK(strstr(b, "\"partial\"") != NULL);
    run_for(f.base, 50);
    struct trace_stats st;
    trace_get_stats(&st);
    CHECK_EQ_U64(st.exported, 4);
    CHECK_EQ_U64(st.dropped_export_failed, 0);
    CHECK_EQ_I64(st.inflight, 0);
    otlp_stop(f.x);
    f.x = NULL;
    CHECK(!trace_enabled());

    /* A short delay: a partial batch goes at the timer. */
    REQUIRE(start(&f, "http://127.0.0.1:%d", 100, 50) != NULL);
    spans(2, "ticked");
    double t0 = clock_mono_ms();
    run_until(f.base, &f.col.posts, 2, 3000);
    CHECK_EQ_I64(f.col.posts, 2);
    CHECK(clock_mono_ms() - t0 < 2000);
    CHECK(strstr(buf_cstr(&f.col.body), "\"ticked\"") != NULL);
    fx_free(&f);
}

static void test_collector_fails(void)
{
    struct fx f;
    REQUIRE(fx_init(&f, 500) == 0);
    REQUIRE(start(&f, "http://127.0.0.1:%d", 2, 50) != NULL);
    spans(2, "failing");
    run_until(f.base, &f.col.posts, 1, 3000);
    run_for(f.base, 50);
    struct trace_stats st;
    trace_get_stats(&st);
    CHECK_EQ_I64(f.col.posts, 1);
    CHECK_EQ_U64(st.exported, 0);
    CHECK_EQ_U64(st.dropped_export_failed, 2);
    otlp_stop(f.x);
    f.x = NULL;

    /* Gone: nobody listens on the port (connection refused). */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    REQUIRE(fd >= 0 && bind(fd, (struct sockaddr *)&a, len) == 0 &&
            getsockname(fd, (struct sockaddr *)&a, &len) == 0);
    close(fd);
    char ep[64], err[256] = "";
    snprintf(ep, sizeof ep, "http://127.0.0.1:%d", ntohs(a.sin_port));
    struct otlp_opts o = {.endpoint = ep,
                          .service_name = "s",
                          .batch_spans = 2,
                          .delay_ms = 50,
                          .timeout_ms = 300,
                          .metrics = f.reg};
    /* The log says why, whole (stderr into a file for the while). */
    fflush(stderr);
    FILE *logf = tmpfile();
    int saved = dup(2);
    REQUIRE(logf != NULL && saved >= 0);
    dup2(fileno(logf), 2);
    f.x = otlp_start(f.base, &o, err, sizeof err);
    spans(2, "lost");
    double end = clock_mono_ms() + 3000;
    do {
        run_for(f.base, 20);
        trace_get_stats(&st);
    } while (f.x && st.dropped_export_failed < 2 && clock_mono_ms() < end);
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    char logtext[4096] = "";
    rewind(logf);
    size_t got = fread(logtext, 1, sizeof logtext - 1, logf);
    logtext[got] = '\0';
    fclose(logf);
    REQUIRE(f.x != NULL);
    CHECK(strstr(logtext, "trace export to http://127.0.0.1:") != NULL);
    CHECK(strstr(logtext, "Couldn't connect to server): its spans are dropped") != NULL);
    if (!strstr(logtext, "Couldn't connect to server)"))
        fprintf(stderr, "  the log said: %s", logtext);
    CHECK_EQ_U64(st.dropped_export_failed, 2);
    CHECK_EQ_U64(st.exported, 0);
    fx_free(&f);
}

static void test_stop_in_flight(void)
{
    struct fx f;
    REQUIRE(fx_init(&f, 0) == 0); /* the collector holds the POST */
    REQUIRE(start(&f, "http://127.0.0.1:%d", 1, 50) != NULL);
    spans(1, "held");
    run_until(f.base, &f.col.posts, 1, 3000);
    CHECK_EQ_I64(f.col.posts, 1);
    struct trace_stats st;
    trace_get_stats(&st);
    CHECK_EQ_I64(st.inflight, 1);
    otlp_stop(f.x); /* cancels the POST: no callback into a freed exporter (ASan) */
    f.x = NULL;
    CHECK(!trace_enabled());
    CHECK(trace_span_start("after", TRACE_SERVER, NULL) == NULL);
    run_for(f.base, 50);
    fx_free(&f);
}

static void test_refused(void)
{
    struct event_base *base = event_base_new();
    const char *bad[] = {NULL, "", "127.0.0.1:4318", "ftp://h/", "HTTP:/x"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        char err[256] = "";
        struct otlp_opts o = {.endpoint = bad[i], .service_name = "s"};
        unit_context("%s", bad[i] ? bad[i] : "(null)");
        CHECK(otlp_start(base, &o, err, sizeof err) == NULL);
        char expect[128];
        snprintf(expect, sizeof expect, "the OTLP endpoint '%s' is not an http:// URL",
                 bad[i] ? bad[i] : "");
        CHECK_STR_EQ(err, expect);
        CHECK(!trace_enabled());
    }
    unit_context("%s", "");
    /* A good URL but no service name: the tracer's refusal, nothing left running. */
    char err[256] = "";
    struct otlp_opts o = {.endpoint = "http://127.0.0.1:1", .service_name = ""};
    CHECK(otlp_start(base, &o, err, sizeof err) == NULL);
    CHECK(err[0] != '\0');
    CHECK(!trace_enabled());
    otlp_stop(NULL);
    event_base_free(base);
}

/* roles/tracing.c: the exporter from a role's configuration, with the lab's service names
 * and resource attributes. @return the body of the one batch exported (static). */
static const char *traced(struct fx *f, const char *role, const char *service_name)
{
    static char body[8192];
    body[0] = '\0';
    struct config c;
    memset(&c, 0, sizeof c);
    snprintf(c.role, sizeof c.role, "%s", role);
    snprintf(c.region, sizeof c.region, "eu-west");
    snprintf(c.node_id, sizeof c.node_id, "eu-west-2");
    snprintf(c.otlp_endpoint, sizeof c.otlp_endpoint, "http://127.0.0.1:%d", f->col.port);
    snprintf(c.service_name, sizeof c.service_name, "%s", service_name);
    c.trace_batch = 1;
    c.trace_queue = 4;
    c.trace_delay_ms = 50;
    c.trace_timeout_ms = 300;
    char err[256] = "";
    struct otlp *x = NULL;
    int posts = f->col.posts;
    CHECK_EQ_I64(tracing_start(f->base, &c, f->reg, &x, err, sizeof err), 0);
    if (!x)
        return body;
    spans(1, "roled");
    run_until(f->base, &f->col.posts, posts + 1, 3000);
    snprintf(body, sizeof body, "%s", buf_cstr(&f->col.body));
    otlp_stop(x);
    return body;
}

static void test_tracing_start(void)
{
    struct fx f;
    REQUIRE(fx_init(&f, 200) == 0);
    const char *b = traced(&f, "region", "");
    CHECK(strstr(b, "\"counter-eu-west\"") != NULL);
    CHECK(strstr(b, "\"service.instance.id\"") != NULL);
    CHECK(strstr(b, "\"eu-west-2\"") != NULL);
    CHECK(strstr(b, "\"counterd.role\"") != NULL);
    b = traced(&f, "strong", "");
    CHECK(strstr(b, "\"counter-consistent\"") != NULL);
    CHECK(strstr(b, "\"eu-west-2\"") == NULL); /* no node id of its own */
    b = traced(&f, "gateway", "");
    CHECK(strstr(b, "\"gateway\"") != NULL);
    CHECK(strstr(b, "service.instance.id") == NULL);
    b = traced(&f, "region", "my-svc");
    CHECK(strstr(b, "\"my-svc\"") != NULL);
    CHECK(strstr(b, "counter-eu-west") == NULL);

    /* No endpoint: tracing stays off, nothing started. */
    struct config c;
    memset(&c, 0, sizeof c);
    snprintf(c.role, sizeof c.role, "region");
    char err[256] = "";
    struct otlp *x = (struct otlp *)&c; /* must be set to NULL */
    CHECK_EQ_I64(tracing_start(f.base, &c, f.reg, &x, err, sizeof err), 0);
    CHECK(x == NULL);
    CHECK(!trace_enabled());
    snprintf(c.otlp_endpoint, sizeof c.otlp_endpoint, "collector:4318");
    CHECK_EQ_I64(tracing_start(f.base, &c, f.reg, &x, err, sizeof err), -1);
    CHECK(x == NULL);
    CHECK_STR_EQ(err, "the OTLP endpoint 'collector:4318' is not an http:// URL");
    fx_free(&f);
}

UNIT_MAIN("otlp", UNIT_CASE(test_exports), UNIT_CASE(test_collector_fails),
          UNIT_CASE(test_stop_in_flight), UNIT_CASE(test_refused), UNIT_CASE(test_tracing_start))
