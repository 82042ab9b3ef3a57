-- A policy that reads a file while it loads: refused by the sandbox (no io).
local f = io.open("/etc/hostname")
local M = {}
function M.decide() return f and "drop" or "deliver" end
return M
