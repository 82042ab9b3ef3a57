/*
 * test_pattern.c - unit tests of the matcher a policy's budget can stop
 * (core/lua/api_pattern.c), the bounded library functions (core/lua/api_limits.c) and
 * the budget and sandbox around them in the host (core/lua/host.c).
 *
 * LuaJIT's own string functions are the oracle. Two Lua states run the same calls
 * through the same Lua runner: one as luaL_openlibs leaves it, one with our functions
 * installed. Every result must be the same, byte for byte, errors included (the runner
 * calls from the same file:line in both, so even the message's position must agree):
 * thousands of generated (subject, pattern) pairs with every feature of the language and
 * malformed patterns, and hand-written edge cases. Then, through a real lua_host with a
 * policy file: the catastrophic pattern (through find, s:find, match, gmatch, gsub and
 * pcall), a huge string.rep, a two-million-element sort, heap blow-ups (a string doubled
 * in a loop, table.concat, counterd.json.encode), a pcall- or xpcall-wrapped infinite loop
 * and tasks started by a policy all fail within the budget, and what one policy does to
 * its string table stays in its sandbox. A micro-benchmark prints the speed against
 * LuaJIT's built-ins (it reports, it does not fail). Never include this from core/.
 */
#define _GNU_SOURCE
#include <lauxlib.h>
#include <lua.h>
#include <luajit.h>
#include <lualib.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/clock.h"
#include "lua/host.h"
#include "unit.h"
#include "unit_lua.h"
#include "lua/sandbox.h"
#include "lua/api.h"

/* ---------------------------------------------------------------- the two states */

/*
 * run(fn, nargs, a1, a2, a3, a4, repl) calls string[fn] with the first nargs of a1..a4
 * (a3 replaced by a function or table of the runner's when repl names one) and returns
 * one string saying what happened: the count and values of the results, the error
 * message, and every call the replacement function or __index received. gmatch is
 * iterated to its end (at most 100 steps).
 */
static const char runner_lua[] =
    "local select, type, tostring, format, concat = select, type, tostring, string.format, "
    "table.concat\n"
    "local pcall, unpack, setmetatable, S = pcall, unpack, setmetatable, string\n"
    "local function ser(n, t)\n"
    "  local out = {}\n"
    "  for i = 1, n do\n"
    "    local v, ty = t[i], type(t[i])\n"
    "    if ty == 'string' then out[i] = format('%q', v)\n"
    "    elseif ty == 'number' then out[i] = format('%.17g', v)\n"
    "    else out[i] = tostring(v) end\n"
    "  end\n"
    "  return n .. '[' .. concat(out, ',') .. ']'\n"
    "end\n"
    "local function pack(...) return select('#', ...), {...} end\n"
    "local calls\n"
    "local function log(...) local n, t = pack(...) calls[#calls + 1] = ser(n, t) end\n"
    "local repls = {\n"
    "  fn = function(...) log(...) local a = ...\n"
    "    if a == 'b' then return nil elseif a == 'c' then return false end\n"
    "    return '<' .. tostring(a) .. '>' end,\n"
    "  fnnum = function(...) log(...) return 42 end,\n"
    "  fnbad = function(...) log(...) if (...) == 'a' then return {} end return 'k' end,\n"
    "  tbl = {a = 'A', b = false, ['1'] = 'one', ab = 7, c = {}, [''] = 'E'},\n"
    "  meta = setmetatable({}, {__index = function(t, k) log(k)\n"
    "    if k == 'a' then return 'Z' end end}),\n"
    "}\n"
    "function run(fn, nargs, a1, a2, a3, a4, repl)\n"
    "  calls = {}\n"
    "  if repl then a3 = repls[repl] end\n"
    "  local args = {a1, a2, a3, a4}\n"
    "  local ok, n, t\n"
    "  if fn == 'gmatch' then\n"
    "    ok, n = pcall(function(...)\n"
    "      local it = S.gmatch(...)\n"
    "      local out = {}\n"
    "      for k = 1, 100 do\n"
    "        local c, r = pack(it())\n"
    "        out[#out + 1] = ser(c, r)\n"
    "        if r[1] == nil then break end\n"
    "      end\n"
    "      return concat(out, ' ')\n"
    "    end, unpack(args, 1, nargs))\n"
    "    return (ok and n or 'ERR ' .. tostring(n)) .. ' calls ' .. concat(calls, ';')\n"
    "  end\n"
    "  local f = S[fn]\n"
    "  ok, n, t = pcall(function(...) return pack(f(...)) end, unpack(args, 1, nargs))\n"
    "  return (ok and ser(n, t) or 'ERR ' .. tostring(n)) .. ' calls ' .. concat(calls, ';')\n"
    "end\n";

static lua_State *ref_L, *our_L;

static lua_State *new_state(int ours)
{
    lua_State *L = luaL_newstate();
    luaL_openlibs(L);
    if (ours) {
        lua_getglobal(L, "string");
        lua_getfield(L, -1, "find");
        lua_setfield(L, LUA_REGISTRYINDEX, "test.builtin_find");
        lua_pop(L, 1);
        api_pattern_inject(L);
        api_limits_inject(L);
    }
    if (luaL_loadbuffer(L, runner_lua, sizeof runner_lua - 1, "=runner") != 0 ||
        lua_pcall(L, 0, 0, 0) != 0) {
        fprintf(stderr, "runner: %s\n", lua_tostring(L, -1));
        abort();
    }
    return L;
}

static void close_states(void)
{
    lua_close(ref_L);
    lua_close(our_L);
}

static void states(void)
{
    if (!ref_L) {
        ref_L = new_state(0);
        our_L = new_state(1);
        atexit(close_states);
    }
}

enum arg_type { A_NONE, A_NIL, A_STR, A_NUM, A_BOOL };
struct arg {
    enum arg_type type;
    const char *s;
    size_t len;
    double num;
};

struct call {
    const char *fn;
    int nargs;
    struct arg a[4];
    const char *repl; /* a replacement of the runner's (gsub), or NULL */
};

