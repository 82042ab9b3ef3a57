--[[
web.lua - small helpers the Lua roles share: errors in API.md's shape, query strings,
counter names, rounding, and the upstream call options.
]]

local json = counterd.json
local M = {}

-- An error answer: status, {"detail": ..., "error": code}.
function M.err(status, code, detail)
  return status, { detail = detail, error = code }
end

function M.not_found(req)
  return M.err(404, "not_found", "no endpoint " .. req.method .. " " .. req.path)
end

function M.method_not_allowed(req, allowed)
  return 405, { detail = req.method .. " is not allowed on this path (allowed: " .. allowed .. ")",
                error = "method_not_allowed" }, "application/json", "Allow: " .. allowed .. "\r\n"
end

-- "a=1&b=x+y" -> { a = "1", b = "x y" }, decoded by the C routes' own decoder
-- (counterd.query). A bad percent-escape: nil and a 400 answer naming the parameter.
function M.query(q)
  local t, detail = counterd.query(q)
  if not t then return nil, { M.err(400, "bad_field", detail) } end
  return t
end

-- API.md's rule: 1-200 bytes of [A-Za-z0-9_.:-].
function M.valid_name(s)
  return type(s) == "string" and #s >= 1 and #s <= 200 and not s:find("[^%w_.:%-]")
end

-- Milliseconds rounded to 2 decimals, as API.md asks.
function M.ms(x)
  return math.floor(x * 100 + 0.5) / 100
end

-- Decodes a JSON object body ("" is {}). Returns the table, or nil and an error answer.
function M.body(req)
  if not req.body:find("%S") then return {} end
  local v, e = json.decode(req.body)
  if v == nil then
    return nil, { M.err(400, "bad_json", "body is not valid JSON: " .. e) }
  end
  if type(v) ~= "table" or getmetatable(v) then
    return nil, { M.err(400, "bad_json", "body must be a JSON object") }
  end
  return v
end

-- Headers for calls to the services behind a role (the admin token when there is one).
function M.upstream_headers()
  local token = counterd.config.admin_token
  if token then return { "Authorization: Bearer " .. token } end
  return nil
end

function M.timeout()
  return counterd.config.upstream_timeout_ms or 2000
end

-- The regions this process talks to: REGION_ENDPOINTS, else the lab's topology. A region
-- given as host:port has name = endpoint and name_known = false until its /health tells
-- its name (core/net/discover.c), which then changes these same tables.
function M.regions()
  local r = counterd.config.regions
  if r then return r end
  return counterd.conf("lab").regions()
end

-- The region called name (a name or, while it is not known, the address), or nil.
function M.region_named(regions, name)
  for _, r in ipairs(regions) do
    if r.name == name then return r end
  end
  return nil
end

-- Marks a view's entry of a region whose name is not known yet (keyed by its address).
function M.mark_unnamed(r, entry)
  if r.name_known == false then
    entry.name_known = false
    entry.endpoint = r.endpoint
  end
  return entry
end

-- The /health answer `out` of a role that calls regions, plus regions_unnamed: the
-- addresses whose name is not known yet (only while there are any).
function M.health(regions, out)
  for _, r in ipairs(regions) do
    if r.name_known == false then
      out.regions_unnamed = out.regions_unnamed or json.array({})
      out.regions_unnamed[#out.regions_unnamed + 1] = r.endpoint
    end
  end
  return out
end

return M
