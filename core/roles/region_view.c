/*
 * region_view.c - how a region node shows its counters: the JSON views of its answers.
 *
 * Every answer is written straight into the role's reusable buffer: no DOM on the way
 * out. Nothing here changes the store.
 */
#include "region_internal.h"

#include <inttypes.h>
#include <string.h>

#include "../base/hex.h"
#include "../base/mem.h"
#include "../net/http.h"
#include "../net/url.h"
#include "../store/names.h"
#include "../store/tokset.h"
#include "reqbody.h"

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

/*
 * "counters":{"views":{"local_count","total_count","nodes"},...},"total_counters":N,
 * "truncated":bool: the first page of GET /counters (FORCE_SYNC_PAGE counters in name
 * order), so an answer that lists the store costs a page whatever the store holds.
 */
void region__put_first_counters(struct region *rg, struct buf *b)
{
    enum { FORCE_SYNC_PAGE = 1000 };
    names_sync(rg->names, rg->store);
    uint32_t n = names_count(rg->names);
    uint32_t end = n < FORCE_SYNC_PAGE ? n : FORCE_SYNC_PAGE;
    buf_puts(b, "\"counters\":{");
    for (uint32_t pos = 0; pos < end; pos++) {
        uint32_t id = names_at(rg->names, pos);
        const struct gcounter *c = gstore_counter(rg->store, id);
        size_t len;
        const char *name = gstore_counter_name(c, &len);
        if (pos)
            buf_putc(b, ',');
        buf_json_str(b, name, len);
        buf_puts(b, ":{");
        region__put_counts(rg, b, c, id);
        buf_putc(b, '}');
    }
    buf_printf(b, "},\"total_counters\":%" PRIu32 ",\"truncated\":%s", n,
               end < n ? "true" : "false");
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

/* ---------------------------------------------------------------- GET /counters */

#define LIST_DEFAULT 1000
#define LIST_MAX 10000
#define READ_MAX 256
#define BYTES_MIN 1024
#define BYTES_MAX 1073741824u
/* The most a page's fields after its rows take: total_counters, matching_counters,
 * truncated and a next_cursor of a 200-byte name (400 hex digits). */
#define PAGE_TAIL_MAX 600

/* What a listing asks for (API.md, "GET /counters"). */
struct list_query {
    uint32_t limit;
    uint32_t max_bytes; /* 0: no budget */
    int has_cursor, has_prefix;
    char cursor[GCOUNTER_NAME_MAX + 1], prefix[GCOUNTER_NAME_MAX + 1];
    size_t clen, plen;
};

/* Reads parameter name into out (cap bytes). @return its length, URL_QUERY_ABSENT, or -2
 * after answering 400 (a bad escape, or longer than cap - 1). */
static long list_param(struct http_request *req, const char *name, char *out, size_t cap,
                       const char *rule)
{
    long n = url_query_get(req->query, name, out, cap);
    if (n == URL_QUERY_BAD) {
        char detail[200];
        url_query_bad_detail(name, strlen(name), detail, sizeof detail);
        http_respond_error(req, 400, "bad_field", "%s", detail);
        return -2;
    }
    if (n == URL_QUERY_LONG) {
        http_respond_error(req, 400, "bad_field", "%s", rule);
        return -2;
    }
    return n;
}

static int parse_limit(struct http_request *req, struct list_query *q)
{
    static const char rule[] = "limit must be an integer from 1 to 10000";
    char v[16];
    long n = list_param(req, "limit", v, sizeof v, rule);
    q->limit = LIST_DEFAULT;
    if (n == URL_QUERY_ABSENT)
        return 0;
    if (n < 0)
        return -1;
    uint32_t x = 0;
    int bad = n == 0;
    for (long i = 0; !bad && i < n; i++) {
        bad = v[i] < '0' || v[i] > '9' || x > LIST_MAX;
        x = x * 10 + (uint32_t)(v[i] - '0');
    }
    if (bad || x < 1 || x > LIST_MAX) {
        http_respond_error(req, 400, "bad_field", "%s", rule);
        return -1;
    }
    q->limit = x;
    return 0;
}

static int parse_max_bytes(struct http_request *req, struct list_query *q)
{
    static const char rule[] = "max_bytes must be an integer from 1024 to 1073741824";
    char v[16];
    long n = list_param(req, "max_bytes", v, sizeof v, rule);
    q->max_bytes = 0;
    if (n == URL_QUERY_ABSENT)
        return 0;
    if (n < 0)
        return -1;
    uint64_t x = 0;
    int bad = n == 0 || n > 10;
    for (long i = 0; !bad && i < n; i++) {
        bad = v[i] < '0' || v[i] > '9';
        x = x * 10 + (uint64_t)(v[i] - '0');
    }
    if (bad || x < BYTES_MIN || x > BYTES_MAX) {
        http_respond_error(req, 400, "bad_field", "%s", rule);
        return -1;
    }
    q->max_bytes = (uint32_t)x;
    return 0;
}

/* The cursor is the hex of the last name a page returned; "" is the start. */
static int parse_cursor(struct http_request *req, struct list_query *q)
{
    static const char rule[] = "cursor must be a next_cursor from an earlier answer (the hex of "
                               "a counter name)";
    char v[2 * GCOUNTER_NAME_MAX + 2];
    long n = list_param(req, "cursor", v, sizeof v, rule);
    q->has_cursor = 0;
    if (n == URL_QUERY_ABSENT || n == 0)
        return 0;
    if (n < 0)
        return -1;
    int ok = n % 2 == 0;
    for (long i = 0; ok && i < n; i += 2) {
        int hi = hex_val(v[i]), lo = hex_val(v[i + 1]);
        ok = hi >= 0 && lo >= 0;
        q->cursor[i / 2] = (char)(ok ? hi * 16 + lo : 0);
    }
    q->clen = (size_t)n / 2;
    if (!ok || !gstore_counter_name_valid(q->cursor, q->clen)) {
        http_respond_error(req, 400, "bad_field", "%s", rule);
        return -1;
    }
    q->has_cursor = 1;
    return 0;
}

static int parse_prefix(struct http_request *req, struct list_query *q)
{
    static const char rule[] = "prefix must be 0-200 bytes of [A-Za-z0-9_.:-]";
    long n = list_param(req, "prefix", q->prefix, sizeof q->prefix, rule);
    q->has_prefix = n != URL_QUERY_ABSENT;
    q->plen = n > 0 ? (size_t)n : 0;
    if (n == -2)
        return -1;
    if (n > 0 && !gstore_counter_name_valid(q->prefix, q->plen)) {
        http_respond_error(req, 400, "bad_field", "%s", rule);
        return -1;
    }
    return 0;
}

/* "name":{"local_count","total_count","nodes"} of counter id. */
static void put_named_counts(struct region *rg, struct buf *b, uint32_t id)
{
    const struct gcounter *c = gstore_counter(rg->store, id);
    size_t len;
    const char *name = gstore_counter_name(c, &len);
    buf_json_str(b, name, len);
    buf_puts(b, ":{");
    region__put_counts(rg, b, c, id);
    buf_putc(b, '}');
}

/* The page [from, to) of the index, and the fields that say what follows. The answer began
 * at start in b: with a byte budget, the rows stop before the one that would take it over
 * (with room left for the fields that follow), the first row excepted. */
static void put_page(struct region *rg, struct buf *b, size_t start, const struct list_query *q,
                     uint32_t from, uint32_t to, uint32_t matching)
{
    uint32_t end = to - from > q->limit ? from + q->limit : to;
    buf_puts(b, ",\"counters\":{");
    for (uint32_t pos = from; pos < end; pos++) {
        size_t before = b->len;
        if (pos > from)
            buf_putc(b, ',');
        put_named_counts(rg, b, names_at(rg->names, pos));
        if (q->max_bytes && pos > from && b->len - start + PAGE_TAIL_MAX > q->max_bytes) {
            b->len = before;
            end = pos;
        }
    }
    buf_printf(b, "},\"total_counters\":%" PRIu32, gstore_count(rg->store));
    if (q->has_prefix)
        buf_printf(b, ",\"matching_counters\":%" PRIu32, matching);
    if (end == to) {
        buf_puts(b, ",\"truncated\":false}");
        return;
    }
    size_t len;
    const char *last =
        gstore_counter_name(gstore_counter(rg->store, names_at(rg->names, end - 1)), &len);
    buf_puts(b, ",\"truncated\":true,\"next_cursor\":\"");
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < len; i++) {
        buf_putc(b, digits[(unsigned char)last[i] >> 4]);
        buf_putc(b, digits[(unsigned char)last[i] & 15]);
    }
    buf_puts(b, "\"}");
}

