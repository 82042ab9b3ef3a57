/*
 * relay.c - the TCP relay (see relay.h): libevent bufferevents, two per connection.
 */
#include "relay.h"

#include <arpa/inet.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "../base/mem.h"

/* What one side may hold unwritten before the other side is no longer read. */
#define RELAY_HIGH_WATER (1u << 20)

struct pair;

struct relay {
    struct event_base *base;
    struct evconnlistener *listener;
    struct sockaddr_in target_sa;
    char listen_addr[64], target[64];
    struct pair *pairs; /* open pairs, to close them on relay_free */
    struct relay_stats st;
};

struct pair {
    struct relay *r;
    struct bufferevent *side[2]; /* 0: the client, 1: the target */
    int closing[2];              /* side i closed: flush to the other, then free */
    int connected;               /* the target accepted */
    struct pair *prev, *next;
};

/* @return 0 with sa filled from "a.b.c.d:port", or -1. */
static int parse_addr(const char *s, struct sockaddr_in *sa)
{
    char host[64];
    const char *colon = strrchr(s, ':');
    if (!colon || (size_t)(colon - s) >= sizeof host)
        return -1;
    memcpy(host, s, (size_t)(colon - s));
    host[colon - s] = '\0';
    char *end;
    long port = strtol(colon + 1, &end, 10);
    if (*end || port < 1 || port > 65535)
        return -1;
    memset(sa, 0, sizeof *sa);
    sa->sin_family = AF_INET;
    sa->sin_port = htons((uint16_t)port);
    return inet_pton(AF_INET, host, &sa->sin_addr) == 1 ? 0 : -1;
}

static void pair_free(struct pair *p)
{
    struct relay *r = p->r;
    for (int i = 0; i < 2; i++)
        if (p->side[i])
            bufferevent_free(p->side[i]);
    if (p->prev)
        p->prev->next = p->next;
    else
        r->pairs = p->next;
    if (p->next)
        p->next->prev = p->prev;
    r->st.open--;
    free(p);
}

static int side_of(struct pair *p, struct bufferevent *bev)
{
    return bev == p->side[0] ? 0 : 1;
}

/* Moves what side i read to the other side, and stops reading i while the other side is
 * behind. */
static void on_read(struct bufferevent *bev, void *arg)
{
    struct pair *p = arg;
    int i = side_of(p, bev), o = 1 - i;
    struct evbuffer *in = bufferevent_get_input(bev);
    size_t n = evbuffer_get_length(in);
    if (p->closing[o]) { /* the other side is gone: what arrives goes nowhere */
        evbuffer_drain(in, n);
        return;
    }
    if (i == 0)
        p->r->st.bytes_in += n;
    else
        p->r->st.bytes_out += n;
    struct evbuffer *out = bufferevent_get_output(p->side[o]);
    evbuffer_add_buffer(out, in);
    if (evbuffer_get_length(out) >= RELAY_HIGH_WATER) {
        bufferevent_disable(bev, EV_READ);
        bufferevent_setwatermark(p->side[o], EV_WRITE, RELAY_HIGH_WATER / 2, 0);
    }
}

/* Side i wrote down to its low mark (or everything): the other side may be read again; a
 * pair whose other side closed is over once side i has written all. */
static void on_write(struct bufferevent *bev, void *arg)
{
    struct pair *p = arg;
    int i = side_of(p, bev), o = 1 - i;
    if (p->closing[o]) {
        if (evbuffer_get_length(bufferevent_get_output(bev)) == 0)
            pair_free(p);
        return;
    }
    bufferevent_setwatermark(bev, EV_WRITE, 0, 0);
    bufferevent_enable(p->side[o], EV_READ);
}

static void on_event(struct bufferevent *bev, short what, void *arg)
{
    struct pair *p = arg;
    int i = side_of(p, bev), o = 1 - i;
    if (what & BEV_EVENT_CONNECTED) {
        int one = 1;
        p->connected = 1;
        setsockopt(bufferevent_getfd(bev), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        bufferevent_enable(p->side[0], EV_READ);
        return;
    }
    if (!(what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)))
        return;
    if (i == 1 && !p->connected)
        p->r->st.failed++; /* the connection to the target was refused or timed out */
    /* What side i still had to give goes to the other side first. */
    on_read(bev, p);
    p->closing[i] = 1;
    bufferevent_disable(bev, EV_READ | EV_WRITE);
    if (p->closing[o] || evbuffer_get_length(bufferevent_get_output(p->side[o])) == 0) {
        pair_free(p);
        return;
    }
    bufferevent_setwatermark(p->side[o], EV_WRITE, 0, 0);
    bufferevent_enable(p->side[o], EV_WRITE);
}

static void on_accept(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int len,
                      void *arg)
{
    (void)l, (void)sa, (void)len;
    struct relay *r = arg;
    struct pair *p = xcalloc(1, sizeof *p);
    p->r = r;
    p->side[0] = bufferevent_socket_new(r->base, fd, BEV_OPT_CLOSE_ON_FREE);
    p->side[1] = bufferevent_socket_new(r->base, -1, BEV_OPT_CLOSE_ON_FREE);
    p->next = r->pairs;
    if (r->pairs)
        r->pairs->prev = p;
    r->pairs = p;
    r->st.accepted++;
    r->st.open++;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    for (int i = 0; i < 2; i++) {
        bufferevent_setcb(p->side[i], on_read, on_write, on_event, p);
        bufferevent_enable(p->side[i], EV_WRITE);
    }
    /* The client is read once the target answers (on_event: connected). */
    bufferevent_enable(p->side[1], EV_READ);
    if (bufferevent_socket_connect(p->side[1], (struct sockaddr *)&r->target_sa,
                                   sizeof r->target_sa) < 0) {
        r->st.failed++;
        pair_free(p);
    }
}

struct relay *relay_new(struct event_base *base, const char *listen_addr, const char *target,
                        char *err, size_t errlen)
{
    struct sockaddr_in lsa;
    struct relay *r = xcalloc(1, sizeof *r);
    r->base = base;
    if (parse_addr(listen_addr, &lsa) < 0 || parse_addr(target, &r->target_sa) < 0) {
        snprintf(err, errlen, "relay %s=%s: each side must be a.b.c.d:port", listen_addr, target);
        free(r);
        return NULL;
    }
    snprintf(r->listen_addr, sizeof r->listen_addr, "%s", listen_addr);
    snprintf(r->target, sizeof r->target, "%s", target);
    r->listener = evconnlistener_new_bind(
        base, on_accept, r, LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE | LEV_OPT_CLOSE_ON_EXEC, 128,
        (struct sockaddr *)&lsa, sizeof lsa);
    if (!r->listener) {
        snprintf(err, errlen, "relay: cannot listen on %s: %s", listen_addr, strerror(errno));
        free(r);
        return NULL;
    }
    return r;
}

void relay_free(struct relay *r)
{
    if (!r)
        return;
    evconnlistener_free(r->listener);
    while (r->pairs)
        pair_free(r->pairs);
    free(r);
}

void relay_stats(const struct relay *r, struct relay_stats *out)
{
    *out = r->st;
}

const char *relay_listen_addr(const struct relay *r)
{
    return r->listen_addr;
}

const char *relay_target(const struct relay *r)
{
    return r->target;
}
