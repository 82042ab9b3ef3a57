/*
 * test_json.c - unit tests of the strict JSON reader (core/base/json.c).
 *
 * Every document is parsed from a heap block of exactly its length with no terminating
 * NUL, so a read past len is caught by ASan and valgrind. Besides fixed cases (each type,
 * the int64 edges, escapes, what RFC 8259 rejects, depth), two randomized tests: random
 * trees written as JSON in random styles must parse back to the same tree, and mutated
 * documents must either parse to a well-formed tree or fail with an offset in the error.
 * Never include this from core/.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/buf.h"
#include "base/json.h"
#include "unit.h"

static struct json_parser P;
static char *doc_copy; /* the exact-size copy of the last document */

static void cleanup(void)
{
    json_parser_free(&P);
    free(doc_copy);
    doc_copy = NULL;
}

static const struct json *parse_n(const char *text, size_t len)
{
    static int registered;
    if (!registered) {
        atexit(cleanup); /* before valgrind's leak check */
        registered = 1;
    }
    free(doc_copy);
    doc_copy = malloc(len ? len : 1);
    memcpy(doc_copy, text, len);
    return json_parse(&P, doc_copy, len);
}

static const struct json *parse(const char *text)
{
    return parse_n(text, strlen(text));
}

/* Whether err says "offset <n>" for exactly n (n < 0: any offset). */
static int err_has_offset(const char *err, long n)
{
    const char *p = strstr(err, "offset ");
    if (!p)
        return 0;
    p += 7;
    if (*p < '0' || *p > '9')
        return 0;
    char *end;
    long got = strtol(p, &end, 10);
    return n < 0 || got == n;
}

#define ACCEPT(text)                                                                               \
    do {                                                                                           \
        const char *t_ = (text);                                                                   \
        if (!parse(t_))                                                                            \
            unit_fail(__FILE__, __LINE__, "rejected %s: %s", t_, P.err);                           \
    } while (0)

/* Rejects text[0..len); err must name an offset. */
static void reject_n(const char *file, int line, const char *text, size_t len)
{
    unit_g.checks++;
    const struct json *v = parse_n(text, len);
    if (v) {
        unit_fail(file, line, "accepted (type %d) a document that must be rejected:", v->type);
        unit_print_bytes(stderr, text, len);
        fprintf(stderr, "\n");
        return;
    }
    if (!err_has_offset(P.err, -1)) {
        unit_fail(file, line, "error without an offset: '%s' for", P.err);
        unit_print_bytes(stderr, text, len);
        fprintf(stderr, "\n");
    }
}
#define REJECT(text) reject_n(__FILE__, __LINE__, (text), strlen(text))
#define REJECT_N(text, len) reject_n(__FILE__, __LINE__, (text), (len))

/* ---------------------------------------------------------------- fixed cases */

static void test_types(void)
{
    const struct json *v;
    v = parse("null");
    REQUIRE(v);
    CHECK_EQ_I64(v->type, JSON_NULL);
    v = parse("true");
    REQUIRE(v);
    CHECK_EQ_I64(v->type, JSON_TRUE);
    v = parse("false");
    REQUIRE(v);
    CHECK_EQ_I64(v->type, JSON_FALSE);
    v = parse("0");
    REQUIRE(v);
    CHECK_EQ_I64(v->type, JSON_INT);
    CHECK_EQ_I64(v->u.i, 0);
    v = parse("-0");
    REQUIRE(v);
    CHECK_EQ_I64(v->type, JSON_INT);
    CHECK_EQ_I64(v->u.i, 0);
    v = parse("  -42\n");
    REQUIRE(v);
    CHECK_EQ_I64(v->type, JSON_INT);
    CHECK_EQ_I64(v->u.i, -42);
    CHECK_EQ_DBL(v->num, -42);
    CHECK_EQ_U64(v->flags, 0);
    v = parse("\"\"");
    REQUIRE(v);
    CHECK_EQ_I64(v->type, JSON_STR);
    CHECK_EQ_U64(v->len, 0);
    CHECK_STR_EQ(v->u.s, "");
    v = parse("[]");
    REQUIRE(v);
    CHECK_EQ_I64(v->type, JSON_ARR);
    CHECK_EQ_U64(v->len, 0);
    v = parse("{}");
    REQUIRE(v);
    CHECK_EQ_I64(v->type, JSON_OBJ);
    CHECK_EQ_U64(v->len, 0);
    CHECK(json_get(v, "a") == NULL);
    v = parse(" \t\r\n[ 1 ,\t\"two\" , [ ] , { } , null,true ,false ]\r\n ");
    REQUIRE(v);
    CHECK_EQ_I64(v->type, JSON_ARR);
    REQUIRE(v->len == 7);
    CHECK_EQ_I64(v->u.items[0].type, JSON_INT);
    CHECK_EQ_I64(v->u.items[0].u.i, 1);
    CHECK_EQ_I64(v->u.items[1].type, JSON_STR);
    CHECK_STR_EQ(v->u.items[1].u.s, "two");
    CHECK_EQ_U64(v->u.items[1].len, 3);
    CHECK_EQ_I64(v->u.items[2].type, JSON_ARR);
    CHECK_EQ_I64(v->u.items[3].type, JSON_OBJ);
    CHECK_EQ_I64(v->u.items[4].type, JSON_NULL);
    CHECK_EQ_I64(v->u.items[5].type, JSON_TRUE);
    CHECK_EQ_I64(v->u.items[6].type, JSON_FALSE);

    v = parse("{\"counter_name\":\"views\",\"amount\":3,\"tags\":[\"a\",{\"b\":null}],"
              "\"nested\":{\"x\":-1.5}}");
    REQUIRE(v);
    CHECK_EQ_I64(v->type, JSON_OBJ);
    REQUIRE(v->len == 4);
    CHECK_STR_EQ(v->u.members[0].key, "counter_name"); /* document order */
    CHECK_EQ_U64(v->u.members[0].key_len, 12);
    CHECK_STR_EQ(v->u.members[3].key, "nested");
    const struct json *x = json_get(v, "amount");
    REQUIRE(x);
    CHECK_EQ_I64(x->type, JSON_INT);
    CHECK_EQ_I64(x->u.i, 3);
    x = json_get(v, "counter_name");
    REQUIRE(x);
    CHECK_STR_EQ(x->u.s, "views");
    x = json_get(json_get(v, "nested"), "x");
    REQUIRE(x);
    CHECK_EQ_I64(x->type, JSON_NUM);
    CHECK_EQ_DBL(x->num, -1.5);
    x = json_get(v, "tags");
    REQUIRE(x && x->type == JSON_ARR && x->len == 2);
    CHECK_EQ_I64(x->u.items[1].type, JSON_OBJ);
    CHECK(json_get(&x->u.items[1], "b") != NULL);
    CHECK_EQ_I64(json_get(&x->u.items[1], "b")->type, JSON_NULL);

    CHECK_STR_EQ(json_type_name(JSON_INT), "integer");
    CHECK_STR_EQ(json_type_name(JSON_STR), "string");
    CHECK_STR_EQ(json_type_name(JSON_OBJ), "object");
    CHECK_STR_EQ(json_type_name(99), "unknown");
}

