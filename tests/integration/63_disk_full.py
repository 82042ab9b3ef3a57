"""
63_disk_full.py - a node whose data directory fills up refuses writes and recovers by itself.

us-east-1 keeps its data on a 2 MiB tmpfs this test mounts (root only: skipped otherwise,
and unmounted at the end); us-west-1 is its peer. The test fills the file system with a
file of its own, then increments until the node refuses:
  - every increment answers 200 or 503 "unavailable" saying the disk is full, never an
    empty reply; what answered 503 was not applied (reads show exactly the 200s);
  - reads, /counters, /health ("degraded", saying why) and /metrics keep answering;
    counterd_wal_writable is 0 and counterd_wal_write_errors_total{reason="disk_full"}
    counts; /sync and /strong/accept (writes too) answer 503; no temporary file of a
    failed snapshot is left in the directory;
then frees the space: the node takes writes again without a restart, its snapshots work
again, replication with its peer resumes both ways, and after a SIGKILL and a restart
every acknowledged increment is there.

Disk errors (COUNTERD_FAULTS wal_fsync=eio@N, wal_write=eio@N; no root needed): after a
failed fdatasync the answers that waited for it are 503 (applied, not known durable), and
the node takes writes again only once a fresh log segment and a snapshot are on disk; a
failed write closes the connections whose answers needed it. Either way the increment
concerned is there, once, after the recovery and after a restart.
"""

import errno
import os
import re
import shutil
import subprocess
import tempfile
import time
import unittest

import harness

MIB = 1 << 20
NAME = "disk-full-" + "n" * 180  # long names and tokens: fewer requests fill the log
TOKEN = "t" * 100


