--[[
faults.lua - what happens to every replication message between regions: the region
nodes' /sync and the strong counter's quorum rounds.

The C core asks decide() about each message and does what it answers:

  decide(dir, from, to, kind, partitioned) -> "deliver" | "drop" | "delay", ms

  dir          "out" (the message leaves this process) or "in" (it arrived here)
  from, to     node ids ("us-east-1", "us-east-strong"); a peer's URL or region name
               until its node id is known
  kind         "sync" (region to region), "strong" (strong leader to a replica) or
               "strong-ack" (a replica's answer, as the leader receives it)
  partitioned  true when this node's partition switch (POST /admin/partition) is on

WAN latency model: a one-way delay per link between regions, added where a message
leaves (dir "out"). The default matrix is close to real inter-region figures; a link
inside one region is local (0 ms). Clients, the gateway and their nearest region are
local too: only replication crosses the WAN.

Every setting can be changed at run time through counterd.shared with a "faults." prefix
(e.g. faults.drop_rate, faults.latency_ms.us-east|eu-west, faults.wan = false): those
values survive a reload of this file. POST /admin/coordination-delay on the strong
service sets faults.coordination_delay_ms, which replaces the matrix for strong traffic.
With a real network (`scripts/lab up --net`) the wire role carries every packet between
regions and asks link(a, b) for each pair of regions about five times a second: its delay
and cuts apply to all traffic (etcd's too), and counterd's own processes (started with
--net, which sets faults.net) deliver what decide() would delay, so nothing waits twice.
If this file fails, the node logs file:line and delivers the message as if no policy
existed (a partitioned node still drops: the core enforces the partition switch itself).
]]

local M = {}

-- Links cut in both directions, as "a|b" with two node ids or two regions, in any order.
M.cut = {
  -- ["us-east-1|eu-west-1"] = true,
}

-- Share of messages dropped at random (0 = none, 1 = all).
M.drop_rate = 0

-- The WAN: one-way delay in ms between two regions ("a|b" in any order).
M.wan = true
M.region_latency_ms = {
  ["us-east|us-west"] = 35,
  ["us-east|eu-west"] = 40,
  ["us-west|eu-west"] = 70,
}
-- Between two regions the matrix does not name.
M.default_latency_ms = 0

-- One-way delay per link of two node ids ("a|b"): overrides the matrix for that link.
M.latency_ms = {
  -- ["us-east-1|eu-west-1"] = 40,
}

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

-- The region of a node id: "us-east-1" and "us-east-1~3fa2" -> "us-east",
-- "us-east-strong" -> "us-east"; a region name stays itself.
function M.region_of(id)
  local base = id:gsub("~.*$", "")
  local region = base:match("^(.-)%-%d+$") or base:match("^(.-)%-strong$")
  return region or base
end

-- One-way WAN delay from node a to node b, in ms.
function M.latency(a, b, kind)
  local ms = per_link(M.latency_ms, "latency_ms", a, b)
  if ms ~= nil then return ms end
  local ra, rb = M.region_of(a), M.region_of(b)
  if ra == rb then return 0 end
  if kind == "strong" or kind == "strong-ack" then
    local override = shared("coordination_delay_ms")
    if override ~= nil then return override end
  end
  if not setting("wan", M.wan) then return 0 end
  ms = per_link(M.region_latency_ms, "region_latency_ms", ra, rb)
  if ms == nil then ms = setting("default_latency_ms", M.default_latency_ms) end
  return ms
end

-- The link from region a to region b when the network is real (the wire role asks):
-- its one-way delay in ms and whether it is cut. Cuts between node ids do not apply here
-- (the wire knows regions only); a region's partition switch is the wire's own input.
function M.link(a, b)
  local cut = per_link(M.cut, "cut", a, b) and true or false
  return M.latency(a, b, "sync"), cut
end

function M.decide(dir, from, to, kind, partitioned)
  if partitioned then
    return "drop"
  end
  if per_link(M.cut, "cut", from, to) or
     per_link(M.cut, "cut", M.region_of(from), M.region_of(to)) then
    return "drop"
  end
  local rate = setting("drop_rate", M.drop_rate)
  if rate > 0 and math.random() < rate then
    return "drop"
  end
  -- Latency is added once per message, where it leaves.
  if dir == "out" then
    local ms = M.latency(from, to, kind)
    if ms > 0 then
      return "delay", ms
    end
  end
  return "deliver"
end

return M
