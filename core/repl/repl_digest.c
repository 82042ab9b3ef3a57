/*
 * repl_digest.c - the digest exchange: anti-entropy that costs what differs (see
 * repl_internal.h, the wire format at the top of repl.c and store/digest.h).
 *
 * The node that starts it (A) walks down the two hash trees with the peer (B), two levels
 * per round trip: A sends its fingerprints of the nodes of level 1 (then 3, 5) that are
 * still in question, B answers its fingerprints of the children (level 2, 4, 6) of those
 * that differ, and A keeps the children that differ from its own. Equal trees end after
 * one small round trip. Below the last level are the leaves that differ: A sends its
 * counters of a batch of them ("repair"), B merges them and answers its own counters of
 * the same leaves, which A merges. Both then hold the join of what they had there.
 *
 * B keeps no state between messages. It never starts an exchange of its own.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../base/hex.h"
#include "../base/mem.h"
#include "../obs/metrics.h"
#include "repl_internal.h"

/* Leaves repaired in one message: about 16,000 counters at 1M counters. */
#define REPAIR_LEAVES 2048

static const char hexd[] = "0123456789abcdef";

static void put_fp(struct buf *b, uint64_t v)
{
    char s[16];
    for (int i = 15; i >= 0; i--, v >>= 4)
        s[i] = hexd[v & 15];
    buf_append(b, s, 16);
}

/* @return 0 with *v set, or -1 when s[0..16) is not 16 hex digits. */
static int get_fp(const char *s, uint64_t *v)
{
    uint64_t x = 0;
    for (int i = 0; i < 16; i++) {
        int d = hex_val((unsigned char)s[i]);
        if (d < 0)
            return -1;
        x = x << 4 | (uint64_t)d;
    }
    *v = x;
    return 0;
}

static void put_ids(struct buf *b, const char *key, const uint32_t *ids, uint32_t n)
{
    buf_printf(b, ",\"%s\":[", key);
    for (uint32_t i = 0; i < n; i++)
        buf_printf(b, i ? ",%u" : "%u", ids[i]);
    buf_putc(b, ']');
}

static void ids_push(uint32_t **a, uint32_t *n, uint32_t *cap, uint32_t v)
{
    if (*n == *cap) {
        *cap = *cap ? *cap * 2 : 64;
        *a = xrealloc(*a, *cap * sizeof **a);
    }
    (*a)[(*n)++] = v;
}

/*
 * Reads an array of strictly increasing node ids below limit (at most max of them) into
 * r->dg_ids. @return the count, or -1 with why.
 */
static long read_ids(struct repl *r, const struct json *a, uint32_t limit, const char **why)
{
    if (!a || a->type != JSON_ARR || a->len > limit) {
        *why = "must be an array of node indexes of the level";
        return -1;
    }
    r->dg_nids = 0;
    for (uint32_t i = 0; i < a->len; i++) {
        const struct json *v = &a->u.items[i];
        if (v->type != JSON_INT || v->u.i < 0 || v->u.i >= (int64_t)limit ||
            (i && v->u.i <= (int64_t)r->dg_ids[i - 1])) {
            *why = "must hold increasing node indexes of the level";
            return -1;
        }
        ids_push(&r->dg_ids, &r->dg_nids, &r->dg_ids_cap, (uint32_t)v->u.i);
    }
    return r->dg_nids;
}

/* ---------------------------------------------------------------- the side that starts */

void repl__digest_begin(struct peer *p)
{
    p->dg_phase = DG_DESCEND;
    p->dg_level = 1;
    p->dg_ngroups = 0;
    ids_push(&p->dg_groups, &p->dg_ngroups, &p->dg_groups_cap, 0);
    p->dg_nleaves = p->dg_leaf_next = 0;
}

/* This node's fingerprints of the children of p's groups, at p->dg_level. */
static void build_descend(struct peer *p)
{
    struct repl *r = p->r;
    struct buf *b = &r->dg;
    uint32_t f = digest_fanout(p->dg_level - 1);
    buf_printf(b, "{\"leaf_bits\":%d,\"level\":%d", DIGEST_LEAF_BITS, p->dg_level);
    put_ids(b, "groups", p->dg_groups, p->dg_ngroups);
    buf_puts(b, ",\"fps\":\"");
    for (uint32_t g = 0; g < p->dg_ngroups; g++)
        for (uint32_t c = 0; c < f; c++)
            put_fp(b, digest_node(r->digest, p->dg_level, p->dg_groups[g] * f + c));
    buf_puts(b, "\"}");
}

