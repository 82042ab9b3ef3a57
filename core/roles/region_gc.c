/*
 * region_gc.c - the tombstone GC of a region node (README "Counter lifecycle"; gstore.h
 * "Lifecycle"): a dead counter whose change every peer has held for the grace
 * (--tombstone-grace-s) is sealed; a sealed one whose seal every peer has held for the
 * grace is dropped, and its memory, its log and snapshot space are given back.
 *
 * It never drops a counter before every peer holds its seal (a peer holding only the
 * tombstone would swallow the name's new life), never works on more than GC_WORK_PER_TICK
 * counters a tick, and never walks the whole store in one tick: it follows the store's
 * change list from where it stopped (the dead counters it meets wait in a queue, in change
 * order), and recounts the tombstones for the metrics a slice at a time.
 */
#define _GNU_SOURCE
#include "region_internal.h"

#include <inttypes.h>
#include <malloc.h>
#include <stdlib.h>
#include <string.h>

#include "../base/clock.h"
#include "../base/log.h"
#include "../base/mem.h"
#include "../obs/metrics.h"
#include "../store/names.h"
#include "../store/tokset.h"
#include "config.h"

#define GC_TICK_MS 250
#define GC_WORK_PER_TICK 50000    /* seals and drops a tick at most */
#define GC_CENSUS_PER_TICK 262144 /* ids the tombstone recount looks at a tick */
#define GC_SNAPSHOT_AFTER 10000   /* drops that call for a snapshot (the log shrinks) */
#define GC_HELD_LOG_S 60.0        /* held back this long by a peer: say so in the log */
#define GC_SCAN_FRONT 1024        /* queue entries looked at for the oldest unsealed one */
#define GC_WRITE_EVERY 4096       /* seals and drops buffered before the log is written */

/* A dead counter as of its change seq, first seen dead at unix time at. */
struct gc_cand {
    uint32_t id;
    uint64_t seq;
    double at;
};

/* What every peer held (repl_tokens_acked) from unix time at on. */
struct gc_sample {
    double at;
    uint64_t acked;
};

struct region_gc {
    struct event *timer;
    double grace_s;
    uint64_t seen; /* the changes up to this seq were looked at */
    struct gc_cand *q;
    size_t qhead, qlen, qcap;
    struct gc_sample *s;
    size_t ns, scap;
    uint64_t dropped, since_snapshot, since_trim;
    double last_drop; /* unix s of the last drop */
    /* The recount: ids [0, census_next) of the pass under way; the last complete pass. */
    uint32_t census_next, c_dead, c_sealed;
    uint32_t dead, sealed;
    int census_done;
    /* The oldest unsealed tombstone (0: none), and what the GC waits for. */
    double oldest_at;
    uint64_t need_seq; /* the next change the GC needs every peer to hold (0: none) */
    double held_since; /* unix s the GC has been held back by a peer since; 0: it is not */
    int held_logged;
    struct metric_series *m_dropped;
};

/* ---------------------------------------------------------------- what every peer held */

/* Remembers acked as of now, keeping only the samples the grace still needs. */
static void sample(struct region_gc *gc, double now, uint64_t acked)
{
    if (!gc->ns || gc->s[gc->ns - 1].acked != acked) {
        if (gc->ns == gc->scap) {
            gc->scap = gc->scap ? gc->scap * 2 : 64;
            gc->s = xrealloc(gc->s, gc->scap * sizeof *gc->s);
        }
        gc->s[gc->ns++] = (struct gc_sample){now, acked};
    }
    size_t k = 0; /* samples entirely before the window: all but the last of them go */
    while (k + 1 < gc->ns && gc->s[k + 1].at <= now - gc->grace_s)
        k++;
    if (k) {
        memmove(gc->s, gc->s + k, (gc->ns - k) * sizeof *gc->s);
        gc->ns -= k;
    }
}

/* The highest seq every peer has held all through the last grace_s seconds (0 when this
 * process has not watched that long). */
static uint64_t acked_for_grace(const struct region_gc *gc, double now)
{
    if (!gc->ns || gc->s[0].at > now - gc->grace_s)
        return 0;
    uint64_t min = gc->s[0].acked;
    for (size_t i = 1; i < gc->ns; i++)
        if (gc->s[i].acked < min)
            min = gc->s[i].acked;
    return min;
}

/* ---------------------------------------------------------------- the queue of dead counters */

