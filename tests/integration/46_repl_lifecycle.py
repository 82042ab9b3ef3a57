"""
46_repl_lifecycle.py - the counter lifecycle on the wire (docs/API.md "Namespaces and the
counter lifecycle", "On the wire") between real region nodes on loopback.

Clears and deletions reach a node as /sync bodies carrying floors ("floors", "dfloors",
"life"): the wire contract itself, what a clearing or deleting peer sends. Then:
a clear spreads by deltas and increments made after it count; a clear the deltas never
carry (its state came whole from the peer) is found by the digest (floors are in the
fingerprints) and repaired; a node partitioned while another clears keeps counting, and
after the heal every node shows exactly what the clear had not observed; a new node pulls a
cleared and a deleted counter in a compact ("CSB2") full sync; a node of the version
before "life" gets "CSB1" bodies it reads whole, and its bodies are taken.
"""

import time
import unittest

import compactbody
import harness

REPS = ["us-east-1~aaaa", "us-west-1~bbbb", "eu-west-1~cccc"]
INC = "0000000000000000"
ZERO_FPS = "0" * 64
N = 2000  # counters besides the ones the tests clear and delete


def load(sender="loader-1"):
    counts = {"c%04d" % i: {REPS[0]: 1 + i % 7, REPS[1]: 1 + i % 5} for i in range(N)}
    counts["views"] = {REPS[0]: 10, REPS[1]: 5}
    counts["ns1/views"] = {REPS[0]: 4}
    counts["gone"] = {REPS[0]: 8, REPS[2]: 2}
    return {"node_id": sender, "incarnation": INC, "counts": counts,
            "decrements": {"views": {REPS[2]: 1}, "c0001": {REPS[2]: 1}}}


def clear_views(sender="clearer-1"):
    """views cleared where 10 + 5 - 1 was observed."""
    return {"node_id": sender, "incarnation": INC,
            "counts": {"views": {REPS[0]: 10, REPS[1]: 5, REPS[2]: 0}},
            "decrements": {"views": {REPS[2]: 1}},
            "floors": {"views": {"pos": {REPS[0]: 10, REPS[1]: 5}, "neg": {REPS[2]: 1}}}}


def delete_gone(sender="clearer-1"):
    fl = {"pos": {REPS[0]: 8, REPS[2]: 2}}
    return {"node_id": sender, "incarnation": INC,
            "counts": {"gone": {REPS[0]: 8, REPS[2]: 2}},
            "floors": {"gone": fl}, "dfloors": {"gone": fl}, "life": {"gone": ["deleted"]}}


