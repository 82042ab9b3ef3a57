"""
66_endpoint_forms.py - the original lab's environment: PEER_ENDPOINTS, REGION_ENDPOINTS and
COUNTER_ENDPOINTS as host:port lists without names, each region's name learned from its
/health (core/net/endpoint.c, core/net/discover.c).

  names learned       three regions given as host:port to their peers, the coordinator,
                      the gateway (COUNTER_ENDPOINTS) and the strong counter; us-west is
                      started last, so for a while nobody can know its name:
                        - /health of the coordinator and the gateway lists its address in
                          regions_unnamed; counterd_region_names_unknown is 1
                        - /global/status shows it under its address, "name_known": false,
                          unhealthy; no view shows a name it did not give
                        - increments go to the two named regions only; routing "us-west"
                          is refused; partitioning "us-west" is 404 saying why
                      then us-west starts: within seconds every view uses its name, /health
                      is the original's exact answer again, routing "us-west" reaches it,
                      the regions (peers given as host:port) converge on every increment
                      acknowledged, and the strong counter takes increments
  not a region        an address whose /health names no region stays unnamed, said once
  bad lists           each role refuses a bad list at start with one line naming the
                      variable, the item and what is wrong; nothing starts
"""

import os
import subprocess
import time
import unittest

import harness

HOST = harness.HOST


def addr(port):
    return "%s:%d" % (HOST, port)


