/*
 * wire.h - the wire role: the lab's network between regions when it is real
 * (`scripts/lab up --net`, docs/API.md "The wire").
 *
 * Each region runs in a network namespace of its own; the wire owns one TUN device in
 * each and one on the host, all in one /24 (region i at .i+1, the host at .254). Every
 * IPv4 packet a namespace sends to another end is read here and written to that end's
 * device after the one-way delay of its link (source end, destination end), in order per
 * link, from a bounded queue (a full queue drops, counted); a cut link drops everything.
 * So every process and every TCP connection (counterd's /sync, etcd's Raft) sees the
 * same WAN. The links between regions take their delay and cut from lua/policies/
 * faults.lua (faults.link), re-asked every tick so a reload or a counterd.shared change
 * applies, and from each region node's partition switch (its /health, polled): a
 * partitioned region is cut from the other regions, never from the host. The control
 * API can set a link's delay or cut it. The wire also relays host TCP ports into the
 * namespaces (WIRE_RELAY), so 127.0.0.1:8001 still reaches us-east.
 *
 * It never looks past the IPv4 header and never delivers a packet between two regions
 * on a cut link.
 */
#ifndef COUNTERD_ROLES_WIRE_H
#define COUNTERD_ROLES_WIRE_H

#include <stddef.h>

struct event_base;
struct config;
struct wire;

/* @return the running wire, or NULL with a sentence in err (no root, no namespace...). */
struct wire *wire_new(struct event_base *base, const struct config *cfg, char *err, size_t errlen);
/* Closes the devices (they disappear), the relays and the server. */
void wire_free(struct wire *w);

#endif
