"""
22_region_batch.py - POST /increments on a region node, against docs/API.md
("POST /increments").

Each item must be answered, applied and remembered exactly as POST /increment answers it
alone: the same fields (plus "status"), the same idempotency semantics (duplicates within a
batch, across batches and across the two endpoints, 409 conflicts, pending increments held
for another home), the same errors per item with a detail naming the item's index and field,
next to good items that are applied. A body that is not a batch is 400 (413 beyond the limit)
and applies nothing. With a data directory, what a batch acknowledged is there after SIGKILL
and restart (--fsync always), its tokens too.
"""

import errno
import os
import shutil
import subprocess
import tempfile
import time
import unittest

import harness

REGION = "ap-south"
NODE = "ap-south-7"
I64_MAX = 2**63 - 1
BATCH_MAX = 1000


item = harness.batch_item


class RegionBatch(harness.ServerTestCase):
    @classmethod
    def setUpClass(cls):
        cls.srv = cls.start_class_server(["--region", REGION, "--node-id", NODE,
                                          "--sync-interval-ms", "60000"], name="region")

    def setUp(self):
        super().setUp()
        self.c = self.srv.client()
        self.addCleanup(self.c.close)

    def batch(self, items, status=200):
        return self.c.post_json("/increments", {"increments": items}, status)

    def counter(self, name):
        return self.c.get_json("/counter/%s" % name)

    def answer(self, name, local, total=None, **extra):
        a = {"status": 200, "counter": name, "local_count": local,
             "total_count": local if total is None else total, "node_id": NODE,
             "region": REGION}
        a.update(extra)
        return a

    def assertBatch(self, got, results):
        failed = sum(1 for r in results if r["status"] != 200)
        self.assertJsonEqual(got, {"results": results, "ok": len(results) - failed,
                                   "failed": failed, "region": REGION, "node_id": NODE})

    def assertItemError(self, res, status, code, detail_start):
        self.assertEqual(set(res), {"status", "error", "detail"}, res)
        self.assertEqual((res["status"], res["error"]), (status, code), res)
        self.assertTrue(res["detail"].startswith(detail_start),
                        "detail %r should start with %r" % (res["detail"], detail_start))

    # Answers --------------------------------------------------------------------------

    def test_items_answered_as_alone(self):
        got = self.batch([item("b1"), item("b1", 5), item("b2", -2), item("b1", 0)])
        self.assertBatch(got, [self.answer("b1", 1), self.answer("b1", 6),
                               self.answer("b2", -2), self.answer("b1", 6)])
        alone = self.c.post_json("/increment", {"counter_name": "b1", "amount": 1})
        self.assertJsonEqual(alone, {k: v for k, v in self.answer("b1", 7).items()
                                     if k != "status"})
        self.assertEqual(self.counter("b1")["nodes"], {NODE: 7})

    def test_defaults_and_order(self):
        # {} is {"counter_name":"views","amount":1}, as for /increment; items apply in order.
        got = self.batch([{}, item("b-order", 3), item("b-order", I64_MAX - 3)])
        self.assertEqual(got["results"][0]["counter"], "views")
        self.assertEqual(got["results"][2]["local_count"], I64_MAX)
        self.assertEqual(self.counter("b-order")["total_count"], I64_MAX)

    # Idempotency ----------------------------------------------------------------------

    def test_duplicates_within_and_across_batches(self):
        got = self.batch([item("b-dup", 2, "t1"), item("b-dup", 2, "t1"), item("b-dup", 1)])
        self.assertBatch(got, [self.answer("b-dup", 2), self.answer("b-dup", 2, duplicate=True),
                               self.answer("b-dup", 3)])
        got = self.batch([item("b-dup", 2, "t1"), item("b-dup", 4, "t2")])
        self.assertBatch(got, [self.answer("b-dup", 2, duplicate=True), self.answer("b-dup", 7)])
        # Across the endpoints, both ways.
        alone = self.c.post_json("/increment", {"counter_name": "b-dup", "amount": 4,
                                                "idempotency_token": "t2"})
        self.assertTrue(alone.get("duplicate"), alone)
        self.assertEqual(alone["local_count"], 7)
        self.c.post_json("/increment", {"counter_name": "b-dup", "amount": 5,
                                        "idempotency_token": "t3"})
        got = self.batch([item("b-dup", 5, "t3")])
        self.assertBatch(got, [self.answer("b-dup", 12, duplicate=True)])
        # A token is per counter: the same token on another counter is a new increment.
        got = self.batch([item("b-dup2", 2, "t1")])
        self.assertBatch(got, [self.answer("b-dup2", 2)])
        self.assertEqual(self.counter("b-dup")["total_count"], 12)

    def test_conflicts(self):
        got = self.batch([item("b-cf", 2, "c1"), item("b-cf", 3, "c1"), item("b-cf", 1)])
        self.assertEqual(got["results"][0], self.answer("b-cf", 2))
        self.assertItemError(got["results"][1], 409, "idempotency_conflict", "increments[1]: ")
        self.assertIn("idempotency_token", got["results"][1]["detail"])
        self.assertEqual(got["results"][2], self.answer("b-cf", 3))
        self.assertEqual((got["ok"], got["failed"]), (2, 1))
        got = self.batch([item("b-cf", 9, "c1")])
        self.assertItemError(got["results"][0], 409, "idempotency_conflict", "increments[0]: ")
        self.assertEqual(self.counter("b-cf")["total_count"], 3)

    def test_overflow_item_next_to_good_ones(self):
        got = self.batch([item("b-of", I64_MAX), item("b-of", 1), item("b-of2", 1)])
        self.assertEqual(got["results"][0]["local_count"], I64_MAX)
        self.assertItemError(got["results"][1], 409, "overflow", "increments[1]: ")
        self.assertEqual(got["results"][2], self.answer("b-of2", 1))
        self.assertEqual(self.counter("b-of")["total_count"], I64_MAX)

    # Bad items, bad bodies ------------------------------------------------------------

    def test_bad_items_next_to_good_ones(self):
        bad = [
            (5, "bad_field", "increments[1] must be an object"),
            (item("b-bad", "1"), "bad_field", "increments[2].amount must be an integer"),
            (item("b-bad", 1.5), "bad_field", "increments[3].amount must be an integer"),
            (item("b-bad", 2**63), "bad_field", "increments[4].amount must be an integer"),
            (item("no spaces"), "bad_name", "increments[5].counter_name"),
            ({"counter_name": 7}, "bad_field", "increments[6].counter_name must be a string"),
            (item("b-bad", 1, ""), "bad_field", "increments[7].idempotency_token"),
            (item("b-bad", 1, "x" * 129), "bad_field", "increments[8].idempotency_token"),
            ({"counter_name": "b-bad", "idempotency_token": 3}, "bad_field",
             "increments[9].idempotency_token"),
        ]
        items = [item("b-bad", 1)] + [b[0] for b in bad] + [item("b-bad", 10)]
        got = self.batch(items)
        self.assertEqual(got["results"][0], self.answer("b-bad", 1))
        for k, (_, code, detail) in enumerate(bad, start=1):
            self.assertItemError(got["results"][k], 400, code, detail)
        self.assertEqual(got["results"][-1], self.answer("b-bad", 11))
        self.assertEqual((got["ok"], got["failed"]), (2, len(bad)))
        self.assertEqual(self.counter("b-bad")["total_count"], 11)
        # Each item's outcome is in /metrics too.
        samples = harness.parse_metrics(self.c.get("/metrics").text())
        for status in ("200", "400"):
            v = harness.metric_values(samples, "counterd_batch_items_total", status=status)
            self.assertTrue(v and v[0] >= (2 if status == "200" else len(bad)), (status, v))
        # The same mistake alone gets the same detail, without the item's name.
        r = self.c.post("/increment", {"counter_name": "b-bad", "amount": "1"})
        body = self.assertError(r, 400, "bad_field")
        self.assertEqual("increments[2]." + body["detail"], got["results"][2]["detail"])

    def test_bad_bodies_apply_nothing(self):
        self.batch([item("b-body", 1)])
        cases = [
            (b"{", 400, "bad_json"),
            (b"", 400, "bad_field"),
            (b"[]", 400, "bad_json"),
            (b'[{"counter_name":"b-body"}]', 400, "bad_json"),
            (b'{"increments":{"counter_name":"b-body"}}', 400, "bad_field"),
            (b'{"increments":[]}', 400, "bad_field"),
            (b'{"increments":[{"counter_name":"b-body"},]}', 400, "bad_json"),
            (('{"increments":[%s]}' % ",".join(['{"counter_name":"b-body"}'] * (BATCH_MAX + 1)))
             .encode(), 413, "too_large"),
        ]
        for body, status, code in cases:
            with self.srv.client() as c:
                r = c.post("/increments", body)
            self.assertError(r, status, code, "POST /increments %r" % body[:60])
        # Over the body limit of /increments (2 MiB): refused from the announced length.
        with self.srv.raw() as raw:
            raw.send("POST /increments HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
                     "\r\nContent-Length: %d\r\n\r\n{" % ((2 << 20) + 1))
            self.assertError(raw.read_response(), 413, "too_large", "a body over 2 MiB")
        self.assertEqual(self.counter("b-body")["total_count"], 1)
        # The largest batch is taken.
        got = self.batch([item("b-body", 1)] * BATCH_MAX)
        self.assertEqual((got["ok"], got["failed"]), (BATCH_MAX, 0))
        self.assertEqual(self.counter("b-body")["total_count"], 1 + BATCH_MAX)

    def test_get_is_405(self):
        r = self.c.get("/increments")
        self.assertError(r, 405, "method_not_allowed")