static void push_arg(lua_State *L, const struct arg *a)
{
    switch (a->type) {
    case A_STR: lua_pushlstring(L, a->s, a->len); break;
    case A_NUM: lua_pushnumber(L, a->num); break;
    case A_BOOL: lua_pushboolean(L, a->num != 0); break;
    default: lua_pushnil(L);
    }
}

/* What the call does in L, as the runner's string (pushed on L's stack). */
static const char *run_in(lua_State *L, const struct call *c, size_t *len)
{
    lua_settop(L, 0);
    lua_getglobal(L, "run");
    lua_pushstring(L, c->fn);
    lua_pushinteger(L, c->nargs);
    for (int i = 0; i < 4; i++)
        push_arg(L, &c->a[i]);
    if (c->repl)
        lua_pushstring(L, c->repl);
    else
        lua_pushnil(L);
    if (lua_pcall(L, 7, 1, 0) != 0)
        return lua_tolstring(L, -1, len); /* a bug in the runner: it differs loudly */
    return lua_tolstring(L, -1, len);
}

static void print_call(const struct call *c)
{
    fprintf(stderr, "    call: string.%s(", c->fn);
    for (int i = 0; i < c->nargs; i++) {
        if (i)
            fprintf(stderr, ", ");
        if (i == 2 && c->repl) {
            fprintf(stderr, "<%s>", c->repl);
            continue;
        }
        const struct arg *a = &c->a[i];
        switch (a->type) {
        case A_STR: unit_print_bytes(stderr, a->s, a->len); break;
        case A_NUM: fprintf(stderr, "%.17g", a->num); break;
        case A_BOOL: fprintf(stderr, a->num ? "true" : "false"); break;
        default: fprintf(stderr, "nil");
        }
    }
    fprintf(stderr, ")\n");
}

static long differences;
/* What LuaJIT answered, by kind: a generator that only ever produced errors or misses
 * would agree with anything. */
static long answered_error, answered_none, answered_match;

/* Runs c in both states; @return 1 when they agree. */
static int same(const struct call *c)
{
    size_t rl, ol;
    const char *r = run_in(ref_L, c, &rl);
    const char *o = run_in(our_L, c, &ol);
    unit_g.checks++;
    if (!strncmp(r, "ERR ", 4))
        answered_error++;
    else if (!strncmp(r, "1[nil]", 6) || !strncmp(r, "1[\"\",0]", 8))
        answered_none++;
    else
        answered_match++;
    if (rl == ol && memcmp(r, o, rl) == 0)
        return 1;
    differences++;
    unit_fail(__FILE__, __LINE__, "differs from LuaJIT's string.%s", c->fn);
    if (unit_g.fails <= UNIT_MAX_PRINTED) {
        print_call(c);
        fprintf(stderr, "    luajit: ");
        unit_print_bytes(stderr, r, rl);
        fprintf(stderr, "\n    ours:   ");
        unit_print_bytes(stderr, o, ol);
        fprintf(stderr, "\n");
    }
    return 0;
}

static struct arg S(const char *s) {
    return (struct arg){A_STR, s, strlen(s), 0};
} static struct arg SN(const char *s, size_t n) {
    return (struct arg){A_STR, s, n, 0};
} static struct arg N(double n) {
    return (struct arg){A_NUM, NULL, 0, n};
} static struct arg B(int b) {
    return (struct arg){A_BOOL, NULL, 0, b};
} static const struct arg NIL = {A_NIL, NULL, 0, 0};

/* Compares fn(args...) (up to 4 arguments) in both states. */
#define SAME(fn, ...)                                                                              \
    do {                                                                                           \
        struct arg args_[] = {__VA_ARGS__};                                                        \
        struct call c_ = {fn, (int)(sizeof args_ / sizeof *args_), {{0}}, NULL};                   \
        memcpy(c_.a, args_, sizeof args_);                                                         \
        same(&c_);                                                                                 \
    } while (0)

/* gsub(s, p, <repl of the runner>[, n]) in both states. */
static void same_gsub_with(const char *repl, struct arg s, struct arg p, struct arg *n)
{
    struct call c = {"gsub", n ? 4 : 3, {s, p, NIL, n ? *n : NIL}, repl};
    same(&c);
}

/* ---------------------------------------------------------------- absolute checks */

/* Runs code in L (a chunk returning one string) and returns its result. */
static const char *eval(lua_State *L, const char *code)
{
    lua_settop(L, 0);
    if (luaL_loadstring(L, code) != 0 || lua_pcall(L, 0, 1, 0) != 0)
        return lua_tostring(L, -1);
    return lua_tostring(L, -1) ? lua_tostring(L, -1) : "(not a string)";
}

/* A few results written out, so that the differential tests cannot pass by both states
 * running the same code: ours must be installed, and right on its own. */
static void test_installed_and_right(void)
{
    states();
    lua_getfield(our_L, LUA_REGISTRYINDEX, "test.builtin_find");
    lua_getglobal(our_L, "string");
    lua_getfield(our_L, -1, "find");
    CHECK(lua_iscfunction(our_L, -1));
    CHECK(!lua_rawequal(our_L, -1, -3));
    lua_settop(our_L, 0);
    const char *code =
        "local a, b = ('hello world'):find('o w') "
        "local c = ('key = val'):match('^(%w+)%s*=%s*(%w+)$') "
        "local d, n = ('abc'):gsub('', '-') "
        "local g = {} for k, v in ('a=1, b=2'):gmatch('(%w+)=(%w+)') do g[#g+1] = k .. v end "
        "local e = ('THE (quick) fox'):find('%f[%a]%a+', 5) "
        "local f = ('f(a(b)c)d'):match('%b()') "
        "local h = ('hello'):gsub('(l)(l)', '%2%1%0') "
        "local i, j = ('x'):rep(3, ','), ('aXb'):gsub('%u', {X = 'y'}) "
        "return table.concat({a, b, c, d, n, table.concat(g, '|'), e, f, h, i, j}, ' ')";
    CHECK_STR_EQ(eval(our_L, code), "5 7 key -a-b-c- 4 a1|b2 6 (a(b)c) hellllo x,x,x ayb");
    CHECK_STR_EQ(eval(our_L, "local ok, e = pcall(string.find, 'a', '%') return e"),
                 "malformed pattern (ends with '%')");
    CHECK_STR_EQ(eval(our_L, "local ok, e = pcall(string.find, ('a'):rep(200), "
                             "('a?'):rep(200)) return e"),
                 "pattern too complex");
    /* Outside a policy call there is no budget: long work completes. */
    CHECK_STR_EQ(eval(our_L, "return tostring(('a'):rep(300):find('.-.-b'))"), "nil");
    CHECK_STR_EQ(eval(our_L, "return tostring(#string.rep('ab', 2^20, ','))"), "3145727");
    CHECK_STR_EQ(eval(our_L, "local t = {} for i = 1, 2e5 do t[i] = -i end table.sort(t) "
                             "return t[1] .. ' ' .. t[2e5]"),
                 "-200000 -1");
}

