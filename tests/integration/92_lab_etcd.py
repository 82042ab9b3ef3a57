"""
92_lab_etcd.py - `scripts/lab up --strong etcd` on shifted ports (COUNTERD_BIN: the binary
under test; LAB_PROMETHEUS=0):

- the three etcd members (base+21..23, peers base+31..33) elect one leader, and `status`
  shows each member's role and term and names the leader; the three etcd strong roles
  (base+5..7) answer /admin/etcd with every endpoint ok and one leader, their own region's
  member first;
- the gateway's strong namespace goes to the etcd strong roles, and /api/compare measures
  eventual, the embedded strong counter (base+4) and etcd side by side;
- the leader member killed: `status` names another leader, `restart` brings the member back
  as a follower; `logs etcd-<region>` shows its log;
- `down -v` leaves no process and no open port of the lab, and deletes etcd's data; a
  `status` afterwards is the default lab's again (no etcd lines).

Skipped when etcd is not installed or counterd has no --strong-backend.
"""

import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import unittest

import harness

LAB = os.path.join(harness.REPO_ROOT, "scripts", "lab")
ETCD = os.environ.get("ETCD_BIN") or "/usr/bin/etcd"
ETCD_OFFSETS = (5, 6, 7, 21, 22, 23, 31, 32, 33)
REGIONS = ("us-east", "us-west", "eu-west")


def call(port, method, path, body=None, timeout=15.0):
    conn = http.client.HTTPConnection(harness.HOST, port, timeout=timeout)
    try:
        conn.request(method, path, body=json.dumps(body) if body is not None else None,
                     headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read() or b"{}")
    finally:
        conn.close()


def listening(port):
    try:
        socket.create_connection((harness.HOST, port), timeout=1).close()
        return True
    except OSError:
        return False


