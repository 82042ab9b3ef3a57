/*
 * url.h - small helpers for request targets: percent-decoding and query parameters.
 *
 * The one query-string decoder of counterd: the C routes read parameters with
 * url_query_get, and the Lua roles through counterd.query (core/lua/api_url.c), so both
 * agree. In a query string '+' is a space (as HTML forms and Python's parse_qs read it);
 * a '%' not followed by two hex digits is a bad escape, which the caller answers with a
 * 400 naming the parameter (url_query_bad_detail). Nothing here allocates.
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
 * The same for a query string's names and values: '+' decodes to a space.
 * @return the decoded length, URL_QUERY_BAD on a bad escape, URL_QUERY_LONG when out is
 * too small.
 */
long url_form_decode(const char *src, size_t len, char *out, size_t cap);

#define URL_QUERY_ABSENT (-1) /* no such parameter */
#define URL_QUERY_BAD (-2)    /* a '%' not followed by two hex digits */
#define URL_QUERY_LONG (-3)   /* the decoded value does not fit the caller's buffer */

/* One "name=value" of a query string, still encoded; has_value is 0 for a bare "name". */
struct url_param {
    const char *name, *value;
    size_t name_len, value_len;
    int has_value;
};

/*
 * Steps through a query string ("a=1&b=2"): *cursor starts at the query, and each call
 * fills p with the next parameter (empty pieces, as in "a=1&&b=2", are skipped).
 * @return 1 with p filled, 0 at the end.
 */
int url_query_next(const char **cursor, struct url_param *p);

/*
 * Finds parameter name (the first of repeated ones) in a query string and decodes its
 * value into out, '+' as a space.
 * @return the value's length (0 for "a" or "a="), URL_QUERY_ABSENT, URL_QUERY_BAD or
 * URL_QUERY_LONG.
 */
long url_query_get(const char *query, const char *name, char *out, size_t cap);

/* Writes the 400 detail for a bad escape in parameter name (as given, at most 64 bytes of
 * it) into out, NUL-terminated: the one wording the C and the Lua routes answer. */
void url_query_bad_detail(const char *name, size_t name_len, char *out, size_t cap);

#endif