class RegionBatchHomes(harness.ServerTestCase):
    """A node that does not know every region yet (its peer never answers): a token that
    does not name it is held pending for its home, as POST /increment holds it."""

    def test_pending_as_alone(self):
        dead = harness.free_ports(1)[0]
        srv = self.start_server(["--region", "us-east", "--node-id", "us-east-1", "--peers",
                                 "http://127.0.0.1:%d" % dead, "--sync-interval-ms", "60000"])
        with srv.client() as c:
            got = c.post_json("/increments", {"increments": [
                item("p", 2, "us-east-1/a"), item("p", 3, "elsewhere-1/b"),
                item("p", 3, "elsewhere-1/b"), item("p", 4, "elsewhere-1/b")]})
            res = got["results"]
            self.assertEqual(res[0]["local_count"], 2)
            self.assertNotIn("pending", res[0])
            self.assertTrue(res[1].get("pending"), res[1])
            self.assertEqual((res[1]["local_count"], res[1]["total_count"]), (2, 5))
            self.assertTrue(res[2].get("duplicate"), res[2])
            self.assertEqual(res[3]["status"], 409)
            alone = c.post_json("/increment", {"counter_name": "p", "amount": 5,
                                               "idempotency_token": "elsewhere-1/c"})
            self.assertTrue(alone.get("pending"), alone)
            counter = c.get_json("/counter/p")
        self.assertEqual((counter["local_count"], counter["total_count"], counter["pending"]),
                         (2, 10, 8))


