#!/usr/bin/env bash
# Memory and replication cost of counterd with many counters: three region nodes peered
# with each other, N distinct counters (default 1,000,000) each incremented once on every
# node, then:
#   - full-state sync: POST /admin/force-sync on each node in turn, timed;
#   - RSS (VmRSS) of each node (every counter then has three node entries) and its
#     counterd_store_bytes, against the anchor: Redis (no persistence) holding N keys made
#     by INCR, its VmRSS measured the same way, REDIS_ROUNDS times in the same run (before
#     the counters are loaded, after loading, after the sync...); target: the median of
#     the nodes <= the median of Redis. Two figures: bare (right after the full-state
#     sync) and as run (after a digest round and a GET /counters on every node, so each
#     also holds its anti-entropy digest and its sorted name index, as a node in use does);
#   - delta sync: CHANGED (default 1,000) counters changed on one node, bytes its next
#     force-sync round sent (counterd_sync_bytes_total{direction="sent"} before/after).
#
#   bench/memory.sh              # N=1000000 CHANGED=1000 REDIS_ROUNDS=3 by default
#
# Env: N, CHANGED, CONNS (wrk connections per node, default 32), LOAD_TIMEOUT (s, default
# 150) for loading the counters, SYNC_TIMEOUT_MS (counterd's --sync-timeout-ms, per
# exchange; default: counterd's own default), REDIS_ROUNDS (default 3, at least 1).
# See bench/README.md.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

N=${N:-1000000}
CHANGED=${CHANGED:-1000}
CONNS=${CONNS:-32}
LOAD_TIMEOUT=${LOAD_TIMEOUT:-150}
SYNC_ARGS=()
[[ -z ${SYNC_TIMEOUT_MS:-} ]] || SYNC_ARGS=(--sync-timeout-ms "$SYNC_TIMEOUT_MS")
REDIS_ROUNDS=${REDIS_ROUNDS:-3}
((CHANGED <= N)) || die "CHANGED ($CHANGED) must be <= N ($N)"
((REDIS_ROUNDS >= 1)) || die "REDIS_ROUNDS ($REDIS_ROUNDS) must be >= 1"

bench_need_debs wrk jq curl iproute2 util-linux procps redis-server redis-tools
bench_need_counterd

# ------------------------------------------------------------------- Redis anchor
# redis_round: a fresh redis-server without persistence, N keys c0000000.. made by INCR
# (redis-cli --pipe), its VmRSS appended to REDIS_KB; then it is stopped. Rounds are run
# between counterd's phases, so both are measured under the same load of the machine.
REDIS_KB=()
redis_round() {
  local port pid i keys
  bench_free_port port
  bench_start "redis-${#REDIS_KB[@]}" redis-server --port "$port" --bind 127.0.0.1 --save "" \
    --appendonly no --daemonize no
  pid=$BENCH_PID
  for ((i = 0; i < 100; i++)); do
    redis-cli -p "$port" ping 2>/dev/null | grep -q PONG && break
    bench_alive "$pid" redis
    sleep 0.1
  done
  awk -v n="$N" 'BEGIN { for (i = 0; i < n; i++) { k = sprintf("c%07d", i);
    printf "*2\r\n$4\r\nINCR\r\n$%d\r\n%s\r\n", length(k), k } }' |
    redis-cli -p "$port" --pipe >"$BENCH_TMP/redis-pipe.log" 2>&1 ||
    { cat "$BENCH_TMP/redis-pipe.log" >&2; die "redis-cli --pipe failed"; }
  keys=$(redis-cli -p "$port" dbsize)
  [[ $keys == "$N" ]] || die "redis holds $keys keys, expected $N"
  REDIS_KB+=("$(bench_rss_kb "$pid")")
  bench_stop "$pid"
  log "redis round ${#REDIS_KB[@]}: $N keys (INCR), VmRSS $((${REDIS_KB[-1]} / 1024)) MB"
}
# stats_mb KB...: "median min max" in MB, one decimal.
stats_mb() {
  printf '%s\n' "$@" | sort -n | awk '{ v[NR] = $1 } END {
    m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
    printf "%.1f %.1f %.1f\n", m / 1024, v[1] / 1024, v[NR] / 1024 }'
}
redis_round

