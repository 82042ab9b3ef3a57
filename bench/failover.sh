#!/usr/bin/env bash
# How long strong counting on etcd stops when etcd's leader dies: a lab with --strong etcd
# on BASE (default 9500), CLIENTS (default 6) clients adding to one strong counter through
# the gateway with idempotency tokens, the etcd leader SIGKILLed and restarted ROUNDS times
# (default 3). Prints each round's unavailability window (the longest gap between two
# acknowledged adds across the election) beside etcd's election timeout
# (LAB_ETCD_ELECTION_MS, default 1000, as scripts/lab starts etcd), and checks each round's
# value: lost 0, applied twice 0. The lab is stopped and its data deleted at the end.
#
#   bench/failover.sh                      # BASE=9500 ROUNDS=3 CLIENTS=6
#   LAB_ETCD_ELECTION_MS=500 LAB_ETCD_HEARTBEAT_MS=50 bench/failover.sh
#   NET=1 bench/failover.sh                # on the lab's real network (--net, as root)
set -euo pipefail
cd "$(dirname "$0")/.."
BASE=${BASE:-9500}
ROUNDS=${ROUNDS:-3}
CLIENTS=${CLIENTS:-6}
export LAB_ETCD_ELECTION_MS=${LAB_ETCD_ELECTION_MS:-1000}
export LAB_PROMETHEUS=0 COUNTERD_WATCH=0

trap './scripts/lab down -v --base-port "$BASE" > /dev/null' EXIT
net=()
[[ "${NET:-0}" == 1 ]] && net=(--net)
./scripts/lab up --base-port "$BASE" --strong etcd --no-build "${net[@]}" > /dev/null
./scripts/lab status --base-port "$BASE" | grep -E '^etcd'
python3 bench/failover.py "$BASE" "$ROUNDS" "$CLIENTS" "$LAB_ETCD_ELECTION_MS"
