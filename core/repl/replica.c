/*
 * replica.c - the strong counter's replica side (see replica.h).
 *
 * Every check runs before anything changes: a message that fails validation, or comes
 * from an old epoch, leaves the state and the log as they were.
 */
#include "replica.h"

#include <inttypes.h>
#include <string.h>

#include "../store/gstore.h"
#include "../store/strongrep.h"
#include "../store/wal.h"

#define MAX_ENTRIES 100000

static const struct json *parse(struct replica *r, struct http_request *req)
{
    const struct json *root = json_parse(r->parser, req->body, req->body_len);
    if (!root) {
        http_respond_error(req, 400, "bad_json", "body is not valid JSON: %s", r->parser->err);
        return NULL;
    }
    if (root->type != JSON_OBJ) {
        http_respond_error(req, 400, "bad_json", "body must be a JSON object");
        return NULL;
    }
    return root;
}

/* A non-negative integer field. @return 0, or -1 after answering 400. */
static int get_u64(struct http_request *req, const struct json *root, const char *field,
                   uint64_t *out)
{
    const struct json *v = json_get(root, field);
    if (!v || v->type != JSON_INT || v->u.i < 0) {
        http_respond_error(req, 400, "bad_field", "%s must be a non-negative integer", field);
        return -1;
    }
    *out = (uint64_t)v->u.i;
    return 0;
}

static void refuse_stale(struct replica *r, struct http_request *req, uint64_t epoch)
{
    struct buf b = {0};
    uint64_t promised = strongrep_promised(r->state);
    buf_printf(&b,
               "{\"detail\":\"epoch %" PRIu64 " is older than the epoch %" PRIu64
               " this replica promised to\",\"error\":\"stale_epoch\",\"promised\":%" PRIu64 "}",
               epoch, promised, promised);
    http_respond_json(req, 409, b.data, b.len);
    buf_free(&b);
}

/* Who answers, and whether what it accepts survives its restart: the leader counts a
 * replica without a log toward no majority unless told to (see strong.h). */
static void put_identity(struct replica *r, struct buf *out)
{
    buf_puts(out, "{\"node_id\":");
    buf_json_str(out, r->node_id, strlen(r->node_id));
    buf_puts(out, ",\"region\":");
    buf_json_str(out, r->region, strlen(r->region));
    buf_puts(out, r->wal ? ",\"durable\":true" : ",\"durable\":false");
}

static void put_entry(void *arg, const char *name, size_t len, const struct strongrep_entry *e)
{
    struct buf *out = arg;
    if (out->data[out->len - 1] != '[')
        buf_putc(out, ',');
    buf_putc(out, '[');
    buf_json_str(out, name, len);
    buf_printf(out, ",%" PRIu64 ",%" PRIu64 ",%" PRId64 "]", e->epoch, e->round, e->value);
}

static int64_t prepare(struct replica *r, struct http_request *req, const struct json *root,
                       struct buf *out)
{
    uint64_t epoch;
    if (get_u64(req, root, "epoch", &epoch) < 0)
        return -1;
    if (epoch <= strongrep_promised(r->state)) {
        refuse_stale(r, req, epoch);
        return -1;
    }
    strongrep_promise(r->state, epoch);
    uint64_t pos = 0;
    if (r->wal) {
        pos = wal_append_promise(r->wal, epoch);
        wal_write_sync(r->wal);
    }
    put_identity(r, out);
    buf_printf(out, ",\"promised\":%" PRIu64 ",\"entries\":[", epoch);
    strongrep_each(r->state, put_entry, out);
    buf_puts(out, "]}");
    return (int64_t)pos;
}

static int64_t accept_(struct replica *r, struct http_request *req, const struct json *root,
                       struct buf *out)
{
    uint64_t epoch, round;
    if (get_u64(req, root, "epoch", &epoch) < 0 || get_u64(req, root, "round", &round) < 0)
        return -1;
    const struct json *entries = json_get(root, "entries");
    if (!entries || entries->type != JSON_ARR || entries->len > MAX_ENTRIES) {
        http_respond_error(req, 400, "bad_field",
                           "entries must be an array of at most %d [name, value] pairs",
                           MAX_ENTRIES);
        return -1;
    }
    for (uint32_t i = 0; i < entries->len; i++) {
        const struct json *e = &entries->u.items[i];
        if (e->type != JSON_ARR || e->len != 2 || e->u.items[0].type != JSON_STR ||
            !strongrep_name_valid(e->u.items[0].u.s, e->u.items[0].len) ||
            e->u.items[1].type != JSON_INT) {
            http_respond_error(req, 400, "bad_field",
                               "entries[%u] must be [counter name, integer value]", i);
            return -1;
        }
    }
    if (epoch < strongrep_promised(r->state)) {
        refuse_stale(r, req, epoch);
        return -1;
    }
    uint64_t pos = 0;
    if (strongrep_promise(r->state, epoch) && r->wal)
        pos = wal_append_promise(r->wal, epoch);
    unsigned accepted = 0;
    for (uint32_t i = 0; i < entries->len; i++) {
        const struct json *name = &entries->u.items[i].u.items[0];
        int64_t value = entries->u.items[i].u.items[1].u.i;
        if (!strongrep_accept(r->state, name->u.s, name->len, epoch, round, value))
            continue; /* a newer round already reached us */
        accepted++;
        if (r->wal) {
            struct strongrep_entry e = {epoch, round, value};
            pos = wal_append_strong(r->wal, name->u.s, name->len, &e);
        }
    }
    if (r->wal && pos)
        wal_write_sync(r->wal);
    put_identity(r, out);
    buf_printf(out, ",\"accepted\":%u,\"epoch\":%" PRIu64 "}", accepted, epoch);
    return (int64_t)pos;
}

int64_t replica_handle(struct replica *r, struct http_request *req, struct buf *out)
{
    if (req->method != HTTP_M_POST) {
        http_respond_error(req, 405, "method_not_allowed", "use POST");
        return -1;
    }
    if (r->wal && wal_failed(r->wal)) {
        http_respond_error(req, 503, "unavailable",
                           "this node cannot write its log (disk error); it accepts nothing");
        return -1;
    }
    const struct json *root = parse(r, req);
    if (!root)
        return -1;
    if (req->path_len == 15 && !memcmp(req->path, "/strong/prepare", 15))
        return prepare(r, req, root, out);
    if (req->path_len == 14 && !memcmp(req->path, "/strong/accept", 14))
        return accept_(r, req, root, out);
    http_respond_error(req, 404, "not_found", "no such strong-counter endpoint");
    return -1;
}
