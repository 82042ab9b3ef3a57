/*
 * url.c - percent-decoding and query parameters (see url.h).
 */
#include "url.h"

#include <stdio.h>
#include <string.h>

#include "../base/hex.h"

/* The decoder of both forms: plus is the byte '+' decodes to. */
static long decode(const char *src, size_t len, char *out, size_t cap, char plus)
{
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        char c = src[i];
        if (c == '%') {
            if (i + 2 >= len)
                return URL_QUERY_BAD;
            int h = hex_val((unsigned char)src[i + 1]), l = hex_val((unsigned char)src[i + 2]);
            if (h < 0 || l < 0)
                return URL_QUERY_BAD;
            c = (char)(h << 4 | l);
            i += 2;
        } else if (c == '+') {
            c = plus;
        }
        if (o + 1 >= cap)
            return URL_QUERY_LONG;
        out[o++] = c;
    }
    if (cap)
        out[o] = '\0';
    return (long)o;
}

long url_decode(const char *src, size_t len, char *out, size_t cap)
{
    long n = decode(src, len, out, cap, '+');
    return n < 0 ? -1 : n;
}

long url_form_decode(const char *src, size_t len, char *out, size_t cap)
{
    return decode(src, len, out, cap, ' ');
}

int url_query_next(const char **cursor, struct url_param *p)
{
    const char *s = *cursor;
    while (s && *s == '&')
        s++;
    if (!s || !*s) {
        *cursor = s;
        return 0;
    }
    const char *amp = strchr(s, '&');
    size_t len = amp ? (size_t)(amp - s) : strlen(s);
    const char *eq = memchr(s, '=', len);
    p->name = s;
    p->name_len = eq ? (size_t)(eq - s) : len;
    p->has_value = eq != NULL;
    p->value = eq ? eq + 1 : s + len;
    p->value_len = eq ? len - p->name_len - 1 : 0;
    *cursor = amp ? amp + 1 : s + len;
    return 1;
}

long url_query_get(const char *query, const char *name, char *out, size_t cap)
{
    size_t nl = strlen(name);
    struct url_param p;
    while (url_query_next(&query, &p)) {
        if (p.name_len == nl && memcmp(p.name, name, nl) == 0)
            return url_form_decode(p.value, p.value_len, out, cap);
    }
    return URL_QUERY_ABSENT;
}

void url_query_bad_detail(const char *name, size_t name_len, char *out, size_t cap)
{
    int n = name_len > 64 ? 64 : (int)name_len;
    snprintf(out, cap,
             "query parameter %.*s has a bad percent-escape: '%%' must be followed by two "
             "hex digits",
             n, name);
}