# -------------------------------------------------------------- three peered nodes
NODES=(a b c)
declare -A PORT URL PID
for n in "${NODES[@]}"; do
  bench_free_port "PORT[$n]"
  URL[$n]=http://127.0.0.1:${PORT[$n]}
done
for n in "${NODES[@]}"; do
  peers=""
  for m in "${NODES[@]}"; do
    [[ $m == "$n" ]] || peers+="${peers:+,}${URL[$m]}"
  done
  bench_start "node-$n" env -u PEER_ENDPOINTS -u SERVICE_PORT -u COUNTERD_ROLE -u REGION \
    -u NODE_ID -u SYNC_INTERVAL_MS -u SYNC_TIMEOUT_MS COUNTERD_LOG=warn "$COUNTERD_BIN" --role region \
    --port "${PORT[$n]}" --region "bench-$n" --node-id "bench-$n-1" --peers "$peers" \
    --sync-interval-ms 3600000 "${SYNC_ARGS[@]}"
  PID[$n]=$BENCH_PID
done
for n in "${NODES[@]}"; do bench_wait_health "${URL[$n]}" "${PID[$n]}" "node-$n"; done
RSS0_KB=$(bench_rss_kb "${PID[a]}")
log "3 nodes up (${URL[a]} ${URL[b]} ${URL[c]}), node a RSS at start: $((RSS0_KB / 1024)) MB"

# ------------------------------------------ N distinct counters, incremented on every node
# One wrk (1 thread, distinct.lua) per node, all three at once; each stops itself once
# every name has had its answer (see bench/wrk/distinct.lua) and we then SIGINT it.
log "loading $N counters on each of the 3 nodes (wrk -t1 -c$CONNS per node, in parallel)"
declare -A WRK_PID
t0=$(date +%s.%N)
for n in "${NODES[@]}"; do
  rm -f "$BENCH_TMP/done-$n"
  bench_start "wrk-$n" env BENCH_FIRST=0 BENCH_COUNT="$N" BENCH_THREADS=1 \
    BENCH_DONE_FILE="$BENCH_TMP/done-$n" wrk -t1 -c"$CONNS" -d"$((LOAD_TIMEOUT + 5))s" \
    -s "$BENCH_DIR/wrk/distinct.lua" "${URL[$n]}/"
  WRK_PID[$n]=$BENCH_PID
