/*
 * http.c - HTTP/1.1 server on libevent and http-parser (see http.h).
 *
 * Reading: every read lands in one shared buffer and is parsed in place; the parser's
 * callbacks copy the URL, headers and body of the current request into per-connection
 * buffers that are reused, so a keep-alive connection allocates nothing once warm and an
 * idle one holds no read buffer at all. Only bytes that arrive behind a request that is
 * answered asynchronously are kept (conn->in) until that answer is written.
 *
 * Writing: answers are appended to conn->out and flushed once per read, so a pipelined
 * batch goes out in one write. A client that does not read its answers stops being read.
 *
 * Timeouts: one sweep per second walks the connection list (cheaper than a timer per
 * connection re-armed on every request).
 */
#include "http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <event2/event.h>
#include <event2/event_struct.h>
#include <event2/listener.h>
#include <http_parser.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "../base/clock.h"
#include "../base/log.h"
#include "../base/mem.h"
#include "../obs/metrics.h"
#include "../obs/trace.h"

#define READ_CHUNK 65536
#define MAX_HEADERS 64
#define OUT_HIGH_WATER (4u << 20) /* stop reading a client that leaves this much unread */
#define KEEP_BYTES (64u << 10)    /* buffers larger than this are freed once used */

/* Connection flags. */
#define C_PENDING 1u        /* a request is waiting for its answer; parsing is held */
#define C_CLOSING 2u        /* close once out is written; read nothing more */
#define C_DEAD 4u           /* socket closed; memory kept until the pending answer arrives */
#define C_WRITING 8u        /* ev_write is armed */
#define C_READ_OFF 16u      /* ev_read is disarmed (async or back-pressure) */
#define C_IN_REQUEST 32u    /* between a request's first byte and its end */
#define C_HDR_VALUE 64u     /* the last header callback was a value */
#define C_EXPECT 128u       /* the request asked for 100-continue */
#define C_IN_HANDLER 256u   /* inside the handler call: an answer now is synchronous */
#define C_HEADERS_DONE 512u /* what header callbacks report now are a chunked body's trailers */

struct hdr {
    uint32_t name_off, name_len, value_off, value_len;
};

struct http_conn {
    struct http_server *srv;
    int fd;
    unsigned flags;
    struct event ev_read, ev_write, ev_resume;
    struct http_conn *prev, *next;   /* all live connections */
    struct http_conn *fprev, *fnext; /* connections with answers to write this iteration */
    int queued;
    http_parser parser;
    struct buf in;  /* unparsed bytes held behind an asynchronous answer */
    struct buf out; /* answers not yet written */
    size_t out_off;
    /* The request being read. */
    struct buf url, hdrs, body;
    struct hdr hdr[MAX_HEADERS];
    int nhdr;
    size_t header_bytes, body_limit;
    double last_active_ms;
    int err_status; /* set by a callback that rejects the request */
    struct http_request req;
};

struct http_server {
    struct event_base *base;
    struct evconnlistener *listener;
    struct event *sweep;
    struct event *flush_ev; /* writes the answers of one loop iteration */
    struct http_conn *flush_head;
    int flush_active;
    struct http_server_opts opts;
    http_handler_fn handler;
    void *arg;
    struct http_conn *conns; /* list of live (not dead) connections */
    struct http_server_stats stats;
    struct http_answer_stats answers;
    int port;
    char bind_addr[64];
};

/* From 10 us (a region's increment) to 10 s (a gateway waiting on a slow upstream). */
const double http_duration_bounds_s[HTTP_DURATION_NBOUNDS] = {
    0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01,
    0.025,   0.05,     0.1,     0.25,   0.5,     1,      2.5,   5,      10};

static http_parser_settings parser_settings;
static char read_chunk[READ_CHUNK];

static void conn_close(struct http_conn *c);
static void conn_flush(struct http_conn *c);
static void conn_queue_flush(struct http_conn *c);
static void conn_feed(struct http_conn *c, const char *data, size_t len);

/* ---------------------------------------------------------------- answers */