class LabEtcd(harness.ServerTestCase):
    def setUp(self):
        super().setUp()
        signal.alarm(100)
        if not os.access(ETCD, os.X_OK):
            self.skipTest("%s is not installed (Debian etcd-server; ./scripts/setup --test)" % ETCD)
        out = subprocess.run([harness.BIN, "--help"], capture_output=True, text=True, timeout=10)
        if "--strong-backend" not in out.stdout + out.stderr:
            self.skipTest("counterd has no --strong-backend etcd")
        avoid = []
        while True:
            self.base = harness.free_lab_base(avoid)
            if all(harness.port_free(self.base + o) for o in ETCD_OFFSETS):
                break
            avoid.append(self.base)
        self.state = os.path.join(harness.REPO_ROOT, ".lab", str(self.base))
        self.env = dict(os.environ, COUNTERD_BIN=harness.BIN, LAB_PROMETHEUS="0",
                        FSYNC_POLICY="no", COUNTERD_WATCH="0")
        self.addCleanup(self.lab, "down", "-v")

    def lab(self, *args, timeout=90):
        return subprocess.run([LAB] + list(args) + ["--base-port", str(self.base)],
                              env=self.env, capture_output=True, text=True, timeout=timeout)

    def status(self):
        st = self.lab("status")
        self.assertEqual(st.returncode, 0, st.stderr)
        lines = st.stdout.splitlines()
        members = {}
        for line in lines:
            m = re.match(r"^etcd-(\S+) +port (\d+) +pid (\S+) +(.*)$", line)
            if m:
                members[m.group(1)] = m.group(4)
        leader = [l.split(":", 1)[1].strip() for l in lines if l.startswith("etcd leader:")]
        return members, (leader[0] if leader else None), st.stdout

    def wait_status_leader(self, timeout=15, not_=None):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            members, leader, out = self.status()
            if leader and leader.startswith("etcd-") and leader != not_:
                return members, leader, out
            time.sleep(0.2)
        self.fail("status names no new etcd leader:\n" + out)

    def test_lab_with_etcd(self):
        up = self.lab("up", "--no-build", "--strong", "etcd")
        self.assertEqual(up.returncode, 0, up.stdout + up.stderr)
        self.assertRegex(up.stdout, r"etcd has a leader: etcd-(us-east|us-west|eu-west)")

        members, leader, out = self.wait_status_leader()
        self.assertEqual(sorted(members), sorted(REGIONS), out)
        roles = [v for v in members.values()]
        self.assertEqual(sum(1 for v in roles if v.startswith("healthy, leader (raft term")), 1, out)
        self.assertEqual(sum(1 for v in roles if v.startswith("healthy, follower (raft term")), 2, out)
        for r in REGIONS:
            self.assertRegex(out, r"(?m)^strong-%s +port %d +pid \d+ +healthy$"
                             % (r, self.base + 5 + REGIONS.index(r)))

        for i, r in enumerate(REGIONS):
            st, body = call(self.base + 5 + i, "GET", "/admin/etcd")
            self.assertEqual(st, 200, body)
            eps = body["endpoints"]
            self.assertEqual(eps[0]["url"], "http://127.0.0.1:%d" % (self.base + 21 + i))
            self.assertTrue(all(e["ok"] for e in eps), body)
            self.assertEqual(sum(1 for e in eps if e["leader"]), 1, body)

        gw = self.base + 80
        st, body = call(gw, "PUT", "/v1/namespaces/labstrong", {"type": "strong"})
        self.assertEqual(st, 200, body)
        st, body = call(gw, "POST", "/v1/counters/labstrong/c/add",
                        {"delta": 3, "idempotency_token": "lab-1"})
        self.assertEqual(st, 200, body)
        self.assertEqual(body.get("backend"), "etcd", body)
        self.assertEqual(body["routed_to_endpoint"], "http://127.0.0.1:%d" % (self.base + 5), body)
        st, body = call(gw, "POST", "/api/compare", {"counter_name": "labcmp", "iterations": 5},
                        timeout=60)
        self.assertEqual(st, 200, body)
        for k in ("eventual_consistency", "strong_consistency", "speedup", "conclusion",
                  "strong_etcd_consistency", "speedup_etcd", "conclusion_etcd"):
            self.assertIn(k, body)
        self.assertEqual(body["strong_etcd_consistency"]["samples"], 5)
        st, v = call(self.base + 4, "GET", "/counter/labcmp")
        self.assertEqual((st, v.get("value")), (200, 5), v)

        # The leader member dies: another is named; restarted, it follows.
        name = leader[len("etcd-"):]
        with open(os.path.join(self.state, "pids", "etcd-%s.pid" % name)) as f:
            os.kill(int(f.read()), signal.SIGKILL)
        members, new, out = self.wait_status_leader(not_=leader)
        self.assertRegex(members[name], r"^stopped", out)
        rs = self.lab("restart", leader)
        self.assertEqual(rs.returncode, 0, rs.stdout + rs.stderr)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            members, _, out = self.status()
            if members[name].startswith("healthy, follower"):
                break
            time.sleep(0.2)
        self.assertRegex(members[name], r"^healthy, (follower|leader)", out)
        logs = self.lab("logs", leader)
        self.assertEqual(logs.returncode, 0, logs.stderr)
        self.assertIn('"msg"', logs.stdout)  # etcd's own (zap, JSON) log lines

        pids = {}
        for f in os.listdir(os.path.join(self.state, "pids")):
            with open(os.path.join(self.state, "pids", f)) as fh:
                pids[f[:-4]] = int(fh.read())
        down = self.lab("down", "-v")
        self.assertEqual(down.returncode, 0, down.stderr)
        for n, pid in pids.items():
            self.assertFalse(os.path.exists("/proc/%d/cmdline" % pid) and
                             open("/proc/%d/stat" % pid).read().rsplit(")", 1)[1].split()[0]
                             not in ("Z", "X"), "%s (pid %d) still runs" % (n, pid))
        for off in (0, 1, 2, 3, 4, 80) + ETCD_OFFSETS:
            self.assertFalse(listening(self.base + off), "port base+%d still open" % off)
        self.assertFalse(os.path.exists(os.path.join(self.state, "etcd")))
        members, leader, out = self.status()
        self.assertEqual((members, leader), ({}, None), out)
        for n in pids:
            if n.startswith("etcd-"):
                continue
            with open(os.path.join(self.state, "logs", n + ".log"), errors="replace") as f:
                text = f.read()
            marks = [m for m in harness.SANITIZER_MARKS if m in text]
            self.assertEqual(marks, [], "%s's log has a sanitizer report:\n%s" % (n, text[-3000:]))
        if not harness.KEEP_LOGS:
            shutil.rmtree(self.state, ignore_errors=True)


if __name__ == "__main__":
    unittest.main()
