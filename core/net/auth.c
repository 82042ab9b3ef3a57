/*
 * auth.c - the admin token check (see auth.h).
 */
#include "auth.h"

#include <string.h>
#include <strings.h>

/* Compares in time that depends only on the lengths, not on where they differ. */
static int token_equal(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    unsigned char diff = (unsigned char)(la != lb);
    for (size_t i = 0; i < la; i++)
        diff |= (unsigned char)(a[i] ^ b[i % (lb ? lb : 1)]);
    return diff == 0;
}

int auth_refuse_unauthorized(struct http_request *req, const char *token)
{
    if (!token || !*token)
        return 0;
    const char *h = http_request_header(req, "authorization");
    if (h && strncasecmp(h, "Bearer ", 7) == 0 && token_equal(h + 7, token))
        return 0;
    static const char body[] = "{\"detail\":\"this endpoint needs Authorization: Bearer <admin "
                               "token>\",\"error\":\"unauthorized\"}";
    http_respond_ex(req, 401, "application/json", "WWW-Authenticate: Bearer\r\n", body,
                    sizeof body - 1);
    return 1;
}
