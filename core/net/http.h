/*
 * http.h - the HTTP/1.1 server every role answers on.
 *
 * One libevent loop, non-blocking sockets, http-parser for the wire format. It keeps
 * connections alive, answers pipelined requests in order (a request whose handler
 * answers later holds back the ones behind it), enforces the limits of API.md (headers
 * over 8 KiB: 431; body over the limit: 413; malformed: 400 and close), times out idle
 * and slow clients, and caps the number of open connections (the one over the cap gets
 * 503 and is closed). Errors are JSON: {"detail": "...", "error": "<code>"}.
 *
 * It knows nothing of counters, Lua or replication: a role gives it one handler.
 */
#ifndef COUNTERD_NET_SERVER_H
#define COUNTERD_NET_SERVER_H

#include <stddef.h>
#include <stdint.h>

#include "../base/buf.h"

struct event_base;
struct http_server;
struct http_conn;
struct trace_span;

enum http_verb {
    HTTP_M_OTHER,
    HTTP_M_GET,
    HTTP_M_HEAD,
    HTTP_M_POST,
    HTTP_M_PUT,
    HTTP_M_DELETE,
    HTTP_M_PATCH,
    HTTP_M_OPTIONS,
};

struct http_request {
    enum http_verb method;
    const char *method_name;
    const char *path; /* as sent (not percent-decoded), NUL-terminated */
    size_t path_len;
    const char *query; /* after '?', NUL-terminated; "" when absent */
    size_t query_len;
    const char *body; /* NUL-terminated for convenience; may contain NUL bytes */
    size_t body_len;
    int keep_alive;
    double start_ms; /* monotonic time the first byte of the request arrived */
    /* The request's server span when tracing is on (a child of the caller's traceparent),
     * else NULL; the answer ends it. Handlers add attributes and name its route. */
    struct trace_span *span;
    struct http_conn *conn; /* private */
};

struct http_server_opts {
    const char *bind_addr;   /* default "127.0.0.1" */
    int port;                /* 0: an ephemeral port (see http_server_port) */
    int max_conns;           /* default 10000 */
    size_t max_header_bytes; /* default 8192 */
    size_t max_body_bytes;   /* default 65536 */
    int idle_timeout_ms;     /* keep-alive connection with nothing pending; default 60000 */
    int request_timeout_ms;  /* from a request's first byte to its end; default 10000 */
    /* Optional: a larger body limit for some paths (e.g. /sync). Return 0 for the default. */
    size_t (*body_limit)(const char *path, size_t path_len, void *arg);
    void *body_limit_arg;
    /*
     * Optional: called once per loop iteration before any answer of that iteration is
     * written to a socket (a log that must be written before an acknowledgement leaves).
     * Returning -1 drops those answers: their connections are closed unanswered.
     */
    int (*before_flush)(void *arg);
    void *before_flush_arg;
};

/*
 * The handler must answer every request exactly once with one of the http_respond*
 * calls, now or later (an asynchronous answer: keep req until then; it stays valid).
 */
typedef void (*http_handler_fn)(struct http_request *req, void *arg);

struct http_server_stats {
    uint64_t accepted, rejected, requests, bad_requests, timeouts;
    int open;
};

/*
 * The answers written so far, by status code and by the time from the request's first
 * byte to its answer (0 for an answer to no request, such as a refusal at the connection
 * cap). The buckets' upper bounds, in seconds, are the same for every server.
 */
#define HTTP_DURATION_NBOUNDS 19
extern const double http_duration_bounds_s[HTTP_DURATION_NBOUNDS];

struct http_answer_stats {
    uint64_t by_status[500];                         /* [status - 100], 100..599 */
    uint64_t by_duration[HTTP_DURATION_NBOUNDS + 1]; /* per bucket; the last: slower */
    double duration_sum_s;
};

/*
 * Starts listening.
 * @return the server, or NULL with a message in err (e.g. the port is taken).
 */
struct http_server *http_server_new(struct event_base *base, const struct http_server_opts *opts,
                                    http_handler_fn handler, void *arg, char *err, size_t errlen);
/* Closes the listener and every connection. Pending asynchronous requests are dropped:
 * their owners must have been stopped first. */
void http_server_free(struct http_server *srv);
int http_server_port(const struct http_server *srv);
/*
 * Serves an already connected, non-blocking socket as if it had been accepted (tests and
 * fuzzing feed requests through a socketpair this way). The server owns fd from now on.
 * @return 0, or -1 when the connection cap is reached (fd is then closed).
 */
int http_server_adopt(struct http_server *srv, int fd);
void http_server_stats(const struct http_server *srv, struct http_server_stats *out);
/* The server's answer tallies (live: they change as it answers). */
const struct http_answer_stats *http_server_answers(const struct http_server *srv);

/* The value of a request header (name compared case-insensitively), or NULL. */
const char *http_request_header(const struct http_request *req, const char *name);

/*
 * Answers req. extra_headers, when not NULL, are complete "Name: value\r\n" lines.
 * After this call req must not be touched.
 */
void http_respond_ex(struct http_request *req, int status, const char *content_type,
                     const char *extra_headers, const char *body, size_t len);
/* Answers with a JSON body. */
void http_respond_json(struct http_request *req, int status, const char *body, size_t len);
/* Whether req's path is exactly p (no query, no decoding). */
int http_path_is(const struct http_request *req, const char *p);
/* Answers 405 method_not_allowed with an Allow header listing allow (e.g. "GET, HEAD"). */
void http_respond_not_allowed(struct http_request *req, const char *allow);
/* Answers GET /metrics: reg rendered in Prometheus' text format into scratch. */
struct metrics;
void http_respond_metrics(struct http_request *req, const struct metrics *reg, struct buf *scratch);
/* Answers {"detail": <formatted sentence>, "error": code}. */
void http_respond_error(struct http_request *req, int status, const char *code, const char *fmt,
                        ...) __attribute__((format(printf, 4, 5)));

const char *http_status_text(int status);

#endif