static void push(struct region_gc *gc, uint32_t id, uint64_t seq, double now)
{
    if (gc->qlen == gc->qcap) {
        if (gc->qhead) { /* room at the front first */
            memmove(gc->q, gc->q + gc->qhead, (gc->qlen - gc->qhead) * sizeof *gc->q);
            gc->qlen -= gc->qhead;
            gc->qhead = 0;
        }
        if (gc->qlen == gc->qcap) {
            gc->qcap = gc->qcap ? gc->qcap * 2 : 1024;
            gc->q = xrealloc(gc->q, gc->qcap * sizeof *gc->q);
        }
    }
    gc->q[gc->qlen++] = (struct gc_cand){id, seq, now};
}

/* The queue emptied: a large one gives its memory back. */
static void queue_emptied(struct region_gc *gc)
{
    gc->qhead = gc->qlen = 0;
    if (gc->qcap > 65536) {
        free(gc->q);
        gc->q = NULL;
        gc->qcap = 0;
    }
}

/* Queues the counters changed since the last tick that are dead now. */
static void take_changes(struct region *rg, struct region_gc *gc, double now)
{
    const struct gstore *st = rg->store;
    for (uint32_t id = gstore_changed_after(st, gc->seen); id != GSTORE_NONE;
         id = gstore_changed_next(st, id))
        if (gstore_dead(st, id))
            push(gc, id, gstore_counter_mseq(gstore_counter(st, id)), now);
    gc->seen = gstore_seq(st);
}

/* Whether the entry still describes its counter: it exists, is dead, and has not changed
 * since (a later change queued it again, or revived it). */
static int current(const struct region *rg, const struct gc_cand *c)
{
    const struct gstore *st = rg->store;
    return c->id < gstore_count(st) && gstore_exists(st, c->id) &&
           gstore_counter_mseq(gstore_counter(st, c->id)) == c->seq && gstore_dead(st, c->id);
}

static int is_sealed(const struct region *rg, uint32_t id)
{
    struct glife life;
    return gstore_life(rg->store, id, &life) && (life.flags & GLIFE_SEALED);
}

/* ---------------------------------------------------------------- sealing and dropping */

/* Seals counter id, a logged change. @return 0, or -1 when the log has no room. */
static int seal(struct region *rg, uint32_t id)
{
    size_t nlen;
    gstore_counter_name(gstore_counter(rg->store, id), &nlen);
    if (rg->wal && wal_reserve(rg->wal, region__incr_record_max(rg, id, nlen, 0)) < 0)
        return -1;
    if (gstore_seal(rg->store, id) == 1)
        region__persist_changed(rg, id);
    return 0;
}

/* Drops counter id: every structure indexed by counter id forgets it, the log records the
 * drop, then the store gives it back. @return 0, or -1 when the log has no room. */
static int drop(struct region *rg, struct region_gc *gc, uint32_t id)
{
    if (rg->wal && wal_reserve(rg->wal, 16 + GCOUNTER_NAME_MAX) < 0)
        return -1;
    names_forget(rg->names, id);
    repl_forget(rg->repl, id);
    region__top_forget(rg, id);
    tokset_forget(rg->tokset, id);
    if (rg->wal)
        wal_append_drop(rg->wal, rg->store, id);
    gstore_drop(rg->store, id);
    gc->dropped++;
    gc->since_snapshot++;
    gc->since_trim++;
    metric_add(gc->m_dropped, 1);
    return 0;
}

/*
 * Seals or drops the queued counters whose change every peer has held for the grace, in
 * change order, GC_WORK_PER_TICK at most. A sealed counter comes back to the queue by its
 * seal's change (take_changes), to be dropped once that is held in turn.
 */
static unsigned collect(struct region *rg, struct region_gc *gc, uint64_t acked)
{
    unsigned work = 0;
    while (gc->qhead < gc->qlen && work < GC_WORK_PER_TICK) {
        const struct gc_cand *c = &gc->q[gc->qhead];
        /* A pending token-set element is an increment its home has not applied yet: the
         * counter is not dead in effect, and its settling is a change that queues it again. */
        if (current(rg, c) && !tokset_pending(rg->tokset, c->id)) {
            if (c->seq > acked)
                break;
            if ((is_sealed(rg, c->id) ? drop(rg, gc, c->id) : seal(rg, c->id)) < 0)
                break; /* no room in the log: the next tick tries again */
            if (++work % GC_WRITE_EVERY == 0 && rg->wal)
                wal_write(rg->wal); /* the log's buffer stays small */
        }
        gc->qhead++;
    }
    if (gc->qhead == gc->qlen)
        queue_emptied(gc);
    return work;
}

