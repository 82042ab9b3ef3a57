"""
43_repl_original_peer.py - a mixed cluster: two counterd regions and a region that speaks
the original lab's /sync, {"counts": {name: {node_id: count}}, "node_id", "timestamp"},
both ways (a stand-in written here, as the original region service behaves: it merges
per node by max, answers its whole state, and pushes its state to its peers).

Increments on either side converge to the same totals and the same `nodes` vector, and
the original-format region never sees counterd's replica ids (`us-east-1~b3b72f94`): it
gets each node's incarnations summed under the node id. What it cannot hold or send
(decrements; names outside counterd's charset, negative counts) is said, counted and
skipped, and the rest is merged.
"""

import http.server
import json
import threading
import time
import unittest
import urllib.request

import harness

STAND_IN = ("eu-west", "eu-west-1")


class OriginalRegion:
    """The original lab's region service, as far as its peers and the coordinator see it."""

    def __init__(self, region, node_id):
        self.region, self.node_id = region, node_id
        self.counts = {}  # name -> {node_id: count}
        self.peers = []
        self.lock = threading.Lock()
        self.answers = []  # what counterd answered to our pushes
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def reply(self, status, obj):
                body = json.dumps(obj).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def body(self):
                n = int(self.headers.get("Content-Length") or 0)
                return json.loads(self.rfile.read(n) or b"{}")

            def do_GET(self):
                if self.path == "/health":
                    return self.reply(200, {"status": "ok", "service": "counter",
                                            "region": outer.region, "node_id": outer.node_id})
                if self.path.startswith("/counter/"):
                    return self.reply(200, outer.view(self.path[len("/counter/"):]))
                if self.path == "/admin/partition":
                    return self.reply(200, {"network_partition": False, "region": outer.region,
                                            "node_id": outer.node_id})
                return self.reply(404, {"detail": "Not Found"})

            def do_POST(self):
                if self.path == "/sync":
                    outer.merge(self.body().get("counts", {}))
                    return self.reply(200, outer.state())
                if self.path == "/increment":
                    b = self.body()
                    name, amount = b.get("counter_name", "views"), b.get("amount", 1)
                    with outer.lock:
                        vec = outer.counts.setdefault(name, {})
                        vec[outer.node_id] = vec.get(outer.node_id, 0) + amount
                    return self.reply(200, outer.view(name))
                if self.path == "/admin/force-sync":
                    outer.sync()
                    return self.reply(200, {"status": "sync_completed", "region": outer.region,
                                            "node_id": outer.node_id})
                return self.reply(404, {"detail": "Not Found"})

        self.server = http.server.ThreadingHTTPServer((harness.HOST, 0), Handler)
        self.port = self.server.server_address[1]
        self.url = "http://%s:%d" % (harness.HOST, self.port)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self):
        self.thread.start()
        return self

    def stop(self):
        self.server.shutdown()
        self.server.server_close()

    def merge(self, counts):
        with self.lock:
            for name, vec in counts.items():
                mine = self.counts.setdefault(name, {})
                for node, c in vec.items():
                    mine[node] = max(mine.get(node, 0), c)

    def state(self):
        with self.lock:
            return {"counts": json.loads(json.dumps(self.counts)), "node_id": self.node_id,
                    "timestamp": time.time()}

    def view(self, name):
        with self.lock:
            vec = dict(self.counts.get(name, {}))
        return {"counter": name, "local_count": vec.get(self.node_id, 0),
                "total_count": sum(vec.values()), "nodes": vec, "region": self.region,
                "node_id": self.node_id}

    def sync(self, extra=None):
        """Its sync loop's round: push the whole state to every peer, merge the answers."""
        for peer in self.peers:
            body = self.state()
            if extra:
                body["counts"].update(extra)
            req = urllib.request.Request(peer + "/sync", data=json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(req, timeout=5) as r:
                answer = json.loads(r.read())
            self.answers.append(answer)
            self.merge(answer["counts"])


class MixedCluster(harness.ServerTestCase):
    def setUp(self):
        super().setUp()
        self.orig = OriginalRegion(*STAND_IN).start()
        self.addCleanup(self.orig.stop)
        ports = harness.free_ports(3)
        urls = ["http://%s:%d" % (harness.HOST, p) for p in ports[:2]]
        self.nodes = {}
        specs = []
        for i, (region, node_id) in enumerate((("us-east", "us-east-1"),
                                               ("us-west", "us-west-1"))):
            peers = ",".join([urls[1 - i], self.orig.url])
            specs.append(dict(args=["--region", region, "--node-id", node_id, "--peers", peers,
                                    "--sync-interval-ms", "60000", "--sync-timeout-ms", "2000"],
                              port=ports[i], name=node_id))
        servers = self.start_servers(specs)
        self.srv = dict(zip(("us-east", "us-west"), servers))
        self.orig.peers = urls
        self.c = {}
        for region, s in self.srv.items():
            self.c[region] = s.client()
            self.addCleanup(self.c[region].close)
        regions = ",".join(["us-east=" + urls[0], "us-west=" + urls[1],
                            "eu-west=" + self.orig.url])
        self.co = self.start_server(["--role", "coordinator", "--regions", regions],
                                    name="coordinator").client()
        self.addCleanup(self.co.close)

    def incr(self, region, name, amount):
        if region == "eu-west":
            body = json.dumps({"counter_name": name, "amount": amount}).encode()
            req = urllib.request.Request(self.orig.url + "/increment", data=body)
            urllib.request.urlopen(req, timeout=5).read()
            return
        self.c[region].post_json("/increment", {"counter_name": name, "amount": amount})

    def sync_all(self):
        for region in ("us-east", "us-west"):
            a = self.c[region].post_json("/admin/force-sync")
            self.assertEqual(a["status"], "sync_completed", a)
        self.orig.sync()

    def views(self, name):
        out = {r: self.c[r].get_json("/counter/%s" % name) for r in self.c}
        out["eu-west"] = self.orig.view(name)
        return out

    def assertConverged(self, name, nodes):
        for region, v in self.views(name).items():
            self.assertEqual((v["total_count"], v["nodes"]), (sum(nodes.values()), nodes),
                             "%s's view of %s: %r" % (region, name, v))

    def test_increments_on_either_side_converge(self):
        self.incr("us-east", "mix", 3)
        self.incr("us-west", "mix", 4)
        self.incr("eu-west", "mix", 5)
        self.sync_all()
        self.assertConverged("mix", {"us-east-1": 3, "us-west-1": 4, "eu-west-1": 5})
        # The original-format region holds node ids only, never counterd's replica ids.
        for vec in self.orig.state()["counts"].values():
            self.assertFalse([k for k in vec if "~" in k], vec)
        # Again, from the other side first.
        self.incr("eu-west", "mix", 10)
        self.incr("us-east", "mix", 1)
        self.orig.sync()
        self.incr("us-west", "mix", 2)
        self.sync_all()
        self.assertConverged("mix", {"us-east-1": 4, "us-west-1": 6, "eu-west-1": 15})
        g = self.co.get_json("/global/counter/mix")
        self.assertIs(g["convergence"]["converged"], True, g)
        self.assertEqual((g["global_count"], g["merged_count"]), (25, 25), g)
        st = self.co.get_json("/global/status")
        self.assertEqual(st["healthy_count"], 3, st)
        self.assertEqual(st["regions"]["eu-west"], {"status": "healthy", "node_id": "eu-west-1",
                                                    "network_partition": False}, st)
        peers = st["regions"]["us-east"]["peers"]
        self.assertEqual(peers["eu-west-1"]["format"], "original", peers)
        self.assertEqual(peers["us-west-1"]["format"], "counterd", peers)
        samples = harness.parse_metrics(self.c["us-east"].get("/metrics").text())
        self.assertEqual(harness.metric_values(samples, "counterd_sync_peer_original_format",
                                               peer=self.orig.url), [1.0])
        # The gauges do not count the original region's echo of our own sums.
        self.assertEqual(harness.metric_values(samples, "counter_synced_count"), [25.0])
        self.assertEqual(harness.metric_values(samples, "counter_local_count"), [4.0])

    def test_a_restarted_incarnation_reaches_it_summed(self):
        # us-east without a data directory: each start is a new incarnation. After a
        # restart its old increments come back from its peers under the old replica id,
        # the new ones count under the new one: the original region gets their sum.
        self.incr("us-east", "inc", 3)
        self.sync_all()
        east = self.srv["us-east"]
        self.c["us-east"].close()
        east.stop()
        east.start()
        self.c["us-east"] = east.client()
        self.addCleanup(self.c["us-east"].close)
        self.c["us-east"].post_json("/admin/force-sync")
        self.incr("us-east", "inc", 4)
        self.sync_all()
        self.assertConverged("inc", {"us-east-1": 7})
        self.sync_all()
        self.assertConverged("inc", {"us-east-1": 7})

    def test_what_the_original_cannot_hold_or_send(self):
        # Decrements: it cannot take them; said once in the log, counted.
        self.incr("us-east", "dec", 5)
        self.incr("us-east", "dec", -2)
        self.sync_all()
        self.sync_all()
        self.assertEqual(self.c["us-west"].get_json("/counter/dec")["nodes"], {"us-east-1": 3})
        self.assertEqual(self.orig.view("dec")["nodes"], {"us-east-1": 5})
        log = self.srv["us-east"].log_text()
        self.assertEqual(log.count("cannot take decrements"), 1, log[-3000:])
        samples = harness.parse_metrics(self.c["us-east"].get("/metrics").text())
        self.assertGreater(sum(harness.metric_values(
            samples, "counterd_sync_decrements_unsent_total")), 0)
        # Names outside counterd's charset and negative counts: skipped, the rest merged.
        self.incr("eu-west", "fine", 2)
        self.orig.sync(extra={"caf\u00e9 views": {"eu-west-1": 3}, "neg": {"eu-west-1": -4},
                              "fine2": {"eu-west-1": 6}})
        for answer in self.orig.answers[-2:]:
            self.assertEqual(answer["rejected_count"], 2, answer)
            self.assertEqual(sorted(x["reason"] for x in answer["rejected"]),
                             ["bad_name", "negative"], answer)
        for region in ("us-east", "us-west"):
            self.assertEqual(self.c[region].get_json("/counter/fine")["nodes"], {"eu-west-1": 2})
            self.assertEqual(self.c[region].get_json("/counter/fine2")["nodes"],
                             {"eu-west-1": 6})
            self.assertEqual(self.c[region].get_json("/counter/neg")["nodes"], {})
            samples = harness.parse_metrics(self.c[region].get("/metrics").text())
            self.assertEqual(harness.metric_values(
                samples, "counterd_sync_rejected_entries_total", peer="eu-west-1",
                reason="negative"), [1.0])


if __name__ == "__main__":
    unittest.main()
