"""
k6_test.py - the k6 scripts of scripts/k6/ (basic.js, comparison.js, partition-test.js).

No k6 binary here, so:
- syntax: `node --check` on an .mjs copy of each (they are ES modules importing k6/*);
- paths: every URL a script builds from its BASE_URL or STRONG_URL (found in its source,
  so branches that did not run count too) is a path API.md gives the gateway or the strong
  service;
- behaviour: each script runs under node with a stand-in for k6's modules
  (k6run.mjs + k6stub/, real HTTP to 127.0.0.1 only) against a real topology: three
  regions, coordinator, gateway and strong service (the ASan+UBSan binary). Every check of
  the script must pass, no exception may escape, every request made must be 2xx and on a
  path API.md gives that service, every threshold must name a k6 built-in or a metric the
  script defines, and each scenario's key requests must have happened (the partition test
  partitions, heals and force-syncs; the comparison hits the strong service and
  /api/compare).
"""

import json
import os
import re
import shutil
import subprocess
import tempfile
import unittest
from urllib.parse import urlsplit

import common
from common import HERE, REPO, harness

K6_DIR = os.path.join(REPO, "scripts", "k6")
SCRIPTS = ["basic.js", "comparison.js", "partition-test.js"]
URL_VARS = {"BASE_URL": "gateway", "STRONG_URL": "strong"}


def node():
    path = shutil.which("node") or shutil.which("nodejs")
    if not path:
        raise AssertionError("node is missing: ./scripts/setup --test installs it")
    return path


class Syntax(unittest.TestCase):
    def test_node_check(self):
        tmp = tempfile.mkdtemp(prefix="k6-check-")
        self.addCleanup(shutil.rmtree, tmp, True)
        for script in SCRIPTS:
            with self.subTest(script=script):
                copy = os.path.join(tmp, script[:-3] + ".mjs")
                shutil.copy(os.path.join(K6_DIR, script), copy)
                r = subprocess.run([node(), "--check", copy], capture_output=True, text=True,
                                   timeout=30)
                self.assertEqual(r.returncode, 0, r.stderr)

    def test_source_paths_are_in_api_md(self):
        for script in SCRIPTS:
            with open(os.path.join(K6_DIR, script)) as f:
                src = f.read()
            uses = re.findall(r"\$\{(\w+)\}(/[^`'\"?\s]*)", src)
            self.assertTrue(uses, "%s builds no URL from BASE_URL or STRONG_URL" % script)
            for var, path in uses:
                with self.subTest(script=script, url="${%s}%s" % (var, path)):
                    self.assertIn(var, URL_VARS)
                    concrete = re.sub(r"\$\{[^}]*\}", "x", path)
                    self.assertIsNotNone(common.api_path_of(URL_VARS[var], concrete),
                                         "not a %s path of API.md" % URL_VARS[var])


class AgainstServices(harness.ServerTestCase):
    @classmethod
    def setUpClass(cls):
        cls.topo = harness.Topology(strong=True, sync_interval_ms=1000)
        cls.topo.start(cls.addClassCleanup)
        # Until the gateway knows every region's node id (its first /health probes), its
        # tokens name a hashed home, and the region reached holds the increment pending
        # (local_count 0); basic.js checks local_count >= 1, so the run starts after that.
        gw = cls.topo.gateway.client()
        try:
            harness.wait_gateway_names_homes(gw)
        finally:
            gw.close()

    def run_script(self, script, iterations, **env):
        full_env = dict(os.environ, BASE_URL=self.topo.gateway.url, STRONG_URL=self.topo.strong.url,
                        K6RUN_SLEEP_SCALE="0.05", **env)
        r = subprocess.run([node(), os.path.join(HERE, "k6run.mjs"),
                            os.path.join(K6_DIR, script), str(iterations)],
                           capture_output=True, text=True, env=full_env, timeout=35)
        self.assertEqual(r.returncode, 0, r.stderr)
        out = json.loads(r.stdout)
        self.assertEqual(out["errors"], [], "%s raised or was refused" % script)
        self.assertEqual(out["unknown_threshold_metrics"], [])
        self.assertTrue(out["checks"], "%s made no checks" % script)
        failed = {k: v for k, v in out["checks"].items() if v["fails"] or not v["passes"]}
        self.assertEqual(failed, {}, "%s: checks that failed" % script)
        owner = {self.topo.gateway.port: "gateway", self.topo.strong.port: "strong"}
        paths = set()
        for req in out["requests"]:
            u = urlsplit(req["url"])
            self.assertEqual(u.hostname, "127.0.0.1")
            role = owner.get(u.port)
            self.assertIsNotNone(role, "a request to neither BASE_URL nor STRONG_URL: %r" % req)
            api = common.api_path_of(role, u.path)
            self.assertIsNotNone(api, "%s %s: not a %s path of API.md" % (req["method"], u.path,
                                                                          role))
            self.assertTrue(200 <= req["status"] < 300, req)
            paths.add((role, req["method"], api))
        for name, m in out["metrics"].items():
            self.assertGreater(m["count"], 0, "%s: metric %s got no values" % (script, name))
        return out, paths

    def test_basic(self):
        out, paths = self.run_script("basic.js", 7)
        self.assertEqual(out["scenarios"], [{"name": "default", "exec": "default",
                                             "iterations": 7}])
        self.assertLessEqual({("gateway", "POST", "/api/increment"),
                              ("gateway", "GET", "/api/counter/{name}"),
                              ("gateway", "GET", "/api/status")}, paths)
        # Seven iterations: every routing policy once, each region's policy honoured.
        self.assertEqual(out["checks"]["increment: region policy honoured"]["passes"], 7)
        self.assertEqual(sorted(out["groups"]), ["increment", "read"])

    def test_comparison(self):
        out, paths = self.run_script("comparison.js", 3, ITERATIONS="5")
        self.assertEqual([s["name"] for s in out["scenarios"]], ["eventual", "strong"])
        self.assertLessEqual({("gateway", "POST", "/api/increment"),
                              ("strong", "POST", "/increment"),
                              ("strong", "GET", "/counter/{name}"),
                              ("gateway", "POST", "/api/compare")}, paths)
        self.assertEqual(out["metrics"]["strong_latency"]["count"], 3)
        self.assertEqual(out["metrics"]["eventual_latency"]["count"], 3)

    def test_partition(self):
        out, paths = self.run_script("partition-test.js", 10, PARTITION_AT="4",
                                     PARTITION_FOR="10")
        self.assertEqual([s["name"] for s in out["scenarios"]], ["load", "chaos"])
        self.assertLessEqual({("gateway", "POST", "/admin/partition/{region}"),
                              ("gateway", "POST", "/admin/force-sync"),
                              ("gateway", "POST", "/api/increment")}, paths)
        for name in ("partition on: applied", "status: one region partitioned",
                     "partition off: applied", "status: no region partitioned",
                     "converged after heal and force-sync"):
            self.assertEqual(out["checks"][name], {"passes": 1, "fails": 0}, name)
        # The regions stay partitioned-free afterwards (the script healed what it broke).
        with self.topo.coordinator.client() as c:
            self.assertEqual(c.get_json("/global/status")["partitioned_count"], 0)


if __name__ == "__main__":
    unittest.main(verbosity=2)
