"""
68_listing_top.py - paged, filtered listings and top counters on every role (API.md,
"GET /counters", "/global/counters", "Top counters"), with three regions that sync only
when told.

- A region's pages: byte order, limit, cursor, prefix and matching_counters,
  total_counters, truncated iff next_cursor; paging while counters are being added never
  loses or repeats a name that existed when the listing started, and every name is listed
  at most once.
- The coordinator's merged pages across regions holding different names, while counters
  are being added on every region; the gateway passes the query through.
- max_bytes: every page of a region, of the coordinator and of the gateway fits it (rows of
  very different sizes, regions holding different names), walking them lists every name
  once, and a row alone over the budget still comes (one a page).
- Bad limit, cursor, prefix and max_bytes: 400 naming the parameter, on every role, nothing
  changed.
- A region that does not answer is named in region_errors, never shown as "no counters".
- changes (GET /admin/sync, /global/status): the amounts of local increments and of
  merges since start, exact, per region.
- Top by rate, total and lag, on a region and through the coordinator and the gateway;
  lag from a region's unsynced increments, gone after a force-sync.
"""

import time
import unittest

import harness

NAMES = [r for r, _ in harness.LAB_REGIONS]


def hexname(s):
    return s.encode().hex()


class Listing(harness.ServerTestCase):
    @classmethod
    def setUpClass(cls):
        cls.t = harness.Topology(sync_interval_ms=600000)
        cls.t.start(cls.addClassCleanup)
        cls.gw = cls.t.gateway.client()
        cls.co = cls.t.coordinator.client()
        cls.rc = {r.region: r.client() for r in cls.t.regions}
        for c in [cls.gw, cls.co] + list(cls.rc.values()):
            cls.addClassCleanup(c.close)

    def incr(self, region, name, amount=1):
        self.rc[region].post_json("/increment", {"counter_name": name, "amount": amount})

    def walk(self, client, path, limit, prefix=None, during=None):
        """Every page of a listing; during(page_no) runs between pages. Returns the names
        in the order listed and the pages."""
        names, pages, cursor = [], [], ""
        while True:
            q = "%s?limit=%d&cursor=%s" % (path, limit, cursor)
            if prefix is not None:
                q += "&prefix=" + prefix
            page = client.get_json(q)
            pages.append(page)
            got = page["counter_names"] if "counter_names" in page else list(page["counters"])
            self.assertLessEqual(len(got), limit)
            names.extend(got)
            self.assertEqual(page["truncated"], "next_cursor" in page, page.keys())
            if not page["truncated"]:
                return names, pages
            self.assertEqual(page["next_cursor"], hexname(got[-1]))
            cursor = page["next_cursor"]
            if during:
                during(len(pages))
            self.assertLess(len(pages), 1000, "the listing does not end")

    def test_region_pages_and_prefix(self):
        r = "us-east"
        made = ["lp_%03d" % i for i in range(57)] + ["lq_a", "lq_b"]
        for n in made:
            self.incr(r, n)
        full = self.rc[r].get_json("/counters")
        every = list(full["counters"])
        self.assertEqual(every, sorted(every), "counters are not in byte order")
        self.assertEqual(full["total_counters"], len(every))
        self.assertIs(full["truncated"], False)
        self.assertNotIn("next_cursor", full)
        self.assertNotIn("matching_counters", full)
        names, pages = self.walk(self.rc[r], "/counters", 10, prefix="lp_")
        self.assertEqual(names, sorted(n for n in made if n.startswith("lp_")))
        self.assertEqual(len(pages), 6)
        for p in pages:
            self.assertEqual(p["matching_counters"], 57)
            self.assertEqual(p["total_counters"], len(every))
        self.assertEqual(pages[0]["counters"]["lp_000"]["nodes"], {"us-east-1": 1})
        # A cursor naming no counter: the page starts after that name.
        p = self.rc[r].get_json("/counters?prefix=lp_&limit=2&cursor=" + hexname("lp_0105"))
        self.assertEqual(list(p["counters"]), ["lp_011", "lp_012"])
        p = self.rc[r].get_json("/counters?prefix=nothing_here")
        self.assertEqual((p["counters"], p["matching_counters"], p["truncated"]), ({}, 0, False))
        p = self.rc[r].get_json("/counters?prefix=")  # empty prefix: all, counted
        self.assertEqual(p["matching_counters"], len(every))

    def test_region_paging_while_adding(self):
        r = "us-west"
        before = ["la_%04d" % i for i in range(0, 600, 2)]
        for n in before:
            self.incr(r, n)
        added = []

        def add(page_no):  # names before, inside and after the listing's position
            for k in range(3):
                n = "la_%04d" % (2 * page_no * 10 + 1 + 2 * k)
                self.incr(r, n)
                added.append(n)
            self.incr(r, "la_0000a%d" % page_no)
            self.incr(r, "la_9999_%d" % page_no)
            added.extend(["la_0000a%d" % page_no, "la_9999_%d" % page_no])

        names, _ = self.walk(self.rc[r], "/counters", 25, prefix="la_", during=add)
        self.assertEqual(len(names), len(set(names)), "a name listed twice")
        self.assertEqual(names, sorted(names))
        self.assertEqual(set(before) - set(names), set(), "names lost while adding")
        self.assertTrue(set(names) <= set(before) | set(added))
        for n in added:  # added after the position reached: listed
            if n.startswith("la_9999"):
                self.assertIn(n, names)

    def test_coordinator_merges_pages_while_adding(self):
        per = {"us-east": ["lm_%03d" % i for i in range(0, 90, 3)],
               "us-west": ["lm_%03d" % i for i in range(1, 90, 3)] + ["lm_000"],
               "eu-west": ["lm_%03d" % i for i in range(2, 90, 3)]}
        for region, names in per.items():
            for n in names:
                self.incr(region, n)
        union = sorted(set(sum(per.values(), [])))
        added = []

        def add(page_no):
            for i, region in enumerate(NAMES):
                n = "lm_%03d_new%d" % (page_no * 7 + i, page_no)
                self.incr(region, n)
                added.append(n)

        names, pages = self.walk(self.co, "/global/counters", 7, prefix="lm_", during=add)
        self.assertEqual(len(names), len(set(names)), "a name listed twice")
        self.assertEqual(names, sorted(names))
        self.assertEqual(set(union) - set(names), set(), "names lost while adding")
        for p in pages:
            self.assertEqual((p["healthy_regions"], p["total_regions"]), (3, 3))
            self.assertNotIn("region_errors", p)
            for region, page in p["regions"].items():
                self.assertTrue(set(page["counters"]) <= set(p["counter_names"]))
                self.assertNotIn("next_cursor", page)
        first = pages[0]
        self.assertEqual(first["counter_names"], union[:7])
        self.assertEqual(first["regions"]["us-west"]["counters"]["lm_000"]["nodes"],
                         {"us-west-1": 1})
        self.assertEqual(first["matching_counters"], 31)  # us-west's, the largest
        # The gateway passes the query through.
        via = self.gw.get_json("/api/counters?prefix=lm_&limit=7")
        self.assertEqual(via["counter_names"], union[:7])
        self.assertEqual(via["next_cursor"], hexname(union[6]))

    def test_bad_parameters(self):
        self.incr("eu-west", "lb_keep")
        before = self.rc["eu-west"].get_json("/counter/lb_keep")
        cases = [("limit=0", "limit"), ("limit=10001", "limit"), ("limit=x", "limit"),
                 ("limit=", "limit"), ("limit=1.5", "limit"), ("limit=-1", "limit"),
                 ("cursor=zz", "cursor"), ("cursor=616", "cursor"), ("cursor=2a", "cursor"),
                 ("cursor=" + "61" * 201, "cursor"), ("prefix=a%24", "prefix"),
                 ("prefix=" + "a" * 201, "prefix"), ("prefix=%zz", "prefix"),
                 ("max_bytes=1023", "max_bytes"), ("max_bytes=1073741825", "max_bytes"),
                 ("max_bytes=", "max_bytes"), ("max_bytes=1e6", "max_bytes"),
                 ("max_bytes=99999999999", "max_bytes")]
        for client, path in ((self.rc["eu-west"], "/counters"), (self.co, "/global/counters"),
                             (self.gw, "/api/counters")):
            for q, param in cases:
                r = client.get(path + "?" + q)
                self.assertError(r, 400, "bad_field", "GET %s?%s" % (path, q),
                                 detail_contains=param)
        for client, path in ((self.rc["eu-west"], "/top"), (self.co, "/global/top"),
                             (self.gw, "/api/top")):
            for q, param in (("by=x", "by"), ("by=", "by"), ("limit=0", "limit"),
                             ("limit=101", "limit"), ("limit=ab", "limit")):
                self.assertError(client.get(path + "?" + q), 400, "bad_field",
                                 "GET %s?%s" % (path, q), detail_contains=param)
        r = self.rc["eu-west"].post("/counters/read", {"names": ["ok", "bad$"]})
        self.assertError(r, 400, "bad_name", detail_contains="names[1]")
        r = self.rc["eu-west"].post("/counters/read", {"names": ["a"] * 257})
        self.assertError(r, 400, "bad_field", detail_contains="names")
        self.assertEqual(self.rc["eu-west"].get_json("/counter/lb_keep"), before)

    def sync_wide(self, region, name, nodes):
        """Gives counter name one entry from each of `nodes` made-up node ids on region."""
        self.rc[region].post_json("/sync", {
            "node_id": "wide-1", "incarnation": "wide", "timestamp": time.time(),
            "decrements": {}, "counts": {name: {"wide%03d-1" % k: 1
                                                for k in range(nodes)}}})

    def walk_bytes(self, client, path, budget):
        """Every page of a listing under prefix lz_ within budget bytes: the names listed."""
        names, cursor, n = [], "", 0
        while True:
            r = client.get("%s?prefix=lz_&limit=10000&max_bytes=%d&cursor=%s"
                           % (path, budget, cursor))
            self.assertEqual(r.status, 200, r.body[:300])
            page = r.json()
            got = page["counter_names"] if "counter_names" in page else list(page["counters"])
            self.assertGreater(len(got), 0, "a page with nothing")
            if len(got) > 1:
                self.assertLessEqual(len(r.body), budget, "%s page %d: %d names" % (path, n, len(got)))
            names.extend(got)
            n += 1
            self.assertLess(n, 500, "the listing does not end")
            if not page["truncated"]:
                return names, n
            self.assertEqual(page["next_cursor"], hexname(got[-1]))
            cursor = page["next_cursor"]

    def test_max_bytes(self):
        long = "x" * 180
        made = {"us-east": ["lz_a%03d_%s" % (i, long) for i in range(40)],
                "us-west": ["lz_b%03d" % i for i in range(40)],
                "eu-west": ["lz_a%03d_%s" % (i, long) for i in range(0, 40, 3)]}
        for r, names in made.items():
            for n in names:
                self.incr(r, n)
        for i in (5, 17):
            self.sync_wide("us-east", "lz_a%03d_%s" % (i, long), 200)  # ~5 KB rows
        self.sync_wide("us-west", "lz_b007", 120)
        every = sorted(set(sum(made.values(), [])))
        for r in NAMES:
            names, pages = self.walk_bytes(self.rc[r], "/counters", 4096)
            self.assertEqual(names, sorted(set(made[r])))
            self.assertGreater(pages, 1)
        for client, path in ((self.co, "/global/counters"), (self.gw, "/api/counters")):
            for budget in (4096, 20000):
                names, pages = self.walk_bytes(client, path, budget)
                self.assertEqual(names, every, "%s within %d bytes" % (path, budget))
                self.assertGreater(pages, 1)
        # A budget that holds everything: one page, as without it.
        whole = self.co.get_json("/global/counters?prefix=lz_&limit=10000&max_bytes=10000000")
        self.assertIs(whole["truncated"], False)
        self.assertEqual(whole["counter_names"], every)

    def test_changes(self):
        def changes():
            st = self.co.get_json("/global/status")["regions"]
            mine = {r: self.rc[r].get_json("/admin/sync")["changes"] for r in NAMES}
            for r in NAMES:
                self.assertEqual(st[r]["changes"], mine[r], r)
            return mine
        before = changes()
        self.incr("us-east", "lc_one", 5)
        self.incr("us-east", "lc_one", 3)
        self.incr("us-west", "lc_two", 2)
        after = changes()
        self.assertEqual(after["us-east"]["local"] - before["us-east"]["local"], 8)
        self.assertEqual(after["us-west"]["local"] - before["us-west"]["local"], 2)
        self.assertEqual(after["eu-west"], before["eu-west"])
        self.assertEqual(after["eu-west"]["merged"], before["eu-west"]["merged"])
        self.rc["eu-west"].post_json("/admin/force-sync")
        synced = changes()
        self.assertGreaterEqual(synced["eu-west"]["merged"] - after["eu-west"]["merged"], 10)
        self.assertEqual(synced["eu-west"]["local"], after["eu-west"]["local"])

    def test_read_batch(self):
        self.incr("us-east", "lr_one", 4)
        got = self.rc["us-east"].post_json("/counters/read", {"names": ["lr_one", "lr_none"]})
        self.assertEqual(got["counters"]["lr_one"]["total_count"], 4)
        self.assertEqual(got["counters"]["lr_none"], {"local_count": 0, "total_count": 0,
                                                      "nodes": {}})
        self.assertNotIn("lr_none", self.rc["us-east"].get_json("/counters?prefix=lr_")
                         ["counters"], "reading created the counter")

    def test_top(self):
        for _ in range(5):
            self.incr("us-east", "lt_hot", 7)
        self.incr("us-east", "lt_big", 1000)
        self.incr("us-west", "lt_warm", 3)
        self.incr("us-west", "lt_warm", -3)  # a decrement is change too
        top = self.rc["us-east"].get_json("/top?by=rate&limit=100")
        self.assertEqual((top["by"], top["window_seconds"]), ("rate", 60))
        rates = {c["counter"]: c["rate_per_minute"] for c in top["counters"]}
        self.assertEqual((rates["lt_hot"], rates["lt_big"]), (35, 1000))
        got = [c["rate_per_minute"] for c in top["counters"]]
        self.assertEqual(got, sorted(got, reverse=True))
        tot = self.rc["us-east"].get_json("/top?by=total&limit=1")
        self.assertEqual(tot["counters"][0]["counter"], "lt_big")
        self.assertEqual(tot["counters"][0]["total_count"], 1000)
        west = self.rc["us-west"].get_json("/top?by=rate&limit=100")
        self.assertIn({"counter": "lt_warm", "total_count": 0, "rate_per_minute": 6},
                      west["counters"])

        # Through the coordinator: not synced yet, so lt_hot lags on two regions.
        for path in ("/global/top", "/api/top"):
            client = self.co if path == "/global/top" else self.gw
            lag = client.get_json(path + "?by=lag&limit=100")
            self.assertEqual((lag["by"], lag["healthy_regions"]), ("lag", 3))
            entry = {c["counter"]: c for c in lag["counters"]}
            self.assertEqual(entry["lt_hot"], {"counter": "lt_hot", "total_count": 35,
                                               "rate_per_minute": 35, "lag": 35,
                                               "converged": False})
            self.assertTrue(all(not c["converged"] for c in lag["counters"]))
            lags = [c["lag"] for c in lag["counters"]]
            self.assertEqual(lags, sorted(lags, reverse=True))
            total = client.get_json(path + "?by=total&limit=2")
            self.assertEqual(total["counters"][0]["counter"], "lt_big")
            self.assertEqual(len(total["counters"]), 2)
        # After every region synced, nothing lags; rates count what the merges added.
        for r in NAMES:
            self.rc[r].post_json("/admin/force-sync")
        for r in NAMES:
            self.rc[r].post_json("/admin/force-sync")
        lag = self.co.get_json("/global/top?by=lag&limit=100")
        self.assertEqual([c for c in lag["counters"] if c["counter"].startswith("lt_")], [])
        rate = self.co.get_json("/global/top?by=rate&limit=100")
        hot = [c for c in rate["counters"] if c["counter"] == "lt_hot"]
        self.assertEqual(hot, [{"counter": "lt_hot", "total_count": 35, "rate_per_minute": 35,
                                "lag": 0, "converged": True}])
        west = self.rc["us-west"].get_json("/top?by=rate&limit=100")
        self.assertIn("lt_hot", [c["counter"] for c in west["counters"]])
        # Lag candidates are also the changes a peer has not acknowledged, hot or not: here
        # the cold one is not among the hottest 1, and is listed all the same.
        self.incr("us-east", "lt_cold", 1)
        for _ in range(5):
            self.incr("us-east", "lt_warm2", 1)
        cand = self.rc["us-east"].get_json("/top?by=lag&limit=1")
        got = [c["counter"] for c in cand["counters"]]
        self.assertEqual((len(got), got[0] != "lt_cold", "lt_cold" in got), (2, True, True), got)
        lag = self.co.get_json("/global/top?by=lag&limit=2")
        self.assertEqual([(c["counter"], c["lag"]) for c in lag["counters"]],
                         [("lt_warm2", 5), ("lt_cold", 1)])


