"""
86_metrics_promtool.py - /metrics on every role, against docs/API.md ("Metrics") and
`promtool check metrics` (Debian's prometheus package: scripts/setup --test).

Three regions (syncing every 200 ms), a coordinator, a gateway and the strong counter
(--role strong). Traffic goes through the gateway to every region, the
coordinator answers global reads, the strong counter takes increments. Then:

- every service's /metrics parses and promtool finds nothing in it but the problems
  harness.PROMTOOL_NAME_LINT lists (name-only rules that API.md's names break; see there);
- every metric API.md lists for a role is declared by that role with the right type (the
  gauges whose names end in _count are declared untyped: core/obs/metrics.c) and, where
  the traffic gives it samples, has them with API.md's labels;
- the HTTP server's own metrics (counterd_http_*) are on every service and move: answers
  by status code (exactly the 404s sent), durations (the histogram's count equals the
  answers), open and accepted connections;
- the coordinator's counter-name labels are bounded by --metrics-top-n.
"""

import time
import unittest

import harness

REGIONS = [r for r, _ in harness.LAB_REGIONS]

# API.md's metrics per role: name -> (declared TYPE, label names API.md gives or None).
API_METRICS = {
    "region": {
        "counter_local_count": ("untyped", {"service", "region", "node_id"}),
        "counter_synced_count": ("untyped", {"service", "region"}),
        "counter_sync_lag_ms": ("gauge", {"service", "region"}),
        "counter_conflicts_resolved_total": ("counter", {"service", "region"}),
        "counter_increments_total": ("counter", {"service", "region", "counter_name"}),
        "counter_sync_operations_total": ("counter", {"service", "region", "status"}),
        "counter_sync_latency_seconds": ("histogram", None),
    },
    "gateway": {
        "gateway_requests_total": ("counter", {"method", "endpoint", "status"}),
        "gateway_request_duration_seconds": ("histogram", None),
        "gateway_routed_to_region_total": ("counter", {"region"}),
        "gateway_consistency_comparison_seconds": ("histogram", None),
    },
    "coordinator": {
        "coordinator_global_count": ("untyped", {"counter_name"}),
        "coordinator_region_count": ("untyped", {"counter_name", "region"}),
        "coordinator_convergence_lag": ("gauge", {"counter_name"}),
        "coordinator_query_latency_seconds": ("histogram", None),
        "coordinator_healthy_regions": ("gauge", set()),
    },
    "strong": {
        "consistent_counter_value": ("gauge", {"counter_name"}),
        "consistent_counter_increment_latency_seconds": ("histogram", None),
        "consistent_counter_increments_total": ("counter", {"counter_name"}),
        "consistent_counter_lock_wait_seconds": ("histogram", None),
    },
}
# Families declared before any traffic reaches them (POST /api/compare is not sent here).
NO_SAMPLES_NEEDED = {"gateway_consistency_comparison_seconds"}

HTTP_METRICS = {
    "counterd_http_requests_total": "counter",
    "counterd_http_request_duration_seconds": "histogram",
    "counterd_http_connections_open": "gauge",
    "counterd_http_connections_accepted_total": "counter",
    "counterd_http_connections_rejected_total": "counter",
}


def declared_types(text):
    types = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 4 and parts[:2] == ["#", "TYPE"]:
            types[parts[2]] = parts[3]
    return types


def scrape(srv):
    with srv.client() as c:
        r = c.get("/metrics")
    if r.status != 200:
        raise AssertionError("GET /metrics on %s: %d %r" % (srv.name, r.status, r.body[:300]))
    text = r.text()
    return text, harness.parse_metrics(text)


def total(samples, name, **labels):
    return sum(harness.metric_values(samples, name, **labels))


