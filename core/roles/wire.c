/*
 * wire.c - the wire role (see wire.h): TUN devices, links with delays and cuts, the
 * policy and partition ticks, the relays, the control API.
 */
#include "wire.h"

#include <arpa/inet.h>
#include <errno.h>
#include <event2/event.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../base/buf.h"
#include "../base/clock.h"
#include "../base/json.h"
#include "../base/log.h"
#include "../base/mem.h"
#include "../lua/host.h"
#include "../net/auth.h"
#include "../net/client.h"
#include "../net/endpoint.h"
#include "../net/http.h"
#include "../net/relay.h"
#include "../net/tun.h"
#include "../obs/metrics.h"
#include "config.h"
#include "policy.h"
#include "reload.h"
#include "reqbody.h"
#include "role.h"
#include "route.h"

#define WIRE_MAX_REGIONS 8
#define WIRE_MAX_ENDS (WIRE_MAX_REGIONS + 1) /* the regions, then the host */
#define WIRE_MAX_RELAYS 32
#define WIRE_TICK_MS 200 /* policy and partition refresh */
#define WIRE_POLL_TIMEOUT_MS 1000
#define WIRE_HOST_OCTET 254
#define WIRE_READ_BATCH 256 /* packets read from one device per wake-up */

struct wire;

/* A packet on its way: due is when it leaves the link (monotonic ms). */
struct packet {
    struct packet *next;
    double due;
    uint32_t len;
    unsigned char data[];
};

enum drop_reason { DROP_CUT, DROP_FULL, DROP_WRITE, NDROP };
static const char *const drop_names[NDROP] = {"cut", "queue_full", "write_failed"};

/* One direction between two ends: a FIFO of packets with their due times. */
struct link {
    struct wire *w;
    int from, to;
    struct packet *head, *tail;
    uint32_t queued;
    double last_due; /* due times never go back: a lowered delay keeps the order */
    struct event *timer;
    int policy_delay_ms, policy_cut; /* faults.link (links between regions) */
    int api_delay_ms;                /* POST /admin/links; -1: the policy's */
    int api_cut;
    uint64_t packets, bytes, dropped[NDROP];
    struct metric_series *m_packets, *m_bytes, *m_dropped[NDROP], *m_delay, *m_cut, *m_queued;
};

struct end {
    struct wire *w;
    int index;
    char name[64];              /* the region, or "host" */
    char netns[64];             /* "" for the host */
    char url[ENDPOINT_URL_MAX]; /* the region node, for its partition switch; "" : none */
    uint32_t addr;              /* host byte order */
    int fd;
    struct event *ev;
    int partitioned;           /* the region node's switch, as last polled */
    char partition_error[200]; /* why the last poll failed, "" when it did not */
    struct client_call *poll;
};

struct wire {
    struct event_base *base;
    struct metrics *metrics;
    struct otlp *otlp;
    char *admin_token;
    struct client *client;
    struct host *lua;
    struct reload *reload;
    struct http_server *server;
    struct end ends[WIRE_MAX_ENDS];
    int nregions, nends; /* the host is ends[nregions] */
    struct link links[WIRE_MAX_ENDS][WIRE_MAX_ENDS];
    uint32_t subnet; /* a.b.c.0, host byte order */
    char device[16];
    int queue_max;
    struct relay *relays[WIRE_MAX_RELAYS];
    int nrelays;
    struct event *tick;
    char policy_error[300]; /* the last failure of faults.link, "" when it answered */
    uint64_t unroutable, not_ipv4;
    struct metric_series *m_unroutable, *m_not_ipv4;
    struct json_parser parser;
    struct buf out;
    unsigned char pkt[65536];
};

/* ---------------------------------------------------------------- links */

static int is_region_link(const struct link *l)
{
    return l->from < l->w->nregions && l->to < l->w->nregions;
}

/* Whether l drops everything now; why in *by (a bit set: 1 api, 2 policy, 4 partition). */
static int link_cut(const struct link *l, unsigned *by)
{
    const struct wire *w = l->w;
    unsigned b = 0;
    if (l->api_cut)
        b |= 1;
    if (is_region_link(l)) {
        if (l->policy_cut)
            b |= 2;
        if (w->ends[l->from].partitioned || w->ends[l->to].partitioned)
            b |= 4;
    }
    if (by)
        *by = b;
    return b != 0;
}

