"""
harness.py - start real counterd processes on loopback for the integration tests.

Like Redis' start_server: pick free loopback ports, start the binary with flags, send its
stderr to a log file in a temporary folder, wait until GET /health answers, and on the
way out stop it with SIGTERM and insist on a clean exit (status 0, no sanitizer report).
Servers are always stopped, even when a test fails, and every test has a hard time limit.

Python 3 standard library only. The binary comes from $COUNTERD_BIN (default
build/counterd-san under the repository root).
"""

import atexit
import contextlib
import http.client
import json
import os
import random
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest

from loopback import die_with_parent, port_free  # noqa: F401  (part of the harness API)

REPO_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BIN = os.environ.get("COUNTERD_BIN") or os.path.join(REPO_ROOT, "build", "counterd-san")
HOST = "127.0.0.1"
KEEP_LOGS = bool(os.environ.get("COUNTERD_KEEP_LOGS"))  # keep logs of clean runs too

START_TIMEOUT_S = 10.0  # until GET /health answers
STOP_TIMEOUT_S = 15.0  # SIGTERM to exit, LeakSanitizer included
SOCKET_TIMEOUT_S = 5.0  # any single read or write of a test client
TEST_TIMEOUT_S = 40  # hard limit of one test method (SIGALRM)
SUITE_TIMEOUT_S = int(os.environ.get("COUNTERD_SUITE_TIMEOUT_S") or 110)  # one test file
# (ctest's own limit is 120; a long run outside ctest may raise it)

SANITIZER_MARKS = ("ERROR: AddressSanitizer", "runtime error:", "LeakSanitizer")

_live_servers = []
_live_lock = threading.Lock()


class HarnessError(AssertionError):
    """A server could not be started or did not stop cleanly."""


# ---------------------------------------------------------------------------------------
# Ports and processes
# ---------------------------------------------------------------------------------------


def free_ports(n):
    """n distinct loopback TCP ports that were free a moment ago."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((HOST, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def log_tail(path, lines=60):
    try:
        with open(path, "r", errors="replace") as f:
            text = f.read()
    except OSError as e:
        return "<no log: %s>" % e
    tail = text.splitlines()[-lines:]
    return "\n".join(tail)


class Server:
    """One counterd process. Use start_server() or ServerTestCase.start_server()."""

    def __init__(self, args=(), port=None, name="counterd", tmpdir=None):
        self.port = port if port is not None else free_ports(1)[0]
        self.args = list(args)
        self.name = name
        self._own_tmp = None
        if tmpdir is None:
            self._own_tmp = tempfile.mkdtemp(prefix="counterd-it-")
            tmpdir = self._own_tmp
        self.tmpdir = tmpdir
        self.proc = None
        self.log_path = None
        self.runs = 0

    @property
    def url(self):
        return "http://%s:%d" % (HOST, self.port)

    def command(self):
        return [BIN, "--bind", HOST, "--port", str(self.port)] + self.args

    def start(self, wait=True):
        if not os.access(BIN, os.X_OK):
            raise HarnessError("counterd binary not found or not executable: %s "
                               "(set COUNTERD_BIN or build it: cmake -S . -B build && "
                               "cmake --build build -j2)" % BIN)
        self.runs += 1
        os.makedirs(self.tmpdir, exist_ok=True)
        self.log_path = os.path.join(self.tmpdir, "%s-%d.%d.log" % (self.name, self.port,
                                                                     self.runs))
        env = dict(os.environ)
        env.setdefault("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0")
        env.setdefault("UBSAN_OPTIONS", "print_stacktrace=1:halt_on_error=1")
        logf = open(self.log_path, "wb")
        try:
            self.proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL,
                                         stdout=logf, stderr=logf, env=env,
                                         cwd=self.tmpdir, preexec_fn=die_with_parent)
        finally:
            logf.close()
        with _live_lock:
            _live_servers.append(self)
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout=START_TIMEOUT_S):
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            rc = self.proc.poll()
            if rc is not None:
                self._forget()
                self.proc = None
                raise HarnessError("%s exited with status %s before answering /health\n"
                                   "command: %s\n--- log tail (%s) ---\n%s"
                                   % (self.name, rc, " ".join(self.command()),
                                      self.log_path, log_tail(self.log_path)))
            try:
                conn = http.client.HTTPConnection(HOST, self.port, timeout=1.0)
                try:
                    conn.request("GET", "/health")
                    resp = conn.getresponse()
                    resp.read()
                    if resp.status == 200:
                        return self
                    last = "status %d" % resp.status
                finally:
                    conn.close()
            except (OSError, http.client.HTTPException) as e:
                last = repr(e)
            time.sleep(0.05)
        self.kill()
        raise HarnessError("%s did not answer GET /health within %.0f s (last: %s)\n"
                           "--- log tail (%s) ---\n%s"
                           % (self.name, timeout, last, self.log_path,
                              log_tail(self.log_path)))

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def _forget(self):
        with _live_lock:
            if self in _live_servers:
                _live_servers.remove(self)

    def kill(self):
        """SIGKILL without checks (used on the way out of a broken run)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                pass
        self.proc = None
        self._forget()

    def stop(self, check=True):
        """SIGTERM, wait, then (check) assert exit status 0 and a log free of sanitizer
        reports. Safe to call twice."""
        if self.proc is None:
            return
        proc = self.proc
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
                self._forget()
                self.proc = None
                if check:
                    raise HarnessError("%s did not exit within %.0f s of SIGTERM (killed)\n"
                                       "--- log tail (%s) ---\n%s"
                                       % (self.name, STOP_TIMEOUT_S, self.log_path,
                                          log_tail(self.log_path)))
                return
        self._forget()
        self.proc = None
        if not check:
            return
        rc = proc.returncode
        with open(self.log_path, "r", errors="replace") as f:
            log = f.read()
        marks = [m for m in SANITIZER_MARKS if m in log]
        if rc != 0 or marks:
            raise HarnessError("%s (port %d) stopped badly: exit status %s%s\n"
                               "--- log tail (%s) ---\n%s"
                               % (self.name, self.port, rc,
                                  ", sanitizer report: %s" % ", ".join(marks) if marks else "",
                                  self.log_path, log_tail(self.log_path, 80)))
        if not KEEP_LOGS:  # a clean run leaves nothing behind; a bad one keeps its log
            with contextlib.suppress(OSError):
                os.remove(self.log_path)
            if self._own_tmp:
                with contextlib.suppress(OSError):
                    os.rmdir(self._own_tmp)

    def log_text(self):
        with open(self.log_path, "r", errors="replace") as f:
            return f.read()

    # Convenience: a fresh keep-alive client on this server.
    def client(self, timeout=SOCKET_TIMEOUT_S):
        return Client(self.port, timeout=timeout)

    def raw(self, timeout=SOCKET_TIMEOUT_S):
        return RawConn(self.port, timeout=timeout)


