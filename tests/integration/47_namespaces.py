"""
47_namespaces.py - the namespace register on region nodes (API.md, "Namespaces").

One node: PUT/GET/DELETE /v1/namespaces/{ns} and GET /v1/namespaces (create with defaults,
update a subset, versions, type_change, default protected, deleted namespaces gone), bad
input answered 400 naming the field, the register kept across a restart (data directory).
Three nodes (only force-sync moves data): a PUT on one reaches the others inside /sync and
every node runs the same version; a node partitioned during a PUT gets it after the heal;
a regional namespace's counters stay on their node; a deleted namespace's counters
disappear from every node.
"""

import os
import shutil
import tempfile
import time
import unittest

import harness

NODES = [("us-east", "us-east-1"), ("us-west", "us-west-1"), ("eu-west", "eu-west-1")]
FIELDS = {"namespace", "type", "ttl_seconds", "idempotency_window_seconds", "version",
          "updated_by", "updated_at", "deleted", "region", "node_id"}


class Namespaces(harness.ServerTestCase):
    def node(self, args=(), name="ns-1"):
        srv = self.start_server(["--region", "us-east", "--node-id", "us-east-1"] + list(args),
                                name=name)
        c = srv.client()
        self.addCleanup(c.close)
        return srv, c

    def trio(self):
        ports = harness.free_ports(3)
        specs = []
        for i, (region, node_id) in enumerate(NODES):
            peers = ",".join("http://127.0.0.1:%d" % ports[j] for j in range(3) if j != i)
            specs.append(dict(args=["--region", region, "--node-id", node_id, "--peers", peers,
                                    "--sync-interval-ms", "60000", "--sync-timeout-ms", "2000"],
                              port=ports[i], name=node_id))
        servers = self.start_servers(specs)
        clients = [s.client() for s in servers]
        for c in clients:
            self.addCleanup(c.close)
        return clients

    def put(self, c, ns, body, status=200):
        r = c.request("PUT", "/v1/namespaces/" + ns, body)
        if status != 200:
            return r
        harness.assert_json_response(r, 200, "PUT /v1/namespaces/" + ns)
        return r.json()

    def sync(self, c):
        r = c.post("/admin/force-sync")
        self.assertEqual(r.status, 200, r.body[:300])

    def test_register_crud(self):
        _, c = self.node()
        lst = c.get_json("/v1/namespaces")
        self.assertEqual([n["namespace"] for n in lst["namespaces"]], ["default"])
        d = lst["namespaces"][0]
        self.assertEqual((d["type"], d["ttl_seconds"], d["idempotency_window_seconds"],
                          d["deleted"]), ("eventual", 0, 600, False))
        a = self.put(c, "orders", {"type": "regional"})
        self.assertEqual(set(a), FIELDS)
        self.assertEqual((a["namespace"], a["type"], a["ttl_seconds"],
                          a["idempotency_window_seconds"], a["deleted"], a["updated_by"],
                          a["region"], a["node_id"]),
                         ("orders", "regional", 0, 600, False, "us-east-1", "us-east", "us-east-1"))
        self.assertGreaterEqual(a["version"], 1)
        b = self.put(c, "orders", {"ttl_seconds": 30})
        self.assertEqual((b["type"], b["ttl_seconds"]), ("regional", 30))
        self.assertGreater(b["version"], a["version"])
        self.assertJsonEqual(c.get_json("/v1/namespaces/orders"), b)
        self.assertError(self.put(c, "orders", {"type": "eventual"}, 409), 409, "type_change")
        self.assertError(self.put(c, "default", {"type": "strong"}, 409), 409, "type_change")
        dflt = self.put(c, "default", {"idempotency_window_seconds": 60})
        self.assertEqual((dflt["type"], dflt["idempotency_window_seconds"]), ("eventual", 60))
        self.assertError(c.request("DELETE", "/v1/namespaces/default"), 409, "protected")
        gone = c.request("DELETE", "/v1/namespaces/orders").json()
        self.assertIs(gone["deleted"], True)
        self.assertGreater(gone["version"], b["version"])
        self.assertError(c.get("/v1/namespaces/orders"), 404, "not_found")
        self.assertError(c.request("DELETE", "/v1/namespaces/orders"), 404, "not_found")
        self.assertNotIn("orders", [n["namespace"] for n in c.get_json("/v1/namespaces")["namespaces"]])
        again = self.put(c, "orders", {"type": "eventual"})  # a new namespace: any type
        self.assertEqual((again["type"], again["ttl_seconds"]), ("eventual", 0))
        m = harness.parse_metrics(c.get("/metrics").text())
        self.assertEqual(harness.metric_values(m, "counterd_namespaces"), [2])
        self.assertEqual(harness.metric_values(m, "counterd_namespace_version", namespace="orders"),
                         [again["version"]])

    def test_bad_input_names_the_field(self):
        _, c = self.node()
        cases = [({"type": "bogus"}, "type"), ({"type": 3}, "type"),
                 ({"ttl_seconds": -1}, "ttl_seconds"), ({"ttl_seconds": 1.5}, "ttl_seconds"),
                 ({"ttl_seconds": 315360001}, "ttl_seconds"),
                 ({"idempotency_window_seconds": 0}, "idempotency_window_seconds"),
                 ({"idempotency_window_seconds": 86401}, "idempotency_window_seconds")]
        for body, field in cases:
            r = self.put(c, "bad", body, 400)
            self.assertError(r, 400, "bad_field", "PUT %r" % body, detail_contains=field)
        for ns in ("a b", "x" * 49, "a:b", "%2Fx"):
            self.assertError(c.request("PUT", "/v1/namespaces/" + ns.replace(" ", "%20"), {}),
                             400, "bad_name", "namespace %r" % ns)
        r = c.request("PUT", "/v1/namespaces/bad", b"{nope", raw_body=True)
        self.assertError(r, 400, "bad_json")
        self.assertError(c.get("/v1/namespaces/bad"), 404, "not_found")  # nothing was made
        self.assertError(c.post("/v1/namespaces", {}), 405, "method_not_allowed")

    def test_register_survives_restart(self):
        data = tempfile.mkdtemp(prefix="counterd-ns-")
        self.addCleanup(shutil.rmtree, data, True)
        srv, c = self.node(["--data-dir", data])
        a = self.put(c, "carts", {"type": "eventual", "ttl_seconds": 3600})
        self.put(c, "gone", {})
        c.request("DELETE", "/v1/namespaces/gone")
        self.assertTrue(os.path.exists(os.path.join(data, "namespaces.json")))
        self.assertFalse([f for f in os.listdir(data) if f.endswith(".tmp")])
        c.close()
        srv.stop()
        srv.start()
        c2 = srv.client()
        self.addCleanup(c2.close)
        b = c2.get_json("/v1/namespaces/carts")
        for k in ("type", "ttl_seconds", "version", "updated_by", "updated_at"):
            self.assertEqual(b[k], a[k], k)
        self.assertError(c2.get("/v1/namespaces/gone"), 404, "not_found")

    def test_versions_converge_and_heal(self):
        a, b, c = self.trio()
        v1 = self.put(a, "shop", {"ttl_seconds": 100})
        self.sync(a)
        for x in (b, c):
            got = x.get_json("/v1/namespaces/shop")
            self.assertEqual((got["version"], got["ttl_seconds"], got["updated_by"]),
                             (v1["version"], 100, "us-east-1"))
        self.assertEqual(c.post_json("/admin/partition", {"enabled": True})["network_partition"],
                         True)
        v2 = self.put(b, "shop", {"ttl_seconds": 200})
        self.assertGreater(v2["version"], v1["version"])
        self.sync(b)
        self.assertEqual(a.get_json("/v1/namespaces/shop")["version"], v2["version"])
        self.assertEqual(c.get_json("/v1/namespaces/shop")["version"], v1["version"])
        c.post_json("/admin/partition", {"enabled": False})
        self.sync(c)
        got = c.get_json("/v1/namespaces/shop")
        self.assertEqual((got["version"], got["ttl_seconds"], got["updated_by"]),
                         (v2["version"], 200, "us-west-1"))
        for x in (a, b, c):
            m = harness.parse_metrics(x.get("/metrics").text())
            self.assertEqual(harness.metric_values(m, "counterd_namespace_version",
                                                   namespace="shop"), [v2["version"]])

    def test_regional_counters_stay_home(self):
        a, b, c = self.trio()
        self.put(a, "local", {"type": "regional"})
        self.put(a, "glob", {"type": "eventual"})
        self.sync(a)
        a.post_json("/v1/counters/local/hits/add", {"delta": 5})
        a.post_json("/v1/counters/glob/hits/add", {"delta": 3})
        self.sync(a)
        self.sync(b)
        self.assertEqual(a.get_json("/v1/counters/local/hits")["count"], 5)
        for x in (b, c):
            self.assertError(x.get("/v1/counters/local/hits"), 404, "not_found")
            self.assertEqual(x.get_json("/v1/counters/glob/hits")["count"], 3)

    def test_deleted_namespace_counters_disappear(self):
        a, b, c = self.trio()
        self.put(a, "tmp", {})
        self.sync(a)
        for i, x in enumerate((a, b, c)):
            for k in range(3):
                x.post_json("/v1/counters/tmp/c%d/add" % k, {"delta": i + 1})
        for x in (a, b, c):
            self.sync(x)
        self.assertEqual(b.get_json("/v1/counters/tmp/c0")["count"], 6)
        a.request("DELETE", "/v1/namespaces/tmp")
        self.sync(a)
        deadline = time.monotonic() + 10
        for x in (a, b, c):
            while True:
                names = x.get_json("/counters")["counters"]
                if not [n for n in names if n.startswith("tmp/")]:
                    break
                self.assertLess(time.monotonic(), deadline, "tmp/ counters still listed: %r"
                                % sorted(names))
                time.sleep(0.1)
        for x in (a, b, c):
            self.sync(x)
        m = harness.parse_metrics(a.get("/metrics").text())
        self.assertGreaterEqual(sum(harness.metric_values(m, "counterd_counter_deletes_total",
                                                          cause="namespace")), 1)
        self.put(b, "tmp", {})  # created again: it starts empty
        self.sync(b)
        for x in (a, b, c):
            self.assertError(x.get("/v1/counters/tmp/c0"), 404, "not_found")
            self.assertEqual(x.get_json("/v1/counters/tmp")["counters"], {})


if __name__ == "__main__":
    unittest.main()
