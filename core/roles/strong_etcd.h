/*
 * strong_etcd.h - the strong counter kept in etcd (--strong-backend etcd): the strong
 * role's operations as etcd transactions through etcd 3.4's JSON gateway.
 *
 * Keys (P is --etcd-prefix, default "/counterd/"):
 *   P c/<ns>/<name>     a counter: its value as decimal text ("default" for the default
 *                       namespace, whose store keys carry none)
 *   P tok/<ns>/<token>  an idempotency token: the answer's value (an add's count after it,
 *                       a clear's value before it), on a lease of the namespace's window
 *
 * Every change is one txn: compare the counter's mod_revision (or its absence) with what
 * was last read and every token's absence; put the new value and the tokens; else read the
 * counter and the tokens back, so a conflict costs no extra round trip. Adds to one counter
 * queue while its txn is in flight and then go out together (group commit), each answered
 * with its own value. A token already there answers "duplicate" with its stored value, so
 * a retry after an ambiguous outcome applies exactly once. Reads are linearizable ranges.
 *
 * The role keeps no state of its own: what it caches (the last revision of a counter) is
 * only a guess that a failed compare corrects.
 */
#ifndef COUNTERD_ROLES_STRONG_ETCD_H
#define COUNTERD_ROLES_STRONG_ETCD_H

#include <stddef.h>
#include <stdint.h>

#include "../base/buf.h"
#include "../repl/strong.h"

struct event_base;
struct client;
struct metrics;
struct etcd_strong;

#define ETCD_MAX_ENDPOINTS 8
#define ETCD_MAX_BATCH 48 /* operations in one txn: 2 compares/puts each stay under 128 */

struct etcd_strong_config {
    const char *endpoints; /* "http://h:p,http://h:p": the region's own member first */
    const char *prefix;    /* "/counterd/" */
    int timeout_ms;        /* one call to etcd */
};

/* @return the backend, or NULL with a sentence in err (a bad endpoint list). */
struct etcd_strong *etcd_strong_new(struct event_base *base, struct client *client,
                                    struct metrics *metrics, const struct etcd_strong_config *cfg,
                                    char *err, size_t errlen);
/* Cancels its calls; every pending operation is answered first (no_quorum when it was not
 * sent, ambiguous when it was). */
void etcd_strong_free(struct etcd_strong *e);

/* Queues op (a valid store key); done is called exactly once, from the loop. The result's
 * value of a clear that was a duplicate is the counter's value now. */
void etcd_strong_submit(struct etcd_strong *e, const struct strong_op *op, strong_done_fn done,
                        void *arg);

/* A linearizable read of one counter: status STRONG_OK (found 0 when absent) or
 * STRONG_NO_QUORUM with detail. */
typedef void (*etcd_get_fn)(void *arg, int status, int found, int64_t value, const char *detail);
void etcd_strong_get(struct etcd_strong *e, const char *key, size_t len, etcd_get_fn fn, void *arg);

/* One counter of a listing: its store key ("ns/name", or "name" in the default namespace). */
struct etcd_row {
    const char *key;
    size_t len;
    int64_t value;
};
/* The counters of namespace ns (NULL: all), read in pages of one revision. A listing that
 * stopped at its cap (100,000 counters) is STRONG_OK with detail "truncated". */
typedef void (*etcd_list_fn)(void *arg, int status, const struct etcd_row *rows, size_t n,
                             const char *detail);
void etcd_strong_list(struct etcd_strong *e, const char *ns, etcd_list_fn fn, void *arg);

/* /admin/etcd's body, from the endpoints' last status probes (every 250 ms). */
void etcd_strong_admin(struct etcd_strong *e, struct buf *out);
/* Whether some endpoint answered its last probe with a leader. */
int etcd_strong_healthy(const struct etcd_strong *e);
/* The URL calls go to first now. */
const char *etcd_strong_endpoint(const struct etcd_strong *e);

/* ---------------------------------------------------------------- txn JSON (tests) */

struct etcd_tok {
    const char *key; /* the full etcd key */
    size_t len;
    int put;       /* put it (the operation applied), or only compare its absence */
    int64_t value; /* what it stores */
    int64_t lease; /* 0: none */
};
enum etcd_put { ETCD_PUT_NONE, ETCD_PUT_VALUE, ETCD_PUT_DELETE };
/*
 * Writes the body of /v3/kv/txn: compare key's mod_revision with rev (rev 0: the key is
 * absent) and each token's absence; success: what put says (value) and the tokens with
 * put set; failure: a range of key, then of each token, in order.
 */
void etcd_txn_json(struct buf *out, const char *key, size_t len, int64_t rev, enum etcd_put put,
                   int64_t value, const struct etcd_tok *toks, int ntoks);

/* Whether an etcd error message proves that the request was not applied (no leader, a
 * refused request, a lease not found...). Others (a timeout, a leader change) may have been. */
int etcd_error_not_applied(const char *message);

#endif