/* ---------------------------------------------------------------- hand-written cases */

static void test_find_and_match_cases(void)
{
    states();
    static const char *pats[] = {
        "a",
        "a)",
        "a]",
        "b",
        "^a",
        "^b",
        "a$",
        "c$",
        "c$$",
        "$",
        "^",
        "^$",
        "",
        ".",
        ".-",
        ".*",
        "a*",
        "a+",
        "a-",
        "a?",
        "a?b",
        "%a+",
        "%A+",
        "%d",
        "%D",
        "%l+",
        "%L",
        "%s",
        "%S+",
        "%u",
        "%U",
        "%w+",
        "%W",
        "%x+",
        "%X",
        "%p",
        "%P",
        "%c",
        "%C",
        "%z",
        "%Z",
        "%.",
        "%%",
        "%q",
        "%Q",
        "%-",
        "[abc]+",
        "[^abc]+",
        "[a-c]+",
        "[%a_]+",
        "[]]",
        "[^]]",
        "[a-]",
        "[-a]",
        "[%]]",
        "[%a-z]",
        "[a-%%]",
        "[%w%s]*",
        "(a)",
        "(a)(b)",
        "()",
        "()a()",
        "(a*(.)%w(%s*))",
        "(h)(e)",
        "%b()",
        "%b[]",
        "%bxy",
        "%b((",
        "%f[%a]",
        "%f[%A]",
        "%f[%w]%w+",
        "%f[^%z]",
        "%f[%z]",
        "(a)%1",
        "(.)%1",
        "(%w+) %1",
        "()%1",
        "a-b",
        "a.-b",
        ".-b",
        "%bab",
        "(.-)%-(%d+)$",
        "^(.-)%-%d+$",
        "~.*$",
        "%-%d+$",
    };
    static const char *subjects[] = {"",
                                     "a",
                                     "abc",
                                     "aaab",
                                     "hello world",
                                     "THE (quick) fox",
                                     "f(a(b)c)d",
                                     "x[y]z]]",
                                     "us-east-1",
                                     "us-east-1~r2",
                                     "  key = value  ",
                                     "a.b%c-d$e^f",
                                     "abab abab",
                                     "aXb Yc\t\n1_2",
                                     "xy yx ((a)) bb"};
    for (size_t i = 0; i < sizeof pats / sizeof *pats; i++) {
        for (size_t j = 0; j < sizeof subjects / sizeof *subjects; j++) {
            unit_context("pattern %s subject %s", pats[i], subjects[j]);
            SAME("find", S(subjects[j]), S(pats[i]));
            SAME("match", S(subjects[j]), S(pats[i]));
            SAME("gmatch", S(subjects[j]), S(pats[i]));
            SAME("gsub", S(subjects[j]), S(pats[i]), S("<%0>"));
        }
    }
    unit_context("find init and plain");
    const double inits[] = {-100,
                            -12,
                            -11,
                            -10,
                            -3,
                            -2.7,
                            -2.5,
                            -1.5,
                            -1,
                            -0.5,
                            0,
                            0.5,
                            1,
                            1.9,
                            2,
                            2.5,
                            3,
                            10,
                            11,
                            12,
                            13,
                            100,
                            2147483647.0,
                            2147483648.0,
                            -2147483648.0,
                            -2147483649.0,
                            4294967297.0,
                            4294967299.0,
                            -4294967295.0,
                            1e10,
                            -1e10,
                            9223372036854775808.0,
                            1e19,
                            -1e19,
                            NAN,
                            INFINITY,
                            -INFINITY};
    for (size_t i = 0; i < sizeof inits / sizeof *inits; i++) {
        SAME("find", S("abcdefabcdef"), S("c"), N(inits[i]));
        SAME("find", S("abcdefabcdef"), S("c."), N(inits[i]));
        SAME("find", S("abcdefabcdef"), S(""), N(inits[i]));
        SAME("find", S("abcdefabcdef"), S("^c"), N(inits[i]));
        SAME("match", S("abcdefabcdef"), S("(c)(.)"), N(inits[i]));
        SAME("match", S("abcdefabcdef"), S("()"), N(inits[i]));
        SAME("find", S("a.c.e"), S("."), N(inits[i]), B(1));
        SAME("gsub", S("abcabcabc"), S("b"), S("X"), N(inits[i]));
    }
    SAME("find", S("abc"), S("b"), S("2"));
    SAME("find", S("abc"), S("b"), S(" 2 "));
    SAME("find", S("abc"), S("b"), S("0x2"));
    SAME("find", S("abc"), S("b"), S("x"));
    SAME("find", S("abc"), S("b"), B(1));
    SAME("find", S("abc"), S("b"), NIL, B(1));
    SAME("find", S("a+b"), S("+"), N(1), N(0));
    SAME("find", S("a+b"), S("+"), N(1), S(""));
    SAME("find", S("a+b"), S("+"), N(1), B(0));
    SAME("find", S("a+b"), S("+"), N(1), NIL);
    SAME("find", S("a^b"), S("^b"), N(1), B(1));
    SAME("find", S("a%b"), S("%b"), N(1), B(1));
    SAME("find", S("a(b"), S("("), N(1), B(1));
    SAME("find", S(""), S(""), N(1), B(1));
    SAME("find", S(""), S(""), N(2), B(1));
    SAME("find", S("abc"), S("abcd"), N(1), B(1));
    /* Numbers where strings go, and wrong types. */
    SAME("find", N(12345), N(3));
    SAME("find", N(12.5), S("."), N(1), B(1));
    SAME("match", N(-1.5), S("%d"));
    SAME("gsub", N(1234), N(2), N(9));
    SAME("find");
    SAME("find", S("a"));
    SAME("find", NIL, S("a"));
    SAME("find", S("a"), B(1));
    SAME("match", S("a"));
    SAME("gmatch", S("a"));
    SAME("gmatch", B(0), S("a"));
    SAME("gsub", S("a"), S("a"));
    SAME("gsub", S("a"), S("a"), B(1));
    SAME("gsub", S("a"), S("a"), NIL);
    SAME("gsub", S("a"), S("a"), B(1), S("x"));
    SAME("gsub", S("a"), S("a"), S("b"), S("x"));
    SAME("gsub", S("a"), S("a"), S("b"), B(1));
    /* Embedded zeros: the subject may hold them, the pattern stops at its first one (and
     * find's plain search sees all of it when no special character is there). */
    SAME("find", SN("a\0b", 3), SN("\0", 1));
    SAME("find", SN("a\0b", 3), SN("\0b", 2));
    SAME("find", SN("a\0b.", 4), SN("a\0b.", 4));
    SAME("find", SN("xa\0b", 4), SN("a\0b.", 4));
    SAME("match", SN("xa\0b", 4), SN("a\0zz", 4));
    SAME("match", SN("a\0b", 3), S("[%z]"));
    SAME("match", SN("a\0b", 3), S("%Z+"));
    SAME("match", SN("a\0b", 3), S("a%zb"));
    SAME("match", SN("a\0b", 3), S("%f[%z]"));
    SAME("gsub", SN("a\0b\0", 4), S("%z"), S("0"));
    SAME("gsub", SN("a\0b\0", 4), SN("\0", 1), S("0"));
    /* Errors, each raised only when the matcher gets to the bad part. */
    static const char *bad[] = {"%",  "a%",    "[a",  "[a%",  "[",     "[^",      "[]",   "[^]",
                                "[%", "%f",    "%fa", "%f[a", "%b",    "%ba",     "(a",   "(a))",
                                "a)", "(a)b)", "%1",  "%0",   "(a)%2", "(a%1)",   "()%1", "(()",
                                "x%", "b%",    "x[a", "b[a",  "b(",    "(a)(b)%3"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        unit_context("malformed %s", bad[i]);
        SAME("find", S("abc"), S(bad[i]));
        SAME("match", S("abc"), S(bad[i]));
        SAME("gmatch", S("abc"), S(bad[i]));
        SAME("gsub", S("abc"), S(bad[i]), S("x"));
        SAME("gsub", S("abc"), S(bad[i]), S("%1"));
    }
    unit_context("captures");
    char many[128] = "";
    for (int i = 0; i < 33; i++)
        strcat(many, "()");
    SAME("find", S("abc"), S(many));
    SAME("match", S("abc"), S(many + 2));
    SAME("match", S("abcdefghijklmnopqrstuvwxyzabcdefghij"),
         S("(.)(.)(.)(.)(.)(.)(.)(.)(.)(.)(.)(.)(.)(.)(.)(.)(.)(.)(.)(.)(.)(.)(.)(.)(.)(.)(.)(.)"
           "(.)(.)(.)(.)"));
    SAME("match", S("abcdefghijklmnopqrstuvwxyzabcdefghij"),
         S("(.)(.)(.)(.)(.)(.)(.)(.)(.)(.)(.)(.)(.)(.)(.)(.)(.)(.)(.)(.)(.)(.)(.)(.)(.)(.)(.)(.)"
           "(.)(.)(.)(.)(.)"));
    /* The recursion bound: 199 nested items pass, 200 are "pattern too complex". */
    unit_context("depth");
    static char subject[512], pattern[1024];
    for (int n = 195; n <= 205; n++) {
        memset(subject, 'a', (size_t)n);
        subject[n] = '\0';
        for (int k = 0; k < n; k++)
            memcpy(pattern + 2 * k, "a?", 2);
        pattern[2 * n] = '\0';
        SAME("find", S(subject), S(pattern));
        for (int k = 0; k < n; k++)
            memcpy(pattern + 2 * k, "a*", 2);
        SAME("match", S(subject), S(pattern));
        for (int k = 0; k < n; k++)
            memcpy(pattern + 2 * k, "a-", 2);
        SAME("gsub", S(subject), S(pattern), S("x"));
    }
    unit_context("%%b and %%f at the edges");
    SAME("find", S("(("), S("%b()"));
    SAME("find", S("||x|"), S("%b||"));
    SAME("gsub", S("THE (quick) fox"), S("%f[%a]"), S("|"));
    SAME("gsub", S("THE (quick) fox"), S("%f[%A]"), S("|"));
    SAME("gsub", S("hello"), S("%f[%z]"), S("|"));
    SAME("gsub", S("hello"), S("%f[%Z]"), S("|"));
}

