"""bigfill.py - fills a region node with many counters fast, for the tests (and the
measurements) of listings at production size: POST /sync bodies of up to ~12 MB in
counterd's format (so the answer is one bounded page, not the node's whole state).

    fill(port, n, name_len=24, first=0, node_id="fill-1")

Counter i is called "<prefix><i as 8 digits>", padded with 'x' to name_len bytes (>= 10),
and gets the entry {node_id: 1}. Returns the seconds it took. A module with no side
effects: importing it arms nothing.
"""

import http.client
import json
import time

HOST = "127.0.0.1"
MAX_BODY = 12 << 20


def counter_name(i, name_len=24, prefix="c"):
    base = "%s%08d" % (prefix, i)
    return base + "x" * max(0, name_len - len(base))


def fill(port, n, name_len=24, first=0, node_id="fill-1", prefix="c", timeout=120):
    per = max(1, MAX_BODY // (name_len + len(node_id) + 12))
    t0 = time.monotonic()
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        for b in range(first, first + n, per):
            end = min(first + n, b + per)
            body = json.dumps({"node_id": node_id, "incarnation": "fill",
                               "timestamp": time.time(), "decrements": {},
                               "counts": {counter_name(i, name_len, prefix): {node_id: 1}
                                          for i in range(b, end)}}).encode()
            conn.request("POST", "/sync", body, {"Content-Type": "application/json"})
            r = conn.getresponse()
            data = r.read()
            if r.status != 200:
                raise AssertionError("POST /sync to :%d answered %d: %r"
                                     % (port, r.status, data[:300]))
    finally:
        conn.close()
    return time.monotonic() - t0
