/*
 * json.c - strict JSON reader with exact 64-bit integers (see json.h).
 *
 * A recursive-descent parser over a bounded depth. Children of an array or object are
 * collected on one scratch stack shared by all levels and copied into the arena when the
 * container closes, so a document costs one arena walk and no per-value malloc.
 */
#include "json.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hex.h"
#include "mem.h"

/* ---------------------------------------------------------------- arena */

#define ARENA_CHUNK 65536

struct json_arena_chunk {
    struct json_arena_chunk *next;
    size_t used, cap;
    _Alignas(16) unsigned char data[];
};

static void *arena_alloc(struct json_parser *p, size_t n)
{
    n = (n + 15) & ~(size_t)15;
    struct json_arena_chunk *c = p->chunks;
    if (!c || c->cap - c->used < n) {
        size_t cap = n > ARENA_CHUNK ? n : ARENA_CHUNK;
        struct json_arena_chunk *nc = xmalloc(sizeof *nc + cap);
        nc->used = 0;
        nc->cap = cap;
        if (c && cap > ARENA_CHUNK) {
            /* A big one-off block goes behind the current chunk so it keeps filling. */
            nc->next = c->next;
            c->next = nc;
        } else {
            nc->next = c;
            p->chunks = nc;
        }
        c = nc;
    }
    void *r = c->data + c->used;
    c->used += n;
    return r;
}

/* Keeps one standard chunk for the next document and frees the rest. */
static void arena_reset(struct json_parser *p)
{
    struct json_arena_chunk *keep = NULL, *c = p->chunks;
    while (c) {
        struct json_arena_chunk *next = c->next;
        if (!keep && c->cap == ARENA_CHUNK) {
            keep = c;
            keep->used = 0;
            keep->next = NULL;
        } else {
            free(c);
        }
        c = next;
    }
    p->chunks = keep;
}

void json_parser_init(struct json_parser *p)
{
    memset(p, 0, sizeof *p);
}

void json_parser_free(struct json_parser *p)
{
    arena_reset(p);
    free(p->chunks);
    free(p->stack);
    memset(p, 0, sizeof *p);
}

/* ---------------------------------------------------------------- parser */

struct cursor {
    struct json_parser *p;
    const unsigned char *s, *end, *start;
    int depth;
};

static int fail(struct cursor *c, const char *what)
{
    size_t off = (size_t)(c->s - c->start);
    if (c->s >= c->end)
        snprintf(c->p->err, sizeof c->p->err, "%s: unexpected end of input at offset %zu", what,
                 off);
    else if (*c->s >= 0x20 && *c->s < 0x7f)
        snprintf(c->p->err, sizeof c->p->err, "%s: unexpected character '%c' at offset %zu", what,
                 *c->s, off);
    else
        snprintf(c->p->err, sizeof c->p->err, "%s: unexpected byte 0x%02x at offset %zu", what,
                 *c->s, off);
    return -1;
}

static void skip_ws(struct cursor *c)
{
    while (c->s < c->end && (*c->s == ' ' || *c->s == '\t' || *c->s == '\n' || *c->s == '\r'))
        c->s++;
}

static int read_u4(struct cursor *c, unsigned *out)
{
    if (c->end - c->s < 4)
        return fail(c, "bad \\u escape");
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        int h = hex_val((unsigned char)c->s[i]);
        if (h < 0) {
            c->s += i;
            return fail(c, "bad \\u escape");
        }
        v = v << 4 | (unsigned)h;
    }
    c->s += 4;
    *out = v;
    return 0;
}