static int link_delay(const struct link *l)
{
    if (l->api_delay_ms >= 0)
        return l->api_delay_ms;
    return is_region_link(l) ? l->policy_delay_ms : 0;
}

static void link_drop(struct link *l, enum drop_reason why)
{
    l->dropped[why]++;
}

static void link_write(struct link *l, const unsigned char *data, uint32_t len)
{
    if (write(l->w->ends[l->to].fd, data, len) != (ssize_t)len) {
        link_drop(l, DROP_WRITE);
        return;
    }
    l->packets++;
    l->bytes += len;
}

static void link_arm(struct link *l, double now)
{
    double wait = l->head->due - now;
    if (wait < 0)
        wait = 0;
    struct timeval tv = {(time_t)(wait / 1000),
                         (suseconds_t)((wait - 1000 * (time_t)(wait / 1000)) * 1000)};
    evtimer_add(l->timer, &tv);
}

/* Sends what is due on l (dropping it all when l is cut), then waits for the next. */
static void on_link_due(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    struct link *l = arg;
    double now = clock_mono_ms();
    int cut = link_cut(l, NULL);
    /* A timer may wake a fraction of a millisecond before the clock reads its deadline. */
    while (l->head && l->head->due <= now + 0.2) {
        struct packet *p = l->head;
        l->head = p->next;
        if (!l->head)
            l->tail = NULL;
        l->queued--;
        if (cut)
            link_drop(l, DROP_CUT);
        else
            link_write(l, p->data, p->len);
        free(p);
    }
    if (l->head)
        link_arm(l, now);
}

static void link_send(struct link *l, const unsigned char *data, uint32_t len)
{
    if (link_cut(l, NULL)) {
        link_drop(l, DROP_CUT);
        return;
    }
    double now = clock_mono_ms();
    int delay = link_delay(l);
    if (delay == 0 && !l->head) {
        l->last_due = now;
        link_write(l, data, len);
        return;
    }
    if (l->queued >= (uint32_t)l->w->queue_max) {
        link_drop(l, DROP_FULL);
        return;
    }
    struct packet *p = xmalloc(sizeof *p + len);
    p->next = NULL;
    p->len = len;
    memcpy(p->data, data, len);
    p->due = now + delay;
    if (p->due < l->last_due)
        p->due = l->last_due;
    l->last_due = p->due;
    l->queued++;
    if (l->tail) {
        l->tail->next = p;
        l->tail = p;
        return;
    }
    l->head = l->tail = p;
    link_arm(l, now);
}

static void link_clear(struct link *l)
{
    while (l->head) {
        struct packet *p = l->head;
        l->head = p->next;
        free(p);
    }
    l->tail = NULL;
    l->queued = 0;
    if (l->timer)
        event_free(l->timer);
    l->timer = NULL;
}

/* ---------------------------------------------------------------- devices */

/* The end an IPv4 destination address belongs to, or -1. */
static int end_of_addr(const struct wire *w, uint32_t dst)
{
    if ((dst & 0xffffff00u) != w->subnet)
        return -1;
    unsigned last = dst & 0xffu;
    if (last == WIRE_HOST_OCTET)
        return w->nregions;
    if (last >= 1 && last <= (unsigned)w->nregions)
        return (int)last - 1;
    return -1;
}

static void on_device(evutil_socket_t fd, short what, void *arg)
{
    (void)what;
    struct end *e = arg;
    struct wire *w = e->w;
    for (int i = 0; i < WIRE_READ_BATCH; i++) {
        ssize_t n = read(fd, w->pkt, sizeof w->pkt);
        if (n < 0) {
            if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
                log_error("wire: reading %s's device: %s", e->name, strerror(errno));
            return;
        }
        if (n < 20 || (w->pkt[0] >> 4) != 4) {
            w->not_ipv4++; /* IPv6 neighbour discovery and the like: not the lab's */
            continue;
        }
        uint32_t dst;
        memcpy(&dst, w->pkt + 16, 4);
        int to = end_of_addr(w, ntohl(dst));
        if (to < 0 || to == e->index) {
            w->unroutable++;
            continue;
        }
        link_send(&w->links[e->index][to], w->pkt, (uint32_t)n);
    }
}

