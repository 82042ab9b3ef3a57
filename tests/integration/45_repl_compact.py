"""
45_repl_compact.py - the compact /sync body between counterd nodes, and beside it nodes that
speak only JSON (COUNTERD_SYNC_COMPACT=0, as counterd before the compact body).

A holds counters with decrements, folded replicas and values up to int64's maximum; B
(JSON only) and C (compact) join A. All three end with the same counters; A's full state
reaches C in compact pages (fewer bytes) and B in JSON; a change on C reaches B through A.
A compact body whose structure is wrong is refused whole with 400 naming what is wrong;
entries a node cannot hold are skipped and listed as in a JSON body.
"""

import os
import unittest

import compactbody
import harness

N = 3000
REPS = ["us-east-1~aaaa", "us-west-1~bbbb", "eu-west-1~cccc"]
BIG = 2**63 - 1


def load_body():
    counts, decs, folded = {}, {}, {}
    for i in range(N):
        name = "k%05d" % i
        counts[name] = {REPS[0]: 1 + i % 7, REPS[1]: BIG if i % 97 == 0 else 1 + i % 11}
        if i % 5 == 0:
            decs[name] = {REPS[2]: 1 + i % 3}
        if i % 31 == 0:
            folded[name] = ["gone-1~dead"]
    return {"node_id": "loader-1", "incarnation": "0000000000000000", "counts": counts,
            "decrements": decs, "folded": folded}


