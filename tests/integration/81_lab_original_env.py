"""
81_lab_original_env.py - the lab started with the original lab's environment forms, and
its data kept or deleted (./scripts/lab up, down, down -v).

With LAB_ENDPOINTS=original, ./scripts/lab gives every service its peers and regions as
the original lab's compose file does: PEER_ENDPOINTS, REGION_ENDPOINTS and (gateway)
COUNTER_ENDPOINTS as host:port lists without names. On a free base port:

  up                   "starting with empty data"; each service's environment holds
                       the host:port forms (read from /proc); the coordinator and the
                       gateway know every region's name (their /health is the original's)
  demos/runbook.sh     every step PASS against it
  down, up             "starting on kept data: N counters in us-east-1, ..." with each
                       region's count as its /metrics gives it before the stop
  down -v              the data and Prometheus' data are deleted (the folders are gone)
  up                   "starting with empty data"; no counter anywhere
  down                 every process gone, no sanitizer report in any log
  down -v, down -v     with nothing running: deletes what is left, then says there is none

The lab is always brought down (try/finally, and by the harness' lab guard); .lab/<base>
is removed after a clean run and kept (path printed) after a failure.
"""

import os
import re
import shutil
import subprocess
import sys
import time
import unittest

import harness

ROOT = harness.REPO_ROOT
LAB = os.path.join(ROOT, "scripts", "lab")
RUNBOOK = os.path.join(ROOT, "demos", "runbook.sh")
REGIONS = [("us-east", 1), ("us-west", 2), ("eu-west", 3)]
TIME_LIMIT_S = 105


def environ_of(pid):
    with open("/proc/%d/environ" % pid, "rb") as f:
        items = f.read().split(b"\0")
    return dict(kv.decode(errors="replace").split("=", 1) for kv in items if b"=" in kv)


