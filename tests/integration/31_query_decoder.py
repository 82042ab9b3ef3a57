"""
31_query_decoder.py - one query-string decoder: a C route (a region's POST
/admin/partition?enabled=...) and a Lua route (the coordinator's POST
/global/partition/all?enabled=...) read the same query string alike: percent-escapes
decode, '+' is a space, and a bad escape is a 400 naming the parameter, in the same words.

One region and one coordinator on loopback; the coordinator's fan-out reaches that region,
so each accepted change is checked on the region too.
"""

import unittest

import harness

DETAIL = ("query parameter enabled has a bad percent-escape: '%' must be followed by two "
          "hex digits")


class QueryDecoder(harness.ServerTestCase):
    @classmethod
    def setUpClass(cls):
        cls.region = cls.start_class_server(["--region", "us-east", "--node-id", "us-east-1",
                                             "--sync-interval-ms", "60000"], name="region")
        cls.co = cls.start_class_server(["--role", "coordinator", "--regions",
                                         "us-east=%s" % cls.region.url], name="coordinator")

    def setUp(self):
        super().setUp()
        self.rc = self.region.client()
        self.cc = self.co.client()
        self.addCleanup(self.rc.close)
        self.addCleanup(self.cc.close)

    def both(self, query):
        """The same query string on the C route and on the Lua route."""
        c = self.rc.post("/admin/partition?" + query)
        lua = self.cc.post("/global/partition/all?" + query)
        return c, lua

    def partitioned(self):
        return self.rc.get_json("/admin/partition")["network_partition"]

    def test_bad_escape_is_the_same_400(self):
        for q in ("enabled=%zz", "enabled=tr%2", "enabled=%", "enabled=true%g1"):
            for r, route in zip(self.both(q), ("C", "Lua")):
                self.assertError(r, 400, "bad_field", "%s route, ?%s" % (route, q))
                self.assertEqual(r.json()["detail"], DETAIL, "%s route, ?%s" % (route, q))
        self.assertIs(self.partitioned(), False, "a rejected request changes nothing")

    def test_escapes_decode_alike(self):
        try:
            c, lua = self.both("enabled=%74rue")
            self.assertEqual((c.status, lua.status), (200, 200), (c.body, lua.body))
            self.assertIs(self.partitioned(), True)
            c, lua = self.both("enabled=fals%65")
            self.assertEqual((c.status, lua.status), (200, 200), (c.body, lua.body))
            self.assertIs(self.partitioned(), False)
        finally:
            self.rc.post_json("/admin/partition", {"enabled": False})

    def test_plus_is_a_space_on_both(self):
        # "true+" is "true " on both routes: not true or false.
        for q in ("enabled=true+", "enabled=+false"):
            for r, route in zip(self.both(q), ("C", "Lua")):
                self.assertError(r, 400, "bad_field", "%s route, ?%s" % (route, q))
                self.assertIn("enabled", r.json()["detail"], "%s route, ?%s" % (route, q))
        self.assertIs(self.partitioned(), False)


if __name__ == "__main__":
    unittest.main()
