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
#
#   bench/increment.sh batch      # the batch configuration (DURATION=8 ROUNDS=5 BATCH=16)
#
# POST /increments, BATCH increments a request, on a region node with --data-dir and
# --fsync everysec, against Redis (appendonly yes, appendfsync everysec) taking INCR
# pipelined BATCH deep (redis-benchmark -P BATCH), both over CONNS connections; runs
# alternate counterd, redis, ...; the figures are operations (increments) per second, the
# median of ROUNDS runs of each with their spread (min-max).
#
#   bench/increment.sh gateway-batch   # the same, through a gateway to that region
#
# POST /api/increments, BATCH increments a request, to a gateway routing to that one region
# (gateway and region both on the server's core), against the same Redis, alike.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

if [[ ${1:-single} == batch || ${1:-} == gateway-batch ]]; then
  DURATION=${DURATION:-8}
  ROUNDS=${ROUNDS:-5}
fi
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
ROUNDS=${ROUNDS:-3}
CONNS=${CONNS:-32}
SCRIPT=$BENCH_DIR/wrk/increment.lua
CONFIG=${1:-single}

# ------------------------------------------------------- the batch configurations
if [[ $CONFIG == batch || $CONFIG == gateway-batch ]]; then
  BATCH=${BATCH:-16}
  REDIS_KEY='counter:__rand_int__' # redis-benchmark -t incr without -r: one key, this name
  bench_need_debs wrk redis-server redis-tools jq curl iproute2 util-linux procps coreutils
  bench_need_counterd

  bench_free_port CD_PORT
  bench_free_port RD_PORT
  CD_URL=http://127.0.0.1:$CD_PORT
  mkdir -p "$BENCH_TMP/data-counterd" "$BENCH_TMP/data-redis"
  bench_start counterd env -u PEER_ENDPOINTS -u SERVICE_PORT -u COUNTERD_ROLE -u REGION \
    -u NODE_ID -u DATA_DIR -u FSYNC_POLICY COUNTERD_LOG=warn "${BENCH_SERVER_PIN[@]}" \
    "$COUNTERD_BIN" --role region --port "$CD_PORT" --region bench --node-id bench-1 \
    --data-dir "$BENCH_TMP/data-counterd" --fsync everysec
  CD_PID=$BENCH_PID
  bench_start redis "${BENCH_SERVER_PIN[@]}" redis-server --port "$RD_PORT" --bind 127.0.0.1 \
    --daemonize no --dir "$BENCH_TMP/data-redis" --save "" --appendonly yes \
    --appendfsync everysec
  RD_PID=$BENCH_PID
  bench_wait_health "$CD_URL" "$CD_PID" counterd
  # CD: the name of counterd's side in the table; CD_PIDS: its processes, whose CPU counts.
  CD=counterd CD_PIDS=$CD_PID CD_TARGET=$CD_URL/increments CD_WHAT="POST /increments"
  if [[ $CONFIG == gateway-batch ]]; then
    # The coordinator serves reads only: a free port nothing listens on.
    bench_free_port GW_PORT
    bench_free_port COORD_PORT
    GW_URL=http://127.0.0.1:$GW_PORT
    bench_start gateway env -u REGION_ENDPOINTS -u COUNTER_ENDPOINTS -u COORDINATOR_URL \
      -u SERVICE_PORT -u COUNTERD_ROLE COUNTERD_LOG=warn "${BENCH_SERVER_PIN[@]}" \
      "$COUNTERD_BIN" --role gateway --port "$GW_PORT" --regions "bench=$CD_URL" \
      --coordinator "http://127.0.0.1:$COORD_PORT"
    GW_PID=$BENCH_PID
    bench_wait_health "$GW_URL" "$GW_PID" gateway
    CD=gateway CD_PIDS="$GW_PID $CD_PID" CD_TARGET=$GW_URL/api/increments
    CD_WHAT="POST /api/increments through a gateway to the region (both on the server's CPU)"
    # Its tokens name the region as their home once it knows the region's node id: until
    # then the region holds the items pending. Asked until they are its own.
    for ((i = 0; i < 50; i++)); do
      body=$(curl -fsS --max-time 5 -X POST -H 'Content-Type: application/json' --data \
        '{"increments":[{"counter_name":"bench-warm"}],"routing":"bench"}' \
        "$GW_URL/api/increments") || die "gateway: POST /api/increments failed"
      jq -e '.results[0].pending' <<<"$body" >/dev/null || break
      sleep 0.1
    done
  fi
  bench_wait_redis "$RD_PORT" "$RD_PID" redis
  rd() { redis-cli -p "$RD_PORT" "$@"; }
  [[ $(rd config get appendfsync | tail -n 1) == everysec ]] || die "redis: appendfsync is not everysec"
  [[ $(rd config get appendonly | tail -n 1) == yes ]] || die "redis: appendonly is not yes"

  # counterd must answer a batch item by item: two items on "bench-check", each 200, +1 each.
  body=$(curl -fsS --max-time 5 -X POST -H 'Content-Type: application/json' --data \
    '{"increments":[{"counter_name":"bench-check","amount":1},{"counter_name":"bench-check","amount":1}],"routing":"bench"}' \
    "$CD_TARGET") || die "$CD: $CD_WHAT failed"
  jq -e '.ok == 2 and .failed == 0 and .results[0].status == 200 and
    .results[1].local_count == .results[0].local_count + 1 and .results[1].node_id == "bench-1" and
    (.results[1].pending | not)' <<<"$body" >/dev/null || die "$CD: wrong answer to $CD_WHAT: $body"
  log "$CD: $CD_WHAT ok: $body"

  cd_count() { curl -fsS --max-time 5 "$CD_URL/counter/bench" | jq -r .local_count; }
  rd_count() { local v; v=$(rd get "$REDIS_KEY"); echo "${v:-0}"; }
  declare -A OPS_ROWS=([$CD]="" [redis]="") US_ROWS=([$CD]="" [redis]="")
  ROWS=()
  DISTURBED=""
  # meas_begin PID / meas_end PID OPS: the server's CPU over the measured run, in % of a
  # core and in microseconds per operation, and what everything else used (% of a core).
  # PID may be a list ("gateway region"): their CPU summed.
  procs_ticks() { local p t=0; for p in $1; do t=$((t + $(bench_proc_ticks "$p"))); done; echo "$t"; }
  meas_begin() { M_T0=$(date +%s.%N) M_S0=$(procs_ticks "$1") M_Y0=$(bench_sys_busy_ticks); }
  meas_end() {
    local t1 s1 y1
    t1=$(date +%s.%N) s1=$(procs_ticks "$1") y1=$(bench_sys_busy_ticks)
    read -r M_CPU M_US M_OTH < <(awk -v s0="$M_S0" -v s1="$s1" -v y0="$M_Y0" -v y1="$y1" \
      -v t0="$M_T0" -v t1="$t1" -v hz="$BENCH_CLK_TCK" -v n="$2" 'BEGIN {
        cpu = (s1 - s0) / hz; o = ((y1 - y0) / hz - cpu) / (t1 - t0) - 1; if (o < 0) o = 0
        printf "%.0f %.3f %.0f\n", 100 * cpu / (t1 - t0), 1e6 * cpu / n, 100 * o }')
  }
  record() { # record SERVER ROUND OPS P50 P99 CHECK (after meas_end)
    OPS_ROWS[$1]+="$3 "
    US_ROWS[$1]+="$M_US "
    ROWS+=("$(printf '%-9s %5s %12s %9s %9s %8s %8s %8s  %s' "$1" "$2" "$3" "$4" "$5" "$M_CPU" \
      "$M_US" "$M_OTH" "$6")")
    log "$1 run $2: $3 ops/s, p50 $4 ms, p99 $5 ms, server CPU $M_CPU% ($M_US us/op), other $M_OTH% ($6)"
    ((M_OTH < 15)) || DISTURBED+=" $1/$2"
  }
  run_counterd() {
    local r=$1 out=$BENCH_TMP/wrk-batch-$1 before after items lo hi
    BENCH_BATCH=$BATCH bench_wrk "$out.warm" -t1 -c"$CONNS" -d"${WARMUP}s" -s "$BENCH_DIR/wrk/increments.lua" "$CD_TARGET"
    bench_wrk_check "$out.warm" "$CD warm-up $r"
    before=$(cd_count)
    meas_begin "$CD_PIDS"
    BENCH_BATCH=$BATCH bench_wrk "$out" -t1 -c"$CONNS" -d"${DURATION}s" --latency -s "$BENCH_DIR/wrk/increments.lua" "$CD_TARGET"
    items=$(bench_wrkstat "$out" items)
    meas_end "$CD_PIDS" "$items"
    bench_wrk_check "$out" "$CD run $r"
    bench_alive "$CD_PID" counterd
    [[ -z ${GW_PID:-} ]] || bench_alive "$GW_PID" gateway
    after=$(cd_count)
    # Every answered item counted; at most one batch per connection was in flight at the end.
    lo=$items hi=$((items + CONNS * BATCH))
    (((after - before) >= lo && (after - before) <= hi)) ||
      die "$CD run $r: bench went $before -> $after for $items answered items"
    record "$CD" "$r" "$(bench_wrkstat "$out" ops)" "$(us_to_ms "$(bench_wrkstat "$out" p50_us)")" \
      "$(us_to_ms "$(bench_wrkstat "$out" p99_us)")" "+$((after - before)) for $items answered"
  }
  run_redis() {
    local r=$1 out=$BENCH_TMP/rb-batch-$1 before mid after n rc=0 line ops p50 p99
    before=$(rd_count)
    timeout "$WARMUP" "${BENCH_CLIENT_PIN[@]}" redis-benchmark -p "$RD_PORT" -c "$CONNS" \
      -P "$BATCH" -n 2000000000 -t incr -q >"$out.warm" 2>&1 || rc=$?
    ((rc == 124)) || { cat "$out.warm" >&2; die "redis warm-up $r: redis-benchmark exited with $rc"; }
    sleep 0.2 # the commands the killed client had sent are applied before the next GET
    mid=$(rd_count)
    ((mid > before)) || die "redis warm-up $r: no INCR applied"
    n=$(awk -v d=$((mid - before)) -v w="$WARMUP" -v t="$DURATION" \
      'BEGIN { n = int(d / w * t / 1000 + 0.5) * 1000; print (n < 10000) ? 10000 : n }')
    meas_begin "$RD_PID"
    "${BENCH_CLIENT_PIN[@]}" redis-benchmark -p "$RD_PORT" -c "$CONNS" -P "$BATCH" -n "$n" \
      -t incr --csv >"$out" 2>&1 || { cat "$out" >&2; die "redis run $r: redis-benchmark failed"; }
    meas_end "$RD_PID" "$n"
    bench_alive "$RD_PID" redis
    line=$(grep '^"INCR",' "$out") || { cat "$out" >&2; die "redis run $r: no INCR line in redis-benchmark's CSV"; }
    IFS=, read -r ops p50 p99 < <(tr -d '"' <<<"$line" | awk -F, '{ printf "%.2f,%.2f,%.2f\n", $2, $5, $7 }')
    after=$(rd_count)
    # redis-benchmark -P sends whole pipelines: up to one more per connection than asked.
    ((after - mid >= n && after - mid <= n + CONNS * BATCH)) ||
      die "redis run $r: $REDIS_KEY went $mid -> $after for $n INCR asked"
    record redis "$r" "$ops" "$p50" "$p99" "+$((after - mid)) for $n asked"
  }
  # stats "v1 v2 ...": "median min max"
  stats() { tr ' ' '\n' <<<"$1" | grep . | sort -g | awk '{ v[NR] = $1 }
    END { m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
          printf "%.*f %.*f %.*f\n", d, m, d, v[1], d, v[NR] }' d="${2:-0}"; }

  log "pinning: $BENCH_PIN_DESC (redis-benchmark like wrk); $CONNS connections, batches of $BATCH, warm-up ${WARMUP}s + ~${DURATION}s, $ROUNDS rounds"
  for ((r = 1; r <= ROUNDS; r++)); do
    run_counterd "$r"
    run_redis "$r"
  done
  read -r CD_MED CD_MIN CD_MAX < <(stats "${OPS_ROWS[$CD]}")
  read -r RD_MED RD_MIN RD_MAX < <(stats "${OPS_ROWS[redis]}")
  read -r CD_US _ _ < <(stats "${US_ROWS[$CD]}" 3)
  read -r RD_US _ _ < <(stats "${US_ROWS[redis]}" 3)
  ratio=$(awk -v a="$CD_MED" -v b="$RD_MED" 'BEGIN { printf "%.2f", a / b }')
  verdict=$(awk -v r="$ratio" 'BEGIN { print (r >= 1.0) ? "met" : "NOT met" }')
  spread() { awk -v m="$1" -v lo="$2" -v hi="$3" 'BEGIN { printf "%.0f%%", 100 * (hi - lo) / m }'; }
  echo
  echo "Batches of $BATCH increments, $CONNS connections, fsync everysec, $BENCH_PIN_DESC:"
  echo "  $CD: $CD_WHAT (wrk -t1 -c$CONNS, ${DURATION}s per run after ${WARMUP}s warm-up, region --data-dir --fsync everysec)"
  echo "  redis:    INCR pipelined (redis-benchmark -P $BATCH -c $CONNS -t incr, appendonly yes, appendfsync everysec)"
  echo
  printf '%-9s %5s %12s %9s %9s %8s %8s %8s  %s\n' server run 'ops/s' 'p50 ms' 'p99 ms' 'srv CPU%' \
    'us/op' 'oth CPU%' check
  printf '%s\n' "${ROWS[@]}"
  echo
  printf '%-9s %12s %12s %12s %8s %14s\n' server 'median ops/s' 'min' 'max' spread 'median us/op'
  printf '%-9s %12s %12s %12s %8s %14s\n' "$CD" "$CD_MED" "$CD_MIN" "$CD_MAX" \
    "$(spread "$CD_MED" "$CD_MIN" "$CD_MAX")" "$CD_US"
  printf '%-9s %12s %12s %12s %8s %14s\n' redis "$RD_MED" "$RD_MIN" "$RD_MAX" \
    "$(spread "$RD_MED" "$RD_MIN" "$RD_MAX")" "$RD_US"
  cpu_ratio=$(awk -v a="$CD_US" -v b="$RD_US" 'BEGIN { printf "%.2f", b / a }')
  echo "ratio $CD/redis (medians): $ratio (target >= 1.0: $verdict)"
  echo "server CPU per operation, redis/$CD (medians; > 1: $CD uses less): $cpu_ratio"
  [[ -z $DISTURBED ]] ||
    echo "WARNING: other processes used >= 15% of a core during:$DISTURBED: those runs are noisy"
  [[ $CONFIG == batch ]] ||
    echo "RESULT increment_gateway_batch batch=$BATCH gateway_ops=$CD_MED redis_ops=$RD_MED ratio=$ratio gateway_min=$CD_MIN gateway_max=$CD_MAX redis_min=$RD_MIN redis_max=$RD_MAX gateway_us_per_op=$CD_US redis_us_per_op=$RD_US cpu_ratio=$cpu_ratio rounds=$ROUNDS"
  [[ $CONFIG == gateway-batch ]] ||
    echo "RESULT increment_batch batch=$BATCH counterd_ops=$CD_MED redis_ops=$RD_MED ratio=$ratio counterd_min=$CD_MIN counterd_max=$CD_MAX redis_min=$RD_MIN redis_max=$RD_MAX counterd_us_per_op=$CD_US redis_us_per_op=$RD_US cpu_ratio=$cpu_ratio rounds=$ROUNDS"
  exit 0
fi
[[ $CONFIG == single ]] || die "unknown configuration '$CONFIG' (single | batch | gateway-batch)"

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