const char *http_status_text(int status)
{
    switch (status) {
    case 100: return "Continue";
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 204: return "No Content";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 411: return "Length Required";
    case 413: return "Content Too Large";
    case 415: return "Unsupported Media Type";
    case 422: return "Unprocessable Content";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 505: return "HTTP Version Not Supported";
    default: return "Unknown";
    }
}

static void write_head(struct buf *o, int status, const char *ctype, const char *extra, size_t len,
                       int keep_alive, int http10)
{
    buf_puts(o, "HTTP/1.1 ");
    buf_u64(o, (uint64_t)status);
    buf_putc(o, ' ');
    buf_puts(o, http_status_text(status));
    buf_puts(o, "\r\nContent-Type: ");
    buf_puts(o, ctype);
    buf_puts(o, "\r\nContent-Length: ");
    buf_u64(o, len);
    buf_puts(o, "\r\n");
    if (extra)
        buf_puts(o, extra);
    if (!keep_alive)
        buf_puts(o, "Connection: close\r\n");
    else if (http10)
        buf_puts(o, "Connection: keep-alive\r\n");
    buf_puts(o, "\r\n");
}

/* Tallies one answer; on every request's path, so a few additions and no more. */
static void count_answer(struct http_server *srv, int status, double seconds)
{
    struct http_answer_stats *a = &srv->answers;
    if (status >= 100 && status < 600)
        a->by_status[status - 100]++;
    int b = 0;
    while (b < HTTP_DURATION_NBOUNDS && seconds > http_duration_bounds_s[b])
        b++;
    a->by_duration[b]++;
    a->duration_sum_s += seconds;
}

static void conn_free(struct http_conn *c)
{
    if (c->req.span) { /* a request that will never be answered */
        trace_span_error(c->req.span, "closed unanswered");
        trace_span_end(c->req.span);
    }
    buf_free(&c->in);
    buf_free(&c->out);
    buf_free(&c->url);
    buf_free(&c->hdrs);
    buf_free(&c->body);
    free(c);
}

void http_respond_ex(struct http_request *req, int status, const char *content_type,
                     const char *extra_headers, const char *body, size_t len)
{
    struct http_conn *c = req->conn;
    if (req->span) {
        trace_span_http_status(req->span, status, NULL);
        trace_span_end(req->span);
        req->span = NULL;
    }
    if (c->flags & C_DEAD) {
        /* The client left while we worked on its answer. */
        conn_free(c);
        return;
    }
    double now = clock_mono_ms();
    count_answer(c->srv, status, (now - req->start_ms) / 1000.0);
    int http10 = c->parser.http_major == 1 && c->parser.http_minor == 0;
    write_head(&c->out, status, content_type, extra_headers, len, req->keep_alive, http10);
    if (req->method != HTTP_M_HEAD)
        buf_append(&c->out, body, len);
    if (!req->keep_alive)
        c->flags |= C_CLOSING;
    c->flags &= ~C_IN_REQUEST;
    c->last_active_ms = now;
    c->flags &= ~C_PENDING;
    if (!(c->flags & C_IN_HANDLER)) {
        /* An asynchronous answer: resume parsing from the loop, not from inside whoever
         * answered; with nothing held back, the answer only needs writing. */
        if (c->in.len)
            event_active(&c->ev_resume, 0, 0);
        else
            conn_queue_flush(c);
    }
}

int http_path_is(const struct http_request *req, const char *p)
{
    size_t n = strlen(p);
    return req->path_len == n && memcmp(req->path, p, n) == 0;
}

void http_respond_not_allowed(struct http_request *req, const char *allow)
{
    char hdr[64], body[160];
    snprintf(hdr, sizeof hdr, "Allow: %s\r\n", allow);
    int n = snprintf(body, sizeof body,
                     "{\"detail\":\"%s is not allowed on this path (allowed: %s)\","
                     "\"error\":\"method_not_allowed\"}",
                     req->method_name, allow);
    http_respond_ex(req, 405, "application/json", hdr, body, (size_t)n);
}

