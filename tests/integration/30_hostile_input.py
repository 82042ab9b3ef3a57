"""
30_hostile_input.py - hostile clients and hostile bytes thrown at a live region node.

Every case is followed by the same check: the node still answers GET /health and a canary
counter, brought to a known value before anything hostile happened, reads exactly that
value. The servers are stopped with SIGTERM at the end and must exit cleanly (status 0, no
sanitizer report: the harness checks that).

Cases: 10,000 connections against --max-conns 5000, 50 slow-loris clients, bodies of
10 MB / 17 MB announced, 1,000-deep JSON, invalid UTF-8 and NUL in counter names (body and
URL), hostile amounts, garbage pipelined after a good request, hostile /sync bodies.
"""

import errno
import json
import random
import resource
import selectors
import socket
import threading
import time
import unittest

import harness
from harness import http_request_bytes as req_bytes

REQUEST_TIMEOUT_MS = 2000
CANARY = "canary"
CANARY_VALUE = 1234  # reached by several increments before the hostile cases
NODE_ID = "us-east-1"
REGION = "us-east"


def parse_raw_response(data):
    """(status, headers, body) of one complete HTTP/1.1 response in data (bytes)."""
    head, sep, rest = data.partition(b"\r\n\r\n")
    if not sep:
        raise AssertionError("no end of headers in %r" % data[:300])
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    n = int(headers.get("content-length", len(rest)))
    if len(rest) != n:
        raise AssertionError("body of %d bytes, Content-Length %d: %r" % (len(rest), n, data))
    return status, headers, rest


class HostileBase(harness.ServerTestCase):
    """Helpers shared by the two test classes: canary set-up and the after-each check."""

    def setup_canary(self, srv):
        with srv.client() as c:
            total = 0
            for amount in (1000, 200, 30, 4):
                r = c.post_json("/increment", {"counter_name": CANARY, "amount": amount})
                total += amount
                self.assertEqual(r["total_count"], total, "canary set-up: %r" % r)
        self.assertEqual(total, CANARY_VALUE)

    def assertIntact(self, srv, what):
        """The node answers /health and the canary is exactly CANARY_VALUE."""
        self.assertTrue(srv.alive(), "%s: the server process is gone (exit status %s)\n"
                        "--- log tail ---\n%s" % (what, srv.proc and srv.proc.poll(),
                                                  harness.log_tail(srv.log_path)))
        with srv.client() as c:
            r = c.get("/health")
            self.assertEqual(r.status, 200, "%s: GET /health afterwards: %r" % (what, r))
            self.assertEqual(r.json()["status"], "ok")
            got = c.get_json("/counter/%s" % CANARY)
        self.assertJsonEqual(got, {"counter": CANARY, "local_count": CANARY_VALUE,
                                   "total_count": CANARY_VALUE,
                                   "nodes": {NODE_ID: CANARY_VALUE},
                                   "region": REGION, "node_id": NODE_ID},
                             "%s: the canary changed" % what)

    def counter_names(self, srv):
        with srv.client() as c:
            return set(c.get_json("/counters")["counters"])


