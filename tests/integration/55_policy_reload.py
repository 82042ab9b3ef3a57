"""
55_policy_reload.py - live policy editing through the real binaries: POST /admin/reload
and --watch.

Every test starts its services with --lua-dir on a temporary copy of lua/ and edits the
files there, as a person editing a policy in the running lab would.

- Under load through the gateway, routing.lua is edited so that every increment goes to
  us-west and reloaded: from then on only us-west counts, and no request fails.
- A file that does not compile, an init() that raises, and a file that does not return a
  table are refused with 422 (file, line, message), logged and counted; the policy that
  was serving keeps serving.
- --watch picks an edit up within about 2 s without any request, and keeps the old
  policy when the edit is broken.
- Every role reloads: a region (faults.lua dropping all sync stops convergence, the fix
  restores it), the coordinator (its role file), the strong counter (faults.lua).
- The round-robin position lives in counterd.shared and survives a reload.
- A reloaded policy that loops forever is stopped by --policy-budget-ms: the increment
  falls back to a healthy region and succeeds, the error is counted, the gateway stays
  responsive.
- A reloaded policy is sandboxed: no io, os.execute, loadfile and the like.
- With --admin-token, /admin/reload needs the token on every role.
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

# The edit that sends every increment to us-west, whatever policy the request names.
ROUTE_HEAD = '  policy = policy or "random"\n'
ROUTE_TO_US_WEST = ('  policy = "us-west" -- edited live: every increment goes to us-west\n')


def metric(srv, name, **labels):
    with srv.client() as c:
        r = c.get("/metrics")
    assert r.status == 200, r
    return sum(harness.metric_values(harness.parse_metrics(r.text()), name, **labels))


def reload(srv, headers=None):
    with srv.client(timeout=10) as c:
        return c.request("POST", "/admin/reload", headers=headers)


def local_counts(topo, counter):
    out = {}
    for r in topo.regions:
        with r.client() as c:
            out[r.region] = c.get_json("/counter/%s" % counter)["local_count"]
    return out


class ReloadTest(harness.ServerTestCase):
    def lua_copy(self):
        d = tempfile.mkdtemp(prefix="counterd-lua-")
        self.addCleanup(shutil.rmtree, d, True)
        dst = os.path.join(d, "lua")
        shutil.copytree(LUA_SRC, dst)
        return dst

    def gateway_topology(self, gateway_args=(), **kw):
        """Regions, coordinator and a gateway whose Lua folder is a copy: (topology, the
        copy's routing.lua path)."""
        lua = self.lua_copy()
        topo = harness.Topology(gateway_args=["--lua-dir", lua] + list(gateway_args), **kw)
        topo.start(self.addCleanup)
        return topo, os.path.join(lua, "policies", "routing.lua")

    def edit(self, path, old, new):
        text = read(path)
        self.assertEqual(text.count(old), 1, "%r once in %s" % (old, path))
        write(path, text.replace(old, new))

    def routed(self, topo, routing, counter="probe", status=200):
        """The region that took one increment sent through the gateway with `routing`."""
        with topo.gateway.client(timeout=10) as c:
            body = c.post_json("/api/increment", {"counter_name": counter, "routing": routing},
                               status)
        return body["region"]

    def assert_reloaded(self, srv, *files):
        r = reload(srv)
        harness.assert_json_response(r, 200, "POST /admin/reload")
        body = r.json()
        self.assertEqual(set(body), {"status", "files", "reloads"}, body)
        self.assertEqual(body["status"], "reloaded")
        self.assertIsCount(body["reloads"], "reloads")
        for f in files:
            self.assertIn(f, body["files"])
        return body

    def assert_refused(self, srv, path, line, message):
        """POST /admin/reload answers 422 naming path:line and the message. line None: the
        error has no line to point at (0)."""
        before = metric(srv, "counterd_lua_reloads_total", result="error")
        ok_before = metric(srv, "counterd_lua_reloads_total", result="ok")
        r = reload(srv)
        harness.assert_json_response(r, 422, "POST /admin/reload of a broken %s" % path)
        body = r.json()
        self.assertEqual(set(body), {"detail", "error", "file", "line", "message"}, body)
        self.assertEqual(body["error"], "reload_failed")
        self.assertEqual(body["file"], path)
        self.assertIsCount(body["line"], "line")
        self.assertEqual(body["line"], line if line is not None else 0, body)
        self.assertIn(message, body["message"])
        where = "%s:%d:" % (path, line) if line is not None else path
        self.assertIn(where, body["detail"])
        self.assertIn("old Lua files keep serving", body["detail"])
        self.assertEqual(metric(srv, "counterd_lua_reloads_total", result="error"), before + 1)
        self.assertEqual(metric(srv, "counterd_lua_reloads_total", result="ok"), ok_before)
        log = srv.log_text()
        self.assertIn("reload failed", log)
        self.assertIn(where, log)
        self.assertIn(message, log)
        return body

    # ------------------------------------------------------------------------------ (a)

    def test_a_reload_under_load_sends_every_increment_to_us_west(self):
        topo, routing = self.gateway_topology()
        with topo.gateway.client() as gw:
            harness.wait_gateway_names_homes(gw)
        load = harness.IncrementLoad(topo.gateway.port, {"counter_name": "live",
                                                         "routing": "random"},
                                     threads=8, total=200000)
        load.start()
        self.addCleanup(load.stop)
        deadline = time.monotonic() + 15
        while load.ok_total() < 300 and time.monotonic() < deadline:
            time.sleep(0.02)
        self.assertGreaterEqual(load.ok_total(), 300, "the load did not get going")
        before = local_counts(topo, "live")
        # Random routing: each region took a share (300 increments, 1/3 each).
        for region in REGIONS:
            self.assertGreater(before[region], 0, before)

        self.edit(routing, ROUTE_HEAD, ROUTE_TO_US_WEST)
        body = self.assert_reloaded(topo.gateway, routing)
        self.assertEqual(body["reloads"], 1)
        # Increments the old policy had already routed may still be on their way.
        time.sleep(0.3)
        mid = local_counts(topo, "live")
        t_mid = time.monotonic()
        deadline = t_mid + 10
        while load.ok_after(t_mid) < 300 and time.monotonic() < deadline:
            time.sleep(0.02)
        load.stop()
        self.assertTrue(load.join(15), "the load did not stop")
        after_reload = load.ok_after(t_mid)
        final = local_counts(topo, "live")

        self.assertEqual(load.problems, [], "requests failed around the reload")
        self.assertGreaterEqual(after_reload, 300)
        # After the reload, only us-west counted.
        self.assertEqual(final["us-east"], mid["us-east"], (mid, final))
        self.assertEqual(final["eu-west"], mid["eu-west"], (mid, final))
        # At most one request per thread was counted before the snapshot and answered after.
        self.assertGreaterEqual(final["us-west"] - mid["us-west"], after_reload - load.nthreads)
        # Every answered increment was counted once, in exactly one region.
        self.assertEqual(sum(final.values()), load.ok_total(), (final, load.ok_total()))
        self.assertEqual(metric(topo.gateway, "counterd_lua_reloads_total", result="ok"), 1)
        # Any policy the request names now lands in us-west.
        for policy in ("random", "us-east", "eu-west", "sticky", "round-robin"):
            self.assertEqual(self.routed(topo, policy), "us-west", policy)

    # ------------------------------------------------------------------------------ (b)

    def test_b_a_broken_file_is_refused_and_the_old_policy_keeps_serving(self):
        topo, routing = self.gateway_topology()
        good = read(routing)
        # A valid edit first: from here on the serving policy is recognisable (everything
        # to us-west), unlike the original file or the random fallback.
        self.edit(routing, ROUTE_HEAD, ROUTE_TO_US_WEST)
        self.assert_reloaded(topo.gateway, routing)
        edited = read(routing)
        self.assertEqual(self.routed(topo, "eu-west"), "us-west")

        def still_serving():
            for policy in ("eu-west", "us-east", "random"):
                self.assertEqual(self.routed(topo, policy), "us-west",
                                 "after a refused reload the edited policy must still serve")

        # 1. A syntax error.
        broken = edited.replace("  local n = #names\n", "  local n = = #names\n", 1)
        self.assertNotEqual(broken, edited)
        write(routing, broken)
        self.assert_refused(topo.gateway, routing, line_of(broken, "local n = = #names"),
                            "unexpected symbol near '='")
        still_serving()

        # 2. An init() that raises.
        init = edited.replace("\nreturn M\n", "\nfunction M.init()\n  error(\"routing refuses "
                              "to start: no region table\")\nend\n\nreturn M\n")
        self.assertNotEqual(init, edited)
        write(routing, init)
        self.assert_refused(topo.gateway, routing, line_of(init, "error(\"routing refuses"),
                            "routing refuses to start: no region table")
        still_serving()

        # 3. A file that returns something other than a table.
        write(routing, "-- routing.lua, edited by mistake\nreturn 42\n")
        self.assert_refused(topo.gateway, routing, None,
                            "the file must return a table of functions (it returned number)")
        still_serving()

        # 4. A file that raises while it runs (not in init).
        top = edited.replace("\nlocal M = {}\n", "\nlocal M = {}\nlocal regions = nil\n"
                             "local first = regions[1]\n")
        self.assertNotEqual(top, edited)
        write(routing, top)
        self.assert_refused(topo.gateway, routing, line_of(top, "local first = regions[1]"),
                            "attempt to index local 'regions' (a nil value)")
        still_serving()

        # 5. route() misspelt: the file loads, but the gateway would have nothing to call.
        write(routing, edited.replace("function M.route(", "function M.rout(", 1))
        self.assert_refused(topo.gateway, routing, None,
                            "the file must return a table with a route() function")
        still_serving()

        # 6. A library the role loads (bench/compare.lua) that does not compile: the role
        # is staged with fresh libraries, so this is refused too, and nothing is swapped.
        compare = os.path.join(os.path.dirname(os.path.dirname(routing)), "bench",
                               "compare.lua")
        compare_text = read(compare)
        write(routing, good)
        broken_compare = compare_text.replace("local M = {}", "local M = = {}", 1)
        write(compare, broken_compare)
        self.assert_refused(topo.gateway, compare, line_of(broken_compare, "local M = = {}"),
                            "unexpected symbol near '='")
        still_serving()

        # Fixed: the reload goes through and the original policy serves again.
        write(compare, compare_text)
        self.assert_reloaded(topo.gateway, routing)
        self.assertEqual(self.routed(topo, "eu-west"), "eu-west")
        self.assertEqual(self.routed(topo, "us-east"), "us-east")
        self.assertEqual(metric(topo.gateway, "counterd_lua_reloads_total", result="error"), 6)
        self.assertEqual(metric(topo.gateway, "counterd_lua_reloads_total", result="ok"), 2)
        # No increment ever failed over to the random fallback: the policy never failed.
        self.assertEqual(metric(topo.gateway, "counterd_policy_errors_total"), 0)

    # ------------------------------------------------------------------------------ (c)

    def test_c_watch_reloads_on_change_and_keeps_the_old_policy_on_a_broken_edit(self):
        topo, routing = self.gateway_topology(gateway_args=["--watch"])
        good = read(routing)
        self.assertEqual(self.routed(topo, "eu-west"), "eu-west")

        def wait_for(region, policy="eu-west", limit=2.5):
            t0 = time.monotonic()
            while time.monotonic() - t0 < limit:
                if self.routed(topo, policy) == region:
                    return time.monotonic() - t0
                time.sleep(0.05)
            self.fail("the edit was not picked up within %.1f s" % limit)

        self.edit(routing, ROUTE_HEAD, ROUTE_TO_US_WEST)
        took = wait_for("us-west")
        self.assertLess(took, 2.0)
        self.assertEqual(metric(topo.gateway, "counterd_lua_reloads_total", result="ok"), 1)
        self.assertIn("--watch: a Lua file changed; reloaded", topo.gateway.log_text())

        # A broken edit: logged and counted, the edited policy keeps serving.
        edited = read(routing)
        broken = edited.replace("  local n = #names\n", "  local n = = #names\n", 1)
        write(routing, broken)
        where = "%s:%d:" % (routing, line_of(broken, "local n = = #names"))
        t0 = time.monotonic()
        while time.monotonic() - t0 < 2.5 and \
                metric(topo.gateway, "counterd_lua_reloads_total", result="error") < 1:
            time.sleep(0.05)
        self.assertEqual(metric(topo.gateway, "counterd_lua_reloads_total", result="error"), 1)
        self.assertIn("reload failed", topo.gateway.log_text())
        self.assertIn(where, topo.gateway.log_text())
        for _ in range(5):
            self.assertEqual(self.routed(topo, "eu-west"), "us-west")
        # A broken file is not retried over and over while it stays as it is.
        time.sleep(1.2)
        self.assertEqual(metric(topo.gateway, "counterd_lua_reloads_total", result="error"), 1)

        # Fixed on disk: picked up again.
        write(routing, good)
        took = wait_for("eu-west")
        self.assertLess(took, 2.0)
        self.assertEqual(metric(topo.gateway, "counterd_lua_reloads_total", result="ok"), 2)

    # ------------------------------------------------------------------------------ (d)

    def test_d_every_role_reloads(self):
        region_lua, coord_lua, strong_lua = self.lua_copy(), self.lua_copy(), self.lua_copy()
        topo = harness.Topology(region_args=["--lua-dir", region_lua],
                                coordinator_args=["--lua-dir", coord_lua],
                                strong=True, strong_args=["--lua-dir", strong_lua])
        topo.start(self.addCleanup)
        coord = topo.coordinator.client(timeout=30)
        self.addCleanup(coord.close)

        # Regions: faults.lua edited to drop every sync message.
        faults = os.path.join(region_lua, "policies", "faults.lua")
        faults_good = read(faults)
        decide = "function M.decide(dir, from, to, kind, partitioned)\n"
        self.edit(faults, decide, decide + '  if kind == "sync" then return "drop" end\n')
        for r in topo.regions:
            self.assert_reloaded(r, faults)
        for i, r in enumerate(topo.regions):
            with r.client() as c:
                c.post_json("/increment", {"counter_name": "fs", "amount": i + 1})
        coord.post_json("/global/force-sync")
        view = coord.get_json("/global/counter/fs")
        self.assertFalse(view["convergence"]["converged"], view)
        for i, r in enumerate(topo.regions):
            with r.client() as c:
                self.assertEqual(c.get_json("/counter/fs")["nodes"], {r.node_id: i + 1})
        # Fixed and reloaded: one force-sync converges.
        write(faults, faults_good)
        for r in topo.regions:
            self.assert_reloaded(r, faults)
        coord.post_json("/global/force-sync")
        view = coord.get_json("/global/counter/fs")
        self.assertTrue(view["convergence"]["converged"], view)
        self.assertEqual(view["global_count"], 6)

        # Coordinator: its role file, edited, then broken.
        role = os.path.join(coord_lua, "roles", "coordinator.lua")
        role_good = read(role)
        self.edit(role, 'service = "coordinator" }', 'service = "coordinator", edition = 2 }')
        self.assert_reloaded(topo.coordinator, role)
        self.assertEqual(coord.get_json("/health"),
                         {"status": "ok", "service": "coordinator", "edition": 2})
        broken = read(role).replace("local M = {}", "local M = {}}", 1)
        write(role, broken)
        self.assert_refused(topo.coordinator, role, line_of(broken, "local M = {}}"),
                            "unexpected symbol near '}'")
        self.assertEqual(coord.get_json("/health")["edition"], 2)
        self.assertEqual(coord.get_json("/global/counter/fs")["global_count"], 6)
        write(role, role_good)
        self.assert_reloaded(topo.coordinator, role)
        self.assertEqual(coord.get_json("/health"), {"status": "ok", "service": "coordinator"})

        # Strong: its faults.lua, edited to drop every strong message: no quorum.
        strong = topo.strong
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with strong.client() as c:
                if c.get_json("/health").get("ready"):
                    break
            time.sleep(0.05)
        with strong.client(timeout=15) as c:
            self.assertEqual(c.post_json("/increment", {"counter_name": "sr"})["value"], 1)
        sfaults = os.path.join(strong_lua, "policies", "faults.lua")
        sfaults_good = read(sfaults)
        self.edit(sfaults, decide, decide + '  if kind == "strong" then return "drop" end\n')
        self.assert_reloaded(strong, sfaults)
        with strong.client(timeout=15) as c:
            self.assertError(c.post("/increment", {"counter_name": "sr"}), 503, "no_quorum")
            self.assertEqual(c.get_json("/counter/sr")["value"], 1)
        write(sfaults, sfaults_good)
        self.assert_reloaded(strong, sfaults)
        with strong.client(timeout=15) as c:
            self.assertEqual(c.post_json("/increment", {"counter_name": "sr"})["value"], 2)
        for srv in topo.regions + [topo.coordinator, strong]:
            self.assertGreaterEqual(metric(srv, "counterd_lua_reloads_total", result="ok"), 1,
                                    srv.name)

    # ------------------------------------------------------------------------------ (e)

    def test_e_the_round_robin_position_survives_a_reload(self):
        topo, routing = self.gateway_topology()
        seq = [self.routed(topo, "round-robin") for _ in range(4)]
        # An edit that changes nothing the policy does: the module table is new, its
        # locals and fields start afresh, only counterd.shared carries over.
        self.edit(routing, "local M = {}\n", "local M = {} -- reloaded\n")
        self.assert_reloaded(topo.gateway, routing)
        seq += [self.routed(topo, "round-robin") for _ in range(5)]
        start = REGIONS.index(seq[0])
        want = [REGIONS[(start + k) % 3] for k in range(len(seq))]
        self.assertEqual(seq, want, "round-robin must go on where it was before the reload")

    # ------------------------------------------------------------------------------ (f)

    def test_f_a_policy_that_loops_after_a_reload_is_stopped_by_the_budget(self):
        topo, routing = self.gateway_topology(gateway_args=["--policy-budget-ms", "50"])
        good = read(routing)
        self.assertEqual(self.routed(topo, "us-east"), "us-east")
        self.edit(routing, ROUTE_HEAD, ROUTE_HEAD + "  local spins = 0\n"
                  "  while true do spins = spins + 1 end\n")
        loop_line = line_of(read(routing), "while true do spins")
        self.assert_reloaded(topo.gateway, routing)
        # One region down: the fallback must pick among the healthy ones.
        east = topo.region("us-east")
        east.stop()
        with topo.gateway.client(timeout=10) as c:
            # The first one may try us-east (not known to be down yet) and fail over.
            c.post_json("/api/increment", {"counter_name": "loop", "routing": "us-east"})
            for _ in range(8):
                t0 = time.monotonic()
                body = c.post_json("/api/increment", {"counter_name": "loop",
                                                      "routing": "us-east"})
                took = time.monotonic() - t0
                self.assertIn(body["region"], ("us-west", "eu-west"))
                # 50 ms of budget, plus the sanitizers' slowness: far below a hang.
                self.assertLess(took, 1.0)
                t0 = time.monotonic()
                self.assertEqual(c.get_json("/health")["status"], "ok")
                self.assertLess(time.monotonic() - t0, 0.5)
        errors = metric(topo.gateway, "counterd_policy_errors_total", policy="routing")
        self.assertGreaterEqual(errors, 9)
        # The log says where the policy was when it was stopped.
        self.assertIn("routing.route failed, choosing a healthy region instead: %s:%d: policy "
                      "ran longer than its budget of 50 ms" % (routing, loop_line),
                      topo.gateway.log_text())
        # An init() that loops is stopped the same way: the reload is refused, not hung.
        looping_init = good.replace("\nreturn M\n", "\nfunction M.init()\n  while true do end"
                                    "\nend\n\nreturn M\n")
        write(routing, looping_init)
        t0 = time.monotonic()
        self.assert_refused(topo.gateway, routing, line_of(looping_init, "while true do end"),
                            "policy ran longer than its budget of 50 ms")
        self.assertLess(time.monotonic() - t0, 2.0)
        # Fixed: no more errors.
        write(routing, good)
        self.assert_reloaded(topo.gateway, routing)
        errors = metric(topo.gateway, "counterd_policy_errors_total", policy="routing")
        self.assertEqual(self.routed(topo, "eu-west"), "eu-west")
        self.assertEqual(metric(topo.gateway, "counterd_policy_errors_total", policy="routing"),
                         errors)

    # ------------------------------------------------------------------------------ (g)

    def test_g_a_reloaded_policy_stays_sandboxed(self):
        topo, routing = self.gateway_topology()
        good = read(routing)
        marker = os.path.join(tempfile.mkdtemp(prefix="counterd-marker-"), "escaped")
        self.addCleanup(shutil.rmtree, os.path.dirname(marker), True)

        # At load time: io does not exist, the reload is refused.
        opening = good.replace("\nlocal M = {}\n", "\nlocal M = {}\nlocal f = io.open(%r, \"w\")"
                               "\n" % marker)
        write(routing, opening)
        self.assert_refused(topo.gateway, routing, line_of(opening, "io.open"),
                            "attempt to index global 'io' (a nil value)")

        # At call time: os.execute does not exist; the call fails, the request falls back.
        executing = good.replace(ROUTE_HEAD, ROUTE_HEAD + "  os.execute(\"touch %s\")\n"
                                 % marker)
        write(routing, executing)
        self.assert_reloaded(topo.gateway, routing)
        self.assertIn(self.routed(topo, "us-east"), REGIONS)
        self.assertEqual(metric(topo.gateway, "counterd_policy_errors_total", policy="routing"),
                         1)
        self.assertIn("attempt to call field 'execute' (a nil value)", topo.gateway.log_text())
        self.assertFalse(os.path.exists(marker), "os.execute ran")

        # A probe: "probe:<name>" routes to us-east when <name> is out of reach, to us-west
        # when the policy can see it.
        probe = good.replace(ROUTE_HEAD, ROUTE_HEAD + """\
  local what = policy:match("^probe:(.+)$")
  if what then
    local ok, v = pcall(function()
      local t = _G
      for part in what:gmatch("[^.]+") do t = t[part] end
      return t
    end)
    return (ok and v ~= nil) and 2 or 1
  end
""")
        write(routing, probe)
        self.assert_reloaded(topo.gateway, routing)
        for name in ("string.format", "math.floor", "os.time", "counterd.shared.get"):
            self.assertEqual(self.routed(topo, "probe:" + name), "us-west",
                             "%s should be available to a policy" % name)
        for name in ("io", "io.open", "os.execute", "os.exit", "os.remove", "os.rename",
                     "os.getenv", "os.tmpname", "loadfile", "dofile", "load", "loadstring",
                     "require", "module", "package", "debug", "jit", "ffi", "getfenv",
                     "setfenv", "collectgarbage", "newproxy", "coroutine"):
            self.assertEqual(self.routed(topo, "probe:" + name), "us-east",
                             "%s must be out of a policy's reach" % name)
        # Nothing reached outside the sandbox through the shared string metatable either.
        self.assertFalse(os.path.exists(marker))

    # ------------------------------------------------------------------------------ token

    def test_the_admin_token_guards_reload_on_every_role(self):
        token = "s3cret-reload"
        flags = ["--admin-token", token]
        topo = harness.Topology(region_args=flags, coordinator_args=flags,
                                gateway_args=flags, strong=True, strong_args=flags)
        topo.start(self.addCleanup)
        for srv in topo.servers:
            for headers in (None, {"Authorization": "Bearer wrong"},
                            {"Authorization": token}):
                r = reload(srv, headers)
                self.assertError(r, 401, "unauthorized", "%s %r" % (srv.name, headers))
            self.assertEqual(metric(srv, "counterd_lua_reloads_total"), 0, srv.name)
            r = reload(srv, {"Authorization": "Bearer " + token})
            harness.assert_json_response(r, 200, "%s: reload with the token" % srv.name)
            self.assertEqual(r.json()["status"], "reloaded")


if __name__ == "__main__":
    unittest.main(verbosity=2)
