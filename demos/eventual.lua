--[[
eventual.lua - the runbook's part 4 as a scenario: a write to one region is visible there
at once, reaches the other regions only through a sync round (never half), and every
region converges on the same per-node vector without anyone asking for a sync.

  ./scripts/scenario demos/eventual.lua [--base-port N]

Waits for the lab's own sync rounds (every SYNC_INTERVAL_MS, 5 s by default): up to 20 s.
]]

heal()
local name = unique("consistency_test")

-- When us-west last exchanged state with a peer, before the write.
local synced_before = request("us-west", "GET", "/counters").last_sync_time
expect(synced_before, "us-west's last_sync_time").at_least(0)

-- The write: 100 on us-east, seen there at once.
local r = increment(name, 100, { region = "us-east" })
expect(r.region).to_be("us-east")
expect(r.node_id).to_be("us-east-1")
expect(r.local_count).to_be(100)
expect(r.total_count).to_be(100)

-- us-west, immediately: either it has not heard of it yet, or a sync round ran since the
-- write, and then it has all of it. A region never sees a write any other way, and never
-- part of one.
local west = region_counter("us-west", name)
expect(west.total_count, "us-west right after the write").to_be_one_of({ 0, 100 })
if west.total_count == 0 then
  expect(west.nodes["us-east-1"], "us-east-1's entry on us-west").to_be(nil)
  log("us-west has not seen it yet: total 0 (eventual consistency)")
else
  local synced_now = request("us-west", "GET", "/counters").last_sync_time
  expect(synced_now, "us-west has it, so it must have synced since the write")
    .greater_than(synced_before)
  log("a sync round ran between the write and the read: us-west already has 100")
end

-- Without a force-sync, the lab's sync rounds bring every region to 100.
eventually(function()
  for _, region in ipairs(REGIONS) do
    local c = region_counter(region, name)
    expect(c.total_count, region .. "'s total").to_be(100)
    expect(c.nodes, region .. "'s vector").to_be({ ["us-east-1"] = 100 })
  end
end, 20)
log("every region has 100, through the lab's own sync rounds")

-- Writes in the other two regions at the same time converge the same way: each region
-- ends with the same vector, and its total is the sum of the vector.
increment(name, 20, { region = "us-west" })
increment(name, 30, { region = "eu-west" })
local want = { ["us-east-1"] = 100, ["us-west-1"] = 20, ["eu-west-1"] = 30 }
local g = eventually(function()
  for _, region in ipairs(REGIONS) do
    local c = region_counter(region, name)
    expect(c.nodes, region .. "'s vector").to_be(want)
    expect(c.total_count, region .. "'s total").to_be(150)
  end
  local view = counter(name)
  expect(view.convergence.converged, "the coordinator's verdict").to_be(true)
  return view
end, 20)
expect(g.global_count).to_be(150)
expect(g.convergence.lag).to_be(0)
for _, region in ipairs(REGIONS) do
  expect(g.regions[region].local_count, region .. "'s own part").to_be(want[region .. "-1"])
end
log("converged: 150 everywhere, vector", want)