static void test_gsub_and_gmatch_cases(void)
{
    states();
    static const char *repls[] = {"x",   "",    "%0",  "%1", "%2",   "<%1|%2>", "%%",
                                  "%",   "a%",  "%x",  "%9", "%1%1", "[%0]%",   "%a%b",
                                  "%%1", "%00", "\\1", "%-", "%3"};
    static const char *pats[] = {"b",    "(b)", "(a)(b)", "()b",         "",   "^",  "$",
                                 "^$",   "%w*", "%w+",    "(%w+)=(%w+)", "a*", "()", "^a",
                                 "^(a)", ".",   "x*",     "(x*)"};
    static const char *subjects[] = {"", "abc", "abcab", "a=1, b=2", "aaa", "xabx"};
    const double ns[] = {-1, 0, 1, 1.5, 2, 3, 100, 2147483648.0};
    for (size_t p = 0; p < sizeof pats / sizeof *pats; p++) {
        for (size_t s = 0; s < sizeof subjects / sizeof *subjects; s++) {
            unit_context("gsub %s on %s", pats[p], subjects[s]);
            for (size_t r = 0; r < sizeof repls / sizeof *repls; r++)
                SAME("gsub", S(subjects[s]), S(pats[p]), S(repls[r]));
            SAME("gsub", S(subjects[s]), S(pats[p]), N(7));
            SAME("gsub", S(subjects[s]), S(pats[p]), N(-0.5));
            static const char *kinds[] = {"fn", "fnnum", "fnbad", "tbl", "meta"};
            for (size_t k = 0; k < 5; k++) {
                same_gsub_with(kinds[k], S(subjects[s]), S(pats[p]), NULL);
                for (size_t i = 0; i < sizeof ns / sizeof *ns; i++) {
                    struct arg n = N(ns[i]);
                    same_gsub_with(kinds[k], S(subjects[s]), S(pats[p]), &n);
                }
            }
            for (size_t i = 0; i < sizeof ns / sizeof *ns; i++)
                SAME("gsub", S(subjects[s]), S(pats[p]), S("<%0>"), N(ns[i]));
            SAME("gsub", S(subjects[s]), S(pats[p]), S("<%0>"), S("2"));
            SAME("gmatch", S(subjects[s]), S(pats[p]));
        }
    }
    unit_context("gmatch: anchors are plain characters, empty matches move on");
    SAME("gmatch", S("^a^ab"), S("^a"));
    SAME("gmatch", S("abc"), S("^"));
    SAME("gmatch", S("abc"), S("$"));
    SAME("gmatch", S("ab$"), S("b$"));
    SAME("gmatch", S("abc"), S("%a*"));
    SAME("gmatch", S("abc"), S(".-"));
    SAME("gmatch", S("a,b,,c"), S("([^,]*)"));
    SAME("gmatch", S("a=1&b=2&c"), S("[^&]+"));
    SAME("gmatch", S("k=v; k2 = v2"), S("(%w+)%s*=%s*(%w+)"));
    SAME("gmatch", S("one two"), S("()(%a+)()"));
}

