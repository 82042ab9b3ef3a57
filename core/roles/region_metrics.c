/*
 * region_metrics.c - a region node's own metrics and the gauges that read them.
 *
 * Gauges only read: nothing here changes the store or the log.
 */
#include "region_internal.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../base/clock.h"
#include "../base/mem.h"
#include "../obs/metrics.h"
#include "../store/tokset.h"
#include "config.h"

static double window_seconds(void *arg)
{
    struct region *rg = arg;
    double oldest = dedup_oldest_at(rg->dedup);
    return oldest ? clock_unix_s() - oldest : 0;
}

static double tokset_pending_gauge(void *arg)
{
    return (double)tokset_pending_count(((struct region *)arg)->tokset);
}

static double tokset_size_gauge(void *arg)
{
    return (double)tokset_count(((struct region *)arg)->tokset);
}

/*
 * The replicas' net contributions summed (mine: this node's only), for the gauges. A bare
 * node id (an original-format peer's sum of that node's incarnations) of a node whose
 * incarnations this store holds too is left out, as reads leave it out wherever the
 * incarnations sum at least as much.
 */
static double replicas_total(struct region *rg, int mine)
{
    int n = gstore_replica_count(rg->store);
    char *has_inc = xcalloc((size_t)(n ? n : 1), 1); /* node indexes are below n */
    for (int r = 0; r < n; r++)
        if (strchr(gstore_replica_name(rg->store, r), '~'))
            has_inc[gstore_replica_node(rg->store, r)] = 1;
    double sum = 0;
    for (int r = 0; r < n; r++) {
        if (mine && region__node_of(rg, r) != rg->self_node)
            continue;
        if (!strchr(gstore_replica_name(rg->store, r), '~') &&
            has_inc[gstore_replica_node(rg->store, r)])
            continue;
        sum += gstore_replica_net(rg->store, r);
    }
    free(has_inc);
    return sum;
}

static double local_total(void *arg)
{
    return replicas_total(arg, 1);
}

static double synced_total(void *arg)
{
    return replicas_total(arg, 0);
}
static double wal_writable(void *arg)
{
    return !wal_failed(((struct region *)arg)->wal);
}
static double wal_error_count(void *arg)
{
    const struct wal_metric *m = arg;
    return (double)wal_errors(m->rg->wal, m->kind);
}
static double store_counters(void *arg)
{
    return gstore_live(((struct region *)arg)->store); /* dropped ids are not counters */
}
/* This node's replica ids in the store: the current one and the retired ones (one per
 * reboot, lost directory or failed log write; see store/wal.h). */
static double incarnations(void *arg)
{
    struct region *rg = arg;
    int n = gstore_replica_count(rg->store), k = 0;
    for (int r = 0; r < n; r++)
        if (region__node_of(rg, r) == rg->self_node &&
            (r == rg->self || gstore_replica_entries(rg->store, r) > 0))
            k++; /* a folded one has no entry left */
    return k;
}
static double store_bytes(void *arg)
{
    return (double)gstore_memory(((struct region *)arg)->store);
}

static double rss_bytes(void *arg)
{
    (void)arg;
    long pages = 0, rss = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (f) {
        if (fscanf(f, "%ld %ld", &pages, &rss) != 2)
            rss = 0;
        fclose(f);
    }
    return (double)rss * (double)sysconf(_SC_PAGESIZE);
}

