-- Busted specs for lua/bench/compare.lua: the statistics of POST /api/compare (nearest-rank
-- percentiles, rounding, speedup and conclusion) and run() with stand-in increment
-- functions. The module is loaded as the gateway loads it (counterd.require("bench/compare")):
-- in the host's sandbox (tests/lua/spec_host.c).

local function load_compare()
  return counterd_spec.module("bench", "compare")
end

-- The samples 1..n in a shuffled order (stats() must sort them itself).
local function shuffled(n, seed)
  local t = {}
  for i = 1, n do t[i] = i end
  math.randomseed(seed or 7)
  for i = n, 2, -1 do
    local j = math.random(i)
    t[i], t[j] = t[j], t[i]
  end
  return t
end

-- The nearest rank of q = pct/100 in n samples, in integers only: ceil(pct * n / 100).
local function rank(pct, n)
  local r = math.floor((pct * n + 99) / 100)
  if r < 1 then r = 1 end
  return r
end

-- A fake clock that moves by step ms at each call.
local function clock(step)
  local t = 0
  return function()
    t = t + step
    return t
  end
end

describe("compare.percentile (nearest rank)", function()
  local c = load_compare()

  it("has no value for no samples", function()
    assert.is_nil(c.percentile({}, 0.5))
    assert.is_nil(c.percentile({}, 0.99))
  end)

  it("is the only sample for n = 1, whatever q", function()
    for _, q in ipairs({ 0.001, 0.01, 0.5, 0.99, 1 }) do
      assert.are.equal(42, c.percentile({ 42 }, q))
    end
  end)

  it("for n = 2: p50 is the smaller sample, p99 the larger", function()
    assert.are.equal(3, c.percentile({ 3, 9 }, 0.5))
    assert.are.equal(9, c.percentile({ 3, 9 }, 0.99))
  end)

  it("for n = 30: p50 is the 15th sample and p99 the largest", function()
    local s = {}
    for i = 1, 30 do s[i] = i * 10 end
    assert.are.equal(150, c.percentile(s, 0.5))
    assert.are.equal(300, c.percentile(s, 0.99))
  end)

  it("for n = 100: p50 is the 50th and p99 the 99th, not the maximum", function()
    local s = {}
    for i = 1, 100 do s[i] = i end
    assert.are.equal(50, c.percentile(s, 0.5))
    assert.are.equal(99, c.percentile(s, 0.99))
    assert.are.equal(100, c.percentile(s, 1))
  end)

  it("for n = 101: p50 is the 51st and p99 the 100th", function()
    local s = {}
    for i = 1, 101 do s[i] = i end
    assert.are.equal(51, c.percentile(s, 0.5))
    assert.are.equal(100, c.percentile(s, 0.99))
  end)

  it("uses the smallest sample when q * n < 1", function()
    local s = {}
    for i = 1, 30 do s[i] = i end
    assert.are.equal(1, c.percentile(s, 0.01))
    assert.are.equal(1, c.percentile(s, 0.0001))
  end)

  it("agrees with the integer rank ceil(q * n) for every n up to 10000 (no float drift)", function()
    -- 0.99 * n is not exact in binary: a rank computed as ceil(0.99 * 200) could come out
    -- as 199 instead of 198. Checked against integer arithmetic for every allowed n.
    local s = {}
    for i = 1, 10000 do s[i] = i end
    local sub = {}
    for n = 1, 10000 do
      sub[n] = s[n]
      assert.are.equal(rank(50, n), c.percentile(sub, 0.50), "p50 of n = " .. n)
      assert.are.equal(rank(99, n), c.percentile(sub, 0.99), "p99 of n = " .. n)
    end
  end)

  it("never returns a value that was not measured", function()
    local s = { 1.5, 2.25, 7.125, 100.0625 }
    local seen = {}
    for _, v in ipairs(s) do seen[v] = true end
    for q = 0.01, 1.0001, 0.01 do
      assert.is_true(seen[c.percentile(s, math.min(q, 1))], "q = " .. q)
    end
  end)
end)

