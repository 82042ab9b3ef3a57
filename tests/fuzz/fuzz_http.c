/*
 * fuzz_http.c - libFuzzer target: the HTTP/1.1 server's reading of requests
 * (core/net/http.c with http-parser), through a socketpair.
 *
 * The input is the client's byte stream, sent in chunks (see drive.h). The handler is
 * trivial but touches every part of a request (method, path, query, headers, body) and
 * answers in three ways chosen by the request: synchronously with an echo, with an
 * error, or asynchronously from a 0 ms timer (the pending path: later pipelined requests
 * are held back until the answer is written). Small limits make 413 and 431 reachable.
 * For one input in 16 the server's before_flush hook fails, so answers are dropped and
 * connections closed unanswered (what a node does when its log cannot be written).
 *
 * Never linked into counterd.
 */
#include <event2/event.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/buf.h"
#include "base/mem.h"
#include "drive.h"
#include "net/http.h"

#define MAX_BODY 4096
#define BIG_BODY 32768 /* the body limit of paths under /big */

struct pending {
    struct http_request *req;
    struct event *ev;
};

static struct event_base *base;
static struct http_server *srv;
static int npending;
static int fail_flush; /* this input: the before_flush hook fails (answers are dropped) */
static struct buf out;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

static size_t body_limit(const char *path, size_t len, void *arg)
{
    (void)arg;
    return len >= 4 && memcmp(path, "/big", 4) == 0 ? BIG_BODY : 0;
}

static void answer(struct http_request *req)
{
    buf_reset(&out);
    buf_puts(&out, "{\"method\":");
    buf_json_str(&out, req->method_name, strlen(req->method_name));
    buf_puts(&out, ",\"path\":");
    buf_json_str(&out, req->path, req->path_len);
    buf_puts(&out, ",\"query\":");
    buf_json_str(&out, req->query, req->query_len);
    const char *host = http_request_header(req, "host");
    const char *te = http_request_header(req, "Transfer-Encoding");
    buf_puts(&out, ",\"host\":");
    if (host)
        buf_json_str(&out, host, strlen(host));
    else
        buf_puts(&out, "null");
    buf_printf(&out, ",\"chunked\":%s,\"keep_alive\":%d,\"body\":", te ? "true" : "false",
               req->keep_alive);
    buf_json_str(&out, req->body, req->body_len < 256 ? req->body_len : 256);
    buf_printf(&out, ",\"body_len\":%zu}", req->body_len);
    if (req->query_len & 1)
        http_respond_ex(req, 201, "application/json", "X-Fuzz: 1\r\nCache-Control: no-store\r\n",
                        out.data, out.len);
    else
        http_respond_json(req, 200, out.data, out.len);
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct pending *p = arg;
    answer(p->req);
    event_free(p->ev);
    free(p);
    npending--;
}

/* Header lookups read each value to its end, so a value the server did not terminate
 * shows up under ASan whichever way the request is answered. */
static void read_headers(const struct http_request *req)
{
    static const char *const names[] = {"host",   "content-length", "transfer-encoding",
                                        "expect", "authorization",  "connection",
                                        "x-fuzz"};
    size_t sum = 0;
    for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
        const char *v = http_request_header(req, names[i]);
        if (v)
            sum += strlen(v);
    }
    if (sum > 1u << 30)
        abort(); /* keeps the loop from being optimised away */
}

static void handle(struct http_request *req, void *arg)
{
    (void)arg;
    drive_note_request(req);
    read_headers(req);
    /* Which way to answer: a function of the request, so a reproducer replays it. */
    unsigned way = (unsigned)(req->path_len + req->body_len + (size_t)req->method) % 4;
    if (way == 0) {
        struct pending *p = xmalloc(sizeof *p);
        p->req = req;
        p->ev = evtimer_new(base, on_timer, p);
        struct timeval tv = {0, 0};
        evtimer_add(p->ev, &tv);
        npending++;
    } else if (way == 1) {
        http_respond_error(req, 404, "not_found", "no endpoint %s %.200s", req->method_name,
                           req->path);
    } else {
        answer(req);
    }
}

static int before_flush(void *arg)
{
    (void)arg;
    return fail_flush ? -1 : 0;
}

static int pending(void *arg)
{
    (void)arg;
    return npending;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    signal(SIGPIPE, SIG_IGN); /* the server writes to clients that have gone */
    base = event_base_new();
    struct http_server_opts so = {.port = 0,
                                  .max_conns = 4,
                                  .max_header_bytes = 1024,
                                  .max_body_bytes = MAX_BODY,
                                  .body_limit = body_limit,
                                  .before_flush = before_flush};
    char err[256];
    srv = http_server_new(base, &so, handle, NULL, err, sizeof err);
    if (!base || !srv) {
        fprintf(stderr, "fuzz_http: cannot start the server: %s\n", err);
        exit(1);
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint64_t seed = drive_seed(data, size);
    fail_flush = seed >> 60 == 0; /* one input in 16 */
    struct drive_hooks hooks = {pending, NULL, fail_flush};
    drive_conn(base, srv, data, size, seed, &hooks);
    return 0;
}
