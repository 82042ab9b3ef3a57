-- Busted specs for lua/policies/faults.lua: the decision on every replication message.
-- The policy is loaded by the host the server builds (tests/lua/spec_host.c): its sandbox
-- and its counterd table, with the real counterd.shared.

local root = os.getenv("COUNTERD_SOURCE_DIR") or "."
local path = root .. "/lua/policies/faults.lua"
local spec = counterd_spec

-- The host's counterd.shared as a table: reads and writes go to the real one.
local function shared_view()
  return setmetatable({}, {
    __index = function(_, k) return counterd.shared.get(k) end,
    __newindex = function(_, k, v) counterd.shared.set(k, v) end,
  })
end

-- A fresh copy of the policy, with counterd.shared emptied and then set to shared_values.
local function load_policy(shared_values)
  spec.reset()
  for k, v in pairs(shared_values or {}) do counterd.shared.set(k, v) end
  return spec.policy("faults"), shared_view()
end

describe("faults.decide", function()

  it("delivers by default, both ways (with the WAN model off)", function()
    local f = load_policy({ ["faults.wan"] = false })
    assert.are.equal("deliver", (f.decide("out", "us-east-1", "us-west-1", "sync", false)))
    assert.are.equal("deliver", (f.decide("in", "us-west-1", "us-east-1", "sync", false)))
  end)

  it("drops everything while this node is partitioned, in and out", function()
    local f = load_policy()
    assert.are.equal("drop", (f.decide("out", "us-east-1", "us-west-1", "sync", true)))
    assert.are.equal("drop", (f.decide("in", "eu-west-1", "us-east-1", "sync", true)))
  end)

  it("drops a cut link in both directions and only that link", function()
    local f = load_policy()
    f.cut["us-east-1|eu-west-1"] = true
    assert.are.equal("drop", (f.decide("out", "us-east-1", "eu-west-1", "sync", false)))
    assert.are.equal("drop", (f.decide("out", "eu-west-1", "us-east-1", "sync", false)))
    assert.are.equal("drop", (f.decide("in", "eu-west-1", "us-east-1", "sync", false)))
    assert.are.equal("delay", (f.decide("out", "us-east-1", "us-west-1", "sync", false)))
  end)

  it("takes a cut from counterd.shared, whichever order the ids are written in", function()
    local f = load_policy({ ["faults.cut.eu-west-1|us-west-1"] = true })
    assert.are.equal("drop", (f.decide("out", "us-west-1", "eu-west-1", "sync", false)))
    assert.are.equal("drop", (f.decide("in", "eu-west-1", "us-west-1", "sync", false)))
    assert.are.equal("delay", (f.decide("out", "us-west-1", "us-east-1", "sync", false)))
  end)

  it("drops a share of messages given by drop_rate", function()
    local f = load_policy()
    f.drop_rate = 1
    assert.are.equal("drop", (f.decide("out", "a", "b", "sync", false)))
    f.drop_rate = 0
    assert.are.equal("deliver", (f.decide("out", "a", "b", "sync", false)))
    f.drop_rate = 0.25
    math.randomseed(42)
    local dropped = 0
    for _ = 1, 4000 do
      if f.decide("out", "a", "b", "sync", false) == "drop" then dropped = dropped + 1 end
    end
    -- 1000 expected; 4 standard deviations is about +-110.
    assert.is_true(dropped > 880 and dropped < 1120, "dropped " .. dropped .. " of 4000")
  end)

  it("lets counterd.shared override drop_rate at run time", function()
    local f, shared = load_policy()
    shared["faults.drop_rate"] = 1
    assert.are.equal("drop", (f.decide("out", "a", "b", "sync", false)))
    shared["faults.drop_rate"] = nil
    assert.are.equal("deliver", (f.decide("out", "a", "b", "sync", false)))
  end)

  it("delays outgoing messages by the link's latency, once (not again on arrival)", function()
    local f = load_policy()
    f.latency_ms["us-east-1|eu-west-1"] = 40
    local action, ms = f.decide("out", "eu-west-1", "us-east-1", "sync", false)
    assert.are.equal("delay", action)
    assert.are.equal(40, ms)
    assert.are.equal("deliver", (f.decide("in", "eu-west-1", "us-east-1", "sync", false)))
    -- Another link keeps the matrix's figure.
    assert.are.same({ "delay", 35 }, { f.decide("out", "us-east-1", "us-west-1", "sync", false) })
  end)

  it("applies default_latency_ms to every other link, and a shared per-link override", function()
    local f, shared = load_policy()
    f.default_latency_ms = 5
    local action, ms = f.decide("out", "a", "b", "sync", false)
    assert.are.same({ "delay", 5 }, { action, ms })
    shared["faults.latency_ms.a|b"] = 70
    action, ms = f.decide("out", "b", "a", "sync", false)
    assert.are.same({ "delay", 70 }, { action, ms })
  end)

  it("applies the default WAN matrix between regions, in both directions", function()
    local f = load_policy()
    local function one_way(a, b, kind)
      local action, ms = f.decide("out", a, b, kind or "sync", false)
      return action == "delay" and ms or 0
    end
    assert.are.equal(35, one_way("us-east-1", "us-west-1"))
    assert.are.equal(35, one_way("us-west-1", "us-east-1"))
    assert.are.equal(40, one_way("us-east-1", "eu-west-1"))
    assert.are.equal(70, one_way("eu-west-1", "us-west-1"))
    -- Node incarnations and the strong leader map to their regions.
    assert.are.equal(70, one_way("us-west-1~3fa2", "eu-west-1"))
    assert.are.equal(40, one_way("us-east-strong", "eu-west-1", "strong"))
    assert.are.equal(40, one_way("eu-west-1", "us-east-strong", "strong-ack"))
    -- Inside a region the link is local.
    assert.are.equal(0, one_way("us-east-strong", "us-east-1", "strong"))
    assert.are.equal(0, one_way("us-east-1", "us-east-2"))
    -- Regions the matrix does not know get default_latency_ms (0).
    assert.are.equal(0, one_way("ap-south-1", "us-east-1"))
  end)

  it("never delays a message on arrival", function()
    local f = load_policy()
    assert.are.equal("deliver", (f.decide("in", "eu-west-1", "us-west-1", "sync", false)))
    assert.are.equal("deliver", (f.decide("in", "us-east-strong", "eu-west-1", "strong", false)))
  end)

  it("lets coordination_delay_ms replace the matrix for strong traffic only", function()
    local f, shared = load_policy({ ["faults.coordination_delay_ms"] = 5 })
    assert.are.same({ "delay", 5 }, { f.decide("out", "us-east-strong", "eu-west-1", "strong", false) })
    assert.are.same({ "delay", 5 }, { f.decide("out", "us-west-1", "us-east-strong", "strong-ack", false) })
    assert.are.same({ "delay", 70 }, { f.decide("out", "us-west-1", "eu-west-1", "sync", false) })
    -- Zero means no delay at all; a link inside one region stays local.
    shared["faults.coordination_delay_ms"] = 0
    assert.are.equal("deliver", (f.decide("out", "us-east-strong", "eu-west-1", "strong", false)))
    shared["faults.coordination_delay_ms"] = 80
    assert.are.equal("deliver", (f.decide("out", "us-east-strong", "us-east-1", "strong", false)))
  end)

  it("turns the WAN off with faults.wan = false, and a region-level cut drops every node", function()
    local f, shared = load_policy({ ["faults.wan"] = false })
    assert.are.equal("deliver", (f.decide("out", "us-east-1", "eu-west-1", "sync", false)))
    shared["faults.wan"] = nil
    shared["faults.cut.us-east|eu-west"] = true
    assert.are.equal("drop", (f.decide("out", "eu-west-1~ab", "us-east-1", "sync", false)))
    assert.are.equal("drop", (f.decide("out", "us-east-strong", "eu-west-1", "strong", false)))
    assert.are.equal("delay", (f.decide("out", "us-east-strong", "us-west-1", "strong", false)))
  end)

  it("a partition wins over latency", function()
    local f = load_policy()
    f.default_latency_ms = 50
    assert.are.equal("drop", (f.decide("out", "a", "b", "sync", true)))
  end)

  it("works without a counterd table (plain Lua)", function()
    local chunk = assert(loadfile(path))
    setfenv(chunk, setmetatable({ counterd = false }, { __index = _G }))
    local f = chunk()
    assert.are.equal("deliver", (f.decide("out", "a", "b", "sync", false)))
  end)
end)

describe("faults.link (the wire's question, with a real network)", function()

  it("answers the matrix's one-way delay of two regions, either way round", function()
    local f = load_policy()
    assert.are.same({ 35, false }, { f.link("us-east", "us-west") })
    assert.are.same({ 70, false }, { f.link("eu-west", "us-west") })
    assert.are.same({ 0, false }, { f.link("us-east", "us-east") })
  end)

  it("follows counterd.shared and the cuts between regions", function()
    local f = load_policy({ ["faults.region_latency_ms.us-west|us-east"] = 5,
                            ["faults.cut.eu-west|us-east"] = true })
    assert.are.same({ 5, false }, { f.link("us-east", "us-west") })
    assert.are.same({ 40, true }, { f.link("us-east", "eu-west") })
  end)

  it("is 0 ms with the WAN model off", function()
    local f = load_policy({ ["faults.wan"] = false })
    assert.are.same({ 0, false }, { f.link("us-east", "eu-west") })
  end)
end)
