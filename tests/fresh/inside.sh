#!/usr/bin/env bash
# Runs inside the fresh root (tests/fresh/run copies it to /fresh/inside.sh), as root, in
# the clone /src/counterd, as a new user would: the README's two commands.
#
#   inside.sh           ./scripts/lab up --base-port <free>, one increment through the
#                       gateway, every service's /health, ./scripts/lab down
#   inside.sh --full    the same, then ./scripts/test -LE 'fresh|compose' (extra
#                       arguments go to ctest; the fresh test itself is left out: it
#                       would debootstrap again inside; so is the compose test: podman
#                       runs containers from the host, with this root as their base
#                       image), then the lab again after the tests
set -euo pipefail
cd /src/counterd
t0=$SECONDS
say() { echo "fresh [$((SECONDS - t0))s]: $*"; }

# A base port whose lab ports (base + 0..7, 21..23, 31..33, 80, 1090) nothing listens on (the chroot shares
# this machine's network), below the ephemeral range, where the harness' free ports and
# every outgoing connection come from.
free_base() {
  local low b off
  low=$(cut -f1 /proc/sys/net/ipv4/ip_local_port_range 2> /dev/null || echo 32768)
  for _ in $(seq 200); do
    b=$((10000 + RANDOM % (low - 10000 - 1100)))
    for off in 0 1 2 3 4 5 6 7 21 22 23 31 32 33 80 1090; do
      (exec 3<> "/dev/tcp/127.0.0.1/$((b + off))") 2> /dev/null && continue 2
    done
    echo "$b"
    return 0
  done
  echo "inside.sh: no free base port" >&2
  return 1
}
base=$(free_base)

# `lab up` binds its ports after installing and building, a minute or more after they were
# found free: when another program took one meanwhile, a second try on other ports.
lab_up() {
  local attempt
  for attempt in 1 2; do
    say "./scripts/lab up --base-port $base"
    ./scripts/lab up --base-port "$base" 2>&1 | tee /tmp/lab-up.out && return 0
    ((attempt == 1)) || return 1
    grep -qE 'is taken by another process|Address already in use' /tmp/lab-up.out || return 1
    say "a port of base $base was taken meanwhile by another program: other ports"
    base=$(free_base)
  done
}

lab_round() {
  lab_up
  local gw=$((base + 80)) out p
  out=$(curl -sS -m 10 -X POST "http://127.0.0.1:$gw/api/increment" \
    -d '{"counter_name":"fresh","amount":1}')
  say "increment through the gateway: $out"
  jq -e '.counter == "fresh" and .local_count >= 1 and (.routed_to_endpoint | type) == "string"' \
    <<< "$out" > /dev/null || { say "FAIL: unexpected increment answer"; return 1; }
  for p in $base $((base + 1)) $((base + 2)) $((base + 3)) $((base + 4)) $gw; do
    out=$(curl -sS -m 5 "http://127.0.0.1:$p/health")
    jq -e '.status == "ok"' <<< "$out" > /dev/null ||
      { say "FAIL: port $p /health answered $out"; return 1; }
    say "port $p /health: $out"
  done
  # Prometheus (Debian's, which ./scripts/setup installs) is one of the lab's services too.
  out=$(curl -sS -m 5 -o /dev/null -w '%{http_code}' "http://127.0.0.1:$((base + 1090))/-/ready")
  [[ "$out" == 200 ]] || { say "FAIL: Prometheus /-/ready answered $out"; return 1; }
  say "port $((base + 1090)) (Prometheus) /-/ready: 200"
  ./scripts/lab status --base-port "$base"
  say "./scripts/lab down"
  ./scripts/lab down --base-port "$base"
  for p in $base $((base + 1)) $((base + 2)) $((base + 3)) $((base + 4)) $gw $((base + 1090)); do
    if (exec 3<> "/dev/tcp/127.0.0.1/$p") 2> /dev/null; then
      say "FAIL: port $p still answers after ./scripts/lab down"
      return 1
    fi
  done
  say "every port of the lab closed"
}

# The lab with its strong counter on etcd: `lab up --strong etcd` installs Debian's
# etcd-server itself, starts three members and a strong role per region; a strong
# namespace's add through the gateway lands in etcd, and status names a leader.
etcd_round() {
  say "./scripts/lab up --base-port $base --strong etcd"
  ./scripts/lab up --base-port "$base" --strong etcd
  local gw=$((base + 80)) out
  out=$(curl -sS -m 10 -X PUT "http://127.0.0.1:$gw/v1/namespaces/fresh" -d '{"type":"strong"}')
  say "a strong namespace: $out"
  out=$(curl -sS -m 10 -X POST "http://127.0.0.1:$gw/v1/counters/fresh/c/add-and-get" \
    -d '{"delta":3,"idempotency_token":"fresh-1"}')
  say "a strong add through the gateway: $out"
  jq -e '.count == 3 and .backend == "etcd" and .routing == "strong"' \
    <<< "$out" > /dev/null || { say "FAIL: unexpected strong answer"; return 1; }
  out=$(./scripts/lab status --base-port "$base")
  echo "$out"
  grep -qi "leader" <<< "$out" || { say "FAIL: lab status names no etcd leader"; return 1; }
  say "./scripts/lab down -v (--strong etcd)"
  ./scripts/lab down -v --base-port "$base"
}

trap './scripts/lab down --base-port "$base" > /dev/null 2>&1 || true' EXIT
lab_round
etcd_round
if [[ "${1:-}" == --full ]]; then
  shift
  say "./scripts/test -LE 'fresh|compose' $*"
  rc=0
  ./scripts/test -LE 'fresh|compose' "$@" || rc=$?
  node="node $(node --version 2> /dev/null || echo missing)"
  node+=", Debian's nodejs $(dpkg-query -W -f='${Version}' nodejs 2> /dev/null || echo -)"
  say "./scripts/test exited with $rc ($node); the lab again, after the tests"
  lab_round
  exit "$rc"
fi
say "ok"
