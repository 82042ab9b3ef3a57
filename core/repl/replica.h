/*
 * replica.h - the strong counter's replica side, hosted by every region node.
 *
 * The leader (strong.c) talks to it with two messages, both POST with JSON bodies:
 *
 *   /strong/prepare {"epoch":E,"leader":"<id>"}
 *       A leader starting up asks for a promise: this replica refuses every message of an
 *       epoch below E from now on, and answers what it has accepted:
 *       {"node_id","region","durable","promised":E,"entries":[["name",epoch,round,value],...]}
 *   /strong/accept {"epoch":E,"round":R,"leader":"<id>","entries":[["name",value],...]}
 *       The leader proposes new values; the replica stores each unless it holds a higher
 *       ballot for that counter and answers {"node_id","region","durable","accepted":n,"epoch":E}
 *       once the proposal is fsynced (under any fsync policy).
 *
 * "durable" is false on a node without a data directory: what it accepts lives in memory
 * and is gone when it restarts (the leader then counts it toward no majority, see strong.h).
 *
 * A message of an epoch below the promise is refused with 409
 * {"error":"stale_epoch","promised":P,"detail"}. Partitions and the faults policy are the
 * caller's (the region checks them before handing the request here).
 */
#ifndef COUNTERD_REPL_REPLICA_H
#define COUNTERD_REPL_REPLICA_H

#include <stdint.h>

#include "../base/buf.h"
#include "../base/json.h"
#include "../net/http.h"

struct strongrep;
struct wal;

struct replica {
    struct strongrep *state;
    struct wal *wal; /* NULL: memory only */
    const char *node_id, *region;
    struct json_parser *parser;
};

/*
 * Handles POST /strong/prepare or /strong/accept (which one by req->path).
 * @return -1 when req was answered (an error); otherwise the answer is in out and must
 *         be sent once the log is fsynced up to the position returned (0: at once).
 */
int64_t replica_handle(struct replica *r, struct http_request *req, struct buf *out);

#endif
