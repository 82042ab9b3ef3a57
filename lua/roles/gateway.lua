--[[
gateway.lua - the gateway (port 8080): the API entry point (API.md, "Gateway").

POST /api/increment is the hot path and is answered in C (core/roles/gateway.c): it asks
lua/policies/routing.lua for a region, forwards on pooled keep-alive connections, and
fails over with the same idempotency token. Everything else is here: reads and admin
calls go to the coordinator, whose answers are relayed.
]]

local json, http, metrics, trace = counterd.json, counterd.http, counterd.metrics, counterd.trace
local web = counterd.require("web")
local compare = counterd.require("bench/compare")
local routing = counterd.policy("routing")

local M = {}

local regions = web.regions()
M.regions = regions -- the C hot path (POST /api/increment, core/roles/gateway.c) uses these
local coordinator = counterd.config.coordinator_url or counterd.conf("lab").url("coordinator")
local strong_url = counterd.config.strong_url or counterd.conf("lab").url("strong")

-- The C hot path counts its requests into these same families (found by name).
local m_requests = metrics.counter("gateway_requests_total", "Requests answered by the gateway",
                                   "method,endpoint,status")
local m_duration = metrics.histogram("gateway_request_duration_seconds",
                                     "Time the gateway took to answer", "endpoint")
local m_compare = metrics.histogram("gateway_consistency_comparison_seconds",
                                    "One increment's latency in /api/compare, by consistency",
                                    "consistency_type")