/* ---------------------------------------------------------------- status */

/* Recounts the tombstones, GC_CENSUS_PER_TICK ids a tick; a complete pass is published. */
static void census(struct region *rg, struct region_gc *gc)
{
    const struct gstore *st = rg->store;
    if (!gstore_dead_total(st)) {
        gc->dead = gc->sealed = 0;
        gc->census_next = gc->c_dead = gc->c_sealed = 0;
        return;
    }
    uint32_t n = gstore_count(st), stop = gc->census_next + GC_CENSUS_PER_TICK;
    if (stop > n)
        stop = n;
    for (uint32_t id = gc->census_next; id < stop; id++)
        if (gstore_exists(st, id) && gstore_dead(st, id)) {
            gc->c_dead++;
            gc->c_sealed += is_sealed(rg, id);
        }
    gc->census_next = stop;
    if (stop < n)
        return;
    gc->dead = gc->c_dead - gc->c_sealed;
    gc->sealed = gc->c_sealed;
    gc->census_done = 1;
    gc->census_next = gc->c_dead = gc->c_sealed = 0;
}

/* The oldest unsealed tombstone among the first queued ones, and the change the GC waits
 * for every peer to hold (the first current entry's). */
static void front(struct region *rg, struct region_gc *gc)
{
    gc->oldest_at = 0;
    gc->need_seq = 0;
    size_t stop = gc->qhead + GC_SCAN_FRONT < gc->qlen ? gc->qhead + GC_SCAN_FRONT : gc->qlen;
    for (size_t i = gc->qhead; i < stop; i++) {
        const struct gc_cand *c = &gc->q[i];
        if (!current(rg, c))
            continue;
        if (!gc->need_seq)
            gc->need_seq = c->seq;
        if (!is_sealed(rg, c->id)) {
            gc->oldest_at = c->at;
            break;
        }
    }
}

/* Peers that do not hold change seq yet, as a comma-separated list into out. @return how
 * many. */
static int waiting_for(struct region *rg, uint64_t seq, struct buf *out, int json)
{
    int k = 0;
    for (int i = 0; seq && i < repl_peer_count(rg->repl); i++) {
        struct repl_peer_info pi;
        repl_peer_info(rg->repl, i, &pi);
        if (pi.acked >= seq)
            continue;
        if (k++)
            buf_putc(out, ',');
        if (json)
            region__put_str(out, pi.node_id ? pi.node_id : pi.url);
        else
            buf_puts(out, pi.node_id ? pi.node_id : pi.url);
    }
    return k;
}

/* Logs once when a peer has held the GC back for a minute, and once when it moves again. */
static void note_held(struct region *rg, struct region_gc *gc, double now)
{
    struct buf peers = {0};
    int held = gc->need_seq && gc->oldest_at && now - gc->oldest_at > gc->grace_s &&
               waiting_for(rg, gc->need_seq, &peers, 0) > 0;
    if (held && !gc->held_since)
        gc->held_since = now;
    if (held && !gc->held_logged && now - gc->held_since > GC_HELD_LOG_S) {
        log_warn("tombstone GC held back for %.0f s: deleted counters wait for peer(s) %.*s to "
                 "acknowledge them (counterd_tombstones_oldest_unsealed_seconds, /admin/sync)",
                 now - gc->held_since, (int)peers.len, peers.data ? peers.data : "");
        gc->held_logged = 1;
    } else if (!held && gc->held_since) {
        if (gc->held_logged)
            log_info("tombstone GC moves again after %.0f s held back by a peer",
                     now - gc->held_since);
        gc->held_since = 0;
        gc->held_logged = 0;
    }
    buf_free(&peers);
}

/* ---------------------------------------------------------------- the timer */

/* After many drops, once a pass is not in the middle of a batch (work: what this tick
 * sealed and dropped): a snapshot replaces the log that still holds them. */
static void snapshot_after_drops(struct region *rg, struct region_gc *gc, unsigned work)
{
    if (!rg->wal || gc->since_snapshot < GC_SNAPSHOT_AFTER || work >= GC_WORK_PER_TICK)
        return;
    if (wal_snapshot_running(rg->wal) || wal_failed(rg->wal) ||
        wal_snapshot(rg->wal, rg->store, rg->dedup) < 0)
        return; /* tried again next tick */
    log_info("tombstone GC dropped %" PRIu64 " counters since the last snapshot: a snapshot "
             "replaces the log that held them",
             gc->since_snapshot);
    gc->since_snapshot = 0;
}

