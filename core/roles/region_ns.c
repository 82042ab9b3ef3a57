/*
 * region_ns.c - namespaces on a region node (API.md, "Namespaces"): the register's
 * endpoints, its journey inside every /sync message, the deletion of a deleted
 * namespace's counters, and the expiry of idle counters of namespaces with a ttl.
 *
 * The register is saved before a change is answered; a change that cannot be saved is put
 * back and refused. The background work (purge, expiry) is bounded per tick and logs
 * each deletion like a client's, before anything else can see it; it never deletes a
 * counter without room in the log.
 */
#include "region_internal.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "../base/clock.h"
#include "../base/log.h"
#include "../base/mem.h"
#include "../net/http.h"
#include "../obs/metrics.h"
#include "../store/nsreg.h"
#include "config.h"
#include "reqbody.h"

#define NS_TICK_MS 250
#define PURGE_SLICE 65536  /* ids a tick of the purge looks at */
#define EXPIRE_SLICE 65536 /* changes a tick of expiry looks at */
#define SEQT_MAX 4096      /* samples of (seq, time) kept for expiry */

struct seq_time {
    uint64_t seq;
    double ms; /* monotonic */
};

/* ---------------------------------------------------------------- set-up */

static double window_of(void *arg, const char *key, size_t len)
{
    const struct nsreg_entry *e = nsreg_of_key(((struct region *)arg)->nsreg, key, len);
    return e ? (double)e->window_s : DEDUP_WINDOW_S;
}

int region__ns_open(struct region *rg, const struct config *cfg, char *err, size_t errlen)
{
    char path[4200];
    if (cfg->data_dir[0])
        snprintf(path, sizeof path, "%s/namespaces.json", cfg->data_dir);
    rg->nsreg = nsreg_new(cfg->data_dir[0] ? path : NULL);
    if (nsreg_load(rg->nsreg, err, errlen) < 0)
        return -1;
    dedup_set_window_fn(rg->dedup, window_of, rg);
    rg->purging = 1; /* a deletion may have been taken before a crash, not carried out */
    return 0;
}

static void on_ns_timer(evutil_socket_t fd, short what, void *arg);
static void register_changed(struct region *rg);

void region__ns_start(struct region *rg, struct event_base *base)
{
    rg->ns_timer = event_new(base, -1, EV_PERSIST, on_ns_timer, rg);
    struct timeval tv = {0, NS_TICK_MS * 1000};
    event_add(rg->ns_timer, &tv);
    register_changed(rg);
}

void region__ns_free(struct region *rg)
{
    if (rg->ns_timer)
        event_free(rg->ns_timer);
    nsreg_free(rg->nsreg);
    free(rg->seqt);
}

static double ns_count_gauge(void *arg)
{
    struct nsreg *r = ((struct region *)arg)->nsreg;
    size_t n = 0;
    for (size_t i = 0; i < nsreg_count(r); i++)
        n += !nsreg_at(r, i)->deleted;
    return (double)n;
}

/* The family called name, registered here unless another file did. */
static struct metric *family(struct region *rg, enum metric_type type, const char *name,
                             const char *help, const char *labels)
{
    struct metric *m = metrics_find(rg->metrics, name);
    return m ? m : metrics_add(rg->metrics, type, name, help, labels, NULL, 0);
}

void region__ns_metrics(struct region *rg)
{
    struct metric *n = family(rg, METRIC_GAUGE, "counterd_namespaces",
                              "Namespaces this node knows (not deleted).", "");
    metric_set_fn(metric_only(n), ns_count_gauge, rg);
    rg->m_ns_version =
        family(rg, METRIC_GAUGE, "counterd_namespace_version",
               "The version of each namespace's configuration on this node.", "namespace");
    metric_limit(rg->m_ns_version, 1100, 0);
    rg->m_clears = metric_only(family(rg, METRIC_COUNTER, "counterd_counter_clears_total",
                                      "Counters cleared on this node (ClearCount).", ""));
    struct metric *d = family(rg, METRIC_COUNTER, "counterd_counter_deletes_total",
                              "Counters deleted on this node, by cause.", "cause");
    const char *del[] = {"delete"}, *exp[] = {"expire"}, *ns[] = {"namespace"};
    rg->m_del_delete = metric_series(d, del);
    rg->m_del_expire = metric_series(d, exp);
    rg->m_del_ns = metric_series(d, ns);
}

