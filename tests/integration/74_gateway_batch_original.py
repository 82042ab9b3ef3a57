"""
74_gateway_batch_original.py - POST /api/increments to a region of the original lab, which
has no POST /increments (docs/API.md, Gateway).

A counterd region (us-east), a stand-in of the original lab's region service (eu-west,
written here as 43_repl_original_peer.py writes one: /health, /increment, and 404 or 405
for any other path) and a gateway. The items the routing sends to the original region go
to it one POST /increment each, with the same tokens, each answered with what the region
answered (a 4xx its own, a 5xx failed over to another region); the gateway remembers that
the region lacks the endpoint (one 404, then no more), counts those items in
gateway_batch_fallback_items_total{region}, and asks for POST /increments again once the
region has stopped answering (it may come back upgraded).
"""

import http.server
import json
import socket
import threading
import time
import unittest

import harness


class OriginalRegion:
    """The original lab's region service as the gateway sees it. has_batch: an upgraded
    one, answering POST /increments as counterd does. missing: its status for a path it
    does not serve (FastAPI: 404, or 405 when the path is served for another method)."""

    def __init__(self, region="eu-west", node_id="eu-west-1", port=0, has_batch=False,
                 missing=404):
        self.region, self.node_id = region, node_id
        self.has_batch, self.missing = has_batch, missing
        self.counts = {}
        self.seen = []  # (path, body) of each POST
        self.conns = []
        self.lock = threading.Lock()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as uvicorn

            def log_message(self, *a):
                pass

            def setup(self):
                super().setup()
                with outer.lock:
                    outer.conns.append(self.connection)

            def reply(self, status, obj):
                body = json.dumps(obj, separators=(",", ":")).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                if self.path == "/health":
                    return self.reply(200, {"status": "ok", "service": "counter",
                                            "region": outer.region, "node_id": outer.node_id})
                return self.reply(404, {"detail": "Not Found"})

            def do_POST(self):
                n = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(n) or b"{}")
                with outer.lock:
                    outer.seen.append((self.path, body))
                if self.path == "/increment":
                    return self.reply(*outer.increment(body))
                if self.path == "/increments" and outer.has_batch:
                    results = []
                    for it in body["increments"]:
                        st, ans = outer.increment(it)
                        results.append(dict(ans, status=st))
                    ok = sum(r["status"] == 200 for r in results)
                    return self.reply(200, {"results": results, "ok": ok,
                                            "failed": len(results) - ok,
                                            "region": outer.region, "node_id": outer.node_id})
                if outer.missing == 405:
                    return self.reply(405, {"detail": "Method Not Allowed"})
                return self.reply(404, {"detail": "Not Found"})

        self.server = http.server.ThreadingHTTPServer((harness.HOST, port), Handler)
        self.port = self.server.server_address[1]
        self.url = "http://%s:%d" % (harness.HOST, self.port)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def increment(self, body):
        name, amount = body.get("counter_name", "views"), body.get("amount", 1)
        if name.startswith("reject"):  # as FastAPI answers a body it refuses
            return 422, {"detail": [{"loc": ["body", "counter_name"], "msg": "refused"}]}
        if name.startswith("flaky"):
            return 503, {"detail": "Service Unavailable"}
        with self.lock:
            self.counts[name] = self.counts.get(name, 0) + amount
            c = self.counts[name]
        return 200, {"counter": name, "local_count": c, "total_count": c,
                     "nodes": {self.node_id: c}, "region": self.region, "node_id": self.node_id}

    def posts(self, path):
        with self.lock:
            return [b for p, b in self.seen if p == path]

    def stop(self):
        """As a process that exits: the listener and every open connection closed."""
        self.server.shutdown()
        self.server.server_close()
        with self.lock:
            for c in self.conns:
                try:
                    c.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


def item(name, amount=1, token=None):
    d = {"counter_name": name, "amount": amount}
    if token is not None:
        d["idempotency_token"] = token
    return d


