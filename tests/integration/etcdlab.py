"""
etcdlab.py - real etcd members for the tests of the strong counter's etcd backend
(82_strong_etcd, 83_strong_etcd_failover) and for bench/strong_etcd.sh: free loopback
ports, data in a temporary folder, every member stopped (SIGKILL at worst) and its folder
removed at the end. Debian's etcd-server (3.4) provides /usr/bin/etcd: ./scripts/setup
--test installs it.
"""

import base64
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request

from harness import free_ports
from loopback import HOST, die_with_parent

ETCD = shutil.which("etcd") or "/usr/bin/etcd"




def b64(s):
    return base64.b64encode(s.encode() if isinstance(s, str) else s).decode()


def call(url, path, body, timeout=3.0):
    """POST body (a dict) to etcd's JSON gateway; the answer as a dict."""
    req = urllib.request.Request(url + path, data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read())


def get_value(url, key):
    """The decimal value at key (linearizable), or None when absent."""
    r = call(url, "/v3/kv/range", {"key": b64(key)})
    kvs = r.get("kvs") or []
    return int(base64.b64decode(kvs[0]["value"])) if kvs else None


class Cluster:
    """n etcd members on loopback, started together."""

    def __init__(self, n=1, election_ms=1000, heartbeat_ms=100):
        if not os.access(ETCD, os.X_OK):
            raise AssertionError("etcd is not installed (./scripts/setup --test installs "
                                 "Debian's etcd-server)")
        self.dir = tempfile.mkdtemp(prefix="counterd-etcd-")
        ports = free_ports(2 * n)
        self.names = ["m%d" % i for i in range(n)]
        self.client_urls = ["http://%s:%d" % (HOST, ports[i]) for i in range(n)]
        self.peer_urls = ["http://%s:%d" % (HOST, ports[n + i]) for i in range(n)]
        self.procs = [None] * n
        self.election_ms, self.heartbeat_ms = election_ms, heartbeat_ms
        self.initial = ",".join("%s=%s" % (self.names[i], self.peer_urls[i]) for i in range(n))

    def start_member(self, i):
        log = open(os.path.join(self.dir, "%s.log" % self.names[i]), "ab")
        self.procs[i] = subprocess.Popen(
            [ETCD, "--name", self.names[i], "--data-dir", os.path.join(self.dir, self.names[i]),
             "--listen-client-urls", self.client_urls[i],
             "--advertise-client-urls", self.client_urls[i],
             "--listen-peer-urls", self.peer_urls[i],
             "--initial-advertise-peer-urls", self.peer_urls[i],
             "--initial-cluster", self.initial, "--initial-cluster-state", "new",
             "--initial-cluster-token", os.path.basename(self.dir),
             "--election-timeout", str(self.election_ms),
             "--heartbeat-interval", str(self.heartbeat_ms), "--pre-vote",
             "--logger", "zap", "--log-level", "warn"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, preexec_fn=die_with_parent)
        log.close()

    def start(self, timeout=20):
        for i in range(len(self.names)):
            self.start_member(i)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.leader() is not None:
                # A write goes through: the cluster serves.
                try:
                    call(self.client_urls[0], "/v3/kv/put", {"key": b64("/ready"),
                                                             "value": b64("1")})
                    return self
                except OSError:
                    pass
            time.sleep(0.1)
        self.stop()
        raise AssertionError("etcd did not elect a leader within %d s" % timeout)

    def status(self, i, timeout=0.5):
        return call(self.client_urls[i], "/v3/maintenance/status", {}, timeout=timeout)

    def leader(self):
        """The index of the leader, or None."""
        for i, p in enumerate(self.procs):
            if p is None or p.poll() is not None:
                continue
            try:
                st = self.status(i)
            except OSError:
                continue
            if st.get("leader") and st["leader"] == st["header"]["member_id"]:
                return i
        return None

    def kill(self, i):
        p = self.procs[i]
        if p and p.poll() is None:
            p.send_signal(signal.SIGKILL)
            p.wait(5)

    def pause(self, i, on):
        self.procs[i].send_signal(signal.SIGSTOP if on else signal.SIGCONT)

    def stop(self):
        for i, p in enumerate(self.procs):
            if p and p.poll() is None:
                p.send_signal(signal.SIGCONT)
                p.terminate()
                try:
                    p.wait(5)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait(5)
        shutil.rmtree(self.dir, True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
