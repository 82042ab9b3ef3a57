#!/usr/bin/env bash
# The strong counter on etcd: increments/s on one hot counter, against its anchor measured in
# the same run. Three etcd members on loopback (Debian's etcd-server 3.4, data in the temp
# folder, one disk), then:
#   naive, 1 client    range, then a txn comparing mod_revision (retry on conflict), through
#                      etcd's JSON gateway (bench/strong_etcd_driver.py)
#   naive, 8 clients   the same, contending on the one counter
#   counterd, 8        POST /increment to `counterd --role strong --strong-backend etcd`
#                      (group commit: one txn carries the increments that queued behind the
#                      one in flight), the same driver
# Each run checks that etcd's value grew by exactly the increments counted.
#
#   bench/strong_etcd.sh          # DURATION=8 (s per run); target: counterd >= 10x naive at 8
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

DURATION=${DURATION:-8}
CLIENTS=${CLIENTS:-8}
bench_need_debs etcd-server curl jq python3
bench_need_counterd
DRIVER=$BENCH_DIR/strong_etcd_driver.py

ports=()
for _ in 1 2 3 4 5 6; do
  port=0
  bench_free_port port
  ports+=("$port")
done
cluster=""
for i in 0 1 2; do
  cluster+="${cluster:+,}m$i=http://127.0.0.1:${ports[$((3 + i))]}"
done
urls=()
for i in 0 1 2; do
  url=http://127.0.0.1:${ports[$i]}
  urls+=("$url")
  bench_start "etcd-m$i" etcd --name "m$i" --data-dir "$BENCH_TMP/etcd-m$i" \
    --listen-client-urls "$url" --advertise-client-urls "$url" \
    --listen-peer-urls "http://127.0.0.1:${ports[$((3 + i))]}" \
    --initial-advertise-peer-urls "http://127.0.0.1:${ports[$((3 + i))]}" \
    --initial-cluster "$cluster" --initial-cluster-token "bench-$$" --log-level warn
done
ETCD=${urls[0]}
for ((i = 0; i < 200; i++)); do
  curl -fsS -o /dev/null --max-time 1 -X POST "$ETCD/v3/kv/put" \
    -d '{"key":"L3JlYWR5","value":"MQ=="}' 2>/dev/null && break
  sleep 0.1
done
((i < 200)) || die "etcd did not serve within 20 s (logs: $BENCH_TMP/etcd-m*.log)"
log "etcd: 3 members at ${urls[*]}"

# etcd_value KEY: the decimal value at KEY (0 when absent).
etcd_value() {
  local k v
  k=$(printf %s "$1" | base64 -w0)
  v=$(curl -fsS -X POST "$ETCD/v3/kv/range" -d "{\"key\":\"$k\"}" | jq -r '.kvs[0].value // empty')
  if [[ -z $v ]]; then echo 0; else printf %s "$v" | base64 -d; fi
}

# run MODE URL CLIENTS ETCD_KEY NAME: one run; checks etcd's value moved by the count.
run() {
  local mode=$1 url=$2 n=$3 key=$4 name=$5 before after out inc
  before=$(etcd_value "$key")
  out=$(python3 "$DRIVER" "$mode" "$url" "$n" "$DURATION" "$name")
  after=$(etcd_value "$key")
  inc=$(jq -r .increments <<<"$out")
  [[ $(jq -r .errors <<<"$out") == 0 ]] || die "$mode x$n: errors: $out"
  ((after - before == inc)) || die "$mode x$n: etcd moved by $((after - before)), $inc counted"
  log "$mode x$n: $out"
  jq -r .per_s <<<"$out"
}

naive1=$(run naive "$ETCD" 1 /bench/naive /bench/naive)
naive8=$(run naive "$ETCD" "$CLIENTS" /bench/naive /bench/naive)

bench_free_port CD_PORT
bench_start counterd env COUNTERD_LOG=warn "$COUNTERD_BIN" --role strong --port "$CD_PORT" \
  --strong-backend etcd --etcd "$(IFS=,; echo "${urls[*]}")" --etcd-prefix /bench/cd/
CD_PID=$BENCH_PID
bench_wait_health "http://127.0.0.1:$CD_PORT" "$CD_PID" counterd
counterd8=$(run counterd "http://127.0.0.1:$CD_PORT" "$CLIENTS" /bench/cd/c/default/hot hot)
bench_alive "$CD_PID" counterd
batches=$(curl -fsS "http://127.0.0.1:$CD_PORT/metrics" |
  awk '/^counterd_etcd_batch_size_sum/ {s=$2} /^counterd_etcd_batch_size_count/ {c=$2}
       END {if (c > 0) printf "%.1f", s / c; else print "0"}')

ratio=$(awk -v a="$counterd8" -v b="$naive8" 'BEGIN {printf "%.1f", (b > 0 ? a / b : 0)}')
printf '\n%-34s %12s\n' "strong increments on one hot counter" "increments/s"
printf '%-34s %12s\n' "naive (range + txn), 1 client" "$naive1"
printf '%-34s %12s\n' "naive (range + txn), $CLIENTS clients" "$naive8"
printf '%-34s %12s\n' "counterd etcd role, $CLIENTS clients" "$counterd8"
printf '%-34s %12s\n' "  mean increments per txn" "$batches"
printf '%-34s %12s  (target >= 10)\n' "ratio counterd / naive at $CLIENTS" "$ratio"
echo "RESULT strong_etcd naive1=$naive1 naive$CLIENTS=$naive8 counterd$CLIENTS=$counterd8 ratio=$ratio mean_batch=$batches"
awk -v r="$ratio" 'BEGIN {exit !(r >= 10)}' || die "ratio $ratio is under the target 10"
