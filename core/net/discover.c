/*
 * discover.c - region names from /health (see discover.h).
 */
#include "discover.h"

#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../base/json.h"
#include "../base/log.h"
#include "../base/mem.h"
#include "client.h"

#define FIRST_DELAY_MS 100
#define MAX_DELAY_MS 2000
#define CALL_TIMEOUT_MS 2000

struct asked {
    struct discover *d;
    struct endpoint ep;
    int index, delay_ms, attempts, logged;
    char *health_url;
    struct event *timer;
    struct client_call *call;
};

struct discover {
    struct client *client;
    char *auth_header;
    discover_cb cb;
    void *arg;
    struct asked *asked;
    int n, pending;
    char (*names)[ENDPOINT_NAME_MAX]; /* every endpoint's name, "" while unknown */
    int nnames;
    struct json_parser parser;
};

static void ask(evutil_socket_t fd, short what, void *arg);

static void again(struct asked *a, const char *why)
{
    if (!a->logged) {
        log_warn("region name of %s not known yet (its /health: %s); asking again until it "
                 "answers",
                 a->ep.addr, why);
        a->logged = 1;
    }
    struct timeval tv = {a->delay_ms / 1000, (a->delay_ms % 1000) * 1000};
    evtimer_add(a->timer, &tv);
    a->delay_ms = a->delay_ms * 2 > MAX_DELAY_MS ? MAX_DELAY_MS : a->delay_ms * 2;
}

static void on_health(const struct client_result *res, void *arg)
{
    struct asked *a = arg;
    struct discover *d = a->d;
    a->call = NULL;
    a->attempts++;
    char why[300];
    if (res->status != 200) {
        if (res->status)
            snprintf(why, sizeof why, "HTTP %d", res->status);
        else
            snprintf(why, sizeof why, "%s", res->error ? res->error : "no answer");
        return again(a, why);
    }
    const struct json *root = json_parse(&d->parser, res->body, res->len);
    const struct json *region = root ? json_get(root, "region") : NULL;
    if (!region || region->type != JSON_STR || !endpoint_name_valid(region->u.s, region->len))
        return again(a, "its answer has no \"region\" of 1-200 bytes of [A-Za-z0-9_.:-]");
    char name[ENDPOINT_NAME_MAX];
    snprintf(name, sizeof name, "%.*s", (int)region->len, region->u.s);
    for (int i = 0; i < d->nnames; i++)
        if (i != a->index && !strcmp(d->names[i], name)) {
            snprintf(why, sizeof why, "it says region '%s', which endpoint %d already is", name,
                     i + 1);
            if (!a->logged)
                log_error("%s: %s; leaving it unnamed", a->ep.addr, why);
            a->logged = 1;
            return again(a, why);
        }
    snprintf(d->names[a->index], sizeof d->names[a->index], "%s", name);
    d->pending--;
    log_info("region name of %s is '%s' (from its /health, after %d attempt%s)", a->ep.addr, name,
             a->attempts, a->attempts == 1 ? "" : "s");
    d->cb(d->arg, a->index, name);
}

static void ask(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct asked *a = arg;
    const char *headers[2] = {a->d->auth_header, NULL};
    struct client_call_opts o = {.method = "GET",
                                 .url = a->health_url,
                                 .headers = a->d->auth_header ? headers : NULL,
                                 .timeout_ms = CALL_TIMEOUT_MS};
    a->call = client_request(a->d->client, &o, on_health, a);
    if (!a->call)
        again(a, "the HTTP client refused the call");
}

struct discover *discover_start(struct event_base *base, struct client *client,
                                const struct endpoint *eps, int n, const char *auth_header,
                                discover_cb cb, void *arg)
{
    int unnamed = 0;
    for (int i = 0; i < n; i++)
        unnamed += !eps[i].name[0];
    if (!unnamed)
        return NULL;
    struct discover *d = xcalloc(1, sizeof *d);
    d->client = client;
    d->auth_header = auth_header ? xstrdup(auth_header) : NULL;
    d->cb = cb;
    d->arg = arg;
    d->names = xcalloc((size_t)n, sizeof *d->names);
    d->nnames = n;
    d->asked = xcalloc((size_t)unnamed, sizeof *d->asked);
    json_parser_init(&d->parser);
    for (int i = 0; i < n; i++) {
        snprintf(d->names[i], sizeof d->names[i], "%s", eps[i].name);
        if (eps[i].name[0])
            continue;
        struct asked *a = &d->asked[d->n++];
        a->d = d;
        a->ep = eps[i];
        a->index = i;
        a->delay_ms = FIRST_DELAY_MS;
        size_t len = strlen(eps[i].url) + sizeof "/health";
        a->health_url = xmalloc(len);
        snprintf(a->health_url, len, "%s/health", eps[i].url);
        a->timer = evtimer_new(base, ask, a);
        struct timeval now = {0, 0};
        evtimer_add(a->timer, &now);
    }
    d->pending = d->n;
    return d;
}

void discover_free(struct discover *d)
{
    if (!d)
        return;
    for (int i = 0; i < d->n; i++) {
        if (d->asked[i].call)
            client_cancel(d->asked[i].call);
        event_free(d->asked[i].timer);
        free(d->asked[i].health_url);
    }
    json_parser_free(&d->parser);
    free(d->asked);
    free(d->names);
    free(d->auth_header);
    free(d);
}

int discover_pending(const struct discover *d)
{
    return d ? d->pending : 0;
}
