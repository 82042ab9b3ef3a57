"""
60_crash_durability.py - acknowledged increments survive SIGKILL (--data-dir, --fsync).

Every crash is a SIGKILL (Server.kill()); the killed run's exit status is not checked, the
restart (Server.start(), same port, same flags, same data dir) is, when it is stopped.
A load generator records, per counter, how many increments got a 2xx answer ("acked") and
which one was in flight when the connection died: after a restart every counter must read
acked or acked + the in-flight ones, never less, never more.

(a) one node, --fsync always, 32 threads     (e) no amnesia: a node that lost its data dir
(b) three nodes, --fsync always, shared load  (f) idempotency tokens survive a crash
(c) torn tail is cut; a flipped byte stops    (g) graceful restart: everything back
    the start with status 1, dir untouched    (h) COUNTERD_FAULTS crash points
(d) --fsync everysec loses nothing on SIGKILL

The seed of the random kill moments is printed; COUNTERD_SEED=<n> replays it.
"""

import glob
import http.client
import os
import random
import re
import shutil
import tempfile
import threading
import time
import unittest

import harness

NODES = [("us-east", "us-east-1"), ("us-west", "us-west-1"), ("eu-west", "eu-west-1")]
SEED = int(os.environ.get("COUNTERD_SEED") or random.SystemRandom().randrange(1 << 30))
print("[60_crash] seed %d (replay with COUNTERD_SEED=%d)" % (SEED, SEED))


def dir_bytes(d):
    """{relative path: bytes} of every file under d."""
    out = {}
    for root, _, files in os.walk(d):
        for f in files:
            p = os.path.join(root, f)
            with open(p, "rb") as fh:
                out[os.path.relpath(p, d)] = fh.read()
    return out


def newest_wal(d):
    wals = sorted(glob.glob(os.path.join(d, "wal-*.log")))
    if not wals:
        raise AssertionError("no wal-*.log in %s: %r" % (d, sorted(os.listdir(d))))
    return wals[-1]


class Load:
    """Threads, each with its own keep-alive connection, sending increments of 1
    sequentially to one node, cycling over its own list of counter names."""

    def __init__(self, plan):
        # plan: list of (port, node index, [counter names]) - one entry per thread
        self.plan = plan
        self.acked = [dict() for _ in plan]  # thread -> {name: acked}
        self.inflight = [None] * len(plan)  # thread -> name of the request in flight
        self.ack_times = [[] for _ in plan]
        self.bad = []  # non-2xx answers
        self.threads = []

    def _run(self, t):
        port, _, names = self.plan[t]
        client = harness.Client(port, timeout=5.0)
        k = 0
        try:
            while True:
                name = names[k % len(names)]
                k += 1
                self.inflight[t] = name
                try:
                    r = client.post("/increment", {"counter_name": name, "amount": 1})
                except (OSError, http.client.HTTPException):
                    return  # the server is gone: this one stays "in flight"
                if 200 <= r.status < 300:
                    self.acked[t][name] = self.acked[t].get(name, 0) + 1
                    self.ack_times[t].append(time.monotonic())
                    self.inflight[t] = None
                else:
                    self.inflight[t] = None
                    self.bad.append((t, name, r.status, r.body[:200]))
                    return
        finally:
            client.close()

    def start(self):
        for t in range(len(self.plan)):
            th = threading.Thread(target=self._run, args=(t,), daemon=True)
            th.start()
            self.threads.append(th)

    def join(self, timeout=10.0):
        deadline = time.monotonic() + timeout
        for th in self.threads:
            th.join(max(0.0, deadline - time.monotonic()))
        alive = sum(th.is_alive() for th in self.threads)
        if alive:
            raise AssertionError("%d load threads still running after the kill" % alive)

    def expected(self, node=None):
        """{name: (acked, in flight)} summed over the threads (of one node index)."""
        out = {}
        for t, (_, n, _) in enumerate(self.plan):
            if node is not None and n != node:
                continue
            for name, a in self.acked[t].items():
                acked, fl = out.get(name, (0, 0))
                out[name] = (acked + a, fl)
            if self.inflight[t] is not None:
                acked, fl = out.get(self.inflight[t], (0, 0))
                out[self.inflight[t]] = (acked, fl + 1)
        return out

    def total_acked(self):
        return sum(sum(d.values()) for d in self.acked)

    def acked_since(self, t0):
        return sum(1 for ts in self.ack_times for x in ts if x >= t0)