static int open_devices(struct wire *w, char *err, size_t errlen)
{
    for (int i = 0; i < w->nends; i++) {
        struct end *e = &w->ends[i];
        char terr[400];
        e->fd = tun_open(e->netns, w->device, e->addr, 24, terr, sizeof terr);
        if (e->fd < 0) {
            snprintf(err, errlen, "%s%s: %s", e->name, e->netns[0] ? "'s namespace" : "", terr);
            return -1;
        }
        e->ev = event_new(w->base, e->fd, EV_READ | EV_PERSIST, on_device, e);
        event_add(e->ev, NULL);
    }
    return 0;
}

/* ---------------------------------------------------------------- the ticks */

/* Asks faults.link for every pair of regions; logs when its failure starts or changes. */
static void refresh_policy(struct wire *w)
{
    char err[300] = "";
    for (int a = 0; a < w->nregions && !err[0]; a++)
        for (int b = 0; b < w->nregions && !err[0]; b++) {
            if (a == b)
                continue;
            struct link *l = &w->links[a][b];
            int ms = 0, cut = 0;
            if (policy_faults_link(w->lua, w->ends[a].name, w->ends[b].name, &ms, &cut, err,
                                   sizeof err) < 0)
                break;
            l->policy_delay_ms = ms;
            l->policy_cut = cut;
        }
    if (strcmp(err, w->policy_error)) {
        if (err[0])
            log_error("wire: faults.link failed, the links keep their last settings: %s", err);
        else if (w->policy_error[0])
            log_info("wire: faults.link answers again");
        snprintf(w->policy_error, sizeof w->policy_error, "%s", err);
    }
}

static void on_partition(const struct client_result *res, void *arg)
{
    struct end *e = arg;
    struct wire *w = e->w;
    e->poll = NULL;
    const struct json *root = NULL, *p = NULL;
    if (res->status == 200 && (root = json_parse(&w->parser, res->body, res->len)))
        p = json_get(root, "network_partition");
    if (!p || (p->type != JSON_TRUE && p->type != JSON_FALSE)) {
        char why[200];
        if (res->status == 0)
            snprintf(why, sizeof why, "%s", res->error ? res->error : "no answer");
        else
            snprintf(why, sizeof why, "HTTP %d without network_partition", res->status);
        if (strcmp(why, e->partition_error))
            log_warn("wire: %s's /admin/partition: %s (its links keep their last partition "
                     "state)",
                     e->name, why);
        snprintf(e->partition_error, sizeof e->partition_error, "%s", why);
        return;
    }
    e->partition_error[0] = '\0';
    int now = p->type == JSON_TRUE;
    if (now != e->partitioned)
        log_info("wire: %s is %s: its links to the other regions are %s", e->name,
                 now ? "partitioned" : "healed", now ? "cut" : "restored");
    e->partitioned = now;
}

static void poll_partitions(struct wire *w)
{
    for (int i = 0; i < w->nregions; i++) {
        struct end *e = &w->ends[i];
        if (!e->url[0] || e->poll)
            continue;
        char url[ENDPOINT_URL_MAX + 24], auth[300];
        snprintf(url, sizeof url, "%s/admin/partition", e->url);
        const char *headers[2] = {NULL, NULL};
        if (w->admin_token) {
            snprintf(auth, sizeof auth, "Authorization: Bearer %s", w->admin_token);
            headers[0] = auth;
        }
        struct client_call_opts o = {
            .url = url, .headers = headers, .timeout_ms = WIRE_POLL_TIMEOUT_MS};
        e->poll = client_request(w->client, &o, on_partition, e);
    }
}

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    struct wire *w = arg;
    refresh_policy(w);
    poll_partitions(w);
}

/* ---------------------------------------------------------------- the API */