class GatewayBatchOriginal(harness.ServerTestCase):
    def setup_lab(self, **kw):
        self.orig = OriginalRegion(**kw)
        self.addCleanup(lambda: self.orig.stop())
        ports = harness.free_ports(3)
        self.east = self.start_server(["--region", "us-east", "--node-id", "us-east-1",
                                       "--sync-interval-ms", "60000"], port=ports[0],
                                      name="us-east-1")
        regions = "us-east=%s,eu-west=%s" % (self.east.url, self.orig.url)
        self.start_server(["--role", "coordinator", "--regions", regions], port=ports[1],
                          name="coordinator")
        self.gw = self.start_server(["--role", "gateway", "--regions", regions,
                                     "--coordinator", "http://%s:%d" % (harness.HOST, ports[1]),
                                     "--upstream-timeout-ms", "1000"], port=ports[2],
                                    name="gateway")
        self.c = self.gw.client(timeout=20)
        self.addCleanup(self.c.close)

    def batch(self, items, routing="eu-west"):
        got = self.c.post_json("/api/increments", {"increments": items, "routing": routing})
        self.assertEqual(len(got["results"]), len(items), got)
        return got

    def fallback_items(self):
        samples = harness.parse_metrics(self.c.get("/metrics").text())
        return harness.metric_values(samples, "gateway_batch_fallback_items_total",
                                     region="eu-west")

    def test_items_one_by_one(self):
        self.setup_lab()
        items = [item("o1", 2, "tok-a"), item("o2", 3), item("o1", 1), item("reject1")]
        got = self.batch(items)
        self.assertEqual((got["ok"], got["failed"]), (3, 1), got)
        res = got["results"]
        for k, (count, name) in enumerate(((2, "o1"), (3, "o2"), (3, "o1"))):
            self.assertEqual(res[k]["status"], 200, res[k])
            self.assertEqual((res[k]["counter"], res[k]["local_count"], res[k]["node_id"]),
                             (name, count, "eu-west-1"), res[k])
            self.assertEqual((res[k]["routed_to_endpoint"], res[k]["routing"]),
                             (self.orig.url, "eu-west"))
        # The region's own refusal is the item's answer.
        self.assertEqual((res[3]["status"], res[3]["routed_to_endpoint"]), (422, self.orig.url))
        self.assertEqual(res[3]["detail"][0]["msg"], "refused", res[3])
        # One POST /increments (404), then one POST /increment per item, in order, each with
        # its token (the client's, or the gateway's).
        self.assertEqual(len(self.orig.posts("/increments")), 1)
        singles = self.orig.posts("/increment")
        self.assertEqual([(b["counter_name"], b["amount"]) for b in singles],
                         [(it["counter_name"], it["amount"]) for it in items])
        self.assertEqual(singles[0]["idempotency_token"], "tok-a")
        self.assertTrue(singles[1]["idempotency_token"] and singles[2]["idempotency_token"])
        self.assertEqual(self.fallback_items(), [4])
        # Remembered: the next batch goes item by item at once.
        got = self.batch([item("o1"), item("o3")])
        self.assertEqual((got["ok"], [r["local_count"] for r in got["results"]]), (2, [4, 1]))
        self.assertEqual(len(self.orig.posts("/increments")), 1)
        self.assertEqual(self.fallback_items(), [6])
        # Its 5xx sends the item and those after it elsewhere, with the same tokens.
        got = self.batch([item("o4"), item("flaky1", 4, "tok-f"), item("o5", 1, "tok-5")])
        res = got["results"]
        self.assertEqual([(r["status"], r["routed_to_endpoint"]) for r in res],
                         [(200, self.orig.url), (200, self.east.url), (200, self.east.url)], got)
        with self.east.client() as e:
            for body in (item("flaky1", 4, "tok-f"), item("o5", 1, "tok-5")):
                again = e.post_json("/increment", body)
                self.assertIs(again.get("duplicate"), True, "the same token went to us-east")
        self.assertEqual(self.fallback_items(), [8])
        log = self.gw.log_text()
        self.assertEqual(log.count("has no POST /increments"), 1, log[-3000:])
        self.assertEqual(log.count("increments on eu-west failed"), 1, log[-3000:])

    def test_asked_again_after_a_restart(self):
        self.setup_lab(missing=405)
        got = self.batch([item("r1"), item("r1")])
        self.assertEqual([r["local_count"] for r in got["results"]], [1, 2])
        self.assertEqual(self.fallback_items(), [2])
        port = self.orig.port
        self.orig.stop()
        # Down: its items go to us-east (each once), and the gateway forgets what it knew.
        got = self.batch([item("r2"), item("r2", 2)])
        self.assertEqual([(r["status"], r["routed_to_endpoint"]) for r in got["results"]],
                         [(200, self.east.url)] * 2)
        with self.east.client() as e:
            self.assertEqual(e.get_json("/counter/r2")["total_count"], 3)
        # Back, upgraded: asked for POST /increments again once it is up.
        self.orig = OriginalRegion(port=port, has_batch=True)
        deadline = time.monotonic() + 10
        while True:
            got = self.batch([item("r3"), item("r3")])
            ends = {r["routed_to_endpoint"] for r in got["results"]}
            if ends == {self.orig.url} or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        self.assertEqual(ends, {self.orig.url}, got)
        self.assertEqual(len(self.orig.posts("/increments")), 1)
        self.assertEqual(self.orig.posts("/increment"), [])
        # The two, and the first item tried while it was down (the second went elsewhere).
        self.assertEqual(self.fallback_items(), [3])


if __name__ == "__main__":
    unittest.main(verbosity=2)
