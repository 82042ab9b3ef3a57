"""
94_tombstone_gc_partition.py - deleted counters behind a partition: hidden at once, kept as
tombstones while a peer has not seen the deletion, never brought back by that peer, then
sealed and dropped everywhere; a concurrent unobserved increment survives alone.

Three regions (sync every 200 ms, --tombstone-grace-s 1) hold d00..d09 and keep. eu-west
is partitioned; us-east deletes d00..d09 while eu-west, unaware, adds 7 to d05.
  - us-east and us-west answer the deleted counters 404 and list none of them at once;
  - the GC is held back: nothing is sealed or dropped while eu-west has not acknowledged
    (counterd_tombstones{state="dead"}, /admin/sync "tombstones" waiting_for eu-west-1,
    the oldest unsealed tombstone's age past the grace);
  - after the heal, eu-west does not bring them back: every region answers d00..d09 404
    except d05, which holds exactly the 7 eu-west added; then the nine tombstones are
    sealed and dropped on every region (at least once: a peer's change in flight may bring a
    sealed tombstone back to a region that dropped it, which drops it again), and nothing
    comes back after further rounds.
"""

import time
import unittest

import harness

NODES = [("us-east", "us-east-1"), ("us-west", "us-west-1"), ("eu-west", "eu-west-1")]
DELETED = ["d%02d" % i for i in range(10)]
GRACE_S = 1


class TombstonePartition(harness.ServerTestCase):
    def start_trio(self):
        ports = harness.free_ports(3)
        specs = []
        for i, (region, node_id) in enumerate(NODES):
            peers = ",".join("http://127.0.0.1:%d" % ports[j] for j in range(3) if j != i)
            specs.append(dict(args=["--region", region, "--node-id", node_id, "--peers", peers,
                                    "--sync-interval-ms", "200", "--sync-timeout-ms", "2000",
                                    "--tombstone-grace-s", str(GRACE_S)],
                              port=ports[i], name=node_id))
        return self.start_servers(specs)

    def metric(self, srv, name, **labels):
        with srv.client() as c:
            values = harness.metric_values(harness.parse_metrics(c.get("/metrics").text()), name,
                                           **labels)
        return values[0] if values else None

    def status(self, srv, name):
        with srv.client() as c:
            return c.get("/v1/counters/default/%s" % name)

    def listed(self, srv):
        with srv.client() as c:
            return set(c.get_json("/counters?limit=1000")["counters"])

    def wait(self, what, pred, timeout=15):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if pred():
                return
            time.sleep(0.1)
        self.fail("not within %d s: %s" % (timeout, what))

    def test_partitioned_region_does_not_bring_deleted_back(self):
        east, west, eu = self.start_trio()
        with east.client() as c:
            for name in DELETED + ["keep"]:
                c.post_json("/increment", {"counter_name": name, "amount": 2})
        self.wait("every region holds the counters",
                  lambda: all(self.status(s, "d09").status == 200 for s in (west, eu)))
        with eu.client() as c:
            c.post_json("/admin/partition", {"enabled": True})
        time.sleep(1.0)  # a round already under way finishes its exchanges
        with east.client() as c:
            for name in DELETED:
                r = c.request("DELETE", "/v1/counters/default/%s" % name)
                self.assertEqual(r.status, 200, r.text())
        with eu.client() as c:
            r = c.post_json("/v1/counters/default/d05/add", {"delta": 7})
        # Hidden at once where the deletion is known.
        for name in DELETED:
            self.assertEqual(self.status(east, name).status, 404, name)
        self.assertEqual(self.listed(east) & set(DELETED), set())
        self.wait("us-west hides them", lambda: self.status(west, "d09").status == 404)
        self.assertEqual(self.listed(west) & set(DELETED), set())
        # Held back: eu-west has not acknowledged the deletions.
        time.sleep(3 * GRACE_S + 0.5)
        for srv in (east, west):
            self.assertEqual(self.metric(srv, "counterd_tombstones_dropped_total"), 0)
            self.assertEqual(self.metric(srv, "counterd_tombstones", state="sealed"), 0)
            self.assertEqual(self.metric(srv, "counterd_tombstones", state="dead"), 10)
            self.assertGreater(self.metric(srv, "counterd_tombstones_oldest_unsealed_seconds"),
                               GRACE_S)
            with srv.client() as c:
                t = c.get_json("/admin/sync")["tombstones"]
            self.assertEqual((t["dead"], t["sealed"], t["dropped"]), (10, 0, 0), t)
            self.assertEqual(t["waiting_for"], ["eu-west-1"], t)
        self.assertEqual(self.status(eu, "d05").json()["count"], 9)
        # Heal: eu-west learns the deletions, and its own increment survives them.
        with eu.client() as c:
            c.post_json("/admin/partition", {"enabled": False})
        survivors = [n for n in DELETED if n != "d05"]

        def settled():
            for srv in (east, west, eu):
                if any(self.status(srv, n).status != 404 for n in survivors):
                    return False
                r = self.status(srv, "d05")
                if r.status != 200 or r.json()["count"] != 7:
                    return False
            return True
        self.wait("the deletions everywhere, d05 holding 7", settled)
        def dropped_everywhere():
            for srv in (east, west, eu):
                with srv.client() as c:
                    t = c.get_json("/admin/sync")["tombstones"]
                if (t["dead"], t["sealed"], t["waiting_for"]) != (0, 0, []) or t["dropped"] < 9:
                    return False
            return True
        self.wait("the nine tombstones sealed and dropped on every region", dropped_everywhere,
                  timeout=20)
        for srv in (east, west, eu):
            self.assertEqual(self.metric(srv, "counterd_tombstones", state="sealed"), 0)
            self.assertEqual(self.metric(srv, "counterd_tombstones", state="dead"), 0)
        time.sleep(1.0)  # more rounds: nothing comes back
        for srv in (east, west, eu):
            self.assertEqual(self.listed(srv) & set(DELETED), {"d05"}, srv.name)
            self.assertEqual(self.status(srv, "d05").json()["count"], 7)
            self.assertEqual(self.status(srv, "keep").json()["count"], 2)
            self.assertEqual(self.metric(srv, "counterd_store_counters"), 2)
        # A dropped name counted again starts from zero, everywhere.
        with west.client() as c:
            c.post_json("/v1/counters/default/d01/add", {"delta": 3})
        self.wait("d01 is 3 everywhere",
                  lambda: all(self.status(s, "d01").status == 200 and
                              self.status(s, "d01").json()["count"] == 3
                              for s in (east, west, eu)))


if __name__ == "__main__":
    unittest.main(verbosity=2)
