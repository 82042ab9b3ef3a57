"""
72_gateway_learns_homes.py - a gateway started before its regions learns their node ids by
itself, without waiting for increments to come.

The gateway's tokens name the region that is the home of each increment once it knows
every region's node id (it asks their /health). Until then a token names a hashed home and
the region it reached holds the increment pending (exact, but local_count 0). A gateway
that only asked again when an increment came kept its first answer in that state however
long the regions had been up: here the regions come up half a second after the gateway,
which must know their node ids within 1.5 s without a request, and the first increments
then go to their homes.
"""

import time

import harness


class GatewayLearnsHomes(harness.ServerTestCase):
    def test_regions_up_after_the_gateway(self):
        east, west = harness.free_ports(2)
        regions = "us-east=http://127.0.0.1:%d,us-west=http://127.0.0.1:%d" % (east, west)
        gw = self.start_server(["--role", "gateway", "--regions", regions], name="gateway")
        time.sleep(0.5)
        peers = {east: west, west: east}
        for port, (region, node) in ((east, ("us-east", "us-east-1")),
                                     (west, ("us-west", "us-west-1"))):
            self.start_server(["--region", region, "--node-id", node, "--sync-interval-ms",
                               "60000", "--peers", "http://127.0.0.1:%d" % peers[port]],
                              port=port, name=region)
        deadline = time.monotonic() + 1.5
        while "every region's node id is known" not in gw.log_text():
            self.assertLess(time.monotonic(), deadline,
                            "the gateway did not learn the regions' node ids by itself")
            time.sleep(0.05)
        with gw.client() as c:
            for region in ("us-east", "us-west"):
                r = c.post_json("/api/increment", {"counter_name": "homes-" + region,
                                                   "amount": 3, "routing": region})
                self.assertEqual(r["region"], region, r)
                self.assertNotIn("pending", r, r)
                self.assertEqual(r["local_count"], 3, r)


if __name__ == "__main__":
    import unittest
    unittest.main()
