#!/usr/bin/env bash
# Runs inside the fresh root (tests/fresh/run copies it to /fresh/inside.sh), as root, in
# the clone /src/counterd, as a new user would: the README's two commands.
#
#   inside.sh <base-port>           ./scripts/lab up, one increment through the gateway,
#                                   every service's /health, ./scripts/lab down
#   inside.sh <base-port> --full    the same, then ./scripts/test -LE fresh (extra
#                                   arguments go to ctest; the fresh test itself is left
#                                   out: it would debootstrap again inside), then the lab
#                                   again after the tests
set -euo pipefail
base=$1
shift
cd /src/counterd
t0=$SECONDS
say() { echo "fresh [$((SECONDS - t0))s]: $*"; }

lab_round() {
  say "./scripts/lab up --base-port $base"
  ./scripts/lab up --base-port "$base"
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
}

trap './scripts/lab down --base-port "$base" > /dev/null 2>&1 || true' EXIT
lab_round
if [[ "${1:-}" == --full ]]; then
  shift
  say "./scripts/test -LE fresh $*"
  rc=0
  ./scripts/test -LE fresh "$@" || rc=$?
  say "./scripts/test exited with $rc (node $(node --version 2> /dev/null || echo missing)," \
      "$(dpkg-query -W -f='${Version}' nodejs 2> /dev/null || echo 'not Debian'"'"'s')); the lab again"
  lab_round
  exit "$rc"
fi
say "ok"