/* How many new counters one tick of the names timer takes into the index at most: at 1M
 * counters a slice is about 20 ms of a release build's loop. */
#define NAMES_SLICE 65536

/* The names timer (every NAMES_TICK_MS, region.c): counters created since the last look go
 * into the name index a slice at a time, so a listing after a bulk fill (1M names: 0.1-0.9 s
 * to sort at once) finds them sorted. */
void region__on_names_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct region *rg = arg;
    names_sync_some(rg->names, rg->store, NAMES_SLICE);
}

/* GET /counters[?limit=&cursor=&prefix=&max_bytes=]: one page of the counters in name order. */
void region__h_counters(void *role, struct http_request *req)
{
    struct region *rg = role;
    struct list_query q;
    if (parse_limit(req, &q) < 0 || parse_cursor(req, &q) < 0 || parse_prefix(req, &q) < 0 ||
        parse_max_bytes(req, &q) < 0)
        return;
    names_sync(rg->names, rg->store);
    uint32_t lo, hi;
    names_prefix(rg->names, rg->store, q.prefix, q.plen, &lo, &hi);
    uint32_t from = lo;
    if (q.has_cursor) {
        uint32_t after = names_after(rg->names, rg->store, q.cursor, q.clen);
        from = after > lo ? (after < hi ? after : hi) : lo;
    }
    struct buf *b = &rg->out;
    size_t start = b->len;
    buf_putc(b, '{');
    region__put_identity(rg, b);
    buf_puts(b, repl_partitioned(rg->repl) ? ",\"network_partition\":true"
                                           : ",\"network_partition\":false");
    buf_puts(b, ",\"last_sync_time\":");
    buf_printf(b, "%.3f", repl_last_sync_time(rg->repl));
    put_page(rg, b, start, &q, from, hi, hi - lo);
    region__respond_out(req, rg, 200);
}

