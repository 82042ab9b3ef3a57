/*
 * test_discover.c - core/net/discover.c: region names learned from GET /health of services
 * on loopback (the project's HTTP server on ephemeral ports, one event_base with the client).
 * A service that fails, then names itself: named once, after delays that grow from 100 ms;
 * one that answers without a valid "region" first; one that claims a name another endpoint
 * already has, and a port nobody listens on: never named, still pending; the auth header
 * sent with every call; nothing to learn: NULL; freed with calls in flight: no callback.
 *
 * Every wait is bounded. Never include this from core/.
 */
#include <arpa/inet.h>
#include <curl/curl.h>
#include <event2/event.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "base/clock.h"
#include "net/client.h"
#include "net/discover.h"
#include "net/endpoint.h"
#include "net/http.h"
#include "unit.h"

#define MAX_CALLS 64

/* One service: its answers to /health, in order (the last one repeats). */
struct service {
    struct http_server *srv;
    int port;
    const char *answers[4]; /* "503" for an error, "hold" to keep it unanswered, else a body */
    int nanswers;
    int calls;
    double at[MAX_CALLS];
    int auth_ok; /* calls that carried the expected Authorization header */
    struct http_request *held[MAX_CALLS];
    int nheld;
};

struct named {
    int count[8];
    char name[8][64];
    int order[8], n;
};

static const char *auth_header = "Authorization: Bearer tok-1";

static void health(struct http_request *req, void *arg)
{
    struct service *s = arg;
    const char *a = s->answers[s->calls < s->nanswers ? s->calls : s->nanswers - 1];
    if (s->calls < MAX_CALLS)
        s->at[s->calls] = clock_mono_ms();
    s->calls++;
    const char *h = http_request_header(req, "authorization");
    if (h && !strcmp(h, "Bearer tok-1"))
        s->auth_ok++;
    if (!http_path_is(req, "/health")) {
        http_respond_error(req, 404, "not_found", "not /health");
    } else if (!strcmp(a, "503")) {
        http_respond_error(req, 503, "unavailable", "starting");
    } else if (!strcmp(a, "hold") && s->nheld < MAX_CALLS) {
        s->held[s->nheld++] = req;
    } else {
        http_respond_json(req, 200, a, strlen(a));
    }
}

static int service_start(struct event_base *base, struct service *s)
{
    struct http_server_opts o = {.port = 0};
    char err[256] = "";
    s->srv = http_server_new(base, &o, health, s, err, sizeof err);
    if (!s->srv) {
        fprintf(stderr, "server: %s\n", err);
        return -1;
    }
    s->port = http_server_port(s->srv);
    return 0;
}

static void service_stop(struct service *s)
{
    for (int i = 0; i < s->nheld; i++)
        http_respond_json(s->held[i], 200, "{}", 2);
    s->nheld = 0;
    if (s->srv)
        http_server_free(s->srv);
    s->srv = NULL;
}

static void on_named(void *arg, int i, const char *name)
{
    struct named *n = arg;
    if (i < 0 || i >= 8)
        return;
    n->count[i]++;
    snprintf(n->name[i], sizeof n->name[i], "%s", name);
    if (n->n < 8)
        n->order[n->n++] = i;
}

static void run_for(struct event_base *base, double ms)
{
    double end = clock_mono_ms() + ms;
    while (clock_mono_ms() < end) {
        struct timeval tv = {0, 20000};
        event_base_loopexit(base, &tv);
        event_base_loop(base, EVLOOP_ONCE);
    }
}

/* A loopback port with no listener. */
static int dead_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, len) < 0 ||
        getsockname(fd, (struct sockaddr *)&a, &len) < 0) {
        if (fd >= 0)
            close(fd);
        return 0;
    }
    close(fd);
    return ntohs(a.sin_port);
}

