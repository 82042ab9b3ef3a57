"""
compose_test.py - docker-compose.yml, the Dockerfile and deploy/prometheus.yml, without a
docker engine (none runs here).

- `docker-compose config -q` (Debian's docker-compose) accepts the file, and the config it
  resolves has the original lab's ten services with the runbook's ports, health checks on
  every counterd service, a named data volume per region node, the environment of each
  role (only variables counterd knows, as `counterd --help` lists them), the strong
  service as --role strong with the three regions as replicas, Jaeger with OTLP on, k6
  only under a profile, and Prometheus and Grafana given the files under deploy/.
- The counterd health check command of the compose file, run here against a real
  counterd, succeeds, and fails when nothing answers.
- deploy/prometheus.yml scrapes exactly the six counterd services at their ports.
- Profile "etcd" adds a three-member etcd cluster (one member per region, Debian's
  etcd-server from deploy/etcd/Dockerfile, a data volume each, one --initial-cluster naming
  every member's peer URL) and one etcd strong role per region on 8005-8007, its own
  region's member first; `up` without the profile starts none of them, and the gateway's
  STRONG_URL stays the embedded strong counter unless COUNTERD_STRONG_URL says otherwise.
- The Dockerfile builds on Debian 12 with scripts/setup's build packages, and its run stage
  installs the package of every shared library the binary links against (checked with
  this Debian 12 machine's dpkg). `cmake --install` lays out bin/ and share/counterd/{lua,web}
  as the Dockerfile expects, and the installed binary runs from there (a region and a
  gateway serving the dashboard).
"""

import os
import re
import shutil
import subprocess
import tempfile
import unittest

import yaml

import common
from common import COUNTERD_SERVICES, REPO, harness

REGION_NODES = {"us-east": "us-east-1", "us-west": "us-west-1", "eu-west": "eu-west-1"}
REGION_SERVICE = {"us-east": "lab34-counter-us-east", "us-west": "lab34-counter-us-west",
                  "eu-west": "lab34-counter-eu-west"}
REGION_ENDPOINTS = ",".join("%s=http://%s:%d" % (r, REGION_SERVICE[r], COUNTERD_SERVICES[
    REGION_SERVICE[r]][1]) for r in ("us-east", "us-west", "eu-west"))

# service -> [(host port, container port)], as in the runbook.
PORTS = {name: [(port, port)] for name, (_, port, _) in COUNTERD_SERVICES.items()}
PORTS.update({"lab34-prometheus": [(9090, 9090)], "lab34-grafana": [(3001, 3000)],
              "lab34-jaeger": [(16686, 16686), (4318, 4318)], "lab34-k6": []})
# Profile "etcd": the members (no published port) and the etcd strong roles.
ETCD_MEMBERS = {r: "lab34-etcd-" + r for r in REGION_NODES}
ETCD_ROLES = {"us-east": ("lab34-counter-strong-us-east", 8005),
              "us-west": ("lab34-counter-strong-us-west", 8006),
              "eu-west": ("lab34-counter-strong-eu-west", 8007)}
PORTS.update({name: [] for name in ETCD_MEMBERS.values()})
PORTS.update({name: [(port, port)] for name, port in ETCD_ROLES.values()})

# Environment a counterd service may carry beyond what `counterd --help` lists: the
# collector of the traces (DESIGN.md, "Observability").
EXTRA_ENV = {"OTEL_EXPORTER_OTLP_ENDPOINT"}

RELEASE_BIN = os.environ.get("COUNTERD_RELEASE_BIN") or os.path.join(REPO, "build", "counterd")


def compose(*args):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COUNTERD_", "FSYNC",
                                                                      "SYNC_INTERVAL"))}
    return subprocess.run(["docker-compose", "-f", os.path.join(REPO, "docker-compose.yml")] +
                          list(args), cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=60)


