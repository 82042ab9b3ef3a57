-- read.lua - scripts/loadtest's reads through the gateway: GET /api/counter/<name> (the
-- coordinator's global view, every region asked) for each counter name, and GET
-- /api/status, in turn.
--
-- Env: LOADTEST_COUNTERS (default "views,likes,shares").

local report = require("report")

local counters = report.list("LOADTEST_COUNTERS", "views,likes,shares")
local reqs = {}

function init()
  for _, name in ipairs(counters) do
    reqs[#reqs + 1] = wrk.format("GET", "/api/counter/" .. name)
  end
  reqs[#reqs + 1] = wrk.format("GET", "/api/status")
end

report.install(report.cycle(reqs))
