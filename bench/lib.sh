# shellcheck shell=bash
# shellcheck disable=SC2034 # variables set here are used by the scripts that source it
# Shared helpers of bench/*.sh. Source it: it sets strict mode, makes a temp folder and
# installs an EXIT trap that stops every process started through bench_start (and wrk
# runs started through bench_wrk_bg) and removes the temp folder, on success or failure.
#
# Env understood by every benchmark:
#   COUNTERD_BIN  counterd binary (default: <repo>/build/counterd; built with cmake when
#                 missing and core/main.c exists)
#   BENCH_KEEP=1  keep the temp folder (logs, nginx prefix) for inspection
#   BENCH_PIN=0   do not pin processes to CPUs (see bench_pin_server / bench_pin_client)

set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(dirname "$BENCH_DIR")
COUNTERD_BIN=${COUNTERD_BIN:-$REPO_DIR/build/counterd}
BENCH_PIDS=()
BENCH_NAMES=()
BENCH_PORTS_TAKEN=()
BENCH_TMP=$(mktemp -d /tmp/counterd-bench.XXXXXX)
BENCH_APT_UPDATED=0

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

die() {
  printf '\nFAIL: %s\n' "$*" >&2
  exit 1
}

# ---------------------------------------------------------------- processes, cleanup

# bench_stop PID: SIGTERM, up to 10 s for a graceful exit, then SIGKILL.
bench_stop() {
  local pid=$1 i
  kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 100; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    log "pid $pid did not stop on SIGTERM within 10 s: SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  wait "$pid" 2>/dev/null || true
}