describe("compare.stats", function()
  local c = load_compare()

  it("has no statistics for no samples", function()
    assert.is_nil(c.stats({}))
  end)

  it("gives avg/min/max/p50/p99 of one sample as that sample", function()
    assert.are.same({ avg_ms = 12.34, min_ms = 12.34, max_ms = 12.34, p50_ms = 12.34,
                      p99_ms = 12.34 }, c.stats({ 12.34 }))
  end)

  it("sorts the samples itself and leaves the caller's list alone", function()
    local samples = shuffled(30, 3)
    local copy = {}
    for i, v in ipairs(samples) do copy[i] = v end
    local st = c.stats(samples)
    assert.are.same({ avg_ms = 15.5, min_ms = 1, max_ms = 30, p50_ms = 15, p99_ms = 30 }, st)
    assert.are.same(copy, samples)
  end)

  it("for 100 samples: p99 is the 99th, below the maximum", function()
    local st = c.stats(shuffled(100, 5))
    assert.are.same({ avg_ms = 50.5, min_ms = 1, max_ms = 100, p50_ms = 50, p99_ms = 99 }, st)
  end)

  it("for 101 samples: p50 is the median and p99 the 100th", function()
    local st = c.stats(shuffled(101, 9))
    assert.are.same({ avg_ms = 51, min_ms = 1, max_ms = 101, p50_ms = 51, p99_ms = 100 }, st)
  end)

  it("for 2 samples: p50 the smaller, p99 the larger, avg between", function()
    assert.are.same({ avg_ms = 5, min_ms = 2, max_ms = 8, p50_ms = 2, p99_ms = 8 },
                    c.stats({ 8, 2 }))
  end)

  it("rounds every figure to 2 decimals, half up", function()
    local st = c.stats({ 1.23456, 2.34567, 3.45678 })
    assert.are.equal(1.23, st.min_ms)
    assert.are.equal(3.46, st.max_ms)
    assert.are.equal(2.35, st.p50_ms)
    assert.are.equal(3.46, st.p99_ms)
    -- (1.23456 + 2.34567 + 3.45678) / 3 = 2.34567
    assert.are.equal(2.35, st.avg_ms)
    local st2 = c.stats({ 0.004, 0.006 })
    assert.are.equal(0, st2.min_ms)
    assert.are.equal(0.01, st2.max_ms)
    assert.are.equal(0.01, st2.avg_ms)
    -- The rounded values print with at most 2 decimals.
    for _, v in pairs(c.stats({ 1 / 3, 2 / 3, 10 / 7 })) do
      assert.is_truthy(string.format("%.10f", v):match("^%d+%.%d%d0+$"), "value " .. v)
    end
  end)

  it("keeps min <= p50 <= p99 <= max and min <= avg <= max on irregular samples", function()
    math.randomseed(11)
    for n = 1, 300, 7 do
      local s = {}
      for i = 1, n do s[i] = math.random() * 100 + (i % 5 == 0 and 500 or 0) end
      local st = c.stats(s)
      assert.is_true(st.min_ms <= st.p50_ms and st.p50_ms <= st.p99_ms and
                     st.p99_ms <= st.max_ms, "n = " .. n)
      assert.is_true(st.min_ms <= st.avg_ms and st.avg_ms <= st.max_ms, "n = " .. n)
    end
  end)
end)

describe("compare.conclusion", function()
  local c = load_compare()

  it("says how many times faster eventual consistency is, with one decimal", function()
    local speedup, text = c.conclusion(10, 88)
    assert.are.equal(8.8, speedup)
    assert.are.equal("Eventual consistency is ~8.8x faster", text)
  end)

  it("rounds the speedup to 2 decimals and the wording to 1", function()
    local speedup, text = c.conclusion(3, 20)
    assert.are.equal(6.67, speedup)
    assert.are.equal("Eventual consistency is ~6.7x faster", text)
    speedup, text = c.conclusion(1.5, 1.5)
    assert.are.equal(1, speedup)
    assert.are.equal("Eventual consistency is ~1.0x faster", text)
  end)

  it("says so when the strong side was the faster one", function()
    local speedup, text = c.conclusion(20, 5)
    assert.are.equal(0.25, speedup)
    assert.are.equal("Strong consistency is ~4.0x faster", text)
  end)

  it("does not divide by zero when the eventual side took no measurable time", function()
    local speedup, text = c.conclusion(0, 5)
    assert.are.equal(0, speedup)
    assert.are.equal("Eventual consistency answered in no measurable time", text)
  end)
end)

