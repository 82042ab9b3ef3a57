"""
87_compare.py - POST /api/compare (lua/bench/compare.lua, served by the gateway) through
the real binaries: three regions, the coordinator, the strong counter and the gateway,
with the WAN latency model of lua/policies/faults.lua on, as in the lab.

- The answer has every field of API.md with the right types, statistics that hold
  together, speedup = strong avg / eventual avg, and the conclusion's wording; every
  sample was a real increment (the regions and the strong counter counted them).
- The strong side is several times slower than the eventual one, for a reason: its
  majority round crosses the WAN, which POST /admin/coordination-delay changes.
- Bad input is 400 with a detail naming the field, and counts nothing.
- The gateway's gateway_consistency_comparison_seconds histogram counts the samples.
- With two regions partitioned the strong side has no majority: 503 saying so.
"""

import re
import time
import unittest

import harness

SIDE_FIELDS = {"description", "avg_ms", "min_ms", "max_ms", "p50_ms", "p99_ms"}
STATS = ("avg_ms", "min_ms", "max_ms", "p50_ms", "p99_ms")


def histogram_count(srv, kind):
    with srv.client() as c:
        text = c.get("/metrics").text()
    samples = harness.parse_metrics(text)
    return (sum(harness.metric_values(samples, "gateway_consistency_comparison_seconds_count",
                                      consistency_type=kind)),
            sum(harness.metric_values(samples, "gateway_consistency_comparison_seconds_sum",
                                      consistency_type=kind)))


