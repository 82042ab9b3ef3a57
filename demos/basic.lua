--[[
basic.lua - the runbook's parts 1 and 3 as a scenario: every service is up, increments
through the gateway land in one region each and are counted exactly once, routing
policies send them where they say, and the global view adds up after a sync.

  ./scripts/scenario demos/basic.lua [--base-port N]
]]

-- Part 1: the three regions answer and none is partitioned (heal any leftover).
heal()
local st = status()
expect(st.healthy_count, "healthy regions").to_be(#REGIONS)
expect(st.partitioned_count, "partitioned regions").to_be(0)
for _, region in ipairs(REGIONS) do
  expect(st.regions[region].status, region .. "'s status").to_be("healthy")
end

-- Part 3: one increment through the gateway. A fresh counter, so totals are exact.
local views = unique("views")
local first = increment(views, 1)
expect(first.counter).to_be(views)
expect(first.routing, "default routing").to_be("random")
expect(first.region).to_be_one_of(REGIONS)
expect(first.local_count, "the routed region's own count").to_be(1)
expect(first.total_count, "the routed region's total").to_be(1)
expect(first.latency_ms).at_least(0)
log("first increment went to", first.region)

-- Ten more; each answer's local count is that region's own running total for the counter.
local per_region = { [first.region] = 1 }
for i = 1, 10 do
  local r = increment(views, 1)
  expect(r.region).to_be_one_of(REGIONS)
  per_region[r.region] = (per_region[r.region] or 0) + 1
  expect(r.local_count, "request " .. i .. " to " .. r.region).to_be(per_region[r.region])
  log(string.format("request %d: routed to %s (local count: %d)", i, r.region, r.local_count))
end

-- Each region holds exactly what was routed to it under its own node id.
for _, region in ipairs(REGIONS) do
  local rc = region_counter(region, views)
  expect(rc.local_count, region .. "'s local count").to_be(per_region[region] or 0)
end

-- After a sync every region's total is the 11 increments, no more, no less.
force_sync()
local g = counter(views)
expect(g.global_count, "global count").to_be(11)
expect(g.convergence.converged, "converged after force-sync").to_be(true)
expect(g.healthy_regions).to_be(#REGIONS)
for _, region in ipairs(REGIONS) do
  expect(g.regions[region].total_count, region .. "'s total").to_be(11)
end

-- Routing policies: a region's name sends every increment there; sticky keeps a counter
-- on one region; an unknown policy is refused and counts nothing.
local routed = unique("routed")
for _ = 1, 3 do
  expect(increment(routed, 2, { routing = "us-west" }).region).to_be("us-west")
end
expect(region_counter("us-west", routed).local_count, "us-west after 3 x 2").to_be(6)
local sticky = increment(routed, 1, { routing = "sticky" }).region
for _ = 1, 4 do
  expect(increment(routed, 1, { routing = "sticky" }).region, "sticky").to_be(sticky)
end
local refused = increment(routed, 1, { routing = "no-such-policy", expect_status = 400 })
expect(refused.error).to_be("bad_field")
force_sync()
expect(counter(routed).global_count, "6 + 5 sticky, nothing for the refused one").to_be(11)

-- An idempotent retry through the gateway is answered again and counted once.
local token = unique("retry")
local once = increment(routed, 5, { token = token })
local again = increment(routed, 5, { token = token })
expect(again.duplicate, "the retry is recognised").to_be(true)
expect(again.region).to_be(once.region)
force_sync()
expect(counter(routed).global_count, "the retried 5 counted once").to_be(16)