class Base(harness.ServerTestCase):
    def start_nodes(self, n=2, interval_ms=60000):
        ports = harness.free_ports(n)
        names = [("us-east", "us-east-1"), ("us-west", "us-west-1"), ("eu-west", "eu-west-1")]
        specs = []
        for i in range(n):
            peers = ",".join("http://127.0.0.1:%d" % p for j, p in enumerate(ports) if j != i)
            specs.append(dict(args=["--region", names[i][0], "--node-id", names[i][1],
                                    "--peers", peers, "--sync-interval-ms", str(interval_ms),
                                    "--sync-timeout-ms", "10000"],
                              port=ports[i], name=names[i][1]))
        return self.start_servers(specs)

    # Helpers ---------------------------------------------------------------------------

    def post_sync(self, srv, body):
        with srv.client(timeout=60) as c:
            r = c.post("/sync", body)
        harness.assert_json_response(r, 200, "POST /sync on %s" % srv.name)
        j = r.json()
        self.assertNotIn("rejected", j)
        return j

    def force_sync(self, srv):
        with srv.client(timeout=60) as c:
            r = c.post("/admin/force-sync")
        harness.assert_json_response(r, 200, "force-sync on %s" % srv.name)

    def count(self, srv, name):
        if "/" in name:  # a key of another namespace: as the listing of every key shows it
            with srv.client() as c:
                got = c.get_json("/counters?limit=10000")["counters"]
            return got[name]["total_count"] if name in got else None
        with srv.client() as c:
            r = c.get("/counter/" + name)
        if r.status == 404:
            return None
        harness.assert_json_response(r, 200, "GET /counter/%s on %s" % (name, srv.name))
        return r.json()["total_count"]

    def incr(self, srv, name, amount):
        with srv.client() as c:
            c.post_json("/increment", {"counter_name": name, "amount": amount})

    def metric(self, srv, name, **labels):
        with srv.client() as c:
            m = harness.parse_metrics(c.get("/metrics").text())
        return sum(harness.metric_values(m, name, **labels))

    def level2(self, srv):
        """The node's level-2 fingerprints (floors and flags are in them)."""
        with srv.client() as c:
            r = c.post_json("/sync", {"node_id": "probe", "incarnation": INC, "counts": {},
                                      "digest": {"leaf_bits": 17, "level": 1, "groups": [0],
                                                 "fps": ZERO_FPS}})
        return r["digest"]["fps"]

    def partition(self, srv, enabled):
        with srv.client() as c:
            c.post_json("/admin/partition", {"enabled": enabled})

    def loaded(self, n=2):
        nodes = self.start_nodes(n)
        self.post_sync(nodes[0], load())
        for s in nodes:
            self.force_sync(s)  # first contact: full state both ways
        for s in nodes:
            self.assertEqual(self.count(s, "views"), 14)
        return nodes


