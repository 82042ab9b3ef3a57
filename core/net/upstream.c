/*
 * upstream.c - pooled keep-alive HTTP/1.1 client (see upstream.h).
 *
 * Each connection is idle (in the pool), connecting, or busy with exactly one request.
 * Requests wait in a FIFO when max_conns are busy. Answers are parsed in place with
 * http-parser; the body is gathered in the connection's buffer.
 *
 * A target named by host name is looked up again while the pool lives (its container may
 * be recreated with a new address): after a connection could not be opened, and every
 * RESOLVE_EVERY_S anyway. Those lookups use glibc's getaddrinfo_a, polled from a timer,
 * so a slow name server never blocks the loop.
 */
#define _GNU_SOURCE /* getaddrinfo_a */
#include "upstream.h"

#include <curl/curl.h>
#include <errno.h>
#include <event2/event.h>
#include <event2/event_struct.h>
#include <fcntl.h>
#include <http_parser.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "../base/buf.h"
#include "../base/clock.h"
#include "../base/mem.h"

#define RESOLVE_EVERY_S 10.0 /* a host name is looked up again this often */
#define RESOLVE_RETRY_S 1.0  /* and at most this often after failures */
#define RESOLVE_POLL_MS 20   /* how often a lookup in flight is checked */
#define SPARE_REQS 64        /* finished requests kept for reuse (no malloc per request) */

struct uconn;

struct upstream_req {
    struct upstream *u;
    struct buf bytes;
    int timeout_ms;
    upstream_cb cb;
    void *arg;
    int retried;
    int was_sent;              /* some attempt wrote the whole request */
    int connect_errno;         /* why no connection could be opened */
    struct uconn *conn;        /* while sent */
    struct upstream_req *next; /* in the wait queue */
};

struct uconn {
    struct upstream *u;
    int fd;
    int connected, reused, got_bytes;
    struct event ev_read, ev_write, ev_timeout;
    http_parser parser;
    struct buf body;
    size_t out_off;
    int status, done, keep_alive;
    struct upstream_req *req;
    struct uconn *next; /* in the idle list */
};

struct upstream {
    struct event_base *base;
    struct sockaddr_storage addr;
    socklen_t addrlen;
    int max_conns, nconns;
    struct uconn *idle;
    struct upstream_req *wait_head, *wait_tail;
    struct event *kick; /* runs callbacks from the loop */
    struct upstream_req *done_head, *done_tail;
    char url[256];
    struct upstream_target target;
    /* Lookups of a target named by host name (numeric == 0). */
    char host[200], port[16];
    int numeric;
    struct gaicb gai;      /* the lookup in flight, when resolving */
    struct addrinfo hints; /* its hints (getaddrinfo_a keeps a pointer) */
    int resolving;
    double resolved_at; /* when the last lookup ended (0: never) */
    struct event *resolve_timer;
    struct upstream_req *spare; /* finished requests, their buffers kept (SPARE_REQS) */
    int nspare;
};

static http_parser_settings settings;
static void conn_close(struct uconn *c);
static void start(struct upstream *u, struct upstream_req *r);
static void resolve_soon(struct upstream *u);

/* ---------------------------------------------------------------- completion */

/* Frees r, or keeps it (and its buffer) for the next upstream_send. */
static void req_free(struct upstream_req *r)
{
    struct upstream *u = r->u;
    if (u->nspare >= SPARE_REQS || r->bytes.cap > 16384) {
        buf_free(&r->bytes);
        free(r);
        return;
    }
    r->next = u->spare;
    u->spare = r;
    u->nspare++;
}

static void finish(struct upstream_req *r, int status, const char *body, size_t len,
                   const char *err, int sent)
{
    upstream_cb cb = r->cb;
    void *arg = r->arg;
    req_free(r);
    if (cb)
        cb(status, body, len, err, sent, arg);
}

/* A connection that cannot take (or finish) its request. */
static void conn_fail(struct uconn *c, const char *why)
{
    struct upstream_req *r = c->req;
    struct upstream *u = c->u;
    int may_retry = r && c->reused && !c->got_bytes && !r->retried;
    if (r && c->out_off >= r->bytes.len)
        r->was_sent = 1; /* remembered across the retry below */
    int sent = r && r->was_sent;
    if (!c->connected)
        resolve_soon(u); /* the address may have moved */
    c->req = NULL;
    conn_close(c);
    if (!r)
        return;
    r->conn = NULL;
    if (may_retry) {
        /* The target closed an idle connection under us: once more, on a new one. */
        r->retried = 1;
        start(u, r);
        return;
    }
    char msg[512];
    snprintf(msg, sizeof msg, "%s: %s", u->url, why);
    finish(r, 0, NULL, 0, msg, sent);
}

