#!/usr/bin/env bash
# Throughput and added latency of the counterd gateway (POST /api/increment, routed to one
# region node) against an anchor: nginx (1 worker) proxying POST /increment to the same
# region node over a keep-alive upstream pool; and the region node directly, to tell the
# latency each proxy adds.
#
#   bench/gateway.sh              # DURATION=10 ROUNDS=3 CONNS=32 PACE_MS=3 by default
#
# Env: DURATION (s, default 10) per measured run, WARMUP (s, default 2) before each,
# ROUNDS (default 3): runs alternate gateway, nginx, direct, gateway, ...; the figure kept
# for each path is its BEST run (highest req/s, with that run's latencies). CONNS (default
# 32) connections, 1 wrk thread. PACE_MS (default 3; 0: no paced pass) and PACE_DURATION
# (s, default 3): after each round's saturated runs, one paced run per path, every
# connection waiting ~PACE_MS ms between answer and next request, so the three paths get
# about the same request rate (a latency comparison at equal load, not at saturation).
# REGION_SHARES (server | client, default server): the CPU the region node shares: the
# one of the server under test (gateway or nginx) or wrk's. SETUP (standalone | lab,
# default standalone): standalone starts one region node and a gateway with flags of its
# own; lab starts `scripts/lab up` on a free --base-port with the lab's defaults (Lua
# watch, Prometheus, three regions with data directories and peers) and measures the lab's
# gateway and its us-east node, nginx proxying to that same node. MODE (inc | v1, default
# inc): v1 adds a fourth path, the gateway's AddCount (POST /v1/counters/default/<name>/add
# {"delta":1,"routing":"us-east"}, eventual: its C path), and reports its ratio to
# POST /api/increment. See bench/README.md.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
ROUNDS=${ROUNDS:-3}
CONNS=${CONNS:-32}
PACE_MS=${PACE_MS:-3}
PACE_DURATION=${PACE_DURATION:-3}
REGION_SHARES=${REGION_SHARES:-server}
SETUP=${SETUP:-standalone}
SCRIPT=$BENCH_DIR/wrk/gateway.lua
PATHS=(gateway nginx direct)
MODE=${MODE:-inc}
[[ $MODE == inc || $MODE == v1 ]] || die "MODE must be inc or v1, not '$MODE'"
[[ $MODE == inc ]] || PATHS+=(v1)

bench_need_debs wrk nginx jq curl iproute2 util-linux procps
bench_need_counterd