@contextlib.contextmanager
def start_server(args=(), port=None, name="counterd"):
    """with start_server([...flags]) as srv: ... ; stops and checks srv on the way out.
    When the body already failed, a bad stop is printed rather than hiding that failure."""
    srv = Server(args, port=port, name=name).start()
    failed = False
    try:
        yield srv
    except BaseException:
        failed = True
        raise
    finally:
        try:
            srv.stop()
        except HarnessError as e:
            if not failed:
                raise
            print("\n[harness] also: %s" % e, file=sys.stderr)


def start_all(servers):
    """Starts the servers at once and waits for all of them. On failure every started one
    is killed. Returns them."""
    try:
        for s in servers:
            s.start(wait=False)
        for s in servers:
            s.wait_ready()
    except BaseException:
        for s in servers:
            s.kill()
        raise
    return servers


def start_many(specs):
    """Starts several servers at once (spec: dict(args=..., port=..., name=...)) and waits
    for all of them. On failure every started one is killed."""
    return start_all([Server(**spec) for spec in specs])


def _kill_all():
    with _live_lock:
        servers = list(_live_servers)
    for s in servers:
        try:
            s.kill()
        except Exception:
            pass


atexit.register(_kill_all)


# ---------------------------------------------------------------------------------------
# Clients
# ---------------------------------------------------------------------------------------


