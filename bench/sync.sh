#!/usr/bin/env bash
# Replication at a million counters, against Redis resyncing a replica, in one run:
#   - join: a new, empty counterd node joins a peer holding N counters (default 1,000,000)
#     of 3 replica entries each; time from its start until it holds everything (checked:
#     counter count, total, and the digest tree's fingerprints equal to the peer's);
#     anchor: a new Redis replica (repl-diskless-sync-delay 0 on the master) of a master
#     holding N keys, time from its start until its link is up with N keys (checked: DEBUG
#     DIGEST equal to the master's). Run alternately, ROUNDS times; median and spread.
#   - converged: bytes of one force-sync round (digest exchange) between the two nodes
#     once they hold the same state;
#   - repair: bytes of the force-sync round that repairs K (default 1,000) counters the
#     deltas never carry (the peer's own changes, tagged as coming from it).
#
#   bench/sync.sh                  # N=1000000 ROUNDS=3 K=1000
#
# See bench/README.md.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

N=${N:-1000000}
ROUNDS=${ROUNDS:-3}
K=${K:-1000}
TIMEOUT=${TIMEOUT:-120}

bench_need_debs redis-server redis-tools jq curl python3 bc
bench_need_counterd

REPS='"bench-a-1~aaaa","bench-b-1~bbbb","bench-c-1~cccc"'

# sync_post URL BODY-FILE: a POST /sync of a body in a file; fails unless 200.
sync_post() {
  local code
  code=$(curl -sS -o "$BENCH_TMP/sync.out" -w '%{http_code}' --max-time 120 -X POST \
    -H 'Content-Type: application/json' --data-binary "@$2" "$1/sync") ||
    die "POST $1/sync failed (curl)"
  [[ $code == 200 ]] || die "POST $1/sync answered $code: $(head -c 300 "$BENCH_TMP/sync.out")"
}

# load_counters URL FIRST COUNT SENDER BUMP: COUNT counters c<FIRST..> with 3 entries each,
# sent as /sync bodies of 100,000 counters from node SENDER (values + BUMP).
load_counters() {
  local url=$1 first=$2 count=$3 sender=$4 bump=$5 base
  for ((base = first; base < first + count; base += 100000)); do
    python3 - "$base" "$((first + count))" "$sender" "$bump" >"$BENCH_TMP/load.json" <<'EOF'
import sys
base, end, sender, bump = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
reps = ["bench-a-1~aaaa", "bench-b-1~bbbb", "bench-c-1~cccc"]
out = []
for i in range(base, min(end, base + 100000)):
    out.append('"c%07d":{"%s":%d,"%s":%d,"%s":%d}' % (
        i, reps[0], 1 + i % 7 + bump, reps[1], 1 + i % 11, reps[2], 1 + i % 13))
sys.stdout.write('{"node_id":"%s","incarnation":"0000000000000000","counts":{%s}}'
                 % (sender, ",".join(out)))
EOF
    sync_post "$url" "$BENCH_TMP/load.json"
  done
}

# digest_l2 URL: the node's 32 fingerprints of the digest tree's level 2 (a probe that
# says every level-1 node differs), as one string.
digest_l2() {
  local fps
  fps=$(printf '0%.0s' $(seq 1 64))
  curl -fsS --max-time 30 -X POST -H 'Content-Type: application/json' --data \
    "{\"node_id\":\"bench-probe\",\"incarnation\":\"0000000000000000\",\"counts\":{},\"digest\":{\"leaf_bits\":17,\"level\":1,\"groups\":[0],\"fps\":\"$fps\"}}" \
    "$1/sync" | jq -r '.digest.fps'
}