static void test_json_get(void)
{
    const struct json *v =
        parse("{\"a\":1,\"ab\":2,\"a\":3,\"\":4,\"a\\u0000b\":5,\"\\u0061c\":6}");
    REQUIRE(v);
    CHECK_EQ_U64(v->len, 6);
    const struct json *x = json_get(v, "a");
    REQUIRE(x);
    CHECK_EQ_I64(x->u.i, 1); /* the first of duplicate names */
    x = json_get(v, "ab");
    REQUIRE(x);
    CHECK_EQ_I64(x->u.i, 2);
    x = json_get(v, "");
    REQUIRE(x);
    CHECK_EQ_I64(x->u.i, 4);
    x = json_get(v, "ac"); /* keys are decoded */
    REQUIRE(x);
    CHECK_EQ_I64(x->u.i, 6);
    CHECK(json_get(v, "b") == NULL);
    CHECK(json_get(v, "A") == NULL);
    CHECK(json_get(v, "abc") == NULL);
    /* "a\u0000b" is a 3-byte key: it is not "a". */
    CHECK_EQ_U64(v->u.members[4].key_len, 3);
    CHECK(v->u.members[4].key_flags & JSON_F_HAS_NUL);
    CHECK_MEM_EQ(v->u.members[4].key, 4, "a\0b", 4);
    CHECK(json_get(NULL, "a") == NULL);
    v = parse("[1]");
    REQUIRE(v);
    CHECK(json_get(v, "a") == NULL);
    v = parse("\"a\"");
    REQUIRE(v);
    CHECK(json_get(v, "a") == NULL);
}

static void test_int_edges(void)
{
    const struct json *v = parse("9223372036854775807");
    REQUIRE(v);
    CHECK_EQ_I64(v->type, JSON_INT);
    CHECK_EQ_I64(v->u.i, INT64_MAX);
    CHECK_EQ_U64(v->flags, 0);
    v = parse("-9223372036854775808");
    REQUIRE(v);
    CHECK_EQ_I64(v->type, JSON_INT);
    CHECK_EQ_I64(v->u.i, INT64_MIN);
    CHECK_EQ_DBL(v->num, -9223372036854775808.0);
    v = parse("-9223372036854775807");
    REQUIRE(v);
    CHECK_EQ_I64(v->type, JSON_INT);
    CHECK_EQ_I64(v->u.i, INT64_MIN + 1);

    v = parse("9223372036854775808");
    REQUIRE(v);
    CHECK_EQ_I64(v->type, JSON_NUM);
    CHECK(v->flags & JSON_F_BIGINT);
    CHECK_EQ_DBL(v->num, 9223372036854775808.0);
    v = parse("-9223372036854775809");
    REQUIRE(v);
    CHECK_EQ_I64(v->type, JSON_NUM);
    CHECK(v->flags & JSON_F_BIGINT);
    CHECK_EQ_DBL(v->num, -9223372036854775809.0);
    v = parse("18446744073709551616");
    REQUIRE(v);
    CHECK_EQ_I64(v->type, JSON_NUM);
    CHECK(v->flags & JSON_F_BIGINT);
    v = parse("[10000000000000000000000000000000000000000000000000000000000000000000000001]");
    REQUIRE(v);
    CHECK_EQ_I64(v->u.items[0].type, JSON_NUM);
    CHECK(v->u.items[0].flags & JSON_F_BIGINT);
    CHECK_EQ_DBL(v->u.items[0].num, 1e73);

    /* Every int64 written in decimal comes back exact. */
    struct unit_rng rng;
    rng_init(&rng, "int_edges");
    char t[32];
    long bad = 0, n = unit_iters(20000);
    for (long i = 0; i < n; i++) {
        int64_t x = (int64_t)rng_u64(&rng);
        x >>= rng_below(&rng, 63); /* every magnitude */
        snprintf(t, sizeof t, "%" PRId64, x);
        v = parse(t);
        if (!v || v->type != JSON_INT || v->u.i != x || v->flags != 0 || v->num != (double)x) {
            if (bad++ < 5)
                unit_fail(__FILE__, __LINE__, "integer %s did not come back exact", t);
        }
    }
    CHECK_EQ_I64(bad, 0);
}

