#!/usr/bin/env bash
# What durability costs: POST /increment on one counterd region node in memory and with a
# data directory under --fsync no | everysec | always, side by side with Redis (INCR) in
# memory and with an append-only file under appendfsync no | everysec | always.
#
#   bench/durability.sh           # DURATION=10 ROUNDS=2 CONNS=32 by default (~3.5 min)
#
# Env: DURATION (s, default 10) per measured run, WARMUP (s, default 2) before each,
# ROUNDS (default 2): each round runs counterd mem, redis mem, counterd no, redis no,
# counterd everysec, ..., redis always; the figure kept for each configuration is its
# BEST run (highest req/s, with that run's latencies). CONNS (default 32) connections
# (wrk: 1 thread; redis-benchmark: -c CONNS -P 1). RESTART_SIGNAL (TERM | KILL, default
# TERM): how counterd is stopped before the read-back check. FSYNC_PROBES (default 300)
# synchronous 4 KiB appends timed to tell how fast this machine's fsync is. CONFS (default
# "mem no everysec always"): the configurations to run, e.g. CONFS=always. See
# bench/README.md.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
ROUNDS=${ROUNDS:-2}
CONNS=${CONNS:-32}
RESTART_SIGNAL=${RESTART_SIGNAL:-TERM}
FSYNC_PROBES=${FSYNC_PROBES:-300}
SCRIPT=$BENCH_DIR/wrk/increment.lua
read -r -a CONFS <<<"${CONFS:-mem no everysec always}"
REDIS_KEY='counter:__rand_int__' # redis-benchmark -t incr without -r: one key, this name

[[ $RESTART_SIGNAL == TERM || $RESTART_SIGNAL == KILL ]] ||
  die "RESTART_SIGNAL must be TERM or KILL, not '$RESTART_SIGNAL'"

bench_need_debs wrk redis-server redis-tools jq curl iproute2 util-linux procps coreutils
bench_need_counterd

# ------------------------------------------------------------ the disk under the data
# Every data directory (counterd's and Redis') is a fresh folder inside BENCH_TMP, which
# is under /tmp: the same filesystem as /tmp.
FS_DESC=$(bench_fs_of "$BENCH_TMP")
FS_TYPE=${FS_DESC%% *}
DEV=$(bench_blockdev_of "$BENCH_TMP")
log "data directories in $BENCH_TMP: $FS_DESC${DEV:+, block device $DEV}"

read -r fl0 fms0 < <(bench_dev_flushes "$DEV")
FSYNC_US=$(bench_fdatasync_us "$BENCH_TMP" "$FSYNC_PROBES")
read -r fl1 fms1 < <(bench_dev_flushes "$DEV")
FLUSH_US=n/a
if ((fl1 > fl0)); then
  FLUSH_US=$(awk -v n=$((fl1 - fl0)) -v ms=$((fms1 - fms0)) 'BEGIN { printf "%.0f", 1000 * ms / n }')
fi
# Suspiciously fast: a synchronous 4 KiB append under 500 us or a device flush under 250 us
# (an ordinary SSD without power-loss protection takes ~0.5-3 ms per fdatasync, a disk more).
FSYNC_NOTE=""
if [[ $FS_TYPE == tmpfs || $FS_TYPE == ramfs ]]; then
  FSYNC_NOTE="the data directories are on $FS_TYPE (memory): fsync is a no-op, the always and everysec figures say nothing about a disk"
elif ((FSYNC_US < 500)); then
  FSYNC_NOTE="fsync is suspiciously fast (${FSYNC_US} us per synchronous 4 KiB append): a disk with power-loss protection, or a write cache that does not reach stable storage (volatile disk cache, VM disk with cache=unsafe/writeback); on an ordinary disk the always figures would be lower"
