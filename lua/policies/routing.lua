--[[
routing.lua - which region the gateway sends an increment to.

The gateway calls, for each POST /api/increment:

  route(policy, counter_name, client_region, names, healthy, token) -> index | nil, code

  policy         the request's "routing" field (default "random")
  counter_name   the counter being incremented
  client_region  the X-Client-Region header, or nil
  names          the region names, in a fixed order: {"us-east", "us-west", "eu-west"}
  healthy        healthy[i] is true when region i is believed up
  token          the client's idempotency_token, or nil

A request that carries its own idempotency token goes to the token's home region under
random and round-robin (the gateway decides that in C, once it knows the regions' node
ids; README, "Routing, and exactly once"). Until then, or when the home is down, it is
placed here by a hash of the token wherever a policy would pick at random, so a client's
retry reaches the same region. Either way a retry counts once wherever it goes.

It returns the index of the region to use. When that region then fails, the gateway
marks it down and calls route again, so every policy fails over to a healthy region.
It answers with codes, not sentences (the gateway writes the sentence people read): an
unknown policy returns nil, "unknown_policy" and the list of known policies (the gateway
answers 400); no healthy region returns nil, "no_healthy_region" (503).

Policies: random (default), round-robin, sticky (a hash of the counter name), nearest (the
X-Client-Region header), or a region's name.
]]

local M = {}

-- For "nearest": where to go from a client region that is not one of ours, by preference.
M.nearest = {
  ["us-central"] = { "us-east", "us-west", "eu-west" },
  ["ca-central"] = { "us-east", "us-west", "eu-west" },
  ["eu-central"] = { "eu-west", "us-east", "us-west" },
  ["eu-north"] = { "eu-west", "us-east", "us-west" },
  ["ap-northeast"] = { "us-west", "us-east", "eu-west" },
  ["ap-southeast"] = { "us-west", "eu-west", "us-east" },
  ["sa-east"] = { "us-east", "us-west", "eu-west" },
}

local function healthy_list(healthy, n)
  local out = {}
  for i = 1, n do
    if healthy[i] then out[#out + 1] = i end
  end
  return out
end

local hash

local function random_healthy(healthy, n, token)
  local up = healthy_list(healthy, n)
  if #up == 0 then return nil, "no_healthy_region" end
  if token then return up[hash(token) % #up + 1] end
  return up[math.random(#up)]
end

-- The first healthy region at or after i, wrapping around.
local function next_healthy(i, healthy, n)
  for k = 0, n - 1 do
    local j = (i - 1 + k) % n + 1
    if healthy[j] then return j end
  end
  return nil, "no_healthy_region"
end

-- FNV-1a, 32 bits: the same name always lands on the same region. The prime is
-- 2^24 + 403, so h * prime mod 2^32 is computed without leaving the exact range of a double.
function hash(s)
  local h = bit.tobit(2166136261)
  for i = 1, #s do
    h = bit.bxor(h, s:byte(i))
    h = bit.tobit(bit.lshift(h, 24) + (h % 4294967296) * 403)
  end
  return h % 4294967296
end
M.hash = hash

local function index_of(names, name)
  for i, n in ipairs(names) do
    if n == name then return i end
  end
  return nil
end

function M.route(policy, counter_name, client_region, names, healthy, token)
  local n = #names
  policy = policy or "random"
  if policy == "random" then
    return random_healthy(healthy, n, token)
  end
  if policy == "round-robin" and token then
    return next_healthy(hash(token) % n + 1, healthy, n)
  end
  if policy == "round-robin" then
    local k = counterd and counterd.shared and counterd.shared.incr("routing.round_robin", 1)
    if not k then
      M._rr = (M._rr or 0) + 1
      k = M._rr
    end
    return next_healthy((k - 1) % n + 1, healthy, n)
  end
  if policy == "sticky" then
    return next_healthy(hash(counter_name or "views") % n + 1, healthy, n)
  end
  if policy == "nearest" then
    if client_region then
      local i = index_of(names, client_region) or index_of(names, (client_region:gsub("%-%d+$", "")))
      if i then return next_healthy(i, healthy, n) end
      local prefs = M.nearest[(client_region:gsub("%-%d+$", ""))]
      if prefs then
        for _, name in ipairs(prefs) do
          local j = index_of(names, name)
          if j and healthy[j] then return j end
        end
      end
    end
    return random_healthy(healthy, n, token)
  end
  local i = index_of(names, policy)
  if i then
    return next_healthy(i, healthy, n)
  end
  local known = { "random", "round-robin", "sticky", "nearest" }
  for _, name in ipairs(names) do known[#known + 1] = name end
  return nil, "unknown_policy", known
end

return M
