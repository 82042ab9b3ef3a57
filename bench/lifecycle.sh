#!/usr/bin/env bash
# What deleting counters gives back: one counterd region node with a data directory
# (--tombstone-grace-s 1, no peers), its VmRSS and data directory (du) measured
#   before   after start-up and W warm-up counters (default 300,000),
#   created  after N more counters (default 1,000,000; pipelined POST /increments of
#            1,000, as tests/integration/93_tombstone_gc_big.py),
#   after    once all N are deleted (pipelined DELETE /v1/counters/default/{name}), sealed
#            and dropped by the tombstone GC (counterd_tombstones_dropped_total = N), and
#            the snapshot it asks for is in place;
# and the anchor, in the same run: Redis (no persistence) with W keys, then N more by SET,
# then the N deleted by UNLINK (and DEL for the second half), its VmRSS at the same three
# points. The figure: memory given back, (created - after) / (created - before), counterd
# against Redis; target ratio >= 1.0 (counterd gives back at least what Redis does).
#
#   bench/lifecycle.sh            # N=1000000 W=300000
#
# Env: N, W. See bench/README.md.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

N=${N:-1000000}
W=${W:-300000}
bench_need_debs jq curl python3 procps redis-server redis-tools
bench_need_counterd
IT_DIR=$REPO_DIR/tests/integration

du_mb() { du -sk "$1" | awk '{ printf "%.1f", $1 / 1024 }'; }
kb_mb() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }
given_back() { awk -v b="$1" -v c="$2" -v a="$3" 'BEGIN { printf "%.2f", (c > b) ? (c - a) / (c - b) : 0 }'; }

# ------------------------------------------------------------------- Redis anchor
bench_free_port RPORT
bench_start redis redis-server --port "$RPORT" --bind 127.0.0.1 --save "" --appendonly no \
  --daemonize no
RPID=$BENCH_PID
bench_wait_redis "$RPORT" "$RPID" redis
# redis_keys VERB FIRST COUNT PREFIX [VALUE]: one command per key through redis-cli --pipe.
redis_keys() {
  awk -v verb="$1" -v first="$2" -v n="$3" -v p="$4" -v val="${5:-}" 'BEGIN {
    for (i = first; i < first + n; i++) { k = sprintf("%s%08d", p, i);
      if (val != "") printf "*3\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n", length(verb), verb, length(k), k, length(val), val
      else printf "*2\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n", length(verb), verb, length(k), k } }' |
    redis-cli -p "$RPORT" --pipe >"$BENCH_TMP/redis-pipe.log" 2>&1 ||
    { cat "$BENCH_TMP/redis-pipe.log" >&2; die "redis-cli --pipe $1 failed"; }
}
redis_keys SET 0 "$W" w 1
R0=$(bench_rss_kb "$RPID")
redis_keys SET 0 "$N" c 1
[[ $(redis-cli -p "$RPORT" dbsize) == $((W + N)) ]] || die "redis does not hold $((W + N)) keys"
R1=$(bench_rss_kb "$RPID")
redis_keys UNLINK 0 $((N / 2)) c
redis_keys DEL $((N / 2)) $((N - N / 2)) c
[[ $(redis-cli -p "$RPORT" dbsize) == "$W" ]] || die "redis does not hold $W keys after the deletes"
sleep 1 # UNLINK frees in a background thread
R2=$(bench_rss_kb "$RPID")
redis-cli -p "$RPORT" memory purge >/dev/null # jemalloc gives its dirty pages back
sleep 1
R3=$(bench_rss_kb "$RPID")
bench_stop "$RPID"
log "redis: VmRSS $(kb_mb "$R0") MB with $W keys, $(kb_mb "$R1") MB with $N more, $(kb_mb "$R2") MB after deleting them, $(kb_mb "$R3") MB after MEMORY PURGE"

# ------------------------------------------------------------------- counterd
bench_free_port PORT
DATA=$BENCH_TMP/data
mkdir -p "$DATA"
bench_start node env -u PEER_ENDPOINTS -u SERVICE_PORT -u COUNTERD_ROLE -u REGION -u NODE_ID \
  -u DATA_DIR COUNTERD_LOG=warn "$COUNTERD_BIN" --role region --port "$PORT" --region bench \
  --node-id bench-1 --peers "" --data-dir "$DATA" --tombstone-grace-s 1 \
  --sync-interval-ms 3600000
PID=$BENCH_PID
bench_wait_health "http://127.0.0.1:$PORT" "$PID" node

