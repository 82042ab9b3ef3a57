/*
 * repl_compact.c - the compact /sync body between counterd nodes (both say "compact" in
 * "features"): the same message as the JSON one (API.md, "The compact body"), with the
 * counters in a binary section read without building a JSON tree.
 *
 *   "CSB1" varint(E) <E bytes: the JSON envelope, "counts":{} and no other state map>
 *   varint(R) R x (varint(len) <replica id>)           the replica table, once a message
 *   varint(N) N x counter:
 *     varint(len) <name>                                its key ("ns/name" or a name)
 *     varint(K) K x (varint(replica index) varint(increments) varint(decrements))
 *     varint(F) F x varint(replica index)               its folded replicas
 *     varint(T) T x (varint(len) <token> zigzag-varint(amount) byte(settled 0|1))
 *
 * "CSB2" is the same body where each counter ends with its lifecycle state (gstore.h
 * "Lifecycle"), sent only to a node that says "life" in "features":
 *     byte(L)  bit 0 deleted, bit 1 sealed, bit 2 a clear floor follows, bit 3 a delete
 *              floor follows (the other bits 0; 0: no lifecycle state)
 *     [varint(C) C x (varint(replica index) varint(pos) varint(neg))]   the clear floor
 *     [varint(D) D x (varint(replica index) varint(pos) varint(neg))]   the delete floor
 * A node of the version before reads only "CSB1" and is sent no lifecycle state.
 *
 * Varints are unsigned LEB128 of at most 64 bits. A body whose structure is wrong (cut
 * short, an index beyond the table, a length beyond its bound, bytes after the last
 * counter) is refused whole before anything is read into the store; entries this node
 * cannot hold are skipped and reported as in a JSON body (repl_merge.c's reasons).
 *
 * It never sends anything and never touches a peer's round state.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../base/log.h"
#include "../base/mem.h"
#include "../obs/metrics.h"
#include "../store/tokset.h"
#include "repl_internal.h"

#define COMPACT_MAGIC "CSB1"
#define COMPACT_MAGIC_LIFE "CSB2" /* counters carry their lifecycle state */
#define COMPACT_MAX_LEN 65535     /* of a name, a replica id or a token, as a structure bound */

/* ---------------------------------------------------------------- writing */

static void put_varint(struct buf *b, uint64_t v)
{
    char tmp[10];
    size_t n = 0;
    do {
        tmp[n++] = (char)((v & 0x7f) | (v > 0x7f ? 0x80 : 0));
        v >>= 7;
    } while (v);
    buf_append(b, tmp, n);
}

/* The page's index of store replica rep, adding it to the page's table when new. */
static uint32_t page_replica(struct repl *r, int rep)
{
    if ((size_t)rep >= r->cmap_cap) {
        size_t cap = r->cmap_cap ? r->cmap_cap : 64;
        while (cap <= (size_t)rep)
            cap *= 2;
        r->cmap = xrealloc(r->cmap, cap * sizeof *r->cmap);
        memset(r->cmap + r->cmap_cap, 0, (cap - r->cmap_cap) * sizeof *r->cmap);
        r->cmap_cap = cap;
    }
    if (r->cmap[rep].gen == r->cgen)
        return r->cmap[rep].idx;
    const char *rn = gstore_replica_name(r->store, rep);
    size_t len = strlen(rn);
    put_varint(&r->creps, len);
    buf_append(&r->creps, rn, len);
    r->cmap[rep].gen = r->cgen;
    r->cmap[rep].idx = r->cnreps++;
    return r->cmap[rep].idx;
}

struct tok_out {
    struct buf *b;
    uint32_t n;
};

static void put_token(void *arg, uint32_t id, const char *tok, size_t tlen, int64_t amount,
                      int settled, uint64_t seq)
{
    (void)id;
    (void)seq;
    struct tok_out *t = arg;
    put_varint(t->b, tlen);
    buf_append(t->b, tok, tlen);
    put_varint(t->b, ((uint64_t)amount << 1) ^ (uint64_t)(amount >> 63)); /* zigzag */
    buf_putc(t->b, settled ? 1 : 0);
    t->n++;
}

static void put_floor(struct repl *r, struct buf *b, const struct gentry *fl, size_t n)
{
    put_varint(b, n);
    for (size_t i = 0; i < n; i++) {
        put_varint(b, page_replica(r, fl[i].rep));
        put_varint(b, (uint64_t)fl[i].pos);
        put_varint(b, (uint64_t)fl[i].neg);
    }
}