/* POST /counters/read {"names":[...]}: those counters (at most 256), unknown ones as 0. */
void region__h_counters_read(void *role, struct http_request *req)
{
    struct region *rg = role;
    const struct json *root = reqbody_object(&rg->parser, req);
    if (!root)
        return;
    const struct json *names = json_get(root, "names");
    if (!names || names->type != JSON_ARR || names->len > READ_MAX) {
        http_respond_error(req, 400, "bad_field", "names must be an array of at most %d names",
                           READ_MAX);
        return;
    }
    for (uint32_t i = 0; i < names->len; i++) {
        const struct json *v = &names->u.items[i];
        if (v->type != JSON_STR || !gstore_counter_name_valid(v->u.s, v->len)) {
            http_respond_error(req, 400, "bad_name",
                               "names[%u]: counter names are 1-200 bytes of [A-Za-z0-9_.:-]", i);
            return;
        }
    }
    struct buf *b = &rg->out;
    buf_putc(b, '{');
    region__put_identity(rg, b);
    buf_puts(b, ",\"counters\":{");
    for (uint32_t i = 0; i < names->len; i++) {
        const struct json *v = &names->u.items[i];
        uint32_t id = gstore_find(rg->store, v->u.s, v->len);
        if (i)
            buf_putc(b, ',');
        buf_json_str(b, v->u.s, v->len);
        buf_puts(b, ":{");
        region__put_counts(rg, b, id == GSTORE_NONE ? NULL : gstore_counter(rg->store, id), id);
        buf_putc(b, '}');
    }
    buf_puts(b, "}}");
    region__respond_out(req, rg, 200);
}