describe("compare.run", function()
  local c = load_compare()

  it("runs each side `iterations` times and answers API.md's fields", function()
    local calls = { eventual = {}, strong = {} }
    local observed = {}
    local out = c.run{
      iterations = 4,
      eventual = function(i)
        calls.eventual[#calls.eventual + 1] = i
        return ({ 1, 2, 3, 4 })[i]
      end,
      strong = function(i)
        calls.strong[#calls.strong + 1] = i
        return ({ 10, 20, 30, 40 })[i], ({ 8, 16, 24, 32 })[i]
      end,
      now_ms = clock(5),
      observe = function(kind, seconds) observed[#observed + 1] = { kind, seconds } end,
    }
    assert.are.same({ 1, 2, 3, 4 }, calls.eventual)
    assert.are.same({ 1, 2, 3, 4 }, calls.strong)
    assert.are.equal(4, out.iterations)
    local e, s = out.eventual_consistency, out.strong_consistency
    assert.are.equal("string", type(e.description))
    assert.are.equal("string", type(s.description))
    assert.are.same({ 2.5, 1, 4, 2, 4 }, { e.avg_ms, e.min_ms, e.max_ms, e.p50_ms, e.p99_ms })
    assert.are.same({ 25, 10, 40, 20, 40 }, { s.avg_ms, s.min_ms, s.max_ms, s.p50_ms, s.p99_ms })
    assert.are.same({ 4, 0 }, { e.samples, e.errors })
    assert.are.same({ 4, 0 }, { s.samples, s.errors })
    assert.are.equal(20, s.avg_coordination_delay_ms)
    assert.are.equal(10, out.speedup)
    assert.are.equal("Eventual consistency is ~10.0x faster", out.conclusion)
    -- The clock was read once before and once after: 5 then 10.
    assert.are.equal(5, out.total_time_ms)
    -- observe: once per sample, eventual first, in seconds.
    assert.are.same({ { "eventual", 0.001 }, { "eventual", 0.002 }, { "eventual", 0.003 },
                      { "eventual", 0.004 }, { "strong", 0.01 }, { "strong", 0.02 },
                      { "strong", 0.03 }, { "strong", 0.04 } }, observed)
  end)

  it("counts failed samples as errors and leaves them out of the statistics", function()
    local observed = 0
    local out = c.run{
      iterations = 5,
      eventual = function(i)
        if i % 2 == 0 then return nil, "us-west: connection refused" end
        return i
      end,
      strong = function(i)
        if i == 5 then return nil, "the strong counter answered 503: no quorum" end
        return 100
      end,
      now_ms = clock(1),
      observe = function() observed = observed + 1 end,
    }
    local e, s = out.eventual_consistency, out.strong_consistency
    assert.are.same({ 3, 2 }, { e.samples, e.errors })
    assert.are.same({ 3, 1, 5 }, { e.avg_ms, e.min_ms, e.max_ms })
    assert.are.same({ 4, 1 }, { s.samples, s.errors })
    assert.are.same({ 100, 100 }, { s.avg_ms, s.p99_ms })
    -- Only the successful samples are observed: 3 + 4.
    assert.are.equal(7, observed)
    -- No coordination figure was given: none is made up.
    assert.is_nil(s.avg_coordination_delay_ms)
    assert.are.equal(33.33, out.speedup)
    assert.are.equal("Eventual consistency is ~33.3x faster", out.conclusion)
  end)

  it("answers nil and the last error when the strong side always fails", function()
    local out, err = c.run{
      iterations = 3,
      eventual = function() return 1 end,
      strong = function(i) return nil, "the strong counter answered 503: attempt " .. i end,
      now_ms = clock(1),
    }
    assert.is_nil(out)
    assert.are.equal("every strong increment failed; the last: the strong counter answered " ..
                     "503: attempt 3", err)
  end)

  it("answers nil and the last error when the eventual side always fails", function()
    local strong_calls = 0
    local out, err = c.run{
      iterations = 2,
      eventual = function(i) return nil, "us-east: timeout " .. i end,
      strong = function()
        strong_calls = strong_calls + 1
        return 50
      end,
      now_ms = clock(1),
    }
    assert.is_nil(out)
    assert.are.equal("every eventual increment failed; the last: us-east: timeout 2", err)
    assert.are.equal(2, strong_calls)
  end)

  it("works without an observe function", function()
    local out = c.run{
      iterations = 1,
      eventual = function() return 2 end,
      strong = function() return 7, 6.5 end,
      now_ms = clock(1),
    }
    assert.are.equal(3.5, out.speedup)
    assert.are.equal(6.5, out.strong_consistency.avg_coordination_delay_ms)
    assert.are.equal(1, out.eventual_consistency.samples)
  end)
end)
