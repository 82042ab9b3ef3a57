#!/usr/bin/env python3
"""listing.py - the measuring half of bench/listing.sh (which starts the processes).

    listing.py N ROUNDS REGION_PORTS(comma) COORDINATOR_PORT GATEWAY_PORT REDIS_PORT|0

Fills each region with N counters ("video:<8 digits>", created in a shuffled order, each
region a different shuffle) through POST /sync bodies, and Redis with N keys; then, for
ROUNDS rounds, alternately: one page of 1,000 through the coordinator (from a random
position), one page of 1,000 from Redis (SCAN COUNT 1000 + MGET of the keys it gave), and
the other listings once each. Prints a table to stderr and `key=value` lines to stdout.
"""

import http.client
import json
import random
import socket
import statistics
import sys
import time

HOST = "127.0.0.1"
MAX_BODY = 12 << 20


def name(i):
    return "video:%08d" % i


def fill_region(port, n, seed):
    ids = list(range(n))
    random.Random(seed).shuffle(ids)
    per = MAX_BODY // 40
    conn = http.client.HTTPConnection(HOST, port, timeout=300)
    for b in range(0, n, per):
        counts = {name(i): {"fill-1": 1} for i in ids[b:b + per]}
        body = json.dumps({"node_id": "fill-1", "incarnation": "fill", "timestamp": time.time(),
                           "decrements": {}, "counts": counts}).encode()
        conn.request("POST", "/sync", body, {"Content-Type": "application/json"})
        r = conn.getresponse()
        data = r.read()
        if r.status != 200:
            sys.exit("FAIL: POST /sync to :%d answered %d: %r" % (port, r.status, data[:300]))
    conn.close()


class Redis:
    def __init__(self, port):
        self.s = socket.create_connection((HOST, port))
        self.f = self.s.makefile("rb")

    @staticmethod
    def cmd(*args):
        out = [b"*%d\r\n" % len(args)]
        for a in args:
            a = a if isinstance(a, bytes) else str(a).encode()
            out.append(b"$%d\r\n%s\r\n" % (len(a), a))
        return b"".join(out)

    def reply(self):
        line = self.f.readline()
        t, rest = line[:1], line[1:-2]
        if t in (b"+", b":"):
            return rest
        if t == b"-":
            sys.exit("FAIL: redis: %r" % rest)
        if t == b"$":
            n = int(rest)
            return None if n < 0 else self.f.read(n + 2)[:-2]
        if t == b"*":
            return [self.reply() for _ in range(int(rest))]
        sys.exit("FAIL: redis reply %r" % line)

    def call(self, *args):
        self.s.sendall(self.cmd(*args))
        return self.reply()

    def fill(self, n):
        for b in range(0, n, 10000):
            self.s.sendall(b"".join(self.cmd("SET", name(i), 1) for i in range(b, min(n, b + 10000))))
            for _ in range(b, min(n, b + 10000)):
                self.reply()


def get(conn, path):
    t0 = time.perf_counter()
    conn.request("GET", path)
    r = conn.getresponse()
    body = r.read()
    ms = (time.perf_counter() - t0) * 1000
    if r.status != 200:
        sys.exit("FAIL: GET %s answered %d: %r" % (path, r.status, body[:300]))
    return ms, json.loads(body), len(body)


def main():
    n, rounds = int(sys.argv[1]), int(sys.argv[2])
    rports = [int(p) for p in sys.argv[3].split(",")]
    co_port, gw_port, redis_port = int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
    t0 = time.monotonic()
    for k, p in enumerate(rports):
        fill_region(p, n, k)
    fill_s = time.monotonic() - t0
    print("fill_s=%.1f" % fill_s)
    print("[listing] %d counters on each of %d regions in %.1f s" % (n, len(rports), fill_s),
          file=sys.stderr)
    redis = Redis(redis_port) if redis_port else None
    if redis:
        redis.fill(n)
    co = http.client.HTTPConnection(HOST, co_port, timeout=60)
    gw = http.client.HTTPConnection(HOST, gw_port, timeout=60)
    rc = http.client.HTTPConnection(HOST, rports[0], timeout=60)
    first_region, p, _ = get(rc, "/counters")
    if p["total_counters"] != n or len(p["counters"]) != 1000 or not p["truncated"]:
        sys.exit("FAIL: the region's first page: total %r, %d counters"
                 % (p["total_counters"], len(p["counters"])))
    first_co, p, _ = get(co, "/global/counters")
    if p["healthy_regions"] != len(rports) or len(p["counter_names"]) != 1000:
        sys.exit("FAIL: /global/counters: %r" % {k: v for k, v in p.items() if k != "regions"})
    rnd = random.Random(7)
    t = {k: [] for k in ("co", "redis", "region", "gw", "co10k", "prefix", "top_rate", "top_lag")}
    size = {}
    cursor = b"0"
    for _ in range(rounds):
        at = name(rnd.randrange(n)).encode().hex()
        ms, p, size["co"] = get(co, "/global/counters?limit=1000&cursor=" + at)
        if len(p["counter_names"]) != 1000 and p["truncated"]:
            sys.exit("FAIL: a page of %d" % len(p["counter_names"]))
        t["co"].append(ms)
        if redis:
            r0 = time.perf_counter()
            cursor, keys = redis.call("SCAN", cursor, "COUNT", 1000)
            if keys:
                redis.call("MGET", *keys)
            t["redis"].append((time.perf_counter() - r0) * 1000)
        t["region"].append(get(rc, "/counters?limit=1000&cursor=" + at)[0])
        t["gw"].append(get(gw, "/api/counters?limit=1000&cursor=" + at)[0])
        ms, _, size["co10k"] = get(co, "/global/counters?limit=10000&cursor=" + at)
        t["co10k"].append(ms)
        t["prefix"].append(get(co, "/global/counters?limit=1000&prefix=video:0012")[0])
        t["top_rate"].append(get(co, "/global/top?by=rate&limit=100")[0])
        t["top_lag"].append(get(co, "/global/top?by=lag&limit=100")[0])
    print("[listing] first region page (sorts the index) %.0f ms, first coordinator page %.0f ms"
          % (first_region, first_co), file=sys.stderr)
    print("first_region_ms=%.1f first_coordinator_ms=%.1f" % (first_region, first_co))
    for k, v in t.items():
        if not v:
            continue
        med, lo, hi = statistics.median(v), min(v), max(v)
        print("[listing] %-9s median %7.2f ms  (min %.2f, max %.2f, %d rounds)%s"
              % (k, med, lo, hi, len(v), " %d bytes" % size[k] if k in size else ""),
              file=sys.stderr)
        print("%s_ms=%.2f %s_min_ms=%.2f %s_max_ms=%.2f" % (k, med, k, lo, k, hi))


if __name__ == "__main__":
    main()
