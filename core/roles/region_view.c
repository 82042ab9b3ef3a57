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
    int first = 1;
    for (uint32_t pos = 0; pos < end; pos++) {
        uint32_t id = names_at(rg->names, pos);
        if (!gstore_exists(rg->store, id) || gstore_dead(rg->store, id))
            continue;
        const struct gcounter *c = gstore_counter(rg->store, id);
        size_t len;
        const char *name = gstore_counter_name(c, &len);
        if (!first)
            buf_putc(b, ',');
        first = 0;
        buf_json_str(b, name, len);
        buf_puts(b, ":{");
        region__put_counts(rg, b, c, id);
        buf_putc(b, '}');
    }
    buf_printf(b, "},\"total_counters\":%" PRIu32 ",\"truncated\":%s",
               gstore_live(rg->store) - gstore_dead_total(rg->store), end < n ? "true" : "false");
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
    if (!ok || !gstore_key_valid(q->cursor, q->clen)) {
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

/* What a listing shows: every key, or one namespace's (its names without the prefix). */
struct list_scope {
    const char *ns;
    size_t nslen, skip; /* skip: bytes of "ns/" before a name */
    int dflt;           /* namespace "default": bare keys only */
    int v1;             /* rows {"count","nodes"} */
};

/* Whether the listing shows counter id (it exists, is not dead, is in the scope). */
static int listed(struct region *rg, const struct list_scope *sc, uint32_t id)
{
    if (!gstore_exists(rg->store, id) || gstore_dead(rg->store, id))
        return 0;
    if (!sc->dflt)
        return 1;
    size_t len;
    const char *key = gstore_counter_name(gstore_counter(rg->store, id), &len);
    return memchr(key, '/', len) == NULL;
}

/* Counters the listing shows in [lo, hi) of the index: a walk only when some are dead or
 * the scope is namespace "default" (its keys are spread through the index). */
static uint32_t count_listed(struct region *rg, const struct list_scope *sc, uint32_t lo,
                             uint32_t hi)
{
    if (!sc->dflt && !gstore_dead_total(rg->store) &&
        gstore_live(rg->store) == gstore_count(rg->store))
        return hi - lo;
    uint32_t n = 0;
    for (uint32_t pos = lo; pos < hi; pos++)
        n += listed(rg, sc, names_at(rg->names, pos));
    return n;
}

void region__put_count_nodes(struct region *rg, struct buf *b, const struct gcounter *c,
                             uint32_t id)
{
    struct gnode nodes[GCOUNTER_MAX_ENTRIES];
    unsigned k = c ? gstore_counter_nodes(rg->store, c, nodes) : 0;
    buf_puts(b, "\"count\":");
    buf_i64(b, region__total_of(rg, c, id));
    buf_puts(b, ",\"nodes\":{");
    for (unsigned j = 0; j < k; j++) {
        if (j)
            buf_putc(b, ',');
        region__put_str(b, gstore_node_name(rg->store, nodes[j].node));
        buf_putc(b, ':');
        buf_i64(b, gstore_clamp(nodes[j].pos - nodes[j].neg, NULL));
    }
    buf_putc(b, '}');
}

/* "name":{"local_count","total_count","nodes"} (v1: {"count","nodes"}) of counter id. */
static void put_named_counts(struct region *rg, struct buf *b, const struct list_scope *sc,
                             uint32_t id)
{
    const struct gcounter *c = gstore_counter(rg->store, id);
    size_t len;
    const char *name = gstore_counter_name(c, &len);
    buf_json_str(b, name + sc->skip, len - sc->skip);
    buf_puts(b, ":{");
    if (sc->v1)
        region__put_count_nodes(rg, b, c, id);
    else
        region__put_counts(rg, b, c, id);
    buf_putc(b, '}');
}

/* The page from position from of the index (up to to), and the fields that say what
 * follows. The answer began at start in b: with a byte budget, the rows stop before the one
 * that would take it over (with room left for the fields that follow), the first row
 * excepted. total and matching: what the scope holds, and what the prefix matches. */
static void put_page(struct region *rg, struct buf *b, size_t start, const struct list_query *q,
                     const struct list_scope *sc, uint32_t from, uint32_t to, uint32_t total,
                     uint32_t matching)
{
    uint32_t rows = 0, pos = from, last = GSTORE_NONE;
    buf_puts(b, ",\"counters\":{");
    for (; pos < to && rows < q->limit; pos++) {
        uint32_t id = names_at(rg->names, pos);
        if (!listed(rg, sc, id))
            continue;
        size_t before = b->len;
        if (rows)
            buf_putc(b, ',');
        put_named_counts(rg, b, sc, id);
        if (q->max_bytes && rows && b->len - start + PAGE_TAIL_MAX > q->max_bytes) {
            b->len = before;
            break;
        }
        rows++;
        last = id;
    }
    buf_printf(b, "},\"total_counters\":%" PRIu32, total);
    if (q->has_prefix)
        buf_printf(b, ",\"matching_counters\":%" PRIu32, matching);
    if (pos == to || last == GSTORE_NONE) {
        buf_puts(b, ",\"truncated\":false}");
        return;
    }
    size_t len;
    const char *name = gstore_counter_name(gstore_counter(rg->store, last), &len);
    buf_puts(b, ",\"truncated\":true,\"next_cursor\":\"");
    static const char digits[] = "0123456789abcdef";
    for (size_t i = sc->skip; i < len; i++) {
        buf_putc(b, digits[(unsigned char)name[i] >> 4]);
        buf_putc(b, digits[(unsigned char)name[i] & 15]);
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

/* The head of a listing: /v1's {"namespace", or GET /counters' identity and sync state. */
static void put_list_head(struct region *rg, struct buf *b, const struct list_scope *sc)
{
    buf_putc(b, '{');
    if (sc->v1) {
        buf_puts(b, "\"namespace\":");
        buf_json_str(b, sc->ns, sc->nslen);
        buf_putc(b, ',');
        region__put_identity(rg, b);
        return;
    }
    region__put_identity(rg, b);
    if (sc->ns) {
        buf_puts(b, ",\"namespace\":");
        buf_json_str(b, sc->ns, sc->nslen);
    }
    buf_puts(b, repl_partitioned(rg->repl) ? ",\"network_partition\":true"
                                           : ",\"network_partition\":false");
    buf_puts(b, ",\"last_sync_time\":");
    buf_printf(b, "%.3f", repl_last_sync_time(rg->repl));
}

void region__list(struct region *rg, struct http_request *req, const char *ns, size_t nslen, int v1)
{
    struct list_query q;
    if (parse_limit(req, &q) < 0 || parse_cursor(req, &q) < 0 || parse_prefix(req, &q) < 0 ||
        parse_max_bytes(req, &q) < 0)
        return;
    struct list_scope sc = {ns, nslen, 0, 0, v1};
    sc.dflt = ns && nslen == 7 && !memcmp(ns, "default", 7);
    char pre[2 * GCOUNTER_NAME_MAX + 2], cur[2 * GCOUNTER_NAME_MAX + 2];
    if (ns && !sc.dflt) {
        memcpy(pre, ns, nslen);
        pre[nslen] = '/';
        sc.skip = nslen + 1;
    }
    memcpy(pre + sc.skip, q.prefix, q.plen);
    names_sync(rg->names, rg->store);
    uint32_t lo, hi, slo, shi;
    names_prefix(rg->names, rg->store, pre, sc.skip + q.plen, &lo, &hi);
    names_prefix(rg->names, rg->store, pre, sc.skip, &slo, &shi);
    uint32_t from = lo;
    if (q.has_cursor) {
        memcpy(cur, pre, sc.skip);
        memcpy(cur + sc.skip, q.cursor, q.clen);
        uint32_t after = names_after(rg->names, rg->store, cur, sc.skip + q.clen);
        from = after > lo ? (after < hi ? after : hi) : lo;
    }
    uint32_t total = ns ? count_listed(rg, &sc, slo, shi)
                        : gstore_live(rg->store) - gstore_dead_total(rg->store);
    uint32_t matching = q.has_prefix ? count_listed(rg, &sc, lo, hi) : total;
    struct buf *b = &rg->out;
    size_t start = b->len;
    put_list_head(rg, b, &sc);
    put_page(rg, b, start, &q, &sc, from, hi, total, matching);
    region__respond_out(req, rg, 200);
}

/* GET /counters[?limit=&cursor=&prefix=&max_bytes=&namespace=]: one page of the counters in
 * name order (of one namespace, named without its prefix). */
void region__h_counters(void *role, struct http_request *req)
{
    struct region *rg = role;
    char ns[GSTORE_NS_MAX + 2];
    long n = list_param(req, "namespace", ns, sizeof ns,
                        "namespace must be 1-48 bytes of [A-Za-z0-9_.-]");
    if (n == -2)
        return;
    if (n != URL_QUERY_ABSENT && !gstore_ns_name_valid(ns, (size_t)(n < 0 ? 0 : n))) {
        http_respond_error(req, 400, "bad_field", "namespace must be 1-48 bytes of [A-Za-z0-9_.-]");
        return;
    }
    region__list(rg, req, n == URL_QUERY_ABSENT ? NULL : ns, n == URL_QUERY_ABSENT ? 0 : (size_t)n,
                 0);
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
        if (id != GSTORE_NONE && gstore_dead(rg->store, id))
            id = GSTORE_NONE; /* answered as an unknown counter */
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
