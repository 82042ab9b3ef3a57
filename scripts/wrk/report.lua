-- report.lua - shared by the wrk scripts of scripts/loadtest (loaded with require, through
-- LUA_PATH): counts every answer by HTTP status in each wrk thread, and at the end prints
-- one machine-readable line that scripts/loadtest turns into its table:
--
--   LOADSTAT requests=N duration_us=N rps=N.NN p50_us=N p90_us=N p99_us=N max_us=N
--            non2xx=N err_connect=N err_read=N err_write=N err_timeout=N statuses=200:N,...
--
-- non2xx counts every answer outside 200-299 (wrk's own errors.status only counts >= 400);
-- err_* are socket errors. It also splits the LOADTEST_* lists and offsets each thread's
-- place in a request cycle, so threads do not send the same request in lock-step.

local M = {}

local threads = {}

-- Runs in wrk's main Lua state, once per thread, before the thread's own init().
function M.setup(thread)
  thread:set("tid", #threads)
  threads[#threads + 1] = thread
end

-- Each wrk thread has its own Lua state, so these are per-thread and read back in done().
statuses = {}

function M.response(status)
  statuses[status] = (statuses[status] or 0) + 1
end

function M.done(summary, latency)
  local total, non2xx, codes = {}, 0, {}
  for _, t in ipairs(threads) do
    for code, n in pairs(t:get("statuses") or {}) do
      total[code] = (total[code] or 0) + n
    end
  end
  for code, n in pairs(total) do
    if code < 200 or code > 299 then non2xx = non2xx + n end
    codes[#codes + 1] = code
  end
  table.sort(codes)
  local list = {}
  for _, code in ipairs(codes) do list[#list + 1] = code .. ":" .. total[code] end
  local e = summary.errors
  local secs = summary.duration / 1e6
  io.write(string.format(
    "LOADSTAT requests=%d duration_us=%d rps=%.2f p50_us=%d p90_us=%d p99_us=%d max_us=%d " ..
    "non2xx=%d err_connect=%d err_read=%d err_write=%d err_timeout=%d statuses=%s\n",
    summary.requests, summary.duration, secs > 0 and summary.requests / secs or 0,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
    non2xx, e.connect, e.read, e.write, e.timeout, #list > 0 and table.concat(list, ",") or "-"))
end

-- "a,b,,c" -> {"a", "b", "c"}; the default when the variable is unset or empty.
function M.list(var, default)
  local out = {}
  for item in string.gmatch(os.getenv(var) or default, "[^,%s]+") do out[#out + 1] = item end
  if #out == 0 then
    for item in string.gmatch(default, "[^,%s]+") do out[#out + 1] = item end
  end
  return out
end

-- A request() that cycles through reqs (filled by the script's init()), each thread
-- starting at its own place.
function M.cycle(reqs)
  local i
  return function()
    i = (i or tid or 0) % #reqs + 1 -- tid: set by setup() through thread:set
    return reqs[i]
  end
end

-- Installs the functions wrk looks for as globals; it looks when it loads the script, so
-- call this at the top level, not in init().
function M.install(request_fn)
  setup, response, done, request = M.setup, M.response, M.done, request_fn
end

return M