/* Counter id's lifecycle state, at the end of its record in a "CSB2" page. */
static void put_life(struct repl *r, struct buf *b, uint32_t id)
{
    struct glife l;
    if (!gstore_life(r->store, id, &l)) {
        buf_putc(b, 0);
        return;
    }
    unsigned flags = l.flags & (GLIFE_DELETED | GLIFE_SEALED);
    buf_putc(b, (char)(flags | (l.nfloor ? 4u : 0u) | (l.ndfloor ? 8u : 0u)));
    if (l.nfloor)
        put_floor(r, b, l.floor, l.nfloor);
    if (l.ndfloor)
        put_floor(r, b, l.dfloor, l.ndfloor);
}

void repl__compact_counter(struct repl *r, uint32_t id, const struct gcounter *c)
{
    size_t nlen;
    const char *name = gstore_counter_name(c, &nlen);
    unsigned n = gstore_counter_entries(c);
    struct gentry e;
    struct buf *b = &r->cbody;
    r->page_counters++;
    put_varint(b, nlen);
    buf_append(b, name, nlen);
    put_varint(b, n);
    for (unsigned i = 0; i < n; i++) {
        gstore_counter_entry(c, i, &e);
        put_varint(b, page_replica(r, e.rep));
        put_varint(b, (uint64_t)e.pos);
        put_varint(b, (uint64_t)e.neg);
    }
    const uint16_t *reps = NULL;
    unsigned nf = gstore_folded_total(r->store) ? gstore_folded_list(r->store, id, &reps) : 0;
    put_varint(b, nf);
    for (unsigned i = 0; i < nf; i++)
        put_varint(b, page_replica(r, reps[i]));
    struct tok_out t = {&r->toks_c, 0};
    buf_reset(&r->toks_c);
    if (r->tokset && tokset_count(r->tokset) && tokset_elements(r->tokset, id))
        tokset_each(r->tokset, id, r->tok_after, put_token, &t);
    put_varint(b, t.n);
    if (t.n)
        buf_append(b, r->toks_c.data, r->toks_c.len);
    if (r->life_out)
        put_life(r, b, id);
}

void repl__compact_begin(struct repl *r)
{
    buf_reset(&r->cbody);
    buf_reset(&r->creps);
    r->cnreps = 0;
    r->cgen++;
}

void repl__compact_wrap(struct repl *r)
{
    struct buf *o = &r->cout;
    buf_reset(o);
    buf_append(o, r->life_out ? COMPACT_MAGIC_LIFE : COMPACT_MAGIC, 4);
    put_varint(o, r->out.len);
    buf_append(o, r->out.data, r->out.len);
    put_varint(o, r->cnreps);
    if (r->creps.len)
        buf_append(o, r->creps.data, r->creps.len);
    put_varint(o, (uint64_t)r->page_counters);
    if (r->cbody.len)
        buf_append(o, r->cbody.data, r->cbody.len);
}

/* ---------------------------------------------------------------- reading */

struct rd {
    const unsigned char *p, *end;
    char err[160];
};

static int rd_fail(struct rd *d, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int rd_fail(struct rd *d, const char *fmt, ...)
{
    if (!d->err[0]) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(d->err, sizeof d->err, fmt, ap);
        va_end(ap);
    }
    d->p = d->end;
    return -1;
}

static int rd_varint(struct rd *d, uint64_t *v, const char *what)
{
    uint64_t x = 0;
    for (int shift = 0; shift < 64; shift += 7) {
        if (d->p >= d->end)
            return rd_fail(d, "%s: the body ends inside it", what);
        unsigned char c = *d->p++;
        if (shift == 63 && c > 1)
            return rd_fail(d, "%s: a varint beyond 64 bits", what);
        x |= (uint64_t)(c & 0x7f) << shift;
        if (!(c & 0x80)) {
            *v = x;
            return 0;
        }
    }
    return rd_fail(d, "%s: a varint beyond 64 bits", what);
}

/* A varint no greater than max. */
static int rd_count(struct rd *d, uint64_t max, uint64_t *v, const char *what)
{
    if (rd_varint(d, v, what) < 0)
        return -1;
    if (*v > max)
        return rd_fail(d, "%s: %llu is beyond %llu", what, (unsigned long long)*v,
                       (unsigned long long)max);
    return 0;
}

