/*
 * test_url.c - unit tests of percent-decoding and query parameters (core/net/url.c).
 *
 * Output buffers are checked for writes past cap with a guard byte. Never include this
 * from core/.
 */
#include <stdio.h>
#include <string.h>

#include "net/url.h"
#include "unit.h"

#define GUARD ((char)0x5a)

/* Decodes with an out buffer of exactly cap bytes followed by a guard byte. */
static long decode(const char *src, size_t cap, char *out)
{
    char space[300];
    memset(space, GUARD, sizeof space);
    long n = url_decode(src, strlen(src), space, cap);
    if (space[cap] != GUARD)
        unit_fail(__FILE__, __LINE__, "url_decode(\"%s\", cap %zu) wrote past cap", src, cap);
    if (n >= 0) {
        if ((size_t)n >= cap || space[n] != '\0')
            unit_fail(__FILE__, __LINE__, "url_decode(\"%s\") = %ld: not NUL-terminated in cap",
                      src, n);
        memcpy(out, space, (size_t)n + 1);
    }
    return n;
}

static void test_decode(void)
{
    char out[300];
    CHECK_EQ_I64(decode("abc", 16, out), 3);
    CHECK_STR_EQ(out, "abc");
    CHECK_EQ_I64(decode("a%2Fb", 16, out), 3);
    CHECK_STR_EQ(out, "a/b");
    CHECK_EQ_I64(decode("a%2fb", 16, out), 3);
    CHECK_STR_EQ(out, "a/b");
    CHECK_EQ_I64(decode("%41%42%43", 16, out), 3);
    CHECK_STR_EQ(out, "ABC");
    CHECK_EQ_I64(decode("%E2%82%AC", 16, out), 3);
    CHECK_STR_EQ(out, "\xe2\x82\xac");
    CHECK_EQ_I64(decode("%ff%FF", 16, out), 2);
    CHECK_STR_EQ(out, "\xff\xff");
    CHECK_EQ_I64(decode("a+b", 16, out), 3); /* '+' stays */
    CHECK_STR_EQ(out, "a+b");
    CHECK_EQ_I64(decode("%2B", 16, out), 1);
    CHECK_STR_EQ(out, "+");
    CHECK_EQ_I64(decode("%25", 16, out), 1); /* decoded once only */
    CHECK_STR_EQ(out, "%");
    CHECK_EQ_I64(decode("%2541", 16, out), 3);
    CHECK_STR_EQ(out, "%41");
    CHECK_EQ_I64(decode("", 16, out), 0);
    CHECK_STR_EQ(out, "");
    char nul[4];
    memset(nul, GUARD, sizeof nul);
    CHECK_EQ_I64(url_decode("a%00b", 5, nul, sizeof nul), 3);
    CHECK_MEM_EQ(nul, 4, "a\0b", 4);
    /* Only len bytes are read. */
    CHECK_EQ_I64(url_decode("abcdef", 3, out, sizeof out), 3);
    CHECK_STR_EQ(out, "abc");
    CHECK_EQ_I64(url_decode("ab%41", 4, out, sizeof out), -1); /* "%4" within len */

    /* Bad escapes. */
    CHECK_EQ_I64(decode("%", 16, out), -1);
    CHECK_EQ_I64(decode("%4", 16, out), -1);
    CHECK_EQ_I64(decode("a%", 16, out), -1);
    CHECK_EQ_I64(decode("ab%4", 16, out), -1);
    CHECK_EQ_I64(decode("%zz", 16, out), -1);
    CHECK_EQ_I64(decode("%4g", 16, out), -1);
    CHECK_EQ_I64(decode("%g4", 16, out), -1);
    CHECK_EQ_I64(decode("%%41", 16, out), -1);
    CHECK_EQ_I64(decode("% 41", 16, out), -1);
    CHECK_EQ_I64(decode("ok%2", 16, out), -1);

    /* Out buffer sizes: the value and its NUL must fit. */
    CHECK_EQ_I64(decode("abc", 3, out), -1);
    CHECK_EQ_I64(decode("abc", 4, out), 3);
    CHECK_STR_EQ(out, "abc");
    CHECK_EQ_I64(decode("%41%42", 2, out), -1);
    CHECK_EQ_I64(decode("%41%42", 3, out), 2);
    CHECK_STR_EQ(out, "AB");
    CHECK_EQ_I64(decode("a", 1, out), -1);
    CHECK_EQ_I64(decode("", 1, out), 0);
    char none[1] = {GUARD};
    CHECK_EQ_I64(url_decode("a", 1, none, 0), -1);
    CHECK_EQ_I64(none[0], GUARD); /* cap 0: nothing written */
    CHECK_EQ_I64(url_decode("", 0, none, 0), 0);
    CHECK_EQ_I64(none[0], GUARD);
}

