"""
73_gateway_batch.py - POST /api/increments through the gateway (docs/API.md, Gateway).

Three regions, a coordinator and a gateway. Each item of a batch is routed by the routing
policy as POST /api/increment would route it alone (sticky: by counter name, so one batch
spreads over the regions), the items of one region go to it as one POST /increments, and
each item is answered with its region's answer plus routed_to_endpoint and routing. Client
tokens keep their meaning (duplicates within and across batches); the gateway makes a token
for an item without one, for the region chosen. A region that is down: its items fail over
to the others with the same tokens, and after it returns every count is exact.
"""

import signal
import time
import unittest

import harness

NAMES = ["gb%d" % i for i in range(30)]


item = harness.batch_item


class GatewayBatch(harness.ServerTestCase):
    def topology(self, **kw):
        topo = harness.Topology(gateway_args=["--upstream-timeout-ms", "1000"], **kw)
        topo.start(self.addCleanup)
        gw = topo.gateway.client(timeout=20)
        self.addCleanup(gw.close)
        self.urls = {r.url: r for r in topo.regions}
        # The gateway learns the regions' node ids from their /health once started; until
        # then the tokens it makes name no home (answered pending), as for /api/increment.
        deadline = time.monotonic() + 10
        for r in topo.regions:
            while gw.post_json("/api/increment", {"counter_name": "warm",
                                                  "routing": r.region}).get("pending"):
                self.assertLess(time.monotonic(), deadline, "the gateway never learned homes")
                time.sleep(0.1)
        return topo, gw

    def local(self, region, name):
        with region.client() as c:
            return c.get_json("/counter/%s" % name)["local_count"]

    def check_routed(self, res, routing):
        self.assertEqual(res["status"], 200, res)
        self.assertEqual(res["routing"], routing)
        region = self.urls[res["routed_to_endpoint"]]
        self.assertEqual((res["region"], res["node_id"]), (region.region, region.node_id))
        self.assertNotIn("pending", res, "a token made for the region chosen is its own")
        return region

    def test_split_across_regions(self):
        topo, gw = self.topology()
        items = [item(n, i + 1) for i, n in enumerate(NAMES)]
        got = gw.post_json("/api/increments", {"increments": items, "routing": "sticky"})
        self.assertEqual((got["ok"], got["failed"], got["routing"]), (len(NAMES), 0, "sticky"))
        self.assertIsInstance(got["latency_ms"], (int, float))
        where = {}
        for it, res in zip(items, got["results"]):
            region = self.check_routed(res, "sticky")
            self.assertEqual((res["counter"], res["local_count"]), (it["counter_name"],
                                                                   it["amount"]))
            self.assertEqual(self.local(region, it["counter_name"]), it["amount"])
            where[it["counter_name"]] = region.region
        self.assertEqual(len(set(where.values())), 3, "sticky spread 30 names: %r" % where)
        # Sticky again: each name to the same region, as /api/increment routes it alone.
        got = gw.post_json("/api/increments", {"increments": items, "routing": "sticky"})
        for it, res in zip(items, got["results"]):
            self.assertEqual(self.check_routed(res, "sticky").region, where[it["counter_name"]])
            self.assertEqual(res["local_count"], 2 * it["amount"])
        alone = gw.post_json("/api/increment", {"counter_name": NAMES[0], "routing": "sticky"})
        self.assertEqual(alone["region"], where[NAMES[0]])
        # A region by name takes the whole batch.
        got = gw.post_json("/api/increments", {"increments": items[:5], "routing": "us-west"})
        self.assertEqual({self.check_routed(r, "us-west").region for r in got["results"]},
                         {"us-west"})

    def test_tokens_and_bad_items(self):
        topo, gw = self.topology()
        items = [item("gt", 2, "k1"), item("gt", 2, "k1"), item("gt", "2"), item("gt", 3, "k1"),
                 item("gt", 1), 7]
        got = gw.post_json("/api/increments", {"increments": items})
        res = got["results"]
        self.assertEqual((res[0]["status"], res[0].get("duplicate")), (200, None))
        self.assertEqual((res[1]["status"], res[1].get("duplicate")), (200, True))
        self.assertEqual(res[1]["local_count"], res[0]["local_count"])
        self.assertEqual(res[2]["status"], 400)
        self.assertEqual((res[2]["error"], res[2]["detail"]),
                         ("bad_field", "increments[2].amount must be an integer, not string"))
        self.assertNotIn("routed_to_endpoint", res[2])
        self.assertEqual((res[3]["status"], res[3]["error"]), (409, "idempotency_conflict"))
        self.assertTrue(res[3]["detail"].startswith("increments[3]: "), res[3])
        self.assertEqual(res[4]["status"], 200)
        self.assertEqual((res[5]["status"], res[5]["error"]), (400, "bad_field"))
        self.assertEqual((got["ok"], got["failed"]), (3, 3))
        samples = harness.parse_metrics(gw.get("/metrics").text())
        self.assertEqual(harness.metric_values(samples, "gateway_batch_items_total",
                                               status="400"), [2])
        self.assertEqual(harness.metric_values(samples, "gateway_batch_items_total",
                                               status="409"), [1])
        # Across batches, and across the two endpoints: the client's token counts once.
        got = gw.post_json("/api/increments", {"increments": [item("gt", 2, "k1")]})
        self.assertIs(got["results"][0].get("duplicate"), True, got)
        alone = gw.post_json("/api/increment", {"counter_name": "gt", "amount": 2,
                                                "idempotency_token": "k1"})
        self.assertIs(alone.get("duplicate"), True, alone)
        for _ in range(2):
            gw.post_json("/admin/force-sync")
        self.assertEqual(gw.get_json("/api/counter/gt")["global_count"], 3)

    def test_whole_batch_errors(self):
        topo, gw = self.topology()
        cases = [(b"{", 400, "bad_json"), (b"[]", 400, "bad_json"),
                 (b'{"increments":[]}', 400, "bad_field"),
                 (b'{"increments":7}', 400, "bad_field"),
                 (b'{"increments":[{}],"routing":"nope"}', 400, "bad_field"),
                 (b'{"increments":[{}],"routing":5}', 400, "bad_field"),
                 (('{"increments":[%s]}' % ",".join(["{}"] * 1001)).encode(), 413, "too_large")]
        for body, status, code in cases:
            r = gw.post("/api/increments", body)
            self.assertError(r, status, code, "POST /api/increments %r" % body[:50])
        for r in topo.regions:
            with r.client() as c:
                self.assertEqual(set(c.get_json("/counters")["counters"]), {"warm"}, r.region)
        # The largest batch, with long tokens (over the 64 KiB of other bodies), is taken,
        # and so is one the gateway adds its own long tokens to.
        big = [item("gbig%d" % (i % 7), 1, "%04d-%s" % (i, "t" * 120)) for i in range(1000)]
        got = gw.post_json("/api/increments", {"increments": big, "routing": "sticky"})
        self.assertEqual((got["ok"], got["failed"]), (1000, 0))
        got = gw.post_json("/api/increments", {"increments": [item("g" * 200)] * 1000})
        self.assertEqual((got["ok"], got["failed"]), (1000, 0))
        # Every batch answered, refused or not, in the requests' counts and duration histogram.
        samples = harness.parse_metrics(gw.get("/metrics").text())
        answered = sum(harness.metric_values(samples, "gateway_requests_total",
                                             endpoint="/api/increments"))
        self.assertEqual(answered, len(cases) + 2)
        for suffix, le in (("_count", {}), ("_bucket", {"le": "+Inf"})):
            self.assertEqual(harness.metric_values(
                samples, "gateway_request_duration_seconds" + suffix,
                endpoint="/api/increments", **le), [answered])

    def test_failover_per_sub_batch(self):
        topo, gw = self.topology(sync_interval_ms=1000)
        victim = topo.region("us-west")
        victim.proc.send_signal(signal.SIGKILL)
        victim.proc.wait(5)
        items = [item(n, i + 1) for i, n in enumerate(NAMES)]
        got = gw.post_json("/api/increments", {"increments": items, "routing": "sticky"})
        self.assertEqual((got["ok"], got["failed"]), (len(NAMES), 0), got)
        moved = 0
        for res in got["results"]:
            self.assertEqual(res["status"], 200, res)
            self.assertNotEqual(res["routed_to_endpoint"], victim.url)
            moved += bool(res.get("pending"))
        self.assertGreater(moved, 0, "the items whose token was made for us-west are held for it")
        # us-west returns; its tokens' increments are settled there, once.
        victim.kill()
        victim.start()
        deadline = time.monotonic() + 20
        while True:
            for _ in range(2):
                gw.post_json("/admin/force-sync")
            counts = {n: gw.get_json("/api/counter/%s" % n) for n in NAMES}
            bad = {n: (v["global_count"], v["convergence"]["converged"])
                   for n, v in counts.items()
                   if v["global_count"] != NAMES.index(n) + 1 or not v["convergence"]["converged"]}
            if not bad or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        self.assertEqual(bad, {}, "global counts after us-west returned")


if __name__ == "__main__":
    unittest.main(verbosity=2)