class EndpointForms(harness.ServerTestCase):

    def wait_for(self, what, fn, timeout=8.0):
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            last = fn()
            if last is True:
                return
            time.sleep(0.05)
        self.fail("%s not within %.0f s (last: %r)" % (what, timeout, last))

    def health(self, srv):
        with srv.client() as c:
            return c.get_json("/health")

    def names_unknown(self, srv):
        with srv.client() as c:
            text = c.get("/metrics").text()
        return harness.metric_values(harness.parse_metrics(text), "counterd_region_names_unknown")

    def test_names_learned_from_health(self):
        ports = harness.free_ports(6)
        east_p, west_p, eu_p, co_p, gw_p, st_p = ports
        regions = [("us-east", "us-east-1", east_p), ("us-west", "us-west-1", west_p),
                   ("eu-west", "eu-west-1", eu_p)]
        hostports = ",".join(addr(p) for _, _, p in regions)
        servers, peers = {}, {}
        for region, node, port in regions:
            peers[region] = ",".join(addr(p) for _, _, p in regions if p != port)
            servers[region] = harness.Server(["--region", region, "--node-id", node,
                                              "--sync-interval-ms", "60000"],
                                             port=port, name=node)
        with harness.environ(REGION_ENDPOINTS=hostports):
            co = self.start_server(["--role", "coordinator"], port=co_p, name="coordinator")
            # The regions keep no data here: the strong counter is told it may use them.
            strong = self.start_server(["--role", "strong", "--region", "us-east",
                                        "--allow-volatile-replicas"], port=st_p,
                                       name="strong")
        with harness.environ(COUNTER_ENDPOINTS=hostports):
            gw = self.start_server(["--role", "gateway", "--coordinator", co.url,
                                    "--strong", strong.url], port=gw_p, name="gateway")
        for region in ("us-east", "eu-west"):
            with harness.environ(PEER_ENDPOINTS=peers[region]):
                servers[region].start(wait=False)
            self.addCleanup(servers[region].stop)
        for region in ("us-east", "eu-west"):
            servers[region].wait_ready()

        # us-west is not running: its name cannot be known, and nothing pretends it is.
        west = addr(west_p)
        for srv in (co, gw):
            self.wait_for("%s knows us-east and eu-west" % srv.name,
                          lambda: self.health(srv).get("regions_unnamed") == [west] or
                          self.health(srv))
            self.assertEqual(self.health(srv), {"status": "ok", "service": srv.name,
                                                "regions_unnamed": [west]})
            self.assertEqual(self.names_unknown(srv), [1.0], "%s's gauge" % srv.name)
        with co.client() as c:
            st = c.get_json("/global/status")
        self.assertEqual(sorted(st["regions"]), sorted(["us-east", "eu-west", west]))
        self.assertEqual(st["regions"][west], {"status": "unhealthy", "name_known": False,
                                               "endpoint": west})
        self.assertEqual(st["regions"]["us-east"]["status"], "healthy")
        self.assertNotIn("name_known", st["regions"]["us-east"])
        with gw.client() as c:
            got = set()
            for _ in range(30):
                r = c.post_json("/api/increment", {"counter_name": "forms", "amount": 1})
                got.add(r["region"])
            self.assertEqual(got <= {"us-east", "eu-west"}, True, got)
            r = c.post("/api/increment", {"counter_name": "forms", "routing": "us-west"})
            self.assertEqual(r.status, 400, "routing us-west before its name is known: %r" % r)
            r = c.post("/admin/partition/us-west?enabled=true")
            self.assertError(r, 404, "not_found", "partition us-west before its name is known",
                             detail_contains=west)
        acked = 30

        # us-west starts: its name is learned (retries at most 2 s apart).
        with harness.environ(PEER_ENDPOINTS=peers["us-west"]):
            servers["us-west"].start()
        self.addCleanup(servers["us-west"].stop)
        t0 = time.monotonic()
        for srv in (co, gw):
            self.wait_for("%s learns us-west's name" % srv.name,
                          lambda: self.health(srv) == {"status": "ok", "service": srv.name} or
                          self.health(srv))
            self.assertEqual(self.names_unknown(srv), [0.0])
        print("\n[66] us-west's name known %.2f s after it answered" % (time.monotonic() - t0))
        with co.client() as c:
            st = c.get_json("/global/status")
        self.assertEqual(sorted(st["regions"]), ["eu-west", "us-east", "us-west"])
        for region in ("us-east", "us-west", "eu-west"):
            got = st["regions"][region]
            # Named now: no name_known marker; the sync view of each region comes with it.
            volatile = ("last_sync_time", "peers", "changes")
            self.assertEqual({k: got[k] for k in got if k not in volatile},
                             {"status": "healthy", "node_id": region + "-1",
                              "network_partition": False})
            self.assertEqual(len(got["peers"]), 2, got)
        with gw.client() as c:
            r = c.post_json("/api/increment", {"counter_name": "forms", "routing": "us-west"})
            self.assertEqual(r["region"], "us-west")
            acked += 1
            self.assertEqual(c.post_json("/admin/force-sync")["regions_synced"], 3)
            v = c.get_json("/api/counter/forms")
        self.assertEqual(v["global_count"], acked, v)
        self.assertEqual(v["convergence"]["converged"], True, v)
        self.assertEqual(sorted(v["regions"]), ["eu-west", "us-east", "us-west"])
        with strong.client() as c:
            r = c.post_json("/increment", {"counter_name": "forms_strong", "amount": 2})
        self.assertEqual(r["value"], 2)
        log = co.log_text()
        self.assertIn("region name of %s not known yet" % west, log)
        self.assertIn("region name of %s is 'us-west'" % west, log)

    def test_not_a_region_stays_unnamed(self):
        # An address whose /health names no region (here the coordinator's own) is never
        # given a name: it stays listed as unnamed, and the log says why, once.
        east = self.start_server(["--region", "us-east", "--node-id", "us-east-1"],
                                 name="us-east-1")
        co_port = harness.free_ports(1)[0]
        with harness.environ(REGION_ENDPOINTS="%s,%s" % (addr(east.port), addr(co_port))):
            co = self.start_server(["--role", "coordinator"], port=co_port, name="coordinator")
        self.wait_for("us-east named", lambda: self.health(co).get("regions_unnamed") ==
                      [addr(co_port)] or self.health(co))
        time.sleep(2.5)  # a few more attempts (they are at most 2 s apart)
        self.assertEqual(self.health(co)["regions_unnamed"], [addr(co_port)])
        log = co.log_text()
        why = "region name of %s not known yet (its /health: its answer has no \"region\"" \
            % addr(co_port)
        self.assertEqual(log.count(why), 1, log)

    def refused(self, args, env, expect):
        env = dict(os.environ, **env)
        p = subprocess.run([harness.BIN, "--bind", HOST, "--port", str(harness.free_ports(1)[0])]
                           + args, env=env, stdin=subprocess.DEVNULL, capture_output=True,
                           timeout=20)
        err = p.stderr.decode(errors="replace")
        self.assertNotEqual(p.returncode, 0, "%s %r started" % (args, env))
        self.assertIn(expect, err)

    def test_bad_lists_refused(self):
        forms = "is not host:port, http://host:port or name=http://host:port"
        self.refused([], {"PEER_ENDPOINTS": "counter-us-west"},
                     "PEER_ENDPOINTS: 'counter-us-west' %s: it has no port" % forms)
        self.refused(["--peers", "127.0.0.1:8002,127.0.0.1:99999"], {},
                     "PEER_ENDPOINTS: '127.0.0.1:99999' %s: its port is not a number from 1 "
                     "to 65535" % forms)
        self.refused(["--role", "coordinator"], {"REGION_ENDPOINTS": "us-east=ftp://h:1"},
                     "REGION_ENDPOINTS: 'us-east=ftp://h:1' %s: its scheme is not http:// or "
                     "https://" % forms)
        self.refused(["--role", "gateway"], {"COUNTER_ENDPOINTS": "a:1,=b:2"},
                     "COUNTER_ENDPOINTS: '=b:2' %s: its name (before '=') is empty" % forms)
        self.refused(["--role", "coordinator", "--regions", "counter-us-east"],
                     {"REGION_ENDPOINTS": "a:1"},
                     "--regions: 'counter-us-east' %s: it has no port" % forms)
        self.refused(["--role", "strong"], {"REGION_ENDPOINTS": "a:1,b:2/x"},
                     "REGION_ENDPOINTS: 'b:2/x' %s: it has a path but no http:// scheme" % forms)


if __name__ == "__main__":
    unittest.main()
