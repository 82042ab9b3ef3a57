/*
 * repl_merge.c - a /sync body a peer sent, read and merged into the store (see
 * repl_internal.h; wire format at the top of repl.c). Entries this node
 * cannot hold are skipped, counted, logged once per peer and reason, and listed in the
 * answer; a body that is malformed as a whole merges nothing.
 *
 * It never sends anything and never touches a peer's round state.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../base/hash.h"
#include "../base/log.h"
#include "../base/mem.h"
#include "../obs/metrics.h"
#include "../store/tokset.h"
#include "repl_internal.h"

/* ---------------------------------------------------------------- decoding and merging */

static int merr(struct merge_error *e, int status, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int merr(struct merge_error *e, int status, const char *code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    e->status = status;
    e->code = code;
    vsnprintf(e->detail, sizeof e->detail, fmt, ap);
    va_end(ap);
    return -1;
}

/* Index of the item called name, adding it when absent (open addressing over items). */
static uint32_t item_slot(struct repl *r, const char *name, uint32_t len)
{
    uint32_t mask = (uint32_t)r->seen_cap - 1;
    uint32_t i = (uint32_t)hash_bytes(name, len) & mask;
    for (;; i = (i + 1) & mask) {
        uint32_t v = r->seen[i];
        if (v == 0) {
            uint32_t k = repl__item_new(r, name, len);
            r->seen[i] = k + 1;
            return k;
        }
        struct in_item *it = &r->items[v - 1];
        if (it->len == len && memcmp(it->name, name, len) == 0)
            return v - 1;
    }
}

static void push_raw(struct repl *r, uint32_t item, int rep, int64_t pos, int64_t neg)
{
    if (r->nraw == r->raw_cap) {
        r->raw_cap = r->raw_cap ? r->raw_cap * 2 : 1024;
        r->raw = xrealloc(r->raw, r->raw_cap * sizeof *r->raw);
        r->entries = xrealloc(r->entries, r->raw_cap * sizeof *r->entries);
        r->raw_item = xrealloc(r->raw_item, r->raw_cap * sizeof *r->raw_item);
    }
    r->raw[r->nraw].rep = rep;
    r->raw[r->nraw].pos = pos;
    r->raw[r->nraw].neg = neg;
    r->raw_item[r->nraw] = item;
    r->nraw++;
}

/* s[0..n) cut to fit dst (at a UTF-8 boundary), NUL-terminated. */
static void copy_cut(char *dst, size_t cap, const char *s, size_t n)
{
    if (n >= cap) {
        n = cap - 1;
        while (n > 0 && ((unsigned char)s[n] & 0xC0) == 0x80)
            n--;
    }
    memcpy(dst, s, n);
    dst[n] = '\0';
}

/* Whether (peer, what) is new: what is logged once per peer, in at most REJECT_LOGGED_MAX
 * pairs (beyond, the metrics still count). */
int repl__first_time(struct repl *r, const char *peer, const char *what)
{
    uint32_t h = (uint32_t)(hash_bytes(peer, strlen(peer)) * 31 + hash_bytes(what, strlen(what)));
    for (int i = 0; i < r->nlogged; i++)
        if (r->logged[i] == h)
            return 0;
    if (r->nlogged == REJECT_LOGGED_MAX)
        return 0;
    r->logged[r->nlogged++] = h;
    return 1;
}

/* Counters sent to an original-format peer without their decrements: counted, logged once. */
void repl__decs_unsent(struct repl *r, const char *peer, int n)
{
    if (!n)
        return;
    const char *lv[1] = {peer};
    metric_add(metric_series(r->m_decs, lv), n);
    if (repl__first_time(r, peer, "decrements"))
        log_warn("peer %s speaks the original lab's /sync and cannot take decrements: "
                 "counters with decrements reach it as their increments only, and its totals "
                 "of those differ (counterd_sync_decrements_unsent_total)",
                 peer);
}

/*
 * Skips one entry (node NULL: every entry of the counter) a message carried: counted per
 * sender and reason, logged once per sender and reason, and listed in the answer.
 */
static void reject(struct repl *r, const char *counter, size_t clen, const char *node, size_t nlen,
                   const char *reason, uint64_t entries)
{
    const char *peer = r->merge_peer ? r->merge_peer : "unknown";
    const char *lv[2] = {peer, reason};
    metric_add(metric_series(r->m_rejected, lv), (double)entries);
    if (r->nlisted < REJECT_LIST_MAX) {
        struct reject *x = &r->rejects[r->nlisted++];
        copy_cut(x->counter, sizeof x->counter, counter, clen);
        copy_cut(x->node, sizeof x->node, node ? node : "", node ? nlen : 0);
        x->reason = reason;
    }
    r->nrejects += entries;
    if (!repl__first_time(r, peer, reason))
        return;
    char cn[64], nn[64];
    copy_cut(cn, sizeof cn, counter, clen);
    copy_cut(nn, sizeof nn, node ? node : "*", node ? nlen : 1);
    for (char *q = cn; *q; q++)
        *q = (unsigned char)*q < 0x20 ? '?' : *q;
    for (char *q = nn; *q; q++)
        *q = (unsigned char)*q < 0x20 ? '?' : *q;
    log_warn("sync from %s: skipped entries it sent (%s), first counter \"%s\" node \"%s\"; the "
             "rest of its messages is merged (counterd_sync_rejected_entries_total counts them; "
             "logged once per peer and reason)",
             peer, reason, cn, nn);
}

/* Replica id name[0..len) as the store interns it, when it is a valid one: @return its
 * number, -1 when it is not a valid replica id, -2 when the store has no room. */
static int entry_replica(struct repl *r, const char *name, size_t len)
{
    for (unsigned i = 0; i < 4; i++)
        if (len && r->rep_seen[i].len == len && memcmp(r->rep_seen[i].name, name, len) == 0)
            return r->rep_seen[i].rep;
    if (!gstore_counter_replica_node_len(name, len))
        return -1;
    int rep = gstore_replica(r->store, name, len);
    if (rep < 0)
        return -2;
    unsigned k = r->rep_seen_next++ & 3;
    memcpy(r->rep_seen[k].name, name, len);
    r->rep_seen[k].len = len;
    r->rep_seen[k].rep = rep;
    return rep;
}

/*
 * Reads one map ("counts" or "decrements") of a /sync body into items and raw entries.
 * Entries this node cannot hold are skipped (see reject()); only a map that is not an
 * object fails the message.
 */
static int read_map(struct repl *r, const struct json *map, const char *what, int is_neg,
                    struct merge_error *e)
{
    if (!map)
        return 0;
    if (map->type != JSON_OBJ)
        return merr(e, 400, "bad_field", "%s must be an object of counters", what);
    for (uint32_t i = 0; i < map->len; i++) {
        const struct json_member *m = &map->u.members[i];
        const struct json *vec = &m->val;
        if (!gstore_key_valid(m->key, m->key_len)) {
            reject(r, m->key, m->key_len, NULL, 0, "bad_name",
                   vec->type == JSON_OBJ && vec->len ? vec->len : 1);
            continue;
        }
        if (!repl__replicated(r, m->key, m->key_len)) {
            if (!is_neg) /* counted once, where its entries are */
                repl__ignore(r);
            continue;
        }
        if (vec->type != JSON_OBJ) {
            reject(r, m->key, m->key_len, NULL, 0, "not_an_object", 1);
            continue;
        }
        uint32_t idx = item_slot(r, m->key, m->key_len);
        struct in_item *it = &r->items[idx];
        if (is_neg)
            it->in_decs = 1;
        else
            it->in_counts = 1; /* a name given twice: both merge, by max */
        for (uint32_t k = 0; k < vec->len; k++) {
            const struct json_member *en = &vec->u.members[k];
            const struct json *v = &en->val;
            const char *why = NULL;
            int rep = entry_replica(r, en->key, en->key_len);
            if (rep == -1)
                why = "bad_node_id";
            else if (v->type == JSON_INT && v->u.i < 0)
                why = "negative";
            else if (v->type == JSON_NUM && (v->flags & JSON_F_BIGINT))
                why = v->num < 0 ? "negative" : "out_of_range";
            else if (v->type != JSON_INT)
                why = "not_an_integer";
            else if (rep < 0)
                why = "too_many_replicas";
            if (why) {
                reject(r, m->key, m->key_len, en->key, en->key_len, why, 1);
                r->items[idx].partial = 1;
                continue;
            }
            push_raw(r, idx, rep, is_neg ? 0 : v->u.i, is_neg ? v->u.i : 0);
            it->n++;
        }
    }
    return 0;
}

/* The item of a counter named in a side map of a /sync body (folded, floors, life): NULL
 * for a bad key (rejected here) or a counter this node does not replicate (counted with
 * its entries). */
static struct in_item *side_item(struct repl *r, const struct json_member *m)
{
    if (!gstore_key_valid(m->key, m->key_len)) {
        reject(r, m->key, m->key_len, NULL, 0, "bad_name", 1);
        return NULL;
    }
    if (!repl__replicated(r, m->key, m->key_len))
        return NULL;
    return &r->items[item_slot(r, m->key, m->key_len)];
}

/*
 * Reads the "folded" map of a /sync body: each counter's folded replicas, into fold_in by
 * item. A list this node cannot take marks its item (it->fbad): that counter is skipped
 * whole, since its entries hold the folded values. Only a map that is not an object fails
 * the message.
 */
static int read_folded(struct repl *r, const struct json *map, struct merge_error *e)
{
    r->nfold_in = 0;
    if (!map || map->type == JSON_NULL)
        return 0;
    if (map->type != JSON_OBJ)
        return merr(e, 400, "bad_field", "folded must be an object of counters");
    for (uint32_t i = 0; i < map->len; i++) {
        const struct json_member *m = &map->u.members[i];
        const struct json *list = &m->val;
        struct in_item *it = side_item(r, m);
        if (!it)
            continue;
        if (list->type != JSON_ARR) {
            it->fbad = "folded_not_a_list";
            continue;
        }
        if (it->nf) {
            it->fbad = "folded_twice";
            continue;
        }
        it->ffirst = (uint32_t)r->nfold_in;
        for (uint32_t k = 0; k < list->len && !it->fbad; k++) {
            const struct json *v = &list->u.items[k];
            int rep = -1;
            size_t node_len =
                v->type == JSON_STR ? gstore_counter_replica_node_len(v->u.s, v->len) : 0;
            if (!node_len || node_len == v->len) /* a bare node id is never folded */
                it->fbad = "folded_bad_id";
            else if (r->self_rep && strcmp(v->u.s, r->self_rep) == 0)
                it->fbad = "folds_this_replica";
            else if (list->len > GCOUNTER_MAX_FOLDED)
                it->fbad = "too_many_folded";
            else if ((rep = gstore_replica(r->store, v->u.s, v->len)) < 0)
                it->fbad = "too_many_replicas";
            if (it->fbad)
                break;
            repl__fold_push(r, it, rep);
        }
    }
    return 0;
}

/* The reasons a floor cannot be taken, for the clear floor ([0]) and the delete floor. */
enum { FW_OBJECT, FW_TWICE, FW_NODE, FW_NEGATIVE, FW_INTEGER, FW_RANGE, FW_FULL, FW_ORPHAN };
static const char *const floor_why[2][8] = {
    {"floor_not_an_object", "floor_twice", "floor_bad_node_id", "floor_negative",
     "floor_not_an_integer", "floor_out_of_range", "too_many_replicas", "floor_without_entry"},
    {"dfloor_not_an_object", "dfloor_twice", "dfloor_bad_node_id", "dfloor_negative",
     "dfloor_not_an_integer", "dfloor_out_of_range", "too_many_replicas", "dfloor_without_entry"}};

void repl__life_push(struct repl *r, struct in_item *it, int dfloor, int rep, int64_t pos,
                     int64_t neg)
{
    uint32_t first = dfloor ? it->dfirst : it->lfirst, *n = dfloor ? &it->nd : &it->nl;
    for (uint32_t k = first; k < first + *n; k++)
        if (r->life_in[k].rep == rep) { /* "pos" and "neg" of one replica: one entry */
            if (pos > r->life_in[k].pos)
                r->life_in[k].pos = pos;
            if (neg > r->life_in[k].neg)
                r->life_in[k].neg = neg;
            return;
        }
    if (r->nlife_in == r->life_in_cap) {
        r->life_in_cap = r->life_in_cap ? r->life_in_cap * 2 : 256;
        r->life_in = xrealloc(r->life_in, r->life_in_cap * sizeof *r->life_in);
    }
    r->life_in[r->nlife_in++] = (struct gentry){rep, pos, neg};
    (*n)++;
}

/* One side ("pos" or "neg") of a floor of item it. @return 0, or -1 with it->lbad set. */
static int read_floor_side(struct repl *r, struct in_item *it, const struct json *side, int dfloor,
                           int is_neg)
{
    if (!side || side->type == JSON_NULL)
        return 0;
    if (side->type != JSON_OBJ) {
        it->lbad = floor_why[dfloor][FW_OBJECT];
        return -1;
    }
    for (uint32_t k = 0; k < side->len; k++) {
        const struct json_member *en = &side->u.members[k];
        const struct json *v = &en->val;
        int rep = entry_replica(r, en->key, en->key_len), why = -1;
        if (rep == -1)
            why = FW_NODE;
        else if ((v->type == JSON_INT && v->u.i < 0) ||
                 (v->type == JSON_NUM && (v->flags & JSON_F_BIGINT) && v->num < 0))
            why = FW_NEGATIVE;
        else if (v->type == JSON_NUM && (v->flags & JSON_F_BIGINT))
            why = FW_RANGE;
        else if (v->type != JSON_INT)
            why = FW_INTEGER;
        else if (rep < 0)
            why = FW_FULL;
        if (why >= 0) {
            it->lbad = floor_why[dfloor][why];
            return -1;
        }
        repl__life_push(r, it, dfloor, rep, is_neg ? 0 : v->u.i, is_neg ? v->u.i : 0);
    }
    return 0;
}

/*
 * Reads "floors" (dfloor 0) or "dfloors" of a /sync body: {"<key>":{"pos":{"<replica>":N},
 * "neg":{...}}}. A floor this node cannot take marks its item (it->lbad): that counter is
 * skipped whole. Only a map that is not an object fails the message.
 */
static int read_floors(struct repl *r, const struct json *map, int dfloor, struct merge_error *e)
{
    if (!map || map->type == JSON_NULL)
        return 0;
    if (map->type != JSON_OBJ)
        return merr(e, 400, "bad_field", "%s must be an object of counters",
                    dfloor ? "dfloors" : "floors");
    for (uint32_t i = 0; i < map->len; i++) {
        const struct json_member *m = &map->u.members[i];
        struct in_item *it = side_item(r, m);
        if (!it)
            continue;
        uint8_t *has = dfloor ? &it->has_dfloor : &it->has_floor;
        if (it->lbad)
            continue;
        if (*has) {
            it->lbad = floor_why[dfloor][FW_TWICE];
            continue;
        }
        if (m->val.type != JSON_OBJ) {
            it->lbad = floor_why[dfloor][FW_OBJECT];
            continue;
        }
        *has = it->has_life = 1;
        *(dfloor ? &it->dfirst : &it->lfirst) = (uint32_t)r->nlife_in;
        if (read_floor_side(r, it, json_get(&m->val, "pos"), dfloor, 0) == 0)
            read_floor_side(r, it, json_get(&m->val, "neg"), dfloor, 1);
    }
    return 0;
}

/* Reads "life" of a /sync body: {"<key>":["deleted","sealed"]} (flags GLIFE_*). */
static int read_life(struct repl *r, const struct json *map, struct merge_error *e)
{
    if (!map || map->type == JSON_NULL)
        return 0;
    if (map->type != JSON_OBJ)
        return merr(e, 400, "bad_field", "life must be an object of counters");
    for (uint32_t i = 0; i < map->len; i++) {
        const struct json_member *m = &map->u.members[i];
        const struct json *list = &m->val;
        struct in_item *it = side_item(r, m);
        if (!it)
            continue;
        if (it->lbad)
            continue;
        if (list->type != JSON_ARR) {
            it->lbad = "life_not_a_list";
            continue;
        }
        if (it->lflags) {
            it->lbad = "life_twice";
            continue;
        }
        it->has_life = 1;
        for (uint32_t k = 0; k < list->len && !it->lbad; k++) {
            const struct json *v = &list->u.items[k];
            if (v->type == JSON_STR && strcmp(v->u.s, "deleted") == 0)
                it->lflags |= GLIFE_DELETED;
            else if (v->type == JSON_STR && strcmp(v->u.s, "sealed") == 0)
                it->lflags |= GLIFE_SEALED;
            else
                it->lbad = "life_bad_flag";
        }
    }
    return 0;
}

/* Whether every replica floor run[0..n) names has an entry in en[0..ne). */
static int floor_has_entries(const struct gentry *run, uint32_t n, const struct gentry *en,
                             uint32_t ne)
{
    for (uint32_t i = 0; i < n; i++) {
        uint32_t k = 0;
        while (k < ne && en[k].rep != run[i].rep)
            k++;
        if (k == ne)
            return 0;
    }
    return 1;
}

/* Why item it's lifecycle state cannot be taken (its counter is then skipped whole), or NULL;
 * fills *life. */
static const char *item_life(struct repl *r, struct in_item *it, struct glife *life)
{
    if (it->lbad || !it->has_life)
        return it->lbad;
    if (it->partial)
        return "life_with_skipped_entries"; /* its floors may name those */
    const struct gentry *en = it->n ? r->entries + it->first : NULL;
    *life = (struct glife){.floor = it->nl ? r->life_in + it->lfirst : NULL,
                           .nfloor = it->nl,
                           .dfloor = it->nd ? r->life_in + it->dfirst : NULL,
                           .ndfloor = it->nd,
                           .flags = it->lflags};
    if (!floor_has_entries(life->floor, it->nl, en, it->n))
        return floor_why[0][FW_ORPHAN];
    if (!floor_has_entries(life->dfloor, it->nd, en, it->n))
        return floor_why[1][FW_ORPHAN];
    return NULL;
}

int repl__replicated(const struct repl *r, const char *key, size_t len)
{
    return !r->hooks.replicated || r->hooks.replicated(r->hooks.arg, key, len);
}

void repl__ignore(struct repl *r)
{
    r->nignored++;
    metric_add(r->m_ignored, 1);
}

/*
 * Merges a /sync body (request or answer) into the store, tagging what it changes with
 * origin (the sender's peer number + 1, or 0). Entries it cannot hold are skipped and
 * recorded (r->rejects, r->nrejects); the rest is merged.
 * @return the number of replica entries that changed, or -1 with e filled when the
 *         message itself is malformed (nothing merged).
 */
/* Sizes and clears the table of names (open addressing) for want names. */
static void seen_reset(struct repl *r, size_t want)
{
    size_t cap = 16;
    while (cap < want * 2)
        cap *= 2;
    if (cap > r->seen_cap) {
        free(r->seen);
        r->seen = xmalloc(cap * sizeof *r->seen);
    }
    r->seen_cap = cap;
    memset(r->seen, 0, cap * sizeof *r->seen);
}

/* Groups the entries by counter (a counting sort), so each item's run is contiguous. */
static void group_entries(struct repl *r)
{
    uint32_t off = 0;
    for (size_t i = 0; i < r->nitems; i++) {
        r->items[i].first = off;
        off += r->items[i].n;
        r->items[i].n = 0;
    }
    for (size_t k = 0; k < r->nraw; k++) {
        struct in_item *it = &r->items[r->raw_item[k]];
        r->entries[it->first + it->n++] = r->raw[k];
    }
}

/*
 * The lifecycle state to merge with a counter's entries from a node that does not know the
 * lifecycle (the original lab's, a counterd before "life"), or NULL. Its state carries no
 * deletion because it cannot, not because the counter lived again after a drop: a sealed
 * tombstone here must merge its entries (an increment the deletion had not observed still
 * revives it) rather than take them whole as a new life. Its own flags, given back, say so.
 */
static struct glife *unaware_life(struct repl *r, uint32_t id, struct glife *buf)
{
    struct glife l;
    if (r->merge_aware || !gstore_life(r->store, id, &l) || !(l.flags & GLIFE_SEALED))
        return NULL;
    *buf = (struct glife){.flags = l.flags};
    return buf;
}

/*
 * Whether the state of it is a sealed tombstone with nothing above its delete floor. A
 * seal means every node held the deletion, so a node without the counter has dropped it
 * (or never had it): such a state is not worth creating the counter again for.
 */
static int sealed_and_dead(const struct repl *r, const struct in_item *it, const struct glife *life)
{
    unsigned both = GLIFE_DELETED | GLIFE_SEALED;
    if (!life || (life->flags & both) != both || it->nf)
        return 0;
    const struct gentry *en = r->entries + it->first;
    for (size_t i = 0; i < it->n; i++) {
        size_t j = 0;
        while (j < life->ndfloor && life->dfloor[j].rep != en[i].rep)
            j++;
        if (j == life->ndfloor || en[i].pos > life->dfloor[j].pos ||
            en[i].neg > life->dfloor[j].neg)
            return 0;
    }
    return 1;
}

/* Merges one counter of the body, or skips it whole (recorded as rejected).
 * @return the number of replica entries that changed. */
static int merge_item(struct repl *r, struct in_item *it, int origin)
{
    if (!it->fbad && it->nf && it->partial)
        it->fbad = "folded_with_skipped_entries"; /* its folded values may be in those */
    struct glife lifebuf, *life = it->has_life ? &lifebuf : NULL;
    const char *lbad = it->fbad ? NULL : item_life(r, it, &lifebuf);
    if (it->fbad || lbad) {
        reject(r, it->name, it->len, NULL, 0, it->fbad ? it->fbad : lbad, it->n ? it->n : 1);
        return 0;
    }
    if (it->n == 0 && it->nf == 0 && !life)
        return 0; /* nothing to merge (or every entry skipped): change and create nothing */
    if (sealed_and_dead(r, it, life) && gstore_find(r->store, it->name, it->len) == GSTORE_NONE)
        return 0; /* dropped here already: not brought back to be dropped again */
    const int *fl = it->nf ? r->fold_in + it->ffirst : NULL;
    const struct gentry *en = it->n ? r->entries + it->first : NULL; /* may be NULL */
    /* One look-up, not two, for a counter this node does not hold yet (a full pull is
     * mostly those): what a new counter could take, then the counter found or created,
     * checked again only when it existed (the store holds as many counters as before: ids
     * of dropped counters are given again, so an id says nothing of its age). */
    int ck = gstore_merge_life_check(r->store, GSTORE_NONE, en, it->n, fl, it->nf, life);
    uint32_t had = gstore_live(r->store);
    it->id = ck < 0 ? gstore_find(r->store, it->name, it->len)
                    : gstore_create(r->store, it->name, it->len);
    if (it->id != GSTORE_NONE && (ck < 0 || gstore_live(r->store) == had)) {
        life = life ? life : unaware_life(r, it->id, &lifebuf);
        ck = gstore_merge_life_check(r->store, it->id, en, it->n, fl, it->nf, life);
    }
    if (ck < 0) {
        reject(r, it->name, it->len, NULL, 0,
               ck == GSTORE_EFOLDED ? "too_many_folded" : "too_many_replicas", it->n ? it->n : 1);
        return 0;
    }
    gstore_wide was = r->hooks.added && it->id != GSTORE_NONE
                          ? gstore_value(r->store, gstore_counter(r->store, it->id))
                          : 0;
    if (it->id == GSTORE_NONE)
        return 0; /* a name the store cannot hold (read_map let none through) */
    int rc = gstore_merge_life(r->store, it->id, en, it->n, fl, it->nf, life, origin);
    if (rc <= 0)
        return 0;
    r->merged_counters++;
    if (r->hooks.changed)
        r->hooks.changed(r->hooks.arg, it->id);
    if (r->hooks.added)
        r->hooks.added(
            r->hooks.arg, it->id,
            gstore_clamp(gstore_value(r->store, gstore_counter(r->store, it->id)) - was, NULL));
    return rc;
}

void repl__reject(struct repl *r, const char *counter, size_t clen, const char *node, size_t nlen,
                  const char *reason, uint64_t entries)
{
    reject(r, counter, clen, node, nlen, reason, entries);
}

void repl__push_entry(struct repl *r, uint32_t item, int rep, int64_t pos, int64_t neg)
{
    push_raw(r, item, rep, pos, neg);
}

/* Adds folded replica rep to item it's list (the items' folded replicas, in order). */
void repl__fold_push(struct repl *r, struct in_item *it, int rep)
{
    if (r->nfold_in == r->fold_in_cap) {
        r->fold_in_cap = r->fold_in_cap ? r->fold_in_cap * 2 : 256;
        r->fold_in = xrealloc(r->fold_in, r->fold_in_cap * sizeof *r->fold_in);
    }
    r->fold_in[r->nfold_in++] = rep;
    it->nf++;
}

uint32_t repl__item_new(struct repl *r, const char *name, uint32_t len)
{
    if (r->nitems == r->items_cap) {
        r->items_cap = r->items_cap ? r->items_cap * 2 : 256;
        r->items = xrealloc(r->items, r->items_cap * sizeof *r->items);
    }
    struct in_item *it = &r->items[r->nitems];
    memset(it, 0, sizeof *it);
    it->name = name;
    it->len = len;
    it->id = GSTORE_NONE;
    return (uint32_t)r->nitems++;
}

int repl__merge_items(struct repl *r, int origin)
{
    group_entries(r);
    int changed = 0;
    for (size_t i = 0; i < r->nitems; i++)
        changed += merge_item(r, &r->items[i], origin);
    return changed;
}

int repl__merge_body(struct repl *r, const struct json *root, int origin, struct merge_error *e)
{
    const struct json *counts = json_get(root, "counts");
    const struct json *decs = json_get(root, "decrements");
    const struct json *folded = json_get(root, "folded");
    const struct json *floors = json_get(root, "floors"), *dfloors = json_get(root, "dfloors");
    const struct json *life = json_get(root, "life");
    r->nrejects = 0;
    r->nignored = 0;
    r->nlife_in = 0;
    r->merge_aware = 0;
    const struct json *feat = json_get(root, "features");
    for (uint32_t i = 0; feat && feat->type == JSON_ARR && i < feat->len; i++)
        r->merge_aware |=
            feat->u.items[i].type == JSON_STR && strcmp(feat->u.items[i].u.s, "life") == 0;
    r->nlisted = 0;
    r->nitems = r->nraw = 0;
    r->merged_counters = 0;
    if (r->cin) { /* a compact body: its counters are in the binary section */
        e->status = 400;
        e->code = "bad_body";
        return repl__compact_merge(r, origin, e->detail, sizeof e->detail);
    }
    if (!counts || counts->type != JSON_OBJ)
        return merr(e, 400, "bad_field", "counts must be an object of counters");
    if (decs && decs->type == JSON_NULL)
        decs = NULL;
    if (decs && decs->type != JSON_OBJ)
        return merr(e, 400, "bad_field", "decrements must be an object of counters");
    size_t want = (size_t)counts->len + (decs ? decs->len : 0);
    const struct json *maps[4] = {folded, floors, dfloors, life};
    for (int i = 0; i < 4; i++)
        want += maps[i] && maps[i]->type == JSON_OBJ ? maps[i]->len : 0;
    seen_reset(r, want);
    if (read_map(r, counts, "counts", 0, e) < 0 || read_map(r, decs, "decrements", 1, e) < 0 ||
        read_folded(r, folded, e) < 0 || read_floors(r, floors, 0, e) < 0 ||
        read_floors(r, dfloors, 1, e) < 0 || read_life(r, life, e) < 0)
        return -1;
    return repl__merge_items(r, origin);
}

/* ,"rejected":[{"counter","node_id","reason"},...],"rejected_count":N into r->out, whose
 * closing brace it moves to the end; nothing when the last merge skipped nothing. */
void repl__put_rejects(struct repl *r)
{
    if (!r->nrejects || !r->out.len)
        return;
    r->out.len--; /* the closing brace */
    buf_puts(&r->out, ",\"rejected\":[");
    for (int i = 0; i < r->nlisted; i++) {
        const struct reject *x = &r->rejects[i];
        if (i)
            buf_putc(&r->out, ',');
        buf_puts(&r->out, "{\"counter\":");
        buf_json_str(&r->out, x->counter, strlen(x->counter));
        if (x->node[0]) {
            buf_puts(&r->out, ",\"node_id\":");
            buf_json_str(&r->out, x->node, strlen(x->node));
        }
        buf_puts(&r->out, ",\"reason\":\"");
        buf_puts(&r->out, x->reason);
        buf_puts(&r->out, "\"}");
    }
    buf_printf(&r->out, "],\"rejected_count\":%" PRIu64 "}", r->nrejects);
}

/*
 * The "tokens" of a /sync body, after its counts were merged: each counter's elements are
 * handed to the tokens hook. An element counterd cannot hold (a token of the wrong size, an
 * amount that is not an integer) is skipped, counted and logged; the rest are merged.
 */
void repl__apply_tokens(struct repl *r, const struct json *root, const char *from)
{
    if (r->cin) {
        repl__compact_tokens(r, from);
        return;
    }
    const struct json *toks = json_get(root, "tokens");
    if (!toks || toks->type != JSON_OBJ || !r->hooks.tokens)
        return;
    int before = r->tok_rejected;
    for (uint32_t i = 0; i < toks->len; i++) {
        const struct json_member *m = &toks->u.members[i];
        const char *why = NULL;
        if (!gstore_key_valid(m->key, m->key_len) || m->val.type != JSON_OBJ) {
            why = "not a counter name with an object of tokens";
            r->tok_rejected++;
        } else if (!repl__replicated(r, m->key, m->key_len)) {
            continue; /* counted with its entries */
        }
        uint32_t id = why ? GSTORE_NONE : gstore_create(r->store, m->key, m->key_len);
        if (!why && id == GSTORE_NONE) {
            why = "cannot create the counter";
            r->tok_rejected++;
        }
        size_t n = 0;
        const struct json *els = &m->val;
        if (!why && els->len > r->tokel_cap) {
            r->tokel_cap = els->len;
            r->tokel = xrealloc(r->tokel, r->tokel_cap * sizeof *r->tokel);
        }
        for (uint32_t k = 0; !why && k < els->len; k++) {
            const struct json_member *t = &els->u.members[k];
            const struct json *a = t->val.type == JSON_OBJ ? json_get(&t->val, "amount") : NULL;
            const struct json *st = t->val.type == JSON_OBJ ? json_get(&t->val, "settled") : NULL;
            if (t->key_len == 0 || t->key_len > TOKSET_TOKEN_MAX ||
                memchr(t->key, '\0', t->key_len) || !a || a->type != JSON_INT || !st ||
                (st->type != JSON_TRUE && st->type != JSON_FALSE)) {
                if (r->tok_rejected++ == 0)
                    log_error("sync from %s: token %.*s of counter %.*s is not a token-set "
                              "element (token 1-%d bytes, amount an integer, settled a "
                              "boolean): skipped (logged once; counted in "
                              "counterd_sync_rejected_tokens_total)",
                              from, (int)(t->key_len > 64 ? 64 : t->key_len), t->key,
                              (int)m->key_len, m->key, TOKSET_TOKEN_MAX);
                continue;
            }
            r->tokel[n++] = (struct repl_token){t->key, t->key_len, a->u.i, st->type == JSON_TRUE};
        }
        if (why) {
            if (r->tok_rejected == 1)
                log_error("sync from %s: tokens.%.*s skipped: %s (logged once; counted in "
                          "counterd_sync_rejected_tokens_total)",
                          from, (int)(m->key_len > 64 ? 64 : m->key_len), m->key, why);
            continue;
        }
        if (n)
            r->hooks.tokens(r->hooks.arg, id, r->tokel, n);
    }
    if (r->tok_rejected > before)
        metric_add(r->m_tok_rejected, r->tok_rejected - before);
}
