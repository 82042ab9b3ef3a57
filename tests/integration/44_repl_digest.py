"""
44_repl_digest.py - anti-entropy by digest exchange between two region nodes on loopback.

Two peered nodes, --sync-interval-ms 60000 (only force-sync moves data), N counters of three
replica entries each loaded into one of them by a /sync from a third node id. Then:
converged nodes exchange a few hundred bytes per force-sync round; k counters the deltas
never carry (changes tagged as coming from the peer itself) are found and repaired by the
digest round with traffic in proportion to k, not to N; a peer restarted empty gets
everything; a malformed digest is refused whole; a periodic round runs the digest on its own.
"""

import time
import unittest

import harness

N = 6000
K = 25
REPS = ["us-east-1~aaaa", "us-west-1~bbbb", "eu-west-1~cccc"]
ZERO_FPS = "0" * 64


def body(sender, first, count, bump=0):
    counts = {}
    for i in range(first, first + count):
        counts["c%05d" % i] = {REPS[0]: 1 + i % 7 + bump, REPS[1]: 1 + i % 11,
                               REPS[2]: 1 + i % 13}
    return {"node_id": sender, "incarnation": "0000000000000000", "counts": counts}


def total(first, count, bump=0):
    return sum(3 + i % 7 + bump + i % 11 + i % 13 for i in range(first, first + count))


