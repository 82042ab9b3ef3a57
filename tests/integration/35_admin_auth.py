"""
35_admin_auth.py - the admin token (--admin-token) and the listening address (--bind).

With --admin-token T, /admin/* and /sync need "Authorization: Bearer T" (else 401
{"error":"unauthorized"}) and a refused request changes nothing; the client endpoints
(/health, /increment, /counter/{name}, /counters, /metrics) need no token. Peers send the
token: three nodes with the same token replicate, a node whose peers hold another token
is refused (counter_sync_operations_total{status="error"} grows) and does not converge.
Without --admin-token nothing needs a token. By default the node listens on 127.0.0.1
only; --bind 0.0.0.0 accepts on the machine's other addresses.
"""

import contextlib
import http.client
import json
import os
import re
import socket
import subprocess
import time
import unittest

import harness

TOKEN = "s3cret"
GOOD = {"Authorization": "Bearer " + TOKEN}
WRONG_HEADERS = [
    ("no Authorization", {}),
    ("Bearer wrong", {"Authorization": "Bearer wrong"}),
    ("Bearer s3cre (prefix)", {"Authorization": "Bearer s3cre"}),
    ("Bearer s3cretX (extension)", {"Authorization": "Bearer s3cretX"}),
    ("Bearer S3CRET (case)", {"Authorization": "Bearer S3CRET"}),
    ("empty Bearer", {"Authorization": "Bearer "}),
    ("token without scheme", {"Authorization": TOKEN}),
    ("Basic scheme", {"Authorization": "Basic " + TOKEN}),
    ("token in another header", {"X-Admin-Token": TOKEN}),
]
NODES = [("us-east", "us-east-1"), ("us-west", "us-west-1"), ("eu-west", "eu-west-1")]


def sync_body(counts, node_id="us-west-1"):
    return {"counts": counts, "node_id": node_id, "timestamp": time.time()}


def sync_errors(client):
    samples = harness.parse_metrics(client.get("/metrics").text())
    return sum(harness.metric_values(samples, "counter_sync_operations_total", status="error"))


def sync_successes(client):
    samples = harness.parse_metrics(client.get("/metrics").text())
    return sum(harness.metric_values(samples, "counter_sync_operations_total",
                                     status="success"))


