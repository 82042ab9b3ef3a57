/*
 * region_tokens.c - increments taken away from their token's home, and their settlement.
 *
 * Only a token's home adds a tokened increment to its own entry (store/tokset.h); another
 * node holds it as pending until the home settles it. Nothing here answers a request.
 */
#include "region_internal.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "../base/clock.h"
#include "../base/log.h"
#include "../base/mem.h"
#include "../obs/metrics.h"
#include "../store/tokset.h"

/* Whether this node is the home of a token: one that names it ("<our node id>/..."), or one
 * hashed to it among every region, never while it does not know them all. */
int region__is_home(struct region *rg, const char *tok, size_t tlen)
{
    size_t n = strlen(rg->node_id);
    if (tlen > n && tok[n] == '/' && !memcmp(tok, rg->node_id, n))
        return 1;
    return rg->home_known && tokset_home(tok, tlen, rg->home_ids, rg->nhome) == 0;
}

/* Whether a window entry says this node added the token's increment to its own entry. */
static int applied_here(const struct dedup_answer *w)
{
    return w->local_count != DEDUP_ELSEWHERE && w->local_count != DEDUP_SETTLED;
}

/* Remembers that tok is settled by its home, unless this node applied it itself. */
static void remember_settled(struct region *rg, const char *name, size_t nlen, const char *tok,
                             size_t tlen, int64_t amount, double now)
{
    struct dedup_answer w;
    if (dedup_get(rg->dedup, name, nlen, tok, tlen, now, &w) && w.local_count != DEDUP_ELSEWHERE)
        return; /* applied here (the home), or known settled already */
    struct dedup_answer s = {amount, DEDUP_SETTLED, 0};
    dedup_put(rg->dedup, name, nlen, tok, tlen, now, &s);
}

/*
 * The home settles a pending element of counter id: when it applied tok itself (its
 * window), it only marks it settled; otherwise it adds the amount to its own entry and
 * marks it settled in the same change, logged as one record.
 * @return 0, or -1 when the amount cannot be applied (it stays pending and counted).
 */
static int settle_at_home(struct region *rg, uint32_t id, const char *tok, size_t tlen,
                          int64_t amount, double now)
{
    char name[GCOUNTER_NAME_MAX + 1]; /* a copy: an increment may move the counter */
    size_t nlen = region__counter_name(rg, id, name);
    struct dedup_answer w;
    if (dedup_get(rg->dedup, name, nlen, tok, tlen, now, &w) && applied_here(&w)) {
        if (w.amount != amount)
            log_warn("token %.*s of counter %s was applied here with amount %" PRId64
                     " and taken elsewhere with %" PRId64 ": counted once, with ours",
                     (int)tlen, tok, name, w.amount, amount);
        tokset_merge(rg->tokset, id, tok, tlen, w.amount, 1, gstore_touch(rg->store, id));
        metric_add(rg->m_tok_already, 1);
        if (rg->wal)
            wal_append(rg->wal, rg->store, id, NULL, 0, NULL, 0);
        return 0;
    }
    int rc = gstore_incr(rg->store, id, rg->self, amount);
    if (rc != 0) {
        metric_add(rg->m_tok_failed, 1);
        log_error("cannot apply increment %s/%.*s of %" PRId64 " taken by another region (%s): "
                  "it stays pending, counted in every total, and is retried at the next merge",
                  name, (int)tlen, tok, amount,
                  rc == GSTORE_EOVERFLOW ? "out of range" : "too many replicas");
        return -1;
    }
    tokset_merge(rg->tokset, id, tok, tlen, amount, 1, gstore_seq(rg->store));
    const struct gcounter *c = gstore_counter(rg->store, id);
    struct dedup_answer a = {amount, region__local_of(rg, c), region__total_of(rg, c, id)};
    dedup_put(rg->dedup, name, nlen, tok, tlen, now, &a);
    metric_add(rg->m_tok_applied, 1);
    if (rg->wal)
        wal_append(rg->wal, rg->store, id, tok, tlen, &a, now);
    return 0;
}

/*
 * Token-set elements a peer sent for counter id (store/tokset.h), joined into ours. The
 * home settles what is pending; every node remembers what it learned is settled, so a
 * retry that reaches it later is a duplicate, and an element it already collected is not
 * taken in again.
 */