static void put_link(struct buf *b, const struct link *l)
{
    const struct wire *w = l->w;
    unsigned by;
    int cut = link_cut(l, &by);
    buf_puts(b, "{\"from\":");
    buf_json_str(b, w->ends[l->from].name, strlen(w->ends[l->from].name));
    buf_puts(b, ",\"to\":");
    buf_json_str(b, w->ends[l->to].name, strlen(w->ends[l->to].name));
    buf_printf(b, ",\"delay_ms\":%d,\"delay_from\":\"%s\",\"cut\":%s,\"cut_by\":[", link_delay(l),
               l->api_delay_ms >= 0 ? "api"
               : is_region_link(l)  ? "policy"
                                    : "local",
               cut ? "true" : "false");
    const char *sep = "";
    if (by & 1) {
        buf_puts(b, "\"api\"");
        sep = ",";
    }
    if (by & 2) {
        buf_printf(b, "%s\"policy\"", sep);
        sep = ",";
    }
    for (int i = 0; (by & 4) && i < 2; i++) {
        const struct end *e = &w->ends[i ? l->to : l->from];
        if (e->partitioned) {
            buf_printf(b, "%s\"partition:%s\"", sep, e->name);
            sep = ",";
        }
    }
    uint64_t dropped = 0;
    for (int i = 0; i < NDROP; i++)
        dropped += l->dropped[i];
    buf_printf(b,
               "],\"queued\":%" PRIu32 ",\"packets\":%" PRIu64 ",\"bytes\":%" PRIu64
               ",\"dropped\":%" PRIu64,
               l->queued, l->packets, l->bytes, dropped);
    for (int i = 0; i < NDROP; i++)
        buf_printf(b, ",\"dropped_%s\":%" PRIu64, drop_names[i], l->dropped[i]);
    buf_putc(b, '}');
}

static void put_addr(struct buf *b, uint32_t addr)
{
    buf_printf(b, "\"%u.%u.%u.%u\"", addr >> 24, (addr >> 16) & 255, (addr >> 8) & 255, addr & 255);
}

static void h_links(void *role, struct http_request *req)
{
    struct wire *w = role;
    struct buf *b = &w->out;
    buf_puts(b, "{\"subnet\":");
    put_addr(b, w->subnet);
    buf_printf(b, ",\"prefix\":24,\"device\":\"%s\",\"queue_max\":%d,\"ends\":[", w->device,
               w->queue_max);
    for (int i = 0; i < w->nends; i++) {
        const struct end *e = &w->ends[i];
        buf_puts(b, i ? ",{\"name\":" : "{\"name\":");
        buf_json_str(b, e->name, strlen(e->name));
        buf_puts(b, ",\"netns\":");
        if (e->netns[0])
            buf_json_str(b, e->netns, strlen(e->netns));
        else
            buf_puts(b, "null");
        buf_puts(b, ",\"address\":");
        put_addr(b, e->addr);
        if (i < w->nregions) {
            buf_printf(
                b, ",\"partitioned\":%s,\"partition_error\":", e->partitioned ? "true" : "false");
            if (e->partition_error[0])
                buf_json_str(b, e->partition_error, strlen(e->partition_error));
            else
                buf_puts(b, e->url[0] ? "null" : "\"not watched: no REGION_ENDPOINTS entry\"");
        }
        buf_putc(b, '}');
    }
    buf_puts(b, "],\"links\":[");
    int first = 1;
    for (int a = 0; a < w->nends; a++)
        for (int c = 0; c < w->nends; c++) {
            if (a == c)
                continue;
            if (!first)
                buf_putc(b, ',');
            first = 0;
            put_link(b, &w->links[a][c]);
        }
    buf_puts(b, "],\"relays\":[");
    for (int i = 0; i < w->nrelays; i++) {
        struct relay_stats st;
        relay_stats(w->relays[i], &st);
        buf_printf(b,
                   "%s{\"listen\":\"%s\",\"target\":\"%s\",\"accepted\":%" PRIu64
                   ",\"failed\":%" PRIu64 ",\"open\":%d,\"bytes_in\":%" PRIu64
                   ",\"bytes_out\":%" PRIu64 "}",
                   i ? "," : "", relay_listen_addr(w->relays[i]), relay_target(w->relays[i]),
                   st.accepted, st.failed, st.open, st.bytes_in, st.bytes_out);
    }
    buf_printf(b, "],\"unroutable\":%" PRIu64 ",\"not_ipv4\":%" PRIu64 ",\"policy_error\":",
               w->unroutable, w->not_ipv4);
    if (w->policy_error[0])
        buf_json_str(b, w->policy_error, strlen(w->policy_error));
    else
        buf_puts(b, "null");
    buf_putc(b, '}');
    http_respond_json(req, 200, b->data, b->len);
}