class RegionBatchDurable(harness.ServerTestCase):
    """--fsync always: a batch's answer leaves once its records are durable; SIGKILL, then a
    restart on the same data dir, finds every acknowledged item and its token."""

    def test_batch_survives_sigkill(self):
        d = tempfile.mkdtemp(prefix="counterd-batch-")
        self.addCleanup(shutil.rmtree, d, True)
        srv = harness.Server(["--region", "us-east", "--node-id", "us-east-1", "--data-dir", d,
                              "--fsync", "always", "--sync-interval-ms", "60000"], name="node")
        self.addCleanup(srv.stop)
        srv.start()
        expected = {}
        with srv.client() as c:
            for k in range(20):
                items = [item("d%d" % (i % 5), i + 1, "tok-%d-%d" % (k, i)) for i in range(16)]
                got = c.post_json("/increments", {"increments": items})
                self.assertEqual(got["failed"], 0, got)
                for it in items:
                    expected[it["counter_name"]] = (expected.get(it["counter_name"], 0) +
                                                    it["amount"])
        srv.kill()
        srv.start()
        with srv.client() as c:
            counters = c.get_json("/counters")["counters"]
            self.assertEqual({k: v["total_count"] for k, v in counters.items()}, expected)
            # The tokens came back with the counts: a retry of the last batch counts nothing.
            got = c.post_json("/increments", {"increments": items})
            self.assertTrue(all(r.get("duplicate") for r in got["results"]), got)
            self.assertEqual(c.get_json("/counter/d0")["total_count"], expected["d0"])
        # A graceful restart keeps them too.
        srv.stop()
        srv.start()
        with srv.client() as c:
            counters = c.get_json("/counters")["counters"]
        self.assertEqual({k: v["total_count"] for k, v in counters.items()}, expected)

    def test_answer_waits_for_fsync(self):
        """The answer of a batch is held until its records are fsynced: when that fsync
        fails (a fault point), the whole batch is answered 503 "applied but could not be
        made durable", and a retry with the same tokens, once the node writes again, finds
        every item applied once."""
        d = tempfile.mkdtemp(prefix="counterd-batch-eio-")
        self.addCleanup(shutil.rmtree, d, True)
        srv = harness.Server(["--region", "us-east", "--node-id", "us-east-1", "--data-dir", d,
                              "--fsync", "always", "--sync-interval-ms", "60000"], name="eio")
        self.addCleanup(srv.stop)
        with harness.environ(COUNTERD_FAULTS="wal_fsync=eio@6"):
            srv.start()
        acked, failed = 0, None
        with srv.client() as c:
            for k in range(50):
                items = [item("e", 1, "eio-%d-%d" % (k, i)) for i in range(4)]
                r = c.post("/increments", {"increments": items})
                if r.status == 200:
                    self.assertEqual(r.json()["failed"], 0, r.json())
                    acked += 4
                    continue
                self.assertError(r, 503, "unavailable", "a batch whose fsync failed",
                                 detail_contains="could not be made durable")
                failed = items
                break
            self.assertIsNotNone(failed, "the fault point was not reached")
            t0 = time.monotonic()
            while c.get_json("/health")["status"] != "ok":
                self.assertLess(time.monotonic() - t0, 10, "no recovery within 10 s")
                time.sleep(0.1)
            got = c.post_json("/increments", {"increments": failed})
            self.assertTrue(all(res.get("duplicate") for res in got["results"]), got)
            self.assertEqual(c.get_json("/counter/e")["total_count"], acked + 4)
        srv.kill()
        srv.start()
        with srv.client() as c:
            self.assertEqual(c.get_json("/counter/e")["total_count"], acked + 4)