void http_respond_metrics(struct http_request *req, const struct metrics *reg, struct buf *scratch)
{
    buf_reset(scratch);
    metrics_render(reg, scratch);
    http_respond_ex(req, 200, "text/plain; version=0.0.4; charset=utf-8", NULL, scratch->data,
                    scratch->len);
    buf_trim(scratch, 1u << 20);
}

void http_respond_json(struct http_request *req, int status, const char *body, size_t len)
{
    http_respond_ex(req, status, "application/json", NULL, body, len);
}

static void error_body(struct buf *b, const char *code, const char *detail)
{
    buf_puts(b, "{\"detail\":");
    buf_json_str(b, detail, strlen(detail));
    buf_puts(b, ",\"error\":");
    buf_json_str(b, code, strlen(code));
    buf_putc(b, '}');
}

void http_respond_error(struct http_request *req, int status, const char *code, const char *fmt,
                        ...)
{
    char detail[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail, sizeof detail, fmt, ap);
    va_end(ap);
    struct buf b = BUF_INIT;
    error_body(&b, code, detail);
    http_respond_json(req, status, b.data, b.len);
    buf_free(&b);
}

/* Answers outside any request (bad framing, limits, time-outs) and closes. */
static void conn_fail(struct http_conn *c, int status, const char *code, const char *detail)
{
    count_answer(c->srv, status,
                 c->flags & C_IN_REQUEST ? (clock_mono_ms() - c->req.start_ms) / 1000.0 : 0);
    struct buf b = BUF_INIT;
    error_body(&b, code, detail);
    write_head(&c->out, status, "application/json", NULL, b.len, 0, 0);
    buf_append(&c->out, b.data, b.len);
    buf_free(&b);
    c->flags |= C_CLOSING;
    c->flags &= ~C_IN_REQUEST;
    if (status == 408)
        c->srv->stats.timeouts++;
    else
        c->srv->stats.bad_requests++;
}

/* ---------------------------------------------------------------- parser callbacks */

static int add_header_bytes(struct http_conn *c, size_t n)
{
    c->header_bytes += n;
    if (c->header_bytes > c->srv->opts.max_header_bytes) {
        c->err_status = 431;
        return -1;
    }
    return 0;
}

static int on_message_begin(http_parser *p)
{
    struct http_conn *c = p->data;
    buf_reset(&c->url);
    buf_reset(&c->hdrs);
    buf_trim(&c->body, KEEP_BYTES);
    c->nhdr = 0;
    c->header_bytes = 0;
    c->flags &= ~(C_HDR_VALUE | C_EXPECT | C_HEADERS_DONE);
    c->flags |= C_IN_REQUEST;
    c->req.start_ms = clock_mono_ms();
    return 0;
}

static int on_url(http_parser *p, const char *at, size_t len)
{
    struct http_conn *c = p->data;
    if (add_header_bytes(c, len) < 0)
        return -1;
    buf_append(&c->url, at, len);
    return 0;
}

static int on_header_field(http_parser *p, const char *at, size_t len)
{
    struct http_conn *c = p->data;
    if (add_header_bytes(c, len) < 0)
        return -1;
    if (c->flags & C_HEADERS_DONE)
        return 0; /* trailers count toward the limit but are not headers */
    if (c->nhdr == 0 || (c->flags & C_HDR_VALUE)) {
        if (c->nhdr == MAX_HEADERS) {
            c->err_status = 431;
            return -1;
        }
        if (add_header_bytes(c, 4) < 0) /* ": " and CRLF */
            return -1;
        if (c->nhdr > 0)
            buf_putc(&c->hdrs, '\0'); /* ends the previous header's value */
        struct hdr *h = &c->hdr[c->nhdr++];
        h->name_off = (uint32_t)c->hdrs.len;
        h->name_len = 0;
        h->value_off = 0;
        h->value_len = 0;
        c->flags &= ~C_HDR_VALUE;
    }
    struct hdr *h = &c->hdr[c->nhdr - 1];
    buf_append(&c->hdrs, at, len);
    h->name_len += (uint32_t)len;
    return 0;
}

