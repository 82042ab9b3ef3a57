--[[
coordinator.lua - the coordinator (port 8000): the global view across the regions, and the
partition and force-sync fan-out (API.md, "Coordinator").

Every question to the regions goes to all of them at once (counterd.http.multi) with a
timeout; a region that does not answer in time is reported unhealthy and left out, and
the answer still comes.
]]

local json, http, metrics, trace = counterd.json, counterd.http, counterd.metrics, counterd.trace
local web = counterd.require("web")

local M = {}

local regions = web.regions()

-- Counter names are labels up to --metrics-top-n of them (the rest read "_other").
local top_n = counterd.config.metrics_top_n or 100
local m_global = metrics.gauge("coordinator_global_count", "Global count of a counter (max of region totals)",
                               "counter_name"):limit(top_n, 1)
local m_region = metrics.gauge("coordinator_region_count", "A region's total of a counter",
                               "counter_name,region"):limit(top_n * math.max(#regions, 1), 1)
local m_lag = metrics.gauge("coordinator_convergence_lag", "Max minus min of the region totals",
                            "counter_name"):limit(top_n, 1)
local m_merged = metrics.gauge("coordinator_merged_count",
                               "Join of the regions' vectors (per node the largest), summed",
                               "counter_name"):limit(top_n, 1)
local m_converged = metrics.gauge("coordinator_converged",
                                  "1 when every healthy region holds the same vector", "counter_name")
                           :limit(top_n, 1)
local m_latency = metrics.histogram("coordinator_query_latency_seconds",
                                    "Time to answer a global query", "operation")
local m_healthy = metrics.gauge("coordinator_healthy_regions", "Regions that answered the last query")

-- Calls every region; returns the answers, in the order of `regions`.
local function fan_out(method, path, body, timeout_ms)
  local calls = {}
  for i, r in ipairs(regions) do
    calls[i] = { url = r.url .. path, method = method, body = body,
                 headers = web.upstream_headers(), timeout_ms = timeout_ms or web.timeout() }
  end
  return http.multi(calls)
end

-- The decoded JSON of a 200 answer, or nil.
local function ok_json(res)
  if res.status ~= 200 then return nil end
  local v = json.decode(res.body)
  if type(v) ~= "table" then return nil end
  return v
end

local INT64_MAX, INT64_MIN = 0x7fffffffffffffffLL, -0x7fffffffffffffffLL - 1

-- a + b clamped to the int64 range; the second result says whether it was clamped. Counts
-- past 2^53 arrive as int64 cdata, whose own arithmetic would wrap.
local function add_clamped(a, b)
  if b > 0 and a > INT64_MAX - b then return INT64_MAX, true end
  if b < 0 and a < INT64_MIN - b then return INT64_MIN, true end
  local s = a + b
  if type(s) == "number" and (s >= 2^53 or s <= -2^53) then s = 0LL + a + b end -- exact
  return s, false
end

-- Whether two `nodes` vectors hold the same entries.
local function same_vector(a, b)
  for k, v in pairs(a) do
    if b[k] == nil or b[k] ~= v then return false end
  end
  for k in pairs(b) do
    if a[k] == nil then return false end
  end
  return true
end

local function global_counter(name)
  local t0 = counterd.now_ms()
  if not web.valid_name(name) then
    return web.err(400, "bad_name", "counter names are 1-200 bytes of [A-Za-z0-9_.:-]")
  end
  local answers = fan_out("GET", "/counter/" .. name)
  local out_regions, healthy = {}, 0
  local maxc, minc
  local join, vectors, pendings, beyond = {}, {}, {}, false
  for i, r in ipairs(regions) do
    local v = ok_json(answers[i])
    if v then
      healthy = healthy + 1
      local nodes = type(v.nodes) == "table" and v.nodes or {}
      -- pending: increments taken for their tokens' homes, not yet in nodes (absent: 0).
      out_regions[r.name] = web.mark_unnamed(r, { local_count = v.local_count,
                                                  total_count = v.total_count, nodes = nodes,
                                                  pending = v.pending,
                                                  beyond_int64 = v.beyond_int64,
                                                  exact = v.exact })
      vectors[#vectors + 1] = nodes
      pendings[#pendings + 1] = v.pending or 0
      if v.beyond_int64 then beyond = true end
      for node, c in pairs(nodes) do
        if join[node] == nil or c > join[node] then join[node] = c end
      end
      -- Counts past 2^53 arrive as int64 cdata: compare with <, not math.max.
      local total = v.total_count or 0
      if maxc == nil or total > maxc then maxc = total end
      if minc == nil or total < minc then minc = total end
      m_region:set(tonumber(total), name, r.name)
    end
  end
  maxc, minc = maxc or 0, minc or 0
  -- Converged: every healthy region holds the same vector (equal totals are not enough).
  local converged = healthy > 0 and maxc == minc
  for k = 2, #vectors do
    if not same_vector(vectors[1], vectors[k]) or pendings[k] ~= pendings[1] then
      converged = false
    end
  end
  -- The value the cluster converges to: per node the largest count any region holds, plus
  -- the increments held pending for their tokens' homes (the most any region holds: exact
  -- once they settle, or when one region holds them all).
  local merged = 0
  for _, p in ipairs(pendings) do
    if p > merged then merged = p end
  end
  for _, c in pairs(join) do
    local clamped
    merged, clamped = add_clamped(merged, c)
    if clamped then beyond = true end
  end
  local ms = counterd.now_ms() - t0
  m_global:set(tonumber(maxc), name)
  m_lag:set(tonumber(maxc - minc), name)
  m_merged:set(tonumber(merged), name)
  m_converged:set(converged and 1 or 0, name)
  m_healthy:set(healthy)
  m_latency:observe(ms / 1000, "global_counter")
  return 200, {
    counter = name,
    global_count = maxc,
    merged_count = merged,
    beyond_int64 = beyond or nil,
    regions = out_regions,
    convergence = { converged = converged, lag = maxc - minc, max_count = maxc,
                    min_count = minc },
    healthy_regions = healthy,
    total_regions = #regions,
    query_time_ms = web.ms(ms),
  }
end

-- GET /counters' rules (API.md): limit 1..10000 (default 1000), cursor the hex of a counter
-- name ("" is the start), prefix 0-200 bytes of the names' alphabet.
local LIST_DEFAULT, LIST_MAX = 1000, 10000
local BYTES_MIN, BYTES_MAX = 1024, 1073741824

local function hex_of(s)
  return (s:gsub(".", function(c) return string.format("%02x", c:byte()) end))
end

-- A store key: a counter name, or "<namespace>/<name>" (API.md, "Namespaces").
local function valid_key(s)
  local ns, name = s:match("^([^/]*)/(.*)$")
  if not ns then return web.valid_name(s) end
  return #ns >= 1 and #ns <= 48 and ns:match("^[%w_.%-]+$") ~= nil and web.valid_name(name)
end

-- The listing's parameters, checked before any region is asked: a table, or nil and a
-- 400 answer naming the parameter.
local function list_query(req)
  local q, e = web.query(req.query)
  if not q then return nil, e end
  local ns = q.namespace
  if ns ~= nil and not (#ns >= 1 and #ns <= 48 and ns:match("^[%w_.%-]+$")) then
    return nil, { web.err(400, "bad_field", "namespace must be 1-48 bytes of [A-Za-z0-9_.-]") }
  end
  local limit = LIST_DEFAULT
  if q.limit ~= nil then
    limit = #q.limit <= 15 and q.limit:match("^%d+$") and tonumber(q.limit) -- as the regions
    if not limit or limit < 1 or limit > LIST_MAX then
      return nil, { web.err(400, "bad_field", "limit must be an integer from 1 to 10000") }
    end
  end
  local cursor, after = q.cursor or "", nil
  if cursor ~= "" then
    local name = #cursor % 2 == 0 and cursor:match("^%x+$") and
                 cursor:gsub("%x%x", function(h) return string.char(tonumber(h, 16)) end)
    after = name
    if not name or not (ns and web.valid_name(name) or (not ns and valid_key(name))) then
      return nil, { web.err(400, "bad_field", "cursor must be a next_cursor from an earlier " ..
                            "answer (the hex of a counter name)") }
    end
  end
  local prefix = q.prefix
  if prefix and prefix ~= "" and not web.valid_name(prefix) then
    return nil, { web.err(400, "bad_field", "prefix must be 0-200 bytes of [A-Za-z0-9_.:-]") }
  end
  local max_bytes = nil
  if q.max_bytes ~= nil then
    max_bytes = #q.max_bytes <= 10 and q.max_bytes:match("^%d+$") and tonumber(q.max_bytes)
    if not max_bytes or max_bytes < BYTES_MIN or max_bytes > BYTES_MAX then
      return nil, { web.err(400, "bad_field", "max_bytes must be an integer from " .. BYTES_MIN ..
                            " to " .. BYTES_MAX) }
    end
  end
  return { limit = limit, cursor = cursor, after = after, prefix = prefix, max_bytes = max_bytes,
           namespace = ns }
end

-- The merged answer, encoded, within q.max_bytes: names are dropped from the end (each
-- costs its rows in every region's page and its place in counter_names) until it fits,
-- keeping at least one. Returns the JSON text.
local function within_budget(q, answer, pages)
  local s = json.encode(answer)
  local names = answer.counter_names
  while q.max_bytes and #s > q.max_bytes and #names > 1 do
    local over = #s - q.max_bytes
    repeat
      local name = names[#names]
      local cost = #json.encode(name) + 1
      for _, v in pairs(pages) do
        local row = v.counters[name]
        if row ~= nil then
          cost = cost + #json.encode(name) + #json.encode(row) + 2
          v.counters[name] = nil
        end
      end
      names[#names] = nil
      over = over - cost
    until over <= 0 or #names == 1
    answer.truncated = true
    answer.next_cursor = hex_of(names[#names])
    s = json.encode(answer)
  end
  return s
end

-- Why a region's answer is not one: a sentence for region_errors.
local function failure(res)
  if not res.status then return "no answer: " .. tostring(res.error) end
  local v = json.decode(res.body or "")
  local detail = type(v) == "table" and v.detail
  return "HTTP " .. res.status .. (detail and (": " .. tostring(detail)) or "")
end

-- Logs a region's listing or top failing, and answering again: once per change, not once
-- per request (the dashboard asks every second).
local failing = {}
local function note(r, op, why)
  local key = op .. " " .. r.name
  if why and not failing[key] then
    counterd.log.warn(op .. ": region " .. r.name .. " left out: " .. why)
  elseif not why and failing[key] then
    counterd.log.info(op .. ": region " .. r.name .. " answers again")
  end
  failing[key] = why
end

-- One page from every region (the same limit, cursor and prefix), merged in name order:
-- the first `limit` names of their union. A region's page covers every name it holds up
-- to its last one, so no name up to the merged page's last is missed, and the next page
-- starts after it. Never more than one page per region is held.
local function global_counters(req)
  local t0 = counterd.now_ms()
  local q, e = list_query(req)
  if not q then return unpack(e) end
  local path = "/counters?limit=" .. q.limit .. (q.cursor ~= "" and "&cursor=" .. q.cursor or "") ..
               (q.prefix and "&prefix=" .. q.prefix or "") ..
               (q.namespace and "&namespace=" .. q.namespace or "") ..
               (q.max_bytes and "&max_bytes=" ..
                math.max(BYTES_MIN, math.floor(q.max_bytes / math.max(#regions, 1))) or "")
  local answers = fan_out("GET", path)
  local pages, names, seen, healthy, errors = {}, {}, {}, 0, nil
  local total, matching, more, bound = 0, nil, false, nil
  for i, r in ipairs(regions) do
    local v = ok_json(answers[i])
    if v and type(v.counters) == "table" then
      healthy = healthy + 1
      pages[r] = v
      local n = 0
      for name in pairs(v.counters) do
        n = n + 1
        -- A region that does not page (the original lab's) answers everything: only what
        -- is after the cursor and matches the prefix is this page's.
        if not seen[name] and (not q.after or name > q.after) and
           (not q.prefix or name:sub(1, #q.prefix) == q.prefix) then
          seen[name] = true
          names[#names + 1] = name
        end
      end
      total = math.max(total, tonumber(v.total_counters) or n)
      if q.prefix then matching = math.max(matching or 0, tonumber(v.matching_counters) or n) end
      if v.truncated then
        more = true
        -- A page cut short (by bytes, or a region that pages without limit's rows) holds
        -- every name of its region up to its last one only: the merged page stops there.
        local last = nil
        for name in pairs(v.counters) do
          if not last or name > last then last = name end
        end
        if last and (not bound or last < bound) then bound = last end
      end
      note(r, "/global/counters", nil)
    else
      errors = errors or {}
      errors[r.name] = v and "its answer has no counters" or failure(answers[i])
      note(r, "/global/counters", errors[r.name])
    end
  end
  table.sort(names)
  while bound and #names > 0 and names[#names] > bound do names[#names] = nil end
  if #names > q.limit then
    for k = #names, q.limit + 1, -1 do names[k] = nil end
    more = true
  end
  local kept = {}
  for _, name in ipairs(names) do kept[name] = true end
  local out = {}
  for r, v in pairs(pages) do
    for name in pairs(v.counters) do
      if not kept[name] then v.counters[name] = nil end
    end
    v.next_cursor = nil -- its page's own: the merged page's is the answer's next_cursor
    out[r.name] = web.mark_unnamed(r, v)
  end
  local ms = counterd.now_ms() - t0
  m_healthy:set(healthy)
  m_latency:observe(ms / 1000, "global_counters")
  local answer = { regions = out, counter_names = json.array(names), healthy_regions = healthy,
                   total_regions = #regions, query_time_ms = web.ms(ms), total_counters = total,
                   matching_counters = matching, truncated = more,
                   next_cursor = more and #names > 0 and hex_of(names[#names]) or nil,
                   region_errors = errors, namespace = q.namespace }
  if not q.max_bytes then return 200, answer end
  return 200, within_budget(q, answer, pages)
end

-- GET /global/top (API.md, "Top counters"): candidates from every region's bounded state,
-- then those candidates read on every region, as /global/counter reads one counter.
local TOP_DEFAULT, TOP_MAX, READ_BATCH = 10, 100, 256

local function top_query(req)
  local q, e = web.query(req.query)
  if not q then return nil, e end
  local by = q.by or "rate"
  if by ~= "rate" and by ~= "total" and by ~= "lag" then
    return nil, { web.err(400, "bad_field", "by must be rate, total or lag") }
  end
  local limit = TOP_DEFAULT
  if q.limit ~= nil then
    limit = q.limit:match("^%d%d?%d?$") and tonumber(q.limit)
    if not limit or limit < 1 or limit > TOP_MAX then
      return nil, { web.err(400, "bad_field", "limit must be an integer from 1 to " .. TOP_MAX) }
    end
  end
  return { by = by, limit = limit }
end

-- Every region's candidates: the sorted names, the largest rate each region gave, and the
-- regions that answered (others go to errors).
local function top_candidates(q, errors)
  local answers = fan_out("GET", "/top?by=" .. q.by .. "&limit=" .. q.limit)
  local names, rate, up = {}, {}, {}
  for i, r in ipairs(regions) do
    local v = ok_json(answers[i])
    if v and type(v.counters) == "table" then
      up[#up + 1] = r
      for _, c in ipairs(v.counters) do
        local name = c.counter
        if type(name) == "string" then
          if rate[name] == nil then names[#names + 1] = name end
          local cr = tonumber(c.rate_per_minute) or 0
          if rate[name] == nil or cr > rate[name] then rate[name] = cr end
        end
      end
    else
      errors[r.name] = v and "its /top answer has no counters" or failure(answers[i])
    end
  end
  table.sort(names)
  return names, rate, up
end

-- Reads names on every region of up (POST /counters/read, READ_BATCH names a call).
-- Returns { [region] = { [name] = counts } } for the regions that answered every call.
local function read_everywhere(names, up, errors)
  local calls, at = {}, {}
  for b = 1, #names, READ_BATCH do
    local body = json.encode({ names = json.array({ unpack(names, b, math.min(#names, b + READ_BATCH - 1)) }) })
    for _, r in ipairs(up) do
      calls[#calls + 1] = { url = r.url .. "/counters/read", method = "POST", body = body,
                            headers = web.upstream_headers(), timeout_ms = web.timeout() }
      at[#calls] = r
    end
  end
  local answers = #calls > 0 and http.multi(calls) or {}
  local views, failed = {}, {}
  for k, res in ipairs(answers) do
    local r, v = at[k], ok_json(res)
    if v and type(v.counters) == "table" then
      views[r] = views[r] or {}
      for name, c in pairs(v.counters) do views[r][name] = c end
    else
      failed[r] = true
      errors[r.name] = v and "its /counters/read answer has no counters" or failure(res)
    end
  end
  for r in pairs(failed) do views[r] = nil end
  return views
end

-- One candidate as /global/counter sees it: largest total, lag, converged.
local function top_entry(name, views, rate)
  local maxc, minc, first, converged = nil, nil, nil, true
  for _, view in pairs(views) do
    local c = view[name] or {}
    local total = c.total_count or 0
    if maxc == nil or total > maxc then maxc = total end
    if minc == nil or total < minc then minc = total end
    local nodes = type(c.nodes) == "table" and c.nodes or {}
    if first == nil then
      first = { nodes = nodes, pending = c.pending or 0 }
    elseif not same_vector(first.nodes, nodes) or (c.pending or 0) ~= first.pending then
      converged = false
    end
  end
  maxc, minc = maxc or 0, minc or 0
  return { counter = name, total_count = maxc, rate_per_minute = rate[name] or 0,
           lag = maxc - minc, converged = converged and maxc == minc and first ~= nil }
end

local TOP_KEY = { rate = "rate_per_minute", total = "total_count", lag = "lag" }

local function global_top(req)
  local t0 = counterd.now_ms()
  local q, e = top_query(req)
  if not q then return unpack(e) end
  local errors = {}
  local names, rate, up = top_candidates(q, errors)
  local views = read_everywhere(names, up, errors)
  local healthy = 0
  for _ in pairs(views) do healthy = healthy + 1 end
  for _, r in ipairs(regions) do note(r, "/global/top", errors[r.name]) end
  local list = {}
  if healthy > 0 then
    for _, name in ipairs(names) do
      local t = top_entry(name, views, rate)
      if q.by ~= "lag" or not t.converged then list[#list + 1] = t end
    end
  end
  local key = TOP_KEY[q.by]
  table.sort(list, function(a, b)
    if a[key] ~= b[key] then return a[key] > b[key] end
    return a.counter < b.counter
  end)
  for k = #list, q.limit + 1, -1 do list[k] = nil end
  local ms = counterd.now_ms() - t0
  m_healthy:set(healthy)
  m_latency:observe(ms / 1000, "global_top")
  return 200, { by = q.by, window_seconds = 60, counters = json.array(list),
                healthy_regions = healthy, total_regions = #regions, query_time_ms = web.ms(ms),
                region_errors = next(errors) and errors or nil }
end

local function global_status()
  local t0 = counterd.now_ms()
  -- GET /admin/sync: partition state, and per peer the last success and the last error. A
  -- region of the original lab has no such endpoint: its /admin/partition answers instead.
  local answers = fan_out("GET", "/admin/sync")
  local old, at = {}, {}
  for i, r in ipairs(regions) do
    if answers[i].status == 404 then
      old[#old + 1] = { url = r.url .. "/admin/partition", method = "GET",
                        headers = web.upstream_headers(), timeout_ms = web.timeout() }
      at[#old] = i
    end
  end
  if #old > 0 then
    local more = http.multi(old)
    for k = 1, #old do answers[at[k]] = more[k] end
  end
  local out, healthy, partitioned = {}, 0, 0
  for i, r in ipairs(regions) do
    local v = ok_json(answers[i])
    if v then
      healthy = healthy + 1
      if v.network_partition then partitioned = partitioned + 1 end
      out[r.name] = web.mark_unnamed(r, { status = "healthy", node_id = v.node_id,
                                          network_partition = v.network_partition == true,
                                          last_sync_time = v.last_sync_time,
                                          changes = v.changes, peers = v.peers })
    else
      out[r.name] = web.mark_unnamed(r, { status = "unhealthy" })
    end
  end
  m_healthy:set(healthy)
  m_latency:observe((counterd.now_ms() - t0) / 1000, "global_status")
  return 200, { regions = out, healthy_count = healthy, partitioned_count = partitioned }
end

local function set_partition(req)
  local body, e = web.body(req)
  if not body then return unpack(e) end
  if type(body.region) ~= "string" then
    return web.err(400, "bad_field", "region must be a string naming a region")
  end
  local r = web.region_named(regions, body.region)
  if not r then
    local pending = web.health(regions, {}).regions_unnamed
    return web.err(404, "not_found", "unknown region " .. body.region ..
                   (pending and " (names not known yet, their /health has not answered: " ..
                    table.concat(pending, ", ") .. ")" or ""))
  end
  if type(body.enabled) ~= "boolean" then
    return web.err(400, "bad_field", "enabled must be true or false")
  end
  local res, err = http.post(r.url .. "/admin/partition", json.encode({ enabled = body.enabled }),
                             { headers = web.upstream_headers(), timeout_ms = web.timeout() })
  if not res or res.status ~= 200 then
    return web.err(503, "unavailable", "region " .. r.name .. " did not take the change: " ..
                   (err or ("HTTP " .. res.status)))
  end
  local v = ok_json(res) or {}
  return 200, { status = "success", region = r.name, network_partition = v.network_partition == true }
end

local function set_partition_all(req)
  local q, e = web.query(req.query)
  if not q then return unpack(e) end
  if q.enabled ~= "true" and q.enabled ~= "false" then
    return web.err(400, "bad_field", "enabled must be true or false (query parameter)")
  end
  local enabled = q.enabled == "true"
  local answers = fan_out("POST", "/admin/partition", json.encode({ enabled = enabled }))
  local updated = 0
  for i = 1, #regions do
    if answers[i].status == 200 then updated = updated + 1 end
  end
  return 200, { status = "success", partition_enabled = enabled, regions_updated = updated }
end

-- A region's answer to /admin/force-sync, as force_sync reports it.
local function sync_outcome(res)
  local v = res.status and json.decode(res.body or "") or nil
  if type(v) ~= "table" then v = {} end
  local peers = type(v.peers) == "table" and v.peers or nil
  if res.status == 200 then return { status = "sync_completed", peers = peers } end
  if res.status == 503 and v.error == "partitioned" then
    return { status = "partitioned", detail = v.detail }
  end
  if not res.status then
    return { status = "unreachable", detail = "no answer: " .. tostring(res.error) }
  end
  return { status = v.status == "sync_failed" and "sync_failed" or "error",
           detail = v.detail or ("HTTP " .. res.status), peers = peers }
end

-- 200 "sync_initiated" when every region completed its round or is partitioned; else 502
-- "sync_failed" naming what failed. Either way, per region what happened.
local function force_sync()
  -- A force-sync answers after a complete round, which may take long on a big store.
  local answers = fan_out("POST", "/admin/force-sync", nil, math.max(web.timeout(), 30000))
  local synced, out, failed = 0, {}, {}
  for i, r in ipairs(regions) do
    local o = sync_outcome(answers[i])
    out[r.name] = o
    if o.status == "sync_completed" then
      synced = synced + 1
    elseif o.status ~= "partitioned" then
      failed[#failed + 1] = r.name .. ": " .. tostring(o.detail)
    end
  end
  if #failed == 0 then
    return 200, { status = "sync_initiated", regions_synced = synced, regions = out }
  end
  table.sort(failed)
  return 502, { status = "sync_failed", error = "sync_failed", regions_synced = synced,
                regions = out, detail = #failed .. " region(s) did not complete the sync: " ..
                table.concat(failed, "; ") }
end

function M.handle(req)
  local path, method = req.path, req.method
  local get = method == "GET" or method == "HEAD"
  if path == "/health" then
    if not get then return web.method_not_allowed(req, "GET, HEAD") end
    return 200, web.health(regions, { status = "ok", service = "coordinator" })
  end
  local name = path:match("^/global/counter/(.+)$")
  if name then
    trace.route("/global/counter/{name}")
    trace.attr("counter.name", name)
    if not get then return web.method_not_allowed(req, "GET, HEAD") end
    return global_counter(name)
  end
  if path == "/global/counters" then
    if not get then return web.method_not_allowed(req, "GET, HEAD") end
    return global_counters(req)
  end
  if path == "/global/top" then
    if not get then return web.method_not_allowed(req, "GET, HEAD") end
    return global_top(req)
  end
  if path == "/global/status" then
    if not get then return web.method_not_allowed(req, "GET, HEAD") end
    return global_status()
  end
  if path == "/global/partition" then
    if method ~= "POST" then return web.method_not_allowed(req, "POST") end
    return set_partition(req)
  end
  if path == "/global/partition/all" then
    if method ~= "POST" then return web.method_not_allowed(req, "POST") end
    return set_partition_all(req)
  end
  if path == "/global/force-sync" then
    if method ~= "POST" then return web.method_not_allowed(req, "POST") end
    return force_sync()
  end
  return web.not_found(req)
end

return M