class Compact(harness.ServerTestCase):
    def start(self, name, region, port, peers, json_only=False):
        args = ["--region", region, "--node-id", name, "--sync-interval-ms", "60000",
                "--sync-timeout-ms", "10000",
                "--peers", ",".join("http://127.0.0.1:%d" % p for p in peers)]
        if json_only:
            os.environ["COUNTERD_SYNC_COMPACT"] = "0"
        try:
            return self.start_server(args, port=port, name=name)
        finally:
            os.environ.pop("COUNTERD_SYNC_COMPACT", None)

    def state(self, srv):
        """Every counter's total and nodes, paged through GET /counters."""
        out, cursor = {}, None
        with srv.client() as c:
            for _ in range(100):
                j = c.get_json("/counters?limit=10000" + ("&cursor=" + cursor if cursor else ""))
                for k, v in j["counters"].items():
                    out[k] = (v["total_count"], v["nodes"])
                cursor = j.get("next_cursor")
                if not cursor:
                    return out
        self.fail("GET /counters did not end")

    def full_bytes(self, srv):
        with srv.client() as c:
            m = harness.parse_metrics(c.get("/metrics").text())
        return sum(harness.metric_values(m, "counterd_sync_peer_bytes_total", kind="full",
                                         direction="received"))

    def force_sync(self, srv):
        with srv.client(timeout=60) as c:
            r = c.post("/admin/force-sync")
        harness.assert_json_response(r, 200, "force-sync on %s" % srv.name)

    def test_mixed_versions_converge(self):
        pa, pb, pc = harness.free_ports(3)
        a = self.start("us-east-1", "us-east", pa, [pb, pc])
        with a.client(timeout=60) as c:
            c.post_json("/sync", load_body())
        b = self.start("us-west-1", "us-west", pb, [pa], json_only=True)
        cn = self.start("eu-west-1", "eu-west", pc, [pa])
        self.force_sync(b)
        self.force_sync(cn)
        want = self.state(a)
        self.assertEqual(len(want), N)
        self.assertEqual(self.state(b), want, "the JSON-only node holds A's state")
        self.assertEqual(self.state(cn), want, "the compact node holds A's state")
        # The same full state, compact to C, JSON to B.
        jb, jc = self.full_bytes(b), self.full_bytes(cn)
        self.assertLess(jc * 2, jb, "compact pages (%d bytes) against JSON (%d)" % (jc, jb))
        # A change on C reaches A (a compact delta) and B (JSON) through A.
        with cn.client() as c:
            c.post_json("/increment", {"counter_name": "k00001", "amount": 5})
        self.force_sync(cn)
        self.force_sync(a)
        self.assertEqual(self.state(b)["k00001"], self.state(cn)["k00001"])
        self.assertEqual(self.state(b), self.state(a))

    def test_peer_downgraded(self):
        """A compact peer replaced by a JSON-only node at the same address: the next exchange
        is refused (400), sent again in JSON, and the round completes."""
        pa, pc = harness.free_ports(2)
        a = self.start("us-east-1", "us-east", pa, [pc])
        cn = self.start("eu-west-1", "eu-west", pc, [pa])
        with cn.client(timeout=60) as c:
            c.post_json("/sync", load_body())
        self.force_sync(cn)
        self.assertEqual(self.state(a), self.state(cn))
        a.stop()
        a = self.start("us-east-1", "us-east", pa, [pc], json_only=True)
        with cn.client() as c:
            c.post_json("/increment", {"counter_name": "k00002", "amount": 3})
        self.force_sync(cn)
        self.assertEqual(self.state(a), self.state(cn))
        with open(cn.log_path, "rb") as f:
            log = f.read()
        with open(a.log_path, "rb") as f:
            alog = f.read()
        self.assertIn(b"refused a compact /sync body", log, alog)

    def test_answers_negotiated(self):
        a = self.start("us-east-1", "us-east", harness.free_ports(1)[0], [9])
        with a.client(timeout=60) as c:
            c.post_json("/sync", load_body())
            env = {"node_id": "probe-1", "incarnation": "0000000000000001", "counts": {}}
            r = c.post("/sync", env)
            self.assertTrue(r.content_type.startswith("application/json"), r.content_type)
            self.assertIn("compact", r.json()["features"])
            r = c.post("/sync", dict(env, features=["folded", "digest", "compact"]))
            self.assertEqual(r.status, 200)
            self.assertEqual(r.content_type, "application/octet-stream")
            self.assertEqual(r.body[:4], b"CSB1")
        b = self.start("us-west-1", "us-west", harness.free_ports(1)[0], [9], json_only=True)
        with b.client() as c:
            r = c.post("/sync", dict(env, features=["folded", "digest", "compact"]))
            self.assertTrue(r.content_type.startswith("application/json"), r.content_type)
            self.assertNotIn("compact", r.json()["features"])

    def test_malformed_refused_whole(self):
        a = self.start("us-east-1", "us-east", harness.free_ports(1)[0], [9])
        env = {"node_id": "probe-1", "incarnation": "0000000000000001", "counts": {}}
        good = compactbody.body(env, ["us-west-1", "bad id!"], [
            ("views", [(0, 15, 2)], [], []),
            ("tk", [], [], [("tok-1", 5, 1)]),
            ("likes", [(0, 3, 0), (1, 1, 0)], [], []),
            ("big", [(0, 2**63, 0)], [], [])])
        bad = [
            (good[:-3], "the body ends inside it"),
            (good + b"\x00", "1 bytes after the last counter"),
            (compactbody.body(env, ["us-west-1"], [("views", [(1, 1, 0)], [], [])]),
             "beyond the table"),
            (compactbody.body(env, ["us-west-1"], [("views", [(0, 1, 0)], [], [("t", 1, 2)])]),
             "settled"),
            (b"CSB1" + compactbody.varint(2**64) + b"{}", "beyond 64 bits"),
        ]
        with a.client() as c:
            for body, why in bad:
                r = c.post("/sync", body, headers={"Content-Type": "application/octet-stream"})
                self.assertError(r, 400, ("bad_body", "bad_json"), "compact body",
                                 detail_contains=why)
                self.assertEqual(c.get_json("/counters")["counters"], {}, "nothing merged")
            r = c.post("/sync", good, headers={"Content-Type": "application/octet-stream"})
            self.assertEqual(r.status, 200, r.body[:300])
            got = c.get_json("/counters")["counters"]
            self.assertEqual(got["views"]["total_count"], 13)
            self.assertEqual(got["likes"]["total_count"], 3)
            self.assertNotIn("big", got)
        # The answer (JSON: the request did not say "compact") lists what it skipped.
        j = r.json()
        self.assertEqual(j["rejected_count"], 2)
        self.assertEqual(sorted(x["reason"] for x in j["rejected"]),
                         ["bad_node_id", "out_of_range"])


if __name__ == "__main__":
    unittest.main()
