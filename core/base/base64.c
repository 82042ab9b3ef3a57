/*
 * base64.c - standard base64 with padding (see base64.h).
 */
#include "base64.h"

#include <stdint.h>

static const char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

void base64_encode(struct buf *out, const void *src, size_t n)
{
    const unsigned char *s = src;
    char *d = buf_reserve(out, (n + 2) / 3 * 4);
    size_t k = 0;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)s[i] << 16;
        if (i + 1 < n)
            v |= (uint32_t)s[i + 1] << 8;
        if (i + 2 < n)
            v |= s[i + 2];
        d[k++] = alphabet[v >> 18];
        d[k++] = alphabet[(v >> 12) & 63];
        d[k++] = i + 1 < n ? alphabet[(v >> 6) & 63] : '=';
        d[k++] = i + 2 < n ? alphabet[v & 63] : '=';
    }
    out->len += k;
}

static int value_of(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+')
        return 62;
    if (c == '/')
        return 63;
    return -1;
}

long base64_decode(const char *src, size_t n, void *out, size_t cap)
{
    unsigned char *d = out;
    size_t k = 0;
    if (n % 4)
        return -1;
    for (size_t i = 0; i < n; i += 4) {
        int last = i + 4 == n;
        int pad = 0;
        if (last && src[i + 3] == '=')
            pad = src[i + 2] == '=' ? 2 : 1;
        uint32_t v = 0;
        for (int j = 0; j < 4 - pad; j++) {
            int x = value_of((unsigned char)src[i + (size_t)j]);
            if (x < 0)
                return -1;
            v = v << 6 | (uint32_t)x;
        }
        v <<= 6 * pad;
        /* Canonical: the bits the padding leaves unused are zero. */
        if ((pad == 1 && (v & 0xff)) || (pad == 2 && (v & 0xffff)))
            return -1;
        size_t bytes = 3 - (size_t)pad;
        if (k + bytes > cap)
            return -1;
        d[k++] = (unsigned char)(v >> 16);
        if (bytes > 1)
            d[k++] = (unsigned char)(v >> 8);
        if (bytes > 2)
            d[k++] = (unsigned char)v;
    }
    return (long)k;
}