static int on_header_value(http_parser *p, const char *at, size_t len)
{
    struct http_conn *c = p->data;
    if (add_header_bytes(c, len) < 0)
        return -1;
    if (c->flags & C_HEADERS_DONE)
        return 0;
    struct hdr *h = &c->hdr[c->nhdr - 1];
    if (!(c->flags & C_HDR_VALUE)) {
        buf_putc(&c->hdrs, '\0'); /* terminate the name */
        h->value_off = (uint32_t)c->hdrs.len;
        c->flags |= C_HDR_VALUE;
    }
    buf_append(&c->hdrs, at, len);
    h->value_len += (uint32_t)len;
    return 0;
}

static enum http_verb map_method(unsigned m)
{
    switch (m) {
    case HTTP_GET: return HTTP_M_GET;
    case HTTP_HEAD: return HTTP_M_HEAD;
    case HTTP_POST: return HTTP_M_POST;
    case HTTP_PUT: return HTTP_M_PUT;
    case HTTP_DELETE: return HTTP_M_DELETE;
    case HTTP_PATCH: return HTTP_M_PATCH;
    case HTTP_OPTIONS: return HTTP_M_OPTIONS;
    default: return HTTP_M_OTHER;
    }
}

static int on_headers_complete(http_parser *p)
{
    struct http_conn *c = p->data;
    /* Terminate the last value (or a name that never got one). */
    if (c->nhdr > 0 && !(c->flags & C_HDR_VALUE)) {
        buf_putc(&c->hdrs, '\0');
        c->hdr[c->nhdr - 1].value_off = (uint32_t)c->hdrs.len;
    }
    buf_putc(&c->hdrs, '\0');
    buf_putc(&c->url, '\0');
    c->flags |= C_HEADERS_DONE;

    if (p->http_major != 1) {
        c->err_status = 505;
        return -1;
    }
    /* Split the target into path and query (origin or absolute form). */
    struct http_parser_url u;
    http_parser_url_init(&u);
    if (http_parser_parse_url(c->url.data, c->url.len - 1, p->method == HTTP_CONNECT, &u) != 0 ||
        !(u.field_set & (1 << UF_PATH))) {
        c->err_status = 400;
        return -1;
    }
    /* Rewrite url in place as "path\0query\0". */
    size_t plen = u.field_data[UF_PATH].len, qlen = 0;
    memmove(c->url.data, c->url.data + u.field_data[UF_PATH].off, plen);
    c->url.data[plen] = '\0';
    if (u.field_set & (1 << UF_QUERY)) {
        qlen = u.field_data[UF_QUERY].len;
        /* The query follows the path in the original string, after the '?'; plen + 1 <=
         * its offset, so memmove is safe. */
        memmove(c->url.data + plen + 1, c->url.data + u.field_data[UF_QUERY].off, qlen);
    }
    c->url.data[plen + 1 + qlen] = '\0';

    struct http_request *r = &c->req;
    r->method = map_method(p->method);
    r->method_name = http_method_str(p->method);
    r->path = c->url.data;
    r->path_len = plen;
    r->query = c->url.data + plen + 1;
    r->query_len = qlen;

    size_t limit = c->srv->opts.max_body_bytes;
    if (c->srv->opts.body_limit) {
        size_t l = c->srv->opts.body_limit(r->path, plen, c->srv->opts.body_limit_arg);
        if (l)
            limit = l;
    }
    c->body_limit = limit;
    if (p->content_length != ULLONG_MAX && p->content_length > limit) {
        c->err_status = 413;
        return -1;
    }
    for (int i = 0; i < c->nhdr; i++) {
        const char *name = c->hdrs.data + c->hdr[i].name_off;
        if (strcasecmp(name, "expect") == 0 &&
            strcasecmp(c->hdrs.data + c->hdr[i].value_off, "100-continue") == 0)
            c->flags |= C_EXPECT;
    }
    int has_body =
        (p->flags & F_CHUNKED) || (p->content_length > 0 && p->content_length != ULLONG_MAX);
    if ((c->flags & C_EXPECT) && has_body)
        buf_puts(&c->out, "HTTP/1.1 100 Continue\r\n\r\n");
    return 0;
}

