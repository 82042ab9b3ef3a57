"""
loadtest_test.py - scripts/loadtest (wrk + scripts/wrk/*.lua) against a real local lab
that this test starts with `scripts/lab up --base-port <free> --no-build` (the release
binary, COUNTERD_RELEASE_BIN) and stops with `scripts/lab down`.

- basic (3 s): exit 0, a row for each target (increment, read) with requests and req/s
  above zero, latency percentiles in order, and zero non-2xx answers and socket errors;
  the gateway's own metrics confirm that every routing policy of the mix reached it.
- partition (3 s): exit 0; us-east was partitioned and healed mid-run through the gateway;
  increments, reads and us-east's own increments all succeeded; the regions converged.
- comparison (2 s): exit 0, rows for eventual and strong, and the p50 ratio line.
- it fails when it should: increments that all answer 409 (a counter at the top of the
  64-bit range) make basic exit 1 with their count in the table, and with the lab down
  every scenario exits 3 and says the lab is not running.
"""

import os
import re
import shutil
import subprocess
import unittest

from common import REPO, harness

LAB = os.path.join(REPO, "scripts", "lab")
LOADTEST = os.path.join(REPO, "scripts", "loadtest")
RELEASE_BIN = os.environ.get("COUNTERD_RELEASE_BIN") or os.path.join(REPO, "build", "counterd")
OFFSETS = (0, 1, 2, 3, 4, 80)  # coordinator, regions, strong, gateway

ROW = re.compile(r"^(\S+)\s+(\d+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+(\d+)\s+(\d+)\s+(\S+)")




def table(out):
    """{target: dict(requests, rps, p50, p90, p99, non2xx, socket, url)} of the printout."""
    rows = {}
    for line in out.splitlines():
        m = ROW.match(line)
        if m:
            rows[m.group(1)] = dict(requests=int(m.group(2)), rps=float(m.group(3)),
                                    p50=float(m.group(4)), p90=float(m.group(5)),
                                    p99=float(m.group(6)), non2xx=int(m.group(7)),
                                    socket=int(m.group(8)), url=m.group(9))
    return rows


class Loadtest(harness.ServerTestCase):
    @classmethod
    def setUpClass(cls):
        if not shutil.which("wrk"):
            raise AssertionError("wrk is missing: ./scripts/setup --test installs it")
        cls.base = harness.free_lab_base()
        cls.env = {k: v for k, v in os.environ.items()
                   if not k.startswith(("COUNTERD_", "LOADTEST_"))}
        cls.env.update(COUNTERD_BIN=RELEASE_BIN, COUNTERD_WATCH="0")
        cls.addClassCleanup(shutil.rmtree, os.path.join(REPO, ".lab", str(cls.base)), True)
        cls.addClassCleanup(cls.lab, "down")
        up = cls.lab("up", "--no-build")
        if up.returncode != 0:
            raise AssertionError("lab up failed:\n%s%s" % (up.stdout, up.stderr))

    @classmethod
    def lab(cls, *args):
        return subprocess.run([LAB] + list(args) + ["--base-port", str(cls.base)], cwd=REPO,
                              env=cls.env, capture_output=True, text=True, timeout=60)

    def loadtest(self, scenario, duration, env=None, expect=0):
        r = subprocess.run([LOADTEST, scenario, "--base-port", str(self.base), "--duration",
                            str(duration), "--connections", "8"], cwd=REPO,
                           env=dict(self.env, **(env or {})), capture_output=True, text=True,
                           timeout=duration + 40)
        out = r.stdout + r.stderr
        self.assertEqual(r.returncode, expect, "loadtest %s:\n%s" % (scenario, out))
        return out, table(r.stdout)

    def assertClean(self, rows, targets):
        self.assertEqual(sorted(rows), sorted(targets))
        for name, row in rows.items():
            with self.subTest(target=name):
                self.assertGreater(row["requests"], 0)
                self.assertGreater(row["rps"], 0)
                self.assertLessEqual(row["p50"], row["p90"])
                self.assertLessEqual(row["p90"], row["p99"])
                self.assertEqual((row["non2xx"], row["socket"]), (0, 0))
                m = re.match(r"^http://127\.0\.0\.1:(\d+)/", row["url"])
                self.assertTrue(m, row["url"])
                self.assertIn(int(m.group(1)) - self.base, OFFSETS)

    def gateway_routed(self):
        with harness.Client(self.base + 80) as c:
            samples = harness.parse_metrics(c.get("/metrics").text())
        return {labels.get("region"): v for name, labels, v in samples
                if name == "gateway_routed_to_region_total"}

    def test_1_basic(self):
        before = self.gateway_routed()
        out, rows = self.loadtest("basic", 3)
        self.assertClean(rows, ["increment", "read"])
        self.assertIn("loadtest basic: ok", out)
        after = self.gateway_routed()
        for region in ("us-east", "us-west", "eu-west"):
            self.assertGreater(after.get(region, 0), before.get(region, 0), region)
        with harness.Client(self.base + 80) as c:
            samples = harness.parse_metrics(c.get("/metrics").text())
        ok = sum(v for n, l, v in samples if n == "gateway_requests_total" and
                 l.get("endpoint") == "/api/increment" and l.get("status") == "200")
        self.assertGreaterEqual(ok, rows["increment"]["requests"])

    def test_2_partition(self):
        out, rows = self.loadtest("partition", 3)
        self.assertClean(rows, ["increment", "read", "us-east"])
        self.assertRegex(out, r"partitioned us-east at [\d.]+ s \(regions partitioned: 1\)")
        self.assertRegex(out, r"healed us-east at [\d.]+ s")
        self.assertRegex(out, r'after heal and force-sync: .*"converged":true')
        self.assertIn("loadtest partition: ok", out)
        with harness.Client(self.base) as c:
            self.assertEqual(c.get_json("/global/status")["partitioned_count"], 0)

    def test_3_comparison(self):
        out, rows = self.loadtest("comparison", 2)
        self.assertClean(rows, ["eventual", "strong"])
        self.assertRegex(out, r"strong p50 / eventual p50: [\d.]+x")

    def test_4_errors_fail_the_run(self):
        # us-east's own count at the top of the range: every further increment is a 409.
        with harness.Client(self.base + 1) as c:
            c.post_json("/increment", {"counter_name": "full", "amount": 2**63 - 1})
        out, rows = self.loadtest("basic", 1, expect=1,
                                  env={"LOADTEST_COUNTERS": "full", "LOADTEST_ROUTING": "us-east"})
        self.assertGreater(rows["increment"]["non2xx"], 0)
        self.assertEqual(rows["increment"]["non2xx"], rows["increment"]["requests"])
        self.assertEqual(rows["read"]["non2xx"], 0)
        self.assertRegex(out, r"FAIL: increment: \d+ answers outside 2xx \(statuses 409:\d+\)")
        self.assertIn("loadtest basic: FAILED", out)

    def test_5_lab_down(self):
        down = self.lab("down")
        self.assertEqual(down.returncode, 0, down.stderr)
        for scenario in ("basic", "comparison", "partition"):
            out, rows = self.loadtest(scenario, 1, expect=3)
            self.assertIn("the lab is not running on base port %d" % self.base, out)
            self.assertEqual(rows, {})


if __name__ == "__main__":
    unittest.main(verbosity=2)
