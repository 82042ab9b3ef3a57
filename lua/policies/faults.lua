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

local function link(a, b)
  if a < b then return a .. "|" .. b end
  return b .. "|" .. a
end

-- A run-time override from counterd.shared, or the value in this file.
local function setting(name, default)
  local shared = counterd and counterd.shared
  if shared then
    local v = shared.get("faults." .. name)
    if v ~= nil then return v end
  end
  return default
end

function M.decide(dir, from, to, kind, partitioned)
  if partitioned then
    return "drop"
  end
  local l = link(from, to)
  if M.cut[l] or setting("cut." .. l, false) then
    return "drop"
  end
  local rate = setting("drop_rate", M.drop_rate)
  if rate > 0 and math.random() < rate then
    return "drop"
  end
  -- Latency is added once per message, where it leaves.
  if dir == "out" then
    local ms = setting("latency_ms." .. l, M.latency_ms[l] or setting("default_latency_ms", M.default_latency_ms))
    if ms > 0 then
      return "delay", ms
    end
  end
  return "deliver"
end

return M
