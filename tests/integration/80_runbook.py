"""
80_runbook.py - the demo runbook (demos/runbook.md, run and checked by demos/runbook.sh)
against a whole lab started by ./scripts/lab, and the lab script's own promises.

The lab runs on a free base port (base..base+4, base+80 and Prometheus' base+1090 free,
.lab/<base> absent),
with the binary the test was given ($COUNTERD_BIN, the -san build under ctest) and
SYNC_INTERVAL_MS=5000 (the runbook's "sleep 6" waits for one sync round):

  down with nothing running      exit 0, no output at all
  up                             six counterd services and Prometheus, each live with its
                                 pid file
  up again                       "already running", the same seven processes, no eighth
  status                         one line per service: name, port, pid, healthy
  demos/runbook.sh               every step PASS (parts 2 to 7)
  logs us-east, restart us-east  the troubleshooting steps: us-east's log; a new pid, the
                                 others untouched, its data kept, all healthy again
  down                           exit 0, quiet; every process gone, every port free,
                                 no sanitizer report in any service's log
  down again                     exit 0, no output

The lab is always brought down (try/finally, and by the harness' suite watchdog).
.lab/<base> is removed after a clean run and kept (path printed) after a failure.
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
SERVICES = [("us-east", 1), ("us-west", 2), ("eu-west", 3), ("coordinator", 0), ("strong", 4),
            ("gateway", 80), ("prometheus", 1090)]
COUNTERD_SERVICES = [s for s in SERVICES if s[0] != "prometheus"]
TIME_LIMIT_S = 58  # the whole test; it takes 15-30 s under ASan






def pid_state(pid):
    """'alive', 'zombie' or 'gone'."""
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("State:"):
                    return "zombie" if "Z" in line.split()[1] else "alive"
    except OSError:
        pass
    return "gone"


def lab_processes(base):
    """pid -> SERVICE_PORT of every live process whose environment puts it on one of this
    lab's ports (whoever started it)."""
    ports = {str(base + off) for _, off in COUNTERD_SERVICES}
    found = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/environ" % d, "rb") as f:
                env = f.read().split(b"\0")
            with open("/proc/%s/cmdline" % d, "rb") as f:
                cmd = f.read()
        except OSError:
            continue
        if b"counterd" not in cmd:
            continue
        for kv in env:
            if kv.startswith(b"SERVICE_PORT="):
                p = kv.split(b"=", 1)[1].decode()
                if p in ports and pid_state(int(d)) == "alive":
                    found[int(d)] = p
    return found



