/*
 * nsreg.h - the namespace register: each namespace's configuration (type, ttl, idempotency
 * window), as a versioned register per namespace (API.md, "Namespaces").
 *
 * Every entry carries a version and the node that wrote it; a merge keeps, per namespace,
 * the entry with the greater (version, updated_by), so every node converges on the same
 * table whatever order the entries reach it in. A deletion is an entry too (deleted set),
 * so it wins over the older configurations it replaces. Namespace "default" is always
 * there (version 0 until someone sets its ttl or window). The table is saved as a JSON file
 * written atomically (a temporary file, fsync, rename, fsync of the directory); without a
 * path it lives in memory only.
 *
 * Plain C: no libevent, Lua or curl. Not thread-safe; one event loop owns it.
 */
#ifndef COUNTERD_STORE_NSREG_H
#define COUNTERD_STORE_NSREG_H

#include <stddef.h>
#include <stdint.h>

#include "gstore.h"

struct buf;
struct json;

enum nsreg_type { NSREG_EVENTUAL = 0, NSREG_REGIONAL = 1, NSREG_STRONG = 2 };

#define NSREG_DEFAULT "default"
#define NSREG_WINDOW_DEFAULT 600
#define NSREG_WINDOW_MAX 86400
#define NSREG_TTL_MAX 315360000
#define NSREG_MAX 1024     /* namespaces in the table, deleted ones included */
#define NSREG_NODE_MAX 200 /* bytes of updated_by (a node id) */

struct nsreg_entry {
    char name[GSTORE_NS_MAX + 1];
    int type; /* enum nsreg_type */
    int64_t ttl_s, window_s;
    uint64_t version;
    char updated_by[NSREG_NODE_MAX + 1];
    double updated_at; /* unix seconds */
    int deleted;
};

struct nsreg;

/* A register holding "default" only; path (may be NULL: memory only) is its file. */
struct nsreg *nsreg_new(const char *path);
void nsreg_free(struct nsreg *r);

/* Reads the file (absent: nothing to read). @return 0, or -1 with a sentence in err. */
int nsreg_load(struct nsreg *r, char *err, size_t errlen);
/* Writes the file atomically (no path: nothing). @return 0, or -1 with a sentence in err. */
int nsreg_save(struct nsreg *r, char *err, size_t errlen);

/* The entry of namespace name (deleted ones included), or NULL. */
const struct nsreg_entry *nsreg_get(const struct nsreg *r, const char *name, size_t len);
/* The entry of the namespace of a store key ("ns/name", or a bare name: "default"); NULL
 * when that namespace is not in the table. */
const struct nsreg_entry *nsreg_of_key(const struct nsreg *r, const char *key, size_t len);
size_t nsreg_count(const struct nsreg *r);
/* The i-th entry (< nsreg_count), in the order they were first seen. */
const struct nsreg_entry *nsreg_at(const struct nsreg *r, size_t i);
/* The greatest version in the table. */
uint64_t nsreg_max_version(const struct nsreg *r);
/* Whether the table holds anything but "default" at version 0 (what a peer need not get). */
int nsreg_nontrivial(const struct nsreg *r);
/* Changes made to the table since it was created (a merge that took something, a set). */
uint64_t nsreg_generation(const struct nsreg *r);

/*
 * Merges one entry: kept when its namespace is new or (version, updated_by) is greater
 * than the entry held. @return 1 when taken, 0 when not, -1 when the table is full.
 */
int nsreg_merge(struct nsreg *r, const struct nsreg_entry *in);

/* @return the type's name ("eventual", "regional", "strong"). */
const char *nsreg_type_name(int type);
/* @return the type named s[0..n), or -1. */
int nsreg_type_parse(const char *s, size_t n);

/* Appends one entry as {"type",...,"deleted"} (without the namespace's name). */
void nsreg_put_entry(struct buf *b, const struct nsreg_entry *e);
/* The same members without the braces. */
void nsreg_put_fields(struct buf *b, const struct nsreg_entry *e);
/* Puts back an entry as it was before a change that could not be saved (NULL: removes
 * namespace name, which was new). */
void nsreg_restore(struct nsreg *r, const char *name, const struct nsreg_entry *old);
/* Appends the table as {"<ns>":{...},...}. */
void nsreg_encode(const struct nsreg *r, struct buf *b);
/*
 * Merges a table as nsreg_encode writes it (entries that are not valid are skipped and
 * counted in *bad, which may be NULL). @return how many entries were taken.
 */
int nsreg_decode(struct nsreg *r, const struct json *obj, int *bad);

#endif
