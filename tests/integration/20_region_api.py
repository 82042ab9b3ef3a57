"""
20_region_api.py - one region node, field by field against docs/API.md
("Region node" and "Errors").

Every bad input is checked for its status and error code, and afterwards that the counter
it aimed at did not move and that /health still answers (nothing is half-applied).
"""

import time
import unittest

import harness

REGION = "ap-south"
NODE = "ap-south-7"
I64_MAX = 2**63 - 1


class RegionApi(harness.ServerTestCase):
    @classmethod
    def setUpClass(cls):
        cls.srv = cls.start_class_server(["--region", REGION, "--node-id", NODE,
                                          "--sync-interval-ms", "60000",
                                          "--metrics-top-n", "1000"], name="region")

    def setUp(self):
        super().setUp()
        self.c = self.srv.client()
        self.addCleanup(self.c.close)

    # Helpers ---------------------------------------------------------------------------

    def incr(self, name, amount, status=200):
        return self.c.post_json("/increment", {"counter_name": name, "amount": amount}, status)

    def counter(self, name):
        return self.c.get_json("/counter/%s" % name)

    def assertHealth(self):
        with self.srv.client() as c:
            r = c.get("/health")
        self.assertEqual(r.status, 200, "/health after a bad request: %r" % r)

    def assertUnchanged(self, name, before, what):
        after = self.counter(name)
        self.assertJsonEqual(after, before, "%s changed counter %r" % (what, name))
        self.assertHealth()

    # Plain endpoints ---------------------------------------------------------------------

    def test_health_exact(self):
        r = self.c.get("/health")
        harness.assert_json_response(r, 200, "GET /health")
        self.assertJsonEqual(r.json(), {"status": "ok", "service": "counter",
                                        "region": REGION, "node_id": NODE})

    def test_increment_defaults(self):
        # The only test that touches "views".
        r = self.c.post_json("/increment", {})
        self.assertJsonEqual(r, {"counter": "views", "local_count": 1, "total_count": 1,
                                 "node_id": NODE, "region": REGION})
        r = self.c.post("/increment")  # no body at all (Content-Length: 0)
        harness.assert_json_response(r, 200, "POST /increment without a body")
        self.assertJsonEqual(r.json(), {"counter": "views", "local_count": 2, "total_count": 2,
                                        "node_id": NODE, "region": REGION})
        r = self.c.post_json("/increment", {"amount": 3})
        self.assertJsonEqual(r, {"counter": "views", "local_count": 5, "total_count": 5,
                                 "node_id": NODE, "region": REGION})
        r = self.c.post_json("/increment", {"counter_name": "views"})
        self.assertEqual(r["local_count"], 6)
        self.assertJsonEqual(self.counter("views"),
                             {"counter": "views", "local_count": 6, "total_count": 6,
                              "nodes": {NODE: 6}, "region": REGION, "node_id": NODE})

    def test_increment_named(self):
        r = self.incr("named", 5)
        self.assertJsonEqual(r, {"counter": "named", "local_count": 5, "total_count": 5,
                                 "node_id": NODE, "region": REGION})
        r = self.incr("named", 37)
        self.assertJsonEqual(r, {"counter": "named", "local_count": 42, "total_count": 42,
                                 "node_id": NODE, "region": REGION})
        self.assertJsonEqual(self.counter("named"),
                             {"counter": "named", "local_count": 42, "total_count": 42,
                              "nodes": {NODE: 42}, "region": REGION, "node_id": NODE})

    def test_increment_amount_zero(self):
        r = self.incr("zero", 0)
        self.assertEqual((r["local_count"], r["total_count"]), (0, 0))

    def test_name_charset_and_length_limits_accepted(self):
        for name in ("aZ09_.:-", "x" * 200, "A", "0", "-", "a.b:c_d-e"):
            r = self.incr(name, 1)
            self.assertEqual(r["counter"], name)
            self.assertEqual(self.counter(name)["total_count"], 1, "GET /counter/%s" % name)

    def test_unknown_counter_reads_zero_and_creates_nothing(self):
        got = self.counter("never_written")
        self.assertJsonEqual(got, {"counter": "never_written", "local_count": 0,
                                   "total_count": 0, "nodes": {}, "region": REGION,
                                   "node_id": NODE})
        counters = self.c.get_json("/counters")["counters"]
        self.assertNotIn("never_written", counters, "reading a counter created it")

    def test_counters_shape(self):
        self.incr("shape_a", 4)
        self.incr("shape_b", 9)
        self.incr("shape_b", -2)
        body = self.c.get_json("/counters")
        self.assertEqual(set(body), {"region", "node_id", "network_partition", "last_sync_time",
                                     "counters", "total_counters", "truncated"},
                         "keys of GET /counters: %r" % sorted(body))
        self.assertEqual(body["region"], REGION)
        self.assertEqual(body["node_id"], NODE)
        self.assertIs(body["network_partition"], False)
        self.assertTrue(type(body["last_sync_time"]) in (int, float),
                        "last_sync_time must be a number: %r" % body["last_sync_time"])
        self.assertJsonEqual(body["counters"]["shape_a"],
                             {"local_count": 4, "total_count": 4, "nodes": {NODE: 4}})
        self.assertJsonEqual(body["counters"]["shape_b"],
                             {"local_count": 7, "total_count": 7, "nodes": {NODE: 7}})
        for name, entry in body["counters"].items():
            self.assertEqual(set(entry), {"local_count", "total_count", "nodes"},
                             "counters[%r]: %r" % (name, entry))

    def test_decrements(self):
        self.incr("dec", 10)
        r = self.incr("dec", -3)
        self.assertJsonEqual(r, {"counter": "dec", "local_count": 7, "total_count": 7,
                                 "node_id": NODE, "region": REGION})
        self.assertJsonEqual(self.counter("dec"),
                             {"counter": "dec", "local_count": 7, "total_count": 7,
                              "nodes": {NODE: 7}, "region": REGION, "node_id": NODE})
        r = self.incr("dec", -10)
        self.assertEqual(r["total_count"], -3, "counts are signed: 10 - 3 - 10")
        self.assertEqual(self.counter("dec")["nodes"], {NODE: -3})

    def test_partition_admin(self):
        self.assertJsonEqual(self.c.get_json("/admin/partition"),
                             {"network_partition": False, "region": REGION, "node_id": NODE})
        try:
            r = self.c.post_json("/admin/partition", {"enabled": True})
            self.assertJsonEqual(r, {"network_partition": True, "region": REGION,
                                     "node_id": NODE, "message": "Network partition enabled"})
            self.assertJsonEqual(self.c.get_json("/admin/partition"),
                                 {"network_partition": True, "region": REGION, "node_id": NODE})
            self.assertIs(self.c.get_json("/counters")["network_partition"], True)
            # A partitioned node keeps serving clients...
            self.assertEqual(self.incr("part_local", 2)["local_count"], 2)
            self.assertEqual(self.counter("part_local")["total_count"], 2)
            # ...but accepts no replication and merges nothing.
            r = self.c.post("/sync", {"counts": {"part_local": {"peer-x": 50}},
                                      "node_id": "peer-x", "timestamp": time.time()})
            self.assertError(r, 503, "partitioned", "POST /sync while partitioned")
            self.assertEqual(self.counter("part_local")["nodes"], {NODE: 2})
            r = self.c.post("/admin/force-sync")
            self.assertError(r, 503, "partitioned", "POST /admin/force-sync while partitioned")
        finally:
            r = self.c.post_json("/admin/partition", {"enabled": False})
        self.assertIs(r["network_partition"], False)
        self.assertEqual((r["region"], r["node_id"]), (REGION, NODE))
        self.assertJsonEqual(self.c.get_json("/admin/partition"),
                             {"network_partition": False, "region": REGION, "node_id": NODE})

    def test_force_sync_without_peers(self):
        self.incr("fs_alone", 3)
        r = self.c.post_json("/admin/force-sync")
        self.assertEqual(r["status"], "sync_completed")
        self.assertEqual((r["region"], r["node_id"]), (REGION, NODE))
        self.assertJsonEqual(r["counters"]["fs_alone"],
                             {"local_count": 3, "total_count": 3, "nodes": {NODE: 3}})

    def test_sync_merges_per_node_max(self):
        now = time.time()
        r = self.c.post_json("/sync", {"counts": {"synced": {"peer-9": 7}}, "node_id": "peer-9",
                                       "timestamp": now})
        self.assertEqual(r.get("node_id"), NODE, "answer of /sync: %r" % r)
        self.assertTrue(type(r.get("timestamp")) in (int, float), "answer of /sync: %r" % r)
        self.assertEqual(r["counts"]["synced"], {"peer-9": 7}, "answer of /sync: %r" % r)
        self.assertJsonEqual(self.counter("synced"),
                             {"counter": "synced", "local_count": 0, "total_count": 7,
                              "nodes": {"peer-9": 7}, "region": REGION, "node_id": NODE})
        # An older (smaller) value does not go back.
        self.c.post_json("/sync", {"counts": {"synced": {"peer-9": 3}}, "node_id": "peer-9",
                                   "timestamp": now})
        self.assertEqual(self.counter("synced")["total_count"], 7)
        # Local increments live beside the peer's entry.
        self.incr("synced", 2)
        self.assertEqual(self.counter("synced")["nodes"], {"peer-9": 7, NODE: 2})
        # Decrements travel beside the counts and are max-merged too.
        r = self.c.post_json("/sync", {"counts": {"synced": {"peer-9": 7}},
                                       "decrements": {"synced": {"peer-9": 4}},
                                       "node_id": "peer-9", "timestamp": now})
        self.assertEqual(r["decrements"]["synced"], {"peer-9": 4}, "answer of /sync: %r" % r)
        self.assertJsonEqual(self.counter("synced"),
                             {"counter": "synced", "local_count": 2, "total_count": 5,
                              "nodes": {"peer-9": 3, NODE: 2}, "region": REGION,
                              "node_id": NODE})

    def test_idempotency_token(self):
        body = {"counter_name": "idem", "amount": 5, "idempotency_token": "tok-1"}
        first = self.c.post_json("/increment", body)
        self.assertEqual(first["local_count"], 5)
        self.assertNotEqual(first.get("duplicate"), True, "first use flagged as duplicate")
        second = self.c.post_json("/increment", body)
        expected = dict(first)
        expected["duplicate"] = True
        self.assertJsonEqual(second, expected,
                             "retry with the same idempotency_token must return the first "
                             "answer plus \"duplicate\": true")
        self.assertEqual(self.counter("idem")["total_count"], 5, "the retry was counted")
        third = self.c.post_json("/increment", dict(body, idempotency_token="tok-2"))
        self.assertEqual(third["local_count"], 10, "a new token must count")
        self.assertNotEqual(third.get("duplicate"), True)

    def test_idempotency_token_too_long(self):
        before = self.counter("idem_long")
        r = self.c.post("/increment", {"counter_name": "idem_long", "amount": 1,
                                       "idempotency_token": "t" * 129})
        self.assertError(r, 400, "bad_field", "idempotency_token of 129 bytes",
                         detail_contains="idempotency_token")
        self.assertUnchanged("idem_long", before, "too long token")
        r = self.c.post_json("/increment", {"counter_name": "idem_long", "amount": 1,
                                            "idempotency_token": "t" * 128})
        self.assertEqual(r["local_count"], 1, "a 128-byte token must be accepted")

    # /metrics ----------------------------------------------------------------------------

    def test_metrics(self):
        self.incr("metric_me", 2)
        r = self.c.get("/metrics")
        self.assertEqual(r.status, 200)
        self.assertTrue(r.content_type.startswith("text/plain"),
                        "Content-Type of /metrics: %r" % r.content_type)
        text = r.text()
        samples = harness.parse_metrics(text)
        names = {n for n, _, _ in samples}
        for want in ("counter_increments_total", "counter_local_count",
                     "counter_sync_operations_total"):
            self.assertIn(want, names, "/metrics has no %s sample" % want)
        incs = harness.metric_values(samples, "counter_increments_total",
                                     counter_name="metric_me", region=REGION)
        self.assertEqual(len(incs), 1, "counter_increments_total{counter_name=\"metric_me\"}: "
                         "%r" % incs)
        self.assertGreater(incs[0], 0)
        if not harness.promtool_path():
            print("\n[20_region_api] promtool not on PATH: checked with the built-in "
                  "parser only")
            return
        tolerated = harness.assert_promtool_clean(self, r.body, "region")
        self.assertEqual([t for t in tolerated if not t[0].startswith("counterd_counter_")],
                         [("counter_sync_lag_ms",
                           "metric names should not contain abbreviated units")])

    # Bad input ---------------------------------------------------------------------------

    def bad_increment(self, body, status, codes, what, detail_contains=None, target="bad_target"):
        before = self.counter(target)
        if isinstance(body, (bytes, str)):
            r = self.c.post("/increment", body if isinstance(body, bytes) else body.encode())
        else:
            r = self.c.post("/increment", body)
        self.assertError(r, status, codes, what, detail_contains)
        self.assertUnchanged(target, before, what)

    def prime(self, name, value):
        cur = self.counter(name)["total_count"]
        if cur != value:
            self.incr(name, value - cur)
        self.assertEqual(self.counter(name)["total_count"], value)

    def test_bad_json(self):
        self.prime("bad_target", 10)
        self.bad_increment(b'{"counter_name":"bad_target","amount":', 400, "bad_json",
                           "truncated JSON")
        self.bad_increment(b'{"counter_name":"bad_target","amount":1,}', 400, "bad_json",
                           "trailing comma")
        self.bad_increment(b'not json', 400, "bad_json", "not JSON")
        self.bad_increment(b'{"counter_name":"bad_target","amount":1} x', 400, "bad_json",
                           "garbage after the object")

    def test_body_not_an_object(self):
        # API.md names no code for a well-formed JSON body of the wrong type: 400 with
        # bad_json or bad_field.
        self.prime("bad_target", 10)
        for body in (b'[1,2]', b'["bad_target", 5]', b'"bad_target"', b'42', b'null'):
            self.bad_increment(body, 400, ("bad_json", "bad_field"), "body %r" % body)

    def test_bad_amount(self):
        self.prime("bad_target", 10)
        cases = [
            ('"5"', "amount as a string"),
            ("1.5", "amount 1.5"),
            ("1e3", "amount 1e3"),
            ("1.0", "amount 1.0"),
            ("9223372036854775808", "amount 2**63"),
            ("-9223372036854775809", "amount -(2**63)-1"),
            ("true", "amount true"),
            ("[1]", "amount [1]"),
            ('{"n":1}', "amount object"),
        ]
        for raw, what in cases:
            body = ('{"counter_name":"bad_target","amount":%s}' % raw).encode()
            self.bad_increment(body, 400, "bad_field", what, detail_contains="amount")

    def test_bad_counter_name_type(self):
        self.prime("bad_target", 10)
        for raw in ("42", "true", "[\"a\"]", "{}"):
            body = ('{"counter_name":%s,"amount":1}' % raw).encode()
            self.bad_increment(body, 400, "bad_field", "counter_name %s" % raw,
                               detail_contains="counter_name")

    def test_bad_counter_names(self):
        self.prime("bad_target", 10)
        for name in ("", "a b", "x" * 201, "\u00e9", "a/b", "a\u0000b", "a\nb", "caf\u00e9",
                     "a%2Fb", "a?b", "a#b"):
            self.bad_increment({"counter_name": name, "amount": 1}, 400, "bad_name",
                               "counter_name %r" % name)
            self.assertNotIn(name, self.c.get_json("/counters")["counters"])

    def test_bad_counter_name_in_path(self):
        for path in ("/counter/a%20b", "/counter/" + "x" * 201, "/counter/%C3%A9",
                     "/counter/a%2Fb"):
            r = self.c.get(path)
            self.assertError(r, 400, "bad_name", "GET %s" % path)
        self.assertHealth()

    def test_overflow(self):
        r = self.incr("ovf", I64_MAX)
        self.assertEqual(r["total_count"], I64_MAX)
        before = self.counter("ovf")
        self.assertEqual(before["total_count"], I64_MAX)
        self.bad_increment({"counter_name": "ovf", "amount": 1}, 409, "overflow",
                           "2**63-1 then +1", target="ovf")
        self.bad_increment({"counter_name": "ovf", "amount": -(2**63)}, 409, "overflow",
                           "2**63-1 then -(2**63)", target="ovf")
        # A counter that only goes down: -(2**63) as an amount is out of range for the
        # per-node total of the amounts subtracted.
        self.bad_increment({"counter_name": "ovf_neg", "amount": -(2**63)}, 409, "overflow",
                           "-(2**63) on a new counter", target="ovf_neg")
        self.assertNotIn("ovf_neg", self.c.get_json("/counters")["counters"],
                         "a rejected increment created the counter")
        # The counter still works in range.
        self.assertEqual(self.incr("ovf", -1)["total_count"], I64_MAX - 1)

    def test_unknown_path_404(self):
        for method, path in (("GET", "/nope"), ("POST", "/nope"), ("GET", "/counter"),
                             ("GET", "/admin/nope"), ("GET", "/healthz")):
            r = self.c.request(method, path)
            self.assertError(r, 404, "not_found", "%s %s" % (method, path))
        self.assertHealth()

    def test_wrong_method_405(self):
        for method, path in (("GET", "/increment"), ("POST", "/health"),
                             ("DELETE", "/counter/x"), ("PUT", "/increment"),
                             ("GET", "/sync"), ("GET", "/admin/force-sync"),
                             ("POST", "/counters"), ("POST", "/metrics")):
            r = self.c.request(method, path)
            self.assertError(r, 405, "method_not_allowed", "%s %s" % (method, path))
        self.assertHealth()

    def bad_sync(self, body, status, codes, what):
        self.prime("bad_target", 10)
        before = self.counter("bad_target")
        before_other = self.counter("bad_other")
        r = self.c.post("/sync", body)
        self.assertError(r, status, codes, what)
        self.assertUnchanged("bad_target", before, what)
        self.assertUnchanged("bad_other", before_other, what)

    def test_sync_bad_bodies(self):
        ts = time.time()
        for body, codes in ((b"[1]", ("bad_json", "bad_field")),
                            (b'"counts"', ("bad_json", "bad_field")),
                            (b"{", ("bad_json",))):
            self.bad_sync(body, 400, codes, "POST /sync %r" % body)
        self.bad_sync({"counts": [1], "node_id": "peer-z", "timestamp": ts}, 400, "bad_field",
                      "counts is a list")
        # An entry counterd cannot hold is skipped and listed; the rest of the body merges.
        for entry, reason in ((-5, "negative"), (1.5, "not_an_integer"), ("5", "not_an_integer"),
                              (2**63, "out_of_range")):
            self.prime("bad_target", 10)
            before = self.counter("bad_target")
            r = self.c.post_json("/sync", {"counts": {"bad_target": {"peer-z": entry},
                                                      "good_z": {"peer-z": 5}},
                                           "node_id": "peer-z", "timestamp": ts})
            self.assertEqual(r["rejected"], [{"counter": "bad_target", "node_id": "peer-z",
                                              "reason": reason}], "entry %r" % (entry,))
            self.assertEqual(r["rejected_count"], 1)
            self.assertUnchanged("bad_target", before, "entry %r" % (entry,))
            self.assertEqual(self.counter("good_z")["nodes"], {"peer-z": 5})
        r = self.c.post_json("/sync", {"counts": {"bad_target": {"peer-z": 1}},
                                       "decrements": {"bad_target": {"peer-z": -1}},
                                       "node_id": "peer-z", "timestamp": ts})
        self.assertEqual([x["reason"] for x in r["rejected"]], ["negative"])
        self.assertEqual(self.counter("bad_target")["nodes"]["peer-z"], 1)
        r = self.c.post_json("/sync", {"counts": {"good_y": {"peer-z": 5}, "a b": {"peer-z": 1}},
                                       "node_id": "peer-z", "timestamp": ts})
        self.assertEqual(r["rejected"], [{"counter": "a b", "reason": "bad_name"}])
        self.assertEqual(self.counter("good_y")["total_count"], 5)
        self.bad_sync({"counts": {"bad_other": {"peer-z": 5}}, "decrements": [1],
                       "node_id": "peer-z", "timestamp": ts}, 400, "bad_field",
                      "decrements is a list")


if __name__ == "__main__":
    unittest.main()
