-- wrk script for bench/increment.sh: POST /increment {"counter_name":"bench","amount":1}
-- on every request, and one machine-readable line at the end (parsed by bench/lib.sh):
--   WRKSTAT requests=N duration_us=N rps=N.NN p50_us=N p90_us=N p99_us=N max_us=N
--           mean_us=N err_connect=N err_read=N err_write=N err_status=N err_timeout=N
-- err_status counts non-2xx/3xx answers; the others are socket errors.
-- Optional env: BENCH_COUNTER (default "bench"), BENCH_AMOUNT (default 1).

local name = os.getenv("BENCH_COUNTER") or "bench"
local amount = os.getenv("BENCH_AMOUNT") or "1"

wrk.method = "POST"
wrk.body = '{"counter_name":"' .. name .. '","amount":' .. amount .. '}'
wrk.headers["Content-Type"] = "application/json"

-- No request()/response() functions: wrk then sends one pre-built request buffer, so
-- the load generator spends no Lua time per request.

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
