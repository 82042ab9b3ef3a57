/*
 * region_fold.c - folding this node's retired incarnations into its current one
 * (README "Durability"), once every peer has been pulled in full since the gate opened.
 */
#include "region_internal.h"

#include <inttypes.h>
#include <string.h>

#include "../base/clock.h"
#include "../base/log.h"
#include "../obs/metrics.h"

/* Whether rep is a retired incarnation of this node (not a bare node id). */
static int retired_mine(struct region *rg, int rep)
{
    const char *name = gstore_replica_name(rg->store, rep);
    size_t len = strlen(name);
    return rep != rg->self && region__node_of(rg, rep) == rg->self_node &&
           gstore_counter_replica_node_len(name, len) != len;
}

/* Entries of retired incarnations of this node, over every counter. */
static uint64_t retired_left(struct region *rg)
{
    int n = gstore_replica_count(rg->store);
    uint64_t k = 0;
    for (int r = 0; r < n; r++)
        if (gstore_replica_entries(rg->store, r) && retired_mine(rg, r))
            k += gstore_replica_entries(rg->store, r);
    return k;
}

/*
 * Folds every retired incarnation of this node into its current one, in every counter:
 * one logged change per counter. Called only once the fold gate is open.
 */
static uint64_t fold_pass(struct region *rg)
{
    uint64_t folded = 0, skipped = 0;
    int reps[GCOUNTER_MAX_ENTRIES];
    const char *skip_why = NULL;
    char skip_name[GCOUNTER_NAME_MAX + 1] = "";
    for (uint32_t id = 0; id < gstore_count(rg->store); id++) {
        if (!gstore_exists(rg->store, id))
            continue; /* dropped */
        const struct gcounter *c = gstore_counter(rg->store, id);
        unsigned n = gstore_counter_entries(c), k = 0;
        for (unsigned i = 0; i < n; i++) {
            struct gentry e;
            gstore_counter_entry(c, i, &e);
            if (retired_mine(rg, e.rep))
                reps[k++] = e.rep;
        }
        if (!k)
            continue;
        /* A fold is a logged change: without room in the log, the rest waits (next gate). */
        size_t nlen;
        gstore_counter_name(c, &nlen);
        if (rg->wal && wal_reserve(rg->wal, region__incr_record_max(rg, id, nlen, 0) +
                                                k * (GSTORE_REPLICA_NAME_MAX + 1)) < 0) {
            log_warn("folding stopped at counter %u of %u: the log has no room (%s)", id,
                     gstore_count(rg->store), wal_status(rg->wal));
            break;
        }
        int changed = 0;
        for (unsigned i = 0; i < k; i++) {
            int rc = gstore_fold(rg->store, id, reps[i], rg->self);
            if (rc == 1) {
                folded++;
                changed = 1;
            } else if (rc < 0) {
                skipped++;
                skip_why = rc == GSTORE_EOVERFLOW ? "the current entry would leave the int64 range"
                                                  : "the counter holds too many folded replicas";
                region__counter_name(rg, id, skip_name);
            }
        }
        if (changed)
            region__persist_changed(rg, id);
    }
    metric_add(rg->m_folded, (double)folded);
    metric_add(rg->m_fold_skipped, (double)skipped);
    log_info("folded %" PRIu64 " entries of retired incarnations of %s into %s", folded,
             rg->node_id, rg->replica_id);
    if (skipped)
        log_warn("%" PRIu64 " entries of retired incarnations not folded (e.g. counter %s: %s); "
                 "they stay, counted once (counterd_incarnations_fold_skipped_total)",
                 skipped, skip_name, skip_why);
    return skipped;
}

/*
 * The fold gate, checked every 250 ms: once a retired incarnation of this node has entries
 * and fold_after_ms have passed since the start, ask for a full pull of every peer from now;
 * fold when all are in.
 */
void region__on_fold_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct region *rg = arg;
    double now = clock_mono_ms();
    uint64_t left = retired_left(rg);
    if (left < rg->fold_stuck)
        rg->fold_stuck = left;
    /* Entries a pass could not fold stay so (an entry never shrinks): only new ones call
     * for another gate and its full pulls. */
    if (left <= rg->fold_stuck || (rg->wal && wal_failed(rg->wal))) {
        if (rg->fold_armed)
            repl_fold_want(rg->repl, 0);
        rg->fold_armed = 0;
        return;
    }
    if (now < rg->start_ms + rg->fold_after_ms || now < rg->fold_next)
        return;
    if (!rg->fold_armed) {
        rg->fold_armed = now;
        rg->fold_why[0] = '\0';
        repl_fold_want(rg->repl, now);
        return;
    }
    char why[sizeof rg->fold_why];
    if (!repl_fold_ready(rg->repl, rg->fold_armed, why, sizeof why)) {
        if (strcmp(why, rg->fold_why) != 0 && now - rg->fold_armed > 30000)
            log_info("retired incarnations of %s are not folded yet: %s", rg->node_id, why);
        if (now - rg->fold_armed > 30000)
            snprintf(rg->fold_why, sizeof rg->fold_why, "%s", why);
        return;
    }
    rg->fold_stuck = fold_pass(rg);
    repl_fold_want(rg->repl, 0);
    rg->fold_armed = 0;
    rg->fold_next = now + rg->fold_after_ms;
}