static int on_body(http_parser *p, const char *at, size_t len)
{
    struct http_conn *c = p->data;
    if (c->body.len + len > c->body_limit) {
        c->err_status = 413;
        return -1;
    }
    buf_append(&c->body, at, len);
    return 0;
}

/* The request's span: a child of the caller's traceparent, or the root of a new trace. */
static struct trace_span *server_span(struct http_request *r)
{
    struct trace_ctx parent;
    const char *tp = http_request_header(r, "traceparent");
    int has_parent = tp && trace_parse_traceparent(tp, strlen(tp), &parent) == 0;
    /* "<METHOD> <path>", built by hand: snprintf would cost more than the span. */
    char name[128];
    size_t ml = strlen(r->method_name), pl = r->path_len < 100 ? r->path_len : 100;
    if (ml > 20)
        ml = 20;
    memcpy(name, r->method_name, ml);
    name[ml] = ' ';
    memcpy(name + ml + 1, r->path, pl);
    name[ml + 1 + pl] = '\0';
    struct trace_span *s = trace_span_start(name, TRACE_SERVER, has_parent ? &parent : NULL);
    trace_span_attr_cstr(s, "http.method", r->method_name);
    trace_span_attr_str(s, "http.target", r->path, r->path_len);
    return s;
}

static int on_message_complete(http_parser *p)
{
    struct http_conn *c = p->data;
    struct http_request *r = &c->req;
    buf_putc(&c->body, '\0');
    r->body = c->body.data;
    r->body_len = c->body.len - 1;
    r->keep_alive = http_should_keep_alive(p);
    r->conn = c;
    r->span = trace_enabled() ? server_span(r) : NULL;
    c->srv->stats.requests++;
    c->flags |= C_PENDING | C_IN_HANDLER; /* C_PENDING is cleared by the answer */
    c->srv->handler(r, c->srv->arg);
    c->flags &= ~C_IN_HANDLER;
    /* Answered later: hold everything behind this request until then. */
    if (c->flags & (C_PENDING | C_CLOSING))
        http_parser_pause(p, 1);
    return 0;
}

const char *http_request_header(const struct http_request *req, const char *name)
{
    const struct http_conn *c = req->conn;
    for (int i = 0; i < c->nhdr; i++)
        if (strcasecmp(c->hdrs.data + c->hdr[i].name_off, name) == 0)
            return c->hdrs.data + c->hdr[i].value_off;
    return NULL;
}

/* ---------------------------------------------------------------- connection I/O */

static void set_read(struct http_conn *c, int on)
{
    if (on && (c->flags & C_READ_OFF)) {
        event_add(&c->ev_read, NULL);
        c->flags &= ~C_READ_OFF;
    } else if (!on && !(c->flags & C_READ_OFF)) {
        event_del(&c->ev_read);
        c->flags |= C_READ_OFF;
    }
}

/* Answers are written once per loop iteration, after the before_flush hook (see http.h). */
static void conn_queue_flush(struct http_conn *c)
{
    struct http_server *srv = c->srv;
    if (!c->queued) {
        c->queued = 1;
        c->fprev = NULL;
        c->fnext = srv->flush_head;
        if (srv->flush_head)
            srv->flush_head->fprev = c;
        srv->flush_head = c;
    }
    if (!srv->flush_active) {
        srv->flush_active = 1;
        event_active(srv->flush_ev, 0, 0);
    }
}

static void flush_unlink(struct http_conn *c)
{
    if (!c->queued)
        return;
    if (c->fprev)
        c->fprev->fnext = c->fnext;
    else
        c->srv->flush_head = c->fnext;
    if (c->fnext)
        c->fnext->fprev = c->fprev;
    c->queued = 0;
}

