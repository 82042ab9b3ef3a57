"""
67_replica_fold.py - retired incarnations of a node are folded into its current one.

COUNTERD_BOOT_ID (test-only) simulates reboots: each one makes node A count under a new
replica id. COUNTERD_FOLD_AFTER_MS is short here (the default is a minute), and
COUNTERD_TEST_MAX_ENTRIES (test-only) lowers the cap on a counter's replica entries so
that "more incarnations than the cap" is reached in a few reboots.

(a) After several reboots of A and a fold: totals exact on every region, each counter
    holds one live entry per node, "nodes" unchanged, the retired ids are folded on every
    region, counterd_replica_incarnations is 1 and counterd_incarnations_folded_total counts
    the folded entries. A kill -9 right after and at random points around the fold, on the
    same boot and after another reboot, keeps everything exact.
(b) A counter touched by more incarnations over time than it has room for stays writable
    (without folding the increment answers 409 too_many_replicas).
(c) A peer restored from a copy of its data directory taken before the fold (it holds the
    retired entries, no tombstones) brings nothing back and counts nothing twice.
(d) A frozen peer (SIGSTOP) blocks the fold; once it runs again the fold happens, exact.
"""

import random
import re
import shutil
import signal
import tempfile
import time
import unittest

import harness

FOLD_AFTER_MS = 1500
ID_LINE = re.compile(r"(kept|new) replica id (\S+): ([^\n]*)")