static void test_numbers(void)
{
    static const char *nums[] = {"1.0",
                                 "1e3",
                                 "-0.5",
                                 "1E+3",
                                 "1e-3",
                                 "0.0",
                                 "-0.0",
                                 "2.5e10",
                                 "123.456e-7",
                                 "0e0",
                                 "1E400",
                                 "-1e-400",
                                 "1.7976931348623157e308"};
    for (size_t i = 0; i < sizeof nums / sizeof *nums; i++) {
        const struct json *v = parse(nums[i]);
        unit_context("%s", nums[i]);
        REQUIRE(v);
        CHECK_EQ_I64(v->type, JSON_NUM);
        CHECK_EQ_U64(v->flags, 0); /* BIGINT is for integer literals only */
        double want = strtod(nums[i], NULL);
        CHECK(v->num == want || (isinf(want) && isinf(v->num)));
    }
    unit_context("%s", "");
    const struct json *v = parse("[1.5,-2,3e2]");
    REQUIRE(v);
    CHECK_EQ_I64(v->u.items[0].type, JSON_NUM);
    CHECK_EQ_I64(v->u.items[1].type, JSON_INT);
    CHECK_EQ_I64(v->u.items[2].type, JSON_NUM);
    CHECK_EQ_DBL(v->u.items[2].num, 300);
    /* A long fraction (longer than any small scratch buffer). */
    char big[400] = "0.";
    memset(big + 2, '0', 300);
    strcpy(big + 302, "125");
    v = parse(big);
    REQUIRE(v);
    CHECK_EQ_I64(v->type, JSON_NUM);
    CHECK_EQ_DBL(v->num, strtod(big, NULL));
}

static void test_strings(void)
{
    const struct json *v = parse("\"a\\\"b\\\\c\\/d\\be\\ff\\ng\\rh\\ti\"");
    REQUIRE(v);
    CHECK_MEM_EQ(v->u.s, v->len, "a\"b\\c/d\be\ff\ng\rh\ti", 17);
    CHECK_EQ_U64(v->flags, 0);

    v = parse("\"\\u00e9\\u00E9\\u20ac\\u0041\"");
    REQUIRE(v);
    CHECK_MEM_EQ(v->u.s, v->len,
                 "\xc3\xa9\xc3\xa9\xe2\x82\xac"
                 "A",
                 8);
    v = parse("\"\\ud83d\\ude00\""); /* U+1F600 */
    REQUIRE(v);
    CHECK_MEM_EQ(v->u.s, v->len, "\xf0\x9f\x98\x80", 4);
    v = parse("\"\\uDBFF\\uDFFF\""); /* U+10FFFF */
    REQUIRE(v);
    CHECK_MEM_EQ(v->u.s, v->len, "\xf4\x8f\xbf\xbf", 4);
    v = parse("\"\\uD800\\uDC00\""); /* U+10000 */
    REQUIRE(v);
    CHECK_MEM_EQ(v->u.s, v->len, "\xf0\x90\x80\x80", 4);
    v = parse("\"\\u07ff\\u0800\\uffff\"");
    REQUIRE(v);
    CHECK_MEM_EQ(v->u.s, v->len, "\xdf\xbf\xe0\xa0\x80\xef\xbf\xbf", 8);

    v = parse("\"a\\u0000b\"");
    REQUIRE(v);
    CHECK_EQ_U64(v->len, 3);
    CHECK_MEM_EQ(v->u.s, 4, "a\0b", 4); /* and NUL-terminated */
    CHECK(v->flags & JSON_F_HAS_NUL);
    v = parse("\"ab\"");
    REQUIRE(v);
    CHECK(!(v->flags & JSON_F_HAS_NUL));

    /* Raw UTF-8 of every length, and DEL, are taken as they are. */
    const char raw[] =
        "\"\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80 \x7f \xef\xbf\xbf \xf4\x8f\xbf\xbf\"";
    v = parse(raw);
    REQUIRE(v);
    CHECK_MEM_EQ(v->u.s, v->len, raw + 1, sizeof raw - 3);
    /* Mixed with escapes (the slow path). */
    v = parse("\"\xc3\xa9\\n\xe2\x82\xac\"");
    REQUIRE(v);
    CHECK_MEM_EQ(v->u.s, v->len, "\xc3\xa9\n\xe2\x82\xac", 6);

    /* A string longer than an arena chunk, alone and between small values. */
    size_t n = 200000;
    char *big = malloc(n + 16);
    big[0] = '"';
    for (size_t i = 0; i < n; i++)
        big[1 + i] = (char)('a' + i % 26);
    big[n + 1] = '"';
    v = parse_n(big, n + 2);
    REQUIRE(v);
    CHECK_EQ_U64(v->len, n);
    CHECK_MEM_EQ(v->u.s, n, big + 1, n);
    CHECK_EQ_I64(v->u.s[n], 0);
    big[n / 2] = '\\'; /* the slow path for a big string */
    big[n / 2 + 1] = 't';
    v = parse_n(big, n + 2);
    REQUIRE(v);
    CHECK_EQ_U64(v->len, n - 1);
    CHECK_EQ_I64(v->u.s[n / 2 - 1], '\t');
    free(big);
}

