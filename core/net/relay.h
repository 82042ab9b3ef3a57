/*
 * relay.h - a TCP relay: every connection accepted on one address is joined to a new
 * connection to another (the wire role's way to make a region in its own network
 * namespace answer on the host's loopback, as the original lab's ports do).
 *
 * Bytes are copied both ways with back-pressure (a side that does not read stops the
 * other from being read); an end that closes is closed on the other side once what it
 * sent is written. Nothing is parsed: any TCP protocol passes.
 */
#ifndef COUNTERD_NET_RELAY_H
#define COUNTERD_NET_RELAY_H

#include <stddef.h>
#include <stdint.h>

struct event_base;
struct relay;

struct relay_stats {
    uint64_t accepted;  /* connections accepted */
    uint64_t failed;    /* of which the connection to the target failed */
    uint64_t bytes_in;  /* from the clients to the target */
    uint64_t bytes_out; /* from the target to the clients */
    int open;           /* pairs open now */
};

/*
 * Listens on listen_addr ("host:port", IPv4) and relays to target ("host:port").
 * @return the relay, or NULL with a sentence in err (e.g. the port is taken).
 */
struct relay *relay_new(struct event_base *base, const char *listen_addr, const char *target,
                        char *err, size_t errlen);
/* Closes the listener and every open pair. */
void relay_free(struct relay *r);
void relay_stats(const struct relay *r, struct relay_stats *out);
const char *relay_listen_addr(const struct relay *r);
const char *relay_target(const struct relay *r);

#endif