static void on_flush(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct http_server *srv = arg;
    srv->flush_active = 0;
    int ok = srv->opts.before_flush ? srv->opts.before_flush(srv->opts.before_flush_arg) : 0;
    while (srv->flush_head) {
        struct http_conn *c = srv->flush_head;
        flush_unlink(c);
        if (ok == 0) {
            conn_flush(c);
        } else {
            buf_trim(&c->out, KEEP_BYTES); /* not acknowledged: the client sees a close */
            c->out_off = 0;
            conn_close(c);
        }
    }
}

static void conn_feed(struct http_conn *c, const char *data, size_t len)
{
    size_t off = 0;
    while (off < len && !(c->flags & (C_PENDING | C_CLOSING))) {
        size_t n = http_parser_execute(&c->parser, &parser_settings, data + off, len - off);
        off += n;
        enum http_errno e = HTTP_PARSER_ERRNO(&c->parser);
        if (e == HPE_PAUSED) {
            http_parser_pause(&c->parser, 0);
            continue; /* the loop condition decides whether to go on */
        }
        if (e != HPE_OK) {
            if (c->err_status == 431)
                conn_fail(c, 431, "headers_too_large",
                          "request headers are larger than the limit of 8 KiB");
            else if (c->err_status == 413)
                conn_fail(c, 413, "too_large", "request body is larger than the limit");
            else if (c->err_status == 505)
                conn_fail(c, 505, "bad_request", "only HTTP/1.0 and HTTP/1.1 are served");
            else {
                char d[160];
                snprintf(d, sizeof d, "malformed HTTP request: %s", http_errno_description(e));
                conn_fail(c, 400, "bad_request", d);
            }
            return;
        }
        if (n == 0)
            break;
    }
    if (off < len && (c->flags & C_PENDING) && !(c->flags & C_CLOSING)) {
        /* Keep the rest for when the pending answer is written. */
        if (data == c->in.data) {
            buf_consume(&c->in, off);
        } else {
            buf_append(&c->in, data + off, len - off);
        }
        set_read(c, 0);
    } else if (data == c->in.data) {
        buf_trim(&c->in, KEEP_BYTES);
    }
}

static void conn_flush(struct http_conn *c)
{
    while (c->out_off < c->out.len) {
        ssize_t n = write(c->fd, c->out.data + c->out_off, c->out.len - c->out_off);
        if (n > 0) {
            c->out_off += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            if (!(c->flags & C_WRITING)) {
                event_add(&c->ev_write, NULL);
                c->flags |= C_WRITING;
            }
            if (c->out.len - c->out_off > OUT_HIGH_WATER)
                set_read(c, 0);
            return;
        }
        /* The peer is gone. */
        c->out_off = c->out.len;
        c->flags |= C_CLOSING;
        break;
    }
    buf_trim(&c->out, KEEP_BYTES);
    c->out_off = 0;
    if (c->flags & C_WRITING) {
        event_del(&c->ev_write);
        c->flags &= ~C_WRITING;
    }
    if (c->flags & C_CLOSING) {
        if (!(c->flags & C_PENDING))
            conn_close(c);
        return;
    }
    if (!(c->flags & C_PENDING) && c->in.len == 0)
        set_read(c, 1);
}

static void on_read(evutil_socket_t fd, short what, void *arg)
{
    (void)what;
    struct http_conn *c = arg;
    ssize_t n = read(fd, read_chunk, sizeof read_chunk);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
        return;
    if (n < 0) {
        conn_close(c);
        return;
    }
    if (n == 0) {
        /* The client is done sending (it may still read, as `nc -N` does): answer what
         * is pending or unwritten, then close. */
        set_read(c, 0);
        c->flags |= C_CLOSING;
        if (!(c->flags & C_PENDING) && c->out_off == c->out.len)
            conn_close(c);
        return;
    }
    c->last_active_ms = clock_mono_ms();
    conn_feed(c, read_chunk, (size_t)n);
    if (c->flags & C_DEAD)
        return;
    conn_queue_flush(c);
}