/* The end named by member key of root. @return its index, or -1 after answering 400. */
static int end_field(struct wire *w, struct http_request *req, const struct json *root,
                     const char *key)
{
    const struct json *v = json_get(root, key);
    if (!v || v->type != JSON_STR) {
        http_respond_error(req, 400, "bad_field", "%s must be a region name or \"host\"", key);
        return -1;
    }
    for (int i = 0; i < w->nends; i++)
        if (!strcmp(w->ends[i].name, v->u.s))
            return i;
    struct buf names = {0};
    for (int i = 0; i < w->nends; i++)
        buf_printf(&names, "%s%s", i ? ", " : "", w->ends[i].name);
    http_respond_error(req, 400, "bad_field", "%s: no end named '%.64s' (ends: %s)", key, v->u.s,
                       names.data);
    buf_free(&names);
    return -1;
}

/*
 * POST /admin/links {"from","to","delay_ms": n | null,"cut": bool,"both_ways": bool}: sets
 * the link from -> to (and to -> from unless both_ways is false). delay_ms null gives the
 * delay back to the policy. Checks everything before changing anything.
 */
static void h_links_set(void *role, struct http_request *req)
{
    struct wire *w = role;
    const struct json *root = reqbody_object(&w->parser, req);
    if (!root)
        return;
    int from = end_field(w, req, root, "from");
    if (from < 0)
        return;
    int to = end_field(w, req, root, "to");
    if (to < 0)
        return;
    if (from == to) {
        http_respond_error(req, 400, "bad_field", "from and to must be two different ends");
        return;
    }
    const struct json *d = json_get(root, "delay_ms"), *c = json_get(root, "cut"),
                      *bw = json_get(root, "both_ways");
    if (!d && !c) {
        http_respond_error(req, 400, "bad_field", "give delay_ms, cut or both");
        return;
    }
    if (d && d->type != JSON_NULL && (d->type != JSON_INT || d->u.i < 0 || d->u.i > 600000)) {
        http_respond_error(req, 400, "bad_field",
                           "delay_ms must be an integer from 0 to 600000, or null for the "
                           "policy's");
        return;
    }
    if (c && c->type != JSON_TRUE && c->type != JSON_FALSE) {
        http_respond_error(req, 400, "bad_field", "cut must be true or false");
        return;
    }
    if (bw && bw->type != JSON_TRUE && bw->type != JSON_FALSE) {
        http_respond_error(req, 400, "bad_field", "both_ways must be true or false");
        return;
    }
    int both = !bw || bw->type == JSON_TRUE;
    struct link *ls[2] = {&w->links[from][to], both ? &w->links[to][from] : NULL};
    struct buf *b = &w->out;
    buf_puts(b, "{\"links\":[");
    for (int i = 0; i < 2 && ls[i]; i++) {
        if (d)
            ls[i]->api_delay_ms = d->type == JSON_NULL ? -1 : (int)d->u.i;
        if (c)
            ls[i]->api_cut = c->type == JSON_TRUE;
        log_info("wire: link %s -> %s: delay %d ms%s", w->ends[ls[i]->from].name,
                 w->ends[ls[i]->to].name, link_delay(ls[i]), link_cut(ls[i], NULL) ? ", cut" : "");
        if (i)
            buf_putc(b, ',');
        put_link(b, ls[i]);
    }
    buf_puts(b, "]}");
    http_respond_json(req, 200, b->data, b->len);
}

static void h_health(void *role, struct http_request *req)
{
    struct wire *w = role;
    buf_printf(&w->out, "{\"status\":\"ok\",\"role\":\"wire\",\"regions\":%d}", w->nregions);
    http_respond_json(req, 200, w->out.data, w->out.len);
}

static void h_metrics(void *role, struct http_request *req)
{
    struct wire *w = role;
    http_respond_metrics(req, w->metrics, &w->out);
}

static void h_reload(void *role, struct http_request *req)
{
    struct wire *w = role;
    reload_handle(w->reload, req);
    refresh_policy(w); /* the new file's matrix, now rather than at the next tick */
}

