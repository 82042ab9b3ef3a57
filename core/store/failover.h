/*
 * failover.h - increments that a region took on behalf of another that failed to answer.
 *
 * When the gateway sends an increment to region A and gets no answer, A may or may not
 * have applied it. The gateway then sends it to B with the same token and
 * "failover_from": ["A"]. B applies it and keeps a record here; the records travel to
 * every peer with replication. When A learns of a record naming it, A settles it once:
 * if A had applied that token, A takes its application back (a decrement of the same
 * amount under its own replica), so the increment counts exactly once; if not, A only
 * remembers that the token was applied elsewhere, so a later retry at A is a duplicate.
 *
 * Records and settlements are kept for a day (and at most 100,000 of each).
 * Plain C: no libevent, Lua or curl.
 */
#ifndef COUNTERD_STORE_FAILOVER_H
#define COUNTERD_STORE_FAILOVER_H

#include <stddef.h>
#include <stdint.h>

#define FAILOVER_FROM_MAX 160 /* "us-east,us-west": the regions that failed, comma-separated */

struct failovers;

struct failover_rec {
    int64_t amount;
    char from[FAILOVER_FROM_MAX];
};

struct failovers *failovers_new(void);
void failovers_free(struct failovers *f);

/* Remembers a record (known ones are kept as they are). @return 1 when it was new. */
int failovers_record(struct failovers *f, const char *counter, size_t clen, const char *token,
                     size_t tlen, const struct failover_rec *rec, double now_s);
/* The sequence number of the newest record (0: none). */
uint64_t failovers_seq(const struct failovers *f);
/* Calls fn for every record after seq `after`, oldest first. */
void failovers_foreach(const struct failovers *f, uint64_t after,
                       void (*fn)(void *arg, const char *counter, size_t clen, const char *token,
                                  size_t tlen, double at, const struct failover_rec *rec,
                                  uint64_t seq),
                       void *arg);

/* Whether this region settled (counter, token) already. */
int failovers_settled(struct failovers *f, const char *counter, size_t clen, const char *token,
                      size_t tlen, double now_s);
void failovers_settle(struct failovers *f, const char *counter, size_t clen, const char *token,
                      size_t tlen, double now_s);
/* Calls fn for every settlement, oldest first (for snapshots). */
void failovers_foreach_settled(const struct failovers *f,
                               void (*fn)(void *arg, const char *counter, size_t clen,
                                          const char *token, size_t tlen, double at),
                               void *arg);

/* Whether region is one of the comma-separated names in from. */
int failover_names(const char *from, const char *region);

#endif
