/*
 * endpoint.h - one parser for every list of services a process is given: PEER_ENDPOINTS,
 * REGION_ENDPOINTS (or the lab's COUNTER_ENDPOINTS) and --peers/--regions.
 *
 * An item is written in one of the forms
 *   host:port                  the original lab's compose file (no scheme, no name)
 *   http://host:port[/path]    a URL without a name
 *   name=http://host:port      counterd's form, naming the region
 *   name=host:port
 * Items are separated by commas (blanks around them are ignored). An item without a name
 * leaves it empty: the process learns it from the service's /health (net/discover.h).
 * Never resolves or connects: this is syntax only.
 */
#ifndef COUNTERD_NET_ENDPOINT_H
#define COUNTERD_NET_ENDPOINT_H

#include <stddef.h>

#define ENDPOINT_NAME_MAX 201 /* 200 bytes of [A-Za-z0-9_.:-] and the NUL */
#define ENDPOINT_URL_MAX 512

struct endpoint {
    char name[ENDPOINT_NAME_MAX]; /* "" : not given (to be learned from /health) */
    char url[ENDPOINT_URL_MAX];   /* http://host:port, no trailing '/' */
    char addr[ENDPOINT_URL_MAX];  /* host:port, for views and logs while name is "" */
};

/*
 * Parses list into out[0..max). var names the setting in error messages.
 * @return the number of endpoints (0 for an empty or blank list), or -1 with a sentence
 *         in err naming var, the item and what is wrong with it.
 */
int endpoint_list_parse(const char *var, const char *list, struct endpoint *out, int max, char *err,
                        size_t errlen);

/* @return 1 when s is a valid region name (1-200 bytes of [A-Za-z0-9_.:-]), else 0. */
int endpoint_name_valid(const char *s, size_t len);

#endif
