#!/usr/bin/env bash
# Throughput of POST /increment on one counterd region node, against an anchor: nginx
# (1 worker) + ngx_http_lua serving the same JSON contract from a lua_shared_dict.
#
#   bench/increment.sh            # DURATION=10 ROUNDS=3 CONNS=32 by default
#
# Env: DURATION (s, default 10) per measured run, WARMUP (s, default 2) before each,
# ROUNDS (default 3): runs alternate counterd, nginx, counterd, nginx, ...; the figure
# kept for each server is its BEST run (highest req/s, with that run's latencies).
# CONNS (default 32) connections, 1 wrk thread. See bench/README.md.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
ROUNDS=${ROUNDS:-3}
CONNS=${CONNS:-32}
SCRIPT=$BENCH_DIR/wrk/increment.lua

bench_need_debs wrk nginx libnginx-mod-http-lua lua-cjson jq curl iproute2 util-linux procps
bench_need_counterd

# ---------------------------------------------------------------- counterd, one node
bench_free_port CD_PORT
CD_URL=http://127.0.0.1:$CD_PORT
bench_start counterd env -u PEER_ENDPOINTS -u SERVICE_PORT -u COUNTERD_ROLE -u REGION \
  -u NODE_ID COUNTERD_LOG=warn "${BENCH_SERVER_PIN[@]}" "$COUNTERD_BIN" --role region \
  --port "$CD_PORT" --region bench --node-id bench-1
CD_PID=$BENCH_PID

# ------------------------------------------------------------------ nginx anchor
bench_start_nginx increment.conf

bench_wait_health "$CD_URL" "$CD_PID" counterd
bench_wait_health "$NGX_URL" "$NGX_PID" nginx
bench_check_increment "$CD_URL" counterd bench-1 bench
bench_check_increment "$NGX_URL" nginx bench-1 bench

declare -A URL=([counterd]=$CD_URL [nginx]=$NGX_URL)
declare -A PID=([counterd]=$CD_PID [nginx]=$NGX_PID)
declare -A SENT=([counterd]=0 [nginx]=0) RUNS=([counterd]=0 [nginx]=0)
declare -A BEST_RPS=([counterd]=0 [nginx]=0) BEST_P50 BEST_P99 BEST_RUN
ROWS=()
CLIENT_BOUND=""
DISTURBED=""

log "pinning: $BENCH_PIN_DESC; wrk -t1 -c$CONNS, warm-up ${WARMUP}s + ${DURATION}s, $ROUNDS rounds"
for ((r = 1; r <= ROUNDS; r++)); do
  for srv in counterd nginx; do
    out=$BENCH_TMP/wrk-$srv-$r
    bench_wrk "$out.warm" -t1 -c"$CONNS" -d"${WARMUP}s" -s "$SCRIPT" "${URL[$srv]}/increment"
    bench_wrk_check "$out.warm" "$srv warm-up $r"
    bench_children_cpu c0
    t0=$(date +%s.%N) s0=$(bench_proc_ticks "${PID[$srv]}") y0=$(bench_sys_busy_ticks)
    bench_wrk "$out" -t1 -c"$CONNS" -d"${DURATION}s" --latency -s "$SCRIPT" "${URL[$srv]}/increment"
    bench_children_cpu c1
    t1=$(date +%s.%N) s1=$(bench_proc_ticks "${PID[$srv]}") y1=$(bench_sys_busy_ticks)
    srv_cpu=$(awk -v a="$s0" -v b="$s1" -v t0="$t0" -v t1="$t1" -v hz="$BENCH_CLK_TCK" \
      'BEGIN { printf "%.0f", 100 * (b - a) / hz / (t1 - t0) }')
    # shellcheck disable=SC2154 # c0/c1 are set by bench_children_cpu (printf -v)
    wrk_cpu=$(awk -v a="$c0" -v b="$c1" -v t0="$t0" -v t1="$t1" \
      'BEGIN { printf "%.0f", 100 * (b - a) / (t1 - t0) }')
    # Everything else the machine ran meanwhile, in % of one core.
    oth_cpu=$(awk -v y0="$y0" -v y1="$y1" -v s0="$s0" -v s1="$s1" -v c0="$c0" -v c1="$c1" \
      -v t0="$t0" -v t1="$t1" -v hz="$BENCH_CLK_TCK" 'BEGIN {
        o = ((y1 - y0) - (s1 - s0)) / hz - (c1 - c0); if (o < 0) o = 0
        printf "%.0f", 100 * o / (t1 - t0) }')
    bench_wrk_check "$out" "$srv run $r"
    bench_alive "${PID[$srv]}" "$srv"
    SENT[$srv]=$((SENT[$srv] + $(bench_wrkstat "$out.warm" requests) + $(bench_wrkstat "$out" requests)))
    RUNS[$srv]=$((RUNS[$srv] + 2))
    rps=$(bench_wrkstat "$out" rps)
    p50=$(us_to_ms "$(bench_wrkstat "$out" p50_us)")
    p99=$(us_to_ms "$(bench_wrkstat "$out" p99_us)")
    ROWS+=("$(printf '%-9s %5s %12s %9s %9s %9s %9s %9s' "$srv" "$r" "$rps" "$p50" "$p99" \
      "$srv_cpu" "$wrk_cpu" "$oth_cpu")")
    log "$srv run $r: $rps req/s, p50 $p50 ms, p99 $p99 ms, CPU: server $srv_cpu%, wrk $wrk_cpu%, other $oth_cpu%"
    ((oth_cpu < 15)) || DISTURBED+=" $srv/$r"
    ((wrk_cpu < 95)) || CLIENT_BOUND+=" $srv/$r"
    if awk -v a="$rps" -v b="${BEST_RPS[$srv]}" 'BEGIN { exit !(a > b) }'; then
      BEST_RPS[$srv]=$rps BEST_P50[$srv]=$p50 BEST_P99[$srv]=$p99 BEST_RUN[$srv]=$r
    fi
  done
