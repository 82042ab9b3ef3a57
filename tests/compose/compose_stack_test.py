"""
compose_stack_test.py - docker-compose.yml run for real, by podman and podman-compose
(Debian's packages; no Docker engine runs on these machines), label `compose`.

  base image     the fresh Debian 12 root of tests/fresh/rootfs.sh (debootstrap, cached),
                 imported into podman and tagged debian:12, the Dockerfile's FROM
  counterd       `podman build` of the Dockerfile as it is
  stack          `podman-compose up` of docker-compose.yml with tests/compose/
                 podman-override.yml (Prometheus from Debian's package); Grafana, Jaeger and
                 k6 have no Debian package and are left out (tests/ecosystem checks them)
  runbook        demos/runbook.sh against the published ports (8000-8004, 8080, 9090)
  prometheus     scrapes every counterd container (up == 1 for each of the six jobs)
  kill/restart   a region container killed and started again keeps its counts (volume)
  new address    a region container recreated with another address: the gateway and the
                 coordinator reach it without a restart, replication too
  etcd profile   three etcd members and the etcd strong roles: a leader, exactly-once
                 strong changes and linearizable reads through any role

Podman's settings come from tests/compose/containers.conf (CONTAINERS_CONF) and its
storage is its own (CONTAINERS_STORAGE_CONF, under /var/cache/counterd/podman, kept between
runs so layers are reused); the machine's own podman configuration is not read or changed.
Needs root and the published ports free; everything it starts is removed at the end
(`podman-compose down -v`, the network, the placeholder container).
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
PROJECT = "counterdtest"
NETWORK = PROJECT + "_default"
CACHE = os.environ.get("COUNTERD_PODMAN_CACHE", "/var/cache/counterd/podman")
COUNTERD = {  # service -> published port
    "lab34-counter-us-east": 8001, "lab34-counter-us-west": 8002,
    "lab34-counter-eu-west": 8003, "lab34-coordinator": 8000,
    "lab34-counter-consistent": 8004, "lab34-gateway": 8080,
}
SERVICES = list(COUNTERD) + ["lab34-prometheus"]
PORTS = list(COUNTERD.values()) + [9090]
TIME_LIMIT_S = 900


def log(msg):
    print("compose [%5.1fs] %s" % (time.monotonic() - T0, msg), flush=True)


T0 = time.monotonic()


def podman_env():
    env = dict(os.environ)
    for k in list(env):
        if k.startswith(("COUNTERD_", "FSYNC", "SYNC_INTERVAL")):
            del env[k]
    env["CONTAINERS_CONF"] = os.path.join(HERE, "containers.conf")
    env["CONTAINERS_STORAGE_CONF"] = STORAGE_CONF
    return env


def run(args, timeout=600, check=True, quiet=False):
    r = subprocess.run(args, cwd=REPO, env=podman_env(), capture_output=True, text=True,
                       timeout=timeout)
    if check and r.returncode != 0:
        raise AssertionError("%s exited with %d\n%s\n%s" % (" ".join(args), r.returncode,
                                                           r.stdout[-3000:], r.stderr[-3000:]))
    if not quiet and r.returncode != 0:
        log("%s exited with %d: %s" % (args[:3], r.returncode, r.stderr.strip()[-300:]))
    return r


def compose(*args, timeout=600, check=True):
    return run(["podman-compose", "-p", PROJECT, "-f", "docker-compose.yml",
                "-f", "tests/compose/podman-override.yml"] + list(args),
               timeout=timeout, check=check)


def http(method, port, path, body=None, timeout=5):
    """(status, parsed JSON or text) from 127.0.0.1:port; (0, error) when nothing answers."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request("http://127.0.0.1:%d%s" % (port, path), data=data,
                                 method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            text = resp.read().decode()
            status = resp.status
    except urllib.error.HTTPError as e:
        text, status = e.read().decode(), e.code
    except (OSError, ValueError) as e:
        return 0, str(e)
    try:
        return status, json.loads(text)
    except ValueError:
        return status, text


