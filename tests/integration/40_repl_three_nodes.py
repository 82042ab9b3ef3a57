"""
40_repl_three_nodes.py - replication between three region nodes on loopback.

Each node lists the other two as peers. With --sync-interval-ms 60000 only force-sync
moves data, so every step is deterministic: increments, force-sync, exact convergence
(every increment counted exactly once, per-node maps equal everywhere), a symmetric
partition and its healing, periodic sync on its own, and a peer that stops and restarts.
"""

import time
import unittest

import harness

NODES = [("us-east", "us-east-1"), ("us-west", "us-west-1"), ("eu-west", "eu-west-1")]
SLOW_SYNC_MS = 60000  # "never" within a test: only force-sync moves data


class Node:
    def __init__(self, srv, region, node_id):
        self.srv = srv
        self.region = region
        self.node_id = node_id
        self._client = None
        self._client_run = None

    @property
    def c(self):
        if self._client is None or self._client_run != self.srv.runs:
            if self._client is not None:
                self._client.close()
            self._client = self.srv.client()
            self._client_run = self.srv.runs
        return self._client

    def close(self):
        if self._client is not None:
            self._client.close()
            self._client = None

    def __repr__(self):
        return "%s(:%d)" % (self.node_id, self.srv.port)


class ThreeNodes(harness.ServerTestCase):
    def start_trio(self, interval_ms=SLOW_SYNC_MS):
        ports = harness.free_ports(3)
        specs = []
        for i, (region, node_id) in enumerate(NODES):
            peers = ",".join("http://127.0.0.1:%d" % ports[j] for j in range(3) if j != i)
            specs.append(dict(args=["--region", region, "--node-id", node_id,
                                    "--peers", peers, "--sync-interval-ms", str(interval_ms),
                                    "--sync-timeout-ms", "2000"],
                              port=ports[i], name=node_id))
        servers = self.start_servers(specs)
        nodes = [Node(s, r, n) for s, (r, n) in zip(servers, NODES)]
        for n in nodes:
            self.addCleanup(n.close)
        return nodes

    # Helpers ---------------------------------------------------------------------------

    def incr(self, node, name, amount):
        before = self.read(node, name)["local_count"]
        r = node.c.post_json("/increment", {"counter_name": name, "amount": amount})
        self.assertEqual(r["local_count"], before + amount,
                         "%r: local_count after +%d on %s" % (node, amount, name))
        return r

    def read(self, node, name):
        return node.c.get_json("/counter/%s" % name)

    def force_sync(self, node, status=200):
        t0 = time.monotonic()
        r = node.c.post("/admin/force-sync")
        elapsed = time.monotonic() - t0
        if status == 200:
            harness.assert_json_response(r, 200, "%r POST /admin/force-sync" % node)
            body = r.json()
            self.assertEqual(set(body), {"status", "region", "node_id", "counters", "total_counters",
                                         "truncated", "peers"},
                             "%r force-sync answer keys: %r" % (node, body))
            self.assertEqual(body["status"], "sync_completed")
            self.assertEqual((body["region"], body["node_id"]), (node.region, node.node_id))
            self.assertIsInstance(body["counters"], dict)
        elif status == 502:  # a peer exchange failed: the answer says which
            harness.assert_json_response(r, 502, "%r POST /admin/force-sync" % node)
            body = r.json()
            self.assertEqual((body["status"], body["error"]), ("sync_failed", "sync_failed"))
            self.assertIn("failed", [p["status"] for p in body["peers"].values()])
        else:
            body = self.assertError(r, status, "partitioned", "%r force-sync" % node)
        return body, elapsed

    def sync_all(self, nodes):
        for n in nodes:
            self.force_sync(n)

    def assertState(self, node, name, expected_nodes):
        """node's view of name is exactly the per-node map expected_nodes."""
        got = self.read(node, name)
        want = {"counter": name, "local_count": expected_nodes.get(node.node_id, 0),
                "total_count": sum(expected_nodes.values()), "nodes": expected_nodes,
                "region": node.region, "node_id": node.node_id}
        self.assertJsonEqual(got, want, "%r GET /counter/%s" % (node, name))

    def assertConverged(self, nodes, name, expected_nodes):
        for n in nodes:
            self.assertState(n, name, expected_nodes)

    def partition(self, node, enabled):
        r = node.c.post_json("/admin/partition", {"enabled": enabled})
        self.assertIs(r["network_partition"], enabled, "%r partition answer %r" % (node, r))
        self.assertEqual((r["region"], r["node_id"]), (node.region, node.node_id))
        if enabled:
            self.assertEqual(r["message"], "Network partition enabled")
        return r

    # Tests -------------------------------------------------------------------------------

    def test_force_sync_converges_exactly(self):
        a, b, c = nodes = self.start_trio()
        self.incr(a, "c1", 3)
        self.incr(a, "c1", 4)
        self.incr(b, "c1", 10)
        self.incr(b, "c1", -2)
        self.incr(c, "c1", 100)
        self.incr(c, "c2", 5)
        self.incr(a, "c2", 1)
        # Before any sync, each node knows only itself.
        self.assertState(b, "c1", {b.node_id: 8})

        body, _ = self.force_sync(a)
        # One complete push-pull round with both peers: a now has everything.
        c1 = {a.node_id: 7, b.node_id: 8, c.node_id: 100}
        c2 = {a.node_id: 1, c.node_id: 5}
        self.assertJsonEqual(body["counters"].get("c1"),
                             {"local_count": 7, "total_count": 115, "nodes": c1},
                             "force-sync answer of %r, counters.c1" % a)
        self.assertJsonEqual(body["counters"].get("c2"),
                             {"local_count": 1, "total_count": 6, "nodes": c2},
                             "force-sync answer of %r, counters.c2" % a)
        self.assertState(a, "c1", c1)

        self.sync_all(nodes)
        self.assertConverged(nodes, "c1", c1)
        self.assertConverged(nodes, "c2", c2)
        views = [n.c.get_json("/counters")["counters"] for n in nodes]
        for n, v in zip(nodes, views):
            self.assertEqual({k: (e["total_count"], e["nodes"]) for k, e in v.items()},
                             {k: (e["total_count"], e["nodes"]) for k, e in views[0].items()},
                             "GET /counters of %r differs from %r" % (n, a))

        # A second round with nothing new changes nothing (no double counting).
        self.sync_all(nodes)
        self.sync_all(nodes)
        self.assertConverged(nodes, "c1", c1)
        self.assertConverged(nodes, "c2", c2)

    def test_partition_symmetric_then_heals(self):
        a, b, c = nodes = self.start_trio()
        for n in nodes:
            self.incr(n, "p", 1)
        self.sync_all(nodes)
        base = {a.node_id: 1, b.node_id: 1, c.node_id: 1}
        self.assertConverged(nodes, "p", base)

        r = self.partition(c, True)
        self.assertJsonEqual(r, {"network_partition": True, "region": c.region,
                                 "node_id": c.node_id, "message": "Network partition enabled"})
        self.assertIs(c.c.get_json("/admin/partition")["network_partition"], True)

        self.incr(a, "p", 10)
        self.incr(b, "p", 20)
        self.incr(c, "p", 40)
        self.incr(a, "p_only_a", 3)
        self.incr(c, "p_only_c", 7)

        self.force_sync(a)
        self.force_sync(b)
        self.force_sync(c, status=503)

        # The partitioned node got nothing new, and gave nothing new.
        self.assertState(c, "p", {a.node_id: 1, b.node_id: 1, c.node_id: 41})
        self.assertState(c, "p_only_a", {})
        for n in (a, b):
            self.assertState(n, "p", {a.node_id: 11, b.node_id: 21, c.node_id: 1})
            self.assertState(n, "p_only_c", {})
            self.assertState(n, "p_only_a", {a.node_id: 3})

        # /sync sent straight to the partitioned node is refused and merges nothing.
        r = c.c.post("/sync", {"counts": {"p": {a.node_id: 500}, "p_only_a": {a.node_id: 3}},
                               "node_id": a.node_id, "timestamp": time.time()})
        self.assertError(r, 503, "partitioned", "POST /sync to the partitioned node")
        self.assertState(c, "p", {a.node_id: 1, b.node_id: 1, c.node_id: 41})
        self.assertState(c, "p_only_a", {})

        self.partition(c, False)
        self.assertIs(c.c.get_json("/admin/partition")["network_partition"], False)
        self.sync_all(nodes)
        self.assertConverged(nodes, "p", {a.node_id: 11, b.node_id: 21, c.node_id: 41})
        self.assertConverged(nodes, "p_only_a", {a.node_id: 3})
        self.assertConverged(nodes, "p_only_c", {c.node_id: 7})

    def test_periodic_sync_converges_on_its_own(self):
        a, b, c = nodes = self.start_trio(interval_ms=300)
        self.incr(a, "auto", 1)
        self.incr(b, "auto", 2)
        self.incr(c, "auto", 4)
        self.incr(c, "auto", -1)
        self.incr(b, "auto_b", 9)
        want = {a.node_id: 1, b.node_id: 2, c.node_id: 3}
        deadline = time.monotonic() + 5.0
        while True:
            views = [self.read(n, "auto")["nodes"] for n in nodes]
            views_b = [self.read(n, "auto_b")["nodes"] for n in nodes]
            if all(v == want for v in views) and all(v == {b.node_id: 9} for v in views_b):
                break
            if time.monotonic() > deadline:
                self.fail("no convergence within 5 s with --sync-interval-ms 300: "
                          "auto %r, auto_b %r" % (views, views_b))
            time.sleep(0.1)
        self.assertConverged(nodes, "auto", want)
        self.assertConverged(nodes, "auto_b", {b.node_id: 9})
        for n in nodes:
            lst = n.c.get_json("/counters")["last_sync_time"]
            self.assertGreater(lst, time.time() - 60,
                               "%r last_sync_time %r is not a recent unix time" % (n, lst))

    def test_peer_down_then_restarted(self):
        a, b, c = nodes = self.start_trio()
        self.incr(a, "r", 1)
        self.incr(b, "r", 2)
        self.incr(c, "r", 4)
        self.sync_all(nodes)
        self.assertConverged(nodes, "r", {a.node_id: 1, b.node_id: 2, c.node_id: 4})

        c.close()
        c.srv.stop()  # SIGTERM; asserts a clean exit
        self.incr(a, "r", 8)

        body, elapsed = self.force_sync(a, status=502)
        self.assertLess(elapsed, 5.0, "force-sync with a peer down took %.2f s" % elapsed)
        self.assertJsonEqual(body["counters"].get("r"),
                             {"local_count": 9, "total_count": 15,
                              "nodes": {a.node_id: 9, b.node_id: 2, c.node_id: 4}})
        # The reachable peer got the push.
        self.assertState(b, "r", {a.node_id: 9, b.node_id: 2, c.node_id: 4})

        samples = harness.parse_metrics(a.c.get("/metrics").text())
        errors = harness.metric_values(samples, "counter_sync_operations_total", status="error")
        self.assertTrue(errors and sum(errors) > 0,
                        "counter_sync_operations_total{status=\"error\"} on %r after a sync "
                        "with a stopped peer: %r" % (a, errors))

        c.srv.start()  # same port, same flags, empty state
        print("\n[40_repl] restarted %r reads r as %r" % (c, self.read(c, "r")))
        self.force_sync(c)
        # Its own old increments came back from its peers.
        self.assertState(c, "r", {a.node_id: 9, b.node_id: 2, c.node_id: 4})
        self.incr(c, "r", 16)
        self.sync_all(nodes)
        self.assertConverged(nodes, "r", {a.node_id: 9, b.node_id: 2, c.node_id: 20})

    def restart_quietly(self, node):
        """Stops and restarts node at once: no sync round of its peers sees it down."""
        node.close()
        node.srv.stop()
        node.srv.start()

    def test_restart_unnoticed_by_peers(self):
        # The peers never saw c down, so any per-peer delta bookkeeping they keep is stale:
        # one push-pull from a must still give c the full state back.
        a, b, c = nodes = self.start_trio()
        self.incr(a, "q", 1)
        self.incr(b, "q", 2)
        self.incr(c, "q", 4)
        self.sync_all(nodes)
        self.restart_quietly(c)
        self.force_sync(a)
        self.assertState(c, "q", {a.node_id: 1, b.node_id: 2, c.node_id: 4})

    def test_restarted_node_writing_before_recovery_loses_nothing(self):
        # Every acknowledged increment is counted once. A node that restarts empty and
        # takes an increment before it has pulled its own old entry back must not let
        # that increment hide the old ones (per-node max would keep only the larger).
        a, b, c = nodes = self.start_trio()
        self.incr(a, "w", 1)
        self.incr(b, "w", 2)
        self.incr(c, "w", 4)
        self.sync_all(nodes)
        self.restart_quietly(c)
        r = c.c.post("/increment", {"counter_name": "w", "amount": 100})
        if r.status == 200:
            self.sync_all(nodes)
            self.assertConverged(nodes, "w", {a.node_id: 1, b.node_id: 2, c.node_id: 104})
        else:
            # Refusing writes until recovered is also correct, if it says so.
            self.assertError(r, 503, "unavailable", "increment on a node not yet recovered")
            self.sync_all(nodes)
            self.assertConverged(nodes, "w", {a.node_id: 1, b.node_id: 2, c.node_id: 4})


if __name__ == "__main__":
    unittest.main()