static size_t put_utf8(unsigned char *o, unsigned cp)
{
    if (cp < 0x80) {
        o[0] = (unsigned char)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (unsigned char)(0xC0 | cp >> 6);
        o[1] = (unsigned char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (unsigned char)(0xE0 | cp >> 12);
        o[1] = (unsigned char)(0x80 | (cp >> 6 & 0x3F));
        o[2] = (unsigned char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (unsigned char)(0xF0 | cp >> 18);
    o[1] = (unsigned char)(0x80 | (cp >> 12 & 0x3F));
    o[2] = (unsigned char)(0x80 | (cp >> 6 & 0x3F));
    o[3] = (unsigned char)(0x80 | (cp & 0x3F));
    return 4;
}

/* Length of a valid UTF-8 sequence starting at s, 0 if invalid. */
static size_t utf8_len(const unsigned char *s, const unsigned char *end)
{
    size_t n = (size_t)(end - s);
    unsigned char b = s[0];
    if (b >= 0xC2 && b <= 0xDF)
        return n >= 2 && (s[1] & 0xC0) == 0x80 ? 2 : 0;
    if (b >= 0xE0 && b <= 0xEF) {
        if (n < 3 || (s[1] & 0xC0) != 0x80 || (s[2] & 0xC0) != 0x80)
            return 0;
        if ((b == 0xE0 && s[1] < 0xA0) || (b == 0xED && s[1] > 0x9F))
            return 0;
        return 3;
    }
    if (b >= 0xF0 && b <= 0xF4) {
        if (n < 4 || (s[1] & 0xC0) != 0x80 || (s[2] & 0xC0) != 0x80 || (s[3] & 0xC0) != 0x80)
            return 0;
        if ((b == 0xF0 && s[1] < 0x90) || (b == 0xF4 && s[1] > 0x8F))
            return 0;
        return 4;
    }
    return 0;
}

/* Parses a string (c->s at the opening quote) into the arena. */
/* The code point of a \u escape (c at its hex digits), a surrogate pair joined.
 * @return 0, or -1 on a bad or unpaired escape. */
static int read_u_escape(struct cursor *c, unsigned *out)
{
    unsigned cp = 0;
    if (read_u4(c, &cp) < 0)
        return -1;
    if (cp >= 0xD800 && cp <= 0xDBFF) {
        unsigned lo;
        if (c->end - c->s < 2 || c->s[0] != '\\' || c->s[1] != 'u')
            return fail(c, "unpaired surrogate in string");
        c->s += 2;
        if (read_u4(c, &lo) < 0)
            return -1;
        if (lo < 0xDC00 || lo > 0xDFFF)
            return fail(c, "unpaired surrogate in string");
        cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
    } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
        return fail(c, "unpaired surrogate in string");
    }
    *out = cp;
    return 0;
}

/* Decodes one escape (c just past its backslash) at *o, which it advances; a \u0000 sets
 * JSON_F_HAS_NUL in *fl. @return 0, or -1 on a bad escape. */
static int read_escape(struct cursor *c, unsigned char **o, uint8_t *fl)
{
    if (c->s >= c->end)
        return fail(c, "bad escape");
    unsigned char ch = *c->s++;
    unsigned cp = 0;
    switch (ch) {
    case '"': *(*o)++ = '"'; break;
    case '\\': *(*o)++ = '\\'; break;
    case '/': *(*o)++ = '/'; break;
    case 'b': *(*o)++ = '\b'; break;
    case 'f': *(*o)++ = '\f'; break;
    case 'n': *(*o)++ = '\n'; break;
    case 'r': *(*o)++ = '\r'; break;
    case 't': *(*o)++ = '\t'; break;
    case 'u':
        if (read_u_escape(c, &cp) < 0)
            return -1;
        if (cp == 0)
            *fl |= JSON_F_HAS_NUL;
        *o += put_utf8(*o, cp);
        break;
    default: c->s--; return fail(c, "bad escape");
    }
    return 0;
}

/* The slow path of parse_string: decodes from c (past the opening quote) into d, which
 * holds the decoded form (never longer than the source). @return 0, or -1. */
static int decode_string(struct cursor *c, unsigned char *d, const char **out, uint32_t *out_len,
                         uint8_t *flags)
{
    unsigned char *o = d;
    uint8_t fl = 0;
    while (c->s < c->end) {
        unsigned char ch = *c->s;
        if (ch == '"') {
            c->s++;
            *o = '\0';
            *out = (const char *)d;
            *out_len = (uint32_t)(o - d);
            *flags = fl;
            return 0;
        }
        if (ch < 0x20)
            return fail(c, "control character in string");
        if (ch >= 0x80) {
            size_t k = utf8_len(c->s, c->end);
            if (!k)
                return fail(c, "invalid UTF-8 in string");
            memcpy(o, c->s, k);
            o += k;
            c->s += k;
        } else if (ch != '\\') {
            *o++ = ch;
            c->s++;
        } else {
            c->s++;
            if (read_escape(c, &o, &fl) < 0)
                return -1;
        }
    }
    return fail(c, "unterminated string");
}

/* Nonzero when one of the 8 bytes of w is '"', '\\', a control byte (< 0x20) or not ASCII:
 * the exact test, word-wide (a borrow only marks bytes above a byte that matches). */
static uint64_t word_needs_care(uint64_t w)
{
    const uint64_t ones = 0x0101010101010101ULL, high = 0x8080808080808080ULL;
    uint64_t quote = w ^ (ones * '"'), bslash = w ^ (ones * '\\');
    uint64_t zero_like = (quote - ones) | (bslash - ones) | (w - ones * 0x20);
    return (zero_like & ~w & high) | (w & high);
}

static int parse_string(struct cursor *c, const char **out, uint32_t *out_len, uint8_t *flags)
{
    c->s++; /* opening quote */
    const unsigned char *q = c->s;
    /* Fast scan: find the closing quote and whether anything needs decoding; plain runs
     * are passed over 8 bytes at a time, the word holding the stop byte byte by byte. */
    for (uint64_t w; c->end - q >= 8; q += 8) {
        memcpy(&w, q, sizeof w);
        if (word_needs_care(w))
            break;
    }
    while (q < c->end && *q != '"' && *q != '\\' && *q >= 0x20 && *q < 0x80)
        q++;
    size_t upper = (size_t)(q - c->s);
    if (q < c->end && *q == '"') {
        char *d = arena_alloc(c->p, upper + 1);
        memcpy(d, c->s, upper);
        d[upper] = '\0';
        *out = d;
        *out_len = (uint32_t)upper;
        *flags = 0;
        c->s = q + 1;
        return 0;
    }
    /* Slow path: the decoded form is never longer than the source text. */
    const unsigned char *e = q;
    while (e < c->end && *e != '"') {
        if (*e == '\\')
            e++;
        e++;
    }
    if (e >= c->end) {
        c->s = c->end;
        return fail(c, "unterminated string");
    }
    size_t cap = (size_t)(e - c->s);
    if (cap > UINT32_MAX)
        return fail(c, "string too long");
    return decode_string(c, arena_alloc(c->p, cap + 1), out, out_len, flags);
}

static int is_digit(unsigned char ch)
{
    return ch >= '0' && ch <= '9';
}

static int parse_number(struct cursor *c, struct json *v)
{
    const unsigned char *start = c->s;
    int neg = 0, is_int = 1;
    if (*c->s == '-') {
        neg = 1;
        c->s++;
    }
    if (c->s >= c->end || !is_digit(*c->s))
        return fail(c, "bad number");
    if (*c->s == '0') {
        c->s++;
    } else {
        while (c->s < c->end && is_digit(*c->s))
            c->s++;
    }
    const unsigned char *int_end = c->s;
    if (c->s < c->end && *c->s == '.') {
        is_int = 0;
        c->s++;
        if (c->s >= c->end || !is_digit(*c->s))
            return fail(c, "bad number");
        while (c->s < c->end && is_digit(*c->s))
            c->s++;
    }
    if (c->s < c->end && (*c->s == 'e' || *c->s == 'E')) {
        is_int = 0;
        c->s++;
        if (c->s < c->end && (*c->s == '+' || *c->s == '-'))
            c->s++;
        if (c->s >= c->end || !is_digit(*c->s))
            return fail(c, "bad number");
        while (c->s < c->end && is_digit(*c->s))
            c->s++;
    }
    if (is_int) {
        /* Accumulate negatively so INT64_MIN is representable. */
        int64_t acc = 0;
        int overflow = 0;
        for (const unsigned char *d = start + neg; d < int_end; d++) {
            int digit = *d - '0';
            if (acc < (INT64_MIN + digit) / 10) {
                overflow = 1;
                break;
            }
            acc = acc * 10 - digit;
        }
        if (!overflow && !neg && acc == INT64_MIN)
            overflow = 1;
        if (!overflow) {
            v->type = JSON_INT;
            v->u.i = neg ? acc : -acc;
            v->num = (double)v->u.i;
            return 0;
        }
        v->flags |= JSON_F_BIGINT;
    }
    size_t n = (size_t)(c->s - start);
    char small[64];
    char *tmp = n < sizeof small ? small : arena_alloc(c->p, n + 1);
    memcpy(tmp, start, n);
    tmp[n] = '\0';
    v->type = JSON_NUM;
    v->num = strtod(tmp, NULL);
    return 0;
}

static int push_member(struct cursor *c, struct json_member *m)
{
    struct json_parser *p = c->p;
    if (p->stack_len == p->stack_cap) {
        p->stack_cap = p->stack_cap ? p->stack_cap * 2 : 64;
        p->stack = xrealloc(p->stack, p->stack_cap * sizeof *p->stack);
    }
    p->stack[p->stack_len++] = *m;
    return 0;
}

static int parse_value(struct cursor *c, struct json *v);

static int literal(struct cursor *c, const char *word, size_t n)
{
    if ((size_t)(c->end - c->s) < n || memcmp(c->s, word, n) != 0)
        return fail(c, "bad literal");
    c->s += n;
    return 0;
}

static int parse_container(struct cursor *c, struct json *v, int is_obj)
{
    if (++c->depth > JSON_MAX_DEPTH) {
        snprintf(c->p->err, sizeof c->p->err, "nesting deeper than %d levels at offset %zu",
                 JSON_MAX_DEPTH, (size_t)(c->s - c->start));
        return -1;
    }
    c->s++; /* [ or { */
    size_t base = c->p->stack_len;
    unsigned char close = is_obj ? '}' : ']';
    skip_ws(c);
    if (c->s < c->end && *c->s == close) {
        c->s++;
    } else {
        for (;;) {
            struct json_member m;
            memset(&m, 0, sizeof m);
            skip_ws(c);
            if (is_obj) {
                if (c->s >= c->end || *c->s != '"')
                    return fail(c, "expected a member name");
                if (parse_string(c, &m.key, &m.key_len, &m.key_flags) < 0)
                    return -1;
                skip_ws(c);
                if (c->s >= c->end || *c->s != ':')
                    return fail(c, "expected ':'");
                c->s++;
            }
            if (parse_value(c, &m.val) < 0)
                return -1;
            push_member(c, &m);
            skip_ws(c);
            if (c->s < c->end && *c->s == ',') {
                c->s++;
                continue;
            }
            if (c->s < c->end && *c->s == close) {
                c->s++;
                break;
            }
            return fail(c, is_obj ? "expected ',' or '}'" : "expected ',' or ']'");
        }
    }
    size_t n = c->p->stack_len - base;
    if (n > UINT32_MAX)
        return fail(c, "too many members");
    v->type = is_obj ? JSON_OBJ : JSON_ARR;
    v->len = (uint32_t)n;
    if (is_obj) {
        struct json_member *m = n ? arena_alloc(c->p, n * sizeof *m) : NULL;
        if (n)
            memcpy(m, c->p->stack + base, n * sizeof *m);
        v->u.members = m;
    } else {
        struct json *items = n ? arena_alloc(c->p, n * sizeof *items) : NULL;
        for (size_t i = 0; i < n; i++)
            items[i] = c->p->stack[base + i].val;
        v->u.items = items;
    }
    c->p->stack_len = base;
    c->depth--;
    return 0;
}

static int parse_value(struct cursor *c, struct json *v)
{
    skip_ws(c);
    if (c->s >= c->end)
        return fail(c, "expected a value");
    switch (*c->s) {
    case '{': return parse_container(c, v, 1);
    case '[': return parse_container(c, v, 0);
    case '"': {
        v->type = JSON_STR;
        return parse_string(c, &v->u.s, &v->len, &v->flags);
    }
    case 't': v->type = JSON_TRUE; return literal(c, "true", 4);
    case 'f': v->type = JSON_FALSE; return literal(c, "false", 5);
    case 'n': v->type = JSON_NULL; return literal(c, "null", 4);
    default:
        if (*c->s == '-' || is_digit(*c->s))
            return parse_number(c, v);
        return fail(c, "expected a value");
    }
}

const struct json *json_parse(struct json_parser *p, const char *text, size_t len)
{
    arena_reset(p);
    p->stack_len = 0;
    p->err[0] = '\0';
    struct cursor c = {p, (const unsigned char *)text, (const unsigned char *)text + len,
                       (const unsigned char *)text, 0};
    struct json *root = arena_alloc(p, sizeof *root);
    memset(root, 0, sizeof *root);
    if (parse_value(&c, root) < 0)
        return NULL;
    skip_ws(&c);
    if (c.s != c.end) {
        fail(&c, "trailing characters after the value");
        return NULL;
    }
    return root;
}

const struct json *json_get(const struct json *obj, const char *key)
{
    if (!obj || obj->type != JSON_OBJ)
        return NULL;
    size_t kl = strlen(key);
    for (uint32_t i = 0; i < obj->len; i++) {
        const struct json_member *m = &obj->u.members[i];
        if (m->key_len == kl && memcmp(m->key, key, kl) == 0)
            return &m->val;
    }
    return NULL;
}

const char *json_type_name(int type)
{
    static const char *names[] = {"null",   "boolean", "boolean", "integer",
                                  "number", "string",  "array",   "object"};
    return type >= 0 && type <= JSON_OBJ ? names[type] : "unknown";
}