class Lifecycle(Base):
    def test_clear_spreads_by_delta(self):
        a, b = self.loaded()
        self.post_sync(a, clear_views())
        self.post_sync(a, delete_gone())
        self.assertEqual(self.count(a, "views"), 0)
        self.force_sync(a)
        self.assertEqual(self.count(b, "views"), 0, "the clear did not reach b")
        self.assertIn(self.count(b, "gone"), (None, 0), "the deletion did not reach b")
        self.assertEqual(self.count(b, "ns1/views"), 4)
        # Counted after the clear: above the floor, everywhere.
        self.incr(b, "views", 3)
        self.incr(a, "views", 2)
        self.force_sync(b)
        self.force_sync(a)
        self.assertEqual(self.count(a, "views"), 5)
        self.assertEqual(self.count(b, "views"), 5)
        self.assertEqual(self.level2(a), self.level2(b))

    def test_digest_repairs_a_clear(self):
        a, b = self.loaded()
        self.force_sync(a)
        self.assertEqual(self.level2(a), self.level2(b))
        # The clear reaches a as if b had sent it: a's deltas never send it back to b (b is
        # its origin), so only the digest exchange, comparing floors, can bring it to b.
        self.post_sync(a, clear_views(sender="us-west-1"))
        self.assertTrue(self.level2(a) != self.level2(b), "a clear is in the fingerprints")
        before = self.metric(b, "counterd_sync_repaired_counters_total")
        self.force_sync(a)
        self.assertEqual(self.count(b, "views"), 0, "the digest round did not repair the clear")
        self.assertGreater(self.metric(b, "counterd_sync_repaired_counters_total"), before)
        self.assertEqual(self.level2(a), self.level2(b))

    def test_clear_behind_a_partition(self):
        a, b = self.loaded()
        self.partition(b, True)
        self.post_sync(a, clear_views())  # a clears what it observed: 14
        self.incr(b, "views", 6)  # b, cut off, keeps counting: 20 there
        self.incr(a, "views", 1)
        self.assertEqual(self.count(b, "views"), 20)
        self.assertEqual(self.count(a, "views"), 1)
        self.partition(b, False)
        self.force_sync(b)
        self.force_sync(a)
        # What the clear had not observed survives: b's 6, and a's 1 made after it.
        self.assertEqual(self.count(a, "views"), 7)
        self.assertEqual(self.count(b, "views"), 7)
        self.assertEqual(self.level2(a), self.level2(b))

    def test_compact_full_sync_carries_it(self):
        a, b = self.loaded()
        self.post_sync(a, clear_views())
        self.post_sync(a, delete_gone())
        self.incr(a, "views", 2)
        c = self.start_server(["--region", "eu-west", "--node-id", "eu-west-1",
                               "--peers", "http://127.0.0.1:%d" % a.port,
                               "--sync-interval-ms", "60000", "--sync-timeout-ms", "10000"],
                              name="eu-west-1")
        self.force_sync(c)
        self.assertGreater(self.metric(c, "counterd_sync_peer_bytes_total", kind="full",
                                       direction="received"), 0)
        self.assertEqual(self.count(c, "views"), 2)
        self.assertIn(self.count(c, "gone"), (None, 0))
        self.assertEqual(self.count(c, "c0003"), 4 + 4)
        self.assertEqual(self.level2(a), self.level2(c), "c holds a's floors and flags")
        # What a compact answer to a node saying "life" looks like.
        env = {"node_id": "probe-1", "incarnation": INC, "counts": {},
               "features": ["folded", "digest", "compact", "life"]}
        with a.client(timeout=60) as cl:
            r = cl.post("/sync", env)
        self.assertEqual(r.body[:4], b"CSB2")
        _, _, got = compactbody.parse(r.body)
        self.assertEqual(got["views"]["floor"],
                         {REPS[0]: (10, 0), REPS[1]: (5, 0), REPS[2]: (0, 1)})
        self.assertEqual(got["gone"]["flags"], 1)
        self.assertEqual(got["gone"]["dfloor"], {REPS[0]: (8, 0), REPS[2]: (2, 0)})
        self.assertEqual(got["c0003"]["flags"], 0)
        self.assertNotIn("floor", got["c0003"])

    def test_peer_before_life(self):
        """A node of the version before "life" (features without it) gets "CSB1" bodies,
        which it reads whole, and its "CSB1" bodies are merged; a "CSB2" body is read by
        this version."""
        a, = self.start_nodes(1)
        self.post_sync(a, load())
        self.post_sync(a, clear_views())
        old = {"node_id": "old-1", "incarnation": INC, "counts": {},
               "features": ["folded", "digest", "compact"]}
        with a.client(timeout=60) as c:
            r = c.post("/sync", old)
            self.assertEqual(r.status, 200)
            self.assertEqual(r.body[:4], b"CSB1")
            env, _, got = compactbody.parse(r.body)  # no byte left over: an old reader's view
            self.assertIn("life", env["features"])
            self.assertEqual(got["views"]["entries"][REPS[0]], (10, 0))
            self.assertEqual(len(got), N + 3)
            # Its CSB1 body: merged as always.
            body = compactbody.body(old, [REPS[0], "old-1~x"],
                                    [("views", [(1, 4, 0)], [], []), ("c0002", [(1, 1, 0)], [], [])])
            r = c.post("/sync", body, headers={"Content-Type": "application/octet-stream"})
            self.assertEqual(r.status, 200, r.body[:300])
            self.assertEqual(self.count(a, "views"), 4)
            # A CSB2 body of this version: the floor of old-1~x taken.
            whole = [(0, 4, 0), (2, 4, 0)]  # c0003 as loaded
            body = compactbody.body_life(old, [REPS[0], "old-1~x", REPS[1]], [
                ("views", [(1, 4, 0)], [], [], (0, [(1, 3, 0)], None)),
                ("c0003", whole, [], [], (1, whole, whole)),
                ("c0004", [(0, 5, 0)], [], [], (0, [(1, 5, 0)], None))])
            r = c.post("/sync", body, headers={"Content-Type": "application/octet-stream"})
            self.assertEqual(r.status, 200, r.body[:300])
            j, _, _ = compactbody.parse(r.body)  # the answer: compact, "CSB1" for it
            self.assertEqual(self.count(a, "views"), 1)
            self.assertIn(self.count(a, "c0003"), (None, 0), "deleted by a CSB2 body")
            self.assertEqual([(x["counter"], x["reason"]) for x in j["rejected"]],
                             [("c0004", "floor_without_entry")])
        self.assertEqual(self.metric(a, "counterd_sync_rejected_entries_total",
                                     reason="floor_without_entry"), 1)