/* ---------------------------------------------------------------- generated cases */

static const char *pick(struct unit_rng *r, const char *const *list, size_t n)
{
    return list[rng_below(r, n)];
}
#define PICK(r, list) pick(r, list, sizeof list / sizeof *list)

/* A random pattern of up to 7 items, at most 3 of them with quantifiers that backtrack
 * (the subjects are short, so every call ends quickly in both states). */
static size_t gen_pattern(struct unit_rng *r, char *out, size_t cap)
{
    static const char *const items[] = {
        "a",      "b",    "c",      "A",       "1",     " ",     "_",      "(",          ")",
        "()",     ".",    "%a",     "%d",      "%s",    "%w",    "%p",     "%l",         "%u",
        "%x",     "%c",   "%z",     "%A",      "%S",    "%W",    "%.",     "%%",         "%(",
        "%)",     "%-",   "%[",     "%]",      "%q",    "[abc]", "[^a]",   "[a-c]",      "[%a_]",
        "[%d%-]", "[]]",  "[^]a]",  "[a-]",    "[-a]",  "[%]]",  "[^%s]",  "[%w%p]",     "%b()",
        "%b[]",   "%bab", "%f[%w]", "%f[^%s]", "%f[a]", "%1",    "%2",     "^",          "$",
        "]",      "-",    "*",      "+",       "?",     "\xe9",  "%f[%z]", "[\xe0-\xef]"};
    static const char *const quant[] = {"*", "+", "-", "?"};
    static const char *const broken[] = {"%",  "[a", "[",  "%f", "%fa", "%b", "%bx", "(", ")",
                                         "[^", "[%", "%0", "%9", "%f[", "[]", "(()", "%1"};
    size_t len = 0;
    int quantified = 0;
#define PUT(str)                                                                                   \
    do {                                                                                           \
        const char *s_ = (str);                                                                    \
        size_t l_ = strlen(s_);                                                                    \
        if (len + l_ < cap) {                                                                      \
            memcpy(out + len, s_, l_);                                                             \
            len += l_;                                                                             \
        }                                                                                          \
    } while (0)
    if (rng_below(r, 5) == 0)
        PUT("^");
    int n = (int)rng_below(r, 8);
    for (int i = 0; i < n; i++) {
        const char *item = PICK(r, items);
        PUT(item);
        if (quantified < 3 && rng_below(r, 10) < 3) {
            PUT(PICK(r, quant));
            quantified++;
        }
    }
    if (rng_below(r, 5) == 0)
        PUT("$");
    if (rng_below(r, 20) == 0)
        PUT(PICK(r, broken));
    if (rng_below(r, 40) == 0 && len + 2 < cap) { /* a zero byte: the pattern ends there */
        out[len++] = '\0';
        PUT("a.");
    }
#undef PUT
    out[len] = '\0';
    return len;
}

static size_t gen_subject(struct unit_rng *r, char *out)
{
    static const char alphabet[] = "aaabbbcccA1 _()[]%-.^$\n\0\xe9xyz=,";
    size_t n = rng_below(r, 13);
    for (size_t i = 0; i < n; i++)
        out[i] = alphabet[rng_below(r, sizeof alphabet - 1)];
    out[n] = '\0';
    return n;
}

static struct arg gen_int_arg(struct unit_rng *r)
{
    switch (rng_below(r, 8)) {
    case 0: return N((double)rng_range(r, -15, 15) + 0.5);
    case 1: return S("2");
    case 2: {
        static const double odd[] = {2147483648.0, 4294967298.0, 1e10, -1e10, -2147483649.0};
        return N(odd[rng_below(r, 5)]);
    }
    default: return N((double)rng_range(r, -15, 15));
    }
}

