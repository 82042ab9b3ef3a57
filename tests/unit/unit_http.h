/*
 * unit_http.h - one request into the project's HTTP server without a port, for the unit
 * tests of modules that answer inside it (reqbody, auth, replica, httpmetrics): the
 * request goes through a socketpair the server adopts, and the whole answer comes back.
 *
 * Include after unit.h, with core/ on the include path. Never include this from core/.
 */
#ifndef COUNTERD_TESTS_UNIT_HTTP_H
#define COUNTERD_TESTS_UNIT_HTTP_H

#include <errno.h>
#include <event2/event.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "base/buf.h"
#include "base/clock.h"
#include "net/http.h"

/* A server on base with default options and no port (requests come through
 * unit_http_raw). @return it, or NULL after printing why. */
static inline struct http_server *unit_http_server(struct event_base *base, http_handler_fn fn,
                                                   void *arg)
{
    struct http_server_opts o = {.port = 0};
    char err[256] = "";
    struct http_server *srv = http_server_new(base, &o, fn, arg, err, sizeof err);
    if (!srv)
        fprintf(stderr, "server: %s\n", err);
    return srv;
}

/*
 * Sends the raw request (it should say "Connection: close") to srv through a socketpair,
 * running base until the server closes; the whole answer into out.
 * @return the status, or -1 when no whole answer came within 5 s.
 */
static inline int unit_http_raw(struct event_base *base, struct http_server *srv,
                                const struct buf *req, struct buf *out)
{
    int sv[2];
    buf_reset(out);
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv) < 0)
        return -1;
    if (http_server_adopt(srv, sv[1]) < 0) {
        close(sv[0]);
        return -1;
    }
    size_t sent = 0;
    int eof = 0;
    double end = clock_mono_ms() + 5000;
    while (!eof && clock_mono_ms() < end) {
        if (sent < req->len) {
            ssize_t w = write(sv[0], req->data + sent, req->len - sent);
            if (w > 0)
                sent += (size_t)w;
        }
        event_base_loop(base, EVLOOP_NONBLOCK);
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
    event_base_loop(base, EVLOOP_NONBLOCK); /* the server sees the close */
    int status = -1;
    if (!eof || out->len < 12 || sscanf(buf_cstr(out), "HTTP/1.1 %d", &status) != 1)
        return -1;
    return status;
}

/* The same for "method path" with an optional JSON body. */
static inline int unit_http(struct event_base *base, struct http_server *srv, const char *method,
                            const char *path, const char *body, struct buf *out)
{
    struct buf req = BUF_INIT;
    buf_printf(&req, "%s %s HTTP/1.1\r\nHost: t\r\nConnection: close\r\n", method, path);
    if (body)
        buf_printf(&req, "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n%s",
                   strlen(body), body);
    else
        buf_puts(&req, "\r\n");
    int status = unit_http_raw(base, srv, &req, out);
    buf_free(&req);
    return status;
}

/* The body of an answer (after the blank line). */
static inline const char *unit_http_body(struct buf *out)
{
    const char *p = strstr(buf_cstr(out), "\r\n\r\n");
    return p ? p + 4 : "";
}

#endif
