"""
65_coordinator_gateway.py - the coordinator and the gateway, field by field against
docs/API.md ("Coordinator", "Gateway", "Errors", "Metrics"), with three regions.

The regions sync only when told (--sync-interval-ms 60000), so every count is exact. Most
tests share one topology (each with its own counter names); the tests that stop or freeze
a region start their own.

Routing is checked exactly where the policy is deterministic: sticky is FNV-1a (32 bits)
of the counter name modulo the number of regions, computed here independently. "random"
must also differ between two gateway processes (a per-process seed).

Beyond the contract's happy paths: counts past 2^53 stay exact through the coordinator's
arithmetic, a region's 409/413 verdicts are relayed, a stopped region, a frozen one
(SIGSTOP), every region down, and the coordinator down (reads 503, increments still 200).
"""

import json
import os
import signal
import time
import unittest

import harness

NAMES = [r for r, _ in harness.LAB_REGIONS]
NODE_OF = dict(harness.LAB_REGIONS)

REGION_ANSWER_KEYS = {"counter", "local_count", "total_count", "node_id", "region"}
GATEWAY_EXTRA_KEYS = {"routing", "routed_to_endpoint", "latency_ms"}
GLOBAL_KEYS = {"counter", "global_count", "merged_count", "regions", "convergence",
               "healthy_regions", "total_regions", "query_time_ms"}
PEER_KEYS = {"url", "status", "format", "last_success", "failed_rounds", "last_error",
             "last_error_time"}


def status_view(test, st):
    """/global/status without each healthy region's replication detail (checked here:
    last_sync_time, changes, and per peer PEER_KEYS), for exact comparisons."""
    st = json.loads(json.dumps(st))
    for name, r in st["regions"].items():
        if r["status"] == "healthy":
            test.assertIn(type(r.pop("last_sync_time")), (int, float), name)
            test.assertEqual(set(r.pop("changes")), {"local", "merged"}, name)
            peers = r.pop("peers")
            test.assertEqual(len(peers), len(NAMES) - 1, "%s peers %r" % (name, peers))
            for p in peers.values():
                test.assertEqual(set(p), PEER_KEYS, "%s peer %r" % (name, p))
    return st

def fnv1a32(s):
    h = 2166136261
    for b in s.encode("utf-8"):
        h ^= b
        h = (h * 16777619) & 0xFFFFFFFF
    return h


def sticky_region(name):
    return NAMES[fnv1a32(name) % len(NAMES)]


class Base(harness.ServerTestCase):
    """Helpers on a topology self.t with clients self.gw, self.co and self.rc[region]."""

    def clients(self, topo):
        self.t = topo
        self.gw = topo.gateway.client()
        self.co = topo.coordinator.client()
        self.rc = {r.region: r.client() for r in topo.regions}
        for c in [self.gw, self.co] + list(self.rc.values()):
            self.addCleanup(c.close)

    def incr_region(self, region, name, amount):
        r = self.rc[region].post_json("/increment", {"counter_name": name, "amount": amount})
        self.assertEqual((r["counter"], r["region"]), (name, region))
        return r

    def gw_incr(self, name, routing=None, amount=1, headers=None, status=200):
        body = {"counter_name": name, "amount": amount}
        if routing is not None:
            body["routing"] = routing
        r = self.gw.post("/api/increment", body, headers=headers)
        harness.assert_json_response(r, status, "gateway POST /api/increment %r headers %r"
                                     % (body, headers))
        return r.json()

    def region_of(self, answer):
        """The region that took a gateway increment, checked against its endpoint."""
        region = answer["region"]
        self.assertIn(region, NAMES, "answer %r" % answer)
        self.assertEqual(answer["routed_to_endpoint"], self.t.region(region).url,
                         "routed_to_endpoint of %r" % answer)
        self.assertEqual(answer["node_id"], NODE_OF[region], "answer %r" % answer)
        return region

    def global_counter(self, name, client=None):
        return (client or self.co).get_json("/global/counter/%s" % name)

    def force_sync(self, expect_synced=3, status=200):
        r = self.co.post("/global/force-sync")
        harness.assert_json_response(r, status, "POST /global/force-sync")
        got = r.json()
        self.assertEqual(got["status"], "sync_initiated" if status == 200 else "sync_failed", got)
        self.assertEqual(got["regions_synced"], expect_synced, got)
        self.assertEqual(set(got["regions"]), set(NAMES), got)
        return got

    def totals(self, name):
        return {reg: self.rc[reg].get_json("/counter/%s" % name)["total_count"]
                for reg in self.rc}

    def assertGlobal(self, got, name, per_region, healthy=None):
        """got is a /global/counter answer; per_region maps each region expected in it to
        its exact {"local_count", "total_count", "nodes"}."""
        self.assertEqual(set(got), GLOBAL_KEYS, "keys of /global/counter/%s: %r" % (name, got))
        qt = got.pop("query_time_ms")
        self.assertIn(type(qt), (int, float), "query_time_ms %r" % qt)
        self.assertGreaterEqual(qt, 0)
        self.assertEqual(round(qt, 2), qt, "query_time_ms rounded to 2 decimals: %r" % qt)
        totals = [v["total_count"] for v in per_region.values()]
        mx, mn = (max(totals), min(totals)) if totals else (0, 0)
        vectors = [v["nodes"] for v in per_region.values()]
        join = {}
        for vec in vectors:
            for node, c in vec.items():
                join[node] = max(join.get(node, c), c)
        want = {"counter": name, "global_count": mx, "merged_count": sum(join.values()),
                "regions": per_region,
                "convergence": {"converged": bool(totals) and all(v == vectors[0]
                                                                  for v in vectors),
                                "lag": mx - mn,
                                "max_count": mx, "min_count": mn},
                "healthy_regions": len(per_region) if healthy is None else healthy,
                "total_regions": len(self.t.regions)}
        self.assertJsonEqual(got, want, "/global/counter/%s" % name)

    def promtool(self, text, what):
        if not harness.promtool_path():
            print("\n[65] promtool not on PATH: %s checked with the built-in parser only" % what)
            return
        self.assertEqual(harness.assert_promtool_clean(self, text, what), [])


