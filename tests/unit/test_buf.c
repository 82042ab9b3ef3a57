/*
 * test_buf.c - unit tests of the byte buffer and its JSON writers (core/base/buf.c).
 *
 * buf_json_str is checked two ways: exact output for chosen inputs, and, for random
 * byte strings, that the output is one JSON string (read back with core/base/json.c)
 * whose value is the input with each invalid UTF-8 byte replaced by U+FFFD, as decided by
 * a validator written here. Never include this from core/.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/buf.h"
#include "base/json.h"
#include "unit.h"

/* The JSON text buf_json_str writes for s[0..n). */
static const char *json_str(struct buf *b, const char *s, size_t n)
{
    buf_reset(b);
    buf_json_str(b, s, n);
    return buf_cstr(b);
}

#define CHECK_JSON_STR(in, inlen, want)                                                            \
    do {                                                                                           \
        struct buf b_ = BUF_INIT;                                                                  \
        json_str(&b_, (in), (inlen));                                                              \
        CHECK_MEM_EQ(b_.data, b_.len, (want), strlen(want));                                       \
        buf_free(&b_);                                                                             \
    } while (0)

static void test_json_str_exact(void)
{
    CHECK_JSON_STR("", 0, "\"\"");
    CHECK_JSON_STR("views", 5, "\"views\"");
    CHECK_JSON_STR("a\"b", 3, "\"a\\\"b\"");
    CHECK_JSON_STR("a\\b", 3, "\"a\\\\b\"");
    CHECK_JSON_STR("\"\\", 2, "\"\\\"\\\\\"");
    CHECK_JSON_STR("/", 1, "\"/\"");
    /* Control characters: \u00XX, or the two-character forms JSON has for some. */
    CHECK_JSON_STR("\x01", 1, "\"\\u0001\"");
    CHECK_JSON_STR("\x1f", 1, "\"\\u001f\"");
    CHECK_JSON_STR("\b\f", 2, "\"\\u0008\\u000c\"");
    CHECK_JSON_STR("\x00", 1, "\"\\u0000\"");
    CHECK_JSON_STR("a\0b", 3, "\"a\\u0000b\"");
    CHECK_JSON_STR("\n\r\t", 3, "\"\\n\\r\\t\"");
    CHECK_JSON_STR("\x7f", 1, "\"\x7f\""); /* DEL needs no escape */
    /* Valid UTF-8 is kept as it is. */
    CHECK_JSON_STR("caf\xc3\xa9", 5, "\"caf\xc3\xa9\"");
    CHECK_JSON_STR("\xe2\x82\xac", 3, "\"\xe2\x82\xac\"");
    CHECK_JSON_STR("\xf0\x9f\x98\x80", 4, "\"\xf0\x9f\x98\x80\"");
    CHECK_JSON_STR("\xf4\x8f\xbf\xbf", 4, "\"\xf4\x8f\xbf\xbf\"");
    CHECK_JSON_STR("\xef\xbf\xbf\xed\x9f\xbf", 6, "\"\xef\xbf\xbf\xed\x9f\xbf\"");
    /* Invalid bytes become U+FFFD, one per byte that does not start a valid sequence. */
    CHECK_JSON_STR("\xff", 1, "\"\\ufffd\"");
    CHECK_JSON_STR("a\x80z", 3, "\"a\\ufffdz\"");
    CHECK_JSON_STR("\xc0\x80", 2, "\"\\ufffd\\ufffd\"");            /* overlong */
    CHECK_JSON_STR("\xe0\x80\x80", 3, "\"\\ufffd\\ufffd\\ufffd\""); /* overlong */
    CHECK_JSON_STR("\xed\xa0\x80", 3, "\"\\ufffd\\ufffd\\ufffd\""); /* surrogate */
    CHECK_JSON_STR("\xf4\x90\x80\x80", 4, "\"\\ufffd\\ufffd\\ufffd\\ufffd\"");
    CHECK_JSON_STR("\xe2\x82", 2, "\"\\ufffd\\ufffd\""); /* truncated at the end */
    CHECK_JSON_STR("\xe2\x82x", 3, "\"\\ufffd\\ufffdx\"");
    CHECK_JSON_STR("\xc3\xa9\xc3", 3, "\"\xc3\xa9\\ufffd\"");
    CHECK_JSON_STR("\xf0\x9f\x98", 3, "\"\\ufffd\\ufffd\\ufffd\"");
    /* Appends: what was there stays. */
    struct buf b = BUF_INIT;
    buf_puts(&b, "{\"k\":");
    buf_json_str(&b, "v\"", 2);
    buf_putc(&b, '}');
    CHECK_STR_EQ(buf_cstr(&b), "{\"k\":\"v\\\"\"}");
    buf_free(&b);
}

