"""
85_strong_quorum.py - the strong counter: API.md's endpoints field by field, and the
quorum guarantee through the real binaries.

Three region nodes (each hosting one replica, with a data dir), a coordinator, the strong
leader (--role strong) and a gateway. The WAN latency model of lua/policies/faults.lua is
on, as in the lab.

- The API: /health, /increment (defaults), /counter/{name}, /counters, errors.
- Quorum: with two regions partitioned, strong increments fail with 503 no_quorum and
  change nothing, while eventual increments through the gateway keep succeeding; one
  partitioned region is fine (2 of 3 is a majority); after healing the value is exact.
- no_quorum only when provably nothing was applied (no replica took the proposal, or the
  next round replaced it); 503 ambiguous when a replica may hold it and the leader cannot
  tell (its answers lost): counted in counterd_strong_increment_failures_total.
- Durability: replicas without a data dir count toward no majority (503 no_quorum naming
  them, /health and metrics list them) unless --allow-volatile-replicas, and then every
  answer says "durable": false, and a restart of everything indeed loses the values.
- Latency: a strong increment waits for a majority round across the WAN (us-east's leader
  and the nearest other region, us-west, ~35 ms each way), so it is much slower than an
  eventual one; POST /admin/coordination-delay replaces the model for strong traffic.
- Concurrency: increments from many clients are ordered: every answer's value is distinct
  and the final value is the sum.
- Durability: after SIGKILL of the leader and of every region, all restarted, the value
  is every acknowledged increment exactly (replicas fsync before they accept).
- Two leaders: a second leader takes over with a higher epoch; the first one's next round
  is refused (stale epoch), it recovers, and its following increments include the second
  leader's: no acknowledged increment is lost.
"""

import concurrent.futures
import os
import shutil
import signal
import tempfile
import time
import unittest

import harness


def strong_incr(srv, name, amount=1, status=200):
    with srv.client(timeout=15) as c:
        return c.post_json("/increment", {"counter_name": name, "amount": amount}, status)


def strong_value(srv, name):
    with srv.client() as c:
        return c.get_json("/counter/%s" % name)["value"]


def set_partition(topo, region, on):
    with topo.region(region).client() as c:
        c.post_json("/admin/partition", {"enabled": on})


def strong_metrics(srv):
    with srv.client() as c:
        return harness.parse_metrics(c.get("/metrics").text())


def failures(srv, error):
    return harness.metric_values(strong_metrics(srv), "counterd_strong_increment_failures_total",
                                 error=error)[0]


def wait_health(test, srv, pred, timeout=10):
    """Polls the strong counter's /health until pred(health) holds; returns the health."""
    deadline = time.monotonic() + timeout
    while True:
        with srv.client() as c:
            h = c.get_json("/health")
        if pred(h):
            return h
        if time.monotonic() > deadline:
            test.fail("the strong counter's /health never got there: %r" % h)
        time.sleep(0.05)