def fill(path):
    """Appends zeros to path until the file system is full. @return bytes written."""
    n = 0
    chunk = b"\0" * 65536
    with open(path, "ab", buffering=0) as f:
        while True:
            try:
                n += f.write(chunk)
            except OSError as e:
                if e.errno != errno.ENOSPC:
                    raise
                if len(chunk) == 1:
                    return n
                chunk = chunk[:len(chunk) // 16 or 1]
    return n


@unittest.skipUnless(os.geteuid() == 0, "needs root to mount a small tmpfs (run as root)")
class DiskFull(harness.ServerTestCase):
    def setUp(self):
        super().setUp()
        self.top = tempfile.mkdtemp(prefix="counterd-diskfull-")
        self.addCleanup(shutil.rmtree, self.top, True)
        self.mnt = os.path.join(self.top, "mnt")
        os.mkdir(self.mnt)
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", self.mnt],
                           capture_output=True, text=True)
        self.assertEqual(r.returncode, 0, "root, but cannot mount a 2 MiB tmpfs on %s: %s"
                         % (self.mnt, r.stderr.strip()))
        self.addCleanup(subprocess.run, ["umount", "-l", self.mnt], check=False)
        self.data = os.path.join(self.mnt, "data")
        self.filler = os.path.join(self.mnt, "filler")

    def wait(self, what, fn, timeout=10.0):
        deadline = time.monotonic() + timeout
        while True:
            v = fn()
            if v:
                return v
            self.assertLess(time.monotonic(), deadline, "within %.0f s: %s" % (timeout, what))
            time.sleep(0.1)

    def metrics(self, c):
        r = c.get("/metrics")
        self.assertEqual(r.status, 200)
        return harness.parse_metrics(r.text())

    def tmp_files(self):
        return [f for f in os.listdir(self.data) if f.endswith(".tmp")]

    def test_disk_full_refuses_writes_and_recovers(self):
        ports = harness.free_ports(2)
        a = harness.Server(["--region", "us-east", "--node-id", "us-east-1",
                            "--data-dir", self.data, "--fsync", "always",
                            "--snapshot-bytes", "65536", "--sync-interval-ms", "200",
                            "--sync-timeout-ms", "1000",
                            "--peers", "http://127.0.0.1:%d" % ports[1]],
                           port=ports[0], name="full-us-east-1")
        b = harness.Server(["--region", "us-west", "--node-id", "us-west-1",
                            "--sync-interval-ms", "200", "--sync-timeout-ms", "1000",
                            "--peers", "http://127.0.0.1:%d" % ports[0]],
                           port=ports[1], name="full-us-west-1")
        self.addCleanup(a.stop)
        self.addCleanup(b.stop)
        a.start(wait=False)
        b.start(wait=False)
        a.wait_ready()
        b.wait_ready()
        # Tokens sent before us-east knows its peer's node id wait as pending elements and
        # are settled (logged again) once it does: let that pass before the disk fills.
        self.wait("us-east knows every region's node id",
                  lambda: "every region's node id is known" in a.log_text())
        ca, cb = a.client(), b.client()
        self.addCleanup(ca.close)
        self.addCleanup(cb.close)

        # Fill the file system; the node's log still has the room it reserved ahead.
        acked, refused, k = 0, 0, 0
        for _ in range(20):
            k += 1
            ca.post_json("/increment", {"counter_name": NAME, "amount": 1,
                                        "idempotency_token": "%s-%d" % (TOKEN, k)})
            acked += 1
        fill(self.filler)
        # The log grows past --snapshot-bytes inside its reserved room: the snapshot that
        # is then due cannot even start a new log segment, and says so.
        for _ in range(200):
            k += 1
            ca.post_json("/increment", {"counter_name": NAME, "amount": 1,
                                        "idempotency_token": "%s-%d" % (TOKEN, k)})
            acked += 1
        self.wait("a snapshot fails on the full disk",
                  lambda: "snapshot_failed: " in a.log_text(), timeout=5)
        t0 = time.monotonic()
        while refused < 20:
            self.assertLess(time.monotonic() - t0, 20, "no 503 after %d increments (%d acked)"
                            % (k, acked))
            k += 1
            r = ca.post("/increment", {"counter_name": NAME, "amount": 1,
                                       "idempotency_token": "%s-%d" % (TOKEN, k)})
            if r.status == 200:  # also after a 503, if a failed snapshot gave room back
                acked += 1
                self.assertEqual(r.json()["total_count"], acked)
                continue
            self.assertError(r, 503, "unavailable", "increment %d on a full disk" % k,
                             detail_contains="disk is full")
            refused += 1
            if refused == 1:
                time.sleep(0.5)  # a snapshot child that was running has given up
                fill(self.filler)  # what it gave back: the disk stays full
        print("\n[63_disk_full] %d increments acknowledged before the disk was full, then "
              "20 refused" % acked)

        time.sleep(0.3)
        fill(self.filler)
        r = ca.post("/increment", {"counter_name": NAME, "amount": 1})
        self.assertError(r, 503, "unavailable", "increment on a full disk")

        # Nothing refused was applied; reads, health and metrics answer.
        body = ca.get_json("/counter/" + NAME)
        self.assertEqual(body["total_count"], acked)
        self.assertEqual(len(ca.get_json("/counters")["counters"]), 1)
        health = ca.get_json("/health")
        self.assertEqual(health["status"], "degraded", health)
        self.assertTrue(any(d.startswith("disk_full:") for d in health["degraded"]), health)
        m = self.metrics(ca)
        self.assertEqual(harness.metric_values(m, "counterd_wal_writable"), [0.0])
        self.assertGreaterEqual(harness.metric_values(m, "counterd_wal_write_errors_total",
                                                      reason="disk_full")[0], 1)
        # A retry of an acknowledged increment is refused too (no answer without the log),
        # and so are the other writes: a peer's /sync and a strong-counter accept.
        r = ca.post("/increment", {"counter_name": NAME, "amount": 1,
                                   "idempotency_token": "%s-1" % TOKEN})
        self.assertError(r, 503, "unavailable", "retry on a full disk")
        r = ca.post("/sync", {"node_id": "eu-west-1", "timestamp": time.time(),
                              "counts": {"from-sync": {"eu-west-1": 5}}})
        self.assertError(r, 503, "unavailable", "/sync on a full disk",
                         detail_contains="disk is full")
        r = ca.post("/strong/accept", {"epoch": 1, "round": 1, "entries": [["s", 1]]})
        self.assertError(r, 503, "unavailable", "/strong/accept on a full disk")
        # The peer counts on; the full node does not take it in (that would need its log).
        for _ in range(5):
            cb.post_json("/increment", {"counter_name": "west", "amount": 2})
        time.sleep(0.6)  # three sync rounds
        self.assertEqual(ca.get_json("/counter/west")["total_count"], 0)
        self.assertEqual(ca.get_json("/counter/from-sync")["total_count"], 0)
        for _ in range(5):  # snapshots that failed (the log is full) left nothing behind
            self.assertEqual(self.tmp_files(), [], sorted(os.listdir(self.data)))
            time.sleep(0.2)

        # Some space comes back: enough for the log; a snapshot may or may not fit in what
        # is left (its size follows the acknowledged increments, its idempotency window and
        # token sets). The node takes writes again without a restart, and the snapshot that
        # failed while the disk was full is retried at once (not after its back-off, up to a
        # minute): it fails for want of room, leaving no partial file and saying so, or it
        # fits and snapshots work again.
        log_at = len(a.log_text())
        with open(self.filler, "r+b") as f:
            f.truncate(os.path.getsize(self.filler) - 128 * 1024)
        t1 = time.monotonic()
        self.wait("the node takes writes again",
                  lambda: ca.post("/increment", {"counter_name": NAME, "amount": 1}).status
                  == 200, timeout=5)
        acked += 1
        took = time.monotonic() - t1
        self.assertEqual(harness.metric_values(self.metrics(ca), "counterd_wal_writable"),
                         [1.0])
        t2 = time.monotonic()

        def snapshot_outcome():
            text = a.log_text()[log_at:]
            if re.search(r"snapshot_failed: .*pid \d+: No space left on device", text):
                return "failed for want of room"
            return "fitted" if "snapshots work again" in text else None
        outcome = self.wait("the snapshot retried", snapshot_outcome, timeout=10)
        print("[63_disk_full] the snapshot retried %.1f s after writes resumed: %s"
              % (time.monotonic() - t2, outcome))
        health = ca.get_json("/health")
        degraded = health.get("degraded", [])
        self.assertFalse(any(d.startswith("disk_full:") for d in degraded), health)
        if outcome == "failed for want of room":
            self.assertEqual(health["status"], "degraded", health)
            self.assertTrue(any(d.startswith("snapshot_failed:") for d in degraded), health)
        self.assertGreaterEqual(harness.metric_values(
            self.metrics(ca), "counterd_wal_write_errors_total", reason="snapshot")[0], 1)
        self.assertEqual(self.tmp_files(), [], sorted(os.listdir(self.data)))
        self.assertEqual(ca.get_json("/counter/" + NAME)["total_count"], acked)

        # All the space comes back: snapshots and replication resume.
        os.remove(self.filler)
        self.wait("health ok again (the snapshot retried)",
                  lambda: ca.get_json("/health")["status"] == "ok", timeout=25)
        print("[63_disk_full] writable again %.1f s after the space came back, healthy %.1f s "
              "after" % (took, time.monotonic() - t1))
        self.wait("the peer's increments reach the node",
                  lambda: ca.get_json("/counter/west")["total_count"] == 10)
        self.wait("the node's increments reach the peer",
                  lambda: cb.get_json("/counter/" + NAME)["total_count"] == acked)
        self.assertEqual(self.tmp_files(), [])
        log = a.log_text()
        self.assertIn("takes writes again", log)
        self.assertGreaterEqual(log.count("answers writes 503 until"), 1)
        self.assertEqual(log.count("answers writes 503 until"), log.count("takes writes again"),
                         "one line per transition")

        # Nothing acknowledged is lost across a crash and a restart.
        ca.close()
        a.kill()
        a.start()
        ca = a.client()
        self.addCleanup(ca.close)
        self.assertEqual(ca.get_json("/counter/" + NAME)["total_count"], acked)
        self.wait("replication after the restart",
                  lambda: ca.get_json("/counter/west")["total_count"] == 10)
        r = ca.post("/increment", {"counter_name": NAME, "amount": 1,
                                   "idempotency_token": "%s-1" % TOKEN})
        self.assertEqual(r.status, 200)
        self.assertTrue(r.json().get("duplicate"), r.json())


