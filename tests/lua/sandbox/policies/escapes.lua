-- What a sandbox leaves out, as a policy would reach for it.
local M = {}
function M.reach(name)
  if name == "os.execute" then return os.execute("true") end
  if name == "loadfile" then return loadfile("/etc/hostname") end
  if name == "dofile" then return dofile("/etc/hostname") end
  if name == "require" then return require("io") end
  if name == "string.rep" then
    -- Its own copy of string: the next file loaded sees the real one.
    string.rep = nil -- luacheck: ignore 122
    return "cleared"
  end
  if name == "shared" then
    counterd.shared.incr("sandbox.calls", 1)
    return counterd.shared.get("sandbox.calls")
  end
  return nil
end
return M