bench_cleanup() {
  local rc=$? i
  trap - EXIT INT TERM
  for ((i = ${#BENCH_PIDS[@]} - 1; i >= 0; i--)); do
    bench_stop "${BENCH_PIDS[$i]}"
  done
  if [[ ${BENCH_KEEP:-0} == 1 ]]; then
    log "kept $BENCH_TMP"
  else
    rm -rf "$BENCH_TMP"
  fi
  exit "$rc"
}
trap bench_cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# bench_start NAME CMD...: runs CMD in the background, stdout+stderr to
# $BENCH_TMP/NAME.log; the pid goes to BENCH_PID (and is stopped at exit).
bench_start() {
  local name=$1
  shift
  "$@" >"$BENCH_TMP/$name.log" 2>&1 &
  BENCH_PID=$!
  BENCH_PIDS+=("$BENCH_PID")
  BENCH_NAMES+=("$name")
}

# bench_alive PID NAME: fails (with the tail of its log) when the process has exited.
bench_alive() {
  local pid=$1 name=$2
  if ! kill -0 "$pid" 2>/dev/null; then
    tail -n 30 "$BENCH_TMP/$name.log" >&2 || true
    die "$name (pid $pid) has exited"
  fi
}

# ------------------------------------------------------------------------- packages

# bench_need_debs PKG...: installs the Debian packages that are missing (quietly; only
# when one is missing, so a second run asks apt nothing).
bench_need_debs() {
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' ||
      missing+=("$p")
  done
  ((${#missing[@]} == 0)) && return 0
  [[ $(id -u) == 0 ]] || die "missing Debian packages: ${missing[*]} (run as root or install them)"
  log "installing Debian packages: ${missing[*]}"
  if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >"$BENCH_TMP/apt.log" 2>&1; then
    if [[ $BENCH_APT_UPDATED == 0 ]]; then
      BENCH_APT_UPDATED=1
      apt-get update -qq >>"$BENCH_TMP/apt.log" 2>&1 || true
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      "${missing[@]}" >>"$BENCH_TMP/apt.log" 2>&1 ||
      { tail -n 20 "$BENCH_TMP/apt.log" >&2; die "apt-get install ${missing[*]} failed"; }
  fi
}

# bench_need_counterd: makes sure $COUNTERD_BIN exists (builds the release binary with
# cmake when it is the default path and the sources are there).
bench_need_counterd() {
  [[ -x $COUNTERD_BIN ]] && return 0
  if [[ $COUNTERD_BIN == "$REPO_DIR/build/counterd" && -f $REPO_DIR/core/main.c ]]; then
    log "building counterd (cmake, release)"
    (cd "$REPO_DIR" && cmake -S . -B build >"$BENCH_TMP/cmake.log" 2>&1 &&
      cmake --build build -j2 --target counterd >>"$BENCH_TMP/cmake.log" 2>&1) ||
      { tail -n 30 "$BENCH_TMP/cmake.log" >&2; die "counterd build failed"; }
  fi
  [[ -x $COUNTERD_BIN ]] || die "no counterd binary at $COUNTERD_BIN"
}

# ---------------------------------------------------------------------------- ports

# bench_free_port VAR: a TCP port of 127.0.0.1 that nothing uses, below the ephemeral
# range (so wrk's own client ports can never take it), not handed out before in this run.
bench_free_port() {
  local -n _out=$1
  local used p i
  used=" $(ss -Htan 2>/dev/null | awk '{n = split($4, a, ":"); print a[n]}' | sort -u | tr '\n' ' ') "
  for ((i = 0; i < 500; i++)); do
    p=$((20000 + RANDOM % 12000))
    [[ $used == *" $p "* ]] && continue
    [[ " ${BENCH_PORTS_TAKEN[*]} " == *" $p "* ]] && continue
    BENCH_PORTS_TAKEN+=("$p")
    _out=$p
    return 0
  done
  die "no free port found"
}

# -------------------------------------------------------------------------- HTTP

# bench_wait_health URL PID NAME [TIMEOUT_S]: waits until GET URL/health answers 200.
bench_wait_health() {
  local url=$1 pid=$2 name=$3 timeout=${4:-15} i
  for ((i = 0; i < timeout * 10; i++)); do
    if curl -fsS -o /dev/null --max-time 1 "$url/health" 2>/dev/null; then
      return 0
    fi
    bench_alive "$pid" "$name"
    sleep 0.1
  done
  tail -n 30 "$BENCH_TMP/$name.log" >&2 || true
  die "$name: $url/health did not answer 200 within ${timeout}s"
}

# bench_check_increment URL NAME NODE_ID REGION: two POST /increment (amount 1) on the
# counter "bench-check" must answer 200, Content-Type application/json, the contract's
# fields with the right types, and local_count must grow by exactly 1.
bench_check_increment() {
  local url=$1 name=$2 node=$3 region=$4 out hdr body1 body2 c1 c2 code i
  out="$BENCH_TMP/check-$name"
  for i in 1 2; do
    code=$(curl -sS -o "$out.body$i" -D "$out.hdr$i" -w '%{http_code}' --max-time 5 \
      -X POST -H 'Content-Type: application/json' \
      --data '{"counter_name":"bench-check","amount":1}' "$url/increment") ||
      die "$name: POST /increment failed (curl)"
    [[ $code == 200 ]] || die "$name: POST /increment answered $code: $(cat "$out.body$i")"
  done
  hdr=$(tr -d '\r' <"$out.hdr1" | grep -i '^content-type:' || true)
  [[ ${hdr,,} == "content-type: application/json"* ]] ||
    die "$name: POST /increment Content-Type is '${hdr}', not application/json"
  body1=$(cat "$out.body1")
  body2=$(cat "$out.body2")
  jq -e --arg node "$node" --arg region "$region" '
      .counter == "bench-check" and (.local_count | type) == "number"
      and (.local_count | floor) == .local_count and (.total_count | type) == "number"
      and .total_count >= .local_count and .node_id == $node and .region == $region' \
    <<<"$body1" >/dev/null || die "$name: wrong POST /increment body: $body1"
  c1=$(jq -r .local_count <<<"$body1")
  c2=$(jq -r .local_count <<<"$body2")
  ((c2 == c1 + 1)) || die "$name: local_count went $c1 -> $c2 on +1: $body1 / $body2"
  log "$name: POST /increment ok: $body2"
}

# bench_check_gateway_increment URL NAME NODE_ID REGION ROUTING ENDPOINT: two POST
# /api/increment (amount 1, "routing": ROUTING) on the counter "bench-check" through a
# gateway must answer 200, Content-Type application/json, the region's answer (fields and
# types as bench_check_increment, node_id NODE_ID, region REGION) plus "routing" equal to
# ROUTING, "routed_to_endpoint" equal to ENDPOINT and a number "latency_ms" >= 0, and
# local_count must grow by exactly 1.
bench_check_gateway_increment() {
  local url=$1 name=$2 node=$3 region=$4 routing=$5 endpoint=$6 out hdr body1 body2 c1 c2 code i b
  out="$BENCH_TMP/check-$name"
  for i in 1 2; do
    code=$(curl -sS -o "$out.body$i" -D "$out.hdr$i" -w '%{http_code}' --max-time 5 \
      -X POST -H 'Content-Type: application/json' \
      --data "{\"counter_name\":\"bench-check\",\"amount\":1,\"routing\":\"$routing\"}" \
      "$url/api/increment") || die "$name: POST /api/increment failed (curl)"
    [[ $code == 200 ]] || die "$name: POST /api/increment answered $code: $(cat "$out.body$i")"
  done
  hdr=$(tr -d '\r' <"$out.hdr1" | grep -i '^content-type:' || true)
  [[ ${hdr,,} == "content-type: application/json"* ]] ||
    die "$name: POST /api/increment Content-Type is '${hdr}', not application/json"
  body1=$(cat "$out.body1")
  body2=$(cat "$out.body2")
  for b in "$body1" "$body2"; do
    jq -e --arg node "$node" --arg region "$region" --arg routing "$routing" \
      --arg endpoint "$endpoint" '
        .counter == "bench-check" and (.local_count | type) == "number"
        and (.local_count | floor) == .local_count and (.total_count | type) == "number"
        and .total_count >= .local_count and .node_id == $node and .region == $region
        and .routing == $routing and .routed_to_endpoint == $endpoint
        and (.latency_ms | type) == "number" and .latency_ms >= 0' \
      <<<"$b" >/dev/null || die "$name: wrong POST /api/increment body: $b"
  done
  c1=$(jq -r .local_count <<<"$body1")
  c2=$(jq -r .local_count <<<"$body2")
  ((c2 == c1 + 1)) || die "$name: local_count went $c1 -> $c2 on +1: $body1 / $body2"
  log "$name: POST /api/increment ok: $body2"
}

# bench_metric URL NAME [FILTER]: the value of a Prometheus sample of URL/metrics whose
# name is NAME and whose line contains FILTER (e.g. 'direction="sent"'); several matching
# lines are summed. Prints an integer; empty when absent.
bench_metric() {
  local url=$1 name=$2 filter=${3:-}
  curl -fsS --max-time 30 "$url/metrics" | awk -v n="$name" -v f="$filter" '
    /^#/ { next }
    (index($0, n "{") == 1 || index($0, n " ") == 1) && index($0, f) {
      line = $0; sub(/^[^ ]*\} /, "", line); if (line == $0) sub(/^[^ ]* /, "", line)
      split(line, a, " "); s += a[1]; found = 1
    }
    END { if (found) printf "%.0f\n", s }'
}

# bench_rss_kb PID: VmRSS of a process, in kB.
bench_rss_kb() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }

# ---------------------------------------------------------------------- CPU pinning

# With 2+ cores and BENCH_PIN != 0, servers run on CPU 1 and wrk on CPU 0, so the
# server under test always has one whole core and never shares it with the load.
BENCH_NCPU=$(nproc)
if [[ ${BENCH_PIN:-1} != 0 && $BENCH_NCPU -ge 2 ]] && command -v taskset >/dev/null; then
  BENCH_SERVER_PIN=(taskset -c 1)
  BENCH_CLIENT_PIN=(taskset -c 0)
  BENCH_PIN_DESC="server on CPU 1, wrk on CPU 0"
else
  BENCH_SERVER_PIN=()
  BENCH_CLIENT_PIN=()
  BENCH_PIN_DESC="not pinned"
fi

# ------------------------------------------------------------------------------ wrk

# bench_wrk OUT WRK-ARGS...: runs wrk (pinned as the client), output to OUT.
bench_wrk() {
  local out=$1
  shift
  "${BENCH_CLIENT_PIN[@]}" wrk "$@" >"$out" 2>&1 || { cat "$out" >&2; die "wrk failed: wrk $*"; }
}

# bench_wrkstat FILE FIELD: a field of the WRKSTAT line printed by the scripts' done().
bench_wrkstat() {
  awk -v f="$2" '/^WRKSTAT / { for (i = 2; i <= NF; i++) { split($i, kv, "=");
    if (kv[1] == f) print kv[2] } }' "$1"
}

# bench_wrk_check FILE LABEL: fails loudly when wrk saw any socket error or any
# non-2xx/3xx answer, or made no request at all.
bench_wrk_check() {
  local file=$1 label=$2 f v bad=""
  grep -q '^WRKSTAT ' "$file" || { cat "$file" >&2; die "$label: no WRKSTAT line in wrk output"; }
  for f in err_connect err_read err_write err_timeout err_status; do
    v=$(bench_wrkstat "$file" "$f")
    [[ $v == 0 ]] || bad+=" $f=$v"
  done
  if [[ -n $bad ]]; then
    cat "$file" >&2
    die "$label: wrk reported errors:$bad (err_status = non-2xx/3xx answers)"
  fi
  (($(bench_wrkstat "$file" requests) > 0)) || { cat "$file" >&2; die "$label: wrk made no request"; }
}

# bench_proc_ticks PID: CPU time (user+system, clock ticks) of PID and its direct children
# (nginx's master and worker; counterd's threads are inside its own line).
bench_proc_ticks() {
  local p t=0
  for p in "$1" $(pgrep -P "$1" || true); do
    t=$((t + $(awk '{ print $14 + $15 }' "/proc/$p/stat" 2>/dev/null || echo 0)))
  done
  echo "$t"
}
BENCH_CLK_TCK=$(getconf CLK_TCK)

# bench_sys_busy_ticks: busy CPU time of the whole machine (all CPUs, clock ticks; steal
# included), from /proc/stat. Minus what the server and wrk used, it tells whether
# something else ran during a measurement.
bench_sys_busy_ticks() {
  awk '$1 == "cpu" { print $2 + $3 + $4 + $7 + $8 + $9 }' /proc/stat
}

# bench_children_cpu VAR: CPU seconds (user+system) of this shell's finished children,
# from the "times" builtin (run in this shell, not in a $(...) subshell, which would only
# see its own children); the difference around a foreground wrk is wrk's CPU time.
bench_children_cpu() {
  times >"$BENCH_TMP/times"
  printf -v "$1" '%s' "$(awk 'NR == 2 { s = 0; for (i = 1; i <= 2; i++) {
    split($i, a, /[ms]/); s += a[1] * 60 + a[2] }; printf "%.3f", s }' "$BENCH_TMP/times")"
}