/* ---------------------------------------------------------------- parser callbacks */

static int on_status_begin(http_parser *p)
{
    struct uconn *c = p->data;
    buf_reset(&c->body);
    c->done = 0;
    return 0;
}

static int on_body(http_parser *p, const char *at, size_t len)
{
    struct uconn *c = p->data;
    buf_append(&c->body, at, len);
    return 0;
}

static int on_message_complete(http_parser *p)
{
    struct uconn *c = p->data;
    c->status = p->status_code;
    c->keep_alive = http_should_keep_alive(p);
    c->done = 1;
    http_parser_pause(p, 1);
    return 0;
}

/* ---------------------------------------------------------------- I/O */

static void on_write(evutil_socket_t fd, short what, void *arg);

/* Gives r to connection c and starts sending it. */
static void assign(struct uconn *c, struct upstream_req *r)
{
    c->req = r;
    r->conn = c;
    c->out_off = 0;
    c->got_bytes = 0;
    c->done = 0;
    http_parser_init(&c->parser, HTTP_RESPONSE);
    c->parser.data = c;
    struct timeval tv = {r->timeout_ms / 1000, (r->timeout_ms % 1000) * 1000};
    event_add(&c->ev_timeout, &tv);
    if (c->connected) {
        on_write(c->fd, EV_WRITE, c); /* usually completes at once */
        if (c->req == r && c->out_off < r->bytes.len)
            event_add(&c->ev_write, NULL);
    } else {
        event_add(&c->ev_write, NULL);
    }
}

static void release(struct uconn *c)
{
    struct upstream *u = c->u;
    event_del(&c->ev_timeout);
    event_del(&c->ev_write);
    if (u->wait_head) {
        struct upstream_req *r = u->wait_head;
        u->wait_head = r->next;
        if (!u->wait_head)
            u->wait_tail = NULL;
        c->reused = 1;
        assign(c, r);
        return;
    }
    c->next = u->idle;
    u->idle = c;
}

static void on_read(evutil_socket_t fd, short what, void *arg)
{
    (void)what;
    struct uconn *c = arg;
    char chunk[16384];
    ssize_t n = read(fd, chunk, sizeof chunk);
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (n <= 0) {
        if (!c->req) { /* an idle connection the target closed */
            struct upstream *u = c->u;
            struct uconn **pp = &u->idle;
            while (*pp && *pp != c)
                pp = &(*pp)->next;
            if (*pp)
                *pp = c->next;
            conn_close(c);
            return;
        }
        conn_fail(c, n == 0 ? "connection closed before the answer" : strerror(errno));
        return;
    }
    if (!c->req) {
        conn_close(c); /* bytes nobody asked for */
        return;
    }
    c->got_bytes = 1;
    size_t used = http_parser_execute(&c->parser, &settings, chunk, (size_t)n);
    enum http_errno e = HTTP_PARSER_ERRNO(&c->parser);
    if (e != HPE_OK && e != HPE_PAUSED) {
        conn_fail(c, http_errno_description(e));
        return;
    }
    if (!c->done)
        return;
    http_parser_pause(&c->parser, 0);
    struct upstream_req *r = c->req;
    c->req = NULL;
    r->conn = NULL;
    int keep = c->keep_alive && used == (size_t)n;
    int status = c->status;
    /* The callback may send more: hand the connection back first. */
    struct buf body = c->body;
    memset(&c->body, 0, sizeof c->body);
    if (keep)
        release(c);
    else
        conn_close(c);
    finish(r, status, body.data ? body.data : "", body.len, NULL, 1);
    buf_free(&body);
}

static void on_write(evutil_socket_t fd, short what, void *arg)
{
    (void)what;
    struct uconn *c = arg;
    if (!c->connected) {
        int err = 0;
        socklen_t len = sizeof err;
        getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err) {
            conn_fail(c, strerror(err));
            return;
        }
        c->connected = 1;
    }
    struct upstream_req *r = c->req;
    if (!r) {
        event_del(&c->ev_write);
        return;
    }
    while (c->out_off < r->bytes.len) {
        ssize_t n = write(fd, r->bytes.data + c->out_off, r->bytes.len - c->out_off);
        if (n > 0) {
            c->out_off += (size_t)n;
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
            return;
        conn_fail(c, strerror(errno));
        return;
    }
    event_del(&c->ev_write);
}

