/*
 * repl_body.c - this node's state written as /sync pages (see repl_internal.h and
 * the wire format at the top of repl.c): full walks by id, deltas after a seq, the
 * original lab's format for an original-format peer, and the envelope around a page.
 *
 * It reads the store and the token sets and never changes them.
 */
#include <string.h>

#include "../base/clock.h"
#include "../store/tokset.h"
#include "repl_internal.h"

/* ---------------------------------------------------------------- encoding */

/*
 * A counter for an original-format peer: per node, its incarnations summed (the bare
 * entry where that is higher, see gstore_counter_nodes), increments only.
 */
static void append_counter_original(struct repl *r, const struct gcounter *c, struct buf *counts)
{
    struct gnode nodes[GCOUNTER_MAX_ENTRIES];
    size_t nlen;
    const char *name = gstore_counter_name(c, &nlen);
    unsigned k = gstore_counter_nodes(r->store, c, nodes);
    r->page_counters++;
    if (counts->len > 1)
        buf_putc(counts, ',');
    buf_json_str(counts, name, nlen);
    buf_puts(counts, ":{");
    for (unsigned j = 0; j < k; j++) {
        const char *node = gstore_node_name(r->store, nodes[j].node);
        if (j)
            buf_putc(counts, ',');
        buf_json_str(counts, node, strlen(node));
        buf_putc(counts, ':');
        buf_i64(counts, gstore_clamp(nodes[j].pos, NULL)); /* clamped: still never shrinks */
    }
    buf_putc(counts, '}');
    if (gstore_counter_has_neg(c))
        r->page_decs_unsent++;
}

struct tok_page {
    struct buf *b;
    int n;
};

static void append_token(void *arg, uint32_t id, const char *tok, size_t tlen, int64_t amount,
                         int settled, uint64_t seq)
{
    (void)id;
    (void)seq;
    struct tok_page *tp = arg;
    if (tp->n++)
        buf_putc(tp->b, ',');
    buf_json_str(tp->b, tok, tlen);
    buf_puts(tp->b, ":{\"amount\":");
    buf_i64(tp->b, amount);
    buf_puts(tp->b, settled ? ",\"settled\":true}" : ",\"settled\":false}");
}

/* The counter's token-set elements changed after r->tok_after, into r->toks. */
static void append_tokens(struct repl *r, const struct gcounter *c)
{
    if (!r->tokset || !tokset_count(r->tokset))
        return;
    size_t nlen;
    const char *name = gstore_counter_name(c, &nlen);
    uint32_t id = gstore_find(r->store, name, nlen);
    if (id == GSTORE_NONE || !tokset_elements(r->tokset, id))
        return;
    size_t at = r->toks.len;
    if (r->toks.len > 1)
        buf_putc(&r->toks, ',');
    buf_json_str(&r->toks, name, nlen);
    buf_puts(&r->toks, ":{");
    struct tok_page tp = {&r->toks, 0};
    tokset_each(r->tokset, id, r->tok_after, append_token, &tp);
    if (!tp.n)
        r->toks.len = at;
    else
        buf_putc(&r->toks, '}');
}

/* The counter's folded replicas, into r->folds: they travel with every copy of it. */
static void append_folded(struct repl *r, const struct gcounter *c)
{
    if (!gstore_folded_total(r->store))
        return;
    size_t nlen;
    const char *name = gstore_counter_name(c, &nlen);
    const uint16_t *reps;
    unsigned nf = gstore_folded_list(r->store, gstore_find(r->store, name, nlen), &reps);
    if (!nf)
        return;
    if (r->folds.len > 1)
        buf_putc(&r->folds, ',');
    buf_json_str(&r->folds, name, nlen);
    buf_puts(&r->folds, ":[");
    for (unsigned i = 0; i < nf; i++) {
        const char *rn = gstore_replica_name(r->store, reps[i]);
        if (i)
            buf_putc(&r->folds, ',');
        buf_json_str(&r->folds, rn, strlen(rn));
    }
    buf_putc(&r->folds, ']');
}

/* One floor as {"pos":{"<replica>":N},"neg":{...}} (a side with no entry left out). */
static void append_floor(struct repl *r, struct buf *b, const char *name, size_t nlen,
                         const struct gentry *fl, size_t n)
{
    if (b->len > 1)
        buf_putc(b, ',');
    buf_json_str(b, name, nlen);
    buf_putc(b, ':');
    for (int side = 0; side < 2; side++) {
        buf_puts(b, side ? ",\"neg\":{" : "{\"pos\":{");
        int first = 1;
        for (size_t i = 0; i < n; i++) {
            int64_t v = side ? fl[i].neg : fl[i].pos;
            if (!v)
                continue;
            if (!first)
                buf_putc(b, ',');
            first = 0;
            const char *rn = gstore_replica_name(r->store, fl[i].rep);
            buf_json_str(b, rn, strlen(rn));
            buf_putc(b, ':');
            buf_i64(b, v);
        }
        buf_putc(b, '}');
    }
    buf_putc(b, '}');
}