-- Adds fields to a JSON object's text, keeping what it had byte for byte.
local function splice(text, fields)
  local head = text:match("^(.*)}%s*$")
  if not head then return text end
  local parts = {}
  for k, v in pairs(fields) do parts[#parts + 1] = json.encode(k) .. ":" .. json.encode(v) end
  table.sort(parts)
  local sep = head:match("{%s*$") and "" or ","
  return head .. sep .. table.concat(parts, ",") .. "}"
end

-- Forwards to the coordinator and relays its answer; extra fields are spliced in.
local function via_coordinator(method, path, body, extra)
  local t0 = counterd.now_ms()
  local timeout = path == "/global/force-sync" and math.max(web.timeout(), 35000) or
                  web.timeout() + 1000
  local res, err = http.request{ url = coordinator .. path, method = method, body = body,
                                 headers = web.upstream_headers(), timeout_ms = timeout }
  if not res then
    return web.err(503, "unavailable", "the coordinator did not answer: " .. err)
  end
  if extra and res.status == 200 then
    extra.gateway_latency_ms = web.ms(counterd.now_ms() - t0)
    return 200, splice(res.body, extra)
  end
  return res.status, res.body
end

-- "?<the request's query>", or "": a read passed through to the coordinator as asked.
local function with_query(req)
  return (req.query or "") ~= "" and "?" .. req.query or ""
end

local function partition(req, region)
  local q, e = web.query(req.query)
  if not q then return unpack(e) end
  if q.enabled ~= "true" and q.enabled ~= "false" then
    return web.err(400, "bad_field", "enabled must be true or false (query parameter)")
  end
  if region == "all" then
    return via_coordinator("POST", "/global/partition/all?enabled=" .. q.enabled)
  end
  return via_coordinator("POST", "/global/partition",
                         json.encode({ region = region, enabled = q.enabled == "true" }))
end

-- One increment through the routing policy to a region: ms, or nil and why.
local function eventual_once(counter, policy)
  local names, healthy = {}, {}
  for i, r in ipairs(regions) do
    names[i], healthy[i] = r.name, r.name_known ~= false -- as the C hot path does
  end
  local i = routing.route(policy, counter, nil, names, healthy, nil) or math.random(#regions)
  local t0 = counterd.now_ms()
  local res, err = http.request{ url = regions[i].url .. "/increment", method = "POST",
                                 body = json.encode({ counter_name = counter, amount = 1 }),
                                 timeout_ms = web.timeout() }
  if not res then return nil, regions[i].name .. ": " .. err end
  if res.status ~= 200 then return nil, regions[i].name .. " answered " .. res.status end
  return counterd.now_ms() - t0
end

-- One increment on the strong counter: ms and its coordination_delay_ms, or nil and why.
local function strong_once(counter)
  local t0 = counterd.now_ms()
  local res, err = http.request{ url = strong_url .. "/increment", method = "POST",
                                 body = json.encode({ counter_name = counter, amount = 1 }),
                                 timeout_ms = web.timeout() + 10000 }
  if not res then return nil, "the strong counter did not answer: " .. err end
  local ms = counterd.now_ms() - t0
  local ok, body = pcall(json.decode, res.body)
  if res.status ~= 200 then
    local detail = ok and type(body) == "table" and body.detail or res.body
    return nil, "the strong counter answered " .. res.status .. ": " .. tostring(detail)
  end
  return ms, ok and type(body) == "table" and tonumber(body.coordination_delay_ms) or nil
end

local function run_compare(req)
  local body, e = web.body(req)
  if not body then return unpack(e) end
  local counter = body.counter_name
  if counter == nil then counter = "benchmark" end
  if not web.valid_name(counter) then
    return web.err(400, "bad_name", "counter_name must be 1-200 bytes of [A-Za-z0-9_.:-]")
  end
  local n = body.iterations
  if n == nil then n = 30 end
  if type(n) ~= "number" or n ~= math.floor(n) or n < 1 or n > 10000 then
    return web.err(400, "bad_field", "iterations must be an integer from 1 to 10000")
  end
  local policy = body.routing or "random"
  if type(policy) ~= "string" then
    return web.err(400, "bad_field", "routing must be a string naming a routing policy")
  end
  local names = {}
  for i, r in ipairs(regions) do names[i] = r.name end
  local probe, code, known = routing.route(policy, counter, nil, names, {}, nil)
  if probe == nil and code == "unknown_policy" then
    local list = type(known) == "table" and " (known: " .. table.concat(known, ", ") .. ")" or ""
    return web.err(400, "bad_field", "unknown routing policy '" .. policy .. "'" .. list)
  end
  local out, err = compare.run{
    iterations = n,
    eventual = function() return eventual_once(counter, policy) end,
    strong = function() return strong_once(counter) end,
    now_ms = counterd.now_ms,
    observe = function(kind, s) m_compare:observe(s, kind) end,
  }
  if not out then return web.err(503, "unavailable", err) end
  out.counter_name = counter
  out.routing = policy
  return 200, out
end

local function route(req)
  local path, method = req.path, req.method
  local get = method == "GET" or method == "HEAD"
  if path == "/api/increment" then -- POST is answered in C (core/roles/gateway.c)
    return "/api/increment", web.method_not_allowed(req, "POST")
  end
  if path == "/health" then
    if not get then return path, web.method_not_allowed(req, "GET, HEAD") end
    return path, 200, web.health(regions, { status = "ok", service = "gateway" })
  end
  local name = path:match("^/api/counter/(.+)$")
  if name then
    if not get then return "/api/counter/{name}", web.method_not_allowed(req, "GET, HEAD") end
    trace.attr("counter.name", name)
    if not web.valid_name(name) then
      return "/api/counter/{name}", web.err(400, "bad_name",
                                            "counter names are 1-200 bytes of [A-Za-z0-9_.:-]")
    end
    return "/api/counter/{name}", via_coordinator("GET", "/global/counter/" .. name, nil, {})
  end
  if path == "/api/counters" then
    if not get then return path, web.method_not_allowed(req, "GET, HEAD") end
    return path, via_coordinator("GET", "/global/counters" .. with_query(req))
  end
  if path == "/api/top" then
    if not get then return path, web.method_not_allowed(req, "GET, HEAD") end
    return path, via_coordinator("GET", "/global/top" .. with_query(req))
  end
  if path == "/api/status" then
    if not get then return path, web.method_not_allowed(req, "GET, HEAD") end
    return path, via_coordinator("GET", "/global/status")
  end
  local region = path:match("^/admin/partition/([%w_.:%-]+)$")
  if region then
    if method ~= "POST" then return "/admin/partition/{region}", web.method_not_allowed(req, "POST") end
    return "/admin/partition/{region}", partition(req, region)
  end
  if path == "/api/compare" then
    if method ~= "POST" then return path, web.method_not_allowed(req, "POST") end
    return path, run_compare(req)
  end
  if path == "/admin/force-sync" then
    if method ~= "POST" then return path, web.method_not_allowed(req, "POST") end
    return path, via_coordinator("POST", "/global/force-sync")
  end
  return "other", web.not_found(req)
end

function M.handle(req)
  local endpoint, status, body, ctype, headers = route(req)
  if endpoint ~= "other" then trace.route(endpoint) end
  m_requests:inc(1, req.method, endpoint, tostring(status))
  m_duration:observe((counterd.now_ms() - req.start_ms) / 1000, endpoint)
  return status, body, ctype, headers
end

return M