class StrongTest(harness.ServerTestCase):
    def setUp(self):
        super().setUp()
        self.data = tempfile.mkdtemp(prefix="counterd-strong-")
        self.addCleanup(shutil.rmtree, self.data, True)
        self.topo = harness.Topology(
            region_args=lambda i: ["--data-dir", "%s/r%d" % (self.data, i)], strong=True)
        self.topo.start(self.addCleanup)
        self.strong = self.topo.strong
        self.wait_ready(self.strong)

    def wait_ready(self, srv, timeout=10):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with srv.client() as c:
                h = c.get_json("/health")
            if h.get("ready"):
                return h
            time.sleep(0.05)
        self.fail("the strong leader did not recover from a majority in %d s" % timeout)

    def test_api_fields(self):
        with self.strong.client() as c:
            h = c.get_json("/health")
            self.assertEqual(h["status"], "ok")
            self.assertEqual(h["service"], "counter-consistent")
            self.assertEqual((h["durable"], h["allow_volatile_replicas"], h["volatile_replicas"]),
                             (True, False, []))
            a = c.post_json("/increment", {"counter_name": "s1", "amount": 5})
            self.assertEqual(set(a), {"counter", "value", "consistency", "durable", "lock_wait_ms",
                                      "coordination_delay_ms", "total_latency_ms"})
            self.assertIs(a["durable"], True)
            self.assertEqual(a["counter"], "s1")
            self.assertEqual(a["value"], 5)
            self.assertIsCount(a["value"])
            self.assertEqual(a["consistency"], "strong")
            for k in ("lock_wait_ms", "coordination_delay_ms", "total_latency_ms"):
                self.assertIsInstance(a[k], (int, float), k)
                self.assertGreaterEqual(a[k], 0, k)
            self.assertGreaterEqual(a["total_latency_ms"], a["coordination_delay_ms"])
            # Defaults: counter "views", amount 1.
            d = c.post_json("/increment", {})
            self.assertEqual((d["counter"], d["value"]), ("views", 1))
            r = c.get_json("/counter/s1")
            self.assertEqual(r, {"counter": "s1", "value": 5, "consistency": "strong",
                                 "note": "This value is guaranteed to be the latest",
                                 "durable": True})
            self.assertEqual(c.get_json("/counter/never")["value"], 0)
            all_ = c.get_json("/counters")
            self.assertEqual(all_, {"counters": {"s1": 5, "views": 1},
                                    "consistency": "strong", "durable": True})
            # Bad input: 400 with a detail naming the field; nothing changes.
            self.assertError(c.post("/increment", {"counter_name": "s1", "amount": 1.5}), 400,
                             "bad_field", detail_contains="amount")
            self.assertError(c.post("/increment", {"counter_name": "s1", "amount": "2"}), 400,
                             "bad_field", detail_contains="amount")
            self.assertError(c.post("/increment", {"counter_name": "bad name"}), 400,
                             "bad_name", detail_contains="counter_name")
            self.assertError(c.post("/increment", b"{nope"), 400, "bad_json")
            self.assertError(c.post("/increment", {"counter_name": "s1",
                                                   "amount": 2 ** 63}), 400, "bad_field")
            self.assertError(c.get("/increment"), 405, "method_not_allowed")
            self.assertError(c.get("/nowhere"), 404, "not_found")
            self.assertError(c.get("/counter/a%20b"), 400, "bad_name")
            self.assertEqual(c.get_json("/counter/s1")["value"], 5)
            # Overflow: 409, nothing applied.
            c.post_json("/increment", {"counter_name": "big", "amount": 2 ** 63 - 1})
            self.assertError(c.post("/increment", {"counter_name": "big", "amount": 1}), 409,
                             "overflow")
            self.assertEqual(c.get_json("/counter/big")["value"], 2 ** 63 - 1)
            # Metrics of API.md.
            text = c.get("/metrics").text()
        samples = harness.parse_metrics(text)
        self.assertEqual(harness.metric_values(samples, "consistent_counter_value",
                                               counter_name="s1"), [5.0])
        self.assertEqual(harness.metric_values(samples, "consistent_counter_increments_total",
                                               counter_name="s1"), [1.0])
        for name in ("consistent_counter_increment_latency_seconds_count",
                     "consistent_counter_lock_wait_seconds_count"):
            self.assertEqual(harness.metric_values(samples, name), [3.0], name)
        for error, n in (("overflow", 1), ("no_quorum", 0), ("ambiguous", 0)):
            self.assertEqual(harness.metric_values(
                samples, "counterd_strong_increment_failures_total", error=error), [n], error)
        for r in self.topo.regions:
            self.assertEqual(harness.metric_values(samples, "counterd_strong_replica_durable",
                                                   replica=r.region), [1.0], r.region)

    def test_no_quorum_without_a_majority_and_exact_after_heal(self):
        strong_incr(self.strong, "q", 3)
        # One region partitioned: 2 of 3 replicas still make a majority.
        set_partition(self.topo, "eu-west", True)
        self.assertEqual(strong_incr(self.strong, "q", 1)["value"], 4)
        # Two partitioned: no majority. Strong fails and applies nothing...
        set_partition(self.topo, "us-west", True)
        details = []
        for _ in range(3):
            with self.strong.client(timeout=15) as c:
                body = self.assertError(c.post("/increment", {"counter_name": "q", "amount": 100}),
                                        503, "no_quorum")
            self.assertIn("nothing was applied", body["detail"])
            self.assertIn("us-west", body["detail"])
            details.append(body["detail"])
        # The first one reached us-east, which took it; the leader's next round (the repair)
        # replaced it there before the answer: provably not applied. The next ones wait
        # behind a repair that finds no majority: never sent.
        self.assertIn("replaced its proposal on every replica that had taken it", details[0])
        for d in details[1:]:
            self.assertIn("was not sent", d)
        self.assertEqual(strong_value(self.strong, "q"), 4)
        self.assertEqual(failures(self.strong, "no_quorum"), 3)
        self.assertEqual(failures(self.strong, "ambiguous"), 0)
        # ...while eventual increments through the gateway keep succeeding (AP beside CP).
        with self.topo.gateway.client() as g:
            for _ in range(10):
                g.post_json("/api/increment", {"counter_name": "q_eventual", "amount": 1})
        # Heal: strong works again, and its value is exact.
        set_partition(self.topo, "us-west", False)
        set_partition(self.topo, "eu-west", False)
        self.assertEqual(strong_incr(self.strong, "q", 1)["value"], 5)
        self.assertEqual(strong_value(self.strong, "q"), 5)
        # The failed proposals are gone from the replicas too: a new leader, recovering
        # from them, finds 5.
        self.strong.stop()
        self.strong.start()
        self.wait_ready(self.strong)
        self.assertEqual(strong_value(self.strong, "q"), 5)

    def test_no_quorum_when_no_replica_takes_it(self):
        self.assertEqual(strong_incr(self.strong, "n", 2)["value"], 2)
        for r in self.topo.regions:
            set_partition(self.topo, r.region, True)
        with self.strong.client(timeout=15) as c:
            body = self.assertError(c.post("/increment", {"counter_name": "n", "amount": 5}),
                                    503, "no_quorum")
        self.assertIn("no replica took it: nothing was applied", body["detail"])
        for r in self.topo.regions:
            self.assertIn(r.region + ": 503 partitioned", body["detail"])
        for r in self.topo.regions:
            set_partition(self.topo, r.region, False)
        self.assertEqual(strong_incr(self.strong, "n", 1)["value"], 3)
        # A new leader recovering from the replicas finds the same.
        self.strong.stop()
        self.strong.start()
        self.wait_ready(self.strong)
        self.assertEqual(strong_value(self.strong, "n"), 3)

    def test_no_quorum_with_two_regions_down(self):
        self.assertEqual(strong_incr(self.strong, "d", 4)["value"], 4)
        # Killed: their connections are refused, so they provably never got the proposal;
        # us-east took it and then the repair's higher ballot.
        for name in ("us-west", "eu-west"):
            self.topo.region(name).kill()
        with self.strong.client(timeout=15) as c:
            body = self.assertError(c.post("/increment", {"counter_name": "d", "amount": 9}),
                                    503, "no_quorum")
        self.assertIn("us-west: unreachable", body["detail"])
        self.assertIn("replaced its proposal on every replica that had taken it", body["detail"])
        for name in ("us-west", "eu-west"):
            self.topo.region(name).start()
        self.assertEqual(strong_incr(self.strong, "d", 1)["value"], 5)
        self.assertEqual(failures(self.strong, "ambiguous"), 0)

    def test_strong_is_slower_than_eventual_by_the_wan_round(self):
        strong_ms = [strong_incr(self.strong, "lat")["total_latency_ms"] for _ in range(5)]
        with self.topo.gateway.client() as g:
            eventual_ms = [g.post_json("/api/increment", {"counter_name": "lat"})["latency_ms"]
                           for _ in range(5)]
        # us-east's leader needs us-west (35 ms each way) for its majority.
        self.assertGreater(min(strong_ms), 60, strong_ms)
        self.assertGreater(min(strong_ms), 5 * max(eventual_ms), (strong_ms, eventual_ms))
        with self.strong.client() as c:
            r = c.post_json("/admin/coordination-delay?delay_ms=0")
            self.assertEqual(r["coordination_delay_ms"], 0)
            self.assertIsInstance(r["message"], str)
            fast = [c.post_json("/increment", {"counter_name": "lat"})["coordination_delay_ms"]
                    for _ in range(5)]
            self.assertLess(min(fast), 30, fast)
            c.post_json("/admin/coordination-delay?delay_ms=100")
            slow = c.post_json("/increment", {"counter_name": "lat"})
            self.assertGreaterEqual(slow["coordination_delay_ms"], 195)
            back = c.post_json("/admin/coordination-delay?delay_ms=default")
            self.assertIsNone(back["coordination_delay_ms"])
            self.assertError(c.post("/admin/coordination-delay?delay_ms=-1"), 400, "bad_field",
                             detail_contains="delay_ms")
            self.assertError(c.post("/admin/coordination-delay"), 400, "bad_field",
                             detail_contains="delay_ms")
        self.assertEqual(strong_value(self.strong, "lat"), 11)

    def test_concurrent_increments_are_ordered(self):
        threads, each = 16, 8

        def worker(_):
            return [strong_incr(self.strong, "order")["value"] for _ in range(each)]

        with concurrent.futures.ThreadPoolExecutor(threads) as ex:
            values = [v for vs in ex.map(worker, range(threads)) for v in vs]
        self.assertEqual(sorted(values), list(range(1, threads * each + 1)))
        self.assertEqual(strong_value(self.strong, "order"), threads * each)

    def test_kill_everything_loses_no_acknowledged_increment(self):
        acked = sum(strong_incr(self.strong, "dur", 2)["value"] > 0 for _ in range(20)) * 2
        self.assertEqual(acked, 40)
        self.strong.kill()
        for r in self.topo.regions:
            r.kill()
        for r in self.topo.regions:
            r.start(wait=False)
        for r in self.topo.regions:
            r.wait_ready()
        self.strong.start()
        self.wait_ready(self.strong)
        self.assertEqual(strong_value(self.strong, "dur"), acked)
        self.assertEqual(strong_incr(self.strong, "dur", 1)["value"], acked + 1)

    def test_a_second_leader_takes_over_without_losing_increments(self):
        strong_incr(self.strong, "two", 10)
        b = self.start_server(["--role", "strong", "--region", "us-east", "--regions",
                               self.topo.endpoints], name="strong-b")
        self.wait_ready(b)
        self.assertEqual(strong_value(b, "two"), 10)
        self.assertEqual(strong_incr(b, "two", 5)["value"], 15)
        # The first leader's next round meets promises of a newer epoch: refused, nothing
        # applied; it recovers and goes on from the value the second one committed.
        with self.strong.client(timeout=15) as c:
            r = c.post("/increment", {"counter_name": "two", "amount": 1})
        self.assertIn(r.status, (200, 503), r.body)
        deadline = time.monotonic() + 10
        while True:
            with self.strong.client(timeout=15) as c:
                r2 = c.post("/increment", {"counter_name": "two", "amount": 1})
            if r2.status == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        self.assertEqual(r2.status, 200, r2.body)
        expected = 15 + (1 if r.status == 200 else 0) + 1
        self.assertEqual(r2.json()["value"], expected)
        with self.strong.client() as c:
            self.assertGreater(c.get_json("/health")["epoch"], 2)


