/*
 * region_internal.h - what the region role's files share (region.c and region_*.c): the
 * node's state and each file's entry points. Nothing outside the region role includes it.
 */
#ifndef COUNTERD_ROLES_REGION_INTERNAL_H
#define COUNTERD_ROLES_REGION_INTERNAL_H

#include <event2/event.h>
#include <stddef.h>
#include <stdint.h>

#include "../base/buf.h"
#include "../base/json.h"
#include "../repl/replica.h"
#include "../repl/repl.h"
#include "../store/dedup.h"
#include "../store/gstore.h"
#include "../store/wal.h"

struct config;
struct http_request;

#define DEDUP_MAX 200000
#define DEDUP_WINDOW_S 600.0

struct region {
    char *node_id, *region;
    char *replica_id; /* "<node_id>~<incarnation>": where this process counts */
    int self;         /* replica_id interned in the store */
    /* Replicas grouped by node id for the API's "nodes" and "local_count". */
    int *rep_node;
    int rep_node_len;
    char **node_names;
    int nnodes, self_node;
    struct gstore *store;
    struct names *names;    /* the counters in name order, for listings (store/names.h) */
    struct region_top *top; /* what changed most, what is largest (region_top.c) */
    struct dedup *dedup;
    struct tokset *tokset; /* the counters' token sets (store/tokset.h) */
    /* Every region's node id, ours first: the homes of tokens, once all are known. */
    const char **home_ids;
    int nhome, home_known, settle_scan;
    struct event *tok_timer;
    uint64_t young_seen;
    double young_logged_ms;
    struct strongrep *strong; /* this node's replica of the strong counter */
    struct replica replica;
    struct reload *reload;
    struct metrics *metrics;
    struct host *lua;
    struct client *client;
    struct repl *repl;
    struct http_server *server;
    struct json_parser parser;
    struct buf out;
    /* Durability: the log, and answers held until their records are fsynced. */
    struct wal *wal;
    struct event *wal_notify, *wal_timer;
    struct event *wal_kick; /* the next group commit, one loop iteration after a release */
    struct durable_wait *waits, *waits_tail;
    struct wal_metric {
        struct region *rg;
        enum wal_error kind;
    } wal_metrics[WAL_ERR_COUNT];
    char *admin_token;
    struct otlp *otlp; /* span export, when tracing is on */
    struct metric *m_incr;
    struct metric_series *m_local, *m_synced;
    struct metric_series *m_tok_pending, *m_tok_applied, *m_tok_already, *m_tok_failed, *m_tok_gc,
        *m_window_cut;
    /* Folding this node's retired incarnations (README "Durability"). */
    struct event *fold_timer;
    struct event *names_timer; /* takes new counters into names (region_view.c) */
    double start_ms, fold_after_ms;
    double fold_armed;   /* the gate's start (monotonic ms); 0: not armed */
    double fold_next;    /* no new gate before this */
    uint64_t fold_stuck; /* retired entries the last pass could not fold */
    char fold_why[320];
    struct metric_series *m_folded, *m_fold_skipped;
    struct region_gc *gc; /* the tombstone GC (region_gc.c) */
    /* Namespaces, clears, deletions and expiry (region_ns.c, region_v1.c). */
    struct nsreg *nsreg;
    struct event *ns_timer;
    int purging;            /* a deleted namespace's counters may be left: the walk is on */
    uint32_t purge_next;    /* the next id that walk looks at */
    uint64_t expire_seq;    /* expiry looked at every change up to this seq */
    uint64_t expire_resume; /* where the next slice of expiry goes on (0: from expire_seq) */
    int64_t min_ttl_s;      /* the shortest ttl of a live namespace (0: none) */
    struct seq_time *seqt;  /* when the store's seq reached a value, sampled (expiry) */
    size_t nseqt;
    const char *v1_ns; /* an add of /v1/counters: its namespace (the answer's form) */
    int v1_count;      /* add-and-get: the answer has "count" */
    int64_t v1_delta;
    struct metric *m_ns_version;
    struct metric_series *m_clears, *m_del_delete, *m_del_expire, *m_del_ns;
};

/* An answer held until the record it acknowledges is durable: under fsync=always, or
 * (need_sync) a strong-counter replica's answer, which waits for fsync under any policy. */
struct durable_wait {
    struct durable_wait *next;
    struct http_request *req;
    uint64_t pos;
    int need_sync;
    size_t len;
    char body[];
};

/* region_view.c: JSON views */
void region__put_str(struct buf *b, const char *s);
void region__put_identity(struct region *rg, struct buf *b);
int region__node_of(struct region *rg, int rep);
int64_t region__local_of(struct region *rg, const struct gcounter *c);
int64_t region__total_of(struct region *rg, const struct gcounter *c, uint32_t id);
void region__put_counts(struct region *rg, struct buf *b, const struct gcounter *c, uint32_t id);
void region__put_first_counters(struct region *rg, struct buf *b);
void region__respond_out(struct http_request *req, struct region *rg, int status);
size_t region__counter_name(struct region *rg, uint32_t id, char *out);
void region__h_counters(void *role, struct http_request *req);
#define NAMES_TICK_MS 100
void region__on_names_timer(evutil_socket_t fd, short what, void *arg);
void region__h_counters_read(void *role, struct http_request *req);
/* A listing of the counters: every key, or (ns not NULL) namespace ns's keys, named without
 * their prefix; v1: rows {"count","nodes"} and the /v1 head. */