/* The counts and the tokens taken away from their home. */
static void register_counts(struct region *rg, const struct config *cfg)
{
    const char *id3[3] = {"counter", cfg->region, cfg->node_id};
    rg->m_local = metric_series(metrics_add(rg->metrics, METRIC_GAUGE, "counter_local_count",
                                            "This node's own contribution, summed over counters",
                                            "service,region,node_id", NULL, 0),
                                id3);
    metric_set_fn(rg->m_local, local_total, rg);
    rg->m_synced = metric_series(metrics_add(rg->metrics, METRIC_GAUGE, "counter_synced_count",
                                             "Total of every counter as this node sees it",
                                             "service,region", NULL, 0),
                                 id3);
    metric_set_fn(rg->m_synced, synced_total, rg);
    struct metric *tok = metrics_add(
        rg->metrics, METRIC_COUNTER, "counterd_token_increments_total",
        "Tokened increments away from their home: taken here as pending, or settled here as "
        "their home (applied, or already applied), or not applicable yet",
        "outcome", NULL, 0);
    const char *o1[1] = {"pending"};
    rg->m_tok_pending = metric_series(tok, o1);
    o1[0] = "settled_applied";
    rg->m_tok_applied = metric_series(tok, o1);
    o1[0] = "settled_already_applied";
    rg->m_tok_already = metric_series(tok, o1);
    o1[0] = "settle_failed";
    rg->m_tok_failed = metric_series(tok, o1);
    rg->m_tok_gc =
        metric_only(metrics_add(rg->metrics, METRIC_COUNTER, "counterd_token_set_collected_total",
                                "Settled token-set elements forgotten once every peer "
                                "had them",
                                NULL, NULL, 0));
    metric_set_fn(metric_only(metrics_add(rg->metrics, METRIC_GAUGE, "counterd_token_set_pending",
                                          "Pending token-set elements held (increments waiting "
                                          "for their home)",
                                          NULL, NULL, 0)),
                  tokset_pending_gauge, rg);
    metric_set_fn(
        metric_only(metrics_add(rg->metrics, METRIC_GAUGE, "counterd_token_set_elements",
                                "Token-set elements held, pending and settled", NULL, NULL, 0)),
        tokset_size_gauge, rg);
    metric_set_fn(
        metric_only(metrics_add(rg->metrics, METRIC_GAUGE, "counterd_idempotency_window_seconds",
                                "Age of the oldest token the idempotency window remembers: how "
                                "far back a retry is recognised",
                                NULL, NULL, 0)),
        window_seconds, rg);
    rg->m_window_cut = metric_only(
        metrics_add(rg->metrics, METRIC_COUNTER, "counterd_idempotency_evicted_early_total",
                    "Tokens the idempotency window's entry bound forgot before their time was up",
                    NULL, NULL, 0));
}

/* The store, this node's incarnations and the process. */
static void register_store(struct region *rg, const struct config *cfg)
{
    rg->m_incr = metrics_add(rg->metrics, METRIC_COUNTER, "counter_increments_total",
                             "Increment requests applied, by counter (top names; the rest _other)",
                             "service,region,counter_name", NULL, 0);
    metric_limit(rg->m_incr, cfg->metrics_top_n, 2);
    metric_set_fn(metric_only(metrics_add(rg->metrics, METRIC_GAUGE, "counterd_store_counters",
                                          "Counters held", NULL, NULL, 0)),
                  store_counters, rg);
    metric_set_fn(
        metric_only(metrics_add(rg->metrics, METRIC_GAUGE, "counterd_replica_incarnations",
                                "This node's replica ids with entries in the store: the "
                                "current one and retired ones not folded yet",
                                NULL, NULL, 0)),
        incarnations, rg);
    rg->m_folded = metric_only(
        metrics_add(rg->metrics, METRIC_COUNTER, "counterd_incarnations_folded_total",
                    "Entries of this node's retired incarnations folded into its current one "
                    "(one per counter and incarnation)",
                    NULL, NULL, 0));
    rg->m_fold_skipped = metric_only(metrics_add(
        rg->metrics, METRIC_COUNTER, "counterd_incarnations_fold_skipped_total",
        "Entries of retired incarnations left unfolded: the current entry would leave the int64 "
        "range, or the counter holds too many folded replicas",
        NULL, NULL, 0));
    metric_set_fn(metric_only(metrics_add(rg->metrics, METRIC_GAUGE, "counterd_store_bytes",
                                          "Bytes the counter store holds", NULL, NULL, 0)),
                  store_bytes, rg);
    metric_set_fn(
        metric_only(metrics_add(rg->metrics, METRIC_GAUGE, "process_resident_memory_bytes",
                                "Resident memory of this process", NULL, NULL, 0)),
        rss_bytes, rg);
}

/* The log, when the node has one. */
static void register_wal(struct region *rg)
{
    if (rg->wal) {
        metric_set_fn(metric_only(metrics_add(rg->metrics, METRIC_GAUGE, "counterd_wal_writable",
                                              "1 when the log takes writes, 0 when the disk is "
                                              "full or failed (writes answer 503)",
                                              NULL, NULL, 0)),
                      wal_writable, rg);
        struct metric *m =
            metrics_add(rg->metrics, METRIC_COUNTER, "counterd_wal_write_errors_total",
                        "Failed log reservations, writes, fsyncs and snapshots, by "
                        "reason (disk_full, io_error, fsync, snapshot)",
                        "reason", NULL, 0);
        for (int k = 0; k < WAL_ERR_COUNT; k++) {
            const char *reason[1] = {wal_error_name((enum wal_error)k)};
            rg->wal_metrics[k] = (struct wal_metric){rg, (enum wal_error)k};
            metric_set_fn(metric_series(m, reason), wal_error_count, &rg->wal_metrics[k]);
        }
    }
}

/* The region's own metrics (the log's when it has one), in the order /metrics lists them. */
void region__metrics_register(struct region *rg, const struct config *cfg)
{
    register_counts(rg, cfg);
    register_store(rg, cfg);
    register_wal(rg);
}