/* The counter's lifecycle state (floors, flags) into r->lfloors, ldfloors and lflags: only
 * for a counter that has one. */
static void append_life(struct repl *r, uint32_t id, const char *name, size_t nlen)
{
    struct glife l;
    if (!gstore_life(r->store, id, &l))
        return;
    if (l.nfloor)
        append_floor(r, &r->lfloors, name, nlen, l.floor, l.nfloor);
    if (l.ndfloor)
        append_floor(r, &r->ldfloors, name, nlen, l.dfloor, l.ndfloor);
    if (!(l.flags & (GLIFE_DELETED | GLIFE_SEALED)))
        return;
    if (r->lflags.len > 1)
        buf_putc(&r->lflags, ',');
    buf_json_str(&r->lflags, name, nlen);
    buf_puts(&r->lflags, (l.flags & GLIFE_DELETED) && (l.flags & GLIFE_SEALED)
                             ? ":[\"deleted\",\"sealed\"]"
                         : l.flags & GLIFE_DELETED ? ":[\"deleted\"]"
                                                   : ":[\"sealed\"]");
}

/*
 * Counter id (c) into the page, in the format of the page: left out when it is not
 * replicated (a regional namespace's), and for an original-format peer when it is not of
 * namespace "default" (the original lab knows no "ns/name" keys).
 */
static void append_counter(struct repl *r, uint32_t id, const struct gcounter *c,
                           struct buf *counts, struct buf *decs)
{
    size_t nlen;
    const char *name = gstore_counter_name(c, &nlen);
    unsigned n = gstore_counter_entries(c);
    struct gentry e;

    if (!repl__replicated(r, name, nlen))
        return;
    if (r->original_out) {
        if (gstore_key_ns_len(name, nlen) == 0)
            append_counter_original(r, c, counts);
        return;
    }
    if (r->compact_out) {
        repl__compact_counter(r, id, c);
        return;
    }
    append_tokens(r, c);
    append_folded(r, c);
    append_life(r, id, name, nlen);
    r->page_counters++;
    if (counts->len > 1)
        buf_putc(counts, ',');
    buf_json_str(counts, name, nlen);
    buf_puts(counts, ":{");
    for (unsigned i = 0; i < n; i++) {
        gstore_counter_entry(c, i, &e);
        if (i)
            buf_putc(counts, ',');
        const char *rn = gstore_replica_name(r->store, e.rep);
        buf_json_str(counts, rn, strlen(rn));
        buf_putc(counts, ':');
        buf_i64(counts, e.pos);
    }
    buf_putc(counts, '}');
    if (!gstore_counter_has_neg(c))
        return;
    if (decs->len > 1)
        buf_putc(decs, ',');
    buf_json_str(decs, name, nlen);
    buf_puts(decs, ":{");
    int first = 1;
    for (unsigned i = 0; i < n; i++) {
        gstore_counter_entry(c, i, &e);
        if (!e.neg)
            continue;
        if (!first)
            buf_putc(decs, ',');
        first = 0;
        const char *rn = gstore_replica_name(r->store, e.rep);
        buf_json_str(decs, rn, strlen(rn));
        buf_putc(decs, ':');
        buf_i64(decs, e.neg);
    }
    buf_putc(decs, '}');
}

/* Bytes of the page being built. */
static size_t page_len(const struct repl *r)
{
    return r->counts.len + r->decs.len + r->toks.len + r->folds.len + r->cbody.len + r->creps.len +
           r->lfloors.len + r->ldfloors.len + r->lflags.len;
}

/*
 * A page of the full state, by id from *next; sets *next to where the next page starts.
 *
 * Ids of dropped counters are skipped, and may be given to counters created later, also
 * while a transfer pages through the store (gstore_drop). The walk stays complete: every
 * counter that existed when the walk began keeps its id until it is dropped, so it is in a
 * page unless it was dropped (every replica, the receiver included, held its sealed
 * tombstone then); a counter created after the walk began, at an id below the cursor or
 * above it, changed after that seq, and the delta that follows every full walk (from the
 * seq the walk began at: full_s0, the "F." cursor's seq) sends it. A reused id above the
 * cursor is sent twice at most, which a merge takes as once.
 */
void repl__page_full(struct repl *r, uint32_t *next)
{
    uint32_t id = *next, count = gstore_count(r->store);
    for (; id < count; id++) {
        if (!gstore_exists(r->store, id))
            continue;
        if (page_len(r) >= r->page_bytes)
            break;
        append_counter(r, id, gstore_counter(r->store, id), &r->counts, &r->decs);
    }
    *next = id;
}

/*
 * A page of the counters changed after since, leaving out those whose last change came
 * whole from the receiver (origin tag skip_origin; 0 skips nothing). Sets *upto to the seq the page
 * covers: every change up to it is in this page or an earlier one. @return 1 when more remain.
 */
