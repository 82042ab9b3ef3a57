--[[
lib.lua - the scenario library: the plain functions a scenario file (demos/*.lua) calls
to drive a running lab and check what it answers.

  increment(counter, amount, opts)   POST /api/increment on the gateway; opts.region sends
                                     it to that region's POST /increment instead;
                                     opts.routing, opts.token (idempotency token),
                                     opts.client_region (X-Client-Region), opts.expect_status
  counter(name)                      the gateway's global view (GET /api/counter/{name})
  region_counter(region, name)       one region's view (GET /counter/{name} on the region)
  counters(), status()               GET /api/counters, GET /api/status
  partition(region), heal(region)    POST /admin/partition/{region}?enabled=true|false;
                                     heal() with no region heals them all
  force_sync()                       POST /admin/force-sync (one full round everywhere)
  compare(counter, iterations)       POST /api/compare
  strong_increment(counter, amount, opts), strong_counter(name)   the strong service
  request(target, method, path, body, opts)   anything else; target is "gateway",
                                     "coordinator", "strong" or a region's name
  sleep(seconds), now(), log(...), unique(prefix), finally(fn), REGIONS

Every call that talks to the lab fails the scenario when it gets no answer or an answer
outside 2xx, unless opts.expect_status names the status wanted; it returns the decoded
JSON (or the text when the answer is not JSON), then the status.

Expectations are written one way: expect(value [, label]).matcher(...), e.g.
expect(r.total_count, "us-west's total").to_be(100). Matchers: to_be (deep equality),
not_to_be, to_be_truthy, to_be_falsy, at_least, at_most, greater_than, less_than,
to_be_near(x, tolerance), to_contain (a substring, or an element of an array),
to_be_one_of(list). A matcher returns the value, so a checked value can be used on. An
expect() left without a matcher is itself a failure (so `expect(a == b)` cannot pass
silently). eventually(fn, timeout_s, interval_s) calls fn until it runs without a
failed expectation and does not return false, or fails with the last failure.

A failure names the scenario's file:line, what was expected and what was got. This file
uses nothing from counterd: M.run gets a transport (request, json, sleep, now, write,
urls), so tests/lua/scenario_spec.lua runs it with a fake lab and lua/scenario/run.lua
with counterd.http on the event loop.
]]

local M = {}

-- A failed expectation travels as this object, so that eventually() and the runner can
-- tell it from an error in the scenario's own code (which is never retried).
local Failure = {}
Failure.__index = Failure
Failure.__tostring = function(f) return f.message end

function M.is_failure(e)
  return getmetatable(e) == Failure
end

local function is_number(v)
  return type(v) == "number" or (type(v) == "cdata" and tonumber(v) ~= nil)
end

-- A value as a reader wants to see it in a message: strings quoted, tables as JSON-like
-- text with sorted keys, cut short when long.
local function show(v, depth)
  depth = depth or 0
  local ty = type(v)
  if ty == "string" then
    if #v > 200 then v = v:sub(1, 200) .. "..." end
    return (string.format("%q", v):gsub("\\\n", "\\n"))
  elseif ty == "cdata" then
    return (tostring(v):gsub("U?LL$", ""))
  elseif ty == "userdata" then
    return "null" -- counterd.json.null
  elseif ty ~= "table" then
    return tostring(v)
  end
  if depth > 3 then return "{...}" end
  local n, count = #v, 0
  for _ in pairs(v) do count = count + 1 end
  local parts = {}
  if n > 0 and n == count then
    for i = 1, n do parts[i] = show(v[i], depth + 1) end
    return "[" .. table.concat(parts, ", ") .. "]"
  end
  local keys = {}
  for k in pairs(v) do keys[#keys + 1] = k end
  table.sort(keys, function(a, b) return tostring(a) < tostring(b) end)
  for i, k in ipairs(keys) do parts[i] = tostring(k) .. "=" .. show(v[k], depth + 1) end
  local s = "{" .. table.concat(parts, ", ") .. "}"
  if #s > 400 then s = s:sub(1, 400) .. "...}" end
  return s
end
M.show = show

local function equal(a, b)
  if a == b then return true end
  if type(a) ~= "table" or type(b) ~= "table" then return false end
  for k, v in pairs(a) do
    if not equal(v, b[k]) then return false end
  end
  for k in pairs(b) do
    if a[k] == nil then return false end
  end
  return true
end

local function pack(...)
  return { n = select("#", ...), ... }
end

--[[
M.new(t) -> the scenario's functions, and a control table for the runner.
t: request(req) -> {status, body} | nil, err   (req: method, url, body, headers, timeout_ms)
   json = {encode, decode}, sleep(seconds), now() -> seconds, write(line),
   urls = {gateway, coordinator, strong, regions = {{name, url}, ...}},
   headers (sent on every request, e.g. the admin token), token() -> short random text,
   getinfo (debug.getinfo: how a failure finds the scenario's file:line).
]]
function M.new(t)
  local api, ctl = {}, { held = 0, cleanups = {} }
  local getinfo = t.getinfo
  local own_source = getinfo and getinfo(M.new, "S").source
  local t0 = t.now()
  local pending -- an expect() still waiting for its matcher: {at = "file:line"}

  -- file:line of the first frame outside this file: the scenario's line that called us.
  local function where()
    if not getinfo then return "?" end
    for level = 2, 60 do
      local info = getinfo(level, "Sl")
      if not info then break end
      if info.what ~= "C" and info.source ~= own_source then
        local src = info.source:sub(1, 1) == "@" and info.source:sub(2) or info.short_src
        return src .. ":" .. (info.currentline or 0)
      end
    end
    return "?"
  end
  ctl.where = where

  local function fail_at(at, msg)
    error(setmetatable({ message = at .. ": " .. msg }, Failure), 0)
  end
  -- Misuse of the library is a bug in the scenario: a plain error, at the scenario's line.
  local function misuse(msg)
    error(where() .. ": " .. msg, 0)
  end

  local function check_pending()
    if pending then
      local at = pending.at
      pending = nil
      fail_at(at, "expect(...) was never completed with a matcher such as .to_be(x)")
    end
  end
  ctl.check_pending = check_pending

  -- --------------------------------------------------------------- talking to the lab

  local regions, region_url = {}, {}
  for i, r in ipairs(t.urls.regions) do
    regions[i] = r.name
    region_url[r.name] = r.url
  end
  api.REGIONS = regions

  local function base_url(target)
    if target == "gateway" or target == "coordinator" or target == "strong" then
      return t.urls[target]
    end
    local u = region_url[target]
    if not u then
      misuse("unknown target " .. show(target) .. " (gateway, coordinator, strong, " ..
             table.concat(regions, ", ") .. ")")
    end
    return u
  end

  local function request(target, method, path, body, opts)
    check_pending()
    opts = opts or {}
    local url = base_url(target) .. path
    local headers = {}
    for _, h in ipairs(t.headers or {}) do headers[#headers + 1] = h end
    for _, h in ipairs(opts.headers or {}) do headers[#headers + 1] = h end
    local text
    if body ~= nil then
      text = type(body) == "string" and body or t.json.encode(body)
      headers[#headers + 1] = "Content-Type: application/json"
    end
    local res, err = t.request{ method = method, url = url, body = text, headers = headers,
                                timeout_ms = math.floor((opts.timeout_s or 10) * 1000) }
    if not res then
      fail_at(where(), method .. " " .. url .. " got no answer: " .. tostring(err))
    end
    local data = t.json.decode(res.body)
    if data == nil then data = res.body end
    local want = opts.expect_status
    if want and res.status ~= want then
      fail_at(where(), string.format("%s %s: expected HTTP %d, got %d %s", method, url, want,
                                     res.status, show(data)))
    elseif not want and (res.status < 200 or res.status > 299) then
      fail_at(where(), string.format("%s %s answered HTTP %d %s", method, url, res.status,
                                     show(data)))
    end
    return data, res.status
  end
  api.request = request

  local function need_name(what, name)
    if type(name) ~= "string" or name == "" then
      misuse(what .. ": the counter name must be a non-empty string, not " .. show(name))
    end
  end
  local function need_amount(what, amount)
    if amount ~= nil and not is_number(amount) then
      misuse(what .. ": the amount must be a number, not " .. show(amount))
    end
    return amount or 1
  end

  function api.increment(name, amount, opts)
    need_name("increment", name)
    amount = need_amount("increment", amount)
    opts = opts or {}
    local body = { counter_name = name, amount = amount, idempotency_token = opts.token }
    local ropts = { expect_status = opts.expect_status, timeout_s = opts.timeout_s }
    if opts.region then
      if opts.routing then misuse("increment: give opts.region or opts.routing, not both") end
      return request(opts.region, "POST", "/increment", body, ropts)
    end
    body.routing = opts.routing
    if opts.client_region then ropts.headers = { "X-Client-Region: " .. opts.client_region } end
    return request("gateway", "POST", "/api/increment", body, ropts)
  end

  function api.counter(name, opts)
    need_name("counter", name)
    return request("gateway", "GET", "/api/counter/" .. name, nil, opts)
  end

  function api.region_counter(region, name, opts)
    if not region_url[region] then misuse("region_counter: unknown region " .. show(region)) end
    need_name("region_counter", name)
    return request(region, "GET", "/counter/" .. name, nil, opts)
  end

  function api.counters(opts)
    return request("gateway", "GET", "/api/counters", nil, opts)
  end

  function api.status(opts)
    return request("gateway", "GET", "/api/status", nil, opts)
  end

  local function set_partition(region, enabled)
    if region ~= "all" and not region_url[region] then
      misuse((enabled and "partition" or "heal") .. ": unknown region " .. show(region))
    end
    return request("gateway", "POST", "/admin/partition/" .. region .. "?enabled=" ..
                   tostring(enabled), nil)
  end
  function api.partition(region)
    if region == nil then misuse("partition: name a region (or \"all\")") end
    return set_partition(region, true)
  end
  function api.heal(region)
    return set_partition(region or "all", false)
  end

  function api.force_sync(opts)
    opts = opts or {}
    return request("gateway", "POST", "/admin/force-sync", nil,
                   { timeout_s = opts.timeout_s or 40, expect_status = opts.expect_status })
  end

  function api.compare(name, iterations, opts)
    need_name("compare", name)
    opts = opts or {}
    return request("gateway", "POST", "/api/compare",
                   { counter_name = name, iterations = iterations or 30 },
                   { timeout_s = opts.timeout_s or 120, expect_status = opts.expect_status })
  end

  function api.strong_increment(name, amount, opts)
    need_name("strong_increment", name)
    amount = need_amount("strong_increment", amount)
    return request("strong", "POST", "/increment", { counter_name = name, amount = amount }, opts)
  end

  function api.strong_counter(name, opts)
    need_name("strong_counter", name)
    return request("strong", "GET", "/counter/" .. name, nil, opts)
  end

  -- --------------------------------------------------------------- time, output

  function api.sleep(seconds)
    check_pending()
    if not is_number(seconds) or seconds < 0 then
      misuse("sleep: seconds must be a number >= 0, not " .. show(seconds))
    end
    t.sleep(seconds)
  end

  -- Seconds since the scenario started (a monotonic clock), to time things yourself.
  function api.now()
    return t.now() - t0
  end

  function api.log(...)
    local parts = pack(...)
    for i = 1, parts.n do
      local v = parts[i]
      parts[i] = type(v) == "string" and v or show(v)
    end
    t.write(string.format("[%6.2fs] %s", t.now() - t0, table.concat(parts, " ", 1, parts.n)))
  end

  -- A counter name no earlier run used: scenarios then start from zero on a lab that has
  -- been running for a while, and can expect exact totals.
  function api.unique(prefix)
    return (prefix or "scenario") .. "-" .. t.token()
  end

  -- fn runs when the scenario ends, passed or failed (last registered first): the place
  -- to heal a partition the scenario made.
  function api.finally(fn)
    if type(fn) ~= "function" then misuse("finally: expects a function") end
    table.insert(ctl.cleanups, 1, fn)
  end

  -- --------------------------------------------------------------- expectations

  function api.expect(value, label)
    check_pending()
    local e = {}
    local mine = { at = where() }
    pending = mine
    local prefix = label ~= nil and (tostring(label) .. ": ") or ""
    local function check(ok, what)
      if pending == mine then pending = nil end
      if not ok then fail_at(where(), prefix .. what) end
      ctl.held = ctl.held + 1
      return value
    end
    local function numeric(op, n, holds)
      if not is_number(n) then misuse("expect(...)." .. op .. ": the bound must be a number") end
      if not is_number(value) then
        return check(false, "expected a number " .. op:gsub("_", " ") .. " " .. show(n) ..
                     ", got " .. show(value))
      end
      return check(holds(value, n), "expected " .. op:gsub("_", " ") .. " " .. show(n) ..
                   ", got " .. show(value))
    end
    -- Matchers are called with a dot; a colon works too (the matcher table is skipped).
    local function matcher(fn)
      return function(a, ...)
        if a == e then return fn(...) end
        return fn(a, ...)
      end
    end
    e.to_be = matcher(function(x)
      return check(equal(value, x), "expected " .. show(x) .. ", got " .. show(value))
    end)
    e.not_to_be = matcher(function(x)
      return check(not equal(value, x), "expected anything but " .. show(x) .. ", got it")
    end)
    e.to_be_truthy = matcher(function()
      return check(value ~= nil and value ~= false, "expected a true value, got " .. show(value))
    end)
    e.to_be_falsy = matcher(function()
      return check(value == nil or value == false, "expected false or nil, got " .. show(value))
    end)
    e.at_least = matcher(function(n) return numeric("at_least", n, function(v, b) return v >= b end) end)
    e.at_most = matcher(function(n) return numeric("at_most", n, function(v, b) return v <= b end) end)
    e.greater_than = matcher(function(n) return numeric("greater_than", n, function(v, b) return v > b end) end)
    e.less_than = matcher(function(n) return numeric("less_than", n, function(v, b) return v < b end) end)
    e.to_be_near = matcher(function(x, tolerance)
      if not is_number(x) or not is_number(tolerance) then
        misuse("expect(...).to_be_near(x, tolerance): both must be numbers")
      end
      local ok = is_number(value) and math.abs(tonumber(value) - tonumber(x)) <= tolerance
      return check(ok, "expected " .. show(x) .. " +/- " .. show(tolerance) .. ", got " .. show(value))
    end)
    e.to_contain = matcher(function(x)
      local ok = false
      if type(value) == "string" and type(x) == "string" then
        ok = value:find(x, 1, true) ~= nil
      elseif type(value) == "table" then
        for _, v in pairs(value) do
          if equal(v, x) then ok = true end
        end
      end
      return check(ok, "expected something containing " .. show(x) .. ", got " .. show(value))
    end)
    e.to_be_one_of = matcher(function(list)
      if type(list) ~= "table" then misuse("expect(...).to_be_one_of: expects a list") end
      local ok = false
      for _, v in ipairs(list) do
        if equal(v, value) then ok = true end
      end
      return check(ok, "expected one of " .. show(list) .. ", got " .. show(value))
    end)
    return e
  end

  function api.eventually(fn, timeout_s, interval_s)
    check_pending()
    if type(fn) ~= "function" then misuse("eventually: expects a function") end
    timeout_s = timeout_s or 15
    interval_s = interval_s or 0.25
    if not is_number(timeout_s) or timeout_s < 0 or not is_number(interval_s) or interval_s <= 0 then
      misuse("eventually(fn, timeout_s, interval_s): the times must be positive numbers")
    end
    local at = where()
    local deadline = t.now() + timeout_s
    local tries, last = 0, nil
    while true do
      tries = tries + 1
      local held = ctl.held
      local r = pack(pcall(fn))
      -- An expect() inside fn left without a matcher would never hold: not retried.
      if r[1] then check_pending() end
      if r[1] then
        if r[2] ~= false then
          if ctl.held == held then ctl.held = held + 1 end -- fn checked by its result
          return unpack(r, 2, r.n)
        end
        last = "the function returned false" .. (r.n >= 3 and (", " .. show(r[3])) or "")
      elseif M.is_failure(r[2]) then
        last = r[2].message
      else
        pending = nil
        error(r[2], 0) -- a bug in the scenario is not retried
      end
      pending = nil
      ctl.held = held
      local left = deadline - t.now()
      if left <= 0 then
        fail_at(at, string.format("eventually: did not hold within %g s (%d tries); last: %s",
                                  timeout_s, tries, last))
      end
      t.sleep(math.min(interval_s, left))
    end
  end

  return api, ctl
end

--[[
M.run(t, chunk, env) runs a scenario: fills env (the chunk's environment) with the
scenario functions, calls chunk, then the finally() functions.
@return {ok = true, held = N, elapsed = s}, or {ok = false, message = "file:line: ...",
        failure = true when an expectation failed (false: an error in the scenario), held, elapsed}
]]
function M.run(t, chunk, env)
  local api, ctl = M.new(t)
  for k, v in pairs(api) do env[k] = v end
  local t0 = t.now()
  local ok, err = pcall(chunk)
  if ok then ok, err = pcall(ctl.check_pending) end
  for _, fn in ipairs(ctl.cleanups) do
    local cok, cerr = pcall(fn)
    if not cok then
      if ok then
        ok, err = false, cerr
      else
        t.write("also, in a finally function: " .. tostring(cerr))
      end
    end
  end
  local out = { ok = ok, held = ctl.held, elapsed = t.now() - t0 }
  if not ok then
    out.failure = M.is_failure(err)
    out.message = type(err) == "table" and err.message or tostring(err)
  end
  return out
end

return M
