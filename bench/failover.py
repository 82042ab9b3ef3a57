#!/usr/bin/env python3
"""
failover.py - the driver of bench/failover.sh: strong adds with tokens through a lab's
gateway while the etcd leader is SIGKILLed and restarted, ROUNDS times; prints each round's
unavailability window beside etcd's election timeout, and checks lost 0 / applied twice 0.

  failover.py BASE_PORT ROUNDS CLIENTS ELECTION_MS

The lab must run with --strong etcd on BASE_PORT (bench/failover.sh starts it). The leader
is found with etcd's /v3/maintenance/status on the members' client ports (base+21..23);
it is killed by the pid scripts/lab keeps, and started again with `scripts/lab restart`.
"""

import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
BASE, ROUNDS, CLIENTS, ELECTION_MS = (int(a) for a in sys.argv[1:5])
GW = BASE + 80
MEMBERS = {"etcd-us-east": BASE + 21, "etcd-us-west": BASE + 22, "etcd-eu-west": BASE + 23}
NS = "failover"


def call(port, method, path, body=None, timeout=15.0):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=json.dumps(body) if body is not None else None,
                     headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read() or b"{}")
    except (OSError, ValueError, http.client.HTTPException) as e:
        return None, {"error": repr(e)}
    finally:
        conn.close()


def leader():
    for name, port in MEMBERS.items():
        st, body = call(port, "POST", "/v3/maintenance/status", {}, timeout=1.0)
        if st == 200 and body.get("leader") == body.get("header", {}).get("member_id"):
            return name
    return None


def wait_leader(timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        name = leader()
        if name:
            return name
        time.sleep(0.05)
    sys.exit("failover: etcd elected no leader in %.0f s" % timeout)


class Client(threading.Thread):
    def __init__(self, k, counter):
        super().__init__(daemon=True)
        self.k, self.counter, self.stop, self.acked, self.failed = k, counter, False, [], 0

    def run(self):
        i = 0
        while not self.stop:
            token = "bench-%d-%s-%d-%d" % (os.getpid(), self.counter, self.k, i)
            for _ in range(1000):  # the same token until acknowledged
                st, _ = call(GW, "POST", "/v1/counters/%s/%s/add" % (NS, self.counter),
                             {"delta": 1, "idempotency_token": token})
                if st == 200:
                    self.acked.append(time.monotonic())
                    break
                self.failed += 1
                time.sleep(0.02)
            i += 1


def main():
    st, body = call(GW, "PUT", "/v1/namespaces/" + NS, {"type": "strong"})
    if st != 200:
        sys.exit("failover: PUT /v1/namespaces/%s answered %s %s" % (NS, st, body))
    windows = []
    for r in range(1, ROUNDS + 1):
        counter = "round%d-%d" % (r, int(time.time()))
        clients = [Client(k, counter) for k in range(CLIENTS)]
        for c in clients:
            c.start()
        time.sleep(2.0)
        name = wait_leader()
        with open(os.path.join(REPO, ".lab", str(BASE), "pids", name + ".pid")) as f:
            pid = int(f.read())
        t_kill = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        new = wait_leader()
        t_elected = time.monotonic()
        time.sleep(max(0.0, 3.0 - (t_elected - t_kill)))
        subprocess.run([os.path.join(REPO, "scripts", "lab"), "restart", name, "--base-port",
                        str(BASE)], check=True, stdout=subprocess.DEVNULL)
        time.sleep(2.0)
        for c in clients:
            c.stop = True
        for c in clients:
            c.join(60)
        times = sorted(t for c in clients for t in c.acked)
        gaps = [b - a for a, b in zip(times, times[1:]) if b > t_kill and a < t_elected]
        window = max(gaps) if gaps else float("nan")
        st, body = call(GW, "GET", "/v1/counters/%s/%s" % (NS, counter))
        value = body.get("count") if st == 200 else None
        ok = value == len(times)
        windows.append(window)
        print("round %d: killed %s, %s elected after %.2f s; window %.3f s (%.2fx the election "
              "timeout of %d ms); %d acknowledged, value %s: %s; %d failed attempts retried"
              % (r, name, new, t_elected - t_kill, window, window * 1000 / ELECTION_MS,
                 ELECTION_MS, len(times), value,
                 "lost 0, applied twice 0" if ok else "MISMATCH", sum(c.failed for c in clients)),
              flush=True)
        if not ok:
            for port in (BASE + 5, BASE + 6, BASE + 7):
                print("  strong role %d says %s" % (port, call(
                    port, "GET", "/v1/counters/%s/%s" % (NS, counter))), flush=True)
            print("  tokens acknowledged per client: %s" % [len(c.acked) for c in clients])
            sys.exit(1)
    windows.sort()
    print("windows: min %.3f s, median %.3f s, max %.3f s over %d rounds (election timeout "
          "%d ms, target 2 s)" % (windows[0], windows[len(windows) // 2], windows[-1],
                                  len(windows), ELECTION_MS))
    print("RESULT failover rounds=%d election_ms=%d window_min=%.3f window_median=%.3f "
          "window_max=%.3f" % (len(windows), ELECTION_MS, windows[0], windows[len(windows) // 2],
                               windows[-1]))


if __name__ == "__main__":
    main()