done

# Every answered increment must have been counted: the server's count of "bench" is at
# least what wrk saw answered, and at most that plus the requests still in flight when
# each wrk run stopped (one per connection per run).
for srv in counterd nginx; do
  got=$(curl -fsS --max-time 5 "${URL[$srv]}/counter/bench" | jq -r .local_count)
  lo=${SENT[$srv]}
  hi=$((lo + CONNS * RUNS[$srv]))
  ((got >= lo && got <= hi)) ||
    die "$srv: counter 'bench' is $got after $lo answered increments (expected $lo..$hi)"
  log "$srv: counter 'bench' = $got for $lo answered increments (ok)"
done

ratio=$(awk -v a="${BEST_RPS[counterd]}" -v b="${BEST_RPS[nginx]}" 'BEGIN { printf "%.2f", a / b }')
verdict=$(awk -v r="$ratio" 'BEGIN { print (r >= 1.0) ? "met" : "NOT met" }')

echo
echo "POST /increment {\"counter_name\":\"bench\",\"amount\":1}: wrk -t1 -c$CONNS, ${DURATION}s per run after ${WARMUP}s warm-up, $BENCH_PIN_DESC"
echo
printf '%-9s %5s %12s %9s %9s %9s %9s %9s\n' server run 'req/s' 'p50 ms' 'p99 ms' 'srv CPU%' \
  'wrk CPU%' 'oth CPU%'
printf '%s\n' "${ROWS[@]}"
echo
echo "best of $ROUNDS runs (highest req/s, with that run's latencies; best run: counterd #${BEST_RUN[counterd]}, nginx #${BEST_RUN[nginx]}):"
printf '%-9s %12s %9s %9s\n' server 'req/s' 'p50 ms' 'p99 ms'
for srv in counterd nginx; do
  printf '%-9s %12s %9s %9s\n' "$srv" "${BEST_RPS[$srv]}" "${BEST_P50[$srv]}" "${BEST_P99[$srv]}"
done
echo "ratio counterd/nginx: $ratio (target >= 1.0: $verdict)"
[[ -z $CLIENT_BOUND ]] ||
  echo "WARNING: wrk used >= 95% of its core in:$CLIENT_BOUND: those runs may be client-bound"
[[ -z $DISTURBED ]] ||
  echo "WARNING: other processes used >= 15% of a core during:$DISTURBED: those runs are noisy"
echo "RESULT increment counterd_rps=${BEST_RPS[counterd]} nginx_rps=${BEST_RPS[nginx]} ratio=$ratio counterd_p50_ms=${BEST_P50[counterd]} counterd_p99_ms=${BEST_P99[counterd]} nginx_p50_ms=${BEST_P50[nginx]} nginx_p99_ms=${BEST_P99[nginx]}"
