-- wrk script for bench/memory.sh: one POST /increment {"counter_name":"cNNNNNNN","amount":1}
-- for every name of a range, each name exactly once, then idle GET /health until stopped.
--
-- Env:
--   BENCH_FIRST  first index (default 0)
--   BENCH_COUNT  how many names (default 1000000): c<FIRST> .. c<FIRST+COUNT-1>
--   BENCH_WIDTH  digits of the index (default 7): c0000000 .. c0999999
--   BENCH_DONE_FILE  when a thread has had an answer for each of its names, it appends
--                "done <ok> <failed>" to this file and stops its event loop. wrk itself
--                only ends after -d or on SIGINT, so the caller waits for one line per
--                thread (-t) and then sends SIGINT; done() below still prints the totals.
--   BENCH_THREADS  the -t given to wrk (default 1): names are split evenly over threads.
-- At the end: "WRKSTAT ..." (same fields as increment.lua) plus
--   "DISTINCT ok=N failed=N" summed over the threads.

local first = tonumber(os.getenv("BENCH_FIRST") or "0")
local count = tonumber(os.getenv("BENCH_COUNT") or "1000000")
local width = tonumber(os.getenv("BENCH_WIDTH") or "7")
local done_file = os.getenv("BENCH_DONE_FILE")

local nthreads = tonumber(os.getenv("BENCH_THREADS") or "1")

-- setup() runs in wrk's main Lua state, once per thread, before that thread's init().
local threads = {}
local next_tid = 0
function setup(thread)
  thread:set("tid", next_tid)
  next_tid = next_tid + 1
  table.insert(threads, thread)
end

local lo, hi, nxt, tid
local finished = false
ok, failed = 0, 0 -- globals: done() reads them with thread:get()
-- wrk calls request() once on thread 0 before the run, only to check that it parses
-- (script_verify_request); that call must not use up a name.
local verified = false
local fmt = string.format
local name_fmt
local health_req

function init(args)
  tid = wrk.thread:get("tid") or 0
  local per = math.ceil(count / nthreads)
  lo = first + tid * per
  hi = math.min(first + count, lo + per) -- exclusive
  nxt = lo
  name_fmt = '{"counter_name":"c%0' .. width .. 'd","amount":1}'
  health_req = wrk.format("GET", "/health")
  wrk.headers["Content-Type"] = "application/json"
  if lo >= hi then finish() end
end

function finish()
  if finished then return end
  finished = true
  if done_file then
    local f = io.open(done_file, "a")
    if f then
      f:write(fmt("done %d %d\n", ok, failed))
      f:close()
    end
  end
  wrk.thread:stop()
end

function request()
  if tid == 0 and not verified then
    verified = true
    return health_req
  end
  if nxt < hi then
    local body = fmt(name_fmt, nxt)
    nxt = nxt + 1
    return wrk.format("POST", "/increment", nil, body)
  end
  return health_req
end

function response(status, headers, body)
  if status == 200 then
    if string.find(body, '"local_count"', 1, true) then ok = ok + 1 end
  else
    failed = failed + 1
  end
  if ok + failed >= hi - lo then finish() end
end

-- Totals over the threads for done(): each thread's counters are read back with get().
function done(summary, latency, requests)
  local e = summary.errors
  local secs = summary.duration / 1e6
  io.write(fmt(
    "WRKSTAT requests=%d duration_us=%d rps=%.2f p50_us=%d p90_us=%d p99_us=%d max_us=%d " ..
    "mean_us=%d err_connect=%d err_read=%d err_write=%d err_status=%d err_timeout=%d\n",
    summary.requests, summary.duration, summary.requests / secs,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
    latency.mean, e.connect, e.read, e.write, e.status, e.timeout))
  local tok, tfailed = 0, 0
  for _, t in ipairs(threads) do
    tok = tok + (t:get("ok") or 0)
    tfailed = tfailed + (t:get("failed") or 0)
  end
  io.write(fmt("DISTINCT ok=%d failed=%d\n", tok, tfailed))
end
