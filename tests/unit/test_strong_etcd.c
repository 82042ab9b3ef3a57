/*
 * test_strong_etcd.c - the etcd transactions the strong role sends
 * (core/roles/strong_etcd.c's etcd_txn_json) read back as etcd's JSON gateway reads them,
 * and which etcd errors prove that nothing was applied. The backend against a real etcd is
 * tests/integration/82_strong_etcd.py and 83_strong_etcd_failover.py.
 * Never include this from core/.
 */
#include <string.h>

#include "base/base64.h"
#include "base/json.h"
#include "roles/strong_etcd.h"
#include "unit.h"

/* The decoded bytes of a base64 member of obj, NUL-terminated, into out. */
static const char *b64_member(const struct json *obj, const char *name, char *out, size_t cap)
{
    const struct json *v = json_get(obj, name);
    if (!v || v->type != JSON_STR)
        return "<missing>";
    long n = base64_decode(v->u.s, v->len, out, cap - 1);
    if (n < 0)
        return "<not base64>";
    out[n] = '\0';
    return out;
}

static const char *str_member(const struct json *obj, const char *name)
{
    const struct json *v = json_get(obj, name);
    return v && v->type == JSON_STR ? v->u.s : "<missing>";
}

static void test_add_with_tokens(void)
{
    struct buf b = BUF_INIT;
    struct etcd_tok toks[2] = {{"/p/tok/ns/a", 11, 1, 5, 77}, {"/p/tok/ns/b", 11, 0, 0, 0}};
    etcd_txn_json(&b, "/p/c/ns/x", 9, 42, ETCD_PUT_VALUE, 12, toks, 2);
    struct json_parser p;
    json_parser_init(&p);
    const struct json *root = json_parse(&p, b.data, b.len);
    REQUIRE(root && root->type == JSON_OBJ);
    char t[64];
    const struct json *cmp = json_get(root, "compare");
    REQUIRE(cmp && cmp->type == JSON_ARR && cmp->len == 3);
    /* The counter's revision, then each token's absence. */
    CHECK_STR_EQ(str_member(&cmp->u.items[0], "target"), "MOD");
    CHECK_STR_EQ(str_member(&cmp->u.items[0], "result"), "EQUAL");
    CHECK_STR_EQ(str_member(&cmp->u.items[0], "mod_revision"), "42");
    CHECK_STR_EQ(b64_member(&cmp->u.items[0], "key", t, sizeof t), "/p/c/ns/x");
    for (int i = 1; i < 3; i++) {
        CHECK_STR_EQ(str_member(&cmp->u.items[i], "target"), "CREATE");
        CHECK_STR_EQ(str_member(&cmp->u.items[i], "create_revision"), "0");
    }
    CHECK_STR_EQ(b64_member(&cmp->u.items[2], "key", t, sizeof t), "/p/tok/ns/b");
    /* Success: the value, and only the token that applied, on its lease. */
    const struct json *ok = json_get(root, "success");
    REQUIRE(ok && ok->type == JSON_ARR && ok->len == 2);
    const struct json *put = json_get(&ok->u.items[0], "request_put");
    REQUIRE(put);
    CHECK_STR_EQ(b64_member(put, "value", t, sizeof t), "12");
    CHECK(json_get(put, "lease") == NULL);
    put = json_get(&ok->u.items[1], "request_put");
    REQUIRE(put);
    CHECK_STR_EQ(b64_member(put, "key", t, sizeof t), "/p/tok/ns/a");
    CHECK_STR_EQ(b64_member(put, "value", t, sizeof t), "5");
    CHECK_STR_EQ(str_member(put, "lease"), "77");
    /* Failure: the counter and every token read back, in order. */
    const struct json *fail = json_get(root, "failure");
    REQUIRE(fail && fail->type == JSON_ARR && fail->len == 3);
    const struct json *rg = json_get(&fail->u.items[2], "request_range");
    REQUIRE(rg);
    CHECK_STR_EQ(b64_member(rg, "key", t, sizeof t), "/p/tok/ns/b");
    CHECK(json_get(rg, "serializable") == NULL); /* linearizable */
    json_parser_free(&p);
    buf_free(&b);
}

static void test_absent_counter_and_delete(void)
{
    struct buf b = BUF_INIT;
    struct json_parser p;
    json_parser_init(&p);
    char t[64];
    /* A counter not there yet: its absence is compared. A negative value round-trips. */
    etcd_txn_json(&b, "/p/c/default/h", 14, 0, ETCD_PUT_VALUE, -3, NULL, 0);
    const struct json *root = json_parse(&p, b.data, b.len);
    REQUIRE(root);
    const struct json *cmp = json_get(root, "compare");
    REQUIRE(cmp && cmp->len == 1);
    CHECK_STR_EQ(str_member(&cmp->u.items[0], "target"), "CREATE");
    CHECK_STR_EQ(str_member(&cmp->u.items[0], "create_revision"), "0");
    const struct json *ok = json_get(root, "success");
    REQUIRE(ok && ok->len == 1);
    CHECK_STR_EQ(b64_member(json_get(&ok->u.items[0], "request_put"), "value", t, sizeof t), "-3");
    /* A delete. */
    buf_reset(&b);
    etcd_txn_json(&b, "/p/c/ns/x", 9, 7, ETCD_PUT_DELETE, 0, NULL, 0);
    root = json_parse(&p, b.data, b.len);
    REQUIRE(root);
    ok = json_get(root, "success");
    REQUIRE(ok && ok->len == 1);
    const struct json *del = json_get(&ok->u.items[0], "request_delete_range");
    REQUIRE(del);
    CHECK_STR_EQ(b64_member(del, "key", t, sizeof t), "/p/c/ns/x");
    CHECK(json_get(del, "range_end") == NULL); /* one key, never a range */
    /* Nothing to put (a clear of an absent counter): compare only. */
    buf_reset(&b);
    etcd_txn_json(&b, "/p/c/ns/x", 9, 0, ETCD_PUT_NONE, 0, NULL, 0);
    root = json_parse(&p, b.data, b.len);
    REQUIRE(root);
    CHECK_EQ_I64(json_get(root, "success")->len, 0);
    json_parser_free(&p);
    buf_free(&b);
}

static void test_errors_that_prove_nothing_applied(void)
{
    CHECK(etcd_error_not_applied("etcdserver: no leader"));
    CHECK(etcd_error_not_applied("etcdserver: requested lease not found"));
    CHECK(etcd_error_not_applied("etcdserver: too many requests"));
    CHECK(!etcd_error_not_applied("etcdserver: request timed out"));
    CHECK(!etcd_error_not_applied("etcdserver: leader changed"));
    CHECK(!etcd_error_not_applied("context deadline exceeded"));
    CHECK(!etcd_error_not_applied(""));
}

UNIT_MAIN("test_strong_etcd", UNIT_CASE(test_add_with_tokens),
          UNIT_CASE(test_absent_counter_and_delete),
          UNIT_CASE(test_errors_that_prove_nothing_applied))
