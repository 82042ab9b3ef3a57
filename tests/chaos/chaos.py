"""
chaos.py - a seeded, Jepsen-style checker of counterd's promises under faults.

It starts a cluster of real processes on loopback (three regions with data directories,
a coordinator, a gateway and the strong counter), drives it with concurrent clients that
time out and retry with the same idempotency token, and injects faults from a schedule
drawn from the seed: SIGKILL and restart of a region or of the strong leader, SIGSTOP and
SIGCONT, partitions, dropped and delayed replication messages (the faults policy, edited
in a copy of lua/ and reloaded live), overflowing entries, /sync bodies with refused
entries, and a full disk (a region's DATA_DIR on a small tmpfs filled with a ballast
file). Then it heals everything, force-syncs until the regions agree (bounded), and
checks:

- every region counts, for every counter, what was acknowledged: acked <= counted <=
  acked + ambiguous, where an ambiguous increment is one whose client gave up without an
  answer (timeouts, errors, 5xx on every attempt with its token): exactly-once allows it
  to count 0 or 1 times. Below is "lost", above is "duplicated".
- every region holds the same `nodes` vector for every counter, and sums it to its total;
- the valid entries of a /sync body that also carried refused entries were merged;
- no read of the strong counter went backwards (a read that started after another read or
  an acknowledged increment ended sees at least its value), no two acknowledged strong
  increments answered the same value, and every acknowledged strong increment is in the
  final value (acked <= final <= acked + unanswered);
- every process answered /health after the heal, and no well-formed increment got a 4xx.

Only the standard library. The node processes get SIGKILL if this process dies
(PR_SET_PDEATHSIG; they are all started from the main thread, whose exit is what the
kernel watches), tmpfs mounts are unmounted on the way out. The binary is $COUNTERD_BIN or
build/counterd.
"""

import argparse
import collections
import contextlib
import errno
import http.client
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback

REPO_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(REPO_ROOT, "tests", "integration"))
from loopback import die_with_parent, port_free  # noqa: E402  (shared with the harness)

HOST = "127.0.0.1"
REGIONS = (("us-east", "us-east-1"), ("us-west", "us-west-1"), ("eu-west", "eu-west-1"))
ROUTINGS = ("random", "round-robin", "sticky", "nearest", "us-east", "us-west", "eu-west")
INT64_MAX = 2 ** 63 - 1

# Every fault kind, in the order of the summary line. --faults picks among them.
FAULT_KINDS = ("kill", "stop", "partition", "drop", "delay", "overflow", "refused", "disk",
               "kill-strong", "reboot")
FAULT_HELP = {
    "kill": "SIGKILL a region, restart it on its data dir after 0.3-3 s",
    "stop": "SIGSTOP a region, SIGCONT it after 0.3-3 s",
    "partition": "partition one or two regions (coordinator API), heal after 1-4 s",
    "drop": "drop 20-100%% of replication messages (faults.lua, reloaded live) for 1-4 s",
    "delay": "delay replication messages 0.2-2.5 s one way (faults.lua) for 1-5 s",
    "overflow": "+(2^63-11) on one region and +100 on another within one sync interval, "
                "on a counter of its own",
    "refused": "POST /sync to a region, as a peer would, with an invalid name and a "
               "negative count beside a valid entry",
    "disk": "fill a region's DATA_DIR tmpfs with a ballast file for 1-4 s (root only)",
    "kill-strong": "SIGKILL the strong leader, restart it after 0.3-2 s",
    "reboot": "SIGKILL a region and restart it after 0.3-3 s as after a reboot (a new "
              "COUNTERD_BOOT_ID: a new replica id, the old one folded after --fold-after-ms)",
}

START_TIMEOUT_S = 15.0
SANITIZER_MARKS = ("ERROR: AddressSanitizer", "runtime error:", "LeakSanitizer")


class SetupError(Exception):
    """The cluster could not be started: not a finding about counterd."""


def log(*a):
    print("[chaos %s]" % time.strftime("%H:%M:%S"), *a, flush=True)


# ---------------------------------------------------------------------------------------
# Processes
# ---------------------------------------------------------------------------------------


def free_ports(n):
    """n free loopback ports below the ephemeral range (32768+), so that a killed node's
    port is not taken by an outgoing connection before it restarts, and ending in 5-9,
    which no lab of ./scripts/lab takes (its ports are base + 0-4, 80-84, 1090-1094 for a
    base that is a multiple of 10)."""
    rng = random.SystemRandom()
    out = []
    for _ in range(2000):
        p = rng.randrange(2800, 3270) * 10 + rng.randrange(5, 10)
        if p not in out and port_free(p):
            out.append(p)
            if len(out) == n:
                return out
    raise SetupError("no %d free ports in 28000-32700" % n)