class LabOriginalEnv(unittest.TestCase):
    maxDiff = None

    def setUp(self):
        self.addCleanup(harness.arm_hard_limit(TIME_LIMIT_S))

    def lab(self, *args, timeout=40):
        rc, out, err = harness.run_lab(self.base, self.env, *args, timeout=timeout)
        self.assertEqual(rc, 0, "lab %s failed:\n%s%s" % (" ".join(args), out, err))
        return out, err

    def pid(self, name):
        with open(os.path.join(self.state, "pids", name + ".pid")) as f:
            return int(f.read().strip())

    def counts(self):
        """Each region's counterd_store_counters, by node id."""
        out = {}
        for region, off in REGIONS:
            with harness.Client(self.base + off) as c:
                samples = harness.parse_metrics(c.get("/metrics").text())
            v = harness.metric_values(samples, "counterd_store_counters")
            self.assertEqual(len(v), 1, "%s's counterd_store_counters" % region)
            out[region + "-1"] = int(v[0])
        return out

    def test_original_env_runbook_and_down_v(self):
        t0 = time.monotonic()
        self.base = harness.free_lab_base()
        self.state = os.path.join(ROOT, ".lab", str(self.base))
        self.env = harness.lab_env(
            drop=("PEER_ENDPOINTS", "REGION_ENDPOINTS", "COUNTER_ENDPOINTS"),
            SYNC_INTERVAL_MS="5000", LAB_ENDPOINTS="original")
        print("\n[81] lab on base port %d with %s" % (self.base, harness.BIN))
        guard = harness.LabGuard(LAB, self.base, self.env)
        ok = False
        try:
            out, err = self.lab("up", "--no-build")
            self.assertIn("lab: starting with empty data", out)
            self.assertIn("counterd lab is up (base port %d)" % self.base, out)
            hp = {r: "127.0.0.1:%d" % (self.base + off) for r, off in REGIONS}
            every = ",".join(hp[r] for r, _ in REGIONS)
            for region, _ in REGIONS:
                env = environ_of(self.pid(region))
                self.assertEqual(env["PEER_ENDPOINTS"],
                                 ",".join(hp[r] for r, _ in REGIONS if r != region))
            self.assertEqual(environ_of(self.pid("coordinator"))["REGION_ENDPOINTS"], every)
            self.assertEqual(environ_of(self.pid("strong"))["REGION_ENDPOINTS"], every)
            gw_env = environ_of(self.pid("gateway"))
            self.assertEqual(gw_env["COUNTER_ENDPOINTS"], every)
            self.assertNotIn("REGION_ENDPOINTS", gw_env)
            for name, port in (("coordinator", self.base), ("gateway", self.base + 80)):
                with harness.Client(port) as c:
                    self.assertEqual(c.get_json("/health"), {"status": "ok", "service": name})
            print("[81] up: %.1f s" % (time.monotonic() - t0))

            t1 = time.monotonic()
            p = subprocess.run([RUNBOOK], env=dict(self.env, BASE_PORT=str(self.base)),
                               stdin=subprocess.DEVNULL, capture_output=True, timeout=45)
            out = p.stdout.decode(errors="replace")
            print("[81] demos/runbook.sh (%.1f s):\n%s%s"
                  % (time.monotonic() - t1, out, p.stderr.decode(errors="replace")))
            self.assertEqual(p.returncode, 0, "demos/runbook.sh failed (see above)")
            self.assertNotIn("FAIL", out)
            self.assertEqual(len(re.findall(r"^PASS ", out, re.M)), 21, "PASS lines")

            # down keeps the data; up says so, with each region's count.
            counts = self.counts()
            self.assertTrue(all(n > 0 for n in counts.values()), counts)
            self.lab("down")
            out, err = self.lab("up", "--no-build")
            want = "lab: starting on kept data: " + ", ".join(
                "%d counter%s in %s" % (n, "" if n == 1 else "s", node)
                for node, n in counts.items())
            self.assertIn(want, out)
            self.assertEqual(self.counts(), counts, "counters after a restart on kept data")

            # down -v deletes the data: the next up starts from zero.
            out, err = self.lab("down", "-v")
            self.assertEqual(err, "")
            self.assertIn("lab: deleted the lab's data", out)
            self.assertFalse(os.path.exists(os.path.join(self.state, "data")))
            self.assertFalse(os.path.exists(os.path.join(self.state, "prometheus")))
            out, err = self.lab("up", "--no-build")
            self.assertIn("lab: starting with empty data", out)
            self.assertEqual(self.counts(), {r + "-1": 0 for r, _ in REGIONS})
            with harness.Client(self.base + 80) as c:
                self.assertEqual(c.get_json("/api/counters")["counter_names"], [])
            ok = True
        finally:
            p = subprocess.run([LAB, "down", "--base-port", str(self.base)], env=self.env,
                               stdin=subprocess.DEVNULL, capture_output=True, timeout=40)
            guard.forget()
            if not ok:
                print("[81] lab state and logs kept in %s" % self.state, file=sys.stderr)
        self.assertEqual(p.returncode, 0)
        for name, off in REGIONS + [("coordinator", 0), ("strong", 4), ("gateway", 80)]:
            self.assertTrue(harness.port_free(self.base + off), "port of %s after down" % name)
        logs = os.path.join(self.state, "logs")
        for f in os.listdir(logs):
            text = harness.read_text(os.path.join(logs, f))
            marks = [m for m in harness.SANITIZER_MARKS if m in text]
            self.assertEqual(marks, [], "%s has a sanitizer report:\n%s"
                             % (f, harness.log_tail(os.path.join(logs, f), 80)))
        # down -v with nothing running still deletes what is left, then says there is none.
        left = [d for d in (os.path.join(self.state, "data"),
                            os.path.join(self.state, "prometheus")) if os.path.exists(d)]
        self.assertIn(os.path.join(self.state, "data"), left)
        out, err = self.lab("down", "-v")
        self.assertEqual((out, err), ("lab: deleted the lab's data (%s)\n" % " ".join(left), ""))
        out, err = self.lab("down", "-v")
        self.assertEqual((out, err), ("lab: no data to delete in %s\n" % self.state, ""))
        shutil.rmtree(self.state, ignore_errors=True)
        print("[81] total %.1f s" % (time.monotonic() - t0))


if __name__ == "__main__":
    unittest.main()
