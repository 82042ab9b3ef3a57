"""
56_policy_runaway.py - a policy that would hold the node inside C code is stopped by its
budget, through the real binaries.

The watchdog hook only runs between Lua VM instructions. These policies spend their time
in library functions instead, where only the functions' own limits can stop them: a
pattern that backtracks for hours (".-.-.-.-b" on 30 000 a's), a gigabyte string.rep, a
table.concat of 150 MB (past the heap cap of a policy call), and an infinite loop wrapped
in pcall, which would catch the watchdog's error and loop again.

- The gateway, routing.lua edited and reloaded: every increment still succeeds through
  the fallback (a healthy region) within about the budget, each failure is logged with
  its file:line and counted, /health answers at once while runaway requests keep coming,
  and SIGTERM in the middle of them stops the gateway cleanly.
- Regions started with a faults.lua whose decide() does the same things in turn:
  replication still converges (every message delivered, as without a policy), the
  errors are logged and counted, the nodes stay healthy and stop cleanly.
"""

import os
import shutil
import tempfile
import time
import unittest

import harness

read, write, line_of = harness.read_text, harness.write_atomic, harness.line_of

LUA_SRC = os.environ.get("COUNTERD_LUA_DIR") or os.path.join(harness.REPO_ROOT, "lua")
REGIONS = ("us-east", "us-west", "eu-west")
NODES = ("us-east-1", "us-west-1", "eu-west-1")
BUDGET_MS = 50
# One request: the budget, the fallback's own request to a region, and the sanitizers'
# slowness; a hang would be minutes.
ONE_REQUEST_S = 1.0

ROUTE_HEAD = '  policy = policy or "random"\n'
RUNAWAY_ROUTES = """\
  if policy == "runaway-pattern" then
    local s = string.rep("a", 30000)
    local at = s:find(".-.-.-.-b") -- the pattern line
    return at
  end
  if policy == "runaway-rep" then
    local big = string.rep("x", 2^30) -- the rep line
    return #big
  end
  if policy == "runaway-concat" then
    local t = {}
    for i = 1, 5000 do t[i] = string.rep("y", 30000) end
    return #table.concat(t) -- the concat line
  end
  if policy == "runaway-pcall" then
    while true do pcall(function() while true do end end) end -- the pcall line
  end
"""

FAULTS_RUNAWAY = """\
local M = {}
local calls = 0
function M.decide(dir, from, to, kind, partitioned)
  calls = calls + 1
  local what = calls % 3
  if what == 0 then
    local at = string.rep("a", 30000):find(".-.-.-.-b") -- the pattern line
  elseif what == 1 then
    local big = string.rep("x", 2^30) -- the rep line
  else
    while true do pcall(function() while true do end end) end -- the pcall line
  end
  return "drop"
end
return M
"""


def metric(srv, name, **labels):
    with srv.client() as c:
        r = c.get("/metrics")
    assert r.status == 200, r
    return sum(harness.metric_values(harness.parse_metrics(r.text()), name, **labels))


