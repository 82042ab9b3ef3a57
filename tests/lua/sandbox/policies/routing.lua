-- A routing policy whose route() is misspelt: the C gateway would have nothing to call,
-- so loading it fails (core/roles/policy.c declares routing.route).
local M = {}
function M.rout() return 1 end
return M
