"""
64_snapshot_kill.py - a restart right after a SIGKILL in the middle of a snapshot succeeds.

A snapshot is written by a forked child. The node is loaded with enough counters (over
/sync) that the child takes a moment, and killed as soon as it says the snapshot started.
The restart, on the same port and data directory, must start at once (no "in use by
another counterd process", no port still held by the child), leave no temporary file of
the dead snapshot behind, and hold every counter the killed run acknowledged.
"""

import os
import re
import shutil
import signal
import tempfile
import time
import unittest

import harness

COUNTERS = 400000  # each /sync body below carries 50,000 of them
BATCH = 50000


def pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (dead, not yet reaped by its new parent) holds nothing: count it as dead.
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return False


class SnapshotKill(harness.ServerTestCase):
    def setUp(self):
        super().setUp()
        signal.alarm(90)  # loading 400,000 counters takes a while on a busy machine

    def test_restart_after_kill_during_snapshot(self):
        d = tempfile.mkdtemp(prefix="counterd-data-snapkill-")
        self.addCleanup(shutil.rmtree, d, True)
        # The log of 200,000 counters is about 17 MB: the snapshot is due when it is in.
        args = ["--region", "us-east", "--node-id", "us-east-1", "--data-dir", d,
                "--fsync", "everysec", "--sync-interval-ms", "60000",
                "--snapshot-bytes", str(16 << 20)]
        srv = harness.Server(args, name="snapkill")
        self.addCleanup(srv.stop)
        srv.start()
        with srv.client(timeout=30) as c:
            for b in range(0, COUNTERS, BATCH):
                body = {"node_id": "us-west-1", "timestamp": time.time(),
                        "counts": {"k%06d" % i: {"us-west-1": i + 1}
                                   for i in range(b, b + BATCH)}}
                r = c.post("/sync", body)
                self.assertEqual(r.status, 200, r.body[:300])
        # Wait for the snapshot to start, and kill the node while its child writes.
        deadline = time.monotonic() + 15
        child = None
        while child is None:
            self.assertLess(time.monotonic(), deadline, "no snapshot started within 15 s:\n"
                            + harness.log_tail(srv.log_path))
            m = re.findall(r"snapshot of (\d+) counters started \(pid (\d+)\)", srv.log_text())
            if m:
                self.assertEqual(len(m), 1, "more than one snapshot: %r" % m)
                self.assertEqual(int(m[0][0]), COUNTERS, "the snapshot started early: %r" % m)
                child = int(m[0][1])
            else:
                time.sleep(0.005)
        during = pid_alive(child)
        srv.kill()
        stale = [f for f in os.listdir(d) if f.endswith(".tmp")]
        self.assertTrue(during, "the snapshot child %d had already finished when the node "
                        "was killed: the test did not kill it mid-snapshot" % child)
        # Restart at once, on the same port and directory.
        t0 = time.monotonic()
        srv.start()
        took = time.monotonic() - t0
        log = srv.log_text()
        print("\n[64_snapshot_kill] restart after the kill answered in %.2f s; child %d %s"
              % (took, child, "still alive" if pid_alive(child) else "gone"))
        self.assertFalse(pid_alive(child), "the snapshot child %d outlived its parent" % child)
        left = [f for f in os.listdir(d) if f.endswith(".tmp")]
        self.assertEqual(left, [], "temporary files left after the restart: %r" % left)
        with srv.client(timeout=30) as c:
            counters, cursor = {}, ""
            while True:  # GET /counters answers pages of at most 10,000 (API.md)
                body = c.get_json("/counters?limit=10000&cursor=" + cursor)
                counters.update(body["counters"])
                if not body["truncated"]:
                    break
                cursor = body["next_cursor"]
            self.assertEqual(len(counters), COUNTERS)
            bad = [k for k, v in counters.items() if v["total_count"] != int(k[1:]) + 1]
            self.assertEqual(bad[:5], [], "%d counters lost or wrong after the restart"
                             % len(bad))
        if stale:  # the dead child's partial snapshot: removed, and said so
            self.assertIn("removed %s" % stale[0], log)
        print("[64_snapshot_kill] temporary files after the kill: %r (removed at the restart)"
              % stale)


if __name__ == "__main__":
    unittest.main(verbosity=2)