class Shared(Base):
    """One topology for every test of this class; each test uses its own counter names."""

    @classmethod
    def setUpClass(cls):
        cls.topo = harness.Topology().start(cls.addClassCleanup)

    def setUp(self):
        super().setUp()
        self.clients(self.topo)

    # Health ------------------------------------------------------------------------------

    def test_health_of_both(self):
        self.assertJsonEqual(self.co.get_json("/health"), {"status": "ok", "service": "coordinator"})
        self.assertJsonEqual(self.gw.get_json("/health"), {"status": "ok", "service": "gateway"})

    # Coordinator ---------------------------------------------------------------------------

    def test_global_counter_fields_and_convergence(self):
        name = "g_fields"
        self.incr_region("us-east", name, 5)
        self.incr_region("us-west", name, 3)
        self.incr_region("us-west", name, 4)
        self.assertGlobal(self.global_counter(name), name, {
            "us-east": {"local_count": 5, "total_count": 5, "nodes": {"us-east-1": 5}},
            "us-west": {"local_count": 7, "total_count": 7, "nodes": {"us-west-1": 7}},
            "eu-west": {"local_count": 0, "total_count": 0, "nodes": {}},
        })
        self.force_sync()
        nodes = {"us-east-1": 5, "us-west-1": 7}
        self.assertGlobal(self.global_counter(name), name, {
            "us-east": {"local_count": 5, "total_count": 12, "nodes": nodes},
            "us-west": {"local_count": 7, "total_count": 12, "nodes": nodes},
            "eu-west": {"local_count": 0, "total_count": 12, "nodes": nodes},
        })

    def test_global_counter_exact_beyond_2_53(self):
        # Counts are JSON integers, exact to the last digit, through the coordinator's
        # arithmetic (max, min, lag) and through the gateway's relay.
        name = "g_big"
        big = 2 ** 53 + 3  # not a double: 2^53 + 4 as one
        self.incr_region("us-east", name, big)
        self.incr_region("us-west", name, 3)
        self.incr_region("eu-west", name, 1)
        self.assertGlobal(self.global_counter(name), name, {
            "us-east": {"local_count": big, "total_count": big, "nodes": {"us-east-1": big}},
            "us-west": {"local_count": 3, "total_count": 3, "nodes": {"us-west-1": 3}},
            "eu-west": {"local_count": 1, "total_count": 1, "nodes": {"eu-west-1": 1}},
        })
        via = self.gw.get_json("/api/counter/%s" % name)
        self.assertEqual((via["global_count"], via["convergence"]["lag"],
                          via["convergence"]["min_count"]), (big, big - 1, 1))
        name = "g_max"
        top = 2 ** 63 - 1
        self.incr_region("eu-west", name, top)
        got = self.global_counter(name)
        self.assertEqual((got["global_count"], got["convergence"]["lag"],
                          got["regions"]["eu-west"]["nodes"]), (top, top, {"eu-west-1": top}))
        listed = self.co.get_json("/global/counters")["regions"]["eu-west"]["counters"][name]
        self.assertEqual(listed["total_count"], top)

    def test_global_counter_unknown_reads_zero_everywhere(self):
        zero = {"local_count": 0, "total_count": 0, "nodes": {}}
        self.assertGlobal(self.global_counter("g_never_written"), "g_never_written",
                          {r: zero for r in NAMES})

    def test_global_counter_bad_name(self):
        r = self.co.get("/global/counter/bad$name")
        self.assertError(r, 400, "bad_name", "GET /global/counter/bad$name")
        r = self.co.get("/global/counter/" + "n" * 201)
        self.assertError(r, 400, "bad_name", "GET /global/counter/<201 bytes>")

    def test_global_counters(self):
        for region, name in (("eu-west", "gc_zz"), ("us-east", "gc_aa"), ("us-west", "gc_mm"),
                             ("us-east", "gc_mm")):
            self.incr_region(region, name, 1)
        got = self.co.get_json("/global/counters")
        self.assertEqual(set(got), {"regions", "counter_names", "healthy_regions",
                                    "total_regions", "query_time_ms", "total_counters",
                                    "truncated"}, "keys %r" % got)
        self.assertIsInstance(got["counter_names"], list)
        self.assertEqual(got["counter_names"], sorted(got["counter_names"]),
                         "counter_names must be sorted")
        self.assertEqual(len(got["counter_names"]), len(set(got["counter_names"])),
                         "counter_names has duplicates: %r" % got["counter_names"])
        self.assertEqual([n for n in got["counter_names"] if n.startswith("gc_")],
                         ["gc_aa", "gc_mm", "gc_zz"])
        self.assertEqual((got["healthy_regions"], got["total_regions"]), (3, 3))
        self.assertIn(type(got["query_time_ms"]), (int, float))
        self.assertEqual(sorted(got["regions"]), sorted(NAMES))
        union = set()
        for region in NAMES:
            direct = self.rc[region].get_json("/counters")
            self.assertJsonEqual(got["regions"][region], direct,
                                 "/global/counters regions.%s is the region's /counters" % region)
            union |= set(direct["counters"])
        self.assertEqual(got["counter_names"], sorted(union))

    def test_global_status_and_partition(self):
        want_ok = {r: {"status": "healthy", "node_id": NODE_OF[r], "network_partition": False}
                   for r in NAMES}
        self.assertJsonEqual(status_view(self, self.co.get_json("/global/status")),
                             {"regions": want_ok, "healthy_count": 3, "partitioned_count": 0})
        r = self.co.post_json("/global/partition", {"region": "us-west", "enabled": True})
        self.assertJsonEqual(r, {"status": "success", "region": "us-west", "network_partition": True})
        try:
            self.assertIs(self.rc["us-west"].get_json("/admin/partition")["network_partition"], True)
            self.assertIs(self.rc["us-east"].get_json("/admin/partition")["network_partition"], False)
            want = dict(want_ok)
            want["us-west"] = dict(want_ok["us-west"], network_partition=True)
            self.assertJsonEqual(status_view(self, self.co.get_json("/global/status")),
                                 {"regions": want, "healthy_count": 3, "partitioned_count": 1})
        finally:
            r = self.co.post_json("/global/partition", {"region": "us-west", "enabled": False})
        self.assertJsonEqual(r, {"status": "success", "region": "us-west",
                                 "network_partition": False})
        self.assertIs(self.rc["us-west"].get_json("/admin/partition")["network_partition"], False)

    def test_global_partition_bad_input(self):
        self.assertError(self.co.post("/global/partition", {"region": "mars", "enabled": True}),
                         404, "not_found", "unknown region", detail_contains="mars")
        self.assertError(self.co.post("/global/partition", {"region": "us-east", "enabled": "yes"}),
                         400, "bad_field", "enabled \"yes\"", detail_contains="enabled")
        self.assertError(self.co.post("/global/partition", {"region": "us-east"}),
                         400, "bad_field", "enabled missing", detail_contains="enabled")
        self.assertError(self.co.post("/global/partition", {"enabled": True}),
                         400, "bad_field", "region missing", detail_contains="region")
        self.assertError(self.co.post("/global/partition", b'{"region":'), 400, "bad_json",
                         "malformed JSON")
        self.assertError(self.co.get("/global/partition"), 405, "method_not_allowed",
                         "GET /global/partition")
        self.assertError(self.co.post("/global/partition/all?enabled=maybe"), 400, "bad_field",
                         "all?enabled=maybe", detail_contains="enabled")
        self.assertError(self.co.post("/global/partition/all"), 400, "bad_field",
                         "all without enabled", detail_contains="enabled")
        self.assertError(self.co.get("/global/nothing"), 404, "not_found", "GET /global/nothing")
        for region in NAMES:
            self.assertIs(self.rc[region].get_json("/admin/partition")["network_partition"],
                          False, "%s after refused partition requests" % region)

    def test_global_partition_all(self):
        try:
            r = self.co.post_json("/global/partition/all?enabled=true")
            self.assertJsonEqual(r, {"status": "success", "partition_enabled": True,
                                     "regions_updated": 3})
            for region in NAMES:
                self.assertIs(self.rc[region].get_json("/admin/partition")["network_partition"],
                              True, region)
            st = self.co.get_json("/global/status")
            self.assertEqual((st["healthy_count"], st["partitioned_count"]), (3, 3))
            # Partitioned regions refuse a sync round.
            self.force_sync(expect_synced=0)
        finally:
            r = self.co.post_json("/global/partition/all?enabled=false")
        self.assertJsonEqual(r, {"status": "success", "partition_enabled": False,
                                 "regions_updated": 3})
        for region in NAMES:
            self.assertIs(self.rc[region].get_json("/admin/partition")["network_partition"],
                          False, region)

    def test_global_force_sync(self):
        name = "g_force"
        for i, region in enumerate(NAMES):
            self.incr_region(region, name, 10 ** i)
        self.force_sync()
        nodes = {"us-east-1": 1, "us-west-1": 10, "eu-west-1": 100}
        for region in NAMES:
            got = self.rc[region].get_json("/counter/%s" % name)
            self.assertJsonEqual(got, {"counter": name, "local_count": nodes[NODE_OF[region]],
                                       "total_count": 111, "nodes": nodes, "region": region,
                                       "node_id": NODE_OF[region]})
        self.assertError(self.co.get("/global/force-sync"), 405, "method_not_allowed",
                         "GET /global/force-sync")

    # Gateway: increments -------------------------------------------------------------------

    def test_increment_answer_is_region_answer_plus_routing(self):
        name = "gw_fields"
        a = self.gw_incr(name, routing="us-west", amount=3)
        self.assertEqual(set(a), REGION_ANSWER_KEYS | GATEWAY_EXTRA_KEYS, "keys of %r" % a)
        self.assertEqual(self.region_of(a), "us-west")
        self.assertEqual((a["counter"], a["local_count"], a["total_count"], a["routing"]),
                         (name, 3, 3, "us-west"))
        self.assertIn(type(a["latency_ms"]), (int, float))
        self.assertGreaterEqual(a["latency_ms"], 0)
        self.assertEqual(round(a["latency_ms"], 2), a["latency_ms"])
        # The region's own answer to the next increment has exactly the other keys.
        direct = self.rc["us-west"].post_json("/increment", {"counter_name": name, "amount": 1})
        self.assertEqual(set(direct), REGION_ANSWER_KEYS)
        a = self.gw_incr(name, routing="us-west", amount=2)
        self.assertJsonEqual({k: a[k] for k in REGION_ANSWER_KEYS},
                             {"counter": name, "local_count": 6, "total_count": 6,
                              "node_id": "us-west-1", "region": "us-west"})
        # A client's idempotency token reaches the region: a retry to the same region is
        # its duplicate answer, plus the gateway's fields, and counts nothing more. (The
        # token names us-west as its home, so us-west counts it in its own entry.)
        body = {"counter_name": name, "amount": 5, "routing": "us-west",
                "idempotency_token": "us-west-1/gw-token-1"}
        first = self.gw.post_json("/api/increment", body)
        again = self.gw.post_json("/api/increment", body)
        self.assertEqual((first["local_count"], first.get("duplicate")), (11, None))
        self.assertEqual(set(again), REGION_ANSWER_KEYS | GATEWAY_EXTRA_KEYS | {"duplicate"})
        self.assertIs(again["duplicate"], True)
        self.assertEqual((again["local_count"], again["total_count"]), (11, 11))
        self.assertEqual(self.totals(name)["us-west"], 11)
        # Defaults: counter "views", amount 1, routing random.
        r = self.gw.post("/api/increment", b"")
        harness.assert_json_response(r, 200, "POST /api/increment with an empty body")
        a = r.json()
        self.assertEqual((a["counter"], a["routing"]), ("views", "random"))
        self.region_of(a)

    def test_routing_random_spreads(self):
        seen = {}
        for _ in range(60):
            a = self.gw_incr("rt_random")
            self.assertEqual(a["routing"], "random")
            region = self.region_of(a)
            seen[region] = seen.get(region, 0) + 1
        self.assertEqual(sorted(seen), sorted(NAMES), "60 random increments went to %r" % seen)
        self.assertEqual(sum(t for t in self.totals("rt_random").values()), 60)

    def test_random_routing_differs_between_gateway_processes(self):
        # Two gateways started the same way must not route the same "random" sequence (the
        # chance that 30 random picks of 3 agree is 3^-30): a policy's random numbers must
        # be seeded per process, or every gateway of a fleet sends the same burst to the
        # same region at the same time.
        seqs = []
        for k in range(2):
            g = harness.Server(self.topo.gateway.args, name="gateway-extra-%d" % k)
            self.addCleanup(g.stop)
            g.start()
            with g.client() as c:
                seqs.append([c.post_json("/api/increment", {"counter_name": "rt_seed"})["region"]
                             for _ in range(30)])
            g.stop()
        self.assertTrue(seqs[0] != seqs[1], "two fresh gateway processes routed the same 30 "
                        "'random' increments identically (the policy's math.random is not "
                        "seeded per process): %s" % " ".join(seqs[0]))

    def test_routing_round_robin(self):
        got = [self.region_of(self.gw_incr("rt_rr", routing="round-robin")) for _ in range(9)]
        self.assertEqual(sorted(got[:3]), sorted(NAMES), "3 consecutive round-robin: %r" % got)
        self.assertEqual(got[3:6], got[:3], "round-robin cycles: %r" % got)
        self.assertEqual(got[6:9], got[:3], "round-robin cycles: %r" % got)
        # The cycle is the regions' order.
        i = NAMES.index(got[0])
        self.assertEqual(got[:3], [NAMES[(i + k) % 3] for k in range(3)], "order %r" % got)

    def test_routing_sticky(self):
        names = ["st_%d" % i for i in range(30)] + ["views", "partition_demo", "a"]
        where = {}
        for n in names:
            got = {self.region_of(self.gw_incr(n, routing="sticky")) for _ in range(4)}
            self.assertEqual(len(got), 1, "sticky sent %s to %r" % (n, got))
            where[n] = got.pop()
        self.assertGreaterEqual(len(set(where.values())), 2, "sticky: %r" % where)
        self.assertEqual(where, {n: sticky_region(n) for n in names},
                         "sticky is FNV-1a(name) %% 3 over %r" % NAMES)

    def test_routing_explicit_region(self):
        for region in NAMES:
            for _ in range(5):
                a = self.gw_incr("rt_explicit", routing=region)
                self.assertEqual((self.region_of(a), a["routing"]), (region, region))
        self.assertEqual(self.totals("rt_explicit"), {r: 5 for r in NAMES})

    def test_routing_nearest(self):
        cases = [("us-west", "us-west"), ("eu-west", "eu-west"), ("us-east", "us-east"),
                 ("us-west-2", "us-west"), ("eu-west-1", "eu-west"), ("eu-central", "eu-west"),
                 ("ap-northeast", "us-west"), ("sa-east-1", "us-east")]
        for client_region, want in cases:
            for _ in range(3):
                a = self.gw_incr("rt_nearest", routing="nearest",
                                 headers={"X-Client-Region": client_region})
                self.assertEqual((self.region_of(a), a["routing"]), (want, "nearest"),
                                 "nearest from X-Client-Region %s" % client_region)
        # Without the header, or from nowhere known: some region, still 200.
        self.region_of(self.gw_incr("rt_nearest", routing="nearest"))
        self.region_of(self.gw_incr("rt_nearest", routing="nearest",
                                    headers={"X-Client-Region": "mars-base"}))

    def test_unknown_policy_is_400_and_counts_nothing(self):
        before = self.global_counter("rt_unknown")
        r = self.gw.post("/api/increment", {"counter_name": "rt_unknown", "routing": "teleport"})
        body = self.assertError(r, 400, "bad_field", "routing teleport",
                                detail_contains="teleport")
        for known in ("random", "round-robin", "sticky", "nearest"):
            self.assertIn(known, body["detail"], "the detail lists the known policies: %r" % body)
        for bad in (17, "", ["random"]):
            r = self.gw.post("/api/increment", {"counter_name": "rt_unknown", "routing": bad})
            self.assertError(r, 400, "bad_field", "routing %r" % (bad,),
                             detail_contains="routing")
        after = self.global_counter("rt_unknown")
        before.pop("query_time_ms"), after.pop("query_time_ms")
        self.assertJsonEqual(after, before, "a refused increment changed the counter")

    def test_gateway_bad_input(self):
        name = "gw_bad"
        self.gw_incr(name, routing="us-east", amount=4)
        before = self.totals(name)
        self.assertError(self.gw.post("/api/increment", b'{"counter_name":"gw_bad","amount":'),
                         400, "bad_json", "truncated JSON")
        self.assertError(self.gw.post("/api/increment", b'[1,2]'), 400, "bad_json",
                         "a JSON array")
        self.assertError(self.gw.post("/api/increment", b'not json'), 400, "bad_json", "not JSON")
        # amount "x": the region's own 400, relayed as it is.
        for region in NAMES:
            r = self.gw.post("/api/increment", {"counter_name": name, "amount": "x",
                                                "routing": region})
            body = self.assertError(r, 400, "bad_field", "amount \"x\" via %s" % region,
                                    detail_contains="amount")
            direct = self.rc[region].post("/increment", {"counter_name": name, "amount": "x"})
            self.assertEqual(direct.status, 400)
            self.assertJsonEqual(body, direct.json(), "the gateway relays the region's error")
        # The region's other verdicts are relayed too: 409 overflow, nothing applied.
        # Tokens that name eu-west: both go to its own entry, whether or not the gateway
        # has learned the regions' node ids yet (until then its own tokens name no home).
        r = self.gw.post("/api/increment", {"counter_name": "gw_over", "routing": "eu-west",
                                            "amount": 2 ** 63 - 1,
                                            "idempotency_token": "eu-west-1/over-1"})
        self.assertEqual(r.status, 200, r)
        self.assertError(self.gw.post("/api/increment", {"counter_name": "gw_over", "amount": 1,
                                                         "routing": "eu-west",
                                                         "idempotency_token": "eu-west-1/over-2"}),
                         409, "overflow", "overflow via the gateway")
        self.assertEqual(self.rc["eu-west"].get_json("/counter/gw_over")["total_count"], 2 ** 63 - 1)
        self.assertError(self.gw.post("/api/increment", b'{"counter_name":"gw_bad","pad":"' +
                                      b"a" * 70000 + b'"}'), 413, "too_large", "a 70 KB body")
        self.assertError(self.gw.post("/api/increment", {"counter_name": "bad name!"}), 400,
                         "bad_name", "a bad counter name")
        self.assertError(self.gw.get("/no/such/path"), 404, "not_found", "GET /no/such/path")
        self.assertError(self.gw.post("/api/nothing", {}), 404, "not_found", "POST /api/nothing")
        r = self.gw.get("/api/increment")
        self.assertError(r, 405, "method_not_allowed", "GET /api/increment")
        self.assertEqual(r.headers.get("allow"), "POST")
        self.assertError(self.gw.post("/api/counter/x", {}), 405, "method_not_allowed",
                         "POST /api/counter/x")
        self.assertError(self.gw.get("/admin/force-sync"), 405, "method_not_allowed",
                         "GET /admin/force-sync")
        self.assertEqual(self.totals(name), before, "bad requests changed the counter")
        self.assertJsonEqual(self.gw.get_json("/health"), {"status": "ok", "service": "gateway"})

    # Gateway: reads and admin ----------------------------------------------------------------

    def test_api_counter_is_coordinator_answer_plus_latency(self):
        name = "gw_read"
        self.incr_region("us-east", name, 2)
        self.incr_region("eu-west", name, 9)
        via = self.gw.get_json("/api/counter/%s" % name)
        direct = self.global_counter(name)
        self.assertEqual(set(via), GLOBAL_KEYS | {"gateway_latency_ms"}, "keys %r" % via)
        for d in (via, direct):
            self.assertIn(type(d.pop("query_time_ms")), (int, float))
        gl = via.pop("gateway_latency_ms")
        self.assertIn(type(gl), (int, float))
        self.assertGreaterEqual(gl, 0)
        self.assertEqual(round(gl, 2), gl, "gateway_latency_ms rounded to 2 decimals")
        self.assertJsonEqual(via, direct)
        self.assertEqual(via["global_count"], 9)
        self.assertError(self.gw.get("/api/counter/bad$name"), 400, "bad_name",
                         "GET /api/counter/bad$name")

    def test_api_counters_and_status_are_the_coordinators(self):
        self.incr_region("us-west", "gw_list", 1)
        via = self.gw.get_json("/api/counters")
        direct = self.co.get_json("/global/counters")
        for d in (via, direct):
            self.assertIn(type(d.pop("query_time_ms")), (int, float))
        self.assertJsonEqual(via, direct)
        self.assertIn("gw_list", via["counter_names"])
        self.assertJsonEqual(self.gw.get_json("/api/status"), self.co.get_json("/global/status"))

    def test_admin_partition_via_gateway(self):
        try:
            r = self.gw.post_json("/admin/partition/eu-west?enabled=true")
            self.assertJsonEqual(r, {"status": "success", "region": "eu-west",
                                     "network_partition": True})
            self.assertIs(self.rc["eu-west"].get_json("/admin/partition")["network_partition"], True)
        finally:
            r = self.gw.post_json("/admin/partition/eu-west?enabled=false")
        self.assertJsonEqual(r, {"status": "success", "region": "eu-west",
                                 "network_partition": False})
        self.assertIs(self.rc["eu-west"].get_json("/admin/partition")["network_partition"], False)
        try:
            r = self.gw.post_json("/admin/partition/all?enabled=true")
            self.assertJsonEqual(r, {"status": "success", "partition_enabled": True,
                                     "regions_updated": 3})
            self.assertEqual(self.co.get_json("/global/status")["partitioned_count"], 3)
        finally:
            r = self.gw.post_json("/admin/partition/all?enabled=false")
        self.assertJsonEqual(r, {"status": "success", "partition_enabled": False,
                                 "regions_updated": 3})
        self.assertEqual(self.co.get_json("/global/status")["partitioned_count"], 0)
        self.assertError(self.gw.post("/admin/partition/mars?enabled=true"), 404, "not_found",
                         "unknown region via the gateway", detail_contains="mars")
        self.assertError(self.gw.post("/admin/partition/us-east?enabled=maybe"), 400,
                         "bad_field", "enabled=maybe", detail_contains="enabled")
        self.assertError(self.gw.post("/admin/partition/us-east"), 400, "bad_field",
                         "no enabled", detail_contains="enabled")
        self.assertError(self.gw.post("/admin/partition/all?enabled=1"), 400, "bad_field",
                         "all?enabled=1", detail_contains="enabled")
        self.assertError(self.gw.get("/admin/partition/us-east?enabled=true"), 405,
                         "method_not_allowed", "GET /admin/partition/us-east")
        self.assertIs(self.rc["us-east"].get_json("/admin/partition")["network_partition"], False)

    def test_admin_force_sync_via_gateway(self):
        name = "gw_sync"
        self.incr_region("us-east", name, 1)
        self.incr_region("eu-west", name, 2)
        fs = self.gw.post_json("/admin/force-sync")
        self.assertEqual((fs["status"], fs["regions_synced"]), ("sync_initiated", 3), fs)
        self.assertEqual(self.totals(name), {r: 3 for r in NAMES})

    def test_dashboard_page(self):
        r = self.gw.get("/")
        self.assertEqual(r.status, 200, "GET /: %r" % r)
        self.assertTrue(r.content_type.startswith("text/html"), "Content-Type %r" % r.content_type)
        self.assertIn(b"<html", r.body.lower())

    # Metrics ---------------------------------------------------------------------------------

    def test_metrics(self):
        def gw_samples():
            return harness.parse_metrics(self.gw.get("/metrics").text())

        def one(samples, name, **labels):
            v = harness.metric_values(samples, name, **labels)
            self.assertEqual(len(v), 1, "%s%r: %r" % (name, labels, v))
            return v[0]

        s0 = gw_samples()

        def get0(name, **labels):
            v = harness.metric_values(s0, name, **labels)
            return v[0] if v else 0

        ok0 = get0("gateway_requests_total", method="POST", endpoint="/api/increment", status="200")
        bad0 = get0("gateway_requests_total", method="POST", endpoint="/api/increment", status="400")
        west0 = get0("gateway_routed_to_region_total", region="us-west")
        east0 = get0("gateway_routed_to_region_total", region="us-east")
        dur0 = get0("gateway_request_duration_seconds_count", endpoint="/api/increment")
        for _ in range(7):
            self.gw_incr("m_gw", routing="us-west")
        self.gw.post("/api/increment", {"routing": "nowhere"})
        self.gw.get_json("/api/status")
        s1 = gw_samples()
        self.assertEqual(one(s1, "gateway_requests_total", method="POST",
                             endpoint="/api/increment", status="200"), ok0 + 7)
        self.assertEqual(one(s1, "gateway_requests_total", method="POST",
                             endpoint="/api/increment", status="400"), bad0 + 1)
        self.assertGreaterEqual(one(s1, "gateway_requests_total", method="GET",
                                    endpoint="/api/status", status="200"), 1)
        self.assertEqual(one(s1, "gateway_routed_to_region_total", region="us-west"), west0 + 7)
        self.assertEqual(one(s1, "gateway_routed_to_region_total", region="us-east"), east0)
        self.assertEqual(one(s1, "gateway_request_duration_seconds_count",
                             endpoint="/api/increment"), dur0 + 8)
        self.assertEqual(one(s1, "gateway_request_duration_seconds_bucket",
                             endpoint="/api/increment", le="+Inf"), dur0 + 8)
        self.assertEqual(sorted(l["region"] for n, l, _ in s1
                                if n == "gateway_routed_to_region_total"), sorted(NAMES))
        gw_text = self.gw.get("/metrics")
        self.assertTrue(gw_text.content_type.startswith("text/plain"), gw_text.content_type)
        self.promtool(gw_text.text(), "gateway")

        self.incr_region("us-east", "m_co", 4)
        self.incr_region("us-west", "m_co", 1)
        c0 = harness.parse_metrics(self.co.get("/metrics").text())
        q0 = harness.metric_values(c0, "coordinator_query_latency_seconds_count",
                                   operation="global_counter")
        self.global_counter("m_co")
        r = self.co.get("/metrics")
        self.assertTrue(r.content_type.startswith("text/plain"), r.content_type)
        c1 = harness.parse_metrics(r.text())
        self.assertEqual(one(c1, "coordinator_global_count", counter_name="m_co"), 4)
        self.assertEqual(one(c1, "coordinator_region_count", counter_name="m_co", region="us-east"), 4)
        self.assertEqual(one(c1, "coordinator_region_count", counter_name="m_co", region="us-west"), 1)
        self.assertEqual(one(c1, "coordinator_region_count", counter_name="m_co", region="eu-west"), 0)
        self.assertEqual(one(c1, "coordinator_convergence_lag", counter_name="m_co"), 4)
        self.assertEqual(one(c1, "coordinator_healthy_regions"), 3)
        self.assertEqual(one(c1, "coordinator_query_latency_seconds_count",
                             operation="global_counter"), (q0[0] if q0 else 0) + 1)
        self.promtool(r.text(), "coordinator")


