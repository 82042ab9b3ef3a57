/*
 * api_pattern.c - string.find, string.match, string.gmatch and string.gsub that a policy's
 * time budget can stop.
 *
 * LuaJIT's own matcher is C, and the watchdog hook only runs between VM instructions: a
 * pattern with a few '-' or '*' quantifiers backtracks polynomially, and
 * ("a"):rep(30000):find(".-.-.-.-b") would hold the event loop for hours. This matcher
 * implements the same language (Lua 5.1's patterns) with LuaJIT's results, quirks and
 * error messages, counts its steps, and every STEP_CHUNK of them asks the host whether the
 * running policy call is past its deadline (sandbox_check_budget), which raises the same
 * error the hook does. Outside a policy call there is no deadline: the functions behave
 * like the originals.
 *
 * An error (a malformed pattern, the budget) longjmps out of any depth of the recursion,
 * so nothing here may own heap memory: the matcher's state lives on the C stack and
 * gsub's output in a luaL_Buffer, which keeps its pieces on the Lua stack.
 *
 * The pattern is read up to its first '\0', as LuaJIT does ("%z" matches a zero byte in
 * the subject); the subject may hold any bytes. Lua strings end with a '\0' past their
 * length, which %f and %b read at the end of the subject, as the original does.
 */
#define _GNU_SOURCE /* memmem */
#include <lauxlib.h>
#include <lua.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "host.h"
#include "sandbox.h"
#include "api.h"

#define MAX_CAPTURES 32 /* LUA_MAXCAPTURES */
#define MAX_DEPTH 200   /* LuaJIT's bound on the matcher's recursion: "pattern too complex" */
#define CAP_OPEN (-1)
#define CAP_POSITION (-2)
/* A step is one call of match() or one character looked at by a loop; a few nanoseconds.
 * Checking the clock every STEP_CHUNK of them costs well under 1% of the time. */
#define STEP_CHUNK 8192

struct capture {
    const char *at;
    ptrdiff_t len; /* or CAP_OPEN, CAP_POSITION */
};

struct matcher {
    lua_State *L;
    const char *subject, *end; /* *end is the string's terminating '\0' */
    int depth, ncap;
    long steps; /* left before the next look at the clock */
    struct capture cap[MAX_CAPTURES];
};

static void matcher_init(struct matcher *m, lua_State *L, const char *s, size_t len)
{
    m->L = L;
    m->subject = s;
    m->end = s + len;
    m->depth = 0;
    m->ncap = 0;
    m->steps = STEP_CHUNK;
}

__attribute__((noinline)) static void out_of_steps(struct matcher *m)
{
    m->steps = STEP_CHUNK;
    sandbox_check_budget(m->L);
}

static inline void spend(struct matcher *m, long n)
{
    m->steps -= n;
    if (m->steps <= 0)
        out_of_steps(m);
}

/* ---------------------------------------------------------------- classes */

/*
 * %a %c %d %l %p %s %u %w %x %z, ASCII only like LuaJIT's (no locale). char_kinds[c] holds
 * the kinds character c belongs to, class_kinds[l] the kinds class letter l stands for
 * (0 for a letter that is no class: "%q" is a 'q'). Filled once by classes_init.
 */
enum {
    K_ALPHA = 1,
    K_CNTRL = 2,
    K_DIGIT = 4,
    K_LOWER = 8,
    K_PUNCT = 16,
    K_SPACE = 32,
    K_UPPER = 64,
    K_XDIGIT = 128,
    K_ZERO = 256,
};
static uint16_t char_kinds[256], class_kinds[256];