class ReplicaFold(harness.ServerTestCase):
    def setUp(self):
        super().setUp()
        signal.alarm(100)  # several restarts of ASan binaries and a fold gate each

    def data_dir(self, tag):
        d = tempfile.mkdtemp(prefix="counterd-fold-%s-" % tag)
        self.addCleanup(shutil.rmtree, d, True)
        return d

    def node(self, data_dir, region, node_id, port, peers):
        args = ["--region", region, "--node-id", node_id, "--data-dir", data_dir,
                "--fsync", "everysec", "--sync-interval-ms", "100", "--sync-timeout-ms", "2000",
                "--peers", ",".join("http://127.0.0.1:%d" % p for p in peers)]
        srv = harness.Server(args, port=port, name=node_id)
        self.addCleanup(srv.stop)
        return srv

    def start(self, srv, boot, **env):
        with harness.environ(COUNTERD_BOOT_ID=boot, COUNTERD_FOLD_AFTER_MS=str(FOLD_AFTER_MS),
                             **env):
            srv.start()
        found = ID_LINE.findall(srv.log_text())
        self.assertTrue(found, "%s does not log its replica id" % srv.name)
        return found[-1][1]

    def incr(self, srv, name, amount=1, status=200):
        with srv.client() as c:
            r = c.post("/increment", {"counter_name": name, "amount": amount})
        harness.assert_json_response(r, status, "increment of %s on %s" % (name, srv.name))
        return r

    def read(self, srv, name):
        with srv.client() as c:
            return c.get_json("/counter/%s" % name)

    def metric(self, srv, name):
        with srv.client() as c:
            r = c.get("/metrics")
        got = harness.metric_values(harness.parse_metrics(r.text()), name)
        return got[0] if got else None

    def force_sync(self, *nodes):
        for _ in range(2):
            for s in nodes:
                with s.client() as c:
                    r = c.post("/admin/force-sync")
                harness.assert_json_response(r, 200, "force-sync on %s" % s.name)

    def wait_folded(self, a, timeout=40):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.metric(a, "counterd_replica_incarnations") == 1.0:
                return
            time.sleep(0.2)
        self.fail("%s never folded its retired incarnations:\n%s"
                  % (a.name, harness.log_tail(a.log_path, 30)))

    def check_exact(self, nodes, acked, a_rid=None, folded_ids=()):
        self.force_sync(*nodes)
        for s in nodes:
            for name, want in acked.items():
                self.assertEqual(self.read(s, name)["total_count"], want,
                                 "%s reads a wrong total of %s" % (s.name, name))
            held, folded = harness.sync_state(s)
            for name in acked:
                ids = [x for x in held.get(name, {}) if x.startswith("us-east-1~")]
                if a_rid is not None:
                    self.assertEqual(ids, [a_rid], "%s holds %s for %s" % (s.name, ids, name))
                for f in folded_ids:
                    self.assertNotIn(f, held.get(name, {}), "%s: %s is back" % (s.name, f))

    def test_a_fold_exact_and_kill(self):
        pa, pb, pc = harness.free_ports(3)
        b = self.node(self.data_dir("b"), "us-west", "us-west-1", pb, [pa, pc])
        c = self.node(self.data_dir("c"), "eu-west", "eu-west-1", pc, [pa, pb])
        self.start(b, "b0")
        self.start(c, "c0")
        a_dir = self.data_dir("a")
        a = self.node(a_dir, "us-east", "us-east-1", pa, [pb, pc])
        acked = {"c": 0, "d": 0}
        rids = []
        for k in range(4):
            rids.append(self.start(a, "boot-%d" % k))
            self.incr(a, "c", k + 1)
            acked["c"] += k + 1
            self.incr(a, "d", 10)
            self.incr(a, "d", -3)
            acked["d"] += 7
            self.incr(b, "c", 1)
            acked["c"] += 1
            if k < 3:
                self.force_sync(a)
                a.kill()
        self.assertEqual(len(set(rids)), 4, rids)
        self.force_sync(a, b, c)
        nodes_before = {s.name: self.read(s, "c")["nodes"] for s in (a, b, c)}
        self.wait_folded(a)
        self.assertEqual(self.metric(a, "counterd_incarnations_folded_total"), 6.0)
        self.check_exact([a, b, c], acked, rids[-1], rids[:-1])
        for s in (a, b, c):
            self.assertEqual(self.read(s, "c")["nodes"], nodes_before[s.name], s.name)
            _, folded = harness.sync_state(s)
            self.assertEqual(folded.get("c"), set(rids[:-1]), s.name)

        # kill -9 right after the fold, same boot: the id stays, the fold too.
        a.kill()
        self.assertEqual(self.start(a, "boot-3"), rids[-1])
        for name, want in acked.items():
            self.assertEqual(self.read(a, name)["total_count"], want, "A after kill -9")
        self.check_exact([a, b, c], acked, rids[-1], rids[:-1])

        # kill -9 at random points around the fold, across reboots.
        rng = random.Random(67)
        a.kill()
        for k in range(4, 7):
            rids.append(self.start(a, "boot-%d" % k))
            self.incr(a, "c", 2)
            acked["c"] += 2
            time.sleep(FOLD_AFTER_MS / 1000.0 + rng.uniform(0, 1.0))
            a.kill()
        rids.append(self.start(a, "boot-9"))
        self.wait_folded(a)
        self.check_exact([a, b, c], acked, rids[-1], rids[:-1])

    def test_b_more_incarnations_than_the_cap(self):
        pa, pb = harness.free_ports(2)
        cap = {"COUNTERD_TEST_MAX_ENTRIES": "3"}
        b = self.node(self.data_dir("b"), "us-west", "us-west-1", pb, [pa])
        self.start(b, "b0", **cap)
        a = self.node(self.data_dir("a"), "us-east", "us-east-1", pa, [pb])
        self.incr(b, "c", 1)
        acked = 1
        for k in range(6):
            self.start(a, "boot-%d" % k, **cap)
            if k >= 1:
                self.wait_folded(a)
            self.incr(a, "c", 1)  # 409 too_many_replicas from boot 2 on without folding
            acked += 1
            self.force_sync(a)
            a.kill()
        self.start(a, "boot-9", **cap)
        self.wait_folded(a)
        self.check_exact([a, b], {"c": acked})
        self.assertEqual(self.metric(a, "counterd_incarnations_folded_total"), 1.0)

    def test_c_restored_peer_brings_nothing_back(self):
        pa, pb, pc = harness.free_ports(3)
        b = self.node(self.data_dir("b"), "us-west", "us-west-1", pb, [pa, pc])
        c_dir = self.data_dir("c")
        c = self.node(c_dir, "eu-west", "eu-west-1", pc, [pa, pb])
        self.start(b, "b0")
        self.start(c, "c0")
        a = self.node(self.data_dir("a"), "us-east", "us-east-1", pa, [pb, pc])
        r0 = self.start(a, "boot-0")
        self.incr(a, "c", 5)
        self.incr(c, "c", 1)
        self.force_sync(a, b, c)
        c.stop()
        backup = self.data_dir("c-backup")
        shutil.rmtree(backup)
        shutil.copytree(c_dir, backup)  # C holds r0's 5, no tombstone
        self.start(c, "c0")
        a.kill()
        r1 = self.start(a, "boot-1")
        self.incr(a, "c", 2)
        self.wait_folded(a)
        self.check_exact([a, b, c], {"c": 8}, r1, [r0])
        c.kill()
        shutil.rmtree(c_dir)
        shutil.copytree(backup, c_dir)
        self.start(c, "c0")
        for _ in range(10):  # while it heals: never more than acknowledged
            for s in (a, b, c):
                self.assertLessEqual(self.read(s, "c")["total_count"], 8, s.name)
            time.sleep(0.1)
        self.check_exact([a, b, c], {"c": 8}, r1, [r0])

    def test_d_a_frozen_peer_blocks_the_fold(self):
        pa, pb, pc = harness.free_ports(3)
        b = self.node(self.data_dir("b"), "us-west", "us-west-1", pb, [pa, pc])
        c = self.node(self.data_dir("c"), "eu-west", "eu-west-1", pc, [pa, pb])
        self.start(b, "b0")
        self.start(c, "c0")
        a = self.node(self.data_dir("a"), "us-east", "us-east-1", pa, [pb, pc])
        r0 = self.start(a, "boot-0")
        self.incr(a, "c", 4)
        self.force_sync(a, b, c)
        c.proc.send_signal(signal.SIGSTOP)  # holds r0's 4; cannot be pulled
        try:
            a.kill()
            r1 = self.start(a, "boot-1")
            self.incr(a, "c", 1)
            time.sleep(FOLD_AFTER_MS / 1000.0 + 2.0)
            self.assertEqual(self.metric(a, "counterd_replica_incarnations"), 2.0,
                             "A folded while a peer could not be pulled")
            self.assertEqual(self.metric(a, "counterd_incarnations_folded_total"), 0.0)
        finally:
            c.proc.send_signal(signal.SIGCONT)
        self.wait_folded(a)
        self.check_exact([a, b, c], {"c": 5}, r1, [r0])


if __name__ == "__main__":
    unittest.main(verbosity=2)