static const struct route routes[] = {{ROUTE_GET, "/health", 0, h_health, NULL, NULL},
                                      {ROUTE_GET, "/links", 0, h_links, NULL, NULL},
                                      {ROUTE_GET, "/admin/links", 0, h_links, NULL, NULL},
                                      {ROUTE_POST, "/admin/links", 0, h_links_set, NULL, NULL},
                                      {ROUTE_GET, "/metrics", 0, h_metrics, NULL, NULL},
                                      {ROUTE_POST, "/admin/reload", 0, h_reload, NULL, NULL},
                                      {0, NULL, 0, NULL, NULL, NULL}};

static void handle(struct http_request *req, void *arg)
{
    struct wire *w = arg;
    buf_reset(&w->out);
    if (req->path_len >= 7 && memcmp(req->path, "/admin/", 7) == 0 &&
        auth_refuse_unauthorized(req, w->admin_token))
        return;
    if (req->span)
        route_trace(routes, req);
    route_serve(routes, w, req);
}

/* ---------------------------------------------------------------- metrics */

static void collect(void *arg)
{
    struct wire *w = arg;
    for (int a = 0; a < w->nends; a++)
        for (int c = 0; c < w->nends; c++) {
            struct link *l = &w->links[a][c];
            if (a == c)
                continue;
            metric_set(l->m_packets, (double)l->packets);
            metric_set(l->m_bytes, (double)l->bytes);
            for (int i = 0; i < NDROP; i++)
                metric_set(l->m_dropped[i], (double)l->dropped[i]);
            metric_set(l->m_delay, link_delay(l) / 1000.0);
            metric_set(l->m_cut, link_cut(l, NULL));
            metric_set(l->m_queued, l->queued);
        }
    metric_set(w->m_unroutable, (double)w->unroutable);
    metric_set(w->m_not_ipv4, (double)w->not_ipv4);
}

static void register_metrics(struct wire *w)
{
    struct metrics *m = w->metrics;
    struct metric *packets =
        metrics_add(m, METRIC_COUNTER, "counterd_wire_packets_total",
                    "Packets the wire delivered on each link", "from,to", NULL, 0);
    struct metric *bytes = metrics_add(m, METRIC_COUNTER, "counterd_wire_bytes_total",
                                       "Bytes the wire delivered on each link", "from,to", NULL, 0);
    struct metric *dropped =
        metrics_add(m, METRIC_COUNTER, "counterd_wire_dropped_total",
                    "Packets the wire dropped on each link: cut, queue_full, write_failed",
                    "from,to,reason", NULL, 0);
    struct metric *delay = metrics_add(m, METRIC_GAUGE, "counterd_wire_delay_seconds",
                                       "One-way delay of each link", "from,to", NULL, 0);
    struct metric *cut =
        metrics_add(m, METRIC_GAUGE, "counterd_wire_link_cut",
                    "Whether the link drops everything (1) or not (0)", "from,to", NULL, 0);
    struct metric *queued = metrics_add(m, METRIC_GAUGE, "counterd_wire_queued_packets",
                                        "Packets waiting on each link", "from,to", NULL, 0);
    for (int a = 0; a < w->nends; a++)
        for (int c = 0; c < w->nends; c++) {
            struct link *l = &w->links[a][c];
            if (a == c)
                continue;
            const char *ft[2] = {w->ends[a].name, w->ends[c].name};
            l->m_packets = metric_series(packets, ft);
            l->m_bytes = metric_series(bytes, ft);
            for (int i = 0; i < NDROP; i++) {
                const char *ftr[3] = {ft[0], ft[1], drop_names[i]};
                l->m_dropped[i] = metric_series(dropped, ftr);
            }
            l->m_delay = metric_series(delay, ft);
            l->m_cut = metric_series(cut, ft);
            l->m_queued = metric_series(queued, ft);
        }
    w->m_unroutable = metric_only(
        metrics_add(m, METRIC_COUNTER, "counterd_wire_unroutable_total",
                    "IPv4 packets for no end of the wire's subnet (dropped)", NULL, NULL, 0));
    w->m_not_ipv4 = metric_only(metrics_add(
        m, METRIC_COUNTER, "counterd_wire_not_ipv4_total",
        "Packets that were not IPv4 (IPv6 neighbour discovery; dropped)", NULL, NULL, 0));
    metrics_add_collector(m, collect, w, NULL);
}

