"""
93_tombstone_gc_big.py - deleting a million counters gives their memory and disk back
(label "big": `ctest -LE big` skips it). Runs the plain (release) build.

One region with a data directory and --tombstone-grace-s 1 holds 300,000 counters (the
warm-up); its RSS and data directory are measured. It then takes 1,000,000 more counters
(POST /increments of 1,000, pipelined), and every one of them is deleted (pipelined
DELETE /v1/counters/default/{name}). Once the tombstone GC has sealed and dropped them all
(counterd_tombstones_dropped_total) and the snapshot it asks for is in place, the RSS and
the data directory are back within 10% of the warm-up's (and at least 90% of the memory the
million took is given back: the store keeps 1.5-2 MB more than before, its id and name tables
sized for the counters left plus slack, and a part-used arena chunk), the warm-up's counters are all
there, and a deleted name counted again starts from zero.
"""

import json
import os
import socket
import time
import unittest

import bigfill
import harness

WARM = 300000
MANY = 1000000
NAME_LEN = 24
PIPELINE = 5000  # DELETEs in flight on the connection at a time
SLACK = 0.10


def plain_bin():
    san = harness.BIN
    plain = san[:-4] if san.endswith("-san") else san
    return plain if os.access(plain, os.X_OK) else san


def rss_mb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return 0.0


def dir_mb(path):
    """Disk the data directory takes (allocated blocks, as du)."""
    total = 0
    for name in os.listdir(path):
        try:
            total += os.stat(os.path.join(path, name)).st_blocks * 512
        except FileNotFoundError:
            pass  # a snapshot's temporary file renamed meanwhile
    return total / 1048576.0


def pipelined(port, requests, window=20):
    """Sends the raw HTTP requests on one connection, window of them in flight at a time.
    @return how many answered 200."""
    sock = socket.create_connection((harness.HOST, port), timeout=60)
    ok = 0
    try:
        for b in range(0, len(requests), window):
            chunk = requests[b:b + window]
            sock.sendall(b"".join(chunk))
            got, data = 0, b""
            while got < len(chunk):
                more = sock.recv(1 << 20)
                if not more:
                    raise AssertionError("the node closed the connection after %d answers"
                                         % (b + got))
                data += more
                # Every answer has a status line; a JSON body never holds "HTTP/1.1 ".
                got = data.count(b"HTTP/1.1 ")
            ok += data.count(b"HTTP/1.1 200 ")
    finally:
        sock.close()
    return ok


