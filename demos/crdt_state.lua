--[[
crdt_state.lua - the runbook's part 7 as a scenario: the G-Counter state behind a counter.
Each region holds a vector of counts indexed by node id; its total is the sum of the
vector, and merging two vectors takes the maximum of each entry (so a merge never counts
a write twice and never loses one, whatever order the syncs come in).

  ./scripts/scenario demos/crdt_state.lua [--base-port N]

Leaves the lab healed, passed or failed.
]]

heal()
finally(function() heal() end)
local name = unique("views")

local function sum(vector)
  local s = 0
  for _, v in pairs(vector) do s = s + v end
  return s
end

-- Reads every region's vector and checks that its total is the sum of the vector and
-- its local count its own entry.
local function vectors(when)
  local out = {}
  for _, region in ipairs(REGIONS) do
    local c = region_counter(region, name)
    expect(c.total_count, region .. "'s total is the sum of its vector " .. when)
      .to_be(sum(c.nodes))
    expect(c.local_count, region .. "'s local count is its own entry " .. when)
      .to_be(c.nodes[c.node_id] or 0)
    out[region] = c.nodes
  end
  return out
end

-- One write per region, then a sync: every region holds the same vector.
increment(name, 3, { region = "us-east" })
increment(name, 5, { region = "us-west" })
increment(name, 7, { region = "eu-west" })
force_sync()
local v = vectors("after the first sync")
for _, region in ipairs(REGIONS) do
  expect(v[region], region .. "'s vector")
    .to_be({ ["us-east-1"] = 3, ["us-west-1"] = 5, ["eu-west-1"] = 7 })
  log(region .. " state:", v[region])
end

-- Make the vectors differ: us-west counts 10 more alone, us-east 2 more with eu-west.
partition("us-west")
increment(name, 10, { region = "us-west" })
increment(name, 2, { region = "us-east" })
force_sync()
local before = vectors("while us-west is partitioned")
expect(before["us-west"]).to_be({ ["us-east-1"] = 3, ["us-west-1"] = 15, ["eu-west-1"] = 7 })
expect(before["us-east"]).to_be({ ["us-east-1"] = 5, ["us-west-1"] = 5, ["eu-west-1"] = 7 })
expect(before["eu-west"]).to_be(before["us-east"])

-- The merge the regions must reach: the per-node maximum of the vectors. (A sum would
-- count us-west-1's first 5 twice; keeping one side would lose the other's writes.)
local merged = {}
for _, vec in pairs(before) do
  for node, n in pairs(vec) do merged[node] = math.max(merged[node] or 0, n) end
end
log("expected merge (per-node max):", merged)

heal("us-west")
force_sync()
local after = vectors("after heal + force-sync")
for _, region in ipairs(REGIONS) do
  expect(after[region], region .. "'s vector after the merge").to_be(merged)
end
expect(counter(name).global_count, "global count = sum of the merged vector").to_be(sum(merged))
expect(sum(merged), "every increment once: 3 + 5 + 7 + 10 + 2").to_be(27)

-- Merging again changes nothing (idempotent).
force_sync()
local again = vectors("after a second force-sync")
for _, region in ipairs(REGIONS) do
  expect(again[region], region .. "'s vector after a second merge").to_be(merged)
end