def wait_for(what, pred, timeout):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = pred()
        if last and last[0]:
            return last[1]
        time.sleep(0.5)
    raise AssertionError("%s: not within %d s (last: %r)" % (what, timeout, last))


def healthy(port):
    def pred():
        st, body = http("GET", port, "/health", timeout=2)
        return (st == 200 and isinstance(body, dict) and body.get("status") == "ok", body)
    return pred


def container_of(service):
    r = run(["podman", "ps", "-a", "--filter", "label=com.docker.compose.service=" + service,
             "--filter", "label=io.podman.compose.project=" + PROJECT, "--format", "{{.Names}}"])
    names = r.stdout.split()
    if len(names) != 1:
        raise AssertionError("service %s has containers %r" % (service, names))
    return names[0]


def address_of(container):
    r = run(["podman", "inspect", container, "--format",
             "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}"])
    return r.stdout.strip()


def port_free(port):
    import socket
    s = socket.socket()
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def region_count(port, name):
    st, body = http("GET", port, "/counter/" + name)
    if st != 200:
        raise AssertionError("GET /counter/%s on %d: %d %r" % (name, port, st, body))
    return body["total_count"]


def storage_conf():
    """A storage.conf of the test's own (its images stay cached between runs)."""
    os.makedirs(CACHE, exist_ok=True)
    path = os.path.join(CACHE, "storage.conf")
    text = ('[storage]\ndriver = "overlay"\ngraphroot = "%s/storage"\n'
            'runroot = "/run/counterd-podman"\n' % CACHE)
    if not os.path.exists(path) or open(path).read() != text:
        with open(path, "w") as f:
            f.write(text)
    return path


STORAGE_CONF = storage_conf() if os.geteuid() == 0 else ""


