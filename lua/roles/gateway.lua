--[[
gateway.lua - the gateway (port 8080): the API entry point (API.md, "Gateway").

POST /api/increment is the hot path and is answered in C (core/roles/gateway.c): it asks
lua/policies/routing.lua for a region, forwards on pooled keep-alive connections, and
fails over with the same idempotency token. So is AddCount (POST /v1/counters/{ns}/{name}/add
and /add-and-get) of a namespace this file has told C is eventual. Everything else is here:
reads and admin calls go to the coordinator, whose answers are relayed; /v1/namespaces go
to the regions; /v1/counters go where the namespace's type says (API.md, "Through the
gateway").
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
-- STRONG_URL may list several strong roles (etcd's, one per region, the nearest first):
-- each strong operation goes to the first that answers (strong_call).
local strong_urls = {}
for u in strong_url:gmatch("[^,%s]+") do strong_urls[#strong_urls + 1] = u end
-- The embedded strong counter /api/compare measures beside STRONG_URL's etcd roles
-- (STRONG_EMBEDDED_URL; none when it is one of STRONG_URL's: then there is one series).
local strong_embedded_url = counterd.config.strong_embedded_url
for _, u in ipairs(strong_urls) do
  if u == strong_embedded_url then strong_embedded_url = nil end
end

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

-- Whether a strong request that failed so was provably not applied: it never reached the
-- strong role (no connection) or the role says so (503 no_quorum).
local function not_applied(res, err)
  if res then return res.status == 503 and res.body:find('"error":"no_quorum"', 1, true) ~= nil end
  return err:find("connect", 1, true) ~= nil or err:find("resolve", 1, true) ~= nil
end

local strong_down = {} -- by url: skipped until then (ms) after it did not answer

--[[
Sends one request to the strong roles of `urls` (STRONG_URL's by default) in order: the first
that answers with less than a 5xx wins; one that does not answer (or answers 5xx) is skipped
for 2 s and the request goes to the next with the same body (the same idempotency token, so
etcd's transaction applies it once). Without a token (`retry` "unapplied") it goes on only
when the failure proves it was not applied. Returns res, url, why-list (of the ones before),
or nil, why.
]]
local function strong_call(method, path, body, retry, urls)
  urls = urls or strong_urls
  local now, order, later = counterd.now_ms(), {}, {}
  for _, u in ipairs(urls) do
    if now >= (strong_down[u] or 0) then order[#order + 1] = u else later[#later + 1] = u end
  end
  for _, u in ipairs(later) do order[#order + 1] = u end -- every one down: try them anyway
  local why = {}
  for k, u in ipairs(order) do
    local res, err = http.request{ url = u .. path, method = method, body = body,
                                   headers = web.upstream_headers(),
                                   timeout_ms = web.timeout() + 10000 }
    if res and res.status < 500 then
      strong_down[u] = nil
      return res, u, why
    end
    strong_down[u] = counterd.now_ms() + 2000
    why[#why + 1] = u .. ": " .. (res and ("answered " .. res.status) or err)
    local last = k == #order
    if last or (retry == "unapplied" and not not_applied(res, err)) then
      if res then return res, u, why end
      return nil, table.concat(why, "; ")
    end
    counterd.log.warn(method .. " " .. path .. " on the strong role " .. u .. " failed (" ..
                      why[#why] .. "); failing over")
  end
  return nil, "no strong role is configured"
end

-- One increment on the strong counter: ms and its coordination_delay_ms, or nil and why.
-- `urls` picks the strong roles (default STRONG_URL's); `backend`, when given, is the one
-- their answers must name.
local function strong_once(counter, urls, backend)
  local t0 = counterd.now_ms()
  local res, err = strong_call("POST", "/increment",
                               json.encode({ counter_name = counter, amount = 1 }),
                               "unapplied", urls)
  if not res then return nil, "the strong counter did not answer: " .. err end
  local ms = counterd.now_ms() - t0
  local ok, body = pcall(json.decode, res.body)
  if res.status ~= 200 then
    local detail = ok and type(body) == "table" and body.detail or res.body
    return nil, "the strong counter answered " .. res.status .. ": " .. tostring(detail)
  end
  if backend and not (ok and type(body) == "table" and body.backend == backend) then
    return nil, "the strong counter's answer does not say backend " .. backend
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
    strong = function() return strong_once(counter, strong_embedded_url and { strong_embedded_url }) end,
    -- With STRONG_EMBEDDED_URL, STRONG_URL's roles are etcd's: measured as a third series.
    strong_etcd = strong_embedded_url and function() return strong_once(counter, nil, "etcd") end,
    now_ms = counterd.now_ms,
    observe = function(kind, s) m_compare:observe(s, kind) end,
  }
  if not out then return web.err(503, "unavailable", err) end
  out.counter_name = counter
  out.routing = policy
  return 200, out
end

-- ---------------------------------------------------------------- /v1 (API.md, "Through the gateway")

-- The namespaces the regions run, learned from GET /v1/namespaces on the first region that
-- answers; kept NS_FRESH_MS, and asked again at once for a namespace not in them (a new one
-- works at once). The eventual ones are told to the C hot path through counterd.shared
-- ("gw.v1.eventual.<ns>" = until when, in counterd.now_ms()), which serves their adds.
local NS_FRESH_MS = 2000
local ns_known, ns_at = {}, -math.huge
local node_ids = {} -- by region index, learnt from answers: the homes of the tokens made here

local function region_call(r, method, path, body, timeout)
  return http.request{ url = r.url .. path, method = method, body = body,
                       headers = web.upstream_headers(), timeout_ms = timeout or web.timeout() }
end

local function decode_object(text)
  local ok, v = pcall(json.decode, text)
  if ok and type(v) == "table" then return v end
  return nil
end

local function publish_namespaces(known, now)
  for name in pairs(ns_known) do
    if not known[name] then counterd.shared.set("gw.v1.eventual." .. name, nil) end
  end
  for name, n in pairs(known) do
    counterd.shared.set("gw.v1.eventual." .. name,
                        n.type == "eventual" and now + NS_FRESH_MS or nil)
  end
end

-- Reads the namespaces from the first region that answers. Returns true, or nil and why.
local function refresh_namespaces()
  local why = {}
  for i, r in ipairs(regions) do
    local res, err = region_call(r, "GET", "/v1/namespaces")
    local body = res and res.status == 200 and decode_object(res.body)
    if body and type(body.namespaces) == "table" then
      local known, now = {}, counterd.now_ms()
      if type(body.node_id) == "string" then node_ids[i] = body.node_id end
      for _, n in ipairs(body.namespaces) do
        if type(n) == "table" and type(n.namespace) == "string" and n.deleted ~= true then
          known[n.namespace] = n
        end
      end
      known.default = known.default or { namespace = "default", type = "eventual",
                                         idempotency_window_seconds = 600 }
      publish_namespaces(known, now)
      ns_known, ns_at = known, now
      return true
    end
    why[#why + 1] = r.name .. ": " .. (res and ("answered " .. res.status) or err)
  end
  return nil, table.concat(why, "; ")
end

-- The namespace's configuration, or nil and an error answer (404 unknown, 503).
local refreshing_since = -math.huge

local function namespace_of(ns)
  local n, now = ns_known[ns], counterd.now_ms()
  -- While one request asks the regions, the others keep the last word rather than all
  -- asking (a refresh that never came back stops counting after 10 s).
  if n and (now - refreshing_since < 10000 or now - ns_at < NS_FRESH_MS) then return n end
  refreshing_since = now
  local ok, err = refresh_namespaces()
  refreshing_since = -math.huge
  if not ok then
    if n then return n end -- the regions are down: the last word still says where to go
    return nil, { web.err(503, "unavailable", "no region told the namespaces: " .. err) }
  end
  n = ns_known[ns]
  if not n then
    return nil, { web.err(404, "not_found", "namespace " .. ns .. " does not exist") }
  end
  return n
end

local function valid_ns(s)
  return type(s) == "string" and #s >= 1 and #s <= 48 and not s:find("[^%w_.%-]")
end

-- The newer of two namespace records: higher version, then updated_by in byte order.
local function newer(a, b)
  if not b then return true end
  local va, vb = tonumber(a.version) or 0, tonumber(b.version) or 0
  if va ~= vb then return va > vb end
  return tostring(a.updated_by or "") > tostring(b.updated_by or "")
end

-- Every region's answer to GET path, in parallel: { [i] = {res} or {error} }.
local function fan_out(path)
  local calls = {}
  for i, r in ipairs(regions) do
    calls[i] = { url = r.url .. path, headers = web.upstream_headers(), timeout_ms = web.timeout() }
  end
  return http.multi(calls)
end

-- GET /v1/namespaces/{ns}: the newest record any region has, each region's version, and
-- whether they all run the same one.
local function namespace_get(ns)
  local all = fan_out("/v1/namespaces/" .. ns)
  local best, views, versions, missing, failed = nil, {}, {}, 0, {}
  for i, r in ipairs(regions) do
    local res = all[i]
    local body = res.status == 200 and decode_object(res.body)
    if body then
      if newer(body, best) then best = body end
      views[r.name] = { version = body.version }
      versions[#versions + 1] = tostring(body.version) .. "/" .. tostring(body.updated_by)
    elseif res.status == 404 then
      missing = missing + 1
      views[r.name] = { error = "not_found" }
    else
      views[r.name] = { error = res.error or ("answered " .. tostring(res.status)) }
      failed[#failed + 1] = r.name .. ": " .. views[r.name].error
    end
  end
  if not best then
    if missing > 0 then return web.err(404, "not_found", "namespace " .. ns .. " does not exist") end
    return web.err(503, "unavailable", "no region answered: " .. table.concat(failed, "; "))
  end
  local converged = #versions == #regions
  for k = 2, #versions do converged = converged and versions[k] == versions[1] end
  best.regions, best.converged = views, converged
  return 200, best
end

-- GET /v1/namespaces: the newest record of each namespace any region has.
local function namespace_list()
  local all = fan_out("/v1/namespaces")
  local merged, views, sigs, failed = {}, {}, {}, {}
  for i, r in ipairs(regions) do
    local res = all[i]
    local body = res.status == 200 and decode_object(res.body)
    if body and type(body.namespaces) == "table" then
      local sig, top = {}, 0
      for _, n in ipairs(body.namespaces) do
        if type(n) == "table" and type(n.namespace) == "string" then
          if newer(n, merged[n.namespace]) then merged[n.namespace] = n end
          sig[#sig + 1] = n.namespace .. "=" .. tostring(n.version) .. "/" .. tostring(n.updated_by)
          top = math.max(top, tonumber(n.version) or 0)
        end
      end
      table.sort(sig)
      sigs[#sigs + 1] = table.concat(sig, ",")
      views[r.name] = { version = top }
    else
      views[r.name] = { error = res.error or ("answered " .. tostring(res.status)) }
      failed[#failed + 1] = r.name .. ": " .. views[r.name].error
    end
  end
  if #sigs == 0 then
    return web.err(503, "unavailable", "no region answered: " .. table.concat(failed, "; "))
  end
  local list, names = json.array({}), {}
  for name in pairs(merged) do names[#names + 1] = name end
  table.sort(names)
  for _, name in ipairs(names) do list[#list + 1] = merged[name] end
  local converged = #sigs == #regions
  for k = 2, #sigs do converged = converged and sigs[k] == sigs[1] end
  return 200, { namespaces = list, regions = views, converged = converged }
end

-- PUT / DELETE /v1/namespaces/{ns}: to the first region in config order that answers.
local function namespace_write(method, ns, body)
  local why = {}
  for _, r in ipairs(regions) do
    local res, err = region_call(r, method, "/v1/namespaces/" .. ns, body)
    if res and res.status < 500 then
      ns_at = -math.huge -- learnt again at the next counter operation
      if res.status ~= 200 then return res.status, res.body end
      return 200, splice(res.body, { routed_to_endpoint = r.url })
    end
    why[#why + 1] = r.name .. ": " .. (res and ("answered " .. res.status) or err)
  end
  return web.err(503, "unavailable", "no region took it: " .. table.concat(why, "; "))
end

local down_until = {} -- by region index: skipped until then (ms), as the C hot path does

-- A token made for region i, its home (store/tokset.h): "<node id>/<random>".
-- A token made for region i names its node id, which makes that region its home: the
-- region counts it at once instead of holding it pending for another. The id is asked of
-- the region (/health) the first time it is not known yet.
local function token_for(i)
  if not node_ids[i] then
    local res = region_call(regions[i], "GET", "/health")
    if res and res.status == 200 then
      node_ids[i] = res.body:match('"node_id":"([%w_.:%-]+)"')
    end
  end
  return (node_ids[i] and node_ids[i] .. "/" or "") .. counterd.token() .. counterd.token()
end

-- The region for one operation: the routing policy's choice among those up (or, with
-- all_up, every region) and not tried.
local function pick(policy, name, client_region, token, tried, all_up)
  local names, healthy, now = {}, {}, counterd.now_ms()
  for i, r in ipairs(regions) do
    names[i] = r.name
    healthy[i] = r.name_known ~= false and not tried[i] and
                 (all_up or now >= (down_until[i] or 0))
  end
  local i, code, known = routing.route(policy, name, client_region, names, healthy, token)
  if i == nil and code == "unknown_policy" then
    local list = type(known) == "table" and " (known: " .. table.concat(known, ", ") .. ")" or ""
    return nil, { web.err(400, "bad_field", "routing: unknown routing policy '" .. policy .. "'" .. list) }
  end
  return i
end

local function log_warn_failover(op, r, why)
  counterd.log.warn(op.method .. " " .. op.path .. " on " .. r.name .. " failed (" .. why ..
                    ")" .. (op.failover and "; failing over" or ""))
end

-- Sends one operation to the regions by the routing policy; on no answer or a 5xx, to the
-- next one (when failover is allowed) with the same body, token included.
local function to_regions(req, op)
  local tried, first, last, not_known = {}, nil, "no healthy region", nil
  -- A regional operation goes where the policy sends it with every region up: there, or
  -- (when the client allows it) elsewhere, and the answer says so.
  local want = op.regional and pick(op.routing, op.name, op.client_region, op.token, {}, true)
  if want then first = regions[want].name end
  while true do
    local i, e
    if want and not op.failover then
      i = not tried[want] and want or nil
    else
      i, e = pick(op.routing, op.name, op.client_region, op.token, tried)
    end
    if e then return unpack(e) end
    if not i then break end
    local r = regions[i]
    tried[i], first = true, first or r.name
    if op.fields and not op.body then
      if not op.fields.idempotency_token then
        op.token, op.made_token = token_for(i), true
        op.fields.idempotency_token = op.token
      end
      op.body = json.encode(op.fields)
    end
    local t0 = counterd.now_ms()
    local res, err = region_call(r, op.method, op.path, op.body)
    if res and res.status < 300 and not node_ids[i] then
      node_ids[i] = res.body:match('"node_id":"([%w_.:%-]+)"')
    end
    local unknown = res and res.status == 404 and res.body:find('"detail":"namespace ', 1, true)
    if unknown and op.failover then
      -- The namespace has not reached this region yet (the gateway learnt it from another
      -- one): any region of an eventual namespace counts it.
      not_known = res.body
      last = r.name .. ": does not know namespace yet"
    elseif res and res.status < 500 then
      if res.status ~= 200 then return res.status, res.body end
      local extra = { routed_to_endpoint = r.url, routing = op.routing,
                      latency_ms = web.ms(counterd.now_ms() - req.start_ms) }
      if first ~= r.name then extra.failover_from = first end
      return 200, splice(res.body, extra)
    else
      down_until[i] = t0 + 2000
      last = r.name .. ": " .. (res and ("answered " .. res.status) or err)
      log_warn_failover(op, r, last)
    end
    if not op.failover then break end
  end
  if not_known then return 404, not_known end
  local detail = "no region took it (last: " .. last .. ")"
  if not op.failover and first then
    detail = detail .. "; a regional namespace counts where it lands: send \"failover\":true " ..
             "to let another region count it"
  end
  return web.err(503, "unavailable", detail)
end

-- One operation on the strong counter, wherever it runs: the first of STRONG_URL's roles
-- that answers; a change without a token goes on only when provably not applied.
local function to_strong(req, op)
  local retry = (op.method == "GET" or op.token) and "any" or "unapplied"
  local res, where, why = strong_call(op.method, op.path, op.body, retry)
  if not res then
    return web.err(503, "unavailable", "the strong counter did not answer: " .. where ..
                   (op.token and "; a retry with idempotency_token " .. op.token ..
                    " applies it at most once" or ""))
  end
  local extra = { routed_to_endpoint = "strong", routing = "strong",
                  latency_ms = web.ms(counterd.now_ms() - req.start_ms) }
  if #strong_urls > 1 then extra.routed_to_endpoint = where end
  if why and #why > 0 then extra.failover_from = why[1]:match("^(.-): ") end
  if op.made_token then extra.idempotency_token = op.token end
  if res.status ~= 200 and res.status < 500 then return res.status, res.body end
  if res.status ~= 200 then
    return res.status, op.made_token and splice(res.body, { idempotency_token = op.token }) or res.body
  end
  return 200, splice(res.body, extra)
end

-- Checks the body of add / add-and-get / clear. Returns it, or nil and an error answer.
local function op_body(req, verb)
  local body, e = web.body(req)
  if not body then return nil, e end
  local function bad(detail) return nil, { web.err(400, "bad_field", detail) } end
  if verb ~= "clear" then
    local d = body.delta
    if not ((type(d) == "number" and d == math.floor(d) and d ~= 0 and math.abs(d) < 2^63) or
            type(d) == "cdata") then
      return bad("delta must be a non-zero integer in the signed 64-bit range")
    end
  end
  local t = body.idempotency_token
  if t ~= nil and (type(t) ~= "string" or #t < 1 or #t > 128) then
    return bad("idempotency_token must be a string of 1-128 bytes")
  end
  if body.routing ~= nil and (type(body.routing) ~= "string" or #body.routing < 1 or
                              #body.routing > 63) then
    return bad("routing must be a string naming a routing policy")
  end
  if body.failover ~= nil and type(body.failover) ~= "boolean" then
    return bad("failover must be true or false")
  end
  return body
end

-- /v1/counters/{ns}[/{name}[/{verb}]]: the endpoint's template, then its answer.
local function counters(req, ns, name, verb)
  local path, method = req.path, req.method
  local template = "/v1/counters/{ns}" .. (name and "/{name}" or "") .. (verb and "/" .. verb or "")
  if verb and verb ~= "add" and verb ~= "add-and-get" and verb ~= "clear" then
    return "other", web.not_found(req)
  end
  local get = method == "GET" or method == "HEAD"
  if verb and method ~= "POST" then return template, web.method_not_allowed(req, "POST") end
  if not verb and name and not get and method ~= "DELETE" then
    return template, web.method_not_allowed(req, "GET, HEAD, DELETE")
  end
  if not name and not get then return template, web.method_not_allowed(req, "GET, HEAD") end
  if not valid_ns(ns) then
    return template, web.err(400, "bad_field", "namespace must be 1-48 bytes of [A-Za-z0-9_.-]")
  end
  if name and not web.valid_name(name) then
    return template, web.err(400, "bad_name", "counter names are 1-200 bytes of [A-Za-z0-9_.:-]")
  end
  local body
  if verb then
    local e
    body, e = op_body(req, verb)
    if not body then return template, unpack(e) end
  end
  local n, e = namespace_of(ns)
  if not n then return template, unpack(e) end
  local q = web.query(req.query) or {}
  local op = { method = method == "HEAD" and "GET" or method, name = name,
               path = path .. ((req.query or "") ~= "" and "?" .. req.query or ""),
               -- sticky: a counter's operations meet at its home region, so a client's
               -- reads see its adds and its clears observe them
               routing = body and body.routing or q.routing or "sticky",
               client_region = req.headers and req.headers["x-client-region"] or nil,
               regional = n.type == "regional",
               failover = n.type ~= "regional" or (body and body.failover == true) }
  if verb then
    op.token = body.idempotency_token
    body.routing, body.failover = nil, nil
    op.fields = body -- encoded once the region (the home of a token made here) is chosen
    if n.type == "strong" then
      if not op.token then
        op.token, op.made_token = counterd.token() .. counterd.token(), true
        body.idempotency_token = op.token
      end
      body.idempotency_window_seconds = n.idempotency_window_seconds
      op.body = json.encode(body)
    end
  end
  if n.type == "strong" then return template, to_strong(req, op) end
  return template, to_regions(req, op)
end

-- /v1/...: the endpoint's template (the metrics' label), then the answer.
local function v1(req)
  local path, method = req.path, req.method
  if path == "/v1/namespaces" then
    if method ~= "GET" and method ~= "HEAD" then
      return path, web.method_not_allowed(req, "GET, HEAD")
    end
    return path, namespace_list()
  end
  local ns = path:match("^/v1/namespaces/([^/]+)$")
  if ns then
    local t = "/v1/namespaces/{ns}"
    if not valid_ns(ns) then
      return t, web.err(400, "bad_field", "namespace must be 1-48 bytes of [A-Za-z0-9_.-]")
    end
    if method == "GET" or method == "HEAD" then return t, namespace_get(ns) end
    if method == "PUT" then return t, namespace_write("PUT", ns, req.body) end
    if method == "DELETE" then return t, namespace_write("DELETE", ns) end
    return t, web.method_not_allowed(req, "GET, HEAD, PUT, DELETE")
  end
  local rest = path:match("^/v1/counters/(.+)$")
  if rest then
    local parts = {}
    for p in (rest .. "/"):gmatch("([^/]*)/") do parts[#parts + 1] = p end
    if #parts <= 3 and parts[#parts] ~= "" then
      return counters(req, parts[1], parts[2], parts[3])
    end
  end
  return "other", web.not_found(req)
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
  if path:sub(1, 4) == "/v1/" or path == "/v1" then return v1(req) end
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
