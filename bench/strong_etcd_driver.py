#!/usr/bin/env python3
"""
strong_etcd_driver.py - the clients of bench/strong_etcd.sh: N threads, each with one
keep-alive HTTP connection and one request in flight, for DURATION seconds, on one hot
counter. Prints one JSON line: {"mode","clients","seconds","increments","per_s",
"conflicts","errors"}.

  naive URL N DURATION KEY       the anchor: range KEY through etcd's JSON gateway, then a
                                 txn comparing its mod_revision (or its absence) that puts
                                 the value + 1; on a conflict, range again and retry
  counterd URL N DURATION NAME   POST /increment {"counter_name": NAME, "amount": 1} to the
                                 strong role (counterd --strong-backend etcd)
"""

import base64
import http.client
import json
import sys
import threading
import time
import urllib.parse


def connect(url):
    u = urllib.parse.urlparse(url)
    return http.client.HTTPConnection(u.hostname, u.port, timeout=10)


def post(conn, path, body):
    conn.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
    r = conn.getresponse()
    return r.status, json.loads(r.read() or b"{}")


def b64(s):
    return base64.b64encode(s.encode()).decode()


def naive(conn, key, stats):
    k = b64(key)
    while True:
        st, r = post(conn, "/v3/kv/range", {"key": k})
        if st != 200:
            stats["errors"] += 1
            return
        kvs = r.get("kvs") or []
        if kvs:
            value = int(base64.b64decode(kvs[0]["value"]))
            cmp = {"target": "MOD", "key": k, "mod_revision": kvs[0]["mod_revision"]}
        else:
            value = 0
            cmp = {"target": "CREATE", "key": k, "create_revision": "0"}
        st, r = post(conn, "/v3/kv/txn", {"compare": [cmp], "success": [
            {"request_put": {"key": k, "value": b64(str(value + 1))}}]})
        if st != 200:
            stats["errors"] += 1
            return
        if r.get("succeeded"):
            stats["increments"] += 1
            return
        stats["conflicts"] += 1


def strong(conn, name, stats):
    st, r = post(conn, "/increment", {"counter_name": name, "amount": 1})
    if st == 200:
        stats["increments"] += 1
    else:
        stats["errors"] += 1


def main():
    mode, url, n, duration, key = sys.argv[1], sys.argv[2], int(sys.argv[3]), \
        float(sys.argv[4]), sys.argv[5]
    fn = naive if mode == "naive" else strong
    per = [{"increments": 0, "conflicts": 0, "errors": 0} for _ in range(n)]
    start = time.monotonic()
    end = start + duration

    def client(i):
        conn = connect(url)
        while time.monotonic() < end:
            fn(conn, key, per[i])
        conn.close()

    ts = [threading.Thread(target=client, args=(i,)) for i in range(n)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    secs = time.monotonic() - start
    tot = {k: sum(p[k] for p in per) for k in per[0]}
    print(json.dumps({"mode": mode, "clients": n, "seconds": round(secs, 2),
                      "increments": tot["increments"], "per_s": round(tot["increments"] / secs, 1),
                      "conflicts": tot["conflicts"], "errors": tot["errors"]}))


if __name__ == "__main__":
    main()