/* A length-prefixed string of at most max bytes. */
static int rd_bytes(struct rd *d, uint64_t max, const char **s, uint64_t *len, const char *what)
{
    if (rd_count(d, max, len, what) < 0)
        return -1;
    if ((uint64_t)(d->end - d->p) < *len)
        return rd_fail(d, "%s: the body ends inside it", what);
    *s = (const char *)d->p;
    d->p += *len;
    return 0;
}

const struct json *repl__parse(struct repl *r, const char *body, size_t len)
{
    r->cin = NULL;
    r->cin_len = 0;
    /* A node told to speak JSON only reads a compact body as counterd before it did. */
    if (r->compact_off || len < 4 ||
        (memcmp(body, COMPACT_MAGIC, 4) != 0 && memcmp(body, COMPACT_MAGIC_LIFE, 4) != 0))
        return json_parse(&r->parser, body, len);
    r->cin_life = memcmp(body, COMPACT_MAGIC_LIFE, 4) == 0;
    struct rd d = {(const unsigned char *)body + 4, (const unsigned char *)body + len, ""};
    const char *env = NULL;
    uint64_t elen;
    if (rd_bytes(&d, len, &env, &elen, "compact body: the envelope") < 0) {
        snprintf(r->parser.err, sizeof r->parser.err, "%s", d.err);
        return NULL;
    }
    const struct json *root = json_parse(&r->parser, env, elen);
    if (!root)
        return NULL;
    r->cin = (const char *)d.p;
    r->cin_len = (size_t)(d.end - d.p);
    return root;
}

/* The replica table's entry i as this node interns it (-1: not a valid replica id, -2: no
 * room), resolved at its first use. */
static int table_rep(struct repl *r, uint32_t i)
{
    if (r->ctab[i].rep == -3) {
        r->ctab[i].rep = gstore_counter_replica_node_len(r->ctab[i].s, r->ctab[i].len) ? -2 : -1;
        if (r->ctab[i].rep == -2) {
            int rep = gstore_replica(r->store, r->ctab[i].s, r->ctab[i].len);
            r->ctab[i].rep = rep < 0 ? -2 : rep;
        }
    }
    return r->ctab[i].rep;
}

static int read_table(struct repl *r, struct rd *d)
{
    uint64_t n, len;
    if (rd_count(d, 65535, &n, "compact body: the replica table's size") < 0)
        return -1;
    if (n > r->ctab_cap) {
        r->ctab_cap = (size_t)n;
        r->ctab = xrealloc(r->ctab, r->ctab_cap * sizeof *r->ctab);
    }
    r->ctab_n = (uint32_t)n;
    for (uint32_t i = 0; i < n; i++) {
        const char *s = NULL;
        if (rd_bytes(d, GSTORE_REPLICA_NAME_MAX, &s, &len, "compact body: a replica id") < 0)
            return -1;
        r->ctab[i].s = s;
        r->ctab[i].len = (uint32_t)len;
        r->ctab[i].rep = -3;
    }
    return 0;
}

/* A counter's entries: taken into item (NULL: only read). */
static int read_entries(struct repl *r, struct rd *d, uint32_t item, const char *name,
                        uint64_t nlen)
{
    uint64_t k, idx, pos, neg;
    if (rd_count(d, 65535, &k, "compact body: a counter's entry count") < 0)
        return -1;
    for (uint64_t j = 0; j < k; j++) {
        if (rd_count(d, r->ctab_n ? r->ctab_n - 1 : 0, &idx,
                     "compact body: an entry's replica "
                     "index (beyond the table)") < 0 ||
            (!r->ctab_n && rd_fail(d, "compact body: an entry but no replica table") < 0) ||
            rd_varint(d, &pos, "compact body: an entry's increments") < 0 ||
            rd_varint(d, &neg, "compact body: an entry's decrements") < 0)
            return -1;
        if (item == UINT32_MAX)
            continue;
        int rep = table_rep(r, (uint32_t)idx);
        const char *why = rep == -1                            ? "bad_node_id"
                          : pos > INT64_MAX || neg > INT64_MAX ? "out_of_range"
                          : rep < 0                            ? "too_many_replicas"
                                                               : NULL;
        if (why) {
            repl__reject(r, name, nlen, r->ctab[idx].s, r->ctab[idx].len, why, 1);
            r->items[item].partial = 1;
            continue;
        }
        repl__push_entry(r, item, rep, (int64_t)pos, (int64_t)neg);
        r->items[item].n++;
    }
    return 0;
}

