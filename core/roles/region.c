/*
 * region.c - the region role (see region.h): setting a node up and tearing it down.
 *
 * The node's other questions each have a file: region_http.c its endpoints and
 * route table, region_incr.c the increment path, region_view.c its JSON views,
 * region_durable.c the answers held until the log is durable, region_tokens.c
 * increments away from their token's home, region_fold.c folding retired
 * incarnations, region_metrics.c its metrics. region_internal.h holds the state they
 * share. Nothing here answers a request.
 */
#include "region.h"
#include "region_internal.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "../base/clock.h"
#include "../base/log.h"
#include "../base/mem.h"
#include "../lua/host.h"
#include "../obs/metrics.h"
#include "../store/names.h"
#include "config.h"
#include "policy.h"
#include "role.h"

/* ---------------------------------------------------------------- set-up */

static int faults_decide(void *arg, const char *dir, const char *from, const char *to,
                         const char *kind, int partitioned, int *delay_ms)
{
    struct region *rg = arg;
    /* A node that cannot log does not pull either: merging the answer would need it. */
    if (rg->wal && wal_failed(rg->wal) && !strcmp(dir, "out"))
        return REPL_DROP;
    return policy_faults_decide(rg->lua, dir, from, to, kind, partitioned, delay_ms);
}

/* Entries of counter id changed by a merge. A counter with a token set is never tagged as
 * the sender's state (gstore_merge_from): the sender may lack some of its elements. */
static void merged(void *arg, uint32_t id)
{
    struct region *rg = arg;
    if (tokset_elements(rg->tokset, id))
        gstore_touch(rg->store, id);
    region__persist_changed(rg, id);
    region__ns_changed(rg, id);
}

/* What a merge added to counter id: for GET /top (region_top.c). */
static void added(void *arg, uint32_t id, int64_t amount)
{
    struct region *rg = arg;
    region__top_merged(rg, id, amount, region__total_of(rg, gstore_counter(rg->store, id), id));
}

/*
 * The node's state: its store, de-dup window, token sets and strong replica, read back
 * from its data directory when it has one, and the replica id it counts under.
 * @return 0, or -1 with a sentence in err.
 */
static int open_store(struct region *rg, const struct config *cfg, char *err, size_t errlen)
{
    rg->node_id = xstrdup(cfg->node_id);
    rg->region = xstrdup(cfg->region);
    rg->store = gstore_new();
    rg->names = names_new();
    gstore_expect_replicas(rg->store, cfg->npeers + 1);
    /* Tests only: a lower cap on a counter's replica entries (folding at small scale). */
    const char *cap = getenv("COUNTERD_TEST_MAX_ENTRIES");
    if (cap && *cap)
        gstore_set_max_entries(rg->store, (unsigned)atoi(cap));
    rg->start_ms = clock_mono_ms();
    rg->fold_after_ms = cfg->fold_after_ms;
    rg->dedup = dedup_new(DEDUP_MAX, DEDUP_WINDOW_S);
    rg->tokset = tokset_new();
    rg->strong = strongrep_new();
    if (region__ns_open(rg, cfg, err, errlen) < 0) /* the windows, before the log's tokens */
        return -1;
    char rid[GSTORE_REPLICA_NAME_MAX + 1];
    if (cfg->data_dir[0]) {
        struct wal_opts wo = {cfg->data_dir,
                              cfg->node_id,
                              (enum wal_fsync)wal_parse_fsync(cfg->fsync),
                              (size_t)cfg->snapshot_bytes,
                              rg->tokset,
                              rg->strong};
        struct wal_info info;
        rg->wal = wal_open(&wo, rg->store, rg->dedup, &info, err, errlen);
        if (!rg->wal)
            return -1;
        snprintf(rid, sizeof rid, "%s", info.replica_id);
        log_info("data directory %s: %u counters from %" PRIu64 " records in %.0f ms; last stop "
                 "%s; fsync %s; %s",
                 cfg->data_dir, gstore_count(rg->store), info.records, info.ms,
                 info.clean ? "clean" : "not clean (or a new directory)", cfg->fsync,
                 info.id_reason);
    } else {
        /* Nothing survives this process: it is a new incarnation, which must not count
         * under an id whose old value its peers may hold higher (they would swallow its
         * increments). */
        wal_new_replica_id(rid, sizeof rid, cfg->node_id);
        log_warn("no data directory (--data-dir / DATA_DIR): counts live in memory only");
    }
    rg->top = region__top_new(gstore_count(rg->store)); /* what the log held */
    rg->replica_id = xstrdup(rid);
    rg->self = gstore_replica(rg->store, rid, strlen(rid));
    rg->self_node = region__node_of(rg, rg->self);
    json_parser_init(&rg->parser);
    rg->replica = (struct replica){rg->strong, rg->wal, rg->node_id, rg->region, &rg->parser};
    return 0;
}

/* Replication with the peers, through the faults policy and the log's hooks. */
static void start_repl(struct region *rg, struct event_base *base, const struct config *cfg)
{
    char auth[300];
    snprintf(auth, sizeof auth, "Authorization: Bearer %s", cfg->admin_token);
    struct repl_config rc = {.node_id = cfg->node_id,
                             .region = cfg->region,
                             .service = "counter",
                             .peers = (const char *const *)cfg->peers,
                             .npeers = cfg->npeers,
                             .interval_ms = cfg->sync_interval_ms,
                             .timeout_ms = cfg->sync_timeout_ms,
                             .auth_header = cfg->admin_token[0] ? auth : NULL,
                             .tokset = rg->tokset,
                             .replica_id = rg->replica_id};
    struct repl_hooks hooks = {.decide = faults_decide,
                               .changed = merged,
                               .added = added,
                               .tokens = region__tokens_learned,
                               .arg = rg,
                               .before_send = region__before_send,
                               .before_merge = region__before_merge,
                               .replicated = region__ns_replicated,
                               .put_ext = region__ns_put_ext,
                               .take_ext = region__ns_take_ext};
    rg->repl = repl_new(base, rg->client, rg->store, rg->metrics, &rc, &hooks);
}