# Pinning: the server under test (gateway or nginx; the region itself in "direct") on
# BENCH_SERVER_PIN, wrk on BENCH_CLIENT_PIN. The region node has to share one of the two
# cores: by default the server's, so that wrk alone on its core is never the limit and the
# whole server side of each path (proxy + region, or the region alone) runs on one core.
case $REGION_SHARES in
server)
  REGION_PIN=("${BENCH_SERVER_PIN[@]}")
  ((${#BENCH_SERVER_PIN[@]} == 0)) || PIN_DESC="gateway|nginx + region node on CPU 1, wrk on CPU 0 (direct: region node on CPU 1, wrk on CPU 0)"
  ;;
client)
  REGION_PIN=("${BENCH_CLIENT_PIN[@]}")
  ((${#BENCH_SERVER_PIN[@]} == 0)) || PIN_DESC="gateway|nginx on CPU 1, wrk + region node on CPU 0 (direct: region node and wrk both on CPU 0)"
  ;;
*) die "REGION_SHARES must be server or client, not '$REGION_SHARES'" ;;
esac
[[ $SETUP == standalone || $SETUP == lab ]] || die "SETUP must be standalone or lab, not '$SETUP'"
((${#BENCH_SERVER_PIN[@]} != 0)) || PIN_DESC="not pinned"

# Each path increments its own counter (names of the same length), so that each total can
# be checked against the answers of that path alone.
declare -A COUNTER=([gateway]=bench-gw [nginx]=bench-nx [direct]=bench-dr [v1]=bench-v1)

CLEAN_ENV=(env -u PEER_ENDPOINTS -u SERVICE_PORT -u COUNTERD_ROLE -u REGION -u NODE_ID
  -u REGION_ENDPOINTS -u COUNTER_ENDPOINTS -u COORDINATOR_URL -u DATA_DIR
  -u COUNTERD_ADMIN_TOKEN -u COUNTERD_FAULTS COUNTERD_LOG=warn)
if [[ $SETUP == standalone ]]; then
  # ------------------------------------------------------------ the region node
  bench_free_port RG_PORT
  RG_URL=http://127.0.0.1:$RG_PORT
  bench_start region "${CLEAN_ENV[@]}" "${REGION_PIN[@]}" "$COUNTERD_BIN" --role region \
    --port "$RG_PORT" --region us-east --node-id us-east-1
  RG_PID=$BENCH_PID

  # --------------------------------------------------------------- the gateway
  # The coordinator is only needed for reads and admin fan-out, not for increments: a
  # free port that nothing listens on.
  bench_free_port GW_PORT
  bench_free_port COORD_PORT
  GW_URL=http://127.0.0.1:$GW_PORT
  bench_start gateway "${CLEAN_ENV[@]}" "${BENCH_SERVER_PIN[@]}" "$COUNTERD_BIN" \
    --role gateway --port "$GW_PORT" --regions "us-east=$RG_URL" \
    --coordinator "http://127.0.0.1:$COORD_PORT"
  GW_PID=$BENCH_PID
else
  # ------------------------------------------------------------------- the lab
  # scripts/lab up with its defaults on a base port whose every service port is free; its
  # gateway and its us-east node are pinned as the standalone ones (the other services
  # run where the lab puts them). Stopped and its state deleted on exit.
  LAB=$BENCH_DIR/../scripts/lab
  LAB_BASE=""
  used=" $(ss -Htan 2>/dev/null | awk '{n = split($4, a, ":"); print a[n]}' | sort -u | tr '\n' ' ') "
  for ((i = 0; i < 200; i++)); do
    b=$((20000 + RANDOM % 10000))
    [[ -e $BENCH_DIR/../.lab/$b ]] && continue
    for off in 0 1 2 3 4 80 1090; do [[ $used == *" $((b + off)) "* ]] && continue 2; done
    LAB_BASE=$b
    break
  done
  [[ -n $LAB_BASE ]] || die "no free base port for the lab"
  lab_down() {
    "$LAB" down -v --base-port "$LAB_BASE" >/dev/null 2>&1 || true
    rm -rf "$BENCH_DIR/../.lab/$LAB_BASE"
  }
  trap 'rc=$?; lab_down; (exit $rc); bench_cleanup' EXIT
  log "lab: scripts/lab up --base-port $LAB_BASE --no-build (COUNTERD_BIN=$COUNTERD_BIN)"
  env -u PEER_ENDPOINTS -u SERVICE_PORT -u COUNTERD_ROLE -u REGION -u NODE_ID \
    -u REGION_ENDPOINTS -u COUNTER_ENDPOINTS -u COORDINATOR_URL -u DATA_DIR \
    -u COUNTERD_ADMIN_TOKEN -u COUNTERD_FAULTS -u COUNTERD_LOG -u COUNTERD_WATCH \
    -u FSYNC_POLICY -u SYNC_INTERVAL_MS -u LAB_PROMETHEUS -u LAB_ENDPOINTS \
    COUNTERD_BIN="$COUNTERD_BIN" "$LAB" up \
    --base-port "$LAB_BASE" --no-build >"$BENCH_TMP/lab-up.log" 2>&1 ||
    { cat "$BENCH_TMP/lab-up.log" >&2; die "scripts/lab up failed"; }
  LAB_STATE=$BENCH_DIR/../.lab/$LAB_BASE
  RG_PORT=$((LAB_BASE + 1)) GW_PORT=$((LAB_BASE + 80))
  RG_URL=http://127.0.0.1:$RG_PORT GW_URL=http://127.0.0.1:$GW_PORT
  RG_PID=$(cat "$LAB_STATE/pids/us-east.pid") GW_PID=$(cat "$LAB_STATE/pids/gateway.pid")
  [[ -s $LAB_STATE/pids/prometheus.pid ]] ||
    log "NOTE: the lab runs without Prometheus (see $LAB_STATE/logs/prometheus.log)"
  if ((${#BENCH_SERVER_PIN[@]})); then
    taskset -a -p -c "${REGION_PIN[2]}" "$RG_PID" >/dev/null
    taskset -a -p -c "${BENCH_SERVER_PIN[2]}" "$GW_PID" >/dev/null
  fi
fi

# ------------------------------------------------------------------ nginx anchor
bench_start_nginx proxy.conf "upstream.inc=server 127.0.0.1:$RG_PORT;"

bench_wait_health "$RG_URL" "$RG_PID" region
bench_wait_health "$GW_URL" "$GW_PID" gateway
bench_wait_health "$NGX_URL" "$NGX_PID" nginx
bench_check_increment "$RG_URL" direct us-east-1 us-east
bench_check_increment "$NGX_URL" nginx us-east-1 us-east
bench_check_gateway_increment "$GW_URL" gateway us-east-1 us-east us-east "$RG_URL"

declare -A URL=([gateway]=$GW_URL/api/increment [nginx]=$NGX_URL/increment
  [direct]=$RG_URL/increment [v1]=$GW_URL/v1/counters/default/${COUNTER[v1]}/add)
declare -A PID=([gateway]=$GW_PID [nginx]=$NGX_PID [direct]=$RG_PID [v1]=$GW_PID)
declare -A ROUTING=([gateway]=us-east [nginx]="" [direct]="" [v1]=us-east)
declare -A SENT=([gateway]=0 [nginx]=0 [direct]=0 [v1]=0)
declare -A RUNS=([gateway]=0 [nginx]=0 [direct]=0 [v1]=0)
declare -A BEST_RPS=([gateway]=0 [nginx]=0 [direct]=0 [v1]=0) BEST_P50 BEST_P99 BEST_RUN BEST_SRV_US
declare -A BEST_RGN_US
declare -A PBEST_P99=([gateway]=-1 [nginx]=-1 [direct]=-1 [v1]=-1) PBEST_P50 PBEST_RPS PBEST_RUN
if [[ $MODE == v1 ]]; then
  # The first AddCount goes through the Lua role, which learns the namespace's type and
  # hands its adds to the C path from then on.
  v1_first=$(curl -fsS --max-time 5 -H 'Content-Type: application/json' \
    -d '{"delta":1,"routing":"us-east"}' "${URL[v1]}") || die "POST ${URL[v1]} failed"
  [[ $(jq -r .routed_to_endpoint <<<"$v1_first") == "$RG_URL" ]] ||
    die "POST ${URL[v1]} answered $v1_first"
  SENT[v1]=1
fi
ROWS=()
PROWS=()
CLIENT_BOUND=""
DISTURBED=""
RECONNECTS=""

# run_one PATH ROUND KIND(sat|paced) DURATION: one wrk run (after a warm-up for "sat"),
# checked, accounted; sets RUN_RPS, RUN_P50, RUN_P99 (ms), RUN_SRV_US, RUN_RGN_US (CPU us
# per request of the server under test and of the region behind it) and RUN_ROW.
run_one() {
  local path=$1 r=$2 kind=$3 dur=$4 out pace=0 t0 t1 s0 s1 g0 g1 y0 y1 c0 c1 tw
  local srv_cpu rgn_cpu wrk_cpu oth_cpu rgn_ticks_in_srv=0
  RUN_SRV_US="" RUN_RGN_US=""
  out=$BENCH_TMP/wrk-$path-$kind-$r
  [[ $kind == paced ]] && pace=$PACE_MS
  local -a wenv=(env BENCH_COUNTER="${COUNTER[$path]}" BENCH_ROUTING="${ROUTING[$path]}"
    BENCH_PACE_MS="$pace" BENCH_V1=$([[ $path == v1 ]] && echo 1 || echo 0))
  if [[ $kind == sat ]]; then
    "${wenv[@]}" "${BENCH_CLIENT_PIN[@]}" wrk -t1 -c"$CONNS" -d"${WARMUP}s" -s "$SCRIPT" \
      "${URL[$path]}" >"$out.warm" 2>&1 || { cat "$out.warm" >&2; die "wrk failed ($path warm-up $r)"; }
    bench_wrk_check "$out.warm" "$path warm-up $r"
    SENT[$path]=$((SENT[$path] + $(bench_wrkstat "$out.warm" requests)))
    RUNS[$path]=$((RUNS[$path] + 1))
  fi
  bench_children_cpu c0
  t0=$(date +%s.%N) s0=$(bench_proc_ticks "${PID[$path]}") g0=$(bench_proc_ticks "$RG_PID")
  y0=$(bench_sys_busy_ticks)
  "${wenv[@]}" "${BENCH_CLIENT_PIN[@]}" wrk -t1 -c"$CONNS" -d"${dur}s" --latency -s "$SCRIPT" \
    "${URL[$path]}" >"$out" 2>&1 || { cat "$out" >&2; die "wrk failed ($path $kind run $r)"; }
  bench_children_cpu c1
  t1=$(date +%s.%N) s1=$(bench_proc_ticks "${PID[$path]}") g1=$(bench_proc_ticks "$RG_PID")
  y1=$(bench_sys_busy_ticks)
  bench_wrk_check "$out" "$path $kind run $r"
  bench_alive "$RG_PID" region
  bench_alive "${PID[$path]}" "$path"
  SENT[$path]=$((SENT[$path] + $(bench_wrkstat "$out" requests)))
  RUNS[$path]=$((RUNS[$path] + 1))
  # Connections to the region closed lately (TIME-WAIT on its port, kept 60 s): a proxy
  # whose upstream pool works leaves next to none (those seen come from wrk's direct runs
  # of the last minute, 2 * CONNS per run); one connection per request would leave
  # thousands.
  tw=$(ss -Htan state time-wait "( sport = :$RG_PORT or dport = :$RG_PORT )" 2>/dev/null | wc -l)
  [[ $path == direct ]] && rgn_ticks_in_srv=1
  # shellcheck disable=SC2154 # c0/c1 are set by bench_children_cpu (printf -v)
  # CPU in % of one core over the run, and CPU microseconds per answered request of the
  # server under test and of the region node behind it.
  read -r srv_cpu rgn_cpu wrk_cpu oth_cpu RUN_SRV_US RUN_RGN_US < <(awk -v s0="$s0" \
    -v s1="$s1" -v g0="$g0" -v g1="$g1" -v y0="$y0" -v y1="$y1" -v c0="$c0" -v c1="$c1" \
    -v t0="$t0" -v t1="$t1" -v hz="$BENCH_CLK_TCK" -v same="$rgn_ticks_in_srv" \
    -v n="$(bench_wrkstat "$out" requests)" 'BEGIN {
      t = t1 - t0; srv = (s1 - s0) / hz; rgn = same ? 0 : (g1 - g0) / hz; w = c1 - c0
      o = (y1 - y0) / hz - srv - rgn - w; if (o < 0) o = 0
      printf "%.0f %s %.0f %.0f %.2f %s\n", 100 * srv / t,
        same ? "-" : sprintf("%.0f", 100 * rgn / t), 100 * w / t, 100 * o / t,
        1e6 * srv / n, same ? "-" : sprintf("%.2f", 1e6 * rgn / n) }')
  RUN_RPS=$(bench_wrkstat "$out" rps)
  RUN_P50=$(us_to_ms "$(bench_wrkstat "$out" p50_us)")
  RUN_P99=$(us_to_ms "$(bench_wrkstat "$out" p99_us)")
  RUN_ROW=$(printf '%-8s %4s %11s %8s %8s %8s %8s %8s %8s %8s' "$path" "$r" "$RUN_RPS" \
    "$RUN_P50" "$RUN_P99" "$(us_to_ms "$(bench_wrkstat "$out" max_us)")" "$srv_cpu" \
    "$rgn_cpu" "$wrk_cpu" "$oth_cpu")
  log "$path $kind run $r: $RUN_RPS req/s, p50 $RUN_P50 ms, p99 $RUN_P99 ms, CPU: server $srv_cpu%, region $rgn_cpu%, wrk $wrk_cpu%, other $oth_cpu%; region TIME-WAIT $tw"
  ((oth_cpu < 15)) || DISTURBED+=" $path/$kind/$r"
  # The region alone outruns one wrk thread: direct is client-bound by design (it is the
  # latency baseline), so only the proxies' runs are named.
  [[ $kind == paced || $path == direct ]] || ((wrk_cpu < 95)) || CLIENT_BOUND+=" $path/$r"
  [[ $path == direct ]] || ((tw <= 8 * CONNS + 500)) || RECONNECTS+=" $path/$kind/$r($tw)"
}

log "pinning: $PIN_DESC; wrk -t1 -c$CONNS, warm-up ${WARMUP}s + ${DURATION}s, $ROUNDS rounds" \
  "$( ((PACE_MS > 0)) && echo "+ paced ${PACE_DURATION}s per path (~${PACE_MS} ms between answer and request)")"
for ((r = 1; r <= ROUNDS; r++)); do
  for path in "${PATHS[@]}"; do
    run_one "$path" "$r" sat "$DURATION"
    ROWS+=("$RUN_ROW")
    if awk -v a="$RUN_RPS" -v b="${BEST_RPS[$path]}" 'BEGIN { exit !(a > b) }'; then
      BEST_RPS[$path]=$RUN_RPS BEST_P50[$path]=$RUN_P50 BEST_P99[$path]=$RUN_P99 BEST_RUN[$path]=$r
      BEST_SRV_US[$path]=$RUN_SRV_US BEST_RGN_US[$path]=$RUN_RGN_US
    fi
  done
  ((PACE_MS > 0)) || continue
  for path in "${PATHS[@]}"; do
    run_one "$path" "$r" paced "$PACE_DURATION"
    PROWS+=("$RUN_ROW")
    # Best paced run: the lowest p99 (with that run's p50 and rate).
    if awk -v a="$RUN_P99" -v b="${PBEST_P99[$path]}" 'BEGIN { exit !(b < 0 || a < b) }'; then
      PBEST_P99[$path]=$RUN_P99 PBEST_P50[$path]=$RUN_P50 PBEST_RPS[$path]=$RUN_RPS PBEST_RUN[$path]=$r
    fi
  done
done

# Every answered increment must have been counted once: the region's count of each path's
# counter is at least what wrk saw answered on that path, and at most that plus the
# requests still in flight when each wrk run stopped (one per connection per run).
for path in "${PATHS[@]}"; do
  got=$(curl -fsS --max-time 5 "$RG_URL/counter/${COUNTER[$path]}" | jq -r .local_count)
  lo=${SENT[$path]}
  hi=$((lo + CONNS * RUNS[$path]))
  ((got >= lo && got <= hi)) ||
    die "$path: the region's counter '${COUNTER[$path]}' is $got after $lo answered increments (expected $lo..$hi)"
  log "$path: region counter '${COUNTER[$path]}' = $got for $lo answered increments in ${RUNS[$path]} runs (ok)"
done
away=$(bench_metric "$RG_URL" counterd_token_increments_total)
[[ -z $away || $away == 0 ]] ||
  die "region: counterd_token_increments_total = $away (with one region every token is its own)"

sub() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a - b }'; }
ratio=$(awk -v a="${BEST_RPS[gateway]}" -v b="${BEST_RPS[nginx]}" 'BEGIN { printf "%.2f", a / b }')
verdict=$(awk -v r="$ratio" 'BEGIN { print (r >= 1.0) ? "met" : "NOT met" }')
gw_add50=$(sub "${BEST_P50[gateway]}" "${BEST_P50[direct]}")
gw_add99=$(sub "${BEST_P99[gateway]}" "${BEST_P99[direct]}")
nx_add50=$(sub "${BEST_P50[nginx]}" "${BEST_P50[direct]}")
nx_add99=$(sub "${BEST_P99[nginx]}" "${BEST_P99[direct]}")
HDR=$(printf '%-8s %4s %11s %8s %8s %8s %8s %8s %8s %8s' path run 'req/s' 'p50 ms' 'p99 ms' \
  'max ms' 'srv CPU%' 'rgn CPU%' 'wrk CPU%' 'oth CPU%')

echo
echo "POST increment of 1 (gateway: /api/increment with \"routing\":\"us-east\"; nginx, direct: /increment)"
echo "to one region node us-east-1: wrk -t1 -c$CONNS, ${DURATION}s per run after ${WARMUP}s warm-up"
echo "pinning: $PIN_DESC"
if [[ $SETUP == lab ]]; then
  echo "setup: lab (scripts/lab up --base-port $LAB_BASE, its defaults: Lua watch, Prometheus, three regions"
  echo " with data directories and peers; the lab's gateway and its us-east node, nginx proxying to that node)"
else
  echo "setup: standalone (one region node, a gateway routing to it alone)"
fi
echo "(srv CPU = gateway or nginx, or the region in direct; rgn CPU = the region node behind the proxy)"
echo
echo "$HDR"
printf '%s\n' "${ROWS[@]}"
echo
echo "best of $ROUNDS runs (highest req/s, with that run's latencies; best run: gateway #${BEST_RUN[gateway]}, nginx #${BEST_RUN[nginx]}, direct #${BEST_RUN[direct]}):"
printf '%-8s %11s %8s %8s %13s %13s %11s %11s\n' path 'req/s' 'p50 ms' 'p99 ms' \
  'added p50 ms' 'added p99 ms' 'srv us/req' 'rgn us/req'
printf '%-8s %11s %8s %8s %13s %13s %11s %11s\n' gateway "${BEST_RPS[gateway]}" \
  "${BEST_P50[gateway]}" "${BEST_P99[gateway]}" "$gw_add50" "$gw_add99" \
  "${BEST_SRV_US[gateway]}" "${BEST_RGN_US[gateway]}"
printf '%-8s %11s %8s %8s %13s %13s %11s %11s\n' nginx "${BEST_RPS[nginx]}" \
  "${BEST_P50[nginx]}" "${BEST_P99[nginx]}" "$nx_add50" "$nx_add99" \
  "${BEST_SRV_US[nginx]}" "${BEST_RGN_US[nginx]}"
printf '%-8s %11s %8s %8s %13s %13s %11s %11s\n' direct "${BEST_RPS[direct]}" \
  "${BEST_P50[direct]}" "${BEST_P99[direct]}" - - - "${BEST_SRV_US[direct]}"
echo "ratio gateway/nginx: $ratio (target >= 1.0: $verdict)"
echo "(added = the path's latency minus the direct path's, both at wrk -c$CONNS; at saturation a"
echo " closed loop's latency is mostly CONNS / req/s, so these also reflect the throughput gap;"
echo " us/req = CPU microseconds per answered request of the proxy (srv) and of the region node)"
paced_extra=""
if ((PACE_MS > 0)); then
  pg50=$(sub "${PBEST_P50[gateway]}" "${PBEST_P50[direct]}")
  pg99=$(sub "${PBEST_P99[gateway]}" "${PBEST_P99[direct]}")
  pn50=$(sub "${PBEST_P50[nginx]}" "${PBEST_P50[direct]}")
  pn99=$(sub "${PBEST_P99[nginx]}" "${PBEST_P99[direct]}")
  echo
  echo "paced: wrk -t1 -c$CONNS, each connection waits 1..$((2 * PACE_MS - 1)) ms (mean $PACE_MS) after an answer, ${PACE_DURATION}s per run"
  echo "$HDR"
  printf '%s\n' "${PROWS[@]}"
  echo
  echo "paced, best of $ROUNDS (lowest p99, with that run's p50; best run: gateway #${PBEST_RUN[gateway]}, nginx #${PBEST_RUN[nginx]}, direct #${PBEST_RUN[direct]}):"
  printf '%-8s %11s %8s %8s %14s %14s\n' path 'req/s' 'p50 ms' 'p99 ms' 'added p50 ms' 'added p99 ms'
  printf '%-8s %11s %8s %8s %14s %14s\n' gateway "${PBEST_RPS[gateway]}" "${PBEST_P50[gateway]}" \
    "${PBEST_P99[gateway]}" "$pg50" "$pg99"
  printf '%-8s %11s %8s %8s %14s %14s\n' nginx "${PBEST_RPS[nginx]}" "${PBEST_P50[nginx]}" \
    "${PBEST_P99[nginx]}" "$pn50" "$pn99"
  printf '%-8s %11s %8s %8s %14s %14s\n' direct "${PBEST_RPS[direct]}" "${PBEST_P50[direct]}" \
    "${PBEST_P99[direct]}" - -
  paced_extra=" paced_rps=${PBEST_RPS[direct]} paced_gateway_p50_ms=${PBEST_P50[gateway]} paced_gateway_p99_ms=${PBEST_P99[gateway]} paced_nginx_p50_ms=${PBEST_P50[nginx]} paced_nginx_p99_ms=${PBEST_P99[nginx]} paced_direct_p50_ms=${PBEST_P50[direct]} paced_direct_p99_ms=${PBEST_P99[direct]}"
fi
[[ -z $CLIENT_BOUND ]] ||
  echo "WARNING: wrk used >= 95% of its core in:$CLIENT_BOUND: those runs may be client-bound"
echo "(direct runs are client-bound by design: one wrk thread cannot saturate the region node alone)"
[[ -z $DISTURBED ]] ||
  echo "WARNING: other processes used >= 15% of a core during:$DISTURBED: those runs are noisy"
[[ -z $RECONNECTS ]] ||
  echo "WARNING: many connections to the region closed (TIME-WAIT) during:$RECONNECTS: the proxy's upstream pool did not keep them"
v1_extra=""
if [[ $MODE == v1 ]]; then
  v1_ratio=$(awk -v a="${BEST_RPS[v1]}" -v b="${BEST_RPS[gateway]}" 'BEGIN { printf "%.2f", a / b }')
  echo
  echo "AddCount (POST /v1/counters/default/${COUNTER[v1]}/add): ${BEST_RPS[v1]} req/s, p50 ${BEST_P50[v1]} ms, p99 ${BEST_P99[v1]} ms (best run #${BEST_RUN[v1]}, ${BEST_SRV_US[v1]} us/req)"
  echo "ratio AddCount / POST /api/increment through the gateway: $v1_ratio"
  v1_extra=" v1_rps=${BEST_RPS[v1]} v1_p50_ms=${BEST_P50[v1]} v1_p99_ms=${BEST_P99[v1]} v1_ratio=$v1_ratio"
fi
echo "RESULT gateway gateway_rps=${BEST_RPS[gateway]} nginx_rps=${BEST_RPS[nginx]} ratio=$ratio gateway_p50_ms=${BEST_P50[gateway]} gateway_p99_ms=${BEST_P99[gateway]} nginx_p50_ms=${BEST_P50[nginx]} nginx_p99_ms=${BEST_P99[nginx]} direct_p50_ms=${BEST_P50[direct]} direct_p99_ms=${BEST_P99[direct]} direct_rps=${BEST_RPS[direct]} gateway_added_p50_ms=$gw_add50 gateway_added_p99_ms=$gw_add99 nginx_added_p50_ms=$nx_add50 nginx_added_p99_ms=$nx_add99$paced_extra$v1_extra setup=$SETUP"
