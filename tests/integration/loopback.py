"""
loopback.py - the two process and port helpers the test harness (harness.py) and the chaos
checker (tests/chaos/chaos.py) share. Importing it does nothing else: unlike harness.py, it
arms no suite watchdog, so a long chaos run can use it.
"""

import ctypes
import signal
import socket

HOST = "127.0.0.1"


def die_with_parent():
    """Runs in the child before exec: get SIGKILL if the test process dies."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        PR_SET_PDEATHSIG = 1
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except Exception:
        pass


def port_free(port):
    """Nothing listens on the port and a server could bind it (TIME_WAIT leftovers of
    closed connections do not count: counterd binds with SO_REUSEADDR)."""
    c = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    c.settimeout(1.0)
    try:
        c.connect((HOST, port))
        return False
    except OSError:
        pass
    finally:
        c.close()
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind((HOST, port))
        return True
    except OSError:
        return False
    finally:
        s.close()