/* This node's counters of the next batch of differing leaves. */
static void build_repair(struct peer *p)
{
    struct repl *r = p->r;
    uint32_t n = p->dg_nleaves - p->dg_leaf_next;
    if (n > REPAIR_LEAVES)
        n = REPAIR_LEAVES;
    r->tok_after = 0;
    n = repl__page_leaves(r, p->dg_leaves + p->dg_leaf_next, n, r->page_bytes);
    p->dg_sent_next = p->dg_leaf_next + n;
    buf_printf(&r->dg, "{\"leaf_bits\":%d", DIGEST_LEAF_BITS);
    put_ids(&r->dg, "repair", p->dg_leaves + p->dg_leaf_next, n);
    buf_putc(&r->dg, '}');
}

void repl__digest_build(struct peer *p)
{
    struct repl *r = p->r;
    digest_update(r->digest, r->store);
    repl__page_begin(r);
    buf_reset(&r->dg);
    if (p->dg_phase == DG_DESCEND) {
        p->kind = KIND_DIGEST;
        build_descend(p);
    } else {
        p->kind = KIND_REPAIR;
        build_repair(p);
    }
    repl__body_finish(r, NULL, NULL, 0);
    buf_reset(&r->dg);
}

/* B's fingerprints of the children of the nodes that differed: the children that differ
 * from ours become the next groups, or the leaves to repair. @return 0, or -1 with why. */
static int take_children(struct peer *p, const struct json *dg, const char **why)
{
    struct repl *r = p->r;
    const struct json *lv = json_get(dg, "level"), *fps = json_get(dg, "fps");
    if (!lv || lv->type != JSON_INT || lv->u.i != p->dg_level + 1) {
        *why = "the answer's digest.level is not the one asked for";
        return -1;
    }
    int level = p->dg_level + 1;
    if (read_ids(r, json_get(dg, "groups"), digest_level_size(level - 1), why) < 0)
        return -1;
    uint32_t f = digest_fanout(level - 1);
    if (!fps || fps->type != JSON_STR || fps->len != (uint64_t)r->dg_nids * f * 16) {
        *why = "the answer's digest.fps does not hold 16 hex digits per child of its groups";
        return -1;
    }
    digest_update(r->digest, r->store);
    p->dg_ngroups = 0;
    for (uint32_t g = 0; g < r->dg_nids; g++)
        for (uint32_t c = 0; c < f; c++) {
            uint32_t node = r->dg_ids[g] * f + c;
            uint64_t theirs;
            if (get_fp(fps->u.s + ((size_t)g * f + c) * 16, &theirs) < 0) {
                *why = "the answer's digest.fps is not hex";
                return -1;
            }
            if (theirs == digest_node(r->digest, level, node))
                continue;
            if (level == DIGEST_DEPTH)
                ids_push(&p->dg_leaves, &p->dg_nleaves, &p->dg_leaves_cap, node);
            else
                ids_push(&p->dg_groups, &p->dg_ngroups, &p->dg_groups_cap, node);
        }
    p->dg_level = level + 1;
    if (level == DIGEST_DEPTH) {
        p->dg_phase = DG_REPAIR;
        p->dg_leaf_next = 0;
    }
    return 0;
}

int repl__digest_answer(struct peer *p, const struct json *root, const char **why)
{
    struct repl *r = p->r;
    const struct json *dg = json_get(root, "digest");
    if (!dg || dg->type != JSON_OBJ) {
        *why = "the answer has no digest object";
        return -1;
    }
    if (p->dg_phase == DG_REPAIR) {
        metric_add(p->m_repaired, (double)r->merged_counters);
        p->dg_repaired += r->merged_counters;
        p->dg_leaf_next = p->dg_sent_next;
    } else if (take_children(p, dg, why) < 0) {
        return -1;
    }
    if (p->dg_phase == DG_DESCEND && p->dg_ngroups > 0)
        return 1;
    if (p->dg_phase == DG_REPAIR && p->dg_leaf_next < p->dg_nleaves)
        return 1;
    p->dg_phase = DG_NONE;
    return 0;
}

/* ---------------------------------------------------------------- the side that answers */

