"""
71_gateway_target_urls.py - the gateway reaches a region named by an IPv6 URL
(http://[::1]:port): its forwarding client reads target URLs with libcurl's URL parser
(core/net/upstream.c), where it used to read http://host:port with sscanf and took "[" for
a host name. A region that listens on every address (--bind ::) serves the gateway's
increments through [::1] and the test's own checks through 127.0.0.1. Skipped when this
machine has no IPv6 loopback.
"""

import socket
import unittest

import harness


def ipv6_loopback():
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@unittest.skipUnless(ipv6_loopback(), "no IPv6 loopback on this machine")
class GatewayTargetUrls(harness.ServerTestCase):
    def test_ipv6_region(self):
        region = self.start_server(["--region", "us-east", "--node-id", "us-east-1",
                                    "--sync-interval-ms", "60000", "--bind", "::"],
                                   name="region")
        url6 = "http://[::1]:%d" % region.port
        gw = self.start_server(["--role", "gateway", "--regions", "us-east=" + url6],
                               name="gateway")
        with gw.client() as c:
            r = c.post_json("/api/increment", {"counter_name": "v6", "amount": 2})
        self.assertEqual(r["routed_to_endpoint"], url6)
        self.assertEqual(r["total_count"], 2)
        with region.client() as c:
            self.assertEqual(c.get_json("/counter/v6")["total_count"], 2)


if __name__ == "__main__":
    unittest.main()