class Response:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers  # dict, lower-case names
        self.body = body  # bytes

    @property
    def content_type(self):
        return self.headers.get("content-type", "")

    def text(self):
        return self.body.decode("utf-8", errors="replace")

    def json(self):
        try:
            return json.loads(self.body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as e:
            raise AssertionError("response body is not JSON (%s): status %d body %r"
                                 % (e, self.status, self.body[:500]))

    def __repr__(self):
        return "<Response %d %r>" % (self.status, self.body[:300])


class Client:
    """A keep-alive HTTP/1.1 client (http.client) with JSON helpers."""

    def __init__(self, port, timeout=SOCKET_TIMEOUT_S):
        self.port = port
        self.timeout = timeout
        self.conn = http.client.HTTPConnection(HOST, port, timeout=timeout)

    def close(self):
        self.conn.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def request(self, method, path, body=None, headers=None, raw_body=False):
        """body: None (no body), bytes (sent as is; also a str with raw_body=True),
        anything else (sent as JSON)."""
        hdrs = dict(headers or {})
        data = None
        if body is not None:
            if isinstance(body, bytes):
                data = body
            elif isinstance(body, str) and raw_body:
                data = body.encode("utf-8")
            else:
                data = json.dumps(body).encode("utf-8")
            hdrs.setdefault("Content-Type", "application/json")
        try:
            self.conn.request(method, path, body=data, headers=hdrs)
            resp = self.conn.getresponse()
            payload = resp.read()
        except (OSError, http.client.HTTPException):
            self.conn.close()
            raise
        headers_out = {k.lower(): v for k, v in resp.getheaders()}
        return Response(resp.status, headers_out, payload)

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def post(self, path, body=None, **kw):
        return self.request("POST", path, body=body, **kw)

    def get_json(self, path, status=200):
        r = self.get(path)
        assert_json_response(r, status, "GET %s" % path)
        return r.json()

    def post_json(self, path, body=None, status=200):
        r = self.post(path, body)
        assert_json_response(r, status, "POST %s %r" % (path, body))
        return r.json()


def assert_json_response(r, status, what):
    if r.status != status:
        raise AssertionError("%s: expected status %d, got %d, body %r"
                             % (what, status, r.status, r.body[:500]))
    if not r.content_type.startswith("application/json"):
        raise AssertionError("%s: expected Content-Type application/json, got %r"
                             % (what, r.content_type))


class RawConn:
    """A plain socket for malformed or hand-framed HTTP, with a response reader."""

    def __init__(self, port, timeout=SOCKET_TIMEOUT_S):
        self.sock = socket.create_connection((HOST, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        self.eof = False

    def close(self):
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def send(self, data):
        if isinstance(data, str):
            data = data.encode("latin-1")
        self.sock.sendall(data)

    def try_send(self, data):
        """Sends, tolerating a peer that already answered and closed."""
        try:
            self.send(data)
            return True
        except (BrokenPipeError, ConnectionResetError):
            return False

    def _fill(self):
        if self.eof:
            return False
        try:
            chunk = self.sock.recv(65536)
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            self.eof = True
            return False
        self.buf += chunk
        return True

    def _read_until(self, marker):
        while marker not in self.buf:
            if not self._fill():
                raise AssertionError("connection closed before %r; got %r"
                                     % (marker, self.buf[:300]))
        i = self.buf.index(marker) + len(marker)
        out, self.buf = self.buf[:i], self.buf[i:]
        return out

    def _read_exact(self, n):
        while len(self.buf) < n:
            if not self._fill():
                raise AssertionError("connection closed after %d of %d body bytes"
                                     % (len(self.buf), n))
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def read_response(self):
        """Reads one response (status line, headers, Content-Length or chunked body)."""
        head = self._read_until(b"\r\n\r\n").decode("latin-1")
        lines = head.split("\r\n")
        m = re.match(r"HTTP/1\.[01] (\d{3})(?: .*)?$", lines[0])
        if not m:
            raise AssertionError("bad status line %r" % lines[0])
        status = int(m.group(1))
        headers = {}
        for line in lines[1:]:
            if not line:
                continue
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if headers.get("transfer-encoding", "").lower() == "chunked":
            body = b""
            while True:
                size = int(self._read_until(b"\r\n").strip().split(b";")[0], 16)
                if size == 0:
                    self._read_until(b"\r\n")
                    break
                body += self._read_exact(size)
                self._read_exact(2)
        elif "content-length" in headers:
            body = self._read_exact(int(headers["content-length"]))
        else:
            while self._fill():
                pass
            body, self.buf = self.buf, b""
        return Response(status, headers, body)

    def readable(self, timeout):
        """True when bytes (or a close) are waiting within timeout."""
        if self.buf or self.eof:
            return True
        r, _, _ = select.select([self.sock], [], [], timeout)
        return bool(r)

    def closed_by_peer(self, timeout=2.0):
        """True when the server closes the connection within timeout and sends nothing
        more; raises if unexpected bytes arrive."""
        if self.eof:
            return True
        if self.buf:
            raise AssertionError("unexpected bytes after the response: %r" % self.buf[:200])
        old = self.sock.gettimeout()
        self.sock.settimeout(timeout)
        try:
            try:
                chunk = self.sock.recv(4096)
            except ConnectionResetError:
                chunk = b""
            except socket.timeout:
                return False
        finally:
            self.sock.settimeout(old)
        if chunk:
            raise AssertionError("unexpected bytes instead of a close: %r" % chunk[:200])
        self.eof = True
        return True


def http_request_bytes(method, path, body=None, headers=None, host="localhost"):
    """A well-formed HTTP/1.1 request as bytes (body: bytes, str or JSON-able)."""
    if body is not None and not isinstance(body, (bytes, str)):
        body = json.dumps(body)
    if isinstance(body, str):
        body = body.encode("utf-8")
    lines = ["%s %s HTTP/1.1" % (method, path), "Host: %s" % host]
    for k, v in (headers or {}).items():
        lines.append("%s: %s" % (k, v))
    if body is not None:
        if not any(k.lower() == "content-type" for k in (headers or {})):
            lines.append("Content-Type: application/json")
        lines.append("Content-Length: %d" % len(body))
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b"")


# ---------------------------------------------------------------------------------------
# Metrics
# ---------------------------------------------------------------------------------------

_SAMPLE_RE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)(\s+-?\d+)?$')
_LABEL_RE = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"\s*(,|$)')


def parse_labels(s):
    labels = {}
    pos = 0
    while pos < len(s):
        m = _LABEL_RE.match(s, pos)
        if not m or m.end() == pos:
            raise AssertionError("bad label set {%s} at %d" % (s, pos))
        labels[m.group(1)] = m.group(2)
        pos = m.end()
    return labels


def parse_metrics(text):
    """Parses the Prometheus text format strictly enough to catch broken output.
    Returns a list of (name, labels dict, float value)."""
    samples = []
    typed = {}
    for n, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        if line.startswith("#"):
            parts = line.split(None, 3)
            if len(parts) >= 2 and parts[1] == "TYPE":
                if len(parts) != 4 or parts[3] not in ("counter", "gauge", "histogram",
                                                        "summary", "untyped"):
                    raise AssertionError("line %d: bad TYPE line %r" % (n, line))
                if parts[2] in typed:
                    raise AssertionError("line %d: second TYPE for %s" % (n, parts[2]))
                typed[parts[2]] = parts[3]
            continue
        m = _SAMPLE_RE.match(line)
        if not m:
            raise AssertionError("line %d: not a metric sample: %r" % (n, line))
        labels = parse_labels(m.group(3) or "")
        try:
            value = float(m.group(4))
        except ValueError:
            raise AssertionError("line %d: bad value %r" % (n, m.group(4)))
        samples.append((m.group(1), labels, value))
    return samples


def metric_values(samples, name, **labels):
    return [v for (n, l, v) in samples
            if n == name and all(l.get(k) == want for k, want in labels.items())]


# `promtool check metrics` (Debian's prometheus 2.42, i.e. client_golang's promlint) lints
# names. Two of its rules look at the name alone, whatever TYPE, HELP or unit the family
# declares, and API.md fixes names that break them; these exact problems are the only
# ones /metrics may show. (The "_count" suffix rule, which counter_local_count and
# coordinator_*_count would break, exempts untyped families: core/obs/metrics.c declares
# those gauges untyped, so that rule is not in this list.)
PROMTOOL_NAME_LINT = {
    ("counter_sync_lag_ms", "metric names should not contain abbreviated units"),
    ("consistent_counter_value", "metric name should not include type 'counter'"),
    ("consistent_counter_increments_total", "metric name should not include type 'counter'"),
    ("consistent_counter_increment_latency_seconds",
     "metric name should not include type 'counter'"),
    ("consistent_counter_lock_wait_seconds", "metric name should not include type 'counter'"),
    # The counter lifecycle's names, fixed by the contract (API.md).
    ("counterd_counter_clears_total", "metric name should not include type 'counter'"),
    ("counterd_counter_deletes_total", "metric name should not include type 'counter'"),
}


def promtool_path():
    return shutil.which("promtool")


def promtool_check(text):
    """Runs `promtool check metrics` on text (str or bytes).
    Returns (returncode, output, problems): problems are the lint lines as (metric, text)
    pairs, each either in PROMTOOL_NAME_LINT or a fault of the server. promtool exits 0
    when clean, 3 when there are only lint problems, 1 when the text does not parse."""
    if isinstance(text, str):
        text = text.encode("utf-8")
    p = subprocess.run([promtool_path(), "check", "metrics"], input=text,
                       capture_output=True, timeout=20)
    out = (p.stdout + p.stderr).decode(errors="replace")
    problems = []
    for line in out.splitlines():
        if line.strip():
            name, _, what = line.partition(" ")
            problems.append((name, what.strip()))
    return p.returncode, out, problems


def assert_promtool_clean(test, text, what):
    """Fails unless promtool parses text and finds nothing but PROMTOOL_NAME_LINT's
    problems. Returns the tolerated ones."""
    rc, out, problems = promtool_check(text)
    test.assertIn(rc, (0, 3), "promtool check metrics (%s) could not parse it:\n%s"
                  % (what, out))
    other = [p for p in problems if p not in PROMTOOL_NAME_LINT]
    test.assertEqual(other, [], "promtool check metrics (%s):\n%s" % (what, out))
    test.assertEqual(rc == 0, not problems, "promtool (%s) exit status %d:\n%s"
                     % (what, rc, out))
    return [p for p in problems if p in PROMTOOL_NAME_LINT]


# ---------------------------------------------------------------------------------------
# Test case base: servers stopped and checked as cleanups, hard time limits
# ---------------------------------------------------------------------------------------


def canon(obj):
    """JSON text with sorted keys: 7 and 7.0, 1 and true compare different."""
    return json.dumps(obj, sort_keys=True, indent=1, ensure_ascii=False)


class _TestTimeout(AssertionError):
    pass


def _on_alarm(signum, frame):
    raise _TestTimeout("test exceeded its hard limit of %d s" % TEST_TIMEOUT_S)



def batch_item(name, amount=None, token=None):
    """One item of a POST /increments body; fields left out when None."""
    d = {"counter_name": name}
    if amount is not None:
        d["amount"] = amount
    if token is not None:
        d["idempotency_token"] = token
    return d


class ServerTestCase(unittest.TestCase):
    """Servers started with self.start_server() / cls.start_class_server() are stopped
    and checked (exit 0, no sanitizer report) even when the test fails; a failed check
    is reported as its own error."""

    maxDiff = None

    def setUp(self):
        signal.signal(signal.SIGALRM, _on_alarm)
        signal.alarm(TEST_TIMEOUT_S)
        self.addCleanup(signal.alarm, 0)

    def start_server(self, args=(), port=None, name="counterd"):
        srv = Server(args, port=port, name=name)
        self.addCleanup(srv.stop)
        return srv.start()

    def start_servers(self, specs):
        servers = start_many(specs)
        for s in servers:
            self.addCleanup(s.stop)
        return servers

    @classmethod
    def start_class_server(cls, args=(), port=None, name="counterd"):
        srv = Server(args, port=port, name=name)
        cls.addClassCleanup(srv.stop)
        return srv.start()

    # Assertions on JSON bodies.

    def assertJsonEqual(self, got, expected, msg=None):
        self.assertEqual(canon(got), canon(expected), msg)

    def assertIsCount(self, v, what="value"):
        self.assertTrue(type(v) is int, "%s must be a JSON integer, got %r" % (what, v))

    def assertError(self, r, status, codes, what="", detail_contains=None):
        """r is a Response; codes is one code or a tuple of acceptable codes."""
        if isinstance(codes, str):
            codes = (codes,)
        label = what or "request"
        self.assertEqual(r.status, status, "%s: expected status %d, got %d, body %r"
                         % (label, status, r.status, r.body[:300]))
        self.assertTrue(r.content_type.startswith("application/json"),
                        "%s: error body must be JSON, Content-Type %r" % (label, r.content_type))
        body = r.json()
        self.assertIsInstance(body, dict, "%s: error body %r" % (label, body))
        self.assertIn(body.get("error"), codes, "%s: error code %r, expected %s; body %r"
                      % (label, body.get("error"), " or ".join(codes), body))
        self.assertIsInstance(body.get("detail"), str, "%s: detail %r" % (label, body))
        self.assertTrue(body["detail"].strip(), "%s: empty detail" % label)
        if status != 503:
            self.assertEqual(set(body), {"detail", "error"},
                             "%s: error body must be exactly {detail, error}: %r" % (label, body))
        if detail_contains is not None:
            self.assertIn(detail_contains, body["detail"],
                          "%s: detail should mention %r: %r" % (label, detail_contains, body))
        return body


# ---------------------------------------------------------------------------------------
# The lab's topology: region nodes, a coordinator and a gateway (added for 65-75)
# ---------------------------------------------------------------------------------------

LAB_REGIONS = (("us-east", "us-east-1"), ("us-west", "us-west-1"), ("eu-west", "eu-west-1"))


@contextlib.contextmanager
def environ(**kv):
    """Sets environment variables around a Server.start() (the child copies os.environ)."""
    old = {k: os.environ.get(k) for k in kv}
    os.environ.update({k: str(v) for k, v in kv.items()})
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


class Topology:
    """Region nodes (each one the others' peer), a coordinator (--role coordinator
    --regions ...) and a gateway (--role gateway --regions ... --coordinator ...) on free
    loopback ports. Nothing runs until start().

    region_args: extra flags of every region, or a function (index) -> flags.
    region_env: {index: {VAR: value}} set while that region starts (first start only).
    strong: also start the strong counter (--role strong, replicas on the regions) as
    .strong, with --allow-volatile-replicas unless every region has a --data-dir; the
    gateway is told its URL either way.
    Each region Server gets .region and .node_id attributes."""

    def __init__(self, region_args=(), coordinator_args=(), gateway_args=(),
                 sync_interval_ms=60000, regions=LAB_REGIONS, region_env=None,
                 strong=False, strong_args=()):
        n = len(regions)
        ports = free_ports(n + 3)
        self.region_env = dict(region_env or {})
        self.regions = []
        for i, (region, node_id) in enumerate(regions):
            peers = ",".join("http://%s:%d" % (HOST, ports[j]) for j in range(n) if j != i)
            extra = region_args(i) if callable(region_args) else region_args
            srv = Server(["--region", region, "--node-id", node_id, "--peers", peers,
                          "--sync-interval-ms", str(sync_interval_ms),
                          "--sync-timeout-ms", "2000"] + list(extra),
                         port=ports[i], name=node_id)
            srv.region, srv.node_id = region, node_id
            self.regions.append(srv)
        self.endpoints = ",".join("%s=%s" % (r.region, r.url) for r in self.regions)
        self.coordinator = Server(["--role", "coordinator", "--regions", self.endpoints] +
                                  list(coordinator_args), port=ports[n], name="coordinator")
        self.strong = None
        if strong:
            # Replicas without a data dir keep nothing: the strong counter refuses them
            # unless told; a test that does not look at durability tells it.
            volatile = not all("--data-dir" in (region_args(i) if callable(region_args)
                                                else region_args) or
                               "DATA_DIR" in self.region_env.get(i, {}) for i in range(n))
            allow = ["--allow-volatile-replicas"] if volatile else []
            self.strong = Server(["--role", "strong", "--region", regions[0][0], "--regions",
                                  self.endpoints] + allow + list(strong_args),
                                 port=ports[n + 2], name="strong")
        self.gateway = Server(["--role", "gateway", "--regions", self.endpoints,
                               "--coordinator", "http://%s:%d" % (HOST, ports[n]),
                               "--strong", "http://%s:%d" % (HOST, ports[n + 2])] +
                              list(gateway_args), port=ports[n + 1], name="gateway")

    @property
    def servers(self):
        extra = [self.strong] if self.strong else []
        return self.regions + [self.coordinator] + extra + [self.gateway]

    def region(self, name):
        for r in self.regions:
            if r.region == name:
                return r
        raise KeyError(name)

    def start(self, add_cleanup):
        """Starts every server and waits for all; add_cleanup(srv.stop) is called for each
        (regions first, so that a LIFO cleanup stops the gateway first). On a failed start
        every started one is killed."""
        try:
            for i, s in enumerate(self.servers):
                with environ(**self.region_env.get(i, {})):
                    s.start(wait=False)
            for s in self.servers:
                s.wait_ready()
        except BaseException:
            for s in self.servers:
                s.kill()
            raise
        for s in self.servers:
            add_cleanup(s.stop)
        return self


class IncrementLoad:
    """Load through one port: `threads` threads, each with its own keep-alive connection,
    send POST `path` with `body` back to back (one request in flight per connection) until
    `total` requests were sent (None: until stop()). Per thread it counts the 2xx answers
    (ok[t]) and keeps their times (ok_times[t], monotonic); every other outcome goes to
    `problems` as (time, thread, status or None, body or exception text). A request whose
    connection broke before its answer is recorded with status None (its outcome is
    unknown) and the thread reconnects."""

    def __init__(self, port, body, threads=32, total=None, path="/api/increment",
                 timeout=SOCKET_TIMEOUT_S):
        if not isinstance(body, bytes):
            body = json.dumps(body).encode("utf-8")
        self.port, self.total, self.timeout = port, total, timeout
        self.request = ("POST %s HTTP/1.1\r\nHost: %s:%d\r\nContent-Type: application/json\r\n"
                        "Content-Length: %d\r\n\r\n" % (path, HOST, port, len(body))
                        ).encode("latin-1") + body
        self.nthreads = threads
        self.ok = [0] * threads
        self.ok_times = [[] for _ in range(threads)]
        self.problems = []
        self.sent = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = []

    def _ticket(self):
        with self._lock:
            if self._stop.is_set() or (self.total is not None and self.sent >= self.total):
                return False
            self.sent += 1
            return True

    def _connect(self):
        s = socket.create_connection((HOST, self.port), timeout=self.timeout)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return s

    @staticmethod
    def _read_answer(sock, buf):
        """(status, body, keep_alive, rest of buf)."""
        while b"\r\n\r\n" not in buf:
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed before the answer's head")
            buf += chunk
        head, _, buf = buf.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        length, keep = 0, True
        for line in lines[1:]:
            k, _, v = line.partition(":")
            k = k.strip().lower()
            if k == "content-length":
                length = int(v.strip())
            elif k == "connection" and v.strip().lower() == "close":
                keep = False
            elif k == "transfer-encoding":
                raise ConnectionError("unexpected Transfer-Encoding: %s" % v.strip())
        while len(buf) < length:
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed in the answer's body")
            buf += chunk
        return status, buf[:length], keep, buf[length:]

    def _run(self, t):
        sock, buf = None, b""
        try:
            while self._ticket():
                try:
                    if sock is None:
                        sock, buf = self._connect(), b""
                    sock.sendall(self.request)
                    status, body, keep, buf = self._read_answer(sock, buf)
                except (OSError, ValueError, IndexError) as e:
                    self.problems.append((time.monotonic(), t, None, repr(e)))
                    if sock is not None:
                        sock.close()
                    sock = None
                    time.sleep(0.01)
                    continue
                if 200 <= status < 300:
                    self.ok[t] += 1
                    self.ok_times[t].append(time.monotonic())
                else:
                    self.problems.append((time.monotonic(), t, status,
                                          body[:300].decode("utf-8", "replace")))
                if not keep:
                    sock.close()
                    sock = None
        finally:
            if sock is not None:
                sock.close()

    def start(self):
        for t in range(self.nthreads):
            th = threading.Thread(target=self._run, args=(t,), name="load-%d" % t, daemon=True)
            th.start()
            self._threads.append(th)
        return self

    def stop(self):
        self._stop.set()

    def join(self, timeout):
        """Waits for every thread (at most timeout seconds in all); True when all ended."""
        deadline = time.monotonic() + timeout
        for th in self._threads:
            th.join(max(0.0, deadline - time.monotonic()))
        return not any(th.is_alive() for th in self._threads)

    def ok_total(self):
        return sum(self.ok)

    def ok_after(self, t0):
        return sum(1 for times in self.ok_times for x in times if x > t0)

    def unknown(self):
        """Requests whose outcome is unknown (no answer)."""
        return [p for p in self.problems if p[2] is None]


def _suite_watchdog():
    time.sleep(SUITE_TIMEOUT_S)
    sys.stderr.write("\n[harness] suite exceeded its hard limit of %d s: killing servers\n"
                     % SUITE_TIMEOUT_S)
    sys.stderr.flush()
    _kill_all()
    os._exit(3)


# Importing the harness arms the suite-wide hard limit: a hung test file cannot outlive it.
threading.Thread(target=_suite_watchdog, name="suite-watchdog", daemon=True).start()


# ---------------------------------------------------------------------------------------
# Labs started by ./scripts/lab (80, 88, 90, tests/ecosystem)
# ---------------------------------------------------------------------------------------

# Port offsets of a lab from its base: coordinator, regions, strong, gateway, Prometheus.
LAB_OFFSETS = (0, 1, 2, 3, 4, 80, 1090)


def sync_state(srv):
    """({counter: {replica id: increments}}, {counter: set of folded replica ids}) as srv
    holds them: its answers to empty /sync pushes in counterd's format (a push that says
    its incarnation; without one, a node answers as the original lab's region, with each
    node's incarnations summed), full state, paged."""
    counts, folded = {}, {}
    since = None
    with srv.client() as c:
        for _ in range(1000):
            body = {"node_id": "it-reader", "incarnation": "0", "counts": {}, "decrements": {}}
            if since:
                body["since"] = since
            r = c.post("/sync", body)
            assert_json_response(r, 200, "POST /sync on %s" % srv.name)
            j = r.json()
            for name, reps in j["counts"].items():
                counts.setdefault(name, {}).update(reps)
            for name, ids in j.get("folded", {}).items():
                folded.setdefault(name, set()).update(ids)
            since = j.get("cursor")
            if not j.get("more"):
                return counts, folded
    raise HarnessError("the /sync pages of %s never ended" % srv.name)


def wait_gateway_names_homes(gw, regions=("us-east", "us-west", "eu-west"), timeout=10):
    """Until the gateway (a Client) has learned the regions' node ids (it asks their
    /health as it starts), the tokens it makes name no home region, so what it forwards is
    held pending by a hashed home: exact, but not in the entry of the region it went to.
    Waits until an increment of a counter of its own to each region is applied there."""
    deadline = time.monotonic() + timeout
    for region in regions:
        while "pending" in gw.post_json("/api/increment", {"counter_name": "gateway-warm-up",
                                                           "routing": region}):
            if time.monotonic() > deadline:
                raise HarnessError("the gateway never made a token naming %s" % region)
            time.sleep(0.05)


def free_lab_base(avoid=()):
    """A base port for ./scripts/lab --base-port whose every lab port is free, all below
    the ephemeral range (32768+), where other servers' and the lab's own outgoing
    connections take theirs; .lab/<base> must not exist yet."""
    rng = random.SystemRandom()
    for _ in range(200):
        base = rng.randrange(20000, 32768 - max(LAB_OFFSETS), 10)
        if base in avoid or os.path.exists(os.path.join(REPO_ROOT, ".lab", str(base))):
            continue
        if all(port_free(base + off) for off in LAB_OFFSETS):
            return base
    raise HarnessError("no free lab base port (base..base+4, base+80, base+1090) found")


def read_text(path):
    with open(path) as f:
        return f.read()


def write_atomic(path, text):
    """Replaces the file in one step, so that a watcher (--watch) never reads half of it."""
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


LAB_SCRIPT = os.path.join(REPO_ROOT, "scripts", "lab")


def lab_env(drop=(), **extra):
    """The environment a test's ./scripts/lab runs with: this build's binary, none of the
    caller's settings that would change what the test expects (fsync policy, admin token,
    log level, and the names in drop), the sanitizers' options as the suite sets them, and
    extra on top."""
    env = dict(os.environ, COUNTERD_BIN=BIN)
    for k in ("FSYNC_POLICY", "COUNTERD_ADMIN_TOKEN", "COUNTERD_LOG") + tuple(drop):
        env.pop(k, None)
    env.setdefault("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0")
    env.setdefault("UBSAN_OPTIONS", "print_stacktrace=1:halt_on_error=1")
    env.update(extra)
    return env


def run_lab(base, env, *args, timeout=30):
    """./scripts/lab ARGS --base-port BASE: (exit code, stdout, stderr)."""
    p = subprocess.run([LAB_SCRIPT] + list(args) + ["--base-port", str(base)], env=env,
                       stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout)
    return p.returncode, p.stdout.decode(errors="replace"), p.stderr.decode(errors="replace")


class HardLimit(AssertionError):
    pass


def arm_hard_limit(seconds, what="test"):
    """Raises HardLimit in the main thread once seconds have passed (SIGALRM), so a test
    that drives a whole lab cannot outlive its budget. @return the function that disarms it."""
    def on_alarm(signum, frame):
        raise HardLimit("%s exceeded its hard limit of %d s" % (what, seconds))
    signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(seconds)
    return lambda: signal.alarm(0)


class LabGuard:
    """A lab started by ./scripts/lab, registered with the harness' list of live servers
    so that the suite watchdog (and atexit) also brings it down."""

    def __init__(self, lab_script, base, env):
        self.lab_script, self.base, self.env = lab_script, base, env
        with _live_lock:
            _live_servers.append(self)

    def kill(self):
        subprocess.run([self.lab_script, "down", "--base-port", str(self.base)], env=self.env,
                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, timeout=40)

    def forget(self):
        with _live_lock:
            if self in _live_servers:
                _live_servers.remove(self)


def line_of(text, fragment):
    """The 1-based line of the first line of text containing fragment."""
    for n, line in enumerate(text.split("\n"), 1):
        if fragment in line:
            return n
    raise AssertionError("%r not in the file" % fragment)
