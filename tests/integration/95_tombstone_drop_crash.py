"""
95_tombstone_drop_crash.py - dropped counters stay dropped across kill -9.

One region with a data directory (--fsync always, --tombstone-grace-s 1, no peers) counts
200 counters and deletes 100 of them; the GC seals and drops those (too few to ask for a
snapshot, so the drops are in the log only). SIGKILL, restart: the dropped counters are
unknown (404, in no listing, not in counterd_store_counters), the live ones hold their
counts, and a dropped name counted again starts from zero. A graceful restart after that
reads the same.
"""

import os
import shutil
import tempfile
import time
import unittest

import harness

N = 200


class TombstoneDropCrash(harness.ServerTestCase):
    def metric(self, c, name, **labels):
        values = harness.metric_values(harness.parse_metrics(c.get("/metrics").text()), name,
                                       **labels)
        return values[0] if values else None

    def check_state(self, srv, recounted):
        with srv.client() as c:
            listed = set(c.get_json("/counters?limit=1000")["counters"])
            for i in range(N):
                name = "k%03d" % i
                r = c.get("/v1/counters/default/%s" % name)
                if i % 2 == 0 and name not in recounted:
                    self.assertEqual(r.status, 404, "%s: %s" % (name, r.text()))
                    self.assertNotIn(name, listed)
                elif i % 2 == 0:
                    self.assertEqual(r.json()["count"], recounted[name], name)
                else:
                    self.assertEqual(r.json()["count"], i + 1, name)
                    self.assertIn(name, listed)
            self.assertEqual(self.metric(c, "counterd_store_counters"), N // 2 + len(recounted))

    def test_drops_survive_sigkill(self):
        data = tempfile.mkdtemp(prefix="counterd-data-95-")
        self.addCleanup(shutil.rmtree, data, True)
        srv = self.start_server(["--region", "us-east", "--node-id", "us-east-1", "--peers", "",
                                 "--data-dir", data, "--fsync", "always",
                                 "--tombstone-grace-s", "1"], name="us-east-1")
        with srv.client() as c:
            for i in range(N):
                c.post_json("/increment", {"counter_name": "k%03d" % i, "amount": i + 1})
            for i in range(0, N, 2):
                r = c.request("DELETE", "/v1/counters/default/k%03d" % i)
                self.assertEqual(r.status, 200, r.text())
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                if self.metric(c, "counterd_tombstones_dropped_total") == N // 2:
                    break
                time.sleep(0.2)
            self.assertEqual(self.metric(c, "counterd_tombstones_dropped_total"), N // 2)
            time.sleep(0.3)  # the last drop records reach the file (written each 200 ms)
        self.check_state(srv, {})
        self.assertEqual([f for f in os.listdir(data) if f.endswith(".snap")], [])
        srv.kill()
        srv.start()
        self.check_state(srv, {})
        with srv.client() as c:
            r = c.post_json("/v1/counters/default/k004/add-and-get", {"delta": 5})
            self.assertEqual(r["count"], 5, r)
        srv.kill()
        srv.start()
        self.check_state(srv, {"k004": 5})
        srv.stop()
        srv.start()
        self.check_state(srv, {"k004": 5})


if __name__ == "__main__":
    unittest.main(verbosity=2)
