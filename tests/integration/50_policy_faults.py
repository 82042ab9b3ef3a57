"""
50_policy_faults.py - the Lua faults policy, through the real binary.

Each test gives its nodes their own copy of lua/ with a faults.lua written for the test:
a policy that raises, one that never returns, one that does not compile, one that cuts a
link (the third node must relay), and one that adds latency. In every case the node keeps
serving and replication does what the policy (or, on failure, no policy) says.
"""

import os
import shutil
import tempfile
import time
import unittest

import harness

NODES = ["us-east-1", "us-west-1", "eu-west-1"]


class FaultsPolicy(harness.ServerTestCase):
    def lua_dir(self, faults_source):
        d = tempfile.mkdtemp(prefix="counterd-lua-")
        self.addCleanup(shutil.rmtree, d, True)
        os.makedirs(os.path.join(d, "policies"))
        with open(os.path.join(d, "policies", "faults.lua"), "w") as f:
            f.write(faults_source)
        return d

    def start_trio(self, faults_source, extra=()):
        lua = self.lua_dir(faults_source)
        ports = harness.free_ports(3)
        specs = []
        for i, node in enumerate(NODES):
            peers = ",".join("http://127.0.0.1:%d" % ports[j] for j in range(3) if j != i)
            specs.append(dict(args=["--region", node[:-2], "--node-id", node, "--peers", peers,
                                    "--sync-interval-ms", "60000", "--sync-timeout-ms", "2000",
                                    "--lua-dir", lua] + list(extra),
                              port=ports[i], name=node))
        servers = self.start_servers(specs)
        clients = [s.client() for s in servers]
        for c in clients:
            self.addCleanup(c.close)
        return servers, clients

    def incr_each(self, clients, name):
        for i, c in enumerate(clients):
            c.post_json("/increment", {"counter_name": name, "amount": i + 1})

    def nodes_of(self, client, name):
        return client.get_json("/counter/%s" % name)["nodes"]

    def force_sync(self, client):
        t0 = time.monotonic()
        body = client.post_json("/admin/force-sync")
        self.assertEqual(body["status"], "sync_completed")
        return time.monotonic() - t0

    def assert_converged(self, clients, name):
        want = {n: i + 1 for i, n in enumerate(NODES)}
        for c in clients:
            self.assertEqual(self.nodes_of(c, name), want)

    def policy_errors(self, client):
        samples = harness.parse_metrics(client.get("/metrics").text())
        return sum(harness.metric_values(samples, "counterd_policy_errors_total", policy="faults"))

    def test_a_policy_that_raises_is_logged_and_messages_are_delivered(self):
        servers, clients = self.start_trio(
            "local M = {}\n"
            "function M.decide(dir, from, to, kind, partitioned)\n"
            "  error('boom from the test policy')\n"
            "end\n"
            "return M\n")
        self.incr_each(clients, "raising")
        for c in clients:
            self.force_sync(c)
        self.assert_converged(clients, "raising")
        log = servers[0].log_text()
        self.assertIn("faults.lua:3: boom from the test policy", log)
        self.assertGreater(self.policy_errors(clients[0]), 0)
        for c in clients:
            self.assertEqual(c.get_json("/health")["status"], "ok")

    def test_a_policy_that_never_returns_is_stopped_by_its_budget(self):
        servers, clients = self.start_trio(
            "local M = {}\n"
            "function M.decide() local n = 0 while true do n = n + 1 end end\n"
            "return M\n", extra=["--policy-budget-ms", "20"])
        self.incr_each(clients, "looping")
        t = max(self.force_sync(c) for c in clients)
        self.assertLess(t, 5.0, "force-sync must not hang on a runaway policy")
        self.assert_converged(clients, "looping")
        self.assertIn("longer than its budget of 20 ms", servers[1].log_text())

    def test_a_policy_that_does_not_compile_leaves_the_node_serving(self):
        servers, clients = self.start_trio("local M = {\nfunction oops(\nreturn M\n")
        self.incr_each(clients, "broken")
        for c in clients:
            self.force_sync(c)
        self.assert_converged(clients, "broken")
        self.assertRegex(servers[2].log_text(), r"faults\.lua:\d+:")

    def test_a_cut_link_is_dropped_both_ways_and_the_third_node_relays(self):
        servers, clients = self.start_trio(
            "local M = {}\n"
            "function M.decide(dir, from, to, kind, partitioned)\n"
            "  if partitioned then return 'drop' end\n"
            "  if (from == 'us-east-1' and to == 'eu-west-1') or\n"
            "     (from == 'eu-west-1' and to == 'us-east-1') then return 'drop' end\n"
            "  return 'deliver'\n"
            "end\n"
            "return M\n")
        east, west, eu = clients
        # First contact teaches each node its peers' ids; until then a peer is its URL.
        for c in clients:
            self.force_sync(c)
        east.post_json("/increment", {"counter_name": "cut", "amount": 5})
        eu.post_json("/increment", {"counter_name": "cut", "amount": 7})
        self.force_sync(east)  # east <-> west delivered, east <-> eu dropped
        self.assertEqual(self.nodes_of(east, "cut"), {"us-east-1": 5})
        self.assertEqual(self.nodes_of(eu, "cut"), {"eu-west-1": 7},
                         "eu-west must not have heard from us-east over the cut link")
        self.force_sync(eu)  # eu <-> west: eu learns east's 5 through west
        both = {"us-east-1": 5, "eu-west-1": 7}
        self.assertEqual(self.nodes_of(eu, "cut"), both)
        self.assertEqual(self.nodes_of(west, "cut"), both)
        self.assertEqual(self.nodes_of(east, "cut"), {"us-east-1": 5},
                         "us-east must not have heard from eu-west over the cut link")
        self.force_sync(east)  # and east learns eu's 7 through west
        self.assertEqual(self.nodes_of(east, "cut"), both)
        samples = harness.parse_metrics(east.get("/metrics").text())
        self.assertGreater(sum(harness.metric_values(samples, "counter_sync_operations_total",
                                                     status="partition")), 0)

    def test_latency_delays_each_message(self):
        servers, clients = self.start_trio(
            "local M = {}\n"
            "function M.decide(dir, from, to, kind, partitioned)\n"
            "  if partitioned then return 'drop' end\n"
            "  if dir == 'out' then return 'delay', 250 end\n"
            "  return 'deliver'\n"
            "end\n"
            "return M\n")
        self.incr_each(clients, "slow")
        t = self.force_sync(clients[0])
        self.assertGreaterEqual(t, 0.25, "force-sync answered before the delayed messages")
        self.assertLess(t, 3.0)
        for c in clients[1:]:
            self.force_sync(c)
        self.assert_converged(clients, "slow")

    def test_the_shipped_policy_honours_the_partition_switch(self):
        with open(os.path.join(harness.REPO_ROOT, "lua", "policies", "faults.lua")) as f:
            servers, clients = self.start_trio(f.read())
        east, west, eu = clients
        east.post_json("/admin/partition", {"enabled": True})
        self.incr_each(clients, "switch")
        self.assertEqual(east.post("/admin/force-sync").status, 503)
        self.force_sync(west)
        self.force_sync(eu)
        self.assertEqual(self.nodes_of(east, "switch"), {"us-east-1": 1})
        self.assertEqual(self.nodes_of(west, "switch"), {"us-west-1": 2, "eu-west-1": 3})
        east.post_json("/admin/partition", {"enabled": False})
        self.force_sync(east)
        self.force_sync(west)
        self.assert_converged(clients, "switch")


if __name__ == "__main__":
    unittest.main()