static void on_timeout(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct uconn *c = arg;
    if (c->req)
        c->req->retried = 1; /* a slow answer is not a stale connection */
    conn_fail(c, "timed out");
}

static void conn_close(struct uconn *c)
{
    event_del(&c->ev_read);
    event_del(&c->ev_write);
    event_del(&c->ev_timeout);
    close(c->fd);
    buf_free(&c->body);
    c->u->nconns--;
    free(c);
}

static struct uconn *conn_open(struct upstream *u)
{
    if (u->addrlen == 0) { /* the name has not resolved yet */
        errno = EHOSTUNREACH;
        return NULL;
    }
    int fd = socket(u->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return NULL;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(fd, (struct sockaddr *)&u->addr, u->addrlen) < 0 && errno != EINPROGRESS) {
        close(fd);
        return NULL;
    }
    struct uconn *c = xcalloc(1, sizeof *c);
    c->u = u;
    c->fd = fd;
    event_assign(&c->ev_read, u->base, fd, EV_READ | EV_PERSIST, on_read, c);
    event_assign(&c->ev_write, u->base, fd, EV_WRITE | EV_PERSIST, on_write, c);
    evtimer_assign(&c->ev_timeout, u->base, on_timeout, c);
    event_add(&c->ev_read, NULL);
    u->nconns++;
    return c;
}

/* Puts r on an idle connection, a new one, or the wait queue. */
static void start(struct upstream *u, struct upstream_req *r)
{
    struct uconn *c = u->idle;
    if (c) {
        u->idle = c->next;
        c->reused = 1;
    } else if (u->nconns < u->max_conns) {
        c = conn_open(u);
        if (!c) {
            r->connect_errno = errno;
            resolve_soon(u);
            /* Reported from the loop, like every other outcome. */
            r->next = NULL;
            if (u->done_tail)
                u->done_tail->next = r;
            else
                u->done_head = r;
            u->done_tail = r;
            event_active(u->kick, 0, 0);
            return;
        }
    } else {
        r->next = NULL;
        if (u->wait_tail)
            u->wait_tail->next = r;
        else
            u->wait_head = r;
        u->wait_tail = r;
        return;
    }
    assign(c, r);
}

/* Requests that could not get a connection at all fail from the loop. */
static void on_kick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct upstream *u = arg;
    while (u->done_head) {
        struct upstream_req *r = u->done_head;
        u->done_head = r->next;
        if (!u->done_head)
            u->done_tail = NULL;
        char msg[512];
        if (u->addrlen == 0)
            snprintf(msg, sizeof msg, "%s: cannot connect: %s does not resolve", u->url, u->host);
        else
            snprintf(msg, sizeof msg, "%s: cannot connect: %s", u->url, strerror(r->connect_errno));
        finish(r, 0, NULL, 0, msg, r->was_sent);
    }
}

/* ---------------------------------------------------------------- pool */

/* ---------------------------------------------------------------- lookups */

static double mono_s(void)
{
    return clock_mono_ms() / 1e3;
}

/* Takes the first address of a finished lookup, if any; new connections use it. */
static void resolve_take(struct upstream *u, const struct addrinfo *res)
{
    if (!res || res->ai_addrlen > sizeof u->addr)
        return;
    memcpy(&u->addr, res->ai_addr, res->ai_addrlen);
    u->addrlen = res->ai_addrlen;
}

static void resolve_done(struct upstream *u)
{
    u->resolving = 0;
    u->resolved_at = mono_s();
    if (gai_error(&u->gai) == 0)
        resolve_take(u, u->gai.ar_result);
    if (u->gai.ar_result)
        freeaddrinfo(u->gai.ar_result);
    u->gai.ar_result = NULL;
}

/* The timer: polls a lookup in flight, or starts the periodic one. */
static void on_resolve_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct upstream *u = arg;
    struct timeval poll = {0, RESOLVE_POLL_MS * 1000};
    if (u->resolving) {
        if (gai_error(&u->gai) == EAI_INPROGRESS) {
            evtimer_add(u->resolve_timer, &poll);
            return;
        }
        resolve_done(u);
    } else if (mono_s() - u->resolved_at >= RESOLVE_EVERY_S) {
        resolve_soon(u);
        return;
    }
    struct timeval every = {(long)RESOLVE_EVERY_S, 0};
    evtimer_add(u->resolve_timer, &every);
}

