/*
 * test_endpoint.c - unit tests of the endpoint list parser (core/net/endpoint.c): every
 * form the original lab's compose file and counterd's own use, and bad lists with the
 * sentence each one gets. Never include this from core/.
 */
#include <stdio.h>
#include <string.h>

#include "net/endpoint.h"
#include "unit.h"

static struct endpoint eps[4];
static char err[512];

static int parse(const char *list)
{
    err[0] = '\0';
    return endpoint_list_parse("PEER_ENDPOINTS", list, eps, 4, err, sizeof err);
}

static void test_forms(void)
{
    /* The original lab's form: host:port, no scheme, no name. */
    REQUIRE(parse("counter-us-west:8002,counter-eu-west:8003") == 2);
    CHECK_STR_EQ(eps[0].name, "");
    CHECK_STR_EQ(eps[0].url, "http://counter-us-west:8002");
    CHECK_STR_EQ(eps[0].addr, "counter-us-west:8002");
    CHECK_STR_EQ(eps[1].url, "http://counter-eu-west:8003");
    CHECK_STR_EQ(eps[1].addr, "counter-eu-west:8003");
    /* counterd's form: name=http://host:port. */
    REQUIRE(parse("us-east=http://127.0.0.1:8001, us-west=http://127.0.0.1:8002/") == 2);
    CHECK_STR_EQ(eps[0].name, "us-east");
    CHECK_STR_EQ(eps[0].url, "http://127.0.0.1:8001");
    CHECK_STR_EQ(eps[0].addr, "127.0.0.1:8001");
    CHECK_STR_EQ(eps[1].name, "us-west");
    CHECK_STR_EQ(eps[1].url, "http://127.0.0.1:8002"); /* trailing '/' dropped */
    /* A URL without a name; a name with host:port; https; IPv6; a path kept. */
    REQUIRE(parse("http://127.0.0.1:18202,eu=10.0.0.3:8003,https://a.example/x/,[::1]:9") == 4);
    CHECK_STR_EQ(eps[0].name, "");
    CHECK_STR_EQ(eps[0].url, "http://127.0.0.1:18202");
    CHECK_STR_EQ(eps[0].addr, "127.0.0.1:18202");
    CHECK_STR_EQ(eps[1].name, "eu");
    CHECK_STR_EQ(eps[1].url, "http://10.0.0.3:8003");
    CHECK_STR_EQ(eps[2].url, "https://a.example/x");
    CHECK_STR_EQ(eps[2].addr, "a.example");
    CHECK_STR_EQ(eps[3].url, "http://[::1]:9");
    CHECK_STR_EQ(eps[3].addr, "[::1]:9");
    /* Blank and empty lists, blanks and stray commas around items. */
    CHECK_EQ_I64(parse(""), 0);
    CHECK_EQ_I64(parse(" , ,"), 0);
    CHECK_EQ_I64(parse(NULL), 0);
    REQUIRE(parse(" ,a:1,, b:65535 ,") == 2);
    CHECK_STR_EQ(eps[1].url, "http://b:65535");
    /* An '=' in a URL's query is not a name. */
    REQUIRE(parse("http://h:1/p?a=b") == 1);
    CHECK_STR_EQ(eps[0].name, "");
    CHECK_STR_EQ(eps[0].url, "http://h:1/p?a=b");
}

/* Each bad item: refused with a sentence naming the variable, the item and the reason. */
static void bad(const char *list, const char *item, const char *why)
{
    int n = parse(list);
    char what[600];
    snprintf(what, sizeof what,
             "PEER_ENDPOINTS: '%s' is not host:port, http://host:port or "
             "name=http://host:port: %s",
             item, why);
    if (n != -1 || strcmp(err, what) != 0)
        unit_fail(__FILE__, __LINE__, "parse(\"%s\") = %d, \"%s\"; expected -1, \"%s\"", list, n,
                  err, what);
}

static void test_bad(void)
{
    bad("counter-us-west", "counter-us-west", "it has no port");
    bad("a:1,counter-us-west:", "counter-us-west:", "its port is not a number from 1 to 65535");
    bad("h:0", "h:0", "its port is not a number from 1 to 65535");
    bad("h:65536", "h:65536", "its port is not a number from 1 to 65535");
    bad("h:80x", "h:80x", "its port is not a number from 1 to 65535");
    bad(":8002", ":8002", "its host is empty");
    bad("=http://h:1", "=http://h:1", "its name (before '=') is empty");
    bad("us east=http://h:1", "us", "it has no port"); /* blanks separate items */
    bad("u$=http://h:1", "u$=http://h:1", "its name must be 1-200 bytes of [A-Za-z0-9_.:-]");
    bad("us-east=", "us-east=", "its address is empty");
    bad("ftp://h:1", "ftp://h:1", "its scheme is not http:// or https://");
    bad("http://", "http://", "its host is empty");
    bad("h:1/x", "h:1/x", "it has a path but no http:// scheme");
    bad("h@x:1", "h@x:1", "its host has a character other than letters, digits, '.', '-' and '_'");
    bad("[::1", "[::1", "its IPv6 address is not closed by ']'");
    bad("[::1]x", "[::1]x", "something follows its IPv6 address other than :port");
    /* Too many, and a name given twice. */
    CHECK_EQ_I64(parse("a:1,b:2,c:3,d:4,e:5"), -1);
    CHECK_STR_EQ(err, "PEER_ENDPOINTS: more than 4 endpoints");
    CHECK_EQ_I64(parse("x=a:1,x=b:2"), -1);
    CHECK_STR_EQ(err, "PEER_ENDPOINTS: the name 'x' is given twice");
    /* A name at the limit, and one past it. */
    char list[300];
    memset(list, 'n', 200);
    snprintf(list + 200, sizeof list - 200, "=h:1");
    CHECK_EQ_I64(parse(list), 1);
    memset(list, 'n', 201);
    snprintf(list + 201, sizeof list - 201, "=h:1");
    CHECK_EQ_I64(parse(list), -1);
}

UNIT_MAIN("test_endpoint", UNIT_CASE(test_forms), UNIT_CASE(test_bad))