/* ---------------------------------------------------------------- set-up */

/* Calls fn(w, left, right) for each "left=right" item of the comma list s.
 * @return 0, or -1 with a sentence in err naming var. */
static int each_pair(struct wire *w, const char *var, const char *s,
                     int (*fn)(struct wire *, const char *, const char *, char *, size_t),
                     char *err, size_t errlen)
{
    char item[600];
    while (*s) {
        size_t n = strcspn(s, ",");
        if (n >= sizeof item) {
            snprintf(err, errlen, "%s: an item is longer than %zu bytes", var, sizeof item - 1);
            return -1;
        }
        memcpy(item, s, n);
        item[n] = '\0';
        s += n + (s[n] == ',');
        char *l = item + strspn(item, " \t"), *eq = strchr(l, '=');
        if (!*l)
            continue;
        if (!eq) {
            snprintf(err, errlen, "%s: '%s' must be written left=right", var, l);
            return -1;
        }
        *eq = '\0';
        char *r = eq + 1;
        r[strcspn(r, " \t")] = '\0';
        if (fn(w, l, r, err, errlen) < 0)
            return -1;
    }
    return 0;
}

static int add_region(struct wire *w, const char *name, const char *netns, char *err, size_t errlen)
{
    if (w->nregions >= WIRE_MAX_REGIONS) {
        snprintf(err, errlen, "WIRE_NETNS: at most %d regions", WIRE_MAX_REGIONS);
        return -1;
    }
    if (!endpoint_name_valid(name, strlen(name)) || strlen(name) >= sizeof w->ends[0].name ||
        !strcmp(name, "host")) {
        snprintf(err, errlen,
                 "WIRE_NETNS: '%s' is not a region name (1-63 bytes of "
                 "[A-Za-z0-9_.:-], not \"host\")",
                 name);
        return -1;
    }
    if (!*netns || strlen(netns) >= sizeof w->ends[0].netns || strchr(netns, '/')) {
        snprintf(err, errlen, "WIRE_NETNS: '%s' is not a namespace name (1-63 bytes, no '/')",
                 netns);
        return -1;
    }
    struct end *e = &w->ends[w->nregions];
    snprintf(e->name, sizeof e->name, "%s", name);
    snprintf(e->netns, sizeof e->netns, "%s", netns);
    e->addr = w->subnet | (uint32_t)(w->nregions + 1);
    w->nregions++;
    return 0;
}

static int add_relay(struct wire *w, const char *listen, const char *target, char *err,
                     size_t errlen)
{
    if (w->nrelays >= WIRE_MAX_RELAYS) {
        snprintf(err, errlen, "WIRE_RELAY: at most %d relays", WIRE_MAX_RELAYS);
        return -1;
    }
    struct relay *r = relay_new(w->base, listen, target, err, errlen);
    if (!r)
        return -1;
    w->relays[w->nrelays++] = r;
    return 0;
}