class RunawayPolicy(harness.ServerTestCase):
    def lua_copy(self):
        d = tempfile.mkdtemp(prefix="counterd-lua-")
        self.addCleanup(shutil.rmtree, d, True)
        dst = os.path.join(d, "lua")
        shutil.copytree(LUA_SRC, dst)
        return dst

    def assert_health_quick(self, srv, limit=0.5):
        t0 = time.monotonic()
        with srv.client(timeout=5) as c:
            self.assertEqual(c.get_json("/health")["status"], "ok")
        took = time.monotonic() - t0
        self.assertLess(took, limit, "GET /health took %.2f s" % took)
        return took

    def test_a_reloaded_routing_policy_that_runs_away_falls_back_within_its_budget(self):
        lua = self.lua_copy()
        routing = os.path.join(lua, "policies", "routing.lua")
        topo = harness.Topology(gateway_args=["--lua-dir", lua, "--policy-budget-ms",
                                              str(BUDGET_MS)])
        topo.start(self.addCleanup)
        gw = topo.gateway
        text = read(routing)
        self.assertEqual(text.count(ROUTE_HEAD), 1)
        text = text.replace(ROUTE_HEAD, ROUTE_HEAD + RUNAWAY_ROUTES)
        write(routing, text)
        with gw.client(timeout=10) as c:
            r = c.request("POST", "/admin/reload")
        harness.assert_json_response(r, 200, "POST /admin/reload")

        expected = {
            "runaway-pattern": ("the pattern line",
                                "policy ran longer than its budget of %d ms" % BUDGET_MS),
            "runaway-rep": ("the rep line",
                            "string.rep: a policy may build strings of at most 1048576 bytes"),
            "runaway-concat": ("the concat line",
                               "policy grew the Lua heap past its limit of 64 MiB"),
            "runaway-pcall": ("the pcall line",
                              "policy ran longer than its budget of %d ms" % BUDGET_MS),
        }
        for policy, (marker, message) in expected.items():
            before = metric(gw, "counterd_policy_errors_total", policy="routing")
            with gw.client(timeout=10) as c:
                for _ in range(3):
                    t0 = time.monotonic()
                    body = c.post_json("/api/increment", {"counter_name": "runaway",
                                                          "routing": policy})
                    took = time.monotonic() - t0
                    self.assertIn(body["region"], REGIONS, policy)
                    self.assertLess(took, ONE_REQUEST_S, "%s took %.2f s" % (policy, took))
                    self.assert_health_quick(gw)
            self.assertGreaterEqual(metric(gw, "counterd_policy_errors_total",
                                           policy="routing") - before, 3, policy)
            # The concat fails in C, with no Lua line to name; the others name theirs.
            where = "" if policy == "runaway-concat" else "%s:%d: " % (routing,
                                                                       line_of(text, marker))
            self.assertIn("routing.route failed, choosing a healthy region instead: %s%s"
                          % (where, message), gw.log_text(), policy)

        # Runaway requests back to back from two connections: /health still answers at
        # once (at most one budget behind), and every increment succeeds.
        load = harness.IncrementLoad(gw.port, {"counter_name": "runaway",
                                               "routing": "runaway-pattern"}, threads=2)
        load.start()
        self.addCleanup(load.stop)
        deadline = time.monotonic() + 10
        while load.ok_total() < 6 and time.monotonic() < deadline:
            time.sleep(0.02)
        self.assertGreaterEqual(load.ok_total(), 6, "the runaway load did not get going")
        worst = max(self.assert_health_quick(gw) for _ in range(15))
        self.assertEqual(load.problems, [], "requests failed under runaway load")
        # SIGTERM while runaway calls are in flight: a clean exit, at once.
        t_stop = time.monotonic()
        gw.stop()  # exit status 0, no sanitizer report, or it raises
        stopped_in = time.monotonic() - t_stop
        load.stop()
        self.assertTrue(load.join(10), "the load did not stop")
        self.assertLess(stopped_in, 3.0, "SIGTERM took %.2f s" % stopped_in)
        self.assertEqual([p for p in load.problems if p[0] < t_stop], [],
                         "requests failed before the stop")
        print("\n  runaway load: %d increments answered, /health worst %.0f ms, SIGTERM "
              "exit in %.0f ms" % (load.ok_total(), worst * 1000, stopped_in * 1000))

    def test_b_a_started_faults_policy_that_runs_away_delivers_every_message(self):
        d = tempfile.mkdtemp(prefix="counterd-lua-")
        self.addCleanup(shutil.rmtree, d, True)
        os.makedirs(os.path.join(d, "policies"))
        path = os.path.join(d, "policies", "faults.lua")
        write(path, FAULTS_RUNAWAY)
        ports = harness.free_ports(3)
        specs = []
        for i, node in enumerate(NODES):
            peers = ",".join("http://127.0.0.1:%d" % ports[j] for j in range(3) if j != i)
            specs.append(dict(args=["--region", node[:-2], "--node-id", node, "--peers", peers,
                                    "--sync-interval-ms", "60000", "--sync-timeout-ms", "2000",
                                    "--lua-dir", d, "--policy-budget-ms", str(BUDGET_MS)],
                              port=ports[i], name=node))
        servers = self.start_servers(specs)
        clients = [s.client(timeout=10) for s in servers]
        for c in clients:
            self.addCleanup(c.close)
        for i, c in enumerate(clients):
            c.post_json("/increment", {"counter_name": "faulty", "amount": i + 1})
        # Every decide() fails, so every message is delivered as if there were no policy
        # (the policy would have dropped them all): two rounds reach everyone.
        for _ in range(2):
            for srv, c in zip(servers, clients):
                t0 = time.monotonic()
                self.assertEqual(c.post_json("/admin/force-sync")["status"], "sync_completed")
                took = time.monotonic() - t0
                self.assertLess(took, 5.0, "force-sync took %.2f s" % took)
                self.assert_health_quick(srv)
        want = {n: i + 1 for i, n in enumerate(NODES)}
        for c in clients:
            self.assertEqual(c.get_json("/counter/faulty")["nodes"], want)
        logs = "".join(s.log_text() for s in servers)
        for marker, message in (
                ("the pattern line", "policy ran longer than its budget of %d ms" % BUDGET_MS),
                ("the rep line",
                 "string.rep: a policy may build strings of at most 1048576 bytes"),
                ("the pcall line", "policy ran longer than its budget of %d ms" % BUDGET_MS)):
            self.assertIn("faults.decide failed, delivering as if there were no policy: "
                          "%s:%d: %s" % (path, line_of(FAULTS_RUNAWAY, marker), message), logs)
        for srv in servers:
            self.assertGreater(metric(srv, "counterd_policy_errors_total", policy="faults"), 0,
                               srv.name)
        # The cleanup stops every node with SIGTERM and insists on a clean exit.


if __name__ == "__main__":
    unittest.main(verbosity=2)
