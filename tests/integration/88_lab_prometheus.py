"""
88_lab_prometheus.py - the lab with a real Prometheus, no docker: `scripts/lab up` on
shifted ports (COUNTERD_BIN: the binary under test) starts every service and Debian's
/usr/bin/prometheus on base+1090, scraping them every second (LAB_SCRAPE_INTERVAL=1s).

Load goes through the gateway, round-robin, so every region takes increments. Prometheus'
HTTP API (/api/v1/query) must then show counter_increments_total and
gateway_routed_to_region_total for each of the three regions, and every service the lab
lists as a target that is up (bounded waits). `scripts/lab down` must leave no process of
the lab (Prometheus included) and no port open; the services' logs must be free of
sanitizer reports.
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import time
import unittest
import urllib.parse
import urllib.request

import harness

LAB = os.path.join(harness.REPO_ROOT, "scripts", "lab")
PROMETHEUS = os.environ.get("PROMETHEUS_BIN", "/usr/bin/prometheus")
REGIONS = [r for r, _ in harness.LAB_REGIONS]
# Offsets scripts/lab adds to the base port (the strong service's 4 included: a port the
# lab may use must be free too).
OFFSETS = harness.LAB_OFFSETS
PROM_OFFSET = 1090
WAIT_S = 30  # for Prometheus to have scraped what the load did






def listening(port):
    """True when something accepts connections on port (closed sockets of a server that
    ended may still hold the port in TIME_WAIT: that is not a listener)."""
    try:
        socket.create_connection((harness.HOST, port), timeout=1).close()
        return True
    except OSError:
        return False


def process_gone(pid):
    """True when pid no longer runs (a zombie waiting for its reaper has ended too)."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state in ("Z", "X")


