-- Busted specs for lua/scenario/lib.lua, the scenario library, run on a fake lab: a
-- transport that records every request and answers from a table, and a clock that only
-- moves when the library sleeps. What the lab answers over real HTTP is the integration
-- test's business (tests/integration/90_scenarios.py).

-- lib.lua is loaded as the scenario role loads it: in the host's sandbox (spec_host.c).
local lib = counterd_spec.module("scenario", "lib")
local ffi = require("ffi")

local URLS = {
  gateway = "http://gw", coordinator = "http://co", strong = "http://st",
  regions = { { name = "us-east", url = "http://e" }, { name = "us-west", url = "http://w" },
              { name = "eu-west", url = "http://u" } },
}

-- A fake lab. answer(req) returns {status, body} (body: a table stands for JSON, a string
-- for text), or nil, err; by default every request gets 200 {}. JSON "encoding" keeps the
-- table, so a spec reads back exactly what would have been sent.
local function fake(answer)
  local f = { calls = {}, lines = {}, clock = 100, sleeps = {} }
  f.t = {
    request = function(req)
      f.calls[#f.calls + 1] = req
      if answer then return answer(req, f) end
      return { status = 200, body = {} }
    end,
    json = {
      encode = function(v) return v end,
      decode = function(v) if type(v) == "table" then return v end return nil end,
    },
    sleep = function(s)
      f.sleeps[#f.sleeps + 1] = s
      f.clock = f.clock + s
    end,
    now = function() return f.clock end,
    write = function(line) f.lines[#f.lines + 1] = line end,
    getinfo = debug.getinfo,
    urls = URLS,
    headers = { "Authorization: Bearer tok" },
    token = function() return "0badcafe" end,
  }
  f.api = lib.new(f.t)
  return f
end

-- This file's name as failures give it, and the line of the caller plus `ahead`.
local SELF = debug.getinfo(1, "S").source:sub(2)
local function here(ahead)
  return SELF .. ":" .. (debug.getinfo(2, "l").currentline + (ahead or 0))
end

-- What pcall(...) caught (it must have raised). The pcall is written where the spec calls
-- the library, so that line is the one a failure must name.
local function raised(ok, err)
  assert.is_false(ok, "expected an error")
  return err
end

-- The message of a failed expectation, from pcall(...) (a Failure, not a plain error).
local function failure(ok, err)
  err = raised(ok, err)
  assert.is_true(lib.is_failure(err), "expected a failed expectation, got: " .. tostring(err))
  return err.message
end

describe("expect", function()
  local f, expect
  before_each(function()
    f = fake()
    expect = f.api.expect
  end)

  it("to_be holds on equal values and returns the value", function()
    assert.are.equal(5, expect(5).to_be(5))
    assert.are.equal("a", expect("a").to_be("a"))
    expect(nil).to_be(nil)
    expect(true).to_be(true)
  end)

  it("to_be compares tables deeply, in both directions", function()
    expect({ a = 1, b = { 2, 3 } }).to_be({ b = { 2, 3 }, a = 1 })
    failure(pcall(expect({ a = 1 }).to_be, { a = 1, b = 2 }))
    failure(pcall(expect({ a = 1, b = 2 }).to_be, { a = 1 }))
    failure(pcall(expect({ 1, 2 }).to_be, { 2, 1 }))
  end)

  it("names this file and line, what was expected and what was got", function()
    local where = here(1)
    local msg = failure(pcall(expect(10).to_be, 11))
    assert.are.equal(where .. ": expected 11, got 10", msg)
  end)

  it("puts the label before the message and quotes strings", function()
    local where = here(1)
    local msg = failure(pcall(expect("us-east", "region of request 3").to_be, "us-west"))
    assert.are.equal(where .. ': region of request 3: expected "us-west", got "us-east"', msg)
  end)

  it("shows tables with sorted keys", function()
    local msg = failure(pcall(expect({ b = 2, a = { 1, 2 } }).to_be, { a = 1 }))
    assert.truthy(msg:find('expected {a=1}, got {a=[1, 2], b=2}', 1, true), msg)
  end)

  it("compares LuaJIT 64-bit integers (big counts) with numbers", function()
    expect(ffi.new("int64_t", 5)).to_be(5)
    expect(ffi.new("int64_t", 5)).at_least(4)
    local msg = failure(pcall(expect(ffi.new("int64_t", 9007199254740993LL)).to_be, 1))
    assert.truthy(msg:find("got 9007199254740993$"), msg)
  end)

  it("not_to_be, to_be_truthy, to_be_falsy", function()
    expect(1).not_to_be(2)
    assert.truthy(failure(pcall(expect(2).not_to_be, 2)):find("expected anything but 2, got it", 1, true))
    expect(0).to_be_truthy() -- 0 is true in Lua
    expect("").to_be_truthy()
    assert.truthy(failure(pcall(expect(nil).to_be_truthy)):find("expected a true value, got nil$"))
    assert.truthy(failure(pcall(expect(false).to_be_truthy)):find("got false$"))
    expect(nil).to_be_falsy()
    expect(false).to_be_falsy()
    assert.truthy(failure(pcall(expect(0).to_be_falsy)):find("expected false or nil, got 0$"))
  end)

  it("numeric comparisons hold at their bounds as their names say", function()
    expect(5).at_least(5)
    expect(5).at_most(5)
    expect(5).greater_than(4)
    expect(5).less_than(6)
    assert.truthy(failure(pcall(expect(4).at_least, 5)):find("expected at least 5, got 4$"))
    assert.truthy(failure(pcall(expect(6).at_most, 5)):find("expected at most 5, got 6$"))
    assert.truthy(failure(pcall(expect(5).greater_than, 5)):find("expected greater than 5, got 5$"))
    assert.truthy(failure(pcall(expect(5).less_than, 5)):find("expected less than 5, got 5$"))
  end)

  it("a numeric comparison of something that is not a number fails, not errors", function()
    local msg = failure(pcall(expect("7").at_least, 5))
    assert.truthy(msg:find('expected a number at least 5, got "7"$'), msg)
    assert.truthy(failure(pcall(expect(nil).less_than, 1)):find("got nil$"))
  end)

  it("to_be_near, to_contain, to_be_one_of", function()
    expect(10.004).to_be_near(10, 0.01)
    assert.truthy(failure(pcall(expect(10.2).to_be_near, 10, 0.1)):find("expected 10 +/- 0.1, got 10.2", 1, true))
    expect("Eventual consistency is ~8.8x faster").to_contain("~8.8x")
    expect({ "a", "b" }).to_contain("b")
    failure(pcall(expect({ "a", "b" }).to_contain, "c"))
    failure(pcall(expect(nil).to_contain, "c"))
    expect("us-west").to_be_one_of({ "us-east", "us-west" })
    local msg = failure(pcall(expect("x").to_be_one_of, { "us-east", "us-west" }))
    assert.truthy(msg:find('expected one of ["us-east", "us-west"], got "x"', 1, true), msg)
  end)

  it("matchers may be called with a colon too", function()
    expect(3):to_be(3)
    expect(3):at_least(2)
    failure(pcall(function() expect(3):to_be(4) end))
  end)

  it("a misused matcher is an error in the scenario, not a failed expectation", function()
    local err = raised(pcall(expect(3).at_least, "five"))
    assert.is_false(lib.is_failure(err))
    assert.truthy(tostring(err):find("the bound must be a number"), err)
  end)

  it("an expect() left without a matcher fails at its own line, at the next call", function()
    local where = here(1)
    expect(1 == 2)
    local msg = failure(pcall(expect, 3))
    assert.are.equal(where .. ": expect(...) was never completed with a matcher such as .to_be(x)",
                     msg)
  end)
end)

describe("requests", function()
  it("increment goes through the gateway by default", function()
    local f = fake(function() return { status = 200, body = { region = "us-east" } } end)
    local body, status = f.api.increment("views", 3, { routing = "sticky" })
    assert.are.same({ region = "us-east" }, body)
    assert.are.equal(200, status)
    local req = f.calls[1]
    assert.are.equal("POST", req.method)
    assert.are.equal("http://gw/api/increment", req.url)
    assert.are.same({ counter_name = "views", amount = 3, routing = "sticky" }, req.body)
    assert.are.same({ "Authorization: Bearer tok", "Content-Type: application/json" }, req.headers)
    assert.are.equal(10000, req.timeout_ms)
  end)

  it("increment with opts.region goes to that region's /increment; amount defaults to 1", function()
    local f = fake()
    f.api.increment("views", nil, { region = "us-west", token = "t-1" })
    assert.are.equal("http://w/increment", f.calls[1].url)
    assert.are.same({ counter_name = "views", amount = 1, idempotency_token = "t-1" }, f.calls[1].body)
  end)

  it("increment passes the client region as X-Client-Region", function()
    local f = fake()
    f.api.increment("views", 1, { routing = "nearest", client_region = "eu-north" })
    assert.are.same({ "Authorization: Bearer tok", "X-Client-Region: eu-north",
                      "Content-Type: application/json" }, f.calls[1].headers)
  end)

  it("reads, partition, heal, force-sync, compare, strong: method, URL and body", function()
    local f = fake()
    local a = f.api
    a.counter("v")
    a.region_counter("eu-west", "v")
    a.counters()
    a.status()
    a.partition("us-east")
    a.heal("us-east")
    a.heal()
    a.force_sync()
    a.compare("bench", 12)
    a.strong_increment("s", 2)
    a.strong_counter("s")
    a.request("coordinator", "GET", "/global/counters")
    local got = {}
    for i, c in ipairs(f.calls) do got[i] = c.method .. " " .. c.url end
    assert.are.same({
      "GET http://gw/api/counter/v",
      "GET http://u/counter/v",
      "GET http://gw/api/counters",
      "GET http://gw/api/status",
      "POST http://gw/admin/partition/us-east?enabled=true",
      "POST http://gw/admin/partition/us-east?enabled=false",
      "POST http://gw/admin/partition/all?enabled=false",
      "POST http://gw/admin/force-sync",
      "POST http://gw/api/compare",
      "POST http://st/increment",
      "GET http://st/counter/s",
      "GET http://co/global/counters",
    }, got)
    assert.is_nil(f.calls[1].body)
    assert.are.same({ counter_name = "bench", iterations = 12 }, f.calls[9].body)
    assert.are.same({ counter_name = "s", amount = 2 }, f.calls[10].body)
    -- A force-sync or a comparison may take long: their timeouts say so.
    assert.are.equal(40000, f.calls[8].timeout_ms)
    assert.are.equal(120000, f.calls[9].timeout_ms)
  end)

  it("an answer outside 2xx fails at the caller's line with the status and body", function()
    local f = fake(function()
      return { status = 503, body = { error = "no_quorum", detail = "no quorum" } }
    end)
    local where = here(1)
    local msg = failure(pcall(f.api.strong_increment, "s", 1))
    assert.are.equal(where .. ': POST http://st/increment answered HTTP 503 ' ..
                     '{detail="no quorum", error="no_quorum"}', msg)
  end)

  it("expect_status accepts that status and only that one", function()
    local status = 503
    local f = fake(function() return { status = status, body = { error = "no_quorum" } } end)
    local body, st = f.api.strong_increment("s", 1, { expect_status = 503 })
    assert.are.same({ error = "no_quorum" }, body)
    assert.are.equal(503, st)
    status = 200
    local msg = failure(pcall(f.api.strong_increment, "s", 1, { expect_status = 503 }))
    assert.truthy(msg:find("POST http://st/increment: expected HTTP 503, got 200", 1, true), msg)
  end)

  it("no answer at all fails with the transport's reason", function()
    local f = fake(function() return nil, "Couldn't connect to server" end)
    local where = here(1)
    local msg = failure(pcall(f.api.counter, "v"))
    assert.are.equal(where .. ": GET http://gw/api/counter/v got no answer: Couldn't connect to server",
                     msg)
  end)

  it("an answer that is not JSON comes back as text", function()
    local f = fake(function() return { status = 200, body = "counter_local_count 1\n" } end)
    assert.are.equal("counter_local_count 1\n", (f.api.request("us-east", "GET", "/metrics")))
  end)

  it("misuse names the scenario's line and is not a failed expectation", function()
    local f = fake()
    local where = here(1)
    local err = raised(pcall(f.api.increment, nil, 1))
    assert.is_false(lib.is_failure(err))
    assert.are.equal(where .. ": increment: the counter name must be a non-empty string, not nil", err)
    assert.truthy(raised(pcall(f.api.region_counter, "mars", "v")):find("unknown region \"mars\"", 1, true))
    assert.truthy(raised(pcall(f.api.partition, "mars")):find("unknown region", 1, true))
    assert.truthy(raised(pcall(f.api.request, "nowhere", "GET", "/")):find("unknown target", 1, true))
    assert.truthy(raised(pcall(f.api.increment, "v", 1, { region = "us-east", routing = "random" }))
                    :find("not both", 1, true))
    assert.are.equal(0, #f.calls)
  end)

  it("exposes the region names in the topology's order", function()
    assert.are.same({ "us-east", "us-west", "eu-west" }, fake().api.REGIONS)
  end)
end)

describe("eventually", function()
  it("returns fn's values as soon as it holds, sleeping between tries", function()
    local f = fake()
    local n = 0
    local a, b = f.api.eventually(function()
      n = n + 1
      f.api.expect(n).at_least(3)
      return "done", n
    end, 10, 0.5)
    assert.are.equal("done", a)
    assert.are.equal(3, b)
    assert.are.same({ 0.5, 0.5 }, f.sleeps)
  end)

  it("retries while fn returns false (nil is fine)", function()
    local f = fake()
    local n = 0
    f.api.eventually(function() n = n + 1; return n >= 2 end, 5)
    assert.are.equal(2, n)
    f.api.eventually(function() end, 5) -- no expectation, no false: holds at once
  end)

  it("fails at its own line after the timeout, with the tries and the last failure", function()
    local f = fake()
    local n = 0
    local inner = here(3)
    local function fn()
      n = n + 1
      f.api.expect(n, "tries so far").to_be(0)
    end
    local where = here(1)
    local msg = failure(pcall(f.api.eventually, fn, 2))
    -- Tries at 0, 0.25, ..., 2.0 s of the fake clock: nine, the last one at the deadline.
    assert.are.equal(9, n)
    assert.are.equal(102, f.clock)
    assert.are.equal(where .. ": eventually: did not hold within 2 s (9 tries); last: " ..
                     inner .. ": tries so far: expected 0, got 9", msg)
  end)

  it("reports the value of a function that kept returning false", function()
    local f = fake()
    local msg = failure(pcall(f.api.eventually, function() return false, { lag = 4 } end, 1))
    assert.truthy(msg:find("last: the function returned false, {lag=4}$"), msg)
  end)

  it("does not retry an error in the scenario's own code", function()
    local f = fake()
    local n = 0
    local err = raised(pcall(f.api.eventually, function()
      n = n + 1
      error("boom")
    end, 10))
    assert.are.equal(1, n)
    assert.is_false(lib.is_failure(err))
    assert.truthy(tostring(err):find("boom"))
  end)

  it("retries a request that got no answer (a service coming back)", function()
    local down = 2
    local f = fake(function()
      if down > 0 then
        down = down - 1
        return nil, "refused"
      end
      return { status = 200, body = { status = "ok" } }
    end)
    local r = f.api.eventually(function() return f.api.request("gateway", "GET", "/health") end)
    assert.are.same({ status = "ok" }, r)
    assert.are.equal(3, #f.calls)
  end)

  it("an expect() without a matcher inside fn fails at once", function()
    local f = fake()
    local n = 0
    local msg = failure(pcall(f.api.eventually, function()
      n = n + 1
      f.api.expect(n)
    end, 10))
    assert.are.equal(1, n)
    assert.truthy(msg:find("was never completed"), msg)
  end)
end)

describe("log, unique, now, sleep", function()
  it("log writes the elapsed time and its values, tables shown", function()
    local f = fake()
    f.clock = f.clock + 1.5
    f.api.log("routed to", "us-east", { local_count = 3 }, 7, nil)
    assert.are.same({ "[  1.50s] routed to us-east {local_count=3} 7 nil" }, f.lines)
  end)

  it("unique adds a token to the prefix; now and sleep use the transport's clock", function()
    local f = fake()
    assert.are.equal("views-0badcafe", f.api.unique("views"))
    f.api.sleep(2)
    assert.are.equal(2, f.api.now())
    assert.truthy(tostring(raised(pcall(f.api.sleep, -1))):find("seconds must be a number >= 0"))
  end)
end)

describe("run", function()
  -- Compiles code as a scenario file named scen.lua and runs it on a fake lab.
  local function run(code, answer)
    local f = fake(answer)
    local chunk = assert(load(code, "@scen.lua"))
    local env = { pairs = pairs, ipairs = ipairs, string = string }
    setfenv(chunk, env)
    return lib.run(f.t, chunk, env), f, env
  end

  it("passes and counts the expectations that held", function()
    local r, _, env = run("expect(1).to_be(1)\nexpect(2).at_least(1)\n")
    assert.is_true(r.ok)
    assert.are.equal(2, r.held)
    assert.are.equal("function", type(env.increment))
  end)

  it("fails with the scenario file's line", function()
    local r = run("expect(1).to_be(1)\n\nexpect(counter('v').global_count, 'global').to_be(11)\n",
                  function() return { status = 200, body = { global_count = 10 } } end)
    assert.is_false(r.ok)
    assert.is_true(r.failure)
    assert.are.equal("scen.lua:3: global: expected 11, got 10", r.message)
  end)

  it("tells an error in the scenario from a failed expectation", function()
    local r = run("local x = nil\nx.y = 1\n")
    assert.is_false(r.ok)
    assert.is_false(r.failure)
    assert.truthy(r.message:find("^scen.lua:2: attempt to index"), r.message)
  end)

  it("fails a scenario that ends on an expect() without a matcher", function()
    local r = run("expect(1).to_be(1)\nexpect(true)\n")
    assert.is_false(r.ok)
    assert.are.equal("scen.lua:2: expect(...) was never completed with a matcher such as .to_be(x)",
                     r.message)
  end)

  it("runs the finally functions last first, after a pass and after a failure", function()
    for _, last in ipairs({ "expect(1).to_be(1)", "expect(1).to_be(2)" }) do
      local r, f = run("finally(function() heal('us-east') end)\n" ..
                       "finally(function() heal() end)\n" .. last .. "\n")
      assert.are.equal(last == "expect(1).to_be(1)", r.ok)
      assert.are.same({ "http://gw/admin/partition/all?enabled=false",
                        "http://gw/admin/partition/us-east?enabled=false" },
                      { f.calls[1].url, f.calls[2].url })
    end
  end)

  it("a finally function that fails fails a passing scenario, and not a failed one twice", function()
    local r = run("finally(function() expect(1).to_be(3) end)\n")
    assert.is_false(r.ok)
    assert.are.equal("scen.lua:1: expected 3, got 1", r.message)
    local r2, f = run("finally(function() expect(1).to_be(3) end)\nexpect(1).to_be(2)\n")
    assert.are.equal("scen.lua:2: expected 2, got 1", r2.message)
    assert.truthy(f.lines[1]:find("also, in a finally function: scen.lua:1: expected 3, got 1", 1, true))
  end)
end)
