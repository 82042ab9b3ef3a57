"""
62_replica_reboot.py - which crashes keep a node's replica id, and which mint a new one.

COUNTERD_BOOT_ID (test-only) stands in for /proc/sys/kernel/random/boot_id: changing it
between two runs of a node simulates a reboot.

(a) A SIGKILL on the same boot keeps the replica id (the log says why); a simulated reboot
    mints a new one, under --fsync everysec and under --fsync always alike (a /sync push
    does not wait for fsync, so "always" does not prove the peers hold nothing more). After
    three reboots both nodes read exactly what was acknowledged, the counter holds one
    entry per incarnation of A plus B's, and counterd_replica_incarnations says how many.
(b) A node that starts with a directory of the previous format (no run file) mints.
"""

import os
import re
import shutil
import tempfile
import unittest

import harness


ID_LINE = re.compile(r"(kept|new) replica id (\S+): ([^\n]*)")


class ReplicaReboot(harness.ServerTestCase):
    def data_dir(self, tag):
        d = tempfile.mkdtemp(prefix="counterd-reboot-%s-" % tag)
        self.addCleanup(shutil.rmtree, d, True)
        return d

    def node(self, data_dir, region, node_id, port, peers, fsync="everysec"):
        args = ["--region", region, "--node-id", node_id, "--data-dir", data_dir,
                "--fsync", fsync, "--sync-interval-ms", "100", "--sync-timeout-ms", "2000",
                "--peers", ",".join("http://127.0.0.1:%d" % p for p in peers)]
        srv = harness.Server(args, port=port, name=node_id)
        self.addCleanup(srv.stop)
        return srv

    def start(self, srv, boot):
        with harness.environ(COUNTERD_BOOT_ID=boot):
            srv.start()
        m = ID_LINE.search(srv.log_text())
        self.assertIsNotNone(m, "%s does not log which replica id it counts under:\n%s"
                             % (srv.name, harness.log_tail(srv.log_path)))
        return m.group(1), m.group(2), m.group(3)

    def incr(self, srv, name, amount=1):
        with srv.client() as c:
            r = c.post("/increment", {"counter_name": name, "amount": amount})
        harness.assert_json_response(r, 200, "increment of %s on %s" % (name, srv.name))

    def total(self, srv, name):
        with srv.client() as c:
            return c.get_json("/counter/%s" % name)["total_count"]

    def force_sync(self, srv):
        with srv.client() as c:
            r = c.post("/admin/force-sync")
        harness.assert_json_response(r, 200, "POST /admin/force-sync on %s" % srv.name)

    def test_a_same_boot_keeps_reboot_mints(self):
        pa, pb = harness.free_ports(2)
        b = self.node(self.data_dir("b"), "us-west", "us-west-1", pb, [pa])
        b.start()
        acked = 0
        ids = set()
        for k, fsync in enumerate(["everysec", "always", "everysec"]):
            a = self.node(self.data_dir("a") if k == 0 else a_dir, "us-east", "us-east-1",
                          pa, [pb], fsync=fsync)
            a_dir = a.args[a.args.index("--data-dir") + 1]
            case, rid, why = self.start(a, "boot-%d" % k)
            self.assertEqual(case, "new", "boot %d (%s): %s" % (k, fsync, why))
            if k:
                self.assertIn("rebooted", why)
            ids.add(rid)
            for _ in range(3):
                self.incr(a, "c")
                acked += 1
            a.kill()
            case, rid2, why = self.start(a, "boot-%d" % k)  # same boot: the id stays
            self.assertEqual((case, rid2), ("kept", rid), why)
            self.assertIn("same boot", why)
            self.incr(a, "c")
            acked += 1
            self.incr(b, "c")
            acked += 1
            a.kill()
        a = self.node(a_dir, "us-east", "us-east-1", pa, [pb])
        case, rid, why = self.start(a, "boot-9")
        ids.add(rid)
        self.incr(a, "c")
        acked += 1
        self.force_sync(a)
        self.force_sync(b)
        with a.client() as c:
            r = c.get("/metrics")
        got = harness.metric_values(harness.parse_metrics(r.text()), "counterd_replica_incarnations")
        self.assertEqual(got, [float(len(ids))], "counterd_replica_incarnations on A")
        for s in (a, b):
            self.assertEqual(self.total(s, "c"), acked, "%s reads a wrong total" % s.name)
            held = sorted(harness.sync_state(s)[0]["c"])
            a_ids = [x for x in held if x.startswith("us-east-1~")]
            self.assertEqual(sorted(a_ids), sorted(ids), "%s holds %s" % (s.name, held))

    def test_b_directory_without_run_file_mints(self):
        pa, pb = harness.free_ports(2)
        d = self.data_dir("old")
        a = self.node(d, "us-east", "us-east-1", pa, [pb])
        case, rid, _ = self.start(a, "boot-x")
        self.incr(a, "c")
        a.kill()
        os.remove(os.path.join(d, "run"))  # as a directory of the previous version
        case, rid2, why = self.start(a, "boot-x")
        self.assertEqual(case, "new", why)
        self.assertNotEqual(rid, rid2)
        self.assertEqual(self.total(a, "c"), 1)


if __name__ == "__main__":
    unittest.main(verbosity=2)
