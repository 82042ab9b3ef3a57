/*
 * region_view.c - how a region node shows its counters: the JSON views of its answers.
 *
 * Every answer is written straight into the role's reusable buffer: no DOM on the way
 * out. Nothing here changes the store.
 */
#include "region_internal.h"

#include <string.h>

#include "../base/mem.h"
#include "../net/http.h"
#include "../store/tokset.h"

void region__put_str(struct buf *b, const char *s)
{
    buf_json_str(b, s, strlen(s));
}

/* "region":..,"node_id":.. (no braces) */
void region__put_identity(struct region *rg, struct buf *b)
{
    buf_puts(b, "\"region\":");
    region__put_str(b, rg->region);
    buf_puts(b, ",\"node_id\":");
    region__put_str(b, rg->node_id);
}

/* The node a replica belongs to: its id up to '~' (see gstore_counter_replica_node_len). */
int region__node_of(struct region *rg, int rep)
{
    if (rep >= rg->rep_node_len) {
        int n = gstore_replica_count(rg->store);
        rg->rep_node = xrealloc(rg->rep_node, (size_t)n * sizeof *rg->rep_node);
        for (int r = rg->rep_node_len; r < n; r++) {
            const char *name = gstore_replica_name(rg->store, r);
            size_t len = gstore_counter_replica_node_len(name, strlen(name));
            if (!len)
                len = strlen(name);
            int k = 0;
            while (k < rg->nnodes &&
                   !(strlen(rg->node_names[k]) == len && !memcmp(rg->node_names[k], name, len)))
                k++;
            if (k == rg->nnodes) {
                rg->node_names =
                    xrealloc(rg->node_names, (size_t)(rg->nnodes + 1) * sizeof *rg->node_names);
                rg->node_names[rg->nnodes++] = xstrndup(name, len);
            }
            rg->rep_node[r] = k;
        }
        rg->rep_node_len = n;
    }
    return rg->rep_node[rep];
}

/* This node's net contribution to c, over all its incarnations, exact. */
static gstore_wide local_wide(struct region *rg, const struct gcounter *c)
{
    struct gnode nodes[GCOUNTER_MAX_ENTRIES];
    unsigned k = c ? gstore_counter_nodes(rg->store, c, nodes) : 0;
    int self = gstore_replica_node(rg->store, rg->self);
    for (unsigned j = 0; j < k; j++)
        if (nodes[j].node == self)
            return nodes[j].pos - nodes[j].neg;
    return 0;
}

/* The same, clamped to int64 (see API.md, "Totals beyond int64"). */
int64_t region__local_of(struct region *rg, const struct gcounter *c)
{
    return gstore_clamp(local_wide(rg, c), NULL);
}

/* The counter's value, exact: its entries, plus the increments pending for their tokens'
 * homes. */
static gstore_wide total_wide(struct region *rg, const struct gcounter *c, uint32_t id)
{
    gstore_wide v = gstore_value(rg->store, c);
    if (id != GSTORE_NONE)
        v += tokset_pending(rg->tokset, id);
    return v;
}

/* The same, clamped to int64 (see API.md, "Totals beyond int64"). */
int64_t region__total_of(struct region *rg, const struct gcounter *c, uint32_t id)
{
    return gstore_clamp(total_wide(rg, c, id), NULL);
}

static void put_wide_str(struct buf *b, gstore_wide v)
{
    char s[48];
    buf_putc(b, '"');
    buf_append(b, s, gstore_wide_str(v, s));
    buf_putc(b, '"');
}

/*
 * "local_count":..,"total_count":..,"nodes":{"us-east-1":15,...}[,"pending":..] (no braces):
 * each node's net contribution, incarnations summed, and the increments held for their
 * tokens' homes (in total_count, not in nodes). A count beyond int64 is clamped to its
 * range, and "beyond_int64":true with "exact" (the same three as decimal strings) follow.
 */
void region__put_counts(struct region *rg, struct buf *b, const struct gcounter *c, uint32_t id)
{
    struct gnode nodes[GCOUNTER_MAX_ENTRIES];
    unsigned k = c ? gstore_counter_nodes(rg->store, c, nodes) : 0;
    gstore_wide local = local_wide(rg, c), total = total_wide(rg, c, id);
    int beyond = 0, any = 0;
    buf_puts(b, "\"local_count\":");
    buf_i64(b, gstore_clamp(local, &beyond));
    any |= beyond;
    buf_puts(b, ",\"total_count\":");
    buf_i64(b, gstore_clamp(total, &beyond));
    any |= beyond;
    buf_puts(b, ",\"nodes\":{");
    for (unsigned j = 0; j < k; j++) {
        if (j)
            buf_putc(b, ',');
        region__put_str(b, gstore_node_name(rg->store, nodes[j].node));
        buf_putc(b, ':');
        buf_i64(b, gstore_clamp(nodes[j].pos - nodes[j].neg, &beyond));
        any |= beyond;
    }
    buf_putc(b, '}');
    int64_t pending = id == GSTORE_NONE ? 0 : tokset_pending(rg->tokset, id);
    if (pending) {
        buf_puts(b, ",\"pending\":");
        buf_i64(b, pending);
    }
    if (!any)
        return;
    buf_puts(b, ",\"beyond_int64\":true,\"exact\":{\"local_count\":");
    put_wide_str(b, local);
    buf_puts(b, ",\"total_count\":");
    put_wide_str(b, total);
    buf_puts(b, ",\"nodes\":{");
    for (unsigned j = 0; j < k; j++) {
        if (j)
            buf_putc(b, ',');
        region__put_str(b, gstore_node_name(rg->store, nodes[j].node));
        buf_putc(b, ':');
        put_wide_str(b, nodes[j].pos - nodes[j].neg);
    }
    buf_puts(b, "}}");
}

/* {"views":{"local_count","total_count","nodes"},...} */
void region__put_all_counters(struct region *rg, struct buf *b)
{
    buf_putc(b, '{');
    uint32_t n = gstore_count(rg->store);
    for (uint32_t id = 0; id < n; id++) {
        const struct gcounter *c = gstore_counter(rg->store, id);
        size_t len;
        const char *name = gstore_counter_name(c, &len);
        if (id)
            buf_putc(b, ',');
        buf_json_str(b, name, len);
        buf_puts(b, ":{");
        region__put_counts(rg, b, c, id);
        buf_putc(b, '}');
    }
    buf_putc(b, '}');
}

void region__respond_out(struct http_request *req, struct region *rg, int status)
{
    http_respond_json(req, status, rg->out.data, rg->out.len);
    buf_trim(&rg->out, 1u << 20); /* a /counters answer can be 100 MB: do not keep it */
}

/* Copies counter id's name into out (GCOUNTER_NAME_MAX + 1 bytes). @return its length. */
size_t region__counter_name(struct region *rg, uint32_t id, char *out)
{
    size_t n;
    const char *p = gstore_counter_name(gstore_counter(rg->store, id), &n);
    memcpy(out, p, n);
    out[n] = '\0';
    return n;
}