class DiskError(harness.ServerTestCase):
    def start_node(self, data, fsync, faults):
        srv = harness.Server(["--region", "us-east", "--node-id", "us-east-1",
                              "--data-dir", data, "--fsync", fsync,
                              "--sync-interval-ms", "60000"], name="eio-us-east-1")
        self.addCleanup(srv.stop)
        with harness.environ(COUNTERD_FAULTS=faults):
            srv.start()
        return srv

    def run_case(self, fsync, faults, reason):
        data = tempfile.mkdtemp(prefix="counterd-data-eio-")
        self.addCleanup(shutil.rmtree, data, True)
        srv = self.start_node(data, fsync, faults)
        c = srv.client()
        self.addCleanup(lambda: c.close())
        acked, k, failed_token = 0, 0, None
        while failed_token is None:
            k += 1
            self.assertLess(k, 50, "the fault point was not reached")
            token = "tok-%d" % k
            try:
                r = c.post("/increment", {"counter_name": "v", "idempotency_token": token})
            except (OSError, harness.http.client.HTTPException):
                self.assertEqual(reason, "io_error", "a closed connection after a failed fsync")
                c.close()
                c = srv.client()
                failed_token = token
                break
            if r.status == 200:
                acked += 1
                continue
            self.assertError(r, 503, "unavailable", "increment whose fsync failed",
                             detail_contains="could not be made durable")
            failed_token = token
        health = c.get_json("/health")
        self.assertEqual(health["status"], "degraded", health)
        self.assertTrue(health["degraded"][0].startswith(reason + ":"), health)
        r = c.post("/increment", {"counter_name": "v"})
        self.assertError(r, 503, "unavailable", "increment after a disk error",
                         detail_contains="disk error")
        t0 = time.monotonic()
        while c.get_json("/health")["status"] != "ok":
            self.assertLess(time.monotonic() - t0, 10, "no recovery within 10 s")
            time.sleep(0.1)
        print("\n[63_disk_full] %s: recovered %.1f s after the failure" %
              (reason, time.monotonic() - t0))
        m = harness.parse_metrics(c.get("/metrics").text())
        self.assertEqual(harness.metric_values(m, "counterd_wal_write_errors_total",
                                               reason=reason), [1.0])
        self.assertEqual(harness.metric_values(m, "counterd_wal_writable"), [1.0])
        self.assertIn("takes writes again", srv.log_text())
        # The increment whose answer failed was applied; its retry counts nothing more.
        r = c.post("/increment", {"counter_name": "v", "idempotency_token": failed_token})
        self.assertEqual(r.status, 200, r.body)
        self.assertTrue(r.json().get("duplicate"), r.json())
        for _ in range(3):
            c.post_json("/increment", {"counter_name": "v"})
            acked += 1
        self.assertEqual(c.get_json("/counter/v")["total_count"], acked + 1)
        c.close()
        srv.kill()
        srv.start()
        c = srv.client()
        self.assertEqual(c.get_json("/counter/v")["total_count"], acked + 1)

    def test_fsync_error(self):
        self.run_case("always", "wal_fsync=eio@6", "fsync")

    def test_write_error(self):
        self.run_case("everysec", "wal_write=eio@6", "io_error")


if __name__ == "__main__":
    unittest.main(verbosity=2)