def counterd_env_names():
    """Every environment variable `counterd --help` names, plus the lab's alias."""
    out = subprocess.run([RELEASE_BIN, "--help"], capture_output=True, text=True, timeout=10)
    names = set(re.findall(r"^\s+--[a-z-]+\s+([A-Z][A-Z0-9_]+)\s", out.stdout, re.M))
    if len(names) < 10:
        raise AssertionError("counterd --help lists too few variables: %r\n%s"
                             % (names, out.stdout))
    return names | {"COUNTER_ENDPOINTS"}


def role_of(svc):
    env = svc.get("environment") or {}
    cmd = svc.get("command") or []
    if "--role" in cmd:
        return cmd[cmd.index("--role") + 1]
    return env.get("COUNTERD_ROLE", "region")


class ComposeFile(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        r = compose("config", "-q")
        if r.returncode != 0:
            raise AssertionError("docker-compose config -q failed (%d):\n%s%s"
                                 % (r.returncode, r.stdout, r.stderr))
        r = compose("config")
        if r.returncode != 0:
            raise AssertionError("docker-compose config failed:\n%s" % r.stderr)
        cls.config = yaml.safe_load(r.stdout)
        cls.services = cls.config["services"]

    def test_services_are_the_labs(self):
        self.assertEqual(set(self.services), set(PORTS))

    def test_ports(self):
        for name, want in PORTS.items():
            got = []
            for p in self.services[name].get("ports", []):
                m = re.match(r"^(?:([\d.]+):)?(\d+):(\d+)(?:/tcp)?$", str(p))
                self.assertTrue(m, "%s: port entry %r" % (name, p))
                # Published on the host's loopback only (the admin endpoints are open).
                self.assertEqual(m.group(1), "127.0.0.1", "%s: %r" % (name, p))
                got.append((int(m.group(2)), int(m.group(3))))
            self.assertEqual(sorted(got), sorted(want), name)

    def test_counterd_services(self):
        known = counterd_env_names() | EXTRA_ENV
        for name, (role, port, region) in COUNTERD_SERVICES.items():
            svc = self.services[name]
            env = {k: str(v) for k, v in (svc.get("environment") or {}).items()}
            with self.subTest(service=name):
                self.assertEqual(svc.get("image"), "counterd:latest")
                self.assertEqual(svc["build"]["context"], REPO)
                self.assertEqual(role_of(svc), role)
                self.assertEqual(env.get("SERVICE_PORT"), str(port))
                self.assertEqual(env.get("COUNTERD_BIND"), "0.0.0.0")
                self.assertEqual(env.get("OTEL_EXPORTER_OTLP_ENDPOINT"),
                                 "http://lab34-jaeger:4318")
                self.assertEqual(set(env) - known, set(),
                                 "variables counterd does not know")
                if role == "region":
                    self.assertEqual(env.get("REGION"), region)
                    self.assertEqual(env.get("NODE_ID"), REGION_NODES[region])
                    peers = sorted("http://%s:%d" % (REGION_SERVICE[r],
                                                     COUNTERD_SERVICES[REGION_SERVICE[r]][1])
                                   for r in REGION_NODES if r != region)
                    self.assertEqual(sorted(env.get("PEER_ENDPOINTS", "").split(",")), peers)
                    self.assertEqual(env.get("DATA_DIR"), "/data")
                    self.assertIn("%s-data:/data:rw" % region,
                                  [str(v) for v in svc.get("volumes", [])])
                    self.assertIn("%s-data" % region, self.config.get("volumes", {}))
                else:
                    self.assertEqual(env.get("REGION_ENDPOINTS"), REGION_ENDPOINTS)
                    for dep in REGION_SERVICE.values():
                        self.assertEqual(svc["depends_on"][dep]["condition"], "service_healthy")
                if role == "gateway":
                    self.assertEqual(env.get("COORDINATOR_URL"), "http://lab34-coordinator:8000")
                    self.assertEqual(env.get("STRONG_URL"), "http://lab34-counter-consistent:8004")
                    for dep in ("lab34-coordinator", "lab34-counter-consistent"):
                        self.assertEqual(svc["depends_on"][dep]["condition"], "service_healthy")
                if role == "strong":
                    self.assertEqual(svc.get("command"), ["--role", "strong"])
                    self.assertEqual(env.get("REGION"), "us-east")

    def test_health_checks_call_health(self):
        for name in COUNTERD_SERVICES:
            hc = self.services[name].get("healthcheck")
            with self.subTest(service=name):
                self.assertIsNotNone(hc)
                self.assertEqual(hc["test"][0], "CMD-SHELL")
                self.assertRegex(hc["test"][1].replace("$$", "$"),
                                 r"^curl -fsS http://127\.0\.0\.1:\$\{SERVICE_PORT\}/health\b")

    def test_observability_and_load_services(self):
        jaeger = self.services["lab34-jaeger"]
        self.assertEqual(str(jaeger["environment"]["COLLECTOR_OTLP_ENABLED"]), "true")
        prom = self.services["lab34-prometheus"]
        self.assertIn("%s/deploy/prometheus.yml:/etc/prometheus/prometheus.yml:ro" % REPO,
                      prom["volumes"])
        self.assertIn("--config.file=/etc/prometheus/prometheus.yml", prom["command"])
        graf = self.services["lab34-grafana"]
        self.assertIn("%s/deploy/grafana/provisioning:/etc/grafana/provisioning:ro" % REPO,
                      graf["volumes"])
        self.assertIn("%s/deploy/grafana/dashboards:/var/lib/grafana/dashboards:ro" % REPO,
                      graf["volumes"])
        with open(os.path.join(REPO, "deploy/grafana/provisioning/dashboards/counterd.yml")) as f:
            provider = yaml.safe_load(f)
        self.assertEqual(provider["providers"][0]["options"]["path"],
                         "/var/lib/grafana/dashboards")
        k6 = self.services["lab34-k6"]
        self.assertTrue(k6.get("profiles"), "k6 must sit under a profile: `up` skips it")
        etcd = set(ETCD_MEMBERS.values()) | {n for n, _ in ETCD_ROLES.values()}
        for name, svc in self.services.items():
            if name in etcd:
                self.assertEqual(svc.get("profiles"), ["etcd"], name)
            elif name != "lab34-k6":
                self.assertFalse(svc.get("profiles"), name)
        self.assertIn("%s/scripts/k6:/scripts:ro" % REPO, k6["volumes"])
        self.assertEqual(k6["command"], ["run", "/scripts/basic.js"])
        self.assertEqual(k6["environment"]["BASE_URL"], "http://lab34-gateway:8080")
        for script in ("basic.js", "comparison.js", "partition-test.js"):
            self.assertTrue(os.path.exists(os.path.join(REPO, "scripts/k6", script)), script)

    def test_etcd_profile(self):
        known = counterd_env_names() | EXTRA_ENV
        peers = ",".join("%s=http://%s:2380" % (r, ETCD_MEMBERS[r]) for r in REGION_NODES)
        for region, name in ETCD_MEMBERS.items():
            svc = self.services[name]
            with self.subTest(service=name):
                self.assertEqual(svc["build"]["context"], os.path.join(REPO, "deploy", "etcd"))
                flags = dict(f.split("=", 1) for f in svc["command"])
                self.assertEqual(flags["--name"], region)
                self.assertEqual(flags["--initial-cluster"], peers)
                self.assertEqual(flags["--initial-advertise-peer-urls"], "http://%s:2380" % name)
                self.assertEqual(flags["--advertise-client-urls"], "http://%s:2379" % name)
                self.assertEqual(flags["--initial-cluster-token"], "counterd-compose")
                self.assertIn("etcd-%s-data:/var/lib/etcd:rw" % region,
                              [str(v) for v in svc.get("volumes", [])])
                self.assertIn("/health", svc["healthcheck"]["test"][1])
        for region, (name, port) in ETCD_ROLES.items():
            svc = self.services[name]
            env = {k: str(v) for k, v in (svc.get("environment") or {}).items()}
            with self.subTest(service=name):
                self.assertEqual(svc.get("image"), "counterd:latest")
                self.assertEqual(svc.get("command"), ["--role", "strong"])
                self.assertEqual(env.get("SERVICE_PORT"), str(port))
                self.assertEqual(env.get("REGION"), region)
                self.assertEqual(env.get("STRONG_BACKEND"), "etcd")
                eps = env.get("ETCD_ENDPOINTS", "").split(",")
                self.assertEqual(eps[0], "http://%s:2379" % ETCD_MEMBERS[region])
                self.assertEqual(sorted(eps), sorted("http://%s:2379" % m
                                                     for m in ETCD_MEMBERS.values()))
                # Checked once counterd knows the etcd backend's variables.
                if "STRONG_BACKEND" in known:
                    self.assertEqual(set(env) - known, set(), "variables counterd does not know")
                for dep in ETCD_MEMBERS.values():
                    self.assertEqual(svc["depends_on"][dep]["condition"], "service_healthy")
        gw = {k: str(v) for k, v in self.services["lab34-gateway"]["environment"].items()}
        self.assertEqual(gw.get("STRONG_EMBEDDED_URL"), "http://lab34-counter-consistent:8004")

    def test_prometheus_scrapes_the_six_services(self):
        with open(os.path.join(REPO, "deploy/prometheus.yml")) as f:
            prom = yaml.safe_load(f)
        targets = [t for job in prom["scrape_configs"] for sc in job["static_configs"]
                   for t in sc["targets"]]
        self.assertEqual(sorted(targets), sorted("%s:%d" % (n, p) for n, (_, p, _)
                                                 in COUNTERD_SERVICES.items()))
        for job in prom["scrape_configs"]:
            self.assertEqual(job.get("metrics_path", "/metrics"), "/metrics")


class HealthCheckCommand(harness.ServerTestCase):
    """The compose health check's shell command, run here against a real counterd."""

    def test_command_against_counterd(self):
        r = compose("config")
        svc = yaml.safe_load(r.stdout)["services"]["lab34-counter-us-east"]
        cmd = svc["healthcheck"]["test"][1].replace("$$", "$")
        srv = self.start_server(["--region", "us-east"])
        ok = subprocess.run(["sh", "-c", cmd], env=dict(os.environ, SERVICE_PORT=str(srv.port)),
                            capture_output=True, timeout=10)
        self.assertEqual(ok.returncode, 0, ok.stderr)
        dead = harness.free_ports(1)[0]
        bad = subprocess.run(["sh", "-c", cmd], env=dict(os.environ, SERVICE_PORT=str(dead)),
                             capture_output=True, timeout=10)
        self.assertNotEqual(bad.returncode, 0)


def dockerfile_stages():
    """[(FROM image, [apt-get installed packages])] of the Dockerfile, stage by stage."""
    with open(os.path.join(REPO, "Dockerfile")) as f:
        text = f.read().replace("\\\n", " ")
    stages = []
    for line in text.splitlines():
        m = re.match(r"^FROM\s+(\S+)", line)
        if m:
            stages.append((m.group(1), []))
        for inst in re.findall(r"apt-get install ([^&]*)", line):
            stages[-1][1].extend(w for w in inst.split() if not w.startswith("-"))
    return stages


def setup_packages():
    """The first packages=(...) list of scripts/setup: build and run-time packages."""
    with open(os.path.join(REPO, "scripts/setup")) as f:
        m = re.search(r"^packages=\(([^)]*)\)", f.read(), re.M)
    return m.group(1).split()


def package_of(path):
    out = subprocess.run(["dpkg", "-S", os.path.realpath(path)], capture_output=True,
                         text=True)
    if out.returncode != 0:
        out = subprocess.run(["dpkg", "-S", path], capture_output=True, text=True)
    return out.stdout.split(":")[0].strip()


def base_image_packages():
    """Packages every Debian image has: the Essential ones and what they depend on."""
    out = subprocess.run(["dpkg-query", "-W", "-f", "${Package}\t${Essential}\t${Pre-Depends}"
                          "\t${Depends}\n"], capture_output=True, text=True, check=True).stdout
    base = set()
    for line in out.splitlines():
        name, essential, pre, dep = (line.split("\t") + ["", "", ""])[:4]
        if essential == "yes":
            base.add(name)
            base.update(re.findall(r"(?:^|[,|]\s*)([a-z0-9][a-z0-9+.-]+)", pre + "," + dep))
    return {b.split(":")[0] for b in base}


class Dockerfile(unittest.TestCase):
    def test_debian_12_and_the_setup_build_packages(self):
        stages = dockerfile_stages()
        self.assertEqual(len(stages), 2, stages)
        for image, _ in stages:
            self.assertIn(image.split(" ")[0], ("debian:12", "debian:bookworm"))
        build = set(stages[0][1])
        wanted = [p for p in setup_packages() if p.endswith("-dev") or
                  p in ("build-essential", "cmake", "pkg-config")]
        self.assertGreaterEqual(len(wanted), 6, wanted)
        self.assertEqual([p for p in wanted if p not in build], [])

    def test_run_stage_has_every_linked_library(self):
        run_pkgs = set(dockerfile_stages()[-1][1])
        self.assertIn("curl", run_pkgs)  # the health checks
        ldd = subprocess.run(["ldd", RELEASE_BIN], capture_output=True, text=True, check=True)
        needed = subprocess.run(["readelf", "-d", RELEASE_BIN], capture_output=True, text=True,
                                check=True)
        direct = set(re.findall(r"\(NEEDED\).*\[(.+)\]", needed.stdout))
        paths = dict(re.findall(r"^\s*(\S+) => (\S+)", ldd.stdout, re.M))
        self.assertTrue(direct)
        base = base_image_packages()
        for lib in direct:
            with self.subTest(lib=lib):
                self.assertIn(lib, paths)
                pkg = package_of(paths[lib])
                self.assertTrue(pkg, "no Debian package holds %s" % paths[lib])
                self.assertTrue(pkg in run_pkgs or pkg in base,
                                "%s (%s) comes from %s, which the run stage does not install"
                                % (lib, paths[lib], pkg))


class InstallLayout(harness.ServerTestCase):
    """cmake --install puts what the image needs where the Dockerfile expects it."""

    def test_installed_tree_runs(self):
        prefix = tempfile.mkdtemp(prefix="counterd-install-")
        self.addCleanup(shutil.rmtree, prefix, True)
        build = os.path.dirname(RELEASE_BIN)
        r = subprocess.run(["cmake", "--install", build, "--prefix", prefix],
                           capture_output=True, text=True, timeout=60)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        lua = os.path.join(prefix, "share/counterd/lua")
        web = os.path.join(prefix, "share/counterd/web")
        for f in ("bin/counterd", "share/counterd/lua/conf/lab.lua",
                  "share/counterd/lua/roles/gateway.lua", "share/counterd/lua/policies/routing.lua",
                  "share/counterd/web/index.html"):
            self.assertTrue(os.path.exists(os.path.join(prefix, f)), f)

        binary = os.path.join(prefix, "bin/counterd")

        class Installed(harness.Server):
            def command(self):
                return [binary, "--bind", harness.HOST, "--port", str(self.port)] + self.args

        region = Installed(["--region", "us-east", "--lua-dir", lua], name="installed-region")
        self.addCleanup(region.stop)
        region.start()
        gw = Installed(["--role", "gateway", "--lua-dir", lua, "--web-dir", web,
                        "--regions", "us-east=%s" % region.url], name="installed-gateway")
        self.addCleanup(gw.stop)
        gw.start()
        with gw.client() as c:
            page = c.get("/")
            self.assertEqual(page.status, 200)
            self.assertIn("text/html", page.content_type)
            inc = c.post_json("/api/increment", {"counter_name": "installed", "routing": "us-east"})
            self.assertEqual(inc["region"], "us-east")


if __name__ == "__main__":
    unittest.main(verbosity=2)
