/*
 * test_nsreg.c - core/store/nsreg.c: "default" always there, the register's merge order
 * ((version, updated_by), whatever order the entries arrive in, deletions included),
 * "default"'s type never changes, JSON encode/decode round trips and refuses bad entries,
 * the file written atomically and read back, restore after a failed save.
 *
 * Never include this from core/.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/buf.h"
#include "base/json.h"
#include "store/nsreg.h"
#include "unit.h"
#include "unit_fs.h"

static struct nsreg_entry entry(const char *name, int type, uint64_t version, const char *by,
                                int deleted)
{
    struct nsreg_entry e = {.type = type, .window_s = 600, .version = version};
    snprintf(e.name, sizeof e.name, "%s", name);
    snprintf(e.updated_by, sizeof e.updated_by, "%s", by);
    e.deleted = deleted;
    e.updated_at = 1000.5;
    return e;
}

static void test_default_and_keys(void)
{
    struct nsreg *r = nsreg_new(NULL);
    CHECK_EQ_U64(nsreg_count(r), 1);
    const struct nsreg_entry *d = nsreg_get(r, "default", 7);
    REQUIRE(d != NULL);
    CHECK_EQ_I64(d->type, NSREG_EVENTUAL);
    CHECK_EQ_I64(d->window_s, 600);
    CHECK(!nsreg_nontrivial(r));
    CHECK(nsreg_of_key(r, "views", 5) == d);
    CHECK(nsreg_of_key(r, "app/views", 9) == NULL);
    struct nsreg_entry a = entry("app", NSREG_REGIONAL, 1, "n1", 0);
    CHECK_EQ_I64(nsreg_merge(r, &a), 1);
    CHECK(nsreg_nontrivial(r));
    CHECK(nsreg_of_key(r, "app/views", 9) != NULL);
    CHECK_EQ_I64(nsreg_of_key(r, "app/views", 9)->type, NSREG_REGIONAL);
    /* "default" keeps its type and cannot be deleted, whatever a peer says */
    struct nsreg_entry bad = entry("default", NSREG_STRONG, 9, "n2", 1);
    bad.ttl_s = 30;
    CHECK_EQ_I64(nsreg_merge(r, &bad), 1);
    d = nsreg_get(r, "default", 7);
    CHECK_EQ_I64(d->type, NSREG_EVENTUAL);
    CHECK_EQ_I64(d->deleted, 0);
    CHECK_EQ_I64(d->ttl_s, 30);
    nsreg_free(r);
}

/* Every order of the same entries gives the same table: the newest wins. */
static void test_merge_order(void)
{
    struct nsreg_entry es[] = {
        entry("x", NSREG_EVENTUAL, 1, "a", 0), entry("x", NSREG_EVENTUAL, 2, "a", 0),
        entry("x", NSREG_EVENTUAL, 2, "b", 1), entry("x", NSREG_EVENTUAL, 1, "z", 0),
        entry("y", NSREG_STRONG, 3, "a", 0),
    };
    es[1].ttl_s = 5;
    int perm[][5] = {{0, 1, 2, 3, 4}, {4, 3, 2, 1, 0}, {2, 0, 4, 1, 3}, {3, 2, 1, 0, 4}};
    for (int p = 0; p < 4; p++) {
        struct nsreg *r = nsreg_new(NULL);
        for (int i = 0; i < 5; i++)
            nsreg_merge(r, &es[perm[p][i]]);
        const struct nsreg_entry *x = nsreg_get(r, "x", 1);
        REQUIRE(x != NULL);
        CHECK_EQ_U64(x->version, 2);
        CHECK_STR_EQ(x->updated_by, "b");
        CHECK_EQ_I64(x->deleted, 1);
        CHECK_EQ_U64(nsreg_max_version(r), 3);
        CHECK_EQ_I64(nsreg_merge(r, &es[0]), 0); /* older: not taken */
        nsreg_free(r);
    }
}

