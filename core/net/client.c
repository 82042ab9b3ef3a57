/*
 * client.c - libcurl multi socket API driven by libevent (see client.h).
 *
 * curl calls sock_cb to say which events it wants on which socket and timer_cb to say
 * when to wake it; our libevent callbacks hand readiness back with
 * curl_multi_socket_action and then collect finished transfers. User callbacks run only
 * from those libevent callbacks, never from inside a curl callback, so they may start or
 * cancel calls freely.
 */
#include "client.h"

#include <curl/curl.h>
#include <event2/event.h>
#include <event2/event_struct.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "../base/buf.h"
#include "../base/clock.h"
#include "../base/log.h"
#include "../base/mem.h"

#define MAX_RESPONSE (64u << 20)

struct sockinfo {
    struct event ev;
    curl_socket_t fd;
    struct client *cl;
    struct sockinfo *prev, *next;
};

struct client_call {
    struct client *cl;
    CURL *easy;
    struct curl_slist *headers;
    struct buf req_body, resp;
    client_cb cb;
    void *arg;
    double start_ms;
    char errbuf[CURL_ERROR_SIZE];
    struct client_call *prev, *next;
};

struct client {
    struct event_base *base;
    CURLM *multi;
    struct event *timer;
    struct sockinfo *socks;
    struct client_call *calls;
    int pending;
};

static void check_done(struct client *cl);

static void on_socket_event(evutil_socket_t fd, short what, void *arg)
{
    struct client *cl = arg;
    int action =
        ((what & EV_READ) ? CURL_CSELECT_IN : 0) | ((what & EV_WRITE) ? CURL_CSELECT_OUT : 0);
    int running;
    curl_multi_socket_action(cl->multi, fd, action, &running);
    check_done(cl);
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct client *cl = arg;
    int running;
    curl_multi_socket_action(cl->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    check_done(cl);
}

static int sock_cb(CURL *easy, curl_socket_t s, int what, void *userp, void *socketp)
{
    (void)easy;
    struct client *cl = userp;
    struct sockinfo *si = socketp;
    if (what == CURL_POLL_REMOVE) {
        if (si) {
            event_del(&si->ev);
            if (si->prev)
                si->prev->next = si->next;
            else
                cl->socks = si->next;
            if (si->next)
                si->next->prev = si->prev;
            free(si);
            curl_multi_assign(cl->multi, s, NULL);
        }
        return 0;
    }
    if (!si) {
        si = xcalloc(1, sizeof *si);
        si->fd = s;
        si->cl = cl;
        si->next = cl->socks;
        if (cl->socks)
            cl->socks->prev = si;
        cl->socks = si;
        curl_multi_assign(cl->multi, s, si);
    } else {
        event_del(&si->ev);
    }
    short kind = (short)(((what & CURL_POLL_IN) ? EV_READ : 0) |
                         ((what & CURL_POLL_OUT) ? EV_WRITE : 0) | EV_PERSIST);
    event_assign(&si->ev, cl->base, s, kind, on_socket_event, cl);
    event_add(&si->ev, NULL);
    return 0;
}

static int timer_cb(CURLM *multi, long timeout_ms, void *userp)
{
    (void)multi;
    struct client *cl = userp;
    if (timeout_ms < 0) {
        evtimer_del(cl->timer);
    } else {
        struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
        evtimer_add(cl->timer, &tv);
    }
    return 0;
}

static size_t write_cb(char *ptr, size_t size, size_t nmemb, void *userdata)
{
    struct client_call *call = userdata;
    size_t n = size * nmemb;
    if (call->resp.len + n > MAX_RESPONSE)
        return 0; /* aborts the transfer with CURLE_WRITE_ERROR */
    buf_append(&call->resp, ptr, n);
    return n;
}

static void call_free(struct client_call *call)
{
    struct client *cl = call->cl;
    if (call->prev)
        call->prev->next = call->next;
    else
        cl->calls = call->next;
    if (call->next)
        call->next->prev = call->prev;
    cl->pending--;
    curl_easy_cleanup(call->easy);
    curl_slist_free_all(call->headers);
    buf_free(&call->req_body);
    buf_free(&call->resp);
    free(call);
}

static void check_done(struct client *cl)
{
    CURLMsg *msg;
    int left;
    while ((msg = curl_multi_info_read(cl->multi, &left))) {
        if (msg->msg != CURLMSG_DONE)
            continue;
        CURL *easy = msg->easy_handle;
        CURLcode rc = msg->data.result;
        struct client_call *call = NULL;
        curl_easy_getinfo(easy, CURLINFO_PRIVATE, (char **)&call);
        long status = 0;
        curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &status);
        curl_multi_remove_handle(cl->multi, easy);

        struct client_result res;
        memset(&res, 0, sizeof res);
        res.status = rc == CURLE_OK ? (int)status : 0;
        res.body = buf_cstr(&call->resp);
        res.len = call->resp.len;
        res.error =
            rc == CURLE_OK ? NULL : (call->errbuf[0] ? call->errbuf : curl_easy_strerror(rc));
        res.elapsed_ms = clock_mono_ms() - call->start_ms;
        call->cb(&res, call->arg);
        call_free(call);
    }
}