class CompareTest(harness.ServerTestCase):
    def setUp(self):
        super().setUp()
        self.topo = harness.Topology(strong=True)
        self.topo.start(self.addCleanup)
        self.gw = self.topo.gateway.client(timeout=30)
        self.addCleanup(self.gw.close)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with self.topo.strong.client() as c:
                if c.get_json("/health").get("ready"):
                    return
            time.sleep(0.05)
        self.fail("the strong leader did not become ready")

    def compare(self, body, status=200):
        return self.gw.post_json("/api/compare", body, status)

    def strong_value(self, name):
        with self.topo.strong.client() as c:
            return c.get_json("/counter/%s" % name)["value"]

    def eventual_total(self, name):
        """Increments the regions took for `name`: each region's own count, summed."""
        total = 0
        for r in self.topo.regions:
            with r.client() as c:
                total += c.get_json("/counter/%s" % name)["local_count"]
        return total

    def assert_side(self, side, what, n):
        self.assertTrue(SIDE_FIELDS <= set(side), "%s: %r" % (what, side))
        self.assertIsInstance(side["description"], str)
        self.assertTrue(side["description"].strip())
        for k in STATS:
            v = side[k]
            self.assertIn(type(v), (int, float), "%s.%s = %r" % (what, k, v))
            self.assertGreaterEqual(v, 0, "%s.%s" % (what, k))
            self.assertEqual(round(v, 2), v, "%s.%s has more than 2 decimals" % (what, k))
        self.assertLessEqual(side["min_ms"], side["p50_ms"], what)
        self.assertLessEqual(side["p50_ms"], side["p99_ms"], what)
        self.assertLessEqual(side["p99_ms"], side["max_ms"], what)
        self.assertLessEqual(side["min_ms"], side["avg_ms"], what)
        self.assertLessEqual(side["avg_ms"], side["max_ms"], what)
        # Fewer than 100 samples: the nearest-rank p99 is the largest sample.
        if n < 100:
            self.assertEqual(side["p99_ms"], side["max_ms"], what)
        self.assertEqual((side["samples"], side["errors"]), (n, 0), what)

    def test_fields_statistics_and_the_wan_round(self):
        n = 12
        before = {k: histogram_count(self.topo.gateway, k) for k in ("eventual", "strong")}
        out = self.compare({"counter_name": "bench1", "iterations": n})
        self.assertTrue({"iterations", "eventual_consistency", "strong_consistency", "speedup",
                         "conclusion"} <= set(out), out)
        self.assertIsCount(out["iterations"], "iterations")
        self.assertEqual(out["iterations"], n)
        e, s = out["eventual_consistency"], out["strong_consistency"]
        self.assert_side(e, "eventual_consistency", n)
        self.assert_side(s, "strong_consistency", n)
        self.assertIn(type(out["speedup"]), (int, float))
        self.assertIsInstance(out["conclusion"], str)

        # speedup is strong avg / eventual avg (of the rounded averages), to 2 decimals, and
        # the conclusion says it to 1. Each is compared with the unrounded ratio, within
        # half its rounding step: rounding the ratio here again could land on the other
        # side of a tie (Python's round() halves to even, the server's rounds half up).
        ratio = s["avg_ms"] / e["avg_ms"]
        self.assertAlmostEqual(out["speedup"], ratio, delta=0.005 + 1e-9)
        m = re.fullmatch(r"Eventual consistency is ~([0-9]+\.[0-9])x faster", out["conclusion"])
        self.assertTrue(m, out["conclusion"])
        self.assertAlmostEqual(float(m.group(1)), ratio, delta=0.05 + 1e-9)

        # Why strong is slower: the leader (us-east) acknowledges after a majority, 2 of 3
        # replicas, accepted. Its own region's replica is local, but the second one is at
        # best us-west, ~35 ms each way in the WAN model: ~70 ms of round trip on every
        # strong increment, while the eventual one is a single write to one region,
        # local to the gateway. Not a sleep: the measured coordination round says so.
        self.assertGreaterEqual(s["min_ms"], 60, s)
        self.assertGreaterEqual(s["avg_coordination_delay_ms"], 60, s)
        self.assertLessEqual(s["avg_coordination_delay_ms"], s["avg_ms"], s)
        self.assertGreaterEqual(out["speedup"], 3, out)
        self.assertGreaterEqual(s["avg_ms"], 3 * e["avg_ms"], out)

        # Every sample was a real increment, counted once on each side.
        self.assertEqual(self.strong_value("bench1"), n)
        self.assertEqual(self.eventual_total("bench1"), n)

        # The histogram counted each sample once, by consistency type.
        after = {k: histogram_count(self.topo.gateway, k) for k in ("eventual", "strong")}
        self.assertEqual(after["eventual"][0] - before["eventual"][0], n)
        self.assertEqual(after["strong"][0] - before["strong"][0], n)
        # Its sum is the samples' time in seconds: at least n WAN rounds on the strong side.
        strong_sum = after["strong"][1] - before["strong"][1]
        self.assertGreaterEqual(strong_sum, n * s["min_ms"] / 1000 * 0.99)
        self.assertAlmostEqual(strong_sum, n * s["avg_ms"] / 1000, delta=n * 0.0001 + 0.001)

        # Defaults: counter "benchmark", 30 iterations.
        d = self.compare({})
        self.assertEqual(d["iterations"], 30)
        self.assertEqual(self.strong_value("benchmark"), 30)

    def test_the_coordination_delay_sets_the_strong_side_s_speed(self):
        slow = self.compare({"counter_name": "cd", "iterations": 8})["strong_consistency"]
        with self.topo.strong.client() as c:
            c.post_json("/admin/coordination-delay?delay_ms=0")
        fast = self.compare({"counter_name": "cd", "iterations": 8})
        f = fast["strong_consistency"]
        # Without the WAN delay the round is loopback hops only.
        self.assertLess(f["avg_ms"] * 4, slow["avg_ms"], (slow, f))
        self.assertLess(f["avg_coordination_delay_ms"] * 4, slow["avg_coordination_delay_ms"])
        self.assertLess(fast["speedup"], slow["avg_ms"] / fast["eventual_consistency"]["avg_ms"])
        # And a longer delay makes it slower: 100 ms each way, 200 ms per round.
        with self.topo.strong.client() as c:
            c.post_json("/admin/coordination-delay?delay_ms=100")
        s = self.compare({"counter_name": "cd", "iterations": 3})["strong_consistency"]
        self.assertGreaterEqual(s["min_ms"], 190, s)
        self.assertEqual(self.strong_value("cd"), 19)

    def test_bad_input_is_400_naming_the_field_and_counts_nothing(self):
        for iterations in (0, 10001, -1, 1.5, 0.999, "x", "30", True, [3], {"n": 3}):
            r = self.gw.post("/api/compare", {"counter_name": "v", "iterations": iterations})
            self.assertError(r, 400, "bad_field", "iterations %r" % (iterations,),
                             detail_contains="iterations")
        for name in ("bad name", "", "x" * 201, 5, "a/b", True):
            r = self.gw.post("/api/compare", {"counter_name": name, "iterations": 1})
            self.assertError(r, 400, "bad_name", "counter_name %r" % (name,),
                             detail_contains="counter_name")
        for routing in ("nope", "us-north", 5, True, ["random"]):
            r = self.gw.post("/api/compare", {"counter_name": "v", "iterations": 1,
                                              "routing": routing})
            self.assertError(r, 400, "bad_field", "routing %r" % (routing,),
                             detail_contains="routing")
        self.assertError(self.gw.post("/api/compare", b"{nope"), 400, "bad_json")
        self.assertError(self.gw.post("/api/compare", b"[1, 2]"), 400, ("bad_json", "bad_field"))
        self.assertError(self.gw.get("/api/compare"), 405, "method_not_allowed")
        # Nothing was counted by any of these.
        self.assertEqual(self.strong_value("v"), 0)
        self.assertEqual(self.eventual_total("v"), 0)
        self.assertEqual(histogram_count(self.topo.gateway, "strong")[0], 0)
        # The bounds themselves are accepted, and a named policy is honoured.
        out = self.compare({"counter_name": "v", "iterations": 1, "routing": "eu-west"})
        self.assertEqual(out["iterations"], 1)
        self.assertEqual(self.strong_value("v"), 1)
        with self.topo.region("eu-west").client() as c:
            self.assertEqual(c.get_json("/counter/v")["local_count"], 1)

    def test_with_two_regions_partitioned_the_strong_side_fails_with_503(self):
        for region in ("us-west", "eu-west"):
            self.gw.post_json("/admin/partition/%s?enabled=true" % region)
        r = self.gw.post("/api/compare", {"counter_name": "part", "iterations": 3})
        body = self.assertError(r, 503, "unavailable")
        self.assertIn("every strong increment failed", body["detail"])
        self.assertIn("no quorum", body["detail"])
        # The strong counter applied nothing; the eventual side kept working meanwhile.
        self.assertEqual(self.strong_value("part"), 0)
        self.assertEqual(self.eventual_total("part"), 3)
        # Healed: the comparison works again.
        self.gw.post_json("/admin/partition/all?enabled=false")
        out = self.compare({"counter_name": "part", "iterations": 2})
        self.assertEqual(out["strong_consistency"]["samples"], 2)
        self.assertEqual(self.strong_value("part"), 2)


if __name__ == "__main__":
    unittest.main(verbosity=2)