class RegionDown(harness.ServerTestCase):
    def test_a_region_that_does_not_answer_is_named(self):
        t = harness.Topology(sync_interval_ms=600000)
        t.start(self.addCleanup)
        co = t.coordinator.client()
        self.addCleanup(co.close)
        with t.region("us-east").client() as c:
            c.post_json("/increment", {"counter_name": "ld_x"})
        t.region("us-west").stop()
        got = co.get_json("/global/counters")
        self.assertEqual((got["healthy_regions"], sorted(got["region_errors"])),
                         (2, ["us-west"]))
        self.assertIn("no answer", got["region_errors"]["us-west"])
        self.assertEqual(got["counter_names"], ["ld_x"])
        top = co.get_json("/global/top")
        self.assertEqual((top["healthy_regions"], sorted(top["region_errors"])), (2, ["us-west"]))
        for r in ("us-east", "eu-west"):
            t.region(r).stop()
        got = co.get_json("/global/counters")
        self.assertEqual((got["counter_names"], got["healthy_regions"]), ([], 0))
        self.assertEqual(sorted(got["region_errors"]), sorted(NAMES))


class OriginalRegion(harness.ServerTestCase):
    """A region that does not page (the original lab's answers every counter, whatever the
    query): the coordinator keeps only what is after the cursor and matches the prefix, so
    paging through it still lists every name once."""

    def test_paging_over_a_region_that_does_not_page(self):
        import http.server
        import json
        import threading
        names = ["o_%02d" % i for i in range(9)]
        body = json.dumps({"region": "orig", "node_id": "orig-1", "counters": {
            n: {"local_count": 1, "total_count": 1, "nodes": {"orig-1": 1}} for n in names}})

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                out = body if self.path.startswith("/counters") else \
                    json.dumps({"status": "ok", "region": "orig"})
                data = out.encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *a):
                pass

        httpd = http.server.ThreadingHTTPServer((harness.HOST, 0), Handler)
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        self.addCleanup(httpd.server_close)
        self.addCleanup(httpd.shutdown)
        region = self.start_server(["--region", "us-east", "--node-id", "us-east-1",
                                    "--peers", ""], name="us-east-1")
        with region.client() as c:
            c.post_json("/increment", {"counter_name": "o_045"})
        co = self.start_server(["--role", "coordinator", "--regions",
                                "us-east=%s,orig=http://%s:%d" % (region.url, harness.HOST,
                                                                 httpd.server_port)],
                               name="coordinator")
        listed, cursor = [], ""
        with co.client() as c:
            for _ in range(20):
                page = c.get_json("/global/counters?prefix=o_&limit=2&cursor=" + cursor)
                self.assertEqual(page["healthy_regions"], 2, page.get("region_errors"))
                listed.extend(page["counter_names"])
                if not page["truncated"]:
                    break
                cursor = page["next_cursor"]
        self.assertEqual(listed, sorted(names + ["o_045"]))


if __name__ == "__main__":
    unittest.main(verbosity=2)
