/*
 * url.h - small helpers for request targets: percent-decoding and query parameters.
 */
#ifndef COUNTERD_NET_URL_H
#define COUNTERD_NET_URL_H

#include <stddef.h>

/*
 * Percent-decodes src[0..len) into out (NUL-terminated, at most cap-1 bytes). '+' is
 * kept as is (paths do not use it for spaces).
 * @return the decoded length, or -1 on a bad escape or when out is too small.
 */
long url_decode(const char *src, size_t len, char *out, size_t cap);

/*
 * Finds parameter name in a query string ("a=1&b=2") and decodes its value into out.
 * @return the value's length (0 for "a" or "a="), or -1 when absent or undecodable.
 */
long url_query_get(const char *query, const char *name, char *out, size_t cap);

#endif