int repl__page_delta(struct repl *r, uint64_t since, int skip_origin, uint64_t *upto)
{
    uint32_t id = gstore_changed_after(r->store, since);
    uint64_t last = since;
    for (; id != GSTORE_NONE; id = gstore_changed_next(r->store, id)) {
        if (id >= gstore_count(r->store) || !gstore_exists(r->store, id))
            continue; /* dropped (the store unlinks it: a guard) */
        const struct gcounter *c = gstore_counter(r->store, id);
        if (page_len(r) >= r->page_bytes) {
            *upto = last;
            return 1;
        }
        /* The receiver sent us exactly this state: it need not come back. */
        if (!skip_origin || gstore_counter_origin(c) != skip_origin)
            append_counter(r, id, c, &r->counts, &r->decs);
        last = gstore_counter_mseq(c);
    }
    *upto = gstore_seq(r->store);
    return 0;
}

uint32_t repl__page_leaves(struct repl *r, const uint32_t *leaves, uint32_t n, size_t limit)
{
    uint32_t i = 0;
    for (; i < n; i++) {
        if (i && page_len(r) >= limit)
            break;
        for (uint32_t id = digest_leaf_first(r->digest, leaves[i]); id != GSTORE_NONE;
             id = digest_leaf_next(r->digest, id))
            if (id < gstore_count(r->store) && gstore_exists(r->store, id))
                append_counter(r, id, gstore_counter(r->store, id), &r->counts, &r->decs);
    }
    return i;
}

void repl__page_begin(struct repl *r)
{
    r->page_counters = 0;
    r->page_decs_unsent = 0;
    buf_reset(&r->counts);
    buf_reset(&r->decs);
    buf_reset(&r->toks);
    buf_reset(&r->folds);
    buf_reset(&r->lfloors);
    buf_reset(&r->ldfloors);
    buf_reset(&r->lflags);
    buf_putc(&r->counts, '{');
    buf_putc(&r->decs, '{');
    buf_putc(&r->toks, '{');
    buf_putc(&r->folds, '{');
    buf_putc(&r->lfloors, '{');
    buf_putc(&r->ldfloors, '{');
    buf_putc(&r->lflags, '{');
    repl__compact_begin(r);
}

/* Writes the envelope around the page in counts/decs into r->out. */
void repl__body_finish(struct repl *r, const char *since, const char *cursor, int more)
{
    struct buf *o = &r->out;
    buf_reset(o);
    buf_puts(o, "{\"node_id\":");
    buf_json_str(o, r->node_id, strlen(r->node_id));
    buf_puts(o, ",\"incarnation\":\"");
    buf_puts(o, r->incarnation);
    buf_puts(o, "\",\"timestamp\":");
    buf_printf(o, "%.3f", clock_unix_s());
    buf_puts(o, ",\"counts\":");
    buf_append(o, r->counts.data, r->counts.len);
    buf_putc(o, '}');
    if (r->decs.len > 1) {
        buf_puts(o, ",\"decrements\":");
        buf_append(o, r->decs.data, r->decs.len);
        buf_putc(o, '}');
    }
    if (r->toks.len > 1) {
        buf_puts(o, ",\"tokens\":");
        buf_append(o, r->toks.data, r->toks.len);
        buf_putc(o, '}');
    }
    if (r->folds.len > 1) {
        buf_puts(o, ",\"folded\":");
        buf_append(o, r->folds.data, r->folds.len);
        buf_putc(o, '}');
    }
    struct buf *life[3] = {&r->lfloors, &r->ldfloors, &r->lflags};
    static const char *const life_key[3] = {",\"floors\":", ",\"dfloors\":", ",\"life\":"};
    for (int i = 0; i < 3; i++)
        if (life[i]->len > 1) {
            buf_puts(o, life_key[i]);
            buf_append(o, life[i]->data, life[i]->len);
            buf_putc(o, '}');
        }
    if (r->dg.len) {
        buf_puts(o, ",\"digest\":");
        buf_append(o, r->dg.data, r->dg.len);
    }
    if (!r->original_out) {
        buf_puts(o, r->compact_off ? ",\"features\":[\"folded\",\"digest\",\"life\"]"
                                   : ",\"features\":[\"folded\",\"digest\",\"compact\",\"life\"]");
        if (r->hooks.put_ext)
            r->hooks.put_ext(r->hooks.arg, o); /* the namespace register, for one */
    }
    if (since && *since) {
        buf_puts(o, ",\"since\":");
        buf_json_str(o, since, strlen(since));
    }
    if (cursor) {
        buf_puts(o, ",\"cursor\":");
        buf_json_str(o, cursor, strlen(cursor));
        buf_puts(o, more ? ",\"more\":true" : ",\"more\":false");
    }
    buf_putc(o, '}');
}
