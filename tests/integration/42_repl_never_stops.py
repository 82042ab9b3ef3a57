"""
42_repl_never_stops.py - one entry never stops replication, and the status views say what
happened.

A total beyond int64 (+(2^63-11) on us-east and +100 on us-west inside one sync interval)
used to make every exchange between them fail with 409 while force-sync answered
"sync_completed" and the coordinator "converged". A peer body with one entry counterd
cannot hold (a name outside the charset, a negative count) used to get 400 as a whole.
Now: the merge is never refused for the range of a sum, entries that cannot be held are
skipped, counted, logged once and listed, and force-sync, /admin/sync and the coordinator
say per peer what happened.
"""

import json
import unittest

import harness

INT64_MAX = 2**63 - 1
NAMES = ("us-east", "us-west", "eu-west")


def metric(c, name, **labels):
    samples = harness.parse_metrics(c.get("/metrics").text())
    return sum(harness.metric_values(samples, name, **labels))


class NeverStops(harness.ServerTestCase):
    def setUp(self):
        super().setUp()
        self.t = harness.Topology().start(self.addCleanup)
        self.rc = {}
        for r in self.t.regions:
            self.rc[r.region] = r.client()
            self.addCleanup(self.rc[r.region].close)
        self.co = self.t.coordinator.client()
        self.addCleanup(self.co.close)
        self.gw = self.t.gateway.client()
        self.addCleanup(self.gw.close)

    def incr(self, region, name, amount, status=200):
        r = self.rc[region].post("/increment", {"counter_name": name, "amount": amount})
        harness.assert_json_response(r, status, "%s +%d on %s" % (region, amount, name))
        return r.json()

    def force_sync(self, region, status=200):
        r = self.rc[region].post("/admin/force-sync")
        harness.assert_json_response(r, status, "%s force-sync" % region)
        return r.json()

    def test_total_beyond_int64_does_not_stop_replication(self):
        self.incr("us-east", "big", INT64_MAX - 10)
        self.incr("us-west", "big", 100)
        for _ in range(5):
            self.incr("us-east", "views", 1)
            self.incr("us-west", "views", 1)
        answers = [self.force_sync(region) for region in NAMES]
        for region in NAMES:
            v = self.rc[region].get_json("/counter/views")
            self.assertEqual(v["total_count"], 10, "%s views %r" % (region, v))
        for a in answers:
            self.assertEqual(a["status"], "sync_completed", a)
            self.assertEqual({p["status"] for p in a["peers"].values()}, {"ok"}, a["peers"])
        exact = INT64_MAX - 10 + 100
        for region in NAMES:
            b = self.rc[region].get_json("/counter/big")
            self.assertEqual(b["total_count"], INT64_MAX, "clamped on %s: %r" % (region, b))
            self.assertIs(b["beyond_int64"], True, b)
            self.assertEqual(b["exact"]["total_count"], str(exact), b)
            self.assertEqual(b["nodes"], {"us-east-1": INT64_MAX - 10, "us-west-1": 100}, b)
            self.assertEqual(b["exact"]["nodes"],
                             {"us-east-1": str(INT64_MAX - 10), "us-west-1": "100"}, b)
        # This replica's own entry still may not leave int64; another's may grow.
        e = self.rc["us-east"].post("/increment", {"counter_name": "big", "amount": 11})
        self.assertError(e, 409, "overflow", "us-east's own entry past int64")
        self.assertEqual(self.incr("us-east", "big", 10)["local_count"], INT64_MAX)
        self.assertEqual(self.incr("us-west", "big", 5)["local_count"], 105)
        g = self.co.get_json("/global/counter/views")
        self.assertEqual((g["global_count"], g["merged_count"]), (10, 10), g)
        self.assertIs(g["convergence"]["converged"], True, g)
        g = self.co.get_json("/global/counter/big")
        self.assertIs(g["beyond_int64"], True, g)
        self.assertEqual(g["merged_count"], INT64_MAX, g)
        self.assertIs(g["convergence"]["converged"], False, g)  # the last two are not synced
        for region in NAMES:
            self.assertEqual(self.force_sync(region)["status"], "sync_completed")
        g = self.co.get_json("/global/counter/big")
        self.assertIs(g["convergence"]["converged"], True, g)
        for name in NAMES:
            self.assertEqual(g["regions"][name]["exact"]["total_count"], str(exact + 15), g)

    def test_bad_entries_are_skipped_and_the_rest_merged(self):
        c = self.rc["us-east"]
        body = {"node_id": "peer-x", "timestamp": 1.0, "counts": {
            "ok1": {"peer-x": 5},
            "bad name!": {"peer-x": 1},
            "neg": {"peer-x": -3, "peer-y": 2},
            "huge": {"peer-x": 2**64},
            "ok2": {"bad node!": 1, "peer-x": 7},
            "frac": {"peer-x": 1.5}}}
        for attempt in (1, 2):
            r = c.post("/sync", body)
            harness.assert_json_response(r, 200, "POST /sync with bad entries")
            a = r.json()
            self.assertEqual(a["rejected_count"], 5, a)
            got = sorted((x["counter"], x.get("node_id"), x["reason"]) for x in a["rejected"])
            self.assertEqual(got, [("bad name!", None, "bad_name"),
                                   ("frac", "peer-x", "not_an_integer"),
                                   ("huge", "peer-x", "out_of_range"),
                                   ("neg", "peer-x", "negative"),
                                   ("ok2", "bad node!", "bad_node_id")])
        for name, total in (("ok1", 5), ("neg", 2), ("ok2", 7)):
            self.assertEqual(c.get_json("/counter/%s" % name)["total_count"], total, name)
        self.assertEqual(c.get_json("/counter/huge")["nodes"], {})
        for reason, n in (("bad_name", 2), ("negative", 2), ("out_of_range", 2),
                          ("bad_node_id", 2), ("not_an_integer", 2)):
            self.assertEqual(metric(c, "counterd_sync_rejected_entries_total", peer="peer-x",
                                    reason=reason), n, reason)
        log = self.t.region("us-east").log_text()
        for reason in ("bad_name", "negative", "out_of_range", "bad_node_id"):
            self.assertEqual(log.count("sync from peer-x: skipped entries it sent (%s)" % reason),
                             1, "logged once: %s\n%s" % (reason, log[-3000:]))
        # The list is bounded; the count is of entries.
        many = {"bad %d" % i: {"peer-x": 1, "peer-y": 2} for i in range(30)}
        many["ok3"] = {"peer-x": 3}
        a = c.post_json("/sync", {"node_id": "peer-x", "counts": many})
        self.assertEqual((len(a["rejected"]), a["rejected_count"]), (20, 60), a)
        self.assertEqual({x["reason"] for x in a["rejected"]}, {"bad_name"})
        self.assertEqual(c.get_json("/counter/ok3")["total_count"], 3)
        # A body that is not a /sync message at all still gets 400, and merges nothing.
        self.assertError(c.post("/sync", {"node_id": "peer-x", "counts": []}), 400, "bad_field")

    def test_force_sync_says_which_peer_failed(self):
        # eu-west stops: the others' exchanges with it fail, and say so everywhere.
        west = self.t.region("eu-west")
        self.rc["eu-west"].close()
        west.stop()
        self.incr("us-east", "fs", 2)
        a = self.force_sync("us-east", status=502)
        self.assertEqual((a["status"], a["error"]), ("sync_failed", "sync_failed"), a)
        self.assertIn("1 of 2", a["detail"])
        self.assertEqual(a["peers"]["us-west-1"]["status"], "ok", a["peers"])
        failed = [p for p in a["peers"].values() if p["status"] == "failed"]
        self.assertEqual(len(failed), 1, a["peers"])
        self.assertEqual(failed[0]["url"], west.url)
        self.assertTrue(failed[0]["last_error"], failed[0])
        self.assertEqual(a["counters"]["fs"]["total_count"], 2)

        st = self.rc["us-east"].get_json("/admin/sync")
        self.assertEqual(st["peers"]["us-west-1"]["status"], "ok")
        self.assertGreater(st["peers"]["us-west-1"]["last_success"], 0)

        r = self.co.post("/global/force-sync")
        harness.assert_json_response(r, 502, "coordinator force-sync with eu-west down")
        g = r.json()
        self.assertEqual((g["status"], g["regions_synced"]), ("sync_failed", 0), g)
        self.assertEqual(g["regions"]["eu-west"]["status"], "unreachable", g)
        self.assertEqual(g["regions"]["us-east"]["status"], "sync_failed", g)
        r2 = self.gw.post("/admin/force-sync")
        self.assertEqual(r2.status, 502)
        self.assertEqual(r2.json()["status"], "sync_failed")

        s = self.co.get_json("/global/status")
        east = s["regions"]["us-east"]
        self.assertEqual(east["peers"]["us-west-1"]["status"], "ok", east)
        bad = [p for p in east["peers"].values() if p["url"] == west.url][0]
        self.assertEqual(bad["status"], "failed")
        self.assertTrue(bad["last_error"])
        self.assertGreater(bad["last_error_time"], 0)
        self.assertEqual(s["regions"]["eu-west"], {"status": "unhealthy"})
        self.assertJsonEqual(self.gw.get_json("/api/status")["regions"]["eu-west"],
                             {"status": "unhealthy"})
        self.assertEqual(metric(self.rc["us-east"], "counterd_sync_peer_failed_rounds",
                                peer=west.url), 3)

    def test_partitioned_peer_is_not_a_failure(self):
        self.co.post_json("/global/partition", {"region": "eu-west", "enabled": True})
        a = self.force_sync("us-east")
        self.assertEqual(a["status"], "sync_completed")
        self.assertEqual(sorted(p["status"] for p in a["peers"].values()),
                         ["ok", "partitioned"], a["peers"])
        g = self.co.post_json("/global/force-sync")
        self.assertEqual((g["status"], g["regions_synced"]), ("sync_initiated", 2), g)
        self.assertEqual(g["regions"]["eu-west"]["status"], "partitioned")

    def test_converged_needs_equal_vectors(self):
        # Equal totals, different vectors: not converged, and merged_count is their join.
        self.incr("us-east", "vec", 3)
        self.incr("us-west", "vec", 3)
        self.incr("eu-west", "vec", 3)
        g = self.co.get_json("/global/counter/vec")
        self.assertEqual(g["global_count"], 3)
        self.assertEqual(g["convergence"]["lag"], 0)
        self.assertIs(g["convergence"]["converged"], False, g)
        self.assertEqual(g["merged_count"], 9, g)
        gw = self.gw.get_json("/api/counter/vec")
        self.assertEqual((gw["merged_count"], gw["convergence"]["converged"]), (9, False))
        self.assertEqual(self.co.post_json("/global/force-sync")["regions_synced"], 3)
        g = self.co.get_json("/global/counter/vec")
        self.assertIs(g["convergence"]["converged"], True, g)
        self.assertEqual((g["global_count"], g["merged_count"]), (9, 9), g)


if __name__ == "__main__":
    unittest.main()
