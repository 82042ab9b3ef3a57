/*
 * auth.h - the admin token: "Authorization: Bearer <token>" on admin endpoints.
 */
#ifndef COUNTERD_NET_AUTH_H
#define COUNTERD_NET_AUTH_H

#include "http.h"

/*
 * With a token set, answers 401 {"error":"unauthorized"} unless req carries it (the scheme
 * "Bearer" in any case, as HTTP's schemes are; the token exactly, compared in constant
 * time). token NULL or "": nothing is required.
 * @return 1 when req was answered (refused), 0 to go on.
 */
int auth_refuse_unauthorized(struct http_request *req, const char *token);

#endif
