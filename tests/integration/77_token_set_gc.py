"""
77_token_set_gc.py - the token sets of 76_token_home.py are forgotten once settled, and
survive kill -9 until then.

(a) A pending increment is settled by its home; once every peer has the settled element,
    every region's set is empty (counterd_token_set_elements 0), the count stays exact,
    and a late retry is still a duplicate (the idempotency window remembers it).
(b) A pending increment (fsync always) survives SIGKILL and a restart from the log, then
    from a snapshot (--snapshot-bytes 4096, the smallest); after the heal it counts once.
    The home, killed and restarted after settling, still answers a retry as a duplicate.
(c) A delta too big for one /sync body (12,000 counters with a pending element each, then
    the first of them changed again, so it moves behind the others): its element, older
    than the first page, still reaches the home, by a push (us-east's round) and by a pull
    (us-west's round). Elements travel with every element changed since the series of
    pages began, not since the page before.
"""

import glob
import importlib
import os
import shutil
import signal
import tempfile
import time
import unittest

import harness

home = importlib.import_module("76_token_home")


class TokenSetGc(harness.ServerTestCase):
    def start(self, data=False):
        dirs = []
        args = ()
        if data:
            dirs = [tempfile.mkdtemp(prefix="counterd-it-gc-") for _ in harness.LAB_REGIONS]
            for d in dirs:
                self.addCleanup(shutil.rmtree, d, True)
            args = lambda i: ["--data-dir", dirs[i], "--fsync", "always",
                              "--snapshot-bytes", "4096"]
        topo = harness.Topology(region_args=args)
        topo.start(self.addCleanup)
        gw = topo.gateway.client(timeout=20)
        self.addCleanup(gw.close)
        home.TokenHome.wait_homes_known(self, topo)
        return topo, gw, dirs

    def partition(self, topo, on, only=None):
        for r in topo.regions:
            if only is None or r.region == only:
                with r.client() as c:
                    c.post_json("/admin/partition", {"enabled": on})

    def force_sync(self, gw):
        r = gw.post_json("/admin/force-sync")
        self.assertEqual((r["status"], r["regions_synced"]), ("sync_initiated", 3), r)

    def incr(self, srv, name, token, amount=1):
        with srv.client() as c:
            return c.post_json("/increment", {"counter_name": name, "amount": amount,
                                              "idempotency_token": token})

    def read(self, srv, name):
        with srv.client() as c:
            return c.get_json("/counter/%s" % name)

    def elements(self, topo):
        return {r.region: home.metric_sum(r, "counterd_token_set_elements") for r in topo.regions}

    def test_settled_elements_are_collected(self):
        name = "gc"
        topo, gw, _ = self.start()
        token = home.token_homed_at("us-west-1", "gc")
        east = topo.region("us-east")
        self.partition(topo, True, only="us-east")
        try:
            self.assertIs(self.incr(east, name, token, 4).get("pending"), True)
            self.assertEqual(self.elements(topo)["us-east"], 1)
        finally:
            self.partition(topo, False, only="us-east")
        deadline = time.monotonic() + 20
        while True:
            self.force_sync(gw)
            time.sleep(0.5)  # a collection pass runs every 0.2 s
            left = self.elements(topo)
            if not any(left.values()):
                break
            self.assertLess(time.monotonic(), deadline, "token sets never emptied: %r" % left)
        collected = {r.region: home.metric_sum(r, "counterd_token_set_collected_total")
                     for r in topo.regions}
        print("\n[77 gc] collected %r" % collected)
        self.assertTrue(all(v >= 1 for v in collected.values()), collected)
        for r in topo.regions:
            v = self.read(r, name)
            self.assertEqual((v["total_count"], v["nodes"]), (4, {"us-west-1": 4}), r.region)
            self.assertNotIn("pending", v)
        for r in topo.regions:
            self.assertIs(self.incr(r, name, token, 4).get("duplicate"), True, r.region)
        self.assertFalse(any(self.elements(topo).values()))

    def test_pending_survives_kill9_log_and_snapshot(self):
        name = "durable_pending"
        topo, gw, dirs = self.start(data=True)
        token = home.token_homed_at("eu-west-1", "dur")
        east, eu = topo.region("us-east"), topo.region("eu-west")
        self.partition(topo, True)
        try:
            self.assertIs(self.incr(east, name, token, 9).get("pending"), True)
            # From the log.
            east.proc.send_signal(signal.SIGKILL)
            east.proc.wait(5)
            east.kill()
            east.start()
            self.partition(topo, True, only="us-east")
            v = self.read(east, name)
            self.assertEqual((v["total_count"], v.get("pending"), v["nodes"]), (9, 9, {}), v)
            # From a snapshot: enough log for one, then wait for it.
            with east.client() as c:
                for i in range(200):
                    c.post_json("/increment", {"counter_name": "filler"})
            deadline = time.monotonic() + 10
            while not glob.glob(os.path.join(dirs[0], "snapshot-*.snap")):
                self.assertLess(time.monotonic(), deadline, "no snapshot was written")
                time.sleep(0.1)
            # The segments it covers (the pending record's among them) are then deleted.
            while True:
                snap = max(int(f[-13:-5]) for f in
                           glob.glob(os.path.join(dirs[0], "snapshot-*.snap")))
                segs = [int(f[-12:-4]) for f in glob.glob(os.path.join(dirs[0], "wal-*.log"))]
                if min(segs) > snap:
                    break
                self.assertLess(time.monotonic(), deadline, "segments %r, snapshot %d"
                                % (segs, snap))
                time.sleep(0.1)
            east.proc.send_signal(signal.SIGKILL)
            east.proc.wait(5)
            east.kill()
            east.start()
            self.assertIn("from", east.log_text())
            v = self.read(east, name)
            self.assertEqual((v["total_count"], v.get("pending")), (9, 9), v)
            self.assertIs(self.incr(east, name, token, 9).get("duplicate"), True)
        finally:
            self.partition(topo, False)
        for _ in range(3):
            self.force_sync(gw)
        for r in topo.regions:
            v = self.read(r, name)
            self.assertEqual((v["total_count"], v["nodes"]), (9, {"eu-west-1": 9}), r.region)
            self.assertNotIn("pending", v, r.region)
        # The home, killed after settling, remembers it applied the token.
        eu.proc.send_signal(signal.SIGKILL)
        eu.proc.wait(5)
        eu.kill()
        eu.start()
        self.assertIs(self.incr(eu, name, token, 9).get("duplicate"), True)
        self.assertEqual(self.read(eu, name)["total_count"], 9)

    def paged_delta(self, syncer):
        topo, gw, _ = self.start()
        self.force_sync(gw)  # first contact (full state); deltas from now on
        east, west = topo.region("us-east"), topo.region("us-west")
        names = ["page%05d_%s" % (i, "x" * 60) for i in range(12000)]
        with east.client(timeout=30) as c:
            for i, n in enumerate(names):
                c.post_json("/increment", {"counter_name": n,
                                           "idempotency_token": "us-west-1/%d" % i})
            c.post_json("/increment", {"counter_name": names[0]})
        with topo.region(syncer).client(timeout=60) as c:
            c.post_json("/admin/force-sync")
        for n in (names[0], names[-1]):
            v = self.read(west, n)
            self.assertEqual(v["nodes"].get("us-west-1"), 1, "%s on us-west: %r" % (n, v))

    def test_paged_delta_push(self):
        self.paged_delta("us-east")

    def test_paged_delta_pull(self):
        self.paged_delta("us-west")


if __name__ == "__main__":
    unittest.main()