elif [[ $FLUSH_US != n/a ]] && ((FLUSH_US < 250)); then
  FSYNC_NOTE="the device's cache flushes are suspiciously fast (${FLUSH_US} us each, $((fl1 - fl0)) flushes for $FSYNC_PROBES synchronous appends): a disk with power-loss protection or a (virtual) disk whose flush does not reach stable storage; on an ordinary disk the always figures would be lower"
fi
log "fsync probe: $FSYNC_PROBES x (4 KiB append + fdatasync, dd oflag=dsync): mean $FSYNC_US us; device flushes meanwhile: $((fl1 - fl0)), mean $FLUSH_US us"
[[ -z $FSYNC_NOTE ]] || log "NOTE: $FSYNC_NOTE"

# ------------------------------------------------------------------- counterd nodes
declare -A CD_PORT CD_PID CD_ARGS CD_NAME CD_STARTS
for c in "${CONFS[@]}"; do
  bench_free_port "CD_PORT[$c]"
  if [[ $c == mem ]]; then
    CD_ARGS[$c]=""
  else
    CD_ARGS[$c]="--data-dir $BENCH_TMP/data-counterd-$c --fsync $c"
  fi
  CD_STARTS[$c]=0
done

# start_counterd CONF: starts (or starts again) the counterd node of CONF.
start_counterd() {
  local c=$1
  CD_STARTS[$c]=$((CD_STARTS[$c] + 1))
  CD_NAME[$c]=counterd-$c.${CD_STARTS[$c]}
  # shellcheck disable=SC2086 # CD_ARGS holds flags (no spaces in BENCH_TMP's mktemp name)
  bench_start "${CD_NAME[$c]}" env -u PEER_ENDPOINTS -u SERVICE_PORT -u COUNTERD_ROLE \
    -u REGION -u NODE_ID -u DATA_DIR -u FSYNC_POLICY COUNTERD_LOG=warn \
    "${BENCH_SERVER_PIN[@]}" "$COUNTERD_BIN" --role region --port "${CD_PORT[$c]}" \
    --region bench --node-id bench-1 ${CD_ARGS[$c]}
  CD_PID[$c]=$BENCH_PID
}

# cd_total CONF: total_count of the counter "bench" on the node of CONF (0 when absent).
cd_total() {
  local c=$1 out=$BENCH_TMP/total-$1 code
  code=$(curl -sS -o "$out" -w '%{http_code}' --max-time 10 \
    "http://127.0.0.1:${CD_PORT[$c]}/counter/bench") || die "counterd $c: GET /counter/bench failed (curl)"
  case $code in
  404) echo 0 ;;
  200) jq -er '.total_count | select(type == "number")' "$out" ||
    die "counterd $c: GET /counter/bench: no total_count in $(cat "$out")" ;;
  *) die "counterd $c: GET /counter/bench answered $code: $(cat "$out")" ;;
  esac
}