/* The ends, their addresses and the URLs of their region nodes. @return 0, or -1 (err). */
static int read_config(struct wire *w, const struct config *cfg, char *err, size_t errlen)
{
    struct in_addr a;
    char sub[40];
    snprintf(sub, sizeof sub, "%s.0", cfg->wire_subnet);
    if (inet_pton(AF_INET, sub, &a) != 1) {
        snprintf(err, errlen,
                 "--wire-subnet (WIRE_SUBNET) must be three octets such as "
                 "10.31.64, not '%s'",
                 cfg->wire_subnet);
        return -1;
    }
    w->subnet = ntohl(a.s_addr);
    snprintf(w->device, sizeof w->device, "%s", cfg->wire_device);
    w->queue_max = cfg->wire_queue;
    if (each_pair(w, "WIRE_NETNS", cfg->wire_netns, add_region, err, errlen) < 0)
        return -1;
    if (w->nregions < 2) {
        snprintf(err, errlen,
                 "--wire-netns (WIRE_NETNS) must name at least two regions as "
                 "region=namespace,...");
        return -1;
    }
    w->nends = w->nregions + 1;
    struct end *h = &w->ends[w->nregions];
    snprintf(h->name, sizeof h->name, "host");
    h->addr = w->subnet | WIRE_HOST_OCTET;
    for (int i = 0; i < w->nends; i++) {
        w->ends[i].w = w;
        w->ends[i].index = i;
        w->ends[i].fd = -1;
        for (int j = 0; j < w->nends; j++)
            w->links[i][j] = (struct link){.w = w, .from = i, .to = j, .api_delay_ms = -1};
    }
    if (cfg->region_endpoints[0]) {
        struct endpoint eps[WIRE_MAX_REGIONS];
        int n = endpoint_list_parse(cfg->region_endpoints_from, cfg->region_endpoints, eps,
                                    WIRE_MAX_REGIONS, err, errlen);
        if (n < 0)
            return -1;
        for (int k = 0; k < n; k++)
            for (int i = 0; i < w->nregions; i++)
                if (!strcmp(eps[k].name, w->ends[i].name))
                    snprintf(w->ends[i].url, sizeof w->ends[i].url, "%s", eps[k].url);
    }
    for (int i = 0; i < w->nregions; i++)
        if (!w->ends[i].url[0])
            log_warn("wire: no REGION_ENDPOINTS entry named %s: its partition switch is not "
                     "watched",
                     w->ends[i].name);
    return 0;
}

static struct role_parts parts_of(struct wire *w)
{
    return (struct role_parts){&w->metrics, &w->otlp,   &w->admin_token, &w->client,
                               &w->lua,     &w->reload, &w->server};
}

struct wire *wire_new(struct event_base *base, const struct config *cfg, char *err, size_t errlen)
{
    struct wire *w = xcalloc(1, sizeof *w);
    struct role_parts parts = parts_of(w);
    w->base = base;
    json_parser_init(&w->parser);
    struct host_info li = {"wire", "wire", "", cfg->policy_budget_ms};
    if (role_start(&parts, base, cfg, &li, ROLE_LUA_IO, err, errlen) < 0)
        goto fail;
    if (read_config(w, cfg, err, errlen) < 0)
        goto fail;
    char lerr[512];
    if (host_load_policy(w->lua, "faults", lerr, sizeof lerr) < 0)
        log_error("wire: faults policy not loaded, the links between regions have no delay: %s",
                  lerr);
    for (int a = 0; a < w->nends; a++)
        for (int c = 0; c < w->nends; c++)
            w->links[a][c].timer = evtimer_new(base, on_link_due, &w->links[a][c]);
    if (open_devices(w, err, errlen) < 0)
        goto fail;
    if (each_pair(w, "WIRE_RELAY", cfg->wire_relay, add_relay, err, errlen) < 0)
        goto fail;
    register_metrics(w);
    refresh_policy(w);
    w->tick = event_new(base, -1, EV_PERSIST, on_tick, w);
    struct timeval tv = {0, WIRE_TICK_MS * 1000};
    event_add(w->tick, &tv);
    poll_partitions(w);
    struct http_server_opts so = role_server_opts(cfg);
    if (role_listen(&parts, base, cfg, &so, handle, w, err, errlen) < 0)
        goto fail;
    log_info("wire listening on %s:%d: %d regions in %u.%u.%u.0/24, %d relay(s)", cfg->bind,
             http_server_port(w->server), w->nregions, w->subnet >> 24, (w->subnet >> 16) & 255,
             (w->subnet >> 8) & 255, w->nrelays);
    return w;
fail:
    wire_free(w);
    return NULL;
}

void wire_free(struct wire *w)
{
    if (!w)
        return;
    if (w->tick)
        event_free(w->tick);
    for (int i = 0; i < w->nends; i++) {
        struct end *e = &w->ends[i];
        if (e->poll)
            client_cancel(e->poll);
        if (e->ev)
            event_free(e->ev);
        if (e->fd >= 0)
            close(e->fd);
    }
    for (int a = 0; a < w->nends; a++)
        for (int c = 0; c < w->nends; c++)
            link_clear(&w->links[a][c]);
    for (int i = 0; i < w->nrelays; i++)
        relay_free(w->relays[i]);
    struct role_parts parts = parts_of(w);
    role_stop(&parts);
    json_parser_free(&w->parser);
    buf_free(&w->out);
    free(w);
}
