/*
 * strongrep.h - a strong-counter replica's state: what the leader asked it to accept.
 *
 * The strong counter (repl/strong.c) keeps one replica in every region node. A replica
 * remembers, per counter, the last value the leader proposed for it and the ballot of
 * that proposal: (epoch, round). Epochs order leaders (a restarted leader takes a higher
 * one, and the replica promises to refuse older ones); rounds order the proposals of one
 * leader. A proposal with a ballot at least as high as the stored one replaces it, so a
 * late copy of an older round never overwrites a newer value.
 *
 * Plain C: no libevent, Lua or curl. Durability is the caller's (the node's log).
 */
#ifndef COUNTERD_STORE_STRONGREP_H
#define COUNTERD_STORE_STRONGREP_H

#include <stddef.h>
#include <stdint.h>

#include "gstore.h"

/*
 * Values with a meaning of their own (a counter's value stays in [INT64_MIN + 2, INT64_MAX]):
 *   STRONGREP_FORGET  accepting it removes the entry (ballot included): only for entries whose
 *                     loss is harmless, an idempotency token past its window.
 *   STRONGREP_DELETED the entry is a tombstone: a deleted counter, or a token known not to
 *                     have been applied. It keeps its ballot, so a late copy of an older
 *                     proposal never brings the value back.
 */
#define STRONGREP_FORGET INT64_MIN
#define STRONGREP_DELETED (INT64_MIN + 1)

/*
 * Entry names: a store key (gstore_key_valid: "name" or "ns/name"), or an idempotency
 * token's entry "~<ns>/<token>" (token: 1-128 bytes, none below 0x20), which no key can be.
 */
#define STRONGREP_TOKEN_MAX 128
static inline int strongrep_name_valid(const char *s, size_t n)
{
    if (n && s[0] != '~')
        return gstore_key_valid(s, n);
    size_t k = 1;
    while (k < n && s[k] != '/')
        k++;
    if (k == n || !gstore_ns_name_valid(s + 1, k - 1) || n - k - 1 == 0 ||
        n - k - 1 > STRONGREP_TOKEN_MAX)
        return 0;
    for (size_t i = k + 1; i < n; i++)
        if ((unsigned char)s[i] < 0x20)
            return 0;
    return 1;
}

struct strongrep_entry {
    uint64_t epoch, round;
    int64_t value;
};

struct strongrep;

struct strongrep *strongrep_new(void);
void strongrep_free(struct strongrep *s);

/* The highest epoch this replica has promised to (0: none). */
uint64_t strongrep_promised(const struct strongrep *s);
/* Raises the promise to epoch. @return 1 when it rose, 0 when it was already as high. */
int strongrep_promise(struct strongrep *s, uint64_t epoch);

/*
 * Stores value for counter name under ballot (epoch, round) unless the stored ballot is
 * higher. Also raises the promise to epoch.
 * value STRONGREP_FORGET removes the entry instead (when its ballot is not higher).
 * @return 1 when stored (or removed), 0 when an entry with a higher ballot was kept.
 */
int strongrep_accept(struct strongrep *s, const char *name, size_t len, uint64_t epoch,
                     uint64_t round, int64_t value);

/* Stores value for name as it is, under ballot (0, 0): the leader's own maps (a proposal
 * being built, token expiries), where STRONGREP_FORGET is a value like another. */
void strongrep_put(struct strongrep *s, const char *name, size_t len, int64_t value);

/* The entry of counter name, or NULL. */
const struct strongrep_entry *strongrep_get(const struct strongrep *s, const char *name,
                                            size_t len);

size_t strongrep_count(const struct strongrep *s);

/* Calls fn for every entry, in no particular order. */
void strongrep_each(const struct strongrep *s,
                    void (*fn)(void *arg, const char *name, size_t len,
                               const struct strongrep_entry *e),
                    void *arg);

/* Whether ballot (e1, r1) is higher than (e2, r2). */
static inline int strongrep_ballot_gt(uint64_t e1, uint64_t r1, uint64_t e2, uint64_t r2)
{
    return e1 > e2 || (e1 == e2 && r1 > r2);
}

#endif
