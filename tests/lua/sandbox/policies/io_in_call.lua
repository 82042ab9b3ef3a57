-- A policy that loads cleanly but writes a file when called: the call fails (no io).
local M = {}
function M.decide(dir)
  local f = io.open("/tmp/counterd-policy-" .. dir, "w")
  f:write("seen\n")
  f:close()
  return "deliver"
end
return M
