"""
90_scenarios.py - scripted scenarios (./scripts/scenario, counterd --role scenario) against
a whole lab started by ./scripts/lab, with the binary the test was given ($COUNTERD_BIN,
the -san build under ctest) for the lab and for the scenario runner alike.

The lab runs on a free base port with SYNC_INTERVAL_MS=1000 (the demos wait for the lab's
own sync rounds; they hold with the default 5 s too, only slower).

  every demos/*.lua          exit 0 and "PASS demos/<file>" (basic, eventual, partition,
                             compare, crdt_state, lifecycle at least: lifecycle walks through
                             namespaces, a clear on us-east behind a partition of us-west,
                             delete and expiry after a 3 s ttl, through the /v1 API)
  a failing expectation      exit 1, "FAIL <file>:<line>: <label>: expected X, got Y" naming
                             the exact line; its finally() still healed the partition it made
  an error in the scenario   exit 1, "ERROR <file>:<line>: ..."
  a syntax error             exit 2, the compiler's file:line
  usage errors               exit 2: no file, a missing file, a bad base port, --role
                             scenario without --script
  no lab on the base port    exit 2 within seconds, "no lab is running on base port N"
  SIGINT while it sleeps     exit 130 at once, nothing leaked (the runner runs under ASan)

Every run of the runner is checked for sanitizer reports. The lab is always brought down
(try/finally, and the harness' suite watchdog); .lab/<base> is removed after a clean run
and kept (path printed) after a failure.
"""

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest

import harness

ROOT = harness.REPO_ROOT
LAB = os.path.join(ROOT, "scripts", "lab")
SCENARIO = os.path.join(ROOT, "scripts", "scenario")
DEMOS = os.path.join(ROOT, "demos")
WANTED_DEMOS = {"basic.lua", "eventual.lua", "partition.lua", "compare.lua", "crdt_state.lua",
                "lifecycle.lua"}
TIME_LIMIT_S = 100  # the whole file (the harness' suite watchdog stops it at 110)