/* After any change of the register: versions, the shortest ttl, walks to do again. */
static void register_changed(struct region *rg)
{
    int64_t min_ttl = 0;
    for (size_t i = 0; i < nsreg_count(rg->nsreg); i++) {
        const struct nsreg_entry *e = nsreg_at(rg->nsreg, i);
        const char *v[] = {e->name};
        if (rg->m_ns_version)
            metric_set(metric_series(rg->m_ns_version, v), (double)e->version);
        if (e->deleted)
            rg->purging = 1;
        else if (e->ttl_s > 0 && (!min_ttl || e->ttl_s < min_ttl))
            min_ttl = e->ttl_s;
    }
    rg->min_ttl_s = min_ttl;
    rg->expire_seq = 0; /* a ttl may be new: every counter is looked at again */
    rg->expire_resume = 0;
    if (rg->purging)
        rg->purge_next = 0;
}

/* ---------------------------------------------------------------- endpoints */

size_t region__ns_key(const char *ns, size_t nslen, const char *name, size_t nlen, char *out)
{
    if (nslen == 7 && !memcmp(ns, NSREG_DEFAULT, 7)) {
        memcpy(out, name, nlen);
        out[nlen] = '\0';
        return nlen;
    }
    memcpy(out, ns, nslen);
    out[nslen] = '/';
    memcpy(out + nslen + 1, name, nlen);
    out[nslen + 1 + nlen] = '\0';
    return nslen + 1 + nlen;
}

static int ns_name_ok(struct http_request *req, const char *ns, size_t len)
{
    if (gstore_ns_name_valid(ns, len))
        return 1;
    http_respond_error(req, 400, "bad_name", "namespace names are 1-%d bytes of [A-Za-z0-9_.-]",
                       GSTORE_NS_MAX);
    return 0;
}

const struct nsreg_entry *region__ns_for_op(struct region *rg, struct http_request *req,
                                            const char *ns, size_t len)
{
    if (!ns_name_ok(req, ns, len))
        return NULL;
    const struct nsreg_entry *e = nsreg_get(rg->nsreg, ns, len);
    if (!e || e->deleted) {
        http_respond_error(req, 404, "not_found", "namespace %.*s does not exist", (int)len, ns);
        return NULL;
    }
    if (e->type == NSREG_STRONG) {
        http_respond_error(req, 409, "wrong_service",
                           "namespace %.*s is strong: its counters live on the strong counter; "
                           "send it to the gateway",
                           (int)len, ns);
        return NULL;
    }
    return e;
}

/* {"namespace":..,<fields>,"region","node_id"} of one entry. */
static void put_ns(struct region *rg, struct buf *b, const struct nsreg_entry *e)
{
    buf_puts(b, "{\"namespace\":");
    buf_json_str(b, e->name, strlen(e->name));
    buf_putc(b, ',');
    nsreg_put_fields(b, e);
    buf_putc(b, ',');
    region__put_identity(rg, b);
    buf_putc(b, '}');
}

/* An integer field of a PUT in [lo, hi] into *out (absent: untouched). @return 0, or -1
 * after answering 400. */
static int put_int_field(struct http_request *req, const struct json *root, const char *field,
                         int64_t lo, int64_t hi, int64_t *out)
{
    const struct json *v = json_get(root, field);
    if (!v)
        return 0;
    if (v->type != JSON_INT || v->u.i < lo || v->u.i > hi) {
        http_respond_error(req, 400, "bad_field",
                           "%s must be an integer from %" PRId64 " to %" PRId64, field, lo, hi);
        return -1;
    }
    *out = v->u.i;
    return 0;
}

/* Saves the register after e's change (old: what it was, NULL: new). @return 0, or -1 after
 * putting it back and answering 503. */
static int save_or_undo(struct region *rg, struct http_request *req, const char *name,
                        const struct nsreg_entry *old)
{
    char err[512];
    if (nsreg_save(rg->nsreg, err, sizeof err) == 0)
        return 0;
    nsreg_restore(rg->nsreg, name, old);
    log_error("namespace %s not changed: %s", name, err);
    http_respond_error(req, 503, "unavailable",
                       "the namespace register cannot be saved (%s); "
                       "nothing was changed",
                       err);
    return -1;
}