done
declare -A LOAD_S
deadline=$(($(date +%s) + LOAD_TIMEOUT))
pending=("${NODES[@]}")
while ((${#pending[@]} > 0)); do
  left=()
  for n in "${pending[@]}"; do
    if [[ -s $BENCH_TMP/done-$n ]]; then
      LOAD_S[$n]=$(awk -v t0="$t0" -v t1="$(date +%s.%N)" 'BEGIN { printf "%.1f", t1 - t0 }')
      kill -INT "${WRK_PID[$n]}" 2>/dev/null || true
    elif ! kill -0 "${WRK_PID[$n]}" 2>/dev/null; then
      cat "$BENCH_TMP/wrk-$n.log" >&2
      die "wrk on node $n ended before all $N names were answered"
    else
      left+=("$n")
    fi
  done
  pending=("${left[@]}")
  if ((${#pending[@]} > 0)); then
    if (($(date +%s) > deadline)); then
      for n in "${pending[@]}"; do
        kill -INT "${WRK_PID[$n]}" 2>/dev/null || true
        wait "${WRK_PID[$n]}" 2>/dev/null || true
        tail -n 15 "$BENCH_TMP/wrk-$n.log" >&2
      done
      die "loading $N counters took more than ${LOAD_TIMEOUT}s on node(s): ${pending[*]}"
    fi
    for n in "${NODES[@]}"; do bench_alive "${PID[$n]}" "node-$n"; done
    sleep 0.2
  fi
done
for n in "${NODES[@]}"; do
  wait "${WRK_PID[$n]}" 2>/dev/null || true
  f=$BENCH_TMP/wrk-$n.log
  bench_wrk_check "$f" "loading node $n"
  read -r ok failed < <(awk '/^DISTINCT / { split($2, a, "="); split($3, b, "=");
    print a[2], b[2] }' "$f")
  [[ $ok == "$N" && $failed == 0 ]] ||
    { cat "$f" >&2; die "node $n: $ok of $N increments answered 200, $failed failed"; }
  log "node $n: $N increments in ${LOAD_S[$n]} s ($(bench_wrkstat "$f" rps) req/s, p99 $(us_to_ms "$(bench_wrkstat "$f" p99_us)") ms)"
done
for n in "${NODES[@]}"; do
  got=$(bench_metric "${URL[$n]}" counterd_store_counters)
  [[ $got == "$N" ]] || die "node $n: counterd_store_counters is '${got}', expected $N"
done
RSS_LOADED_KB=$(bench_rss_kb "${PID[a]}")
log "all 3 nodes hold exactly $N counters; node a RSS before any sync: $((RSS_LOADED_KB / 1024)) MB"
((REDIS_ROUNDS < 2)) || redis_round

# ---------------------------------------------------------------- full-state sync
# Nothing has been replicated yet (interval 1 h): each force-sync is one complete
# push-pull round with both peers. Its answer lists every counter: kept in a file.
force_sync() { # force_sync NODE -> prints seconds; fails on anything but 200 sync_completed
  local n=$1 out=$BENCH_TMP/force-sync-$1.json code secs
  read -r code secs < <(curl -sS -o "$out" -w '%{http_code} %{time_total}\n' --max-time 300 \
    -X POST "${URL[$n]}/admin/force-sync") || die "node $n: POST /admin/force-sync failed (curl)"
  [[ $code == 200 ]] || die "node $n: POST /admin/force-sync answered $code: $(head -c 500 "$out")"
  # The answer lists every counter (~100 MB at 1M): look at its head, not a jq parse.
  head -c 4096 "$out" | grep -q '"status" *: *"sync_completed"' ||
    die "node $n: force-sync answer is not sync_completed: $(head -c 500 "$out")"
  echo "$secs"
}
FULL_SENT0=$(bench_metric "${URL[a]}" counterd_sync_bytes_total 'direction="sent"')
FULL_TOTAL=0
FULL_ROWS=()
for n in "${NODES[@]}"; do
  s=$(force_sync "$n")
  FULL_TOTAL=$(awk -v a="$FULL_TOTAL" -v b="$s" 'BEGIN { printf "%.3f", a + b }')
  FULL_ROWS+=("node $n: $(printf '%.3f' "$s") s (answer $(($(stat -c %s "$BENCH_TMP/force-sync-$n.json") / 1024)) KiB)")
  log "force-sync on node $n: $s s"
  if [[ $n == a ]]; then
    FULL_SENT1=$(bench_metric "${URL[a]}" counterd_sync_bytes_total 'direction="sent"')
  fi
done
FULL_SENT_A=$((${FULL_SENT1:-0} - ${FULL_SENT0:-0}))

# Every node must now see all three contributions (1 each) on every counter: checked on
# the first and last names, and via the totals of the force-sync answers.
last=$(printf 'c%07d' $((N - 1)))
for n in "${NODES[@]}"; do
  for k in c0000000 "$last"; do
    body=$(curl -fsS --max-time 5 "${URL[$n]}/counter/$k")
    jq -e '.total_count == 3 and (.nodes | length) == 3' <<<"$body" >/dev/null ||
      die "node $n after full sync: $k is $body (expected total 3 from 3 nodes)"
  done
  got=$(bench_metric "${URL[$n]}" counterd_store_counters)
  [[ $got == "$N" ]] || die "node $n after full sync: counterd_store_counters is '${got}', expected $N"
done
log "full sync checked: every node sees total_count 3 from 3 nodes"
# Bare: the store and what the full-state sync left, before any digest round or listing.
BARE_KB=()
for n in "${NODES[@]}"; do BARE_KB+=("$(bench_rss_kb "${PID[$n]}")"); done

# Settle: one more force-sync of each node with nothing changed. A round may leave for the
# next one the counters it merged during itself (counterd pushes back what it merged);
# those bytes are the settle figure, so the delta rounds below carry only their change.
SETTLE_SENT0=$(bench_metric "${URL[a]}" counterd_sync_bytes_total 'direction="sent"')
SETTLE_TOTAL=0
for n in "${NODES[@]}"; do
  s=$(force_sync "$n")
  SETTLE_TOTAL=$(awk -v a="$SETTLE_TOTAL" -v b="$s" 'BEGIN { printf "%.3f", a + b }')
  if [[ $n == a ]]; then
    SETTLE_SENT_A=$(($(bench_metric "${URL[a]}" counterd_sync_bytes_total 'direction="sent"') - SETTLE_SENT0))
  fi
done
log "settle rounds (nothing changed): $SETTLE_TOTAL s; node a sent $SETTLE_SENT_A bytes in its round"
# A force-sync round with a peer that speaks digests is a digest exchange: each node has
# now built its digest (checked), and one listing builds its sorted name index.
for n in "${NODES[@]}"; do
  dg=$(bench_metric "${URL[$n]}" counterd_sync_peer_bytes_total 'kind="digest"')
  ((${dg:-0} > 0)) || die "node $n: no digest exchange in the settle rounds (counterd_sync_peer_bytes_total{kind=\"digest\"} is '${dg}')"
  curl -fsS -o /dev/null --max-time 120 "${URL[$n]}/counters?limit=10" ||
    die "node $n: GET /counters failed"
done

# ------------------------------------------------------------------------- memory
for ((i = 3; i <= REDIS_ROUNDS; i++)); do redis_round; done
RUN_KB=()
for n in "${NODES[@]}"; do RUN_KB+=("$(bench_rss_kb "${PID[$n]}")"); done
RSS_KB=${BARE_KB[0]}
RSS_MB=$(awk -v k="$RSS_KB" 'BEGIN { printf "%.1f", k / 1024 }')
RUN_A_MB=$(awk -v k="${RUN_KB[0]}" 'BEGIN { printf "%.1f", k / 1024 }')
read -r NODE_MED NODE_MIN NODE_MAX < <(stats_mb "${BARE_KB[@]}")
read -r RUN_MED RUN_MIN RUN_MAX < <(stats_mb "${RUN_KB[@]}")
read -r REDIS_MB REDIS_MIN REDIS_MAX < <(stats_mb "${REDIS_KB[@]}")
MEM_RATIO=$(awk -v a="$NODE_MED" -v b="$REDIS_MB" 'BEGIN { printf "%.2f", a / b }')
RUN_RATIO=$(awk -v a="$RUN_MED" -v b="$REDIS_MB" 'BEGIN { printf "%.2f", a / b }')
STORE_BYTES=$(bench_metric "${URL[a]}" counterd_store_bytes)
STORE_MB=$(awk -v b="${STORE_BYTES:-0}" 'BEGIN { printf "%.1f", b / 1048576 }')
PRM=$(bench_metric "${URL[a]}" process_resident_memory_bytes)
# The force-sync answer lists every counter: how much of its time is that answer alone
# (GET /counters builds and sends the same list, without any replication).
read -r GC_S GC_BYTES < <(curl -fsS -o /dev/null -w '%{time_total} %{size_download}\n' \
  --max-time 120 "${URL[a]}/counters") || die "node a: GET /counters failed"
mem_verdict=$(awk -v r="$RUN_RATIO" 'BEGIN { print (r <= 1.0) ? "met" : "NOT met" }')

# --------------------------------------------------------------------- delta sync
# delta_round K OFFSET: K counters spread over the whole name range (index i*N/K+OFFSET),
# +1 each on node a through one curl process (keep-alive), then one force-sync round of
# node a. Sets D_SENT, D_RECV (bytes node a sent / received in that round), D_S (time).
delta_round() {
  local k=$1 off=$2 cfg=$BENCH_TMP/changes.curl codes s0 s1 r0 r1 first body n want
  awk -v n="$N" -v c="$k" -v off="$off" -v url="${URL[a]}/increment" 'BEGIN {
    for (i = 0; i < c; i++) {
      x = int(i * n / c) + off; if (x >= n) x = n - 1
      name = sprintf("c%07d", x)
      if (i) print "next"
      printf "url = \"%s\"\nrequest = \"POST\"\nheader = \"Content-Type: application/json\"\n", url
      printf "data = \"{\\\"counter_name\\\":\\\"%s\\\",\\\"amount\\\":1}\"\n", name
      print "output = \"/dev/null\""
      print "write-out = \"%{http_code}\\n\""
    } }' >"$cfg"
  codes=$(curl -sS -K "$cfg" | sort | uniq -c | awk '{ printf "%s:%s ", $2, $1 }')
  [[ $codes == "200:$k " ]] || die "changing $k counters on node a: statuses $codes"
  s0=$(bench_metric "${URL[a]}" counterd_sync_bytes_total 'direction="sent"')
  r0=$(bench_metric "${URL[a]}" counterd_sync_bytes_total 'direction="received"')
  D_S=$(force_sync a)
  s1=$(bench_metric "${URL[a]}" counterd_sync_bytes_total 'direction="sent"')
  r1=$(bench_metric "${URL[a]}" counterd_sync_bytes_total 'direction="received"')
  [[ -n $s0 && -n $s1 ]] || die "node a: no counterd_sync_bytes_total{direction=\"sent\"} in /metrics"
  D_SENT=$((s1 - s0))
  D_RECV=$((${r1:-0} - ${r0:-0}))
  first=$(printf 'c%07d' "$off")
  want=$(curl -fsS --max-time 5 "${URL[a]}/counter/$first" | jq -r .total_count)
  ((want >= 4)) || die "node a after the delta round: $first has total $want (expected >= 4)"
  for n in b c; do
    body=$(curl -fsS --max-time 5 "${URL[$n]}/counter/$first")
    jq -e --argjson w "$want" '.total_count == $w' <<<"$body" >/dev/null ||
      die "node $n after the delta round: $first is $body (node a has total $want)"
  done
  log "delta round, $k counters: node a sent $D_SENT bytes, received $D_RECV, in $D_S s"
}
# A second, 10x smaller round on other counters shows the bytes scale with the change.
CHANGED2=$(((CHANGED + 9) / 10))
delta_round "$CHANGED" 0
DELTA_BYTES=$D_SENT DELTA_RECV=$D_RECV DELTA_S=$D_S
delta_round "$CHANGED2" 1
DELTA2_BYTES=$D_SENT DELTA2_RECV=$D_RECV DELTA2_S=$D_S
PER_COUNTER=$(awk -v b="$DELTA_BYTES" -v c="$CHANGED" 'BEGIN { printf "%.1f", b / c }')
PER_COUNTER2=$(awk -v b="$DELTA2_BYTES" -v c="$CHANGED2" 'BEGIN { printf "%.1f", b / c }')

# -------------------------------------------------------------------------- report
echo
echo "counterd, 3 region nodes, $N distinct counters incremented once on every node"
echo
echo "loading (3 x $N POST /increment, 3 wrk in parallel): a ${LOAD_S[a]} s, b ${LOAD_S[b]} s, c ${LOAD_S[c]} s"
echo "full-state sync (POST /admin/force-sync on each node in turn): total $FULL_TOTAL s"
printf '  %s\n' "${FULL_ROWS[@]}"
echo "  bytes node a sent in its full-state round: $FULL_SENT_A"
echo "  then a second force-sync of each, nothing changed: total $SETTLE_TOTAL s, node a sent $SETTLE_SENT_A bytes"
echo "  (for scale: GET /counters on node a, $((GC_BYTES / 1024)) KiB, the list a force-sync answer carries, takes $(printf '%.3f' "$GC_S") s)"
echo
echo "memory, VmRSS (every counter has 3 node entries), median [min-max] of nodes a, b, c:"
printf '  %-42s %9s MB  [%s-%s]\n' "counterd bare, after the full-state sync" "$NODE_MED" \
  "$NODE_MIN" "$NODE_MAX"
printf '  %-42s %9s MB  [%s-%s]\n' "counterd as run (+ digest, name index)" "$RUN_MED" \
  "$RUN_MIN" "$RUN_MAX"
printf '  %-42s %9s MB  [%s-%s]  (%s rounds, between counterd'"'"'s phases)\n' \
  "Redis, $N INCR keys, no persistence" "$REDIS_MB" "$REDIS_MIN" "$REDIS_MAX" "${#REDIS_KB[@]}"
printf '  %-42s %9s\n' "ratio counterd bare/Redis" "$MEM_RATIO"
printf '  %-42s %9s       (target <= 1.0: %s)\n' "ratio counterd as run/Redis" "$RUN_RATIO" "$mem_verdict"
echo "node a:"
printf '  %-42s %9s MB\n' "VmRSS bare / as run" "$RSS_MB / $RUN_A_MB"
printf '  %-42s %9s MB\n' "counterd_store_bytes" "$STORE_MB"
printf '  %-42s %9s MB\n' "process_resident_memory_bytes" \
  "$(awk -v b="${PRM:-0}" 'BEGIN { printf "%.1f", b / 1048576 }')"
printf '  %-42s %9s MB\n' "VmRSS at start / after loading, before sync" \
  "$((RSS0_KB / 1024)) / $((RSS_LOADED_KB / 1024))"
echo
echo "delta sync: K counters changed on node a, then one force-sync round of node a (2 peers)"
printf '  %-8s %14s %16s %14s %10s\n' K 'bytes sent' 'per counter' 'bytes recv' seconds
printf '  %-8s %14s %16s %14s %10s\n' "$CHANGED" "$DELTA_BYTES" "$PER_COUNTER" "$DELTA_RECV" "$DELTA_S"
printf '  %-8s %14s %16s %14s %10s\n' "$CHANGED2" "$DELTA2_BYTES" "$PER_COUNTER2" "$DELTA2_RECV" "$DELTA2_S"
echo "  vs $FULL_SENT_A bytes sent by node a in its full-state round ($N counters)"
echo "RESULT memory counters=$N rss_mb=$NODE_MED redis_rss_mb=$REDIS_MB ratio=$MEM_RATIO rss_spread_mb=$NODE_MIN-$NODE_MAX run_rss_mb=$RUN_MED run_ratio=$RUN_RATIO run_spread_mb=$RUN_MIN-$RUN_MAX redis_spread_mb=$REDIS_MIN-$REDIS_MAX node_a_rss_mb=$RSS_MB full_sync_s=$FULL_TOTAL delta_bytes=$DELTA_BYTES store_mb=$STORE_MB delta_bytes_per_counter=$PER_COUNTER changed=$CHANGED delta_bytes_small=$DELTA2_BYTES changed_small=$CHANGED2"
