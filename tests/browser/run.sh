#!/usr/bin/env bash
# Runs a real-browser test of the dashboard (the one named, default dashboard_test.js;
# million_test.js is the one at a million counters), first installing what is missing:
# Debian's Chromium (apt-get, as root) and playwright-core as pinned by
# package-lock.json (npm ci, again whenever the lock changes). Never downloads a browser:
# the test drives /usr/bin/chromium. COUNTERD_BIN picks the binary the test's lab runs.
set -euo pipefail
cd "$(dirname "$0")"

chromium="${CHROMIUM:-/usr/bin/chromium}"
if [[ ! -x "$chromium" ]]; then
  if [[ "$(id -u)" != 0 ]]; then
    echo "run.sh: $chromium is missing: run apt-get install -y chromium as root" >&2
    exit 1
  fi
  echo "run.sh: installing Debian's chromium"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q chromium > /dev/null ||
    { apt-get update -q > /dev/null && apt-get install -y -q chromium > /dev/null; }
fi

if ! command -v node > /dev/null || ! command -v npm > /dev/null; then
  echo "run.sh: Node.js (18 or later: Debian 12 ships 18) and npm are needed" >&2
  exit 1
fi

stamp=node_modules/.counterd-lock.sha256
want="$(sha256sum package-lock.json | cut -d' ' -f1)"
if [[ ! -d node_modules/playwright-core || "$(cat "$stamp" 2> /dev/null)" != "$want" ]]; then
  echo "run.sh: installing playwright-core from package-lock.json"
  # PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD: belt and braces, playwright-core downloads nothing.
  PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error \
    --update-notifier=false
  echo "$want" > "$stamp"
fi

exec node "${1:-dashboard_test.js}"