/* Every byte value survives encode-then-decode, at every cap around the exact size. */
static void test_decode_all_bytes(void)
{
    char src[3 * 256 + 1], out[300];
    static const char hex[] = "0123456789ABCDEF";
    for (int i = 0; i < 256; i++) {
        src[3 * i] = '%';
        src[3 * i + 1] = hex[i >> 4];
        src[3 * i + 2] = hex[i & 15];
    }
    src[3 * 256] = '\0';
    CHECK_EQ_I64(decode(src, 257, out), 256);
    long bad = 0;
    for (int i = 0; i < 256; i++)
        bad += (unsigned char)out[i] != i;
    CHECK_EQ_I64(bad, 0);
    CHECK_EQ_I64(decode(src, 256, out), -1);
}

static long qget(const char *query, const char *name, char *out, size_t cap)
{
    memset(out, GUARD, cap + 1);
    long n = url_query_get(query, name, out, cap);
    if (out[cap] != GUARD)
        unit_fail(__FILE__, __LINE__, "url_query_get(\"%s\", \"%s\") wrote past cap", query, name);
    return n;
}

static void test_query_get(void)
{
    char out[64];
    CHECK_EQ_I64(qget("a=1&b=2", "a", out, 32), 1);
    CHECK_STR_EQ(out, "1");
    CHECK_EQ_I64(qget("a=1&b=2", "b", out, 32), 1);
    CHECK_STR_EQ(out, "2");
    CHECK_EQ_I64(qget("a=1&b=2", "c", out, 32), -1);
    CHECK_EQ_I64(qget("a=1&b=2", "", out, 32), -1);
    CHECK_EQ_I64(qget("", "a", out, 32), -1);
    /* Empty value, no '='. */
    CHECK_EQ_I64(qget("a=&b=2", "a", out, 32), 0);
    CHECK_STR_EQ(out, "");
    CHECK_EQ_I64(qget("a&b=2", "a", out, 32), 0);
    CHECK_STR_EQ(out, "");
    CHECK_EQ_I64(qget("x=1&flag", "flag", out, 32), 0);
    CHECK_STR_EQ(out, "");
    /* Names are whole keys, not prefixes, suffixes or values. */
    CHECK_EQ_I64(qget("ab=1&a=2", "a", out, 32), 1);
    CHECK_STR_EQ(out, "2");
    CHECK_EQ_I64(qget("ba=1", "a", out, 32), -1);
    CHECK_EQ_I64(qget("x=a", "a", out, 32), -1);
    CHECK_EQ_I64(qget("a=1", "ab", out, 32), -1);
    CHECK_EQ_I64(qget("A=1", "a", out, 32), -1);
    /* Several parameters; the first of repeated names wins. */
    CHECK_EQ_I64(qget("limit=10&cursor=abc&region=us-east&limit=20", "region", out, 32), 7);
    CHECK_STR_EQ(out, "us-east");
    CHECK_EQ_I64(qget("limit=10&cursor=abc&region=us-east&limit=20", "limit", out, 32), 2);
    CHECK_STR_EQ(out, "10");
    CHECK_EQ_I64(qget("a=1&&b=2", "b", out, 32), 1);
    CHECK_STR_EQ(out, "2");
    /* Encoded values; '=' inside a value. */
    CHECK_EQ_I64(qget("name=hello%20world&x=1", "name", out, 32), 11);
    CHECK_STR_EQ(out, "hello world");
    CHECK_EQ_I64(qget("cursor=a%3Db%26c", "cursor", out, 32), 5);
    CHECK_STR_EQ(out, "a=b&c");
    CHECK_EQ_I64(qget("k=a=b", "k", out, 32), 3);
    CHECK_STR_EQ(out, "a=b");
    CHECK_EQ_I64(qget("k=%zz", "k", out, 32), URL_QUERY_BAD); /* undecodable */
    CHECK_EQ_I64(qget("k=%2", "k", out, 32), URL_QUERY_BAD);
    CHECK_EQ_I64(qget("k=%", "k", out, 32), URL_QUERY_BAD);
    CHECK_EQ_I64(qget("j=%zz&k=1", "k", out, 32), 1); /* another parameter's escape */
    /* '+' is a space in a query string; an encoded '+' is a plus. */
    CHECK_EQ_I64(qget("k=a+b", "k", out, 32), 3);
    CHECK_STR_EQ(out, "a b");
    CHECK_EQ_I64(qget("k=a%2Bb+", "k", out, 32), 4);
    CHECK_STR_EQ(out, "a+b ");
    /* Too small an out buffer. */
    CHECK_EQ_I64(qget("k=abcdef", "k", out, 6), URL_QUERY_LONG);
    CHECK_EQ_I64(qget("k=abcdef", "k", out, 7), 6);
    CHECK_STR_EQ(out, "abcdef");
}

