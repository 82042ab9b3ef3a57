"""
84_strong_lifecycle.py - the strong counter's /v1/counters endpoints (API.md, "Strong
namespaces"): add, add-and-get, GET, clear, delete and the listing on keys "ns/name", with
idempotency tokens replicated in the same quorum round as the value they produced.

- The API field by field, bad input (400 naming the field, nothing changed), unknown
  counters (404), and the lab's endpoints unchanged beside them.
- Across a leader restart: values, clears, deletions and tokens all come back from the
  replicas (a retry of a token seen before the restart is a duplicate).
- A retry with the same token after a 503 ambiguous applies exactly once, before and after
  the leader restarts.
"""

import os
import shutil
import tempfile
import unittest

import harness

V1 = "/v1/counters/"


def post(srv, path, body, status=200):
    with srv.client(timeout=15) as c:
        return c.post_json(V1 + path, body, status)


def get_count(srv, path):
    with srv.client() as c:
        return c.get_json(V1 + path)["count"]


def wait_ready(test, srv):
    with srv.client() as c:
        c.get_json("/health")  # up
    import time
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with srv.client() as c:
            if c.get_json("/health").get("ready"):
                return
        time.sleep(0.05)
    test.fail("the strong leader did not recover")


def set_partition(topo, region, on):
    with topo.region(region).client() as c:
        c.post_json("/admin/partition", {"enabled": on})


