-- node.lua - scripts/loadtest's increments sent straight to one service: POST /increment
-- {"counter_name":<name>,"amount":1} on a region node (the partitioned region keeps
-- counting locally) or on the strong counter, cycling over the counter names.
--
-- Env: LOADTEST_COUNTERS (default "views").

local report = require("report")

local counters = report.list("LOADTEST_COUNTERS", "views")
local reqs = {}

function init()
  local headers = { ["Content-Type"] = "application/json" }
  for _, name in ipairs(counters) do
    reqs[#reqs + 1] = wrk.format("POST", "/increment", headers,
      string.format('{"counter_name":"%s","amount":1}', name))
  end
end

report.install(report.cycle(reqs))