class AdminToken(harness.ServerTestCase):
    @classmethod
    def setUpClass(cls):
        cls.srv = cls.start_class_server(
            ["--region", "us-east", "--node-id", "us-east-1", "--admin-token", TOKEN,
             "--sync-interval-ms", "60000"], name="auth")

    def protected(self):
        return [
            ("POST", "/admin/partition", {"enabled": True}),
            ("GET", "/admin/partition", None),
            ("POST", "/admin/force-sync", None),
            ("POST", "/sync", sync_body({"auth_x": {"us-west-1": 5}})),
        ]

    def test_protected_endpoints_refuse_without_the_token(self):
        with self.srv.client() as c:
            for method, path, body in self.protected():
                for what, headers in WRONG_HEADERS:
                    r = c.request(method, path, body=body, headers=headers)
                    self.assertError(r, 401, "unauthorized", "%s %s with %s" % (method, path, what))
            # Nothing of the refused requests happened.
            r = c.get("/admin/partition", headers=GOOD)
            harness.assert_json_response(r, 200, "GET /admin/partition with the token")
            self.assertIs(r.json()["network_partition"], False,
                          "a refused POST /admin/partition {enabled:true} took effect: %r" % r)
            got = c.get_json("/counter/auth_x")
            self.assertEqual((got["total_count"], got["nodes"]), (0, {}),
                             "a refused POST /sync merged: %r" % got)
            self.assertNotIn("auth_x", c.get_json("/counters")["counters"])

    def test_protected_endpoints_accept_the_token(self):
        with self.srv.client() as c:
            r = c.get("/admin/partition", headers=GOOD)
            harness.assert_json_response(r, 200, "GET /admin/partition with the token")
            self.assertJsonEqual(r.json(), {"network_partition": False, "region": "us-east",
                                            "node_id": "us-east-1"})
            r = c.post("/admin/partition", {"enabled": True}, headers=GOOD)
            harness.assert_json_response(r, 200, "POST /admin/partition true with the token")
            self.assertIs(r.json()["network_partition"], True)
            try:
                r = c.get("/admin/partition", headers=GOOD)
                self.assertIs(r.json()["network_partition"], True)
            finally:
                r = c.post("/admin/partition", {"enabled": False}, headers=GOOD)
                harness.assert_json_response(r, 200, "POST /admin/partition false with token")
            self.assertIs(r.json()["network_partition"], False)

            r = c.post("/admin/force-sync", headers=GOOD)
            harness.assert_json_response(r, 200, "POST /admin/force-sync with the token")
            self.assertEqual(r.json()["status"], "sync_completed")

            r = c.post("/sync", sync_body({"auth_ok": {"us-west-1": 7}}), headers=GOOD)
            harness.assert_json_response(r, 200, "POST /sync with the token")
            self.assertIn("counts", r.json())
            got = c.get_json("/counter/auth_ok")
            self.assertEqual((got["total_count"], got["nodes"]), (7, {"us-west-1": 7}))

    def test_token_header_anywhere_among_the_headers(self):
        # The Authorization header first, in the middle, last, and in another case.
        orders = {
            "first": "Authorization: Bearer s3cret\r\nHost: x\r\nX-A: b\r\n",
            "middle": "Host: x\r\nAuthorization: Bearer s3cret\r\nX-A: b\r\n",
            "last": "Host: x\r\nX-A: b\r\nAuthorization: Bearer s3cret\r\n",
            "lower-case name": "Host: x\r\nauthorization: Bearer s3cret\r\nX-A: b\r\n",
        }
        for what, headers in orders.items():
            with self.srv.raw() as raw:
                raw.send("GET /admin/partition HTTP/1.1\r\n%s\r\n" % headers)
                r = raw.read_response()
            self.assertEqual(r.status, 200, "GET /admin/partition, Authorization header %s: %r"
                             % (what, r))
            body = json.dumps({"enabled": False})
            with self.srv.raw() as raw:
                raw.send("POST /admin/partition HTTP/1.1\r\n%sContent-Type: application/json\r\n"
                         "Content-Length: %d\r\n\r\n%s" % (headers, len(body), body))
                r = raw.read_response()
            self.assertEqual(r.status, 200, "POST /admin/partition, Authorization header %s, "
                             "then Content-Type and Content-Length: %r" % (what, r))

    def test_client_endpoints_need_no_token(self):
        with self.srv.client() as c:
            r = c.get("/health")
            harness.assert_json_response(r, 200, "GET /health without a token")
            r = c.post("/increment", {"counter_name": "open_x", "amount": 3})
            harness.assert_json_response(r, 200, "POST /increment without a token")
            self.assertEqual(r.json()["local_count"], 3)
            r = c.get("/counter/open_x")
            harness.assert_json_response(r, 200, "GET /counter/open_x without a token")
            self.assertEqual(r.json()["total_count"], 3)
            r = c.get("/counters")
            harness.assert_json_response(r, 200, "GET /counters without a token")
            self.assertIn("open_x", r.json()["counters"])
            r = c.get("/metrics")
            self.assertEqual(r.status, 200, "GET /metrics without a token: %r" % r)
            harness.parse_metrics(r.text())

    def test_401_does_not_leak_the_token(self):
        with self.srv.client() as c:
            r = c.post("/admin/force-sync", headers={"Authorization": "Bearer wrong"})
            self.assertError(r, 401, "unauthorized", "force-sync with a wrong token")
            self.assertNotIn(TOKEN.encode(), r.body)
            self.assertNotIn(TOKEN, "".join("%s: %s" % kv for kv in r.headers.items()))
        self.assertNotIn(TOKEN, self.srv.log_text(), "the log shows the admin token")


class NoAdminToken(harness.ServerTestCase):
    def test_admin_endpoints_open_without_token_flag(self):
        srv = self.start_server(["--region", "us-east", "--node-id", "us-east-1",
                                 "--sync-interval-ms", "60000"], name="no-token")
        with srv.client() as c:
            r = c.get("/admin/partition")
            harness.assert_json_response(r, 200, "GET /admin/partition, no --admin-token")
            r = c.post("/admin/partition", {"enabled": True})
            harness.assert_json_response(r, 200, "POST /admin/partition, no --admin-token")
            self.assertIs(r.json()["network_partition"], True)
            r = c.post("/admin/partition", {"enabled": False})
            harness.assert_json_response(r, 200, "POST /admin/partition, no --admin-token")
            self.assertIs(r.json()["network_partition"], False)
            r = c.post("/admin/force-sync")
            harness.assert_json_response(r, 200, "POST /admin/force-sync, no --admin-token")
            r = c.post("/sync", sync_body({"nt": {"us-west-1": 2}}))
            harness.assert_json_response(r, 200, "POST /sync, no --admin-token")
            self.assertEqual(c.get_json("/counter/nt")["nodes"], {"us-west-1": 2})


