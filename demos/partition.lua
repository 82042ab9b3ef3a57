--[[
partition.lua - the runbook's part 5 as a scenario: a partitioned region keeps counting
on its own (AP), the others do not see its writes and it does not see theirs, even
across sync rounds; after heal and force-sync every region converges, and the totals
are exact: every acknowledged increment counted once.

  ./scripts/scenario demos/partition.lua [--base-port N]

Leaves the lab healed, passed or failed. Waits for one of the lab's own sync rounds
(SYNC_INTERVAL_MS, 5 s by default).
]]

heal()
finally(function() heal() end)
local name = unique("partition_demo")
expect(status().partitioned_count, "partitioned regions before").to_be(0)

-- Enable the partition on us-east.
local p = partition("us-east")
expect(p.region).to_be("us-east")
expect(p.network_partition).to_be(true)
local st = status()
expect(st.partitioned_count).to_be(1)
expect(st.regions["us-east"].network_partition).to_be(true)
expect(st.regions["us-west"].network_partition).to_be(false)
expect(request("us-east", "GET", "/admin/partition").network_partition).to_be(true)

-- 20 increments through the gateway while partitioned: every one is acknowledged.
local routed = { ["us-east"] = 0, ["us-west"] = 0, ["eu-west"] = 0 }
for _ = 1, 20 do
  local r = increment(name, 1)
  routed[r.region] = routed[r.region] + 1
end
log("routed while partitioned:", routed)

-- us-east still counts locally.
local e = increment(name, 50, { region = "us-east" })
expect(e.local_count, "us-east's own count").to_be(routed["us-east"] + 50)

-- A force-sync reaches the two healthy regions; us-east refuses to take part.
expect(force_sync().regions_synced, "regions that synced").to_be(2)
expect(request("us-east", "POST", "/admin/force-sync", nil, { expect_status = 503 }).error)
  .to_be("partitioned")

-- Divergence: us-east has exactly its own writes, the others exactly theirs.
local east = routed["us-east"] + 50
local rest = 20 - routed["us-east"]
local function check_divergence(when)
  local g = counter(name)
  expect(g.regions["us-east"].total_count, "us-east's total " .. when).to_be(east)
  expect(g.regions["us-east"].nodes, "us-east's vector " .. when).to_be({ ["us-east-1"] = east })
  for _, region in ipairs({ "us-west", "eu-west" }) do
    expect(g.regions[region].total_count, region .. "'s total " .. when).to_be(rest)
    expect(g.regions[region].nodes["us-east-1"], region .. " knows nothing of us-east " .. when)
      .to_be(nil)
  end
  expect(g.convergence.converged, "converged " .. when).to_be(false)
  expect(g.convergence.lag, "lag " .. when).to_be(math.abs(east - rest))
  expect(g.global_count, "global count (max of the regions) " .. when).to_be(math.max(east, rest))
  return g
end
local g = check_divergence("while partitioned")
log(string.format("diverged: us-east %d, the others %d, lag %d", east, rest, g.convergence.lag))

-- The partition holds across the lab's own sync rounds, not only against force-sync.
local synced = request("us-west", "GET", "/counters").last_sync_time
eventually(function()
  expect(request("us-west", "GET", "/counters").last_sync_time, "us-west's next sync round")
    .greater_than(synced)
end, 20)
check_divergence("after a sync round")

-- Heal, force-sync: every region converges on the exact total, 70.
local h = heal("us-east")
expect(h.network_partition).to_be(false)
expect(status().partitioned_count).to_be(0)
expect(force_sync().regions_synced, "regions that synced after heal").to_be(3)
local want = { ["us-east-1"] = east, ["us-west-1"] = routed["us-west"],
               ["eu-west-1"] = routed["eu-west"] }
for k, v in pairs(want) do
  if v == 0 then want[k] = nil end -- a node that took no increment has no entry
end
local after = counter(name)
expect(after.convergence.converged, "converged after heal + force-sync").to_be(true)
expect(after.global_count, "every acknowledged increment, once").to_be(70)
for _, region in ipairs(REGIONS) do
  expect(after.regions[region].total_count, region .. "'s total").to_be(70)
  expect(after.regions[region].nodes, region .. "'s vector").to_be(want)
end
log("healed: 70 everywhere, vector", want)
