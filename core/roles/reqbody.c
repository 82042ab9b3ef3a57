/*
 * reqbody.c - reading the body of an increment (see reqbody.h).
 */
#include "reqbody.h"

#include <stdio.h>

#include "../net/url.h"
#include "../store/gstore.h"

const struct json *reqbody_object(struct json_parser *p, struct http_request *req)
{
    static const struct json empty = {.type = JSON_OBJ};
    size_t i = 0;
    while (i < req->body_len && (req->body[i] == ' ' || req->body[i] == '\n' ||
                                 req->body[i] == '\r' || req->body[i] == '\t'))
        i++;
    if (i == req->body_len)
        return &empty;
    const struct json *root = json_parse(p, req->body, req->body_len);
    if (!root) {
        http_respond_error(req, 400, "bad_json", "body is not valid JSON: %s", p->err);
        return NULL;
    }
    if (root->type != JSON_OBJ) {
        http_respond_error(req, 400, "bad_json", "body must be a JSON object, not %s",
                           json_type_name(root->type) /* "array", "string", ... */);
        return NULL;
    }
    return root;
}

int reqbody_increment_fields(const struct json *root, struct incr_body *out, struct reqbody_err *e)
{
    out->root = root;
    out->name = "views";
    out->nlen = 5;
    e->code = "bad_field";
    const struct json *v = json_get(root, "counter_name");
    if (v && v->type != JSON_NULL) {
        if (v->type != JSON_STR) {
            snprintf(e->detail, sizeof e->detail, "counter_name must be a string, not %s",
                     json_type_name(v->type));
            return -1;
        }
        out->name = v->u.s;
        out->nlen = v->len;
    }
    if (!gstore_counter_name_valid(out->name, out->nlen)) {
        e->code = "bad_name";
        snprintf(e->detail, sizeof e->detail,
                 "counter_name must be 1-200 bytes of [A-Za-z0-9_.:-]");
        return -1;
    }
    out->amount = 1;
    v = json_get(root, "amount");
    if (v && v->type != JSON_NULL) {
        if (v->type != JSON_INT) {
            if (v->flags & JSON_F_BIGINT)
                snprintf(e->detail, sizeof e->detail,
                         "amount must be an integer in the signed 64-bit range");
            else if (v->type == JSON_NUM)
                snprintf(e->detail, sizeof e->detail,
                         "amount must be an integer, without fraction or exponent");
            else
                snprintf(e->detail, sizeof e->detail, "amount must be an integer, not %s",
                         json_type_name(v->type));
            return -1;
        }
        out->amount = v->u.i;
    }
    return 0;
}

int reqbody_increment(struct json_parser *p, struct http_request *req, struct incr_body *out)
{
    const struct json *root = reqbody_object(p, req);
    if (!root)
        return -1;
    struct reqbody_err e;
    if (reqbody_increment_fields(root, out, &e) < 0) {
        http_respond_error(req, 400, e.code, "%s", e.detail);
        return -1;
    }
    return 0;
}

long reqbody_path_name(struct http_request *req, const char *raw, size_t rlen, char *name,
                       size_t cap)
{
    long n = url_decode(raw, rlen, name, cap);
    if (n < 0 || !gstore_counter_name_valid(name, (size_t)n)) {
        http_respond_error(req, 400, "bad_name",
                           "counter names are 1-200 bytes of [A-Za-z0-9_.:-]");
        return -1;
    }
    return n;
}