class Routes(Base):
    """The same through the region's routes (POST .../clear, DELETE) and namespaces."""

    def v1(self, srv, method, path, body=None, status=200):
        with srv.client() as c:
            r = c.request(method, "/v1" + path, body=body)
        self.assertEqual(r.status, status, "%s %s on %s: %r" % (method, path, srv.name, r))
        return r.json()

    def test_clear_and_delete_routes(self):
        a, b, c = self.start_nodes(3)
        for s in (a, b, c):
            self.force_sync(s)  # first contact
        self.v1(a, "PUT", "/namespaces/app", {"type": "eventual"})
        self.force_sync(a)  # the register travels with the messages
        self.v1(a, "POST", "/counters/app/hits/add", {"delta": 5})
        self.v1(b, "POST", "/counters/app/hits/add", {"delta": 3})
        self.v1(a, "POST", "/counters/app/gone/add", {"delta": 2})
        for s in (a, b, a):
            self.force_sync(s)
        self.assertEqual(self.v1(c, "GET", "/counters/app/hits")["count"], 8)
        # c, partitioned, keeps counting while a clears what it observed (8).
        self.partition(c, True)
        j = self.v1(a, "POST", "/counters/app/hits/clear", {})
        self.assertEqual(j["cleared"], 8)
        self.v1(b, "DELETE", "/counters/app/gone")
        self.v1(c, "POST", "/counters/app/hits/add", {"delta": 4})
        self.force_sync(a)
        self.force_sync(b)
        self.assertEqual(self.v1(b, "GET", "/counters/app/hits")["count"], 0)
        self.v1(a, "GET", "/counters/app/gone", status=404)
        self.partition(c, False)
        for s in (c, a, b, c):
            self.force_sync(s)
        for s in (a, b, c):
            self.assertEqual(self.v1(s, "GET", "/counters/app/hits")["count"], 4, s.name)
            self.v1(s, "GET", "/counters/app/gone", status=404)
        self.assertEqual(self.level2(a), self.level2(b))
        self.assertEqual(self.level2(a), self.level2(c))

    def test_regional_namespace_stays(self):
        a, b = self.start_nodes(2)
        for s in (a, b):
            self.force_sync(s)
        self.v1(a, "PUT", "/namespaces/here", {"type": "regional"})
        self.force_sync(a)  # the register travels with the messages
        self.assertEqual(self.v1(b, "GET", "/namespaces/here")["type"], "regional")
        self.v1(a, "POST", "/counters/here/x/add", {"delta": 5})
        self.v1(b, "POST", "/counters/here/x/add", {"delta": 2})
        self.force_sync(a)
        self.force_sync(b)
        self.assertEqual(self.v1(a, "GET", "/counters/here/x")["count"], 5)
        self.assertEqual(self.v1(b, "GET", "/counters/here/x")["count"], 2)
        self.assertEqual(self.level2(a), self.level2(b), "regional keys are in no fingerprint")
        # One sent anyway (a peer that does not know the namespace): ignored, counted.
        self.post_sync(b, {"node_id": "other-1", "incarnation": INC,
                           "counts": {"here/x": {"other-1~z": 9}}})
        self.assertEqual(self.v1(b, "GET", "/counters/here/x")["count"], 2)
        self.assertEqual(self.metric(b, "counterd_sync_ignored_total", reason="regional"), 1)


if __name__ == "__main__":
    unittest.main(verbosity=2)