class Runbook(unittest.TestCase):
    maxDiff = None

    def setUp(self):
        self.addCleanup(harness.arm_hard_limit(TIME_LIMIT_S))

    def lab(self, *args, timeout=30):
        return harness.run_lab(self.base, self.env, *args, timeout=timeout)

    def pids(self):
        out = {}
        d = os.path.join(self.state, "pids")
        for name, _ in SERVICES:
            try:
                with open(os.path.join(d, name + ".pid")) as f:
                    out[name] = int(f.read().strip())
            except OSError:
                pass
        return out

    def test_lab_and_runbook(self):
        t0 = time.monotonic()
        self.base = harness.free_lab_base()
        self.state = os.path.join(ROOT, ".lab", str(self.base))
        self.env = harness.lab_env(SYNC_INTERVAL_MS="5000")
        print("\n[80_runbook] lab on base port %d with %s" % (self.base, harness.BIN))
        guard = harness.LabGuard(LAB, self.base, self.env)
        ok = False
        try:
            # down with nothing running: quiet.
            rc, out, err = self.lab("down")
            self.assertEqual((rc, out, err), (0, "", ""), "down with nothing running")

            rc, out, err = self.lab("up", "--no-build")
            self.assertEqual(rc, 0, "up failed:\n%s%s" % (out, err))
            self.assertIn("counterd lab is up (base port %d)" % self.base, out)
            self.assertIn("Gateway API:     http://localhost:%d" % (self.base + 80), out)
            first = self.pids()
            self.assertEqual(sorted(first), sorted(n for n, _ in SERVICES), "pid files")
            for name, pid in first.items():
                self.assertEqual(pid_state(pid), "alive", "%s (pid %d) after up" % (name, pid))
            procs = lab_processes(self.base)
            counterd_pids = sorted(first[n] for n, _ in COUNTERD_SERVICES)
            self.assertEqual(sorted(procs), counterd_pids,
                             "processes on the lab's ports after up: %r, pid files %r"
                             % (procs, first))
            print("[80_runbook] up: %.1f s" % (time.monotonic() - t0))

            # up twice: nothing new.
            rc, out, err = self.lab("up", "--no-build")
            self.assertEqual(rc, 0, "second up:\n%s%s" % (out, err))
            self.assertTrue(out.startswith("lab: already running\n"), "second up said %r" % out)
            self.assertEqual(err, "", "second up, stderr")
            self.assertEqual(self.pids(), first, "pid files after a second up")
            self.assertEqual(sorted(lab_processes(self.base)), counterd_pids,
                             "a second up started another process")

            rc, out, err = self.lab("status")
            self.assertEqual((rc, err), (0, ""), "status: %s" % err)
            lines = out.splitlines()
            self.assertEqual(len(lines), len(SERVICES), "status:\n" + out)
            for line, (name, off) in zip(lines, SERVICES):
                want = r"^%s +port %d +pid %d +healthy$" % (re.escape(name), self.base + off,
                                                           first[name])
                self.assertRegex(line, want, "status line of %s:\n%s" % (name, out))

            t1 = time.monotonic()
            p = subprocess.run([RUNBOOK], env=dict(self.env, BASE_PORT=str(self.base)),
                               stdin=subprocess.DEVNULL, capture_output=True, timeout=45)
            out = p.stdout.decode(errors="replace")
            print("[80_runbook] demos/runbook.sh (%.1f s):\n%s%s"
                  % (time.monotonic() - t1, out, p.stderr.decode(errors="replace")))
            self.assertEqual(p.returncode, 0, "demos/runbook.sh failed (see above)")
            self.assertNotIn("FAIL", out)
            self.assertEqual(len(re.findall(r"^PASS ", out, re.M)), 21, "PASS lines")

            # The lab stayed as it was.
            self.assertEqual(self.pids(), first, "pid files after the runbook")

            # The troubleshooting steps: logs of one service, restart of us-east (which
            # keeps its data: it stops cleanly and starts on the same data dir).
            rc, out, err = self.lab("logs", "us-east")
            self.assertEqual((rc, err), (0, ""))
            self.assertIn("us-east-1", out, "./scripts/lab logs us-east:\n" + out)
            east = self.base + 1
            before = self.get_json(east, "/counter/partition_demo")
            rc, out, err = self.lab("restart", "us-east")
            self.assertEqual((rc, err), (0, ""), "restart us-east: %s%s" % (out, err))
            now = self.pids()
            self.assertNotEqual(now["us-east"], first["us-east"], "restart kept the old pid")
            self.assertEqual(pid_state(first["us-east"]) in ("gone", "zombie"), True)
            self.assertEqual(out.strip(), "lab: us-east restarted (pid %d)" % now["us-east"])
            self.assertEqual({k: v for k, v in now.items() if k != "us-east"},
                             {k: v for k, v in first.items() if k != "us-east"})
            after = self.get_json(east, "/counter/partition_demo")
            self.assertEqual(after, before, "us-east's partition_demo across a restart")
            rc, out, err = self.lab("status")
            self.assertEqual(len(re.findall(r" healthy$", out, re.M)), len(SERVICES), out)
            first = now
            ok = True
        finally:
            rc, out, err = self.lab("down", timeout=40)
            guard.forget()
            if ok:  # checked only when the rest passed (else the first failure is reported)
                self.assertEqual((rc, out, err), (0, "", ""), "down")
            else:
                print("[80_runbook] down: rc %d %s%s\n[80_runbook] lab state and logs kept in %s"
                      % (rc, out, err, self.state), file=sys.stderr)
        self.check_down(first)
        rc, out, err = self.lab("down")
        self.assertEqual((rc, out, err), (0, "", ""), "down again with nothing running")
        self.check_logs()
        shutil.rmtree(self.state, ignore_errors=True)
        print("[80_runbook] total %.1f s" % (time.monotonic() - t0))

    def get_json(self, port, path):
        with harness.Client(port) as c:
            return c.get_json(path)

    def check_down(self, pids):
        for name, pid in pids.items():
            self.assertIn(pid_state(pid), ("gone", "zombie"), "%s (pid %d) after down" % (name, pid))
        self.assertEqual(lab_processes(self.base), {}, "processes left on the lab's ports")
        for name, off in SERVICES:
            self.assertTrue(harness.port_free(self.base + off),
                            "port %d (%s) still taken after down" % (self.base + off, name))
        self.assertEqual(os.listdir(os.path.join(self.state, "pids")), [], "pid files left")

    def check_logs(self):
        d = os.path.join(self.state, "logs")
        for name, _ in SERVICES:
            path = os.path.join(d, name + ".log")
            with open(path, errors="replace") as f:
                text = f.read()
            marks = [m for m in harness.SANITIZER_MARKS if m in text]
            self.assertEqual(marks, [], "%s's log (%s) has a sanitizer report:\n%s"
                             % (name, path, harness.log_tail(path, 80)))


if __name__ == "__main__":
    unittest.main()
