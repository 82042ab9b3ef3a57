"""
48_lifecycle_ops.py - the counter operations of a namespace on region nodes (API.md,
"Counter operations"): add, add-and-get, get, clear, delete and the listing, with
idempotency tokens (a retried clear is a duplicate and clears nothing more), bad input,
unknown and strong namespaces, a full disk that refuses a clear, and on three nodes (only
force-sync moves data):
  - the observed reset: us-east clears while us-west, partitioned, keeps counting; after
    the heal every node shows exactly the increments us-east had not observed;
  - two concurrent clears of the same state subtract it once;
  - expiry: a counter of a namespace with a 2 s ttl disappears from every node, one touched
    in time does not.
"""

import errno
import os
import shutil
import subprocess
import tempfile
import time
import unittest

import harness

NODES = [("us-east", "us-east-1"), ("us-west", "us-west-1"), ("eu-west", "eu-west-1")]


def fill(path):
    """Appends zeros to path until the file system is full."""
    chunk = b"\0" * 65536
    with open(path, "ab", buffering=0) as f:
        while True:
            try:
                f.write(chunk)
            except OSError as e:
                if e.errno != errno.ENOSPC:
                    raise
                if len(chunk) == 1:
                    return
                chunk = chunk[:len(chunk) // 16 or 1]


class LifecycleOps(harness.ServerTestCase):
    def node(self, args=()):
        srv = self.start_server(["--region", "us-east", "--node-id", "us-east-1"] + list(args),
                                name="ops-1")
        c = srv.client()
        self.addCleanup(c.close)
        return c

    def trio(self):
        ports = harness.free_ports(3)
        specs = []
        for i, (region, node_id) in enumerate(NODES):
            peers = ",".join("http://127.0.0.1:%d" % ports[j] for j in range(3) if j != i)
            specs.append(dict(args=["--region", region, "--node-id", node_id, "--peers", peers,
                                    "--sync-interval-ms", "60000", "--sync-timeout-ms", "2000"],
                              port=ports[i], name=node_id))
        clients = [s.client() for s in self.start_servers(specs)]
        for c in clients:
            self.addCleanup(c.close)
        return clients

    def sync(self, *cs):
        for c in cs:
            r = c.post("/admin/force-sync")
            self.assertEqual(r.status, 200, r.body[:300])

    def add(self, c, ns, name, delta, token=None):
        body = {"delta": delta}
        if token:
            body["idempotency_token"] = token
        return c.post_json("/v1/counters/%s/%s/add" % (ns, name), body)

    def count(self, c, ns, name):
        return c.get_json("/v1/counters/%s/%s" % (ns, name))["count"]

    def clear(self, c, ns, name, token=None, status=200):
        r = c.post("/v1/counters/%s/%s/clear" % (ns, name),
                   {"idempotency_token": token} if token else {})
        if status != 200:
            return r
        harness.assert_json_response(r, 200, "clear %s/%s" % (ns, name))
        return r.json()

    def test_operations_and_listing(self):
        c = self.node()
        c.request("PUT", "/v1/namespaces/app", {"type": "eventual"})
        a = self.add(c, "app", "views", 5)
        self.assertEqual(set(a), {"namespace", "counter", "delta", "region", "node_id"})
        self.assertEqual((a["namespace"], a["counter"], a["delta"]), ("app", "views", 5))
        g = c.post_json("/v1/counters/app/views/add-and-get", {"delta": -2})
        self.assertEqual((g["delta"], g["count"]), (-2, 3))
        got = c.get_json("/v1/counters/app/views")
        self.assertEqual(set(got), {"namespace", "counter", "count", "nodes", "region", "node_id"})
        self.assertEqual((got["count"], got["nodes"]), (3, {"us-east-1": 3}))
        # the default namespace is the lab's counters
        c.post_json("/increment", {"counter_name": "plain", "amount": 4})
        self.assertEqual(self.count(c, "default", "plain"), 4)
        self.add(c, "default", "plain", 1)
        self.assertEqual(c.get_json("/counter/plain")["total_count"], 5)
        for k in range(3):
            self.add(c, "app", "k%d" % k, k + 1)
        lst = c.get_json("/v1/counters/app?limit=2")
        self.assertEqual(list(lst["counters"]), ["k0", "k1"])
        self.assertEqual(lst["counters"]["k0"], {"count": 1, "nodes": {"us-east-1": 1}})
        self.assertEqual((lst["namespace"], lst["total_counters"], lst["truncated"]),
                         ("app", 4, True))
        rest = c.get_json("/v1/counters/app?limit=2&cursor=" + lst["next_cursor"])
        self.assertEqual(list(rest["counters"]), ["k2", "views"])
        self.assertIs(rest["truncated"], False)
        legacy = c.get_json("/counters?namespace=app")
        self.assertEqual(sorted(legacy["counters"]), ["k0", "k1", "k2", "views"])
        self.assertEqual(sorted(c.get_json("/counters?namespace=default")["counters"]), ["plain"])
        every = c.get_json("/counters")["counters"]
        self.assertIn("app/views", every)
        self.assertIn("plain", every)
        # clear: what it observed, then a retry with its token is a duplicate
        cl = self.clear(c, "app", "views", token="clr-1")
        self.assertEqual((cl["count"], cl["cleared"]), (0, 3))
        self.assertNotIn("duplicate", cl)
        self.add(c, "app", "views", 7)
        again = self.clear(c, "app", "views", token="clr-1")
        self.assertEqual((again["cleared"], again["duplicate"]), (3, True))
        self.assertEqual(self.count(c, "app", "views"), 7, "a retried clear clears nothing more")
        self.assertError(c.post("/v1/counters/app/views/add",
                                {"delta": 1, "idempotency_token": "clr-1"}),
                         409, "idempotency_conflict", "an add with a clear's token")
        # tokens of adds: a retry is a duplicate
        t1 = self.add(c, "app", "views", 2, token="add-1")
        t2 = self.add(c, "app", "views", 2, token="add-1")
        self.assertIs(t2.get("duplicate"), True)
        self.assertNotIn("duplicate", t1)
        self.assertEqual(self.count(c, "app", "views"), 9)
        # delete: gone from reads and listings
        d = c.request("DELETE", "/v1/counters/app/views").json()
        self.assertEqual((d["deleted"], d["counter"], d["namespace"]), (True, "views", "app"))
        self.assertError(c.get("/v1/counters/app/views"), 404, "not_found")
        self.assertError(c.request("DELETE", "/v1/counters/app/views"), 404, "not_found")
        self.assertError(c.post("/v1/counters/app/views/clear", {}), 404, "not_found")
        self.assertNotIn("views", c.get_json("/v1/counters/app")["counters"])
        self.assertEqual(c.get_json("/v1/counters/app")["total_counters"], 3)
        self.assertNotIn("app/views", c.get_json("/counters")["counters"])
        c.request("DELETE", "/v1/counters/default/plain")
        self.assertEqual(c.get_json("/counter/plain")["total_count"], 0)
        self.assertNotIn("plain", c.get_json("/counters")["counters"])
        top = c.get_json("/top?by=total")["counters"]
        self.assertNotIn("plain", [t["counter"] for t in top])
        # counted again after a delete: it starts from what is new
        self.add(c, "app", "views", 1)
        self.assertEqual(self.count(c, "app", "views"), 1)
        m = harness.parse_metrics(c.get("/metrics").text())
        self.assertEqual(harness.metric_values(m, "counterd_counter_clears_total"), [1])
        self.assertEqual(harness.metric_values(m, "counterd_counter_deletes_total",
                                               cause="delete"), [2])

    def test_bad_input(self):
        c = self.node()
        c.request("PUT", "/v1/namespaces/app", {})
        c.request("PUT", "/v1/namespaces/sc", {"type": "strong"})
        for body in ({}, {"delta": 0}, {"delta": "1"}, {"delta": 1.5},
                     {"delta": 9223372036854775808}):
            self.assertError(c.post("/v1/counters/app/x/add", body), 400, "bad_field",
                             "add %r" % body, detail_contains="delta")
        self.assertError(c.post("/v1/counters/app/x/add", {"delta": 1, "idempotency_token": 5}),
                         400, "bad_field", detail_contains="idempotency_token")
        self.assertError(c.post("/v1/counters/app/x/clear", {"idempotency_token": ""}),
                         400, "bad_field", detail_contains="idempotency_token")
        self.assertError(c.post("/v1/counters/app/bad%20name/add", {"delta": 1}), 400, "bad_name")
        self.assertError(c.post("/v1/counters/nope/x/add", {"delta": 1}), 404, "not_found",
                         detail_contains="nope")
        self.assertError(c.get("/v1/counters/nope"), 404, "not_found")
        self.assertError(c.post("/v1/counters/sc/x/add", {"delta": 1}), 409, "wrong_service",
                         detail_contains="strong")
        self.assertError(c.post("/v1/counters/app/x/bogus", {}), 404, "not_found")
        self.assertError(c.get("/v1/counters/app/x/add"), 405, "method_not_allowed")
        self.assertError(c.get("/counters?namespace=a%20b"), 400, "bad_field",
                         detail_contains="namespace")
        self.assertError(c.get("/v1/counters/app/x"), 404, "not_found")  # nothing was made
        self.assertEqual(c.get_json("/v1/counters/app")["counters"], {})

    def test_clear_and_delete_survive_a_crash(self):
        data = tempfile.mkdtemp(prefix="counterd-ops-")
        self.addCleanup(shutil.rmtree, data, True)
        srv = self.start_server(["--region", "us-east", "--node-id", "us-east-1",
                                 "--data-dir", data, "--fsync", "always"], name="ops-crash")
        with srv.client() as c:
            c.request("PUT", "/v1/namespaces/app", {"idempotency_window_seconds": 3600})
            self.add(c, "app", "kept", 5)
            self.add(c, "app", "cleared", 7)
            self.add(c, "app", "gone", 2)
            self.clear(c, "app", "cleared", token="c-1")
            self.add(c, "app", "cleared", 1)
            c.request("DELETE", "/v1/counters/app/gone")
        srv.kill()
        srv.start()
        with srv.client() as c:
            self.assertEqual(self.count(c, "app", "kept"), 5)
            self.assertEqual(self.count(c, "app", "cleared"), 1)
            self.assertError(c.get("/v1/counters/app/gone"), 404, "not_found")
            again = self.clear(c, "app", "cleared", token="c-1")
            self.assertEqual((again["cleared"], again.get("duplicate")), (7, True))
            self.assertEqual(self.count(c, "app", "cleared"), 1)
            self.assertEqual(c.get_json("/v1/namespaces/app")["idempotency_window_seconds"], 3600)

    def test_namespace_through_the_coordinator(self):
        lab = harness.Topology().start(self.addCleanup)
        c = lab.regions[0].client()
        self.addCleanup(c.close)
        c.request("PUT", "/v1/namespaces/app", {})
        self.add(c, "app", "views", 2)
        c.post_json("/increment", {"counter_name": "plain", "amount": 1})
        self.sync(c)
        for srv, path in ((lab.coordinator, "/global/counters"), (lab.gateway, "/api/counters")):
            with srv.client() as x:
                got = x.get_json(path + "?namespace=app")
                self.assertEqual(got["counter_names"], ["views"], path)
                self.assertEqual(got["namespace"], "app")
                every = x.get_json(path)["counter_names"]
                self.assertEqual(sorted(every), ["app/views", "plain"], path)
                self.assertError(x.get(path + "?namespace=a%20b"), 400, "bad_field",
                                 detail_contains="namespace")

    def test_token_window_per_namespace(self):
        c = self.node()
        c.request("PUT", "/v1/namespaces/short", {"idempotency_window_seconds": 1})
        self.add(c, "short", "x", 1, token="t")
        self.add(c, "default", "x", 1, token="t")
        time.sleep(1.6)
        again = self.add(c, "short", "x", 1, token="t")
        self.assertNotIn("duplicate", again, "the 1 s window of 'short' is over")
        self.assertEqual(self.count(c, "short", "x"), 2)
        dup = self.add(c, "default", "x", 1, token="t")
        self.assertIs(dup.get("duplicate"), True, "the 600 s window of 'default' is not")

    @unittest.skipUnless(os.geteuid() == 0, "needs root to mount a small tmpfs")
    def test_full_disk_refuses_a_clear(self):
        top = tempfile.mkdtemp(prefix="counterd-clearfull-")
        self.addCleanup(shutil.rmtree, top, True)
        mnt = os.path.join(top, "mnt")
        os.mkdir(mnt)
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", mnt],
                           capture_output=True, text=True)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.addCleanup(subprocess.run, ["umount", "-l", mnt], check=False)
        c = self.node(["--data-dir", os.path.join(mnt, "data"), "--fsync", "always"])
        c.request("PUT", "/v1/namespaces/app", {})
        self.add(c, "app", "x", 5)
        filler = os.path.join(mnt, "filler")
        fill(filler)
        # The log's segment may have room left: add until the node refuses.
        for i in range(5000):
            r = c.post("/v1/counters/app/fill-" + "n" * 150 + "/add",
                       {"delta": 1, "idempotency_token": "f%d-" % i + "t" * 100})
            if r.status == 503:
                break
            self.assertEqual(r.status, 200, r.body[:300])
        self.assertEqual(r.status, 503, "the disk never filled")
        for path, body in (("/v1/counters/app/x/clear", {"idempotency_token": "c1"}),):
            self.assertError(c.post(path, body), 503, "unavailable", "clear on a full disk",
                             detail_contains="disk is full")
        self.assertError(c.request("DELETE", "/v1/counters/app/x"), 503, "unavailable")
        self.assertEqual(self.count(c, "app", "x"), 5, "nothing was cleared")
        os.unlink(filler)
        deadline = time.monotonic() + 10
        while True:
            r = c.post("/v1/counters/app/x/clear", {"idempotency_token": "c1"})
            if r.status == 200:
                break
            self.assertLess(time.monotonic(), deadline, "the node never took writes again")
            time.sleep(0.2)
        self.assertEqual((r.json()["cleared"], r.json()["count"]), (5, 0))
        self.assertNotIn("duplicate", r.json(), "the refused clear left no token behind")

    def test_clear_behind_a_partition(self):
        """THE ISSUE'S TEST: what us-east had not observed survives its clear, exactly."""
        east, west, eu = self.trio()
        east.request("PUT", "/v1/namespaces/app", {})
        self.sync(east)
        self.add(east, "app", "hits", 5)
        self.add(west, "app", "hits", 3)
        self.add(eu, "app", "hits", 2)
        self.sync(east, west, eu)
        for c in (east, west, eu):
            self.assertEqual(self.count(c, "app", "hits"), 10)
        west.post_json("/admin/partition", {"enabled": True})
        self.add(west, "app", "hits", 4)  # behind the partition
        cl = self.clear(east, "app", "hits")
        self.assertEqual((cl["cleared"], cl["count"]), (10, 0))
        self.add(west, "app", "hits", 3)  # us-west keeps counting
        self.add(eu, "app", "hits", 6)    # concurrent, not yet seen by us-east
        west.post_json("/admin/partition", {"enabled": False})
        self.sync(west, east, eu, west)
        for c in (east, west, eu):
            got = c.get_json("/v1/counters/app/hits")
            self.assertEqual(got["count"], 13, "%s: 4 + 3 (us-west) + 6 (eu-west) survive the "
                             "clear, nothing else: %r" % (got["region"], got))
            self.assertEqual((got["nodes"].get("us-east-1", 0), got["nodes"]["us-west-1"],
                              got["nodes"]["eu-west-1"]), (0, 7, 6), got["region"])

    def test_concurrent_clears_subtract_once(self):
        east, west, eu = self.trio()
        east.request("PUT", "/v1/namespaces/app", {})
        self.sync(east)
        for c, n in ((east, 5), (west, 3), (eu, 2)):
            self.add(c, "app", "hits", n)
        self.sync(east, west, eu)
        west.post_json("/admin/partition", {"enabled": True})
        self.assertEqual(self.clear(east, "app", "hits")["cleared"], 10)
        self.assertEqual(self.clear(west, "app", "hits")["cleared"], 10)
        west.post_json("/admin/partition", {"enabled": False})
        self.add(eu, "app", "hits", 1)
        self.sync(west, east, eu, west)
        for c in (east, west, eu):
            self.assertEqual(self.count(c, "app", "hits"), 1, "both clears observed the same 10")

    def test_expiry(self):
        east, west, eu = self.trio()
        east.request("PUT", "/v1/namespaces/tmp", {"ttl_seconds": 2})
        self.sync(east)
        self.add(east, "tmp", "idle", 1)
        self.add(east, "tmp", "busy", 1)
        self.sync(east)
        for c in (west, eu):
            self.assertEqual(self.count(c, "tmp", "idle"), 1)
        deadline = time.monotonic() + 8
        while time.monotonic() < deadline:
            self.add(west, "tmp", "busy", 1)
            self.sync(west)
            if all(c.get("/v1/counters/tmp/idle").status == 404 for c in (east, west, eu)):
                break
            time.sleep(0.3)
        for c in (east, west, eu):
            self.assertError(c.get("/v1/counters/tmp/idle"), 404, "not_found")
            self.assertGreater(self.count(c, "tmp", "busy"), 1, "touched in time: kept")
            self.assertNotIn("idle", c.get_json("/v1/counters/tmp")["counters"])
        total = 0
        for c in (east, west, eu):
            m = harness.parse_metrics(c.get("/metrics").text())
            total += sum(harness.metric_values(m, "counterd_counter_deletes_total",
                                               cause="expire"))
        self.assertGreaterEqual(total, 1)


if __name__ == "__main__":
    unittest.main()