/* The change e (a new version by this node) applied, saved and answered. */
static void ns_commit(struct region *rg, struct http_request *req, struct nsreg_entry *e)
{
    const struct nsreg_entry *have = nsreg_get(rg->nsreg, e->name, strlen(e->name));
    struct nsreg_entry old;
    if (have)
        old = *have;
    e->version = nsreg_max_version(rg->nsreg) + 1;
    snprintf(e->updated_by, sizeof e->updated_by, "%s", rg->node_id);
    e->updated_at = clock_unix_s();
    if (nsreg_merge(rg->nsreg, e) < 0) {
        http_respond_error(req, 507, "too_many_namespaces", "the register holds %d namespaces",
                           NSREG_MAX);
        return;
    }
    if (save_or_undo(rg, req, e->name, have ? &old : NULL) < 0)
        return;
    log_info("namespace %s %s: %s, ttl %" PRId64 " s, window %" PRId64 " s, version %" PRIu64,
             e->name, e->deleted ? "deleted" : "set", nsreg_type_name(e->type), e->ttl_s,
             e->window_s, e->version);
    register_changed(rg);
    put_ns(rg, &rg->out, nsreg_get(rg->nsreg, e->name, strlen(e->name)));
    region__respond_out(req, rg, 200);
}

static void h_ns_put(struct region *rg, struct http_request *req, const char *ns, size_t len)
{
    const struct json *root = reqbody_object(&rg->parser, req);
    if (!root)
        return;
    if (root->type != JSON_OBJ) {
        http_respond_error(req, 400, "bad_json", "the body must be a JSON object");
        return;
    }
    const struct nsreg_entry *have = nsreg_get(rg->nsreg, ns, len);
    struct nsreg_entry e = {.type = NSREG_EVENTUAL, .window_s = NSREG_WINDOW_DEFAULT};
    if (have && !have->deleted)
        e = *have;
    memcpy(e.name, ns, len);
    e.name[len] = '\0';
    e.deleted = 0;
    const struct json *t = json_get(root, "type");
    int type = e.type;
    if (t && (t->type != JSON_STR || (type = nsreg_type_parse(t->u.s, t->len)) < 0)) {
        http_respond_error(req, 400, "bad_field",
                           "type must be \"regional\", \"eventual\" or \"strong\"");
        return;
    }
    if (put_int_field(req, root, "ttl_seconds", 0, NSREG_TTL_MAX, &e.ttl_s) < 0 ||
        put_int_field(req, root, "idempotency_window_seconds", 1, NSREG_WINDOW_MAX, &e.window_s) <
            0)
        return;
    if (type != e.type && have && !have->deleted) {
        http_respond_error(req, 409, "type_change",
                           "namespace %s is %s: its type cannot change (delete it and create it "
                           "again)",
                           e.name, nsreg_type_name(e.type));
        return;
    }
    e.type = type;
    ns_commit(rg, req, &e);
}

static void h_ns_delete(struct region *rg, struct http_request *req, const char *ns, size_t len)
{
    const struct nsreg_entry *have = nsreg_get(rg->nsreg, ns, len);
    if (len == 7 && !memcmp(ns, NSREG_DEFAULT, 7)) {
        http_respond_error(req, 409, "protected", "namespace default cannot be deleted");
        return;
    }
    if (!have || have->deleted) {
        http_respond_error(req, 404, "not_found", "namespace %.*s does not exist", (int)len, ns);
        return;
    }
    struct nsreg_entry e = *have;
    e.deleted = 1;
    ns_commit(rg, req, &e);
}

static void h_ns_list(struct region *rg, struct http_request *req)
{
    struct buf *b = &rg->out;
    buf_puts(b, "{\"namespaces\":[");
    int first = 1;
    for (size_t i = 0; i < nsreg_count(rg->nsreg); i++) {
        const struct nsreg_entry *e = nsreg_at(rg->nsreg, i);
        if (e->deleted)
            continue;
        if (!first)
            buf_putc(b, ',');
        first = 0;
        put_ns(rg, b, e);
    }
    buf_puts(b, "],");
    region__put_identity(rg, b);
    buf_putc(b, '}');
    region__respond_out(req, rg, 200);
}

