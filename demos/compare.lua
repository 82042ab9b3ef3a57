--[[
compare.lua - the runbook's part 6 as a scenario: strong consistency costs a quorum round
across the WAN on every write, eventual consistency one local write; /api/compare shows
it with sane statistics, the strong counter counts exactly and reads its own writes, and
under a partition it refuses writes (CP) while the regions keep taking them (AP).

  ./scripts/scenario demos/compare.lua [--base-port N]

Needs the strong service (base port + 4, started by ./scripts/lab). Leaves the lab healed.
]]

heal()
finally(function() heal() end)

-- The built-in comparison: 30 increments each way.
local name = unique("benchmark")
local r = compare(name, 30)
expect(r.iterations).to_be(30)
local e, s = r.eventual_consistency, r.strong_consistency
for kind, st in pairs({ eventual = e, strong = s }) do
  expect(st.samples, kind .. " samples").to_be(30)
  expect(st.errors, kind .. " errors").to_be(0)
  expect(st.min_ms, kind .. " min").greater_than(0)
  expect(st.p50_ms, kind .. " p50").at_least(st.min_ms)
  expect(st.p99_ms, kind .. " p99").at_least(st.p50_ms)
  expect(st.max_ms, kind .. " max").at_least(st.p99_ms)
  expect(st.avg_ms, kind .. " avg").at_least(st.min_ms)
  expect(st.avg_ms, kind .. " avg").at_most(st.max_ms)
  -- Nearest rank: with fewer than 100 samples p99 is the largest sample.
  expect(st.p99_ms, kind .. " p99 of 30 samples").to_be(st.max_ms)
  expect(st.description, kind .. " description").to_be_truthy()
end
log(string.format("eventual avg %.2f ms (p99 %.2f), strong avg %.2f ms (p99 %.2f): %s",
                  e.avg_ms, e.p99_ms, s.avg_ms, s.p99_ms, r.conclusion))

-- Strong is several times slower, because of its coordination round, not a sleep: the
-- round it measured makes up the strong latency.
local ratio = s.avg_ms / e.avg_ms
expect(r.speedup, "speedup = strong avg / eventual avg").to_be_near(ratio, 0.01 + ratio / 1000)
expect(r.speedup, "strong is several times slower").at_least(2)
expect(r.conclusion).to_be(string.format("Eventual consistency is ~%.1fx faster", ratio))
expect(s.avg_coordination_delay_ms, "coordination round").greater_than(0)
expect(s.avg_coordination_delay_ms, "coordination round").at_most(s.avg_ms)

-- Both sides counted every increment: the strong counter at once, the regions after a sync.
expect(strong_counter(name).value, "strong value after the comparison").to_be(30)
force_sync()
expect(counter(name).global_count, "eventual count after a sync").to_be(30)

-- The strong counter reads its own writes, with no sync: each answer is the new value.
local strong_test = unique("strong_test")
for i = 1, 5 do
  local inc = strong_increment(strong_test, 1)
  expect(inc.consistency).to_be("strong")
  expect(inc.value, "value after strong increment " .. i).to_be(i)
  expect(inc.coordination_delay_ms).greater_than(0)
  expect(inc.total_latency_ms).at_least(inc.coordination_delay_ms)
  expect(strong_counter(strong_test).value, "read after strong increment " .. i).to_be(i)
end

-- Side by side, timed from here: 5 eventual then 5 strong increments.
local latency_test = unique("latency_test")
local function timed(fn)
  local t0 = now()
  fn()
  return (now() - t0) * 1000
end
local eventual_ms, strong_ms = 0, 0
for _ = 1, 5 do
  eventual_ms = eventual_ms + timed(function() increment(latency_test, 1) end)
end
for _ = 1, 5 do
  strong_ms = strong_ms + timed(function() strong_increment(latency_test, 1) end)
end
log(string.format("timed here: eventual %.2f ms, strong %.2f ms per increment",
                  eventual_ms / 5, strong_ms / 5))
expect(strong_ms, "strong total over 5").greater_than(eventual_ms)

-- Partition two of the three regions: no majority, so strong increments are refused and
-- change nothing, while increments on the regions still succeed.
partition("us-west")
partition("eu-west")
local refused = strong_increment(strong_test, 1, { expect_status = 503 })
expect(refused.error).to_be("no_quorum")
expect(strong_counter(strong_test).value, "nothing applied without a quorum").to_be(5)
expect(increment(strong_test, 1, { routing = "us-west" }).region, "AP side still writes")
  .to_be("us-west")
heal()
expect(strong_increment(strong_test, 1).value, "after heal, exact").to_be(6)