static void test_form_decode(void)
{
    char out[32];
    CHECK_EQ_I64(url_form_decode("a+b%20c", 7, out, sizeof out), 5);
    CHECK_STR_EQ(out, "a b c");
    CHECK_EQ_I64(url_form_decode("+%2B+", 5, out, sizeof out), 3);
    CHECK_STR_EQ(out, " + ");
    CHECK_EQ_I64(url_form_decode("%g0", 3, out, sizeof out), URL_QUERY_BAD);
    CHECK_EQ_I64(url_form_decode("abc", 3, out, 3), URL_QUERY_LONG);
    /* Paths keep '+'. */
    CHECK_EQ_I64(url_decode("a+b", 3, out, sizeof out), 3);
    CHECK_STR_EQ(out, "a+b");
}

static void test_query_next(void)
{
    const char *cur = "&a=1&&b&c=x=y&";
    struct url_param p;
    CHECK_EQ_I64(url_query_next(&cur, &p), 1);
    CHECK_EQ_I64((long)p.name_len, 1);
    CHECK(p.name[0] == 'a' && p.has_value && p.value_len == 1 && p.value[0] == '1');
    CHECK_EQ_I64(url_query_next(&cur, &p), 1);
    CHECK(p.name[0] == 'b' && p.name_len == 1 && !p.has_value && p.value_len == 0);
    CHECK_EQ_I64(url_query_next(&cur, &p), 1);
    CHECK(p.name[0] == 'c' && p.value_len == 3 && !memcmp(p.value, "x=y", 3));
    CHECK_EQ_I64(url_query_next(&cur, &p), 0);
    CHECK_EQ_I64(url_query_next(&cur, &p), 0);
    const char *none = NULL;
    CHECK_EQ_I64(url_query_next(&none, &p), 0);
}

static void test_bad_detail(void)
{
    char d[200];
    url_query_bad_detail("enabled", 7, d, sizeof d);
    CHECK_STR_EQ(d, "query parameter enabled has a bad percent-escape: '%' must be followed by "
                    "two hex digits");
    url_query_bad_detail("x", 1, d, 10); /* truncated, still terminated */
    CHECK_EQ_I64((long)strlen(d), 9);
}

UNIT_MAIN("test_url", UNIT_CASE(test_decode), UNIT_CASE(test_decode_all_bytes),
          UNIT_CASE(test_query_get), UNIT_CASE(test_form_decode), UNIT_CASE(test_query_next),
          UNIT_CASE(test_bad_detail))