static void test_rejects(void)
{
    static const char *bad[] = {
        /* structure */
        "",
        " ",
        "[",
        "]",
        "{",
        "}",
        "[1",
        "[1,",
        "[1,]",
        "[,1]",
        "[1,,2]",
        "[1 2]",
        "{\"a\"}",
        "{\"a\":}",
        "{\"a\" 1}",
        "{\"a\":1,}",
        "{,}",
        "{\"a\":1 \"b\":2}",
        "{a:1}",
        "{1:1}",
        "{'a':1}",
        "['a']",
        "[1]]",
        "{}}",
        "[]x",
        "1 2",
        "nul",
        "tru",
        "fals",
        "True",
        "NULL",
        "nulls",
        "[true false]",
        "{\"a\":1}{",
        /* numbers */
        "01",
        "-01",
        "00",
        "+1",
        ".5",
        "1.",
        "1.e3",
        "-",
        "-.5",
        "1e",
        "1e+",
        "1E-",
        "0x10",
        "1_000",
        "NaN",
        "-NaN",
        "Infinity",
        "-Infinity",
        "inf",
        "[01]",
        "[1.]",
        "- 1",
        "1e5.5",
        "\f1",
        "\v1",
        /* strings */
        "\"abc",
        "\"",
        "\"\\",
        "\"\\\"",
        "\"a\\x\"",
        "\"\\a\"",
        "\"\\u12\"",
        "\"\\u12G4\"",
        "\"\\U0041\"",
        "\"\\u\"",
        "'a'",
        "\"a\nb\"",
        "\"a\tb\"",
        "\"\x01\"",
        "\"\x1f\"",
        /* lone and broken surrogates */
        "\"\\ud83d\"",
        "\"\\ude00\"",
        "\"\\ud83d\\u0041\"",
        "\"\\ud83dx\"",
        "\"\\ud83d\\ud83d\"",
        "\"\\udc00\\ud800\"",
        "\"\\ud83d\\n\"",
        "\"\\ud83d\\ude0\"",
        /* invalid UTF-8 */
        "\"\xc0\x80\"",                 /* overlong NUL */
        "\"\xc1\xbf\"",                 /* overlong */
        "\"\xe0\x80\x80\"",             /* overlong 3 bytes */
        "\"\xe0\x9f\xbf\"",             /* overlong 3 bytes, top */
        "\"\xf0\x80\x80\x80\"",         /* overlong 4 bytes */
        "\"\xf0\x8f\xbf\xbf\"",         /* overlong 4 bytes, top */
        "\"\xed\xa0\x80\"",             /* U+D800 encoded */
        "\"\xed\xbf\xbf\"",             /* U+DFFF encoded */
        "\"\xed\xa0\xbd\xed\xb8\x80\"", /* CESU-8 pair */
        "\"\xf4\x90\x80\x80\"",         /* above U+10FFFF */
        "\"\xf5\x80\x80\x80\"",
        "\"\xf8\x88\x80\x80\x80\"",
        "\"\xfe\"",
        "\"\xff\"",
        "\"\x80\"", /* lone continuation */
        "\"\xbf\"",
        "\"\xc3\"", /* truncated before the quote */
        "\"\xe2\x82\"",
        "\"\xf0\x9f\x98\"",
        "\"\xc3\x28\"",
        "\"\xe2\x28\xa1\"",
        "\"\xf0\x28\x8c\x28\"",
        "\"a\xc3",
        "\"\xe2\x82",
        "\xc3\xa9",
        "[\"\xc3\xa9\",\xc3]",
        /* UTF-8 in keys too */
        "{\"\xc0\x80\":1}",
        "{\"\\ud800\":1}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        unit_context("case %zu", i);
        REJECT(bad[i]);
    }
    unit_context("%s", "");
    /* NUL bytes in the text. */
    REJECT_N("\"a\0b\"", 5);
    REJECT_N("1\0", 2);
    REJECT_N("\0", 1);
    REJECT_N("[1,\0 2]", 7);
    REJECT_N("{\"a\0\":1}", 8);
}