class StrongLifecycleTest(harness.ServerTestCase):
    def setUp(self):
        super().setUp()
        self.data = tempfile.mkdtemp(prefix="counterd-strong-")
        self.addCleanup(shutil.rmtree, self.data, True)
        self.lua = os.path.join(self.data, "lua")
        shutil.copytree(os.environ.get("COUNTERD_LUA_DIR") or
                        os.path.join(harness.REPO_ROOT, "lua"), self.lua)
        self.topo = harness.Topology(
            region_args=lambda i: ["--data-dir", "%s/r%d" % (self.data, i)], strong=True,
            strong_args=["--lua-dir", self.lua])
        self.topo.start(self.addCleanup)
        self.strong = self.topo.strong
        wait_ready(self, self.strong)

    def test_operations_fields_and_errors(self):
        s = self.strong
        a = post(s, "orders/c1/add", {"delta": 5, "idempotency_token": "t1"})
        self.assertEqual(set(a), {"namespace", "counter", "delta", "region", "node_id",
                                  "consistency", "durable"})
        self.assertEqual((a["namespace"], a["counter"], a["delta"]), ("orders", "c1", 5))
        self.assertEqual(a["node_id"], self.strong_node_id())
        # The same token again: counted once, said so.
        d = post(s, "orders/c1/add", {"delta": 5, "idempotency_token": "t1"})
        self.assertIs(d["duplicate"], True)
        g = post(s, "orders/c1/add-and-get", {"delta": -2})
        self.assertEqual(g["count"], 3)
        g2 = post(s, "orders/c1/add-and-get", {"delta": 10, "idempotency_token": "t2"})
        self.assertEqual(g2["count"], 13)
        # A duplicate add-and-get answers the first answer's count.
        g3 = post(s, "orders/c1/add-and-get", {"delta": 10, "idempotency_token": "t2"})
        self.assertEqual((g3["count"], g3["duplicate"]), (13, True))
        with s.client() as c:
            r = c.get_json(V1 + "orders/c1")
        self.assertEqual((r["namespace"], r["counter"], r["count"]), ("orders", "c1", 13))
        self.assertIn("nodes", r)
        # Clear: the value it observed, 0 after; the same token again is a duplicate.
        cl = post(s, "orders/c1/clear", {"idempotency_token": "c-1"})
        self.assertEqual((cl["count"], cl["cleared"]), (0, 13))
        post(s, "orders/c1/add", {"delta": 4})
        cl2 = post(s, "orders/c1/clear", {"idempotency_token": "c-1"})
        self.assertEqual((cl2["cleared"], cl2["count"], cl2["duplicate"]), (13, 4, True))
        self.assertEqual(get_count(s, "orders/c1"), 4)
        # Listing: names without the namespace, only that namespace's.
        post(s, "orders/c2/add", {"delta": 1})
        post(s, "other/c1/add", {"delta": 7})
        with s.client() as c:
            lst = c.get_json(V1 + "orders")
            self.assertEqual({k: v["count"] for k, v in lst["counters"].items()},
                             {"c1": 4, "c2": 1})
            self.assertEqual((lst["total_counters"], lst["truncated"]), (2, False))
        # Delete: gone (404), a later add starts from 0.
        with s.client() as c:
            dl = c.request("DELETE", V1 + "orders/c1")
            self.assertEqual(dl.status, 200, dl.body)
            self.assertEqual(dl.json()["deleted"], True)
            self.assertError(c.get(V1 + "orders/c1"), 404, "not_found", detail_contains="c1")
            self.assertError(c.request("DELETE", V1 + "orders/c1"), 404, "not_found")
            self.assertError(c.post(V1 + "orders/c1/clear", {}), 404, "not_found")
            self.assertNotIn("c1", c.get_json(V1 + "orders")["counters"])
        self.assertEqual(post(s, "orders/c1/add-and-get", {"delta": 2})["count"], 2)
        # Bad input: 400 naming the field, nothing changed.
        with s.client() as c:
            for body, field in (({}, "delta"), ({"delta": 0}, "delta"),
                                ({"delta": 1.5}, "delta"), ({"delta": "1"}, "delta"),
                                ({"delta": 1, "idempotency_token": ""}, "idempotency_token"),
                                ({"delta": 1, "idempotency_token": "x" * 129},
                                 "idempotency_token"),
                                ({"delta": 1, "idempotency_token": 5}, "idempotency_token"),
                                ({"delta": 1, "idempotency_window_seconds": 0},
                                 "idempotency_window_seconds")):
                self.assertError(c.post(V1 + "orders/c1/add", body), 400, "bad_field",
                                 detail_contains=field)
            self.assertError(c.post(V1 + "bad!ns/c1/add", {"delta": 1}), 400, "bad_field",
                             detail_contains="namespace")
            self.assertError(c.post(V1 + "orders/b%20d/add", {"delta": 1}), 400, "bad_name")
            self.assertError(c.post(V1 + "orders/c1/add", b"{nope"), 400, "bad_json")
            self.assertError(c.get(V1 + "orders/c1/add"), 405, "method_not_allowed")
            self.assertError(c.post(V1 + "orders/c1/nothing", {}), 404, "not_found")
            self.assertError(c.get(V1 + "orders/never"), 404, "not_found")
            self.assertEqual(c.get_json(V1 + "orders/c1")["count"], 2)
            # The lab's endpoints are as they were: no token entries, no deleted counters.
            c.post_json("/increment", {"counter_name": "lab", "amount": 3})
            all_ = c.get_json("/counters")["counters"]
            self.assertEqual(all_, {"lab": 3, "orders/c1": 2, "orders/c2": 1, "other/c1": 7})

    def strong_node_id(self):
        return "%s-strong" % self.topo.regions[0].region

    def test_tokens_clear_and_delete_survive_a_leader_restart(self):
        s = self.strong
        post(s, "ns1/a/add", {"delta": 10, "idempotency_token": "r1"})
        post(s, "ns1/b/add", {"delta": 3})
        post(s, "ns1/b/clear", {"idempotency_token": "r2"})
        post(s, "ns1/c/add", {"delta": 1})
        with s.client() as c:
            self.assertEqual(c.request("DELETE", V1 + "ns1/c").status, 200)
        s.stop()
        s.start()
        wait_ready(self, s)
        self.assertIs(post(s, "ns1/a/add", {"delta": 10, "idempotency_token": "r1"})
                      .get("duplicate"), True)
        self.assertEqual(get_count(s, "ns1/a"), 10)
        self.assertEqual(get_count(s, "ns1/b"), 0)
        dup = post(s, "ns1/b/clear", {"idempotency_token": "r2"})
        self.assertEqual((dup["cleared"], dup.get("duplicate")), (3, True))
        with s.client() as c:
            self.assertError(c.get(V1 + "ns1/c"), 404, "not_found")
        self.assertEqual(post(s, "ns1/c/add-and-get", {"delta": 5})["count"], 5)

    def test_a_retry_after_an_ambiguous_answer_counts_once(self):
        s, topo = self.strong, self.topo
        post(s, "amb/x/add", {"delta": 10})
        # us-west's answers are lost on the way back (it still stores what it gets) and
        # eu-west is partitioned: no majority, and us-west may hold the proposal.
        faults = os.path.join(self.lua, "policies", "faults.lua")
        good = harness.read_text(faults)
        decide = "function M.decide(dir, from, to, kind, partitioned)\n"
        harness.write_atomic(faults, good.replace(decide, decide +
                             '  if kind == "strong-ack" and M.region_of(from) == "us-west" then\n'
                             '    return "drop"\n  end\n'))
        with s.client(timeout=10) as c:
            harness.assert_json_response(c.post("/admin/reload"), 200, "reload")
        set_partition(topo, "eu-west", True)
        with s.client(timeout=15) as c:
            body = self.assertError(c.post(V1 + "amb/x/add", {"delta": 5,
                                                              "idempotency_token": "k1"}),
                                    503, "ambiguous")
            self.assertIn("same idempotency_token applies it exactly once", body["detail"])
            body = self.assertError(c.post(V1 + "amb/x/add", {"delta": 7,
                                                              "idempotency_token": "k2"}),
                                    503, ("ambiguous", "no_quorum"))
        # The leader restarts while the outcome is unknown; healed, each retry counts once.
        s.stop()
        harness.write_atomic(faults, good)
        set_partition(topo, "eu-west", False)
        s.start()
        wait_ready(self, s)
        for _ in range(2):
            post(s, "amb/x/add", {"delta": 5, "idempotency_token": "k1"})
            post(s, "amb/x/add", {"delta": 7, "idempotency_token": "k2"})
        self.assertEqual(get_count(s, "amb/x"), 22)
        # And once more with the same leader: ambiguous, healed, retried twice.
        harness.write_atomic(faults, good.replace(decide, decide +
                             '  if kind == "strong-ack" and M.region_of(from) == "us-west" then\n'
                             '    return "drop"\n  end\n'))
        with s.client(timeout=10) as c:
            harness.assert_json_response(c.post("/admin/reload"), 200, "reload")
        set_partition(topo, "eu-west", True)
        with s.client(timeout=15) as c:
            self.assertError(c.post(V1 + "amb/x/add", {"delta": 100, "idempotency_token": "k3"}),
                             503, "ambiguous")
        harness.write_atomic(faults, good)
        with s.client(timeout=10) as c:
            harness.assert_json_response(c.post("/admin/reload"), 200, "reload")
        set_partition(topo, "eu-west", False)
        for _ in range(2):
            post(s, "amb/x/add", {"delta": 100, "idempotency_token": "k3"})
        self.assertEqual(get_count(s, "amb/x"), 122)


if __name__ == "__main__":
    unittest.main()