/* Independent strict UTF-8 decoder: length of the valid sequence at s, or 0. */
static size_t seq_len(const unsigned char *s, size_t n)
{
    unsigned c = s[0];
    size_t k;
    uint32_t cp, min;
    if (c < 0x80)
        return 1;
    if ((c & 0xE0) == 0xC0)
        k = 2, cp = c & 0x1F, min = 0x80;
    else if ((c & 0xF0) == 0xE0)
        k = 3, cp = c & 0x0F, min = 0x800;
    else if ((c & 0xF8) == 0xF0)
        k = 4, cp = c & 0x07, min = 0x10000;
    else
        return 0;
    if (k > n)
        return 0;
    for (size_t j = 1; j < k; j++) {
        if ((s[j] & 0xC0) != 0x80)
            return 0;
        cp = cp << 6 | (s[j] & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
        return 0;
    return k;
}

/* Random byte strings: the output parses as one JSON string equal to the input with
 * invalid bytes replaced. */
static void test_json_str_random(void)
{
    struct unit_rng rng;
    rng_init(&rng, "json_str_random");
    struct json_parser p;
    json_parser_init(&p);
    struct buf out = BUF_INIT, want = BUF_INIT;
    unsigned char in[96];
    long n = unit_iters(50000), bad = 0;
    for (long it = 0; it < n && bad < 10; it++) {
        size_t len = (size_t)rng_below(&rng, sizeof in + 1);
        for (size_t i = 0; i < len; i++) {
            uint64_t k = rng_below(&rng, 10);
            /* Bias towards bytes that matter: controls, quotes, UTF-8 lead bytes. */
            in[i] = k < 3   ? (unsigned char)rng_below(&rng, 256)
                    : k < 5 ? (unsigned char)(0x80 + rng_below(&rng, 0x80))
                    : k < 6 ? (unsigned char)rng_below(&rng, 0x20)
                    : k < 7 ? (unsigned char)"\"\\/"[rng_below(&rng, 3)]
                            : (unsigned char)(0x20 + rng_below(&rng, 0x60));
        }
        /* Sometimes splice in valid multi-byte sequences. */
        if (len >= 4 && rng_below(&rng, 2)) {
            static const char *valid[] = {"\xc3\xa9",     "\xe2\x82\xac", "\xf0\x9f\x98\x80",
                                          "\xed\x9f\xbf", "\xee\x80\x80", "\xf4\x8f\xbf\xbf"};
            const char *v = valid[rng_below(&rng, 6)];
            size_t at = (size_t)rng_below(&rng, len - 3);
            memcpy(in + at, v, strlen(v) <= len - at ? strlen(v) : len - at);
        }
        buf_reset(&want);
        for (size_t i = 0; i < len;) {
            size_t k = seq_len(in + i, len - i);
            if (k) {
                buf_append(&want, in + i, k);
                i += k;
            } else {
                buf_append(&want, "\xef\xbf\xbd", 3);
                i++;
            }
        }
        json_str(&out, (const char *)in, len);
        const struct json *v = json_parse(&p, out.data, out.len);
        if (!v || v->type != JSON_STR || v->len != want.len ||
            (want.len && memcmp(v->u.s, want.data, want.len) != 0)) {
            bad++;
            unit_fail(__FILE__, __LINE__, "buf_json_str output does not read back (%s)",
                      v ? "value differs" : p.err);
            unit_print_bytes(stderr, (const char *)in, len);
            fprintf(stderr, "\n   -> ");
            unit_print_bytes(stderr, out.data, out.len);
            fprintf(stderr, "\n");
        }
        /* Nothing but printable ASCII and valid UTF-8 leaves the writer. */
        for (size_t i = 0; i < out.len; i++)
            if ((unsigned char)out.data[i] < 0x20) {
                bad++;
                unit_fail(__FILE__, __LINE__, "raw control byte 0x%02x in output",
                          (unsigned char)out.data[i]);
                break;
            }
    }
    CHECK_EQ_I64(bad, 0);
    json_parser_free(&p);
    buf_free(&out);
    buf_free(&want);
}

static void test_numbers(void)
{
    struct buf b = BUF_INIT;
    buf_i64(&b, INT64_MIN);
    CHECK_STR_EQ(buf_cstr(&b), "-9223372036854775808");
    buf_reset(&b);
    buf_i64(&b, INT64_MAX);
    CHECK_STR_EQ(buf_cstr(&b), "9223372036854775807");
    buf_reset(&b);
    buf_i64(&b, 0);
    buf_putc(&b, ' ');
    buf_i64(&b, -1);
    buf_putc(&b, ' ');
    buf_i64(&b, INT64_MIN + 1);
    buf_putc(&b, ' ');
    buf_u64(&b, UINT64_MAX);
    buf_putc(&b, ' ');
    buf_u64(&b, 0);
    buf_putc(&b, ' ');
    buf_i64(&b, 10);
    CHECK_STR_EQ(buf_cstr(&b), "0 -1 -9223372036854775807 18446744073709551615 0 10");

    /* Against printf, for every magnitude. */
    struct unit_rng rng;
    rng_init(&rng, "numbers");
    char want[32];
    long bad = 0;
    for (long i = 0; i < unit_iters(20000); i++) {
        int64_t x = (int64_t)rng_u64(&rng) >> rng_below(&rng, 64);
        buf_reset(&b);
        buf_i64(&b, x);
        snprintf(want, sizeof want, "%" PRId64, x);
        if (b.len != strlen(want) || memcmp(b.data, want, b.len) != 0)
            bad++;
    }
    CHECK_EQ_I64(bad, 0);

    buf_reset(&b);
    buf_json_ms(&b, 1.234);
    buf_putc(&b, ' ');
    buf_json_ms(&b, 2.5);
    buf_putc(&b, ' ');
    buf_json_ms(&b, 0);
    buf_putc(&b, ' ');
    buf_json_ms(&b, NAN);
    buf_putc(&b, ' ');
    buf_json_ms(&b, INFINITY);
    buf_putc(&b, ' ');
    buf_json_ms(&b, 1234567.125);
    CHECK_STR_EQ(buf_cstr(&b), "1.23 2.50 0.00 0.00 0.00 1234567.13");

    buf_reset(&b);
    buf_json_double(&b, 0.1);
    CHECK_EQ_DBL(strtod(buf_cstr(&b), NULL), 0.1);
    buf_reset(&b);
    buf_json_double(&b, -1e300);
    CHECK_EQ_DBL(strtod(buf_cstr(&b), NULL), -1e300);
    buf_reset(&b);
    buf_json_double(&b, NAN);
    buf_putc(&b, ' ');
    buf_json_double(&b, -INFINITY);
    CHECK_STR_EQ(buf_cstr(&b), "0 0");
    buf_free(&b);
}

static void test_printf_growth(void)
{
    struct buf b = BUF_INIT;
    /* From empty, far past the first allocation. */
    char *big = malloc(10001);
    for (int i = 0; i < 10000; i++)
        big[i] = (char)('a' + i % 26);
    big[10000] = '\0';
    buf_printf(&b, "<%s>", big);
    CHECK_EQ_U64(b.len, 10002);
    CHECK_EQ_I64(b.data[0], '<');
    CHECK_MEM_EQ(b.data + 1, 10000, big, 10000);
    CHECK_EQ_I64(b.data[10001], '>');
    CHECK(b.cap > b.len);

    /* Appends that cross the capacity at every offset. */
    for (size_t fill = 0; fill < 600; fill += 7) {
        buf_free(&b);
        for (size_t i = 0; i < fill; i++)
            buf_putc(&b, 'x');
        size_t cap0 = b.cap;
        buf_printf(&b, "%d-%s-%" PRId64, 42, big + 9950, INT64_MIN);
        char want[128];
        int wl = snprintf(want, sizeof want, "%d-%s-%" PRId64, 42, big + 9950, INT64_MIN);
        CHECK_EQ_U64(b.len, fill + (size_t)wl);
        CHECK_MEM_EQ(b.data + fill, b.len - fill, want, (size_t)wl);
        for (size_t i = 0; i < fill; i++)
            if (b.data[i] != 'x') {
                unit_fail(__FILE__, __LINE__, "byte %zu overwritten (fill %zu, cap %zu)", i, fill,
                          cap0);
                break;
            }
    }
    /* Many small printfs. */
    buf_free(&b);
    struct buf want = BUF_INIT;
    for (int i = 0; i < 5000; i++) {
        buf_printf(&b, "%d,", i);
        char t[16];
        int l = snprintf(t, sizeof t, "%d,", i);
        buf_append(&want, t, (size_t)l);
    }
    CHECK_MEM_EQ(b.data, b.len, want.data, want.len);
    /* An empty format adds nothing. */
    size_t len0 = b.len;
    buf_printf(&b, "%s", "");
    CHECK_EQ_U64(b.len, len0);
    /* buf_cstr terminates without changing len, also on an empty buffer. */
    CHECK_EQ_I64(buf_cstr(&b)[b.len], 0);
    CHECK_EQ_U64(b.len, len0);
    struct buf e = BUF_INIT;
    CHECK_STR_EQ(buf_cstr(&e), "");
    CHECK_EQ_U64(e.len, 0);
    buf_free(&e);
    buf_free(&want);
    buf_free(&b);
    free(big);
}

static void test_append_reserve(void)
{
    struct buf b = BUF_INIT;
    buf_append(&b, "", 0);
    CHECK_EQ_U64(b.len, 0);
    buf_append(&b, "ab\0cd", 5);
    CHECK_MEM_EQ(b.data, b.len, "ab\0cd", 5);
    char *w = buf_reserve(&b, 100000);
    CHECK(b.cap >= b.len + 100000);
    memset(w, 'z', 100000);
    b.len += 100000;
    CHECK_EQ_I64(b.data[5], 'z');
    CHECK_EQ_I64(b.data[100004], 'z');
    CHECK_MEM_EQ(b.data, 5, "ab\0cd", 5);
    buf_reset(&b);
    CHECK_EQ_U64(b.len, 0);
    CHECK(b.cap >= 100005); /* reset keeps the memory */
    buf_puts(&b, "again");
    CHECK_STR_EQ(buf_cstr(&b), "again");
    buf_free(&b);
    CHECK(b.data == NULL);
    CHECK_EQ_U64(b.len, 0);
    CHECK_EQ_U64(b.cap, 0);
    buf_free(&b); /* twice is fine */
}

static void test_consume(void)
{
    struct buf b = BUF_INIT;
    buf_puts(&b, "0123456789");
    buf_consume(&b, 0);
    CHECK_STR_EQ(buf_cstr(&b), "0123456789");
    buf_consume(&b, 3);
    CHECK_STR_EQ(buf_cstr(&b), "3456789");
    CHECK_EQ_U64(b.len, 7);
    buf_consume(&b, 6);
    CHECK_STR_EQ(buf_cstr(&b), "9");
    buf_consume(&b, 1);
    CHECK_EQ_U64(b.len, 0);
    buf_puts(&b, "abc");
    buf_consume(&b, 100); /* more than there is */
    CHECK_EQ_U64(b.len, 0);
    buf_puts(&b, "xyz");
    CHECK_STR_EQ(buf_cstr(&b), "xyz");
    /* A large buffer consumed in uneven steps keeps its order. */
    buf_reset(&b);
    for (int i = 0; i < 100000; i++)
        buf_putc(&b, (char)(i % 251));
    size_t off = 0, step = 1;
    long bad = 0;
    while (b.len) {
        if ((unsigned char)b.data[0] != off % 251)
            bad++;
        buf_consume(&b, step);
        off += step;
        step = step * 3 % 1009 + 1;
    }
    CHECK_EQ_I64(bad, 0);
    struct buf e = BUF_INIT;
    buf_consume(&e, 5); /* on an empty buffer */
    CHECK_EQ_U64(e.len, 0);
    buf_free(&b);
}

UNIT_MAIN("test_buf", UNIT_CASE(test_json_str_exact), UNIT_CASE(test_json_str_random),
          UNIT_CASE(test_numbers), UNIT_CASE(test_printf_growth), UNIT_CASE(test_append_reserve),
          UNIT_CASE(test_consume))