class Durability(harness.ServerTestCase):
    # Set-up helpers ----------------------------------------------------------------

    def data_dir(self, tag="d"):
        d = tempfile.mkdtemp(prefix="counterd-data-%s-" % tag)
        self.addCleanup(shutil.rmtree, d, True)
        return d

    def node_args(self, data_dir, fsync="always", region="us-east", node_id="us-east-1",
                  peers=(), interval_ms=60000, extra=()):
        args = ["--region", region, "--node-id", node_id, "--data-dir", data_dir,
                "--fsync", fsync, "--sync-interval-ms", str(interval_ms),
                "--sync-timeout-ms", "2000"]
        if peers:
            args += ["--peers", ",".join(peers)]
        return args + list(extra)

    def start_node(self, data_dir, name="node", port=None, env=None, **kw):
        srv = harness.Server(self.node_args(data_dir, **kw), port=port, name=name)
        self.addCleanup(srv.stop)
        with harness.environ(**(env or {})):
            srv.start()
        return srv

    def start_trio(self, dirs, fsync="always", interval_ms=60000):
        ports = harness.free_ports(3)
        servers = []
        for i, (region, node_id) in enumerate(NODES):
            peers = ["http://127.0.0.1:%d" % ports[j] for j in range(3) if j != i]
            srv = harness.Server(self.node_args(dirs[i], fsync=fsync, region=region,
                                                node_id=node_id, peers=peers,
                                                interval_ms=interval_ms),
                                 port=ports[i], name=node_id)
            self.addCleanup(srv.stop)
            servers.append(srv)
        self.start_all(servers)
        return servers

    def start_all(self, servers):
        for s in servers:
            s.start(wait=False)
        for s in servers:
            s.wait_ready()

    def crash(self, srv, what=""):
        """SIGKILL; the server must have been alive until then."""
        self.assertTrue(srv.alive(), "%s: %s died before the SIGKILL (status %s)\n--- log ---\n%s"
                        % (what, srv.name, srv.proc and srv.proc.poll(),
                           harness.log_tail(srv.log_path)))
        srv.kill()

    # Reading ---------------------------------------------------------------------------

    def counters(self, srv):
        with srv.client() as c:
            return c.get_json("/counters")["counters"]

    def read(self, srv, name):
        with srv.client() as c:
            return c.get_json("/counter/%s" % name)

    def incr(self, srv, name, amount=1, token=None):
        body = {"counter_name": name, "amount": amount}
        if token is not None:
            body["idempotency_token"] = token
        with srv.client() as c:
            return c.post_json("/increment", body)

    def force_sync(self, srv):
        with srv.client() as c:
            r = c.post("/admin/force-sync")
        harness.assert_json_response(r, 200, "POST /admin/force-sync on %s" % srv.name)
        self.assertEqual(r.json()["status"], "sync_completed")

    def check_against_load(self, got, expected, what):
        """got {name: value}; expected {name: (acked, in flight)}: acked <= value <=
        acked + in flight, and no counter that the load never touched."""
        bad = []
        for name, (acked, fl) in sorted(expected.items()):
            v = got.get(name, 0)
            if not acked <= v <= acked + fl:
                bad.append("%s: %d, acked %d, in flight %d" % (name, v, acked, fl))
        extra = sorted(set(got) - set(expected))
        self.assertEqual(extra, [], "%s: counters nobody incremented: %r" % (what, extra))
        self.assertEqual(bad, [], "%s: counters outside [acked, acked + in flight]" % what)

    # (a) -------------------------------------------------------------------------------

    def run_single_node_load(self, fsync, tag):
        rnd = random.Random("%d-%s" % (SEED, tag))
        d = self.data_dir(tag)
        srv = self.start_node(d, fsync=fsync, name=tag)
        load = Load([(srv.port, 0, ["k%d" % i]) for i in range(32)])
        load.start()
        delay = rnd.uniform(1.0, 3.0)
        time.sleep(delay)
        t_kill = time.monotonic()
        self.crash(srv, "under load")
        load.join()
        self.assertEqual(load.bad, [], "non-2xx answers under load")
        exp = load.expected()
        in_flight = sum(fl for _, fl in exp.values())
        print("\n[60_crash] %s: SIGKILL after %.2f s: %d increments acked, %d in flight"
              % (tag, delay, load.total_acked(), in_flight))
        self.assertGreater(load.total_acked(), 32, "the load hardly ran")
        srv.start()
        got = {k: v["total_count"] for k, v in self.counters(srv).items()}
        return srv, load, exp, got, t_kill

    def test_a_fsync_always_single_node(self):
        srv, load, exp, got, _ = self.run_single_node_load("always", "a-always")
        applied = sum(got.get(n, 0) - a for n, (a, fl) in exp.items())
        print("[60_crash] a-always: %d of the in-flight increments were applied" % applied)
        self.check_against_load(got, exp, "--fsync always, after SIGKILL and restart")
        # The restarted node keeps counting on top of what it recovered.
        r = self.incr(srv, "k0")
        self.assertEqual(r["total_count"], got["k0"] + 1)

    # (b) -------------------------------------------------------------------------------

    def test_b_three_nodes(self):
        rnd = random.Random("%d-b" % SEED)
        dirs = [self.data_dir("b%d" % i) for i in range(3)]
        servers = self.start_trio(dirs, interval_ms=200)
        plan = []
        for t in range(30):
            node = t % 3
            plan.append((servers[node].port, node, ["k%d" % t, "shared"]))
        load = Load(plan)
        load.start()
        delay = rnd.uniform(1.0, 3.0)
        time.sleep(delay)
        for s in servers:
            self.crash(s, "three nodes under load")
        load.join()
        self.assertEqual(load.bad, [], "non-2xx answers under load")
        print("\n[60_crash] b: SIGKILL of all three after %.2f s: %d increments acked, "
              "%d in flight" % (delay, load.total_acked(),
                                sum(fl for _, fl in load.expected().values())))
        self.assertGreater(load.total_acked(), 30, "the load hardly ran")
        self.start_all(servers)
        for s in servers:
            self.force_sync(s)

        exp_all = load.expected()
        exp_node = [load.expected(i) for i in range(3)]
        views = [self.counters(s) for s in servers]
        for s, view in zip(servers, views):
            what = "%s after restart and force-sync" % s.name
            self.check_against_load({k: v["total_count"] for k, v in view.items()}, exp_all,
                                    what)
            for i, (_, node_id) in enumerate(NODES):
                got = {k: v["nodes"].get(node_id, 0) for k, v in view.items()}
                got = {k: v for k, v in got.items() if v or k in exp_node[i]}
                self.check_against_load(got, exp_node[i], "%s, nodes[%s]" % (what, node_id))
        for s, view in zip(servers[1:], views[1:]):
            self.assertEqual({k: (v["total_count"], v["nodes"]) for k, v in view.items()},
                             {k: (v["total_count"], v["nodes"]) for k, v in views[0].items()},
                             "%s and %s disagree after force-sync" % (s.name, servers[0].name))

    # (c) -------------------------------------------------------------------------------

    def hundred_then_kill(self, tag):
        d = self.data_dir(tag)
        srv = self.start_node(d, name=tag)
        with srv.client() as c:
            for i in range(100):
                r = c.post_json("/increment", {"counter_name": "t", "amount": 1})
                self.assertEqual(r["total_count"], i + 1)
        self.crash(srv)
        return d, srv

    def test_c_torn_tail_is_cut(self):
        d, srv = self.hundred_then_kill("c-torn")
        wal = newest_wal(d)
        size = os.path.getsize(wal)
        with open(wal, "ab") as f:
            f.write(bytes(random.Random(SEED).randrange(256) for _ in range(7)))
        srv.start()
        log = srv.log_text()
        m = re.search(r"cut a torn tail of (\d+) bytes at offset (\d+) in (\S+)", log)
        print("\n[60_crash] torn tail: %s" % (m.group(0) if m else None))
        self.assertIsNotNone(m, "no 'cut a torn tail of N bytes at offset X in <file>' line "
                             "after appending 7 bytes to %s; log:\n%s" % (wal, log[-3000:]))
        self.assertEqual((int(m.group(1)), int(m.group(2))), (7, size),
                         "torn tail line %r: expected 7 bytes at offset %d" % (m.group(0), size))
        self.assertEqual(os.path.basename(m.group(3).strip("'\":,")), os.path.basename(wal),
                         "torn tail line names %r, not %s" % (m.group(3), wal))
        self.assertEqual(self.read(srv, "t")["total_count"], 100)
        # The next record goes after the last good one: a second crash recovers it all.
        self.assertEqual(self.incr(srv, "t")["total_count"], 101)
        self.crash(srv, "after recovering the torn tail")
        srv.start()
        self.assertEqual(self.read(srv, "t")["total_count"], 101,
                         "increment after a cut torn tail, then SIGKILL")

    def test_c_flipped_byte_stops_the_start(self):
        d, srv = self.hundred_then_kill("c-flip")
        wal = newest_wal(d)
        size = os.path.getsize(wal)
        pos = size // 2
        with open(wal, "r+b") as f:
            f.seek(pos)
            b = f.read(1)
            f.seek(pos)
            f.write(bytes([b[0] ^ 0xFF]))
        before = dir_bytes(d)
        srv.start(wait=False)
        try:
            rc = srv.proc.wait(8.0)
        except Exception:
            rc = None
        log = srv.log_text()
        srv.kill()  # forget the process (it has exited, or is killed here)
        print("\n[60_crash] flipped byte at %d of %d: exit status %r, log:\n  %s"
              % (pos, size, rc, "\n  ".join(log.strip().splitlines()[-4:])))
        self.assertEqual(rc, 1, "start with a byte flipped at offset %d of %d in %s: exit "
                         "status %r (expected 1 within 8 s); log:\n%s"
                         % (pos, size, wal, rc, log[-3000:]))
        self.assertIn(os.path.basename(wal), log, "the message does not name the file")
        offsets = [int(x) for x in re.findall(r"offset (\d+)", log)]
        self.assertTrue(offsets, "the message gives no offset: %s" % log[-2000:])
        rec = size / 100.0  # about one record
        self.assertTrue(any(pos - 2 * rec <= x <= pos for x in offsets),
                        "offsets %r in the message; the flipped byte is at %d (records of "
                        "about %.0f bytes)" % (offsets, pos, rec))
        self.assertRegex(log.lower(), r"recover", "the message does not say how to recover")
        after = dir_bytes(d)
        self.assertEqual(sorted(after), sorted(before), "files of the data dir changed")
        for name in before:
            self.assertTrue(after[name] == before[name], "%s changed during the failed start"
                            % name)

    # (d) -------------------------------------------------------------------------------

    def test_d_fsync_everysec_sigkill(self):
        srv, load, exp, got, t_kill = self.run_single_node_load("everysec", "d-everysec")
        lost = sum(max(0, a - got.get(n, 0)) for n, (a, fl) in exp.items())
        recent = load.acked_since(t_kill - 1.5)
        print("[60_crash] everysec: lost %d acknowledged increments of %d (acked in the last "
              "1.5 s: %d)" % (lost, load.total_acked(), recent))
        self.assertLessEqual(lost, recent, "--fsync everysec lost more than the last 1.5 s")
        more = [(n, got.get(n, 0), a, fl) for n, (a, fl) in exp.items() if got.get(n, 0) > a + fl]
        self.assertEqual(more, [], "counters above acked + in flight (name, got, acked, "
                         "in flight)")
        # cli.md: everysec acknowledges after the write to the file, "so SIGKILL loses
        # nothing".
        self.assertEqual(lost, 0, "--fsync everysec lost acknowledged increments on SIGKILL")

    # (e) -------------------------------------------------------------------------------

    def test_e_no_amnesia(self):
        dirs = [self.data_dir("e%d" % i) for i in range(3)]
        a, b, c = servers = self.start_trio(dirs)
        for amount in (1, 2, 3, 4, 5):
            self.incr(a, "e", amount)
        self.incr(a, "e2", 7)
        self.incr(b, "e", 20)
        self.incr(c, "e", 40)
        for s in servers:
            self.force_sync(s)
        self.assertEqual(self.read(b, "e")["nodes"],
                         {"us-east-1": 15, "us-west-1": 20, "eu-west-1": 40})

        self.crash(a)
        shutil.rmtree(dirs[0])
        a.start()
        self.incr(a, "e", 100)
        self.incr(a, "e2", 1)
        for s in servers:
            self.force_sync(s)
        want_e = {"us-east-1": 115, "us-west-1": 20, "eu-west-1": 40}
        for s in servers:
            got = self.read(s, "e")
            self.assertEqual((got["total_count"], got["nodes"]), (175, want_e),
                             "%s: counter e after us-east-1 lost its data dir" % s.name)
            got = self.read(s, "e2")
            self.assertEqual((got["total_count"], got["nodes"]), (8, {"us-east-1": 8}),
                             "%s: counter e2 after us-east-1 lost its data dir" % s.name)
        self.assertEqual(self.read(a, "e")["local_count"], 115)

    # (f) -------------------------------------------------------------------------------

    def test_f_idempotency_across_crash(self):
        d = self.data_dir("f")
        srv = self.start_node(d, name="f-idem")
        first = self.incr(srv, "idem", 5, token="t1")
        self.assertEqual((first["local_count"], first["total_count"]), (5, 5))
        self.assertNotIn("duplicate", first)
        self.incr(srv, "idem", 2)  # the counter moves on: 7
        self.crash(srv)
        srv.start()
        again = self.incr(srv, "idem", 5, token="t1")
        self.assertIs(again.get("duplicate"), True, "retry of token t1 after SIGKILL: %r" % again)
        self.assertEqual({k: again[k] for k in ("counter", "local_count", "total_count",
                                                "node_id", "region")},
                         {k: first[k] for k in ("counter", "local_count", "total_count",
                                                "node_id", "region")},
                         "the retry must return the first answer")
        self.assertEqual(self.read(srv, "idem")["total_count"], 7, "the retry counted again")

    # (g) -------------------------------------------------------------------------------

    def test_g_graceful_restart(self):
        d = self.data_dir("g")
        srv = self.start_node(d, name="g-graceful", fsync="everysec")
        for i in range(20):
            self.incr(srv, "g%d" % (i % 4), i + 1)
        self.incr(srv, "g1", -3)
        before = self.counters(srv)
        node_before = self.read(srv, "g1")["nodes"]["us-east-1"]
        srv.stop()  # SIGTERM, exit 0, no sanitizer report
        self.assertTrue(os.path.exists(os.path.join(d, "clean")),
                        "no 'clean' file after a graceful stop: %r" % sorted(os.listdir(d)))
        srv.start()
        after = self.counters(srv)
        self.assertJsonEqual(after, before, "GET /counters after SIGTERM and restart")
        self.assertEqual(self.read(srv, "g1")["nodes"]["us-east-1"], node_before)
        # And it still counts.
        self.assertEqual(self.incr(srv, "g1", 1)["total_count"], before["g1"]["total_count"] + 1)

    def test_g_graceful_restart_keeps_merged_state(self):
        d = self.data_dir("g2")
        srv = self.start_node(d, name="g-merged")
        self.incr(srv, "gm", 4)
        with srv.client() as c:
            r = c.post("/sync", {"counts": {"gm": {"us-west-1": 9}, "gm_only": {"eu-west-1": 3}},
                                 "node_id": "us-west-1", "timestamp": time.time()})
        harness.assert_json_response(r, 200, "POST /sync")
        before = self.counters(srv)
        srv.stop()
        srv.start()
        self.assertJsonEqual(self.counters(srv), before,
                             "merged entries after SIGTERM and restart")

    # (h) -------------------------------------------------------------------------------

    def run_fault(self, point, n, expect_inflight, tag):
        """Increments until the fault point kills the node; restarts without the fault;
        the counter must be acked + expect_inflight (the in-flight one written or not)."""
        d = self.data_dir(tag)
        srv = self.start_node(d, name=tag, env={"COUNTERD_FAULTS": "%s=crash@%d" % (point, n)})
        acked, failed = 0, None
        c = srv.client()
        try:
            for _ in range(n + 50):
                try:
                    r = c.post("/increment", {"counter_name": "h", "amount": 1})
                except (OSError, http.client.HTTPException) as e:
                    failed = e
                    break
                harness.assert_json_response(r, 200, "increment %d" % (acked + 1))
                acked += 1
        finally:
            c.close()
        try:
            rc = srv.proc.wait(5.0)
        except Exception:
            rc = None
        srv.kill()
        self.assertIsNotNone(failed, "%s=crash@%d: %d increments answered, the node did not "
                             "die" % (point, n, acked))
        self.assertEqual(rc, -9, "%s=crash@%d: exit status %r, expected death by SIGKILL"
                         % (point, n, rc))
        srv.start()  # the environment no longer has COUNTERD_FAULTS
        v = self.read(srv, "h")["total_count"]
        print("\n[60_crash] %s=crash@%d: %d acked, %d after restart" % (point, n, acked, v))
        # One client, one increment at a time: each increment is one hit of the point, so
        # the Nth hit is the Nth increment and N - 1 were answered.
        self.assertEqual(acked, n - 1, "%s=crash@%d: increments acknowledged before the crash"
                         % (point, n))
        self.assertGreaterEqual(v, acked, "%s=crash@%d: acknowledged increments lost"
                                % (point, n))
        self.assertEqual(v, acked + expect_inflight,
                         "%s=crash@%d: value after restart vs %d acked (the one in flight %s)"
                         % (point, n, acked, "was written" if expect_inflight else
                            "was not written"))
        self.assertEqual(self.incr(srv, "h")["total_count"], v + 1)

    def test_h_fault_wal_after_write(self):
        # Written, not yet fsynced: the page cache survives the SIGKILL, so the record of
        # the request in flight is there after the restart.
        self.run_fault("wal_after_write", 50, 1, tag="h-after-write")

    def test_h_fault_wal_before_write(self):
        self.run_fault("wal_before_write", 30, 0, tag="h-before-write")

    def test_h_fault_wal_after_fsync(self):
        self.run_fault("wal_after_fsync", 30, 1, tag="h-after-fsync")

    def test_h_fault_snapshot_before_rename(self):
        # The snapshot may be written by the node itself or by a forked child: the fault
        # kills whichever process reaches the point. Either way the data dir is left with
        # a snapshot that was never put in place; a node that then dies (SIGKILL here, if
        # the fault did not take it down) must recover every acknowledged increment.
        d = self.data_dir("h-snap")
        srv = self.start_node(d, name="h-snapshot", extra=["--snapshot-bytes", "4096"],
                              env={"COUNTERD_FAULTS": "snapshot_before_rename=crash@1"})
        mark = "fault point reached"
        acked, failed, hit_at = 0, None, None
        c = srv.client()
        try:
            for _ in range(3000):
                try:
                    r = c.post("/increment", {"counter_name": "h", "amount": 1})
                except (OSError, http.client.HTTPException) as e:
                    failed = e
                    break
                harness.assert_json_response(r, 200, "increment %d" % (acked + 1))
                acked += 1
                if acked % 25 == 0 and mark in srv.log_text():
                    hit_at = acked
                    break
        finally:
            c.close()
        self.assertTrue(failed is not None or hit_at is not None,
                        "snapshot_before_rename=crash@1 with --snapshot-bytes 4096: not hit "
                        "in %d increments; data dir %r" % (acked, sorted(os.listdir(d))))
        left = sorted(os.listdir(d))
        if failed is None:
            self.crash(srv, "after the snapshot fault")  # the node itself survived it
        else:
            srv.kill()
        print("\n[60_crash] snapshot_before_rename=crash@1: %s after %d acked; data dir %r"
              % ("node died" if failed is not None else "snapshot process died, node killed",
                 acked, left))
        srv.start()  # the environment no longer has COUNTERD_FAULTS
        v = self.read(srv, "h")["total_count"]
        self.assertGreaterEqual(v, acked, "acknowledged increments lost")
        self.assertLessEqual(v, acked + (1 if failed is not None else 0),
                             "more than acked (+ the one in flight)")
        # Snapshots keep working after the interrupted one: more increments, SIGKILL, all
        # there.
        with srv.client() as c:
            for i in range(300):
                c.post_json("/increment", {"counter_name": "h", "amount": 1})
        deadline = time.monotonic() + 5.0  # snapshots start on a timer, in the background
        while not any(f.endswith(".snap") for f in os.listdir(d)):
            self.assertLess(time.monotonic(), deadline, "no snapshot within 5 s of 300 more "
                            "increments with --snapshot-bytes 4096: %r" % sorted(os.listdir(d)))
            time.sleep(0.1)
        self.crash(srv)
        srv.start()
        self.assertEqual(self.read(srv, "h")["total_count"], v + 300)


if __name__ == "__main__":
    unittest.main()