static void test_error_offsets(void)
{
    static const struct {
        const char *text;
        long offset;
    } cases[] = {
        {"[1,2,x]", 5}, {"1 x", 2},        {"\"abc", 4}, {"{\"a\" 1}", 5},
        {"", 0},        {"[1,]", 3},       {"01", 1},    {"[true,", 6},
        {"  +1", 2},    {"{\"a\":1,}", 7}, {"[1.]", 3},  {"\"\x01\"", 1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        const struct json *v = parse(cases[i].text);
        CHECK(v == NULL);
        if (!err_has_offset(P.err, cases[i].offset))
            unit_fail(__FILE__, __LINE__, "error for '%s' is '%s', expected offset %ld",
                      cases[i].text, P.err, cases[i].offset);
    }
    /* A successful parse clears the message. */
    CHECK(parse("1") != NULL);
    CHECK_STR_EQ(P.err, "");
}

static char *nest(int depth, const char *open, const char *inner, const char *close)
{
    size_t ol = strlen(open), il = strlen(inner), cl = strlen(close);
    char *s = malloc((size_t)depth * (ol + cl) + il + 1), *p = s;
    for (int i = 0; i < depth; i++, p += ol)
        memcpy(p, open, ol);
    memcpy(p, inner, il);
    p += il;
    for (int i = 0; i < depth; i++, p += cl)
        memcpy(p, close, cl);
    *p = '\0';
    return s;
}

static void test_depth(void)
{
    char *s = nest(JSON_MAX_DEPTH, "[", "1", "]");
    const struct json *v = parse(s);
    REQUIRE(v);
    for (int i = 1; i < JSON_MAX_DEPTH; i++) {
        CHECK_EQ_I64(v->type, JSON_ARR);
        CHECK_EQ_U64(v->len, 1);
        v = &v->u.items[0];
    }
    CHECK_EQ_I64(v->type, JSON_ARR);
    CHECK_EQ_I64(v->u.items[0].u.i, 1);
    free(s);

    s = nest(JSON_MAX_DEPTH + 1, "[", "", "]");
    CHECK(parse(s) == NULL);
    CHECK(err_has_offset(P.err, JSON_MAX_DEPTH)); /* at the bracket one too deep */
    free(s);

    s = nest(JSON_MAX_DEPTH, "{\"k\":", "{}", "}");
    CHECK(parse(s) == NULL); /* 64 + the innermost {} */
    free(s);
    s = nest(JSON_MAX_DEPTH - 1, "{\"k\":", "{}", "}");
    CHECK(parse(s) != NULL);
    free(s);
    s = nest(JSON_MAX_DEPTH / 2, "[{\"k\":", "0", "}]");
    CHECK(parse(s) != NULL);
    free(s);
    s = nest(JSON_MAX_DEPTH / 2 + 1, "[{\"k\":", "0", "}]");
    CHECK(parse(s) == NULL);
    free(s);
    /* Depth is nesting, not the number of containers seen. */
    s = malloc(64 * 1000 + 16);
    char *p = s;
    *p++ = '[';
    for (int i = 0; i < 1000; i++) {
        memcpy(p, "[[[]]],", 7);
        p += 7;
    }
    strcpy(p, "1]");
    CHECK(parse(s) != NULL);
    free(s);
    /* Very deep input fails fast, without exhausting the stack. */
    s = nest(1000000, "[", "", "]");
    CHECK(parse(s) == NULL);
    free(s);
}

/* ---------------------------------------------------------------- reuse */

static void make_big(struct buf *b, int n)
{
    buf_reset(b);
    buf_puts(b, "{\"items\":[");
    for (int i = 0; i < n; i++) {
        if (i)
            buf_putc(b, ',');
        buf_printf(b, "{\"id\":%d,\"name\":\"item-%d\",\"v\":[%d.5,true]}", i, i, i);
    }
    buf_puts(b, "],\"tail\":\"");
    for (int i = 0; i < 100000; i++)
        buf_putc(b, (char)('A' + i % 26));
    buf_puts(b, "\"}");
}

static void check_big(const struct json *v, int n)
{
    REQUIRE(v);
    const struct json *items = json_get(v, "items");
    REQUIRE(items && items->type == JSON_ARR);
    CHECK_EQ_U64(items->len, n);
    long bad = 0;
    char name[32];
    for (int i = 0; i < n && (uint32_t)i < items->len; i++) {
        const struct json *it = &items->u.items[i];
        const struct json *id = json_get(it, "id"), *nm = json_get(it, "name"),
                          *vv = json_get(it, "v");
        snprintf(name, sizeof name, "item-%d", i);
        if (!id || id->u.i != i || !nm || strcmp(nm->u.s, name) != 0 || !vv || vv->len != 2 ||
            vv->u.items[0].num != i + 0.5 || vv->u.items[1].type != JSON_TRUE)
            bad++;
    }
    CHECK_EQ_I64(bad, 0);
    const struct json *tail = json_get(v, "tail");
    REQUIRE(tail);
    CHECK_EQ_U64(tail->len, 100000);
    CHECK_EQ_I64(tail->u.s[99999], 'A' + 99999 % 26);
}

static void test_reuse(void)
{
    struct json_parser p;
    json_parser_init(&p);
    struct buf b = BUF_INIT;
    int n = (int)unit_iters(20000);
    make_big(&b, n);
    for (int round = 0; round < 3; round++) {
        unit_context("round %d", round);
        check_big(json_parse(&p, b.data, b.len), n);
        const struct json *s = json_parse(&p, "{\"a\":[1,2]}", 11);
        REQUIRE(s);
        CHECK_EQ_I64(json_get(s, "a")->u.items[1].u.i, 2);
        CHECK(json_parse(&p, "[1,2", 4) == NULL); /* a failure in between */
        CHECK(p.err[0] != '\0');
        s = json_parse(&p, "\"x\"", 3);
        REQUIRE(s);
        CHECK_STR_EQ(s->u.s, "x");
    }
    unit_context("%s", "");
    /* Many small documents in a row. */
    long bad = 0;
    char t[64];
    for (int i = 0; i < unit_iters(50000); i++) {
        int len = snprintf(t, sizeof t, "{\"counter_name\":\"c%d\",\"amount\":%d}", i, i);
        const struct json *s = json_parse(&p, t, (size_t)len);
        if (!s || json_get(s, "amount")->u.i != i)
            bad++;
    }
    CHECK_EQ_I64(bad, 0);
    json_parser_free(&p);
    /* Freed twice, and a fresh parser freed without use, are fine. */
    json_parser_free(&p);
    json_parser_init(&p);
    json_parser_free(&p);
    buf_free(&b);
}

/* ---------------------------------------------------------------- randomized */

/* A tree the test builds, then writes as JSON. */
struct tv {
    int type;
    int64_t i;
    double num;
    int bigint;
    char *s; /* STR: expected decoded bytes */
    size_t slen;
    int has_nul;
    struct tv *kids;
    char **keys;
    size_t *klens;
    int *knul;
    size_t n;
};

static void tv_free(struct tv *t)
{
    free(t->s);
    for (size_t k = 0; k < t->n; k++) {
        tv_free(&t->kids[k]);
        if (t->keys)
            free(t->keys[k]);
    }
    free(t->kids);
    free(t->keys);
    free(t->klens);
    free(t->knul);
}

static size_t put_utf8(char *o, uint32_t cp)
{
    if (cp < 0x80) {
        o[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (char)(0xC0 | cp >> 6);
        o[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (char)(0xE0 | cp >> 12);
        o[1] = (char)(0x80 | (cp >> 6 & 0x3F));
        o[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (char)(0xF0 | cp >> 18);
    o[1] = (char)(0x80 | (cp >> 12 & 0x3F));
    o[2] = (char)(0x80 | (cp >> 6 & 0x3F));
    o[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

static uint32_t random_cp(struct unit_rng *r)
{
    switch (rng_below(r, 8)) {
    case 0: return (uint32_t)rng_below(r, 0x20); /* controls, NUL */
    case 1: return "\"\\/"[rng_below(r, 3)];
    case 2: return 0x80 + (uint32_t)rng_below(r, 0x800 - 0x80);
    case 3: {
        uint32_t c = 0x800 + (uint32_t)rng_below(r, 0x10000 - 0x800);
        return c >= 0xD800 && c <= 0xDFFF ? 0xFFFD : c;
    }
    case 4: return 0x10000 + (uint32_t)rng_below(r, 0x110000 - 0x10000);
    default: return 0x20 + (uint32_t)rng_below(r, 0x5f); /* printable ASCII */
    }
}

/* Writes a random string as JSON (random escape choices) and its expected decoding. */
static void gen_string(struct unit_rng *r, struct buf *out, char **dec, size_t *dlen, int *nul)
{
    size_t n = rng_below(r, 4) ? rng_below(r, 12) : rng_below(r, 300);
    char *d = malloc(n * 4 + 1);
    size_t dl = 0;
    *nul = 0;
    buf_putc(out, '"');
    for (size_t k = 0; k < n; k++) {
        uint32_t cp = random_cp(r);
        dl += put_utf8(d + dl, cp);
        if (cp == 0)
            *nul = 1;
        int must_escape = cp < 0x20 || cp == '"' || cp == '\\';
        if (!must_escape && rng_below(r, 4)) {
            char tmp[4];
            buf_append(out, tmp, put_utf8(tmp, cp));
            continue;
        }
        const char *shortform = cp == '"'    ? "\\\""
                                : cp == '\\' ? "\\\\"
                                : cp == '/'  ? "\\/"
                                : cp == '\b' ? "\\b"
                                : cp == '\f' ? "\\f"
                                : cp == '\n' ? "\\n"
                                : cp == '\r' ? "\\r"
                                : cp == '\t' ? "\\t"
                                             : NULL;
        if (shortform && rng_below(r, 2)) {
            buf_puts(out, shortform);
        } else if (cp >= 0x10000) {
            uint32_t v = cp - 0x10000;
            buf_printf(out, rng_below(r, 2) ? "\\u%04x\\u%04x" : "\\u%04X\\u%04X",
                       0xD800 + (v >> 10), 0xDC00 + (v & 0x3FF));
        } else {
            buf_printf(out, rng_below(r, 2) ? "\\u%04x" : "\\u%04X", cp);
        }
    }
    buf_putc(out, '"');
    d[dl] = '\0';
    *dec = d;
    *dlen = dl;
}

static void gen_ws(struct unit_rng *r, struct buf *out)
{
    if (rng_below(r, 3) == 0) {
        int n = (int)rng_below(r, 3) + 1;
        for (int k = 0; k < n; k++)
            buf_putc(out, " \t\n\r"[rng_below(r, 4)]);
    }
}

static void gen_value(struct unit_rng *r, struct buf *out, struct tv *t, int depth)
{
    memset(t, 0, sizeof *t);
    uint64_t kind = rng_below(r, depth >= 6 ? 7 : 10);
    switch (kind) {
    case 0:
        t->type = JSON_NULL;
        buf_puts(out, "null");
        break;
    case 1:
        t->type = JSON_TRUE;
        buf_puts(out, "true");
        break;
    case 2:
        t->type = JSON_FALSE;
        buf_puts(out, "false");
        break;
    case 3: {
        t->type = JSON_INT;
        t->i = (int64_t)rng_u64(r) >> rng_below(r, 64);
        buf_i64(out, t->i);
        break;
    }
    case 4: {
        /* A finite double written to round-trip, always with a fraction or exponent. */
        double x;
        do {
            uint64_t bits = rng_u64(r);
            memcpy(&x, &bits, sizeof x);
        } while (!isfinite(x));
        if (rng_below(r, 2))
            x = (double)rng_range(r, -100000, 100000) / 64.0;
        char tmp[40];
        snprintf(tmp, sizeof tmp, "%.17g", x);
        if (!strpbrk(tmp, ".eE"))
            strcat(tmp, ".0");
        buf_puts(out, tmp);
        t->type = JSON_NUM;
        t->num = x;
        break;
    }
    case 5: {
        /* An integer beyond int64. */
        char tmp[48];
        int neg = (int)rng_below(r, 2);
        snprintf(tmp, sizeof tmp, "%s%" PRIu64 "%03d", neg ? "-" : "",
                 (uint64_t)9223372036854775ULL + (uint64_t)rng_range(r, 1000000, 1000000000),
                 (int)rng_below(r, 1000));
        buf_puts(out, tmp);
        t->type = JSON_NUM;
        t->bigint = 1;
        t->num = strtod(tmp, NULL);
        break;
    }
    case 6: {
        t->type = JSON_STR;
        gen_string(r, out, &t->s, &t->slen, &t->has_nul);
        break;
    }
    case 7:
    case 8: {
        t->type = JSON_ARR;
        t->n = rng_below(r, 6);
        t->kids = calloc(t->n ? t->n : 1, sizeof *t->kids);
        buf_putc(out, '[');
        gen_ws(r, out);
        for (size_t k = 0; k < t->n; k++) {
            if (k) {
                buf_putc(out, ',');
                gen_ws(r, out);
            }
            gen_value(r, out, &t->kids[k], depth + 1);
            gen_ws(r, out);
        }
        buf_putc(out, ']');
        break;
    }
    default: {
        t->type = JSON_OBJ;
        t->n = rng_below(r, 6);
        t->kids = calloc(t->n ? t->n : 1, sizeof *t->kids);
        t->keys = calloc(t->n ? t->n : 1, sizeof *t->keys);
        t->klens = calloc(t->n ? t->n : 1, sizeof *t->klens);
        t->knul = calloc(t->n ? t->n : 1, sizeof *t->knul);
        buf_putc(out, '{');
        gen_ws(r, out);
        for (size_t k = 0; k < t->n; k++) {
            if (k) {
                buf_putc(out, ',');
                gen_ws(r, out);
            }
            gen_string(r, out, &t->keys[k], &t->klens[k], &t->knul[k]);
            gen_ws(r, out);
            buf_putc(out, ':');
            gen_ws(r, out);
            gen_value(r, out, &t->kids[k], depth + 1);
            gen_ws(r, out);
        }
        buf_putc(out, '}');
        break;
    }
    }
}

/* Compares a parsed tree with the generated one; returns the number of differences. */
static int tv_compare(const struct json *v, const struct tv *t, const char *path)
{
    if (v->type != t->type) {
        unit_fail(__FILE__, __LINE__, "%s: type %d, expected %d", path, v->type, t->type);
        return 1;
    }
    switch (t->type) {
    case JSON_INT:
        if (v->u.i != t->i || v->flags != 0) {
            unit_fail(__FILE__, __LINE__, "%s: %" PRId64 ", expected %" PRId64, path, v->u.i, t->i);
            return 1;
        }
        return 0;
    case JSON_NUM:
        if (v->num != t->num || !!(v->flags & JSON_F_BIGINT) != t->bigint) {
            unit_fail(__FILE__, __LINE__, "%s: %.17g (flags %u), expected %.17g (bigint %d)", path,
                      v->num, v->flags, t->num, t->bigint);
            return 1;
        }
        return 0;
    case JSON_STR:
        if (v->len != t->slen || memcmp(v->u.s, t->s, t->slen + 1) != 0 ||
            !!(v->flags & JSON_F_HAS_NUL) != t->has_nul) {
            unit_fail(__FILE__, __LINE__, "%s: string differs (len %u, expected %zu)", path, v->len,
                      t->slen);
            return 1;
        }
        return 0;
    case JSON_ARR:
    case JSON_OBJ: {
        if (v->len != t->n) {
            unit_fail(__FILE__, __LINE__, "%s: %u children, expected %zu", path, v->len, t->n);
            return 1;
        }
        int bad = 0;
        char sub[256];
        for (size_t k = 0; k < t->n && !bad; k++) {
            snprintf(sub, sizeof sub, "%.200s/%zu", path, k);
            if (t->type == JSON_ARR) {
                bad += tv_compare(&v->u.items[k], &t->kids[k], sub);
                continue;
            }
            const struct json_member *m = &v->u.members[k];
            if (m->key_len != t->klens[k] || memcmp(m->key, t->keys[k], t->klens[k] + 1) != 0 ||
                !!(m->key_flags & JSON_F_HAS_NUL) != t->knul[k]) {
                unit_fail(__FILE__, __LINE__, "%s: key differs", sub);
                return 1;
            }
            bad += tv_compare(&m->val, &t->kids[k], sub);
        }
        return bad;
    }
    default: return 0;
    }
}

/* Random trees written in random styles parse back to the same tree. */
static void test_roundtrip_random(void)
{
    struct unit_rng rng;
    rng_init(&rng, "roundtrip_random");
    struct buf b = BUF_INIT;
    long n = unit_iters(5000), bad = 0;
    for (long it = 0; it < n && bad < 10; it++) {
        unit_context("iteration %ld", it);
        struct tv t;
        buf_reset(&b);
        gen_ws(&rng, &b);
        gen_value(&rng, &b, &t, 0);
        gen_ws(&rng, &b);
        const struct json *v = parse_n(b.data, b.len);
        if (!v) {
            unit_fail(__FILE__, __LINE__, "rejected a generated document: %s", P.err);
            unit_print_bytes(stderr, b.data, b.len);
            fprintf(stderr, "\n");
            bad++;
        } else {
            bad += tv_compare(v, &t, "$") != 0;
        }
        tv_free(&t);
    }
    unit_context("%s", "");
    CHECK_EQ_I64(bad, 0);
    buf_free(&b);
}

/* Strict UTF-8 validation, written independently of the parser's. */
static int valid_utf8(const unsigned char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        unsigned c = s[i];
        size_t k;
        uint32_t cp, min;
        if (c < 0x80) {
            i++;
            continue;
        } else if ((c & 0xE0) == 0xC0) {
            k = 2, cp = c & 0x1F, min = 0x80;
        } else if ((c & 0xF0) == 0xE0) {
            k = 3, cp = c & 0x0F, min = 0x800;
        } else if ((c & 0xF8) == 0xF0) {
            k = 4, cp = c & 0x07, min = 0x10000;
        } else {
            return 0;
        }
        if (i + k > n)
            return 0;
        for (size_t j = 1; j < k; j++) {
            if ((s[i + j] & 0xC0) != 0x80)
                return 0;
            cp = cp << 6 | (s[i + j] & 0x3F);
        }
        if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
            return 0;
        i += k;
    }
    return 1;
}

/* Checks a tree the parser returned is well formed; returns the number of problems. */
static int check_tree(const struct json *v, int depth)
{
    if (depth > JSON_MAX_DEPTH + 1)
        return 1;
    switch (v->type) {
    case JSON_NULL:
    case JSON_TRUE:
    case JSON_FALSE: return 0;
    case JSON_INT: return v->num != (double)v->u.i || (v->flags & JSON_F_BIGINT);
    case JSON_NUM: return 0;
    case JSON_STR:
        return v->u.s[v->len] != '\0' || !valid_utf8((const unsigned char *)v->u.s, v->len) ||
               !!(v->flags & JSON_F_HAS_NUL) != (memchr(v->u.s, 0, v->len) != NULL);
    case JSON_ARR: {
        int bad = 0;
        for (uint32_t k = 0; k < v->len; k++)
            bad += check_tree(&v->u.items[k], depth + 1);
        return bad;
    }
    case JSON_OBJ: {
        int bad = 0;
        for (uint32_t k = 0; k < v->len; k++) {
            const struct json_member *m = &v->u.members[k];
            bad += m->key[m->key_len] != '\0' ||
                   !valid_utf8((const unsigned char *)m->key, m->key_len) ||
                   !!(m->key_flags & JSON_F_HAS_NUL) != (memchr(m->key, 0, m->key_len) != NULL);
            bad += check_tree(&m->val, depth + 1);
        }
        return bad;
    }
    default: return 1;
    }
}

/*
 * Mutated documents (bytes flipped, inserted, deleted, duplicated, truncated): the parser
 * never crashes nor reads past len, and either fails with an offset in the error or
 * returns a well-formed tree.
 */
static void test_mutations(void)
{
    struct unit_rng rng;
    rng_init(&rng, "mutations");
    static const char *seeds[] = {
        "{\"counter_name\":\"views\",\"amount\":1,\"idempotency_token\":\"t-1\"}",
        "{\"counts\":{\"c1\":{\"us-east-1\":15,\"eu-west-1\":3}},\"decrements\":null}",
        "[1,-2,3.5e-7,true,false,null,\"\\ud83d\\ude00\",\"\xc3\xa9\",{\"a\":[[]]}]",
        "\"esc \\\" \\\\ \\/ \\b \\f \\n \\r \\t \\u0000 \\u00e9\"",
        "[9223372036854775807,-9223372036854775808,9223372036854775808]",
        "{\"\":{\"\":{\"\":[{},[],\"\"]}}}",
    };
    static const char interesting[] =
        "{}[]\",:\\u0123456789-+.eEtrufalsn \t\r\n\x00\x1f\x7f\x80\xbf"
        "\xc0\xc3\xe0\xed\xef\xf0\xf4\xf5\xff";
    size_t ni = sizeof interesting - 1;
    struct buf b = BUF_INIT, g = BUF_INIT;
    long n = unit_iters(200000), accepted = 0, rejected = 0;
    for (long it = 0; it < n; it++) {
        buf_reset(&b);
        if (rng_below(&rng, 3) == 0) {
            struct tv t;
            buf_reset(&g);
            gen_value(&rng, &g, &t, 3);
            tv_free(&t);
            buf_append(&b, g.data, g.len);
        } else {
            buf_puts(&b, seeds[rng_below(&rng, sizeof seeds / sizeof *seeds)]);
        }
        int muts = 1 + (int)rng_below(&rng, 4);
        for (int m = 0; m < muts && b.len > 0; m++) {
            size_t at = (size_t)rng_below(&rng, b.len);
            char c =
                rng_below(&rng, 2) ? interesting[rng_below(&rng, ni)] : (char)rng_below(&rng, 256);
            switch (rng_below(&rng, 5)) {
            case 0: b.data[at] = c; break;
            case 1: /* insert */
                buf_reserve(&b, 1);
                memmove(b.data + at + 1, b.data + at, b.len - at);
                b.data[at] = c;
                b.len++;
                break;
            case 2: /* delete */
                memmove(b.data + at, b.data + at + 1, b.len - at - 1);
                b.len--;
                break;
            case 3: { /* duplicate a slice */
                size_t l = (size_t)rng_below(&rng, b.len - at) + 1;
                if (l > 64)
                    l = 64;
                char tmp[64];
                memcpy(tmp, b.data + at, l);
                buf_reserve(&b, l);
                memmove(b.data + at + l, b.data + at, b.len - at);
                memcpy(b.data + at, tmp, l);
                b.len += l;
                break;
            }
            default: b.len = at; break; /* truncate */
            }
        }
        const struct json *v = parse_n(b.data, b.len);
        if (v) {
            accepted++;
            if (check_tree(v, 1)) {
                unit_fail(__FILE__, __LINE__, "malformed tree for an accepted document:");
                unit_print_bytes(stderr, b.data, b.len);
                fprintf(stderr, "\n");
            }
        } else {
            rejected++;
            if (!P.err[0] || !err_has_offset(P.err, -1)) {
                unit_fail(__FILE__, __LINE__, "rejected with error '%s':", P.err);
                unit_print_bytes(stderr, b.data, b.len);
                fprintf(stderr, "\n");
            }
        }
    }
    /* Both outcomes must be common, or the mutations test nothing. */
    CHECK(accepted > n / 50);
    CHECK(rejected > n / 4);
    buf_free(&b);
    buf_free(&g);
}

/* Strings of 0-40 bytes with one byte of interest at each position: the reader passes
 * over plain bytes a word at a time, so every stop byte, at every offset in a word, must
 * stop it exactly (decoded as before, or rejected). */
static void test_string_words(void)
{
    static const struct {
        const char *in, *out; /* out NULL: rejected */
    } cases[] = {
        {" ", " "},
        {"!", "!"},
        {"#", "#"},
        {"[", "["},
        {"]", "]"},
        {"\x7f", "\x7f"},
        {"\\n", "\n"},
        {"\\\"", "\""},
        {"\\u00e9", "\xc3\xa9"},
        {"\xc3\xa9", "\xc3\xa9"},
        {"\x1f", NULL},
        {"\x01", NULL},
        {"\x80", NULL},
        {"\xc0\x80", NULL},
        {"\xff", NULL},
        {"\\q", NULL},
    };
    char doc[64], want[64];
    for (size_t ci = 0; ci < sizeof cases / sizeof *cases; ci++) {
        size_t il = strlen(cases[ci].in), ol = cases[ci].out ? strlen(cases[ci].out) : 0;
        for (size_t len = 0; len <= 40; len++) {
            for (size_t k = 0; k <= len; k++) {
                unit_context("case %zu, %zu plain bytes, the byte at %zu", ci, len, k);
                size_t n = 0, w = 0;
                doc[n++] = '"';
                for (size_t i = 0; i <= len; i++) {
                    if (i == k) {
                        memcpy(doc + n, cases[ci].in, il);
                        memcpy(want + w, cases[ci].out ? cases[ci].out : "", ol);
                        n += il;
                        w += ol;
                    }
                    if (i < len)
                        doc[n++] = want[w++] = (char)('a' + i % 26);
                }
                doc[n++] = '"';
                if (!cases[ci].out) {
                    REJECT_N(doc, n);
                    continue;
                }
                const struct json *v = parse_n(doc, n);
                CHECK(v && v->type == JSON_STR);
                if (v && v->type == JSON_STR) {
                    CHECK_EQ_U64(v->len, w);
                    CHECK(memcmp(v->u.s, want, w) == 0 && v->u.s[w] == '\0');
                }
                REJECT_N(doc, n - 1); /* unterminated: read within bounds */
            }
        }
    }
    unit_context("%s", "");
}

/* Every proper prefix of a container document is rejected (and read within bounds). */
static void test_prefixes(void)
{
    static const char *docs[] = {
        "{\"counter_name\":\"views\",\"amount\":-12,\"x\":[1.5e3,true,null,\"\\ud83d\\ude00\"]}",
        "[\"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\",{\"a\":{\"b\":[false]}},-0.25E-2]",
        "\"\\u0041\\n\\u00e9\"",
    };
    for (size_t d = 0; d < sizeof docs / sizeof *docs; d++) {
        size_t len = strlen(docs[d]);
        CHECK(parse_n(docs[d], len) != NULL);
        for (size_t k = 0; k < len; k++) {
            unit_context("doc %zu, prefix %zu", d, k);
            REJECT_N(docs[d], k);
        }
    }
    unit_context("%s", "");
}

UNIT_MAIN("test_json", UNIT_CASE(test_types), UNIT_CASE(test_json_get), UNIT_CASE(test_int_edges),
          UNIT_CASE(test_numbers), UNIT_CASE(test_strings), UNIT_CASE(test_rejects),
          UNIT_CASE(test_error_offsets), UNIT_CASE(test_depth), UNIT_CASE(test_reuse),
          UNIT_CASE(test_roundtrip_random), UNIT_CASE(test_mutations), UNIT_CASE(test_prefixes),
          UNIT_CASE(test_string_words))