static void test_generated_against_luajit(void)
{
    states();
    struct unit_rng r;
    rng_init(&r, "pattern");
    static const char *const repls[] = {"x", "%0", "%1", "<%1|%2>", "%%", "%", "%x", "", "%9"};
    static const char *const kinds[] = {"fn", "fnnum", "fnbad", "tbl", "meta"};
    char pat[128], subj[32];
    long n = unit_iters(6000);
    long before = differences;
    answered_error = answered_none = answered_match = 0;
    for (long i = 0; i < n; i++) {
        size_t pl = gen_pattern(&r, pat, sizeof pat - 4);
        size_t sl = gen_subject(&r, subj);
        struct arg s = SN(subj, sl), p = SN(pat, pl);
        unit_context("case %ld", i);
        SAME("match", s, p);
        SAME("gmatch", s, p);
        switch (rng_below(&r, 4)) {
        case 0: SAME("find", s, p); break;
        case 1: SAME("find", s, p, gen_int_arg(&r)); break;
        case 2: SAME("find", s, p, gen_int_arg(&r), B(1)); break;
        default: SAME("match", s, p, gen_int_arg(&r));
        }
        switch (rng_below(&r, 3)) {
        case 0: SAME("gsub", s, p, S(PICK(&r, repls))); break;
        case 1: SAME("gsub", s, p, S(PICK(&r, repls)), gen_int_arg(&r)); break;
        default: {
            struct arg m = gen_int_arg(&r);
            same_gsub_with(PICK(&r, kinds), s, p, rng_below(&r, 2) ? &m : NULL);
        }
        }
        if (differences - before > 50)
            break; /* enough to look at */
    }
    unit_context("%s", "");
    long total = answered_error + answered_none + answered_match;
    printf("  generated: %ld calls; LuaJIT answered %ld with a match, %ld with none, %ld with "
           "an error\n",
           total, answered_match, answered_none, answered_error);
    CHECK(answered_match * 4 > total);
    CHECK(answered_none * 10 > total);
    CHECK(answered_error * 50 > total);
}

/* ---------------------------------------------------------------- through the host */

/* A routing policy whose route(what) does something that would run far past the budget. */
static const char runaway_lua[] =
    "local M = {}\n"
    "local catastrophic = '.-.-.-.-b'\n"
    "function M.route(what, ...)\n"
    "  local s = ('a'):rep(30000)\n"
    "  if what == 'find' then return string.find(s, catastrophic) end\n"
    "  if what == 'method' then return s:find(catastrophic) end\n"
    "  if what == 'match' then return s:match('(.-)(.-)(.-)(.-)b') end\n"
    "  if what == 'gmatch' then for x in s:gmatch('.-.-.-.-b') do end return 1 end\n"
    "  if what == 'gsub' then return (s:gsub('.-.-.-.-b', 'x')) end\n"
    "  if what == 'rep' then return #string.rep('x', 2^30) end\n"
    "  if what == 'rep_sep' then return #s:rep(100, ',') end\n"
    "  if what == 'heap' then local t = {} for i = 1, 1e9 do t[i] = s .. i end end\n"
    "  if what == 'double' then local d = 'x' for i = 1, 40 do d = d .. d end return #d end\n"
    "  if what == 'concat' then\n"
    "    local t = {} for i = 1, 3000 do t[i] = s end return #table.concat(t)\n"
    "  end\n"
    "  if what == 'sort' then table.sort(...) return 1 end\n"
    "  if what == 'pcall' then while true do pcall(function() while true do end end) end end\n"
    "  if what == 'pcall_find' then\n"
    "    while true do pcall(string.find, s, catastrophic) end\n"
    "  end\n"
    "  if what == 'xpcall' then\n"
    "    while true do xpcall(function() while true do end end, function(e) return e end) end\n"
    "  end\n"
    "  if what == 'json' then\n"
    "    local t, big = {}, s:rep(30) for i = 1, 10000 do t[i] = big end\n"
    "    return #counterd.json.encode(t)\n"
    "  end\n"
    "  if what == 'spawn' then counterd.spawn(function() while true do end end) end\n"
    "  if what == 'every' then counterd.every(10, function() while true do end end) end\n"
    "  if what == 'ok' then return #s:gsub('%-%d+$', '') end\n"
    "  return nil, 'unknown'\n"
    "end\n"
    "return M\n";

static struct host *runaway_host(int budget_ms)
{
    unit_lua_put("test_pattern", "policies", "routing", runaway_lua);
    struct host_info info = {"gateway", "test-1", "us-east", budget_ms};
    return host_new(unit_lua_dir("test_pattern"), &info, NULL);
}

/*
 * Calls routing.route(what, t) through counterd.policy, t a table of 2 million numbers in
 * a shuffled order made outside the policy (sorting it takes LuaJIT's C sort about a
 * second), and returns "<result>|<error>" with the time the call took in *ms.
 */
static const char *route(struct host *h, const char *what, double *ms)
{
    lua_State *L = host_state(h);
    lua_settop(L, 0);
    const char *code = "local what = ... local t = {} "
                       "if what == 'sort' then for i = 1, 2e6 do t[i] = (i * 7919) % 2000003 end "
                       "end local t0 = counterd.now_ms() "
                       "local r, err = counterd.policy('routing').route(what, t) "
                       "return tostring(r) .. '|' .. tostring(err), counterd.now_ms() - t0";
    if (luaL_loadstring(L, code) != 0)
        return lua_tostring(L, -1);
    lua_pushstring(L, what);
    if (lua_pcall(L, 1, 2, 0) != 0)
        return lua_tostring(L, -1);
    *ms = lua_tonumber(L, -1);
    return lua_tostring(L, -2);
}

