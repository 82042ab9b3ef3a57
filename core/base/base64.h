/*
 * base64.h - standard base64 (RFC 4648 section 4, with padding), the encoding etcd's JSON
 * gateway uses for keys and values.
 *
 * The decoder is strict: it accepts only the canonical encoding (padding required, no
 * white space, unused bits zero), so a value that reads back decodes to the bytes that were
 * written and nothing else. Never allocates except through the buf it is given.
 */
#ifndef COUNTERD_BASE_BASE64_H
#define COUNTERD_BASE_BASE64_H

#include <stddef.h>

#include "buf.h"

/* Appends the encoding of src[0..n) to out (4 characters per 3 bytes, padded). */
void base64_encode(struct buf *out, const void *src, size_t n);

/* The bytes the encoding of n bytes decodes to at most. */
#define BASE64_DECODED_MAX(n) ((n) / 4 * 3)

/*
 * Decodes src[0..n) into out (room for cap bytes).
 * @return the number of bytes written; -1 when src is not canonical base64 or does not fit.
 */
long base64_decode(const char *src, size_t n, void *out, size_t cap);

#endif