static void on_write(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct http_conn *c = arg;
    c->last_active_ms = clock_mono_ms();
    conn_flush(c);
}

/* An asynchronous answer was written into out: go on with what was held back. */
static void on_resume(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct http_conn *c = arg;
    if (c->in.len && !(c->flags & C_CLOSING))
        conn_feed(c, c->in.data, c->in.len);
    conn_queue_flush(c);
}

static void list_remove(struct http_server *srv, struct http_conn *c)
{
    if (c->prev)
        c->prev->next = c->next;
    else
        srv->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    c->prev = c->next = NULL;
}

static void conn_close(struct http_conn *c)
{
    if (c->flags & C_DEAD)
        return;
    event_del(&c->ev_read);
    event_del(&c->ev_write);
    event_del(&c->ev_resume);
    flush_unlink(c);
    close(c->fd);
    c->fd = -1;
    list_remove(c->srv, c);
    c->srv->stats.open--;
    if (c->flags & C_PENDING) {
        /* A handler still owns c->req; http_respond_ex frees c when it answers. */
        c->flags |= C_DEAD;
        return;
    }
    conn_free(c);
}

static void reject_over_cap(int fd)
{
    static const char body[] =
        "{\"detail\":\"too many open connections, try again later\",\"error\":\"unavailable\"}";
    char msg[256];
    int n = snprintf(msg, sizeof msg,
                     "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                     "Content-Length: %zu\r\nConnection: close\r\n\r\n%s",
                     sizeof body - 1, body);
    ssize_t w = write(fd, msg, (size_t)n);
    (void)w; /* best effort: the socket is closed either way */
    close(fd);
}

int http_server_adopt(struct http_server *srv, int fd)
{
    if (srv->stats.open >= srv->opts.max_conns) {
        srv->stats.rejected++;
        count_answer(srv, 503, 0);
        reject_over_cap(fd);
        return -1;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one); /* fails on a socketpair */

    struct http_conn *c = xcalloc(1, sizeof *c);
    c->srv = srv;
    c->fd = fd;
    http_parser_init(&c->parser, HTTP_REQUEST);
    c->parser.data = c;
    c->last_active_ms = clock_mono_ms();
    event_assign(&c->ev_read, srv->base, fd, EV_READ | EV_PERSIST, on_read, c);
    event_assign(&c->ev_write, srv->base, fd, EV_WRITE | EV_PERSIST, on_write, c);
    event_assign(&c->ev_resume, srv->base, -1, 0, on_resume, c);
    event_add(&c->ev_read, NULL);
    c->next = srv->conns;
    if (srv->conns)
        srv->conns->prev = c;
    srv->conns = c;
    srv->stats.accepted++;
    srv->stats.open++;
    return 0;
}

static void on_accept(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int salen,
                      void *arg)
{
    (void)l;
    (void)sa;
    (void)salen;
    http_server_adopt(arg, fd);
}

static void on_accept_error(struct evconnlistener *l, void *arg)
{
    (void)l;
    (void)arg;
    int err = EVUTIL_SOCKET_ERROR();
    log_warn("accept failed: %s", evutil_socket_error_to_string(err));
}

static void on_sweep(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct http_server *srv = arg;
    double now = clock_mono_ms();
    struct http_conn *c = srv->conns, *next;
    for (; c; c = next) {
        next = c->next;
        if (c->flags & C_PENDING)
            continue; /* the handler has its own deadline */
        if (c->out_off < c->out.len) {
            /* A client that does not read its answers. */
            if (now - c->last_active_ms > srv->opts.request_timeout_ms)
                conn_close(c);
            continue;
        }
        if (c->flags & C_IN_REQUEST) {
            if (now - c->req.start_ms > srv->opts.request_timeout_ms) {
                conn_fail(c, 408, "timeout", "the request was not received in time");
                conn_flush(c);
            }
        } else if (now - c->last_active_ms > srv->opts.idle_timeout_ms) {
            conn_close(c);
        }
    }
}