static void test_budget_stops_runaway_calls(void)
{
    struct host *h = runaway_host(50);
    static const struct {
        const char *what, *error;
        int uses_budget; /* stopped by the clock, so it took the whole budget */
    } cases[] = {
        {"find", "policy ran longer than its budget of 50 ms", 1},
        {"method", "policy ran longer than its budget of 50 ms", 1},
        {"match", "policy ran longer than its budget of 50 ms", 1},
        {"gmatch", "policy ran longer than its budget of 50 ms", 1},
        {"gsub", "policy ran longer than its budget of 50 ms", 1},
        {"pcall", "policy ran longer than its budget of 50 ms", 1},
        {"pcall_find", "policy ran longer than its budget of 50 ms", 1},
        {"xpcall", "policy ran longer than its budget of 50 ms", 1},
        {"sort", "policy ran longer than its budget of 50 ms", 1},
        {"rep", "string.rep: a policy may build strings of at most 1048576 bytes", 0},
        {"rep_sep", "string.rep: a policy may build strings of at most 1048576 bytes", 0},
        /* Strings made in a loop: the heap cap, or the clock when the loop is slow
         * (valgrind), whichever comes first. */
        {"heap", NULL, 0},
        {"double", "policy grew the Lua heap past its limit of 64 MiB (not enough memory)", 0},
        {"concat", "policy grew the Lua heap past its limit of 64 MiB (not enough memory)", 0},
        {"json", "counterd.json.encode: a policy may encode at most 64 MiB of text", 0},
        {"spawn", "counterd.spawn: a policy cannot start tasks", 0},
        {"every", "counterd.every: a policy cannot start tasks", 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        unit_context("route(%s)", cases[i].what);
        double ms = -1;
        struct timespec c0, c1;
        clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &c0);
        const char *got = route(h, cases[i].what, &ms);
        clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &c1);
        /* "Soon" is CPU time (other processes' load does not count), 2 s at full speed and
         * as much more as the run is scaled down (valgrind): far below what an unbounded
         * call takes. */
        double cpu_ms =
            (double)(c1.tv_sec - c0.tv_sec) * 1e3 + (double)(c1.tv_nsec - c0.tv_nsec) / 1e6;
        double soon_ms = 2000 / (unit_g.scale < 1 ? unit_g.scale : 1);
        CHECK(strncmp(got, "nil|policy failed: ", 19) == 0);
        CHECK(!cases[i].error || strstr(got, cases[i].error) != NULL);
        /* Whatever stopped it (the clock, the heap cap), it stopped soon. */
        if (!cases[i].error && !strstr(got, "budget") && !strstr(got, "heap"))
            unit_fail(__FILE__, __LINE__, "not stopped by a limit: %s", got);
        if (cases[i].uses_budget)
            CHECK(ms >= 49);
        CHECK(ms >= 0 && cpu_ms < soon_ms);
        if (cpu_ms >= soon_ms || (cases[i].error && !strstr(got, cases[i].error)))
            fprintf(stderr, "    %s: %s in %.0f ms (%.0f ms of CPU)\n", cases[i].what, got, ms,
                    cpu_ms);
        /* The file:line of a matcher stopped by the clock is the policy's line (unless
         * it was called in a tail call, which leaves no line to name, as in LuaJIT). */
        if (!strcmp(cases[i].what, "gmatch"))
            CHECK(strstr(got, "routing.lua:8: policy ran longer") != NULL);
    }
    unit_context("after the runaway calls");
    double ms;
    /* Everything is back to normal: the policy still works, and the main state has no
     * deadline left over. */
    CHECK_STR_EQ(route(h, "ok", &ms), "30000|nil");
    lua_State *L = host_state(h);
    CHECK_STR_EQ(eval(L, "return tostring(#string.rep('x', 2^22))"), "4194304");
    CHECK_STR_EQ(eval(L, "return tostring(('a'):rep(300):find('.-.-b'))"), "nil");
    CHECK(sandbox_deadline_ms(L) == 0);
    host_free(h);
}

/* A policy changing its string table changes its own copy; the shared one is out of
 * reach through getmetatable(""). */
static void test_sandbox_libraries_are_copies(void)
{
    struct host *h = runaway_host(50);
    unit_lua_put(
        "test_pattern", "policies", "faults",
        "local M = {}\n"
        "function M.init()\n"
        "  string.upper = function() return 'evil' end\n"
        "  table.concat = nil\n"
        "  math.floor = function() return -1 end\n"
        "  bit.band = nil\n"
        "  M.mt = getmetatable('')\n"
        "  M.escaped = pcall(function()\n"
        "    getmetatable('').__index.upper = function() return 'evil' end end)\n"
        "end\n"
        "function M.decide() return 'deliver' end\n"
        "function M.probe()\n"
        "  return tostring(M.mt) .. ' ' .. tostring(M.escaped) .. ' ' ..\n"
        "    string.upper('x') .. ' ' .. tostring(table.concat) .. ' ' .. math.floor(2.5)\n"
        "end\n"
        "return M\n");
    char err[512];
    CHECK(host_load_policy(h, "faults", err, sizeof err) == 0);
    lua_State *L = host_state(h);
    CHECK_STR_EQ(eval(L, "return counterd.policy('faults').probe()"), "false false evil nil -1");
    /* The routing policy, the host's own state and s:upper() are untouched. */
    CHECK_STR_EQ(eval(L, "local r = counterd.policy('routing') "
                         "return ('x'):upper() .. string.upper('y') .. math.floor(2.5) .. "
                         "table.concat({1, 2}) .. bit.band(3, 1)"),
                 "XY2121");
    CHECK_STR_EQ(eval(L, "return tostring(getmetatable(''))"), "false");
    host_free(h);
}

/* The counterd table is shared by every sandbox: a policy reads it but cannot change it,
 * nor its sub-tables, for the others. */
static void test_sandbox_cannot_change_the_api(void)
{
    struct host *h = runaway_host(50);
    unit_lua_put(
        "test_pattern", "policies", "faults",
        "local M = {}\n"
        "local function try(f) local ok, e = pcall(f) return ok and 'changed' or e end\n"
        "function M.init()\n"
        "  M.top = try(function() counterd.now_ms = function() return 0 end end)\n"
        "  M.sub = try(function() counterd.shared.get = function() return 'evil' end end)\n"
        "  M.new = try(function() counterd.extra = 1 end)\n"
        "  rawset(counterd, 'now_ms', function() return -1 end) -- its own view only\n"
        "  M.own = counterd.now_ms()\n"
        "  counterd.shared.set('k', 'v')\n"
        "end\n"
        "function M.decide() return 'deliver' end\n"
        "function M.probe() return M.top .. '|' .. M.sub .. '|' .. M.new .. '|' .. M.own end\n"
        "return M\n");
    char err[512];
    CHECK(host_load_policy(h, "faults", err, sizeof err) == 0);
    lua_State *L = host_state(h);
    const char *probe = eval(L, "return counterd.policy('faults').probe()");
    CHECK(strstr(probe, "cannot be changed from a sandbox") != NULL);
    CHECK(strstr(probe, "counterd.now_ms cannot") != NULL);
    CHECK(strstr(probe, "counterd.get cannot") != NULL || strstr(probe, ".get cannot") != NULL);
    CHECK(strstr(probe, "counterd.extra cannot") != NULL);
    CHECK(strstr(probe, "|-1") != NULL);
    /* The shared table is intact for everyone else, and writes through its functions work. */
    CHECK_STR_EQ(eval(L, "return tostring(counterd.now_ms() > 0) .. counterd.shared.get('k') "
                         ".. tostring(counterd.extra)"),
                 "truevnil");
    host_free(h);
}

