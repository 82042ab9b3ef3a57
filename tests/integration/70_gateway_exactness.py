"""
70_gateway_exactness.py - every increment the gateway acknowledges is counted exactly once.

Three regions (--sync-interval-ms 1000, so replication runs during the load), a
coordinator and a gateway. 20,000 POST /api/increment of one counter go through the
gateway over 32 concurrent keep-alive connections (one thread each), random routing; the
2xx answers are counted. Then POST /admin/force-sync through the gateway, and
GET /api/counter/<name> must show global_count == the number of 2xx exactly, converged,
every region at that same total, each region's own contribution equal to what the gateway
routed to it.
"""

import time
import unittest

import harness

REQUESTS = 20000
CONNECTIONS = 32
NAME = "exact"


class GatewayExactness(harness.ServerTestCase):
    def test_20000_increments_through_the_gateway(self):
        topo = harness.Topology(sync_interval_ms=1000).start(self.addCleanup)
        gw = topo.gateway.client()
        self.addCleanup(gw.close)

        harness.wait_gateway_names_homes(gw)
        routed0 = {l["region"]: v for n, l, v in harness.parse_metrics(gw.get("/metrics").text())
                   if n == "gateway_routed_to_region_total"}
        load = harness.IncrementLoad(topo.gateway.port, {"counter_name": NAME, "amount": 1},
                                     threads=CONNECTIONS, total=REQUESTS)
        t0 = time.monotonic()
        load.start()
        finished = load.join(35)
        took = time.monotonic() - t0
        load.stop()
        self.assertTrue(finished, "the load did not finish in 35 s (%d sent, %d ok)"
                        % (load.sent, load.ok_total()))
        ok = load.ok_total()
        print("\n[70] %d requests over %d connections in %.1f s (%.0f/s): %d 2xx, %d other"
              % (load.sent, CONNECTIONS, took, load.sent / took, ok, len(load.problems)))
        for p in load.problems[:20]:
            print("[70]   not 2xx: thread %d status %s: %s" % (p[1], p[2], p[3]))
        self.assertEqual(load.sent, REQUESTS)
        self.assertEqual(load.unknown(), [], "requests without an answer (outcome unknown)")
        self.assertEqual(ok + len(load.problems), REQUESTS)
        self.assertEqual(len(load.problems), 0, "non-2xx answers with every region up")

        fs = gw.post_json("/admin/force-sync")
        self.assertEqual((fs["status"], fs["regions_synced"]), ("sync_initiated", 3), fs)
        got = gw.get_json("/api/counter/%s" % NAME)
        totals = {r: v["total_count"] for r, v in got["regions"].items()}
        print("[70] global view after force-sync: global_count %d, regions %r, convergence %r"
              % (got["global_count"], totals, got["convergence"]))
        self.assertEqual(got["global_count"], ok, "global_count vs 2xx answers")
        self.assertEqual(got["healthy_regions"], 3)
        self.assertJsonEqual(got["convergence"], {"converged": True, "lag": 0, "max_count": ok,
                                                  "min_count": ok})
        self.assertEqual(totals, {r: ok for r, _ in harness.LAB_REGIONS})

        # Each region's own entry is what the gateway sent it (no retries without a failure).
        routed = {l["region"]: v - routed0.get(l["region"], 0)
                  for n, l, v in harness.parse_metrics(gw.get("/metrics").text())
                  if n == "gateway_routed_to_region_total"}
        nodes = got["regions"]["us-east"]["nodes"]
        self.assertEqual(nodes, {node: int(routed[region]) for region, node in harness.LAB_REGIONS},
                         "per-node contributions vs gateway_routed_to_region_total %r" % routed)
        for region, node in harness.LAB_REGIONS:
            self.assertEqual(got["regions"][region]["nodes"], nodes)
            with harness.Client(topo.region(region).port) as c:
                direct = c.get_json("/counter/%s" % NAME)
            self.assertEqual((direct["total_count"], direct["local_count"]),
                             (ok, nodes[node]), "%s read directly" % region)


if __name__ == "__main__":
    unittest.main()
