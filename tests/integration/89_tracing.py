"""
89_tracing.py - W3C traceparent on every hop and OTLP/HTTP JSON export, against a small
OTLP receiver run by the test (http.server on a free loopback port).

A topology of three regions, a coordinator, a gateway and the strong counter starts with
OTEL_EXPORTER_OTLP_ENDPOINT pointing at the receiver (exports every 100 ms). Then:

- one POST /api/increment with a traceparent gives one trace: the gateway's server span
  (a child of the caller's span), its client span to the region it routed to, and that
  region's server span (a child of the client span), with the lab's attributes;
- an increment without traceparent starts a new trace that still spans both services;
- GET /api/counter/x gives gateway -> coordinator -> every region in one trace;
- a force-sync gives sync rounds and /sync exchanges (client and server side) in the
  force-sync's trace, with the peer and the number of counters on them;
- a strong increment gives the leader's round and its accept to every replica, each
  replica's span a child of the leader's message to it.

Then, with a collector that sleeps before answering and then one whose port is closed,
increments still succeed fast and counterd_trace_spans_dropped_total rises, while the
queue stays within its bound.
"""

import http.server
import json
import os
import socket
import threading
import time
import unittest

import harness

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
CALLER_SPAN = "b7ad6b7169203331"


class Receiver:
    """A minimal OTLP/HTTP JSON collector: POST /v1/traces, spans kept in memory."""

    def __init__(self, delay_s=0.0):
        self.spans = []  # (service.name, resource attributes, span)
        self.bodies = 0
        self.delay_s = delay_s
        self.lock = threading.Lock()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):
                n = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(n)
                if outer.delay_s:
                    time.sleep(outer.delay_s)
                status = 200
                try:
                    outer.take(self.path, self.headers.get("Content-Type", ""), body)
                except Exception as e:  # a malformed export fails the test, below
                    with outer.lock:
                        outer.errors.append(repr(e))
                    status = 400
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", "2")
                    self.end_headers()
                    self.wfile.write(b"{}")
                except OSError:
                    pass  # the exporter gave up waiting

        self.errors = []
        self.httpd = http.server.ThreadingHTTPServer((harness.HOST, 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self):
        return "http://%s:%d" % (harness.HOST, self.port)

    def take(self, path, ctype, body):
        assert path == "/v1/traces", path
        assert ctype.startswith("application/json"), ctype
        doc = json.loads(body)
        got = []
        for rs in doc["resourceSpans"]:
            rattrs = attrs_of(rs["resource"]["attributes"])
            for ss in rs["scopeSpans"]:
                for sp in ss["spans"]:
                    got.append((rattrs["service.name"], rattrs, sp))
        with self.lock:
            self.bodies += 1
            self.spans.extend(got)

    def trace(self, trace_id):
        with self.lock:
            return [(svc, sp) for (svc, _, sp) in self.spans if sp["traceId"] == trace_id]

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def attrs_of(lst):
    """OTLP attributes -> {key: python value} (intValue strings become ints)."""
    out = {}
    for a in lst:
        v = a["value"]
        if "stringValue" in v:
            out[a["key"]] = v["stringValue"]
        elif "intValue" in v:
            out[a["key"]] = int(v["intValue"])
        elif "boolValue" in v:
            out[a["key"]] = v["boolValue"]
        else:
            raise AssertionError("attribute %r has an unexpected value %r" % (a["key"], v))
    return out


def new_ids():
    return os.urandom(16).hex(), os.urandom(8).hex()


class Tracing(harness.ServerTestCase):
    """One traced topology; every test uses its own trace id and counter."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.rx = Receiver()
        cls.addClassCleanup(cls.rx.stop)  # after the servers (cleanups run last first)
        with harness.environ(OTEL_EXPORTER_OTLP_ENDPOINT=cls.rx.url + "/",
                             OTEL_BSP_SCHEDULE_DELAY="100"):
            cls.topo = harness.Topology(strong=True)
            cls.topo.start(cls.addClassCleanup)

    def setUp(self):
        super().setUp()
        self.gw = self.topo.gateway.client()
        self.addCleanup(self.gw.close)

    def tearDown(self):
        self.assertEqual(self.rx.errors, [], "the receiver got malformed exports")
        super().tearDown()

    def wait_trace(self, trace_id, want, timeout=8.0):
        """Spans of trace_id once want(spans) holds (the last spans seen otherwise)."""
        deadline = time.monotonic() + timeout
        while True:
            spans = self.rx.trace(trace_id)
            if want(spans) or time.monotonic() > deadline:
                return spans
            time.sleep(0.05)

    def one(self, spans, service, name, kind=None):
        found = [sp for (svc, sp) in spans if svc == service and sp["name"] == name and
                 (kind is None or sp["kind"] == kind)]
        self.assertEqual(len(found), 1, "one span %r of %s in %s" % (name, service,
                                                                      describe(spans)))
        return found[0]

    def assertInside(self, child, parent):
        """The child's time lies within its parent's (one clock: one machine)."""
        self.assertLessEqual(int(parent["startTimeUnixNano"]), int(child["startTimeUnixNano"]))
        self.assertLessEqual(int(child["endTimeUnixNano"]), int(parent["endTimeUnixNano"]))
        self.assertLessEqual(int(child["startTimeUnixNano"]), int(child["endTimeUnixNano"]))

    # -----------------------------------------------------------------------------------

    def test_increment_is_one_trace(self):
        trace_id, caller = new_ids()
        tp = "00-%s-%s-01" % (trace_id, caller)
        r = self.gw.post("/api/increment", {"counter_name": "tr-inc", "amount": 3},
                         headers={"traceparent": tp})
        harness.assert_json_response(r, 200, "traced increment")
        region = r.json()["region"]
        node_id = r.json()["node_id"]
        rsvc = "counter-" + region

        spans = self.wait_trace(trace_id, lambda s: len(s) >= 3)
        time.sleep(0.3)  # anything more would come in the next export
        spans = self.rx.trace(trace_id)
        self.assertEqual(sorted(svc for svc, _ in spans), sorted(["gateway", "gateway", rsvc]),
                         describe(spans))

        gs = self.one(spans, "gateway", "POST /api/increment", kind=2)
        gc = self.one(spans, "gateway", "POST /increment", kind=3)
        rs = self.one(spans, rsvc, "POST /increment", kind=2)
        # The chain: caller -> gateway server -> gateway client -> region server.
        self.assertEqual(gs.get("parentSpanId"), caller)
        self.assertEqual(gc.get("parentSpanId"), gs["spanId"])
        self.assertEqual(rs.get("parentSpanId"), gc["spanId"])
        self.assertEqual(len({gs["spanId"], gc["spanId"], rs["spanId"], caller}), 4)
        self.assertInside(gc, gs)
        self.assertInside(rs, gc)

        ga = attrs_of(gs["attributes"])
        self.assertEqual(ga["counter.name"], "tr-inc")
        self.assertEqual(ga["counter.amount"], 3)
        self.assertEqual(ga["counter.routed_to"], region)
        self.assertEqual(ga["routing"], "random")
        self.assertEqual(ga["http.method"], "POST")
        self.assertEqual(ga["http.route"], "/api/increment")
        self.assertEqual(ga["http.status_code"], 200)
        self.assertEqual(gs["status"], {})
        ca = attrs_of(gc["attributes"])
        self.assertEqual(ca["counter.routed_to"], region)
        self.assertEqual(ca["counter.name"], "tr-inc")
        self.assertEqual(ca["http.status_code"], 200)
        self.assertEqual(ca["http.url"], self.topo.region(region).url)
        ra = attrs_of(rs["attributes"])
        self.assertEqual(ra["counter.name"], "tr-inc")
        self.assertEqual(ra["counter.amount"], 3)
        self.assertEqual(ra["region"], region)
        self.assertEqual(ra["node_id"], node_id)
        self.assertEqual(ra["http.route"], "/increment")
        self.assertEqual(ra["http.target"], "/increment")
        self.assertEqual(ra["http.status_code"], 200)

        # The resources name the lab's services.
        with self.rx.lock:
            res = [ra for (svc, ra, sp) in self.rx.spans if sp["spanId"] == rs["spanId"]]
        self.assertEqual(res[0]["region"], region)
        self.assertEqual(res[0]["service.instance.id"], node_id)

    def test_no_traceparent_starts_a_trace(self):
        r = self.gw.post("/api/increment", {"counter_name": "tr-new"},
                         headers={"traceparent": "00-zz-bad"})  # invalid: ignored
        harness.assert_json_response(r, 200, "increment without a valid traceparent")
        rsvc = "counter-" + r.json()["region"]
        deadline = time.monotonic() + 8
        gs = None
        while time.monotonic() < deadline and gs is None:
            with self.rx.lock:
                for (svc, _, sp) in self.rx.spans:
                    a = attrs_of(sp["attributes"])
                    if svc == "gateway" and sp["kind"] == 2 and a.get("counter.name") == "tr-new":
                        gs = sp
            time.sleep(0.05)
        self.assertIsNotNone(gs, "no gateway span for counter tr-new")
        self.assertNotIn("parentSpanId", gs)  # a root
        self.assertNotEqual(gs["traceId"], "0" * 32)
        spans = self.wait_trace(gs["traceId"], lambda s: len(s) >= 3)
        rs = self.one(spans, rsvc, "POST /increment")
        gc = self.one(spans, "gateway", "POST /increment")
        self.assertEqual(rs["parentSpanId"], gc["spanId"])
        self.assertEqual(gc["parentSpanId"], gs["spanId"])

    def test_read_through_coordinator_to_every_region(self):
        trace_id, caller = new_ids()
        r = self.gw.get("/api/counter/tr-read",
                        headers={"traceparent": "00-%s-%s-01" % (trace_id, caller)})
        harness.assert_json_response(r, 200, "traced read")
        self.assertEqual(r.json()["healthy_regions"], 3)
        regions = [x.region for x in self.topo.regions]
        spans = self.wait_trace(trace_id, lambda s: len(s) >= 9)
        time.sleep(0.3)
        spans = self.rx.trace(trace_id)
        self.assertEqual(len(spans), 9, describe(spans))

        gs = self.one(spans, "gateway", "GET /api/counter/{name}", kind=2)
        gc = self.one(spans, "gateway", "GET /global/counter/tr-read", kind=3)
        cs = self.one(spans, "coordinator", "GET /global/counter/{name}", kind=2)
        self.assertEqual(gs["parentSpanId"], caller)
        self.assertEqual(gc["parentSpanId"], gs["spanId"])
        self.assertEqual(cs["parentSpanId"], gc["spanId"])
        self.assertEqual(attrs_of(gs["attributes"])["counter.name"], "tr-read")
        self.assertEqual(attrs_of(cs["attributes"])["counter.name"], "tr-read")
        self.assertEqual(attrs_of(cs["attributes"])["http.status_code"], 200)
        self.assertInside(cs, gc)
        clients = [sp for (svc, sp) in spans if svc == "coordinator" and sp["kind"] == 3]
        self.assertEqual(len(clients), 3)
        for c in clients:
            self.assertEqual(c["name"], "GET /counter/tr-read")
            self.assertEqual(c["parentSpanId"], cs["spanId"])
            self.assertInside(c, cs)
        for region in regions:
            rs = self.one(spans, "counter-" + region, "GET /counter/{name}", kind=2)
            self.assertIn(rs["parentSpanId"], [c["spanId"] for c in clients])
            a = attrs_of(rs["attributes"])
            self.assertEqual((a["region"], a["counter.name"], a["http.status_code"]),
                             (region, "tr-read", 200))
            parent = [c for c in clients if c["spanId"] == rs["parentSpanId"]][0]
            self.assertEqual(attrs_of(parent["attributes"])["http.url"],
                             self.topo.region(region).url + "/counter/tr-read")
        # Each region is called once: three distinct parents.
        self.assertEqual(len({sp["parentSpanId"] for (svc, sp) in spans
                              if svc.startswith("counter-")}), 3)

    def test_force_sync_gives_sync_spans(self):
        # A counter only us-west has, so its pushes carry at least one counter.
        uw = self.topo.region("us-west").client()
        self.addCleanup(uw.close)
        uw.post_json("/increment", {"counter_name": "tr-sync", "amount": 5})
        trace_id, caller = new_ids()
        r = self.gw.post("/admin/force-sync",
                         headers={"traceparent": "00-%s-%s-01" % (trace_id, caller)})
        harness.assert_json_response(r, 200, "traced force-sync")
        self.assertEqual(r.json()["regions_synced"], 3)

        def complete(spans):
            # Both ends of each exchange: the client spans (kind 3) and the served ones (2)
            # are exported by different processes, at different moments.
            def n(kind):
                return sum(1 for _, sp in spans if sp["name"] == "POST /sync" and
                           sp["kind"] == kind)
            return (n(3) >= 12 and n(2) >= 12 and
                    sum(1 for _, sp in spans if sp["name"] == "sync round") >= 3)
        spans = self.wait_trace(trace_id, complete)
        by_id = {sp["spanId"]: (svc, sp) for (svc, sp) in spans}
        rounds = [(svc, sp) for (svc, sp) in spans if sp["name"] == "sync round"]
        self.assertEqual(len(rounds), 3, describe(spans))
        node_of = {"counter-" + x.region: x.node_id for x in self.topo.regions}
        for svc, rd in rounds:
            # The round is a child of that region's POST /admin/force-sync span.
            psvc, parent = by_id[rd["parentSpanId"]]
            self.assertEqual((psvc, parent["name"], parent["kind"]),
                             (svc, "POST /admin/force-sync", 2))
            a = attrs_of(rd["attributes"])
            self.assertEqual((a["node_id"], a["sync.peers"], a["sync.trigger"]),
                             (node_of[svc], 2, "request"))
            self.assertEqual(rd["kind"], 1)

        exchanges = [(svc, sp) for (svc, sp) in spans if sp["name"] == "POST /sync" and
                     sp["kind"] == 3]
        served = [(svc, sp) for (svc, sp) in spans if sp["name"] == "POST /sync" and
                  sp["kind"] == 2]
        # First contact: each of the 6 links first pushes nothing, to learn which /sync
        # format the peer speaks (API.md), then pushes its state.
        self.assertEqual(len(exchanges), 12, describe(spans))
        self.assertEqual(len(served), 12, describe(spans))
        west_sent = 0
        for svc, ex in exchanges:
            psvc, parent = by_id[ex["parentSpanId"]]
            self.assertEqual((psvc, parent["name"]), (svc, "sync round"))
            a = attrs_of(ex["attributes"])
            self.assertIn(a["sync.peer"], node_of.values())
            self.assertNotEqual(a["sync.peer"], node_of[svc])
            self.assertEqual(a["http.status_code"], 200)
            self.assertGreaterEqual(a["sync.counters_sent"], 0)
            self.assertGreaterEqual(a["sync.counters_received"], 0)
            # Its peer served it, as a child of this client span.
            peer = [(s, sp) for (s, sp) in served if sp["parentSpanId"] == ex["spanId"]]
            self.assertEqual(len(peer), 1)
            psvc, srv_span = peer[0]
            self.assertEqual(node_of[psvc], a["sync.peer"])
            sa = attrs_of(srv_span["attributes"])
            self.assertEqual(sa["sync.peer"], node_of[svc])
            self.assertEqual(sa["sync.counters_received"], a["sync.counters_sent"])
            self.assertEqual(sa["http.route"], "/sync")
            if svc == "counter-us-west":
                west_sent += a["sync.counters_sent"]
        self.assertGreaterEqual(west_sent, 2)  # tr-sync went to both peers


    def test_strong_increment_reaches_every_replica(self):
        st = self.topo.strong.client()
        self.addCleanup(st.close)
        trace_id, caller = new_ids()
        r = st.post("/increment", {"counter_name": "tr-strong", "amount": 2},
                    headers={"traceparent": "00-%s-%s-01" % (trace_id, caller)})
        harness.assert_json_response(r, 200, "traced strong increment")
        self.assertEqual(r.json()["value"], 2)
        spans = self.wait_trace(trace_id, lambda s: len(s) >= 8)
        time.sleep(0.3)
        spans = self.rx.trace(trace_id)
        self.assertEqual(len(spans), 8, describe(spans))

        ss = self.one(spans, "counter-consistent", "POST /increment", kind=2)
        rd = self.one(spans, "counter-consistent", "strong round", kind=1)
        self.assertEqual(ss["parentSpanId"], caller)
        self.assertEqual(rd["parentSpanId"], ss["spanId"])
        self.assertInside(rd, ss)
        sa = attrs_of(ss["attributes"])
        self.assertEqual((sa["counter.name"], sa["counter.amount"], sa["http.status_code"]),
                         ("tr-strong", 2, 200))
        ra = attrs_of(rd["attributes"])
        self.assertEqual((ra["strong.increments"], ra["strong.counters"], ra["strong.replicas"]),
                         (1, 1, 3))
        self.assertGreaterEqual(ra["strong.acks"], 2)  # a majority decided it
        legs = [sp for (svc, sp) in spans if svc == "counter-consistent" and sp["kind"] == 3]
        self.assertEqual(sorted(sp["name"] for sp in legs), ["POST /strong/accept"] * 3)
        node_of = {x.region: x.node_id for x in self.topo.regions}
        for region in node_of:
            rs = self.one(spans, "counter-" + region, "POST /strong/accept", kind=2)
            leg = [sp for sp in legs if sp["spanId"] == rs["parentSpanId"]]
            self.assertEqual(len(leg), 1, "the %s replica's parent is a leader's message" % region)
            self.assertEqual(leg[0]["parentSpanId"], rd["spanId"])
            la = attrs_of(leg[0]["attributes"])
            self.assertEqual(la["http.url"], self.topo.region(region).url)
            self.assertEqual(la["strong.replica"], node_of[region])
            self.assertEqual(la["http.status_code"], 200)
            self.assertInside(rs, leg[0])
            a = attrs_of(rs["attributes"])
            self.assertEqual((a["region"], a["http.route"], a["http.status_code"]),
                             (region, "/strong/accept", 200))
            self.assertIn("strong.leader", a)


    def test_metrics_with_tracing_on(self):
        """Every service exports the tracer's metrics, and promtool accepts them."""
        self.assertTrue(harness.promtool_path(), "promtool is not installed (Debian package "
                        "prometheus: run scripts/setup --test)")
        for srv in self.topo.servers:
            with srv.client() as c:
                text = c.get("/metrics").text()
            harness.assert_promtool_clean(self, text, srv.name)
            samples = harness.parse_metrics(text)
            for name in ("counterd_trace_spans_exported_total", "counterd_trace_spans_queued"):
                self.assertEqual(len(harness.metric_values(samples, name)), 1,
                                 "%s on %s" % (name, srv.name))
            for reason in ("queue_full", "export_failed"):
                self.assertEqual(harness.metric_values(
                    samples, "counterd_trace_spans_dropped_total", reason=reason), [0.0],
                    "%s drops on %s with a collector that works" % (reason, srv.name))


def describe(spans):
    return "\n" + "\n".join("  %s %s kind=%s id=%s parent=%s" % (
        svc, sp["name"], sp["kind"], sp["spanId"], sp.get("parentSpanId"))
        for svc, sp in spans)


def dropped(client):
    samples = harness.parse_metrics(client.get("/metrics").text())
    out = {}
    for reason in ("queue_full", "export_failed"):
        v = harness.metric_values(samples, "counterd_trace_spans_dropped_total", reason=reason)
        out[reason] = v[0] if v else None
    out["queued"] = (harness.metric_values(samples, "counterd_trace_spans_queued") or [None])[0]
    out["exported"] = (harness.metric_values(samples, "counterd_trace_spans_exported_total")
                       or [None])[0]
    return out


class CollectorTrouble(harness.ServerTestCase):
    """A collector that sleeps, then one that is gone: nothing waits for it."""

    QUEUE = 32

    def increments(self, gw, n, name):
        worst = 0.0
        t0 = time.monotonic()
        for i in range(n):
            t = time.monotonic()
            r = gw.post("/api/increment", {"counter_name": name})
            worst = max(worst, time.monotonic() - t)
            harness.assert_json_response(r, 200, "increment %d with the collector in trouble"
                                         % i)
        return worst, time.monotonic() - t0

    def test_slow_then_gone(self):
        rx = Receiver(delay_s=3.0)
        stopped = []

        def stop_rx():
            if not stopped:
                rx.stop()
        self.addCleanup(stop_rx)
        with harness.environ(OTEL_EXPORTER_OTLP_ENDPOINT=rx.url,
                             OTEL_BSP_SCHEDULE_DELAY="50",
                             OTEL_BSP_MAX_QUEUE_SIZE=str(self.QUEUE),
                             OTEL_BSP_MAX_EXPORT_BATCH_SIZE="8",
                             OTEL_BSP_EXPORT_TIMEOUT="1500"):
            topo = harness.Topology()
            topo.start(self.addCleanup)
        gw = topo.gateway.client()
        self.addCleanup(gw.close)

        # The collector holds every export for 3 s; the exporter gives up after 1.5 s. An
        # export that held the loop would hold an increment that long.
        worst, total = self.increments(gw, 300, "tr-slow")
        self.assertLess(worst, 1.0, "an increment waited for the collector")
        deadline = time.monotonic() + 5
        while True:
            d = dropped(gw)
            if (d["export_failed"] and d["queue_full"]) or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        self.assertGreater(d["queue_full"], 0, d)  # 600 spans against a queue of 32
        self.assertGreater(d["export_failed"], 0, d)  # the exports that timed out
        self.assertLessEqual(d["queued"], self.QUEUE)
        self.assertEqual(d["exported"], 0)
        before = d["queue_full"] + d["export_failed"]
        # The region behind it drops too, by the same rules.
        with topo.region("us-east").client() as rc:
            rd = dropped(rc)
        self.assertGreater((rd["queue_full"] or 0) + (rd["export_failed"] or 0), 0, rd)
        # /health does not wait either.
        t = time.monotonic()
        gw.get_json("/health")
        self.assertLess(time.monotonic() - t, 0.5)

        # The collector is gone: its port is closed, exports are refused at once.
        rx.stop()
        stopped.append(True)
        worst, total = self.increments(gw, 300, "tr-gone")
        self.assertLess(worst, 1.0, "an increment waited for a closed collector")
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            d = dropped(gw)
            if d["queue_full"] + d["export_failed"] >= before + 600:
                break
            time.sleep(0.1)
        # Every span of the 300 increments (a server and a client span each) was dropped.
        self.assertGreaterEqual(d["queue_full"] + d["export_failed"], before + 600, d)
        self.assertLessEqual(d["queued"], self.QUEUE)
        self.assertEqual(d["exported"], 0)


if __name__ == "__main__":
    unittest.main(verbosity=2)