/* Once many drops are over (a second without one, so the structures that shrink at their
 * own pace, such as the name index, have): the heap the allocator keeps free goes back to
 * the system. */
static void trim_after_drops(struct region_gc *gc, unsigned work, double now)
{
    if (gc->since_trim < GC_SNAPSHOT_AFTER || work || now - gc->last_drop < 1.0)
        return;
    malloc_trim(0);
    gc->since_trim = 0;
}

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct region *rg = arg;
    struct region_gc *gc = rg->gc;
    double now = clock_unix_s();
    sample(gc, now, repl_peers_know_life(rg->repl) ? repl_tokens_acked(rg->repl) : 0);
    take_changes(rg, gc, now);
    unsigned work = 0;
    if (!rg->wal || !wal_failed(rg->wal))
        work = collect(rg, gc, acked_for_grace(gc, now));
    if (work)
        gc->last_drop = now;
    snapshot_after_drops(rg, gc, work);
    trim_after_drops(gc, work, now);
    census(rg, gc);
    front(rg, gc);
    note_held(rg, gc, now);
}

/* ---------------------------------------------------------------- metrics, status, set-up */

static double g_dead(void *arg)
{
    const struct region *rg = arg;
    uint32_t all = gstore_dead_total(rg->store);
    return rg->gc->sealed < all ? all - rg->gc->sealed : 0;
}

static double g_sealed(void *arg)
{
    return ((const struct region *)arg)->gc->sealed;
}

static double g_oldest(void *arg)
{
    const struct region_gc *gc = ((const struct region *)arg)->gc;
    return gc->oldest_at ? clock_unix_s() - gc->oldest_at : 0;
}

static void register_metrics(struct region *rg, struct region_gc *gc)
{
    struct metric *t = metrics_add(rg->metrics, METRIC_GAUGE, "counterd_tombstones",
                                   "Deleted counters held as tombstones: dead (not every peer "
                                   "has held the deletion for the grace yet) or sealed (waiting "
                                   "for every peer to hold the seal before they are dropped)",
                                   "state", NULL, 0);
    const char *dead[1] = {"dead"}, *sealed[1] = {"sealed"};
    metric_set_fn(metric_series(t, dead), g_dead, rg);
    metric_set_fn(metric_series(t, sealed), g_sealed, rg);
    gc->m_dropped = metric_only(metrics_add(
        rg->metrics, METRIC_COUNTER, "counterd_tombstones_dropped_total",
        "Tombstones dropped once every peer held their seal: memory, log and snapshot space "
        "given back",
        NULL, NULL, 0));
    metric_set_fn(metric_only(metrics_add(
                      rg->metrics, METRIC_GAUGE, "counterd_tombstones_oldest_unsealed_seconds",
                      "Age of the oldest tombstone not sealed yet: grows past the grace while "
                      "a peer that has not acknowledged the deletion holds the GC back",
                      NULL, NULL, 0)),
                  g_oldest, rg);
}

void region__gc_start(struct region *rg, struct event_base *base, const struct config *cfg)
{
    struct region_gc *gc = xcalloc(1, sizeof *gc);
    rg->gc = gc;
    gc->grace_s = cfg->tombstone_grace_s;
    register_metrics(rg, gc);
    gc->timer = event_new(base, -1, EV_PERSIST, on_tick, rg);
    struct timeval tv = {0, GC_TICK_MS * 1000};
    event_add(gc->timer, &tv);
}

void region__gc_free(struct region *rg)
{
    struct region_gc *gc = rg->gc;
    if (!gc)
        return;
    if (gc->timer)
        event_free(gc->timer);
    free(gc->q);
    free(gc->s);
    free(gc);
    rg->gc = NULL;
}

void region__gc_put_status(struct region *rg, struct buf *b)
{
    struct region_gc *gc = rg->gc;
    if (!gc)
        return;
    buf_printf(b,
               ",\"tombstones\":{\"dead\":%.0f,\"sealed\":%" PRIu32 ",\"dropped\":%" PRIu64
               ",\"oldest_unsealed_s\":%.1f,\"grace_s\":%.0f,\"waiting_for\":[",
               g_dead(rg), gc->sealed, gc->dropped, g_oldest(rg), gc->grace_s);
    waiting_for(rg, gc->need_seq, b, 1);
    buf_puts(b, "]}");
}