class Node:
    """One counterd process, restartable on the same port and data directory."""

    def __init__(self, binary, name, port, args, logdir):
        self.binary, self.name, self.port, self.args = binary, name, port, list(args)
        self.logdir = logdir
        self.proc = None
        self.runs = 0
        self.stopped = False  # SIGSTOPped
        self.log_paths = []
        self.boot = None  # COUNTERD_BOOT_ID, when a reboot was simulated

    @property
    def url(self):
        return "http://%s:%d" % (HOST, self.port)

    def start(self):
        self.runs += 1
        path = os.path.join(self.logdir, "%s.%d.log" % (self.name, self.runs))
        self.log_paths.append(path)
        env = dict(os.environ)
        env.setdefault("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0")
        env.setdefault("UBSAN_OPTIONS", "print_stacktrace=1")
        if self.boot:
            env["COUNTERD_BOOT_ID"] = self.boot
        with open(path, "wb") as f:
            self.proc = subprocess.Popen([self.binary, "--bind", HOST, "--port", str(self.port)]
                                         + self.args, stdin=subprocess.DEVNULL, stdout=f,
                                         stderr=f, env=env, cwd=self.logdir,
                                         preexec_fn=die_with_parent)
        self.stopped = False

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def health(self, timeout=1.0):
        try:
            c = http.client.HTTPConnection(HOST, self.port, timeout=timeout)
            try:
                c.request("GET", "/health")
                r = c.getresponse()
                body = r.read()
                return r.status, body
            finally:
                c.close()
        except (OSError, http.client.HTTPException) as e:
            return None, repr(e)

    def wait_ready(self, timeout=START_TIMEOUT_S, want=None):
        """True once /health answers 200 (and want(body) holds); False on timeout or exit."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                return False
            st, body = self.health()
            if st == 200 and (want is None or want(body)):
                return True
            time.sleep(0.05)
        return False

    def kill(self):
        if self.alive():
            if self.stopped:
                self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
            self.proc.wait(10)
        self.stopped = False

    def sigstop(self):
        if self.alive():
            self.proc.send_signal(signal.SIGSTOP)
            self.stopped = True

    def sigcont(self):
        if self.alive():
            self.proc.send_signal(signal.SIGCONT)
        self.stopped = False

    def terminate(self):
        """SIGTERM and wait; returns the exit status (None when it had to be killed)."""
        if self.proc is None:
            return 0
        if self.stopped:
            self.sigcont()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
                return None
        return self.proc.returncode

    def sanitizer_reports(self):
        found = []
        for p in self.log_paths:
            try:
                with open(p, "r", errors="replace") as f:
                    text = f.read()
            except OSError:
                continue
            found += ["%s: %s" % (os.path.basename(p), m) for m in SANITIZER_MARKS if m in text]
        return found


# ---------------------------------------------------------------------------------------
# HTTP
# ---------------------------------------------------------------------------------------


class Pool:
    """Keep-alive connections of one thread, one per port; a connection that failed or
    timed out is closed (its late answer must not be read as the next one's)."""

    def __init__(self):
        self.conns = {}

    def call(self, port, method, path, body=None, timeout=2.0, headers=None, fresh=False):
        """(status, decoded JSON or None, error text or None). status None: no answer.
        fresh: on a new connection (the checker's own calls: a kept one may lead to a
        process that was killed since)."""
        if fresh and port in self.conns:
            self.conns.pop(port).close()
        data = None if body is None else (body if isinstance(body, bytes)
                                          else json.dumps(body).encode())
        hdrs = {"Content-Type": "application/json"} if data is not None else {}
        hdrs.update(headers or {})
        c = self.conns.get(port)
        if c is None:
            c = http.client.HTTPConnection(HOST, port, timeout=timeout)
            self.conns[port] = c
        c.timeout = timeout
        if c.sock is not None:
            c.sock.settimeout(timeout)
        try:
            c.request(method, path, body=data, headers=hdrs)
            r = c.getresponse()
            raw = r.read()
        except (OSError, http.client.HTTPException) as e:
            c.close()
            del self.conns[port]
            return None, None, type(e).__name__
        if r.getheader("connection", "").lower() == "close":
            c.close()
            del self.conns[port]
        try:
            doc = json.loads(raw.decode()) if raw else None
        except ValueError:
            doc = None
        return r.status, doc, None if doc is not None else raw[:200].decode("utf-8", "replace")

    def close(self):
        for c in self.conns.values():
            c.close()
        self.conns.clear()


# ---------------------------------------------------------------------------------------
# The model: what clients were told
# ---------------------------------------------------------------------------------------


class Tally:
    """One eventual counter: sums of amounts acknowledged and ambiguous."""

    def __init__(self):
        self.acked = 0
        self.acked_ops = 0
        self.ambiguous = 0
        self.ambiguous_ops = 0
        self.ambiguous_tokens = []  # (token, amount, attempts)
        self.resolved = 0  # ambiguous increments acknowledged by a retry after the heal
        self.duplicate_answers = 0
        self.suspects = []  # acknowledged after an uncertain attempt: [(token, attempts)]
        self.suspect_amount = 0


class StrongTally:
    def __init__(self):
        self.acked = 0
        self.acked_ops = 0
        self.unanswered = 0  # amounts of increments without a 200: may or may not count
        self.unanswered_ops = 0
        self.no_quorum = 0
        self.answers = []  # (start, end, value) of acknowledged increments
        self.reads = []  # (start, end, value)


class Model:
    def __init__(self, counters, strong_counters):
        self.lock = threading.Lock()
        self.tally = {c: Tally() for c in counters}
        self.strong = {c: StrongTally() for c in strong_counters}
        self.ops = 0
        self.attempts = 0
        self.errors = collections.Counter()  # outcome of failed attempts
        self.unexpected = []  # well-formed requests that got a 4xx
        self.region_reads = 0


# ---------------------------------------------------------------------------------------
# One run
# ---------------------------------------------------------------------------------------


FAULTS_LUA_HOOK = "\nreturn M\n"


class Run:
    def __init__(self, seed, opts):
        self.seed, self.o = seed, opts
        self.rng = random.Random("%d/schedule" % seed)
        self.counters = ["c%d" % i for i in range(opts.counters)]
        self.strong_counters = ["s%d" % i for i in range(2)] if opts.strong_share > 0 else []
        self.model = Model(self.counters, self.strong_counters)
        self.faults = collections.Counter()
        self.violations = []
        self.notes = []
        self.stop_ops = threading.Event()
        self.nodes = []
        self.mounts = []
        self.big = []  # overflow counters: [(name, [(region, amount, status)])]
        self.refused = []  # [counter, replica, value, region, status, body]
        self.fault_state = {"drop": 0.0, "delay": 0}
        self.ballast = {}  # region index -> path
        self.partitioned = set()

    # ----------------------------------------------------------------- cluster

    def setup(self):
        o = self.o
        self.tmp = tempfile.mkdtemp(prefix="counterd-chaos-%d-" % self.seed)
        self.lua = os.path.join(self.tmp, "lua")
        shutil.copytree(os.path.join(REPO_ROOT, "lua"), self.lua)
        self.faults_path = os.path.join(self.lua, "policies", "faults.lua")
        with open(self.faults_path) as f:
            self.faults_orig = f.read()
        if FAULTS_LUA_HOOK not in self.faults_orig:
            raise SetupError("lua/policies/faults.lua does not end in 'return M'")
        ports = free_ports(len(REGIONS) + 3)
        self.data_dirs = []
        for i, _ in enumerate(REGIONS):
            d = os.path.join(self.tmp, "data-r%d" % i)
            os.makedirs(d)
            if "disk" in o.faults:
                r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=%dm" % o.disk_mb,
                                    "tmpfs", d], capture_output=True, text=True)
                if r.returncode != 0:
                    raise SetupError("disk: cannot mount a tmpfs on %s (%s); run as root or "
                                     "leave 'disk' out of --faults" % (d, r.stderr.strip()))
                self.mounts.append(d)
            self.data_dirs.append(d)
        endpoints = ",".join("%s=http://%s:%d" % (r, HOST, ports[i])
                             for i, (r, _) in enumerate(REGIONS))
        self.regions = []
        for i, (region, node_id) in enumerate(REGIONS):
            peers = ",".join("http://%s:%d" % (HOST, ports[j])
                             for j in range(len(REGIONS)) if j != i)
            args = ["--region", region, "--node-id", node_id, "--peers", peers,
                    "--sync-interval-ms", str(o.sync_interval_ms), "--sync-timeout-ms", "2000",
                    "--data-dir", os.path.join(self.data_dirs[i], "node"),
                    "--fsync", o.fsync, "--snapshot-bytes", str(o.snapshot_bytes),
                    "--fold-after-ms", str(o.fold_after_ms), "--lua-dir", self.lua]
            n = Node(o.bin, node_id, ports[i], args, self.tmp)
            n.region = region
            self.regions.append(n)
        n = len(REGIONS)
        self.coordinator = Node(o.bin, "coordinator", ports[n],
                                ["--role", "coordinator", "--regions", endpoints,
                                 "--lua-dir", self.lua], self.tmp)
        self.strong = Node(o.bin, "strong", ports[n + 2],
                           ["--role", "strong", "--region", REGIONS[0][0], "--regions",
                            endpoints, "--lua-dir", self.lua], self.tmp)
        self.gateway = Node(o.bin, "gateway", ports[n + 1],
                            ["--role", "gateway", "--regions", endpoints,
                             "--coordinator", self.coordinator.url, "--strong", self.strong.url,
                             "--upstream-timeout-ms", str(o.gateway_timeout_ms),
                             "--lua-dir", self.lua], self.tmp)
        self.nodes = self.regions + [self.coordinator, self.strong, self.gateway]
        for nd in self.nodes:
            nd.start()
        for nd in self.nodes:
            if not nd.wait_ready():
                raise SetupError("%s did not start (log %s)" % (nd.name, nd.log_paths[-1]))
        if not self.strong.wait_ready(want=lambda b: b'"ready":true' in b):
            raise SetupError("the strong leader did not become ready")

    def teardown(self, keep):
        for nd in self.nodes:
            with contextlib.suppress(Exception):
                nd.terminate()
        for d in self.mounts:
            r = subprocess.run(["umount", d], capture_output=True)
            if r.returncode != 0:
                subprocess.run(["umount", "-l", d], capture_output=True)
        if keep:
            log("logs and data kept in %s" % self.tmp)
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)

    # ----------------------------------------------------------------- clients

    def client(self, i):
        o, m = self.o, self.model
        rng = random.Random("%d/client/%d" % (self.seed, i))
        pool = Pool()
        n = 0
        try:
            while not self.stop_ops.is_set():
                n += 1
                r = rng.random()
                if r < o.strong_share:
                    if rng.random() < 0.6:
                        self.strong_increment(rng, pool)
                    else:
                        self.strong_read(rng, pool)
                elif r < o.strong_share + o.read_share:
                    reg = rng.choice(self.regions)
                    pool.call(reg.port, "GET", "/counter/%s" % rng.choice(self.counters),
                              timeout=o.client_timeout)
                    with m.lock:
                        m.region_reads += 1
                else:
                    self.increment(rng, pool, "s%d-c%d-%d" % (self.seed, i, n))
        finally:
            pool.close()

    def increment(self, rng, pool, token):
        o, m = self.o, self.model
        counter = rng.choice(self.counters)
        amount = rng.randint(1, 5)
        direct = rng.random() < o.direct_share
        target = rng.randrange(len(self.regions)) if direct else None
        routing = rng.choice(ROUTINGS)
        hdrs = {"X-Client-Region": rng.choice(REGIONS)[0]} if routing == "nearest" else None
        deadline = time.monotonic() + o.op_budget_s
        uncertain = False
        history = []  # (where, answer) of each attempt
        with m.lock:
            m.ops += 1
        for attempt in range(o.max_attempts):
            if attempt:
                time.sleep(min(0.5, 0.03 * 2 ** attempt) * (0.5 + rng.random()))
                if target is not None and o.retry_elsewhere and rng.random() < 0.5:
                    # The client's region is slow or gone: it tries the gateway or another
                    # region with the same token (exactly once whatever region it reaches).
                    target = rng.choice([None] + [j for j in range(len(self.regions))
                                                  if j != target])
            if target is None:
                body = {"counter_name": counter, "amount": amount, "routing": routing,
                        "idempotency_token": token}
                st, doc, err = pool.call(self.gateway.port, "POST", "/api/increment", body,
                                         o.client_timeout, hdrs)
                where = "gateway"
            else:
                body = {"counter_name": counter, "amount": amount, "idempotency_token": token}
                st, doc, err = pool.call(self.regions[target].port, "POST", "/increment", body,
                                         o.client_timeout)
                where = "region"
            with m.lock:
                m.attempts += 1
            history.append("%s:%s" % ("gateway/" + routing if target is None
                                      else REGIONS[target][0],
                                      st if st is not None else err))
            if st == 200:
                with m.lock:
                    t = m.tally[counter]
                    t.acked += amount
                    t.acked_ops += 1
                    if doc and doc.get("duplicate"):
                        t.duplicate_answers += 1
                    if uncertain:
                        t.suspect_amount += amount
                        if len(t.suspects) < 200:
                            t.suspects.append((token, amount, history, (doc or {}).get("region"),
                                               bool((doc or {}).get("duplicate"))))
                return
            if st is None and err == "ConnectionRefusedError":
                # Nothing was sent: not applied. The target is down; wait a little.
                with m.lock:
                    m.errors["%s no-answer %s" % (where, err)] += 1
                time.sleep(0.05)
            elif st is None or st >= 500:
                uncertain = True
                code = (doc or {}).get("error") if st else err
                with m.lock:
                    m.errors["%s %s %s" % (where, st or "no-answer", code)] += 1
            else:
                with m.lock:
                    m.unexpected.append("%s %s %s: %d %s" % (where, counter, token, st,
                                                            json.dumps(doc)[:200]))
                if not uncertain:
                    return
            if time.monotonic() > deadline:
                break
        if uncertain:
            with m.lock:
                t = m.tally[counter]
                t.ambiguous += amount
                t.ambiguous_ops += 1
                t.ambiguous_tokens.append((token, amount, history))

    def strong_increment(self, rng, pool):
        o, m = self.o, self.model
        name = rng.choice(self.strong_counters)
        amount = rng.randint(1, 3)
        t0 = time.monotonic()
        st, doc, err = pool.call(self.strong.port, "POST", "/increment",
                                 {"counter_name": name, "amount": amount}, o.strong_timeout)
        t1 = time.monotonic()
        with m.lock:
            m.ops += 1
            m.attempts += 1
            s = m.strong[name]
            if st == 200 and doc and isinstance(doc.get("value"), int):
                s.acked += amount
                s.acked_ops += 1
                s.answers.append((t0, t1, doc["value"]))
            elif st is not None and 400 <= st < 500:
                m.unexpected.append("strong %s: %d %s" % (name, st, json.dumps(doc)[:200]))
            elif err == "ConnectionRefusedError":
                m.errors["strong no-answer %s" % err] += 1  # never sent: not applied
            else:
                # 503 no_quorum "may later turn out applied" (issue 11): not acknowledged,
                # but not provably absent either.
                s.unanswered += amount
                s.unanswered_ops += 1
                if doc and doc.get("error") == "no_quorum":
                    s.no_quorum += 1
                m.errors["strong %s %s" % (st or "no-answer", (doc or {}).get("error") or err)] += 1
        if err == "ConnectionRefusedError":
            time.sleep(0.05)

    def strong_read(self, rng, pool):
        o, m = self.o, self.model
        name = rng.choice(self.strong_counters)
        t0 = time.monotonic()
        st, doc, _ = pool.call(self.strong.port, "GET", "/counter/%s" % name,
                               timeout=o.strong_timeout)
        t1 = time.monotonic()
        if st == 200 and doc and isinstance(doc.get("value"), int):
            with m.lock:
                m.strong[name].reads.append((t0, t1, doc["value"]))

    # ----------------------------------------------------------------- faults

    def schedule(self):
        """The fault schedule, drawn from the seed alone: [(t, kind, params, duration)].
        A region is given to at most one fault at a time, and at most two regions are
        impaired (killed, stopped, disk full) at once, so that increments keep flowing."""
        o, rng = self.o, self.rng
        kinds = [k for k in FAULT_KINDS if k in o.faults]
        events = []
        if not kinds:
            return events
        busy = [0.0] * len(REGIONS)  # each region's fault ends at
        net_busy = {"partition": 0.0, "drop": 0.0, "delay": 0.0, "kill-strong": 0.0}
        t = 1.0 + rng.uniform(0, o.fault_gap_s)
        nb = 0
        while t < o.duration_s - 1.0:
            kind = rng.choice(kinds)
            p = {}
            dur = 0.0
            if kind in ("kill", "stop", "disk", "reboot"):
                free = [i for i in range(len(REGIONS)) if busy[i] <= t]
                impaired = len(REGIONS) - len(free)
                if free and impaired < 2:
                    i = rng.choice(free)
                    dur = rng.uniform(0.3, 3.0) if kind != "disk" else rng.uniform(1.0, 4.0)
                    busy[i] = t + dur + 0.5
                    p["region"] = i
                else:
                    kind = None
            elif kind == "partition":
                if net_busy[kind] <= t:
                    k = 1 if rng.random() < 0.7 else 2
                    p["regions"] = sorted(rng.sample(range(len(REGIONS)), k))
                    dur = rng.uniform(1.0, 4.0)
                    net_busy[kind] = t + dur
                else:
                    kind = None
            elif kind == "drop":
                if net_busy[kind] <= t:
                    p["rate"] = rng.choice((0.2, 0.5, 0.8, 1.0))
                    dur = rng.uniform(1.0, 4.0)
                    net_busy[kind] = t + dur
                else:
                    kind = None
            elif kind == "delay":
                if net_busy[kind] <= t:
                    p["ms"] = rng.choice((200, 600, 1200, 2500))
                    dur = rng.uniform(1.0, 5.0)
                    net_busy[kind] = t + dur
                else:
                    kind = None
            elif kind == "kill-strong":
                if net_busy[kind] <= t:
                    dur = rng.uniform(0.3, 2.0)
                    net_busy[kind] = t + dur + 1.0
                else:
                    kind = None
            elif kind == "overflow":
                a, b = rng.sample(range(len(REGIONS)), 2)
                nb += 1
                p.update(a=a, b=b, name="big%d" % nb)
            elif kind == "refused":
                nb += 1
                p.update(region=rng.randrange(len(REGIONS)), name="refused%d" % nb,
                         value=rng.randint(1, 1000))
            if kind:
                events.append((t, kind, p, dur))
            t += rng.expovariate(1.0 / o.fault_gap_s)
        return events

    def faults_lua(self):
        """faults.lua with the current drop and delay settings appended."""
        extra = []
        if self.fault_state["drop"] > 0:
            extra.append("M.drop_rate = %g" % self.fault_state["drop"])
        if self.fault_state["delay"] > 0:
            ms = self.fault_state["delay"]
            extra.append("M.region_latency_ms = { [\"us-east|us-west\"] = %d, "
                         "[\"us-east|eu-west\"] = %d, [\"us-west|eu-west\"] = %d }" % (ms, ms, ms))
        text = self.faults_orig
        if extra:
            text = text.replace(FAULTS_LUA_HOOK, "\n-- chaos\n" + "\n".join(extra)
                                + FAULTS_LUA_HOOK)
        return text

    def apply_faults_lua(self, pool):
        tmp = self.faults_path + ".tmp"
        with open(tmp, "w") as f:
            f.write(self.faults_lua())
        os.replace(tmp, self.faults_path)
        for nd in self.regions + [self.strong]:
            if nd.alive() and not nd.stopped:
                st, doc, err = pool.call(nd.port, "POST", "/admin/reload", timeout=3.0, fresh=True)
                if st != 200:
                    self.notes.append("reload of %s answered %s %s" % (nd.name, st, doc or err))

    def set_partition(self, pool, i, on):
        st, doc, err = pool.call(self.coordinator.port, "POST", "/global/partition",
                                 {"region": REGIONS[i][0], "enabled": on}, timeout=3.0, fresh=True)
        if st != 200 and self.regions[i].alive() and not self.regions[i].stopped:
            # The coordinator did not get through: ask the region itself.
            st, doc, err = pool.call(self.regions[i].port, "POST", "/admin/partition",
                                     {"enabled": on}, timeout=3.0, fresh=True)
        if on:
            self.partitioned.add(i)
        else:
            self.partitioned.discard(i)
        return st

    def fill_disk(self, i):
        path = os.path.join(self.data_dirs[i], "ballast")
        self.ballast[i] = path
        chunk = b"\0" * (1 << 20)
        with open(path, "wb", buffering=0) as f:
            for size in (1 << 20, 4096, 1):
                block = chunk[:size]
                try:
                    while True:
                        f.write(block)
                except OSError as e:
                    if e.errno != errno.ENOSPC:
                        raise

    def free_disk(self, i):
        path = self.ballast.pop(i, None)
        if path:
            with contextlib.suppress(OSError):
                os.remove(path)

    def restart(self, nd):
        """Starts a node the checker killed, on its port and data dir; retried while it
        exits early (a port still held, a data dir still locked), at most 10 s. (The
        strong leader may answer not ready until it reaches a majority: heal() waits for
        that once the faults are gone.)"""
        deadline = time.monotonic() + 10.0
        tries = 0
        while True:
            tries += 1
            nd.start()
            if nd.wait_ready(timeout=10.0):
                if tries > 1:
                    self.notes.append("%s needed %d starts after its kill (see %s)"
                                      % (nd.name, tries, nd.log_paths[-2]))
                return True
            nd.kill()
            if time.monotonic() > deadline:
                self.violations.append("restart: %s did not come back after its kill within "
                                       "10 s (%d starts; log %s)" % (nd.name, tries,
                                                                      nd.log_paths[-1]))
                return False
            time.sleep(0.3)

    def inject(self, events):
        """Runs the schedule (main thread: every restart must be its child)."""
        pool = Pool()
        t0 = time.monotonic()
        pending = []  # (t_end, undo)
        try:
            for (t, kind, p, dur) in events + [(self.o.duration_s, None, None, 0)]:
                while True:
                    now = time.monotonic() - t0
                    pending.sort(key=lambda x: x[0])
                    if pending and pending[0][0] <= min(t, now):
                        pending.pop(0)[1]()
                        continue
                    if now >= t:
                        break
                    time.sleep(min(0.05, t - now))
                if kind is None:
                    break
                undo = self.start_fault(pool, kind, p)
                if undo:
                    pending.append((t + dur, undo))
                self.faults[kind] += 1
                if self.o.verbose:
                    log("t=%.1f %s %s for %.1f s" % (t, kind, p, dur))
            for _, undo in sorted(pending, key=lambda x: x[0]):
                undo()
        finally:
            pool.close()

    def start_fault(self, pool, kind, p):
        if kind == "kill":
            nd = self.regions[p["region"]]
            nd.kill()
            self.partitioned.discard(p["region"])
            return lambda: self.restart(nd)
        if kind == "reboot":
            nd = self.regions[p["region"]]
            nd.kill()
            self.partitioned.discard(p["region"])
            nd.boot = "chaos-reboot-%d" % self.faults[kind]
            return lambda: self.restart(nd)
        if kind == "kill-strong":
            self.strong.kill()
            return lambda: self.restart(self.strong)
        if kind == "stop":
            nd = self.regions[p["region"]]
            nd.sigstop()

            def undo_stop():
                nd.sigcont()
                # It slept through any reload of the faults policy meanwhile.
                st, doc, err = pool.call(nd.port, "POST", "/admin/reload", timeout=3.0,
                                         fresh=True)
                if st != 200:
                    self.notes.append("reload of %s answered %s %s" % (nd.name, st, doc or err))
            return undo_stop
        if kind == "disk":
            i = p["region"]
            self.fill_disk(i)
            return lambda: self.free_disk(i)
        if kind == "partition":
            for i in p["regions"]:
                self.set_partition(pool, i, True)
            return lambda: [self.set_partition(pool, i, False) for i in p["regions"]]
        if kind in ("drop", "delay"):
            self.fault_state[kind] = p["rate"] if kind == "drop" else p["ms"]
            self.apply_faults_lua(pool)

            def undo():
                self.fault_state[kind] = 0
                self.apply_faults_lua(pool)
            return undo
        if kind == "overflow":
            name = p["name"]
            res = []
            for i, amount in ((p["a"], INT64_MAX - 10), (p["b"], 100)):
                st, doc, err = pool.call(self.regions[i].port, "POST", "/increment",
                                         {"counter_name": name, "amount": amount}, timeout=2.0, fresh=True)
                res.append((REGIONS[i][0], amount, st))
            self.big.append((name, res))
            return None
        if kind == "refused":
            i, name, value = p["region"], p["name"], p["value"]
            replica = "chaos-peer-%s" % name
            body = {"node_id": replica, "timestamp": int(time.time()),
                    "counts": {name: {replica: value},
                               "bad name!": {replica: 1},
                               name + "-neg": {replica: -1}}}
            st, doc, err = pool.call(self.regions[i].port, "POST", "/sync", body, timeout=3.0, fresh=True)
            self.refused.append([name, replica, value, REGIONS[i][0], st, body])
            return None
        raise AssertionError(kind)

    # ----------------------------------------------------------------- heal, sync, check

    def heal(self):
        pool = Pool()
        try:
            for nd in self.nodes:
                if nd.stopped:
                    nd.sigcont()
            for i in list(self.ballast):
                self.free_disk(i)
            self.fault_state = {"drop": 0.0, "delay": 0}
            for nd in self.nodes:
                if not nd.alive() and nd.runs > 0:
                    rc = nd.proc.returncode if nd.proc else None
                    if rc is not None and rc != -signal.SIGKILL:
                        self.violations.append("crash: %s exited by itself with status %s "
                                               "(log %s)" % (nd.name, rc, nd.log_paths[-1]))
                    self.restart(nd)
            self.apply_faults_lua(pool)
            for i, nd in enumerate(self.regions):
                st, doc, err = pool.call(nd.port, "POST", "/admin/partition", {"enabled": False},
                                         timeout=3.0, fresh=True)
                if st != 200:
                    self.notes.append("heal: %s /admin/partition answered %s" % (nd.name, st or err))
            self.partitioned.clear()
            # A node that is alive but does not answer after the heal (SIGCONT, space
            # back) is a finding; it is then restarted so that the counts can be checked.
            for nd in self.nodes:
                want = (lambda b: b'"ready":true' in b) if nd is self.strong else None
                if not nd.wait_ready(timeout=10.0, want=want):
                    st, body = nd.health()
                    self.violations.append("unresponsive: %s answers /health with %s %r 10 s "
                                           "after the heal; restarted to check its counts"
                                           % (nd.name, st, body[:120] if body else body))
                    nd.kill()
                    self.restart(nd)
        finally:
            pool.close()

    def resend_refused(self):
        """A /sync body that got no answer or a 5xx (the region down, frozen, out of space)
        was not looked at: sent again after the heal, as the peer's next round would."""
        pool = Pool()
        try:
            for r in self.refused:
                if r[4] is None or r[4] >= 500:
                    nd = self.regions[[x[0] for x in REGIONS].index(r[3])]
                    st, doc, err = pool.call(nd.port, "POST", "/sync", r[5], timeout=5.0,
                                             fresh=True)
                    self.notes.append("refused-entries body %s sent again to %s after the "
                                      "heal (first answer %s): %s" % (r[0], r[3], r[4], st or err))
                    r[4] = st
        finally:
            pool.close()

    def resolve_ambiguous(self):
        """--resolve: after the heal, every increment its client gave up on is sent once
        more with its token through the gateway (as the client's next try would be). A 200
        makes it acknowledged, so that the count must then be exact; exactly once means it
        is counted once, whether or not an earlier attempt had arrived."""
        pool = Pool()
        try:
            for c, t in self.model.tally.items():
                left = []
                for token, amount, history in t.ambiguous_tokens:
                    st = doc = None
                    for _ in range(3):
                        st, doc, err = pool.call(self.gateway.port, "POST", "/api/increment",
                                                 {"counter_name": c, "amount": amount,
                                                  "idempotency_token": token}, timeout=5.0)
                        if st == 200:
                            break
                        time.sleep(0.2)
                    if st == 200:
                        t.acked += amount
                        t.acked_ops += 1
                        t.ambiguous -= amount
                        t.ambiguous_ops -= 1
                        t.resolved += 1
                        t.suspect_amount += amount
                        t.suspects.append((token, amount, history + ["(after the heal)"],
                                           (doc or {}).get("region"),
                                           bool((doc or {}).get("duplicate"))))
                    else:
                        left.append((token, amount, history))
                t.ambiguous_tokens = left
        finally:
            pool.close()

    def region_state(self, pool, nd):
        st, doc, err = pool.call(nd.port, "GET", "/counters", timeout=5.0, fresh=True)
        if st != 200 or not doc:
            return None
        # local_count is each region's own share: the replicated state is the rest.
        return {name: {"total_count": c.get("total_count"), "nodes": c.get("nodes")}
                for name, c in (doc.get("counters") or {}).items()}

    def sync_until_stable(self):
        """Force-syncs every region, in rounds, until every region holds the same state
        twice in a row (bounded by --sync-rounds). Returns {region: counters}."""
        pool = Pool()
        prev, states = None, None
        deadline = time.monotonic() + 90.0
        try:
            for rnd in range(self.o.sync_rounds):
                if rnd and time.monotonic() > deadline:
                    self.notes.append("sync: stopped after %d rounds (90 s)" % rnd)
                    return states, rnd, answers
                answers = []
                for nd in self.regions:
                    st, doc, err = pool.call(nd.port, "POST", "/admin/force-sync", timeout=15.0,
                                         fresh=True)
                    answers.append((nd.region, st, (doc or {}).get("status") or err))
                states = {nd.region: self.region_state(pool, nd) for nd in self.regions}
                same = len({json.dumps(s, sort_keys=True) for s in states.values()}) == 1
                if same and states == prev:
                    return states, rnd + 1, answers
                prev = states
                time.sleep(0.3)
            return states, self.o.sync_rounds, answers
        finally:
            pool.close()

    def check(self, states, rounds, answers):
        v = self.violations
        m = self.model
        names = [nd.region for nd in self.regions]
        per_region = {r: 0 for r in names}
        lost = dup = 0
        for r in names:
            if states.get(r) is None:
                v.append("read: %s did not answer GET /counters after the heal" % r)
        same = len({json.dumps(s, sort_keys=True) for s in states.values()}) == 1
        if not same:
            if all(st == 200 for _, st, _ in answers):
                v.append("status: every region answered force-sync with 200 %s, yet after %d "
                         "rounds the regions hold different states"
                         % (sorted({a[2] for a in answers}), rounds))
        # Eventual counters: exact within the ambiguity, identical vectors.
        for c in self.counters:
            t = m.tally[c]
            lo, hi = t.acked, t.acked + t.ambiguous
            vecs, counts = {}, {}
            for r in names:
                s = (states.get(r) or {}).get(c) or {"total_count": 0, "nodes": {}}
                got = s.get("total_count") or 0
                counts[r] = got
                per_region[r] += got
                vecs[r] = s.get("nodes")
                if isinstance(s.get("nodes"), dict) and sum(s["nodes"].values()) != got:
                    v.append("vector: %s on %s: nodes %s sum to %d, total_count %d"
                             % (c, r, s["nodes"], sum(s["nodes"].values()), got))
            differ = len({json.dumps(x, sort_keys=True) for x in vecs.values()}) != 1
            where = ("%d on every region" % counts[names[0]] if len(set(counts.values())) == 1
                     else ", ".join("%s %d" % kv for kv in counts.items()))
            low, high = min(counts.values()), max(counts.values())
            if low < lo:
                lost += lo - low
                v.append("lost: %s counts %s; acknowledged %d (%d missing%s)"
                         % (c, where, lo, lo - low, ", the vectors differ: not replicated"
                            if differ else ""))
            if high > hi:
                dup += high - hi
                v.append("duplicated: %s counts %s; acknowledged %d + ambiguous %d (%d counted "
                         "twice); %d acknowledged after an attempt that may have arrived "
                         "(amount %d), e.g. %s"
                         % (c, where, lo, t.ambiguous, high - hi, len(t.suspects),
                            t.suspect_amount, "; ".join(
                                "%s +%d %s -> 200 from %s%s" % (tok, a, " ".join(h), reg,
                                                                " duplicate" if d else "")
                                for tok, a, h, reg, d in sorted(t.suspects,
                                                                key=lambda x: x[4])[:3])))
            if differ:
                v.append("vectors: %s differs between regions: %s" % (c, json.dumps(vecs)))
        # The coordinator's view must not call different vectors converged.
        pool = Pool()
        try:
            for c in self.counters:
                st, doc, err = pool.call(self.coordinator.port, "GET", "/global/counter/%s" % c,
                                         timeout=5.0)
                conv = ((doc or {}).get("convergence") or {}).get("converged")
                vecs = {r: ((states.get(r) or {}).get(c) or {}).get("nodes") for r in names}
                if conv and len({json.dumps(x, sort_keys=True) for x in vecs.values()}) != 1:
                    v.append("status: the coordinator answers converged:true for %s (global_count "
                             "%s) while the regions' vectors differ" % (c, doc.get("global_count")))
                # merged_count (issue 11): the join of every region's vector.
                if doc and "merged_count" in doc:
                    join = {}
                    for vec in vecs.values():
                        for k, x in (vec or {}).items():
                            join[k] = max(join.get(k, x), x)
                    if doc["merged_count"] != sum(join.values()):
                        v.append("status: the coordinator's merged_count for %s is %s, the join "
                                 "of the regions' vectors sums to %d"
                                 % (c, doc["merged_count"], sum(join.values())))
        finally:
            pool.close()
        # Overflowing counters: only their vectors (the totals are beyond int64).
        for name, res in self.big:
            vecs = {r: (states.get(r) or {}).get(name, {}).get("nodes") for r in names}
            if len({json.dumps(x, sort_keys=True) for x in vecs.values()}) != 1:
                v.append("vectors: overflow counter %s (%s) differs between regions: %s"
                         % (name, res, json.dumps(vecs)))
        # Refused entries: the valid entry beside them must be everywhere.
        for name, replica, value, region, st, _ in self.refused:
            if st is None or st >= 500:
                continue  # never looked at (noted by resend_refused)
            got = {r: ((states.get(r) or {}).get(name) or {}).get("nodes", {}).get(replica)
                   for r in names}
            if any(x != value for x in got.values()):
                v.append("refused: the valid entry %s[%s]=%d of a /sync body with refused "
                         "entries (sent to %s, answered %s) reads %s"
                         % (name, replica, value, region, st, got))
        # Unexpected answers to well-formed increments.
        for u in m.unexpected[:10]:
            v.append("answer: a well-formed request got %s" % u)
        if len(m.unexpected) > 10:
            v.append("answer: %d more well-formed requests got a 4xx" % (len(m.unexpected) - 10))
        strong = self.check_strong()
        self.lost, self.dup, self.per_region = lost, dup, per_region
        return strong

    def check_strong(self):
        v, m = self.violations, self.model
        pool = Pool()
        out = {}
        try:
            for name, s in m.strong.items():
                st, doc, err = pool.call(self.strong.port, "GET", "/counter/%s" % name,
                                         timeout=10.0)
                final = doc.get("value") if st == 200 and doc else None
                out[name] = final
                if final is None:
                    v.append("strong: %s: final read answered %s %s" % (name, st, doc or err))
                    continue
                now = time.monotonic()
                if final < s.acked:
                    v.append("strong lost: %s is %d, acknowledged %d (%d lost)"
                             % (name, final, s.acked, s.acked - final))
                elif final > s.acked + s.unanswered:
                    v.append("strong duplicated: %s is %d, acknowledged %d + unanswered %d"
                             % (name, final, s.acked, s.unanswered))
                values = [a[2] for a in s.answers]
                if len(values) != len(set(values)):
                    dupv = [x for x, k in collections.Counter(values).items() if k > 1]
                    v.append("strong: %s: %d values answered to two acknowledged increments "
                             "(e.g. %s)" % (name, len(dupv), dupv[:5]))
                # Reads never go backwards: a read sees at least every value that an
                # acknowledged increment or a read had answered before it started.
                done = sorted([(a[1], a[2], "increment") for a in s.answers] +
                              [(r[1], r[2], "read") for r in s.reads])
                reads = sorted(s.reads + [(now, now, final)])
                j, floor, what = 0, None, None
                backwards = 0
                for (start, end, value) in reads:
                    while j < len(done) and done[j][0] < start:
                        if floor is None or done[j][1] > floor:
                            floor, what = done[j][1], done[j][2]
                        j += 1
                    if floor is not None and value < floor:
                        backwards += 1
                        if backwards <= 3:
                            v.append("strong backwards: a read of %s answered %d after %s %d "
                                     "had been answered" % (name, value, "an increment's"
                                                            if what == "increment" else "a read of",
                                                            floor))
                if backwards > 3:
                    v.append("strong backwards: %d reads of %s in all" % (backwards, name))
        finally:
            pool.close()
        return out

    # ----------------------------------------------------------------- main

    def execute(self):
        o = self.o
        events = self.schedule()
        log("seed %d: %d s, %d clients, faults %s, client timeout %.2f s, gateway %d ms, "
            "%d faults scheduled" % (self.seed, o.duration_s, o.clients,
                                     ",".join(k for k in FAULT_KINDS if k in o.faults) or "none",
                                     o.client_timeout, o.gateway_timeout_ms, len(events)))
        self.setup()
        threads = [threading.Thread(target=self.client, args=(i,), daemon=True,
                                    name="client-%d" % i) for i in range(o.clients)]
        for th in threads:
            th.start()
        t0 = time.monotonic()
        self.inject(events)
        self.heal()
        self.stop_ops.set()
        for th in threads:
            th.join(o.op_budget_s + 2 * o.strong_timeout + 5)
            if th.is_alive():
                self.violations.append("client: %s still waiting 30 s after the run" % th.name)
        elapsed = time.monotonic() - t0
        self.heal()  # again: nothing must have broken while the clients finished
        self.resend_refused()
        if o.resolve:
            self.resolve_ambiguous()
        states, rounds, answers = self.sync_until_stable()
        strong = self.check(states, rounds, answers)
        for nd in self.nodes:
            rc = nd.terminate()
            if rc != 0:
                self.violations.append("shutdown: %s exited with status %s on SIGTERM (log %s)"
                                       % (nd.name, rc, nd.log_paths[-1]))
            for rep in nd.sanitizer_reports():
                self.violations.append("sanitizer: %s" % rep)
        self.summary(elapsed, rounds, strong)
        return not self.violations

    def summary(self, elapsed, rounds, strong):
        m = self.model
        acked = sum(t.acked_ops for t in m.tally.values())
        acked_amt = sum(t.acked for t in m.tally.values())
        amb = sum(t.ambiguous_ops for t in m.tally.values())
        amb_amt = sum(t.ambiguous for t in m.tally.values())
        resolved = sum(t.resolved for t in m.tally.values())
        dups = sum(t.duplicate_answers for t in m.tally.values())
        s_acked = sum(s.acked_ops for s in m.strong.values())
        s_un = sum(s.unanswered_ops for s in m.strong.values())
        s_nq = sum(s.no_quorum for s in m.strong.values())
        s_reads = sum(len(s.reads) for s in m.strong.values())
        faults = " ".join("%s=%d" % (k, self.faults[k]) for k in FAULT_KINDS if k in self.o.faults)
        regions = " ".join("%s=%d" % kv for kv in self.per_region.items())
        verdict = "OK" if not self.violations else "FAIL (%d violations)" % len(self.violations)
        print("chaos seed=%d %.0fs: ops %d (attempts %d) acknowledged %d (amount %d, %d answered "
              "duplicate) ambiguous %d (amount %d%s) | faults %s | lost %d duplicated %d | "
              "regions %s | strong acked %d unanswered %d (no_quorum %d) reads %d final %s | "
              "sync rounds %d | %s"
              % (self.seed, elapsed, m.ops, m.attempts, acked, acked_amt, dups, amb, amb_amt,
                 ", %d more resolved after the heal" % resolved if resolved else "",
                 faults or "none", self.lost, self.dup, regions, s_acked, s_un, s_nq, s_reads,
                 ",".join("%s=%s" % kv for kv in strong.items()) or "-", rounds, verdict),
              flush=True)
        if self.o.verbose or self.violations:
            top = ", ".join("%s x%d" % kv for kv in m.errors.most_common(8))
            print("  failed attempts: %s" % (top or "none"))
            for name, res in self.big:
                print("  overflow %s: %s" % (name, res))
            for r in self.refused:
                print("  refused-entries body to %s on %s answered %s" % (r[0], r[3], r[4]))
        for n, k in list(collections.Counter(self.notes).items())[:12]:
            print("  note: %s%s" % (n, " (x%d)" % k if k > 1 else ""))
        for x in self.violations[:40]:
            print("  VIOLATION %s" % x)
        if len(self.violations) > 40:
            print("  ... %d more violations" % (len(self.violations) - 40))


