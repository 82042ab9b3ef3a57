/*
 * tun.h - a TUN device made inside a network namespace, for the link emulator (the wire
 * role, core/roles/wire.c).
 *
 * The device is opened after entering the namespace (setns), so it lives there while its
 * descriptor stays with this process, which then returns to its own namespace. The device
 * is not persistent: it disappears when the descriptor is closed (or the process dies),
 * so nothing is left behind. Linux only; needs CAP_NET_ADMIN.
 */
#ifndef COUNTERD_NET_TUN_H
#define COUNTERD_NET_TUN_H

#include <stddef.h>
#include <stdint.h>

/*
 * Makes TUN device ifname (IFF_TUN | IFF_NO_PI: bare IP packets) in the namespace netns
 * (a name under /var/run/netns, as `ip netns add` makes them; NULL or "" for this
 * process's own), gives it addr/prefix (host byte order), brings it up, and brings the
 * namespace's loopback up too.
 * @return the device's non-blocking descriptor, or -1 with a sentence in err (the
 *         process is back in its own namespace either way).
 */
int tun_open(const char *netns, const char *ifname, uint32_t addr, int prefix, char *err,
             size_t errlen);

#endif
