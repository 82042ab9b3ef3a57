"""
75_gateway_failover.py - a region dies under load behind the gateway; every 2xx the
gateway gave is still counted exactly once.

Three regions with --data-dir and --fsync always (an acknowledged increment is durable),
a coordinator, and a gateway with --upstream-timeout-ms 1000. 32 threads, each on its own
keep-alive connection, send increments of one counter through the gateway (random
routing) and count their 2xx answers.

(a) us-west is SIGKILLed ~1.5 s into the load. The gateway keeps answering 2xx through
    the other two (2xx keep coming after the kill; the few non-2xx are printed and
    bounded). After the load, us-west restarts on the same data dir, two force-sync rounds
    run, and then global_count == the number of 2xx exactly, on every region.
(b) us-west runs with COUNTERD_FAULTS=wal_after_fsync=crash@300: it applies and fsyncs an
    increment, then dies before answering, so the gateway's retry on another region (same
    idempotency token, whose home is us-west: the gateway made it for us-west) is held there
    as pending, and us-west, restarted, finds it had applied it: exact total again, and
    counterd_token_increments_total{outcome="settled_already_applied"} is > 0.
(c) us-west is frozen (SIGSTOP) for 2 s under load: the gateway times out on it (1 s),
    retries elsewhere, and us-west applies those requests when it resumes (SIGCONT), after
    the gateway gave up on them: exact total, settled as already applied > 0, no restart.
"""

import shutil
import signal
import tempfile
import time
import unittest

import harness

THREADS = 32
VICTIM = "us-west"
MAX_NON_2XX = 10  # answers other than 2xx tolerated while a region dies (all printed)


def takebacks_of(topo, outcome="settled_already_applied"):
    """{region: increments taken elsewhere that this region, their home, found it had applied
    itself} (counterd_token_increments_total{outcome="settled_already_applied"}; or another
    outcome: "settled_applied", applied when it learned them)."""
    out = {}
    for r in topo.regions:
        with r.client() as c:
            samples = harness.parse_metrics(c.get("/metrics").text())
        v = harness.metric_values(samples, "counterd_token_increments_total",
                                  outcome=outcome)
        assert len(v) == 1, "counterd_token_increments_total on %s: %r" % (r.region, v)
        out[r.region] = int(v[0])
    return out


