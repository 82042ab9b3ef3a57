"""
97_wire.py - the wire role alone (counterd --role wire, root only): two namespaces of its
own (us-east, us-west) on a free /24, the wire between them and the host.

  links      GET /links: the matrix's 35 ms one way between the regions (delay_from
             policy), 0 ms to and from the host; a TCP handshake from us-east's namespace
             to us-west's takes 2 x 35 ms (+ RTT_TOLERANCE_MS, see 96_lab_net.py)
  API        POST /admin/links needs the admin token (401); bad input is 400 naming the
             field and changes nothing; delay_ms 5 makes the handshake ~10 ms, cut makes it
             time out (dropped_cut counted), cut false and delay_ms null give the link back
             to the policy
  queue      a burst of UDP datagrams beyond --wire-queue is dropped and counted
             (dropped_queue_full); what is delivered arrives in order
  relay      127.0.0.1:<port> reaches a server in us-west's namespace (accepted counted)
  reload     a new faults.lua matrix applies on POST /admin/reload; a broken one is refused
             (422) and the links keep the last good matrix
  metrics    /metrics is promtool-clean and carries the links' series
  start      a namespace that does not exist stops the wire at start with a sentence
             naming it
  stop       SIGTERM removes the devices (nothing left); no sanitizer report
"""

import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import unittest

import harness
from netprobe import HANDSHAKES, can_run

RTT_TOLERANCE_MS = 15
QUEUE = 8
BURST = 60


# us-west: counts numbered datagrams on port sys.argv[2] for sys.argv[3] s; prints them.
RECEIVER = r"""
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], int(sys.argv[2])))
s.settimeout(0.2)
print("ready", flush=True)
got, end = [], time.monotonic() + float(sys.argv[3])
while time.monotonic() < end:
    try:
        got.append(int(s.recv(100)))
    except socket.timeout:
        pass
print(" ".join(map(str, got)), flush=True)
"""

SENDER = r"""
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for i in range(int(sys.argv[3])):
    s.sendto(str(i).encode(), (sys.argv[1], int(sys.argv[2])))
"""


def sh(*args, check=True):
    return subprocess.run(list(args), capture_output=True, text=True, check=check,
                          stdin=subprocess.DEVNULL, timeout=30)