/* Tokens' homes, and the timers that settle tokens and fold retired incarnations. */
static void start_timers(struct region *rg, struct event_base *base, const struct config *cfg)
{
    rg->nhome = cfg->npeers + 1;
    rg->home_ids = xcalloc((size_t)rg->nhome, sizeof *rg->home_ids);
    rg->home_ids[0] = rg->node_id;
    rg->home_known = cfg->npeers == 0;
    rg->settle_scan = 1;
    rg->tok_timer = event_new(base, -1, EV_PERSIST, region__on_tok_timer, rg);
    struct timeval ttv = {0, 200 * 1000};
    event_add(rg->tok_timer, &ttv);
    rg->fold_timer = event_new(base, -1, EV_PERSIST, region__on_fold_timer, rg);
    struct timeval ftv = {0, 250 * 1000};
    event_add(rg->fold_timer, &ftv);
    rg->names_timer = event_new(base, -1, EV_PERSIST, region__on_names_timer, rg);
    struct timeval ntv = {0, NAMES_TICK_MS * 1000};
    event_add(rg->names_timer, &ntv);
    region__ns_start(rg, base);
}

static void start_wal_events(struct region *rg, struct event_base *base)
{
    if (rg->wal) {
        rg->wal_notify = event_new(base, wal_notify_fd(rg->wal), EV_READ | EV_PERSIST,
                                   region__on_wal_notify, rg);
        event_add(rg->wal_notify, NULL);
        rg->wal_timer = event_new(base, -1, EV_PERSIST, region__on_wal_timer, rg);
        struct timeval tv = {0, 200 * 1000};
        event_add(rg->wal_timer, &tv);
        rg->wal_kick = evtimer_new(base, region__on_wal_kick, rg);
    }
}

static struct role_parts parts_of(struct region *rg)
{
    return (struct role_parts){&rg->metrics, &rg->otlp,   &rg->admin_token, &rg->client,
                               &rg->lua,     &rg->reload, &rg->server};
}

struct region *region_new(struct event_base *base, const struct config *cfg, char *err,
                          size_t errlen)
{
    struct region *rg = xcalloc(1, sizeof *rg);
    struct role_parts parts = parts_of(rg);
    if (open_store(rg, cfg, err, errlen) < 0)
        goto fail;
    rg->metrics = metrics_new();
    region__metrics_register(rg, cfg);
    region__ns_metrics(rg);
    struct host_info li = {"region", cfg->node_id, cfg->region, cfg->policy_budget_ms};
    if (role_start(&parts, base, cfg, &li, 0, err, errlen) < 0)
        goto fail;
    char lerr[512];
    if (host_load_policy(rg->lua, "faults", lerr, sizeof lerr) < 0)
        log_error("faults policy not loaded, replication runs without it: %s", lerr);
    start_repl(rg, base, cfg);
    start_timers(rg, base, cfg);
    region__gc_start(rg, base, cfg);
    struct http_server_opts so = role_server_opts(cfg);
    so.body_limit = region__body_limit;
    so.before_flush = region__before_flush;
    so.before_flush_arg = rg;
    if (role_listen(&parts, base, cfg, &so, region__handle, rg, err, errlen) < 0)
        goto fail;
    start_wal_events(rg, base);
    log_info("region %s node %s (replica %s) listening on %s:%d with %d peer(s), sync every "
             "%d ms",
             cfg->region, cfg->node_id, rg->replica_id, cfg->bind, http_server_port(rg->server),
             cfg->npeers, cfg->sync_interval_ms);
    return rg;
fail:
    region_free(rg);
    return NULL;
}

void region_free(struct region *rg)
{
    if (!rg)
        return;
    /* Owners of pending answers first, then the server holding their connections. */
    repl_free(rg->repl);
    while (rg->waits) {
        struct durable_wait *w = rg->waits;
        rg->waits = w->next;
        /* Never sent (the server is freed below); frees a connection its client closed. */
        http_respond_error(w->req, 503, "unavailable", "the node is stopping");
        free(w);
    }
    if (rg->wal_notify)
        event_free(rg->wal_notify);
    if (rg->wal_timer)
        event_free(rg->wal_timer);
    if (rg->wal_kick)
        event_free(rg->wal_kick);
    if (rg->tok_timer)
        event_free(rg->tok_timer);
    if (rg->fold_timer)
        event_free(rg->fold_timer);
    if (rg->names_timer)
        event_free(rg->names_timer);
    region__gc_free(rg);
    if (rg->wal)
        wal_close(rg->wal); /* writes the rest, fsyncs, marks the directory clean */
    struct role_parts parts = parts_of(rg);
    role_stop(&parts); /* the server and its connections, the Lua host, tracing, metrics */
    dedup_free(rg->dedup);
    region__ns_free(rg); /* after the window, which asks it for namespaces' windows */
    tokset_free(rg->tokset);
    free(rg->home_ids);
    strongrep_free(rg->strong);
    names_free(rg->names);
    region__top_free(rg->top);
    gstore_free(rg->store);
    json_parser_free(&rg->parser);
    buf_free(&rg->out);
    for (int i = 0; i < rg->nnodes; i++)
        free(rg->node_names[i]);
    free(rg->node_names);
    free(rg->rep_node);
    free(rg->replica_id);
    free(rg->node_id);
    free(rg->region);
    free(rg);
}