static void test_learns(void)
{
    signal(SIGPIPE, SIG_IGN);
    curl_global_init(CURL_GLOBAL_DEFAULT);
    struct event_base *base = event_base_new();
    struct client *cl = client_new(base);
    struct service s[4] = {
        {.answers = {"{\"region\":\"us-east\"}"}, .nanswers = 1},
        {.answers = {"503", "503", "{\"region\":\"us-west\",\"ok\":true}"}, .nanswers = 3},
        {.answers = {"{\"region\":\"bad name\"}", "{\"status\":\"ok\"}", "[1]",
                     "{\"region\":\"eu-central\"}"},
         .nanswers = 4},
        {.answers = {"{\"region\":\"us-east\"}"}, .nanswers = 1}, /* eps[0]'s name */
    };
    for (int i = 0; i < 4; i++)
        REQUIRE(service_start(base, &s[i]) == 0);
    int dead = dead_port();
    REQUIRE(dead > 0);
    char list[512], err[256];
    snprintf(list, sizeof list,
             "us-east=http://127.0.0.1:%d,127.0.0.1:%d,http://127.0.0.1:%d,127.0.0.1:%d,"
             "127.0.0.1:%d",
             s[0].port, s[1].port, s[2].port, s[3].port, dead);
    struct endpoint eps[5];
    REQUIRE(endpoint_list_parse("TEST", list, eps, 5, err, sizeof err) == 5);
    struct named nd = {0};
    struct discover *d = discover_start(base, cl, eps, 5, auth_header, on_named, &nd);
    REQUIRE(d != NULL);
    CHECK_EQ_I64(discover_pending(d), 4);
    CHECK_EQ_I64(nd.n, 0); /* nothing happens before the loop runs */
    double t0 = clock_mono_ms();
    while (nd.n < 2 && clock_mono_ms() - t0 < 5000)
        run_for(base, 20);
    run_for(base, 400); /* more attempts of the two that never get a name */

    CHECK_EQ_I64(nd.n, 2);
    CHECK_EQ_I64(nd.count[0], 0); /* given: never asked */
    CHECK_EQ_I64(s[0].calls, 0);
    CHECK_EQ_I64(nd.count[1], 1);
    CHECK_STR_EQ(nd.name[1], "us-west");
    CHECK_EQ_I64(nd.count[2], 1);
    CHECK_STR_EQ(nd.name[2], "eu-central");
    CHECK_EQ_I64(nd.count[3], 0);
    CHECK_EQ_I64(nd.count[4], 0);
    CHECK_EQ_I64(discover_pending(d), 2);
    /* Asked until named, then no more. */
    CHECK_EQ_I64(s[1].calls, 3);
    CHECK_EQ_I64(s[2].calls, 4);
    CHECK(s[3].calls >= 4);
    /* Delays of 100 ms, then 200 ms, then 400 ms (client and loop add a little). */
    CHECK(s[1].at[1] - s[1].at[0] >= 95 && s[1].at[1] - s[1].at[0] < 1000);
    CHECK(s[1].at[2] - s[1].at[1] >= 195 && s[1].at[2] - s[1].at[1] < 1000);
    CHECK(s[2].at[3] - s[2].at[2] >= 395);
    for (int i = 1; i < 4; i++)
        CHECK_EQ_I64(s[i].auth_ok, s[i].calls);

    discover_free(d);
    int calls3 = s[3].calls;
    run_for(base, 300);
    CHECK_EQ_I64(s[3].calls, calls3); /* stopped asking */
    CHECK_EQ_I64(nd.n, 2);
    client_free(cl);
    for (int i = 0; i < 4; i++)
        service_stop(&s[i]);
    event_base_free(base);
    curl_global_cleanup();
}

/* Two unnamed services claiming the same name: one gets it, the other stays pending. */
static void test_same_name_twice(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    struct event_base *base = event_base_new();
    struct client *cl = client_new(base);
    struct service s[2] = {{.answers = {"{\"region\":\"twin\"}"}, .nanswers = 1},
                           {.answers = {"{\"region\":\"twin\"}"}, .nanswers = 1}};
    for (int i = 0; i < 2; i++)
        REQUIRE(service_start(base, &s[i]) == 0);
    char list[256], err[256];
    snprintf(list, sizeof list, "127.0.0.1:%d,127.0.0.1:%d", s[0].port, s[1].port);
    struct endpoint eps[2];
    REQUIRE(endpoint_list_parse("TEST", list, eps, 2, err, sizeof err) == 2);
    struct named nd = {0};
    struct discover *d = discover_start(base, cl, eps, 2, NULL, on_named, &nd);
    REQUIRE(d != NULL);
    double t0 = clock_mono_ms();
    while (nd.n < 1 && clock_mono_ms() - t0 < 5000)
        run_for(base, 20);
    run_for(base, 400);
    CHECK_EQ_I64(nd.n, 1);
    CHECK_EQ_I64(nd.count[0] + nd.count[1], 1);
    CHECK_STR_EQ(nd.name[nd.order[0]], "twin");
    CHECK_EQ_I64(discover_pending(d), 1);
    CHECK(s[1 - nd.order[0]].calls >= 2);         /* the other is asked again */
    CHECK_EQ_I64(s[0].auth_ok + s[1].auth_ok, 0); /* no header asked for, none sent */
    discover_free(d);
    client_free(cl);
    for (int i = 0; i < 2; i++)
        service_stop(&s[i]);
    event_base_free(base);
    curl_global_cleanup();
}

static void test_nothing_to_learn_and_free_in_flight(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    struct event_base *base = event_base_new();
    struct client *cl = client_new(base);
    struct endpoint eps[2];
    char err[256];
    REQUIRE(endpoint_list_parse("TEST", "a=127.0.0.1:1,b=127.0.0.1:2", eps, 2, err, sizeof err) ==
            2);
    struct named nd = {0};
    CHECK(discover_start(base, cl, eps, 2, NULL, on_named, &nd) == NULL);
    CHECK(discover_start(base, cl, eps, 0, NULL, on_named, &nd) == NULL);
    CHECK_EQ_I64(discover_pending(NULL), 0);
    discover_free(NULL);

    /* A service that never answers: freed while its call is in flight. */
    struct service s = {.answers = {"hold"}, .nanswers = 1};
    REQUIRE(service_start(base, &s) == 0);
    char list[128];
    snprintf(list, sizeof list, "127.0.0.1:%d", s.port);
    REQUIRE(endpoint_list_parse("TEST", list, eps, 1, err, sizeof err) == 1);
    struct discover *d = discover_start(base, cl, eps, 1, auth_header, on_named, &nd);
    REQUIRE(d != NULL);
    double t0 = clock_mono_ms();
    while (s.calls < 1 && clock_mono_ms() - t0 < 5000)
        run_for(base, 20);
    CHECK_EQ_I64(s.calls, 1);
    CHECK_EQ_I64(client_pending(cl), 1);
    discover_free(d);
    CHECK_EQ_I64(client_pending(cl), 0);
    service_stop(&s); /* answers the held call: nobody is there to hear it */
    run_for(base, 100);
    CHECK_EQ_I64(nd.n, 0);
    client_free(cl);
    event_base_free(base);
    curl_global_cleanup();
}

UNIT_MAIN("discover", UNIT_CASE(test_learns), UNIT_CASE(test_same_name_twice),
          UNIT_CASE(test_nothing_to_learn_and_free_in_flight))
