/*
 * reqbody.h - reading the body of an increment, shared by the region and strong roles.
 *
 * API.md: {"counter_name":"views","amount":1}, both optional (defaults "views" and 1); an
 * empty body is an empty object. Every mistake is answered 400 with a detail naming the
 * field and the reason, before anything changes.
 */
#ifndef COUNTERD_ROLES_REQBODY_H
#define COUNTERD_ROLES_REQBODY_H

#include <stddef.h>
#include <stdint.h>

#include "../base/json.h"
#include "../net/http.h"

struct incr_body {
    const struct json *root; /* the whole object, for fields a role adds */
    const char *name;
    size_t nlen;
    int64_t amount;
};

/*
 * Parses req's body as a JSON object (empty: {}).
 * @return the object, or NULL after answering 400 bad_json.
 */
const struct json *reqbody_object(struct json_parser *p, struct http_request *req);

/*
 * The counter name at the end of a path (/counter/<raw>), percent-decoded into name
 * (at least 256 bytes). @return its length, or -1 after answering 400 bad_name.
 */
long reqbody_path_name(struct http_request *req, const char *raw, size_t rlen, char *name,
                       size_t cap);

/* A mistake in an increment's fields: answered 400 with this code and detail. */
struct reqbody_err {
    const char *code; /* "bad_field" or "bad_name" */
    char detail[160];
};

/*
 * Reads counter_name and amount of the increment object root (a batch's item, or a body).
 * @return 0 with out filled, or -1 with e filled; nothing is answered.
 */
int reqbody_increment_fields(const struct json *root, struct incr_body *out, struct reqbody_err *e);

/* @return 0 with out filled, or -1 after answering 400 (bad_json, bad_field, bad_name). */
int reqbody_increment(struct json_parser *p, struct http_request *req, struct incr_body *out);

#endif