class MetricsTest(harness.ServerTestCase):
    def setUp(self):
        super().setUp()
        if not harness.promtool_path():
            self.fail("promtool is not installed (Debian package prometheus: run "
                      "scripts/setup --test)")

    def start_topology(self, **kw):
        topo = harness.Topology(strong=True, **kw)
        topo.start(self.addCleanup)
        services = [("region", r) for r in topo.regions]
        services += [("coordinator", topo.coordinator), ("gateway", topo.gateway),
                     ("strong", topo.strong)]
        self.wait_strong_ready(topo.strong)
        return topo, services

    def wait_strong_ready(self, srv, timeout=10):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with srv.client() as c:
                if c.get_json("/health").get("ready"):
                    return
            time.sleep(0.05)
        self.fail("the strong counter was not ready in %d s" % timeout)

    def traffic(self, topo):
        with topo.gateway.client() as g:
            for region in REGIONS:
                for _ in range(3):
                    a = g.post_json("/api/increment", {"counter_name": "m_views",
                                                       "routing": region})
                    self.assertEqual(a["region"], region)
            for _ in range(5):
                g.post_json("/api/increment", {"counter_name": "m_clicks", "amount": 2})
            g.get_json("/api/counter/m_views")
            g.get_json("/api/counters")
            g.get_json("/api/status")
            g.post_json("/admin/force-sync")
        with topo.strong.client(timeout=15) as s:
            for _ in range(3):
                s.post_json("/increment", {"counter_name": "m_strong", "amount": 1})

    def test_every_service(self):
        topo, services = self.start_topology(sync_interval_ms=200)
        self.traffic(topo)
        time.sleep(0.5)  # a few sync rounds: their latency and lag have samples
        tolerated_seen = set()
        for role, srv in services:
            what = "%s (%s)" % (srv.name, role)
            text, samples = scrape(srv)
            tolerated_seen.update(harness.assert_promtool_clean(self, text, what))
            types = declared_types(text)
            for name, (kind, labels) in API_METRICS[role].items():
                self.assertEqual(types.get(name), kind, "%s: TYPE of %s" % (what, name))
                sample_name = name + "_count" if kind == "histogram" else name
                got = [l for n, l, _ in samples if n == sample_name]
                if name in NO_SAMPLES_NEEDED:
                    continue
                self.assertTrue(got, "%s: no sample of %s after the traffic" % (what, name))
                if labels is not None:
                    for l in got:
                        self.assertEqual(set(l), labels, "%s: labels of %s" % (what, name))
            for name, kind in HTTP_METRICS.items():
                self.assertEqual(types.get(name), kind, "%s: TYPE of %s" % (what, name))
            # Answers and durations come from the same tallies: the counts agree.
            self.assertEqual(total(samples, "counterd_http_request_duration_seconds_count"),
                             total(samples, "counterd_http_requests_total"), what)
            self.assertGreater(total(samples, "counterd_http_requests_total", code="200"), 0,
                               what)
        # Every name-only problem is seen: each name is on some role.
        self.assertEqual(tolerated_seen, harness.PROMTOOL_NAME_LINT)

        # API.md's values for this traffic.
        _, gw = scrape(topo.gateway)
        for region in REGIONS:
            self.assertGreaterEqual(total(gw, "gateway_routed_to_region_total", region=region),
                                    3, region)
            _, rs = scrape(topo.region(region))
            self.assertGreaterEqual(total(rs, "counter_increments_total",
                                          counter_name="m_views", region=region), 3, region)
        self.assertEqual(total(gw, "gateway_routed_to_region_total"), 9 + 5)
        _, co = scrape(topo.coordinator)
        self.assertEqual(harness.metric_values(co, "coordinator_healthy_regions"), [3])

    def test_http_metrics_move(self):
        topo, services = self.start_topology()
        for role, srv in services:
            what = "%s (%s)" % (srv.name, role)
            _, before = scrape(srv)
            with srv.client() as c:
                for _ in range(5):
                    self.assertEqual(c.get("/health").status, 200)
                for _ in range(3):
                    self.assertEqual(c.get("/no/such/path").status, 404)
            # Connections held open (each answered once, so surely accepted).
            held = []
            for _ in range(4):
                s = srv.client()
                self.assertEqual(s.get("/health").status, 200)
                held.append(s)
            _, during = scrape(srv)
            for s in held:
                s.close()

            def delta(name, **labels):
                return total(during, name, **labels) - total(before, name, **labels)

            self.assertEqual(delta("counterd_http_requests_total", code="404"), 3, what)
            # 5 + 4 health checks and the first scrape's own answer, at least (regions
            # also answer their peers).
            self.assertGreaterEqual(delta("counterd_http_requests_total", code="200"),
                                    5 + 4 + 1, what)
            self.assertGreaterEqual(delta("counterd_http_request_duration_seconds_count"),
                                    5 + 4 + 3 + 1, what)
            self.assertGreater(delta("counterd_http_request_duration_seconds_sum"), 0, what)
            self.assertGreaterEqual(delta("counterd_http_connections_accepted_total"), 4 + 2,
                                    what)
            held_open = total(during, "counterd_http_connections_open")
            self.assertGreaterEqual(held_open, 4 + 1, what)  # and the scrape's own
            deadline = time.monotonic() + 5
            while True:
                _, after = scrape(srv)
                now_open = total(after, "counterd_http_connections_open")
                if now_open <= held_open - 4:
                    break
                self.assertLess(time.monotonic(), deadline,
                                "%s: connections_open stayed %s after 4 closed (was %s)"
                                % (what, now_open, held_open))
                time.sleep(0.05)
            self.assertEqual(total(after, "counterd_http_connections_rejected_total"), 0, what)

    def test_coordinator_counter_names_bounded(self):
        topo, _ = self.start_topology(coordinator_args=["--metrics-top-n", "2"])
        with topo.coordinator.client() as c:
            for name in ("b1", "b2", "b3", "b4", "b5"):
                c.get_json("/global/counter/%s" % name)
        _, co = scrape(topo.coordinator)
        names = {l["counter_name"] for n, l, _ in co if n == "coordinator_global_count"}
        self.assertEqual(names, {"b1", "b2", "_other"})
        names = {l["counter_name"] for n, l, _ in co if n == "coordinator_convergence_lag"}
        self.assertEqual(names, {"b1", "b2", "_other"})
        per_region = [l for n, l, _ in co if n == "coordinator_region_count"]
        self.assertEqual({l["counter_name"] for l in per_region}, {"b1", "b2", "_other"})
        self.assertEqual(len(per_region), 3 * 3)


if __name__ == "__main__":
    unittest.main()