/* Why folded replica table[idx] cannot be taken, or NULL. */
static const char *folded_why(struct repl *r, uint32_t idx, int *rep)
{
    const char *s = r->ctab[idx].s;
    size_t len = r->ctab[idx].len, node_len = gstore_counter_replica_node_len(s, len);
    if (!node_len || node_len == len) /* a bare node id is never folded */
        return "folded_bad_id";
    if (r->self_rep && strlen(r->self_rep) == len && memcmp(r->self_rep, s, len) == 0)
        return "folds_this_replica";
    *rep = table_rep(r, idx);
    return *rep < 0 ? "too_many_replicas" : NULL;
}

static int read_folded(struct repl *r, struct rd *d, uint32_t item)
{
    uint64_t f, idx;
    if (rd_count(d, 65535, &f, "compact body: a counter's folded count") < 0)
        return -1;
    struct in_item *it = item == UINT32_MAX ? NULL : &r->items[item];
    if (it) {
        it->ffirst = (uint32_t)r->nfold_in;
        if (f > GCOUNTER_MAX_FOLDED)
            it->fbad = "too_many_folded";
    }
    for (uint64_t j = 0; j < f; j++) {
        if (!r->ctab_n)
            return rd_fail(d, "compact body: a folded replica but no replica table");
        if (rd_count(d, r->ctab_n - 1, &idx,
                     "compact body: a folded replica's index (beyond "
                     "the table)") < 0)
            return -1;
        int rep = -1;
        if (!it || it->fbad || (it->fbad = folded_why(r, (uint32_t)idx, &rep)))
            continue;
        repl__fold_push(r, it, rep);
    }
    return 0;
}

static int read_tokens(struct repl *r, struct rd *d, uint32_t item, int apply, int name_ok)
{
    uint64_t t, len, z;
    const char *tok = NULL;
    if (rd_count(d, UINT32_MAX, &t, "compact body: a counter's token count") < 0)
        return -1;
    struct in_item *it = item == UINT32_MAX ? NULL : &r->items[item];
    if (it)
        it->tfirst = (uint32_t)r->nctok;
    if (apply && t && !name_ok)
        r->ctok_rejected++; /* as a JSON body's tokens of a bad name: one */
    for (uint64_t j = 0; j < t; j++) {
        if (rd_bytes(d, COMPACT_MAX_LEN, &tok, &len, "compact body: a token") < 0 ||
            rd_varint(d, &z, "compact body: a token's amount") < 0)
            return -1;
        if (d->p >= d->end || *d->p > 1)
            return rd_fail(d, "compact body: a token's settled byte (0 or 1)");
        int settled = *d->p++;
        if (!it || !name_ok)
            continue;
        if (len == 0 || len > TOKSET_TOKEN_MAX || memchr(tok, '\0', len)) {
            r->ctok_rejected++;
            continue;
        }
        if (r->nctok == r->ctok_cap) {
            r->ctok_cap = r->ctok_cap ? r->ctok_cap * 2 : 256;
            r->ctok = xrealloc(r->ctok, r->ctok_cap * sizeof *r->ctok);
        }
        int64_t amount = (int64_t)(z >> 1) ^ -(int64_t)(z & 1);
        r->ctok[r->nctok++] = (struct repl_token){tok, len, amount, settled};
        it->nt++;
    }
    return 0;
}

/* One floor of a "CSB2" counter: taken into item (NULL: only read). */
static int read_floor(struct repl *r, struct rd *d, struct in_item *it, int dfloor)
{
    static const char *const why_range[2] = {"floor_out_of_range", "dfloor_out_of_range"};
    static const char *const why_node[2] = {"floor_bad_node_id", "dfloor_bad_node_id"};
    uint64_t k, idx, pos, neg;
    if (rd_count(d, 65535, &k, "compact body: a floor's entry count") < 0)
        return -1;
    if (it) {
        *(dfloor ? &it->dfirst : &it->lfirst) = (uint32_t)r->nlife_in;
        *(dfloor ? &it->has_dfloor : &it->has_floor) = 1;
    }
    for (uint64_t j = 0; j < k; j++) {
        if (!r->ctab_n)
            return rd_fail(d, "compact body: a floor entry but no replica table");
        if (rd_count(d, r->ctab_n - 1, &idx,
                     "compact body: a floor entry's replica index (beyond the table)") < 0 ||
            rd_varint(d, &pos, "compact body: a floor entry's increments") < 0 ||
            rd_varint(d, &neg, "compact body: a floor entry's decrements") < 0)
            return -1;
        if (!it || it->lbad)
            continue;
        int rep = table_rep(r, (uint32_t)idx);
        it->lbad = rep == -1                            ? why_node[dfloor]
                   : pos > INT64_MAX || neg > INT64_MAX ? why_range[dfloor]
                   : rep < 0                            ? "too_many_replicas"
                                                        : NULL;
        if (!it->lbad)
            repl__life_push(r, it, dfloor, rep, (int64_t)pos, (int64_t)neg);
    }
    return 0;
}