class StrongStartupTest(harness.ServerTestCase):
    def test_without_replicas_it_refuses_then_serves_when_they_come(self):
        topo = harness.Topology(strong=True)
        # Start only the strong leader first: its replicas are not there yet.
        topo.strong.start(wait=False)
        self.addCleanup(topo.strong.stop)
        topo.strong.wait_ready()
        with topo.strong.client(timeout=15) as c:
            self.assertEqual(c.get_json("/health")["ready"], False)
            self.assertError(c.post("/increment", {"counter_name": "x"}), 503, "no_quorum")
            self.assertError(c.get("/counter/x"), 503, "no_quorum")
        for r in topo.regions[:2]:
            r.start()
            self.addCleanup(r.stop)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with topo.strong.client() as c:
                if c.get_json("/health")["ready"]:
                    break
            time.sleep(0.1)
        self.assertEqual(strong_incr(topo.strong, "x", 2)["value"], 2)


class StrongWithTokenTest(harness.ServerTestCase):
    """Every service with the same --admin-token: the leader sends it to the replicas'
    /strong/* endpoints, which refuse calls without it."""

    def test_the_leader_carries_the_admin_token_to_its_replicas(self):
        auth = ["--admin-token", "t0ken"]
        topo = harness.Topology(region_args=auth, coordinator_args=auth, gateway_args=auth,
                                strong=True, strong_args=auth)
        topo.start(self.addCleanup)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with topo.strong.client() as c:
                if c.get_json("/health").get("ready"):
                    break
            time.sleep(0.05)
        for i in range(1, 4):
            self.assertEqual(strong_incr(topo.strong, "tok")["value"], i)
        with topo.region("us-west").client() as c:
            self.assertError(c.post("/strong/prepare", {}), 401, "unauthorized")
        with topo.gateway.client(timeout=30) as c:
            r = c.post_json("/api/compare", {"counter_name": "tokb", "iterations": 3})
        self.assertEqual(r["strong_consistency"]["samples"], 3)