@unittest.skipIf(can_run(), can_run())
class Wire(harness.ServerTestCase):
    def setUp(self):
        super().setUp()
        tag = "%d%d" % (os.getpid() % 10000, random.randrange(100))
        self.ns = {"us-east": "cdt%s-e" % tag, "us-west": "cdt%s-w" % tag}
        self.device = "cdt%s" % tag
        routes = sh("ip", "-4", "route", "show").stdout
        for _ in range(100):
            self.subnet = "10.%d.%d" % (random.randrange(200, 250), random.randrange(256))
            if self.subnet + ".0/24" not in routes:
                break
        for ns in self.ns.values():
            sh("ip", "netns", "add", ns)
            self.addCleanup(sh, "ip", "netns", "del", ns, check=False)
        self.lua = tempfile.mkdtemp(prefix="counterd-wire-lua-")
        self.addCleanup(shutil.rmtree, self.lua, True)
        shutil.copytree(os.environ.get("COUNTERD_LUA_DIR") or os.path.join(harness.REPO_ROOT,
                                                                           "lua"),
                        self.lua, dirs_exist_ok=True)
        self.token = "wire-secret"
        self.procs = []
        self.addCleanup(self.stop_procs)

    def stop_procs(self):
        for p in self.procs:
            if p.poll() is None:
                p.kill()
            p.wait(5)

    def addr(self, region):
        return "%s.%d" % (self.subnet, 1 if region == "us-east" else 2)

    def start_wire(self, netns=None, relay="", wait=True):
        netns = netns or "us-east=%s,us-west=%s" % (self.ns["us-east"], self.ns["us-west"])
        return self.start_server(["--role", "wire", "--wire-netns", netns,
                                  "--wire-subnet", self.subnet, "--wire-device", self.device,
                                  "--wire-queue", str(QUEUE), "--wire-relay", relay,
                                  "--lua-dir", self.lua, "--admin-token", self.token],
                                 name="wire") if wait else None

    def in_ns(self, region, code, *args, timeout=30, background=False):
        cmd = ["ip", "netns", "exec", self.ns[region], sys.executable, "-c", code] + \
            [str(a) for a in args]
        if background:
            p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                 text=True, preexec_fn=harness.die_with_parent)
            self.procs.append(p)
            return p
        return sh(*cmd).stdout.split()

    def rtt(self, port, n=5, limit=2.0):
        return self.in_ns("us-east", HANDSHAKES, self.addr("us-west"), port, n, limit)

    def serve(self, port):
        """An HTTP server in us-west's namespace on port."""
        p = subprocess.Popen(["ip", "netns", "exec", self.ns["us-west"], sys.executable, "-m",
                              "http.server", str(port), "--bind", self.addr("us-west")],
                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, cwd=self.lua,
                             preexec_fn=harness.die_with_parent)
        self.procs.append(p)
        deadline = time.monotonic() + 10
        while self.rtt(port, 1)[0].split()[0] in ("timeout", "error"):
            self.assertLess(time.monotonic(), deadline, "the test server did not start")
            time.sleep(0.2)

    def link(self, c, a, b):
        return next(l for l in c.get_json("/links")["links"] if l["from"] == a and l["to"] == b)

    def set_links(self, c, body, status=200, token=True):
        hdrs = {"Authorization": "Bearer " + self.token} if token else {}
        r = c.post("/admin/links", body, headers=hdrs)
        self.assertEqual(r.status, status, r.text())
        return r.json()

    def test_wire(self):
        web, relay_port = harness.free_ports(2)
        srv = self.start_wire(relay="127.0.0.1:%d=%s:%d" % (relay_port, self.addr("us-west"),
                                                            web))
        self.serve(web)
        with srv.client() as c:
            body = c.get_json("/links")
            self.assertEqual([e["name"] for e in body["ends"]], ["us-east", "us-west", "host"])
            self.assertEqual([e["address"] for e in body["ends"]],
                             [self.addr("us-east"), self.addr("us-west"), self.subnet + ".254"])
            l = self.link(c, "us-east", "us-west")
            self.assertEqual((l["delay_ms"], l["delay_from"], l["cut"]), (35, "policy", False))
            l = self.link(c, "host", "us-west")
            self.assertEqual((l["delay_ms"], l["delay_from"], l["cut"]), (0, "local", False))
            best = min(float(t) for t in self.rtt(web))
            print("\n[97] RTT us-east -> us-west %.1f ms (matrix 70)" % best)
            self.assertGreaterEqual(best, 70)
            self.assertLess(best, 70 + RTT_TOLERANCE_MS)

            # The API: the token, bad input changes nothing.
            self.set_links(c, {"from": "us-east", "to": "us-west", "cut": True}, 401,
                           token=False)
            for bad, field in (({"from": "mars", "to": "us-west", "cut": True}, "from"),
                               ({"from": "us-east", "to": "us-east", "cut": True}, "from"),
                               ({"from": "us-east", "to": "us-west", "delay_ms": -1}, "delay_ms"),
                               ({"from": "us-east", "to": "us-west", "delay_ms": "5"},
                                "delay_ms"),
                               ({"from": "us-east", "to": "us-west", "delay_ms": 1.5},
                                "delay_ms"),
                               ({"from": "us-east", "to": "us-west", "cut": "yes"}, "cut"),
                               ({"from": "us-east", "to": "us-west", "cut": True,
                                 "both_ways": 1}, "both_ways"),
                               ({"from": "us-east", "to": "us-west"}, "delay_ms")):
                r = self.set_links(c, bad, 400)
                self.assertEqual(r["error"], "bad_field")
                self.assertIn(field, r["detail"], bad)
            self.assertEqual(self.set_links(c, b"{not json", 400)["error"], "bad_json")
            l = self.link(c, "us-east", "us-west")
            self.assertEqual((l["delay_ms"], l["delay_from"], l["cut"]), (35, "policy", False))

            r = self.set_links(c, {"from": "us-west", "to": "us-east", "delay_ms": 5})
            self.assertEqual([(x["from"], x["delay_ms"], x["delay_from"]) for x in r["links"]],
                             [("us-west", 5, "api"), ("us-east", 5, "api")])
            best = min(float(t) for t in self.rtt(web))
            print("[97] RTT with 5 ms set: %.1f ms" % best)
            self.assertGreaterEqual(best, 10)
            self.assertLess(best, 10 + RTT_TOLERANCE_MS)

            self.set_links(c, {"from": "us-east", "to": "us-west", "cut": True})
            self.assertEqual(self.rtt(web, 1, 0.5), ["timeout"])
            l = self.link(c, "us-east", "us-west")
            self.assertEqual((l["cut"], l["cut_by"]), (True, ["api"]))
            self.assertGreater(l["dropped_cut"], 0)
            self.set_links(c, {"from": "us-east", "to": "us-west", "cut": False,
                               "delay_ms": None})
            l = self.link(c, "us-west", "us-east")
            self.assertEqual((l["delay_ms"], l["delay_from"], l["cut"]), (35, "policy", False))

            # The queue: a burst beyond it is dropped and counted; the rest in order.
            before = self.link(c, "us-east", "us-west")
            rx = self.in_ns("us-west", RECEIVER, self.addr("us-west"), web + 1, 2.0,
                            background=True)
            self.assertEqual(rx.stdout.readline().strip(), "ready")
            self.in_ns("us-east", SENDER, self.addr("us-west"), web + 1, BURST)
            got = [int(x) for x in rx.stdout.readline().split()]
            rx.wait(5)
            after = self.link(c, "us-east", "us-west")
            full = after["dropped_queue_full"] - before["dropped_queue_full"]
            print("[97] burst of %d datagrams, queue %d: %d delivered, %d dropped (queue_full)"
                  % (BURST, QUEUE, len(got), full))
            self.assertEqual(got, sorted(got), "delivered in order")
            self.assertGreaterEqual(len(got), QUEUE)
            self.assertEqual(len(got) + full, BURST)
            self.assertEqual(after["packets"] - before["packets"], len(got))

            # The relay from the host's loopback into us-west's namespace.
            with harness.Client(relay_port) as rc:
                r = rc.get("/")
                self.assertEqual(r.status, 200)
            relays = c.get_json("/links")["relays"]
            self.assertEqual(relays[0]["accepted"], 1)
            self.assertEqual(relays[0]["failed"], 0)

            # A new matrix on reload; a broken file keeps the last good one.
            path = os.path.join(self.lua, "policies", "faults.lua")
            text = harness.read_text(path)
            self.assertIn('["us-east|us-west"] = 35', text)
            harness.write_atomic(path, text.replace('["us-east|us-west"] = 35',
                                                    '["us-east|us-west"] = 12'))
            hdrs = {"Authorization": "Bearer " + self.token}
            self.assertEqual(c.post("/admin/reload", {}, headers=hdrs).status, 200)
            l = self.link(c, "us-east", "us-west")
            self.assertEqual((l["delay_ms"], l["delay_from"]), (12, "policy"))
            harness.write_atomic(path, text + "\nthis is not lua\n")
            self.assertEqual(c.post("/admin/reload", {}, headers=hdrs).status, 422)
            self.assertEqual(self.link(c, "us-west", "us-east")["delay_ms"], 12)
            harness.write_atomic(path, text)

            metrics = c.get("/metrics").text()
            harness.assert_promtool_clean(self, metrics, "the wire's /metrics")
            samples = harness.parse_metrics(metrics)
            self.assertEqual(harness.metric_values(samples, "counterd_wire_delay_seconds",
                                                   **{"from": "us-east", "to": "us-west"}),
                             [0.012])
            self.assertGreaterEqual(
                harness.metric_values(samples, "counterd_wire_dropped_total",
                                      **{"from": "us-east", "to": "us-west",
                                         "reason": "queue_full"})[0], BURST - len(got))
        self.assertIn(self.device, sh("ip", "link", "show").stdout)
        srv.stop()
        self.assertNotIn(self.device, sh("ip", "link", "show").stdout)
        self.assertNotIn(self.subnet + ".0/24", sh("ip", "-4", "route", "show").stdout)
        for ns in self.ns.values():
            out = sh("ip", "netns", "exec", ns, "ip", "-4", "addr", "show").stdout
            self.assertNotIn(self.subnet, out, "the namespace's device is gone")

    def test_missing_namespace(self):
        srv = harness.Server(["--role", "wire", "--wire-netns",
                              "us-east=%s,us-west=cdt-none-%d" % (self.ns["us-east"],
                                                                  os.getpid()),
                              "--wire-subnet", self.subnet, "--wire-device", self.device,
                              "--lua-dir", self.lua], name="wire")
        p = subprocess.run(srv.command(), capture_output=True, text=True, timeout=30,
                           stdin=subprocess.DEVNULL)
        self.assertEqual(p.returncode, 1)
        self.assertIn("us-west's namespace: network namespace /var/run/netns/cdt-none-", p.stderr)
        self.assertNotIn(self.device, sh("ip", "link", "show").stdout)


if __name__ == "__main__":
    unittest.main(verbosity=2)
