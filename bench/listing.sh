#!/usr/bin/env bash
# Listings and top counters at production size: three region nodes (not peered) holding
# N counters each (default 1,000,000; names "video:<8 digits>" created in a shuffled
# order), a coordinator and a gateway; then, ROUNDS times (default 15), alternately:
#   - counterd: GET /global/counters?limit=1000 from a random cursor (3 regions' pages
#     merged by the coordinator);
#   - anchor: Redis holding N keys, SCAN COUNT 1000 + MGET of the keys it gave (one page
#     of an unordered listing with the values);
# and once a round each: a region's own page, the gateway's /api/counters, a page of
# 10,000, a prefix search, /global/top?by=rate and by=lag. Then the coordinator's RSS
# (target: < 64 MB) and a region's.
#
#   bench/listing.sh             # N=1000000 ROUNDS=15
#
# See bench/README.md.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

N=${N:-1000000}
ROUNDS=${ROUNDS:-15}
TARGET_RSS_MB=64

bench_need_debs curl python3 redis-server redis-tools procps
bench_need_counterd

declare -A PORT PID
for n in a b c co gw redis; do bench_free_port "PORT[$n]"; done
for n in a b c; do
  bench_start "region-$n" env COUNTERD_LOG=warn "$COUNTERD_BIN" --role region --bind 127.0.0.1 \
    --port "${PORT[$n]}" --region "r$n" --node-id "r$n-1" --peers "" --sync-interval-ms 3600000
  PID[$n]=$BENCH_PID
done
EPS="ra=http://127.0.0.1:${PORT[a]},rb=http://127.0.0.1:${PORT[b]},rc=http://127.0.0.1:${PORT[c]}"
bench_start coordinator env COUNTERD_LOG=warn "$COUNTERD_BIN" --role coordinator --bind 127.0.0.1 \
  --port "${PORT[co]}" --regions "$EPS"
PID[co]=$BENCH_PID
bench_start gateway env COUNTERD_LOG=warn "$COUNTERD_BIN" --role gateway --bind 127.0.0.1 \
  --port "${PORT[gw]}" --regions "$EPS" --coordinator "http://127.0.0.1:${PORT[co]}"
PID[gw]=$BENCH_PID
bench_start redis redis-server --port "${PORT[redis]}" --bind 127.0.0.1 --save "" --appendonly no
PID[redis]=$BENCH_PID
for n in a b c co gw; do bench_wait_health "http://127.0.0.1:${PORT[$n]}" "${PID[$n]}" "$n"; done
bench_wait_redis "${PORT[redis]}" "${PID[redis]}" redis
CO_RSS0_KB=$(bench_rss_kb "${PID[co]}")
log "3 regions, coordinator (RSS $((CO_RSS0_KB / 1024)) MB at start), gateway, redis up"

OUT=$BENCH_TMP/listing.out
python3 "$BENCH_DIR/listing.py" "$N" "$ROUNDS" "${PORT[a]},${PORT[b]},${PORT[c]}" "${PORT[co]}" \
  "${PORT[gw]}" "${PORT[redis]}" >"$OUT" || die "listing.py failed"
for n in a b c co gw; do bench_alive "${PID[$n]}" "$n"; done
v() { tr ' ' '\n' <"$OUT" | awk -F= -v k="$1" '$1 == k { print $2 }'; }
CO_RSS_MB=$(awk -v k="$(bench_rss_kb "${PID[co]}")" 'BEGIN { printf "%.1f", k / 1024 }')
REGION_RSS_MB=$(awk -v k="$(bench_rss_kb "${PID[a]}")" 'BEGIN { printf "%.1f", k / 1024 }')
RATIO=$(awk -v a="$(v co_ms)" -v b="$(v redis_ms)" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }')

printf '\n%-44s %10s %10s %10s\n' "listing at $N counters per region" median min max
for k in co redis region gw co10k prefix top_rate top_lag; do
  printf '%-44s %8s ms %7s ms %7s ms\n' "$k" "$(v "${k}_ms")" "$(v "${k}_min_ms")" "$(v "${k}_max_ms")"
done
printf '%-44s %s ms (region) / %s ms (coordinator)\n' "first page after the fill (sorts the index)" \
  "$(v first_region_ms)" "$(v first_coordinator_ms)"
printf '%-44s %s MB (target < %d MB)\n' "coordinator RSS after the rounds" "$CO_RSS_MB" "$TARGET_RSS_MB"
printf '%-44s %s MB\n' "region RSS ($N counters)" "$REGION_RSS_MB"
printf '%-44s %s (counterd page ms / Redis page ms)\n' "ratio" "$RATIO"
awk -v r="$CO_RSS_MB" -v t="$TARGET_RSS_MB" 'BEGIN { exit !(r < t) }' ||
  die "coordinator RSS $CO_RSS_MB MB is not under $TARGET_RSS_MB MB"
echo "RESULT listing counters=$N coordinator_page_ms=$(v co_ms) redis_page_ms=$(v redis_ms) ratio=$RATIO region_page_ms=$(v region_ms) gateway_page_ms=$(v gw_ms) coordinator_page10k_ms=$(v co10k_ms) prefix_ms=$(v prefix_ms) top_rate_ms=$(v top_rate_ms) top_lag_ms=$(v top_lag_ms) first_region_ms=$(v first_region_ms) coordinator_rss_mb=$CO_RSS_MB region_rss_mb=$REGION_RSS_MB"