struct client *client_new(struct event_base *base)
{
    struct client *cl = xcalloc(1, sizeof *cl);
    cl->base = base;
    cl->multi = curl_multi_init();
    cl->timer = evtimer_new(base, on_timer, cl);
    curl_multi_setopt(cl->multi, CURLMOPT_SOCKETFUNCTION, sock_cb);
    curl_multi_setopt(cl->multi, CURLMOPT_SOCKETDATA, cl);
    curl_multi_setopt(cl->multi, CURLMOPT_TIMERFUNCTION, timer_cb);
    curl_multi_setopt(cl->multi, CURLMOPT_TIMERDATA, cl);
    curl_multi_setopt(cl->multi, CURLMOPT_MAXCONNECTS, 256L);
    return cl;
}

void client_free(struct client *cl)
{
    if (!cl)
        return;
    while (cl->calls) {
        curl_multi_remove_handle(cl->multi, cl->calls->easy);
        call_free(cl->calls);
    }
    curl_multi_cleanup(cl->multi);
    while (cl->socks) {
        struct sockinfo *si = cl->socks;
        cl->socks = si->next;
        event_del(&si->ev);
        free(si);
    }
    event_free(cl->timer);
    free(cl);
}

struct client_call *client_request(struct client *cl, const struct client_call_opts *o,
                                   client_cb cb, void *arg)
{
    struct client_call *call = xcalloc(1, sizeof *call);
    call->cl = cl;
    call->cb = cb;
    call->arg = arg;
    call->easy = curl_easy_init();
    call->start_ms = clock_mono_ms();
    CURL *e = call->easy;
    const char *method = o->method ? o->method : "GET";
    int timeout = o->timeout_ms > 0 ? o->timeout_ms : 5000;

    curl_easy_setopt(e, CURLOPT_URL, o->url);
    curl_easy_setopt(e, CURLOPT_PRIVATE, call);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, call->errbuf);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_TCP_NODELAY, 1L);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)timeout);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS,
                     (long)(o->connect_timeout_ms > 0 ? o->connect_timeout_ms : timeout));
    /* A peer's container may come back with a new address: names are looked up again
     * after 2 s rather than curl's default 60. */
    curl_easy_setopt(e, CURLOPT_DNS_CACHE_TIMEOUT, 2L);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, write_cb);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, call);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");

    int has_ctype = 0;
    for (const char *const *h = o->headers; h && *h; h++) {
        call->headers = curl_slist_append(call->headers, *h);
        if (strncasecmp(*h, "content-type:", 13) == 0)
            has_ctype = 1;
    }
    /* curl waits a second for "100 Continue" on larger bodies unless told not to. */
    call->headers = curl_slist_append(call->headers, "Expect:");
    if (o->body && !has_ctype)
        call->headers = curl_slist_append(call->headers, "Content-Type: application/json");
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, call->headers);

    if (o->body || strcmp(method, "POST") == 0) {
        buf_append(&call->req_body, o->body ? o->body : "", o->body ? o->body_len : 0);
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, buf_cstr(&call->req_body));
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)call->req_body.len);
    }
    if (strcmp(method, "GET") != 0 && strcmp(method, "POST") != 0)
        curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, method);
    if (strcmp(method, "HEAD") == 0)
        curl_easy_setopt(e, CURLOPT_NOBODY, 1L);

    call->next = cl->calls;
    if (cl->calls)
        cl->calls->prev = call;
    cl->calls = call;
    cl->pending++;
    if (curl_multi_add_handle(cl->multi, e) != CURLM_OK) {
        log_error("http client: cannot start a call to %s", o->url);
        call_free(call);
        return NULL;
    }
    return call;
}

void client_cancel(struct client_call *call)
{
    if (!call)
        return;
    curl_multi_remove_handle(call->cl->multi, call->easy);
    call_free(call);
}

int client_pending(const struct client *cl)
{
    return cl->pending;
}

int client_url_path(const char *url, char *out, size_t cap)
{
    CURLU *h = curl_url();
    char *path = NULL;
    int ok = h && curl_url_set(h, CURLUPART_URL, url, 0) == CURLUE_OK &&
             curl_url_get(h, CURLUPART_PATH, &path, 0) == CURLUE_OK;
    snprintf(out, cap, "%s", ok && path[0] ? path : "/");
    curl_free(path);
    curl_url_cleanup(h);
    return ok ? 0 : -1;
}