def fill(path):
    """Appends zeros to path until its file system is full."""
    chunk = b"\0" * 65536
    with open(path, "ab", buffering=0) as f:
        while True:
            try:
                f.write(chunk)
            except OSError as e:
                if e.errno != errno.ENOSPC:
                    raise
                if len(chunk) == 1:
                    return
                chunk = chunk[:len(chunk) // 16 or 1]


@unittest.skipUnless(os.geteuid() == 0, "needs root to mount a small tmpfs (run as root)")
class RegionBatchDiskFull(harness.ServerTestCase):
    """A full disk: a batch is taken whole (200) or refused whole (503, nothing applied),
    never in part; once there is room again batches are taken, and after SIGKILL and a
    restart exactly the acknowledged ones are there."""

    def test_whole_batches_or_nothing(self):
        top = tempfile.mkdtemp(prefix="counterd-batchfull-")
        self.addCleanup(shutil.rmtree, top, True)
        mnt = os.path.join(top, "mnt")
        os.mkdir(mnt)
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", mnt],
                           capture_output=True, text=True)
        self.assertEqual(r.returncode, 0, "cannot mount a tmpfs: %s" % r.stderr.strip())
        self.addCleanup(subprocess.run, ["umount", "-l", mnt], check=False)
        srv = harness.Server(["--region", "us-east", "--node-id", "us-east-1", "--data-dir",
                              os.path.join(mnt, "data"), "--fsync", "always",
                              "--sync-interval-ms", "60000"], name="full")
        self.addCleanup(srv.stop)
        srv.start()
        name = "full-" + "n" * 190
        filler = os.path.join(mnt, "filler")
        fill(filler)
        acked, refused, k = 0, 0, 0
        with srv.client() as c:
            t0 = time.monotonic()
            while refused < 3:
                self.assertLess(time.monotonic() - t0, 20, "no 503 after %d batches" % acked)
                k += 1
                items = [item(name, 1, "%s-%d-%d" % ("t" * 100, k, i)) for i in range(16)]
                r = c.post("/increments", {"increments": items})
                if r.status == 200:
                    self.assertEqual(r.json()["failed"], 0, r.json())
                    acked += 1
                    continue
                body = self.assertError(r, 503, "unavailable", "a batch on a full disk")
                self.assertIn("nothing was applied", body["detail"])
                refused += 1
            total = c.get_json("/counter/%s" % name)["total_count"]
            self.assertEqual(total, 16 * acked, "a refused batch was applied in part")
            os.remove(filler)
            t0 = time.monotonic()
            while True:
                r = c.post("/increments", {"increments": [item(name, 1, "after-%d" % k)]})
                if r.status == 200:
                    acked_after = 1
                    break
                self.assertLess(time.monotonic() - t0, 10, "no batch taken after freeing space")
                k += 1
                time.sleep(0.2)
        srv.kill()
        srv.start()
        with srv.client() as c:
            self.assertEqual(c.get_json("/counter/%s" % name)["total_count"],
                             16 * acked + acked_after)


if __name__ == "__main__":
    unittest.main(verbosity=2)