void region__tokens_learned(void *arg, uint32_t id, const struct repl_token *el, size_t n)
{
    struct region *rg = arg;
    double now = clock_unix_s();
    char name[GCOUNTER_NAME_MAX + 1];
    size_t nlen = region__counter_name(rg, id, name);
    uint64_t before = gstore_seq(rg->store);
    int changed = 0;
    for (size_t i = 0; i < n; i++) {
        const struct repl_token *e = &el[i];
        int64_t amount = e->amount, mine;
        int settled = e->settled, mine_settled = 0;
        int have = tokset_get(rg->tokset, id, e->tok, e->tlen, &mine, &mine_settled);
        if (have && mine_settled)
            continue; /* settled is final */
        struct dedup_answer w;
        int inwin = dedup_get(rg->dedup, name, nlen, e->tok, e->tlen, now, &w);
        if (!have && inwin && settled)
            continue; /* collected here already, or known: not taken in again */
        if (!have && inwin && w.local_count == DEDUP_SETTLED)
            settled = 1; /* a stale pending: its home settled it, and we have that */
        /* Only the home applies a token: having applied it makes us its home, even before
         * we know every region (after a restart). */
        if (!settled && (region__is_home(rg, e->tok, e->tlen) || (inwin && applied_here(&w)))) {
            changed |= settle_at_home(rg, id, e->tok, e->tlen, amount, now) < 0 &&
                       tokset_merge(rg->tokset, id, e->tok, e->tlen, amount, 0,
                                    gstore_touch(rg->store, id));
            continue;
        }
        int rc = tokset_merge(rg->tokset, id, e->tok, e->tlen, amount, settled,
                              gstore_seq(rg->store) + 1);
        if (rc & TOKSET_CHANGED) {
            gstore_touch(rg->store, id);
            changed = 1;
        }
        if (rc & TOKSET_CONFLICT)
            log_warn("token %.*s of counter %s came with two amounts: the larger counts",
                     (int)e->tlen, e->tok, name);
        if (rc & TOKSET_SETTLED)
            remember_settled(rg, name, nlen, e->tok, e->tlen, amount, now);
    }
    if (changed && rg->wal)
        wal_append_tokens(rg->wal, rg->store, id, before);
}

struct pending_list {
    uint32_t *ids;
    char (*toks)[TOKSET_TOKEN_MAX];
    uint8_t *tlens;
    int64_t *amounts;
    size_t n, cap;
};

static void collect_pending(void *arg, uint32_t id, const char *tok, size_t tlen, int64_t amount,
                            int settled, uint64_t seq)
{
    (void)settled;
    (void)seq;
    struct pending_list *l = arg;
    if (l->n == l->cap) {
        l->cap = l->cap ? l->cap * 2 : 64;
        l->ids = xrealloc(l->ids, l->cap * sizeof *l->ids);
        l->toks = xrealloc(l->toks, l->cap * sizeof *l->toks);
        l->tlens = xrealloc(l->tlens, l->cap * sizeof *l->tlens);
        l->amounts = xrealloc(l->amounts, l->cap * sizeof *l->amounts);
    }
    l->ids[l->n] = id;
    memcpy(l->toks[l->n], tok, tlen);
    l->tlens[l->n] = (uint8_t)tlen;
    l->amounts[l->n++] = amount;
}

/* Settles the pending elements whose home is this node (taken while it did not know every
 * region, or that it could not apply before). */
static void settle_own(struct region *rg)
{
    struct pending_list l = {0};
    tokset_each_pending(rg->tokset, collect_pending, &l);
    double now = clock_unix_s();
    size_t done = 0;
    for (size_t i = 0; i < l.n; i++) {
        char name[GCOUNTER_NAME_MAX + 1];
        size_t nlen = region__counter_name(rg, l.ids[i], name);
        struct dedup_answer w;
        int mine =
            region__is_home(rg, l.toks[i], l.tlens[i]) ||
            (dedup_get(rg->dedup, name, nlen, l.toks[i], l.tlens[i], now, &w) && applied_here(&w));
        if (!mine)
            continue;
        /* A settlement is a logged change: without room in the log, later (the timer). */
        if (rg->wal &&
            wal_reserve(rg->wal, region__incr_record_max(rg, l.ids[i], nlen, l.tlens[i])) < 0) {
            rg->settle_scan = 1;
            break;
        }
        if (settle_at_home(rg, l.ids[i], l.toks[i], l.tlens[i], l.amounts[i], now) == 0)
            done++;
    }
    if (done)
        log_info("settled %zu pending increment(s) whose home is this node", done);
    free(l.ids);
    free(l.toks);
    free(l.tlens);
    free(l.amounts);
}

/*
 * Every half second: learns the regions (ours and the peers' node ids, from their answers)
 * and settles what is ours once they are all known; forgets settled elements every peer
 * has; reports how far back the idempotency window reaches.
 */
void region__update_home(struct region *rg)
{
    if (!rg->home_known) {
        int np = rg->nhome - 1;
        repl_learn_peer_ids(rg->repl);
        if (repl_peer_ids(rg->repl, rg->home_ids + 1, np) == np) {
            rg->home_known = 1;
            rg->settle_scan = 1;
            log_info("every region's node id is known: tokens' homes are decided here from now on");
        }
    }
    if (rg->settle_scan) {
        rg->settle_scan = 0;
        settle_own(rg);
    }
}

void region__on_tok_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct region *rg = arg;
    region__update_home(rg);
    size_t gone = tokset_gc(rg->tokset, repl_tokens_acked(rg->repl));
    if (gone)
        metric_add(rg->m_tok_gc, (double)gone);
    uint64_t young = dedup_evicted_young(rg->dedup);
    if (young > rg->young_seen) {
        double oldest = dedup_oldest_at(rg->dedup);
        metric_add(rg->m_window_cut, (double)(young - rg->young_seen));
        if (clock_mono_ms() - rg->young_logged_ms > 60000) {
            log_warn("the idempotency window holds %d entries: it now reaches back %.0f s, not "
                     "%.0f s (%" PRIu64 " tokens forgotten early so far); a retry later than that "
                     "may count twice",
                     DEDUP_MAX, oldest ? clock_unix_s() - oldest : 0, DEDUP_WINDOW_S, young);
            rg->young_logged_ms = clock_mono_ms();
        }
        rg->young_seen = young;
    }
}
