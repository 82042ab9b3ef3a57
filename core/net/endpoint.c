/*
 * endpoint.c - the endpoint list parser (see endpoint.h).
 */
#include "endpoint.h"

#include <stdio.h>
#include <string.h>

#define FORMS "host:port, http://host:port or name=http://host:port"

int endpoint_name_valid(const char *s, size_t len)
{
    if (len < 1 || len > ENDPOINT_NAME_MAX - 1)
        return 0;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '.' || c == ':' || c == '-'))
            return 0;
    }
    return 1;
}

/* A port: 1-5 digits, 1 to 65535. */
static int port_valid(const char *p, size_t len)
{
    if (len < 1 || len > 5)
        return 0;
    unsigned v = 0;
    for (size_t i = 0; i < len; i++) {
        if (p[i] < '0' || p[i] > '9')
            return 0;
        v = v * 10 + (unsigned)(p[i] - '0');
    }
    return v >= 1 && v <= 65535;
}

/*
 * Checks host[:port] (a name, an IPv4 address or a bracketed IPv6 one).
 * @return NULL when it is good, else why not.
 */
static const char *authority_problem(const char *a, size_t len, int need_port)
{
    size_t host_end;
    if (len && a[0] == '[') {
        const char *close = memchr(a, ']', len);
        if (!close || close == a + 1)
            return "its IPv6 address is not closed by ']'";
        host_end = (size_t)(close - a) + 1;
        for (size_t i = 1; i + 1 < host_end; i++)
            if (!strchr("0123456789abcdefABCDEF:.", a[i]))
                return "its IPv6 address has a character other than hex digits, ':' and '.'";
    } else {
        const char *colon = memchr(a, ':', len);
        host_end = colon ? (size_t)(colon - a) : len;
        if (host_end == 0)
            return "its host is empty";
        for (size_t i = 0; i < host_end; i++) {
            char c = a[i];
            if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '.' || c == '-' || c == '_'))
                return "its host has a character other than letters, digits, '.', '-' and '_'";
        }
    }
    if (host_end == len)
        return need_port ? "it has no port" : NULL;
    if (a[host_end] != ':')
        return "something follows its IPv6 address other than :port";
    if (!port_valid(a + host_end + 1, len - host_end - 1))
        return "its port is not a number from 1 to 65535";
    return NULL;
}

/* Parses one item p[0..n) into e. @return NULL, or why it is not an endpoint. */
static const char *parse_item(const char *p, size_t n, struct endpoint *e)
{
    memset(e, 0, sizeof *e);
    const char *eq = memchr(p, '=', n);
    const char *scheme = NULL;
    for (const char *s = p; s + 2 < p + n; s++)
        if (s[0] == ':' && s[1] == '/' && s[2] == '/') {
            scheme = s;
            break;
        }
    if (eq && scheme && eq > scheme)
        eq = NULL; /* an '=' in the URL's path or query is not a name */
    if (eq) {
        if (eq == p)
            return "its name (before '=') is empty";
        if (!endpoint_name_valid(p, (size_t)(eq - p)))
            return "its name must be 1-200 bytes of [A-Za-z0-9_.:-]";
        memcpy(e->name, p, (size_t)(eq - p));
        n -= (size_t)(eq + 1 - p);
        p = eq + 1;
    }
    if (n == 0)
        return "its address is empty";
    size_t auth_at = 0, auth_len;
    if (scheme) {
        size_t slen = (size_t)(scheme - p);
        if (!((slen == 4 && !strncmp(p, "http", 4)) || (slen == 5 && !strncmp(p, "https", 5))))
            return "its scheme is not http:// or https://";
        auth_at = slen + 3;
        const char *slash = memchr(p + auth_at, '/', n - auth_at);
        auth_len = (slash ? (size_t)(slash - p) : n) - auth_at;
    } else {
        if (memchr(p, '/', n))
            return "it has a path but no http:// scheme";
        auth_len = n;
    }
    const char *why = authority_problem(p + auth_at, auth_len, !scheme);
    if (why)
        return why;
    while (n > auth_at + auth_len && p[n - 1] == '/')
        n--;
    if ((scheme ? n : n + 7) >= sizeof e->url)
        return "it is longer than 500 bytes";
    snprintf(e->url, sizeof e->url, "%s%.*s", scheme ? "" : "http://", (int)n, p);
    snprintf(e->addr, sizeof e->addr, "%.*s", (int)auth_len, p + auth_at);
    return NULL;
}

int endpoint_list_parse(const char *var, const char *list, struct endpoint *out, int max, char *err,
                        size_t errlen)
{
    int count = 0;
    const char *p = list ? list : "";
    for (;;) {
        p += strspn(p, ", \t\n");
        if (!*p)
            return count;
        size_t n = strcspn(p, ", \t\n");
        if (count == max) {
            snprintf(err, errlen, "%s: more than %d endpoints", var, max);
            return -1;
        }
        const char *why = parse_item(p, n, &out[count]);
        if (why) {
            snprintf(err, errlen, "%s: '%.*s' is not %s: %s", var, (int)(n > 300 ? 300 : n), p,
                     FORMS, why);
            return -1;
        }
        for (int i = 0; i < count; i++)
            if (out[count].name[0] && !strcmp(out[i].name, out[count].name)) {
                snprintf(err, errlen, "%s: the name '%s' is given twice", var, out[i].name);
                return -1;
            }
        count++;
        p += n;
    }
}
