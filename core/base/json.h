/*
 * json.h - a strict JSON reader with exact 64-bit integers.
 *
 * Counts are signed 64-bit integers and the API must tell 1 from 1.5 and 2^63 from
 * 2^63-1, which a double-based reader cannot. This reader keeps integers exact, rejects
 * what RFC 8259 rejects (and invalid UTF-8, and nesting deeper than JSON_MAX_DEPTH), and
 * builds a small tree in an arena that is reset, not freed, between requests.
 * It never allocates per value on the heap once warm, and never reads past len.
 */
#ifndef COUNTERD_BASE_JSON_H
#define COUNTERD_BASE_JSON_H

#include <stddef.h>
#include <stdint.h>

#define JSON_MAX_DEPTH 64

enum json_type {
    JSON_NULL,
    JSON_FALSE,
    JSON_TRUE,
    JSON_INT, /* an integer literal that fits int64_t: u.i (and num) are exact */
    JSON_NUM, /* any other number: num only */
    JSON_STR,
    JSON_ARR,
    JSON_OBJ,
};

/* Flags on a value. */
#define JSON_F_BIGINT 1u  /* JSON_NUM written as an integer, outside the int64_t range */
#define JSON_F_HAS_NUL 2u /* JSON_STR containing a U+0000 character */

struct json_member;

struct json {
    uint8_t type;
    uint8_t flags;
    uint32_t len; /* bytes of a string, items of an array, members of an object */
    double num;   /* JSON_INT and JSON_NUM */
    union {
        int64_t i;                   /* JSON_INT */
        const char *s;               /* JSON_STR: decoded UTF-8, NUL-terminated */
        struct json *items;          /* JSON_ARR */
        struct json_member *members; /* JSON_OBJ, in document order */
    } u;
};

struct json_member {
    const char *key; /* decoded, NUL-terminated */
    uint32_t key_len;
    uint8_t key_flags;
    struct json val;
};

struct json_arena_chunk;

/* A reusable parser: its arena and scratch stack live until json_parser_free. */
struct json_parser {
    struct json_arena_chunk *chunks;
    struct json_member *stack;
    size_t stack_len, stack_cap;
    char err[128];
};

void json_parser_init(struct json_parser *p);
void json_parser_free(struct json_parser *p);

/*
 * Parses text[0..len) as one JSON value. The tree stays valid until the next parse or
 * json_parser_free.
 * @return the root on success; NULL on failure with a sentence in p->err
 *         (e.g. "unexpected character 'x' at offset 12").
 */
const struct json *json_parse(struct json_parser *p, const char *text, size_t len);

/* The value of the first member named key, or NULL (also when obj is not an object). */
const struct json *json_get(const struct json *obj, const char *key);

const char *json_type_name(int type);

#endif
