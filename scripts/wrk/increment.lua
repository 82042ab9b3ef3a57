-- increment.lua - scripts/loadtest's increments through the gateway: POST /api/increment
-- cycling over every counter name times every routing policy, the mix of the original
-- lab's basic k6 scenario. "nearest" requests carry an X-Client-Region header.
--
-- Env: LOADTEST_COUNTERS (default "views,likes,shares"), LOADTEST_ROUTING (default
-- "random,round-robin,sticky,us-east,us-west,eu-west,nearest"), LOADTEST_CLIENT_REGION
-- (default "eu-central", for "nearest").

local report = require("report")

local counters = report.list("LOADTEST_COUNTERS", "views,likes,shares")
local routing = report.list("LOADTEST_ROUTING", "random,round-robin,sticky,us-east,us-west,eu-west,nearest")
local client_region = os.getenv("LOADTEST_CLIENT_REGION") or "eu-central"
local reqs = {}

function init()
  for _, name in ipairs(counters) do
    for _, policy in ipairs(routing) do
      local headers = { ["Content-Type"] = "application/json" }
      if policy == "nearest" then headers["X-Client-Region"] = client_region end
      local body = string.format('{"counter_name":"%s","amount":1,"routing":"%s"}', name, policy)
      reqs[#reqs + 1] = wrk.format("POST", "/api/increment", headers, body)
    end
  end
end

report.install(report.cycle(reqs))
