"""
dashboard_test.py - deploy/grafana: the dashboard JSON parses and has the original lab's
panels (Increment Rate, Sync Lag by Region, Sync Operations Rate, Synced Count by Region)
plus Convergence Lag and Strong vs Eventual Latency; every panel queries the provisioned
Prometheus datasource; every expression is valid PromQL (promtool check rules) and names
only metrics of API.md's "Metrics" section.

Then the real thing: a region trio, the coordinator, the gateway and the strong service
(the ASan+UBSan binary, harness.Topology) take some traffic (increments with several
routing policies, strong increments, global reads, force-sync, one /api/compare run), and
/metrics of every service is scraped. Each metric a panel names must be exported by the
service(s) of its role (counter_* by all three regions, gateway_* by the gateway,
coordinator_* by the coordinator, consistent_counter_* by the strong service), with every
label the expression matches or groups on. Histograms count through their _bucket series.
"""

import json
import os
import subprocess
import tempfile
import unittest

import yaml

import common
from common import REPO, harness

DASHBOARD = os.path.join(REPO, "deploy/grafana/dashboards/counterd.json")
DATASOURCES = os.path.join(REPO, "deploy/grafana/provisioning/datasources")

PANELS = ["Increment Rate", "Sync Lag by Region", "Sync Operations Rate",
          "Synced Count by Region", "Convergence Lag", "Strong vs Eventual Latency"]

# Which services export a family, by its prefix (the longest prefix wins).
EXPORTERS = {"counter_": "regions", "gateway_": "gateway", "coordinator_": "coordinator",
             "consistent_counter_": "strong"}


def load_dashboard():
    with open(DASHBOARD, encoding="utf-8") as f:
        return json.load(f)


def panel_exprs(dash):
    """[(panel title, expr)] of every target of every panel (rows included)."""
    out = []

    def walk(panels):
        for p in panels:
            walk(p.get("panels", []))
            for t in p.get("targets", []):
                out.append((p.get("title"), t.get("expr")))

    walk(dash.get("panels", []))
    return out


def exporter_of(name):
    best = max((p for p in EXPORTERS if name.startswith(p)), key=len, default=None)
    return EXPORTERS.get(best)


class DashboardFile(unittest.TestCase):
    def test_panels_and_datasource(self):
        dash = load_dashboard()
        titles = [p["title"] for p in dash["panels"]]
        self.assertEqual(sorted(titles), sorted(PANELS))
        uids = set()
        for name in os.listdir(DATASOURCES):
            with open(os.path.join(DATASOURCES, name)) as f:
                for ds in yaml.safe_load(f)["datasources"]:
                    self.assertEqual(ds["type"], "prometheus")
                    self.assertEqual(ds["url"], "http://lab34-prometheus:9090")
                    uids.add(ds["uid"])
        for p in dash["panels"]:
            with self.subTest(panel=p["title"]):
                self.assertTrue(p.get("targets"), "a panel without queries")
                for t in [p] + p["targets"]:
                    self.assertEqual(t["datasource"]["type"], "prometheus")
                    self.assertIn(t["datasource"]["uid"], uids)
                ids = [t["refId"] for t in p["targets"]]
                self.assertEqual(len(ids), len(set(ids)))
        self.assertEqual(len({p["id"] for p in dash["panels"]}), len(PANELS))

    def test_promql_is_valid(self):
        rules = {"groups": [{"name": "dashboard", "rules": [
            {"record": "dashboard:expr_%d" % i, "expr": expr}
            for i, (_, expr) in enumerate(panel_exprs(load_dashboard()))]}]}
        with tempfile.NamedTemporaryFile("w", suffix=".yml", delete=False) as f:
            yaml.safe_dump(rules, f)
        self.addCleanup(os.remove, f.name)
        r = subprocess.run(["promtool", "check", "rules", f.name], capture_output=True,
                           text=True, timeout=30)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)

    def test_metric_names_are_the_contracts(self):
        api = common.api_metric_names()
        for title, expr in panel_exprs(load_dashboard()):
            metrics, _ = common.promql_uses(expr)
            with self.subTest(panel=title, expr=expr):
                self.assertTrue(metrics, "no metric found in the expression")
                for m in metrics:
                    self.assertIn(common.histogram_base(m, api), api)


class DashboardAgainstServices(harness.ServerTestCase):
    def test_every_panel_metric_is_exported(self):
        topo = harness.Topology(strong=True).start(self.addCleanup)
        gw = topo.gateway.client(timeout=30)
        self.addCleanup(gw.close)
        for i in range(12):
            routing = ["random", "us-east", "us-west", "eu-west"][i % 4]
            gw.post_json("/api/increment", {"counter_name": "views", "routing": routing})
        with topo.strong.client() as st:
            for _ in range(5):
                st.post_json("/increment", {"counter_name": "strong_views"})
        gw.post_json("/admin/force-sync")
        gw.get_json("/api/counter/views")
        cmp = gw.post_json("/api/compare", {"counter_name": "benchmark", "iterations": 3})
        self.assertEqual(cmp["iterations"], 3)

        # name -> {service: set of label names seen}
        exported = {}
        groups = {"regions": topo.regions, "gateway": [topo.gateway],
                  "coordinator": [topo.coordinator], "strong": [topo.strong]}
        for group, servers in groups.items():
            for srv in servers:
                with srv.client() as c:
                    r = c.get("/metrics")
                self.assertEqual(r.status, 200, srv.name)
                for name, labels, _ in harness.parse_metrics(r.text()):
                    exported.setdefault(name, {}).setdefault(srv.name, set()).update(labels)

        for title, expr in panel_exprs(load_dashboard()):
            metrics, labels = common.promql_uses(expr)
            with self.subTest(panel=title, expr=expr):
                seen_labels = set()
                for m in metrics:
                    group = exporter_of(m)
                    self.assertIsNotNone(group, "%s: no service exports this prefix" % m)
                    for srv in groups[group]:
                        self.assertIn(srv.name, exported.get(m, {}),
                                      "%s is not exported by %s" % (m, srv.name))
                        seen_labels |= exported[m][srv.name]
                self.assertEqual(labels - seen_labels, set(),
                                 "labels the expression uses that the series lack")


if __name__ == "__main__":
    unittest.main(verbosity=2)