# stop_counterd CONF: RESTART_SIGNAL to the node; with TERM it must exit 0 within 30 s.
stop_counterd() {
  local c=$1 pid=${CD_PID[$1]} i rc=0
  kill "-$RESTART_SIGNAL" "$pid" 2>/dev/null || die "counterd $c (pid $pid) was not running"
  for ((i = 0; i < 300; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -0 "$pid" 2>/dev/null && die "counterd $c (pid $pid) did not stop within 30 s of SIG$RESTART_SIGNAL"
  wait "$pid" || rc=$?
  if [[ $RESTART_SIGNAL == TERM && $rc != 0 ]]; then
    tail -n 20 "$BENCH_TMP/${CD_NAME[$c]}.log" >&2 || true
    die "counterd $c exited with status $rc on SIGTERM (expected 0)"
  fi
}

for c in "${CONFS[@]}"; do start_counterd "$c"; done

# --------------------------------------------------------------------- Redis servers
declare -A RD_PORT RD_PID
for c in "${CONFS[@]}"; do
  bench_free_port "RD_PORT[$c]"
  mkdir -p "$BENCH_TMP/data-redis-$c"
  if [[ $c == mem ]]; then
    aof=(--appendonly no)
  else
    aof=(--appendonly yes --appendfsync "$c")
  fi
  bench_start "redis-$c" "${BENCH_SERVER_PIN[@]}" redis-server --port "${RD_PORT[$c]}" \
    --bind 127.0.0.1 --daemonize no --dir "$BENCH_TMP/data-redis-$c" --save "" "${aof[@]}"
  RD_PID[$c]=$BENCH_PID
done

rd() { redis-cli -p "${RD_PORT[$1]}" "${@:2}"; }
# rd_count CONF: the value of the benchmark's key (0 when absent).
rd_count() {
  local v
  v=$(rd "$1" get "$REDIS_KEY") || die "redis $1: GET failed"
  [[ -z $v ]] && v=0
  [[ $v =~ ^[0-9]+$ ]] || die "redis $1: GET $REDIS_KEY gave '$v'"
  echo "$v"
}

# ------------------------------------------------------------------ checks, all nodes
for c in "${CONFS[@]}"; do
  bench_wait_health "http://127.0.0.1:${CD_PORT[$c]}" "${CD_PID[$c]}" "${CD_NAME[$c]}"
  bench_check_increment "http://127.0.0.1:${CD_PORT[$c]}" "counterd-$c" bench-1 bench
  if [[ $c != mem ]]; then
    compgen -G "$BENCH_TMP/data-counterd-$c/wal-*.log" >/dev/null ||
      die "counterd $c: no wal-*.log in its data directory after two increments: $(ls -A "$BENCH_TMP/data-counterd-$c" 2>&1)"
  fi
  bench_wait_redis "${RD_PORT[$c]}" "${RD_PID[$c]}" "redis-$c"
  want_aof=yes want_fsync=$c
  [[ $c == mem ]] && want_aof=no want_fsync=everysec
  got=$(rd "$c" config get appendonly | sed -n 2p)
  [[ $got == "$want_aof" ]] || die "redis $c: appendonly is '$got', expected $want_aof"
  got=$(rd "$c" config get appendfsync | sed -n 2p)
  [[ $got == "$want_fsync" ]] || die "redis $c: appendfsync is '$got', expected $want_fsync"
  got=$(rd "$c" config get save | sed -n 2p)
  [[ -z $got ]] || die "redis $c: save is '$got', expected \"\" (no RDB snapshots)"
  a=$(rd "$c" incr bench-check) b=$(rd "$c" incr bench-check)
  ((b == a + 1)) || die "redis $c: INCR bench-check went $a -> $b"
  if [[ $c != mem ]]; then
    compgen -G "$BENCH_TMP/data-redis-$c/appendonlydir/*.aof" >/dev/null ||
      die "redis $c: no append-only file in $BENCH_TMP/data-redis-$c/appendonlydir"
  fi
  log "counterd $c (port ${CD_PORT[$c]}) and redis $c (port ${RD_PORT[$c]}): checks ok"
done

# -------------------------------------------------------------------- measurement
# meas_begin SERVER_PID / meas_end SERVER_PID: wall time, the server's CPU, the client's
# CPU (this shell's finished children: the client must run in the foreground), the CPU of
# everything else, and the device's flush requests, around one measured run.
meas_begin() {
  bench_children_cpu M_C0
  M_T0=$(date +%s.%N) M_S0=$(bench_proc_ticks "$1") M_Y0=$(bench_sys_busy_ticks)
  read -r M_F0 _ < <(bench_dev_flushes "$DEV")
}
meas_end() {
  bench_children_cpu M_C1
  local t1 s1 y1 f1
  t1=$(date +%s.%N) s1=$(bench_proc_ticks "$1") y1=$(bench_sys_busy_ticks)
  read -r f1 _ < <(bench_dev_flushes "$DEV")
  # shellcheck disable=SC2153,SC2154 # M_C0/M_C1 are set by bench_children_cpu (printf -v)
  read -r M_SRV M_CLI M_OTH M_FLS < <(awk -v t0="$M_T0" -v t1="$t1" -v s0="$M_S0" -v s1="$s1" \
    -v y0="$M_Y0" -v y1="$y1" -v c0="$M_C0" -v c1="$M_C1" -v f0="$M_F0" -v f1="$f1" \
    -v hz="$BENCH_CLK_TCK" -v dev="$DEV" 'BEGIN {
      d = t1 - t0
      o = ((y1 - y0) - (s1 - s0)) / hz - (c1 - c0); if (o < 0) o = 0
      printf "%.0f %.0f %.0f %s\n", 100 * (s1 - s0) / hz / d, 100 * (c1 - c0) / d, 100 * o / d,
        dev == "" ? "n/a" : sprintf("%.0f", (f1 - f0) / d) }')
}

declare -A BEST_RPS BEST_P50 BEST_P99 BEST_RUN BEST_SRV BEST_CLI BEST_CORE BEST_FLS
for k in counterd:{mem,no,everysec,always} redis:{mem,no,everysec,always}; do BEST_RPS[$k]=0; done
ROWS=()
CLIENT_BOUND=""
DISTURBED=""
STARTUP_NOTES=()

# record SERVER CONF ROUND RPS P50 P99 CHECK: a table row, warnings, the best run.
record() {
  local s=$1 c=$2 r=$3 rps=$4 p50=$5 p99=$6 check=$7 k=$1:$2
  ROWS+=("$(printf '%-9s %-9s %4s %11s %8s %8s %6s %6s %6s %7s  %s' "$s" "$c" "$r" "$rps" \
    "$p50" "$p99" "$M_SRV" "$M_CLI" "$M_OTH" "$M_FLS" "$check")")
  log "$s $c run $r: $rps req/s, p50 $p50 ms, p99 $p99 ms, CPU: server $M_SRV%, client $M_CLI%, other $M_OTH%, device flushes/s $M_FLS; $check"
  ((M_OTH < 15)) || DISTURBED+=" $k/$r"
  ((M_CLI < 95)) || CLIENT_BOUND+=" $k/$r"
  if awk -v a="$rps" -v b="${BEST_RPS[$k]}" 'BEGIN { exit !(a > b) }'; then
    BEST_RPS[$k]=$rps BEST_P50[$k]=$p50 BEST_P99[$k]=$p99 BEST_RUN[$k]=$r
    BEST_SRV[$k]=$M_SRV BEST_CLI[$k]=$M_CLI BEST_FLS[$k]=$M_FLS
    BEST_CORE[$k]=$(awk -v r="$rps" -v c="$M_SRV" 'BEGIN { printf "%.0f", (c > 0) ? r * 100 / c : 0 }')
  fi
}

run_counterd() {
  local c=$1 r=$2 url=http://127.0.0.1:${CD_PORT[$1]} out=$BENCH_TMP/wrk-counterd-$1-$2
  local before after acked hi back check t0 t1 secs rps p50 p99
  before=$(cd_total "$c")
  bench_wrk "$out.warm" -t1 -c"$CONNS" -d"${WARMUP}s" -s "$SCRIPT" "$url/increment"
  bench_wrk_check "$out.warm" "counterd $c warm-up $r"
  meas_begin "${CD_PID[$c]}"
  bench_wrk "$out" -t1 -c"$CONNS" -d"${DURATION}s" --latency -s "$SCRIPT" "$url/increment"
  meas_end "${CD_PID[$c]}"
  bench_wrk_check "$out" "counterd $c run $r"
  bench_alive "${CD_PID[$c]}" "${CD_NAME[$c]}"
  rps=$(bench_wrkstat "$out" rps)
  p50=$(us_to_ms "$(bench_wrkstat "$out" p50_us)")
  p99=$(us_to_ms "$(bench_wrkstat "$out" p99_us)")
  # Every 2xx wrk saw is counted, and at most one in-flight request per connection per wrk
  # run (warm-up + measured) was applied without wrk seeing its answer.
  acked=$(($(bench_wrkstat "$out.warm" requests) + $(bench_wrkstat "$out" requests)))
  after=$(cd_total "$c")
  hi=$((acked + 2 * CONNS))
  (((after - before) >= acked && (after - before) <= hi)) ||
    die "counterd $c run $r: 'bench' went $before -> $after (+$((after - before))) for $acked answered increments (expected +$acked..+$hi)"
  check="+$((after - before)) for $acked acked"
  if [[ $c != mem ]]; then
    # Stop, start again on the same data directory: the node must read back exactly what
    # it held (and so every acknowledged increment of the run).
    stop_counterd "$c"
    t0=$(date +%s.%N)
    start_counterd "$c"
    bench_wait_health "$url" "${CD_PID[$c]}" "${CD_NAME[$c]}" 120
    t1=$(date +%s.%N)
    back=$(cd_total "$c")
    [[ $back == "$after" ]] ||
      die "counterd $c run $r: held $after before SIG$RESTART_SIGNAL, reads back $back after a restart on $BENCH_TMP/data-counterd-$c (run: $acked answered increments)"
    secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')
    STARTUP_NOTES+=("counterd $c run $r: restart (SIG$RESTART_SIGNAL) read back $back in ${secs} s, data dir $(du -sm "$BENCH_TMP/data-counterd-$c" | cut -f1) MB")
    if grep -q 'torn tail' "$BENCH_TMP/${CD_NAME[$c]}.log"; then
      STARTUP_NOTES+=("  $(grep -m1 'torn tail' "$BENCH_TMP/${CD_NAME[$c]}.log")")
    fi
    check+=", read back after restart: ok"
  fi
  record counterd "$c" "$r" "$rps" "$p50" "$p99" "$check"
}

run_redis() {
  local c=$1 r=$2 out=$BENCH_TMP/rb-redis-$1-$2 before mid after n rc=0 line rps p50 p99
  before=$(rd_count "$c")
  # Warm-up for WARMUP seconds (redis-benchmark has no duration: stopped by timeout); its
  # rate sizes the measured run to about DURATION seconds.
  timeout "$WARMUP" "${BENCH_CLIENT_PIN[@]}" redis-benchmark -p "${RD_PORT[$c]}" -c "$CONNS" \
    -P 1 -n 2000000000 -t incr -q >"$out.warm" 2>&1 || rc=$?
  ((rc == 124)) || { cat "$out.warm" >&2; die "redis $c warm-up $r: redis-benchmark exited with $rc"; }
  sleep 0.2 # the requests the killed client had sent are applied before the next GET
  bench_alive "${RD_PID[$c]}" "redis-$c"
  mid=$(rd_count "$c")
  ((mid > before)) || die "redis $c warm-up $r: no INCR applied"
  n=$(awk -v d=$((mid - before)) -v w="$WARMUP" -v t="$DURATION" \
    'BEGIN { n = int(d / w * t / 1000 + 0.5) * 1000; print (n < 10000) ? 10000 : n }')
  meas_begin "${RD_PID[$c]}"
  "${BENCH_CLIENT_PIN[@]}" redis-benchmark -p "${RD_PORT[$c]}" -c "$CONNS" -P 1 -n "$n" \
    -t incr --csv >"$out" 2>&1 || { cat "$out" >&2; die "redis $c run $r: redis-benchmark failed"; }
  meas_end "${RD_PID[$c]}"
  bench_alive "${RD_PID[$c]}" "redis-$c"
  line=$(grep '^"INCR",' "$out") || { cat "$out" >&2; die "redis $c run $r: no INCR line in redis-benchmark's CSV"; }
  IFS=, read -r rps p50 p99 < <(tr -d '"' <<<"$line" | awk -F, '{ printf "%.2f,%.2f,%.2f\n", $2, $5, $7 }')
  after=$(rd_count "$c")
  ((after - mid == n)) ||
    die "redis $c run $r: $REDIS_KEY went $mid -> $after (+$((after - mid))) for $n INCR sent (every one must be applied once)"
  record redis "$c" "$r" "$rps" "$p50" "$p99" "+$((after - mid)) for $n sent"
}

log "pinning: $BENCH_PIN_DESC (redis-benchmark like wrk); $CONNS connections, warm-up ${WARMUP}s + ~${DURATION}s, $ROUNDS rounds"
for ((r = 1; r <= ROUNDS; r++)); do
  for c in "${CONFS[@]}"; do
    run_counterd "$c" "$r"
    run_redis "$c" "$r"
  done
done

# ------------------------------------------------------------------------- report
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", (b > 0) ? a / b : 0 }'; }
verdict() { awk -v r="$1" -v t="$2" 'BEGIN { print (r >= t) ? "met" : "NOT met" }'; }
R_EVERYSEC_MEM=$(ratio "${BEST_RPS[counterd:everysec]}" "${BEST_RPS[counterd:mem]}")
R_ALWAYS=$(ratio "${BEST_RPS[counterd:always]}" "${BEST_RPS[redis:always]}")
R_NO=$(ratio "${BEST_RPS[counterd:no]}" "${BEST_RPS[redis:no]}")
R_EVERYSEC=$(ratio "${BEST_RPS[counterd:everysec]}" "${BEST_RPS[redis:everysec]}")
R_MEM=$(ratio "${BEST_RPS[counterd:mem]}" "${BEST_RPS[redis:mem]}")
R_REDIS_EVERYSEC_MEM=$(ratio "${BEST_RPS[redis:everysec]}" "${BEST_RPS[redis:mem]}")

echo
echo "counterd POST /increment {\"counter_name\":\"bench\",\"amount\":1} (wrk -t1 -c$CONNS) vs Redis INCR (redis-benchmark -c $CONNS -P 1 -t incr)"
echo "${DURATION}s per run (redis: -n sized from its ${WARMUP}s warm-up) after ${WARMUP}s warm-up, $BENCH_PIN_DESC (redis-benchmark on the client CPU)"
echo "data directories: fresh folders in $BENCH_TMP: $FS_DESC"
echo "fsync probe: $FSYNC_PROBES synchronous 4 KiB appends (dd oflag=dsync = write + fdatasync): mean $FSYNC_US us; device${DEV:+ $DEV} cache flushes meanwhile: mean $FLUSH_US us"
[[ -z $FSYNC_NOTE ]] || echo "NOTE: $FSYNC_NOTE"
echo
printf '%-9s %-9s %4s %11s %8s %8s %6s %6s %6s %7s  %s\n' server config run 'req/s' 'p50 ms' \
  'p99 ms' 'srv%' 'cli%' 'oth%' 'flush/s' check
printf '%s\n' "${ROWS[@]}"
echo "(srv%, cli%, oth%: CPU of the server, of the client and of everything else, in % of one core;"
echo " flush/s: cache flush requests of the data's block device per second, whole machine)"
printf '%s\n' "${STARTUP_NOTES[@]}"
echo
echo "best of $ROUNDS runs (highest req/s, with that run's latencies):"
printf '%-9s %-9s %-42s %11s %8s %8s %5s %5s %12s %4s\n' server config durability 'req/s' \
  'p50 ms' 'p99 ms' 'srv%' 'cli%' 'req/s/core' run
declare -A DESC=([counterd:mem]="memory only (no --data-dir)"
  [counterd:no]="--data-dir, --fsync no" [counterd:everysec]="--data-dir, --fsync everysec"
  [counterd:always]="--data-dir, --fsync always" [redis:mem]="memory only (--appendonly no)"
  [redis:no]="--appendonly yes --appendfsync no"
  [redis:everysec]="--appendonly yes --appendfsync everysec"
  [redis:always]="--appendonly yes --appendfsync always")
for s in counterd redis; do
  for c in "${CONFS[@]}"; do
    k=$s:$c
    printf '%-9s %-9s %-42s %11s %8s %8s %5s %5s %12s %4s\n' "$s" "$c" "${DESC[$k]}" \
      "${BEST_RPS[$k]}" "${BEST_P50[$k]}" "${BEST_P99[$k]}" "${BEST_SRV[$k]}" "${BEST_CLI[$k]}" \
      "${BEST_CORE[$k]}" "#${BEST_RUN[$k]}"
  done
done
echo
echo "(req/s/core: req/s / (srv% / 100), the rate per core of server CPU used: an estimate of what the"
echo " server would do with a whole core when the client, not the server, was the limit: cli% near 100)"
echo
echo "counterd everysec / counterd memory: $R_EVERYSEC_MEM (target >= 0.90: $(verdict "$R_EVERYSEC_MEM" 0.90))"
echo "counterd always / redis always:      $R_ALWAYS (target >= 1.0: $(verdict "$R_ALWAYS" 1.0))"
per_flush() {
  awk -v r="${BEST_RPS[$1]}" -v f="${BEST_FLS[$1]}" 'BEGIN { if (f + 0 > 0) printf "%.1f", r / f; else print "n/a" }'
}
echo "                                     (answers per device flush in those runs: counterd $(per_flush counterd:always), redis $(per_flush redis:always))"
PF_C=$(per_flush counterd:always) PF_R=$(per_flush redis:always)
R_FLUSH=n/a
[[ $PF_C == n/a || $PF_R == n/a ]] || R_FLUSH=$(ratio "$PF_C" "$PF_R")
R_P99=$(ratio "${BEST_P99[counterd:always]:-0}" "${BEST_P99[redis:always]:-0}")
echo "always p99, counterd / redis:        $R_P99 (${BEST_P99[counterd:always]:-?} ms / ${BEST_P99[redis:always]:-?} ms; target <= 2.0: $(awk -v r="$R_P99" 'BEGIN { print (r > 0 && r <= 2.0) ? "met" : "NOT met" }'))"
echo "always answers per flush, c / r:     $R_FLUSH (target >= 1.0: $([[ $R_FLUSH == n/a ]] && echo n/a || verdict "$R_FLUSH" 1.0))"
echo "counterd no / redis no:              $R_NO (information; per server core: $(ratio "${BEST_CORE[counterd:no]}" "${BEST_CORE[redis:no]}"))"
echo "counterd everysec / redis everysec:  $R_EVERYSEC (information; per server core: $(ratio "${BEST_CORE[counterd:everysec]}" "${BEST_CORE[redis:everysec]}"))"
echo "counterd memory / redis memory:      $R_MEM (information; per server core: $(ratio "${BEST_CORE[counterd:mem]}" "${BEST_CORE[redis:mem]}"))"
echo "redis everysec / redis memory:       $R_REDIS_EVERYSEC_MEM (information)"
[[ -z $CLIENT_BOUND ]] ||
  echo "WARNING: the client used >= 95% of its core in:$CLIENT_BOUND: those runs may be client-bound (the server may be faster than shown)"
[[ -z $DISTURBED ]] ||
  echo "WARNING: other processes used >= 15% of a core during:$DISTURBED: those runs are noisy"
echo "RESULT durability counterd_mem_rps=${BEST_RPS[counterd:mem]} counterd_no_rps=${BEST_RPS[counterd:no]} counterd_everysec_rps=${BEST_RPS[counterd:everysec]} counterd_always_rps=${BEST_RPS[counterd:always]} redis_mem_rps=${BEST_RPS[redis:mem]} redis_no_rps=${BEST_RPS[redis:no]} redis_everysec_rps=${BEST_RPS[redis:everysec]} redis_always_rps=${BEST_RPS[redis:always]} everysec_vs_mem=$R_EVERYSEC_MEM always_vs_redis_always=$R_ALWAYS fdatasync_us=$FSYNC_US always_p99_vs_redis=$R_P99 always_per_flush_counterd=$PF_C always_per_flush_redis=$PF_R"