/* Starts a lookup of the target's name unless one runs or one ended a moment ago. */
static void resolve_soon(struct upstream *u)
{
    if (u->numeric || u->resolving || mono_s() - u->resolved_at < RESOLVE_RETRY_S)
        return;
    memset(&u->gai, 0, sizeof u->gai);
    u->gai.ar_name = u->host;
    u->gai.ar_service = u->port;
    u->gai.ar_request = &u->hints;
    struct gaicb *list[1] = {&u->gai};
    struct sigevent none;
    memset(&none, 0, sizeof none);
    none.sigev_notify = SIGEV_NONE;
    if (getaddrinfo_a(GAI_NOWAIT, list, 1, &none) != 0) {
        u->resolved_at = mono_s();
        return;
    }
    u->resolving = 1;
    struct timeval poll = {0, RESOLVE_POLL_MS * 1000};
    evtimer_add(u->resolve_timer, &poll);
}

/* ---------------------------------------------------------------- target URL */

/* Copies part of h into out (cap bytes); @return 0, or -1 when absent or too long. */
static int url_part(CURLU *h, CURLUPart part, unsigned flags, char *out, size_t cap)
{
    char *v = NULL;
    if (curl_url_get(h, part, &v, flags) != CURLUE_OK)
        return -1;
    int fits = strlen(v) < cap;
    if (fits)
        memcpy(out, v, strlen(v) + 1);
    curl_free(v);
    return fits ? 0 : -1;
}

/* Whether h has part (a query, a fragment, user info): what a target must not have. */
static int has_part(CURLU *h, CURLUPart part)
{
    char *v = NULL;
    int has = curl_url_get(h, part, &v, 0) == CURLUE_OK;
    curl_free(v);
    return has;
}

/* Fills t from a parsed URL; @return NULL, or why not. */
static const char *target_from(CURLU *h, struct upstream_target *t)
{
    char scheme[16], host[sizeof t->host + 2], port[sizeof t->port];
    if (url_part(h, CURLUPART_SCHEME, 0, scheme, sizeof scheme) < 0 || strcmp(scheme, "http"))
        return "only http:// is supported (this client speaks plain TCP)";
    if (has_part(h, CURLUPART_QUERY) || has_part(h, CURLUPART_FRAGMENT) ||
        has_part(h, CURLUPART_USER))
        return "a target URL takes no query, fragment or user info";
    if (url_part(h, CURLUPART_HOST, 0, host, sizeof host) < 0 || !host[0])
        return "no host, or a host name over 199 bytes";
    if (url_part(h, CURLUPART_PORT, CURLU_DEFAULT_PORT, t->port, sizeof t->port) < 0 ||
        url_part(h, CURLUPART_PATH, 0, t->path, sizeof t->path) < 0)
        return "a bad port, or a path over 255 bytes";
    size_t hl = strlen(host);
    int v6 = host[0] == '[';
    snprintf(t->host, sizeof t->host, "%.*s", (int)(v6 ? hl - 2 : hl), host + v6);
    int explicit_port = url_part(h, CURLUPART_PORT, 0, port, sizeof port) == 0;
    snprintf(t->host_header, sizeof t->host_header, "%s%s%s", host, explicit_port ? ":" : "",
             explicit_port ? port : "");
    size_t pl = strlen(t->path);
    while (pl > 0 && t->path[pl - 1] == '/')
        t->path[--pl] = '\0';
    return NULL;
}

int upstream_parse_url(const char *url, struct upstream_target *t, char *err, size_t errlen)
{
    memset(t, 0, sizeof *t);
    CURLU *h = curl_url();
    if (!h) {
        snprintf(err, errlen, "'%s': out of memory", url);
        return -1;
    }
    CURLUcode rc = curl_url_set(h, CURLUPART_URL, url, 0);
    const char *why = rc == CURLUE_OK ? target_from(h, t) : curl_url_strerror(rc);
    curl_url_cleanup(h);
    if (why) {
        snprintf(err, errlen, "'%s' is not an http://host[:port][/path] URL: %s", url, why);
        return -1;
    }
    return 0;
}

const char *upstream_host_header(const struct upstream *u)
{
    return u->target.host_header;
}

const char *upstream_path(const struct upstream *u)
{
    return u->target.path;
}

/* ---------------------------------------------------------------- pool */

