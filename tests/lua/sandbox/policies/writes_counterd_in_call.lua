-- A policy that writes counterd.x when called: the call fails.
local M = {}
function M.decide()
  counterd.x = (counterd.x or 0) + 1
  return "deliver"
end
return M
