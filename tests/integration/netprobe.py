"""
netprobe.py - what the --net tests run inside a region's network namespace
(`ip netns exec <ns> python3 -c netprobe.HANDSHAKES host port n limit_s`).
"""

import os


def can_run():
    """Why the --net tests cannot run here, or None."""
    if os.geteuid() != 0:
        return "needs root (network namespaces, TUN devices); CI runs as root"
    if not os.path.exists("/dev/net/tun"):
        return "no /dev/net/tun"
    return None


# TCP handshake times to host:port in ms, one per line: "timeout" for one that did not
# complete within limit_s, "error <why>" for one refused or failed.
HANDSHAKES = r"""
import socket, sys, time
host, port, n, limit = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
for _ in range(n):
    s = socket.socket()
    s.settimeout(limit)
    t = time.monotonic()
    try:
        s.connect((host, port))
        print("%.3f" % ((time.monotonic() - t) * 1000))
    except OSError as e:
        print("timeout" if isinstance(e, socket.timeout) else "error %s" % e)
    finally:
        s.close()
    time.sleep(0.05)
"""