class GatewayFailover(harness.ServerTestCase):
    def topology(self, region_env=None):
        dirs = [tempfile.mkdtemp(prefix="counterd-it-fo-") for _ in harness.LAB_REGIONS]
        for d in dirs:
            self.addCleanup(shutil.rmtree, d, True)
        topo = harness.Topology(
            region_args=lambda i: ["--data-dir", dirs[i], "--fsync", "always"],
            gateway_args=["--upstream-timeout-ms", "1000"], sync_interval_ms=1000,
            region_env=region_env)
        topo.start(self.addCleanup)
        gw = topo.gateway.client(timeout=40)
        self.addCleanup(gw.close)
        return topo, gw

    def start_load(self, topo, name):
        load = harness.IncrementLoad(topo.gateway.port, {"counter_name": name, "amount": 1},
                                     threads=THREADS, timeout=10)
        self.addCleanup(load.stop)
        return load.start()

    def finish_load(self, load, t_kill, tag):
        load.stop()
        self.assertTrue(load.join(15), "load threads did not stop")
        ok = load.ok_total()
        after = load.ok_after(t_kill)
        late = load.ok_after(t_kill + 1.0)
        print("\n[75 %s] %d requests, %d 2xx (%d after the crash, %d from 1 s after it), "
              "per thread min %d max %d; %d not 2xx"
              % (tag, load.sent, ok, after, late, min(load.ok), max(load.ok), len(load.problems)))
        for p in load.problems:
            print("[75 %s]   not 2xx at crash%+.3f s, thread %d: status %s: %s"
                  % (tag, p[0] - t_kill, p[1], p[2], p[3]))
        self.assertEqual(load.unknown(), [], "requests the gateway never answered")
        self.assertLessEqual(len(load.problems), MAX_NON_2XX, "too many non-2xx answers")
        self.assertGreater(late, 0, "no 2xx from 1 s after the crash on")
        self.assertTrue(all(n > 0 for n in load.ok), "a thread got no 2xx at all: %r" % load.ok)
        return ok

    def restart_and_check(self, topo, gw, victim, name, ok, tag):
        victim.kill()  # already dead: forgets the old process
        victim.start()  # same port, flags and data dir; no fault points
        for _ in range(2):
            fs = gw.post_json("/admin/force-sync")
            self.assertEqual((fs["status"], fs["regions_synced"]), ("sync_initiated", 3), fs)
        got = gw.get_json("/api/counter/%s" % name)
        totals = {r: v["total_count"] for r, v in got["regions"].items()}
        takebacks = takebacks_of(topo)
        print("[75 %s] after restart + 2 force-syncs: global_count %d, 2xx %d, regions %r, "
              "nodes %r, takebacks %r" % (tag, got["global_count"], ok, totals,
                                          got["regions"]["us-east"]["nodes"], takebacks))
        self.assertEqual(got["healthy_regions"], 3)
        self.assertEqual(got["global_count"], ok, "global_count vs the 2xx answers")
        self.assertEqual(totals, {r: ok for r, _ in harness.LAB_REGIONS})
        self.assertJsonEqual(got["convergence"], {"converged": True, "lag": 0, "max_count": ok,
                                                  "min_count": ok})
        nodes = [v["nodes"] for v in got["regions"].values()]
        self.assertTrue(all(n == nodes[0] for n in nodes), "per-node maps differ: %r" % nodes)
        return takebacks

    def test_sigkill_mid_load(self):
        name = "fo_kill"
        topo, gw = self.topology()
        victim = topo.region(VICTIM)
        load = self.start_load(topo, name)
        time.sleep(1.5)
        before = load.ok_total()
        victim.proc.send_signal(signal.SIGKILL)
        t_kill = time.monotonic()
        victim.proc.wait(5)
        time.sleep(2.5)
        ok = self.finish_load(load, t_kill, "sigkill")
        self.assertGreater(before, 0, "no 2xx before the kill")
        self.restart_and_check(topo, gw, victim, name, ok, "sigkill")

    def test_crash_after_fsync_before_answer(self):
        name = "fo_fault"
        i = [r for r, _ in harness.LAB_REGIONS].index(VICTIM)
        topo, gw = self.topology(region_env={i: {"COUNTERD_FAULTS": "wal_after_fsync=crash@300"}})
        victim = topo.region(VICTIM)
        load = self.start_load(topo, name)
        deadline = time.monotonic() + 20
        while victim.proc.poll() is None:
            if time.monotonic() > deadline:
                load.stop()
                self.fail("%s did not reach its fault point (wal_after_fsync=crash@300) within "
                          "20 s of load: %d 2xx" % (VICTIM, load.ok_total()))
            time.sleep(0.01)
        t_kill = time.monotonic()
        self.assertEqual(victim.proc.returncode, -signal.SIGKILL,
                         "the fault point should SIGKILL the process:\n%s"
                         % harness.log_tail(victim.log_path))
        time.sleep(2.0)
        ok = self.finish_load(load, t_kill, "fault")
        takebacks = self.restart_and_check(topo, gw, victim, name, ok, "fault")
        self.assertGreater(sum(takebacks.values()), 0,
                           "an increment applied and fsynced by the crashed region, then retried "
                           "elsewhere, must be settled as already applied there: %r"
                           % takebacks)

    def test_frozen_region_applies_late(self):
        name = "fo_frozen"
        topo, gw = self.topology()
        victim = topo.region(VICTIM)
        load = self.start_load(topo, name)
        time.sleep(1.0)
        victim.proc.send_signal(signal.SIGSTOP)
        t_freeze = time.monotonic()
        try:
            time.sleep(2.0)
        finally:
            victim.proc.send_signal(signal.SIGCONT)
        time.sleep(1.5)
        ok = self.finish_load(load, t_freeze, "frozen")
        for _ in range(2):
            fs = gw.post_json("/admin/force-sync")
            self.assertEqual((fs["status"], fs["regions_synced"]), ("sync_initiated", 3), fs)
        got = gw.get_json("/api/counter/%s" % name)
        totals = {r: v["total_count"] for r, v in got["regions"].items()}
        takebacks = takebacks_of(topo)
        print("[75 frozen] after 2 force-syncs: global_count %d, 2xx %d, regions %r, nodes %r, "
              "takebacks %r" % (got["global_count"], ok, totals,
                                got["regions"]["us-east"]["nodes"], takebacks))
        self.assertEqual(got["global_count"], ok, "global_count vs the 2xx answers")
        self.assertEqual(totals, {r: ok for r, _ in harness.LAB_REGIONS})
        self.assertIs(got["convergence"]["converged"], True)
        self.assertGreater(takebacks[VICTIM], 0,
                           "requests the frozen region applied after the gateway gave up on "
                           "them must be settled as already applied: %r" % takebacks)


    def test_client_retry_after_every_region_failed(self):
        """Every region is frozen when a client's increment (with its own token) arrives:
        the gateway times out on each (all three have the whole request) and answers 503.
        The regions thaw: the token's home applies it, the other two hold it as pending. The
        client retries with the same token: the region that gets it answers it as a
        duplicate. The home settles the pending element once (as already applied, or applied
        then, when the sync came before the request it had): it counts once."""
        name = "fo_retry"
        topo, gw = self.topology()
        body = {"counter_name": name, "amount": 7, "idempotency_token": "client-retry-1"}
        for r in topo.regions:
            r.proc.send_signal(signal.SIGSTOP)
        try:
            r1 = gw.post("/api/increment", body)
        finally:
            for r in topo.regions:
                r.proc.send_signal(signal.SIGCONT)
        self.assertError(r1, 503, "unavailable", "increment while every region is frozen")
        time.sleep(2.5)  # the gateway skips a failed region for 2 s
        r2 = gw.post_json("/api/increment", body)
        self.assertIs(r2.get("duplicate"), True, "the retry found the token: %r" % r2)
        for _ in range(2):
            fs = gw.post_json("/admin/force-sync")
            self.assertEqual((fs["status"], fs["regions_synced"]), ("sync_initiated", 3), fs)
        got = gw.get_json("/api/counter/%s" % name)
        takebacks = (sum(takebacks_of(topo).values()) +
                     sum(takebacks_of(topo, "settled_applied").values()))
        print("[75 retry] global %r, takebacks %d, regions %r" % (
            got["global_count"], takebacks,
            {k: v["total_count"] for k, v in got["regions"].items()}))
        self.assertEqual(got["global_count"], 7, "applied by all three, counted once")
        self.assertIs(got["convergence"]["converged"], True)
        self.assertEqual(takebacks, 1)

if __name__ == "__main__":
    unittest.main()