void region__list(struct region *rg, struct http_request *req, const char *ns, size_t nslen,
                  int v1);
/* "count":..,"nodes":{..} of a counter (no braces). */
void region__put_count_nodes(struct region *rg, struct buf *b, const struct gcounter *c,
                             uint32_t id);

/* region_top.c: GET /top and the state it reads, fed as counters change */
struct region_top *region__top_new(uint32_t loaded);
void region__top_free(struct region_top *t);
void region__top_count(struct region *rg, uint32_t id, int64_t amount, int64_t total);
void region__top_merged(struct region *rg, uint32_t id, int64_t amount, int64_t total);
void region__put_changes(struct region *rg, struct buf *b);
void region__h_top(void *role, struct http_request *req);
/* Counter id is gone (dropped) or dead: top forgets it. */
void region__top_forget(struct region *rg, uint32_t id);

/* region_durable.c: the log hooks and held answers */
void region__respond_durable_ex(struct region *rg, struct http_request *req, uint64_t pos,
                                int need_sync);
void region__respond_durable(struct region *rg, struct http_request *req, uint64_t pos);
void region__on_wal_notify(evutil_socket_t fd, short what, void *arg);
void region__on_wal_timer(evutil_socket_t fd, short what, void *arg);
void region__on_wal_kick(evutil_socket_t fd, short what, void *arg);
int region__reserve_log(struct region *rg, struct http_request *req, size_t need);
size_t region__incr_record_max(struct region *rg, uint32_t id, size_t nlen, size_t tlen);
int region__before_merge(void *arg, size_t len);
int region__before_flush(void *arg);
int region__before_send(void *arg);
void region__persist_changed(struct region *rg, uint32_t id);

/* region_incr.c: POST /increment, and one increment of a batch */
void region__h_increment(void *role, struct http_request *req);
struct incr_body;
/* What became of one increment: 200 with its answer appended to rg->out, or an error. */
struct incr_result {
    int status;       /* 200, 400 or 409 */
    const char *code; /* the error's code, when status is not 200 */
    char detail[320];
    uint64_t pos; /* 200: the log position its answer waits for */
};
void region__incr_error(struct incr_result *r, int status, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* Reads an increment object's fields (as POST /increment). @return 0, or -1 with r a 400. */
int region__incr_item(const struct json *item, struct incr_body *ib, const char **token,
                      size_t *tlen, struct incr_result *r);
/* Applies a checked increment as POST /increment does, its answer opened with head.
 * Call after reserving room in the log for it. @return r->status. */
int region__incr_apply(struct region *rg, const struct incr_body *ib, const char *token,
                       size_t tlen, double now, const char *head, struct incr_result *r);

/* region_batch.c: POST /increments */
void region__h_increments(void *role, struct http_request *req);
size_t region__batch_body_limit(void);

/* region_http.c: the endpoints */
void region__handle(struct http_request *req, void *arg);
size_t region__body_limit(const char *path, size_t len, void *arg);

/* region_tokens.c: tokens and their homes */
int region__is_home(struct region *rg, const char *tok, size_t tlen);
void region__tokens_learned(void *arg, uint32_t id, const struct repl_token *el, size_t n);
void region__update_home(struct region *rg);
void region__on_tok_timer(evutil_socket_t fd, short what, void *arg);

/* region_metrics.c */
void region__metrics_register(struct region *rg, const struct config *cfg);

/* region_gc.c: the tombstone GC; its part of GET /admin/sync (",\"tombstones\":{...}") */
void region__gc_start(struct region *rg, struct event_base *base, const struct config *cfg);
void region__gc_free(struct region *rg);
void region__gc_put_status(struct region *rg, struct buf *b);
/* region_ns.c: the namespace register, its endpoints and hooks, deletion of a deleted
 * namespace's counters, expiry */
int region__ns_open(struct region *rg, const struct config *cfg, char *err, size_t errlen);
void region__ns_start(struct region *rg, struct event_base *base);
void region__ns_free(struct region *rg);
void region__ns_metrics(struct region *rg);
void region__h_namespaces(void *role, struct http_request *req);
int region__ns_replicated(void *arg, const char *key, size_t len);
void region__ns_put_ext(void *arg, struct buf *b);
void region__ns_take_ext(void *arg, const struct json *msg);
void region__ns_changed(struct region *rg, uint32_t id);
struct nsreg_entry;
/* The live namespace ns[0..len) for a counter operation: @return it, or NULL after answering
 * 400 (bad name), 404 (unknown or deleted) or 409 (strong: served elsewhere). */
const struct nsreg_entry *region__ns_for_op(struct region *rg, struct http_request *req,
                                            const char *ns, size_t len);
/* The store key of counter name in namespace ns into out (room for GCOUNTER_NAME_MAX + 1).
 * @return its length. */
size_t region__ns_key(const char *ns, size_t nslen, const char *name, size_t nlen, char *out);

/* region_v1.c: /v1/counters/... */
void region__h_v1_counters(void *role, struct http_request *req);

/* region_fold.c: folding */
void region__on_fold_timer(evutil_socket_t fd, short what, void *arg);

#endif