/*
 * Checks a request's "digest" before anything of the request is merged.
 * @return 0, or -1 with e filled (400).
 */
int repl__digest_check(struct repl *r, const struct json *dg, struct merge_error *e)
{
    const char *why = NULL;
    const struct json *bits = json_get(dg, "leaf_bits"), *lv = json_get(dg, "level");
    const struct json *rep = json_get(dg, "repair"), *fps = json_get(dg, "fps");
    e->status = 400;
    e->code = "bad_field";
    if (dg->type != JSON_OBJ || !bits || bits->type != JSON_INT || bits->u.i != DIGEST_LEAF_BITS) {
        snprintf(e->detail, sizeof e->detail,
                 "digest.leaf_bits must be %d: this node's tree has 2^%d leaves", DIGEST_LEAF_BITS,
                 DIGEST_LEAF_BITS);
        return -1;
    }
    if (rep) {
        if (read_ids(r, rep, DIGEST_LEAVES, &why) < 0 || r->dg_nids > REPAIR_LEAVES) {
            snprintf(e->detail, sizeof e->detail, "digest.repair %s (at most %d)",
                     why ? why : "lists too many leaves", REPAIR_LEAVES);
            return -1;
        }
        return 0;
    }
    if (!lv || lv->type != JSON_INT || lv->u.i < 1 || lv->u.i >= DIGEST_DEPTH) {
        snprintf(e->detail, sizeof e->detail, "digest.level must be an integer 1-%d",
                 DIGEST_DEPTH - 1);
        return -1;
    }
    int level = (int)lv->u.i;
    if (read_ids(r, json_get(dg, "groups"), digest_level_size(level - 1), &why) < 0) {
        snprintf(e->detail, sizeof e->detail, "digest.groups %s", why);
        return -1;
    }
    uint32_t f = digest_fanout(level - 1);
    for (size_t i = 0; fps && fps->type == JSON_STR && i < fps->len; i++)
        if (hex_val((unsigned char)fps->u.s[i]) < 0)
            fps = NULL;
    if (!fps || fps->type != JSON_STR || fps->len != (uint64_t)r->dg_nids * f * 16) {
        snprintf(e->detail, sizeof e->detail,
                 "digest.fps must hold 16 hex digits for each of the %u children of each group", f);
        return -1;
    }
    return 0;
}

/* Our fingerprints of the children of the nodes of the request's level that differ. */
static void answer_descend(struct repl *r, const struct json *dg)
{
    int level = (int)json_get(dg, "level")->u.i;
    const char *fps = json_get(dg, "fps")->u.s;
    uint32_t f = digest_fanout(level - 1), fc = digest_fanout(level);
    uint32_t ngroups = r->dg_nids, nout = 0;
    struct buf *b = &r->dg;
    buf_printf(b, "{\"leaf_bits\":%d,\"level\":%d,\"groups\":[", DIGEST_LEAF_BITS, level + 1);
    struct buf kids = {0};
    for (uint32_t g = 0; g < ngroups; g++)
        for (uint32_t c = 0; c < f; c++) {
            uint32_t node = r->dg_ids[g] * f + c;
            uint64_t theirs;
            get_fp(fps + ((size_t)g * f + c) * 16, &theirs);
            if (theirs == digest_node(r->digest, level, node))
                continue;
            buf_printf(b, nout++ ? ",%u" : "%u", node);
            for (uint32_t k = 0; k < fc; k++)
                put_fp(&kids, digest_node(r->digest, level + 1, node * fc + k));
        }
    buf_puts(b, "],\"fps\":\"");
    if (kids.len)
        buf_append(b, kids.data, kids.len);
    buf_puts(b, "\"}");
    buf_free(&kids);
}

enum sync_kind repl__digest_respond(struct repl *r, const struct json *dg)
{
    digest_update(r->digest, r->store);
    repl__page_begin(r);
    buf_reset(&r->dg);
    if (json_get(dg, "repair")) {
        r->tok_after = 0;
        /* The ids were read by repl__digest_check; the merge since did not touch them. */
        repl__page_leaves(r, r->dg_ids, r->dg_nids, SIZE_MAX);
        buf_printf(&r->dg, "{\"leaf_bits\":%d,\"repaired\":%u}", DIGEST_LEAF_BITS, r->dg_nids);
        return KIND_REPAIR;
    }
    answer_descend(r, dg);
    return KIND_DIGEST;
}
