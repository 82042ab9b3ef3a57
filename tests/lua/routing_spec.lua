-- Busted specs for lua/policies/routing.lua: which region the gateway sends an increment to.
-- The policy is loaded by the host the server builds (tests/lua/spec_host.c): its sandbox,
-- its counterd table (round-robin's counter is the real counterd.shared).

local spec = counterd_spec

local NAMES = { "us-east", "us-west", "eu-west" }
local ALL_UP = { true, true, true }
local KNOWN = { "random", "round-robin", "sticky", "nearest", "us-east", "us-west", "eu-west" }

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
  return spec.policy("routing"), shared_view()
end

-- Every healthy mask of three regions with at least one region up.
local function some_up_masks()
  local out = {}
  for m = 1, 7 do
    out[#out + 1] = { m % 2 == 1, math.floor(m / 2) % 2 == 1, math.floor(m / 4) % 2 == 1 }
  end
  return out
end

local function mask_str(h)
  local s = {}
  for i = 1, #NAMES do s[i] = NAMES[i] .. "=" .. tostring(h[i]) end
  return table.concat(s, " ")
end

-- FNV-1a (32 bits) of these strings, computed independently (Python, the published
-- reference values for "", "a" and "foobar").
local FNV = {
  [""] = 2166136261,
  ["a"] = 3826002220,
  ["foobar"] = 3214735720,
  ["views"] = 1336735441,
  ["partition_demo"] = 3590849445,
  ["consistency_test"] = 3700967180,
  ["user:42:likes"] = 1900875000,
  ["\195\169"] = 513665217, -- "é" in UTF-8
  [string.rep("x", 200)] = 3018110693,
}

describe("routing.route", function()
  before_each(function() math.randomseed(7) end)

  describe("random", function()
    it("is the default and spreads evenly over the healthy regions", function()
      local r = load_policy()
      local seen = { 0, 0, 0 }
      for _ = 1, 3000 do
        local i = r.route(nil, "views", nil, NAMES, ALL_UP)
        seen[i] = seen[i] + 1
      end
      for i = 1, 3 do
        -- 1000 expected; 4 standard deviations is about +-105.
        assert.is_true(seen[i] > 895 and seen[i] < 1105, NAMES[i] .. " got " .. seen[i])
      end
      for _ = 1, 50 do
        local i = r.route("random", "views", nil, NAMES, ALL_UP)
        assert.is_true(i >= 1 and i <= 3)
      end
    end)

    it("never picks an unhealthy region and uses every healthy one", function()
      local r = load_policy()
      local seen = {}
      for _ = 1, 300 do
        local i = r.route("random", "views", nil, NAMES, { true, false, true })
        seen[i] = true
      end
      assert.are.same({ [1] = true, [3] = true }, seen)
      for _ = 1, 20 do
        assert.are.equal(2, (r.route("random", "views", nil, NAMES, { false, true, false })))
      end
    end)
  end)

  describe("round-robin", function()
    it("cycles over the regions in order", function()
      local r = load_policy()
      local got = {}
      for k = 1, 7 do got[k] = r.route("round-robin", "views", nil, NAMES, ALL_UP) end
      assert.are.same({ 1, 2, 3, 1, 2, 3, 1 }, got)
    end)

    it("uses counterd.shared's counter when there is one (shared by every worker)", function()
      local r, shared = load_policy({ ["routing.round_robin"] = 4 })
      local got = {}
      for k = 1, 4 do got[k] = r.route("round-robin", "views", nil, NAMES, ALL_UP) end
      -- The counter goes 5, 6, 7, 8: regions (k - 1) % 3 + 1.
      assert.are.same({ 2, 3, 1, 2 }, got)
      assert.are.equal(8, shared["routing.round_robin"])
    end)

    it("skips an unhealthy region to the next healthy one", function()
      local r = load_policy()
      local got = {}
      for k = 1, 6 do got[k] = r.route("round-robin", "views", nil, NAMES, { true, false, true }) end
      assert.are.same({ 1, 3, 3, 1, 3, 3 }, got)
      got = {}
      for k = 1, 3 do got[k] = r.route("round-robin", "views", nil, NAMES, { false, false, true }) end
      assert.are.same({ 3, 3, 3 }, got)
    end)
  end)

  describe("sticky", function()
    it("hashes with FNV-1a, 32 bits", function()
      local r = load_policy()
      for s, h in pairs(FNV) do
        assert.are.equal(h, r.hash(s), "FNV-1a of '" .. s:sub(1, 20) .. "'")
      end
    end)

    it("sends a name to region hash % n + 1, every time", function()
      local r = load_policy()
      for s, h in pairs(FNV) do
        local want = h % 3 + 1
        for _ = 1, 5 do
          assert.are.equal(want, (r.route("sticky", s, nil, NAMES, ALL_UP)), "sticky '" .. s:sub(1, 20) .. "'")
        end
      end
      -- Known names land on different regions.
      assert.are.equal(2, (r.route("sticky", "views", nil, NAMES, ALL_UP)))
      assert.are.equal(1, (r.route("sticky", "partition_demo", nil, NAMES, ALL_UP)))
      assert.are.equal(3, (r.route("sticky", "consistency_test", nil, NAMES, ALL_UP)))
    end)

    it("defaults the name to views", function()
      local r = load_policy()
      assert.are.equal(FNV["views"] % 3 + 1, (r.route("sticky", nil, nil, NAMES, ALL_UP)))
    end)

    it("spreads many names over every region", function()
      local r = load_policy()
      local seen = { 0, 0, 0 }
      for k = 1, 3000 do
        local i = r.route("sticky", "counter_" .. k, nil, NAMES, ALL_UP)
        seen[i] = seen[i] + 1
      end
      for i = 1, 3 do
        assert.is_true(seen[i] > 850 and seen[i] < 1150, NAMES[i] .. " got " .. seen[i])
      end
    end)

    it("moves a name to the next healthy region (wrapping) when its own is down", function()
      local r = load_policy()
      -- views -> us-west (2); partition_demo -> us-east (1); consistency_test -> eu-west (3).
      assert.are.equal(3, (r.route("sticky", "views", nil, NAMES, { true, false, true })))
      assert.are.equal(1, (r.route("sticky", "views", nil, NAMES, { true, false, false })))
      assert.are.equal(2, (r.route("sticky", "partition_demo", nil, NAMES, { false, true, true })))
      assert.are.equal(1, (r.route("sticky", "consistency_test", nil, NAMES, { true, true, false })))
      assert.are.equal(2, (r.route("sticky", "consistency_test", nil, NAMES, { false, true, false })))
      -- And back when it is up again.
      assert.are.equal(2, (r.route("sticky", "views", nil, NAMES, ALL_UP)))
    end)
  end)

  describe("a region's name", function()
    it("always goes to that region", function()
      local r = load_policy()
      for i, name in ipairs(NAMES) do
        for _ = 1, 5 do
          assert.are.equal(i, (r.route(name, "views", nil, NAMES, ALL_UP)))
        end
      end
    end)

    it("fails over to the next healthy region when that one is down", function()
      local r = load_policy()
      assert.are.equal(3, (r.route("us-west", "views", nil, NAMES, { true, false, true })))
      assert.are.equal(1, (r.route("eu-west", "views", nil, NAMES, { true, true, false })))
      assert.are.equal(2, (r.route("eu-west", "views", nil, NAMES, { false, true, false })))
    end)
  end)

  describe("nearest", function()
    it("goes to the client's own region", function()
      local r = load_policy()
      for i, name in ipairs(NAMES) do
        assert.are.equal(i, (r.route("nearest", "views", name, NAMES, ALL_UP)))
      end
    end)

    it("reads a region with a -N suffix as that region", function()
      local r = load_policy()
      assert.are.equal(2, (r.route("nearest", "views", "us-west-2", NAMES, ALL_UP)))
      assert.are.equal(1, (r.route("nearest", "views", "us-east-1", NAMES, ALL_UP)))
      assert.are.equal(3, (r.route("nearest", "views", "eu-west-12", NAMES, ALL_UP)))
    end)

    it("uses the M.nearest preferences for a region that is not one of ours", function()
      local r = load_policy()
      assert.are.equal(3, (r.route("nearest", "views", "eu-central", NAMES, ALL_UP)))
      assert.are.equal(3, (r.route("nearest", "views", "eu-central-1", NAMES, ALL_UP)))
      assert.are.equal(2, (r.route("nearest", "views", "ap-northeast", NAMES, ALL_UP)))
      assert.are.equal(1, (r.route("nearest", "views", "sa-east-1", NAMES, ALL_UP)))
      -- The next preference when the first is down.
      assert.are.equal(1, (r.route("nearest", "views", "eu-central", NAMES, { true, true, false })))
      assert.are.equal(2, (r.route("nearest", "views", "eu-central", NAMES, { false, true, false })))
      assert.are.equal(3, (r.route("nearest", "views", "ap-southeast", NAMES, { true, false, true })))
      -- The table is the policy's to edit.
      r.nearest["af-south"] = { "eu-west", "us-east", "us-west" }
      assert.are.equal(3, (r.route("nearest", "views", "af-south-1", NAMES, ALL_UP)))
    end)

    it("fails over from the client's own region to the next healthy one", function()
      local r = load_policy()
      assert.are.equal(3, (r.route("nearest", "views", "us-west", NAMES, { true, false, true })))
      assert.are.equal(1, (r.route("nearest", "views", "eu-west-1", NAMES, { true, true, false })))
    end)

    it("picks a random healthy region for an unknown client region or none", function()
      local r = load_policy()
      for _, client in ipairs({ "mars-base", "mars-base-1", "", false }) do
        local seen = { 0, 0, 0 }
        for _ = 1, 600 do
          local i = r.route("nearest", "views", client or nil, NAMES, ALL_UP)
          seen[i] = seen[i] + 1
        end
        for i = 1, 3 do
          assert.is_true(seen[i] > 120, tostring(client) .. ": " .. NAMES[i] .. " got " .. seen[i])
        end
        for _ = 1, 50 do
          assert.are.equal(3, (r.route("nearest", "views", client or nil, NAMES, { false, false, true })))
        end
      end
    end)
  end)

  describe("failover", function()
    it("every policy answers a healthy region, whatever is down", function()
      local r = load_policy()
      local cases = {
        { "random" }, { nil }, { "round-robin" }, { "sticky", "views" }, { "sticky", "partition_demo" },
        { "sticky", "consistency_test" }, { "us-east" }, { "us-west" }, { "eu-west" },
        { "nearest", nil, "us-east" }, { "nearest", nil, "us-west-2" }, { "nearest", nil, "eu-central" },
        { "nearest", nil, "ap-southeast" }, { "nearest", nil, "mars" }, { "nearest" },
      }
      for _, healthy in ipairs(some_up_masks()) do
        for _, c in ipairs(cases) do
          for _ = 1, 10 do
            local i, err = r.route(c[1], c[2] or "views", c[3], NAMES, healthy)
            assert.is_nil(err)
            assert.is_true(type(i) == "number" and healthy[i] == true,
                           tostring(c[1]) .. " " .. tostring(c[3]) .. " with " .. mask_str(healthy) ..
                           " chose " .. tostring(i))
          end
        end
      end
    end)

    it("no healthy region: nil, \"no_healthy_region\" (a code, not a sentence), for every policy", function()
      local r = load_policy()
      local down = { false, false, false }
      for _, c in ipairs({ { "random" }, { nil }, { "round-robin" }, { "sticky" }, { "us-west" },
                           { "nearest", "us-west" }, { "nearest", "eu-central" }, { "nearest", "mars" },
                           { "nearest" } }) do
        local i, code, extra = r.route(c[1], "views", c[2], NAMES, down)
        assert.is_nil(i, tostring(c[1]))
        assert.are.equal("no_healthy_region", code, tostring(c[1]) .. " " .. tostring(c[2]))
        assert.is_nil(extra)
      end
    end)
  end)

  describe("an unknown policy", function()
    it("returns nil, \"unknown_policy\" and the list of the known policies", function()
      local r = load_policy()
      for _, healthy in ipairs({ ALL_UP, { false, false, false } }) do
        local i, code, known = r.route("teleport", "views", nil, NAMES, healthy)
        assert.is_nil(i)
        assert.are.equal("unknown_policy", code)
        assert.are.same(KNOWN, known)
      end
      for _, p in ipairs({ "Random", "us-west-1", "", "round_robin" }) do
        local i, code, known = r.route(p, "views", nil, NAMES, ALL_UP)
        assert.is_nil(i, p)
        assert.are.equal("unknown_policy", code, p)
        assert.are.same(KNOWN, known, p)
      end
    end)

    it("lists the regions it was given", function()
      local r = load_policy()
      local i, code, known = r.route("x", "views", nil, { "a", "b" }, { true, true })
      assert.is_nil(i)
      assert.are.equal("unknown_policy", code)
      assert.are.same({ "random", "round-robin", "sticky", "nearest", "a", "b" }, known)
    end)
  end)

  describe("a request with the client's own idempotency token", function()
    it("goes where the token's hash says under random and round-robin, so a retry lands on the same region", function()
      local r = load_policy()
      for _, policy in ipairs({ "random", "round-robin" }) do
        local seen = {}
        for k = 1, 200 do
          local token = "tok-" .. k
          local first = r.route(policy, "views", nil, NAMES, ALL_UP, token)
          for _ = 1, 5 do
            assert.are.equal(first, (r.route(policy, "views", nil, NAMES, ALL_UP, token)), policy)
          end
          assert.are.equal(r.hash(token) % 3 + 1, first, policy .. " " .. token)
          seen[first] = true
        end
        assert.is_true(seen[1] and seen[2] and seen[3], policy .. ": tokens spread over every region")
      end
    end)

    it("still avoids a region that is down", function()
      local r = load_policy()
      for k = 1, 100 do
        local i = r.route("random", "views", nil, NAMES, { true, false, true }, "t" .. k)
        assert.is_true(i == 1 or i == 3)
      end
    end)
  end)
end)