median() { sort -g | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
spread() { sort -g | awk 'NR == 1 { lo = $1 } { hi = $1 } END { printf "%s-%s", lo, hi }'; }
now() { date +%s.%N; }
elapsed() { echo "$(now) - $1" | bc; }

# --------------------------------------------------------------------- Redis master
bench_free_port RPORT
bench_free_port RREPL
mkdir -p "$BENCH_TMP/redis-master"
bench_start redis-master redis-server --port "$RPORT" --bind 127.0.0.1 --save '' \
  --appendonly no --dir "$BENCH_TMP/redis-master" --repl-diskless-sync yes \
  --repl-diskless-sync-delay 0 --enable-debug-command local
RMASTER_PID=$BENCH_PID
for ((i = 0; i < 100; i++)); do redis-cli -p "$RPORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
log "loading $N INCR keys into the Redis master"
python3 - "$N" <<'EOF' | redis-cli -p "$RPORT" --pipe >/dev/null
import sys
n = int(sys.argv[1])
w = sys.stdout.write
for i in range(n):
    k, v = "c%07d" % i, str(1 + i % 31)
    w("*3\r\n$6\r\nINCRBY\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n" % (len(k), k, len(v), v))
EOF
[[ $(redis-cli -p "$RPORT" dbsize) == "$N" ]] || die "the Redis master holds $(redis-cli -p "$RPORT" dbsize) keys, not $N"
MASTER_DIGEST=$(redis-cli -p "$RPORT" debug digest)

# One Redis replica from scratch: its seconds from start to synced, in SECS.
redis_round() {
  local dir="$BENCH_TMP/redis-replica" t0 pid
  rm -rf "$dir" && mkdir -p "$dir"
  t0=$(now)
  bench_start redis-replica redis-server --port "$RREPL" --bind 127.0.0.1 --save '' \
    --appendonly no --dir "$dir" --replicaof 127.0.0.1 "$RPORT" --enable-debug-command local
  pid=$BENCH_PID
  # One redis-cli repeating INFO every 20 ms (no process per poll, as counterd's side has
  # none): link up means the RDB is loaded whole (checked below: key count and digest).
  local deadline=$(($(date +%s) + TIMEOUT))
  while (($(date +%s) < deadline)); do
    while IFS= read -r line; do
      [[ $line == master_link_status:up* ]] && break 2
    done < <(timeout "$TIMEOUT" redis-cli -p "$RREPL" -r -1 -i 0.02 info replication 2>/dev/null)
    sleep 0.02 # not listening yet
  done
  local s
  s=$(elapsed "$t0")
  CPU=$(echo "scale=2; $(bench_proc_ticks "$pid") / $BENCH_CLK_TCK" | bc)
  [[ $(redis-cli -p "$RREPL" dbsize) == "$N" ]] || die "the Redis replica did not sync within ${TIMEOUT}s"
  [[ $(redis-cli -p "$RREPL" debug digest) == "$MASTER_DIGEST" ]] || die "the Redis replica's DEBUG DIGEST differs from the master's"
  bench_stop "$pid"
  SECS=$s
}

# ------------------------------------------------------------------ counterd peer
bench_free_port BPORT
bench_free_port CPORT
BURL=http://127.0.0.1:$BPORT
CURL=http://127.0.0.1:$CPORT
COMMON=(env -u PEER_ENDPOINTS -u SERVICE_PORT -u COUNTERD_ROLE -u REGION -u NODE_ID
  -u SYNC_INTERVAL_MS -u SYNC_TIMEOUT_MS COUNTERD_LOG=warn "$COUNTERD_BIN" --role region
  --sync-interval-ms 3600000)
bench_start node-b "${COMMON[@]}" --port "$BPORT" --region bench-b --node-id bench-b-1 \
  --peers "$CURL"
B_PID=$BENCH_PID
bench_wait_health "$BURL" "$B_PID" node-b
log "loading $N counters of 3 replica entries into counterd node b"
load_counters "$BURL" 0 "$N" bench-loader 0
[[ $(bench_metric "$BURL" counterd_store_counters) == "$N" ]] || die "node b does not hold $N counters"
B_TOTAL=$(bench_metric "$BURL" counter_synced_count)

# One counterd node joining from scratch: its seconds from start to holding all, in SECS.
C_PID=
counterd_round() {
  local t0 s n total
  t0=$(now)
  bench_start node-c "${COMMON[@]}" --port "$CPORT" --region bench-c --node-id bench-c-1 \
    --peers "$BURL"
  C_PID=$BENCH_PID
  bench_wait_health "$CURL" "$C_PID" node-c
  # The force-sync answers once the round is complete: b's full state pulled and merged,
  # c's pushed, and the digest exchange found both trees equal (checked again below). No
  # polling meanwhile: on a 2-core machine a poll loop's processes take CPU from the nodes.
  curl -fsS -o "$BENCH_TMP/join.json" --max-time "$TIMEOUT" -X POST "$CURL/admin/force-sync" ||
    die "node c: POST /admin/force-sync failed: $(head -c 300 "$BENCH_TMP/join.json")"
  s=$(elapsed "$t0")
  CPU=$(echo "scale=2; $(bench_proc_ticks "$C_PID") / $BENCH_CLK_TCK" | bc)
  n=$(bench_metric "$CURL" counterd_store_counters)
  local last=$((N - 1)) want
  want=$((3 + last % 7 + last % 11 + last % 13))
  [[ $(curl -sS --max-time 5 "$CURL/counter/$(printf 'c%07d' "$last")" | jq -r .total_count) == "$want" ]] ||
    die "node c does not hold b's last counter with its value after the force-sync"
  [[ $n == "$N" ]] || die "node c holds $n counters after ${TIMEOUT}s, not $N"
  total=$(bench_metric "$CURL" counter_synced_count)
  [[ $total == "$B_TOTAL" ]] || die "node c's total is $total, node b's $B_TOTAL"
  [[ $(digest_l2 "$CURL") == "$(digest_l2 "$BURL")" ]] || die "node c's digest tree differs from node b's"
  SECS=$s
}

R_TIMES=()
C_TIMES=()
R_CPU=()
C_CPU=()
for ((round = 1; round <= ROUNDS; round++)); do
  redis_round
  r=$SECS
  R_TIMES+=("$r")
  R_CPU+=("$CPU")
  counterd_round
  c=$SECS
  C_TIMES+=("$c")
  C_CPU+=("$CPU")
  log "round $round: Redis replica synced in ${r}s (${R_CPU[-1]}s of its CPU), counterd node joined in ${c}s (${CPU}s of its CPU)"
  ((round == ROUNDS)) || bench_stop "$C_PID"
done

# ------------------------------------------- converged round and repair of K counters
peer_bytes() { bench_metric "$CURL" counterd_sync_peer_bytes_total "kind=\"$1\""; }
curl -fsS -o /dev/null --max-time 60 -X POST "$CURL/admin/force-sync" # the join's last deltas
d0=$(peer_bytes digest)
r0=$(peer_bytes repair)
FS_S=$(curl -fsS -o "$BENCH_TMP/force-sync.json" -w '%{time_total}' --max-time 60 -X POST "$CURL/admin/force-sync")
CONVERGED=$(($(peer_bytes digest) - d0 + $(peer_bytes repair) - r0))
FS_BYTES=$(stat -c %s "$BENCH_TMP/force-sync.json")
# K counters changed on c as if node b had sent them (tagged as b's): c's deltas never send
# them back, so only the digest exchange can bring them to b.
load_counters "$CURL" 0 "$K" bench-b-1 1
d0=$(peer_bytes digest)
r0=$(peer_bytes repair)
curl -fsS -o /dev/null --max-time 60 -X POST "$CURL/admin/force-sync"
REPAIR_DIGEST=$(($(peer_bytes digest) - d0))
REPAIR_BYTES=$(($(peer_bytes repair) - r0))
[[ $(digest_l2 "$CURL") == "$(digest_l2 "$BURL")" ]] || die "after the repair round, b and c differ"
[[ $(bench_metric "$BURL" counter_synced_count) == "$((B_TOTAL + K))" ]] ||
  die "node b's total is $(bench_metric "$BURL" counter_synced_count) after the repair, not $((B_TOTAL + K))"

RM=$(printf '%s\n' "${R_TIMES[@]}" | median)
CM=$(printf '%s\n' "${C_TIMES[@]}" | median)
RATIO=$(echo "scale=2; $CM / $RM" | bc)
printf '\n%-44s %12s %14s\n' "" "median (s)" "spread (s)"
printf '%-44s %12.2f %14s\n' "Redis replica resync, $N keys" "$RM" "$(printf '%s\n' "${R_TIMES[@]}" | spread)"
printf '%-44s %12.2f %14s\n' "counterd node joining, $N counters" "$CM" "$(printf '%s\n' "${C_TIMES[@]}" | spread)"
printf '%-44s %12s\n' "ratio counterd / Redis (target <= 1.0)" "$RATIO"
RCM=$(printf '%s\n' "${R_CPU[@]}" | median)
CCM=$(printf '%s\n' "${C_CPU[@]}" | median)
printf '%-44s %12s %14s\n' "CPU of the Redis replica until synced" "$RCM" "$(printf '%s\n' "${R_CPU[@]}" | spread)"
printf '%-44s %12s %14s\n' "CPU of the joining counterd node" "$CCM" "$(printf '%s\n' "${C_CPU[@]}" | spread)"
printf '%-44s %12s\n' "converged force-sync round, bytes" "$CONVERGED"
printf '%-44s %12s\n' "converged force-sync: answer bytes, seconds" "$FS_BYTES $FS_S"
printf '%-44s %12s\n' "repair of $K counters: digest bytes" "$REPAIR_DIGEST"
printf '%-44s %12s\n' "repair of $K counters: repair bytes" "$REPAIR_BYTES"
printf '%-44s %12s\n' "bytes per repaired counter" "$(((REPAIR_DIGEST + REPAIR_BYTES) / K))"
echo "RESULT sync n=$N rounds=$ROUNDS redis_s=$RM counterd_s=$CM ratio=$RATIO redis_cpu_s=$RCM counterd_cpu_s=$CCM converged_bytes=$CONVERGED repair_k=$K repair_digest_bytes=$REPAIR_DIGEST repair_bytes=$REPAIR_BYTES"