class Scenarios(unittest.TestCase):
    maxDiff = None

    @classmethod
    def setUpClass(cls):
        cls.disarm = harness.arm_hard_limit(TIME_LIMIT_S, "test file")
        cls.t0 = time.monotonic()
        cls.base = harness.free_lab_base()
        cls.state = os.path.join(ROOT, ".lab", str(cls.base))
        cls.env = harness.lab_env(SYNC_INTERVAL_MS="1000",
                                  BASE_PORT="1")  # BASE_PORT must lose to --base-port
        cls.tmp = tempfile.mkdtemp(prefix="counterd-scen-")
        cls.guard = harness.LabGuard(LAB, cls.base, cls.env)
        cls.failed = False
        print("\n[90_scenarios] lab on base port %d with %s" % (cls.base, harness.BIN))
        p = subprocess.run([LAB, "up", "--no-build", "--base-port", str(cls.base)], env=cls.env,
                           stdin=subprocess.DEVNULL, capture_output=True, timeout=60)
        if p.returncode != 0:
            cls.tearDownClass()
            raise harness.HarnessError("lab up failed:\n%s%s" % (p.stdout.decode(errors="replace"),
                                                                p.stderr.decode(errors="replace")))
        print("[90_scenarios] up: %.1f s" % (time.monotonic() - cls.t0))

    @classmethod
    def tearDownClass(cls):
        p = subprocess.run([LAB, "down", "--base-port", str(cls.base)], env=cls.env,
                           stdin=subprocess.DEVNULL, capture_output=True, timeout=40)
        cls.guard.forget()
        cls.disarm()
        shutil.rmtree(cls.tmp, ignore_errors=True)
        reports = []
        logs = os.path.join(cls.state, "logs")
        for name in sorted(os.listdir(logs)) if os.path.isdir(logs) else []:
            path = os.path.join(logs, name)
            with open(path, errors="replace") as f:
                if any(m in f.read() for m in harness.SANITIZER_MARKS):
                    reports.append(path)
        if cls.failed or reports or p.returncode != 0:
            print("[90_scenarios] lab state and logs kept in %s" % cls.state, file=sys.stderr)
        else:
            shutil.rmtree(cls.state, ignore_errors=True)
        print("[90_scenarios] total %.1f s" % (time.monotonic() - cls.t0))
        if reports:
            raise AssertionError("sanitizer reports in the lab's logs: %s" % ", ".join(reports))

    def run(self, result=None):
        before = len(result.failures) + len(result.errors) if result else 0
        out = super().run(result)
        if result and len(result.failures) + len(result.errors) > before:
            type(self).failed = True
        return out

    # ------------------------------------------------------------------ helpers

    def scenario(self, *args, timeout=60, base=None):
        """Runs scripts/scenario; returns (exit status, stdout, stderr)."""
        cmd = [SCENARIO] + list(args)
        if base is not False:
            cmd += ["--base-port", str(base if base is not None else self.base)]
        p = subprocess.run(cmd, env=self.env, stdin=subprocess.DEVNULL, capture_output=True,
                           timeout=timeout, cwd=ROOT)
        out, err = p.stdout.decode(errors="replace"), p.stderr.decode(errors="replace")
        self.assertNoSanitizer(err)
        return p.returncode, out, err

    def assertNoSanitizer(self, err):
        marks = [m for m in harness.SANITIZER_MARKS if m in err]
        self.assertEqual(marks, [], "the scenario runner's stderr has a sanitizer report:\n" + err)

    def write(self, name, text):
        path = os.path.join(self.tmp, name)
        with open(path, "w") as f:
            f.write(text)
        return path

    def partitioned_count(self):
        with harness.Client(self.base + 80) as c:
            return c.get_json("/api/status")["partitioned_count"]

    # ------------------------------------------------------------------ tests

    def test_1_every_demo_passes(self):
        demos = sorted(f for f in os.listdir(DEMOS) if f.endswith(".lua"))
        self.assertTrue(WANTED_DEMOS <= set(demos), "demos/: %r" % demos)
        for name in demos:
            t = time.monotonic()
            rc, out, err = self.scenario(os.path.join("demos", name))
            print("[90_scenarios] demos/%s: exit %d in %.1f s\n%s%s"
                  % (name, rc, time.monotonic() - t, out, err))
            self.assertEqual(rc, 0, "demos/%s failed:\n%s%s" % (name, out, err))
            self.assertRegex(out, r"(?m)^PASS demos/%s \([1-9][0-9]* expectations held, "
                             % name.replace(".", r"\."))
            self.assertEqual(err, "", "demos/%s wrote to stderr" % name)
        self.assertEqual(self.partitioned_count(), 0, "a demo left a region partitioned")

    def test_2_failing_expectation(self):
        path = self.write("failing.lua", (
            "local name = unique('failing')\n"
            "partition('us-east')\n"
            "finally(function() heal() end)\n"
            "increment(name, 2, { region = 'us-west' })\n"
            "expect(region_counter('us-west', name).total_count).to_be(2)\n"
            "expect(region_counter('us-west', name).total_count, \"us-west's total\").to_be(3)\n"
            "expect(1).to_be(1)\n"))
        rc, out, err = self.scenario(path)
        self.assertEqual(rc, 1, "stdout:\n%s\nstderr:\n%s" % (out, err))
        self.assertEqual(err, "FAIL %s:6: us-west's total: expected 3, got 2\n" % path)
        self.assertNotIn("PASS", out)
        # finally() ran although the scenario failed.
        self.assertEqual(self.partitioned_count(), 0, "the failing scenario's finally did not heal")

    def test_3_failing_eventually_and_http_status(self):
        path = self.write("slow.lua", (
            "local name = unique('never')\n"
            "eventually(function()\n"
            "  expect(counter(name).global_count, 'global').at_least(1)\n"
            "end, 1)\n"))
        t = time.monotonic()
        rc, out, err = self.scenario(path)
        self.assertEqual(rc, 1, err)
        self.assertLess(time.monotonic() - t, 15)
        self.assertRegex(err, r"^FAIL %s:2: eventually: did not hold within 1 s \([0-9]+ tries\); "
                         r"last: %s:3: global: expected at least 1, got 0\n$"
                         % (path, path))
        path = self.write("status.lua", "increment('x', 1, { routing = 'no-such-policy' })\n")
        rc, out, err = self.scenario(path)
        self.assertEqual(rc, 1, err)
        self.assertRegex(err, r"^FAIL %s:1: POST http://127\.0\.0\.1:%d/api/increment answered "
                         r"HTTP 400 \{.*error=\"bad_field\"" % (path, self.base + 80))

    def test_4_scenario_errors(self):
        path = self.write("error.lua", "expect(1).to_be(1)\nlocal t = nil\nt.x = 1\n")
        rc, out, err = self.scenario(path)
        self.assertEqual(rc, 1, err)
        self.assertRegex(err, r"^ERROR %s:3: attempt to index" % path)
        path = self.write("syntax.lua", "expect(1).to_be(1)\nexpect(\n")
        rc, out, err = self.scenario(path)
        self.assertEqual(rc, 2, err)
        self.assertIn("%s:3:" % path, err)
        # The sandbox: no io, no os.execute, no loadfile in a scenario.
        path = self.write("sandbox.lua", "expect(io).to_be(nil)\nexpect(loadfile).to_be(nil)\n"
                                         "expect(os.execute).to_be(nil)\nexpect(counterd).to_be(nil)\n")
        rc, out, err = self.scenario(path)
        self.assertEqual((rc, err), (0, ""), out)

    def test_5_usage_errors(self):
        rc, out, err = self.scenario(base=False)
        self.assertEqual(rc, 2)
        self.assertIn("usage: scripts/scenario FILE.lua [--base-port N]", err)
        rc, out, err = self.scenario(os.path.join(self.tmp, "missing.lua"))
        self.assertEqual(rc, 2)
        self.assertIn("no such file", err)
        ok = self.write("ok.lua", "expect(1).to_be(1)\n")
        rc, out, err = self.scenario(ok, "--base-port", "x", base=False)
        self.assertEqual(rc, 2)
        self.assertIn("--base-port must be a number", err)
        p = subprocess.run([harness.BIN, "--role", "scenario"], env=self.env, capture_output=True,
                           stdin=subprocess.DEVNULL, timeout=30)
        self.assertEqual(p.returncode, 2)
        self.assertIn(b"the scenario role needs --script FILE.lua", p.stderr)
        # BASE_PORT (set to 1 for the whole test) is the default when --base-port is absent.
        rc, out, err = self.scenario(ok, base=False)
        self.assertEqual(rc, 2, out + err)
        self.assertIn("no lab is running on base port 1:", err)

    def test_6_no_lab(self):
        base = harness.free_lab_base(avoid=(self.base,))
        ok = self.write("ok.lua", "expect(1).to_be(1)\n")
        t = time.monotonic()
        rc, out, err = self.scenario(ok, base=base)
        self.assertEqual(rc, 2, out + err)
        self.assertLess(time.monotonic() - t, 10)
        self.assertIn("no lab is running on base port %d: no answer from gateway "
                      "http://127.0.0.1:%d/health" % (base, base + 80), err)
        self.assertIn("./scripts/lab up --base-port %d" % base, err)
        self.assertEqual(out, "")

    def test_7_interrupted(self):
        path = self.write("long.lua", "log('sleeping')\nsleep(60)\nexpect(1).to_be(2)\n")
        p = subprocess.Popen([SCENARIO, path, "--base-port", str(self.base)], env=self.env,
                             stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, cwd=ROOT)
        try:
            line = p.stdout.readline().decode()
            self.assertIn("sleeping", line)
            t = time.monotonic()
            p.send_signal(signal.SIGINT)
            out, err = p.communicate(timeout=20)
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
        self.assertLess(time.monotonic() - t, 10)
        self.assertEqual(p.returncode, 130, err.decode(errors="replace"))
        self.assertNoSanitizer(err.decode(errors="replace"))


if __name__ == "__main__":
    unittest.main()
