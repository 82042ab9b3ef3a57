"""
78_gateway_lifecycle.py - namespaces and counter operations through the gateway (API.md,
"Through the gateway"), with a real gateway, three regions and the strong counter.

- Namespace CRUD via the gateway: PUT/DELETE go to one region, GET fans out and says each
  region's version and whether they converged; bad input 400 naming the field.
- eventual: add / add-and-get / clear / GET / DELETE / listing; an add whose region is
  down fails over with the same token and counts once; a client retry with its token
  answers duplicate; the C hot path (a namespace known as eventual) and the Lua path agree.
- regional: counted in the region it lands in, never elsewhere; no failover unless the
  client asks ("failover":true), and then the answer says where it counted.
- strong: every operation goes to the strong counter (checked by reading it directly); a
  retry with the same token after a 503 ambiguous counts once.
- An unknown namespace is 404, a namespace created a moment ago works at once; /metrics
  counts /v1 requests by endpoint template.
"""

import os
import shutil
import tempfile
import time
import unittest

import harness

V1 = "/v1/counters/"


class GatewayLifecycleTest(harness.ServerTestCase):
    def setUp(self):
        super().setUp()
        self.data = tempfile.mkdtemp(prefix="counterd-gwlc-")
        self.addCleanup(shutil.rmtree, self.data, True)
        self.lua = os.path.join(self.data, "lua")
        shutil.copytree(os.environ.get("COUNTERD_LUA_DIR") or
                        os.path.join(harness.REPO_ROOT, "lua"), self.lua)
        self.topo = harness.Topology(
            region_args=lambda i: ["--data-dir", "%s/r%d" % (self.data, i)], strong=True,
            strong_args=["--lua-dir", self.lua], sync_interval_ms=300)
        self.topo.start(self.addCleanup)
        self.gw = self.topo.gateway
        deadline = time.monotonic() + 10
        while True:
            with self.topo.strong.client() as c:
                if c.get_json("/health").get("ready"):
                    break
            self.assertLess(time.monotonic(), deadline, "the strong leader is not ready")
            time.sleep(0.05)
        with self.gw.client() as c:
            harness.wait_gateway_names_homes(c)

    def put_ns(self, ns, body, status=200):
        with self.gw.client() as c:
            r = c.request("PUT", "/v1/namespaces/" + ns, body)
        self.assertEqual(r.status, status, r.body[:300])
        return r.json()

    def op(self, path, body, status=200, headers=None):
        with self.gw.client(timeout=20) as c:
            r = c.request("POST", V1 + path, body, headers=headers)
        self.assertEqual(r.status, status, "%s: %s" % (path, r.body[:400]))
        return r.json()

    def get(self, srv, path, status=200):
        with srv.client() as c:
            r = c.get(path)
        self.assertEqual(r.status, status, "%s: %s" % (path, r.body[:400]))
        return r.json()

    def wait_converged(self, ns, timeout=10):
        deadline = time.monotonic() + timeout
        while True:
            g = self.get(self.gw, "/v1/namespaces/" + ns)
            if g["converged"]:
                return g
            self.assertLess(time.monotonic(), deadline, "never converged: %r" % g)
            time.sleep(0.1)

    def test_namespaces_crud(self):
        p = self.put_ns("shop", {"type": "eventual", "ttl_seconds": 0})
        self.assertEqual((p["namespace"], p["type"], p["deleted"]), ("shop", "eventual", False))
        v1 = p["version"]
        g = self.wait_converged("shop")
        self.assertEqual(set(g["regions"]), {"us-east", "us-west", "eu-west"})
        self.assertEqual({r["version"] for r in g["regions"].values()}, {v1})
        p2 = self.put_ns("shop", {"idempotency_window_seconds": 60})
        self.assertGreater(p2["version"], v1)
        g = self.wait_converged("shop")
        self.assertEqual((g["version"], g["idempotency_window_seconds"]), (p2["version"], 60))
        lst = self.get(self.gw, "/v1/namespaces")
        self.assertIn("shop", [n["namespace"] for n in lst["namespaces"]])
        self.assertIn("converged", lst)
        self.assertEqual(set(lst["regions"]), {"us-east", "us-west", "eu-west"})
        # Bad input: 400 naming the field; a type change 409.
        with self.gw.client() as c:
            self.assertError(c.request("PUT", "/v1/namespaces/shop", {"type": "nope"}), 400,
                             "bad_field", detail_contains="type")
            self.assertError(c.request("PUT", "/v1/namespaces/shop", {"type": "strong"}), 409,
                             "type_change")
            self.assertError(c.request("PUT", "/v1/namespaces/bad!ns", {}), 400, "bad_field",
                             detail_contains="namespace")
            d = c.request("DELETE", "/v1/namespaces/shop")
            self.assertEqual(d.status, 200, d.body)
            self.assertIs(d.json()["deleted"], True)
        deadline = time.monotonic() + 10
        while True:
            with self.gw.client() as c:
                r = c.get("/v1/namespaces/shop")
            if r.status == 404:
                break
            self.assertLess(time.monotonic(), deadline, r.body)
            time.sleep(0.1)
        self.op("shop/c/add", {"delta": 1}, status=404)

    def test_eventual_operations_and_failover(self):
        self.put_ns("ev", {"type": "eventual"})
        # It works at once: the gateway learns it, and a region that has not received it
        # yet passes the add to one that has.
        for i in range(3):
            self.op("ev/first/add", {"delta": 1})
        self.wait_converged("ev")
        a = self.op("ev/c1/add", {"delta": 5, "routing": "us-west"})
        self.assertEqual((a["namespace"], a["counter"], a["delta"]), ("ev", "c1", 5))
        for k in ("routed_to_endpoint", "routing", "latency_ms", "region", "node_id"):
            self.assertIn(k, a)
        self.assertEqual(a["routing"], "us-west")
        self.assertEqual(a["routed_to_endpoint"], self.topo.region("us-west").url)
        # The namespace is known now: the C hot path serves adds; same answers.
        for _ in range(3):
            self.op("ev/c1/add", {"delta": 1, "routing": "us-west"})
        g = self.op("ev/c1/add-and-get", {"delta": 2, "routing": "us-west",
                                          "idempotency_token": "tok-1"})
        self.assertEqual(g["count"], 10)
        d = self.op("ev/c1/add-and-get", {"delta": 2, "routing": "us-west",
                                          "idempotency_token": "tok-1"})
        self.assertIs(d["duplicate"], True)
        # us-west down: the add fails over with the same token and counts once.
        west = self.topo.region("us-west")
        west.stop()
        f = self.op("ev/c1/add", {"delta": 100, "routing": "us-west",
                                  "idempotency_token": "tok-2"})
        self.assertNotEqual(f["routed_to_endpoint"], west.url)
        again = self.op("ev/c1/add", {"delta": 100, "routing": "us-east",
                                      "idempotency_token": "tok-2"})
        # (Held pending there until the token's home settles it: counted once either way.)
        self.assertTrue(again.get("duplicate") or again.get("pending"), again)
        west.start()
        with self.gw.client() as c:
            harness.wait_gateway_names_homes(c)
        deadline = time.monotonic() + 15
        while True:
            counts = [self.get(r, V1 + "ev/c1")["count"]
                      for r in self.topo.regions]
            if counts == [110, 110, 110]:
                break
            self.assertLess(time.monotonic(), deadline, "counts %r" % counts)
            time.sleep(0.2)
        r = self.get(self.gw, V1 + "ev/c1")
        self.assertEqual(r["count"], 110)
        self.assertIn("routed_to_endpoint", r)
        lst = self.get(self.gw, V1 + "ev")
        self.assertEqual(lst["counters"]["c1"]["count"], 110)

    def test_eventual_clear_and_delete(self):
        self.put_ns("ev2", {"type": "eventual"})
        self.wait_converged("ev2")
        self.op("ev2/c/add", {"delta": 9, "routing": "us-east"})
        cl = self.op("ev2/c/clear", {"idempotency_token": "clr", "routing": "us-east"})
        self.assertEqual((cl["cleared"], cl["count"]), (9, 0))
        self.assertIs(self.op("ev2/c/clear", {"idempotency_token": "clr", "routing": "us-east"})
                      .get("duplicate"), True)
        with self.gw.client() as c:
            dl = c.request("DELETE", V1 + "ev2/c?routing=us-east")
            self.assertEqual(dl.status, 200, dl.body)
            self.assertIs(dl.json()["deleted"], True)
            self.assertError(c.get(V1 + "ev2/c?routing=us-east"), 404, "not_found")
            self.assertError(c.request("DELETE", V1 + "ev2/never"), 404, "not_found")

    def test_default_routing_is_sticky(self):
        """Without "routing", a counter's operations meet at one region (its home): each
        add-and-get sees the ones before it (in C), a GET and a clear through the Lua role
        go to the same region, and the clear observes every add. Random routing would
        spread ten operations over the regions (all at one: p = 3 * 3^-10)."""
        self.put_ns("st", {"type": "eventual"})
        self.wait_converged("st")
        seen = set()
        for i in range(1, 11):
            a = self.op("st/home/add-and-get", {"delta": 1})
            self.assertEqual(a["count"], i, a)
            self.assertEqual(a["routing"], "sticky")
            self.assertNotIn("pending", a)  # a token made for its region: counted there at once
            seen.add(a["region"])
        self.assertEqual(len(seen), 1, seen)
        with self.gw.client() as c:
            g = c.get(V1 + "st/home")
        self.assertEqual(g.status, 200, g.body)
        self.assertEqual((g.json()["region"], g.json()["count"]), (seen.pop(), 10))
        cl = self.op("st/home/clear", {})
        self.assertEqual((cl["region"], cl["cleared"], cl["count"]), (g.json()["region"], 10, 0))

    def test_regional_stays_in_its_region(self):
        self.put_ns("loc", {"type": "regional"})
        self.wait_converged("loc")
        a = self.op("loc/c/add-and-get", {"delta": 3, "routing": "us-west"})
        self.assertEqual((a["region"], a["count"]), ("us-west", 3))
        time.sleep(1)  # a few sync rounds: nothing moves
        self.get(self.topo.region("us-east"), V1 + "loc/c", status=404)
        self.assertEqual(self.get(self.topo.region("us-west"), V1 + "loc/c")["count"], 3)
        west = self.topo.region("us-west")
        west.stop()
        with self.gw.client(timeout=20) as c:
            body = self.assertError(c.post(V1 + "loc/c/add", {"delta": 1, "routing": "us-west"}),
                                    503, "unavailable", detail_contains="failover")
        f = self.op("loc/c/add", {"delta": 1, "routing": "us-west", "failover": True})
        self.assertEqual(f["failover_from"], "us-west")
        self.assertNotEqual(f["region"], "us-west")
        self.assertIsNotNone(body)

    def test_strong_goes_to_the_strong_counter(self):
        self.put_ns("acc", {"type": "strong"})
        self.wait_converged("acc")
        strong = self.topo.strong
        a = self.op("acc/x/add", {"delta": 7})
        self.assertEqual(a["routed_to_endpoint"], "strong")
        self.assertNotIn(strong.url, str(a))
        self.assertEqual(self.get(strong, V1 + "acc/x")["count"], 7)
        g = self.op("acc/x/add-and-get", {"delta": 1, "idempotency_token": "s1"})
        self.assertEqual(g["count"], 8)
        self.assertIs(self.op("acc/x/add-and-get", {"delta": 1, "idempotency_token": "s1"})
                      ["duplicate"], True)
        self.assertEqual(self.get(self.gw, V1 + "acc/x")["count"], 8)
        self.assertEqual(self.op("acc/x/clear", {})["cleared"], 8)
        self.assertEqual(self.get(strong, V1 + "acc/x")["count"], 0)
        # Nothing went to a region: they refuse a strong namespace's counters.
        for r in self.topo.regions:
            with r.client() as c:
                self.assertError(c.get(V1 + "acc/x"), 409, "wrong_service")
        # A retry with the same token after a 503 ambiguous counts once.
        faults = os.path.join(self.lua, "policies", "faults.lua")
        good = harness.read_text(faults)
        decide = "function M.decide(dir, from, to, kind, partitioned)\n"
        harness.write_atomic(faults, good.replace(decide, decide +
                             '  if kind == "strong-ack" and M.region_of(from) == "us-west" then\n'
                             '    return "drop"\n  end\n'))
        with strong.client(timeout=10) as c:
            harness.assert_json_response(c.post("/admin/reload"), 200, "reload")
        with self.topo.region("eu-west").client() as c:
            c.post_json("/admin/partition", {"enabled": True})
        with self.gw.client(timeout=20) as c:
            self.assertError(c.post(V1 + "acc/x/add", {"delta": 50, "idempotency_token": "amb"}),
                             503, "ambiguous")
            # Without a token of its own, the client is told the one the gateway made.
            made = self.assertError(c.post(V1 + "acc/x/add", {"delta": 1000}), 503,
                                    ("ambiguous", "no_quorum"))["idempotency_token"]
        harness.write_atomic(faults, good)
        with strong.client(timeout=10) as c:
            harness.assert_json_response(c.post("/admin/reload"), 200, "reload")
        with self.topo.region("eu-west").client() as c:
            c.post_json("/admin/partition", {"enabled": False})
        for _ in range(2):
            self.op("acc/x/add", {"delta": 50, "idempotency_token": "amb"})
            self.op("acc/x/add", {"delta": 1000, "idempotency_token": made})
        self.assertEqual(self.get(strong, V1 + "acc/x")["count"], 1050)
        with self.gw.client() as c:
            self.assertEqual(c.request("DELETE", V1 + "acc/x").status, 200)
            self.assertError(c.get(V1 + "acc/x"), 404, "not_found")

    def test_bad_input_and_unknown_namespace(self):
        with self.gw.client() as c:
            self.assertError(c.post(V1 + "nowhere/c/add", {"delta": 1}), 404, "not_found",
                             detail_contains="nowhere")
            self.assertError(c.get(V1 + "nowhere/c"), 404, "not_found")
            for body, field in (({}, "delta"), ({"delta": 0}, "delta"), ({"delta": "1"}, "delta"),
                                ({"delta": 1, "idempotency_token": 3}, "idempotency_token"),
                                ({"delta": 1, "routing": 5}, "routing"),
                                ({"delta": 1, "failover": "yes"}, "failover")):
                self.assertError(c.post(V1 + "default/c/add", body), 400, "bad_field",
                                 detail_contains=field)
            self.assertError(c.post(V1 + "default/c/add", {"delta": 1, "routing": "mars"}), 400,
                             "bad_field", detail_contains="routing")
            self.assertError(c.post(V1 + "bad!ns/c/add", {"delta": 1}), 400, "bad_field",
                             detail_contains="namespace")
            self.assertError(c.post(V1 + "default/b%20d/add", {"delta": 1}), 400, "bad_name")
            self.assertError(c.get(V1 + "default/c/add"), 405, "method_not_allowed")
            # The default namespace is eventual and keys counters by their name.
            a = c.post_json(V1 + "default/plain/add", {"delta": 4, "routing": "us-east"})
        with self.topo.region("us-east").client() as c:
            self.assertEqual(c.get_json("/counter/plain")["local_count"], 4, a)
        with self.gw.client() as c:
            text = c.get("/metrics").text()
        samples = harness.parse_metrics(text)
        got = harness.metric_values(samples, "gateway_requests_total", method="POST",
                                    endpoint="/v1/counters/{ns}/{name}/add", status="400")
        self.assertGreaterEqual(sum(got), 6)
        labels = {s[1].get("endpoint") for s in samples if s[0] == "gateway_requests_total"}
        self.assertFalse([l for l in labels if l and ("plain" in l or "nowhere" in l)], labels)


if __name__ == "__main__":
    unittest.main()
