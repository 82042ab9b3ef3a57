"""
82_strong_etcd.py - the strong role on etcd (--strong-backend etcd) against a real
single-member etcd (etcdlab.py):

- the strong API answers as with the embedded backend (/increment, /counter, /counters,
  /v1 add, add-and-get, GET, listing, clear, delete, tokens), plus "backend":"etcd", and
  etcd holds what the answers say under the documented keys;
- concurrent increments of one hot counter sum exactly, and go out in batches (group
  commit);
- a change whose answer never came back (etcd applied it; a proxy drops the answer) is
  503 ambiguous, and its retry with the same token applies nothing again: "duplicate";
- with etcd down, changes are 503 no_quorum naming the endpoint, reads 503 too.
"""

import json
import os
import socket
import threading
import unittest

import etcdlab
import harness

V1 = "/v1/counters/"


class DropAnswers:
    """A TCP proxy to etcd that forwards requests, and once armed throws the answers away:
    what it carries is applied, and the sender never hears so."""

    def __init__(self, upstream_port):
        self.upstream = upstream_port
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((harness.HOST, 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.conns = []
        self.stopped = False
        self.armed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.stopped:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            u = socket.create_connection((harness.HOST, self.upstream))
            self.conns += [c, u]
            threading.Thread(target=self._pump, args=(c, u), daemon=True).start()
            threading.Thread(target=self._pump, args=(u, c), daemon=True).start()

    def _pump(self, src, dst):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    return
                if src in self.conns[1::2] and self.armed:
                    continue
                dst.sendall(data)
        except OSError:
            return

    def close(self):
        self.stopped = True
        self.sock.close()
        for c in self.conns:
            c.close()


class StrongEtcdTest(harness.ServerTestCase):
    @classmethod
    def setUpClass(cls):
        cls.etcd = etcdlab.Cluster(1).start()
        cls.url = cls.etcd.client_urls[0]

    @classmethod
    def tearDownClass(cls):
        cls.etcd.stop()

    def strong(self, prefix, endpoints=None, timeout_ms=2000):
        return self.start_server(["--role", "strong", "--strong-backend", "etcd", "--etcd",
                                  endpoints or self.url, "--etcd-prefix", prefix,
                                  "--etcd-timeout-ms", str(timeout_ms)], name="strong-etcd")

    def test_api_answers_as_embedded(self):
        p = "/t-api/"
        srv = self.strong(p)
        with srv.client() as c:
            h = c.get_json("/health")
            self.assertEqual(h["backend"], "etcd")
            r = c.post_json("/increment", {"counter_name": "hot", "amount": 3})
            self.assertEqual((r["counter"], r["value"], r["consistency"], r["backend"]),
                             ("hot", 3, "strong", "etcd"))
            self.assertEqual(c.post_json("/increment", {"counter_name": "hot", "amount": 4})
                             ["value"], 7)
            self.assertEqual(c.get_json("/counter/hot")["value"], 7)
            self.assertEqual(c.get_json("/counter/never")["value"], 0)
            self.assertEqual(c.get_json("/counters")["counters"], {"hot": 7})
            r = c.post_json(V1 + "ns1/a/add-and-get", {"delta": 5, "idempotency_token": "t1"})
            self.assertEqual((r["count"], r["delta"], r.get("duplicate")), (5, 5, None))
            r = c.post_json(V1 + "ns1/a/add-and-get", {"delta": 5, "idempotency_token": "t1"})
            self.assertEqual((r["count"], r.get("duplicate")), (5, True))
            r = c.post_json(V1 + "ns1/a/add", {"delta": -2, "idempotency_token": "t2"})
            self.assertNotIn("count", r)
            self.assertEqual(c.get_json(V1 + "ns1/a")["count"], 3)
            lst = c.get_json(V1 + "ns1")
            self.assertEqual((lst["counters"], lst["total_counters"]),
                             ({"a": {"count": 3, "nodes": {}}}, 1))
            self.assertEqual(c.get_json(V1 + "default")["counters"],
                             {"hot": {"count": 7, "nodes": {}}})
            self.assertEqual(c.get_json("/counters")["counters"], {"hot": 7, "ns1/a": 3})
            r = c.post_json(V1 + "ns1/a/clear", {"idempotency_token": "t3"})
            self.assertEqual((r["count"], r["cleared"]), (0, 3))
            c.post_json(V1 + "ns1/a/add", {"delta": 9})
            r = c.post_json(V1 + "ns1/a/clear", {"idempotency_token": "t3"})
            self.assertEqual((r["count"], r["cleared"], r["duplicate"]), (9, 3, True))
            self.assertTrue(c.request("DELETE", V1 + "ns1/a").json()["deleted"])
            self.assertEqual(c.request("DELETE", V1 + "ns1/a").status, 404)
            self.assertEqual(c.get(V1 + "ns1/a").status, 404)
            self.assertEqual(c.post(V1 + "ns1/a/clear", {}).status, 404)
            r = c.post_json(V1 + "ns1/a/add-and-get", {"delta": 2})
            self.assertEqual(r["count"], 2)  # a later add starts from 0
            # Bad input: 400 naming the field, nothing changed.
            r = c.post(V1 + "ns1/a/add", {"delta": 0})
            self.assertEqual(r.status, 400)
            self.assertIn("delta", r.json()["detail"])
            self.assertEqual(c.post(V1 + "ns1/a/add", {"delta": 1,
                                                       "idempotency_token": ""}).status, 400)
            self.assertEqual(c.get_json(V1 + "ns1/a")["count"], 2)
            r = c.post(V1 + "ns1/a/add", {"delta": 2 ** 63 - 1})
            self.assertEqual((r.status, r.json()["error"]), (409, "overflow"))
            self.assertEqual(c.get_json(V1 + "ns1/a")["count"], 2)
            adm = c.get_json("/admin/etcd")
            self.assertEqual(adm["endpoints"][0]["url"], self.url)
            self.assertEqual(adm["leader"], self.url)
            metrics = c.get("/metrics").text()
            self.assertIn('counterd_etcd_txns_total{outcome="committed"}', metrics)
            self.assertIn("counterd_etcd_batch_size_bucket", metrics)
        # etcd holds what the answers said, under the documented keys.
        self.assertEqual(etcdlab.get_value(self.url, p + "c/default/hot"), 7)
        self.assertEqual(etcdlab.get_value(self.url, p + "c/ns1/a"), 2)
        self.assertEqual(etcdlab.get_value(self.url, p + "tok/ns1/t1"), 5)
        self.assertEqual(etcdlab.get_value(self.url, p + "tok/ns1/t3"), 3)

    def test_hot_counter_sums_exactly_in_batches(self):
        srv = self.strong("/t-hot/")
        nthreads, per = 8, 40
        errors = []

        def client(tid):
            try:
                with srv.client(timeout=15) as c:
                    for i in range(per):
                        c.post_json("/increment", {"counter_name": "hot", "amount": tid + 1})
            except Exception as e:  # noqa: BLE001 - reported below
                errors.append(repr(e))

        ts = [threading.Thread(target=client, args=(t,)) for t in range(nthreads)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(30)
        self.assertEqual(errors, [])
        want = per * sum(range(1, nthreads + 1))
        with srv.client() as c:
            self.assertEqual(c.get_json("/counter/hot")["value"], want)
            samples = harness.parse_metrics(c.get("/metrics").text())
        self.assertEqual(etcdlab.get_value(self.url, "/t-hot/c/default/hot"), want)
        txns = harness.metric_values(samples, "counterd_etcd_txns_total", outcome="committed")
        committed = sum(txns)
        print("\n%d increments in %d committed txns" % (nthreads * per, committed))
        self.assertLess(committed, nthreads * per, "no increments went out together")

    def test_retry_after_lost_answer_applies_once(self):
        proxy = DropAnswers(int(self.url.rsplit(":", 1)[1]))
        self.addCleanup(proxy.close)
        # The proxy first: its answers never come, then calls go to etcd itself.
        srv = self.strong("/t-amb/", "http://%s:%d,%s" % (harness.HOST, proxy.port, self.url),
                          timeout_ms=700)
        body = {"delta": 7, "idempotency_token": "once"}
        with srv.client(timeout=15) as c:
            # Through the proxy while it forwards both ways: the tokens' lease is granted.
            c.post_json(V1 + "amb/warm/add", {"delta": 1, "idempotency_token": "w"})
            proxy.armed = True
            r = c.post(V1 + "amb/x/add-and-get", body)
            self.assertEqual((r.status, r.json().get("error")), (503, "ambiguous"), r.text())
            self.assertIn("127.0.0.1:%d" % proxy.port, r.json()["detail"])
            # etcd applied it: the answer was lost on the way back.
            self.assertEqual(etcdlab.get_value(self.url, "/t-amb/c/amb/x"), 7)
            r = c.post_json(V1 + "amb/x/add-and-get", body)
            self.assertEqual((r["count"], r.get("duplicate")), (7, True))
            r = c.post_json(V1 + "amb/x/add-and-get", body)
            self.assertEqual((r["count"], r.get("duplicate")), (7, True))
            self.assertEqual(c.get_json(V1 + "amb/x")["count"], 7)
            samples = harness.parse_metrics(c.get("/metrics").text())
        self.assertEqual(etcdlab.get_value(self.url, "/t-amb/c/amb/x"), 7)
        amb = harness.metric_values(samples, "counterd_etcd_txns_total", outcome="ambiguous")
        self.assertEqual(sum(amb), 1)

    def test_same_token_at_once_applies_once(self):
        # Retries that race their first attempt: one applies, the others are duplicates of
        # it (a token twice in one txn would be refused by etcd: it waits for the next).
        srv = self.strong("/t-race/")
        answers, errors = [], []

        def client(k):
            try:
                with srv.client(timeout=15) as c:
                    for i in range(10):
                        answers.append(c.post_json(V1 + "r/x/add-and-get",
                                                   {"delta": 3, "idempotency_token": "t%d" % i}))
            except Exception as e:  # noqa: BLE001 - reported below
                errors.append(repr(e))

        ts = [threading.Thread(target=client, args=(k,)) for k in range(6)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(30)
        self.assertEqual(errors, [])
        self.assertEqual(len(answers), 60)
        self.assertEqual(sum(1 for a in answers if not a.get("duplicate")), 10)
        by_token = {}
        for a in answers:
            by_token.setdefault(a["count"], 0)
            by_token[a["count"]] += 1
        self.assertEqual(sorted(by_token), [3 * i for i in range(1, 11)])
        self.assertEqual(set(by_token.values()), {6})  # every answer of a token says its count
        self.assertEqual(etcdlab.get_value(self.url, "/t-race/c/r/x"), 30)

    def test_listing_reads_every_page(self):
        # 1,205 counters written straight into etcd (pages of 1,000 in the role).
        p = "/t-list/"
        n = 1205
        for start in range(0, n, 100):
            ops = [{"request_put": {"key": etcdlab.b64("%sc/big/k%04d" % (p, i)),
                                    "value": etcdlab.b64(str(i))}}
                   for i in range(start, min(n, start + 100))]
            etcdlab.call(self.url, "/v3/kv/txn", {"success": ops})
        etcdlab.call(self.url, "/v3/kv/put", {"key": etcdlab.b64(p + "c/default/one"),
                                              "value": etcdlab.b64("1")})
        srv = self.strong(p)
        with srv.client(timeout=15) as c:
            lst = c.get_json(V1 + "big")
            self.assertEqual((lst["total_counters"], lst["truncated"]), (n, False))
            self.assertEqual(lst["counters"]["k1204"]["count"], 1204)
            self.assertEqual(sum(v["count"] for v in lst["counters"].values()),
                             n * (n - 1) // 2)
            allc = c.get_json("/counters")["counters"]
            self.assertEqual(len(allc), n + 1)
            self.assertEqual((allc["one"], allc["big/k0007"]), (1, 7))
            self.assertEqual(c.get_json(V1 + "default")["counters"], {"one": {"count": 1,
                                                                               "nodes": {}}})
            harness.assert_promtool_clean(self, c.get("/metrics").text(), "etcd strong /metrics")

    def test_etcd_unreachable_is_no_quorum(self):
        dead = "http://%s:%d" % (harness.HOST, etcdlab.free_ports(1)[0])
        srv = self.strong("/t-down/", dead)
        with srv.client() as c:
            r = c.post(V1 + "d/x/add", {"delta": 1, "idempotency_token": "k"})
            self.assertEqual((r.status, r.json()["error"]), (503, "no_quorum"), r.text())
            self.assertIn(dead, r.json()["detail"])
            r = c.post("/increment", {"counter_name": "x", "amount": 1})
            self.assertEqual((r.status, r.json()["error"]), (503, "no_quorum"))
            r = c.get("/counter/x")
            self.assertEqual(r.status, 503)
            self.assertIn(dead, r.json()["detail"])
            self.assertEqual(c.get_json("/admin/etcd")["endpoints"][0]["ok"], False)
            self.assertEqual(c.get_json("/health")["ready"], False)

    def test_paused_etcd_is_ambiguous_and_retry_is_exact(self):
        srv = self.strong("/t-pause/", timeout_ms=500)
        body = {"delta": 4, "idempotency_token": "p1"}
        with srv.client(timeout=15) as c:
            c.post_json(V1 + "p/warm/add", {"delta": 1, "idempotency_token": "w"})  # the lease
        self.etcd.pause(0, True)
        try:
            # The member is stopped once it no longer answers (a status call times out).
            for _ in range(20):
                try:
                    etcdlab.call(self.url, "/v3/maintenance/status", {}, timeout=0.3)
                except OSError:
                    break
            else:
                self.fail("etcd still answers after SIGSTOP")
            with srv.client(timeout=15) as c:
                r = c.post(V1 + "p/x/add-and-get", body)
        finally:
            self.etcd.pause(0, False)
        self.assertEqual((r.status, r.json().get("error")), (503, "ambiguous"), r.text())
        with srv.client(timeout=15) as c:
            for _ in range(50):
                r = c.post(V1 + "p/x/add-and-get", body)
                if r.status == 200:
                    break
            self.assertEqual(r.status, 200, r.text())
            self.assertEqual(r.json()["count"], 4)
            self.assertEqual(c.get_json(V1 + "p/x")["count"], 4)
        print("\nretry after the pause: %s" % ("duplicate" if r.json().get("duplicate")
                                                else "first application"))


if __name__ == "__main__":
    unittest.main(verbosity=2)
