"""
69_listing_big.py - the coordinator's listing at a size that used to fail (label "big":
`ctest -LE big` skips it). Runs the plain (release) build: ASan would make the fill slow.

Before paged listings, the coordinator asked every region for its whole /counters; a
region holding 300,000 counters with 200-byte names answered 77 MB, over the HTTP
client's 64 MB cap on an answer (and, on a busy machine, over the 2 s upstream time-out),
so the coordinator answered {"counter_names":[],"healthy_regions":0,"regions":{}}: no
counters, without a word of why. Here three regions hold 300,000 such counters each
(500,000 names in all, overlapping), and:
  - each region's /counters answers its first page, truncated, with total_counters;
  - the coordinator's /global/counters answers all three regions healthy, the first
    1,000 names of the union, and pages through every one of the 500,000 names in order,
    none lost or repeated (limit 10,000);
  - the coordinator's RSS stays under 64 MB.
"""

import os
import time
import unittest

import bigfill
import harness

PER_REGION = 300000
STEP = 100000
NAME_LEN = 200
RSS_LIMIT_MB = 64


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


class ListingBig(harness.ServerTestCase):
    def setUp(self):
        super().setUp()
        # A fill of 900,000 counters takes 30 s on a loaded 2-core machine: the test's own
        # budget replaces the harness' 40 s per test method.
        self.addCleanup(harness.arm_hard_limit(90))
        harness.BIN = plain_bin()

    def test_coordinator_lists_what_used_to_fail(self):
        ports = harness.free_ports(4)
        regions = []
        for i, (region, node) in enumerate(harness.LAB_REGIONS):
            regions.append(self.start_server(["--region", region, "--node-id", node,
                                              "--peers", "", "--sync-interval-ms", "600000"],
                                             port=ports[i], name=node))
        eps = ",".join("%s=%s" % (r, s.url) for (r, _), s in zip(harness.LAB_REGIONS, regions))
        co = self.start_server(["--role", "coordinator", "--regions", eps], port=ports[3],
                               name="coordinator")
        t0 = time.monotonic()
        for i, srv in enumerate(regions):
            bigfill.fill(srv.port, PER_REGION, name_len=NAME_LEN, first=i * STEP)
        print("\n[69] %d counters of %d bytes on each of 3 regions in %.1f s"
              % (PER_REGION, NAME_LEN, time.monotonic() - t0))
        with regions[0].client(timeout=30) as c:
            page = c.get_json("/counters")
            self.assertEqual((len(page["counters"]), page["total_counters"], page["truncated"]),
                             (1000, PER_REGION, True))
        union = 2 * STEP + PER_REGION
        expected = (bigfill.counter_name(i, NAME_LEN) for i in range(union))
        with co.client(timeout=30) as c:
            t1 = time.monotonic()
            first = c.get_json("/global/counters")
            took = time.monotonic() - t1
            self.assertEqual((first["healthy_regions"], first["total_regions"]), (3, 3),
                             "regions failed: %r" % first.get("region_errors"))
            self.assertEqual(first["counter_names"],
                             [bigfill.counter_name(i, NAME_LEN) for i in range(1000)])
            self.assertEqual((first["total_counters"], first["truncated"]), (PER_REGION, True))
            cursor, pages, seen, t1 = "", 0, 0, time.monotonic()
            while True:
                page = c.get_json("/global/counters?limit=10000&cursor=" + cursor)
                self.assertEqual(page["healthy_regions"], 3, page.get("region_errors"))
                for name in page["counter_names"]:
                    self.assertEqual(name, next(expected), "page %d" % pages)
                    seen += 1
                pages += 1
                if not page["truncated"]:
                    break
                cursor = page["next_cursor"]
            walk = time.monotonic() - t1
        self.assertEqual(seen, union)
        self.assertIsNone(next(expected, None))
        rss = rss_mb(co.proc.pid)
        print("[69] /global/counters first page %.0f ms; %d pages of 10,000 in %.1f s "
              "(%.0f ms a page); coordinator RSS %.1f MB"
              % (took * 1000, pages, walk, walk * 1000 / pages, rss))
        self.assertLess(rss, RSS_LIMIT_MB, "coordinator RSS %.1f MB" % rss)


if __name__ == "__main__":
    unittest.main(verbosity=2)
