/*
 * hex.h - the value of one hexadecimal digit, for every reader of hex in the core
 * (percent-escapes in URLs, \u escapes in JSON, trace ids in a traceparent).
 *
 * Header only: two tiny pure functions, inlined where they are read. Never allocates,
 * never reads more than the one character it is given.
 */
#ifndef COUNTERD_BASE_HEX_H
#define COUNTERD_BASE_HEX_H

/* @return the value 0-15 of c as a hex digit (either case), or -1 when it is none. */
static inline int hex_val(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* @return the value 0-15 of c as a lower-case hex digit, or -1 (upper case included):
 * for formats that allow lower case only, such as W3C's traceparent. */
static inline int hex_val_lower(int c)
{
    return c >= 'A' && c <= 'F' ? -1 : hex_val(c);
}

#endif
