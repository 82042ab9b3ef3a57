/*
 * buf.h - a growable byte buffer and the JSON writing helpers built on it.
 *
 * Every answer counterd writes is assembled in a struct buf: it is reset, not freed,
 * between requests, so the hot path allocates nothing once warm. The JSON helpers write
 * RFC 8259 text directly (no DOM) and escape every string they are given.
 */
#ifndef COUNTERD_BASE_BUF_H
#define COUNTERD_BASE_BUF_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

struct buf {
    char *data;
    size_t len;
    size_t cap;
};

#define BUF_INIT                                                                                   \
    {                                                                                              \
        NULL, 0, 0                                                                                 \
    }

void buf_free(struct buf *b);
static inline void buf_reset(struct buf *b)
{
    b->len = 0;
}

/* Makes room for n more bytes and returns where they go; the caller then adds n to len. */
char *buf_reserve(struct buf *b, size_t n);
void buf_append(struct buf *b, const void *p, size_t n);
void buf_puts(struct buf *b, const char *s);
void buf_putc(struct buf *b, char c);
void buf_printf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void buf_vprintf(struct buf *b, const char *fmt, va_list ap);
void buf_i64(struct buf *b, int64_t v);
void buf_u64(struct buf *b, uint64_t v);
/* Frees the storage when it grew past keep bytes (after a one-off large answer), so one
 * big request does not pin its memory for the life of the process. Empties b. */
void buf_trim(struct buf *b, size_t keep);
/* Removes the first n bytes, moving the rest to the front. */
void buf_consume(struct buf *b, size_t n);
/* Returns a NUL-terminated view of the contents (the NUL is not counted in len). */
const char *buf_cstr(struct buf *b);

/* JSON: a quoted, escaped string. Invalid UTF-8 bytes are written as U+FFFD. */
void buf_json_str(struct buf *b, const char *s, size_t n);
/* JSON: a number with at most two decimals, as API.md asks for times in ms. */
void buf_json_ms(struct buf *b, double ms);
/* JSON: a double printed with enough digits to round-trip (no NaN/Inf: those become 0). */
void buf_json_double(struct buf *b, double v);

#endif
