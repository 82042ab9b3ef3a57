-- Busted specs for lua/policies/faults.lua: the decision on every replication message.
-- The policy runs here outside the node, with a stand-in for the counterd table.

local root = os.getenv("COUNTERD_SOURCE_DIR") or "."
local path = root .. "/lua/policies/faults.lua"

-- A fresh copy of the policy and of counterd.shared for each test.
local function load_policy(shared_values)
  local values = shared_values or {}
  _G.counterd = {
    shared = {
      get = function(k) return values[k] end,
      set = function(k, v) values[k] = v end,
    },
  }
  local chunk = assert(loadfile(path))
  return chunk(), values
end

describe("faults.decide", function()
  after_each(function() _G.counterd = nil end)

  it("delivers by default, both ways", function()
    local f = load_policy()
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
    assert.are.equal("deliver", (f.decide("out", "us-east-1", "us-west-1", "sync", false)))
  end)

  it("takes a cut from counterd.shared, whichever order the ids are written in", function()
    local f = load_policy({ ["faults.cut.eu-west-1|us-west-1"] = true })
    assert.are.equal("drop", (f.decide("out", "us-west-1", "eu-west-1", "sync", false)))
    assert.are.equal("drop", (f.decide("in", "eu-west-1", "us-west-1", "sync", false)))
    assert.are.equal("deliver", (f.decide("out", "us-west-1", "us-east-1", "sync", false)))
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
    assert.are.equal("deliver", (f.decide("out", "us-east-1", "us-west-1", "sync", false)))
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

  it("a partition wins over latency", function()
    local f = load_policy()
    f.default_latency_ms = 50
    assert.are.equal("drop", (f.decide("out", "a", "b", "sync", true)))
  end)

  it("works without a counterd table (plain Lua)", function()
    local chunk = assert(loadfile(path))
    _G.counterd = nil
    local f = chunk()
    assert.are.equal("deliver", (f.decide("out", "a", "b", "sync", false)))
  end)
end)