struct upstream *upstream_new(struct event_base *base, const char *url, int max_conns, char *err,
                              size_t errlen)
{
    struct upstream_target t;
    if (upstream_parse_url(url, &t, err, errlen) < 0)
        return NULL;
    struct upstream *u = xcalloc(1, sizeof *u);
    u->base = base;
    u->target = t;
    snprintf(u->host, sizeof u->host, "%s", t.host);
    snprintf(u->port, sizeof u->port, "%s", t.port);
    u->hints.ai_socktype = SOCK_STREAM;
    /* A numeric address needs no lookup, now or later. */
    struct addrinfo numeric = u->hints, *res = NULL;
    numeric.ai_flags = AI_NUMERICHOST;
    if (getaddrinfo(u->host, u->port, &numeric, &res) == 0) {
        u->numeric = 1;
    } else if (getaddrinfo(u->host, u->port, &u->hints, &res) != 0) {
        res = NULL; /* not yet resolvable: looked up again until it is */
    }
    resolve_take(u, res);
    if (res)
        freeaddrinfo(res);
    u->resolved_at = mono_s();
    u->max_conns = max_conns > 0 ? max_conns : 64;
    u->kick = event_new(base, -1, 0, on_kick, u);
    u->resolve_timer = evtimer_new(base, on_resolve_timer, u);
    if (!u->numeric) {
        struct timeval every = {u->addrlen ? (long)RESOLVE_EVERY_S : (long)RESOLVE_RETRY_S, 0};
        evtimer_add(u->resolve_timer, &every);
    }
    snprintf(u->url, sizeof u->url, "%s", url);
    settings.on_message_begin = on_status_begin;
    settings.on_body = on_body;
    settings.on_message_complete = on_message_complete;
    return u;
}

void upstream_free(struct upstream *u)
{
    if (!u)
        return;
    while (u->idle) {
        struct uconn *c = u->idle;
        u->idle = c->next;
        conn_close(c);
    }
    struct upstream_req *lists[2] = {u->wait_head, u->done_head};
    for (int i = 0; i < 2; i++)
        while (lists[i]) {
            struct upstream_req *r = lists[i];
            lists[i] = r->next;
            buf_free(&r->bytes);
            free(r);
        }
    while (u->spare) {
        struct upstream_req *r = u->spare;
        u->spare = r->next;
        buf_free(&r->bytes);
        free(r);
    }
    event_free(u->kick);
    event_free(u->resolve_timer);
    if (u->resolving) {
        /* getaddrinfo_a writes into u->gai until it ends: cancel it, or wait for it. */
        if (gai_cancel(&u->gai) == EAI_NOTCANCELED) {
            const struct gaicb *list[1] = {&u->gai};
            while (gai_error(&u->gai) == EAI_INPROGRESS)
                gai_suspend(list, 1, NULL);
        }
        if (u->gai.ar_result)
            freeaddrinfo(u->gai.ar_result);
    }
    /* Busy connections belong to requests still in flight: upstream_cancel frees them,
     * and the owner cancels before freeing the pool. */
    free(u);
}

struct upstream_req *upstream_send(struct upstream *u, const char *req, size_t len, int timeout_ms,
                                   upstream_cb cb, void *arg)
{
    struct upstream_req *r = u->spare;
    if (r) {
        u->spare = r->next;
        u->nspare--;
        struct buf keep = r->bytes;
        memset(r, 0, sizeof *r);
        r->bytes = keep;
        buf_reset(&r->bytes);
    } else {
        r = xcalloc(1, sizeof *r);
    }
    r->u = u;
    buf_append(&r->bytes, req, len);
    r->timeout_ms = timeout_ms > 0 ? timeout_ms : 2000;
    r->cb = cb;
    r->arg = arg;
    start(u, r);
    return r;
}

void upstream_cancel(struct upstream_req *r)
{
    struct upstream *u = r->u;
    if (r->conn) {
        struct uconn *c = r->conn;
        c->req = NULL;
        conn_close(c); /* its answer would be for nobody */
    } else {
        struct upstream_req **lists[2] = {&u->wait_head, &u->done_head};
        for (int i = 0; i < 2; i++) {
            struct upstream_req *prev = NULL;
            for (struct upstream_req *x = *lists[i]; x; prev = x, x = x->next)
                if (x == r) {
                    if (prev)
                        prev->next = x->next;
                    else
                        *lists[i] = x->next;
                    if (i == 0 && u->wait_tail == r)
                        u->wait_tail = prev;
                    if (i == 1 && u->done_tail == r)
                        u->done_tail = prev;
                    break;
                }
        }
    }
    req_free(r);
}
