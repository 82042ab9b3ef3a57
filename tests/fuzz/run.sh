#!/usr/bin/env bash
# Runs counterd's libFuzzer targets (see tests/fuzz/README.md).
#
#   tests/fuzz/run.sh SECONDS [TARGET...]     e.g. run.sh 30 (the smoke run), run.sh 3600 wal
#
# Builds build-fuzz/ with clang if needed (only the fuzz targets), then runs every target
# (default: all that were built; names with or without the fuzz_ prefix) for SECONDS,
# all at once. Each run works on a copy of tests/fuzz/corpus/<target> in
# build-fuzz/runs/<target>-<time>/ (the committed corpus is never written). Exits 1 if a
# target crashed, leaked, timed out or ran out of memory, printing the reproducer's path
# and how to replay it; 2 on a usage or build error.
#
# Environment: FUZZ_BUILD_DIR (default build-fuzz), FUZZ_JOBS (targets run at once,
# default all), FUZZ_ARGS (extra libFuzzer flags, e.g. "-dict=..." or "-jobs=2").
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD

usage() {
  echo "usage: tests/fuzz/run.sh SECONDS [TARGET...]   (targets: http region wal)" >&2
  exit 2
}
[[ $# -ge 1 && $1 =~ ^[0-9]+$ && $1 -gt 0 ]] || usage
secs=$1
shift

build=${FUZZ_BUILD_DIR:-build-fuzz}
case $build in /*) ;; *) build=$root/$build ;; esac

if ! command -v clang > /dev/null; then
  echo "run.sh: clang is not installed (apt-get install clang libclang-rt-14-dev," \
       "or ./scripts/setup --test)" >&2
  exit 2
fi

# Configure once; later runs only rebuild what changed.
if [[ ! -f $build/CMakeCache.txt ]]; then
  echo "run.sh: configuring $build (clang, COUNTERD_FUZZ=ON)"
  if ! cmake -S . -B "$build" -DCMAKE_C_COMPILER=clang -DCOUNTERD_FUZZ=ON \
      -DCOUNTERD_SANITIZERS=OFF -DCMAKE_BUILD_TYPE=RelWithDebInfo > "$build.configure.log" 2>&1; then
    tail -30 "$build.configure.log" >&2
    echo "run.sh: configuring $build failed (log: $build.configure.log)" >&2
    exit 2
  fi
fi
if ! cmake --build "$build" --target fuzz -j"$(nproc)" > "$build/fuzz-build.log" 2>&1; then
  grep -E "error|Error" "$build/fuzz-build.log" | head -30 >&2
  echo "run.sh: building the fuzz targets failed (log: $build/fuzz-build.log)" >&2
  exit 2
fi

bin=$build/fuzz
if [[ $# -eq 0 ]]; then
  targets=()
  for f in "$bin"/fuzz_*; do
    [[ -x $f ]] && targets+=("${f##*/fuzz_}")
  done
else
  targets=("${@#fuzz_}")
fi
((${#targets[@]})) || { echo "run.sh: no fuzz targets in $bin" >&2; exit 2; }
for t in "${targets[@]}"; do
  [[ -x $bin/fuzz_$t ]] || { echo "run.sh: no target fuzz_$t in $bin" >&2; usage; }
done

max_len() {
  case $1 in
    wal) echo 16384 ;; # a data directory's files: records are small
    *) echo 65536 ;;   # an HTTP byte stream: up to the default body limit and more
  esac
}

stamp=$(date +%Y%m%d-%H%M%S)
ulimit -c 0
declare -A dirs pids
run_one() {
  local t=$1 dir=$2
  mkdir -p "$dir/corpus" "$dir/artifacts"
  if [[ -d tests/fuzz/corpus/$t ]]; then
    cp -R "tests/fuzz/corpus/$t/." "$dir/corpus/"
  fi
  # shellcheck disable=SC2086 # FUZZ_ARGS is a list of flags
  (cd "$dir" && exec "$bin/fuzz_$t" -max_total_time="$secs" -rss_limit_mb=2048 \
      -max_len="$(max_len "$t")" -timeout=25 -detect_leaks=1 -print_final_stats=1 \
      -artifact_prefix="$dir/artifacts/" ${FUZZ_ARGS:-} "$dir/corpus" > "$dir/log" 2>&1)
}

jobs_max=${FUZZ_JOBS:-${#targets[@]}}
echo "run.sh: ${targets[*]} for ${secs}s each (logs, corpora and artifacts in $build/runs/)"
for t in "${targets[@]}"; do
  while (($(jobs -rp | wc -l) >= jobs_max)); do
    wait -n || true
  done
  dirs[$t]=$build/runs/$t-$stamp
  rm -rf "${dirs[$t]}"
  run_one "$t" "${dirs[$t]}" &
  pids[$t]=$!
done

final_stat() {
  local v
  v=$(sed -n "s/^stat::$2: *//p" "$1/log" | tail -1)
  echo "${v:-?}"
}

failed=0
for t in "${targets[@]}"; do
  rc=0
  wait "${pids[$t]}" || rc=$?
  dir=${dirs[$t]}
  cov=$({ grep -E '^#[0-9]+[[:space:]]+(DONE|pulse|NEW|REDUCE|INITED)' "$dir/log" || true; } | tail -1 |
        sed -E 's/.*cov: ([0-9]+) ft: ([0-9]+) corp: ([^ ]+).*/cov \1, features \2, corpus \3/')
  printf 'run.sh: %-7s %s execs (%s/s), %s\n' "$t" "$(final_stat "$dir" number_of_executed_units)" \
    "$(final_stat "$dir" average_exec_per_sec)" "${cov:-no coverage line}"
  artifacts=$(find "$dir/artifacts" -type f 2> /dev/null | sort)
  if ((rc != 0)) || [[ -n $artifacts ]]; then
    failed=1
    echo "run.sh: fuzz_$t FAILED (exit $rc); the report:" >&2
    grep -E '^==[0-9]+==ERROR|^==fuzz==|^SUMMARY|^    #[0-9]+ ' "$dir/log" | head -25 >&2 || true
    for a in $artifacts; do
      echo "run.sh: reproducer: $a" >&2
      echo "run.sh:   replay: $bin/fuzz_$t $a" >&2
    done
    [[ -n $artifacts ]] || echo "run.sh: no reproducer written; full log: $dir/log" >&2
    echo "run.sh: full log: $dir/log" >&2
  fi
done
exit $failed