class StrongAmbiguousTest(harness.ServerTestCase):
    """Answers lost on the way back: the leader cannot tell whether a replica holds its
    proposal, so the increment's outcome is unknown (503 ambiguous), not no_quorum."""

    def test_a_lost_answer_makes_the_outcome_unknown(self):
        data = tempfile.mkdtemp(prefix="counterd-strong-")
        self.addCleanup(shutil.rmtree, data, True)
        lua = os.path.join(data, "lua")
        shutil.copytree(os.environ.get("COUNTERD_LUA_DIR") or
                        os.path.join(harness.REPO_ROOT, "lua"), lua)
        topo = harness.Topology(region_args=lambda i: ["--data-dir", "%s/r%d" % (data, i)],
                                strong=True, strong_args=["--lua-dir", lua])
        topo.start(self.addCleanup)
        strong = topo.strong
        wait_health(self, strong, lambda h: h["ready"])
        self.assertEqual(strong_incr(strong, "amb", 10)["value"], 10)
        # us-west's answers are lost on their way back (it still stores what it gets), and
        # eu-west is partitioned: no majority, and us-west may hold the proposal.
        faults = os.path.join(lua, "policies", "faults.lua")
        good = harness.read_text(faults)
        decide = "function M.decide(dir, from, to, kind, partitioned)\n"
        self.assertEqual(good.count(decide), 1)
        harness.write_atomic(faults, good.replace(decide, decide +
                             '  if kind == "strong-ack" and M.region_of(from) == "us-west" then\n'
                             '    return "drop"\n  end\n'))
        with strong.client(timeout=10) as c:
            harness.assert_json_response(c.post("/admin/reload"), 200, "reload")
        set_partition(topo, "eu-west", True)
        with strong.client(timeout=15) as c:
            body = self.assertError(c.post("/increment", {"counter_name": "amb", "amount": 5}),
                                    503, "ambiguous")
        self.assertIn("may or may not have been applied", body["detail"])
        self.assertIn("us-west may hold its proposal", body["detail"])
        self.assertIn("answer dropped by the faults policy", body["detail"])
        self.assertEqual(failures(strong, "ambiguous"), 1)
        self.assertEqual(failures(strong, "no_quorum"), 0)
        self.assertIn("answered ambiguous", strong.log_text())
        # Reads still answer the committed value.
        self.assertEqual(strong_value(strong, "amb"), 10)
        # Healed, the leader's repair round settles it at a majority: not applied, and the
        # next increment counts from the committed value.
        harness.write_atomic(faults, good)
        with strong.client(timeout=10) as c:
            harness.assert_json_response(c.post("/admin/reload"), 200, "reload")
        set_partition(topo, "eu-west", False)
        self.assertEqual(strong_incr(strong, "amb", 1)["value"], 11)
        strong.stop()
        strong.start()
        wait_health(self, strong, lambda h: h["ready"])
        self.assertEqual(strong_value(strong, "amb"), 11)

    def test_a_frozen_replica_makes_the_outcome_unknown(self):
        data = tempfile.mkdtemp(prefix="counterd-strong-")
        self.addCleanup(shutil.rmtree, data, True)
        topo = harness.Topology(region_args=lambda i: ["--data-dir", "%s/r%d" % (data, i)],
                                strong=True, strong_args=["--upstream-timeout-ms", "400"])
        topo.start(self.addCleanup)
        strong = topo.strong
        wait_health(self, strong, lambda h: h["ready"])
        self.assertEqual(strong_incr(strong, "frz", 7)["value"], 7)
        # us-west frozen (SIGSTOP): what it got, it may have taken; eu-west partitioned.
        west = topo.region("us-west")
        set_partition(topo, "eu-west", True)
        west.proc.send_signal(signal.SIGSTOP)
        try:
            with strong.client(timeout=15) as c:
                body = self.assertError(c.post("/increment", {"counter_name": "frz"}), 503,
                                        "ambiguous")
        finally:
            west.proc.send_signal(signal.SIGCONT)
        self.assertIn("us-west may hold its proposal", body["detail"])
        self.assertIn("us-west: unreachable (Operation timed out", body["detail"])
        self.assertEqual(failures(strong, "ambiguous"), 1)
        set_partition(topo, "eu-west", False)
        # Thawed, us-west takes the repair's higher ballot too: the increment is not applied,
        # and nothing is counted twice.
        self.assertEqual(strong_incr(strong, "frz", 1)["value"], 8)
        strong.stop()
        strong.start()
        wait_health(self, strong, lambda h: h["ready"])
        self.assertEqual(strong_value(strong, "frz"), 8)