/* /v1/namespaces and /v1/namespaces/{ns}, every method. */
void region__h_namespaces(void *role, struct http_request *req)
{
    struct region *rg = role;
    const char *p = req->path + 14; /* after "/v1/namespaces" */
    size_t n = req->path_len - 14;
    int get = req->method == HTTP_M_GET || req->method == HTTP_M_HEAD;
    if (n == 0 || (n == 1 && *p == '/')) {
        if (get)
            h_ns_list(rg, req);
        else
            http_respond_error(req, 405, "method_not_allowed", "use GET on /v1/namespaces");
        return;
    }
    if (*p != '/') {
        http_respond_error(req, 404, "not_found", "no such endpoint");
        return;
    }
    p++;
    n--;
    if (!ns_name_ok(req, p, n))
        return;
    if (req->method == HTTP_M_PUT || req->method == HTTP_M_POST) {
        h_ns_put(rg, req, p, n);
    } else if (req->method == HTTP_M_DELETE) {
        h_ns_delete(rg, req, p, n);
    } else if (get) {
        const struct nsreg_entry *e = nsreg_get(rg->nsreg, p, n);
        if (!e || e->deleted) {
            http_respond_error(req, 404, "not_found", "namespace %.*s does not exist", (int)n, p);
            return;
        }
        put_ns(rg, &rg->out, e);
        region__respond_out(req, rg, 200);
    } else {
        http_respond_error(req, 405, "method_not_allowed",
                           "use GET, PUT or DELETE on /v1/namespaces/{namespace}");
    }
}

/* ---------------------------------------------------------------- replication hooks */

int region__ns_replicated(void *arg, const char *key, size_t len)
{
    struct region *rg = arg;
    if (!memchr(key, '/', len))
        return 1;
    const struct nsreg_entry *e = nsreg_of_key(rg->nsreg, key, len);
    return !(e && !e->deleted && e->type == NSREG_REGIONAL);
}

/* Only a register that says more than a new node knows travels: a converged round of a
 * store without namespaces stays as small as it was. */
void region__ns_put_ext(void *arg, struct buf *b)
{
    struct region *rg = arg;
    if (!nsreg_nontrivial(rg->nsreg))
        return;
    buf_puts(b, ",\"namespaces\":");
    nsreg_encode(rg->nsreg, b);
}

void region__ns_take_ext(void *arg, const struct json *msg)
{
    struct region *rg = arg;
    const struct json *t = json_get(msg, "namespaces");
    if (!t)
        return;
    int bad = 0;
    int taken = nsreg_decode(rg->nsreg, t, &bad);
    if (bad)
        log_warn("a peer sent %d namespace entr%s that are not valid: left out", bad,
                 bad == 1 ? "y" : "ies");
    if (!taken)
        return;
    char err[512];
    if (nsreg_save(rg->nsreg, err, sizeof err) < 0)
        log_error("the namespace register learned from a peer is not saved (%s): it is held in "
                  "memory and saved at its next change",
                  err);
    log_info("namespace register: %d entr%s taken from a peer (highest version now %" PRIu64 ")",
             taken, taken == 1 ? "y" : "ies", nsreg_max_version(rg->nsreg));
    register_changed(rg);
}

/* A merge changed counter id: a counter of a deleted namespace that came back (an increment
 * the deletion had not observed, or a peer that had not heard of it) is deleted again. */
void region__ns_changed(struct region *rg, uint32_t id)
{
    size_t len;
    const char *key = gstore_counter_name(gstore_counter(rg->store, id), &len);
    if (!memchr(key, '/', len))
        return;
    const struct nsreg_entry *e = nsreg_of_key(rg->nsreg, key, len);
    if (e && e->deleted && !rg->purging) {
        rg->purging = 1;
        rg->purge_next = 0;
    }
}

/* ---------------------------------------------------------------- background deletions */

/* Deletes counter id (logged first); cause counts it. @return 0, or -1 when the log has no
 * room (nothing applied: try again later). */
static int delete_counter(struct region *rg, uint32_t id, struct metric_series *cause)
{
    size_t len;
    gstore_counter_name(gstore_counter(rg->store, id), &len);
    if (rg->wal && wal_reserve(rg->wal, 3 * region__incr_record_max(rg, id, len, 0)) < 0)
        return -1;
    if (gstore_delete(rg->store, id) != 0)
        return -1;
    region__persist_changed(rg, id);
    region__top_forget(rg, id);
    metric_add(cause, 1);
    return 0;
}

