/*
 * tun.c - TUN devices in network namespaces (see tun.h).
 */
#define _GNU_SOURCE
#include "tun.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <netinet/in.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

/* Sets ifname's flags up (and its address and mask when addr is not 0) through an AF_INET
 * socket of the current namespace. @return 0, or -1 with a sentence in err. */
static int if_up(const char *ifname, uint32_t addr, int prefix, char *err, size_t errlen)
{
    int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (s < 0) {
        snprintf(err, errlen, "socket: %s", strerror(errno));
        return -1;
    }
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    snprintf(ifr.ifr_name, IFNAMSIZ, "%s", ifname);
    const char *step = "SIOCSIFADDR";
    if (addr) {
        struct sockaddr_in *sin = (struct sockaddr_in *)&ifr.ifr_addr;
        sin->sin_family = AF_INET;
        sin->sin_addr.s_addr = htonl(addr);
        if (ioctl(s, SIOCSIFADDR, &ifr) < 0)
            goto fail;
        step = "SIOCSIFNETMASK";
        sin->sin_addr.s_addr = htonl(prefix ? 0xffffffffu << (32 - prefix) : 0);
        if (ioctl(s, SIOCSIFNETMASK, &ifr) < 0)
            goto fail;
    }
    step = "SIOCGIFFLAGS";
    if (ioctl(s, SIOCGIFFLAGS, &ifr) < 0)
        goto fail;
    ifr.ifr_flags |= IFF_UP | IFF_RUNNING;
    step = "SIOCSIFFLAGS";
    if (ioctl(s, SIOCSIFFLAGS, &ifr) < 0)
        goto fail;
    close(s);
    return 0;
fail:
    snprintf(err, errlen, "%s on %s: %s", step, ifname, strerror(errno));
    close(s);
    return -1;
}

/* Makes and configures the device in the current namespace. @return its fd, or -1. */
static int open_here(const char *ifname, uint32_t addr, int prefix, char *err, size_t errlen)
{
    int fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) {
        snprintf(err, errlen, "/dev/net/tun: %s", strerror(errno));
        return -1;
    }
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    ifr.ifr_flags = IFF_TUN | IFF_NO_PI;
    snprintf(ifr.ifr_name, IFNAMSIZ, "%s", ifname);
    if (ioctl(fd, TUNSETIFF, &ifr) < 0) {
        snprintf(err, errlen, "TUNSETIFF %s: %s%s", ifname, strerror(errno),
                 errno == EBUSY ? " (a device of that name is in use: another wire?)" : "");
        close(fd);
        return -1;
    }
    if (if_up(ifname, addr, prefix, err, errlen) < 0 || if_up("lo", 0, 0, err, errlen) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

int tun_open(const char *netns, const char *ifname, uint32_t addr, int prefix, char *err,
             size_t errlen)
{
    if (strlen(ifname) >= IFNAMSIZ) {
        snprintf(err, errlen, "device name '%s' is longer than %d bytes", ifname, IFNAMSIZ - 1);
        return -1;
    }
    if (!netns || !*netns)
        return open_here(ifname, addr, prefix, err, errlen);
    char path[300];
    snprintf(path, sizeof path, "/var/run/netns/%s", netns);
    int self = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
    if (self < 0) {
        snprintf(err, errlen, "/proc/self/ns/net: %s", strerror(errno));
        return -1;
    }
    int ns = open(path, O_RDONLY | O_CLOEXEC);
    if (ns < 0) {
        snprintf(err, errlen, "network namespace %s: %s (made by `ip netns add %s`)", path,
                 strerror(errno), netns);
        close(self);
        return -1;
    }
    int fd = -1;
    if (setns(ns, CLONE_NEWNET) < 0) {
        snprintf(err, errlen, "setns into %s: %s", netns, strerror(errno));
    } else {
        fd = open_here(ifname, addr, prefix, err, errlen);
        if (setns(self, CLONE_NEWNET) < 0) {
            /* Still inside the region's namespace: nothing this process does would be
             * where it belongs. */
            snprintf(err, errlen, "setns back from %s: %s", netns, strerror(errno));
            if (fd >= 0)
                close(fd);
            fd = -1;
        }
    }
    close(ns);
    close(self);
    return fd;
}
