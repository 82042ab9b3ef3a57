--[[
faults.lua - what happens to every replication message between region nodes.

The C core asks decide() about each /sync message, once where it leaves a node
(dir = "out") and once where it arrives (dir = "in"), and does what it answers:

  decide(dir, from, to, kind, partitioned) -> "deliver" | "drop" | "delay", ms

  dir          "out" or "in"
  from, to     node ids ("us-east-1"); a peer's URL until its id is known
  kind         "sync"
  partitioned  true when this node's partition switch (POST /admin/partition) is on

Edit the settings below to cut links, drop a share of messages or add WAN latency. A
setting can also be changed at run time through counterd.shared (the same names with a
"faults." prefix), which survives a reload of this file. If this file fails, the node
logs file:line and delivers the message as if no policy existed (a partitioned node still
drops: the core enforces the partition switch itself).
]]

local M = {}

-- Links cut in both directions, as "a|b" with the two node ids in any order.
M.cut = {
  -- ["us-east-1|eu-west-1"] = true,
}

-- Share of messages dropped at random (0 = none, 1 = all).
M.drop_rate = 0

-- One-way latency added per link in ms, as "a|b" = ms; default_latency_ms for the rest.
M.latency_ms = {
  -- ["us-east-1|eu-west-1"] = 40,
}
M.default_latency_ms = 0

-- A run-time override from counterd.shared, or nil.
local function shared(name)
  local s = counterd and counterd.shared
  if s then return s.get("faults." .. name) end
  return nil
end

-- The setting for link a-b, written "a|b" or "b|a", in counterd.shared or in the table.
local function per_link(table_, name, a, b)
  local ab, ba = a .. "|" .. b, b .. "|" .. a
  local v = shared(name .. "." .. ab)
  if v == nil then v = shared(name .. "." .. ba) end
  if v == nil then v = table_[ab] end
  if v == nil then v = table_[ba] end
  return v
end

local function setting(name, default)
  local v = shared(name)
  if v == nil then return default end
  return v
end

function M.decide(dir, from, to, _kind, partitioned) -- kind: every message is "sync" today
  if partitioned then
    return "drop"
  end
  if per_link(M.cut, "cut", from, to) then
    return "drop"
  end
  local rate = setting("drop_rate", M.drop_rate)
  if rate > 0 and math.random() < rate then
    return "drop"
  end
  -- Latency is added once per message, where it leaves.
  if dir == "out" then
    local ms = per_link(M.latency_ms, "latency_ms", from, to)
    if ms == nil then ms = setting("default_latency_ms", M.default_latency_ms) end
    if ms > 0 then
      return "delay", ms
    end
  end
  return "deliver"
end

return M