class HostileInput(HostileBase):
    @classmethod
    def setUpClass(cls):
        cls.srv = cls.start_class_server(
            ["--region", REGION, "--node-id", NODE_ID,
             "--request-timeout-ms", str(REQUEST_TIMEOUT_MS),
             "--sync-interval-ms", "60000"], name="hostile")

    def setUp(self):
        super().setUp()
        if not getattr(type(self), "_canary_done", False):
            self.setup_canary(self.srv)
            type(self)._canary_done = True
        self.assertIntact(self.srv, "before the test")

    # Helpers ---------------------------------------------------------------------------

    def post_raw(self, path, body, headers=None):
        """POST with body as exact bytes (a fresh connection, Content-Type JSON)."""
        with self.srv.raw() as raw:
            raw.try_send(req_bytes("POST", path, body, headers=headers))
            return raw.read_response()

    def get_path(self, path):
        with self.srv.raw() as raw:
            raw.send(req_bytes("GET", path))
            return raw.read_response()

    # Slow-loris ------------------------------------------------------------------------

    def test_slow_loris(self):
        n_clients = 50
        # ~300 bytes of request: one byte every 200 ms would take a minute to complete.
        payload = req_bytes("GET", "/health", headers={"X-Pad": "p" * 250})
        socks, sel = [], selectors.DefaultSelector()
        done = {}  # index -> (elapsed s, bytes received)
        got = {i: b"" for i in range(n_clients)}
        first_byte = {}
        try:
            for i in range(n_clients):
                s = socket.create_connection((harness.HOST, self.srv.port), timeout=5)
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                s.setblocking(False)
                socks.append(s)
                sel.register(s, selectors.EVENT_READ, i)

            probe_lat, probe_err = [], []
            stop = threading.Event()

            def probe():
                # A normal client keeps incrementing while the loris trickle.
                try:
                    with self.srv.client() as c:
                        k = 0
                        while not stop.is_set():
                            t0 = time.monotonic()
                            r = c.post("/increment", {"counter_name": "loris_probe",
                                                      "amount": 1})
                            probe_lat.append(time.monotonic() - t0)
                            k += 1
                            if r.status != 200 or r.json()["local_count"] != k:
                                probe_err.append(r)
                                return
                            time.sleep(0.02)
                except Exception as e:  # reported below
                    probe_err.append(e)

            th = threading.Thread(target=probe, daemon=True)
            th.start()
            pos = 0
            t_start = time.monotonic()
            next_tick = t_start
            while len(done) < n_clients and time.monotonic() - t_start < 8.0:
                now = time.monotonic()
                if now >= next_tick:
                    if pos < len(payload):
                        for i, s in enumerate(socks):
                            if i in done:
                                continue
                            try:
                                s.send(payload[pos:pos + 1])
                                first_byte.setdefault(i, time.monotonic())
                            except (BlockingIOError, BrokenPipeError, ConnectionResetError):
                                pass
                        pos += 1
                    next_tick += 0.2
                for key, _ in sel.select(timeout=max(0.0, min(0.05, next_tick - now))):
                    i = key.data
                    try:
                        chunk = key.fileobj.recv(65536)
                    except ConnectionResetError:
                        chunk = b""
                    except BlockingIOError:
                        continue
                    if chunk:
                        got[i] += chunk
                    else:
                        done[i] = time.monotonic() - first_byte.get(i, t_start)
                        sel.unregister(key.fileobj)
            stop.set()
            th.join(5)
        finally:
            sel.close()
            for s in socks:
                s.close()

        self.assertEqual(len(done), n_clients,
                         "slow-loris clients still open after 8 s (request timeout %d ms): %d "
                         "of %d closed" % (REQUEST_TIMEOUT_MS, len(done), n_clients))
        statuses = {}
        for i in range(n_clients):
            data = got[i]
            if data:  # 408 timeout, then closed; a close without bytes is also fine
                status, headers, body = parse_raw_response(data)
                self.assertEqual(status, 408, "loris %d: answer %r" % (i, data[:300]))
                self.assertEqual(json.loads(body)["error"], "timeout", "loris %d" % i)
            statuses[data[:12]] = statuses.get(data[:12], 0) + 1
        slowest = max(done.values())
        fastest = min(done.values())
        print("\n[30_hostile] slow-loris: %r; closed after %.2f-%.2f s; probe: %d increments, "
              "max %.1f ms" % (statuses, fastest, slowest, len(probe_lat),
                               1000 * max(probe_lat or [0])))
        self.assertLess(slowest, 4.0, "a slow-loris client was closed only after %.2f s "
                        "(--request-timeout-ms %d)" % (slowest, REQUEST_TIMEOUT_MS))
        self.assertGreater(fastest, 0.5 * REQUEST_TIMEOUT_MS / 1000,
                           "a slow-loris client was closed after %.2f s, before the "
                           "request timeout" % fastest)
        self.assertEqual(probe_err, [], "the normal client failed during the trickle")
        self.assertGreater(len(probe_lat), 10, "too few probe increments: %r" % probe_lat)
        slow = [round(x * 1000, 1) for x in probe_lat if x >= 0.2]
        self.assertEqual(slow, [], "increments of a normal client took >= 200 ms (ms) "
                         "while 50 slow-loris clients trickled")
        self.assertIntact(self.srv, "after slow-loris")

    # Huge bodies -----------------------------------------------------------------------

    def check_huge_body(self, path, declared):
        head = ("POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                "Content-Length: %d\r\n\r\n" % (path, declared)).encode()
        chunk = b"[" + b" " * 65535
        with self.srv.raw() as raw:
            s = raw.sock
            t0 = time.monotonic()
            s.sendall(head)
            s.setblocking(False)
            sent, closed = 0, None
            sel = selectors.DefaultSelector()
            sel.register(s, selectors.EVENT_READ | selectors.EVENT_WRITE)
            try:
                while sent < declared and time.monotonic() - t0 < 5.0:
                    events = sel.select(timeout=0.1)
                    if any(ev & selectors.EVENT_READ for _, ev in events):
                        break  # the answer (or a close) is there
                    if any(ev & selectors.EVENT_WRITE for _, ev in events):
                        try:
                            sent += s.send(chunk[:min(len(chunk), declared - sent)])
                        except BlockingIOError:
                            pass
                        except (BrokenPipeError, ConnectionResetError) as e:
                            closed = e
                            break
            finally:
                sel.close()
                s.setblocking(True)
                s.settimeout(5.0)
            r = raw.read_response()
            elapsed = time.monotonic() - t0
            print("\n[30_hostile] POST %s Content-Length %d: answered %d after %.3f s, "
                  "%d body bytes sent%s" % (path, declared, r.status, elapsed, sent,
                                            " (%r)" % closed if closed else ""))
            self.assertError(r, 413, "too_large", "POST %s with Content-Length %d"
                             % (path, declared))
            self.assertLess(elapsed, 2.0, "413 for POST %s came after %.2f s" % (path, elapsed))
            self.assertLess(sent, declared, "the server read the whole %d-byte body before "
                            "answering 413" % declared)
            self.assertTrue(raw.closed_by_peer(2.0), "connection not closed after 413")

    def test_body_10mb_increment(self):
        before = self.counter_names(self.srv)
        self.check_huge_body("/increment", 10 * 1024 * 1024)
        self.assertEqual(self.counter_names(self.srv), before)
        self.assertIntact(self.srv, "after a 10 MB /increment body")

    def test_body_17mb_sync(self):
        before = self.counter_names(self.srv)
        self.check_huge_body("/sync", 17 * 1024 * 1024)
        self.assertEqual(self.counter_names(self.srv), before)
        self.assertIntact(self.srv, "after a 17 MB /sync body")

    # Deep nesting ----------------------------------------------------------------------

    def test_deep_nesting(self):
        depth = 1000
        arrays = "[" * depth + "]" * depth
        objects = '{"a":' * depth + "1" + "}" * depth
        bodies = {
            "arrays": arrays,
            "objects": objects,
            "arrays as amount": '{"counter_name":"deep","amount":%s}' % arrays,
            "objects as counts": '{"node_id":"us-west-1","counts":%s}' % objects,
        }
        before = self.counter_names(self.srv)
        for path in ("/increment", "/sync"):
            for what, body in bodies.items():
                r = self.post_raw(path, body.encode())
                self.assertError(r, 400, "bad_json", "POST %s, %d-deep %s" % (path, depth, what))
                self.assertIntact(self.srv, "after POST %s with %d-deep %s" % (path, depth, what))
        self.assertEqual(self.counter_names(self.srv), before, "a counter was created")

    # Names: invalid UTF-8 and NUL ------------------------------------------------------

    def test_bad_names_in_body(self):
        # Not JSON text (RFC 8259: UTF-8; control characters must be escaped): bad_json.
        # A lone surrogate escape has no UTF-8 form either: the parser rejects it
        # (core/base/json.h: invalid UTF-8 is rejected), so it is bad_json too.
        # Valid JSON strings that break the name rule: bad_name.
        cases = [
            (b'"a\xffb"', "bad_json", "raw byte 0xff"),
            (b'"a\xc0\x80b"', "bad_json", "raw overlong NUL 0xc0 0x80"),
            (b'"a\xed\xa0\x80b"', "bad_json", "raw UTF-8-encoded surrogate"),
            (b'"a\\ud800b"', "bad_json", "escaped lone surrogate \\ud800"),
            (b'"a\\udc00"', "bad_json", "escaped lone low surrogate \\udc00"),
            (b'"a\x00b"', "bad_json", "raw NUL byte"),
            (b'"a\\u0000b"', "bad_name", "escaped NUL \\u0000"),
            (b'"\\u0000"', "bad_name", "only an escaped NUL"),
            (b'"a\\ud800\\udc00"', "bad_name", "valid surrogate pair (U+10000)"),
            (b'"caf\xc3\xa9"', "bad_name", "valid UTF-8 outside the name alphabet"),
            (b'"a/b"', "bad_name", "slash"),
            (b'"a b"', "bad_name", "space"),
            (b'""', "bad_name", "empty"),
            (b'"' + b"x" * 201 + b'"', "bad_name", "201 bytes"),
        ]
        before = self.counter_names(self.srv)
        for name, code, what in cases:
            body = b'{"counter_name":' + name + b',"amount":1}'
            r = self.post_raw("/increment", body)
            self.assertError(r, 400, code, "POST /increment counter_name %s" % what)
        # The same names as keys of a /sync body ("a/b" is a store key there, counter b of
        # namespace a: a key with a second slash is not one).
        for name, code, what in cases:
            name = b'"a/b/c"' if what == "slash" else name
            body = (b'{"node_id":"us-west-1","timestamp":1,"counts":{' + name +
                    b':{"us-west-1":1}}}')
            r = self.post_raw("/sync", body)
            if code == "bad_json":
                self.assertError(r, 400, code, "POST /sync counter name %s" % what)
                continue
            # A well-formed message: that entry is skipped and listed, the rest merges.
            self.assertEqual(r.status, 200, "POST /sync counter name %s: %r" % (what, r))
            self.assertEqual([x["reason"] for x in r.json()["rejected"]], ["bad_name"], what)
        self.assertEqual(self.counter_names(self.srv), before, "a counter was created")
        self.assertIntact(self.srv, "after bad names in bodies")

    def test_bad_names_in_url(self):
        cases = ["/counter/%00", "/counter/a%00b", "/counter/%ff", "/counter/a%2fb",
                 "/counter/a%2Fb", "/counter/%c0%80", "/counter/%ed%a0%80",
                 "/counter/caf%C3%A9", "/counter/a%20b", "/counter/" + "x" * 201,
                 "/counter/%zz", "/counter/%"]
        before = self.counter_names(self.srv)
        for path in cases:
            r = self.get_path(path)
            self.assertError(r, 400, "bad_name", "GET %s" % path)
        self.assertEqual(self.counter_names(self.srv), before, "reading created a counter")
        self.assertIntact(self.srv, "after bad names in URLs")

    # Amounts ---------------------------------------------------------------------------

    def read(self, name):
        with self.srv.client() as c:
            return c.get_json("/counter/%s" % name)

    def test_amounts(self):
        with self.srv.client() as c:
            # -1 is a valid decrement.
            r = c.post_json("/increment", {"counter_name": "amt_dec", "amount": 5})
            r = c.post_json("/increment", {"counter_name": "amt_dec", "amount": -1})
            self.assertEqual((r["local_count"], r["total_count"]), (4, 4), "+5 then -1: %r" % r)
            r = c.post_json("/increment", {"counter_name": "amt_neg", "amount": -1})
            self.assertEqual((r["local_count"], r["total_count"]), (-1, -1),
                             "-1 on a fresh counter: %r" % r)
            self.assertEqual(self.read("amt_neg")["nodes"], {NODE_ID: -1})

            # -(2**63): on a fresh counter and on the canary, 409 and nothing changes.
            before = self.counter_names(self.srv)
            r = c.post("/increment", {"counter_name": "amt_min", "amount": -(2 ** 63)})
            self.assertError(r, 409, "overflow", "amount -(2**63) on a fresh counter")
            self.assertNotIn("amt_min", self.counter_names(self.srv),
                             "a 409 created the counter")
            # On the canary (1234): the value would stay in range, but this node's total of
            # decrements (API.md /sync "decrements") would be 2**63: out of range.
            r = c.post("/increment", {"counter_name": CANARY, "amount": -(2 ** 63)})
            self.assertError(r, 409, "overflow", "amount -(2**63) on the canary")
            self.assertIntact(self.srv, "after -(2**63) on the canary")

            # Out of range or not integers: 400 bad_field, nothing created.
            bad = [("2**63", str(2 ** 63)), ("2**64", str(2 ** 64)),
                   ("-(2**63)-1", str(-(2 ** 63) - 1)), ("10**30", "1" + "0" * 30),
                   ('"1"', '"1"'), ("1.0", "1.0"), ("1e2", "1e2"), ("1E0", "1E0"),
                   ("-0.0", "-0.0"), ("true", "true"), ("[1]", "[1]"), ('{"v":1}', '{"v":1}')]
            for what, text in bad:
                r = c.post("/increment", '{"counter_name":"amt_bad","amount":%s}' % text,
                           raw_body=True)
                self.assertError(r, 400, "bad_field", "amount %s" % what)
            self.assertNotIn("amt_bad", self.counter_names(self.srv), "a 400 created a counter")
            r = c.post("/increment", '{"counter_name":"canary","amount":1.0}', raw_body=True)
            self.assertError(r, 400, "bad_field", "amount 1.0 on the canary")

            # The edges of the range: 2**63-1 is accepted, one more is 409.
            r = c.post_json("/increment", {"counter_name": "amt_max", "amount": 2 ** 63 - 1})
            self.assertEqual(r["total_count"], 2 ** 63 - 1)
            r = c.post("/increment", {"counter_name": "amt_max", "amount": 1})
            self.assertError(r, 409, "overflow", "+1 on a counter at 2**63-1")
            self.assertEqual(self.read("amt_max")["total_count"], 2 ** 63 - 1)

            # null: API.md makes amount optional with default 1; null reads as absent.
            r = c.post("/increment", {"counter_name": "amt_null", "amount": None})
            if r.status == 200:
                print("\n[30_hostile] amount null: default 1")
                self.assertEqual((r.json()["local_count"], r.json()["total_count"]), (1, 1),
                                 "amount null accepted but did not count 1: %r" % r)
                self.assertEqual(self.read("amt_null")["total_count"], 1)
            else:
                print("\n[30_hostile] amount null: 400 bad_field")
                self.assertError(r, 400, "bad_field", "amount null")
                self.assertNotIn("amt_null", self.counter_names(self.srv))
        self.assertIntact(self.srv, "after hostile amounts")

    # Pipelined garbage -----------------------------------------------------------------

    def test_pipelined_garbage(self):
        rnd = random.Random(30)
        garbages = [
            b"GARBAGE\x01\x02\x03 / HTTP/1.1\r\n\r\n",
            b"\x00" + bytes(rnd.randrange(256) for _ in range(200)) + b"\r\n\r\n",
            b"GET /health HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n",
            b"POST /increment HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"zz\r\n",
        ]
        for n, garbage in enumerate(garbages):
            what = "garbage #%d %r" % (n, garbage[:40])
            with self.srv.raw() as raw:
                raw.send(req_bytes("GET", "/health") + garbage)
                r1 = raw.read_response()
                self.assertEqual(r1.status, 200, "%s: the good request before it: %r"
                                 % (what, r1))
                self.assertEqual(r1.json()["status"], "ok")
                r2 = raw.read_response()
                self.assertError(r2, 400, "bad_request", what)
                self.assertTrue(raw.closed_by_peer(2.0), "%s: not closed after 400" % what)
            self.assertIntact(self.srv, "after %s" % what)

        # A valid increment first: only it counts.
        with self.srv.raw() as raw:
            raw.send(req_bytes("POST", "/increment", {"counter_name": "pipe_g", "amount": 7})
                     + b"\xff\xfe GARBAGE\r\n\r\n"
                     + req_bytes("POST", "/increment", {"counter_name": "pipe_g", "amount": 100}))
            r1 = raw.read_response()
            self.assertEqual(r1.status, 200, "valid increment before garbage: %r" % r1)
            self.assertEqual(r1.json()["local_count"], 7)
            self.assertError(raw.read_response(), 400, "bad_request", "garbage after increment")
            self.assertTrue(raw.closed_by_peer(2.0), "not closed after 400")
        self.assertEqual(self.read("pipe_g")["total_count"], 7,
                         "the request after the garbage was applied")
        self.assertIntact(self.srv, "after garbage after an increment")

    # Hostile /sync bodies --------------------------------------------------------------

    def test_sync_hostile_bodies(self):
        ts = 1700000000
        name201 = "s" * 201

        def body(counts, node_id="us-west-1", **extra):
            d = {"node_id": node_id, "timestamp": ts}
            if counts is not _ABSENT:
                d["counts"] = counts
            d.update(extra)
            return json.dumps(d)

        cases = [
            (body([]), "bad_field", "counts an array"),
            (body("views"), "bad_field", "counts a string"),
            (body(5), "bad_field", "counts a number"),
            (body(None), "bad_field", "counts null"),
            (body(_ABSENT), "bad_field", "counts missing"),
            (body({"sx_sp": {"us-west-1": 1}}, node_id="us west 1"), "bad_field",
             "node_id with spaces"),
            (body({"sx_sp2": {"us-west-1": 1}}, node_id=""), "bad_field", "empty node_id"),
            (body({"sx_sp3": {"us-west-1": 1}}, node_id=5), "bad_field", "node_id a number"),
            (body({"sx_dec2": {"us-west-1": 3}}, decrements=[1]), "bad_field",
             "decrements an array"),
        ]
        before = self.counter_names(self.srv)
        for text, code, what in cases:
            r = self.post_raw("/sync", text.encode())
            self.assertError(r, 400, code, "POST /sync with %s" % what)
            after = self.counter_names(self.srv)
            self.assertEqual(after, before, "POST /sync with %s merged something: new "
                             "counters %r" % (what, sorted(after - before)))
        # Entries counterd cannot hold are skipped and listed; the message is answered 200.
        skipped = [
            (body({"sx_neg": {"us-west-1": -5}}), "negative", "negative entry"),
            (body({"sx_float": {"us-west-1": 1.5}}), "not_an_integer", "float entry"),
            (body({"sx_float1": {"us-west-1": 1.0}}), "not_an_integer", "float entry 1.0"),
            ('{"node_id":"us-west-1","timestamp":1,"counts":{"sx_exp":{"us-west-1":1e2}}}',
             "not_an_integer", "entry 1e2"),
            (body({"sx_str": {"us-west-1": "5"}}), "not_an_integer", "string entry"),
            (body({"sx_null": {"us-west-1": None}}), "not_an_integer", "null entry"),
            (body({"sx_bool": {"us-west-1": True}}), "not_an_integer", "true entry"),
            (body({"sx_huge": {"us-west-1": 2 ** 63}}), "out_of_range", "entry 2**63"),
            (body({"sx_huge2": {"us-west-1": 2 ** 64}}), "out_of_range", "entry 2**64"),
            (body({"sx_vec": [1, 2]}), "not_an_object", "a counter's entries an array"),
            (body({"sx_vec2": 5}), "not_an_object", "a counter's entries a number"),
            (body({name201: {"us-west-1": 1}}), "bad_name", "counter name of 201 bytes"),
            (body({"sx_sp4": {"us west": 3}}), "bad_node_id", "entry node id with spaces"),
            (body({"sx_sp5": {"": 3}}), "bad_node_id", "empty entry node id"),
            (body({"sx_sp6": {"n" * 201: 3}}), "bad_node_id", "entry node id of 201 bytes"),
        ]
        for text, reason, what in skipped:
            r = self.post_raw("/sync", text.encode())
            self.assertEqual(r.status, 200, "POST /sync with %s: %r" % (what, r))
            a = r.json()
            self.assertEqual(([x["reason"] for x in a["rejected"]], a["rejected_count"]),
                             ([reason], 1), "POST /sync with %s: %r" % (what, a))
            self.assertEqual(self.counter_names(self.srv), before,
                             "POST /sync with %s created a counter" % what)
        # A negative decrement is skipped; its counter's count still merges.
        r = self.post_raw("/sync", body({"sx_dec": {"us-west-1": 3}},
                                        decrements={"sx_dec": {"us-west-1": -1}}).encode())
        self.assertEqual([x["reason"] for x in r.json()["rejected"]], ["negative"])
        self.assertEqual(self.read("sx_dec")["nodes"], {"us-west-1": 3})
        # Next to a bad entry, a good counter merges.
        r = self.post_raw("/sync", body({"sx_good": {"us-west-1": 3},
                                         "sx_bad": {"us-west-1": -1}}).encode())
        self.assertEqual(r.status, 200)
        self.assertEqual(self.read("sx_good")["nodes"], {"us-west-1": 3})
        self.assertEqual(self.read("sx_bad")["nodes"], {})
        # A counter given twice: both merge (per node, the larger).
        r = self.post_raw("/sync", b'{"node_id":"us-west-1","counts":{"sx_dup":{"a":1},'
                                   b'"sx_dup":{"a":2}}}')
        self.assertEqual(r.status, 200)
        self.assertEqual(self.read("sx_dup")["nodes"], {"a": 2})
        self.assertIntact(self.srv, "after hostile /sync bodies")
        # And a well-formed /sync still merges (the node was not just refusing everything).
        r = self.post_raw("/sync", body({"sx_ok": {"us-west-1": 3}}).encode())
        self.assertEqual(r.status, 200, "a valid /sync after the hostile ones: %r" % r)
        self.assertEqual(self.read("sx_ok")["nodes"], {"us-west-1": 3})


_ABSENT = object()


class ConnectionFlood(HostileBase):
    N_CONNS = 10000
    CAP = 5000

    def test_10k_idle_connections(self):
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        need = self.N_CONNS + 200
        if hard != resource.RLIM_INFINITY and hard < need:
            self.skipTest("RLIMIT_NOFILE hard limit %d < %d" % (hard, need))
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # the server inherits it
        srv = self.start_server(["--region", REGION, "--node-id", NODE_ID,
                                 "--max-conns", str(self.CAP), "--sync-interval-ms", "60000"],
                                name="flood")
        self.setup_canary(srv)
        self.assertIntact(srv, "before the flood")
        time.sleep(0.3)  # the canary's connections are gone on the server side too

        t0 = time.monotonic()
        socks = []
        ep = selectors.DefaultSelector()
        data = {}
        closed = {}  # index -> seconds after t0
        errors = {}
        try:
            for i in range(self.N_CONNS):
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                s.setblocking(False)
                rc = s.connect_ex((harness.HOST, srv.port))
                if rc not in (0, errno.EINPROGRESS):
                    errors[i] = errno.errorcode.get(rc, rc)
                socks.append(s)
                ep.register(s, selectors.EVENT_READ, i)
                data[i] = b""
                # Drain as we go so that the rejected ones do not pile up.
                if i % 500 == 499:
                    self._drain(ep, data, closed, errors, t0, 0)
            t_opened = time.monotonic() - t0
            want_rejected = self.N_CONNS - self.CAP
            deadline = time.monotonic() + 12.0
            while len(closed) + len(errors) < want_rejected and time.monotonic() < deadline:
                self._drain(ep, data, closed, errors, t0, 0.1)
            # Anything else still arriving would show up here.
            self._drain(ep, data, closed, errors, t0, 0.5)
            t_settled = time.monotonic() - t0

            held = [i for i in range(self.N_CONNS) if i not in closed and i not in errors]
            print("\n[30_hostile] flood: %d connections opened in %.2f s, settled at %.2f s: "
                  "%d held (%d of them among the first %d), %d closed by the server, "
                  "%d connect errors %r" % (self.N_CONNS, t_opened, t_settled, len(held),
                                            sum(1 for i in held if i < self.CAP), self.CAP,
                                            len(closed), len(errors),
                                            sorted(set(errors.values()))[:5]))
            self.assertEqual(errors, {}, "connect errors")
            self.assertEqual(len(held), self.CAP, "connections held open with --max-conns %d"
                             % self.CAP)
            self.assertEqual(len(closed), want_rejected, "connections refused and closed")
            talked = [i for i in held if data[i]]
            self.assertEqual(talked, [], "held idle connections received bytes: %r"
                             % [data[i][:80] for i in talked[:3]])
            for i in closed:
                self.assertTrue(data[i].startswith(b"HTTP/1.1 503 "),
                                "refused connection %d got %r" % (i, data[i][:200]))
            for i in random.Random(5).sample(sorted(closed), 25):
                status, headers, body = parse_raw_response(data[i])
                self.assertEqual(status, 503)
                self.assertTrue(headers.get("content-type", "").startswith("application/json"),
                                "refused connection %d: %r" % (i, headers))
                self.assertEqual(json.loads(body)["error"], "unavailable",
                                 "refused connection %d: %r" % (i, body))

            # A new client while all are held: 503 unavailable.
            with srv.raw() as extra:
                # (RawConn.readable uses select(), unusable with fds over 1024 here.)
                one = selectors.DefaultSelector()
                one.register(extra.sock, selectors.EVENT_READ)
                if not one.select(timeout=1.0):  # it may answer at once, or to a request
                    extra.try_send(req_bytes("GET", "/health"))
                one.close()
                r = extra.read_response()
                self.assertError(r, 503, "unavailable", "a new client while %d are held"
                                 % self.CAP)
        finally:
            ep.close()
            for s in socks:
                s.close()
        t_closed = time.monotonic()
        while True:
            try:
                with srv.raw(timeout=1.0) as c:
                    c.send(req_bytes("GET", "/health"))
                    r = c.read_response()
                if r.status == 200:
                    break
            except (OSError, AssertionError) as e:
                r = e
            if time.monotonic() - t_closed > 2.0:
                self.fail("GET /health 2 s after closing all connections: %r" % (r,))
            time.sleep(0.1)
        print("[30_hostile] flood: /health answered %.2f s after closing; total %.1f s"
              % (time.monotonic() - t_closed, time.monotonic() - t0))
        self.assertLess(time.monotonic() - t0, 20.0, "the flood case took too long")
        self.assertIntact(srv, "after the 10,000-connection flood")

    @staticmethod
    def _drain(ep, data, closed, errors, t0, timeout):
        for key, ev in ep.select(timeout=timeout):
            i = key.data
            s = key.fileobj
            try:
                chunk = s.recv(65536)
            except BlockingIOError:
                continue
            except ConnectionResetError:
                chunk = b""
            except OSError as e:
                errors[i] = errno.errorcode.get(e.errno, e.errno)
                ep.unregister(s)
                continue
            if chunk:
                data[i] += chunk
            else:
                closed[i] = time.monotonic() - t0
                ep.unregister(s)


if __name__ == "__main__":
    unittest.main()