class StrongDurabilityTest(harness.ServerTestCase):
    """Region nodes without DATA_DIR keep the strong counter's replicas in memory only."""

    def test_replicas_without_data_are_refused(self):
        # The case: acknowledged as stored by a majority, gone after a restart. Now
        # the leader counts replicas that keep no data toward no majority.
        topo = harness.Topology(strong=True, strong_args=["--allow-volatile-replicas=0"])
        topo.start(self.addCleanup)
        h = wait_health(self, topo.strong, lambda h: len(h["volatile_replicas"]) == 3)
        self.assertEqual((h["ready"], h["allow_volatile_replicas"]), (False, False), h)
        self.assertEqual(sorted(h["volatile_replicas"]), ["eu-west", "us-east", "us-west"])
        self.assertIn("DATA_DIR", h["last_error"])
        with topo.strong.client(timeout=15) as c:
            body = self.assertError(c.post("/increment", {"counter_name": "v"}), 503,
                                    "no_quorum")
            self.assertIn("us-west: keeps no data (its region node has no DATA_DIR)",
                          body["detail"])
            self.assertIn("nothing was applied", body["detail"])
            body = self.assertError(c.get("/counter/v"), 503, "no_quorum")
            self.assertIn("DATA_DIR", body["detail"])
        samples = strong_metrics(topo.strong)
        for r in topo.regions:
            self.assertEqual(harness.metric_values(samples, "counterd_strong_replica_durable",
                                                   replica=r.region), [0.0], r.region)
        self.assertIn("--allow-volatile-replicas", topo.strong.log_text())

    def test_one_replica_without_data_leaves_a_durable_majority(self):
        data = tempfile.mkdtemp(prefix="counterd-strong-")
        self.addCleanup(shutil.rmtree, data, True)
        topo = harness.Topology(
            region_args=lambda i: ["--data-dir", "%s/r%d" % (data, i)] if i < 2 else [],
            strong=True, strong_args=["--allow-volatile-replicas=0"])
        topo.start(self.addCleanup)
        wait_health(self, topo.strong, lambda h: h["ready"])
        a = strong_incr(topo.strong, "m", 3)
        self.assertEqual((a["value"], a["durable"]), (3, True))
        h = wait_health(self, topo.strong, lambda h: h["volatile_replicas"] == ["eu-west"])
        self.assertIs(h["durable"], True)
        # eu-west does not count: with us-west partitioned there is no majority.
        set_partition(topo, "us-west", True)
        with topo.strong.client(timeout=15) as c:
            body = self.assertError(c.post("/increment", {"counter_name": "m"}), 503,
                                    "no_quorum")
        self.assertIn("eu-west: keeps no data", body["detail"])
        set_partition(topo, "us-west", False)
        self.assertEqual(strong_incr(topo.strong, "m", 1)["value"], 4)

    def test_allowed_volatile_replicas_say_durable_false(self):
        topo = harness.Topology(strong=True, strong_args=["--allow-volatile-replicas"])
        topo.start(self.addCleanup)
        h = wait_health(self, topo.strong, lambda h: h["ready"])
        self.assertEqual((h["durable"], h["allow_volatile_replicas"]), (False, True), h)
        for i in range(1, 21):
            a = strong_incr(topo.strong, "vol", 2)
            self.assertEqual((a["value"], a["durable"]), (2 * i, False))
        with topo.strong.client() as c:
            self.assertIs(c.get_json("/counter/vol")["durable"], False)
            self.assertIs(c.get_json("/counters")["durable"], False)
        self.assertIn("keeps no data", topo.strong.log_text())
        # What "durable": false means: restart everything and the values are gone.
        topo.strong.stop()
        for r in topo.regions:
            r.stop()
        for r in topo.regions:
            r.start()
        topo.strong.start()
        wait_health(self, topo.strong, lambda h: h["ready"])
        self.assertEqual(strong_value(topo.strong, "vol"), 0)


if __name__ == "__main__":
    unittest.main()