class ComposeStack(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        if os.geteuid() != 0:
            raise unittest.SkipTest("podman runs the stack as root here")
        for tool in ("podman", "podman-compose", "runc", "debootstrap"):
            if not shutil.which(tool) and not os.path.exists("/usr/sbin/" + tool):
                raise AssertionError("%s is missing: ./scripts/setup --test installs it" % tool)
        busy = [p for p in PORTS if not port_free(p)]
        if busy:
            raise AssertionError("the compose file publishes ports %r, and %r are in use"
                                 % (PORTS, busy))
        cls.cleanup()
        cls.base_image()
        log("podman build -t counterd:latest . (the Dockerfile as it is)")
        run(["podman", "build", "-t", "counterd:latest", "."], timeout=900)
        log("podman-compose build lab34-prometheus (Debian's prometheus)")
        compose("build", "lab34-prometheus", timeout=600)
        log("podman-compose up -d " + " ".join(SERVICES))
        compose("up", "-d", "--no-build", *SERVICES, timeout=300)
        for service, port in COUNTERD.items():
            wait_for(service + " /health on %d" % port, healthy(port), 90)
        log("every counterd service answers /health")

    @classmethod
    def tearDownClass(cls):
        if os.geteuid() == 0:
            cls.cleanup()

    @classmethod
    def cleanup(cls):
        run(["podman", "rm", "-f", PROJECT + "_placeholder"], check=False, quiet=True)
        compose("down", "-v", timeout=300, check=False)
        run(["podman", "network", "rm", "-f", NETWORK], check=False, quiet=True)
        r = run(["podman", "volume", "ls", "-q", "--filter",
                 "label=io.podman.compose.project=" + PROJECT], check=False, quiet=True)
        for v in r.stdout.split():
            run(["podman", "volume", "rm", "-f", v], check=False, quiet=True)

    @classmethod
    def base_image(cls):
        """debian:12 from the fresh root's tarball, imported again when the tarball changes."""
        tarball = subprocess.run([os.path.join(REPO, "tests", "fresh", "rootfs.sh")],
                                 capture_output=True, text=True, timeout=1200)
        if tarball.returncode != 0:
            raise AssertionError("tests/fresh/rootfs.sh failed:\n" + tarball.stderr[-3000:])
        path = tarball.stdout.strip().splitlines()[-1]
        stamp = os.path.basename(path)
        r = run(["podman", "image", "inspect", "docker.io/library/debian:12", "--format",
                 '{{index .Labels "counterd.rootfs"}}'], check=False, quiet=True)
        if r.returncode == 0 and r.stdout.strip() == stamp:
            log("base image debian:12 is the fresh root %s" % stamp)
            return
        log("podman import %s as debian:12" % path)
        run(["podman", "import", "--change", "LABEL counterd.rootfs=" + stamp,
             "--change", "CMD [\"/bin/bash\"]", path, "docker.io/library/debian:12"],
            timeout=600)

    def test_1_runbook(self):
        """Every step of the runbook (parts 2-7), curl commands as written, on the
        published ports."""
        log("demos/runbook.sh against the published ports")
        r = subprocess.run([os.path.join(REPO, "demos", "runbook.sh")], cwd=REPO,
                           capture_output=True, text=True, timeout=300,
                           env={k: v for k, v in os.environ.items()
                                if not k.startswith(("COUNTERD_", "BASE_PORT"))})
        tail = r.stdout.strip().splitlines()[-1:] or [""]
        log("runbook: %s" % tail[0])
        self.assertEqual(r.returncode, 0, "runbook failed:\n%s\n%s" % (r.stdout[-6000:],
                                                                      r.stderr[-2000:]))

    def test_2_prometheus_scrapes_every_container(self):
        want = {"lab34-%s:%d" % (s[len("lab34-"):], p) for s, p in COUNTERD.items()}

        def pred():
            st, body = http("GET", 9090, "/api/v1/targets?state=active")
            if st != 200:
                return (False, body)
            health = {t["labels"].get("instance"): t.get("health")
                      for t in body["data"]["activeTargets"]}
            return (all(health.get(i) == "up" for i in want), health)
        health = wait_for("Prometheus scraping every counterd container", pred, 90)
        log("Prometheus targets: %r" % health)
        st, body = http("GET", 9090, "/api/v1/query?query=count(up%3D%3D1)")
        self.assertEqual(st, 200, body)
        self.assertGreaterEqual(int(body["data"]["result"][0]["value"][1]), len(COUNTERD))

    def test_3_region_killed_and_restarted_keeps_its_counts(self):
        name = "compose-kill"
        for _ in range(7):
            st, body = http("POST", 8001, "/increment", {"counter_name": name, "amount": 3})
            self.assertEqual(st, 200, body)
        before = region_count(8001, name)
        self.assertGreaterEqual(before, 21)
        c = container_of("lab34-counter-us-east")
        log("podman kill %s, then podman start" % c)
        run(["podman", "kill", c])
        run(["podman", "start", c])
        wait_for("us-east healthy after its restart", healthy(8001), 60)
        self.assertEqual(region_count(8001, name), before)

    def test_4_region_recreated_with_a_new_address_is_followed(self):
        service = "lab34-counter-us-west"
        old = container_of(service)
        old_addr = address_of(old)
        name = "compose-moved"
        st, body = http("POST", 8002, "/increment", {"counter_name": name, "amount": 5})
        self.assertEqual(st, 200, body)
        log("podman rm -f %s (address %s); a placeholder takes the address" % (old, old_addr))
        run(["podman", "rm", "-f", old])
        run(["podman", "run", "-d", "--name", PROJECT + "_placeholder", "--network", NETWORK,
             "--ip", old_addr, "docker.io/library/debian:12", "sleep", "600"])
        compose("up", "-d", "--no-build", service, timeout=120)
        new = container_of(service)
        new_addr = address_of(new)
        log("%s recreated as %s at %s" % (service, new, new_addr))
        self.assertNotEqual(new_addr, old_addr)
        wait_for("us-west healthy again", healthy(8002), 60)
        self.assertEqual(region_count(8002, name), 5, "the volume kept us-west's counts")

        def gateway_reaches_us_west():
            st, body = http("POST", 8080, "/api/increment",
                            {"counter_name": name, "amount": 1, "routing": "us-west"})
            return (st == 200 and isinstance(body, dict) and body.get("region") == "us-west",
                    (st, body))
        ans = wait_for("the gateway routing to the recreated us-west", gateway_reaches_us_west,
                       30)
        log("gateway: %r" % (ans,))

        def coordinator_sees_us_west():
            st, body = http("GET", 8000, "/global/counter/" + name)
            regions = body.get("regions", {}) if isinstance(body, dict) else {}
            mine = regions.get("us-west") or {}
            return (st == 200 and isinstance(mine, dict) and mine.get("total_count", 0) >= 6, body)
        log("coordinator: %r" % wait_for("the coordinator reading the recreated us-west",
                                          coordinator_sees_us_west, 30))

        def replicated():
            return (region_count(8001, name) >= 6 and region_count(8003, name) >= 6, None)
        wait_for("us-west's counts replicated to the other regions", replicated, 30)

    def test_5_etcd_profile(self):
        """The profile "etcd" run for real: three etcd members (deploy/etcd, Debian's
        etcd-server) elect a leader, and the etcd strong roles (8005-8007) serve strong
        changes exactly once (a token's retry through another role is a duplicate) and
        linearizable reads through any role. (podman-compose 1.0.3 has no --profile: the
        services are named, as for the others.)"""
        members = ["lab34-etcd-us-east", "lab34-etcd-us-west", "lab34-etcd-eu-west"]
        roles = {"lab34-counter-strong-us-east": 8005, "lab34-counter-strong-us-west": 8006,
                 "lab34-counter-strong-eu-west": 8007}
        log("podman-compose build lab34-etcd-us-east (Debian's etcd-server)")
        compose("build", "lab34-etcd-us-east", timeout=600)
        log("podman-compose up -d " + " ".join(members + list(roles)))
        compose("up", "-d", "--no-build", *(members + list(roles)), timeout=300)
        for service, port in roles.items():
            wait_for(service + " /health on %d" % port, healthy(port), 90)

        def leader():
            st, body = http("GET", 8005, "/admin/etcd")
            return (st == 200 and isinstance(body, dict) and bool(body.get("leader")), body)
        log("etcd: %r" % wait_for("an etcd leader", leader, 60).get("leader"))
        path = "/v1/counters/compose/c%d/add-and-get" % int(time.time())
        st, first = http("POST", 8005, path, {"delta": 4, "idempotency_token": "compose-1"},
                         timeout=10)
        self.assertEqual((st, first.get("count"), first.get("backend")), (200, 4, "etcd"), first)
        st, again = http("POST", 8006, path, {"delta": 4, "idempotency_token": "compose-1"},
                         timeout=10)
        self.assertEqual((st, again.get("count"), again.get("duplicate")), (200, 4, True), again)
        st, more = http("POST", 8007, path, {"delta": 1, "idempotency_token": "compose-2"},
                        timeout=10)
        self.assertEqual((st, more.get("count")), (200, 5), more)
        st, read = http("GET", 8006, path[:-len("/add-and-get")], timeout=10)
        self.assertEqual((st, read.get("count")), (200, 5), read)


if __name__ == "__main__":
    import signal
    signal.signal(signal.SIGALRM, lambda *_: (_ for _ in ()).throw(
        AssertionError("compose test over %d s" % TIME_LIMIT_S)))
    signal.alarm(TIME_LIMIT_S)
    unittest.main(verbosity=2)