class TokenReplication(harness.ServerTestCase):
    def start_trio(self, tokens):
        ports = harness.free_ports(3)
        specs = []
        for i, (region, node_id) in enumerate(NODES):
            peers = ",".join("http://127.0.0.1:%d" % ports[j] for j in range(3) if j != i)
            specs.append(dict(args=["--region", region, "--node-id", node_id,
                                    "--peers", peers, "--sync-interval-ms", "60000",
                                    "--sync-timeout-ms", "2000", "--admin-token", tokens[i]],
                              port=ports[i], name=node_id))
        servers = self.start_servers(specs)
        clients = [s.client() for s in servers]
        for c in clients:
            self.addCleanup(c.close)
        return clients

    def force_sync(self, c, token):
        return c.post("/admin/force-sync", headers={"Authorization": "Bearer " + token})

    def nodes_of(self, c, name):
        return c.get_json("/counter/%s" % name)["nodes"]

    def test_same_token_replicates(self):
        clients = self.start_trio([TOKEN] * 3)
        for i, c in enumerate(clients):
            c.post_json("/increment", {"counter_name": "rt", "amount": 10 ** i})
        for i, c in enumerate(clients):
            r = c.post("/admin/force-sync")
            self.assertError(r, 401, "unauthorized", "force-sync on %s without the token"
                             % NODES[i][1])
        for i, c in enumerate(clients):
            r = self.force_sync(c, TOKEN)
            harness.assert_json_response(r, 200, "force-sync on %s with the token" % NODES[i][1])
        want = {"us-east-1": 1, "us-west-1": 10, "eu-west-1": 100}
        for i, c in enumerate(clients):
            got = c.get_json("/counter/rt")
            self.assertEqual((got["total_count"], got["nodes"]), (111, want),
                             "%s after force-sync with a shared token" % NODES[i][1])
            self.assertEqual(sync_errors(c), 0, "%s counted sync errors" % NODES[i][1])

    def test_other_token_is_refused_and_does_not_converge(self):
        a, b, c = self.start_trio([TOKEN, TOKEN, "other"])
        a.post_json("/increment", {"counter_name": "mt", "amount": 1})
        b.post_json("/increment", {"counter_name": "mt", "amount": 10})
        c.post_json("/increment", {"counter_name": "mt", "amount": 100})
        err0 = [sync_errors(x) for x in (a, b, c)]
        ok0 = [sync_successes(x) for x in (a, b, c)]
        results = []
        for _ in range(2):
            for x, token, name in ((a, TOKEN, "us-east-1"), (b, TOKEN, "us-west-1"),
                                   (c, "other", "eu-west-1")):
                r = self.force_sync(x, token)
                results.append((name, r.status, r.json().get("status", r.json().get("error"))))
        print("\n[35_auth] force-sync answers with a mismatched token: %r" % results)
        err1 = [sync_errors(x) for x in (a, b, c)]
        ok1 = [sync_successes(x) for x in (a, b, c)]
        print("[35_auth] sync errors before/after: %r -> %r; successes %r -> %r"
              % (err0, err1, ok0, ok1))
        # a and b converge with each other, c stays alone.
        for x, name in ((a, "us-east-1"), (b, "us-west-1")):
            got = x.get_json("/counter/mt")
            self.assertEqual((got["total_count"], got["nodes"]),
                             (11, {"us-east-1": 1, "us-west-1": 10}),
                             "%s: merged with the node of another token, or not with its "
                             "peer of the same token" % name)
        got = c.get_json("/counter/mt")
        self.assertEqual((got["total_count"], got["nodes"]), (100, {"eu-west-1": 100}),
                         "eu-west-1 (another token) merged with its peers")
        self.assertGreater(err1[2], err0[2], "counter_sync_operations_total{status=\"error\"} "
                           "did not grow on the node whose sync was refused")
        self.assertGreater(err1[0], err0[0], "counter_sync_operations_total{status=\"error\"} "
                           "did not grow on us-east-1, refused by eu-west-1")
        self.assertGreater(ok1[0], ok0[0], "no successful sync between us-east-1 and "
                           "us-west-1 (same token)")
        # A /sync sent by hand with a's token to c is refused too.
        r = c.post("/sync", sync_body({"mt": {"us-east-1": 1}}, node_id="us-east-1"),
                   headers=GOOD)
        self.assertError(r, 401, "unauthorized", "POST /sync to eu-west-1 with us-east-1's token")


def non_loopback_ipv4():
    try:
        addr = socket.gethostbyname(socket.gethostname())
        if not addr.startswith("127."):
            return addr
    except OSError:
        pass
    try:
        out = subprocess.run(["ip", "-4", "addr"], capture_output=True, text=True,
                             timeout=5).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    for m in re.finditer(r"inet (\d+\.\d+\.\d+\.\d+)/", out):
        if not m.group(1).startswith("127."):
            return m.group(1)
    return None


