/*
 * region_durable.c - a region node's log hooks and the answers held until durable.
 *
 * An answer that acknowledges a write never leaves before the record it rests on is
 * written (fsynced, under fsync=always); a write the log cannot take is refused before
 * anything is applied.
 */
#include "region_internal.h"

#include <stdlib.h>
#include <string.h>

#include "../base/mem.h"
#include "../net/http.h"

/* Answers rg->out for req once the log is durable up to pos (now, unless fsync=always
 * or need_sync). */
void region__respond_durable_ex(struct region *rg, struct http_request *req, uint64_t pos,
                                int need_sync)
{
    if (!rg->wal || (wal_policy(rg->wal) != WAL_FSYNC_ALWAYS && !need_sync) || pos == 0) {
        /* The server writes the log (before_flush) before this answer leaves. */
        http_respond_json(req, 200, rg->out.data, rg->out.len);
        buf_trim(&rg->out, 1u << 20);
        return;
    }
    struct durable_wait *w = xmalloc(sizeof *w + rg->out.len);
    w->next = NULL;
    w->req = req;
    w->pos = pos;
    w->need_sync = need_sync;
    w->len = rg->out.len;
    memcpy(w->body, rg->out.data, rg->out.len);
    if (rg->waits_tail)
        rg->waits_tail->next = w;
    else
        rg->waits = w;
    rg->waits_tail = w;
}

void region__respond_durable(struct region *rg, struct http_request *req, uint64_t pos)
{
    region__respond_durable_ex(rg, req, pos, 0);
}

/*
 * Releases the held answers whose records are durable now. They are in log order, and
 * the fsynced position never passes the durable one, so the head is always the next.
 */
static void release_durable(struct region *rg)
{
    uint64_t durable = wal_durable(rg->wal), synced = wal_synced(rg->wal);
    int failed = wal_sync_failed(rg->wal); /* a full disk only delays them */
    while (rg->waits && (rg->waits->pos <= (rg->waits->need_sync ? synced : durable) || failed)) {
        struct durable_wait *w = rg->waits;
        rg->waits = w->next;
        if (!rg->waits)
            rg->waits_tail = NULL;
        if (w->pos <= (w->need_sync ? synced : durable))
            http_respond_json(w->req, 200, w->body, w->len);
        else
            http_respond_error(w->req, 503, "unavailable",
                               "the increment was applied but could not be made durable "
                               "(disk error); retry with the same idempotency_token");
        free(w);
    }
}

void region__on_wal_notify(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct region *rg = arg;
    wal_notified(rg->wal);
    release_durable(rg);
    /* A zero timeout runs after the loop's next poll, which does not wait: the clients just
     * answered send again meanwhile, and their records join the next fsync (wal_kick). */
    static const struct timeval now = {0, 0};
    if (wal_policy(rg->wal) == WAL_FSYNC_ALWAYS)
        event_add(rg->wal_kick, &now);
}

void region__on_wal_kick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct region *rg = arg;
    wal_kick(rg->wal);
}

void region__on_wal_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct region *rg = arg;
    wal_write(rg->wal); /* what merges of answers to our own /sync changed */
    wal_tick(rg->wal, rg->store, rg->dedup);
    if (rg->waits)
        release_durable(rg); /* a failed fsync is only noticed here */
}

/*
 * Whether the log can take need more bytes: asked before a write applies anything. On a
 * full or failed disk it answers 503 unavailable (nothing applied) and returns -1.
 */
int region__reserve_log(struct region *rg, struct http_request *req, size_t need)
{
    if (!rg->wal || wal_reserve(rg->wal, need) == 0)
        return 0;
    const char *why = wal_status(rg->wal);
    http_respond_error(req, 503, "unavailable",
                       "%s: this node cannot write its log, so it applies no writes until it "
                       "can (it retries by itself); nothing was applied (%s)",
                       strncmp(why, "disk_full", 9) == 0 ? "the disk is full" : "disk error", why);
    return -1;
}

/* Log bytes one increment may take: its counter's record (one entry, one token-set
 * element and one folded replica more than now, and its two floors), token and answer. */
size_t region__incr_record_max(struct region *rg, uint32_t id, size_t nlen, size_t tlen)
{
    const struct gcounter *c = id == GSTORE_NONE ? NULL : gstore_counter(rg->store, id);
    size_t entries = (c ? gstore_counter_entries(c) : 0) + 1;
    size_t elements = (id == GSTORE_NONE ? 0 : tokset_elements(rg->tokset, id)) + 1;
    const uint16_t *f;
    size_t folded = (id == GSTORE_NONE ? 0 : gstore_folded_list(rg->store, id, &f)) + 1;
    return 256 + 2 * (nlen + tlen) + 3 * entries * (GSTORE_REPLICA_NAME_MAX + 18) +
           elements * (TOKSET_TOKEN_MAX + 16) + folded * (GSTORE_REPLICA_NAME_MAX + 1);
}

/* Before a peer's /sync answer is merged: room in the log for what it may change (as much
 * as the /sync handler asks of a request of that size). */
int region__before_merge(void *arg, size_t len)
{
    struct region *rg = arg;
    return rg->wal ? wal_reserve(rg->wal, 2 * len + (64u << 10)) : 0;
}

/* The server calls this before any answer of a loop iteration leaves: the log first. */
int region__before_flush(void *arg)
{
    struct region *rg = arg;
    return rg->wal ? wal_write(rg->wal) : 0;
}

/*
 * Before a /sync push leaves: the log first, as for an answer, so a crash never takes
 * back a change a peer holds (that is what lets a restart keep the replica id). After a
 * failed write the push may go only once the run file is gone (the next start then mints
 * a new id).
 */
int region__before_send(void *arg)
{
    struct region *rg = arg;
    if (!rg->wal)
        return 0;
    int rc = wal_write(rg->wal);
    wal_synced(rg->wal); /* notices a failed fsync */
    if (rc < 0 || wal_failed(rg->wal))
        return wal_forget_run(rg->wal);
    return 0;
}

void region__persist_changed(struct region *rg, uint32_t id)
{
    if (rg->wal)
        wal_append(rg->wal, rg->store, id, NULL, 0, NULL, 0);
}