def create(port, prefix, n):
    """Counters <prefix>00000000.. each counted once: POST /increments of 1,000 items."""
    reqs = []
    for b in range(0, n, 1000):
        body = json.dumps({"increments": [{"counter_name": bigfill.counter_name(i, NAME_LEN,
                                                                                 prefix),
                                           "amount": 1} for i in range(b, min(n, b + 1000))]})
        reqs.append(b"POST /increments HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
                    b"\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body.encode()))
    return pipelined(port, reqs) * 1000  # n is a multiple of 1,000


def delete_all(port, names):
    """DELETE /v1/counters/default/{name} for every name, pipelined. @return how many
    answered 200."""
    return pipelined(port, [b"DELETE /v1/counters/default/%s HTTP/1.1\r\nHost: x\r\n"
                            b"Content-Length: 0\r\n\r\n" % n.encode() for n in names],
                     window=PIPELINE)


class TombstoneGcBig(harness.ServerTestCase):
    def setUp(self):
        super().setUp()
        self.addCleanup(harness.arm_hard_limit(110))
        harness.BIN = plain_bin()

    def metric(self, c, name, **labels):
        samples = harness.parse_metrics(c.get("/metrics").text())
        values = harness.metric_values(samples, name, **labels)
        return values[0] if values else None

    def test_delete_a_million_gives_memory_and_disk_back(self):
        data = self.tmp_data_dir()
        srv = self.start_server(["--region", "us-east", "--node-id", "us-east-1", "--peers", "",
                                 "--data-dir", data, "--tombstone-grace-s", "1",
                                 "--sync-interval-ms", "600000"], name="us-east-1")
        t0 = time.monotonic()
        self.assertEqual(create(srv.port, "w", WARM), WARM)
        time.sleep(1.5)  # the log written (everysec), the names taken in
        rss0, disk0 = rss_mb(srv.proc.pid), dir_mb(data)
        print("\n[93] warm-up: %d counters in %.1f s; RSS %.1f MB, data directory %.1f MB"
              % (WARM, time.monotonic() - t0, rss0, disk0))

        t1 = time.monotonic()
        self.assertEqual(create(srv.port, "c", MANY), MANY)
        time.sleep(1.0)
        rss1, disk1 = rss_mb(srv.proc.pid), dir_mb(data)
        print("[93] +%d counters in %.1f s; RSS %.1f MB, data directory %.1f MB"
              % (MANY, time.monotonic() - t1, rss1, disk1))

        names = [bigfill.counter_name(i, NAME_LEN, "c") for i in range(MANY)]
        t2 = time.monotonic()
        self.assertEqual(delete_all(srv.port, names), MANY)
        print("[93] %d DELETEs in %.1f s" % (MANY, time.monotonic() - t2))
        with srv.client(timeout=30) as c:
            r = c.get("/v1/counters/default/%s" % names[12345])
            self.assertEqual(r.status, 404, r.text())
            # The GC seals and drops them; then a snapshot replaces the log that held them.
            t3, dropped = time.monotonic(), 0
            while time.monotonic() - t3 < 60:
                dropped = self.metric(c, "counterd_tombstones_dropped_total") or 0
                if dropped >= MANY:
                    break
                time.sleep(0.5)
            self.assertEqual(dropped, MANY, "tombstones dropped after %.0f s"
                             % (time.monotonic() - t3))
            gc_s = time.monotonic() - t3
            sync = c.get_json("/admin/sync")["tombstones"]
            self.assertEqual((sync["dead"], sync["dropped"]), (0, MANY), sync)
            deadline, rss2, disk2 = time.monotonic() + 20, 0, 0
            while time.monotonic() < deadline:
                rss2, disk2 = rss_mb(srv.proc.pid), dir_mb(data)
                if rss2 <= rss0 * (1 + SLACK) and disk2 <= disk0 * (1 + SLACK):
                    break
                time.sleep(0.5)
            print("[93] sealed and dropped in %.1f s; RSS %.1f MB (%.0f%% of the warm-up's), "
                  "data directory %.1f MB (%.0f%%)"
                  % (gc_s, rss2, 100 * rss2 / rss0, disk2, 100 * disk2 / disk0))
            self.assertLessEqual(rss2, rss0 * (1 + SLACK), "RSS %.1f MB after, %.1f MB before"
                                 % (rss2, rss0))
            self.assertLessEqual(rss2 - rss0, (rss1 - rss0) * SLACK, "RSS %.1f MB after, %.1f MB "
                                 "with the million, %.1f MB before" % (rss2, rss1, rss0))
            self.assertLessEqual(disk2, disk0 * (1 + SLACK), "data directory %.1f MB after, "
                                 "%.1f MB before" % (disk2, disk0))
            self.assertEqual(self.metric(c, "counterd_store_counters"), WARM)
            w = c.get_json("/counter/%s" % bigfill.counter_name(WARM - 1, NAME_LEN, "w"))
            self.assertEqual(w["total_count"], 1)
            # A dropped name counted again starts from zero.
            r = c.post_json("/v1/counters/default/%s/add-and-get" % names[777], {"delta": 1})
            self.assertEqual(r["count"], 1, r)
        # And the data directory says the same after a restart.
        srv.stop()
        srv.start()
        with srv.client(timeout=30) as c:
            self.assertEqual(c.get_json("/v1/counters/default/%s" % names[777])["count"], 1)
            self.assertEqual(c.get("/v1/counters/default/%s" % names[778]).status, 404)
            self.assertEqual(self.metric(c, "counterd_store_counters"), WARM + 1)

    def tmp_data_dir(self):
        import shutil
        import tempfile
        d = tempfile.mkdtemp(prefix="counterd-data-93-")
        self.addCleanup(shutil.rmtree, d, True)
        return d


if __name__ == "__main__":
    unittest.main(verbosity=2)