static void test_json_round_trip(void)
{
    struct nsreg *r = nsreg_new(NULL), *s = nsreg_new(NULL);
    struct nsreg_entry a = entry("app.v2", NSREG_STRONG, 4, "us-east-1", 0);
    a.ttl_s = 315360000;
    a.window_s = 86400;
    nsreg_merge(r, &a);
    struct nsreg_entry g = entry("gone", NSREG_EVENTUAL, 5, "us-west-1", 1);
    nsreg_merge(r, &g);
    struct buf b = {0};
    nsreg_encode(r, &b);
    struct json_parser p;
    json_parser_init(&p);
    const struct json *root = json_parse(&p, b.data, b.len);
    REQUIRE(root != NULL);
    int bad = 0;
    CHECK_EQ_I64(nsreg_decode(s, root, &bad), 2);
    CHECK_EQ_I64(bad, 0);
    const struct nsreg_entry *x = nsreg_get(s, "app.v2", 6);
    REQUIRE(x != NULL);
    CHECK_EQ_I64(x->type, NSREG_STRONG);
    CHECK_EQ_I64(x->ttl_s, 315360000);
    CHECK_EQ_I64(x->window_s, 86400);
    CHECK_STR_EQ(x->updated_by, "us-east-1");
    CHECK_EQ_DBL(x->updated_at, 1000.5);
    CHECK_EQ_I64(nsreg_get(s, "gone", 4)->deleted, 1);
    /* bad entries are left out and counted */
    static const char *bads[] = {
        "{\"a b\":{\"type\":\"eventual\",\"ttl_seconds\":0,\"idempotency_window_seconds\":1,"
        "\"version\":1,\"updated_by\":\"n\",\"updated_at\":1,\"deleted\":false}}",
        "{\"a\":{\"type\":\"weird\",\"ttl_seconds\":0,\"idempotency_window_seconds\":1,"
        "\"version\":1,\"updated_by\":\"n\",\"updated_at\":1,\"deleted\":false}}",
        "{\"a\":{\"type\":\"eventual\",\"ttl_seconds\":-1,\"idempotency_window_seconds\":1,"
        "\"version\":1,\"updated_by\":\"n\",\"updated_at\":1,\"deleted\":false}}",
        "{\"a\":{\"type\":\"eventual\",\"ttl_seconds\":0,\"idempotency_window_seconds\":0,"
        "\"version\":1,\"updated_by\":\"n\",\"updated_at\":1,\"deleted\":false}}",
        "{\"a\":{\"type\":\"eventual\",\"ttl_seconds\":0,\"idempotency_window_seconds\":1,"
        "\"version\":1,\"updated_by\":\"n\",\"updated_at\":1}}",
        "[1]",
    };
    for (size_t i = 0; i < sizeof bads / sizeof *bads; i++) {
        struct nsreg *t = nsreg_new(NULL);
        root = json_parse(&p, bads[i], strlen(bads[i]));
        REQUIRE(root != NULL);
        bad = 0;
        CHECK_EQ_I64(nsreg_decode(t, root, &bad), 0);
        CHECK_EQ_I64(bad, 1);
        CHECK_EQ_U64(nsreg_count(t), 1);
        nsreg_free(t);
    }
    json_parser_free(&p);
    buf_free(&b);
    nsreg_free(r);
    nsreg_free(s);
}

static void test_file(void)
{
    char dir[] = "/tmp/counterd-nsreg-XXXXXX";
    REQUIRE(mkdtemp(dir) != NULL);
    char path[256], err[512];
    snprintf(path, sizeof path, "%s/namespaces.json", dir);
    struct nsreg *r = nsreg_new(path);
    CHECK_EQ_I64(nsreg_load(r, err, sizeof err), 0); /* no file yet */
    struct nsreg_entry a = entry("carts", NSREG_REGIONAL, 7, "n1", 0);
    a.ttl_s = 60;
    nsreg_merge(r, &a);
    CHECK_EQ_I64(nsreg_save(r, err, sizeof err), 0);
    char tmp[300];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    CHECK(access(tmp, F_OK) != 0);
    struct nsreg *s = nsreg_new(path);
    CHECK_EQ_I64(nsreg_load(s, err, sizeof err), 0);
    const struct nsreg_entry *x = nsreg_get(s, "carts", 5);
    REQUIRE(x != NULL);
    CHECK_EQ_I64(x->ttl_s, 60);
    CHECK_EQ_U64(x->version, 7);
    /* restore: a change that could not be saved is put back */
    struct nsreg_entry old = *x, b = entry("carts", NSREG_REGIONAL, 8, "n1", 1);
    nsreg_merge(s, &b);
    nsreg_restore(s, "carts", &old);
    CHECK_EQ_U64(nsreg_get(s, "carts", 5)->version, 7);
    struct nsreg_entry n = entry("new", NSREG_REGIONAL, 9, "n1", 0);
    nsreg_merge(s, &n);
    nsreg_restore(s, "new", NULL);
    CHECK(nsreg_get(s, "new", 3) == NULL);
    CHECK(nsreg_get(s, "carts", 5) != NULL);
    /* a damaged file is refused with a sentence */
    FILE *f = fopen(path, "w");
    REQUIRE(f != NULL);
    fputs("{\"namespaces\":", f);
    fclose(f);
    struct nsreg *t = nsreg_new(path);
    CHECK_EQ_I64(nsreg_load(t, err, sizeof err), -1);
    CHECK(strstr(err, "namespaces.json") != NULL);
    nsreg_free(t);
    nsreg_free(s);
    nsreg_free(r);
    rm_rf(dir);
}

UNIT_MAIN("nsreg", UNIT_CASE(test_default_and_keys), UNIT_CASE(test_merge_order),
          UNIT_CASE(test_json_round_trip), UNIT_CASE(test_file))