class RegionDown(Base):
    """A region that is stopped, or frozen (SIGSTOP: it accepts connections and never
    answers): the coordinator leaves it out and answers in time; the gateway fails over."""

    def setUp(self):
        super().setUp()
        self.clients(harness.Topology().start(self.addCleanup))

    def timed(self, fn, *args):
        t0 = time.monotonic()
        out = fn(*args)
        return out, time.monotonic() - t0

    def test_empty_lab_lists_no_counters(self):
        got = self.co.get_json("/global/counters")
        self.assertEqual(got["counter_names"], [], "counter_names of an empty lab: %r" % got)
        via = self.gw.get_json("/api/counters")
        self.assertEqual(via["counter_names"], [])

    def test_stopped_region(self):
        name = "down"
        for region in NAMES:
            self.incr_region(region, name, 1)
        self.force_sync()
        west = self.t.region("us-west")
        self.rc["us-west"].close()
        west.stop()  # SIGTERM, clean exit checked

        got, took = self.timed(self.global_counter, name)
        self.assertLess(took, 3.0, "/global/counter with a region stopped took %.2f s" % took)
        nodes = {n: 1 for _, n in harness.LAB_REGIONS}
        self.assertGlobal(got, name, {
            "us-east": {"local_count": 1, "total_count": 3, "nodes": nodes},
            "eu-west": {"local_count": 1, "total_count": 3, "nodes": nodes},
        }, healthy=2)

        st, took = self.timed(self.co.get_json, "/global/status")
        self.assertLess(took, 3.0)
        self.assertJsonEqual(status_view(self, st), {"regions": {
            "us-east": {"status": "healthy", "node_id": "us-east-1", "network_partition": False},
            "us-west": {"status": "unhealthy"},
            "eu-west": {"status": "healthy", "node_id": "eu-west-1", "network_partition": False},
        }, "healthy_count": 2, "partitioned_count": 0})
        self.assertJsonEqual(self.gw.get_json("/api/status"), st)

        gc = self.co.get_json("/global/counters")
        self.assertEqual((sorted(gc["regions"]), gc["healthy_regions"], gc["total_regions"]),
                         (["eu-west", "us-east"], 2, 3))
        self.assertEqual(gc["counter_names"], [name])

        # Increments routed to the stopped region fail over to a healthy one: 200 each.
        for policy, headers in (("us-west", None), ("nearest", {"X-Client-Region": "us-west"}),
                                ("us-west", None), ("sticky", None), ("round-robin", None),
                                ("round-robin", None), ("round-robin", None), ("random", None)):
            a = self.gw_incr(name, routing=policy, headers=headers)
            self.assertIn(self.region_of(a), ("us-east", "eu-west"),
                          "policy %s with us-west down: %r" % (policy, a))
            self.assertEqual(a["routing"], policy)
        # The regions that are up cannot reach us-west: the sync failed, and says where.
        fs = self.force_sync(expect_synced=0, status=502)
        self.assertEqual(fs["regions"]["us-west"]["status"], "unreachable", fs)
        self.assertEqual(fs["regions"]["us-east"]["status"], "sync_failed", fs)
        r = self.co.post_json("/global/partition/all?enabled=false")
        self.assertJsonEqual(r, {"status": "success", "partition_enabled": False,
                                 "regions_updated": 2})
        r = self.co.post("/global/partition", {"region": "us-west", "enabled": True})
        self.assertError(r, 503, "unavailable", "partition a stopped region")
        # Every increment counted exactly once: 3 + 8 failed-over ones.
        got = self.global_counter(name)
        self.assertEqual(got["global_count"], 11, "after failover: %r" % got)
        self.assertEqual({k: v["total_count"] for k, v in got["regions"].items()},
                         {"us-east": 11, "eu-west": 11})
        self.assertIs(got["convergence"]["converged"], True)

        # Back: it catches up and everything agrees.
        west.start()
        self.rc["us-west"] = west.client()
        self.addCleanup(self.rc["us-west"].close)
        self.force_sync()
        self.assertEqual(self.totals(name), {r: 11 for r in NAMES})

    def test_every_region_down(self):
        for r in self.t.regions:
            self.rc[r.region].close()
            r.stop()
        t0 = time.monotonic()
        r = self.gw.post("/api/increment", {"counter_name": "nothing_up", "routing": "us-east"})
        took = time.monotonic() - t0
        self.assertError(r, 503, "unavailable", "an increment with every region down")
        self.assertLess(took, 3.0, "the 503 took %.2f s" % took)
        got, took = self.timed(self.global_counter, "nothing_up")
        self.assertLess(took, 3.0)
        self.assertGlobal(got, "nothing_up", {}, healthy=0)
        st = self.co.get_json("/global/status")
        self.assertJsonEqual(st, {"regions": {r: {"status": "unhealthy"} for r in NAMES},
                                  "healthy_count": 0, "partitioned_count": 0})
        gc = self.co.get_json("/global/counters")
        self.assertEqual((gc["regions"], gc["counter_names"], gc["healthy_regions"]), ({}, [], 0))
        fs = self.force_sync(expect_synced=0, status=502)
        self.assertEqual({r["status"] for r in fs["regions"].values()}, {"unreachable"}, fs)
        self.assertJsonEqual(self.gw.get_json("/health"), {"status": "ok", "service": "gateway"})

    def test_coordinator_down(self):
        self.co.close()
        self.t.coordinator.stop()
        for path in ("/api/counter/views", "/api/counters", "/api/status"):
            r, took = self.timed(self.gw.get, path)
            self.assertError(r, 503, "unavailable", "GET %s with the coordinator down" % path)
            self.assertLess(took, 3.5, "GET %s took %.2f s" % (path, took))
        for path in ("/admin/force-sync", "/admin/partition/us-east?enabled=true"):
            self.assertError(self.gw.post(path), 503, "unavailable",
                             "POST %s with the coordinator down" % path)
        # Increments do not need the coordinator.
        a = self.gw_incr("co_down", routing="eu-west")
        self.assertEqual(self.region_of(a), "eu-west")
        self.assertIs(self.rc["us-east"].get_json("/admin/partition")["network_partition"], False)

    def test_frozen_region_times_out(self):
        name = "frozen"
        self.incr_region("us-east", name, 2)
        self.incr_region("eu-west", name, 3)
        self.incr_region("us-west", name, 4)
        west = self.t.region("us-west")
        os.kill(west.proc.pid, signal.SIGSTOP)
        try:
            got, took = self.timed(self.global_counter, name)
            print("\n[65] /global/counter with us-west frozen: %.2f s" % took)
            self.assertLess(took, 3.0, "/global/counter with a frozen region took %.2f s" % took)
            self.assertGlobal(got, name, {
                "us-east": {"local_count": 2, "total_count": 2, "nodes": {"us-east-1": 2}},
                "eu-west": {"local_count": 3, "total_count": 3, "nodes": {"eu-west-1": 3}},
            }, healthy=2)
            st, took = self.timed(self.co.get_json, "/global/status")
            self.assertLess(took, 3.0, "/global/status with a frozen region took %.2f s" % took)
            self.assertJsonEqual(st["regions"]["us-west"], {"status": "unhealthy"})
            self.assertEqual(st["healthy_count"], 2)
            gw, took = self.timed(self.gw.get_json, "/api/counter/%s" % name)
            self.assertLess(took, 3.5, "/api/counter with a frozen region took %.2f s" % took)
            self.assertEqual((gw["healthy_regions"], gw["global_count"]), (2, 3))
        finally:
            os.kill(west.proc.pid, signal.SIGCONT)
        got = self.global_counter(name)
        self.assertEqual((got["healthy_regions"], got["global_count"]), (3, 4))


if __name__ == "__main__":
    unittest.main()
