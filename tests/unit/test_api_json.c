/*
 * test_api_json.c - counterd.json (core/lua/api_json.c) as Lua code sees it, in a real
 * host: integers exact to the last digit across the whole int64 range (a number beyond
 * 2^53 becomes an int64 cdata and is written back digit for digit), stable encoding
 * (sorted keys, arrays, null, empty tables), and errors that say what and where.
 */
#include <lauxlib.h>
#include <lua.h>
#include <stdio.h>
#include <string.h>

#include "lua/host.h"
#include "unit.h"

static struct host *host;

/* Runs code (a chunk returning one value, with `j` = counterd.json) and returns
 * "ok <value>" or "error <message>". */
static const char *run(const char *code)
{
    static char out[4096];
    lua_State *L = host_state(host);
    char chunk[2048];
    snprintf(chunk, sizeof chunk, "local j = counterd.json %s", code);
    lua_settop(L, 0);
    if (luaL_loadstring(L, chunk) != 0 || lua_pcall(L, 0, 1, 0) != 0)
        snprintf(out, sizeof out, "error %s", lua_tostring(L, -1));
    else
        snprintf(out, sizeof out, "ok %s", luaL_checkstring(L, -1));
    lua_settop(L, 0);
    return out;
}

static void open_host(void)
{
    struct host_info info = {"test", "test-1", "us-east", 50};
    host = host_new("/nonexistent", &info, NULL);
}

static void test_integers_exact(void)
{
    open_host();
    /* Both ends of int64, both sides of 2^53, round trip digit for digit. */
    static const char *const exact[] = {
        "0",
        "-1",
        "9007199254740991",
        "9007199254740992",
        "9007199254740993",
        "-9007199254740993",
        "1234567890123456789",
        "9223372036854775807",
        "-9223372036854775808",
        "[9223372036854775807,-9223372036854775808,9007199254740993]",
        "{\"count\":9223372036854775806,\"n\":1}",
    };
    for (size_t i = 0; i < sizeof exact / sizeof *exact; i++) {
        char code[512], want[512];
        snprintf(code, sizeof code, "return j.encode(j.decode('%s'))", exact[i]);
        snprintf(want, sizeof want, "ok %s", exact[i]);
        unit_context("%s", exact[i]);
        CHECK_STR_EQ(run(code), want);
    }
    unit_context("%s", "");
    /* Up to 2^53 a plain number (arithmetic as usual); beyond it an int64 cdata that
     * compares and adds exactly. */
    CHECK_STR_EQ(run("return type(j.decode('9007199254740992'))"), "ok number");
    CHECK_STR_EQ(run("return tostring(j.decode('9007199254740993'))"), "ok 9007199254740993LL");
    CHECK_STR_EQ(run("return j.encode(j.decode('9007199254740993') + 1)"), "ok 9007199254740994");
    CHECK_STR_EQ(run("return tostring(j.decode('9007199254740993') > 2^53)"), "ok true");
    /* Integral numbers are written without a fraction; others as they are. */
    CHECK_STR_EQ(run("return j.encode({2^53, 3, -7, 1.5, 0.1, -1e300})"),
                 "ok [9007199254740992,3,-7,1.5,0.1,-1e+300]");
    /* Past int64 the reader gives a double (not exact): what it does today, written down. */
    CHECK_STR_EQ(run("return type(j.decode('9223372036854775808'))"), "ok number");
    host_free(host);
}

static void test_encoding_is_stable(void)
{
    open_host();
    CHECK_STR_EQ(run("return j.encode({b = 1, a = {2, 3}, c = j.null, d = j.array({}), e = {}, "
                     "f = 'q\"\\n\\1'})"),
                 "ok {\"a\":[2,3],\"b\":1,\"c\":null,\"d\":[],\"e\":{},\"f\":\"q\\\"\\n\\u0001\"}");
    CHECK_STR_EQ(run("return tostring(j.decode('null') == j.null)"), "ok true");
    CHECK_STR_EQ(run("return j.encode(j.decode('[]'))"), "ok []");
    CHECK_STR_EQ(run("return j.encode(j.decode('{\"z\":[true,false,null],\"a\":\"\\\\u00e9\"}'))"),
                 "ok {\"a\":\"\xc3\xa9\",\"z\":[true,false,null]}");
    host_free(host);
}

static void test_decode_errors(void)
{
    open_host();
    static const struct {
        const char *text, *error;
    } cases[] = {
        {"", "expected a value: unexpected end of input at offset 0"},
        {"{", "expected a member name: unexpected end of input at offset 1"},
        {"[1,]", "expected a value: unexpected character ']' at offset 3"},
        {"01", "trailing characters after the value: unexpected character '1' at offset 1"},
        {"[1] x", "trailing characters after the value: unexpected character 'x' at offset 4"},
        {"1.5e", "bad number: unexpected end of input at offset 4"},
        {"\"\\\\ud800\"", "unpaired surrogate in string: unexpected character '\"' at offset 7"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char code[256], want[256];
        snprintf(code, sizeof code, "local v, e = j.decode('%s') return tostring(v) .. '|' .. e",
                 cases[i].text);
        snprintf(want, sizeof want, "ok nil|%s", cases[i].error);
        unit_context("%s", cases[i].text);
        CHECK_STR_EQ(run(code), want);
    }
    unit_context("%s", "");
    CHECK_STR_EQ(run("local v, e = j.decode(string.rep('[', 100000)) return e"),
                 "ok nesting deeper than 64 levels at offset 64");
    host_free(host);
}

static void test_encode_errors(void)
{
    open_host();
    CHECK_STR_EQ(run("return j.encode(0/0)"), "error counterd.json.encode: cannot encode nan");
    CHECK_STR_EQ(run("local t = {} t.t = t return j.encode(t)"),
                 "error counterd.json.encode: nesting deeper than 64 (a cycle?)");
    CHECK_STR_EQ(run("return j.encode({print})"),
                 "error counterd.json.encode: cannot encode a function");
    CHECK_STR_EQ(run("return j.encode({[1] = 1, x = 2})"),
                 "error counterd.json.encode: object keys must be strings");
    CHECK_STR_EQ(run("return j.encode({[true] = 1})"),
                 "error counterd.json.encode: object keys must be strings");
    host_free(host);
}

UNIT_MAIN("api_json", UNIT_CASE(test_integers_exact), UNIT_CASE(test_encoding_is_stable),
          UNIT_CASE(test_decode_errors), UNIT_CASE(test_encode_errors))