class Digest(harness.ServerTestCase):
    def start_pair(self, interval_ms=60000):
        ports = harness.free_ports(2)
        specs = []
        for i, (region, node_id) in enumerate([("us-east", "us-east-1"),
                                               ("us-west", "us-west-1")]):
            specs.append(dict(args=["--region", region, "--node-id", node_id,
                                    "--peers", "http://127.0.0.1:%d" % ports[1 - i],
                                    "--sync-interval-ms", str(interval_ms),
                                    "--sync-timeout-ms", "5000"],
                              port=ports[i], name=node_id))
        return self.start_servers(specs)

    # Helpers ---------------------------------------------------------------------------

    def metrics(self, srv):
        with srv.client() as c:
            return harness.parse_metrics(c.get("/metrics").text())

    def peer_bytes(self, srv, kind):
        return sum(harness.metric_values(self.metrics(srv), "counterd_sync_peer_bytes_total",
                                         kind=kind))

    def level2(self, srv):
        """The node's level-2 fingerprints: a probe that says every level-1 node differs."""
        with srv.client() as c:
            r = c.post_json("/sync", {"node_id": "probe", "incarnation": "0000000000000000",
                                      "counts": {}, "digest": {"leaf_bits": 17, "level": 1,
                                                               "groups": [0],
                                                               "fps": ZERO_FPS}})
        self.assertEqual(r["digest"]["level"], 2, r["digest"])
        return r["digest"]["fps"]

    def force_sync(self, srv):
        with srv.client(timeout=60) as c:
            r = c.post("/admin/force-sync")
        harness.assert_json_response(r, 200, "POST /admin/force-sync on %s" % srv.name)
        j = r.json()
        self.assertEqual(j["status"], "sync_completed")
        # The answer lists the first page of counters, not the store.
        self.assertLessEqual(len(j["counters"]), 1000, "force-sync answer's counters")
        held = harness.metric_values(self.metrics(srv), "counterd_store_counters")[0]
        self.assertEqual(j["total_counters"], held)
        self.assertEqual(j["truncated"], held > 1000)
        self.assertEqual(list(j["counters"]), sorted(j["counters"]), "in name order")

    def synced_total(self, srv):
        return harness.metric_values(self.metrics(srv), "counter_synced_count")[0]

    def loaded_pair(self):
        a, b = self.start_pair()
        with a.client(timeout=60) as c:
            c.post_json("/sync", body("loader", 0, N))
        self.force_sync(a)  # first contact: full state both ways
        self.force_sync(b)
        self.assertEqual(self.synced_total(b), total(0, N))
        self.assertEqual(self.level2(a), self.level2(b))
        return a, b

    # Tests -------------------------------------------------------------------------------

    def test_converged_round_is_small(self):
        a, b = self.loaded_pair()
        self.force_sync(a)  # a round that may still carry the last deltas
        before = self.peer_bytes(a, "digest") + self.peer_bytes(a, "repair")
        full = self.peer_bytes(a, "full")
        self.force_sync(a)
        spent = self.peer_bytes(a, "digest") + self.peer_bytes(a, "repair") - before
        print("\n[44_repl_digest] converged digest round: %d bytes (first contact: %d)"
              % (spent, full))
        self.assertGreater(spent, 0, "force-sync ran no digest exchange")
        self.assertLess(spent, 2000)

    def test_missed_changes_repaired_in_proportion(self):
        a, b = self.loaded_pair()
        self.force_sync(a)
        # K counters changed on a as if b had sent them: a's deltas never send them back
        # to b (b is their origin), so only the digest exchange can bring them to b.
        with a.client(timeout=60) as c:
            c.post_json("/sync", body("us-west-1", 100, K, bump=5))
        self.assertEqual(self.synced_total(a), total(0, N) + 5 * K)
        self.force_sync(a)
        self.assertEqual(self.synced_total(b), total(0, N) + 5 * K,
                         "the digest round did not repair what the deltas left out")
        self.assertEqual(self.level2(a), self.level2(b))
        spent = self.peer_bytes(a, "digest") + self.peer_bytes(a, "repair")
        full = self.peer_bytes(a, "full")
        repaired = sum(harness.metric_values(self.metrics(b),
                                             "counterd_sync_repaired_counters_total"))
        print("\n[44_repl_digest] repair of %d counters: %d bytes in all (%d per counter); "
              "first contact's full state: %d bytes" % (K, spent, spent // K, full))
        self.assertEqual(repaired, K)
        self.assertLess(spent, 3000 * K)
        self.assertLess(spent, full / 10)

    def test_restarted_empty_peer_gets_everything(self):
        a, b = self.loaded_pair()
        b.stop()
        b.start()  # same port, empty
        self.assertEqual(self.synced_total(b), 0)
        self.force_sync(a)
        self.assertEqual(self.synced_total(b), total(0, N))
        self.assertEqual(self.level2(a), self.level2(b))

    def test_bad_digest_refused_whole(self):
        a, _ = self.start_pair()
        bad = [({"leaf_bits": 16, "level": 1, "groups": [0], "fps": ZERO_FPS}, "leaf_bits"),
               ({"leaf_bits": 17, "level": 6, "groups": [0], "fps": ZERO_FPS}, "level"),
               ({"leaf_bits": 17, "level": 1, "groups": [1], "fps": ZERO_FPS}, "groups"),
               ({"leaf_bits": 17, "level": 2, "groups": [3, 1], "fps": "0" * 256}, "groups"),
               ({"leaf_bits": 17, "level": 1, "groups": [0], "fps": "0" * 63}, "fps"),
               ({"leaf_bits": 17, "level": 1, "groups": [0], "fps": "g" * 64}, "fps"),
               ({"leaf_bits": 17, "repair": [131072]}, "repair"),
               ({"leaf_bits": 17, "repair": list(range(3000))}, "repair")]
        with a.client() as c:
            for dg, field in bad:
                msg = {"node_id": "probe", "incarnation": "0000000000000000",
                       "counts": {"must-not-exist": {"x": 1}}, "digest": dg}
                r = c.post("/sync", msg)
                self.assertError(r, 400, "bad_field", "digest %r" % dg,
                                 detail_contains="digest." + field)
            self.assertEqual(c.get_json("/counter/must-not-exist")["total_count"], 0)

    def test_periodic_round_runs_the_digest(self):
        a, b = self.start_pair(interval_ms=300)
        with a.client() as c:
            c.post_json("/sync", body("loader", 0, 50))
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and self.peer_bytes(a, "digest") == 0:
            time.sleep(0.3)
        self.assertGreater(self.peer_bytes(a, "digest"), 0,
                           "no digest exchange within 60 s of 300 ms rounds")
        self.assertEqual(self.level2(a), self.level2(b))


if __name__ == "__main__":
    unittest.main(verbosity=2)