/* The lifecycle state that ends a "CSB2" counter: taken into item (UINT32_MAX: only read). */
static int read_life(struct repl *r, struct rd *d, uint32_t item)
{
    if (d->p >= d->end || (*d->p & ~15u))
        return rd_fail(d, "compact body: a counter's lifecycle byte (bits 0-3 only)");
    unsigned l = *d->p++;
    struct in_item *it = item == UINT32_MAX ? NULL : &r->items[item];
    if (it && l) {
        it->has_life = 1;
        it->lflags = (uint8_t)(l & (GLIFE_DELETED | GLIFE_SEALED));
    }
    if ((l & 4) && read_floor(r, d, it, 0) < 0)
        return -1;
    if ((l & 8) && read_floor(r, d, it, 1) < 0)
        return -1;
    return 0;
}

/* One counter; apply: taken into a new item, else only read. */
static int read_counter(struct repl *r, struct rd *d, int apply)
{
    const char *name = NULL;
    uint64_t nlen;
    if (rd_bytes(d, COMPACT_MAX_LEN, &name, &nlen, "compact body: a counter's name") < 0)
        return -1;
    uint32_t item = UINT32_MAX;
    int ok = gstore_key_valid(name, nlen);
    int kept = ok && repl__replicated(r, name, nlen);
    if (apply && kept)
        item = repl__item_new(r, name, (uint32_t)nlen);
    else if (apply && ok)
        repl__ignore(r); /* not replicated here: left out, counted */
    const unsigned char *at = d->p;
    if (read_entries(r, d, item, name, nlen) < 0 || read_folded(r, d, item) < 0 ||
        read_tokens(r, d, item, apply, ok) < 0 || (r->cin_life && read_life(r, d, item) < 0))
        return -1;
    if (apply && !ok) { /* its entries are counted as a JSON body's would be */
        struct rd again = {at, d->end, ""};
        uint64_t k = 0;
        rd_varint(&again, &k, "");
        repl__reject(r, name, nlen, NULL, 0, "bad_name", k ? k : 1);
    }
    return 0;
}

/* The binary section: read once to check it whole, then again into items. */
static int read_section(struct repl *r, int apply, char *err, size_t errlen)
{
    struct rd d = {(const unsigned char *)r->cin, (const unsigned char *)r->cin + r->cin_len, ""};
    uint64_t n;
    if (read_table(r, &d) < 0 || rd_count(&d, UINT32_MAX, &n,
                                          "compact body: the counter "
                                          "count") < 0)
        goto fail;
    for (uint64_t i = 0; i < n; i++)
        if (read_counter(r, &d, apply) < 0)
            goto fail;
    if (d.p != d.end)
        rd_fail(&d, "compact body: %zu bytes after the last counter", (size_t)(d.end - d.p));
    if (!d.err[0])
        return 0;
fail:
    snprintf(err, errlen, "%s", d.err);
    return -1;
}

int repl__compact_merge(struct repl *r, int origin, char *err, size_t errlen)
{
    r->nctok = 0;
    r->ctok_rejected = 0;
    r->nfold_in = 0;
    r->nlife_in = 0;
    if (read_section(r, 0, err, errlen) < 0)
        return -1;
    read_section(r, 1, err, errlen);
    return repl__merge_items(r, origin);
}

void repl__compact_tokens(struct repl *r, const char *from)
{
    if (r->ctok_rejected) {
        if (r->tok_rejected == 0)
            log_error("sync from %s: token-set elements that are not ones (token 1-%d bytes, "
                      "a valid counter name): skipped (logged once; counted in "
                      "counterd_sync_rejected_tokens_total)",
                      from, TOKSET_TOKEN_MAX);
        r->tok_rejected += r->ctok_rejected;
        metric_add(r->m_tok_rejected, r->ctok_rejected);
    }
    for (size_t i = 0; r->hooks.tokens && i < r->nitems; i++) {
        struct in_item *it = &r->items[i];
        if (!it->nt)
            continue;
        uint32_t id = gstore_create(r->store, it->name, it->len);
        if (id != GSTORE_NONE)
            r->hooks.tokens(r->hooks.arg, id, r->ctok + it->tfirst, it->nt);
    }
}
