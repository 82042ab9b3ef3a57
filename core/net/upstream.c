/*
 * upstream.c - pooled keep-alive HTTP/1.1 client (see upstream.h).
 *
 * Each connection is idle (in the pool), connecting, or busy with exactly one request.
 * Requests wait in a FIFO when max_conns are busy. Answers are parsed in place with
 * http-parser; the body is gathered in the connection's buffer.
 */
#include "upstream.h"

#include <errno.h>
#include <event2/event.h>
#include <event2/event_struct.h>
#include <fcntl.h>
#include <http_parser.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "../base/buf.h"
#include "../base/mem.h"

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
};

static http_parser_settings settings;
static void conn_close(struct uconn *c);
static void start(struct upstream *u, struct upstream_req *r);

/* ---------------------------------------------------------------- completion */

static void finish(struct upstream_req *r, int status, const char *body, size_t len,
                   const char *err, int sent)
{
    upstream_cb cb = r->cb;
    void *arg = r->arg;
    buf_free(&r->bytes);
    free(r);
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
        char msg[300];
        snprintf(msg, sizeof msg, "%s: cannot connect: %s", u->url, strerror(r->connect_errno));
        finish(r, 0, NULL, 0, msg, r->was_sent);
    }
}

/* ---------------------------------------------------------------- pool */

struct upstream *upstream_new(struct event_base *base, const char *url, int max_conns, char *err,
                              size_t errlen)
{
    char host[200];
    int port = 80;
    if (sscanf(url, "http://%199[^:/]:%d", host, &port) < 1) {
        snprintf(err, errlen, "'%s' is not an http://host:port URL", url);
        return NULL;
    }
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof hints);
    hints.ai_socktype = SOCK_STREAM;
    char ports[16];
    snprintf(ports, sizeof ports, "%d", port);
    int rc = getaddrinfo(host, ports, &hints, &res);
    if (rc != 0 || !res) {
        snprintf(err, errlen, "cannot resolve %s: %s", host, gai_strerror(rc));
        return NULL;
    }
    struct upstream *u = xcalloc(1, sizeof *u);
    u->base = base;
    memcpy(&u->addr, res->ai_addr, res->ai_addrlen);
    u->addrlen = res->ai_addrlen;
    freeaddrinfo(res);
    u->max_conns = max_conns > 0 ? max_conns : 64;
    u->kick = event_new(base, -1, 0, on_kick, u);
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
    event_free(u->kick);
    /* Busy connections belong to requests still in flight: upstream_cancel frees them,
     * and the owner cancels before freeing the pool. */
    free(u);
}

struct upstream_req *upstream_send(struct upstream *u, const char *req, size_t len, int timeout_ms,
                                   upstream_cb cb, void *arg)
{
    struct upstream_req *r = xcalloc(1, sizeof *r);
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
    buf_free(&r->bytes);
    free(r);
}
