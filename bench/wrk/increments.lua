-- wrk script for bench/increment.sh's batch configuration: POST /increments with
-- {"increments":[{"counter_name":"bench","amount":1}, ...]} (BENCH_BATCH items, default 16)
-- on every request, and the same WRKSTAT line as increment.lua at the end (bench/lib.sh),
-- plus items=<requests x BENCH_BATCH>.
-- Optional env: BENCH_COUNTER (default "bench"), BENCH_AMOUNT (default 1), BENCH_BATCH.

local name = os.getenv("BENCH_COUNTER") or "bench"
local amount = os.getenv("BENCH_AMOUNT") or "1"
local batch = tonumber(os.getenv("BENCH_BATCH") or "16")

local items = {}
for i = 1, batch do
  items[i] = '{"counter_name":"' .. name .. '","amount":' .. amount .. '}'
end

wrk.method = "POST"
wrk.body = '{"increments":[' .. table.concat(items, ",") .. ']}'
wrk.headers["Content-Type"] = "application/json"

-- No request()/response() functions: wrk sends one pre-built request buffer, so the load
-- generator spends no Lua time per request. Every item of this body is valid, so a 200
-- means all of them were applied (a region answers per item inside a 200).

function done(summary, latency, requests)
  local e = summary.errors
  local secs = summary.duration / 1e6
  io.write(string.format(
    "WRKSTAT requests=%d duration_us=%d rps=%.2f p50_us=%d p90_us=%d p99_us=%d max_us=%d " ..
    "mean_us=%d err_connect=%d err_read=%d err_write=%d err_status=%d err_timeout=%d " ..
    "items=%d ops=%.2f\n",
    summary.requests, summary.duration, summary.requests / secs,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
    latency.mean, e.connect, e.read, e.write, e.status, e.timeout,
    summary.requests * batch, summary.requests * batch / secs))
end
