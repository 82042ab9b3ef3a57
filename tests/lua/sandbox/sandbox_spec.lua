-- The sandbox as a spec sees it: counterd_spec loads policies through the host the server
-- builds (tests/lua/spec_host.c), so a policy that uses io or writes counterd.x fails here
-- as it would fail on a node's reload. The fixtures are under tests/lua/sandbox/policies/.

local spec = counterd_spec

describe("a policy loaded for a spec", function()
  before_each(function() spec.reset() end)

  it("cannot use io while it loads", function()
    assert.error_matches(function() spec.policy("io_at_load") end,
                         "io_at_load%.lua:2: attempt to index global 'io' %(a nil value%)")
  end)

  it("cannot use io when it is called", function()
    local ok, err = pcall(spec.policy("io_in_call").decide, "out")
    assert.is_false(ok)
    assert.matches("io_in_call%.lua:4: attempt to index global 'io' %(a nil value%)", err)
  end)

  it("cannot write counterd.x while it loads", function()
    assert.error_matches(function() spec.policy("writes_counterd") end,
                         "writes_counterd%.lua:3: counterd%.x cannot be changed from a sandbox")
  end)

  it("cannot write counterd.x when it is called", function()
    local ok, err = pcall(spec.policy("writes_counterd_in_call").decide)
    assert.is_false(ok)
    assert.matches("writes_counterd_in_call%.lua:4: counterd%.x cannot be changed from a sandbox", err)
    assert.is_nil(counterd.x)
  end)

  it("has no os.execute, loadfile, dofile or require", function()
    local p = spec.policy("escapes")
    assert.error_matches(function() p.reach("os.execute") end, "field 'execute' %(a nil value%)")
    assert.error_matches(function() p.reach("loadfile") end, "global 'loadfile' %(a nil value%)")
    assert.error_matches(function() p.reach("dofile") end, "global 'dofile' %(a nil value%)")
    assert.error_matches(function() p.reach("require") end, "global 'require' %(a nil value%)")
  end)

  it("changes its own copy of a library, not the one the next file gets", function()
    assert.are.equal("cleared", spec.policy("escapes").reach("string.rep"))
    assert.are.equal("function", type(string.rep))
    assert.are.equal("cleared", spec.policy("escapes").reach("string.rep"))
  end)

  it("keeps state in the real counterd.shared, which reset() empties", function()
    local p = spec.policy("escapes")
    assert.are.equal(1, p.reach("shared"))
    assert.are.equal(2, p.reach("shared"))
    assert.are.equal(2, counterd.shared.get("sandbox.calls"))
    spec.reset()
    assert.are.equal(1, p.reach("shared"))
  end)

  it("must define the function the C core calls (routing.route)", function()
    assert.error_matches(function() spec.policy("routing") end,
                         "routing%.lua: the file must return a table with a route%(%) function")
  end)
end)