# create PREFIX COUNT / delete COUNT: pipelined POST /increments of 1,000 and DELETEs,
# through tests/integration/93_tombstone_gc_big.py's helpers.
py() { (cd "$IT_DIR" && python3 - "$@"); }
create() {
  py "$PORT" "$1" "$2" <<'EOF' || die "creating $2 counters failed"
import importlib.util, sys
spec = importlib.util.spec_from_file_location("t93", "93_tombstone_gc_big.py")
t93 = importlib.util.module_from_spec(spec)
spec.loader.exec_module(t93)
n = int(sys.argv[3])
sys.exit(0 if t93.create(int(sys.argv[1]), sys.argv[2], n) == n else "not every batch answered 200")
EOF
}
create w "$W"
sleep 1.5
C0=$(bench_rss_kb "$PID")
D0=$(du_mb "$DATA")
t0=$(date +%s.%N)
create c "$N"
t1=$(date +%s.%N)
sleep 1.5
C1=$(bench_rss_kb "$PID")
D1=$(du_mb "$DATA")
[[ $(bench_metric "http://127.0.0.1:$PORT" counterd_store_counters) == $((W + N)) ]] ||
  die "counterd does not hold $((W + N)) counters"
py "$PORT" "$N" <<'EOF' || die "the deletes failed"
import importlib.util, sys
spec = importlib.util.spec_from_file_location("t93", "93_tombstone_gc_big.py")
t93 = importlib.util.module_from_spec(spec)
spec.loader.exec_module(t93)
n = int(sys.argv[2])
names = [t93.bigfill.counter_name(i, 24, "c") for i in range(n)]
sys.exit(0 if t93.delete_all(int(sys.argv[1]), names) == n else "not every DELETE answered 200")
EOF
t2=$(date +%s.%N)
for ((i = 0; i < 1200; i++)); do
  dropped=$(bench_metric "http://127.0.0.1:$PORT" counterd_tombstones_dropped_total)
  [[ ${dropped%.*} -ge $N ]] && break
  bench_alive "$PID" node
  sleep 0.1
done
[[ ${dropped%.*} -ge $N ]] || die "the GC dropped $dropped of $N tombstones in 120 s"
t3=$(date +%s.%N)
for ((i = 0; i < 100; i++)); do # the snapshot the GC asked for replaces the log
  ls "$DATA"/*.tmp >/dev/null 2>&1 || break
  sleep 0.2
done
sleep 1
C2=$(bench_rss_kb "$PID")
D2=$(du_mb "$DATA")
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }

CG=$(given_back "$C0" "$C1" "$C2")
RG=$(given_back "$R0" "$R1" "$R2")
RGP=$(given_back "$R0" "$R1" "$R3")
RATIO=$(awk -v c="$CG" -v r="$RGP" 'BEGIN { printf "%.2f", (r > 0) ? c / r : 0 }')
printf '\n%-11s %12s %12s %12s %10s\n' "" "before" "created" "after" "given back"
printf '%-11s %9s MB %9s MB %9s MB %10s\n' "counterd" "$(kb_mb "$C0")" "$(kb_mb "$C1")" "$(kb_mb "$C2")" "$CG"
printf '%-11s %9s MB %9s MB %9s MB %10s\n' "data dir" "$D0" "$D1" "$D2" \
  "$(given_back "$D0" "$D1" "$D2")"
printf '%-11s %9s MB %9s MB %9s MB %10s\n' "redis" "$(kb_mb "$R0")" "$(kb_mb "$R1")" "$(kb_mb "$R2")" "$RG"
printf '%-11s %9s MB %9s MB %9s MB %10s\n' "redis+purge" "$(kb_mb "$R0")" "$(kb_mb "$R1")" "$(kb_mb "$R3")" "$RGP"
printf 'create %s s, delete %s s, seal+drop %s s; given back counterd / redis after MEMORY PURGE = %s (target >= 1.0)\n' \
  "$(secs "$t0" "$t1")" "$(secs "$t1" "$t2")" "$(secs "$t2" "$t3")" "$RATIO"
echo "RESULT lifecycle counters=$N warm=$W rss_before_mb=$(kb_mb "$C0") rss_created_mb=$(kb_mb "$C1") rss_after_mb=$(kb_mb "$C2") dir_before_mb=$D0 dir_created_mb=$D1 dir_after_mb=$D2 redis_before_mb=$(kb_mb "$R0") redis_created_mb=$(kb_mb "$R1") redis_after_mb=$(kb_mb "$R2") redis_purged_mb=$(kb_mb "$R3") given_back=$CG redis_given_back=$RG redis_purged_given_back=$RGP ratio=$RATIO delete_s=$(secs "$t1" "$t2") gc_s=$(secs "$t2" "$t3")"