/* ---------------------------------------------------------------- speed */

/* ns per iteration of code (a chunk taking the iteration count and returning a number,
 * left in *result) in L. */
static double time_code(lua_State *L, const char *code, long iters, double *result)
{
    lua_settop(L, 0);
    if (luaL_loadstring(L, code) != 0) {
        fprintf(stderr, "bench: %s\n", lua_tostring(L, -1));
        return NAN;
    }
    lua_pushinteger(L, iters);
    double t0 = clock_mono_ms();
    if (lua_pcall(L, 1, 1, 0) != 0) {
        fprintf(stderr, "bench: %s\n", lua_tostring(L, -1));
        return NAN;
    }
    double ns = (clock_mono_ms() - t0) * 1e6 / (double)iters;
    *result = lua_tonumber(L, -1);
    return ns;
}

static void test_speed_against_luajit(void)
{
    states();
    /* Each loop uses what it computes, or the compiler would drop LuaJIT's plain find
     * (which it compiles) from the loop altogether. */
    static const struct {
        const char *name, *code;
    } cases[] = {
        {"routing gsub('%-%d+$')", "local s, n = 'us-east-1', 0 for i = 1, ... do "
                                   "n = n + #s:gsub('%-%d+$', '') end return n"},
        {"faults gsub+match('^(.-)%-%d+$')",
         "local s, n = 'us-west-2~a', 0 for i = 1, ... do "
         "local b = s:gsub('~.*$', '') n = n + #b:match('^(.-)%-%d+$') end return n"},
        {"web query gmatch+match",
         "local q, n = 'a=1&bb=22&counter=views', 0 for i = 1, ... do "
         "for pair in q:gmatch('[^&]+') do local k, v = pair:match('^([^=]*)=?(.*)$') "
         "n = n + #k + #v end end return n"},
        {"url decode gsub(fn)",
         "local s, n = 'a%20b%2Fc+d', 0 local char, tonumber = string.char, tonumber "
         "for i = 1, ... do local x = s:gsub('+', ' '):gsub('%%(%x%x)', "
         "function(h) return char(tonumber(h, 16)) end) n = n + #x end return n"},
        {"find('%S') in a body",
         "local s, n = string.rep(' ', 150) .. '{\"counter_name\":\"views\"}', 0 "
         "for i = 1, ... do n = n + s:find('%S') end return n"},
        {"plain find", "local t, n = {'the quick brown fox', 'a fox', 'fox'}, 0 "
                       "for i = 1, ... do n = n + t[i % 3 + 1]:find('fox', 1, true) end "
                       "return n"},
        {"name check find('[^%w_.:%-]')", "local s, n = 'counter_name.v2:x-y', 0 for i = 1, ... do "
                                          "n = n + (s:find('[^%w_.:%-]') or 1) end return n"},
        {"backtracking find('x.-y'), 200 bytes",
         "local s, n = ('x'):rep(200) .. 'y', 0 for i = 1, ... do n = n + s:find('x.-y') end "
         "return n"},
    };
    /* Timings of an instrumented build say nothing: there, one short run checks that both
     * compute the same. */
    long iters = 200000;
#if defined(__SANITIZE_ADDRESS__)
    iters = 10;
#endif
    if (unit_g.scale < 1)
        iters = 10;
    for (int jit = 0; jit <= 1; jit++) {
        double logsum = 0;
        int n = 0;
        luaJIT_setmode(ref_L, 0, LUAJIT_MODE_ENGINE | (jit ? LUAJIT_MODE_ON : LUAJIT_MODE_OFF));
        luaJIT_setmode(our_L, 0, LUAJIT_MODE_ENGINE | (jit ? LUAJIT_MODE_ON : LUAJIT_MODE_OFF));
        printf("  speed, JIT %s (ns per iteration; ours / LuaJIT's):\n", jit ? "on" : "off");
        for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
            /* Twice each, keeping the better: the first run warms caches and traces. */
            double ref_n, our_n;
            double ref = fmin(time_code(ref_L, cases[i].code, iters, &ref_n),
                              time_code(ref_L, cases[i].code, iters, &ref_n));
            double ours = fmin(time_code(our_L, cases[i].code, iters, &our_n),
                               time_code(our_L, cases[i].code, iters, &our_n));
            CHECK(ref == ref && ours == ours);
            CHECK_EQ_DBL(our_n, ref_n);
            printf("    %-40s luajit %8.1f  ours %8.1f  %.2fx\n", cases[i].name, ref, ours,
                   ours / ref);
            if (ref > 0 && ours > 0) {
                logsum += log(ours / ref);
                n++;
            }
        }
        printf("    geometric mean: %.2fx\n", n ? exp(logsum / n) : NAN);
    }
    luaJIT_setmode(ref_L, 0, LUAJIT_MODE_ENGINE | LUAJIT_MODE_ON);
    luaJIT_setmode(our_L, 0, LUAJIT_MODE_ENGINE | LUAJIT_MODE_ON);
}

UNIT_MAIN("pattern", UNIT_CASE(test_installed_and_right), UNIT_CASE(test_find_and_match_cases),
          UNIT_CASE(test_gsub_and_gmatch_cases), UNIT_CASE(test_generated_against_luajit),
          UNIT_CASE(test_budget_stops_runaway_calls), UNIT_CASE(test_sandbox_libraries_are_copies),
          UNIT_CASE(test_sandbox_cannot_change_the_api), UNIT_CASE(test_speed_against_luajit))