class UnboundServer(harness.Server):
    """A server started without the harness' own "--bind 127.0.0.1"."""

    def command(self):
        return [harness.BIN, "--port", str(self.port)] + self.args


@contextlib.contextmanager
def env_without(name):
    old = os.environ.pop(name, None)
    try:
        yield
    finally:
        if old is not None:
            os.environ[name] = old


class BindAddress(harness.ServerTestCase):
    def setUp(self):
        super().setUp()
        self.addr = non_loopback_ipv4()
        if self.addr is None:
            print("\n[35_auth] skipped: this machine has no non-loopback IPv4 address")
            self.skipTest("no non-loopback IPv4 address on this machine")

    def start_unbound(self, args, name):
        srv = UnboundServer(["--region", "us-east", "--node-id", "us-east-1"] + args,
                            name=name)
        self.addCleanup(srv.stop)
        with env_without("COUNTERD_BIND"):
            return srv.start()

    def get_health(self, host, port):
        conn = http.client.HTTPConnection(host, port, timeout=3)
        try:
            conn.request("GET", "/health")
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()

    def test_default_listens_on_loopback_only(self):
        srv = self.start_unbound([], "default-bind")
        status, _ = self.get_health("127.0.0.1", srv.port)
        self.assertEqual(status, 200)
        try:
            status, body = self.get_health(self.addr, srv.port)
        except ConnectionRefusedError:
            return
        self.fail("the default bind accepted a connection on %s:%d (GET /health -> %d %r)"
                  % (self.addr, srv.port, status, body[:100]))

    def test_bind_all_accepts_on_other_address(self):
        srv = self.start_unbound(["--bind", "0.0.0.0"], "bind-all")
        try:
            status, body = self.get_health(self.addr, srv.port)
        except OSError as e:
            self.fail("--bind 0.0.0.0: GET /health on %s:%d failed: %r" % (self.addr, srv.port, e))
        self.assertEqual(status, 200, "--bind 0.0.0.0: GET /health on %s:%d -> %d %r"
                         % (self.addr, srv.port, status, body[:200]))


class AdminTokenLab(harness.ServerTestCase):
    """The coordinator's fan-outs and the gateway's /admin/* are admin endpoints too: with
    the token set they refuse without it, and with it they reach the regions (which check
    it again)."""

    def test_coordinator_and_gateway_guard_their_admin_endpoints(self):
        token = ["--admin-token", "labsecret"]
        topo = harness.Topology(region_args=token, coordinator_args=token,
                                gateway_args=token).start(self.addCleanup)
        gw, coord = topo.gateway.client(), topo.coordinator.client()
        self.addCleanup(gw.close)
        self.addCleanup(coord.close)
        bearer = {"Authorization": "Bearer labsecret"}
        refused = [
            (gw, "POST", "/admin/partition/us-east?enabled=true", None),
            (gw, "POST", "/admin/partition/all?enabled=false", None),
            (gw, "POST", "/admin/force-sync", None),
            (coord, "POST", "/global/partition", {"region": "us-east", "enabled": True}),
            (coord, "POST", "/global/partition/all?enabled=true", None),
            (coord, "POST", "/global/force-sync", None),
        ]
        for client, method, path, body in refused:
            for headers in ({}, {"Authorization": "Bearer wrong"}):
                r = client.request(method, path, body=body, headers=headers)
                self.assertError(r, 401, "unauthorized", "%s %s %r" % (method, path, headers))
        # Nothing was changed by the refused calls.
        status = gw.get_json("/api/status")
        self.assertEqual(status["partitioned_count"], 0)
        # With the token, the gateway's call goes through the coordinator to the region.
        r = gw.request("POST", "/admin/partition/us-east?enabled=true", headers=bearer)
        harness.assert_json_response(r, 200, "gateway partition with the token")
        self.assertEqual(r.json(), {"status": "success", "region": "us-east",
                                    "network_partition": True})
        self.assertEqual(gw.get_json("/api/status")["partitioned_count"], 1)
        r = coord.request("POST", "/global/partition/all?enabled=false", headers=bearer)
        harness.assert_json_response(r, 200, "coordinator heal-all with the token")
        self.assertEqual(r.json()["regions_updated"], 3)
        r = gw.request("POST", "/admin/force-sync", headers=bearer)
        harness.assert_json_response(r, 200, "gateway force-sync with the token")
        self.assertEqual((r.json()["status"], r.json()["regions_synced"]), ("sync_initiated", 3))
        # Client endpoints stay open.
        inc = gw.post_json("/api/increment", {"counter_name": "open_lab", "amount": 2})
        self.assertEqual(inc["total_count"], 2)
        self.assertEqual(gw.get_json("/api/counter/open_lab")["global_count"], 2)


if __name__ == "__main__":
    unittest.main()
