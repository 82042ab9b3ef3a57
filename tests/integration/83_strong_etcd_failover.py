"""
83_strong_etcd_failover.py - the strong role on a three-member etcd cluster loses the
etcd leader (SIGKILL) under load.

8 clients add 1 to one hot counter with a token each; a 503 (or a lost connection) is
retried with the same token until it is acknowledged. The role's first endpoint is the
leader, so it loses its own member and goes to the next. Afterwards: a new leader is
elected, increments resume, etcd's value equals the number of acknowledged tokens (lost 0,
applied twice 0), and the unavailability window (the longest time without an acknowledged
increment from the kill on) is printed and bounded, with the first failure to the first
success after it.
"""

import os
import threading
import time
import unittest

import etcdlab
import harness

V1 = "/v1/counters/"
CLIENTS = 8
BEFORE_S, AFTER_S = 2.0, 5.0
TIMEOUT_MS = os.environ.get("IT_ETCD_TIMEOUT_MS", "1000")
WINDOW_BOUND_S = 4.0  # the target is 2 s (bench/README.md); loaded CI machines get slack


class StrongEtcdFailoverTest(harness.ServerTestCase):
    def test_leader_killed_under_load(self):
        etcd = etcdlab.Cluster(3).start()
        self.addCleanup(etcd.stop)
        leader = etcd.leader()
        self.assertIsNotNone(leader)
        order = [leader] + [i for i in range(3) if i != leader]
        srv = self.start_server(["--role", "strong", "--strong-backend", "etcd", "--etcd",
                                 ",".join(etcd.client_urls[i] for i in order),
                                 "--etcd-prefix", "/fo/", "--etcd-timeout-ms", TIMEOUT_MS],
                                name="strong-etcd")
        lock = threading.Lock()
        acked, dups, failures, events = [0], [0], [0], []  # events: (time, ok)
        stop_at = [time.monotonic() + 1000]
        errors = []

        def client(tid):
            i = 0
            c = srv.client(timeout=10)
            try:
                while time.monotonic() < stop_at[0]:
                    body = {"delta": 1, "idempotency_token": "c%d-%d" % (tid, i)}
                    give_up = time.monotonic() + 15
                    while True:
                        try:
                            r = c.post(V1 + "fo/hot/add", body)
                            status = r.status
                        except OSError:
                            c.close()
                            c = srv.client(timeout=10)
                            status = 0
                        now = time.monotonic()
                        with lock:
                            events.append((now, status == 200))
                        if status == 200:
                            with lock:
                                acked[0] += 1
                                dups[0] += bool(r.json().get("duplicate"))
                            break
                        if status not in (0, 503):
                            errors.append("client %d: %d %s" % (tid, status, r.text()))
                            return
                        with lock:
                            failures[0] += 1
                        if now > give_up:
                            errors.append("client %d: token %s never acknowledged" %
                                          (tid, body["idempotency_token"]))
                            return
                        time.sleep(0.02)
                    i += 1
            finally:
                c.close()

        ts = [threading.Thread(target=client, args=(t,)) for t in range(CLIENTS)]
        for t in ts:
            t.start()
        time.sleep(BEFORE_S)
        killed_at = time.monotonic()
        etcd.kill(leader)
        time.sleep(AFTER_S)
        stop_at[0] = time.monotonic()
        for t in ts:
            t.join(20)
        self.assertEqual(errors, [])
        after = sorted(e for e in events if e[0] >= killed_at)
        first_fail = next((t for t, ok in after if not ok), None)
        if first_fail is None:
            window = 0.0
        else:
            first_ok = next((t for t, ok in after if ok and t > first_fail), None)
            self.assertIsNotNone(first_ok, "no increment succeeded after the leader's death")
            window = first_ok - first_fail
        oks = [killed_at] + [t for t, ok in after if ok]
        gap = max(b - a for a, b in zip(oks, oks[1:])) if len(oks) > 1 else 0.0
        new_leader = None
        for _ in range(50):
            new_leader = etcd.leader()
            if new_leader is not None:
                break
            time.sleep(0.1)
        self.assertIsNotNone(new_leader)
        value = etcdlab.get_value(etcd.client_urls[new_leader], "/fo/c/fo/hot")
        print("\nacknowledged %d (%d of them duplicates of a retried token), 503s retried %d, "
              "etcd value %d; unavailability window %.2f s (the longest time without an "
              "acknowledgement from the SIGKILL of the leader on; first failure to first "
              "success after it: %.2f s; --etcd-timeout-ms %s)"
              % (acked[0], dups[0], failures[0], value, gap, window, TIMEOUT_MS))
        self.assertEqual(value, acked[0], "acknowledged lost or applied twice")
        self.assertLess(gap, WINDOW_BOUND_S)
        with srv.client() as c:
            adm = c.get_json("/admin/etcd")
            self.assertFalse(adm["endpoints"][0]["ok"])
            self.assertEqual(c.get_json(V1 + "fo/hot")["count"], value)


if __name__ == "__main__":
    unittest.main(verbosity=2)
