-- A spec written the plain way, as if the policies ran with the interpreter's globals:
-- run inside the host (tests/lua/spec_host.c) it must FAIL, because these policies fail
-- on a node. lua.sandbox_fails (expect_fail.cmake) checks that it does, and why.

local spec = counterd_spec

describe("policies that escape the sandbox", function()
  it("io_in_call delivers", function()
    assert.are.equal("deliver", spec.policy("io_in_call").decide("out"))
  end)

  it("writes_counterd_in_call delivers", function()
    assert.are.equal("deliver", spec.policy("writes_counterd_in_call").decide())
  end)
end)