CI_CONF = os.path.join(os.path.dirname(os.path.abspath(__file__)), "ci.conf")


def ci_args():
    """The options of ci.conf, one a line, '#' comments."""
    out = []
    with open(CI_CONF) as f:
        for line in f:
            line = line.split("#", 1)[0].strip()
            if line:
                out += line.split(None, 1)
    return out


def parse_args(argv):
    if "--ci" in argv:
        argv = ci_args() + [a for a in argv if a != "--ci"]
    p = argparse.ArgumentParser(
        prog="tests/chaos/run",
        description="Seeded chaos checker of counterd: clients with timeouts and retries, "
                    "faults, then heal, sync and check exactly-once and convergence.",
        epilog="fault kinds:\n" + "\n".join("  %-12s %s" % (k, FAULT_HELP[k].replace("%%", "%"))
                                            for k in FAULT_KINDS),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ci", action="store_true",
                   help="the CI seed set: the options of tests/chaos/ci.conf first")
    p.add_argument("--seed", type=int, default=1, help="first seed (default 1)")
    p.add_argument("--seeds", type=int, default=1, help="number of seeds: seed, seed+1, ...")
    p.add_argument("--minutes", type=float, help="fault phase of each seed, in minutes")
    p.add_argument("--seconds", type=float, default=30, help="... or seconds (default 30)")
    p.add_argument("--faults", default=",".join(FAULT_KINDS),
                   help="comma-separated fault kinds (default: all); 'none' for none")
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--client-timeout", type=float, default=0.4,
                   help="seconds a client waits for an answer (default 0.4)")
    p.add_argument("--gateway-timeout-ms", type=int, default=1000,
                   help="the gateway's --upstream-timeout-ms (default 1000)")
    p.add_argument("--strong-timeout", type=float, default=3.0)
    p.add_argument("--no-retry-elsewhere", dest="retry_elsewhere", action="store_false",
                   help="retry a request sent straight to a region only on that region "
                        "(default: half the retries go to the gateway or another region)")
    p.add_argument("--direct-share", type=float, default=0.25,
                   help="share of increments sent straight to a region (default 0.25)")
    p.add_argument("--strong-share", type=float, default=0.1,
                   help="share of operations on the strong counter (default 0.1)")
    p.add_argument("--read-share", type=float, default=0.1)
    p.add_argument("--counters", type=int, default=8)
    p.add_argument("--resolve", action="store_true",
                   help="after the heal, send every given-up increment once more with its "
                        "token (through the gateway): a 200 makes it acknowledged, so the "
                        "counts must be exact")
    p.add_argument("--max-attempts", type=int, default=12)
    p.add_argument("--op-budget", dest="op_budget_s", type=float, default=10.0,
                   help="seconds a client retries one increment before giving up")
    p.add_argument("--fault-gap", dest="fault_gap_s", type=float, default=1.5,
                   help="mean seconds between faults (default 1.5)")
    p.add_argument("--sync-interval-ms", type=int, default=1000)
    p.add_argument("--fsync", default="everysec", choices=("always", "everysec", "no"))
    p.add_argument("--snapshot-bytes", type=int, default=1 << 20)
    p.add_argument("--disk-mb", type=int, default=64, help="size of each region's tmpfs")
    p.add_argument("--fold-after-ms", type=int, default=4000,
                   help="regions fold retired incarnations from full pulls begun this long "
                        "after their start (default 4000: longer than the 'delay' fault)")
    p.add_argument("--sync-rounds", type=int, default=15,
                   help="force-sync rounds at most after the heal (default 15)")
    p.add_argument("--bin", default=os.environ.get("COUNTERD_BIN") or
                   os.path.join(REPO_ROOT, "build", "counterd"))
    p.add_argument("--keep", action="store_true", help="keep logs and data of passing seeds")
    p.add_argument("-v", "--verbose", action="store_true")
    o = p.parse_args(argv)
    o.duration_s = o.minutes * 60 if o.minutes is not None else o.seconds
    kinds = [k.strip() for k in o.faults.split(",") if k.strip() and k.strip() != "none"]
    bad = [k for k in kinds if k not in FAULT_KINDS]
    if bad:
        p.error("unknown fault kind(s) %s; known: %s" % (",".join(bad), ",".join(FAULT_KINDS)))
    if "disk" in kinds and os.geteuid() != 0:
        print("chaos: 'disk' needs root (it mounts a tmpfs): left out", flush=True)
        kinds.remove("disk")
    o.faults = set(kinds)
    o.bin = os.path.abspath(o.bin)
    if not os.access(o.bin, os.X_OK):
        p.error("counterd binary not found: %s (build it, or set COUNTERD_BIN / --bin)" % o.bin)
    return o


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    o = parse_args(argv)
    if "disk" in o.faults and not os.environ.get("COUNTERD_CHAOS_MOUNT_NS") and \
            shutil.which("unshare") and subprocess.run(
                ["unshare", "--mount", "--propagation", "private", "true"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode == 0:
        # The tmpfs mounts live in a mount namespace of this process's own, so that they
        # vanish with it however it ends (a timeout's SIGKILL included). Where none can be
        # made private (a chroot whose root is no mount point), the checker unmounts them
        # itself, as it does at every heal.
        os.environ["COUNTERD_CHAOS_MOUNT_NS"] = "1"
        sys.stdout.flush()
        os.execvp("unshare", ["unshare", "--mount", "--propagation", "private",
                              sys.executable, os.path.abspath(sys.argv[0])] + argv)
    failed, errors = [], []

    def on_term(signum, frame):
        raise KeyboardInterrupt()

    signal.signal(signal.SIGTERM, on_term)
    for seed in range(o.seed, o.seed + o.seeds):
        run = Run(seed, o)
        ok = False
        try:
            ok = run.execute()
            if not ok:
                failed.append(seed)
        except SetupError as e:
            errors.append(seed)
            print("chaos seed=%d: setup failed: %s" % (seed, e), flush=True)
        except KeyboardInterrupt:
            print("chaos seed=%d: interrupted" % seed, flush=True)
            run.stop_ops.set()
            run.teardown(keep=True)
            return 130
        except Exception:
            errors.append(seed)
            print("chaos seed=%d: the checker failed:\n%s" % (seed, traceback.format_exc()),
                  flush=True)
        run.stop_ops.set()
        run.teardown(keep=o.keep or not ok)
    print("chaos: %d seeds from %d, %d failed%s%s" % (
        o.seeds, o.seed, len(failed), (": " + " ".join(map(str, failed))) if failed else "",
        ("; setup errors: " + " ".join(map(str, errors))) if errors else ""), flush=True)
    if errors:
        return 2
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