static void classes_init(void)
{
    for (int c = 0; c < 256; c++) {
        int k = 0;
        if (c >= 'a' && c <= 'z')
            k |= K_ALPHA | K_LOWER;
        if (c >= 'A' && c <= 'Z')
            k |= K_ALPHA | K_UPPER;
        if (c >= '0' && c <= '9')
            k |= K_DIGIT | K_XDIGIT;
        if ((c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'))
            k |= K_XDIGIT;
        if (c < 32 || c == 127)
            k |= K_CNTRL;
        if (c == ' ' || (c >= '\t' && c <= '\r'))
            k |= K_SPACE;
        if ((c >= 33 && c <= 47) || (c >= 58 && c <= 64) || (c >= 91 && c <= 96) ||
            (c >= 123 && c <= 126))
            k |= K_PUNCT;
        if (c == 0)
            k |= K_ZERO;
        char_kinds[c] = (uint16_t)k;
    }
    static const struct {
        char letter;
        uint16_t kinds;
    } letters[] = {{'a', K_ALPHA},  {'c', K_CNTRL}, {'d', K_DIGIT}, {'l', K_LOWER},
                   {'p', K_PUNCT},  {'s', K_SPACE}, {'u', K_UPPER}, {'w', K_ALPHA | K_DIGIT},
                   {'x', K_XDIGIT}, {'z', K_ZERO}};
    for (size_t i = 0; i < sizeof letters / sizeof *letters; i++) {
        class_kinds[(unsigned char)letters[i].letter] = letters[i].kinds;
        class_kinds[(unsigned char)letters[i].letter - 'a' + 'A'] = letters[i].kinds;
    }
}

/* Whether c is in class cl (the letter after '%'); an upper-case letter is the
 * complement, and any other character stands for itself. */
static inline int in_class(int c, int cl)
{
    int kinds = class_kinds[cl];
    if (!kinds)
        return cl == c;
    int yes = (char_kinds[c] & kinds) != 0;
    return cl <= 'Z' ? !yes : yes;
}

/* Whether c is in the set that opens at p ('[') and closes at last (its ']'). */
static inline __attribute__((always_inline)) int in_set(int c, const char *p, const char *last)
{
    int yes = 1;
    p++;
    if (*p == '^') {
        yes = 0;
        p++;
    }
    for (; p < last; p++) {
        if (*p == '%') {
            p++;
            if (in_class(c, (unsigned char)*p))
                return yes;
        } else if (p[1] == '-' && p + 2 < last) {
            if ((unsigned char)p[0] <= c && c <= (unsigned char)p[2])
                return yes;
            p += 2;
        } else if ((unsigned char)*p == c) {
            return yes;
        }
    }
    return !yes;
}

/* One past the single-character class at p ('.', a char, %x or a set). A set's first
 * character is taken literally, so "[]]" is the set of ']'. */
static const char *class_end(struct matcher *m, const char *p)
{
    char c = *p++;
    if (c == '%') {
        if (*p == '\0')
            luaL_error(m->L, "malformed pattern (ends with '%%')");
        return p + 1;
    }
    if (c == '[') {
        if (*p == '^')
            p++;
        do {
            if (*p == '\0')
                luaL_error(m->L, "malformed pattern (missing ']')");
            c = *p++;
            if (c == '%' && *p != '\0')
                p++;
        } while (*p != ']');
        return p + 1;
    }
    return p;
}

/* Whether the character c matches the class from p to ep (one past it). */
static inline int class_matches(int c, const char *p, const char *ep)
{
    switch (*p) {
    case '.': return 1;
    case '%': return in_class(c, (unsigned char)p[1]);
    case '[': return in_set(c, p, ep - 1);
    default: return (unsigned char)*p == c;
    }
}

/* ---------------------------------------------------------------- matching */

static const char *match(struct matcher *m, const char *s, const char *p);

/* How many characters from s on, at most to the end, the class p..ep matches. */
static ptrdiff_t span(struct matcher *m, const char *s, const char *p, const char *ep)
{
    const char *q = s, *end = m->end;
    switch (*p) {
    case '.': q = end; break;
    case '%':
        while (q < end && in_class((unsigned char)*q, (unsigned char)p[1]))
            q++;
        break;
    case '[':
        while (q < end && in_set((unsigned char)*q, p, ep - 1))
            q++;
        break;
    default:
        while (q < end && *q == *p)
            q++;
    }
    return q - s;
}

/* c* as long as possible, then giving back one at a time. */
static const char *longest(struct matcher *m, const char *s, const char *p, const char *ep)
{
    ptrdiff_t n = span(m, s, p, ep);
    spend(m, n);
    for (; n >= 0; n--) {
        const char *e = match(m, s + n, ep + 1);
        if (e)
            return e;
    }
    return NULL;
}

/* c- as short as possible, taking one more at a time. */
static const char *shortest(struct matcher *m, const char *s, const char *p, const char *ep)
{
    for (;;) {
        const char *e = match(m, s, ep + 1);
        if (e)
            return e;
        if (s < m->end && class_matches((unsigned char)*s, p, ep))
            s++;
        else
            return NULL;
    }
}

__attribute__((noinline)) static const char *open_capture(struct matcher *m, const char *s,
                                                          const char *p, ptrdiff_t kind)
{
    if (m->ncap >= MAX_CAPTURES)
        luaL_error(m->L, "too many captures");
    m->cap[m->ncap].at = s;
    m->cap[m->ncap].len = kind;
    m->ncap++;
    const char *e = match(m, s, p);
    if (!e)
        m->ncap--;
    return e;
}

__attribute__((noinline)) static const char *close_capture(struct matcher *m, const char *s,
                                                           const char *p)
{
    int i = m->ncap - 1;
    while (i >= 0 && m->cap[i].len != CAP_OPEN)
        i--;
    if (i < 0)
        luaL_error(m->L, "invalid pattern capture");
    m->cap[i].len = s - m->cap[i].at;
    const char *e = match(m, s, p);
    if (!e)
        m->cap[i].len = CAP_OPEN;
    return e;
}

/* %1-%9: the text of a closed capture again. A position capture never matches. */
__attribute__((noinline)) static const char *back_reference(struct matcher *m, const char *s,
                                                            int digit)
{
    int i = digit - '1';
    if (i < 0 || i >= m->ncap || m->cap[i].len == CAP_OPEN)
        luaL_error(m->L, "invalid capture index");
    size_t len = (size_t)m->cap[i].len;
    if ((size_t)(m->end - s) < len)
        return NULL;
    spend(m, (long)(len / 16));
    return memcmp(m->cap[i].at, s, len) == 0 ? s + len : NULL;
}

/* %bxy at p (just past "%b"): from an x to its balancing y. */
__attribute__((noinline)) static const char *balanced(struct matcher *m, const char *s,
                                                      const char *p)
{
    if (p[0] == '\0' || p[1] == '\0')
        luaL_error(m->L, "unbalanced pattern");
    if (*s != p[0])
        return NULL;
    const char *start = s;
    int level = 1;
    while (++s < m->end) {
        if (*s == p[1]) {
            if (--level == 0) {
                spend(m, s - start);
                return s + 1;
            }
        } else if (*s == p[0]) {
            level++;
        }
    }
    spend(m, s - start);
    return NULL;
}

/* %f[set] at p (just past "%f"): where the set begins to match at s, between the
 * character before s (or '\0' at the start) and the one at s. @return the pattern after
 * it, or NULL. */
__attribute__((noinline)) static const char *frontier(struct matcher *m, const char *s,
                                                      const char *p)
{
    if (*p != '[')
        luaL_error(m->L, "missing '[' after '%%f' in pattern");
    const char *ep = class_end(m, p);
    int before = s == m->subject ? 0 : (unsigned char)s[-1];
    if (in_set(before, p, ep - 1) || !in_set((unsigned char)*s, p, ep - 1))
        return NULL;
    return ep;
}

/*
 * Matches the pattern p at s: one past the end of the match, or NULL. A single item
 * without a quantifier loops here; quantifiers and captures recurse, at most MAX_DEPTH
 * deep (LuaJIT's bound), so the C stack stays small whatever the pattern.
 */
static const char *match(struct matcher *m, const char *s, const char *p)
{
    if (++m->depth > MAX_DEPTH)
        luaL_error(m->L, "pattern too complex");
    spend(m, 1);
    for (;;) {
        switch (*p) {
        case '\0': goto out; /* the whole pattern matched */
        case '(':
            if (p[1] == ')')
                s = open_capture(m, s, p + 2, CAP_POSITION);
            else
                s = open_capture(m, s, p + 1, CAP_OPEN);
            goto out;
        case ')': s = close_capture(m, s, p + 1); goto out;
        case '$':
            if (p[1] == '\0') { /* an anchor only at the very end */
                if (s != m->end)
                    s = NULL;
                goto out;
            }
            break;
        case '%':
            if (p[1] == 'b') {
                s = balanced(m, s, p + 2);
                if (!s)
                    goto out;
                p += 4;
                continue;
            }
            if (p[1] == 'f') {
                p = frontier(m, s, p + 2);
                if (!p) {
                    s = NULL;
                    goto out;
                }
                continue;
            }
            if (p[1] >= '0' && p[1] <= '9') {
                s = back_reference(m, s, (unsigned char)p[1]);
                if (!s)
                    goto out;
                p += 2;
                continue;
            }
            break;
        default: break;
        }
        /* A single-character class, perhaps with a quantifier. */
        const char *ep = class_end(m, p);
        int here = s < m->end && class_matches((unsigned char)*s, p, ep);
        switch (*ep) {
        case '?':
            if (here) {
                const char *e = match(m, s + 1, ep + 1);
                if (e) {
                    s = e;
                    goto out;
                }
            }
            p = ep + 1;
            continue;
        case '*': s = longest(m, s, p, ep); goto out;
        case '+': s = here ? longest(m, s + 1, p, ep) : NULL; goto out;
        case '-': s = shortest(m, s, p, ep); goto out;
        default:
            if (!here) {
                s = NULL;
                goto out;
            }
            s++;
            p = ep;
            continue;
        }
    }
out:
    m->depth--;
    return s;
}

/*
 * The byte a match must start with when the pattern opens with a plain character that
 * must be there ("a", "a+", not "a*", "%a", "(a"), or -1. Start positions holding another
 * byte can then be skipped with memchr: match() would fail there at once, with no error
 * to raise, since it reads nothing past that first character.
 */
static int first_byte(const char *p)
{
    switch (*p) {
    case '\0':
    case '^':
    case '$':
    case '*':
    case '+':
    case '?':
    case '.':
    case '(':
    case '[':
    case '%':
    case ')':
    case '-': return -1;
    default: break;
    }
    if (p[1] == '*' || p[1] == '?' || p[1] == '-')
        return -1;
    return (unsigned char)*p;
}

/* The first start position at or after s worth trying for first byte c (-1: any). */
static const char *next_start(struct matcher *m, const char *s, int c)
{
    if (c < 0 || s >= m->end)
        return s;
    const char *hit = memchr(s, c, (size_t)(m->end - s));
    const char *to = hit ? hit : m->end;
    spend(m, (to - s) / 64);
    return to;
}

/* ---------------------------------------------------------------- captures */

/* Pushes capture i; i 0 with no captures is the whole match s..e. */
static void push_capture(struct matcher *m, int i, const char *s, const char *e)
{
    if (i >= m->ncap) {
        if (i != 0)
            luaL_error(m->L, "invalid capture index");
        lua_pushlstring(m->L, s, (size_t)(e - s));
        return;
    }
    ptrdiff_t len = m->cap[i].len;
    if (len == CAP_OPEN)
        luaL_error(m->L, "unfinished capture");
    if (len == CAP_POSITION)
        lua_pushinteger(m->L, m->cap[i].at - m->subject + 1);
    else
        lua_pushlstring(m->L, m->cap[i].at, (size_t)len);
}

/* Pushes every capture, or the whole match when there are none and s is not NULL. */
static int push_captures(struct matcher *m, const char *s, const char *e)
{
    int n = m->ncap == 0 && s ? 1 : m->ncap;
    luaL_checkstack(m->L, n, "too many captures");
    for (int i = 0; i < n; i++)
        push_capture(m, i, s, e);
    return n;
}

/* ---------------------------------------------------------------- the functions */

/*
 * An optional integer argument, converted as LuaJIT's build converts it (the C cast it
 * uses leaves out-of-range values to the compiler, and the two functions differ):
 * find's and match's init truncate toward zero with anything outside the 32-bit range
 * (or NaN) becoming INT32_MIN; gsub's count truncates to 64 bits and keeps the low 32.
 */
static int32_t opt_int(lua_State *L, int narg, int32_t def)
{
    if (lua_isnoneornil(L, narg))
        return def;
    lua_Number n = luaL_checknumber(L, narg);
    if (n >= -2147483648.0 && n < 2147483648.0)
        return (int32_t)n;
    return INT32_MIN;
}

static int32_t opt_int_low32(lua_State *L, int narg, int32_t def)
{
    if (lua_isnoneornil(L, narg))
        return def;
    lua_Number n = luaL_checknumber(L, narg);
    if (n > -9223372036854775808.0 && n < 9223372036854775808.0)
        return (int32_t)(uint32_t)(uint64_t)(int64_t)n;
    return 0;
}

/* The characters that make find() use the matcher rather than a plain search (LuaJIT
 * looks at every byte, past a '\0' too). */
static int has_specials(const char *p, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        switch (p[i]) {
        case '^':
        case '$':
        case '*':
        case '+':
        case '?':
        case '.':
        case '(':
        case '[':
        case '%':
        case '-': return 1;
        default: break;
        }
    }
    return 0;
}

/*
 * A plain search. Short needles: memchr for the first byte, then memcmp, the fastest
 * for what policies look for. Longer ones: glibc's memmem, linear in the worst case,
 * where a first-byte scan is O(n * m) (a 500 kB needle of 'a's in a 1 MB subject of
 * 'a's would take minutes, and this runs in C, out of the hook's reach).
 */
static const char *search(const char *s, size_t len, const char *p, size_t plen)
{
    if (plen > 16 || plen == 0)
        return memmem(s, len, p, plen);
    const char *end = s + len;
    while ((size_t)(end - s) >= plen) {
        s = memchr(s, (unsigned char)p[0], (size_t)(end - s) - plen + 1);
        if (!s)
            return NULL;
        if (memcmp(s + 1, p + 1, plen - 1) == 0)
            return s;
        s++;
    }
    return NULL;
}

static int find_aux(lua_State *L, int find)
{
    size_t len, plen;
    const char *s = luaL_checklstring(L, 1, &len);
    const char *p = luaL_checklstring(L, 2, &plen);
    int64_t start = opt_int(L, 3, 1);
    if (start < 0)
        start += (int64_t)len;
    else
        start--;
    if (start < 0)
        start = 0;
    if ((uint64_t)start > len)
        start = (int64_t)len;
    if (find && (lua_toboolean(L, 4) || !has_specials(p, plen))) {
        const char *hit = search(s + start, len - (size_t)start, p, plen);
        if (hit) {
            lua_pushinteger(L, hit - s + 1);
            lua_pushinteger(L, (lua_Integer)(hit - s + (ptrdiff_t)plen));
            return 2;
        }
        lua_pushnil(L);
        return 1;
    }
    struct matcher m;
    matcher_init(&m, L, s, len);
    int anchor = *p == '^';
    if (anchor)
        p++;
    int c = anchor ? -1 : first_byte(p);
    const char *from = s + start;
    do {
        from = next_start(&m, from, c);
        m.ncap = 0;
        m.depth = 0;
        const char *e = match(&m, from, p);
        if (e) {
            if (!find)
                return push_captures(&m, from, e);
            lua_pushinteger(L, from - s + 1);
            lua_pushinteger(L, e - s);
            return push_captures(&m, NULL, NULL) + 2;
        }
    } while (from++ < m.end && !anchor);
    lua_pushnil(L);
    return 1;
}

static int l_find(lua_State *L)
{
    return find_aux(L, 1);
}

static int l_match(lua_State *L)
{
    return find_aux(L, 0);
}

/*
 * gmatch's iterator is a Lua closure, function() return step(state) end, made by
 * gmatch_factory_lua for each call, with state = {subject, pattern, where to go on}
 * (0-based). LuaJIT's compiler recognises a C closure by its identity, so a fresh C
 * closure per gmatch call (as the original makes) sends every loop over gmatch into
 * trace after trace; a Lua closure is recognised by its prototype, and step is one C
 * function. step is called in a tail call: an error names the loop's file:line.
 */
static const char gmatch_factory_lua[] = "local step = ...\n"
                                         "return function(s, p)\n"
                                         "  local state = {s, p, 0}\n"
                                         "  return function() return step(state) end\n"
                                         "end\n";

/* A pattern's '^' is a plain character here, as in Lua 5.1. */
static int gmatch_step(lua_State *L)
{
    lua_rawgeti(L, 1, 1);
    lua_rawgeti(L, 1, 2);
    lua_rawgeti(L, 1, 3);
    size_t len;
    const char *s = lua_tolstring(L, 2, &len);
    const char *p = lua_tostring(L, 3);
    size_t pos = (size_t)lua_tointeger(L, 4);
    if (pos > len)
        return 0;
    struct matcher m;
    matcher_init(&m, L, s, len);
    int c = first_byte(p);
    for (const char *from = s + pos; from <= m.end; from++) {
        from = next_start(&m, from, c);
        m.ncap = 0;
        m.depth = 0;
        const char *e = match(&m, from, p);
        if (e) {
            lua_Integer next = e - s;
            if (e == from)
                next++; /* an empty match: go on one further */
            lua_pushinteger(L, next);
            lua_rawseti(L, 1, 3);
            return push_captures(&m, from, e);
        }
    }
    return 0;
}

/* Upvalue 1: the factory. */
static int l_gmatch(lua_State *L)
{
    luaL_checkstring(L, 1);
    luaL_checkstring(L, 2);
    lua_settop(L, 2);
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    lua_call(L, 2, 1);
    return 1;
}

/* A replacement string: %0-%9 are captures (%0 and, without captures, %1 the whole
 * match), '%' before anything else stands for that character. */
static void add_string(struct matcher *m, luaL_Buffer *b, const char *s, const char *e)
{
    size_t rlen;
    const char *r = lua_tolstring(m->L, 3, &rlen);
    const char *rend = r + rlen;
    for (;;) {
        const char *pct = memchr(r, '%', (size_t)(rend - r));
        if (!pct) {
            luaL_addlstring(b, r, (size_t)(rend - r));
            return;
        }
        luaL_addlstring(b, r, (size_t)(pct - r));
        /* A '%' at the very end is followed by the string's '\0', which LuaJIT copies. */
        int c = (unsigned char)pct[1];
        if (c < '0' || c > '9') {
            luaL_addchar(b, (char)c);
        } else if (c == '0') {
            luaL_addlstring(b, s, (size_t)(e - s));
        } else {
            push_capture(m, c - '1', s, e);
            luaL_addvalue(b);
        }
        r = pct + 2;
        if (r > rend)
            return;
    }
}

static void add_value(struct matcher *m, luaL_Buffer *b, const char *s, const char *e, int tr)
{
    lua_State *L = m->L;
    if (tr == LUA_TFUNCTION) {
        lua_pushvalue(L, 3);
        int n = push_captures(m, s, e);
        lua_call(L, n, 1);
    } else if (tr == LUA_TTABLE) {
        push_capture(m, 0, s, e);
        lua_gettable(L, 3);
    } else {
        add_string(m, b, s, e);
        return;
    }
    if (!lua_toboolean(L, -1)) { /* nil or false: keep the original text */
        lua_pop(L, 1);
        luaL_addlstring(b, s, (size_t)(e - s));
    } else if (!lua_isstring(L, -1)) {
        luaL_error(L, "invalid replacement value (a %s)", luaL_typename(L, -1));
    } else {
        luaL_addvalue(b);
    }
}

static int l_gsub(lua_State *L)
{
    size_t len;
    const char *src = luaL_checklstring(L, 1, &len);
    const char *p = luaL_checkstring(L, 2);
    int tr = lua_type(L, 3);
    int32_t max = opt_int_low32(L, 4, (int32_t)(len + 1));
    luaL_argcheck(L,
                  tr == LUA_TNUMBER || tr == LUA_TSTRING || tr == LUA_TFUNCTION || tr == LUA_TTABLE,
                  3, "string/function/table expected");
    struct matcher m;
    matcher_init(&m, L, src, len);
    int anchor = *p == '^';
    if (anchor)
        p++;
    int c = anchor ? -1 : first_byte(p);
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    /* Text from copied to s is unmatched and not in the buffer yet. */
    const char *s = src, *copied = src;
    int32_t n = 0;
    while (n < max) {
        s = next_start(&m, s, c);
        m.ncap = 0;
        m.depth = 0;
        const char *e = match(&m, s, p);
        if (e) {
            n++;
            luaL_addlstring(&b, copied, (size_t)(s - copied));
            add_value(&m, &b, s, e, tr);
            copied = e;
        }
        if (e && e > s)
            s = e;
        else if (s < m.end)
            s++;
        else
            break;
        if (anchor)
            break;
    }
    luaL_addlstring(&b, copied, (size_t)(m.end - copied));
    luaL_pushresult(&b);
    lua_pushinteger(L, n);
    return 2;
}

void api_pattern_inject(lua_State *L)
{
    classes_init();
    lua_getglobal(L, "string");
    lua_pushcfunction(L, l_find);
    lua_setfield(L, -2, "find");
    lua_pushcfunction(L, l_match);
    lua_setfield(L, -2, "match");
    if (luaL_loadbuffer(L, gmatch_factory_lua, sizeof gmatch_factory_lua - 1, "=gmatch") != 0)
        lua_error(L); /* it compiles: only memory can be short here */
    lua_pushcfunction(L, gmatch_step);
    lua_call(L, 1, 1);
    lua_pushcclosure(L, l_gmatch, 1);
    lua_setfield(L, -2, "gmatch");
    lua_pushcfunction(L, l_gsub);
    lua_setfield(L, -2, "gsub");
    lua_pop(L, 1);
}