class LabPrometheus(harness.ServerTestCase):
    def setUp(self):
        super().setUp()
        signal.alarm(90)  # lab up and down with ASan binaries, and Prometheus' start
        if not os.access(PROMETHEUS, os.X_OK):
            self.fail("%s is not installed (Debian package prometheus: scripts/setup)"
                      % PROMETHEUS)
        self.base = harness.free_lab_base()
        self.state = os.path.join(harness.REPO_ROOT, ".lab", str(self.base))
        self.env = dict(os.environ, COUNTERD_BIN=harness.BIN, LAB_SCRAPE_INTERVAL="1s",
                        SYNC_INTERVAL_MS="500", FSYNC_POLICY="no", PROMETHEUS_BIN=PROMETHEUS)

    def lab(self, *args, timeout=60):
        return subprocess.run([LAB] + list(args) + ["--base-port", str(self.base)],
                              env=self.env, capture_output=True, text=True, timeout=timeout)

    def query(self, promql):
        url = "http://%s:%d/api/v1/query?%s" % (harness.HOST, self.base + PROM_OFFSET,
                                                urllib.parse.urlencode({"query": promql}))
        with urllib.request.urlopen(url, timeout=5) as r:
            body = json.loads(r.read().decode())
        self.assertEqual(body.get("status"), "success", body)
        return body["data"]["result"]

    def prometheus_api(self, path):
        url = "http://%s:%d%s" % (harness.HOST, self.base + PROM_OFFSET, path)
        with urllib.request.urlopen(url, timeout=5) as r:
            return json.loads(r.read().decode())

    def read_pids(self):
        pids = {}
        piddir = os.path.join(self.state, "pids")
        for f in os.listdir(piddir):
            with open(os.path.join(piddir, f)) as fh:
                pids[f[:-len(".pid")]] = int(fh.read().strip())
        return pids

    def lab_services(self):
        """The services `scripts/lab status` lists (name -> port)."""
        st = self.lab("status")
        self.assertEqual(st.returncode, 0, st.stderr)
        out = {}
        for line in st.stdout.splitlines():
            f = line.split()
            out[f[0]] = int(f[2])
        return out

    def test_prometheus_scrapes_the_lab(self):
        up = self.lab("up", "--no-build")
        downed = []

        def down_on_failure():
            if not downed:
                self.lab("down")
        self.addCleanup(down_on_failure)
        self.assertEqual(up.returncode, 0, "lab up:\n%s\n%s" % (up.stdout, up.stderr))
        prom_url = "http://localhost:%d" % (self.base + PROM_OFFSET)
        self.assertIn("Prometheus:      %s" % prom_url, up.stdout)

        services = self.lab_services()
        self.assertEqual(services.get("prometheus"), self.base + PROM_OFFSET)
        counterd_services = {n: p for n, p in services.items() if n != "prometheus"}
        for name in ("us-east", "us-west", "eu-west", "coordinator", "gateway"):
            self.assertIn(name, counterd_services)
        pids = self.read_pids()
        self.assertEqual(set(pids), set(services), "pid files: %r" % pids)

        # Load through the gateway: round-robin reaches every region.
        seen = {}
        with harness.Client(services["gateway"]) as g:
            for i in range(60):
                a = g.post_json("/api/increment", {"counter_name": "prom_views",
                                                   "routing": "round-robin"})
                seen[a["region"]] = seen.get(a["region"], 0) + 1
        self.assertEqual(set(seen), set(REGIONS), "regions that took increments: %r" % seen)

        # Prometheus finds both metrics for every region, and every service is a target.
        deadline = time.monotonic() + WAIT_S
        while True:
            inc = {r["metric"].get("region"): float(r["value"][1])
                   for r in self.query('counter_increments_total{counter_name="prom_views"}')}
            routed = {r["metric"].get("region"): float(r["value"][1])
                      for r in self.query("gateway_routed_to_region_total")}
            if (all(inc.get(r, 0) >= seen[r] for r in REGIONS)
                    and all(routed.get(r, 0) >= seen[r] for r in REGIONS)):
                break
            self.assertLess(time.monotonic(), deadline,
                            "after %d s Prometheus has counter_increments_total %r and "
                            "gateway_routed_to_region_total %r; the gateway sent %r"
                            % (WAIT_S, inc, routed, seen))
            time.sleep(0.5)
        self.assertEqual(inc, {r: float(seen[r]) for r in REGIONS})
        self.assertEqual(routed, {r: float(seen[r]) for r in REGIONS})

        targets = self.prometheus_api("/api/v1/targets")["data"]["activeTargets"]
        by_service = {t["labels"].get("lab_service"): t for t in targets}
        self.assertEqual(set(by_service), set(counterd_services),
                         "Prometheus' targets: %r" % sorted(by_service))
        for name, port in counterd_services.items():
            self.assertEqual(by_service[name]["scrapeUrl"],
                             "http://127.0.0.1:%d/metrics" % port, name)
        deadline = time.monotonic() + WAIT_S
        while True:
            health = {t["labels"]["lab_service"]: t["health"]
                      for t in self.prometheus_api("/api/v1/targets")["data"]["activeTargets"]}
            if all(h == "up" for h in health.values()):
                break
            self.assertLess(time.monotonic(), deadline, "target health: %r" % health)
            time.sleep(0.5)
        ups = {r["metric"]["lab_service"]: r["value"][1] for r in self.query("up")}
        self.assertEqual(ups, {n: "1" for n in counterd_services})

        # Down: every process of the lab ends, Prometheus included, and its ports close.
        down = self.lab("down")
        downed.append(True)
        self.assertEqual(down.returncode, 0, "lab down:\n%s\n%s" % (down.stdout, down.stderr))
        deadline = time.monotonic() + 5
        while not all(process_gone(p) for p in pids.values()):
            self.assertLess(time.monotonic(), deadline, "still running after lab down: %r"
                            % {n: p for n, p in pids.items() if not process_gone(p)})
            time.sleep(0.05)
        for name, port in services.items():
            self.assertFalse(listening(port), "port %d (%s) still listening" % (port, name))
        st = self.lab("status")
        self.assertEqual([l.split()[-1] for l in st.stdout.splitlines()],
                         ["stopped"] * len(services), st.stdout)
        logs = os.path.join(self.state, "logs")
        for name in counterd_services:
            with open(os.path.join(logs, name + ".log"), errors="replace") as f:
                text = f.read()
            marks = [m for m in harness.SANITIZER_MARKS if m in text]
            self.assertEqual(marks, [], "%s's log has a sanitizer report:\n%s"
                             % (name, text[-3000:]))
        if not harness.KEEP_LOGS:
            shutil.rmtree(self.state, ignore_errors=True)


if __name__ == "__main__":
    unittest.main()