/* One slice of the walk deleting the counters of deleted namespaces. */
static void purge_slice(struct region *rg)
{
    uint32_t n = gstore_count(rg->store), end = rg->purge_next + PURGE_SLICE, done = 0;
    if (end > n)
        end = n;
    uint32_t id = rg->purge_next;
    for (; id < end; id++) {
        if (!gstore_exists(rg->store, id))
            continue;
        size_t len;
        const char *key = gstore_counter_name(gstore_counter(rg->store, id), &len);
        if (!memchr(key, '/', len))
            continue;
        const struct nsreg_entry *e = nsreg_of_key(rg->nsreg, key, len);
        if (!e || !e->deleted || gstore_dead(rg->store, id))
            continue;
        if (delete_counter(rg, id, rg->m_del_ns) < 0)
            break; /* no room in the log: this id again next tick */
        done++;
    }
    rg->purge_next = id;
    if (done)
        log_info("deleted %" PRIu32 " counter(s) of deleted namespaces", done);
    if (id >= n)
        rg->purging = 0;
}

/* Records when the store's seq reached its present value; halves the resolution when full
 * (a later sample stands for a dropped one: expiry never comes early). */
static void sample_seq(struct region *rg, double now)
{
    uint64_t seq = gstore_seq(rg->store);
    if (rg->nseqt && rg->seqt[rg->nseqt - 1].seq == seq)
        return;
    if (!rg->seqt)
        rg->seqt = xmalloc(SEQT_MAX * sizeof *rg->seqt);
    if (rg->nseqt == SEQT_MAX) {
        for (size_t i = 0; i < SEQT_MAX / 2; i++)
            rg->seqt[i] = rg->seqt[2 * i + 1];
        rg->nseqt = SEQT_MAX / 2;
    }
    rg->seqt[rg->nseqt++] = (struct seq_time){seq, now};
}

/* The latest time a change of seq may have happened: the first sample at or after it
 * (none yet: now). */
static double change_time(struct region *rg, uint64_t seq, double now)
{
    size_t lo = 0, hi = rg->nseqt;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (rg->seqt[mid].seq < seq)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < rg->nseqt ? rg->seqt[lo].ms : now;
}

/*
 * One slice of expiry: the change list from the oldest change expiry has not passed yet
 * (or where the last slice stopped). Counters of namespaces without a ttl are passed; a
 * counter idle longer than its namespace's ttl is deleted; one of a longer ttl is held
 * (the cursor stays before it, a later slice goes on past it); the walk stops at the first
 * change younger than the shortest ttl (every later one is younger still), and the next
 * slice starts from the cursor again.
 */
static void expire_slice(struct region *rg, double now)
{
    if (!rg->min_ttl_s)
        return;
    uint64_t from = rg->expire_resume > rg->expire_seq ? rg->expire_resume : rg->expire_seq;
    uint32_t id = gstore_changed_after(rg->store, from), expired = 0;
    int held = from != rg->expire_seq; /* a counter not expired yet lies behind the cursor */
    rg->expire_resume = 0;
    for (unsigned walked = 0; id != GSTORE_NONE; walked++) {
        const struct gcounter *c = gstore_counter(rg->store, id);
        uint64_t mseq = gstore_counter_mseq(c);
        if (walked == EXPIRE_SLICE) {
            rg->expire_resume = mseq - 1; /* this one first, next tick */
            break;
        }
        double idle_ms = now - change_time(rg, mseq, now);
        if (idle_ms < (double)rg->min_ttl_s * 1000)
            break;
        uint32_t next = gstore_changed_next(rg->store, id);
        size_t len;
        const char *key = gstore_counter_name(c, &len);
        const struct nsreg_entry *e =
            memchr(key, '/', len) ? nsreg_of_key(rg->nsreg, key, len) : nsreg_at(rg->nsreg, 0);
        if (e && !e->deleted && e->ttl_s > 0 && !gstore_dead(rg->store, id)) {
            if (idle_ms < (double)e->ttl_s * 1000)
                held = 1;
            else if (delete_counter(rg, id, rg->m_del_expire) < 0)
                break; /* no room in the log: from the cursor again next tick */
            else
                expired++;
        }
        if (!held)
            rg->expire_seq = mseq;
        id = next;
    }
    if (expired)
        log_info("expired %" PRIu32 " counter(s) idle longer than their namespace's ttl", expired);
}

static void on_ns_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct region *rg = arg;
    double now = clock_mono_ms();
    sample_seq(rg, now);
    if (rg->wal && wal_failed(rg->wal))
        return;
    if (rg->purging)
        purge_slice(rg);
    expire_slice(rg, now);
}
