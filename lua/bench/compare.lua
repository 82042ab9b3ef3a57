--[[
compare.lua - POST /api/compare: eventual against strong consistency, measured.

Eventual: one increment written to one region, chosen by the routing policy, as the
gateway's /api/increment does; replication happens later, off the client's path.
Strong: one increment on the strong counter, acknowledged after a majority of its
replicas (one per region) has fsynced it: a real round trip across the WAN latency model,
visible in its answers' coordination_delay_ms and in the strong service's metrics.

Strong on etcd (when the gateway has both, STRONG_EMBEDDED_URL and STRONG_URL naming etcd
strong roles): one increment as an etcd transaction, acknowledged once etcd's Raft leader has
it committed on a majority of the members.

They run one after the other, each `iterations` times, one request at a time, so each
sample is one client's latency.

Statistics (all in ms, rounded to 2 decimals): avg, min, max, and percentiles by the
nearest-rank method: p(q) is the ceil(q * n)-th smallest sample (the smallest for q*n < 1).
With fewer than 100 samples p99 is therefore the largest one: a small sample cannot tell
anything finer, and nearest rank never invents a value that was not measured.
]]

local M = {}

local function round2(x)
  return math.floor(x * 100 + 0.5) / 100
end

-- Nearest-rank percentile of an ascending array (q in (0, 1]).
function M.percentile(sorted, q)
  local n = #sorted
  if n == 0 then return nil end
  local rank = math.ceil(q * n)
  if rank < 1 then rank = 1 end
  if rank > n then rank = n end
  return sorted[rank]
end

-- avg/min/max/p50/p99 of a list of samples (ms), or nil for an empty list.
function M.stats(samples)
  local n = #samples
  if n == 0 then return nil end
  local sorted, sum = {}, 0
  for i = 1, n do
    sorted[i] = samples[i]
    sum = sum + samples[i]
  end
  table.sort(sorted)
  return {
    avg_ms = round2(sum / n),
    min_ms = round2(sorted[1]),
    max_ms = round2(sorted[n]),
    p50_ms = round2(M.percentile(sorted, 0.50)),
    p99_ms = round2(M.percentile(sorted, 0.99)),
  }
end

-- "~8.8x" with one decimal, the original lab's wording.
function M.conclusion(eventual_avg, strong_avg)
  if eventual_avg <= 0 then
    return 0, "Eventual consistency answered in no measurable time"
  end
  local ratio = strong_avg / eventual_avg
  local speedup = round2(ratio)
  if ratio >= 1 then
    return speedup, string.format("Eventual consistency is ~%.1fx faster", ratio)
  end
  return speedup, string.format("Strong consistency is ~%.1fx faster", 1 / ratio)
end

--[[
Runs the comparison. opts:
  iterations       1-10000
  eventual(i)      does one eventual increment; returns ms or nil, err
  strong(i)        does one strong increment; returns ms, coordination_ms or nil, err
  strong_etcd(i)   optional: the same on the etcd-backed strong counter (a third series)
  now_ms()         a monotonic clock (only for the total time)
  observe(kind, seconds)  optional: one sample, for the metrics
Returns the API.md answer table, or nil and an error sentence when a side never succeeded.
]]
function M.run(opts)
  local n = opts.iterations
  local eventual, strong, coordination = {}, {}, {}
  local errors = { eventual = 0, strong = 0 }
  local last_error = {}
  local t0 = opts.now_ms()
  for i = 1, n do
    local ms, err = opts.eventual(i)
    if ms then
      eventual[#eventual + 1] = ms
      if opts.observe then opts.observe("eventual", ms / 1000) end
    else
      errors.eventual = errors.eventual + 1
      last_error.eventual = err
    end
  end
  for i = 1, n do
    local ms, coord = opts.strong(i)
    if ms then
      strong[#strong + 1] = ms
      if type(coord) == "number" then coordination[#coordination + 1] = coord end
      if opts.observe then opts.observe("strong", ms / 1000) end
    else
      errors.strong = errors.strong + 1
      last_error.strong = coord
    end
  end
  local etcd = {}
  for i = 1, opts.strong_etcd and n or 0 do
    local ms, err = opts.strong_etcd(i)
    if ms then
      etcd[#etcd + 1] = ms
      if opts.observe then opts.observe("strong_etcd", ms / 1000) end
    else
      errors.strong_etcd = (errors.strong_etcd or 0) + 1
      last_error.strong_etcd = err
    end
  end
  if #eventual == 0 then
    return nil, "every eventual increment failed; the last: " .. tostring(last_error.eventual)
  end
  if #strong == 0 then
    return nil, "every strong increment failed; the last: " .. tostring(last_error.strong)
  end
  local e, s = M.stats(eventual), M.stats(strong)
  e.description = "Write to one region (chosen by the routing policy), replicated to the " ..
                  "others asynchronously: the client waits for one local write"
  e.samples, e.errors = #eventual, errors.eventual
  s.description = "Write acknowledged after a majority of the replicas (one per region) " ..
                  "fsynced it: the client waits for a quorum round across the WAN"
  s.samples, s.errors = #strong, errors.strong
  local cs = M.stats(coordination)
  if cs then s.avg_coordination_delay_ms = cs.avg_ms end
  local speedup, conclusion = M.conclusion(e.avg_ms, s.avg_ms)
  local out = {
    iterations = n,
    eventual_consistency = e,
    strong_consistency = s,
    speedup = speedup,
    conclusion = conclusion,
  }
  if opts.strong_etcd then
    if #etcd == 0 then
      return nil, "every etcd strong increment failed; the last: " ..
                  tostring(last_error.strong_etcd)
    end
    local x = M.stats(etcd)
    x.description = "Write as an etcd transaction, acknowledged once the Raft leader has it " ..
                    "committed on a majority of the members (one per region), over their " ..
                    "network: the WAN's delays reach it with `lab up --net` only"
    x.samples, x.errors = #etcd, errors.strong_etcd or 0
    out.strong_etcd_consistency = x
    out.speedup_etcd, out.conclusion_etcd = M.conclusion(e.avg_ms, x.avg_ms)
  end
  out.total_time_ms = round2(opts.now_ms() - t0)
  return out
end

return M