# us_to_ms N: microseconds -> milliseconds with 2 decimals.
us_to_ms() { awk -v u="$1" 'BEGIN { printf "%.2f", u / 1000 }'; }

# ----------------------------------------------------------------- disks and fsync

# bench_fs_of PATH: "<fstype> on <source> (mounted at <target>)" of the filesystem holding
# PATH.
bench_fs_of() {
  findmnt -n -o FSTYPE,SOURCE,TARGET -T "$1" |
    awk 'NR == 1 { printf "%s on %s (mounted at %s)\n", $1, $2, $3 }'
}

# bench_blockdev_of PATH: the block device (its name in /proc/diskstats, e.g. vda, dm-0)
# under the filesystem holding PATH; empty when there is none (tmpfs, overlay, ...).
bench_blockdev_of() {
  local src
  src=$(findmnt -n -o SOURCE -T "$1" | head -n 1)
  [[ $src == /dev/* ]] || return 0
  src=$(basename "$(readlink -f "$src")")
  awk -v d="$src" '$3 == d { print d; exit }' /proc/diskstats
}

# bench_dev_flushes DEV: "FLUSHES MS": flush requests completed by DEV and milliseconds
# spent on them, from /proc/diskstats (fields 15-16 of the stats; "0 0" when DEV is
# empty or the kernel does not report flushes).
bench_dev_flushes() {
  awk -v d="$1" '$3 == d && NF >= 20 { print $19, $20; f = 1; exit }
    END { if (!f) print "0 0" }' /proc/diskstats
}

# bench_fdatasync_us DIR [COUNT]: mean microseconds of one synchronous 4 KiB append in a
# scratch file of DIR (dd oflag=dsync: each write returns once the data and the size
# are on stable storage, i.e. write + fdatasync), over COUNT (300) appends.
bench_fdatasync_us() {
  local dir=$1 n=${2:-300} f out s
  f=$(mktemp "$dir/fsync-probe.XXXXXX")
  out=$(LC_ALL=C dd if=/dev/zero of="$f" bs=4k count="$n" oflag=dsync 2>&1) ||
    { rm -f "$f"; die "dd oflag=dsync in $dir failed: $out"; }
  rm -f "$f"
  s=$(awk '/ copied, / { for (i = 1; i < NF; i++) if ($(i + 1) == "s,") print $i }' <<<"$out")
  [[ -n $s ]] || die "cannot read the time in dd's output: $out"
  awk -v s="$s" -v n="$n" 'BEGIN { printf "%.0f\n", s * 1e6 / n }'
}

# ---------------------------------------------------------------------------- Redis

# bench_wait_redis PORT PID NAME [TIMEOUT_S]: waits until redis-server answers PING.
bench_wait_redis() {
  local port=$1 pid=$2 name=$3 timeout=${4:-15} i
  for ((i = 0; i < timeout * 10; i++)); do
    redis-cli -p "$port" ping 2>/dev/null | grep -q PONG && return 0
    bench_alive "$pid" "$name"
    sleep 0.1
  done
  tail -n 30 "$BENCH_TMP/$name.log" >&2 || true
  die "$name: no PONG on port $port within ${timeout}s"
}

# bench_start_nginx CONF [NAME=LINE ...]: the nginx anchor, 1 worker, from bench/nginx/CONF
# in a temp prefix (nothing written to root-owned paths), listening on a free port written
# to conf/listen.inc; each NAME=LINE writes LINE to conf/NAME first (e.g. the upstream).
# Sets NGX_PREFIX, NGX_PORT, NGX_URL and NGX_PID.
bench_start_nginx() {
  local conf=$1 inc
  shift
  NGX_PREFIX=$BENCH_TMP/nginx
  mkdir -p "$NGX_PREFIX/conf" "$NGX_PREFIX/logs" "$NGX_PREFIX/tmp"
  cp "$BENCH_DIR/nginx/$conf" "$NGX_PREFIX/conf/$conf"
  bench_free_port NGX_PORT
  NGX_URL=http://127.0.0.1:$NGX_PORT
  echo "listen 127.0.0.1:$NGX_PORT;" >"$NGX_PREFIX/conf/listen.inc"
  for inc in "$@"; do
    echo "${inc#*=}" >"$NGX_PREFIX/conf/${inc%%=*}"
  done
  bench_start nginx "${BENCH_SERVER_PIN[@]}" nginx -p "$NGX_PREFIX/" -c "conf/$conf" \
    -e stderr -g 'daemon off;'
  NGX_PID=$BENCH_PID
}
