-- wrk script for bench/gateway.sh: one POST per request with the static body
--   {"counter_name":"<BENCH_COUNTER>","amount":<BENCH_AMOUNT>[,"routing":"<BENCH_ROUTING>"]}
-- (the same script for the three paths: gateway /api/increment with a routing policy,
-- nginx and the region /increment without), and one machine-readable line at the end,
-- the same as wrk/increment.lua's (parsed by bench/lib.sh):
--   WRKSTAT requests=N duration_us=N rps=N.NN p50_us=N p90_us=N p99_us=N max_us=N
--           mean_us=N err_connect=N err_read=N err_write=N err_status=N err_timeout=N
-- err_status counts non-2xx/3xx answers; the others are socket errors.
--
-- BENCH_V1=1: the body of POST /v1/counters/{ns}/{name}/add instead, {"delta":<BENCH_AMOUNT>[,"routing"]}.
-- Env: BENCH_COUNTER (default "bench"), BENCH_AMOUNT (default 1), BENCH_ROUTING (default:
-- no "routing" field), BENCH_PACE_MS (default 0): when > 0, each connection waits a
-- random 1 .. 2*PACE-1 ms (mean PACE ms) after an answer before its next request, so
-- that every path gets about the same request rate (CONNS / (PACE + latency)) instead of
-- as many as it can answer; the random wait keeps the connections from sending in
-- lock-step bursts.

local name = os.getenv("BENCH_COUNTER") or "bench"
local amount = os.getenv("BENCH_AMOUNT") or "1"
local routing = os.getenv("BENCH_ROUTING") or ""
local pace = tonumber(os.getenv("BENCH_PACE_MS") or "0") or 0

wrk.method = "POST"
wrk.body = '{"counter_name":"' .. name .. '","amount":' .. amount ..
  (routing ~= "" and (',"routing":"' .. routing .. '"') or "") .. '}'
if os.getenv("BENCH_V1") == "1" then -- POST /v1/counters/{ns}/{name}/add: the name is in the URL
  wrk.body = '{"delta":' .. amount .. (routing ~= "" and (',"routing":"' .. routing .. '"') or "") .. '}'
end
wrk.headers["Content-Type"] = "application/json"

-- No request()/response() functions: wrk then sends one pre-built request buffer, so
-- the load generator spends no Lua time per request (only delay() when pacing).
if pace > 0 then
  local lo, hi = 1, math.max(1, 2 * pace - 1)
  function setup(thread)
    thread:set("seed", math.random(1, 1000000))
  end
  function init()
    math.randomseed(seed or os.time())
  end
  function delay()
    return math.random(lo, hi)
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  local secs = summary.duration / 1e6
  io.write(string.format(
    "WRKSTAT requests=%d duration_us=%d rps=%.2f p50_us=%d p90_us=%d p99_us=%d max_us=%d " ..
    "mean_us=%d err_connect=%d err_read=%d err_write=%d err_status=%d err_timeout=%d\n",
    summary.requests, summary.duration, summary.requests / secs,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
    latency.mean, e.connect, e.read, e.write, e.status, e.timeout))
end