/* ---------------------------------------------------------------- server */

struct http_server *http_server_new(struct event_base *base, const struct http_server_opts *opts,
                                    http_handler_fn handler, void *arg, char *err, size_t errlen)
{
    parser_settings.on_message_begin = on_message_begin;
    parser_settings.on_url = on_url;
    parser_settings.on_header_field = on_header_field;
    parser_settings.on_header_value = on_header_value;
    parser_settings.on_headers_complete = on_headers_complete;
    parser_settings.on_body = on_body;
    parser_settings.on_message_complete = on_message_complete;

    struct http_server *srv = xcalloc(1, sizeof *srv);
    srv->base = base;
    srv->opts = *opts;
    srv->handler = handler;
    srv->arg = arg;
    snprintf(srv->bind_addr, sizeof srv->bind_addr, "%s",
             opts->bind_addr && *opts->bind_addr ? opts->bind_addr : "127.0.0.1");
    srv->opts.bind_addr = srv->bind_addr;
    if (srv->opts.max_conns <= 0)
        srv->opts.max_conns = 10000;
    if (!srv->opts.max_header_bytes)
        srv->opts.max_header_bytes = 8192;
    if (!srv->opts.max_body_bytes)
        srv->opts.max_body_bytes = 65536;
    if (srv->opts.idle_timeout_ms <= 0)
        srv->opts.idle_timeout_ms = 60000;
    if (srv->opts.request_timeout_ms <= 0)
        srv->opts.request_timeout_ms = 10000;

    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    socklen_t sslen;
    struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;
    if (inet_pton(AF_INET, srv->bind_addr, &sin->sin_addr) == 1) {
        sin->sin_family = AF_INET;
        sin->sin_port = htons((uint16_t)opts->port);
        sslen = sizeof *sin;
    } else if (inet_pton(AF_INET6, srv->bind_addr, &sin6->sin6_addr) == 1) {
        sin6->sin6_family = AF_INET6;
        sin6->sin6_port = htons((uint16_t)opts->port);
        sslen = sizeof *sin6;
    } else {
        snprintf(err, errlen, "bind address '%s' is not an IPv4 or IPv6 address", srv->bind_addr);
        free(srv);
        return NULL;
    }
    srv->listener = evconnlistener_new_bind(
        base, on_accept, srv, LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE | LEV_OPT_CLOSE_ON_EXEC,
        1024, (struct sockaddr *)&ss, (int)sslen);
    if (!srv->listener) {
        snprintf(err, errlen, "cannot listen on %s:%d: %s", srv->bind_addr, opts->port,
                 strerror(errno));
        free(srv);
        return NULL;
    }
    evconnlistener_set_error_cb(srv->listener, on_accept_error);

    struct sockaddr_storage bound;
    socklen_t blen = sizeof bound;
    getsockname(evconnlistener_get_fd(srv->listener), (struct sockaddr *)&bound, &blen);
    srv->port = ntohs(bound.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&bound)->sin6_port
                                                  : ((struct sockaddr_in *)&bound)->sin_port);

    srv->flush_ev = event_new(base, -1, 0, on_flush, srv);
    srv->sweep = event_new(base, -1, EV_PERSIST, on_sweep, srv);
    struct timeval tv = {1, 0};
    event_add(srv->sweep, &tv);
    return srv;
}

void http_server_free(struct http_server *srv)
{
    if (!srv)
        return;
    evconnlistener_free(srv->listener);
    event_free(srv->sweep);
    event_free(srv->flush_ev);
    while (srv->conns) {
        struct http_conn *c = srv->conns;
        c->flags &= ~C_PENDING; /* owners are gone (see http.h) */
        conn_close(c);
    }
    free(srv);
}

int http_server_port(const struct http_server *srv)
{
    return srv->port;
}

void http_server_stats(const struct http_server *srv, struct http_server_stats *out)
{
    *out = srv->stats;
}

const struct http_answer_stats *http_server_answers(const struct http_server *srv)
{
    return &srv->answers;
}
